//! The service handler (kuryr-kubernetes' `service`): a Service of type
//! ClusterIP or LoadBalancer gets a KuryrLoadBalancer of its name, owned by
//! it, whose spec follows the Service (VIP = ClusterIP, ports, timeouts
//! from annotations); a Service kuryr-rs does not serve (headless,
//! ExternalName, NodePort) gets a Warning event saying why.
//!
//! Unlike kuryr-kubernetes, the Service itself gets no finalizer: deleting
//! it is never held up by Octavia (Kubernetes' conformance tests expect a
//! deleted Service, or a deleted collection, to be gone at once). The
//! KuryrLoadBalancer it owns is deleted by the garbage collector, and that
//! object's own finalizer keeps it until the load-balancer handler has
//! deleted the load balancer. A `kuryr.openstack.org/service-finalizer`
//! left by kuryr-kubernetes or an earlier kuryr-rs is taken off.

use crate::handlers::{set_finalizers, without};
use crate::services::spec::{self, Skip};
use crate::{Context, Error};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::Resource;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kuryr_crds::{KLB_FINALIZER, KuryrLoadBalancer, SERVICE_FINALIZER};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

async fn warn(ctx: &Context, svc: &Service, reason: &str, note: String) {
    let about = svc.object_ref(&());
    crate::handlers::publish_event(
        ctx,
        &about,
        EventType::Warning,
        "SetUpLoadBalancer",
        reason,
        note,
    )
    .await;
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(lbs) = ctx.lb.clone() else {
        return Ok(Action::await_change());
    };
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    // `--namespace-selector`: another controller's namespaces (the
    // `kubernetes` Service too) are left alone
    if !super::namespace_selected(&ctx, &ns).await? {
        return Ok(Action::await_change());
    }
    let name = svc.metadata.name.clone().unwrap_or_default();
    let svcs: Api<Service> = Api::namespaced(ctx.kube.clone(), &ns);
    let klbs: Api<KuryrLoadBalancer> = Api::namespaced(ctx.kube.clone(), &ns);
    // a finalizer kuryr-kubernetes (or an earlier kuryr-rs) put on goes:
    // like every Service's, the KuryrLoadBalancer it owns is the garbage
    // collector's to delete
    if crate::plan::has_finalizer(&svc.metadata, SERVICE_FINALIZER) {
        let left = set_finalizers(
            &svcs,
            &svc.metadata,
            without(&svc.metadata, SERVICE_FINALIZER),
        )
        .await?;
        tracing::info!(service = %format!("{ns}/{name}"), "legacy service finalizer removed");
        if left.is_none() {
            return Ok(Action::await_change());
        }
    }
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let want = match spec::klb_spec(&svc, &lbs.service) {
        Ok(w) => w,
        // not allocated yet: the allocation brings the Service back
        Err(Skip::NoClusterIp) => return Ok(Action::await_change()),
        Err(skip) => {
            // no longer one of ours (type changed): its KuryrLoadBalancer
            // goes, and with it the load balancer
            if klbs.get_opt(&name).await?.is_some() {
                match klbs.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            warn(&ctx, &svc, "KuryrServiceSkipped", skip.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    match klbs.get_opt(&name).await? {
        None => {
            // The watch cache can lag behind the API server (in a
            // conformance run a Service's deletion never reached it, and
            // every later pass made its KuryrLoadBalancer again): before
            // making one, the Service is read fresh.
            match svcs.get_opt(&name).await? {
                Some(fresh) if fresh.metadata.deletion_timestamp.is_none() => {}
                _ => return Ok(Action::await_change()),
            }
            let klb = KuryrLoadBalancer {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    finalizers: Some(vec![KLB_FINALIZER.into()]),
                    owner_references: Some(vec![
                        svc.controller_owner_ref(&())
                            .expect("a Service from the API server has a uid"),
                    ]),
                    ..Default::default()
                },
                spec: want,
                status: None,
            };
            match klbs.create(&PostParams::default(), &klb).await {
                Ok(_) => {
                    tracing::info!(service = %format!("{ns}/{name}"), "KuryrLoadBalancer created")
                }
                // made meanwhile (another pass): the next pass compares
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(have) if spec::service_part_differs(&have.spec, &want) => {
            // everything but the endpoint slices, which have their handler
            let mut v = serde_json::to_value(&want).expect("a spec always serialises");
            if let Some(m) = v.as_object_mut() {
                m.remove("endpointSlices");
            }
            klbs.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": v})),
            )
            .await?;
            tracing::info!(service = %format!("{ns}/{name}"), "KuryrLoadBalancer spec updated");
        }
        Some(_) => {}
    }
    Ok(Action::await_change())
}

fn error_policy(svc: Arc<Service>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(service = %super::qualified(&svc.metadata), error = %err, "service not handled yet; retrying in 5 s");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the service handler until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let svcs: Api<Service> = Api::all(ctx.kube.clone());
    let klbs: Api<KuryrLoadBalancer> = Api::all(ctx.kube.clone());
    Controller::new(svcs, watcher::Config::default())
        // a KuryrLoadBalancer changing or going wakes its Service
        .owns(klbs, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "service reconcile");
            }
        })
        .await;
}
