//! The nested drivers against the stack's real kube-apiserver and Neutron
//! (with its trunk extension): pods of a node that is itself a VM get ports
//! that reach the VM's NIC, as subports of the VM port's trunk on VLAN ids
//! of their own (nested-vlan, with and without a pool), or as allowed
//! address pairs of the VM port (nested-macvlan); a node whose VM port
//! cannot be found gets an event, not a port.
//!
//! Each test makes a "worker" network standing for the node VMs' network, a
//! port on it standing for the node VM (never bound to a host), a trunk on
//! that port (nested-vlan) and a Node object whose InternalIP is the port's
//! address, and removes all of it afterwards, whatever happened.
#![cfg(feature = "stack")]

mod common;

use common::{Harness, Running, start};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kuryr_controller::pool::FREE_PORT_NAME;
use kuryr_controller::{Context, Options, plan, startup};
use kuryr_crds::{Vif, VifKind};
use kuryr_openstack::Query;
use kuryr_openstack::types::neutron::{
    FixedIp, Network, NetworkCreate, Port, PortCreate, SubPort, Subnet, SubnetCreate, TrunkCreate,
};
use kuryr_stack_tests::{finally, unique_name, wait_until};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One test at a time: the machine is small and shared, and each test
/// runs its own controller and up to a dozen pods.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const VIF_WAIT: Duration = Duration::from_secs(60);

/// The node VMs' network of one test: its subnet, the VM's port and the
/// trunk whose parent that port is (nested-vlan only).
struct Worker {
    subnet: Subnet,
    vm: Port,
    trunk: Option<String>,
}

impl Worker {
    fn ip(&self) -> &str {
        self.vm.first_ip().expect("the VM port has an address")
    }

    fn trunk(&self) -> &str {
        self.trunk.as_deref().expect("a trunk was made")
    }
}

/// A harness plus what the nested tests make beyond it: the worker
/// network (with the VM port and its trunk) and the running controllers.
struct World {
    h: Harness,
    worker_net: Mutex<Option<Network>>,
    ctls: Mutex<Vec<Running>>,
}

impl World {
    async fn new(prefix: &str, pod_cidr: &str) -> anyhow::Result<Self> {
        Ok(Self {
            h: Harness::new(prefix, pod_cidr).await?,
            worker_net: Mutex::new(None),
            ctls: Mutex::new(Vec::new()),
        })
    }

    /// The worker network and subnet `cidr`, a VM port on it (not bound to
    /// any host) and, with `trunk`, a trunk with that port as parent.
    async fn worker(&self, cidr: &str, trunk: bool) -> anyhow::Result<Worker> {
        let n = self.h.os.neutron();
        let net = n
            .create_network(&NetworkCreate {
                name: Some(unique_name("nested-workers-", 40)),
                ..Default::default()
            })
            .await?;
        *self.worker_net.lock().unwrap() = Some(net.clone());
        let subnet = n
            .create_subnet(&SubnetCreate {
                network_id: net.id.clone(),
                ip_version: 4,
                cidr: Some(cidr.into()),
                enable_dhcp: Some(false),
                ..Default::default()
            })
            .await?;
        let vm = n
            .create_port(&PortCreate {
                network_id: net.id.clone(),
                name: Some(unique_name("nested-vm-", 40)),
                fixed_ips: Some(vec![FixedIp {
                    subnet_id: Some(subnet.id.clone()),
                    ip_address: None,
                }]),
                ..Default::default()
            })
            .await?;
        let trunk = if trunk {
            Some(
                n.create_trunk(&TrunkCreate {
                    port_id: vm.id.clone(),
                    name: Some(unique_name("nested-trunk-", 40)),
                    ..Default::default()
                })
                .await?
                .id,
            )
        } else {
            None
        };
        Ok(Worker { subnet, vm, trunk })
    }

    /// Starts a controller of `ctx`, stopped by [`World::stop_all`] (or by
    /// the cleanup, whatever happens to the test).
    fn start(&self, ctx: Arc<Context>) {
        self.ctls.lock().unwrap().push(start(ctx));
    }

    async fn stop_all(&self) {
        let ctls: Vec<Running> = self.ctls.lock().unwrap().drain(..).collect();
        for c in ctls {
            c.stop().await;
        }
    }

