//! The HTTP core: token management, endpoints, retries, concurrency limit.

use crate::auth::{AuthMethod, Secret};
use crate::config::CloudConfig;
use crate::error::{ApiError, Error, Result};
use crate::retry::Backoff;
use kuryr_openstack_types::keystone::{Token, TokenResponse};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore};

/// Services the client talks to, by catalogue type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Neutron (`network`).
    Network,
    /// Octavia (`load-balancer`).
    LoadBalancer,
}

impl Service {
    /// The catalogue's service type.
    pub fn service_type(self) -> &'static str {
        match self {
            Service::Network => "network",
            Service::LoadBalancer => "load-balancer",
        }
    }
}

/// Tuning of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Requests in flight at once, over all callers of this client.
    pub max_in_flight: usize,
    /// Retries of transient failures.
    pub backoff: Backoff,
    /// Re-authenticate this long before the token expires, but never
    /// earlier than half-way through the token's life (so a short-lived
    /// token is not replaced on every call).
    pub refresh_margin: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(60),
            max_in_flight: 16,
            backoff: Backoff::default(),
            refresh_margin: Duration::from_secs(300),
        }
    }
}

/// The current token and what came with it.
struct AuthState {
    token: Secret,
    /// When Keystone issued it (`None`: it did not say).
    issued_at: Option<i64>,
    expires_at: i64,
    body: Arc<Token>,
    /// Bumped on every authentication, so concurrent 401s re-auth once.
    generation: u64,
}

struct Inner {
    http: reqwest::Client,
    config: CloudConfig,
    options: ClientOptions,
    state: Mutex<Option<AuthState>>,
    limit: Semaphore,
    calls: std::sync::Mutex<std::collections::BTreeMap<CallKey, u64>>,
}

/// One kind of HTTP request counted by [`Client::call_counts`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallKey {
    /// Service type (`network`, `load-balancer`).
    pub service: &'static str,
    /// HTTP method.
    pub method: String,
    /// What was called: the collection, and the action or sub-resource of
    /// an object (`ports`, `ports/tags`, `trunks/add_subports`).
    pub resource: String,
    /// `2xx`, `4xx`, `5xx` or `error` (no answer).
    pub result: &'static str,
}

/// The resource of a request path (relative or a whole URL), for counting.
pub(crate) fn resource_of(path: &str) -> String {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let path = match path.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => path,
    };
    let segs: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && !matches!(*s, "v2.0" | "v2" | "v3" | "lbaas"))
        .collect();
    match segs.as_slice() {
        [] => "/".into(),
        [c] | [c, _] => (*c).to_owned(),
        [c, _, action, ..] => format!("{c}/{action}"),
    }
}

/// A Keystone-authenticated client of Neutron and Octavia. Cheap to clone;
/// clones share the token, the connection pool and the concurrency limit.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("auth_url", &self.inner.config.auth.auth_url())
            .field("region", &self.inner.config.region)
            .finish_non_exhaustive()
    }
}

/// Whether a token issued at `issued_at` and expiring at `expires_at`
/// (Unix seconds) must be renewed at `now`: `margin` before it expires, the
/// margin capped at half the token's lifetime.
pub(crate) fn needs_refresh(
    issued_at: Option<i64>,
    expires_at: i64,
    now: i64,
    margin: Duration,
) -> bool {
    let mut margin = i64::try_from(margin.as_secs()).unwrap_or(i64::MAX);
    if let Some(issued) = issued_at.filter(|i| *i < expires_at) {
        margin = margin.min((expires_at - issued) / 2);
    }
    now.saturating_add(margin) >= expires_at
}

