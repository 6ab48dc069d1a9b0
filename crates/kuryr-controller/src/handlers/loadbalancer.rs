//! The load-balancer handler (kuryr-kubernetes' `kuryrloadbalancer`): it
//! owns every Octavia call. Each pass converges Octavia to the
//! KuryrLoadBalancer's spec by diff -- the load balancer (found by its
//! tags, so a crash or a lost answer never makes a second one; replaced
//! when in ERROR or deleted behind our back), a listener and a pool per
//! protocol and port, the pool's members in one batch call -- waiting for
//! the load balancer to be ACTIVE after each change (with backoff, never
//! failing on PENDING_*), then records what exists in the status. It runs
//! again on every change of the object and every `recheck`, so what was
//! deleted in Octavia behind our back comes back. Deleting the object
//! deletes the load balancer (cascade) before the finalizer goes.

use crate::handlers::{set_finalizers, without};
use crate::services::plan::{self, WantListener};
use crate::services::{LbSettings, subnet_of};
use crate::{Context, Error};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kuryr_crds::loadbalancer::{
    KuryrLoadBalancerStatus, LbStatus, ListenerStatus, MemberStatus, PoolStatus, PubIpInfo,
};
use kuryr_crds::{KLB_FINALIZER, KuryrLoadBalancer};
use kuryr_openstack::Query;
use kuryr_openstack::types::octavia::{
    ListenerCreate, ListenerUpdate, LoadBalancer, LoadBalancerCreate, MemberCreate, PoolCreate,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How long a pass waits for the load balancer to leave PENDING_* after a
/// change before it gives up and tries again later.
const ACTIVE_WAIT: Duration = Duration::from_secs(120);

/// Tag naming the Service a load balancer was made for.
pub fn service_tag(service_uid: &str) -> String {
    format!("kuryr-svc:{service_uid}")
}

/// The owner reference naming the Service a KuryrLoadBalancer belongs to.
pub(crate) fn service_owner(
    meta: &kube::api::ObjectMeta,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "Service")
}

/// The uid of the Service owning `klb` (its own uid if it has no owner).
fn owner_uid(klb: &KuryrLoadBalancer) -> String {
    service_owner(&klb.metadata)
        .map(|o| o.uid.clone())
        .or_else(|| klb.metadata.uid.clone())
        .unwrap_or_default()
}

fn lb_tags(ctx: &Context, klb: &KuryrLoadBalancer) -> Vec<String> {
    let mut t = ctx.drivers.tags.clone();
    t.push(service_tag(&owner_uid(klb)));
    t
}

