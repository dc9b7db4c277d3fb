//! Removal floors: the newest version below which this node's own copy of a key is no longer
//! wanted, so that a write that raced with a removal (or with a newer write announced by
//! another node) undoes its own copy when it finishes (ARCHITECTURE decision 91).
//!
//! A write stores its L1 and L3 copies, then checks the key's floor; a removal raises the
//! floor, then drops the copies. Whichever of the two steps comes second sees the other: a
//! check before the raise means the copies were in place before the drop, and a check after
//! it finds the floor above the write's version. Versions come from the node's hybrid clock,
//! so a write that began before the removal is below the floor and one that began after is
//! above it.
//!
//! A fixed table of slots, each the maximum floor of every key that hashes to it (a seeded
//! hash). Two keys sharing a slot only make the check stricter: a write below another key's
//! floor undoes its own copies, which costs a later miss, never a wrong answer. Floors never
//! need to expire: versions grow with time, so a floor stops matching once the writes that
//! began before it are done.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::version::Version;

/// Slots in the table (a power of two).
const SLOTS: usize = 4096;

/// The table of removal floors of one cache.
pub(crate) struct Floors {
    seed: u64,
    slots: Box<[AtomicU64]>,
}

impl Default for Floors {
    fn default() -> Self {
        Self {
            seed: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Floors {
    fn slot(&self, namespace: &str, key: &[u8]) -> &AtomicU64 {
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(self.seed);
        h.update(namespace.as_bytes());
        h.update(&[0xff]);
        h.update(key);
        &self.slots[(h.digest() as usize) & (SLOTS - 1)]
    }

    /// Raises the floor of `key` to at least `to`: copies older than it are unwanted.
    /// Call before dropping the copies.
    pub(crate) fn raise(&self, namespace: &str, key: &[u8], to: Version) {
        // SeqCst pairs with `admits`: a raise and a check of the same slot are ordered.
        self.slot(namespace, key)
            .fetch_max(to.as_u64(), Ordering::SeqCst);
    }

    /// Whether a copy of `key` at `version` is still wanted. Call after storing the copies.
    pub(crate) fn admits(&self, namespace: &str, key: &[u8], version: Version) -> bool {
        self.slot(namespace, key).load(Ordering::SeqCst) <= version.as_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u64) -> Version {
        Version::from_u64(n)
    }

    #[test]
    fn a_floor_refuses_older_copies_and_admits_newer_ones() {
        let f = Floors::default();
        assert!(f.admits("ns", b"k", v(1)), "no floor yet");
        f.raise("ns", b"k", v(10));
        assert!(!f.admits("ns", b"k", v(9)), "a copy below the floor");
        assert!(f.admits("ns", b"k", v(10)), "the floor's own version");
        assert!(f.admits("ns", b"k", v(11)), "a newer copy");
        f.raise("ns", b"k", v(5));
        assert!(
            !f.admits("ns", b"k", v(9)),
            "a lower raise never lowers the floor"
        );
    }

    #[test]
    fn other_keys_are_refused_only_where_they_share_a_slot() {
        let f = Floors::default();
        f.raise("ns", b"k", v(100));
        let refused = (0..10_000)
            .filter(|i| !f.admits("ns", format!("other{i}").as_bytes(), v(50)))
            .count();
        // One slot of 4,096: about 2 of 10,000 keys share it.
        assert!(refused < 20, "{refused} other keys refused");
    }
}
