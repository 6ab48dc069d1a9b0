//! Where the client's settings come from: `clouds.yaml` (cloud `OS_CLOUD`)
//! or the `OS_*` variables, as the `openstack` CLI reads them.

use crate::auth::{AuthMethod, Ident, Secret};
use crate::{Error, Result};
use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Everything needed to build a [`crate::Client`].
#[derive(Debug, Clone, PartialEq)]
pub struct CloudConfig {
    /// How to authenticate.
    pub auth: AuthMethod,
    /// Region (`None`: the first endpoint of any region).
    pub region: Option<String>,
    /// Endpoint interface: `public` (default), `internal` or `admin`.
    pub interface: String,
    /// Endpoint per service type, bypassing the catalogue
    /// (`network_endpoint_override`, `OS_NETWORK_ENDPOINT_OVERRIDE`...).
    pub endpoint_overrides: BTreeMap<String, String>,
    /// CA bundle to trust for HTTPS.
    pub cacert: Option<PathBuf>,
    /// Skip TLS verification (tests only).
    pub insecure: bool,
}

impl CloudConfig {
    /// A config with password auth and defaults, for code that has its own settings.
    pub fn password(auth_url: &str, user: Ident, password: &str, project: Ident) -> Self {
        Self {
            auth: AuthMethod::Password {
                auth_url: auth_url.into(),
                user,
                password: Secret::new(password),
                project: Some(project),
            },
            region: None,
            interface: "public".into(),
            endpoint_overrides: BTreeMap::new(),
            cacert: None,
            insecure: false,
        }
    }

