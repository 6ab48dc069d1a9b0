//! The pod handler (kuryr-kubernetes' `vif` and `kuryrport`): pod →
//! finalizer → KuryrPort → Neutron port (from a pool, or made for the pod
//! and found by its tag before it is made, so retries and restarts never
//! duplicate) → VIF in the KuryrPort → VIF marked active once Neutron says
//! ACTIVE; pod deleted or finished → port back to its pool (or deleted) →
//! KuryrPort deleted → finalizer removed.

use crate::handlers::{publish_event, set_finalizers, without};
use crate::plan::Step;
use crate::{Context, Error, active, plan, pool};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kuryr_crds::{
    KURYRPORT_FINALIZER, KuryrPort, KuryrPortSpec, KuryrPortStatus, NODE_NAME_LABEL, POD_FINALIZER,
};
use kuryr_openstack::Query;
use kuryr_openstack::types::neutron::Port;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The pod handler until `shutdown` resolves.
pub(crate) async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let pods: Api<Pod> = Api::all(ctx.kube.clone());
    let kps: Api<KuryrPort> = Api::all(ctx.kube.clone());
    let mut cfg = watcher::Config::default();
    if let Some(sel) = &ctx.options.pod_selector {
        cfg = cfg.labels(sel);
    }
    let wake = ctx.active.subscribe();
    let wake = futures::stream::unfold(
        wake,
        |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
    );
    let metrics = ctx.metrics.clone();
    Controller::new(pods, cfg)
        // a KuryrPort changing (or deleted behind our back) wakes its pod
        .watches(kps, watcher::Config::default(), |kp: KuryrPort| {
            let ns = kp.metadata.namespace.clone()?;
            Some(ObjectRef::<Pod>::new(kp.metadata.name.as_deref()?).within(&ns))
        })
        .reconcile_on(wake)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| {
            // the watches' progress is what /healthz judges
            metrics.health.watch_result(&res, std::time::Instant::now());
            async move {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "reconcile");
                }
            }
        })
        .await;
}

fn error_policy(pod: Arc<Pod>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.errors.fetch_add(1, Ordering::Relaxed);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(uid).or_default();
        *n = n.saturating_add(1);
        *n
    };
    // 2 s, 4 s, ... 60 s, spread so a burst of failures does not retry at once
    let base = Duration::from_secs(2u64.saturating_pow(n.min(6))).min(Duration::from_secs(60));
    let spread = Duration::from_millis(u64::from(n.wrapping_mul(7919) % 1000));
    tracing::warn!(pod = %ObjectRef::from_obj(pod.as_ref()), error = %err, attempt = n, retry_in_ms = (base + spread).as_millis() as u64, "pod network not set up yet; retrying");
    Action::requeue(base + spread)
}

/// Publishes an event about `pod` (best effort: a failure is only logged).
async fn event(ctx: &Context, pod: &Pod, type_: EventType, reason: &str, note: String) {
    use kube::Resource;
    publish_event(
        ctx,
        &pod.object_ref(&()),
        type_,
        "SetUpNetwork",
        reason,
        note,
    )
    .await;
}

/// One pass over a pod; a failure becomes a warning event on the pod.
async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.pods_handled.fetch_add(1, Ordering::Relaxed);
    match reconcile_pod(&pod, &ctx).await {
        Ok(a) => {
            if let Some(uid) = &pod.metadata.uid {
                ctx.failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(uid);
            }
            Ok(a)
        }
        Err(e) => {
            let reason = e.reason();
            ctx.metrics.count_error(&reason);
            if !matches!(&e, Error::Kube(kube::Error::Api(a)) if a.code == 404 || a.code == 409) {
                event(
                    &ctx,
                    &pod,
                    EventType::Warning,
                    &reason,
                    format!("Pod network not set up: {e}"),
                )
                .await;
            }
            Err(e)
        }
    }
}

/// The port for a new VIF of `kp`'s pod: from its pool, or made for it.
async fn acquire(
    ctx: &Context,
    kp: &KuryrPort,
    s: &crate::plan::PortSettings,
) -> Result<(Port, Option<u16>), Error> {
    let uid = &kp.spec.pod_uid;
    let node = &kp.spec.pod_node_name;
    let Some(pool) = &ctx.pool else {
        let got = ctx.drivers.ensure_pod_port_on(uid, node, s).await?;
        ctx.metrics.ports_created.fetch_add(1, Ordering::Relaxed);
        return Ok(got);
    };
    let key = ctx.drivers.pool_key_on(node, s).await?;
    let pp = pool.acquire(&key, uid).await?;
    let port = match &pp.port {
        Some(p) => (**p).clone(),
        None => ctx.os.neutron().get_port(&pp.id).await?,
    };
    Ok((port, pp.vlan_id))
}

