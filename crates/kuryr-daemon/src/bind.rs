//! Binding drivers: a VIF from the pod's KuryrPort made real in the pod's
//! network namespace and on the host, and undone again.
//!
//! - `VIFOpenVSwitch` (side-by-side): veth `tapXXX` ↔ pod `eth0`, `tapXXX`
//!   a port of br-int with the Neutron port's external_ids.
//! - `VIFBridge` (hybrid plug): veth `tapXXX` ↔ pod, `tapXXX` in Linux
//!   bridge `qbrXXX`, veth `qvbXXX` (in the bridge) ↔ `qvoXXX` (in br-int).
//! - `VIFMacvlanNested`: macvlan of the VM's NIC created in the pod.
//! - `VIFVlanNested`: VLAN `vlan_id` of the VM's NIC created in the pod.

use crate::link::{self, EEXIST, EOPNOTSUPP, LinkError, PodIface, PodRoute};
use crate::netns::{NetnsError, NetnsThread, open_netns};
use crate::ovsdb::{CONTAINER_KEY, NODE_KEY, Ovsdb, OvsdbError};
use crate::state::{Attachment, Driver};
use kuryr_crds::{Vif, VifKind};
use rtnetlink::Handle;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// A binding that failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Netlink.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// OVSDB.
    #[error(transparent)]
    Ovsdb(#[from] OvsdbError),
    /// The pod's namespace.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The interface name is taken in the pod by something not ours.
    #[error("interface {0} already exists in the pod's network namespace")]
    Clash(String),
    /// The VIF cannot be bound as it is.
    #[error("VIF {0}")]
    BadVif(String),
    /// The kernel cannot do it (no 8021q...).
    #[error("{0}")]
    Unsupported(String),
}

/// Name of a host device for a port: `prefix` + port id, 14 characters (os-vif's rule).
pub fn dev_name(prefix: &str, port_id: &str) -> String {
    format!("{prefix}{port_id}").chars().take(14).collect()
}

/// The driver for a VIF kind.
pub fn driver_of(vif: &Vif) -> Driver {
    match vif.kind {
        VifKind::OpenVSwitch { .. } => Driver::Ovs,
        VifKind::Bridge { .. } => Driver::Hybrid,
        VifKind::MacvlanNested => Driver::Macvlan,
        VifKind::VlanNested { .. } => Driver::Vlan,
    }
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, l) = s.split_once('/')?;
    let ip: IpAddr = a.parse().ok()?;
    let len: u8 = l.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// The pod interface a VIF asks for: MAC, MTU (`mtu_override` wins),
/// every fixed IP with its subnet's prefix length, a default route via the
/// first gateway of each family, and the subnets' host routes.
pub fn pod_iface(
    vif: &Vif,
    ifname: &str,
    mtu_override: Option<u32>,
) -> Result<PodIface, BindError> {
    let mac = link::parse_mac(&vif.address).ok_or_else(|| {
        BindError::BadVif(format!("{}: bad MAC address {:?}", vif.id, vif.address))
    })?;
    let mut addrs = Vec::new();
    let mut routes = Vec::new();
    let (mut v4_default, mut v6_default) = (false, false);
    for s in &vif.network.subnets {
        let (_, len) = parse_cidr(&s.cidr).ok_or_else(|| {
            BindError::BadVif(format!("{}: bad subnet CIDR {:?}", vif.id, s.cidr))
        })?;
        for ip in &s.ips {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| BindError::BadVif(format!("{}: bad fixed IP {ip:?}", vif.id)))?;
            addrs.push((ip, len));
        }
        if let Some(gw) = s.gateway.as_deref().and_then(|g| g.parse::<IpAddr>().ok()) {
            let seen = if gw.is_ipv4() {
                &mut v4_default
            } else {
                &mut v6_default
            };
            if !*seen && !s.ips.is_empty() {
                *seen = true;
                let any: IpAddr = if gw.is_ipv4() {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                };
                routes.push(PodRoute { dst: (any, 0), gw });
            }
        }
        for r in &s.routes {
            if let (Some(dst), Ok(gw)) = (parse_cidr(&r.cidr), r.gateway.parse::<IpAddr>()) {
                routes.push(PodRoute { dst, gw });
            }
        }
    }
    Ok(PodIface {
        name: ifname.to_owned(),
        mac,
        mtu: mtu_override.or(vif.network.mtu),
        addrs,
        routes,
    })
}

