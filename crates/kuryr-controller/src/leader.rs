//! Leader election with a `coordination.k8s.io/v1` Lease.
//!
//! Several controllers may run (a Deployment with more than one replica, or
//! an old pod still shutting down while its successor starts), but only one
//! may mutate pods, KuryrPorts and Neutron ports at a time. They agree on
//! one Lease: its `holderIdentity` names the leader, which rewrites
//! `renewTime` every [`LeaseConfig::renew_interval`]. Another process takes
//! the Lease over only when its holder let it expire or gave it up
//! (`holderIdentity` empty). Expiry is measured as client-go measures it:
//! the Lease has not changed (its `resourceVersion`) for longer than
//! `leaseDurationSeconds` on the waiting process's own monotonic clock, so a
//! holder whose wall clock is skewed keeps its Lease while it renews.
//!
//! Every write is a replace carrying the `resourceVersion` it was computed
//! from, so the API server accepts only one of two concurrent writers and
//! answers the other `409 Conflict`: two contenders can never both win.
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> Result<(), kuryr_controller::leader::Error> {
//! use kuryr_controller::leader::{self, LeaseConfig};
//! let leadership = leader::acquire(client, LeaseConfig::default()).await?;
//! let handle = leadership.handle();
//! // ... run the handlers until `handle.lost()` resolves or a signal comes ...
//! # handle.lost().await;
//! leadership.release().await;
//! # Ok(()) }
//! ```

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::Instant;

/// Where and how the Lease is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace of the Lease, e.g. `kube-system`.
    pub namespace: String,
    /// Name of the Lease, e.g. `kuryr-controller`.
    pub name: String,
    /// This process, written as `holderIdentity`; unique among the
    /// contenders (the default is the host name and a random suffix).
    pub identity: String,
    /// How long the Lease stays valid after a renew (written as
    /// `leaseDurationSeconds`, rounded up to whole seconds); a leader that
    /// could not renew for this long considers itself no longer leader.
    pub lease_duration: Duration,
    /// How often the leader renews; well under `lease_duration`.
    pub renew_interval: Duration,
    /// How often a process that is not leader looks at the Lease again
    /// (and how soon a failed renew is tried again).
    pub retry_interval: Duration,
}

impl Default for LeaseConfig {
    /// `kube-system/kuryr-controller`, 15 s lease renewed every 5 s, tried
    /// every 2 s, identity `<hostname>_<random>`.
    fn default() -> Self {
        let lease_duration = Duration::from_secs(15);
        Self {
            namespace: "kube-system".into(),
            name: "kuryr-controller".into(),
            identity: default_identity(),
            lease_duration,
            renew_interval: lease_duration / 3,
            retry_interval: Duration::from_secs(2),
        }
    }
}

/// Why [`acquire`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings cannot work (e.g. a renew interval not shorter than the
    /// lease duration).
    #[error("leader election settings: {0}")]
    Config(String),
    /// Kubernetes refused in a way that waiting does not heal: 403
    /// Forbidden (RBAC), or 400/422 (an invalid Lease name or namespace).
    #[error("leader election Lease {lease}: {source}")]
    Kube {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },
}

/// This process's identity by default: the host name (`$HOSTNAME`, which
/// is the pod name in a pod, else the kernel's), `_`, and a suffix made of
/// the process id and the clock, so that two processes on one host differ.
pub fn default_identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // RandomState is seeded per process: it spreads pid and time further
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(nanos);
    format!("{host}_{:010x}", h.finish() & 0xff_ffff_ffff)
}

