//! The node handler against the stack's kube-apiserver and Neutron: every
//! node gets its own port on the pod subnet, recorded in the Node's
//! annotation; pod ports get the node-access group, which admits the nodes'
//! group and nothing else; a deleted node's port goes, at once or at the
//! next reconciliation.
#![cfg(feature = "stack")]

mod common;

use common::{Harness, start};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams};
use kuryr_controller::handlers::node as nodes;
use kuryr_controller::{Options, plan};
use kuryr_crds::node::node_tag;
use kuryr_crds::{NODE_PORT_ANNOTATION, NodePort};
use kuryr_openstack::Query;
use kuryr_openstack::types::neutron::{FixedIp, PortCreate};
use kuryr_stack_tests::{finally, unique_name, wait_until};
use std::time::Duration;

const CONF: &str = "[node_port]\nenabled = true\n";

async fn node_port_of(nodes: &Api<Node>, name: &str) -> anyhow::Result<Option<NodePort>> {
    Ok(nodes
        .get_opt(name)
        .await?
        .and_then(|n| n.metadata.annotations)
        .and_then(|a| a.get(NODE_PORT_ANNOTATION).cloned())
        .map(|v| NodePort::parse(&v))
        .transpose()?)
}

#[tokio::test]
async fn every_node_gets_a_port_and_pods_admit_only_the_nodes() -> anyhow::Result<()> {
    let h = Harness::new("knodes", "10.96.40.0/24").await?;
    finally(
        async {
            let n = h.os.neutron();
            let kube_nodes: Api<Node> = Api::all(h.kube.clone());
            let node = unique_name("kn-node-", 40);
            h.make_node(&node, "192.0.2.60").await?;
            let uid = kube_nodes
                .get(&node)
                .await?
                .metadata
                .uid
                .unwrap_or_default();
            // a port of a node that no longer exists, left by an earlier run
            let mut tags = vec!["kuryr-rs-test".to_string(), plan::cluster_tag(&h.cluster)];
            tags.push(node_tag("0e0e0e0e-dead-4000-8000-000000000000"));
            let stale = n
                .create_port_tagged(
                    &PortCreate {
                        network_id: h.net.id.clone(),
                        name: Some("kuryr-node/gone".into()),
                        fixed_ips: Some(vec![FixedIp {
                            subnet_id: Some(h.subnet.id.clone()),
                            ip_address: None,
                        }]),
                        ..Default::default()
                    },
                    &tags,
                )
                .await?;

            let options = || Options {
                node_selector: Some(format!("kuryr-test={}", h.label)),
                gc_interval: Duration::ZERO,
                ..Default::default()
            };
            let ctx = h.context(CONF, options()).await?;
            let groups = ctx.node_groups.clone().expect("node groups");
            let nodes_group = groups.nodes.clone().expect("nodes group");
            assert_ne!(groups.access, nodes_group, "two groups");
            let nodes_rules = n
                .list_security_group_rules(&Query::new().filter("security_group_id", &nodes_group))
                .await?;
            assert!(
                nodes_rules.iter().any(|r| r.direction == "egress"),
                "node ports may send: {nodes_rules:?}"
            );
            assert!(
                nodes_rules.iter().all(|r| r.direction == "egress"),
                "and take nothing in: {nodes_rules:?}"
            );
            // and its rule in the access group, as a crash between the two
            // deletes would leave it
            let stale_ip = stale.fixed_ips[0].ip_address.clone().expect("address");
            let stale_rule = n
                .create_security_group_rule(&kuryr_controller::handlers::node::node_rule(
                    &groups.access,
                    &stale_ip,
                    "gone",
                ))
                .await?;
            let running = start(ctx.clone());

            // start-up reconciliation removed the port of the gone node and its rule
            wait_until(
                "stale node rule deleted",
                Duration::from_secs(60),
                Duration::from_millis(300),
                || async {
                    Ok(
                        n.list_security_group_rules(&Query::new().filter("id", &stale_rule.id))
                            .await?
                            .is_empty()
                            .then_some(()),
                    )
                },
            )
            .await?;
            wait_until(
                "stale node port deleted",
                Duration::from_secs(60),
                Duration::from_millis(300),
                || async {
                    Ok(n.list_ports(&Query::new().filter("id", &stale.id))
                        .await?
                        .is_empty()
                        .then_some(()))
                },
            )
            .await?;

            // the node's port, as its annotation records it
            let np = wait_until(
                "node port annotation",
                Duration::from_secs(60),
                Duration::from_millis(200),
                || async { node_port_of(&kube_nodes, &node).await },
            )
            .await?;
            let port = n.get_port(&np.vif.id).await?;
            assert!(port.tags.contains(&node_tag(&uid)), "{:?}", port.tags);
            assert!(port.tags.contains(&plan::cluster_tag(&h.cluster)));
            assert_eq!(port.security_groups, std::slice::from_ref(&nodes_group));
            assert_eq!(port.binding_host_id, node);
            assert_eq!(port.device_owner, "compute:kuryr-node");
            assert_eq!(port.network_id, h.net.id);
            assert_eq!(np.vif.address, port.mac_address);
            assert_eq!(np.vif.network.subnets[0].cidr, "10.96.40.0/24");
            assert!(np.routes.is_empty());

            // the access group: ingress from the node port's address, nothing outbound
            let access_rules = || async {
                Ok::<_, anyhow::Error>(
                    n.list_security_group_rules(
                        &Query::new().filter("security_group_id", &groups.access),
                    )
                    .await?,
                )
            };
            let node_ip = port.fixed_ips[0]
                .ip_address
                .clone()
                .expect("node port address");
            let rules = access_rules().await?;
            assert_eq!(rules.len(), 1, "{rules:?}");
            let r = &rules[0];
            assert_eq!(r.direction, "ingress", "{r:?}");
            assert_eq!(
                r.remote_ip_prefix.as_deref(),
                Some(format!("{node_ip}/32").as_str()),
                "{r:?}"
            );
            assert!(r.protocol.is_none() && r.remote_group_id.is_none(), "{r:?}");
            // a pod's port carries it beside the pod's own group
            let pod = unique_name("knp-", 40);
            let uids = h.create_pods(std::slice::from_ref(&pod), &node).await?;
            let vif = h.vif_of(&pod, &uids[0], Duration::from_secs(60)).await?;
            let pport = n.get_port(&vif.id).await?;
            assert!(
                pport.security_groups.contains(&groups.access),
                "{:?}",
                pport.security_groups
            );
            assert_eq!(
                pport.security_groups.len(),
                2,
                "the default group and the access group"
            );

            // a restarted controller finds the same port and groups: with the
            // annotation gone it records the port it finds by tag, no new one
            running.stop().await;
            let patch =
                serde_json::json!({"metadata": {"annotations": {NODE_PORT_ANNOTATION: null}}});
            kube_nodes
                .patch(
                    &node,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(patch),
                )
                .await?;
            let ctx2 = h.context(CONF, options()).await?;
            assert_eq!(ctx2.node_groups, Some(groups.clone()));
            let running = start(ctx2);
            let again = wait_until(
                "node port annotation again",
                Duration::from_secs(60),
                Duration::from_millis(200),
                || async { node_port_of(&kube_nodes, &node).await },
            )
            .await?;
            assert_eq!(again, np, "the same port");
            let mine = || async {
                Ok::<_, anyhow::Error>(
                    n.list_ports(
                        &Query::new().tags([plan::cluster_tag(&h.cluster), node_tag(&uid)]),
                    )
                    .await?,
                )
            };
            assert_eq!(mine().await?.len(), 1, "one port per node");

            // the node goes: so does its port
            kube_nodes.delete(&node, &DeleteParams::default()).await?;
            wait_until(
                "node port deleted with its node",
                Duration::from_secs(60),
                Duration::from_millis(300),
                || async { Ok(mine().await?.is_empty().then_some(())) },
            )
            .await?;
            // and its rule: nothing from that address is admitted any more
            wait_until(
                "node rule deleted with its port",
                Duration::from_secs(60),
                Duration::from_millis(300),
                || async { Ok(access_rules().await?.is_empty().then_some(())) },
            )
            .await?;
            h.delete_all_pods(Duration::from_secs(60)).await?;
            running.stop().await;
            Ok(())
        },
        h.cleanup(),
    )
    .await
}

