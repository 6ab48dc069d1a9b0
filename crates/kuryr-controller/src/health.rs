//! Whether the controller can still do its job, for `/healthz`: its view of
//! Kubernetes and its Neutron client must not have failed for longer than
//! a bound without a success in between. A restart (what the kubelet does
//! when `/healthz` fails) cures a wedged client or connection, not an
//! outage: keep the bound well above the outages to ride out.
//!
//! [`Health`] is the decision (pure, times passed in). [`probe`] feeds it
//! from cheap periodic calls, so that a quiet controller is judged too;
//! the handlers may add their watch results ([`Health::watch_result`]).
//! Watch results and the Kubernetes probe share one clock: the controller
//! is live while either gets through.

use crate::{Context, lock};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The default of [`crate::Options::liveness_bound`].
pub const DEFAULT_BOUND: Duration = Duration::from_secs(120);

/// Successes and failures of one dependency.
#[derive(Debug, Default, Clone, Copy)]
struct Track {
    last_ok: Option<Instant>,
    /// The first failure after the last success.
    failing_since: Option<Instant>,
}

impl Track {
    fn ok(&mut self, now: Instant) {
        self.last_ok = Some(self.last_ok.map_or(now, |t| t.max(now)));
        // a success reported late does not clear failures seen after it
        if self.failing_since.is_some_and(|s| s <= now) {
            self.failing_since = None;
        }
    }

    fn failed(&mut self, now: Instant) {
        if self.failing_since.is_none() && self.last_ok.is_none_or(|ok| ok < now) {
            self.failing_since = Some(now);
        }
    }

    /// How long it has failed at `now`, if that is `bound` or more.
    fn failing_for(&self, now: Instant, bound: Duration) -> Option<Duration> {
        let d = now.saturating_duration_since(self.failing_since?);
        (d >= bound).then_some(d)
    }
}

#[derive(Debug, Default)]
struct State {
    watch: Track,
    neutron: Track,
}

/// Liveness of the controller: failing once its watches (and calls to the
/// Kubernetes API), or its Neutron client, have failed for `bound` with no
/// success in between. Cheap to update from any task.
#[derive(Debug)]
pub struct Health {
    bound: Duration,
    state: Mutex<State>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(DEFAULT_BOUND)
    }
}

impl Health {
    /// Failing after `bound` of failures only (zero: never failing).
    pub fn new(bound: Duration) -> Self {
        Self {
            bound,
            state: Mutex::default(),
        }
    }

    /// How long failures may last before [`Health::liveness`] fails.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// A watch delivered an event (or the Kubernetes API answered).
    pub fn watch_ok(&self, now: Instant) {
        lock(&self.state).watch.ok(now);
    }

    /// A watch failed (or the Kubernetes API did not answer).
    pub fn watch_failed(&self, now: Instant) {
        lock(&self.state).watch.failed(now);
    }

    /// A Neutron call succeeded.
    pub fn neutron_ok(&self, now: Instant) {
        lock(&self.state).neutron.ok(now);
    }

    /// A Neutron call failed.
    pub fn neutron_failed(&self, now: Instant) {
        lock(&self.state).neutron.failed(now);
    }

    /// Records one item of a `kube::runtime::Controller` stream at `now`:
    /// an event-queue (watch) error is a watch failure; anything else (a
    /// reconcile ran, even one that failed) shows that the watches deliver.
    pub fn watch_result<T, R, Q>(
        &self,
        res: &Result<T, kube::runtime::controller::Error<R, Q>>,
        now: Instant,
    ) {
        match res {
            Err(kube::runtime::controller::Error::QueueError(_)) => self.watch_failed(now),
            _ => self.watch_ok(now),
        }
    }

