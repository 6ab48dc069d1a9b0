//! What the Service tests share: the provider check, a controller
//! configuration for Services, a Service with its EndpointSlice, and what
//! Octavia holds for a Service.
#![allow(dead_code)]

use super::Harness;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use kuryr_controller::handlers::loadbalancer::service_tag;
use kuryr_crds::KuryrLoadBalancer;
use kuryr_openstack::Query;
use kuryr_openstack::types::octavia::LoadBalancer;
use kuryr_stack_tests::openstack::{Session, Undo};
use kuryr_stack_tests::plug::Net;
use kuryr_stack_tests::{skip, wait_until};
use serde_json::json;
use std::time::Duration;

/// Whether the stack carries Service traffic (Octavia's `ovn` provider, on
/// the ovn Neutron backend); records a skip for `test` when not.
pub fn provider_or_skip(h: &Harness, test: &str) -> anyhow::Result<bool> {
    let backend = h.env.get("KURYR_STACK_NEUTRON_BACKEND")?;
    if backend == "ovn" {
        return Ok(true);
    }
    skip(
        test,
        &format!("needs Octavia's ovn provider (Neutron backend ovn), the stack runs {backend}"),
    );
    Ok(false)
}

/// kuryr.conf sections that turn Services on: the stack's service subnet
/// and the `ovn` provider.
pub fn conf(h: &Harness) -> anyhow::Result<String> {
    let service_subnet = h.env.get("KURYR_STACK_SERVICE_SUBNET")?;
    Ok(format!(
        "[neutron_defaults]\nservice_subnet = {service_subnet}\n[kubernetes]\nendpoints_driver_octavia_provider = ovn\n"
    ))
}

/// An EndpointSlice `name` of Service `svc` with `endpoints` and the ports
/// `tcp` and `udp`, both 8080.
pub fn slice(name: &str, svc: &str, endpoints: serde_json::Value) -> anyhow::Result<EndpointSlice> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "tcp", "port": 8080, "protocol": "TCP"},
                  {"name": "udp", "port": 8080, "protocol": "UDP"}]}))?)
}

/// Makes Service `name` without a selector, TCP and UDP on port 80 to
/// 8080.
pub async fn service(h: &Harness, name: &str) -> anyhow::Result<Service> {
    let svcs: Api<Service> = Api::namespaced(h.kube.clone(), &h.ns);
    Ok(svcs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"ports": [
                    {"name": "tcp", "port": 80, "protocol": "TCP", "targetPort": 8080},
                    {"name": "udp", "port": 80, "protocol": "UDP", "targetPort": 8080}]}}))?,
        )
        .await?)
}

/// [`service`] and its EndpointSlice `<name>-1` with one ready endpoint per
/// address; answers the Service's UID.
pub async fn service_with_endpoints(
    h: &Harness,
    name: &str,
    addresses: &[&str],
) -> anyhow::Result<String> {
    let slices: Api<EndpointSlice> = Api::namespaced(h.kube.clone(), &h.ns);
    let svc = service(h, name).await?;
    let endpoints: Vec<serde_json::Value> = addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
        .collect();
    slices
        .create(
            &PostParams::default(),
            &slice(&format!("{name}-1"), name, json!(endpoints))?,
        )
        .await?;
    Ok(svc.metadata.uid.unwrap_or_default())
}

/// Octavia's load balancers of the Service with UID `uid` that are not
/// DELETED.
pub async fn live_lbs(h: &Harness, uid: &str) -> anyhow::Result<Vec<LoadBalancer>> {
    Ok(h.os
        .octavia()
        .list_load_balancers(&Query::new().tags([service_tag(uid)]))
        .await?
        .into_iter()
        .filter(|l| l.provisioning_status != "DELETED")
        .collect())
}

/// What Octavia holds under load balancer `lb`: listeners, pools, and
/// members of every pool, as counts.
pub async fn shape(h: &Harness, lb: &str) -> anyhow::Result<(usize, usize, Vec<usize>)> {
    let o = h.os.octavia();
    let q = Query::new().filter("loadbalancer_id", lb);
    let listeners = o.list_listeners(&q).await?.len();
    let pools = o.list_pools(&q).await?;
    let mut members = Vec::new();
    for p in &pools {
        members.push(o.list_members(&p.id).await?.len());
    }
    Ok((listeners, pools.len(), members))
}

/// The test's subnet attached to the stack's router (which holds the
/// service subnet), undone by `undo`; the network as `plug` wants it.
pub async fn routed_net(h: &Harness, s: &Session, undo: &Undo) -> anyhow::Result<Net> {
    let router = h.env.get("KURYR_STACK_ROUTER")?.to_owned();
    h.os.neutron()
        .add_router_interface(
            &router,
            &kuryr_openstack::types::neutron::RouterInterface {
                subnet_id: Some(h.subnet.id.clone()),
                ..Default::default()
            },
        )
        .await?;
    undo.put(
        s.n(&format!("routers/{router}/remove_router_interface")),
        json!({"subnet_id": h.subnet.id}),
    );
    Ok(Net {
        id: h.net.id.clone(),
        subnet_id: h.subnet.id.clone(),
        prefix: 24,
        gateway: h.subnet.gateway_ip.clone().unwrap_or_default(),
    })
}

/// Waits until the KuryrLoadBalancer `name` records a load balancer with
/// two listeners and a member per endpoint in each (the Service of
/// [`service_with_endpoints`] with `endpoints` addresses), then checks
/// Octavia holds exactly that one load balancer for the Service with UID
/// `uid`, with two listeners, two pools and `endpoints` members in each.
pub async fn complete_lb(
    h: &Harness,
    name: &str,
    uid: &str,
    endpoints: usize,
) -> anyhow::Result<()> {
    let klbs: Api<KuryrLoadBalancer> = Api::namespaced(h.kube.clone(), &h.ns);
    let st = wait_until(
        &format!(
            "the load balancer, 2 listeners and {} members recorded",
            2 * endpoints
        ),
        Duration::from_secs(240),
        Duration::from_millis(500),
        || async {
            let st = klbs.get(name).await?.status;
            Ok(st.filter(|s| {
                s.loadbalancer.is_some()
                    && s.listeners.len() == 2
                    && s.members.len() == 2 * endpoints
            }))
        },
    )
    .await?;
    let recorded = st.loadbalancer.expect("checked above").id;
    let live = live_lbs(h, uid).await?;
    anyhow::ensure!(
        live.iter().map(|l| l.id.as_str()).collect::<Vec<_>>() == vec![recorded.as_str()],
        "exactly the recorded load balancer {recorded}, not {live:?}"
    );
    anyhow::ensure!(live[0].provisioning_status == "ACTIVE", "{:?}", live[0]);
    let got = shape(h, &recorded).await?;
    anyhow::ensure!(
        got == (2, 2, vec![endpoints, endpoints]),
        "listeners, pools, members per pool: {got:?}"
    );
    Ok(())
}

/// Every chassis has applied what OVN's northbound database holds now.
pub fn ovn_applied(h: &Harness) -> anyhow::Result<()> {
    let db = format!("--db={}", h.env.get("KURYR_STACK_OVN_NB")?);
    kuryr_stack_tests::cmd::run(&["ovn-nbctl", &db, "--timeout=30", "--wait=hv", "sync"])?;
    Ok(())
}
