//! Keystone v3 authentication methods and their request bodies.

use serde_json::{Value, json};

/// A secret (password, application credential secret, token) that never
/// shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A user, project or domain named by id, or by name plus its domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ident {
    /// Id (wins over the name).
    pub id: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Domain id of a name.
    pub domain_id: Option<String>,
    /// Domain name of a name.
    pub domain_name: Option<String>,
}

impl Ident {
    /// By name in the `Default` domain.
    pub fn name(name: impl Into<String>) -> Self {
        Self {
            name: Some(name.into()),
            domain_name: Some("Default".into()),
            ..Default::default()
        }
    }

    /// By id.
    pub fn id(id: impl Into<String>) -> Self {
        Self {
            id: Some(id.into()),
            ..Default::default()
        }
    }

    fn is_set(&self) -> bool {
        self.id.is_some() || self.name.is_some()
    }

    fn to_json(&self) -> Value {
        if let Some(id) = &self.id {
            return json!({"id": id});
        }
        let mut v = json!({"name": self.name});
        if let Some(d) = &self.domain_id {
            v["domain"] = json!({"id": d});
        } else if let Some(d) = &self.domain_name {
            v["domain"] = json!({"name": d});
        }
        v
    }
}

/// How to get a token from Keystone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// User and password, scoped to a project.
    Password {
        /// Keystone URL (with or without `/v3`).
        auth_url: String,
        /// The user.
        user: Ident,
        /// Its password.
        password: Secret,
        /// Project scope (none: unscoped, useless for Neutron).
        project: Option<Ident>,
    },
    /// An application credential (scoped by itself).
    ApplicationCredential {
        /// Keystone URL.
        auth_url: String,
        /// Credential id (or give `name` and `user`).
        id: Option<String>,
        /// Credential name.
        name: Option<String>,
        /// Owner of a named credential.
        user: Option<Ident>,
        /// The secret.
        secret: Secret,
    },
    /// An existing token, re-scoped to a project if one is given.
    Token {
        /// Keystone URL.
        auth_url: String,
        /// The token.
        token: Secret,
        /// Project scope.
        project: Option<Ident>,
    },
}

impl AuthMethod {
    /// Keystone's URL ending in `/v3`.
    pub fn auth_url(&self) -> String {
        let u = match self {
            AuthMethod::Password { auth_url, .. }
            | AuthMethod::ApplicationCredential { auth_url, .. }
            | AuthMethod::Token { auth_url, .. } => auth_url.trim_end_matches('/'),
        };
        if u.ends_with("/v3") {
            u.to_owned()
        } else {
            format!("{u}/v3")
        }
    }

    /// Body of `POST /v3/auth/tokens`.
    pub fn request_body(&self) -> crate::Result<Value> {
        let scope = |p: &Option<Ident>| {
            p.as_ref()
                .filter(|p| p.is_set())
                .map(|p| json!({"project": p.to_json()}))
        };
        let (identity, scope) = match self {
            AuthMethod::Password {
                user,
                password,
                project,
                ..
            } => {
                if !user.is_set() {
                    return Err(crate::Error::Config(
                        "password auth needs a user name or id".into(),
                    ));
                }
                let mut u = user.to_json();
                u["password"] = json!(password.expose());
                (
                    json!({"methods": ["password"], "password": {"user": u}}),
                    scope(project),
                )
            }
            AuthMethod::ApplicationCredential {
                id,
                name,
                user,
                secret,
                ..
            } => {
                let mut c = json!({"secret": secret.expose()});
                match (id, name, user) {
                    (Some(id), _, _) => c["id"] = json!(id),
                    (None, Some(n), Some(u)) if u.is_set() => {
                        c["name"] = json!(n);
                        c["user"] = u.to_json();
                    }
                    _ => {
                        return Err(crate::Error::Config(
                            "application credential auth needs its id, or its name and user".into(),
                        ));
                    }
                }
                (
                    json!({"methods": ["application_credential"], "application_credential": c}),
                    None,
                )
            }
            AuthMethod::Token { token, project, .. } => (
                json!({"methods": ["token"], "token": {"id": token.expose()}}),
                scope(project),
            ),
        };
        let mut auth = json!({"identity": identity});
        if let Some(s) = scope {
            auth["scope"] = s;
        }
        Ok(json!({"auth": auth}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_keystone_request_bodies() {
        let pw = AuthMethod::Password {
            auth_url: "http://k:5000".into(),
            user: Ident::name("admin"),
            password: Secret::new("s3cret"),
            project: Some(Ident {
                name: Some("admin".into()),
                domain_id: Some("default".into()),
                ..Default::default()
            }),
        };
        assert_eq!(pw.auth_url(), "http://k:5000/v3");
        assert_eq!(
            pw.request_body().unwrap(),
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user":
                {"name": "admin", "domain": {"name": "Default"}, "password": "s3cret"}}},
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
        );
        let ac = AuthMethod::ApplicationCredential {
            auth_url: "http://k:5000/v3/".into(),
            id: Some("ac1".into()),
            name: None,
            user: None,
            secret: Secret::new("x"),
        };
        assert_eq!(ac.auth_url(), "http://k:5000/v3");
        assert_eq!(
            ac.request_body().unwrap(),
            json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"id": "ac1", "secret": "x"}}}})
        );
        let tok = AuthMethod::Token {
            auth_url: "u".into(),
            token: Secret::new("t"),
            project: Some(Ident::id("p1")),
        };
        assert_eq!(
            tok.request_body().unwrap(),
            json!({"auth": {"identity": {"methods": ["token"], "token": {"id": "t"}},
                "scope": {"project": {"id": "p1"}}}})
        );
        let bad = AuthMethod::ApplicationCredential {
            auth_url: "u".into(),
            id: None,
            name: Some("n".into()),
            user: None,
            secret: Secret::new("x"),
        };
        assert!(matches!(bad.request_body(), Err(crate::Error::Config(_))));
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let pw = AuthMethod::Password {
            auth_url: "u".into(),
            user: Ident::name("admin"),
            password: Secret::new("hunter2"),
            project: None,
        };
        let dbg = format!("{pw:?}");
        assert!(!dbg.contains("hunter2") && dbg.contains("***"), "{dbg}");
    }
}
