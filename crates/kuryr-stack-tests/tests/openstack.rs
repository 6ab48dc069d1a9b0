//! Smoke tests of the stack's OpenStack: Keystone, Neutron, Octavia, and the
//! Neutron OVS agent wiring ports and trunks on the stack's Open vSwitch.
//! Need `stack/stack up --openstack` and root.
#![cfg(feature = "stack")]

use anyhow::{Context, ensure};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::net::{Netns, OvsBridge, OvsPort, Veth};
use kuryr_stack_tests::openstack::{Session, Undo, with_undo};
use kuryr_stack_tests::{unique_name, wait_until};
use serde_json::{Value, json};
use std::time::Duration;

async fn session() -> anyhow::Result<(StackEnv, Session)> {
    let env = StackEnv::load()?;
    env.require("openstack")?;
    let s = Session::login(&env).await?;
    Ok((env, s))
}

fn id(v: &Value, kind: &str) -> anyhow::Result<String> {
    v[kind]["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {kind}.id in {v}"))
}

async fn network_and_subnet(
    s: &Session,
    undo: &Undo,
    cidr: &str,
) -> anyhow::Result<(String, String)> {
    let name = unique_name("smoke-net-", 40);
    let net = s
        .post(&s.n("networks"), json!({"network": {"name": name}}))
        .await?;
    let net_id = id(&net, "network")?;
    undo.delete(s.n(&format!("networks/{net_id}")));
    let sub = s
        .post(
            &s.n("subnets"),
            json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": cidr, "name": name}}),
        )
        .await?;
    let sub_id = id(&sub, "subnet")?;
    undo.delete(s.n(&format!("subnets/{sub_id}")));
    Ok((net_id, sub_id))
}

async fn port_status(s: &Session, port_id: &str) -> anyhow::Result<String> {
    let p = s.get(&s.n(&format!("ports/{port_id}"))).await?;
    Ok(p["port"]["status"].as_str().unwrap_or_default().to_owned())
}

async fn wait_port_active(s: &Session, port_id: &str) -> anyhow::Result<()> {
    wait_until(
        &format!("Neutron port {port_id} ACTIVE"),
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async { Ok((port_status(s, port_id).await? == "ACTIVE").then_some(())) },
    )
    .await
}

