//! KuryrNetworkPolicy (`knp`): one per NetworkPolicy, same namespace and
//! name, holding the rules its security group must have (`spec`) and what
//! Neutron has (`status`), as kuryr-kubernetes wrote it.

use kube::CustomResource;
use kuryr_policy::{KnpRule, PeerSpec, SgRule};
use serde::{Deserialize, Serialize};

/// Finalizer on a NetworkPolicy and on its KuryrNetworkPolicy until the
/// security group is gone.
pub const NETWORKPOLICY_FINALIZER: &str = "kuryr.openstack.org/networkpolicy-finalizer";

/// Annotation on a KuryrNetworkPolicy naming its NetworkPolicy (the
/// policy's API path, as kuryr-kubernetes wrote it).
pub const NETWORKPOLICY_LINK: &str = "networkPolicyLink";

/// The API path of NetworkPolicy `namespace/name`, the value of
/// [`NETWORKPOLICY_LINK`].
pub fn network_policy_link(namespace: &str, name: &str) -> String {
    format!("/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}")
}

/// Spec of a KuryrNetworkPolicy: the rules the policy's group must have.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "openstack.org",
    version = "v1",
    kind = "KuryrNetworkPolicy",
    plural = "kuryrnetworkpolicies",
    shortname = "knp",
    namespaced,
    status = "KuryrNetworkPolicyStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct KuryrNetworkPolicySpec {
    /// Ingress rules.
    #[serde(default)]
    pub ingress_sg_rules: Vec<KnpRule>,
    /// Egress rules.
    #[serde(default)]
    pub egress_sg_rules: Vec<KnpRule>,
    /// The policy's `podSelector`, as written.
    #[serde(default)]
    pub pod_selector: serde_json::Value,
    /// The directions the policy isolates (`Ingress`, `Egress`).
    #[serde(default)]
    pub policy_types: Vec<String>,
    /// kuryr-rs: the groups the rules name by `remote_group_id` and which
    /// pods' ports carry them (absent when rules name pods by address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_groups: Vec<PeerGroup>,
}

/// The group of a peer set a policy's rules name (kuryr-rs, `[kubernetes]
/// network_policy_peers = remote_group`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PeerGroup {
    /// The group's ID.
    pub id: String,
    /// The pods whose ports carry it.
    #[serde(flatten)]
    pub peers: PeerSpec,
}

/// Status of a KuryrNetworkPolicy: the group and the rules it has.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KuryrNetworkPolicyStatus {
    /// The security group, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_id: Option<String>,
    /// The group's rules as Neutron has them (with `id`).
    #[serde(default)]
    pub security_group_rules: Vec<SgRule>,
    /// The `podSelector` the group's ports were chosen with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    #[test]
    fn reads_what_kuryr_kubernetes_wrote() {
        let knp: KuryrNetworkPolicy = serde_json::from_value(json!({
            "apiVersion": "openstack.org/v1",
            "kind": "KuryrNetworkPolicy",
            "metadata": {"name": "np", "namespace": "default",
                         "annotations": {"networkPolicyLink": network_policy_link("default", "np")},
                         "finalizers": [NETWORKPOLICY_FINALIZER]},
            "spec": {
                "egressSgRules": [{"sgRule": {"description": "Kuryr-Kubernetes NetPolicy SG rule",
                                              "direction": "egress", "ethertype": "IPv4"}}],
                "ingressSgRules": [{"namespace": "default",
                                    "affectedPods": [{"podIP": "10.0.0.7", "podNamespace": "default"}],
                                    "sgRule": {"description": "Kuryr-Kubernetes NetPolicy SG rule",
                                               "direction": "ingress", "ethertype": "IPv4",
                                               "port_range_min": 80, "port_range_max": 80,
                                               "protocol": "tcp", "remote_ip_prefix": "10.0.0.7/32"}}],
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Ingress"]
            },
            "status": {"securityGroupId": "sg1", "podSelector": {"matchLabels": {"app": "web"}},
                       "securityGroupRules": [{"id": "r1", "security_group_id": "sg1",
                                               "direction": "egress", "ethertype": "IPv4",
                                               "description": "Kuryr-Kubernetes NetPolicy SG rule"}]}
        }))
        .unwrap();
        assert_eq!(KuryrNetworkPolicy::kind(&()), "KuryrNetworkPolicy");
        assert_eq!(KuryrNetworkPolicy::plural(&()), "kuryrnetworkpolicies");
        assert_eq!(
            knp.spec.ingress_sg_rules[0].sg_rule.port_range_min,
            Some(80)
        );
        assert_eq!(knp.spec.policy_types, vec!["Ingress".to_owned()]);
        let status = knp.status.as_ref().unwrap();
        assert_eq!(status.security_group_id.as_deref(), Some("sg1"));
        assert_eq!(status.security_group_rules[0].id.as_deref(), Some("r1"));
        // written back the same way
        let back = serde_json::to_value(&knp).unwrap();
        assert_eq!(
            back["spec"]["ingressSgRules"][0]["affectedPods"][0]["podIP"],
            "10.0.0.7"
        );
        assert_eq!(
            back["status"]["securityGroupRules"][0]["security_group_id"],
            "sg1"
        );
        // no peer groups: no such field, as kuryr-kubernetes wrote it
        assert!(back["spec"].get("peerGroups").is_none());
    }

    #[test]
    fn peer_groups_round_trip() {
        let spec: KuryrNetworkPolicySpec = serde_json::from_value(json!({
            "ingressSgRules": [{"sgRule": {"direction": "ingress", "ethertype": "IPv4",
                                           "remote_group_id": "g1"}}],
            "egressSgRules": [], "podSelector": {}, "policyTypes": ["Ingress"],
            "peerGroups": [{"id": "g1", "namespaceSelector": {"matchLabels": {"team": "a"}},
                            "podSelector": {"matchLabels": {"app": "client"}}}]
        }))
        .unwrap();
        let g = &spec.peer_groups[0];
        assert_eq!(g.id, "g1");
        assert_eq!(g.peers.namespace, None);
        assert!(g.peers.matcher().is_ok());
        assert_eq!(
            spec.ingress_sg_rules[0].sg_rule.remote_group_id.as_deref(),
            Some("g1")
        );
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            back["peerGroups"][0],
            json!({"id": "g1", "namespaceSelector": {"matchLabels": {"team": "a"}},
                   "podSelector": {"matchLabels": {"app": "client"}}})
        );
    }

    #[test]
    fn a_new_object_has_an_empty_rule_list_in_its_status() {
        // the CRD requires status.securityGroupRules at creation
        let s = serde_json::to_value(KuryrNetworkPolicyStatus::default()).unwrap();
        assert_eq!(s, json!({"securityGroupRules": []}));
    }
}