    /// `Ok` while the controller can do its job at `now`; else why not,
    /// for the `/healthz` body.
    pub fn liveness(&self, now: Instant) -> Result<(), String> {
        if self.bound.is_zero() {
            return Ok(());
        }
        let s = lock(&self.state);
        let bound = self.bound.as_secs();
        let mut why = Vec::new();
        if let Some(d) = s.watch.failing_for(now, self.bound) {
            why.push(format!(
                "the Kubernetes watches and API calls have failed for {} s with no success (bound {bound} s): check the API server and the controller's credentials",
                d.as_secs()
            ));
        }
        if let Some(d) = s.neutron.failing_for(now, self.bound) {
            why.push(format!(
                "every Neutron call has failed for {} s (bound {bound} s): check Neutron, Keystone and kuryr.conf [neutron]",
                d.as_secs()
            ));
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }
}

/// Requests to Neutron (`network`) that got a 2xx answer so far.
fn neutron_successes(os: &kuryr_openstack::Client) -> u64 {
    os.call_counts()
        .iter()
        .filter(|(k, _)| k.service == "network" && k.result == "2xx")
        .map(|(_, v)| v)
        .sum()
}

/// Feeds [`Health`] (in `ctx.metrics`) until aborted: every interval (a
/// quarter of the bound, at most 30 s), Neutron is healthy if a request
/// of anyone succeeded since the last look, else one `GET` of the pod
/// network decides; the Kubernetes API is asked for one pod. Does nothing
/// with a zero bound.
pub async fn probe(ctx: Arc<Context>) {
    let health = &ctx.metrics.health;
    if health.bound().is_zero() {
        return;
    }
    let interval = (health.bound() / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let pods: Api<Pod> = Api::all(ctx.kube.clone());
    let mut seen = neutron_successes(&ctx.os);
    loop {
        tokio::time::sleep(interval).await;
        if neutron_successes(&ctx.os) > seen {
            health.neutron_ok(Instant::now());
        } else {
            let got =
                tokio::time::timeout(interval, ctx.os.neutron().get_network(ctx.pod_net.id()))
                    .await;
            match got {
                Ok(Ok(_)) => health.neutron_ok(Instant::now()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, network = %ctx.pod_net.id(), "Neutron health probe failed");
                    health.neutron_failed(Instant::now());
                }
                Err(_) => {
                    tracing::warn!(timeout_s = interval.as_secs(), network = %ctx.pod_net.id(), "Neutron health probe timed out");
                    health.neutron_failed(Instant::now());
                }
            }
        }
        seen = neutron_successes(&ctx.os);
        let got = tokio::time::timeout(
            interval,
            pods.list_metadata(&ListParams::default().limit(1)),
        )
        .await;
        match got {
            Ok(Ok(_)) => health.watch_ok(Instant::now()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Kubernetes health probe (list one pod) failed");
                health.watch_failed(Instant::now());
            }
            Err(_) => {
                tracing::warn!(
                    timeout_s = interval.as_secs(),
                    "Kubernetes health probe (list one pod) timed out"
                );
                health.watch_failed(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn live_until_failures_last_the_bound() {
        let h = Health::new(120 * S);
        let t0 = Instant::now();
        assert_eq!(h.liveness(t0), Ok(()));
        h.watch_failed(t0);
        h.watch_failed(t0 + 60 * S);
        assert_eq!(h.liveness(t0 + 119 * S), Ok(()));
        let why = h.liveness(t0 + 130 * S).unwrap_err();
        assert!(why.contains("Kubernetes") && why.contains("130 s"), "{why}");
        assert!(!why.contains("Neutron"), "{why}");
        // one event: live again, and the clock starts over
        h.watch_ok(t0 + 131 * S);
        assert_eq!(h.liveness(t0 + 131 * S), Ok(()));
        h.watch_failed(t0 + 140 * S);
        assert_eq!(h.liveness(t0 + 200 * S), Ok(()));
        assert!(h.liveness(t0 + 260 * S).is_err());
    }

    #[test]
    fn neutron_and_watches_are_judged_apart_and_both_named() {
        let h = Health::new(10 * S);
        let t0 = Instant::now();
        h.neutron_failed(t0);
        h.watch_ok(t0 + 5 * S);
        let why = h.liveness(t0 + 11 * S).unwrap_err();
        assert!(
            why.contains("every Neutron call has failed for 11 s"),
            "{why}"
        );
        h.watch_failed(t0 + 6 * S);
        let why = h.liveness(t0 + 20 * S).unwrap_err();
        assert!(
            why.contains("Neutron") && why.contains("Kubernetes"),
            "{why}"
        );
        h.neutron_ok(t0 + 21 * S);
        h.watch_ok(t0 + 21 * S);
        assert_eq!(h.liveness(t0 + 100 * S), Ok(()));
    }

    #[test]
    fn a_late_success_does_not_hide_newer_failures() {
        let h = Health::new(10 * S);
        let t0 = Instant::now();
        h.neutron_failed(t0 + 5 * S);
        // a call that started and succeeded before the failure, reported after
        h.neutron_ok(t0 + 2 * S);
        assert!(h.liveness(t0 + 16 * S).is_err());
        // a failure older than the last success starts no clock
        h.neutron_ok(t0 + 20 * S);
        h.neutron_failed(t0 + 19 * S);
        assert_eq!(h.liveness(t0 + 40 * S), Ok(()));
    }

    #[test]
    fn controller_results_count_as_watch_events_unless_the_queue_failed() {
        use kube::runtime::controller::Error as E;
        type R = Result<(), E<std::io::Error, kube::runtime::watcher::Error>>;
        let h = Health::new(10 * S);
        let t0 = Instant::now();
        let queue: R = Err(E::QueueError(
            kube::runtime::watcher::Error::NoResourceVersion,
        ));
        h.watch_result(&queue, t0);
        assert!(h.liveness(t0 + 10 * S).is_err());
        // a reconcile that failed still came from a watch event
        let reconcile: R = Err(E::ReconcilerFailed(
            std::io::Error::other("Neutron said no"),
            Box::new(kube::runtime::reflector::ObjectRef::<Pod>::new("p").erase()),
        ));
        h.watch_result(&reconcile, t0 + 11 * S);
        assert_eq!(h.liveness(t0 + 30 * S), Ok(()));
        h.watch_result(&queue, t0 + 31 * S);
        let reconciled: R = Ok(());
        h.watch_result(&reconciled, t0 + 32 * S);
        assert_eq!(h.liveness(t0 + 60 * S), Ok(()));
    }

    #[test]
    fn a_zero_bound_never_fails() {
        let h = Health::new(Duration::ZERO);
        let t0 = Instant::now();
        h.watch_failed(t0);
        h.neutron_failed(t0);
        assert_eq!(h.liveness(t0 + 3600 * S), Ok(()));
    }
}
