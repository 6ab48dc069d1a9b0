//! The typed security-group rule produced by the translation.

use std::fmt;

use crate::knp::{DESCRIPTION, SgRule};
use crate::{Cidr, PeerIds, PeerSet, PolicyError};

/// Traffic direction as seen from the port the group is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Traffic into the pod.
    Ingress,
    /// Traffic out of the pod.
    Egress,
}

impl Direction {
    /// Neutron spelling: `ingress` / `egress`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// IP family of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EtherType {
    /// IPv4.
    IPv4,
    /// IPv6.
    IPv6,
}

impl EtherType {
    /// Neutron spelling: `IPv4` / `IPv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            EtherType::IPv4 => "IPv4",
            EtherType::IPv6 => "IPv6",
        }
    }

    /// The family of `cidr`.
    pub fn of(cidr: &Cidr) -> Self {
        if cidr.is_ipv6() {
            EtherType::IPv6
        } else {
            EtherType::IPv4
        }
    }
}

/// A NetworkPolicy protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the Kubernetes default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses a Kubernetes protocol name, case-insensitively.
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            _ => Err(PolicyError::InvalidProtocol(s.to_owned())),
        }
    }

    /// Neutron spelling: `tcp` / `udp` / `sctp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// An inclusive port range, `min <= max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port.
    pub min: u16,
    /// Last port (inclusive).
    pub max: u16,
}

impl PortRange {
    /// A single port.
    pub fn single(port: u16) -> Self {
        Self {
            min: port,
            max: port,
        }
    }
}

/// One allow rule of a security group.
///
/// Invariants kept by the translation: `ports` is only set with a
/// `protocol`; `remote` has the family of `ethertype` and is never a `/0`;
/// at most one of `remote` and `peers` is set (neither = anywhere).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// Direction.
    pub direction: Direction,
    /// IP family.
    pub ethertype: EtherType,
    /// Protocol; `None` = any protocol.
    pub protocol: Option<Protocol>,
    /// Port range; `None` = all ports.
    pub ports: Option<PortRange>,
    /// Remote prefix.
    pub remote: Option<Cidr>,
    /// Remote pods: the members of a peer set's group.
    pub peers: Option<PeerSet>,
}

impl Rule {
    /// Everything in `direction` for `ethertype`.
    pub fn allow_all(direction: Direction, ethertype: EtherType) -> Self {
        Self {
            direction,
            ethertype,
            protocol: None,
            ports: None,
            remote: None,
            peers: None,
        }
    }

