//! Neutron v2.0: networks, subnets, subnet pools, routers, ports, security
//! groups and rules, trunks, extensions, quotas and the error body.
//!
//! Response types default every field Neutron may leave out and keep unknown
//! ones in `extra`; request types (`*Create`, `*Update`) serialise only the
//! fields that are set.

use crate::Extra;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A Neutron network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Network {
    /// UUID.
    pub id: String,
    /// Name.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub name: String,
    /// Owning project.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub project_id: String,
    /// `ACTIVE`, `DOWN`, `BUILD`, `ERROR`.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub status: String,
    /// Administrative state.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub admin_state_up: bool,
    /// Shared with all projects.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub shared: bool,
    /// MTU (extension `net-mtu`).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Ids of its subnets.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub subnets: Vec<String>,
    /// Port security default of its ports.
    #[serde(default)]
    pub port_security_enabled: Option<bool>,
    /// `provider:network_type` (flat, vlan, vxlan, geneve...).
    #[serde(rename = "provider:network_type", default)]
    pub network_type: Option<String>,
    /// `provider:physical_network`.
    #[serde(rename = "provider:physical_network", default)]
    pub physical_network: Option<String>,
    /// `provider:segmentation_id`.
    #[serde(rename = "provider:segmentation_id", default)]
    pub segmentation_id: Option<u32>,
    /// Tags.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub tags: Vec<String>,
    /// Everything else Neutron sent.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Body of `POST /v2.0/networks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NetworkCreate {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Project (admin only when not the caller's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Administrative state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    /// MTU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Port security default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_security_enabled: Option<bool>,
    /// Shared with all projects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    /// `provider:network_type` (admin).
    #[serde(
        rename = "provider:network_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub network_type: Option<String>,
    /// `provider:physical_network` (admin).
    #[serde(
        rename = "provider:physical_network",
        skip_serializing_if = "Option::is_none"
    )]
    pub physical_network: Option<String>,
    /// `provider:segmentation_id` (admin).
    #[serde(
        rename = "provider:segmentation_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub segmentation_id: Option<u32>,
}

/// An address range of a subnet's allocation pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationPool {
    /// First address.
    pub start: String,
    /// Last address.
    pub end: String,
}

/// How many addresses a network and each of its subnets have and use
/// (`network-ip-availabilities`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkIpAvailability {
    /// The network.
    pub network_id: String,
    /// Addresses of its subnets' allocation pools.
    #[serde(default)]
    pub total_ips: u64,
    /// Addresses allocated to ports.
    #[serde(default)]
    pub used_ips: u64,
    /// The same per subnet.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub subnet_ip_availability: Vec<SubnetIpAvailability>,
}

/// How many addresses one subnet has and uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SubnetIpAvailability {
    /// The subnet.
    pub subnet_id: String,
    /// 4 or 6.
    #[serde(default)]
    pub ip_version: u8,
    /// Addresses of its allocation pools (a huge IPv6 pool is capped by
    /// Neutron).
    #[serde(default)]
    pub total_ips: u64,
    /// Addresses allocated to ports.
    #[serde(default)]
    pub used_ips: u64,
}

/// A static route handed to the subnet's ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    /// Destination CIDR.
    pub destination: String,
    /// Next hop address.
    pub nexthop: String,
}

