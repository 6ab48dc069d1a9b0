//! Resolution of `from` / `to` peers against the world.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::NetworkPolicyPeer;

use crate::cidr::exclude;
use crate::selector::{Labels, Selector};
use crate::world::NAMESPACE_NAME_LABEL;
use crate::{Cidr, PeerSet, PeerSpec, Pod, PolicyError, World};

/// Pods selected by a peer in one namespace (or cluster-wide).
#[derive(Debug)]
pub(crate) struct PodGroup<'w> {
    /// Namespace the pods come from; `None` for the cluster-wide shortcut.
    pub namespace: Option<String>,
    /// When the group is "all pods" of a namespace (or of the cluster) with
    /// known subnets: those prefixes, to be used instead of per-pod rules.
    pub shortcut: Option<Vec<Cidr>>,
    /// Every selected pod (also when a shortcut exists: named ports in
    /// egress rules are resolved per pod).
    pub pods: Vec<&'w Pod>,
    /// The namespace's ports are in a project of their own, so they cannot
    /// carry the cluster's peer-set groups: its pods are written per pod.
    pub per_pod: bool,
}

/// A resolved peer.
#[derive(Debug)]
pub(crate) enum Peer<'w> {
    /// `from`/`to` absent or empty: any address.
    Anywhere,
    /// An `ipBlock`: the text of its `cidr` and what remains after `except`.
    Block(String, Vec<Cidr>),
    /// Pods selected by `podSelector` and/or `namespaceSelector`: per
    /// namespace, and as a whole (the peer set and how the policy wrote it).
    Pods(Vec<PodGroup<'w>>, PeerSet, PeerSpec),
}

/// Namespace views derived once per computation.
pub(crate) struct Namespaces<'w> {
    labels: BTreeMap<&'w str, Labels>,
    subnets: BTreeMap<&'w str, &'w [Cidr]>,
    pods: BTreeMap<&'w str, Vec<&'w Pod>>,
    own_project: BTreeSet<&'w str>,
}

impl<'w> Namespaces<'w> {
    /// Every namespace of `world` (listed ones and those only named by pods),
    /// with the implied `kubernetes.io/metadata.name` label.
    pub fn new(world: &'w World) -> Self {
        let mut labels: BTreeMap<&str, Labels> = BTreeMap::new();
        let mut subnets: BTreeMap<&str, &[Cidr]> = BTreeMap::new();
        let mut pods: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
        let mut own_project = BTreeSet::new();
        for ns in &world.namespaces {
            if ns.own_project {
                own_project.insert(ns.name.as_str());
            }
            labels
                .entry(&ns.name)
                .or_default()
                .extend(ns.labels.clone());
            subnets.insert(&ns.name, &ns.subnets);
        }
        for pod in &world.pods {
            labels.entry(&pod.namespace).or_default();
            pods.entry(&pod.namespace).or_default().push(pod);
        }
        for (name, l) in labels.iter_mut() {
            l.entry(NAMESPACE_NAME_LABEL.to_owned())
                .or_insert_with(|| (*name).to_owned());
        }
        Self {
            labels,
            subnets,
            pods,
            own_project,
        }
    }
}

/// Resolves the peers of one rule; absent or empty gives `[Peer::Anywhere]`.
pub(crate) fn resolve_peers<'w>(
    peers: Option<&Vec<NetworkPolicyPeer>>,
    policy_namespace: &str,
    world: &'w World,
    namespaces: &Namespaces<'w>,
) -> Result<Vec<Peer<'w>>, PolicyError> {
    let peers = match peers {
        Some(p) if !p.is_empty() => p,
        _ => return Ok(vec![Peer::Anywhere]),
    };
    peers
        .iter()
        .map(|peer| resolve_peer(peer, policy_namespace, world, namespaces))
        .collect()
}

