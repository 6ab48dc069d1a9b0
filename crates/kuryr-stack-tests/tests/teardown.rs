//! `stack/stack down` leaves nothing behind: no process, network namespace,
//! link, mount or listening port the stack (or a test) made, no iptables
//! chain of Neutron's agents, and the host's bridge-netfilter sysctls as
//! they were (the ML2/OVS `iptables_hybrid` firewall sets them). Runs the real
//! `down`, so it goes last, on its own:
//! `cargo test -p kuryr-stack-tests --features teardown --test teardown`.
#![cfg(feature = "teardown")]

use anyhow::Context;
use kuryr_stack_tests::cmd::{output, run};
use kuryr_stack_tests::env::DEFAULT_HOME;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn lines(s: &str) -> BTreeSet<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn read_set(p: &Path) -> anyhow::Result<BTreeSet<String>> {
    Ok(lines(
        &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
    ))
}

fn links() -> anyhow::Result<BTreeSet<String>> {
    Ok(run(&["ip", "-o", "link", "show"])?
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect())
}

fn netns() -> anyhow::Result<BTreeSet<String>> {
    Ok(run(&["ip", "netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Mount points, without iproute2's own: the first `ip netns add` on a
/// machine turns the netns directory into a shared bind mount of itself
/// and nothing ever undoes it (it is not the stack's, and harmless). Each
/// namespace's own mount (`/run/netns/<name>`) still counts.
fn mounts() -> anyhow::Result<BTreeSet<String>> {
    Ok(std::fs::read_to_string("/proc/self/mounts")?
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| !is_netns_dir(m))
        .map(str::to_owned)
        .collect())
}

fn is_netns_dir(mount_point: &str) -> bool {
    matches!(mount_point, "/run/netns" | "/var/run/netns")
}

#[test]
fn only_the_netns_directory_itself_is_ignored() {
    assert!(is_netns_dir("/run/netns") && is_netns_dir("/var/run/netns"));
    assert!(!is_netns_dir("/run/netns/cni-1234") && !is_netns_dir("/run"));
}

fn ports() -> anyhow::Result<BTreeSet<String>> {
    Ok(run(&["ss", "-Hltn"])?
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.rsplit(':').next())
        .map(str::to_owned)
        .collect())
}

/// Chains named `neutron-*` in the host's tables (the OVS agent's hybrid
/// firewall and the L3 agent leave them on exit).
fn neutron_chains() -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for cmd in ["iptables", "ip6tables"] {
        for table in ["filter", "nat", "mangle", "raw"] {
            let Ok(out) = output(&[cmd, "-t", table, "-S"]) else {
                continue;
            };
            if !out.status.success() {
                continue;
            }
            found.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.starts_with("-N neutron-"))
                    .map(|l| format!("{cmd} -t {table}: {l}")),
            );
        }
    }
    Ok(found)
}

/// `name=value` lines of the sysctls the stack saved before changing them.
fn saved_sysctls(state: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let p = state.join("bridge-nf.saved");
    if !p.exists() {
        return Ok(Vec::new());
    }
    Ok(std::fs::read_to_string(&p)?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

/// Processes whose command line or working directory mentions `dir`.
fn processes_under(dir: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let cwd = std::fs::read_link(e.path().join("cwd")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'));
        if !zombie && (cmd.contains(dir) || cwd.starts_with(dir)) {
            found.push(format!("{pid}: {}", cmd.trim()));
        }
    }
    found
}

#[test]
fn stack_down_leaves_nothing_behind() -> anyhow::Result<()> {
    let home =
        PathBuf::from(std::env::var("KURYR_STACK_HOME").unwrap_or_else(|_| DEFAULT_HOME.into()));
    let state = home.join("state");
    anyhow::ensure!(
        state.join("components").exists(),
        "the stack is not up ({} missing): nothing to tear down",
        state.join("components").display()
    );
    let baseline = home.join("baseline");
    let (base_links, base_netns, base_mounts, base_ports) = (
        read_set(&baseline.join("links"))?,
        read_set(&baseline.join("netns"))?,
        read_set(&baseline.join("mounts"))?,
        read_set(&baseline.join("ports"))?,
    );
    // what the stack runs and made, to check each is gone afterwards
    let up_ports: BTreeSet<String> = ports()?.difference(&base_ports).cloned().collect();
    let up_links: BTreeSet<String> = links()?.difference(&base_links).cloned().collect();
    assert!(
        !processes_under(&state.to_string_lossy()).is_empty(),
        "nothing of the stack is running"
    );
    assert!(!up_ports.is_empty(), "the stack listens on no port");
    eprintln!("stack ports {up_ports:?}, links {up_links:?}");
    let sysctls = saved_sysctls(&state)?;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../stack/stack");
    let out = output(&[script.to_string_lossy().as_ref(), "down"])?;
    assert!(
        out.status.success(),
        "stack down failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let left = processes_under(&state.to_string_lossy());
    assert!(left.is_empty(), "processes left: {left:#?}");
    let now_ports = ports()?;
    let still: Vec<_> = up_ports.intersection(&now_ports).collect();
    assert!(still.is_empty(), "ports still listening: {still:?}");
    let new_links: Vec<_> = links()?.difference(&base_links).cloned().collect();
    assert!(new_links.is_empty(), "links left: {new_links:?}");
    let new_netns: Vec<_> = netns()?.difference(&base_netns).cloned().collect();
    assert!(
        new_netns.is_empty(),
        "network namespaces left: {new_netns:?}"
    );
    let new_mounts: Vec<_> = mounts()?.difference(&base_mounts).cloned().collect();
    assert!(new_mounts.is_empty(), "mounts left: {new_mounts:?}");
    let chains = neutron_chains()?;
    assert!(
        chains.is_empty(),
        "Neutron iptables chains left: {chains:#?}"
    );
    for (k, was) in &sysctls {
        let now = run(&["sysctl", "-n", k])?;
        assert_eq!(now.trim(), was, "sysctl {k} not restored");
    }
    assert!(!state.exists(), "state dir {} still there", state.display());
    Ok(())
}