    /// Trunks whose parent is on the worker network: subports off, then the
    /// trunk itself (before its parent port can go).
    async fn remove_trunks(&self, net: &Network) -> anyhow::Result<()> {
        let n = self.h.os.neutron();
        for p in n
            .list_ports(&Query::new().filter("network_id", &net.id))
            .await?
        {
            for t in n
                .list_trunks(&Query::new().filter("port_id", &p.id))
                .await?
            {
                let subs: Vec<String> = n
                    .get_subports(&t.id)
                    .await?
                    .into_iter()
                    .map(|s| s.port_id)
                    .collect();
                if !subs.is_empty() {
                    n.remove_subports_if_present(&t.id, &subs).await?;
                }
                n.delete_trunk(&t.id).await?;
            }
        }
        Ok(())
    }

    /// Every port on the worker network, then the network.
    async fn remove_worker_net(&self, net: &Network) -> anyhow::Result<()> {
        let n = self.h.os.neutron();
        for p in n
            .list_ports(&Query::new().filter("network_id", &net.id))
            .await?
        {
            n.delete_port(&p.id).await?;
        }
        n.delete_network(&net.id).await?;
        Ok(())
    }

    /// Controllers stopped; trunks (subports first), the harness's world
    /// (namespace, nodes, pod ports, pod network), the VM ports and the
    /// worker network removed. Every step runs even if one before failed;
    /// the first failure is answered.
    async fn cleanup(&self) -> anyhow::Result<()> {
        self.stop_all().await;
        let net = self.worker_net.lock().unwrap().clone();
        let mut results = Vec::new();
        if let Some(net) = &net {
            results.push(self.remove_trunks(net).await);
        }
        results.push(self.h.cleanup().await);
        if let Some(net) = &net {
            results.push(self.remove_worker_net(net).await);
        }
        results.into_iter().collect()
    }
}

/// kuryr.conf for a nested driver on `worker_subnet`, `more` appended.
fn nested_conf(driver: &str, worker_subnet: &str, more: &str) -> String {
    format!(
        "[kubernetes]\npod_vif_driver = {driver}\n{more}[pod_vif_nested]\nworker_nodes_subnets = {worker_subnet}\n"
    )
}

fn options() -> Options {
    Options {
        gc_interval: Duration::ZERO,
        ..Default::default()
    }
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// The trunk's subports: port id → (segmentation type, VLAN id).
async fn subports(h: &Harness, trunk: &str) -> anyhow::Result<BTreeMap<String, (String, u32)>> {
    Ok(h.os
        .neutron()
        .get_subports(trunk)
        .await?
        .into_iter()
        .map(|s| (s.port_id, (s.segmentation_type, s.segmentation_id)))
        .collect())
}

/// The VLAN id of a nested-vlan VIF.
fn vlan_of(vif: &Vif) -> u16 {
    match &vif.kind {
        VifKind::VlanNested { vlan_id } => *vlan_id,
        k => panic!("VIF {} is {k:?}, not VlanNested", vif.id),
    }
}

/// The VIFs of pods `names` (UIDs `uids`), by pod name.
async fn vifs_of(
    h: &Harness,
    names: &[String],
    uids: &[String],
) -> anyhow::Result<BTreeMap<String, Vif>> {
    let mut out = BTreeMap::new();
    for (name, uid) in names.iter().zip(uids) {
        match h.vif_of(name, uid, VIF_WAIT).await {
            Ok(vif) => out.insert(name.clone(), vif),
            Err(e) => {
                let why = warnings_of(h, name).await.unwrap_or_default();
                return Err(e.context(format!("warning events on pod {name}: {why:?}")));
            }
        };
    }
    Ok(out)
}

/// The events.k8s.io/v1 events about pod `name` in the test's namespace.
async fn events_of(h: &Harness, name: &str) -> anyhow::Result<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(h.kube.clone(), &h.ns);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect())
}

/// "reason: note" of the Warning events about pod `name`.
async fn warnings_of(h: &Harness, name: &str) -> anyhow::Result<Vec<String>> {
    Ok(events_of(h, name)
        .await?
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default()
            )
        })
        .collect())
}

