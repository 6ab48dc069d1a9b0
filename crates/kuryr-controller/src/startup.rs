//! Reconciliation with Neutron, at start-up and then periodically: the
//! cluster's ports (by cluster tag, and by description for one a crash left
//! untagged) are matched with the KuryrPorts and pods (see [`crate::gc`]).
//! Free ports go back into their pools, ports in use are remembered for
//! their pool, leaked ports (and their subports) are deleted, or only
//! reported with `--gc-dry-run`.
//!
//! At start-up nothing else runs yet, so every verdict is acted on. Later
//! passes run beside the handlers: a port is adopted or deleted only when
//! two passes in a row found it unknown, so a port that a handler or a
//! batch is making right now is never taken for a leak.

use crate::gc::{self, Known, Verdict};
use crate::{Context, Error, plan};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kuryr_crds::KuryrPort;
use kuryr_openstack::{Query, TaggedResource};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Ports used by KuryrPorts.
    pub in_use: usize,
    /// Free ports put into pools.
    pub adopted: usize,
    /// Ports made for live pods not recorded yet.
    pub left: usize,
    /// Leaked ports found (deleted unless dry run).
    pub leaked: Vec<String>,
    /// Leaked ports deleted.
    pub removed: usize,
    /// Ports a crash left untagged, tagged now.
    pub retagged: usize,
}

/// What Kubernetes and the trunks know now.
async fn known(ctx: &Context) -> Result<Known, Error> {
    let kps: Api<KuryrPort> = Api::all(ctx.kube.clone());
    let mut k = Known::default();
    for kp in kps.list(&ListParams::default()).await?.items {
        // a VIF that cannot be read still holds its port
        for id in kp.status.iter().flat_map(|s| s.port_ids()) {
            k.referenced.insert(id.to_owned());
        }
    }
    let pods: Api<Pod> = Api::all(ctx.kube.clone());
    for p in pods.list_metadata(&ListParams::default()).await?.items {
        if let Some(uid) = p.metadata.uid {
            k.live_pods.insert(uid);
        }
    }
    let nodes: Api<Node> = Api::all(ctx.kube.clone());
    for n in nodes.list_metadata(&ListParams::default()).await?.items {
        if let Some(uid) = n.metadata.uid {
            k.live_nodes.insert(uid);
        }
    }
    if ctx.drivers.kind == crate::drivers::DriverKind::NestedVlan {
        for node in nodes.list_metadata(&ListParams::default()).await?.items {
            let name = node.metadata.name.unwrap_or_default();
            let Ok(trunk) = ctx.drivers.trunk_of(&name).await else {
                continue;
            };
            for s in ctx.os.neutron().get_subports(&trunk).await? {
                k.subports.insert(
                    s.port_id,
                    (trunk.clone(), u16::try_from(s.segmentation_id).unwrap_or(0)),
                );
            }
        }
    }
    Ok(k)
}

/// The cluster's load balancers whose Service is gone, or which duplicate
/// the one recorded for their Service, are deleted (reported only with
/// `--gc-dry-run`). `prev` as for [`reconcile`]: a periodic pass acts only
/// on load balancers found so twice in a row. Answers how many were found.
pub async fn reconcile_load_balancers(
    ctx: &Context,
    prev: Option<&mut BTreeSet<String>>,
) -> Result<usize, Error> {
    use k8s_openapi::api::core::v1::Service;
    if ctx.lb.is_none() {
        return Ok(0);
    }
    let o = ctx.os.octavia();
    // Kubernetes first: what is recorded after this read is then known
    let svcs: Api<Service> = Api::all(ctx.kube.clone());
    let live: BTreeSet<String> = svcs
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|s| s.metadata.uid)
        .collect();
    let klbs: Api<kuryr_crds::KuryrLoadBalancer> = Api::all(ctx.kube.clone());
    let mut recorded = std::collections::BTreeMap::new();
    for k in klbs.list(&ListParams::default()).await?.items {
        let owner =
            crate::handlers::loadbalancer::service_owner(&k.metadata).map(|o| o.uid.clone());
        if let (Some(uid), Some(lb)) = (owner, k.status.and_then(|s| s.loadbalancer)) {
            recorded.insert(uid, lb.id);
        }
    }
    let lbs = o
        .list_load_balancers(&Query::new().tags([plan::cluster_tag(&ctx.cluster_id)]))
        .await?;
    let mut now = BTreeSet::new();
    let mut found = 0;
    for lb in lbs.iter().filter(|l| l.provisioning_status != "DELETED") {
        let verdict = gc::classify_lb(&lb.id, &lb.tags, &live, &recorded);
        if verdict == gc::LbVerdict::Keep {
            continue;
        }
        if let Some(prev) = &prev
            && !prev.contains(&lb.id)
        {
            now.insert(lb.id.clone());
            continue;
        }
        found += 1;
        if ctx.options.gc_dry_run {
            tracing::warn!(lb = %lb.id, name = %lb.name, ?verdict, "leaked load balancer (dry run: left in place)");
            continue;
        }
        tracing::warn!(lb = %lb.id, name = %lb.name, status = %lb.provisioning_status, ?verdict, "leaked load balancer: deleting it");
        o.delete_load_balancer(&lb.id, true).await?;
        tracing::warn!(lb = %lb.id, name = %lb.name, ?verdict, "leaked load balancer deleted");
        ctx.metrics.lbs_deleted.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(prev) = prev {
        *prev = now;
    }
    Ok(found)
}

