//! The network-policy handler (kuryr-kubernetes' `policy` and
//! `kuryrnetworkpolicy`): each NetworkPolicy gets a KuryrNetworkPolicy of
//! its name whose spec holds the rules [`kuryr_policy::compute`] gives for
//! the cluster as it is, and a security group `sg/<namespace>-<name>`
//! holding exactly those rules (the KNP status lists them with their ids).
//! Rules are computed again whenever a pod, a namespace or a Service
//! changes, and only the difference goes to Neutron.
//!
//! Both objects carry `kuryr.openstack.org/networkpolicy-finalizer`. When
//! the policy goes, its KNP is deleted first, which takes the group off the
//! selected pods' ports ([`super::pod_groups`]); the group is deleted once
//! Neutron no longer finds it in use, then both finalizers go.
//!
//! The group is tagged with the cluster's tags and `kuryr-np:<policy uid>`,
//! so a crash between making it and recording it finds it again.

use crate::handlers::{publish_event, set_finalizers, without};
use crate::{Context, Error, policy};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kuryr_crds::{
    KuryrNetworkPolicy, KuryrNetworkPolicyStatus, KuryrPort, NETWORKPOLICY_FINALIZER,
    NETWORKPOLICY_LINK,
};
use kuryr_openstack::types::neutron::{PortUpdate, SecurityGroupCreate};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// What the handler reads the cluster from.
pub struct Cluster {
    /// Every pod kuryr-rs handles.
    pub pods: Store<Pod>,
    /// Every namespace.
    pub namespaces: Store<Namespace>,
    /// Every Service.
    pub services: Store<Service>,
    /// Every KuryrPort: the addresses of the pods' ports.
    pub ports: Store<KuryrPort>,
}

struct State {
    ctx: Arc<Context>,
    cluster: Cluster,
    /// When each policy's group was last compared with Neutron, and the
    /// warnings last published for it (each published once).
    seen: std::sync::Mutex<std::collections::HashMap<String, Seen>>,
}

/// What the handler remembers of a policy between passes.
#[derive(Default)]
struct Seen {
    compared: Option<std::time::Instant>,
    warnings: Vec<String>,
    /// Since when the rules have waited for their peers to be members of
    /// the peer-set groups.
    waiting: Option<std::time::Instant>,
}

/// How long a policy's rules wait for their peers to join the peer-set
/// groups before they are applied anyway (a port whose update keeps
/// failing must not hold a policy back for ever).
const PEERS_WAIT: Duration = Duration::from_secs(30);
/// How often the policy handler looks whether the peers have joined.
const PEERS_EVERY: Duration = Duration::from_millis(100);

async fn warn(ctx: &Context, np: &NetworkPolicy, reason: &str, note: String) {
    publish_event(
        ctx,
        &np.object_ref(&()),
        EventType::Warning,
        "EnforcePolicy",
        reason,
        note,
    )
    .await;
}

