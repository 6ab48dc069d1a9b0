//! Fixtures the unit tests of several modules share.

use kuryr_crds::{KuryrPort, KuryrPortSpec, KuryrPortStatus, Vif, VifKind, VifNetwork, VifSubnet};

/// KuryrPort `name` for pod UID `uid` on `node-1`; with `active`, a status
/// holding a default OVS VIF whose port has the addresses `ips` (one
/// subnet, none when `ips` is empty).
pub fn kuryr_port(name: &str, uid: &str, active: Option<bool>, ips: &[&str]) -> KuryrPort {
    let mut k = KuryrPort::new(
        name,
        KuryrPortSpec {
            pod_uid: uid.into(),
            pod_node_name: "node-1".into(),
            pod_static: false,
        },
    );
    if let Some(active) = active {
        let subnets = if ips.is_empty() {
            vec![]
        } else {
            vec![VifSubnet {
                cidr: "10.0.0.0/24".into(),
                gateway: None,
                dns: vec![],
                ips: ips.iter().map(|ip| (*ip).to_owned()).collect(),
                routes: vec![],
            }]
        };
        let vif = Vif {
            id: "p".into(),
            address: "fa:16:3e:00:00:01".into(),
            network: VifNetwork {
                id: "n".into(),
                label: "l".into(),
                bridge: None,
                mtu: None,
                subnets,
            },
            plugin: "ovs".into(),
            active,
            preserve_on_delete: false,
            has_traffic_filtering: true,
            vif_name: "tapp".into(),
            kind: VifKind::OpenVSwitch {
                bridge_name: "br-int".into(),
            },
        };
        k.status = Some(KuryrPortStatus::default_only(vif));
    }
    k
}
