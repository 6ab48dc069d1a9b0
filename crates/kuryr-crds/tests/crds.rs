//! The CRDs against the stack's real kube-apiserver, with a VIF built from a
//! real Neutron port: install (twice), create a KuryrPort labelled with its
//! node and guarded by the finalizer, store the VIF in its status, read it
//! back unchanged, find it by node label and short name, delete it.
#![cfg(feature = "stack")]

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use kuryr_crds::*;
use kuryr_openstack::types::neutron::{NetworkCreate, PortCreate, SubnetCreate};
use kuryr_openstack::{CloudConfig, Query};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::{cmd::run, finally, unique_name};
use serde_json::json;

#[tokio::test]
async fn kuryrport_with_a_real_vif_round_trips() -> anyhow::Result<()> {
    let env = StackEnv::load()?;
    env.require("k8s")?;
    env.require("openstack")?;
    let kubeconfig = env.get("KUBECONFIG")?.to_owned();
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let client = Client::try_from(Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    install(&client).await?;
    install(&client).await?; // idempotent

    let os = kuryr_openstack::Client::new(CloudConfig::from_vars(|k| {
        env.get(k).ok().map(str::to_owned)
    })?)?;
    let n = os.neutron();
    let net = n
        .create_network(&NetworkCreate {
            name: Some(unique_name("crd-net-", 40)),
            mtu: Some(1400),
            ..Default::default()
        })
        .await?;
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = unique_name("crd-", 40);
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
    )
    .await?;
    let body = async {
        let sub = n
            .create_subnet(&SubnetCreate {
                network_id: net.id.clone(),
                ip_version: 4,
                cidr: Some("10.235.0.0/24".into()),
                ..Default::default()
            })
            .await?;
        let port = n
            .create_port(&PortCreate {
                network_id: net.id.clone(),
                binding_host_id: Some(env.get("KURYR_STACK_AGENT_HOST")?.to_owned()),
                ..Default::default()
            })
            .await?;
        let vif = Vif::from_port(
            &port,
            &net,
            &[sub],
            VifKind::OpenVSwitch {
                bridge_name: "br-int".into(),
            },
        );
        assert_eq!(vif.network.subnets[0].ips.len(), 1);

        let api: Api<KuryrPort> = Api::namespaced(client.clone(), &ns);
        let mut kp = KuryrPort::new(
            "pod-a",
            KuryrPortSpec {
                pod_uid: "uid-a".into(),
                pod_node_name: "localhost".into(),
                pod_static: false,
            },
        );
        kp.metadata.labels = Some([(NODE_NAME_LABEL.to_string(), "localhost".to_string())].into());
        kp.metadata.finalizers = Some(vec![KURYRPORT_FINALIZER.to_string()]);
        api.create(&PostParams::default(), &kp).await?;
        let status = KuryrPortStatus::default_only(vif.clone());
        // like kuryr-kubernetes's CRD, KuryrPort has no status subresource:
        // status is written through the object itself
        api.patch(
            "pod-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;

        let got = api.get("pod-a").await?;
        let st = got.status.clone().expect("status stored");
        assert_eq!(
            st.default_vif(),
            Some(&vif),
            "the VIF survives the apiserver unchanged"
        );
        // node daemons select their KuryrPorts by label
        let mine = api
            .list(&ListParams::default().labels(&format!("{NODE_NAME_LABEL}=localhost")))
            .await?;
        assert_eq!(mine.items.len(), 1);
        let other = api
            .list(&ListParams::default().labels(&format!("{NODE_NAME_LABEL}=elsewhere")))
            .await?;
        assert!(other.items.is_empty());
        // kubectl knows the short name and prints the columns
        let kubectl = format!("{}/kubectl", env.get("KURYR_STACK_K8S_BIN")?);
        let out = run(&[
            kubectl.as_str(),
            "--kubeconfig",
            &kubeconfig,
            "-n",
            &ns,
            "get",
            "kp",
        ])?;
        assert!(
            out.contains("PODUID") && out.contains("uid-a") && out.contains("localhost"),
            "{out}"
        );
        // the finalizer holds the object until it is removed
        api.delete("pod-a", &DeleteParams::default()).await?;
        assert!(
            api.get("pod-a")
                .await?
                .metadata
                .deletion_timestamp
                .is_some()
        );
        api.patch(
            "pod-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
        kuryr_stack_tests::wait_until(
            "KuryrPort gone",
            std::time::Duration::from_secs(30),
            std::time::Duration::from_millis(200),
            || async { Ok(api.get_opt("pod-a").await?.is_none().then_some(())) },
        )
        .await?;
        n.delete_port(&port.id).await?;
        anyhow::Ok(())
    };
    finally(body, async {
        for p in n
            .list_ports(&Query::new().filter("network_id", &net.id))
            .await?
        {
            n.delete_port(&p.id).await?;
        }
        n.delete_network(&net.id).await?;
        // a KuryrPort left by a failure must not keep the namespace: drop finalizers first
        let api: Api<KuryrPort> = Api::namespaced(client.clone(), &ns);
        if api.get_opt("pod-a").await?.is_some() {
            api.patch(
                "pod-a",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await?;
        }
        nss.delete(&ns, &DeleteParams::default()).await?;
        Ok(())
    })
    .await
}
