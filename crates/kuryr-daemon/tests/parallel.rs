//! 100 ADDs at once, then 100 DELs at once, against the real OVS: every
//! pod gets its interface and OVS port, and everything is gone afterwards.
#![cfg(feature = "stack")]

mod common;

use common::*;
use kuryr_stack_tests::net::Netns;

const PODS: u32 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_parallel_adds_and_dels() -> anyhow::Result<()> {
    with_namespace(&["k8s", "ovs"], |env, client, ns| async move {
        let d = Daemon::start(&env, &[])?;
        let mut pods = Vec::new();
        for i in 0..PODS {
            let vif = fake_vif(1000 + i, "10.251.0.0/16", true);
            kuryrport(
                &client,
                &ns,
                &format!("p{i}"),
                &format!("u{i}"),
                &d.node,
                Some(vif.clone()),
            )
            .await?;
            pods.push((i, vif, Netns::new("kdpar")?));
        }
        let run_all = |command: &'static str| {
            let handles: Vec<_> = pods
                .iter()
                .map(|(i, _, pns)| {
                    let (conf, nsn, netns, i) = (
                        d.conf("1.1.0"),
                        ns.clone(),
                        format!("/var/run/netns/{}", pns.name),
                        *i,
                    );
                    std::thread::spawn(move || {
                        let (cid, name, uid) =
                            (format!("cid-par-{i}"), format!("p{i}"), format!("u{i}"));
                        cni(
                            &CniCall {
                                command,
                                container_id: &cid,
                                netns: &netns,
                                ifname: "eth0",
                                pod: (&nsn, &name, &uid),
                            },
                            &conf,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        };
        let t = std::time::Instant::now();
        let added = run_all("ADD");
        eprintln!("{PODS} parallel ADDs took {:?}", t.elapsed());
        for (rc, out) in &added {
            assert_eq!(*rc, 0, "{out}\n{}", d.log_text());
        }
        for (i, vif, pns) in &pods {
            assert!(
                pns.ip(&["link", "show", "eth0"])?.contains(&vif.address),
                "pod {i}"
            );
            assert_eq!(
                ovs_ports_of(&env, &format!("cid-par-{i}")).len(),
                1,
                "pod {i}"
            );
        }
        assert_eq!(d.state_files().len(), PODS as usize);
        let t = std::time::Instant::now();
        let deleted = run_all("DEL");
        eprintln!("{PODS} parallel DELs took {:?}", t.elapsed());
        for (rc, out) in &deleted {
            assert_eq!(*rc, 0, "{out}");
        }
        for (i, vif, _) in &pods {
            assert!(ovs_ports_of(&env, &format!("cid-par-{i}")).is_empty());
            eventually("host link gone", || {
                !link_exists(&kuryr_crds::vif::vif_name(&vif.id))
            });
        }
        eventually("records gone", || d.state_files().is_empty());
        Ok(())
    })
    .await
}
