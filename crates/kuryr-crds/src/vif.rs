//! The VIF of a pod as kuryr-kubernetes stores it in a KuryrPort: an os-vif
//! object serialised as an oslo versioned-object primitive
//! (`{"versioned_object.name": ..., "versioned_object.data": {...}}`, lists
//! as objects holding `objects`). [`Vif`] is the typed form; its serde
//! implementation reads and writes the primitive.

use kuryr_openstack_types::neutron::{Network, Port, Subnet};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

/// Namespace of every object kuryr-kubernetes wrote (its own VIF classes
/// inherit os-vif's).
pub const OVO_NAMESPACE: &str = "os_vif";

/// How the daemon binds the VIF, with what that needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VifKind {
    /// `VIFOpenVSwitch` (side-by-side): a veth whose host end is a port of
    /// `bridge_name` (br-int) with the Neutron port's external_ids.
    OpenVSwitch {
        /// OVS bridge.
        bridge_name: String,
    },
    /// `VIFBridge`: hybrid plug, a Linux bridge between the veth and OVS
    /// (for iptables-based security groups).
    Bridge {
        /// Linux bridge (`qbr` + port id).
        bridge_name: String,
    },
    /// `VIFVlanNested`: a VLAN subinterface of the node VM's NIC; the port is
    /// a subport of the VM's trunk on this VLAN.
    VlanNested {
        /// VLAN id of the subport.
        vlan_id: u16,
    },
    /// `VIFMacvlanNested`: a macvlan of the node VM's NIC; the port's address
    /// is an allowed address pair of the VM's port.
    MacvlanNested,
}

impl VifKind {
    /// What Neutron's binding of a side-by-side `port` asks the node to
    /// plug, read from `binding:vif_details` as kuryr-kubernetes' os-vif
    /// utilities did: `ovs_hybrid_plug` (the iptables_hybrid firewall of
    /// ML2/OVS) is a `VIFBridge` on Linux bridge `qbr` + the port id's
    /// first 11 characters, between the pod and OVS, where that firewall
    /// filters; anything else a `VIFOpenVSwitch`. The OVS bridge is the
    /// details' `bridge_name` (a trunk's bridge, or the agent's integration
    /// bridge), else `ovs_bridge` (`[neutron_defaults] ovs_bridge`).
    /// Answers the kind and that OVS bridge (the VIF network's `bridge`).
    pub fn from_binding(port: &Port, ovs_bridge: &str) -> (VifKind, String) {
        let details = port.binding_vif_details.as_ref();
        let bridge = details
            .and_then(|d| d.get("bridge_name"))
            .and_then(Value::as_str)
            .filter(|b| !b.is_empty())
            .unwrap_or(ovs_bridge)
            .to_owned();
        let hybrid = details
            .and_then(|d| d.get("ovs_hybrid_plug"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let kind = if hybrid {
            VifKind::Bridge {
                bridge_name: hybrid_bridge_name(&port.id),
            }
        } else {
            VifKind::OpenVSwitch {
                bridge_name: bridge.clone(),
            }
        };
        (kind, bridge)
    }

    /// The os-vif class name.
    pub fn ovo_name(&self) -> &'static str {
        match self {
            VifKind::OpenVSwitch { .. } => "VIFOpenVSwitch",
            VifKind::Bridge { .. } => "VIFBridge",
            VifKind::VlanNested { .. } => "VIFVlanNested",
            VifKind::MacvlanNested => "VIFMacvlanNested",
        }
    }
}

/// A route of a subnet (Neutron host route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifRoute {
    /// Destination.
    pub cidr: String,
    /// Next hop.
    pub gateway: String,
}

/// A subnet of the VIF's network with the port's addresses in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifSubnet {
    /// CIDR.
    pub cidr: String,
    /// Gateway, if the subnet has one.
    pub gateway: Option<String>,
    /// DNS servers.
    pub dns: Vec<String>,
    /// The port's addresses in this subnet.
    pub ips: Vec<String>,
    /// Host routes.
    pub routes: Vec<VifRoute>,
}

