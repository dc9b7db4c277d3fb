//! Keys a read found absent on every owner, remembered for `cluster.negative_ttl_ms` so that
//! the next reads of them on this node answer "no such key" without an RPC (negative
//! caching, as DNS resolvers and groupcache's callers do).
//!
//! Why it is safe:
//! - **Bounded staleness.** An entry lives at most the TTL, which may not exceed
//!   `cluster.max_staleness_ms` (the config refuses more), counted from before the read was
//!   sent: a key created meanwhile is seen within the bound G2 gives values.
//! - **Invalidations and this node's own writes end it at once.** Every key invalidation
//!   applied here, every write of the key through this node and every change of its owner
//!   store forgets the key; a pattern, tag or flush invalidation, or a lost invalidation gap,
//!   forgets every key. Strict invalidations therefore cover absences too.
//! - **No race with an invalidation.** A read takes a [`Stamp`] of the key's bucket before
//!   it asks the owners and remembers the absence only if no forget touched the bucket
//!   meanwhile. The check and the insert happen under the key's shard lock, and a forget
//!   bumps the bucket and removes the key under the same lock, so no reader ever sees an
//!   absence a forget has ended. Every change of a key forgets it *after* the change is in
//!   this node's store: a read that missed the store before the change had its stamp taken
//!   before the forget.
//! - **Only reads use it.** A write's primary reads its starting copy from the owners
//!   (`current_copy`), never from here.
//!
//! Entries are two independent 64-bit hashes of (namespace, key) under per-process random
//! keys, so no entry holds a key's bytes, and a crafted key cannot make another one look
//! absent; the map is sharded and bounded ([`CAPACITY`] entries).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Most keys remembered (about 32 bytes each).
pub(crate) const CAPACITY: usize = 65_536;
const SHARDS: usize = 16;
const BUCKETS: usize = 4096;

/// What a read saw of its key's bucket before it asked the owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    bucket: u64,
    all: u64,
}

/// The remembered absences ([module docs](self)).
pub(crate) struct Absent {
    ttl_ms: u64,
    hash_a: std::collections::hash_map::RandomState,
    hash_b: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<Shard>>,
    /// Bumped by every forget of a key whose hash A falls in the bucket.
    buckets: Box<[AtomicU64]>,
    /// Bumped by every forget of all keys.
    all: AtomicU64,
}

/// One shard of the map.
#[derive(Default)]
struct Shard {
    /// hash A → (expires at, in monotonic ms; hash B).
    map: HashMap<u64, (u64, u64)>,
    /// When a full shard was last swept of expired entries (a sweep at most once per TTL:
    /// a full shard of live entries costs a scan per insert otherwise).
    swept_ms: u64,
}

