//! Smoke tests of the stack's Kubernetes control plane through kube-rs:
//! namespaces, pods, a CRD with a status subresource, and watches.
//! Need `stack/stack up --k8s`.
#![cfg(feature = "stack")]

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::{finally, unique_name, wait_until};
use serde_json::json;
use std::time::Duration;

/// A client from the stack's kubeconfig (`KUBECONFIG` in its env file).
async fn client() -> anyhow::Result<(StackEnv, Client)> {
    let env = StackEnv::load()?;
    env.require("k8s")?;
    let path = env.get("KUBECONFIG")?;
    let kc =
        kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {path}"))?;
    let cfg = Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok((env, Client::try_from(cfg)?))
}

/// A namespace deleted again when the test ends (also on failure).
struct TestNamespace {
    api: Api<Namespace>,
    name: String,
}

impl TestNamespace {
    async fn new(client: &Client) -> anyhow::Result<Self> {
        let api: Api<Namespace> = Api::all(client.clone());
        let name = unique_name("smoke-", 40);
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        api.create(&PostParams::default(), &ns).await?;
        Ok(Self { api, name })
    }

    async fn delete(&self) -> anyhow::Result<()> {
        self.api
            .delete(&self.name, &DeleteParams::default())
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn namespace_and_pod_are_created_and_watched() -> anyhow::Result<()> {
    let (env, client) = client().await?;
    let image = env
        .get("KURYR_STACK_TEST_IMAGE")
        .unwrap_or("localhost/kuryr-test/busybox:latest")
        .to_owned();
    let info = client.apiserver_version().await?;
    assert_eq!(info.major, "1");
    let ns = TestNamespace::new(&client).await?;
    let body = async {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
        // start watching before the pod exists: the watch must deliver it
        let mut events = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "smoke", "labels": {"app": "smoke"}},
            "spec": {"containers": [{"name": "c", "image": image,
                                      "command": ["sleep", "3600"]}]}}))?;
        let created = pods.create(&PostParams::default(), &pod).await?;
        let uid = created.metadata.uid.clone().context("pod without uid")?;
        let seen = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(ev) = events.try_next().await? {
                if let Event::Apply(p) | Event::InitApply(p) = ev
                    && p.metadata.uid.as_deref() == Some(uid.as_str())
                {
                    return anyhow::Ok(p);
                }
            }
            anyhow::bail!("watch ended")
        })
        .await
        .context("the pod watch did not deliver the new pod in 30 s")??;
        assert_eq!(seen.metadata.name.as_deref(), Some("smoke"));
        // the control plane's service account controller filled the namespace
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &ns.name);
        wait_until(
            "default service account",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async { Ok(sa.get_opt("default").await?.map(|_| ())) },
        )
        .await?;
        pods.delete(
            "smoke",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await?;
        anyhow::Ok(())
    };
    finally(body, ns.delete()).await
}

#[tokio::test]
async fn crd_with_status_subresource_is_served_and_watched() -> anyhow::Result<()> {
    let (_env, client) = client().await?;
    let group = "smoke.kuryr.test";
    let crd_name = format!("widgets.{group}");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": crd_name},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wdg"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}}}]}}))?;
    // another run may have left it (same name): apply instead of create
    crds.patch(
        &crd_name,
        &PatchParams::apply("kuryr-stack-smoke").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    wait_until(
        "CRD established",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let c = crds.get(&crd_name).await?;
            let ok = c
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok(ok.then_some(()))
        },
    )
    .await?;

    let ns = TestNamespace::new(&client).await?;
    let body = async {
        let gvk = GroupVersionKind::gvk(group, "v1", "Widget");
        let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &ar);
        let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": format!("{group}/v1"), "kind": "Widget",
            "metadata": {"name": "w1"}, "spec": {"size": 3}, "status": {"ready": true}}))?;
        let created = api.create(&PostParams::default(), &obj).await?;
        // with a status subresource, status in a create is dropped
        assert!(
            created.data.get("status").is_none(),
            "status kept on create: {:?}",
            created.data
        );
        api.patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await?;
        // a spec change through the main resource does not touch status
        api.patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}, "status": {"ready": false}})),
        )
        .await?;
        let got = api.get("w1").await?;
        assert_eq!(got.data["spec"]["size"], 5);
        assert_eq!(got.data["status"]["ready"], true);
        let ready_seen = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(ev) = events.try_next().await? {
                if let Event::Apply(o) | Event::InitApply(o) = ev
                    && o.data["status"]["ready"] == true
                {
                    return anyhow::Ok(o);
                }
            }
            anyhow::bail!("watch ended")
        })
        .await
        .context("the watch did not deliver the status update in 30 s")??;
        assert_eq!(ready_seen.metadata.name.as_deref(), Some("w1"));
        api.delete("w1", &DeleteParams::default()).await?;
        anyhow::Ok(())
    };
    finally(body, async {
        ns.delete().await?;
        crds.delete(&crd_name, &DeleteParams::default()).await?;
        Ok(())
    })
    .await
}
