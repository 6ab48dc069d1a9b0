//! kuryr-controller: watches pods and gives each a Neutron port.

use anyhow::Context as _;
use clap::Parser;
use kuryr_config::KuryrConfig;
use kuryr_openstack::CloudConfig;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// (`kuryr-cluster:<id>`), so several clusters can share a project.
    #[arg(long, env = "KURYR_CLUSTER_ID", default_value = "kuryr")]
    cluster_id: String,
    /// Handle only pods matching this label selector.
    #[arg(long)]
    pod_selector: Option<String>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "KURYR_METRICS_ADDRESS", default_value = "127.0.0.1:9654")]
    metrics_address: String,
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
        Ok(CloudConfig::from_vars(|var| {
            var.strip_prefix("OS_")
                .and_then(|k| neutron.get(&k.to_ascii_lowercase()).cloned())
        })?)
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
    let kube = kuryr_crds::kube_client(args.kubeconfig.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!("Kubernetes client: {e}"))?;
    let os = kuryr_openstack::Client::new(cloud_config(&cfg.neutron)?)?;
    kuryr_crds::install(&kube)
        .await
        .context("installing the kuryr CRDs")?;
    let ctx = Arc::new(
        kuryr_controller::Context::new(kube, os, &cfg, args.cluster_id, args.pod_selector).await?,
    );
    let (addr, _metrics) =
        kuryr_controller::metrics::serve(&args.metrics_address, ctx.metrics.clone())
            .await
            .with_context(|| format!("serving metrics on {}", args.metrics_address))?;
    tracing::info!(network = %ctx.network.id, subnet = %ctx.settings.subnet_id, metrics = %addr, "kuryr-controller running");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    kuryr_controller::run(ctx, async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
    .await;
    Ok(())
}
