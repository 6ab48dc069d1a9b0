//! VLAN ids of a trunk's subports: pure allocation, one allocator per
//! trunk. Ids already used by the trunk's subports (read from Neutron) are
//! marked used; new ones are handed out lowest first, never twice.

use std::collections::BTreeSet;

/// The lowest usable VLAN id.
pub const MIN_VLAN: u16 = 1;
/// The highest usable VLAN id (4095 is reserved).
pub const MAX_VLAN: u16 = 4094;

/// VLAN ids in use on one trunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VlanIds {
    used: BTreeSet<u16>,
}

impl VlanIds {
    /// An allocator with `used` already taken (the trunk's subports).
    pub fn with_used(used: impl IntoIterator<Item = u16>) -> Self {
        Self {
            used: used.into_iter().collect(),
        }
    }

    /// `n` free ids, lowest first, now taken; `None` (and nothing taken)
    /// when fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<u16>> {
        let free: Vec<u16> = (MIN_VLAN..=MAX_VLAN)
            .filter(|v| !self.used.contains(v))
            .take(n)
            .collect();
        if free.len() < n {
            return None;
        }
        self.used.extend(&free);
        Some(free)
    }

    /// Marks `id` used (seen on the trunk).
    pub fn mark_used(&mut self, id: u16) {
        self.used.insert(id);
    }

    /// Gives `id` back (its subport was removed, or adding it failed).
    pub fn release(&mut self, id: u16) {
        self.used.remove(&id);
    }

    /// Ids in use.
    pub fn used(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_lowest_first_and_never_twice() {
        let mut v = VlanIds::with_used([1, 3]);
        assert_eq!(v.allocate(3), Some(vec![2, 4, 5]));
        assert_eq!(v.allocate(1), Some(vec![6]));
        v.release(4);
        assert_eq!(v.allocate(2), Some(vec![4, 7]));
        assert_eq!(v.used(), 7);
    }

    #[test]
    fn a_full_trunk_allocates_nothing() {
        let mut v = VlanIds::with_used(MIN_VLAN..=MAX_VLAN - 2);
        assert_eq!(v.allocate(3), None, "only two left");
        assert_eq!(v.used(), usize::from(MAX_VLAN - 2), "nothing taken");
        assert_eq!(v.allocate(2), Some(vec![MAX_VLAN - 1, MAX_VLAN]));
        assert_eq!(v.allocate(1), None);
        v.mark_used(7);
        assert_eq!(v.used(), usize::from(MAX_VLAN));
    }
}
