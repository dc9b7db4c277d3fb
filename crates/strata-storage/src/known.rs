//! What the group-commit writer knows of the keys it wrote recently: whether L3 holds a
//! record of each, and at which version — so that writing such a key again skips the read of
//! its stored record.
//!
//! Before each write the writer needs the stored record's version (a newer one wins: writes
//! of one key can reach the writer out of version order) and whether one exists at all (for
//! the key counts `DBSIZE` reads). That read was half of the writer's time under SET `-P 16`
//! over a working set L3 already holds (docs/benchmarks.md). For a key this table remembers,
//! the answer is the table's.
//!
//! The invariant: while a database is open, a slot holding `(tag, epoch, state)` with the
//! table's current epoch means the key whose hash is `tag` has exactly the record `state`
//! says (none, or one at that version) — except that the compaction filter may have dropped
//! it since (expired or evicted). That exception is harmless: such a drop is not counted
//! either (the count stays high by one, and a rewrite the table calls an overwrite leaves it
//! so), and refusing a write older than a version L3 held is what newest-wins means. It holds
//! because, once a database is published, the writer is the only writer of records and
//! notes what it stored only after RocksDB took it, under the key's lock; a removal under the
//! key's lock notes the absence it made; and every change that does not go through a key's
//! lock (a bulk deletion, a reconcile, a corrupt record's deletion by a reader, a recount,
//! an open or close, a failed write) empties the table by moving to a new epoch. The writer
//! records what it learned only if the epoch did not move since it looked, so nothing learned
//! before an emptying survives it; and while such a change runs (between its RocksDB write and
//! the end of its bookkeeping) the table answers nothing. Tags are 64-bit xxh3 hashes under
//! a seed drawn at start (not a keyed MAC: a collision someone forced would cost no more
//! than L3 misses and a key count off by one for the keys involved); a slot pair is shared by the keys that map to it and
//! the last written wins (the others fall back to the read).

use parking_lot::Mutex;
use strata_core::Version;

/// A key's record as the table knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    /// No record.
    Absent,
    /// A record at this version.
    Stored(Version),
}

/// One slot: `[tag, epoch | PRESENT when a record exists, version]`; epoch 0: never
/// written. Plain words, so that the table is allocated zeroed and its pages are touched
/// only as slots are written.
type Slot = [u64; 3];

const PRESENT: u64 = 1 << 63;

struct Inner {
    /// The current epoch (from 1): slots of another epoch are empty.
    epoch: u32,
    /// Changes going around the keys' locks now (`bypass`): while any runs, lookups know
    /// nothing.
    bypassing: u32,
    /// Two slots per bucket.
    slots: Vec<Slot>,
}

fn slot_epoch(s: &Slot) -> u32 {
    (s[1] & !PRESENT) as u32
}

/// The table (see the module docs).
pub(crate) struct KnownKeys {
    seed: u64,
    buckets: usize,
    inner: Mutex<Inner>,
}

/// What a lookup saw: the epoch, to hand back to [`KnownKeys::record`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen(u32);

impl KnownKeys {
    /// A table of `buckets` (rounded up to a power of two) pairs of slots, 48 bytes a pair,
    /// under a seed drawn from the OS's randomness. The memory is taken zeroed (plain words)
    /// and touched only as slots are written.
    pub(crate) fn new(buckets: usize) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x6b6e_6f77);
        Self::with_seed(buckets, h.finish())
    }

    fn with_seed(buckets: usize, seed: u64) -> Self {
        let buckets = buckets.max(1).next_power_of_two();
        Self {
            seed,
            buckets,
            inner: Mutex::new(Inner {
                epoch: 1,
                bypassing: 0,
                slots: vec![[0u64; 3]; 2 * buckets],
            }),
        }
    }

    /// The tag of a disk key.
    pub(crate) fn tag(&self, dkey: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(dkey, self.seed)
    }

    fn pair(&self, tag: u64) -> usize {
        2 * (tag as usize & (self.buckets - 1))
    }

    /// What the table knows of each tag (`None`: nothing), and the epoch seen.
    pub(crate) fn lookup(&self, tags: impl Iterator<Item = u64>) -> (Seen, Vec<Option<Known>>) {
        let g = self.inner.lock();
        let found = tags
            .map(|tag| {
                if g.bypassing > 0 {
                    return None;
                }
                let i = self.pair(tag);
                g.slots[i..i + 2]
                    .iter()
                    .find(|s| slot_epoch(s) == g.epoch && s[0] == tag)
                    .map(|s| match s[1] & PRESENT {
                        0 => Known::Absent,
                        _ => Known::Stored(Version::from_u64(s[2])),
                    })
            })
            .collect();
        (Seen(g.epoch), found)
    }

    /// Records what each tag's record now is, if the table was not emptied since `seen`.
    pub(crate) fn record(&self, seen: Seen, facts: impl Iterator<Item = (u64, Known)>) {
        let mut g = self.inner.lock();
        if g.epoch != seen.0 {
            return;
        }
        for (tag, known) in facts {
            Self::put(&mut g, self.pair(tag), tag, known);
        }
    }

    /// Records one key's record now (call with the key's lock held, after the change).
    pub(crate) fn note(&self, tag: u64, known: Known) {
        let mut g = self.inner.lock();
        Self::put(&mut g, self.pair(tag), tag, known);
    }

    fn put(g: &mut Inner, i: usize, tag: u64, known: Known) {
        let epoch = g.epoch;
        let (present, version) = match known {
            Known::Absent => (0, 0),
            Known::Stored(v) => (PRESENT, v.as_u64()),
        };
        // The key's own slot, else an empty one, else the one the tag's top bit picks.
        let pair = &mut g.slots[i..i + 2];
        let j = pair
            .iter()
            .position(|s| slot_epoch(s) == epoch && s[0] == tag)
            .or_else(|| pair.iter().position(|s| slot_epoch(s) != epoch))
            .unwrap_or((tag >> 63) as usize);
        pair[j] = [tag, u64::from(epoch) | present, version];
    }

    /// Forgets everything (a change went around the keys' locks).
    pub(crate) fn clear(&self) {
        Self::next_epoch(&mut self.inner.lock());
    }

    fn next_epoch(g: &mut Inner) {
        g.epoch = g.epoch.wrapping_add(1) & !(1 << 31);
        if g.epoch == 0 {
            // Slots of the epoch the counter came back to would look current.
            g.slots.iter_mut().for_each(|s| *s = [0; 3]);
            g.epoch = 1;
        }
    }

    /// A change that goes around the keys' locks (a bulk deletion, a reader deleting a
    /// record) begins: lookups know nothing until the returned guard drops, and what was
    /// learned before is forgotten at both ends — so no write decides from a fact the change
    /// made stale between its RocksDB write and the end.
    pub(crate) fn bypass(&self) -> Bypass<'_> {
        let mut g = self.inner.lock();
        g.bypassing += 1;
        Self::next_epoch(&mut g);
        Bypass(self)
    }
}

