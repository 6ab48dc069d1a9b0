//! What the controller's stack tests share: a namespace, a Neutron network
//! and subnet of the test's own, a controller (in-process or the real
//! binary) configured for them, pods bound to a node no kubelet runs, and a
//! cleanup that leaves nothing in Kubernetes or Neutron.
#![allow(dead_code)]

pub mod lb;
pub mod policy;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use kuryr_config::KuryrConfig;
use kuryr_controller::{Context, Options, plan};
use kuryr_crds::KuryrPort;
use kuryr_openstack::types::neutron::{Network, NetworkCreate, Port, Subnet, SubnetCreate};
use kuryr_openstack::{CloudConfig, Query};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::{unique_name, wait_until};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Pods are bound to a node no kubelet runs: they stay Pending, so only the
/// controller acts on them (their ports bind to no agent and stay DOWN).
/// The Node object exists (see [`ensure_node`]), or the controller-manager's
/// pod GC would delete pods bound to it after 40 s.
pub const NODE: &str = "kuryr-test-node";

/// Makes the shared Node object [`NODE`] if it is missing (kept for every
/// test; the stack's etcd goes with `stack down`).
pub async fn ensure_node(kube: &Client) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(kube.clone());
    match nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NODE}}))?,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One test's world.
pub struct Harness {
    pub env: StackEnv,
    pub kube: Client,
    pub os: kuryr_openstack::Client,
    pub ns: String,
    pub net: Network,
    pub subnet: Subnet,
    /// Cluster id of this test's controllers (tag `kuryr-cluster:<id>`).
    pub cluster: String,
    /// Label value selecting this test's pods.
    pub label: String,
    pub pods: Api<Pod>,
    pub kps: Api<KuryrPort>,
    /// Node objects the test made (deleted by cleanup).
    pub nodes: std::sync::Mutex<Vec<String>>,
}

/// The stack's kube and OpenStack clients.
pub async fn clients(env: &StackEnv) -> anyhow::Result<(Client, kuryr_openstack::Client)> {
    env.require("k8s")?;
    env.require("openstack")?;
    let kc = kube::config::Kubeconfig::read_from(env.get("KUBECONFIG")?)?;
    let kube = Client::try_from(Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    let os = kuryr_openstack::Client::new(CloudConfig::from_vars(|k| {
        env.get(k).ok().map(str::to_owned)
    })?)?;
    Ok((kube, os))
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "kuryr_controller=info".into()),
        )
        .try_init();
}

