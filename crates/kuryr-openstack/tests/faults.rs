//! Retry paths, proven with faults injected by a proxy in front of the real
//! Neutron: what is retried succeeds once the fault is gone, what must not
//! be retried (a POST that failed with 500) is not, and nothing is created
//! twice.
#![cfg(feature = "stack")]

mod common;

use common::{Made, name, with_cleanup};
use kuryr_openstack::types::neutron::*;
use kuryr_openstack::{Backoff, Client, ClientOptions, Query};
use kuryr_stack_tests::proxy::FaultProxy;
use std::time::Duration;

const OVERLOADED: (u16, &str) = (
    503,
    r#"{"NeutronError": {"type": "ServiceUnavailable", "message": "injected", "detail": ""}}"#,
);
const BROKEN: (u16, &str) = (
    500,
    r#"{"NeutronError": {"type": "HTTPInternalServerError", "message": "injected", "detail": ""}}"#,
);

async fn via_proxy() -> anyhow::Result<(FaultProxy, Client)> {
    let env = common::stack()?;
    let proxy = FaultProxy::start(env.get("KURYR_STACK_NEUTRON_URL")?).await?;
    let mut cfg = common::config(&env)?;
    cfg.endpoint_overrides
        .insert("network".into(), proxy.url.clone());
    let opts = ClientOptions {
        backoff: Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(200),
            retries: 4,
        },
        ..Default::default()
    };
    Ok((proxy, Client::with_options(cfg, opts)?))
}

#[tokio::test]
async fn reads_are_retried_through_5xx() -> anyhow::Result<()> {
    let (proxy, c) = via_proxy().await?;
    proxy.fail_next("GET", OVERLOADED);
    proxy.fail_next("GET", BROKEN);
    c.neutron().list_networks(&Query::new().limit(1)).await?;
    assert_eq!(proxy.pending(), 0);
    assert_eq!(
        proxy.seen().len(),
        3,
        "two faults, then the real answer: {:?}",
        proxy.seen()
    );
    // more faults than retries: the error comes through with its status and type
    for _ in 0..5 {
        proxy.fail_next("GET", OVERLOADED);
    }
    let e = c.neutron().list_networks(&Query::new()).await.unwrap_err();
    assert_eq!(e.status(), Some(503));
    assert_eq!(e.error_type(), Some("ServiceUnavailable"));
    Ok(())
}

#[tokio::test]
async fn a_create_is_retried_after_503_but_not_after_500() -> anyhow::Result<()> {
    let (proxy, c) = via_proxy().await?;
    let admin = common::client()?;
    with_cleanup(&admin, async |made| {
        let n = c.neutron();
        let net = n
            .create_network(&NetworkCreate {
                name: Some(name("faults")),
                ..Default::default()
            })
            .await?;
        made.add(Made::Network(net.id.clone()));
        // 503: nothing was done, so the client tries again and makes one port
        proxy.fail_next("POST", OVERLOADED);
        let pname = name("retried");
        let p = n
            .create_port(&PortCreate {
                network_id: net.id.clone(),
                name: Some(pname.clone()),
                ..Default::default()
            })
            .await?;
        made.add(Made::Port(p.id.clone()));
        assert_eq!(
            n.list_ports(&Query::new().filter("name", &pname))
                .await?
                .len(),
            1
        );
        // 500 on a create: the port may exist; the client must not blindly
        // create another, it reports the error
        proxy.fail_next("POST", BROKEN);
        let before = proxy.seen().len();
        let e = n
            .create_port(&PortCreate {
                network_id: net.id.clone(),
                name: Some(name("not-retried")),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(500), "{e}");
        assert_eq!(proxy.seen().len(), before + 1, "a failed POST is sent once");
        // the idempotent form recovers: find by tag, else create
        let key = vec![name("key")];
        proxy.fail_next("GET", OVERLOADED);
        let a = n
            .ensure_port(
                &key,
                &PortCreate {
                    network_id: net.id.clone(),
                    ..Default::default()
                },
            )
            .await?;
        made.add(Made::Port(a.id.clone()));
        let b = n
            .ensure_port(
                &key,
                &PortCreate {
                    network_id: net.id.clone(),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(a.id, b.id);
        assert_eq!(n.list_ports(&Query::new().tags(&key)).await?.len(), 1);
        Ok(())
    })
    .await
}

const IN_USE: (u16, &str) = (
    409,
    r#"{"NeutronError": {"type": "SubnetInUse", "message": "Unable to complete operation on subnet: injected.", "detail": ""}}"#,
);
const IMMUTABLE: (u16, &str) = (
    409,
    r#"{"faultcode": "Client", "faultstring": "Load Balancer lb1 is immutable and cannot be updated.", "debuginfo": null}"#,
);

#[tokio::test]
async fn conflicts_are_reported_unless_they_say_try_again() -> anyhow::Result<()> {
    let (proxy, c) = via_proxy().await?;
    // a Neutron 409 is a real conflict: reported at once, with its type
    proxy.fail_next("GET", IN_USE);
    let e = c
        .neutron()
        .list_networks(&Query::new().limit(1))
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.error_type()),
        (Some(409), Some("SubnetInUse")),
        "{e}"
    );
    assert_eq!(proxy.seen().len(), 1, "not retried");
    // Octavia's "immutable" 409 means "busy, try again": retried until it passes
    proxy.fail_next("GET", IMMUTABLE);
    proxy.fail_next("GET", IMMUTABLE);
    c.neutron().list_networks(&Query::new().limit(1)).await?;
    assert_eq!(
        proxy.seen().len(),
        4,
        "two busy answers, then the real one: {:?}",
        proxy.seen()
    );
    Ok(())
}
