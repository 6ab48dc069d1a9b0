//! Rule identity and the existing-vs-wanted diff.

use std::collections::HashSet;

use crate::{Cidr, SgRule};

/// The identity of a security-group rule: what traffic it allows.
///
/// Two rules with equal keys allow the same traffic, so a diff never
/// deletes and re-adds "the same" rule written differently. Normalised:
/// case of direction/ethertype/protocol; protocol numbers 6/17/132/1/58 and
/// names; `any`/empty protocol = none; ports without a protocol ignored;
/// for TCP/UDP/SCTP/UDP-Lite/DCCP a single bound means that one port and
/// `1-65535` (or `0-65535`) means all ports; the remote prefix is parsed
/// (a bare address is a host prefix, host bits are cleared) and a `/0` of the
/// rule's own family means anywhere. `remote_group_id` is part of the
/// identity; `id`, `description` and `security_group_id` are not.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleKey {
    direction: String,
    ethertype: String,
    protocol: Option<String>,
    ports: (Option<u16>, Option<u16>),
    remote_ip_prefix: Option<String>,
    remote_group_id: Option<String>,
}

/// Protocols whose `port_range_*` are real port ranges.
const PORT_PROTOCOLS: [&str; 5] = ["tcp", "udp", "sctp", "udplite", "dccp"];

fn normalise_protocol(p: Option<&str>) -> Option<String> {
    let p = p?.trim().to_ascii_lowercase();
    let name = match p.as_str() {
        "" | "any" => return None,
        "6" => "tcp",
        "17" => "udp",
        "132" => "sctp",
        "1" => "icmp",
        "58" | "icmpv6" | "ipv6-icmp" => "ipv6-icmp",
        "136" => "udplite",
        "33" => "dccp",
        other => other,
    };
    Some(name.to_owned())
}

/// The identity of `rule`, see [`RuleKey`].
pub fn rule_key(rule: &SgRule) -> RuleKey {
    let protocol = normalise_protocol(rule.protocol.as_deref());
    let parsed: Option<Cidr> = rule
        .remote_ip_prefix
        .as_deref()
        .and_then(|r| r.parse().ok());
    let ethertype = match rule.ethertype.trim().to_ascii_lowercase().as_str() {
        "" => match parsed {
            Some(c) if c.is_ipv6() => "ipv6".to_owned(),
            _ => "ipv4".to_owned(),
        },
        other => other.to_owned(),
    };
    let ports = match protocol.as_deref() {
        None => (None, None),
        Some(p) if PORT_PROTOCOLS.contains(&p) => {
            match (rule.port_range_min, rule.port_range_max) {
                (Some(a), None) | (None, Some(a)) => (Some(a), Some(a)),
                (Some(a), Some(b)) if a <= 1 && b == u16::MAX => (None, None),
                other => other,
            }
        }
        Some(_) => (rule.port_range_min, rule.port_range_max),
    };
    let remote_ip_prefix = match (parsed, rule.remote_ip_prefix.as_deref()) {
        (Some(c), _) => {
            let own_family = c.is_ipv6() == (ethertype == "ipv6");
            (c.prefix() != 0 || !own_family).then(|| c.to_string())
        }
        (None, Some(raw)) if !raw.trim().is_empty() => Some(raw.trim().to_ascii_lowercase()),
        (None, _) => None,
    };
    RuleKey {
        direction: rule.direction.trim().to_ascii_lowercase(),
        ethertype,
        protocol,
        ports,
        remote_ip_prefix,
        remote_group_id: rule.remote_group_id.clone().filter(|g| !g.is_empty()),
    }
}

/// What to change to turn the existing rules of a group into the wanted ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleDiff {
    /// Wanted rules missing from the group, in `wanted` order, de-duplicated.
    pub to_add: Vec<SgRule>,
    /// IDs of existing rules that are not wanted (or duplicates of an
    /// already kept rule), in `existing` order.
    pub to_delete: Vec<String>,
}

impl RuleDiff {
    /// Whether nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.to_add.is_empty() && self.to_delete.is_empty()
    }
}

