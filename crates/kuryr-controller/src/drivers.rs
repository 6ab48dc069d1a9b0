//! The pod_vif drivers: where a pod's port lives and how it reaches the
//! pod's node. `neutron-vif` binds the port to the node (side-by-side);
//! `nested-vlan` makes it a subport of the node VM's trunk on a VLAN id of
//! its own; `nested-macvlan` adds its address to the VM port's allowed
//! address pairs. Every function here is idempotent: called again after
//! any failure it finishes the job without duplicating anything.

use crate::plan::{self, PortSettings};
use crate::pool::{FREE_PORT_NAME, PoolKey, PoolPort};
use crate::vlan::VlanIds;
use k8s_openapi::api::core::v1::Node;
use kuryr_crds::{Vif, VifKind};
use kuryr_openstack::types::neutron::{
    AddressPair, Network, NetworkIpAvailability, Port, PortCreate, PortUpdate, SubPort, Subnet,
};
use kuryr_openstack::{Error, Query, TaggedResource};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// `[kubernetes] pod_vif_driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// `neutron-vif`: side-by-side, the port bound to the node.
    NeutronVif,
    /// `nested-vlan`: a subport of the node VM's trunk.
    NestedVlan,
    /// `nested-macvlan`: an allowed address pair of the node VM's port.
    NestedMacvlan,
}

impl DriverKind {
    /// From the option's value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "neutron-vif" => Some(Self::NeutronVif),
            "nested-vlan" => Some(Self::NestedVlan),
            "nested-macvlan" => Some(Self::NestedMacvlan),
            _ => None,
        }
    }

    /// The `vif_pool_driver` values this driver works with.
    pub fn pool_drivers(self) -> &'static [&'static str] {
        match self {
            Self::NeutronVif => &["noop", "neutron"],
            Self::NestedVlan => &["noop", "nested"],
            Self::NestedMacvlan => &["noop"],
        }
    }
}

/// The MAC of pod `uid`'s own port: 46 bits of a hash of the pod UID and
/// the cluster (`salt`) in the locally administered unicast range (first
/// octet `x2`, `x6`, `xa` or `xe`), the same on every retry, so a create
/// whose answer was lost and that is retried is refused by Neutron
/// (`MacAddressInUse`) instead of making a second port. 46 bits keep
/// accidental clashes away (a one-in-a-million chance at ~12,000 pods on a
/// network; 24 bits gave even odds at ~4,800).
pub fn pod_mac(salt: &str, uid: &str) -> String {
    // FNV-1a, 64 bit: stable across builds and platforms
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes().chain([0]).chain(uid.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        (b[2] & 0xfc) | 0x02,
        b[3],
        b[4],
        b[5],
        b[6],
        b[7]
    )
}

/// The node VM of a nested node: its port, and its trunk (nested-vlan).
#[derive(Debug, Clone)]
pub struct NodeVm {
    /// The VM's port on a worker node subnet.
    pub port: Port,
    /// Trunk whose parent is that port.
    pub trunk_id: Option<String>,
}

/// Why a pod's port cannot be placed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// OpenStack said no.
    #[error(transparent)]
    OpenStack(#[from] Error),
    /// Kubernetes said no.
    #[error("Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// The node's VM (or its trunk) is not in Neutron.
    #[error("{0}")]
    NoVm(String),
    /// The trunk has no VLAN id left.
    #[error("Trunk {0} has no free VLAN id left (4094 subports)")]
    VlansExhausted(String),
    /// A pool could not give a port; `reason` names the cause for events
    /// (a Neutron error type such as `IpAddressGenerationFailure`).
    #[error("{msg}")]
    Pool {
        /// Short cause.
        reason: String,
        /// What happened.
        msg: String,
    },
}

impl DriverError {
    /// Whether Neutron answered 404 (a port or trunk that is gone).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::OpenStack(e) if e.is_not_found())
    }
}

/// Whether the VM found for a node is still that node's: its port holds
/// one of the node's InternalIPs. A replaced VM (new port, new address)
/// or a node whose addresses changed fails this.
pub fn vm_matches(vm: &NodeVm, internal_ips: &[String]) -> bool {
    vm.port
        .fixed_ips
        .iter()
        .filter_map(|f| f.ip_address.as_deref())
        .any(|ip| internal_ips.iter().any(|n| n == ip))
}

