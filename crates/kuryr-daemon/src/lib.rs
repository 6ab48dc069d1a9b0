//! kuryr-daemon: the node side of kuryr-rs. kuryr-cni hands it each CNI
//! request over a unix socket; it finds the pod's VIF in the pod's
//! KuryrPort (watched into a local cache), binds it in the pod's network
//! namespace (netlink) and on the host (OVSDB), records what it did on
//! disk, and answers with the CNI result.

pub mod bind;
pub mod cache;
pub mod cni_gc;
pub mod health;
pub mod link;
pub mod metrics;
pub mod netns;
pub mod node_port;
pub mod ovsdb;
pub mod server;
pub mod state;

use bind::{BindError, PlugEnv};
use kuryr_cni::{CniError, Command, DaemonRequest, code};
use kuryr_crds::{KuryrPort, Vif};
use serde_json::{Value, json};
use state::{Attachment, Phase, Store};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Plugin-specific CNI error codes (100 and up, as the spec asks).
pub mod errcode {
    /// Binding failed (netlink, OVSDB).
    pub const BIND_FAILED: u32 = 100;
    /// The interface name is taken in the pod.
    pub const IFNAME_CLASH: u32 = 101;
    /// The pod's network namespace does not exist.
    pub const NETNS_GONE: u32 = 102;
    /// CHECK found the interface not as it was plugged.
    pub const CHECK_FAILED: u32 = 103;
    /// The state directory cannot be written.
    pub const STATE_FAILED: u32 = 104;
    /// The pod's KuryrPort holds a VIF kuryr-rs cannot read.
    pub const UNREADABLE_VIF: u32 = 105;
}

/// The daemon's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name (KuryrPorts labelled with it are ours).
    pub node: String,
    /// Where attachments are recorded.
    pub state_dir: PathBuf,
    /// ovsdb-server's unix socket.
    pub ovsdb: PathBuf,
    /// The VM's NIC for nested drivers.
    pub link_iface: String,
    /// MTU override (`[neutron_defaults] network_device_mtu`).
    pub mtu: Option<u32>,
    /// How long an ADD waits for the VIF to appear and to become active.
    pub vif_timeout: Duration,
    /// How long the KuryrPort watch may fail without an event, or
    /// ovsdb-server go unanswered, before `/alive` fails.
    pub unhealthy_after: Duration,
}

/// The daemon: shared by every request.
pub struct Daemon {
    /// Settings.
    pub settings: Settings,
    /// KuryrPorts of this node.
    pub cache: cache::KpCache,
    /// OVSDB client.
    pub ovs: ovsdb::Ovsdb,
    /// Thread doing setns.
    pub netns: netns::NetnsThread,
    /// Attachments on disk.
    pub state: Store,
    /// Metrics.
    pub metrics: metrics::Metrics,
    /// What `/alive` and `/ready` answer from.
    pub health: health::Health,
    host: netns::NsNetlink,
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    reaper: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<Attachment>>>,
    /// Ports this daemon has given to a pod (never prepared again).
    used_ports: std::sync::Mutex<std::collections::HashSet<String>>,
    /// ADDs waiting for their VIF, by container id: a DEL of the same
    /// container cancels the wait instead of queueing behind it.
    waiting: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
}

/// An ADD's registration in [`Daemon::waiting`], removed when dropped.
struct Waiting<'a> {
    daemon: &'a Daemon,
    container_id: String,
    cancel: Arc<tokio::sync::Notify>,
}

impl<'a> Waiting<'a> {
    fn new(daemon: &'a Daemon, container_id: &str) -> Self {
        let cancel = Arc::new(tokio::sync::Notify::new());
        daemon
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(container_id.to_owned(), cancel.clone());
        daemon.metrics.adds_waiting.inc();
        Self {
            daemon,
            container_id: container_id.to_owned(),
            cancel,
        }
    }

