//! Smoke tests of what only the OVN backend has: the node as an OVN chassis
//! and Octavia's `ovn` provider making real load balancers, TCP and UDP on
//! one port number. On the ML2/openvswitch backend each test records a skip.
//! Need `stack/stack up --openstack` and root.
#![cfg(feature = "stack")]

use anyhow::{Context, ensure};
use kuryr_stack_tests::cmd::run;
use kuryr_stack_tests::echo::{EchoServer, ask};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::openstack::{Session, Undo, with_undo};
use kuryr_stack_tests::plug::{Net, VmPort, id, wait_port_active};
use kuryr_stack_tests::{skip, unique_name, wait_until};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// The stack's env and a session when the backend is OVN; `None` (and a
/// recorded skip) otherwise.
async fn ovn_session(test: &str) -> anyhow::Result<Option<(StackEnv, Session)>> {
    let env = StackEnv::load()?;
    env.require("openstack")?;
    let backend = env.get("KURYR_STACK_NEUTRON_BACKEND")?;
    if backend != "ovn" {
        skip(
            test,
            &format!("needs the ovn Neutron backend, the stack runs {backend}"),
        );
        return Ok(None);
    }
    let s = Session::login(&env).await?;
    Ok(Some((env, s)))
}

fn sbctl(env: &StackEnv, args: &[&str]) -> anyhow::Result<String> {
    let db = format!("--db={}", env.get("KURYR_STACK_OVN_SB")?);
    let mut v = vec!["ovn-sbctl", &db, "--timeout=20"];
    v.extend_from_slice(args);
    Ok(run(&v)?.trim().to_owned())
}

#[tokio::test]
async fn the_node_is_a_gateway_chassis_with_geneve() -> anyhow::Result<()> {
    let Some((env, s)) = ovn_session("ovn chassis").await? else {
        return Ok(());
    };
    let node = env.get("KURYR_STACK_NODE")?;
    assert_eq!(
        sbctl(
            &env,
            &[
                "--bare",
                "--columns=hostname",
                "find",
                "Chassis",
                &format!("name={node}")
            ]
        )?,
        node
    );
    let encap = sbctl(
        &env,
        &[
            "--bare",
            "--columns=type",
            "find",
            "Encap",
            &format!("chassis_name={node}"),
        ],
    )?;
    assert_eq!(encap, "geneve");
    let other = sbctl(&env, &["get", "Chassis", node, "other_config"])?;
    assert!(other.contains("enable-chassis-as-gw"), "{other}");
    assert!(other.contains("datapath-type=netdev"), "{other}");
    // and Neutron sees it as the node's agent. Neutron asks every chassis to
    // answer (it bumps NB_Global.nb_cfg) when the agent list is read and calls
    // an agent alive once its chassis has answered, so a read right after a
    // ping can see it not alive yet: wait for the answer, for longer than
    // Neutron's agent_down_time (75 s).
    wait_until(
        &format!("an alive OVN controller agent for {node}"),
        Duration::from_secs(90),
        Duration::from_secs(1),
        || async {
            let agents = s.get(&s.n(&format!("agents?host={node}"))).await?;
            let alive = agents["agents"]
                .as_array()
                .context("agents")?
                .iter()
                .filter(|a| a["alive"] == true)
                .filter_map(|a| a["agent_type"].as_str())
                .any(|k| k.starts_with("OVN Controller"));
            if alive {
                Ok(Some(()))
            } else {
                let private = sbctl(&env, &["list", "Chassis_Private", node])?;
                Err(anyhow::anyhow!(
                    "agents {agents}; southbound Chassis_Private: {private}"
                ))
            }
        },
    )
    .await?;
    Ok(())
}

/// Waits until every chassis has applied what the northbound database holds
/// now (`ovn-nbctl --wait=hv sync`): Octavia's ovn provider reports ACTIVE
/// once it has written the database, before ovn-controller has installed it.
fn ovn_applied(env: &StackEnv) -> anyhow::Result<()> {
    let db = format!("--db={}", env.get("KURYR_STACK_OVN_NB")?);
    run(&["ovn-nbctl", &db, "--timeout=30", "--wait=hv", "sync"])?;
    Ok(())
}

