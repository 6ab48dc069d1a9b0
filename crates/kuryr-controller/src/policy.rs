//! NetworkPolicy enforcement, the pure part: the cluster as policies see it,
//! a KuryrNetworkPolicy's spec from a policy's rules, Neutron rules in and
//! out of kuryr-policy's form, and the groups a pod's ports must have.
//!
//! The I/O is in [`crate::handlers::network_policy`] (policy → KNP →
//! security group) and [`crate::handlers::pod_groups`] (the ports).

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kuryr_crds::policy::PeerGroup;
use kuryr_crds::{KuryrNetworkPolicy, KuryrNetworkPolicySpec, KuryrPort};
use kuryr_openstack::types::neutron::{SecurityGroupRule, SecurityGroupRuleCreate};
use kuryr_policy::{Labels, PeerIds, PolicyRules, Selector, SgRule, World};

/// Whether a pod takes part in policies: not on the host's network (its
/// address is the node's), not finished, and with an address.
pub fn takes_part(pod: &Pod) -> bool {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    !host_network && !finished
}

/// The addresses of pods' ports as their KuryrPorts record them, keyed by
/// the pod UID each KuryrPort was made for (a KuryrPort left by an earlier
/// pod of the same name does not count).
type PortIps = std::collections::HashMap<String, Vec<std::net::IpAddr>>;

fn port_ips<'a>(ports: impl IntoIterator<Item = &'a KuryrPort>) -> PortIps {
    ports
        .into_iter()
        .filter_map(|kp| {
            let vif = kp.status.as_ref()?.default_vif()?;
            let ips: Vec<std::net::IpAddr> = vif
                .network
                .subnets
                .iter()
                .flat_map(|s| s.ips.iter())
                .filter_map(|ip| ip.parse().ok())
                .collect();
            (!ips.is_empty()).then(|| (kp.spec.pod_uid.clone(), ips))
        })
        .collect()
}

/// The policy view of `pod`: its port's addresses as its KuryrPort records
/// them (the controller made the port, so they are known before the kubelet
/// reports the pod's IPs, and stay right whatever writes the pod's status),
/// else the addresses of its status.
fn pod_view(pod: &Pod, ports: &PortIps) -> kuryr_policy::Pod {
    let mut view = kuryr_policy::Pod::from_k8s(pod);
    if let Some(ips) = pod.metadata.uid.as_ref().and_then(|uid| ports.get(uid)) {
        view.ips = ips.clone();
    }
    view
}

/// The world `compute` evaluates policies against: the pods that take part
/// (see [`takes_part`]; addresses from their KuryrPorts, see [`pod_view`]),
/// every namespace, and the Services with a selector (egress towards their
/// pods also admits their ClusterIPs). `ipv6` says whether the pod network
/// has IPv6 subnets (IPv4 is always written).
pub fn world<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    ports: impl IntoIterator<Item = &'a KuryrPort>,
    namespaces: impl IntoIterator<Item = &'a Namespace>,
    services: impl IntoIterator<Item = &'a Service>,
    ipv6: bool,
) -> World {
    let ports = port_ips(ports);
    let mut w = World {
        pods: pods
            .into_iter()
            .filter(|p| takes_part(p))
            .map(|p| pod_view(p, &ports))
            .collect(),
        namespaces: namespaces
            .into_iter()
            .map(kuryr_policy::Namespace::from_k8s)
            .collect(),
        services: services
            .into_iter()
            .filter_map(kuryr_policy::Service::from_k8s)
            .collect(),
        ..Default::default()
    };
    w.settings.ipv6 = ipv6;
    w
}

/// The KuryrNetworkPolicy spec of `policy` translated into `rules`, the
/// peer sets named by their groups in `ids` (a set without a group is left
/// out, with the rules naming it).
pub fn knp_spec(
    policy: &NetworkPolicy,
    rules: &PolicyRules,
    ids: &PeerIds,
) -> KuryrNetworkPolicySpec {
    let spec = policy.spec.clone().unwrap_or_default();
    let types = kuryr_policy::policy_types(&spec).unwrap_or(kuryr_policy::PolicyTypes {
        ingress: true,
        egress: false,
    });
    let mut policy_types = Vec::new();
    if types.ingress {
        policy_types.push("Ingress".to_owned());
    }
    if types.egress {
        policy_types.push("Egress".to_owned());
    }
    KuryrNetworkPolicySpec {
        ingress_sg_rules: rules.ingress_knp(ids),
        egress_sg_rules: rules.egress_knp(ids),
        peer_groups: rules
            .peer_sets
            .iter()
            .filter_map(|p| {
                let id = ids.get(&p.set().ok()?)?;
                Some(PeerGroup {
                    id: id.clone(),
                    peers: p.clone(),
                })
            })
            .collect(),
        pod_selector: serde_json::to_value(spec.pod_selector.unwrap_or_default())
            .unwrap_or_default(),
        policy_types,
    }
}

