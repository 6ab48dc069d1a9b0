//! The custom resources kuryr-rs shares with kuryr-kubernetes (group
//! `openstack.org`, version `v1`) and the os-vif VIF objects stored in them.
//! Field names, labels, finalizers and the VIF serialisation follow
//! kuryr-kubernetes, so an existing installation's objects can be taken over.
//! Everything is keyed by pod UID, never by pod name.

pub mod loadbalancer;
pub mod node;
pub mod policy;
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
pub use policy::{
    KuryrNetworkPolicy, KuryrNetworkPolicySpec, KuryrNetworkPolicyStatus, NETWORKPOLICY_FINALIZER,
    NETWORKPOLICY_LINK,
};
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
///
/// The CRD leaves `vifs` free-form, so anyone who may write KuryrPorts can
/// put there a VIF class kuryr-rs does not implement (kuryr-kubernetes'
/// `VIFVHostUser`, `VIFDPDKNested`) or junk. Reading such an entry never
/// fails the object, which would stall every list and watch of
/// KuryrPorts: it is kept in [`Self::unreadable`] with the reason, written
/// back as it was, and each reader decides what to do with that one pod.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct KuryrPortStatus {
    /// `{ifname: {default, vif}}`.
    pub vifs: BTreeMap<String, VifEntry>,
    /// Entries of `vifs` that cannot be read, by interface name.
    pub unreadable: BTreeMap<String, Unreadable>,
}

/// An entry of a KuryrPort's `vifs` that kuryr-rs cannot read.
#[derive(Clone, Debug, PartialEq)]
pub struct Unreadable {
    /// The entry as it is stored.
    pub raw: serde_json::Value,
    /// Why it cannot be read.
    pub error: String,
}

impl Unreadable {
    /// The Neutron port id the entry names, if it names one the way os-vif
    /// does (`vif.versioned_object.data.id`).
    pub fn port_id(&self) -> Option<&str> {
        self.raw
            .get("vif")?
            .get("versioned_object.data")?
            .get("id")?
            .as_str()
    }
}

/// The stored form of [`KuryrPortStatus`].
#[derive(Serialize, Deserialize)]
struct StatusWire {
    #[serde(default)]
    vifs: BTreeMap<String, serde_json::Value>,
}

impl Serialize for KuryrPortStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut vifs = BTreeMap::new();
        for (k, u) in &self.unreadable {
            vifs.insert(k.clone(), u.raw.clone());
        }
        for (k, e) in &self.vifs {
            vifs.insert(
                k.clone(),
                serde_json::to_value(e).map_err(serde::ser::Error::custom)?,
            );
        }
        StatusWire { vifs }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for KuryrPortStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = StatusWire::deserialize(d)?;
        let mut st = KuryrPortStatus::default();
        for (k, raw) in wire.vifs {
            match VifEntry::deserialize(&raw) {
                Ok(e) => {
                    st.vifs.insert(k, e);
                }
                Err(e) => {
                    st.unreadable.insert(
                        k,
                        Unreadable {
                            raw,
                            error: e.to_string(),
                        },
                    );
                }
            }
        }
        Ok(st)
    }
}

impl KuryrPortStatus {
    /// A status holding `vifs`.
    pub fn new(vifs: BTreeMap<String, VifEntry>) -> Self {
        Self {
            vifs,
            unreadable: BTreeMap::new(),
        }
    }

    /// A status holding `vif` alone, as the default interface
    /// ([`DEFAULT_IFNAME`]): what kuryr writes for a pod.
    pub fn default_only(vif: Vif) -> Self {
        Self::new([(DEFAULT_IFNAME.to_string(), VifEntry { default: true, vif })].into())
    }

    /// The Neutron ports of every entry, readable or not (an unreadable
    /// one counts when it names its port as os-vif does).
    pub fn port_ids(&self) -> impl Iterator<Item = &str> {
        self.vifs
            .values()
            .map(|e| e.vif.id.as_str())
            .chain(self.unreadable.values().filter_map(Unreadable::port_id))
    }