    /// `fut`, unless a DEL of the container comes first (`None` then).
    async fn unless_deleted<T>(&self, fut: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            v = fut => Some(v),
            _ = self.cancel.notified() => None,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut w = self
            .daemon
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if w.get(&self.container_id)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cancel))
        {
            w.remove(&self.container_id);
        }
        self.daemon.metrics.adds_waiting.dec();
    }
}

/// The error of an ADD a DEL of its container cancelled while it waited.
fn cancelled_by_del(what: &str) -> CniError {
    cni_err(
        code::TRY_AGAIN_LATER,
        "ADD cancelled by a DEL of the same container",
        format!("the runtime deleted the container while its ADD waited for {what}"),
    )
}

/// What a request gets back: HTTP status and body.
pub type Answer = (u16, Value);

fn cni_err(c: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(c, msg, details)
}

fn bind_err(e: BindError) -> CniError {
    match e {
        BindError::Clash(n) => cni_err(
            errcode::IFNAME_CLASH,
            "interface name clash",
            format!("{n} already exists in the pod's network namespace"),
        ),
        BindError::Netns(netns::NetnsError::Gone(p)) => cni_err(
            errcode::NETNS_GONE,
            "the pod's network namespace does not exist",
            p,
        ),
        e => cni_err(
            errcode::BIND_FAILED,
            "binding the pod failed",
            e.to_string(),
        ),
    }
}

impl Daemon {
    /// Opens the state dir and a host netlink socket; `cache` must already
    /// be started.
    pub fn new(settings: Settings, cache: cache::KpCache) -> anyhow::Result<Self> {
        let state = Store::open(&settings.state_dir)?;
        let (conn, handle, _) = rtnetlink::new_connection()?;
        let task = tokio::spawn(conn);
        let host = netns::NsNetlink::from_parts(handle, task);
        let d = Self {
            ovs: ovsdb::Ovsdb::new(&settings.ovsdb),
            health: health::Health::new(settings.unhealthy_after),
            settings,
            cache,
            netns: netns::NetnsThread::new(),
            metrics: metrics::Metrics::default(),
            host,
            state,
            locks: Default::default(),
            reaper: Default::default(),
            used_ports: Default::default(),
            waiting: Default::default(),
        };
        d.count_attachments();
        Ok(d)
    }

