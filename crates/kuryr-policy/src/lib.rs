//! Kubernetes NetworkPolicy → Neutron security-group rules, without I/O.
//!
//! kuryr enforces a NetworkPolicy with one Neutron security group, put on
//! the ports of the pods the policy selects instead of their default
//! groups. Security groups are stateful allow-lists, so a policy becomes:
//!
//! * for each direction it isolates, the union of its rules: every peer
//!   (pods → one host prefix per pod IP, whole namespaces → the namespace
//!   subnets when known, `ipBlock` → the CIDR minus its `except` entries)
//!   crossed with every port (numeric, ranges, named ports);
//!   With [`Settings::peer_groups`], pods are named by the group of their
//!   peer set instead (see [`PeerSet`]), so rules do not grow with pods;
//! * for each direction it does not isolate, no rule: the caller opens it
//!   (a group of its own) for pods no selecting policy isolates it for.
//!
//! [`compute`] takes the policy and a [`World`] snapshot and returns
//! [`PolicyRules`], available as typed [`Rule`]s and in the kuryr-kubernetes
//! KuryrNetworkPolicy format ([`KnpRule`]). [`diff()`] with [`rule_key`]
//! turns wanted rules and the rules a group has into Neutron calls to make.

mod cidr;
mod compute;
mod diff;
mod error;
mod expand;
mod knp;
mod peer_set;
mod peers;
mod ports;
mod rule;
mod selector;
mod services;
mod world;

#[cfg(test)]
mod testutil;

pub use cidr::{Cidr, aggregate, exclude};
pub use compute::{PolicyRules, PolicyTypes, RuleEntry, compute, policy_types, selected_pods};
pub use diff::{RuleDiff, RuleKey, diff, rule_key};
pub use error::PolicyError;
pub use knp::{AffectedPod, DESCRIPTION, KnpRule, SgRule};
pub use peer_set::{PeerMatcher, PeerSet, PeerSpec};
pub use rule::{Direction, EtherType, PortRange, Protocol, Rule};
pub use selector::{Labels, Selector, pod_selector, policy_namespace, selects};
pub use services::{Service, ServicePort, Target};
pub use world::{ContainerPort, NAMESPACE_NAME_LABEL, Namespace, Pod, Settings, World};

/// The groups of the peer sets a caller has made: a rule naming a set is
/// written with its group's ID (see [`PeerSet`]).
pub type PeerIds = std::collections::BTreeMap<PeerSet, String>;

/// Longest name Neutron accepts for a security group.
const MAX_NAME: usize = 255;

/// The security-group name of a policy: `sg/<namespace>-<policy>`.
///
/// Overlong names are cut like kuryr-kubernetes' `get_resource_name` did
/// (the `<namespace>-<policy>` part shortened by twice the excess), so the
/// names match groups kuryr-kubernetes created.
pub fn sg_name(namespace: &str, policy_name: &str) -> String {
    const PREFIX: &str = "sg/";
    let name = format!("{namespace}-{policy_name}");
    let length = PREFIX.chars().count() + name.chars().count();
    if length <= MAX_NAME {
        return format!("{PREFIX}{name}");
    }
    // Python: name[:254 - (length - 254)]
    let keep = (2 * (MAX_NAME - 1)).saturating_sub(length);
    format!("{PREFIX}{}", name.chars().take(keep).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sg_name_format_and_truncation() {
        assert_eq!(sg_name("default", "deny-all"), "sg/default-deny-all");
        let long = "p".repeat(253);
        let name = sg_name("ns", &long);
        // length = 3 + 2 + 1 + 253 = 259 → keep 508 - 259 = 249 chars.
        assert_eq!(name.len(), 3 + 249);
        assert!(name.starts_with("sg/ns-ppp"));
        assert!(name.len() <= MAX_NAME);
        let edge = "q".repeat(MAX_NAME - 3 - 3);
        assert_eq!(sg_name("ns", &edge).len(), MAX_NAME);
    }
}
