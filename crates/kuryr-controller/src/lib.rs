//! kuryr-controller: every pod gets a Neutron port, recorded as a VIF in the
//! pod's KuryrPort, which the node daemon reads to plug the pod.
//!
//! This first version runs the pod handler with the `neutron-vif` driver
//! (side-by-side: the port is bound to the pod's node) and no port pool:
//! pod → finalizer → KuryrPort → Neutron port (found by tag before it is
//! made, so retries and restarts never duplicate) → VIF in the KuryrPort →
//! VIF marked active once Neutron says ACTIVE; pod deleted or finished →
//! port deleted → KuryrPort deleted → finalizer removed. The decisions are
//! in [`plan`] (pure); this module does the I/O.

pub mod metrics;
pub mod plan;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kuryr_crds::{
    DEFAULT_IFNAME, KURYRPORT_FINALIZER, KuryrPort, KuryrPortSpec, KuryrPortStatus,
    NODE_NAME_LABEL, POD_FINALIZER, Vif, VifEntry, VifKind,
};
use kuryr_openstack::Query;
use kuryr_openstack::types::neutron::{Network, Subnet};
use plan::{PortSettings, Step};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Everything the handler needs, shared by all reconciles.
pub struct Context {
    /// Kubernetes.
    pub kube: kube::Client,
    /// OpenStack.
    pub os: kuryr_openstack::Client,
    /// Where ports are made.
    pub settings: PortSettings,
    /// The pod network.
    pub network: Network,
    /// Its subnets.
    pub subnets: Vec<Subnet>,
    /// `[neutron_defaults] resource_tags`.
    pub resource_tags: Vec<String>,
    /// This cluster's id (tag `kuryr-cluster:<id>` on every port).
    pub cluster_id: String,
    /// `[neutron_defaults] ovs_bridge`.
    pub ovs_bridge: String,
    /// Only pods matching this label selector (all when `None`).
    pub pod_selector: Option<String>,
    /// Counters served on `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
}

/// A failed step; the pod is handled again after a back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kubernetes API.
    #[error("Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// OpenStack API.
    #[error("OpenStack: {0}")]
    OpenStack(#[from] kuryr_openstack::Error),
}

impl Context {
    /// Looks up the pod network and subnet named by `subnet_id`.
    pub async fn new(
        kube: kube::Client,
        os: kuryr_openstack::Client,
        cfg: &kuryr_config::KuryrConfig,
        cluster_id: String,
        pod_selector: Option<String>,
    ) -> anyhow::Result<Self> {
        let nd = &cfg.neutron_defaults;
        let subnet_id = nd.pod_subnet.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "kuryr.conf [neutron_defaults] pod_subnet is not set: pods need a subnet"
            )
        })?;
        let n = os.neutron();
        let subnet = n
            .get_subnet(&subnet_id)
            .await
            .map_err(|e| anyhow::anyhow!("pod subnet {subnet_id}: {e}"))?;
        let network = n.get_network(&subnet.network_id).await?;
        let subnets = n
            .list_subnets(&Query::new().filter("network_id", &network.id))
            .await?;
        Ok(Self {
            settings: PortSettings {
                network_id: network.id.clone(),
                subnet_id,
                security_groups: nd.pod_security_groups.clone(),
                project_id: nd.project.clone(),
            },
            network,
            subnets,
            resource_tags: nd.resource_tags.clone(),
            ovs_bridge: nd.ovs_bridge.clone(),
            kube,
            os,
            cluster_id,
            pod_selector,
            metrics: Arc::default(),
        })
    }
}

