//! The checks of the fuzz targets (`fuzz/`), shared with the stable test
//! `tests/fuzz_corpus.rs` that replays the checked-in corpus. Not API: hidden
//! from the docs, used only by those two.
//!
//! Each `check_*` function takes the raw bytes of one input and panics when a
//! property does not hold; the fuzzer reports the panic as a crash.
//!
//! Input of [`check_invocation`]: a readable text format, so that the seeds
//! are real configs and libFuzzer's mutations stay meaningful. Header lines
//! `NAME=VALUE` (the `CNI_*` variables, plus `DAEMON=` to choose the fake
//! daemon's answer), a blank line, then stdin as it is:
//!
//! ```text
//! CNI_COMMAND=ADD
//! CNI_CONTAINERID=c1
//! CNI_NETNS=/var/run/netns/x
//! CNI_IFNAME=eth0
//! CNI_ARGS=K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p
//! DAEMON=ok
//!
//! {"cniVersion": "1.1.0", "name": "kuryr", "type": "kuryr-cni"}
//! ```
//!
//! Any bytes are an input: a line without `=` is ignored, no blank line means
//! empty stdin, a repeated name keeps the last value, and a variable that is
//! not named is unset.

use crate::{CallError, CniError, Command, Daemon, DaemonAnswer, DaemonRequest, code, handle};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Every code kuryr-cni itself can answer.
pub const OWN_CODES: &[u32] = &[
    code::INCOMPATIBLE_VERSION,
    code::UNSUPPORTED_FIELD,
    code::UNKNOWN_CONTAINER,
    code::INVALID_ENVIRONMENT,
    code::IO_FAILURE,
    code::DECODE_FAILURE,
    code::INVALID_CONFIG,
    code::TRY_AGAIN_LATER,
    code::NOT_AVAILABLE,
];

/// The code the fake daemon answers with when told `DAEMON=error`.
pub const FAKE_DAEMON_CODE: u32 = 117;

/// What the fake daemon does (header `DAEMON=`; default `ok`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeAnswer {
    /// 200 with a fixed CNI 1.1 result.
    Ok,
    /// 400 with a CNI error of code [`FAKE_DAEMON_CODE`].
    Error,
    /// Transport failure (no daemon on the socket).
    Down,
    /// 500 with a body that is no CNI error.
    Garbage,
}

/// One decoded invocation: environment, stdin and the fake daemon's answer.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The variables as the plugin would find them in its environment.
    pub env: BTreeMap<String, String>,
    /// The network configuration.
    pub stdin: Vec<u8>,
    /// The fake daemon's behaviour.
    pub answer: FakeAnswer,
}

impl Invocation {
    /// Decodes any bytes (see the module docs); never fails.
    pub fn from_bytes(data: &[u8]) -> Self {
        let (head, stdin) = match data.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &b""[..]),
        };
        let mut env = BTreeMap::new();
        let mut answer = FakeAnswer::Ok;
        for line in String::from_utf8_lossy(head).lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if k == "DAEMON" {
                answer = match v {
                    "error" => FakeAnswer::Error,
                    "down" => FakeAnswer::Down,
                    "garbage" => FakeAnswer::Garbage,
                    _ => FakeAnswer::Ok,
                };
            } else {
                env.insert(k.to_owned(), v.to_owned());
            }
        }
        Self {
            env,
            stdin: stdin.to_vec(),
            answer,
        }
    }
}

/// An in-memory daemon: records what reached it, answers as told.
#[derive(Debug)]
pub struct FakeDaemon {
    /// What it answers.
    pub answer: FakeAnswer,
    /// Every request that reached it.
    pub seen: Vec<DaemonRequest>,
}

impl Daemon for FakeDaemon {
    fn call(
        &mut self,
        _socket: &str,
        _timeout_secs: u64,
        req: &DaemonRequest,
    ) -> Result<DaemonAnswer, CallError> {
        self.seen.push(req.clone());
        match self.answer {
            FakeAnswer::Ok => Ok(DaemonAnswer {
                status: 200,
                body: json!({
                    "cniVersion": req.cni_version(),
                    "interfaces": [{"name": req.ifname, "sandbox": req.netns}],
                    "ips": [{"address": "10.0.0.5/24", "interface": 0}],
                }),
            }),
            FakeAnswer::Error => Ok(DaemonAnswer {
                status: 400,
                body: serde_json::to_value(CniError::new(
                    FAKE_DAEMON_CODE,
                    "fake daemon says no",
                    "",
                ))
                .expect("CniError serialises"),
            }),
            FakeAnswer::Down => Err(CallError::Unreachable("connection refused".into())),
            FakeAnswer::Garbage => Ok(DaemonAnswer {
                status: 500,
                body: json!(["not", "a", "cni", "error"]),
            }),
        }
    }
}

