//! Driving a CNI plugin the way a container runtime does, through
//! `cnitool` -- the reference runtime of containernetworking/cni, built on
//! libcni as containerd and CRI-O are -- for the conformance tests of
//! kuryr-cni: a plugin dir and a config dir of the test's own, a recording
//! wrapper that keeps what libcni sent the plugin and what it answered, and
//! `cnitool add|check|del|status|gc`.
//!
//! `cnitool` is built by `stack/stack build-cnitool` (Go modules pinned in
//! `stack/cnitool/go.mod`, cached in `$KURYR_STACK_HOME/cache/cnitool`); no
//! running stack is needed. libcni keeps the result of a successful ADD in
//! `/var/lib/cni/results` until the DEL (cnitool cannot move that cache
//! dir); its container id is `cnitool-` plus a hash of the netns path.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The path of the `cnitool` binary: runs `stack/stack build-cnitool` once
/// per process (it builds only when the cache has no binary for
/// `stack/cnitool/go.mod` + `go.sum`). Panics with the script's output when
/// the build fails (no Go, no module proxy).
pub fn cnitool_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../stack/stack");
        let out = Command::new(&script)
            .arg("build-cnitool")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout.lines().last().unwrap_or_default().trim();
        if !out.status.success() || path.is_empty() || !Path::new(path).is_file() {
            panic!(
                "`{} build-cnitool` failed ({}): {}\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                stdout.trim()
            );
        }
        PathBuf::from(path)
    })
    .clone()
}

/// Runs `cnitool OP NET_NAME NETNS_PATH` (OP: add, check, del, status, gc)
/// with `NETCONFPATH=conf_dir` and `CNI_PATH=plugin_dir`; `CNI_ARGS`,
/// `CAP_ARGS` and `CNI_IFNAME` are unset unless `extra_env` sets them (it may
/// set any other variable too). Returns the output whatever the exit status:
/// a failing plugin's CNI error ends up on stderr as `msg; details` (libcni
/// keeps the code to itself; see [`install_recording_plugin`] for that).
pub fn cnitool(
    op: &str,
    net_name: &str,
    netns_path: &str,
    conf_dir: &Path,
    plugin_dir: &Path,
    extra_env: &[(&str, &str)],
) -> Output {
    let tool = cnitool_path();
    let mut cmd = Command::new(&tool);
    cmd.args([op, net_name, netns_path])
        .env("NETCONFPATH", conf_dir)
        .env("CNI_PATH", plugin_dir)
        .env_remove("CNI_ARGS")
        .env_remove("CAP_ARGS")
        .env_remove("CNI_IFNAME")
        .envs(extra_env.iter().copied());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()))
}

/// A directory under the system temp dir, removed with all it holds on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/<prefix><pid>x<n>`.
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(crate::unique_name(prefix, 40));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path/name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes `conf_dir/<file_stem>.conflist`: network `name` of `cni_version`
/// with `plugins` (each a plugin config with at least `type`). Creates the
/// dir. cnitool finds the network by `name` among all `*.conflist` there.
pub fn write_conflist(
    conf_dir: &Path,
    file_stem: &str,
    name: &str,
    cni_version: &str,
    plugins: &[Value],
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(conf_dir)?;
    let path = conf_dir.join(format!("{file_stem}.conflist"));
    let list = serde_json::json!({"cniVersion": cni_version, "name": name, "plugins": plugins});
    std::fs::write(&path, serde_json::to_vec_pretty(&list)?)?;
    Ok(path)
}

