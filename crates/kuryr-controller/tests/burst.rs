//! 200 pods created at once against the stack's real kube-apiserver and
//! Neutron, with the pool driver: every pod gets its own port and address,
//! made in bulk (Neutron writes per pod stay about one), and every port
//! goes back to the pool when the pods go.
#![cfg(feature = "stack")]

mod common;

use common::{Harness, start};
use kube::api::ListParams;
use kuryr_controller::Options;
use kuryr_controller::pool::FREE_PORT_NAME;
use kuryr_stack_tests::{finally, wait_until};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const PODS: usize = 200;

#[tokio::test]
async fn two_hundred_pods_at_once_get_distinct_ports_and_addresses() -> anyhow::Result<()> {
    let h = Harness::new("burst", "10.239.0.0/23").await?;
    let body = async {
        let ctx = h
            .context(
                "[kubernetes]\nvif_pool_driver = neutron\n[vif_pool]\nports_pool_min = 0\nports_pool_batch = 50\nports_pool_update_frequency = 2\n",
                Options {
                    gc_interval: Duration::ZERO,
                    pool_cool_down: Some(Duration::from_secs(1)),
                    ..Default::default()
                },
            )
            .await?;
        let ctl = start(ctx.clone());
        let writes = |os: &kuryr_openstack::Client| -> u64 {
            os.call_counts()
                .iter()
                .filter(|(k, _)| k.method != "GET")
                .map(|(_, n)| n)
                .sum()
        };
        let writes0 = writes(&h.os);
        let t0 = Instant::now();
        let names: Vec<String> = (0..PODS).map(|i| format!("p-{i:03}")).collect();
        let uids: BTreeSet<String> = h
            .create_pods(&names, common::NODE)
            .await?
            .into_iter()
            .collect();
        let kps = wait_until(
            "200 KuryrPorts with a VIF",
            Duration::from_secs(600),
            Duration::from_millis(500),
            || async {
                let kps = h.kps.list(&ListParams::default()).await?.items;
                let with_vif = kps
                    .iter()
                    .filter(|k| k.status.as_ref().is_some_and(|s| !s.vifs.is_empty()))
                    .count();
                Ok((with_vif == PODS).then_some(kps))
            },
        )
        .await?;
        let took = t0.elapsed();
        let per_pod = (writes(&h.os) - writes0) as f64 / PODS as f64;
        println!(
            "{PODS} pods: all VIFs in {:.1} s, {per_pod:.2} Neutron write requests per pod",
            took.as_secs_f64()
        );
        let got: BTreeSet<String> = kps.iter().map(|k| k.spec.pod_uid.clone()).collect();
        assert_eq!(got, uids, "one KuryrPort per pod, keyed by UID");
        let mut ports = BTreeSet::new();
        let mut ips = BTreeSet::new();
        for k in &kps {
            let vif = k
                .status
                .as_ref()
                .and_then(|s| s.default_vif())
                .expect("VIF");
            assert!(ports.insert(vif.id.clone()), "port {} twice", vif.id);
            let ip = vif.network.subnets[0].ips[0].clone();
            assert!(ips.insert(ip.clone()), "address {ip} twice");
        }
        let in_neutron: BTreeSet<String> =
            h.cluster_ports().await?.into_iter().map(|p| p.id).collect();
        assert!(
            ports.is_subset(&in_neutron),
            "every VIF's port is in Neutron, tagged"
        );
        // bulk creates: one POST per batch, plus a tag call per port where
        // Neutron ignores tags in creates (Zed)
        assert!(per_pod <= 1.2, "{per_pod} Neutron writes per pod");

        h.delete_all_pods(Duration::from_secs(300)).await?;
        let pool = ctx.pool.clone().expect("pool on");
        wait_until(
            "every port back in the pool",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async {
                let free: usize = pool.sizes().iter().map(|(_, f, _, _)| f).sum();
                Ok((free == in_neutron.len()).then_some(()))
            },
        )
        .await?;
        ctl.stop().await;
        let left = h.cluster_ports().await?;
        assert!(
            left.iter()
                .all(|p| p.name == FREE_PORT_NAME && p.device_id.is_empty())
        );
        anyhow::Ok(())
    };
    finally(body, h.cleanup()).await
}
