//! Start-up reconciliation and garbage collection, the pure part: every
//! Neutron port of this cluster (found by its cluster tag) is classified
//! against what Kubernetes records (the KuryrPorts' VIFs, the live pods)
//! into: in use, adopted into a pool, left for its pod's handler, or leaked
//! (to delete, after removing it from its trunk).

use crate::pool::{FREE_PORT_NAME, PoolKey, PoolPort};
use kuryr_openstack::types::neutron::Port;
use std::collections::{BTreeMap, BTreeSet};

/// What Kubernetes and the trunks say about the cluster's ports.
#[derive(Debug, Default, Clone)]
pub struct Known {
    /// Port ids named by a KuryrPort's VIF.
    pub referenced: BTreeSet<String>,
    /// UIDs of the pods that exist.
    pub live_pods: BTreeSet<String>,
    /// UIDs of the nodes that exist (their node ports are in use).
    pub live_nodes: BTreeSet<String>,
    /// Subports of the trunks we use: port id → (trunk id, VLAN id).
    pub subports: BTreeMap<String, (String, u16)>,
}

/// How a port would be pooled under the running configuration.
#[derive(Debug, Clone)]
pub struct PoolRules {
    /// A pool driver is on (`neutron` or `nested`).
    pub enabled: bool,
    /// Nested pools (key host = trunk id) rather than node pools.
    pub nested: bool,
    /// The project pod ports are made in.
    pub project_id: String,
    /// The pod subnet.
    pub subnet_id: String,
    /// The pod security groups (sorted); empty: whatever Neutron gave.
    pub security_groups: Vec<String>,
}

impl PoolRules {
    /// The pool `port` belongs to, if it fits the running configuration.
    pub fn key_of(&self, port: &Port, known: &Known) -> Option<PoolKey> {
        if !self.enabled {
            return None;
        }
        let subnet = port.fixed_ips.iter().find_map(|f| f.subnet_id.clone())?;
        let host = if self.nested {
            known.subports.get(&port.id)?.0.clone()
        } else {
            port.binding_host_id.clone()
        };
        let key = PoolKey::new(
            host,
            port.project_id.clone(),
            port.security_groups.clone(),
            subnet,
        );
        let sgs_fit =
            self.security_groups.is_empty() || key.security_groups == self.security_groups;
        (!key.host.is_empty()
            && key.project_id == self.project_id
            && key.subnet_id == self.subnet_id
            && sgs_fit)
            .then_some(key)
    }
}

/// The verdict on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A KuryrPort uses it; `pool` is where it goes back when released.
    InUse {
        /// Its pool, when pooled.
        pool: Option<PoolKey>,
    },
    /// Free: into its pool (`needs_reset`: renamed or owned, clear it first).
    Adopt {
        /// The pool.
        key: PoolKey,
        /// The port.
        port: PoolPort,
        /// Status in Neutron was ACTIVE: a pod may still be plugged on it.
        active: bool,
    },
    /// Made for a live pod that has not recorded it yet: its handler will
    /// find it by tag.
    Leave,
    /// Nothing uses it: delete it (first off its trunk, if a subport).
    Leaked {
        /// The trunk it is a subport of.
        trunk: Option<String>,
    },
}

/// The uid in a `kuryr-pod:<uid>` tag of `port`.
pub fn pod_uid_of(port: &Port) -> Option<&str> {
    port.tags.iter().find_map(|t| t.strip_prefix("kuryr-pod:"))
}

