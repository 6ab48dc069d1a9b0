//! Helpers for the smoke tests of the kuryr-rs test stack.
//!
//! The stack (`stack/stack up`) runs real Kubernetes, Keystone, Neutron,
//! Octavia and Open vSwitch on loopback and writes an env file with their
//! endpoints. These helpers read that file, run commands with clear errors,
//! create network namespaces and links that remove themselves, and talk to
//! the OpenStack APIs with plain JSON (the typed client is a crate of its own).
//!
//! The tests themselves live in `tests/` and are compiled only with the
//! `stack` feature (the teardown check with `teardown`), so that a plain
//! `cargo test` never needs the stack.

pub mod bench;
pub mod cmd;
pub mod cni;
pub mod echo;
pub mod env;
pub mod k8s;
pub mod net;
pub mod openstack;
pub mod plug;
pub mod proxy;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every `every` until it returns `Ok(Some(v))`, or fails with
/// the last error (or "still not ...") after `timeout`. `what` names the
/// condition in the error, e.g. "port 1234 ACTIVE".
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        if start.elapsed() >= timeout {
            return Err(match last {
                Some(e) => e.context(format!("{what}: not reached in {timeout:?}")),
                None => anyhow::anyhow!("{what}: not reached in {timeout:?}"),
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs `body`, then `cleanup` whatever happened to it (error or panic):
/// returns the body's error first, then the cleanup's; re-raises a panic
/// after the cleanup ran. `cleanup` is not polled before `body` is done.
pub async fn finally<T>(
    body: impl Future<Output = anyhow::Result<T>>,
    cleanup: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<T> {
    use futures::FutureExt;
    let res = std::panic::AssertUnwindSafe(body).catch_unwind().await;
    let cleaned = cleanup.await;
    match res {
        Err(panic) => {
            if let Err(e) = cleaned {
                eprintln!("cleanup after a panic failed too: {e:#}");
            }
            std::panic::resume_unwind(panic)
        }
        Ok(r) => {
            let v = r?;
            cleaned.map_err(|e| e.context("cleanup failed"))?;
            Ok(v)
        }
    }
}

/// Records that the calling test skipped part or all of what it checks, and
/// why: printed on stderr and appended to the file `KURYR_TEST_SKIPS` names
/// (`scripts/test` counts and prints those lines beside passed and failed).
/// `what` names the test or check.
pub fn skip(what: &str, why: &str) {
    let line = format!("SKIP: {what}: {why}");
    eprintln!("{line}");
    if let Ok(path) = std::env::var("KURYR_TEST_SKIPS") {
        use std::io::Write;
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            eprintln!("cannot record the skip in {path}: {e}");
        }
    }
}

/// A name unique to this test process: `prefix` plus the pid and a counter,
/// cut to `max` bytes (Linux link names have at most 15).
pub fn unique_name(prefix: &str, max: usize) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    let mut s = format!("{prefix}{pid}x{n}");
    if s.len() > max {
        // keep the distinguishing tail
        s = s[s.len() - max..].to_string();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_fit() {
        let a = unique_name("kst", 15);
        let b = unique_name("kst", 15);
        assert_ne!(a, b);
        assert!(a.len() <= 15 && b.len() <= 15, "{a} {b}");
        let long = unique_name("a-very-long-prefix-for-links", 15);
        assert_eq!(long.len(), 15);
    }

    #[tokio::test]
    async fn finally_cleans_up_after_success_error_and_panic() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let cleaned = AtomicU32::new(0);
        let cleanup = || async {
            cleaned.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        assert_eq!(finally(async { Ok(7) }, cleanup()).await.unwrap(), 7);
        let e = finally::<()>(async { anyhow::bail!("body") }, cleanup())
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "body");
        let panicked =
            std::panic::AssertUnwindSafe(finally::<()>(async { panic!("boom") }, cleanup()));
        assert!(futures::FutureExt::catch_unwind(panicked).await.is_err());
        assert_eq!(cleaned.load(Ordering::SeqCst), 3);
        let e = finally(async { Ok(1) }, async { anyhow::bail!("undo") })
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("cleanup failed: undo"), "{e:#}");
    }

    #[tokio::test]
    async fn wait_until_returns_value_or_times_out() {
        let mut n = 0;
        let v = wait_until(
            "third try",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                n += 1;
                let done = n >= 3;
                async move { Ok(done.then_some(42)) }
            },
        )
        .await
        .unwrap();
        assert_eq!(v, 42);

        let err = wait_until::<(), _, _>(
            "never",
            Duration::from_millis(20),
            Duration::from_millis(5),
            || async { Err(anyhow::anyhow!("boom")) },
        )
        .await
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("never: not reached") && msg.contains("boom"),
            "{msg}"
        );
    }
}
