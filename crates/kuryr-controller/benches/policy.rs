//! NetworkPolicy enforcement timed end to end against the stack's
//! kube-apiserver, Neutron and OVN, once per representation of pod peers
//! (`[kubernetes] network_policy_peers = remote_group`, then `ip_prefix`),
//! or with `KURYR_BENCH_PEER` set to a command
//! (`scripts/peer/policy-controller`) once against the controller that
//! command starts instead: kuryr-kubernetes 10.0.0 scoped to the bench's
//! namespace (`sudo scripts/bench-policy` runs both):
//!
//! - **policy created → enforced**: a server pod answers TCP 80; a pod the
//!   policy does not admit asks it every 20 ms (each try gives up after
//!   300 ms) from before the policy is created until its tries have failed
//!   for a second: the first of those failures is the first denied
//!   connection (a lone miss on a loaded machine is not a denial). Then
//!   the admitted client asks; if it is refused, how long it stays refused
//!   is recorded (OVN bringing the rules into force), and the bench fails
//!   if it still is after 30 s. `KURYR_BENCH_ROUNDS` (20) rounds; between
//!   rounds the policy is deleted and the pod answered again;
//! - **pod created in an admitted set → allowed**: with the policy in
//!   place, a pod labelled as the policy admits is created; its port is
//!   plugged the moment its VIF appears (as kuryr-daemon would) and it asks
//!   every 20 ms until answered. `KURYR_BENCH_ROUNDS` rounds;
//! - **rules for `KURYR_BENCH_PODS` (100) pods × `KURYR_BENCH_POLICIES`
//!   (10) policies**: each policy selects the server and admits every
//!   client pod on a port of its own; how long until every KNP is in sync
//!   (and, with peer groups, every client's port carries the group), and
//!   how many rules the policies' groups then hold in Neutron.
//!
//! Pods are bound to the stack's node under a RuntimeClass no runtime has,
//! so the kubelet never starts them: the bench plugs each pod's port into a
//! network namespace of its own (an OVS port with the port's external_ids,
//! as os-vif would) and writes the pod's address into its status (as the
//! kubelet would from the CNI result). kuryr-rs' controller runs in this
//! process with the pod and policy handlers (its log on stderr with
//! `RUST_LOG`, e.g. `kuryr_controller=info`).
//! `KURYR_BENCH_MODES=ip_prefix` (or `remote_group`) runs one representation.
//! `sudo cargo bench -p kuryr-controller --features stack --bench policy`
//! (stack up on the ovn backend).

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
#[path = "common/bench.rs"]
mod bench;

use bench::{Controller, clients, delete_pods, start_peer};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kuryr_controller::Options;
use kuryr_crds::{KuryrNetworkPolicy, KuryrPort};
use kuryr_stack_tests::bench::{env_num, summary};
use kuryr_stack_tests::echo::{EchoServer, ask_within};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::k8s::{RUNTIME_CLASS_NONE, runtime_class_none};
use kuryr_stack_tests::openstack::{Session, with_undo};
use kuryr_stack_tests::plug::{Net, VmPort};
use kuryr_stack_tests::{unique_name, wait_until};
use serde_json::json;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-server";

/// One bench namespace with its controller.
struct Bench {
    env: StackEnv,
    os: kuryr_openstack::Client,
    net: Net,
    node: String,
    ns: String,
    pods: Api<Pod>,
    kps: Api<KuryrPort>,
    nps: Api<NetworkPolicy>,
    knps: Api<KuryrNetworkPolicy>,
}

