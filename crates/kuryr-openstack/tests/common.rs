//! Shared helpers of the integration tests: a client for the stack's cloud,
//! and a fault-injecting HTTP proxy in front of a real service.
#![allow(dead_code)]

use kuryr_openstack::{Client, ClientOptions, CloudConfig};
use kuryr_stack_tests::env::StackEnv;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The stack's env file, with OpenStack up.
pub fn stack() -> anyhow::Result<StackEnv> {
    let env = StackEnv::load()?;
    env.require("openstack")?;
    Ok(env)
}

/// A config from the stack's `OS_*` variables (admin).
pub fn config(env: &StackEnv) -> anyhow::Result<CloudConfig> {
    Ok(CloudConfig::from_vars(|k| {
        env.get(k).ok().map(str::to_owned)
    })?)
}

/// A client of the stack's cloud as admin.
pub fn client() -> anyhow::Result<Client> {
    client_with(ClientOptions::default())
}

/// Same, with options.
pub fn client_with(options: ClientOptions) -> anyhow::Result<Client> {
    let env = stack()?;
    Ok(Client::with_options(config(&env)?, options)?)
}

/// A name unique to this run.
pub fn name(prefix: &str) -> String {
    kuryr_stack_tests::unique_name(&format!("kos-{prefix}-"), 60)
}

/// What the proxy answers instead of forwarding: status and body.
pub type Fault = (u16, &'static str);

/// An HTTP proxy on 127.0.0.1 in front of `upstream` that answers the next
/// requests matching `method` with queued faults, and forwards everything
/// else to the real service. Counts the requests it saw per method.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    faults: Arc<Mutex<VecDeque<(String, Fault)>>>,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts the proxy.
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let faults: Arc<Mutex<VecDeque<(String, Fault)>>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let upstream = upstream.trim_end_matches('/').to_owned();
        kuryr_openstack::install_tls_provider();
        let http = reqwest::Client::new();
        let (f, s) = (faults.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (f, s, http, upstream) = (f.clone(), s.clone(), http.clone(), upstream.clone());
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
                    let (status, ctype, body) = match fault {
                        Some((st, b)) => (st, "application/json".to_owned(), b.as_bytes().to_vec()),
                        None => {
                            let mut req = http
                                .request(method.parse().unwrap(), format!("{upstream}{path}"))
                                .body(body);
                            for (k, v) in &headers {
                                if k == "x-auth-token" || k == "content-type" || k == "accept" {
                                    req = req.header(k, v);
                                }
                            }
                            match req.send().await {
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
                            }
                        }
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
            task,
        })
    }

    /// Queues a fault for the next request with `method`.
    pub fn fail_next(&self, method: &str, fault: Fault) {
        self.faults
            .lock()
            .unwrap()
            .push_back((method.to_owned(), fault));
    }

    /// Requests seen so far (`METHOD /path`).
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
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

/// Something a test created, to delete again.
#[derive(Debug, Clone)]
pub enum Made {
    /// A network.
    Network(String),
    /// A subnet.
    Subnet(String),
    /// A subnet pool.
    SubnetPool(String),
    /// A port.
    Port(String),
    /// A trunk.
    Trunk(String),
    /// A security group.
    SecurityGroup(String),
    /// A router.
    Router(String),
    /// A router interface (router, subnet).
    RouterInterface(String, String),
    /// A load balancer (deleted with cascade, then awaited).
    LoadBalancer(String),
}

/// What a test created, deleted newest first whatever the test's outcome.
#[derive(Debug, Default)]
pub struct Created {
    items: Mutex<Vec<Made>>,
}

impl Created {
    /// Remembers `m`.
    pub fn add(&self, m: Made) {
        self.items.lock().unwrap().push(m);
    }

    /// Deletes everything (idempotent deletes; the first error is returned
    /// after trying all).
    pub async fn delete_all(&self, c: &Client) -> anyhow::Result<()> {
        let items = std::mem::take(&mut *self.items.lock().unwrap());
        let n = c.neutron();
        let mut first_err = None;
        for m in items.into_iter().rev() {
            let r = match &m {
                Made::Network(id) => n.delete_network(id).await.map(|_| ()),
                Made::Subnet(id) => n.delete_subnet(id).await.map(|_| ()),
                Made::SubnetPool(id) => n.delete_subnet_pool(id).await.map(|_| ()),
                Made::Port(id) => n.delete_port(id).await.map(|_| ()),
                Made::Trunk(id) => n.delete_trunk(id).await.map(|_| ()),
                Made::SecurityGroup(id) => n.delete_security_group(id).await.map(|_| ()),
                Made::Router(id) => n.delete_router(id).await.map(|_| ()),
                Made::RouterInterface(r, s) => n
                    .remove_router_interface(
                        r,
                        &kuryr_openstack::types::neutron::RouterInterface {
                            subnet_id: Some(s.clone()),
                            port_id: None,
                        },
                    )
                    .await
                    .map(|_| ()),
                Made::LoadBalancer(id) => {
                    let o = c.octavia();
                    match o.delete_load_balancer(id, true).await {
                        Ok(_) => {
                            o.wait_load_balancer_deleted(id, std::time::Duration::from_secs(120))
                                .await
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(e) = r {
                eprintln!("cleanup of {m:?}: {e}");
                first_err.get_or_insert(anyhow::anyhow!("cleanup of {m:?}: {e}"));
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Runs `body` with a fresh [`Created`], then deletes what it recorded.
pub async fn with_cleanup<T>(
    c: &Client,
    body: impl AsyncFnOnce(&Created) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let made = Created::default();
    kuryr_stack_tests::finally(body(&made), made.delete_all(c)).await
}
