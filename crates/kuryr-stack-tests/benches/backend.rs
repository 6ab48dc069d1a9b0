//! What the stack's Neutron backend costs, measured on the running stack
//! (`scripts/bench-backends` runs it on both backends in one go):
//!
//! - plugged → ACTIVE: a veth's end added to `br-int` with a bound port's
//!   `external_ids` (as kuryr-daemon and os-vif plug), then the time until
//!   Neutron shows the port ACTIVE (polled every 10 ms), one port at a time;
//! - on OVN, Octavia load balancer (`provider=ovn`) created → first answer
//!   through its VIP: load balancer, TCP listener, pool and one member
//!   created as kuryr does (each after the previous is ACTIVE), then a
//!   client asks the VIP every 20 ms until the member's token comes back.
//!
//! `sudo cargo bench -p kuryr-stack-tests --features stack --bench backend`
//! Environment: KURYR_BENCH_PORTS (100), KURYR_BENCH_LBS (10).

use anyhow::Context;
use kuryr_stack_tests::bench::{env_num, summary};
use kuryr_stack_tests::cmd::run;
use kuryr_stack_tests::echo::{EchoServer, ask};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::net::OvsPort;
use kuryr_stack_tests::openstack::{Session, with_undo};
use kuryr_stack_tests::plug::{Net, VmPort, id, port_status, wait_port_active};
use kuryr_stack_tests::{unique_name, wait_until};
use serde_json::json;
use std::time::{Duration, Instant};

/// A veth pair in the root namespace, both ends up; deleted on drop.
struct VethPair(String);

impl VethPair {
    fn new(name: &str) -> anyhow::Result<Self> {
        let peer = format!("{name}p");
        run(&[
            "ip", "link", "add", name, "type", "veth", "peer", "name", &peer,
        ])?;
        let v = Self(name.to_owned());
        run(&["ip", "link", "set", name, "up"])?;
        run(&["ip", "link", "set", &peer, "up"])?;
        Ok(v)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.0]);
    }
}

async fn plugged_to_active(env: &StackEnv, s: &Session, n: usize) -> anyhow::Result<Vec<Duration>> {
    let host = env.get("KURYR_STACK_AGENT_HOST")?.to_owned();
    let ovsdb = env.get("OVSDB_SOCK")?.to_owned();
    with_undo(s, async |undo| {
        let net = Net::create(s, undo, "10.232.0.0/22", None).await?;
        // the ports first, in bulk (not timed)
        let mut ports = Vec::new();
        for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
            let body: Vec<_> = chunk
                .iter()
                .map(|i| json!({"network_id": net.id, "name": format!("bench-{i}"),
                    "binding:host_id": host, "device_owner": "compute:kuryr", "device_id": format!("bench-{i}")}))
                .collect();
            let made = s.post(&s.n("ports"), json!({"ports": body})).await?;
            for p in made["ports"].as_array().context("ports")? {
                let pid = p["id"].as_str().context("id")?.to_owned();
                undo.delete(s.n(&format!("ports/{pid}")));
                let mac = p["mac_address"].as_str().context("mac")?.to_owned();
                ports.push((pid, mac));
            }
        }
        let (mut times, mut plugged) = (Vec::new(), Vec::new());
        for (i, (pid, mac)) in ports.iter().enumerate() {
            let name = format!("kbp{}x{i}", std::process::id() % 10_000);
            let veth = VethPair::new(&name)?;
            let ovs = OvsPort::add(
                &ovsdb,
                "br-int",
                &name,
                &[("iface-id", pid), ("attached-mac", mac), ("iface-status", "active")],
            )?;
            // ovs-vsctl returned: ovs-vswitchd has the port
            let t0 = Instant::now();
            wait_until(&format!("port {pid} ACTIVE"), Duration::from_secs(120), Duration::from_millis(10), || async {
                Ok((port_status(s, pid).await? == "ACTIVE").then_some(()))
            })
            .await?;
            times.push(t0.elapsed());
            // plugged until the end, as pods stay (unplugged on drop)
            plugged.push((ovs, veth));
            if (i + 1) % 25 == 0 {
                eprintln!("  {} of {n} ports ACTIVE", i + 1);
            }
        }
        drop(plugged);
        Ok(times)
    })
    .await
}

