//! The node's own path into the pod network: the Neutron port the
//! controller made for this node (annotation [`NODE_PORT_ANNOTATION`] on the
//! Node) plugged as a host interface: a veth whose host-namespace end
//! (`[node_port] interface`, `kuryr-node`) carries the port's MAC and
//! addresses, and whose other end (`tap` + port id) is a port of br-int with
//! the Neutron port's external_ids, exactly as a pod is plugged. The host
//! then reaches the pod subnet on-link (kubelet probes, host-network pods),
//! other pod subnets through the given routes, without NAT; no default
//! route is added. Kept when the daemon stops or crashes (the node keeps
//! reaching its pods), made again when missing, removed when the Node no
//! longer has the annotation.

use crate::bind::{BindError, PlugEnv, dev_name, pod_iface};
use crate::link::{self, PodIface, PodRoute};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kuryr_crds::{NODE_PORT_ANNOTATION, NodePort};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// external_ids key naming the node on its port's OVS interface (pods'
/// interfaces carry `kuryr-container-id` instead, so the daemon's garbage
/// collection never takes this one).
pub const NODE_PORT_KEY: &str = "kuryr-node-port";

/// The host interface a node port asks for: the port's MAC, MTU and
/// addresses, no default route, the annotation's routes.
pub fn node_iface(np: &NodePort, ifname: &str, mtu: Option<u32>) -> Result<PodIface, BindError> {
    let mut iface = pod_iface(&np.vif, ifname, mtu)?;
    iface.routes.retain(|r| r.dst.1 != 0);
    for r in &np.routes {
        let (Some((dst, len)), Ok(gw)) = (r.cidr.split_once('/'), r.gateway.parse::<IpAddr>())
        else {
            return Err(BindError::BadVif(format!(
                "bad route {} via {}",
                r.cidr, r.gateway
            )));
        };
        let (Ok(dst), Ok(len)) = (dst.parse::<IpAddr>(), len.parse::<u8>()) else {
            return Err(BindError::BadVif(format!(
                "bad route {} via {}",
                r.cidr, r.gateway
            )));
        };
        iface.routes.push(PodRoute {
            dst: (dst, len),
            gw,
        });
    }
    Ok(iface)
}

fn ovs_ids(np: &NodePort, node: &str) -> BTreeMap<String, String> {
    [
        ("iface-id", np.vif.id.as_str()),
        ("attached-mac", np.vif.address.as_str()),
        ("iface-status", "active"),
        (NODE_PORT_KEY, node),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn bridge_of(np: &NodePort) -> String {
    match &np.vif.kind {
        kuryr_crds::VifKind::OpenVSwitch { bridge_name } => bridge_name.clone(),
        _ => np
            .vif
            .network
            .bridge
            .clone()
            .unwrap_or_else(|| "br-int".into()),
    }
}

/// Makes the host interface `ifname` for `np` (idempotent: what is already
/// right is kept, a link or OVS port of another port is replaced); returns
/// whether anything was made.
pub async fn plug(env: &PlugEnv<'_>, np: &NodePort, ifname: &str) -> Result<bool, BindError> {
    let iface = node_iface(np, ifname, env.mtu)?;
    let tap = dev_name("tap", &np.vif.id);
    let ids = ovs_ids(np, env.node);
    let have = link::get(env.host, ifname).await?;
    let in_ovs = env
        .ovs
        .interface(&tap)
        .await?
        .is_some_and(|p| p.external_ids.get("iface-id") == Some(&np.vif.id));
    let made = match have {
        Some(l)
            if l.mac == Some(iface.mac) && link::get(env.host, &tap).await?.is_some() && in_ovs =>
        {
            false
        }
        _ => {
            // another port's interface (the node got a new port), or half made
            unplug(env, ifname).await?;
            link::delete(env.host, &tap).await?;
            link::add_veth(env.host, &tap, ifname, None, iface.mac, iface.mtu).await?;
            env.ovs.add_port(&bridge_of(np), &tap, "", &ids).await?;
            env.ovs.wait_attached(&tap).await?;
            true
        }
    };
    // addresses, up, routes: re-applied every time (kept when present)
    link::configure_pod(env.host, &iface).await?;
    Ok(made)
}

/// Removes the OVS port of this node's port and then the host interface
/// `ifname` (idempotent); returns whether anything was there. The
/// interface goes last, so once it is gone nothing of the node port is left.
pub async fn unplug(env: &PlugEnv<'_>, ifname: &str) -> Result<bool, BindError> {
    let mut any = false;
    let ours = env.ovs.ports_with(NODE_PORT_KEY).await?;
    for p in ours
        .into_iter()
        .filter(|p| p.external_ids.get(NODE_PORT_KEY).map(String::as_str) == Some(env.node))
    {
        env.ovs.del_port(&p.name).await?;
        link::delete(env.host, &p.name).await?;
        any = true;
    }
    any |= link::delete(env.host, ifname).await?;
    Ok(any)
}

/// What the Node's annotation asks for: `Ok(None)` without one.
pub fn wanted(node: &Node) -> Result<Option<NodePort>, String> {
    let Some(raw) = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODE_PORT_ANNOTATION))
    else {
        return Ok(None);
    };
    NodePort::parse(raw)
        .map(Some)
        .map_err(|e| format!("annotation {NODE_PORT_ANNOTATION} is not a node port: {e}"))
}

