//! The pod handler against the stack's real kube-apiserver and Neutron:
//! pods get ports and KuryrPorts, a pod made again under the same name gets
//! a new port, a port deleted behind the controller's back is replaced, a
//! pod deleted while the controller is down is released after its restart,
//! a KuryrPort whose pod vanished without its finalizer is released, a
//! network changed in Neutron reaches new pods' VIFs, and nothing is left
//! in Neutron at the end.
#![cfg(feature = "stack")]

mod common;

use common::{Harness, NODE, start};
use kube::api::ListParams;
use kuryr_controller::{Options, plan};
use kuryr_stack_tests::{finally, wait_until};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn pods_get_ports_and_give_them_back() -> anyhow::Result<()> {
    let h = Harness::new("ctl", "10.236.0.0/24").await?;
    let body = async {
        let ctx = h.context("", Options::default()).await?;
        let ctl = start(ctx.clone());
        let n = h.os.neutron();

        // three pods, three ports with distinct addresses, tagged and owned by pod UID
        let names: Vec<String> = ["web-0", "web-1", "web-2"].map(String::from).to_vec();
        let uids = h.create_pods(&names, NODE).await?;
        let mut ips = Vec::new();
        for (name, uid) in names.iter().zip(&uids) {
            let vif = h.vif_of(name, uid, WAIT).await?;
            let port = n.get_port(&vif.id).await?;
            assert_eq!(port.device_id, *uid);
            assert_eq!(port.binding_host_id, NODE);
            assert!(
                port.tags.contains(&plan::pod_tag(uid))
                    && port.tags.contains(&plan::cluster_tag(&h.cluster)),
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
            let p = h.pods.get(name).await?;
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
        let old = h.vif_of("web-1", &uids[1], WAIT).await?;
        n.delete_port(&old.id).await?;
        let new = wait_until(
            "web-1 gets a new port",
            WAIT,
            Duration::from_millis(300),
            || async {
                let v = h
                    .kps
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
        let before = h.vif_of("web-0", &uids[0], WAIT).await?;
        h.delete_pod("web-0").await?;
        h.wait_pod_gone("web-0", WAIT).await?;
        assert!(
            n.get_port(&before.id).await.unwrap_err().is_not_found(),
            "the deleted pod's port is gone"
        );
        let uid0 = h.create_pods(&names[..1], NODE).await?.remove(0);
        assert_ne!(uid0, uids[0]);
        let after = h.vif_of("web-0", &uid0, WAIT).await?;
        assert_ne!(after.id, before.id);

        // a pod deleted while the controller is down waits for it (finalizer)
        ctl.stop().await;
        let v2 = h.vif_of("web-2", &uids[2], WAIT).await?;
        h.delete_pod("web-2").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            h.pods.get_opt("web-2").await?.is_some(),
            "held by the finalizer while no controller runs"
        );
        let ctl = start(ctx.clone());
        h.wait_pod_gone("web-2", WAIT).await?;
        assert!(n.get_port(&v2.id).await.unwrap_err().is_not_found());

        // everything goes: no port of this cluster is left in Neutron
        h.delete_all_pods(WAIT).await?;
        assert!(h.kps.list(&ListParams::default()).await?.items.is_empty());
        let left = h.cluster_ports().await?;
        assert!(
            left.is_empty(),
            "leaked ports: {:?}",
            left.iter().map(|p| &p.id).collect::<Vec<_>>()
        );
        ctl.stop().await;
        let m = &ctx.metrics;
        assert!(
            m.ports_created.load(Relaxed) >= 5,
            "3 pods, 1 replacement, 1 recreated pod"
        );
        assert_eq!(m.ports_replaced.load(Relaxed), 1);
        assert!(m.ports_deleted.load(Relaxed) >= 4);
        assert!(m.render().contains("kuryr_pod_vif_ready_seconds_count"));
        anyhow::Ok(())
    };
    finally(body, h.cleanup()).await
}

/// A pod whose finalizer is removed by hand and that is then force-deleted
/// leaves its KuryrPort behind without anyone to release it. The KuryrPort
/// is owned by its pod, so Kubernetes' garbage collector deletes it (its
/// finalizer holding it), and the controller's periodic reconciliation
/// releases its port and lets it go.
#[tokio::test]
async fn a_kuryrport_whose_pod_vanished_is_released() -> anyhow::Result<()> {
    let h = Harness::new("orphan", "10.239.0.0/24").await?;
    let body = async {
        let ctx = h
            .context(
                "",
                Options {
                    gc_interval: Duration::from_secs(2),
                    ..Default::default()
                },
            )
            .await?;
        let ctl = start(ctx.clone());
        let uid = h
            .create_pods(&["lost-0".to_string()], NODE)
            .await?
            .remove(0);
        let vif = h.vif_of("lost-0", &uid, WAIT).await?;
        let kp = h.kps.get("lost-0").await?;
        let owner = kp.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owner.len(), 1, "{owner:?}");
        assert_eq!(
            (owner[0].kind.as_str(), owner[0].uid.as_str()),
            ("Pod", uid.as_str())
        );
        assert!(!kp.spec.pod_static);

        // the pod goes behind the controller's back
        h.pods
            .patch(
                "lost-0",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
            )
            .await?;
        h.pods
            .delete(
                "lost-0",
                &kube::api::DeleteParams::default().grace_period(0),
            )
            .await?;
        wait_until(
            "the KuryrPort released and gone",
            WAIT,
            Duration::from_millis(300),
            || async { Ok(h.kps.get_opt("lost-0").await?.is_none().then_some(())) },
        )
        .await?;
        assert!(
            h.port_gone(&vif.id).await?,
            "the orphan's port was deleted (no pool)"
        );
        ctl.stop().await;
        assert!(h.cluster_ports().await?.is_empty());
        anyhow::Ok(())
    };
    finally(body, h.cleanup()).await
}

/// Review item 6 (stale caches): the pod network's MTU and a subnet's DNS
/// servers changed in Neutron while the controller runs reach the VIF of
/// a pod made afterwards, without a restart; the pod made before keeps
/// what it was plugged with.
#[tokio::test]
async fn a_network_changed_in_neutron_reaches_the_vifs_of_new_pods() -> anyhow::Result<()> {
    use kuryr_openstack::types::neutron::{NetworkUpdate, SubnetUpdate};
    let h = Harness::new("ctlnet", "10.236.3.0/24").await?;
    let body = async {
        let options = Options {
            net_refresh: Duration::from_millis(500),
            ..Default::default()
        };
        let ctx = h.context("", options).await?;
        let ctl = start(ctx.clone());
        let n = h.os.neutron();
        let before_mtu = ctx.pod_net.get().network.mtu;
        let uids = h.create_pods(&["net-0".to_string()], NODE).await?;
        let v0 = h.vif_of("net-0", &uids[0], WAIT).await?;
        assert_eq!(v0.network.mtu, before_mtu);

        let mtu = before_mtu.unwrap_or(1500) - 58;
        n.update_network(
            &h.net.id,
            &NetworkUpdate {
                mtu: Some(mtu),
                ..Default::default()
            },
        )
        .await?;
        n.update_subnet(
            &h.subnet.id,
            &SubnetUpdate {
                dns_nameservers: Some(vec!["10.236.3.53".into()]),
                ..Default::default()
            },
        )
        .await?;
        // the controller's next read of the network (the event a new VIF
        // depends on), bounded by a few refresh intervals
        wait_until(
            "the controller sees the new MTU and DNS server",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async {
                let net = ctx.pod_net.get();
                let dns = net
                    .subnets
                    .iter()
                    .any(|s| s.dns_nameservers == ["10.236.3.53"]);
                Ok((net.network.mtu == Some(mtu) && dns).then_some(()))
            },
        )
        .await?;
        let uids = h.create_pods(&["net-1".to_string()], NODE).await?;
        let v1 = h.vif_of("net-1", &uids[0], WAIT).await?;
        assert_eq!(
            v1.network.mtu,
            Some(mtu),
            "the new pod's VIF has the new MTU"
        );
        assert_eq!(v1.network.subnets[0].dns, vec!["10.236.3.53".to_string()]);
        let v0_again = h
            .kps
            .get("net-0")
            .await?
            .status
            .and_then(|s| s.default_vif().cloned())
            .expect("net-0 keeps its VIF");
        assert_eq!(
            v0_again.network.mtu, before_mtu,
            "a running pod keeps what it was plugged with"
        );
        h.delete_all_pods(WAIT).await?;
        ctl.stop().await;
        anyhow::Ok(())
    };
    finally(body, h.cleanup()).await
}
