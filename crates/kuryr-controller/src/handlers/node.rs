//! The node handler: every node reaches the pods on its networks, without
//! NAT, and pods admit what comes from nodes and nothing else from the host
//! side.
//!
//! - Two security groups per cluster: `kuryr/<cluster>/nodes`, the group of
//!   the node ports (no ingress rule: only replies come in), and
//!   `kuryr/<cluster>/node-access`, which every pod port gets beside its own
//!   groups: ingress from each node port's address (one host-prefix rule
//!   per node, made with its port and deleted with it), and from the
//!   `[pod_vif_nested] worker_nodes_subnets` (node VMs, which reach their
//!   pods through their own NIC and the router). It has no egress rule, so
//!   it never widens what a pod's own groups let out. Addresses rather than
//!   a remote-group rule: the openvswitch firewall driver of ML2/OVS lost
//!   the members of a remote group whose referencing ports came and went
//!   (node to pod traffic dropped on a pod made after others were deleted),
//!   and an address rule costs the agents and OVN no membership tracking.
//! - Side-by-side (`[node_port] enabled`): a Neutron port per node on the
//!   pod subnet, bound to the node, in the nodes group, tagged
//!   `kuryr-node:<node uid>`, recorded in the Node's annotation
//!   `openstack.org/kuryr-node-port`, which the node's daemon plugs as a host
//!   interface, with a route to the service subnet through the pods'
//!   router when Services are handled (meant for the node to reach
//!   ClusterIPs; on OVN 23.03 the reply is not un-NATed yet, see README)
//!   and to the namespaces' subnet pool when namespaces have networks.
//!   Deleted when the node goes (watch) or, if the controller
//!   missed that, by reconciliation (see [`crate::gc`]).

use crate::{Context, Error, plan};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kuryr_crds::node::node_tag;
use kuryr_crds::{NODE_PORT_ANNOTATION, NodePort, Vif, VifKind};
use kuryr_openstack::Query;
use kuryr_openstack::types::neutron::{
    FixedIp, PortCreate, SecurityGroupCreate, SecurityGroupRuleCreate,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The two groups of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGroups {
    /// `kuryr/<cluster>/nodes`, when node ports are on.
    pub nodes: Option<String>,
    /// `kuryr/<cluster>/node-access`, on every pod port.
    pub access: String,
}

/// Name of the group of the node ports.
pub fn nodes_group_name(cluster_id: &str) -> String {
    format!("kuryr/{cluster_id}/nodes")
}

/// Name of the group every pod port gets.
pub fn access_group_name(cluster_id: &str) -> String {
    format!("kuryr/{cluster_id}/node-access")
}

/// Name of a node's port (unique on its network: found by it again when a
/// crash left it untagged).
pub fn node_port_name(node: &str) -> String {
    format!("kuryr-node/{node}")
}

/// The ingress rules of the access group made once per cluster: from each
/// worker-node CIDR (nested clusters).
pub fn access_rules(access: &str, worker_cidrs: &[String]) -> Vec<SecurityGroupRuleCreate> {
    worker_cidrs
        .iter()
        .map(|c| SecurityGroupRuleCreate {
            security_group_id: access.to_owned(),
            direction: "ingress".into(),
            ethertype: Some(family(c).into()),
            remote_ip_prefix: Some(c.clone()),
            description: Some("kuryr-rs: traffic from the cluster's worker nodes".into()),
            ..Default::default()
        })
        .collect()
}

/// Description of a node's rule in the access group: how reconciliation
/// tells node rules from the worker-subnet ones.
pub const NODE_RULE_DESCRIPTION: &str = "kuryr-rs: traffic from node port";

fn family(addr: &str) -> &'static str {
    if addr.contains(':') { "IPv6" } else { "IPv4" }
}

/// The host prefix of an address (`/32` or `/128`).
pub fn host_prefix(ip: &str) -> String {
    format!("{ip}/{}", if ip.contains(':') { 128 } else { 32 })
}

/// The access group's rule admitting a node port's address.
pub fn node_rule(access: &str, ip: &str, node: &str) -> SecurityGroupRuleCreate {
    SecurityGroupRuleCreate {
        security_group_id: access.to_owned(),
        direction: "ingress".into(),
        ethertype: Some(family(ip).into()),
        remote_ip_prefix: Some(host_prefix(ip)),
        description: Some(format!("{NODE_RULE_DESCRIPTION} {node}")),
        ..Default::default()
    }
}