/// A Neutron subnet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Subnet {
    /// UUID.
    pub id: String,
    /// Name.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub name: String,
    /// Network it belongs to.
    pub network_id: String,
    /// Owning project.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub project_id: String,
    /// 4 or 6.
    pub ip_version: u8,
    /// CIDR.
    pub cidr: String,
    /// Gateway address; `None` = no gateway.
    #[serde(default)]
    pub gateway_ip: Option<String>,
    /// DHCP enabled.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub enable_dhcp: bool,
    /// Allocation pools.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub allocation_pools: Vec<AllocationPool>,
    /// Host routes.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub host_routes: Vec<HostRoute>,
    /// DNS servers.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub dns_nameservers: Vec<String>,
    /// IPv6 router advertisement mode (`slaac`, `dhcpv6-stateful`, `dhcpv6-stateless`).
    #[serde(default)]
    pub ipv6_ra_mode: Option<String>,
    /// IPv6 address mode.
    #[serde(default)]
    pub ipv6_address_mode: Option<String>,
    /// Subnet pool it was allocated from.
    #[serde(default)]
    pub subnetpool_id: Option<String>,
    /// Tags.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub tags: Vec<String>,
    /// Everything else Neutron sent.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Body of `POST /v2.0/subnets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SubnetCreate {
    /// Network.
    pub network_id: String,
    /// 4 or 6.
    pub ip_version: u8,
    /// CIDR (leave out to take a prefix from `subnetpool_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// `Some(None)` sends `null`: a subnet without gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_ip: Option<Option<String>>,
    /// DHCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_dhcp: Option<bool>,
    /// Allocation pools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocation_pools: Option<Vec<AllocationPool>>,
    /// Host routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_routes: Option<Vec<HostRoute>>,
    /// DNS servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_nameservers: Option<Vec<String>>,
    /// IPv6 RA mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_ra_mode: Option<String>,
    /// IPv6 address mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_address_mode: Option<String>,
    /// Take the CIDR from this pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnetpool_id: Option<String>,
    /// Prefix length to take from the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefixlen: Option<u8>,
}

/// A subnet pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SubnetPool {
    /// UUID.
    pub id: String,
    /// Name.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub name: String,
    /// Prefixes subnets are carved from.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub prefixes: Vec<String>,
    /// Default prefix length.
    #[serde(default, deserialize_with = "de_opt_u8")]
    pub default_prefixlen: Option<u8>,
    /// 4 or 6.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub ip_version: u8,
    /// Owning project.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub project_id: String,
    /// Tags.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub tags: Vec<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Body of `POST /v2.0/subnetpools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SubnetPoolCreate {
    /// Name.
    pub name: String,
    /// Prefixes.
    pub prefixes: Vec<String>,
    /// Default prefix length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_prefixlen: Option<u8>,
    /// Project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Usable by every project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
}

/// Neutron sends some integers as strings in older releases.
fn de_opt_u8<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    use serde::de::Error;
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u8::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("prefix length out of range: {n}"))),
        Some(Value::String(s)) => s.parse().map(Some).map_err(D::Error::custom),
        Some(other) => Err(D::Error::custom(format!("not a prefix length: {other}"))),
    }
}

/// A router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Router {
    /// UUID.
    pub id: String,
    /// Name.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub name: String,
    /// Status.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub status: String,
    /// Owning project.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub project_id: String,
    /// External gateway, as Neutron sent it.
    #[serde(default)]
    pub external_gateway_info: Option<Value>,
    /// Tags.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub tags: Vec<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Body of `POST /v2.0/routers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RouterCreate {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// External gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_gateway_info: Option<Value>,
}

/// Body and answer of `PUT /v2.0/routers/{id}/add_router_interface` (and remove).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RouterInterface {
    /// Attach by subnet (Neutron makes the port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Attach an existing port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_id: Option<String>,
}

/// An address of a port: subnet and IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FixedIp {
    /// Subnet (in a request: pick any address of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Address (in a request: ask for this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

/// An extra IP (and MAC) a port may send from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPair {
    /// IP or CIDR.
    pub ip_address: String,
    /// MAC (default: the port's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

/// The trunk a port is the parent of (`trunk_details`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrunkDetails {
    /// Trunk id.
    pub trunk_id: String,
    /// Its subports (with `mac_address`).
    #[serde(default, deserialize_with = "crate::null_default")]
    pub sub_ports: Vec<Value>,
}

