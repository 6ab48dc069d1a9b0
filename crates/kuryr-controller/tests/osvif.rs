//! os-vif compatibility against the real Python os-vif and kuryr-kubernetes
//! 10.0.0 from PyPI, not against hand-written fixtures. A KuryrPort written
//! by either side must be read by the other, so kuryr-rs and
//! kuryr-kubernetes' controllers and daemons can take over each other's
//! pods.
//!
//! - [`python_reads_every_vif_kuryr_rs_writes`]: one VIF of each kind the
//!   controller writes (`VIFOpenVSwitch`, `VIFBridge` for a hybrid plug,
//!   `VIFVlanNested`, `VIFMacvlanNested`), built as the pod handler builds
//!   them (`Drivers::vif` of the driver, the VIF the pod handler stores, not ACTIVE
//!   yet, a `KuryrPortStatus` of `eth0` serialised as it is patched in), is
//!   read by Python as kuryr-daemon reads it (`obj_from_primitive` with
//!   kuryr-kubernetes' own VIF classes registered), and every field os-vif
//!   and kuryr-daemon use is set and holds what kuryr-rs meant.
//! - [`kuryr_rs_reads_every_vif_kuryr_kubernetes_writes`]: the same Neutron
//!   ports made into VIFs by kuryr-kubernetes' own conversion code
//!   (`os_vif_util.neutron_to_osvif_vif` on the binding's vif_type: plugin
//!   `ovs` with and without `ovs_hybrid_plug`; the nested-vlan and
//!   nested-macvlan builders) and serialised as its KuryrPort handler
//!   patches them in are read by kuryr-rs's `KuryrPortStatus` into what
//!   Python reads back from them, and into what the Neutron ports say.
//! - [`kuryr_rs_builds_the_vif_kuryr_kubernetes_builds`]: from the same
//!   Neutron port, network and subnets, kuryr-rs's VIF equals
//!   kuryr-kubernetes' one field by field, but for `active` (kuryr-rs
//!   writes every new VIF not ACTIVE and sets it when Neutron says so;
//!   kuryr-kubernetes copies the port's status at that moment).
//!
//! A failure names the VIF (kind and case) and the field, with both values.
//!
//! Python runs in the venv of the peer benchmarks (scripts/lib/peer.sh,
//! `peer_venv`: kuryr-kubernetes==10.0.0 and what it needs, pinned by
//! scripts/peer/constraints.txt): `KURYR_PEER_VENV`, else
//! `$KURYR_STACK_HOME/cache/kuryr-peer/venv` (`/var/tmp/kuryr-stack/...`).
//! The test makes it when it is absent (PyPI access, about a minute; it
//! needs `/usr/bin/python3` with the venv module) and remakes it when the
//! requirements changed; scripts/peer/osvif_roundtrip.py is the Python
//! side. No stack needed:
//!
//! ```text
//! sudo cargo test -p kuryr-controller --features peer --test osvif
//! ```
//!
//! (`sudo` because the venv lives under /var/tmp/kuryr-stack, which is
//! root's; with `KURYR_PEER_VENV` somewhere writable, or the venv already
//! made, no root is needed.)
#![cfg(feature = "peer")]

use kuryr_controller::drivers::{DriverKind, Drivers, pod_mac};
use kuryr_controller::plan::{PortSettings, cluster_tag};
use kuryr_crds::{DEFAULT_IFNAME, KuryrPortStatus, Vif, VifKind};
use kuryr_openstack::types::neutron::{Network, Port, Subnet};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

/// `[neutron_defaults] ovs_bridge` on both sides: not br-int, so a
/// fallback to br-int instead of the configured bridge shows.
const OVS_BRIDGE: &str = "br-kuryr";
const NET: &str = "3f0c9a55-7a2e-4c55-9d1e-6b1f3f0a0001";
const SUBNET4: &str = "5b0c9a55-7a2e-4c55-9d1e-6b1f3f0a0004";
const SUBNET6: &str = "5b0c9a55-7a2e-4c55-9d1e-6b1f3f0a0006";

