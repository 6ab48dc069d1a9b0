//! The pure part of the pod handler: from a pod and its KuryrPort (as they
//! are now) to the one next step. No I/O here; every step is idempotent and
//! the handler runs again after each, so a crash between two steps is
//! picked up where it stopped.

use crate::drivers::DriverKind;
use crate::pool::FREE_PORT_NAME;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kuryr_crds::{KURYRPORT_FINALIZER, KuryrPort, POD_FINALIZER};
use kuryr_openstack::types::neutron::{FixedIp, PortCreate};
use std::time::Duration;

/// Tag on every Neutron resource of a cluster: `kuryr-cluster:<id>`.
pub fn cluster_tag(cluster_id: &str) -> String {
    format!("kuryr-cluster:{cluster_id}")
}

/// Tag naming the pod a port belongs to: `kuryr-pod:<uid>`.
pub fn pod_tag(pod_uid: &str) -> String {
    format!("kuryr-pod:{pod_uid}")
}

/// The tags of everything the cluster makes in Neutron: the configured
/// resource tags and the cluster's own.
pub fn cluster_tags(resource_tags: &[String], cluster_id: &str) -> Vec<String> {
    let mut t = resource_tags.to_vec();
    t.push(cluster_tag(cluster_id));
    t
}

/// The tags of pod `pod_uid`'s own port: the cluster's and the pod's.
pub fn pod_port_tags(cluster_tags: &[String], pod_uid: &str) -> Vec<String> {
    let mut t = cluster_tags.to_vec();
    t.push(pod_tag(pod_uid));
    t
}

/// Where and how pod ports are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSettings {
    /// Network of `subnet_id`.
    pub network_id: String,
    /// `[neutron_defaults] pod_subnet`.
    pub subnet_id: String,
    /// `[neutron_defaults] pod_security_groups` (empty: Neutron's default group).
    pub security_groups: Vec<String>,
    /// `[neutron_defaults] project`.
    pub project_id: Option<String>,
}

/// The create body of a port made by driver `kind` in `s`: pod `pod_uid`'s
/// own port, or a free pool port (`None`, named [`FREE_PORT_NAME`]), for the
/// pool or node `host` (a trunk, nested-vlan). `description` marks it as the
/// cluster's, so one a crash left untagged is found again; a pod's port is
/// named after the pod UID for the same reason. Side-by-side ports are bound
/// to `host`; nested ports are not bound, and a subport has no device id
/// (Neutron refuses a subport that has an owner: PortInUse).
pub fn port_body(
    kind: DriverKind,
    s: &PortSettings,
    description: &str,
    pod_uid: Option<&str>,
    host: &str,
) -> PortCreate {
    PortCreate {
        network_id: s.network_id.clone(),
        name: Some(match pod_uid {
            Some(uid) => format!("kuryr-{uid}"),
            None => FREE_PORT_NAME.into(),
        }),
        description: Some(description.to_owned()),
        project_id: s.project_id.clone(),
        fixed_ips: Some(vec![FixedIp {
            subnet_id: Some(s.subnet_id.clone()),
            ip_address: None,
        }]),
        device_id: pod_uid
            .filter(|_| kind != DriverKind::NestedVlan)
            .map(str::to_owned),
        device_owner: Some("compute:kuryr".into()),
        security_groups: (!s.security_groups.is_empty()).then(|| s.security_groups.clone()),
        binding_host_id: (kind == DriverKind::NeutronVif).then(|| host.to_owned()),
        ..Default::default()
    }
}

/// What the handler does next for a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not ours: host network, not scheduled yet, or nothing left to do.
    Nothing,
    /// Put the pod finalizer on the pod (before anything exists in Neutron).
    AddPodFinalizer,
    /// Create the KuryrPort (with its finalizer and node label).
    CreateKuryrPort,
    /// A KuryrPort of another pod of the same name (a StatefulSet pod made
    /// again): release its port and delete it first.
    ReleaseStale,
    /// Make (or find by tag) the Neutron port and store its VIF.
    CreatePort,
    /// The VIF is stored but not ACTIVE yet: check Neutron again.
    CheckActive,
    /// The KuryrPort holds a VIF kuryr-rs cannot read (a class it does not
    /// implement, or junk): nothing is touched for this pod, a Warning
    /// event says why.
    Unreadable,
    /// The pod is being deleted but some container still runs: its port
    /// stays; look again within this long.
    Draining(Duration),
    /// The pod is going away: release its port and KuryrPort.
    Release,
    /// Released: take the pod finalizer off.
    RemovePodFinalizer,
}

