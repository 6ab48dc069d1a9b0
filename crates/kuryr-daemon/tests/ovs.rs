//! kuryr-cni + kuryr-daemon with the OVS driver against the stack's real
//! Open vSwitch (userspace datapath) and kube-apiserver, pods as network
//! namespaces made by the test.
#![cfg(feature = "stack")]

mod common;

use common::*;
use kuryr_stack_tests::net::Netns;

#[tokio::test]
async fn add_check_del_with_an_active_vif() -> anyhow::Result<()> {
    with_namespace(&["k8s", "ovs"], |env, client, ns| async move {
            let d = Daemon::start(&env, &[("KURYR_DAEMON_PREPARE_VIFS", "true")])?;
            let vif = fake_vif(1, "10.250.1.0/24", true);
            kuryrport(&client, &ns, "pod-a", "uid-a", &d.node, Some(vif.clone())).await?;
            // the daemon plugs it ahead of the ADD: host end in OVS, pod end waiting
            let tap = kuryr_crds::vif::vif_name(&vif.id);
            let prepared = format!("prepared-{}", vif.id);
            eventually("VIF prepared ahead", || {
                ovs_ports_of(&env, &prepared) == vec![tap.clone()]
            });
            assert!(link_exists(&format!("kp{}", &vif.id[..12])));
            let pod_ns = Netns::new("kdp")?;
            let netns = format!("/var/run/netns/{}", pod_ns.name);
            let call = CniCall {
                command: "ADD",
                container_id: "cid-a-1",
                netns: &netns,
                ifname: "eth0",
                pod: (&ns, "pod-a", "uid-a"),
            };
            let (rc, out) = cni(&call, &d.conf("1.1.0"));
            assert_eq!(rc, 0, "ADD: {out}\n{}", d.log_text());
            assert_eq!(out["ips"][0]["address"], "10.250.1.3/24", "{out}");
            assert_eq!(out["interfaces"][0]["mac"], vif.address.as_str());
            let shown = pod_ns.ip(&["-o", "addr", "show", "dev", "eth0"])?;
            assert!(shown.contains("10.250.1.3/24"), "{shown}");
            let routes = pod_ns.ip(&["route"])?;
            assert!(routes.contains("default via 10.250.1.1"), "{routes}");
            assert!(pod_ns.ip(&["link", "show", "eth0"])?.contains("mtu 1450"));
            assert!(!link_exists(&format!("kp{}", &vif.id[..12])), "pod end moved");
            assert!(link_exists(&tap), "host end {tap}");
            assert_eq!(ovs_ports_of(&env, "cid-a-1"), vec![tap.clone()]);
            let ids = vsctl(&env, &["get", "Interface", &tap, "external_ids"]);
            assert!(ids.contains(&format!("iface-id=\"{}\"", vif.id)), "{ids}");
            assert!(ids.contains("iface-status=active"), "{ids}");
            assert!(ids.contains("vm-uuid=uid-a"), "{ids}");
            // CHECK passes, a repeated ADD answers the same without replugging
            let (rc, out) = cni(&CniCall { command: "CHECK", ..call }, &d.conf("1.1.0"));
            assert_eq!(rc, 0, "CHECK: {out}");
            let idx = std::fs::read_to_string(format!("/sys/class/net/{tap}/ifindex"))?;
            let (rc, again) = cni(&call, &d.conf("1.1.0"));
            assert_eq!(rc, 0);
            assert_eq!(again["ips"], serde_json::json!([{"address": "10.250.1.3/24", "gateway": "10.250.1.1", "interface": 0}]));
            assert_eq!(idx, std::fs::read_to_string(format!("/sys/class/net/{tap}/ifindex"))?);
            // CHECK notices a removed address
            pod_ns.ip(&["addr", "del", "10.250.1.3/24", "dev", "eth0"])?;
            let (rc, out) = cni(&CniCall { command: "CHECK", ..call }, &d.conf("1.1.0"));
            assert_eq!(rc, 1);
            assert_eq!(out["code"], 103, "{out}");
            // DEL, twice
            for _ in 0..2 {
                let (rc, out) = cni(&CniCall { command: "DEL", ..call }, &d.conf("1.1.0"));
                assert_eq!(rc, 0, "DEL: {out}");
            }
            assert!(ovs_ports_of(&env, "cid-a-1").is_empty());
            // the pod's next sandbox takes the same port at once, while the
            // old host link may still wait for the reaper: it stays plugged
            let pod_ns2 = Netns::new("kdp")?;
            let netns2 = format!("/var/run/netns/{}", pod_ns2.name);
            drop(pod_ns);
            let call2 = CniCall { container_id: "cid-a-2", netns: &netns2, ..call };
            let (rc, out) = cni(&call2, &d.conf("1.1.0"));
            assert_eq!(rc, 0, "ADD of the next sandbox: {out}");
            std::thread::sleep(std::time::Duration::from_millis(2500));
            assert!(link_exists(&tap), "the reaper took the new sandbox's link");
            assert_eq!(ovs_ports_of(&env, "cid-a-2"), vec![tap.clone()]);
            let (rc, out) = cni(&CniCall { command: "CHECK", ..call2 }, &d.conf("1.1.0"));
            assert_eq!(rc, 0, "CHECK: {out}");
            let (rc, out) = cni(&CniCall { command: "DEL", ..call2 }, &d.conf("1.1.0"));
            assert_eq!(rc, 0, "DEL: {out}");
            eventually("host link and records gone", || !link_exists(&tap) && d.state_files().is_empty());
            let m = http_get(&d.metrics, "/metrics")?;
            assert!(m.contains("kuryr_cni_requests_total{command=\"ADD\",result=\"ok\"} 3"), "{m}");
            let m2 = http_get(&d.metrics, "/metrics")?;
            assert!(m2.contains("kuryr_cni_adopted_total 1"), "{m2}");
            Ok(())
    })
    .await
}