/// Runs [`handle`] on the decoded input and checks what a runtime relies
/// on: no panic, exit code 0 or 1, stdout is JSON (`null` = print nothing),
/// an error is an object with an integer `code` (one of ours, or the
/// daemon's own) and a string `msg`; success for ADD is the daemon's result,
/// for VERSION the list of versions. Whatever reaches the daemon passes the
/// daemon's own checks ([`DaemonRequest::parse`]) and survives its wire
/// format unchanged, and nothing reaches it for VERSION.
pub fn check_invocation(data: &[u8]) {
    let inv = Invocation::from_bytes(data);
    let env = |k: &str| inv.env.get(k).cloned();
    let mut daemon = FakeDaemon {
        answer: inv.answer,
        seen: Vec::new(),
    };
    let (out, rc) = handle(&env, &inv.stdin, &mut daemon);
    assert!(rc == 0 || rc == 1, "exit code {rc}");
    let v: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}"));
    let cmd = inv.env.get("CNI_COMMAND").map(String::as_str);
    if rc == 1 {
        let code = v["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("error without an integer code: {out}"));
        assert!(v["msg"].is_string(), "error without a string msg: {out}");
        assert!(
            v["cniVersion"].is_string(),
            "error without cniVersion: {out}"
        );
        let known = OWN_CODES.iter().any(|&c| u64::from(c) == code)
            || (code == u64::from(FAKE_DAEMON_CODE) && inv.answer == FakeAnswer::Error);
        assert!(known, "code {code} is neither ours nor the daemon's: {out}");
        serde_json::from_value::<CniError>(v.clone())
            .unwrap_or_else(|e| panic!("error does not read back as a CniError ({e}): {out}"));
    } else {
        match cmd {
            Some("VERSION") => {
                assert!(v["supportedVersions"].is_array(), "{out}");
                assert!(v["cniVersion"].is_string(), "{out}");
            }
            Some("ADD") | Some("STATUS") => assert!(v.is_object(), "{out}"),
            _ => assert!(v.is_null(), "DEL, CHECK and GC print nothing: {out}"),
        }
        assert_eq!(
            daemon.seen.is_empty(),
            cmd == Some("VERSION"),
            "success without the daemon is VERSION only"
        );
    }
    if cmd == Some("VERSION") {
        assert!(daemon.seen.is_empty(), "VERSION reached the daemon");
    }
    assert!(daemon.seen.len() <= 1, "one call per invocation");
    for req in &daemon.seen {
        let wire = serde_json::to_vec(req).expect("a request serialises");
        let back = DaemonRequest::parse(&wire).unwrap_or_else(|e| {
            panic!(
                "the daemon refuses what the plugin sent: {e:?}\n{}",
                String::from_utf8_lossy(&wire)
            )
        });
        assert_eq!(&back, req, "the request changed on the wire");
        assert_ne!(back.command, Command::Version);
    }
}

/// [`DaemonRequest::parse`] on raw bytes: an accepted request serialises
/// and parses again to the same request; a refused one carries one of the
/// codes of [`code`] and a message.
pub fn check_daemon_request(data: &[u8]) {
    match DaemonRequest::parse(data) {
        Ok(req) => {
            let wire = serde_json::to_vec(&req).expect("a request serialises");
            let again = DaemonRequest::parse(&wire).unwrap_or_else(|e| {
                panic!(
                    "re-serialised request refused: {e:?}\n{}",
                    String::from_utf8_lossy(&wire)
                )
            });
            assert_eq!(again, req, "the request changed on a round trip");
        }
        Err(e) => {
            assert!(
                OWN_CODES.contains(&e.code),
                "code {} is not one of kuryr_cni::code",
                e.code
            );
            assert!(!e.msg.is_empty(), "error without a message");
        }
    }
}
