//! The daemon's Prometheus metrics, kept in a `prometheus-client` registry
//! and exposed in the OpenMetrics text format ([`CONTENT_TYPE`]).
//!
//! Sample lines keep the `name{labels} value` form: counters are registered
//! without `_total` and get it on their samples
//! (`kuryr_cni_gc_removed_total 1`), and every family ends with `# EOF`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the CNI request histograms.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// CNI commands counted separately (anything else counts as `VERSION`).
pub const COMMANDS: [&str; 6] = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"];

/// Content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    command: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Everything the daemon counts. The public fields are handles into the
/// registry: `inc`, `set` and `observe` on them show in [`Metrics::render`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    seconds: Family<CommandLabels, Histogram, fn() -> Histogram>,
    /// Time an ADD waited for the pod's VIF (present and active).
    pub vif_wait: Histogram,
    /// Attachments removed by garbage collection.
    pub gc_removed: Counter,
    /// Attachments currently recorded.
    pub attachments: Gauge,
    /// VIFs plugged ahead of their pod's ADD.
    pub prepared_total: Counter,
    /// ADDs served from a prepared VIF.
    pub adopted_total: Counter,
    /// ADDs waiting now for their pod's VIF (present, then active).
    pub adds_waiting: Gauge,
    ready: Gauge,
    node_port: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let seconds: Family<CommandLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(seconds_histogram);
        // every command's series exist from the start, at 0
        for command in COMMANDS {
            for result in ["ok", "error"] {
                drop(requests.get_or_create(&RequestLabels { command, result }));
            }
            drop(seconds.get_or_create(&CommandLabels { command }));
        }
        let m = Self {
            registry: Registry::default(),
            requests,
            seconds,
            vif_wait: seconds_histogram(),
            gc_removed: Counter::default(),
            attachments: Gauge::default(),
            prepared_total: Counter::default(),
            adopted_total: Counter::default(),
            adds_waiting: Gauge::default(),
            ready: Gauge::default(),
            node_port: Gauge::default(),
        };
        m.register()
    }
}

