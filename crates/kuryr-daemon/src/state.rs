//! What the daemon plugged, on disk: one JSON file per attachment
//! (container id + interface name), written before the first link is made
//! (`Plugging`) and again when the pod is bound (`Plugged`, with the CNI
//! result). A restarted daemon reads them back, so it neither replugs a
//! running pod nor forgets what to remove.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How the pod was bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    /// veth with its host end in OVS (VIFOpenVSwitch).
    Ovs,
    /// veth → Linux bridge → veth pair → OVS (VIFBridge, hybrid plug).
    Hybrid,
    /// macvlan of the VM's NIC (VIFMacvlanNested).
    Macvlan,
    /// VLAN of the VM's NIC (VIFVlanNested).
    Vlan,
}

/// Where an attachment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Links may exist partly (a crash or failure mid-ADD).
    Plugging,
    /// Bound; the CNI result was returned.
    Plugged,
    /// Made ahead of the pod's ADD: host end in OVS, pod end waiting in
    /// the host namespace (`ifname` is its temporary name).
    Prepared,
}

/// One pod interface the daemon plugged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// CNI container id.
    pub container_id: String,
    /// Interface name in the pod.
    pub ifname: String,
    /// Netns path.
    pub netns: String,
    /// Pod namespace.
    pub pod_namespace: String,
    /// Pod name.
    pub pod_name: String,
    /// Pod UID.
    pub pod_uid: String,
    /// Binding driver.
    pub driver: Driver,
    /// Neutron port id.
    pub port_id: String,
    /// Host-side links made (veth end, bridge, veth pair), in creation order.
    pub host_links: Vec<String>,
    /// OVS port (host veth end or qvo), if any.
    pub ovs_port: Option<String>,
    /// Phase.
    pub phase: Phase,
    /// The CNI result returned for ADD.
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    /// The CNI network (`name` of its configuration) the attachment was
    /// made for: a CNI GC of another network never touches it. Empty for
    /// attachments made ahead of a pod and in records of older versions
    /// (CNI GC leaves those alone).
    #[serde(default)]
    pub network: String,
}

impl Attachment {
    /// Key of the attachment: `<container id>/<ifname>`.
    pub fn key(&self) -> String {
        key(&self.container_id, &self.ifname)
    }
}

/// The key of an attachment.
pub fn key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// A state file that cannot be written or read.
#[derive(Debug, thiserror::Error)]
#[error("state {path}: {err}")]
pub struct StateError {
    /// File.
    pub path: String,
    /// Cause.
    pub err: String,
}

/// The state directory and its contents in memory.
pub struct Store {
    dir: PathBuf,
    mem: Mutex<BTreeMap<String, Attachment>>,
}