    /// Whether every packet `other` allows is also allowed by `self`.
    pub fn covers(&self, other: &Rule) -> bool {
        let remote = match (&self.remote, &self.peers) {
            (None, None) => true,
            (Some(a), _) => other.remote.as_ref().is_some_and(|b| a.contains(b)),
            (None, Some(set)) => other.peers.as_ref() == Some(set),
        };
        let l4 = match self.protocol {
            None => true,
            Some(p) => {
                other.protocol == Some(p)
                    && match (self.ports, other.ports) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        (Some(a), Some(b)) => a.min <= b.min && b.max <= a.max,
                    }
            }
        };
        self.direction == other.direction && self.ethertype == other.ethertype && remote && l4
    }

    /// The Neutron/kuryr form, with kuryr-kubernetes' description; a peer
    /// set is named by its group's ID in `ids` (`None` when it has none yet:
    /// such a rule cannot be written, and leaving it out denies).
    pub fn to_sg_rule(&self, ids: &PeerIds) -> Option<SgRule> {
        let remote_group_id = match &self.peers {
            Some(set) => Some(ids.get(set)?.clone()),
            None => None,
        };
        Some(SgRule {
            description: Some(DESCRIPTION.to_owned()),
            direction: self.direction.as_str().to_owned(),
            ethertype: self.ethertype.as_str().to_owned(),
            port_range_min: self.ports.map(|p| p.min),
            port_range_max: self.ports.map(|p| p.max),
            protocol: self.protocol.map(|p| p.as_str().to_owned()),
            remote_ip_prefix: self.remote.map(|c| c.to_string()),
            remote_group_id,
            ..SgRule::default()
        })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ",
            self.direction.as_str(),
            self.ethertype.as_str()
        )?;
        match self.protocol {
            Some(p) => write!(f, "{}", p.as_str())?,
            None => write!(f, "any")?,
        }
        if let Some(r) = self.ports {
            write!(f, " {}-{}", r.min, r.max)?;
        }
        match (&self.remote, &self.peers) {
            (Some(c), _) => write!(f, " {c}"),
            (None, Some(set)) => write!(f, " peers[{}]", set.key()),
            (None, None) => write!(f, " anywhere"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(protocol: Option<Protocol>, ports: Option<(u16, u16)>, remote: Option<&str>) -> Rule {
        Rule {
            direction: Direction::Ingress,
            ethertype: EtherType::IPv4,
            protocol,
            ports: ports.map(|(min, max)| PortRange { min, max }),
            remote: remote.map(|r| r.parse().unwrap()),
            peers: None,
        }
    }

    #[test]
    fn covers_remote_protocol_and_ports() {
        let all = Rule::allow_all(Direction::Ingress, EtherType::IPv4);
        let tcp80 = rule(Some(Protocol::Tcp), Some((80, 80)), Some("10.0.0.1/32"));
        assert!(all.covers(&tcp80));
        assert!(!tcp80.covers(&all));
        assert!(rule(Some(Protocol::Tcp), Some((1, 100)), Some("10.0.0.0/8")).covers(&tcp80));
        assert!(!rule(Some(Protocol::Udp), None, None).covers(&tcp80));
        assert!(!rule(Some(Protocol::Tcp), Some((81, 90)), None).covers(&tcp80));
        assert!(!rule(None, None, Some("10.0.0.2/32")).covers(&tcp80));
        let v6 = Rule::allow_all(Direction::Ingress, EtherType::IPv6);
        assert!(!v6.covers(&tcp80));
        assert!(!Rule::allow_all(Direction::Egress, EtherType::IPv4).covers(&tcp80));
    }

    #[test]
    fn peer_set_rules() {
        let set = |ns: &str| crate::PeerSpec::new(ns, None, None).set().unwrap();
        let mut web = rule(Some(Protocol::Tcp), Some((80, 80)), None);
        web.peers = Some(set("a"));
        let mut all_a = rule(None, None, None);
        all_a.peers = Some(set("a"));
        let mut all_b = all_a.clone();
        all_b.peers = Some(set("b"));
        // anywhere covers a set; a set covers only itself; a prefix no set
        assert!(Rule::allow_all(Direction::Ingress, EtherType::IPv4).covers(&web));
        assert!(all_a.covers(&web));
        assert!(!all_b.covers(&web));
        assert!(!web.covers(&all_a));
        assert!(!rule(None, None, Some("10.0.0.0/8")).covers(&web));
        assert!(!all_a.covers(&rule(None, None, Some("10.0.0.1/32"))));
        // written with the group's ID, or not at all
        assert_eq!(web.to_sg_rule(&PeerIds::new()), None);
        let ids = PeerIds::from([(set("a"), "g1".to_owned())]);
        let r = web.to_sg_rule(&ids).unwrap();
        assert_eq!(
            (
                r.remote_group_id.as_deref(),
                r.remote_ip_prefix,
                r.port_range_min
            ),
            (Some("g1"), None, Some(80))
        );
        assert_eq!(
            web.to_string(),
            "ingress IPv4 tcp 80-80 peers[namespace a; pods (all)]"
        );
    }

    #[test]
    fn sg_rule_form() {
        let r = rule(
            Some(Protocol::Sctp),
            Some((5000, 5010)),
            Some("10.0.0.0/24"),
        )
        .to_sg_rule(&PeerIds::new())
        .unwrap();
        assert_eq!(r.protocol.as_deref(), Some("sctp"));
        assert_eq!(
            (r.port_range_min, r.port_range_max),
            (Some(5000), Some(5010))
        );
        assert_eq!(r.remote_ip_prefix.as_deref(), Some("10.0.0.0/24"));
        assert_eq!(r.ethertype, "IPv4");
        assert_eq!(r.direction, "ingress");
        let any = Rule::allow_all(Direction::Egress, EtherType::IPv6)
            .to_sg_rule(&PeerIds::new())
            .unwrap();
        assert_eq!(
            (any.protocol, any.port_range_min, any.remote_ip_prefix),
            (None, None, None)
        );
        assert_eq!(Protocol::parse("udp"), Ok(Protocol::Udp));
        assert!(Protocol::parse("ICMP").is_err());
    }
}
