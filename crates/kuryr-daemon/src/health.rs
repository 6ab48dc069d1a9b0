//! Whether the daemon can still do its job (`/alive`, the liveness probe)
//! and can answer CNI requests now (`/ready`, the readiness probe).
//!
//! Alive fails, and the kubelet restarts the daemon, only on what a restart
//! can cure: the KuryrPort watch task has ended, the watch has failed for
//! longer than [`Settings::unhealthy_after`](crate::Settings) without one
//! event in between, ovsdb-server has not answered the periodic probe for
//! that long, or the CNI socket server has stopped. Ready also needs the
//! KuryrPort cache synced, the CNI socket served and ovsdb-server answering
//! now. The decisions take the time as an argument, so tests inject
//! timestamps instead of waiting.

use crate::Daemon;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How the KuryrPort watch is doing, recorded by its loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchProgress {
    /// When the watch last delivered an event (list or change).
    pub last_event: Option<Instant>,
    /// When the errors since the last event began; `None` while the watch
    /// is not failing.
    pub failing_since: Option<Instant>,
    /// The watch task has ended (it never should).
    pub ended: bool,
}

impl WatchProgress {
    /// Records an event the watch delivered at `at`.
    pub fn event(&mut self, at: Instant) {
        self.last_event = Some(at);
        self.failing_since = None;
    }

    /// Records an error of the watch at `at`.
    pub fn error(&mut self, at: Instant) {
        self.failing_since.get_or_insert(at);
    }
}

#[derive(Debug)]
struct OvsdbProbe {
    last_answer: Instant,
    error: Option<String>,
}

const CNI_NOT_STARTED: u8 = 0;
const CNI_RUNNING: u8 = 1;
const CNI_ENDED: u8 = 2;

/// The daemon's health, apart from the KuryrPort watch (which the cache
/// records, see [`crate::cache::KpCache::progress`]).
#[derive(Debug)]
pub struct Health {
    unhealthy_after: Duration,
    ovsdb: Mutex<OvsdbProbe>,
    cni: AtomicU8,
}

/// Marks the CNI socket server running while it lives; it is dropped when
/// the server's task ends, panics or is aborted.
#[must_use = "the CNI server counts as running only while the guard lives"]
pub struct CniServing<'a>(&'a Health);

impl Drop for CniServing<'_> {
    fn drop(&mut self) {
        self.0.cni.store(CNI_ENDED, Ordering::Relaxed);
    }
}

impl Health {
    /// Health with the bound `unhealthy_after`; ovsdb-server counts as
    /// having answered now, so a starting daemon gets the whole bound.
    pub fn new(unhealthy_after: Duration) -> Self {
        Self {
            unhealthy_after,
            ovsdb: Mutex::new(OvsdbProbe {
                last_answer: Instant::now(),
                error: None,
            }),
            cni: AtomicU8::new(CNI_NOT_STARTED),
        }
    }

    /// Records that ovsdb-server answered at `at`.
    pub fn ovsdb_answered(&self, at: Instant) {
        let mut o = self.ovsdb.lock().unwrap_or_else(|e| e.into_inner());
        o.last_answer = o.last_answer.max(at);
        o.error = None;
    }

    /// Records that ovsdb-server did not answer, and why.
    pub fn ovsdb_failed(&self, error: String) {
        self.ovsdb.lock().unwrap_or_else(|e| e.into_inner()).error = Some(error);
    }