/// The ids of the cluster's ports.
async fn cluster_port_ids(h: &Harness) -> anyhow::Result<BTreeSet<String>> {
    Ok(h.cluster_ports().await?.into_iter().map(|p| p.id).collect())
}

/// The VM port's allowed address pairs as (IP, MAC).
async fn pairs_of(h: &Harness, vm_port: &str) -> anyhow::Result<BTreeSet<(String, String)>> {
    Ok(h.os
        .neutron()
        .get_port(vm_port)
        .await?
        .allowed_address_pairs
        .into_iter()
        .map(|p| (p.ip_address, p.mac_address.unwrap_or_default()))
        .collect())
}

/// A pod port's (IP, MAC), as Neutron has it.
async fn ip_mac(h: &Harness, port_id: &str) -> anyhow::Result<(String, String)> {
    let p = h.os.neutron().get_port(port_id).await?;
    let ip = p
        .first_ip()
        .ok_or_else(|| anyhow::anyhow!("port {port_id} has no address"))?
        .to_owned();
    Ok((ip, p.mac_address))
}

#[tokio::test]
async fn nested_vlan_pods_get_subports_with_distinct_vlan_ids() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let w = World::new("nvlan", "10.230.0.0/24").await?;
    let h = &w.h;
    let node = unique_name("kuryr-nvlan-node-", 50);
    let body = async {
        let wk = w.worker("10.231.0.0/24", true).await?;
        let trunk = wk.trunk();
        let n = h.os.neutron();
        // a subport the trunk had before the controller came: VLAN 1 is taken
        let before = n
            .create_port(&PortCreate {
                network_id: wk.subnet.network_id.clone(),
                name: Some("not-kuryrs-subport".into()),
                ..Default::default()
            })
            .await?;
        n.add_subports(trunk, &[SubPort::vlan(before.id.clone(), 1)])
            .await?;
        h.make_node(&node, wk.ip()).await?;
        let conf = nested_conf("nested-vlan", &wk.subnet.id, "");
        w.start(h.context(&conf, options()).await?);

        // 8 pods: 8 subports of the VM's trunk, VLAN ids distinct, not 1
        let all = names("vlan", 0..8);
        let uids = h.create_pods(&all, &node).await?;
        let vifs = vifs_of(h, &all, &uids).await?;
        let mut vlans = BTreeSet::new();
        for (name, vif) in &vifs {
            let v = vlan_of(vif);
            assert!((1..=4094).contains(&v), "{name}: VLAN id {v}");
            assert_ne!(v, 1, "{name} got the VLAN id of the subport already there");
            assert!(vlans.insert(v), "{name}: VLAN id {v} given twice");
        }
        let mut want: BTreeMap<String, (String, u32)> = vifs
            .values()
            .map(|v| (v.id.clone(), ("vlan".to_string(), u32::from(vlan_of(v)))))
            .collect();
        want.insert(before.id.clone(), ("vlan".into(), 1));
        assert_eq!(subports(h, trunk).await?, want, "the trunk's subports");
        assert_eq!(
            cluster_port_ids(h).await?,
            vifs.values().map(|v| v.id.clone()).collect(),
            "one port per pod, nothing else"
        );

        // 3 pods deleted: their subports and ports go, the others stay
        let gone = &all[..3];
        for name in gone {
            h.delete_pod(name).await?;
        }
        for name in gone {
            h.wait_pod_gone(name, Duration::from_secs(60)).await?;
        }
        for name in gone {
            let id = &vifs[name].id;
            want.remove(id);
            assert!(h.port_gone(id).await?, "{name}'s port {id} deleted");
        }
        assert_eq!(
            subports(h, trunk).await?,
            want,
            "only the deleted pods' subports removed"
        );
        for (name, uid) in all.iter().zip(&uids).skip(3) {
            assert_eq!(
                &h.vif_of(name, uid, VIF_WAIT).await?,
                &vifs[name],
                "{name} untouched"
            );
        }

        // a restarted controller makes nothing for the 5 pods left
        let ports_before = cluster_port_ids(h).await?;
        assert_eq!(ports_before.len(), 5);
        w.stop_all().await;
        let ctx2 = h.context(&conf, options()).await?;
        w.start(ctx2.clone());
        wait_until(
            "the new controller handled the 5 pods",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async { Ok((ctx2.metrics.pods_handled.load(Relaxed) >= 5).then_some(())) },
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(ctx2.metrics.ports_created.load(Relaxed), 0);
        assert_eq!(cluster_port_ids(h).await?, ports_before, "no port made");
        assert_eq!(subports(h, trunk).await?, want, "no subport changed");
        for (name, uid) in all.iter().zip(&uids).skip(3) {
            assert_eq!(
                &h.vif_of(name, uid, VIF_WAIT).await?,
                &vifs[name],
                "{name}'s VIF kept"
            );
        }

        // a new pod gets a VLAN id no subport uses
        let in_use: BTreeSet<u32> = want.values().map(|(_, v)| *v).collect();
        let new = vec!["vlan-8".to_string()];
        let uid = h.create_pods(&new, &node).await?;
        let vif = h.vif_of(&new[0], &uid[0], VIF_WAIT).await?;
        let v = u32::from(vlan_of(&vif));
        assert!((1..=4094).contains(&v));
        assert!(
            !in_use.contains(&v),
            "VLAN id {v} already in use: {in_use:?}"
        );
        want.insert(vif.id.clone(), ("vlan".into(), v));
        assert_eq!(subports(h, trunk).await?, want);
        assert_eq!(ctx2.metrics.ports_created.load(Relaxed), 1);
        anyhow::Ok(())
    };
    finally(body, w.cleanup()).await
}

