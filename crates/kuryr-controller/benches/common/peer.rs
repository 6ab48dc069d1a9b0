//! The controller a stack benchmark measures: kuryr-rs' in the bench's
//! process, or kuryr-kubernetes' (the peer) started by a script of
//! `scripts/peer/` and stopped through its process group.

use anyhow::Context as _;
use kuryr_stack_tests::wait_until;
use std::time::Duration;

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
