//! NetworkPolicies against the stack's real kube-apiserver and Neutron:
//! a policy becomes a KuryrNetworkPolicy written as kuryr-kubernetes wrote
//! it and a security group holding exactly its rules, put on the ports of
//! the pods it selects; rules follow pods as their labels and addresses
//! change; a pod leaving the selection gets its default groups back; a
//! deleted policy takes its KNP and group with it. Pods are bound to a node
//! no kubelet runs, so their addresses are written into their status by the
//! test, as the kubelet would from the CNI result.
#![cfg(feature = "stack")]

mod common;

use common::policy::{
    EVERY, PEERS_CONF, POLICY_CONF, WAIT, create_policy, group_keys, knp_where, pod, policy_apis,
    port_groups_become, relabel, spec_keys,
};
use common::{Harness, start};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kuryr_controller::Options;
use kuryr_crds::{NETWORKPOLICY_FINALIZER, NETWORKPOLICY_LINK};
use kuryr_policy::DESCRIPTION;
use kuryr_stack_tests::{finally, wait_until};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test]
async fn a_policy_is_a_security_group_on_the_ports_of_the_pods_it_selects() -> anyhow::Result<()> {
    let h = Harness::new("np", "10.238.0.0/24").await?;
    let body = async {
        let ctx = h.context(POLICY_CONF, Options::default()).await?;
        let defaults = ctx.settings.security_groups.clone();
        let ctl = start(ctx.clone());
        let n = h.os.neutron();
        let (web_port, _) = pod(&h, "web", "web").await?;
        let (client_port, client_ip) = pod(&h, "client", "client").await?;

        // web admits TCP 80 from app=client pods only
        let (nps, knps) = policy_apis(&h);
        create_policy(
            &nps,
            "web-from-client",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                "ports": [{"port": 80}]}]}),
        )
        .await?;
        let knp = knp_where(
            &knps,
            "web-from-client",
            "KNP with the client's rule",
            |k| k.spec.ingress_sg_rules.len() == 1,
        )
        .await?;
        // written as kuryr-kubernetes wrote it
        assert_eq!(
            knp.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(NETWORKPOLICY_LINK))
                .map(String::as_str),
            Some(
                format!(
                    "/apis/networking.k8s.io/v1/namespaces/{}/networkpolicies/web-from-client",
                    h.ns
                )
                .as_str()
            )
        );
        assert_eq!(
            knp.metadata.finalizers.as_deref(),
            Some(&[NETWORKPOLICY_FINALIZER.to_owned()][..])
        );
        assert_eq!(knp.spec.policy_types, vec!["Ingress"]);
        assert_eq!(
            knp.spec.pod_selector,
            json!({"matchLabels": {"app": "web"}})
        );
        let r = &knp.spec.ingress_sg_rules[0];
        assert_eq!(r.namespace.as_deref(), Some(h.ns.as_str()));
        assert_eq!(r.sg_rule.direction, "ingress");
        assert_eq!(r.sg_rule.ethertype, "IPv4");
        assert_eq!(r.sg_rule.protocol.as_deref(), Some("tcp"));
        assert_eq!(
            (r.sg_rule.port_range_min, r.sg_rule.port_range_max),
            (Some(80), Some(80))
        );
        assert_eq!(
            r.sg_rule.remote_ip_prefix.as_deref(),
            Some(format!("{client_ip}/32").as_str())
        );
        assert_eq!(r.sg_rule.description.as_deref(), Some(DESCRIPTION));
        // egress is not isolated: no rule here, the open egress group on
        // the pods' ports instead
        assert!(knp.spec.egress_sg_rules.is_empty());
        let np = nps.get("web-from-client").await?;
        assert!(
            np.metadata
                .finalizers
                .unwrap_or_default()
                .contains(&NETWORKPOLICY_FINALIZER.to_owned())
        );

        // the group in Neutron: named, described, its rules exactly the status
        let st = knp.status.clone().unwrap_or_default();
        let sg_id = st.security_group_id.clone().unwrap_or_default();
        let sg = n.get_security_group(&sg_id).await?;
        assert_eq!(sg.name, format!("sg/{}-web-from-client", h.ns));
        assert_eq!(
            sg.description,
            format!(
                "Kuryr-Kubernetes Network Policy {}/web-from-client SG",
                h.ns
            )
        );
        let mut in_neutron: Vec<_> = sg
            .security_group_rules
            .iter()
            .map(|r| r.id.clone())
            .collect();
        let mut in_status: Vec<_> = st
            .security_group_rules
            .iter()
            .filter_map(|r| r.id.clone())
            .collect();
        in_neutron.sort();
        in_status.sort();
        assert_eq!(in_neutron, in_status);

        // web's port has the policy's group only; the client keeps the defaults
        let open = ctx.open_groups.clone().expect("open groups with policies");
        let web_groups = [sg_id.clone(), open.egress.clone()];
        port_groups_become(&h, &web_port, &web_groups).await?;
        port_groups_become(&h, &client_port, &defaults).await?;

        // rules follow pods: the client leaves the selection, another joins
        relabel(&h, "client", "other").await?;
        knp_where(&knps, "web-from-client", "the client's rule gone", |k| {
            k.spec.ingress_sg_rules.is_empty()
        })
        .await?;
        let (_, ip2) = pod(&h, "client2", "client").await?;
        let prefix2 = format!("{ip2}/32");
        knp_where(&knps, "web-from-client", "client2's rule", |k| {
            k.spec.ingress_sg_rules.len() == 1
                && k.spec.ingress_sg_rules[0]
                    .sg_rule
                    .remote_ip_prefix
                    .as_deref()
                    == Some(prefix2.as_str())
        })
        .await?;
        // the same group all along
        assert_eq!(
            knps.get("web-from-client")
                .await?
                .status
                .and_then(|s| s.security_group_id),
            Some(sg_id.clone())
        );

        // a pod made while the policy selects it has the policy's group
        // as soon as its port is recorded, never the defaults
        let (web2_port, _) = pod(&h, "web2", "web").await?;
        let mut now = n.get_port(&web2_port).await?.security_groups;
        now.sort();
        let mut want = web_groups.to_vec();
        want.sort();
        assert_eq!(now, want, "web2's port when its VIF was recorded");

        // a pod leaving the policy's selection gets its defaults back, and
        // back in, the policy's group again
        relabel(&h, "web", "none").await?;
        port_groups_become(&h, &web_port, &defaults).await?;
        relabel(&h, "web", "web").await?;
        port_groups_become(&h, &web_port, &web_groups).await?;

        // deleting the policy: defaults back on web, KNP and group gone, the
        // policy itself gone (its finalizer removed)
        nps.delete("web-from-client", &DeleteParams::default())
            .await?;
        port_groups_become(&h, &web_port, &defaults).await?;
        wait_until("policy, KNP and group gone", WAIT, EVERY, || async {
            let np_gone = nps.get_opt("web-from-client").await?.is_none();
            let knp_gone = knps.get_opt("web-from-client").await?.is_none();
            let sg_gone = match n.get_security_group(&sg_id).await {
                Err(e) if e.is_not_found() => true,
                Err(e) => return Err(e.into()),
                Ok(_) => false,
            };
            Ok((np_gone && knp_gone && sg_gone).then_some(()))
        })
        .await?;

        h.delete_all_pods(WAIT).await?;
        ctl.stop().await;
        Ok(())
    };
    finally(body, h.cleanup()).await
}

