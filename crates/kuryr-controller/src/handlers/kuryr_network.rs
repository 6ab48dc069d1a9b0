//! The KuryrNetwork handler (kuryr-kubernetes' `kuryrnetwork`): each
//! KuryrNetwork gets a Neutron network and subnet (from `[namespace_subnet]
//! pod_subnet_pool`, DHCP off) attached to `[namespace_subnet] pod_router`,
//! recorded step by step in its status (`netId`, `subnetId` and
//! `subnetCIDR`, `routerId`, `nsLabels`) with an event on it after each, as
//! kuryr-kubernetes did ([`crate::namespace_net::next_step`] says what
//! comes next). Every step finds what an interrupted earlier one made (by
//! its tags) instead of making it twice.
//!
//! A deleted KuryrNetwork (its namespace goes) first loses the ports left
//! on its network (the cluster's, and orphans no device owns), then the
//! router interface, then the network and subnet, then its finalizer.
//! Ports of others (a VM's) are kept: the namespace waits for them, saying
//! so in a Warning event on the namespace every retry.

use crate::handlers::{publish_event, set_finalizers, without};
use crate::namespace_net::{self, Leftover, Settings, Step};
use crate::plan::PortSettings;
use crate::pod_net::PodNet;
use crate::{Context, Error};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kuryr_crds::{KURYRNETWORK_FINALIZER, KuryrNetwork};
use kuryr_openstack::Query;
use kuryr_openstack::types::neutron::{NetworkCreate, RouterInterface, SubnetCreate};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How long a namespace waits between looks at ports that are not ours.
const FOREIGN_RETRY: Duration = Duration::from_secs(10);

async fn event(ctx: &Context, kns: &KuryrNetwork, type_: EventType, reason: &str, note: String) {
    publish_event(
        ctx,
        &kns.object_ref(&()),
        type_,
        "KuryrNetwork",
        reason,
        note,
    )
    .await;
}

/// The tags of the namespace's network and subnet.
fn tags(ctx: &Context, ns_uid: &str) -> Vec<String> {
    let mut t = ctx.drivers.tags.clone();
    t.push(namespace_net::namespace_tag(ns_uid));
    t
}

/// Merges `status` into the KuryrNetwork's status (the CRD has no status
/// subresource, as in kuryr-kubernetes).
async fn patch_status(
    api: &Api<KuryrNetwork>,
    name: &str,
    status: serde_json::Value,
) -> Result<KuryrNetwork, Error> {
    Ok(api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?)
}

/// Whether `subnet` has an interface on `router`.
async fn attached(ctx: &Context, router: &str, subnet: &str) -> Result<bool, Error> {
    let q = Query::new().filter("device_id", router);
    Ok(ctx.os.neutron().list_ports(&q).await?.iter().any(|p| {
        p.fixed_ips
            .iter()
            .any(|f| f.subnet_id.as_deref() == Some(subnet))
    }))
}

