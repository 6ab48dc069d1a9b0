//! Smoke tests of the stack's networking on either Neutron backend (ML2/OVN
//! or ML2/openvswitch): ports plugged like VMs, security groups enforced by
//! the backend (OVN ACLs or the OVS firewall), the public network: a tenant
//! subnet behind the stack's router reaches the host and the kube-apiserver
//! through SNAT, and a floating IP reaches a port from the host.
//! Need `stack/stack up --openstack` (and `--k8s` for the API server) and root.
#![cfg(feature = "stack")]

use anyhow::{Context, ensure};
use kuryr_stack_tests::echo::{EchoServer, ask, ask_from_host};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::openstack::{Session, with_undo};
use kuryr_stack_tests::plug::{Net, VmPort, id, security_group, wait_port_active};
use kuryr_stack_tests::{unique_name, wait_until};
use serde_json::json;
use std::time::Duration;

async fn session() -> anyhow::Result<(StackEnv, Session)> {
    let env = StackEnv::load()?;
    env.require("openstack")?;
    let s = Session::login(&env).await?;
    Ok((env, s))
}

/// How long a backend may take to apply a security-group change to a port
/// that is already wired: OVN installs ACLs in milliseconds, the OVS agent
/// within a few of its 1 s polling cycles.
const SG_APPLIED: Duration = Duration::from_secs(30);

#[tokio::test]
async fn security_group_without_ingress_rules_cuts_a_port_off() -> anyhow::Result<()> {
    let (env, s) = session().await?;
    with_undo(&s, async |undo| {
        let net = Net::create(&s, undo, "10.231.1.0/24", None).await?;
        let a = VmPort::plug(&s, undo, &env, &net, None).await?;
        let b = VmPort::plug(&s, undo, &env, &net, None).await?;
        wait_port_active(&s, &a.id).await?;
        wait_port_active(&s, &b.id).await?;
        let server = EchoServer::start(&b.ns, "b-answers", &[8080], &[])?;
        let addr = format!("{}:8080", b.ip);
        // the default group admits its members: a reaches b
        ensure!(a.pings(&b.ip), "a cannot ping b in the default group");
        assert_eq!(ask(&a.ns, "tcp", &addr)?, server.token);

        // b's only group now has no ingress rule at all
        let closed = security_group(&s, undo, &[]).await?;
        s.put(
            &s.n(&format!("ports/{}", b.id)),
            json!({"port": {"security_groups": [closed]}}),
        )
        .await?;
        wait_until(
            "b closed to a",
            SG_APPLIED,
            Duration::from_millis(200),
            || async { Ok((!a.pings(&b.ip)).then_some(())) },
        )
        .await?;
        let err = ask(&a.ns, "tcp", &addr).expect_err("TCP to b passed its closed group");
        assert!(format!("{err:#}").contains("TCP connect"), "{err:#}");
        // b itself is not cut off from the network: it still reaches out
        // (its group allows egress), only what comes in is dropped

        // and back: the block was the group, nothing else
        let default = s
            .get(&s.n(&format!(
                "security-groups?name=default&project_id={}",
                s.project_id
            )))
            .await?;
        let default = default["security_groups"][0]["id"]
            .as_str()
            .context("no default group")?
            .to_owned();
        s.put(
            &s.n(&format!("ports/{}", b.id)),
            json!({"port": {"security_groups": [default]}}),
        )
        .await?;
        wait_until(
            "b open again",
            SG_APPLIED,
            Duration::from_millis(200),
            || async { Ok(a.pings(&b.ip).then_some(())) },
        )
        .await?;
        assert_eq!(ask(&a.ns, "tcp", &addr)?, server.token);
        drop((server, a, b));
        Ok(())
    })
    .await
}

