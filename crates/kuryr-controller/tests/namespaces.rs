//! Namespace networks (`pod_subnets_driver = namespace`) against the
//! stack's real kube-apiserver and Neutron: a namespace with a pod gets a
//! KuryrNetwork written as kuryr-kubernetes wrote it and a network, subnet
//! (from the subnet pool, DHCP off) and router interface of its own; its
//! pods' ports are made there; its labels are followed; deleting it takes
//! the ports, interface, subnet and network with it, and waits (saying so
//! in a Warning event) while a port kuryr-rs did not make is still there.
//! A VM's port on a namespace's network gets the verdicts of the
//! namespace's pods under a policy (traffic through the stack's OVS). A
//! Service whose endpoint is a pod on a namespace network made after the
//! controller started answers a pod of another namespace network through
//! its ClusterIP (Octavia's `ovn` provider; skipped on ML2/OVS).
#![cfg(feature = "stack")]

mod common;

use common::policy::{create_policy, pod_in};
use common::{Harness, NODE, lb, start};
use k8s_openapi::api::core::v1::{Event, Namespace, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kuryr_controller::Options;
use kuryr_controller::namespace_net::{namespace_tag, resource_name};
use kuryr_crds::{KURYRNETWORK_FINALIZER, KuryrNetwork};
use kuryr_openstack::Query;
use kuryr_openstack::types::neutron::{PortCreate, SubnetPoolCreate};
use kuryr_stack_tests::echo::{EchoServer, ask_within};
use kuryr_stack_tests::k8s::{RUNTIME_CLASS_NONE, runtime_class_none};
use kuryr_stack_tests::openstack::{Session, with_undo};
use kuryr_stack_tests::plug::{Net, VmPort, wait_port_active};
use kuryr_stack_tests::{finally, unique_name, wait_until};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const EVERY: Duration = Duration::from_millis(200);

#[tokio::test]
async fn a_namespace_gets_its_own_network_for_its_pods_and_loses_it_with_the_namespace()
-> anyhow::Result<()> {
    let h = Harness::new("nsnet", "10.239.0.0/24").await?;
    let n = h.os.neutron();
    let router = h.env.get("KURYR_STACK_ROUTER")?.to_owned();
    let pool = n
        .create_subnet_pool(&SubnetPoolCreate {
            name: unique_name("nsnet-pool-", 40),
            prefixes: vec!["10.241.0.0/16".into()],
            default_prefixlen: Some(26),
            ..Default::default()
        })
        .await?;
    let body = async {
        let conf = format!(
            "[kubernetes]\npod_subnets_driver = namespace\nenabled_handlers = vif,kuryrport,namespace,kuryrnetwork\n[namespace_subnet]\npod_subnet_pool = {}\npod_router = {router}\n",
            pool.id
        );
        let ctx = h.context(&conf, Options::default()).await?;
        let project = ctx
            .namespaces
            .as_ref()
            .expect("namespace networks on")
            .project_id
            .clone();
        let nss: Api<Namespace> = Api::all(h.kube.clone());
        nss.patch(
            &h.ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "a", "team": "x"}}})),
        )
        .await?;
        let ns_uid = nss.get(&h.ns).await?.metadata.uid.unwrap_or_default();
        let ctl = start(ctx.clone());

        // a pod: the namespace gets its KuryrNetwork and network, the pod a
        // port there
        let uid = h.create_pods(&["a".to_string()], NODE).await?.remove(0);
        let vif = h.vif_of("a", &uid, WAIT).await?;
        let knss: Api<KuryrNetwork> = Api::namespaced(h.kube.clone(), &h.ns);
        let kns = knss.get(&h.ns).await?;
        let v = serde_json::to_value(&kns)?;
        assert_eq!(
            v["spec"],
            json!({"nsName": h.ns, "projectId": project, "nsLabels": {"tier": "a", "team": "x", "kubernetes.io/metadata.name": h.ns, "kuryr-test": h.label}}),
            "{v}"
        );
        assert_eq!(
            v["metadata"]["finalizers"],
            json!([KURYRNETWORK_FINALIZER]),
            "{v}"
        );
        let st = &v["status"];
        let net_id = st["netId"].as_str().expect("netId").to_owned();
        let subnet_id = st["subnetId"].as_str().expect("subnetId").to_owned();
        assert_eq!(st["routerId"], json!(router), "{v}");
        assert_eq!(st["populated"], json!(false), "{v}");
        assert_eq!(
            vif.network.id, net_id,
            "the pod's port is on its namespace's network"
        );

        let net = n.get_network(&net_id).await?;
        assert_eq!(net.name, resource_name(&h.ns, &ns_uid));
        assert!(net.tags.contains(&namespace_tag(&ns_uid)), "{:?}", net.tags);
        assert!(
            net.tags
                .contains(&kuryr_controller::plan::cluster_tag(&h.cluster))
        );
        let subnet = n.get_subnet(&subnet_id).await?;
        assert_eq!(st["subnetCIDR"], json!(subnet.cidr), "{v}");
        assert!(
            subnet.cidr.starts_with("10.241.") && subnet.cidr.ends_with("/26"),
            "{}",
            subnet.cidr
        );
        assert!(!subnet.enable_dhcp);
        assert_eq!(subnet.subnetpool_id.as_deref(), Some(pool.id.as_str()));
        assert_eq!(subnet.name, resource_name(&h.ns, &ns_uid));
        let port = n.get_port(&vif.id).await?;
        assert_eq!(port.network_id, net_id);
        assert!(
            port.fixed_ips
                .iter()
                .all(|f| f.subnet_id.as_deref() == Some(subnet_id.as_str()))
        );
        let router_ports = n
            .list_ports(
                &Query::new()
                    .filter("device_id", &router)
                    .filter("network_id", &net_id),
            )
            .await?;
        assert_eq!(
            router_ports.len(),
            1,
            "one interface of the router on the subnet"
        );

        // a second pod of the namespace shares the network
        let uid_b = h.create_pods(&["b".to_string()], NODE).await?.remove(0);
        assert_eq!(h.vif_of("b", &uid_b, WAIT).await?.network.id, net_id);

        // labels follow, a removed one too
        nss.patch(
            &h.ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": null, "tier": "b"}}})),
        )
        .await?;
        let want = json!({"tier": "b", "kubernetes.io/metadata.name": h.ns, "kuryr-test": h.label});
        wait_until(
            "KuryrNetwork labels follow the namespace",
            WAIT,
            EVERY,
            || async {
                let v = serde_json::to_value(knss.get(&h.ns).await?)?;
                Ok(
                    (v["spec"]["nsLabels"] == want && v["status"]["nsLabels"] == want)
                        .then_some(()),
                )
            },
        )
        .await?;

        // a port kuryr-rs did not make holds the namespace
        let foreign = n
            .create_port(&PortCreate {
                network_id: net_id.clone(),
                name: Some("nsnet-foreign".into()),
                device_owner: Some("compute:nova".into()),
                device_id: Some("a-vm".into()),
                ..Default::default()
            })
            .await?;
        for p in ["a", "b"] {
            h.delete_pod(p).await?;
        }
        for p in ["a", "b"] {
            h.wait_pod_gone(p, WAIT).await?;
        }
        nss.delete(&h.ns, &DeleteParams::default()).await?;
        // a namespace's events are in `default`
        let events: Api<Event> = Api::namespaced(h.kube.clone(), "default");
        wait_until(
            "a NetworkInUse warning naming the VM's port",
            WAIT,
            EVERY,
            || async {
                let found = events
                    .list(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .any(|e| {
                        e.involved_object.name.as_deref() == Some(h.ns.as_str())
                            && e.reason.as_deref() == Some("NetworkInUse")
                            && e.type_.as_deref() == Some("Warning")
                            && e.message.unwrap_or_default().contains(&foreign.id)
                    });
                Ok(found.then_some(()))
            },
        )
        .await?;
        assert!(
            n.get_network(&net_id).await.is_ok(),
            "kept while the VM's port is there"
        );
        assert!(
            n.get_port(&foreign.id).await.is_ok(),
            "somebody else's port is never deleted"
        );
        n.delete_port(&foreign.id).await?;

        // then everything goes, the namespace too
        wait_until(
            "the namespace is gone",
            Duration::from_secs(120),
            EVERY,
            || async { Ok(nss.get_opt(&h.ns).await?.is_none().then_some(())) },
        )
        .await?;
        assert!(
            n.get_network(&net_id)
                .await
                .is_err_and(|e| e.is_not_found())
        );
        assert!(
            n.get_subnet(&subnet_id)
                .await
                .is_err_and(|e| e.is_not_found())
        );
        assert!(n.get_port(&vif.id).await.is_err_and(|e| e.is_not_found()));
        let left = n
            .list_ports(&Query::new().filter("device_id", &router))
            .await?;
        assert!(
            left.iter().all(|p| p.network_id != net_id),
            "the router interface went"
        );
        ctl.stop().await;
        anyhow::Ok(())
    };
    let cleanup = async {
        h.cleanup().await?;
        n.delete_subnet_pool(&pool.id).await?;
        anyhow::Ok(())
    };
    finally(body, cleanup).await
}

