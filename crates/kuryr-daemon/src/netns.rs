//! Netlink sockets inside other network namespaces, made on a dedicated OS
//! thread.
//!
//! `setns(2)` moves only the calling thread, so it never runs on a tokio
//! worker: one thread owned by [`NetnsThread`] enters the pod's namespace,
//! opens a netlink socket there (a socket stays bound to the namespace it
//! was made in), and goes back to the host namespace before taking the next
//! job. The socket is then used from async code like any other.

use nix::sched::{CloneFlags, setns};
use rtnetlink::Handle;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// A netlink connection into one namespace; its I/O task stops on drop.
pub struct NsNetlink {
    /// rtnetlink requests.
    pub handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl NsNetlink {
    /// Wraps a handle and the task driving its connection.
    pub fn from_parts(handle: Handle, task: tokio::task::JoinHandle<()>) -> Self {
        Self { handle, task }
    }
}

impl Drop for NsNetlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A network namespace that cannot be entered.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The netns path does not exist (the sandbox is gone).
    #[error("network namespace {0} does not exist")]
    Gone(String),
    /// Opening or entering it failed.
    #[error("network namespace {path}: {err}")]
    Enter {
        /// Path.
        path: String,
        /// Cause.
        err: String,
    },
}

struct Job {
    path: PathBuf,
    rt: tokio::runtime::Handle,
    reply: oneshot::Sender<Result<NsConn, NetnsError>>,
}

type NsConn = (
    rtnetlink::proto::Connection<rtnetlink::packet_route::RouteNetlinkMessage>,
    Handle,
);

/// The worker thread doing every `setns`.
pub struct NetnsThread {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Default for NetnsThread {
    fn default() -> Self {
        Self::new()
    }
}

impl NetnsThread {
    /// The thread is started on first use (and again if it ever died).
    pub fn new() -> Self {
        Self {
            tx: Mutex::new(None),
        }
    }

    fn sender(&self) -> mpsc::Sender<Job> {
        let mut guard = self.tx.lock().expect("netns sender lock");
        if let Some(tx) = guard.as_ref() {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("kuryr-netns".into())
            .spawn(move || worker(rx))
            .expect("spawning the netns thread");
        *guard = Some(tx.clone());
        tx
    }

    /// A netlink connection inside the namespace at `path`.
    pub async fn open(&self, path: &Path) -> Result<NsNetlink, NetnsError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            path: path.to_owned(),
            rt: tokio::runtime::Handle::current(),
            reply,
        };
        let job = match self.sender().send(job) {
            Ok(()) => None,
            Err(mpsc::SendError(job)) => Some(job),
        };
        let rx = match job {
            None => rx,
            Some(job) => {
                // the thread died: start a new one and try once more
                *self.tx.lock().expect("netns sender lock") = None;
                let (reply, rx) = oneshot::channel();
                self.sender()
                    .send(Job { reply, ..job })
                    .map_err(|_| enter_err(path, "netns thread is not running"))?;
                rx
            }
        };
        let (conn, handle) = rx
            .await
            .map_err(|_| enter_err(path, "netns thread stopped"))??;
        let task = tokio::spawn(conn);
        Ok(NsNetlink { handle, task })
    }
}

fn enter_err(path: &Path, err: impl std::fmt::Display) -> NetnsError {
    NetnsError::Enter {
        path: path.display().to_string(),
        err: err.to_string(),
    }
}

/// Opens the namespace file of `path`.
pub fn open_netns(path: &Path) -> Result<File, NetnsError> {
    File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            NetnsError::Gone(path.display().to_string())
        } else {
            enter_err(path, e)
        }
    })
}

fn worker(rx: mpsc::Receiver<Job>) {
    let host = match File::open("/proc/thread-self/ns/net") {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot open this thread's network namespace");
            return;
        }
    };
    while let Ok(job) = rx.recv() {
        let result = (|| {
            let ns = open_netns(&job.path)?;
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| enter_err(&job.path, e))?;
            let made = {
                let _rt = job.rt.enter();
                rtnetlink::new_connection().map(|(c, h, _)| (c, h))
            };
            made.map_err(|e| enter_err(&job.path, format!("netlink socket: {e}")))
        })();
        // always come back before anything else happens on this thread
        if let Err(e) = setns(&host, CloneFlags::CLONE_NEWNET) {
            tracing::error!(error = %e, "cannot return to the host network namespace; restarting the netns thread");
            let _ = job
                .reply
                .send(Err(enter_err(&job.path, "netns thread lost its way home")));
            return;
        }
        let _ = job.reply.send(result);
    }
}
