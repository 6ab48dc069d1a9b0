//! kuryr-controller: every pod gets a Neutron port, recorded as a VIF in the
//! pod's KuryrPort, which the node daemon reads to plug the pod.
//!
//! The pod handler: pod → finalizer → KuryrPort → Neutron port (from a pool,
//! or made for the pod and found by its tag before it is made, so retries
//! and restarts never duplicate) → VIF in the KuryrPort → VIF marked active
//! once Neutron says ACTIVE; pod deleted or finished → port back to its pool
//! (or deleted) → KuryrPort deleted → finalizer removed. The decisions are
//! in [`plan`], [`pool`] and [`gc`] (pure); the drivers ([`drivers`]) place
//! ports for side-by-side, nested-vlan and nested-macvlan nodes; [`ports`]
//! runs the pools; [`startup`] reconciles with Neutron at start and then
//! periodically; [`leader`] makes sure only one replica does any of this.

pub mod active;
pub mod drivers;
pub mod gc;
pub mod handlers;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod pool;
pub mod ports;
pub mod services;
pub mod startup;
pub mod vlan;

/// Locks a std mutex, taking it over from a holder that panicked (the
/// state it guards stays consistent between statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

use drivers::{DriverError, DriverKind, Drivers};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kuryr_crds::{
    DEFAULT_IFNAME, KURYRPORT_FINALIZER, KuryrPort, KuryrPortSpec, KuryrPortStatus,
    NODE_NAME_LABEL, POD_FINALIZER, Vif, VifEntry,
};
use kuryr_openstack::Query;
use kuryr_openstack::types::neutron::{Network, Port, Subnet};
use plan::{PortSettings, Step};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Tuning beyond kuryr.conf (flags of the binary).
#[derive(Debug, Clone)]
pub struct Options {
    /// Only pods matching this label selector (all when `None`).
    pub pod_selector: Option<String>,
    /// Only nodes matching this label selector get a node port (all when
    /// `None`).
    pub node_selector: Option<String>,
    /// Report leaked ports instead of deleting them.
    pub gc_dry_run: bool,
    /// Time between reconciliation passes with Neutron (0: only at start).
    pub gc_interval: Duration,
    /// Time between looks at ports waiting to go ACTIVE.
    pub active_poll: Duration,
    /// A port still DOWN this long gets a warning event on its pod.
    pub active_warning: Duration,
    /// How long a given-back pool port waits before another pod gets it
    /// (default: `[vif_pool] ports_pool_update_frequency`).
    pub pool_cool_down: Option<Duration>,
    /// Name of this replica in events.
    pub instance: Option<String>,
    /// How often a KuryrLoadBalancer is compared with Octavia although it
    /// did not change (what was deleted behind our back comes back).
    pub lb_recheck: Duration,
    /// Fill the pools of the nodes matching this label selector to
    /// `ports_pool_min` before any pod comes (`""`: every node). Without
    /// it, as in kuryr-kubernetes, a pool is made when the first pod of
    /// its node needs a port, and kept at its minimum from then on.
    pub prefill_nodes: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            pod_selector: None,
            node_selector: None,
            gc_dry_run: false,
            gc_interval: Duration::from_secs(300),
            active_poll: Duration::from_millis(500),
            active_warning: Duration::from_secs(60),
            pool_cool_down: None,
            lb_recheck: Duration::from_secs(120),
            instance: None,
            prefill_nodes: None,
        }
    }
}

