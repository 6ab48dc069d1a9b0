//! The KuryrPorts of this node's pods, watched into a local cache (label
//! `kuryr.openstack.org/nodeName=<node>`), with a way to wait for one to
//! reach a state.

use crate::health::WatchProgress;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kuryr_crds::{KuryrPort, NODE_NAME_LABEL};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Why a pod's UID could not be learnt.
#[derive(Debug, thiserror::Error)]
pub enum UidError {
    /// The pod does not exist.
    #[error("no such pod")]
    NoPod,
    /// The API could not be asked.
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// The cache; cheap to clone.
#[derive(Clone)]
pub struct KpCache {
    client: kube::Client,
    store: Store<KuryrPort>,
    generation: watch::Receiver<u64>,
    synced: Arc<AtomicBool>,
    progress: Arc<std::sync::Mutex<WatchProgress>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl KpCache {
    /// Starts watching the KuryrPorts of `node` in every namespace.
    pub fn start(client: kube::Client, node: &str) -> Self {
        let api: Api<KuryrPort> = Api::all(client.clone());
        let cfg = watcher::Config::default().labels(&format!("{NODE_NAME_LABEL}={node}"));
        let (store, writer) = reflector::store();
        let (tx, generation) = watch::channel(0u64);
        let synced = Arc::new(AtomicBool::new(false));
        let s = synced.clone();
        let progress = Arc::new(std::sync::Mutex::new(WatchProgress::default()));
        let p = progress.clone();
        let stream = reflector::reflector(writer, watcher(api, cfg).default_backoff());
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                record(&p, &ev);
                match ev {
                    Ok(watcher::Event::InitDone) => {
                        s.store(true, Ordering::Relaxed);
                        tracing::info!("KuryrPort cache synced");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "KuryrPort watch failed; retrying"),
                }
                tx.send_modify(|g| *g += 1);
            }
        });
        Self {
            client,
            store,
            generation,
            synced,
            progress,
            task: Arc::new(task),
        }
    }

    /// The first list has been received.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed) && !self.task.is_finished()
    }

    /// How the watch is doing: its last event, since when it has been
    /// failing, whether its task has ended.
    pub fn progress(&self) -> WatchProgress {
        let mut p = *self.progress.lock().unwrap_or_else(|e| e.into_inner());
        p.ended = self.task.is_finished();
        p
    }

    /// The UID of pod `ns`/`name`, from the API.
    pub async fn pod_uid(&self, ns: &str, name: &str) -> Result<String, UidError> {
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(self.client.clone(), ns);
        pods.get_metadata_opt(name)
            .await?
            .and_then(|p| p.metadata.uid)
            .ok_or(UidError::NoPod)
    }

    /// The KuryrPort of pod `ns`/`name` (KuryrPorts are named after their pod).
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<KuryrPort>> {
        self.store.get(&ObjectRef::new(name).within(ns))
    }

    /// A receiver that changes whenever the cache does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.clone()
    }

    /// Every cached KuryrPort.
    pub fn all(&self) -> Vec<Arc<KuryrPort>> {
        self.store.state()
    }

    /// Waits until `f` finds what it wants in the KuryrPort of `ns`/`name`
    /// (called with `None` while there is none), or `timeout` passes.
    pub async fn wait_for<T>(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
        f: impl Fn(Option<&KuryrPort>) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.generation.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if let Some(t) = f(self.get(ns, name).as_deref()) {
                return Some(t);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // timed out, or the watch task ended
                _ => return f(self.get(ns, name).as_deref()),
            }
        }
    }
}

/// Records one item of the watch stream for liveness. `Init` proves
/// nothing: the watcher yields it before asking the API for the list, so
/// an API that never answers gives `Init`, error, `Init`, error...
fn record<K>(
    progress: &std::sync::Mutex<WatchProgress>,
    item: &Result<watcher::Event<K>, watcher::Error>,
) {
    let now = tokio::time::Instant::now();
    let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
    match item {
        Ok(watcher::Event::Init) => {}
        Ok(_) => p.event(now),
        Err(_) => p.error(now),
    }
}
