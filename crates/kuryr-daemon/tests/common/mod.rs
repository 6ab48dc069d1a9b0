//! Shared by the daemon's stack tests: a kuryr-daemon process that is
//! killed on drop, kuryr-cni invocations, KuryrPorts with VIFs, cleanup.
#![allow(dead_code)]

pub mod neutron;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kuryr_crds::{
    KURYRPORT_FINALIZER, KuryrPort, KuryrPortSpec, KuryrPortStatus, NODE_NAME_LABEL, Vif, VifKind,
    VifNetwork, VifSubnet,
};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::unique_name;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The kuryr-cni binary: `KURYR_CNI_BIN`, else the one built next to this
/// test (scripts/test builds it).
pub fn cni_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KURYR_CNI_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test exe");
    // target/<profile>/deps/<test> -> target/<profile>/kuryr-cni
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("kuryr-cni");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p kuryr-cni)",
        p.display()
    );
    p
}

/// A running kuryr-daemon with its own socket, state dir and node name.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub node: String,
    pub socket: PathBuf,
    pub metrics: String,
    pub extra_env: Vec<(String, String)>,
    pub log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Daemon {
    /// Starts a daemon for node `node` (env: extra variables, e.g. config overrides).
    pub fn start(env: &StackEnv, extra_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_on(env, &unique_name("kd-node-", 40), extra_env)
    }

    /// The same for a node name chosen by the caller.
    pub fn start_on(
        env: &StackEnv,
        node: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let node = node.to_owned();
        let dir = std::env::temp_dir().join(unique_name("kuryr-daemon-test-", 60));
        std::fs::create_dir_all(&dir)?;
        let mut d = Self {
            child: None,
            socket: dir.join("daemon.sock"),
            log: dir.join("daemon.log"),
            dir,
            node,
            metrics: format!("127.0.0.1:{}", free_port()),
            extra_env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.spawn(env)?;
        Ok(d)
    }

    /// (Re)starts the process and waits for its socket and readiness.
    pub fn spawn(&mut self, env: &StackEnv) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kuryr-daemon"));
        cmd.args(["--config-file", "/nonexistent/kuryr.conf"])
            .args(["--kubeconfig", env.get("KUBECONFIG")?])
            .args(["--node-name", &self.node])
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .args(["--ovsdb", env.get("OVSDB_SOCK")?])
            .args(["--metrics-address", &self.metrics])
            .env("RUST_LOG", "kuryr_daemon=debug,info")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn()?);
        let started = std::time::Instant::now();
        loop {
            if let Ok(out) = http_get(&self.metrics, "/ready")
                && out.starts_with("HTTP/1.1 200")
            {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                anyhow::bail!("kuryr-daemon exited with {st}: {}", self.log_text());
            }
            if started.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("kuryr-daemon not ready in 30s: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Files in the state dir, but for VIFs prepared ahead of their pods.
    pub fn state_files(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("state"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.ends_with(".prepared"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The network config kuryr-cni reads.
    pub fn conf(&self, version: &str) -> Value {
        json!({"cniVersion": version, "name": "kuryr", "type": "kuryr-cni",
               "daemonSocket": self.socket, "timeout": 60})
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        // what it plugged ahead (or left) on the shared OVS goes with it
        if let Ok(env) = StackEnv::load()
            && let Ok(db) = env.get("OVSDB_SOCK")
        {
            let db = format!("--db=unix:{db}");
            // pods' interfaces and the node port's
            let mut found = String::new();
            for key in ["kuryr-node", "kuryr-node-port"] {
                found += &kuryr_stack_tests::cmd::run(&[
                    "ovs-vsctl",
                    &db,
                    "--columns=name",
                    "--format=csv",
                    "--no-headings",
                    "find",
                    "Interface",
                    &format!("external_ids:{key}={}", self.node),
                ])
                .unwrap_or_default();
            }
            for name in found
                .lines()
                .map(|l| l.trim_matches('"'))
                .filter(|l| !l.is_empty())
            {
                let _ = kuryr_stack_tests::cmd::run(&[
                    "ovs-vsctl",
                    &db,
                    "--if-exists",
                    "del-port",
                    name,
                ]);
                if link_exists(name) {
                    let _ = kuryr_stack_tests::cmd::run(&["ip", "link", "del", name]);
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("kuryr-daemon log:\n{}", self.log_text());
        }
        if std::env::var_os("KURYR_TEST_KEEP_LOGS").is_some() {
            let keep = std::env::temp_dir().join(format!("{}.log", self.node));
            let _ = std::fs::copy(&self.log, &keep);
            eprintln!("kuryr-daemon log kept in {}", keep.display());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// GET on a loopback address; the raw answer.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// One kuryr-cni invocation: exit code and parsed stdout (Null when empty).
pub struct CniCall<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub pod: (&'a str, &'a str, &'a str),
}

pub fn cni(call: &CniCall, conf: &Value) -> (i32, Value) {
    cni_raw(call, conf.to_string().as_bytes())
}

pub fn cni_raw(call: &CniCall, stdin: &[u8]) -> (i32, Value) {
    let (ns, name, uid) = call.pod;
    // an empty uid: a runtime that passes none
    let uid = if uid.is_empty() {
        String::new()
    } else {
        format!(";K8S_POD_UID={uid}")
    };
    let mut c = Command::new(cni_bin())
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_PATH", "/nonexistent")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}{uid}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("kuryr-cni runs");
    // VERSION never reads its stdin: a closed pipe is fine
    let _ = c.stdin.take().unwrap().write_all(stdin);
    let out = c.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("kuryr-cni printed non-JSON ({e}): {text}"))
    };
    (out.status.code().unwrap_or(-1), v)
}

/// A VIF that no Neutron port stands behind: for daemon-only tests, where
/// only the data in the KuryrPort matters.
pub fn fake_vif(n: u32, subnet: &str, active: bool) -> Vif {
    // the first 11 characters name the host device: make them unique
    let port_id = format!(
        "{n:08x}-{:04x}-4000-8000-{:012x}",
        std::process::id() % 0x10000,
        n
    );
    let base = subnet
        .rsplit_once('.')
        .map(|(a, _)| a)
        .unwrap_or("10.250.0");
    Vif {
        id: port_id.clone(),
        address: format!(
            "fa:16:3e:{:02x}:{:02x}:{:02x}",
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        ),
        network: VifNetwork {
            id: "net".into(),
            label: "kuryr-test".into(),
            bridge: Some("br-int".into()),
            mtu: Some(1450),
            subnets: vec![VifSubnet {
                cidr: subnet.into(),
                gateway: Some(format!("{base}.1")),
                dns: vec!["10.96.0.10".into()],
                ips: vec![format!("{base}.{}", 2 + n % 250)],
                routes: vec![],
            }],
        },
        plugin: "ovs".into(),
        active,
        preserve_on_delete: false,
        has_traffic_filtering: true,
        vif_name: kuryr_crds::vif::vif_name(&port_id),
        kind: VifKind::OpenVSwitch {
            bridge_name: "br-int".into(),
        },
    }
}

/// A test namespace in Kubernetes, deleted by [`drop_namespace`].
pub async fn namespace(client: &kube::Client) -> anyhow::Result<String> {
    let name = unique_name("kd-test-", 40);
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    api.create(&PostParams::default(), &ns).await?;
    Ok(name)
}

/// Deletes the test namespace (KuryrPorts in it lose their finalizer first).
pub async fn drop_namespace(client: &kube::Client, ns: &str) -> anyhow::Result<()> {
    let kps: Api<KuryrPort> = Api::namespaced(client.clone(), ns);
    for kp in kps.list(&Default::default()).await? {
        let name = kp.metadata.name.clone().unwrap_or_default();
        let _ = kps
            .patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(ns, &DeleteParams::default()).await;
    Ok(())
}

/// Creates the KuryrPort of pod `ns/name` on `node`, with `vif` if given.
pub async fn kuryrport(
    client: &kube::Client,
    ns: &str,
    name: &str,
    uid: &str,
    node: &str,
    vif: Option<Vif>,
) -> anyhow::Result<KuryrPort> {
    let api: Api<KuryrPort> = Api::namespaced(client.clone(), ns);
    let mut kp = KuryrPort::new(
        name,
        KuryrPortSpec {
            pod_uid: uid.into(),
            pod_node_name: node.into(),
            pod_static: false,
        },
    );
    kp.metadata.labels = Some([(NODE_NAME_LABEL.to_string(), node.to_string())].into());
    kp.metadata.finalizers = Some(vec![KURYRPORT_FINALIZER.into()]);
    kp.status = vif.map(KuryrPortStatus::default_only);
    Ok(api.create(&PostParams::default(), &kp).await?)
}

/// Sets (or replaces) the VIF of a KuryrPort.
pub async fn set_vif(client: &kube::Client, ns: &str, name: &str, vif: &Vif) -> anyhow::Result<()> {
    let api: Api<KuryrPort> = Api::namespaced(client.clone(), ns);
    let status = KuryrPortStatus::default_only(vif.clone());
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

pub async fn kube_client(env: &StackEnv) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(env.get("KUBECONFIG")?)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    kuryr_crds::install(&client).await?;
    Ok(client)
}

/// `ovs-vsctl` on the stack's OVS.
pub fn vsctl(env: &StackEnv, args: &[&str]) -> String {
    let db = format!("--db=unix:{}", env.get("OVSDB_SOCK").unwrap());
    let mut v = vec!["ovs-vsctl", db.as_str(), "--timeout=20"];
    v.extend_from_slice(args);
    kuryr_stack_tests::cmd::run(&v).unwrap_or_default()
}

/// OVS interfaces carrying this container id.
pub fn ovs_ports_of(env: &StackEnv, container_id: &str) -> Vec<String> {
    vsctl(
        env,
        &[
            "--columns=name",
            "--format=csv",
            "--no-headings",
            "find",
            "Interface",
            &format!("external_ids:kuryr-container-id={container_id}"),
        ],
    )
    .lines()
    .map(|l| l.trim_matches('"').to_owned())
    .filter(|l| !l.is_empty())
    .collect()
}

/// The host link exists.
pub fn link_exists(name: &str) -> bool {
    Path::new(&format!("/sys/class/net/{name}")).exists()
}

/// Polls `f` every 20 ms for up to 10 s (DEL deletes host links in the
/// background); panics naming `what` if it never holds.
pub fn eventually(what: &str, f: impl Fn() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "never happened: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` with the stack's env, a Kubernetes client and a fresh test
/// namespace (deleted afterwards whatever happened); `needs` names the
/// stack components the test requires.
pub async fn with_namespace<F, Fut>(needs: &[&str], f: F) -> anyhow::Result<()>
where
    F: FnOnce(StackEnv, kube::Client, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let env = StackEnv::load()?;
    for n in needs {
        env.require(n)?;
    }
    let client = kube_client(&env).await?;
    let ns = namespace(&client).await?;
    let (c2, ns2) = (client.clone(), ns.clone());
    kuryr_stack_tests::finally(f(env, client, ns), async move {
        drop_namespace(&c2, &ns2).await
    })
    .await
}
