//! Prometheus metrics of the controller ([`Metrics`]), its liveness
//! ([`Health`]) and readiness ([`Metrics::readiness`]), served by
//! [`serve`] on `GET /metrics`, `/healthz` and `/readyz`.
//!
//! The exposition is written by prometheus-client in the Prometheus text
//! format 0.0.4 (what Prometheus, the scripts and the benches parse; no
//! `# EOF`, counters named `*_total` on every line as before). The counters
//! stay plain atomics, cheap to bump from any task, and are read at each
//! scrape by a [`Collector`]; other modules add their families with
//! [`Metrics::register_collector`] (the pools' `kuryr_pool_ports` and
//! [`OpenStackRequests`] do). The format is 0.0.4 rather than OpenMetrics
//! because the scripts, benches and dashboards of earlier builds read it.

mod server;

pub use crate::health::Health;
pub use server::serve;

use crate::lock;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the pod-created-to-VIF histogram buckets.
pub const VIF_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The controller's counters, health and readiness. Cheap to update from
/// any task.
pub struct Metrics {
    /// Leaked Neutron ports found by reconciliation.
    pub leaked_found: AtomicU64,
    /// Leaked Neutron ports deleted by reconciliation.
    pub leaked_removed: AtomicU64,
    /// Ports that stayed DOWN past the warning time.
    pub ports_stuck: AtomicU64,
    /// This replica holds the leader lease.
    pub leader: AtomicBool,
    /// Reconciles of pods.
    pub pods_handled: AtomicU64,
    /// Neutron ports made for pods.
    pub ports_created: AtomicU64,
    /// Neutron ports deleted when pods went away.
    pub ports_deleted: AtomicU64,
    /// Ports made again because theirs vanished from Neutron.
    pub ports_replaced: AtomicU64,
    /// Failed reconciles (retried).
    pub errors: AtomicU64,
    /// Octavia load balancers made for Services.
    pub lbs_created: AtomicU64,
    /// Octavia load balancers deleted with their Services.
    pub lbs_deleted: AtomicU64,
    /// Liveness, served on `/healthz`.
    pub health: Health,
    errors_by_reason: Mutex<BTreeMap<String, u64>>,
    vif_ready: Histogram,
    collectors: Mutex<Vec<Arc<dyn Collector>>>,
    ready: AtomicBool,
    reconciled: AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(crate::health::DEFAULT_BOUND)
    }
}

impl Metrics {
    /// Zeroed counters; `/healthz` fails after `liveness_bound` of failures
    /// (see [`Health`]).
    pub fn new(liveness_bound: Duration) -> Self {
        Self {
            leaked_found: AtomicU64::default(),
            leaked_removed: AtomicU64::default(),
            ports_stuck: AtomicU64::default(),
            leader: AtomicBool::default(),
            pods_handled: AtomicU64::default(),
            ports_created: AtomicU64::default(),
            ports_deleted: AtomicU64::default(),
            ports_replaced: AtomicU64::default(),
            errors: AtomicU64::default(),
            lbs_created: AtomicU64::default(),
            lbs_deleted: AtomicU64::default(),
            health: Health::new(liveness_bound),
            errors_by_reason: Mutex::default(),
            vif_ready: Histogram::new(VIF_BUCKETS),
            collectors: Mutex::default(),
            ready: AtomicBool::default(),
            reconciled: AtomicBool::default(),
        }
    }

    /// Counts a failure to set up a pod's network, by its cause (a Neutron
    /// error type such as `IpAddressGenerationFailure`, or ours).
    pub fn count_error(&self, reason: &str) {
        *lock(&self.errors_by_reason)
            .entry(reason.to_owned())
            .or_default() += 1;
    }

