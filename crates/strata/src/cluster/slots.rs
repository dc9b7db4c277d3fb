//! The slot map cluster-aware clients see (`CLUSTER SLOTS`, `CLUSTER SHARDS`, `MOVED`): the
//! ring's runs of slots ([`Ring::slot_ranges`]) with every owner's addresses, built once per
//! view and shared until the ring or a member's identity changes.

use std::sync::Arc;

use strata_cluster::ring::{self, SLOTS};
use strata_cluster::{NodeIdentity, Ring};

use super::Shared;

/// Which member is primary (and which are replicas) of every hash slot, in this node's
/// current view.
#[derive(Debug)]
pub struct SlotMap {
    /// The live members, sorted by name.
    pub members: Vec<NodeIdentity>,
    /// Runs of consecutive slots with the same owners: (first, last inclusive, owners as
    /// indices into `members`, primary first).
    pub ranges: Vec<(u16, u16, Vec<usize>)>,
    /// Each slot's primary, an index into `members` (`u16::MAX`: none).
    primary: Box<[u16]>,
    /// This node's index in `members`.
    me: Option<usize>,
    /// The version of the ring the map was built from.
    pub ring_version: u64,
    /// Whether the view holds a majority of `cluster.expected_size` (a minority serves no
    /// slot to cluster-aware clients: `CLUSTERDOWN`, `cluster_state:fail`).
    pub quorum: bool,
}

impl SlotMap {
    /// The map of `ring` with `members`' addresses, seen from the member named `me`.
    pub(crate) fn build(
        ring: &Ring,
        replication_factor: usize,
        expected_size: usize,
        members: Vec<NodeIdentity>,
        me: &str,
    ) -> Self {
        let index = |name: &str| members.iter().position(|m| m.name == name);
        let mut ranges = Vec::new();
        let mut primary = vec![u16::MAX; usize::from(SLOTS)].into_boxed_slice();
        for run in ring.slot_ranges(replication_factor) {
            let owners: Vec<usize> = run.owners.iter().filter_map(|n| index(n)).collect();
            if let Some(&p) = owners.first() {
                for slot in run.first..=run.last {
                    primary[usize::from(slot)] = p as u16;
                }
            }
            ranges.push((run.first, run.last, owners));
        }
        SlotMap {
            me: index(me),
            quorum: strata_cluster::primary::has_quorum(members.len(), expected_size),
            members,
            ranges,
            primary,
            ring_version: ring.version(),
        }
    }

    /// The primary of `slot` (`None` while the view has no members).
    pub fn primary(&self, slot: u16) -> Option<&NodeIdentity> {
        self.members
            .get(usize::from(*self.primary.get(usize::from(slot))?))
    }

    /// Whether this node is the primary of `slot`.
    pub fn is_mine(&self, slot: u16) -> bool {
        self.me
            .is_some_and(|me| self.primary.get(usize::from(slot)) == Some(&(me as u16)))
    }

    /// Whether this node owns `slot` (as its primary or one of its replicas).
    pub fn owns(&self, slot: u16) -> bool {
        let Some(me) = self.me else {
            return false;
        };
        let i = self
            .ranges
            .partition_point(|(_, last, _)| *last < slot)
            .min(self.ranges.len().saturating_sub(1));
        self.ranges
            .get(i)
            .is_some_and(|(_, _, owners)| owners.contains(&me))
    }

    /// This node's identity, when it is in its own view.
    pub fn me(&self) -> Option<&NodeIdentity> {
        self.me.and_then(|i| self.members.get(i))
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(key: &[u8]) -> u16 {
        ring::key_slot(key)
    }
}

/// Reads this node's [`SlotMap`] ([`crate::Node::slots`]).
#[derive(Clone)]
pub struct SlotSource(pub(crate) Arc<Shared>);

impl SlotSource {
    /// The slot map of the node's current view (built on the first call after a change).
    pub fn map(&self) -> Arc<SlotMap> {
        self.0.slot_map()
    }
}

impl std::fmt::Debug for SlotSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotSource").finish_non_exhaustive()
    }
}

impl Shared {
    /// The slot map of the current view, cached until the view changes. It is built
    /// outside the view's lock (16384 slots), and kept only if the view did not change
    /// meanwhile.
    pub(crate) fn slot_map(&self) -> Arc<SlotMap> {
        let (ring, members) = {
            let v = self.view.read();
            if let Some(map) = v.slots.clone() {
                return map;
            }
            (
                v.ring.clone(),
                v.members.values().cloned().collect::<Vec<_>>(),
            )
        };
        let map = Arc::new(SlotMap::build(
            &ring,
            self.cfg.replication_factor as usize,
            self.cfg.expected_size as usize,
            members,
            &self.name,
        ));
        let mut v = self.view.write();
        if let Some(cached) = v.slots.clone() {
            return cached;
        }
        if Arc::ptr_eq(&v.ring, &ring) && v.members.values().eq(map.members.iter()) {
            v.slots = Some(map.clone());
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn id(name: &str, port: u16) -> NodeIdentity {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        NodeIdentity {
            name: name.into(),
            gossip: addr,
            rpc: addr,
            resp: addr,
            admin: addr,
            cluster_resp: Some(addr),
            generation: 1,
        }
    }

    #[test]
    fn every_slot_has_the_rings_primary_and_owners() {
        let members = vec![id("a", 1), id("b", 2), id("c", 3)];
        let ring = Ring::new(["a", "b", "c"], 64);
        let map = SlotMap::build(&ring, 2, 3, members, "b");
        assert!(map.quorum);
        assert_eq!(map.me().map(|m| m.name.as_str()), Some("b"));
        let mut mine = 0;
        for slot in 0..SLOTS {
            let owners = ring.slot_owners(slot, 2);
            assert_eq!(map.primary(slot).map(|m| m.name.as_str()), Some(owners[0]));
            assert_eq!(map.is_mine(slot), owners[0] == "b");
            assert_eq!(map.owns(slot), owners.contains(&"b"), "slot {slot}");
            mine += usize::from(map.is_mine(slot));
        }
        assert!(mine > 2000 && mine < 9000, "b is primary of {mine} slots");
        let covered: usize = map
            .ranges
            .iter()
            .map(|(f, l, _)| usize::from(l - f) + 1)
            .sum();
        assert_eq!(covered, usize::from(SLOTS));
        // Not in its own view (it left): primary of nothing.
        let outside = SlotMap::build(&ring, 2, 3, vec![id("a", 1), id("b", 2), id("c", 3)], "z");
        assert!((0..SLOTS).all(|s| !outside.is_mine(s) && !outside.owns(s)));
        // Alone of an expected three: no majority.
        let alone = SlotMap::build(&Ring::new(["a"], 64), 2, 3, vec![id("a", 1)], "a");
        assert!(!alone.quorum);
        assert!((0..SLOTS).all(|s| alone.is_mine(s)));
    }
}