/// Compares `existing` rules (read from Neutron, carrying `id`) with
/// `wanted` ones by [`rule_key`].
///
/// An existing rule without an `id` still counts as present but can never
/// be deleted.
pub fn diff(existing: &[SgRule], wanted: &[SgRule]) -> RuleDiff {
    let wanted_keys: HashSet<RuleKey> = wanted.iter().map(rule_key).collect();
    let mut present: HashSet<RuleKey> = HashSet::new();
    let mut to_delete = Vec::new();
    for rule in existing {
        let key = rule_key(rule);
        let keep = wanted_keys.contains(&key) && present.insert(key);
        if !keep && let Some(id) = &rule.id {
            to_delete.push(id.clone());
        }
    }
    let mut to_add = Vec::new();
    for rule in wanted {
        if present.insert(rule_key(rule)) {
            to_add.push(rule.clone());
        }
    }
    RuleDiff { to_add, to_delete }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sg(
        dir: &str,
        eth: &str,
        proto: Option<&str>,
        ports: (Option<u16>, Option<u16>),
        remote: Option<&str>,
    ) -> SgRule {
        SgRule {
            direction: dir.into(),
            ethertype: eth.into(),
            protocol: proto.map(Into::into),
            port_range_min: ports.0,
            port_range_max: ports.1,
            remote_ip_prefix: remote.map(Into::into),
            ..Default::default()
        }
    }

    fn with_id(mut r: SgRule, id: &str) -> SgRule {
        r.id = Some(id.into());
        r
    }

    #[test]
    fn key_normalises_equivalent_spellings() {
        let base = sg(
            "ingress",
            "IPv4",
            Some("tcp"),
            (Some(80), Some(80)),
            Some("10.0.0.5/32"),
        );
        let same = [
            sg(
                "INGRESS",
                "ipv4",
                Some("TCP"),
                (Some(80), None),
                Some("10.0.0.5"),
            ),
            sg(
                "ingress",
                "IPv4",
                Some("6"),
                (Some(80), Some(80)),
                Some("10.0.0.5/32"),
            ),
        ];
        for s in &same {
            assert_eq!(rule_key(&base), rule_key(s), "{s:?}");
        }
        let any4 = sg("egress", "IPv4", None, (None, None), None);
        assert_eq!(
            rule_key(&any4),
            rule_key(&sg(
                "egress",
                "IPv4",
                Some("any"),
                (None, None),
                Some("0.0.0.0/0")
            ))
        );
        assert_ne!(
            rule_key(&any4),
            rule_key(&sg("egress", "IPv6", None, (None, None), Some("::/0")))
        );
        let all_tcp = sg("ingress", "IPv4", Some("tcp"), (None, None), None);
        assert_eq!(
            rule_key(&all_tcp),
            rule_key(&sg(
                "ingress",
                "IPv4",
                Some("tcp"),
                (Some(1), Some(65535)),
                None
            ))
        );
        assert_ne!(
            rule_key(&all_tcp),
            rule_key(&sg("ingress", "IPv4", Some("udp"), (None, None), None))
        );
        assert_ne!(
            rule_key(&base),
            rule_key(&sg(
                "ingress",
                "IPv4",
                Some("tcp"),
                (Some(80), Some(81)),
                Some("10.0.0.5/32")
            ))
        );
        let mut grp = any4.clone();
        grp.remote_group_id = Some("g".into());
        assert_ne!(rule_key(&any4), rule_key(&grp));
    }

    #[test]
    fn diff_adds_missing_and_deletes_unwanted_only() {
        let keep = sg(
            "ingress",
            "IPv4",
            Some("tcp"),
            (Some(80), Some(80)),
            Some("10.0.0.5/32"),
        );
        let old = sg("ingress", "IPv4", Some("tcp"), (Some(81), Some(81)), None);
        let new = sg("egress", "IPv6", None, (None, None), None);
        let existing = vec![
            with_id(
                sg(
                    "ingress",
                    "IPv4",
                    Some("TCP"),
                    (Some(80), None),
                    Some("10.0.0.5"),
                ),
                "a",
            ),
            with_id(old, "b"),
            // Neutron's default egress rule of a new group, unwanted here.
            with_id(sg("egress", "IPv4", None, (None, None), None), "c"),
        ];
        let d = diff(&existing, &[keep.clone(), new.clone(), new.clone()]);
        assert_eq!(d.to_add, vec![new]);
        assert_eq!(d.to_delete, vec!["b".to_owned(), "c".to_owned()]);
        let again = diff(&[with_id(keep.clone(), "a")], &[keep]);
        assert!(again.is_empty());
    }

    #[test]
    fn diff_deletes_duplicates_and_spares_rules_without_id() {
        let r = sg("ingress", "IPv6", None, (None, None), None);
        let d = diff(
            &[with_id(r.clone(), "x"), with_id(r.clone(), "y")],
            std::slice::from_ref(&r),
        );
        assert_eq!(d.to_delete, vec!["y".to_owned()]);
        assert!(d.to_add.is_empty());
        let d = diff(std::slice::from_ref(&r), &[]);
        assert!(d.is_empty(), "no id: nothing to delete");
        let d = diff(std::slice::from_ref(&r), std::slice::from_ref(&r));
        assert!(d.is_empty(), "no id but present");
    }
}
