//! The snapshot of the cluster a policy is evaluated against.

use std::net::IpAddr;

use crate::selector::Labels;
use crate::{Cidr, Protocol};

/// A pod as far as policies are concerned.
///
/// The caller decides which pods take part (e.g. leaves out host-network
/// pods, whose IPs are node IPs); the phase is not looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pod {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// Labels of the pod.
    pub labels: Labels,
    /// IPv4 and/or IPv6 addresses; empty while the pod has no IP yet (such a
    /// pod contributes no address-based rule).
    pub ips: Vec<IpAddr>,
    /// Named container ports (ports without a name cannot be referred to).
    pub ports: Vec<ContainerPort>,
}

/// A named container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    /// The port name (`spec.containers[].ports[].name`).
    pub name: String,
    /// The protocol (Kubernetes default TCP).
    pub protocol: Protocol,
    /// The port number.
    pub port: u16,
}

/// A namespace as far as policies are concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    /// Name of the namespace.
    pub name: String,
    /// Labels. `kubernetes.io/metadata.name=<name>` is implied when absent,
    /// as the API server always sets it.
    pub labels: Labels,
    /// The namespace's own pod subnet(s), when namespaces have their own
    /// Neutron subnets. A peer selecting all pods of the namespace is then
    /// written as these prefixes instead of one host prefix per pod.
    pub subnets: Vec<Cidr>,
    /// The namespace's ports are in a Keystone project of its own (not the
    /// cluster's): they cannot carry the cluster's peer-set groups, so with
    /// [`Settings::peer_groups`] its pods are still written one host prefix
    /// each.
    pub own_project: bool,
}

/// Cluster-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Emit IPv4 "anywhere" rules (allow-all of a non-isolated direction,
    /// rules whose peers are absent). Default true.
    pub ipv4: bool,
    /// Emit IPv6 "anywhere" rules. Default true.
    ///
    /// Rules with an explicit remote prefix (pod IPs, subnets, `ipBlock`)
    /// are emitted whatever `ipv4` and `ipv6` say.
    pub ipv6: bool,
    /// Prefixes holding every pod of the cluster (the pod subnet pool). When
    /// set, a peer selecting all pods of all namespaces (`namespaceSelector:
    /// {}` without or with an empty `podSelector`) is written as these
    /// prefixes instead of per-pod rules. Default empty.
    pub cluster_pod_cidrs: Vec<Cidr>,
    /// Sources always allowed in when a policy isolates ingress (worker node
    /// subnets for kubelet probes, the service subnet for load balancers),
    /// like kuryr-kubernetes' default NP rules. Default empty.
    pub always_allowed_ingress: Vec<Cidr>,
    /// Destinations a load balancer translates before the server sees the
    /// packet but after the client's egress rules are checked (the service
    /// subnet with OVN load balancers). Egress `ipBlock` rules leave them
    /// out; a ClusterIP is admitted only when a backend it leads to is (see
    /// [`World::services`]). Default empty.
    pub translated: Vec<Cidr>,
    /// Name the pods of a `podSelector`/`namespaceSelector` peer by the
    /// group of its [`crate::PeerSet`] (one rule per peer, port and family)
    /// instead of one host-prefix rule per pod IP. The caller makes the
    /// groups and puts them on the members' ports. Default false (rules as
    /// kuryr-kubernetes wrote them).
    pub peer_groups: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ipv4: true,
            ipv6: true,
            cluster_pod_cidrs: Vec::new(),
            always_allowed_ingress: Vec::new(),
            translated: Vec::new(),
            peer_groups: false,
        }
    }
}

/// Everything a policy is evaluated against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct World {
    /// All pods of the cluster that take part in policies.
    pub pods: Vec<Pod>,
    /// Namespaces. A namespace that only appears in a pod is treated as
    /// having no labels but `kubernetes.io/metadata.name` and no subnet.
    pub namespaces: Vec<Namespace>,
    /// Services with a selector: an egress rule towards pods also admits
    /// the ClusterIPs and ports leading to them (see [`crate::Service`]).
    pub services: Vec<crate::Service>,
    /// Cluster-wide settings.
    pub settings: Settings,
}

/// The label the API server puts on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl Pod {
    /// Builds the policy view of a Kubernetes pod: IPs from `status.podIPs`
    /// (or `status.podIP`), named ports of `spec.containers`. Unparsable IPs
    /// and ports with an unsupported protocol or out-of-range number are
    /// left out.
    pub fn from_k8s(pod: &k8s_openapi::api::core::v1::Pod) -> Self {
        let status = pod.status.as_ref();
        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.ip.parse().ok())
            .collect();
        if ips.is_empty() {
            ips.extend(
                status
                    .and_then(|s| s.pod_ip.as_ref())
                    .and_then(|ip| ip.parse::<IpAddr>().ok()),
            );
        }
        let ports = pod
            .spec
            .iter()
            .flat_map(|spec| spec.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(ContainerPort {
                    name: p.name.clone().filter(|n| !n.is_empty())?,
                    protocol: Protocol::parse(p.protocol.as_deref().unwrap_or("TCP")).ok()?,
                    port: u16::try_from(p.container_port).ok().filter(|n| *n > 0)?,
                })
            })
            .collect();
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ips,
            ports,
        }
    }
}

impl Namespace {
    /// Builds the policy view of a Kubernetes namespace (without subnets).
    pub fn from_k8s(ns: &k8s_openapi::api::core::v1::Namespace) -> Self {
        Self {
            name: ns.metadata.name.clone().unwrap_or_default(),
            labels: ns.metadata.labels.clone().unwrap_or_default(),
            subnets: Vec::new(),
            own_project: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1 as core;

    #[test]
    fn pod_from_k8s_reads_ips_and_named_ports() {
        let pod = core::Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(core::PodSpec {
                containers: vec![core::Container {
                    name: "c".into(),
                    ports: Some(vec![
                        core::ContainerPort {
                            name: Some("http".into()),
                            container_port: 8080,
                            ..Default::default()
                        },
                        core::ContainerPort {
                            name: Some("dns".into()),
                            container_port: 53,
                            protocol: Some("UDP".into()),
                            ..Default::default()
                        },
                        core::ContainerPort {
                            container_port: 9000,
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(core::PodStatus {
                pod_ip: Some("10.0.0.5".into()),
                pod_ips: Some(vec![
                    core::PodIP {
                        ip: "10.0.0.5".into(),
                    },
                    core::PodIP {
                        ip: "fd00::5".into(),
                    },
                ]),
                ..Default::default()
            }),
        };
        let p = Pod::from_k8s(&pod);
        assert_eq!(p.namespace, "ns");
        assert_eq!(p.ips.len(), 2);
        assert_eq!(
            p.ports,
            vec![
                ContainerPort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 8080
                },
                ContainerPort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 53
                },
            ]
        );
    }
}