/// One pass. `prev`: the ports found unknown by the previous pass (`None`
/// at start-up, when nothing else runs); updated to this pass's.
pub async fn reconcile(
    ctx: &Context,
    prev: Option<&mut BTreeSet<String>>,
) -> Result<Report, Error> {
    let n = ctx.os.neutron();
    let cluster = plan::cluster_tag(&ctx.cluster_id);
    let mut report = Report::default();
    // ports a crash left between their create and their tagging
    let untagged = n
        .list_ports(
            &Query::new()
                .filter("description", &cluster)
                .not_tags_any([&cluster]),
        )
        .await?;
    for p in untagged {
        n.replace_tags(TaggedResource::Port, &p.id, &ctx.drivers.tags)
            .await?;
        report.retagged += 1;
    }
    // Kubernetes first: a port recorded after the list of ports is then
    // still known as recorded
    let known = known(ctx).await?;
    let ports = n.list_ports(&Query::new().tags([&cluster])).await?;
    let periodic = prev.is_some();
    let mut unknown_now = BTreeSet::new();
    for port in &ports {
        if periodic && ctx.pool.as_ref().is_some_and(|p| p.knows(&port.id)) {
            continue;
        }
        let verdict = gc::classify(port, &known, &ctx.pool_rules);
        let confirmed = match &prev {
            None => true,
            Some(prev) => prev.contains(&port.id),
        };
        match verdict {
            Verdict::InUse { pool } => {
                report.in_use += 1;
                if let (Some(pp), Some(key)) = (&ctx.pool, pool) {
                    let vlan_id = known.subports.get(&port.id).map(|(_, v)| *v);
                    pp.adopt_owned(
                        key,
                        crate::pool::PoolPort {
                            id: port.id.clone(),
                            vlan_id,
                            port: Some(std::sync::Arc::new(port.clone())),
                        },
                    );
                }
            }
            Verdict::Leave => report.left += 1,
            Verdict::Adopt {
                key,
                port: pp,
                active,
            } => {
                if !confirmed {
                    unknown_now.insert(port.id.clone());
                    continue;
                }
                let Some(pool) = &ctx.pool else { continue };
                if gc::needs_reset(port) {
                    ctx.drivers
                        .set_owner(&port.id, None)
                        .await
                        .map_err(Error::from)?;
                }
                pool.adopt_free(&key, pp, active);
                report.adopted += 1;
            }
            Verdict::Leaked { trunk } => {
                if !confirmed {
                    unknown_now.insert(port.id.clone());
                    continue;
                }
                report.leaked.push(port.id.clone());
                ctx.metrics.leaked_found.fetch_add(1, Ordering::Relaxed);
                if ctx.options.gc_dry_run {
                    tracing::warn!(port = %port.id, name = %port.name, "leaked port (dry run: left in place)");
                    continue;
                }
                ctx.drivers
                    .delete_port(&port.id, None, trunk.as_deref())
                    .await
                    .map_err(Error::Driver)?;
                tracing::warn!(port = %port.id, name = %port.name, ?trunk, "leaked port deleted");
                ctx.metrics.leaked_removed.fetch_add(1, Ordering::Relaxed);
                report.removed += 1;
            }
        }
    }
    if let Some(prev) = prev {
        *prev = unknown_now;
    }
    if !ctx.options.gc_dry_run {
        let pruned = crate::handlers::node::prune_node_rules(ctx).await?;
        if pruned > 0 {
            tracing::info!(rules = pruned, "node rules of gone node ports deleted");
        }
    }
    Ok(report)
}
