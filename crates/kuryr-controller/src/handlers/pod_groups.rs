//! The pods' groups (kuryr-kubernetes' `pod_label` and the policy security
//! groups driver): the Neutron ports of a pod that NetworkPolicies select
//! carry the groups of those policies (from their KuryrNetworkPolicies'
//! status) and the node-access group; a pod no policy selects carries
//! `[neutron_defaults] pod_security_groups` (see [`crate::policy::pod_groups`]).
//!
//! A pod is looked at again when it changes (labels), when its KuryrPort
//! changes (a port was bound or replaced) and when any KuryrNetworkPolicy
//! changes (its group became ready, its selector changed, it is going).
//! What each port has is remembered after it was read or set once, so a
//! pass that changes nothing costs Neutron nothing.

use crate::policy::{self, Groups};
use crate::{Context, Error, lock};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kuryr_crds::{KuryrNetworkPolicy, KuryrPort};
use kuryr_openstack::types::neutron::PortUpdate;
use std::sync::Arc;
use std::time::Duration;

struct State {
    ctx: Arc<Context>,
    kps: Store<KuryrPort>,
    knps: Store<KuryrNetworkPolicy>,
    /// Every namespace (their projects).
    namespaces: Store<Namespace>,
}

async fn reconcile(pod: Arc<Pod>, st: Arc<State>) -> Result<Action, Error> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    // decided only on complete lists: a restart must not take a policy's
    // group off a port because its KNP was not listed yet
    st.kps.wait_until_ready().await.ok();
    st.knps.wait_until_ready().await.ok();
    st.namespaces.wait_until_ready().await.ok();
    let Some(kp) = st.kps.get(&ObjectRef::new(&name).within(&ns)) else {
        return Ok(Action::await_change());
    };
    if Some(kp.spec.pod_uid.as_str()) != pod.metadata.uid.as_deref() {
        return Ok(Action::await_change());
    }
    let ports: Vec<String> = kp
        .status
        .iter()
        .flat_map(|s| s.port_ids())
        .map(str::to_owned)
        .collect();
    if ports.is_empty() {
        return Ok(Action::await_change());
    }
    let ctx = &st.ctx;
    let knps = st.knps.state();
    let access = ctx.node_groups.as_ref().map(|g| g.access.as_str());
    // the defaults of the pod's project
    let namespace = st.namespaces.get(&ObjectRef::new(&ns));
    let defaults = if ctx.namespaces.is_some() {
        let project = crate::tenants::namespace_project(ctx, namespace.as_deref());
        crate::tenants::pod_defaults(ctx, &project).await?
    } else {
        ctx.settings.security_groups.clone()
    };
    let wanted = match policy::pod_groups(
        &pod,
        knps.iter().map(|k| k.as_ref()),
        &defaults,
        access,
        ctx.open_groups.as_ref(),
    ) {
        Groups::Set(g) => with_peer_groups(
            ctx,
            &pod,
            namespace.as_deref(),
            knps.iter().map(|k| k.as_ref()),
            g,
        ),
        Groups::NotYet => return Ok(Action::await_change()),
    };
    let n = ctx.os.neutron();
    for id in ports {
        let known = lock(&st.ctx.port_groups).get(&id).cloned();
        let have = match known {
            Some(h) => h,
            None => match n.get_port(&id).await {
                Ok(p) => p.security_groups,
                // released meanwhile: nothing to do
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            },
        };
        if !policy::same_groups(&have, &wanted) {
            let body = PortUpdate {
                security_groups: Some(wanted.clone()),
                ..Default::default()
            };
            match n.update_port(&id, &body).await {
                Ok(_) => {
                    tracing::info!(pod = %format!("{ns}/{name}"), port = %id, groups = ?wanted, "pod port groups set")
                }
                Err(e) if e.is_not_found() => {
                    lock(&st.ctx.port_groups).remove(&id);
                    continue;
                }
                Err(e) => {
                    lock(&st.ctx.port_groups).remove(&id);
                    return Err(e.into());
                }
            }
        }
        lock(&st.ctx.port_groups).insert(id, wanted.clone());
    }
    Ok(Action::await_change())
}