#[tokio::test]
async fn nested_vlan_pool_precreates_subports_and_rebuilds_them() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let w = World::new("nvpool", "10.232.0.0/24").await?;
    let h = &w.h;
    let node = unique_name("kuryr-nvpool-node-", 50);
    let body = async {
        let wk = w.worker("10.233.0.0/24", true).await?;
        let trunk = wk.trunk();
        let n = h.os.neutron();
        h.make_node(&node, wk.ip()).await?;
        let conf = nested_conf(
            "nested-vlan",
            &wk.subnet.id,
            "vif_pool_driver = nested\n[vif_pool]\nports_pool_min = 4\nports_pool_batch = 4\nports_pool_max = 0\nports_pool_update_frequency = 1\n",
        );
        let opts = |dry_run: bool| Options {
            gc_interval: Duration::ZERO,
            gc_dry_run: dry_run,
            pool_cool_down: Some(Duration::from_secs(1)),
            prefill_nodes: Some(format!("kuryr-test={}", h.label)),
            ..Default::default()
        };
        let ctx = h.context(&conf, opts(false)).await?;
        w.start(ctx.clone());

        // before any pod: one batch of 4 free ports, subports of the trunk
        let pre = wait_until(
            "the trunk's pool pre-filled",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || async {
                let s = subports(h, trunk).await?;
                Ok((s.len() >= 4).then_some(s))
            },
        )
        .await?;
        assert_eq!(pre.len(), 4, "one batch of ports_pool_batch: {pre:?}");
        let mut seen = BTreeSet::new();
        for (id, (kind, vlan)) in &pre {
            assert_eq!(kind, "vlan");
            assert!((1..=4094).contains(vlan) && seen.insert(*vlan), "{pre:?}");
            let p = n.get_port(id).await?;
            assert_eq!(p.name, FREE_PORT_NAME, "subport {id} is a free pool port");
            assert_eq!(p.network_id, h.net.id);
        }
        assert_eq!(
            cluster_port_ids(h).await?,
            pre.keys().cloned().collect(),
            "the subports are the cluster's ports"
        );

        // two pods take two of them, on the subports' VLAN ids
        let pods = names("pool", 0..2);
        let uids = h.create_pods(&pods, &node).await?;
        let vifs = vifs_of(h, &pods, &uids).await?;
        for (name, vif) in &vifs {
            let (_, vlan) = pre
                .get(&vif.id)
                .unwrap_or_else(|| panic!("{name}'s port {} is no pool subport", vif.id));
            assert_eq!(u32::from(vlan_of(vif)), *vlan, "{name}'s VLAN id");
        }
        assert_ne!(vifs["pool-0"].id, vifs["pool-1"].id);
        // two free left, under the minimum: another batch of 4 on the trunk
        let all = wait_until(
            "the trunk's pool refilled",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || async {
                let s = subports(h, trunk).await?;
                Ok((s.len() >= 8).then_some(s))
            },
        )
        .await?;
        assert_eq!(all.len(), 8, "{all:?}");
        let pool = ctx.pool.clone().expect("pool driver on");
        wait_until(
            "the pool settled at 6 free, 2 used",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async {
                Ok(pool
                    .sizes()
                    .iter()
                    .any(|(k, free, cooling, used)| {
                        k.host == trunk && *free == 6 && *cooling == 0 && *used == 2
                    })
                    .then_some(()))
            },
        )
        .await?;
        w.stop_all().await;

        // a new controller rebuilds the pool from the trunk
        let used: BTreeSet<String> = vifs.values().map(|v| v.id.clone()).collect();
        let free: Vec<String> = all
            .keys()
            .filter(|id| !used.contains(*id))
            .cloned()
            .collect();
        let ctx2 = h.context(&conf, opts(false)).await?;
        let r = startup::reconcile(&ctx2, None).await?;
        assert_eq!(
            (r.adopted, r.in_use, r.leaked.len(), r.removed),
            (free.len(), 2, 0, 0),
            "{r:?}"
        );
        let pool2 = ctx2.pool.clone().expect("pool driver on");
        for id in all.keys() {
            assert!(pool2.knows(id), "subport {id} back in the pool");
        }
        assert_eq!(subports(h, trunk).await?, all, "the trunk unchanged");

        // a subport made for a pod that no longer exists is a leak
        let fake_uid = "0000-gone-nested-pod";
        let mut body = ctx2.drivers.port_body(Some(fake_uid), trunk);
        body.name = Some(format!("kuryr-{fake_uid}"));
        // Neutron makes no subport of a port with a device_id (PortInUse):
        // a pod's port on a trunk has none
        body.device_id = None;
        let mut tags = ctx2.drivers.tags.clone();
        tags.push(plan::pod_tag(fake_uid));
        let leaked = n.create_port_tagged(&body, &tags).await?;
        let taken: BTreeSet<u32> = all.values().map(|(_, v)| *v).collect();
        let vlan = (100..4094)
            .find(|v| !taken.contains(v))
            .expect("a free VLAN");
        n.add_subports(trunk, &[SubPort::vlan(leaked.id.clone(), vlan)])
            .await?;
        let dry = h.context(&conf, opts(true)).await?;
        let r = startup::reconcile(&dry, None).await?;
        assert_eq!(r.leaked, vec![leaked.id.clone()], "{r:?}");
        assert_eq!(
            (r.removed, r.adopted, r.in_use),
            (0, free.len(), 2),
            "{r:?}"
        );
        assert!(
            subports(h, trunk).await?.contains_key(&leaked.id),
            "dry run: still a subport"
        );
        assert!(!h.port_gone(&leaked.id).await?, "dry run deletes nothing");

        let real = h.context(&conf, opts(false)).await?;
        let r = startup::reconcile(&real, None).await?;
        assert_eq!(r.leaked, vec![leaked.id.clone()], "{r:?}");
        assert_eq!(
            (r.removed, r.adopted, r.in_use),
            (1, free.len(), 2),
            "{r:?}"
        );
        assert!(h.port_gone(&leaked.id).await?, "the leaked port deleted");
        assert_eq!(
            subports(h, trunk).await?,
            all,
            "no orphan subport; the pool's untouched"
        );
        assert_eq!(real.metrics.leaked_removed.load(Relaxed), 1);
        anyhow::Ok(())
    };
    finally(body, w.cleanup()).await
}

