//! The custom resources kuryr-rs shares with kuryr-kubernetes (group
//! `openstack.org`, version `v1`) and the os-vif VIF objects stored in them.
//! Field names, labels, finalizers and the VIF serialisation follow
//! kuryr-kubernetes, so an existing installation's objects can be taken over.
//! Everything is keyed by pod UID, never by pod name.

pub mod loadbalancer;
pub mod node;
pub mod vif;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use loadbalancer::{
    KLB_FINALIZER, KuryrLoadBalancer, KuryrLoadBalancerSpec, KuryrLoadBalancerStatus,
    SERVICE_FINALIZER,
};
pub use node::{NODE_PORT_ANNOTATION, NodePort, NodeRoute};
pub use vif::{Vif, VifKind, VifNetwork, VifRoute, VifSubnet};

/// API group of every kuryr CRD.
pub const GROUP: &str = "openstack.org";
/// Label on a KuryrPort naming the node of its pod, so that node daemons
/// watch only their own.
pub const NODE_NAME_LABEL: &str = "kuryr.openstack.org/nodeName";
/// Finalizer the controller puts on a pod until its port is released.
pub const POD_FINALIZER: &str = "kuryr.openstack.org/pod-finalizer";
/// Finalizer on a KuryrPort until its Neutron port is released.
pub const KURYRPORT_FINALIZER: &str = "kuryr.openstack.org/kuryrport-finalizer";
/// Finalizer on a KuryrNetwork until its Neutron network is gone.
pub const KURYRNETWORK_FINALIZER: &str = "kuryrnetwork.finalizers.kuryr.openstack.org";
/// Interface name of a pod's default VIF.
pub const DEFAULT_IFNAME: &str = "eth0";

fn is_false(b: &bool) -> bool {
    !*b
}

/// Spec of a KuryrPort: which pod (by UID) on which node.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "openstack.org",
    version = "v1",
    kind = "KuryrPort",
    plural = "kuryrports",
    shortname = "kp",
    namespaced,
    status = "KuryrPortStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct KuryrPortSpec {
    /// UID of the pod: the key of everything, so a pod recreated under the
    /// same name is a different pod.
    pub pod_uid: String,
    /// Node the pod is scheduled to.
    pub pod_node_name: String,
    /// A static (mirror) pod: the node daemon plugs it without waiting for
    /// the pod object.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pod_static: bool,
}

/// One interface of a pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct VifEntry {
    /// The pod's default interface (`eth0`).
    pub default: bool,
    /// The VIF.
    pub vif: Vif,
}

/// Status of a KuryrPort: the pod's VIFs by interface name. As in
/// kuryr-kubernetes the CRD has no status subresource: status is written
/// with a patch of the object itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct KuryrPortStatus {
    /// `{ifname: {default, vif}}`.
    #[serde(default)]
    pub vifs: BTreeMap<String, VifEntry>,
}

impl KuryrPortStatus {
    /// The default VIF, if any.
    pub fn default_vif(&self) -> Option<&Vif> {
        self.vifs.values().find(|e| e.default).map(|e| &e.vif)
    }

    /// Every VIF is ACTIVE in Neutron (and there is at least one).
    pub fn all_active(&self) -> bool {
        !self.vifs.is_empty() && self.vifs.values().all(|e| e.vif.active)
    }
}

/// Spec of a KuryrNetwork: the namespace whose network it is.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "openstack.org",
    version = "v1",
    kind = "KuryrNetwork",
    plural = "kuryrnetworks",
    shortname = "kns",
    namespaced,
    status = "KuryrNetworkStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct KuryrNetworkSpec {
    /// Namespace name.
    pub ns_name: String,
    /// OpenStack project of the namespace's network.
    pub project_id: String,
    /// The namespace's labels (for network policies).
    #[serde(default)]
    pub ns_labels: BTreeMap<String, String>,
}