    /// From the process environment: `OS_CLOUD` selects a cloud of the
    /// first `clouds.yaml` found (`OS_CLIENT_CONFIG_FILE`, `./clouds.yaml`,
    /// `~/.config/openstack/clouds.yaml`, `/etc/openstack/clouds.yaml`);
    /// without `OS_CLOUD`, the `OS_*` variables.
    pub fn from_env() -> Result<Self> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match get("OS_CLOUD") {
            Some(cloud) => {
                let path = clouds_yaml_path(&get).ok_or_else(|| {
                    Error::Config(format!("OS_CLOUD={cloud} but no clouds.yaml found"))
                })?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
                Self::from_clouds_yaml(&text, &cloud)
            }
            None => Self::from_vars(get),
        }
    }

    /// From `OS_*` variables looked up with `get`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut m = BTreeMap::new();
        for (var, key) in [
            ("OS_AUTH_URL", "auth_url"),
            ("OS_AUTH_TYPE", "auth_type"),
            ("OS_USERNAME", "username"),
            ("OS_USER_ID", "user_id"),
            ("OS_PASSWORD", "password"),
            ("OS_PROJECT_NAME", "project_name"),
            ("OS_TENANT_NAME", "project_name"),
            ("OS_PROJECT_ID", "project_id"),
            ("OS_USER_DOMAIN_NAME", "user_domain_name"),
            ("OS_USER_DOMAIN_ID", "user_domain_id"),
            ("OS_PROJECT_DOMAIN_NAME", "project_domain_name"),
            ("OS_PROJECT_DOMAIN_ID", "project_domain_id"),
            ("OS_DOMAIN_NAME", "domain_name"),
            ("OS_APPLICATION_CREDENTIAL_ID", "application_credential_id"),
            (
                "OS_APPLICATION_CREDENTIAL_NAME",
                "application_credential_name",
            ),
            (
                "OS_APPLICATION_CREDENTIAL_SECRET",
                "application_credential_secret",
            ),
            ("OS_TOKEN", "token"),
        ] {
            if let Some(v) = get(var) {
                m.entry(key.to_owned()).or_insert(v);
            }
        }
        let mut overrides = BTreeMap::new();
        for (var, service) in [
            ("OS_NETWORK_ENDPOINT_OVERRIDE", "network"),
            ("OS_LOAD_BALANCER_ENDPOINT_OVERRIDE", "load-balancer"),
        ] {
            if let Some(v) = get(var) {
                overrides.insert(service.to_owned(), v);
            }
        }
        Ok(Self {
            auth: auth_from_map(&m)?,
            region: get("OS_REGION_NAME"),
            interface: get("OS_INTERFACE").unwrap_or_else(|| "public".into()),
            endpoint_overrides: overrides,
            cacert: get("OS_CACERT").map(PathBuf::from),
            insecure: get("OS_INSECURE").is_some_and(|v| is_true(&v)),
        })
    }

    /// From a keystoneauth section as kuryr-kubernetes' `[neutron]` has it
    /// (`auth_type`, `auth_url`, `username`, `password`, `project_name`,
    /// `user_domain_name`, `project_domain_name`,
    /// `application_credential_id`/`_secret`, ..., `region_name`,
    /// `valid_interfaces`, `endpoint_override`, `cafile`, `insecure`), and a
    /// warning for each option it does not act on.
    pub fn from_keystoneauth(section: &BTreeMap<String, String>) -> Result<(Self, Vec<String>)> {
        const AUTH: &[&str] = &[
            "auth_type",
            "auth_url",
            "username",
            "user_id",
            "password",
            "project_name",
            "tenant_name",
            "project_id",
            "user_domain_name",
            "user_domain_id",
            "project_domain_name",
            "project_domain_id",
            "domain_name",
            "application_credential_id",
            "application_credential_name",
            "application_credential_secret",
            "token",
        ];
        const SESSION: &[&str] = &[
            "region_name",
            "valid_interfaces",
            "endpoint_override",
            "cafile",
            "insecure",
        ];
        let mut auth: BTreeMap<String, String> = section
            .iter()
            .filter(|(k, _)| AUTH.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(t) = auth.remove("tenant_name") {
            auth.entry("project_name".into()).or_insert(t);
        }
        let warnings = section
            .keys()
            .filter(|k| !AUTH.contains(&k.as_str()) && !SESSION.contains(&k.as_str()))
            .map(|k| format!("[neutron] {k}: not a keystoneauth option kuryr-rs acts on; ignored"))
            .collect();
        let get = |k: &str| section.get(k).filter(|v| !v.is_empty()).cloned();
        // keystoneauth's valid_interfaces is a list, in order of preference
        let interface = get("valid_interfaces")
            .and_then(|v| {
                v.split(',')
                    .map(|i| i.trim().trim_end_matches("URL").to_owned())
                    .find(|i| !i.is_empty())
            })
            .unwrap_or_else(|| "public".into());
        let endpoint_overrides = get("endpoint_override")
            .map(|u| BTreeMap::from([("network".to_owned(), u)]))
            .unwrap_or_default();
        Ok((
            Self {
                auth: auth_from_map(&auth)?,
                region: get("region_name"),
                interface,
                endpoint_overrides,
                cacert: get("cafile").map(PathBuf::from),
                insecure: get("insecure").is_some_and(|v| is_true(&v)),
            },
            warnings,
        ))
    }

    /// Cloud `cloud` of a `clouds.yaml` document.
    pub fn from_clouds_yaml(text: &str, cloud: &str) -> Result<Self> {
        let doc: Value = serde_yaml_ng::from_str(text)
            .map_err(|e| Error::Config(format!("clouds.yaml: {e}")))?;
        let c = doc
            .get("clouds")
            .and_then(|c| c.get(cloud))
            .ok_or_else(|| Error::Config(format!("cloud `{cloud}` not found in clouds.yaml")))?;
        let s = |v: Option<&Value>| -> Option<String> {
            match v? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        };
        let mut m = BTreeMap::new();
        if let Some(Value::Mapping(a)) = c.get("auth") {
            for (k, v) in a {
                if let (Some(k), Some(v)) = (k.as_str(), s(Some(v))) {
                    m.insert(k.to_owned(), v);
                }
            }
        }
        if let Some(t) = s(c.get("auth_type")) {
            m.insert("auth_type".into(), t);
        }
        let mut overrides = BTreeMap::new();
        if let Value::Mapping(map) = c {
            for (k, v) in map {
                if let (Some(k), Some(v)) = (k.as_str(), s(Some(v)))
                    && let Some(service) = k.strip_suffix("_endpoint_override")
                {
                    overrides.insert(service.replace('_', "-"), v);
                }
            }
        }
        let verify = s(c.get("verify"));
        Ok(Self {
            auth: auth_from_map(&m)?,
            region: s(c.get("region_name")),
            interface: s(c.get("interface")).unwrap_or_else(|| "public".into()),
            endpoint_overrides: overrides,
            cacert: s(c.get("cacert")).map(PathBuf::from),
            insecure: verify.is_some_and(|v| !is_true(&v)),
        })
    }
}

