//! Version floors: what L3 last wrote of a key, remembered in memory so that an
//! invalidation of a copy L3 just replaced costs no RocksDB read.
//!
//! On a cluster member, every write this node makes is followed a few milliseconds later by
//! the key's primary's invalidation "drop copies older than v" — of the very version this
//! node's own L3 has just stored. Answering it means a read of the key's record (a memtable
//! skip-list search; the largest single cost of applying an invalidation). A floor answers
//! it from memory instead.
//!
//! The invariant: while a database is open, a slot holding `(tag, v)` means the record of
//! the key whose hash is `tag` is either absent or at least version `v`. It holds because
//! the group-commit writer is the only writer of records once the database is published;
//! it never stores a version older than a record it replaces, and when it stores one older
//! than the floor of a key whose record was removed meanwhile, it lowers the floor before
//! RocksDB takes the write ([`Floors::lower`]); it records a write's floor only after
//! RocksDB took it, under the key's lock. Removals and the compaction filter only take
//! records away (absent satisfies the invariant), and every open starts from empty slots
//! (a close empties them too, and the table is not consulted while closed). A slot is
//! shared by every key that maps to it: the last write wins and the others' floors are
//! forgotten (they fall back to the read). Tags are 64-bit hashes under a seed drawn at
//! start, so nobody can choose keys that collide.

use parking_lot::Mutex;
use strata_core::Version;

/// Slots in the table (a power of two): 4,096 × 24 bytes.
const SLOTS: usize = 4096;

/// The table of version floors (see the module docs).
pub(crate) struct Floors {
    seed: u64,
    slots: Box<[Mutex<(u64, u64)>]>,
}

impl Floors {
    /// Empty slots under a seed drawn from the OS's randomness (through std's hasher keys).
    pub(crate) fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        Self::with_seed(h.finish())
    }

    fn with_seed(seed: u64) -> Self {
        Self {
            seed,
            slots: (0..SLOTS).map(|_| Mutex::new((0, 0))).collect(),
        }
    }

    fn slot(&self, dkey: &[u8]) -> (u64, &Mutex<(u64, u64)>) {
        let tag = xxhash_rust::xxh3::xxh3_64_with_seed(dkey, self.seed);
        (tag, &self.slots[tag as usize & (SLOTS - 1)])
    }

    /// RocksDB has just stored version `v` of `dkey` (call with the key's lock held).
    pub(crate) fn note(&self, dkey: &[u8], v: Version) {
        let (tag, slot) = self.slot(dkey);
        *slot.lock() = (tag, v.as_u64());
    }

    /// The writer is about to store version `v` of `dkey` (with the key's lock held): a
    /// floor above it is forgotten first, so that it never claims more than the record
    /// holds while the write lands.
    pub(crate) fn lower(&self, dkey: &[u8], v: Version) {
        let (tag, slot) = self.slot(dkey);
        let mut s = slot.lock();
        if s.0 == tag && s.1 > v.as_u64() {
            *s = (0, 0);
        }
    }

    /// A version the record of `dkey` is at least, if it exists: `None` when the slot
    /// remembers another key (or none).
    pub(crate) fn floor(&self, dkey: &[u8]) -> Option<Version> {
        let (tag, slot) = self.slot(dkey);
        let (t, v) = *slot.lock();
        (t == tag && v != 0).then(|| Version::from_u64(v))
    }

    /// Forgets every floor (a database is about to be published: its records were not
    /// written by this table's writer).
    pub(crate) fn clear(&self) {
        for s in self.slots.iter() {
            *s.lock() = (0, 0);
        }
    }
}

impl std::fmt::Debug for Floors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Floors").field("slots", &SLOTS).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_is_the_last_version_noted_for_its_key_and_no_other() {
        let f = Floors::with_seed(7);
        assert_eq!(f.floor(b"a"), None);
        f.note(b"a", Version::from_u64(10));
        assert_eq!(f.floor(b"a"), Some(Version::from_u64(10)));
        f.note(b"a", Version::from_u64(12));
        assert_eq!(f.floor(b"a"), Some(Version::from_u64(12)));
        // Another key never reads a's floor, whichever slot it maps to.
        for i in 0..20_000u32 {
            let k = format!("other:{i}");
            assert_eq!(f.floor(k.as_bytes()), None, "{k}");
        }
        // A write below the floor (after a removal) forgets it; one above leaves it.
        f.lower(b"a", Version::from_u64(13));
        assert_eq!(f.floor(b"a"), Some(Version::from_u64(12)));
        f.lower(b"a", Version::from_u64(3));
        assert_eq!(f.floor(b"a"), None);
        f.note(b"a", Version::from_u64(3));
        assert_eq!(f.floor(b"a"), Some(Version::from_u64(3)));
        f.clear();
        assert_eq!(f.floor(b"a"), None);
    }

    #[test]
    fn keys_sharing_a_slot_forget_each_other() {
        let f = Floors::with_seed(1);
        let (ta, _) = f.slot(b"a");
        let other = (0..1_000_000u32)
            .map(|i| format!("k{i}"))
            .find(|k| {
                let (t, _) = f.slot(k.as_bytes());
                t != ta && (t as usize & (SLOTS - 1)) == (ta as usize & (SLOTS - 1))
            })
            .expect("a key in the same slot");
        f.note(b"a", Version::from_u64(5));
        f.note(other.as_bytes(), Version::from_u64(9));
        assert_eq!(f.floor(b"a"), None, "evicted by the other key's write");
        assert_eq!(f.floor(other.as_bytes()), Some(Version::from_u64(9)));
    }
}