/// Runs the pod handler until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let pods: Api<Pod> = Api::all(ctx.kube.clone());
    let kps: Api<KuryrPort> = Api::all(ctx.kube.clone());
    let mut cfg = watcher::Config::default();
    if let Some(sel) = &ctx.pod_selector {
        cfg = cfg.labels(sel);
    }
    ctx.metrics.set_ready(true);
    let metrics = ctx.metrics.clone();
    Controller::new(pods, cfg)
        // a KuryrPort changing (or deleted behind our back) wakes its pod
        .watches(kps, watcher::Config::default(), |kp: KuryrPort| {
            let ns = kp.metadata.namespace.clone()?;
            Some(ObjectRef::<Pod>::new(kp.metadata.name.as_deref()?).within(&ns))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
    metrics.set_ready(false);
}

fn error_policy(pod: Arc<Pod>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(pod = %ObjectRef::from_obj(pod.as_ref()), error = %err, "pod network not set up yet; retrying");
    Action::requeue(Duration::from_secs(3))
}

/// One pass over a pod: steps until there is nothing left to do now.
async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.kube.clone(), &ns);
    let kps: Api<KuryrPort> = Api::namespaced(ctx.kube.clone(), &ns);
    ctx.metrics.pods_handled.fetch_add(1, Ordering::Relaxed);
    let mut pod = (*pod).clone();
    let mut kp = kps.get_opt(&name).await?;
    // a bounded number of steps per pass; the watch brings the pod back
    for _ in 0..8 {
        let step = plan::next_step(&pod, kp.as_ref());
        tracing::debug!(pod = %format!("{ns}/{name}"), ?step, "step");
        match step {
            Step::Nothing => return Ok(Action::await_change()),
            Step::AddPodFinalizer => {
                let mut f = pod.metadata.finalizers.clone().unwrap_or_default();
                f.push(POD_FINALIZER.into());
                match set_finalizers(&pods, &pod.metadata, f).await? {
                    Some(p) => pod = p,
                    // deleted before we got to it: nothing was made for it
                    None => return Ok(Action::await_change()),
                }
            }
            Step::RemovePodFinalizer => {
                // `None`: a cached copy of a pod that is already gone
                if set_finalizers(&pods, &pod.metadata, without(&pod.metadata, POD_FINALIZER))
                    .await?
                    .is_some()
                {
                    tracing::info!(pod = %format!("{ns}/{name}"), "pod network released");
                }
                return Ok(Action::await_change());
            }
            Step::CreateKuryrPort => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let node = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default();
                let mut k = KuryrPort::new(
                    &name,
                    KuryrPortSpec {
                        pod_uid: uid,
                        pod_node_name: node.clone(),
                        pod_static: false,
                    },
                );
                k.metadata.labels = Some([(NODE_NAME_LABEL.to_string(), node)].into());
                k.metadata.finalizers = Some(vec![KURYRPORT_FINALIZER.into()]);
                kp = Some(kps.create(&PostParams::default(), &k).await?);
            }
            Step::CreatePort => {
                let k = kp.as_ref().expect("plan: CreatePort has a KuryrPort");
                let uid = &k.spec.pod_uid;
                let tags = plan::port_tags(&ctx.resource_tags, &ctx.cluster_id, uid);
                let body = plan::port_request(uid, &k.spec.pod_node_name, &ctx.settings);
                let port = ctx.os.neutron().ensure_port(&tags, &body).await?;
                ctx.metrics.ports_created.fetch_add(1, Ordering::Relaxed);
                if let Some(age) = pod_age_seconds(&pod) {
                    ctx.metrics.observe_vif_ready(age);
                }
                let vif = Vif::from_port(
                    &port,
                    &ctx.network,
                    &ctx.subnets,
                    VifKind::OpenVSwitch {
                        bridge_name: ctx.ovs_bridge.clone(),
                    },
                );
                tracing::info!(pod = %format!("{ns}/{name}"), port = %port.id, ip = port.first_ip().unwrap_or("-"), "pod port ready");
                let status = KuryrPortStatus {
                    vifs: [(DEFAULT_IFNAME.to_string(), VifEntry { default: true, vif })].into(),
                };
                kp = Some(
                    kps.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": status})),
                    )
                    .await?,
                );
            }
            Step::CheckActive => {
                let k = kp.as_ref().expect("plan: CheckActive has a KuryrPort");
                let mut status = k.status.clone().unwrap_or_default();
                let mut changed = false;
                for entry in status.vifs.values_mut().filter(|e| !e.vif.active) {
                    match ctx.os.neutron().get_port(&entry.vif.id).await {
                        Ok(p) if p.status == "ACTIVE" => {
                            entry.vif.active = true;
                            changed = true;
                        }
                        Ok(_) => {}
                        Err(e) if e.is_not_found() => {
                            // the port was deleted behind our back: make a new one
                            tracing::warn!(pod = %format!("{ns}/{name}"), port = %entry.vif.id, "port vanished from Neutron; replacing it");
                            ctx.metrics.ports_replaced.fetch_add(1, Ordering::Relaxed);
                            // (null deletes a key in a merge patch; `vifs` itself is required)
                            let gone: serde_json::Map<String, serde_json::Value> = status
                                .vifs
                                .keys()
                                .map(|k| (k.clone(), serde_json::Value::Null))
                                .collect();
                            let p = json!({"status": {"vifs": gone}});
                            kp = Some(
                                kps.patch(&name, &PatchParams::default(), &Patch::Merge(p))
                                    .await?,
                            );
                            changed = false;
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                if changed {
                    kp = Some(
                        kps.patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": status})),
                        )
                        .await?,
                    );
                } else if kp
                    .as_ref()
                    .is_some_and(|k| k.status.as_ref().is_some_and(|s| !s.vifs.is_empty()))
                {
                    // not bound and plugged yet: look again soon
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
            }
            Step::Release | Step::ReleaseStale => {
                let k = kp.take().expect("plan: Release has a KuryrPort");
                release(&ctx, &kps, &k).await?;
            }
        }
    }
    Ok(Action::requeue(Duration::ZERO))
}

