//! The CNI side of kuryr-rs: CNI spec 1.1 requests (configuration on stdin,
//! parameters in `CNI_*` variables), results and errors, and the dispatch of
//! a request to kuryr-daemon. Pure, so every rule is unit-tested; the
//! binary (`main.rs`) only wires stdin, the environment, stdout and the
//! daemon socket to [`handle`].

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[doc(hidden)]
pub mod fuzzing;

/// CNI versions this plugin speaks (configs of any of them are accepted).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The version answered when a config does not name one.
pub const CURRENT_VERSION: &str = "1.1.0";
/// Where kuryr-daemon listens by default.
pub const DEFAULT_SOCKET: &str = "/run/kuryr/daemon.sock";

/// Well-known CNI error codes (spec section "Error").
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// Plugin not available (STATUS).
    pub const NOT_AVAILABLE: u32 = 50;
}

/// A CNI error, printed on stdout as the spec asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    /// CNI version of the answer.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Error code (see [`code`]).
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer explanation: what failed, on which object, what to do.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code`.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            cni_version: CURRENT_VERSION.into(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The same error stamped with `v` as its cniVersion.
    pub fn version(mut self, v: &str) -> Self {
        self.cni_version = v.to_owned();
        self
    }
}

/// CNI operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    /// Plug.
    Add,
    /// Unplug (idempotent).
    Del,
    /// Verify.
    Check,
    /// Supported versions.
    Version,
    /// Readiness of the plugin (1.1).
    Status,
    /// Garbage-collect what no valid attachment uses (1.1).
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The network configuration on stdin (fields kuryr-cni reads; the rest is
/// passed to the daemon as it came).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetConf {
    /// Config's CNI version.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// Plugin type (`kuryr-cni`).
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// Daemon socket (default [`DEFAULT_SOCKET`]).
    #[serde(default, rename = "daemonSocket")]
    pub daemon_socket: Option<String>,
    /// Seconds to wait for the daemon (default 180: a pod's port may still be in the making).
    #[serde(default, rename = "timeout")]
    pub timeout: Option<u64>,
    /// Everything else (prevResult, runtimeConfig, capabilities...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// One request as the daemon receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonRequest {
    /// Operation.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (may be empty for DEL and GC).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` as key/value (K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID...).
    pub args: BTreeMap<String, String>,
    /// The network configuration as given.
    pub config: Value,
}

impl DaemonRequest {
    /// Reads and checks a request as the daemon receives it: JSON of this
    /// shape, a config naming a supported `cniVersion`, and the fields the
    /// command needs (container id and interface name for ADD/DEL/CHECK, a
    /// netns for ADD/CHECK). Every failure is a CNI error to send back.
    pub fn parse(body: &[u8]) -> Result<Self, CniError> {
        let req: DaemonRequest = serde_json::from_slice(body).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                "malformed request to kuryr-daemon",
                format!("{e}"),
            )
        })?;
        let v = req.config["cniVersion"].as_str().unwrap_or_default();
        if !SUPPORTED_VERSIONS.contains(&v) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "config cniVersion {v:?}; supported: {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        let per_container = matches!(req.command, Command::Add | Command::Del | Command::Check);
        let missing = |what: &str| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("{what} is not set"),
                format!("{:?} needs {what}", req.command),
            )
            .version(v)
        };
        if per_container && req.container_id.is_empty() {
            return Err(missing("CNI_CONTAINERID"));
        }
        if matches!(req.command, Command::Add | Command::Check) && req.netns.is_empty() {
            return Err(missing("CNI_NETNS"));
        }
        if per_container {
            check_ifname(&req.ifname).map_err(|e| e.version(v))?;
        }
        Ok(req)
    }

    /// The config's CNI version (checked by [`DaemonRequest::parse`]).
    pub fn cni_version(&self) -> &str {
        self.config["cniVersion"]
            .as_str()
            .unwrap_or(CURRENT_VERSION)
    }
}

