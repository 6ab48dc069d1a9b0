//! Services as Octavia load balancers, against the stack's kube-apiserver,
//! Neutron and Octavia's `ovn` provider: a Service with TCP and UDP on one
//! port and user-managed EndpointSlices whose endpoints are Neutron ports
//! plugged like VMs (each answering with its own token): connections
//! through the ClusterIP reach every ready endpoint and only them, follow
//! the endpoints as they change, the listeners take the annotations'
//! timeouts, a load balancer and a listener deleted in Octavia behind the
//! controller's back come back, and deleting the Service leaves nothing.
//! On the ML2/OVS backend (no provider carrying traffic) it records a skip.
#![cfg(feature = "stack")]

mod common;

use common::{Harness, lb, start};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kuryr_controller::Options;
use kuryr_controller::handlers::loadbalancer::service_tag;
use kuryr_crds::KuryrLoadBalancer;
use kuryr_openstack::Query;
use kuryr_stack_tests::echo::{EchoServer, ask};
use kuryr_stack_tests::openstack::{Session, with_undo};
use kuryr_stack_tests::plug::{VmPort, wait_port_active};
use kuryr_stack_tests::{finally, unique_name, wait_until};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

fn spread(client: &VmPort, proto: &str, addr: &str, tries: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..tries {
        let a = ask(&client.ns, proto, addr).unwrap_or_else(|e| format!("error: {e:#}"));
        *seen.entry(a).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_a_load_balancer_that_follows_its_endpoints() -> anyhow::Result<()> {
    let h = Harness::new("ksvc", "10.98.60.0/24").await?;
    if !lb::provider_or_skip(&h, "services carry traffic")? {
        return h.cleanup().await;
    }
    let s = Session::login(&h.env).await?;
    let body = async {
        with_undo(&s, async |undo| {
            let net = lb::routed_net(&h, &s, undo).await?;
            let a = VmPort::plug(&s, undo, &h.env, &net, None).await?;
            let b = VmPort::plug(&s, undo, &h.env, &net, None).await?;
            let client = VmPort::plug(&s, undo, &h.env, &net, None).await?;
            for p in [&a, &b, &client] {
                wait_port_active(&s, &p.id).await?;
            }
            let _sa = EchoServer::start(&a.ns, "member-a", &[8080], &[8080])?;
            let _sb = EchoServer::start(&b.ns, "member-b", &[8080], &[8080])?;

            let conf = lb::conf(&h)?;
            let ctx = h
                .context(
                    &conf,
                    Options {
                        lb_recheck: Duration::from_secs(3),
                        ..Default::default()
                    },
                )
                .await?;
            let running = start(ctx);

            let name = unique_name("web-", 30);
            let svcs: Api<Service> = Api::namespaced(h.kube.clone(), &h.ns);
            let slices: Api<EndpointSlice> = Api::namespaced(h.kube.clone(), &h.ns);
            let klbs: Api<KuryrLoadBalancer> = Api::namespaced(h.kube.clone(), &h.ns);
            let svc = lb::service(&h, &name).await?;
            let vip = svc.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
            // one ready endpoint per member, one not ready (never a member),
            // one without conditions (ready, for Kubernetes)
            slices
                .create(
                    &PostParams::default(),
                    &lb::slice(
                        &format!("{name}-1"),
                        &name,
                        json!([
                        {"addresses": [a.ip], "conditions": {"ready": true}},
                        {"addresses": ["10.98.60.250"], "conditions": {"ready": false}},
                        {"addresses": [b.ip]}]),
                    )?,
                )
                .await?;
            let members = |n: usize| {
                let klbs = klbs.clone();
                let name = name.clone();
                async move {
                    wait_until(
                        &format!("{n} members recorded"),
                        Duration::from_secs(120),
                        Duration::from_millis(300),
                        || async {
                            let k = klbs.get(&name).await?;
                            Ok(k.status
                                .filter(|st| st.members.len() == n && st.listeners.len() == 2))
                        },
                    )
                    .await
                }
            };
            let st = members(4).await?;
            assert!(
                st.members.iter().all(|m| m.ip != "10.98.60.250"),
                "a not-ready endpoint became a member"
            );
            let lb = st.loadbalancer.clone().expect("load balancer");
            assert_eq!(lb.ip, vip);
            assert_eq!(lb.name, format!("{}/{name}", h.ns));
            let mut names: Vec<&str> = st.listeners.iter().map(|l| l.name.as_str()).collect();
            names.sort();
            assert_eq!(
                names,
                [
                    format!("{}/{name}:TCP:80", h.ns),
                    format!("{}/{name}:UDP:80", h.ns)
                ]
            );
            lb::ovn_applied(&h)?;
            for proto in ["tcp", "udp"] {
                let seen = spread(&client, proto, &format!("{vip}:80"), 40);
                anyhow::ensure!(
                    seen.len() == 2
                        && seen.contains_key("member-a")
                        && seen.contains_key("member-b"),
                    "{proto} through ClusterIP {vip}: {seen:?}"
                );
            }

            // b is not ready any more: it gets nothing
            slices
                .replace(&format!("{name}-1"), &PostParams::default(), &{
                    let mut s = slices.get(&format!("{name}-1")).await?;
                    s.endpoints[2].conditions =
                        Some(serde_json::from_value(json!({"ready": false}))?);
                    s
                })
                .await?;
            members(2).await?;
            lb::ovn_applied(&h)?;
            for proto in ["tcp", "udp"] {
                let seen = spread(&client, proto, &format!("{vip}:80"), 20);
                anyhow::ensure!(
                    seen.len() == 1 && seen.contains_key("member-a"),
                    "{proto} after b left: {seen:?}"
                );
            }

            // timeouts from the annotations show in the listeners
            svcs.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    "openstack.org/kuryr-timeout-client-data": "70000",
                    "openstack.org/kuryr-timeout-member-data": "80000"}}})),
            )
            .await?;
            wait_until(
                "listener timeouts",
                Duration::from_secs(60),
                Duration::from_millis(300),
                || async {
                    let st = klbs.get(&name).await?.status.unwrap_or_default();
                    Ok(st
                        .listeners
                        .iter()
                        .all(|l| {
                            l.timeout_client_data == Some(70_000)
                                && l.timeout_member_data == Some(80_000)
                        })
                        .then_some(()))
                },
            )
            .await?;

            // deleted behind our back: a listener, then the whole load balancer
            let o = h.os.octavia();
            let gone_listener = st.listeners[0].id.clone();
            o.delete_listener(&gone_listener).await?;
            wait_until(
                "the listener made again",
                Duration::from_secs(60),
                Duration::from_millis(300),
                || async {
                    let st = klbs.get(&name).await?.status.unwrap_or_default();
                    Ok((st.listeners.len() == 2
                        && st.listeners.iter().all(|l| l.id != gone_listener))
                    .then_some(()))
                },
            )
            .await?;
            o.delete_load_balancer(&lb.id, true).await?;
            o.wait_load_balancer_deleted(&lb.id, Duration::from_secs(60))
                .await?;
            let again = wait_until(
                "the load balancer made again",
                Duration::from_secs(90),
                Duration::from_millis(300),
                || async {
                    let st = klbs.get(&name).await?.status.unwrap_or_default();
                    Ok(st
                        .loadbalancer
                        .filter(|l| l.id != lb.id && st.members.len() == 2))
                },
            )
            .await?;
            assert_eq!(again.ip, vip, "the same VIP");
            lb::ovn_applied(&h)?;
            assert_eq!(ask(&client.ns, "tcp", &format!("{vip}:80"))?, "member-a");

            // the Service goes at once (no finalizer holds it), then the
            // KuryrLoadBalancer it owns (garbage collector) once its load
            // balancer is deleted
            let svc = svcs.get(&name).await?;
            assert!(
                svc.metadata.finalizers.unwrap_or_default().is_empty(),
                "a Service gets no finalizer"
            );
            let uid = svc.metadata.uid.unwrap_or_default();
            svcs.delete(&name, &DeleteParams::default()).await?;
            assert!(svcs.get_opt(&name).await?.is_none(), "deleted at once");
            wait_until(
                "the KuryrLoadBalancer gone",
                Duration::from_secs(120),
                Duration::from_millis(300),
                || async { Ok(klbs.get_opt(&name).await?.is_none().then_some(())) },
            )
            .await?;
            let left = o
                .list_load_balancers(&Query::new().tags([service_tag(&uid)]))
                .await?;
            assert!(
                left.iter().all(|l| l.provisioning_status == "DELETED"),
                "load balancers left: {left:?}"
            );
            running.stop().await;
            drop((a, b, client));
            Ok(())
        })
        .await
    };
    finally(body, h.cleanup()).await
}
