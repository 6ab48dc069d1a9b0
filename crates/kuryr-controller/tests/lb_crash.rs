//! The real kuryr-controller binary SIGKILLed while the load balancer it
//! asked for is PENDING_CREATE (Octavia's driver agent is stopped, so the
//! `ovn` provider cannot report it ACTIVE yet), and started again: the
//! successor finds the pending load balancer by its tags, waits it out and
//! completes it. One load balancer, not two. On the ML2/OVS backend (no
//! provider) it records a skip.
#![cfg(feature = "stack")]

mod common;

use common::{Harness, Stopped, lb, spawn};
use kuryr_stack_tests::{finally, unique_name, wait_until};
use std::process::Child;
use std::time::Duration;

#[tokio::test]
async fn a_controller_killed_while_its_load_balancer_is_pending_makes_no_second_one()
-> anyhow::Result<()> {
    let h = Harness::new("lbcrash", "10.98.62.0/24").await?;
    if !lb::provider_or_skip(&h, "services after a controller crash")? {
        return h.cleanup().await;
    }
    let dir = std::env::temp_dir().join(unique_name("kuryr-lbcrash-", 40));
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("kuryr.conf");
    std::fs::write(&conf, h.conf_text(&lb::conf(&h)?))?;
    let log = dir.join("controller.log");
    let procs: std::sync::Mutex<Vec<Child>> = Default::default();
    let body = async {
        procs.lock().unwrap().push(spawn(&h, &conf, &log, &[])?);
        let name = unique_name("crash-", 30);
        let uid = {
            // the driver agent is what reports the ovn provider's work to
            // Octavia; Octavia's client library gives up on it after 30 s,
            // so it is stopped for much less than that
            let _stopped = Stopped::new(&h.env.state, "octavia-driver-agent")?;
            let uid =
                lb::service_with_endpoints(&h, &name, &["10.98.62.21", "10.98.62.22"]).await?;
            let pending = wait_until(
                "the Service's load balancer PENDING_CREATE",
                Duration::from_secs(15),
                Duration::from_millis(100),
                || async {
                    let live = lb::live_lbs(&h, &uid).await?;
                    Ok(live
                        .into_iter()
                        .find(|l| l.provisioning_status == "PENDING_CREATE"))
                },
            )
            .await?;
            {
                let mut first = procs.lock().unwrap();
                first[0].kill()?; // SIGKILL
                first[0].wait()?;
            }
            println!(
                "SIGKILLed the controller with load balancer {} PENDING_CREATE",
                pending.id
            );
            // the successor comes while the load balancer is still pending
            // (no leader election: the dead one's Lease would hold it 15 s)
            let before = std::fs::read_to_string(&log)?.len();
            procs
                .lock()
                .unwrap()
                .push(spawn(&h, &conf, &log, &["--no-leader-election"])?);
            wait_until(
                "the successor's start-up reconciliation",
                Duration::from_secs(10),
                Duration::from_millis(100),
                || async {
                    let text = std::fs::read_to_string(&log)?;
                    Ok(text[before..]
                        .contains("start-up reconciliation with Neutron and Octavia done")
                        .then_some(()))
                },
            )
            .await?;
            let live = lb::live_lbs(&h, &uid).await?;
            assert_eq!(
                live.iter()
                    .map(|l| (l.id.as_str(), l.provisioning_status.as_str()))
                    .collect::<Vec<_>>(),
                vec![(pending.id.as_str(), "PENDING_CREATE")],
                "the pending load balancer is neither replaced nor deleted"
            );
            uid
        };
        println!("octavia-driver-agent resumed");
        lb::complete_lb(&h, &name, &uid, 2).await?;
        anyhow::Ok(())
    };
    finally(body, async {
        common::kill_all(&procs);
        eprintln!("controller log: {}", log.display());
        h.cleanup().await
    })
    .await
}
