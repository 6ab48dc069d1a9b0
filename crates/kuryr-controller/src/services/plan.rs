//! A KuryrLoadBalancer's Octavia objects, the pure part: the names
//! kuryr-kubernetes gave them, the listeners (one per protocol and port,
//! so TCP and UDP on one port number are two), and the members of each
//! listener's pool from the ready endpoints of the Service's slices.

use kuryr_crds::KuryrLoadBalancerSpec;
use kuryr_crds::loadbalancer::LbPort;
use std::collections::BTreeSet;

/// `<namespace>/<service>`: the load balancer.
pub fn lb_name(ns: &str, svc: &str) -> String {
    format!("{ns}/{svc}")
}

/// `<namespace>/<service>:<PROTOCOL>:<port>`: a listener and its pool.
pub fn listener_name(ns: &str, svc: &str, protocol: &str, port: i32) -> String {
    format!("{ns}/{svc}:{protocol}:{port}")
}

/// A listener (and its pool) the spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantListener {
    /// Name (also the pool's).
    pub name: String,
    /// `TCP`, `UDP`, `SCTP`.
    pub protocol: String,
    /// Port on the VIP.
    pub port: u16,
    /// The Service port it serves.
    pub service_port: LbPort,
}

/// A pool member the spec asks for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WantMember {
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// `<namespace>/<pod>:<port>`, or `<address>:<port>` without a pod.
    pub name: String,
}

/// The listeners of `spec`, one per (protocol, port), in spec order.
pub fn listeners(spec: &KuryrLoadBalancerSpec, ns: &str, svc: &str) -> Vec<WantListener> {
    let mut seen = BTreeSet::new();
    spec.ports
        .iter()
        .filter_map(|p| {
            let proto = p.protocol.to_ascii_uppercase();
            let port = u16::try_from(p.port).ok().filter(|p| *p > 0)?;
            seen.insert((proto.clone(), port)).then(|| WantListener {
                name: listener_name(ns, svc, &proto, p.port),
                protocol: proto,
                port,
                service_port: p.clone(),
            })
        })
        .collect()
}

/// The members for the Service port `sp`: every address of every endpoint
/// not marked not-ready (Kubernetes: an unset `ready` means ready;
/// terminating endpoints are not ready), on the port each slice gives for
/// `sp`'s name and protocol (a slice without that port serves another
/// Service port). Deduplicated, sorted.
pub fn members(spec: &KuryrLoadBalancerSpec, sp: &LbPort) -> Vec<WantMember> {
    let name = sp.name.as_deref().unwrap_or("");
    let proto = sp.protocol.to_ascii_uppercase();
    let mut out = BTreeSet::new();
    for slice in &spec.endpoint_slices {
        let port = slice
            .ports
            .iter()
            .find(|p| {
                p.name.as_deref().unwrap_or("") == name
                    && p.protocol
                        .as_deref()
                        .unwrap_or("TCP")
                        .eq_ignore_ascii_case(&proto)
            })
            .and_then(|p| p.port);
        let Some(port) = port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) else {
            continue;
        };
        for e in &slice.endpoints {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for a in &e.addresses {
                let name = match &e.target_ref {
                    Some(r) if r.name.is_some() => format!(
                        "{}/{}:{port}",
                        r.namespace.as_deref().unwrap_or(""),
                        r.name.as_deref().unwrap_or("")
                    ),
                    _ => format!("{a}:{port}"),
                };
                out.insert(WantMember {
                    address: a.clone(),
                    port,
                    name,
                });
            }
        }
    }
    out.into_iter().collect()
}

