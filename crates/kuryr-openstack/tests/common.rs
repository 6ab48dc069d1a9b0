//! Shared helpers of the integration tests: a client for the stack's cloud
//! (the fault-injecting proxy is `kuryr_stack_tests::proxy`).
#![allow(dead_code)]

use kuryr_openstack::{Client, ClientOptions, CloudConfig};
use kuryr_stack_tests::env::StackEnv;
use std::sync::Mutex;

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
                Made::Subnet(id) => {
                    // ports a create whose answer never came made anyway
                    let q = kuryr_openstack::Query::new()
                        .filter("fixed_ips", format!("subnet_id={id}"));
                    if let Ok(ports) = n.list_ports(&q).await {
                        for p in ports
                            .iter()
                            .filter(|p| !p.device_owner.starts_with("network:"))
                        {
                            let _ = n.delete_port(&p.id).await;
                        }
                    }
                    n.delete_subnet(id).await.map(|_| ())
                }
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
