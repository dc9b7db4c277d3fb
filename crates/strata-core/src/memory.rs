//! L1: the in-process memory tier, on quick_cache (CLOCK-Pro-like eviction, sharded locks).
//!
//! - **Capacity is in bytes, and they are the bytes the process holds.** L1 stores its own
//!   compact copy of every key, value and tag (never a slice of a caller's buffer: a server's
//!   network buffer would stay alive behind a small value), and weighs each entry by the
//!   heap it takes: key and value allocations with the allocator's rounding
//!   ([`heap_bytes`]), tags, and [`ENTRY_OVERHEAD_BYTES`] of bookkeeping (the slot, the
//!   value's shared header, quick_cache's entry and hash-table space). quick_cache never lets
//!   the total weight pass the capacity, so resident bytes ≤ capacity always.
//! - **Namespaces** with an `l1_share` get a pool of their own (share × capacity); all others
//!   share the rest, so a busy namespace cannot evict a small critical one.
//! - **Expiry** is checked on every read against the injected [`Clock`]; an expired entry is a
//!   miss and is removed then (lazy expiry, as Redis does) or by the background sweep
//!   ([`MemoryTier::purge_expired`], run by the node's L1 actor).
//! - **`flush_namespace` is O(1)**: it bumps the namespace's generation; entries of an older
//!   generation are misses from that instant and the sweep reclaims their memory.
//! - **Versions**: a write never replaces a newer version (checked atomically in the shard).
//!
//! Reads are synchronous and take one shard read lock: the manager calls
//! [`MemoryTier::get_value`] directly on the hot path, without an `await` or a mailbox.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use quick_cache::sync::{Cache as QcCache, EntryAction, EntryResult};
use quick_cache::{DefaultHashBuilder, Equivalent, Lifecycle, Weighter};

use crate::entry::{Entry, Tags};
use crate::error::TierError;
use crate::glob::Glob;
use crate::namespace::MAX_NAMESPACES;
use crate::ns_table::NsTable;
use crate::scan::{ScanFrom, scan_hash};
use crate::stats::Counter;
use crate::tier::{Layer, SetOutcome, Tier, TierHealth};
use crate::time::{Clock, UnixMillis};
use crate::version::Version;

/// Bytes charged per entry on top of the key's and value's allocations and the tags: the
/// 40-byte key and 64-byte `Slot` in quick_cache's arena, its per-entry bookkeeping (~16
/// bytes) and hash-table slot, the 32-byte shared headers `Bytes` allocates when the value
/// and the key are first cloned, and the key's place in the ordered index (~56 bytes).
pub const ENTRY_OVERHEAD_BYTES: u64 = 256;

/// Shards of [`KeyIndex`]: writers to different shards do not contend.
const INDEX_SHARDS: usize = 16;

/// L1's keys in scan order ([`crate::scan`]: by hash, then bytes), per namespace id, so that
/// a page of keys (`SCAN`) costs O(page · log n) instead of a pass over every entry, and a
/// namespace's key count (`DBSIZE`) is a sum of set sizes. Sharded by the key's hash; a page
/// merges the shards' next keys. Every store inserts its key, so the index never misses a key
/// L1 holds; the remove paths take keys out, and a page checks each key against the pool
/// anyway (an entry can expire while its key is still listed here). A flush drops the
/// namespace's sets at once.
struct KeyIndex {
    shards: Box<[IndexShard]>,
}

/// One shard of [`KeyIndex`]: per namespace id, (scan hash, key), ordered.
type IndexShard = parking_lot::Mutex<HashMap<u32, std::collections::BTreeSet<(u64, Bytes)>>>;

/// Above this many keys, a dropped index set is freed on a thread of its own rather than by
/// the caller (a flush answers at once).
const DROP_ELSEWHERE_ABOVE: usize = 10_000;

