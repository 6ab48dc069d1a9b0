//! Neutron stopped (its server's processes SIGSTOPped) for 30 s in the
//! middle of a burst of pods: requests hang or fail, the controller retries
//! with back-off, and after Neutron returns every pod has exactly one port
//! (found by its pod tag: none duplicated, none leaked). And the sharpest
//! case of it, made on purpose by a proxy: a port create whose answer is
//! lost, while the request itself reaches Neutron only after the retry.
#![cfg(feature = "stack")]

mod common;

use common::{Harness, Stopped, start};
use kuryr_controller::{Options, plan};
use kuryr_openstack::Query;
use kuryr_stack_tests::{finally, wait_until};
use std::time::Duration;

const PODS: usize = 40;

#[tokio::test]
async fn pods_converge_after_neutron_was_stopped_for_30_seconds() -> anyhow::Result<()> {
    let h = Harness::new("outage", "10.229.0.0/24").await?;
    let body = async {
        // no pool: every pod makes its own port, many creates in flight
        let ctx = h
            .context(
                "",
                Options {
                    gc_interval: Duration::ZERO,
                    ..Default::default()
                },
            )
            .await?;
        let ctl = start(ctx.clone());
        let names: Vec<String> = (0..PODS).map(|i| format!("o-{i:02}")).collect();
        let uids = h.create_pods(&names, common::NODE).await?;
        wait_until(
            "a few pods with a VIF",
            Duration::from_secs(120),
            Duration::from_millis(100),
            || async {
                let n = h.with_vif().await?;
                Ok((n >= 3).then_some(()))
            },
        )
        .await?;
        {
            let _stopped = Stopped::new(&h.env.state, "neutron-server")?;
            let done = h.with_vif().await?;
            println!("neutron-server stopped for 30 s with {done} of {PODS} pods done");
            assert!(done < PODS, "stopped in the middle of the burst");
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        println!("neutron-server resumed");
        for (name, uid) in names.iter().zip(&uids) {
            h.vif_of(name, uid, Duration::from_secs(300)).await?;
        }
        // exactly one port per pod, the one its VIF names
        for (name, uid) in names.iter().zip(&uids) {
            let tagged = h
                .os
                .neutron()
                .list_ports(&Query::new().tags([plan::cluster_tag(&h.cluster), plan::pod_tag(uid)]))
                .await?;
            let vif = h.vif_of(name, uid, Duration::from_secs(1)).await?;
            assert_eq!(
                tagged.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
                vec![vif.id.as_str()],
                "pod {name}: exactly its VIF's port"
            );
        }
        assert_eq!(
            h.cluster_ports().await?.len(),
            PODS,
            "no other port of the cluster"
        );
        let untagged =
            h.os.neutron()
                .list_ports(&Query::new().filter("network_id", &h.net.id))
                .await?;
        assert_eq!(untagged.len(), PODS, "nothing untagged on the network");
        h.delete_all_pods(Duration::from_secs(120)).await?;
        ctl.stop().await;
        assert!(
            h.cluster_ports().await?.is_empty(),
            "every port deleted with its pod"
        );
        anyhow::Ok(())
    };
    finally(body, h.cleanup()).await
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_makes_no_second_port() -> anyhow::Result<()> {
    let h = Harness::new("lost", "10.228.0.0/24").await?;
    let body = async {
        let proxy =
            kuryr_stack_tests::proxy::FaultProxy::start(h.env.get("KURYR_STACK_NEUTRON_URL")?)
                .await?;
        let mut cfg =
            kuryr_openstack::CloudConfig::from_vars(|k| h.env.get(k).ok().map(str::to_owned))?;
        cfg.endpoint_overrides
            .insert("network".into(), proxy.url.clone());
        let os = kuryr_openstack::Client::new(cfg)?;
        let ctx = h
            .context_with(
                os,
                "",
                Options {
                    gc_interval: Duration::ZERO,
                    ..Default::default()
                },
            )
            .await?;
        // the pod's port create: no answer, and Neutron gets it 8 s later,
        // after the controller's retry (back-off 2-3 s) made the port
        proxy.lose_next_answer("POST", Duration::from_secs(8));
        let ctl = start(ctx.clone());
        let uid = h
            .create_pods(&["lost-0".to_string()], common::NODE)
            .await?
            .remove(0);
        let vif = h.vif_of("lost-0", &uid, Duration::from_secs(60)).await?;
        assert_eq!(proxy.pending(), 0, "the fault was used");
        let creates = proxy
            .seen()
            .iter()
            .filter(|r| r.starts_with("POST /v2.0/ports"))
            .count();
        assert!(
            creates >= 2,
            "the create was tried again: {:?}",
            proxy.seen()
        );
        // the lost create reaches Neutron 8 s after it was sent
        wait_until(
            "the lost create answered by Neutron",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async { Ok((proxy.lost_delivered() == 1).then_some(())) },
        )
        .await?;
        let on_net =
            h.os.neutron()
                .list_ports(&Query::new().filter("network_id", &h.net.id))
                .await?;
        assert_eq!(
            on_net.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            vec![vif.id.as_str()],
            "one port for the pod, no second one from the lost create"
        );
        h.delete_all_pods(Duration::from_secs(60)).await?;
        ctl.stop().await;
        assert!(h.cluster_ports().await?.is_empty());
        anyhow::Ok(())
    };
    finally(body, h.cleanup()).await
}
