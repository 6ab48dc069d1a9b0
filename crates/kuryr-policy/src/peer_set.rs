//! Peer sets: the pods a policy peer names, as one Neutron security group.
//!
//! With [`crate::Settings::peer_groups`] on, a `podSelector` and/or
//! `namespaceSelector` peer is not written as one host-prefix rule per pod:
//! the rule names a remote security group (`remote_group_id`) and the pods
//! the peer selects carry that group on their ports. The group has no rules
//! of its own, so carrying it allows nothing; it only makes the pod a
//! member. Pods coming, going and changing labels then change port
//! memberships, not rules: a policy's rule count depends on its peers and
//! ports, not on how many pods they select.
//!
//! Two peers selecting pods the same way (in any policy) are the same
//! [`PeerSet`] and share one group.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};

use crate::PolicyError;
use crate::selector::{Labels, Selector};
use crate::world::NAMESPACE_NAME_LABEL;

/// Longest description Neutron accepts.
const MAX_DESCRIPTION: usize = 255;

/// The identity of a set of pods a peer selects (what makes two peers the
/// same group): the namespaces, then the pods in them, each as a canonical
/// selector (see [`Selector::canonical`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerSet {
    namespaces: Scope,
    pods: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Scope {
    /// The policy's own namespace (a peer without `namespaceSelector`).
    Only(String),
    /// The namespaces a canonical selector matches.
    Matching(String),
}

fn or_all(selector: &str) -> &str {
    if selector.is_empty() {
        "(all)"
    } else {
        selector
    }
}

/// 64-bit FNV-1a: a stable short digest for group names (not a security
/// property: the full key is in the group's description and a collision
/// only shares a group between two sets of equal key text).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl PeerSet {
    /// Human-readable identity, e.g. `namespace demo; pods app=web` or
    /// `namespaces team=a; pods (all)`.
    pub fn key(&self) -> String {
        match &self.namespaces {
            Scope::Only(ns) => format!("namespace {ns}; pods {}", or_all(&self.pods)),
            Scope::Matching(sel) => {
                format!("namespaces {}; pods {}", or_all(sel), or_all(&self.pods))
            }
        }
    }

    /// A 16-hex-digit digest of [`PeerSet::key`], stable across releases.
    pub fn digest(&self) -> String {
        format!("{:016x}", fnv1a64(self.key().as_bytes()))
    }

    /// The name of the set's group in cluster `cluster`.
    pub fn group_name(&self, cluster: &str) -> String {
        format!("kuryr/{cluster}/peers/{}", self.digest())
    }

    /// The description of the set's group: what its members are.
    pub fn description(&self) -> String {
        let text = format!("kuryr-rs NetworkPolicy peers: {}", self.key());
        text.chars().take(MAX_DESCRIPTION).collect()
    }
}

/// A peer as a policy writes it (`namespace` is the policy's when there is no
/// `namespaceSelector`): what the KuryrNetworkPolicy records so the ports of
/// the pods it selects can be given the set's group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerSpec {
    /// The only namespace, for a peer without `namespaceSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The peer's `namespaceSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// The peer's `podSelector` (absent in the policy = every pod).
    #[serde(default)]
    pub pod_selector: LabelSelector,
}

impl PeerSpec {
    /// The peer of a policy in `policy_namespace` with these selectors.
    pub fn new(
        policy_namespace: &str,
        namespace_selector: Option<&LabelSelector>,
        pod_selector: Option<&LabelSelector>,
    ) -> Self {
        Self {
            namespace: namespace_selector
                .is_none()
                .then(|| policy_namespace.to_owned()),
            namespace_selector: namespace_selector.cloned(),
            pod_selector: pod_selector.cloned().unwrap_or_default(),
        }
    }

    /// Validates the selectors.
    pub fn matcher(&self) -> Result<PeerMatcher, PolicyError> {
        let namespaces = match (&self.namespace, &self.namespace_selector) {
            (_, Some(sel)) => MatcherScope::Matching(Selector::compile(sel)?),
            (Some(ns), None) => MatcherScope::Only(ns.clone()),
            (None, None) => {
                return Err(PolicyError::InvalidPeer(
                    "a peer set needs a namespace or a namespaceSelector".into(),
                ));
            }
        };
        Ok(PeerMatcher {
            namespaces,
            pods: Selector::compile(&self.pod_selector)?,
        })
    }

    /// The set's identity.
    pub fn set(&self) -> Result<PeerSet, PolicyError> {
        Ok(self.matcher()?.set())
    }
}

enum MatcherScope {
    Only(String),
    Matching(Selector),
}

/// A compiled [`PeerSpec`]: which pods are members.
pub struct PeerMatcher {
    namespaces: MatcherScope,
    pods: Selector,
}