/// A policy's group changed in Neutron behind the controller's back is
/// repaired. A policy that went while no controller ran (its finalizers
/// removed by hand) leaves a group no policy owns: the next controller puts
/// the default groups back on the pod's port and deletes the group.
#[tokio::test]
async fn a_group_no_policy_owns_is_deleted_after_a_restart() -> anyhow::Result<()> {
    let h = Harness::new("npgc", "10.238.1.0/24").await?;
    let body = async {
        let options = || Options {
            gc_interval: Duration::from_secs(2),
            lb_recheck: Duration::from_secs(2),
            ..Options::default()
        };
        let ctx = h.context(POLICY_CONF, options()).await?;
        let ctx_open = ctx.open_groups.clone();
        let defaults = ctx.settings.security_groups.clone();
        let ctl = start(ctx);
        let (port, _) = pod(&h, "web", "web").await?;
        let (nps, knps) = policy_apis(&h);
        create_policy(
            &nps,
            "port-80",
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
        )
        .await?;
        let knp = knp_where(&knps, "port-80", "port-80's group", |k| {
            !k.spec.ingress_sg_rules.is_empty()
        })
        .await?;
        let sg_id = knp
            .status
            .as_ref()
            .and_then(|s| s.security_group_id.clone())
            .unwrap_or_default();
        let open = ctx_open.expect("open groups with policies");
        port_groups_become(&h, &port, &[sg_id.clone(), open.egress.clone()]).await?;

        // the group changed behind the controller's back (a rule deleted,
        // one added) is repaired at the next comparison with Neutron
        let n = h.os.neutron();
        let group = n.get_security_group(&sg_id).await?;
        let removed = group.security_group_rules[0].clone();
        n.delete_security_group_rule(&removed.id).await?;
        let intruder = n
            .create_security_group_rule(&kuryr_openstack::types::neutron::SecurityGroupRuleCreate {
                security_group_id: sg_id.clone(),
                direction: "ingress".into(),
                ethertype: Some("IPv4".into()),
                protocol: Some("tcp".into()),
                port_range_min: Some(22),
                port_range_max: Some(22),
                remote_ip_prefix: Some("0.0.0.0/0".into()),
                ..Default::default()
            })
            .await?;
        let want = spec_keys(&knp);
        wait_until("the group's rules repaired", WAIT, EVERY, || async {
            let g = n.get_security_group(&sg_id).await?;
            let have: BTreeSet<_> = group_keys(&n, &sg_id).await?.into_iter().collect();
            let gone = g.security_group_rules.iter().all(|r| r.id != intruder.id);
            Ok((gone && have == want && g.security_group_rules.len() == want.len()).then_some(()))
        })
        .await?;
        ctl.stop().await;

        // gone behind the controller's back, KNP and all
        let unfinalize = json!({"metadata": {"finalizers": null}});
        nps.patch(
            "port-80",
            &PatchParams::default(),
            &Patch::Merge(&unfinalize),
        )
        .await?;
        nps.delete("port-80", &DeleteParams::default()).await?;
        knps.patch(
            "port-80",
            &PatchParams::default(),
            &Patch::Merge(&unfinalize),
        )
        .await?;
        knps.delete("port-80", &DeleteParams::default()).await?;
        wait_until("policy and KNP gone", WAIT, EVERY, || async {
            let gone =
                nps.get_opt("port-80").await?.is_none() && knps.get_opt("port-80").await?.is_none();
            Ok(gone.then_some(()))
        })
        .await?;

        let ctl = start(h.context(POLICY_CONF, options()).await?);
        port_groups_become(&h, &port, &defaults).await?;
        wait_until("the orphaned group deleted", WAIT, EVERY, || async {
            match h.os.neutron().get_security_group(&sg_id).await {
                Err(e) if e.is_not_found() => Ok(Some(())),
                Err(e) => Err(e.into()),
                Ok(_) => Ok(None),
            }
        })
        .await?;
        h.delete_all_pods(WAIT).await?;
        ctl.stop().await;
        Ok(())
    };
    finally(body, h.cleanup()).await
}

