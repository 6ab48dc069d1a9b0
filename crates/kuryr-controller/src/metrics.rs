//! Prometheus metrics and health endpoints of the controller, served on a
//! loopback address by a small HTTP/1.1 responder (`GET /metrics`,
//! `/healthz`, `/readyz`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bounds (seconds) of the pod-created-to-VIF histogram buckets.
pub const VIF_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Renders more metrics (pool sizes, OpenStack calls) into the exposition.
pub type Collector = Box<dyn Fn(&mut String) + Send + Sync>;

/// The controller's counters. Cheap to update from any task.
#[derive(Default)]
pub struct Metrics {
    /// Leaked Neutron ports found by reconciliation.
    pub leaked_found: AtomicU64,
    /// Leaked Neutron ports deleted by reconciliation.
    pub leaked_removed: AtomicU64,
    /// Ports that stayed DOWN past the warning time.
    pub ports_stuck: AtomicU64,
    /// This replica holds the leader lease.
    pub leader: AtomicBool,
    errors_by_reason: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    collectors: std::sync::Mutex<Vec<Collector>>,
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
    vif_buckets: [AtomicU64; VIF_BUCKETS.len()],
    vif_count: AtomicU64,
    vif_sum_micros: AtomicU64,
    ready: AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Counts a failure to set up a pod's network, by its cause (a Neutron
    /// error type such as `IpAddressGenerationFailure`, or ours).
    pub fn count_error(&self, reason: &str) {
        let mut m = self
            .errors_by_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *m.entry(reason.to_owned()).or_default() += 1;
    }

    /// Failures counted for `reason`.
    pub fn errors_for(&self, reason: &str) -> u64 {
        let m = self
            .errors_by_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        m.get(reason).copied().unwrap_or(0)
    }

    /// Adds metrics rendered by someone else at each scrape.
    pub fn add_collector(&self, c: Collector) {
        self.collectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c);
    }

    /// Records the time from a pod's creation to its VIF being stored.
    pub fn observe_vif_ready(&self, seconds: f64) {
        let s = seconds.max(0.0);
        for (i, le) in VIF_BUCKETS.iter().enumerate() {
            if s <= *le {
                self.vif_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.vif_count.fetch_add(1, Ordering::Relaxed);
        self.vif_sum_micros
            .fetch_add((s * 1e6) as u64, Ordering::Relaxed);
    }

    /// Marks the controller ready (watching, clients set up) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        for (name, help, v) in [
            (
                "kuryr_pods_handled_total",
                "Pod reconciles.",
                g(&self.pods_handled),
            ),
            (
                "kuryr_ports_created_total",
                "Neutron ports made for pods.",
                g(&self.ports_created),
            ),
            (
                "kuryr_ports_deleted_total",
                "Neutron ports deleted for pods that went away.",
                g(&self.ports_deleted),
            ),
            (
                "kuryr_ports_replaced_total",
                "Ports made again because theirs vanished from Neutron.",
                g(&self.ports_replaced),
            ),
            (
                "kuryr_reconcile_errors_total",
                "Failed pod reconciles (retried with back-off).",
                g(&self.errors),
            ),
            (
                "kuryr_leaked_ports_found_total",
                "Neutron ports of this cluster that nothing uses, found by reconciliation.",
                g(&self.leaked_found),
            ),
            (
                "kuryr_leaked_ports_removed_total",
                "Leaked Neutron ports (and their subports) deleted by reconciliation.",
                g(&self.leaked_removed),
            ),
            (
                "kuryr_ports_stuck_total",
                "Pod ports still not ACTIVE after the warning time.",
                g(&self.ports_stuck),
            ),
            (
                "kuryr_loadbalancers_created_total",
                "Octavia load balancers made for Services.",
                g(&self.lbs_created),
            ),
            (
                "kuryr_loadbalancers_deleted_total",
                "Octavia load balancers deleted with their Services.",
                g(&self.lbs_deleted),
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            ));
        }
        let name = "kuryr_pod_vif_ready_seconds";
        out.push_str(&format!("# HELP {name} Time from pod creation to its VIF stored in the KuryrPort.\n# TYPE {name} histogram\n"));
        for (i, le) in VIF_BUCKETS.iter().enumerate() {
            out.push_str(&format!(
                "{name}_bucket{{le=\"{le}\"}} {}\n",
                g(&self.vif_buckets[i])
            ));
        }
        let count = g(&self.vif_count);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!(
            "{name}_sum {}\n{name}_count {count}\n",
            g(&self.vif_sum_micros) as f64 / 1e6
        ));
        out.push_str(&format!("# HELP kuryr_ready Whether the controller is ready.\n# TYPE kuryr_ready gauge\nkuryr_ready {}\n", u8::from(self.is_ready())));
        out.push_str(&format!("# HELP kuryr_leader Whether this replica holds the leader lease.\n# TYPE kuryr_leader gauge\nkuryr_leader {}\n", u8::from(self.leader.load(Ordering::Relaxed))));
        let name = "kuryr_pod_network_errors_total";
        out.push_str(&format!(
            "# HELP {name} Failures to set up a pod's network, by cause.\n# TYPE {name} counter\n"
        ));
        for (reason, v) in self
            .errors_by_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.push_str(&format!("{name}{{reason=\"{}\"}} {v}\n", escape(reason)));
        }
        for c in self
            .collectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            c(&mut out);
        }
        out
    }
}

