//! KuryrLoadBalancer: a Kubernetes Service as an Octavia load balancer, in
//! kuryr-kubernetes' shape (snake_case fields but for `targetPort`,
//! `endpointSlices`, `targetRef`; status patched on the object).

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Finalizer on a Service until its KuryrLoadBalancer is gone.
pub const SERVICE_FINALIZER: &str = "kuryr.openstack.org/service-finalizer";
/// Finalizer on a KuryrLoadBalancer until its Octavia load balancer is gone.
pub const KLB_FINALIZER: &str = "kuryr.openstack.org/kuryrloadbalancer-finalizers";
/// Service annotation: the listeners' client data timeout (ms).
pub const TIMEOUT_CLIENT_ANNOTATION: &str = "openstack.org/kuryr-timeout-client-data";
/// Service annotation: the listeners' member data timeout (ms).
pub const TIMEOUT_MEMBER_ANNOTATION: &str = "openstack.org/kuryr-timeout-member-data";

/// What a Service asks for (written by the service and endpoint-slice
/// handlers).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "openstack.org",
    version = "v1",
    kind = "KuryrLoadBalancer",
    plural = "kuryrloadbalancers",
    shortname = "klb",
    namespaced,
    status = "KuryrLoadBalancerStatus",
    schema = "disabled"
)]
pub struct KuryrLoadBalancerSpec {
    /// The VIP: the Service's ClusterIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The Service's `loadBalancerIP` (an existing floating IP to use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_ip: Option<String>,
    /// Project of the load balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Subnet of the VIP (`[neutron_defaults] service_subnet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Service type: `ClusterIP` or `LoadBalancer`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Octavia provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Security groups whose rules the load balancer follows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups_ids: Vec<String>,
    /// Listener client data timeout (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_client_data: Option<u64>,
    /// Listener member data timeout (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_member_data: Option<u64>,
    /// The Service's ports.
    #[serde(default)]
    pub ports: Vec<LbPort>,
    /// The Service's EndpointSlices (their endpoints and ports).
    #[serde(
        rename = "endpointSlices",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub endpoint_slices: Vec<LbEndpointSlice>,
}

/// A Service port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct LbPort {
    /// Port name (empty for a single unnamed port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port number on the VIP.
    pub port: i32,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// Target port: a number or a container port name, as a string.
    #[serde(rename = "targetPort")]
    pub target_port: String,
}

/// An EndpointSlice of the Service, as kuryr-kubernetes copies it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct LbEndpointSlice {
    /// Endpoints.
    #[serde(default)]
    pub endpoints: Vec<LbEndpoint>,
    /// Ports (resolved target ports, by Service port name).
    #[serde(default)]
    pub ports: Vec<LbSlicePort>,
}

/// One endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct LbEndpoint {
    /// Addresses (one for IPv4 or IPv6 slices).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<LbConditions>,
    /// Hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The pod (or other object) behind it.
    #[serde(rename = "targetRef", default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<LbTargetRef>,
    /// Topology labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<BTreeMap<String, String>>,
}

/// Endpoint conditions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct LbConditions {
    /// Ready (terminating endpoints are not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
}

/// The object behind an endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LbTargetRef {
    /// Kind (`Pod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Resource version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// A port of an EndpointSlice.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct LbSlicePort {
    /// The Service port's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The endpoints' port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// What exists in Octavia (written by the load-balancer handler).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct KuryrLoadBalancerStatus {
    /// The load balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadbalancer: Option<LbStatus>,
    /// Its listeners.
    #[serde(default)]
    pub listeners: Vec<ListenerStatus>,
    /// Its pools.
    #[serde(default)]
    pub pools: Vec<PoolStatus>,
    /// Their members.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    /// The floating IP of a LoadBalancer Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_pub_ip_info: Option<PubIpInfo>,
}

/// An Octavia load balancer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct LbStatus {
    /// Id.
    pub id: String,
    /// VIP address.
    pub ip: String,
    /// Name (`<namespace>/<service>`).
    pub name: String,
    /// VIP port.
    pub port_id: String,
    /// Project.
    pub project_id: String,
    /// Provider.
    pub provider: String,
    /// Security groups.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// VIP subnet.
    pub subnet_id: String,
}

/// A listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct ListenerStatus {
    /// Id.
    pub id: String,
    /// Its load balancer.
    pub loadbalancer_id: String,
    /// Name (`<namespace>/<service>:<PROTOCOL>:<port>`).
    pub name: String,
    /// Port.
    pub port: i32,
    /// Project.
    pub project_id: String,
    /// Protocol.
    pub protocol: String,
    /// Client data timeout (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_client_data: Option<u64>,
    /// Member data timeout (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_member_data: Option<u64>,
}

/// A pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct PoolStatus {
    /// Id.
    pub id: String,
    /// Its listener.
    pub listener_id: String,
    /// Its load balancer.
    pub loadbalancer_id: String,
    /// Name (the listener's).
    pub name: String,
    /// Project.
    pub project_id: String,
    /// Protocol.
    pub protocol: String,
}

/// A member.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct MemberStatus {
    /// Id.
    pub id: String,
    /// Address.
    pub ip: String,
    /// Name (`<namespace>/<pod>:<port>`).
    pub name: String,
    /// Its pool.
    pub pool_id: String,
    /// Port.
    pub port: i32,
    /// Project.
    pub project_id: String,
    /// Subnet of the address.
    pub subnet_id: String,
}

/// A LoadBalancer Service's floating IP.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct PubIpInfo {
    /// Floating IP id.
    pub ip_id: String,
    /// Its address.
    pub ip_addr: String,
    /// `pool` (allocated by kuryr, released with the Service) or `user`
    /// (the Service's `loadBalancerIP`, kept).
    pub alloc_method: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_writes_a_kuryr_kubernetes_object() {
        // as kuryr-kubernetes wrote them
        let v = json!({
            "apiVersion": "openstack.org/v1", "kind": "KuryrLoadBalancer",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ip": "10.96.0.20", "project_id": "p", "subnet_id": "s", "type": "ClusterIP",
                "provider": "ovn", "security_groups_ids": ["sg"], "timeout_client_data": 0,
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "8080"}],
                "endpointSlices": [{"endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": true},
                    "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default", "uid": "u1"}}],
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]},
            "status": {"loadbalancer": {"id": "lb", "ip": "10.96.0.20", "name": "default/web", "port_id": "vp",
                    "project_id": "p", "provider": "ovn", "security_groups": [], "subnet_id": "s"},
                "listeners": [{"id": "l", "loadbalancer_id": "lb", "name": "default/web:TCP:80", "port": 80,
                    "project_id": "p", "protocol": "TCP"}],
                "pools": [], "members": []}});
        let klb: KuryrLoadBalancer = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(klb.spec.ports[0].target_port, "8080");
        assert_eq!(klb.spec.type_.as_deref(), Some("ClusterIP"));
        let ep = &klb.spec.endpoint_slices[0].endpoints[0];
        assert_eq!(
            ep.target_ref.as_ref().and_then(|t| t.uid.as_deref()),
            Some("u1")
        );
        let st = klb.status.as_ref().unwrap();
        assert_eq!(st.listeners[0].name, "default/web:TCP:80");
        let back = serde_json::to_value(&klb).unwrap();
        assert_eq!(back["spec"]["endpointSlices"], v["spec"]["endpointSlices"]);
        assert_eq!(back["spec"]["ports"], v["spec"]["ports"]);
        assert_eq!(back["status"]["loadbalancer"], v["status"]["loadbalancer"]);
    }
}
