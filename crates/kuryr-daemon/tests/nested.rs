//! Nested drivers: the node is a VM whose NIC carries the pods' traffic.
//! The "VM NIC" here is a veth whose peer sits in a namespace standing for
//! the rest of the Neutron network. macvlan runs on this kernel; VLAN needs
//! 8021q, which these machines lack: the test then checks the clear error
//! and prints a SKIP line for the traffic part.
#![cfg(feature = "stack")]

mod common;

use common::*;
use kuryr_crds::VifKind;
use kuryr_stack_tests::net::{Netns, Veth};
use kuryr_stack_tests::unique_name;

/// The host has VLAN support (tried in a scratch namespace).
fn kernel_has_vlan() -> bool {
    let Ok(ns) = Netns::new("kdvl") else {
        return false;
    };
    ns.ip(&["link", "add", "a0", "type", "veth", "peer", "name", "b0"])
        .is_ok()
        && ns
            .ip(&[
                "link", "add", "link", "a0", "name", "a0.7", "type", "vlan", "id", "7",
            ])
            .is_ok()
}

async fn nested(kind: VifKind, subnet: &str) -> anyhow::Result<()> {
    with_namespace(&["k8s"], |env, client, ns| async move {
            // the VM's NIC and, behind it, the network with a peer at .1
            let outside = Netns::new("kdout")?;
            let nic = Veth::new(&outside, "peer0")?;
            let vlan = match kind {
                VifKind::VlanNested { vlan_id } => Some(vlan_id),
                _ => None,
            };
            let base = subnet.rsplit_once('.').map(|(a, _)| a).unwrap();
            let peer_dev = match vlan {
                Some(id) if kernel_has_vlan() => {
                    outside.ip(&["link", "add", "link", "peer0", "name", "peer0.v", "type", "vlan", "id", &id.to_string()])?;
                    outside.ip(&["link", "set", "peer0.v", "up"])?;
                    "peer0.v"
                }
                _ => "peer0",
            };
            outside.ip(&["addr", "add", &format!("{base}.1/24"), "dev", peer_dev])?;
            let d = Daemon::start(&env, &[("KURYR_BINDING__LINK_IFACE", nic.host.as_str())])?;
            let mut vif = fake_vif(40, subnet, true);
            vif.plugin = "noop".into();
            vif.network.bridge = None;
            vif.kind = kind.clone();
            kuryrport(&client, &ns, "pod-n", "uid-n", &d.node, Some(vif.clone())).await?;
            let pod_ns = Netns::new("kdnest")?;
            let netns = format!("/var/run/netns/{}", pod_ns.name);
            let cid = unique_name("cid-nest-", 40);
            let call = CniCall { command: "ADD", container_id: &cid, netns: &netns, ifname: "eth0", pod: (&ns, "pod-n", "uid-n") };
            let (rc, out) = cni(&call, &d.conf("1.1.0"));
            if vlan.is_some() && !kernel_has_vlan() {
                assert_eq!(rc, 1, "{out}");
                assert_eq!(out["code"], 100, "{out}");
                assert!(out["details"].as_str().unwrap().contains("8021q"), "{out}");
                assert!(pod_ns.ip(&["link", "show", "eth0"]).is_err());
                assert!(d.state_files().is_empty());
                println!("SKIP: VLAN traffic of the nested-vlan driver: this kernel has no 8021q (the daemon's clear error and its cleanup were checked)");
                return Ok(());
            }
            assert_eq!(rc, 0, "ADD: {out}\n{}", d.log_text());
            let link = pod_ns.ip(&["-d", "link", "show", "eth0"])?;
            assert!(link.contains(&vif.address), "{link}");
            match vlan {
                Some(id) => assert!(link.contains(&format!("vlan protocol 802.1Q id {id}")), "{link}"),
                None => assert!(link.contains("macvlan mode bridge"), "{link}"),
            }
            let out = pod_ns.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "5", &format!("{base}.1")])?;
            assert!(out.contains("2 received") || out.contains("2 packets received"), "{out}");
            let (rc, out) = cni(&CniCall { command: "CHECK", ..call }, &d.conf("1.1.0"));
            assert_eq!(rc, 0, "CHECK: {out}");
            let (rc, out) = cni(&CniCall { command: "DEL", ..call }, &d.conf("1.1.0"));
            assert_eq!(rc, 0, "DEL: {out}");
            eventually("eth0 gone from the pod", || pod_ns.ip(&["link", "show", "eth0"]).is_err());
            eventually("record gone", || d.state_files().is_empty());
            // DEL after the sandbox is gone is fine too
            let (rc, out) = cni(&CniCall { command: "DEL", ..call }, &d.conf("1.1.0"));
            assert_eq!(rc, 0, "{out}");
            Ok(())
    })
    .await
}

#[tokio::test]
async fn nested_macvlan_pod_reaches_the_network_through_the_vm_nic() -> anyhow::Result<()> {
    nested(VifKind::MacvlanNested, "10.252.1.0/24").await
}

#[tokio::test]
async fn nested_vlan_pod_gets_a_vlan_of_the_vm_nic() -> anyhow::Result<()> {
    nested(VifKind::VlanNested { vlan_id: 107 }, "10.252.2.0/24").await
}
