//! Namespace networks (`[kubernetes] pod_subnets_driver = namespace`), the
//! pure part: which namespaces get a KuryrNetwork, what it says, what the
//! KuryrNetwork handler does next for it, and which ports on a namespace's
//! network its deletion may remove. The Neutron and Kubernetes calls are in
//! [`crate::handlers::namespace`] and [`crate::handlers::kuryr_network`].
//!
//! As in kuryr-kubernetes: a namespace gets a KuryrNetwork (named after it,
//! in it, with finalizer `kuryrnetwork.finalizers.kuryr.openstack.org`)
//! once it has a pod off the host network; its network and subnet are
//! named `<namespace uid>/<namespace>`, the subnet takes its CIDR from
//! `[namespace_subnet] pod_subnet_pool` with DHCP off and is attached to
//! `[namespace_subnet] pod_router`. kuryr-rs also tags both with the
//! cluster's tags and `kuryr-ns:<namespace uid>`, so a crash between
//! making one and recording it in the status finds it again.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kuryr_crds::{KURYRNETWORK_FINALIZER, KuryrNetwork, KuryrNetworkSpec};
use kuryr_openstack::types::neutron::Port;
use std::collections::BTreeMap;

/// Where namespaces' networks are made (`[namespace_subnet]`, read at
/// start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `pod_subnet_pool`.
    pub subnet_pool: String,
    /// The pool's IP version.
    pub ip_version: u8,
    /// The pool's prefixes (what the nodes route through `router`).
    pub prefixes: Vec<String>,
    /// `pod_router`.
    pub router: String,
    /// The project of namespaces that name none (`[neutron_defaults]
    /// project`).
    pub project_id: String,
    /// `[neutron_defaults] network_device_mtu` (`None`: Neutron's).
    pub mtu: Option<u32>,
}

/// Neutron's longest name.
const NAME_MAX: usize = 255;

/// `<uid>/<name>`, the name cut so the whole fits Neutron's 255 characters
/// (the UID is kept whole: it is what makes the name unique).
pub fn resource_name(name: &str, uid: &str) -> String {
    let room = NAME_MAX.saturating_sub(uid.len() + 1);
    let cut: String = name.chars().take(room).collect();
    format!("{uid}/{cut}")
}

/// The tag marking the network and subnet of namespace `uid`.
pub fn namespace_tag(uid: &str) -> String {
    format!("kuryr-ns:{uid}")
}

/// Whether pod `p` needs its namespace's network: it is not on the host's
/// network and not finished.
pub fn needs_network(p: &Pod) -> bool {
    let host = p
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let done = matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    !host && !done
}

/// The namespace's labels.
pub fn labels(ns: &Namespace) -> BTreeMap<String, String> {
    ns.metadata.labels.clone().unwrap_or_default()
}

/// A merge patch turning label map `old` into `new`: a merge patch keeps
/// the keys it does not name, so removed labels are set to null.
pub fn labels_patch(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> serde_json::Value {
    let mut patch: serde_json::Map<String, serde_json::Value> = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(|k| (k.clone(), serde_json::Value::Null))
        .collect();
    patch.extend(
        new.iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))),
    );
    serde_json::Value::Object(patch)
}

/// The KuryrNetwork of namespace `ns` in project `project_id`.
pub fn kuryr_network(ns: &Namespace, project_id: &str) -> KuryrNetwork {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let mut k = KuryrNetwork::new(
        &name,
        KuryrNetworkSpec {
            ns_name: name.clone(),
            project_id: project_id.to_owned(),
            ns_labels: labels(ns),
        },
    );
    k.metadata.namespace = Some(name);
    k.metadata.finalizers = Some(vec![KURYRNETWORK_FINALIZER.into()]);
    k
}

/// What the KuryrNetwork handler does next for a KuryrNetwork that is not
/// being deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Find or make the network; record `netId`.
    Network,
    /// Find or make the subnet on network `net`; record `subnetId` and
    /// `subnetCIDR`.
    Subnet {
        /// The namespace's network.
        net: String,
    },
    /// Attach subnet `subnet` to the router; record `routerId` and
    /// `populated: false`.
    Router {
        /// The namespace's subnet.
        subnet: String,
    },
    /// Record the labels the namespace has now (`nsLabels` in the status).
    Labels,
    /// Nothing to do.
    Nothing,
}

/// The next step for `kns`. A status written by another controller that
/// names another router than `router` is attached again to this one.
pub fn next_step(kns: &KuryrNetwork, router: &str) -> Step {
    let st = kns.status.clone().unwrap_or_default();
    let Some(net) = st.net_id else {
        return Step::Network;
    };
    let Some(subnet) = st.subnet_id else {
        return Step::Subnet { net };
    };
    if st.subnet_cidr.is_none() {
        return Step::Subnet { net };
    }
    if st.router_id.as_deref() != Some(router) {
        return Step::Router { subnet };
    }
    if st.ns_labels != kns.spec.ns_labels {
        return Step::Labels;
    }
    Step::Nothing
}

/// What may happen to a port still on a namespace's network when the
/// namespace goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// The router's interface: detached (which deletes the port).
    Router,
    /// The cluster's own port (a pod's or a pool's), or one no device owns
    /// (what a crash left behind, as kuryr-kubernetes treats them): deleted.
    Delete,
    /// Neutron's own (DHCP, OVN metadata): deleted with the network.
    Neutron,
    /// Somebody else's (a VM, a load balancer, DHCP): kept, and the
    /// namespace waits, saying so in a Warning event.
    Keep,
}

