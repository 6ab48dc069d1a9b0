//! `kuryr.conf`: the INI file of kuryr-kubernetes, with its section and
//! option names, for what kuryr-rs supports. Unknown or unsupported options
//! are reported as warnings (never silently ignored); malformed values are
//! errors naming the section, option and line. Environment variables
//! `KURYR_<SECTION>__<OPTION>` (upper case) override the file.

mod ini;

pub use ini::{Ini, IniError};
use std::collections::BTreeMap;

/// A problem with a value: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kuryr.conf [{section}] {option}{}: {reason}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
pub struct ConfigError {
    /// Section.
    pub section: String,
    /// Option.
    pub option: String,
    /// Line in the file, if it came from the file.
    pub line: Option<usize>,
    /// What is wrong and what is expected.
    pub reason: String,
}

/// `[kubernetes]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    /// `pod_vif_driver`: `neutron-vif`, `nested-vlan` or `nested-macvlan`.
    pub pod_vif_driver: String,
    /// `vif_pool_driver`: `noop`, `neutron` or `nested`.
    pub vif_pool_driver: String,
    /// `pod_subnets_driver`: `default` (every pod on `[neutron_defaults]
    /// pod_subnet`) or `namespace` (a network and subnet per namespace, see
    /// `[namespace_subnet]`).
    pub pod_subnets_driver: String,
    /// `pod_security_groups_driver`: `default` (the `[neutron_defaults]
    /// pod_security_groups` for every pod) or `policy` (NetworkPolicies).
    pub pod_security_groups_driver: String,
    /// `network_policy_peers` (kuryr-rs): how a policy rule names the pods
    /// of a `podSelector`/`namespaceSelector` peer. `remote_group`: one rule
    /// per peer and port naming a security group the peer's pods' ports
    /// carry, so rules do not grow with pods; `ip_prefix`: one rule per pod
    /// IP and port, as kuryr-kubernetes wrote them; `auto` (default):
    /// `remote_group` on ML2/OVN, else `ip_prefix`.
    pub network_policy_peers: String,
    /// `enabled_handlers`.
    pub enabled_handlers: Vec<String>,
    /// `api_root`: apiserver URL (empty: in-cluster or kubeconfig).
    pub api_root: Option<String>,
    /// `token_file`.
    pub token_file: Option<String>,
    /// `ssl_ca_crt_file`.
    pub ssl_ca_crt_file: Option<String>,
    /// `port_debug`: name pool ports after their pod and set their
    /// device_id while in use (costs a Neutron call per pod).
    pub port_debug: bool,
    /// `endpoints_driver_octavia_provider`: the Octavia provider of
    /// Services' load balancers (`default`: Octavia's default provider).
    pub endpoints_driver_octavia_provider: String,
}

/// `[neutron_defaults]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NeutronDefaults {
    /// `project`: project id the ports are made in.
    pub project: Option<String>,
    /// `pod_subnet`: subnet id of pods.
    pub pod_subnet: Option<String>,
    /// `pod_security_groups`: security group ids of pods.
    pub pod_security_groups: Vec<String>,
    /// `ovs_bridge`: integration bridge.
    pub ovs_bridge: String,
    /// `network_device_mtu`.
    pub network_device_mtu: Option<u32>,
    /// `resource_tags`: tags put on every Neutron resource.
    pub resource_tags: Vec<String>,
    /// `service_subnet`: subnet id of Services' VIPs (their ClusterIPs).
    pub service_subnet: Option<String>,
    /// `external_svc_net`: network id of LoadBalancer Services' floating IPs.
    pub external_svc_net: Option<String>,
    /// `external_svc_subnet`: subnet of those floating IPs (optional).
    pub external_svc_subnet: Option<String>,
}

/// `[octavia_defaults]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OctaviaDefaults {
    /// `member_mode`: `L3` (members reached through routing) or `L2`.
    pub member_mode: String,
    /// `lb_algorithm` (the `ovn` provider only has `SOURCE_IP_PORT`).
    pub lb_algorithm: String,
    /// `enforce_sg_rules`: load balancers follow the pods' security groups.
    pub enforce_sg_rules: bool,
    /// `timeout_client_data` (ms, 0: Octavia's default).
    pub timeout_client_data: u32,
    /// `timeout_member_data` (ms, 0: Octavia's default).
    pub timeout_member_data: u32,
}