/// A Neutron port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Port {
    /// UUID.
    pub id: String,
    /// Name.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub name: String,
    /// Network.
    pub network_id: String,
    /// Description.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub description: String,
    /// Owning project.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub project_id: String,
    /// MAC address.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub mac_address: String,
    /// Administrative state.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub admin_state_up: bool,
    /// `ACTIVE`, `DOWN`, `BUILD`, `ERROR`.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub status: String,
    /// Owner id (VM uuid, pod uid...), `""` when free.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub device_id: String,
    /// Owner kind (`compute:kuryr`, `trunk:subport`, `network:router_interface`...).
    #[serde(default, deserialize_with = "crate::null_default")]
    pub device_owner: String,
    /// Addresses.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub fixed_ips: Vec<FixedIp>,
    /// Allowed address pairs.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub allowed_address_pairs: Vec<AddressPair>,
    /// Security group ids.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub security_groups: Vec<String>,
    /// Port security (anti-spoofing and security groups).
    #[serde(default)]
    pub port_security_enabled: Option<bool>,
    /// `binding:host_id`: the host the port is bound to.
    #[serde(
        rename = "binding:host_id",
        default,
        deserialize_with = "crate::null_default"
    )]
    pub binding_host_id: String,
    /// `binding:profile`.
    #[serde(rename = "binding:profile", default)]
    pub binding_profile: Option<Value>,
    /// `binding:vif_type` (`ovs`, `unbound`, `binding_failed`...).
    #[serde(rename = "binding:vif_type", default)]
    pub binding_vif_type: Option<String>,
    /// `binding:vif_details`.
    #[serde(rename = "binding:vif_details", default)]
    pub binding_vif_details: Option<Value>,
    /// `binding:vnic_type` (`normal`, `direct`...).
    #[serde(rename = "binding:vnic_type", default)]
    pub binding_vnic_type: Option<String>,
    /// Trunk of which this port is the parent.
    #[serde(default)]
    pub trunk_details: Option<TrunkDetails>,
    /// Tags.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub tags: Vec<String>,
    /// Revision, bumped on every change.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub revision_number: u64,
    /// Everything else Neutron sent.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Port {
    /// The first fixed IP address, if any.
    pub fn first_ip(&self) -> Option<&str> {
        self.fixed_ips.iter().find_map(|f| f.ip_address.as_deref())
    }
}

/// Body of `POST /v2.0/ports` (one of the list in a bulk create).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PortCreate {
    /// Network.
    pub network_id: String,
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Project (admin only when not the caller's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Administrative state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    /// MAC to use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// Requested addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_ips: Option<Vec<FixedIp>>,
    /// Owner id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Owner kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_owner: Option<String>,
    /// Security groups (default: the project's `default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<String>>,
    /// Port security.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_security_enabled: Option<bool>,
    /// Allowed address pairs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_address_pairs: Option<Vec<AddressPair>>,
    /// `binding:host_id`.
    #[serde(rename = "binding:host_id", skip_serializing_if = "Option::is_none")]
    pub binding_host_id: Option<String>,
    /// `binding:profile`.
    #[serde(rename = "binding:profile", skip_serializing_if = "Option::is_none")]
    pub binding_profile: Option<Value>,
    /// `binding:vnic_type`.
    #[serde(rename = "binding:vnic_type", skip_serializing_if = "Option::is_none")]
    pub binding_vnic_type: Option<String>,
    /// Tags set in the same call (extension `tag-ports-during-bulk-creation`),
    /// so no port exists untagged even for a moment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

/// Body of `PUT /v2.0/ports/{id}`: only the fields that are set change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PortUpdate {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Administrative state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    /// Addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_ips: Option<Vec<FixedIp>>,
    /// Owner id (`""` frees the port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Owner kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_owner: Option<String>,
    /// Security groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<String>>,
    /// Port security.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_security_enabled: Option<bool>,
    /// Allowed address pairs (replaces the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_address_pairs: Option<Vec<AddressPair>>,
    /// `binding:host_id` (`""` unbinds).
    #[serde(rename = "binding:host_id", skip_serializing_if = "Option::is_none")]
    pub binding_host_id: Option<String>,
    /// `binding:profile`.
    #[serde(rename = "binding:profile", skip_serializing_if = "Option::is_none")]
    pub binding_profile: Option<Value>,
}

/// A security group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SecurityGroup {
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
    /// Stateful (conntrack) or not.
    #[serde(default)]
    pub stateful: Option<bool>,
    /// Its rules.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub security_group_rules: Vec<SecurityGroupRule>,
    /// Tags.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub tags: Vec<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An RBAC policy: an object shared with a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RbacPolicy {
    /// UUID.
    pub id: String,
    /// `network`, `qos_policy`, `security_group`, `address_group`, ...
    pub object_type: String,
    /// The shared object.
    pub object_id: String,
    /// `access_as_shared` or `access_as_external`.
    pub action: String,
    /// The project it is shared with (`*`: every project).
    pub target_tenant: String,
}