/// The InternalIPs of a Node.
pub fn internal_ips(node: &Node) -> Vec<String> {
    node.status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .collect()
}

/// Free addresses of `subnet` from its network's IP availability:
/// `Some(None)` for IPv6 (never runs out), `None` when the subnet is not
/// in the answer.
pub fn free_of(a: &NetworkIpAvailability, subnet: &str) -> Option<Option<usize>> {
    let s = a
        .subnet_ip_availability
        .iter()
        .find(|s| s.subnet_id == subnet)?;
    if s.ip_version == 6 {
        return Some(None);
    }
    Some(Some(
        usize::try_from(s.total_ips.saturating_sub(s.used_ips)).unwrap_or(usize::MAX),
    ))
}

/// The drivers with what they share: the OpenStack client, the port
/// settings, the tags, the node VMs found so far and the VLAN ids taken on
/// each trunk.
pub struct Drivers {
    /// Which driver.
    pub kind: DriverKind,
    os: kuryr_openstack::Client,
    kube: kube::Client,
    /// Where pod ports are made.
    pub settings: PortSettings,
    /// Tags of every port: resource tags and the cluster's.
    pub tags: Vec<String>,
    /// Marks our ports in their description too, so one left untagged by
    /// a crash between its create and its tagging is found again.
    pub description: String,
    worker_subnets: Vec<String>,
    vms: Mutex<HashMap<String, NodeVm>>,
    vlans: Mutex<HashMap<String, Arc<Mutex<VlanIds>>>>,
    vm_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Whether network-ip-availabilities may be asked (until refused).
    ip_availability: std::sync::atomic::AtomicBool,
    /// The network of each subnet pods were placed on (the pod subnet's and
    /// namespaces'), for the pools' batches.
    networks: std::sync::Mutex<HashMap<String, String>>,
}

impl Drivers {
    /// Drivers of `kind`.
    pub fn new(
        kind: DriverKind,
        os: kuryr_openstack::Client,
        kube: kube::Client,
        settings: PortSettings,
        tags: Vec<String>,
        cluster_id: &str,
        worker_subnets: Vec<String>,
    ) -> Self {
        Self {
            kind,
            os,
            kube,
            tags,
            description: plan::cluster_tag(cluster_id),
            worker_subnets,
            vms: Mutex::default(),
            vlans: Mutex::default(),
            vm_locks: Mutex::default(),
            ip_availability: std::sync::atomic::AtomicBool::new(true),
            networks: std::sync::Mutex::new(HashMap::from([(
                settings.subnet_id.clone(),
                settings.network_id.clone(),
            )])),
            settings,
        }
    }

    /// Where the ports of a namespace's pods are made: subnet `subnet_id`
    /// of network `network_id`, in project `project_id`, with `groups`.
    pub fn settings_on(
        &self,
        network_id: &str,
        subnet_id: &str,
        project_id: &str,
        groups: Vec<String>,
    ) -> PortSettings {
        crate::lock(&self.networks).insert(subnet_id.to_owned(), network_id.to_owned());
        PortSettings {
            network_id: network_id.to_owned(),
            subnet_id: subnet_id.to_owned(),
            security_groups: groups,
            project_id: Some(project_id.to_owned()),
        }
    }

    /// Where the ports of `key`'s pool are made.
    fn settings_of(&self, key: &PoolKey) -> PortSettings {
        let network_id = crate::lock(&self.networks)
            .get(&key.subnet_id)
            .cloned()
            .unwrap_or_else(|| self.settings.network_id.clone());
        PortSettings {
            network_id,
            subnet_id: key.subnet_id.clone(),
            security_groups: key.security_groups.clone(),
            project_id: (!key.project_id.is_empty()).then(|| key.project_id.clone()),
        }
    }

    /// The pool key of pods on `node`: the node itself (side-by-side) or
    /// its VM's trunk (nested-vlan).
    pub async fn pool_key(&self, node: &str) -> Result<PoolKey, DriverError> {
        self.pool_key_on(node, &self.settings).await
    }