/// `[pod_vif_nested]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodVifNested {
    /// `worker_nodes_subnets`: subnets of the node VMs' trunk ports.
    pub worker_nodes_subnets: Vec<String>,
}

/// `[namespace_subnet]`: where namespaces' networks come from
/// (`pod_subnets_driver = namespace`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespaceSubnet {
    /// `pod_subnet_pool`: the subnet pool namespaces' subnets take their
    /// CIDRs from.
    pub pod_subnet_pool: Option<String>,
    /// `pod_router`: the router namespaces' subnets are attached to.
    pub pod_router: Option<String>,
}

/// `[vif_pool]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifPool {
    /// `ports_pool_min`.
    pub ports_pool_min: u32,
    /// `ports_pool_max` (0: no limit).
    pub ports_pool_max: u32,
    /// `ports_pool_batch`.
    pub ports_pool_batch: u32,
    /// `ports_pool_update_frequency`, seconds.
    pub ports_pool_update_frequency: u32,
}

/// `[cni_daemon]`: the node daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniDaemon {
    /// `vif_annotation_timeout`, seconds: how long an ADD waits for the
    /// pod's VIF to appear and become active (kuryr-kubernetes: 60).
    pub vif_annotation_timeout: u32,
    /// `daemon_socket` (kuryr-rs): the unix socket kuryr-cni talks to.
    pub daemon_socket: String,
    /// `state_dir` (kuryr-rs): where the daemon records what it plugged.
    pub state_dir: String,
}

/// `[binding]`: how nested pods reach the VM's NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// `link_iface`: the node VM's NIC (trunk parent) for nested-vlan and
    /// nested-macvlan.
    pub link_iface: String,
}

/// `[node_port]` (kuryr-rs): the node's own path into the pod network. The
/// controller gives every node a Neutron port on the pod subnet (in the
/// group `kuryr/<cluster>/nodes`), the node's daemon plugs it into the
/// integration bridge as a host interface, and every pod port gets the
/// group `kuryr/<cluster>/node-access`, which admits what comes from those
/// node ports (and from `[pod_vif_nested] worker_nodes_subnets`): kubelet
/// probes and host-network pods reach pods, nothing else from the host side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePort {
    /// `enabled`: give each node a port (default: on for `neutron-vif`,
    /// off for the nested drivers, whose node VMs reach pods through
    /// their own NIC and the router).
    pub enabled: bool,
    /// `interface`: the host interface's name (`kuryr-node`).
    pub interface: String,
}

/// Sets up the process's `tracing` output, as every kuryr-rs binary does:
/// `RUST_LOG` filter (default `info`), JSON lines or text on stderr,
/// colours only on a terminal.
pub fn init_logging(json: bool) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if json {
        fmt.json().init();
    } else {
        fmt.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// The whole configuration (its `Debug` hides the `[neutron]` secrets).
#[derive(Clone, PartialEq, Eq)]
pub struct KuryrConfig {
    /// `[kubernetes]`.
    pub kubernetes: Kubernetes,
    /// `[neutron_defaults]`.
    pub neutron_defaults: NeutronDefaults,
    /// `[pod_vif_nested]`.
    pub pod_vif_nested: PodVifNested,
    /// `[namespace_subnet]`.
    pub namespace_subnet: NamespaceSubnet,
    /// `[vif_pool]`.
    pub vif_pool: VifPool,
    /// `[cni_daemon]`.
    pub cni_daemon: CniDaemon,
    /// `[binding]`.
    pub binding: Binding,
    /// `[node_port]`.
    pub node_port: NodePort,
    /// `[octavia_defaults]`.
    pub octavia_defaults: OctaviaDefaults,
    /// `[neutron]`: keystoneauth options (auth_url, username, password,
    /// project_name, ... application_credential_id ...), passed to the
    /// OpenStack client as they are.
    pub neutron: BTreeMap<String, String>,
}

/// Whether a `[neutron]` option holds a secret (never logged or printed).
pub fn is_secret(option: &str) -> bool {
    let o = option.to_ascii_lowercase();
    o.contains("password") || o.contains("secret") || o.contains("token")
}

impl std::fmt::Debug for KuryrConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let neutron: BTreeMap<&str, &str> = self
            .neutron
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret(k) { "<hidden>" } else { v.as_str() };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KuryrConfig")
            .field("kubernetes", &self.kubernetes)
            .field("neutron_defaults", &self.neutron_defaults)
            .field("pod_vif_nested", &self.pod_vif_nested)
            .field("namespace_subnet", &self.namespace_subnet)
            .field("vif_pool", &self.vif_pool)
            .field("cni_daemon", &self.cni_daemon)
            .field("binding", &self.binding)
            .field("node_port", &self.node_port)
            .field("octavia_defaults", &self.octavia_defaults)
            .field("neutron", &neutron)
            .finish()
    }
}