/// The pod network as Neutron's API shows it.
fn network() -> Value {
    json!({"id": NET, "name": "pods", "mtu": 1442, "status": "ACTIVE",
           "subnets": [SUBNET4, SUBNET6]})
}

/// Its subnets: IPv4 with a gateway, DNS servers and a host route; IPv6
/// without a gateway.
fn subnets() -> Vec<Value> {
    vec![
        json!({"id": SUBNET4, "network_id": NET, "ip_version": 4, "cidr": "10.0.0.0/22",
               "gateway_ip": "10.0.0.1", "dns_nameservers": ["10.0.0.2", "10.0.0.3"],
               "host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.254"}]}),
        json!({"id": SUBNET6, "network_id": NET, "ip_version": 6, "cidr": "fd00:0:0:42::/64",
               "gateway_ip": null, "dns_nameservers": [], "host_routes": []}),
    ]
}

/// One pod port and the driver that placed it.
struct Case {
    /// What it is, for messages.
    what: &'static str,
    driver: DriverKind,
    /// The VLAN of a nested-vlan subport.
    vlan: Option<u16>,
    /// The port as Neutron's API shows it.
    port: Value,
}

fn cases() -> Vec<Case> {
    let salt = cluster_tag("osvif");
    let port = |n: u32, status: &str, ips: Value, binding: Value| {
        let mut p = json!({
            "id": format!("{n}c1d5a7e-{n:04}-4000-8000-00000000000{n}"),
            "network_id": NET,
            "mac_address": pod_mac(&salt, &format!("pod-uid-{n}")),
            "status": status,
            "admin_state_up": true,
            "device_owner": "compute:kuryr",
            "fixed_ips": ips,
        });
        p.as_object_mut()
            .unwrap()
            .extend(binding.as_object().unwrap().clone());
        p
    };
    let dual = |last: u8| {
        json!([{"subnet_id": SUBNET4, "ip_address": format!("10.0.1.{last}")},
               {"subnet_id": SUBNET6, "ip_address": format!("fd00:0:0:42::{last:x}")}])
    };
    let v4 = |last: u8| json!([{"subnet_id": SUBNET4, "ip_address": format!("10.0.2.{last}")}]);
    let bound = |details: Value| {
        json!({"binding:host_id": "worker-1", "binding:vif_type": "ovs",
               "binding:vnic_type": "normal", "binding:vif_details": details})
    };
    // nested ports are not bound (kuryr-rs and kuryr-kubernetes alike)
    let unbound = json!({"binding:vif_type": "unbound", "binding:vnic_type": "normal",
                         "binding:vif_details": {}});
    vec![
        Case {
            what: "VIFOpenVSwitch (ML2/OVN binding, dual stack)",
            driver: DriverKind::NeutronVif,
            vlan: None,
            port: port(
                1,
                "ACTIVE",
                dual(11),
                bound(json!({"port_filter": true, "connectivity": "l2",
                             "bridge_name": "br-int", "datapath_type": "system"})),
            ),
        },
        Case {
            what: "VIFOpenVSwitch (binding without bridge_name: [neutron_defaults] ovs_bridge)",
            driver: DriverKind::NeutronVif,
            vlan: None,
            port: port(
                2,
                "DOWN",
                v4(12),
                bound(json!({"port_filter": true, "ovs_hybrid_plug": false})),
            ),
        },
        Case {
            what: "VIFBridge (ML2/OVS iptables_hybrid: ovs_hybrid_plug, bridge qbr<id>)",
            driver: DriverKind::NeutronVif,
            vlan: None,
            port: port(
                3,
                "DOWN",
                dual(13),
                bound(json!({"port_filter": true, "ovs_hybrid_plug": true,
                             "bridge_name": "br-int", "datapath_type": "system"})),
            ),
        },
        Case {
            what: "VIFBridge (ovs_hybrid_plug, binding without bridge_name: [neutron_defaults] ovs_bridge)",
            driver: DriverKind::NeutronVif,
            vlan: None,
            port: port(
                4,
                "DOWN",
                v4(14),
                bound(json!({"port_filter": true, "ovs_hybrid_plug": true})),
            ),
        },
        Case {
            what: "VIFVlanNested (nested-vlan subport)",
            driver: DriverKind::NestedVlan,
            vlan: Some(3012),
            port: port(5, "DOWN", dual(15), unbound.clone()),
        },
        Case {
            what: "VIFMacvlanNested (nested-macvlan)",
            driver: DriverKind::NestedMacvlan,
            vlan: None,
            port: port(6, "ACTIVE", v4(16), unbound),
        },
    ]
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

/// The controller's drivers of `kind`; only their VIF kinds are used here,
/// so the clients point nowhere. Must run inside a tokio runtime.
fn drivers(kind: DriverKind) -> Drivers {
    let os = kuryr_openstack::Client::new(kuryr_openstack::CloudConfig::password(
        "http://127.0.0.1:9/v3",
        kuryr_openstack::Ident::name("u"),
        "pw",
        kuryr_openstack::Ident::name("p"),
    ))
    .unwrap();
    let kube =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let settings = PortSettings {
        network_id: NET.into(),
        subnet_id: SUBNET4.into(),
        security_groups: vec![],
        project_id: None,
    };
    Drivers::new(kind, os, kube, settings, vec![], "osvif", vec![])
}

/// The VIF the controller's pod handler stores for `c`'s port, with the
/// KuryrPort status as it is patched in (`{"status": status}`).
fn kuryr_rs_vif(c: &Case) -> (Vif, Value) {
    let port: Port = typed(&c.port);
    let subnets: Vec<Subnet> = subnets().iter().map(typed).collect();
    // what handlers::pod stores (Step::CreatePort)
    let vif = drivers(c.driver).vif(
        &port,
        &typed::<Network>(&network()),
        &subnets,
        OVS_BRIDGE,
        c.vlan,
    );
    let status = KuryrPortStatus::default_only(vif.clone());
    let patch = json!({ "status": status });
    (vif, patch["status"].clone())
}

/// What a VIF means, in the shape osvif_roundtrip.py reports what Python
/// read: every field os-vif's and kuryr-kubernetes' code reads, a field
/// absent where it has no value.
fn meaning(v: &Vif) -> Value {
    let subnets: Vec<Value> = v
        .network
        .subnets
        .iter()
        .map(|s| {
            let mut o = json!({"cidr": s.cidr, "dns": s.dns, "ips": s.ips,
                "routes": s.routes.iter().map(|r| json!({"cidr": r.cidr, "gateway": r.gateway}))
                    .collect::<Vec<_>>()});
            if let Some(g) = &s.gateway {
                o["gateway"] = json!(g);
            }
            o
        })
        .collect();
    let mut net = json!({"id": v.network.id, "label": v.network.label, "subnets": subnets});
    if let Some(b) = &v.network.bridge {
        net["bridge"] = json!(b);
    }
    if let Some(m) = v.network.mtu {
        net["mtu"] = json!(m);
    }
    let mut f = json!({
        "class": v.kind.ovo_name(), "id": v.id, "address": v.address, "plugin": v.plugin,
        "active": v.active, "preserve_on_delete": v.preserve_on_delete,
        "has_traffic_filtering": v.has_traffic_filtering, "vif_name": v.vif_name,
        "network": net,
    });
    match &v.kind {
        VifKind::OpenVSwitch { bridge_name } | VifKind::Bridge { bridge_name } => {
            f["bridge_name"] = json!(bridge_name);
            f["port_profile"] = json!({"class": "VIFPortProfileOpenVSwitch", "interface_id": v.id});
        }
        VifKind::VlanNested { vlan_id } => f["vlan_id"] = json!(vlan_id),
        VifKind::MacvlanNested => {}
    }
    f
}

/// The differences between `a` and `b`, one line per field (`path`:
/// `a_name` value, `b_name` value; "(not set)" for a field one lacks).
fn diff(path: &str, a: Option<&Value>, b: Option<&Value>, names: (&str, &str)) -> Vec<String> {
    let show = |v: Option<&Value>| v.map_or("(not set)".to_string(), Value::to_string);
    let sub = |k: &dyn std::fmt::Display| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .flat_map(|k| diff(&sub(k), x.get(k), y.get(k), names))
                .collect()
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .flat_map(|(i, (p, q))| diff(&format!("{path}[{i}]"), Some(p), Some(q), names))
            .collect(),
        _ if a == b => vec![],
        _ => vec![format!(
            "{path}: {} {}, {} {}",
            names.0,
            show(a),
            names.1,
            show(b)
        )],
    }
}