    /// Why interface `ifname` cannot be read, if it cannot (the default
    /// interface answers for a name without an entry, as for readable VIFs).
    pub fn unreadable_for(&self, ifname: &str) -> Option<&Unreadable> {
        if self.vifs.contains_key(ifname) {
            return None;
        }
        self.unreadable.get(ifname).or_else(|| {
            if self.default_vif().is_some() {
                return None;
            }
            self.unreadable
                .values()
                .find(|u| u.raw.get("default").and_then(serde_json::Value::as_bool) == Some(true))
        })
    }

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
pub const CRD_MANIFESTS: [(&str, &str); 4] = [
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
    (
        "kuryrnetworkpolicies.openstack.org",
        include_str!("../crds/kuryrnetworkpolicy.yaml"),
    ),
];

/// The namespace whose UID names a cluster by default.
pub const IDENTITY_NAMESPACE: &str = "kube-system";

/// This cluster's identity when none is configured: the UID of its
/// `kube-system` namespace, made once with the cluster and never again, so
/// two clusters sharing an OpenStack project never take each other's
/// resources for their own (a fixed default would make them one cluster to
/// each other's garbage collection and pools).
pub async fn cluster_identity(client: &kube::Client) -> Result<Option<String>, kube::Error> {
    let nss: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    Ok(nss.get_metadata(IDENTITY_NAMESPACE).await?.metadata.uid)
}

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

/// Where kuryr-kubernetes' `[kubernetes]` options say the API server is:
/// `api_root` (URL), `token_file` (a bearer token, re-read as it changes)
/// and `ssl_ca_crt_file` (CA bundle, PEM). Empty strings count as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiRoot {
    /// `api_root`.
    pub url: Option<String>,
    /// `token_file`.
    pub token_file: Option<String>,
    /// `ssl_ca_crt_file`.
    pub ca_file: Option<String>,
}

impl ApiRoot {
    /// A kubeconfig naming the API server, token and CA as `[kubernetes]`
    /// does; `None` without `api_root`.
    pub fn kubeconfig(&self) -> Option<kube::config::Kubeconfig> {
        use kube::config::{
            AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
        };
        let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let url = set(&self.url)?;
        let name = "kuryr".to_string();
        Some(Kubeconfig {
            clusters: vec![NamedCluster {
                name: name.clone(),
                cluster: Some(Cluster {
                    server: Some(url),
                    certificate_authority: set(&self.ca_file),
                    ..Default::default()
                }),
                other: Default::default(),
            }],
            auth_infos: vec![NamedAuthInfo {
                name: name.clone(),
                auth_info: Some(AuthInfo {
                    token_file: set(&self.token_file),
                    ..Default::default()
                }),
                other: Default::default(),
            }],
            contexts: vec![NamedContext {
                name: name.clone(),
                context: Some(Context {
                    cluster: name.clone(),
                    user: Some(name.clone()),
                    ..Default::default()
                }),
                other: Default::default(),
            }],
            current_context: Some(name),
            ..Default::default()
        })
    }
}

