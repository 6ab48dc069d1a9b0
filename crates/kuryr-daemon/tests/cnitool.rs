//! CNI conformance through the reference runtime: `cnitool` (libcni, the
//! library containerd and CRI-O use) drives kuryr-cni + kuryr-daemon with a
//! conflist, ADD, CHECK, STATUS, DEL and GC, and reads our errors.
#![cfg(feature = "stack")]

mod common;

use common::*;
use kuryr_stack_tests::cni::cnitool;
use kuryr_stack_tests::net::Netns;
use kuryr_stack_tests::unique_name;
use serde_json::{Value, json};
use std::path::PathBuf;

struct Tool {
    conf_dir: PathBuf,
    plugin_dir: PathBuf,
    args: String,
}

impl Tool {
    fn run(&self, op: &str, net: &str, netns: &str) -> (bool, String) {
        let out = cnitool(
            op,
            net,
            netns,
            &self.conf_dir,
            &self.plugin_dir,
            &[("CNI_ARGS", &self.args)],
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

#[tokio::test]
async fn cnitool_drives_kuryr_cni_and_the_daemon() -> anyhow::Result<()> {
    with_namespace(&["k8s", "ovs"], |env, client, ns| async move {
        let d = Daemon::start(&env, &[("KURYR_CNI_DAEMON__VIF_ANNOTATION_TIMEOUT", "2")])?;
        let dir = std::env::temp_dir().join(unique_name("kuryr-cnitool-", 60));
        let (conf_dir, plugin_dir) = (dir.join("net.d"), dir.join("bin"));
        std::fs::create_dir_all(&conf_dir)?;
        std::fs::create_dir_all(&plugin_dir)?;
        std::os::unix::fs::symlink(cni_bin(), plugin_dir.join("kuryr-cni"))?;
        let conflist = json!({"cniVersion": "1.1.0", "name": "kuryr",
                "plugins": [{"type": "kuryr-cni", "daemonSocket": d.socket, "timeout": 30}]});
        std::fs::write(conf_dir.join("10-kuryr.conflist"), conflist.to_string())?;
        let vif = fake_vif(70, "10.249.0.0/24", true);
        kuryrport(&client, &ns, "pod-t", "uid-t", &d.node, Some(vif.clone())).await?;
        let tool = Tool {
            conf_dir: conf_dir.clone(),
            plugin_dir,
            args: format!("K8S_POD_NAMESPACE={ns};K8S_POD_NAME=pod-t;K8S_POD_UID=uid-t"),
        };
        let pod_ns = Netns::new("kdct")?;
        let netns = format!("/var/run/netns/{}", pod_ns.name);
        let r = (|| -> anyhow::Result<()> {
            let (ok, out) = tool.run("add", "kuryr", &netns);
            assert!(ok, "cnitool add: {out}\n{}", d.log_text());
            let res: Value = serde_json::from_str(out.trim())?;
            assert_eq!(res["cniVersion"], "1.1.0");
            assert_eq!(res["ips"][0]["address"], "10.249.0.72/24", "{res}");
            assert_eq!(res["interfaces"][0]["sandbox"], netns.as_str());
            assert!(
                pod_ns
                    .ip(&["addr", "show", "eth0"])?
                    .contains("10.249.0.72/24")
            );
            let (ok, out) = tool.run("check", "kuryr", &netns);
            assert!(ok, "cnitool check: {out}");
            let (ok, out) = tool.run("status", "kuryr", &netns);
            assert!(ok, "cnitool status: {out}");
            let (ok, out) = tool.run("del", "kuryr", &netns);
            assert!(ok, "cnitool del: {out}");
            let (ok, out) = tool.run("del", "kuryr", &netns);
            assert!(ok, "a second cnitool del: {out}");
            eventually("pod link gone", || {
                pod_ns.ip(&["link", "show", "eth0"]).is_err()
            });
            let (ok, out) = tool.run("gc", "kuryr", &netns);
            assert!(ok, "cnitool gc: {out}");
            // errors come back through libcni with our code and message
            let other = Tool {
                args: format!("K8S_POD_NAMESPACE={ns};K8S_POD_NAME=no-such-pod;K8S_POD_UID=x"),
                conf_dir: tool.conf_dir.clone(),
                plugin_dir: tool.plugin_dir.clone(),
            };
            let (ok, out) = other.run("add", "kuryr", &netns);
            assert!(!ok);
            assert!(out.contains("timed out waiting for the pod's VIF"), "{out}");
            let bad = json!({"cniVersion": "9.9.9", "name": "kuryr",
                    "plugins": [{"type": "kuryr-cni", "daemonSocket": d.socket}]});
            std::fs::write(conf_dir.join("10-kuryr.conflist"), bad.to_string())?;
            let (ok, out) = tool.run("add", "kuryr", &netns);
            assert!(!ok, "{out}");
            assert!(out.contains("9.9.9"), "{out}");
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&dir);
        r
    })
    .await
}