impl Harness {
    /// A namespace, a network and a subnet of `cidr`, all named after `prefix`.
    pub async fn new(prefix: &str, cidr: &str) -> anyhow::Result<Self> {
        init_logs();
        let env = StackEnv::load()?;
        let (kube, os) = clients(&env).await?;
        kuryr_crds::install(&kube).await?;
        ensure_node(&kube).await?;
        let n = os.neutron();
        let net = n
            .create_network(&NetworkCreate {
                name: Some(unique_name(&format!("{prefix}-net-"), 40)),
                ..Default::default()
            })
            .await?;
        let subnet = match n
            .create_subnet(&SubnetCreate {
                network_id: net.id.clone(),
                ip_version: 4,
                cidr: Some(cidr.into()),
                ..Default::default()
            })
            .await
        {
            Ok(s) => s,
            Err(e) => {
                let _ = n.delete_network(&net.id).await;
                return Err(e.into());
            }
        };
        let ns = unique_name(&format!("{prefix}-"), 40);
        let label = unique_name(prefix, 40);
        let nss: Api<Namespace> = Api::all(kube.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": ns, "labels": {"kuryr-test": label}}}),
            )?,
        )
        .await?;
        Ok(Self {
            pods: Api::namespaced(kube.clone(), &ns),
            kps: Api::namespaced(kube.clone(), &ns),
            cluster: unique_name("c", 30),
            label,
            env,
            kube,
            os,
            ns,
            net,
            subnet,
            nodes: Default::default(),
        })
    }

    /// kuryr.conf text for this test: its subnet and resource tag, then
    /// `extra` (more sections, or more `[neutron_defaults]` options after a
    /// repeated header). Node ports stay off unless `extra` has a
    /// `[node_port]` section: a test's controller must not touch the
    /// stack's real node.
    pub fn conf_text(&self, extra: &str) -> String {
        let node_port = if extra.contains("[node_port]") {
            ""
        } else {
            "[node_port]\nenabled = false\n"
        };
        format!(
            "{node_port}[neutron_defaults]\npod_subnet = {}\nresource_tags = kuryr-rs-test\n{extra}",
            self.subnet.id
        )
    }

    /// The parsed configuration of [`Harness::conf_text`].
    pub fn config(&self, extra: &str) -> anyhow::Result<KuryrConfig> {
        let (cfg, warnings) = KuryrConfig::parse(&self.conf_text(extra), |_| None)?;
        anyhow::ensure!(warnings.is_empty(), "{warnings:?}");
        Ok(cfg)
    }

    /// A controller context for this test's pods, with `extra` kuryr.conf.
    pub async fn context(&self, extra: &str, options: Options) -> anyhow::Result<Arc<Context>> {
        self.context_with(self.os.clone(), extra, options).await
    }

    /// The same, talking to OpenStack through `os` (e.g. a fault proxy).
    pub async fn context_with(
        &self,
        os: kuryr_openstack::Client,
        extra: &str,
        options: Options,
    ) -> anyhow::Result<Arc<Context>> {
        let cfg = self.config(extra)?;
        Ok(Arc::new(
            Context::new(
                self.kube.clone(),
                os,
                &cfg,
                self.cluster.clone(),
                Options {
                    pod_selector: Some(format!("kuryr-test={}", self.label)),
                    namespace_selector: Some(format!("kuryr-test={}", self.label)),
                    ..options
                },
            )
            .await?,
        ))
    }

    /// A pod of this test on `node`, tolerating every taint (a node no
    /// kubelet runs becomes unreachable, which would evict it after 300 s).
    pub fn pod(&self, name: &str, node: &str) -> anyhow::Result<Pod> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kuryr-test": self.label}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                     "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "c", "image": "localhost/kuryr-test/busybox:latest", "command": ["sleep", "3600"]}]}}))?)
    }

    /// Creates pods `names` on `node`; answers their UIDs.
    pub async fn create_pods(&self, names: &[String], node: &str) -> anyhow::Result<Vec<String>> {
        let mut uids = Vec::new();
        for name in names {
            let p = self
                .pods
                .create(&PostParams::default(), &self.pod(name, node)?)
                .await?;
            uids.push(p.metadata.uid.unwrap_or_default());
        }
        Ok(uids)
    }

    /// The VIF of pod `name` (UID `uid`) once the controller stored it.
    pub async fn vif_of(
        &self,
        name: &str,
        uid: &str,
        timeout: Duration,
    ) -> anyhow::Result<kuryr_crds::Vif> {
        wait_until(
            &format!("KuryrPort {name} with a VIF"),
            timeout,
            Duration::from_millis(200),
            || async {
                Ok(self
                    .kps
                    .get_opt(name)
                    .await?
                    .filter(|k| k.spec.pod_uid == uid)
                    .and_then(|k| k.status)
                    .and_then(|s| s.default_vif().cloned()))
            },
        )
        .await
    }

    /// How many KuryrPorts of the namespace have a VIF.
    pub async fn with_vif(&self) -> anyhow::Result<usize> {
        Ok(self
            .kps
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|k| k.status.as_ref().is_some_and(|s| !s.vifs.is_empty()))
            .count())
    }

    /// Deletes pod `name` at once.
    pub async fn delete_pod(&self, name: &str) -> anyhow::Result<()> {
        self.pods
            .delete(
                name,
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await?;
        Ok(())
    }

    /// Waits until pod `name` is gone (its finalizer removed).
    pub async fn wait_pod_gone(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        wait_until(
            &format!("pod {name} gone"),
            timeout,
            Duration::from_millis(200),
            || async { Ok(self.pods.get_opt(name).await?.is_none().then_some(())) },
        )
        .await
    }

    /// Deletes every pod of the namespace and waits until all are gone.
    pub async fn delete_all_pods(&self, timeout: Duration) -> anyhow::Result<()> {
        self.pods
            .delete_collection(
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
                &ListParams::default(),
            )
            .await?;
        wait_until(
            "all pods deleted",
            timeout,
            Duration::from_millis(300),
            || async {
                Ok(self
                    .pods
                    .list(&ListParams::default())
                    .await?
                    .items
                    .is_empty()
                    .then_some(()))
            },
        )
        .await
    }

    /// Whether Neutron has no port `id`.
    pub async fn port_gone(&self, id: &str) -> anyhow::Result<bool> {
        match self.os.neutron().get_port(id).await {
            Ok(_) => Ok(false),
            Err(e) if e.is_not_found() => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Every Neutron port of this test's cluster.
    pub async fn cluster_ports(&self) -> anyhow::Result<Vec<Port>> {
        Ok(self
            .os
            .neutron()
            .list_ports(&Query::new().tags([plan::cluster_tag(&self.cluster)]))
            .await?)
    }

    /// A Node object `name` with InternalIP `ip` (no kubelet behind it).
    pub async fn make_node(&self, name: &str, ip: &str) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.kube.clone());
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"metadata": {"name": name, "labels": {"kuryr-test": self.label}}}),
                )?,
            )
            .await?;
        self.nodes.lock().unwrap().push(name.to_owned());
        nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}}),
                ),
            )
            .await?;
        Ok(())
    }

    /// Takes kuryr-rs's finalizers off what namespace `ns` holds (pods,
    /// KuryrPorts, NetworkPolicies and KuryrNetworkPolicies, the
    /// KuryrNetwork that holds the namespace until released), so it can go
    /// whatever state the test left it in.
    pub async fn release_namespace(&self, ns: &str) -> anyhow::Result<()> {
        strip_finalizers(&Api::<Pod>::namespaced(self.kube.clone(), ns)).await?;
        strip_finalizers(&Api::<KuryrPort>::namespaced(self.kube.clone(), ns)).await?;
        strip_finalizers(
            &Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(
                self.kube.clone(),
                ns,
            ),
        )
        .await?;
        strip_finalizers(&Api::<kuryr_crds::KuryrNetworkPolicy>::namespaced(
            self.kube.clone(),
            ns,
        ))
        .await?;
        strip_finalizers(&Api::<kuryr_crds::KuryrNetwork>::namespaced(
            self.kube.clone(),
            ns,
        ))
        .await
    }

    /// Removes everything the test made, whatever state it is in:
    /// finalizers off, namespace and nodes deleted, every port on the test
    /// network deleted (subports off their trunks first), the network too.
    pub async fn cleanup(&self) -> anyhow::Result<()> {
        self.release_namespace(&self.ns).await?;
        let nss: Api<Namespace> = Api::all(self.kube.clone());
        let _ = nss.delete(&self.ns, &DeleteParams::default()).await;
        let nodes: Api<Node> = Api::all(self.kube.clone());
        let made: Vec<String> = self.nodes.lock().unwrap().drain(..).collect();
        for n in made {
            let _ = nodes.delete(&n, &DeleteParams::default()).await;
        }
        // the cluster's load balancers (their VIP ports are on the service
        // subnet, not this network)
        let o = self.os.octavia();
        let lbs = o
            .list_load_balancers(&Query::new().tags([plan::cluster_tag(&self.cluster)]))
            .await?;
        for lb in &lbs {
            o.delete_load_balancer(&lb.id, true).await?;
        }
        for lb in &lbs {
            o.wait_load_balancer_deleted(&lb.id, Duration::from_secs(120))
                .await?;
        }
        // a bulk create a killed controller sent may still be finishing in
        // Neutron: delete what is there until the network can go
        let n = self.os.neutron();
        for attempt in 0.. {
            let ports = n
                .list_ports(&Query::new().filter("network_id", &self.net.id))
                .await?;
            for trunk in n.list_trunks(&Query::new()).await? {
                let mine: Vec<String> = trunk
                    .sub_ports
                    .iter()
                    .filter(|s| ports.iter().any(|p| p.id == s.port_id))
                    .map(|s| s.port_id.clone())
                    .collect();
                if !mine.is_empty() {
                    let _ = n.remove_subports_if_present(&trunk.id, &mine).await;
                }
            }
            for p in ports {
                n.delete_port(&p.id).await?;
            }
            match n.delete_network(&self.net.id).await {
                Ok(_) => break,
                Err(e) if e.is_conflict() && attempt < 30 => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        // namespaces' networks: off their routers, their ports, themselves
        let tagged = n
            .list_networks(&Query::new().tags([plan::cluster_tag(&self.cluster)]))
            .await?;
        for net in tagged {
            for p in n
                .list_ports(&Query::new().filter("network_id", &net.id))
                .await?
            {
                if p.device_owner.starts_with("network:router_interface") {
                    for sn in p.fixed_ips.iter().filter_map(|f| f.subnet_id.clone()) {
                        let iface = kuryr_openstack::types::neutron::RouterInterface {
                            subnet_id: Some(sn),
                            port_id: None,
                        };
                        n.remove_router_interface(&p.device_id, &iface).await?;
                    }
                } else if !p.device_owner.starts_with("network:") {
                    n.delete_port(&p.id).await?;
                }
            }
            n.delete_network(&net.id).await?;
        }
        // the cluster's groups (node access first: it names the nodes' group)
        let mut groups = n
            .list_security_groups(&Query::new().tags([plan::cluster_tag(&self.cluster)]))
            .await?;
        groups.sort_by_key(|g| !g.name.ends_with("/node-access"));
        for g in groups {
            n.delete_security_group(&g.id).await?;
        }
        Ok(())
    }
}

/// Takes every finalizer off every object of `api` (best effort per object).
pub async fn strip_finalizers<K>(api: &Api<K>) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for o in api.list(&ListParams::default()).await?.items {
        let name = o.meta().name.clone().unwrap_or_default();
        let _ = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
    Ok(())
}

/// A controller running in this process until stopped.
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the controller of `ctx`.
pub fn start(ctx: Arc<Context>) -> Running {
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(kuryr_controller::run(ctx, async {
        let _ = rx.await;
    }));
    Running { stop, task }
}

impl Running {
    /// Stops it and waits until it has stopped.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Neutron requests of `os` so far, total and by method and resource.
pub fn calls(os: &kuryr_openstack::Client) -> u64 {
    os.call_counts().iter().map(|(_, n)| n).sum()
}

/// The real kuryr-controller binary for `h`'s pods with kuryr.conf `conf`,
/// logging to `log` (appended), with `extra` arguments.
pub fn spawn(
    h: &Harness,
    conf: &std::path::Path,
    log: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<std::process::Child> {
    use std::process::{Command, Stdio};
    let mut c = Command::new(env!("CARGO_BIN_EXE_kuryr-controller"));
    c.args(["--config-file", &conf.to_string_lossy()])
        .args(["--kubeconfig", h.env.get("KUBECONFIG")?])
        .args(["--cluster-id", &h.cluster])
        .args(["--pod-selector", &format!("kuryr-test={}", h.label)])
        .args(["--namespace-selector", &format!("kuryr-test={}", h.label)])
        .args(["--metrics-address", "127.0.0.1:0"])
        .args(["--leader-lease", &format!("{}/kuryr-controller", h.ns)])
        .args(["--gc-interval", "0", "--pool-cool-down", "1"])
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info");
    for (k, v) in h.env.vars_with_prefix("OS_") {
        c.env(k, v);
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    c.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    Ok(c.spawn()?)
}

/// Kills (SIGKILL) and reaps every process in `procs`.
pub fn kill_all(procs: &std::sync::Mutex<Vec<std::process::Child>>) {
    for p in procs.lock().unwrap_or_else(|e| e.into_inner()).iter_mut() {
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// A stack service's process group (as `stack` started it, pid file
/// `run/<name>.pid`) stopped with SIGSTOP until dropped: its requests hang
/// as in an outage, and nothing it was doing is lost.
pub struct Stopped(String);

impl Stopped {
    pub fn new(state: &std::path::Path, name: &str) -> anyhow::Result<Self> {
        let pid = std::fs::read_to_string(state.join(format!("run/{name}.pid")))?
            .trim()
            .to_owned();
        anyhow::ensure!(!pid.is_empty(), "no {name} pid");
        let st = std::process::Command::new("kill")
            .args(["-STOP", "--", &format!("-{pid}")])
            .status()?;
        anyhow::ensure!(st.success(), "kill -STOP {name}");
        Ok(Self(pid))
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", "--", &format!("-{}", self.0)])
            .status();
    }
}
