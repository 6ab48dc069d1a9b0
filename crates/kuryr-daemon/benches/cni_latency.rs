//! CNI ADD and DEL latency, exec to exit, side by side in one run:
//! kuryr-cni + kuryr-daemon (VIF already active in the KuryrPort, veth into
//! the stack's OVS br-int) against the reference `bridge` + `host-local`
//! plugins from Debian's containernetworking-plugins. Each run gets a fresh
//! network namespace; the two plugins alternate so drift hits both alike.
//!
//! Needs root and `stack/stack up --ovs --k8s`; run with `scripts/bench-cni`
//! (it builds the release binaries first). `KURYR_BENCH_RUNS` (200).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::net::Netns;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REF_DIR: &str = "/usr/lib/cni";

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn reference(command: &str, cid: &str, netns: &str, conf: &serde_json::Value) -> (i32, String) {
    let mut c = Command::new(format!("{REF_DIR}/bridge"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REF_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bridge plugin runs");
    c.stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let runs: u32 = std::env::var("KURYR_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let env = StackEnv::load()?;
    env.require("k8s")?;
    env.require("ovs")?;
    anyhow::ensure!(
        std::path::Path::new(&format!("{REF_DIR}/bridge")).exists(),
        "{REF_DIR}/bridge missing: install Debian's containernetworking-plugins"
    );
    let client = kube_client(&env).await?;
    let ns = namespace(&client).await?;
    // production-like logging: info
    let d = Daemon::start(&env, &[("RUST_LOG", "info")])?;
    let pid = d.child.as_ref().map(|c| c.id()).unwrap_or(0);
    eprintln!("creating {runs} KuryrPorts with active VIFs...");
    for i in 0..runs {
        let vif = fake_vif(50_000 + i, "10.254.0.0/16", true);
        kuryrport(
            &client,
            &ns,
            &format!("b{i}"),
            &format!("ub{i}"),
            &d.node,
            Some(vif),
        )
        .await?;
    }
    let ipam_dir =
        std::env::temp_dir().join(kuryr_stack_tests::unique_name("kuryr-bench-ipam-", 60));
    let ref_conf = json!({"cniVersion": "1.0.0", "name": "kuryr-bench", "type": "bridge",
        "bridge": "kbench0", "isGateway": true, "ipMasq": false,
        "ipam": {"type": "host-local", "subnet": "10.253.0.0/16", "dataDir": ipam_dir}});
    let conf = d.conf("1.0.0");
    // warm both paths once (page cache, OVS, the bridge itself)
    let (mut k_add, mut k_del, mut r_add, mut r_del) = (vec![], vec![], vec![], vec![]);
    // the floor: exec of kuryr-cni answering VERSION by itself
    let mut floor = vec![];
    for _ in 0..runs {
        let call = CniCall {
            command: "VERSION",
            container_id: "",
            netns: "",
            ifname: "",
            pod: ("", "", ""),
        };
        let t = Instant::now();
        let _ = cni(&call, &conf);
        floor.push(t.elapsed());
    }
    let t_all = Instant::now();
    for i in 0..runs {
        let (kns, rns) = (Netns::new("kbk")?, Netns::new("kbr")?);
        let (kpath, rpath) = (
            format!("/var/run/netns/{}", kns.name),
            format!("/var/run/netns/{}", rns.name),
        );
        let cid = format!("bench-{i}");
        let (name, uid) = (format!("b{i}"), format!("ub{i}"));
        let call = CniCall {
            command: "ADD",
            container_id: &cid,
            netns: &kpath,
            ifname: "eth0",
            pod: (&ns, &name, &uid),
        };
        let t = Instant::now();
        let (rc, out) = cni(&call, &conf);
        k_add.push(t.elapsed());
        anyhow::ensure!(rc == 0, "kuryr ADD {i}: {out}");
        let t = Instant::now();
        let (rc, out) = reference("ADD", &cid, &rpath, &ref_conf);
        r_add.push(t.elapsed());
        anyhow::ensure!(rc == 0, "bridge ADD {i}: {out}");
        let t = Instant::now();
        let (rc, out) = cni(
            &CniCall {
                command: "DEL",
                ..call
            },
            &conf,
        );
        k_del.push(t.elapsed());
        anyhow::ensure!(rc == 0, "kuryr DEL {i}: {out}");
        let t = Instant::now();
        let (rc, out) = reference("DEL", &cid, &rpath, &ref_conf);
        r_del.push(t.elapsed());
        anyhow::ensure!(rc == 0, "bridge DEL {i}: {out}");
        if (i + 1) % 50 == 0 {
            eprintln!("  {}/{runs} runs ({:.0?})", i + 1, t_all.elapsed());
        }
    }
    let rss = rss_kib(pid);
    println!("CNI latency, exec to exit, {runs} runs each, same machine, same run (ms):");
    println!("{:<34} {:>8} {:>8} {:>8}", "", "p50", "p90", "p99");
    let mut rows = vec![];
    for (label, v) in [
        ("kuryr-cni+daemon ADD", &mut k_add),
        ("bridge+host-local ADD", &mut r_add),
        ("kuryr-cni+daemon DEL", &mut k_del),
        ("bridge+host-local DEL", &mut r_del),
    ] {
        let (a, b, c) = (pct(v, 0.5), pct(v, 0.9), pct(v, 0.99));
        println!("{label:<34} {a:>8.2} {b:>8.2} {c:>8.2}");
        rows.push(a);
    }
    println!(
        "{:<34} {:>8.2} {:>8.2} {:>8.2}",
        "exec floor: kuryr-cni VERSION",
        pct(&mut floor, 0.5),
        pct(&mut floor, 0.9),
        pct(&mut floor, 0.99)
    );
    println!(
        "ratio bridge/kuryr at p50: ADD {:.2}x, DEL {:.2}x",
        rows[1] / rows[0],
        rows[3] / rows[2]
    );
    println!(
        "kuryr-daemon RSS after the run: {:.1} MiB",
        rss as f64 / 1024.0
    );
    drop(d);
    let _ = Command::new("ip").args(["link", "del", "kbench0"]).status();
    let _ = std::fs::remove_dir_all(&ipam_dir);
    drop_namespace(&client, &ns).await?;
    Ok(())
}