/// Status of a KuryrNetwork: the Neutron objects made for the namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KuryrNetworkStatus {
    /// Network id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_id: Option<String>,
    /// Subnet id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Subnet CIDR (kuryr-kubernetes spells it `subnetCIDR`).
    #[serde(
        rename = "subnetCIDR",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subnet_cidr: Option<String>,
    /// Router the subnet is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// The network's port pool was populated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub populated: Option<bool>,
    /// Labels the network was set up for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ns_labels: BTreeMap<String, String>,
}

/// The CRD manifests, as installed by [`install`] (and shipped for
/// `kubectl apply`).
pub const CRD_MANIFESTS: [(&str, &str); 3] = [
    (
        "kuryrports.openstack.org",
        include_str!("../crds/kuryrport.yaml"),
    ),
    (
        "kuryrnetworks.openstack.org",
        include_str!("../crds/kuryrnetwork.yaml"),
    ),
    (
        "kuryrloadbalancers.openstack.org",
        include_str!("../crds/kuryrloadbalancer.yaml"),
    ),
];

/// The CRDs as objects.
pub fn crds() -> Result<Vec<CustomResourceDefinition>, serde_yaml_ng::Error> {
    CRD_MANIFESTS
        .iter()
        .map(|(_, y)| serde_yaml_ng::from_str(y))
        .collect()
}

/// Installs (server-side apply, field manager `kuryr-rs`) or updates the
/// CRDs and waits until the apiserver serves them. Idempotent.
pub async fn install(client: &kube::Client) -> Result<(), InstallError> {
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("kuryr-rs").force();
    for crd in crds()? {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &pp, &Patch::Apply(&crd)).await?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let c = api.get(&name).await?;
            let established = c
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(InstallError::NotEstablished(name));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Why [`install`] failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A shipped manifest does not parse (a build defect).
    #[error("CRD manifest: {0}")]
    Manifest(#[from] serde_yaml_ng::Error),
    /// The apiserver refused or failed.
    #[error("installing CRDs: {0}")]
    Kube(#[from] kube::Error),
    /// The CRD never became Established.
    #[error("CRD {0} not established within 60 s")]
    NotEstablished(String),
}

/// A Kubernetes client from `kubeconfig`, or else as kubectl finds one
/// (KUBECONFIG, ~/.kube/config, in-cluster).
pub async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
) -> Result<kube::Client, Box<dyn std::error::Error + Send + Sync>> {
    let cfg = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| format!("reading {}: {e}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(cfg)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    #[test]
    fn resource_names_match_kuryr_kubernetes() {
        assert_eq!(KuryrPort::api_version(&()), "openstack.org/v1");
        assert_eq!(KuryrPort::plural(&()), "kuryrports");
        assert_eq!(KuryrNetwork::kind(&()), "KuryrNetwork");
        let crds = crds().unwrap();
        assert_eq!(
            crds[0].spec.names.short_names.as_deref(),
            Some(&["kp".to_string()][..])
        );
        assert_eq!(
            crds[1].spec.names.short_names.as_deref(),
            Some(&["kns".to_string()][..])
        );
        assert_eq!(
            crds[2].spec.names.short_names.as_deref(),
            Some(&["klb".to_string()][..])
        );
        assert_eq!(KuryrLoadBalancer::plural(&()), "kuryrloadbalancers");
        for c in &crds {
            assert_eq!(c.spec.group, GROUP);
            assert_eq!(c.spec.versions[0].name, "v1");
        }
    }

    #[test]
    fn spec_fields_are_camel_case() {
        let kp = KuryrPort::new(
            "pod-a",
            KuryrPortSpec {
                pod_uid: "u1".into(),
                pod_node_name: "node-1".into(),
                pod_static: false,
            },
        );
        let v = serde_json::to_value(&kp).unwrap();
        assert_eq!(v["spec"], json!({"podUid": "u1", "podNodeName": "node-1"}));
        let st: KuryrNetworkStatus = serde_json::from_value(
            json!({"netId": "n", "subnetCIDR": "10.0.0.0/24", "populated": true}),
        )
        .unwrap();
        assert_eq!(st.subnet_cidr.as_deref(), Some("10.0.0.0/24"));
        assert_eq!(
            serde_json::to_value(&st).unwrap()["subnetCIDR"],
            "10.0.0.0/24"
        );
    }
}
