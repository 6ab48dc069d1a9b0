//! `NetworkPolicyPort` parsing and named-port lookup.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::NetworkPolicyPort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::{Pod, PolicyError, PortRange, Protocol};

/// One validated entry of a rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortSpec {
    /// `ports` absent or empty: every protocol and port.
    Any,
    /// A protocol with a numeric range, or all its ports (`None`).
    Numeric(Protocol, Option<PortRange>),
    /// A named container port.
    Named(Protocol, String),
}

fn port_number(n: i32, what: &str) -> Result<u16, PolicyError> {
    u16::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| PolicyError::InvalidPort(format!("{what} {n} is outside 1-65535")))
}

/// Validates a rule's `ports`; absent or empty gives `[PortSpec::Any]`.
pub(crate) fn parse_ports(
    ports: Option<&Vec<NetworkPolicyPort>>,
) -> Result<Vec<PortSpec>, PolicyError> {
    let ports = match ports {
        Some(p) if !p.is_empty() => p,
        _ => return Ok(vec![PortSpec::Any]),
    };
    ports.iter().map(parse_port).collect()
}

fn parse_port(port: &NetworkPolicyPort) -> Result<PortSpec, PolicyError> {
    let protocol = Protocol::parse(port.protocol.as_deref().unwrap_or("TCP"))?;
    match (&port.port, port.end_port) {
        (None, None) => Ok(PortSpec::Numeric(protocol, None)),
        (None, Some(_)) => Err(PolicyError::InvalidPort("endPort without port".into())),
        (Some(IntOrString::String(name)), end) => {
            if end.is_some() {
                return Err(PolicyError::InvalidPort(format!(
                    "endPort with the named port {name:?}"
                )));
            }
            if name.is_empty() {
                return Err(PolicyError::InvalidPort("empty port name".into()));
            }
            Ok(PortSpec::Named(protocol, name.clone()))
        }
        (Some(IntOrString::Int(n)), end) => {
            let min = port_number(*n, "port")?;
            let max = match end {
                None => min,
                Some(e) => port_number(e, "endPort")?,
            };
            if max < min {
                return Err(PolicyError::InvalidPort(format!(
                    "endPort {max} is below port {min}"
                )));
            }
            Ok(PortSpec::Numeric(protocol, Some(PortRange { min, max })))
        }
    }
}

/// The distinct numbers `pod` gives the port `name` with `protocol`.
pub(crate) fn named_port_numbers(pod: &Pod, protocol: Protocol, name: &str) -> BTreeSet<u16> {
    pod.ports
        .iter()
        .filter(|p| p.name == name && p.protocol == protocol)
        .map(|p| p.port)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContainerPort;

    fn port(
        protocol: Option<&str>,
        port: Option<IntOrString>,
        end_port: Option<i32>,
    ) -> NetworkPolicyPort {
        NetworkPolicyPort {
            protocol: protocol.map(Into::into),
            port,
            end_port,
        }
    }

    #[test]
    fn defaults_and_ranges() {
        assert_eq!(parse_ports(None).unwrap(), vec![PortSpec::Any]);
        assert_eq!(parse_ports(Some(&vec![])).unwrap(), vec![PortSpec::Any]);
        let parsed = parse_ports(Some(&vec![
            port(None, Some(IntOrString::Int(80)), None),
            port(Some("UDP"), None, None),
            port(Some("SCTP"), Some(IntOrString::Int(1000)), Some(2000)),
            port(None, Some(IntOrString::String("http".into())), None),
        ]))
        .unwrap();
        assert_eq!(
            parsed,
            vec![
                PortSpec::Numeric(Protocol::Tcp, Some(PortRange::single(80))),
                PortSpec::Numeric(Protocol::Udp, None),
                PortSpec::Numeric(
                    Protocol::Sctp,
                    Some(PortRange {
                        min: 1000,
                        max: 2000
                    })
                ),
                PortSpec::Named(Protocol::Tcp, "http".into()),
            ]
        );
    }

    #[test]
    fn invalid_ports_are_errors() {
        let bad = [
            port(None, Some(IntOrString::Int(100)), Some(99)),
            port(None, None, Some(99)),
            port(None, Some(IntOrString::String("http".into())), Some(99)),
            port(None, Some(IntOrString::Int(0)), None),
            port(None, Some(IntOrString::Int(70000)), None),
            port(None, Some(IntOrString::Int(80)), Some(70000)),
            port(Some("ICMP"), None, None),
        ];
        for p in bad {
            assert!(parse_ports(Some(&vec![p.clone()])).is_err(), "{p:?}");
        }
    }

    #[test]
    fn named_port_lookup_matches_protocol() {
        let pod = Pod {
            ports: vec![
                ContainerPort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 53,
                },
                ContainerPort {
                    name: "dns".into(),
                    protocol: Protocol::Tcp,
                    port: 5353,
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            named_port_numbers(&pod, Protocol::Udp, "dns"),
            BTreeSet::from([53])
        );
        assert_eq!(
            named_port_numbers(&pod, Protocol::Tcp, "dns"),
            BTreeSet::from([5353])
        );
        assert!(named_port_numbers(&pod, Protocol::Sctp, "dns").is_empty());
    }
}
