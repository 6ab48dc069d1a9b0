//! Port pools, the pure part: which free ports each pool holds, which are
//! cooling down after a pod gave them back, how many are being made, and
//! from that how many to make, to give back or to delete. No I/O here; the
//! pool manager ([`crate::ports`]) does the Neutron calls these decide.
//!
//! Pools are keyed like kuryr-kubernetes's: where the port is usable (the
//! node it is bound to, or the trunk it is a subport of), its project, its
//! security groups and its subnet. A pod takes a port only from the pool of
//! exactly its key.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Name of a free pool port in Neutron (kuryr-kubernetes's `available-port`).
pub const FREE_PORT_NAME: &str = "available-port";

/// Where a port is usable and what it carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolKey {
    /// Node name (`binding:host_id`, side-by-side) or trunk id (nested-vlan).
    pub host: String,
    /// Owning project.
    pub project_id: String,
    /// Security groups, sorted.
    pub security_groups: Vec<String>,
    /// Subnet of the port's address.
    pub subnet_id: String,
}

impl PoolKey {
    /// A key; `security_groups` are sorted so the order never matters.
    pub fn new(
        host: impl Into<String>,
        project_id: impl Into<String>,
        mut security_groups: Vec<String>,
        subnet_id: impl Into<String>,
    ) -> Self {
        security_groups.sort();
        security_groups.dedup();
        Self {
            host: host.into(),
            project_id: project_id.into(),
            security_groups,
            subnet_id: subnet_id.into(),
        }
    }
}

/// A port held by a pool.
#[derive(Debug, Clone)]
pub struct PoolPort {
    /// Neutron port id.
    pub id: String,
    /// VLAN id of its subport (nested-vlan pools).
    pub vlan_id: Option<u16>,
    /// The port as Neutron last described it (addresses, MAC), so handing
    /// it to a pod costs no call; `None`: look it up.
    pub port: Option<std::sync::Arc<kuryr_openstack::types::neutron::Port>>,
}

impl PartialEq for PoolPort {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for PoolPort {}

/// Sizes of the pools (`[vif_pool]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `ports_pool_min`: free ports to keep ready per pool.
    pub min: usize,
    /// `ports_pool_max`: free ports a pool may hold, 0 for no limit.
    pub max: usize,
    /// `ports_pool_batch`: ports per bulk create.
    pub batch: usize,
}

/// The largest bulk create: bigger batches cost Neutron several seconds in
/// one request and fail all together.
pub const MAX_BULK: usize = 50;

#[derive(Debug, Default)]
struct Pool {
    free: VecDeque<PoolPort>,
    /// Given back by a pod, reusable once the old pod is surely off it.
    cooling: Vec<(PoolPort, Instant)>,
    /// Ports being made right now for this pool.
    creating: usize,
    /// Pods waiting for a port of this pool.
    waiting: usize,
}

/// What to do with a port a pod gave back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recycle {
    /// Keep it: it becomes free after the cool-down.
    Keep,
    /// The pool is full: delete it.
    Delete,
}

/// All pools of the controller.
#[derive(Debug)]
pub struct Pools {
    limits: Limits,
    pools: BTreeMap<PoolKey, Pool>,
}