impl Bench {
    /// Pod `name` labelled `app`, its VIF once the controller recorded it
    /// (port id, MAC, address).
    async fn pod(&self, name: &str, app: &str) -> anyhow::Result<(String, String, String)> {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": app, "kuryr-bench": self.ns}},
            "spec": {"nodeName": self.node, "runtimeClassName": RUNTIME_CLASS_NONE,
                     "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "localhost/kuryr-test/busybox:latest"}]}}))?;
        let uid = self
            .pods
            .create(&PostParams::default(), &p)
            .await?
            .metadata
            .uid
            .unwrap_or_default();
        let vif = wait_until(
            &format!("{name}'s VIF"),
            Duration::from_secs(120),
            Duration::from_millis(20),
            || async {
                let Some(kp) = self.kps.get_opt(name).await? else {
                    return Ok(None);
                };
                if kp.spec.pod_uid != uid {
                    return Ok(None);
                }
                Ok(kp.status.as_ref().and_then(|s| s.default_vif()).cloned())
            },
        )
        .await?;
        let ip = vif
            .network
            .subnets
            .first()
            .and_then(|s| s.ips.first())
            .cloned()
            .unwrap_or_default();
        self.pods
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}})),
            )
            .await?;
        Ok((vif.id, vif.address, ip))
    }

    /// Pod `name` as above, its port plugged into a namespace of its own.
    async fn plugged_pod(&self, name: &str, app: &str) -> anyhow::Result<VmPort> {
        let (id, mac, ip) = self.pod(name, app).await?;
        VmPort::attach(&self.env, &id, &mac, &ip, self.net.prefix, "", name)
    }

    async fn policy(&self, name: &str, spec: serde_json::Value) -> anyhow::Result<()> {
        self.nps
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))?,
            )
            .await?;
        Ok(())
    }

    async fn delete_policy(&self, name: &str) -> anyhow::Result<()> {
        self.nps.delete(name, &DeleteParams::default()).await?;
        wait_until(
            &format!("{name} and its KNP gone"),
            Duration::from_secs(120),
            Duration::from_millis(100),
            || async {
                let gone = self.nps.get_opt(name).await?.is_none()
                    && self.knps.get_opt(name).await?.is_none();
                Ok(gone.then_some(()))
            },
        )
        .await
    }
}

/// Whether `from` gets the server's answer within 300 ms.
fn answered(from: &VmPort, addr: &str) -> bool {
    ask_within(&from.ns, "tcp", addr, 300).is_ok_and(|a| a == TOKEN)
}

