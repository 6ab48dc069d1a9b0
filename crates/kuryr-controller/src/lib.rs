//! kuryr-controller: every pod gets a Neutron port, recorded as a VIF in the
//! pod's KuryrPort, which the node daemon reads to plug the pod; every
//! Service gets an Octavia load balancer, recorded in its
//! KuryrLoadBalancer.
//!
//! [`handlers`] holds one module per watched kind (pods, nodes, Services,
//! EndpointSlices, KuryrLoadBalancers); [`run`] starts those
//! `[kubernetes] enabled_handlers` names beside the pool, ACTIVE and
//! periodic reconciliation tasks. The decisions are in [`plan`], [`pool`],
//! [`gc`] and [`services`] (pure); the drivers ([`drivers`]) place ports for
//! side-by-side, nested-vlan and nested-macvlan nodes; [`ports`] runs the
//! pools; [`startup`] reconciles with Neutron and Octavia at start and then
//! periodically; [`leader`] makes sure only one replica does any of this.
//! [`Context`] is what they all share.

pub mod active;
pub mod context;
pub mod drivers;
pub mod error;
pub mod gc;
pub mod handlers;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod namespace_net;
pub mod plan;
pub mod pod_net;
pub mod policy;
pub mod pool;
pub mod ports;
pub mod services;
pub mod startup;
pub mod tenants;
#[cfg(test)]
mod testing;
pub mod vlan;

