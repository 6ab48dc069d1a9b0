//! Plain-JSON calls to Keystone, Neutron and Octavia for the smoke tests:
//! enough to prove the services work, nothing more.

use crate::env::StackEnv;
use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// A Keystone-scoped session with the endpoints from the token's catalogue.
#[derive(Debug, Clone)]
pub struct Session {
    http: reqwest::Client,
    token: String,
    /// Neutron's public endpoint (no trailing slash).
    pub neutron: String,
    /// Octavia's public endpoint (no trailing slash).
    pub octavia: String,
    /// Project the token is scoped to.
    pub project_id: String,
    /// The token's body (`token` object): user, roles, catalogue.
    pub token_body: Value,
}

impl Session {
    /// Password authentication with the `OS_*` variables of the stack's env
    /// file (the admin user), then catalogue lookup of `network` and
    /// `load-balancer`, public interface, region `OS_REGION_NAME`.
    pub async fn login(env: &StackEnv) -> anyhow::Result<Self> {
        // when built together with crates that enable reqwest's TLS without a
        // default provider (feature unification), reqwest needs one installed
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        let auth_url = env.get("OS_AUTH_URL")?.trim_end_matches('/').to_owned();
        let region = env.get("OS_REGION_NAME")?.to_owned();
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": env.get("OS_USERNAME")?,
                "domain": {"name": env.get("OS_USER_DOMAIN_NAME")?},
                "password": env.get("OS_PASSWORD")?}}},
            "scope": {"project": {
                "name": env.get("OS_PROJECT_NAME")?,
                "domain": {"name": env.get("OS_PROJECT_DOMAIN_NAME")?}}}}});
        let resp = http
            .post(format!("{auth_url}/auth/tokens"))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("Keystone at {auth_url} does not answer"))?;
        let status = resp.status();
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await?;
        if status != StatusCode::CREATED {
            bail!("Keystone password auth failed: HTTP {status}: {text}");
        }
        let token = token.context("Keystone answered 201 without X-Subject-Token")?;
        let v: Value = serde_json::from_str(&text)?;
        let token_body = v["token"].clone();
        let find = |stype: &str| -> anyhow::Result<String> {
            endpoint(&token_body, stype, "public", &region).with_context(|| {
                format!("no public `{stype}` endpoint in region {region} in the Keystone catalogue")
            })
        };
        Ok(Self {
            neutron: find("network")?,
            octavia: find("load-balancer")?,
            project_id: token_body["project"]["id"]
                .as_str()
                .context("token is not project-scoped")?
                .to_owned(),
            token_body,
            http,
            token,
        })
    }

    /// One call; `Ok(None)` for a 404 when `allow_404`, the JSON body (or
    /// `null` for an empty one) on success, an error with method, URL,
    /// status and body otherwise.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        allow_404: bool,
    ) -> anyhow::Result<Option<Value>> {
        let mut req = self
            .http
            .request(method.clone(), url)
            .header("X-Auth-Token", &self.token)
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}: no answer"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if status == StatusCode::NOT_FOUND && allow_404 {
            return Ok(None);
        }
        if !status.is_success() {
            bail!("{method} {url}: HTTP {status}: {text}");
        }
        if text.is_empty() {
            return Ok(Some(Value::Null));
        }
        Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{method} {url}: body is not JSON: {text}")
        })?))
    }

    /// GET `url`.
    pub async fn get(&self, url: &str) -> anyhow::Result<Value> {
        Ok(self
            .call(Method::GET, url, None, false)
            .await?
            .unwrap_or_default())
    }

    /// POST `body` to `url`.
    pub async fn post(&self, url: &str, body: Value) -> anyhow::Result<Value> {
        Ok(self
            .call(Method::POST, url, Some(&body), false)
            .await?
            .unwrap_or_default())
    }

    /// PUT `body` to `url`.
    pub async fn put(&self, url: &str, body: Value) -> anyhow::Result<Value> {
        Ok(self
            .call(Method::PUT, url, Some(&body), false)
            .await?
            .unwrap_or_default())
    }

    /// DELETE `url`; a 404 counts as done (idempotent).
    pub async fn delete(&self, url: &str) -> anyhow::Result<()> {
        self.call(Method::DELETE, url, None, true).await.map(|_| ())
    }

    /// `{neutron}/v2.0/{path}`.
    pub fn n(&self, path: &str) -> String {
        format!("{}/v2.0/{path}", self.neutron)
    }

    /// `{octavia}/v2/lbaas/{path}`.
    pub fn o(&self, path: &str) -> String {
        format!("{}/v2/lbaas/{path}", self.octavia)
    }
}