/// Deletes the Neutron ports of a KuryrPort's pod (by its VIFs and by tag,
/// so a port made but not yet recorded goes too), then the KuryrPort.
async fn release(ctx: &Context, kps: &Api<KuryrPort>, kp: &KuryrPort) -> Result<(), Error> {
    let n = ctx.os.neutron();
    let uid = &kp.spec.pod_uid;
    let mut ids: Vec<String> = kp
        .status
        .iter()
        .flat_map(|s| s.vifs.values().map(|e| e.vif.id.clone()))
        .collect();
    let tagged = n
        .list_ports(
            &Query::new()
                .tags([plan::cluster_tag(&ctx.cluster_id), plan::pod_tag(uid)])
                .fields(["id", "network_id"]),
        )
        .await?;
    ids.extend(tagged.into_iter().map(|p| p.id));
    ids.sort();
    ids.dedup();
    for id in &ids {
        if n.delete_port(id).await? {
            ctx.metrics.ports_deleted.fetch_add(1, Ordering::Relaxed);
        }
    }
    let name = kp.metadata.name.clone().unwrap_or_default();
    if plan::kp_has_finalizer(kp)
        && set_finalizers(
            kps,
            &kp.metadata,
            without(&kp.metadata, KURYRPORT_FINALIZER),
        )
        .await?
        .is_none()
    {
        return Ok(());
    }
    match kps.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(kuryrport = %name, pod_uid = %uid, ports = ids.len(), "released");
    Ok(())
}

/// Seconds since the pod was created (Kubernetes keeps whole seconds).
fn pod_age_seconds(pod: &Pod) -> Option<f64> {
    let ts = serde_json::to_value(pod.metadata.creation_timestamp.as_ref()?).ok()?;
    let created = kuryr_openstack::parse_timestamp(ts.as_str()?)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(now - created as f64)
}

/// A merge patch setting the finalizers, guarded by the resourceVersion the
/// change was computed from (a concurrent change makes it fail and retry).
fn finalizer_patch(meta: &kube::api::ObjectMeta, finalizers: Vec<String>) -> serde_json::Value {
    json!({"metadata": {"finalizers": finalizers, "resourceVersion": meta.resource_version}})
}

/// The object's finalizers without `finalizer`.
fn without(meta: &kube::api::ObjectMeta, finalizer: &str) -> Vec<String> {
    meta.finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect()
}

/// Sets an object's finalizers (see [`finalizer_patch`]); `Ok(None)` when
/// the object is already gone.
async fn set_finalizers<K>(
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
