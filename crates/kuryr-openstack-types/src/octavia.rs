//! Octavia v2 (`/v2/lbaas`): load balancers, listeners, pools, members and
//! health monitors.

use crate::{Extra, IdRef};
use serde::{Deserialize, Serialize};

/// `provisioning_status` values that end a wait.
pub const ACTIVE: &str = "ACTIVE";
/// A provisioning error: Octavia gave up on the object.
pub const ERROR: &str = "ERROR";

/// A load balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LoadBalancer {
    /// UUID.
    pub id: String,
    /// Name.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub name: String,
    /// Description.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub description: String,
    /// Owning project.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub project_id: String,
    /// VIP address.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub vip_address: String,
    /// Neutron port holding the VIP.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub vip_port_id: String,
    /// VIP subnet.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub vip_subnet_id: String,
    /// VIP network.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub vip_network_id: String,
    /// Provider (amphora, ovn...).
    #[serde(default, deserialize_with = "crate::null_default")]
    pub provider: String,
    /// `ACTIVE`, `PENDING_CREATE`, `PENDING_UPDATE`, `PENDING_DELETE`, `DELETED`, `ERROR`.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub provisioning_status: String,
    /// `ONLINE`, `OFFLINE`, `DEGRADED`, `ERROR`, `NO_MONITOR`.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub operating_status: String,
    /// Administrative state.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub admin_state_up: bool,
    /// Its listeners.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub listeners: Vec<IdRef>,
    /// Its pools.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub pools: Vec<IdRef>,
    /// Tags.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub tags: Vec<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Body of `POST /v2/lbaas/loadbalancers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LoadBalancerCreate {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// VIP subnet (or give `vip_network_id` / `vip_port_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vip_subnet_id: Option<String>,
    /// VIP network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vip_network_id: Option<String>,
    /// Existing VIP port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vip_port_id: Option<String>,
    /// Requested VIP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vip_address: Option<String>,
    /// Provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// A listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Listener {
    /// UUID.
    pub id: String,
    /// Name.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub name: String,
    /// `TCP`, `UDP`, `HTTP`, `HTTPS`, `SCTP`...
    #[serde(default, deserialize_with = "crate::null_default")]
    pub protocol: String,
    /// Port it listens on.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub protocol_port: u16,
    /// Default pool.
    #[serde(default)]
    pub default_pool_id: Option<String>,
    /// Its load balancers.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub loadbalancers: Vec<IdRef>,
    /// Provisioning status.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub provisioning_status: String,
    /// Operating status.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub operating_status: String,
    /// Client inactivity timeout (ms).
    #[serde(default)]
    pub timeout_client_data: Option<u64>,
    /// Member inactivity timeout (ms).
    #[serde(default)]
    pub timeout_member_data: Option<u64>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Body of `POST /v2/lbaas/listeners`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ListenerCreate {
    /// Load balancer.
    pub loadbalancer_id: String,
    /// Protocol.
    pub protocol: String,
    /// Port.
    pub protocol_port: u16,
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Default pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_pool_id: Option<String>,
    /// Allowed source CIDRs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_cidrs: Option<Vec<String>>,
    /// Client inactivity timeout (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_client_data: Option<u64>,
    /// Member inactivity timeout (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_member_data: Option<u64>,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// A pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Pool {
    /// UUID.
    pub id: String,
    /// Name.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub name: String,
    /// Protocol.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub protocol: String,
    /// `ROUND_ROBIN`, `LEAST_CONNECTIONS`, `SOURCE_IP`, `SOURCE_IP_PORT`.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub lb_algorithm: String,
    /// Its listeners.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub listeners: Vec<IdRef>,
    /// Its load balancers.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub loadbalancers: Vec<IdRef>,
    /// Its members.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub members: Vec<IdRef>,
    /// Health monitor.
    #[serde(default)]
    pub healthmonitor_id: Option<String>,
    /// Provisioning status.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub provisioning_status: String,
    /// Operating status.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub operating_status: String,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Body of `POST /v2/lbaas/pools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PoolCreate {
    /// Protocol.
    pub protocol: String,
    /// Algorithm.
    pub lb_algorithm: String,
    /// Listener whose default pool this becomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener_id: Option<String>,
    /// Load balancer (when no listener).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loadbalancer_id: Option<String>,
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A pool member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Member {
    /// UUID.
    pub id: String,
    /// Name.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub name: String,
    /// Backend address.
    pub address: String,
    /// Backend port.
    pub protocol_port: u16,
    /// Subnet of the address.
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// Weight.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Administrative state.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub admin_state_up: bool,
    /// Provisioning status.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub provisioning_status: String,
    /// Operating status.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub operating_status: String,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Body of `POST /v2/lbaas/pools/{id}/members`, and one entry of a batch
/// update (`PUT /v2/lbaas/pools/{id}/members`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MemberCreate {
    /// Backend address.
    pub address: String,
    /// Backend port.
    pub protocol_port: u16,
    /// Subnet of the address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// A health monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HealthMonitor {
    /// UUID.
    pub id: String,
    /// `TCP`, `HTTP`, `PING`...
    #[serde(rename = "type", default, deserialize_with = "crate::null_default")]
    pub monitor_type: String,
    /// Seconds between probes.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub delay: u32,
    /// Probe timeout, seconds.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub timeout: u32,
    /// Failures before a member is down.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub max_retries: u32,
    /// Its pools.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub pools: Vec<IdRef>,
    /// Provisioning status.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub provisioning_status: String,
    /// Operating status.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub operating_status: String,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Body of `POST /v2/lbaas/healthmonitors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HealthMonitorCreate {
    /// Pool.
    pub pool_id: String,
    /// Type.
    #[serde(rename = "type")]
    pub monitor_type: String,
    /// Seconds between probes.
    pub delay: u32,
    /// Probe timeout.
    pub timeout: u32,
    /// Failures before down.
    pub max_retries: u32,
}

/// Body of `PUT /v2/lbaas/loadbalancers/{id}`: only the fields that are set change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LoadBalancerUpdate {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Administrative state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    /// Tags (replaces the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// Body of `PUT /v2/lbaas/listeners/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ListenerUpdate {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Administrative state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    /// `Some(None)` sends `null`: detach the default pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_pool_id: Option<Option<String>>,
    /// Allowed source CIDRs (replaces the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_cidrs: Option<Vec<String>>,
    /// Connection limit (`-1`: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<i64>,
    /// Tags (replaces the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Client inactivity timeout (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_client_data: Option<u64>,
    /// Member inactivity timeout (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_member_data: Option<u64>,
}

