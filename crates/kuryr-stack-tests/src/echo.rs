//! The `kst-echo` responder (this crate's binary) run in a test's network
//! namespace, and asking it from another one: who answered is proven by the
//! token the server was given, never by a connection opening.

use crate::cmd::run;
use crate::net::Netns;
use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The `kst-echo` binary next to the running test (`target/<profile>/`),
/// or `KST_ECHO`.
pub fn echo_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("KST_ECHO") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    // tests run from target/<profile>/deps/, binaries sit in target/<profile>/
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join("kst-echo");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!(
        "kst-echo not found next to {}: build it first (cargo build -p kuryr-stack-tests --bins)",
        exe.display()
    )
}

/// `kst-echo serve` running in a namespace; killed on drop.
#[derive(Debug)]
pub struct EchoServer {
    child: Child,
    /// What it answers.
    pub token: String,
}

impl EchoServer {
    /// Starts it in `ns` answering `token` on the given TCP and UDP ports;
    /// returns once every socket is bound.
    pub fn start(ns: &Netns, token: &str, tcp: &[u16], udp: &[u16]) -> anyhow::Result<Self> {
        let bin = echo_bin()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name])
            .arg(&bin)
            .args(["serve", token]);
        for p in tcp {
            cmd.args(["--tcp", &p.to_string()]);
        }
        for p in udp {
            cmd.args(["--udp", &p.to_string()]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} in {}", bin.display(), ns.name))?;
        let mut line = String::new();
        let out = child.stdout.take().context("no stdout")?;
        BufReader::new(out).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "kst-echo in {} did not start: {}",
                ns.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Self {
            child,
            token: token.to_owned(),
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks `addr` (`ip:port`) over `proto` (`tcp`/`udp`) from inside `ns`;
/// the answer, or an error saying what failed (refused, timed out...).
pub fn ask(ns: &Netns, proto: &str, addr: &str) -> anyhow::Result<String> {
    ask_within(ns, proto, addr, 2000)
}

/// The same, giving up after `timeout_ms` (a benchmark polling for the
/// first answer must not wait out a long timeout per try: that would be
/// its resolution).
pub fn ask_within(ns: &Netns, proto: &str, addr: &str, timeout_ms: u32) -> anyhow::Result<String> {
    let bin = echo_bin()?;
    Ok(run(&[
        "ip",
        "netns",
        "exec",
        &ns.name,
        &bin.to_string_lossy(),
        "ask",
        proto,
        addr,
        &timeout_ms.to_string(),
    ])?
    .trim()
    .to_owned())
}

/// The same from the host's own network namespace.
pub fn ask_from_host(proto: &str, addr: &str) -> anyhow::Result<String> {
    let bin = echo_bin()?;
    Ok(run(&[&bin.to_string_lossy(), "ask", proto, addr, "2000"])?
        .trim()
        .to_owned())
}
