//! Expansion of one direction's policy rules into security-group rules.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicyPort};

use crate::cidr::exclude;
use crate::peers::{Namespaces, Peer, resolve_peers};
use crate::ports::{PortSpec, named_port_numbers, parse_ports};
use crate::{
    AffectedPod, Cidr, Direction, EtherType, PeerSet, PeerSpec, Pod, PolicyError, PortRange,
    Protocol, Rule, RuleEntry, World,
};

/// Protocol and port range of a rule being built.
type L4 = (Option<Protocol>, Option<PortRange>);

#[derive(Default)]
struct Meta {
    namespaces: BTreeSet<String>,
    pods: BTreeSet<(IpAddr, String)>,
}

/// Accumulates the rules of one direction.
pub(crate) struct Expander<'a, 'w> {
    direction: Direction,
    world: &'w World,
    policy_namespace: &'a str,
    selected: &'a [&'w Pod],
    namespaces: &'a Namespaces<'w>,
    rules: BTreeMap<Rule, Meta>,
    peer_specs: BTreeMap<PeerSet, PeerSpec>,
}

/// The "anywhere" families enabled by the settings.
pub(crate) fn families(world: &World) -> Vec<EtherType> {
    let s = &world.settings;
    [(s.ipv4, EtherType::IPv4), (s.ipv6, EtherType::IPv6)]
        .into_iter()
        .filter_map(|(on, e)| on.then_some(e))
        .collect()
}

fn make_rule(direction: Direction, ethertype: EtherType, l4: L4, remote: Option<Cidr>) -> Rule {
    Rule {
        direction,
        ethertype,
        protocol: l4.0,
        ports: l4.1.filter(|_| l4.0.is_some()),
        remote: remote.filter(|c| c.prefix() != 0),
        peers: None,
    }
}

fn set_rule(direction: Direction, ethertype: EtherType, l4: L4, set: &PeerSet) -> Rule {
    Rule {
        peers: Some(set.clone()),
        ..make_rule(direction, ethertype, l4, None)
    }
}

fn family_of(ip: &IpAddr) -> EtherType {
    if ip.is_ipv6() {
        EtherType::IPv6
    } else {
        EtherType::IPv4
    }
}