impl Metrics {
    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "kuryr_cni_requests",
            "CNI requests handled, by command and result",
            self.requests.clone(),
        );
        r.register(
            "kuryr_cni_request_seconds",
            "Time to answer a CNI request, by command",
            self.seconds.clone(),
        );
        r.register(
            "kuryr_cni_vif_wait_seconds",
            "Time an ADD waited for the pod's VIF to be present and active",
            self.vif_wait.clone(),
        );
        r.register(
            "kuryr_cni_gc_removed",
            "Attachments removed by garbage collection",
            self.gc_removed.clone(),
        );
        r.register(
            "kuryr_cni_prepared",
            "VIFs plugged into OVS ahead of their pod's ADD",
            self.prepared_total.clone(),
        );
        r.register(
            "kuryr_cni_adopted",
            "ADDs served from a VIF plugged ahead",
            self.adopted_total.clone(),
        );
        r.register(
            "kuryr_cni_adds_waiting",
            "ADDs waiting now for their pod's VIF to be present and active",
            self.adds_waiting.clone(),
        );
        r.register(
            "kuryr_cni_attachments",
            "Pod interfaces the daemon has plugged",
            self.attachments.clone(),
        );
        r.register(
            "kuryr_node_port_plugged",
            "Whether this node's own port into the pod network is plugged",
            self.node_port.clone(),
        );
        r.register(
            "kuryr_cni_ready",
            "Whether the daemon is ready",
            self.ready.clone(),
        );
        self
    }

    /// Records one CNI request.
    pub fn request(&self, command: &str, ok: bool, seconds: f64) {
        let command = COMMANDS
            .into_iter()
            .find(|c| *c == command)
            .unwrap_or(COMMANDS[COMMANDS.len() - 1]);
        let result = if ok { "ok" } else { "error" };
        self.requests
            .get_or_create(&RequestLabels { command, result })
            .inc();
        self.seconds
            .get_or_create(&CommandLabels { command })
            .observe(seconds.max(0.0));
    }

    /// Marks the daemon ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(ready.into());
    }

    /// Records whether this node's own port is plugged.
    pub fn set_node_port(&self, plugged: bool) {
        self.node_port.set(plugged.into());
    }

    /// Ready, as last set by [`Metrics::set_ready`].
    pub fn is_ready(&self) -> bool {
        self.ready.get() == 1
    }

    /// The exposition (OpenMetrics text, ending with `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample line of `out` named `name` (labels included in `name`).
    fn sample<'a>(out: &'a str, name: &str) -> Option<&'a str> {
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
    }

    #[test]
    fn renders_requests_and_histograms() {
        let m = Metrics::default();
        m.request("ADD", true, 0.004);
        m.request("ADD", false, 2.0);
        m.request("DEL", true, 0.0005);
        m.request("NOT-A-COMMAND", false, 0.0);
        m.vif_wait.observe(0.3);
        let out = m.render();
        assert!(
            out.contains("kuryr_cni_requests_total{command=\"ADD\",result=\"ok\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("kuryr_cni_requests_total{command=\"ADD\",result=\"error\"} 1\n"));
        assert!(out.contains("kuryr_cni_requests_total{command=\"VERSION\",result=\"error\"} 1\n"));
        // every command is there before its first request
        assert!(out.contains("kuryr_cni_requests_total{command=\"GC\",result=\"ok\"} 0\n"));
        assert!(out.contains("kuryr_cni_request_seconds_bucket{le=\"0.005\",command=\"ADD\"} 1\n"));
        assert!(out.contains("kuryr_cni_request_seconds_bucket{le=\"+Inf\",command=\"ADD\"} 2\n"));
        assert_eq!(
            sample(&out, "kuryr_cni_request_seconds_sum{command=\"ADD\"}"),
            Some("2.004")
        );
        assert!(out.contains("kuryr_cni_request_seconds_count{command=\"DEL\"} 1\n"));
        assert!(out.contains("kuryr_cni_request_seconds_count{command=\"STATUS\"} 0\n"));
        assert!(
            out.contains("kuryr_cni_vif_wait_seconds_bucket{le=\"0.5\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("kuryr_cni_vif_wait_seconds_bucket{le=\"0.25\"} 0\n"));
        assert!(out.contains("kuryr_cni_vif_wait_seconds_count 1\n"));
        assert!(out.contains("kuryr_cni_ready 0\n"));
        assert!(out.ends_with("# EOF\n"), "{out}");
    }

    #[test]
    fn counters_and_gauges_keep_their_names() {
        let m = Metrics::default();
        m.gc_removed.inc();
        m.prepared_total.inc_by(2);
        m.adopted_total.inc();
        m.adds_waiting.inc();
        m.adds_waiting.inc();
        m.adds_waiting.dec();
        m.attachments.set(4);
        m.set_node_port(true);
        m.set_ready(true);
        assert!(m.is_ready());
        let out = m.render();
        // the lines the stack tests and scripts read
        for (name, value) in [
            ("kuryr_cni_gc_removed_total", "1"),
            ("kuryr_cni_prepared_total", "2"),
            ("kuryr_cni_adopted_total", "1"),
            ("kuryr_cni_adds_waiting", "1"),
            ("kuryr_cni_attachments", "4"),
            ("kuryr_node_port_plugged", "1"),
            ("kuryr_cni_ready", "1"),
        ] {
            assert_eq!(sample(&out, name), Some(value), "{name} in\n{out}");
        }
        assert!(
            out.contains("# TYPE kuryr_cni_gc_removed counter\n"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE kuryr_cni_adds_waiting gauge\n"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE kuryr_cni_request_seconds histogram\n"),
            "{out}"
        );
        m.set_ready(false);
        assert_eq!(sample(&m.render(), "kuryr_cni_ready"), Some("0"));
    }
}