/// Does one step; answers the KuryrNetwork as it is afterwards, or `None`
/// when nothing was left to do (or its namespace is gone).
async fn step(
    ctx: &Context,
    s: &Settings,
    api: &Api<KuryrNetwork>,
    kns: &KuryrNetwork,
) -> Result<Option<KuryrNetwork>, Error> {
    let name = kns.metadata.name.clone().unwrap_or_default();
    let n = ctx.os.neutron();
    let ns_of = || async {
        let nss: Api<Namespace> = Api::all(ctx.kube.clone());
        nss.get_opt(&kns.spec.ns_name).await
    };
    match namespace_net::next_step(kns, &s.router) {
        Step::Nothing => Ok(None),
        Step::Network => {
            let Some(ns) = ns_of().await? else {
                return Ok(None);
            };
            let uid = ns.metadata.uid.clone().unwrap_or_default();
            let body = NetworkCreate {
                name: Some(namespace_net::resource_name(&kns.spec.ns_name, &uid)),
                project_id: Some(kns.spec.project_id.clone()),
                mtu: s.mtu,
                ..Default::default()
            };
            let net = match n.ensure_network(&tags(ctx, &uid), &body).await {
                Ok(net) => net,
                Err(e) => {
                    event(
                        ctx,
                        kns,
                        EventType::Warning,
                        "CreateNetworkFailed",
                        format!("Error during creating Neutron network: {e}"),
                    )
                    .await;
                    return Err(e.into());
                }
            };
            let k = patch_status(api, &name, json!({"netId": net.id})).await?;
            event(
                ctx,
                kns,
                EventType::Normal,
                "CreateNetworkSucceed",
                format!("Neutron network {} for namespace", net.id),
            )
            .await;
            tracing::info!(namespace = %kns.spec.ns_name, network = %net.id, "namespace network made");
            Ok(Some(k))
        }
        Step::Subnet { net } => {
            let Some(ns) = ns_of().await? else {
                return Ok(None);
            };
            let uid = ns.metadata.uid.clone().unwrap_or_default();
            // one subnet per namespace network: whatever is on it is it
            let existing = n
                .list_subnets(&Query::new().filter("network_id", &net))
                .await?
                .into_iter()
                .next();
            let subnet = match existing {
                Some(sn) => sn,
                None => {
                    let body = SubnetCreate {
                        network_id: net.clone(),
                        ip_version: s.ip_version,
                        name: Some(namespace_net::resource_name(&kns.spec.ns_name, &uid)),
                        project_id: Some(kns.spec.project_id.clone()),
                        enable_dhcp: Some(false),
                        subnetpool_id: Some(s.subnet_pool.clone()),
                        ..Default::default()
                    };
                    match n.ensure_subnet(&tags(ctx, &uid), &body).await {
                        Ok(sn) => sn,
                        Err(e) => {
                            event(
                                ctx,
                                kns,
                                EventType::Warning,
                                "CreateSubnetFailed",
                                format!(
                                    "Error during creating Neutron subnet for network {net}: {e}"
                                ),
                            )
                            .await;
                            return Err(e.into());
                        }
                    }
                }
            };
            let k = patch_status(
                api,
                &name,
                json!({"subnetId": subnet.id, "subnetCIDR": subnet.cidr}),
            )
            .await?;
            event(
                ctx,
                kns,
                EventType::Normal,
                "CreateSubnetSucceed",
                format!("Neutron subnet {} for network {net}", subnet.id),
            )
            .await;
            tracing::info!(namespace = %kns.spec.ns_name, subnet = %subnet.id, cidr = %subnet.cidr, "namespace subnet made");
            Ok(Some(k))
        }
        Step::Router { subnet } => {
            if !attached(ctx, &s.router, &subnet).await? {
                let iface = RouterInterface {
                    subnet_id: Some(subnet.clone()),
                    port_id: None,
                };
                if let Err(e) = n.add_router_interface(&s.router, &iface).await {
                    // an answer lost after the attach: it is there now
                    if !attached(ctx, &s.router, &subnet).await? {
                        event(
                            ctx,
                            kns,
                            EventType::Warning,
                            "AddingSubnetToRouterFailed",
                            format!("Error adding Neutron subnet {subnet} to router: {e}"),
                        )
                        .await;
                        return Err(e.into());
                    }
                }
            }
            let k = patch_status(
                api,
                &name,
                json!({"routerId": s.router, "populated": false}),
            )
            .await?;
            event(
                ctx,
                kns,
                EventType::Normal,
                "AddingSubnetToRouterSucceed",
                format!("Neutron subnet {subnet} added to router {}", s.router),
            )
            .await;
            Ok(Some(k))
        }
        Step::Labels => {
            let old = kns.status.clone().unwrap_or_default().ns_labels;
            let patch = namespace_net::labels_patch(&old, &kns.spec.ns_labels);
            let k = patch_status(api, &name, json!({ "nsLabels": patch })).await?;
            Ok(Some(k))
        }
    }
}