/// Makes `binary` available as plugin `type` `name` in `plugin_dir` (a
/// symlink; the dir is created).
pub fn install_plugin(plugin_dir: &Path, name: &str, binary: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(plugin_dir)?;
    let link = plugin_dir.join(name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(binary, &link)?;
    Ok(link)
}

/// Like [`install_plugin`], but through a wrapper script that records each
/// invocation in `record_dir` (the `CNI_*` environment, stdin, stdout and
/// exit status; read them with [`recorded`]) and then answers exactly as
/// `binary` did. This shows what libcni really sent and what the plugin
/// answered, e.g. the CNI error code that cnitool does not print.
pub fn install_recording_plugin(
    plugin_dir: &Path,
    name: &str,
    binary: &Path,
    record_dir: &Path,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(plugin_dir)?;
    std::fs::create_dir_all(record_dir)?;
    let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let script = format!(
        r#"#!/bin/sh
# records one CNI invocation, then answers as the real plugin did
d={rec}/$(date +%s%N)-$$
env | grep -E '^(CNI_|CAP_)' > "$d.env"
cat > "$d.stdin"
{bin} < "$d.stdin" > "$d.stdout"
rc=$?
echo $rc > "$d.rc"
cat "$d.stdout"
exit $rc
"#,
        rec = q(record_dir),
        bin = q(binary),
    );
    let path = plugin_dir.join(name);
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// One plugin invocation recorded by [`install_recording_plugin`].
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The `CNI_*` and `CAP_*` variables the plugin got.
    pub env: BTreeMap<String, String>,
    /// Its stdin (the config libcni made for this plugin).
    pub stdin: String,
    /// What it printed on stdout.
    pub stdout: String,
    /// Its exit status.
    pub rc: i32,
}

impl Invocation {
    /// `CNI_COMMAND`.
    pub fn command(&self) -> &str {
        self.env.get("CNI_COMMAND").map_or("", String::as_str)
    }

    /// stdin as JSON (panics if it is not).
    pub fn stdin_json(&self) -> Value {
        serde_json::from_str(&self.stdin)
            .unwrap_or_else(|e| panic!("plugin stdin is not JSON ({e}): {}", self.stdin))
    }

    /// stdout as JSON (panics if it is not).
    pub fn stdout_json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("plugin stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// The invocations recorded in `record_dir`, oldest first.
pub fn recorded(record_dir: &Path) -> Vec<Invocation> {
    let mut stems: Vec<PathBuf> = std::fs::read_dir(record_dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "rc"))
                .map(|p| p.with_extension(""))
                .collect()
        })
        .unwrap_or_default();
    stems.sort();
    let read = |stem: &Path, ext: &str| {
        std::fs::read_to_string(stem.with_extension(ext)).unwrap_or_default()
    };
    stems
        .iter()
        .map(|s| Invocation {
            env: read(s, "env")
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            stdin: read(s, "stdin"),
            stdout: read(s, "stdout"),
            rc: read(s, "rc").trim().parse().unwrap_or(-1),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_wrapper_keeps_what_the_plugin_saw_and_said() {
        let tmp = TempDir::new("kst-cni-rec").unwrap();
        let fake = tmp.join("fake");
        std::fs::write(
            &fake,
            "#!/bin/sh\ncat >/dev/null\necho '{\"code\":11}'\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let rec = tmp.join("rec");
        let w = install_recording_plugin(&tmp.join("bin"), "fake", &fake, &rec).unwrap();
        let mut child = Command::new(&w)
            .env("CNI_COMMAND", "ADD")
            .env("CNI_ARGS", "K8S_POD_NAME=a")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"{\"cniVersion\":\"1.1.0\"}")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            r#"{"code":11}"#
        );
        let inv = recorded(&rec);
        assert_eq!(inv.len(), 1);
        assert_eq!((inv[0].command(), inv[0].rc), ("ADD", 1));
        assert_eq!(inv[0].env["CNI_ARGS"], "K8S_POD_NAME=a");
        assert_eq!(inv[0].stdin_json()["cniVersion"], "1.1.0");
        assert_eq!(inv[0].stdout_json()["code"], 11);
        let conf = write_conflist(
            &tmp.join("net.d"),
            "10-k",
            "k",
            "1.1.0",
            &[serde_json::json!({"type": "fake"})],
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(conf).unwrap()).unwrap();
        assert_eq!(v["plugins"][0]["type"], "fake");
        let dir = tmp.path().to_owned();
        drop(tmp);
        assert!(!dir.exists());
    }
}
