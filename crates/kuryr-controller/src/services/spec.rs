//! What a Service and its EndpointSlices ask of their KuryrLoadBalancer
//! (pure: objects in, spec out).

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kuryr_crds::KuryrLoadBalancerSpec;
use kuryr_crds::loadbalancer::{
    LbConditions, LbEndpoint, LbEndpointSlice, LbPort, LbSlicePort, LbTargetRef,
    TIMEOUT_CLIENT_ANNOTATION, TIMEOUT_MEMBER_ANNOTATION,
};

/// Where a Service's load balancer goes, from kuryr.conf.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceSettings {
    /// Project.
    pub project_id: String,
    /// `[neutron_defaults] service_subnet`: where VIPs (ClusterIPs) live.
    pub subnet_id: String,
    /// `[kubernetes] endpoints_driver_octavia_provider` (`None`: Octavia's default).
    pub provider: Option<String>,
    /// Groups the load balancer follows (`[octavia_defaults] enforce_sg_rules`).
    pub security_groups: Vec<String>,
    /// `[octavia_defaults] timeout_client_data` (0: Octavia's).
    pub timeout_client_data: u64,
    /// `[octavia_defaults] timeout_member_data` (0: Octavia's).
    pub timeout_member_data: u64,
}

/// Why a Service gets no load balancer (the Warning event's note).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// `clusterIP: None`.
    #[error(
        "headless Service (clusterIP None): DNS answers with the pods' addresses, no load balancer is needed"
    )]
    Headless,
    /// `type: ExternalName`.
    #[error("ExternalName Service: a DNS alias, nothing to load-balance")]
    ExternalName,
    /// `type: NodePort`.
    #[error(
        "NodePort Service: kuryr-rs serves ClusterIP and LoadBalancer Services through Octavia, node ports need kube-proxy"
    )]
    NodePort,
    /// Another type.
    #[error("Service type {0} is not supported (ClusterIP and LoadBalancer are)")]
    Type(String),
    /// No ClusterIP allocated yet.
    #[error("the Service has no ClusterIP yet")]
    NoClusterIp,
    /// An annotation is not a number.
    #[error("annotation {0} = {1:?} is not a number of milliseconds")]
    BadTimeout(&'static str, String),
}

fn timeout(svc: &Service, key: &'static str, default: u64) -> Result<Option<u64>, Skip> {
    let given = svc.metadata.annotations.as_ref().and_then(|a| a.get(key));
    match given {
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Skip::BadTimeout(key, v.clone())),
        None => Ok((default != 0).then_some(default)),
    }
}

/// The KuryrLoadBalancer spec of `svc` without endpoint slices (those come
/// from [`slices`]), or why it gets none.
pub fn klb_spec(svc: &Service, s: &ServiceSettings) -> Result<KuryrLoadBalancerSpec, Skip> {
    let spec = svc.spec.clone().unwrap_or_default();
    let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    match type_.as_str() {
        "ClusterIP" | "LoadBalancer" => {}
        "ExternalName" => return Err(Skip::ExternalName),
        "NodePort" => return Err(Skip::NodePort),
        t => return Err(Skip::Type(t.into())),
    }
    let ip = match spec.cluster_ip.as_deref() {
        Some("None") => return Err(Skip::Headless),
        None | Some("") => return Err(Skip::NoClusterIp),
        Some(ip) => ip.to_owned(),
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| LbPort {
            name: p.name.clone().filter(|n| !n.is_empty()),
            port: p.port,
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            target_port: match &p.target_port {
                Some(IntOrString::Int(n)) => n.to_string(),
                Some(IntOrString::String(n)) => n.clone(),
                None => p.port.to_string(),
            },
        })
        .collect();
    Ok(KuryrLoadBalancerSpec {
        ip: Some(ip),
        lb_ip: spec.load_balancer_ip.clone().filter(|i| !i.is_empty()),
        project_id: Some(s.project_id.clone()),
        subnet_id: Some(s.subnet_id.clone()),
        type_: Some(type_),
        provider: s.provider.clone(),
        security_groups_ids: s.security_groups.clone(),
        timeout_client_data: timeout(svc, TIMEOUT_CLIENT_ANNOTATION, s.timeout_client_data)?,
        timeout_member_data: timeout(svc, TIMEOUT_MEMBER_ANNOTATION, s.timeout_member_data)?,
        ports,
        endpoint_slices: Vec::new(),
    })
}

