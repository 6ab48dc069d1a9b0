//! The daemon's two listeners: the CNI API on a unix socket (HTTP/1.1 read
//! and written here, `POST /cni`, root only) and, served by axum, health
//! plus metrics on a loopback TCP address (`GET /alive`, `/ready`,
//! `/metrics`; [`crate::health`] says what makes the probes fail).

use crate::Daemon;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// One parsed request: method, path, body.
pub struct Request {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Body.
    pub body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (headers, then `Content-Length` bytes).
pub async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Result<Request, String> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 64 * 1024 {
            return Err("request head too large".into());
        }
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the request ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let len = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .map_err(|_| "bad Content-Length".to_string())?
        .unwrap_or(0);
    if len > MAX_BODY {
        return Err(format!("body of {len} bytes is too large"));
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed inside the body".into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok(Request { method, path, body })
}

/// Writes a complete response and closes.
pub async fn respond<S: AsyncWrite + Unpin>(s: &mut S, status: u16, ctype: &str, body: &[u8]) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body).await;
    let _ = s.shutdown().await;
}

/// Binds the CNI socket at `path` (mode 0600, parent dir made 0700 when
/// created). A leftover socket nobody answers on is replaced; one a
/// running daemon answers on is an error.
pub fn bind_cni_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "{} is in use: another kuryr-daemon is running on this node",
                path.display()
            );
        }
        std::fs::remove_file(path)?;
    }
    // bound in a private (0700) directory beside it, made 0600 there, then
    // moved into place: the socket is never reachable with a wider mode
    let dir = path.parent().unwrap_or(Path::new("."));
    let private = dir.join(format!(".kuryr-bind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::create_dir(&private)?;
    let bound = (|| {
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
        let inner = private.join("sock");
        let l = std::os::unix::net::UnixListener::bind(&inner)?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inner, path)?;
        l.set_nonblocking(true)?;
        anyhow::Ok(l)
    })();
    let _ = std::fs::remove_dir_all(&private);
    Ok(tokio::net::UnixListener::from_std(bound?)?)
}

/// Serves the CNI API until the task is aborted; `/ready` and `/alive`
/// see whether it runs.
pub async fn serve_cni(listener: tokio::net::UnixListener, daemon: Arc<Daemon>) {
    let _serving = daemon.health.cni_serving();
    loop {
        let mut sock = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // out of file descriptors or the like: do not spin
                tracing::warn!(error = %e, "accepting a CNI connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let d = daemon.clone();
        tokio::spawn(async move {
            let req = match tokio::time::timeout(Duration::from_secs(10), read_request(&mut sock))
                .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    let err = kuryr_cni::CniError::new(
                        kuryr_cni::code::DECODE_FAILURE,
                        "malformed request to kuryr-daemon",
                        e,
                    );
                    let b = serde_json::to_vec(&err).expect("error serialises");
                    respond(&mut sock, 400, "application/json", &b).await;
                    return;
                }
                Err(_) => return,
            };
            let (status, body) = match (req.method.as_str(), req.path.as_str()) {
                ("POST", "/cni") => d.handle(&req.body).await,
                _ => (
                    404,
                    serde_json::to_value(kuryr_cni::CniError::new(
                        kuryr_cni::code::INVALID_CONFIG,
                        "unknown kuryr-daemon endpoint",
                        format!("{} {}: use POST /cni", req.method, req.path),
                    ))
                    .expect("error serialises"),
                ),
            };
            let b = serde_json::to_vec(&body).expect("JSON serialises");
            respond(&mut sock, status, "application/json", &b).await;
        });
    }
}

/// What the health server answers from; [`Daemon`] is the real one.
pub trait Checks: Send + Sync + 'static {
    /// The metrics exposition (OpenMetrics text).
    fn metrics(&self) -> String;
    /// Alive; the reason otherwise.
    fn alive(&self) -> Result<(), String>;
    /// Ready; the reason otherwise.
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send;
}

impl Checks for Daemon {
    fn metrics(&self) -> String {
        self.metrics.render()
    }

    fn alive(&self) -> Result<(), String> {
        Daemon::alive(self)
    }

