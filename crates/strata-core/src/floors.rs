//! Removal floors: the newest version below which this node's own copy of a key is no longer
//! wanted, so that a write that raced with a removal (or with a newer write announced by
//! another node) undoes its own copy when it finishes (ARCHITECTURE decision 91).
//!
//! A write stores its L1 and L3 copies, then checks the key's floor; a removal raises the
//! floor, then drops the copies. Whichever of the two steps comes second sees the other: the
//! layers take a lock for each store and each drop, so a check that ran before the raise was
//! preceded by stores that the drop then finds, and a check after it (ordered after the raise
//! through the layer's lock, or through the floor's own `SeqCst` accesses) finds the floor
//! above the write's version. Versions come from the node's hybrid clock, so a write that
//! began before the removal is below the floor and one that began after is above it.
//!
//! Keys: a fixed table of slots, each the maximum floor of every key that hashes to it (a
//! seeded hash). Two keys sharing a slot only make the check stricter: a write below another
//! key's floor undoes its own copies, which costs a later miss, never a wrong answer. With
//! `SLOTS` slots, removals at `R` per second and writes that take `T` seconds, about
//! `R·T/SLOTS` of the writes are undone needlessly (100,000 removals a second and 1 ms
//! writes: 0.6 %). Floors never need to expire: versions grow with time, so a floor stops
//! matching once the writes that began before it are done.
//!
//! Patterns and tags ([`NsFloors`]): the most recent few, each with its floor, so that a
//! pattern invalidation undoes only the in-flight writes of keys it matches; older ones fold
//! into the namespace's floor, which a flush raises too.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::entry::Tags;
use crate::glob::Glob;
use crate::version::Version;

/// Slots in the key table (a power of two): 128 KiB per cache.
const SLOTS: usize = 16_384;

/// Pattern and tag floors kept per namespace before the oldest folds into the namespace's.
const RECENT: usize = 32;

/// `SLOTS` slots, a key's chosen by a seeded hash of its namespace and name.
struct SlotTable<T> {
    seed: u64,
    slots: Box<[T]>,
}

impl<T: Default> Default for SlotTable<T> {
    fn default() -> Self {
        Self {
            seed: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            slots: (0..SLOTS).map(|_| T::default()).collect(),
        }
    }
}

impl<T> SlotTable<T> {
    fn slot(&self, namespace: &str, key: &[u8]) -> &T {
        // One-shot hashes, the namespace's seeding the key's: a streaming `Xxh3` derived a
        // 192-byte secret from its seed at every call, and every write asks for its slot.
        let ns = xxhash_rust::xxh3::xxh3_64_with_seed(namespace.as_bytes(), self.seed);
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(key, ns);
        &self.slots[(h as usize) & (SLOTS - 1)]
    }
}

/// The table of removal floors of one cache's keys.
#[derive(Default)]
pub(crate) struct Floors(SlotTable<AtomicU64>);

impl Floors {
    fn slot(&self, namespace: &str, key: &[u8]) -> &AtomicU64 {
        self.0.slot(namespace, key)
    }

    /// Raises the floor of `key` to at least `to`: copies older than it are unwanted.
    /// Call before dropping the copies.
    pub(crate) fn raise(&self, namespace: &str, key: &[u8], to: Version) {
        self.slot(namespace, key)
            .fetch_max(to.as_u64(), Ordering::SeqCst);
    }

    /// Whether a copy of `key` at `version` is still wanted. Call after storing the copies.
    pub(crate) fn admits(&self, namespace: &str, key: &[u8], version: Version) -> bool {
        self.slot(namespace, key).load(Ordering::SeqCst) <= version.as_u64()
    }
}

/// Write and drop stamps (ARCHITECTURE decisions 92 and 93): for each slot (keys hashed as
/// in [`Floors`]), the writes and the drops of its keys under way, and the latest moment one
/// of each finished. A promotion whose read began before such a moment, or that checks while
/// one is under way, may carry the value that write replaced or that drop removed, and undoes
/// itself; a loaded value checks the drops only (its own write stamps the slot).
#[derive(Default)]
pub(crate) struct Stamps(SlotTable<StampSlot>);

