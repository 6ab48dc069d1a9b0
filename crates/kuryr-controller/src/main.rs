//! kuryr-controller: watches pods and gives each a Neutron port.

use anyhow::Context as _;
use clap::Parser;
use kuryr_config::KuryrConfig;
use kuryr_controller::leader::{self, LeaseConfig};
use kuryr_openstack::CloudConfig;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// kuryr-rs controller: every pod gets a Neutron port, recorded in its
/// KuryrPort (openstack.org/v1) for the node daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// kuryr.conf (kuryr-kubernetes option names).
    #[arg(
        long,
        env = "KURYR_CONFIG_FILE",
        default_value = "/etc/kuryr/kuryr.conf"
    )]
    config_file: PathBuf,
    /// kubeconfig; default: KUBECONFIG, ~/.kube/config or in-cluster.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Id of this cluster, tagged on every Neutron resource it makes
    /// (`kuryr-cluster:<id>`), so several clusters can share a project; a
    /// controller never touches a resource tagged with another id. Default:
    /// the UID of the cluster's kube-system namespace, unique per cluster.
    /// (Earlier builds defaulted to `kuryr`: give `--cluster-id kuryr` to
    /// keep managing what they made.)
    #[arg(long, env = "KURYR_CLUSTER_ID")]
    cluster_id: Option<String>,
    /// Handle only pods matching this label selector.
    #[arg(long)]
    pod_selector: Option<String>,
    /// Handle only the namespaces matching this label selector: their
    /// NetworkPolicies, networks (namespace networks) and Services.
    #[arg(long)]
    namespace_selector: Option<String>,
    /// Only nodes matching this label selector get a node port ([node_port]
    /// enabled): e.g. the bare-metal nodes of a cluster whose other nodes
    /// are VMs reaching their pods through their own NIC.
    #[arg(long)]
    node_selector: Option<String>,
    /// Seconds between comparisons of each KuryrLoadBalancer with Octavia,
    /// and of each NetworkPolicy's group with Neutron, when nothing changed
    /// (repairs what was changed behind our back).
    #[arg(long, default_value_t = 120)]
    lb_recheck: u64,
    /// KuryrLoadBalancers reconciled at once: a burst of Services is
    /// finished a few at a time instead of all of them together at the end.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    lb_workers: u16,
    /// Report leaked Neutron ports (metric, log) instead of deleting them.
    #[arg(long)]
    gc_dry_run: bool,
    /// Seconds between reconciliations with Neutron after the one at start
    /// (leaked ports, free ports back into pools); 0: only at start.
    #[arg(long, default_value_t = 300)]
    gc_interval: u64,
    /// Milliseconds between looks at ports waiting to go ACTIVE (one
    /// Neutron list call for all of them).
    #[arg(long, default_value_t = 500)]
    active_poll_ms: u64,
    /// Seconds a port may stay DOWN before its pod gets a warning event.
    #[arg(long, default_value_t = 60)]
    active_warning: u64,
    /// Seconds a given-back pool port waits before another pod gets it
    /// (default: [vif_pool] ports_pool_update_frequency).
    #[arg(long)]
    pool_cool_down: Option<u64>,
    /// Fill the port pools of the nodes matching this label selector
    /// before their first pod ("" for every node); default: a pool is made
    /// when its node's first pod needs a port.
    #[arg(long)]
    pool_prefill_nodes: Option<String>,
    /// Lease for leader election, as namespace/name; only its holder acts.
    #[arg(long, default_value = "kube-system/kuryr-controller")]
    leader_lease: String,
    /// Run without leader election (one replica only!).
    #[arg(long)]
    no_leader_election: bool,
    /// Name of this replica (Lease holder, events); default: host name and
    /// a random suffix.
    #[arg(long, env = "KURYR_INSTANCE")]
    instance: Option<String>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "KURYR_METRICS_ADDRESS", default_value = "127.0.0.1:9654")]
    metrics_address: String,
    /// Seconds the Kubernetes watches, or every Neutron call, may fail
    /// with no success in between before /healthz answers 503 (so the
    /// kubelet restarts the controller); 0: /healthz never fails.
    #[arg(long, default_value_t = 120)]
    liveness_bound: u64,
    /// Seconds between reads of the pod network and its subnets, so VIFs
    /// of new pods carry an MTU, routes or DNS servers changed in Neutron;
    /// 0: read only at start.
    #[arg(long, default_value_t = 60)]
    net_refresh: u64,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

