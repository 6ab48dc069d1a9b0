//! The failure modes kuryr-kubernetes is known for, against the stack's real
//! kube-apiserver and Neutron: a pod deleted before the controller put its
//! finalizer on it (nothing is made for it), a configured security group
//! deleted in Neutron (an event, no half-made port), a full subnet (events
//! and a metric, the controller keeps serving, with and without pools), a
//! port that never goes ACTIVE (one warning), and an exhausted port quota
//! (events, and no port left untagged).
#![cfg(feature = "stack")]

mod common;

use common::{Harness, NODE};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kuryr_controller::{Context, Options, plan};
use kuryr_crds::Vif;
use kuryr_openstack::Query;
use kuryr_openstack::types::neutron::{Port, SecurityGroupCreate};
use kuryr_stack_tests::openstack::Session;
use kuryr_stack_tests::{finally, unique_name, wait_until};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// A finalizer of someone else's, holding a deleted pod.
const HOLD: &str = "kuryr-test/hold";

/// A controller running in this process; unlike `common::Running` it shows
/// whether its task is still running, and asks it to stop when dropped (a
/// failed test then does not leave it acting while the cleanup runs).
struct Ctl {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

fn run_ctl(ctx: Arc<Context>) -> Ctl {
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(kuryr_controller::run(ctx, async {
        let _ = rx.await;
    }));
    Ctl {
        stop: Some(stop),
        task,
    }
}

impl Ctl {
    /// Its task has not ended (no panic, no return).
    fn alive(&self) -> bool {
        !self.task.is_finished()
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Options of these tests: no periodic reconciliation in the middle.
fn options() -> Options {
    Options {
        gc_interval: Duration::ZERO,
        ..Default::default()
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// The events kuryr-controller published about pod `name`.
async fn events_of(h: &Harness, name: &str) -> anyhow::Result<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(h.kube.clone(), &h.ns);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.reporting_controller.as_deref() == Some("kuryr-controller")
        })
        .collect())
}

/// The events of pod `name` with `reason`.
async fn events_with(h: &Harness, name: &str, reason: &str) -> anyhow::Result<Vec<Event>> {
    Ok(events_of(h, name)
        .await?
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect())
}

/// Waits for an event of pod `name` with `reason`.
async fn wait_event(
    h: &Harness,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> anyhow::Result<Event> {
    wait_until(
        &format!("a {reason} event on pod {name}"),
        timeout,
        Duration::from_millis(300),
        || async { Ok(events_with(h, name, reason).await?.into_iter().next()) },
    )
    .await
}

/// The VIF stored for pod `name` right now.
async fn vif_now(h: &Harness, name: &str) -> anyhow::Result<Option<Vif>> {
    Ok(h.kps
        .get_opt(name)
        .await?
        .and_then(|k| k.status)
        .and_then(|s| s.default_vif().cloned()))
}

fn ip_of(vif: &Vif) -> String {
    vif.network
        .subnets
        .iter()
        .flat_map(|s| s.ips.iter())
        .next()
        .cloned()
        .unwrap_or_default()
}

/// Every Neutron port on the test's network, whoever made it.
async fn network_ports(h: &Harness) -> anyhow::Result<Vec<Port>> {
    Ok(h.os
        .neutron()
        .list_ports(&Query::new().filter("network_id", &h.net.id))
        .await?)
}

/// Fails unless `check` answers `Ok(())` at every look during `d`.
async fn holds_for<F, Fut>(what: &str, d: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let end = tokio::time::Instant::now() + d;
    loop {
        check()
            .await
            .map_err(|e| e.context(format!("{what}: broken")))?;
        if tokio::time::Instant::now() >= end {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Nothing of this test's controller in Kubernetes or Neutron: no
/// KuryrPort, no port of the cluster, no port at all on the network.
async fn nothing_left(h: &Harness) -> anyhow::Result<()> {
    let kps = h.kps.list(&ListParams::default()).await?.items;
    anyhow::ensure!(
        kps.is_empty(),
        "KuryrPorts left: {:?}",
        kps.iter()
            .map(|k| k.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    let ports = network_ports(h).await?;
    anyhow::ensure!(
        ports.is_empty(),
        "ports left on the network: {:?}",
        ports.iter().map(|p| (&p.id, &p.name)).collect::<Vec<_>>()
    );
    let mine = h.cluster_ports().await?;
    anyhow::ensure!(mine.is_empty(), "ports of the cluster left: {mine:?}");
    Ok(())
}

/// The addresses Neutron can hand out on the test's subnet (its allocation
/// pools), less those already taken on its network.
async fn free_addresses(h: &Harness) -> anyhow::Result<usize> {
    let mut n = 0usize;
    for p in &h.subnet.allocation_pools {
        let a: Ipv4Addr = p.start.parse()?;
        let b: Ipv4Addr = p.end.parse()?;
        n += (u32::from(b) - u32::from(a) + 1) as usize;
    }
    Ok(n - network_ports(h).await?.len())
}

/// The value of a sample line `name{labels} v` of a Prometheus exposition.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

// ------------------------------------------------------------------ 1

#[tokio::test]
async fn a_pod_deleted_before_its_finalizer_leaves_nothing() -> anyhow::Result<()> {
    let h = Harness::new("fdel", "10.241.0.0/24").await?;
    let body = async {
        let node = NODE;

        // a pod held by someone else's finalizer, deleted before any
        // controller saw it: it waits, with a deletionTimestamp
        let mut p = h.pod("held", node)?;
        p.metadata.finalizers = Some(vec![HOLD.into()]);
        h.pods.create(&PostParams::default(), &p).await?;
        h.delete_pod("held").await?;
        let held = h.pods.get("held").await?;
        assert!(held.metadata.deletion_timestamp.is_some(), "being deleted");

        let ctx = h.context("", options()).await?;
        let ctl = run_ctl(ctx.clone());
        wait_until(
            "the controller handled the held pod",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async { Ok((ctx.metrics.pods_handled.load(Relaxed) > 0).then_some(())) },
        )
        .await?;
        holds_for(
            "nothing made for a pod already being deleted",
            Duration::from_secs(6),
            || async {
                let p = h.pods.get("held").await?;
                anyhow::ensure!(
                    p.metadata.finalizers.clone().unwrap_or_default() == vec![HOLD.to_string()],
                    "finalizers of the held pod: {:?}",
                    p.metadata.finalizers
                );
                nothing_left(&h).await?;
                let ev = events_of(&h, "held").await?;
                anyhow::ensure!(
                    ev.is_empty(),
                    "events: {:?}",
                    ev.iter().map(|e| (&e.reason, &e.note)).collect::<Vec<_>>()
                );
                Ok(())
            },
        )
        .await?;
        // our finalizer off: the pod goes at once
        h.pods
            .patch(
                "held",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await?;
        h.wait_pod_gone("held", Duration::from_secs(30)).await?;
        nothing_left(&h).await?;

        // pods deleted (grace 0) at once or soon after they were made, while
        // the controller runs: whatever it got to, everything goes with them
        let flash = names("flash", 6);
        let delays = [0u64, 0, 50, 150, 400, 1000];
        let before = ctx.metrics.pods_handled.load(Relaxed);
        for (name, ms) in flash.iter().zip(delays) {
            h.create_pods(std::slice::from_ref(name), node).await?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            h.delete_pod(name).await?;
        }
        for name in &flash {
            h.wait_pod_gone(name, Duration::from_secs(60)).await?;
        }
        assert!(
            ctx.metrics.pods_handled.load(Relaxed) > before,
            "the controller saw some of them"
        );
        holds_for(
            "nothing left of pods created and deleted at once",
            Duration::from_secs(5),
            || nothing_left(&h),
        )
        .await?;
        assert!(ctl.alive());
        ctl.stop().await;
        anyhow::Ok(())
    };
    finally(body, h.cleanup()).await
}

// ------------------------------------------------------------------ 2

#[tokio::test]
async fn a_deleted_security_group_gives_an_event_and_no_port() -> anyhow::Result<()> {
    let h = Harness::new("fsg", "10.242.0.0/24").await?;
    let sg =
        h.os.neutron()
            .create_security_group(&SecurityGroupCreate {
                name: unique_name("kuryr-fail-sg-", 60),
                ..Default::default()
            })
            .await;
    let sg = match sg {
        Ok(sg) => sg,
        Err(e) => {
            h.cleanup().await?;
            return Err(e.into());
        }
    };
    let body = async {
        let node = NODE;
        let extra = format!("[neutron_defaults]\npod_security_groups = {}\n", sg.id);
        let ctx = h.context(&extra, options()).await?;
        assert_eq!(ctx.settings.security_groups, vec![sg.id.clone()]);
        // the group goes after the controller read its configuration
        assert!(h.os.neutron().delete_security_group(&sg.id).await?);
        let ctl = run_ctl(ctx.clone());
        let uid = h.create_pods(&["web".to_string()], node).await?;

        let ev = wait_event(&h, "web", "SecurityGroupNotFound", Duration::from_secs(60)).await?;
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.action.as_deref(), Some("SetUpNetwork"));
        assert_eq!(
            ev.regarding.as_ref().and_then(|r| r.uid.as_deref()),
            Some(uid[0].as_str())
        );
        let note = ev.note.clone().unwrap_or_default();
        assert!(
            note.starts_with("Pod network not set up")
                && note.contains("SecurityGroupNotFound")
                && note.contains(&sg.id),
            "{note}"
        );
        assert!(ctx.metrics.errors_for("SecurityGroupNotFound") > 0);
        assert!(
            ctx.metrics
                .render()
                .contains("kuryr_pod_network_errors_total{reason=\"SecurityGroupNotFound\"}")
        );
        // nothing half-made, and it stays so while the pod is retried
        holds_for(
            "no VIF and no port for the pod",
            Duration::from_secs(4),
            || async {
                anyhow::ensure!(vif_now(&h, "web").await?.is_none(), "web has a VIF");
                let ports = network_ports(&h).await?;
                anyhow::ensure!(ports.is_empty(), "ports: {ports:?}");
                Ok(())
            },
        )
        .await?;
        assert!(h.cluster_ports().await?.is_empty());
        assert!(ctl.alive());

        // the group cannot come back under its id: deleting the pod
        // releases it (finalizer off), nothing left behind
        h.delete_pod("web").await?;
        h.wait_pod_gone("web", Duration::from_secs(60)).await?;
        wait_until(
            "web's KuryrPort gone",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async { Ok(h.kps.get_opt("web").await?.is_none().then_some(())) },
        )
        .await?;
        nothing_left(&h).await?;
        ctl.stop().await;
        anyhow::Ok(())
    };
    finally(body, async {
        let r = h.cleanup().await;
        // (already gone when the body got that far; 404 is done)
        h.os.neutron().delete_security_group(&sg.id).await?;
        r
    })
    .await
}

// ------------------------------------------------------------------ 3

/// What became of pods `names` once every one that can have a port has
/// one: their VIFs, and those without.
struct Outcome {
    vifs: BTreeMap<String, Vif>,
    waiting: Vec<String>,
}

/// Waits until `expected` of `names` have a VIF and each of the others has
/// an event with `reason`.
async fn settle(
    h: &Harness,
    names: &[String],
    expected: usize,
    reason: &str,
) -> anyhow::Result<Outcome> {
    wait_until(
        &format!("{expected} pods with a port, the others with a {reason} event"),
        Duration::from_secs(150),
        Duration::from_millis(500),
        || async {
            let mut vifs = BTreeMap::new();
            let mut waiting = Vec::new();
            for n in names {
                match vif_now(h, n).await? {
                    Some(v) => {
                        vifs.insert(n.clone(), v);
                    }
                    None => waiting.push(n.clone()),
                }
            }
            let mut no_event = Vec::new();
            for n in &waiting {
                if events_with(h, n, reason).await?.is_empty() {
                    no_event.push(n.clone());
                }
            }
            if vifs.len() >= expected && no_event.is_empty() {
                Ok(Some(Outcome { vifs, waiting }))
            } else {
                Err(anyhow::anyhow!(
                    "with a VIF: {:?}; without a VIF or event: {no_event:?}",
                    vifs.keys().collect::<Vec<_>>()
                ))
            }
        },
    )
    .await
}

/// Checks the pods that fit: one port each, distinct, of the cluster; and
/// the others: a Warning about the full subnet, counted in the metrics.
async fn check_full(
    h: &Harness,
    ctx: &Context,
    o: &Outcome,
    expected: usize,
    total: usize,
) -> anyhow::Result<()> {
    assert_eq!(o.vifs.len(), expected, "as many ports as addresses");
    assert_eq!(o.waiting.len(), total - expected);
    let ids: BTreeSet<&String> = o.vifs.values().map(|v| &v.id).collect();
    let ips: BTreeSet<String> = o.vifs.values().map(ip_of).collect();
    assert_eq!(ids.len(), expected, "distinct ports");
    assert_eq!(ips.len(), expected, "distinct addresses");
    let cluster: BTreeSet<String> = h.cluster_ports().await?.into_iter().map(|p| p.id).collect();
    assert_eq!(
        cluster,
        ids.iter().map(|s| s.to_string()).collect(),
        "every port of the cluster is a pod's"
    );
    for n in &o.waiting {
        let ev = events_with(h, n, "IpAddressGenerationFailure").await?;
        let e = &ev[0];
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        let note = e.note.clone().unwrap_or_default();
        assert!(note.starts_with("Pod network not set up"), "{note}");
        assert!(note.contains("IpAddressGenerationFailure"), "{note}");
    }
    let counted = ctx.metrics.errors_for("IpAddressGenerationFailure");
    assert!(
        counted >= o.waiting.len() as u64,
        "{counted} failures counted for {} pods",
        o.waiting.len()
    );
    let text = ctx.metrics.render();
    let rendered = sample(
        &text,
        "kuryr_pod_network_errors_total{reason=\"IpAddressGenerationFailure\"}",
    );
    assert!(
        rendered.is_some_and(|v| v >= o.waiting.len() as u64),
        "{text}"
    );
    Ok(())
}

/// A /29 without a pool: the pods that fit get ports, the others events;
/// the controller goes on, and a freed address goes to a waiting pod.
async fn full_subnet_noop() -> anyhow::Result<()> {
    let h = Harness::new("ffull", "10.243.0.0/29").await?;
    let body = async {
        let node = NODE;
        let expected = free_addresses(&h).await?;
        assert_eq!(expected, 5, "a /29 less network, gateway and broadcast");
        let total = expected + 2;
        let ctx = h.context("", options()).await?;
        let ctl = run_ctl(ctx.clone());
        let pods = names("full", total);
        h.create_pods(&pods, node).await?;
        let o = settle(&h, &pods, expected, "IpAddressGenerationFailure").await?;
        check_full(&h, &ctx, &o, expected, total).await?;
        assert!(ctl.alive(), "the controller is still running");
        assert!(ctx.metrics.is_ready());

        // an address freed: a waiting pod gets it (its back-off is at most
        // about a minute)
        let (gone, gone_vif) = o.vifs.iter().next().expect("some pod fits");
        h.delete_pod(gone).await?;
        h.wait_pod_gone(gone, Duration::from_secs(60)).await?;
        let (lucky, vif) = wait_until(
            "a waiting pod gets the freed address",
            Duration::from_secs(120),
            Duration::from_millis(500),
            || async {
                for n in &o.waiting {
                    if let Some(v) = vif_now(&h, n).await? {
                        return Ok(Some((n.clone(), v)));
                    }
                }
                Ok(None)
            },
        )
        .await?;
        assert_eq!(
            ip_of(&vif),
            ip_of(gone_vif),
            "{lucky} got the freed address"
        );
        assert_ne!(vif.id, gone_vif.id);
        assert!(
            h.os.neutron()
                .get_port(&gone_vif.id)
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert_eq!(h.cluster_ports().await?.len(), expected);
        assert!(ctl.alive(), "the controller is still running");
        ctl.stop().await;
        anyhow::Ok(())
    };
    finally(body, h.cleanup()).await
}

/// The same with a pool whose batch (10) is bigger than the addresses left:
/// the bulk create fails, the pool goes one port at a time, and the pods
/// that fit still get every address.
async fn full_subnet_pooled() -> anyhow::Result<()> {
    let h = Harness::new("ffpool", "10.245.0.0/29").await?;
    let body = async {
        let node = NODE;
        let expected = free_addresses(&h).await?;
        let total = expected + 2;
        let conf = "[kubernetes]\nvif_pool_driver = neutron\n[vif_pool]\nports_pool_batch = 10\nports_pool_min = 0\nports_pool_update_frequency = 1\n";
        let ctx = h
            .context(
                conf,
                Options {
                    pool_cool_down: Some(Duration::from_secs(1)),
                    ..options()
                },
            )
            .await?;
        assert!(ctx.pool.is_some());
        let ctl = run_ctl(ctx.clone());
        let pods = names("fpool", total);
        h.create_pods(&pods, node).await?;
        let o = match settle(&h, &pods, expected, "IpAddressGenerationFailure").await {
            Ok(o) => o,
            Err(e) => return Err(e.context(address_report(&h).await)),
        };
        check_full(&h, &ctx, &o, expected, total).await?;
        for v in o.vifs.values() {
            let p = h.os.neutron().get_port(&v.id).await?;
            assert_eq!(p.binding_host_id, node);
        }
        // what a batch may ask for came from one small answer, not from a
        // list of every port on the subnet
        let asked: u64 = ctx
            .os
            .call_counts()
            .iter()
            .filter(|(k, _)| k.resource == "network-ip-availabilities" && k.result == "2xx")
            .map(|(_, n)| n)
            .sum();
        assert!(asked > 0, "pool batches ask Neutron's IP availability");
        assert!(ctl.alive(), "the controller is still running");
        ctl.stop().await;
        anyhow::Ok(())
    };
    finally(body, h.cleanup()).await
}

/// What Neutron says of the test network's addresses, to explain a pool
/// whose pods got fewer addresses than the subnet had.
async fn address_report(h: &Harness) -> String {
    let ports = network_ports(h)
        .await
        .map(|p| p.len())
        .unwrap_or(usize::MAX);
    let avail = match Session::login(&h.env).await {
        Ok(s) => s
            .get(&s.n(&format!("network-ip-availabilities/{}", h.net.id)))
            .await
            .map(|v| {
                let a = &v["network_ip_availability"];
                format!("{} of {} addresses used", a["used_ips"], a["total_ips"])
            })
            .unwrap_or_else(|e| format!("{e:#}")),
        Err(e) => format!("{e:#}"),
    };
    format!(
        "{ports} ports on the network, Neutron says {avail}: when it counts addresses free \
         while creates fail with IpAddressGenerationFailure, a failed bulk create kept the \
         IPAM allocations it had made (Neutron's create_port_bulk allocates outside its \
         rollback), so a pool batch bigger than the free addresses uses them all up"
    )
}

#[tokio::test]
async fn a_full_subnet_gives_events_not_a_crash_loop() -> anyhow::Result<()> {
    // both, whatever the first gave
    let noop = full_subnet_noop().await;
    let pooled = full_subnet_pooled().await;
    match (noop, pooled) {
        (Ok(()), r) => r.map_err(|e| e.context("with a pool")),
        (Err(e), Ok(())) => Err(e.context("without a pool")),
        (Err(a), Err(b)) => Err(a.context(format!("without a pool; with a pool too: {b:#}"))),
    }
}

// ------------------------------------------------------------------ 4

#[tokio::test]
async fn a_port_stuck_down_gets_a_warning_event() -> anyhow::Result<()> {
    let h = Harness::new("fstuck", "10.246.0.0/24").await?;
    let body = async {
        let node = NODE;
        let ctx = h
            .context(
                "",
                Options {
                    active_warning: Duration::from_secs(3),
                    ..options()
                },
            )
            .await?;
        let ctl = run_ctl(ctx.clone());
        let uid = h.create_pods(&["web".to_string()], node).await?;
        let vif = h.vif_of("web", &uid[0], Duration::from_secs(60)).await?;
        let ev = wait_event(&h, "web", "PortNotActive", Duration::from_secs(30)).await?;
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        let note = ev.note.clone().unwrap_or_default();
        assert!(
            note.contains(&vif.id) && note.contains("not ACTIVE") && note.contains(node),
            "{note}"
        );
        let port = h.os.neutron().get_port(&vif.id).await?;
        assert_ne!(port.status, "ACTIVE", "no agent on the node");
        assert_eq!(ctx.metrics.ports_stuck.load(Relaxed), 1);
        assert!(ctx.metrics.render().contains("kuryr_ports_stuck_total 1\n"));

        // told once: several warning periods later, still one
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert!(
            ctx.metrics.pods_handled.load(Relaxed) > 3,
            "the pod was looked at again meanwhile"
        );
        assert_eq!(ctx.metrics.ports_stuck.load(Relaxed), 1);
        assert_eq!(ctx.metrics.errors_for("PortNotActive"), 1);
        let evs = events_with(&h, "web", "PortNotActive").await?;
        assert_eq!(evs.len(), 1, "one event");
        assert!(evs[0].series.is_none(), "not repeated: {:?}", evs[0].series);
        assert!(ctl.alive());
        ctl.stop().await;
        anyhow::Ok(())
    };
    finally(body, h.cleanup()).await
}

// ------------------------------------------------------------------ 5

/// Makes a Keystone project of this test's (in the admin's domain).
async fn make_project(
    s: &Session,
    env: &kuryr_stack_tests::env::StackEnv,
) -> anyhow::Result<String> {
    let auth = env.get("OS_AUTH_URL")?.trim_end_matches('/');
    let domain = s.token_body["project"]["domain"]["id"]
        .as_str()
        .unwrap_or("default")
        .to_owned();
    let v = s
        .post(
            &format!("{auth}/projects"),
            json!({"project": {"name": unique_name("kuryr-fail-quota-", 60),
                               "domain_id": domain,
                               "description": "kuryr-rs failures.rs quota test"}}),
        )
        .await?;
    v["project"]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("Keystone made no project: {v}"))
}

/// Undoes what the quota test did to its project: quota back to the
/// defaults (checked), its security groups and the project deleted.
async fn drop_project(
    h: &Harness,
    s: &Session,
    project: &str,
    quota_before: Option<i64>,
) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    if let Err(e) = s.delete(&s.n(&format!("quotas/{project}"))).await {
        errors.push(format!("{e:#}"));
    }
    if let Some(before) = quota_before {
        match h.os.neutron().quota(project).await {
            Ok(q) if q.get("port") == Some(&before) => {}
            Ok(q) => errors.push(format!("port quota not restored: {:?}", q.get("port"))),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let n = h.os.neutron();
    match n
        .list_security_groups(&Query::new().filter("project_id", project))
        .await
    {
        Ok(sgs) => {
            for sg in sgs {
                if let Err(e) = n.delete_security_group(&sg.id).await {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        Err(e) => errors.push(format!("{e:#}")),
    }
    let auth = h.env.get("OS_AUTH_URL")?.trim_end_matches('/').to_owned();
    if let Err(e) = s.delete(&format!("{auth}/projects/{project}")).await {
        errors.push(format!("{e:#}"));
    }
    anyhow::ensure!(errors.is_empty(), "{errors:?}");
    Ok(())
}

#[tokio::test]
async fn an_exhausted_port_quota_leaves_nothing_untagged() -> anyhow::Result<()> {
    const QUOTA: usize = 3;
    let h = Harness::new("fquota", "10.247.0.0/24").await?;
    let s = match Session::login(&h.env).await {
        Ok(s) => s,
        Err(e) => {
            h.cleanup().await?;
            return Err(e);
        }
    };
    // the project, and its port quota before the test (for the cleanup)
    let made: std::sync::Mutex<(Option<String>, Option<i64>)> = Default::default();
    let body = async {
        let project = make_project(&s, &h.env).await?;
        made.lock().unwrap().0 = Some(project.clone());
        let n = h.os.neutron();
        let before = n.quota(&project).await?;
        let port_before = *before
            .get("port")
            .ok_or_else(|| anyhow::anyhow!("no port quota: {before:?}"))?;
        made.lock().unwrap().1 = Some(port_before);
        assert_ne!(port_before, QUOTA as i64);
        s.put(
            &s.n(&format!("quotas/{project}")),
            json!({"quota": {"port": QUOTA}}),
        )
        .await?;
        assert_eq!(n.quota(&project).await?.get("port"), Some(&(QUOTA as i64)));
        // a group of the project's own for its ports
        let sg = n
            .create_security_group(&SecurityGroupCreate {
                name: unique_name("kuryr-fail-qsg-", 60),
                project_id: Some(project.clone()),
                ..Default::default()
            })
            .await?;

        let node = NODE;
        let extra = format!(
            "[neutron_defaults]\nproject = {project}\npod_security_groups = {}\n",
            sg.id
        );
        let ctx = h.context(&extra, options()).await?;
        let ctl = run_ctl(ctx.clone());
        // one pod at a time: Neutron's quota check does not hold against
        // concurrent creates (six at once with room for three make six)
        let pods = names("q", QUOTA + 2);
        for (i, name) in pods.iter().enumerate() {
            let uid = h.create_pods(std::slice::from_ref(name), node).await?;
            if i < QUOTA {
                h.vif_of(name, &uid[0], Duration::from_secs(60)).await?;
            } else {
                wait_event(&h, name, "OverQuota", Duration::from_secs(60)).await?;
            }
        }
        let o = settle(&h, &pods, QUOTA, "OverQuota").await?;
        assert_eq!(o.vifs.len(), QUOTA, "as many ports as the quota allows");
        assert_eq!(o.waiting, pods[QUOTA..].to_vec());
        for name in &o.waiting {
            let ev = events_with(&h, name, "OverQuota").await?;
            assert_eq!(ev[0].type_.as_deref(), Some("Warning"));
            let note = ev[0].note.clone().unwrap_or_default();
            assert!(note.contains("OverQuota"), "{note}");
        }
        assert!(ctx.metrics.errors_for("OverQuota") >= o.waiting.len() as u64);

        // every port on the network is a pod's, tagged, in the project
        holds_for(
            "every port on the network tagged",
            Duration::from_secs(8),
            || async {
                let ports = network_ports(&h).await?;
                anyhow::ensure!(ports.len() == QUOTA, "{} ports on the network", ports.len());
                for p in &ports {
                    anyhow::ensure!(
                        p.tags.contains(&plan::cluster_tag(&h.cluster))
                            && p.tags.contains(&"kuryr-rs-test".to_string())
                            && p.tags.iter().any(|t| t.starts_with("kuryr-pod:")),
                        "port {} ({}) tags {:?}",
                        p.id,
                        p.name,
                        p.tags
                    );
                    anyhow::ensure!(p.project_id == project, "port {} in {}", p.id, p.project_id);
                }
                Ok(())
            },
        )
        .await?;
        let ids: BTreeSet<String> = o.vifs.values().map(|v| v.id.clone()).collect();
        let on_net: BTreeSet<String> = network_ports(&h).await?.into_iter().map(|p| p.id).collect();
        assert_eq!(ids, on_net);
        assert!(ctl.alive());

        // the pods go: so does everything
        h.delete_all_pods(Duration::from_secs(90)).await?;
        wait_until(
            "nothing left after the pods",
            Duration::from_secs(30),
            Duration::from_millis(300),
            || async { Ok(nothing_left(&h).await.ok()) },
        )
        .await?;
        ctl.stop().await;
        anyhow::Ok(())
    };
    finally(body, async {
        let r = h.cleanup().await;
        let (project, before) = made.lock().unwrap().clone();
        let undo = match project {
            Some(p) => drop_project(&h, &s, &p, before).await,
            None => Ok(()),
        };
        r.and(undo)
    })
    .await
}

// ------------------------------------------------------------------ unreadable VIF

/// A KuryrPort holding a VIF class kuryr-rs does not implement (upstream's
/// `VIFVHostUser`) stalls nothing: the controller starts, lists and serves
/// the other pods; that object gets a Warning event and is left exactly as
/// written; its port is not taken for a leak by start-up reconciliation;
/// and when its pod goes, the KuryrPort is released like any other.
#[tokio::test]
async fn a_kuryrport_with_an_unreadable_vif_is_skipped_and_the_rest_goes_on() -> anyhow::Result<()>
{
    let h = Harness::new("funread", "10.227.0.0/24").await?;
    let body = async {
        let ctx = h.context("", options()).await?;
        // before the controller: the odd pod, its port (made as the
        // controller makes a pod's, so tagged for the cluster), and a
        // KuryrPort whose VIF names that port in a class kuryr-rs lacks
        let mut odd = h.pod("odd-0", NODE)?;
        odd.metadata.finalizers = Some(vec![kuryr_crds::POD_FINALIZER.into()]);
        let odd = h.pods.create(&PostParams::default(), &odd).await?;
        let uid = odd.metadata.uid.clone().unwrap_or_default();
        let (port, _) = ctx.drivers.ensure_pod_port(&uid, NODE).await?;
        let vhu = json!({"default": true, "vif": {
            "versioned_object.name": "VIFVHostUser",
            "versioned_object.namespace": "os_vif",
            "versioned_object.version": "1.1",
            "versioned_object.data": {"id": port.id, "address": port.mac_address,
                "mode": "server", "path": "/var/run/openvswitch/vhu0",
                "vif_name": "vhu0", "has_traffic_filtering": true, "active": true,
                "preserve_on_delete": false, "plugin": "ovs"}}});
        let raw = json!({
            "apiVersion": "openstack.org/v1", "kind": "KuryrPort",
            "metadata": {"name": "odd-0",
                         "labels": {kuryr_crds::NODE_NAME_LABEL: NODE},
                         "finalizers": [kuryr_crds::KURYRPORT_FINALIZER]},
            "spec": {"podUid": uid, "podNodeName": NODE},
            "status": {"vifs": {"eth0": vhu, "net1": "junk"}}
        });
        let dynamic: Api<kube::api::DynamicObject> = Api::namespaced_with(
            h.kube.clone(),
            &h.ns,
            &kube::api::ApiResource::erase::<kuryr_crds::KuryrPort>(&()),
        );
        dynamic
            .create(&PostParams::default(), &serde_json::from_value(raw)?)
            .await?;
        let stored = |d: kube::api::DynamicObject| d.data["status"].clone();
        let before = stored(dynamic.get("odd-0").await?);

        let ctl = run_ctl(ctx.clone());
        // start-up reconciliation, listing and the handlers go on
        let fine = h.create_pods(&names("fine", 1), NODE).await?.remove(0);
        let vif = h.vif_of("fine-0", &fine, Duration::from_secs(90)).await?;
        assert!(
            h.os.neutron().get_port(&vif.id).await.is_ok(),
            "the other pod got its port"
        );
        let ev = wait_event(&h, "odd-0", "UnreadableVif", Duration::from_secs(60)).await?;
        let note = ev.note.unwrap_or_default();
        assert!(note.contains("VIFVHostUser"), "{note}");
        assert_eq!(
            ev.regarding.and_then(|r| r.kind).as_deref(),
            Some("KuryrPort"),
            "the event is about the KuryrPort (the pod gets one too)"
        );
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert!(ctl.alive());
        // left exactly as written, its port not taken for a leak
        assert_eq!(stored(dynamic.get("odd-0").await?), before);
        assert!(
            h.os.neutron().get_port(&port.id).await.is_ok(),
            "the unreadable VIF's port is still in use"
        );

        // its pod goes: released like any other (the port by its pod tag)
        h.delete_pod("odd-0").await?;
        wait_until(
            "the unreadable KuryrPort released",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || async { Ok(h.kps.get_opt("odd-0").await?.is_none().then_some(())) },
        )
        .await?;
        assert!(
            h.port_gone(&port.id).await?,
            "the odd pod's port was released with it"
        );
        h.delete_pod("fine-0").await?;
        h.wait_pod_gone("fine-0", Duration::from_secs(60)).await?;
        ctl.stop().await;
        nothing_left(&h).await
    };
    finally(body, h.cleanup()).await
}