    /// Failures counted for `reason`.
    pub fn errors_for(&self, reason: &str) -> u64 {
        lock(&self.errors_by_reason)
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    /// Adds metric families encoded at each scrape by prometheus-client.
    pub fn register_collector(&self, c: impl Collector) {
        lock(&self.collectors).push(Arc::new(c));
    }

    /// Records the time from a pod's creation to its VIF being stored.
    pub fn observe_vif_ready(&self, seconds: f64) {
        self.vif_ready.observe(seconds.max(0.0));
    }

    /// Marks the controller ready (watching, clients set up) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether [`Metrics::set_ready`] was last given `true`.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Records that the start-up reconciliation with Neutron and Octavia
    /// has run (on the leader, before its handlers start).
    pub fn set_reconciled(&self) {
        self.reconciled.store(true, Ordering::Relaxed);
    }

    /// `Ok` when `/readyz` answers 200 at `now`: the controller is live,
    /// ready, and has reconciled with Neutron and Octavia since it became
    /// the leader; else why not, for the body.
    pub fn readiness(&self, now: Instant) -> Result<(), String> {
        self.health.liveness(now)?;
        let leader = self.leader.load(Ordering::Relaxed);
        let reconciled = self.reconciled.load(Ordering::Relaxed);
        match (self.is_ready(), reconciled) {
            (true, true) => Ok(()),
            _ if !leader => {
                Err("not the leader: waiting for the leader lease (another replica acts)".into())
            }
            (_, false) => Err(
                "the start-up reconciliation with Neutron and Octavia has not finished (retried with back-off; see the log)"
                    .into(),
            ),
            (false, true) => Err("the handlers are not running (starting or stopping)".into()),
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register(
            "kuryr_pod_vif_ready_seconds",
            "Time from pod creation to its VIF stored in the KuryrPort",
            self.vif_ready.clone(),
        );
        registry.register_collector(Box::new(self.counters()));
        for c in lock(&self.collectors).iter() {
            registry.register_collector(Box::new(Shared(c.clone())));
        }
        let mut out = String::new();
        // writing to a String fails only if a collector does: what it wrote
        // before is kept
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "a metrics collector failed; its metrics are incomplete");
        }
        out
    }

    /// The atomics and the errors by reason, read now.
    fn counters(&self) -> Counters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            counters: [
                (
                    "kuryr_pods_handled",
                    "Pod reconciles.",
                    g(&self.pods_handled),
                ),
                (
                    "kuryr_ports_created",
                    "Neutron ports made for pods.",
                    g(&self.ports_created),
                ),
                (
                    "kuryr_ports_deleted",
                    "Neutron ports deleted for pods that went away.",
                    g(&self.ports_deleted),
                ),
                (
                    "kuryr_ports_replaced",
                    "Ports made again because theirs vanished from Neutron.",
                    g(&self.ports_replaced),
                ),
                (
                    "kuryr_reconcile_errors",
                    "Failed pod reconciles (retried with back-off).",
                    g(&self.errors),
                ),
                (
                    "kuryr_leaked_ports_found",
                    "Neutron ports of this cluster that nothing uses, found by reconciliation.",
                    g(&self.leaked_found),
                ),
                (
                    "kuryr_leaked_ports_removed",
                    "Leaked Neutron ports (and their subports) deleted by reconciliation.",
                    g(&self.leaked_removed),
                ),
                (
                    "kuryr_ports_stuck",
                    "Pod ports still not ACTIVE after the warning time.",
                    g(&self.ports_stuck),
                ),
                (
                    "kuryr_loadbalancers_created",
                    "Octavia load balancers made for Services.",
                    g(&self.lbs_created),
                ),
                (
                    "kuryr_loadbalancers_deleted",
                    "Octavia load balancers deleted with their Services.",
                    g(&self.lbs_deleted),
                ),
            ],
            gauges: [
                (
                    "kuryr_ready",
                    "Whether the controller is ready.",
                    self.is_ready(),
                ),
                (
                    "kuryr_leader",
                    "Whether this replica holds the leader lease.",
                    self.leader.load(Ordering::Relaxed),
                ),
            ],
            errors_by_reason: lock(&self.errors_by_reason)
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }
}

/// The values of [`Metrics`]' own counters at one scrape.
#[derive(Debug)]
struct Counters {
    /// Name (prometheus-client appends `_total`), help, value.
    counters: [(&'static str, &'static str, u64); 10],
    gauges: [(&'static str, &'static str, bool); 2],
    errors_by_reason: Vec<(String, u64)>,
}