impl KeyIndex {
    fn new() -> Self {
        KeyIndex {
            shards: (0..INDEX_SHARDS)
                .map(|_| parking_lot::Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    fn shard(&self, hash: u64) -> &IndexShard {
        // The low bits: pages are ordered by the whole hash, so shards split each page evenly.
        &self.shards[hash as usize % INDEX_SHARDS]
    }

    fn insert(&self, ns: u32, key: &Bytes) {
        let h = scan_hash(key);
        // A key already there stays as it is (`BTreeSet::insert` does not replace).
        self.shard(h)
            .lock()
            .entry(ns)
            .or_default()
            .insert((h, key.clone()));
    }

    /// Takes `key` out (an eviction: quick_cache holds the key's shard, so no write of the
    /// key can be in between).
    fn remove(&self, ns: u32, key: Bytes) {
        let h = scan_hash(&key);
        if let Some(set) = self.shard(h).lock().get_mut(&ns) {
            set.remove(&(h, key));
        }
    }

    /// Takes `key` out unless `held` says the pool holds it again: a write that stored the
    /// key after this path removed it has indexed it or is about to (a store indexes after
    /// its value is in the pool), and must not lose its place. Checked under the shard's
    /// lock, which that write's index insert also takes.
    fn remove_unless_held(&self, ns: u32, key: Bytes, held: impl FnOnce(&[u8]) -> bool) {
        let h = scan_hash(&key);
        let mut s = self.shard(h).lock();
        if !held(&key)
            && let Some(set) = s.get_mut(&ns)
        {
            set.remove(&(h, key));
        }
    }

    /// Drops every key of namespace `ns` (a flush), in O(shards); a large set is freed on a
    /// thread of its own.
    fn drop_namespace(&self, ns: u32) {
        let mut dropped = Vec::new();
        for shard in self.shards.iter() {
            if let Some(set) = shard.lock().remove(&ns) {
                dropped.push(set);
            }
        }
        if dropped.iter().map(|s| s.len()).sum::<usize>() > DROP_ELSEWHERE_ABOVE {
            let _ = std::thread::Builder::new()
                .name("strata-l1-free".into())
                .spawn(move || drop(dropped));
        }
    }

    /// How many keys of namespace `ns` are indexed: those L1 holds, including entries whose
    /// expiry passed and that the sweep has not reclaimed yet (as Redis's `DBSIZE` counts).
    fn count(&self, ns: u32) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().get(&ns).map_or(0, |set| set.len() as u64))
            .sum()
    }

    /// Up to `limit` keys of namespace `ns` from `from`, in scan order.
    fn page(&self, ns: u32, from: ScanFrom<'_>, limit: usize) -> Vec<(u64, Bytes)> {
        use std::ops::Bound;
        let lower = match from.after_key() {
            Some(a) => Bound::Excluded((from.hash(), Bytes::copy_from_slice(a))),
            None => Bound::Included((from.hash(), Bytes::new())),
        };
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let s = shard.lock();
            if let Some(set) = s.get(&ns) {
                out.extend(
                    set.range((lower.clone(), Bound::Unbounded))
                        .take(limit)
                        .map(|(h, k)| (*h, k.clone())),
                );
            }
        }
        if out.len() > limit {
            out.select_nth_unstable(limit);
            out.truncate(limit);
        }
        out.sort_unstable();
        out
    }
}

/// The heap an allocation of `n` bytes takes (glibc malloc: an 8-byte header, 16-byte
/// granules, 32 bytes at least); 0 for none.
pub const fn heap_bytes(n: usize) -> u64 {
    if n == 0 {
        0
    } else {
        let rounded = (n + 8 + 15) & !15;
        (if rounded < 32 { 32 } else { rounded }) as u64
    }
}

/// What one entry weighs in L1 (see the module documentation).
pub fn entry_weight(key_len: usize, value_len: usize, tag_bytes: usize) -> u64 {
    heap_bytes(key_len) + heap_bytes(value_len) + tag_bytes as u64 + ENTRY_OVERHEAD_BYTES
}

/// How long a write waits for a concurrent write of the same key to finish placing its value;
/// the two are adjacent calls, so this only matters under a stalled thread.
const CONTENDED_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// L1 settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryTierConfig {
    /// Total byte capacity across all pools.
    pub capacity_bytes: u64,
    /// Namespaces with a dedicated pool and their share of `capacity_bytes`. The shares must
    /// sum to less than 1; the rest is the shared pool.
    pub dedicated: Vec<(String, f64)>,
    /// Expected mean entry size, used only to pre-size quick_cache's tables.
    pub estimated_entry_bytes: u64,
}

impl MemoryTierConfig {
    /// A config with one shared pool of `capacity_bytes`.
    pub fn with_capacity(capacity_bytes: u64) -> Self {
        Self {
            capacity_bytes,
            dedicated: Vec::new(),
            estimated_entry_bytes: 1024,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
struct L1Key {
    ns: u32,
    key: Bytes,
}

impl Hash for L1Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(self.ns, &self.key, state);
    }
}

/// A borrowed key, so that lookups do not allocate.
struct L1KeyRef<'a> {
    ns: u32,
    key: &'a [u8],
}