/// What to do with `port` on the network of a namespace that goes;
/// `cluster_tag` marks the cluster's ports, `router` is the pod router.
pub fn leftover(port: &Port, cluster_tag: &str, router: &str) -> Leftover {
    if port.device_id == router && port.device_owner.starts_with("network:router_interface") {
        return Leftover::Router;
    }
    if matches!(
        port.device_owner.as_str(),
        "network:dhcp" | "network:distributed"
    ) {
        return Leftover::Neutron;
    }
    let ours = port.tags.iter().any(|t| t == cluster_tag) || port.description == cluster_tag;
    if ours || port.device_owner.is_empty() {
        Leftover::Delete
    } else {
        Leftover::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuryr_crds::KuryrNetworkStatus;
    use serde_json::json;

    #[test]
    fn names_are_uid_slash_namespace_within_255_characters() {
        assert_eq!(resource_name("team-a", "u-1"), "u-1/team-a");
        let long = "n".repeat(300);
        let uid = "0b9c1a7e-3c1f-4a55-9a2e-1f0d2a3b4c5d";
        let got = resource_name(&long, uid);
        assert_eq!(got.len(), 255);
        assert!(got.starts_with(&format!("{uid}/nnn")));
        assert_eq!(namespace_tag(uid), format!("kuryr-ns:{uid}"));
    }

    #[test]
    fn only_pods_off_the_host_network_and_running_need_a_network() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        assert!(needs_network(&pod(json!({"spec": {"containers": []}}))));
        assert!(!needs_network(&pod(
            json!({"spec": {"containers": [], "hostNetwork": true}})
        )));
        assert!(!needs_network(&pod(
            json!({"spec": {"containers": []}, "status": {"phase": "Succeeded"}})
        )));
    }

    #[test]
    fn the_kuryr_network_is_written_as_kuryr_kubernetes_wrote_it() {
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": "team-a", "uid": "u-1", "labels": {"tier": "web"}}
        }))
        .unwrap();
        let k = kuryr_network(&ns, "p-1");
        let v = serde_json::to_value(&k).unwrap();
        assert_eq!(v["apiVersion"], "openstack.org/v1");
        assert_eq!(v["kind"], "KuryrNetwork");
        assert_eq!(v["metadata"]["name"], "team-a");
        assert_eq!(v["metadata"]["namespace"], "team-a");
        assert_eq!(
            v["metadata"]["finalizers"],
            json!(["kuryrnetwork.finalizers.kuryr.openstack.org"])
        );
        assert_eq!(
            v["spec"],
            json!({"nsName": "team-a", "projectId": "p-1", "nsLabels": {"tier": "web"}})
        );
    }

    #[test]
    fn a_labels_patch_removes_what_went() {
        let m = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            labels_patch(&m(&[("a", "1"), ("b", "2")]), &m(&[("b", "3"), ("c", "4")])),
            json!({"a": null, "b": "3", "c": "4"})
        );
        assert_eq!(labels_patch(&m(&[]), &m(&[])), json!({}));
    }

    #[test]
    fn steps_follow_the_status_in_kuryr_kubernetes_order() {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "a", "labels": {"x": "1"}}}))
                .unwrap();
        let mut k = kuryr_network(&ns, "p");
        assert_eq!(next_step(&k, "r"), Step::Network);
        let mut st = KuryrNetworkStatus {
            net_id: Some("n".into()),
            ..Default::default()
        };
        k.status = Some(st.clone());
        assert_eq!(next_step(&k, "r"), Step::Subnet { net: "n".into() });
        st.subnet_id = Some("s".into());
        k.status = Some(st.clone());
        // a subnet without its CIDR recorded is looked up again
        assert_eq!(next_step(&k, "r"), Step::Subnet { net: "n".into() });
        st.subnet_cidr = Some("10.80.1.0/24".into());
        k.status = Some(st.clone());
        assert_eq!(next_step(&k, "r"), Step::Router { subnet: "s".into() });
        st.router_id = Some("other".into());
        k.status = Some(st.clone());
        assert_eq!(next_step(&k, "r"), Step::Router { subnet: "s".into() });
        st.router_id = Some("r".into());
        k.status = Some(st.clone());
        assert_eq!(next_step(&k, "r"), Step::Labels);
        st.ns_labels = k.spec.ns_labels.clone();
        k.status = Some(st);
        assert_eq!(next_step(&k, "r"), Step::Nothing);
        // a namespace relabelled
        k.spec.ns_labels.insert("y".into(), "2".into());
        assert_eq!(next_step(&k, "r"), Step::Labels);
    }

    #[test]
    fn a_going_network_loses_our_ports_and_orphans_but_keeps_others() {
        let port = |owner: &str, device: &str, tags: &[&str]| -> Port {
            serde_json::from_value(json!({
                "id": "p", "network_id": "n", "device_owner": owner, "device_id": device,
                "tags": tags, "fixed_ips": []
            }))
            .unwrap()
        };
        let tag = "kuryr-cluster:c";
        assert_eq!(
            leftover(&port("network:router_interface", "r", &[]), tag, "r"),
            Leftover::Router
        );
        assert_eq!(
            leftover(&port("compute:kuryr", "pod", &[tag]), tag, "r"),
            Leftover::Delete
        );
        assert_eq!(
            leftover(&port("trunk:subport", "", &[tag]), tag, "r"),
            Leftover::Delete
        );
        assert_eq!(leftover(&port("", "", &[]), tag, "r"), Leftover::Delete);
        assert_eq!(
            leftover(&port("network:distributed", "ovnmeta-n", &[]), tag, "r"),
            Leftover::Neutron
        );
        assert_eq!(
            leftover(&port("compute:nova", "vm", &[]), tag, "r"),
            Leftover::Keep
        );
        // another router's interface is not ours to detach
        assert_eq!(
            leftover(&port("network:router_interface", "r2", &[]), tag, "r"),
            Leftover::Keep
        );
    }
}
