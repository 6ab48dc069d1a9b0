//! The daemon's two listeners: the CNI API on a unix socket (HTTP/1.1,
//! `POST /cni`, root only) and health plus metrics on a loopback TCP
//! address (`GET /alive`, `/ready`, `/metrics`).

use crate::Daemon;
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

/// Serves the CNI API until the task is aborted.
pub async fn serve_cni(listener: tokio::net::UnixListener, daemon: Arc<Daemon>) {
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

/// Serves `/alive`, `/ready` and `/metrics` on `addr`; returns the bound
/// address and the task.
pub async fn serve_health(
    addr: &str,
    daemon: Arc<Daemon>,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let d = daemon.clone();
            tokio::spawn(async move {
                let Ok(Ok(req)) =
                    tokio::time::timeout(Duration::from_secs(5), read_request(&mut sock)).await
                else {
                    return;
                };
                let (status, body) = match req.path.as_str() {
                    "/metrics" => (200, d.metrics.render()),
                    "/alive" => (200, "alive\n".to_owned()),
                    "/ready" => match d.status().await {
                        Ok(()) => {
                            d.metrics.set_ready(true);
                            (200, "ready\n".to_owned())
                        }
                        Err(e) => {
                            d.metrics.set_ready(false);
                            (503, format!("not ready: {}: {}\n", e.msg, e.details))
                        }
                    },
                    _ => (404, "GET /alive, /ready or /metrics\n".to_owned()),
                };
                respond(
                    &mut sock,
                    status,
                    "text/plain; version=0.0.4",
                    body.as_bytes(),
                )
                .await;
            });
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

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