/// A rule as Neutron has it, in kuryr-policy's form (for the diff and the
/// KNP status).
pub fn from_neutron(r: &SecurityGroupRule) -> SgRule {
    SgRule {
        id: Some(r.id.clone()),
        security_group_id: Some(r.security_group_id.clone()),
        description: Some(r.description.clone()).filter(|d| !d.is_empty()),
        direction: r.direction.clone(),
        ethertype: r.ethertype.clone(),
        port_range_min: r.port_range_min.and_then(|p| u16::try_from(p).ok()),
        port_range_max: r.port_range_max.and_then(|p| u16::try_from(p).ok()),
        protocol: r.protocol.clone(),
        remote_ip_prefix: r.remote_ip_prefix.clone(),
        remote_group_id: r.remote_group_id.clone(),
    }
}

/// The Neutron body adding `rule` to group `sg`.
pub fn to_neutron(sg: &str, rule: &SgRule) -> SecurityGroupRuleCreate {
    SecurityGroupRuleCreate {
        security_group_id: sg.to_owned(),
        direction: rule.direction.clone(),
        ethertype: Some(rule.ethertype.clone()).filter(|e| !e.is_empty()),
        protocol: rule.protocol.clone(),
        port_range_min: rule.port_range_min.map(u32::from),
        port_range_max: rule.port_range_max.map(u32::from),
        remote_ip_prefix: rule.remote_ip_prefix.clone(),
        remote_group_id: rule.remote_group_id.clone(),
        description: rule.description.clone(),
    }
}

/// Whether a KNP's status shows its group holding exactly the spec's rules,
/// one each (as of the last pass that asked Neutron).
pub fn in_sync(knp: &KuryrNetworkPolicy) -> bool {
    let Some(status) = &knp.status else {
        return false;
    };
    if status.security_group_id.is_none() {
        return false;
    }
    let wanted: Vec<SgRule> = knp
        .spec
        .ingress_sg_rules
        .iter()
        .chain(&knp.spec.egress_sg_rules)
        .map(|r| r.sg_rule.clone())
        .collect();
    status.security_group_rules.len() == wanted.len()
        && kuryr_policy::diff(&status.security_group_rules, &wanted).is_empty()
}

/// The description of a policy's group, as kuryr-kubernetes wrote it.
pub fn group_description(namespace: &str, name: &str) -> String {
    format!("Kuryr-Kubernetes Network Policy {namespace}/{name} SG")
}

/// The tag finding a policy's group again (a crash between making it and
/// recording it in the KNP status must not make a second one).
pub fn group_tag(policy_uid: &str) -> String {
    format!("kuryr-np:{policy_uid}")
}

/// What a pod's ports must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Groups {
    /// Exactly these groups (sorted, no duplicates).
    Set(Vec<String>),
    /// A policy selecting the pod has no group yet: leave the ports as they
    /// are until it has (its KNP changing brings the pod back).
    NotYet,
}

/// The cluster's groups opening one direction to everything: a pod some
/// policies select gets the one of each direction none of them isolates
/// (a policy's own group holds rules only for the directions it isolates,
/// so that another policy isolating that direction is not undone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenGroups {
    /// Admits every ingress.
    pub ingress: String,
    /// Admits every egress.
    pub egress: String,
}