    async fn ready(&self) -> Result<(), String> {
        Daemon::ready(self).await
    }
}

/// The health and metrics routes: `GET /alive`, `/ready` (200, or 503 with
/// the reason as plain text) and `/metrics`; 404 elsewhere. Every answer
/// closes its connection: probes and scrapes come seconds apart, and a
/// reader may read the answer to its end.
pub fn health_router<C: Checks>(checks: Arc<C>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page::<C>))
        .route("/alive", get(alive_page::<C>))
        .route("/ready", get(ready_page::<C>))
        .fallback(async || {
            (
                StatusCode::NOT_FOUND,
                "not found: GET /alive, /ready or /metrics\n",
            )
        })
        .layer(axum::middleware::map_response(close_connection))
        .with_state(checks)
}

async fn metrics_page<C: Checks>(State(c): State<Arc<C>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        c.metrics(),
    )
}

async fn alive_page<C: Checks>(State(c): State<Arc<C>>) -> (StatusCode, String) {
    match c.alive() {
        Ok(()) => (StatusCode::OK, "alive\n".into()),
        Err(why) => {
            tracing::warn!(reason = %why, "not alive");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not alive: {why}\n"),
            )
        }
    }
}

async fn ready_page<C: Checks>(State(c): State<Arc<C>>) -> (StatusCode, String) {
    match c.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn close_connection(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Serves [`health_router`] on `addr`; returns the bound address and the
/// task. A failed accept (out of file descriptors, an aborted connection)
/// is logged and retried by `axum::serve`, never the end of the server;
/// each connection is served on its own task.
pub async fn serve_health<C: Checks>(
    addr: &str,
    checks: Arc<C>,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = health_router(checks);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the health and metrics server stopped");
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Health, WatchProgress};
    use crate::metrics::Metrics;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    /// Health checks with the real [`Health`] judging a watch state the
    /// test sets.
    struct Fake {
        health: Health,
        watch: Mutex<WatchProgress>,
        ready: Mutex<Result<(), String>>,
        metrics: Metrics,
    }

    impl Fake {
        fn new(bound: Duration) -> Arc<Self> {
            Arc::new(Self {
                health: Health::new(bound),
                watch: Mutex::default(),
                ready: Mutex::new(Ok(())),
                metrics: Metrics::default(),
            })
        }
    }

    impl Checks for Fake {
        fn metrics(&self) -> String {
            self.metrics.render()
        }

        fn alive(&self) -> Result<(), String> {
            let w = *self.watch.lock().unwrap();
            self.health.alive(&w, Instant::now())
        }

        async fn ready(&self) -> Result<(), String> {
            self.ready.lock().unwrap().clone()
        }
    }

    /// `GET path` on a fresh connection, read to its end (as the stack
    /// tests' reader does): status code and body.
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let (status, _, body) = get_with_head(addr, path).await;
        (status, body)
    }

    /// [`get`], with the head too.
    async fn get_with_head(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .expect("the server closes the connection after answering")
            .unwrap();
        let (head, body) = out.split_once("\r\n\r\n").expect("a complete answer");
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    #[tokio::test]
    async fn the_health_server_answers_each_path() {
        let fake = Fake::new(Duration::from_secs(120));
        fake.metrics.gc_removed.inc();
        let (addr, task) = serve_health("127.0.0.1:0", fake.clone()).await.unwrap();
        assert_eq!(get(addr, "/alive").await, (200, "alive\n".into()));
        assert_eq!(get(addr, "/ready").await, (200, "ready\n".into()));
        let (status, head, body) = get_with_head(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{head}"
        );
        assert!(body.contains("\nkuryr_cni_gc_removed_total 1\n"), "{body}");
        assert!(body.contains("\nkuryr_cni_adds_waiting 0\n"), "{body}");
        let (status, body) = get(addr, "/nothing").await;
        assert_eq!(status, 404);
        assert!(body.contains("/alive, /ready or /metrics"), "{body}");
        *fake.ready.lock().unwrap() = Err("KuryrPort cache not synced".into());
        assert_eq!(
            get(addr, "/ready").await,
            (503, "not ready: KuryrPort cache not synced\n".into())
        );
        task.abort();
    }

    #[tokio::test]
    async fn alive_fails_while_the_watch_fails_past_the_bound() {
        let bound = Duration::from_secs(120);
        let fake = Fake::new(bound);
        let (addr, task) = serve_health("127.0.0.1:0", fake.clone()).await.unwrap();
        let now = Instant::now();
        // failing, but not for long yet
        fake.watch.lock().unwrap().error(now);
        assert_eq!(get(addr, "/alive").await.0, 200);
        // failing for longer than the bound, with no event since
        let long_ago = now.checked_sub(bound + Duration::from_secs(5)).unwrap();
        *fake.watch.lock().unwrap() = WatchProgress {
            failing_since: Some(long_ago),
            ..Default::default()
        };
        let (status, body) = get(addr, "/alive").await;
        assert_eq!(status, 503);
        assert!(
            body.starts_with("not alive: the KuryrPort watch has failed for 12"),
            "{body}"
        );
        // one healthy event and it is alive again
        fake.watch.lock().unwrap().event(Instant::now());
        assert_eq!(get(addr, "/alive").await, (200, "alive\n".into()));
        task.abort();
    }

    #[tokio::test]
    async fn an_idle_connection_does_not_hold_up_other_scrapes() {
        let fake = Fake::new(Duration::from_secs(120));
        let (addr, task) = serve_health("127.0.0.1:0", fake).await.unwrap();
        // connected and silent, and one that sent half a request
        let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        let scrapes: Vec<_> = (0..8)
            .map(|_| tokio::spawn(async move { get(addr, "/metrics").await.0 }))
            .collect();
        for s in scrapes {
            assert_eq!(s.await.unwrap(), 200);
        }
        task.abort();
    }

    /// A real daemon whose Kubernetes API does not answer: never ready,
    /// and not alive once its watch has failed past the bound (zero here,
    /// so the first failure of the watch is enough).
    #[tokio::test]
    async fn a_daemon_without_its_api_is_not_ready_then_not_alive() {
        let dir = std::env::temp_dir().join(format!("kuryr-health-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(cfg).unwrap();
        let settings = crate::Settings {
            node: "node-a".into(),
            state_dir: dir.join("state"),
            ovsdb: dir.join("db.sock"),
            link_iface: String::new(),
            mtu: None,
            vif_timeout: Duration::from_secs(1),
            unhealthy_after: Duration::ZERO,
        };
        let cache = crate::cache::KpCache::start(client, "node-a");
        let daemon = Arc::new(Daemon::new(settings, cache).unwrap());
        let (addr, task) = serve_health("127.0.0.1:0", daemon.clone()).await.unwrap();
        assert_eq!(
            get(addr, "/ready").await,
            (
                503,
                "not ready: KuryrPort cache not synced with the Kubernetes API yet\n".into()
            )
        );
        assert!(daemon.metrics.render().contains("\nkuryr_cni_ready 0\n"));
        // the watch's first error (connection refused) is recorded
        let deadline = Instant::now() + Duration::from_secs(10);
        let body = loop {
            let (status, body) = get(addr, "/alive").await;
            if status == 503 {
                break body;
            }
            assert!(Instant::now() < deadline, "still alive: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            body.starts_with("not alive: the KuryrPort watch has failed for"),
            "{body}"
        );
        assert!(daemon.cache.progress().failing_since.is_some());
        assert!(daemon.cache.progress().last_event.is_none());
        task.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_socket_appears_with_mode_0600_and_refuses_a_second_daemon() {
        let dir = std::env::temp_dir().join(format!("kuryr-sock-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("run/daemon.sock");
        let listener = bind_cni_socket(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, 0o700);
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("daemon.sock")]);
        // it answers, so a second daemon must not take it over
        let _client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let e = bind_cni_socket(&path).unwrap_err().to_string();
        assert!(e.contains("in use"), "{e}");
        drop(listener);
        // a leftover socket nobody answers on is replaced
        let again = bind_cni_socket(&path);
        assert!(again.is_ok(), "{:?}", again.err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
