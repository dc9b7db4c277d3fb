//! The consistent-hash ring: a pure function of the membership view.
//!
//! Each node contributes `vnodes` points, `xxh3_64(node name ‖ vnode index)`. A key belongs
//! to one of Redis Cluster's 16384 hash slots ([`key_slot`]: CRC16 of the key or of its
//! `{tag}`), and slot `s` sits at `s << 50` on the ring ([`slot_hash`]), so consecutive slots
//! are neighbours and the ring cuts the slots into a few hundred runs with one owner list
//! each ([`Ring::slot_ranges`]). A key's owners are the first `replication_factor`
//! *distinct* nodes met walking clockwise from its slot's point. The namespace does not
//! place a key: a cluster-aware Redis client computes a key's slot from the key alone. Nodes are identified by their
//! stable name, never by their generation, so a restarted node owns what it owned before.
//! Every node that has the same view computes the same owners, and the ring's `version` (a
//! hash of the sorted names and the parameters) lets two nodes compare views cheaply.

use xxhash_rust::xxh3::xxh3_64;

/// Virtual nodes per member by default: with 128 points per node the most loaded of 10 nodes
/// holds about 1.15× the mean share of keys (tested), and a ring of 1000 members is
/// 128,000 points (1 MiB).
pub const DEFAULT_VNODES: u16 = 128;

/// Copies of each key by default: 2, so that one node's failure loses no key that was
/// written while both owners were up, at twice the memory of one copy. (Redis Cluster and
/// groupcache keep one; Hazelcast keeps one backup, i.e. two copies.)
pub const DEFAULT_REPLICATION_FACTOR: usize = 2;

/// A ring over a set of node names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// (point, index into `nodes`), sorted by point.
    points: Vec<(u64, u32)>,
    nodes: Vec<String>,
    vnodes: u16,
    version: u64,
}

/// The part of `key` that places it, as Redis Cluster's hash tags have it: when the key
/// holds a `{`, then a `}` after it with at least one byte between them, only those bytes
/// (the first such pair); else the whole key. Keys with the same tag (`{user:1}:cart`,
/// `{user:1}:views`) share owners and a primary, so multi-key commands may name them
/// together.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// Names how keys are placed (hash slots at `slot << 50`), hashed into every ring version.
const PLACEMENT_SCHEME: &[u8] = b"slots-v1";

/// How many hash slots there are, as in Redis Cluster.
pub const SLOTS: u16 = 16384;

/// Bits a slot number is shifted by to give its point on the ring ([`slot_hash`]).
const SLOT_SHIFT: u32 = 64 - 14;

/// CRC16-CCITT (XModem: polynomial 0x1021, initial value 0), the checksum Redis Cluster
/// computes a key's slot with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of `key` (0..16384), as Redis Cluster computes it: CRC16 of its
/// [`hash_tag`], modulo 16384. `CLUSTER KEYSLOT` answers it.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOTS - 1)
}

/// The point of `slot` on the ring: `slot << 50`, so the slots divide the hash space into
/// 16384 equal arcs in order.
pub fn slot_hash(slot: u16) -> u64 {
    u64::from(slot & (SLOTS - 1)) << SLOT_SHIFT
}

/// The hash of a key's position on the ring: its slot's point.
pub fn key_hash(key: &[u8]) -> u64 {
    slot_hash(key_slot(key))
}

/// A run of consecutive slots with the same owners ([`Ring::slot_ranges`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange<'a> {
    /// The first slot of the run.
    pub first: u16,
    /// The last slot of the run (inclusive).
    pub last: u16,
    /// The owners of every slot in the run, primary first.
    pub owners: Vec<&'a str>,
}