/// Body of `POST /v2.0/rbac-policies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RbacPolicyCreate {
    /// Kind of the shared object.
    pub object_type: String,
    /// The shared object.
    pub object_id: String,
    /// What the project may do with it.
    pub action: String,
    /// The project it is shared with.
    pub target_tenant: String,
}

/// Body of `POST /v2.0/security-groups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SecurityGroupCreate {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Stateful.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stateful: Option<bool>,
}

/// A security group rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SecurityGroupRule {
    /// UUID.
    pub id: String,
    /// Group it belongs to.
    pub security_group_id: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// `IPv4` or `IPv6`.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub ethertype: String,
    /// Protocol name or number; `None` = any.
    #[serde(default)]
    pub protocol: Option<String>,
    /// First port (or ICMP type).
    #[serde(default)]
    pub port_range_min: Option<u32>,
    /// Last port (or ICMP code).
    #[serde(default)]
    pub port_range_max: Option<u32>,
    /// Remote CIDR.
    #[serde(default)]
    pub remote_ip_prefix: Option<String>,
    /// Remote group.
    #[serde(default)]
    pub remote_group_id: Option<String>,
    /// Description.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub description: String,
    /// Owning project.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub project_id: String,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Body of `POST /v2.0/security-group-rules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SecurityGroupRuleCreate {
    /// Group.
    pub security_group_id: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// `IPv4` or `IPv6`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ethertype: Option<String>,
    /// Protocol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// First port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_range_min: Option<u32>,
    /// Last port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_range_max: Option<u32>,
    /// Remote CIDR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_ip_prefix: Option<String>,
    /// Remote group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_group_id: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A subport of a trunk: a port carried on a VLAN of the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubPort {
    /// The subport's port id.
    pub port_id: String,
    /// `vlan` (or `inherit`).
    pub segmentation_type: String,
    /// VLAN id.
    pub segmentation_id: u32,
}

impl SubPort {
    /// A VLAN subport.
    pub fn vlan(port_id: impl Into<String>, vlan_id: u32) -> Self {
        Self {
            port_id: port_id.into(),
            segmentation_type: "vlan".into(),
            segmentation_id: vlan_id,
        }
    }
}

/// A trunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Trunk {
    /// UUID.
    pub id: String,
    /// Name.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub name: String,
    /// Parent port.
    pub port_id: String,
    /// `ACTIVE`, `DOWN`, `BUILD`, `DEGRADED`, `ERROR`.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub status: String,
    /// Administrative state.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub admin_state_up: bool,
    /// Owning project.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub project_id: String,
    /// Subports.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub sub_ports: Vec<SubPort>,
    /// Tags.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub tags: Vec<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Body of `POST /v2.0/trunks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrunkCreate {
    /// Parent port.
    pub port_id: String,
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Initial subports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_ports: Option<Vec<SubPort>>,
}

/// A subport to remove: only the port id counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubPortRef {
    /// Port id.
    pub port_id: String,
}

/// A Neutron agent (`GET /v2.0/agents`, admin only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Agent {
    /// ID.
    #[serde(default)]
    pub id: String,
    /// Kind, e.g. `Open vSwitch agent`, `OVN Controller agent`.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub agent_type: String,
    /// Host it runs on.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub host: String,
    /// Whether it reported recently.
    #[serde(default)]
    pub alive: bool,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An API extension (`GET /v2.0/extensions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Extension {
    /// Alias, e.g. `trunk`, `binding`, `standard-attr-tag`.
    pub alias: String,
    /// Human name.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub name: String,
    /// Description.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub description: String,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Neutron's error body: `{"NeutronError": {"type", "message", "detail"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NeutronError {
    /// Exception type, e.g. `PortNotFound`, `IpAddressGenerationFailure`, `OverQuota`.
    #[serde(rename = "type", default, deserialize_with = "crate::null_default")]
    pub error_type: String,
    /// Message for humans.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub message: String,
    /// Detail (often empty).
    #[serde(default, deserialize_with = "crate::null_default")]
    pub detail: String,
}

/// The wrapper Neutron sends errors in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeutronErrorBody {
    /// The error.
    #[serde(rename = "NeutronError")]
    pub error: NeutronError,
}

/// Body of `PUT /v2.0/networks/{id}`: only the fields that are set change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NetworkUpdate {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Administrative state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    /// MTU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Port security default of new ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_security_enabled: Option<bool>,
    /// Shared with all projects (admin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
}

/// Body of `PUT /v2.0/subnets/{id}`. Neutron refuses to change `cidr`,
/// `ip_version` and the IPv6 modes, so they are not here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SubnetUpdate {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `Some(None)` sends `null`: remove the gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_ip: Option<Option<String>>,
    /// DHCP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_dhcp: Option<bool>,
    /// Allocation pools (replaces the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocation_pools: Option<Vec<AllocationPool>>,
    /// Host routes (replaces the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_routes: Option<Vec<HostRoute>>,
    /// DNS servers (replaces the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_nameservers: Option<Vec<String>>,
}