    /// Marks the CNI socket server running until the guard is dropped.
    pub fn cni_serving(&self) -> CniServing<'_> {
        self.cni.store(CNI_RUNNING, Ordering::Relaxed);
        CniServing(self)
    }

    /// The CNI socket server is running.
    pub fn cni_running(&self) -> bool {
        self.cni.load(Ordering::Relaxed) == CNI_RUNNING
    }

    /// Alive at `now`, given the watch's progress; the reason otherwise.
    pub fn alive(&self, watch: &WatchProgress, now: Instant) -> Result<(), String> {
        let bound = self.unhealthy_after;
        if watch.ended {
            return Err("the KuryrPort watch task has ended".into());
        }
        if let Some(since) = watch.failing_since {
            let failing = now.saturating_duration_since(since);
            if failing > bound {
                return Err(format!(
                    "the KuryrPort watch has failed for {}s without an event (bound {}s); is the Kubernetes API reachable?",
                    failing.as_secs(),
                    bound.as_secs()
                ));
            }
        }
        if self.cni.load(Ordering::Relaxed) == CNI_ENDED {
            return Err("the CNI socket server has stopped".into());
        }
        let o = self.ovsdb.lock().unwrap_or_else(|e| e.into_inner());
        let quiet = now.saturating_duration_since(o.last_answer);
        if quiet > bound {
            return Err(format!(
                "ovsdb-server has not answered for {}s (bound {}s){}",
                quiet.as_secs(),
                bound.as_secs(),
                o.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        Ok(())
    }

    fn ovsdb_ok(&self) -> bool {
        self.ovsdb
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .error
            .is_none()
    }

    /// How often [`start_probe`]'s task asks: a quarter of the bound, 1 to 10 s.
    pub fn probe_interval(&self) -> Duration {
        (self.unhealthy_after / 4).clamp(Duration::from_secs(1), Duration::from_secs(10))
    }
}

impl Daemon {
    /// Alive now; the reason otherwise (see the module docs).
    pub fn alive(&self) -> Result<(), String> {
        self.health.alive(&self.cache.progress(), Instant::now())
    }

    /// Ready now (KuryrPort cache synced and its watch running, CNI socket
    /// served, ovsdb-server answering); the reason otherwise. Sets
    /// `kuryr_cni_ready`.
    pub async fn ready(&self) -> Result<(), String> {
        let r = self.check_ready().await;
        self.metrics.set_ready(r.is_ok());
        r
    }

    async fn check_ready(&self) -> Result<(), String> {
        if !self.cache.synced() {
            return Err(if self.cache.progress().ended {
                "the KuryrPort watch task has ended".into()
            } else {
                "KuryrPort cache not synced with the Kubernetes API yet".into()
            });
        }
        if !self.health.cni_running() {
            return Err("the CNI socket server is not running".into());
        }
        match self.ovs.ping().await {
            Ok(()) => {
                self.health.ovsdb_answered(Instant::now());
                Ok(())
            }
            Err(e) => Err(format!("Open vSwitch is not reachable: {e}")),
        }
    }
}

async fn probe_ovsdb(daemon: std::sync::Weak<Daemon>) {
    let every = match daemon.upgrade() {
        Some(d) => d.health.probe_interval(),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(d) = daemon.upgrade() else { return };
        match tokio::time::timeout(every, d.ovs.ping()).await {
            Ok(Ok(())) => d.health.ovsdb_answered(Instant::now()),
            Ok(Err(e)) => d.health.ovsdb_failed(e.to_string()),
            Err(_) => d
                .health
                .ovsdb_failed(format!("no answer within {}s", every.as_secs())),
        }
        let ready = d.cache.synced() && d.health.cni_running();
        d.metrics.set_ready(ready && d.health.ovsdb_ok());
    }
}

/// Starts asking ovsdb-server for a no-op transaction every
/// [`Health::probe_interval`], recording the answers for `/alive` and
/// refreshing `kuryr_cni_ready`; the task ends when the daemon is dropped.
pub fn start_probe(daemon: &Arc<Daemon>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(probe_ovsdb(Arc::downgrade(daemon)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(120);

    fn ago(now: Instant, secs: u64) -> Instant {
        now.checked_sub(Duration::from_secs(secs))
            .expect("the monotonic clock is older than the test's offsets")
    }

    #[test]
    fn a_watch_failing_past_the_bound_is_not_alive_until_an_event() {
        let h = Health::new(BOUND);
        let now = Instant::now();
        let mut w = WatchProgress::default();
        w.error(ago(now, 100));
        // errors keep coming: the run of failures started at the first one
        w.error(ago(now, 10));
        assert_eq!(h.alive(&w, now), Ok(()));
        let later = now + Duration::from_secs(21);
        let e = h.alive(&w, later).unwrap_err();
        assert!(e.contains("KuryrPort watch has failed for 121s"), "{e}");
        w.event(later);
        assert_eq!(h.alive(&w, later), Ok(()));
        assert_eq!(w.last_event, Some(later));
    }

    #[test]
    fn a_quiet_watch_without_errors_stays_alive() {
        let h = Health::new(BOUND);
        let now = Instant::now();
        let mut w = WatchProgress::default();
        w.event(now);
        h.ovsdb_answered(now + Duration::from_secs(3600));
        assert_eq!(h.alive(&w, now + Duration::from_secs(3600)), Ok(()));
    }

    #[test]
    fn an_ended_watch_is_not_alive() {
        let h = Health::new(BOUND);
        let w = WatchProgress {
            ended: true,
            ..Default::default()
        };
        let e = h.alive(&w, Instant::now()).unwrap_err();
        assert_eq!(e, "the KuryrPort watch task has ended");
    }

    #[test]
    fn ovsdb_silent_past_the_bound_is_not_alive() {
        let h = Health::new(BOUND);
        let w = WatchProgress::default();
        let t0 = Instant::now();
        h.ovsdb_answered(t0);
        h.ovsdb_failed("connection refused".into());
        assert_eq!(h.alive(&w, t0 + BOUND), Ok(()));
        let e = h
            .alive(&w, t0 + BOUND + Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(
            e,
            "ovsdb-server has not answered for 121s (bound 120s): connection refused"
        );
        h.ovsdb_answered(t0 + BOUND + Duration::from_secs(2));
        assert_eq!(h.alive(&w, t0 + BOUND + Duration::from_secs(2)), Ok(()));
    }

    #[test]
    fn the_cni_server_counts_while_its_guard_lives() {
        let h = Health::new(BOUND);
        let w = WatchProgress::default();
        assert!(!h.cni_running());
        // not started yet is not a reason to restart
        assert_eq!(h.alive(&w, Instant::now()), Ok(()));
        let g = h.cni_serving();
        assert!(h.cni_running());
        drop(g);
        assert!(!h.cni_running());
        let e = h.alive(&w, Instant::now()).unwrap_err();
        assert_eq!(e, "the CNI socket server has stopped");
    }

    #[test]
    fn the_probe_interval_follows_the_bound() {
        assert_eq!(Health::new(BOUND).probe_interval(), Duration::from_secs(10));
        assert_eq!(
            Health::new(Duration::from_secs(8)).probe_interval(),
            Duration::from_secs(2)
        );
        assert_eq!(
            Health::new(Duration::ZERO).probe_interval(),
            Duration::from_secs(1)
        );
    }
}
