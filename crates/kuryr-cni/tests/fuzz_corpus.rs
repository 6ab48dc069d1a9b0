//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`) through the
//! same checks as the fuzz targets, on the stable toolchain: every input a
//! fuzzing run found interesting stays a regression test of `cargo test`.

use kuryr_cni::fuzzing::{check_daemon_request, check_invocation};
use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{}: only {} seeds",
        dir.display(),
        files.len()
    );
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).expect("corpus file reads");
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            failed.push(format!("{}: {msg}", f.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs fail:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn cni_invocation_corpus() {
    replay("cni_invocation", check_invocation);
}

#[test]
fn daemon_request_corpus() {
    replay("daemon_request", check_daemon_request);
}

/// The seeds reach the interesting paths: success through the daemon, and
/// each kind of error kuryr-cni answers itself.
#[test]
fn cni_invocation_seeds_cover_the_outcomes() {
    use kuryr_cni::fuzzing::{FakeDaemon, Invocation};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/cni_invocation");
    let mut codes = std::collections::BTreeSet::new();
    let mut forwarded_ok = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let inv = Invocation::from_bytes(&std::fs::read(f.unwrap().path()).unwrap());
        let mut d = FakeDaemon {
            answer: inv.answer,
            seen: Vec::new(),
        };
        let (out, rc) = kuryr_cni::handle(&|k| inv.env.get(k).cloned(), &inv.stdin, &mut d);
        if rc == 0 && !d.seen.is_empty() {
            forwarded_ok += 1;
        } else if rc == 1 {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            codes.insert(v["code"].as_u64().unwrap());
        }
    }
    assert!(
        forwarded_ok >= 4,
        "{forwarded_ok} seeds succeed through the daemon"
    );
    for c in [1, 4, 5, 6, 7, 11, 50, 117] {
        assert!(
            codes.contains(&c),
            "no seed ends in code {c} (have {codes:?})"
        );
    }
}