const DRIVERS_VIF: &[&str] = &["neutron-vif", "nested-vlan", "nested-macvlan"];
const DRIVERS_POOL: &[&str] = &["noop", "neutron", "nested"];
const HANDLERS: &[&str] = &[
    "vif",
    "kuryrport",
    "namespace",
    "kuryrnetwork",
    "lb",
    "lbaasspec",
    "service",
    "endpoints",
    "policy",
    "kuryrnetworkpolicy",
    "pod_label",
    "kuryrloadbalancer",
    "kuryrnetwork_population",
    "openshift_machine",
];

/// Options kuryr-rs reads, by section (`[neutron]` takes any keystoneauth option).
const KNOWN: &[(&str, &[&str])] = &[
    (
        "kubernetes",
        &[
            "pod_vif_driver",
            "vif_pool_driver",
            "pod_subnets_driver",
            "pod_security_groups_driver",
            "network_policy_peers",
            "enabled_handlers",
            "api_root",
            "token_file",
            "ssl_ca_crt_file",
            "port_debug",
            "endpoints_driver_octavia_provider",
        ],
    ),
    (
        "neutron_defaults",
        &[
            "project",
            "pod_subnet",
            "pod_security_groups",
            "ovs_bridge",
            "network_device_mtu",
            "resource_tags",
            "service_subnet",
            "external_svc_net",
            "external_svc_subnet",
        ],
    ),
    (
        "octavia_defaults",
        &[
            "member_mode",
            "lb_algorithm",
            "enforce_sg_rules",
            "timeout_client_data",
            "timeout_member_data",
        ],
    ),
    ("pod_vif_nested", &["worker_nodes_subnets"]),
    ("namespace_subnet", &["pod_subnet_pool", "pod_router"]),
    (
        "cni_daemon",
        &["vif_annotation_timeout", "daemon_socket", "state_dir"],
    ),
    ("binding", &["link_iface"]),
    ("node_port", &["enabled", "interface"]),
    (
        "vif_pool",
        &[
            "ports_pool_min",
            "ports_pool_max",
            "ports_pool_batch",
            "ports_pool_update_frequency",
        ],
    ),
];