/// Panics with every difference found, by case.
fn report(failures: Vec<(String, Vec<String>)>) {
    let failures: Vec<_> = failures
        .into_iter()
        .filter(|(_, d)| !d.is_empty())
        .collect();
    if !failures.is_empty() {
        let mut msg = String::new();
        for (what, diffs) in failures {
            msg.push_str(&format!("\n{what}:\n  {}", diffs.join("\n  ")));
        }
        panic!("os-vif compatibility:{msg}");
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The venv's python: `KURYR_PEER_VENV`, else
/// `$KURYR_STACK_HOME/cache/kuryr-peer/venv`, made or refreshed by
/// scripts/lib/peer.sh's `peer_venv` (once per test process).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = match std::env::var_os("KURYR_PEER_VENV").filter(|v| !v.is_empty()) {
            Some(v) => PathBuf::from(v),
            None => PathBuf::from(
                std::env::var_os("KURYR_STACK_HOME")
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "/var/tmp/kuryr-stack".into()),
            )
            .join("cache/kuryr-peer/venv"),
        };
        let py = venv.join("bin/python");
        // peer_venv removes and remakes a venv whose requirements changed:
        // only one it made itself (its stamp is there), or none
        if venv.exists() && !venv.join(".kuryr-peer-stamp").exists() {
            assert!(
                py.exists(),
                "{} is not a venv (no bin/python) and not one peer_venv made: \
                 remove it or point KURYR_PEER_VENV elsewhere",
                venv.display()
            );
            eprintln!("using {} as it is (not made by peer_venv)", venv.display());
            return py;
        }
        assert!(
            venv.exists() || Path::new("/usr/bin/python3").exists(),
            "/usr/bin/python3 not found: the os-vif compatibility test runs the real \
             os-vif and kuryr-kubernetes in a venv made with it (apt-get install python3 \
             python3-venv), or set KURYR_PEER_VENV to a venv with kuryr-kubernetes==10.0.0"
        );
        // peer_venv's logs (pip.log): beside the build, else in /tmp
        let mut logs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("osvif-peer");
        if std::fs::create_dir_all(&logs).is_err() {
            logs = std::env::temp_dir().join(format!("kuryr-osvif-peer-{}", std::process::id()));
            std::fs::create_dir_all(&logs).unwrap();
        }
        let t = Instant::now();
        let out = Command::new("bash")
            .arg("-c")
            .arg(
                r#"say() { echo "peer_venv: $*"; }; fail() { echo "peer_venv: $*"; exit 1; }
                   source scripts/lib/peer.sh && peer_venv"#,
            )
            .current_dir(root())
            .env("ROOT", root())
            .env("VENV", &venv)
            .env("D", &logs)
            .output()
            .expect("bash");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "making the venv {} failed ({}):\n{said}\n(it needs PyPI access; under \
             /var/tmp/kuryr-stack it needs root: sudo cargo test ..., or set KURYR_PEER_VENV \
             to a writable directory)",
            venv.display(),
            out.status
        );
        eprint!("{said}");
        eprintln!("venv ready in {:.1}s", t.elapsed().as_secs_f64());
        py
    })
}

