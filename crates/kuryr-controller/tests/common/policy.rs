//! What the NetworkPolicy tests share: a pod with its address in its
//! status (no kubelet runs on the test node), policies, and waits for a
//! KuryrNetworkPolicy or a port's groups to become what they should.
#![allow(dead_code)]

use super::{Harness, NODE};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kuryr_crds::{KuryrNetworkPolicy, KuryrPort};
use kuryr_policy::rule_key;
use kuryr_stack_tests::wait_until;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

/// How long a policy test waits for anything.
pub const WAIT: Duration = Duration::from_secs(60);
/// How often it looks.
pub const EVERY: Duration = Duration::from_millis(200);
/// kuryr.conf for NetworkPolicies (beside the harness's own), pods named
/// by address in rules as kuryr-kubernetes wrote them.
pub const POLICY_CONF: &str = "[kubernetes]\npod_security_groups_driver = policy\nenabled_handlers = vif,kuryrport,policy\nnetwork_policy_peers = ip_prefix\n";
/// kuryr.conf for NetworkPolicies with pods named by peer-set groups (what
/// `auto` chooses on ML2/OVN).
pub const PEERS_CONF: &str = "[kubernetes]\npod_security_groups_driver = policy\nenabled_handlers = vif,kuryrport,policy\nnetwork_policy_peers = remote_group\n";

/// Makes pod `name` with `app=<app>`, waits for its port and writes the
/// port's address into the pod's status; answers (port id, address).
pub async fn pod(h: &Harness, name: &str, app: &str) -> anyhow::Result<(String, String)> {
    let vif = pod_on(h, NODE, None, name, app).await?;
    let ip = vif.network.subnets[0].ips[0].clone();
    Ok((vif.id, ip))
}

/// Makes pod `name` with `app=<app>` on `node` (under `runtime_class` if
/// given), waits for its port and writes the port's address into the
/// pod's status (as the kubelet would from the CNI result); answers its VIF.
pub async fn pod_on(
    h: &Harness,
    node: &str,
    runtime_class: Option<&str>,
    name: &str,
    app: &str,
) -> anyhow::Result<kuryr_crds::Vif> {
    pod_in(h, &h.ns, node, runtime_class, name, app).await
}

/// [`pod_on`] in namespace `ns`.
pub async fn pod_in(
    h: &Harness,
    ns: &str,
    node: &str,
    runtime_class: Option<&str>,
    name: &str,
    app: &str,
) -> anyhow::Result<kuryr_crds::Vif> {
    let pods: Api<Pod> = Api::namespaced(h.kube.clone(), ns);
    let kps: Api<KuryrPort> = Api::namespaced(h.kube.clone(), ns);
    let mut p = h.pod(name, node)?;
    p.metadata
        .labels
        .get_or_insert_default()
        .insert("app".into(), app.into());
    if let Some(rc) = runtime_class {
        p.spec.as_mut().expect("spec").runtime_class_name = Some(rc.into());
    }
    let uid = pods
        .create(&PostParams::default(), &p)
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    let vif = wait_until(
        &format!("KuryrPort {ns}/{name} with a VIF"),
        WAIT,
        EVERY,
        || async {
            Ok(kps
                .get_opt(name)
                .await?
                .filter(|k| k.spec.pod_uid == uid)
                .and_then(|k| k.status)
                .and_then(|s| s.default_vif().cloned()))
        },
    )
    .await?;
    let ip = vif.network.subnets[0].ips[0].clone();
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}})),
    )
    .await?;
    Ok(vif)
}

/// The test namespace's NetworkPolicies and KuryrNetworkPolicies.
pub fn policy_apis(h: &Harness) -> (Api<NetworkPolicy>, Api<KuryrNetworkPolicy>) {
    (
        Api::namespaced(h.kube.clone(), &h.ns),
        Api::namespaced(h.kube.clone(), &h.ns),
    )
}

/// Creates NetworkPolicy `name` with `spec`.
pub async fn create_policy(
    nps: &Api<NetworkPolicy>,
    name: &str,
    spec: serde_json::Value,
) -> anyhow::Result<()> {
    nps.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))?,
    )
    .await?;
    Ok(())
}

pub async fn relabel(h: &Harness, name: &str, app: &str) -> anyhow::Result<()> {
    h.pods
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": app}}})),
        )
        .await?;
    Ok(())
}

/// The port's groups once they equal `want` (any order).
pub async fn port_groups_become(h: &Harness, port: &str, want: &[String]) -> anyhow::Result<()> {
    let want: BTreeSet<String> = want.iter().cloned().collect();
    wait_until(
        &format!("port {port} has groups {want:?}"),
        WAIT,
        EVERY,
        || async {
            let p = h.os.neutron().get_port(port).await?;
            let have: BTreeSet<String> = p.security_groups.into_iter().collect();
            Ok((have == want).then_some(()))
        },
    )
    .await
}

/// The KNP once its status lists a group whose rules are the spec's rules
/// and `check` holds for it.
pub async fn knp_where(
    knps: &Api<KuryrNetworkPolicy>,
    name: &str,
    what: &str,
    check: impl Fn(&KuryrNetworkPolicy) -> bool,
) -> anyhow::Result<KuryrNetworkPolicy> {
    wait_until(what, WAIT, EVERY, || async {
        let Some(k) = knps.get_opt(name).await? else {
            return Ok(None);
        };
        let Some(st) = &k.status else { return Ok(None) };
        if st.security_group_id.is_none() {
            return Ok(None);
        }
        let spec = spec_keys(&k);
        let status: BTreeSet<_> = st.security_group_rules.iter().map(rule_key).collect();
        let in_sync = spec == status && st.security_group_rules.len() == spec.len();
        Ok((in_sync && check(&k)).then_some(k))
    })
    .await
}

/// The rules of a KNP's spec, as keys.
pub fn spec_keys(k: &KuryrNetworkPolicy) -> BTreeSet<kuryr_policy::RuleKey> {
    k.spec
        .ingress_sg_rules
        .iter()
        .chain(&k.spec.egress_sg_rules)
        .map(|r| rule_key(&r.sg_rule))
        .collect()
}

/// The rules security group `sg` holds in Neutron, as keys (duplicates
/// kept, so a duplicated rule shows).
pub async fn group_keys(
    n: &kuryr_openstack::Neutron,
    sg: &str,
) -> anyhow::Result<Vec<kuryr_policy::RuleKey>> {
    Ok(n.get_security_group(sg)
        .await?
        .security_group_rules
        .iter()
        .map(|r| rule_key(&kuryr_controller::policy::from_neutron(r)))
        .collect())
}
