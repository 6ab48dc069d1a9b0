//! Smoke test of the stack's node: kubelet + containerd + runc run pods whose
//! network comes from the reference `bridge` CNI plugin, and the pods reach
//! each other. Needs `stack/stack up --kubelet` and root.
#![cfg(feature = "stack")]

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Config};
use kuryr_stack_tests::cmd::run;
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::{finally, unique_name, wait_until};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn pods_with_the_bridge_plugin_run_and_ping_each_other() -> anyhow::Result<()> {
    let env = StackEnv::load()?;
    env.require("kubelet")?;
    let kubeconfig = env.get("KUBECONFIG")?.to_owned();
    let kubectl = format!("{}/kubectl", env.get("KURYR_STACK_K8S_BIN")?);
    let image = env.get("KURYR_STACK_TEST_IMAGE")?.to_owned();
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let client = Client::try_from(Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;

    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = unique_name("smoke-node-", 40);
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
    )
    .await?;
    let body = async {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        for name in ["a", "b"] {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": image, "imagePullPolicy": "Never",
                                    "command": ["sleep", "3600"]}]}}))?;
            pods.create(&PostParams::default(), &pod).await?;
        }
        let mut ips = Vec::new();
        for name in ["a", "b"] {
            let ip = wait_until(
                &format!("pod {ns}/{name} Running"),
                Duration::from_secs(120),
                Duration::from_millis(500),
                || async {
                    let p = pods.get(name).await?;
                    let st = p.status.unwrap_or_default();
                    Ok(match (st.phase.as_deref(), st.pod_ip) {
                        (Some("Running"), Some(ip)) => Some(ip),
                        _ => None,
                    })
                },
            )
            .await
            .with_context(|| {
                format!(
                    "pod events: {}",
                    run(&[
                        &kubectl,
                        "--kubeconfig",
                        &kubeconfig,
                        "-n",
                        &ns,
                        "get",
                        "events"
                    ])
                    .unwrap_or_default()
                )
            })?;
            ips.push(ip);
        }
        assert_ne!(ips[0], ips[1]);
        let cidr = env.get("KURYR_STACK_POD_CIDR").unwrap_or("10.244.0.0/24");
        let prefix = cidr.rsplit_once('.').map(|(p, _)| p).unwrap_or(cidr);
        for ip in &ips {
            assert!(
                ip.starts_with(prefix),
                "pod IP {ip} not from the bridge plugin's range {cidr}"
            );
        }
        let out = run(&[
            &kubectl,
            "--kubeconfig",
            &kubeconfig,
            "-n",
            &ns,
            "exec",
            "a",
            "--",
            "ping",
            "-c",
            "2",
            "-W",
            "5",
            &ips[1],
        ])?;
        assert!(out.contains("2 packets received"), "{out}");
        anyhow::Ok(())
    };
    finally(body, async {
        nss.delete(&ns, &DeleteParams::default()).await?;
        Ok(())
    })
    .await
}