/// Everything the handler needs, shared by all reconciles.
pub struct Context {
    /// Kubernetes.
    pub kube: kube::Client,
    /// OpenStack.
    pub os: kuryr_openstack::Client,
    /// Where ports are made.
    pub settings: PortSettings,
    /// The pod network.
    pub network: Network,
    /// Its subnets.
    pub subnets: Vec<Subnet>,
    /// This cluster's id (tag `kuryr-cluster:<id>` on every port).
    pub cluster_id: String,
    /// `[neutron_defaults] ovs_bridge`.
    pub ovs_bridge: String,
    /// The pod_vif driver.
    pub drivers: Arc<Drivers>,
    /// The port pools (`vif_pool_driver` other than `noop`).
    pub pool: Option<Arc<ports::PortPool>>,
    /// How reconciliation recognises pool ports.
    pub pool_rules: gc::PoolRules,
    /// `[vif_pool] ports_pool_update_frequency`.
    pub pool_interval: Duration,
    /// Ports waited for until ACTIVE.
    pub active: Arc<active::ActiveWatch>,
    /// Events on pods.
    pub recorder: Recorder,
    /// Flags.
    pub options: Options,
    /// Failures in a row per pod UID (for the back-off).
    failures: Mutex<HashMap<String, u32>>,
    /// Counters served on `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// The nodes' groups (`None`: no node ports and no worker subnets).
    pub node_groups: Option<handlers::node::NodeGroups>,
    /// Which handlers run.
    pub handlers: handlers::Enabled,
    /// What Services' load balancers need (`None`: no Service handler runs,
    /// or no `[neutron_defaults] service_subnet`).
    pub lb: Option<services::LbSettings>,
    /// Warnings about the configuration, logged at start.
    pub warnings: Vec<String>,
}

/// A failed step; the pod is handled again after a back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kubernetes API.
    #[error("Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// OpenStack API.
    #[error("OpenStack: {0}")]
    OpenStack(#[from] kuryr_openstack::Error),
    /// Placing the port (driver or pool).
    #[error("{0}")]
    Driver(DriverError),
    /// What a user asked for cannot be done as it is (`reason` names it for
    /// events and metrics).
    #[error("{message}")]
    Refused {
        /// Short cause (CamelCase).
        reason: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl From<DriverError> for Error {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::OpenStack(e) => Error::OpenStack(e),
            DriverError::Kube(e) => Error::Kube(e),
            e => Error::Driver(e),
        }
    }
}

/// The short cause of a driver failure, for events and metrics.
pub fn driver_error_reason(e: &DriverError) -> String {
    match e {
        DriverError::OpenStack(e) => openstack_reason(e),
        DriverError::Kube(_) => "KubernetesError".into(),
        DriverError::NoVm(_) => "NodeVmNotFound".into(),
        DriverError::VlansExhausted(_) => "VlanIdsExhausted".into(),
        DriverError::Pool { reason, .. } => reason.clone(),
    }
}

fn openstack_reason(e: &kuryr_openstack::Error) -> String {
    match (e.error_type(), e.status()) {
        (Some(t), _) => t.to_owned(),
        (None, Some(s)) => format!("NeutronHTTP{s}"),
        (None, None) => "NeutronUnreachable".into(),
    }
}

impl Error {
    /// The short cause, for events and metrics.
    pub fn reason(&self) -> String {
        match self {
            Error::Kube(_) => "KubernetesError".into(),
            Error::OpenStack(e) => openstack_reason(e),
            Error::Driver(e) => driver_error_reason(e),
            Error::Refused { reason, .. } => reason.clone(),
        }
    }
}

