//! Waiting for ports to go ACTIVE, for all pods at once: one Neutron list
//! call per interval covers every port still DOWN (instead of a `GET` per
//! pod per second), and the pod whose port went ACTIVE, or vanished, is
//! reconciled at once.

use crate::lock;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use kuryr_openstack::Query;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the last look at a port found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Neutron says ACTIVE.
    Active,
    /// Neutron has no such port.
    Gone,
}

struct Pending {
    pod: ObjectRef<Pod>,
    since: Instant,
    warned: bool,
}

/// Ports being waited for, and what was seen of them.
pub struct ActiveWatch {
    pending: Mutex<HashMap<String, Pending>>,
    seen: Mutex<HashMap<String, Seen>>,
    wake: Mutex<Option<mpsc::UnboundedSender<ObjectRef<Pod>>>>,
}

impl Default for ActiveWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl ActiveWatch {
    /// A watcher waking nobody yet (see [`ActiveWatch::subscribe`]).
    pub fn new() -> Self {
        Self {
            pending: Mutex::default(),
            seen: Mutex::default(),
            wake: Mutex::default(),
        }
    }

    /// The pods to reconcile, from now on sent here (a handler that starts
    /// again takes over from the one before).
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<ObjectRef<Pod>> {
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&self.wake) = Some(tx);
        rx
    }

    /// What was seen of `port` since the pod last asked (taken).
    pub fn take_seen(&self, port: &str) -> Option<Seen> {
        lock(&self.seen).remove(port)
    }

    /// Waits for `port` of `pod`; answers how long it has been waited for
    /// and whether this is the first call past `warn_after` (to tell the
    /// user once that the port is stuck).
    pub fn watch(&self, port: &str, pod: ObjectRef<Pod>, warn_after: Duration) -> (Duration, bool) {
        let mut p = lock(&self.pending);
        let e = p.entry(port.to_owned()).or_insert_with(|| Pending {
            pod,
            since: Instant::now(),
            warned: false,
        });
        let waited = e.since.elapsed();
        let warn = !e.warned && waited >= warn_after;
        if warn {
            e.warned = true;
        }
        (waited, warn)
    }

    /// Stops waiting for `port` (its pod went away).
    pub fn forget(&self, port: &str) {
        lock(&self.pending).remove(port);
        lock(&self.seen).remove(port);
    }

    /// Ports waited for.
    pub fn pending(&self) -> usize {
        lock(&self.pending).len()
    }

    /// One look at every pending port; wakes the pods of those that went
    /// ACTIVE or vanished. A failed list is retried at the next pass.
    pub async fn poll(&self, os: &kuryr_openstack::Client) {
        let ids: Vec<String> = lock(&self.pending).keys().cloned().collect();
        for chunk in ids.chunks(80) {
            let mut q = Query::new().fields(["id", "network_id", "status"]);
            for id in chunk {
                q = q.filter("id", id.as_str());
            }
            let ports = match os.neutron().list_ports(&q).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "checking ports for ACTIVE failed; the next pass retries");
                    return;
                }
            };
            let status: HashMap<&str, &str> = ports
                .iter()
                .map(|p| (p.id.as_str(), p.status.as_str()))
                .collect();
            for id in chunk {
                let seen = match status.get(id.as_str()) {
                    Some(&"ACTIVE") => Seen::Active,
                    Some(_) => continue,
                    None => Seen::Gone,
                };
                if let Some(p) = lock(&self.pending).remove(id) {
                    lock(&self.seen).insert(id.clone(), seen);
                    if let Some(w) = lock(&self.wake).as_ref() {
                        let _ = w.send(p.pod);
                    }
                }
            }
        }
    }

    /// Polls every `interval` until the task is dropped.
    pub async fn run(&self, os: kuryr_openstack::Client, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.pending() > 0 {
                self.poll(&os).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_port_is_reported_once() {
        let w = ActiveWatch::new();
        let pod = ObjectRef::<Pod>::new("p").within("ns");
        let (_, warn) = w.watch("port", pod.clone(), Duration::from_secs(3600));
        assert!(!warn);
        let (_, warn) = w.watch("port", pod.clone(), Duration::ZERO);
        assert!(warn, "past the limit: tell once");
        let (_, warn) = w.watch("port", pod, Duration::ZERO);
        assert!(!warn, "only once");
        assert_eq!(w.pending(), 1);
        w.forget("port");
        assert_eq!(w.pending(), 0);
        assert_eq!(w.take_seen("port"), None);
    }
}