pub use context::{Context, Options};
pub use error::{Error, driver_error_reason};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Locks a std mutex, taking it over from a holder that panicked (the
/// state it guards stays consistent between statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reconciles with Neutron until it works (Neutron or Kubernetes may still
/// be starting), showing progress.
async fn startup_reconcile(ctx: &Context) {
    let mut delay = Duration::from_secs(1);
    loop {
        let pass = async {
            let r = startup::reconcile(ctx, None).await?;
            // after the pools know their ports: an orphan's go back to them
            let orphans = if ctx.handlers.pods {
                handlers::pod::release_orphans(ctx, None).await?
            } else {
                0
            };
            let lbs = startup::reconcile_load_balancers(ctx, None).await?;
            let groups = if ctx.handlers.policies {
                handlers::network_policy::reconcile_groups(ctx, None).await?
                    + handlers::peer_groups::reconcile(ctx, None).await?
            } else {
                0
            };
            Ok::<_, Error>((r, orphans, lbs, groups))
        };
        match pass.await {
            Ok((r, orphans, lbs, groups)) => {
                ctx.metrics.set_reconciled();
                tracing::info!(
                    in_use = r.in_use,
                    adopted = r.adopted,
                    left_for_pods = r.left,
                    leaked = r.leaked.len(),
                    removed = r.removed,
                    retagged = r.retagged,
                    orphaned_kuryrports = orphans,
                    leaked_load_balancers = lbs,
                    orphaned_policy_groups = groups,
                    dry_run = ctx.options.gc_dry_run,
                    "start-up reconciliation with Neutron and Octavia done"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "start-up reconciliation failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The pool keys of the nodes to pre-fill (`--pool-prefill-nodes`).
async fn node_keys(ctx: &Context) -> Vec<pool::PoolKey> {
    let Some(sel) = &ctx.options.prefill_nodes else {
        return Vec::new();
    };
    let nodes: Api<Node> = Api::all(ctx.kube.clone());
    let Ok(list) = nodes
        .list_metadata(&ListParams::default().labels(sel))
        .await
    else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for n in list.items {
        let name = n.metadata.name.unwrap_or_default();
        match ctx.drivers.pool_key(&name).await {
            Ok(k) => keys.push(k),
            Err(e) => tracing::debug!(node = %name, error = %e, "no pool for node"),
        }
    }
    keys
}

/// Runs the pod handler until `shutdown` resolves: reconciliation with
/// Neutron first, then the handler beside the pool, ACTIVE and periodic
/// reconciliation tasks.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    startup_reconcile(&ctx).await;
    let mut tasks = Vec::new();
    {
        let c = ctx.clone();
        tasks.push(tokio::spawn(async move {
            c.active.run(c.os.clone(), c.options.active_poll).await;
        }));
    }
    if let Some(pool) = ctx.pool.clone() {
        let c = ctx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let keys = node_keys(&c).await;
                pool.maintain(&keys).await;
                tokio::time::sleep(c.pool_interval).await;
            }
        }));
    }
    if ctx.handlers.pods {
        tasks.push(tokio::spawn(pod_net::run(ctx.clone())));
        tasks.push(tokio::spawn(handlers::node::run(ctx.clone())));
        tasks.push(tokio::spawn(handlers::node_vm::run(ctx.clone())));
    }
    if !ctx.options.gc_interval.is_zero() {
        let c = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut prev = std::collections::BTreeSet::new();
            let mut prev_lbs = std::collections::BTreeSet::new();
            let mut prev_orphans = std::collections::BTreeSet::new();
            let mut prev_groups = std::collections::BTreeSet::new();
            let mut prev_peers = std::collections::BTreeSet::new();
            loop {
                tokio::time::sleep(c.options.gc_interval).await;
                if c.handlers.pods
                    && let Err(e) =
                        handlers::pod::release_orphans(&c, Some(&mut prev_orphans)).await
                {
                    tracing::warn!(error = %e, "periodic release of orphaned KuryrPorts failed");
                }
                if c.handlers.policies
                    && let Err(e) =
                        handlers::network_policy::reconcile_groups(&c, Some(&mut prev_groups)).await
                {
                    tracing::warn!(error = %e, "periodic reconciliation of policy groups failed");
                }
                if c.handlers.policies
                    && let Err(e) =
                        handlers::peer_groups::reconcile(&c, Some(&mut prev_peers)).await
                {
                    tracing::warn!(error = %e, "periodic reconciliation of peer-set groups failed");
                }
                if let Err(e) = startup::reconcile_load_balancers(&c, Some(&mut prev_lbs)).await {
                    tracing::warn!(error = %e, "periodic reconciliation of load balancers failed");
                }
                match startup::reconcile(&c, Some(&mut prev)).await {
                    Ok(r) if !r.leaked.is_empty() || r.adopted > 0 => {
                        tracing::info!(
                            leaked = r.leaked.len(),
                            removed = r.removed,
                            adopted = r.adopted,
                            "periodic reconciliation"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "periodic reconciliation failed"),
                }
            }
        }));
    }
    use futures::FutureExt;
    let shutdown = shutdown.shared();
    ctx.metrics.set_ready(true);
    let metrics = ctx.metrics.clone();
    let mut running: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
    if ctx.handlers.pods {
        running.push(handlers::pod::run(ctx.clone(), shutdown.clone()).boxed());
    }
    if ctx.handlers.policies {
        running.push(handlers::network_policy::run(ctx.clone(), shutdown.clone()).boxed());
    }
    if ctx.namespaces.is_some() {
        running.push(handlers::namespace::run(ctx.clone(), shutdown.clone()).boxed());
        running.push(handlers::kuryr_network::run(ctx.clone(), shutdown.clone()).boxed());
    }
    if ctx.lb.is_some() {
        let h = ctx.handlers;
        if h.services {
            running.push(handlers::service::run(ctx.clone(), shutdown.clone()).boxed());
        }
        if h.endpoints {
            running.push(handlers::endpoint_slice::run(ctx.clone(), shutdown.clone()).boxed());
        }
        if h.loadbalancers {
            running.push(handlers::loadbalancer::run(ctx.clone(), shutdown.clone()).boxed());
        }
    }
    if running.is_empty() {
        tracing::warn!("no handler runs ([kubernetes] enabled_handlers): waiting for shutdown");
        shutdown.await;
    }
    futures::future::join_all(running).await;
    for t in tasks {
        t.abort();
    }
    metrics.set_ready(false);
}