/// Body of `PUT /v2.0/routers/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RouterUpdate {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Administrative state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    /// `Some(None)` sends `null`: clear the external gateway;
    /// `Some(Some({"network_id": ...}))` sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_gateway_info: Option<Option<Value>>,
}

/// Body of `PUT /v2.0/security-groups/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SecurityGroupUpdate {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Stateful (only while no port uses the group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stateful: Option<bool>,
}

/// Body of `PUT /v2.0/trunks/{id}` (subports change through
/// `add_subports` / `remove_subports`, not here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrunkUpdate {
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Administrative state (a disabled trunk refuses subport changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
}

/// A pagination link (`<collection>_links`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// `next` or `previous`.
    pub rel: String,
    /// URL of that page.
    pub href: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // a port as Neutron 21 answers a create with binding to an OVS agent host
    const PORT: &str = r#"{"port": {"id": "8c1d", "name": "pod", "network_id": "n1", "tenant_id": "p1",
        "mac_address": "fa:16:3e:11:22:33", "admin_state_up": true, "status": "DOWN", "device_id": "uid-1",
        "device_owner": "compute:kuryr", "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.5"}],
        "project_id": "p1", "port_security_enabled": true, "security_groups": ["sg1"],
        "binding:vnic_type": "normal", "binding:profile": {}, "binding:host_id": "node-1",
        "binding:vif_type": "ovs", "binding:vif_details": {"port_filter": true, "datapath_type": "netdev", "bridge_name": "br-int"},
        "qos_policy_id": null, "qos_network_policy_id": null, "resource_request": null, "ip_allocation": "immediate",
        "tags": ["kuryr"], "created_at": "2026-11-22T11:00:00Z", "updated_at": "2026-11-22T11:00:00Z",
        "revision_number": 2, "description": "", "allowed_address_pairs": [], "extra_dhcp_opts": []}}"#;

    #[derive(Deserialize)]
    struct PortBody {
        port: Port,
    }

    #[test]
    fn parses_a_bound_port_and_keeps_unknown_fields() {
        let p: PortBody = serde_json::from_str(PORT).unwrap();
        let p = p.port;
        assert_eq!(p.first_ip(), Some("10.0.0.5"));
        assert_eq!(p.binding_host_id, "node-1");
        assert_eq!(p.binding_vif_type.as_deref(), Some("ovs"));
        assert_eq!(
            p.binding_vif_details.as_ref().unwrap()["datapath_type"],
            "netdev"
        );
        assert_eq!(p.revision_number, 2);
        assert_eq!(p.extra["ip_allocation"], "immediate");
        assert!(p.extra.contains_key("tenant_id"));
        // and back: unknown fields survive a round trip
        let again = serde_json::to_value(&p).unwrap();
        assert_eq!(again["binding:host_id"], "node-1");
        assert_eq!(again["ip_allocation"], "immediate");
    }

    #[test]
    fn create_bodies_leave_out_unset_fields() {
        let c = PortCreate {
            network_id: "n1".into(),
            binding_host_id: Some("node-1".into()),
            tags: Some(vec!["kuryr".into()]),
            fixed_ips: Some(vec![FixedIp {
                subnet_id: Some("s1".into()),
                ip_address: None,
            }]),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"network_id": "n1", "binding:host_id": "node-1", "tags": ["kuryr"],
                   "fixed_ips": [{"subnet_id": "s1"}]})
        );
        let s = SubnetCreate {
            network_id: "n1".into(),
            ip_version: 6,
            cidr: Some("fd00::/64".into()),
            gateway_ip: Some(None),
            ipv6_address_mode: Some("slaac".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"network_id": "n1", "ip_version": 6, "cidr": "fd00::/64", "gateway_ip": null,
                   "ipv6_address_mode": "slaac"})
        );
        let u = PortUpdate {
            device_id: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(&u).unwrap(), json!({"device_id": ""}));
    }

    #[test]
    fn parses_subnets_trunks_rules_pools_and_errors() {
        let s: Subnet = serde_json::from_value(json!({"id": "s1", "network_id": "n1", "ip_version": 4,
            "cidr": "10.0.0.0/24", "gateway_ip": null, "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.254"}],
            "host_routes": [{"destination": "10.1.0.0/16", "nexthop": "10.0.0.1"}], "enable_dhcp": true,
            "ipv6_ra_mode": null, "service_types": []}))
        .unwrap();
        assert_eq!(s.gateway_ip, None);
        assert_eq!(s.allocation_pools[0].end, "10.0.0.254");
        assert_eq!(s.host_routes[0].nexthop, "10.0.0.1");
        let t: Trunk =
            serde_json::from_value(json!({"id": "t1", "port_id": "p1", "status": "ACTIVE",
            "sub_ports": [{"port_id": "p2", "segmentation_type": "vlan", "segmentation_id": 101}]}))
            .unwrap();
        assert_eq!(t.sub_ports, vec![SubPort::vlan("p2", 101)]);
        let r: SecurityGroupRule =
            serde_json::from_value(json!({"id": "r1", "security_group_id": "g",
            "direction": "ingress", "ethertype": "IPv4", "protocol": null, "port_range_min": null,
            "remote_group_id": "g"}))
            .unwrap();
        assert_eq!(r.protocol, None);
        assert_eq!(r.remote_group_id.as_deref(), Some("g"));
        let p: SubnetPool = serde_json::from_value(json!({"id": "sp", "prefixes": ["10.0.0.0/8"],
            "default_prefixlen": "24", "ip_version": 4}))
        .unwrap();
        assert_eq!(p.default_prefixlen, Some(24));
        let e: NeutronErrorBody = serde_json::from_str(
            r#"{"NeutronError": {"type": "IpAddressGenerationFailure", "message": "No more IP addresses available on network n1.", "detail": ""}}"#,
        )
        .unwrap();
        assert_eq!(e.error.error_type, "IpAddressGenerationFailure");
    }

    #[test]
    fn update_bodies_can_clear_a_gateway_and_change_only_what_is_set() {
        let s = SubnetUpdate {
            gateway_ip: Some(None),
            host_routes: Some(vec![]),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"gateway_ip": null, "host_routes": []})
        );
        let r = RouterUpdate {
            external_gateway_info: Some(None),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"external_gateway_info": null})
        );
        let n = NetworkUpdate {
            mtu: Some(1450),
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(&n).unwrap(), json!({"mtu": 1450}));
        assert_eq!(
            serde_json::to_value(TrunkUpdate::default()).unwrap(),
            json!({})
        );
        assert_eq!(
            serde_json::to_value(SecurityGroupUpdate {
                description: Some("pods".into()),
                ..Default::default()
            })
            .unwrap(),
            json!({"description": "pods"})
        );
    }
}

/// A floating IP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FloatingIp {
    /// UUID.
    pub id: String,
    /// The address.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub floating_ip_address: String,
    /// External network.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub floating_network_id: String,
    /// The port it is associated with, if any.
    #[serde(default)]
    pub port_id: Option<String>,
    /// The fixed address it maps to.
    #[serde(default)]
    pub fixed_ip_address: Option<String>,
    /// Owning project.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub project_id: String,
    /// Description.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub description: String,
    /// `ACTIVE`, `DOWN`.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub status: String,
    /// Tags.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub tags: Vec<String>,
    /// Everything else Neutron sent.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Body of `POST /v2.0/floatingips`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FloatingIpCreate {
    /// External network.
    pub floating_network_id: String,
    /// Subnet of the external network to take it from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Port to associate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_id: Option<String>,
    /// Project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}