fn resolve_peer<'w>(
    peer: &NetworkPolicyPeer,
    policy_namespace: &str,
    world: &'w World,
    namespaces: &Namespaces<'w>,
) -> Result<Peer<'w>, PolicyError> {
    if let Some(block) = &peer.ip_block {
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            return Err(PolicyError::InvalidPeer(
                "ipBlock combined with a selector".into(),
            ));
        }
        let base: Cidr = block.cidr.parse()?;
        let excepts = block
            .except
            .iter()
            .flatten()
            .map(|e| e.parse())
            .collect::<Result<Vec<Cidr>, _>>()?;
        return Ok(Peer::Block(block.cidr.clone(), exclude(base, &excepts)));
    }
    if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
        return Err(PolicyError::InvalidPeer(
            "a peer needs podSelector, namespaceSelector or ipBlock".into(),
        ));
    }
    let spec = PeerSpec::new(
        policy_namespace,
        peer.namespace_selector.as_ref(),
        peer.pod_selector.as_ref(),
    );
    let set = spec.set()?;
    let pod_selector = Selector::compile_opt(peer.pod_selector.as_ref())?;
    let whole_namespaces = pod_selector.is_empty();
    let chosen: BTreeSet<&str> = match &peer.namespace_selector {
        None => BTreeSet::from([policy_namespace]),
        Some(sel) => {
            let sel = Selector::compile(sel)?;
            if sel.is_empty() && whole_namespaces && !world.settings.cluster_pod_cidrs.is_empty() {
                let group = PodGroup {
                    namespace: None,
                    shortcut: Some(world.settings.cluster_pod_cidrs.clone()),
                    pods: world.pods.iter().collect(),
                    per_pod: false,
                };
                return Ok(Peer::Pods(vec![group], set, spec));
            }
            namespaces
                .labels
                .iter()
                .filter(|(_, labels)| sel.matches(labels))
                .map(|(name, _)| *name)
                .collect()
        }
    };
    let groups = chosen
        .into_iter()
        .map(|ns| {
            let shortcut = namespaces
                .subnets
                .get(ns)
                .filter(|s| whole_namespaces && !s.is_empty())
                .map(|s| s.to_vec());
            let pods = namespaces
                .pods
                .get(ns)
                .into_iter()
                .flatten()
                .copied()
                .filter(|p| pod_selector.matches(&p.labels))
                .collect();
            PodGroup {
                namespace: Some(ns.to_owned()),
                shortcut,
                pods,
                per_pod: namespaces.own_project.contains(ns),
            }
        })
        .collect();
    Ok(Peer::Pods(groups, set, spec))
}

#[cfg(test)]
mod tests {
    use crate::testutil::{from, ingress, namespace, pod, policy, world};
    use crate::{AffectedPod, PolicyError, World, compute};
    use serde_json::json;