#[tokio::test]
async fn nested_macvlan_pods_become_address_pairs_of_the_vm_port() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let w = World::new("nmacvlan", "10.234.0.0/24").await?;
    let h = &w.h;
    let node = unique_name("kuryr-nmacvlan-node-", 50);
    let body = async {
        let wk = w.worker("10.235.0.0/24", false).await?;
        assert!(wk.vm.allowed_address_pairs.is_empty());
        h.make_node(&node, wk.ip()).await?;
        let conf = nested_conf("nested-macvlan", &wk.subnet.id, "");
        w.start(h.context(&conf, options()).await?);

        let all = names("mac", 0..4);
        let uids = h.create_pods(&all, &node).await?;
        let vifs = vifs_of(h, &all, &uids).await?;
        let mut addr = BTreeMap::new();
        for (name, vif) in &vifs {
            assert_eq!(vif.kind, VifKind::MacvlanNested, "{name}");
            let (ip, mac) = ip_mac(h, &vif.id).await?;
            assert_eq!(vif.address, mac, "{name}'s VIF MAC");
            addr.insert(name.clone(), (ip, mac));
        }
        assert_eq!(
            pairs_of(h, &wk.vm.id).await?,
            addr.values().cloned().collect(),
            "the VM port's allowed address pairs: exactly the pods'"
        );

        let (gone, kept) = all.split_at(2);
        for name in gone {
            h.delete_pod(name).await?;
        }
        for name in gone {
            h.wait_pod_gone(name, Duration::from_secs(60)).await?;
            assert!(h.port_gone(&vifs[name].id).await?, "{name}'s port deleted");
        }
        assert_eq!(
            pairs_of(h, &wk.vm.id).await?,
            kept.iter().map(|n| addr[n].clone()).collect(),
            "only the deleted pods' pairs removed"
        );
        for name in kept {
            assert!(!h.port_gone(&vifs[name].id).await?, "{name}'s port kept");
        }
        anyhow::Ok(())
    };
    finally(body, w.cleanup()).await
}