/// The spec's copy of a Service's EndpointSlices (sorted by slice name, so
/// the same slices always give the same spec).
pub fn slices(list: &[EndpointSlice]) -> Vec<LbEndpointSlice> {
    let mut sorted: Vec<&EndpointSlice> = list.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    sorted
        .into_iter()
        .map(|s| LbEndpointSlice {
            endpoints: s
                .endpoints
                .iter()
                .map(|e| LbEndpoint {
                    addresses: e.addresses.clone(),
                    conditions: e
                        .conditions
                        .as_ref()
                        .map(|c| LbConditions { ready: c.ready }),
                    hostname: e.hostname.clone(),
                    target_ref: e.target_ref.as_ref().map(|r| LbTargetRef {
                        kind: r.kind.clone(),
                        name: r.name.clone(),
                        namespace: r.namespace.clone(),
                        resource_version: r.resource_version.clone(),
                        uid: r.uid.clone(),
                    }),
                    topology: None,
                })
                .collect(),
            ports: s
                .ports
                .iter()
                .flatten()
                .map(|p| LbSlicePort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port: p.port,
                    protocol: p.protocol.clone(),
                })
                .collect(),
        })
        .collect()
}

/// Whether two specs differ in what the Service decides (everything but
/// the endpoint slices, which have their own handler).
pub fn service_part_differs(a: &KuryrLoadBalancerSpec, b: &KuryrLoadBalancerSpec) -> bool {
    let strip = |s: &KuryrLoadBalancerSpec| KuryrLoadBalancerSpec {
        endpoint_slices: Vec::new(),
        ..s.clone()
    };
    strip(a) != strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> ServiceSettings {
        ServiceSettings {
            project_id: "p".into(),
            subnet_id: "svc-sub".into(),
            provider: Some("ovn".into()),
            security_groups: vec![],
            timeout_client_data: 0,
            timeout_member_data: 50_000,
        }
    }

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn cluster_ip_services_become_specs_with_string_target_ports() {
        let s = svc(json!({"metadata": {"name": "web", "namespace": "ns",
            "annotations": {"openstack.org/kuryr-timeout-client-data": "70000"}},
            "spec": {"clusterIP": "10.96.0.20", "ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}]}}));
        let spec = klb_spec(&s, &settings()).unwrap();
        assert_eq!(spec.ip.as_deref(), Some("10.96.0.20"));
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.subnet_id.as_deref(), Some("svc-sub"));
        assert_eq!(spec.ports[0].protocol, "TCP");
        assert_eq!(spec.ports[0].target_port, "8080");
        assert_eq!(spec.ports[1].target_port, "dns");
        assert_eq!(spec.timeout_client_data, Some(70_000));
        assert_eq!(
            spec.timeout_member_data,
            Some(50_000),
            "the configured default"
        );
    }

    #[test]
    fn what_gets_no_load_balancer_says_why() {
        let s = |spec: serde_json::Value| svc(json!({"metadata": {"name": "x"}, "spec": spec}));
        assert_eq!(
            klb_spec(&s(json!({"clusterIP": "None"})), &settings()),
            Err(Skip::Headless)
        );
        assert_eq!(
            klb_spec(
                &s(json!({"type": "ExternalName", "externalName": "a.b"})),
                &settings()
            ),
            Err(Skip::ExternalName)
        );
        assert_eq!(
            klb_spec(
                &s(json!({"type": "NodePort", "clusterIP": "10.96.0.3"})),
                &settings()
            ),
            Err(Skip::NodePort)
        );
        assert_eq!(klb_spec(&s(json!({})), &settings()), Err(Skip::NoClusterIp));
        let bad = svc(json!({"metadata": {"name": "x", "annotations": {
            "openstack.org/kuryr-timeout-member-data": "soon"}}, "spec": {"clusterIP": "10.96.0.4"}}));
        assert!(matches!(
            klb_spec(&bad, &settings()),
            Err(Skip::BadTimeout(_, _))
        ));
        let lb = s(
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.5", "loadBalancerIP": "172.24.4.50"}),
        );
        assert_eq!(
            klb_spec(&lb, &settings()).unwrap().lb_ip.as_deref(),
            Some("172.24.4.50")
        );
    }

    #[test]
    fn slices_are_copied_in_name_order() {
        let sl = |name: &str, ip: &str| -> EndpointSlice {
            serde_json::from_value(json!({"metadata": {"name": name}, "addressType": "IPv4",
                "endpoints": [{"addresses": [ip], "conditions": {"ready": true},
                    "targetRef": {"kind": "Pod", "name": "p", "namespace": "ns", "uid": "u"}}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
            .unwrap()
        };
        let got = slices(&[sl("web-b", "10.0.0.2"), sl("web-a", "10.0.0.1")]);
        assert_eq!(got[0].endpoints[0].addresses, ["10.0.0.1"]);
        assert_eq!(got[1].ports[0].port, Some(8080));
        assert_eq!(
            got[0].endpoints[0].conditions,
            Some(LbConditions { ready: Some(true) })
        );
        let mut a = klb_spec(
            &svc(json!({"metadata": {"name": "x"}, "spec": {"clusterIP": "10.96.0.9"}})),
            &settings(),
        )
        .unwrap();
        let b = a.clone();
        a.endpoint_slices = got;
        assert!(!service_part_differs(&a, &b));
    }
}