impl KuryrConfig {
    /// Reads and parses the file at `path` with environment overrides from
    /// the process. A missing file is not an error: defaults and the
    /// environment apply, and the first warning says so.
    pub fn load(path: &std::path::Path) -> Result<(Self, Vec<String>), ConfigError> {
        let (text, mut warnings) = match std::fs::read_to_string(path) {
            Ok(t) => (t, vec![]),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                String::new(),
                vec![format!(
                    "{} does not exist: defaults and environment only",
                    path.display()
                )],
            ),
            Err(e) => {
                return Err(ConfigError {
                    section: String::new(),
                    option: String::new(),
                    line: None,
                    reason: format!("reading {}: {e}", path.display()),
                });
            }
        };
        let (cfg, more) = Self::parse(&text, |k| std::env::var(k).ok())?;
        warnings.extend(more);
        Ok((cfg, warnings))
    }

    /// Parses `text`; `env` looks up override variables (pass
    /// `|k| std::env::var(k).ok()`). Returns the config and the warnings.
    pub fn parse(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let ini = Ini::parse(text).map_err(|e| ConfigError {
            section: e.section.clone(),
            option: String::new(),
            line: Some(e.line),
            reason: e.reason.clone(),
        })?;
        let mut warnings = Vec::new();
        for (section, opts) in ini.sections() {
            for (opt, (_, line)) in opts {
                let known = section == "neutron"
                    || KNOWN
                        .iter()
                        .any(|(s, o)| *s == section && o.contains(&opt.as_str()));
                if !known {
                    warnings.push(format!("kuryr.conf line {line}: [{section}] {opt} is unknown or not supported by kuryr-rs; ignored"));
                }
            }
        }
        let get = |section: &str, opt: &str| -> Option<(String, Option<usize>)> {
            let var = format!("KURYR_{}__{}", section.to_uppercase(), opt.to_uppercase());
            if let Some(v) = env(&var) {
                return Some((v, None));
            }
            ini.get(section, opt).map(|(v, l)| (v.to_owned(), Some(l)))
        };
        let err = |section: &str, option: &str, line: Option<usize>, reason: String| ConfigError {
            section: section.into(),
            option: option.into(),
            line,
            reason,
        };
        let string = |s: &str, o: &str| get(s, o).map(|(v, _)| v).filter(|v| !v.is_empty());
        let list = |s: &str, o: &str| -> Vec<String> {
            get(s, o)
                .map(|(v, _)| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|x| !x.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let num = |s: &str, o: &str, default: u32| -> Result<u32, ConfigError> {
            match get(s, o) {
                None => Ok(default),
                Some((v, line)) => v
                    .trim()
                    .parse()
                    .map_err(|_| err(s, o, line, format!("`{v}` is not a non-negative integer"))),
            }
        };
        let choice =
            |s: &str, o: &str, default: &str, allowed: &[&str]| -> Result<String, ConfigError> {
                match get(s, o) {
                    None => Ok(default.into()),
                    Some((v, line)) => {
                        let v = v.trim().to_owned();
                        if allowed.contains(&v.as_str()) {
                            Ok(v)
                        } else {
                            Err(err(
                                s,
                                o,
                                line,
                                format!(
                                    "`{v}` is not supported; choose one of {}",
                                    allowed.join(", ")
                                ),
                            ))
                        }
                    }
                }
            };
        let handlers = match get("kubernetes", "enabled_handlers") {
            // kuryr-kubernetes' default
            None => [
                "vif",
                "endpoints",
                "service",
                "kuryrloadbalancer",
                "kuryrport",
            ]
            .map(String::from)
            .to_vec(),
            Some((v, line)) => {
                let hs: Vec<String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect();
                if let Some(bad) = hs.iter().find(|h| !HANDLERS.contains(&h.as_str())) {
                    return Err(err(
                        "kubernetes",
                        "enabled_handlers",
                        line,
                        format!("unknown handler `{bad}`"),
                    ));
                }
                hs
            }
        };
        let mtu = match get("neutron_defaults", "network_device_mtu") {
            None => None,
            Some((v, line)) => match v.trim().parse::<u32>() {
                Ok(0) => None,
                Ok(m) if (68..=65535).contains(&m) => Some(m),
                _ => {
                    return Err(err(
                        "neutron_defaults",
                        "network_device_mtu",
                        line,
                        format!("`{v}` is not an MTU (68-65535, 0 = the network's)"),
                    ));
                }
            },
        };
        let boolean = |s: &str, o: &str, default: bool| -> Result<bool, ConfigError> {
            match get(s, o) {
                None => Ok(default),
                Some((v, line)) => match v.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => Ok(true),
                    "false" | "0" | "no" | "off" => Ok(false),
                    _ => Err(err(
                        s,
                        o,
                        line,
                        format!("`{v}` is not a boolean (true or false)"),
                    )),
                },
            }
        };
        let port_debug = boolean("kubernetes", "port_debug", false)?;
        let pod_vif_driver = choice("kubernetes", "pod_vif_driver", "neutron-vif", DRIVERS_VIF)?;
        let node_interface =
            string("node_port", "interface").unwrap_or_else(|| "kuryr-node".into());
        if node_interface.len() > 15 || node_interface.contains(['/', ' ']) {
            return Err(err(
                "node_port",
                "interface",
                get("node_port", "interface").and_then(|(_, l)| l),
                format!(
                    "`{node_interface}` is not a Linux interface name (at most 15 bytes, no '/' or space)"
                ),
            ));
        }
        let node_port = NodePort {
            enabled: boolean("node_port", "enabled", pod_vif_driver == "neutron-vif")?,
            interface: node_interface,
        };
        let cfg = Self {
            kubernetes: Kubernetes {
                port_debug,
                pod_vif_driver,
                endpoints_driver_octavia_provider: string(
                    "kubernetes",
                    "endpoints_driver_octavia_provider",
                )
                .unwrap_or_else(|| "default".into()),
                vif_pool_driver: choice("kubernetes", "vif_pool_driver", "noop", DRIVERS_POOL)?,
                pod_subnets_driver: choice(
                    "kubernetes",
                    "pod_subnets_driver",
                    "default",
                    &["default", "namespace"],
                )?,
                pod_security_groups_driver: choice(
                    "kubernetes",
                    "pod_security_groups_driver",
                    "default",
                    &["default", "policy"],
                )?,
                network_policy_peers: choice(
                    "kubernetes",
                    "network_policy_peers",
                    "auto",
                    &["auto", "remote_group", "ip_prefix"],
                )?,
                enabled_handlers: handlers,
                api_root: string("kubernetes", "api_root"),
                token_file: string("kubernetes", "token_file"),
                ssl_ca_crt_file: string("kubernetes", "ssl_ca_crt_file"),
            },
            neutron_defaults: NeutronDefaults {
                project: string("neutron_defaults", "project"),
                pod_subnet: string("neutron_defaults", "pod_subnet"),
                pod_security_groups: list("neutron_defaults", "pod_security_groups"),
                ovs_bridge: string("neutron_defaults", "ovs_bridge")
                    .unwrap_or_else(|| "br-int".into()),
                network_device_mtu: mtu,
                resource_tags: list("neutron_defaults", "resource_tags"),
                service_subnet: string("neutron_defaults", "service_subnet"),
                external_svc_net: string("neutron_defaults", "external_svc_net"),
                external_svc_subnet: string("neutron_defaults", "external_svc_subnet"),
            },
            octavia_defaults: OctaviaDefaults {
                member_mode: choice("octavia_defaults", "member_mode", "L3", &["L2", "L3"])?,
                lb_algorithm: choice(
                    "octavia_defaults",
                    "lb_algorithm",
                    "ROUND_ROBIN",
                    &[
                        "ROUND_ROBIN",
                        "LEAST_CONNECTIONS",
                        "SOURCE_IP",
                        "SOURCE_IP_PORT",
                    ],
                )?,
                enforce_sg_rules: boolean("octavia_defaults", "enforce_sg_rules", true)?,
                timeout_client_data: num("octavia_defaults", "timeout_client_data", 0)?,
                timeout_member_data: num("octavia_defaults", "timeout_member_data", 0)?,
            },
            pod_vif_nested: PodVifNested {
                worker_nodes_subnets: list("pod_vif_nested", "worker_nodes_subnets"),
            },
            namespace_subnet: NamespaceSubnet {
                pod_subnet_pool: string("namespace_subnet", "pod_subnet_pool"),
                pod_router: string("namespace_subnet", "pod_router"),
            },
            vif_pool: VifPool {
                ports_pool_min: num("vif_pool", "ports_pool_min", 5)?,
                ports_pool_max: num("vif_pool", "ports_pool_max", 0)?,
                ports_pool_batch: num("vif_pool", "ports_pool_batch", 10)?.max(1),
                ports_pool_update_frequency: num("vif_pool", "ports_pool_update_frequency", 20)?,
            },
            cni_daemon: CniDaemon {
                vif_annotation_timeout: num("cni_daemon", "vif_annotation_timeout", 60)?.max(1),
                daemon_socket: string("cni_daemon", "daemon_socket")
                    .unwrap_or_else(|| "/run/kuryr/daemon.sock".into()),
                state_dir: string("cni_daemon", "state_dir")
                    .unwrap_or_else(|| "/var/lib/kuryr-daemon".into()),
            },
            binding: Binding {
                link_iface: string("binding", "link_iface").unwrap_or_else(|| "eth0".into()),
            },
            node_port,
            neutron: ini
                .section("neutron")
                .map(|m| m.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        };
        if cfg.kubernetes.pod_vif_driver.starts_with("nested")
            && cfg.pod_vif_nested.worker_nodes_subnets.is_empty()
        {
            return Err(err(
                "pod_vif_nested",
                "worker_nodes_subnets",
                None,
                format!(
                    "required by pod_vif_driver = {}",
                    cfg.kubernetes.pod_vif_driver
                ),
            ));
        }
        if cfg.kubernetes.pod_subnets_driver == "namespace" {
            let ns = &cfg.namespace_subnet;
            for (opt, v) in [
                ("pod_subnet_pool", &ns.pod_subnet_pool),
                ("pod_router", &ns.pod_router),
            ] {
                if v.is_none() {
                    return Err(err(
                        "namespace_subnet",
                        opt,
                        None,
                        "required by pod_subnets_driver = namespace".into(),
                    ));
                }
            }
        }
        if cfg.vif_pool.ports_pool_max != 0
            && cfg.vif_pool.ports_pool_max < cfg.vif_pool.ports_pool_min
        {
            return Err(err(
                "vif_pool",
                "ports_pool_max",
                None,
                format!(
                    "{} is below ports_pool_min {}",
                    cfg.vif_pool.ports_pool_max, cfg.vif_pool.ports_pool_min
                ),
            ));
        }
        Ok((cfg, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"
[DEFAULT]
debug = true

[kubernetes]
api_root = https://127.0.0.1:6443
pod_vif_driver = nested-vlan
vif_pool_driver = nested
enabled_handlers = vif,kuryrport, namespace
controller_ha = false

[neutron_defaults]
project = 1a2b
pod_subnet = sub-1
pod_security_groups = sg-1, sg-2
ovs_bridge = br-int
network_device_mtu = 1442
resource_tags = kuryr-rs,
  cluster-a

[pod_vif_nested]
worker_nodes_subnets = wsub-1

[vif_pool]
ports_pool_min = 10
ports_pool_batch = 20

[neutron]
auth_url = http://127.0.0.1:5000/v3
auth_type = password
username = kuryr
password = s3cret
"#;

    #[test]
    fn reads_kuryr_kubernetes_options() {
        let (c, warnings) = KuryrConfig::parse(CONF, |_| None).unwrap();
        assert_eq!(c.kubernetes.pod_vif_driver, "nested-vlan");
        assert_eq!(
            c.kubernetes.enabled_handlers,
            vec!["vif", "kuryrport", "namespace"]
        );
        assert_eq!(c.neutron_defaults.pod_security_groups, vec!["sg-1", "sg-2"]);
        assert_eq!(
            c.neutron_defaults.resource_tags,
            vec!["kuryr-rs", "cluster-a"],
            "continuation line"
        );
        assert_eq!(c.neutron_defaults.network_device_mtu, Some(1442));
        assert_eq!(c.vif_pool.ports_pool_min, 10);
        assert_eq!(c.vif_pool.ports_pool_max, 0);
        assert_eq!(c.vif_pool.ports_pool_update_frequency, 20);
        assert_eq!(c.neutron["password"], "s3cret");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("\"password\": \"<hidden>\""), "{shown}");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("[kubernetes] controller_ha"))
        );
        assert!(warnings.iter().any(|w| w.contains("[DEFAULT] debug")));
    }

    #[test]
    fn environment_overrides_the_file() {
        let (c, _) = KuryrConfig::parse(CONF, |k| {
            (k == "KURYR_VIF_POOL__PORTS_POOL_MIN").then(|| "3".into())
        })
        .unwrap();
        assert_eq!(c.vif_pool.ports_pool_min, 3);
    }

    #[test]
    fn bad_values_name_section_option_and_line() {
        let e = KuryrConfig::parse("[vif_pool]\nports_pool_min = many\n", |_| None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "kuryr.conf [vif_pool] ports_pool_min (line 2): `many` is not a non-negative integer"
        );
        let e = KuryrConfig::parse("[kubernetes]\npod_vif_driver = sriov\n", |_| None).unwrap_err();
        assert!(
            e.reason
                .contains("neutron-vif, nested-vlan, nested-macvlan"),
            "{e}"
        );
        let e = KuryrConfig::parse("[kubernetes]\npod_vif_driver = nested-macvlan\n", |_| None)
            .unwrap_err();
        assert!(e.to_string().contains("worker_nodes_subnets"), "{e}");
        let e = KuryrConfig::parse(
            "[vif_pool]\nports_pool_min = 10\nports_pool_max = 5\n",
            |_| None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("below ports_pool_min"), "{e}");
        let e = KuryrConfig::parse("no section = here\n", |_| None).unwrap_err();
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn defaults_without_a_file() {
        let (c, w) = KuryrConfig::parse("", |_| None).unwrap();
        assert!(w.is_empty());
        assert_eq!(c.kubernetes.pod_vif_driver, "neutron-vif");
        assert_eq!(c.kubernetes.vif_pool_driver, "noop");
        assert_eq!(c.neutron_defaults.ovs_bridge, "br-int");
        assert_eq!(c.vif_pool.ports_pool_batch, 10);
        assert!(c.node_port.enabled, "on by default for neutron-vif");
        assert_eq!(
            c.kubernetes.enabled_handlers,
            [
                "vif",
                "endpoints",
                "service",
                "kuryrloadbalancer",
                "kuryrport"
            ],
            "kuryr-kubernetes' default"
        );
        assert_eq!(c.kubernetes.endpoints_driver_octavia_provider, "default");
        assert_eq!(c.octavia_defaults.lb_algorithm, "ROUND_ROBIN");
        assert!(c.octavia_defaults.enforce_sg_rules);
        assert_eq!(c.neutron_defaults.service_subnet, None);
        assert_eq!(c.node_port.interface, "kuryr-node");
    }

    #[test]
    fn node_port_defaults_follow_the_driver_and_check_the_name() {
        let (c, _) = KuryrConfig::parse(CONF, |_| None).unwrap();
        assert!(!c.node_port.enabled, "off for nested-vlan");
        let (c, _) =
            KuryrConfig::parse("[node_port]\nenabled = false\ninterface = k0\n", |_| None).unwrap();
        assert!(!c.node_port.enabled);
        assert_eq!(c.node_port.interface, "k0");
        let e = KuryrConfig::parse("[node_port]\ninterface = a-much-too-long-name\n", |_| None)
            .unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = KuryrConfig::parse("[node_port]\nenabled = maybe\n", |_| None).unwrap_err();
        assert!(e.to_string().contains("not a boolean"), "{e}");
    }

    #[test]
    fn loads_a_file_or_warns_that_there_is_none() {
        let (cfg, w) = KuryrConfig::load(std::path::Path::new("/nonexistent/kuryr.conf")).unwrap();
        assert_eq!(cfg.neutron_defaults.ovs_bridge, "br-int");
        assert!(w[0].contains("does not exist"), "{w:?}");
        let p = std::env::temp_dir().join(format!("kuryr-conf-{}.conf", std::process::id()));
        std::fs::write(&p, "[binding]\nlink_iface = ens3\n").unwrap();
        let (cfg, w) = KuryrConfig::load(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(cfg.binding.link_iface, "ens3");
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn namespace_subnets_need_a_pool_and_a_router() {
        let (c, w) = KuryrConfig::parse(
            "[kubernetes]\npod_subnets_driver = namespace\n[namespace_subnet]\npod_subnet_pool = sp-1\npod_router = r-1\n",
            |_| None,
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.kubernetes.pod_subnets_driver, "namespace");
        assert_eq!(c.namespace_subnet.pod_subnet_pool.as_deref(), Some("sp-1"));
        assert_eq!(c.namespace_subnet.pod_router.as_deref(), Some("r-1"));
        let e = KuryrConfig::parse(
            "[kubernetes]\npod_subnets_driver = namespace\n[namespace_subnet]\npod_router = r-1\n",
            |_| None,
        )
        .unwrap_err();
        assert_eq!(
            (e.section.as_str(), e.option.as_str()),
            ("namespace_subnet", "pod_subnet_pool"),
            "{e}"
        );
        let e = KuryrConfig::parse(
            "[kubernetes]\npod_subnets_driver = namespace\n[namespace_subnet]\npod_subnet_pool = sp-1\n",
            |_| None,
        )
        .unwrap_err();
        assert_eq!(e.option, "pod_router", "{e}");
        let e = KuryrConfig::parse("[kubernetes]\npod_subnets_driver = tenant\n", |_| None)
            .unwrap_err();
        assert!(e.to_string().contains("namespace"), "{e}");
    }

    #[test]
    fn network_policy_peers() {
        let (c, _) = KuryrConfig::parse("", |_| None).unwrap();
        assert_eq!(c.kubernetes.network_policy_peers, "auto");
        let (c, w) =
            KuryrConfig::parse("[kubernetes]\nnetwork_policy_peers = ip_prefix\n", |_| None)
                .unwrap();
        assert_eq!(c.kubernetes.network_policy_peers, "ip_prefix");
        assert!(w.is_empty(), "{w:?}");
        let e = KuryrConfig::parse(
            "[kubernetes]\nnetwork_policy_peers = address_group\n",
            |_| None,
        )
        .unwrap_err();
        assert_eq!(e.option, "network_policy_peers", "{e}");
        assert!(e.to_string().contains("remote_group"), "{e}");
    }
}