/// Deletes the policy's group, then the KNP's and the policy's finalizers.
/// Requeues while Neutron still finds the group on a port.
async fn remove(np: &NetworkPolicy, ctx: &Context) -> Result<Action, Error> {
    let ns = np.metadata.namespace.clone().unwrap_or_default();
    let name = np.metadata.name.clone().unwrap_or_default();
    let knps: Api<KuryrNetworkPolicy> = Api::namespaced(ctx.kube.clone(), &ns);
    if let Some(knp) = knps.get_opt(&name).await? {
        if knp.metadata.deletion_timestamp.is_none() {
            // the ports drop the group when they see the KNP going
            match knps.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let group = match knp
            .status
            .as_ref()
            .and_then(|s| s.security_group_id.clone())
        {
            Some(g) => Some(g),
            None => find_group(ctx, np).await?,
        };
        if let Some(g) = group
            && !delete_group(ctx, &g).await?
        {
            tracing::debug!(policy = %format!("{ns}/{name}"), group = %g, "policy group still on pods' ports");
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        set_finalizers(
            &knps,
            &knp.metadata,
            without(&knp.metadata, NETWORKPOLICY_FINALIZER),
        )
        .await?;
    } else if let Some(g) = find_group(ctx, np).await?
        // made, and the KNP lost (deleted by hand): the group still goes
        && !delete_group(ctx, &g).await?
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let nps: Api<NetworkPolicy> = Api::namespaced(ctx.kube.clone(), &ns);
    set_finalizers(
        &nps,
        &np.metadata,
        without(&np.metadata, NETWORKPOLICY_FINALIZER),
    )
    .await?;
    Ok(Action::await_change())
}

/// Deletes policy or peer-set group `group`; `false` while a pod's port
/// still has it.
/// Ports no KuryrPort names (pool ports a selected pod gave back) are given
/// the default groups first, or they would hold the group for ever.
pub(crate) async fn delete_group(ctx: &Context, group: &str) -> Result<bool, Error> {
    let n = ctx.os.neutron();
    match n.delete_security_group(group).await {
        Ok(_) => {
            tracing::info!(group = %group, "policy group deleted");
            return Ok(true);
        }
        Err(e) if e.is_conflict() => {}
        Err(e) => return Err(e.into()),
    }
    let kps: Api<KuryrPort> = Api::all(ctx.kube.clone());
    let in_use: BTreeSet<String> = kps
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .flat_map(|k| {
            k.status
                .iter()
                .flat_map(|s| s.port_ids().map(str::to_owned))
        })
        .collect();
    let holding = n
        .list_ports(
            &kuryr_openstack::Query::new()
                .filter("security_groups", group)
                .tags(ctx.drivers.tags.iter()),
        )
        .await?;
    for p in holding.iter().filter(|p| !in_use.contains(&p.id)) {
        let body = PortUpdate {
            security_groups: Some(crate::tenants::pod_defaults(ctx, &p.project_id).await?),
            ..Default::default()
        };
        match n.update_port(&p.id, &body).await {
            Ok(_) => {
                tracing::info!(port = %p.id, group = %group, "free port given the default groups")
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

/// Deletes the policy groups of this cluster whose NetworkPolicy no longer
/// exists (its finalizer was removed by hand, or it went while no
/// controller ran). Groups are listed before policies, so a group made
/// meanwhile belongs to a listed policy. `prev` as for
/// [`crate::startup::reconcile`]: a periodic pass acts only on groups found
/// orphaned twice in a row. Answers how many were found.
pub async fn reconcile_groups(
    ctx: &Context,
    prev: Option<&mut BTreeSet<String>>,
) -> Result<usize, Error> {
    let groups = ctx
        .os
        .neutron()
        .list_security_groups(&kuryr_openstack::Query::new().tags(ctx.drivers.tags.iter()))
        .await?;
    let nps: Api<NetworkPolicy> = Api::all(ctx.kube.clone());
    let live: BTreeSet<String> = nps
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|np| np.metadata.uid)
        .collect();
    let prefix = policy::group_tag("");
    let orphans: BTreeSet<String> = groups
        .iter()
        .filter(|g| {
            g.tags.iter().any(|t| {
                t.strip_prefix(prefix.as_str())
                    .is_some_and(|uid| !live.contains(uid))
            })
        })
        .map(|g| g.id.clone())
        .collect();
    let act: Vec<String> = match prev {
        Some(prev) => {
            let both = orphans.intersection(prev).cloned().collect();
            *prev = orphans.clone();
            both
        }
        None => orphans.iter().cloned().collect(),
    };
    for g in &act {
        if ctx.options.gc_dry_run {
            tracing::warn!(group = %g, "policy group of no NetworkPolicy (dry run: kept)");
        } else if !delete_group(ctx, g).await? {
            tracing::info!(group = %g, "orphaned policy group still on ports; deleted once they drop it");
        }
    }
    Ok(orphans.len())
}

/// The cluster's two open groups ([`policy::OpenGroups`]): found by their
/// tags or made, each holding exactly the allow-all rules of its direction
/// (Neutron's default egress rules of a new group are removed from the
/// ingress one). `ipv6`: also IPv6 rules.
pub async fn ensure_open_groups(
    os: &kuryr_openstack::Client,
    project_id: &str,
    tags: &[String],
    cluster_id: &str,
) -> Result<policy::OpenGroups, kuryr_openstack::Error> {
    let n = os.neutron();
    let mut ids = Vec::new();
    for direction in ["ingress", "egress"] {
        let mut t = tags.to_vec();
        t.push(format!("kuryr-group:open-{direction}"));
        let g = n
            .ensure_security_group(
                &t,
                &SecurityGroupCreate {
                    name: format!("kuryr/{cluster_id}/open-{direction}"),
                    description: Some(format!(
                        "kuryr-rs cluster {cluster_id}: on pods whose policies do not isolate {direction}, admits all {direction}"
                    )),
                    project_id: Some(project_id.to_owned()),
                    stateful: None,
                },
            )
            .await?;
        let all = |ethertype: &str| kuryr_policy::SgRule {
            direction: direction.into(),
            ethertype: ethertype.into(),
            ..Default::default()
        };
        let wanted = vec![all("IPv4"), all("IPv6")];
        let have: Vec<_> = g
            .security_group_rules
            .iter()
            .map(policy::from_neutron)
            .collect();
        let d = kuryr_policy::diff(&have, &wanted);
        if !d.is_empty() {
            let bodies: Vec<_> = d
                .to_add
                .iter()
                .map(|r| policy::to_neutron(&g.id, r))
                .collect();
            n.create_security_group_rules(&bodies).await?;
            for id in &d.to_delete {
                n.delete_security_group_rule(id).await?;
            }
        }
        ids.push(g.id);
    }
    Ok(policy::OpenGroups {
        egress: ids.pop().unwrap_or_default(),
        ingress: ids.pop().unwrap_or_default(),
    })
}

fn group_tags(ctx: &Context, np: &NetworkPolicy) -> Vec<String> {
    let mut tags = ctx.drivers.tags.clone();
    tags.push(policy::group_tag(
        np.metadata.uid.as_deref().unwrap_or_default(),
    ));
    tags
}

/// The policy's group found by its tags, if it exists.
async fn find_group(ctx: &Context, np: &NetworkPolicy) -> Result<Option<String>, Error> {
    let q = kuryr_openstack::Query::new().tags(group_tags(ctx, np));
    Ok(ctx
        .os
        .neutron()
        .list_security_groups(&q)
        .await?
        .into_iter()
        .next()
        .map(|g| g.id))
}

async fn reconcile(np: Arc<NetworkPolicy>, st: Arc<State>) -> Result<Action, Error> {
    let ctx = &st.ctx;
    let ns = np.metadata.namespace.clone().unwrap_or_default();
    let name = np.metadata.name.clone().unwrap_or_default();
    let qualified = format!("{ns}/{name}");
    if !super::namespace_selected(ctx, &ns).await? {
        return Ok(Action::await_change());
    }
    if np.metadata.deletion_timestamp.is_some() {
        crate::lock(&st.seen).remove(&qualified);
        if crate::plan::has_finalizer(&np.metadata, NETWORKPOLICY_FINALIZER) {
            return remove(&np, ctx).await;
        }
        return Ok(Action::await_change());
    }
    let nps: Api<NetworkPolicy> = Api::namespaced(ctx.kube.clone(), &ns);
    if !crate::plan::has_finalizer(&np.metadata, NETWORKPOLICY_FINALIZER) {
        let mut f = without(&np.metadata, NETWORKPOLICY_FINALIZER);
        f.push(NETWORKPOLICY_FINALIZER.into());
        if set_finalizers(&nps, &np.metadata, f).await?.is_none() {
            return Ok(Action::await_change());
        }
    }
    // the cluster as it is: both stores must have listed once
    st.cluster.pods.wait_until_ready().await.ok();
    st.cluster.namespaces.wait_until_ready().await.ok();
    st.cluster.services.wait_until_ready().await.ok();
    st.cluster.ports.wait_until_ready().await.ok();
    let ipv6 = ctx.pod_net.get().subnets.iter().any(|s| s.ip_version == 6);
    let pods = st.cluster.pods.state();
    let namespaces = st.cluster.namespaces.state();
    let services = st.cluster.services.state();
    let ports = st.cluster.ports.state();
    let mut world = policy::world(
        pods.iter().map(|p| p.as_ref()),
        ports.iter().map(|p| p.as_ref()),
        namespaces.iter().map(|n| n.as_ref()),
        services.iter().map(|s| s.as_ref()),
        ipv6,
    );
    // ClusterIPs are translated after the client's egress rules: egress
    // ipBlocks leave the service subnet out
    world.settings.translated = ctx
        .lb
        .iter()
        .filter_map(|l| l.service_cidr.parse().ok())
        .collect();
    // pods named by peer-set groups, but those of namespaces in projects
    // of their own (their ports cannot carry the cluster's groups)
    world.settings.peer_groups = ctx.peer_groups;
    if ctx.namespaces.is_some() {
        let default_project = crate::tenants::default_project(ctx);
        let own: BTreeSet<&str> = namespaces
            .iter()
            .filter(|o| crate::tenants::namespace_project(ctx, Some(o.as_ref())) != default_project)
            .filter_map(|o| o.metadata.name.as_deref())
            .collect();
        for n in &mut world.namespaces {
            n.own_project = own.contains(n.name.as_str());
        }
    }
    let rules = match kuryr_policy::compute(&np, &world) {
        Ok(r) => r,
        Err(e) => {
            warn(ctx, &np, "InvalidNetworkPolicy", e.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    let new_warnings = {
        let mut seen = crate::lock(&st.seen);
        let e = seen.entry(qualified.clone()).or_default();
        let changed = e.warnings != rules.warnings;
        e.warnings.clone_from(&rules.warnings);
        changed
    };
    if new_warnings {
        for w in &rules.warnings {
            warn(ctx, &np, "PolicyPartlyEnforced", w.clone()).await;
        }
    }
    let knps: Api<KuryrNetworkPolicy> = Api::namespaced(ctx.kube.clone(), &ns);
    let existing = knps.get_opt(&name).await?;
    // Neutron is compared again every `recheck` although nothing changed
    // here: rules deleted or added behind our back are repaired
    let recheck = ctx.options.lb_recheck;
    let fresh = crate::lock(&st.seen)
        .get(&qualified)
        .and_then(|s| s.compared)
        .is_some_and(|t| t.elapsed() < recheck);
    // the peer sets' groups: as the KNP names them, else (a new set) and
    // at every recheck (a group deleted behind our back) found or made
    let mut ids = policy::known_peer_ids(existing.iter());
    if !rules.peer_sets.is_empty() && (!fresh || !rules.resolved(&ids)) {
        ids = super::peer_groups::ensure(ctx, &rules.peer_sets).await?;
    }
    let spec = policy::knp_spec(&np, &rules, &ids);
    let mut knp = match existing {
        Some(k) => k,
        None => {
            let k = KuryrNetworkPolicy {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    finalizers: Some(vec![NETWORKPOLICY_FINALIZER.into()]),
                    annotations: Some(BTreeMap::from([(
                        NETWORKPOLICY_LINK.to_owned(),
                        kuryr_crds::policy::network_policy_link(&ns, &name),
                    )])),
                    ..Default::default()
                },
                spec: spec.clone(),
                // the CRD requires a status from the start
                status: Some(KuryrNetworkPolicyStatus::default()),
            };
            match knps.create(&PostParams::default(), &k).await {
                Ok(k) => {
                    tracing::info!(policy = %qualified, "KuryrNetworkPolicy created");
                    k
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    if knp.metadata.deletion_timestamp.is_some() {
        // deleted by hand while its policy stays: it goes (its group stays,
        // found again by its tags) and the next pass makes it again
        set_finalizers(
            &knps,
            &knp.metadata,
            without(&knp.metadata, NETWORKPOLICY_FINALIZER),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if knp.spec == spec && policy::in_sync(&knp) && fresh {
        // nothing changed since the group was last seen holding the spec's
        // rules: Neutron is not asked
        return Ok(Action::requeue(recheck));
    }
    if knp.spec != spec {
        knp.spec = spec.clone();
        knp = knps.replace(&name, &PostParams::default(), &knp).await?;
        tracing::info!(policy = %qualified, ingress = spec.ingress_sg_rules.len(), egress = spec.egress_sg_rules.len(), "KuryrNetworkPolicy rules changed");
    }
    // the peers first: a rule naming a peer-set group admits its members
    // only, so the rules wait until the pod groups handler has put the
    // pods the KNP's peerGroups select into those groups; otherwise a pod
    // the policy admits is refused while it comes into force
    let waiting = policy::peers_not_in_yet(
        &spec.peer_groups,
        pods.iter().map(|p| p.as_ref()),
        ports.iter().map(|p| p.as_ref()),
        &world.namespaces,
        &crate::lock(&ctx.port_groups),
    );
    {
        let mut seen = crate::lock(&st.seen);
        let e = seen.entry(qualified.clone()).or_default();
        if waiting.is_empty() {
            e.waiting = None;
        } else {
            let since = *e.waiting.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() < PEERS_WAIT {
                tracing::debug!(policy = %qualified, peers = ?waiting, "waiting for the peers to join their groups");
                return Ok(Action::requeue(PEERS_EVERY));
            }
            tracing::warn!(policy = %qualified, peers = ?waiting, "peers not in their groups after {PEERS_WAIT:?}: rules applied anyway");
            e.waiting = None;
        }
    }
    // the group, found by its tags, else made and tagged
    let n = ctx.os.neutron();
    let group = n
        .ensure_security_group(
            &group_tags(ctx, &np),
            &SecurityGroupCreate {
                name: kuryr_policy::sg_name(&ns, &name),
                description: Some(policy::group_description(&ns, &name)),
                // the namespace's project: its pods' ports may use only
                // groups of their own project
                project_id: Some(crate::tenants::namespace_project(
                    ctx,
                    st.cluster
                        .namespaces
                        .get(&kube::runtime::reflector::ObjectRef::new(&ns))
                        .as_deref(),
                )),
                stateful: None,
            },
        )
        .await?;
    let have: Vec<_> = group
        .security_group_rules
        .iter()
        .map(policy::from_neutron)
        .collect();
    let wanted = rules.sg_rules(&ids);
    let d = kuryr_policy::diff(&have, &wanted);
    let rules_now = if d.is_empty() {
        have
    } else {
        let bodies: Vec<_> = d
            .to_add
            .iter()
            .map(|r| policy::to_neutron(&group.id, r))
            .collect();
        n.create_security_group_rules(&bodies).await?;
        for id in &d.to_delete {
            n.delete_security_group_rule(id).await?;
        }
        tracing::info!(policy = %qualified, group = %group.id, added = d.to_add.len(), deleted = d.to_delete.len(), "policy group rules updated");
        n.get_security_group(&group.id)
            .await?
            .security_group_rules
            .iter()
            .map(policy::from_neutron)
            .collect()
    };
    // compared and in sync (a failure above, e.g. a peer group deleted
    // meanwhile, leaves the next pass asking Neutron again)
    crate::lock(&st.seen)
        .entry(qualified.clone())
        .or_default()
        .compared = Some(std::time::Instant::now());
    let status = KuryrNetworkPolicyStatus {
        security_group_id: Some(group.id.clone()),
        security_group_rules: rules_now,
        pod_selector: Some(spec.pod_selector.clone()),
    };
    if knp.status.as_ref() != Some(&status) {
        knps.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"resourceVersion": knp.metadata.resource_version},
                "status": status,
            })),
        )
        .await?;
    }
    Ok(Action::requeue(recheck))
}

fn error_policy(np: Arc<NetworkPolicy>, err: &Error, _st: Arc<State>) -> Action {
    tracing::warn!(policy = %super::qualified(&np.metadata), error = %err, "policy not enforced yet; retrying in 2 s");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the network-policy handler and the pods' groups
/// ([`super::pod_groups`]) until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use futures::FutureExt;
    let shutdown = shutdown.shared();
    let pod_cfg = match &ctx.options.pod_selector {
        Some(s) => watcher::Config::default().labels(s),
        None => watcher::Config::default(),
    };
    let (pods, pod_changes) = super::watched(Api::<Pod>::all(ctx.kube.clone()), pod_cfg.clone());
    let (namespaces, ns_changes) = super::watched(
        Api::<Namespace>::all(ctx.kube.clone()),
        watcher::Config::default(),
    );
    let (services, svc_changes) = super::watched(
        Api::<Service>::all(ctx.kube.clone()),
        watcher::Config::default(),
    );
    let (ports, port_changes) = super::watched(
        Api::<KuryrPort>::all(ctx.kube.clone()),
        watcher::Config::default(),
    );
    // any pod, KuryrPort, namespace or Service change may change any
    // policy's rules: every policy is computed again (in memory; only
    // differences reach Neutron)
    let changes = futures::stream::select(
        futures::stream::select(pod_changes, ns_changes),
        futures::stream::select(svc_changes, port_changes),
    );
    let state = Arc::new(State {
        ctx: ctx.clone(),
        cluster: Cluster {
            pods,
            namespaces,
            services,
            ports,
        },
        seen: std::sync::Mutex::default(),
    });
    let policies = Controller::new(
        Api::<NetworkPolicy>::all(ctx.kube.clone()),
        watcher::Config::default(),
    )
    .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_millis(100)))
    .reconcile_all_on(changes)
    .graceful_shutdown_on(shutdown.clone())
    .run(reconcile, error_policy, state)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "policy reconcile");
        }
    });
    let groups = super::pod_groups::run(ctx.clone(), pod_cfg, shutdown);
    futures::join!(policies, groups);
}
