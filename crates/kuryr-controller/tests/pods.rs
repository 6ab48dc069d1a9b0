//! The pod handler against the stack's real kube-apiserver and Neutron:
//! pods get ports and KuryrPorts, a pod made again under the same name gets
//! a new port, a port deleted behind the controller's back is replaced, a
//! pod deleted while the controller is down is released after its restart,
//! and nothing is left in Neutron at the end.
#![cfg(feature = "stack")]

mod common;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use kuryr_config::KuryrConfig;
use kuryr_controller::{Context, plan};
use kuryr_crds::KuryrPort;
use kuryr_openstack::types::neutron::{NetworkCreate, SubnetCreate};
use kuryr_openstack::{CloudConfig, Query};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::{finally, unique_name, wait_until};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

use common::NODE;

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start(ctx: Arc<Context>) -> Running {
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(kuryr_controller::run(ctx, async {
        let _ = rx.await;
    }));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn pod(name: &str, label: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kuryr-test": label}},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 0,
                 "tolerations": [{"operator": "Exists"}],
                 "containers": [{"name": "c", "image": "localhost/kuryr-test/busybox:latest", "command": ["sleep", "3600"]}]}}))?)
}

/// The KuryrPort of `name` with a VIF, for the pod with `uid`.
async fn vif_of(kps: &Api<KuryrPort>, name: &str, uid: &str) -> anyhow::Result<kuryr_crds::Vif> {
    wait_until(
        &format!("KuryrPort {name} with a VIF"),
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            Ok(kps
                .get_opt(name)
                .await?
                .filter(|k| k.spec.pod_uid == uid)
                .and_then(|k| k.status)
                .and_then(|s| s.default_vif().cloned()))
        },
    )
    .await
}

