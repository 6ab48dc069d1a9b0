//! Neutron against the real service: every call the client offers.
#![cfg(feature = "stack")]

mod common;

use common::{Made, name, with_cleanup};
use kuryr_openstack::types::neutron::*;
use kuryr_openstack::{Query, TaggedResource};

async fn net_and_subnet(
    c: &kuryr_openstack::Client,
    made: &common::Created,
    cidr: &str,
) -> anyhow::Result<(Network, Subnet)> {
    let n = c.neutron();
    let net = n
        .create_network(&NetworkCreate {
            name: Some(name("net")),
            ..Default::default()
        })
        .await?;
    made.add(Made::Network(net.id.clone()));
    let sub = n
        .create_subnet(&SubnetCreate {
            network_id: net.id.clone(),
            ip_version: 4,
            cidr: Some(cidr.into()),
            name: Some(name("sub")),
            ..Default::default()
        })
        .await?;
    made.add(Made::Subnet(sub.id.clone()));
    Ok((net, sub))
}

#[tokio::test]
async fn networks_and_subnets_v4_and_v6() -> anyhow::Result<()> {
    let c = common::client()?;
    with_cleanup(&c, async |made| {
        let n = c.neutron();
        let net = n
            .create_network(&NetworkCreate {
                name: Some(name("net")),
                mtu: Some(1400),
                ..Default::default()
            })
            .await?;
        made.add(Made::Network(net.id.clone()));
        assert_eq!(net.mtu, Some(1400));
        let v4 = n
            .create_subnet(&SubnetCreate {
                network_id: net.id.clone(),
                ip_version: 4,
                cidr: Some("10.231.0.0/24".into()),
                gateway_ip: Some(Some("10.231.0.1".into())),
                allocation_pools: Some(vec![AllocationPool {
                    start: "10.231.0.10".into(),
                    end: "10.231.0.99".into(),
                }]),
                host_routes: Some(vec![HostRoute {
                    destination: "10.232.0.0/16".into(),
                    nexthop: "10.231.0.254".into(),
                }]),
                enable_dhcp: Some(false),
                ..Default::default()
            })
            .await?;
        made.add(Made::Subnet(v4.id.clone()));
        assert_eq!(v4.allocation_pools[0].start, "10.231.0.10");
        assert_eq!(v4.host_routes[0].nexthop, "10.231.0.254");
        let v6 = n
            .create_subnet(&SubnetCreate {
                network_id: net.id.clone(),
                ip_version: 6,
                cidr: Some("fd00:231::/64".into()),
                ipv6_address_mode: Some("slaac".into()),
                ipv6_ra_mode: Some("slaac".into()),
                ..Default::default()
            })
            .await?;
        made.add(Made::Subnet(v6.id.clone()));
        assert_eq!(v6.ip_version, 6);
        let got = n.get_network(&net.id).await?;
        assert_eq!(got.subnets.len(), 2);
        let listed = n
            .list_subnets(&Query::new().filter("network_id", &net.id))
            .await?;
        assert_eq!(listed.len(), 2);
        // a subnet without gateway
        let net2 = n
            .create_network(&NetworkCreate {
                name: Some(name("net")),
                ..Default::default()
            })
            .await?;
        made.add(Made::Network(net2.id.clone()));
        let nogw = n
            .create_subnet(&SubnetCreate {
                network_id: net2.id.clone(),
                ip_version: 4,
                cidr: Some("10.233.0.0/24".into()),
                gateway_ip: Some(None),
                ..Default::default()
            })
            .await?;
        made.add(Made::Subnet(nogw.id.clone()));
        assert_eq!(nogw.gateway_ip, None);
        // subnet pools
        let pool = n
            .create_subnet_pool(&SubnetPoolCreate {
                name: name("pool"),
                prefixes: vec!["10.234.0.0/16".into()],
                default_prefixlen: Some(26),
                ..Default::default()
            })
            .await?;
        made.add(Made::SubnetPool(pool.id.clone()));
        let net3 = n
            .create_network(&NetworkCreate {
                name: Some(name("net")),
                ..Default::default()
            })
            .await?;
        made.add(Made::Network(net3.id.clone()));
        // subnets of one network come all from one pool or none
        let from_pool = n
            .create_subnet(&SubnetCreate {
                network_id: net3.id.clone(),
                ip_version: 4,
                subnetpool_id: Some(pool.id.clone()),
                ..Default::default()
            })
            .await?;
        made.add(Made::Subnet(from_pool.id.clone()));
        assert!(
            from_pool.cidr.starts_with("10.234.") && from_pool.cidr.ends_with("/26"),
            "{}",
            from_pool.cidr
        );
        // deleting twice is fine
        assert!(n.delete_subnet(&from_pool.id).await?);
        assert!(!n.delete_subnet(&from_pool.id).await?);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn ports_tags_filters_pagination_and_updates() -> anyhow::Result<()> {
    let c = common::client()?;
    with_cleanup(&c, async |made| {
        let n = c.neutron();
        let (net, sub) = net_and_subnet(&c, made, "10.231.1.0/24").await?;
        let tag = name("tag");
        let mut ids = Vec::new();
        for i in 0..5 {
            let p = n
                .create_port_tagged(
                    &PortCreate {
                        network_id: net.id.clone(),
                        name: Some(format!("p{i}")),
                        fixed_ips: Some(vec![FixedIp {
                            subnet_id: Some(sub.id.clone()),
                            ip_address: None,
                        }]),
                        ..Default::default()
                    },
                    &[tag.clone(), "kuryr-rs-test".into()],
                )
                .await?;
            made.add(Made::Port(p.id.clone()));
            assert!(p.tags.contains(&tag), "tags set at creation: {:?}", p.tags);
            ids.push(p.id);
        }
        // pagination: pages of 2 are followed to the end
        let all = n.list_ports(&Query::new().tags([&tag]).limit(2)).await?;
        assert_eq!(all.len(), 5);
        let only = n
            .list_ports(&Query::new().tags([&tag]).filter("name", "p3").fields([
                "id",
                "network_id",
                "name",
            ]))
            .await?;
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].name, "p3");
        // tags: add, replace, remove
        n.add_tag(TaggedResource::Port, &ids[0], "extra tag")
            .await?;
        assert_eq!(
            n.list_ports(&Query::new().tags(["extra tag"])).await?.len(),
            1
        );
        let t = n
            .replace_tags(TaggedResource::Port, &ids[1], &["only".into()])
            .await?;
        assert_eq!(t, vec!["only".to_string()]);
        assert_eq!(n.list_ports(&Query::new().tags([&tag])).await?.len(), 4);
        assert!(
            n.remove_tag(TaggedResource::Port, &ids[0], "extra tag")
                .await?
        );
        assert!(
            !n.remove_tag(TaggedResource::Port, &ids[0], "extra tag")
                .await?
        );
        assert_eq!(
            n.list_ports(
                &Query::new()
                    .not_tags(["kuryr-rs-test"])
                    .filter("network_id", &net.id)
            )
            .await?
            .len(),
            1
        );
        // update: owner, binding and address pairs
        let u = n
            .update_port(
                &ids[2],
                &PortUpdate {
                    device_id: Some("pod-uid".into()),
                    device_owner: Some("compute:kuryr".into()),
                    binding_host_id: Some(
                        common::stack()?.get("KURYR_STACK_AGENT_HOST")?.to_owned(),
                    ),
                    allowed_address_pairs: Some(vec![AddressPair {
                        ip_address: "10.231.1.200".into(),
                        mac_address: None,
                    }]),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(u.device_id, "pod-uid");
        assert_eq!(
            u.binding_vif_type.as_deref(),
            Some("ovs"),
            "bound to the OVS agent's host"
        );
        assert_eq!(u.allowed_address_pairs[0].ip_address, "10.231.1.200");
        assert!(u.revision_number > 1);
        // ensure_port: finds the tagged port instead of making a second one
        let key = vec![name("pod")];
        let body = PortCreate {
            network_id: net.id.clone(),
            name: Some(key[0].clone()),
            ..Default::default()
        };
        let first = n.ensure_port(&key, &body).await?;
        made.add(Made::Port(first.id.clone()));
        let again = n.ensure_port(&key, &body).await?;
        assert_eq!(first.id, again.id);
        assert!(first.tags.contains(&key[0]), "{:?}", first.tags);
        // a port created but never tagged (a crash in between) is adopted, not duplicated
        let orphan_name = name("orphan");
        let orphan = n
            .create_port(&PortCreate {
                network_id: net.id.clone(),
                name: Some(orphan_name.clone()),
                ..Default::default()
            })
            .await?;
        made.add(Made::Port(orphan.id.clone()));
        let okey = vec![name("okey")];
        let adopted = n
            .ensure_port(
                &okey,
                &PortCreate {
                    network_id: net.id.clone(),
                    name: Some(orphan_name),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(adopted.id, orphan.id);
        assert!(adopted.tags.contains(&okey[0]));
        assert!(n.delete_port(&first.id).await?);
        let err = n.get_port(&first.id).await.unwrap_err();
        assert!(
            err.is_not_found() && err.error_type() == Some("PortNotFound"),
            "{err}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn bulk_creates_100_ports() -> anyhow::Result<()> {
    // one request makes 100 ports: on ML2/OVN that is 100 northbound
    // transactions, over a minute on a loaded 2-core machine
    let c = common::client_with(kuryr_openstack::ClientOptions {
        request_timeout: std::time::Duration::from_secs(240),
        ..Default::default()
    })?;
    with_cleanup(&c, async |made| {
        let n = c.neutron();
        let (net, _) = net_and_subnet(&c, made, "10.231.2.0/24").await?;
        let tag = name("bulk");
        let bodies: Vec<PortCreate> = (0..100)
            .map(|i| PortCreate {
                network_id: net.id.clone(),
                name: Some(format!("bulk-{i}")),
                ..Default::default()
            })
            .collect();
        let ports = n
            .create_ports_tagged(&bodies, std::slice::from_ref(&tag))
            .await?;
        for p in &ports {
            made.add(Made::Port(p.id.clone()));
        }
        assert_eq!(ports.len(), 100);
        let mut ips: Vec<&str> = ports.iter().filter_map(|p| p.first_ip()).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 100, "distinct addresses");
        assert_eq!(n.list_ports(&Query::new().tags([&tag])).await?.len(), 100);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn trunk_with_50_subports() -> anyhow::Result<()> {
    let c = common::client()?;
    with_cleanup(&c, async |made| {
        let n = c.neutron();
        let (net, _) = net_and_subnet(&c, made, "10.231.3.0/24").await?;
        let parent = n
            .create_port(&PortCreate {
                network_id: net.id.clone(),
                name: Some(name("vm")),
                ..Default::default()
            })
            .await?;
        made.add(Made::Port(parent.id.clone()));
        let children = n
            .create_ports(
                &(0..50)
                    .map(|_| PortCreate {
                        network_id: net.id.clone(),
                        ..Default::default()
                    })
                    .collect::<Vec<_>>(),
            )
            .await?;
        for p in &children {
            made.add(Made::Port(p.id.clone()));
        }
        let trunk = n
            .create_trunk(&TrunkCreate {
                port_id: parent.id.clone(),
                name: Some(name("trunk")),
                ..Default::default()
            })
            .await?;
        made.add(Made::Trunk(trunk.id.clone()));
        let subs: Vec<SubPort> = children
            .iter()
            .enumerate()
            .map(|(i, p)| SubPort::vlan(&p.id, 100 + i as u32))
            .collect();
        let t = n.add_subports(&trunk.id, &subs).await?;
        assert_eq!(t.sub_ports.len(), 50);
        let mut got = n.get_subports(&trunk.id).await?;
        got.sort_by_key(|s| s.segmentation_id);
        assert_eq!(got, subs);
        // a VLAN id can be used once per trunk
        let dup = n
            .create_port(&PortCreate {
                network_id: net.id.clone(),
                ..Default::default()
            })
            .await?;
        made.add(Made::Port(dup.id.clone()));
        let e = n
            .add_subports(&trunk.id, &[SubPort::vlan(&dup.id, 100)])
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(409), "{e}");
        let t = n
            .remove_subports(
                &trunk.id,
                &children[..10]
                    .iter()
                    .map(|p| p.id.clone())
                    .collect::<Vec<_>>(),
            )
            .await?;
        assert_eq!(t.sub_ports.len(), 40);
        assert_eq!(
            n.list_trunks(&Query::new().filter("port_id", &parent.id))
                .await?
                .len(),
            1
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn security_groups_rules_routers_extensions_quota() -> anyhow::Result<()> {
    let c = common::client()?;
    with_cleanup(&c, async |made| {
        let n = c.neutron();
        let sg = n
            .create_security_group(&SecurityGroupCreate {
                name: name("sg"),
                description: Some("kuryr-rs test".into()),
                ..Default::default()
            })
            .await?;
        made.add(Made::SecurityGroup(sg.id.clone()));
        assert!(
            !sg.security_group_rules.is_empty(),
            "Neutron adds default egress rules"
        );
        let rule = n
            .create_security_group_rule(&SecurityGroupRuleCreate {
                security_group_id: sg.id.clone(),
                direction: "ingress".into(),
                ethertype: Some("IPv4".into()),
                protocol: Some("tcp".into()),
                port_range_min: Some(80),
                port_range_max: Some(80),
                remote_ip_prefix: Some("10.0.0.0/8".into()),
                ..Default::default()
            })
            .await?;
        let from_group = n
            .create_security_group_rule(&SecurityGroupRuleCreate {
                security_group_id: sg.id.clone(),
                direction: "ingress".into(),
                remote_group_id: Some(sg.id.clone()),
                ..Default::default()
            })
            .await?;
        let again = n.get_security_group(&sg.id).await?;
        assert!(
            again
                .security_group_rules
                .iter()
                .any(|r| r.id == rule.id && r.port_range_min == Some(80))
        );
        assert!(
            again
                .security_group_rules
                .iter()
                .any(|r| r.id == from_group.id
                    && r.remote_group_id.as_deref() == Some(sg.id.as_str()))
        );
        let dup = n
            .create_security_group_rule(&SecurityGroupRuleCreate {
                security_group_id: sg.id.clone(),
                direction: "ingress".into(),
                ethertype: Some("IPv4".into()),
                protocol: Some("tcp".into()),
                port_range_min: Some(80),
                port_range_max: Some(80),
                remote_ip_prefix: Some("10.0.0.0/8".into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(dup.error_type(), Some("SecurityGroupRuleExists"), "{dup}");
        assert!(n.delete_security_group_rule(&rule.id).await?);
        assert!(!n.delete_security_group_rule(&rule.id).await?);
        assert_eq!(
            n.list_security_group_rules(
                &Query::new()
                    .filter("security_group_id", &sg.id)
                    .filter("direction", "ingress")
            )
            .await?
            .len(),
            1
        );

        let (_net, sub) = net_and_subnet(&c, made, "10.231.4.0/24").await?;
        let router = n
            .create_router(&RouterCreate {
                name: Some(name("router")),
                ..Default::default()
            })
            .await?;
        made.add(Made::Router(router.id.clone()));
        n.add_router_interface(
            &router.id,
            &RouterInterface {
                subnet_id: Some(sub.id.clone()),
                port_id: None,
            },
        )
        .await?;
        made.add(Made::RouterInterface(router.id.clone(), sub.id.clone()));
        let rports = n
            .list_ports(&Query::new().filter("device_id", &router.id))
            .await?;
        assert_eq!(rports.len(), 1);
        assert_eq!(rports[0].device_owner, "network:router_interface");

        for alias in [
            "trunk",
            "binding",
            "standard-attr-tag",
            "port-security",
            "allowed-address-pairs",
            "security-group",
            "router",
        ] {
            assert!(n.has_extension(alias).await?, "extension {alias}");
        }
        assert!(
            n.versions().await?["versions"]
                .as_array()
                .is_some_and(|v| !v.is_empty())
        );
        let q = n.quota(&c.project_id().await?).await?;
        assert!(q.contains_key("port") && q.contains_key("network"), "{q:?}");
        Ok(())
    })
    .await
}