/// The groups of `pod`'s ports: those of every policy of its namespace
/// that selects it (a KNP being deleted no longer counts), plus `always`
/// (the node-access group) and the `open` group of each direction no
/// selecting policy isolates; `defaults` when no policy selects it.
pub fn pod_groups<'a>(
    pod: &Pod,
    knps: impl IntoIterator<Item = &'a KuryrNetworkPolicy>,
    defaults: &[String],
    always: Option<&str>,
    open: Option<&OpenGroups>,
) -> Groups {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let mut groups = Vec::new();
    let mut selected = false;
    let (mut isolates_ingress, mut isolates_egress) = (false, false);
    for knp in knps {
        if knp.metadata.namespace.as_deref() != Some(ns)
            || knp.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let Ok(sel) = serde_json::from_value(knp.spec.pod_selector.clone())
            .map_err(|_| ())
            .and_then(|s| Selector::compile(&s).map_err(|_| ()))
        else {
            continue;
        };
        if !sel.matches(&labels) {
            continue;
        }
        selected = true;
        isolates_ingress |= knp.spec.policy_types.iter().any(|t| t == "Ingress");
        isolates_egress |= knp.spec.policy_types.iter().any(|t| t == "Egress");
        match knp
            .status
            .as_ref()
            .and_then(|s| s.security_group_id.clone())
        {
            Some(g) => groups.push(g),
            None => return Groups::NotYet,
        }
    }
    if !selected {
        let mut d = defaults.to_vec();
        d.sort();
        d.dedup();
        return Groups::Set(d);
    }
    groups.extend(always.map(str::to_owned));
    if let Some(o) = open {
        if !isolates_ingress {
            groups.push(o.ingress.clone());
        }
        if !isolates_egress {
            groups.push(o.egress.clone());
        }
    }
    groups.sort();
    groups.dedup();
    Groups::Set(groups)
}

/// The peer-set groups (KNPs' `peerGroups`) a pod of namespace `ns` (whose
/// labels are `ns_labels`) with `labels` is a member of: its ports carry
/// them, so the rules naming them admit it. A KNP being deleted no longer
/// counts (its rules go with its group). Sorted, no duplicates.
pub fn peer_groups<'a>(
    ns: &str,
    ns_labels: &Labels,
    labels: &Labels,
    knps: impl IntoIterator<Item = &'a KuryrNetworkPolicy>,
) -> Vec<String> {
    let groups = knps
        .into_iter()
        .filter(|k| k.metadata.deletion_timestamp.is_none())
        .flat_map(|k| &k.spec.peer_groups);
    let mut out: Vec<String> = member_of(groups, ns, ns_labels, labels)
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The IDs of `groups` whose peer set holds a pod of namespace `ns` (with
/// `ns_labels`) labelled `labels`.
fn member_of<'a>(
    groups: impl IntoIterator<Item = &'a PeerGroup>,
    ns: &'a str,
    ns_labels: &'a Labels,
    labels: &'a Labels,
) -> impl Iterator<Item = &'a str> {
    groups
        .into_iter()
        .filter(move |g| {
            g.peers
                .matcher()
                .is_ok_and(|m| m.contains(ns, ns_labels, labels))
        })
        .map(|g| g.id.as_str())
}