/// Classifies one port of the cluster.
pub fn classify(port: &Port, known: &Known, rules: &PoolRules) -> Verdict {
    let key = rules.key_of(port, known);
    if known.referenced.contains(&port.id) {
        return Verdict::InUse { pool: key };
    }
    let trunk = known.subports.get(&port.id).map(|(t, _)| t.clone());
    if let Some(uid) = kuryr_crds::node::node_uid_of_tags(&port.tags) {
        // a node's own port: kept while its node exists, never pooled
        return if known.live_nodes.contains(uid) {
            Verdict::InUse { pool: None }
        } else {
            Verdict::Leaked { trunk }
        };
    }
    if let Some(uid) = pod_uid_of(port) {
        // a port made for one pod (no pool): its pod's handler owns it
        return if known.live_pods.contains(uid) {
            Verdict::Leave
        } else {
            Verdict::Leaked { trunk }
        };
    }
    match key {
        Some(key) => Verdict::Adopt {
            port: PoolPort {
                id: port.id.clone(),
                vlan_id: known.subports.get(&port.id).map(|(_, v)| *v),
                port: Some(std::sync::Arc::new(port.clone())),
            },
            key,
            active: port.status == "ACTIVE",
        },
        None => Verdict::Leaked { trunk },
    }
}

/// What becomes of one of the cluster's load balancers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbVerdict {
    /// Its Service exists and it is the one recorded (or none is yet).
    Keep,
    /// Its Service is gone (or it names none): delete it.
    Orphan,
    /// Another load balancer is recorded for its Service: delete it.
    Duplicate,
}

/// Classifies a load balancer of the cluster by its `kuryr-svc:<uid>` tag:
/// `live`: uids of the Services that exist; `recorded`: (service uid, load
/// balancer id) of every KuryrLoadBalancer status.
pub fn classify_lb(
    lb_id: &str,
    tags: &[String],
    live: &BTreeSet<String>,
    recorded: &BTreeMap<String, String>,
) -> LbVerdict {
    let Some(uid) = tags.iter().find_map(|t| t.strip_prefix("kuryr-svc:")) else {
        return LbVerdict::Orphan;
    };
    if !live.contains(uid) {
        return LbVerdict::Orphan;
    }
    match recorded.get(uid) {
        Some(id) if id != lb_id => LbVerdict::Duplicate,
        _ => LbVerdict::Keep,
    }
}