impl Context {
    /// Looks up the pod network and subnet, the project and its security
    /// groups, and sets up the driver and pools kuryr.conf asks for.
    pub async fn new(
        kube: kube::Client,
        os: kuryr_openstack::Client,
        cfg: &kuryr_config::KuryrConfig,
        cluster_id: String,
        options: Options,
    ) -> anyhow::Result<Self> {
        let nd = &cfg.neutron_defaults;
        let k = &cfg.kubernetes;
        let kind = DriverKind::parse(&k.pod_vif_driver).ok_or_else(|| {
            anyhow::anyhow!(
                "kuryr.conf [kubernetes] pod_vif_driver {} is not supported",
                k.pod_vif_driver
            )
        })?;
        if !kind.pool_drivers().contains(&k.vif_pool_driver.as_str()) {
            anyhow::bail!(
                "kuryr.conf [kubernetes] vif_pool_driver = {} does not work with pod_vif_driver = {}: use one of {:?}",
                k.vif_pool_driver,
                k.pod_vif_driver,
                kind.pool_drivers()
            );
        }
        let subnet_id = nd.pod_subnet.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "kuryr.conf [neutron_defaults] pod_subnet is not set: pods need a subnet"
            )
        })?;
        let n = os.neutron();
        let subnet = n
            .get_subnet(&subnet_id)
            .await
            .map_err(|e| anyhow::anyhow!("pod subnet {subnet_id}: {e}"))?;
        let network = n.get_network(&subnet.network_id).await?;
        let subnets = n
            .list_subnets(&Query::new().filter("network_id", &network.id))
            .await?;
        let project_id = match &nd.project {
            Some(p) => p.clone(),
            None => os.project_id().await?,
        };
        // the groups every pod port gets: pools are keyed by them, so
        // Neutron's implicit default is resolved to its id
        let mut security_groups = nd.pod_security_groups.clone();
        if security_groups.is_empty() {
            let q = Query::new()
                .filter("name", "default")
                .filter("project_id", &project_id);
            let sg = n.list_security_groups(&q).await?.into_iter().next().ok_or_else(|| {
                anyhow::anyhow!("project {project_id} has no default security group: set [neutron_defaults] pod_security_groups")
            })?;
            security_groups.push(sg.id);
        }
        let mut tags = nd.resource_tags.clone();
        tags.push(plan::cluster_tag(&cluster_id));
        // what comes from the nodes reaches every pod, whatever its groups
        let workers = &cfg.pod_vif_nested.worker_nodes_subnets;
        let node_groups = if cfg.node_port.enabled || !workers.is_empty() {
            let g = handlers::node::ensure_groups(
                &os,
                &project_id,
                &tags,
                &cluster_id,
                cfg.node_port.enabled,
                workers,
            )
            .await
            .map_err(|e| anyhow::anyhow!("the nodes' security groups: {e}"))?;
            security_groups.push(g.access.clone());
            Some(g)
        } else {
            None
        };
        security_groups.sort();
        security_groups.dedup();
        let (enabled, mut warnings) = handlers::Enabled::from_names(&k.enabled_handlers);
        let lb = match (&nd.service_subnet, enabled.any_service()) {
            (Some(service_subnet), true) => {
                let od = &cfg.octavia_defaults;
                let provider = match k.endpoints_driver_octavia_provider.as_str() {
                    "default" | "" => None,
                    p => Some(p.to_owned()),
                };
                let service_cidr = n
                    .get_subnet(service_subnet)
                    .await
                    .map_err(|e| anyhow::anyhow!("service subnet {service_subnet}: {e}"))?
                    .cidr;
                let lb_algorithm = services::algorithm_for(provider.as_deref(), &od.lb_algorithm);
                if lb_algorithm != od.lb_algorithm {
                    warnings.push(format!("[octavia_defaults] lb_algorithm {} is not available with the {} provider: {lb_algorithm} is used", od.lb_algorithm, provider.as_deref().unwrap_or("default")));
                }
                if od.member_mode == "L2" {
                    warnings.push("[octavia_defaults] member_mode L2 is read and not acted on: members are given the subnet of their address either way".into());
                }
                // members get the subnet of their address (the ovn provider
                // needs it): every subnet visible now
                let member_subnets = n.list_subnets(&Query::new()).await?;
                Some(services::LbSettings {
                    service: services::ServiceSettings {
                        project_id: project_id.clone(),
                        subnet_id: service_subnet.clone(),
                        provider,
                        security_groups: if od.enforce_sg_rules {
                            security_groups.clone()
                        } else {
                            vec![]
                        },
                        timeout_client_data: u64::from(od.timeout_client_data),
                        timeout_member_data: u64::from(od.timeout_member_data),
                    },
                    lb_algorithm,
                    external_net: nd.external_svc_net.clone(),
                    service_cidr,
                    member_subnets,
                })
            }
            (None, true) => {
                warnings.push(
                    "[neutron_defaults] service_subnet is not set: Services get no load balancers"
                        .into(),
                );
                None
            }
            (_, false) => None,
        };
        let settings = PortSettings {
            network_id: network.id.clone(),
            subnet_id: subnet_id.clone(),
            security_groups: security_groups.clone(),
            project_id: Some(project_id.clone()),
        };
        let drivers = Arc::new(Drivers::new(
            kind,
            os.clone(),
            kube.clone(),
            settings.clone(),
            tags,
            &cluster_id,
            cfg.pod_vif_nested.worker_nodes_subnets.clone(),
        ));
        let metrics: Arc<metrics::Metrics> = Arc::default();
        let vp = &cfg.vif_pool;
        let pool_interval = Duration::from_secs(u64::from(vp.ports_pool_update_frequency.max(1)));
        let pooled = k.vif_pool_driver != "noop";
        let pool = pooled.then(|| {
            ports::PortPool::new(
                drivers.clone(),
                pool::Limits {
                    min: vp.ports_pool_min as usize,
                    max: vp.ports_pool_max as usize,
                    batch: vp.ports_pool_batch as usize,
                },
                options.pool_cool_down.unwrap_or(pool_interval),
                k.port_debug,
                metrics.clone(),
            )
        });
        if let Some(p) = &pool {
            let p = p.clone();
            metrics.add_collector(Box::new(move |out: &mut String| render_pools(&p, out)));
        }
        let calls = os.clone();
        metrics.add_collector(Box::new(move |out: &mut String| render_calls(&calls, out)));
        let recorder = Recorder::new(
            kube.clone(),
            Reporter {
                controller: "kuryr-controller".into(),
                instance: options.instance.clone(),
            },
        );
        Ok(Self {
            pool_rules: gc::PoolRules {
                enabled: pooled,
                nested: kind == DriverKind::NestedVlan,
                project_id,
                subnet_id,
                security_groups,
            },
            settings,
            network,
            subnets,
            ovs_bridge: nd.ovs_bridge.clone(),
            kube,
            os,
            cluster_id,
            drivers,
            pool,
            pool_interval,
            active: Arc::default(),
            recorder,
            options,
            failures: Mutex::default(),
            metrics,
            node_groups,
            handlers: enabled,
            lb,
            warnings,
        })
    }
}