/// Finds the URL of `service_type` / `interface` / `region` in a token's
/// catalogue, without a trailing slash.
pub fn endpoint(
    token: &Value,
    service_type: &str,
    interface: &str,
    region: &str,
) -> Option<String> {
    token["catalog"]
        .as_array()?
        .iter()
        .filter(|s| s["type"] == service_type)
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .find(|e| {
            e["interface"] == interface && (e["region_id"] == region || e["region"] == region)
        })
        .and_then(|e| e["url"].as_str())
        .map(|u| u.trim_end_matches('/').to_owned())
}

/// One cleanup step.
#[derive(Debug)]
enum Step {
    Call(Method, String, Option<Value>),
    WaitGone(String),
}

/// What to undo after a test, in reverse order, whether it passed, failed or
/// panicked (see [`with_undo`]). Shared by reference, so steps can be added
/// while the test body runs.
#[derive(Debug, Default)]
pub struct Undo {
    steps: std::sync::Mutex<Vec<Step>>,
}

impl Undo {
    fn push(&self, step: Step) {
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(step);
    }

    /// Remember to DELETE `url` (404 = already gone).
    pub fn delete(&self, url: String) {
        self.push(Step::Call(Method::DELETE, url, None));
    }

    /// Remember to PUT `body` to `url` (e.g. unbind a trunk parent first).
    pub fn put(&self, url: String, body: Value) {
        self.push(Step::Call(Method::PUT, url, Some(body)));
    }

    /// Remember to wait (up to two minutes) until GET `url` answers 404, for
    /// deletes that finish asynchronously (Octavia) before what they use can go.
    pub fn wait_gone(&self, url: String) {
        self.push(Step::WaitGone(url));
    }

    /// Runs every step, newest first; returns the failures (each is also
    /// printed), so a test can assert its cleanup worked.
    pub async fn run(&self, s: &Session) -> Vec<String> {
        let steps = std::mem::take(&mut *self.steps.lock().unwrap_or_else(|e| e.into_inner()));
        let mut failed = Vec::new();
        for step in steps.into_iter().rev() {
            let res = match step {
                Step::Call(m, url, body) => s.call(m, &url, body.as_ref(), true).await.map(|_| ()),
                Step::WaitGone(url) => {
                    crate::wait_until(
                        &format!("{url} deleted"),
                        Duration::from_secs(120),
                        Duration::from_millis(300),
                        || async {
                            Ok(s.call(Method::GET, &url, None, true)
                                .await?
                                .is_none()
                                .then_some(()))
                        },
                    )
                    .await
                }
            };
            if let Err(e) = res {
                eprintln!("cleanup: {e:#}");
                failed.push(format!("{e:#}"));
            }
        }
        failed
    }
}

/// Runs `body` with a fresh [`Undo`], then the undo steps whatever happened
/// (error or panic); fails if either failed, re-raising a panic after cleanup.
pub async fn with_undo<T>(
    s: &Session,
    body: impl AsyncFnOnce(&Undo) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let undo = Undo::default();
    crate::finally(body(&undo), async {
        let failed = undo.run(s).await;
        anyhow::ensure!(failed.is_empty(), "{failed:?}");
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_endpoints_in_a_keystone_catalogue() {
        // shape of a real Keystone v3 token body (trimmed)
        let token = json!({"catalog": [
            {"type": "identity", "endpoints": [
                {"interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "http://127.0.0.1:5000/v3/"}]},
            {"type": "network", "endpoints": [
                {"interface": "admin", "region_id": "RegionOne", "url": "http://10.0.0.1:9696"},
                {"interface": "public", "region_id": "RegionTwo", "url": "http://10.0.0.2:9696"},
                {"interface": "public", "region_id": "RegionOne", "url": "http://127.0.0.1:9696/"}]}]});
        assert_eq!(
            endpoint(&token, "network", "public", "RegionOne").as_deref(),
            Some("http://127.0.0.1:9696")
        );
        assert_eq!(
            endpoint(&token, "network", "public", "RegionTwo").as_deref(),
            Some("http://10.0.0.2:9696")
        );
        assert_eq!(
            endpoint(&token, "load-balancer", "public", "RegionOne"),
            None
        );
        assert_eq!(endpoint(&json!({}), "network", "public", "RegionOne"), None);
    }
}
