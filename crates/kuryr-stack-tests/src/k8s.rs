//! Kubernetes objects the stack tests and benchmarks share.

use kube::api::{Api, PostParams};

/// A RuntimeClass no runtime has (see [`runtime_class_none`]).
pub const RUNTIME_CLASS_NONE: &str = "kuryr-bench-none";

/// Makes [`RUNTIME_CLASS_NONE`] if missing: the kubelet never starts a pod
/// using it, so a pod bound to the stack's real node gets its port from the
/// controller and no containers (the test or benchmark plugs the port).
pub async fn runtime_class_none(kube: &kube::Client) -> anyhow::Result<()> {
    const NAME: &str = RUNTIME_CLASS_NONE;
    let rc: Api<k8s_openapi::api::node::v1::RuntimeClass> = Api::all(kube.clone());
    if rc.get_opt(NAME).await?.is_none() {
        let made = rc
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    serde_json::json!({"metadata": {"name": NAME}, "handler": NAME}),
                )?,
            )
            .await;
        match made {
            Ok(_) => {}
            // made meanwhile by a test running beside this one
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