impl Ring {
    /// The ring of `names` (duplicates count once) with `vnodes` points each.
    pub fn new<I, S>(names: I, vnodes: u16) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut nodes: Vec<String> = names.into_iter().map(Into::into).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let vnodes = vnodes.max(1);
        let mut points = Vec::with_capacity(nodes.len() * vnodes as usize);
        let mut version_input = Vec::new();
        // The placement scheme is part of the view: members that place keys differently
        // (before hash slots) never agree on a ring version.
        version_input.extend_from_slice(PLACEMENT_SCHEME);
        version_input.extend_from_slice(&vnodes.to_le_bytes());
        for (i, name) in nodes.iter().enumerate() {
            version_input.extend_from_slice(&(name.len() as u32).to_le_bytes());
            version_input.extend_from_slice(name.as_bytes());
            let mut buf = Vec::with_capacity(name.len() + 2);
            for v in 0..vnodes {
                buf.clear();
                buf.extend_from_slice(name.as_bytes());
                buf.extend_from_slice(&v.to_le_bytes());
                points.push((xxh3_64(&buf), i as u32));
            }
        }
        // Ties (astronomically rare) are broken by node index, so the order is total.
        points.sort_unstable();
        Ring {
            points,
            nodes,
            vnodes,
            version: xxh3_64(&version_input),
        }
    }

    /// Identifies the view: equal for equal member sets and parameters.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The member names, sorted.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Each member's share of the hash space as the keys' primary (first owner): the arcs
    /// its points end, over the whole ring; the shares sum to 1 (empty ring: none).
    pub fn shares(&self) -> Vec<(&str, f64)> {
        let mut share = vec![0f64; self.nodes.len()];
        for (i, (p, idx)) in self.points.iter().enumerate() {
            let prev = if i == 0 {
                self.points[self.points.len() - 1].0
            } else {
                self.points[i - 1].0
            };
            // The arc (prev, p]; the first point's wraps round through 0. One point alone
            // owns the whole ring.
            let arc = if self.points.len() == 1 {
                u64::MAX as f64 + 1.0
            } else {
                p.wrapping_sub(prev) as f64
            };
            share[*idx as usize] += arc / (u64::MAX as f64 + 1.0);
        }
        self.nodes.iter().map(String::as_str).zip(share).collect()
    }

    /// Whether the ring has no members.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The first `n` distinct nodes clockwise from `hash` (fewer when the ring is smaller).
    pub fn owners_of_hash(&self, hash: u64, n: usize) -> Vec<&str> {
        let n = n.min(self.nodes.len());
        let mut out: Vec<&str> = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let start = self.points.partition_point(|(p, _)| *p < hash);
        for i in 0..self.points.len() {
            let (_, idx) = self.points[(start + i) % self.points.len()];
            let name = self.nodes[idx as usize].as_str();
            if !out.contains(&name) {
                out.push(name);
                if out.len() == n {
                    break;
                }
            }
        }
        out
    }

    /// The owners of `key`: the first `replication_factor` distinct nodes from its slot.
    pub fn owners(&self, key: &[u8], replication_factor: usize) -> Vec<&str> {
        self.owners_of_hash(key_hash(key), replication_factor)
    }

    /// The owners of `slot`, primary first.
    pub fn slot_owners(&self, slot: u16, replication_factor: usize) -> Vec<&str> {
        self.owners_of_hash(slot_hash(slot), replication_factor)
    }

    /// Every slot, in order, as runs with the same owners (what `CLUSTER SLOTS` lists); none
    /// for an empty ring.
    pub fn slot_ranges(&self, replication_factor: usize) -> Vec<SlotRange<'_>> {
        let mut out: Vec<SlotRange<'_>> = Vec::new();
        if self.is_empty() {
            return out;
        }
        for slot in 0..SLOTS {
            let owners = self.slot_owners(slot, replication_factor);
            match out.last_mut() {
                Some(run) if run.owners == owners => run.last = slot,
                _ => out.push(SlotRange {
                    first: slot,
                    last: slot,
                    owners,
                }),
            }
        }
        out
    }

    /// Virtual nodes per member.
    pub fn vnodes(&self) -> u16 {
        self.vnodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn shares_cover_the_ring_and_follow_the_primaries() {
        let ring = Ring::new(["a", "b", "c"], 64);
        let shares = ring.shares();
        let total: f64 = shares.iter().map(|(_, s)| s).sum();
        assert!((total - 1.0).abs() < 1e-9, "{shares:?}");
        // Sampled: each node is the primary of about its share of hashes.
        let mut counts = std::collections::HashMap::new();
        for i in 0..30_000u64 {
            let h = xxh3_64(&i.to_le_bytes());
            *counts.entry(ring.owners_of_hash(h, 1)[0]).or_insert(0u32) += 1;
        }
        for (name, share) in &shares {
            let seen = f64::from(counts[name]) / 30_000.0;
            assert!((seen - share).abs() < 0.02, "{name}: {seen} vs {share}");
        }
        assert_eq!(Ring::new(["solo"], 1).shares(), vec![("solo", 1.0)]);
    }

    #[test]
    fn hash_tags_place_keys_together_as_redis_cluster_does() {
        assert_eq!(hash_tag(b"{user:1}:cart"), b"user:1");
        assert_eq!(hash_tag(b"a{b}c{d}"), b"b");
        assert_eq!(hash_tag(b"{}x"), b"{}x");
        assert_eq!(hash_tag(b"x{y"), b"x{y");
        assert_eq!(hash_tag(b"{{y}}"), b"{y");
        let ring = Ring::new(names(5), DEFAULT_VNODES);
        for i in 0..100 {
            let a = format!("{{tag{i}}}:a");
            let b = format!("x{{tag{i}}}:b");
            assert_eq!(ring.owners(a.as_bytes(), 2), ring.owners(b.as_bytes(), 2));
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn owners_are_distinct_deterministic_and_independent_of_order() {
        let a = Ring::new(names(5), DEFAULT_VNODES);
        let mut shuffled = names(5);
        shuffled.reverse();
        let b = Ring::new(shuffled, DEFAULT_VNODES);
        assert_eq!(a, b);
        assert_eq!(a.version(), b.version());
        for i in 0..1000 {
            let key = format!("k{i}");
            let o = a.owners(key.as_bytes(), 3);
            assert_eq!(o.len(), 3);
            assert!(o[0] != o[1] && o[1] != o[2] && o[0] != o[2]);
            assert_eq!(o, b.owners(key.as_bytes(), 3));
        }
        assert_eq!(a.owners(b"k", 9).len(), 5, "capped at the member count");
        assert!(
            Ring::new(Vec::<String>::new(), 8)
                .owners(b"k", 2)
                .is_empty()
        );
        assert_ne!(a.version(), Ring::new(names(4), DEFAULT_VNODES).version());
    }

    #[test]
    fn load_is_balanced() {
        let ring = Ring::new(names(10), DEFAULT_VNODES);
        let mut count: HashMap<&str, usize> = HashMap::new();
        let keys = 100_000;
        for i in 0..keys {
            *count
                .entry(ring.owners(format!("key:{i}").as_bytes(), 1)[0])
                .or_default() += 1;
        }
        let max = *count.values().max().unwrap() as f64;
        let mean = keys as f64 / 10.0;
        assert!(
            max / mean < 1.25,
            "most loaded node holds {:.2}× the mean",
            max / mean
        );
    }

    #[test]
    fn adding_a_node_moves_about_one_share_of_keys_and_only_to_it() {
        let before = Ring::new(names(4), DEFAULT_VNODES);
        let after = Ring::new(names(5), DEFAULT_VNODES);
        let keys = 50_000;
        let mut moved = 0;
        for i in 0..keys {
            let k = format!("key:{i}");
            let (a, b) = (
                before.owners(k.as_bytes(), 1)[0],
                after.owners(k.as_bytes(), 1)[0],
            );
            if a != b {
                moved += 1;
                assert_eq!(b, "node-4", "a key moved between old nodes");
            }
        }
        let share = moved as f64 / keys as f64;
        assert!(
            (0.12..0.28).contains(&share),
            "moved {share:.3} of the keys (ideal 0.2)"
        );
    }

    #[test]
    fn slots_are_redis_clusters() {
        // CRC16/XModem's check value, and slots Redis's documentation shows.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b"foo{hash_tag}"), 2515);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(slot_hash(0), 0);
        assert_eq!(slot_hash(SLOTS - 1), (u64::from(SLOTS) - 1) << 50);
        let ring = Ring::new(names(3), DEFAULT_VNODES);
        assert_eq!(ring.owners(b"foo", 2), ring.slot_owners(12182, 2));
    }

    #[test]
    fn slot_ranges_cover_every_slot_once_with_its_owners() {
        let ring = Ring::new(names(3), DEFAULT_VNODES);
        let ranges = ring.slot_ranges(2);
        assert_eq!(ranges[0].first, 0);
        assert_eq!(ranges.last().unwrap().last, SLOTS - 1);
        for w in ranges.windows(2) {
            assert_eq!(w[0].last + 1, w[1].first, "runs are contiguous");
            assert_ne!(w[0].owners, w[1].owners, "neighbouring runs are merged");
        }
        // A few hundred runs for 3 × 128 points, not one per slot.
        assert!(
            ranges.len() > 50 && ranges.len() <= 3 * 128,
            "{}",
            ranges.len()
        );
        for r in &ranges {
            for slot in [r.first, r.last, r.first + (r.last - r.first) / 2] {
                assert_eq!(ring.slot_owners(slot, 2), r.owners);
            }
        }
        assert!(Ring::new(Vec::<String>::new(), 8).slot_ranges(2).is_empty());
        let solo_ring = Ring::new(["solo"], 8);
        let solo = solo_ring.slot_ranges(2);
        assert_eq!(solo.len(), 1);
        assert_eq!((solo[0].first, solo[0].last), (0, SLOTS - 1));
    }
}
