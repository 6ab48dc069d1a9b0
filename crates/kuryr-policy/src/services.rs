//! Services as policies see them: where a load balancer translates the
//! destination after the client's egress rules are checked (OVN's load
//! balancers DNAT after the source port's ACLs, as kube-proxy-less
//! Services do), an egress rule towards pods must also admit the ClusterIPs
//! that lead to them.

use std::net::IpAddr;

use crate::selector::Labels;
use crate::{Pod, PortRange, Protocol, ports::named_port_numbers};

/// A Service with a selector and a ClusterIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Namespace of the Service (its backends are pods of this namespace).
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// `spec.selector` (not empty: Services without one are left out).
    pub selector: Labels,
    /// ClusterIPs (`spec.clusterIPs`, else `spec.clusterIP`).
    pub cluster_ips: Vec<IpAddr>,
    /// Its ports.
    pub ports: Vec<ServicePort>,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Protocol.
    pub protocol: Protocol,
    /// The port clients connect to on the ClusterIP.
    pub port: u16,
    /// Where it leads on the backend pods.
    pub target: Target,
}

/// A Service port's `targetPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A number.
    Number(u16),
    /// A named container port of each backend.
    Name(String),
}

impl Service {
    /// The policy view of a Kubernetes Service; `None` for a Service no
    /// ClusterIP rule can be derived for (no selector, headless, no valid
    /// ClusterIP).
    pub fn from_k8s(svc: &k8s_openapi::api::core::v1::Service) -> Option<Self> {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        let spec = svc.spec.as_ref()?;
        let selector = spec.selector.clone().filter(|s| !s.is_empty())?;
        let mut ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if ips.is_empty() {
            ips.extend(
                spec.cluster_ip
                    .as_deref()
                    .and_then(|ip| ip.parse::<IpAddr>().ok()),
            );
        }
        if ips.is_empty() {
            return None;
        }
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let port = u16::try_from(p.port).ok().filter(|n| *n > 0)?;
                let target = match &p.target_port {
                    None => Target::Number(port),
                    Some(IntOrString::Int(n)) => {
                        Target::Number(u16::try_from(*n).ok().filter(|n| *n > 0)?)
                    }
                    Some(IntOrString::String(s)) => match s.parse::<u16>() {
                        Ok(n) if n > 0 => Target::Number(n),
                        _ => Target::Name(s.clone()),
                    },
                };
                Some(ServicePort {
                    protocol: Protocol::parse(p.protocol.as_deref().unwrap_or("TCP")).ok()?,
                    port,
                    target,
                })
            })
            .collect();
        Some(Self {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            selector,
            cluster_ips: ips,
            ports,
        })
    }

    /// Whether `pod` is one of its backends.
    pub fn backs(&self, pod: &Pod) -> bool {
        pod.namespace == self.namespace
            && self
                .selector
                .iter()
                .all(|(k, v)| pod.labels.get(k) == Some(v))
    }

    /// The Service ports a connection allowed to `backend` on `protocol`
    /// and `range` (`None`: every port; `protocol` `None`: anything) can
    /// come through: the ClusterIP side (protocol, port) of each port whose
    /// target on that backend is allowed.
    pub fn ports_leading_to(
        &self,
        backend: &Pod,
        protocol: Option<Protocol>,
        range: Option<PortRange>,
    ) -> Vec<(Protocol, u16)> {
        let mut out = Vec::new();
        for sp in &self.ports {
            if protocol.is_some_and(|p| p != sp.protocol) {
                continue;
            }
            let targets: Vec<u16> = match &sp.target {
                Target::Number(n) => vec![*n],
                Target::Name(name) => named_port_numbers(backend, sp.protocol, name)
                    .into_iter()
                    .collect(),
            };
            let allowed = targets
                .iter()
                .any(|t| range.is_none_or(|r| r.min <= *t && *t <= r.max));
            if allowed {
                out.push((sp.protocol, sp.port));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{pod, with_port};
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Option<Service> {
        Service::from_k8s(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn reads_selector_cluster_ips_and_target_ports() {
        let s = svc(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                     "clusterIPs": ["10.96.0.10"],
                     "ports": [{"port": 80, "targetPort": 8080},
                               {"port": 443, "targetPort": "https"},
                               {"port": 53, "protocol": "UDP"},
                               {"port": 81, "targetPort": "8081"}]}
        }))
        .unwrap();
        assert_eq!(s.cluster_ips, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            s.ports,
            vec![
                ServicePort {
                    protocol: Protocol::Tcp,
                    port: 80,
                    target: Target::Number(8080)
                },
                ServicePort {
                    protocol: Protocol::Tcp,
                    port: 443,
                    target: Target::Name("https".into())
                },
                ServicePort {
                    protocol: Protocol::Udp,
                    port: 53,
                    target: Target::Number(53)
                },
                ServicePort {
                    protocol: Protocol::Tcp,
                    port: 81,
                    target: Target::Number(8081)
                },
            ]
        );
    }

    #[test]
    fn services_no_rule_can_come_from_are_left_out() {
        // no selector (endpoints managed by hand), headless
        assert!(
            svc(json!({"metadata": {"name": "a"}, "spec": {"clusterIP": "10.96.0.1"}})).is_none()
        );
        assert!(
            svc(json!({"metadata": {"name": "a"},
                           "spec": {"selector": {"a": "b"}, "clusterIP": "None"}}))
            .is_none()
        );
    }

    #[test]
    fn ports_leading_to_a_backend() {
        let s = svc(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                     "ports": [{"port": 80, "targetPort": 8080},
                               {"port": 443, "targetPort": "https"},
                               {"port": 53, "protocol": "UDP"}]}
        }))
        .unwrap();
        let b = with_port(
            pod("ns", "b", &[("app", "web")], &["10.0.0.2"]),
            "https",
            Protocol::Tcp,
            8443,
        );
        assert!(s.backs(&b));
        assert!(!s.backs(&pod("other", "b", &[("app", "web")], &[])));
        assert!(!s.backs(&pod("ns", "c", &[("app", "db")], &[])));
        let tcp = |min, max| Some(PortRange { min, max });
        assert_eq!(
            s.ports_leading_to(&b, Some(Protocol::Tcp), tcp(8080, 8080)),
            [(Protocol::Tcp, 80)]
        );
        assert_eq!(
            s.ports_leading_to(&b, Some(Protocol::Tcp), tcp(8000, 9000)),
            [(Protocol::Tcp, 80), (Protocol::Tcp, 443)]
        );
        assert_eq!(s.ports_leading_to(&b, Some(Protocol::Tcp), tcp(80, 80)), []);
        assert_eq!(
            s.ports_leading_to(&b, Some(Protocol::Udp), None),
            [(Protocol::Udp, 53)]
        );
        assert_eq!(s.ports_leading_to(&b, None, None).len(), 3);
        // a backend without the named port gets nothing through 443
        let plain = pod("ns", "p", &[("app", "web")], &["10.0.0.3"]);
        assert_eq!(
            s.ports_leading_to(&plain, Some(Protocol::Tcp), None),
            [(Protocol::Tcp, 80)]
        );
    }
}
