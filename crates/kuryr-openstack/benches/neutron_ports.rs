//! Port create/delete throughput against the stack's real Neutron: kuryr-rs's
//! client one by one, in bulk, and one by one with calls in flight together,
//! side by side with openstacksdk and the `openstack` CLI in the same run.
//!
//! `cargo bench -p kuryr-openstack --bench neutron_ports`
//! Environment: KURYR_BENCH_PORTS (100), KURYR_BENCH_BATCH (50),
//! KURYR_BENCH_CLI_PORTS (10: the CLI costs ~1.5 s a command).

use kuryr_openstack::types::neutron::*;
use kuryr_openstack::{Client, ClientOptions, CloudConfig};
use kuryr_stack_tests::env::StackEnv;
use std::process::Command;
use std::time::{Duration, Instant};

fn env_num(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{:8.1} ports/s  ({:6.2} s for {n})",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64()
    )
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // cargo bench --list: nothing to enumerate
    }
    let n = env_num("KURYR_BENCH_PORTS", 100);
    let batch = env_num("KURYR_BENCH_BATCH", 50).max(1);
    let cli_n = env_num("KURYR_BENCH_CLI_PORTS", 10);
    let env = StackEnv::load()?;
    env.require("openstack")?;
    let cfg = CloudConfig::from_vars(|k| env.get(k).ok().map(str::to_owned))?;
    let c = Client::with_options(
        cfg,
        ClientOptions {
            max_in_flight: 8,
            ..Default::default()
        },
    )?;
    let nt = c.neutron();
    let net = nt
        .create_network(&NetworkCreate {
            name: Some("kuryr-bench".into()),
            ..Default::default()
        })
        .await?;
    let sub = nt
        .create_subnet(&SubnetCreate {
            network_id: net.id.clone(),
            ip_version: 4,
            cidr: Some("10.240.0.0/20".into()),
            ..Default::default()
        })
        .await?;
    println!(
        "Neutron port throughput, {n} ports, bulk batches of {batch} (network {})",
        net.id
    );
    let res = run(&c, &net.id, n, batch, cli_n, &env).await;
    nt.delete_subnet(&sub.id).await?;
    nt.delete_network(&net.id).await?;
    res
}

async fn run(
    c: &Client,
    net: &str,
    n: usize,
    batch: usize,
    cli_n: usize,
    env: &StackEnv,
) -> anyhow::Result<()> {
    let nt = c.neutron();
    let body = |i: usize| PortCreate {
        network_id: net.to_owned(),
        name: Some(format!("bench-{i}")),
        ..Default::default()
    };

    // one by one, sequential
    let mut lat = Vec::with_capacity(n);
    let t = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let t1 = Instant::now();
        ids.push(nt.create_port(&body(i)).await?.id);
        lat.push(t1.elapsed());
    }
    let single = t.elapsed();
    let t = Instant::now();
    for id in &ids {
        nt.delete_port(id).await?;
    }
    let delete = t.elapsed();
    println!(
        "kuryr-rs   create, one by one     {}  p50 {:.0} ms p99 {:.0} ms",
        rate(n, single),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    println!("kuryr-rs   delete, one by one     {}", rate(n, delete));

    // bulk
    let t = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for start in (0..n).step_by(batch) {
        let bodies: Vec<PortCreate> = (start..n.min(start + batch)).map(body).collect();
        ids.extend(nt.create_ports(&bodies).await?.into_iter().map(|p| p.id));
    }
    let bulk = t.elapsed();
    println!("kuryr-rs   create, bulk of {batch:<4}    {}", rate(n, bulk));

    // one by one, 8 in flight (deletes of the bulk ports, then creates)
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for id in ids {
        let nt = nt.clone();
        set.spawn(async move { nt.delete_port(&id).await });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let par_delete = t.elapsed();
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (nt, b) = (nt.clone(), body(i));
        set.spawn(async move { nt.create_port(&b).await.map(|p| p.id) });
    }
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        ids.push(r??);
    }
    let par_create = t.elapsed();
    println!("kuryr-rs   create, 8 in flight    {}", rate(n, par_create));
    println!("kuryr-rs   delete, 8 in flight    {}", rate(n, par_delete));
    for id in &ids {
        nt.delete_port(id).await?;
    }

    // openstacksdk, same operations (Debian's python3-openstacksdk, the library of the CLI)
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/neutron_ports_sdk.py");
    let out = Command::new("/usr/bin/python3")
        .args([script, net, &n.to_string(), &batch.to_string()])
        .envs(os_vars(env))
        .output()?;
    if out.status.success() {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let d = |k: &str| Duration::from_secs_f64(v[k].as_f64().unwrap_or(f64::NAN));
        println!(
            "openstacksdk create, one by one   {}   ({:.1}x slower than kuryr-rs)",
            rate(n, d("sdk_single_create_s")),
            d("sdk_single_create_s").as_secs_f64() / single.as_secs_f64()
        );
        println!(
            "openstacksdk delete, one by one   {}",
            rate(n, d("sdk_delete_s"))
        );
        println!(
            "openstacksdk create, bulk of {batch:<4}  {}",
            rate(n, d("sdk_bulk_create_s"))
        );
    } else {
        println!(
            "openstacksdk: SKIP ({})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        );
    }

    // the openstack CLI: a Python process per command
    let t = Instant::now();
    let mut ok = 0;
    for i in 0..cli_n {
        let o = Command::new("openstack")
            .args([
                "port",
                "create",
                "--network",
                net,
                "-f",
                "value",
                "-c",
                "id",
                &format!("cli-{i}"),
            ])
            .envs(os_vars(env))
            .output()?;
        if o.status.success() {
            ok += 1;
            let id = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            nt.delete_port(&id).await?;
        }
    }
    let cli = t.elapsed();
    if ok == cli_n {
        println!(
            "openstack CLI create (+ delete by kuryr-rs)  {}",
            rate(cli_n, cli)
        );
    } else {
        println!("openstack CLI: SKIP ({ok} of {cli_n} creates worked)");
    }
    Ok(())
}

/// The `OS_*` variables of the stack (the bench may run without them set).
fn os_vars(env: &StackEnv) -> Vec<(String, String)> {
    [
        "OS_AUTH_URL",
        "OS_USERNAME",
        "OS_PASSWORD",
        "OS_PROJECT_NAME",
        "OS_USER_DOMAIN_NAME",
        "OS_PROJECT_DOMAIN_NAME",
        "OS_REGION_NAME",
        "OS_IDENTITY_API_VERSION",
        "OS_INTERFACE",
    ]
    .iter()
    .filter_map(|k| env.get(k).ok().map(|v| (k.to_string(), v.to_owned())))
    .collect()
}