/// Egress allowed towards pods also admits the ClusterIP of a Service
/// backed by them, on the Service's port leading to the allowed target port:
/// the client's group sees the ClusterIP before the load balancer
/// translates it. A Service appearing later adds its rule.
#[tokio::test]
async fn egress_towards_pods_admits_the_cluster_ips_of_their_services() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Service;
    let h = Harness::new("npsvc", "10.238.2.0/24").await?;
    let body = async {
        let ctx = h.context(POLICY_CONF, Options::default()).await?;
        let open = ctx.open_groups.clone().expect("open groups with policies");
        let ctl = start(ctx);
        let (_, web_ip) = pod(&h, "web", "web").await?;
        let (client_port, _) = pod(&h, "client", "client").await?;
        let (nps, knps) = policy_apis(&h);
        create_policy(
            &nps,
            "client-to-web",
            json!({"podSelector": {"matchLabels": {"app": "client"}},
                   "policyTypes": ["Egress"],
                   "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                               "ports": [{"port": 8080}]}]}),
        )
        .await?;
        let web_rule = format!("{web_ip}/32");
        let knp = knp_where(&knps, "client-to-web", "egress to web", |k| {
            k.spec.egress_sg_rules.len() == 1
        })
        .await?;
        let r = &knp.spec.egress_sg_rules[0].sg_rule;
        assert_eq!(r.remote_ip_prefix.as_deref(), Some(web_rule.as_str()));
        assert_eq!(
            (r.port_range_min, r.port_range_max),
            (Some(8080), Some(8080))
        );
        // ingress not isolated: no rule here, the open ingress group on the
        // client's port
        assert!(knp.spec.ingress_sg_rules.is_empty());
        assert_eq!(knp.spec.policy_types, vec!["Egress"]);
        let sg = knp
            .status
            .and_then(|s| s.security_group_id)
            .unwrap_or_default();
        port_groups_become(&h, &client_port, &[sg.clone(), open.ingress.clone()]).await?;

        // a Service in front of web: port 80 leads to 8080
        let svcs: Api<Service> = Api::namespaced(h.kube.clone(), &h.ns);
        let svc = svcs
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "web"},
                    "spec": {"selector": {"app": "web"},
                             "ports": [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "other", "port": 81}]}
                }))?,
            )
            .await?;
        let vip = svc.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
        let vip_rule = format!("{vip}/32");
        let knp = knp_where(&knps, "client-to-web", "egress to web's ClusterIP", |k| {
            k.spec.egress_sg_rules.len() == 2
        })
        .await?;
        let to_vip: Vec<_> = knp
            .spec
            .egress_sg_rules
            .iter()
            .filter(|r| r.sg_rule.remote_ip_prefix.as_deref() == Some(vip_rule.as_str()))
            .collect();
        assert_eq!(to_vip.len(), 1, "{:?}", knp.spec.egress_sg_rules);
        let r = &to_vip[0].sg_rule;
        assert_eq!(r.protocol.as_deref(), Some("tcp"));
        assert_eq!((r.port_range_min, r.port_range_max), (Some(80), Some(80)));
        assert_eq!(to_vip[0].namespace.as_deref(), Some(h.ns.as_str()));

        // the Service gone, its rule goes
        svcs.delete("web", &DeleteParams::default()).await?;
        knp_where(&knps, "client-to-web", "the ClusterIP rule gone", |k| {
            k.spec.egress_sg_rules.len() == 1
        })
        .await?;
        nps.delete("client-to-web", &DeleteParams::default())
            .await?;
        wait_until("policy gone", WAIT, EVERY, || async {
            Ok(nps.get_opt("client-to-web").await?.is_none().then_some(()))
        })
        .await?;
        h.delete_all_pods(WAIT).await?;
        ctl.stop().await;
        Ok(())
    };
    finally(body, h.cleanup()).await
}