/// Whether an access-group rule is a node rule none of `live_ips` (the
/// addresses of the node ports that exist) still needs.
pub fn stale_node_rule(
    rule: &kuryr_openstack::types::neutron::SecurityGroupRule,
    live_ips: &std::collections::BTreeSet<String>,
) -> bool {
    rule.description.starts_with(NODE_RULE_DESCRIPTION)
        && rule
            .remote_ip_prefix
            .as_deref()
            .is_some_and(|p| !live_ips.iter().any(|ip| host_prefix(ip) == p))
}

/// Makes (or finds) the cluster's two groups and the access group's rules;
/// the access group's default egress rules are removed. Idempotent.
pub async fn ensure_groups(
    os: &kuryr_openstack::Client,
    project_id: &str,
    tags: &[String],
    cluster_id: &str,
    node_ports: bool,
    worker_subnets: &[String],
) -> Result<NodeGroups, kuryr_openstack::Error> {
    let n = os.neutron();
    let group = |name: String, what: &str| SecurityGroupCreate {
        name,
        description: Some(format!("kuryr-rs cluster {cluster_id}: {what}")),
        project_id: Some(project_id.to_owned()),
        stateful: None,
    };
    // each group is found by its own tag (the cluster's tags alone would
    // find either)
    let tagged = |role: &str| {
        let mut t = tags.to_vec();
        t.push(format!("kuryr-group:{role}"));
        t
    };
    let nodes = if node_ports {
        Some(
            n.ensure_security_group(
                &tagged("nodes"),
                &group(nodes_group_name(cluster_id), "the nodes' own ports"),
            )
            .await?
            .id,
        )
    } else {
        None
    };
    let access = n
        .ensure_security_group(
            &tagged("node-access"),
            &group(
                access_group_name(cluster_id),
                "on every pod port, admits the nodes",
            ),
        )
        .await?
        .id;
    let mut cidrs = Vec::new();
    for s in worker_subnets {
        cidrs.push(n.get_subnet(s).await?.cidr);
    }
    for r in access_rules(&access, &cidrs) {
        n.ensure_security_group_rule(&r).await?;
    }
    let egress = Query::new()
        .filter("security_group_id", &access)
        .filter("direction", "egress");
    for r in n.list_security_group_rules(&egress).await? {
        n.delete_security_group_rule(&r.id).await?;
    }
    // a remote-group rule of an earlier kuryr-rs (see the module comment)
    let all = Query::new().filter("security_group_id", &access);
    for r in n.list_security_group_rules(&all).await? {
        if r.remote_group_id.is_some() {
            n.delete_security_group_rule(&r.id).await?;
        }
    }
    Ok(NodeGroups { nodes, access })
}

/// The node's port (found by tag, or made) and the annotation that
/// records it; the Node is patched when its annotation differs. Answers the
/// annotation's value.
async fn ensure_node_port(node: &Node, ctx: &Context, nodes_group: &str) -> Result<String, Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let uid = node.metadata.uid.clone().unwrap_or_default();
    let mut tags = ctx.drivers.tags.clone();
    tags.push(node_tag(&uid));
    let s = &ctx.settings;
    let body = PortCreate {
        network_id: s.network_id.clone(),
        name: Some(node_port_name(&name)),
        description: Some(ctx.drivers.description.clone()),
        project_id: s.project_id.clone(),
        fixed_ips: Some(vec![FixedIp {
            subnet_id: Some(s.subnet_id.clone()),
            ip_address: None,
        }]),
        device_id: Some(uid.clone()),
        device_owner: Some("compute:kuryr-node".into()),
        security_groups: Some(vec![nodes_group.to_owned()]),
        binding_host_id: Some(name.clone()),
        ..Default::default()
    };
    let port = ctx.os.neutron().ensure_port(&tags, &body).await?;
    if let Some(groups) = &ctx.node_groups {
        for ip in port
            .fixed_ips
            .iter()
            .filter_map(|f| f.ip_address.as_deref())
        {
            ctx.os
                .neutron()
                .ensure_security_group_rule(&node_rule(&groups.access, ip, &name))
                .await?;
        }
    }
    let net = ctx.pod_net.get();
    let mut vif = Vif::from_port(
        &port,
        &net.network,
        &net.subnets,
        VifKind::OpenVSwitch {
            bridge_name: ctx.ovs_bridge.clone(),
        },
    );
    // the annotation changes only when the port does, not with its status
    vif.active = false;
    // Services' VIPs and namespaces' subnets: through the pods' router,
    // like the pods reach them
    let gateway = net.subnets.iter().find_map(|s| s.gateway_ip.clone());
    let mut cidrs: Vec<String> = ctx.lb.iter().map(|lb| lb.service_cidr.clone()).collect();
    cidrs.extend(ctx.namespaces.iter().flat_map(|n| n.prefixes.clone()));
    let routes = match gateway {
        Some(gateway) => cidrs
            .into_iter()
            .map(|cidr| kuryr_crds::NodeRoute {
                cidr,
                gateway: gateway.clone(),
            })
            .collect(),
        None => vec![],
    };
    let want = NodePort { vif, routes };
    let have = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODE_PORT_ANNOTATION))
        .and_then(|v| NodePort::parse(v).ok());
    if have.as_ref() != Some(&want) {
        let nodes: Api<Node> = Api::all(ctx.kube.clone());
        let patch =
            json!({"metadata": {"annotations": {NODE_PORT_ANNOTATION: want.to_annotation()}}});
        nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        tracing::info!(node = %name, port = %port.id, ip = port.first_ip().unwrap_or("-"), "node port ready");
    }
    Ok(want.to_annotation())
}