fn is_true(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

fn clouds_yaml_path(get: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = get("OS_CLIENT_CONFIG_FILE") {
        return Some(PathBuf::from(p));
    }
    let mut candidates = vec![PathBuf::from("clouds.yaml")];
    if let Some(home) = get("HOME") {
        candidates.push(Path::new(&home).join(".config/openstack/clouds.yaml"));
    }
    candidates.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    candidates.into_iter().find(|p| p.exists())
}

/// The auth method from clouds.yaml-style keys (`auth_url`, `username`...).
fn auth_from_map(m: &BTreeMap<String, String>) -> Result<AuthMethod> {
    let get = |k: &str| m.get(k).cloned();
    let auth_url =
        get("auth_url").ok_or_else(|| Error::Config("auth_url (OS_AUTH_URL) is not set".into()))?;
    let user = Ident {
        id: get("user_id"),
        name: get("username"),
        domain_id: get("user_domain_id"),
        domain_name: get("user_domain_name").or_else(|| get("domain_name")),
    };
    let project = Ident {
        id: get("project_id"),
        name: get("project_name"),
        domain_id: get("project_domain_id"),
        domain_name: get("project_domain_name").or_else(|| get("domain_name")),
    };
    let project = (project.id.is_some() || project.name.is_some()).then_some(project);
    let kind = get("auth_type").unwrap_or_else(|| {
        if m.contains_key("application_credential_secret") {
            "v3applicationcredential".into()
        } else if m.contains_key("token") && !m.contains_key("password") {
            "v3token".into()
        } else {
            "password".into()
        }
    });
    match kind.as_str() {
        "password" | "v3password" => Ok(AuthMethod::Password {
            auth_url,
            user,
            password: Secret::new(
                get("password")
                    .ok_or_else(|| Error::Config("password (OS_PASSWORD) is not set".into()))?,
            ),
            project,
        }),
        "v3applicationcredential" | "applicationcredential" => {
            Ok(AuthMethod::ApplicationCredential {
                auth_url,
                id: get("application_credential_id"),
                name: get("application_credential_name"),
                user: (user.id.is_some() || user.name.is_some()).then_some(user),
                secret: Secret::new(get("application_credential_secret").ok_or_else(|| {
                    Error::Config("application_credential_secret is not set".into())
                })?),
            })
        }
        "token" | "v3token" => Ok(AuthMethod::Token {
            auth_url,
            token: Secret::new(
                get("token").ok_or_else(|| Error::Config("token (OS_TOKEN) is not set".into()))?,
            ),
            project,
        }),
        other => Err(Error::Config(format!(
            "auth_type `{other}` is not supported (password, v3applicationcredential, v3token)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUDS: &str = r#"
clouds:
  kuryr-stack:
    auth: {auth_url: "http://127.0.0.1:5000/v3", username: admin, password: "secret", project_name: admin,
           user_domain_name: Default, project_domain_name: Default}
    region_name: RegionOne
    identity_api_version: 3
  appcred:
    auth_type: v3applicationcredential
    auth: {auth_url: "https://keystone.example:5000", application_credential_id: "ac1", application_credential_secret: "s"}
    interface: internal
    verify: false
    network_endpoint_override: "http://127.0.0.1:9696/"
    load_balancer_endpoint_override: "http://127.0.0.1:9876"
"#;

    #[test]
    fn reads_clouds_yaml() {
        let c = CloudConfig::from_clouds_yaml(CLOUDS, "kuryr-stack").unwrap();
        assert_eq!(c.region.as_deref(), Some("RegionOne"));
        assert_eq!(c.interface, "public");
        match &c.auth {
            AuthMethod::Password {
                user,
                password,
                project,
                ..
            } => {
                assert_eq!(user.name.as_deref(), Some("admin"));
                assert_eq!(password.expose(), "secret");
                assert_eq!(
                    project.as_ref().unwrap().domain_name.as_deref(),
                    Some("Default")
                );
            }
            other => panic!("{other:?}"),
        }
        let a = CloudConfig::from_clouds_yaml(CLOUDS, "appcred").unwrap();
        assert!(
            matches!(a.auth, AuthMethod::ApplicationCredential { ref id, .. } if id.as_deref() == Some("ac1"))
        );
        assert!(a.insecure);
        assert_eq!(a.interface, "internal");
        assert_eq!(a.endpoint_overrides["network"], "http://127.0.0.1:9696/");
        assert_eq!(
            a.endpoint_overrides["load-balancer"],
            "http://127.0.0.1:9876"
        );
        let e = CloudConfig::from_clouds_yaml(CLOUDS, "nope").unwrap_err();
        assert!(e.to_string().contains("`nope` not found"), "{e}");
    }

    #[test]
    fn reads_os_variables() {
        let vars = BTreeMap::from([
            ("OS_AUTH_URL", "http://k:5000/v3"),
            ("OS_USERNAME", "demo"),
            ("OS_PASSWORD", "pw"),
            ("OS_PROJECT_NAME", "demo"),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_DOMAIN_ID", "default"),
            ("OS_REGION_NAME", "RegionOne"),
            ("OS_NETWORK_ENDPOINT_OVERRIDE", "http://n:9696"),
        ]);
        let c = CloudConfig::from_vars(|k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.region.as_deref(), Some("RegionOne"));
        assert_eq!(c.endpoint_overrides["network"], "http://n:9696");
        let body = c.auth.request_body().unwrap();
        assert_eq!(body["auth"]["scope"]["project"]["domain"]["id"], "default");
        assert_eq!(
            body["auth"]["identity"]["password"]["user"]["domain"]["name"],
            "Default"
        );
        let missing =
            CloudConfig::from_vars(|k| (k == "OS_AUTH_URL").then(|| "u".to_string())).unwrap_err();
        assert!(missing.to_string().contains("OS_PASSWORD"), "{missing}");
        let none = CloudConfig::from_vars(|_| None).unwrap_err();
        assert!(none.to_string().contains("OS_AUTH_URL"), "{none}");
    }

    #[test]
    fn reads_keystoneauth_names_as_kuryr_kubernetes_wrote_them() {
        let section: BTreeMap<String, String> = [
            ("auth_type", "password"),
            ("auth_url", "https://keystone.example:5000/v3"),
            ("username", "kuryr"),
            ("password", "s3cret"),
            ("project_name", "k8s"),
            ("user_domain_name", "Default"),
            ("project_domain_name", "Default"),
            ("region_name", "RegionTwo"),
            ("valid_interfaces", "internal, public"),
            ("endpoint_override", "https://neutron.example:9696"),
            ("cafile", "/etc/ssl/certs/openstack-ca.pem"),
            ("insecure", "false"),
            ("cacert", "/old/name.pem"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (c, warnings) = CloudConfig::from_keystoneauth(&section).unwrap();
        assert_eq!(
            c.cacert,
            Some(PathBuf::from("/etc/ssl/certs/openstack-ca.pem"))
        );
        assert_eq!(c.interface, "internal");
        assert_eq!(c.region.as_deref(), Some("RegionTwo"));
        assert_eq!(
            c.endpoint_overrides.get("network").map(String::as_str),
            Some("https://neutron.example:9696")
        );
        assert!(!c.insecure);
        match &c.auth {
            AuthMethod::Password {
                auth_url,
                user,
                project,
                ..
            } => {
                assert_eq!(auth_url, "https://keystone.example:5000/v3");
                assert_eq!(user.name.as_deref(), Some("kuryr"));
                assert_eq!(
                    project.as_ref().and_then(|p| p.name.as_deref()),
                    Some("k8s")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("cacert"), "{warnings:?}");
        // application credentials
        let ac: BTreeMap<String, String> = [
            ("auth_type", "v3applicationcredential"),
            ("auth_url", "https://keystone.example:5000/v3"),
            ("application_credential_id", "ac-1"),
            ("application_credential_secret", "sh"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (c, w) = CloudConfig::from_keystoneauth(&ac).unwrap();
        assert!(
            matches!(c.auth, AuthMethod::ApplicationCredential { .. }),
            "{:?}",
            c.auth
        );
        assert!(w.is_empty());
        assert_eq!(c.interface, "public");
    }
}
