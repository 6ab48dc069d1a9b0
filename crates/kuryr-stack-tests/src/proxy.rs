//! A fault-injecting HTTP proxy on 127.0.0.1 in front of a real service
//! (Neutron): queued answers instead of the real ones (a 500, a 503), or a
//! request whose answer is lost while the request itself goes through later.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the proxy answers instead of forwarding: status and body.
pub type Fault = (u16, &'static str);

/// A queued fault.
#[derive(Debug, Clone)]
enum Injected {
    /// Answer this instead of forwarding.
    Answer(Fault),
    /// Close the connection without an answer at once, and forward the
    /// request to the service only after this delay: the client cannot
    /// know whether it went through, and it does, later.
    LoseAnswer(Duration),
}

/// An HTTP proxy on 127.0.0.1 in front of `upstream` that answers the next
/// requests matching `method` with queued faults, and forwards everything
/// else to the real service. Counts the requests it saw per method.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    faults: Arc<Mutex<VecDeque<(String, Injected)>>>,
    seen: Arc<Mutex<Vec<String>>>,
    delivered: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts the proxy.
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let faults: Arc<Mutex<VecDeque<(String, Injected)>>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let delivered: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let (f, s, done) = (faults.clone(), seen.clone(), delivered.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (f, s, http, upstream, done) = (
                    f.clone(),
                    s.clone(),
                    http.clone(),
                    upstream.clone(),
                    done.clone(),
                );
                tokio::spawn(async move {
                    let Ok(Some((method, path, headers, body))) = read_request(&mut sock).await
                    else {
                        return;
                    };
                    s.lock().unwrap().push(format!("{method} {path}"));
                    let fault = {
                        let mut q = f.lock().unwrap();
                        match q.front() {
                            Some((m, _)) if *m == method => q.pop_front().map(|(_, f)| f),
                            _ => None,
                        }
                    };
                    let forward = |http: reqwest::Client| {
                        let mut req = http
                            .request(method.parse().unwrap(), format!("{upstream}{path}"))
                            .body(body);
                        for (k, v) in &headers {
                            if k == "x-auth-token" || k == "content-type" || k == "accept" {
                                req = req.header(k, v);
                            }
                        }
                        req
                    };
                    let (status, ctype, body) = match fault {
                        Some(Injected::Answer((st, b))) => {
                            (st, "application/json".to_owned(), b.as_bytes().to_vec())
                        }
                        Some(Injected::LoseAnswer(delay)) => {
                            let req = forward(http);
                            drop(sock);
                            tokio::time::sleep(delay).await;
                            // answered by the service: it has taken effect
                            if req.send().await.is_ok() {
                                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            return;
                        }
                        None => match forward(http).send().await {
                            Ok(r) => {
                                let st = r.status().as_u16();
                                let ct = r
                                    .headers()
                                    .get("content-type")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("application/json")
                                    .to_owned();
                                (
                                    st,
                                    ct,
                                    r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                                )
                            }
                            Err(_) => {
                                (502, "text/plain".into(), b"proxy: upstream failed".to_vec())
                            }
                        },
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Ok(Self {
            url,
            faults,
            seen,
            delivered,
            task,
        })
    }

    /// Queues a fault for the next request with `method`.
    pub fn fail_next(&self, method: &str, fault: Fault) {
        self.faults
            .lock()
            .unwrap()
            .push_back((method.to_owned(), Injected::Answer(fault)));
    }

    /// The next request with `method` gets no answer (the connection is
    /// closed at once) and reaches the service `delay` later.
    pub fn lose_next_answer(&self, method: &str, delay: Duration) {
        self.faults
            .lock()
            .unwrap()
            .push_back((method.to_owned(), Injected::LoseAnswer(delay)));
    }

    /// Requests seen so far (`METHOD /path`).
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests whose answer was lost that have since reached the service
    /// and been answered by it (so what they do has happened).
    pub fn lost_delivered(&self) -> usize {
        self.delivered.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Faults not used yet.
    pub fn pending(&self) -> usize {
        self.faults.lock().unwrap().len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP/1.1 request: method, path, lower-cased headers, body.
async fn read_request(
    sock: &mut tokio::net::TcpStream,
) -> std::io::Result<Option<(String, String, Vec<(String, String)>, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (method, path) = (
        first.next().unwrap_or_default().to_owned(),
        first.next().unwrap_or_default().to_owned(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Ok(Some((method, path, headers, body)))
}
