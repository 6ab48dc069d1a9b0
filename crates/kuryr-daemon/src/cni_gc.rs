//! CNI GC (spec 1.1): which of the daemon's attachments a GC request says
//! are no longer valid. Only attachments of the network the request names
//! are considered, and a request whose list of valid attachments is
//! malformed is refused as a whole: nothing running is touched because a
//! caller sent something odd. An absent (or null) list is an empty one:
//! libcni, the reference runtime library, leaves the key out when no
//! attachment of the network is valid (`cnitool gc` with none), so that is
//! what the spec's runtimes send.

use crate::state::Attachment;
use serde_json::Value;

/// The attachments in `all` that the GC request with network configuration
/// `config` (its `name` and `cni.dev/valid-attachments`) declares stale, or
/// why the request is refused.
pub fn stale(all: &[Attachment], config: &Value) -> Result<Vec<Attachment>, String> {
    let network = match config.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.as_str(),
        other => {
            return Err(format!(
                "the network configuration's name must be a non-empty string, got {}",
                other.map_or("nothing".to_owned(), Value::to_string)
            ));
        }
    };
    let none = Vec::new();
    let list = match config.get("cni.dev/valid-attachments") {
        Some(Value::Array(l)) => l,
        None | Some(Value::Null) => &none,
        Some(other) => {
            return Err(format!(
                "cni.dev/valid-attachments must be a list of {{containerID, ifname}}, got {other}"
            ));
        }
    };
    let mut valid = Vec::with_capacity(list.len());
    for (i, a) in list.iter().enumerate() {
        match (
            a.get("containerID").and_then(Value::as_str),
            a.get("ifname").and_then(Value::as_str),
        ) {
            (Some(c), Some(n)) => valid.push((c, n)),
            _ => {
                return Err(format!(
                    "cni.dev/valid-attachments[{i}] must have string containerID and ifname, got {a}"
                ));
            }
        }
    }
    Ok(all
        .iter()
        .filter(|att| att.network == network)
        .filter(|att| {
            !valid
                .iter()
                .any(|(c, n)| *c == att.container_id && *n == att.ifname)
        })
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Driver, Phase};
    use serde_json::json;

    fn att(container: &str, network: &str) -> Attachment {
        Attachment {
            container_id: container.into(),
            ifname: "eth0".into(),
            netns: format!("/var/run/netns/{container}"),
            pod_namespace: "default".into(),
            pod_name: container.into(),
            pod_uid: format!("uid-{container}"),
            driver: Driver::Ovs,
            port_id: format!("port-{container}"),
            host_links: vec![],
            ovs_port: None,
            phase: Phase::Plugged,
            result: None,
            network: network.into(),
        }
    }

    fn ids(v: &[Attachment]) -> Vec<&str> {
        v.iter().map(|a| a.container_id.as_str()).collect()
    }

    #[test]
    fn only_the_named_networks_unlisted_attachments_are_stale() {
        let all = [
            att("a", "kuryr"),
            att("b", "kuryr"),
            att("c", "other"),
            att("d", ""),
        ];
        let req = json!({"name": "kuryr", "cni.dev/valid-attachments": [
            {"containerID": "a", "ifname": "eth0"}]});
        assert_eq!(ids(&stale(&all, &req).unwrap()), ["b"]);
        // a GC of another network leaves kuryr's pods alone
        let other = json!({"name": "other-network", "cni.dev/valid-attachments": []});
        assert!(stale(&all, &other).unwrap().is_empty());
        // the same container with another interface is not valid for eth0
        let wrong_if = json!({"name": "kuryr", "cni.dev/valid-attachments": [
            {"containerID": "a", "ifname": "net1"}, {"containerID": "b", "ifname": "eth0"}]});
        assert_eq!(ids(&stale(&all, &wrong_if).unwrap()), ["a"]);
        // libcni leaves the list out when none is valid: all of kuryr's go
        let absent = json!({"name": "kuryr"});
        assert_eq!(ids(&stale(&all, &absent).unwrap()), ["a", "b"]);
        let null = json!({"name": "kuryr", "cni.dev/valid-attachments": null});
        assert_eq!(ids(&stale(&all, &null).unwrap()), ["a", "b"]);
    }

    #[test]
    fn malformed_requests_are_refused_whole() {
        let all = [att("a", "kuryr")];
        for (req, says) in [
            (
                json!({"name": "kuryr", "cni.dev/valid-attachments": "notalist"}),
                "must be a list",
            ),
            (
                json!({"name": "kuryr", "cni.dev/valid-attachments": {"containerID": "a"}}),
                "must be a list",
            ),
            (
                json!({"name": "kuryr", "cni.dev/valid-attachments": [{"containerID": "a"}]}),
                "[0]",
            ),
            (
                json!({"name": "kuryr", "cni.dev/valid-attachments": [7]}),
                "[0]",
            ),
            (json!({"cni.dev/valid-attachments": []}), "name"),
            (json!({"name": "", "cni.dev/valid-attachments": []}), "name"),
        ] {
            let e = stale(&all, &req).unwrap_err();
            assert!(e.contains(says), "{req}: {e}");
        }
    }
}
