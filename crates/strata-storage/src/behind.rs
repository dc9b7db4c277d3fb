//! Writes L3 has acknowledged and not yet stored (`l3.write_behind`, ARCHITECTURE decision
//! 110).
//!
//! A write its caller just stamped (the newest version of its key on this node) need not wait
//! for RocksDB: it is put here and acknowledged, and the group-commit writer stores what is
//! here in batches. Until then L3 answers reads of the key from here, and a removal of the
//! key takes it from here too, under the key's lock — the lock the writer holds from its
//! check that the write is still here to the commit, so a removal either finds the write here
//! and takes it, or runs after it is stored; a removed write is never stored after its
//! removal (G3). A key written again before the writer got to it is stored once, at its
//! newest version: under a load that outruns the writer, overwrites coalesce.
//!
//! Bounded by bytes, reserved before a write is put: a write that would pass the bound asks
//! the writer to store what is here at once and waits until the writer's group commits (at
//! most 256 writes each) make room for it, not for the whole map. Under a load of new keys
//! that outruns the writer the map then stays near its bound and the writer stores without
//! pause, and overwrites of any key the map holds still coalesce.
//! A crash (`kill -9`) loses what is here: the key then reads as its previous stored value,
//! or misses (docs/semantics.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use strata_core::{Entry, Version};

/// Shards of the map (a power of two): the writers of a pipeline and the reads of missing
/// keys do not all take one lock.
const SHARDS: usize = 16;
/// What one pending write is counted as beyond its key and value bytes (the map's slot, the
/// entry's fields, the namespace's name).
const OVERHEAD: usize = 160;

/// One shard of the pending writes, by disk key.
type Shard = Mutex<HashMap<Vec<u8>, Pending>>;

/// One write acknowledged and not yet stored.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// The write's namespace.
    pub namespace: String,
    /// The user key.
    pub key: Bytes,
    /// What to store.
    pub entry: Entry,
    /// Bytes it is counted as.
    size: usize,
}

/// The writes acknowledged and not yet stored, by disk key.
#[derive(Debug)]
pub(crate) struct Behind {
    shards: Box<[Shard]>,
    /// Pending writes, for a read's lock-free "nothing is pending".
    len: AtomicUsize,
    /// Bytes they are counted as.
    bytes: AtomicUsize,
    /// Past this many bytes, a write waits for the writer.
    limit: usize,
    /// A flush is in the writer's queue (one is enough for every write put before it runs).
    queued: AtomicBool,
    /// A flush due at once (the pending bytes passed the bound) is in the writer's queue.
    urgent: AtomicBool,
    /// Told when the writer has stored some of the pending writes.
    progress: tokio::sync::Notify,
}