fn render_pools(p: &ports::PortPool, out: &mut String) {
    let name = "kuryr_pool_ports";
    out.push_str(&format!(
        "# HELP {name} Ports of each pool, by state (free, cooling, used).\n# TYPE {name} gauge\n"
    ));
    for (k, free, cooling, used) in p.sizes() {
        for (state, v) in [("free", free), ("cooling", cooling), ("used", used)] {
            out.push_str(&format!(
                "{name}{{pool=\"{}\",subnet=\"{}\",state=\"{state}\"}} {v}\n",
                metrics::escape(&k.host),
                metrics::escape(&k.subnet_id)
            ));
        }
    }
}

fn render_calls(os: &kuryr_openstack::Client, out: &mut String) {
    let name = "kuryr_openstack_requests_total";
    out.push_str(&format!(
        "# HELP {name} HTTP requests to OpenStack (retries included), by service, method, resource and result.\n# TYPE {name} counter\n"
    ));
    for (k, v) in os.call_counts() {
        out.push_str(&format!(
            "{name}{{service=\"{}\",method=\"{}\",resource=\"{}\",result=\"{}\"}} {v}\n",
            k.service,
            k.method,
            metrics::escape(&k.resource),
            k.result
        ));
    }
}

/// Reconciles with Neutron until it works (Neutron or Kubernetes may still
/// be starting), showing progress.
async fn startup_reconcile(ctx: &Context) {
    let mut delay = Duration::from_secs(1);
    loop {
        let pass = async {
            let r = startup::reconcile(ctx, None).await?;
            let lbs = startup::reconcile_load_balancers(ctx, None).await?;
            Ok::<_, Error>((r, lbs))
        };
        match pass.await {
            Ok((r, lbs)) => {
                tracing::info!(
                    in_use = r.in_use,
                    adopted = r.adopted,
                    left_for_pods = r.left,
                    leaked = r.leaked.len(),
                    removed = r.removed,
                    retagged = r.retagged,
                    leaked_load_balancers = lbs,
                    dry_run = ctx.options.gc_dry_run,
                    "start-up reconciliation with Neutron and Octavia done"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "start-up reconciliation failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The pool keys of the nodes to pre-fill (`--pool-prefill-nodes`).
async fn node_keys(ctx: &Context) -> Vec<pool::PoolKey> {
    let Some(sel) = &ctx.options.prefill_nodes else {
        return Vec::new();
    };
    let nodes: Api<Node> = Api::all(ctx.kube.clone());
    let Ok(list) = nodes
        .list_metadata(&ListParams::default().labels(sel))
        .await
    else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for n in list.items {
        let name = n.metadata.name.unwrap_or_default();
        match ctx.drivers.pool_key(&name).await {
            Ok(k) => keys.push(k),
            Err(e) => tracing::debug!(node = %name, error = %e, "no pool for node"),
        }
    }
    keys
}

/// Runs the pod handler until `shutdown` resolves: reconciliation with
/// Neutron first, then the handler beside the pool, ACTIVE and periodic
/// reconciliation tasks.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    startup_reconcile(&ctx).await;
    let mut tasks = Vec::new();
    {
        let c = ctx.clone();
        tasks.push(tokio::spawn(async move {
            c.active.run(c.os.clone(), c.options.active_poll).await;
        }));
    }
    if let Some(pool) = ctx.pool.clone() {
        let c = ctx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let keys = node_keys(&c).await;
                pool.maintain(&keys).await;
                tokio::time::sleep(c.pool_interval).await;
            }
        }));
    }
    if ctx.handlers.pods {
        tasks.push(tokio::spawn(handlers::node::run(ctx.clone())));
    }
    if !ctx.options.gc_interval.is_zero() {
        let c = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut prev = std::collections::BTreeSet::new();
            let mut prev_lbs = std::collections::BTreeSet::new();
            loop {
                tokio::time::sleep(c.options.gc_interval).await;
                if let Err(e) = startup::reconcile_load_balancers(&c, Some(&mut prev_lbs)).await {
                    tracing::warn!(error = %e, "periodic reconciliation of load balancers failed");
                }
                match startup::reconcile(&c, Some(&mut prev)).await {
                    Ok(r) if !r.leaked.is_empty() || r.adopted > 0 => {
                        tracing::info!(
                            leaked = r.leaked.len(),
                            removed = r.removed,
                            adopted = r.adopted,
                            "periodic reconciliation"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "periodic reconciliation failed"),
                }
            }
        }));
    }
    use futures::FutureExt;
    let shutdown = shutdown.shared();
    ctx.metrics.set_ready(true);
    let metrics = ctx.metrics.clone();
    let mut running: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();
    if ctx.handlers.pods {
        running.push(run_pods(ctx.clone(), shutdown.clone()).boxed());
    }
    if ctx.lb.is_some() {
        let h = ctx.handlers;
        if h.services {
            running.push(handlers::service::run(ctx.clone(), shutdown.clone()).boxed());
        }
        if h.endpoints {
            running.push(handlers::endpoint_slice::run(ctx.clone(), shutdown.clone()).boxed());
        }
        if h.loadbalancers {
            running.push(handlers::loadbalancer::run(ctx.clone(), shutdown.clone()).boxed());
        }
    }
    if running.is_empty() {
        tracing::warn!("no handler runs ([kubernetes] enabled_handlers): waiting for shutdown");
        shutdown.await;
    }
    futures::future::join_all(running).await;
    for t in tasks {
        t.abort();
    }
    metrics.set_ready(false);
}

