//! A thin, typed OpenStack client for kuryr-rs: Keystone v3 authentication
//! (password, application credential, token; `clouds.yaml` and `OS_*` like
//! the `openstack` CLI), Neutron v2.0 and Octavia v2.
//!
//! Behaviour every caller gets: the token is refreshed before it expires and
//! re-requested once on a 401; transient failures (connection errors, 5xx on
//! idempotent calls, 503 and Octavia's "immutable" 409 on any call) are
//! retried with jittered exponential backoff; at most
//! [`ClientOptions::max_in_flight`] requests run at once, each with a
//! timeout; errors keep the HTTP status, Neutron's error type and message and
//! the request id; secrets never reach a log or a `Debug` string; every
//! call runs in a `tracing` span named `openstack` (service, method, path).
//!
//! Idempotent forms for a controller that may crash at any point: deletes
//! answer `Ok(false)` for an object already gone; `ensure_*` calls
//! (ports, networks, subnets, security groups and rules, subports, load
//! balancers) find what an earlier attempt made before they create.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kuryr_openstack::Error> {
//! let client = kuryr_openstack::Client::new(kuryr_openstack::CloudConfig::from_env()?)?;
//! let ports = client.neutron().list_ports(&kuryr_openstack::Query::new().tags(["kuryr"])).await?;
//! # Ok(()) }
//! ```

mod auth;
mod client;
mod config;
mod error;
mod neutron;
mod octavia;
mod query;
mod retry;
mod time;

pub use auth::{AuthMethod, Ident, Secret};
pub use client::{CallKey, Client, ClientOptions, Service, install_tls_provider};
pub use config::CloudConfig;
pub use error::{ApiError, Error, Result};
pub use kuryr_openstack_types as types;
pub use neutron::{Neutron, TaggedResource};
pub use octavia::Octavia;
pub use query::Query;
pub use retry::Backoff;
pub use time::parse_utc as parse_timestamp;
