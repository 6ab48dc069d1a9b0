//! Services as Octavia load balancers (`ovn` provider), timed end to end
//! against the stack's kube-apiserver, Neutron, Octavia and OVN:
//!
//! - Service created → first answer through its ClusterIP, one Service at a
//!   time (`KURYR_BENCH_SERVICES`, 20): the Service (TCP 80 → 8080) and its
//!   EndpointSlice (one endpoint: a Neutron port plugged like a VM, serving
//!   a token) are created, then a client port asks the ClusterIP every
//!   20 ms (each try gives up after 300 ms) until the token comes back;
//! - endpoint added → first answer from it: a second endpoint added to a
//!   Service's slice, then the client asks until the new one answers
//!   (`KURYR_BENCH_ENDPOINTS`, 10 rounds; the endpoint leaves between
//!   rounds);
//! - `KURYR_BENCH_BURST` (100) Services created at once → all answering.
//!
//! Each Service has no selector: the bench writes its EndpointSlice and its
//! v1 Endpoints (labelled `endpointslice.kubernetes.io/skip-mirror`), so
//! that kuryr-rs (EndpointSlices) and kuryr-kubernetes (Endpoints) are given
//! the same endpoints at the same moment.
//!
//! The controller runs in this process (its handlers, as the binary runs
//! them), with the Service, EndpointSlice and KuryrLoadBalancer handlers.
//! With `KURYR_BENCH_PEER` set to a command (`scripts/peer/services-controller`)
//! the same runs are made against the controller that command starts
//! instead: kuryr-kubernetes 10.0.0 scoped to the bench's namespace.
//! `sudo scripts/bench-services` runs both, one after the other.
//! `sudo cargo bench -p kuryr-controller --features stack --bench services`
//! (stack up on the ovn backend).

#[path = "common/bench.rs"]
mod bench;

use anyhow::Context as _;
use bench::{Controller, clients, start_peer};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kuryr_controller::Options;
use kuryr_openstack::Query;
use kuryr_stack_tests::bench::{env_num, summary};
use kuryr_stack_tests::echo::{EchoServer, ask_within};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::openstack::{Session, with_undo};
use kuryr_stack_tests::plug::{Net, VmPort, wait_port_active};
use kuryr_stack_tests::{finally, unique_name, wait_until};
use serde_json::json;
use std::time::{Duration, Instant};

/// For each of `addrs`, whether it answers `token` within 300 ms; asked 16
/// at a time (more would take the CPU the services under test need).
fn answering(ns: &kuryr_stack_tests::net::Netns, addrs: &[String], token: &str) -> Vec<bool> {
    addrs
        .chunks(16)
        .flat_map(|chunk| {
            std::thread::scope(|sc| {
                let asks: Vec<_> = chunk
                    .iter()
                    .map(|addr| {
                        sc.spawn(move || {
                            ask_within(ns, "tcp", addr, 300).ok().as_deref() == Some(token)
                        })
                    })
                    .collect();
                asks.into_iter()
                    .map(|h| h.join().unwrap_or(false))
                    .collect::<Vec<_>>()
            })
        })
        .collect()
}

/// A Service `name` without a selector, TCP 80 → 8080; its ClusterIP.
async fn service(svcs: &Api<Service>, name: &str) -> anyhow::Result<String> {
    let svc = svcs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"ports": [{"name": "tcp", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}))?,
        )
        .await?;
    svc.spec.and_then(|s| s.cluster_ip).context("no ClusterIP")
}

/// The EndpointSlice of Service `svc` with one ready endpoint per address.
fn slice(svc: &str, addresses: &[&str]) -> anyhow::Result<EndpointSlice> {
    let endpoints: Vec<serde_json::Value> = addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
        .collect();
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-1"), "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "tcp", "port": 8080, "protocol": "TCP"}]}))?)
}

/// The v1 Endpoints of Service `svc` with one ready address per entry, not
/// mirrored into a second EndpointSlice.
fn endpoints(svc: &str, addresses: &[&str]) -> anyhow::Result<Endpoints> {
    let addrs: Vec<serde_json::Value> = addresses.iter().map(|a| json!({"ip": a})).collect();
    Ok(serde_json::from_value(json!({
        "metadata": {"name": svc, "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": addrs, "ports": [{"name": "tcp", "port": 8080, "protocol": "TCP"}]}]}))?)
}

/// Service `svc`'s backends, as both kinds of object (made or replaced).
async fn set_backends(
    slices: &Api<EndpointSlice>,
    eps: &Api<Endpoints>,
    svc: &str,
    addresses: &[&str],
) -> anyhow::Result<()> {
    let mut ep = endpoints(svc, addresses)?;
    match eps.get_opt(svc).await? {
        Some(old) => {
            ep.metadata.resource_version = old.metadata.resource_version;
            eps.replace(svc, &PostParams::default(), &ep).await?;
        }
        None => {
            eps.create(&PostParams::default(), &ep).await?;
        }
    }
    let mut sl = slice(svc, addresses)?;
    let name = format!("{svc}-1");
    match slices.get_opt(&name).await? {
        Some(old) => {
            sl.metadata.resource_version = old.metadata.resource_version;
            slices.replace(&name, &PostParams::default(), &sl).await?;
        }
        None => {
            slices.create(&PostParams::default(), &sl).await?;
        }
    }
    Ok(())
}