impl Hash for L1KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_key(self.ns, self.key, state);
    }
}

/// The one hash of an L1 key, shared by the owned and borrowed forms so they always agree.
#[inline]
fn hash_key<H: Hasher>(ns: u32, key: &[u8], state: &mut H) {
    key.hash(state);
    state.write_u32(ns);
}

impl Equivalent<L1Key> for L1KeyRef<'_> {
    fn equivalent(&self, k: &L1Key) -> bool {
        self.ns == k.ns && self.key == k.key.as_ref()
    }
}

/// What L1 stores per key: 64 bytes, one cache line, holding everything a read needs inline
/// (value, expiry, version, generation); tags and the stale grace, rarely present, sit behind
/// one pointer. Measured: shrinking the slot from 88 to 64 bytes cut an L1 hit by ~10 %.
#[derive(Clone)]
struct Slot {
    value: Bytes,
    /// `u64::MAX` for an entry that never expires, so freshness is one comparison.
    expires_at_ms: u64,
    version: Version,
    generation: u64,
    extra: Option<Arc<SlotExtra>>,
}

struct SlotExtra {
    stale_until_ms: Option<UnixMillis>,
    tags: Tags,
}

impl Slot {
    fn new(entry: Entry, generation: u64) -> Self {
        let extra = (entry.stale_until_ms.is_some() || !entry.tags.is_empty()).then(|| {
            Arc::new(SlotExtra {
                stale_until_ms: entry.stale_until_ms,
                tags: entry.tags,
            })
        });
        Slot {
            value: entry.value,
            expires_at_ms: entry.expires_at_ms.unwrap_or(u64::MAX),
            version: entry.version,
            generation,
            extra,
        }
    }

    fn into_entry(self) -> Entry {
        let (stale_until_ms, tags) = match self.extra {
            Some(x) => (x.stale_until_ms, x.tags.clone()),
            None => (None, Tags::none()),
        };
        Entry {
            value: self.value,
            version: self.version,
            expires_at_ms: (self.expires_at_ms != u64::MAX).then_some(self.expires_at_ms),
            stale_until_ms,
            tags,
        }
    }

    #[inline]
    fn is_fresh(&self, now: UnixMillis) -> bool {
        now < self.expires_at_ms
    }

    fn is_retained(&self, now: UnixMillis) -> bool {
        self.is_fresh(now)
            || self
                .extra
                .as_ref()
                .and_then(|x| x.stale_until_ms)
                .is_some_and(|until| now < until)
    }

    fn has_tag(&self, tag: &[u8]) -> bool {
        self.extra.as_ref().is_some_and(|x| x.tags.contains(tag))
    }

    fn tag_bytes(&self) -> usize {
        self.extra.as_ref().map_or(0, |x| x.tags.byte_len())
    }
}

#[derive(Clone)]
struct EntryWeighter;

impl Weighter<L1Key, Slot> for EntryWeighter {
    fn weight(&self, k: &L1Key, v: &Slot) -> u64 {
        entry_weight(k.key.len(), v.value.len(), v.tag_bytes())
    }
}

/// Counters that only L1 keeps.
#[derive(Debug, Default)]
pub struct MemoryCounters {
    /// Entries written.
    pub inserts: Counter,
    /// Entries pushed out by capacity.
    pub evictions: Counter,
    /// Entries dropped because they expired (on read or by the sweep).
    pub expirations: Counter,
    /// Entries removed by invalidations and flushes.
    pub invalidations: Counter,
    /// Writes skipped because the entry was larger than its pool's shard.
    pub rejected_too_large: Counter,
}

#[derive(Clone)]
struct EvictionHook(Arc<MemoryCounters>, Arc<KeyIndex>);

impl Lifecycle<L1Key, Slot> for EvictionHook {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), key: L1Key, _val: Slot) {
        self.0.evictions.incr();
        self.1.remove(key.ns, key.key);
    }
}

type Pool = QcCache<L1Key, Slot, EntryWeighter, DefaultHashBuilder, EvictionHook>;

struct NsSlot {
    id: u32,
    generation: AtomicU64,
    pool: Arc<Pool>,
}