/// Pod `name` labelled `app=<app>` on the stack's real node under a
/// RuntimeClass no runtime has, its port plugged into a namespace of its
/// own once the controller made it (as kuryr-daemon would) and its address
/// written into its status (as the kubelet would), with its subnet's
/// gateway as the default route.
async fn plugged_pod(h: &Harness, node: &str, name: &str, app: &str) -> anyhow::Result<VmPort> {
    plugged_pod_in(h, &h.ns, node, name, app).await
}

/// [`plugged_pod`] in namespace `ns`.
async fn plugged_pod_in(
    h: &Harness,
    ns: &str,
    node: &str,
    name: &str,
    app: &str,
) -> anyhow::Result<VmPort> {
    let vif = pod_in(h, ns, node, Some(RUNTIME_CLASS_NONE), name, app).await?;
    let subnet = &vif.network.subnets[0];
    let prefix: u8 = match subnet.cidr.split_once('/') {
        Some((_, len)) => len.parse()?,
        None => anyhow::bail!("subnet {} without a prefix length", subnet.cidr),
    };
    let gateway = subnet.gateway.clone().unwrap_or_default();
    VmPort::attach(
        &h.env,
        &vif.id,
        &vif.address,
        &subnet.ips[0],
        prefix,
        &gateway,
        name,
    )
}