/// Now, as the API server's MicroTime (whole microseconds).
fn now() -> Timestamp {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `leaseDurationSeconds` for `d`: rounded up, at least 1 (rounding up
/// keeps the others waiting at least as long as the leader believes it
/// leads).
fn duration_seconds(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.clamp(1, i32::MAX as u64) as i32
}

/// Whether `me` may write itself into a Lease with `spec` whose record this
/// replica has seen unchanged for `unchanged_for` (on its own monotonic
/// clock): no Lease (or no spec) yet, nobody holds it, `me` already holds
/// it, or its holder has not renewed it for longer than its
/// `leaseDurationSeconds` (a missing one counts as 0). Like client-go, the
/// holder's `renewTime` is never compared with this replica's clock: a
/// holder whose clock is behind (or ahead) keeps its Lease as long as it
/// renews.
fn may_take(spec: Option<&LeaseSpec>, unchanged_for: Duration, me: &str) -> bool {
    let Some(spec) = spec else { return true };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return true;
    }
    let dur =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
    unchanged_for > dur
}

/// A Lease's record as this replica last saw it change: its
/// `resourceVersion` (every write changes it) and when it was first seen.
#[derive(Debug, Default)]
struct Observed {
    version: Option<String>,
    since: Option<Instant>,
}

impl Observed {
    /// How long the record with `version` has been seen unchanged, as of
    /// `now` (0 when it just changed).
    fn unchanged_for(&mut self, version: Option<&str>, now: Instant) -> Duration {
        match self.since {
            Some(since) if self.version.as_deref() == version => {
                now.saturating_duration_since(since)
            }
            _ => {
                self.version = version.map(str::to_owned);
                self.since = Some(now);
                Duration::ZERO
            }
        }
    }
}

/// The spec `me` writes to take (or keep) a Lease that had `old`: holder
/// `me`, renewed now; `acquireTime` now and `leaseTransitions` + 1 when the
/// holder changes (from anybody, or nobody, else), else both kept.
fn taken_spec(old: Option<&LeaseSpec>, now: Timestamp, me: &str, duration: Duration) -> LeaseSpec {
    let old = old.cloned().unwrap_or_default();
    let same = old.holder_identity.as_deref() == Some(me);
    let transitions = old.lease_transitions.unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(duration_seconds(duration)),
        renew_time: Some(MicroTime(now)),
        acquire_time: if same && old.acquire_time.is_some() {
            old.acquire_time
        } else {
            Some(MicroTime(now))
        },
        lease_transitions: Some(if same {
            transitions
        } else {
            transitions.saturating_add(1)
        }),
        ..old
    }
}

/// The spec of a Lease given up: no holder, expiring at once (1 s lease
/// from now, for contenders that look only at the times).
fn released_spec(old: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        renew_time: Some(MicroTime(now)),
        ..old.cloned().unwrap_or_default()
    }
}

/// The Lease's holder, `""` for none.
fn holder_of(lease: &Lease) -> &str {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or_default()
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Errors that waiting does not heal.
fn is_fatal(e: &kube::Error) -> bool {
    matches!(api_code(e), Some(400 | 403 | 422))
}

/// `lease` with `spec`, ready to be replaced: same `resourceVersion`
/// (the guard), managed fields left to the server.
fn with_spec(lease: &Lease, spec: LeaseSpec) -> Lease {
    let mut l = lease.clone();
    l.metadata.managed_fields = None;
    l.spec = Some(spec);
    l
}

/// One look at the Lease while waiting for it.
enum Attempt {
    /// We hold it now: the Lease as written.
    Won(Box<Lease>),
    /// Somebody (named, `""` if unknown) holds it or wrote first.
    Busy(String),
}

struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The Lease as last seen while waiting for it.
    observed: std::sync::Mutex<Observed>,
}

impl Elector {
    fn lease_ref(&self) -> String {
        format!("{}/{}", self.cfg.namespace, self.cfg.name)
    }

