//! What every handler shares: the flags beyond kuryr.conf ([`Options`]) and
//! the [`Context`] made from kuryr.conf at start (clients, pod network,
//! drivers, pools, metrics, Service settings).

use crate::drivers::{DriverKind, Drivers};
use crate::plan::PortSettings;
use crate::{active, gc, handlers, metrics, plan, pool, ports, services};
use kube::runtime::events::{Recorder, Reporter};
use kuryr_openstack::Query;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Tuning beyond kuryr.conf (flags of the binary).
#[derive(Debug, Clone)]
pub struct Options {
    /// Only pods matching this label selector (all when `None`).
    pub pod_selector: Option<String>,
    /// Only the namespaces matching this label selector are handled (all
    /// when `None`): their NetworkPolicies, namespace networks and Services
    /// (the `kubernetes` Service too); another controller, or none, handles
    /// the others.
    pub namespace_selector: Option<String>,
    /// Only nodes matching this label selector get a node port (all when
    /// `None`).
    pub node_selector: Option<String>,
    /// Report leaked ports instead of deleting them.
    pub gc_dry_run: bool,
    /// Time between reconciliation passes with Neutron (0: only at start).
    pub gc_interval: Duration,
    /// Time between looks at ports waiting to go ACTIVE.
    pub active_poll: Duration,
    /// A port still DOWN this long gets a warning event on its pod.
    pub active_warning: Duration,
    /// How long a given-back pool port waits before another pod gets it
    /// (default: `[vif_pool] ports_pool_update_frequency`).
    pub pool_cool_down: Option<Duration>,
    /// Name of this replica in events.
    pub instance: Option<String>,
    /// How often a KuryrLoadBalancer is compared with Octavia, and a
    /// NetworkPolicy's group with Neutron, although it did not change (what
    /// was changed behind our back is repaired).
    pub lb_recheck: Duration,
    /// How many KuryrLoadBalancers are reconciled at once (at least one).
    /// Each reconcile waits for its load balancer to go ACTIVE after every
    /// change, polling Octavia: unbounded, a burst of Services has every
    /// one of them polling at once, all advance in lock step and none is
    /// finished until nearly all are.
    pub lb_workers: u16,
    /// Fill the pools of the nodes matching this label selector to
    /// `ports_pool_min` before any pod comes (`""`: every node). Without
    /// it, as in kuryr-kubernetes, a pool is made when the first pod of
    /// its node needs a port, and kept at its minimum from then on.
    pub prefill_nodes: Option<String>,
    /// `/healthz` fails once the watches, or every Neutron call, have
    /// failed this long with no success in between (zero: never).
    pub liveness_bound: Duration,
    /// Time between reads of the pod network and its subnets (MTU, routes,
    /// DNS servers for new VIFs; zero: only at start).
    pub net_refresh: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            pod_selector: None,
            namespace_selector: None,
            node_selector: None,
            gc_dry_run: false,
            gc_interval: Duration::from_secs(300),
            active_poll: Duration::from_millis(500),
            active_warning: Duration::from_secs(60),
            pool_cool_down: None,
            lb_recheck: Duration::from_secs(120),
            lb_workers: 8,
            instance: None,
            prefill_nodes: None,
            liveness_bound: crate::health::DEFAULT_BOUND,
            net_refresh: Duration::from_secs(60),
        }
    }
}

