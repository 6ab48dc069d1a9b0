//! Builders shared by the unit tests.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use crate::{Cidr, ContainerPort, Namespace, Pod, Protocol, RuleEntry, World};

/// A policy named `np` in `namespace` with `spec` given as JSON.
pub(crate) fn policy(namespace: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "np", "namespace": namespace},
        "spec": spec,
    }))
    .expect("valid NetworkPolicy JSON")
}

/// A pod with labels and IPs.
pub(crate) fn pod(namespace: &str, name: &str, labels: &[(&str, &str)], ips: &[&str]) -> Pod {
    Pod {
        namespace: namespace.into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ips: ips.iter().map(|ip| ip.parse().expect("IP")).collect(),
        ports: Vec::new(),
    }
}

/// `pod` with one more named container port.
pub(crate) fn with_port(mut pod: Pod, name: &str, protocol: Protocol, port: u16) -> Pod {
    pod.ports.push(ContainerPort {
        name: name.into(),
        protocol,
        port,
    });
    pod
}

/// A namespace with labels and subnets.
pub(crate) fn namespace(name: &str, labels: &[(&str, &str)], subnets: &[&str]) -> Namespace {
    Namespace {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        subnets: subnets
            .iter()
            .map(|s| s.parse::<Cidr>().expect("CIDR"))
            .collect(),
        own_project: false,
    }
}

/// A world with default settings.
pub(crate) fn world(pods: Vec<Pod>, namespaces: Vec<Namespace>) -> World {
    World {
        pods,
        namespaces,
        ..World::default()
    }
}

/// The rules as short strings (see `Rule`'s `Display`).
pub(crate) fn show(entries: &[RuleEntry]) -> Vec<String> {
    entries.iter().map(|e| e.rule.to_string()).collect()
}

/// The ingress rules of policy `np` in namespace `ns` with `spec`.
pub(crate) fn ingress(w: &World, spec: Value) -> Vec<String> {
    show(
        &crate::compute(&policy("ns", spec), w)
            .expect("valid policy")
            .ingress,
    )
}

/// A spec with one ingress rule from `peers`.
pub(crate) fn from(peers: Value) -> Value {
    json!({"ingress": [{"from": peers}]})
}
