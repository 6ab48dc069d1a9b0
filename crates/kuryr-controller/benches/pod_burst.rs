//! Pod created → VIF active for a burst of pods, with no pool and with a
//! warm pool, against the stack's real kube-apiserver, Neutron and OVS
//! agent; prints p50/p99, Neutron requests per pod and the controller's
//! peak RSS.
//!
//! `sudo cargo bench -p kuryr-controller --features stack --bench pod_burst`
//! (stack up; `KURYR_BENCH_PODS`, default 100). The real kuryr-controller
//! binary runs as a process. Pods go to the stack's node (`localhost`, the
//! OVS agent's host) under a RuntimeClass no runtime has, so the kubelet
//! never starts them; the bench plugs each port into `br-int` itself the
//! moment its VIF appears (an OVS internal port with the port's
//! external_ids, as kuryr-daemon would), and the OVS agent wires it and
//! Neutron reports it ACTIVE. Times come from this process's clock: from
//! the pod's create call to the VIF in the KuryrPort, and to `active`.

#[path = "common/bench.rs"]
mod bench;

use bench::{clients, delete_pods};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use kuryr_crds::KuryrPort;
use kuryr_openstack::Query;
use kuryr_openstack::types::neutron::{NetworkCreate, SubnetCreate};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::k8s::{RUNTIME_CLASS_NONE, runtime_class_none};
use kuryr_stack_tests::{unique_name, wait_until};
use serde_json::json;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const METRICS: &str = "127.0.0.1:9664";

struct Run {
    label: &'static str,
    to_vif: Vec<f64>,
    to_active: Vec<f64>,
    wall: f64,
    requests_per_pod: f64,
    writes_per_pod: f64,
    rss_kib: u64,
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

async fn metrics() -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(METRICS).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// Sum of the OpenStack request counters (all, and writes only).
fn requests(m: &str) -> (f64, f64) {
    let mut all = 0.0;
    let mut writes = 0.0;
    for l in m
        .lines()
        .filter(|l| l.starts_with("kuryr_openstack_requests_total{"))
    {
        let v: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0.0);
        all += v;
        if !l.contains("method=\"GET\"") {
            writes += v;
        }
    }
    (all, writes)
}

