//! The node's own port plugged by kuryr-daemon as a host interface, from a
//! real Neutron port recorded in the Node's annotation: the port goes
//! ACTIVE, the host reaches a pod-like port on that network (ICMP and TCP,
//! answered by a token), the interface survives a SIGKILL of the daemon, is
//! made again by a restarted daemon when someone deleted it, and is removed
//! when the annotation goes.
#![cfg(feature = "stack")]

mod common;

use common::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kuryr_crds::{NODE_PORT_ANNOTATION, NodePort, Vif, VifKind};
use kuryr_openstack::types::neutron::{Network, Port, Subnet};
use kuryr_stack_tests::echo::{EchoServer, ask_from_host};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::openstack::{Session, with_undo};
use kuryr_stack_tests::plug::{Net, VmPort, wait_port_active};
use kuryr_stack_tests::{unique_name, wait_until};
use serde_json::json;
use std::time::Duration;

fn host_pings(ip: &str) -> bool {
    kuryr_stack_tests::cmd::run(&["ping", "-c", "1", "-W", "2", ip])
        .is_ok_and(|o| o.contains("1 received"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_port_is_plugged_kept_restored_and_removed() -> anyhow::Result<()> {
    let env = StackEnv::load()?;
    env.require("k8s")?;
    env.require("openstack")?;
    let s = Session::login(&env).await?;
    let host = env.get("KURYR_STACK_AGENT_HOST")?.to_owned();
    let client = kube_client(&env).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let iface = unique_name("kn", 15);
    let mut d = Daemon::start(&env, &[("KURYR_NODE_PORT__INTERFACE", iface.as_str())])?;
    let node = d.node.clone();
    let body = with_undo(&s, async |undo| {
        let net = Net::create(&s, undo, "10.233.7.0/24", None).await?;
        let pod = VmPort::plug(&s, undo, &env, &net, None).await?;
        // the node's port, as kuryr-controller makes it (bound to the
        // stack's chassis, in the project's default group like the pod)
        let p = s
            .post(
                &s.n("ports"),
                json!({"port": {"network_id": net.id, "name": format!("kuryr-node/{node}"),
                "binding:host_id": host, "device_owner": "compute:kuryr-node", "device_id": node}}),
            )
            .await?;
        let port: Port = serde_json::from_value(p["port"].clone())?;
        undo.delete(s.n(&format!("ports/{}", port.id)));
        let network: Network = serde_json::from_value(
            s.get(&s.n(&format!("networks/{}", net.id))).await?["network"].clone(),
        )?;
        let subnet: Subnet = serde_json::from_value(
            s.get(&s.n(&format!("subnets/{}", net.subnet_id))).await?["subnet"].clone(),
        )?;
        let np = NodePort {
            vif: Vif::from_port(
                &port,
                &network,
                &[subnet],
                VifKind::OpenVSwitch {
                    bridge_name: "br-int".into(),
                },
            ),
            routes: vec![],
        };
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": node,
                    "annotations": {NODE_PORT_ANNOTATION: np.to_annotation()}}}))?,
            )
            .await?;

        // plugged: the host interface with the port's MAC and address, ACTIVE
        eventually("the node's interface", || link_exists(&iface));
        wait_port_active(&s, &port.id).await?;
        wait_port_active(&s, &pod.id).await?;
        let addr = kuryr_stack_tests::cmd::run(&["ip", "-o", "addr", "show", "dev", &iface])?;
        assert!(
            addr.contains(&format!("{}/24", port.first_ip().unwrap_or("-"))),
            "{addr}"
        );
        let link = kuryr_stack_tests::cmd::run(&["ip", "-o", "link", "show", "dev", &iface])?;
        assert!(link.contains(&port.mac_address), "{link}");
        let routes = kuryr_stack_tests::cmd::run(&["ip", "route", "show", "dev", &iface])?;
        assert!(
            !routes.contains("default"),
            "no default route through the node port: {routes}"
        );
        let server = EchoServer::start(&pod.ns, &unique_name("pod-", 30), &[8080], &[])?;
        let reach = || -> anyhow::Result<()> {
            anyhow::ensure!(
                host_pings(&pod.ip),
                "the host cannot ping the pod {}",
                pod.ip
            );
            let got = ask_from_host("tcp", &format!("{}:8080", pod.ip))?;
            anyhow::ensure!(got == server.token, "answered {got:?}, not the pod");
            Ok(())
        };
        reach()?;
        assert!(http_get(&d.metrics, "/metrics")?.contains("kuryr_node_port_plugged 1"));

        // SIGKILL: the node keeps reaching its pods
        d.kill();
        reach()?;
        // someone deletes the interface; a new daemon makes it again
        kuryr_stack_tests::cmd::run(&["ip", "link", "del", &iface])?;
        d.spawn(&env)?;
        eventually("the node's interface made again", || link_exists(&iface));
        wait_until(
            "the host reaches the pod again",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async { Ok(reach().ok()) },
        )
        .await?;

        // the annotation goes: so does the interface and its OVS port
        let patch = json!({"metadata": {"annotations": {NODE_PORT_ANNOTATION: null}}});
        nodes
            .patch(&node, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        eventually("the node's interface removed", || !link_exists(&iface));
        let left = vsctl(
            &env,
            &[
                "--columns=name",
                "find",
                "Interface",
                &format!("external_ids:kuryr-node-port={node}"),
            ],
        );
        assert!(left.trim().is_empty(), "OVS ports left: {left}");
        drop((server, pod));
        Ok(())
    })
    .await;
    let _ = nodes.delete(&node, &DeleteParams::default()).await;
    if link_exists(&iface) {
        let _ = kuryr_stack_tests::cmd::run(&["ip", "link", "del", &iface]);
    }
    drop(d);
    body
}
