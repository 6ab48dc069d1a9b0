//! Port pools against the stack's real kube-apiserver and Neutron: a node's
//! pool is filled in bulk before its first pod, pods take pool ports, a
//! deleted pod's port goes back to the pool (not deleted), a restarted
//! controller rebuilds its pools from Neutron, and leaked ports are found
//! (reported in a dry run, deleted otherwise), including one a crash left
//! untagged.
#![cfg(feature = "stack")]

mod common;

use common::{Harness, start};
use kuryr_controller::pool::FREE_PORT_NAME;
use kuryr_controller::{Options, plan, startup};
use kuryr_openstack::types::neutron::PortCreate;
use kuryr_stack_tests::{finally, unique_name, wait_until};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

const POOL_CONF: &str = "[kubernetes]\nvif_pool_driver = neutron\n[vif_pool]\nports_pool_min = 3\nports_pool_batch = 4\nports_pool_max = 0\nports_pool_update_frequency = 1\n";

fn options(h: &Harness) -> Options {
    Options {
        gc_interval: Duration::ZERO,
        pool_cool_down: Some(Duration::from_secs(1)),
        prefill_nodes: Some(format!("kuryr-test={}", h.label)),
        ..Default::default()
    }
}

#[tokio::test]
async fn pools_fill_lend_take_back_and_survive_a_restart() -> anyhow::Result<()> {
    let h = Harness::new("pool", "10.237.0.0/24").await?;
    let node = unique_name("kuryr-pool-node-", 50);
    let body = async {
        h.make_node(&node, "192.0.2.10").await?;
        let ctx = h.context(POOL_CONF, options(&h)).await?;
        let ctl = start(ctx.clone());

        // the node's pool fills before any pod: one batch of 4 (min 3)
        let pre = wait_until(
            "pool pre-filled",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || async {
                let ports = h.cluster_ports().await?;
                Ok((ports.len() >= 4).then_some(ports))
            },
        )
        .await?;
        assert_eq!(pre.len(), 4, "one batch of ports_pool_batch");
        for p in &pre {
            assert_eq!(p.name, FREE_PORT_NAME);
            assert_eq!(p.binding_host_id, node);
            assert!(p.device_id.is_empty());
            assert!(
                p.tags.contains(&"kuryr-rs-test".to_string()),
                "{:?}",
                p.tags
            );
            assert_eq!(p.description, plan::cluster_tag(&h.cluster));
            assert_eq!(p.security_groups, ctx.settings.security_groups);
        }
        let pre_ids: BTreeSet<String> = pre.iter().map(|p| p.id.clone()).collect();

        // two pods take ports of the pool
        let names = ["web-0".to_string(), "web-1".to_string()];
        let uids = h.create_pods(&names, &node).await?;
        let mut lent = Vec::new();
        for (name, uid) in names.iter().zip(&uids) {
            let vif = h.vif_of(name, uid, Duration::from_secs(30)).await?;
            assert!(pre_ids.contains(&vif.id), "{name} got a pool port");
            assert!(!vif.active, "no agent on this node: never ACTIVE");
            lent.push(vif.id);
        }
        assert_ne!(lent[0], lent[1]);
        // two left, under the minimum: another batch of 4
        wait_until(
            "pool refilled",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || async { Ok((h.cluster_ports().await?.len() >= 8).then_some(())) },
        )
        .await?;

        // a deleted pod's port goes back to the pool, free again after the
        // cool-down (it never went ACTIVE, so Neutron shows it DOWN)
        h.delete_pod("web-0").await?;
        h.wait_pod_gone("web-0", Duration::from_secs(30)).await?;
        let pool = ctx.pool.clone().expect("pool driver on");
        wait_until(
            "web-0's port free again",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async {
                let sizes = pool.sizes();
                Ok(sizes
                    .iter()
                    .any(|(k, free, cooling, used)| {
                        k.host == node && *free == 7 && *cooling == 0 && *used == 1
                    })
                    .then_some(()))
            },
        )
        .await?;
        let back = h.os.neutron().get_port(&lent[0]).await?;
        assert_eq!(back.name, FREE_PORT_NAME, "still a pool port");
        assert!(ctx.metrics.render().contains("kuryr_pool_ports{"));
        ctl.stop().await;

        // a new controller rebuilds the pools from Neutron: nothing made
        let before: BTreeSet<String> = h.cluster_ports().await?.into_iter().map(|p| p.id).collect();
        let ctx2 = h.context(POOL_CONF, options(&h)).await?;
        let r = startup::reconcile(&ctx2, None).await?;
        assert_eq!((r.adopted, r.in_use, r.leaked.len()), (7, 1, 0), "{r:?}");
        let ctl2 = start(ctx2.clone());
        let uid = h.create_pods(&["web-2".to_string()], &node).await?;
        let vif = h.vif_of("web-2", &uid[0], Duration::from_secs(30)).await?;
        assert!(before.contains(&vif.id), "an adopted port");
        // web-1's port (in use across the restart) goes back to the pool too
        h.delete_pod("web-1").await?;
        h.wait_pod_gone("web-1", Duration::from_secs(30)).await?;
        assert!(h.os.neutron().get_port(&lent[1]).await.is_ok());
        ctl2.stop().await;
        let after: BTreeSet<String> = h.cluster_ports().await?.into_iter().map(|p| p.id).collect();
        assert_eq!(after, before, "no port made or lost");

        // leaks: a port of a pod that no longer exists, and a pool port a
        // crash left untagged (found by its description)
        let n = h.os.neutron();
        let mut body = ctx2.drivers.port_body(Some("0000-gone-pod"), &node);
        body.name = Some("kuryr-0000-gone-pod".into());
        let mut tags = ctx2.drivers.tags.clone();
        tags.push(plan::pod_tag("0000-gone-pod"));
        let leaked = n.create_port_tagged(&body, &tags).await?;
        let untagged = n
            .create_port(&PortCreate {
                tags: None,
                ..ctx2.drivers.port_body(None, &node)
            })
            .await?;
        assert!(untagged.tags.is_empty());
        let dry = h
            .context(
                POOL_CONF,
                Options {
                    gc_dry_run: true,
                    ..options(&h)
                },
            )
            .await?;
        let r = startup::reconcile(&dry, None).await?;
        assert_eq!(r.leaked, vec![leaked.id.clone()], "{r:?}");
        assert_eq!((r.removed, r.retagged), (0, 1), "{r:?}");
        assert!(
            n.get_port(&leaked.id).await.is_ok(),
            "dry run deletes nothing"
        );
        assert_eq!(dry.metrics.leaked_found.load(Relaxed), 1);
        let real = h.context(POOL_CONF, options(&h)).await?;
        let r = startup::reconcile(&real, None).await?;
        assert_eq!((r.removed, r.leaked.len()), (1, 1), "{r:?}");
        assert!(n.get_port(&leaked.id).await.unwrap_err().is_not_found());
        assert_eq!(real.metrics.leaked_removed.load(Relaxed), 1);
        assert!(
            real.metrics
                .render()
                .contains("kuryr_leaked_ports_removed_total 1")
        );
        assert!(
            real.pool.as_ref().unwrap().knows(&untagged.id),
            "the retagged port is pooled"
        );
        anyhow::Ok(())
    };
    finally(body, h.cleanup()).await
}

