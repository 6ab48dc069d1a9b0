//! Network namespaces, veth pairs and OVS ports that remove themselves when
//! dropped, so a failing test leaves nothing behind.

use crate::cmd::run;
use crate::unique_name;

/// A network namespace created by the test; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under /var/run/netns.
    pub name: String,
}

impl Netns {
    /// Creates a fresh namespace with `lo` up.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let name = unique_name(prefix, 30);
        run(&["ip", "netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip -n <ns> ARGS...`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Runs a command inside the namespace (`ip netns exec`).
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run(&["ip", "netns", "del", &self.name]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// A veth pair whose host end stays in the root namespace and whose peer was
/// moved into a [`Netns`]; deleting the host end (on drop) deletes both.
#[derive(Debug)]
pub struct Veth {
    /// Name of the end in the root namespace.
    pub host: String,
    /// Name of the end inside the namespace.
    pub inner: String,
}

impl Veth {
    /// Creates the pair with its peer inside `ns`, both ends up.
    pub fn new(ns: &Netns, inner: &str) -> anyhow::Result<Self> {
        let host = unique_name("kst", 15);
        run(&[
            "ip", "link", "add", &host, "type", "veth", "peer", "name", inner, "netns", &ns.name,
        ])?;
        let v = Self {
            host,
            inner: inner.to_owned(),
        };
        run(&["ip", "link", "set", &v.host, "up"])?;
        ns.ip(&["link", "set", inner, "up"])?;
        Ok(v)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // already gone when its namespace was deleted first: not an error
        if std::path::Path::new(&format!("/sys/class/net/{}", self.host)).exists()
            && let Err(e) = run(&["ip", "link", "del", &self.host])
        {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// A port the test added to an OVS bridge; removed on drop.
#[derive(Debug)]
pub struct OvsPort {
    db: String,
    /// Port (and interface) name.
    pub name: String,
}

impl OvsPort {
    /// Adds `name` to `bridge` with the given `external_ids` in one
    /// transaction, the way os-vif and kuryr-daemon plug a VIF.
    pub fn add(
        ovsdb_sock: &str,
        bridge: &str,
        name: &str,
        external_ids: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let db = format!("--db=unix:{ovsdb_sock}");
        let mut args: Vec<String> = vec![
            "ovs-vsctl".into(),
            db.clone(),
            "--timeout=20".into(),
            "add-port".into(),
            bridge.into(),
            name.into(),
            "--".into(),
            "set".into(),
            "Interface".into(),
            name.into(),
        ];
        args.extend(
            external_ids
                .iter()
                .map(|(k, v)| format!("external_ids:{k}={v}")),
        );
        run(&args)?;
        Ok(Self {
            db,
            name: name.into(),
        })
    }

    /// `ovs-vsctl get Interface <name> <column>`.
    pub fn get(&self, column: &str) -> anyhow::Result<String> {
        Ok(run(&[
            "ovs-vsctl",
            &self.db,
            "get",
            "Interface",
            &self.name,
            column,
        ])?
        .trim()
        .to_owned())
    }
}

impl Drop for OvsPort {
    fn drop(&mut self) {
        if let Err(e) = run(&[
            "ovs-vsctl",
            &self.db,
            "--timeout=20",
            "--if-exists",
            "del-port",
            &self.name,
        ]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// An OVS bridge the test created (a trunk bridge `tbr-...`); deleted on drop.
#[derive(Debug)]
pub struct OvsBridge {
    db: String,
    /// Bridge name.
    pub name: String,
}

impl OvsBridge {
    /// Creates `name` on the userspace datapath (no kernel module here).
    pub fn add(ovsdb_sock: &str, name: &str) -> anyhow::Result<Self> {
        let db = format!("--db=unix:{ovsdb_sock}");
        run(&[
            "ovs-vsctl",
            &db,
            "--timeout=20",
            "add-br",
            name,
            "--",
            "set",
            "Bridge",
            name,
            "datapath_type=netdev",
        ])?;
        Ok(Self {
            db,
            name: name.into(),
        })
    }
}

impl Drop for OvsBridge {
    fn drop(&mut self) {
        if let Err(e) = run(&[
            "ovs-vsctl",
            &self.db,
            "--timeout=20",
            "--if-exists",
            "del-br",
            &self.name,
        ]) {
            eprintln!("cleanup: {e:#}");
        }
        // the netdev datapath leaves the bridge's internal port as a tap
        if std::path::Path::new(&format!("/sys/class/net/{}", self.name)).exists() {
            let _ = run(&["ip", "link", "del", &self.name]);
        }
    }
}