/// A label value with `\\`, `"` and newlines escaped.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the task is
/// aborted; returns the bound address (use port 0 for any).
pub async fn serve(
    addr: &str,
    metrics: Arc<Metrics>,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let m = metrics.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let n = match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    sock.read(&mut buf),
                )
                .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("/");
                let (status, body) = match path {
                    "/metrics" => ("200 OK", m.render()),
                    "/healthz" => ("200 OK", "ok\n".to_owned()),
                    "/readyz" if m.is_ready() => ("200 OK", "ready\n".to_owned()),
                    "/readyz" => ("503 Service Unavailable", "not ready\n".to_owned()),
                    _ => (
                        "404 Not Found",
                        "GET /metrics, /healthz or /readyz\n".to_owned(),
                    ),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.ports_created.fetch_add(3, Ordering::Relaxed);
        m.observe_vif_ready(0.2);
        m.observe_vif_ready(3.0);
        let out = m.render();
        assert!(out.contains("kuryr_ports_created_total 3\n"), "{out}");
        assert!(out.contains("kuryr_pod_vif_ready_seconds_bucket{le=\"0.1\"} 0\n"));
        assert!(out.contains("kuryr_pod_vif_ready_seconds_bucket{le=\"0.25\"} 1\n"));
        assert!(out.contains("kuryr_pod_vif_ready_seconds_bucket{le=\"5\"} 2\n"));
        assert!(out.contains("kuryr_pod_vif_ready_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(
            out.contains("kuryr_pod_vif_ready_seconds_sum 3.2\n"),
            "{out}"
        );
        assert!(out.contains("kuryr_ready 0\n"));
        m.count_error("OverQuota");
        m.count_error("OverQuota");
        m.add_collector(Box::new(|o: &mut String| o.push_str("extra_metric 1\n")));
        let out = m.render();
        assert!(
            out.contains("kuryr_pod_network_errors_total{reason=\"OverQuota\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("extra_metric 1\n"));
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_health_on_a_real_socket() {
        let m = Arc::new(Metrics::default());
        let (addr, task) = serve("127.0.0.1:0", m.clone()).await.unwrap();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        m.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        m.pods_handled.fetch_add(7, Ordering::Relaxed);
        let body = get(addr, "/metrics").await;
        assert!(body.contains("kuryr_pods_handled_total 7"), "{body}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        task.abort();
    }
}
