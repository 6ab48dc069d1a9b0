//! Real Neutron pieces for the daemon's stack tests: a network with its
//! subnet, a port plugged by hand as a VM, and the controller's part of
//! marking a VIF active once Neutron says its port is.

use super::set_vif;
use anyhow::Context as _;
use kuryr_crds::Vif;
use kuryr_openstack::types::neutron::{Network, Port, Subnet};
use kuryr_stack_tests::env::StackEnv;
use kuryr_stack_tests::net::{Netns, OvsPort, Veth};
use kuryr_stack_tests::openstack::{Session, Undo};
use kuryr_stack_tests::wait_until;
use serde_json::{Value, json};
use std::time::Duration;

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(v.clone())?)
}

/// A network `name` with one IPv4 subnet made of `subnet` (its `cidr`
/// and any other fields), both deleted by `undo`.
pub async fn network(
    s: &Session,
    undo: &Undo,
    name: &str,
    subnet: Value,
) -> anyhow::Result<(Network, Subnet)> {
    let net = s
        .post(&s.n("networks"), json!({"network": {"name": name}}))
        .await?;
    let net_id = net["network"]["id"].as_str().context("net id")?.to_owned();
    undo.delete(s.n(&format!("networks/{net_id}")));
    let mut body = json!({"network_id": net_id, "ip_version": 4, "name": name});
    if let (Some(b), Some(extra)) = (body.as_object_mut(), subnet.as_object()) {
        b.extend(extra.clone());
    }
    let sub = s.post(&s.n("subnets"), json!({ "subnet": body })).await?;
    let sub_id = sub["subnet"]["id"]
        .as_str()
        .context("subnet id")?
        .to_owned();
    undo.delete(s.n(&format!("subnets/{sub_id}")));
    Ok((typed(&net["network"])?, typed(&sub["subnet"])?))
}

/// A port standing for a VM: a namespace whose `eth0` has the port's MAC
/// and address, its host end in br-int with the port's id, plugged
/// straight (as os-vif plugs when the binding asks no hybrid plug).
/// Unplugged on drop: OVS port, then the veth, then the namespace.
pub struct HandPluggedVm {
    _ovs: OvsPort,
    _veth: Veth,
    pub ns: Netns,
}

pub fn plug_vm(env: &StackEnv, port: &Port, prefix: &str) -> anyhow::Result<HandPluggedVm> {
    let ns = Netns::new(prefix)?;
    let veth = Veth::new(&ns, "eth0")?;
    ns.ip(&["link", "set", "eth0", "address", &port.mac_address])?;
    let ip = port.first_ip().context("the VM port has no address")?;
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    let ovs = OvsPort::add(
        env.get("OVSDB_SOCK")?,
        "br-int",
        &veth.host,
        &[
            ("iface-id", &port.id),
            ("attached-mac", &port.mac_address),
            ("iface-status", "active"),
            ("vm-uuid", "vm"),
        ],
    )?;
    Ok(HandPluggedVm {
        _ovs: ovs,
        _veth: veth,
        ns,
    })
}

/// Stand-in for the controller: each `(KuryrPort name, VIF)`'s VIF is
/// written active once Neutron reports its port ACTIVE. Abort the task
/// when the test no longer needs it.
pub async fn activate_when_neutron_does(
    env: &StackEnv,
    client: &kube::Client,
    ns: &str,
    todo: Vec<(String, Vif)>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (client, ns, s) = (client.clone(), ns.to_owned(), Session::login(env).await?);
    Ok(tokio::spawn(async move {
        for (who, mut vif) in todo {
            let url = s.n(&format!("ports/{}", vif.id));
            let _ = wait_until(
                "port ACTIVE",
                Duration::from_secs(90),
                Duration::from_millis(250),
                || async { Ok((s.get(&url).await?["port"]["status"] == "ACTIVE").then_some(())) },
            )
            .await;
            vif.active = true;
            let _ = set_vif(&client, &ns, &who, &vif).await;
        }
    }))
}