#[tokio::test]
async fn hybrid_plug_puts_a_linux_bridge_between_pod_and_ovs() -> anyhow::Result<()> {
    with_namespace(&["k8s", "ovs"], |env, client, ns| async move {
        let d = Daemon::start(&env, &[])?;
        let mut vif = fake_vif(2, "10.250.4.0/24", true);
        let id = vif.id.clone();
        let dev = |p: &str| format!("{p}{}", &id[..11]);
        vif.kind = kuryr_crds::VifKind::Bridge {
            bridge_name: dev("qbr"),
        };
        kuryrport(&client, &ns, "pod-h", "uid-h", &d.node, Some(vif.clone())).await?;
        let pod_ns = Netns::new("kdh")?;
        let netns = format!("/var/run/netns/{}", pod_ns.name);
        let call = CniCall {
            command: "ADD",
            container_id: "cid-h-1",
            netns: &netns,
            ifname: "eth0",
            pod: (&ns, "pod-h", "uid-h"),
        };
        let (rc, out) = cni(&call, &d.conf("1.1.0"));
        assert_eq!(rc, 0, "ADD: {out}\n{}", d.log_text());
        // tap and qvb are ports of the Linux bridge; qvo is the OVS port
        for p in ["tap", "qvb"] {
            let master = std::fs::read_link(format!("/sys/class/net/{}/master", dev(p)))?;
            assert!(master.ends_with(dev("qbr")), "{p}: {master:?}");
        }
        assert_eq!(ovs_ports_of(&env, "cid-h-1"), vec![dev("qvo")]);
        let ids = vsctl(&env, &["get", "Interface", &dev("qvo"), "external_ids"]);
        assert!(ids.contains(&format!("iface-id=\"{id}\"")), "{ids}");
        assert!(
            pod_ns
                .ip(&["addr", "show", "eth0"])?
                .contains("10.250.4.4/24")
        );
        let (rc, out) = cni(
            &CniCall {
                command: "CHECK",
                ..call
            },
            &d.conf("1.1.0"),
        );
        assert_eq!(rc, 0, "CHECK: {out}");
        let (rc, out) = cni(
            &CniCall {
                command: "DEL",
                ..call
            },
            &d.conf("1.1.0"),
        );
        assert_eq!(rc, 0, "DEL: {out}");
        assert!(ovs_ports_of(&env, "cid-h-1").is_empty());
        eventually("tap, qbr, qvb, qvo gone", || {
            ["tap", "qbr", "qvb", "qvo"]
                .iter()
                .all(|p| !link_exists(&dev(p)))
        });
        eventually("record gone", || d.state_files().is_empty());
        Ok(())
    })
    .await
}
