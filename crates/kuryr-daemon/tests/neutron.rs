//! Pods bound by kuryr-daemon to real Neutron ports: the ADD waits until
//! the OVS agent has wired the port and Neutron says ACTIVE (reported in
//! the KuryrPort the way kuryr-controller does), and then the two pods and
//! a port standing for a VM reach each other through br-int.
#![cfg(feature = "stack")]

mod common;

use anyhow::Context as _;
use common::*;
use kuryr_crds::{Vif, VifKind};
use kuryr_openstack::types::neutron::Port;
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::net::Netns;
use kuryr_stack_tests::openstack::{Session, with_undo};
use kuryr_stack_tests::{finally, unique_name, wait_until};
use serde_json::{Value, json};
use std::time::Duration;

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(v.clone())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_neutron_ports_reach_each_other_and_a_vm() -> anyhow::Result<()> {
    let env = StackEnv::load()?;
    env.require("k8s")?;
    env.require("openstack")?;
    let s = Session::login(&env).await?;
    let host = env.get("KURYR_STACK_AGENT_HOST")?.to_owned();
    let client = kube_client(&env).await?;
    let ns = namespace(&client).await?;
    let (c2, ns2) = (client.clone(), ns.clone());
    let body = with_undo(&s, async |undo| {
        let d = Daemon::start(&env, &[("KURYR_DAEMON_PREPARE_VIFS", "true")])?;
        let name = unique_name("kd-net-", 40);
        let (network, subnet) = neutron::network(
            &s,
            undo,
            &name,
            json!({"cidr": "10.231.0.0/24", "dns_nameservers": ["10.231.0.53"]}),
        )
        .await?;
        let net_id = network.id.clone();
        let mut ports = Vec::new();
        for (who, owner) in [
            ("pod-a", "compute:kuryr"),
            ("pod-b", "compute:kuryr"),
            ("vm", "compute:nova"),
        ] {
            let p = s
                .post(&s.n("ports"), json!({"port": {"network_id": net_id, "name": format!("{name}-{who}"),
                    "binding:host_id": host, "device_owner": owner, "device_id": format!("{name}-{who}")}}))
                .await?;
            let id = p["port"]["id"].as_str().context("port id")?.to_owned();
            undo.delete(s.n(&format!("ports/{id}")));
            ports.push(typed::<Port>(&p["port"])?);
        }
        let ip = |p: &Port| p.first_ip().unwrap_or_default().to_owned();
        // the VM: a namespace plugged into br-int by hand, like nova + os-vif would
        let vm = &ports[2];
        let vm_plugged = neutron::plug_vm(&env, vm, "kdvm")?;
        let vm_ns = &vm_plugged.ns;
        // the pods: KuryrPorts with not-yet-active VIFs, as the controller writes them
        let mut pods = Vec::new();
        for (i, who) in ["pod-a", "pod-b"].into_iter().enumerate() {
            let vif = Vif::from_port(
                &ports[i],
                &network,
                std::slice::from_ref(&subnet),
                VifKind::OpenVSwitch {
                    bridge_name: "br-int".into(),
                },
            );
            assert!(!vif.active);
            kuryrport(
                &client,
                &ns,
                who,
                &format!("uid-{who}"),
                &d.node,
                Some(vif.clone()),
            )
            .await?;
            pods.push((who, vif, Netns::new("kdpod")?));
        }
        // stand-in for the controller: mark a VIF active once Neutron says so
        let todo: Vec<(String, Vif)> = pods
            .iter()
            .map(|(w, v, _)| (w.to_string(), v.clone()))
            .collect();
        let activator = neutron::activate_when_neutron_does(&env, &client, &ns, todo).await?;
        // the daemon plugs the VIFs ahead of any ADD: the OVS agent wires
        // them and Neutron reports ACTIVE while no sandbox exists yet
        for p in &ports[..2] {
            let url = s.n(&format!("ports/{}", p.id));
            wait_until(
                "port ACTIVE before its pod's ADD",
                Duration::from_secs(60),
                Duration::from_millis(250),
                || async { Ok((s.get(&url).await?["port"]["status"] == "ACTIVE").then_some(())) },
            )
            .await?;
        }
        // both ADDs run at once; each returns once its port is ACTIVE
        let adds: Vec<_> = pods
            .iter()
            .map(|(who, _, pns)| {
                let (conf, nsname, pod_ns, who) = (
                    d.conf("0.4.0"),
                    ns.clone(),
                    format!("/var/run/netns/{}", pns.name),
                    who.to_string(),
                );
                std::thread::spawn(move || {
                    let cid = format!("cid-{who}");
                    let uid = format!("uid-{who}");
                    cni(
                        &CniCall {
                            command: "ADD",
                            container_id: &cid,
                            netns: &pod_ns,
                            ifname: "eth0",
                            pod: (&nsname, &who, &uid),
                        },
                        &conf,
                    )
                })
            })
            .collect();
        let mut results = Vec::new();
        for a in adds {
            results.push(a.join().unwrap());
        }
        activator.abort();
        for ((rc, out), (_, vif, _)) in results.iter().zip(&pods) {
            assert_eq!(*rc, 0, "ADD: {out}\n{}", d.log_text());
            let want = format!("{}/24", vif.network.subnets[0].ips[0]);
            assert_eq!(out["ips"][0]["address"], want.as_str(), "{out}");
            assert_eq!(
                out["ips"][0]["version"], "4",
                "0.4.0 results carry the IP version: {out}"
            );
            assert_eq!(out["dns"]["nameservers"][0], "10.231.0.53");
        }
        for p in &ports[..2] {
            let st = s.get(&s.n(&format!("ports/{}", p.id))).await?;
            assert_eq!(st["port"]["status"], "ACTIVE", "{st}");
        }
        // pod ↔ pod, pod ↔ VM, VM → pod
        let ping = |n: &Netns, to: &str| n.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "5", to]);
        for (from, to) in [
            (&pods[0].2, ip(&ports[1])),
            (&pods[1].2, ip(&ports[0])),
            (&pods[0].2, ip(vm)),
            (vm_ns, ip(&ports[1])),
        ] {
            let out = ping(from, &to)?;
            assert!(
                out.contains("2 received") || out.contains("2 packets received"),
                "{out}"
            );
        }
        // DEL gives the host back: no tap, no OVS port
        for (who, vif, pns) in &pods {
            let (cid, uid, netns) = (
                format!("cid-{who}"),
                format!("uid-{who}"),
                format!("/var/run/netns/{}", pns.name),
            );
            let (rc, out) = cni(
                &CniCall {
                    command: "DEL",
                    container_id: &cid,
                    netns: &netns,
                    ifname: "eth0",
                    pod: (&ns, who, &uid),
                },
                &d.conf("0.4.0"),
            );
            assert_eq!(rc, 0, "{out}");
            assert!(ovs_ports_of(&env, &cid).is_empty());
            eventually("host link gone", || {
                !link_exists(&kuryr_crds::vif::vif_name(&vif.id))
            });
        }
        Ok(())
    });
    finally(body, async move { drop_namespace(&c2, &ns2).await }).await
}