/// With `network_policy_peers = remote_group` (the default) a peer's pods
/// are named by one group their ports carry: the policy's rules stay the
/// same as pods come, go and change labels (their ports join and leave the
/// group instead); two policies with the same peer share the group; the
/// group holds no rule; when no policy names it any more it is deleted.
#[tokio::test]
async fn peers_are_groups_the_pods_carry_and_rules_do_not_grow() -> anyhow::Result<()> {
    let h = Harness::new("nppeer", "10.238.5.0/24").await?;
    let body = async {
        let options = Options {
            gc_interval: Duration::from_secs(2),
            ..Options::default()
        };
        let ctx = h.context(PEERS_CONF, options).await?;
        let defaults = ctx.settings.security_groups.clone();
        let open = ctx.open_groups.clone().expect("open groups with policies");
        let cluster = ctx.cluster_id.clone();
        let ctl = start(ctx);
        let n = h.os.neutron();
        let (web_port, _) = pod(&h, "web", "web").await?;
        let (c1_port, _) = pod(&h, "c1", "client").await?;
        let (nps, knps) = policy_apis(&h);
        let web_from_client = json!({"podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                         "ports": [{"port": 80}, {"port": 443}]}]});
        create_policy(&nps, "web-from-client", web_from_client.clone()).await?;
        let knp = knp_where(&knps, "web-from-client", "KNP naming the peer group", |k| {
            k.spec.ingress_sg_rules.len() == 2 && k.spec.peer_groups.len() == 1
        })
        .await?;
        let peer = &knp.spec.peer_groups[0];
        let g = peer.id.clone();
        assert_eq!(peer.peers.namespace.as_deref(), Some(h.ns.as_str()));
        assert_eq!(
            serde_json::to_value(&peer.peers.pod_selector)?,
            json!({"matchLabels": {"app": "client"}})
        );
        for r in &knp.spec.ingress_sg_rules {
            assert_eq!(r.sg_rule.remote_group_id.as_deref(), Some(g.as_str()));
            assert_eq!(r.sg_rule.remote_ip_prefix, None);
            assert_eq!(r.affected_pods, None);
        }
        // the group: named after its set, described, tagged, no rule
        let sg = n.get_security_group(&g).await?;
        let set = peer.peers.set()?;
        assert_eq!(sg.name, set.group_name(&cluster));
        assert_eq!(sg.description, set.description());
        assert!(
            sg.tags.contains(&format!("kuryr-peers:{}", set.digest())),
            "{:?}",
            sg.tags
        );
        assert!(
            sg.security_group_rules.is_empty(),
            "{:?}",
            sg.security_group_rules
        );
        let policy_sg = knp
            .status
            .as_ref()
            .and_then(|s| s.security_group_id.clone())
            .unwrap_or_default();

        // the client carries the group beside its defaults; web does not
        let with_peer = |mut v: Vec<String>| {
            v.push(g.clone());
            v
        };
        port_groups_become(&h, &c1_port, &with_peer(defaults.clone())).await?;
        port_groups_become(&h, &web_port, &[policy_sg.clone(), open.egress.clone()]).await?;

        // more clients: their ports join, the rules stay as they were
        let mut ports = Vec::new();
        for i in 2..=4 {
            let (p, _) = pod(&h, &format!("c{i}"), "client").await?;
            ports.push(p);
        }
        for p in &ports {
            port_groups_become(&h, p, &with_peer(defaults.clone())).await?;
        }
        let after = knps.get("web-from-client").await?;
        assert_eq!(after.spec, knp.spec, "the rules do not follow the pods");
        assert_eq!(group_keys(&n, &policy_sg).await?.len(), 2);

        // a client relabelled leaves the group
        relabel(&h, "c1", "other").await?;
        port_groups_become(&h, &c1_port, &defaults).await?;
        relabel(&h, "c1", "client").await?;
        port_groups_become(&h, &c1_port, &with_peer(defaults.clone())).await?;

        // a second policy with the same peer names the same group
        create_policy(
            &nps,
            "also-from-client",
            json!({"podSelector": {"matchLabels": {"app": "db"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
        )
        .await?;
        let second = knp_where(&knps, "also-from-client", "second KNP", |k| {
            k.spec.peer_groups.len() == 1
        })
        .await?;
        assert_eq!(second.spec.peer_groups[0].id, g);

        // both gone: the ports drop the group, which is then deleted
        nps.delete("web-from-client", &DeleteParams::default())
            .await?;
        nps.delete("also-from-client", &DeleteParams::default())
            .await?;
        port_groups_become(&h, &c1_port, &defaults).await?;
        wait_until("the peer group deleted", WAIT, EVERY, || async {
            match n.get_security_group(&g).await {
                Err(e) if e.is_not_found() => Ok(Some(())),
                Err(e) => Err(e.into()),
                Ok(_) => Ok(None),
            }
        })
        .await?;

        h.delete_all_pods(WAIT).await?;
        ctl.stop().await;
        Ok(())
    };
    finally(body, h.cleanup()).await
}
