//! kuryr-daemon: binds this node's pods to their Neutron ports for kuryr-cni.

use anyhow::Context as _;
use clap::Parser;
use kuryr_config::KuryrConfig;
use kuryr_daemon::{Daemon, Settings, cache::KpCache, server};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// kuryr-rs node daemon: answers kuryr-cni on a unix socket, binding each
/// pod to the Neutron port in its KuryrPort (veth into OVS, macvlan or VLAN
/// of the VM's NIC).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// kuryr.conf (kuryr-kubernetes option names; [cni_daemon], [binding],
    /// [neutron_defaults] are read).
    #[arg(
        long,
        env = "KURYR_CONFIG_FILE",
        default_value = "/etc/kuryr/kuryr.conf"
    )]
    config_file: PathBuf,
    /// kubeconfig; default: KUBECONFIG, ~/.kube/config or in-cluster.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// This node's Kubernetes name (KuryrPorts labelled with it are ours).
    #[arg(long, env = "KURYR_NODE_NAME")]
    node_name: Option<String>,
    /// CNI socket (default: [cni_daemon] daemon_socket, /run/kuryr/daemon.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// State directory (default: [cni_daemon] state_dir, /var/lib/kuryr-daemon).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// ovsdb-server's unix socket.
    #[arg(
        long,
        env = "OVSDB_SOCK",
        default_value = "/var/run/openvswitch/db.sock"
    )]
    ovsdb: PathBuf,
    /// Where /alive, /ready and /metrics are served.
    #[arg(
        long,
        env = "KURYR_DAEMON_METRICS_ADDRESS",
        default_value = "127.0.0.1:9655"
    )]
    metrics_address: String,
    /// Seconds between garbage-collection passes (0: only at start).
    #[arg(long, default_value_t = 60)]
    gc_interval: u64,
    /// After DEL, host links still present this long later are deleted
    /// (the runtime's namespace removal usually destroys them first).
    #[arg(long, default_value_t = 2000)]
    link_cleanup_delay_ms: u64,
    /// Plug OVS VIFs as soon as their KuryrPort has them, ahead of the
    /// pod's ADD: the Neutron port goes ACTIVE while the runtime still makes
    /// the sandbox, but the ADD then moves the waiting veth end into the
    /// pod, which costs the kernel 15-35 ms here (more than plugging anew),
    /// and every prepared port slows ovs-vswitchd's reconfiguration.
    #[arg(long, env = "KURYR_DAEMON_PREPARE_VIFS")]
    prepare_vifs: bool,
    /// Seconds the KuryrPort watch may fail without an event, or
    /// ovsdb-server go unanswered, before /alive fails and the kubelet
    /// restarts the daemon (kuryr.conf's [cni_health_server] has no such
    /// option).
    #[arg(long, env = "KURYR_DAEMON_UNHEALTHY_AFTER", default_value_t = 120)]
    unhealthy_after: u64,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    kuryr_config::init_logging(args.log_format == "json");
    let (cfg, warnings) = KuryrConfig::load(&args.config_file)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let node = match args.node_name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("no --node-name and no hostname")?
            .trim()
            .to_owned(),
    };
    let api_root = kuryr_crds::ApiRoot {
        url: cfg.kubernetes.api_root.clone(),
        token_file: cfg.kubernetes.token_file.clone(),
        ca_file: cfg.kubernetes.ssl_ca_crt_file.clone(),
    };
    let client = kuryr_crds::kube_client(args.kubeconfig.as_deref(), &api_root)
        .await
        .map_err(|e| anyhow::anyhow!("Kubernetes client: {e}"))?;
    let settings = Settings {
        node: node.clone(),
        state_dir: args
            .state_dir
            .unwrap_or_else(|| cfg.cni_daemon.state_dir.clone().into()),
        ovsdb: args.ovsdb,
        link_iface: cfg.binding.link_iface.clone(),
        mtu: cfg.neutron_defaults.network_device_mtu,
        vif_timeout: Duration::from_secs(cfg.cni_daemon.vif_annotation_timeout.into()),
        unhealthy_after: Duration::from_secs(args.unhealthy_after),
    };
    let socket = args
        .socket
        .unwrap_or_else(|| cfg.cni_daemon.daemon_socket.clone().into());
    let listener = server::bind_cni_socket(&socket)?;
    let cache = KpCache::start(client.clone(), &node);
    let daemon = Arc::new(Daemon::new(settings, cache)?);
    daemon.start_reaper(Duration::from_millis(args.link_cleanup_delay_ms));
    if args.prepare_vifs {
        daemon.start_preparer();
    }
    let probe = kuryr_daemon::health::start_probe(&daemon);
    let (addr, _health) = server::serve_health(&args.metrics_address, daemon.clone())
        .await
        .with_context(|| format!("serving metrics on {}", args.metrics_address))?;
    tracing::info!(node = %node, socket = %socket.display(), metrics = %addr, attachments = daemon.state.len(), "kuryr-daemon running");
    let gc = {
        let d = daemon.clone();
        let every = args.gc_interval;
        tokio::spawn(async move {
            loop {
                let n = d.gc().await;
                if n > 0 {
                    tracing::info!(removed = n, "garbage collection");
                }
                if every == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(every)).await;
            }
        })
    };
    let node_port = cfg.node_port.enabled.then(|| {
        tokio::spawn(kuryr_daemon::node_port::run(
            daemon.clone(),
            client.clone(),
            cfg.node_port.interface.clone(),
            Duration::from_secs(30),
        ))
    });
    let cni = tokio::spawn(server::serve_cni(listener, daemon.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping; pods and the node port stay plugged");
    cni.abort();
    if let Some(t) = node_port {
        t.abort();
    }
    gc.abort();
    probe.abort();
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
