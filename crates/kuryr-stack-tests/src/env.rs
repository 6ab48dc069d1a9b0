//! The env file `stack/stack up` writes: endpoints, credentials and paths of
//! the running stack.

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default `KURYR_STACK_HOME` of `stack/stack`.
pub const DEFAULT_HOME: &str = "/var/tmp/kuryr-stack";

/// The running stack as its env file describes it.
#[derive(Debug, Clone)]
pub struct StackEnv {
    vars: BTreeMap<String, String>,
    /// `$KURYR_STACK_HOME/state`.
    pub state: PathBuf,
    components: Vec<String>,
}

impl StackEnv {
    /// Reads `$KURYR_STACK_HOME/state/env` (by sourcing it in bash, so the
    /// file stays a plain shell file) and the list of running components.
    pub fn load() -> anyhow::Result<Self> {
        let home = std::env::var("KURYR_STACK_HOME").unwrap_or_else(|_| DEFAULT_HOME.into());
        let state = Path::new(&home).join("state");
        let file = state.join("env");
        if !file.exists() {
            bail!(
                "The test stack is not up ({} is missing): run `sudo stack/stack up` first",
                file.display()
            );
        }
        let out = crate::cmd::run(&[
            "bash",
            "-c",
            ". \"$1\" >/dev/null && env -0",
            "stack-env",
            &file.to_string_lossy(),
        ])
        .context("sourcing the stack's env file")?;
        let components = std::fs::read_to_string(state.join("components"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect();
        Ok(Self {
            vars: parse_env0(&out),
            state,
            components,
        })
    }

    /// The value of `key`, or an error naming it and the component that sets it.
    pub fn get(&self, key: &str) -> anyhow::Result<&str> {
        self.vars.get(key).map(String::as_str).with_context(|| {
            format!(
                "{key} is not set in {}/env: is the component that sets it up? (`stack/stack status`)",
                self.state.display()
            )
        })
    }

    /// Every variable whose name starts with `prefix` (e.g. `OS_`, the
    /// OpenStack credentials a child process needs).
    pub fn vars_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.vars
            .iter()
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether `component` (ovs, openstack, k8s, kubelet) was brought up.
    pub fn has(&self, component: &str) -> bool {
        self.components.iter().any(|c| c == component)
    }

    /// Fails with a clear message unless `component` is up.
    pub fn require(&self, component: &str) -> anyhow::Result<()> {
        if !self.has(component) {
            bail!(
                "The stack component `{component}` is not up (running: {:?}): run `sudo stack/stack up --{component}`",
                self.components
            );
        }
        Ok(())
    }
}

/// Parses `env -0` output: NUL-separated `KEY=VALUE` entries.
pub fn parse_env0(raw: &str) -> BTreeMap<String, String> {
    raw.split('\0')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| !k.is_empty() && !k.contains('\n'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nul_separated_environment() {
        let m = parse_env0("A=1\0B=x=y\0MULTI=line1\nline2\0\0junk\0");
        assert_eq!(m.get("A").map(String::as_str), Some("1"));
        assert_eq!(m.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(m.get("MULTI").map(String::as_str), Some("line1\nline2"));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn missing_variable_names_key_and_file() {
        let env = StackEnv {
            vars: BTreeMap::new(),
            state: PathBuf::from("/x/state"),
            components: vec!["ovs".into()],
        };
        let e = env.get("OS_AUTH_URL").unwrap_err().to_string();
        assert!(
            e.contains("OS_AUTH_URL") && e.contains("/x/state/env"),
            "{e}"
        );
        assert!(env.has("ovs") && !env.has("k8s"));
        assert!(
            env.require("k8s")
                .unwrap_err()
                .to_string()
                .contains("--k8s")
        );
    }
}
