//! The daemon's Prometheus metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Upper bounds (seconds) of the CNI request histograms.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// A cumulative histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        let s = seconds.max(0.0);
        for (i, le) in BUCKETS.iter().enumerate() {
            if s <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((s * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, le) in BUCKETS.iter().enumerate() {
            out.push_str(&format!(
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {}\n",
                self.buckets[i].load(Ordering::Relaxed)
            ));
        }
        let count = self.count.load(Ordering::Relaxed);
        let l = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        out.push_str(&format!(
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}\n"
        ));
        out.push_str(&format!(
            "{name}_sum{l} {}\n{name}_count{l} {count}\n",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        ));
    }
}

/// CNI commands counted separately.
pub const COMMANDS: [&str; 6] = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"];

/// Everything the daemon counts.
#[derive(Debug, Default)]
pub struct Metrics {
    ok: [AtomicU64; COMMANDS.len()],
    failed: [AtomicU64; COMMANDS.len()],
    seconds: [Histogram; COMMANDS.len()],
    /// Time an ADD waited for the pod's VIF (present and active).
    pub vif_wait: Histogram,
    /// Attachments removed by garbage collection.
    pub gc_removed: AtomicU64,
    /// Attachments currently recorded.
    pub attachments: AtomicU64,
    /// VIFs plugged ahead of their pod's ADD.
    pub prepared_total: AtomicU64,
    /// ADDs served from a prepared VIF.
    pub adopted_total: AtomicU64,
    /// ADDs waiting now for their pod's VIF (present, then active).
    pub adds_waiting: AtomicU64,
    ready: AtomicBool,
    node_port: AtomicBool,
}

impl Metrics {
    /// Records one CNI request.
    pub fn request(&self, command: &str, ok: bool, seconds: f64) {
        let i = COMMANDS
            .iter()
            .position(|c| *c == command)
            .unwrap_or(COMMANDS.len() - 1);
        if ok {
            self.ok[i].fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed[i].fetch_add(1, Ordering::Relaxed);
        }
        self.seconds[i].observe(seconds);
    }

    /// Marks the daemon ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Records whether this node's own port is plugged.
    pub fn set_node_port(&self, plugged: bool) {
        self.node_port.store(plugged, Ordering::Relaxed);
    }

    /// Ready (KuryrPort cache synced, OVS reachable).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let n = "kuryr_cni_requests_total";
        out.push_str(&format!(
            "# HELP {n} CNI requests handled, by command and result.\n# TYPE {n} counter\n"
        ));
        for (i, c) in COMMANDS.iter().enumerate() {
            for (res, a) in [("ok", &self.ok[i]), ("error", &self.failed[i])] {
                out.push_str(&format!(
                    "{n}{{command=\"{c}\",result=\"{res}\"}} {}\n",
                    a.load(Ordering::Relaxed)
                ));
            }
        }
        let n = "kuryr_cni_request_seconds";
        out.push_str(&format!(
            "# HELP {n} Time to answer a CNI request, by command.\n# TYPE {n} histogram\n"
        ));
        for (i, c) in COMMANDS.iter().enumerate() {
            self.seconds[i].render(n, &format!("command=\"{c}\""), &mut out);
        }
        let n = "kuryr_cni_vif_wait_seconds";
        out.push_str(&format!(
            "# HELP {n} Time an ADD waited for the pod's VIF to be present and active.\n# TYPE {n} histogram\n"
        ));
        self.vif_wait.render(n, "", &mut out);
        for (n, help, kind, v) in [
            (
                "kuryr_cni_gc_removed_total",
                "Attachments removed by garbage collection.",
                "counter",
                self.gc_removed.load(Ordering::Relaxed),
            ),
            (
                "kuryr_cni_prepared_total",
                "VIFs plugged into OVS ahead of their pod's ADD.",
                "counter",
                self.prepared_total.load(Ordering::Relaxed),
            ),
            (
                "kuryr_cni_adopted_total",
                "ADDs served from a VIF plugged ahead.",
                "counter",
                self.adopted_total.load(Ordering::Relaxed),
            ),
            (
                "kuryr_cni_adds_waiting",
                "ADDs waiting now for their pod's VIF to be present and active.",
                "gauge",
                self.adds_waiting.load(Ordering::Relaxed),
            ),
            (
                "kuryr_cni_attachments",
                "Pod interfaces the daemon has plugged.",
                "gauge",
                self.attachments.load(Ordering::Relaxed),
            ),
            (
                "kuryr_node_port_plugged",
                "Whether this node's own port into the pod network is plugged.",
                "gauge",
                u64::from(self.node_port.load(Ordering::Relaxed)),
            ),
            (
                "kuryr_cni_ready",
                "Whether the daemon is ready.",
                "gauge",
                u64::from(self.is_ready()),
            ),
        ] {
            out.push_str(&format!("# HELP {n} {help}\n# TYPE {n} {kind}\n{n} {v}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests_and_histograms() {
        let m = Metrics::default();
        m.request("ADD", true, 0.004);
        m.request("ADD", false, 2.0);
        m.request("DEL", true, 0.0005);
        m.vif_wait.observe(0.3);
        let out = m.render();
        assert!(
            out.contains("kuryr_cni_requests_total{command=\"ADD\",result=\"ok\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("kuryr_cni_requests_total{command=\"ADD\",result=\"error\"} 1\n"));
        assert!(out.contains("kuryr_cni_request_seconds_bucket{command=\"ADD\",le=\"0.005\"} 1\n"));
        assert!(out.contains("kuryr_cni_request_seconds_bucket{command=\"ADD\",le=\"+Inf\"} 2\n"));
        assert!(out.contains("kuryr_cni_request_seconds_count{command=\"DEL\"} 1\n"));
        assert!(
            out.contains("kuryr_cni_vif_wait_seconds_bucket{le=\"0.5\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("kuryr_cni_ready 0\n"));
    }
}