/// The host links and OVS port a driver makes for `vif`, known before
/// anything is made (recorded first, so a crash leaves nothing unknown).
pub fn planned(driver: Driver, vif: &Vif) -> (Vec<String>, Option<String>) {
    let tap = dev_name("tap", &vif.id);
    match driver {
        Driver::Ovs => (vec![tap.clone()], Some(tap)),
        Driver::Hybrid => (
            vec![tap, dev_name("qbr", &vif.id), dev_name("qvb", &vif.id)],
            Some(dev_name("qvo", &vif.id)),
        ),
        Driver::Macvlan | Driver::Vlan => (vec![], None),
    }
}

/// Temporary name of a prepared pod end in the host namespace: `kp` + port id.
pub fn prepared_name(port_id: &str) -> String {
    dev_name("kp", port_id)
}

/// The external_ids of a pod's OVS interface: what Neutron's OVS agent
/// reads (iface-id, attached-mac, iface-status, vm-uuid) and the owner.
fn ovs_ids(vif: &Vif, pod_uid: &str, container_id: &str, node: &str) -> BTreeMap<String, String> {
    [
        ("iface-id", vif.id.as_str()),
        ("attached-mac", vif.address.as_str()),
        ("iface-status", "active"),
        ("vm-uuid", pod_uid),
        (CONTAINER_KEY, container_id),
        (NODE_KEY, node),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn ovs_bridge(vif: &Vif) -> String {
    match &vif.kind {
        VifKind::OpenVSwitch { bridge_name } => bridge_name.clone(),
        _ => vif
            .network
            .bridge
            .clone()
            .unwrap_or_else(|| "br-int".into()),
    }
}

/// Plugs an OVS VIF ahead of its pod: veth `tapXXX` ↔ `kpXXX`, both in the
/// host namespace, `tapXXX` in OVS (confirmed applied). `att` is the
/// prepared record (`ifname` = the `kp` name).
pub async fn prepare(env: &PlugEnv<'_>, vif: &Vif, att: &Attachment) -> Result<(), BindError> {
    let iface = pod_iface(vif, &att.ifname, env.mtu)?;
    let tap = dev_name("tap", &vif.id);
    match link::add_veth(env.host, &tap, &att.ifname, None, iface.mac, iface.mtu).await {
        Err(e) if e.is(EEXIST) => {
            link::delete(env.host, &tap).await?;
            link::delete(env.host, &att.ifname).await?;
            link::add_veth(env.host, &tap, &att.ifname, None, iface.mac, iface.mtu).await?;
        }
        r => r?,
    }
    let ids = ovs_ids(vif, &att.pod_uid, &att.container_id, env.node);
    env.ovs.add_port(&ovs_bridge(vif), &tap, "", &ids).await?;
    env.ovs.wait_attached(&tap).await?;
    Ok(())
}

/// Hands a prepared VIF to its pod: the `kp` end moves into the pod's
/// namespace as `att.ifname` and is configured there; the OVS interface
/// changes owner. Nothing waits for ovs-vswitchd: the port is already in.
pub async fn adopt(
    env: &PlugEnv<'_>,
    vif: &Vif,
    prepared: &Attachment,
    att: &Attachment,
) -> Result<(), BindError> {
    let iface = pod_iface(vif, &att.ifname, env.mtu)?;
    let ns = open_netns(Path::new(&att.netns))?;
    let pod = env.netns.open(Path::new(&att.netns)).await?;
    if link::get(&pod.handle, &att.ifname).await?.is_some() {
        return Err(BindError::Clash(att.ifname.clone()));
    }
    link::move_into(env.host, &prepared.ifname, &ns, &att.ifname).await?;
    let tap = prepared.ovs_port.clone().unwrap_or_default();
    let ids = ovs_ids(vif, &att.pod_uid, &att.container_id, env.node);
    let (pod_done, ovs_done) = tokio::join!(
        link::configure_pod(&pod.handle, &iface),
        env.ovs.set_external_ids(&tap, &ids)
    );
    pod_done?;
    ovs_done?;
    Ok(())
}

/// What a plug needs beyond the VIF.
pub struct PlugEnv<'a> {
    /// Host netlink.
    pub host: &'a Handle,
    /// OVSDB.
    pub ovs: &'a Ovsdb,
    /// The setns thread.
    pub netns: &'a NetnsThread,
    /// The VM's NIC (nested drivers).
    pub link_iface: &'a str,
    /// `[neutron_defaults] network_device_mtu`.
    pub mtu: Option<u32>,
    /// This node's name, recorded on the OVS ports made (`kuryr-node`).
    pub node: &'a str,
}

/// Binds `vif` as `att` describes; `att.host_links` and `ovs_port` are
/// [`planned`]'s names, recorded before anything is made. `adopt`: a previous attempt of this same attachment may have left
/// links behind, which are replaced; otherwise an interface of that name in
/// the pod is a clash.
pub async fn plug(
    env: &PlugEnv<'_>,
    vif: &Vif,
    att: &Attachment,
    adopt: bool,
) -> Result<(), BindError> {
    let t0 = std::time::Instant::now();
    let iface = pod_iface(vif, &att.ifname, env.mtu)?;
    let ns = open_netns(Path::new(&att.netns))?;
    let pod = env.netns.open(Path::new(&att.netns)).await?;
    let t_ns = t0.elapsed();
    if link::get(&pod.handle, &att.ifname).await?.is_some() {
        if !adopt {
            return Err(BindError::Clash(att.ifname.clone()));
        }
        tracing::info!(container = %att.container_id, ifname = %att.ifname, "replacing an interface left by an earlier attempt");
        link::delete(&pod.handle, &att.ifname).await?;
    }
    match att.driver {
        Driver::Ovs | Driver::Hybrid => {
            let ovs_dev = att
                .ovs_port
                .clone()
                .ok_or_else(|| BindError::BadVif(format!("{}: no OVS port planned", vif.id)))?;
            let tap = att.host_links[0].clone();
            let bridge = ovs_bridge(vif);
            let ids = ovs_ids(vif, &att.pod_uid, &att.container_id, env.node);
            let veth = async {
                let made =
                    link::add_veth(env.host, &tap, &att.ifname, Some(&ns), iface.mac, iface.mtu)
                        .await;
                match made {
                    // a leftover host end (named after the port: only ours) is replaced
                    Err(e) if e.is(EEXIST) && link::get(env.host, &tap).await?.is_some() => {
                        tracing::info!(link = %tap, "replacing a leftover host link");
                        link::delete(env.host, &tap).await?;
                        link::add_veth(
                            env.host,
                            &tap,
                            &att.ifname,
                            Some(&ns),
                            iface.mac,
                            iface.mtu,
                        )
                        .await?;
                    }
                    r => r?,
                }
                let t_veth = t0.elapsed();
                link::configure_pod(&pod.handle, &iface).await?;
                Ok::<_, BindError>(t_veth)
            };
            if att.driver == Driver::Ovs {
                // the OVSDB commit (ovsdb-server syncs its log) and the veth
                // overlap; if ovs-vswitchd looked before the device existed it
                // attaches it when it appears: wait for an ofport either way
                let (v, o) = tokio::join!(veth, env.ovs.add_port(&bridge, &tap, "", &ids));
                let t_veth = v?;
                o?;
                env.ovs.wait_attached(&tap).await?;
                tracing::debug!(netns = ?t_ns, veth = ?t_veth, total = ?t0.elapsed(), "plug timings");
                return Ok(());
            }
            let t_veth = veth.await?;
            if att.driver == Driver::Hybrid {
                let (qbr, qvb) = (att.host_links[1].clone(), att.host_links[2].clone());
                link::add_bridge(env.host, &qbr).await?;
                link::set_master(env.host, &tap, &qbr).await?;
                link::delete(env.host, &qvb).await?;
                link::add_host_veth(env.host, &qvb, &ovs_dev, iface.mtu).await?;
                link::set_master(env.host, &qvb, &qbr).await?;
            }
            env.ovs.add_port(&bridge, &ovs_dev, "", &ids).await?;
            env.ovs.wait_attached(&ovs_dev).await?;
            tracing::debug!(netns = ?t_ns, veth = ?t_veth, total = ?t0.elapsed(), "plug timings");
        }
        Driver::Macvlan => {
            link::add_macvlan(
                env.host,
                env.link_iface,
                &att.ifname,
                &ns,
                iface.mac,
                iface.mtu,
            )
            .await?;
            link::configure_pod(&pod.handle, &iface).await?;
        }
        Driver::Vlan => {
            let VifKind::VlanNested { vlan_id } = vif.kind else {
                return Err(BindError::BadVif("VLAN driver for a non-VLAN VIF".into()));
            };
            match link::add_vlan(
                env.host,
                env.link_iface,
                vlan_id,
                &att.ifname,
                &ns,
                iface.mac,
                iface.mtu,
            )
            .await
            {
                Err(e) if e.is(EOPNOTSUPP) => {
                    return Err(BindError::Unsupported(format!(
                        "{e}: this kernel has no VLAN support (8021q)"
                    )));
                }
                r => r?,
            }
            link::configure_pod(&pod.handle, &iface).await?;
        }
    }
    Ok(())
}

/// Undoes what `att` records: the OVS port, the host links, and (nested
/// drivers, while the namespace lives) the pod's interface. Everything
/// already gone counts as done.
pub async fn unplug(env: &PlugEnv<'_>, att: &Attachment) -> Result<(), BindError> {
    unplug_ovs(env, att).await?;
    unplug_links(env, att).await
}

/// Removes the attachment's OVS port, if it has one (the pod is cut off
/// from the network once this returns).
pub async fn unplug_ovs(env: &PlugEnv<'_>, att: &Attachment) -> Result<(), BindError> {
    if let Some(p) = &att.ovs_port {
        env.ovs.del_port(p).await?;
    }
    Ok(())
}

/// Deletes the attachment's host links (veths first, the bridge last) and,
/// for nested drivers while the namespace lives, the pod's interface.
pub async fn unplug_links(env: &PlugEnv<'_>, att: &Attachment) -> Result<(), BindError> {
    for l in att.host_links.iter().rev() {
        link::delete(env.host, l).await?;
    }
    if matches!(att.driver, Driver::Macvlan | Driver::Vlan) {
        match env.netns.open(Path::new(&att.netns)).await {
            Ok(pod) => {
                link::delete(&pod.handle, &att.ifname).await?;
            }
            Err(NetnsError::Gone(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What CHECK finds wrong with a plugged attachment (empty: all well).
pub async fn check(
    env: &PlugEnv<'_>,
    vif: &Vif,
    att: &Attachment,
) -> Result<Vec<String>, BindError> {
    let mut wrong = Vec::new();
    let iface = pod_iface(vif, &att.ifname, env.mtu)?;
    let pod = env.netns.open(Path::new(&att.netns)).await?;
    match link::get(&pod.handle, &att.ifname).await? {
        None => wrong.push(format!("{} is missing in the pod", att.ifname)),
        Some(l) => {
            if l.mac != Some(iface.mac) {
                wrong.push(format!(
                    "{} has MAC {} instead of {}",
                    att.ifname,
                    l.mac.map(|m| link::format_mac(&m)).unwrap_or_default(),
                    vif.address
                ));
            }
            if !l.up {
                wrong.push(format!("{} is down", att.ifname));
            }
            let have = link::addresses(&pod.handle, l.index).await?;
            for a in &iface.addrs {
                if !have.contains(a) {
                    wrong.push(format!("{} lacks {}/{}", att.ifname, a.0, a.1));
                }
            }
        }
    }
    for h in &att.host_links {
        if link::get(env.host, h).await?.is_none() {
            wrong.push(format!("host link {h} is missing"));
        }
    }
    if let Some(p) = &att.ovs_port {
        match env.ovs.interface(p).await? {
            None => wrong.push(format!("OVS port {p} is missing")),
            Some(i) if i.external_ids.get("iface-id") != Some(&vif.id) => {
                wrong.push(format!("OVS port {p} is not bound to port {}", vif.id));
            }
            Some(_) => {}
        }
    }
    Ok(wrong)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuryr_crds::{VifNetwork, VifRoute, VifSubnet};

    fn vif() -> Vif {
        Vif {
            id: "0123456789abcdef".into(),
            address: "fa:16:3e:00:00:01".into(),
            network: VifNetwork {
                id: "n".into(),
                label: "pods".into(),
                bridge: Some("br-int".into()),
                mtu: Some(1450),
                subnets: vec![
                    VifSubnet {
                        cidr: "10.1.0.0/24".into(),
                        gateway: Some("10.1.0.1".into()),
                        dns: vec![],
                        ips: vec!["10.1.0.5".into()],
                        routes: vec![VifRoute {
                            cidr: "192.168.0.0/16".into(),
                            gateway: "10.1.0.254".into(),
                        }],
                    },
                    VifSubnet {
                        cidr: "fd00::/64".into(),
                        gateway: Some("fd00::1".into()),
                        dns: vec![],
                        ips: vec!["fd00::5".into()],
                        routes: vec![],
                    },
                ],
            },
            plugin: "ovs".into(),
            active: true,
            preserve_on_delete: false,
            has_traffic_filtering: true,
            vif_name: "tap0123456789a".into(),
            kind: VifKind::OpenVSwitch {
                bridge_name: "br-int".into(),
            },
        }
    }

    #[test]
    fn a_vif_becomes_a_pod_interface() {
        let i = pod_iface(&vif(), "eth0", None).unwrap();
        assert_eq!(i.mtu, Some(1450));
        assert_eq!(i.mac, [0xfa, 0x16, 0x3e, 0, 0, 1]);
        assert_eq!(
            i.addrs,
            vec![
                ("10.1.0.5".parse().unwrap(), 24),
                ("fd00::5".parse().unwrap(), 64)
            ]
        );
        assert_eq!(i.routes.len(), 3);
        assert_eq!(i.routes[0].dst, ("0.0.0.0".parse().unwrap(), 0));
        assert_eq!(i.routes[1].dst, ("192.168.0.0".parse().unwrap(), 16));
        assert_eq!(i.routes[2].gw, "fd00::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            pod_iface(&vif(), "eth0", Some(1400)).unwrap().mtu,
            Some(1400)
        );
        let mut bad = vif();
        bad.address = "nope".into();
        assert!(matches!(
            pod_iface(&bad, "eth0", None),
            Err(BindError::BadVif(_))
        ));
        let mut bad = vif();
        bad.network.subnets[0].ips = vec!["10.1.0.999".into()];
        assert!(pod_iface(&bad, "eth0", None).is_err());
    }

    #[test]
    fn device_names_follow_os_vif() {
        assert_eq!(dev_name("tap", "0123456789abcdef"), "tap0123456789a");
        assert_eq!(dev_name("qvo", "0123456789abcdef").len(), 14);
        assert_eq!(driver_of(&vif()), Driver::Ovs);
    }
}