    /// The pool key of pods on `node` whose ports are made as `s` says.
    pub async fn pool_key_on(&self, node: &str, s: &PortSettings) -> Result<PoolKey, DriverError> {
        let host = match self.kind {
            DriverKind::NestedVlan => self.trunk_of(node).await?,
            _ => node.to_owned(),
        };
        Ok(PoolKey::new(
            host,
            s.project_id.clone().unwrap_or_default(),
            s.security_groups.clone(),
            s.subnet_id.clone(),
        ))
    }

    /// The VM port (and trunk) of a nested node, found once by the node's
    /// InternalIP on `[pod_vif_nested] worker_nodes_subnets`.
    pub async fn node_vm(&self, node: &str) -> Result<NodeVm, DriverError> {
        if let Some(vm) = self.vms.lock().await.get(node) {
            return Ok(vm.clone());
        }
        let nodes: kube::Api<Node> = kube::Api::all(self.kube.clone());
        let ips = internal_ips(&nodes.get(node).await?);
        let mut found = None;
        for ip in &ips {
            let q = Query::new().filter("fixed_ips", format!("ip_address={ip}"));
            found = self
                .os
                .neutron()
                .list_ports(&q)
                .await?
                .into_iter()
                .find(|p| {
                    p.fixed_ips.iter().any(|f| {
                        f.ip_address.as_deref() == Some(ip.as_str())
                            && f.subnet_id.as_ref().is_some_and(|s| {
                                self.worker_subnets.is_empty() || self.worker_subnets.contains(s)
                            })
                    })
                });
            if found.is_some() {
                break;
            }
        }
        let port = found.ok_or_else(|| {
            DriverError::NoVm(format!(
                "No Neutron port of node {node} (InternalIP {}) on the worker node subnets {:?}: check [pod_vif_nested] worker_nodes_subnets",
                if ips.is_empty() { "none".to_string() } else { ips.join(", ") },
                self.worker_subnets
            ))
        })?;
        let trunk_id = match &port.trunk_details {
            Some(t) => Some(t.trunk_id.clone()),
            None => self
                .os
                .neutron()
                .list_trunks(&Query::new().filter("port_id", &port.id))
                .await?
                .into_iter()
                .next()
                .map(|t| t.id),
        };
        let vm = NodeVm { port, trunk_id };
        self.vms.lock().await.insert(node.to_owned(), vm.clone());
        Ok(vm)
    }

    /// The VM found for `node` so far, if any (no lookup).
    pub async fn vm_of(&self, node: &str) -> Option<NodeVm> {
        self.vms.lock().await.get(node).cloned()
    }

    /// Forgets the VM found for `node`: the next pod of that node looks it
    /// up again. Answers whether one was known.
    pub async fn forget_vm(&self, node: &str) -> bool {
        let gone = self.vms.lock().await.remove(node);
        if let Some(vm) = &gone {
            tracing::info!(node, port = %vm.port.id, trunk = vm.trunk_id.as_deref().unwrap_or("-"), "the node's VM is looked up again");
        }
        gone.is_some()
    }

    /// Forgets every node VM whose trunk (`trunk`) or port (`port`) Neutron
    /// no longer has.
    async fn forget_gone(&self, trunk: Option<&str>, port: Option<&str>) {
        let nodes: Vec<String> = self
            .vms
            .lock()
            .await
            .iter()
            .filter(|(_, vm)| {
                (trunk.is_some() && vm.trunk_id.as_deref() == trunk)
                    || port == Some(vm.port.id.as_str())
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in nodes {
            self.forget_vm(&n).await;
        }
    }

    /// A Node changed (`Some`) or was deleted (`None`): the VM found for it
    /// is forgotten when it no longer holds one of the node's InternalIPs.
    pub async fn node_changed(&self, name: &str, node: Option<&Node>) {
        let stale = {
            let vms = self.vms.lock().await;
            match (vms.get(name), node) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(vm), Some(n)) => !vm_matches(vm, &internal_ips(n)),
            }
        };
        if stale {
            self.forget_vm(name).await;
        }
    }

    /// The trunk of a nested-vlan node.
    pub async fn trunk_of(&self, node: &str) -> Result<String, DriverError> {
        let vm = self.node_vm(node).await?;
        vm.trunk_id.ok_or_else(|| {
            DriverError::NoVm(format!(
                "Port {} of node {node} is not the parent of a trunk: nested-vlan needs the VM booted on a trunk",
                vm.port.id
            ))
        })
    }