/// A container id usable in a file name (CNI allows alphanumerics, `_`, `.`, `-`).
pub fn valid_container_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Store {
    /// Opens (creating) `dir` and reads every attachment in it; unreadable
    /// files are reported and skipped (renamed `*.bad`).
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let err = |e: std::io::Error| StateError {
            path: dir.display().to_string(),
            err: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut mem = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(err)? {
            let p = entry.map_err(err)?.path();
            let ext = p.extension().and_then(|e| e.to_str());
            if !matches!(ext, Some("json" | "plugging" | "prepared")) {
                continue;
            }
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Attachment>(&b).map_err(|e| e.to_string()))
            {
                Ok(a) => {
                    // a finished record wins over an intent left beside it
                    let keep = mem
                        .get(&a.key())
                        .is_none_or(|o: &Attachment| o.phase == Phase::Plugging);
                    if keep {
                        mem.insert(a.key(), a);
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "unreadable state file; set aside as .bad");
                    let _ = std::fs::rename(&p, p.with_extension("bad"));
                }
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            mem: Mutex::new(mem),
        })
    }

    fn file(&self, container_id: &str, ifname: &str, phase: Phase) -> PathBuf {
        let ext = match phase {
            Phase::Plugging => "plugging",
            Phase::Plugged => "json",
            Phase::Prepared => "prepared",
        };
        self.dir.join(format!("{container_id}_{ifname}.{ext}"))
    }

    /// Records `a`: written to a temporary file and renamed to a name of
    /// its phase (`.plugging`, `.json`), then the other phase's file goes.
    /// The rename never replaces a file (ext4 flushes data on a replacing
    /// rename, which costs milliseconds on every pod start).
    pub fn put(&self, a: &Attachment) -> Result<(), StateError> {
        let path = self.file(&a.container_id, &a.ifname, a.phase);
        let other = self.file(
            &a.container_id,
            &a.ifname,
            match a.phase {
                Phase::Plugging => Phase::Plugged,
                Phase::Plugged | Phase::Prepared => Phase::Plugging,
            },
        );
        let tmp = path.with_extension("tmp");
        let err = |e: std::io::Error| StateError {
            path: path.display().to_string(),
            err: e.to_string(),
        };
        let body = serde_json::to_vec_pretty(a).expect("attachment serialises");
        std::fs::write(&tmp, body).map_err(err)?;
        if a.phase != Phase::Plugging {
            // the finished record lands before the intent goes
            std::fs::rename(&tmp, &path).map_err(err)?;
            let _ = std::fs::remove_file(&other);
        } else {
            let _ = std::fs::remove_file(&other);
            std::fs::rename(&tmp, &path).map_err(err)?;
        }
        self.mem
            .lock()
            .expect("state lock")
            .insert(a.key(), a.clone());
        Ok(())
    }

    /// Forgets an attachment (a missing one is fine).
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<(), StateError> {
        for phase in [Phase::Plugging, Phase::Plugged, Phase::Prepared] {
            let path = self.file(container_id, ifname, phase);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StateError {
                        path: path.display().to_string(),
                        err: e.to_string(),
                    });
                }
            }
        }
        self.mem
            .lock()
            .expect("state lock")
            .remove(&key(container_id, ifname));
        Ok(())
    }

    /// The attachment of `container_id` / `ifname`.
    pub fn get(&self, container_id: &str, ifname: &str) -> Option<Attachment> {
        self.mem
            .lock()
            .expect("state lock")
            .get(&key(container_id, ifname))
            .cloned()
    }

    /// The attachments matching `f` (cloned; the rest are not).
    pub fn filter(&self, f: impl Fn(&Attachment) -> bool) -> Vec<Attachment> {
        self.mem
            .lock()
            .expect("state lock")
            .values()
            .filter(|a| f(a))
            .cloned()
            .collect()
    }

    /// Whether any attachment matches `f` (nothing is cloned).
    pub fn any(&self, f: impl Fn(&Attachment) -> bool) -> bool {
        self.mem.lock().expect("state lock").values().any(f)
    }

    /// How many attachments there are.
    pub fn len(&self) -> usize {
        self.mem.lock().expect("state lock").len()
    }

    /// There are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every attachment.
    pub fn all(&self) -> Vec<Attachment> {
        self.mem
            .lock()
            .expect("state lock")
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(cid: &str) -> Attachment {
        Attachment {
            container_id: cid.into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            pod_namespace: "default".into(),
            pod_name: "p".into(),
            pod_uid: "u".into(),
            driver: Driver::Ovs,
            port_id: "port".into(),
            host_links: vec!["tapport".into()],
            ovs_port: Some("tapport".into()),
            phase: Phase::Plugging,
            result: None,
            network: "kuryr".into(),
        }
    }

    #[test]
    fn survives_a_restart_and_sets_bad_files_aside() {
        let dir = std::env::temp_dir().join(format!("kuryr-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open(&dir).unwrap();
        s.put(&att("c1")).unwrap();
        let mut b = att("c2");
        b.phase = Phase::Plugged;
        s.put(&b).unwrap();
        std::fs::write(dir.join("junk_eth0.json"), b"{not json").unwrap();
        assert!(dir.join("c1_eth0.plugging").exists());
        assert!(dir.join("c2_eth0.json").exists());
        // an intent left beside a finished record loses to it
        std::fs::write(
            dir.join("c2_eth0.plugging"),
            serde_json::to_vec(&att("c2")).unwrap(),
        )
        .unwrap();
        let s2 = Store::open(&dir).unwrap();
        assert_eq!(s2.all().len(), 2);
        assert_eq!(s2.get("c2", "eth0").unwrap().phase, Phase::Plugged);
        assert_eq!(s2.filter(|a| a.container_id == "c1").len(), 1);
        assert!(s2.any(|a| a.phase == Phase::Plugged));
        assert_eq!(s2.len(), 2);
        assert!(dir.join("junk_eth0.bad").exists());
        s2.remove("c1", "eth0").unwrap();
        s2.remove("c1", "eth0").unwrap();
        // plugged: the intent file is gone
        let mut c1 = att("c1");
        c1.phase = Phase::Plugged;
        s2.put(&att("c1")).unwrap();
        s2.put(&c1).unwrap();
        assert!(!dir.join("c1_eth0.plugging").exists());
        s2.remove("c1", "eth0").unwrap();
        assert_eq!(Store::open(&dir).unwrap().all().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn container_ids_are_checked() {
        assert!(valid_container_id("abc-DEF_1.2"));
        assert!(!valid_container_id(""));
        assert!(!valid_container_id("../etc"));
        assert!(!valid_container_id("a/b"));
        assert!(!valid_container_id(".hidden"));
    }
}
