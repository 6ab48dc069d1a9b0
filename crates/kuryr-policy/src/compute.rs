//! The entry point: a NetworkPolicy and a world snapshot in, rules out.

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};

use crate::expand::Expander;
use crate::peers::Namespaces;
use crate::selector::{pod_selector, policy_namespace};
use crate::{
    AffectedPod, Direction, KnpRule, PeerIds, PeerSpec, Pod, PolicyError, Rule, SgRule, World,
};

/// One wanted rule with kuryr-kubernetes' bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEntry {
    /// The rule.
    pub rule: Rule,
    /// Namespace the remote comes from (pod and namespace peers); when
    /// several peers produced the same rule, the smallest name.
    pub namespace: Option<String>,
    /// The pods the rule was made for, sorted: the peer pod of a per-pod
    /// rule, and the pods whose named port gave the port number.
    pub affected_pods: Vec<AffectedPod>,
}

impl RuleEntry {
    /// The KuryrNetworkPolicy form; `None` for a rule naming a peer set
    /// that has no group in `ids` (see [`Rule::to_sg_rule`]).
    pub fn to_knp(&self, ids: &PeerIds) -> Option<KnpRule> {
        Some(KnpRule {
            sg_rule: self.rule.to_sg_rule(ids)?,
            namespace: self.namespace.clone(),
            affected_pods: (!self.affected_pods.is_empty()).then(|| self.affected_pods.clone()),
        })
    }
}

/// The translation of one policy.
///
/// Each list is sorted, has no two rules allowing the same traffic, and no
/// rule whose traffic another rule of the list already allows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyRules {
    /// Ingress rules.
    pub ingress: Vec<RuleEntry>,
    /// Egress rules.
    pub egress: Vec<RuleEntry>,
    /// Parts of the policy that could not be represented and were skipped.
    pub warnings: Vec<String>,
    /// The peer sets the rules name (only with
    /// [`crate::Settings::peer_groups`]), sorted by set: the caller makes
    /// their groups and gives them to the sets' members.
    pub peer_sets: Vec<PeerSpec>,
}

impl PolicyRules {
    /// `spec.ingressSgRules` of the KuryrNetworkPolicy (a rule naming a peer
    /// set without a group in `ids` is left out).
    pub fn ingress_knp(&self, ids: &PeerIds) -> Vec<KnpRule> {
        self.ingress.iter().filter_map(|e| e.to_knp(ids)).collect()
    }

    /// `spec.egressSgRules` of the KuryrNetworkPolicy, like
    /// [`PolicyRules::ingress_knp`].
    pub fn egress_knp(&self, ids: &PeerIds) -> Vec<KnpRule> {
        self.egress.iter().filter_map(|e| e.to_knp(ids)).collect()
    }

    /// Every wanted rule (ingress, then egress), the input of
    /// [`crate::diff()`], like [`PolicyRules::ingress_knp`].
    pub fn sg_rules(&self, ids: &PeerIds) -> Vec<SgRule> {
        self.ingress
            .iter()
            .chain(&self.egress)
            .filter_map(|e| e.rule.to_sg_rule(ids))
            .collect()
    }

    /// Whether every peer set named has a group in `ids`.
    pub fn resolved(&self, ids: &PeerIds) -> bool {
        self.ingress
            .iter()
            .chain(&self.egress)
            .filter_map(|e| e.rule.peers.as_ref())
            .all(|set| ids.contains_key(set))
    }
}

/// The directions a policy isolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyTypes {
    /// Ingress is restricted to the policy's ingress rules.
    pub ingress: bool,
    /// Egress is restricted to the policy's egress rules.
    pub egress: bool,
}

/// The effective `policyTypes` of `spec`.
///
/// When absent or empty, as the API server defaults it: Ingress, plus Egress
/// when `egress` has at least one rule.
pub fn policy_types(spec: &NetworkPolicySpec) -> Result<PolicyTypes, PolicyError> {
    match spec.policy_types.as_deref() {
        None | Some([]) => Ok(PolicyTypes {
            ingress: true,
            egress: spec.egress.as_ref().is_some_and(|e| !e.is_empty()),
        }),
        Some(types) => {
            let mut out = PolicyTypes {
                ingress: false,
                egress: false,
            };
            for t in types {
                match t.as_str() {
                    "Ingress" => out.ingress = true,
                    "Egress" => out.egress = true,
                    other => return Err(PolicyError::InvalidPolicyType(other.to_owned())),
                }
            }
            Ok(out)
        }
    }
}