#[tokio::test]
async fn keystone_issues_a_scoped_token_with_the_catalogue() -> anyhow::Result<()> {
    let (_env, s) = session().await?;
    assert_eq!(s.token_body["user"]["name"], "admin");
    assert_eq!(s.token_body["project"]["name"], "admin");
    let roles: Vec<&str> = s.token_body["roles"]
        .as_array()
        .context("roles")?
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(roles.contains(&"admin"), "roles: {roles:?}");
    assert!(s.neutron.starts_with("http://127.0.0.1:"), "{}", s.neutron);
    assert!(s.octavia.starts_with("http://127.0.0.1:"), "{}", s.octavia);
    // Neutron's version document and the extensions kuryr-rs relies on
    let ext = s.get(&s.n("extensions")).await?;
    let aliases: Vec<&str> = ext["extensions"]
        .as_array()
        .context("extensions")?
        .iter()
        .filter_map(|e| e["alias"].as_str())
        .collect();
    for want in [
        "trunk",
        "port-security",
        "allowed-address-pairs",
        "binding",
        "standard-attr-tag",
        "security-group",
        "router",
        "segment",
        "qos",
    ] {
        assert!(
            aliases.contains(&want),
            "Neutron extension {want} missing: {aliases:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn neutron_network_subnet_port_trunk_and_security_group() -> anyhow::Result<()> {
    let (_env, s) = session().await?;
    with_undo(&s, async |undo| {
        {
            let (net_id, sub_id) = network_and_subnet(&s, undo, "10.230.1.0/24").await?;
            // security group with an ingress rule
            let sg = s
                .post(&s.n("security-groups"), json!({"security_group": {"name": unique_name("smoke-sg-", 40)}}))
                .await?;
            let sg_id = id(&sg, "security_group")?;
            undo.delete(s.n(&format!("security-groups/{sg_id}")));
            let rule = s
                .post(
                    &s.n("security-group-rules"),
                    json!({"security_group_rule": {"security_group_id": sg_id, "direction": "ingress",
                        "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 8080, "port_range_max": 8080,
                        "remote_ip_prefix": "10.230.1.0/24"}}),
                )
                .await?;
            assert_eq!(rule["security_group_rule"]["port_range_min"], 8080);
            // a port with our security group, a fixed IP and a tag
            let port = s
                .post(
                    &s.n("ports"),
                    json!({"port": {"network_id": net_id, "name": "smoke-parent", "security_groups": [sg_id],
                        "fixed_ips": [{"subnet_id": sub_id, "ip_address": "10.230.1.10"}]}}),
                )
                .await?;
            let parent = id(&port, "port")?;
            undo.delete(s.n(&format!("ports/{parent}")));
            assert_eq!(port["port"]["fixed_ips"][0]["ip_address"], "10.230.1.10");
            assert_eq!(port["port"]["security_groups"], json!([sg_id]));
            s.put(&s.n(&format!("ports/{parent}/tags/kuryr-smoke")), Value::Null).await?;
            let tagged = s.get(&s.n(&format!("ports?tags=kuryr-smoke&network_id={net_id}"))).await?;
            assert_eq!(tagged["ports"].as_array().map(Vec::len), Some(1), "{tagged}");
            // a trunk on that port with a VLAN subport
            let sub = s.post(&s.n("ports"), json!({"port": {"network_id": net_id, "name": "smoke-sub"}})).await?;
            let sub_port = id(&sub, "port")?;
            undo.delete(s.n(&format!("ports/{sub_port}")));
            let trunk = s
                .post(
                    &s.n("trunks"),
                    json!({"trunk": {"port_id": parent, "name": "smoke-trunk", "sub_ports": [
                        {"port_id": sub_port, "segmentation_type": "vlan", "segmentation_id": 101}]}}),
                )
                .await?;
            let trunk_id = id(&trunk, "trunk")?;
            undo.delete(s.n(&format!("trunks/{trunk_id}")));
            let subs = s.get(&s.n(&format!("trunks/{trunk_id}/get_subports"))).await?;
            assert_eq!(
                subs["sub_ports"],
                json!([{"port_id": sub_port, "segmentation_type": "vlan", "segmentation_id": 101}])
            );
            // remove the subport again
            s.put(
                &s.n(&format!("trunks/{trunk_id}/remove_subports")),
                json!({"sub_ports": [{"port_id": sub_port}]}),
            )
            .await?;
            let subs = s.get(&s.n(&format!("trunks/{trunk_id}/get_subports"))).await?;
            assert_eq!(subs["sub_ports"], json!([]));
            Ok(())
        }
    })
    .await
}

/// Two Neutron ports bound to the agent's host, plugged into `br-int` as veths
/// (host end with `external_ids` like os-vif), each with its peer in a
/// network namespace carrying the port's MAC and IP: the OVS agent makes them
/// ACTIVE and the namespaces ping each other through `br-int`.
#[tokio::test]
async fn ports_plugged_into_br_int_go_active_and_ping() -> anyhow::Result<()> {
    let (env, s) = session().await?;
    let host = env.get("KURYR_STACK_AGENT_HOST")?.to_owned();
    let ovsdb = env.get("OVSDB_SOCK")?.to_owned();
    with_undo(&s, async |undo| {
        {
            let (net_id, sub_id) = network_and_subnet(&s, undo, "10.230.2.0/24").await?;
            let mut pods = Vec::new();
            for (i, ip) in ["10.230.2.11", "10.230.2.12"].into_iter().enumerate() {
                let p = s
                    .post(
                        &s.n("ports"),
                        json!({"port": {"network_id": net_id, "name": format!("smoke-pod-{i}"),
                            "binding:host_id": host, "device_owner": "compute:kuryr", "device_id": format!("smoke-{i}"),
                            "fixed_ips": [{"subnet_id": sub_id, "ip_address": ip}]}}),
                    )
                    .await?;
                let port_id = id(&p, "port")?;
                undo.delete(s.n(&format!("ports/{port_id}")));
                assert_eq!(p["port"]["binding:vif_type"], "ovs", "port not bound to {host}: {p}");
                let mac = p["port"]["mac_address"].as_str().context("mac")?.to_owned();
                let ns = Netns::new("kst-smoke-")?;
                let veth = Veth::new(&ns, "eth0")?;
                ns.ip(&["link", "set", "eth0", "address", &mac])?;
                ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
                let ovs = OvsPort::add(
                    &ovsdb,
                    "br-int",
                    &veth.host,
                    &[
                        ("iface-id", &port_id),
                        ("attached-mac", &mac),
                        ("iface-status", "active"),
                        ("vm-uuid", &format!("smoke-{i}")),
                    ],
                )?;
                assert_eq!(ovs.get("external_ids:iface-id")?, format!("\"{port_id}\""));
                pods.push((port_id, ns, veth, ovs));
            }
            for (port_id, ..) in &pods {
                wait_port_active(&s, port_id).await?;
            }
            // the default security group admits ICMP from its own members
            let out = pods[0].1.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "5", "10.230.2.12"])?;
            assert!(out.contains("3 received") || out.contains("3 packets received"), "{out}");
            let out = pods[1].1.exec(&["ping", "-c", "1", "-W", "5", "10.230.2.11"])?;
            assert!(out.contains("1 received") || out.contains("1 packets received"), "{out}");
            drop(pods); // unplug before Neutron deletes the ports
            Ok(())
        }
    })
    .await
}