fn free_ports(m: &str) -> f64 {
    m.lines()
        .filter(|l| l.starts_with("kuryr_pool_ports{") && l.contains("state=\"free\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn vsctl(sock: &str, args: &[&str]) -> anyhow::Result<()> {
    let st = Command::new("ovs-vsctl")
        .arg(format!("--db=unix:{sock}"))
        .arg("--timeout=30")
        .args(args)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(st.success(), "ovs-vsctl {args:?}");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    label: &'static str,
    env: &StackEnv,
    kube: &kube::Client,
    subnet: &str,
    node: &str,
    pods: usize,
    pool: bool,
    dir: &std::path::Path,
) -> anyhow::Result<Run> {
    let sock = env.get("OVSDB_SOCK")?.to_owned();
    let slug = label.replace(' ', "-");
    let ns = unique_name(&format!("bench-{slug}-"), 40);
    let nss: Api<Namespace> = Api::all(kube.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
    )
    .await?;
    let mut conf = format!("[neutron_defaults]\npod_subnet = {subnet}\n");
    if pool {
        conf.push_str(&format!(
            "[kubernetes]\nvif_pool_driver = neutron\n[vif_pool]\nports_pool_min = {pods}\nports_pool_batch = 50\nports_pool_update_frequency = 2\n"
        ));
    }
    let conf_path = dir.join(format!("{slug}.conf"));
    std::fs::write(&conf_path, conf)?;
    let cluster = unique_name("bench", 30);
    let mut c = Command::new(env!("CARGO_BIN_EXE_kuryr-controller"));
    c.args(["--config-file", &conf_path.to_string_lossy()])
        .args(["--kubeconfig", env.get("KUBECONFIG")?])
        .args(["--cluster-id", &cluster])
        .args(["--pod-selector", &format!("kuryr-bench={ns}")])
        .args(["--metrics-address", METRICS])
        .args(["--no-leader-election", "--gc-interval", "0"])
        .args([
            "--pool-prefill-nodes",
            &format!("kubernetes.io/hostname={node}"),
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{slug}.log")))?);
    for (k, v) in env.vars_with_prefix("OS_") {
        c.env(k, v);
    }
    c.env_remove("OS_CLOUD");
    let mut child = c.spawn()?;
    let pid = child.id();
    let plugged: Arc<Mutex<Vec<String>>> = Arc::default();
    let res = async {
        wait_until("controller metrics", Duration::from_secs(60), Duration::from_millis(200), || async {
            Ok(metrics().await.ok())
        })
        .await?;
        if pool {
            eprintln!("[{label}] waiting for the pool of {node} to hold {pods} free ports");
            wait_until("warm pool", Duration::from_secs(600), Duration::from_secs(1), || async {
                Ok((free_ports(&metrics().await?) >= pods as f64).then_some(()))
            })
            .await?;
        }
        let (req0, w0) = requests(&metrics().await?);
        let kps: Api<KuryrPort> = Api::namespaced(kube.clone(), &ns);
        let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let vif_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let active_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        // the plugger: a VIF appears → its port goes into br-int
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, String)>();
        let watch = {
            let (vif_at, active_at) = (vif_at.clone(), active_at.clone());
            tokio::spawn(async move {
                let mut s = watcher(kps, watcher::Config::default()).boxed();
                while let Some(ev) = s.next().await {
                    let objs = match ev {
                        Ok(watcher::Event::Apply(k)) | Ok(watcher::Event::InitApply(k)) => vec![k],
                        _ => continue,
                    };
                    for k in objs {
                        let uid = k.spec.pod_uid.clone();
                        let Some(v) = k.status.as_ref().and_then(|s| s.default_vif()) else { continue };
                        let now = Instant::now();
                        let first = {
                            let mut m = vif_at.lock().unwrap();
                            let new = !m.contains_key(&uid);
                            m.entry(uid.clone()).or_insert(now);
                            new
                        };
                        if first {
                            let _ = tx.send((v.id.clone(), v.address.clone(), uid.clone()));
                        }
                        if v.active {
                            active_at.lock().unwrap().entry(uid).or_insert(now);
                        }
                    }
                }
            })
        };
        let plugger = {
            let plugged = plugged.clone();
            let sock = sock.clone();
            tokio::spawn(async move {
                let limit = Arc::new(tokio::sync::Semaphore::new(4));
                while let Some((port, mac, uid)) = rx.recv().await {
                    let permit = limit.clone().acquire_owned().await.expect("open");
                    let (plugged, sock) = (plugged.clone(), sock.clone());
                    tokio::task::spawn_blocking(move || {
                        let name = kuryr_crds::vif::vif_name(&port);
                        let r = vsctl(&sock, &[
                            "--may-exist", "add-port", "br-int", &name, "--", "set", "Interface", &name,
                            "type=internal",
                            &format!("external_ids:iface-id={port}"),
                            &format!("external_ids:attached-mac={mac}"),
                            "external_ids:iface-status=active",
                            &format!("external_ids:vm-uuid={uid}"),
                        ]);
                        if let Err(e) = r {
                            eprintln!("plugging {port}: {e}");
                        }
                        plugged.lock().unwrap().push(name);
                        drop(permit);
                    });
                }
            })
        };
        let pods_api: Api<Pod> = Api::namespaced(kube.clone(), &ns);
        let t0 = Instant::now();
        for i in 0..pods {
            let p: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("b-{i:03}"), "labels": {"kuryr-bench": ns}},
                "spec": {"nodeName": node, "runtimeClassName": RUNTIME_CLASS_NONE, "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "c", "image": "localhost/kuryr-test/busybox:latest"}]}}))?;
            let before = Instant::now();
            let made = pods_api.create(&PostParams::default(), &p).await?;
            created.lock().unwrap().insert(made.metadata.uid.unwrap_or_default(), before);
        }
        eprintln!("[{label}] {pods} pods created in {:.1} s", t0.elapsed().as_secs_f64());
        wait_until("every VIF active", Duration::from_secs(900), Duration::from_millis(200), || async {
            Ok((active_at.lock().unwrap().len() >= pods).then_some(()))
        })
        .await?;
        let wall = t0.elapsed().as_secs_f64();
        let (req1, w1) = requests(&metrics().await?);
        watch.abort();
        plugger.abort();
        let created = created.lock().unwrap().clone();
        let since = |m: &HashMap<String, Instant>| -> Vec<f64> {
            m.iter()
                .filter_map(|(u, t)| Some(t.duration_since(*created.get(u)?).as_secs_f64()))
                .collect()
        };
        let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))?
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        Ok::<_, anyhow::Error>(Run {
            label,
            to_vif: since(&vif_at.lock().unwrap()),
            to_active: since(&active_at.lock().unwrap()),
            wall,
            requests_per_pod: (req1 - req0) / pods as f64,
            writes_per_pod: (w1 - w0) / pods as f64,
            rss_kib,
        })
    }
    .await;
    // clean up: pods (the controller releases their ports), OVS ports, the controller
    let pods_api: Api<Pod> = Api::namespaced(kube.clone(), &ns);
    delete_pods(&pods_api).await;
    for name in plugged.lock().unwrap().iter() {
        let _ = vsctl(&sock, &["--if-exists", "del-port", "br-int", name]);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let _ = nss.delete(&ns, &DeleteParams::default()).await;
    res
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pods: usize = std::env::var("KURYR_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let env = StackEnv::load()?;
    env.require("kubelet")?;
    let node = env.get("KURYR_STACK_NODE")?.to_owned();
    let (kube, os) = clients(&env).await?;
    // a RuntimeClass no runtime has: the kubelet never starts the pods
    runtime_class_none(&kube).await?;
    let n = os.neutron();
    let net = n
        .create_network(&NetworkCreate {
            name: Some(unique_name("bench-net-", 40)),
            ..Default::default()
        })
        .await?;
    let dir = std::env::temp_dir().join(unique_name("kuryr-bench-", 40));
    std::fs::create_dir_all(&dir)?;
    let res = async {
        let sub = n
            .create_subnet(&SubnetCreate {
                network_id: net.id.clone(),
                ip_version: 4,
                cidr: Some("10.226.0.0/22".into()),
                ..Default::default()
            })
            .await?;
        let mut runs = Vec::new();
        for (label, pool) in [("no pool", false), ("warm pool", true)] {
            eprintln!("[{label}] {pods} pods at once");
            runs.push(run_one(label, &env, &kube, &sub.id, &node, pods, pool, &dir).await?);
        }
        Ok::<_, anyhow::Error>(runs)
    }
    .await;
    for p in n
        .list_ports(&Query::new().filter("network_id", &net.id))
        .await
        .unwrap_or_default()
    {
        let _ = n.delete_port(&p.id).await;
    }
    let _ = n.delete_network(&net.id).await;
    let runs = res?;
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nkuryr-controller, {pods} pods at once, pod create call → (s):");
    println!(
        "| mode | VIF in KuryrPort p50 / p99 | VIF active p50 / p99 | all active | OpenStack requests per pod (writes) | controller peak RSS |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.1} s | {:.2} ({:.2}) | {:.1} MiB |",
            r.label,
            pct(&r.to_vif, 50.0),
            pct(&r.to_vif, 99.0),
            pct(&r.to_active, 50.0),
            pct(&r.to_active, 99.0),
            r.wall,
            r.requests_per_pod,
            r.writes_per_pod,
            r.rss_kib as f64 / 1024.0
        );
    }
    Ok(())
}