/// A Kubernetes client: from the kubeconfig file `kubeconfig` when given,
/// else from `[kubernetes] api_root` (with its token and CA files) when set,
/// else as kubectl would find it (in-cluster service account, `KUBECONFIG`,
/// `~/.kube/config`).
pub async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
    api_root: &ApiRoot,
) -> Result<kube::Client, Box<dyn std::error::Error + Send + Sync>> {
    let cfg = match (kubeconfig, api_root.kubeconfig()) {
        (Some(p), _) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| format!("reading {}: {e}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        (None, Some(kc)) => kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| format!("[kubernetes] api_root, token_file, ssl_ca_crt_file: {e}"))?,
        (None, None) => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(cfg)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    fn vhostuser() -> serde_json::Value {
        json!({"default": true, "vif": {
            "versioned_object.name": "VIFVHostUser",
            "versioned_object.namespace": "os_vif",
            "versioned_object.version": "1.1",
            "versioned_object.data": {"id": "port-vhu", "mode": "server",
                                      "path": "/var/run/vhu/sock"}}})
    }

    #[test]
    fn an_unreadable_vif_is_kept_as_written_and_does_not_fail_the_object() {
        let raw = json!({
            "apiVersion": "openstack.org/v1", "kind": "KuryrPort",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"podUid": "u", "podNodeName": "n"},
            "status": {"vifs": {"eth0": vhostuser(), "net1": "junk", "net2": {"default": 3}}}
        });
        let kp: KuryrPort = serde_json::from_value(raw.clone()).expect("object still read");
        let st = kp.status.clone().expect("status");
        assert!(st.vifs.is_empty());
        assert_eq!(
            st.unreadable.keys().collect::<Vec<_>>(),
            ["eth0", "net1", "net2"]
        );
        assert!(
            st.unreadable["eth0"].error.contains("VIFVHostUser"),
            "{}",
            st.unreadable["eth0"].error
        );
        assert_eq!(st.unreadable["eth0"].port_id(), Some("port-vhu"));
        assert_eq!(st.unreadable["net1"].port_id(), None);
        assert_eq!(st.port_ids().collect::<Vec<_>>(), ["port-vhu"]);
        // written back exactly as it was: a status write loses nothing
        let back = serde_json::to_value(&kp).unwrap();
        assert_eq!(back["status"], raw["status"]);
        // the default interface answers for a name without an entry
        assert!(st.unreadable_for("eth0").is_some());
        assert!(st.unreadable_for("eth9").is_some());
        assert!(st.unreadable_for("net1").is_some());
    }

    #[test]
    fn readable_vifs_beside_an_unreadable_one_are_read() {
        let ok = serde_json::to_value(VifEntry {
            default: true,
            vif: Vif {
                id: "port-ok".into(),
                address: "fa:16:3e:00:00:01".into(),
                network: VifNetwork {
                    id: "n".into(),
                    label: "l".into(),
                    bridge: None,
                    mtu: None,
                    subnets: vec![],
                },
                plugin: "ovs".into(),
                active: true,
                preserve_on_delete: false,
                has_traffic_filtering: true,
                vif_name: "tapport-ok".into(),
                kind: VifKind::OpenVSwitch {
                    bridge_name: "br-int".into(),
                },
            },
        })
        .unwrap();
        let mut bad = vhostuser();
        bad["default"] = json!(false);
        let st: KuryrPortStatus =
            serde_json::from_value(json!({"vifs": {"eth0": ok, "net1": bad}})).unwrap();
        assert_eq!(st.default_vif().map(|v| v.id.as_str()), Some("port-ok"));
        assert!(st.unreadable_for("eth0").is_none());
        assert!(
            st.unreadable_for("eth7").is_none(),
            "the default VIF answers"
        );
        assert!(st.unreadable_for("net1").is_some());
        let mut ids: Vec<&str> = st.port_ids().collect();
        ids.sort();
        assert_eq!(ids, ["port-ok", "port-vhu"]);
    }

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
        assert_eq!(
            crds[3].spec.names.short_names.as_deref(),
            Some(&["knp".to_string()][..])
        );
        // no status subresource: kuryr-kubernetes writes status with the object
        assert!(crds[3].spec.versions[0].subresources.is_none());
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

    /// A self-signed CA certificate (made for this test only).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBjDCCATOgAwIBAgIUf9ORItYa1hhgcla39fwkGi73fSIwCgYIKoZIzj0EAwIw\nGzEZMBcGA1UEAwwQa3VyeXItcnMgdGVzdCBDQTAgFw0yNjEyMDIyMjUyNTVaGA8y\nMTI2MTEwODIyNTI1NVowGzEZMBcGA1UEAwwQa3VyeXItcnMgdGVzdCBDQTBZMBMG\nByqGSM49AgEGCCqGSM49AwEHA0IABP1yq5QqMZsUAYoROGwfKRTAFJdbd/3+AvHj\n9I+M4+vhtlaKoEzCiBvO05LnQQO33ky1/x95Yo5qQlOjPm/hx/6jUzBRMB0GA1Ud\nDgQWBBTUiKZpcqvaZ6BVG5Nd4BuoOFrrLjAfBgNVHSMEGDAWgBTUiKZpcqvaZ6BV\nG5Nd4BuoOFrrLjAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIDWt\nkjW7Lojx9dtsj/Qiub9NNGn9mGvvsqWyynGjsRe6AiAkHmI0dMzcvme+7ljBpd3u\noMCHQQKxfQHz6RfIrqDR0A==\n-----END CERTIFICATE-----\n";

    #[tokio::test]
    async fn api_root_token_and_ca_make_the_client_config() {
        let dir = std::env::temp_dir().join(format!("kuryr-api-root-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, token) = (dir.join("ca.crt"), dir.join("token"));
        std::fs::write(&ca, TEST_CA).unwrap();
        std::fs::write(&token, "t0ken").unwrap();
        let root = ApiRoot {
            url: Some("https://10.0.0.1:6443".into()),
            token_file: Some(token.to_string_lossy().into_owned()),
            ca_file: Some(ca.to_string_lossy().into_owned()),
        };
        let kc = root.kubeconfig().expect("api_root set");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        assert_eq!(cfg.cluster_url.to_string(), "https://10.0.0.1:6443/");
        assert_eq!(
            cfg.root_cert.as_ref().map(Vec::len),
            Some(1),
            "the CA bundle is read"
        );
        assert_eq!(
            cfg.auth_info.token_file.as_deref(),
            root.token_file.as_deref()
        );
        // a CA file that is not there is an error naming it, not a silent default
        let missing = ApiRoot {
            ca_file: Some(dir.join("nope.crt").to_string_lossy().into_owned()),
            ..root.clone()
        };
        let e = match kube_client(None, &missing).await {
            Ok(_) => panic!("a missing CA file was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("api_root"), "{e}");
        // unset or empty api_root: no kubeconfig from it
        assert!(ApiRoot::default().kubeconfig().is_none());
        let empty = ApiRoot {
            url: Some(String::new()),
            ..Default::default()
        };
        assert!(empty.kubeconfig().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