/// The pod handler until `shutdown` resolves.
async fn run_pods(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let pods: Api<Pod> = Api::all(ctx.kube.clone());
    let kps: Api<KuryrPort> = Api::all(ctx.kube.clone());
    let mut cfg = watcher::Config::default();
    if let Some(sel) = &ctx.options.pod_selector {
        cfg = cfg.labels(sel);
    }
    let wake = ctx.active.subscribe();
    let wake = futures::stream::unfold(
        wake,
        |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
    );
    Controller::new(pods, cfg)
        // a KuryrPort changing (or deleted behind our back) wakes its pod
        .watches(kps, watcher::Config::default(), |kp: KuryrPort| {
            let ns = kp.metadata.namespace.clone()?;
            Some(ObjectRef::<Pod>::new(kp.metadata.name.as_deref()?).within(&ns))
        })
        .reconcile_on(wake)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
}

fn error_policy(pod: Arc<Pod>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.errors.fetch_add(1, Ordering::Relaxed);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(uid).or_default();
        *n = n.saturating_add(1);
        *n
    };
    // 2 s, 4 s, ... 60 s, spread so a burst of failures does not retry at once
    let base = Duration::from_secs(2u64.saturating_pow(n.min(6))).min(Duration::from_secs(60));
    let spread = Duration::from_millis(u64::from(n.wrapping_mul(7919) % 1000));
    tracing::warn!(pod = %ObjectRef::from_obj(pod.as_ref()), error = %err, attempt = n, retry_in_ms = (base + spread).as_millis() as u64, "pod network not set up yet; retrying");
    Action::requeue(base + spread)
}