const TOKEN: &str = "nsvm-server";

/// Whether `from` gets the server's answer on `addr` within a second.
fn answered(from: &VmPort, addr: &str) -> bool {
    ask_within(&from.ns, "tcp", addr, 1000).is_ok_and(|a| a == TOKEN)
}

/// Waits until every one of `who` gets the verdict it should (`true`:
/// answered), then checks them all once more together.
async fn verdicts(what: &str, addr: &str, who: &[(&str, &VmPort, bool)]) -> anyhow::Result<()> {
    let reached = wait_until(what, WAIT, EVERY, || async {
        Ok(who
            .iter()
            .all(|(_, p, want)| answered(p, addr) == *want)
            .then_some(()))
    })
    .await;
    if let Err(e) = reached {
        let got: Vec<_> = who
            .iter()
            .map(|(name, p, want)| format!("{name}: want {want}, got {}", answered(p, addr)))
            .collect();
        anyhow::bail!("{e}: {got:?}");
    }
    for (name, p, want) in who {
        assert_eq!(answered(p, addr), *want, "{what}: {name}");
    }
    Ok(())
}

#[tokio::test]
async fn a_vm_on_a_namespace_network_gets_the_verdicts_its_pods_get() -> anyhow::Result<()> {
    let h = Harness::new("nsvm", "10.239.1.0/24").await?;
    let n = h.os.neutron();
    let router = h.env.get("KURYR_STACK_ROUTER")?.to_owned();
    let node = h.env.get("KURYR_STACK_NODE")?.to_owned();
    runtime_class_none(&h.kube).await?;
    let s = Session::login(&h.env).await?;
    let pool = n
        .create_subnet_pool(&SubnetPoolCreate {
            name: unique_name("nsvm-pool-", 40),
            prefixes: vec!["10.242.0.0/16".into()],
            default_prefixlen: Some(26),
            ..Default::default()
        })
        .await?;
    let body = with_undo(&s, async |undo| {
        // peers as the backend suits (remote groups on OVN, addresses on
        // ML2/OVS): the VM must get the pods' verdicts either way
        let conf = format!(
            "[kubernetes]\npod_subnets_driver = namespace\npod_security_groups_driver = policy\nenabled_handlers = vif,kuryrport,namespace,kuryrnetwork,policy\nnetwork_policy_peers = auto\n[namespace_subnet]\npod_subnet_pool = {}\npod_router = {router}\n",
            pool.id
        );
        let ctl = start(h.context(&conf, Options::default()).await?);

        let server = plugged_pod(&h, &node, "server", "server").await?;
        let _echo = EchoServer::start(&server.ns, TOKEN, &[80], &[])?;
        let client = plugged_pod(&h, &node, "client", "client").await?;
        let other = plugged_pod(&h, &node, "other", "other").await?;

        // the VM: a port on the namespace's network in the project's
        // default group, as Nova would make it
        let knss: Api<KuryrNetwork> = Api::namespaced(h.kube.clone(), &h.ns);
        let st = knss.get(&h.ns).await?.status.expect("KuryrNetwork status");
        let cidr = st.subnet_cidr.clone().unwrap_or_default();
        anyhow::ensure!(cidr.ends_with("/26"), "namespace subnet {cidr}");
        let net = Net {
            id: st.net_id.clone().expect("netId"),
            subnet_id: st.subnet_id.clone().expect("subnetId"),
            prefix: 26,
            gateway: String::new(),
        };
        let vm = VmPort::plug(&s, undo, &h.env, &net, None).await?;
        wait_port_active(&s, &vm.id).await?;
        let addr = format!("{}:80", server.ip);
        // the verdicts client, other and the VM should get (true: answered)
        let expect = |c, o, v| [("client", &client, c), ("other", &other, o), ("vm", &vm, v)];

        verdicts(
            "no policy: everybody is answered",
            &addr,
            &expect(true, true, true),
        )
        .await?;

        let nps: Api<NetworkPolicy> = Api::namespaced(h.kube.clone(), &h.ns);
        let from_clients = json!({"podSelector": {"matchLabels": {"app": "client"}}});
        create_policy(
            &nps,
            "server",
            json!({"podSelector": {"matchLabels": {"app": "server"}},
                   "ingress": [{"from": [from_clients], "ports": [{"port": 80}]}]}),
        )
        .await?;
        verdicts(
            "a policy admitting app=client: the VM is refused like the other pod",
            &addr,
            &expect(true, false, false),
        )
        .await?;

        let vm_block = json!({"ipBlock": {"cidr": format!("{}/32", vm.ip)}});
        nps.patch(
            "server",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ingress": [{"from": [from_clients, vm_block], "ports": [{"port": 80}]}]}})),
        )
        .await?;
        verdicts(
            "the VM's address admitted too",
            &addr,
            &expect(true, false, true),
        )
        .await?;

        nps.delete("server", &DeleteParams::default()).await?;
        verdicts(
            "the policy gone: everybody is answered again",
            &addr,
            &expect(true, true, true),
        )
        .await?;
        ctl.stop().await;
        anyhow::Ok(())
    });
    let cleanup = async {
        h.cleanup().await?;
        n.delete_subnet_pool(&pool.id).await?;
        anyhow::Ok(())
    };
    finally(body, cleanup).await
}