/// Deletes the ports of node `uid` and their rules in the access group
/// (idempotent).
async fn delete_node_ports(ctx: &Context, uid: &str) -> Result<usize, Error> {
    let n = ctx.os.neutron();
    let q = Query::new()
        .tags([plan::cluster_tag(&ctx.cluster_id), node_tag(uid)])
        .fields(["id", "network_id", "fixed_ips"]);
    let mut deleted = 0;
    for p in n.list_ports(&q).await? {
        if n.delete_port(&p.id).await? {
            deleted += 1;
        }
    }
    prune_node_rules(ctx).await?;
    Ok(deleted)
}

/// Deletes the access group's node rules whose node port is gone (a node
/// deleted while the controller was down, or between a port's delete and
/// its rule's). Answers how many went.
pub async fn prune_node_rules(ctx: &Context) -> Result<usize, Error> {
    let Some(groups) = &ctx.node_groups else {
        return Ok(0);
    };
    let n = ctx.os.neutron();
    // rules first: a rule is made after its port, so every rule listed
    // here whose port exists has that port in the list that follows
    let rules = n
        .list_security_group_rules(&Query::new().filter("security_group_id", &groups.access))
        .await?;
    let live: std::collections::BTreeSet<String> = n
        .list_ports(
            &Query::new()
                .tags([plan::cluster_tag(&ctx.cluster_id)])
                .filter("device_owner", "compute:kuryr-node")
                .fields(["id", "network_id", "fixed_ips"]),
        )
        .await?
        .iter()
        .flat_map(|p| p.fixed_ips.iter().filter_map(|f| f.ip_address.clone()))
        .collect();
    let mut gone = 0;
    for r in rules.iter().filter(|r| stale_node_rule(r, &live)) {
        match n.delete_security_group_rule(&r.id).await {
            Ok(_) => gone += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(gone)
}

/// How long a node port checked in Neutron is taken as there: a Node
/// changes often (status, leases, labels) and each change must not cost a
/// Neutron call; a port deleted behind our back is made again within this.
const RECHECK: Duration = Duration::from_secs(300);

/// Node uid → (annotation value, when it was checked against Neutron).
type Checked = std::sync::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>;

async fn reconcile(node: Arc<Node>, ctx: Arc<(Arc<Context>, Checked)>) -> Result<Action, Error> {
    let (ctx, checked) = (&ctx.0, &ctx.1);
    let Some(nodes_group) = ctx.node_groups.as_ref().and_then(|g| g.nodes.as_ref()) else {
        return Ok(Action::await_change());
    };
    if node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = node.metadata.uid.clone().unwrap_or_default();
    let annotation = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODE_PORT_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    let fresh = crate::lock(checked)
        .get(&uid)
        .is_some_and(|(a, t)| *a == annotation && t.elapsed() < RECHECK);
    if !fresh {
        let now = ensure_node_port(&node, ctx, nodes_group).await?;
        crate::lock(checked).insert(uid, (now, std::time::Instant::now()));
    }
    Ok(Action::requeue(RECHECK))
}

fn error_policy(node: Arc<Node>, err: &Error, _ctx: Arc<(Arc<Context>, Checked)>) -> Action {
    tracing::warn!(node = node.metadata.name.as_deref().unwrap_or("-"), error = %err, "node port not set up yet; retrying in 10 s");
    Action::requeue(Duration::from_secs(10))
}

/// Runs the node handler until the process ends: a port for every node
/// (side-by-side), deleted when its node is deleted.
pub async fn run(ctx: Arc<Context>) {
    if ctx
        .node_groups
        .as_ref()
        .and_then(|g| g.nodes.as_ref())
        .is_none()
    {
        return;
    }
    let nodes: Api<Node> = Api::all(ctx.kube.clone());
    let mut cfg = watcher::Config::default();
    if let Some(sel) = &ctx.options.node_selector {
        cfg = cfg.labels(sel);
    }
    let deletions = {
        let cfg = cfg.clone();
        let ctx = ctx.clone();
        let nodes = nodes.clone();
        async move {
            let mut events = std::pin::pin!(watcher::watcher(nodes, cfg).default_backoff());
            while let Some(ev) = events.next().await {
                if let Ok(watcher::Event::Delete(n)) = ev {
                    let uid = n.metadata.uid.clone().unwrap_or_default();
                    // retried by reconciliation if Neutron does not answer now
                    match delete_node_ports(&ctx, &uid).await {
                        Ok(k) => {
                            tracing::info!(
                                node = n.metadata.name.as_deref().unwrap_or("-"),
                                ports = k,
                                "node deleted: its port is gone"
                            )
                        }
                        Err(e) => {
                            tracing::warn!(node = n.metadata.name.as_deref().unwrap_or("-"), error = %e, "deleting a node's port failed; reconciliation will")
                        }
                    }
                }
            }
        }
    };
    let handler = Controller::new(nodes, cfg)
        .run(reconcile, error_policy, Arc::new((ctx, Checked::default())))
        .for_each(|_| async {});
    tokio::join!(deletions, handler);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_group_admits_node_ports_and_worker_subnets_only_inbound() {
        let r = access_rules("acc", &["10.0.1.0/24".into(), "fd00::/64".into()]);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.direction == "ingress"
            && r.security_group_id == "acc"
            && r.protocol.is_none()
            && r.remote_group_id.is_none()));
        assert_eq!(r[0].remote_ip_prefix.as_deref(), Some("10.0.1.0/24"));
        assert_eq!(r[1].ethertype.as_deref(), Some("IPv6"));
        let n = node_rule("acc", "10.0.0.7", "w1");
        assert_eq!(n.remote_ip_prefix.as_deref(), Some("10.0.0.7/32"));
        assert_eq!(n.ethertype.as_deref(), Some("IPv4"));
        assert_eq!(n.direction, "ingress");
        assert!(n.protocol.is_none() && n.port_range_min.is_none());
        let n6 = node_rule("acc", "fd00::7", "w1");
        assert_eq!(n6.remote_ip_prefix.as_deref(), Some("fd00::7/128"));
        assert_eq!(n6.ethertype.as_deref(), Some("IPv6"));
    }

    #[test]
    fn only_node_rules_of_gone_ports_are_stale() {
        use kuryr_openstack::types::neutron::SecurityGroupRule;
        let rule = |prefix: &str, desc: &str| -> SecurityGroupRule {
            serde_json::from_value(serde_json::json!({
                "id": "r", "security_group_id": "acc", "direction": "ingress",
                "ethertype": "IPv4", "remote_ip_prefix": prefix, "description": desc}))
            .expect("rule")
        };
        let live: std::collections::BTreeSet<String> = ["10.0.0.7".to_string()].into();
        let node = format!("{NODE_RULE_DESCRIPTION} w1");
        assert!(!stale_node_rule(&rule("10.0.0.7/32", &node), &live));
        assert!(stale_node_rule(&rule("10.0.0.8/32", &node), &live));
        // a worker subnet's rule is never a node rule
        assert!(!stale_node_rule(
            &rule(
                "10.0.1.0/24",
                "kuryr-rs: traffic from the cluster's worker nodes"
            ),
            &live
        ));
    }

    #[test]
    fn names_carry_the_cluster_and_the_node() {
        assert_eq!(nodes_group_name("c1"), "kuryr/c1/nodes");
        assert_eq!(access_group_name("c1"), "kuryr/c1/node-access");
        assert_eq!(node_port_name("worker-3"), "kuryr-node/worker-3");
    }
}
