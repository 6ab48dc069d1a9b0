//! The handlers, one module per watched kind, as kuryr-kubernetes laid
//! them out, and which of them run (`[kubernetes] enabled_handlers`, with
//! kuryr-kubernetes' names), and what they share: events and finalizers.
//! A node's port goes with the pod handler.

pub mod endpoint_slice;
pub mod kuryr_network;
pub mod loadbalancer;
pub mod namespace;
pub mod network_policy;
pub mod node;
pub mod node_vm;
pub mod peer_groups;
pub mod pod;
pub mod pod_groups;
pub mod service;

/// A store of every `K` that `api` lists with `config`, and a stream
/// yielding once per change it sees, after the store holds it (a handler
/// woken by it reads the store as changed).
pub(crate) fn watched<K>(
    api: kube::Api<K>,
    config: kube::runtime::watcher::Config,
) -> (
    kube::runtime::reflector::Store<K>,
    impl futures::Stream<Item = ()> + Send + 'static,
)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    let (store, writer) = kube::runtime::reflector::store();
    let changes = kube::runtime::reflector::reflector(writer, kube::runtime::watcher(api, config))
        .default_backoff()
        .touched_objects()
        .map(|_| ());
    (store, changes)
}

/// Whether namespace `ns` is this controller's: every namespace, or with
/// `--namespace-selector` only those it selects (another controller, or
/// nobody, handles the others).
pub(crate) async fn namespace_selected(
    ctx: &crate::Context,
    ns: &str,
) -> Result<bool, kube::Error> {
    let Some(sel) = &ctx.options.namespace_selector else {
        return Ok(true);
    };
    let nss: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(ctx.kube.clone());
    let lp = kube::api::ListParams::default()
        .labels(sel)
        .fields(&format!("metadata.name={ns}"));
    Ok(!nss.list_metadata(&lp).await?.items.is_empty())
}

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
    /// NetworkPolicies → KuryrNetworkPolicies → security groups, and the
    /// groups of the selected pods' ports (`policy`, `kuryrnetworkpolicy`,
    /// `pod_label`: kuryr-rs runs them as one).
    pub policies: bool,
    /// Namespaces → KuryrNetworks → a network and subnet each
    /// (`namespace`, `kuryrnetwork`, `kuryrnetwork_population`: kuryr-rs
    /// runs them as one).
    pub namespaces: bool,
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
                "policy" | "kuryrnetworkpolicy" | "pod_label" => e.policies = true,
                "namespace" | "kuryrnetwork" | "kuryrnetwork_population" => e.namespaces = true,
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

use crate::{Context, Error};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use serde_json::json;

/// Publishes an event about the object `about` (best effort: a failure is
/// only logged); reason and note are cut to what the API accepts.
pub(crate) async fn publish_event(
    ctx: &Context,
    about: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    action: &str,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.chars().take(128).collect(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, about).await {
        tracing::debug!(error = %e, "publishing an event");
    }
}

/// A merge patch setting the finalizers, guarded by the resourceVersion the
/// change was computed from (a concurrent change makes it fail and retry).
fn finalizer_patch(meta: &kube::api::ObjectMeta, finalizers: Vec<String>) -> serde_json::Value {
    json!({"metadata": {"finalizers": finalizers, "resourceVersion": meta.resource_version}})
}

/// The object's finalizers without `finalizer`.
pub(crate) fn without(meta: &kube::api::ObjectMeta, finalizer: &str) -> Vec<String> {
    meta.finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect()
}

/// Sets an object's finalizers (see [`finalizer_patch`]); `Ok(None)` when
/// the object is already gone.
pub(crate) async fn set_finalizers<K>(
    api: &Api<K>,
    meta: &kube::api::ObjectMeta,
    finalizers: Vec<String>,
) -> Result<Option<K>, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = meta.name.clone().unwrap_or_default();
    match api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(finalizer_patch(meta, finalizers)),
        )
        .await
    {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
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
                loadbalancers: true,
                policies: false,
                namespaces: false,
            }
        );
        assert!(w.is_empty());
        let (e, w) = Enabled::from_names(&names(&["vif", "policy", "kuryrnetwork_population"]));
        assert!(e.pods && e.policies && e.namespaces && !e.any_service());
        assert!(w.is_empty(), "{w:?}");
        let (e, w) = Enabled::from_names(&names(&["vif", "openshift_machine"]));
        assert!(e.pods && !e.namespaces);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("openshift_machine"));
    }
}