    /// The VLAN ids of `trunk`, read from Neutron the first time.
    async fn vlans_of(&self, trunk: &str) -> Arc<Mutex<VlanIds>> {
        self.vlans
            .lock()
            .await
            .entry(trunk.to_owned())
            .or_default()
            .clone()
    }

    /// Runs `f` on the trunk's VLAN ids. Every allocation first marks the
    /// subports it just read from Neutron as used, so nothing is loaded here.
    async fn with_vlans<T>(&self, trunk: &str, f: impl FnOnce(&mut VlanIds) -> T) -> T {
        let cell = self.vlans_of(trunk).await;
        let mut g = cell.lock().await;
        f(&mut g)
    }

    /// The body of a pod port. `pod_uid`: a port made for one pod (no pool;
    /// named after it); `None`: a free pool port for `key`.
    pub fn port_body(&self, pod_uid: Option<&str>, key_host: &str) -> PortCreate {
        self.port_body_on(pod_uid, key_host, &self.settings)
    }

    /// [`Self::port_body`] of a port made as `s` says.
    pub fn port_body_on(
        &self,
        pod_uid: Option<&str>,
        key_host: &str,
        s: &PortSettings,
    ) -> PortCreate {
        plan::port_body(self.kind, s, &self.description, pod_uid, key_host)
    }

    /// The port of pod `uid` on `node` without a pool: found by its pod tag
    /// or made, then placed (subport, address pair). Answers the port and
    /// its VLAN id (nested-vlan).
    pub async fn ensure_pod_port(
        &self,
        uid: &str,
        node: &str,
    ) -> Result<(Port, Option<u16>), DriverError> {
        self.ensure_pod_port_on(uid, node, &self.settings).await
    }

    /// [`Self::ensure_pod_port`] for a port made as `s` says.
    pub async fn ensure_pod_port_on(
        &self,
        uid: &str,
        node: &str,
        s: &PortSettings,
    ) -> Result<(Port, Option<u16>), DriverError> {
        // find the node's VM (and trunk) first: no port for a pod that
        // cannot be placed
        match self.kind {
            DriverKind::NeutronVif => {}
            DriverKind::NestedVlan => {
                self.trunk_of(node).await?;
            }
            DriverKind::NestedMacvlan => {
                self.node_vm(node).await?;
            }
        }
        let tags = plan::pod_port_tags(&self.tags, uid);
        let n = self.os.neutron();
        // the pod's own MAC makes the create idempotent: when a create whose
        // answer was lost (Neutron unreachable, timeout) went through after
        // all, its retry is refused with MacAddressInUse instead of making a
        // second port, and the first is taken
        let mut body = self.port_body_on(Some(uid), node, s);
        let mac = pod_mac(&self.description, uid);
        body.mac_address = Some(mac.clone());
        let port = match n.ensure_port(&tags, &body).await {
            Ok(p) => p,
            Err(e) if e.error_type() == Some("MacAddressInUse") => {
                let q = Query::new()
                    .filter("mac_address", &mac)
                    .filter("network_id", &body.network_id);
                match n.list_ports(&q).await?.into_iter().next() {
                    Some(p) if p.name == body.name.clone().unwrap_or_default() => {
                        let mut all = p.tags.clone();
                        all.extend(tags.iter().filter(|t| !p.tags.contains(t)).cloned());
                        let now = n.replace_tags(TaggedResource::Port, &p.id, &all).await?;
                        Port { tags: now, ..p }
                    }
                    // another device has that MAC: let Neutron pick one
                    _ => {
                        body.mac_address = None;
                        n.ensure_port(&tags, &body).await?
                    }
                }
            }
            Err(e) => return Err(e.into()),
        };
        let vlan = self.place(&port, node).await?;
        Ok((port, vlan))
    }

