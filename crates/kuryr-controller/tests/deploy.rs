//! The deployment manifests in `deploy/` are accepted by the real
//! kube-apiserver: a server-side dry run with strict field validation.
#![cfg(feature = "stack")]

use kuryr_stack_tests::env::StackEnv;
use std::path::Path;
use std::process::Command;

#[test]
fn deploy_manifests_pass_a_server_side_dry_run() -> anyhow::Result<()> {
    let env = StackEnv::load()?;
    env.require("k8s")?;
    let kubectl = Path::new(env.get("KURYR_STACK_K8S_BIN")?).join("kubectl");
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut files: Vec<_> = std::fs::read_dir(&deploy)?
        .chain(std::fs::read_dir(deploy.join("crds"))?)
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    for f in &files {
        let out = Command::new(&kubectl)
            .args(["--kubeconfig", env.get("KUBECONFIG")?])
            .args(["apply", "--dry-run=server", "--validate=strict", "-f"])
            .arg(f)
            .output()?;
        assert!(
            out.status.success(),
            "{}: {}{}",
            f.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
