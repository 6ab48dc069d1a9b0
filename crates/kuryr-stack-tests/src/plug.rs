//! Neutron networks and ports wired the way Nova and os-vif wire a VM: a
//! port bound to the node, its MAC and addresses on the inner end of a veth
//! in a network namespace of the test's own, the outer end in `br-int` with
//! the `external_ids` the Neutron backend (OVS agent or ovn-controller)
//! looks for. Everything is removed again: the links and the namespace when
//! the [`VmPort`] is dropped, the Neutron objects by the test's [`Undo`].

use crate::env::StackEnv;
use crate::net::{Netns, OvsPort, Veth};
use crate::openstack::{Session, Undo};
use crate::{unique_name, wait_until};
use anyhow::Context;
use serde_json::{Value, json};
use std::time::Duration;

/// The `id` of the `kind` object in a Neutron or Octavia answer.
pub fn id(v: &Value, kind: &str) -> anyhow::Result<String> {
    v[kind]["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {kind}.id in {v}"))
}

/// A tenant network with one IPv4 subnet.
#[derive(Debug, Clone)]
pub struct Net {
    /// Network id.
    pub id: String,
    /// Subnet id.
    pub subnet_id: String,
    /// Subnet prefix length.
    pub prefix: u8,
    /// Gateway address (the router's interface when attached).
    pub gateway: String,
}