/// Steps through one pod until there is nothing left to do now.
async fn reconcile_pod(pod: &Pod, ctx: &Context) -> Result<Action, Error> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.kube.clone(), &ns);
    let kps: Api<KuryrPort> = Api::namespaced(ctx.kube.clone(), &ns);
    let mut pod = pod.clone();
    let mut kp = kps.get_opt(&name).await?;
    // a bounded number of steps per pass; the watch brings the pod back
    for _ in 0..8 {
        let step = plan::next_step(&pod, kp.as_ref(), k8s_openapi::jiff::Timestamp::now());
        tracing::debug!(pod = %format!("{ns}/{name}"), ?step, "step");
        match step {
            Step::Nothing => return Ok(Action::await_change()),
            // the kubelet's status updates bring the pod back sooner
            Step::Draining(left) => return Ok(Action::requeue(left)),
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
                // a static pod's API object is the kubelet's mirror of it
                let pod_static = pod
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION));
                let mut k = KuryrPort::new(
                    &name,
                    KuryrPortSpec {
                        pod_uid: uid.clone(),
                        pod_node_name: node.clone(),
                        pod_static,
                    },
                );
                k.metadata.labels = Some([(NODE_NAME_LABEL.to_string(), node)].into());
                // owned by its pod, as in kuryr-kubernetes: a pod that goes
                // without its finalizer takes its KuryrPort with it, and the
                // orphan's port is released (see [`release_orphans`])
                k.metadata.owner_references = Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                        name: name.clone(),
                        uid,
                        ..Default::default()
                    },
                ]);
                k.metadata.finalizers = Some(vec![KURYRPORT_FINALIZER.into()]);
                kp = Some(kps.create(&PostParams::default(), &k).await?);
            }
            Step::CreatePort => {
                let k = kp.as_ref().expect("plan: CreatePort has a KuryrPort");
                let Some((settings, net)) =
                    crate::handlers::kuryr_network::placement(ctx, &ns).await?
                else {
                    // its namespace's network is being made: looked at again
                    tracing::debug!(pod = %format!("{ns}/{name}"), "waiting for the namespace's network");
                    return Ok(Action::requeue(std::time::Duration::from_secs(1)));
                };
                let (port, vlan) = acquire(ctx, k, &settings).await?;
                // the groups of the policies selecting the pod from the start
                let port = if ctx.handlers.policies {
                    match super::pod_groups::at_creation(
                        ctx,
                        &pod,
                        port.clone(),
                        &settings.security_groups,
                    )
                    .await
                    {
                        Ok(p) => p,
                        Err(e) => {
                            give_back(ctx, &port.id, &k.spec.pod_node_name).await;
                            return Err(e);
                        }
                    }
                } else {
                    port
                };
                let vif = ctx
                    .drivers
                    .vif(&port, &net.network, &net.subnets, &ctx.ovs_bridge, vlan);
                let status = KuryrPortStatus::default_only(vif);
                let patched = kps
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": status})),
                    )
                    .await;
                match patched {
                    Ok(k) => kp = Some(k),
                    Err(e) => {
                        // not recorded: the port goes back where it came from
                        give_back(ctx, &port.id, &k.spec.pod_node_name).await;
                        return Err(e.into());
                    }
                }
                if let Some(age) = pod_age_seconds(&pod) {
                    ctx.metrics.observe_vif_ready(age);
                }
                tracing::info!(pod = %format!("{ns}/{name}"), port = %port.id, ip = port.first_ip().unwrap_or("-"), vlan, "pod port ready");
            }
            Step::CheckActive => {
                let k = kp.as_ref().expect("plan: CheckActive has a KuryrPort");
                let mut status = k.status.clone().unwrap_or_default();
                let mut changed = false;
                let me = ObjectRef::from_obj(&pod);
                for entry in status.vifs.values_mut().filter(|e| !e.vif.active) {
                    match ctx.active.take_seen(&entry.vif.id) {
                        Some(active::Seen::Active) => {
                            entry.vif.active = true;
                            changed = true;
                        }
                        Some(active::Seen::Gone) if port_gone(ctx, &entry.vif.id).await? => {
                            // deleted behind our back: make a new one
                            tracing::warn!(pod = %format!("{ns}/{name}"), port = %entry.vif.id, "port vanished from Neutron; replacing it");
                            ctx.metrics.ports_replaced.fetch_add(1, Ordering::Relaxed);
                            if let Some(pool) = &ctx.pool {
                                // it is no pool's any more
                                let _ = pool.release(&entry.vif.id).await;
                            }
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
                        _ => {
                            let (waited, warn) = ctx.active.watch(
                                &entry.vif.id,
                                me.clone(),
                                ctx.options.active_warning,
                            );
                            if warn {
                                ctx.metrics.ports_stuck.fetch_add(1, Ordering::Relaxed);
                                ctx.metrics.count_error("PortNotActive");
                                event(
                                    ctx,
                                    &pod,
                                    EventType::Warning,
                                    "PortNotActive",
                                    format!(
                                        "Neutron port {} is still not ACTIVE after {} s: is the node's Neutron agent (host {}) running and the pod plugged?",
                                        entry.vif.id,
                                        waited.as_secs(),
                                        k.spec.pod_node_name
                                    ),
                                )
                                .await;
                            }
                        }
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
                    // the watcher wakes the pod when Neutron says ACTIVE; the
                    // requeue only brings the stuck-port warning in time
                    return Ok(Action::requeue(
                        ctx.options.active_warning.max(Duration::from_secs(1)),
                    ));
                }
            }
            Step::Unreadable => {
                let k = kp.as_ref().expect("plan: Unreadable has a KuryrPort");
                let why = unreadable_note(k);
                tracing::warn!(pod = %format!("{ns}/{name}"), %why, "KuryrPort left as it is");
                use kube::Resource;
                publish_event(
                    ctx,
                    &k.object_ref(&()),
                    EventType::Warning,
                    "SetUpNetwork",
                    "UnreadableVif",
                    why.clone(),
                )
                .await;
                event(ctx, &pod, EventType::Warning, "UnreadableVif", why).await;
                ctx.metrics.count_error("UnreadableVif");
                return Ok(Action::await_change());
            }
            Step::Release | Step::ReleaseStale => {
                let k = kp.take().expect("plan: Release has a KuryrPort");
                release(ctx, &kps, &k).await?;
            }
        }
    }
    Ok(Action::requeue(Duration::ZERO))
}