/// Asks `addr` from `client` every 20 ms until `token` answers.
async fn first_answer(client: &VmPort, addr: &str, token: &str) -> anyhow::Result<()> {
    wait_until(
        &format!("{token} answering on {addr}"),
        Duration::from_secs(300),
        Duration::from_millis(20),
        || async {
            Ok(ask_within(&client.ns, "tcp", addr, 300)
                .ok()
                .filter(|a| a == token)
                .map(|_| ()))
        },
    )
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let env = StackEnv::load()?;
    env.require("k8s")?;
    env.require("openstack")?;
    let backend = env.get("KURYR_STACK_NEUTRON_BACKEND")?.to_owned();
    if backend != "ovn" {
        println!(
            "services: needs Octavia's ovn provider (Neutron backend ovn), the stack runs {backend}"
        );
        return Ok(());
    }
    let (kube, os) = clients(&env).await?;
    let s = Session::login(&env).await?;
    let router = env.get("KURYR_STACK_ROUTER")?.to_owned();
    let ns = unique_name("bench-svc-", 40);
    let cluster = unique_name("bsvc", 30);
    let nss: Api<Namespace> = Api::all(kube.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
    )
    .await?;
    let svcs: Api<Service> = Api::namespaced(kube.clone(), &ns);
    let slices: Api<EndpointSlice> = Api::namespaced(kube.clone(), &ns);
    let eps: Api<Endpoints> = Api::namespaced(kube.clone(), &ns);
    let peer = std::env::var("KURYR_BENCH_PEER")
        .ok()
        .filter(|c| !c.is_empty());
    let tag = kuryr_controller::plan::cluster_tag(&cluster);
    let body = with_undo(&s, async |undo| {
        let net = Net::create(&s, undo, "10.98.64.0/24", Some(&router)).await?;
        let a = VmPort::plug(&s, undo, &env, &net, None).await?;
        let b = VmPort::plug(&s, undo, &env, &net, None).await?;
        let client = VmPort::plug(&s, undo, &env, &net, None).await?;
        for p in [&a, &b, &client] {
            wait_port_active(&s, &p.id).await?;
        }
        let _sa = EchoServer::start(&a.ns, "bench-a", &[8080], &[])?;
        let _sb = EchoServer::start(&b.ns, "bench-b", &[8080], &[])?;
        let ctl = match &peer {
            Some(cmd) => Controller::Peer(start_peer(
                cmd,
                &[
                    ("KURYR_PEER_NAMESPACE", ns.as_str()),
                    ("KURYR_PEER_MEMBER_SUBNET", net.subnet_id.as_str()),
                    ("KURYR_PEER_TAG", tag.as_str()),
                ],
            )?),
            None => {
                let conf = format!(
                    "[node_port]\nenabled = false\n[neutron_defaults]\npod_subnet = {}\nresource_tags = kuryr-rs-bench\nservice_subnet = {}\n[kubernetes]\nendpoints_driver_octavia_provider = ovn\n",
                    net.subnet_id,
                    env.get("KURYR_STACK_SERVICE_SUBNET")?
                );
                let options = Options {
                    // no pod of this bench's: the pod handler idles
                    pod_selector: Some(format!("kuryr-bench={cluster}")),
                    gc_interval: Duration::ZERO,
                    ..Default::default()
                };
                Controller::in_process(&kube, &os, &conf, cluster.clone(), options).await?
            }
        };
        let run = async {
            let n = env_num("KURYR_BENCH_SERVICES", 20);
            eprintln!("{n} Services, one at a time: created -> first answer through the ClusterIP");
            let mut first = Vec::new();
            for i in 0..n {
                let name = format!("one-{i:03}");
                let t0 = Instant::now();
                let vip = service(&svcs, &name).await?;
                set_backends(&slices, &eps, &name, &[&a.ip]).await?;
                first_answer(&client, &format!("{vip}:80"), "bench-a").await?;
                first.push(t0.elapsed());
                eprintln!("  Service {} of {n}: {:?}", i + 1, first[i]);
            }

            let rounds = env_num("KURYR_BENCH_ENDPOINTS", 10);
            eprintln!("{rounds} rounds: endpoint added -> first answer from it");
            let vip = service(&svcs, "grow").await?;
            set_backends(&slices, &eps, "grow", &[&a.ip]).await?;
            let addr = format!("{vip}:80");
            first_answer(&client, &addr, "bench-a").await?;
            let mut added = Vec::new();
            for i in 0..rounds {
                let t0 = Instant::now();
                set_backends(&slices, &eps, "grow", &[&a.ip, &b.ip]).await?;
                first_answer(&client, &addr, "bench-b").await?;
                added.push(t0.elapsed());
                eprintln!("  round {} of {rounds}: {:?}", i + 1, added[i]);
                // b leaves again: wait until only a answers 10 times in a row
                set_backends(&slices, &eps, "grow", &[&a.ip]).await?;
                let mut in_a_row = 0;
                wait_until("only a answering", Duration::from_secs(120), Duration::from_millis(20), || {
                    let r = ask_within(&client.ns, "tcp", &addr, 300).ok();
                    in_a_row = if r.as_deref() == Some("bench-a") { in_a_row + 1 } else { 0 };
                    let done = in_a_row >= 10;
                    async move { Ok(done.then_some(())) }
                })
                .await?;
            }

            let burst = env_num("KURYR_BENCH_BURST", 100);
            eprintln!("{burst} Services created at once -> all answering");
            let t0 = Instant::now();
            let mut vips = Vec::new();
            for i in 0..burst {
                let name = format!("burst-{i:03}");
                vips.push(service(&svcs, &name).await?);
                set_backends(&slices, &eps, &name, &[&a.ip]).await?;
            }
            let created = t0.elapsed();
            // every Service not answering yet is asked once per sweep, with
            // a second's pause between sweeps
            let mut left: Vec<String> = vips.iter().map(|v| format!("{v}:80")).collect();
            let mut answered: Vec<Duration> = Vec::new();
            let mut last_report = Instant::now();
            while !left.is_empty() {
                // blocking: the runtime's other worker takes the controller's tasks meanwhile
                let ok = tokio::task::block_in_place(|| answering(&client.ns, &left, "bench-a"));
                let at = t0.elapsed();
                let mut ok = ok.into_iter();
                left.retain(|_| {
                    let done = ok.next().unwrap_or(false);
                    if done {
                        answered.push(at);
                    }
                    !done
                });
                if last_report.elapsed() > Duration::from_secs(10) {
                    eprintln!("  {} of {burst} answering after {:?}", burst - left.len(), t0.elapsed());
                    last_report = Instant::now();
                }
                anyhow::ensure!(t0.elapsed() < Duration::from_secs(1800), "{} Services never answered", left.len());
                if !left.is_empty() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            let all = t0.elapsed();

            match &peer {
                Some(cmd) => println!("kuryr-kubernetes 10.0.0 Services (ovn provider), controller started by {cmd}:"),
                None => println!("kuryr-rs Services (ovn provider), in-process controller:"),
            }
            println!("  Service created -> first answer through ClusterIP  {}", summary(&mut first));
            println!("  endpoint added -> first answer from it            {}", summary(&mut added));
            println!(
                "  {burst} Services at once -> all answering            {:8.1} s (all created in {:.1} s)",
                all.as_secs_f64(),
                created.as_secs_f64()
            );
            println!("  {burst} Services at once -> each answering           {}", summary(&mut answered));
            anyhow::Ok(())
        };
        let res = run.await;
        // every Service goes while the controller runs: their load balancers go with them
        let names: Vec<String> = match svcs.list(&ListParams::default()).await {
            Ok(l) => l.items.into_iter().filter_map(|s| s.metadata.name).collect(),
            Err(e) => {
                eprintln!("listing the bench's Services: {e}");
                Vec::new()
            }
        };
        for n in &names {
            let _ = svcs.delete(n, &DeleteParams::default()).await;
        }
        // and their KuryrLoadBalancers, once the controller has deleted
        // their load balancers (the garbage collector deletes a Service's
        // KuryrLoadBalancer, whose finalizer the controller takes off)
        let klbs: Api<kuryr_crds::KuryrLoadBalancer> = Api::namespaced(kube.clone(), &ns);
        let _ = wait_until("every Service and KuryrLoadBalancer gone", Duration::from_secs(900), Duration::from_secs(1), || async {
            let gone = svcs.list(&ListParams::default()).await?.items.is_empty()
                && klbs.list(&ListParams::default()).await?.items.is_empty();
            Ok(gone.then_some(()))
        })
        .await;
        ctl.stop().await;
        res
    })
    .await;
    let cleanup = async {
        let o = os.octavia();
        let lbs = o
            .list_load_balancers(&Query::new().tags([tag.clone()]))
            .await?;
        for lb in &lbs {
            o.delete_load_balancer(&lb.id, true).await?;
        }
        for lb in &lbs {
            o.wait_load_balancer_deleted(&lb.id, Duration::from_secs(300))
                .await?;
        }
        // what a failed run left: finalizers off, then the namespace
        let klbs: Api<kuryr_crds::KuryrLoadBalancer> = Api::namespaced(kube.clone(), &ns);
        let unfinalize = kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}}));
        let pp = kube::api::PatchParams::default();
        for k in klbs.list(&ListParams::default()).await?.items {
            let _ = klbs
                .patch(&k.metadata.name.unwrap_or_default(), &pp, &unfinalize)
                .await;
        }
        for sv in svcs.list(&ListParams::default()).await?.items {
            let _ = svcs
                .patch(&sv.metadata.name.unwrap_or_default(), &pp, &unfinalize)
                .await;
        }
        let _ = nss.delete(&ns, &DeleteParams::default()).await;
        anyhow::Ok(())
    };
    finally(async { body }, cleanup).await
}
