//! What the stack benchmarks share: the stack's clients, a RuntimeClass
//! no runtime has, and the controller a benchmark measures: kuryr-rs' in
//! the bench's process, or kuryr-kubernetes' (the peer) started by a script
//! of `scripts/peer/` and stopped through its process group.
#![allow(dead_code)]

use anyhow::Context as _;
use kube::api::Api;
use kuryr_config::KuryrConfig;
use kuryr_controller::{Context, Options};
use kuryr_openstack::CloudConfig;
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::wait_until;
use std::sync::Arc;
use std::time::Duration;

/// The stack's Kubernetes and OpenStack clients, kuryr's CRDs installed.
pub async fn clients(env: &StackEnv) -> anyhow::Result<(kube::Client, kuryr_openstack::Client)> {
    let kc = kube::config::Kubeconfig::read_from(env.get("KUBECONFIG")?)?;
    let kube = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?,
    )?;
    let os = kuryr_openstack::Client::new(CloudConfig::from_vars(|k| {
        env.get(k).ok().map(str::to_owned)
    })?)?;
    kuryr_crds::install(&kube).await?;
    Ok((kube, os))
}

/// Deletes every pod `pods` lists (no grace) and waits up to 5 min until
/// they are gone (a controller still running gives their ports back).
/// Clean-up: failures are not reported.
pub async fn delete_pods(pods: &Api<k8s_openapi::api::core::v1::Pod>) {
    use kube::api::{DeleteParams, ListParams};
    let _ = pods
        .delete_collection(
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
            &ListParams::default(),
        )
        .await;
    let _ = wait_until(
        "bench pods gone",
        Duration::from_secs(300),
        Duration::from_millis(500),
        || async {
            Ok(pods
                .list(&ListParams::default())
                .await?
                .items
                .is_empty()
                .then_some(()))
        },
    )
    .await;
}

/// The controller under test: in this process, or the peer's, started by
/// `KURYR_BENCH_PEER` and stopped through its process group.
pub enum Controller {
    InProcess(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
    Peer(i32),
}

impl Controller {
    /// kuryr-rs' controller with kuryr.conf `conf`, run in this process.
    pub async fn in_process(
        kube: &kube::Client,
        os: &kuryr_openstack::Client,
        conf: &str,
        cluster: String,
        options: Options,
    ) -> anyhow::Result<Self> {
        let (cfg, _) = KuryrConfig::parse(conf, |_| None)?;
        let ctx = Arc::new(Context::new(kube.clone(), os.clone(), &cfg, cluster, options).await?);
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(kuryr_controller::run(ctx, async {
            let _ = rx.await;
        }));
        Ok(Controller::InProcess(stop, handle))
    }

    pub async fn stop(self) {
        match self {
            Controller::InProcess(stop, handle) => {
                let _ = stop.send(());
                let _ = handle.await;
            }
            Controller::Peer(pgid) => {
                let group = format!("-{pgid}");
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", "--", &group])
                    .status();
                let gone = || {
                    !std::process::Command::new("kill")
                        .args(["-0", "--", &group])
                        .stderr(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                };
                let _ = wait_until(
                    "the peer controller gone",
                    Duration::from_secs(15),
                    Duration::from_millis(200),
                    || async { Ok(gone().then_some(())) },
                )
                .await;
                if !gone() {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", "--", &group])
                        .status();
                }
            }
        }
    }
}

/// Starts the peer controller with `cmd start` and `env`; its process
/// group id.
pub fn start_peer(cmd: &str, env: &[(&str, &str)]) -> anyhow::Result<i32> {
    let out = std::process::Command::new(cmd)
        .arg("start")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd} start"))?;
    anyhow::ensure!(out.status.success(), "{cmd} start failed ({})", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("{cmd} start printed {text:?}, not a process group id"))
}
