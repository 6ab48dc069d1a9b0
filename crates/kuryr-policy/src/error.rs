//! The error type of the crate.

/// Why a NetworkPolicy cannot be translated.
///
/// Every variant describes a policy (or world entry) that the Kubernetes API
/// server would have rejected or that this crate cannot represent; the
/// translation never guesses in those cases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The policy has no `metadata.namespace`.
    #[error("network policy has no metadata.namespace")]
    MissingNamespace,
    /// A label selector is invalid (unknown operator, `In`/`NotIn` without
    /// values, `Exists`/`DoesNotExist` with values, empty key).
    #[error("invalid label selector: {0}")]
    InvalidSelector(String),
    /// A CIDR or IP address could not be parsed.
    #[error("invalid CIDR {0:?}")]
    InvalidCidr(String),
    /// A `policyTypes` entry is neither `Ingress` nor `Egress`.
    #[error("invalid policyType {0:?} (expected Ingress or Egress)")]
    InvalidPolicyType(String),
    /// A protocol other than TCP, UDP or SCTP.
    #[error("unsupported protocol {0:?} (expected TCP, UDP or SCTP)")]
    InvalidProtocol(String),
    /// A port is out of range, `endPort` is below `port`, or `endPort` is
    /// used without a numeric `port`.
    #[error("invalid port: {0}")]
    InvalidPort(String),
    /// A peer sets nothing, or combines `ipBlock` with a selector.
    #[error("invalid peer: {0}")]
    InvalidPeer(String),
}