#[tokio::test]
async fn a_service_answers_between_namespace_networks_made_after_the_controller_started()
-> anyhow::Result<()> {
    let h = Harness::new("nssvc", "10.239.2.0/24").await?;
    if !lb::provider_or_skip(&h, "services carry traffic")? {
        return h.cleanup().await;
    }
    let n = h.os.neutron();
    let router = h.env.get("KURYR_STACK_ROUTER")?.to_owned();
    let node = h.env.get("KURYR_STACK_NODE")?.to_owned();
    runtime_class_none(&h.kube).await?;
    let pool = n
        .create_subnet_pool(&SubnetPoolCreate {
            name: unique_name("nssvc-pool-", 40),
            prefixes: vec!["10.243.0.0/16".into()],
            default_prefixlen: Some(26),
            ..Default::default()
        })
        .await?;
    // the client's namespace, with a network of its own too
    let other = unique_name("nssvc-client-", 40);
    let nss: Api<Namespace> = Api::all(h.kube.clone());
    let body = async {
        let conf = format!(
            "{}[kubernetes]\npod_subnets_driver = namespace\nenabled_handlers = vif,kuryrport,namespace,kuryrnetwork,service,endpoints,kuryrloadbalancer\n[namespace_subnet]\npod_subnet_pool = {}\npod_router = {router}\n",
            lb::conf(&h)?,
            pool.id
        );
        // started before any namespace network exists: the members'
        // subnets are not in its first listing
        let ctl = start(h.context(&conf, Options::default()).await?);
        let server = plugged_pod(&h, &node, "server", "server").await?;
        let _echo = EchoServer::start(&server.ns, TOKEN, &[8080], &[])?;
        nss.create(
            &Default::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": other, "labels": {"kuryr-test": h.label}}}),
            )?,
        )
        .await?;
        let client = plugged_pod_in(&h, &other, &node, "client", "client").await?;

        let uid = lb::service_with_endpoints(&h, "web", &[&server.ip]).await?;
        let svcs: Api<Service> = Api::namespaced(h.kube.clone(), &h.ns);
        let vip = svcs
            .get("web")
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .unwrap_or_default();
        lb::complete_lb(&h, "web", &uid, 1).await?;
        lb::ovn_applied(&h)?;
        let addr = format!("{vip}:80");
        wait_until(
            "the server answering the other namespace's pod through the ClusterIP",
            WAIT,
            EVERY,
            || async { Ok(answered(&client, &addr).then_some(())) },
        )
        .await?;
        ctl.stop().await;
        drop((server, client));
        anyhow::Ok(())
    };
    let cleanup = async {
        // the client's namespace while the harness's controller-free
        // cleanup runs: its network is found by the cluster tag
        h.release_namespace(&other).await?;
        let _ = nss.delete(&other, &DeleteParams::default()).await;
        h.cleanup().await?;
        n.delete_subnet_pool(&pool.id).await?;
        anyhow::Ok(())
    };
    finally(body, cleanup).await
}
