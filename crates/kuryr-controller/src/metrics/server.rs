//! The HTTP side of [`Metrics`]: `GET /metrics`, `/healthz` (liveness),
//! `/readyz` (readiness), served by axum.

use super::{CONTENT_TYPE, Metrics};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::time::Instant;

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the task is
/// aborted; returns the bound address (use port 0 for any).
pub async fn serve(
    addr: &str,
    metrics: Arc<Metrics>,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(metrics);
    let task = tokio::spawn(async move {
        // axum retries failed accepts itself: this returns only when aborted
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, address = %local, "the metrics and health server stopped");
        }
    });
    Ok((local, task))
}

fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        // one answer per connection, as before: clients that read to EOF
        // (the pod_burst bench, curl scripts) see the end of the body
        .layer(axum::middleware::map_response(|mut r: Response| async {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }))
        .with_state(metrics)
}

async fn scrape(State(m): State<Arc<Metrics>>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.render()).into_response()
}

/// 200 `ok`, or 503 with the reason.
fn answer(r: Result<(), String>, ok: &'static str) -> Response {
    match r {
        Ok(()) => (StatusCode::OK, ok).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn healthz(State(m): State<Arc<Metrics>>) -> Response {
    answer(m.health.liveness(Instant::now()), "ok\n")
}

async fn readyz(State(m): State<Arc<Metrics>>) -> Response {
    answer(m.readiness(Instant::now()), "ready\n")
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "GET /metrics, /healthz or /readyz\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The raw answer to `GET path`, read to EOF.
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
            .await
            .expect("the server closes the connection after its answer")
            .unwrap();
        out
    }

    fn status(answer: &str) -> &str {
        answer.lines().next().unwrap_or("")
    }

    fn body(answer: &str) -> &str {
        answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness_on_a_real_socket() {
        let m = Arc::new(Metrics::default());
        let (addr, task) = serve("127.0.0.1:0", m.clone()).await.unwrap();
        assert_eq!(status(&get(addr, "/healthz").await), "HTTP/1.1 200 OK");
        let r = get(addr, "/readyz").await;
        assert_eq!(status(&r), "HTTP/1.1 503 Service Unavailable");
        assert!(body(&r).contains("not the leader"), "{r}");
        m.leader.store(true, Ordering::Relaxed);
        m.set_reconciled();
        m.set_ready(true);
        let r = get(addr, "/readyz").await;
        assert_eq!(status(&r), "HTTP/1.1 200 OK");
        assert_eq!(body(&r), "ready\n");
        m.pods_handled.fetch_add(7, Ordering::Relaxed);
        let r = get(addr, "/metrics").await;
        assert_eq!(status(&r), "HTTP/1.1 200 OK");
        assert!(
            r.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{r}"
        );
        assert!(body(&r).contains("\nkuryr_pods_handled_total 7\n"), "{r}");
        let r = get(addr, "/nope").await;
        assert_eq!(status(&r), "HTTP/1.1 404 Not Found");
        assert!(body(&r).contains("/metrics"), "{r}");
        task.abort();
    }

    #[tokio::test]
    async fn healthz_fails_with_the_reason_past_the_bound_and_recovers() {
        let m = Arc::new(Metrics::new(Duration::from_secs(1)));
        let (addr, task) = serve("127.0.0.1:0", m.clone()).await.unwrap();
        // failing since 2 s ago (times are injected: no sleeping)
        let past = Instant::now() - Duration::from_secs(2);
        m.health.watch_failed(past);
        let r = get(addr, "/healthz").await;
        assert_eq!(status(&r), "HTTP/1.1 503 Service Unavailable", "{r}");
        assert!(body(&r).contains("Kubernetes watches"), "{r}");
        assert!(body(&r).contains("with no success (bound 1 s)"), "{r}");
        // not live: not ready either, whatever else holds
        m.leader.store(true, Ordering::Relaxed);
        m.set_reconciled();
        m.set_ready(true);
        let r = get(addr, "/readyz").await;
        assert_eq!(status(&r), "HTTP/1.1 503 Service Unavailable", "{r}");
        assert!(body(&r).contains("Kubernetes watches"), "{r}");
        m.health.watch_ok(Instant::now());
        let r = get(addr, "/healthz").await;
        assert_eq!(status(&r), "HTTP/1.1 200 OK", "{r}");
        assert_eq!(body(&r), "ok\n");
        assert_eq!(status(&get(addr, "/readyz").await), "HTTP/1.1 200 OK");
        // a failing Neutron (only) is named as such
        m.health.neutron_failed(past);
        let r = get(addr, "/healthz").await;
        assert_eq!(status(&r), "HTTP/1.1 503 Service Unavailable", "{r}");
        assert!(body(&r).contains("every Neutron call has failed"), "{r}");
        assert!(!body(&r).contains("Kubernetes"), "{r}");
        task.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_all_get_the_whole_exposition() {
        let m = Arc::new(Metrics::default());
        m.ports_created.fetch_add(5, Ordering::Relaxed);
        let (addr, task) = serve("127.0.0.1:0", m.clone()).await.unwrap();
        let scrapes: Vec<_> = (0..32)
            .map(|i| {
                tokio::spawn(async move {
                    let path = match i % 3 {
                        0 => "/metrics",
                        1 => "/healthz",
                        _ => "/readyz",
                    };
                    (path, get(addr, path).await)
                })
            })
            .collect();
        for s in scrapes {
            let (path, r) = s.await.unwrap();
            match path {
                "/metrics" => {
                    assert_eq!(status(&r), "HTTP/1.1 200 OK");
                    assert!(body(&r).contains("\nkuryr_ports_created_total 5\n"), "{r}");
                    assert_eq!(body(&r), m.render());
                }
                "/healthz" => assert_eq!(status(&r), "HTTP/1.1 200 OK"),
                _ => assert_eq!(status(&r), "HTTP/1.1 503 Service Unavailable"),
            }
        }
        task.abort();
    }
}