/// The L1 tier.
pub struct MemoryTier {
    namespaces: NsTable<NsSlot>,
    shared: Arc<Pool>,
    dedicated: HashMap<String, Arc<Pool>>,
    clock: Arc<dyn Clock>,
    counters: Arc<MemoryCounters>,
    index: Arc<KeyIndex>,
    capacity_bytes: u64,
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTier")
            .field("capacity_bytes", &self.capacity_bytes)
            .field("resident_bytes", &self.resident_bytes())
            .finish_non_exhaustive()
    }
}

fn new_pool(
    capacity: u64,
    est_entry: u64,
    counters: &Arc<MemoryCounters>,
    index: &Arc<KeyIndex>,
) -> Pool {
    let items = (capacity / est_entry.max(1)).clamp(16, 1 << 24) as usize;
    QcCache::with(
        items,
        capacity,
        EntryWeighter,
        DefaultHashBuilder::default(),
        EvictionHook(counters.clone(), index.clone()),
    )
}

impl MemoryTier {
    /// Builds L1. Fails when the config is inconsistent (zero capacity, shares ≥ 1).
    pub fn new(config: MemoryTierConfig, clock: Arc<dyn Clock>) -> Result<Self, String> {
        if config.capacity_bytes == 0 {
            return Err("capacity_bytes must be greater than 0".into());
        }
        let share_sum: f64 = config.dedicated.iter().map(|(_, s)| *s).sum();
        if config
            .dedicated
            .iter()
            .any(|(_, s)| !(*s > 0.0 && *s < 1.0))
            || share_sum >= 1.0
        {
            return Err(format!(
                "l1_share values must each be in (0, 1) and sum to less than 1 (the rest is the shared pool); they sum to {share_sum}"
            ));
        }
        let counters = Arc::new(MemoryCounters::default());
        let index = Arc::new(KeyIndex::new());
        let est = config.estimated_entry_bytes;
        let mut dedicated = HashMap::new();
        let mut dedicated_bytes = 0u64;
        for (name, share) in &config.dedicated {
            let bytes = ((config.capacity_bytes as f64) * share) as u64;
            dedicated_bytes += bytes;
            dedicated.insert(
                name.clone(),
                Arc::new(new_pool(bytes.max(1), est, &counters, &index)),
            );
        }
        let shared_bytes = config.capacity_bytes.saturating_sub(dedicated_bytes).max(1);
        Ok(Self {
            namespaces: NsTable::default(),
            shared: Arc::new(new_pool(shared_bytes, est, &counters, &index)),
            dedicated,
            clock,
            counters,
            index,
            capacity_bytes: config.capacity_bytes,
        })
    }

    /// The configured byte capacity.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// Bytes currently charged to entries (never above the capacity).
    pub fn resident_bytes(&self) -> u64 {
        self.pools().map(|p| p.weight()).sum()
    }

    /// Entries currently held (including flushed ones the sweep has not reclaimed yet).
    pub fn entry_count(&self) -> u64 {
        self.pools().map(|p| p.len() as u64).sum()
    }

    /// The largest value L1 can hold for a key of `key_len` bytes with `tag_bytes` of tags
    /// in `namespace`: an entry must fit one shard of its pool.
    pub fn largest_value(&self, namespace: &str, key_len: usize, tag_bytes: usize) -> usize {
        let pool = self.dedicated.get(namespace).unwrap_or(&self.shared);
        let room = pool
            .shard_capacity()
            .saturating_sub(entry_weight(key_len, 0, tag_bytes));
        // heap_bytes(n) ≤ n + 24: what fits `room` once rounded.
        room.saturating_sub(24) as usize
    }

    /// L1's own counters.
    pub fn counters(&self) -> &MemoryCounters {
        &self.counters
    }

    fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        std::iter::once(&self.shared).chain(self.dedicated.values())
    }

    #[inline]
    fn now(&self) -> UnixMillis {
        self.clock.now_ms()
    }

    /// The hot path: the value of a fresh entry, without cloning tags or metadata out.
    #[inline]
    pub fn get_value(&self, namespace: &str, key: &[u8]) -> Option<Bytes> {
        let ns = self.namespaces.get(namespace)?;
        let slot = ns.pool.get(&L1KeyRef { ns: ns.id, key })?;
        self.check(ns, key, slot).map(|s| s.value)
    }

    /// A fresh entry with its metadata.
    pub fn get_entry(&self, namespace: &str, key: &[u8]) -> Option<Entry> {
        let ns = self.namespaces.get(namespace)?;
        let slot = ns.pool.get(&L1KeyRef { ns: ns.id, key })?;
        self.check(ns, key, slot).map(Slot::into_entry)
    }

    /// An entry that is expired but inside its stale grace.
    pub fn get_stale_entry(&self, namespace: &str, key: &[u8]) -> Option<Entry> {
        let ns = self.namespaces.get(namespace)?;
        let slot = ns.pool.peek(&L1KeyRef { ns: ns.id, key })?;
        let now = self.now();
        (slot.generation == ns.generation.load(Ordering::Acquire)
            && !slot.is_fresh(now)
            && slot.is_retained(now))
        .then(|| slot.into_entry())
    }

    #[inline]
    fn check(&self, ns: &NsSlot, key: &[u8], slot: Slot) -> Option<Slot> {
        if slot.generation != ns.generation.load(Ordering::Acquire) {
            return None;
        }
        if slot.is_fresh(self.now()) {
            return Some(slot);
        }
        if !slot.is_retained(self.now()) {
            self.expire(ns, key, slot.version);
        }
        None
    }

    #[cold]
    fn expire(&self, ns: &NsSlot, key: &[u8], version: Version) {
        let k = L1KeyRef { ns: ns.id, key };
        if let Some((gone, _)) = ns.pool.remove_if(&k, |s| s.version == version) {
            self.counters.expirations.incr();
            self.unindex(ns, gone.key);
        }
    }

    /// Takes a removed key of `ns` out of the index, unless a write stored it again since.
    fn unindex(&self, ns: &NsSlot, key: Bytes) {
        self.index.remove_unless_held(ns.id, key, |k| {
            ns.pool.peek(&L1KeyRef { ns: ns.id, key: k }).is_some()
        });
    }

    fn namespace(&self, namespace: &str) -> Option<&NsSlot> {
        self.namespaces.get(namespace).map(|a| &**a)
    }

    fn namespace_or_create(&self, namespace: &str) -> Result<Arc<NsSlot>, TierError> {
        self.namespaces.get_or_create(namespace, |existing| {
            if existing >= MAX_NAMESPACES {
                return Err(TierError::Failed(format!(
                    "L1 holds the maximum of {MAX_NAMESPACES} namespaces"
                )));
            }
            let pool = self
                .dedicated
                .get(namespace)
                .unwrap_or(&self.shared)
                .clone();
            Ok(NsSlot {
                id: existing as u32,
                generation: AtomicU64::new(0),
                pool,
            })
        })
    }

    /// Stores `entry` unless a newer version is held. Synchronous: L1 writes never wait on I/O.
    pub fn set_sync(
        &self,
        namespace: &str,
        key: Bytes,
        entry: Entry,
    ) -> Result<SetOutcome, TierError> {
        let ns = self.namespace_or_create(namespace)?;
        let weight = entry_weight(key.len(), entry.value.len(), entry.tags.byte_len());
        if weight > ns.pool.shard_capacity() {
            self.counters.rejected_too_large.incr();
            // An older copy must not outlive a write that L1 could not take.
            ns.pool.remove(&L1KeyRef {
                ns: ns.id,
                key: &key,
            });
            return Ok(SetOutcome::TooLarge);
        }
        let generation = ns.generation.load(Ordering::Acquire);
        let new_version = entry.version;
        // Compact copies: the caller's bytes may be a slice of a much larger buffer.
        let mut entry = entry;
        entry.value = Bytes::copy_from_slice(&entry.value);
        entry.tags = entry.tags.compacted();
        let k = L1Key {
            ns: ns.id,
            key: Bytes::copy_from_slice(&key),
        };
        let result = ns.pool.entry(&k, Some(CONTENDED_WRITE_TIMEOUT), |_, old| {
            if old.generation == generation && old.version > new_version {
                EntryAction::Retain(())
            } else {
                EntryAction::ReplaceWithGuard
            }
        });
        let slot = Slot::new(entry, generation);
        match result {
            EntryResult::Retained(()) => Ok(SetOutcome::KeptNewer),
            EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => {
                // `Err` means a concurrent remove took the placeholder: that remove is ordered
                // after this write, so dropping the value is correct.
                if guard.insert(slot).is_ok() {
                    self.counters.inserts.incr();
                    // After the value is in the pool: a remove racing with this write sees
                    // it there and leaves the key indexed (`remove_unless_held`).
                    self.index.insert(ns.id, &k.key);
                }
                Ok(SetOutcome::Stored)
            }
            EntryResult::Removed(..) => Ok(SetOutcome::Stored),
            EntryResult::Timeout => {
                ns.pool.remove(&k);
                Err(TierError::Failed(
                    "L1 write timed out behind a concurrent write of the same key".into(),
                ))
            }
        }
    }

    /// Removes `key` (synchronous form of [`Tier::remove`]).
    pub fn remove_sync(&self, namespace: &str, key: &[u8]) -> bool {
        let Some(ns) = self.namespace(namespace) else {
            return false;
        };
        let generation = ns.generation.load(Ordering::Acquire);
        let removed = ns.pool.remove(&L1KeyRef { ns: ns.id, key });
        let live = removed
            .as_ref()
            .is_some_and(|(_, s)| s.generation == generation);
        if let Some((gone, _)) = removed {
            self.unindex(ns, gone.key);
        }
        if live {
            self.counters.invalidations.incr();
        }
        live
    }

    fn remove_version_sync(&self, namespace: &str, key: &[u8], version: Version) -> bool {
        let Some(ns) = self.namespace(namespace) else {
            return false;
        };
        match ns
            .pool
            .remove_if(&L1KeyRef { ns: ns.id, key }, |s| s.version == version)
        {
            Some((gone, _)) => {
                self.unindex(ns, gone.key);
                true
            }
            None => false,
        }
    }

    /// Removes entries of `namespace` for which `doomed` holds; returns how many live ones.
    fn remove_where(&self, namespace: &str, doomed: impl Fn(&[u8], &Slot) -> bool) -> u64 {
        let Some(ns) = self.namespace(namespace) else {
            return 0;
        };
        let generation = ns.generation.load(Ordering::Acquire);
        let removed = Cell::new(0u64);
        let gone = std::cell::RefCell::new(Vec::new());
        ns.pool.retain(|k, s| {
            if k.ns != ns.id || !doomed(&k.key, s) {
                return true;
            }
            if s.generation == generation {
                removed.set(removed.get() + 1);
            }
            gone.borrow_mut().push(k.key.clone());
            false
        });
        for key in gone.into_inner() {
            self.unindex(ns, key);
        }
        self.counters.invalidations.add(removed.get());
        removed.get()
    }

    /// Makes every entry of `namespace` a miss at once (O(1)); the sweep reclaims the memory.
    pub fn flush_namespace_sync(&self, namespace: &str) {
        if let Some(ns) = self.namespace(namespace) {
            // The index first: a write that reads the new generation indexes its key after
            // this; one that read the old generation stored a dead entry, and the sweep
            // takes both its entry and any index line it left out again.
            self.index.drop_namespace(ns.id);
            ns.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// How many keys of `namespace` L1 holds, in O(1) (a sum over the index's shards):
    /// entries whose expiry passed count until they are read or swept, as in Redis's
    /// `DBSIZE`.
    pub fn key_count(&self, namespace: &str) -> u64 {
        self.namespace(namespace)
            .map_or(0, |ns| self.index.count(ns.id))
    }

    /// Up to `limit` keys of `namespace` with fresh entries, in scan order, from `from`:
    /// pages of the ordered index, each key checked against the pool, so a page of `limit`
    /// costs O(limit · log n) (plus the keys of expired or flushed entries skipped on the way).
    pub fn scan_keys_sync(&self, namespace: &str, from: ScanFrom<'_>, limit: usize) -> Vec<Bytes> {
        let Some(ns) = self.namespace(namespace) else {
            return Vec::new();
        };
        let now = self.now();
        let generation = ns.generation.load(Ordering::Acquire);
        let mut out: Vec<Bytes> = Vec::new();
        let mut last: Option<Bytes> = None;
        while out.len() < limit {
            let want = (limit - out.len()).max(16);
            let page = match &last {
                Some(k) => self.index.page(ns.id, ScanFrom::after(k), want),
                None => self.index.page(ns.id, from, want),
            };
            let exhausted = page.len() < want;
            last = page.last().map(|(_, k)| k.clone());
            for (_, key) in page {
                let live = ns
                    .pool
                    .peek(&L1KeyRef {
                        ns: ns.id,
                        key: &key,
                    })
                    .is_some_and(|s| s.generation == generation && s.is_fresh(now));
                if live {
                    out.push(key);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        debug_assert!(
            out.windows(2)
                .all(|w| (scan_hash(&w[0]), &w[0]) < (scan_hash(&w[1]), &w[1])),
            "pages are in scan order"
        );
        out
    }

    /// Namespaces L1 has held an entry of since it started.
    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces
            .entries()
            .map(|(n, _)| n.to_owned())
            .collect()
    }

    /// The background sweep: drops entries that are expired past their grace or belong to a
    /// flushed generation; returns how many were dropped.
    pub fn purge_expired_sync(&self) -> u64 {
        let now = self.now();
        // ids are dense (assigned in creation order), so a Vec maps id -> generation.
        let mut generations = vec![u64::MAX; self.namespaces.len()];
        for ns in self.namespaces.values() {
            generations[ns.id as usize] = ns.generation.load(Ordering::Acquire);
        }
        let expired = Cell::new(0u64);
        let stale_gen = Cell::new(0u64);
        let gone = std::cell::RefCell::new(Vec::new());
        for pool in self.pools() {
            pool.retain(|k, s| {
                let keep = if generations.get(k.ns as usize) != Some(&s.generation) {
                    stale_gen.set(stale_gen.get() + 1);
                    false
                } else if !s.is_retained(now) {
                    expired.set(expired.get() + 1);
                    false
                } else {
                    true
                };
                if !keep {
                    gone.borrow_mut().push((k.ns, k.key.clone()));
                }
                keep
            });
        }
        // ids are dense, so a Vec maps id -> pool too.
        let mut pools: Vec<Option<Arc<Pool>>> = vec![None; generations.len()];
        for ns in self.namespaces.values() {
            pools[ns.id as usize] = Some(ns.pool.clone());
        }
        for (id, key) in gone.into_inner() {
            if let Some(Some(pool)) = pools.get(id as usize) {
                self.index.remove_unless_held(id, key, |k| {
                    pool.peek(&L1KeyRef { ns: id, key: k }).is_some()
                });
            }
        }
        self.counters.expirations.add(expired.get());
        expired.get() + stale_gen.get()
    }
}

#[async_trait]
impl Tier for MemoryTier {
    fn layer(&self) -> Layer {
        Layer::L1
    }

    async fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, TierError> {
        Ok(self.get_entry(namespace, key))
    }

    async fn get_stale(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, TierError> {
        Ok(self.get_stale_entry(namespace, key))
    }

    async fn set(
        &self,
        namespace: &str,
        key: Bytes,
        entry: Entry,
    ) -> Result<SetOutcome, TierError> {
        self.set_sync(namespace, key, entry)
    }

    async fn remove(&self, namespace: &str, key: &[u8]) -> Result<bool, TierError> {
        Ok(self.remove_sync(namespace, key))
    }

    fn key_count(&self, namespace: &str) -> Option<u64> {
        Some(MemoryTier::key_count(self, namespace))
    }

    async fn remove_version(
        &self,
        namespace: &str,
        key: &[u8],
        version: Version,
    ) -> Result<bool, TierError> {
        Ok(self.remove_version_sync(namespace, key, version))
    }

    async fn scan_keys(
        &self,
        namespace: &str,
        from: ScanFrom<'_>,
        limit: usize,
    ) -> Result<Vec<Bytes>, TierError> {
        Ok(self.scan_keys_sync(namespace, from, limit))
    }

    async fn namespaces(&self) -> Result<Vec<String>, TierError> {
        Ok(self.namespace_names())
    }

    async fn invalidate_pattern(&self, namespace: &str, pattern: &Glob) -> Result<u64, TierError> {
        Ok(self.remove_where(namespace, |k, _| pattern.matches(k)))
    }

    async fn invalidate_tag(&self, namespace: &str, tag: &[u8]) -> Result<u64, TierError> {
        Ok(self.remove_where(namespace, |_, s| s.has_tag(tag)))
    }

    async fn flush_namespace(&self, namespace: &str) -> Result<(), TierError> {
        self.flush_namespace_sync(namespace);
        Ok(())
    }

    async fn purge_expired(&self) -> Result<u64, TierError> {
        Ok(self.purge_expired_sync())
    }

    fn health(&self) -> TierHealth {
        TierHealth::Up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_fits_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::size_of::<L1Key>(), 40);
    }

    #[test]
    fn slot_round_trips_an_entry() {
        let mut e = Entry::new(Bytes::from_static(b"v"), Version::from_parts(9, 1));
        assert_eq!(Slot::new(e.clone(), 3).into_entry(), e);
        e.expires_at_ms = Some(100);
        e.stale_until_ms = Some(200);
        e.tags = Tags::new(["a"]);
        let s = Slot::new(e.clone(), 3);
        assert!(s.has_tag(b"a") && !s.is_fresh(100) && s.is_retained(150));
        assert_eq!(s.into_entry(), e);
    }

    fn entry(v: &'static [u8], version: u64, expires: Option<u64>) -> Entry {
        let mut e = Entry::new(Bytes::from_static(v), Version::from_parts(version, 0));
        e.expires_at_ms = expires;
        e
    }

    /// Pages of the ordered index list every held key once, in order, and nothing removed,
    /// evicted, expired or flushed.
    #[test]
    fn pages_list_each_held_key_once_in_order() {
        let clock = crate::time::ManualClock::new(1_000);
        let l1 = MemoryTier::new(
            MemoryTierConfig::with_capacity(64 * 1024 * 1024),
            Arc::new(clock.clone()),
        )
        .unwrap();
        for i in 0..5_000u32 {
            let key = Bytes::from(format!("k{i:05}"));
            let expires = (i % 10 == 0).then_some(2_000);
            l1.set_sync("ns", key, entry(b"v", 1, expires)).unwrap();
        }
        l1.set_sync("other", Bytes::from_static(b"k00001"), entry(b"v", 1, None))
            .unwrap();
        for i in (1..5_000).step_by(7) {
            l1.remove_sync("ns", format!("k{i:05}").as_bytes());
        }
        l1.remove_where("ns", |k, _| k.ends_with(b"3"));
        clock.set(3_000); // every tenth key expired
        let page = |after: Option<&[u8]>| l1.scan_keys_sync("ns", ScanFrom::resume(after), 10);
        let mut all = Vec::new();
        let mut after: Option<Bytes> = None;
        loop {
            let p = page(after.as_deref());
            assert!(p.len() <= 10);
            after = p.last().cloned();
            all.extend(p.iter().cloned());
            if p.len() < 10 {
                break;
            }
        }
        let mut want: Vec<Bytes> = (0..5_000u32)
            .filter(|i| i % 10 != 0 && (i % 7 != 1 || *i == 0) && i % 10 != 3)
            .map(|i| Bytes::from(format!("k{i:05}")))
            .collect();
        crate::scan::sort_keys(&mut want);
        assert_eq!(all, want);
        // From a hash: exactly the keys whose hash is at least that.
        let mid = scan_hash(&want[want.len() / 2]);
        let from_mid = l1.scan_keys_sync("ns", ScanFrom::at_hash(mid), usize::MAX);
        assert_eq!(from_mid, want[want.len() / 2..]);
        // Counted: every indexed key, the expired ones too until they are swept.
        assert_eq!(
            l1.key_count("ns") as usize,
            want.len() + (0..5_000).filter(|i| i % 10 == 0 && i % 7 != 1).count()
        );
        // Flushed: nothing listed or counted at once; a write after the flush counts.
        l1.flush_namespace_sync("ns");
        assert!(page(None).is_empty());
        assert_eq!(l1.key_count("ns"), 0);
        l1.set_sync("ns", Bytes::from_static(b"new"), entry(b"v", 2, None))
            .unwrap();
        assert_eq!(l1.key_count("ns"), 1);
        l1.remove_sync("ns", b"new");
        l1.purge_expired_sync();
        let indexed: usize = l1
            .index
            .shards
            .iter()
            .map(|s| s.lock().values().map(|set| set.len()).sum::<usize>())
            .sum();
        assert_eq!(indexed, 1, "only the other namespace's key is left");
        assert_eq!(
            l1.scan_keys_sync("other", ScanFrom::START, 10),
            vec![Bytes::from_static(b"k00001")]
        );
    }

    /// Entries pushed out by capacity leave the index too.
    #[test]
    fn evicted_keys_leave_the_index() {
        let clock = crate::time::ManualClock::new(1_000);
        let l1 =
            MemoryTier::new(MemoryTierConfig::with_capacity(256 * 1024), Arc::new(clock)).unwrap();
        for i in 0..20_000u32 {
            l1.set_sync("ns", Bytes::from(format!("key{i}")), entry(b"v", 1, None))
                .unwrap();
        }
        let held = l1.entry_count() as usize;
        let indexed: usize = l1
            .index
            .shards
            .iter()
            .map(|s| s.lock().values().map(|set| set.len()).sum::<usize>())
            .sum();
        assert!(held < 20_000, "some were evicted: {held}");
        assert_eq!(indexed, held, "the index holds exactly the held keys");
        assert_eq!(l1.key_count("ns") as usize, held);
        assert_eq!(
            l1.scan_keys_sync("ns", ScanFrom::START, usize::MAX).len(),
            held
        );
    }
}