/// A change around the keys' locks in progress ([`KnownKeys::bypass`]).
pub(crate) struct Bypass<'a>(&'a KnownKeys);

impl Drop for Bypass<'_> {
    fn drop(&mut self) {
        let mut g = self.0.inner.lock();
        g.bypassing -= 1;
        KnownKeys::next_epoch(&mut g);
    }
}

impl std::fmt::Debug for KnownKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownKeys")
            .field("buckets", &self.buckets)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u64) -> Version {
        Version::from_u64(n)
    }

    /// What the table knows of one tag.
    fn one(t: &KnownKeys, tag: u64) -> Option<Known> {
        t.lookup([tag].into_iter()).1[0]
    }

    #[test]
    fn a_key_reads_back_what_was_recorded_for_it_and_no_other() {
        let t = KnownKeys::with_seed(64, 7);
        let a = t.tag(b"a");
        let (seen, got) = t.lookup([a].into_iter());
        assert_eq!(got, vec![None]);
        t.record(seen, [(a, Known::Stored(v(10)))].into_iter());
        assert_eq!(one(&t, a), Some(Known::Stored(v(10))));
        t.note(a, Known::Absent);
        assert_eq!(one(&t, a), Some(Known::Absent));
        for i in 0..20_000u32 {
            let k = format!("other:{i}");
            assert_eq!(one(&t, t.tag(k.as_bytes())), None, "{k}");
        }
    }

    #[test]
    fn nothing_learned_before_a_clear_is_recorded_after_it() {
        let t = KnownKeys::with_seed(64, 1);
        let a = t.tag(b"a");
        t.note(a, Known::Stored(v(3)));
        let (seen, _) = t.lookup([a].into_iter());
        t.clear();
        assert_eq!(one(&t, a), None, "cleared");
        t.record(seen, [(a, Known::Stored(v(4)))].into_iter());
        assert_eq!(one(&t, a), None, "a stale epoch's fact");
        // The epoch counter wrapping around empties the slots for good.
        t.note(a, Known::Stored(v(5)));
        t.inner.lock().epoch = (1 << 31) - 1;
        t.note(a, Known::Stored(v(6)));
        t.clear();
        assert_eq!(one(&t, a), None, "after the wrap");
        t.inner.lock().epoch = 1;
        assert_eq!(one(&t, a), None, "no slot survived the wrap");
    }

    #[test]
    fn during_a_bypass_nothing_is_known_and_after_it_nothing_from_before() {
        let t = KnownKeys::with_seed(64, 3);
        let a = t.tag(b"a");
        t.note(a, Known::Stored(v(u64::MAX)));
        assert_eq!(one(&t, a), Some(Known::Stored(v(u64::MAX))));
        let (seen, _) = t.lookup([a].into_iter());
        {
            let _b = t.bypass();
            t.note(a, Known::Stored(v(2)));
            assert_eq!(one(&t, a), None, "during");
        }
        assert_eq!(one(&t, a), None, "after");
        t.record(seen, [(a, Known::Stored(v(9)))].into_iter());
        assert_eq!(one(&t, a), None, "a fact from before");
    }

    #[test]
    fn a_pair_keeps_two_keys_and_a_third_evicts_one() {
        let t = KnownKeys::with_seed(1, 9); // one pair: every key shares it
        let tags: Vec<u64> = (0..3).map(|i| t.tag(format!("k{i}").as_bytes())).collect();
        t.note(tags[0], Known::Stored(v(1)));
        t.note(tags[1], Known::Stored(v(2)));
        let (_, got) = t.lookup(tags[..2].iter().copied());
        assert_eq!(
            got,
            vec![Some(Known::Stored(v(1))), Some(Known::Stored(v(2)))]
        );
        t.note(tags[0], Known::Stored(v(7)));
        assert_eq!(one(&t, tags[0]), Some(Known::Stored(v(7))));
        t.note(tags[2], Known::Absent);
        let (_, got) = t.lookup(tags.iter().copied());
        assert_eq!(got[2], Some(Known::Absent));
        assert_eq!(got.iter().filter(|g| g.is_some()).count(), 2, "{got:?}");
    }
}