/// How long after `t0` connections from `from` to `addr` began to be
/// refused for good: the first refusal of a run of refusals lasting a
/// second (on a loaded two-core machine a single probe can miss its 300 ms
/// without any rule refusing it).
async fn first_denied(from: &VmPort, addr: &str, t0: Instant) -> anyhow::Result<Duration> {
    const HELD: Duration = Duration::from_secs(1);
    let mut since: Option<Duration> = None;
    loop {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(120),
            "no lasting refusal 120 s after the policy was made"
        );
        if answered(from, addr) {
            since = None;
        } else {
            let first = *since.get_or_insert_with(|| t0.elapsed());
            if t0.elapsed() - first >= HELD {
                return Ok(first);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The figures of one representation.
struct Figures {
    mode: &'static str,
    enforced: Vec<Duration>,
    /// How long the admitted client was refused, in the rounds it was.
    refused: Vec<Duration>,
    allowed: Vec<Duration>,
    scale_sync: Duration,
    rules: usize,
    peer_groups: usize,
}

/// The policy admitting `app=client` on TCP 80 to the server.
fn admit_clients() -> serde_json::Value {
    json!({"podSelector": {"matchLabels": {"app": "server"}},
           "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                        "ports": [{"port": 80}]}]})
}

async fn run_mode(b: &Bench, mode: &'static str) -> anyhow::Result<Figures> {
    let server = b.plugged_pod("server", "server").await?;
    let _echo = EchoServer::start(&server.ns, TOKEN, &[80], &[])?;
    let addr = format!("{}:80", server.ip);
    let other = b.plugged_pod("other", "other").await?;
    let client = b.plugged_pod("client-0", "client").await?;
    for (who, p) in [("other", &other), ("client-0", &client)] {
        wait_until(
            &format!("{who} reaching the server before any policy"),
            Duration::from_secs(120),
            Duration::from_millis(50),
            || async { Ok(answered(p, &addr).then_some(())) },
        )
        .await?;
    }
    let rounds = env_num("KURYR_BENCH_ROUNDS", 20);

    eprintln!("[{mode}] {rounds} rounds: policy created -> first denied connection");
    let mut enforced = Vec::new();
    let mut refused = Vec::new();
    for i in 0..rounds {
        let t0 = Instant::now();
        b.policy("admit-clients", admit_clients()).await?;
        enforced.push(first_denied(&other, &addr, t0).await?);
        // the admitted client: answered, or refused for a while as OVN
        // brings the rules into force (recorded, not hidden), or refused
        // for good (the bench fails)
        if !answered(&client, &addr) {
            let t1 = Instant::now();
            let back = wait_until(
                "the admitted client answered",
                Duration::from_secs(30),
                Duration::from_millis(20),
                || async { Ok(answered(&client, &addr).then_some(())) },
            )
            .await;
            if back.is_err() {
                let knp = b.knps.get_opt("admit-clients").await?;
                let port = b.os.neutron().get_port(&server.id).await?;
                anyhow::bail!(
                    "[{mode}] round {}: an admitted client ({}) still refused 30 s after the policy was enforced; server port groups {:?}; KNP {}",
                    i + 1,
                    client.ip,
                    port.security_groups,
                    serde_json::to_string(&knp)?
                );
            }
            refused.push(t1.elapsed());
            eprintln!(
                "  round {}: the admitted client refused for {:?}",
                i + 1,
                t1.elapsed()
            );
        }
        eprintln!("  round {} of {rounds}: {:?}", i + 1, enforced[i]);
        b.delete_policy("admit-clients").await?;
        wait_until(
            "the other pod answered again",
            Duration::from_secs(120),
            Duration::from_millis(50),
            || async { Ok(answered(&other, &addr).then_some(())) },
        )
        .await?;
    }

    eprintln!("[{mode}] {rounds} rounds: pod created in the admitted set -> allowed");
    b.policy("admit-clients", admit_clients()).await?;
    wait_until(
        "the policy enforced",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || async { Ok((!answered(&other, &addr)).then_some(())) },
    )
    .await?;
    let mut allowed = Vec::new();
    for i in 0..rounds {
        let name = format!("new-{i:03}");
        let t0 = Instant::now();
        let p = b.plugged_pod(&name, "client").await?;
        wait_until(
            &format!("{name} answered"),
            Duration::from_secs(120),
            Duration::from_millis(20),
            || async { Ok(answered(&p, &addr).then_some(())) },
        )
        .await?;
        allowed.push(t0.elapsed());
        eprintln!("  round {} of {rounds}: {:?}", i + 1, allowed[i]);
    }
    b.delete_policy("admit-clients").await?;

    let pods = env_num("KURYR_BENCH_PODS", 100);
    let policies = env_num("KURYR_BENCH_POLICIES", 10);
    let existing = 1 + rounds;
    eprintln!("[{mode}] {pods} client pods x {policies} policies");
    for i in existing..pods {
        b.pod(&format!("client-{i:03}"), "client").await?;
    }
    let t0 = Instant::now();
    for j in 0..policies {
        b.policy(
            &format!("scale-{j:02}"),
            json!({"podSelector": {"matchLabels": {"app": "server"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                "ports": [{"port": 8000 + j}]}]}),
        )
        .await?;
    }
    let n = b.os.neutron();
    let (rules, peer_groups) = wait_until(
        "every scale policy in sync",
        Duration::from_secs(900),
        Duration::from_millis(200),
        || async {
            let knps = b.knps.list(&ListParams::default()).await?.items;
            let scale: Vec<_> = knps
                .iter()
                .filter(|k| {
                    k.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("scale-"))
                })
                .collect();
            if scale.len() < policies || !scale.iter().all(|k| kuryr_controller::policy::in_sync(k))
            {
                return Ok(None);
            }
            // ip_prefix: a rule per client; remote_group: every client a member
            let clients = b
                .pods
                .list(&ListParams::default().labels("app=client"))
                .await?
                .items
                .len();
            let mut rules = 0;
            let mut groups = std::collections::BTreeSet::new();
            for k in &scale {
                let sg = k
                    .status
                    .as_ref()
                    .and_then(|s| s.security_group_id.clone())
                    .unwrap_or_default();
                rules += n.get_security_group(&sg).await?.security_group_rules.len();
                groups.extend(k.spec.peer_groups.iter().map(|g| g.id.clone()));
            }
            if groups.is_empty() {
                let per_pod = scale
                    .iter()
                    .all(|k| k.spec.ingress_sg_rules.len() >= clients);
                return Ok(per_pod.then_some((rules, 0)));
            }
            for g in &groups {
                let members = n
                    .list_ports(&kuryr_openstack::Query::new().filter("security_groups", g))
                    .await?
                    .len();
                if members < clients {
                    return Ok(None);
                }
            }
            Ok(Some((rules, groups.len())))
        },
    )
    .await?;
    let scale_sync = t0.elapsed();
    eprintln!("[{mode}] in sync after {scale_sync:?}: {rules} rules, {peer_groups} peer groups");
    // the figures are taken: a controller slow to delete (kuryr-kubernetes
    // waits on its pods' ports) loses none of them
    for j in 0..policies {
        if let Err(e) = b.delete_policy(&format!("scale-{j:02}")).await {
            eprintln!("[{mode}] scale-{j:02} not deleted: {e:#}");
        }
    }
    Ok(Figures {
        mode,
        enforced,
        refused,
        allowed,
        scale_sync,
        rules,
        peer_groups,
    })
}

async fn start_controller(
    kube: &kube::Client,
    os: &kuryr_openstack::Client,
    subnet: &str,
    ns: &str,
    mode: &str,
) -> anyhow::Result<Controller> {
    let conf = format!(
        "[node_port]\nenabled = false\n[neutron_defaults]\npod_subnet = {subnet}\nresource_tags = kuryr-rs-bench\n[kubernetes]\npod_security_groups_driver = policy\nenabled_handlers = vif,kuryrport,policy\nnetwork_policy_peers = {mode}\n"
    );
    let options = Options {
        pod_selector: Some(format!("kuryr-bench={ns}")),
        namespace_selector: Some(format!("kuryr-bench={ns}")),
        gc_interval: Duration::ZERO,
        ..Default::default()
    };
    Controller::in_process(kube, os, &conf, unique_name("bnp", 30), options).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    // the in-process controller's log on stderr when RUST_LOG asks for it
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_env_filter(filter)
            .try_init();
    }
    let env = StackEnv::load()?;
    env.require("k8s")?;
    env.require("openstack")?;
    let backend = env.get("KURYR_STACK_NEUTRON_BACKEND")?.to_owned();
    let (kube, os) = clients(&env).await?;
    runtime_class_none(&kube).await?;
    let s = Session::login(&env).await?;
    let node = env.get("KURYR_STACK_NODE")?.to_owned();
    let peer = std::env::var("KURYR_BENCH_PEER")
        .ok()
        .filter(|c| !c.is_empty());
    let modes: Vec<&'static str> = if peer.is_some() {
        vec!["kuryr-kubernetes"]
    } else {
        // KURYR_BENCH_MODES (e.g. `ip_prefix`) runs only those
        let only = std::env::var("KURYR_BENCH_MODES").unwrap_or_default();
        ["remote_group", "ip_prefix"]
            .into_iter()
            .filter(|m| only.is_empty() || only.split([',', ' ']).any(|o| o == *m))
            .collect()
    };
    let mut figures = Vec::new();
    for mode in modes {
        let ns = unique_name("bench-np-", 40);
        let nss: Api<Namespace> = Api::all(kube.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": ns, "labels": {"kuryr-bench": ns}}}),
            )?,
        )
        .await?;
        let res = with_undo(&s, async |undo| {
            let net = Net::create(&s, undo, "10.98.72.0/22", None).await?;
            let ctl = match &peer {
                Some(cmd) => Controller::Peer(start_peer(
                    cmd,
                    &[
                        ("KURYR_PEER_NAMESPACE", ns.as_str()),
                        ("KURYR_PEER_POD_SUBNET", net.subnet_id.as_str()),
                        ("KURYR_PEER_TAG", "kuryr-peer-bench"),
                    ],
                )?),
                None => start_controller(&kube, &os, &net.subnet_id, &ns, mode).await?,
            };
            let b = Bench {
                env: StackEnv::load()?,
                os: os.clone(),
                net: net.clone(),
                node: node.clone(),
                ns: ns.clone(),
                pods: Api::namespaced(kube.clone(), &ns),
                kps: Api::namespaced(kube.clone(), &ns),
                nps: Api::namespaced(kube.clone(), &ns),
                knps: Api::namespaced(kube.clone(), &ns),
            };
            let r = run_mode(&b, mode).await;
            // pods first, while the controller runs (it gives their ports back)
            delete_pods(&b.pods).await;
            ctl.stop().await;
            r
        })
        .await;
        let _ = nss.delete(&ns, &DeleteParams::default()).await;
        figures.push(res?);
    }
    let pods = env_num("KURYR_BENCH_PODS", 100);
    let policies = env_num("KURYR_BENCH_POLICIES", 10);
    let who = if peer.is_some() {
        "kuryr-kubernetes 10.0.0"
    } else {
        "kuryr-rs"
    };
    println!("\nNetworkPolicy on the {backend} backend, {who}:");
    println!(
        "| peers | policy created -> first denied | admitted client refused meanwhile | pod created -> allowed | {pods} pods x {policies} policies: in sync | rules in Neutron | peer groups |"
    );
    println!("|---|---|---|---|---|---|---|");
    for f in &mut figures {
        let refused = match f.refused.iter().max() {
            None => format!("0 of {} rounds", f.enforced.len()),
            Some(m) => format!(
                "{} of {} rounds, at most {} ms",
                f.refused.len(),
                f.enforced.len(),
                m.as_millis()
            ),
        };
        println!(
            "| {} | {} | {refused} | {} | {:.1} s | {} | {} |",
            f.mode,
            summary(&mut f.enforced),
            summary(&mut f.allowed),
            f.scale_sync.as_secs_f64(),
            f.rules,
            f.peer_groups
        );
    }
    Ok(())
}
