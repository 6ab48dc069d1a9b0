//! kuryr-cni: the CNI plugin binary kubelet execs. Reads the network config
//! on stdin and `CNI_*` from the environment, hands the request to
//! kuryr-daemon over its unix socket (HTTP/1.1, `POST /cni`) and prints the
//! CNI result or a CNI error. `--help` and `--version` for humans.

use kuryr_cni::{CallError, Daemon, DaemonAnswer, DaemonRequest, handle};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

struct UnixDaemon;

impl Daemon for UnixDaemon {
    fn call(
        &mut self,
        socket: &str,
        timeout_secs: u64,
        req: &DaemonRequest,
    ) -> Result<DaemonAnswer, CallError> {
        let mut s = UnixStream::connect(socket)
            .map_err(|e| CallError::Unreachable(format!("cannot connect: {e}")))?;
        // past the connect, what goes wrong is the daemon not answering
        let no = |e: String| CallError::NoAnswer(e);
        let t = Some(Duration::from_secs(timeout_secs.max(1)));
        s.set_read_timeout(t)
            .and_then(|_| s.set_write_timeout(t))
            .map_err(|e| no(e.to_string()))?;
        let body = serde_json::to_vec(req).map_err(|e| no(e.to_string()))?;
        let head = format!(
            "POST /cni HTTP/1.1\r\nHost: kuryr-daemon\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())
            .and_then(|_| s.write_all(&body))
            .map_err(|e| no(format!("sending: {e}")))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .map_err(|e| no(format!("no answer within {timeout_secs}s: {e}")))?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| no("malformed answer (no header end)".into()))?;
        let head = String::from_utf8_lossy(&raw[..split]);
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                no(format!(
                    "malformed status line: {}",
                    head.lines().next().unwrap_or_default()
                ))
            })?;
        let body = &raw[split + 4..];
        let body = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(body).map_err(|e| no(format!("answer is not JSON: {e}")))?
        };
        Ok(DaemonAnswer { status, body })
    }
}

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("-h" | "--help") => {
            println!(
                "kuryr-cni {}: the kuryr-rs CNI plugin (CNI {}).\n\
                 Run by the container runtime with CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS\n\
                 and the network configuration on stdin; forwards to kuryr-daemon (config key daemonSocket,\n\
                 default {}). CNI_COMMAND=VERSION prints the supported versions.",
                env!("CARGO_PKG_VERSION"),
                kuryr_cni::SUPPORTED_VERSIONS.join(", "),
                kuryr_cni::DEFAULT_SOCKET
            );
            return;
        }
        Some("-V" | "--version") => {
            println!("kuryr-cni {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        _ => {}
    }
    let mut stdin = Vec::new();
    if std::env::var_os("CNI_COMMAND").is_some_and(|c| c != "VERSION") {
        let _ = std::io::stdin().read_to_end(&mut stdin);
    }
    let env = |k: &str| std::env::var(k).ok();
    let (out, rc) = handle(&env, &stdin, &mut UnixDaemon);
    if out != "null" {
        println!("{out}");
    }
    std::process::exit(rc);
}
