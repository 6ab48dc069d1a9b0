//! The handlers, one module per watched kind, as kuryr-kubernetes laid
//! them out, and which of them run (`[kubernetes] enabled_handlers`, with
//! kuryr-kubernetes' names). The pod handler (`vif`, `kuryrport`) is the
//! crate's root module; a node's port goes with it.

pub mod endpoint_slice;
pub mod loadbalancer;
pub mod node;
pub mod service;

/// Which handlers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Enabled {
    /// Pods → KuryrPorts → Neutron ports (`vif`, `kuryrport`), and the
    /// nodes' own ports with them.
    pub pods: bool,
    /// Services → KuryrLoadBalancers (`service`; `lb` and `lbaasspec` are
    /// its older names).
    pub services: bool,
    /// EndpointSlices → KuryrLoadBalancer members (`endpoints`).
    pub endpoints: bool,
    /// KuryrLoadBalancers → Octavia (`kuryrloadbalancer`).
    pub loadbalancers: bool,
}

impl Enabled {
    /// The handlers `names` turn on, and a warning for each name kuryr-rs
    /// accepts (kuryr-kubernetes has it) but does not run yet.
    pub fn from_names(names: &[String]) -> (Self, Vec<String>) {
        let mut e = Self::default();
        let mut warnings = Vec::new();
        for n in names {
            match n.as_str() {
                "vif" | "kuryrport" => e.pods = true,
                "service" | "lb" | "lbaasspec" => e.services = true,
                "endpoints" => e.endpoints = true,
                "kuryrloadbalancer" => e.loadbalancers = true,
                other => warnings.push(format!(
                    "[kubernetes] enabled_handlers: {other} is a kuryr-kubernetes handler kuryr-rs does not run yet; ignored"
                )),
            }
        }
        (e, warnings)
    }

    /// Any of the Service handlers.
    pub fn any_service(&self) -> bool {
        self.services || self.endpoints || self.loadbalancers
    }
}

/// `<namespace>/<name>` of an object, for logs.
pub(crate) fn qualified(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kuryr_kubernetes_names_turn_handlers_on() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (e, w) = Enabled::from_names(&names(&[
            "vif",
            "endpoints",
            "service",
            "kuryrloadbalancer",
            "kuryrport",
        ]));
        assert_eq!(
            e,
            Enabled {
                pods: true,
                services: true,
                endpoints: true,
                loadbalancers: true
            }
        );
        assert!(w.is_empty());
        let (e, w) = Enabled::from_names(&names(&["vif", "policy", "kuryrnetwork_population"]));
        assert!(e.pods && !e.any_service());
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("policy"));
    }
}