/// An HTTP answer: status and body.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Client {
    /// A client with default options.
    pub fn new(config: CloudConfig) -> Result<Self> {
        Self::with_options(config, ClientOptions::default())
    }

    /// A client with the given options.
    pub fn with_options(config: CloudConfig, options: ClientOptions) -> Result<Self> {
        install_tls_provider();
        let mut b = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("kuryr-rs/", env!("CARGO_PKG_VERSION")))
            // servers behind uwsgi without keep-alive close every connection:
            // short idle times avoid reusing a socket the server already closed
            .pool_idle_timeout(Duration::from_secs(5));
        if let Some(ca) = &config.cacert {
            let pem = std::fs::read(ca).map_err(|e| {
                Error::Config(format!("cannot read CA bundle {}: {e}", ca.display()))
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Config(format!("CA bundle {}: {e}", ca.display())))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if config.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                limit: Semaphore::new(options.max_in_flight.max(1)),
                config,
                options,
                state: Mutex::new(None),
                calls: Default::default(),
            }),
        })
    }

    /// Every HTTP request sent so far (retries included), by service,
    /// method, resource and result.
    pub fn call_counts(&self) -> Vec<(CallKey, u64)> {
        let m = self.inner.calls.lock().unwrap_or_else(|e| e.into_inner());
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    fn count(&self, service: Service, method: &Method, path: &str, result: &'static str) {
        let key = CallKey {
            service: service.service_type(),
            method: method.as_str().to_owned(),
            resource: resource_of(path),
            result,
        };
        let mut m = self.inner.calls.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(key).or_default() += 1;
    }

    /// Neutron calls.
    pub fn neutron(&self) -> crate::Neutron {
        crate::Neutron::new(self.clone())
    }

    /// Octavia calls.
    pub fn octavia(&self) -> crate::Octavia {
        crate::Octavia::new(self.clone())
    }

    /// The current token's body (user, project, roles, catalogue),
    /// authenticating first if needed.
    pub async fn token_info(&self) -> Result<Arc<Token>> {
        Ok(self.current_token().await?.1)
    }

    /// The current token itself (for a caller that must hand it on, e.g.
    /// to revoke it); refreshed first if needed. Never log it.
    pub async fn auth_token(&self) -> Result<Secret> {
        Ok(self.current_token().await?.0)
    }

    /// The project id the client works in.
    pub async fn project_id(&self) -> Result<String> {
        let t = self.token_info().await?;
        t.project
            .as_ref()
            .map(|p| p.id.clone())
            .ok_or_else(|| Error::Config("the token is not scoped to a project".into()))
    }

    /// Forgets the token, so the next call authenticates anew.
    pub async fn invalidate_token(&self) {
        *self.inner.state.lock().await = None;
    }

    /// (token, body, generation), re-authenticating when it is missing or
    /// about to expire.
    async fn current_token(&self) -> Result<(Secret, Arc<Token>, u64)> {
        let mut st = self.inner.state.lock().await;
        let fresh = st.as_ref().is_some_and(|s| {
            !needs_refresh(
                s.issued_at,
                s.expires_at,
                crate::time::now(),
                self.inner.options.refresh_margin,
            )
        });
        if !fresh {
            let generation = st.as_ref().map_or(0, |s| s.generation) + 1;
            let (token, body) = self.authenticate().await?;
            let expires_at =
                crate::time::parse_utc(&body.expires_at).ok_or_else(|| Error::Decode {
                    what: "Keystone token".into(),
                    detail: format!("bad expires_at {:?}", body.expires_at),
                })?;
            *st = Some(AuthState {
                token,
                issued_at: crate::time::parse_utc(&body.issued_at),
                expires_at,
                body: Arc::new(body),
                generation,
            });
        }
        let s = st.as_ref().expect("token state set above");
        Ok((s.token.clone(), s.body.clone(), s.generation))
    }

    /// Drops the token of `generation` after a 401 (not a newer one another
    /// caller already got).
    async fn reject_token(&self, generation: u64) {
        let mut st = self.inner.state.lock().await;
        if st.as_ref().is_some_and(|s| s.generation == generation)
            && let Some(s) = st.as_mut()
        {
            s.issued_at = None;
            s.expires_at = 0;
        }
    }

    async fn authenticate(&self) -> Result<(Secret, Token)> {
        let auth: &AuthMethod = &self.inner.config.auth;
        let url = format!("{}/auth/tokens", auth.auth_url());
        let body = auth.request_body()?;
        let mut attempt = 0;
        loop {
            let res = self.inner.http.post(&url).json(&body).send().await;
            let err = match res {
                Ok(resp) if resp.status() == StatusCode::CREATED => {
                    let token = resp
                        .headers()
                        .get("x-subject-token")
                        .and_then(|v| v.to_str().ok())
                        .map(Secret::new)
                        .ok_or_else(|| Error::Decode {
                            what: format!("POST {url}"),
                            detail: "no X-Subject-Token header".into(),
                        })?;
                    let bytes = resp.bytes().await.map_err(|e| transport("POST", &url, e))?;
                    let tr: TokenResponse =
                        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
                            what: format!("POST {url}"),
                            detail: e.to_string(),
                        })?;
                    tracing::debug!(user = %tr.token.user.name, expires_at = %tr.token.expires_at, "authenticated to Keystone");
                    return Ok((token, tr.token));
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let rid = request_id(&resp);
                    let bytes = resp.bytes().await.unwrap_or_default();
                    Error::Api(Box::new(ApiError::from_body(
                        "POST", &url, status, rid, &bytes,
                    )))
                }
                Err(e) => transport("POST", &url, e),
            };
            // authenticating twice is harmless: any transient failure is retried
            if attempt < self.inner.options.backoff.retries && err.is_retryable(true) {
                let d = self.inner.options.backoff.random_delay(attempt);
                tracing::warn!(error = %err, delay_ms = d.as_millis() as u64, "Keystone call failed, retrying");
                tokio::time::sleep(d).await;
                attempt += 1;
                continue;
            }
            return Err(err);
        }
    }

    /// Base URL of `service`: the override, or the catalogue's endpoint.
    pub async fn endpoint(&self, service: Service) -> Result<String> {
        let c = &self.inner.config;
        if let Some(u) = c.endpoint_overrides.get(service.service_type()) {
            return Ok(u.trim_end_matches('/').to_owned());
        }
        let token = self.token_info().await?;
        token
            .endpoint(service.service_type(), &c.interface, c.region.as_deref())
            .ok_or_else(|| Error::NoEndpoint {
                service: service.service_type().into(),
                interface: c.interface.clone(),
                region: c.region.clone().unwrap_or_else(|| "any".into()),
            })
    }

    /// One call with retries, token refresh and the concurrency limit.
    /// `path` is relative to the service endpoint (`v2.0/ports`) or an
    /// absolute URL (pagination links). `idempotent`: repeating the request
    /// has no further effect, so 5xx answers may be retried.
    pub(crate) async fn call(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        idempotent: bool,
    ) -> Result<Answer> {
        use tracing::Instrument;
        let span = tracing::debug_span!(
            "openstack",
            service = service.service_type(),
            %method,
            path = path_for_log(path),
        );
        self.call_inner(service, method, path, body, idempotent)
            .instrument(span)
            .await
    }

    async fn call_inner(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        idempotent: bool,
    ) -> Result<Answer> {
        let base = self.endpoint(service).await?;
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{base}/{}", path.trim_start_matches('/'))
        };
        let backoff = self.inner.options.backoff;
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            // one permit per attempt: a call waiting out a backoff does not
            // hold a slot other callers could use
            let permit = self
                .inner
                .limit
                .acquire()
                .await
                .expect("semaphore never closed");
            let (token, _, generation) = self.current_token().await?;
            let mut req = self
                .inner
                .http
                .request(method.clone(), &url)
                .header("X-Auth-Token", token.expose())
                .header("Accept", "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let started = std::time::Instant::now();
            let sent = req.send().await;
            self.count(
                service,
                &method,
                path,
                match &sent {
                    Ok(r) if r.status().is_success() => "2xx",
                    Ok(r) if r.status().is_client_error() => "4xx",
                    Ok(_) => "5xx",
                    Err(_) => "error",
                },
            );
            let err = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let rid = request_id(&resp);
                    let bytes = resp.bytes().await;
                    drop(permit);
                    let bytes = match bytes {
                        Ok(b) => b.to_vec(),
                        Err(e) => {
                            let err = transport(method.as_str(), &url, e);
                            if attempt < backoff.retries && err.is_retryable(idempotent) {
                                tokio::time::sleep(backoff.random_delay(attempt)).await;
                                attempt += 1;
                                continue;
                            }
                            return Err(err);
                        }
                    };
                    tracing::debug!(
                        status = status.as_u16(),
                        request_id = rid.as_deref().unwrap_or(""),
                        ms = started.elapsed().as_millis() as u64,
                        "OpenStack call"
                    );
                    if status.is_success() {
                        return Ok(Answer {
                            status,
                            body: bytes,
                        });
                    }
                    if status == StatusCode::UNAUTHORIZED && !reauthenticated {
                        // the token was revoked or expired early: one new one
                        reauthenticated = true;
                        self.reject_token(generation).await;
                        continue;
                    }
                    Error::Api(Box::new(ApiError::from_body(
                        method.as_str(),
                        &url,
                        status.as_u16(),
                        rid,
                        &bytes,
                    )))
                }
                Err(e) => {
                    drop(permit);
                    transport(method.as_str(), &url, e)
                }
            };
            if attempt < backoff.retries && err.is_retryable(idempotent) {
                let d = backoff.random_delay(attempt);
                tracing::warn!(error = %err, attempt, delay_ms = d.as_millis() as u64, "OpenStack call failed, retrying");
                tokio::time::sleep(d).await;
                attempt += 1;
                continue;
            }
            return Err(err);
        }
    }

    /// A call whose answer is JSON; `what` names it in decode errors.
    pub(crate) async fn json<T: DeserializeOwned, B: Serialize>(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<&B>,
        idempotent: bool,
    ) -> Result<T> {
        let body = body
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| Error::Decode {
                what: format!("{method} {path} body"),
                detail: e.to_string(),
            })?;
        let ans = self
            .call(service, method.clone(), path, body.as_ref(), idempotent)
            .await?;
        let raw: &[u8] = if ans.body.is_empty() {
            b"null"
        } else {
            &ans.body
        };
        serde_json::from_slice(raw).map_err(|e| Error::Decode {
            what: format!("{method} {path} ({})", ans.status),
            detail: e.to_string(),
        })
    }
}