/// Everything the handler needs, shared by all reconciles.
pub struct Context {
    /// Kubernetes.
    pub kube: kube::Client,
    /// OpenStack.
    pub os: kuryr_openstack::Client,
    /// Where ports are made.
    pub settings: PortSettings,
    /// The pod network and its subnets (read again every
    /// `Options::net_refresh`).
    pub pod_net: crate::pod_net::PodNetCache,
    /// This cluster's id (tag `kuryr-cluster:<id>` on every port).
    pub cluster_id: String,
    /// `[neutron_defaults] ovs_bridge`.
    pub ovs_bridge: String,
    /// The pod_vif driver.
    pub drivers: Arc<Drivers>,
    /// The port pools (`vif_pool_driver` other than `noop`).
    pub pool: Option<Arc<ports::PortPool>>,
    /// How reconciliation recognises pool ports.
    pub pool_rules: gc::PoolRules,
    /// `[vif_pool] ports_pool_update_frequency`.
    pub pool_interval: Duration,
    /// Ports waited for until ACTIVE.
    pub active: Arc<active::ActiveWatch>,
    /// Events on pods.
    pub recorder: Recorder,
    /// Flags.
    pub options: Options,
    /// Failures in a row per pod UID (for the back-off).
    pub(crate) failures: Mutex<HashMap<String, u32>>,
    /// Counters served on `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// The nodes' groups (`None`: no node ports and no worker subnets).
    pub node_groups: Option<handlers::node::NodeGroups>,
    /// Which handlers run.
    pub handlers: handlers::Enabled,
    /// What Services' load balancers need (`None`: no Service handler runs,
    /// or no `[neutron_defaults] service_subnet`).
    pub lb: Option<services::LbSettings>,
    /// Where namespaces' networks are made (`None`: no namespace
    /// networks).
    pub namespaces: Option<crate::namespace_net::Settings>,
    /// The groups opening a direction no policy of a pod isolates (with
    /// NetworkPolicies).
    pub open_groups: Option<crate::policy::OpenGroups>,
    /// Policy rules name pods by peer-set groups (see
    /// [`kuryr_policy::PeerSet`]): `[kubernetes] network_policy_peers =
    /// remote_group`, or `auto` on ML2/OVN.
    pub peer_groups: bool,
    /// The default groups of each project's pods but the default's (see
    /// [`crate::tenants`]).
    pub tenant_groups: Mutex<HashMap<String, Vec<String>>>,
    /// The groups each pod port was last seen with or given by the pod
    /// groups handler (the policy handler waits on it for a new rule's
    /// peers to be members first).
    pub port_groups: Mutex<HashMap<String, Vec<String>>>,
    /// Namespaces' networks read so far, by id (for their pods' VIFs).
    pub namespace_nets: Mutex<HashMap<String, Arc<crate::pod_net::PodNet>>>,
    /// Warnings about the configuration, logged at start.
    pub warnings: Vec<String>,
}

