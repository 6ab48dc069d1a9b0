//! Octavia v2 calls (`/v2/lbaas`). Octavia answers 409 while an object's
//! load balancer is PENDING_*: the client retries those with backoff, and
//! [`Octavia::wait_load_balancer_active`] waits for a change to settle.

use crate::client::{Client, Service};
use crate::error::{Error, Result};
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

    async fn delete(&self, path: &str) -> Result<bool> {
        match self
            .c
            .call(
                Service::LoadBalancer,
                Method::DELETE,
                &format!("v2/lbaas/{path}"),
                None,
                true,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
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
        let mut v: Value = self
            .c
            .json::<_, Value>(
                Service::LoadBalancer,
                Method::GET,
                &q.apply("v2/lbaas/loadbalancers"),
                None,
                true,
            )
            .await?;
        take(&mut v, "loadbalancers")
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
        self.get(&format!("pools/{pool_id}/members"), "members")
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