/// Makes ring the process's TLS crypto provider unless one is set already.
/// reqwest is built here without a default provider (ring builds fast and
/// needs no C toolchain); [`Client`] calls this itself, other code that builds
/// its own `reqwest::Client` in the same process calls it first.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `path` as a span field: without its query string, which may hold
/// filters with names of things but never needs to be in every log line.
fn path_for_log(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

fn transport(method: &str, url: &str, source: reqwest::Error) -> Error {
    Error::Transport {
        method: method.to_owned(),
        url: url.to_owned(),
        source,
    }
}

fn request_id(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("x-openstack-request-id")
        .or_else(|| resp.headers().get("x-compute-request-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_resource() {
        assert_eq!(resource_of("v2.0/ports?tags=a"), "ports");
        assert_eq!(resource_of("v2.0/ports/abc"), "ports");
        assert_eq!(resource_of("/v2.0/ports/abc/tags"), "ports/tags");
        assert_eq!(
            resource_of("v2.0/trunks/t1/add_subports"),
            "trunks/add_subports"
        );
        assert_eq!(
            resource_of("http://127.0.0.1:9696/v2.0/ports?marker=x"),
            "ports"
        );
        assert_eq!(resource_of("v2/lbaas/loadbalancers/x"), "loadbalancers");
    }

    #[test]
    fn refreshes_tokens_before_they_expire() {
        let m = Duration::from_secs(300);
        // a day-long token: renewed 5 minutes before it expires
        let issued = Some(10_000 - 86_400);
        assert!(!needs_refresh(issued, 10_000, 9_000, m));
        assert!(!needs_refresh(issued, 10_000, 9_699, m));
        assert!(needs_refresh(issued, 10_000, 9_700, m));
        assert!(needs_refresh(issued, 10_000, 10_001, m));
        assert!(needs_refresh(None, 10_000, 9_700, m));
        assert!(needs_refresh(Some(0), 0, 1, Duration::ZERO));
        // a rejected token (expires_at 0) is always renewed
        assert!(needs_refresh(None, 0, 10_000, m));
    }

    #[test]
    fn short_lived_tokens_are_used_for_half_their_life() {
        let m = Duration::from_secs(300);
        // a 60 s token with a 300 s margin: not renewed on every call
        assert!(!needs_refresh(Some(1_000), 1_060, 1_000, m));
        assert!(!needs_refresh(Some(1_000), 1_060, 1_029, m));
        assert!(needs_refresh(Some(1_000), 1_060, 1_030, m));
        // without issued_at the margin applies as given
        assert!(needs_refresh(None, 1_060, 1_000, m));
        // nonsense issued_at (after expiry) is ignored
        assert!(needs_refresh(Some(2_000), 1_060, 1_000, m));
    }

    #[test]
    fn logs_paths_without_their_query() {
        assert_eq!(path_for_log("v2.0/ports?tags=a&name=b"), "v2.0/ports");
        assert_eq!(path_for_log("v2.0/ports/p1"), "v2.0/ports/p1");
    }
}