/// What a Warning event says about a KuryrPort with unreadable VIFs.
fn unreadable_note(kp: &KuryrPort) -> String {
    let what: Vec<String> = kp
        .status
        .iter()
        .flat_map(|s| s.unreadable.iter())
        .map(|(ifname, u)| format!("{ifname}: {}", u.error))
        .collect();
    format!(
        "KuryrPort holds a VIF kuryr-rs cannot read ({}); the pod's network is left as it is and no other pod is affected",
        what.join("; ")
    )
}

/// Whether Neutron really has no port `id` (the batched list said so).
async fn port_gone(ctx: &Context, id: &str) -> Result<bool, Error> {
    match ctx.os.neutron().get_port(id).await {
        Ok(_) => Ok(false),
        Err(e) if e.is_not_found() => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Returns a port that was never recorded: to its pool, else deleted
/// (best effort: reconciliation finds whatever this leaves).
async fn give_back(ctx: &Context, port_id: &str, node: &str) {
    let done = match &ctx.pool {
        Some(p) => p.release(port_id).await.map(|r| r.is_some()),
        None => Ok(false),
    };
    if !matches!(done, Ok(true)) {
        let _ = ctx.drivers.delete_port(port_id, Some(node), None).await;
    }
}

/// Gives back the Neutron ports of a KuryrPort's pod (to their pool, or
/// deleted; by its VIFs and, without a pool, by tag, so a port made but not
/// yet recorded goes too), then deletes the KuryrPort.
async fn release(ctx: &Context, kps: &Api<KuryrPort>, kp: &KuryrPort) -> Result<(), Error> {
    let n = ctx.os.neutron();
    let uid = &kp.spec.pod_uid;
    let node = kp.spec.pod_node_name.as_str();
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
    let mut recycled = 0;
    for id in &ids {
        ctx.active.forget(id);
        if let Some(pool) = &ctx.pool
            && let Some(verdict) = pool.release(id).await?
        {
            recycled += usize::from(verdict == pool::Recycle::Keep);
            continue;
        }
        if ctx.drivers.delete_port(id, Some(node), None).await? {
            ctx.metrics.ports_deleted.fetch_add(1, Ordering::Relaxed);
        }
    }
    let name = kp.metadata.name.clone().unwrap_or_default();
    // the ports are given back: the KuryrPort's finalizer goes now, read
    // again when something else (the garbage collector marking it deleted,
    // a status patch) changed it meanwhile
    let mut meta = kp.metadata.clone();
    for attempt in 0.. {
        if !plan::kp_has_finalizer(&meta) {
            break;
        }
        match set_finalizers(kps, &meta, without(&meta, KURYRPORT_FINALIZER)).await {
            Ok(Some(_)) => break,
            Ok(None) => return Ok(()),
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 && attempt < 5 => {
                match kps.get_opt(&name).await? {
                    Some(fresh) => meta = fresh.metadata,
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    }
    match kps.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(kuryrport = %name, pod_uid = %uid, ports = ids.len(), recycled, "released");
    Ok(())
}

/// The annotation the kubelet puts on the API mirror of a static pod.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// KuryrPorts whose pod no longer exists (its finalizer removed by hand, or
/// force-deleted; Kubernetes' garbage collector then deletes the KuryrPort,
/// which its own finalizer holds): their ports are given back as for a
/// deleted pod and the KuryrPort goes. Only KuryrPorts whose ports are this
/// cluster's, or that have none, are touched. `prev` as for the ports'
/// reconciliation: a periodic pass acts only on KuryrPorts found orphaned
/// twice in a row. Answers how many were released.
pub(crate) async fn release_orphans(
    ctx: &Context,
    prev: Option<&mut std::collections::BTreeSet<String>>,
) -> Result<usize, Error> {
    let all: Api<KuryrPort> = Api::all(ctx.kube.clone());
    let kps = all.list(&ListParams::default()).await?.items;
    // pods after KuryrPorts: a KuryrPort listed has its pod listed too
    let pods: Api<Pod> = Api::all(ctx.kube.clone());
    let live: std::collections::BTreeSet<String> = pods
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect();
    let orphans: Vec<&KuryrPort> = kps
        .iter()
        .filter(|k| !live.contains(&k.spec.pod_uid))
        .collect();
    if orphans.is_empty() {
        if let Some(prev) = prev {
            prev.clear();
        }
        return Ok(0);
    }
    let ours: std::collections::BTreeSet<String> = ctx
        .os
        .neutron()
        .list_ports(
            &Query::new()
                .tags([plan::cluster_tag(&ctx.cluster_id)])
                .fields(["id", "network_id"]),
        )
        .await?
        .into_iter()
        .map(|p| p.id)
        .collect();
    // a KuryrPort is this cluster's to release when it names no port, one
    // of its ports is tagged ours, or every port it names is gone (a
    // release that deleted the ports and then lost a race for the
    // KuryrPort's finalizer with the garbage collector)
    let mut found = std::collections::BTreeSet::new();
    for k in &orphans {
        let ids: Vec<&str> = k.status.iter().flat_map(|s| s.port_ids()).collect();
        let mine = ids.is_empty()
            || ids.iter().any(|id| ours.contains(*id))
            || all_gone(ctx, &ids).await?;
        if mine && let Some(uid) = &k.metadata.uid {
            found.insert(uid.clone());
        }
    }
    let act: std::collections::BTreeSet<String> = match prev {
        Some(prev) => {
            let twice = found.intersection(prev).cloned().collect();
            *prev = found;
            twice
        }
        None => found,
    };
    let mut released = 0;
    for kp in orphans
        .into_iter()
        .filter(|k| k.metadata.uid.as_ref().is_some_and(|u| act.contains(u)))
    {
        let ns = kp.metadata.namespace.clone().unwrap_or_default();
        let name = kp.metadata.name.clone().unwrap_or_default();
        tracing::warn!(kuryrport = %format!("{ns}/{name}"), pod_uid = %kp.spec.pod_uid, "the KuryrPort's pod is gone: releasing its ports");
        let kps: Api<KuryrPort> = Api::namespaced(ctx.kube.clone(), &ns);
        release(ctx, &kps, kp).await?;
        released += 1;
    }
    Ok(released)
}

/// Whether Neutron has none of the ports `ids`.
async fn all_gone(ctx: &Context, ids: &[&str]) -> Result<bool, Error> {
    for id in ids {
        if !port_gone(ctx, id).await? {
            return Ok(false);
        }
    }
    Ok(true)
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