/// The pods of `world` that `policy` applies to.
pub fn selected_pods<'w>(
    policy: &NetworkPolicy,
    world: &'w World,
) -> Result<Vec<&'w Pod>, PolicyError> {
    let namespace = policy_namespace(policy)?;
    let selector = pod_selector(policy)?;
    Ok(world
        .pods
        .iter()
        .filter(|p| p.namespace == namespace && selector.matches(&p.labels))
        .collect())
}

/// Translates `policy` into the rules of its security group.
///
/// A direction the policy isolates gets the union of its rules (plus, for
/// ingress, [`crate::Settings::always_allowed_ingress`]); the other direction
/// gets no rule: whether it is open for a pod depends on all the policies
/// selecting it (another may isolate it), which the caller decides.
pub fn compute(policy: &NetworkPolicy, world: &World) -> Result<PolicyRules, PolicyError> {
    let namespace = policy_namespace(policy)?;
    let default_spec = NetworkPolicySpec::default();
    let spec = policy.spec.as_ref().unwrap_or(&default_spec);
    let types = policy_types(spec)?;
    let selected = selected_pods(policy, world)?;
    let namespaces = Namespaces::new(world);
    let mut warnings = Vec::new();

    let mut ingress = Expander::new(Direction::Ingress, world, namespace, &selected, &namespaces);
    if types.ingress {
        for (i, rule) in spec.ingress.iter().flatten().enumerate() {
            ingress.expand_rule(i, rule.from.as_ref(), rule.ports.as_ref(), &mut warnings)?;
        }
        for cidr in &world.settings.always_allowed_ingress {
            ingress.allow_cidr(*cidr);
        }
    }

    let mut egress = Expander::new(Direction::Egress, world, namespace, &selected, &namespaces);
    if types.egress {
        for (i, rule) in spec.egress.iter().flatten().enumerate() {
            egress.expand_rule(i, rule.to.as_ref(), rule.ports.as_ref(), &mut warnings)?;
        }
    }

    let (ingress, mut sets) = ingress.finish();
    let (egress, egress_sets) = egress.finish();
    sets.extend(egress_sets);
    Ok(PolicyRules {
        ingress,
        egress,
        warnings,
        peer_sets: sets.into_values().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{pod, policy, show, world};
    use crate::{Cidr, EtherType, diff};
    use serde_json::json;

    const ALL_IN: [&str; 2] = ["ingress IPv4 any anywhere", "ingress IPv6 any anywhere"];
    const ALL_OUT: [&str; 2] = ["egress IPv4 any anywhere", "egress IPv6 any anywhere"];

    fn types(spec: serde_json::Value) -> Result<PolicyTypes, PolicyError> {
        policy_types(policy("ns", spec).spec.as_ref().unwrap())
    }

    #[test]
    fn policy_types_defaulting() {
        let t = |ingress, egress| Ok(PolicyTypes { ingress, egress });
        assert_eq!(types(json!({})), t(true, false));
        assert_eq!(types(json!({"egress": [{}]})), t(true, true));
        // Like the API server: an empty egress list does not imply Egress.
        assert_eq!(types(json!({"egress": []})), t(true, false));
        assert_eq!(
            types(json!({"policyTypes": [], "egress": [{}]})),
            t(true, true)
        );
        assert_eq!(types(json!({"policyTypes": ["Egress"]})), t(false, true));
        assert_eq!(
            types(json!({"policyTypes": ["Ingress", "Egress"]})),
            t(true, true)
        );
        assert_eq!(
            types(json!({"policyTypes": ["ingress"]})),
            Err(PolicyError::InvalidPolicyType("ingress".into()))
        );
    }

    #[test]
    fn deny_all_ingress_leaves_egress_to_the_caller() {
        let w = world(vec![pod("ns", "a", &[], &["10.0.0.1"])], vec![]);
        let out = compute(&policy("ns", json!({"podSelector": {}})), &w).unwrap();
        assert!(out.ingress.is_empty());
        // not isolated: no rule here (another policy may isolate it)
        assert!(out.egress.is_empty());
        // Explicit `ingress: []` is the same.
        let out2 = compute(&policy("ns", json!({"podSelector": {}, "ingress": []})), &w).unwrap();
        assert_eq!(out, out2);
    }

    #[test]
    fn empty_ingress_rule_allows_everything() {
        let out = compute(&policy("ns", json!({"ingress": [{}]})), &World::default()).unwrap();
        assert_eq!(show(&out.ingress), ALL_IN);
        assert!(out.egress.is_empty());
        let out = compute(
            &policy("ns", json!({"policyTypes": ["Egress"], "egress": [{}]})),
            &World::default(),
        )
        .unwrap();
        assert_eq!(show(&out.egress), ALL_OUT);
        let out = compute(
            &policy("ns", json!({"ingress": [{"from": [], "ports": []}]})),
            &World::default(),
        )
        .unwrap();
        assert_eq!(show(&out.ingress), ALL_IN);
    }

    #[test]
    fn egress_only_policy_has_no_ingress_rules_and_denies_egress() {
        let out = compute(
            &policy("ns", json!({"policyTypes": ["Egress"], "ingress": [{}]})),
            &World::default(),
        )
        .unwrap();
        assert!(out.ingress.is_empty());
        assert!(out.egress.is_empty());
    }

    #[test]
    fn settings_choose_any_families_and_always_allowed_sources() {
        let mut w = World::default();
        w.settings.ipv6 = false;
        w.settings.always_allowed_ingress = vec![
            "192.168.0.0/24".parse().unwrap(),
            "fd00:1::/64".parse().unwrap(),
        ];
        let out = compute(&policy("ns", json!({})), &w).unwrap();
        assert_eq!(
            show(&out.ingress),
            [
                "ingress IPv4 any 192.168.0.0/24",
                "ingress IPv6 any fd00:1::/64"
            ]
        );
        assert!(out.egress.is_empty());
        // Not isolated: no rule, the always-allowed sources neither.
        let out = compute(&policy("ns", json!({"policyTypes": ["Egress"]})), &w).unwrap();
        assert!(out.ingress.is_empty());
    }

    #[test]
    fn duplicates_and_covered_rules_are_dropped() {
        let w = world(vec![pod("ns", "a", &[("app", "a")], &["10.0.0.5"])], vec![]);
        let from_a = json!([{"podSelector": {"matchLabels": {"app": "a"}}}]);
        let spec = json!({"ingress": [
            {"from": from_a, "ports": [{"port": 80}]},
            {"from": from_a, "ports": [{"port": 80}, {"port": 443}]},
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"port": 443}]},
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"port": 440, "endPort": 450}]},
        ]});
        let out = compute(&policy("ns", spec), &w).unwrap();
        assert_eq!(
            show(&out.ingress),
            [
                "ingress IPv4 tcp 80-80 10.0.0.5/32",
                "ingress IPv4 tcp 440-450 10.0.0.0/24"
            ]
        );
        // A rule without ports covers the per-port rules of the same peer.
        let spec =
            json!({"ingress": [{"from": from_a, "ports": [{"port": 80}]}, {"from": from_a}]});
        let out = compute(&policy("ns", spec), &w).unwrap();
        assert_eq!(show(&out.ingress), ["ingress IPv4 any 10.0.0.5/32"]);
        let keys: std::collections::BTreeSet<_> = out
            .sg_rules(&PeerIds::new())
            .iter()
            .map(crate::rule_key)
            .collect();
        assert_eq!(keys.len(), out.ingress.len() + out.egress.len());
    }

    #[test]
    fn knp_form_and_stable_diff() {
        let w = world(vec![pod("ns", "a", &[("app", "a")], &["10.0.0.5"])], vec![]);
        let spec = json!({"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": 80}]}]});
        let out = compute(&policy("ns", spec), &w).unwrap();
        assert_eq!(
            serde_json::to_value(out.ingress_knp(&PeerIds::new())).unwrap(),
            json!([{
                "sgRule": {
                    "description": "Kuryr-Kubernetes NetPolicy SG rule",
                    "direction": "ingress",
                    "ethertype": "IPv4",
                    "port_range_min": 80,
                    "port_range_max": 80,
                    "protocol": "tcp",
                    "remote_ip_prefix": "10.0.0.5/32"
                },
                "namespace": "ns",
                "affectedPods": [{"podIP": "10.0.0.5", "podNamespace": "ns"}]
            }])
        );
        assert!(
            out.egress_knp(&PeerIds::new()).is_empty(),
            "egress not isolated"
        );
        let open = compute(
            &policy("ns", json!({"policyTypes": ["Egress"], "egress": [{}]})),
            &w,
        )
        .unwrap();
        assert_eq!(open.egress_knp(&PeerIds::new()).len(), 2);
        assert!(
            open.egress_knp(&PeerIds::new())
                .iter()
                .all(|r| r.namespace.is_none() && r.affected_pods.is_none())
        );
        // Rules as Neutron returns them (with ids) diff to nothing.
        let existing: Vec<SgRule> = out
            .sg_rules(&PeerIds::new())
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                r.id = Some(i.to_string());
                r
            })
            .collect();
        assert!(diff(&existing, &out.sg_rules(&PeerIds::new())).is_empty());
        let again = compute(&policy("ns", json!({"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": 80}]}]})), &w).unwrap();
        assert_eq!(again, out, "deterministic");
    }

    #[test]
    fn selected_pods_and_errors() {
        let w = world(
            vec![
                pod("ns", "a", &[("app", "a")], &[]),
                pod("ns", "b", &[], &[]),
                pod("other", "c", &[("app", "a")], &[]),
            ],
            vec![],
        );
        let p = policy("ns", json!({"podSelector": {"matchLabels": {"app": "a"}}}));
        let names: Vec<&str> = selected_pods(&p, &w)
            .unwrap()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["a"]);
        let mut no_ns = p.clone();
        no_ns.metadata.namespace = None;
        assert_eq!(compute(&no_ns, &w), Err(PolicyError::MissingNamespace));
        // Invalid selectors fail even when nothing could match.
        let bad = json!({"ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}}]}]});
        assert!(matches!(
            compute(&policy("ns", bad), &World::default()),
            Err(PolicyError::InvalidSelector(_))
        ));
        let bad = json!({"podSelector": {"matchExpressions": [{"key": "k", "operator": "Has"}]}});
        assert!(matches!(
            compute(&policy("ns", bad), &w),
            Err(PolicyError::InvalidSelector(_))
        ));
        let bad = json!({"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]});
        assert!(matches!(
            compute(&policy("ns", bad), &w),
            Err(PolicyError::InvalidPort(_))
        ));
        let v6 = Cidr::host("fd00::1".parse().unwrap());
        assert_eq!(EtherType::of(&v6), EtherType::IPv6);
    }

    fn grouped(pods: Vec<Pod>, namespaces: Vec<crate::Namespace>) -> World {
        let mut w = world(pods, namespaces);
        w.settings.peer_groups = true;
        w.settings.ipv6 = false;
        w
    }

    #[test]
    fn peer_groups_keep_rule_counts_flat_as_pods_grow() {
        let spec = json!({"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                        "ports": [{"port": 80}, {"port": 443}]}]});
        let clients = |n: usize| -> Vec<Pod> {
            (0..n)
                .map(|i| {
                    pod(
                        "ns",
                        &format!("c{i}"),
                        &[("app", "client")],
                        &[&format!("10.0.{}.{}", i / 200, i % 200 + 1)],
                    )
                })
                .collect()
        };
        let few = compute(&policy("ns", spec.clone()), &grouped(clients(1), vec![])).unwrap();
        let many = compute(&policy("ns", spec.clone()), &grouped(clients(100), vec![])).unwrap();
        assert_eq!(
            few, many,
            "the rules do not depend on how many pods the peer has"
        );
        assert_eq!(
            show(&many.ingress),
            [
                "ingress IPv4 tcp 80-80 peers[namespace ns; pods app=client]",
                "ingress IPv4 tcp 443-443 peers[namespace ns; pods app=client]"
            ]
        );
        // also before any client exists: the rule is there for the group
        let none = compute(&policy("ns", spec.clone()), &grouped(vec![], vec![])).unwrap();
        assert_eq!(none.ingress.len(), 2);
        // per pod without the setting: one rule per pod and port
        let mut per_pod = grouped(clients(100), vec![]);
        per_pod.settings.peer_groups = false;
        assert_eq!(
            compute(&policy("ns", spec), &per_pod)
                .unwrap()
                .ingress
                .len(),
            200
        );
        // the set, for the caller to make and populate
        assert_eq!(many.peer_sets.len(), 1);
        let set = many.peer_sets[0].set().unwrap();
        assert_eq!(many.peer_sets[0].namespace.as_deref(), Some("ns"));
        // written with the group's ID once it has one, left out before
        let ids = PeerIds::from([(set, "group-1".to_owned())]);
        assert!(!many.resolved(&PeerIds::new()) && many.resolved(&ids));
        assert!(many.sg_rules(&PeerIds::new()).is_empty());
        let rules = many.sg_rules(&ids);
        assert_eq!(rules.len(), 2);
        assert!(rules.iter().all(
            |r| r.remote_group_id.as_deref() == Some("group-1") && r.remote_ip_prefix.is_none()
        ));
        let knp = many.ingress_knp(&ids);
        assert_eq!(knp[0].namespace.as_deref(), Some("ns"));
        assert_eq!(knp[0].affected_pods, None);
    }

    #[test]
    fn peer_groups_with_namespaces_subnets_and_projects() {
        let mut tenant = crate::testutil::namespace("t", &[("team", "a")], &[]);
        tenant.own_project = true;
        let w = grouped(
            vec![
                pod("a", "a1", &[], &["10.1.0.1"]),
                pod("n", "n1", &[], &["10.3.0.1"]),
                pod("t", "t1", &[], &["10.2.0.1"]),
            ],
            vec![
                crate::testutil::namespace("a", &[("team", "a")], &[]),
                crate::testutil::namespace("n", &[("team", "a")], &["10.3.0.0/24"]),
                tenant,
            ],
        );
        let out = compute(
            &policy("ns", json!({"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]})),
            &w,
        )
        .unwrap();
        // namespace n has its own subnet: its prefix; namespace t is in a
        // project of its own: its pod's address; namespace a: the set
        assert_eq!(
            show(&out.ingress),
            [
                "ingress IPv4 any peers[namespaces team=a; pods (all)]",
                "ingress IPv4 any 10.2.0.1/32",
                "ingress IPv4 any 10.3.0.0/24"
            ]
        );
        assert_eq!(out.ingress[0].namespace, None);
        assert_eq!(out.peer_sets.len(), 1);
        let m = out.peer_sets[0].matcher().unwrap();
        assert!(m.contains(
            "a",
            &[("team".to_owned(), "a".to_owned())].into(),
            &Default::default()
        ));
        // an anywhere rule covers the set's rule, and the set is not listed
        let out = compute(
            &policy("ns", json!({"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}, {}]})),
            &w,
        )
        .unwrap();
        assert_eq!(show(&out.ingress), ["ingress IPv4 any anywhere"]);
        assert!(out.peer_sets.is_empty());
    }

    #[test]
    fn peer_groups_leave_egress_named_ports_per_pod() {
        let server = crate::testutil::with_port(
            pod("ns", "s", &[("app", "s")], &["10.0.0.5"]),
            "http",
            crate::Protocol::Tcp,
            8080,
        );
        let w = grouped(vec![server], vec![]);
        let out = compute(
            &policy("ns", json!({"policyTypes": ["Egress"], "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "s"}}}],
                                                                           "ports": [{"port": "http"}, {"port": 53, "protocol": "UDP"}]}]})),
            &w,
        )
        .unwrap();
        assert_eq!(
            show(&out.egress),
            [
                "egress IPv4 tcp 8080-8080 10.0.0.5/32",
                "egress IPv4 udp 53-53 peers[namespace ns; pods app=s]"
            ]
        );
    }
}