/// Body of `PUT /v2/lbaas/pools/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PoolUpdate {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Administrative state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    /// Algorithm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lb_algorithm: Option<String>,
    /// Tags (replaces the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// Body of `PUT /v2/lbaas/pools/{pool_id}/members/{id}` (address and port
/// are fixed once created).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MemberUpdate {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Administrative state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    /// Weight (0: no new connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Backup member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<bool>,
}

/// Body of `PUT /v2/lbaas/healthmonitors/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HealthMonitorUpdate {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Administrative state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    /// Seconds between probes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<u32>,
    /// Probe timeout, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// Failures before a member is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_octavia_objects() {
        // shape of Octavia 11's answer to a load balancer create
        let lb: LoadBalancer = serde_json::from_value(json!({"id": "lb1", "name": "svc", "description": "",
            "provisioning_status": "PENDING_CREATE", "operating_status": "OFFLINE", "admin_state_up": true,
            "project_id": "p1", "tenant_id": "p1", "created_at": "2026-11-22T11:00:00", "updated_at": null,
            "vip_address": "10.0.0.9", "vip_port_id": "vp", "vip_subnet_id": "s1", "vip_network_id": "n1",
            "vip_qos_policy_id": null, "listeners": [], "pools": [], "provider": "amphora", "flavor_id": null,
            "availability_zone": null, "tags": ["kuryr"], "additional_vips": []}))
        .unwrap();
        assert_eq!(lb.provisioning_status, "PENDING_CREATE");
        assert_eq!(lb.vip_port_id, "vp");
        assert!(lb.extra.contains_key("flavor_id"));
        let m: Member = serde_json::from_value(
            json!({"id": "m1", "address": "10.0.0.20", "protocol_port": 8080,
            "subnet_id": "s1", "weight": 1, "admin_state_up": true, "provisioning_status": "ACTIVE",
            "operating_status": "NO_MONITOR", "backup": false, "monitor_address": null}),
        )
        .unwrap();
        assert_eq!(m.protocol_port, 8080);
        let hm = HealthMonitorCreate {
            pool_id: "p".into(),
            monitor_type: "TCP".into(),
            delay: 5,
            timeout: 3,
            max_retries: 3,
        };
        assert_eq!(serde_json::to_value(&hm).unwrap()["type"], "TCP");
        let c = MemberCreate {
            address: "10.0.0.21".into(),
            protocol_port: 80,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"address": "10.0.0.21", "protocol_port": 80})
        );
    }

    #[test]
    fn parses_listeners_pools_and_health_monitors() {
        // shapes of Octavia 11's answers (noop provider), ids shortened
        let l: Listener = serde_json::from_value(json!({"id": "l1", "name": "svc:TCP:80",
            "description": "", "provisioning_status": "PENDING_CREATE", "operating_status": "OFFLINE",
            "admin_state_up": true, "protocol": "TCP", "protocol_port": 80, "connection_limit": -1,
            "default_tls_container_ref": null, "sni_container_refs": [], "project_id": "p1",
            "default_pool_id": null, "l7policies": [], "insert_headers": {},
            "loadbalancers": [{"id": "lb1"}], "timeout_client_data": 50000, "allowed_cidrs": null,
            "tags": [], "alpn_protocols": null}))
        .unwrap();
        assert_eq!((l.protocol.as_str(), l.protocol_port), ("TCP", 80));
        assert_eq!(l.loadbalancers[0].id, "lb1");
        assert_eq!(l.default_pool_id, None);
        assert_eq!(l.extra["connection_limit"], -1);
        let p: Pool = serde_json::from_value(json!({"id": "po1", "name": "", "description": "",
            "provisioning_status": "ACTIVE", "operating_status": "ONLINE", "admin_state_up": true,
            "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN", "session_persistence": null,
            "healthmonitor_id": "hm1", "listeners": [{"id": "l1"}], "loadbalancers": [{"id": "lb1"}],
            "members": [{"id": "m1"}, {"id": "m2"}], "tls_enabled": false, "tags": []}))
        .unwrap();
        assert_eq!(p.members.len(), 2);
        assert_eq!(p.healthmonitor_id.as_deref(), Some("hm1"));
        let hm: HealthMonitor = serde_json::from_value(json!({"id": "hm1", "name": "",
            "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3, "max_retries_down": 3,
            "http_method": null, "url_path": null, "expected_codes": null,
            "admin_state_up": true, "pools": [{"id": "po1"}], "provisioning_status": "ACTIVE",
            "operating_status": "ONLINE", "project_id": "p1", "tags": []}))
        .unwrap();
        assert_eq!(hm.monitor_type, "TCP");
        assert_eq!(hm.operating_status, "ONLINE");
        assert!(hm.extra.contains_key("max_retries_down"));
    }

    #[test]
    fn update_bodies_send_only_what_changes() {
        let l = ListenerUpdate {
            default_pool_id: Some(None),
            connection_limit: Some(100),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            json!({"default_pool_id": null, "connection_limit": 100})
        );
        let m = MemberUpdate {
            weight: Some(0),
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(&m).unwrap(), json!({"weight": 0}));
        assert_eq!(
            serde_json::to_value(LoadBalancerUpdate::default()).unwrap(),
            json!({})
        );
    }
}
