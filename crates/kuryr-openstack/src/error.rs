//! Errors of the OpenStack client.

use kuryr_openstack_types::neutron::NeutronErrorBody;

/// Result of every client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed call: what was asked, what the server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP method.
    pub method: String,
    /// URL called.
    pub url: String,
    /// HTTP status.
    pub status: u16,
    /// Neutron's `NeutronError.type` (e.g. `PortNotFound`, `OverQuota`), or
    /// Octavia's `faultstring` class when it sends one.
    pub error_type: Option<String>,
    /// The server's message (or the start of its body).
    pub message: String,
    /// `x-openstack-request-id`, to find the call in the server's log.
    pub request_id: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: HTTP {}", self.method, self.url, self.status)?;
        if let Some(t) = &self.error_type {
            write!(f, " {t}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(r) = &self.request_id {
            write!(f, " (request {r})")?;
        }
        Ok(())
    }
}

impl ApiError {
    /// Builds the error from a response body: Neutron's
    /// `{"NeutronError": {...}}`, Octavia's `{"faultstring": ...}`,
    /// Keystone's `{"error": {"message": ...}}`, or the raw text.
    pub fn from_body(
        method: &str,
        url: &str,
        status: u16,
        request_id: Option<String>,
        body: &[u8],
    ) -> Self {
        let (error_type, message) = parse_error_body(body);
        Self {
            method: method.to_owned(),
            url: url.to_owned(),
            status,
            error_type,
            message,
            request_id,
        }
    }
}

fn parse_error_body(body: &[u8]) -> (Option<String>, String) {
    if let Ok(n) = serde_json::from_slice::<NeutronErrorBody>(body) {
        let t = (!n.error.error_type.is_empty()).then_some(n.error.error_type);
        return (t, n.error.message);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(s) = v["faultstring"].as_str() {
            return (None, s.to_owned());
        }
        if let Some(s) = v["error"]["message"].as_str() {
            return (
                v["error"]["title"].as_str().map(str::to_owned),
                s.to_owned(),
            );
        }
        if let Some(s) = v["message"].as_str() {
            return (None, s.to_owned());
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let cut = text.char_indices().nth(300).map_or(text.len(), |(i, _)| i);
    (None, text[..cut].to_owned())
}

/// Everything that can go wrong in a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status.
    #[error("{0}")]
    Api(Box<ApiError>),
    /// The server could not be reached, or the connection broke.
    #[error("{method} {url}: no answer")]
    Transport {
        /// HTTP method.
        method: String,
        /// URL called.
        url: String,
        /// What reqwest saw.
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not what the API documents.
    #[error("{what}: unexpected answer: {detail}")]
    Decode {
        /// Which call.
        what: String,
        /// Why it did not parse.
        detail: String,
    },
    /// The catalogue has no such endpoint and no override was given.
    #[error(
        "no {interface} endpoint for service type `{service}` (region {region}) in the Keystone catalogue: set an endpoint override"
    )]
    NoEndpoint {
        /// Service type.
        service: String,
        /// Interface.
        interface: String,
        /// Region, or "any".
        region: String,
    },
    /// A call the client will not make as asked, because it would act on
    /// the wrong object; the message says what to change.
    #[error("{0}")]
    Refused(String),
    /// Configuration missing or inconsistent (clouds.yaml, `OS_*`).
    #[error("OpenStack configuration: {0}")]
    Config(String),
    /// A wait ran out of time.
    #[error("{what}: not reached within {seconds}s")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// An Octavia object went to provisioning status ERROR.
    #[error("{kind} {id} went to provisioning status ERROR")]
    Provisioning {
        /// Object kind.
        kind: &'static str,
        /// Its id.
        id: String,
    },
}

impl Error {
    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(e) => Some(e.status),
            _ => None,
        }
    }

    /// A 404: the object does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// A 409: conflict (in use, duplicate, immutable...).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// Neutron's error type, e.g. `IpAddressGenerationFailure`.
    pub fn error_type(&self) -> Option<&str> {
        match self {
            Error::Api(e) => e.error_type.as_deref(),
            _ => None,
        }
    }

    /// Whether retrying the same call may succeed. `idempotent`: repeating
    /// the request has no extra effect (GET, PUT, DELETE, or a POST the
    /// caller made safe), so a 5xx may be retried; otherwise only answers
    /// that prove nothing was done are (503, and Octavia's 409 for an object
    /// still PENDING_*).
    pub fn is_retryable(&self, idempotent: bool) -> bool {
        match self {
            Error::Transport { source, .. } => idempotent || source.is_connect(),
            Error::Api(e) => match e.status {
                503 => true,
                500 | 502 | 504 => idempotent,
                409 => {
                    e.message.contains("is immutable")
                        || e.message.contains("Invalid state PENDING")
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// The idempotent reading of a delete-like call: `Ok(true)` when it did
/// something, `Ok(false)` when the object was already gone (404).
pub(crate) fn gone_is_done<T>(r: Result<T>) -> Result<bool> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_error_bodies_of_each_service() {
        let n = ApiError::from_body(
            "POST",
            "http://n/v2.0/ports",
            409,
            Some("req-1".into()),
            br#"{"NeutronError": {"type": "IpAddressGenerationFailure", "message": "No more IP addresses available on network n1.", "detail": ""}}"#,
        );
        assert_eq!(n.error_type.as_deref(), Some("IpAddressGenerationFailure"));
        assert_eq!(
            n.to_string(),
            "POST http://n/v2.0/ports: HTTP 409 IpAddressGenerationFailure: No more IP addresses available on network n1. (request req-1)"
        );
        let o = ApiError::from_body("PUT", "u", 409, None,
            br#"{"faultcode": "Client", "faultstring": "Load Balancer 1 is immutable and cannot be updated.", "debuginfo": null}"#);
        assert_eq!(
            o.message,
            "Load Balancer 1 is immutable and cannot be updated."
        );
        assert!(Error::Api(Box::new(o)).is_retryable(false));
        let k = ApiError::from_body("POST", "u", 401, None,
            br#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#);
        assert_eq!(k.error_type.as_deref(), Some("Unauthorized"));
        let raw = ApiError::from_body("GET", "u", 502, None, b"<html>Bad Gateway</html>");
        assert_eq!(raw.message, "<html>Bad Gateway</html>");
    }

    #[test]
    fn a_404_means_already_done() {
        let api = |status: u16| {
            Error::Api(Box::new(ApiError::from_body(
                "DELETE", "u", status, None, b"",
            )))
        };
        assert!(gone_is_done(Ok(())).unwrap());
        assert!(!gone_is_done::<()>(Err(api(404))).unwrap());
        assert_eq!(
            gone_is_done::<()>(Err(api(409))).unwrap_err().status(),
            Some(409)
        );
    }

    #[test]
    fn retries_only_what_is_safe() {
        let api =
            |status: u16| Error::Api(Box::new(ApiError::from_body("X", "u", status, None, b"")));
        assert!(api(503).is_retryable(false));
        assert!(api(500).is_retryable(true));
        assert!(
            !api(500).is_retryable(false),
            "a POST that failed with 500 may have created something"
        );
        assert!(!api(404).is_retryable(true));
        assert!(!api(409).is_retryable(true));
        assert!(api(404).is_not_found() && api(409).is_conflict());
    }
}
