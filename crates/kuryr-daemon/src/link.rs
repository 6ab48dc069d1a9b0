//! Links, addresses and routes over rtnetlink: what the binding drivers do
//! to the host and to the pod's namespace.

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::{
    Handle, LinkBridge, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVlan,
    RouteMessageBuilder,
};
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// `EEXIST`.
pub const EEXIST: i32 = 17;
/// `ENODEV`.
pub const ENODEV: i32 = 19;
/// `EOPNOTSUPP`.
pub const EOPNOTSUPP: i32 = 95;

/// A netlink request that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {msg}")]
pub struct LinkError {
    /// What was being done.
    pub op: String,
    /// errno, when the kernel gave one.
    pub errno: Option<i32>,
    /// The kernel's message.
    pub msg: String,
}

impl LinkError {
    fn new(op: impl Into<String>, e: rtnetlink::Error) -> Self {
        let errno = match &e {
            rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
            _ => None,
        };
        let msg = match errno {
            Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
            None => e.to_string(),
        };
        Self {
            op: op.into(),
            errno,
            msg,
        }
    }

    /// The kernel answered `errno`.
    pub fn is(&self, errno: i32) -> bool {
        self.errno == Some(errno)
    }
}

/// A route of the pod: destination prefix via a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRoute {
    /// Destination.
    pub dst: (IpAddr, u8),
    /// Next hop.
    pub gw: IpAddr,
}

/// How the pod's interface is to be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIface {
    /// Interface name in the pod (`eth0`).
    pub name: String,
    /// MAC address of the Neutron port.
    pub mac: [u8; 6],
    /// MTU (`None`: the kernel's default).
    pub mtu: Option<u32>,
    /// Addresses with prefix lengths.
    pub addrs: Vec<(IpAddr, u8)>,
    /// Routes (default route first).
    pub routes: Vec<PodRoute>,
}

/// What a link is, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// ifindex.
    pub index: u32,
    /// MAC address.
    pub mac: Option<[u8; 6]>,
    /// Kind (`veth`, `macvlan`, `vlan`, `bridge`...).
    pub kind: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// MTU.
    pub mtu: Option<u32>,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn state_of(m: &LinkMessage) -> LinkState {
    let mut s = LinkState {
        index: m.header.index,
        mac: None,
        kind: None,
        up: m.header.flags.contains(LinkFlags::Up),
        mtu: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::Address(b) if b.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(b);
                s.mac = Some(mac);
            }
            LinkAttribute::Mtu(v) => s.mtu = Some(*v),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        s.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    s
}

/// The link called `name`, `None` when there is none.
pub async fn get(h: &Handle, name: &str) -> Result<Option<LinkState>, LinkError> {
    let r = h
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await;
    match r {
        Ok(Some(m)) => Ok(Some(state_of(&m))),
        Ok(None) => Ok(None),
        Err(e) => {
            let e = LinkError::new(format!("looking up link {name}"), e);
            if e.is(ENODEV) { Ok(None) } else { Err(e) }
        }
    }
}

/// Deletes link `name`; `Ok(false)` when there was none.
pub async fn delete(h: &Handle, name: &str) -> Result<bool, LinkError> {
    let Some(l) = get(h, name).await? else {
        return Ok(false);
    };
    match h.link().del(l.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) => {
            let e = LinkError::new(format!("deleting link {name}"), e);
            if e.is(ENODEV) { Ok(false) } else { Err(e) }
        }
    }
}

fn with_mtu<T>(b: LinkMessageBuilder<T>, mtu: Option<u32>) -> LinkMessageBuilder<T> {
    match mtu {
        Some(m) => b.mtu(m),
        None => b,
    }
}

/// Sends one RTM_NEWLINK; `what` names it in the error.
async fn create(h: &Handle, msg: LinkMessage, what: String) -> Result<(), LinkError> {
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| LinkError::new(what, e))
}

/// Creates the link `b` describes straight in the namespace `ns`, with
/// `mac` and `mtu`.
async fn create_in<T>(
    h: &Handle,
    b: LinkMessageBuilder<T>,
    ns: &File,
    mac: [u8; 6],
    mtu: Option<u32>,
    what: String,
) -> Result<(), LinkError> {
    let b = b.address(mac.to_vec()).setns_by_fd(ns.as_raw_fd());
    create(h, with_mtu(b, mtu).build(), what).await
}

/// A veth pair: `host_name` (up) on the host and `peer` with `mac`,
/// created straight in the namespace `ns` (or, with `None`, left down in
/// the host namespace until [`move_into`] hands it to its pod).
pub async fn add_veth(
    host: &Handle,
    host_name: &str,
    peer: &str,
    ns: Option<&File>,
    mac: [u8; 6],
    mtu: Option<u32>,
) -> Result<(), LinkError> {
    let mut p = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_owned())
        .address(mac.to_vec());
    if let Some(ns) = ns {
        p = p.setns_by_fd(ns.as_raw_fd());
    }
    let b = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host_name.to_owned())
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(with_mtu(p, mtu).build())));
    let what = format!("creating veth {host_name} / {peer}");
    create(host, with_mtu(b, mtu).build(), what).await
}

/// Moves link `name` into the namespace `ns`, renamed `new_name` there, in
/// one request.
pub async fn move_into(h: &Handle, name: &str, ns: &File, new_name: &str) -> Result<(), LinkError> {
    let l = index_of(h, name).await?;
    h.link()
        .set(
            LinkUnspec::new_with_index(l)
                .setns_by_fd(ns.as_raw_fd())
                .name(new_name.to_owned())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| LinkError::new(format!("moving {name} into the pod as {new_name}"), e))
}

