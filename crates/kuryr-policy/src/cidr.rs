//! IPv4/IPv6 prefixes on `std::net`: parsing, containment, set difference.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::PolicyError;

/// An IPv4 or IPv6 network prefix with its host bits cleared.
///
/// Ordering is IPv4 before IPv6, then by network address, then by prefix
/// length (so a block sorts right before the blocks it contains).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    v6: bool,
    bits: u128,
    prefix: u8,
}

impl Cidr {
    /// The prefix `addr/prefix`; host bits of `addr` are cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, PolicyError> {
        let (v6, bits) = match addr {
            IpAddr::V4(a) => (false, u128::from(u32::from(a))),
            IpAddr::V6(a) => (true, u128::from(a)),
        };
        let width = if v6 { 128 } else { 32 };
        if prefix > width {
            return Err(PolicyError::InvalidCidr(format!("{addr}/{prefix}")));
        }
        Ok(Self {
            v6,
            bits: bits & mask(width, prefix),
            prefix,
        })
    }

    /// The single-address prefix (`/32` or `/128`) of `addr`.
    pub fn host(addr: IpAddr) -> Self {
        let prefix = if addr.is_ipv6() { 128 } else { 32 };
        Self::new(addr, prefix).expect("host prefix is always valid")
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.bits))
        } else {
            // Only the low 32 bits are ever set for IPv4.
            IpAddr::V4(Ipv4Addr::from(self.bits as u32))
        }
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether this is an IPv6 prefix.
    pub fn is_ipv6(&self) -> bool {
        self.v6
    }

    /// 32 for IPv4, 128 for IPv6.
    pub fn max_prefix(&self) -> u8 {
        if self.v6 { 128 } else { 32 }
    }

    /// Whether `other` lies entirely inside `self` (same family).
    pub fn contains(&self, other: &Cidr) -> bool {
        self.v6 == other.v6
            && self.prefix <= other.prefix
            && other.bits & mask(self.max_prefix(), self.prefix) == self.bits
    }

    /// Whether `addr` lies inside `self`.
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        self.contains(&Cidr::host(addr))
    }

    /// The enclosing prefix of length `prefix` (`prefix <= self.prefix()`).
    pub fn truncate(&self, prefix: u8) -> Cidr {
        let prefix = prefix.min(self.prefix);
        Cidr {
            v6: self.v6,
            bits: self.bits & mask(self.max_prefix(), prefix),
            prefix,
        }
    }

    /// The two halves of this block; `None` for a single address.
    fn halves(&self) -> Option<(Cidr, Cidr)> {
        if self.prefix == self.max_prefix() {
            return None;
        }
        let prefix = self.prefix + 1;
        let high_bit = 1u128 << (self.max_prefix() - prefix);
        let low = Cidr { prefix, ..*self };
        let high = Cidr {
            bits: self.bits | high_bit,
            prefix,
            ..*self
        };
        Some((low, high))
    }

    /// Whether `self` is the lower and `other` the upper half of one block.
    fn is_low_sibling_of(&self, other: &Cidr) -> bool {
        self.v6 == other.v6
            && self.prefix == other.prefix
            && self.prefix > 0
            && self.truncate(self.prefix - 1) == other.truncate(other.prefix - 1)
            && self.bits < other.bits
    }
}

/// Network mask with the top `prefix` of `width` bits set.
fn mask(width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let all = u128::MAX >> (128 - u32::from(width));
    let host = (1u128 << (width - prefix)).wrapping_sub(1);
    // width - prefix is at most 127 here, so the shift cannot overflow.
    all & !host
}

impl FromStr for Cidr {
    type Err = PolicyError;

    /// Parses `addr/prefix` or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PolicyError::InvalidCidr(s.to_owned());
        let text = s.trim();
        match text.split_once('/') {
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse().map_err(|_| err())?;
                let prefix: u8 = prefix.parse().map_err(|_| err())?;
                Cidr::new(addr, prefix).map_err(|_| err())
            }
            None => text.parse().map(Cidr::host).map_err(|_| err()),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix)
    }
}

/// The minimal list of prefixes covering exactly the union of `cidrs`,
/// sorted. Contained blocks are dropped and sibling halves merged.
pub fn aggregate(mut cidrs: Vec<Cidr>) -> Vec<Cidr> {
    cidrs.sort();
    cidrs.dedup();
    let mut disjoint: Vec<Cidr> = Vec::with_capacity(cidrs.len());
    for c in cidrs {
        // Sorted order puts a containing block right before what it contains.
        if disjoint.last().is_some_and(|last| last.contains(&c)) {
            continue;
        }
        disjoint.push(c);
    }
    let mut out: Vec<Cidr> = Vec::with_capacity(disjoint.len());
    for c in disjoint {
        out.push(c);
        while out.len() >= 2 && out[out.len() - 2].is_low_sibling_of(&out[out.len() - 1]) {
            let high = out.pop().expect("len >= 2");
            let low = out.pop().expect("len >= 2");
            debug_assert!(low.is_low_sibling_of(&high));
            out.push(low.truncate(low.prefix - 1));
        }
    }
    out
}