    /// Reads the Lease and takes it if it may.
    async fn try_take(&self) -> Result<Attempt, kube::Error> {
        let me = &self.cfg.identity;
        let now = now();
        match self.api.get_opt(&self.cfg.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        lease_transitions: Some(0),
                        ..taken_spec(None, now, me, self.cfg.lease_duration)
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(l) => Ok(Attempt::Won(Box::new(l))),
                    // made by somebody else in between
                    Err(e) if api_code(&e) == Some(409) => Ok(Attempt::Busy(String::new())),
                    Err(e) => Err(e),
                }
            }
            Some(lease) => {
                let unchanged_for = crate::lock(&self.observed)
                    .unchanged_for(lease.metadata.resource_version.as_deref(), Instant::now());
                if !may_take(lease.spec.as_ref(), unchanged_for, me) {
                    return Ok(Attempt::Busy(holder_of(&lease).to_string()));
                }
                let spec = taken_spec(lease.spec.as_ref(), now, me, self.cfg.lease_duration);
                let new = with_spec(&lease, spec);
                match self
                    .api
                    .replace(&self.cfg.name, &PostParams::default(), &new)
                    .await
                {
                    Ok(l) => Ok(Attempt::Won(Box::new(l))),
                    // somebody else wrote first
                    Err(e) if api_code(&e) == Some(409) => {
                        Ok(Attempt::Busy(holder_of(&lease).to_string()))
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// One renew from our last copy of the Lease: the Lease as written, or
    /// `Err(holder)` when somebody else holds it now (`""`: nobody).
    async fn renew(&self, current: &Lease) -> Result<Result<Lease, String>, kube::Error> {
        let me = &self.cfg.identity;
        let new = with_spec(
            current,
            taken_spec(current.spec.as_ref(), now(), me, self.cfg.lease_duration),
        );
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &new)
            .await
        {
            Ok(l) => return Ok(Ok(l)),
            // changed since our last write: see by whom, below
            Err(e) if api_code(&e) == Some(409) => {}
            // deleted: write it anew (if a contender made it first, the
            // create fails and the next renew sees the contender)
            Err(e) if api_code(&e) == Some(404) => {
                let mut lease = new;
                lease.metadata = ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(l) => Ok(Ok(l)),
                    Err(e) if api_code(&e) == Some(409) => {
                        let fresh = self.api.get(&self.cfg.name).await?;
                        Ok(Err(holder_of(&fresh).to_string()))
                    }
                    Err(e) => Err(e),
                };
            }
            Err(e) => return Err(e),
        }
        let fresh = self.api.get(&self.cfg.name).await?;
        if holder_of(&fresh) != me {
            return Ok(Err(holder_of(&fresh).to_string()));
        }
        // still ours (somebody touched labels or the like): renew that copy
        let new = with_spec(
            &fresh,
            taken_spec(fresh.spec.as_ref(), now(), me, self.cfg.lease_duration),
        );
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &new)
            .await
        {
            Ok(l) => Ok(Ok(l)),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if we still hold it; a few tries against
    /// concurrent writes. Returns whether it was given up by this call.
    async fn give_up(&self) -> Result<bool, kube::Error> {
        for _ in 0..3 {
            let Some(lease) = self.api.get_opt(&self.cfg.name).await? else {
                return Ok(false);
            };
            if holder_of(&lease) != self.cfg.identity {
                return Ok(false);
            }
            let new = with_spec(&lease, released_spec(lease.spec.as_ref(), now()));
            match self
                .api
                .replace(&self.cfg.name, &PostParams::default(), &new)
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if api_code(&e) == Some(409) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Renews `lease` until somebody else holds it or no renew succeeded
    /// for `lease_duration` since `last_ok` (when the last successful write
    /// was sent); then tells `state` and returns.
    async fn keep(self, mut lease: Lease, mut last_ok: Instant, state: Arc<watch::Sender<bool>>) {
        let lease_ref = self.lease_ref();
        let mut next = last_ok + self.cfg.renew_interval;
        let reason = loop {
            let deadline = last_ok + self.cfg.lease_duration;
            tokio::time::sleep_until(next.min(deadline)).await;
            let started = Instant::now();
            if started >= deadline {
                break format!("no successful renew for {:?}", self.cfg.lease_duration);
            }
            match tokio::time::timeout_at(deadline, self.renew(&lease)).await {
                Ok(Ok(Ok(l))) => {
                    lease = l;
                    last_ok = started;
                    next = started + self.cfg.renew_interval;
                    tracing::trace!(lease = %lease_ref, "renewed");
                }
                Ok(Ok(Err(holder))) if holder.is_empty() => {
                    break "the Lease was given up by somebody else".into();
                }
                Ok(Ok(Err(holder))) => break format!("now held by {holder}"),
                Ok(Err(e)) => {
                    tracing::warn!(lease = %lease_ref, error = %e, "could not renew the leader Lease; retrying");
                    next = Instant::now() + self.cfg.retry_interval.min(self.cfg.renew_interval);
                }
                Err(_) => {
                    break format!("no successful renew for {:?}", self.cfg.lease_duration);
                }
            }
        };
        state.send_replace(false);
        tracing::info!(lease = %lease_ref, identity = %self.cfg.identity, %reason, "leadership lost");
    }
}

/// Waits until this process holds the Lease, then returns a [`Leadership`]
/// that keeps renewing it in a background task.
///
/// The Lease is created when missing, and taken over when it has not
/// changed for longer than its `leaseDurationSeconds` since this process
/// first saw it so (its own clock; see the module documentation) or its
/// `holderIdentity` is empty. Every write is a replace guarded by
/// `resourceVersion`, so two contenders can never both win; a `409
/// Conflict` means somebody else wrote first: the Lease is read again after
/// `retry_interval`. Kubernetes errors while waiting are logged and retried
/// every `retry_interval`, except those that waiting does not heal (403
/// Forbidden, 400/422 invalid), which are returned, as are settings that
/// cannot work.
pub async fn acquire(client: kube::Client, cfg: LeaseConfig) -> Result<Leadership, Error> {
    validate(&cfg)?;
    let el = Elector {
        api: Api::namespaced(client, &cfg.namespace),
        cfg,
        observed: Default::default(),
    };
    let lease_ref = el.lease_ref();
    let mut seen_holder: Option<String> = None;
    let (lease, since) = loop {
        let started = Instant::now();
        match el.try_take().await {
            Ok(Attempt::Won(l)) => break (*l, started),
            Ok(Attempt::Busy(holder)) => {
                if !holder.is_empty() && seen_holder.as_deref() != Some(holder.as_str()) {
                    tracing::info!(lease = %lease_ref, %holder, "waiting for leadership");
                    seen_holder = Some(holder);
                }
            }
            Err(e) if is_fatal(&e) => {
                return Err(Error::Kube {
                    lease: lease_ref,
                    source: e,
                });
            }
            Err(e) => {
                tracing::warn!(lease = %lease_ref, error = %e, "could not read or take the leader Lease; retrying");
            }
        }
        tokio::time::sleep(el.cfg.retry_interval).await;
    };
    tracing::info!(
        lease = %lease_ref,
        identity = %el.cfg.identity,
        transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0),
        "leadership acquired"
    );
    let state = Arc::new(watch::Sender::new(true));
    let rx = state.subscribe();
    let release_api = el.api.clone();
    let cfg = el.cfg.clone();
    let task = tokio::spawn(el.keep(lease, since, state.clone()));
    Ok(Leadership {
        handle: LeaderHandle { rx },
        state,
        task: Some(task),
        releaser: Some(Elector {
            api: release_api,
            cfg,
            observed: Default::default(),
        }),
    })
}

fn validate(cfg: &LeaseConfig) -> Result<(), Error> {
    let bad = |m: &str| Err(Error::Config(m.to_string()));
    if cfg.identity.is_empty() {
        return bad("identity is empty");
    }
    if cfg.namespace.is_empty() || cfg.name.is_empty() {
        return bad("Lease namespace or name is empty");
    }
    if cfg.lease_duration < Duration::from_secs(1) {
        return bad("lease_duration is under 1 s");
    }
    if cfg.renew_interval.is_zero() || cfg.renew_interval >= cfg.lease_duration {
        return bad("renew_interval must be above 0 and under lease_duration");
    }
    if cfg.retry_interval.is_zero() {
        return bad("retry_interval is 0");
    }
    Ok(())
}

/// A cheap, cloneable view of a [`Leadership`], to hand to the tasks that
/// must stop when it is lost.
#[derive(Clone, Debug)]
pub struct LeaderHandle {
    rx: watch::Receiver<bool>,
}

impl LeaderHandle {
    /// Resolves when leadership is lost (see [`Leadership::lost`]); at once
    /// if it already is. May be awaited any number of times.
    pub async fn lost(&self) {
        let mut rx = self.rx.clone();
        // Err: the Leadership and its task are gone, which is lost too
        let _ = rx.wait_for(|leading| !leading).await;
    }

    /// Whether this process still leads.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }
}

/// This process holds the Lease; a background task renews it until it is
/// lost, [released](Leadership::release) or this is dropped.
#[derive(Debug)]
pub struct Leadership {
    handle: LeaderHandle,
    state: Arc<watch::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<()>>,
    releaser: Option<Elector>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector").field("cfg", &self.cfg).finish()
    }
}

impl Leadership {
    /// Resolves when leadership is lost: another holder in the Lease, or no
    /// successful renew for longer than `lease_duration` (the API server
    /// unreachable), or [`release`](Self::release) / drop. After it
    /// resolves the caller must stop mutating anything. May be awaited any
    /// number of times, also through [`handle`](Self::handle)s.
    pub async fn lost(&self) {
        self.handle.lost().await
    }

    /// Whether this process still leads.
    pub fn is_leader(&self) -> bool {
        self.handle.is_leader()
    }

    /// A cloneable handle with [`lost`](LeaderHandle::lost) and
    /// [`is_leader`](LeaderHandle::is_leader), e.g. for a shutdown future.
    pub fn handle(&self) -> LeaderHandle {
        self.handle.clone()
    }

    /// Clean shutdown: stops renewing and gives the Lease up (no holder,
    /// `leaseDurationSeconds` 1, `renewTime` now) so that a successor takes
    /// over at once. Does nothing to a Lease somebody else holds by now.
    /// Errors are logged: the Lease then simply expires.
    pub async fn release(mut self) {
        self.stop();
        let Some(el) = self.releaser.take() else {
            return;
        };
        let lease_ref = el.lease_ref();
        match tokio::time::timeout(el.cfg.lease_duration, el.give_up()).await {
            Ok(Ok(true)) => {
                tracing::info!(lease = %lease_ref, identity = %el.cfg.identity, "leadership released");
            }
            Ok(Ok(false)) => {
                tracing::info!(lease = %lease_ref, identity = %el.cfg.identity, "leadership already lost; nothing to release");
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %lease_ref, error = %e, "could not release the leader Lease; it will expire");
            }
            Err(_) => {
                tracing::warn!(lease = %lease_ref, "releasing the leader Lease timed out; it will expire");
            }
        }
    }

    /// Stops the renew task and marks leadership lost.
    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.state.send_replace(false);
    }
}