/// Publishes an event about the object `about` (best effort: a failure is
/// only logged); reason and note are cut to what the API accepts.
pub(crate) async fn publish_event(
    ctx: &Context,
    about: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    action: &str,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.chars().take(128).collect(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, about).await {
        tracing::debug!(error = %e, "publishing an event");
    }
}

/// Publishes an event about `pod` (best effort: a failure is only logged).
async fn event(ctx: &Context, pod: &Pod, type_: EventType, reason: &str, note: String) {
    use kube::Resource;
    publish_event(
        ctx,
        &pod.object_ref(&()),
        type_,
        "SetUpNetwork",
        reason,
        note,
    )
    .await;
}

/// One pass over a pod; a failure becomes a warning event on the pod.
async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.pods_handled.fetch_add(1, Ordering::Relaxed);
    match reconcile_pod(&pod, &ctx).await {
        Ok(a) => {
            if let Some(uid) = &pod.metadata.uid {
                ctx.failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(uid);
            }
            Ok(a)
        }
        Err(e) => {
            let reason = e.reason();
            ctx.metrics.count_error(&reason);
            if !matches!(&e, Error::Kube(kube::Error::Api(a)) if a.code == 404 || a.code == 409) {
                event(
                    &ctx,
                    &pod,
                    EventType::Warning,
                    &reason,
                    format!("Pod network not set up: {e}"),
                )
                .await;
            }
            Err(e)
        }
    }
}

/// The port for a new VIF of `kp`'s pod: from its pool, or made for it.
async fn acquire(ctx: &Context, kp: &KuryrPort) -> Result<(Port, Option<u16>), Error> {
    let uid = &kp.spec.pod_uid;
    let node = &kp.spec.pod_node_name;
    let Some(pool) = &ctx.pool else {
        let got = ctx.drivers.ensure_pod_port(uid, node).await?;
        ctx.metrics.ports_created.fetch_add(1, Ordering::Relaxed);
        return Ok(got);
    };
    let key = ctx.drivers.pool_key(node).await?;
    let pp = pool.acquire(&key, uid).await?;
    let port = match &pp.port {
        Some(p) => (**p).clone(),
        None => ctx.os.neutron().get_port(&pp.id).await?,
    };
    Ok((port, pp.vlan_id))
}