impl PeerMatcher {
    /// Whether a pod of `namespace` (whose labels are `namespace_labels`;
    /// `kubernetes.io/metadata.name` is implied) with `pod_labels` is in the
    /// set.
    pub fn contains(
        &self,
        namespace: &str,
        namespace_labels: &Labels,
        pod_labels: &Labels,
    ) -> bool {
        let in_namespace = match &self.namespaces {
            MatcherScope::Only(ns) => ns == namespace,
            MatcherScope::Matching(sel) => {
                let mut labels = namespace_labels.clone();
                labels
                    .entry(NAMESPACE_NAME_LABEL.to_owned())
                    .or_insert_with(|| namespace.to_owned());
                sel.matches(&labels)
            }
        };
        in_namespace && self.pods.matches(pod_labels)
    }

    /// The set's identity.
    pub fn set(&self) -> PeerSet {
        PeerSet {
            namespaces: match &self.namespaces {
                MatcherScope::Only(ns) => Scope::Only(ns.clone()),
                MatcherScope::Matching(sel) => Scope::Matching(sel.canonical()),
            },
            pods: self.pods.canonical(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PeerSpec {
        serde_json::from_value(v).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equal_selections_are_one_set_whatever_the_spelling() {
        let a = spec(
            json!({"namespace": "demo", "podSelector": {"matchLabels": {"app": "web", "tier": "1"}}}),
        );
        let b = spec(
            json!({"namespace": "demo", "podSelector": {"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["1"]},
            {"key": "app", "operator": "In", "values": ["web"]}]}}),
        );
        assert_eq!(a.set().unwrap(), b.set().unwrap());
        assert_eq!(
            a.set().unwrap().key(),
            "namespace demo; pods app=web,tier=1"
        );
        let other_ns = spec(
            json!({"namespace": "prod", "podSelector": {"matchLabels": {"app": "web", "tier": "1"}}}),
        );
        assert_ne!(a.set().unwrap(), other_ns.set().unwrap());
        assert_ne!(a.set().unwrap().digest(), other_ns.set().unwrap().digest());
        let everywhere = spec(json!({"namespaceSelector": {}, "podSelector": {}}));
        assert_eq!(
            everywhere.set().unwrap().key(),
            "namespaces (all); pods (all)"
        );
        let name = everywhere.set().unwrap().group_name("c1");
        assert!(name.starts_with("kuryr/c1/peers/") && name.len() == "kuryr/c1/peers/".len() + 16);
        // the digest is fixed by the key text (group names survive upgrades)
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn membership_follows_namespace_and_pod_labels() {
        let p = PeerSpec::new(
            "demo",
            Some(&serde_json::from_value(json!({"matchLabels": {"team": "a"}})).unwrap()),
            Some(&serde_json::from_value(json!({"matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["db"]}]})).unwrap()),
        );
        assert_eq!(p.namespace, None);
        let m = p.matcher().unwrap();
        let team_a = labels(&[("team", "a")]);
        assert!(m.contains("x", &team_a, &labels(&[("role", "web")])));
        assert!(m.contains("x", &team_a, &labels(&[])));
        assert!(!m.contains("x", &team_a, &labels(&[("role", "db")])));
        assert!(!m.contains("y", &labels(&[("team", "b")]), &labels(&[])));
        // the implied name label
        let by_name = PeerSpec::new(
            "demo",
            Some(
                &serde_json::from_value(json!({"matchLabels": {NAMESPACE_NAME_LABEL: "y"}}))
                    .unwrap(),
            ),
            None,
        );
        assert!(
            by_name
                .matcher()
                .unwrap()
                .contains("y", &labels(&[]), &labels(&[("a", "b")]))
        );
        // no namespaceSelector: the policy's namespace only
        let own = PeerSpec::new("demo", None, None);
        let m = own.matcher().unwrap();
        assert!(m.contains("demo", &labels(&[]), &labels(&[])));
        assert!(!m.contains("other", &labels(&[]), &labels(&[])));
        // invalid selectors and an empty scope are errors
        let bad = spec(
            json!({"namespace": "demo", "podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}}),
        );
        assert!(bad.matcher().is_err());
        assert!(spec(json!({"podSelector": {}})).matcher().is_err());
    }

    #[test]
    fn description_is_bounded() {
        let long = "v".repeat(400);
        let p = spec(json!({"namespace": "demo", "podSelector": {"matchLabels": {"k": long}}}));
        let d = p.set().unwrap().description();
        assert_eq!(d.chars().count(), MAX_DESCRIPTION);
        assert!(d.starts_with("kuryr-rs NetworkPolicy peers: namespace demo; pods k=vvv"));
    }

    #[test]
    fn serialises_like_the_policy_fields() {
        let p = PeerSpec::new("demo", None, None);
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"namespace": "demo", "podSelector": {}})
        );
    }
}