impl Collector for Counters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        for (name, help, v) in self.counters {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        for (name, help, v) in self.gauges {
            let g = ConstGauge::new(i64::from(v));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let mut family = encoder.encode_descriptor(
            "kuryr_pod_network_errors",
            "Failures to set up a pod's network, by cause.",
            None,
            MetricType::Counter,
        )?;
        for (reason, v) in &self.errors_by_reason {
            let labels = [("reason", reason.as_str())];
            ConstCounter::new(*v).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// A collector kept by [`Metrics`], lent to the registry of one scrape.
#[derive(Debug)]
struct Shared(Arc<dyn Collector>);

impl Collector for Shared {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        self.0.encode(encoder)
    }
}

/// `kuryr_openstack_requests_total{service,method,resource,result}`: the
/// HTTP requests of an OpenStack client (retries included).
#[derive(Debug)]
pub struct OpenStackRequests(pub kuryr_openstack::Client);

impl Collector for OpenStackRequests {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(
            "kuryr_openstack_requests",
            "HTTP requests to OpenStack (retries included), by service, method, resource and result.",
            None,
            MetricType::Counter,
        )?;
        for (k, v) in self.0.call_counts() {
            let labels = [
                ("service", k.service),
                ("method", k.method.as_str()),
                ("resource", k.resource.as_str()),
                ("result", k.result),
            ];
            ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Pools;

    impl Collector for Pools {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let g = ConstGauge::new(4i64);
            let mut f =
                encoder.encode_descriptor("kuryr_pool_ports", "Ports.", None, g.metric_type())?;
            g.encode(f.encode_family(&[("pool", "node\"1"), ("state", "free")])?)
        }
    }