    /// Starts the task that deletes host links after DEL has answered. A
    /// veth costs the kernel 10-30 ms to destroy, and the runtime usually
    /// removes the sandbox's namespace right after DEL, which destroys the
    /// veth anyway: so the links are looked at only after `delay`, and
    /// deleted if still there. The pod is off the network as soon as its
    /// OVS port is gone (before DEL answers). The attachment's record stays
    /// until its links are gone, so a crash in between leaves work for GC;
    /// an ADD of the same Neutron port meanwhile removes them itself.
    /// Without a reaper DEL deletes everything before answering.
    pub fn start_reaper(self: &Arc<Self>, delay: Duration) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Attachment>();
        *self.reaper.lock().expect("reaper lock") = Some(tx);
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(att) = rx.recv().await {
                let weak = weak.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let Some(d) = weak.upgrade() else { return };
                    let clock = d.lock_of(&att.container_id);
                    let _c = clock.lock().await;
                    let plock = d.lock_of(&port_key(&att.port_id));
                    let _p = plock.lock().await;
                    if d.state.get(&att.container_id, &att.ifname).as_ref() != Some(&att) {
                        return; // replaced or removed meanwhile
                    }
                    match bind::unplug_links(&d.env(), &att).await {
                        Ok(()) => {
                            let _ = d.state.remove(&att.container_id, &att.ifname);
                            d.count_attachments();
                        }
                        Err(e) => {
                            tracing::warn!(container = %att.container_id, error = %e, "deleting host links failed; GC will retry")
                        }
                    }
                });
            }
        });
    }

    /// Starts plugging OVS VIFs ahead of their pods: whenever a KuryrPort
    /// of this node carries a VIF no attachment has, its veth is made and
    /// its host end put into OVS, so the Neutron port can go ACTIVE while
    /// the runtime is still making the sandbox, and the pod's ADD only
    /// moves the other end into the pod. Prepared VIFs whose KuryrPort is
    /// gone are removed. Prepared records found at start are redone.
    pub fn start_preparer(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let mut rx = self.cache.changes();
        tokio::spawn(async move {
            if let Some(d) = weak.upgrade() {
                for a in d
                    .state
                    .all()
                    .into_iter()
                    .filter(|a| a.phase == Phase::Prepared)
                {
                    d.drop_prepared(&a).await;
                }
            }
            while rx.changed().await.is_ok() {
                // a burst of changes is one pass
                tokio::time::sleep(Duration::from_millis(5)).await;
                rx.borrow_and_update();
                let Some(d) = weak.upgrade() else { break };
                if d.cache.synced() {
                    d.prepare_pass().await;
                }
            }
        });
    }

    async fn drop_prepared(&self, a: &Attachment) {
        let plock = self.lock_of(&port_key(&a.port_id));
        let _p = plock.lock().await;
        if self.state.get(&a.container_id, &a.ifname).is_none() {
            return;
        }
        match bind::unplug(&self.env(), a).await {
            Ok(()) => {
                let _ = self.state.remove(&a.container_id, &a.ifname);
            }
            Err(e) => {
                tracing::warn!(port = %a.port_id, error = %e, "removing a prepared VIF failed")
            }
        }
    }

    async fn prepare_pass(&self) {
        let mut wanted: HashMap<String, (Vif, String, String, String)> = HashMap::new();
        for kp in self.cache.all() {
            let Some(st) = &kp.status else { continue };
            for e in st.vifs.values() {
                if matches!(e.vif.kind, kuryr_crds::VifKind::OpenVSwitch { .. }) {
                    wanted.insert(
                        e.vif.id.clone(),
                        (
                            e.vif.clone(),
                            kp.metadata.namespace.clone().unwrap_or_default(),
                            kp.metadata.name.clone().unwrap_or_default(),
                            kp.spec.pod_uid.clone(),
                        ),
                    );
                }
            }
        }
        for a in self
            .state
            .filter(|a| a.phase == Phase::Prepared && !wanted.contains_key(&a.port_id))
        {
            self.drop_prepared(&a).await;
        }
        for (port, (vif, ns, name, uid)) in wanted {
            if self.used_ports.lock().expect("used ports").contains(&port)
                || self.state.any(|a| a.port_id == port)
            {
                continue;
            }
            let plock = self.lock_of(&port_key(&port));
            let _p = plock.lock().await;
            // re-check under the lock: an ADD may have taken it meanwhile
            if self.state.any(|a| a.port_id == port) {
                continue;
            }
            let (links, ovs_port) = bind::planned(state::Driver::Ovs, &vif);
            let att = Attachment {
                container_id: format!("prepared-{port}"),
                ifname: bind::prepared_name(&port),
                netns: String::new(),
                pod_namespace: ns,
                pod_name: name,
                pod_uid: uid,
                driver: state::Driver::Ovs,
                port_id: port.clone(),
                host_links: links,
                ovs_port,
                phase: Phase::Prepared,
                result: None,
                network: String::new(),
            };
            if self.state.put(&att).is_err() {
                continue;
            }
            let t = Instant::now();
            match bind::prepare(&self.env(), &vif, &att).await {
                Ok(()) => {
                    self.metrics.prepared_total.inc();
                    tracing::debug!(port = %port, took = ?t.elapsed(), "VIF prepared ahead of its pod");
                }
                Err(e) => {
                    tracing::warn!(port = %port, error = %e, "preparing a VIF failed; the pod's ADD will plug it");
                    let _ = bind::unplug(&self.env(), &att).await;
                    let _ = self.state.remove(&att.container_id, &att.ifname);
                }
            }
        }
    }

    pub(crate) fn env(&self) -> PlugEnv<'_> {
        PlugEnv {
            host: &self.host.handle,
            ovs: &self.ovs,
            netns: &self.netns,
            link_iface: &self.settings.link_iface,
            mtu: self.settings.mtu,
            node: &self.settings.node,
        }
    }

    fn lock_of(&self, container_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().expect("locks");
        // drop locks nobody holds any more
        if m.len() > 1024 {
            m.retain(|_, l| Arc::strong_count(l) > 1);
        }
        m.entry(container_id.to_owned()).or_default().clone()
    }

    fn count_attachments(&self) {
        self.metrics
            .attachments
            .set(i64::try_from(self.state.len()).unwrap_or(i64::MAX));
    }

    /// Handles one request body from kuryr-cni.
    pub async fn handle(&self, body: &[u8]) -> Answer {
        let t0 = Instant::now();
        let req = match DaemonRequest::parse(body) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.request("VERSION", false, 0.0);
                return (400, serde_json::to_value(e).expect("error serialises"));
            }
        };
        let v = req.cni_version().to_owned();
        let name = format!("{:?}", req.command).to_uppercase();
        let r = match req.command {
            Command::Add => self.add(&req).await,
            Command::Del => self.del(&req).await.map(|()| json!({})),
            Command::Check => self.check(&req).await.map(|()| json!({})),
            Command::Status => self.status().await.map(|()| json!({})),
            Command::Gc => self.gc_request(&req).await.map(|()| json!({})),
            Command::Version => {
                Ok(json!({"cniVersion": v, "supportedVersions": kuryr_cni::SUPPORTED_VERSIONS}))
            }
        };
        let secs = t0.elapsed().as_secs_f64();
        tracing::debug!(command = %name, container = %req.container_id, took = ?t0.elapsed(), "request done");
        self.metrics.request(&name, r.is_ok(), secs);
        match r {
            Ok(v) => (200, v),
            Err(e) => {
                tracing::warn!(command = %name, container = %req.container_id, code = e.code, msg = %e.msg, details = %e.details, "CNI request failed");
                (
                    500,
                    serde_json::to_value(e.version(&v)).expect("error serialises"),
                )
            }
        }
    }

    async fn add(&self, req: &DaemonRequest) -> Result<Value, CniError> {
        if !state::valid_container_id(&req.container_id) {
            return Err(cni_err(
                code::INVALID_ENVIRONMENT,
                "invalid container id",
                format!("CNI_CONTAINERID {:?}", req.container_id),
            ));
        }
        let ns = req
            .args
            .get("K8S_POD_NAMESPACE")
            .cloned()
            .unwrap_or_default();
        let pod = req.args.get("K8S_POD_NAME").cloned().unwrap_or_default();
        if ns.is_empty() || pod.is_empty() {
            return Err(cni_err(
                code::INVALID_ENVIRONMENT,
                "CNI_ARGS names no Kubernetes pod",
                "K8S_POD_NAMESPACE and K8S_POD_NAME are needed",
            ));
        }
        // the VIF is the pod's by UID, never by name: a runtime that passes
        // no UID gets the pod's from the API, so a stale KuryrPort of an
        // earlier pod of the same name is never bound
        let uid = match req.args.get("K8S_POD_UID").filter(|u| !u.is_empty()) {
            Some(u) => u.clone(),
            None => self.cache.pod_uid(&ns, &pod).await.map_err(|e| match e {
                cache::UidError::NoPod => cni_err(
                    code::INVALID_ENVIRONMENT,
                    "no such pod",
                    format!("CNI_ARGS gives no K8S_POD_UID and pod {ns}/{pod} does not exist"),
                ),
                cache::UidError::Api(e) => cni_err(
                    code::TRY_AGAIN_LATER,
                    "cannot read the pod's UID",
                    format!("CNI_ARGS gives no K8S_POD_UID and pod {ns}/{pod} cannot be read: {e}"),
                ),
            })?,
        };
        let lock = self.lock_of(&req.container_id);
        let _g = lock.lock().await;
        let prior = self.state.get(&req.container_id, &req.ifname);
        if let Some(a) = &prior
            && a.phase == Phase::Plugged
            && a.netns == req.netns
            && let Some(r) = &a.result
        {
            // a repeated ADD of a bound pod: the same answer, nothing touched
            return Ok(r.clone());
        }
        let t_wait = Instant::now();
        let timeout = self.settings.vif_timeout;
        let ifname = req.ifname.clone();
        let waiting = Waiting::new(self, &req.container_id);
        let found = waiting
            .unless_deleted(self.cache.wait_for(&ns, &pod, timeout, |kp| {
                let kp = kp.filter(|k| k.spec.pod_uid == uid)?;
                if let Some(u) = kp.status.as_ref().and_then(|s| s.unreadable_for(&ifname)) {
                    return Some(Err(u.error.clone()));
                }
                let vif = vif_for(kp, &ifname)?;
                Some(Ok(vif.clone()))
            }))
            .await
            .ok_or_else(|| cancelled_by_del("the pod's VIF"))?;
        let vif = match found {
            Some(Ok(vif)) => vif,
            Some(Err(why)) => {
                return Err(cni_err(
                    errcode::UNREADABLE_VIF,
                    "the pod's VIF cannot be read",
                    format!("KuryrPort {ns}/{pod}, interface {ifname}: {why}"),
                ));
            }
            None => {
                return Err(cni_err(
                    code::TRY_AGAIN_LATER,
                    "timed out waiting for the pod's VIF",
                    format!(
                        "no VIF for {ifname} in KuryrPort {ns}/{pod} (pod uid {uid}) after {}s; is kuryr-controller running?",
                        timeout.as_secs()
                    ),
                ));
            }
        };
        let pod_uid = uid.clone();
        let driver = bind::driver_of(&vif);
        let (host_links, ovs_port) = bind::planned(driver, &vif);
        let mut att = Attachment {
            container_id: req.container_id.clone(),
            ifname: ifname.clone(),
            netns: req.netns.clone(),
            pod_namespace: ns.clone(),
            pod_name: pod.clone(),
            pod_uid,
            driver,
            port_id: vif.id.clone(),
            host_links,
            ovs_port,
            phase: Phase::Plugging,
            result: None,
            network: req.config["name"].as_str().unwrap_or_default().to_owned(),
        };
        // one plug or unplug of a Neutron port at a time (a DEL's links
        // may still be going away in the background)
        let plock = self.lock_of(&port_key(&vif.id));
        let _pg = plock.lock().await;
        // a previous attempt of this attachment, or another sandbox's
        // attachment of the same port (DEL'd with its links still pending,
        // or never DEL'd): undone first, a port is plugged in one place
        let (prepared, stale): (Vec<_>, Vec<_>) = self
            .state
            .filter(|a| a.port_id == vif.id && a.container_id != req.container_id)
            .into_iter()
            .partition(|a| a.phase == Phase::Prepared);
        let prepared = prepared.into_iter().next();
        for old in prior.iter().cloned().chain(stale) {
            let _ = bind::unplug(&self.env(), &old).await;
            if old.container_id != req.container_id {
                let _ = self.state.remove(&old.container_id, &old.ifname);
            }
        }
        self.used_ports
            .lock()
            .expect("used ports")
            .insert(vif.id.clone());
        let env = self.env();
        let mut adopted = false;
        if let Some(p) = prepared.filter(|_| prior.is_none() && att.driver == state::Driver::Ovs) {
            // the fast way: the VIF is already in OVS, the pod end waits
            att.host_links = p.host_links.clone();
            att.ovs_port = p.ovs_port.clone();
            self.put(&att)?;
            let _ = self.state.remove(&p.container_id, &p.ifname);
            match bind::adopt(&env, &vif, &p, &att).await {
                Ok(()) => {
                    adopted = true;
                    self.metrics.adopted_total.inc();
                }
                Err(e @ (BindError::Clash(_) | BindError::Netns(_))) => {
                    let cerr = bind_err(e);
                    self.undo(&att).await;
                    return Err(cerr);
                }
                Err(e) => {
                    tracing::warn!(port = %vif.id, error = %e, "prepared VIF unusable; plugging anew");
                    let _ = bind::unplug(&env, &att).await;
                    let _ = bind::unplug(&env, &p).await;
                }
            }
        }
        if !adopted {
            self.put(&att)?;
            if let Err(e) = bind::plug(&env, &vif, &att, prior.is_some()).await {
                let cerr = bind_err(e);
                self.undo(&att).await;
                return Err(cerr);
            }
        }
        self.count_attachments();
        // a side-by-side port goes ACTIVE once the OVS agent has wired it
        let active = if vif.active {
            true
        } else {
            let wait =
                self.cache
                    .wait_for(&ns, &pod, timeout.saturating_sub(t_wait.elapsed()), |kp| {
                        kp.and_then(|k| vif_for(k, &ifname))
                            .filter(|v| v.id == vif.id && v.active)
                            .map(|_| ())
                    });
            match waiting.unless_deleted(wait).await {
                Some(seen) => seen.is_some(),
                None => {
                    // the DEL behind us finds nothing left to undo
                    self.undo(&att).await;
                    return Err(cancelled_by_del("its Neutron port to go ACTIVE"));
                }
            }
        };
        drop(waiting);
        self.metrics
            .vif_wait
            .observe(t_wait.elapsed().as_secs_f64());
        if !active {
            self.undo(&att).await;
            return Err(cni_err(
                code::TRY_AGAIN_LATER,
                "timed out waiting for the pod's port to become ACTIVE",
                format!(
                    "Neutron port {} of {ns}/{pod} not ACTIVE after {}s",
                    vif.id,
                    timeout.as_secs()
                ),
            ));
        }
        let iface = bind::pod_iface(&vif, &ifname, self.settings.mtu).map_err(bind_err)?;
        let result = cni_result(req.cni_version(), &vif, &iface, &req.netns);
        att.phase = Phase::Plugged;
        att.result = Some(result.clone());
        self.put(&att)?;
        tracing::info!(pod = %format!("{ns}/{pod}"), container = %req.container_id, port = %vif.id, driver = ?att.driver, took = ?t_wait.elapsed(), "pod plugged");
        Ok(result)
    }

    fn put(&self, a: &Attachment) -> Result<(), CniError> {
        let t = Instant::now();
        let r = self.state.put(a);
        tracing::trace!(phase = ?a.phase, took = ?t.elapsed(), "attachment recorded");
        r.map_err(|e| {
            cni_err(
                errcode::STATE_FAILED,
                "cannot record the attachment",
                e.to_string(),
            )
        })
    }

    /// Removes what `att` made, then its record (kept when removal failed,
    /// so GC tries again).
    async fn undo(&self, att: &Attachment) {
        match bind::unplug(&self.env(), att).await {
            Ok(()) => {
                if let Err(e) = self.state.remove(&att.container_id, &att.ifname) {
                    tracing::warn!(error = %e, "cannot remove state");
                }
            }
            Err(e) => {
                tracing::warn!(container = %att.container_id, error = %e, "cleanup failed; GC will retry")
            }
        }
        self.count_attachments();
    }

    async fn del(&self, req: &DaemonRequest) -> Result<(), CniError> {
        if !state::valid_container_id(&req.container_id) {
            // nothing of ours can carry such an id
            return Ok(());
        }
        // an ADD of this container still waiting for its VIF gives up at once
        if let Some(cancel) = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&req.container_id)
        {
            cancel.notify_one();
        }
        let lock = self.lock_of(&req.container_id);
        let _g = lock.lock().await;
        let env = self.env();
        match self.state.get(&req.container_id, &req.ifname) {
            Some(att) => {
                bind::unplug_ovs(&env, &att).await.map_err(bind_err)?;
                let queued = self
                    .reaper
                    .lock()
                    .expect("reaper lock")
                    .as_ref()
                    .is_some_and(|tx| tx.send(att.clone()).is_ok());
                if queued {
                    tracing::info!(pod = %format!("{}/{}", att.pod_namespace, att.pod_name), container = %att.container_id, "pod unplugged (host links go in the background)");
                    return Ok(());
                }
                let plock = self.lock_of(&port_key(&att.port_id));
                let _pg = plock.lock().await;
                bind::unplug_links(&env, &att).await.map_err(bind_err)?;
                self.state
                    .remove(&att.container_id, &att.ifname)
                    .map_err(|e| {
                        cni_err(
                            errcode::STATE_FAILED,
                            "cannot remove the attachment record",
                            e.to_string(),
                        )
                    })?;
                tracing::info!(pod = %format!("{}/{}", att.pod_namespace, att.pod_name), container = %att.container_id, "pod unplugged");
            }
            None => {
                // no record (lost, or never plugged): OVS ports tagged with
                // this container are still removed
                let ports = self
                    .ovs
                    .ports_with(ovsdb::CONTAINER_KEY)
                    .await
                    .map_err(|e| bind_err(e.into()))?;
                for p in ports
                    .iter()
                    .filter(|p| p.external_ids.get(ovsdb::CONTAINER_KEY) == Some(&req.container_id))
                {
                    self.ovs
                        .del_port(&p.name)
                        .await
                        .map_err(|e| bind_err(e.into()))?;
                    link::delete(env.host, &p.name)
                        .await
                        .map_err(|e| bind_err(e.into()))?;
                }
            }
        }
        self.count_attachments();
        Ok(())
    }

    async fn check(&self, req: &DaemonRequest) -> Result<(), CniError> {
        let Some(att) = self.state.get(&req.container_id, &req.ifname) else {
            return Err(cni_err(
                code::UNKNOWN_CONTAINER,
                "unknown container",
                format!(
                    "{}/{} was not plugged by this daemon",
                    req.container_id, req.ifname
                ),
            ));
        };
        let vif = self
            .cache
            .get(&att.pod_namespace, &att.pod_name)
            .and_then(|kp| vif_for(&kp, &att.ifname).cloned())
            .filter(|v| v.id == att.port_id)
            .ok_or_else(|| {
                cni_err(
                    errcode::CHECK_FAILED,
                    "the pod's VIF is gone",
                    format!(
                        "KuryrPort {}/{} no longer holds port {}",
                        att.pod_namespace, att.pod_name, att.port_id
                    ),
                )
            })?;
        let wrong = bind::check(&self.env(), &vif, &att)
            .await
            .map_err(bind_err)?;
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(cni_err(
                errcode::CHECK_FAILED,
                "the pod's interface is not as plugged",
                wrong.join("; "),
            ))
        }
    }

    /// Ready: the KuryrPort cache is synced and ovsdb-server answers.
    pub async fn status(&self) -> Result<(), CniError> {
        if !self.cache.synced() {
            return Err(cni_err(
                code::NOT_AVAILABLE,
                "kuryr-daemon is not ready",
                "the KuryrPort cache has not synced with the Kubernetes API yet",
            ));
        }
        self.ovs.ping().await.map_err(|e| {
            cni_err(
                code::NOT_AVAILABLE,
                "Open vSwitch is not reachable",
                e.to_string(),
            )
        })
    }

    async fn gc_request(&self, req: &DaemonRequest) -> Result<(), CniError> {
        let stale = cni_gc::stale(&self.state.all(), &req.config)
            .map_err(|e| cni_err(code::INVALID_CONFIG, "invalid GC request", e))?;
        for att in stale {
            self.remove_stale(&att, "not a valid attachment (CNI GC)")
                .await;
        }
        Ok(())
    }

    async fn remove_stale(&self, att: &Attachment, why: &str) {
        let lock = self.lock_of(&att.container_id);
        let _g = lock.lock().await;
        // re-read under the lock: a concurrent DEL may have done it
        if self.state.get(&att.container_id, &att.ifname).is_none() {
            return;
        }
        let plock = self.lock_of(&port_key(&att.port_id));
        let _pg = plock.lock().await;
        tracing::info!(container = %att.container_id, pod = %format!("{}/{}", att.pod_namespace, att.pod_name), reason = why, "removing a stale attachment");
        self.undo(att).await;
        if self.state.get(&att.container_id, &att.ifname).is_none() {
            self.metrics.gc_removed.inc();
        }
    }

    /// One garbage-collection pass: attachments whose network namespace is
    /// gone are unplugged and forgotten, and OVS ports kuryr made for a
    /// container no record knows are deleted. Returns how many were removed.
    pub async fn gc(&self) -> usize {
        let before = self.metrics.gc_removed.get();
        for att in self
            .state
            .filter(|a| a.phase != Phase::Prepared && !std::path::Path::new(&a.netns).exists())
        {
            self.remove_stale(&att, "network namespace gone").await;
        }
        match self.ovs.ports_with(ovsdb::CONTAINER_KEY).await {
            Ok(ports) => {
                // only this node's (another daemon may share the OVS in tests)
                let node = Some(&self.settings.node);
                for p in ports
                    .into_iter()
                    .filter(|p| p.external_ids.get(ovsdb::NODE_KEY) == node)
                {
                    let port_id = p.external_ids.get("iface-id").cloned().unwrap_or_default();
                    let plock = self.lock_of(&port_key(&port_id));
                    let _g = plock.lock().await;
                    let known = self
                        .state
                        .any(|a| a.ovs_port.as_deref() == Some(p.name.as_str()));
                    if !known {
                        tracing::info!(port = %p.name, container = %p.external_ids[ovsdb::CONTAINER_KEY], "removing an OVS port no attachment records");
                        if let Ok(true) = self.ovs.del_port(&p.name).await {
                            let _ = link::delete(&self.host.handle, &p.name).await;
                            self.metrics.gc_removed.inc();
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "GC: cannot list OVS ports"),
        }
        (self.metrics.gc_removed.get() - before) as usize
    }
}

/// Lock key of a Neutron port (container locks use the bare container id).
fn port_key(port_id: &str) -> String {
    format!("port:{port_id}")
}

/// The VIF of `ifname` in a KuryrPort (the default VIF answers for any name
/// when there is no entry of that name).
pub fn vif_for<'a>(kp: &'a KuryrPort, ifname: &str) -> Option<&'a Vif> {
    let st = kp.status.as_ref()?;
    st.vifs
        .get(ifname)
        .map(|e| &e.vif)
        .or_else(|| st.default_vif())
}

