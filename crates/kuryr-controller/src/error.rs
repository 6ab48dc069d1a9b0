//! What a handler's pass can fail with, and the short cause of each for
//! events and metrics.

use crate::drivers::DriverError;

/// A failed step; the pod is handled again after a back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kubernetes API.
    #[error("Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// OpenStack API.
    #[error("OpenStack: {0}")]
    OpenStack(#[from] kuryr_openstack::Error),
    /// Placing the port (driver or pool).
    #[error("{0}")]
    Driver(DriverError),
    /// What a user asked for cannot be done as it is (`reason` names it for
    /// events and metrics).
    #[error("{message}")]
    Refused {
        /// Short cause (CamelCase).
        reason: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl From<DriverError> for Error {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::OpenStack(e) => Error::OpenStack(e),
            DriverError::Kube(e) => Error::Kube(e),
            e => Error::Driver(e),
        }
    }
}

/// The short cause of a driver failure, for events and metrics.
pub fn driver_error_reason(e: &DriverError) -> String {
    match e {
        DriverError::OpenStack(e) => openstack_reason(e),
        DriverError::Kube(_) => "KubernetesError".into(),
        DriverError::NoVm(_) => "NodeVmNotFound".into(),
        DriverError::VlansExhausted(_) => "VlanIdsExhausted".into(),
        DriverError::Pool { reason, .. } => reason.clone(),
    }
}

fn openstack_reason(e: &kuryr_openstack::Error) -> String {
    match (e.error_type(), e.status()) {
        (Some(t), _) => t.to_owned(),
        (None, Some(s)) => format!("NeutronHTTP{s}"),
        (None, None) => "NeutronUnreachable".into(),
    }
}

impl Error {
    /// The short cause, for events and metrics.
    pub fn reason(&self) -> String {
        match self {
            Error::Kube(_) => "KubernetesError".into(),
            Error::OpenStack(e) => openstack_reason(e),
            Error::Driver(e) => driver_error_reason(e),
            Error::Refused { reason, .. } => reason.clone(),
        }
    }
}