    #[test]
    fn renders_every_name_as_before() {
        let m = Metrics::default();
        let out = m.render();
        for name in [
            "kuryr_pods_handled_total",
            "kuryr_ports_created_total",
            "kuryr_ports_deleted_total",
            "kuryr_ports_replaced_total",
            "kuryr_reconcile_errors_total",
            "kuryr_leaked_ports_found_total",
            "kuryr_leaked_ports_removed_total",
            "kuryr_ports_stuck_total",
            "kuryr_loadbalancers_created_total",
            "kuryr_loadbalancers_deleted_total",
        ] {
            assert!(
                out.contains(&format!("# TYPE {name} counter\n{name} 0\n")),
                "{name}: {out}"
            );
        }
        assert!(
            out.contains("# TYPE kuryr_pod_network_errors_total counter\n"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE kuryr_pod_vif_ready_seconds histogram\n"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE kuryr_ready gauge\nkuryr_ready 0\n"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE kuryr_leader gauge\nkuryr_leader 0\n"),
            "{out}"
        );
        assert!(
            out.contains("# HELP kuryr_pod_vif_ready_seconds Time from pod creation to its VIF stored in the KuryrPort.\n"),
            "{out}"
        );
        // Prometheus text 0.0.4: appended text stays valid after it
        assert!(!out.contains("# EOF"), "{out}");
    }

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.ports_created.fetch_add(3, Ordering::Relaxed);
        m.observe_vif_ready(0.2);
        m.observe_vif_ready(3.0);
        m.observe_vif_ready(-1.0);
        let out = m.render();
        assert!(out.contains("kuryr_ports_created_total 3\n"), "{out}");
        assert!(
            out.contains("kuryr_pod_vif_ready_seconds_bucket{le=\"0.05\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("kuryr_pod_vif_ready_seconds_bucket{le=\"0.1\"} 1\n"));
        assert!(out.contains("kuryr_pod_vif_ready_seconds_bucket{le=\"0.25\"} 2\n"));
        assert!(
            out.contains("kuryr_pod_vif_ready_seconds_bucket{le=\"5\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("kuryr_pod_vif_ready_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(
            out.contains("kuryr_pod_vif_ready_seconds_sum 3.2\n"),
            "{out}"
        );
        assert!(
            out.contains("kuryr_pod_vif_ready_seconds_count 3\n"),
            "{out}"
        );
        m.set_ready(true);
        m.leader.store(true, Ordering::Relaxed);
        m.count_error("OverQuota");
        m.count_error("OverQuota");
        m.count_error("a\"b\\c\nd");
        assert_eq!(m.errors_for("OverQuota"), 2);
        m.register_collector(Pools);
        let out = m.render();
        assert!(
            out.contains("kuryr_ready 1\n") && out.contains("kuryr_leader 1\n"),
            "{out}"
        );
        assert!(
            out.contains("kuryr_pod_network_errors_total{reason=\"OverQuota\"} 2\n"),
            "{out}"
        );
        // label values are escaped by prometheus-client
        assert!(
            out.contains("kuryr_pod_network_errors_total{reason=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("kuryr_pool_ports{pool=\"node\\\"1\",state=\"free\"} 4\n"),
            "{out}"
        );
    }

    /// Keystone and Neutron on loopback: `networks/n1` exists, nothing else.
    async fn fake_openstack() -> (String, tokio::task::JoinHandle<()>) {
        use axum::http::StatusCode;
        use axum::routing::{get, post};
        let token = serde_json::json!({"token": {
            "expires_at": "2099-01-01T00:00:00.000000Z",
            "user": {"id": "u", "name": "u"},
            "project": {"id": "p", "name": "p"},
        }})
        .to_string();
        let app = axum::Router::new()
            .route(
                "/v3/auth/tokens",
                post(move || async move {
                    (StatusCode::CREATED, [("x-subject-token", "t")], token)
                }),
            )
            .route(
                "/v2.0/networks/{id}",
                get(|axum::extract::Path(id): axum::extract::Path<String>| async move {
                    if id == "n1" {
                        (StatusCode::OK, r#"{"network": {"id": "n1"}}"#)
                    } else {
                        (StatusCode::NOT_FOUND, r#"{"NeutronError": {"type": "NetworkNotFound", "message": "no", "detail": ""}}"#)
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, task)
    }

    #[tokio::test]
    async fn openstack_requests_keep_their_name_and_labels() {
        let (url, task) = fake_openstack().await;
        let mut cfg = kuryr_openstack::CloudConfig::password(
            &format!("{url}/v3"),
            kuryr_openstack::Ident::name("u"),
            "pw",
            kuryr_openstack::Ident::name("p"),
        );
        cfg.endpoint_overrides.insert("network".into(), url.clone());
        let os = kuryr_openstack::Client::new(cfg).unwrap();
        let n = os.neutron();
        n.get_network("n1").await.unwrap();
        n.get_network("n1").await.unwrap();
        assert!(n.get_network("gone").await.is_err());
        let m = Metrics::default();
        m.register_collector(OpenStackRequests(os));
        let out = m.render();
        assert!(
            out.contains("# TYPE kuryr_openstack_requests_total counter\n"),
            "{out}"
        );
        assert!(
            out.contains("kuryr_openstack_requests_total{service=\"network\",method=\"GET\",resource=\"networks\",result=\"2xx\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("kuryr_openstack_requests_total{service=\"network\",method=\"GET\",resource=\"networks\",result=\"4xx\"} 1\n"),
            "{out}"
        );
        // how the pod_burst bench sums them
        let total: f64 = out
            .lines()
            .filter(|l| l.starts_with("kuryr_openstack_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(total, 3.0, "{out}");
        task.abort();
    }

    #[test]
    fn readiness_says_why_not() {
        let m = Metrics::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let why = m.readiness(t0).unwrap_err();
        assert!(why.contains("not the leader"), "{why}");
        m.leader.store(true, Ordering::Relaxed);
        let why = m.readiness(t0).unwrap_err();
        assert!(why.contains("start-up reconciliation"), "{why}");
        m.set_reconciled();
        let why = m.readiness(t0).unwrap_err();
        assert!(why.contains("handlers are not running"), "{why}");
        m.set_ready(true);
        assert_eq!(m.readiness(t0), Ok(()));
        // not live: not ready either
        m.health.neutron_failed(t0);
        let why = m.readiness(t0 + Duration::from_secs(11)).unwrap_err();
        assert!(why.contains("Neutron"), "{why}");
    }
}