/// Whether `have` (address, port) pairs already are what `want` asks for.
pub fn same_members(have: &[(String, u16)], want: &[WantMember]) -> bool {
    let h: BTreeSet<(&str, u16)> = have.iter().map(|(a, p)| (a.as_str(), *p)).collect();
    let w: BTreeSet<(&str, u16)> = want.iter().map(|m| (m.address.as_str(), m.port)).collect();
    h == w && have.len() == h.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuryr_crds::loadbalancer::{
        LbConditions, LbEndpoint, LbEndpointSlice, LbSlicePort, LbTargetRef,
    };

    fn port(name: Option<&str>, p: i32, proto: &str, target: &str) -> LbPort {
        LbPort {
            name: name.map(str::to_owned),
            port: p,
            protocol: proto.into(),
            target_port: target.into(),
        }
    }

    fn ep(ip: &str, pod: &str, ready: Option<bool>) -> LbEndpoint {
        LbEndpoint {
            addresses: vec![ip.into()],
            conditions: Some(LbConditions { ready }),
            target_ref: Some(LbTargetRef {
                kind: Some("Pod".into()),
                name: Some(pod.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn dns_spec() -> KuryrLoadBalancerSpec {
        KuryrLoadBalancerSpec {
            ports: vec![
                port(Some("dns"), 53, "UDP", "dns"),
                port(Some("dns-tcp"), 53, "TCP", "dns-tcp"),
            ],
            endpoint_slices: vec![LbEndpointSlice {
                endpoints: vec![
                    ep("10.0.0.5", "dns-1", Some(true)),
                    ep("10.0.0.6", "dns-2", None),
                    ep("10.0.0.7", "dns-3", Some(false)),
                ],
                ports: vec![
                    LbSlicePort {
                        name: Some("dns".into()),
                        port: Some(5353),
                        protocol: Some("UDP".into()),
                    },
                    LbSlicePort {
                        name: Some("dns-tcp".into()),
                        port: Some(5353),
                        protocol: Some("TCP".into()),
                    },
                ],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn tcp_and_udp_on_one_port_are_two_listeners_named_like_kuryr() {
        let l = listeners(&dns_spec(), "kube-system", "kube-dns");
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].name, "kube-system/kube-dns:UDP:53");
        assert_eq!(l[1].name, "kube-system/kube-dns:TCP:53");
        assert_eq!(lb_name("kube-system", "kube-dns"), "kube-system/kube-dns");
        // the same protocol and port twice is one listener
        let mut s = dns_spec();
        s.ports.push(port(Some("again"), 53, "udp", "53"));
        assert_eq!(listeners(&s, "n", "s").len(), 2);
    }

    #[test]
    fn members_are_the_ready_endpoints_on_the_slice_port() {
        let s = dns_spec();
        let m = members(&s, &s.ports[0]);
        let got: Vec<(&str, u16, &str)> = m
            .iter()
            .map(|m| (m.address.as_str(), m.port, m.name.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.5", 5353, "ns/dns-1:5353"),
                ("10.0.0.6", 5353, "ns/dns-2:5353")
            ],
            "not-ready dns-3 left out"
        );
        assert!(same_members(
            &[("10.0.0.6".into(), 5353), ("10.0.0.5".into(), 5353)],
            &m
        ));
        assert!(!same_members(&[("10.0.0.5".into(), 5353)], &m));
    }

    #[test]
    fn a_selectorless_service_takes_numeric_target_ports_and_unnamed_members() {
        // the `kubernetes` Service: the API server's slice, no pod behind it
        let s = KuryrLoadBalancerSpec {
            ports: vec![port(Some("https"), 443, "TCP", "6443")],
            endpoint_slices: vec![LbEndpointSlice {
                endpoints: vec![LbEndpoint {
                    addresses: vec!["172.24.4.1".into()],
                    ..Default::default()
                }],
                ports: vec![LbSlicePort {
                    name: Some("https".into()),
                    port: Some(6443),
                    protocol: Some("TCP".into()),
                }],
            }],
            ..Default::default()
        };
        let m = members(&s, &s.ports[0]);
        assert_eq!(
            m,
            [WantMember {
                address: "172.24.4.1".into(),
                port: 6443,
                name: "172.24.4.1:6443".into()
            }]
        );
        // a slice without the port's name serves another port
        let mut other = s.clone();
        other.endpoint_slices[0].ports[0].name = Some("metrics".into());
        assert!(members(&other, &other.ports[0]).is_empty());
    }
}
