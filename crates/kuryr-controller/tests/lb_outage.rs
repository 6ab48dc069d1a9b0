//! Octavia's API stopped (its process group SIGSTOPped) for 30 s while a
//! Service is made: the Service handler makes the KuryrLoadBalancer without
//! Octavia, the load-balancer handler's calls hang or fail and are retried,
//! and after Octavia returns the Service has exactly one load balancer with
//! one listener and one pool per port and one member per endpoint: nothing
//! duplicated. On the ML2/OVS backend (no provider) it records a skip.
#![cfg(feature = "stack")]

mod common;

use common::{Harness, Stopped, lb, start};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams};
use kuryr_controller::Options;
use kuryr_crds::KuryrLoadBalancer;
use kuryr_stack_tests::{finally, unique_name, wait_until};
use std::time::Duration;

#[tokio::test]
async fn a_service_made_while_octavia_is_stopped_converges_with_one_load_balancer()
-> anyhow::Result<()> {
    let h = Harness::new("lbout", "10.98.61.0/24").await?;
    if !lb::provider_or_skip(&h, "services after an Octavia outage")? {
        return h.cleanup().await;
    }
    let body = async {
        let ctx = h
            .context(
                &lb::conf(&h)?,
                Options {
                    lb_recheck: Duration::from_secs(3),
                    ..Default::default()
                },
            )
            .await?;
        let ctl = start(ctx.clone());
        // running: its start-up reconciliation (which needs Octavia) is done
        wait_until(
            "the controller ready",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async { Ok(ctx.metrics.is_ready().then_some(())) },
        )
        .await?;
        let name = unique_name("out-", 30);
        let klbs: Api<KuryrLoadBalancer> = Api::namespaced(h.kube.clone(), &h.ns);
        let uid = {
            let _stopped = Stopped::new(&h.env.state, "octavia-api")?;
            println!("octavia-api stopped");
            let uid =
                lb::service_with_endpoints(&h, &name, &["10.98.61.21", "10.98.61.22"]).await?;
            // Kubernetes' side goes on without Octavia
            let klb = wait_until(
                "the KuryrLoadBalancer made while Octavia is stopped",
                Duration::from_secs(20),
                Duration::from_millis(200),
                || async {
                    let k = klbs.get_opt(&name).await?;
                    Ok(k.filter(|k| k.spec.endpoint_slices.len() == 1))
                },
            )
            .await?;
            assert!(
                klb.status.and_then(|s| s.loadbalancer).is_none(),
                "no load balancer can be recorded while Octavia is stopped"
            );
            tokio::time::sleep(Duration::from_secs(30)).await;
            uid
        };
        println!("octavia-api resumed");
        lb::complete_lb(&h, &name, &uid, 2).await?;

        let svcs: Api<Service> = Api::namespaced(h.kube.clone(), &h.ns);
        svcs.delete(&name, &DeleteParams::default()).await?;
        // the Service goes at once (no finalizer); the KuryrLoadBalancer it
        // owns is removed by the garbage collector once its finalizer is off,
        // which is after the load balancer is deleted
        wait_until(
            "the Service and its KuryrLoadBalancer gone",
            Duration::from_secs(120),
            Duration::from_millis(300),
            || async {
                let gone =
                    svcs.get_opt(&name).await?.is_none() && klbs.get_opt(&name).await?.is_none();
                Ok(gone.then_some(()))
            },
        )
        .await?;
        let left = lb::live_lbs(&h, &uid).await?;
        assert!(left.is_empty(), "load balancers left: {left:?}");
        ctl.stop().await;
        anyhow::Ok(())
    };
    finally(body, h.cleanup()).await
}