    #[test]
    fn pod_peers_are_host_prefixes_per_ip() {
        let w = world(
            vec![
                pod("ns", "dual", &[("app", "a")], &["10.0.0.1", "fd00::1"]),
                pod("ns", "pending", &[("app", "a")], &[]),
                pod("ns", "other", &[("app", "b")], &["10.0.0.2"]),
                pod("ns2", "elsewhere", &[("app", "a")], &["10.0.1.1"]),
            ],
            vec![],
        );
        let rules = ingress(
            &w,
            from(json!([{"podSelector": {"matchLabels": {"app": "a"}}}])),
        );
        assert_eq!(
            rules,
            [
                "ingress IPv4 any 10.0.0.1/32",
                "ingress IPv6 any fd00::1/128"
            ]
        );
        let out = compute(
            &policy(
                "ns",
                from(json!([{"podSelector": {"matchLabels": {"app": "a"}}}])),
            ),
            &w,
        )
        .unwrap();
        assert_eq!(out.ingress[0].namespace.as_deref(), Some("ns"));
        assert_eq!(
            out.ingress[1].affected_pods,
            [AffectedPod {
                pod_ip: "fd00::1".into(),
                pod_namespace: "ns".into()
            }]
        );
        // Only pods without IPs: nothing (and still isolated).
        let rules = ingress(
            &w,
            from(
                json!([{"podSelector": {"matchLabels": {"app": "a"}, "matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}}, {"podSelector": {"matchLabels": {"app": "none"}}}]),
            ),
        );
        assert_eq!(rules.len(), 2);
        let rules = ingress(
            &w,
            from(json!([{"podSelector": {"matchLabels": {"app": "none"}}}])),
        );
        assert!(rules.is_empty());
    }

    #[test]
    fn namespace_and_pod_selector_apply_in_every_matching_namespace() {
        let w = world(
            vec![
                pod("a", "web-a", &[("app", "web")], &["10.1.0.1"]),
                pod("a", "db-a", &[("app", "db")], &["10.1.0.2"]),
                pod("b", "web-b", &[("app", "web")], &["10.2.0.1"]),
                pod("c", "web-c", &[("app", "web")], &["10.3.0.1"]),
                pod("ns", "web-ns", &[("app", "web")], &["10.4.0.1"]),
            ],
            vec![
                namespace("a", &[("team", "x")], &[]),
                namespace("b", &[("team", "x")], &[]),
                namespace("c", &[("team", "y")], &[]),
            ],
        );
        let peer = json!([{"namespaceSelector": {"matchLabels": {"team": "x"}}, "podSelector": {"matchLabels": {"app": "web"}}}]);
        assert_eq!(
            ingress(&w, from(peer)),
            [
                "ingress IPv4 any 10.1.0.1/32",
                "ingress IPv4 any 10.2.0.1/32"
            ]
        );
        let out = compute(&policy("ns", from(json!([{"namespaceSelector": {"matchLabels": {"team": "x"}}, "podSelector": {"matchLabels": {"app": "web"}}}]))), &w).unwrap();
        let namespaces: Vec<_> = out
            .ingress
            .iter()
            .map(|e| e.namespace.clone().unwrap())
            .collect();
        assert_eq!(namespaces, ["a", "b"]);
        // Empty namespaceSelector: every namespace, including unlisted ones.
        let peer =
            json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}]);
        assert_eq!(ingress(&w, from(peer)).len(), 4);
        // The implied kubernetes.io/metadata.name label.
        let peer =
            json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "c"}}}]);
        assert_eq!(ingress(&w, from(peer)), ["ingress IPv4 any 10.3.0.1/32"]);
    }

    #[test]
    fn whole_namespace_peers_use_subnets_when_known() {
        let w = world(
            vec![
                pod("a", "p1", &[("app", "web")], &["10.1.0.5"]),
                pod("b", "p2", &[("app", "web")], &["10.2.0.5"]),
                pod("ns", "p3", &[("app", "web")], &["10.9.0.5"]),
            ],
            vec![
                namespace("a", &[("team", "x")], &["10.1.0.0/24", "fd00:1::/64"]),
                namespace("b", &[("team", "x")], &[]),
                namespace("ns", &[], &["10.9.0.0/24"]),
            ],
        );
        let peer = json!([{"namespaceSelector": {"matchLabels": {"team": "x"}}}]);
        assert_eq!(
            ingress(&w, from(peer)),
            [
                "ingress IPv4 any 10.1.0.0/24",
                "ingress IPv4 any 10.2.0.5/32",
                "ingress IPv6 any fd00:1::/64"
            ]
        );
        // Empty podSelector is still "all pods"; a real one is not.
        let peer =
            json!([{"namespaceSelector": {"matchLabels": {"team": "x"}}, "podSelector": {}}]);
        assert_eq!(ingress(&w, from(peer)).len(), 3);
        let peer = json!([{"namespaceSelector": {"matchLabels": {"team": "x"}}, "podSelector": {"matchLabels": {"app": "web"}}}]);
        assert_eq!(
            ingress(&w, from(peer)),
            [
                "ingress IPv4 any 10.1.0.5/32",
                "ingress IPv4 any 10.2.0.5/32"
            ]
        );
        assert_eq!(
            ingress(&w, from(json!([{"podSelector": {}}]))),
            ["ingress IPv4 any 10.9.0.0/24"]
        );
        // Cluster-wide shortcut for all pods of all namespaces.
        let mut w = w;
        w.settings.cluster_pod_cidrs = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            ingress(&w, from(json!([{"namespaceSelector": {}}]))),
            ["ingress IPv4 any 10.0.0.0/8"]
        );
    }

    #[test]
    fn ip_block_excepts_are_carved_out() {
        let w = World::default();
        let peer = json!([{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.0/26", "10.0.0.32/27", "10.0.0.64/26", "192.168.0.0/16"]}}]);
        assert_eq!(ingress(&w, from(peer)), ["ingress IPv4 any 10.0.0.128/25"]);
        let peer = json!([{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.128/25", "10.0.0.0/26"]}}]);
        assert_eq!(ingress(&w, from(peer)), ["ingress IPv4 any 10.0.0.64/26"]);
        assert!(
            ingress(
                &w,
                from(json!([{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.0/24"]}}]))
            )
            .is_empty()
        );
        let peer = json!([{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "2001:db8::/32", "except": ["2001:db8::/33"]}}]);
        assert_eq!(
            ingress(&w, from(peer)),
            [
                "ingress IPv4 any anywhere",
                "ingress IPv6 any 2001:db8:8000::/33"
            ]
        );
        let bad = from(json!([{"ipBlock": {"cidr": "10.0.0.0/33"}}]));
        assert!(matches!(
            compute(&policy("ns", bad), &w),
            Err(PolicyError::InvalidCidr(_))
        ));
    }

    #[test]
    fn invalid_peers_are_errors() {
        for peer in [
            json!([{}]),
            json!([{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]),
        ] {
            let out = compute(&policy("ns", from(peer)), &World::default());
            assert!(matches!(out, Err(PolicyError::InvalidPeer(_))));
        }
    }
}
