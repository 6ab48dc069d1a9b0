//! Projects per namespace against the stack's real Keystone, Neutron and
//! kube-apiserver: two namespaces annotated `openstack.org/kuryr-project`
//! with two new Keystone projects get their networks, subnets and pod
//! ports in their own project, their pods' groups are their project's own
//! `default` group (which admits only its members: the two projects' pods
//! cannot reach each other), a policy's group is made in its namespace's
//! project, and nothing of one project is given to a pod of the other.
#![cfg(feature = "stack")]

mod common;

use common::policy::{create_policy, knp_where};
use common::{Harness, NODE, start};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kuryr_controller::Options;
use kuryr_controller::tenants::PROJECT_ANNOTATION;
use kuryr_crds::{KuryrNetwork, KuryrNetworkPolicy};
use kuryr_openstack::types::neutron::SubnetPoolCreate;
use kuryr_stack_tests::openstack::Session;
use kuryr_stack_tests::{finally, unique_name};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn two_projects_get_their_own_networks_ports_and_groups() -> anyhow::Result<()> {
    let h = Harness::new("tenant", "10.239.2.0/24").await?;
    let s = Session::login(&h.env).await?;
    let keystone = h.env.get("OS_AUTH_URL")?.trim_end_matches('/').to_owned();
    let n = h.os.neutron();
    let router = h.env.get("KURYR_STACK_ROUTER")?.to_owned();
    let other_ns = unique_name("tenant-b-", 40);
    let mut projects = Vec::new();
    for p in ["a", "b"] {
        let v = s
            .post(
                &format!("{keystone}/projects"),
                json!({"project": {"name": unique_name(&format!("kuryr-tenant-{p}-"), 40), "domain_id": "default"}}),
            )
            .await?;
        projects.push(v["project"]["id"].as_str().unwrap_or_default().to_owned());
    }
    let pool = n
        .create_subnet_pool(&SubnetPoolCreate {
            name: unique_name("tenant-pool-", 40),
            prefixes: vec!["10.242.0.0/16".into()],
            default_prefixlen: Some(26),
            shared: Some(true),
            ..Default::default()
        })
        .await?;
    let nss: Api<Namespace> = Api::all(h.kube.clone());
    let body = async {
        let conf = format!(
            "[kubernetes]\npod_subnets_driver = namespace\npod_security_groups_driver = policy\nenabled_handlers = vif,kuryrport,namespace,policy\n[namespace_subnet]\npod_subnet_pool = {}\npod_router = {router}\n",
            pool.id
        );
        let ctx = h.context(&conf, Options::default()).await?;
        // namespace a: the harness's; b: another one
        nss.patch(
            &h.ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {PROJECT_ANNOTATION: projects[0]}}})),
        )
        .await?;
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": other_ns,
                "labels": {"kuryr-test": h.label},
                "annotations": {PROJECT_ANNOTATION: projects[1]}}}))?,
        )
        .await?;
        let ctl = start(ctx.clone());

        let mut found = Vec::new();
        for (ns, project) in [(&h.ns, &projects[0]), (&other_ns, &projects[1])] {
            let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(h.kube.clone(), ns);
            let mut p = h.pod("p", NODE)?;
            p.metadata.namespace = Some(ns.clone());
            p.metadata
                .labels
                .get_or_insert_default()
                .insert("app".into(), "web".into());
            let uid = pods
                .create(&PostParams::default(), &p)
                .await?
                .metadata
                .uid
                .unwrap_or_default();
            let kps: Api<kuryr_crds::KuryrPort> = Api::namespaced(h.kube.clone(), ns);
            let vif = kuryr_stack_tests::wait_until(
                &format!("pod p of {ns} with a VIF"),
                WAIT,
                Duration::from_millis(200),
                || async {
                    Ok(kps
                        .get_opt("p")
                        .await?
                        .filter(|k| k.spec.pod_uid == uid)
                        .and_then(|k| k.status)
                        .and_then(|s| s.default_vif().cloned()))
                },
            )
            .await?;
            let knss: Api<KuryrNetwork> = Api::namespaced(h.kube.clone(), ns);
            let kns = knss.get(ns).await?;
            assert_eq!(
                &kns.spec.project_id, project,
                "the KuryrNetwork names the annotation's project"
            );
            let st = kns.status.unwrap_or_default();
            let net = n
                .get_network(st.net_id.as_deref().unwrap_or_default())
                .await?;
            let subnet = n
                .get_subnet(st.subnet_id.as_deref().unwrap_or_default())
                .await?;
            let port = n.get_port(&vif.id).await?;
            assert_eq!(&net.project_id, project, "{ns}: network");
            assert_eq!(&subnet.project_id, project, "{ns}: subnet");
            assert_eq!(&port.project_id, project, "{ns}: port");
            assert_eq!(port.network_id, net.id);
            // the project's own default group, nothing else
            assert_eq!(port.security_groups.len(), 1, "{:?}", port.security_groups);
            let g = n.get_security_group(&port.security_groups[0]).await?;
            assert_eq!(
                (g.name.as_str(), &g.project_id),
                ("default", project),
                "{ns}: the port's group"
            );
            // which admits its own members only
            let ingress: Vec<_> = g
                .security_group_rules
                .iter()
                .filter(|r| r.direction == "ingress")
                .collect();
            assert!(!ingress.is_empty());
            assert!(
                ingress
                    .iter()
                    .all(|r| r.remote_group_id.as_deref() == Some(g.id.as_str())
                        && r.remote_ip_prefix.is_none()),
                "{ns}: ingress only from the project's own pods: {ingress:?}"
            );
            found.push((port, net, subnet, g.id));
        }
        let (a, b) = (&found[0], &found[1]);
        assert_ne!(a.1.id, b.1.id);
        assert!(!a.0.security_groups.contains(&b.3) && !b.0.security_groups.contains(&a.3));

        // a policy of namespace a: its group is in project a, on a's pod
        let nps: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
            Api::namespaced(h.kube.clone(), &h.ns);
        let knps: Api<KuryrNetworkPolicy> = Api::namespaced(h.kube.clone(), &h.ns);
        create_policy(&nps, "deny-all", json!({"podSelector": {}})).await?;
        let knp = knp_where(&knps, "deny-all", "deny-all's group", |_| true).await?;
        let sg = knp
            .status
            .and_then(|s| s.security_group_id)
            .unwrap_or_default();
        assert_eq!(n.get_security_group(&sg).await?.project_id, projects[0]);
        // deny-all isolates ingress only: the cluster's open egress group,
        // shared with the project, too
        let open = ctx.open_groups.clone().expect("open groups with policies");
        let mut want = vec![sg.clone(), open.egress.clone()];
        want.sort();
        kuryr_stack_tests::wait_until(
            "a's pod in deny-all's group",
            WAIT,
            Duration::from_millis(200),
            || async {
                let have = n.get_port(&a.0.id).await?.security_groups;
                let mut have = have;
                have.sort();
                Ok((have == want).then_some(()))
            },
        )
        .await?;
        nps.delete("deny-all", &DeleteParams::default()).await?;
        kuryr_stack_tests::wait_until(
            "a's pod back in its project's default",
            WAIT,
            Duration::from_millis(200),
            || async {
                let have = n.get_port(&a.0.id).await?.security_groups;
                Ok((have == vec![a.3.clone()]).then_some(()))
            },
        )
        .await?;

        for ns in [&h.ns, &other_ns] {
            let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(h.kube.clone(), ns);
            pods.delete(
                "p",
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await?;
        }
        kuryr_stack_tests::wait_until(
            "both pods gone",
            WAIT,
            Duration::from_millis(200),
            || async {
                let mut left = 0;
                for ns in [&h.ns, &other_ns] {
                    let pods: Api<k8s_openapi::api::core::v1::Pod> =
                        Api::namespaced(h.kube.clone(), ns);
                    left += pods.list(&ListParams::default()).await?.items.len();
                }
                Ok((left == 0).then_some(()))
            },
        )
        .await?;
        ctl.stop().await;
        anyhow::Ok(())
    };
    let cleanup = async {
        // the other namespace, whatever it holds
        h.release_namespace(&other_ns).await?;
        let _ = nss.delete(&other_ns, &DeleteParams::default()).await;
        h.cleanup().await?;
        n.delete_subnet_pool(&pool.id).await?;
        for p in &projects {
            // the projects' default groups go with them
            for g in n
                .list_security_groups(&kuryr_openstack::Query::new().filter("project_id", p))
                .await?
            {
                n.delete_security_group(&g.id).await?;
            }
            s.delete(&format!("{keystone}/projects/{p}")).await?;
        }
        anyhow::Ok(())
    };
    finally(body, cleanup).await
}