/// A port on a tenant subnet attached to the stack's router reaches the
/// host's public address (SNAT to the router's gateway address) and the
/// kube-apiserver served there.
#[tokio::test]
async fn tenant_port_behind_the_router_reaches_the_host_and_the_api_server() -> anyhow::Result<()> {
    let (env, s) = session().await?;
    let router = env.get("KURYR_STACK_ROUTER")?.to_owned();
    let host_ip = env.get("KURYR_STACK_HOST_PUBLIC_IP")?.to_owned();
    let router_gw = env.get("KURYR_STACK_ROUTER_GW_IP")?.to_owned();
    with_undo(&s, async |undo| {
        let net = Net::create(&s, undo, "10.231.2.0/24", Some(&router)).await?;
        let vm = VmPort::plug(&s, undo, &env, &net, None).await?;
        wait_port_active(&s, &vm.id).await?;
        // the router's interface is wired after the test's port on ML2/OVS
        // (the L3 agent plugs it, then the OVS agent's next loop wires it):
        // the first answer is the event; the bound covers a few of the
        // agents' 1 s loops and a router update
        wait_until(
            &format!("an answer from the router's interface {}", net.gateway),
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async { Ok(vm.pings(&net.gateway).then_some(())) },
        )
        .await?;
        wait_until(
            &format!("an answer from the host's public address {host_ip}"),
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async { Ok(vm.pings(&host_ip).then_some(())) },
        )
        .await?;

        // a server on the host's public address sees the router's SNAT address
        let token = unique_name("host-", 30);
        let listener = std::net::TcpListener::bind((host_ip.as_str(), 0))?;
        let port = listener.local_addr()?.port();
        let t = token.clone();
        let server = std::thread::spawn(move || -> anyhow::Result<String> {
            use std::io::Write;
            let (mut c, peer) = listener.accept()?;
            c.write_all(format!("{t}\n").as_bytes())?;
            Ok(peer.ip().to_string())
        });
        assert_eq!(ask(&vm.ns, "tcp", &format!("{host_ip}:{port}"))?, token);
        let peer = server.join().expect("server thread")?;
        assert_eq!(
            peer, router_gw,
            "the host saw {peer}, not the router's SNAT address"
        );

        // the API server on the public address, through TLS: its own answer
        if env.has("k8s") {
            let ready = vm.ns.exec(&[
                "curl",
                "-s",
                "--max-time",
                "10",
                "--cacert",
                env.get("KURYR_STACK_K8S_CA")?,
                &format!("{}/readyz", env.get("KURYR_STACK_APISERVER_PUBLIC")?),
            ])?;
            assert_eq!(
                ready.trim(),
                "ok",
                "kube-apiserver /readyz from the pod network"
            );
        } else {
            kuryr_stack_tests::skip(
                "tenant port reaches the API server",
                "component k8s is not up",
            );
        }
        drop(vm);
        Ok(())
    })
    .await
}

/// A floating IP on the public network reaches a port from the host (ICMP
/// and TCP, through the backend's DNAT), once its group admits the host.
#[tokio::test]
async fn floating_ip_reaches_a_port_from_the_host() -> anyhow::Result<()> {
    let (env, s) = session().await?;
    let router = env.get("KURYR_STACK_ROUTER")?.to_owned();
    let public = env.get("KURYR_STACK_PUBLIC_NET")?.to_owned();
    with_undo(&s, async |undo| {
        let net = Net::create(&s, undo, "10.231.3.0/24", Some(&router)).await?;
        let open = security_group(
            &s,
            undo,
            &[
                json!({"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp"}),
                json!({"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                       "port_range_min": 8080, "port_range_max": 8080}),
            ],
        )
        .await?;
        let vm = VmPort::plug(&s, undo, &env, &net, Some(&[open.as_str()])).await?;
        wait_port_active(&s, &vm.id).await?;
        let server = EchoServer::start(&vm.ns, &unique_name("fip-", 30), &[8080], &[])?;
        let fip = s
            .post(
                &s.n("floatingips"),
                json!({"floatingip": {"floating_network_id": public, "port_id": vm.id}}),
            )
            .await?;
        let fip_id = id(&fip, "floatingip")?;
        undo.delete(s.n(&format!("floatingips/{fip_id}")));
        let addr = fip["floatingip"]["floating_ip_address"]
            .as_str()
            .context("floating_ip_address")?
            .to_owned();
        // the NAT rules are in place when the first answer comes
        let answer = wait_until(
            &format!("answer through floating IP {addr}"),
            Duration::from_secs(60),
            Duration::from_millis(300),
            || async { Ok(ask_from_host("tcp", &format!("{addr}:8080")).ok()) },
        )
        .await?;
        assert_eq!(answer, server.token);
        let ping = kuryr_stack_tests::cmd::run(&["ping", "-c", "1", "-W", "2", &addr])?;
        assert!(ping.contains("1 received"), "{ping}");
        drop((server, vm));
        Ok(())
    })
    .await
}