/// A trunk whose parent is bound and plugged like a nested Kubernetes node
/// VM's NIC: on ML2/openvswitch into its trunk bridge `tbr-<trunk id[:10]>`,
/// where the OVS agent wires the VLAN subport; on ML2/OVN straight into
/// `br-int`, where ovn-controller binds the subport as a child port (parent
/// and VLAN tag). Trunk and subport go ACTIVE either way.
#[tokio::test]
async fn trunk_subports_are_wired_by_the_backend() -> anyhow::Result<()> {
    let (env, s) = session().await?;
    let ovn = env.get("KURYR_STACK_NEUTRON_BACKEND")? == "ovn";
    let host = env.get("KURYR_STACK_AGENT_HOST")?.to_owned();
    let ovsdb = env.get("OVSDB_SOCK")?.to_owned();
    with_undo(&s, async |undo| {
        {
            let (net_id, _sub_id) = network_and_subnet(&s, undo, "10.230.3.0/24").await?;
            let parent = id(
                &s.post(&s.n("ports"), json!({"port": {"network_id": net_id, "name": "smoke-vm"}})).await?,
                "port",
            )?;
            undo.delete(s.n(&format!("ports/{parent}")));
            let child = id(
                &s.post(&s.n("ports"), json!({"port": {"network_id": net_id, "name": "smoke-nested-pod"}})).await?,
                "port",
            )?;
            undo.delete(s.n(&format!("ports/{child}")));
            let trunk = s
                .post(
                    &s.n("trunks"),
                    json!({"trunk": {"port_id": parent, "sub_ports": [
                        {"port_id": child, "segmentation_type": "vlan", "segmentation_id": 42}]}}),
                )
                .await?;
            let trunk_id = id(&trunk, "trunk")?;
            undo.delete(s.n(&format!("trunks/{trunk_id}")));
            // a bound trunk parent cannot be deleted: unbind it first (runs before the trunk delete)
            undo.put(
                s.n(&format!("ports/{parent}")),
                json!({"port": {"binding:host_id": "", "device_id": "", "device_owner": ""}}),
            );
            let p = s
                .put(
                    &s.n(&format!("ports/{parent}")),
                    json!({"port": {"binding:host_id": host, "device_id": "smoke-vm", "device_owner": "compute:nova"}}),
                )
                .await?;
            let mac = p["port"]["mac_address"].as_str().context("mac")?.to_owned();
            let tbr = if ovn { None } else { Some(OvsBridge::add(&ovsdb, &format!("tbr-{}", &trunk_id[..10]))?) };
            let ns = Netns::new("kst-vm-")?;
            let veth = Veth::new(&ns, "eth0")?;
            let plugged = OvsPort::add(
                &ovsdb,
                tbr.as_ref().map_or("br-int", |b| b.name.as_str()),
                &veth.host,
                &[
                    ("iface-id", &parent),
                    ("attached-mac", &mac),
                    ("iface-status", "active"),
                    ("vm-uuid", "smoke-vm"),
                ],
            )?;
            wait_until(
                &format!("trunk {trunk_id} and subport {child} ACTIVE"),
                Duration::from_secs(60),
                Duration::from_millis(300),
                || async {
                    let t = s.get(&s.n(&format!("trunks/{trunk_id}"))).await?;
                    let sub = port_status(&s, &child).await?;
                    Ok((t["trunk"]["status"] == "ACTIVE" && sub == "ACTIVE").then_some(()))
                },
            )
            .await?;
            let c = s.get(&s.n(&format!("ports/{child}"))).await?;
            assert_eq!(c["port"]["device_owner"], "trunk:subport");
            if ovn {
                // ML2/OVN binds no host to a subport: the profile names its parent
                assert_eq!(c["port"]["binding:profile"], json!({"parent_name": parent, "tag": 42}), "{c}");
            } else {
                assert_eq!(c["port"]["binding:host_id"], host.as_str(), "{c}");
            }
            if ovn {
                // ovn-controller's binding: a child of the parent, VLAN 42
                let db = format!("--db={}", env.get("KURYR_STACK_OVN_SB")?);
                let row = kuryr_stack_tests::cmd::run(&[
                    "ovn-sbctl", &db, "--bare", "--columns=parent_port,tag", "find", "Port_Binding",
                    &format!("logical_port={child}"),
                ])?;
                let fields: Vec<&str> = row.split_whitespace().collect();
                assert_eq!(fields, [parent.as_str(), "42"], "{row}");
            }
            drop((plugged, veth, ns, tbr));
            Ok(())
        }
    })
    .await
}