#[tokio::test]
async fn nested_node_without_a_vm_port_gets_an_event_and_no_port() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let w = World::new("nnovm", "10.230.1.0/24").await?;
    let h = &w.h;
    let node = unique_name("kuryr-nnovm-node-", 50);
    let body = async {
        // the worker subnet has a VM port, but not at the node's address;
        // a port with the node's address exists on another (the pod) subnet
        let wk = w.worker("10.231.1.0/24", true).await?;
        let n = h.os.neutron();
        let decoy = n
            .create_port(&PortCreate {
                network_id: h.net.id.clone(),
                name: Some("not-on-a-worker-subnet".into()),
                fixed_ips: Some(vec![FixedIp {
                    subnet_id: Some(h.subnet.id.clone()),
                    ip_address: Some("10.230.1.250".into()),
                }]),
                ..Default::default()
            })
            .await?;
        h.make_node(&node, "10.230.1.250").await?;
        let conf = nested_conf("nested-vlan", &wk.subnet.id, "");
        let ctx = h.context(&conf, options()).await?;
        w.start(ctx.clone());

        let pod = "lost-0".to_string();
        h.create_pods(std::slice::from_ref(&pod), &node).await?;
        let ev = wait_until(
            "a NodeVmNotFound event on the pod",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || async {
                Ok(events_of(h, &pod)
                    .await?
                    .into_iter()
                    .find(|e| e.reason.as_deref() == Some("NodeVmNotFound")))
            },
        )
        .await?;
        assert_eq!(ev.type_.as_deref(), Some("Warning"), "{ev:?}");
        let note = ev.note.clone().unwrap_or_default();
        assert!(note.contains(&node), "the note names the node: {note}");
        // a second attempt (after the back-off) does not make one either
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            h.cluster_ports().await?.is_empty(),
            "no port made for the pod"
        );
        let on_pod_net: Vec<String> = n
            .list_ports(&Query::new().filter("network_id", &h.net.id))
            .await?
            .into_iter()
            .filter(|p| p.id != decoy.id && !p.device_owner.starts_with("network:"))
            .map(|p| format!("{} ({})", p.id, p.name))
            .collect();
        assert!(on_pod_net.is_empty(), "ports made: {on_pod_net:?}");
        assert!(
            subports(h, wk.trunk()).await?.is_empty(),
            "nothing on any trunk"
        );
        let kp = h.kps.get_opt(&pod).await?;
        assert!(
            kp.as_ref()
                .and_then(|k| k.status.as_ref())
                .is_none_or(|s| s.vifs.is_empty()),
            "no VIF recorded: {kp:?}"
        );
        anyhow::Ok(())
    };
    finally(body, w.cleanup()).await
}

