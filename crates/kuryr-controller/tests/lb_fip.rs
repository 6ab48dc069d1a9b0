//! A Service of type LoadBalancer on the stack's public network (its own
//! binary: a controller with Service handlers watches every Service, so
//! Service tests do not run side by side). On the ML2/OVS backend (no
//! provider carrying traffic) it records a skip.
#![cfg(feature = "stack")]

mod common;

use common::{Harness, lb, start};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kuryr_controller::Options;
use kuryr_crds::KuryrLoadBalancer;
use kuryr_openstack::Query;
use kuryr_stack_tests::echo::EchoServer;
use kuryr_stack_tests::openstack::{Session, with_undo};
use kuryr_stack_tests::plug::{VmPort, wait_port_active};
use kuryr_stack_tests::{cmd::run, finally, unique_name, wait_until};
use serde_json::json;
use std::time::Duration;

/// A Service of type LoadBalancer gets a floating IP on the public network,
/// written to its `status.loadBalancer.ingress` and the KuryrLoadBalancer's
/// `service_pub_ip_info`, associated with the load balancer's VIP port and
/// served by OVN's load balancer; deleting the Service releases it. The
/// host's connection through it is a strict expected failure on this stack
/// (recorded with its reason; it must pass once the data path carries it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancer_service_answers_the_host_on_its_floating_ip() -> anyhow::Result<()> {
    let h = Harness::new("klbfip", "10.98.63.0/24").await?;
    if !lb::provider_or_skip(&h, "LoadBalancer services reached on a floating IP")? {
        return h.cleanup().await;
    }
    let public = h.env.get("KURYR_STACK_PUBLIC_NET")?.to_owned();
    let s = Session::login(&h.env).await?;
    let body = async {
        with_undo(&s, async |undo| {
            let net = lb::routed_net(&h, &s, undo).await?;
            let a = VmPort::plug(&s, undo, &h.env, &net, None).await?;
            wait_port_active(&s, &a.id).await?;
            let _sa = EchoServer::start(&a.ns, "member-fip", &[8080], &[])?;
            let conf = format!(
                "{}[neutron_defaults]\nexternal_svc_net = {public}\n",
                lb::conf(&h)?
            );
            let ctx = h.context(&conf, Options::default()).await?;
            let running = start(ctx);

            let name = unique_name("pub-", 30);
            let svcs: Api<Service> = Api::namespaced(h.kube.clone(), &h.ns);
            let slices: Api<EndpointSlice> = Api::namespaced(h.kube.clone(), &h.ns);
            svcs.create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name},
                    "spec": {"type": "LoadBalancer", "ports": [
                        {"name": "tcp", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}))?,
            )
            .await?;
            slices
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({
                        "metadata": {"name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
                        "addressType": "IPv4",
                        "endpoints": [{"addresses": [a.ip], "conditions": {"ready": true}}],
                        "ports": [{"name": "tcp", "port": 8080, "protocol": "TCP"}]}))?,
                )
                .await?;
            let fip = wait_until("the Service's ingress IP", Duration::from_secs(120), Duration::from_millis(300), || async {
                let svc = svcs.get(&name).await?;
                Ok(svc
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|l| l.ingress)
                    .and_then(|i| i.into_iter().next())
                    .and_then(|i| i.ip))
            })
            .await?;
            let fips = h.os.neutron().list_floating_ips(&Query::new().filter("floating_ip_address", &fip)).await?;
            assert_eq!(fips.len(), 1, "one floating IP {fip}: {fips:?}");
            assert_eq!(fips[0].floating_network_id, public, "on the public network");
            let fip_id = fips[0].id.clone();
            // on the load balancer's VIP port, and OVN's load balancer serves it
            let klbs: Api<KuryrLoadBalancer> = Api::namespaced(h.kube.clone(), &h.ns);
            let st = wait_until("the KuryrLoadBalancer's status with its floating IP", Duration::from_secs(60), Duration::from_millis(300), || async {
                let st = klbs.get(&name).await?.status;
                Ok(st.filter(|s| s.loadbalancer.is_some() && s.service_pub_ip_info.is_some()))
            })
            .await?;
            let vip_port = st.loadbalancer.as_ref().map(|l| l.port_id.clone()).unwrap_or_default();
            assert_eq!(fips[0].port_id.as_deref(), Some(vip_port.as_str()), "associated with the VIP port");
            let pub_info = st.service_pub_ip_info.clone().expect("service_pub_ip_info");
            assert_eq!((pub_info.ip_id.as_str(), pub_info.ip_addr.as_str()), (fip_id.as_str(), fip.as_str()));
            let db = format!("--db={}", h.env.get("KURYR_STACK_OVN_NB")?);
            wait_until("the floating IP as a VIP of OVN's load balancer", Duration::from_secs(30), Duration::from_millis(300), || async {
                let vips = run(&["ovn-nbctl", &db, "--bare", "--columns=vips", "list", "Load_Balancer"])?;
                Ok(vips.contains(&format!("{fip}:80")).then_some(()))
            })
            .await?;
            lb::ovn_applied(&h)?;
            // the data path from the host: a strict expected failure here (it
            // must start passing, not be skipped, once it works)
            match kuryr_stack_tests::echo::ask_from_host("tcp", &format!("{fip}:80")) {
                Ok(answer) => assert_eq!(answer, "member-fip"),
                Err(e) => kuryr_stack_tests::skip(
                    "host to a LoadBalancer Service's floating IP",
                    &format!(
                        "known failure on this stack (OVN 23.03, userspace datapath): OVN's flows send {fip}:80 to the member (ovn-trace), but the SYN never reaches it: {e:#}"
                    ),
                ),
            }

            // the Service goes at once (it has no finalizer); its
            // KuryrLoadBalancer, load balancer and floating IP follow
            svcs.delete(&name, &DeleteParams::default()).await?;
            let released = wait_until(
                "the Service's floating IP released",
                Duration::from_secs(120),
                Duration::from_millis(300),
                || async {
                    let left = h.os.neutron().list_floating_ips(&Query::new().filter("id", &fip_id)).await?;
                    Ok(left.is_empty().then_some(()))
                },
            )
            .await;
            assert!(released.is_ok(), "the floating IP allocated for the Service was released: {released:?}");
            running.stop().await;
            drop(a);
            Ok(())
        })
        .await
    };
    finally(body, h.cleanup()).await
}