/// OpenStack credentials from kuryr.conf's [neutron] (keystoneauth option
/// names), else from OS_CLOUD / OS_* like the openstack CLI.
fn cloud_config(
    neutron: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<CloudConfig> {
    if neutron.contains_key("auth_url") {
        let (c, warnings) = CloudConfig::from_keystoneauth(neutron)?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        Ok(c)
    } else {
        Ok(CloudConfig::from_env()?)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    kuryr_config::init_logging(args.log_format == "json");
    let (cfg, warnings) = KuryrConfig::load(&args.config_file)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let api_root = kuryr_crds::ApiRoot {
        url: cfg.kubernetes.api_root.clone(),
        token_file: cfg.kubernetes.token_file.clone(),
        ca_file: cfg.kubernetes.ssl_ca_crt_file.clone(),
    };
    let kube = kuryr_crds::kube_client(args.kubeconfig.as_deref(), &api_root)
        .await
        .map_err(|e| anyhow::anyhow!("Kubernetes client: {e}"))?;
    let os = kuryr_openstack::Client::new(cloud_config(&cfg.neutron)?)?;
    kuryr_crds::install(&kube)
        .await
        .context("installing the kuryr CRDs")?;
    let mut lease = LeaseConfig::default();
    if let Some(id) = &args.instance {
        lease.identity = id.clone();
    }
    let (ns, name) = args
        .leader_lease
        .split_once('/')
        .context("--leader-lease wants namespace/name")?;
    lease.namespace = ns.to_owned();
    lease.name = name.to_owned();
    let options = kuryr_controller::Options {
        pod_selector: args.pod_selector,
        namespace_selector: args.namespace_selector,
        node_selector: args.node_selector,
        gc_dry_run: args.gc_dry_run,
        gc_interval: Duration::from_secs(args.gc_interval),
        active_poll: Duration::from_millis(args.active_poll_ms.max(50)),
        active_warning: Duration::from_secs(args.active_warning),
        pool_cool_down: args.pool_cool_down.map(Duration::from_secs),
        lb_recheck: Duration::from_secs(args.lb_recheck.max(1)),
        lb_workers: args.lb_workers,
        instance: Some(lease.identity.clone()),
        prefill_nodes: args.pool_prefill_nodes,
        liveness_bound: Duration::from_secs(args.liveness_bound),
        net_refresh: Duration::from_secs(args.net_refresh),
    };
    let cluster_id = match args.cluster_id.filter(|c| !c.is_empty()) {
        Some(c) => c,
        None => kuryr_crds::cluster_identity(&kube)
            .await
            .context("reading the cluster's identity (the kube-system namespace's UID)")?
            .context("the kube-system namespace has no UID: give --cluster-id")?,
    };
    tracing::info!(cluster_id = %cluster_id, "cluster identity (tag kuryr-cluster:<id>)");
    let ctx = Arc::new(
        kuryr_controller::Context::new(kube.clone(), os, &cfg, cluster_id, options).await?,
    );
    let (addr, _metrics) =
        kuryr_controller::metrics::serve(&args.metrics_address, ctx.metrics.clone())
            .await
            .with_context(|| format!("serving metrics on {}", args.metrics_address))?;
    // leader or not, /healthz reflects whether Kubernetes and Neutron answer
    tokio::spawn(kuryr_controller::health::probe(ctx.clone()));
    for w in &ctx.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(network = %ctx.pod_net.id(), subnet = %ctx.settings.subnet_id, driver = %cfg.kubernetes.pod_vif_driver, pool = %cfg.kubernetes.vif_pool_driver, metrics = %addr, "kuryr-controller started");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    if args.no_leader_election {
        ctx.metrics.leader.store(true, Ordering::Relaxed);
        kuryr_controller::run(ctx, stopped()).await;
        return Ok(());
    }
    tracing::info!(lease = %args.leader_lease, identity = %lease.identity, "waiting for the leader lease");
    let leadership = tokio::select! {
        l = leader::acquire(kube, lease) => l.context("leader election")?,
        _ = stopped() => return Ok(()),
    };
    ctx.metrics.leader.store(true, Ordering::Relaxed);
    let handle = leadership.handle();
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lost2 = lost.clone();
    let stop = stopped();
    kuryr_controller::run(ctx.clone(), async move {
        tokio::select! {
            _ = stop => {}
            _ = handle.lost() => lost2.store(true, Ordering::Relaxed),
        }
    })
    .await;
    ctx.metrics.leader.store(false, Ordering::Relaxed);
    if lost.load(Ordering::Relaxed) {
        // another replica leads now: stop at once, mutate nothing more
        anyhow::bail!("lost the leader lease; exiting so a restart waits for it again");
    }
    leadership.release().await;
    Ok(())
}
