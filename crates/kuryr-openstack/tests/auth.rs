//! Keystone against the real service: password auth from `OS_*` and from
//! clouds.yaml, application credentials, token refresh and re-auth after
//! a revoked token.
#![cfg(feature = "stack")]

mod common;

use kuryr_openstack::{Client, ClientOptions, CloudConfig, Query, Service};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn password_auth_scopes_to_the_project_and_finds_endpoints() -> anyhow::Result<()> {
    let c = common::client()?;
    let t = c.token_info().await?;
    assert_eq!(t.user.name, "admin");
    assert_eq!(t.project.as_ref().map(|p| p.name.as_str()), Some("admin"));
    assert!(t.has_role("admin"));
    assert!(
        c.endpoint(Service::Network)
            .await?
            .starts_with("http://127.0.0.1:")
    );
    assert!(
        c.endpoint(Service::LoadBalancer)
            .await?
            .starts_with("http://127.0.0.1:")
    );
    // the demo cloud of the stack's clouds.yaml works as a normal member
    let env = common::stack()?;
    let yaml = std::fs::read_to_string(env.get("OS_CLIENT_CONFIG_FILE")?)?;
    let demo = Client::new(CloudConfig::from_clouds_yaml(&yaml, "kuryr-stack-demo")?)?;
    let dt = demo.token_info().await?;
    assert_eq!(dt.project.as_ref().map(|p| p.name.as_str()), Some("demo"));
    assert!(dt.has_role("member") && !dt.has_role("admin"));
    demo.neutron().list_networks(&Query::new()).await?;
    Ok(())
}

#[tokio::test]
async fn wrong_password_is_a_clear_401() -> anyhow::Result<()> {
    let env = common::stack()?;
    let c = Client::new(CloudConfig::from_vars(|k| {
        if k == "OS_PASSWORD" {
            Some("wrong".into())
        } else {
            env.get(k).ok().map(str::to_owned)
        }
    })?)?;
    let e = c.token_info().await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(
        !e.to_string().contains("wrong"),
        "the password must not appear in errors: {e}"
    );
    Ok(())
}

#[tokio::test]
async fn application_credential_auth_works() -> anyhow::Result<()> {
    let env = common::stack()?;
    let admin = common::client()?;
    let t = admin.token_info().await?;
    let token = admin.auth_token().await?;
    let keystone = env.get("OS_AUTH_URL")?.trim_end_matches('/').to_owned();
    kuryr_openstack::install_tls_provider();
    let http = reqwest::Client::new();
    let name = common::name("appcred");
    let resp = http
        .post(format!(
            "{keystone}/users/{}/application_credentials",
            t.user.id
        ))
        .header("X-Auth-Token", token.expose())
        .json(&json!({"application_credential": {"name": name}}))
        .send()
        .await?;
    anyhow::ensure!(
        resp.status() == 201,
        "creating an application credential: {}",
        resp.text().await?
    );
    let ac: serde_json::Value = resp.json().await?;
    let (id, secret) = (
        ac["application_credential"]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
        ac["application_credential"]["secret"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let body = async {
        let vars = [
            ("OS_AUTH_URL", keystone.clone()),
            ("OS_AUTH_TYPE", "v3applicationcredential".to_owned()),
            ("OS_APPLICATION_CREDENTIAL_ID", id.clone()),
            ("OS_APPLICATION_CREDENTIAL_SECRET", secret.clone()),
            ("OS_REGION_NAME", "RegionOne".to_owned()),
        ];
        let c = Client::new(CloudConfig::from_vars(|k| {
            vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        })?)?;
        let at = c.token_info().await?;
        assert_eq!(at.project.as_ref().map(|p| p.name.as_str()), Some("admin"));
        c.neutron().list_ports(&Query::new().limit(1)).await?;
        anyhow::Ok(())
    };
    kuryr_stack_tests::finally(body, async {
        let r = http
            .delete(format!(
                "{keystone}/users/{}/application_credentials/{id}",
                t.user.id
            ))
            .header("X-Auth-Token", token.expose())
            .send()
            .await?;
        anyhow::ensure!(
            r.status() == 204,
            "deleting the application credential: {}",
            r.status()
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn tokens_are_refreshed_before_expiry_and_after_revocation() -> anyhow::Result<()> {
    // a token is used until the refresh margin (capped at half its life)
    // is reached, then replaced before it expires
    let c = common::client_with(ClientOptions {
        refresh_margin: Duration::from_secs(7 * 86_400),
        ..Default::default()
    })?;
    let a = c.auth_token().await?;
    assert_eq!(
        c.auth_token().await?,
        a,
        "a fresh token must not be replaced on every call, whatever the margin"
    );
    let t = c.token_info().await?;
    let issued = kuryr_openstack::parse_timestamp(&t.issued_at).expect("issued_at");
    let expires = kuryr_openstack::parse_timestamp(&t.expires_at).expect("expires_at");
    let life = expires - issued;
    if life <= 180 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        let half = issued + life / 2 + 1;
        tokio::time::sleep(Duration::from_secs((half - now).max(0) as u64)).await;
        let b = c.auth_token().await?;
        assert_ne!(b, a, "a token past half its life must be replaced");
        c.neutron().list_networks(&Query::new().limit(1)).await?;
    } else {
        eprintln!(
            "SKIPPED renewal before expiry: Keystone tokens live {life}s here; \
             start the stack with KURYR_STACK_TOKEN_EXPIRATION=60 to test it"
        );
    }

    // revoke the token a normal client holds: its next call gets a 401,
    // authenticates once more and succeeds
    let c = common::client()?;
    let old = c.auth_token().await?;
    let env = common::stack()?;
    let keystone = env.get("OS_AUTH_URL")?.trim_end_matches('/').to_owned();
    kuryr_openstack::install_tls_provider();
    let r = reqwest::Client::new()
        .delete(format!("{keystone}/auth/tokens"))
        .header("X-Auth-Token", old.expose())
        .header("X-Subject-Token", old.expose())
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    c.neutron().list_networks(&Query::new().limit(1)).await?;
    assert_ne!(
        c.auth_token().await?,
        old,
        "the client must have re-authenticated"
    );
    Ok(())
}