/// Runs scripts/peer/osvif_roundtrip.py `mode` on `input`.
fn peer(mode: &str, input: &Value) -> Value {
    let py = python();
    let t = Instant::now();
    let mut child = Command::new(py)
        .arg(root().join("scripts/peer/osvif_roundtrip.py"))
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", py.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "osvif_roundtrip.py {mode} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "osvif_roundtrip.py {mode}: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "osvif_roundtrip.py {mode} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// What kuryr-kubernetes made of every case: its KuryrPort status and what
/// Python reads back from it (one run for the tests that need it).
fn kuryr_kubernetes_vifs() -> &'static Vec<Value> {
    static OUT: OnceLock<Vec<Value>> = OnceLock::new();
    OUT.get_or_init(|| {
        let ports: Vec<Value> = cases()
            .iter()
            .map(|c| {
                let driver = match c.driver {
                    DriverKind::NeutronVif => "neutron-vif",
                    DriverKind::NestedVlan => "nested-vlan",
                    DriverKind::NestedMacvlan => "nested-macvlan",
                };
                json!({"driver": driver, "vlan_id": c.vlan, "port": c.port})
            })
            .collect();
        let out = peer(
            "write",
            &json!({"ovs_bridge": OVS_BRIDGE, "network": network(),
                    "subnets": subnets(), "ports": ports}),
        );
        let out = out.as_array().expect("a list").clone();
        assert_eq!(out.len(), ports.len(), "one VIF per port");
        out
    })
}