/// The load balancer of `klb`: by the id in its status, else by its tags.
async fn find_lb(ctx: &Context, klb: &KuryrLoadBalancer) -> Result<Option<LoadBalancer>, Error> {
    let o = ctx.os.octavia();
    if let Some(id) = klb
        .status
        .as_ref()
        .and_then(|s| s.loadbalancer.as_ref())
        .map(|l| &l.id)
    {
        match o.get_load_balancer(id).await {
            Ok(lb) if lb.provisioning_status != "DELETED" => return Ok(Some(lb)),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let q = Query::new().tags(lb_tags(ctx, klb));
    Ok(o.list_load_balancers(&q)
        .await?
        .into_iter()
        .find(|l| l.provisioning_status != "DELETED"))
}

/// Waits until the load balancer is ACTIVE again after a change.
async fn settle(ctx: &Context, lb_id: &str) -> Result<LoadBalancer, Error> {
    Ok(ctx
        .os
        .octavia()
        .wait_load_balancer_active(lb_id, ACTIVE_WAIT)
        .await?)
}

/// One pass; see the module documentation.
async fn converge(
    klb: &KuryrLoadBalancer,
    ctx: &Context,
    lbs: &LbSettings,
) -> Result<Action, Error> {
    let ns = klb.metadata.namespace.clone().unwrap_or_default();
    let name = klb.metadata.name.clone().unwrap_or_default();
    let spec = &klb.spec;
    let (Some(ip), Some(subnet)) = (spec.ip.clone(), spec.subnet_id.clone()) else {
        return Ok(Action::await_change());
    };
    let o = ctx.os.octavia();
    let mut lb = match find_lb(ctx, klb).await? {
        Some(lb) if lb.provisioning_status == "ERROR" => {
            tracing::warn!(klb = %format!("{ns}/{name}"), lb = %lb.id, "load balancer in ERROR: replacing it");
            o.delete_load_balancer(&lb.id, true).await?;
            o.wait_load_balancer_deleted(&lb.id, ACTIVE_WAIT).await?;
            None
        }
        found => found,
    };
    if lb.is_none() {
        let body = LoadBalancerCreate {
            name: Some(plan::lb_name(&ns, &name)),
            vip_address: Some(ip.clone()),
            vip_subnet_id: Some(subnet.clone()),
            provider: spec.provider.clone(),
            project_id: spec.project_id.clone(),
            description: Some(ctx.drivers.description.clone()),
            ..Default::default()
        };
        let made = o.ensure_load_balancer(&lb_tags(ctx, klb), &body).await?;
        tracing::info!(klb = %format!("{ns}/{name}"), lb = %made.id, vip = %ip, "load balancer created");
        ctx.metrics
            .lbs_created
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lb = Some(made);
    }
    let lb = settle(ctx, &lb.expect("made above").id).await?;

    // listeners: one per protocol and port
    let want = plan::listeners(spec, &ns, &name);
    let by_lb = Query::new().filter("loadbalancer_id", &lb.id);
    let have = o.list_listeners(&by_lb).await?;
    let pools = o.list_pools(&by_lb).await?;
    for l in &have {
        let wanted = want
            .iter()
            .any(|w| w.protocol == l.protocol && w.port == l.protocol_port);
        if !wanted {
            // its pool first: a pool outlives its listener in Octavia
            for p in pools
                .iter()
                .filter(|p| p.listeners.iter().any(|r| r.id == l.id))
            {
                o.delete_pool(&p.id).await?;
                settle(ctx, &lb.id).await?;
            }
            o.delete_listener(&l.id).await?;
            settle(ctx, &lb.id).await?;
        }
    }
    let mut status = KuryrLoadBalancerStatus {
        loadbalancer: Some(LbStatus {
            id: lb.id.clone(),
            ip: lb.vip_address.clone(),
            name: lb.name.clone(),
            port_id: lb.vip_port_id.clone(),
            project_id: lb.project_id.clone(),
            provider: lb.provider.clone(),
            security_groups: spec.security_groups_ids.clone(),
            subnet_id: lb.vip_subnet_id.clone(),
        }),
        service_pub_ip_info: public_ip(ctx, lbs, klb, &lb).await?,
        ..Default::default()
    };
    for w in &want {
        let listener = ensure_listener(ctx, &lb, w, spec, &have).await?;
        status.listeners.push(ListenerStatus {
            id: listener.id.clone(),
            loadbalancer_id: lb.id.clone(),
            name: listener.name.clone(),
            port: i32::from(listener.protocol_port),
            project_id: lb.project_id.clone(),
            protocol: listener.protocol.clone(),
            timeout_client_data: listener.timeout_client_data,
            timeout_member_data: listener.timeout_member_data,
        });
        // the pools listed above: a wanted listener's pool was not deleted
        // since, and one made here is the answer of its create
        let pool = match pools
            .iter()
            .find(|p| p.listeners.iter().any(|r| r.id == listener.id))
        {
            Some(p) => p.clone(),
            None => {
                let p = o
                    .create_pool(&PoolCreate {
                        listener_id: Some(listener.id.clone()),
                        protocol: w.protocol.clone(),
                        lb_algorithm: lbs.lb_algorithm.clone(),
                        name: Some(w.name.clone()),
                        ..Default::default()
                    })
                    .await?;
                settle(ctx, &lb.id).await?;
                p
            }
        };
        status.pools.push(PoolStatus {
            id: pool.id.clone(),
            listener_id: listener.id.clone(),
            loadbalancer_id: lb.id.clone(),
            name: pool.name.clone(),
            project_id: lb.project_id.clone(),
            protocol: pool.protocol.clone(),
        });
        // members: exactly the ready endpoints, in one call when they differ
        let want_members = plan::members(spec, &w.service_port);
        let mut members = o.list_members(&pool.id).await?;
        let have_members: Vec<(String, u16)> = members
            .iter()
            .map(|m| (m.address.clone(), m.protocol_port))
            .collect();
        if !plan::same_members(&have_members, &want_members) {
            // members get the subnet of their address (the ovn provider
            // needs it), listed now: namespaces' subnets come and go, and a
            // subnet pool gives a deleted one's CIDR to the next
            let subnets = ctx.os.neutron().list_subnets(&Query::new()).await?;
            let body: Vec<MemberCreate> = want_members
                .iter()
                .map(|m| MemberCreate {
                    address: m.address.clone(),
                    protocol_port: m.port,
                    subnet_id: subnet_of(&subnets, &m.address).map(|s| s.id.clone()),
                    name: Some(m.name.clone()),
                    weight: None,
                })
                .collect();
            o.batch_update_members(&pool.id, &body).await?;
            settle(ctx, &lb.id).await?;
            tracing::info!(klb = %format!("{ns}/{name}"), pool = %pool.id, members = body.len(), "members updated");
            // the batch call answers nothing: read the members it made
            members = o.list_members(&pool.id).await?;
        }
        for m in members {
            status.members.push(MemberStatus {
                id: m.id.clone(),
                ip: m.address.clone(),
                name: m.name.clone(),
                pool_id: pool.id.clone(),
                port: i32::from(m.protocol_port),
                project_id: lb.project_id.clone(),
                subnet_id: m.subnet_id.clone().unwrap_or_default(),
            });
        }
    }
    if klb.status.as_ref() != Some(&status) {
        let api: Api<KuryrLoadBalancer> = Api::namespaced(ctx.kube.clone(), &ns);
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    }
    Ok(Action::requeue(ctx.options.lb_recheck))
}

/// A LoadBalancer Service's floating IP on `[neutron_defaults]
/// external_svc_net`, associated with the VIP port: the Service's
/// `loadBalancerIP` when given (an existing floating IP, kept when the
/// Service goes), else one allocated for it (released with it); written to
/// the Service's `status.loadBalancer.ingress`. A Service no longer of type
/// LoadBalancer gives its floating IP back.
async fn public_ip(
    ctx: &Context,
    lbs: &LbSettings,
    klb: &KuryrLoadBalancer,
    lb: &LoadBalancer,
) -> Result<Option<PubIpInfo>, Error> {
    let n = ctx.os.neutron();
    let had = klb
        .status
        .as_ref()
        .and_then(|s| s.service_pub_ip_info.clone());
    let wanted = klb.spec.type_.as_deref() == Some("LoadBalancer");
    let Some(net) = lbs.external_net.as_deref().filter(|_| wanted) else {
        if let Some(info) = had {
            release_public_ip(ctx, &info).await?;
        }
        return Ok(None);
    };
    let info = match (&klb.spec.lb_ip, &had) {
        // the user's address: find it, never allocate
        (Some(addr), _) => {
            let fip = n
                .list_floating_ips(&Query::new().filter("floating_ip_address", addr))
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| Error::Refused {
                    reason: "FloatingIpNotFound".into(),
                    message: format!("loadBalancerIP {addr} is not an existing floating IP: allocate it first, or leave loadBalancerIP out"),
                })?;
            if fip.port_id.as_deref() != Some(&lb.vip_port_id) {
                n.associate_floating_ip(&fip.id, Some(&lb.vip_port_id))
                    .await?;
            }
            PubIpInfo {
                ip_id: fip.id,
                ip_addr: fip.floating_ip_address,
                alloc_method: "user".into(),
            }
        }
        (None, Some(info)) if info.alloc_method == "pool" => {
            match n
                .list_floating_ips(&Query::new().filter("id", &info.ip_id))
                .await?
                .into_iter()
                .next()
            {
                Some(fip) => {
                    if fip.port_id.as_deref() != Some(&lb.vip_port_id) {
                        n.associate_floating_ip(&fip.id, Some(&lb.vip_port_id))
                            .await?;
                    }
                    info.clone()
                }
                None => allocate(ctx, net, lb).await?,
            }
        }
        (None, _) => {
            // one a crash left associated with the VIP already counts
            let found = n
                .list_floating_ips(&Query::new().filter("port_id", &lb.vip_port_id))
                .await?
                .into_iter()
                .next();
            match found {
                Some(fip) => PubIpInfo {
                    ip_id: fip.id,
                    ip_addr: fip.floating_ip_address,
                    alloc_method: "pool".into(),
                },
                None => allocate(ctx, net, lb).await?,
            }
        }
    };
    set_ingress(ctx, klb, Some(&info.ip_addr)).await?;
    Ok(Some(info))
}

async fn allocate(ctx: &Context, net: &str, lb: &LoadBalancer) -> Result<PubIpInfo, Error> {
    let fip = ctx
        .os
        .neutron()
        .create_floating_ip(&kuryr_openstack::types::neutron::FloatingIpCreate {
            floating_network_id: net.to_owned(),
            port_id: Some(lb.vip_port_id.clone()),
            project_id: Some(lb.project_id.clone()),
            description: Some(ctx.drivers.description.clone()),
            subnet_id: None,
        })
        .await?;
    tracing::info!(lb = %lb.id, ip = %fip.floating_ip_address, "floating IP allocated");
    Ok(PubIpInfo {
        ip_id: fip.id,
        ip_addr: fip.floating_ip_address,
        alloc_method: "pool".into(),
    })
}

/// Gives a floating IP back: released when kuryr allocated it, only
/// disassociated when it was the user's.
async fn release_public_ip(ctx: &Context, info: &PubIpInfo) -> Result<(), Error> {
    let n = ctx.os.neutron();
    if info.alloc_method == "pool" {
        n.delete_floating_ip(&info.ip_id).await?;
    } else {
        match n.associate_floating_ip(&info.ip_id, None).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The Service's `status.loadBalancer.ingress`.
async fn set_ingress(
    ctx: &Context,
    klb: &KuryrLoadBalancer,
    ip: Option<&str>,
) -> Result<(), Error> {
    use k8s_openapi::api::core::v1::Service;
    let ns = klb.metadata.namespace.clone().unwrap_or_default();
    let name = klb.metadata.name.clone().unwrap_or_default();
    let svcs: Api<Service> = Api::namespaced(ctx.kube.clone(), &ns);
    let Some(svc) = svcs.get_opt(&name).await? else {
        return Ok(());
    };
    let have: Vec<String> = svc
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip)
        .collect();
    let want: Vec<String> = ip.into_iter().map(str::to_owned).collect();
    if have != want {
        let ingress: Vec<serde_json::Value> = want.iter().map(|i| json!({"ip": i})).collect();
        svcs.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": ingress}}})),
        )
        .await?;
    }
    Ok(())
}

/// The listener of `w` (created, or its timeouts brought to the spec's).
async fn ensure_listener(
    ctx: &Context,
    lb: &LoadBalancer,
    w: &WantListener,
    spec: &kuryr_crds::KuryrLoadBalancerSpec,
    have: &[kuryr_openstack::types::octavia::Listener],
) -> Result<kuryr_openstack::types::octavia::Listener, Error> {
    let o = ctx.os.octavia();
    let (client, member) = (spec.timeout_client_data, spec.timeout_member_data);
    match have
        .iter()
        .find(|l| l.protocol == w.protocol && l.protocol_port == w.port)
    {
        Some(l) => {
            let differs = |want: Option<u64>, got: Option<u64>| want.is_some() && want != got;
            if differs(client, l.timeout_client_data) || differs(member, l.timeout_member_data) {
                o.update_listener(
                    &l.id,
                    &ListenerUpdate {
                        timeout_client_data: client,
                        timeout_member_data: member,
                        ..Default::default()
                    },
                )
                .await?;
                settle(ctx, &lb.id).await?;
                return Ok(o.get_listener(&l.id).await?);
            }
            Ok(l.clone())
        }
        None => {
            let l = o
                .create_listener(&ListenerCreate {
                    loadbalancer_id: lb.id.clone(),
                    protocol: w.protocol.clone(),
                    protocol_port: w.port,
                    name: Some(w.name.clone()),
                    timeout_client_data: client,
                    timeout_member_data: member,
                    ..Default::default()
                })
                .await?;
            settle(ctx, &lb.id).await?;
            Ok(o.get_listener(&l.id).await?)
        }
    }
}

/// Deletes the load balancer of `klb` with everything in it and waits
/// until it is gone (idempotent).
async fn release(ctx: &Context, klb: &KuryrLoadBalancer) -> Result<(), Error> {
    let o = ctx.os.octavia();
    if let Some(info) = klb
        .status
        .as_ref()
        .and_then(|s| s.service_pub_ip_info.as_ref())
    {
        release_public_ip(ctx, info).await?;
    }
    if let Some(lb) = find_lb(ctx, klb).await? {
        if lb.provisioning_status.starts_with("PENDING_")
            && lb.provisioning_status != "PENDING_DELETE"
        {
            // Octavia refuses a delete now: wait it out
            o.wait_load_balancer_active(&lb.id, ACTIVE_WAIT).await.ok();
        }
        o.delete_load_balancer(&lb.id, true).await?;
        o.wait_load_balancer_deleted(&lb.id, ACTIVE_WAIT).await?;
        tracing::info!(klb = %super::qualified(&klb.metadata), lb = %lb.id, "load balancer deleted");
        ctx.metrics
            .lbs_deleted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

async fn reconcile(klb: Arc<KuryrLoadBalancer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(lbs) = ctx.lb.clone() else {
        return Ok(Action::await_change());
    };
    let ns = klb.metadata.namespace.clone().unwrap_or_default();
    if !super::namespace_selected(&ctx, &ns).await? {
        return Ok(Action::await_change());
    }
    let api: Api<KuryrLoadBalancer> = Api::namespaced(ctx.kube.clone(), &ns);
    let has_finalizer = crate::plan::has_finalizer(&klb.metadata, KLB_FINALIZER);
    if klb.metadata.deletion_timestamp.is_some() {
        if has_finalizer {
            release(&ctx, &klb).await?;
            set_finalizers(&api, &klb.metadata, without(&klb.metadata, KLB_FINALIZER)).await?;
        }
        return Ok(Action::await_change());
    }
    if !has_finalizer {
        let mut f = klb.metadata.finalizers.clone().unwrap_or_default();
        f.push(KLB_FINALIZER.into());
        if set_finalizers(&api, &klb.metadata, f).await?.is_none() {
            return Ok(Action::await_change());
        }
    }
    let done = converge(&klb, &ctx, &lbs).await;
    if let Err(e) = &done {
        event_on_service(
            &ctx,
            &klb,
            &e.reason(),
            format!("Load balancer not ready: {e}"),
        )
        .await;
    }
    done
}

/// A Warning event on the Service a KuryrLoadBalancer belongs to (best
/// effort: a failure to publish is only logged).
async fn event_on_service(ctx: &Context, klb: &KuryrLoadBalancer, reason: &str, note: String) {
    use k8s_openapi::api::core::v1::ObjectReference;
    use kube::runtime::events::EventType;
    let Some(owner) = service_owner(&klb.metadata) else {
        return;
    };
    let svc = ObjectReference {
        api_version: Some(owner.api_version.clone()),
        kind: Some("Service".into()),
        name: Some(owner.name.clone()),
        namespace: klb.metadata.namespace.clone(),
        uid: Some(owner.uid.clone()),
        ..Default::default()
    };
    crate::handlers::publish_event(
        ctx,
        &svc,
        EventType::Warning,
        "SetUpLoadBalancer",
        reason,
        note,
    )
    .await;
}

fn error_policy(klb: Arc<KuryrLoadBalancer>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .errors
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(klb = %super::qualified(&klb.metadata), error = %err, "load balancer not converged yet; retrying in 5 s");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the load-balancer handler until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let klbs: Api<KuryrLoadBalancer> = Api::all(ctx.kube.clone());
    let workers = ctx.options.lb_workers.max(1);
    Controller::new(klbs, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(workers))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "load balancer reconcile");
            }
        })
        .await;
}