async fn lb_status(s: &Session, lb: &str) -> anyhow::Result<String> {
    let v = s.get(&s.o(&format!("loadbalancers/{lb}"))).await?;
    let st = v["loadbalancer"]["provisioning_status"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(st != "ERROR", "load balancer {lb} went to ERROR: {v}");
    Ok(st)
}

async fn wait_lb_active(s: &Session, lb: &str) -> anyhow::Result<()> {
    wait_until(
        &format!("load balancer {lb} ACTIVE"),
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { Ok((lb_status(s, lb).await? == "ACTIVE").then_some(())) },
    )
    .await
}

/// POSTs an Octavia object and waits for its load balancer to be ACTIVE.
async fn lb_post(s: &Session, lb: &str, path: &str, body: Value) -> anyhow::Result<Value> {
    let v = s.post(&s.o(path), body).await?;
    wait_lb_active(s, lb).await?;
    Ok(v)
}

/// Which members answered `tries` fresh connections (new source port each)
/// to `vip` over `proto`, counted by their tokens.
fn spread(client: &VmPort, proto: &str, vip: &str, tries: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..tries {
        let answer = ask(&client.ns, proto, vip).unwrap_or_else(|e| format!("error: {e:#}"));
        *seen.entry(answer).or_insert(0) += 1;
    }
    seen
}

/// An Octavia load balancer with `provider=ovn`: TCP and UDP listeners on
/// the same port number, each with a pool of two members answering
/// differently. Connections through the VIP from a third port reach both
/// members over both protocols; a member taken out of the pools gets nothing
/// more.
#[tokio::test]
async fn ovn_load_balancer_serves_tcp_and_udp_on_one_port() -> anyhow::Result<()> {
    let Some((env, s)) = ovn_session("octavia ovn provider").await? else {
        return Ok(());
    };
    let router = env.get("KURYR_STACK_ROUTER")?.to_owned();
    with_undo(&s, async |undo: &Undo| {
        let net = Net::create(&s, undo, "10.231.4.0/24", Some(&router)).await?;
        // all in the project's default group, which admits its members
        let a = VmPort::plug(&s, undo, &env, &net, None).await?;
        let b = VmPort::plug(&s, undo, &env, &net, None).await?;
        let client = VmPort::plug(&s, undo, &env, &net, None).await?;
        for p in [&a, &b, &client] {
            wait_port_active(&s, &p.id).await?;
        }
        let sa = EchoServer::start(&a.ns, "member-a", &[8080], &[8080])?;
        let sb = EchoServer::start(&b.ns, "member-b", &[8080], &[8080])?;

        let lb = s
            .post(
                &s.o("loadbalancers"),
                json!({"loadbalancer": {"name": unique_name("smoke-ovn-lb-", 40),
                    "vip_subnet_id": net.subnet_id, "provider": "ovn"}}),
            )
            .await?;
        let lb_id = id(&lb, "loadbalancer")?;
        undo.wait_gone(s.o(&format!("loadbalancers/{lb_id}")));
        undo.delete(format!(
            "{}?cascade=true",
            s.o(&format!("loadbalancers/{lb_id}"))
        ));
        let vip = lb["loadbalancer"]["vip_address"]
            .as_str()
            .context("vip_address")?
            .to_owned();
        wait_lb_active(&s, &lb_id).await?;
        let mut members: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
        for proto in ["TCP", "UDP"] {
            let l = lb_post(
                &s,
                &lb_id,
                "listeners",
                json!({"listener": {
                "loadbalancer_id": lb_id, "protocol": proto, "protocol_port": 53}}),
            )
            .await?;
            let l = id(&l, "listener")?;
            // the ovn provider balances by 5-tuple hash only
            let pool = lb_post(
                &s,
                &lb_id,
                "pools",
                json!({"pool": {
                "listener_id": l, "protocol": proto, "lb_algorithm": "SOURCE_IP_PORT"}}),
            )
            .await?;
            let pool = id(&pool, "pool")?;
            for m in [&a, &b] {
                let v = lb_post(
                    &s,
                    &lb_id,
                    &format!("pools/{pool}/members"),
                    json!({"member": {
                    "address": m.ip, "protocol_port": 8080, "subnet_id": net.subnet_id}}),
                )
                .await?;
                members
                    .entry(proto)
                    .or_default()
                    .push((pool.clone(), id(&v, "member")?));
            }
        }
        // on every chassis now; 40 fresh source ports miss a member with
        // probability 2^-39
        ovn_applied(&env)?;
        for proto in ["tcp", "udp"] {
            let seen = spread(&client, proto, &format!("{vip}:53"), 40);
            ensure!(
                seen.get("member-a").is_some_and(|n| *n > 0)
                    && seen.get("member-b").is_some_and(|n| *n > 0)
                    && seen.len() == 2,
                "{proto} through VIP {vip}:53 did not reach both members (and only them): {seen:?}"
            );
        }
        // member b leaves both pools: it gets nothing more
        for proto in ["TCP", "UDP"] {
            let (pool, member) = &members[proto][1];
            s.delete(&s.o(&format!("pools/{pool}/members/{member}")))
                .await?;
            wait_lb_active(&s, &lb_id).await?;
        }
        ovn_applied(&env)?;
        for proto in ["tcp", "udp"] {
            let seen = spread(&client, proto, &format!("{vip}:53"), 20);
            ensure!(
                seen.len() == 1 && seen.contains_key("member-a"),
                "{proto} after member b left: {seen:?}"
            );
        }
        drop((sa, sb, a, b, client));
        Ok(())
    })
    .await
}
