//! Keystone v3: the token body and its service catalogue.

use serde::{Deserialize, Serialize};

/// A named object with its domain (user, project).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Named {
    /// Id.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub id: String,
    /// Name.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub name: String,
    /// Owning domain, if Keystone sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Box<Named>>,
}

/// One endpoint of a catalogue service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Endpoint id.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub id: String,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    /// Region id (Keystone sends both `region_id` and the older `region`).
    #[serde(default)]
    pub region_id: Option<String>,
    /// Region name (older field).
    #[serde(default)]
    pub region: Option<String>,
    /// Base URL of the service.
    pub url: String,
}

/// One service of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogService {
    /// Service type: `network`, `load-balancer`, `identity`...
    #[serde(rename = "type")]
    pub service_type: String,
    /// Service name.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub name: String,
    /// Its endpoints.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub endpoints: Vec<Endpoint>,
}

/// The `token` object of `POST /v3/auth/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    /// Expiry, RFC 3339 (`2026-11-22T12:00:00.000000Z`).
    pub expires_at: String,
    /// Issue time, RFC 3339.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub issued_at: String,
    /// The authenticated user.
    pub user: Named,
    /// The project the token is scoped to, if any.
    #[serde(default)]
    pub project: Option<Named>,
    /// Roles on that project.
    #[serde(default, deserialize_with = "crate::null_default")]
    pub roles: Vec<Named>,
    /// Service catalogue (absent for unscoped tokens).
    #[serde(default, deserialize_with = "crate::null_default")]
    pub catalog: Vec<CatalogService>,
}

/// The whole answer of `POST /v3/auth/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The token object.
    pub token: Token,
}

impl Token {
    /// URL of `service_type` at `interface` in `region` (any region if
    /// `None`), without a trailing slash.
    pub fn endpoint(
        &self,
        service_type: &str,
        interface: &str,
        region: Option<&str>,
    ) -> Option<String> {
        self.catalog
            .iter()
            .filter(|s| s.service_type == service_type)
            .flat_map(|s| &s.endpoints)
            .find(|e| {
                e.interface == interface
                    && region.is_none_or(|r| {
                        e.region_id.as_deref() == Some(r) || e.region.as_deref() == Some(r)
                    })
            })
            .map(|e| e.url.trim_end_matches('/').to_owned())
    }

    /// Whether the token carries role `name`.
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // shape of a real Keystone 22 answer (ids shortened)
    const TOKEN: &str = r#"{"token": {"methods": ["password"],
        "user": {"domain": {"id": "default", "name": "Default"}, "id": "u1", "name": "admin", "password_expires_at": null},
        "audit_ids": ["a"], "expires_at": "2026-11-23T11:00:00.000000Z", "issued_at": "2026-11-22T11:00:00.000000Z",
        "project": {"domain": {"id": "default", "name": "Default"}, "id": "p1", "name": "admin"},
        "is_domain": false,
        "roles": [{"id": "r1", "name": "reader"}, {"id": "r2", "name": "admin"}],
        "catalog": [
          {"endpoints": [{"id": "e1", "interface": "public", "region_id": "RegionOne", "url": "http://127.0.0.1:9696", "region": "RegionOne"},
                         {"id": "e2", "interface": "internal", "region_id": "RegionOne", "url": "http://10.0.0.1:9696/", "region": "RegionOne"}],
           "id": "s1", "type": "network", "name": "neutron"},
          {"endpoints": [{"id": "e3", "interface": "public", "region_id": "RegionTwo", "url": "http://127.0.0.2:9876/", "region": "RegionTwo"}],
           "id": "s2", "type": "load-balancer", "name": "octavia"}]}}"#;

    #[test]
    fn parses_a_keystone_token_and_finds_endpoints() {
        let t: TokenResponse = serde_json::from_str(TOKEN).unwrap();
        let t = t.token;
        assert_eq!(t.user.name, "admin");
        assert_eq!(t.project.as_ref().unwrap().id, "p1");
        assert!(t.has_role("admin") && !t.has_role("member"));
        assert_eq!(
            t.endpoint("network", "public", Some("RegionOne"))
                .as_deref(),
            Some("http://127.0.0.1:9696")
        );
        assert_eq!(
            t.endpoint("network", "internal", None).as_deref(),
            Some("http://10.0.0.1:9696")
        );
        assert_eq!(
            t.endpoint("load-balancer", "public", Some("RegionOne")),
            None
        );
        assert_eq!(
            t.endpoint("load-balancer", "public", None).as_deref(),
            Some("http://127.0.0.2:9876")
        );
        assert_eq!(t.endpoint("compute", "public", None), None);
    }
}