/// Pod `name` made on `node`; its VIF once the controller wrote it.
async fn one_pod(h: &Harness, name: &str, node: &str) -> anyhow::Result<Vif> {
    let names = [name.to_owned()];
    let uid = h.create_pods(&names, node).await?;
    let mut vifs = vifs_of(h, &names, &uid).await?;
    vifs.remove(name)
        .ok_or_else(|| anyhow::anyhow!("no VIF for pod {name}"))
}

/// A node VM's port with address `ip` on the worker subnet, and a trunk
/// with that port as parent: the VM a node gets when it is replaced.
async fn new_vm(h: &Harness, wk: &Worker, ip: Option<&str>) -> anyhow::Result<(Port, String)> {
    let n = h.os.neutron();
    let vm = n
        .create_port(&PortCreate {
            network_id: wk.subnet.network_id.clone(),
            name: Some(unique_name("nested-vm-", 40)),
            fixed_ips: Some(vec![FixedIp {
                subnet_id: Some(wk.subnet.id.clone()),
                ip_address: ip.map(str::to_owned),
            }]),
            ..Default::default()
        })
        .await?;
    let trunk = n
        .create_trunk(&TrunkCreate {
            port_id: vm.id.clone(),
            name: Some(unique_name("nested-trunk-", 40)),
            ..Default::default()
        })
        .await?
        .id;
    Ok((vm, trunk))
}

#[tokio::test]
async fn a_replaced_node_vm_is_found_again_without_a_restart() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let w = World::new("nrepl", "10.230.5.0/24").await?;
    let h = &w.h;
    let node = unique_name("kuryr-nrepl-node-", 50);
    let body = async {
        let wk = w.worker("10.231.6.0/24", true).await?;
        let n = h.os.neutron();
        h.make_node(&node, wk.ip()).await?;
        let conf = nested_conf("nested-vlan", &wk.subnet.id, "");
        let ctx = h.context(&conf, options()).await?;
        w.start(ctx.clone());
        let pods = names("repl", 0..3);
        let vif0 = one_pod(h, &pods[0], &node).await?;
        assert!(
            subports(h, wk.trunk()).await?.contains_key(&vif0.id),
            "the first pod is a subport of the VM's trunk"
        );
        assert!(ctx.drivers.vm_of(&node).await.is_some(), "the VM is known");

        // the VM is replaced and its successor keeps the address (the Node
        // does not change): its pod goes, its trunk and port are deleted
        // and made again
        h.delete_pod(&pods[0]).await?;
        h.wait_pod_gone(&pods[0], Duration::from_secs(60)).await?;
        n.delete_trunk(wk.trunk()).await?;
        n.delete_port(&wk.vm.id).await?;
        let (vm1, trunk1) = new_vm(h, &wk, Some(wk.ip())).await?;
        let vif1 = one_pod(h, &pods[1], &node).await?;
        assert!(
            subports(h, &trunk1).await?.contains_key(&vif1.id),
            "the next pod is a subport of the new VM's trunk (the old one answered 404)"
        );
        assert_eq!(
            ctx.drivers.vm_of(&node).await.map(|v| v.port.id),
            Some(vm1.id.clone())
        );

        // replaced again, with a new address, the old VM still in Neutron
        // (being torn down): only the Node's new InternalIP says so
        let (vm2, trunk2) = new_vm(h, &wk, None).await?;
        let ip2 = vm2.first_ip().expect("an address").to_owned();
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(h.kube.clone());
        nodes
            .patch_status(
                &node,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!(
                    {"status": {"addresses": [{"type": "InternalIP", "address": ip2}]}}
                )),
            )
            .await?;
        wait_until(
            "the controller forgot the VM of the node's old address",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async { Ok(ctx.drivers.vm_of(&node).await.is_none().then_some(())) },
        )
        .await?;
        let vif2 = one_pod(h, &pods[2], &node).await?;
        assert!(
            subports(h, &trunk2).await?.contains_key(&vif2.id),
            "the pod is a subport of the trunk of the node's new address"
        );
        assert!(
            !subports(h, &trunk1).await?.contains_key(&vif2.id),
            "nothing on the old VM's trunk"
        );
        assert_eq!(
            ctx.drivers.vm_of(&node).await.map(|v| v.port.id),
            Some(vm2.id)
        );
        anyhow::Ok(())
    };
    finally(body, w.cleanup()).await
}
