//! The KuryrPorts of this node's pods, watched into a local cache (label
//! `kuryr.openstack.org/nodeName=<node>`), with a way to wait for one to
//! reach a state.

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kuryr_crds::{KuryrPort, NODE_NAME_LABEL};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// The cache; cheap to clone.
#[derive(Clone)]
pub struct KpCache {
    store: Store<KuryrPort>,
    generation: watch::Receiver<u64>,
    synced: Arc<AtomicBool>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl KpCache {
    /// Starts watching the KuryrPorts of `node` in every namespace.
    pub fn start(client: kube::Client, node: &str) -> Self {
        let api: Api<KuryrPort> = Api::all(client);
        let cfg = watcher::Config::default().labels(&format!("{NODE_NAME_LABEL}={node}"));
        let (store, writer) = reflector::store();
        let (tx, generation) = watch::channel(0u64);
        let synced = Arc::new(AtomicBool::new(false));
        let s = synced.clone();
        let stream = reflector::reflector(writer, watcher(api, cfg).default_backoff());
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
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
            store,
            generation,
            synced,
            task: Arc::new(task),
        }
    }

    /// The first list has been received.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed) && !self.task.is_finished()
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
