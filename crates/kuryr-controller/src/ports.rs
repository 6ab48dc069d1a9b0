//! The pool manager: hands pods ports from their pool, refills pools in the
//! background with bulk creates, takes ports back (after a cool-down, once
//! Neutron shows them unplugged) and trims pools to their maximum. The
//! decisions are [`crate::pool`]'s; this module does the calls.
//!
//! Crash safety: taking a port from a pool changes nothing in Neutron; the
//! KuryrPort that records it is what makes it used. A port taken but not yet
//! recorded when the controller dies is still free in Neutron, and goes back
//! to its pool at the next start ([`crate::startup`]).

use crate::drivers::{DriverError, Drivers};
use crate::lock;
use crate::metrics::Metrics;
use crate::pool::{Limits, PoolKey, PoolPort, Pools, Recycle};
use kuryr_openstack::Query;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long [`PortPool::acquire`] waits for a batch before it gives up
/// (the pod is retried).
const ACQUIRE_WAIT: Duration = Duration::from_secs(60);

/// The port pools of the controller.
pub struct PortPool {
    drivers: Arc<Drivers>,
    state: Mutex<Pools>,
    /// Ports in use by pods, with their pool (to give them back there).
    owned: Mutex<HashMap<String, (PoolKey, PoolPort)>>,
    /// The last failure of each pool's refill, for the pods waiting on it.
    failures: Mutex<HashMap<PoolKey, (u64, String, String)>>,
    /// Pools whose last batch failed for want of addresses or quota: one
    /// port at a time until a batch works again.
    starved: Mutex<std::collections::HashSet<PoolKey>>,
    /// Bumped whenever ports become free or a batch fails.
    changed: watch::Sender<u64>,
    cool_down: Duration,
    /// `[kubernetes] port_debug`: free ports are renamed and owned by pod.
    pub port_debug: bool,
    metrics: Arc<Metrics>,
}

