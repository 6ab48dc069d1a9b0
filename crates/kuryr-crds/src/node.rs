//! A node's own port into the pod network (kuryr-rs; kuryr-kubernetes had
//! none): the controller makes a Neutron port per node on the pod subnet and
//! records it in an annotation of the Node; the node's daemon plugs it into
//! the integration bridge as a host interface, so the kubelet's probes and
//! host-network pods reach the pods, without NAT.

use crate::vif::Vif;
use serde::{Deserialize, Serialize};

/// Annotation on a Node holding its [`NodePort`] as JSON.
pub const NODE_PORT_ANNOTATION: &str = "openstack.org/kuryr-node-port";

/// Tag on a node's Neutron port: `kuryr-node:<node uid>`.
pub fn node_tag(node_uid: &str) -> String {
    format!("kuryr-node:{node_uid}")
}

/// The node uid in a port's `kuryr-node:<uid>` tag.
pub fn node_uid_of_tags(tags: &[String]) -> Option<&str> {
    tags.iter().find_map(|t| t.strip_prefix("kuryr-node:"))
}

/// A destination the node reaches through a gateway on its port's subnet
/// (another pod subnet behind the same router).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeRoute {
    /// Destination prefix.
    pub cidr: String,
    /// Next hop.
    pub gateway: String,
}

/// What the annotation says: the port as a VIF (its MAC, addresses, MTU and
/// bridge) and the routes to add through it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NodePort {
    /// The port (os-vif primitive, as in a KuryrPort).
    pub vif: Vif,
    /// Routes beyond the port's own subnet.
    #[serde(default)]
    pub routes: Vec<NodeRoute>,
}

impl NodePort {
    /// Reads the annotation's value.
    pub fn parse(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// The annotation's value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("a NodePort always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vif::VifKind;
    use kuryr_openstack_types::neutron::{Network, Port, Subnet};

    #[test]
    fn round_trips_through_the_annotation_and_finds_the_node_tag() {
        let port: Port = serde_json::from_value(serde_json::json!({
            "id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "network_id": "net",
            "mac_address": "fa:16:3e:00:00:01", "status": "DOWN",
            "fixed_ips": [{"subnet_id": "sub", "ip_address": "10.0.0.9"}]}))
        .unwrap();
        let net: Network =
            serde_json::from_value(serde_json::json!({"id": "net", "mtu": 1442})).unwrap();
        let sub: Subnet = serde_json::from_value(serde_json::json!({
            "id": "sub", "network_id": "net", "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1", "ip_version": 4}))
        .unwrap();
        let np = NodePort {
            vif: Vif::from_port(
                &port,
                &net,
                &[sub],
                VifKind::OpenVSwitch {
                    bridge_name: "br-int".into(),
                },
            ),
            routes: vec![NodeRoute {
                cidr: "10.1.0.0/24".into(),
                gateway: "10.0.0.1".into(),
            }],
        };
        let back = NodePort::parse(&np.to_annotation()).unwrap();
        assert_eq!(back, np);
        assert_eq!(back.vif.network.subnets[0].ips, ["10.0.0.9"]);
        let tags = vec!["kuryr-cluster:x".to_string(), node_tag("uid-1")];
        assert_eq!(node_uid_of_tags(&tags), Some("uid-1"));
        assert_eq!(node_uid_of_tags(&tags[..1]), None);
        assert!(NodePort::parse("{\"vif\": 3}").is_err());
    }
}