impl std::fmt::Debug for Absent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Absent")
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl Absent {
    /// Remembers absences for `ttl_ms` (0: never).
    pub(crate) fn new(ttl_ms: u64) -> Self {
        Self {
            ttl_ms,
            hash_a: Default::default(),
            hash_b: Default::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            all: AtomicU64::new(0),
        }
    }

    fn hashes(&self, namespace: &str, key: &[u8]) -> (u64, u64) {
        let one = |s: &std::collections::hash_map::RandomState| {
            let mut h = s.build_hasher();
            h.write(namespace.as_bytes());
            h.write_u8(0xff);
            h.write(key);
            h.finish()
        };
        (one(&self.hash_a), one(&self.hash_b))
    }

    fn shard(&self, a: u64) -> &Mutex<Shard> {
        &self.shards[(a >> 52) as usize % SHARDS]
    }

    fn bucket(&self, a: u64) -> &AtomicU64 {
        &self.buckets[a as usize % BUCKETS]
    }

    /// Whether `key` is remembered absent at `now_ms`; else the stamp a read takes before
    /// asking the owners.
    pub(crate) fn check(&self, namespace: &str, key: &[u8], now_ms: u64) -> Result<(), Stamp> {
        let (a, b) = self.hashes(namespace, key);
        let stamp = Stamp {
            bucket: self.bucket(a).load(Ordering::SeqCst),
            all: self.all.load(Ordering::SeqCst),
        };
        if self.ttl_ms == 0 {
            return Err(stamp);
        }
        match self.shard(a).lock().map.get(&a) {
            Some(&(until, hb)) if hb == b && now_ms < until => Ok(()),
            _ => Err(stamp),
        }
    }

    /// Remembers that every owner answered `key` absent to a read that took `stamp` at
    /// `asked_ms`, unless the key was forgotten since.
    pub(crate) fn remember(
        &self,
        namespace: &str,
        key: &[u8],
        stamp: Stamp,
        asked_ms: u64,
        now_ms: u64,
    ) {
        if self.ttl_ms == 0 {
            return;
        }
        let until = asked_ms + self.ttl_ms;
        if until <= now_ms {
            return;
        }
        let (a, b) = self.hashes(namespace, key);
        let mut shard = self.shard(a).lock();
        // Under the shard lock, where `forget` bumps the bucket: no forget of this key can
        // fall between this check and the insert.
        let now = Stamp {
            bucket: self.bucket(a).load(Ordering::SeqCst),
            all: self.all.load(Ordering::SeqCst),
        };
        if now != stamp {
            return;
        }
        if shard.map.len() >= CAPACITY / SHARDS {
            if now_ms < shard.swept_ms + self.ttl_ms {
                return;
            }
            shard.swept_ms = now_ms;
            shard.map.retain(|_, (u, _)| *u > now_ms);
            if shard.map.len() >= CAPACITY / SHARDS {
                return;
            }
        }
        shard.map.insert(a, (until, b));
    }

    /// Forgets `key` (an invalidation of it, or a write).
    pub(crate) fn forget(&self, namespace: &str, key: &[u8]) {
        if self.ttl_ms == 0 {
            return;
        }
        let (a, _) = self.hashes(namespace, key);
        let mut shard = self.shard(a).lock();
        self.bucket(a).fetch_add(1, Ordering::SeqCst);
        shard.map.remove(&a);
    }

    /// Forgets every key (a pattern, tag or flush invalidation, or a lost gap).
    pub(crate) fn forget_all(&self) {
        if self.ttl_ms == 0 {
            return;
        }
        // Bumped first: a `remember` that checks after this refuses; one that checked before
        // inserted under its shard's lock, which the clear below takes after it.
        self.all.fetch_add(1, Ordering::SeqCst);
        for s in &self.shards {
            s.lock().map.clear();
        }
    }

    /// How many keys are remembered (expired ones included until they are swept).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absence_lasts_its_ttl_from_when_the_read_was_sent() {
        let a = Absent::new(500);
        let stamp = a.check("ns", b"k", 1_000).unwrap_err();
        a.remember("ns", b"k", stamp, 1_000, 1_010);
        assert!(a.check("ns", b"k", 1_010).is_ok());
        assert!(a.check("ns", b"k", 1_499).is_ok());
        assert!(
            a.check("ns", b"k", 1_500).is_err(),
            "expired at asked + ttl"
        );
        assert!(a.check("other", b"k", 1_010).is_err(), "namespaces apart");
        assert!(a.check("ns", b"k2", 1_010).is_err());
        // A read that came back after its TTL had already run out remembers nothing.
        let stamp = a.check("ns", b"late", 2_000).unwrap_err();
        a.remember("ns", b"late", stamp, 2_000, 2_600);
        assert!(a.check("ns", b"late", 2_600).is_err());
    }

    #[test]
    fn a_forget_during_the_read_wins() {
        let a = Absent::new(500);
        let stamp = a.check("ns", b"k", 0).unwrap_err();
        a.forget("ns", b"k");
        a.remember("ns", b"k", stamp, 0, 1);
        assert!(a.check("ns", b"k", 1).is_err(), "invalidated while asked");
        let stamp = a.check("ns", b"k", 0).unwrap_err();
        a.forget_all();
        a.remember("ns", b"k", stamp, 0, 1);
        assert!(a.check("ns", b"k", 1).is_err(), "flushed while asked");
        // Remembered, then forgotten.
        let stamp = a.check("ns", b"k", 0).unwrap_err();
        a.remember("ns", b"k", stamp, 0, 1);
        assert!(a.check("ns", b"k", 1).is_ok());
        a.forget("ns", b"k");
        assert!(a.check("ns", b"k", 1).is_err());
        a.remember("ns", b"k", a.check("ns", b"k", 0).unwrap_err(), 0, 1);
        a.forget_all();
        assert!(a.check("ns", b"k", 1).is_err());
    }

    #[test]
    fn it_stays_bounded_and_off_at_ttl_zero() {
        let a = Absent::new(1_000);
        for i in 0..(CAPACITY * 2) {
            let k = i.to_le_bytes();
            let s = a.check("ns", &k, 0).unwrap_err();
            a.remember("ns", &k, s, 0, 0);
        }
        assert!(a.len() <= CAPACITY, "{}", a.len());
        // Once they expire, new ones take their room.
        let s = a.check("ns", b"new", 5_000).unwrap_err();
        a.remember("ns", b"new", s, 5_000, 5_000);
        assert!(a.check("ns", b"new", 5_001).is_ok());
        let off = Absent::new(0);
        let s = off.check("ns", b"k", 0).unwrap_err();
        off.remember("ns", b"k", s, 0, 0);
        assert!(off.check("ns", b"k", 0).is_err());
    }
}
