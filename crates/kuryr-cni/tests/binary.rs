//! The real binary, exec'd as a container runtime does.

use std::io::Write;
use std::process::{Command, Stdio};

fn run(env: &[(&str, &str)], stdin: &str) -> (i32, serde_json::Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kuryr-cni"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("kuryr-cni runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout not JSON ({e}): {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap(), v)
}

#[test]
fn version_and_errors_from_the_real_binary() {
    let (rc, v) = run(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(rc, 0);
    assert!(
        v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "1.1.0")
    );

    let (rc, v) = run(&[("CNI_COMMAND", "ADD")], "{oops");
    assert_eq!((rc, v["code"].as_u64()), (1, Some(6)));

    // a daemon that is not there: "try again later", naming the socket
    let dir = std::env::temp_dir().join(format!("kuryr-cni-test-{}", std::process::id()));
    let sock = dir.join("absent.sock");
    let conf = format!(
        r#"{{"cniVersion": "1.0.0", "name": "kuryr", "type": "kuryr-cni", "daemonSocket": "{}"}}"#,
        sock.display()
    );
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u",
        ),
    ];
    // a config of a version no CNI spec has: "incompatible CNI version",
    // naming it, before the daemon is even looked for
    let conf9 = conf.replace("1.0.0", "9.9.9");
    let (rc, v) = run(&env, &conf9);
    assert_eq!((rc, v["code"].as_u64()), (1, Some(1)), "{v}");
    assert!(
        v.to_string().contains("9.9.9"),
        "the error names the version: {v}"
    );

    let (rc, v) = run(&env, &conf);
    assert_eq!((rc, v["code"].as_u64()), (1, Some(11)), "{v}");
    assert!(
        v["details"].as_str().unwrap().contains("absent.sock"),
        "{v}"
    );
    assert_eq!(v["cniVersion"], "1.0.0");
}