/// A Linux interface name: 1 to 15 bytes, no `/`, `:` or whitespace, not
/// `.` or `..`.
pub fn check_ifname(name: &str) -> Result<(), CniError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            "invalid interface name",
            format!("CNI_IFNAME {name:?}: 1-15 bytes, no '/', ':' or whitespace"),
        ));
    }
    Ok(())
}

/// What the daemon answered: HTTP-like status and JSON body (a CNI result or
/// a [`CniError`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonAnswer {
    /// 200 = success; anything else carries a CNI error body.
    pub status: u16,
    /// The body.
    pub body: Value,
}

/// Why a request did not get the daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The daemon's socket cannot be reached (no daemon running).
    Unreachable(String),
    /// The request reached the daemon, which did not answer in time or
    /// answered something that is not HTTP and JSON.
    NoAnswer(String),
}

/// The way to the daemon (a unix socket in the binary).
pub trait Daemon {
    /// Sends `req`; `Err` is a transport failure (daemon down, timeout).
    fn call(
        &mut self,
        socket: &str,
        timeout_secs: u64,
        req: &DaemonRequest,
    ) -> Result<DaemonAnswer, CallError>;
}

/// Parses `CNI_ARGS` (`K=V;K=V`).
pub fn parse_cni_args(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("`{p}` is not KEY=VALUE"))
        })
        .collect()
}

/// Runs one CNI invocation: `env` looks up `CNI_*` variables, `stdin` is the
/// config. Returns what to print on stdout and the exit code.
pub fn handle(
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
    daemon: &mut dyn Daemon,
) -> (String, i32) {
    match dispatch(env, stdin, daemon) {
        Ok(v) => (v.to_string(), 0),
        Err(e) => (serde_json::to_string(&e).expect("CniError serialises"), 1),
    }
}

