//! Neutron against the real service: updates, and the idempotent
//! find-by-tag-or-create forms, including the case a crash leaves behind
//! (an object created but never tagged).
#![cfg(feature = "stack")]

mod common;

use common::{Made, name, with_cleanup};
use kuryr_openstack::types::neutron::*;
use kuryr_openstack::{Query, TaggedResource};

#[tokio::test]
async fn ensure_finds_instead_of_duplicating() -> anyhow::Result<()> {
    let c = common::client()?;
    with_cleanup(&c, async |made| {
        let n = c.neutron();
        let tags = vec![name("ensure")];

        // network: the second call finds the first one's network
        let body = NetworkCreate {
            name: Some(name("ensnet")),
            ..Default::default()
        };
        let net = n.ensure_network(&tags, &body).await?;
        made.add(Made::Network(net.id.clone()));
        assert!(net.tags.contains(&tags[0]), "{:?}", net.tags);
        assert_eq!(n.ensure_network(&tags, &body).await?.id, net.id);
        let found = n.list_networks(&Query::new().tags(&tags)).await?;
        assert_eq!(found.len(), 1, "exactly one network carries the tag");

        // subnet
        let sbody = SubnetCreate {
            network_id: net.id.clone(),
            ip_version: 4,
            cidr: Some("10.231.20.0/24".into()),
            name: Some(name("enssub")),
            ..Default::default()
        };
        let sub = n.ensure_subnet(&tags, &sbody).await?;
        made.add(Made::Subnet(sub.id.clone()));
        assert_eq!(n.ensure_subnet(&tags, &sbody).await?.id, sub.id);

        // security group left untagged by a "crash" between create and tag:
        // ensure adopts it rather than making a second one
        let sg_name = name("enssg");
        let orphan = n
            .create_security_group(&SecurityGroupCreate {
                name: sg_name.clone(),
                ..Default::default()
            })
            .await?;
        made.add(Made::SecurityGroup(orphan.id.clone()));
        let sgbody = SecurityGroupCreate {
            name: sg_name.clone(),
            ..Default::default()
        };
        let sg = n.ensure_security_group(&tags, &sgbody).await?;
        assert_eq!(sg.id, orphan.id, "the untagged group is adopted");
        assert!(sg.tags.contains(&tags[0]), "{:?}", sg.tags);
        assert_eq!(n.get_security_group(&sg.id).await?.tags, sg.tags);
        assert_eq!(
            n.list_security_groups(&Query::new().filter("name", &sg_name))
                .await?
                .len(),
            1
        );

        // a rule that exists already is returned, not an error
        let rule = SecurityGroupRuleCreate {
            security_group_id: sg.id.clone(),
            direction: "ingress".into(),
            ethertype: Some("IPv4".into()),
            protocol: Some("udp".into()),
            port_range_min: Some(53),
            port_range_max: Some(53),
            ..Default::default()
        };
        let r1 = n.ensure_security_group_rule(&rule).await?;
        let r2 = n.ensure_security_group_rule(&rule).await?;
        assert_eq!(r1.id, r2.id);

        // bulk rules: all in one call
        let many: Vec<SecurityGroupRuleCreate> = (0..10)
            .map(|i| SecurityGroupRuleCreate {
                security_group_id: sg.id.clone(),
                direction: "ingress".into(),
                ethertype: Some("IPv4".into()),
                protocol: Some("tcp".into()),
                port_range_min: Some(8000 + i),
                port_range_max: Some(8000 + i),
                ..Default::default()
            })
            .collect();
        let made_rules = n.create_security_group_rules(&many).await?;
        assert_eq!(made_rules.len(), 10);
        let tcp = n
            .list_security_group_rules(
                &Query::new()
                    .filter("security_group_id", &sg.id)
                    .filter("protocol", "tcp"),
            )
            .await?;
        assert_eq!(tcp.len(), 10);

        // no tag: refused, never "any object"
        assert!(n.ensure_network(&[], &body).await.is_err());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn updates_change_only_what_is_set() -> anyhow::Result<()> {
    let c = common::client()?;
    with_cleanup(&c, async |made| {
        let n = c.neutron();
        let net = n
            .create_network(&NetworkCreate {
                name: Some(name("updnet")),
                ..Default::default()
            })
            .await?;
        made.add(Made::Network(net.id.clone()));
        let renamed = name("updnet2");
        let net2 = n
            .update_network(
                &net.id,
                &NetworkUpdate {
                    name: Some(renamed.clone()),
                    mtu: Some(1400),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(
            (net2.name.as_str(), net2.mtu),
            (renamed.as_str(), Some(1400))
        );
        assert_eq!(net2.admin_state_up, net.admin_state_up);

        let sub = n
            .create_subnet(&SubnetCreate {
                network_id: net.id.clone(),
                ip_version: 4,
                cidr: Some("10.231.21.0/24".into()),
                ..Default::default()
            })
            .await?;
        made.add(Made::Subnet(sub.id.clone()));
        assert_eq!(sub.gateway_ip.as_deref(), Some("10.231.21.1"));
        let sub2 = n
            .update_subnet(
                &sub.id,
                &SubnetUpdate {
                    gateway_ip: Some(None),
                    host_routes: Some(vec![HostRoute {
                        destination: "10.232.0.0/16".into(),
                        nexthop: "10.231.21.254".into(),
                    }]),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(sub2.gateway_ip, None);
        assert_eq!(sub2.host_routes.len(), 1);
        assert_eq!(sub2.cidr, sub.cidr);

        let router = n
            .create_router(&RouterCreate {
                name: Some(name("updrouter")),
                ..Default::default()
            })
            .await?;
        made.add(Made::Router(router.id.clone()));
        let r2 = n
            .update_router(
                &router.id,
                &RouterUpdate {
                    name: Some(name("updrouter2")),
                    external_gateway_info: Some(None),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(n.get_router(&router.id).await?.name, r2.name);
        assert!(r2.external_gateway_info.is_none());

        let sg = n
            .create_security_group(&SecurityGroupCreate {
                name: name("updsg"),
                ..Default::default()
            })
            .await?;
        made.add(Made::SecurityGroup(sg.id.clone()));
        let sg2 = n
            .update_security_group(
                &sg.id,
                &SecurityGroupUpdate {
                    description: Some("pods of namespace a".into()),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(sg2.description, "pods of namespace a");
        assert_eq!(sg2.name, sg.name);

        let pool = n
            .create_subnet_pool(&SubnetPoolCreate {
                name: name("updpool"),
                prefixes: vec!["10.233.0.0/16".into()],
                default_prefixlen: Some(26),
                ..Default::default()
            })
            .await?;
        made.add(Made::SubnetPool(pool.id.clone()));
        assert_eq!(
            n.get_subnet_pool(&pool.id).await?.default_prefixlen,
            Some(26)
        );

        let parent = n
            .create_port(&PortCreate {
                network_id: net.id.clone(),
                name: Some(name("updparent")),
                ..Default::default()
            })
            .await?;
        made.add(Made::Port(parent.id.clone()));
        let trunk = n
            .create_trunk(&TrunkCreate {
                port_id: parent.id.clone(),
                name: Some(name("updtrunk")),
                ..Default::default()
            })
            .await?;
        made.add(Made::Trunk(trunk.id.clone()));
        let t2 = n
            .update_trunk(
                &trunk.id,
                &TrunkUpdate {
                    description: Some("node-1".into()),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(t2.extra["description"], "node-1");
        assert_eq!(t2.port_id, parent.id);

        // tags on something other than ports
        n.add_tag(TaggedResource::Trunk, &trunk.id, "kuryr-rs-test")
            .await?;
        assert_eq!(n.get_trunk(&trunk.id).await?.tags, vec!["kuryr-rs-test"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn subports_are_added_and_removed_idempotently() -> anyhow::Result<()> {
    let c = common::client()?;
    with_cleanup(&c, async |made| {
        let n = c.neutron();
        let net = n
            .create_network(&NetworkCreate {
                name: Some(name("subnet")),
                ..Default::default()
            })
            .await?;
        made.add(Made::Network(net.id.clone()));
        let sub = n
            .create_subnet(&SubnetCreate {
                network_id: net.id.clone(),
                ip_version: 4,
                cidr: Some("10.231.22.0/24".into()),
                ..Default::default()
            })
            .await?;
        made.add(Made::Subnet(sub.id.clone()));
        let ports = n
            .create_ports(
                &(0..4)
                    .map(|_| PortCreate {
                        network_id: net.id.clone(),
                        ..Default::default()
                    })
                    .collect::<Vec<_>>(),
            )
            .await?;
        for p in &ports {
            made.add(Made::Port(p.id.clone()));
        }
        let trunk = n
            .create_trunk(&TrunkCreate {
                port_id: ports[0].id.clone(),
                name: Some(name("enstrunk")),
                ..Default::default()
            })
            .await?;
        made.add(Made::Trunk(trunk.id.clone()));
        let first = vec![SubPort::vlan(&ports[1].id, 201)];
        assert_eq!(n.ensure_subports(&trunk.id, &first).await?.len(), 1);
        // a retry with more: only the new one is added, no 409 for the old
        let all = vec![
            SubPort::vlan(&ports[1].id, 201),
            SubPort::vlan(&ports[2].id, 202),
            SubPort::vlan(&ports[3].id, 203),
        ];
        let mut got = n.ensure_subports(&trunk.id, &all).await?;
        got.sort_by_key(|s| s.segmentation_id);
        assert_eq!(got, all);
        assert_eq!(n.ensure_subports(&trunk.id, &all).await?.len(), 3);
        // the same port under another VLAN id: refused before Neutron is asked
        let moved = n
            .ensure_subports(&trunk.id, &[SubPort::vlan(&ports[1].id, 299)])
            .await
            .unwrap_err();
        assert!(moved.to_string().contains("remove it first"), "{moved}");
        // removal twice: the second is a no-op, not a 404
        let gone = vec![ports[1].id.clone(), ports[2].id.clone()];
        assert_eq!(
            n.remove_subports_if_present(&trunk.id, &gone).await?.len(),
            1
        );
        assert_eq!(
            n.remove_subports_if_present(&trunk.id, &gone).await?.len(),
            1
        );
        Ok(())
    })
    .await
}
