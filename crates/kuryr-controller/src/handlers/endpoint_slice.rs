//! The endpoint-slice handler (kuryr-kubernetes' `endpoints`, reading
//! `discovery.k8s.io/v1` EndpointSlices instead of core Endpoints): the
//! KuryrLoadBalancer of a Service carries a copy of all of its
//! EndpointSlices (label `kubernetes.io/service-name`), which the
//! load-balancer handler turns into pool members (ready endpoints only).
//! Works for Services without a selector too (slices the user manages).

use crate::services::spec;
use crate::{Context, Error};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kuryr_crds::KuryrLoadBalancer;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(lbs) = ctx.lb.clone() else {
        return Ok(Action::await_change());
    };
    // only the Services the service handler serves
    if svc.metadata.deletion_timestamp.is_some() || spec::klb_spec(&svc, &lbs.service).is_err() {
        return Ok(Action::await_change());
    }
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    if !super::namespace_selected(&ctx, &ns).await? {
        return Ok(Action::await_change());
    }
    let name = svc.metadata.name.clone().unwrap_or_default();
    let klbs: Api<KuryrLoadBalancer> = Api::namespaced(ctx.kube.clone(), &ns);
    let Some(klb) = klbs.get_opt(&name).await? else {
        // not made yet: its creation wakes this Service
        return Ok(Action::await_change());
    };
    if klb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.kube.clone(), &ns);
    let list = slices
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={name}")))
        .await?
        .items;
    let want = spec::slices(&list);
    if klb.spec.endpoint_slices != want {
        klbs.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"endpointSlices": want}})),
        )
        .await?;
        let ready: usize = want
            .iter()
            .flat_map(|s| &s.endpoints)
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .count();
        tracing::info!(service = %format!("{ns}/{name}"), slices = want.len(), ready_endpoints = ready, "endpoints recorded");
    }
    Ok(Action::await_change())
}

fn error_policy(svc: Arc<Service>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(service = %super::qualified(&svc.metadata), error = %err, "endpoints not recorded yet; retrying in 2 s");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the endpoint-slice handler until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let svcs: Api<Service> = Api::all(ctx.kube.clone());
    let slices: Api<EndpointSlice> = Api::all(ctx.kube.clone());
    let klbs: Api<KuryrLoadBalancer> = Api::all(ctx.kube.clone());
    Controller::new(svcs, watcher::Config::default())
        .watches(
            slices,
            watcher::Config::default().labels(SERVICE_NAME_LABEL),
            |s: EndpointSlice| {
                let ns = s.metadata.namespace.clone()?;
                let svc = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
                Some(ObjectRef::<Service>::new(&svc).within(&ns))
            },
        )
        // a KuryrLoadBalancer appearing (made by the service handler) wakes its Service
        .owns(klbs, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "endpoint slice reconcile");
            }
        })
        .await;
}