#[derive(Default)]
struct StampSlot {
    written: Stamp,
    dropped: Stamp,
}

#[derive(Default)]
struct Stamp {
    /// The latest [`mono_ns`] reading at which one finished.
    at: AtomicU64,
    /// How many are under way.
    busy: AtomicU64,
}

impl Stamp {
    fn begin(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self)
    }

    fn since(&self, at: u64) -> bool {
        self.busy.load(Ordering::SeqCst) > 0 || self.at.load(Ordering::SeqCst) >= at
    }
}

impl Stamps {
    fn slot(&self, namespace: &str, key: &[u8]) -> &StampSlot {
        self.0.slot(namespace, key)
    }

    /// Marks a write of `key` under way until the returned guard drops (also when the
    /// write's future is cancelled), which stamps the slot with the time it drops.
    pub(crate) fn begin_write(&self, namespace: &str, key: &[u8]) -> Busy<'_> {
        self.slot(namespace, key).written.begin()
    }

    /// Marks a drop of `key`'s copies here under way until the returned guard drops (also
    /// when cancelled), which stamps the slot with the time it drops.
    pub(crate) fn begin_drop(&self, namespace: &str, key: &[u8]) -> Busy<'_> {
        self.slot(namespace, key).dropped.begin()
    }

    /// Whether a write or a drop of `key` (or of a key sharing its slot) is under way, or
    /// finished at or after `read_at` (a [`mono_ns`] reading).
    pub(crate) fn disturbed_since(&self, namespace: &str, key: &[u8], read_at: u64) -> bool {
        let slot = self.slot(namespace, key);
        slot.written.since(read_at) || slot.dropped.since(read_at)
    }

    /// Whether a drop of `key` (or of a key sharing its slot) is under way, or finished at
    /// or after `since` (a [`mono_ns`] reading).
    pub(crate) fn dropped_since(&self, namespace: &str, key: &[u8], since: u64) -> bool {
        self.slot(namespace, key).dropped.since(since)
    }
}

/// A write or a drop under way ([`Stamps::begin_write`], [`Stamps::begin_drop`]).
pub(crate) struct Busy<'a>(&'a Stamp);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        // Stamped before the count goes down: a check that no longer sees it under way sees
        // its stamp.
        self.0.at.fetch_max(mono_ns(), Ordering::SeqCst);
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Nanoseconds on the monotonic clock since the first reading in this process: comparable
/// across threads (never 0 after the first reading's instant has passed).
pub(crate) fn mono_ns() -> u64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(std::time::Instant::now);
    base.elapsed().as_nanos() as u64 + 1
}

/// What a recent invalidation of a namespace matched.
enum Matcher {
    Pattern(Glob),
    Tag(Bytes),
}

impl Matcher {
    fn matches(&self, key: &[u8], tags: &Tags) -> bool {
        match self {
            Matcher::Pattern(glob) => glob.matches(key),
            Matcher::Tag(tag) => tags.contains(tag),
        }
    }
}

/// The floors of one namespace: the namespace's own (a flush), and those of its most recent
/// pattern and tag invalidations.
#[derive(Default)]
pub(crate) struct NsFloors {
    /// Copies of every key below it are unwanted.
    all: AtomicU64,
    /// The highest floor in `recent`: a copy at or above it needs no look there.
    recent_max: AtomicU64,
    recent: Mutex<VecDeque<(u64, Matcher)>>,
}

impl NsFloors {
    /// Raises the floor of every key of the namespace (a flush).
    pub(crate) fn raise_all(&self, to: Version) {
        self.all.fetch_max(to.as_u64(), Ordering::SeqCst);
    }