    /// Places a port for a pod on `node`: a subport of its trunk
    /// (nested-vlan, answering the VLAN id), an address pair of its VM port
    /// (nested-macvlan), nothing for neutron-vif.
    async fn place(&self, port: &Port, node: &str) -> Result<Option<u16>, DriverError> {
        match self.kind {
            DriverKind::NeutronVif => Ok(None),
            // a VM replaced since it was found (its trunk or port is gone:
            // 404, and forgotten) is looked up again, once
            DriverKind::NestedVlan => {
                let one = std::slice::from_ref(&port.id);
                let trunk = self.trunk_of(node).await?;
                let vids = match self.add_subports(&trunk, one).await {
                    Err(e) if e.is_not_found() => {
                        let trunk = self.trunk_of(node).await?;
                        self.add_subports(&trunk, one).await?
                    }
                    r => r?,
                };
                Ok(vids.first().copied())
            }
            DriverKind::NestedMacvlan => {
                let vm = self.node_vm(node).await?;
                match self.edit_pairs(&vm.port.id, port, true).await {
                    Err(e) if e.is_not_found() => {
                        let vm = self.node_vm(node).await?;
                        self.edit_pairs(&vm.port.id, port, true).await?;
                    }
                    r => r?,
                }
                Ok(None)
            }
        }
    }

    /// Makes `ports` subports of `trunk` with VLAN ids of their own;
    /// answers the ids in order. A port already on the trunk keeps its id.
    pub async fn add_subports(
        &self,
        trunk: &str,
        ports: &[String],
    ) -> Result<Vec<u16>, DriverError> {
        let n = self.os.neutron();
        let have = match n.get_subports(trunk).await {
            Ok(h) => h,
            Err(e) => {
                if e.is_not_found() {
                    // the node's VM was replaced: find it again next time
                    self.forget_gone(Some(trunk), None).await;
                }
                return Err(e.into());
            }
        };
        let mut out = vec![0u16; ports.len()];
        let mut missing = Vec::new();
        for (i, id) in ports.iter().enumerate() {
            match have.iter().find(|s| &s.port_id == id) {
                Some(s) => out[i] = u16::try_from(s.segmentation_id).unwrap_or(0),
                None => missing.push(i),
            }
        }
        // a VLAN id taken behind our back makes Neutron refuse (409): note
        // what the trunk holds now and pick again, a few times
        for _ in 0..3 {
            if missing.is_empty() {
                break;
            }
            let ids = self
                .with_vlans(trunk, |v| {
                    for s in &have {
                        if let Ok(x) = u16::try_from(s.segmentation_id) {
                            v.mark_used(x);
                        }
                    }
                    v.allocate(missing.len())
                })
                .await
                .ok_or_else(|| DriverError::VlansExhausted(trunk.to_owned()))?;
            let subs: Vec<SubPort> = missing
                .iter()
                .zip(&ids)
                .map(|(i, v)| SubPort::vlan(ports[*i].clone(), u32::from(*v)))
                .collect();
            match n.add_subports(trunk, &subs).await {
                Ok(_) => {
                    for (i, v) in missing.iter().zip(&ids) {
                        out[*i] = *v;
                    }
                    missing.clear();
                }
                Err(e) if e.error_type() == Some("DuplicateSubPort") => {
                    tracing::warn!(trunk, error = %e, "VLAN ids taken meanwhile; picking others");
                    let now = n.get_subports(trunk).await?;
                    self.with_vlans(trunk, |v| {
                        for x in &ids {
                            v.release(*x);
                        }
                        for s in &now {
                            if let Ok(x) = u16::try_from(s.segmentation_id) {
                                v.mark_used(x);
                            }
                        }
                    })
                    .await;
                    // ports added meanwhile (a concurrent retry) keep theirs
                    missing.retain(|i| match now.iter().find(|s| s.port_id == ports[*i]) {
                        Some(s) => {
                            out[*i] = u16::try_from(s.segmentation_id).unwrap_or(0);
                            false
                        }
                        None => true,
                    });
                }
                Err(e) => {
                    self.with_vlans(trunk, |v| ids.iter().for_each(|x| v.release(*x)))
                        .await;
                    return Err(e.into());
                }
            }
        }
        if !missing.is_empty() {
            return Err(DriverError::Pool {
                reason: "VlanConflict".into(),
                msg: format!("Trunk {trunk}: VLAN ids kept being taken by others; will retry"),
            });
        }
        Ok(out)
    }