/// What kuryr-rs reads from kuryr-kubernetes' KuryrPort status `status`
/// (a VIF or why it cannot).
fn read_status(status: &Value) -> Result<Vif, String> {
    let st: KuryrPortStatus =
        serde_json::from_value(status.clone()).map_err(|e| format!("status: {e}"))?;
    if let Some((ifname, u)) = st.unreadable.iter().next() {
        return Err(format!("vifs.{ifname} unreadable: {}", u.error));
    }
    let e = st
        .vifs
        .get(DEFAULT_IFNAME)
        .ok_or_else(|| format!("no vifs.{DEFAULT_IFNAME} in {status}"))?;
    if !e.default {
        return Err(format!("vifs.{DEFAULT_IFNAME}.default is false"));
    }
    if st.default_vif() != Some(&e.vif) {
        return Err("not the default VIF".into());
    }
    Ok(e.vif.clone())
}

#[tokio::test]
async fn python_reads_every_vif_kuryr_rs_writes() {
    let cases = cases();
    let mut failures = vec![];
    let mut prims = vec![];
    for c in &cases {
        let (_, status) = kuryr_rs_vif(c);
        let entry = &status["vifs"][DEFAULT_IFNAME];
        let mut d = diff(
            "default",
            Some(&json!(true)),
            entry.get("default"),
            ("want", "wrote"),
        );
        if status["vifs"].as_object().map(|o| o.len()) != Some(1) {
            d.push(format!("vifs: want only {DEFAULT_IFNAME}, wrote {status}"));
        }
        failures.push((c.what.to_string(), d));
        prims.push(entry["vif"].clone());
    }
    let read = peer("read", &json!(prims));
    let read = read.as_array().expect("a list");
    assert_eq!(read.len(), cases.len(), "one answer per VIF: {read:?}");
    for (i, c) in cases.iter().enumerate() {
        let (vif, _) = kuryr_rs_vif(c);
        let what = format!("{} {}", c.what, vif.id);
        let r = &read[i];
        assert_eq!(r["index"], json!(i), "answers in order");
        let d = match (r.get("fields"), r.get("error")) {
            (Some(f), _) => diff(
                "",
                Some(&meaning(&vif)),
                Some(f),
                ("kuryr-rs meant", "Python read"),
            ),
            (None, Some(e)) => vec![format!("Python cannot read it: {e}")],
            _ => vec![format!("no answer: {r}")],
        };
        failures.push((what, d));
    }
    report(failures);
}

