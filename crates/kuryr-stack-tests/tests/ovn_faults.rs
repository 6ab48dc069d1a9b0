//! OVN's daemons killed and restarted under running ports: what is wired
//! keeps its traffic, and ports plugged meanwhile go ACTIVE once the daemon
//! is back. Kills stack processes, so it is a test binary of its own (cargo
//! runs test binaries one after the other). Needs the ovn backend and root.
#![cfg(feature = "stack")]

use anyhow::{Context, ensure};
use kuryr_stack_tests::cmd::run;
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::openstack::{Session, with_undo};
use kuryr_stack_tests::plug::{Net, VmPort, wait_port_active};
use kuryr_stack_tests::skip;
use std::path::Path;

/// SIGKILLs the stack's process `name` (by its pid file).
fn kill(env: &StackEnv, name: &str) -> anyhow::Result<()> {
    let pidfile = env.state.join("run").join(format!("{name}.pid"));
    let pid = std::fs::read_to_string(&pidfile)
        .with_context(|| format!("reading {}", pidfile.display()))?;
    run(&["kill", "-KILL", pid.trim()])?;
    // gone, not a zombie: its pid has no /proc/<pid>/stat with state != Z
    for _ in 0..100 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        if stat
            .rsplit_once(") ")
            .is_none_or(|(_, r)| r.starts_with('Z'))
        {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    anyhow::bail!("{name} (pid {}) still alive after SIGKILL", pid.trim())
}

/// Restarts what is not running, the way an operator would: `stack up`.
fn stack_up() -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../stack/stack");
    run(&[script.to_string_lossy().as_ref(), "up", "--openstack"])?;
    Ok(())
}

#[tokio::test]
async fn ovn_controller_and_northd_restarts_keep_traffic_and_wire_new_ports() -> anyhow::Result<()>
{
    let env = StackEnv::load()?;
    env.require("openstack")?;
    if env.get("KURYR_STACK_NEUTRON_BACKEND")? != "ovn" {
        skip("ovn daemons restarted", "needs the ovn Neutron backend");
        return Ok(());
    }
    let s = Session::login(&env).await?;
    with_undo(&s, async |undo| {
        let net = Net::create(&s, undo, "10.231.5.0/24", None).await?;
        let a = VmPort::plug(&s, undo, &env, &net, None).await?;
        let b = VmPort::plug(&s, undo, &env, &net, None).await?;
        wait_port_active(&s, &a.id).await?;
        wait_port_active(&s, &b.id).await?;
        ensure!(a.pings(&b.ip), "a cannot reach b before any fault");

        let mut later = Vec::new();
        for daemon in ["ovn-controller", "ovn-northd"] {
            kill(&env, daemon)?;
            // the flows already in ovs-vswitchd carry on without it
            ensure!(a.pings(&b.ip), "a lost b with {daemon} dead");
            // a port plugged now is wired once the daemon is back
            let c = VmPort::plug(&s, undo, &env, &net, None).await?;
            stack_up().with_context(|| format!("restarting {daemon} with `stack up`"))?;
            wait_port_active(&s, &c.id)
                .await
                .with_context(|| format!("port plugged while {daemon} was dead"))?;
            ensure!(
                a.pings(&c.ip),
                "a cannot reach the port plugged while {daemon} was dead"
            );
            ensure!(a.pings(&b.ip), "a lost b after {daemon} came back");
            later.push(c);
        }
        drop((later, a, b));
        Ok(())
    })
    .await
}