/// A host-only veth pair (`a` and `b`, both up): hybrid plug's qvb/qvo.
pub async fn add_host_veth(
    h: &Handle,
    a: &str,
    b: &str,
    mtu: Option<u32>,
) -> Result<(), LinkError> {
    let m = with_mtu(LinkVeth::new(a, b).up(), mtu).build();
    create(h, m, format!("creating veth {a} / {b}")).await?;
    set_up(h, b).await
}

/// A macvlan (bridge mode) of `parent` created directly in `ns` as `name`.
pub async fn add_macvlan(
    host: &Handle,
    parent: &str,
    name: &str,
    ns: &File,
    mac: [u8; 6],
    mtu: Option<u32>,
) -> Result<(), LinkError> {
    let p = parent_index(host, parent).await?;
    let b = LinkMacVlan::new(name, p, MacVlanMode::Bridge);
    let what = format!("creating macvlan {name} on {parent}");
    create_in(host, b, ns, mac, mtu, what).await
}

/// A VLAN `vlan_id` of `parent` created directly in `ns` as `name`.
pub async fn add_vlan(
    host: &Handle,
    parent: &str,
    vlan_id: u16,
    name: &str,
    ns: &File,
    mac: [u8; 6],
    mtu: Option<u32>,
) -> Result<(), LinkError> {
    let p = parent_index(host, parent).await?;
    let b = LinkVlan::new(name, p, vlan_id);
    let what = format!("creating VLAN {vlan_id} {name} on {parent}");
    create_in(host, b, ns, mac, mtu, what).await
}

async fn parent_index(h: &Handle, parent: &str) -> Result<u32, LinkError> {
    index_of(h, parent).await.map_err(|e| LinkError {
        op: format!("finding the node's NIC {parent}"),
        msg: format!("{} (set [binding] link_iface)", e.msg),
        ..e
    })
}

async fn index_of(h: &Handle, name: &str) -> Result<u32, LinkError> {
    match get(h, name).await? {
        Some(l) => Ok(l.index),
        None => Err(LinkError {
            op: format!("finding link {name}"),
            errno: Some(ENODEV),
            msg: "no such device".into(),
        }),
    }
}

/// A Linux bridge `name`, up (an existing one is kept).
pub async fn add_bridge(h: &Handle, name: &str) -> Result<(), LinkError> {
    match h
        .link()
        .add(LinkBridge::new(name).up().build())
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = LinkError::new(format!("creating bridge {name}"), e);
            if e.is(EEXIST) {
                set_up(h, name).await
            } else {
                Err(e)
            }
        }
    }
}

/// Enslaves `name` to bridge `master`.
pub async fn set_master(h: &Handle, name: &str, master: &str) -> Result<(), LinkError> {
    let m = index_of(h, master).await?;
    let l = index_of(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(l).controller(m).build())
        .execute()
        .await
        .map_err(|e| LinkError::new(format!("adding {name} to {master}"), e))
}

/// Sets link `name` up.
pub async fn set_up(h: &Handle, name: &str) -> Result<(), LinkError> {
    let l = index_of(h, name).await?;
    h.link()
        .set(LinkUnspec::new_with_index(l).up().build())
        .execute()
        .await
        .map_err(|e| LinkError::new(format!("setting {name} up"), e))
}

/// Inside the pod: `lo` and the interface up, addresses added (an address
/// already there is kept), routes replaced.
pub async fn configure_pod(pod: &Handle, iface: &PodIface) -> Result<(), LinkError> {
    if let Some(lo) = get(pod, "lo").await?
        && !lo.up
    {
        set_up(pod, "lo").await?;
    }
    let l = get(pod, &iface.name).await?.ok_or_else(|| LinkError {
        op: format!("finding {} in the pod", iface.name),
        errno: Some(ENODEV),
        msg: "no such device".into(),
    })?;
    for (ip, len) in &iface.addrs {
        if let Err(e) = pod.address().add(l.index, *ip, *len).execute().await {
            let e = LinkError::new(format!("adding {ip}/{len} to {}", iface.name), e);
            if !e.is(EEXIST) {
                return Err(e);
            }
        }
    }
    if !l.up {
        set_up(pod, &iface.name).await?;
    }
    for r in &iface.routes {
        let msg = match (r.dst.0, r.gw) {
            (IpAddr::V4(d), IpAddr::V4(g)) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .destination_prefix(d, r.dst.1)
                .gateway(g)
                .output_interface(l.index)
                .build(),
            (IpAddr::V6(d), IpAddr::V6(g)) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .destination_prefix(d, r.dst.1)
                .gateway(g)
                .output_interface(l.index)
                .build(),
            _ => continue,
        };
        pod.route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                LinkError::new(format!("route {}/{} via {}", r.dst.0, r.dst.1, r.gw), e)
            })?;
    }
    Ok(())
}

/// Addresses on link `index`.
pub async fn addresses(h: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>, LinkError> {
    let msgs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| LinkError::new("listing addresses", e))?;
    Ok(msgs
        .iter()
        .flat_map(|m| {
            m.attributes.iter().filter_map(|a| match a {
                AddressAttribute::Address(ip) => Some((*ip, m.header.prefix_len)),
                _ => None,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip() {
        let m = parse_mac("fa:16:3e:0A:bb:01").unwrap();
        assert_eq!(m, [0xfa, 0x16, 0x3e, 0x0a, 0xbb, 0x01]);
        assert_eq!(format_mac(&m), "fa:16:3e:0a:bb:01");
        assert_eq!(parse_mac("fa:16:3e:0a:bb"), None);
        assert_eq!(parse_mac("fa:16:3e:0a:bb:zz"), None);
        assert_eq!(parse_mac("fa:16:3e:0a:bb:1"), None);
    }
}
