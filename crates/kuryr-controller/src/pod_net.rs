//! The pod network and its subnets, as every VIF describes them (MTU,
//! subnets, gateways, host routes, DNS servers).
//!
//! Read at start and read again every [`crate::Options::net_refresh`], so a
//! network whose MTU an operator changed, or a subnet added to it or given
//! new routes, reaches the VIFs of pods made afterwards without a restart
//! (pods already running keep what they were plugged with, as with
//! kuryr-kubernetes). What changed is logged; a failed read keeps the last
//! good view and is retried on the next round.

use kuryr_openstack::types::neutron::{Network, Subnet};
use kuryr_openstack::{Neutron, Query};
use std::sync::{Arc, RwLock};

/// One view of the pod network.
#[derive(Debug, Clone)]
pub struct PodNet {
    /// The network.
    pub network: Network,
    /// Its subnets.
    pub subnets: Vec<Subnet>,
}

impl PodNet {
    /// Reads network `network_id` and its subnets (idempotent, read-only).
    pub async fn read(n: &Neutron, network_id: &str) -> Result<Self, kuryr_openstack::Error> {
        let network = n.get_network(network_id).await?;
        let subnets = n
            .list_subnets(&Query::new().filter("network_id", network_id))
            .await?;
        Ok(Self { network, subnets })
    }
}

/// What differs between two views in what a VIF carries, one line each
/// (empty: nothing a VIF shows changed, e.g. only revision numbers).
pub fn changes(old: &PodNet, new: &PodNet) -> Vec<String> {
    let mut out = Vec::new();
    if old.network.mtu != new.network.mtu {
        out.push(format!(
            "network MTU {} -> {}",
            show(old.network.mtu),
            show(new.network.mtu)
        ));
    }
    for s in &old.subnets {
        match new.subnets.iter().find(|n| n.id == s.id) {
            None => out.push(format!("subnet {} ({}) removed", s.id, s.cidr)),
            Some(n) => {
                if n.gateway_ip != s.gateway_ip {
                    out.push(format!(
                        "subnet {} gateway {} -> {}",
                        s.id,
                        show(s.gateway_ip.as_ref()),
                        show(n.gateway_ip.as_ref())
                    ));
                }
                if n.host_routes != s.host_routes {
                    out.push(format!("subnet {} host routes changed", s.id));
                }
                if n.dns_nameservers != s.dns_nameservers {
                    out.push(format!(
                        "subnet {} DNS servers {:?} -> {:?}",
                        s.id, s.dns_nameservers, n.dns_nameservers
                    ));
                }
            }
        }
    }
    for n in &new.subnets {
        if !old.subnets.iter().any(|s| s.id == n.id) {
            out.push(format!("subnet {} ({}) added", n.id, n.cidr));
        }
    }
    out
}

fn show<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "unset".to_owned(), |v| v.to_string())
}

/// The current view, shared by the handlers.
#[derive(Debug)]
pub struct PodNetCache {
    id: String,
    current: RwLock<Arc<PodNet>>,
}

impl PodNetCache {
    /// A cache holding `first`.
    pub fn new(first: PodNet) -> Self {
        Self {
            id: first.network.id.clone(),
            current: RwLock::new(Arc::new(first)),
        }
    }

    /// The pod network's id (never changes).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current view.
    pub fn get(&self) -> Arc<PodNet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads Neutron again and keeps the new view when a VIF would differ;
    /// returns those changes (idempotent).
    pub async fn refresh(&self, n: &Neutron) -> Result<Vec<String>, kuryr_openstack::Error> {
        let new = PodNet::read(n, &self.id).await?;
        let diff = changes(&self.get(), &new);
        if !diff.is_empty() {
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        }
        Ok(diff)
    }
}

/// Refreshes `ctx`'s pod network every `Options::net_refresh` (zero: never).
pub async fn run(ctx: Arc<crate::Context>) {
    let every = ctx.options.net_refresh;
    if every.is_zero() {
        return;
    }
    loop {
        tokio::time::sleep(every).await;
        match ctx.pod_net.refresh(&ctx.os.neutron()).await {
            Ok(diff) if diff.is_empty() => {}
            Ok(diff) => tracing::info!(
                network = %ctx.pod_net.id(),
                changes = %diff.join("; "),
                "pod network changed in Neutron: new VIFs carry it"
            ),
            Err(e) => tracing::warn!(
                network = %ctx.pod_net.id(),
                error = %e,
                "reading the pod network again failed; keeping the last view"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(mtu: Option<u32>, subnets: Vec<Subnet>) -> PodNet {
        PodNet {
            network: Network {
                id: "n".into(),
                mtu,
                ..Default::default()
            },
            subnets,
        }
    }

    fn subnet(id: &str, gw: Option<&str>, dns: &[&str]) -> Subnet {
        Subnet {
            id: id.into(),
            cidr: "10.0.0.0/24".into(),
            gateway_ip: gw.map(str::to_owned),
            dns_nameservers: dns.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_what_a_vif_carries_counts_as_a_change() {
        let a = net(Some(1450), vec![subnet("s1", Some("10.0.0.1"), &[])]);
        let mut same = a.clone();
        same.network
            .extra
            .insert("revision_number".into(), 7.into());
        same.subnets[0].name = "renamed".into();
        assert!(changes(&a, &same).is_empty());

        let b = net(
            Some(1400),
            vec![
                subnet("s1", Some("10.0.0.254"), &["10.0.0.2"]),
                subnet("s2", None, &[]),
            ],
        );
        let c = changes(&a, &b);
        assert_eq!(
            c,
            vec![
                "network MTU 1450 -> 1400".to_string(),
                "subnet s1 gateway 10.0.0.1 -> 10.0.0.254".into(),
                "subnet s1 DNS servers [] -> [\"10.0.0.2\"]".into(),
                "subnet s2 (10.0.0.0/24) added".into(),
            ]
        );
        assert_eq!(
            changes(&b, &net(None, vec![])),
            vec![
                "network MTU 1400 -> unset".to_string(),
                "subnet s1 (10.0.0.0/24) removed".into(),
                "subnet s2 (10.0.0.0/24) removed".into(),
            ]
        );
    }
}