fn dispatch(
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
    daemon: &mut dyn Daemon,
) -> Result<Value, CniError> {
    let cmd_s = env("CNI_COMMAND").unwrap_or_default();
    let cmd = Command::parse(&cmd_s).ok_or_else(|| {
        CniError::new(
            code::INVALID_ENVIRONMENT,
            "unknown or missing CNI_COMMAND",
            format!("CNI_COMMAND={cmd_s:?}; expected ADD, DEL, CHECK, VERSION, STATUS or GC"),
        )
    })?;
    if cmd == Command::Version {
        // the config may name its version; answer in it when we speak it
        let asked = serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_owned));
        let v = asked
            .filter(|a| SUPPORTED_VERSIONS.contains(&a.as_str()))
            .unwrap_or_else(|| CURRENT_VERSION.into());
        return Ok(json!({"cniVersion": v, "supportedVersions": SUPPORTED_VERSIONS}));
    }
    let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE_FAILURE,
            "network configuration is not JSON",
            format!("stdin: {e}"),
        )
    })?;
    let conf: NetConf = serde_json::from_value(raw.clone()).map_err(|e| {
        CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration",
            format!("{e}; a kuryr-cni config needs cniVersion, name and type"),
        )
    })?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "config cniVersion {}; supported: {}",
                conf.cni_version,
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let v = conf.cni_version.as_str();
    if matches!(cmd, Command::Status | Command::Gc) && !v.starts_with("1.1") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("{cmd_s} needs CNI 1.1"),
            format!("config cniVersion {v}"),
        )
        .version(v));
    }
    let var = |name: &str, needed: bool| -> Result<String, CniError> {
        match env(name).filter(|s| !s.is_empty()) {
            Some(s) => Ok(s),
            None if needed => Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("{name} is not set"),
                format!("CNI {cmd_s} needs {name} (set by the container runtime)"),
            )
            .version(v)),
            None => Ok(String::new()),
        }
    };
    let per_container = matches!(cmd, Command::Add | Command::Del | Command::Check);
    let req = DaemonRequest {
        command: cmd,
        container_id: var("CNI_CONTAINERID", per_container)?,
        netns: var("CNI_NETNS", matches!(cmd, Command::Add | Command::Check))?,
        ifname: var("CNI_IFNAME", per_container)?,
        args: parse_cni_args(&env("CNI_ARGS").unwrap_or_default()).map_err(|e| {
            CniError::new(code::INVALID_ENVIRONMENT, "malformed CNI_ARGS", e).version(v)
        })?,
        config: raw,
    };
    if per_container {
        check_ifname(&req.ifname).map_err(|e| e.version(v))?;
    }
    if cmd == Command::Add
        && !req.args.contains_key("K8S_POD_UID")
        && !req.args.contains_key("K8S_POD_NAME")
    {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            "CNI_ARGS names no Kubernetes pod",
            "kuryr-cni binds Kubernetes pods: CNI_ARGS must carry K8S_POD_NAMESPACE and K8S_POD_NAME (kubelet sets them)",
        )
        .version(v));
    }
    let socket = conf
        .daemon_socket
        .clone()
        .unwrap_or_else(|| DEFAULT_SOCKET.into());
    let timeout = conf.timeout.unwrap_or(180);
    match daemon.call(&socket, timeout, &req) {
        Ok(a) if a.status == 200 => Ok(
            if cmd == Command::Del || cmd == Command::Gc || cmd == Command::Check {
                // no output on success for these
                Value::Null
            } else {
                a.body
            },
        ),
        Ok(a) => Err(
            serde_json::from_value::<CniError>(a.body.clone()).unwrap_or_else(|_| {
                CniError::new(
                    code::IO_FAILURE,
                    format!("kuryr-daemon answered {}", a.status),
                    a.body.to_string(),
                )
            }),
        ),
        Err(CallError::Unreachable(e)) if cmd == Command::Status => Err(CniError::new(
            code::NOT_AVAILABLE,
            "kuryr-daemon is not available",
            format!("{socket}: {e}"),
        )
        .version(v)),
        Err(CallError::Unreachable(e)) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            "kuryr-daemon is not reachable",
            format!("{socket}: {e}; is kuryr-daemon running on this node?"),
        )
        .version(v)),
        Err(CallError::NoAnswer(e)) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("kuryr-daemon did not answer {cmd_s}"),
            format!("{socket}: {e} (the plugin waits `timeout` seconds of its network configuration, {timeout} here)"),
        )
        .version(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the request and answers as told: only to check what the
    /// plugin sends and how it maps answers; the real daemon is tested
    /// against real namespaces.
    struct Recorder {
        seen: Vec<DaemonRequest>,
        answer: Result<DaemonAnswer, CallError>,
    }

    impl Daemon for Recorder {
        fn call(
            &mut self,
            _socket: &str,
            _t: u64,
            req: &DaemonRequest,
        ) -> Result<DaemonAnswer, CallError> {
            self.seen.push(req.clone());
            self.answer.clone()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    const CONF: &str = r#"{"cniVersion": "1.0.0", "name": "kuryr", "type": "kuryr-cni", "daemonSocket": "/tmp/d.sock"}"#;
    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/cni-1"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;K8S_POD_UID=u1",
        ),
    ];

    fn ok_daemon(body: Value) -> Recorder {
        Recorder {
            seen: vec![],
            answer: Ok(DaemonAnswer { status: 200, body }),
        }
    }

    #[test]
    fn version_lists_every_supported_version() {
        let mut d = ok_daemon(Value::Null);
        let (out, rc) = handle(
            &env(&[("CNI_COMMAND", "VERSION")]),
            br#"{"cniVersion": "0.3.1"}"#,
            &mut d,
        );
        assert_eq!(rc, 0);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
        assert!(d.seen.is_empty(), "VERSION never talks to the daemon");
        let (out, _) = handle(&env(&[("CNI_COMMAND", "VERSION")]), b"", &mut d);
        assert!(out.contains("\"cniVersion\":\"1.1.0\""), "{out}");
    }

    #[test]
    fn add_forwards_everything_and_prints_the_result() {
        let result = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}], "ips": [{"address": "10.0.0.5/24"}]});
        let mut d = ok_daemon(result.clone());
        let (out, rc) = handle(&env(ADD), CONF.as_bytes(), &mut d);
        assert_eq!(rc, 0, "{out}");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), result);
        let r = &d.seen[0];
        assert_eq!(r.command, Command::Add);
        assert_eq!(r.args["K8S_POD_UID"], "u1");
        assert_eq!(r.netns, "/var/run/netns/cni-1");
        assert_eq!(r.config["daemonSocket"], "/tmp/d.sock");
    }

    #[test]
    fn bad_input_gets_a_spec_error() {
        let mut d = ok_daemon(Value::Null);
        let e = |out: &str| serde_json::from_str::<CniError>(out).unwrap();
        let (out, rc) = handle(&env(ADD), b"{not json", &mut d);
        assert_eq!((rc, e(&out).code), (1, code::DECODE_FAILURE));
        let (out, _) = handle(
            &env(ADD),
            br#"{"cniVersion": "1.0.0", "type": "kuryr-cni"}"#,
            &mut d,
        );
        assert_eq!(e(&out).code, code::INVALID_CONFIG);
        assert!(e(&out).details.contains("name"), "{out}");
        let (out, _) = handle(
            &env(ADD),
            br#"{"cniVersion": "9.9.9", "name": "k", "type": "kuryr-cni"}"#,
            &mut d,
        );
        assert_eq!(e(&out).code, code::INCOMPATIBLE_VERSION);
        let no_netns: Vec<(&str, &str)> = ADD
            .iter()
            .copied()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        let (out, _) = handle(&env(&no_netns), CONF.as_bytes(), &mut d);
        let err = e(&out);
        assert_eq!(
            (err.code, err.msg.as_str()),
            (code::INVALID_ENVIRONMENT, "CNI_NETNS is not set")
        );
        assert_eq!(
            err.cni_version, "1.0.0",
            "errors answer in the config's version"
        );
        let (out, _) = handle(&env(&[("CNI_COMMAND", "JUMP")]), CONF.as_bytes(), &mut d);
        assert_eq!(e(&out).code, code::INVALID_ENVIRONMENT);
        let bad_args: Vec<(&str, &str)> = ADD
            .iter()
            .map(|&(k, v)| {
                if k == "CNI_ARGS" {
                    (k, "garbage")
                } else {
                    (k, v)
                }
            })
            .collect();
        let (out, _) = handle(&env(&bad_args), CONF.as_bytes(), &mut d);
        assert!(e(&out).msg.contains("CNI_ARGS"), "{out}");
        let (out, _) = handle(&env(&[("CNI_COMMAND", "STATUS")]), CONF.as_bytes(), &mut d);
        assert_eq!(
            e(&out).code,
            code::INCOMPATIBLE_VERSION,
            "STATUS is CNI 1.1"
        );
        assert!(d.seen.is_empty(), "nothing malformed reaches the daemon");
    }

    #[test]
    fn del_needs_no_netns_and_prints_nothing() {
        let mut d = ok_daemon(json!({}));
        let del: Vec<(&str, &str)> = ADD
            .iter()
            .map(|&(k, v)| match k {
                "CNI_COMMAND" => (k, "DEL"),
                "CNI_NETNS" => (k, ""),
                _ => (k, v),
            })
            .collect();
        let (out, rc) = handle(&env(&del), CONF.as_bytes(), &mut d);
        assert_eq!((out.as_str(), rc), ("null", 0));
        assert_eq!(d.seen[0].command, Command::Del);
    }

    #[test]
    fn daemon_failures_are_mapped() {
        let mut down = Recorder {
            seen: vec![],
            answer: Err(CallError::Unreachable("connection refused".into())),
        };
        let (out, rc) = handle(&env(ADD), CONF.as_bytes(), &mut down);
        let err: CniError = serde_json::from_str(&out).unwrap();
        assert_eq!((rc, err.code), (1, code::TRY_AGAIN_LATER));
        assert!(err.details.contains("/tmp/d.sock") && err.details.contains("connection refused"));
        // a daemon that took the request and never answered is not "unreachable"
        let mut silent = Recorder {
            seen: vec![],
            answer: Err(CallError::NoAnswer(
                "no answer within 180s: timed out".into(),
            )),
        };
        let (out, rc) = handle(&env(ADD), CONF.as_bytes(), &mut silent);
        let err: CniError = serde_json::from_str(&out).unwrap();
        assert_eq!((rc, err.code), (1, code::TRY_AGAIN_LATER));
        assert_eq!(err.msg, "kuryr-daemon did not answer ADD");
        assert!(
            err.details.contains("no answer within 180s"),
            "{}",
            err.details
        );
        let status = [("CNI_COMMAND", "STATUS")];
        let conf11 = CONF.replace("1.0.0", "1.1.0");
        let (out, _) = handle(&env(&status), conf11.as_bytes(), &mut down);
        assert_eq!(
            serde_json::from_str::<CniError>(&out).unwrap().code,
            code::NOT_AVAILABLE
        );
        // the daemon's own CNI error passes through unchanged
        let mine = CniError::new(
            code::UNKNOWN_CONTAINER,
            "no such pod",
            "pod ns/web-0 uid u1 is gone",
        );
        let mut d = Recorder {
            seen: vec![],
            answer: Ok(DaemonAnswer {
                status: 404,
                body: serde_json::to_value(&mine).unwrap(),
            }),
        };
        let (out, _) = handle(&env(ADD), CONF.as_bytes(), &mut d);
        assert_eq!(serde_json::from_str::<CniError>(&out).unwrap(), mine);
    }

    #[test]
    fn parses_cni_args() {
        let a = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=a=b").unwrap();
        assert_eq!(a["K8S_POD_NAME"], "a=b");
        assert!(parse_cni_args("").unwrap().is_empty());
        assert!(parse_cni_args("novalue").is_err());
    }

    #[test]
    fn daemon_requests_are_checked() {
        let ok = br#"{"command":"ADD","container_id":"c1","netns":"/run/netns/x","ifname":"eth0","args":{},"config":{"cniVersion":"1.1.0","name":"n","type":"kuryr-cni"}}"#;
        let r = DaemonRequest::parse(ok).unwrap();
        assert_eq!(r.command, Command::Add);
        assert_eq!(r.cni_version(), "1.1.0");
        let code_of = |b: &[u8]| DaemonRequest::parse(b).unwrap_err().code;
        assert_eq!(code_of(b"{not json"), code::DECODE_FAILURE);
        assert_eq!(code_of(br#"{"command":"ADD"}"#), code::DECODE_FAILURE);
        let with = |f: &str, v: &str| {
            let mut j: Value = serde_json::from_slice(ok).unwrap();
            j[f] = json!(v);
            serde_json::to_vec(&j).unwrap()
        };
        assert_eq!(code_of(&with("netns", "")), code::INVALID_ENVIRONMENT);
        assert_eq!(
            code_of(&with("container_id", "")),
            code::INVALID_ENVIRONMENT
        );
        assert_eq!(code_of(&with("ifname", "a/b")), code::INVALID_ENVIRONMENT);
        assert_eq!(
            code_of(&with("ifname", "sixteen-chars-xx")),
            code::INVALID_ENVIRONMENT
        );
        let mut j: Value = serde_json::from_slice(ok).unwrap();
        j["config"]["cniVersion"] = json!("9.9.9");
        assert_eq!(
            code_of(&serde_json::to_vec(&j).unwrap()),
            code::INCOMPATIBLE_VERSION
        );
        // DEL needs no netns
        let mut j: Value = serde_json::from_slice(ok).unwrap();
        j["command"] = json!("DEL");
        j["netns"] = json!("");
        assert!(DaemonRequest::parse(&serde_json::to_vec(&j).unwrap()).is_ok());
    }
}