/// Whether a free port still carries a pod's name or owner (`port_debug`)
/// and must be reset before it is pooled.
pub fn needs_reset(port: &Port) -> bool {
    port.name != FREE_PORT_NAME || !port.device_id.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuryr_openstack::types::neutron::FixedIp;

    fn port(id: &str, tags: &[&str]) -> Port {
        Port {
            id: id.into(),
            name: FREE_PORT_NAME.into(),
            project_id: "proj".into(),
            binding_host_id: "node-1".into(),
            security_groups: vec!["sg".into()],
            fixed_ips: vec![FixedIp {
                subnet_id: Some("sub".into()),
                ip_address: Some("10.0.0.5".into()),
            }],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            status: "DOWN".into(),
            ..serde_json::from_value(serde_json::json!({"id": id, "network_id": "net"})).unwrap()
        }
    }

    fn rules(enabled: bool, nested: bool) -> PoolRules {
        PoolRules {
            enabled,
            nested,
            project_id: "proj".into(),
            subnet_id: "sub".into(),
            security_groups: vec!["sg".into()],
        }
    }

    #[test]
    fn referenced_ports_are_in_use_with_their_pool() {
        let known = Known {
            referenced: ["p1".to_string()].into(),
            ..Default::default()
        };
        assert_eq!(
            classify(&port("p1", &[]), &known, &rules(true, false)),
            Verdict::InUse {
                pool: Some(PoolKey::new("node-1", "proj", vec!["sg".into()], "sub"))
            }
        );
        assert_eq!(
            classify(&port("p1", &["kuryr-pod:u1"]), &known, &rules(false, false)),
            Verdict::InUse { pool: None }
        );
    }

    #[test]
    fn pod_ports_are_left_for_live_pods_and_leaked_for_gone_ones() {
        let known = Known {
            live_pods: ["u1".to_string()].into(),
            subports: [("p2".to_string(), ("trunk".to_string(), 7))].into(),
            ..Default::default()
        };
        let r = rules(false, false);
        assert_eq!(
            classify(&port("p1", &["kuryr-pod:u1"]), &known, &r),
            Verdict::Leave
        );
        assert_eq!(
            classify(&port("p2", &["kuryr-pod:u2"]), &known, &r),
            Verdict::Leaked {
                trunk: Some("trunk".into())
            }
        );
    }

    #[test]
    fn free_ports_are_adopted_when_they_fit_the_configuration() {
        let known = Known::default();
        match classify(&port("p1", &[]), &known, &rules(true, false)) {
            Verdict::Adopt { key, port, active } => {
                assert_eq!(key.host, "node-1");
                assert_eq!(port.id, "p1");
                assert!(!active);
            }
            v => panic!("{v:?}"),
        }
        // no pool driver any more, another subnet, other groups, no host
        assert!(matches!(
            classify(&port("p1", &[]), &known, &rules(false, false)),
            Verdict::Leaked { trunk: None }
        ));
        let mut other = port("p1", &[]);
        other.fixed_ips[0].subnet_id = Some("other".into());
        assert!(matches!(
            classify(&other, &known, &rules(true, false)),
            Verdict::Leaked { .. }
        ));
        let mut other = port("p1", &[]);
        other.security_groups = vec!["sg2".into()];
        assert!(matches!(
            classify(&other, &known, &rules(true, false)),
            Verdict::Leaked { .. }
        ));
        let mut other = port("p1", &[]);
        other.binding_host_id.clear();
        assert!(matches!(
            classify(&other, &known, &rules(true, false)),
            Verdict::Leaked { .. }
        ));
    }

    #[test]
    fn nested_pools_hold_only_subports() {
        let known = Known {
            subports: [("p1".to_string(), ("trunk-a".to_string(), 12))].into(),
            ..Default::default()
        };
        match classify(&port("p1", &[]), &known, &rules(true, true)) {
            Verdict::Adopt { key, port, .. } => {
                assert_eq!(key.host, "trunk-a");
                assert_eq!(port.vlan_id, Some(12));
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(
            classify(&port("p2", &[]), &known, &rules(true, true)),
            Verdict::Leaked { trunk: None },
            "not on any trunk"
        );
    }

    #[test]
    fn node_ports_live_with_their_node_and_are_never_pooled() {
        let known = Known {
            live_nodes: ["n1".to_string()].into(),
            ..Default::default()
        };
        // even when it would fit a pool
        assert_eq!(
            classify(&port("p1", &["kuryr-node:n1"]), &known, &rules(true, false)),
            Verdict::InUse { pool: None }
        );
        assert_eq!(
            classify(&port("p2", &["kuryr-node:n2"]), &known, &rules(true, false)),
            Verdict::Leaked { trunk: None }
        );
    }

    #[test]
    fn load_balancers_live_with_their_service_and_only_one_each() {
        let live: BTreeSet<String> = ["s1".to_string(), "s2".to_string()].into();
        let recorded: BTreeMap<String, String> = [("s1".to_string(), "lb1".to_string())].into();
        let t = |u: &str| vec!["kuryr-cluster:c".to_string(), format!("kuryr-svc:{u}")];
        assert_eq!(
            classify_lb("lb1", &t("s1"), &live, &recorded),
            LbVerdict::Keep
        );
        assert_eq!(
            classify_lb("lb9", &t("s1"), &live, &recorded),
            LbVerdict::Duplicate
        );
        assert_eq!(
            classify_lb("lb2", &t("s2"), &live, &recorded),
            LbVerdict::Keep,
            "not recorded yet"
        );
        assert_eq!(
            classify_lb("lb3", &t("gone"), &live, &recorded),
            LbVerdict::Orphan
        );
        assert_eq!(
            classify_lb("lb4", &["kuryr-cluster:c".to_string()], &live, &recorded),
            LbVerdict::Orphan
        );
    }

    #[test]
    fn renamed_or_owned_free_ports_are_reset() {
        let mut p = port("p1", &[]);
        assert!(!needs_reset(&p));
        p.device_id = "u1".into();
        assert!(needs_reset(&p));
    }
}