impl Net {
    /// Creates network and subnet `cidr` (gateway .1, DHCP on); with
    /// `router`, attaches the subnet to it. All undone by `undo`.
    pub async fn create(
        s: &Session,
        undo: &Undo,
        cidr: &str,
        router: Option<&str>,
    ) -> anyhow::Result<Self> {
        let name = unique_name("smoke-net-", 40);
        let net = s
            .post(&s.n("networks"), json!({"network": {"name": name}}))
            .await?;
        let net_id = id(&net, "network")?;
        undo.delete(s.n(&format!("networks/{net_id}")));
        let sub = s
            .post(
                &s.n("subnets"),
                json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": cidr, "name": name}}),
            )
            .await?;
        let subnet_id = id(&sub, "subnet")?;
        undo.delete(s.n(&format!("subnets/{subnet_id}")));
        if let Some(r) = router {
            s.put(
                &s.n(&format!("routers/{r}/add_router_interface")),
                json!({"subnet_id": subnet_id}),
            )
            .await?;
            undo.put(
                s.n(&format!("routers/{r}/remove_router_interface")),
                json!({"subnet_id": subnet_id}),
            );
        }
        let prefix = cidr
            .split_once('/')
            .and_then(|(_, p)| p.parse().ok())
            .with_context(|| format!("bad CIDR {cidr}"))?;
        Ok(Self {
            id: net_id,
            subnet_id,
            prefix,
            gateway: sub["subnet"]["gateway_ip"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

/// Status of a Neutron port.
pub async fn port_status(s: &Session, port_id: &str) -> anyhow::Result<String> {
    let p = s.get(&s.n(&format!("ports/{port_id}"))).await?;
    Ok(p["port"]["status"].as_str().unwrap_or_default().to_owned())
}

/// Waits (up to a minute) until the port is ACTIVE.
pub async fn wait_port_active(s: &Session, port_id: &str) -> anyhow::Result<()> {
    wait_until(
        &format!("Neutron port {port_id} ACTIVE"),
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { Ok((port_status(s, port_id).await? == "ACTIVE").then_some(())) },
    )
    .await
}

/// A Neutron port plugged like a VM's NIC. Fields drop in order: the OVS
/// port first, then the veth, then the namespace.
#[derive(Debug)]
pub struct VmPort {
    _ovs: OvsPort,
    _veth: Veth,
    /// The namespace holding the port's `eth0`.
    pub ns: Netns,
    /// Neutron port id.
    pub id: String,
    /// Its fixed IPv4 address.
    pub ip: String,
    /// Its MAC.
    pub mac: String,
}

impl VmPort {
    /// Creates a port on `net` bound to the stack's node (with the given
    /// security groups, or the project's default group when `None`) and
    /// plugs it; does not wait for ACTIVE.
    pub async fn plug(
        s: &Session,
        undo: &Undo,
        env: &StackEnv,
        net: &Net,
        security_groups: Option<&[&str]>,
    ) -> anyhow::Result<Self> {
        let host = env.get("KURYR_STACK_AGENT_HOST")?;
        let device = unique_name("smoke-vm-", 36);
        let mut body = json!({"port": {"network_id": net.id, "name": device,
            "binding:host_id": host, "device_owner": "compute:kuryr", "device_id": device}});
        if let Some(sgs) = security_groups {
            body["port"]["security_groups"] = json!(sgs);
        }
        let p = s.post(&s.n("ports"), body).await?;
        let port_id = id(&p, "port")?;
        undo.delete(s.n(&format!("ports/{port_id}")));
        anyhow::ensure!(
            p["port"]["binding:vif_type"] == "ovs",
            "port not bound to {host}: {p}"
        );
        let mac = p["port"]["mac_address"]
            .as_str()
            .context("mac_address")?
            .to_owned();
        let ip = p["port"]["fixed_ips"][0]["ip_address"]
            .as_str()
            .context("fixed_ips")?
            .to_owned();
        Self::attach(env, &port_id, &mac, &ip, net.prefix, &net.gateway, &device)
    }

    /// Plugs existing port `port_id` (bound to the stack's node, with `mac`
    /// and address `ip`/`prefix`) into a namespace of its own, as os-vif
    /// would plug a VM's or a pod's NIC; `gateway` (if not empty) is the
    /// default route; `device` names the instance in the OVS port's
    /// `vm-uuid`.
    pub fn attach(
        env: &StackEnv,
        port_id: &str,
        mac: &str,
        ip: &str,
        prefix: u8,
        gateway: &str,
        device: &str,
    ) -> anyhow::Result<Self> {
        let ns = Netns::new("kst-vm-")?;
        let veth = Veth::new(&ns, "eth0")?;
        ns.ip(&["link", "set", "eth0", "address", mac])?;
        ns.ip(&["addr", "add", &format!("{ip}/{prefix}"), "dev", "eth0"])?;
        if !gateway.is_empty() {
            ns.ip(&["route", "add", "default", "via", gateway])?;
        }
        let ovs = OvsPort::add(
            env.get("OVSDB_SOCK")?,
            "br-int",
            &veth.host,
            &[
                ("iface-id", port_id),
                ("attached-mac", mac),
                ("iface-status", "active"),
                ("vm-uuid", device),
            ],
        )?;
        Ok(Self {
            _ovs: ovs,
            _veth: veth,
            ns,
            id: port_id.to_owned(),
            ip: ip.to_owned(),
            mac: mac.to_owned(),
        })
    }

    /// `ping -c 1` from this port's namespace: whether an answer came.
    pub fn pings(&self, dst: &str) -> bool {
        self.ns
            .exec(&["ping", "-c", "1", "-W", "2", dst])
            .is_ok_and(|o| o.contains("1 received") || o.contains("1 packets received"))
    }
}

/// Creates a security group with the given rules (Neutron rule bodies
/// without `security_group_id`); undone by `undo`.
pub async fn security_group(s: &Session, undo: &Undo, rules: &[Value]) -> anyhow::Result<String> {
    let sg = s
        .post(
            &s.n("security-groups"),
            json!({"security_group": {"name": unique_name("smoke-sg-", 40)}}),
        )
        .await?;
    let sg_id = id(&sg, "security_group")?;
    undo.delete(s.n(&format!("security-groups/{sg_id}")));
    // a new group allows all egress (both families); ingress only as given
    for r in rules {
        let mut r = r.clone();
        r["security_group_id"] = json!(sg_id);
        s.post(
            &s.n("security-group-rules"),
            json!({"security_group_rule": r}),
        )
        .await?;
    }
    Ok(sg_id)
}
