//! Hybrid plug against Neutron's `iptables_hybrid` firewall (stack: ML2/OVS
//! with `KURYR_STACK_OVS_FIREWALL=iptables_hybrid`): Neutron binds the
//! pod's port with `ovs_hybrid_plug`, the VIF built from that binding is a
//! `VIFBridge`, kuryr-daemon puts the pod behind `qbr<id>` as os-vif would,
//! and the port's security groups are enforced on it: a group with no
//! ingress rule cuts the pod off, the open group lets it be reached again.
//! On any other stack it records a SKIP with the reason.
#![cfg(feature = "stack")]

mod common;

use anyhow::Context as _;
use common::*;
use kuryr_crds::{Vif, VifKind};
use kuryr_openstack::types::neutron::Port;
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::net::Netns;
use kuryr_stack_tests::openstack::{Session, with_undo};
use kuryr_stack_tests::{finally, skip, unique_name, wait_until};
use serde_json::{Value, json};
use std::time::Duration;

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(v.clone())?)
}

/// One ping from `from` to `to` answered within a second.
fn reaches(from: &Netns, to: &str) -> bool {
    from.exec(&["ping", "-c", "1", "-W", "1", to]).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hybrid_plugged_pod_is_behind_its_security_groups() -> anyhow::Result<()> {
    let env = StackEnv::load()?;
    env.require("k8s")?;
    env.require("openstack")?;
    let backend = env.get("KURYR_STACK_NEUTRON_BACKEND")?.to_owned();
    let firewall = env
        .get("KURYR_STACK_OVS_FIREWALL")
        .unwrap_or("none")
        .to_owned();
    if backend != "ovs" || firewall != "iptables_hybrid" {
        skip(
            "hybrid plug under the iptables_hybrid firewall",
            &format!(
                "needs the ovs Neutron backend with KURYR_STACK_OVS_FIREWALL=iptables_hybrid; the stack runs {backend} (firewall {firewall})"
            ),
        );
        return Ok(());
    }
    let s = Session::login(&env).await?;
    let host = env.get("KURYR_STACK_AGENT_HOST")?.to_owned();
    let client = kube_client(&env).await?;
    let ns = namespace(&client).await?;
    let (c2, ns2) = (client.clone(), ns.clone());
    let body = with_undo(&s, async |undo| {
        let d = Daemon::start(&env, &[])?;
        let name = unique_name("kd-hyb-", 40);
        let (network, subnet) =
            neutron::network(&s, undo, &name, json!({"cidr": "10.232.0.0/24"})).await?;
        let net_id = network.id.clone();
        // two groups: "open" lets ICMP in, "closed" has egress rules only
        let mut groups = Vec::new();
        for which in ["open", "closed"] {
            let g = s
                .post(
                    &s.n("security-groups"),
                    json!({"security_group": {"name": format!("{name}-{which}")}}),
                )
                .await?;
            let id = g["security_group"]["id"]
                .as_str()
                .context("group id")?
                .to_owned();
            undo.delete(s.n(&format!("security-groups/{id}")));
            groups.push(id);
        }
        s.post(
            &s.n("security-group-rules"),
            json!({"security_group_rule": {"security_group_id": groups[0], "direction": "ingress",
                "ethertype": "IPv4", "protocol": "icmp", "remote_ip_prefix": "0.0.0.0/0"}}),
        )
        .await?;
        let pod = s
            .post(&s.n("ports"), json!({"port": {"network_id": net_id, "name": format!("{name}-pod"),
                "binding:host_id": host, "device_owner": "compute:kuryr", "device_id": format!("{name}-pod"),
                "security_groups": [groups[0]]}}))
            .await?;
        let pod_id = pod["port"]["id"].as_str().context("port id")?.to_owned();
        undo.delete(s.n(&format!("ports/{pod_id}")));
        // the client: no port security of its own, plugged into br-int by hand
        let vm = s
            .post(&s.n("ports"), json!({"port": {"network_id": net_id, "name": format!("{name}-vm"),
                "binding:host_id": host, "device_owner": "compute:nova", "device_id": format!("{name}-vm"),
                "port_security_enabled": false, "security_groups": []}}))
            .await?;
        let vm: Port = typed(&vm["port"])?;
        undo.delete(s.n(&format!("ports/{}", vm.id)));
        let pod: Port = typed(&pod["port"])?;
        let ip = |p: &Port| p.first_ip().unwrap_or_default().to_owned();

        // what Neutron says decides the VIF, as in the controller
        let (kind, ovs_bridge) = VifKind::from_binding(&pod, "br-int");
        let qbr = kuryr_crds::vif::hybrid_bridge_name(&pod.id);
        assert_eq!(
            kind,
            VifKind::Bridge {
                bridge_name: qbr.clone()
            },
            "iptables_hybrid binds with ovs_hybrid_plug: {:?}",
            pod.binding_vif_details
        );
        let mut vif = Vif::from_port(&pod, &network, std::slice::from_ref(&subnet), kind);
        vif.network.bridge = Some(ovs_bridge);
        vif.active = false;
        kuryrport(&client, &ns, "pod-h", "uid-h", &d.node, Some(vif.clone())).await?;
        let vm = neutron::plug_vm(&env, &vm, "kdhvm")?;
        let vm_ns = &vm.ns;
        let activator = neutron::activate_when_neutron_does(
            &env,
            &client,
            &ns,
            vec![("pod-h".into(), vif.clone())],
        )
        .await?;
        let pod_ns = Netns::new("kdhpod")?;
        let netns = format!("/var/run/netns/{}", pod_ns.name);
        let conf = d.conf("1.1.0");
        let call = CniCall {
            command: "ADD",
            container_id: "cid-hyb",
            netns: &netns,
            ifname: "eth0",
            pod: (&ns, "pod-h", "uid-h"),
        };
        // blocking: the runtime's other worker runs the activator meanwhile
        let (rc, out) = tokio::task::block_in_place(|| cni(&call, &conf));
        activator.abort();
        assert_eq!(rc, 0, "ADD: {out}\n{}", d.log_text());
        let tap = kuryr_crds::vif::vif_name(&pod.id);
        let master = std::fs::read_link(format!("/sys/class/net/{tap}/master"))?;
        assert!(
            master.ends_with(&qbr),
            "the pod's host end is on {master:?}, not {qbr}"
        );

        let open = || async {
            wait_until(
                "the pod reached through its open group",
                Duration::from_secs(60),
                Duration::from_millis(500),
                || async { Ok(reaches(vm_ns, &ip(&pod)).then_some(())) },
            )
            .await
        };
        open().await?;
        // the closed group: the agent rewrites the port's chains, after
        // which no ping gets in (the first miss after the update is the
        // event; then three more in a row must miss too)
        s.put(
            &s.n(&format!("ports/{}", pod.id)),
            json!({"port": {"security_groups": [groups[1]]}}),
        )
        .await?;
        wait_until(
            "the pod cut off by a group with no ingress rule",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async { Ok((!reaches(vm_ns, &ip(&pod))).then_some(())) },
        )
        .await?;
        for _ in 0..3 {
            assert!(
                !reaches(vm_ns, &ip(&pod)),
                "a ping got through the closed group"
            );
        }
        // and the pod is still plugged: the open group lets it be reached again
        s.put(
            &s.n(&format!("ports/{}", pod.id)),
            json!({"port": {"security_groups": [groups[0]]}}),
        )
        .await?;
        open().await?;

        let (rc, out) = cni(
            &CniCall {
                command: "DEL",
                ..call
            },
            &conf,
        );
        assert_eq!(rc, 0, "DEL: {out}");
        let links = [
            tap.clone(),
            qbr.clone(),
            format!("qvb{}", &pod.id[..11]),
            format!("qvo{}", &pod.id[..11]),
        ];
        eventually("tap, qbr, qvb, qvo gone", || {
            links.iter().all(|l| !link_exists(l))
        });
        drop((pod_ns, vm));
        Ok(())
    });
    finally(body, async move { drop_namespace(&c2, &ns2).await }).await
}
