//! Running commands (ip, ovs-vsctl, kubectl, the stack script) with errors
//! that name the command and carry its stderr.

use anyhow::{Context, bail};
use std::process::{Command, Output};

/// Runs `args[0]` with the rest as arguments; returns stdout on exit 0,
/// otherwise an error with the command line, exit status and stderr.
pub fn run<S: AsRef<str>>(args: &[S]) -> anyhow::Result<String> {
    let out = output(args)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            line(args),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the command and returns its full output whatever the exit status.
pub fn output<S: AsRef<str>>(args: &[S]) -> anyhow::Result<Output> {
    let (prog, rest) = args.split_first().context("empty command")?;
    Command::new(prog.as_ref())
        .args(rest.iter().map(|a| a.as_ref()))
        .output()
        .with_context(|| format!("cannot run `{}`", line(args)))
}

/// The command line as one string, for messages.
pub fn line<S: AsRef<str>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_returns_stdout_and_reports_failures() {
        assert_eq!(run(&["echo", "hi"]).unwrap(), "hi\n");
        let err = run(&["sh", "-c", "echo nope >&2; exit 3"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("sh -c") && msg.contains("nope") && msg.contains('3'),
            "{msg}"
        );
        let err = run(&["/nonexistent/binary"]).unwrap_err();
        assert!(err.to_string().contains("cannot run"), "{err}");
    }
}