impl Drop for Leadership {
    /// Stops renewing without giving the Lease up (like a crash: it then
    /// expires after `lease_duration`).
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn spec(holder: Option<&str>, renewed: Option<i64>, dur: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: renewed.map(|s| MicroTime(ts(s))),
            lease_duration_seconds: dur,
            ..Default::default()
        }
    }

    #[test]
    fn may_take_missing_or_empty_or_mine() {
        let now = Duration::ZERO;
        assert!(may_take(None, now, "me"));
        assert!(may_take(Some(&spec(None, Some(0), Some(15))), now, "me"));
        assert!(may_take(
            Some(&spec(Some(""), Some(0), Some(15))),
            now,
            "me"
        ));
        assert!(may_take(
            Some(&spec(Some("me"), Some(0), Some(15))),
            now,
            "me"
        ));
    }

    #[test]
    fn may_take_only_when_others_lease_went_unrenewed_on_our_clock() {
        let secs = Duration::from_secs;
        let other = spec(Some("other"), Some(0), Some(15));
        assert!(!may_take(Some(&other), secs(1), "me"), "fresh");
        assert!(!may_take(Some(&other), secs(15), "me"), "exactly at expiry");
        assert!(may_take(Some(&other), secs(16), "me"), "expired");
        // a peer whose clock is an hour behind renews a live Lease: its
        // renewTime says nothing about expiry
        let skewed = spec(Some("other"), Some(-3600), Some(15));
        assert!(!may_take(Some(&skewed), secs(1), "me"));
        // no renewTime or no duration: only the observation counts
        assert!(!may_take(
            Some(&spec(Some("other"), None, Some(15))),
            secs(1),
            "me"
        ));
        assert!(may_take(
            Some(&spec(Some("other"), None, Some(15))),
            secs(16),
            "me"
        ));
        assert!(may_take(
            Some(&spec(Some("other"), Some(0), None)),
            secs(1),
            "me"
        ));
    }

    #[test]
    fn the_observation_restarts_whenever_the_record_changes() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut o = Observed::default();
        assert_eq!(
            o.unchanged_for(Some("1"), t0),
            Duration::ZERO,
            "first sight"
        );
        assert_eq!(o.unchanged_for(Some("1"), t0 + secs(10)), secs(10));
        assert_eq!(
            o.unchanged_for(Some("2"), t0 + secs(11)),
            Duration::ZERO,
            "renewed"
        );
        assert_eq!(o.unchanged_for(Some("2"), t0 + secs(20)), secs(9));
        assert_eq!(o.unchanged_for(None, t0 + secs(21)), Duration::ZERO);
    }

    #[test]
    fn taking_counts_transitions_and_keeps_them_when_renewing() {
        let d = Duration::from_secs(15);
        let mut old = spec(Some("other"), Some(0), Some(15));
        old.lease_transitions = Some(4);
        old.acquire_time = Some(MicroTime(ts(-100)));
        let taken = taken_spec(Some(&old), ts(20), "me", d);
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.lease_transitions, Some(5));
        assert_eq!(taken.acquire_time, Some(MicroTime(ts(20))));
        assert_eq!(taken.renew_time, Some(MicroTime(ts(20))));
        assert_eq!(taken.lease_duration_seconds, Some(15));

        let renewed = taken_spec(Some(&taken), ts(25), "me", d);
        assert_eq!(renewed.lease_transitions, Some(5));
        assert_eq!(renewed.acquire_time, Some(MicroTime(ts(20))));
        assert_eq!(renewed.renew_time, Some(MicroTime(ts(25))));

        // given up, then taken again: a transition
        let released = released_spec(Some(&renewed), ts(26));
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_duration_seconds, Some(1));
        assert_eq!(released.lease_transitions, Some(5));
        assert!(may_take(Some(&released), Duration::ZERO, "next"));
        let next = taken_spec(Some(&released), ts(27), "next", d);
        assert_eq!(next.lease_transitions, Some(6));
    }

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(duration_seconds(Duration::from_secs(15)), 15);
        assert_eq!(duration_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(duration_seconds(Duration::from_millis(10)), 1);
    }

    #[test]
    fn defaults_and_identities() {
        let c = LeaseConfig::default();
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.renew_interval, Duration::from_secs(5));
        assert_eq!(c.retry_interval, Duration::from_secs(2));
        assert!(validate(&c).is_ok());
        assert!(c.identity.contains('_'), "{}", c.identity);
        assert_ne!(default_identity(), default_identity());
        let bad = LeaseConfig {
            renew_interval: c.lease_duration,
            ..c.clone()
        };
        assert!(matches!(validate(&bad), Err(Error::Config(_))));
    }

    #[tokio::test]
    async fn handle_sees_loss_any_number_of_times() {
        let state = Arc::new(watch::Sender::new(true));
        let h = LeaderHandle {
            rx: state.subscribe(),
        };
        let h2 = h.clone();
        assert!(h.is_leader());
        let waiter = tokio::spawn(async move { h2.lost().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        state.send_replace(false);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(!h.is_leader());
        h.lost().await;
        h.lost().await;
    }
}