/// `groups` and the peer-set groups the pod is a member of (none for a pod
/// of a namespace in a project of its own: its ports cannot carry them, and
/// the policies name it by address instead).
fn with_peer_groups<'a>(
    ctx: &Context,
    pod: &Pod,
    namespace: Option<&Namespace>,
    knps: impl IntoIterator<Item = &'a KuryrNetworkPolicy>,
    mut groups: Vec<String>,
) -> Vec<String> {
    if !ctx.peer_groups
        || crate::tenants::namespace_project(ctx, namespace) != crate::tenants::default_project(ctx)
    {
        return groups;
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let empty = Default::default();
    let ns_labels = namespace
        .and_then(|n| n.metadata.labels.as_ref())
        .unwrap_or(&empty);
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    groups.extend(policy::peer_groups(ns, ns_labels, labels, knps));
    groups.sort();
    groups.dedup();
    groups
}

/// A pod's new port with the groups of the policies selecting the pod
/// (read from its namespace's KuryrNetworkPolicies), so a pod a policy
/// selects is never reachable as if none did: the port comes from a pool
/// or is made with the defaults (`defaults`: those of the pod's project).
/// A policy whose group is not made yet
/// leaves the port as it is; the pass after the group is made fixes it.
pub async fn at_creation(
    ctx: &Context,
    pod: &Pod,
    port: kuryr_openstack::types::neutron::Port,
    defaults: &[String],
) -> Result<kuryr_openstack::types::neutron::Port, Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    // every namespace's: a policy elsewhere may name the pod as a peer
    let knps: Api<KuryrNetworkPolicy> = Api::all(ctx.kube.clone());
    let knps = knps.list(&kube::api::ListParams::default()).await?.items;
    let access = ctx.node_groups.as_ref().map(|g| g.access.as_str());
    let namespace = if ctx.peer_groups || ctx.namespaces.is_some() {
        Api::<Namespace>::all(ctx.kube.clone()).get_opt(&ns).await?
    } else {
        None
    };
    let groups = match policy::pod_groups(pod, &knps, defaults, access, ctx.open_groups.as_ref()) {
        Groups::Set(g) => Groups::Set(with_peer_groups(ctx, pod, namespace.as_ref(), &knps, g)),
        other => other,
    };
    match groups {
        Groups::Set(wanted) if !policy::same_groups(&port.security_groups, &wanted) => {
            let body = PortUpdate {
                security_groups: Some(wanted.clone()),
                ..Default::default()
            };
            let p = ctx.os.neutron().update_port(&port.id, &body).await?;
            tracing::info!(pod = %super::qualified(&pod.metadata), port = %p.id, groups = ?wanted, "new pod port given its policies' groups");
            Ok(p)
        }
        _ => Ok(port),
    }
}

fn error_policy(pod: Arc<Pod>, err: &Error, _st: Arc<State>) -> Action {
    tracing::warn!(pod = %super::qualified(&pod.metadata), error = %err, "pod port groups not set yet; retrying in 2 s");
    Action::requeue(Duration::from_secs(2))
}

/// Runs until `shutdown` resolves; `pods` selects the pods kuryr-rs handles.
pub async fn run(
    ctx: Arc<Context>,
    pods: watcher::Config,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (kps, kps_writer) = reflector::store();
    // a KuryrPort changing brings back its pod (same namespace and name)
    let kp_changes = reflector::reflector(
        kps_writer,
        watcher(
            Api::<KuryrPort>::all(ctx.kube.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .filter_map(|r| async move {
        let kp = r.ok()?;
        Some(
            ObjectRef::<Pod>::new(kp.metadata.name.as_deref()?)
                .within(kp.metadata.namespace.as_deref()?),
        )
    });
    let (knps, knp_changes) = super::watched(
        Api::<KuryrNetworkPolicy>::all(ctx.kube.clone()),
        watcher::Config::default(),
    );
    // a namespace's labels decide which peer sets its pods are in
    // (the store is read after the change it reports)
    let (namespaces, ns_changes) = super::watched(
        Api::<Namespace>::all(ctx.kube.clone()),
        watcher::Config::default(),
    );
    let state = Arc::new(State {
        ctx: ctx.clone(),
        kps,
        knps,
        namespaces,
    });
    Controller::new(Api::<Pod>::all(ctx.kube.clone()), pods)
        .with_config(
            kube::runtime::controller::Config::default().debounce(Duration::from_millis(100)),
        )
        .reconcile_on(kp_changes)
        .reconcile_all_on(futures::stream::select(knp_changes, ns_changes))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "pod groups reconcile");
            }
        })
        .await;
}