/// What the Neutron port, network and subnets of `c` say the VIF
/// kuryr-kubernetes makes is (written out here, not by kuryr-rs's code).
fn from_neutron(c: &Case, active: bool) -> Vif {
    let p = &c.port;
    let id = p["id"].as_str().unwrap().to_owned();
    let details = &p["binding:vif_details"];
    let ovs = details["bridge_name"].as_str().unwrap_or(OVS_BRIDGE);
    let subnets = subnets();
    let vif_subnets = subnets
        .iter()
        .filter_map(|s| {
            let ips: Vec<String> = p["fixed_ips"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["subnet_id"] == s["id"])
                .map(|f| f["ip_address"].as_str().unwrap().to_owned())
                .collect();
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_owned())
                    .collect()
            };
            (!ips.is_empty()).then(|| kuryr_crds::VifSubnet {
                cidr: s["cidr"].as_str().unwrap().to_owned(),
                gateway: s["gateway_ip"].as_str().map(str::to_owned),
                dns: strings(&s["dns_nameservers"]),
                ips,
                routes: s["host_routes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| kuryr_crds::VifRoute {
                        cidr: r["destination"].as_str().unwrap().to_owned(),
                        gateway: r["nexthop"].as_str().unwrap().to_owned(),
                    })
                    .collect(),
            })
        })
        .collect();
    let (kind, bridge) = match c.driver {
        DriverKind::NeutronVif if details["ovs_hybrid_plug"] == json!(true) => (
            VifKind::Bridge {
                bridge_name: format!("qbr{}", &id[..11]),
            },
            Some(ovs.to_owned()),
        ),
        DriverKind::NeutronVif => (
            VifKind::OpenVSwitch {
                bridge_name: ovs.to_owned(),
            },
            Some(ovs.to_owned()),
        ),
        DriverKind::NestedVlan => (
            VifKind::VlanNested {
                vlan_id: c.vlan.unwrap(),
            },
            None,
        ),
        DriverKind::NestedMacvlan => (VifKind::MacvlanNested, None),
    };
    let net = network();
    Vif {
        address: p["mac_address"].as_str().unwrap().to_owned(),
        network: kuryr_crds::VifNetwork {
            id: net["id"].as_str().unwrap().to_owned(),
            label: net["name"].as_str().unwrap().to_owned(),
            bridge,
            mtu: net["mtu"].as_u64().map(|m| m as u32),
            subnets: vif_subnets,
        },
        plugin: if c.driver == DriverKind::NeutronVif {
            "ovs"
        } else {
            "noop"
        }
        .into(),
        active,
        preserve_on_delete: false,
        has_traffic_filtering: details["port_filter"] == json!(true),
        vif_name: format!("tap{}", &id[..11]),
        id,
        kind,
    }
}

#[test]
fn kuryr_rs_reads_every_vif_kuryr_kubernetes_writes() {
    let written = kuryr_kubernetes_vifs();
    let mut failures = vec![];
    for (c, w) in cases().iter().zip(written) {
        let what = format!("{} {}", c.what, c.port["id"].as_str().unwrap());
        let d = match read_status(&w["status"]) {
            Ok(vif) => {
                // kuryr-rs reads what Python reads from the same primitive...
                let mut d = diff(
                    "",
                    Some(&meaning(&vif)),
                    Some(&w["fields"]),
                    ("kuryr-rs read", "Python read"),
                );
                // ...and that is what the Neutron port says
                let active = c.port["status"] == "ACTIVE";
                d.extend(diff(
                    "",
                    Some(&meaning(&from_neutron(c, active))),
                    Some(&meaning(&vif)),
                    ("the Neutron port says", "kuryr-rs read"),
                ));
                d
            }
            Err(e) => vec![format!(
                "kuryr-rs cannot read kuryr-kubernetes' KuryrPort status: {e}"
            )],
        };
        failures.push((what, d));
    }
    report(failures);
}

#[tokio::test]
async fn kuryr_rs_builds_the_vif_kuryr_kubernetes_builds() {
    let written = kuryr_kubernetes_vifs();
    let mut failures = vec![];
    for (c, w) in cases().iter().zip(written) {
        let (mut vif, _) = kuryr_rs_vif(c);
        let what = format!("{} {}", c.what, vif.id);
        // ACTIVE when Neutron says so, later (see the module doc)
        vif.active = w["fields"]["active"] == json!(true);
        failures.push((
            what,
            diff(
                "",
                Some(&w["fields"]),
                Some(&meaning(&vif)),
                ("kuryr-kubernetes built", "kuryr-rs built"),
            ),
        ));
    }
    report(failures);
}