/// `base` minus every block in `excepts`, as a minimal sorted prefix list.
///
/// Excepts of the other family or outside `base` are ignored; an except
/// equal to (or containing) `base` leaves nothing.
pub fn exclude(base: Cidr, excepts: &[Cidr]) -> Vec<Cidr> {
    let mut parts = vec![base];
    for e in excepts {
        let mut next = Vec::with_capacity(parts.len() + usize::from(e.prefix));
        for block in parts {
            if e.contains(&block) {
                continue;
            }
            if !block.contains(e) {
                next.push(block);
                continue;
            }
            // Walk from `block` down to `e`, keeping the half that does not
            // hold `e` at every level.
            let mut cur = block;
            while let Some((low, high)) = cur.halves().filter(|_| cur.prefix < e.prefix) {
                if low.contains(e) {
                    next.push(high);
                    cur = low;
                } else {
                    next.push(low);
                    cur = high;
                }
            }
        }
        parts = next;
    }
    aggregate(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn strs(v: &[Cidr]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn parse_and_display_canonicalise() {
        assert_eq!(c("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(c("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(c("2001:DB8::1/32").to_string(), "2001:db8::/32");
        assert_eq!(c("::1").to_string(), "::1/128");
        assert_eq!(c("0.0.0.0/0").prefix(), 0);
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "x", "10.0.0.0/", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn containment_is_family_aware() {
        assert!(c("10.0.0.0/8").contains(&c("10.20.0.0/16")));
        assert!(!c("10.20.0.0/16").contains(&c("10.0.0.0/8")));
        assert!(c("0.0.0.0/0").contains(&c("192.168.1.1/32")));
        assert!(!c("0.0.0.0/0").contains(&c("::/0")));
        assert!(!c("::/0").contains(&c("10.0.0.0/8")));
        assert!(c("::/0").contains_addr("fe80::1".parse().unwrap()));
    }

    #[test]
    fn exclude_single_and_equal() {
        let out = exclude(c("10.0.0.0/24"), &[c("10.0.0.0/26")]);
        assert_eq!(strs(&out), ["10.0.0.64/26", "10.0.0.128/25"]);
        assert!(exclude(c("10.0.0.0/24"), &[c("10.0.0.0/24")]).is_empty());
        assert!(exclude(c("10.0.0.0/24"), &[c("10.0.0.0/16")]).is_empty());
        // Outside and other-family excepts are ignored.
        let out = exclude(c("10.0.0.0/24"), &[c("10.0.1.0/24"), c("::/0")]);
        assert_eq!(strs(&out), ["10.0.0.0/24"]);
    }

    #[test]
    fn exclude_overlapping_excepts_is_minimal() {
        let out = exclude(
            c("10.0.0.0/24"),
            &[c("10.0.0.0/26"), c("10.0.0.64/26"), c("10.0.0.32/27")],
        );
        assert_eq!(strs(&out), ["10.0.0.128/25"]);
        let out = exclude(c("0.0.0.0/0"), &[c("10.0.0.0/8"), c("10.1.0.0/16")]);
        assert_eq!(out.len(), 8);
        assert!(
            out.iter()
                .all(|b| !b.contains(&c("10.1.2.3")) && !b.contains(&c("10.200.0.0/16")))
        );
        let v6 = exclude(c("2001:db8::/64"), &[c("2001:db8::1/128")]);
        assert_eq!(v6.len(), 64);
    }

    #[test]
    fn aggregate_merges_siblings_recursively() {
        let out = aggregate(vec![
            c("10.0.0.3/32"),
            c("10.0.0.0/31"),
            c("10.0.0.2/32"),
            c("10.0.0.1/32"),
        ]);
        assert_eq!(strs(&out), ["10.0.0.0/30"]);
        let out = aggregate(vec![c("10.0.0.1/32"), c("10.0.0.2/32")]);
        assert_eq!(out.len(), 2, "not siblings");
    }

    /// Tiny deterministic xorshift generator (no external crates).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn addr_in(&mut self, block: &Cidr) -> IpAddr {
            let host_bits = u32::from(block.max_prefix() - block.prefix());
            let r = (u128::from(self.next()) << 64) | u128::from(self.next());
            let host = if host_bits == 0 {
                0
            } else {
                r & (u128::MAX >> (128 - host_bits))
            };
            let bits = block.bits | host;
            if block.v6 {
                IpAddr::V6(Ipv6Addr::from(bits))
            } else {
                IpAddr::V4(Ipv4Addr::from(bits as u32))
            }
        }
    }

    #[test]
    fn property_exclude_is_exact_and_minimal() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..400 {
            let v6 = round % 4 == 3;
            let width: u8 = if v6 { 128 } else { 32 };
            let base_prefix = rng.below(u64::from(width) - 4) as u8;
            let any = Cidr::new(
                if v6 {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                },
                0,
            )
            .unwrap();
            let base = Cidr::new(rng.addr_in(&any), base_prefix).unwrap();
            let mut excepts = Vec::new();
            for _ in 0..rng.below(6) {
                // Mostly inside the base, sometimes equal, sometimes anywhere.
                let anchor = if rng.below(5) == 0 { any } else { base };
                let p = (anchor.prefix() + rng.below(12) as u8).min(width);
                excepts.push(Cidr::new(rng.addr_in(&anchor), p).unwrap());
            }
            if rng.below(10) == 0 {
                excepts.push(base);
            }
            let out = exclude(base, &excepts);
            // Minimal: disjoint, sorted, no mergeable siblings.
            for w in out.windows(2) {
                assert!(w[0] < w[1] && !w[0].contains(&w[1]) && !w[0].is_low_sibling_of(&w[1]));
            }
            let mut samples: Vec<IpAddr> = (0..64).map(|_| rng.addr_in(&base)).collect();
            for e in &excepts {
                samples.push(rng.addr_in(e));
                samples.push(e.addr());
            }
            samples.push(base.addr());
            for a in samples {
                let want = base.contains_addr(a) && !excepts.iter().any(|e| e.contains_addr(a));
                let got = out.iter().any(|b| b.contains_addr(a));
                assert_eq!(
                    got, want,
                    "round {round}: {a} base {base} except {excepts:?} out {out:?}"
                );
            }
        }
    }
}