/// The network of a VIF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifNetwork {
    /// Neutron network id.
    pub id: String,
    /// Network name.
    pub label: String,
    /// Bridge the VIF is plugged into, if any.
    pub bridge: Option<String>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Subnets holding the port's addresses.
    pub subnets: Vec<VifSubnet>,
}

/// A pod's virtual interface: what the daemon needs to bind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vif {
    /// Neutron port id.
    pub id: String,
    /// MAC address.
    pub address: String,
    /// Network, subnets, addresses.
    pub network: VifNetwork,
    /// os-vif plugin (`ovs`, `noop`).
    pub plugin: String,
    /// The port is ACTIVE in Neutron.
    pub active: bool,
    /// Keep the host device on unplug.
    pub preserve_on_delete: bool,
    /// Neutron filters the port's traffic (security groups in OVS).
    pub has_traffic_filtering: bool,
    /// Name of the host-side device (`tap` + port id, 14 characters).
    pub vif_name: String,
    /// Binding kind and its parameters.
    pub kind: VifKind,
}

/// Host device name for a port, as kuryr names it: `tap` + the id, 14 characters.
pub fn vif_name(port_id: &str) -> String {
    format!("tap{port_id}").chars().take(14).collect()
}

/// The Linux bridge of a hybrid-plugged port (`qbr` + 11 characters of
/// its id), as Nova and os-vif name it.
pub fn hybrid_bridge_name(port_id: &str) -> String {
    format!("qbr{port_id}").chars().take(14).collect()
}

/// A VIF primitive that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("VIF object: {0}")]
pub struct VifError(String);

impl Vif {
    /// The VIF of a Neutron `port` on `network`, with `subnets` (those of the
    /// network; only the ones holding the port's addresses are kept).
    pub fn from_port(port: &Port, network: &Network, subnets: &[Subnet], kind: VifKind) -> Self {
        // the network's bridge is the OVS bridge in both cases (a hybrid
        // plug's Linux bridge is the VIF's own `bridge_name`)
        let bridge = match &kind {
            VifKind::OpenVSwitch { bridge_name } => Some(bridge_name.clone()),
            VifKind::Bridge { .. } => Some(VifKind::from_binding(port, "br-int").1),
            _ => None,
        };
        let subnets = subnets
            .iter()
            .filter_map(|s| {
                let ips: Vec<String> = port
                    .fixed_ips
                    .iter()
                    .filter(|f| f.subnet_id.as_deref() == Some(s.id.as_str()))
                    .filter_map(|f| f.ip_address.clone())
                    .collect();
                (!ips.is_empty()).then(|| VifSubnet {
                    cidr: s.cidr.clone(),
                    gateway: s.gateway_ip.clone(),
                    dns: s.dns_nameservers.clone(),
                    ips,
                    routes: s
                        .host_routes
                        .iter()
                        .map(|r| VifRoute {
                            cidr: r.destination.clone(),
                            gateway: r.nexthop.clone(),
                        })
                        .collect(),
                })
            })
            .collect();
        let details = port.binding_vif_details.as_ref();
        Self {
            id: port.id.clone(),
            address: port.mac_address.clone(),
            network: VifNetwork {
                id: network.id.clone(),
                label: network.name.clone(),
                bridge,
                mtu: network.mtu,
                subnets,
            },
            plugin: match kind {
                VifKind::OpenVSwitch { .. } | VifKind::Bridge { .. } => "ovs".into(),
                _ => "noop".into(),
            },
            active: port.status == "ACTIVE",
            preserve_on_delete: false,
            has_traffic_filtering: details
                .and_then(|d| d["port_filter"].as_bool())
                .unwrap_or(false),
            vif_name: vif_name(&port.id),
            kind,
        }
    }

