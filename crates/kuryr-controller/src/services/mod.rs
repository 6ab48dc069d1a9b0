//! Services as Octavia load balancers: the pure parts ([`spec`]: Service
//! and EndpointSlices → KuryrLoadBalancer spec; [`plan`]: names,
//! listeners, members) and what the handlers share.

pub mod plan;
pub mod spec;

pub use spec::ServiceSettings;

use kuryr_openstack::types::neutron::Subnet;
use std::net::IpAddr;

/// Everything the service, endpoint-slice and load-balancer handlers need
/// from kuryr.conf.
#[derive(Debug, Clone)]
pub struct LbSettings {
    /// What goes into every KuryrLoadBalancer spec.
    pub service: ServiceSettings,
    /// Pools' algorithm (the `ovn` provider has only `SOURCE_IP_PORT`).
    pub lb_algorithm: String,
    /// Network of LoadBalancer Services' floating IPs.
    pub external_net: Option<String>,
    /// CIDR of the service subnet (the nodes route it to the pods' router).
    pub service_cidr: String,
}

/// The algorithm a provider takes: `ovn` balances by 5-tuple hash only.
pub fn algorithm_for(provider: Option<&str>, configured: &str) -> String {
    if provider == Some("ovn") {
        "SOURCE_IP_PORT".into()
    } else {
        configured.to_owned()
    }
}

/// Whether `ip` is inside `cidr` (`a.b.c.d/n` or IPv6).
pub fn ip_in_cidr(ip: &str, cidr: &str) -> bool {
    let (Ok(ip), Some((net, len))) = (ip.parse::<IpAddr>(), cidr.split_once('/')) else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<IpAddr>(), len.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if len <= 128 => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The subnet of `subnets` holding `ip`.
pub fn subnet_of<'a>(subnets: &'a [Subnet], ip: &str) -> Option<&'a Subnet> {
    subnets.iter().find(|s| ip_in_cidr(ip, &s.cidr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_hold_what_they_should() {
        assert!(ip_in_cidr("10.96.0.10", "10.96.0.0/15"));
        assert!(ip_in_cidr("10.97.255.1", "10.96.0.0/15"));
        assert!(!ip_in_cidr("10.98.0.1", "10.96.0.0/15"));
        assert!(ip_in_cidr("1.2.3.4", "0.0.0.0/0"));
        assert!(ip_in_cidr("fd00::5", "fd00::/64"));
        assert!(!ip_in_cidr("fd00::5", "10.0.0.0/8"));
        assert!(!ip_in_cidr("junk", "10.0.0.0/8"));
        assert_eq!(algorithm_for(Some("ovn"), "ROUND_ROBIN"), "SOURCE_IP_PORT");
        assert_eq!(algorithm_for(Some("amphora"), "ROUND_ROBIN"), "ROUND_ROBIN");
    }
}