async fn lb_active(s: &Session, lb: &str) -> anyhow::Result<()> {
    wait_until(
        &format!("load balancer {lb} ACTIVE"),
        Duration::from_secs(120),
        Duration::from_millis(20),
        || async {
            let v = s.get(&s.o(&format!("loadbalancers/{lb}"))).await?;
            let st = v["loadbalancer"]["provisioning_status"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            anyhow::ensure!(st != "ERROR", "load balancer {lb} in ERROR");
            Ok((st == "ACTIVE").then_some(()))
        },
    )
    .await
}

/// (created → ACTIVE with its member, created → first answer) per LB.
async fn lb_first_answer(
    env: &StackEnv,
    s: &Session,
    n: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let router = env.get("KURYR_STACK_ROUTER")?.to_owned();
    with_undo(s, async |undo| {
        let net = Net::create(s, undo, "10.232.8.0/24", Some(&router)).await?;
        let member = VmPort::plug(s, undo, env, &net, None).await?;
        let client = VmPort::plug(s, undo, env, &net, None).await?;
        wait_port_active(s, &member.id).await?;
        wait_port_active(s, &client.id).await?;
        let server = EchoServer::start(&member.ns, "bench-member", &[8080], &[])?;
        let (mut active, mut answered) = (Vec::new(), Vec::new());
        for i in 0..n {
            let t0 = Instant::now();
            let lb = s
                .post(&s.o("loadbalancers"), json!({"loadbalancer": {
                    "name": unique_name("bench-lb-", 40), "vip_subnet_id": net.subnet_id, "provider": "ovn"}}))
                .await?;
            let lb_id = id(&lb, "loadbalancer")?;
            let vip = lb["loadbalancer"]["vip_address"].as_str().context("vip")?.to_owned();
            lb_active(s, &lb_id).await?;
            let l = s.post(&s.o("listeners"), json!({"listener": {
                "loadbalancer_id": lb_id, "protocol": "TCP", "protocol_port": 80}})).await?;
            lb_active(s, &lb_id).await?;
            let pool = s.post(&s.o("pools"), json!({"pool": {
                "listener_id": id(&l, "listener")?, "protocol": "TCP", "lb_algorithm": "SOURCE_IP_PORT"}})).await?;
            lb_active(s, &lb_id).await?;
            s.post(&s.o(&format!("pools/{}/members", id(&pool, "pool")?)), json!({"member": {
                "address": member.ip, "protocol_port": 8080, "subnet_id": net.subnet_id}})).await?;
            lb_active(s, &lb_id).await?;
            active.push(t0.elapsed());
            let addr = format!("{vip}:80");
            wait_until("first answer through the VIP", Duration::from_secs(60), Duration::from_millis(20), || async {
                Ok(ask(&client.ns, "tcp", &addr).ok().filter(|a| *a == server.token))
            })
            .await?;
            answered.push(t0.elapsed());
            s.delete(&format!("{}?cascade=true", s.o(&format!("loadbalancers/{lb_id}")))).await?;
            wait_until("load balancer deleted", Duration::from_secs(120), Duration::from_millis(100), || async {
                Ok(s.call(reqwest::Method::GET, &s.o(&format!("loadbalancers/{lb_id}")), None, true).await?.is_none().then_some(()))
            })
            .await?;
            eprintln!("  load balancer {} of {n}: first answer after {:?}", i + 1, answered[i]);
        }
        drop((server, member, client));
        Ok((active, answered))
    })
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let env = StackEnv::load()?;
    env.require("openstack")?;
    let backend = env.get("KURYR_STACK_NEUTRON_BACKEND")?.to_owned();
    let s = Session::login(&env).await?;
    let n = env_num("KURYR_BENCH_PORTS", 100);
    eprintln!("backend {backend}: plugging {n} ports one at a time");
    let mut t = plugged_to_active(&env, &s, n).await?;
    println!(
        "{backend:<4} plugged -> Neutron port ACTIVE          {}",
        summary(&mut t)
    );
    if backend == "ovn" {
        let lbs = env_num("KURYR_BENCH_LBS", 10);
        eprintln!("backend ovn: {lbs} Octavia load balancers (provider ovn)");
        let (mut active, mut answered) = lb_first_answer(&env, &s, lbs).await?;
        println!(
            "ovn  LB created -> ACTIVE with member       {}",
            summary(&mut active)
        );
        println!(
            "ovn  LB created -> first answer through VIP {}",
            summary(&mut answered)
        );
    } else {
        println!(
            "{backend:<4} LB created -> first answer: no provider carries traffic on this backend (amphora is no-op here)"
        );
    }
    Ok(())
}
