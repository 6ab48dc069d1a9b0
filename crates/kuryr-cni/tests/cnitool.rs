//! kuryr-cni driven by libcni, the runtime side of CNI (through `cnitool`,
//! built by `stack/stack build-cnitool`), as containerd would drive it: a
//! conflist in a config dir, the binary in a plugin dir, a real network
//! namespace. No daemon listens on the configured socket, so this checks
//! that libcni takes our spec errors as errors and reads them: "try again
//! later" (11) for ADD and DEL, "not available" (50) for STATUS, and that a
//! config of an unknown CNI version is refused by kuryr-cni and
//! reported by libcni.
//!
//! Needs root (`ip netns add`) and Go with the module proxy the first time;
//! `sudo cargo test -p kuryr-cni --features stack --test cnitool`.
#![cfg(feature = "stack")]

use kuryr_stack_tests::cni::{
    TempDir, cnitool, cnitool_path, install_recording_plugin, recorded, write_conflist,
};
use kuryr_stack_tests::net::Netns;
use serde_json::json;
use std::path::Path;

const POD_ARGS: &str =
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=6f1c2d3e";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn libcni_reads_our_spec_errors_when_no_daemon_listens() {
    let tool = cnitool_path();
    assert!(tool.is_file(), "{}", tool.display());
    let tmp = TempDir::new("kuryr-cnitool-").expect("temp dir");
    let sock = tmp.join("daemon.sock"); // nothing listens here
    let (plugins, conf, rec) = (tmp.join("bin"), tmp.join("net.d"), tmp.join("rec"));
    let bin = Path::new(env!("CARGO_BIN_EXE_kuryr-cni"));
    install_recording_plugin(&plugins, "kuryr-cni", bin, &rec).expect("plugin installed");
    let plugin = json!({"type": "kuryr-cni", "daemonSocket": sock, "timeout": 5});
    write_conflist(&conf, "10-kuryr", "kuryr", "1.1.0", &[plugin]).expect("conflist");
    let ns = Netns::new("kcnit").expect("ip netns add"); // deleted on drop, also on panic
    let netns = format!("/var/run/netns/{}", ns.name);

    // ADD: libcni fails, with our msg and details (it prints `msg; details`)
    let out = cnitool(
        "add",
        "kuryr",
        &netns,
        &conf,
        &plugins,
        &[("CNI_ARGS", POD_ARGS)],
    );
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "ADD without a daemon succeeded: {err}"
    );
    assert!(
        err.contains("kuryr-daemon is not reachable; ") && err.contains(&*sock.to_string_lossy()),
        "libcni did not pass on our error: {err}"
    );
    // ...and what it got from the plugin was a spec error with code 11
    let calls = recorded(&rec);
    let add = calls.last().expect("the plugin was run");
    assert_eq!((add.command(), add.rc), ("ADD", 1), "{add:?}");
    let e = add.stdout_json();
    assert_eq!(e["code"], 11, "{e}");
    assert_eq!(e["msg"], "kuryr-daemon is not reachable", "{e}");
    assert_eq!(
        e["cniVersion"], "1.1.0",
        "errors answer in the config's version"
    );
    assert_eq!(add.env["CNI_NETNS"], netns);
    assert_eq!(add.env["CNI_IFNAME"], "eth0");
    assert!(
        add.env["CNI_CONTAINERID"].starts_with("cnitool-"),
        "{add:?}"
    );
    assert_eq!(add.env["CNI_ARGS"], POD_ARGS);
    let sent = add.stdin_json();
    assert_eq!(
        (&sent["name"], &sent["cniVersion"], &sent["type"]),
        (&json!("kuryr"), &json!("1.1.0"), &json!("kuryr-cni")),
        "libcni hands each plugin its own config with the list's name and version: {sent}"
    );
    assert_eq!(sent["daemonSocket"], json!(sock));

    // DEL: the same "try again later" (a runtime retries DEL until it succeeds)
    let out = cnitool(
        "del",
        "kuryr",
        &netns,
        &conf,
        &plugins,
        &[("CNI_ARGS", POD_ARGS)],
    );
    assert!(!out.status.success(), "DEL without a daemon succeeded");
    assert!(
        stderr(&out).contains("kuryr-daemon is not reachable"),
        "{}",
        stderr(&out)
    );
    let del = recorded(&rec).pop().unwrap();
    assert_eq!(
        (del.command(), del.stdout_json()["code"].as_u64()),
        ("DEL", Some(11))
    );

    // STATUS (CNI 1.1): "plugin not available"
    let out = cnitool("status", "kuryr", &netns, &conf, &plugins, &[]);
    assert!(!out.status.success(), "STATUS without a daemon succeeded");
    assert!(
        stderr(&out).contains("kuryr-daemon is not available"),
        "{}",
        stderr(&out)
    );
    let status = recorded(&rec).pop().unwrap();
    assert_eq!(
        (status.command(), status.stdout_json()["code"].as_u64()),
        ("STATUS", Some(50))
    );

    // a config of a CNI version nobody speaks: libcni runs the plugin with
    // it, kuryr-cni refuses it ("incompatible CNI version", code 1) and
    // libcni reports that refusal (tests/binary.rs checks the binary alone)
    let conf9 = tmp.join("net9.d");
    let plugin = json!({"type": "kuryr-cni", "daemonSocket": sock});
    write_conflist(&conf9, "10-kuryr", "kuryr", "9.9.9", &[plugin]).expect("conflist");
    let before = recorded(&rec).len();
    let out = cnitool(
        "add",
        "kuryr",
        &netns,
        &conf9,
        &plugins,
        &[("CNI_ARGS", POD_ARGS)],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "a 9.9.9 config was accepted: {err}");
    assert!(
        err.contains("9.9.9"),
        "the refusal names the version: {err}"
    );
    let calls = recorded(&rec);
    let [add9] = calls.get(before..).unwrap_or_default() else {
        panic!("libcni did not run the plugin exactly once: {calls:?}");
    };
    assert_eq!(add9.stdin_json()["cniVersion"], "9.9.9", "{add9:?}");
    let e = add9.stdout_json();
    assert_eq!((add9.rc, e["code"].as_u64()), (1, Some(1)), "{add9:?}");
    assert!(
        err.contains(e["msg"].as_str().unwrap_or("(no msg)")),
        "libcni shows kuryr-cni's message: {err}"
    );
}