impl Context {
    /// Looks up the pod network and subnet, the project and its security
    /// groups, and sets up the driver and pools kuryr.conf asks for.
    pub async fn new(
        kube: kube::Client,
        os: kuryr_openstack::Client,
        cfg: &kuryr_config::KuryrConfig,
        cluster_id: String,
        options: Options,
    ) -> anyhow::Result<Self> {
        let nd = &cfg.neutron_defaults;
        let k = &cfg.kubernetes;
        let kind = DriverKind::parse(&k.pod_vif_driver).ok_or_else(|| {
            anyhow::anyhow!(
                "kuryr.conf [kubernetes] pod_vif_driver {} is not supported",
                k.pod_vif_driver
            )
        })?;
        if !kind.pool_drivers().contains(&k.vif_pool_driver.as_str()) {
            anyhow::bail!(
                "kuryr.conf [kubernetes] vif_pool_driver = {} does not work with pod_vif_driver = {}: use one of {:?}",
                k.vif_pool_driver,
                k.pod_vif_driver,
                kind.pool_drivers()
            );
        }
        let subnet_id = nd.pod_subnet.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "kuryr.conf [neutron_defaults] pod_subnet is not set: pods need a subnet"
            )
        })?;
        let n = os.neutron();
        let subnet = n
            .get_subnet(&subnet_id)
            .await
            .map_err(|e| anyhow::anyhow!("pod subnet {subnet_id}: {e}"))?;
        let pod_net = crate::pod_net::PodNet::read(&n, &subnet.network_id).await?;
        let project_id = match &nd.project {
            Some(p) => p.clone(),
            None => os.project_id().await?,
        };
        // the groups every pod port gets: pools are keyed by them, so
        // Neutron's implicit default is resolved to its id
        let mut security_groups = nd.pod_security_groups.clone();
        if security_groups.is_empty() {
            let q = Query::new()
                .filter("name", "default")
                .filter("project_id", &project_id);
            let sg = n.list_security_groups(&q).await?.into_iter().next().ok_or_else(|| {
                anyhow::anyhow!("project {project_id} has no default security group: set [neutron_defaults] pod_security_groups")
            })?;
            security_groups.push(sg.id);
        }
        let tags = plan::cluster_tags(&nd.resource_tags, &cluster_id);
        // what comes from the nodes reaches every pod, whatever its groups
        let workers = &cfg.pod_vif_nested.worker_nodes_subnets;
        let node_groups = if cfg.node_port.enabled || !workers.is_empty() {
            let g = handlers::node::ensure_groups(
                &os,
                &project_id,
                &tags,
                &cluster_id,
                cfg.node_port.enabled,
                workers,
            )
            .await
            .map_err(|e| anyhow::anyhow!("the nodes' security groups: {e}"))?;
            security_groups.push(g.access.clone());
            Some(g)
        } else {
            None
        };
        security_groups.sort();
        security_groups.dedup();
        let (mut enabled, mut warnings) = handlers::Enabled::from_names(&k.enabled_handlers);
        // NetworkPolicies need both, as in kuryr-kubernetes: the handler and
        // the security groups driver that gives pods their policies' groups
        let policy_driver = k.pod_security_groups_driver == "policy";
        if enabled.policies && !(policy_driver && enabled.pods) {
            warnings.push("[kubernetes] enabled_handlers names policy, but NetworkPolicies also need pod_security_groups_driver = policy and the vif handler: not enforced".into());
            enabled.policies = false;
        } else if policy_driver && !enabled.policies {
            warnings.push("[kubernetes] pod_security_groups_driver = policy, but enabled_handlers does not name policy: NetworkPolicies are not enforced".into());
        }
        let open_groups = if enabled.policies {
            Some(
                handlers::network_policy::ensure_open_groups(&os, &project_id, &tags, &cluster_id)
                    .await
                    .map_err(|e| anyhow::anyhow!("the policies' open groups: {e}"))?,
            )
        } else {
            None
        };
        let peer_groups = enabled.policies
            && match k.network_policy_peers.as_str() {
                "remote_group" => true,
                "ip_prefix" => false,
                // auto: remote groups where they are known to hold (OVN's
                // address sets); ML2/OVS's openvswitch firewall lost remote
                // group members as ports came and went (see README)
                _ => match os.neutron().agents().await {
                    Ok(agents) => agents.iter().any(|a| a.agent_type.starts_with("OVN ")),
                    Err(e) => {
                        warnings.push(format!("[kubernetes] network_policy_peers = auto: Neutron's agents could not be listed ({e}); policies name pods by address (ip_prefix)"));
                        false
                    }
                },
            };
        // namespace networks need the namespace handler and the driver
        let namespace_driver = k.pod_subnets_driver == "namespace";
        if enabled.namespaces && !(namespace_driver && enabled.pods) {
            warnings.push("[kubernetes] enabled_handlers names namespace, but namespace networks also need pod_subnets_driver = namespace and the vif handler: namespaces get no networks".into());
            enabled.namespaces = false;
        } else if namespace_driver && !enabled.namespaces {
            warnings.push("[kubernetes] pod_subnets_driver = namespace, but enabled_handlers does not name namespace: namespaces get no networks".into());
        }
        let namespaces = match (enabled.namespaces, &cfg.namespace_subnet) {
            (
                true,
                kuryr_config::NamespaceSubnet {
                    pod_subnet_pool: Some(pool),
                    pod_router: Some(router),
                },
            ) => {
                let sp = n.get_subnet_pool(pool).await.map_err(|e| {
                    anyhow::anyhow!("[namespace_subnet] pod_subnet_pool {pool}: {e}")
                })?;
                n.get_router(router)
                    .await
                    .map_err(|e| anyhow::anyhow!("[namespace_subnet] pod_router {router}: {e}"))?;
                // the nodes reach namespaces' pods through the router, from
                // their port on the pod subnet
                let q = Query::new().filter("device_id", router);
                let on_pod_subnet = n.list_ports(&q).await?.iter().any(|p| {
                    p.fixed_ips
                        .iter()
                        .any(|f| f.subnet_id.as_deref() == Some(subnet_id.as_str()))
                });
                if !on_pod_subnet {
                    warnings.push(format!("[namespace_subnet] pod_router {router} has no interface on [neutron_defaults] pod_subnet {subnet_id}: nodes cannot reach pods on namespaces' networks (attach the pod subnet to that router)"));
                }
                Some(crate::namespace_net::Settings {
                    prefixes: sp.prefixes.clone(),
                    subnet_pool: sp.id,
                    ip_version: sp.ip_version,
                    router: router.clone(),
                    project_id: project_id.clone(),
                    mtu: nd.network_device_mtu,
                })
            }
            _ => None,
        };
        let lb = match (&nd.service_subnet, enabled.any_service()) {
            (Some(service_subnet), true) => {
                let od = &cfg.octavia_defaults;
                let provider = match k.endpoints_driver_octavia_provider.as_str() {
                    "default" | "" => None,
                    p => Some(p.to_owned()),
                };
                let service_cidr = n
                    .get_subnet(service_subnet)
                    .await
                    .map_err(|e| anyhow::anyhow!("service subnet {service_subnet}: {e}"))?
                    .cidr;
                let lb_algorithm = services::algorithm_for(provider.as_deref(), &od.lb_algorithm);
                if lb_algorithm != od.lb_algorithm {
                    warnings.push(format!("[octavia_defaults] lb_algorithm {} is not available with the {} provider: {lb_algorithm} is used", od.lb_algorithm, provider.as_deref().unwrap_or("default")));
                }
                if od.member_mode == "L2" {
                    warnings.push("[octavia_defaults] member_mode L2 is read and not acted on: members are given the subnet of their address either way".into());
                }
                Some(services::LbSettings {
                    service: services::ServiceSettings {
                        project_id: project_id.clone(),
                        subnet_id: service_subnet.clone(),
                        provider,
                        security_groups: if od.enforce_sg_rules {
                            security_groups.clone()
                        } else {
                            vec![]
                        },
                        timeout_client_data: u64::from(od.timeout_client_data),
                        timeout_member_data: u64::from(od.timeout_member_data),
                    },
                    lb_algorithm,
                    external_net: nd.external_svc_net.clone(),
                    service_cidr,
                })
            }
            (None, true) => {
                warnings.push(
                    "[neutron_defaults] service_subnet is not set: Services get no load balancers"
                        .into(),
                );
                None
            }
            (_, false) => None,
        };
        let settings = PortSettings {
            network_id: pod_net.network.id.clone(),
            subnet_id: subnet_id.clone(),
            security_groups: security_groups.clone(),
            project_id: Some(project_id.clone()),
        };
        let drivers = Arc::new(Drivers::new(
            kind,
            os.clone(),
            kube.clone(),
            settings.clone(),
            tags,
            &cluster_id,
            cfg.pod_vif_nested.worker_nodes_subnets.clone(),
        ));
        let metrics = Arc::new(metrics::Metrics::new(options.liveness_bound));
        let vp = &cfg.vif_pool;
        let pool_interval = Duration::from_secs(u64::from(vp.ports_pool_update_frequency.max(1)));
        let pooled = k.vif_pool_driver != "noop";
        let pool = pooled.then(|| {
            ports::PortPool::new(
                drivers.clone(),
                pool::Limits {
                    min: vp.ports_pool_min as usize,
                    max: vp.ports_pool_max as usize,
                    batch: vp.ports_pool_batch as usize,
                },
                options.pool_cool_down.unwrap_or(pool_interval),
                k.port_debug,
                metrics.clone(),
            )
        });
        if let Some(p) = &pool {
            metrics.register_collector(PoolPorts(p.clone()));
        }
        metrics.register_collector(metrics::OpenStackRequests(os.clone()));
        let recorder = Recorder::new(
            kube.clone(),
            Reporter {
                controller: "kuryr-controller".into(),
                instance: options.instance.clone(),
            },
        );
        Ok(Self {
            pool_rules: gc::PoolRules {
                enabled: pooled,
                nested: kind == DriverKind::NestedVlan,
                project_id,
                subnet_id,
                security_groups,
            },
            settings,
            pod_net: crate::pod_net::PodNetCache::new(pod_net),
            ovs_bridge: nd.ovs_bridge.clone(),
            kube,
            os,
            cluster_id,
            drivers,
            pool,
            pool_interval,
            active: Arc::default(),
            recorder,
            options,
            failures: Mutex::default(),
            metrics,
            node_groups,
            handlers: enabled,
            lb,
            namespaces,
            namespace_nets: Mutex::default(),
            tenant_groups: Mutex::default(),
            port_groups: Mutex::default(),
            open_groups,
            peer_groups,
            warnings,
        })
    }
}

/// `kuryr_pool_ports{pool,subnet,state}`: the ports of each pool.
struct PoolPorts(Arc<ports::PortPool>);

impl std::fmt::Debug for PoolPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolPorts").finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for PoolPorts {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let mut family = encoder.encode_descriptor(
            "kuryr_pool_ports",
            "Ports of each pool, by state (free, cooling, used).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (k, free, cooling, used) in self.0.sizes() {
            for (state, v) in [("free", free), ("cooling", cooling), ("used", used)] {
                let labels = [
                    ("pool", k.host.as_str()),
                    ("subnet", k.subnet_id.as_str()),
                    ("state", state),
                ];
                ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