#[tokio::test]
async fn nested_clusters_admit_the_worker_subnets_and_make_no_node_ports() -> anyhow::Result<()> {
    let h = Harness::new("knested-access", "10.96.41.0/24").await?;
    finally(
        async {
            let conf = format!(
                "[kubernetes]\npod_vif_driver = nested-vlan\n[pod_vif_nested]\nworker_nodes_subnets = {}\n",
                h.subnet.id
            );
            let ctx = h.context(&conf, Options::default()).await?;
            let groups = ctx.node_groups.clone().expect("groups for the worker subnets");
            assert_eq!(groups.nodes, None, "no node ports in nested mode");
            assert_eq!(groups.access, {
                let g = h
                    .os
                    .neutron()
                    .list_security_groups(&Query::new().filter("name", nodes::access_group_name(&h.cluster)))
                    .await?;
                g[0].id.clone()
            });
            let rules = h
                .os
                .neutron()
                .list_security_group_rules(&Query::new().filter("security_group_id", &groups.access))
                .await?;
            assert_eq!(rules.len(), 1, "{rules:?}");
            assert_eq!(rules[0].remote_ip_prefix.as_deref(), Some("10.96.41.0/24"));
            assert_eq!(rules[0].direction, "ingress");
            Ok(())
        },
        h.cleanup(),
    )
    .await
}