impl Pools {
    /// No pools yet.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pools: BTreeMap::new(),
        }
    }

    /// The sizes in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn pool(&mut self, key: &PoolKey) -> &mut Pool {
        self.pools.entry(key.clone()).or_default()
    }

    /// Takes the oldest free port of `key`'s pool.
    pub fn take(&mut self, key: &PoolKey) -> Option<PoolPort> {
        self.pools.get_mut(key)?.free.pop_front()
    }

    /// Adds a free port (just made, or found free in Neutron at start-up).
    pub fn add_free(&mut self, key: &PoolKey, port: PoolPort) {
        let p = self.pool(key);
        if !p.free.contains(&port) {
            p.free.push_back(port);
        }
    }

    /// A pod gave `port` back: keep it (cooling until `now + cool_down`) or,
    /// when the pool already holds its maximum, delete it.
    pub fn give_back(
        &mut self,
        key: &PoolKey,
        port: PoolPort,
        now: Instant,
        cool_down: Duration,
    ) -> Recycle {
        let max = self.limits.max;
        let p = self.pool(key);
        if max != 0 && p.free.len() + p.cooling.len() >= max {
            return Recycle::Delete;
        }
        if !p.cooling.iter().any(|(c, _)| *c == port) && !p.free.contains(&port) {
            p.cooling.push((port, now + cool_down));
        }
        Recycle::Keep
    }

    /// Cooling ports whose time is up, with their pool; they stay cooling
    /// until [`Pools::cooled`] or [`Pools::forget`] is called for them.
    pub fn due(&self, now: Instant) -> Vec<(PoolKey, PoolPort)> {
        self.pools
            .iter()
            .flat_map(|(k, p)| {
                p.cooling
                    .iter()
                    .filter(move |(_, t)| *t <= now)
                    .map(move |(port, _)| (k.clone(), port.clone()))
            })
            .collect()
    }

    /// A cooling port is ready for another pod: it becomes free.
    pub fn cooled(&mut self, key: &PoolKey, port_id: &str) {
        let p = self.pool(key);
        if let Some(i) = p.cooling.iter().position(|(c, _)| c.id == port_id) {
            let (port, _) = p.cooling.remove(i);
            p.free.push_back(port);
        }
    }

    /// Drops a port from its pool (deleted, or gone from Neutron).
    pub fn forget(&mut self, key: &PoolKey, port_id: &str) {
        if let Some(p) = self.pools.get_mut(key) {
            p.free.retain(|x| x.id != port_id);
            p.cooling.retain(|(x, _)| x.id != port_id);
        }
    }

    /// A pod waits for a port of `key` (until [`Pools::stop_waiting`]).
    pub fn wait(&mut self, key: &PoolKey) {
        self.pool(key).waiting += 1;
    }

    /// A pod no longer waits for `key`.
    pub fn stop_waiting(&mut self, key: &PoolKey) {
        let p = self.pool(key);
        p.waiting = p.waiting.saturating_sub(1);
    }

    /// How many ports to make for `key` now (0: none), and marks them as
    /// being made; report the outcome with [`Pools::created`]. Only one
    /// batch per pool is in flight at a time. Enough for the pods waiting,
    /// and at least a batch whenever the free ports fall below the minimum;
    /// never so many that the free ports would pass the maximum, unless pods
    /// are waiting for them; and never more than `cap` (1 after a batch
    /// failed for want of addresses or quota: what is left still serves).
    pub fn start_refill(&mut self, key: &PoolKey, cap: usize) -> usize {
        let l = self.limits;
        let p = self.pool(key);
        if p.creating > 0 {
            return 0;
        }
        let free = p.free.len();
        let short_for_waiters = p.waiting.saturating_sub(free);
        let below_min = free + p.cooling.len() < l.min;
        if short_for_waiters == 0 && !below_min {
            return 0;
        }
        let mut n = short_for_waiters.max(l.batch.max(1));
        if l.max != 0 {
            // ports beyond the waiters' would sit free: keep those under max
            let room = l.max.saturating_sub(free + p.cooling.len());
            n = n.min(short_for_waiters.max(room));
        }
        let n = n.min(MAX_BULK).min(cap);
        p.creating = n;
        n
    }

    /// The batch of `key` ended; `made` are the ports it made (none when it
    /// failed), now free.
    pub fn created(&mut self, key: &PoolKey, made: Vec<PoolPort>) {
        let p = self.pool(key);
        p.creating = 0;
        p.free.extend(made);
    }

    /// Free ports beyond the maximum, to delete (taken out of the pools).
    pub fn trim(&mut self) -> Vec<(PoolKey, PoolPort)> {
        let max = self.limits.max;
        if max == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (k, p) in &mut self.pools {
            while p.free.len() + p.cooling.len() > max {
                match p.free.pop_back() {
                    Some(port) => out.push((k.clone(), port)),
                    None => break,
                }
            }
        }
        out
    }

    /// Keys of all pools.
    pub fn keys(&self) -> Vec<PoolKey> {
        self.pools.keys().cloned().collect()
    }

    /// Free ports of `key`'s pool.
    pub fn free(&self, key: &PoolKey) -> usize {
        self.pools.get(key).map_or(0, |p| p.free.len())
    }

    /// Ports of `key`'s pool cooling down.
    pub fn cooling(&self, key: &PoolKey) -> usize {
        self.pools.get(key).map_or(0, |p| p.cooling.len())
    }

    /// Every port held (free or cooling), with its pool.
    pub fn all(&self) -> Vec<(PoolKey, PoolPort)> {
        self.pools
            .iter()
            .flat_map(|(k, p)| {
                p.free
                    .iter()
                    .chain(p.cooling.iter().map(|(c, _)| c))
                    .map(move |port| (k.clone(), port.clone()))
            })
            .collect()
    }

    /// Drops the pools of `subnet` (a namespace's, going): answers the
    /// ports they held.
    pub fn drop_subnet(&mut self, subnet: &str) -> Vec<PoolPort> {
        let keys: Vec<PoolKey> = self
            .pools
            .keys()
            .filter(|k| k.subnet_id == subnet)
            .cloned()
            .collect();
        let mut out = Vec::new();
        for k in keys {
            if let Some(p) = self.pools.remove(&k) {
                out.extend(p.free);
                out.extend(p.cooling.into_iter().map(|(c, _)| c));
            }
        }
        out
    }

    /// Whether a port is held by any pool.
    pub fn holds(&self, port_id: &str) -> bool {
        self.pools.values().any(|p| {
            p.free.iter().any(|x| x.id == port_id) || p.cooling.iter().any(|(x, _)| x.id == port_id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str) -> PoolKey {
        PoolKey::new(host, "proj", vec!["sg-b".into(), "sg-a".into()], "sub")
    }

    fn port(id: &str) -> PoolPort {
        PoolPort {
            id: id.into(),
            vlan_id: None,
            port: None,
        }
    }

    fn limits(min: usize, max: usize, batch: usize) -> Limits {
        Limits { min, max, batch }
    }

    #[test]
    fn dropping_a_subnet_takes_only_its_pools() {
        let mut p = Pools::new(limits(0, 0, 1));
        let ns_key = PoolKey::new("node", "p", vec!["sg".into()], "ns-subnet");
        p.add_free(&key("node"), port("a"));
        p.add_free(&ns_key, port("b"));
        p.add_free(&ns_key, port("c"));
        let gone: Vec<String> = p
            .drop_subnet("ns-subnet")
            .into_iter()
            .map(|x| x.id)
            .collect();
        assert_eq!(gone, ["b", "c"]);
        assert!(p.holds("a") && !p.holds("b"));
        assert_eq!(p.keys(), [key("node")]);
        assert!(p.drop_subnet("ns-subnet").is_empty());
    }

    #[test]
    fn keys_ignore_security_group_order() {
        assert_eq!(
            key("n1"),
            PoolKey::new("n1", "proj", vec!["sg-a".into(), "sg-b".into()], "sub")
        );
        assert_ne!(key("n1"), key("n2"));
    }

    #[test]
    fn an_empty_pool_below_min_makes_one_batch_at_a_time() {
        let mut p = Pools::new(limits(5, 0, 10));
        assert_eq!(p.start_refill(&key("n1"), MAX_BULK), 10);
        assert_eq!(
            p.start_refill(&key("n1"), MAX_BULK),
            0,
            "one batch in flight"
        );
        p.created(&key("n1"), (0..10).map(|i| port(&i.to_string())).collect());
        assert_eq!(p.free(&key("n1")), 10);
        assert_eq!(
            p.start_refill(&key("n1"), MAX_BULK),
            0,
            "above min: nothing"
        );
        for _ in 0..6 {
            p.take(&key("n1")).unwrap();
        }
        assert_eq!(
            p.start_refill(&key("n1"), MAX_BULK),
            10,
            "4 left, below min 5"
        );
    }

    #[test]
    fn waiting_pods_get_a_batch_big_enough_but_capped() {
        let mut p = Pools::new(limits(0, 0, 10));
        assert_eq!(
            p.start_refill(&key("n1"), MAX_BULK),
            0,
            "min 0 and nobody waits"
        );
        for _ in 0..30 {
            p.wait(&key("n1"));
        }
        assert_eq!(p.start_refill(&key("n1"), MAX_BULK), 30);
        p.created(&key("n1"), vec![]);
        for _ in 0..100 {
            p.wait(&key("n1"));
        }
        assert_eq!(p.start_refill(&key("n1"), MAX_BULK), MAX_BULK);
        p.created(&key("n1"), vec![]);
        assert_eq!(p.start_refill(&key("n1"), 1), 1, "capped after a failure");
    }

    #[test]
    fn max_limits_idle_ports_but_not_ports_for_waiting_pods() {
        let mut p = Pools::new(limits(5, 6, 10));
        assert_eq!(p.start_refill(&key("n1"), MAX_BULK), 6, "batch cut to max");
        p.created(&key("n1"), vec![]);
        for _ in 0..8 {
            p.wait(&key("n1"));
        }
        assert_eq!(
            p.start_refill(&key("n1"), MAX_BULK),
            8,
            "all waiters served"
        );
    }

    #[test]
    fn taking_is_first_in_first_out() {
        let mut p = Pools::new(limits(0, 0, 1));
        p.add_free(&key("n1"), port("a"));
        p.add_free(&key("n1"), port("b"));
        p.add_free(&key("n1"), port("a"));
        assert_eq!(p.free(&key("n1")), 2, "no port twice");
        assert_eq!(p.take(&key("n2")), None, "other key");
        assert_eq!(p.take(&key("n1")).unwrap().id, "a");
        assert_eq!(p.take(&key("n1")).unwrap().id, "b");
        assert_eq!(p.take(&key("n1")), None);
    }

    #[test]
    fn given_back_ports_cool_down_before_reuse_and_full_pools_delete() {
        let t0 = Instant::now();
        let cool = Duration::from_secs(20);
        let mut p = Pools::new(limits(0, 2, 1));
        assert_eq!(p.give_back(&key("n1"), port("a"), t0, cool), Recycle::Keep);
        assert_eq!(p.give_back(&key("n1"), port("b"), t0, cool), Recycle::Keep);
        assert_eq!(
            p.give_back(&key("n1"), port("c"), t0, cool),
            Recycle::Delete,
            "max 2"
        );
        assert_eq!(p.take(&key("n1")), None, "still cooling");
        assert!(p.due(t0 + Duration::from_secs(19)).is_empty());
        let due = p.due(t0 + cool);
        assert_eq!(due.len(), 2);
        p.cooled(&key("n1"), "a");
        assert_eq!(p.take(&key("n1")).unwrap().id, "a");
        assert!(p.holds("b"));
        p.forget(&key("n1"), "b");
        assert!(!p.holds("b"));
        assert_eq!(p.cooling(&key("n1")), 0);
    }

    #[test]
    fn trim_deletes_free_ports_above_max() {
        let mut p = Pools::new(limits(0, 2, 1));
        for id in ["a", "b", "c", "d"] {
            p.add_free(&key("n1"), port(id));
        }
        let gone = p.trim();
        assert_eq!(
            gone.iter().map(|(_, x)| x.id.as_str()).collect::<Vec<_>>(),
            ["d", "c"]
        );
        assert_eq!(p.free(&key("n1")), 2);
        assert!(Pools::new(limits(0, 0, 1)).trim().is_empty());
    }
}