#[tokio::test]
async fn pods_get_ports_and_give_them_back() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("kuryr_controller=info")
        .try_init();
    let env = StackEnv::load()?;
    env.require("k8s")?;
    env.require("openstack")?;
    let kc = kube::config::Kubeconfig::read_from(env.get("KUBECONFIG")?)?;
    let kube = Client::try_from(Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    let os = kuryr_openstack::Client::new(CloudConfig::from_vars(|k| {
        env.get(k).ok().map(str::to_owned)
    })?)?;
    kuryr_crds::install(&kube).await?;
    common::ensure_node(&kube).await?;
    let n = os.neutron();
    let net = n
        .create_network(&NetworkCreate {
            name: Some(unique_name("ctl-net-", 40)),
            ..Default::default()
        })
        .await?;
    let label = unique_name("ctl", 40);
    let cluster = unique_name("c", 30);
    let nss: Api<Namespace> = Api::all(kube.clone());
    let ns = unique_name("ctl-", 40);
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(kube.clone(), &ns);
    let kps: Api<KuryrPort> = Api::namespaced(kube.clone(), &ns);

    let body = async {
        let sub = n
            .create_subnet(&SubnetCreate {
                network_id: net.id.clone(),
                ip_version: 4,
                cidr: Some("10.236.0.0/24".into()),
                ..Default::default()
            })
            .await?;
        let conf = format!(
            "[neutron_defaults]\npod_subnet = {}\nresource_tags = kuryr-rs-test\n",
            sub.id
        );
        let (cfg, warnings) = KuryrConfig::parse(&conf, |_| None)?;
        assert!(warnings.is_empty(), "{warnings:?}");
        let ctx = Arc::new(
            Context::new(
                kube.clone(),
                os.clone(),
                &cfg,
                cluster.clone(),
                kuryr_controller::Options {
                    pod_selector: Some(format!("kuryr-test={label}")),
                    ..Default::default()
                },
            )
            .await?,
        );
        let ctl = start(ctx.clone());

        // three pods, three ports with distinct addresses, tagged and owned by pod UID
        let mut uids = Vec::new();
        for name in ["web-0", "web-1", "web-2"] {
            uids.push(
                pods.create(&PostParams::default(), &pod(name, &label)?)
                    .await?
                    .metadata
                    .uid
                    .unwrap(),
            );
        }
        let mut ips = Vec::new();
        for (name, uid) in ["web-0", "web-1", "web-2"].iter().zip(&uids) {
            let vif = vif_of(&kps, name, uid).await?;
            let port = n.get_port(&vif.id).await?;
            assert_eq!(port.device_id, *uid);
            assert_eq!(port.binding_host_id, NODE);
            assert!(
                port.tags.contains(&plan::pod_tag(uid))
                    && port.tags.contains(&plan::cluster_tag(&cluster)),
                "{:?}",
                port.tags
            );
            assert!(port.tags.contains(&"kuryr-rs-test".to_string()));
            assert_eq!(
                vif.network.subnets[0].ips,
                vec![port.first_ip().unwrap().to_owned()]
            );
            assert!(!vif.active, "a port on a node without agent is not ACTIVE");
            ips.push(port.first_ip().unwrap().to_owned());
            let p = pods.get(name).await?;
            assert!(
                p.metadata
                    .finalizers
                    .unwrap_or_default()
                    .contains(&kuryr_crds::POD_FINALIZER.to_string())
            );
        }
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 3);

        // a port deleted behind the controller's back is replaced
        let old = vif_of(&kps, "web-1", &uids[1]).await?;
        n.delete_port(&old.id).await?;
        let new = wait_until(
            "web-1 gets a new port",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || async {
                let v = kps
                    .get("web-1")
                    .await?
                    .status
                    .and_then(|s| s.default_vif().cloned());
                Ok(v.filter(|v| v.id != old.id))
            },
        )
        .await?;
        assert!(n.get_port(&new.id).await.is_ok());

        // same name, new pod: the old port goes, a new one comes
        let before = vif_of(&kps, "web-0", &uids[0]).await?;
        pods.delete(
            "web-0",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await?;
        wait_until(
            "web-0 deleted",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async { Ok(pods.get_opt("web-0").await?.is_none().then_some(())) },
        )
        .await?;
        assert!(
            n.get_port(&before.id).await.unwrap_err().is_not_found(),
            "the deleted pod's port is gone"
        );
        let uid0 = pods
            .create(&PostParams::default(), &pod("web-0", &label)?)
            .await?
            .metadata
            .uid
            .unwrap();
        assert_ne!(uid0, uids[0]);
        let after = vif_of(&kps, "web-0", &uid0).await?;
        assert_ne!(after.id, before.id);

        // a pod deleted while the controller is down waits for it (finalizer)
        ctl.stop().await;
        let v2 = vif_of(&kps, "web-2", &uids[2]).await?;
        pods.delete(
            "web-2",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            pods.get_opt("web-2").await?.is_some(),
            "held by the finalizer while no controller runs"
        );
        let ctl = start(ctx.clone());
        wait_until(
            "web-2 released after the restart",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async { Ok(pods.get_opt("web-2").await?.is_none().then_some(())) },
        )
        .await?;
        assert!(n.get_port(&v2.id).await.unwrap_err().is_not_found());

        // everything goes: no port of this cluster is left in Neutron
        pods.delete_collection(
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
            &ListParams::default(),
        )
        .await?;
        wait_until(
            "all pods deleted",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                Ok(pods
                    .list(&ListParams::default())
                    .await?
                    .items
                    .is_empty()
                    .then_some(()))
            },
        )
        .await?;
        assert!(kps.list(&ListParams::default()).await?.items.is_empty());
        let left = n
            .list_ports(&Query::new().tags([plan::cluster_tag(&cluster)]))
            .await?;
        assert!(
            left.is_empty(),
            "leaked ports: {:?}",
            left.iter().map(|p| &p.id).collect::<Vec<_>>()
        );
        ctl.stop().await;
        let m = &ctx.metrics;
        use std::sync::atomic::Ordering::Relaxed;
        assert!(
            m.ports_created.load(Relaxed) >= 5,
            "3 pods, 1 replacement, 1 recreated pod"
        );
        assert_eq!(m.ports_replaced.load(Relaxed), 1);
        assert!(m.ports_deleted.load(Relaxed) >= 4);
        assert!(m.render().contains("kuryr_pod_vif_ready_seconds_count"));
        anyhow::Ok(())
    };
    finally(body, async {
        // whatever a failure left: finalizers off, objects and ports deleted
        for p in pods.list(&ListParams::default()).await?.items {
            let name = p.metadata.name.unwrap_or_default();
            let _ = pods
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await;
        }
        for k in kps.list(&ListParams::default()).await?.items {
            let name = k.metadata.name.unwrap_or_default();
            let _ = kps
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await;
        }
        nss.delete(&ns, &DeleteParams::default()).await?;
        for p in n
            .list_ports(&Query::new().filter("network_id", &net.id))
            .await?
        {
            n.delete_port(&p.id).await?;
        }
        n.delete_network(&net.id).await?;
        Ok(())
    })
    .await
}