/// Whether an object (its metadata) holds finalizer `f`.
pub fn has_finalizer(meta: &ObjectMeta, f: &str) -> bool {
    meta.finalizers.iter().flatten().any(|x| x == f)
}

/// The pod needs a Neutron port: scheduled, not on the host network.
pub fn wants_port(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.node_name.as_deref().is_some_and(|n| !n.is_empty()) && !spec.host_network.unwrap_or(false)
}

/// How long after its deletion deadline (`deletionTimestamp`) a pod whose
/// containers are still reported running is taken as gone (its node down,
/// or no kubelet to report the end).
pub const TERMINATION_SLACK: Duration = Duration::from_secs(30);

/// The pod has finished: its phase is terminal.
pub fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// A pod being deleted keeps its port while it may still run: a
/// terminating pod still serves (graceful termination, connections
/// draining; a Service with `publishNotReadyAddresses` still sends it
/// traffic). `Some(left)`: some container is still reported running, look
/// again within `left`; `None`: nothing of it runs any more (the kubelet's
/// final delete with grace period 0, a terminal phase, no container
/// running, or its deadline plus [`TERMINATION_SLACK`] passed).
pub fn still_running(pod: &Pod, now: Timestamp) -> Option<Duration> {
    let deadline = pod.metadata.deletion_timestamp.as_ref()?.0;
    if pod.metadata.deletion_grace_period_seconds == Some(0) || is_finished(pod) {
        return None;
    }
    let status = pod.status.as_ref()?;
    let running = [
        &status.container_statuses,
        &status.init_container_statuses,
        &status.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
    .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
    if !running {
        return None;
    }
    let end = deadline.checked_add(TERMINATION_SLACK).unwrap_or(deadline);
    let left = now.duration_until(end);
    (left.is_positive()).then(|| left.unsigned_abs())
}

/// The next step for `pod`, whose KuryrPort (same namespace and name) is
/// `kp`, at `now`.
pub fn next_step(pod: &Pod, kp: Option<&KuryrPort>, now: Timestamp) -> Step {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let pod_final = has_finalizer(&pod.metadata, POD_FINALIZER);
    let kp_is_ours = kp.is_some_and(|k| k.spec.pod_uid == uid);
    if kp_is_ours && let Some(left) = still_running(pod, now) {
        return Step::Draining(left);
    }
    if pod.metadata.deletion_timestamp.is_some() || is_finished(pod) || !wants_port(pod) {
        // a pod that never needed a port has neither finalizer nor KuryrPort
        if kp.is_some() {
            return if kp_is_ours {
                Step::Release
            } else {
                Step::ReleaseStale
            };
        }
        return if pod_final {
            Step::RemovePodFinalizer
        } else {
            Step::Nothing
        };
    }
    if !pod_final {
        return Step::AddPodFinalizer;
    }
    match kp {
        None => Step::CreateKuryrPort,
        Some(_) if !kp_is_ours => Step::ReleaseStale,
        Some(k) => match &k.status {
            Some(st) if !st.unreadable.is_empty() => Step::Unreadable,
            Some(st) if !st.vifs.is_empty() => {
                if st.all_active() {
                    Step::Nothing
                } else {
                    Step::CheckActive
                }
            }
            _ => Step::CreatePort,
        },
    }
}

/// Whether a KuryrPort (its metadata) still holds its finalizer.
pub fn kp_has_finalizer(meta: &ObjectMeta) -> bool {
    has_finalizer(meta, KURYRPORT_FINALIZER)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Well after every deletion timestamp of these tests.
    fn late() -> Timestamp {
        "2026-11-22T13:00:00Z".parse().unwrap()
    }

    fn step(p: &Pod, k: Option<&KuryrPort>) -> Step {
        next_step(p, k, late())
    }
    use serde_json::json;

    fn pod(uid: &str, extra: serde_json::Value) -> Pod {
        let mut v = json!({"metadata": {"name": "web-0", "namespace": "ns", "uid": uid},
                           "spec": {"nodeName": "node-1", "containers": []}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn kp(uid: &str, active: Option<bool>) -> KuryrPort {
        crate::testing::kuryr_port("web-0", uid, active, &[])
    }

    const FIN: &str = r#"{"metadata": {"finalizers": ["kuryr.openstack.org/pod-finalizer"]}}"#;

    #[test]
    fn a_new_pod_goes_finalizer_kuryrport_port_active() {
        let fin: serde_json::Value = serde_json::from_str(FIN).unwrap();
        assert_eq!(step(&pod("u1", json!({})), None), Step::AddPodFinalizer);
        let p = pod("u1", fin);
        assert_eq!(step(&p, None), Step::CreateKuryrPort);
        assert_eq!(step(&p, Some(&kp("u1", None))), Step::CreatePort);
        assert_eq!(step(&p, Some(&kp("u1", Some(false)))), Step::CheckActive);
        assert_eq!(step(&p, Some(&kp("u1", Some(true)))), Step::Nothing);
    }

    #[test]
    fn host_network_and_unscheduled_pods_are_left_alone() {
        assert_eq!(
            step(&pod("u1", json!({"spec": {"hostNetwork": true}})), None),
            Step::Nothing
        );
        assert_eq!(
            step(&pod("u1", json!({"spec": {"nodeName": null}})), None),
            Step::Nothing
        );
    }

    #[test]
    fn deleted_pods_release_then_drop_the_finalizer() {
        let mut gone: serde_json::Value = serde_json::from_str(FIN).unwrap();
        merge(
            &mut gone,
            json!({"metadata": {"deletionTimestamp": "2026-11-22T12:00:00Z"}}),
        );
        let p = pod("u1", gone);
        assert_eq!(step(&p, Some(&kp("u1", Some(true)))), Step::Release);
        assert_eq!(step(&p, None), Step::RemovePodFinalizer);
        // deleted before the finalizer was ever added: nothing to do
        let p = pod(
            "u1",
            json!({"metadata": {"deletionTimestamp": "2026-11-22T12:00:00Z"}}),
        );
        assert_eq!(step(&p, None), Step::Nothing);
        // a finished pod gives its port back too
        let mut done: serde_json::Value = serde_json::from_str(FIN).unwrap();
        merge(&mut done, json!({"status": {"phase": "Succeeded"}}));
        assert_eq!(
            step(&pod("u1", done), Some(&kp("u1", Some(true)))),
            Step::Release
        );
    }

    #[test]
    fn a_kuryrport_with_an_unreadable_vif_is_left_alone_until_its_pod_goes() {
        let mut k: KuryrPort = serde_json::from_value(json!({
            "apiVersion": "openstack.org/v1", "kind": "KuryrPort",
            "metadata": {"name": "web-0", "namespace": "ns"},
            "spec": {"podUid": "u1", "podNodeName": "node-1"},
            "status": {"vifs": {"eth0": {"default": true, "vif": {
                "versioned_object.name": "VIFVHostUser",
                "versioned_object.namespace": "os_vif",
                "versioned_object.version": "1.1",
                "versioned_object.data": {"id": "p-vhu"}}}}}
        }))
        .expect("an unreadable VIF does not fail the object");
        let p = pod("u1", serde_json::from_str(FIN).unwrap());
        assert_eq!(step(&p, Some(&k)), Step::Unreadable);
        let mut gone: serde_json::Value = serde_json::from_str(FIN).unwrap();
        merge(
            &mut gone,
            json!({"metadata": {"deletionTimestamp": "2026-11-22T12:00:00Z"}}),
        );
        assert_eq!(step(&pod("u1", gone), Some(&k)), Step::Release);
        // another pod's: released as stale like any other
        let p2 = pod("u2", serde_json::from_str(FIN).unwrap());
        assert_eq!(step(&p2, Some(&k)), Step::ReleaseStale);
        k.status = None;
        assert_eq!(step(&p, Some(&k)), Step::CreatePort);
    }

    #[test]
    fn a_pod_made_again_under_the_same_name_is_a_new_pod() {
        let p = pod("u2", serde_json::from_str(FIN).unwrap());
        assert_eq!(step(&p, Some(&kp("u1", Some(true)))), Step::ReleaseStale);
    }

    #[test]
    fn ports_are_tagged_named_and_bound_by_pod_uid() {
        let s = PortSettings {
            network_id: "n".into(),
            subnet_id: "s".into(),
            security_groups: vec![],
            project_id: Some("p".into()),
        };
        let side = port_body(DriverKind::NeutronVif, &s, "mark", Some("u1"), "node-1");
        assert_eq!(side.name.as_deref(), Some("kuryr-u1"));
        assert_eq!(side.device_id.as_deref(), Some("u1"));
        assert_eq!(side.binding_host_id.as_deref(), Some("node-1"));
        assert_eq!(side.description.as_deref(), Some("mark"));
        assert_eq!(side.project_id.as_deref(), Some("p"));
        assert_eq!(
            side.security_groups, None,
            "no groups configured: Neutron's default"
        );
        let free = port_body(DriverKind::NeutronVif, &s, "mark", None, "node-1");
        assert_eq!(free.name.as_deref(), Some(FREE_PORT_NAME));
        assert_eq!(free.device_id, None);
        assert_eq!(free.binding_host_id.as_deref(), Some("node-1"));
        let sub = port_body(DriverKind::NestedVlan, &s, "mark", Some("u1"), "trunk-1");
        assert_eq!(sub.device_id, None, "a subport has no owner");
        assert_eq!(sub.binding_host_id, None, "nested ports are not bound");
        let mac = port_body(DriverKind::NestedMacvlan, &s, "mark", Some("u1"), "node-1");
        assert_eq!(mac.device_id.as_deref(), Some("u1"));
        assert_eq!(mac.binding_host_id, None);
        let grouped = PortSettings {
            security_groups: vec!["g1".into()],
            ..s
        };
        assert_eq!(
            port_body(DriverKind::NeutronVif, &grouped, "m", None, "h").security_groups,
            Some(vec!["g1".to_string()])
        );
        let cluster = cluster_tags(&["k8s".into()], "c1");
        assert_eq!(cluster, vec!["k8s", "kuryr-cluster:c1"]);
        assert_eq!(
            pod_port_tags(&cluster, "u1"),
            vec!["k8s", "kuryr-cluster:c1", "kuryr-pod:u1"]
        );
    }

    #[test]
    fn a_terminating_pod_keeps_its_port_while_a_container_runs() {
        let running = json!({"state": {"running": {}}, "name": "c", "image": "i",
            "imageID": "", "ready": false, "restartCount": 0});
        let stopped = json!({"state": {"terminated": {"exitCode": 0}}, "name": "c",
            "image": "i", "imageID": "", "ready": false, "restartCount": 0});
        let deleting = |extra: serde_json::Value| {
            let mut v: serde_json::Value = serde_json::from_str(FIN).unwrap();
            merge(
                &mut v,
                json!({"metadata": {"deletionTimestamp": "2026-11-22T12:00:30Z",
                    "deletionGracePeriodSeconds": 30}}),
            );
            merge(&mut v, extra);
            pod("u1", v)
        };
        let k = kp("u1", Some(true));
        let at = |t: &str| t.parse::<Timestamp>().unwrap();
        // still running, 30 s before its deadline: 60 s left (deadline + slack)
        let p = deleting(json!({"status": {"containerStatuses": [running.clone()]}}));
        assert_eq!(
            next_step(&p, Some(&k), at("2026-11-22T12:00:00Z")),
            Step::Draining(Duration::from_secs(60))
        );
        // its deadline and the slack passed: the node is taken as gone
        assert_eq!(
            next_step(&p, Some(&k), at("2026-11-22T12:01:00Z")),
            Step::Release
        );
        // every container stopped, or the kubelet's final delete: released
        let p = deleting(json!({"status": {"containerStatuses": [stopped]}}));
        assert_eq!(
            next_step(&p, Some(&k), at("2026-11-22T12:00:00Z")),
            Step::Release
        );
        let p = deleting(json!({"metadata": {"deletionGracePeriodSeconds": 0},
            "status": {"containerStatuses": [running.clone()]}}));
        assert_eq!(
            next_step(&p, Some(&k), at("2026-11-22T12:00:00Z")),
            Step::Release
        );
        // an init container running counts too; a pod never started does not
        let p = deleting(json!({"status": {"initContainerStatuses": [running]}}));
        assert!(matches!(
            next_step(&p, Some(&k), at("2026-11-22T12:00:00Z")),
            Step::Draining(_)
        ));
        let p = deleting(json!({}));
        assert_eq!(
            next_step(&p, Some(&k), at("2026-11-22T12:00:00Z")),
            Step::Release
        );
    }
}
