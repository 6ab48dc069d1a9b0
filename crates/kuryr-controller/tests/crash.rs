//! The real kuryr-controller binary SIGKILLed in the middle of a 100-pod
//! burst and started again: the successor waits for the dead one's leader
//! Lease to expire, then every pod ends with exactly one port, no port is
//! left that nothing uses, and deleting the pods gives every port back.
#![cfg(feature = "stack")]

mod common;

use common::{Harness, spawn};
use kube::api::ListParams;
use kuryr_controller::pool::FREE_PORT_NAME;
use kuryr_stack_tests::{finally, unique_name, wait_until};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::time::Duration;

const PODS: usize = 100;

/// VIF port id of every KuryrPort that has one, by pod UID.
async fn vifs(h: &Harness) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    for k in h.kps.list(&ListParams::default()).await?.items {
        let ids: Vec<String> = k
            .status
            .iter()
            .flat_map(|s| s.vifs.values().map(|e| e.vif.id.clone()))
            .collect();
        if !ids.is_empty() {
            out.insert(k.spec.pod_uid.clone(), ids);
        }
    }
    Ok(out)
}

#[tokio::test]
async fn a_controller_killed_mid_burst_leaves_exactly_one_port_per_pod() -> anyhow::Result<()> {
    let h = Harness::new("crash", "10.238.0.0/24").await?;
    let dir = std::env::temp_dir().join(unique_name("kuryr-crash-", 40));
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("kuryr.conf");
    std::fs::write(
        &conf,
        h.conf_text("[kubernetes]\nvif_pool_driver = neutron\n[vif_pool]\nports_pool_min = 5\nports_pool_batch = 20\nports_pool_update_frequency = 1\n"),
    )?;
    let log = dir.join("controller.log");
    let procs: std::sync::Mutex<Vec<Child>> = Default::default();
    let body = async {
        procs.lock().unwrap().push(spawn(&h, &conf, &log, &[])?);
        let names: Vec<String> = (0..PODS).map(|i| format!("burst-{i:03}")).collect();
        let uids = h.create_pods(&names, common::NODE).await?;
        let uids: BTreeSet<String> = uids.into_iter().collect();
        // kill it once about a third of the pods have their port
        let done = wait_until(
            "a third of the pods with a VIF",
            Duration::from_secs(180),
            Duration::from_millis(100),
            || async {
                let v = vifs(&h).await?;
                Ok((v.len() >= PODS / 3).then_some(v.len()))
            },
        )
        .await?;
        {
            let mut first = procs.lock().unwrap();
            first[0].kill()?; // SIGKILL
            first[0].wait()?;
        }
        println!("SIGKILLed the controller with {done} of {PODS} pods done");
        assert!(done < PODS, "killed in the middle of the burst");

        procs.lock().unwrap().push(spawn(&h, &conf, &log, &[])?);
        let all = wait_until(
            "every pod with a VIF after the restart",
            Duration::from_secs(300),
            Duration::from_millis(500),
            || async {
                let v = vifs(&h).await?;
                Ok((v.len() == PODS).then_some(v))
            },
        )
        .await?;
        assert_eq!(all.keys().cloned().collect::<BTreeSet<_>>(), uids);
        let mut used = BTreeSet::new();
        for (uid, ids) in &all {
            assert_eq!(ids.len(), 1, "pod {uid}: one VIF");
            assert!(
                used.insert(ids[0].clone()),
                "port {} given to two pods",
                ids[0]
            );
        }
        // every port of the cluster is a pod's or a free pool port: no orphan
        let ports = h.cluster_ports().await?;
        let mut ips = BTreeSet::new();
        for p in &ports {
            if used.contains(&p.id) {
                assert!(
                    ips.insert(p.first_ip().unwrap_or_default().to_owned()),
                    "IP twice"
                );
            } else {
                assert_eq!(
                    p.name, FREE_PORT_NAME,
                    "port {} is neither used nor free",
                    p.id
                );
                assert!(
                    p.device_id.is_empty(),
                    "port {} owned by {}",
                    p.id,
                    p.device_id
                );
            }
            assert!(
                !p.tags.iter().any(|t| t.starts_with("kuryr-pod:")),
                "pool ports carry no pod tag"
            );
        }
        assert!(
            used.iter().all(|id| ports.iter().any(|p| &p.id == id)),
            "a VIF names a port Neutron lacks"
        );

        // the pods go: every port goes back to the pool, none is left used
        h.delete_all_pods(Duration::from_secs(180)).await?;
        assert!(h.kps.list(&ListParams::default()).await?.items.is_empty());
        let left = h.cluster_ports().await?;
        assert!(
            left.iter().all(|p| p.name == FREE_PORT_NAME),
            "ports still owned after every pod went: {:?}",
            left.iter()
                .filter(|p| p.name != FREE_PORT_NAME)
                .map(|p| &p.id)
                .collect::<Vec<_>>()
        );
        let text = std::fs::read_to_string(&log)?;
        assert!(
            text.contains("start-up reconciliation with Neutron and Octavia done"),
            "{text}"
        );
        anyhow::Ok(())
    };
    finally(body, async {
        common::kill_all(&procs);
        eprintln!("controller log: {}", log.display());
        h.cleanup().await
    })
    .await
}