    /// The oslo versioned-object primitive kuryr-kubernetes stores.
    pub fn to_primitive(&self) -> Value {
        let mut data = json!({
            "id": self.id,
            "address": self.address,
            "network": self.network.to_primitive(),
            "plugin": self.plugin,
            "active": self.active,
            "preserve_on_delete": self.preserve_on_delete,
            "has_traffic_filtering": self.has_traffic_filtering,
            "vif_name": self.vif_name,
        });
        match &self.kind {
            VifKind::OpenVSwitch { bridge_name } | VifKind::Bridge { bridge_name } => {
                data["bridge_name"] = json!(bridge_name);
                data["port_profile"] = ovo(
                    "VIFPortProfileOpenVSwitch",
                    "1.0",
                    json!({"interface_id": self.id}),
                );
            }
            VifKind::VlanNested { vlan_id } => data["vlan_id"] = json!(vlan_id),
            VifKind::MacvlanNested => {}
        }
        ovo(self.kind.ovo_name(), "1.0", data)
    }

    /// Reads a primitive (ours or kuryr-kubernetes's).
    pub fn from_primitive(v: &Value) -> Result<Self, VifError> {
        let (name, d) = unwrap_ovo(v)?;
        let s = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_owned);
        let b = |k: &str, def: bool| d.get(k).and_then(Value::as_bool).unwrap_or(def);
        let kind = match name.as_str() {
            "VIFOpenVSwitch" => VifKind::OpenVSwitch {
                bridge_name: s("bridge_name").unwrap_or_default(),
            },
            "VIFBridge" => VifKind::Bridge {
                bridge_name: s("bridge_name").unwrap_or_default(),
            },
            "VIFVlanNested" => VifKind::VlanNested {
                vlan_id: d
                    .get("vlan_id")
                    .and_then(Value::as_u64)
                    .and_then(|v| u16::try_from(v).ok())
                    .ok_or_else(|| VifError("VIFVlanNested without a valid vlan_id".into()))?,
            },
            "VIFMacvlanNested" => VifKind::MacvlanNested,
            other => return Err(VifError(format!("unsupported VIF type {other}"))),
        };
        let id = s("id").ok_or_else(|| VifError(format!("{name} without id")))?;
        Ok(Self {
            address: s("address").unwrap_or_default(),
            network: match d.get("network") {
                Some(n) if !n.is_null() => VifNetwork::from_primitive(n)?,
                _ => return Err(VifError(format!("{name} {id} without network"))),
            },
            plugin: s("plugin").unwrap_or_default(),
            active: b("active", true),
            preserve_on_delete: b("preserve_on_delete", false),
            has_traffic_filtering: b("has_traffic_filtering", false),
            vif_name: s("vif_name").unwrap_or_else(|| vif_name(&id)),
            id,
            kind,
        })
    }
}

impl VifNetwork {
    fn to_primitive(&self) -> Value {
        let subnets: Vec<Value> = self.subnets.iter().map(VifSubnet::to_primitive).collect();
        let mut data = json!({
            "id": self.id,
            "label": self.label,
            "subnets": ovo("SubnetList", "1.0", json!({"objects": subnets})),
            "multi_host": false,
            "should_provide_bridge": false,
            "should_provide_vlan": false,
        });
        if let Some(b) = &self.bridge {
            data["bridge"] = json!(b);
        }
        if let Some(m) = self.mtu {
            data["mtu"] = json!(m);
        }
        ovo("Network", "1.1", data)
    }

    fn from_primitive(v: &Value) -> Result<Self, VifError> {
        let (_, d) = unwrap_ovo(v)?;
        let subnets = match d.get("subnets") {
            Some(l) if !l.is_null() => list_objects(l)?
                .iter()
                .map(VifSubnet::from_primitive)
                .collect::<Result<_, _>>()?,
            _ => Vec::new(),
        };
        Ok(Self {
            id: d
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            label: d
                .get("label")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            bridge: d.get("bridge").and_then(Value::as_str).map(str::to_owned),
            mtu: d
                .get("mtu")
                .and_then(Value::as_u64)
                .and_then(|m| u32::try_from(m).ok()),
            subnets,
        })
    }
}