    /// Raises the floor of the keys matching `glob`.
    pub(crate) fn raise_pattern(&self, glob: Glob, to: Version) {
        self.push(Matcher::Pattern(glob), to);
    }

    /// Raises the floor of the entries tagged `tag`.
    pub(crate) fn raise_tag(&self, tag: Bytes, to: Version) {
        self.push(Matcher::Tag(tag), to);
    }

    fn push(&self, matcher: Matcher, to: Version) {
        let mut recent = self.recent.lock();
        if recent.len() == RECENT
            && let Some((oldest, _)) = recent.pop_front()
        {
            // Stricter, never looser: every key below the oldest floor is now refused.
            self.all.fetch_max(oldest, Ordering::SeqCst);
        }
        recent.push_back((to.as_u64(), matcher));
        self.recent_max.fetch_max(to.as_u64(), Ordering::SeqCst);
    }

    /// Whether a copy of `key` (tagged `tags`) at `version` is still wanted.
    pub(crate) fn admits(&self, key: &[u8], tags: &Tags, version: Version) -> bool {
        let v = version.as_u64();
        if self.all.load(Ordering::SeqCst) > v {
            return false;
        }
        if self.recent_max.load(Ordering::SeqCst) <= v {
            return true;
        }
        let recent = self.recent.lock();
        // Again under the lock: a floor folded into `all` since the load above left the
        // ring before this look at it.
        self.all.load(Ordering::SeqCst) <= v
            && !recent
                .iter()
                .any(|(floor, m)| *floor > v && m.matches(key, tags))
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
        assert!(f.admits("other", b"k", v(9)), "namespaces are apart");
    }

    #[test]
    fn other_keys_are_refused_only_where_they_share_a_slot() {
        let f = Floors::default();
        f.raise("ns", b"k", v(100));
        let refused = (0..10_000)
            .filter(|i| !f.admits("ns", format!("other{i}").as_bytes(), v(50)))
            .count();
        // One slot of 16,384: under one of 10,000 keys shares it on average.
        assert!(refused < 8, "{refused} other keys refused");
    }

    fn tags(t: &[&str]) -> Tags {
        Tags::new(t.iter().map(|s| Bytes::copy_from_slice(s.as_bytes())))
    }

    #[test]
    fn a_pattern_or_tag_floor_refuses_only_what_it_matched() {
        let f = NsFloors::default();
        let none = tags(&[]);
        f.raise_pattern(Glob::new(b"user:*").unwrap(), v(100));
        assert!(
            !f.admits(b"user:1", &none, v(99)),
            "a matching key below it"
        );
        assert!(f.admits(b"user:1", &none, v(100)), "at the floor");
        assert!(f.admits(b"order:1", &none, v(99)), "a key it did not match");
        f.raise_tag(Bytes::from_static(b"t"), v(200));
        assert!(
            !f.admits(b"order:1", &tags(&["t"]), v(150)),
            "a tagged entry below it"
        );
        assert!(f.admits(b"order:1", &tags(&["u"]), v(150)), "another tag");
        f.raise_all(v(300));
        assert!(
            !f.admits(b"order:1", &none, v(299)),
            "a flush refuses every key"
        );
        assert!(f.admits(b"order:1", &none, v(300)));
    }

    #[test]
    fn old_pattern_floors_fold_into_the_namespace_floor() {
        let f = NsFloors::default();
        let none = tags(&[]);
        for i in 0..RECENT as u64 {
            f.raise_pattern(Glob::new(format!("p{i}").as_bytes()).unwrap(), v(10 + i));
        }
        assert!(f.admits(b"x", &none, v(5)), "no pattern matches x");
        f.raise_pattern(Glob::new(b"last").unwrap(), v(1000));
        // The oldest (floor 10) folded in: stricter for every key, never looser.
        assert!(!f.admits(b"x", &none, v(5)));
        assert!(f.admits(b"x", &none, v(10)));
        assert!(!f.admits(b"p1", &none, v(10)), "the others are still kept");
    }
}
