//! Octavia against the real service: a load balancer with listener, pool and
//! members reaches ACTIVE and goes away with a cascade delete.
#![cfg(feature = "stack")]

mod common;

use common::{Made, name, with_cleanup};
use kuryr_openstack::types::neutron::*;
use kuryr_openstack::types::octavia::*;
use std::time::Duration;

#[tokio::test]
async fn load_balancer_listener_pool_members_reach_active() -> anyhow::Result<()> {
    let c = common::client()?;
    with_cleanup(&c, async |made| {
        let n = c.neutron();
        let o = c.octavia();
        assert!(o.providers().await?.iter().any(|p| p == "amphora"));
        let net = n
            .create_network(&NetworkCreate {
                name: Some(name("lbnet")),
                ..Default::default()
            })
            .await?;
        made.add(Made::Network(net.id.clone()));
        let sub = n
            .create_subnet(&SubnetCreate {
                network_id: net.id.clone(),
                ip_version: 4,
                cidr: Some("10.231.5.0/24".into()),
                ..Default::default()
            })
            .await?;
        made.add(Made::Subnet(sub.id.clone()));
        let lb = o
            .create_load_balancer(&LoadBalancerCreate {
                name: Some(name("lb")),
                vip_subnet_id: Some(sub.id.clone()),
                provider: Some("amphora".into()),
                tags: Some(vec!["kuryr-rs-test".into()]),
                ..Default::default()
            })
            .await?;
        made.add(Made::LoadBalancer(lb.id.clone()));
        let wait = Duration::from_secs(120);
        let active = o.wait_load_balancer_active(&lb.id, wait).await?;
        assert_eq!(active.vip_subnet_id, sub.id);
        assert_eq!(
            n.get_port(&active.vip_port_id).await?.fixed_ips[0]
                .subnet_id
                .as_deref(),
            Some(sub.id.as_str())
        );
        // no wait between the calls: the client retries Octavia's 409 while the LB is PENDING_UPDATE
        let l = o
            .create_listener(&ListenerCreate {
                loadbalancer_id: lb.id.clone(),
                protocol: "TCP".into(),
                protocol_port: 80,
                ..Default::default()
            })
            .await?;
        let p = o
            .create_pool(&PoolCreate {
                listener_id: Some(l.id.clone()),
                protocol: "TCP".into(),
                lb_algorithm: "ROUND_ROBIN".into(),
                ..Default::default()
            })
            .await?;
        let m = o
            .create_member(
                &p.id,
                &MemberCreate {
                    address: "10.231.5.20".into(),
                    protocol_port: 8080,
                    subnet_id: Some(sub.id.clone()),
                    ..Default::default()
                },
            )
            .await?;
        o.wait_load_balancer_active(&lb.id, wait).await?;
        assert_eq!(o.get_listener(&l.id).await?.provisioning_status, ACTIVE);
        assert_eq!(o.get_pool(&p.id).await?.provisioning_status, ACTIVE);
        assert_eq!(
            o.get_member(&p.id, &m.id).await?.provisioning_status,
            ACTIVE
        );
        // batch update: replace the member set
        let want = vec![
            MemberCreate {
                address: "10.231.5.21".into(),
                protocol_port: 8080,
                subnet_id: Some(sub.id.clone()),
                ..Default::default()
            },
            MemberCreate {
                address: "10.231.5.22".into(),
                protocol_port: 8080,
                subnet_id: Some(sub.id.clone()),
                ..Default::default()
            },
        ];
        o.batch_update_members(&p.id, &want).await?;
        o.wait_load_balancer_active(&lb.id, wait).await?;
        let mut addrs: Vec<String> = o
            .list_members(&p.id)
            .await?
            .into_iter()
            .map(|m| m.address)
            .collect();
        addrs.sort();
        assert_eq!(addrs, vec!["10.231.5.21", "10.231.5.22"]);
        let hm = o
            .create_health_monitor(&HealthMonitorCreate {
                pool_id: p.id.clone(),
                monitor_type: "TCP".into(),
                delay: 5,
                timeout: 3,
                max_retries: 3,
            })
            .await?;
        o.wait_load_balancer_active(&lb.id, wait).await?;
        assert_eq!(o.get_health_monitor(&hm.id).await?.pools[0].id, p.id);
        let hm2 = o
            .update_health_monitor(
                &hm.id,
                &HealthMonitorUpdate {
                    delay: Some(7),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!((hm2.delay, hm2.timeout), (7, 3));
        let all = kuryr_openstack::Query::new();
        assert!(
            o.list_health_monitors(&all)
                .await?
                .iter()
                .any(|h| h.id == hm.id)
        );
        o.wait_load_balancer_active(&lb.id, wait).await?;
        assert!(o.delete_health_monitor(&hm.id).await?);
        o.wait_load_balancer_active(&lb.id, wait).await?;
        assert!(!o.delete_health_monitor(&hm.id).await?, "gone: 404 is done");

        // lists and updates of the rest
        assert!(o.list_listeners(&all).await?.iter().any(|x| x.id == l.id));
        assert!(o.list_pools(&all).await?.iter().any(|x| x.id == p.id));
        let l2 = o
            .update_listener(
                &l.id,
                &ListenerUpdate {
                    connection_limit: Some(1000),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(l2.extra["connection_limit"], 1000);
        o.wait_load_balancer_active(&lb.id, wait).await?;
        let p2 = o
            .update_pool(
                &p.id,
                &PoolUpdate {
                    lb_algorithm: Some("SOURCE_IP".into()),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(p2.lb_algorithm, "SOURCE_IP");
        o.wait_load_balancer_active(&lb.id, wait).await?;
        let first = o.list_members(&p.id).await?.remove(0);
        let m2 = o
            .update_member(
                &p.id,
                &first.id,
                &MemberUpdate {
                    weight: Some(0),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(m2.weight, Some(0));
        o.wait_load_balancer_active(&lb.id, wait).await?;
        let lb2 = o
            .update_load_balancer(
                &lb.id,
                &LoadBalancerUpdate {
                    description: Some("kuryr-rs".into()),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(lb2.description, "kuryr-rs");
        o.wait_load_balancer_active(&lb.id, wait).await?;

        // find-by-tag-or-create: the LB made above is found by its tag
        let tag = name("lbtag");
        let lb3 = o
            .update_load_balancer(
                &lb.id,
                &LoadBalancerUpdate {
                    tags: Some(vec![tag.clone()]),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(lb3.tags, vec![tag.clone()]);
        o.wait_load_balancer_active(&lb.id, wait).await?;
        let again = o
            .ensure_load_balancer(
                std::slice::from_ref(&tag),
                &LoadBalancerCreate {
                    vip_subnet_id: Some(sub.id.clone()),
                    ..Default::default()
                },
            )
            .await?;
        assert_eq!(again.id, lb.id);
        o.wait_load_balancer_active(&lb.id, wait).await?;
        assert_eq!(
            o.list_load_balancers(&kuryr_openstack::Query::new().filter("name", &lb.name))
                .await?
                .len(),
            1
        );
        Ok(())
    })
    .await
}