impl<'a, 'w> Expander<'a, 'w> {
    /// An empty accumulator for `direction` of a policy in `policy_namespace`
    /// selecting `selected`.
    pub fn new(
        direction: Direction,
        world: &'w World,
        policy_namespace: &'a str,
        selected: &'a [&'w Pod],
        namespaces: &'a Namespaces<'w>,
    ) -> Self {
        Self {
            direction,
            world,
            policy_namespace,
            selected,
            namespaces,
            rules: BTreeMap::new(),
            peer_specs: BTreeMap::new(),
        }
    }

    fn add(
        &mut self,
        rule: Rule,
        namespace: Option<&str>,
        pods: impl IntoIterator<Item = (IpAddr, String)>,
    ) {
        let meta = self.rules.entry(rule).or_default();
        meta.namespaces.extend(namespace.map(str::to_owned));
        meta.pods.extend(pods);
    }

    /// Allows everything from/to `cidr` (no namespace, no pods).
    pub fn allow_cidr(&mut self, cidr: Cidr) {
        let rule = make_rule(
            self.direction,
            EtherType::of(&cidr),
            (None, None),
            Some(cidr),
        );
        self.add(rule, None, []);
    }

    /// Expands the rule `spec.<direction>[index]`; unresolvable named ports
    /// are skipped and reported in `warnings`.
    pub fn expand_rule(
        &mut self,
        index: usize,
        peers: Option<&Vec<NetworkPolicyPeer>>,
        ports: Option<&Vec<NetworkPolicyPort>>,
        warnings: &mut Vec<String>,
    ) -> Result<(), PolicyError> {
        let ports = parse_ports(ports)?;
        let peers = resolve_peers(peers, self.policy_namespace, self.world, self.namespaces)?;
        for peer in &peers {
            for port in &ports {
                match port {
                    PortSpec::Any => self.emit(peer, (None, None), &[]),
                    PortSpec::Numeric(p, range) => self.emit(peer, (Some(*p), *range), &[]),
                    PortSpec::Named(p, name) => match self.direction {
                        Direction::Ingress => self.ingress_named(peer, *p, name),
                        Direction::Egress => {
                            if let Some(w) = self.egress_named(peer, *p, name) {
                                warnings.push(format!("spec.egress[{index}]: {w}"));
                            }
                        }
                    },
                }
            }
        }
        Ok(())
    }

    /// Egress to `backends` with `l4` also goes through the ClusterIPs of
    /// the Services they back, on the Service ports leading to an allowed
    /// target (the client's rules see the ClusterIP before the load balancer
    /// translates it). A Service is reachable this way when any of its
    /// backends is allowed.
    fn through_services(&mut self, backends: &[&'w Pod], l4: L4) {
        let world = self.world;
        for svc in &world.services {
            let mut any = false;
            let mut ports = BTreeSet::new();
            for b in backends.iter().filter(|b| svc.backs(b)) {
                if l4.0.is_none() {
                    any = true;
                    break;
                }
                ports.extend(svc.ports_leading_to(b, l4.0, l4.1));
            }
            for ip in &svc.cluster_ips {
                let eth = family_of(ip);
                let vip = Some(Cidr::host(*ip));
                if any {
                    let rule = make_rule(Direction::Egress, eth, (None, None), vip);
                    self.add(rule, Some(&svc.namespace), []);
                }
                for (protocol, port) in &ports {
                    let l4 = (Some(*protocol), Some(PortRange::single(*port)));
                    let rule = make_rule(Direction::Egress, eth, l4, vip);
                    self.add(rule, Some(&svc.namespace), []);
                }
            }
        }
    }

    /// Rules towards `peer` with `l4`; `suppliers` are the pods whose named
    /// port gave the port number (listed as affected pods).
    fn emit(&mut self, peer: &Peer<'w>, l4: L4, suppliers: &[&Pod]) {
        let direction = self.direction;
        if direction == Direction::Egress && !self.world.services.is_empty() {
            let world = self.world;
            let backends: Vec<&'w Pod> = match peer {
                Peer::Anywhere => world.pods.iter().collect(),
                Peer::Block(_, parts) => world
                    .pods
                    .iter()
                    .filter(|p| {
                        p.ips
                            .iter()
                            .any(|ip| parts.iter().any(|c| c.contains_addr(*ip)))
                    })
                    .collect(),
                Peer::Pods(groups, ..) => {
                    groups.iter().flat_map(|g| g.pods.iter().copied()).collect()
                }
            };
            self.through_services(&backends, l4);
        }
        let supplied = |eth: EtherType| -> Vec<(IpAddr, String)> {
            suppliers
                .iter()
                .flat_map(|p| p.ips.iter().map(move |ip| (*ip, p.namespace.clone())))
                .filter(|(ip, _)| family_of(ip) == eth)
                .collect()
        };
        match peer {
            Peer::Anywhere => {
                for eth in families(self.world) {
                    self.add(make_rule(direction, eth, l4, None), None, supplied(eth));
                }
            }
            Peer::Block(_, parts) => {
                // egress: addresses a load balancer translates are left out
                // (a ClusterIP inside the block is admitted above only when
                // a backend is)
                let translated = &self.world.settings.translated;
                let parts: Vec<Cidr> = if direction == Direction::Egress && !translated.is_empty() {
                    parts.iter().flat_map(|c| exclude(*c, translated)).collect()
                } else {
                    parts.clone()
                };
                for c in &parts {
                    let eth = EtherType::of(c);
                    self.add(make_rule(direction, eth, l4, Some(*c)), None, supplied(eth));
                }
            }
            Peer::Pods(groups, set, spec) => {
                let by_set = self.world.settings.peer_groups;
                // also when no namespace matches yet: the rule is there
                // before the namespace's pods are
                let mut set_needed = by_set && groups.is_empty();
                for g in groups {
                    if let Some(cidrs) = &g.shortcut {
                        for c in cidrs {
                            let eth = EtherType::of(c);
                            let rule = make_rule(direction, eth, l4, Some(*c));
                            self.add(rule, g.namespace.as_deref(), supplied(eth));
                        }
                        continue;
                    }
                    if by_set && !g.per_pod {
                        // written once below, however many pods it has
                        set_needed = true;
                        continue;
                    }
                    for pod in &g.pods {
                        for ip in &pod.ips {
                            let eth = family_of(ip);
                            let rule = make_rule(direction, eth, l4, Some(Cidr::host(*ip)));
                            let mut pods = supplied(eth);
                            pods.push((*ip, pod.namespace.clone()));
                            self.add(rule, Some(&pod.namespace), pods);
                        }
                    }
                }
                if set_needed {
                    for eth in families(self.world) {
                        let rule = set_rule(direction, eth, l4, set);
                        self.add(rule, spec.namespace.as_deref(), supplied(eth));
                    }
                    self.peer_specs.insert(set.clone(), spec.clone());
                }
            }
        }
    }

    /// Ingress: the name is looked up in the selected (destination) pods;
    /// one rule set per distinct number.
    fn ingress_named(&mut self, peer: &Peer<'w>, protocol: Protocol, name: &str) {
        let mut by_number: BTreeMap<u16, Vec<&Pod>> = BTreeMap::new();
        for pod in self.selected {
            for n in named_port_numbers(pod, protocol, name) {
                by_number.entry(n).or_default().push(pod);
            }
        }
        for (n, suppliers) in by_number {
            self.emit(
                peer,
                (Some(protocol), Some(PortRange::single(n))),
                &suppliers,
            );
        }
    }

    /// Egress: the name is looked up in each peer pod, giving one rule per
    /// pod IP and number. Returns a warning for an ipBlock peer.
    fn egress_named(&mut self, peer: &Peer<'w>, protocol: Protocol, name: &str) -> Option<String> {
        let world = self.world;
        let pods: Vec<&Pod> = match peer {
            Peer::Block(cidr, _) => {
                return Some(format!(
                    "named port {name:?} cannot be resolved for ipBlock {cidr}; skipped"
                ));
            }
            // Only pods can have named ports: "anywhere" means every pod.
            Peer::Anywhere => world.pods.iter().collect(),
            // Namespace/cluster subnet shortcuts are not usable here.
            Peer::Pods(groups, ..) => groups.iter().flat_map(|g| g.pods.iter().copied()).collect(),
        };
        for pod in pods {
            for n in named_port_numbers(pod, protocol, name) {
                self.through_services(&[pod], (Some(protocol), Some(PortRange::single(n))));
                for ip in &pod.ips {
                    let l4 = (Some(protocol), Some(PortRange::single(n)));
                    let rule = make_rule(self.direction, family_of(ip), l4, Some(Cidr::host(*ip)));
                    self.add(rule, Some(&pod.namespace), [(*ip, pod.namespace.clone())]);
                }
            }
        }
        None
    }

    /// The rules, de-duplicated, without rules covered by another one,
    /// sorted; and the peer sets they name.
    pub fn finish(self) -> (Vec<RuleEntry>, BTreeMap<PeerSet, PeerSpec>) {
        type Remote<'r> = (EtherType, Option<Cidr>, Option<&'r PeerSet>);
        let mut index: HashMap<Remote<'_>, Vec<&Rule>> = HashMap::new();
        for rule in self.rules.keys() {
            index
                .entry((rule.ethertype, rule.remote, rule.peers.as_ref()))
                .or_default()
                .push(rule);
        }
        // a rule can be covered by an anywhere rule, one with a containing
        // prefix, or one naming the same peer set
        let covered = |rule: &Rule| {
            let containing = rule
                .remote
                .iter()
                .flat_map(|c| (1..=c.prefix()).map(|p| (Some(c.truncate(p)), None)));
            let same_set = rule.peers.as_ref().map(|s| (None, Some(s)));
            std::iter::once((None, None))
                .chain(containing)
                .chain(same_set)
                .any(|(remote, peers)| {
                    index
                        .get(&(rule.ethertype, remote, peers))
                        .is_some_and(|v| v.iter().any(|o| *o != rule && o.covers(rule)))
                })
        };
        let entries: Vec<RuleEntry> = self
            .rules
            .iter()
            .filter(|(rule, _)| !covered(rule))
            .map(|(rule, meta)| RuleEntry {
                rule: rule.clone(),
                namespace: meta.namespaces.first().cloned(),
                affected_pods: meta
                    .pods
                    .iter()
                    .map(|(ip, ns)| AffectedPod {
                        pod_ip: ip.to_string(),
                        pod_namespace: ns.clone(),
                    })
                    .collect(),
            })
            .collect();
        let mut specs = self.peer_specs;
        specs.retain(|set, _| entries.iter().any(|e| e.rule.peers.as_ref() == Some(set)));
        (entries, specs)
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{ingress, namespace, pod, policy, show, with_port, world};
    use crate::{Cidr, Protocol, World, compute};
    use serde_json::json;

    #[test]
    fn protocols_and_port_ranges() {
        let spec = json!({"ingress": [{"ports": [
            {"port": 53, "protocol": "UDP"},
            {"protocol": "SCTP"},
            {"port": 30000, "endPort": 32767},
        ]}]});
        assert_eq!(
            ingress(&World::default(), spec),
            [
                "ingress IPv4 tcp 30000-32767 anywhere",
                "ingress IPv4 udp 53-53 anywhere",
                "ingress IPv4 sctp anywhere",
                "ingress IPv6 tcp 30000-32767 anywhere",
                "ingress IPv6 udp 53-53 anywhere",
                "ingress IPv6 sctp anywhere",
            ]
        );
    }

    #[test]
    fn ingress_named_ports_resolve_on_selected_pods() {
        let w = world(
            vec![
                with_port(
                    pod("ns", "s1", &[("app", "srv")], &["10.0.0.1"]),
                    "http",
                    Protocol::Tcp,
                    8080,
                ),
                with_port(
                    pod("ns", "s2", &[("app", "srv")], &["10.0.0.2"]),
                    "http",
                    Protocol::Tcp,
                    9090,
                ),
                with_port(
                    pod("ns", "s3", &[("app", "srv")], &["10.0.0.3"]),
                    "http",
                    Protocol::Udp,
                    7000,
                ),
                with_port(
                    pod("ns", "client", &[("app", "cli")], &["10.0.0.9"]),
                    "http",
                    Protocol::Tcp,
                    7070,
                ),
            ],
            vec![],
        );
        let spec = json!({"podSelector": {"matchLabels": {"app": "srv"}}, "ingress": [{
            "from": [{"ipBlock": {"cidr": "172.16.0.0/12"}}],
            "ports": [{"port": "http"}, {"port": "missing"}],
        }]});
        let out = compute(&policy("ns", spec), &w).unwrap();
        assert_eq!(
            show(&out.ingress),
            [
                "ingress IPv4 tcp 8080-8080 172.16.0.0/12",
                "ingress IPv4 tcp 9090-9090 172.16.0.0/12"
            ]
        );
        assert_eq!(out.ingress[0].affected_pods[0].pod_ip, "10.0.0.1");
        assert_eq!(out.ingress[1].affected_pods[0].pod_ip, "10.0.0.2");
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn egress_to_pods_also_admits_the_cluster_ips_leading_to_them() {
        let mut w = world(
            vec![
                pod("ns", "me", &[("app", "me")], &["10.0.0.1"]),
                with_port(
                    pod("db", "db1", &[("app", "db")], &["10.5.0.1"]),
                    "sql",
                    Protocol::Tcp,
                    5432,
                ),
                pod("web", "web1", &[("app", "web")], &["10.6.0.1"]),
            ],
            vec![],
        );
        let svc = |ns: &str, name: &str, app: &str, vip: &str, ports: serde_json::Value| {
            crate::Service::from_k8s(
                &serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"selector": {"app": app}, "clusterIP": vip, "ports": ports}
                }))
                .unwrap(),
            )
            .unwrap()
        };
        w.services = vec![
            svc(
                "db",
                "db",
                "db",
                "10.96.0.5",
                json!([{"port": 15432, "targetPort": "sql"}, {"port": 9000}]),
            ),
            svc(
                "web",
                "web",
                "web",
                "10.96.0.6",
                json!([{"port": 80, "targetPort": 8080}]),
            ),
            // same labels, other namespace: not a backend of db's pods
            svc("ns", "fake-db", "db", "10.96.0.7", json!([{"port": 5432}])),
        ];
        let spec = json!({"podSelector": {"matchLabels": {"app": "me"}}, "policyTypes": ["Egress"], "egress": [
            {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}],
             "ports": [{"port": 5432}]},
            {"to": [{"ipBlock": {"cidr": "10.6.0.0/24"}}]},
        ]});
        let out = compute(&policy("ns", spec), &w).unwrap();
        assert_eq!(
            show(&out.egress),
            [
                "egress IPv4 any 10.6.0.0/24",
                "egress IPv4 any 10.96.0.6/32",
                "egress IPv4 tcp 5432-5432 10.5.0.1/32",
                "egress IPv4 tcp 15432-15432 10.96.0.5/32",
            ]
        );
        let vip = out
            .egress
            .iter()
            .find(|e| e.rule.to_string().ends_with("10.96.0.5/32"))
            .unwrap();
        assert_eq!(vip.namespace.as_deref(), Some("db"));
        // a named egress port leads through the Service too
        let spec = json!({"podSelector": {"matchLabels": {"app": "me"}}, "policyTypes": ["Egress"], "egress": [
            {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}],
             "ports": [{"port": "sql"}]},
        ]});
        let out = compute(&policy("ns", spec), &w).unwrap();
        assert_eq!(
            show(&out.egress),
            [
                "egress IPv4 tcp 5432-5432 10.5.0.1/32",
                "egress IPv4 tcp 15432-15432 10.96.0.5/32"
            ]
        );
        // ingress rules are not affected by Services
        let spec = json!({"ingress": [{"from": [{"namespaceSelector": {}}]}]});
        let out = compute(&policy("ns", spec), &w).unwrap();
        assert!(show(&out.ingress).iter().all(|r| !r.contains("10.96.")));
    }

    #[test]
    fn an_egress_ip_block_leaves_out_cluster_ips_whose_backends_it_excepts() {
        let mut w = world(
            vec![
                pod("x", "a", &[("pod", "a")], &["10.78.0.1"]),
                pod("x", "b", &[("pod", "b")], &["10.78.0.2"]),
                pod("x", "c", &[("pod", "c")], &["10.78.0.3"]),
            ],
            vec![],
        );
        let svc = |name: &str, vip: &str| {
            crate::Service::from_k8s(
                &serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": "x"},
                    "spec": {"selector": {"pod": name}, "clusterIP": vip, "ports": [{"port": 80}]}
                }))
                .unwrap(),
            )
            .unwrap()
        };
        w.services = vec![svc("b", "10.96.0.2"), svc("c", "10.96.0.3")];
        w.settings.translated = vec!["10.96.0.0/15".parse().unwrap()];
        // upstream's "except clause while egress access to server in CIDR
        // block": everything in 0.0.0.0/4 but pod b
        let spec = json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/4", "except": ["10.78.0.2/32"]}}]},
        ]});
        let out = compute(&policy("x", spec), &w).unwrap();
        let rules = show(&out.egress);
        // c's ClusterIP is admitted, b's is not, and no block rule covers
        // the service subnet
        assert!(
            rules.contains(&"egress IPv4 any 10.96.0.3/32".to_string()),
            "{rules:?}"
        );
        assert!(
            !rules.iter().any(|r| r.ends_with("10.96.0.2/32")),
            "{rules:?}"
        );
        let service_net: Cidr = "10.96.0.0/15".parse().unwrap();
        for e in &out.egress {
            if let Some(r) = e.rule.remote {
                assert!(
                    r.prefix() == 32 || !(r.contains(&service_net) || service_net.contains(&r)),
                    "{r} overlaps the service subnet"
                );
            }
        }
        // without a translated range the block is written whole, as before
        w.settings.translated.clear();
        let spec = json!({"policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]});
        let out = compute(&policy("x", spec), &w).unwrap();
        assert_eq!(show(&out.egress)[0], "egress IPv4 any 10.0.0.0/8");
        // ingress blocks are never cut
        w.settings.translated = vec![service_net];
        let spec = json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]});
        assert_eq!(
            show(&compute(&policy("x", spec), &w).unwrap().ingress),
            ["ingress IPv4 any 10.0.0.0/8"]
        );
    }

    #[test]
    fn egress_named_ports_resolve_per_peer_pod() {
        let w = world(
            vec![
                pod("ns", "me", &[("app", "me")], &["10.0.0.1"]),
                with_port(
                    pod("db", "db1", &[("app", "db")], &["10.5.0.1", "fd00::51"]),
                    "sql",
                    Protocol::Tcp,
                    5432,
                ),
                with_port(
                    pod("db", "db2", &[("app", "db")], &["10.5.0.2"]),
                    "sql",
                    Protocol::Tcp,
                    3306,
                ),
                pod("db", "db3", &[("app", "db")], &["10.5.0.3"]),
            ],
            vec![namespace("db", &[("role", "db")], &["10.5.0.0/24"])],
        );
        let spec = json!({"podSelector": {"matchLabels": {"app": "me"}}, "policyTypes": ["Egress"], "egress": [
            {"to": [{"namespaceSelector": {"matchLabels": {"role": "db"}}}], "ports": [{"port": "sql"}, {"port": 22}]},
            {"to": [{"ipBlock": {"cidr": "192.168.0.0/16"}}], "ports": [{"port": "sql"}, {"port": 443}]},
        ]});
        let out = compute(&policy("ns", spec), &w).unwrap();
        assert_eq!(
            show(&out.egress),
            [
                "egress IPv4 tcp 22-22 10.5.0.0/24",
                "egress IPv4 tcp 443-443 192.168.0.0/16",
                "egress IPv4 tcp 3306-3306 10.5.0.2/32",
                "egress IPv4 tcp 5432-5432 10.5.0.1/32",
                "egress IPv6 tcp 5432-5432 fd00::51/128",
            ]
        );
        assert_eq!(out.warnings.len(), 1);
        assert!(out.warnings[0].contains("spec.egress[1]") && out.warnings[0].contains("sql"));
        let e = &out.egress[2];
        assert_eq!(
            (e.namespace.as_deref(), e.affected_pods[0].pod_ip.as_str()),
            (Some("db"), "10.5.0.2")
        );
        // `to` absent: every pod of the cluster with that port, no warning.
        let spec = json!({"policyTypes": ["Egress"], "egress": [{"ports": [{"port": "sql"}]}]});
        let out = compute(&policy("ns", spec), &w).unwrap();
        assert_eq!(out.egress.len(), 3);
        assert!(out.warnings.is_empty());
        assert!(out.egress.iter().all(|e| {
            e.rule
                .remote
                .is_some_and(|c: Cidr| c.prefix() == c.max_prefix())
        }));
    }
}
