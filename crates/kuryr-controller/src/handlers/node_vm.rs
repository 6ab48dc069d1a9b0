//! Nested drivers: the VM found for each node is kept (its port and
//! trunk), and forgotten when the Node's InternalIPs no longer match that
//! port (the VM was replaced) or the Node is deleted, so the next pod of
//! that node finds the new VM without a controller restart. A port or trunk
//! that Neutron answers 404 for is forgotten too (see [`crate::drivers`]).

use crate::Context;
use crate::drivers::DriverKind;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use std::sync::Arc;

/// Watches Nodes until the process ends (nested drivers only).
pub async fn run(ctx: Arc<Context>) {
    if ctx.drivers.kind == DriverKind::NeutronVif {
        return;
    }
    let nodes: Api<Node> = Api::all(ctx.kube.clone());
    let mut events =
        std::pin::pin!(watcher::watcher(nodes, watcher::Config::default()).default_backoff());
    while let Some(ev) = events.next().await {
        match ev {
            Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                ctx.drivers.node_changed(&name, Some(&n)).await;
            }
            Ok(watcher::Event::Delete(n)) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                ctx.drivers.node_changed(&name, None).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "watching nodes for their VMs; retrying"),
        }
    }
}