/// The ports (with their pods, `ns/name`) that `peer_groups` (a
/// KuryrNetworkPolicy spec's) make members of a group they are not known
/// to carry yet (`carried`: the groups each port was last given). A rule
/// naming a peer group admits only the group's members, so the rule must
/// not come into force on the selected pods before its peers are in:
/// until then an admitted pod is refused. `namespaces` are the world's
/// (see [`world`]): pods of namespaces in projects of their own are named
/// by address, not by groups.
pub fn peers_not_in_yet<'a>(
    peer_groups: &[PeerGroup],
    pods: impl IntoIterator<Item = &'a Pod>,
    ports: impl IntoIterator<Item = &'a KuryrPort>,
    namespaces: &[kuryr_policy::Namespace],
    carried: &std::collections::HashMap<String, Vec<String>>,
) -> Vec<String> {
    if peer_groups.is_empty() {
        return Vec::new();
    }
    let empty = Labels::new();
    let by_name: std::collections::HashMap<&str, &kuryr_policy::Namespace> =
        namespaces.iter().map(|n| (n.name.as_str(), n)).collect();
    // the ports of each pod UID
    let mut by_uid: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for kp in ports {
        if let Some(st) = &kp.status {
            by_uid
                .entry(kp.spec.pod_uid.as_str())
                .or_default()
                .extend(st.port_ids());
        }
    }
    let mut out = Vec::new();
    for pod in pods.into_iter().filter(|p| takes_part(p)) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let namespace = by_name.get(ns);
        if namespace.is_some_and(|n| n.own_project) {
            continue;
        }
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let nsl = namespace.map_or(&empty, |n| &n.labels);
        let wanted: Vec<&str> = member_of(peer_groups, ns, nsl, labels).collect();
        if wanted.is_empty() {
            continue;
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        for port in by_uid.get(uid).into_iter().flatten() {
            let has = carried.get(*port);
            if !wanted
                .iter()
                .all(|g| has.is_some_and(|h| h.iter().any(|x| x == g)))
            {
                out.push(format!(
                    "{ns}/{} (port {port})",
                    pod.metadata.name.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    out
}

/// The peer-set groups known from `knps`, by set (their IDs, so a pass
/// that finds every set here needs no Neutron call to name them).
pub fn known_peer_ids<'a>(knps: impl IntoIterator<Item = &'a KuryrNetworkPolicy>) -> PeerIds {
    knps.into_iter()
        .flat_map(|k| &k.spec.peer_groups)
        .filter_map(|g| Some((g.peers.set().ok()?, g.id.clone())))
        .collect()
}

/// Whether two group lists hold the same groups, whatever their order.
pub fn same_groups(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuryr_crds::KuryrNetworkPolicyStatus;
    use serde_json::json;

    fn pod(ns: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": ns, "labels": labels},
            "status": {"podIP": "10.0.0.5", "phase": "Running"}
        }))
        .unwrap()
    }

    /// KuryrPort `name` of `ns` for pod UID `uid`, its port at `ip`.
    fn port(ns: &str, name: &str, uid: &str, ip: &str) -> KuryrPort {
        let mut k = crate::testing::kuryr_port(name, uid, Some(true), &[ip]);
        k.metadata.namespace = Some(ns.into());
        k
    }

    #[test]
    fn pod_addresses_come_from_their_kuryrports_before_their_status() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let mut a = pod("ns", json!({}));
        a.metadata.uid = Some("uid-a".into());
        // no address in its status (not reported yet, or overwritten)
        let mut b = pod("ns", json!({}));
        b.metadata.name = Some("b".into());
        b.metadata.uid = Some("uid-b".into());
        b.status = Some(serde_json::from_value(json!({"phase": "Pending"})).unwrap());
        // a KuryrPort left by an earlier pod named c does not count
        let mut c = pod("ns", json!({}));
        c.metadata.name = Some("c".into());
        c.metadata.uid = Some("uid-c2".into());
        let ports = [
            port("ns", "p", "uid-a", "10.0.0.9"),
            port("ns", "b", "uid-b", "10.0.0.7"),
            port("ns", "c", "uid-c1", "10.0.0.8"),
        ];
        let w = world([&a, &b, &c], &ports, [], [], false);
        let ips: Vec<_> = w
            .pods
            .iter()
            .map(|p| (p.name.as_str(), p.ips.clone()))
            .collect();
        assert_eq!(
            ips,
            [
                ("p", vec![ip("10.0.0.9")]),
                ("b", vec![ip("10.0.0.7")]),
                ("c", vec![ip("10.0.0.5")]),
            ]
        );
        // without KuryrPorts, the status
        let w = world([&a, &b], [], [], [], false);
        assert_eq!(w.pods[0].ips, [ip("10.0.0.5")]);
        assert!(w.pods[1].ips.is_empty());
    }

    fn knp(ns: &str, selector: serde_json::Value, sg: Option<&str>) -> KuryrNetworkPolicy {
        let mut k = KuryrNetworkPolicy::new(
            "np",
            KuryrNetworkPolicySpec {
                pod_selector: selector,
                ..Default::default()
            },
        );
        k.metadata.namespace = Some(ns.into());
        k.status = Some(KuryrNetworkPolicyStatus {
            security_group_id: sg.map(str::to_owned),
            ..Default::default()
        });
        k
    }

    #[test]
    fn a_pod_no_policy_selects_keeps_the_default_groups() {
        let p = pod("a", json!({"app": "web"}));
        let other_ns = knp("b", json!({}), Some("sg-b"));
        let other_label = knp("a", json!({"matchLabels": {"app": "db"}}), Some("sg-db"));
        assert_eq!(
            pod_groups(
                &p,
                [&other_ns, &other_label],
                &["d2".into(), "d1".into()],
                Some("acc"),
                None
            ),
            Groups::Set(vec!["d1".into(), "d2".into()])
        );
    }

    #[test]
    fn a_selected_pod_gets_every_selecting_policy_and_the_node_access_group() {
        let p = pod("a", json!({"app": "web", "tier": "1"}));
        let all = knp("a", json!({}), Some("sg-all"));
        let web = knp("a", json!({"matchLabels": {"app": "web"}}), Some("sg-web"));
        let expr = knp(
            "a",
            json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["1", "2"]}]}),
            Some("sg-tier"),
        );
        assert_eq!(
            pod_groups(&p, [&web, &all, &expr], &["d".into()], Some("acc"), None),
            Groups::Set(vec![
                "acc".into(),
                "sg-all".into(),
                "sg-tier".into(),
                "sg-web".into()
            ])
        );
    }

    #[test]
    fn a_direction_no_selecting_policy_isolates_is_opened_by_its_open_group() {
        let p = pod("a", json!({"app": "web"}));
        let open = OpenGroups {
            ingress: "open-in".into(),
            egress: "open-out".into(),
        };
        let with_types = |sg: &str, types: &[&str]| {
            let mut k = knp("a", json!({}), Some(sg));
            k.spec.policy_types = types.iter().map(|t| t.to_string()).collect();
            k
        };
        let egress_only = with_types("sg-e", &["Egress"]);
        let ingress_only = with_types("sg-i", &["Ingress"]);
        let both = with_types("sg-b", &["Ingress", "Egress"]);
        let g =
            |k: &[&KuryrNetworkPolicy]| pod_groups(&p, k.iter().copied(), &[], None, Some(&open));
        assert_eq!(
            g(&[&egress_only]),
            Groups::Set(vec!["open-in".into(), "sg-e".into()])
        );
        assert_eq!(
            g(&[&ingress_only]),
            Groups::Set(vec!["open-out".into(), "sg-i".into()])
        );
        // upstream "ingress and egress controlled independently": one
        // policy isolating egress, another ingress: nothing is opened
        assert_eq!(
            g(&[&egress_only, &ingress_only]),
            Groups::Set(vec!["sg-e".into(), "sg-i".into()])
        );
        assert_eq!(g(&[&both]), Groups::Set(vec!["sg-b".into()]));
    }

    #[test]
    fn a_policy_without_its_group_yet_leaves_the_ports_alone() {
        let p = pod("a", json!({"app": "web"}));
        let ready = knp("a", json!({}), Some("sg-all"));
        let pending = knp("a", json!({"matchLabels": {"app": "web"}}), None);
        assert_eq!(
            pod_groups(&p, [&ready, &pending], &["d".into()], None, None),
            Groups::NotYet
        );
    }

    #[test]
    fn a_policy_being_deleted_no_longer_counts() {
        let p = pod("a", json!({}));
        let mut gone = knp("a", json!({}), Some("sg-all"));
        gone.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        assert_eq!(
            pod_groups(&p, [&gone], &["d".into()], Some("acc"), None),
            Groups::Set(vec!["d".into()])
        );
    }

    #[test]
    fn host_network_and_finished_pods_take_no_part() {
        let mut p = pod("a", json!({}));
        assert!(takes_part(&p));
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!takes_part(&p));
        let host: Pod = serde_json::from_value(json!({
            "metadata": {"name": "h", "namespace": "a"},
            "spec": {"hostNetwork": true, "containers": []}
        }))
        .unwrap();
        assert!(!takes_part(&host));
        let w = world([&p, &host, &pod("a", json!({}))], [], [], [], false);
        assert_eq!(w.pods.len(), 1);
        assert!(!w.settings.ipv6);
    }

    #[test]
    fn neutron_rules_round_trip_through_the_policy_form() {
        let r: SecurityGroupRule = serde_json::from_value(json!({
            "id": "r1", "security_group_id": "g", "direction": "ingress", "ethertype": "IPv4",
            "protocol": "tcp", "port_range_min": 80, "port_range_max": 81,
            "remote_ip_prefix": "10.0.0.0/24", "remote_group_id": null, "description": ""
        }))
        .unwrap();
        let s = from_neutron(&r);
        assert_eq!(s.id.as_deref(), Some("r1"));
        assert_eq!(s.description, None);
        let body = to_neutron("g", &s);
        assert_eq!(body.port_range_max, Some(81));
        assert_eq!(body.remote_ip_prefix.as_deref(), Some("10.0.0.0/24"));
        assert_eq!(body.ethertype.as_deref(), Some("IPv4"));
        let without_id = SgRule {
            id: None,
            ..s.clone()
        };
        assert!(kuryr_policy::diff(std::slice::from_ref(&s), &[without_id]).is_empty());
    }

    #[test]
    fn the_knp_spec_follows_the_policy() {
        let np: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "np", "namespace": "a"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                     "egress": [{}]}
        }))
        .unwrap();
        let w = world([&pod("a", json!({"app": "web"}))], [], [], [], false);
        let rules = kuryr_policy::compute(&np, &w).unwrap();
        let spec = knp_spec(&np, &rules, &PeerIds::new());
        assert_eq!(spec.policy_types, vec!["Ingress", "Egress"]);
        assert_eq!(spec.pod_selector, json!({"matchLabels": {"app": "web"}}));
        // ingress isolated with no rule: nothing in; egress to anywhere
        assert!(spec.ingress_sg_rules.is_empty());
        assert_eq!(spec.egress_sg_rules.len(), 1);
        assert_eq!(spec.egress_sg_rules[0].sg_rule.remote_ip_prefix, None);
    }

    #[test]
    fn peer_sets_in_the_knp_and_their_members() {
        let np: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "np", "namespace": "a"},
            "spec": {"podSelector": {},
                     "ingress": [{"from": [
                         {"podSelector": {"matchLabels": {"app": "client"}}},
                         {"namespaceSelector": {"matchLabels": {"team": "x"}},
                          "podSelector": {"matchLabels": {"app": "client"}}}]}]}
        }))
        .unwrap();
        let mut w = world([&pod("a", json!({"app": "client"}))], [], [], [], false);
        w.settings.peer_groups = true;
        let rules = kuryr_policy::compute(&np, &w).unwrap();
        assert_eq!(rules.peer_sets.len(), 2);
        // before the groups exist: neither rules nor groups in the spec
        let none = knp_spec(&np, &rules, &PeerIds::new());
        assert!(none.ingress_sg_rules.is_empty() && none.peer_groups.is_empty());
        let ids: PeerIds = rules
            .peer_sets
            .iter()
            .enumerate()
            .map(|(i, p)| (p.set().unwrap(), format!("g{i}")))
            .collect();
        let spec = knp_spec(&np, &rules, &ids);
        assert_eq!(spec.ingress_sg_rules.len(), 2);
        assert_eq!(spec.peer_groups.len(), 2);
        let mut k = knp("a", json!({}), None);
        k.spec = spec;
        assert_eq!(known_peer_ids([&k]), ids);
        let own = k
            .spec
            .peer_groups
            .iter()
            .find(|g| g.peers.namespace.is_some())
            .unwrap()
            .id
            .clone();
        let team = k
            .spec
            .peer_groups
            .iter()
            .find(|g| g.peers.namespace.is_none())
            .unwrap()
            .id
            .clone();
        let labels = |v: serde_json::Value| -> Labels { serde_json::from_value(v).unwrap() };
        let client = labels(json!({"app": "client"}));
        // a client of a: the own-namespace set; of a team=x namespace: the
        // other; both when a is labelled team=x; nothing for other pods
        assert_eq!(
            peer_groups("a", &labels(json!({})), &client, [&k]),
            vec![own.clone()]
        );
        assert_eq!(
            peer_groups("b", &labels(json!({"team": "x"})), &client, [&k]),
            vec![team.clone()]
        );
        let mut both = vec![own, team];
        both.sort();
        assert_eq!(
            peer_groups("a", &labels(json!({"team": "x"})), &client, [&k]),
            both
        );
        assert!(
            peer_groups(
                "a",
                &labels(json!({})),
                &labels(json!({"app": "web"})),
                [&k]
            )
            .is_empty()
        );
        // a KNP being deleted names no member any more
        k.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(peer_groups("a", &labels(json!({})), &client, [&k]).is_empty());
    }

    #[test]
    fn a_rule_waits_for_the_ports_of_its_peers_to_carry_their_group() {
        let group = PeerGroup {
            id: "g-clients".into(),
            peers: kuryr_policy::PeerSpec::new(
                "a",
                // every namespace's clients
                Some(&serde_json::from_value(json!({})).unwrap()),
                Some(&serde_json::from_value(json!({"matchLabels": {"app": "client"}})).unwrap()),
            ),
        };
        let mut client = pod("a", json!({"app": "client"}));
        client.metadata.name = Some("client".into());
        client.metadata.uid = Some("uid-client".into());
        let mut other = pod("a", json!({"app": "other"}));
        other.metadata.name = Some("other".into());
        other.metadata.uid = Some("uid-other".into());
        // a client of namespace b, in a project of its own: named by address
        let mut far = pod("b", json!({"app": "client"}));
        far.metadata.uid = Some("uid-far".into());
        let ports = [
            port("a", "client", "uid-client", "10.0.0.2"),
            port("a", "other", "uid-other", "10.0.0.3"),
            port("b", "p", "uid-far", "10.0.0.4"),
        ];
        let port_of = |i: usize| {
            ports[i]
                .status
                .as_ref()
                .unwrap()
                .port_ids()
                .next()
                .unwrap()
                .to_owned()
        };
        let mut namespaces: Vec<kuryr_policy::Namespace> = ["a", "b"]
            .iter()
            .map(|n| {
                let ns: Namespace =
                    serde_json::from_value(json!({"metadata": {"name": n}})).unwrap();
                kuryr_policy::Namespace::from_k8s(&ns)
            })
            .collect();
        namespaces[1].own_project = true;
        let mut carried = std::collections::HashMap::new();
        let waiting = |carried: &std::collections::HashMap<String, Vec<String>>| {
            peers_not_in_yet(
                std::slice::from_ref(&group),
                [&client, &other, &far],
                &ports,
                &namespaces,
                carried,
            )
        };
        // the client's port not handled yet, then without the group
        assert_eq!(waiting(&carried).len(), 1, "{:?}", waiting(&carried));
        assert!(waiting(&carried)[0].starts_with("a/client"));
        carried.insert(port_of(0), vec!["default".to_owned()]);
        assert_eq!(waiting(&carried).len(), 1);
        // in the group: nothing to wait for (the other pod never was)
        carried.insert(
            port_of(0),
            vec!["default".to_owned(), "g-clients".to_owned()],
        );
        assert!(waiting(&carried).is_empty());
        // no peer groups (addresses in the rules): never waits
        assert!(
            peers_not_in_yet(&[], [&client], &ports, &namespaces, &Default::default()).is_empty()
        );
    }

    #[test]
    fn a_knp_is_in_sync_when_its_status_has_each_spec_rule_once() {
        let rule = |dir: &str, id: Option<&str>| SgRule {
            id: id.map(str::to_owned),
            direction: dir.into(),
            ethertype: "IPv4".into(),
            ..Default::default()
        };
        let mut k = knp("a", json!({}), None);
        k.spec.egress_sg_rules = vec![kuryr_policy::KnpRule {
            sg_rule: rule("egress", None),
            namespace: None,
            affected_pods: None,
        }];
        // no group yet
        assert!(!in_sync(&k));
        let st = k.status.as_mut().unwrap();
        st.security_group_id = Some("g".into());
        assert!(!in_sync(&k), "the group has no rule yet");
        let st = k.status.as_mut().unwrap();
        st.security_group_rules = vec![rule("egress", Some("r1"))];
        assert!(in_sync(&k));
        let st = k.status.as_mut().unwrap();
        st.security_group_rules.push(rule("egress", Some("r2")));
        assert!(!in_sync(&k), "a duplicate is not in sync");
        let st = k.status.as_mut().unwrap();
        st.security_group_rules = vec![rule("ingress", Some("r3"))];
        assert!(!in_sync(&k));
    }

    #[test]
    fn group_lists_compare_as_sets() {
        assert!(same_groups(
            &["b".into(), "a".into()],
            &["a".into(), "b".into(), "a".into()]
        ));
        assert!(!same_groups(&["a".into()], &["a".into(), "b".into()]));
    }
}