/// Keeps this node's port plugged as its Node's annotation says, until the
/// process ends: applies every change of the Node, retries failures with a
/// back-off (1 s doubling to 60 s) and looks again every `recheck`, so an
/// interface deleted by hand comes back. `report` is told whether the port
/// is plugged.
pub async fn run(
    daemon: std::sync::Arc<crate::Daemon>,
    kube: kube::Client,
    ifname: String,
    recheck: Duration,
) {
    let node = daemon.settings.node.clone();
    let nodes: Api<Node> = Api::all(kube);
    let (tx, mut rx) = tokio::sync::watch::channel::<Option<Node>>(None);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={node}"));
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher::watcher(nodes, cfg).default_backoff());
        while let Some(ev) = events.next().await {
            match ev {
                Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                    let _ = tx.send(Some(n));
                }
                Ok(watcher::Event::Delete(_)) => {
                    let _ = tx.send(Some(Node::default()));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(node = %node, error = %e, "watching this node"),
            }
        }
    });
    let mut delay = Duration::from_secs(1);
    loop {
        let current = rx.borrow_and_update().clone();
        let wait = match current {
            None => recheck, // no answer from the API server yet
            Some(n) => {
                let env = daemon.env();
                let res = match wanted(&n) {
                    Ok(Some(np)) => plug(&env, &np, &ifname).await.map(|made| {
                        if made {
                            tracing::info!(interface = %ifname, port = %np.vif.id, mac = %np.vif.address, "node port plugged: this node reaches its pods");
                        }
                        true
                    }),
                    Ok(None) => unplug(&env, &ifname).await.map(|gone| {
                        if gone {
                            tracing::info!(interface = %ifname, "node port removed (the Node has none)");
                        }
                        false
                    }),
                    Err(e) => Err(BindError::BadVif(e)),
                };
                match res {
                    Ok(plugged) => {
                        daemon.metrics.set_node_port(plugged);
                        delay = Duration::from_secs(1);
                        recheck
                    }
                    Err(e) => {
                        daemon.metrics.set_node_port(false);
                        tracing::warn!(interface = %ifname, error = %e, retry_in_s = delay.as_secs(), "node port not plugged");
                        let d = delay;
                        delay = (delay * 2).min(Duration::from_secs(60));
                        d
                    }
                }
            }
        };
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuryr_crds::{NodeRoute, Vif, VifKind};
    use kuryr_openstack::types::neutron::{Network, Port, Subnet};

    fn node_port() -> NodePort {
        let port: Port = serde_json::from_value(serde_json::json!({
            "id": "5e6f7a8b-0000-4000-8000-000000000001", "network_id": "net",
            "mac_address": "fa:16:3e:00:00:09", "status": "ACTIVE",
            "fixed_ips": [{"subnet_id": "sub", "ip_address": "10.77.0.5"}]}))
        .unwrap();
        let net: Network =
            serde_json::from_value(serde_json::json!({"id": "net", "mtu": 1442})).unwrap();
        let sub: Subnet = serde_json::from_value(serde_json::json!({
            "id": "sub", "network_id": "net", "cidr": "10.77.0.0/24",
            "gateway_ip": "10.77.0.1", "ip_version": 4}))
        .unwrap();
        NodePort {
            vif: Vif::from_port(
                &port,
                &net,
                &[sub],
                VifKind::OpenVSwitch {
                    bridge_name: "br-int".into(),
                },
            ),
            routes: vec![NodeRoute {
                cidr: "10.78.0.0/16".into(),
                gateway: "10.77.0.1".into(),
            }],
        }
    }

    #[test]
    fn the_host_interface_gets_no_default_route() {
        let i = node_iface(&node_port(), "kuryr-node", None).unwrap();
        assert_eq!(i.addrs, [("10.77.0.5".parse().unwrap(), 24)]);
        assert_eq!(i.mtu, Some(1442));
        assert_eq!(i.routes.len(), 1, "{:?}", i.routes);
        assert_eq!(i.routes[0].dst, ("10.78.0.0".parse().unwrap(), 16));
        let mut bad = node_port();
        bad.routes[0].cidr = "10.78.0.0".into();
        assert!(node_iface(&bad, "kuryr-node", None).is_err());
    }

    #[test]
    fn reads_the_annotation_or_says_why_not() {
        let mut n = Node::default();
        assert_eq!(wanted(&n).unwrap(), None);
        n.metadata.annotations = Some(
            [(
                NODE_PORT_ANNOTATION.to_string(),
                node_port().to_annotation(),
            )]
            .into(),
        );
        assert_eq!(wanted(&n).unwrap(), Some(node_port()));
        n.metadata.annotations =
            Some([(NODE_PORT_ANNOTATION.to_string(), "junk".to_string())].into());
        assert!(wanted(&n).unwrap_err().contains(NODE_PORT_ANNOTATION));
    }
}