/// Steps through one pod until there is nothing left to do now.
async fn reconcile_pod(pod: &Pod, ctx: &Context) -> Result<Action, Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.kube.clone(), &ns);
    let kps: Api<KuryrPort> = Api::namespaced(ctx.kube.clone(), &ns);
    let mut pod = pod.clone();
    let mut kp = kps.get_opt(&name).await?;
    // a bounded number of steps per pass; the watch brings the pod back
    for _ in 0..8 {
        let step = plan::next_step(&pod, kp.as_ref());
        tracing::debug!(pod = %format!("{ns}/{name}"), ?step, "step");
        match step {
            Step::Nothing => return Ok(Action::await_change()),
            Step::AddPodFinalizer => {
                let mut f = pod.metadata.finalizers.clone().unwrap_or_default();
                f.push(POD_FINALIZER.into());
                match set_finalizers(&pods, &pod.metadata, f).await? {
                    Some(p) => pod = p,
                    // deleted before we got to it: nothing was made for it
                    None => return Ok(Action::await_change()),
                }
            }
            Step::RemovePodFinalizer => {
                // `None`: a cached copy of a pod that is already gone
                if set_finalizers(&pods, &pod.metadata, without(&pod.metadata, POD_FINALIZER))
                    .await?
                    .is_some()
                {
                    tracing::info!(pod = %format!("{ns}/{name}"), "pod network released");
                }
                return Ok(Action::await_change());
            }
            Step::CreateKuryrPort => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let node = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default();
                let mut k = KuryrPort::new(
                    &name,
                    KuryrPortSpec {
                        pod_uid: uid,
                        pod_node_name: node.clone(),
                        pod_static: false,
                    },
                );
                k.metadata.labels = Some([(NODE_NAME_LABEL.to_string(), node)].into());
                k.metadata.finalizers = Some(vec![KURYRPORT_FINALIZER.into()]);
                kp = Some(kps.create(&PostParams::default(), &k).await?);
            }
            Step::CreatePort => {
                let k = kp.as_ref().expect("plan: CreatePort has a KuryrPort");
                let (port, vlan) = acquire(ctx, k).await?;
                let mut vif = Vif::from_port(
                    &port,
                    &ctx.network,
                    &ctx.subnets,
                    ctx.drivers.vif_kind(&ctx.ovs_bridge, vlan),
                );
                // ACTIVE is what Neutron says after this pod is plugged,
                // never what a pool port's old description said
                vif.active = false;
                let status = KuryrPortStatus {
                    vifs: [(DEFAULT_IFNAME.to_string(), VifEntry { default: true, vif })].into(),
                };
                let patched = kps
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": status})),
                    )
                    .await;
                match patched {
                    Ok(k) => kp = Some(k),
                    Err(e) => {
                        // not recorded: the port goes back where it came from
                        give_back(ctx, &port.id, &k.spec.pod_node_name).await;
                        return Err(e.into());
                    }
                }
                if let Some(age) = pod_age_seconds(&pod) {
                    ctx.metrics.observe_vif_ready(age);
                }
                tracing::info!(pod = %format!("{ns}/{name}"), port = %port.id, ip = port.first_ip().unwrap_or("-"), vlan, "pod port ready");
            }
            Step::CheckActive => {
                let k = kp.as_ref().expect("plan: CheckActive has a KuryrPort");
                let mut status = k.status.clone().unwrap_or_default();
                let mut changed = false;
                let me = ObjectRef::from_obj(&pod);
                for entry in status.vifs.values_mut().filter(|e| !e.vif.active) {
                    match ctx.active.take_seen(&entry.vif.id) {
                        Some(active::Seen::Active) => {
                            entry.vif.active = true;
                            changed = true;
                        }
                        Some(active::Seen::Gone) if port_gone(ctx, &entry.vif.id).await? => {
                            // deleted behind our back: make a new one
                            tracing::warn!(pod = %format!("{ns}/{name}"), port = %entry.vif.id, "port vanished from Neutron; replacing it");
                            ctx.metrics.ports_replaced.fetch_add(1, Ordering::Relaxed);
                            if let Some(pool) = &ctx.pool {
                                // it is no pool's any more
                                let _ = pool.release(&entry.vif.id).await;
                            }
                            // (null deletes a key in a merge patch; `vifs` itself is required)
                            let gone: serde_json::Map<String, serde_json::Value> = status
                                .vifs
                                .keys()
                                .map(|k| (k.clone(), serde_json::Value::Null))
                                .collect();
                            let p = json!({"status": {"vifs": gone}});
                            kp = Some(
                                kps.patch(&name, &PatchParams::default(), &Patch::Merge(p))
                                    .await?,
                            );
                            changed = false;
                            break;
                        }
                        _ => {
                            let (waited, warn) = ctx.active.watch(
                                &entry.vif.id,
                                me.clone(),
                                ctx.options.active_warning,
                            );
                            if warn {
                                ctx.metrics.ports_stuck.fetch_add(1, Ordering::Relaxed);
                                ctx.metrics.count_error("PortNotActive");
                                event(
                                    ctx,
                                    &pod,
                                    EventType::Warning,
                                    "PortNotActive",
                                    format!(
                                        "Neutron port {} is still not ACTIVE after {} s: is the node's Neutron agent (host {}) running and the pod plugged?",
                                        entry.vif.id,
                                        waited.as_secs(),
                                        k.spec.pod_node_name
                                    ),
                                )
                                .await;
                            }
                        }
                    }
                }
                if changed {
                    kp = Some(
                        kps.patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": status})),
                        )
                        .await?,
                    );
                } else if kp
                    .as_ref()
                    .is_some_and(|k| k.status.as_ref().is_some_and(|s| !s.vifs.is_empty()))
                {
                    // the watcher wakes the pod when Neutron says ACTIVE; the
                    // requeue only brings the stuck-port warning in time
                    return Ok(Action::requeue(
                        ctx.options.active_warning.max(Duration::from_secs(1)),
                    ));
                }
            }
            Step::Release | Step::ReleaseStale => {
                let k = kp.take().expect("plan: Release has a KuryrPort");
                release(ctx, &kps, &k).await?;
            }
        }
    }
    Ok(Action::requeue(Duration::ZERO))
}