impl Behind {
    /// An empty set bounded by `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            len: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            limit,
            queued: AtomicBool::new(false),
            urgent: AtomicBool::new(false),
            progress: tokio::sync::Notify::new(),
        }
    }

    fn shard(&self, dkey: &[u8]) -> &Shard {
        let h = xxhash_rust::xxh3::xxh3_64(dkey) as usize;
        &self.shards[h & (SHARDS - 1)]
    }

    /// Bytes the pending writes are counted as.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Whether nothing is pending (a read then skips the map).
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Bytes a pending write of `dkey_len` key bytes and `entry` is counted as.
    pub fn size_of(dkey_len: usize, entry: &Entry) -> usize {
        OVERHEAD + 2 * dkey_len + entry.value.len() + entry.tags.byte_len()
    }

    /// Counts `size` bytes for a write about to be [`Behind::put`], unless that would pass
    /// the bound while something is pending (a write larger than the bound alone still
    /// goes in): false, and the caller waits for the writer. Reserving before the put keeps
    /// the pending bytes under the bound however many writers race: put first and checked
    /// after, 100 clients of 2 MB values held 195 MiB behind a 4 MiB bound (an attack
    /// review).
    pub fn try_reserve(&self, size: usize) -> bool {
        let mut cur = self.bytes.load(Ordering::Acquire);
        loop {
            if cur > 0 && cur.saturating_add(size) > self.limit {
                return false;
            }
            match self.bytes.compare_exchange_weak(
                cur,
                cur + size,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Puts a write whose `size` ([`Behind::size_of`]) the caller has reserved
    /// ([`Behind::try_reserve`]); an older version than one already pending is dropped, and
    /// its reservation with it.
    pub fn put(&self, dkey: Vec<u8>, namespace: &str, key: Bytes, entry: Entry, size: usize) {
        let mut map = self.shard(&dkey).lock();
        match map.entry(dkey) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                if o.get().entry.version <= entry.version {
                    let old = o.get().size;
                    o.insert(Pending {
                        namespace: namespace.to_owned(),
                        key,
                        entry,
                        size,
                    });
                    self.bytes.fetch_sub(old, Ordering::AcqRel);
                } else {
                    self.bytes.fetch_sub(size, Ordering::AcqRel);
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Pending {
                    namespace: namespace.to_owned(),
                    key,
                    entry,
                    size,
                });
                self.len.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// The pending write of `dkey`, if any.
    pub fn get(&self, dkey: &[u8]) -> Option<Entry> {
        if self.is_empty() {
            return None;
        }
        self.shard(dkey).lock().get(dkey).map(|p| p.entry.clone())
    }

    /// The version of the pending write of `dkey`, if any.
    pub fn version(&self, dkey: &[u8]) -> Option<Version> {
        if self.is_empty() {
            return None;
        }
        self.shard(dkey).lock().get(dkey).map(|p| p.entry.version)
    }

    fn remove_locked(&self, map: &mut HashMap<Vec<u8>, Pending>, dkey: &[u8]) -> Option<Pending> {
        let p = map.remove(dkey)?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(p.size, Ordering::AcqRel);
        Some(p)
    }

    /// Takes the pending write of `dkey` if `select` picks its version. Call under the key's
    /// lock (module docs).
    pub fn take_if(&self, dkey: &[u8], select: impl FnOnce(Version) -> bool) -> Option<Entry> {
        if self.is_empty() {
            return None;
        }
        let mut map = self.shard(dkey).lock();
        if !map.get(dkey).is_some_and(|p| select(p.entry.version)) {
            return None;
        }
        self.remove_locked(&mut map, dkey).map(|p| p.entry)
    }

    /// Forgets the pending write of `dkey` if it still is `version`: the writer has stored it
    /// (or failed to, and tombstoned the key). Call under the key's lock.
    pub fn done(&self, dkey: &[u8], version: Version) {
        let mut map = self.shard(dkey).lock();
        if map.get(dkey).is_some_and(|p| p.entry.version == version) {
            self.remove_locked(&mut map, dkey);
        }
    }

    /// The keys of `namespace`'s pending writes that `keep` picks (O(pending writes)).
    pub fn keys_where(
        &self,
        namespace: &str,
        mut keep: impl FnMut(&[u8], &Entry) -> bool,
    ) -> Vec<Bytes> {
        let mut keys = Vec::new();
        for shard in self.shards.iter() {
            keys.extend(
                shard
                    .lock()
                    .values()
                    .filter(|p| p.namespace == namespace && keep(&p.key, &p.entry))
                    .map(|p| p.key.clone()),
            );
        }
        keys
    }

    /// A copy of every pending write, to store.
    pub fn snapshot(&self) -> Vec<Pending> {
        let mut all = Vec::with_capacity(self.len.load(Ordering::Acquire));
        for shard in self.shards.iter() {
            all.extend(shard.lock().values().cloned());
        }
        all
    }

    /// Whether the caller should queue a flush for the writer (none is queued yet).
    pub fn claim_flush(&self) -> bool {
        !self.queued.swap(true, Ordering::AcqRel)
    }

    /// Whether the caller should queue a flush due at once (none is queued yet).
    pub fn claim_urgent(&self) -> bool {
        !self.urgent.swap(true, Ordering::AcqRel)
    }

    /// The writer took the queued flush: a write put from now on queues another.
    pub fn flush_taken(&self) {
        self.queued.store(false, Ordering::Release);
        self.urgent.store(false, Ordering::Release);
    }

    /// Tells the writes waiting for room ([`Behind::progressed`]) that the writer stored some.
    pub fn stored_some(&self) {
        self.progress.notify_waiters();
    }

    /// Completes at the writer's next [`Behind::stored_some`] after the call (create it
    /// before trying [`Behind::try_reserve`], then await it).
    pub fn progressed(&self) -> tokio::sync::futures::Notified<'_> {
        self.progress.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: u64, value: &'static [u8]) -> Entry {
        Entry::new(Bytes::from_static(value), Version::from_u64(v))
    }

    /// Reserves and puts, as the tier does.
    fn put(b: &Behind, k: &'static [u8], e: Entry) {
        let size = Behind::size_of(k.len(), &e);
        assert!(b.try_reserve(size), "no room for {k:?}");
        b.put(k.to_vec(), "ns", Bytes::from_static(k), e, size);
    }

    #[test]
    fn a_key_keeps_its_newest_write_and_its_bytes_are_counted_once() {
        let b = Behind::new(1 << 20);
        assert!(b.is_empty());
        put(&b, b"k", entry(2, b"two"));
        put(&b, b"k", entry(1, b"one"));
        assert_eq!(b.get(b"k").unwrap().value, Bytes::from_static(b"two"));
        let one = b.bytes.load(Ordering::Acquire);
        put(&b, b"k", entry(3, b"tri"));
        assert_eq!(b.bytes.load(Ordering::Acquire), one);
        assert_eq!(b.snapshot().len(), 1);
        // The writer stored version 2, but 3 came since: 3 stays.
        b.done(b"k", Version::from_u64(2));
        assert_eq!(b.version(b"k"), Some(Version::from_u64(3)));
        assert!(b.take_if(b"k", |v| v < Version::from_u64(3)).is_none());
        assert!(b.take_if(b"k", |_| true).is_some());
        assert!(b.is_empty());
        assert_eq!(b.bytes.load(Ordering::Acquire), 0);
    }

    #[test]
    fn reservations_stop_at_the_bound_and_removals_give_room_back() {
        let b = Behind::new(1000);
        let big = Entry::new(Bytes::from(vec![0u8; 600]), Version::from_u64(1));
        let size = Behind::size_of(1, &big);
        assert!(b.try_reserve(size), "an empty map takes a write");
        b.put(
            b"a".to_vec(),
            "ns",
            Bytes::from_static(b"a"),
            big.clone(),
            size,
        );
        assert!(!b.try_reserve(size), "a second would pass the bound");
        // An older version of a pending key gives its reservation back.
        let old = Entry::new(Bytes::from_static(b"x"), Version::from_u64(0));
        let small = Behind::size_of(1, &old);
        assert!(b.try_reserve(small));
        b.put(b"a".to_vec(), "ns", Bytes::from_static(b"a"), old, small);
        assert_eq!(b.bytes(), size);
        assert!(b.claim_urgent());
        assert!(!b.claim_urgent(), "one urgent flush queued at a time");
        b.flush_taken();
        assert!(b.claim_urgent());
        b.take_if(b"a", |_| true);
        assert_eq!(b.bytes(), 0);
        assert!(b.try_reserve(size), "room again once the writer took it");
        // Larger than the bound alone: taken when nothing is pending.
        let b = Behind::new(100);
        assert!(b.try_reserve(size));
    }
}
