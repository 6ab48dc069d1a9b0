//! The namespace handler (kuryr-kubernetes' `namespace`): a namespace that
//! has a pod off the host network gets a KuryrNetwork of its name (see
//! [`crate::namespace_net`]), in the Keystone project its annotation
//! `openstack.org/kuryr-project` names, else `[neutron_defaults] project`;
//! the KuryrNetwork's `nsLabels` follow the namespace's labels. The
//! KuryrNetwork goes with its namespace (the namespace controller deletes
//! it; its finalizer holds the namespace until its network is gone, see
//! [`super::kuryr_network`]).

use crate::namespace_net::{self, needs_network};
use crate::tenants::project_of;
use crate::{Context, Error};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kuryr_crds::KuryrNetwork;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let knss: Api<KuryrNetwork> = Api::namespaced(ctx.kube.clone(), &name);
    if let Some(kns) = knss.get_opt(&name).await? {
        let labels = namespace_net::labels(&ns);
        if kns.metadata.deletion_timestamp.is_none() && kns.spec.ns_labels != labels {
            let patch = namespace_net::labels_patch(&kns.spec.ns_labels, &labels);
            knss.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"nsLabels": patch}})),
            )
            .await?;
            tracing::info!(namespace = %name, "namespace labels recorded in its KuryrNetwork");
        }
        return Ok(Action::await_change());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.kube.clone(), &name);
    let lp = match &ctx.options.pod_selector {
        Some(s) => ListParams::default().labels(s),
        None => ListParams::default(),
    };
    if !pods.list(&lp).await?.items.iter().any(needs_network) {
        return Ok(Action::await_change());
    }
    let Some(settings) = &ctx.namespaces else {
        return Ok(Action::await_change());
    };
    let kns = namespace_net::kuryr_network(&ns, &project_of(&ns, &settings.project_id));
    match knss.create(&PostParams::default(), &kns).await {
        Ok(_) => {
            tracing::info!(namespace = %name, project = %kns.spec.project_id, "namespace network requested (KuryrNetwork)");
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

fn error_policy(ns: Arc<Namespace>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(namespace = ns.metadata.name.as_deref().unwrap_or(""), error = %err, "namespace network not requested yet; retrying in 2 s");
    Action::requeue(Duration::from_secs(2))
}

/// Runs the namespace handler until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let pod_cfg = match &ctx.options.pod_selector {
        Some(s) => watcher::Config::default().labels(s),
        None => watcher::Config::default(),
    };
    Controller::new(
        Api::<Namespace>::all(ctx.kube.clone()),
        watcher::Config::default(),
    )
    .watches(Api::<Pod>::all(ctx.kube.clone()), pod_cfg, |p: Pod| {
        let ns = p.metadata.namespace.clone()?;
        needs_network(&p).then(|| ObjectRef::new(&ns))
    })
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "namespace reconcile");
        }
    })
    .await;
}