impl PortPool {
    /// An empty pool manager.
    pub fn new(
        drivers: Arc<Drivers>,
        limits: Limits,
        cool_down: Duration,
        port_debug: bool,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            drivers,
            state: Mutex::new(Pools::new(limits)),
            owned: Mutex::default(),
            failures: Mutex::default(),
            starved: Mutex::default(),
            changed: watch::channel(0).0,
            cool_down,
            port_debug,
            metrics,
        })
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// A port of `key`'s pool for pod `uid`: a free one at once, else the
    /// one a batch makes (started here if none is running). Fails with the
    /// batch's Neutron error (no IPs, quota) so the pod gets an event.
    pub async fn acquire(
        self: &Arc<Self>,
        key: &PoolKey,
        uid: &str,
    ) -> Result<PoolPort, DriverError> {
        let mut rx = self.changed.subscribe();
        let deadline = Instant::now() + ACQUIRE_WAIT;
        let mut waiting = false;
        let seen_failure = lock(&self.failures).get(key).map(|f| f.0);
        let got = loop {
            rx.borrow_and_update();
            let taken = lock(&self.state).take(key);
            if let Some(p) = taken {
                break Ok(p);
            }
            if let Some((n, reason, msg)) = lock(&self.failures).get(key).cloned()
                && Some(n) != seen_failure
            {
                break Err(DriverError::Pool { reason, msg });
            }
            if !waiting {
                lock(&self.state).wait(key);
                waiting = true;
            }
            self.refill(key);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
                break Err(DriverError::Pool {
                    reason: "PoolTimeout".into(),
                    msg: format!(
                        "No port of pool {} came within {}s",
                        key.host,
                        ACQUIRE_WAIT.as_secs()
                    ),
                });
            }
        };
        if waiting {
            lock(&self.state).stop_waiting(key);
        }
        let port = got?;
        lock(&self.owned).insert(port.id.clone(), (key.clone(), port.clone()));
        self.refill(key);
        if self.port_debug {
            // shows the owner in Neutron; costs a call per pod
            let _ = self.drivers.set_owner(&port.id, Some(uid)).await;
        }
        Ok(port)
    }

    /// Starts a batch for `key` when the pool needs one and none runs.
    pub fn refill(self: &Arc<Self>, key: &PoolKey) {
        let cap = if lock(&self.starved).contains(key) {
            1
        } else {
            crate::pool::MAX_BULK
        };
        let n = lock(&self.state).start_refill(key, cap);
        if n == 0 {
            return;
        }
        let me = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            match me.drivers.create_pool_ports(&key, n).await {
                Ok(made) => {
                    tracing::info!(pool = %key.host, ports = made.len(), ms = t.elapsed().as_millis() as u64, "pool refilled");
                    me.metrics
                        .ports_created
                        .fetch_add(made.len() as u64, Ordering::Relaxed);
                    lock(&me.state).created(&key, made);
                    lock(&me.failures).remove(&key);
                    lock(&me.starved).remove(&key);
                }
                Err(e) => {
                    tracing::warn!(pool = %key.host, error = %e, "pool refill failed");
                    let reason = crate::driver_error_reason(&e);
                    me.metrics.count_error(&reason);
                    if matches!(reason.as_str(), "IpAddressGenerationFailure" | "OverQuota") {
                        lock(&me.starved).insert(key.clone());
                    }
                    lock(&me.state).created(&key, Vec::new());
                    let mut f = lock(&me.failures);
                    let n = f.get(&key).map_or(0, |x| x.0) + 1;
                    f.insert(key.clone(), (n, reason, format!("Making pool ports: {e}")));
                }
            }
            me.bump();
        });
    }

    /// Takes back the port of a pod that went away: into its pool's
    /// cool-down, or deleted when the pool is full. `None` when the port is
    /// not a pool port (the caller deletes it).
    pub async fn release(&self, port_id: &str) -> Result<Option<Recycle>, DriverError> {
        let Some((key, port)) = lock(&self.owned).remove(port_id) else {
            return Ok(None);
        };
        let verdict = lock(&self.state).give_back(&key, port, Instant::now(), self.cool_down);
        if verdict == Recycle::Delete {
            self.drivers
                .delete_port(
                    port_id,
                    None,
                    Some(key.host.as_str()).filter(|_| self.nested()),
                )
                .await?;
            self.metrics.ports_deleted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(verdict))
    }

    fn nested(&self) -> bool {
        self.drivers.kind == crate::drivers::DriverKind::NestedVlan
    }

    /// Records a port found in use at start-up, to give it back to `key`.
    pub fn adopt_owned(&self, key: PoolKey, port: PoolPort) {
        lock(&self.owned).insert(port.id.clone(), (key, port));
    }

    /// Puts a port found free at start-up into its pool (cooling first when
    /// Neutron still shows it plugged).
    pub fn adopt_free(&self, key: &PoolKey, port: PoolPort, active: bool) {
        let mut s = lock(&self.state);
        if active {
            s.give_back(key, port, Instant::now(), Duration::ZERO);
        } else {
            s.add_free(key, port);
        }
        drop(s);
        self.bump();
    }

    /// One maintenance pass: cooled ports become free (side-by-side only
    /// once Neutron shows them DOWN, so a pod still plugged is never handed
    /// its port), ports over the maximum are deleted, and every pool in
    /// `keys` (one per node) and every known pool is refilled to its minimum.
    pub async fn maintain(self: &Arc<Self>, keys: &[PoolKey]) {
        let due = lock(&self.state).due(Instant::now());
        if !due.is_empty() {
            let status = if self.nested() {
                HashMap::new()
            } else {
                self.statuses(due.iter().map(|(_, p)| p.id.as_str())).await
            };
            for (key, port) in &due {
                match status.get(&port.id).map(String::as_str) {
                    _ if self.nested() => {}
                    Some("ACTIVE") => continue,
                    None => {
                        // gone from Neutron (or the list failed: try later)
                        if !status.is_empty() {
                            lock(&self.state).forget(key, &port.id);
                        }
                        continue;
                    }
                    Some(_) => {}
                }
                if self.port_debug && self.drivers.set_owner(&port.id, None).await.is_err() {
                    continue;
                }
                lock(&self.state).cooled(key, &port.id);
            }
            self.bump();
        }
        let extra = lock(&self.state).trim();
        for (key, port) in extra {
            match self
                .drivers
                .delete_port(
                    &port.id,
                    None,
                    Some(key.host.as_str()).filter(|_| self.nested()),
                )
                .await
            {
                Ok(_) => {
                    self.metrics.ports_deleted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(port = %port.id, error = %e, "could not trim a pool port; keeping it");
                    lock(&self.state).add_free(&key, port);
                }
            }
        }
        let mut all = lock(&self.state).keys();
        all.extend(keys.iter().cloned());
        all.sort();
        all.dedup();
        for k in &all {
            self.refill(k);
        }
    }

    /// Neutron status of each of `ids` (absent: no such port; empty map:
    /// the list failed).
    async fn statuses<'a>(&self, ids: impl Iterator<Item = &'a str>) -> HashMap<String, String> {
        let ids: Vec<&str> = ids.collect();
        let mut out = HashMap::new();
        for chunk in ids.chunks(80) {
            let mut q = Query::new().fields(["id", "network_id", "status"]);
            for id in chunk {
                q = q.filter("id", *id);
            }
            match self.drivers.os().neutron().list_ports(&q).await {
                Ok(ports) => out.extend(ports.into_iter().map(|p| (p.id, p.status))),
                Err(e) => {
                    tracing::warn!(error = %e, "checking cooled ports");
                    return HashMap::new();
                }
            }
        }
        out
    }

    /// Free, cooling and in-use port counts of every pool, for `/metrics`.
    pub fn sizes(&self) -> Vec<(PoolKey, usize, usize, usize)> {
        let s = lock(&self.state);
        let owned = lock(&self.owned);
        let mut keys = s.keys();
        keys.extend(owned.values().map(|(k, _)| k.clone()));
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|k| {
                let used = owned.values().filter(|(x, _)| *x == k).count();
                (k.clone(), s.free(&k), s.cooling(&k), used)
            })
            .collect()
    }

    /// Forgets the pools of `subnet` (a namespace's network goes; its
    /// ports are deleted with it): answers how many ports they held.
    pub fn forget_subnet(&self, subnet: &str) -> usize {
        let held = lock(&self.state).drop_subnet(subnet).len();
        lock(&self.owned).retain(|_, (k, _)| k.subnet_id != subnet);
        lock(&self.failures).retain(|k, _| k.subnet_id != subnet);
        lock(&self.starved).retain(|k| k.subnet_id != subnet);
        held
    }

    /// Whether the pools hold or lend `port_id`.
    pub fn knows(&self, port_id: &str) -> bool {
        lock(&self.owned).contains_key(port_id) || lock(&self.state).holds(port_id)
    }

    /// Every port a pool holds (free or cooling).
    pub fn held(&self) -> Vec<(PoolKey, PoolPort)> {
        lock(&self.state).all()
    }
}