/// Two clusters' controllers on one project and subnet: each cluster's
/// identity is its own (by default the UID of its kube-system namespace), and
/// a controller's reconciliation neither deletes, adopts nor retags the
/// other's ports, free pool ports included. With one shared identity (the
/// fixed default `kuryr` of before), the second cluster's reconciliation
/// classified the first's free pool ports as its own: adopted into its
/// pools, or deleted as leaks.
#[tokio::test]
async fn two_clusters_on_one_project_leave_each_other_alone() -> anyhow::Result<()> {
    let h = Harness::new("twoc", "10.226.0.0/24").await?;
    let node = unique_name("kuryr-twoc-node-", 50);
    let other = unique_name("c", 30);
    let body = async {
        // the default identity: kube-system's UID, the same at every call
        let id = kuryr_crds::cluster_identity(&h.kube).await?;
        let ks: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(h.kube.clone());
        let uid = ks.get("kube-system").await?.metadata.uid;
        assert!(id.is_some());
        assert_eq!(id, uid);
        assert_eq!(id, kuryr_crds::cluster_identity(&h.kube).await?);

        h.make_node(&node, "192.0.2.11").await?;
        let ctx = h.context(POOL_CONF, options(&h)).await?;
        let ctl = start(ctx.clone());
        let names = ["web-0".to_string()];
        let uids = h.create_pods(&names, &node).await?;
        let used = h.vif_of("web-0", &uids[0], Duration::from_secs(60)).await?;
        let mine = wait_until(
            "pool refilled beside the pod",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || async {
                let ports = h.cluster_ports().await?;
                let free = ports.iter().filter(|p| p.name == FREE_PORT_NAME).count();
                Ok((free >= 3).then_some(ports))
            },
        )
        .await?;
        ctl.stop().await;
        let snapshot = |ports: &[kuryr_openstack::types::neutron::Port]| {
            let mut v: Vec<(String, String, String, Vec<String>)> = ports
                .iter()
                .map(|p| {
                    let mut t = p.tags.clone();
                    t.sort();
                    (p.id.clone(), p.name.clone(), p.device_id.clone(), t)
                })
                .collect();
            v.sort();
            v
        };
        let before = snapshot(&mine);

        // the other cluster: same project, network and subnet, same pod
        // selector, pools on; its start-up and a periodic pass
        let cfg = h.config(&format!("{POOL_CONF}[node_port]\nenabled = false\n"))?;
        let ctx_b = std::sync::Arc::new(
            kuryr_controller::Context::new(
                h.kube.clone(),
                h.os.clone(),
                &cfg,
                other.clone(),
                Options {
                    pod_selector: Some(format!("kuryr-test={}", h.label)),
                    ..options(&h)
                },
            )
            .await?,
        );
        let first = startup::reconcile(&ctx_b, None).await?;
        let mut prev = BTreeSet::new();
        startup::reconcile(&ctx_b, Some(&mut prev)).await?;
        let second = startup::reconcile(&ctx_b, Some(&mut prev)).await?;
        for r in [&first, &second] {
            assert_eq!(
                r,
                &startup::Report::default(),
                "the other cluster saw nothing of this one"
            );
        }
        assert_eq!(
            snapshot(&h.cluster_ports().await?),
            before,
            "this cluster's ports untouched"
        );
        assert!(
            h.os.neutron().get_port(&used.id).await.is_ok(),
            "the pod's port is still there"
        );
        let theirs =
            h.os.neutron()
                .list_ports(&kuryr_openstack::Query::new().tags([plan::cluster_tag(&other)]))
                .await?;
        assert!(theirs.is_empty(), "{theirs:?}");
        anyhow::Ok(())
    };
    finally(body, async {
        let r = h.cleanup().await;
        // the other cluster's groups, if it made any
        if let Ok(gs) = h
            .os
            .neutron()
            .list_security_groups(&kuryr_openstack::Query::new().tags([plan::cluster_tag(&other)]))
            .await
        {
            for g in gs {
                let _ = h.os.neutron().delete_security_group(&g.id).await;
            }
        }
        r
    })
    .await
}
