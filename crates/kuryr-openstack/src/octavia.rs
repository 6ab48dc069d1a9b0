//! Octavia v2 calls (`/v2/lbaas`). Octavia answers 409 while an object's
//! load balancer is PENDING_*: the client retries those with backoff, and
//! [`Octavia::wait_load_balancer_active`] waits for a change to settle.

use crate::client::{Client, Service};
use crate::error::{Error, Result, gone_is_done};
use crate::query::Query;
use kuryr_openstack_types::octavia::*;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Octavia calls of a [`Client`].
#[derive(Debug, Clone)]
pub struct Octavia {
    c: Client,
}

impl Octavia {
    pub(crate) fn new(c: Client) -> Self {
        Self { c }
    }

    async fn create<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        key: &str,
        body: &B,
    ) -> Result<T> {
        let mut v: Value = self
            .c
            .json(
                Service::LoadBalancer,
                Method::POST,
                &format!("v2/lbaas/{path}"),
                Some(&json!({ key: body })),
                false,
            )
            .await?;
        take(&mut v, key)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, key: &str) -> Result<T> {
        let mut v: Value = self
            .c
            .json::<_, Value>(
                Service::LoadBalancer,
                Method::GET,
                &format!("v2/lbaas/{path}"),
                None,
                true,
            )
            .await?;
        take(&mut v, key)
    }

    async fn update<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        key: &str,
        body: &B,
    ) -> Result<T> {
        let mut v: Value = self
            .c
            .json(
                Service::LoadBalancer,
                Method::PUT,
                &format!("v2/lbaas/{path}"),
                Some(&json!({ key: body })),
                true,
            )
            .await?;
        take(&mut v, key)
    }

    /// Every object of `path` matching `q`, following `next` links.
    async fn list<T: DeserializeOwned>(&self, path: &str, key: &str, q: &Query) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut url = q.apply(&format!("v2/lbaas/{path}"));
        loop {
            let mut page: Value = self
                .c
                .json::<_, Value>(Service::LoadBalancer, Method::GET, &url, None, true)
                .await?;
            let next = crate::neutron::next_link(&page, key);
            let items: Vec<T> = take(&mut page, key)?;
            let empty = items.is_empty();
            out.extend(items);
            match next {
                Some(n) if !empty => url = n,
                _ => return Ok(out),
            }
        }
    }

    async fn delete(&self, path: &str) -> Result<bool> {
        gone_is_done(
            self.c
                .call(
                    Service::LoadBalancer,
                    Method::DELETE,
                    &format!("v2/lbaas/{path}"),
                    None,
                    true,
                )
                .await,
        )
    }

    /// Creates a load balancer (answers while it is PENDING_CREATE).
    pub async fn create_load_balancer(&self, body: &LoadBalancerCreate) -> Result<LoadBalancer> {
        self.create("loadbalancers", "loadbalancer", body).await
    }
    /// One load balancer.
    pub async fn get_load_balancer(&self, id: &str) -> Result<LoadBalancer> {
        self.get(&format!("loadbalancers/{id}"), "loadbalancer")
            .await
    }
    /// Load balancers matching `q` (e.g. `name`, `tags`).
    pub async fn list_load_balancers(&self, q: &Query) -> Result<Vec<LoadBalancer>> {
        self.list("loadbalancers", "loadbalancers", q).await
    }
    /// The load balancer carrying all of `tags`, or a new one made from
    /// `body` with those tags set in the create call itself. Idempotent:
    /// Octavia stores the tags with the object, so a retry after any
    /// failure finds what an earlier attempt made.
    pub async fn ensure_load_balancer(
        &self,
        tags: &[String],
        body: &LoadBalancerCreate,
    ) -> Result<LoadBalancer> {
        if tags.iter().all(String::is_empty) {
            return Err(Error::Refused(
                "Finding a load balancer by tag needs at least one non-empty tag".into(),
            ));
        }
        let q = Query::new().tags(tags);
        if let Some(lb) = self.list_load_balancers(&q).await?.into_iter().next() {
            return Ok(lb);
        }
        let mut b = body.clone();
        let mut all = b.tags.take().unwrap_or_default();
        all.extend(tags.iter().cloned());
        all.sort();
        all.dedup();
        b.tags = Some(all);
        self.create_load_balancer(&b).await
    }
    /// Changes the fields set in `body` (idempotent; Octavia answers 409
    /// while the load balancer is PENDING_*, which the client retries).
    pub async fn update_load_balancer(
        &self,
        id: &str,
        body: &LoadBalancerUpdate,
    ) -> Result<LoadBalancer> {
        self.update(&format!("loadbalancers/{id}"), "loadbalancer", body)
            .await
    }
    /// Deletes a load balancer, with everything in it when `cascade`
    /// (idempotent; the delete finishes asynchronously).
    pub async fn delete_load_balancer(&self, id: &str, cascade: bool) -> Result<bool> {
        let q = if cascade { "?cascade=true" } else { "" };
        self.delete(&format!("loadbalancers/{id}{q}")).await
    }

    /// Polls until the load balancer's provisioning status is ACTIVE, with
    /// backoff from 0.2 s to 2 s, for at most `timeout`. ERROR fails at once.
    pub async fn wait_load_balancer_active(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<LoadBalancer> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let lb = self.get_load_balancer(id).await?;
            match lb.provisioning_status.as_str() {
                ACTIVE => return Ok(lb),
                ERROR => {
                    return Err(Error::Provisioning {
                        kind: "load balancer",
                        id: id.to_owned(),
                    });
                }
                _ => {}
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!(
                        "load balancer {id} ACTIVE (last: {})",
                        lb.provisioning_status
                    ),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Polls until the load balancer is gone (404), for at most `timeout`.
    pub async fn wait_load_balancer_deleted(&self, id: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            match self.get_load_balancer(id).await {
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
                Ok(lb) if lb.provisioning_status == "DELETED" => return Ok(()),
                Ok(_) if start.elapsed() >= timeout => {
                    return Err(Error::Timeout {
                        what: format!("load balancer {id} deleted"),
                        seconds: timeout.as_secs(),
                    });
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }

    /// Creates a listener.
    pub async fn create_listener(&self, body: &ListenerCreate) -> Result<Listener> {
        self.create("listeners", "listener", body).await
    }
    /// One listener.
    pub async fn get_listener(&self, id: &str) -> Result<Listener> {
        self.get(&format!("listeners/{id}"), "listener").await
    }
    /// Listeners matching `q` (e.g. `loadbalancer_id`, `name`).
    pub async fn list_listeners(&self, q: &Query) -> Result<Vec<Listener>> {
        self.list("listeners", "listeners", q).await
    }
    /// Changes the fields set in `body` (idempotent).
    pub async fn update_listener(&self, id: &str, body: &ListenerUpdate) -> Result<Listener> {
        self.update(&format!("listeners/{id}"), "listener", body)
            .await
    }
    /// Deletes a listener (idempotent).
    pub async fn delete_listener(&self, id: &str) -> Result<bool> {
        self.delete(&format!("listeners/{id}")).await
    }

    /// Creates a pool.
    pub async fn create_pool(&self, body: &PoolCreate) -> Result<Pool> {
        self.create("pools", "pool", body).await
    }
    /// One pool.
    pub async fn get_pool(&self, id: &str) -> Result<Pool> {
        self.get(&format!("pools/{id}"), "pool").await
    }
    /// Pools matching `q` (e.g. `loadbalancer_id`).
    pub async fn list_pools(&self, q: &Query) -> Result<Vec<Pool>> {
        self.list("pools", "pools", q).await
    }
    /// Changes the fields set in `body` (idempotent).
    pub async fn update_pool(&self, id: &str, body: &PoolUpdate) -> Result<Pool> {
        self.update(&format!("pools/{id}"), "pool", body).await
    }
    /// Deletes a pool (idempotent).
    pub async fn delete_pool(&self, id: &str) -> Result<bool> {
        self.delete(&format!("pools/{id}")).await
    }

    /// Adds a member to a pool.
    pub async fn create_member(&self, pool_id: &str, body: &MemberCreate) -> Result<Member> {
        self.create(&format!("pools/{pool_id}/members"), "member", body)
            .await
    }
    /// One member.
    pub async fn get_member(&self, pool_id: &str, id: &str) -> Result<Member> {
        self.get(&format!("pools/{pool_id}/members/{id}"), "member")
            .await
    }
    /// The pool's members.
    pub async fn list_members(&self, pool_id: &str) -> Result<Vec<Member>> {
        self.list(
            &format!("pools/{pool_id}/members"),
            "members",
            &Query::new(),
        )
        .await
    }
    /// Changes the fields set in `body` (idempotent).
    pub async fn update_member(
        &self,
        pool_id: &str,
        id: &str,
        body: &MemberUpdate,
    ) -> Result<Member> {
        self.update(&format!("pools/{pool_id}/members/{id}"), "member", body)
            .await
    }
    /// Deletes a member (idempotent).
    pub async fn delete_member(&self, pool_id: &str, id: &str) -> Result<bool> {
        self.delete(&format!("pools/{pool_id}/members/{id}")).await
    }
    /// Replaces the pool's members in one call: members not listed are
    /// removed, new ones added, matching ones (address + port) kept.
    pub async fn batch_update_members(
        &self,
        pool_id: &str,
        members: &[MemberCreate],
    ) -> Result<()> {
        self.c
            .call(
                Service::LoadBalancer,
                Method::PUT,
                &format!("v2/lbaas/pools/{pool_id}/members"),
                Some(&json!({ "members": members })),
                true,
            )
            .await
            .map(|_| ())
    }

    /// Creates a health monitor.
    pub async fn create_health_monitor(&self, body: &HealthMonitorCreate) -> Result<HealthMonitor> {
        self.create("healthmonitors", "healthmonitor", body).await
    }
    /// One health monitor.
    pub async fn get_health_monitor(&self, id: &str) -> Result<HealthMonitor> {
        self.get(&format!("healthmonitors/{id}"), "healthmonitor")
            .await
    }
    /// Health monitors matching `q` (e.g. `pool_id`).
    pub async fn list_health_monitors(&self, q: &Query) -> Result<Vec<HealthMonitor>> {
        self.list("healthmonitors", "healthmonitors", q).await
    }
    /// Changes the fields set in `body` (idempotent).
    pub async fn update_health_monitor(
        &self,
        id: &str,
        body: &HealthMonitorUpdate,
    ) -> Result<HealthMonitor> {
        self.update(&format!("healthmonitors/{id}"), "healthmonitor", body)
            .await
    }
    /// Deletes a health monitor (idempotent).
    pub async fn delete_health_monitor(&self, id: &str) -> Result<bool> {
        self.delete(&format!("healthmonitors/{id}")).await
    }

    /// The providers Octavia offers (`amphora`, `ovn`, `noop_driver`...).
    pub async fn providers(&self) -> Result<Vec<String>> {
        let v: Value = self
            .c
            .json::<_, Value>(
                Service::LoadBalancer,
                Method::GET,
                "v2/lbaas/providers",
                None,
                true,
            )
            .await?;
        Ok(v["providers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }
}

fn take<T: DeserializeOwned>(v: &mut Value, key: &str) -> Result<T> {
    let inner = v
        .get_mut(key)
        .map(Value::take)
        .ok_or_else(|| Error::Decode {
            what: format!("Octavia {key}"),
            detail: format!("no `{key}` in the answer"),
        })?;
    serde_json::from_value(inner).map_err(|e| Error::Decode {
        what: format!("Octavia {key}"),
        detail: e.to_string(),
    })
}