/// Removes what the KuryrNetwork made; `Some(action)` while it must wait.
async fn remove(ctx: &Context, s: &Settings, kns: &KuryrNetwork) -> Result<Option<Action>, Error> {
    let n = ctx.os.neutron();
    let st = kns.status.clone().unwrap_or_default();
    let mut nets: Vec<String> = st.net_id.into_iter().collect();
    if nets.is_empty() {
        // made, and the status lost: found by its tag
        let nss: Api<Namespace> = Api::all(ctx.kube.clone());
        if let Some(uid) = nss
            .get_opt(&kns.spec.ns_name)
            .await?
            .and_then(|ns| ns.metadata.uid)
        {
            let q = Query::new().filter("tags", namespace_net::namespace_tag(&uid));
            nets = n
                .list_networks(&q)
                .await?
                .into_iter()
                .map(|x| x.id)
                .collect();
        }
    }
    if let (Some(pool), Some(subnet)) = (&ctx.pool, &st.subnet_id) {
        let held = pool.forget_subnet(subnet);
        tracing::debug!(namespace = %kns.spec.ns_name, subnet = %subnet, held, "namespace pools dropped");
    }
    let cluster_tag = crate::plan::cluster_tag(&ctx.cluster_id);
    for net in &nets {
        let mut foreign = Vec::new();
        for p in n
            .list_ports(&Query::new().filter("network_id", net))
            .await?
        {
            match namespace_net::leftover(&p, &cluster_tag, &s.router) {
                Leftover::Router => {
                    for sn in p.fixed_ips.iter().filter_map(|f| f.subnet_id.clone()) {
                        let iface = RouterInterface {
                            subnet_id: Some(sn),
                            port_id: None,
                        };
                        n.remove_router_interface(&s.router, &iface).await?;
                    }
                }
                Leftover::Delete => {
                    n.delete_port(&p.id).await?;
                    tracing::info!(namespace = %kns.spec.ns_name, port = %p.id, "port left on a going namespace network deleted");
                }
                Leftover::Neutron => {}
                Leftover::Keep => foreign.push(format!("{} ({})", p.id, p.device_owner)),
            }
        }
        if !foreign.is_empty() {
            let note = format!(
                "Network {net} of namespace {} still has ports kuryr-rs did not make: {}; the namespace is deleted once they are gone",
                kns.spec.ns_name,
                foreign.join(", ")
            );
            tracing::warn!("{note}");
            // on the namespace (a terminating namespace takes no new
            // events; a namespace's own go to `default`)
            let about = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Namespace".into()),
                name: Some(kns.spec.ns_name.clone()),
                ..Default::default()
            };
            publish_event(
                ctx,
                &about,
                EventType::Warning,
                "KuryrNetwork",
                "NetworkInUse",
                note,
            )
            .await;
            return Ok(Some(Action::requeue(FOREIGN_RETRY)));
        }
        match n.delete_network(net).await {
            Ok(_) => {
                crate::lock(&ctx.namespace_nets).remove(net);
                tracing::info!(namespace = %kns.spec.ns_name, network = %net, "namespace network deleted");
            }
            // a port came meanwhile: looked at again
            Err(e) if e.is_conflict() => return Ok(Some(Action::requeue(Duration::from_secs(1)))),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Where the port of a pod in namespace `ns` is made, and that network:
/// the pod subnet, or with namespace networks the namespace's (`None`
/// until its KuryrNetwork records it attached to the router).
pub async fn placement(
    ctx: &Context,
    ns: &str,
) -> Result<Option<(PortSettings, Arc<PodNet>)>, Error> {
    if ctx.namespaces.is_none() {
        return Ok(Some((ctx.settings.clone(), ctx.pod_net.get())));
    }
    let api: Api<KuryrNetwork> = Api::namespaced(ctx.kube.clone(), ns);
    let Some(kns) = api.get_opt(ns).await? else {
        return Ok(None);
    };
    let st = kns.status.unwrap_or_default();
    let (Some(net), Some(subnet), Some(_router)) = (st.net_id, st.subnet_id, st.router_id) else {
        return Ok(None);
    };
    let groups = crate::tenants::pod_defaults(ctx, &kns.spec.project_id).await?;
    let settings = ctx
        .drivers
        .settings_on(&net, &subnet, &kns.spec.project_id, groups);
    let known = crate::lock(&ctx.namespace_nets).get(&net).cloned();
    let pod_net = match known {
        Some(p) => p,
        None => {
            let p = Arc::new(PodNet::read(&ctx.os.neutron(), &net).await?);
            crate::lock(&ctx.namespace_nets).insert(net, p.clone());
            p
        }
    };
    Ok(Some((settings, pod_net)))
}

async fn reconcile(kns: Arc<KuryrNetwork>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(s) = ctx.namespaces.clone() else {
        return Ok(Action::await_change());
    };
    let ns = kns.metadata.namespace.clone().unwrap_or_default();
    if !super::namespace_selected(&ctx, &ns).await? {
        // another controller's namespace (`--namespace-selector`)
        return Ok(Action::await_change());
    }
    let name = kns.metadata.name.clone().unwrap_or_default();
    let api: Api<KuryrNetwork> = Api::namespaced(ctx.kube.clone(), &ns);
    let has_finalizer = crate::plan::has_finalizer(&kns.metadata, KURYRNETWORK_FINALIZER);
    if kns.metadata.deletion_timestamp.is_some() {
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        if let Some(wait) = remove(&ctx, &s, &kns).await? {
            return Ok(wait);
        }
        set_finalizers(
            &api,
            &kns.metadata,
            without(&kns.metadata, KURYRNETWORK_FINALIZER),
        )
        .await?;
        tracing::info!(namespace = %kns.spec.ns_name, "namespace network released");
        return Ok(Action::await_change());
    }
    let mut kns = (*kns).clone();
    if !has_finalizer {
        let mut f = kns.metadata.finalizers.clone().unwrap_or_default();
        f.push(KURYRNETWORK_FINALIZER.into());
        match set_finalizers(&api, &kns.metadata, f).await? {
            Some(k) => kns = k,
            None => return Ok(Action::await_change()),
        }
    }
    // a bounded number of steps per pass; each patch brings it back too
    for _ in 0..5 {
        match step(&ctx, &s, &api, &kns).await? {
            Some(k) => kns = k,
            None => break,
        }
    }
    tracing::debug!(kuryrnetwork = %format!("{ns}/{name}"), "reconciled");
    Ok(Action::await_change())
}

fn error_policy(kns: Arc<KuryrNetwork>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(kuryrnetwork = %super::qualified(&kns.metadata), error = %err, "namespace network not ready yet; retrying in 2 s");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the KuryrNetwork handler until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    Controller::new(
        Api::<KuryrNetwork>::all(ctx.kube.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "kuryrnetwork reconcile");
        }
    })
    .await;
}