/// The CNI result of a bound VIF, in the config's CNI version.
pub fn cni_result(version: &str, vif: &Vif, iface: &link::PodIface, netns: &str) -> Value {
    let old = version.starts_with("0.");
    let ips: Vec<Value> = iface
        .addrs
        .iter()
        .map(|(ip, len)| {
            let gw = vif
                .network
                .subnets
                .iter()
                .find(|s| {
                    s.ips
                        .iter()
                        .any(|i| i.parse::<std::net::IpAddr>().ok() == Some(*ip))
                })
                .and_then(|s| s.gateway.clone());
            let mut o = json!({"address": format!("{ip}/{len}"), "interface": 0});
            if let Some(g) = gw {
                o["gateway"] = json!(g);
            }
            if old {
                o["version"] = json!(if ip.is_ipv4() { "4" } else { "6" });
            }
            o
        })
        .collect();
    let routes: Vec<Value> = iface
        .routes
        .iter()
        .map(|r| json!({"dst": format!("{}/{}", r.dst.0, r.dst.1), "gw": r.gw.to_string()}))
        .collect();
    let dns: Vec<String> = vif
        .network
        .subnets
        .iter()
        .flat_map(|s| s.dns.iter().cloned())
        .collect();
    let mut r = json!({
        "cniVersion": version,
        "interfaces": [{"name": iface.name, "mac": link::format_mac(&iface.mac), "sandbox": netns}],
        "ips": ips,
        "routes": routes,
        "dns": {},
    });
    if !dns.is_empty() {
        r["dns"] = json!({"nameservers": dns});
    }
    r
}