impl VifSubnet {
    fn to_primitive(&self) -> Value {
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| ovo("FixedIP", "1.0", json!({"address": ip, "floating_ips": []})))
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                ovo(
                    "Route",
                    "1.0",
                    json!({"cidr": r.cidr, "gateway": r.gateway}),
                )
            })
            .collect();
        let mut data = json!({
            "cidr": self.cidr,
            "dns": self.dns,
            "ips": ovo("FixedIPList", "1.0", json!({"objects": ips})),
            "routes": ovo("RouteList", "1.0", json!({"objects": routes})),
        });
        if let Some(g) = &self.gateway {
            data["gateway"] = json!(g);
        }
        ovo("Subnet", "1.0", data)
    }

    fn from_primitive(v: &Value) -> Result<Self, VifError> {
        let (_, d) = unwrap_ovo(v)?;
        let addr_of = |o: &Value, k: &str| -> Option<String> {
            unwrap_ovo(o)
                .ok()
                .and_then(|(_, d)| d.get(k).and_then(Value::as_str).map(str::to_owned))
        };
        let ips = match d.get("ips") {
            Some(l) if !l.is_null() => list_objects(l)?
                .iter()
                .filter_map(|o| addr_of(o, "address"))
                .collect(),
            _ => Vec::new(),
        };
        let routes = match d.get("routes") {
            Some(l) if !l.is_null() => list_objects(l)?
                .iter()
                .filter_map(|o| {
                    Some(VifRoute {
                        cidr: addr_of(o, "cidr")?,
                        gateway: addr_of(o, "gateway")?,
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            cidr: d
                .get("cidr")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            gateway: d.get("gateway").and_then(Value::as_str).map(str::to_owned),
            dns: d
                .get("dns")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            ips,
            routes,
        })
    }
}

/// An oslo versioned object: name, namespace, version, data, and every
/// data field listed as changed (as a freshly built Python object has).
fn ovo(name: &str, version: &str, data: Value) -> Value {
    let changes: Vec<String> = data
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    json!({
        "versioned_object.name": name,
        "versioned_object.namespace": OVO_NAMESPACE,
        "versioned_object.version": version,
        "versioned_object.data": data,
        "versioned_object.changes": changes,
    })
}

fn unwrap_ovo(v: &Value) -> Result<(String, &Map<String, Value>), VifError> {
    let name = v
        .get("versioned_object.name")
        .and_then(Value::as_str)
        .ok_or_else(|| VifError("not a versioned object (no versioned_object.name)".into()))?;
    let data = v
        .get("versioned_object.data")
        .and_then(Value::as_object)
        .ok_or_else(|| VifError(format!("{name} without versioned_object.data")))?;
    Ok((name.to_owned(), data))
}

/// The `objects` of a list object (or a plain JSON list).
fn list_objects(v: &Value) -> Result<Vec<Value>, VifError> {
    if let Some(a) = v.as_array() {
        return Ok(a.clone());
    }
    let (name, d) = unwrap_ovo(v)?;
    d.get("objects")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| VifError(format!("{name} without objects")))
}

impl Serialize for Vif {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_primitive().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Vif {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Vif::from_primitive(&v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuryr_openstack_types::neutron::{FixedIp, HostRoute};

    fn port() -> (Port, Network, Vec<Subnet>) {
        let port = Port {
            id: "8c1d5a7e-0000-4000-8000-000000000001".into(),
            network_id: "n1".into(),
            mac_address: "fa:16:3e:11:22:33".into(),
            status: "ACTIVE".into(),
            fixed_ips: vec![
                FixedIp {
                    subnet_id: Some("s4".into()),
                    ip_address: Some("10.0.0.5".into()),
                },
                FixedIp {
                    subnet_id: Some("s6".into()),
                    ip_address: Some("fd00::5".into()),
                },
            ],
            binding_vif_details: Some(json!({"port_filter": true, "bridge_name": "br-int"})),
            ..Default::default()
        };
        let net = Network {
            id: "n1".into(),
            name: "pods".into(),
            mtu: Some(1450),
            ..Default::default()
        };
        let subnets = vec![
            Subnet {
                id: "s4".into(),
                network_id: "n1".into(),
                ip_version: 4,
                cidr: "10.0.0.0/24".into(),
                gateway_ip: Some("10.0.0.1".into()),
                host_routes: vec![HostRoute {
                    destination: "10.1.0.0/16".into(),
                    nexthop: "10.0.0.254".into(),
                }],
                dns_nameservers: vec!["10.0.0.2".into()],
                ..Default::default()
            },
            Subnet {
                id: "s6".into(),
                network_id: "n1".into(),
                ip_version: 6,
                cidr: "fd00::/64".into(),
                ..Default::default()
            },
            Subnet {
                id: "other".into(),
                network_id: "n1".into(),
                ip_version: 4,
                cidr: "10.9.0.0/24".into(),
                ..Default::default()
            },
        ];
        (port, net, subnets)
    }

    #[test]
    fn the_binding_decides_hybrid_plug_and_the_ovs_bridge() {
        let (mut p, n, s) = port();
        // ML2/OVN, ML2/OVS with the openvswitch firewall
        p.binding_vif_details = Some(json!({"port_filter": true, "bridge_name": "br-int",
            "datapath_type": "netdev", "ovs_hybrid_plug": false}));
        let (k, b) = VifKind::from_binding(&p, "br-conf");
        assert_eq!(
            k,
            VifKind::OpenVSwitch {
                bridge_name: "br-int".into()
            }
        );
        assert_eq!(b, "br-int");
        // the iptables_hybrid firewall: a Linux bridge in between, OVS behind
        p.binding_vif_details = Some(json!({"port_filter": true, "ovs_hybrid_plug": true}));
        let (k, b) = VifKind::from_binding(&p, "br-conf");
        assert_eq!(
            k,
            VifKind::Bridge {
                bridge_name: "qbr8c1d5a7e-00".into()
            }
        );
        assert_eq!(
            b, "br-conf",
            "no bridge_name in the details: the configured one"
        );
        let v = Vif::from_port(&p, &n, &s, k);
        assert_eq!(v.network.bridge.as_deref(), Some("br-int"));
        let prim = v.to_primitive();
        assert_eq!(prim["versioned_object.name"], "VIFBridge");
        assert_eq!(
            prim["versioned_object.data"]["bridge_name"],
            "qbr8c1d5a7e-00"
        );
        // unbound or failed binding: nothing said, the configured bridge
        p.binding_vif_details = None;
        assert_eq!(
            VifKind::from_binding(&p, "br-conf").0,
            VifKind::OpenVSwitch {
                bridge_name: "br-conf".into()
            }
        );
    }

    #[test]
    fn builds_an_ovs_vif_from_a_neutron_port() {
        let (p, n, s) = port();
        let v = Vif::from_port(
            &p,
            &n,
            &s,
            VifKind::OpenVSwitch {
                bridge_name: "br-int".into(),
            },
        );
        assert_eq!(v.vif_name, "tap8c1d5a7e-00");
        assert!(v.active && v.has_traffic_filtering);
        assert_eq!(v.network.mtu, Some(1450));
        assert_eq!(
            v.network.subnets.len(),
            2,
            "only subnets holding the port's addresses"
        );
        assert_eq!(v.network.subnets[0].ips, vec!["10.0.0.5"]);
        assert_eq!(v.network.subnets[0].routes[0].gateway, "10.0.0.254");
        assert_eq!(v.network.subnets[1].gateway, None);
        assert_eq!(v.plugin, "ovs");
    }

    #[test]
    fn primitive_has_the_os_vif_shape_and_round_trips() {
        let (p, n, s) = port();
        for kind in [
            VifKind::OpenVSwitch {
                bridge_name: "br-int".into(),
            },
            VifKind::Bridge {
                bridge_name: "qbr8c1d5a7e-00".into(),
            },
            VifKind::VlanNested { vlan_id: 101 },
            VifKind::MacvlanNested,
        ] {
            let v = Vif::from_port(&p, &n, &s, kind);
            let prim = v.to_primitive();
            assert_eq!(prim["versioned_object.namespace"], "os_vif");
            let d = &prim["versioned_object.data"];
            assert_eq!(d["network"]["versioned_object.name"], "Network");
            let subnet = &d["network"]["versioned_object.data"]["subnets"]["versioned_object.data"]
                ["objects"][0];
            assert_eq!(subnet["versioned_object.name"], "Subnet");
            assert_eq!(
                subnet["versioned_object.data"]["ips"]["versioned_object.data"]["objects"][0]["versioned_object.data"]
                    ["address"],
                "10.0.0.5"
            );
            let back: Vif = serde_json::from_value(serde_json::to_value(&v).unwrap()).unwrap();
            assert_eq!(back, v);
        }
    }

    #[test]
    fn reads_a_vif_as_kuryr_kubernetes_wrote_it() {
        // trimmed from a KuryrPort of a kuryr-kubernetes installation (nested VLAN)
        let prim = json!({
          "versioned_object.data": {"active": true, "address": "fa:16:3e:aa:bb:cc", "has_traffic_filtering": false,
            "id": "2b6d2b5e-1111-4222-8333-444455556666",
            "network": {"versioned_object.data": {"id": "n1", "label": "pod-net", "mtu": 1442, "multi_host": false,
                "should_provide_bridge": false, "should_provide_vlan": false,
                "subnets": {"versioned_object.data": {"objects": [{"versioned_object.data": {"cidr": "10.128.0.0/14",
                    "dns": [], "gateway": "10.128.0.1",
                    "ips": {"versioned_object.data": {"objects": [{"versioned_object.data": {"address": "10.128.5.7", "floating_ips": []},
                        "versioned_object.name": "FixedIP", "versioned_object.namespace": "os_vif", "versioned_object.version": "1.0"}]},
                        "versioned_object.name": "FixedIPList", "versioned_object.namespace": "os_vif", "versioned_object.version": "1.0"},
                    "routes": {"versioned_object.data": {"objects": []}, "versioned_object.name": "RouteList",
                        "versioned_object.namespace": "os_vif", "versioned_object.version": "1.0"}},
                    "versioned_object.name": "Subnet", "versioned_object.namespace": "os_vif", "versioned_object.version": "1.0"}]},
                  "versioned_object.name": "SubnetList", "versioned_object.namespace": "os_vif", "versioned_object.version": "1.0"}},
              "versioned_object.name": "Network", "versioned_object.namespace": "os_vif", "versioned_object.version": "1.1"},
            "plugin": "noop", "preserve_on_delete": false, "vif_name": "tap2b6d2b5e-11", "vlan_id": 3012},
          "versioned_object.name": "VIFVlanNested", "versioned_object.namespace": "os_vif", "versioned_object.version": "1.0"});
        let v = Vif::from_primitive(&prim).unwrap();
        assert_eq!(v.kind, VifKind::VlanNested { vlan_id: 3012 });
        assert_eq!(v.network.subnets[0].ips, vec!["10.128.5.7"]);
        assert_eq!(v.network.mtu, Some(1442));
        assert_eq!(v.vif_name, "tap2b6d2b5e-11");
        let bad = Vif::from_primitive(
            &json!({"versioned_object.name": "VIFVHostUser", "versioned_object.data": {}}),
        );
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("unsupported VIF type VIFVHostUser")
        );
        assert!(Vif::from_primitive(&json!({"id": "x"})).is_err());
    }
}