/// Whether Neutron really has no port `id` (the batched list said so).
async fn port_gone(ctx: &Context, id: &str) -> Result<bool, Error> {
    match ctx.os.neutron().get_port(id).await {
        Ok(_) => Ok(false),
        Err(e) if e.is_not_found() => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Returns a port that was never recorded: to its pool, else deleted
/// (best effort: reconciliation finds whatever this leaves).
async fn give_back(ctx: &Context, port_id: &str, node: &str) {
    let done = match &ctx.pool {
        Some(p) => p.release(port_id).await.map(|r| r.is_some()),
        None => Ok(false),
    };
    if !matches!(done, Ok(true)) {
        let _ = ctx.drivers.delete_port(port_id, Some(node), None).await;
    }
}

/// Gives back the Neutron ports of a KuryrPort's pod (to their pool, or
/// deleted; by its VIFs and, without a pool, by tag, so a port made but not
/// yet recorded goes too), then deletes the KuryrPort.
async fn release(ctx: &Context, kps: &Api<KuryrPort>, kp: &KuryrPort) -> Result<(), Error> {
    let n = ctx.os.neutron();
    let uid = &kp.spec.pod_uid;
    let node = kp.spec.pod_node_name.as_str();
    let mut ids: Vec<String> = kp
        .status
        .iter()
        .flat_map(|s| s.vifs.values().map(|e| e.vif.id.clone()))
        .collect();
    let tagged = n
        .list_ports(
            &Query::new()
                .tags([plan::cluster_tag(&ctx.cluster_id), plan::pod_tag(uid)])
                .fields(["id", "network_id"]),
        )
        .await?;
    ids.extend(tagged.into_iter().map(|p| p.id));
    ids.sort();
    ids.dedup();
    let mut recycled = 0;
    for id in &ids {
        ctx.active.forget(id);
        if let Some(pool) = &ctx.pool
            && let Some(verdict) = pool.release(id).await?
        {
            recycled += usize::from(verdict == pool::Recycle::Keep);
            continue;
        }
        if ctx.drivers.delete_port(id, Some(node), None).await? {
            ctx.metrics.ports_deleted.fetch_add(1, Ordering::Relaxed);
        }
    }
    let name = kp.metadata.name.clone().unwrap_or_default();
    if plan::kp_has_finalizer(kp)
        && set_finalizers(
            kps,
            &kp.metadata,
            without(&kp.metadata, KURYRPORT_FINALIZER),
        )
        .await?
        .is_none()
    {
        return Ok(());
    }
    match kps.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(kuryrport = %name, pod_uid = %uid, ports = ids.len(), recycled, "released");
    Ok(())
}

/// Seconds since the pod was created (Kubernetes keeps whole seconds).
fn pod_age_seconds(pod: &Pod) -> Option<f64> {
    let ts = serde_json::to_value(pod.metadata.creation_timestamp.as_ref()?).ok()?;
    let created = kuryr_openstack::parse_timestamp(ts.as_str()?)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(now - created as f64)
}

/// A merge patch setting the finalizers, guarded by the resourceVersion the
/// change was computed from (a concurrent change makes it fail and retry).
fn finalizer_patch(meta: &kube::api::ObjectMeta, finalizers: Vec<String>) -> serde_json::Value {
    json!({"metadata": {"finalizers": finalizers, "resourceVersion": meta.resource_version}})
}

/// The object's finalizers without `finalizer`.
pub(crate) fn without(meta: &kube::api::ObjectMeta, finalizer: &str) -> Vec<String> {
    meta.finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect()
}

/// Sets an object's finalizers (see [`finalizer_patch`]); `Ok(None)` when
/// the object is already gone.
pub(crate) async fn set_finalizers<K>(
    api: &Api<K>,
    meta: &kube::api::ObjectMeta,
    finalizers: Vec<String>,
) -> Result<Option<K>, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = meta.name.clone().unwrap_or_default();
    match api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(finalizer_patch(meta, finalizers)),
        )
        .await
    {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}
