//! The kuryr-kubernetes KuryrNetworkPolicy rule format
//! (`spec.ingressSgRules[]` / `spec.egressSgRules[]`).

use serde::{Deserialize, Serialize};

/// The description kuryr-kubernetes put on every policy rule.
pub const DESCRIPTION: &str = "Kuryr-Kubernetes NetPolicy SG rule";

/// A Neutron security-group rule body, snake_case like Neutron's API.
///
/// Absent fields are left out when serialised. `id` and
/// `security_group_id` are only set for rules read back from Neutron (e.g.
/// the KNP status); `remote_group_id` is never produced here but kept so
/// such Neutron rules compare correctly in [`crate::diff()`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SgRule {
    /// Neutron rule ID (existing rules only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Owning security group (existing rules only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_id: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `ingress` or `egress`.
    pub direction: String,
    /// `IPv4` or `IPv6`.
    #[serde(default)]
    pub ethertype: String,
    /// First port (with a protocol only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range_min: Option<u16>,
    /// Last port (with a protocol only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range_max: Option<u16>,
    /// Lowercase protocol name; absent = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Remote CIDR; absent = anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip_prefix: Option<String>,
    /// Remote security group (never produced by the translation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_group_id: Option<String>,
}

/// A pod a rule was made for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AffectedPod {
    /// The pod IP.
    #[serde(rename = "podIP")]
    pub pod_ip: String,
    /// The pod namespace.
    #[serde(rename = "podNamespace")]
    pub pod_namespace: String,
}

/// One entry of `ingressSgRules` / `egressSgRules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnpRule {
    /// The Neutron rule body.
    pub sg_rule: SgRule,
    /// Namespace the rule's remote was derived from (pod/namespace peers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Pods the rule was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affected_pods: Option<Vec<AffectedPod>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kuryr_kubernetes_json_round_trips() {
        let text = json!({
            "sgRule": {
                "description": "Kuryr-Kubernetes NetPolicy SG rule",
                "direction": "ingress",
                "ethertype": "IPv4",
                "port_range_min": 8080,
                "port_range_max": 8080,
                "protocol": "tcp",
                "remote_ip_prefix": "10.0.0.5"
            },
            "namespace": "default",
            "affectedPods": [{"podIP": "10.0.0.7", "podNamespace": "default"}]
        });
        let rule: KnpRule = serde_json::from_value(text.clone()).unwrap();
        assert_eq!(rule.sg_rule.port_range_min, Some(8080));
        assert_eq!(rule.affected_pods.as_ref().unwrap()[0].pod_ip, "10.0.0.7");
        assert_eq!(serde_json::to_value(&rule).unwrap(), text);
    }

    #[test]
    fn absent_fields_are_omitted() {
        let rule = KnpRule {
            sg_rule: SgRule {
                direction: "egress".into(),
                ethertype: "IPv6".into(),
                ..Default::default()
            },
            namespace: None,
            affected_pods: None,
        };
        assert_eq!(
            serde_json::to_value(&rule).unwrap(),
            json!({"sgRule": {"direction": "egress", "ethertype": "IPv6"}})
        );
    }
}