#[tokio::test]
async fn octavia_load_balancer_listener_pool_member_reach_active() -> anyhow::Result<()> {
    let (_env, s) = session().await?;
    with_undo(&s, async |undo| {
        {
            let (_net_id, sub_id) = network_and_subnet(&s, undo, "10.230.4.0/24").await?;
            let lb = s
                .post(
                    &s.o("loadbalancers"),
                    json!({"loadbalancer": {"name": unique_name("smoke-lb-", 40), "vip_subnet_id": sub_id,
                        "provider": "amphora"}}),
                )
                .await?;
            let lb_id = id(&lb, "loadbalancer")?;
            // cascade delete removes listener, pool and member; the VIP port goes
            // with it, asynchronously: wait for that before the subnet is deleted
            undo.wait_gone(s.o(&format!("loadbalancers/{lb_id}")));
            undo.delete(format!("{}?cascade=true", s.o(&format!("loadbalancers/{lb_id}"))));
            let vip_port = lb["loadbalancer"]["vip_port_id"].as_str().context("vip_port_id")?.to_owned();
            let lb_active = || async {
                let v = s.get(&s.o(&format!("loadbalancers/{lb_id}"))).await?;
                let st = v["loadbalancer"]["provisioning_status"].as_str().unwrap_or_default().to_owned();
                ensure!(st != "ERROR", "load balancer {lb_id} went to ERROR");
                Ok((st == "ACTIVE").then_some(()))
            };
            let wait = || wait_until("load balancer ACTIVE", Duration::from_secs(120), Duration::from_millis(300), lb_active);
            wait().await?;
            // the VIP is a real Neutron port
            let vp = s.get(&s.n(&format!("ports/{vip_port}"))).await?;
            assert_eq!(vp["port"]["fixed_ips"][0]["subnet_id"], sub_id.as_str());
            let listener = s
                .post(&s.o("listeners"), json!({"listener": {"loadbalancer_id": lb_id, "protocol": "TCP", "protocol_port": 80}}))
                .await?;
            let listener_id = id(&listener, "listener")?;
            wait().await?;
            let pool = s
                .post(
                    &s.o("pools"),
                    json!({"pool": {"listener_id": listener_id, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}}),
                )
                .await?;
            let pool_id = id(&pool, "pool")?;
            wait().await?;
            let member = s
                .post(
                    &s.o(&format!("pools/{pool_id}/members")),
                    json!({"member": {"address": "10.230.4.20", "protocol_port": 8080, "subnet_id": sub_id}}),
                )
                .await?;
            let member_id = id(&member, "member")?;
            wait().await?;
            for (url, kind) in [
                (s.o(&format!("listeners/{listener_id}")), "listener"),
                (s.o(&format!("pools/{pool_id}")), "pool"),
                (s.o(&format!("pools/{pool_id}/members/{member_id}")), "member"),
            ] {
                let v = s.get(&url).await?;
                assert_eq!(v[kind]["provisioning_status"], "ACTIVE", "{v}");
            }
            Ok(())
        }
    })
    .await?;
    Ok(())
}