    /// Adds (or removes) the address of `pod_port` to the allowed address
    /// pairs of the VM port, read fresh under a per-VM lock (read, modify,
    /// write would otherwise lose concurrent pods' pairs).
    async fn edit_pairs(
        &self,
        vm_port: &str,
        pod_port: &Port,
        add: bool,
    ) -> Result<(), DriverError> {
        let lock = self
            .vm_locks
            .lock()
            .await
            .entry(vm_port.to_owned())
            .or_default()
            .clone();
        let _g = lock.lock().await;
        let n = self.os.neutron();
        let vm = match n.get_port(vm_port).await {
            Ok(p) => p,
            Err(e) => {
                if e.is_not_found() {
                    self.forget_gone(None, Some(vm_port)).await;
                }
                return Err(e.into());
            }
        };
        let mine: Vec<AddressPair> = pod_port
            .fixed_ips
            .iter()
            .filter_map(|f| f.ip_address.clone())
            .map(|ip| AddressPair {
                ip_address: ip,
                mac_address: Some(pod_port.mac_address.clone()),
            })
            .collect();
        let mut pairs = vm.allowed_address_pairs.clone();
        if add {
            for p in &mine {
                if !pairs.contains(p) {
                    pairs.push(p.clone());
                }
            }
        } else {
            pairs.retain(|p| !mine.contains(p));
        }
        if pairs != vm.allowed_address_pairs {
            n.update_port(
                vm_port,
                &PortUpdate {
                    allowed_address_pairs: Some(pairs),
                    ..Default::default()
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Makes `count` free ports for `key`'s pool in one bulk call (then
    /// adds them to the trunk, nested-vlan). If placing them fails they are
    /// deleted again, so a failed batch leaves nothing.
    pub async fn create_pool_ports(
        &self,
        key: &PoolKey,
        count: usize,
    ) -> Result<Vec<PoolPort>, DriverError> {
        let n = self.os.neutron();
        // a bulk create that fails for want of addresses keeps the ones it
        // reserved in Neutron Zed (they are lost until a restart of the
        // server): never ask for more than the subnet has left, and when it
        // has none, for one port, which fails cleanly
        let s = self.settings_of(key);
        let count = match self.free_addresses_on(&s).await {
            Ok(Some(free)) => count.min(free.max(1)),
            Ok(None) => count,
            Err(e) => return Err(e),
        };
        let bodies = vec![self.port_body_on(None, &key.host, &s); count];
        let ports = n.create_ports_tagged(&bodies, &self.tags).await?;
        let ids: Vec<String> = ports.iter().map(|p| p.id.clone()).collect();
        let ports: Vec<Arc<Port>> = ports.into_iter().map(Arc::new).collect();
        let vlans = match self.kind {
            DriverKind::NestedVlan => match self.add_subports(&key.host, &ids).await {
                Ok(v) => v.into_iter().map(Some).collect(),
                Err(e) => {
                    for id in &ids {
                        let _ = n.delete_port(id).await;
                    }
                    return Err(e);
                }
            },
            _ => vec![None; ids.len()],
        };
        Ok(ids
            .into_iter()
            .zip(vlans)
            .zip(ports)
            .map(|((id, vlan_id), port)| PoolPort {
                id,
                vlan_id,
                port: Some(port),
            })
            .collect())
    }

    /// Names a pool port after the pod `owner` that uses it and makes the
    /// pod its device (`port_debug`), or, with `None`, marks it free again.
    /// Idempotent.
    pub async fn set_owner(&self, port_id: &str, owner: Option<&str>) -> Result<Port, DriverError> {
        let body = PortUpdate {
            name: Some(
                owner.map_or_else(|| FREE_PORT_NAME.to_owned(), |uid| format!("kuryr-{uid}")),
            ),
            device_id: Some(owner.unwrap_or_default().to_owned()),
            ..Default::default()
        };
        Ok(self.os.neutron().update_port(port_id, &body).await?)
    }

    /// Addresses of the pod subnet's allocation pools no port holds
    /// (IPv4; `None` for IPv6, where they never run out). Neutron's
    /// network-ip-availabilities answers that in one small reply; where
    /// policy refuses it (it is admin only by default) the subnet's ports
    /// are counted instead, listing only their ids.
    pub async fn free_addresses(&self) -> Result<Option<usize>, DriverError> {
        self.free_addresses_on(&self.settings).await
    }

    /// [`Self::free_addresses`] of the subnet of `s`.
    pub async fn free_addresses_on(&self, s: &PortSettings) -> Result<Option<usize>, DriverError> {
        let n = self.os.neutron();
        if self
            .ip_availability
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            match n.network_ip_availability(&s.network_id).await {
                Ok(a) => {
                    if let Some(free) = free_of(&a, &s.subnet_id) {
                        return Ok(free);
                    }
                }
                Err(e) if matches!(e.status(), Some(401 | 403 | 404)) => {
                    tracing::info!(error = %e, "network-ip-availabilities refused: counting the pod subnet's ports before each pool batch instead");
                    self.ip_availability
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let subnet = n.get_subnet(&s.subnet_id).await?;
        let mut size: u64 = 0;
        for p in &subnet.allocation_pools {
            let (Ok(a), Ok(b)) = (
                p.start.parse::<std::net::Ipv4Addr>(),
                p.end.parse::<std::net::Ipv4Addr>(),
            ) else {
                return Ok(None);
            };
            size += u64::from(u32::from(b).saturating_sub(u32::from(a))) + 1;
        }
        let used = n
            .list_ports(
                &Query::new()
                    .filter("fixed_ips", format!("subnet_id={}", s.subnet_id))
                    .fields(["id", "network_id"]),
            )
            .await?
            .len() as u64;
        Ok(Some(
            usize::try_from(size.saturating_sub(used)).unwrap_or(usize::MAX),
        ))
    }

    /// Deletes a pod's port: off its trunk (nested-vlan; `trunk` if known,
    /// else the node's) or out of the VM's address pairs (nested-macvlan)
    /// first. Idempotent: a port already gone is fine.
    pub async fn delete_port(
        &self,
        port_id: &str,
        node: Option<&str>,
        trunk: Option<&str>,
    ) -> Result<bool, DriverError> {
        let n = self.os.neutron();
        match self.kind {
            DriverKind::NeutronVif => {}
            DriverKind::NestedVlan => {
                let trunk = match (trunk, node) {
                    (Some(t), _) => Some(t.to_owned()),
                    (None, Some(node)) => self.trunk_of(node).await.ok(),
                    (None, None) => None,
                };
                if let Some(t) = trunk {
                    let on_trunk = match n.get_subports(&t).await {
                        Ok(have) => have.into_iter().find(|s| s.port_id == port_id),
                        Err(e) if e.is_not_found() => None,
                        Err(e) => return Err(e.into()),
                    };
                    if let Some(sub) = on_trunk {
                        match n.remove_subports(&t, &[port_id.to_owned()]).await {
                            Ok(_) => {}
                            Err(e) if e.is_not_found() => {}
                            Err(e) => return Err(e.into()),
                        }
                        // its VLAN id is free again
                        if let Ok(v) = u16::try_from(sub.segmentation_id) {
                            self.with_vlans(&t, |ids| ids.release(v)).await;
                        }
                    }
                }
            }
            DriverKind::NestedMacvlan => {
                if let Some(node) = node {
                    match n.get_port(port_id).await {
                        // a VM port that is gone took its pairs with it
                        Ok(p) => match self.node_vm(node).await {
                            Ok(vm) => match self.edit_pairs(&vm.port.id, &p, false).await {
                                Err(e) if !e.is_not_found() => return Err(e),
                                _ => {}
                            },
                            Err(DriverError::NoVm(_)) => {}
                            Err(e) => return Err(e),
                        },
                        Err(e) if e.is_not_found() => return Ok(false),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(n.delete_port(port_id).await?)
    }

    /// The VIF a pod's KuryrPort gets for `port` on `network` and its
    /// `subnets`: for `neutron-vif` what Neutron bound (a hybrid plug where
    /// the iptables_hybrid firewall filters on a Linux bridge, whose
    /// network bridge is the binding's, else `ovs_bridge`, as
    /// kuryr-kubernetes did), for the nested drivers their subinterface;
    /// never ACTIVE until Neutron says so after this pod is plugged (a pool
    /// port's old status does not count).
    pub fn vif(
        &self,
        port: &Port,
        network: &Network,
        subnets: &[Subnet],
        ovs_bridge: &str,
        vlan: Option<u16>,
    ) -> Vif {
        let (kind, bridge) = match self.kind {
            DriverKind::NeutronVif => {
                let (kind, bridge) = VifKind::from_binding(port, ovs_bridge);
                (kind, Some(bridge))
            }
            DriverKind::NestedVlan => (
                VifKind::VlanNested {
                    vlan_id: vlan.unwrap_or(0),
                },
                None,
            ),
            DriverKind::NestedMacvlan => (VifKind::MacvlanNested, None),
        };
        let hybrid = matches!(kind, VifKind::Bridge { .. });
        let mut vif = Vif::from_port(port, network, subnets, kind);
        if hybrid {
            vif.network.bridge = bridge;
        }
        vif.active = false;
        vif
    }

    /// The OpenStack client.
    pub fn os(&self) -> &kuryr_openstack::Client {
        &self.os
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_addresses_come_from_the_subnets_own_availability() {
        let a: NetworkIpAvailability = serde_json::from_value(serde_json::json!({
            "network_id": "n", "total_ips": 300, "used_ips": 12,
            "subnet_ip_availability": [
                {"subnet_id": "s4", "ip_version": 4, "total_ips": 253, "used_ips": 10},
                {"subnet_id": "s6", "ip_version": 6, "total_ips": 18446744073709551615u64, "used_ips": 2},
                {"subnet_id": "full", "ip_version": 4, "total_ips": 5, "used_ips": 7}
            ]
        }))
        .unwrap();
        assert_eq!(free_of(&a, "s4"), Some(Some(243)));
        assert_eq!(free_of(&a, "s6"), Some(None), "IPv6 never runs out");
        assert_eq!(
            free_of(&a, "full"),
            Some(Some(0)),
            "the gateway's router port counts too"
        );
        assert_eq!(free_of(&a, "other"), None, "not this network's subnet");
    }

    #[test]
    fn a_vm_matches_its_node_only_while_its_port_holds_an_internal_ip() {
        let port: Port = serde_json::from_value(serde_json::json!({
            "id": "p1", "network_id": "n",
            "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.5"}]
        }))
        .unwrap();
        let vm = NodeVm {
            port,
            trunk_id: Some("t1".into()),
        };
        assert!(vm_matches(&vm, &["10.0.0.5".into()]));
        assert!(vm_matches(&vm, &["fd00::5".into(), "10.0.0.5".into()]));
        assert!(
            !vm_matches(&vm, &["10.0.0.6".into()]),
            "a replaced VM's new address"
        );
        assert!(!vm_matches(&vm, &[]), "a node with no InternalIP left");
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "w"},
                {"type": "InternalIP", "address": "10.0.0.5"},
                {"type": "ExternalIP", "address": "172.24.4.9"}
            ]}
        }))
        .unwrap();
        assert_eq!(internal_ips(&node), vec!["10.0.0.5".to_string()]);
    }

    #[test]
    fn pod_macs_are_stable_unicast_and_differ_by_pod_and_cluster() {
        let a = pod_mac("kuryr-cluster:c1", "uid-1");
        assert_eq!(a, pod_mac("kuryr-cluster:c1", "uid-1"));
        assert_ne!(a, pod_mac("kuryr-cluster:c1", "uid-2"));
        assert_ne!(a, pod_mac("kuryr-cluster:c2", "uid-1"));
        assert_eq!(a.len(), 17, "{a}");
        let first = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02, "locally administered unicast: {a}");
        // as many pods as a big network holds, with their real UID form
        let macs: std::collections::BTreeSet<String> = (0..20_000u32)
            .map(|i| {
                pod_mac(
                    "kuryr-cluster:c",
                    &format!(
                        "{:08x}-1b2c-4d3e-8f40-{:012x}",
                        i.wrapping_mul(2654435761),
                        i
                    ),
                )
            })
            .collect();
        assert_eq!(macs.len(), 20_000, "no clash among 20,000 pods");
        assert!(
            macs.iter()
                .all(|m| u8::from_str_radix(&m[..2], 16).unwrap() & 0x03 == 0x02)
        );
    }
}
