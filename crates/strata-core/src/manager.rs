//! The tiered manager behind [`Cache`]: L1 → L2 → L3 lookup with promotion, concurrent
//! write-through, invalidation by key, pattern, tag and namespace, and single-flight loading.
//!
//! Ordering rules that keep layers coherent on one node:
//! - every write carries a [`Version`] from the node's hybrid logical clock and no layer
//!   replaces a newer version with an older one, so a slow promotion cannot undo a newer `set`;
//! - a value read for `get_or_load` is stamped when the load *starts*, so a `set` made while
//!   the loader ran wins over the loaded value;
//! - each namespace has an invalidation epoch, bumped *before* a pattern, tag or namespace
//!   invalidation removes anything and again after it is done, with a count of those in
//!   progress; a removal of one key marks its key's slot instead (`floors::Stamps`:
//!   dropping while under way, stamped when done). A promotion or loaded value is kept only
//!   if no such invalidation is in progress, the epoch it started under is still current
//!   after the store, and no removal of its key's slot is under way or stamped since it
//!   started (for a promotion, no write of the slot either; a load's own write stamps it);
//!   else the store is undone, so an invalidation that overlaps a slow read is never undone
//!   by that read.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::changes::{ChangeListener, Changed};
use crate::entry::{Entry, Limits, Tags};
use crate::error::{CacheError, LoaderError, TierError};
use crate::flight::{Flights, Role, follow};
use crate::glob::Glob;
use crate::memory::MemoryTier;
use crate::namespace::{MAX_NAMESPACES, Namespace, NamespacePolicy, validate_name};
use crate::ns_table::{Found, NsTable};
use crate::ops::{self, Change, Effect, KeyOp, MultiOp, OpLimits, Reply, Ttl};
use crate::scan::ScanFrom;
use crate::stats::{self, CacheStats};
use crate::tier::{Layer, SetOutcome, Tier, TierHealth};
use crate::time::{Clock, SystemClock, duration_ms};
use crate::version::{HybridClock, Version};
use crate::view::{CacheHealth, StatsSnapshot};

/// Logs a layer's failure. A layer that is down (`Unavailable`) fails every call until it
/// recovers and has already said why when it went down (and health shows it), so those are
/// logged at debug level, not once per request; real operation failures are warnings. Both
/// are counted in the layer's `errors`.
fn log_layer_error(layer: Layer, err: &TierError, what: &str) {
    match err {
        TierError::Unavailable(_) => tracing::debug!(%layer, error = %err, "{what}"),
        TierError::Failed(_) => tracing::warn!(%layer, error = %err, "{what}"),
    }
}

type LookupResult = Result<Option<Bytes>, CacheError>;

/// The future of [`Cache::get`]: complete at once on an L1 hit, boxed only on a miss.
#[must_use = "futures do nothing unless awaited"]
pub struct Lookup<'a>(LookupState<'a>);

enum LookupState<'a> {
    Ready(Option<LookupResult>),
    Pending(Pin<Box<dyn Future<Output = LookupResult> + Send + 'a>>),
}

impl Future for Lookup<'_> {
    type Output = LookupResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LookupResult> {
        match &mut self.0 {
            LookupState::Ready(result) => match result.take() {
                Some(r) => Poll::Ready(r),
                None => panic!("Lookup polled after completion"),
            },
            LookupState::Pending(fut) => fut.as_mut().poll(cx),
        }
    }
}

impl std::fmt::Debug for Lookup<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.0 {
            LookupState::Ready(_) => "ready",
            LookupState::Pending(_) => "pending",
        };
        f.debug_tuple("Lookup").field(&state).finish()
    }
}

/// Options of one `set`.
#[derive(Debug, Clone, Default)]
pub struct SetOptions {
    /// The TTL; `None` uses the namespace's `default_ttl`.
    pub ttl: Option<Duration>,
    /// Store with no expiry at all (Redis's `PERSIST`), ignoring `ttl` and the namespace's
    /// `default_ttl`. Refused with [`CacheError::PolicyViolation`] where the namespace has a
    /// `max_ttl`.
    pub persist: bool,
    /// Expire at this instant (milliseconds since the Unix epoch, on the cache's clock)
    /// instead of after `ttl`: Redis's `EXAT`/`PXAT`. Checked against `max_ttl` like a TTL.
    pub expires_at_ms: Option<u64>,
    /// Tags for `invalidate_tag`.
    pub tags: Tags,
}

impl SetOptions {
    /// Options with this TTL.
    pub fn ttl(ttl: Duration) -> Self {
        Self {
            ttl: Some(ttl),
            ..Self::default()
        }
    }

    /// Adds tags.
    pub fn with_tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<Bytes>,
    {
        self.tags = Tags::new(tags);
        self
    }
}

/// Options of one `get_or_load`.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// TTL and tags of the stored value.
    pub set: SetOptions,
    /// Keep the value this long past its expiry and serve it if a later load fails
    /// (stale-if-error). TTL + grace must fit the namespace's `max_ttl`.
    pub stale_if_error: Option<Duration>,
}

pub(crate) struct NsState {
    /// Set when the slot is first used, and never changed: a reclaimed slot is reused only
    /// for a namespace of the default policy, which every reclaimable namespace has.
    pub(crate) policy: NamespacePolicy,
    /// Configured by name ([`CacheBuilder::namespace`]): never reclaimed.
    configured: bool,
    /// Pinned ([`Cache::pin_namespace`]): never reclaimed.
    pinned: AtomicBool,
    /// Clients that selected it ([`Cache::hold_namespace`]): not reclaimed while any does.
    holders: AtomicU64,
    /// Bumped before and after every pattern, tag or namespace invalidation in the
    /// namespace (not a removal of one key: decision 93); see the module docs.
    epoch: AtomicU64,
    /// Those invalidations of the namespace in progress.
    invalidating: AtomicU64,
    /// The namespace's removal floors (decision 91): raised when a pattern, tag or
    /// namespace invalidation drops copies here; a write of a key they match, below them,
    /// undoes its own copies.
    floors: crate::floors::NsFloors,
}

/// How many times a fresh write that a shared tier found superseded is stamped again
/// ([`Cache::write_through`]). Each retry follows a write of the key that another node
/// made while this one was under way; past these, the write is acknowledged as superseded
/// by the last of them.
const RESTAMPS: u32 = 8;

/// What [`Cache::write_to_layers`] did.
enum Written {
    /// The write stands (or stands on this node's layers alone, as documented there).
    Done,
    /// The shared tier holds a newer version of the key and kept it; this write's local
    /// copies were undone.
    Superseded,
}

/// A change this node makes, between its shared-tier step and its local drops (or its
/// mirror, for [`Cache::execute`]): if its future is dropped there (cancelled), the local
/// drops run in a task of their own ([`Cache::drop_local`] and its kin: floors first, then
/// L1 and L3). Borrows until then: nothing is allocated unless it is cancelled.
struct UnfinishedDrop<'a> {
    cache: &'a Cache,
    namespace: &'a str,
    change: Changed<'a>,
    /// For a write of this node's own (a key `change`): its version. Only copies up to it
    /// go (a newer write of the key, still under way here, keeps its own), and L3's queued
    /// writes are waited for before a second drop (the write's own may land after the
    /// first).
    write: Option<Version>,
    armed: bool,
}

/// What [`UnfinishedDrop`] drops, owned.
enum OwnedChange {
    Key(Vec<u8>),
    Write(Vec<u8>, Version),
    Pattern(Vec<u8>),
    Tag(Vec<u8>),
    Namespace,
}

impl<'a> UnfinishedDrop<'a> {
    fn new(cache: &'a Cache, namespace: &'a str, change: Changed<'a>) -> Self {
        Self {
            cache,
            namespace,
            change,
            write: None,
            armed: true,
        }
    }

    /// For a write of `key` at `version` on this node.
    fn write(cache: &'a Cache, namespace: &'a str, key: &'a [u8], version: Version) -> Self {
        // Built whole: a `..Self::new(..)` base would be a guard of its own, dropped (and
        // fired) at once.
        Self {
            cache,
            namespace,
            change: Changed::Key(key),
            write: Some(version),
            armed: true,
        }
    }

    fn finished(&mut self) {
        self.armed = false;
    }
}

impl Drop for UnfinishedDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let change = match (self.change, self.write) {
            (Changed::Key(k), Some(v)) => OwnedChange::Write(k.to_vec(), v),
            (change, _) => match change {
                Changed::Key(k) => OwnedChange::Key(k.to_vec()),
                Changed::Pattern { pattern, .. } => OwnedChange::Pattern(pattern.to_vec()),
                Changed::Tag { tag, .. } => OwnedChange::Tag(tag.to_vec()),
                Changed::Namespace(_) => OwnedChange::Namespace,
                _ => return,
            },
        };
        let cache = self.cache.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to finish on: L1's copies at least, synchronously.
            if let Some(l1) = &cache.inner.l1 {
                match &change {
                    OwnedChange::Key(k) => {
                        l1.remove_sync(self.namespace, k);
                    }
                    OwnedChange::Write(k, v) => {
                        l1.remove_version_sync(self.namespace, k, *v);
                    }
                    _ => l1.flush_namespace_sync(self.namespace),
                }
            }
            return;
        };
        let ns = self.namespace.to_owned();
        let below = match &change {
            // Copies up to the write's own version: older ones too (L3's, which a read
            // may visit first), never a newer write's.
            OwnedChange::Write(_, v) => Version::from_u64(v.as_u64().saturating_add(1)),
            // Copies of writes that begin after this moment stay (a write the shared tier
            // skipped has no other copy).
            _ => cache.inner.hlc.tick(cache.inner.clock.now_ms()),
        };
        runtime.spawn(async move {
            let _ = match change {
                OwnedChange::Key(k) | OwnedChange::Write(k, _) => {
                    // Again once L3 has taken every write queued so far: a copy this call
                    // queued there (its write, or its mirror) may land after the first.
                    let _ = cache.drop_local(&ns, &k, Some(below)).await;
                    match &cache.inner.l3 {
                        Some(l3) if (**l3).settle().await.is_ok() => {
                            cache.drop_local(&ns, &k, Some(below)).await
                        }
                        _ => Ok(0),
                    }
                }
                OwnedChange::Pattern(p) => cache.drop_local_pattern(&ns, &p).await,
                OwnedChange::Tag(t) => cache.drop_local_tag(&ns, &t).await,
                OwnedChange::Namespace => cache.drop_local_namespace(&ns).await.map(|()| 0),
            };
        });
    }
}

/// A promotion's copies, stored and not yet checked ([`Cache::promote`]): if the promotion
/// is cancelled there, they are removed (L1's at once, the others' in a task of their own).
struct UncheckedPromotion<'a> {
    l1: Option<&'a Arc<MemoryTier>>,
    namespace: &'a str,
    key: &'a Bytes,
    version: Version,
    targets: &'a [Arc<dyn Tier>],
    armed: bool,
}

impl Drop for UncheckedPromotion<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(l1) = self.l1 {
            l1.remove_version_sync(self.namespace, self.key, self.version);
        }
        let runtime = tokio::runtime::Handle::try_current().ok();
        for tier in self.targets.iter().filter(|t| t.layer() != Layer::L1) {
            let (ns, key, version, tier) = (
                self.namespace.to_owned(),
                self.key.clone(),
                self.version,
                tier.clone(),
            );
            if let Some(rt) = &runtime {
                rt.spawn(async move {
                    let _ = tier.remove_version(&ns, &key, version).await;
                    // The copy may still be queued (L3's group commit): again once it
                    // has landed.
                    if tier.settle().await.is_ok() {
                        let _ = tier.remove_version(&ns, &key, version).await;
                    }
                });
            }
        }
    }
}

impl NsState {
    /// Marks an invalidation in progress until the guard drops (also when the invalidating
    /// future is cancelled): the epoch is bumped at both ends, and a promotion or load that
    /// checks while one runs, or started before one ended, is undone.
    fn begin_invalidation(&self) -> InvalidationGuard<'_> {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        // SeqCst, with the table's check of the slot after it: a reclaim of the slot either
        // sees this invalidation (and keeps the slot) or the caller sees the reclaim.
        self.invalidating.fetch_add(1, Ordering::SeqCst);
        InvalidationGuard(self)
    }

    /// Whether a copy made under `epoch` may have raced with an invalidation.
    fn raced(&self, epoch: u64) -> bool {
        self.epoch.load(Ordering::Acquire) != epoch || self.invalidating.load(Ordering::Acquire) > 0
    }
}

struct InvalidationGuard<'a>(&'a NsState);

/// [`Cache::drop_local_everything`] in progress until it drops (also when cancelled): the
/// epoch floor moves at both ends, and the count of those in progress is up meanwhile.
struct EmptyingEverything<'a>(&'a Inner);

impl<'a> EmptyingEverything<'a> {
    fn begin(inner: &'a Inner) -> Self {
        inner.epoch_floor.fetch_add(1, Ordering::SeqCst);
        inner.emptying_everything.fetch_add(1, Ordering::SeqCst);
        Self(inner)
    }
}

impl Drop for EmptyingEverything<'_> {
    fn drop(&mut self) {
        self.0.epoch_floor.fetch_add(1, Ordering::SeqCst);
        self.0.emptying_everything.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for InvalidationGuard<'_> {
    fn drop(&mut self) {
        // Bump before leaving: a promotion that read a slower layer before that layer was
        // invalidated, and checks after this point, sees the change.
        self.0.epoch.fetch_add(1, Ordering::AcqRel);
        self.0.invalidating.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client's hold on a namespace it selected ([`Cache::hold_namespace`]): the namespace is
/// not reclaimed while any hold on it lives.
pub struct NamespaceHold {
    cache: Cache,
    namespace: String,
}

impl NamespaceHold {
    /// The namespace held.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

impl std::fmt::Debug for NamespaceHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("NamespaceHold")
            .field(&self.namespace)
            .finish()
    }
}

impl Drop for NamespaceHold {
    fn drop(&mut self) {
        // The hold kept the namespace in its slot (under the table's lock for both steps).
        self.cache
            .inner
            .namespaces
            .with_live(&self.namespace, |_, s| {
                let _ = s
                    .holders
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            });
    }
}

/// Builds a [`Cache`] from any subset of layers.
pub struct CacheBuilder {
    l1: Option<Arc<MemoryTier>>,
    l2: Option<Arc<dyn Tier>>,
    l3: Option<Arc<dyn Tier>>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    default_policy: NamespacePolicy,
    policies: Vec<(String, NamespacePolicy)>,
    version_tag: Option<u8>,
    refuse_on_l3_fault: bool,
    l3_first: bool,
    l3_keeps_writes: bool,
    multi_load_limit: usize,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        Self {
            l1: None,
            l2: None,
            l3: None,
            clock: Arc::new(SystemClock),
            limits: Limits::default(),
            default_policy: NamespacePolicy::default(),
            policies: Vec::new(),
            version_tag: None,
            refuse_on_l3_fault: false,
            l3_first: false,
            l3_keeps_writes: true,
            multi_load_limit: MULTI_LOADED_BYTES,
        }
    }
}

impl CacheBuilder {
    /// Uses `l1` as the memory layer.
    pub fn l1(mut self, l1: Arc<MemoryTier>) -> Self {
        self.l1 = Some(l1);
        self
    }

    /// Uses `tier` as the shared layer (cluster owner or Redis).
    pub fn l2(mut self, tier: Arc<dyn Tier>) -> Self {
        self.l2 = Some(tier);
        self
    }

    /// Uses `tier` as the disk layer.
    pub fn l3(mut self, tier: Arc<dyn Tier>) -> Self {
        self.l3 = Some(tier);
        self
    }

    /// The clock for expiry and versions (the same one the tiers use).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Size limits for keys, values and tags.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Ends every version this cache stamps in `tag` (see [`HybridClock::with_tag`]): a
    /// cluster member's tag, so that two members never stamp the same version.
    pub fn version_tag(mut self, tag: u8) -> Self {
        self.version_tag = Some(tag);
        self
    }

    /// The policy of namespaces that are not configured by name.
    pub fn default_policy(mut self, policy: NamespacePolicy) -> Self {
        self.default_policy = policy;
        self
    }

    /// Most bytes of values one multi-key operation (a transaction, a script, `MSETNX`,
    /// `RENAME`, `COPY`; [`Cache::execute_multi`]) may hold: the current values it reads
    /// before it runs (an L3 value is a copy of its own) and the values it writes until the
    /// writes are made; never less than twice the largest value allowed (a `RENAME` of
    /// one reads it and writes it). Past it the operation is refused with
    /// [`CacheError::MultiLoadTooLarge`] and changes nothing. Default
    /// [`MULTI_LOADED_BYTES`].
    pub fn multi_load_limit(mut self, bytes: usize) -> Self {
        self.multi_load_limit = bytes;
        self
    }

    /// With `true`, writes to namespaces that use L3 fail with [`CacheError::L3Failing`]
    /// while L3 reports a write fault ([`Tier::write_fault`]: not open, or changes it failed
    /// to apply outstanding), as Redis refuses writes with `MISCONF` when it cannot persist.
    /// Deletes and invalidations are still taken: they cannot make L3 serve the past. With
    /// `false` (the default, right for a cache) writes keep being served by the other layers.
    pub fn refuse_writes_on_l3_fault(mut self, refuse: bool) -> Self {
        self.refuse_on_l3_fault = refuse;
        self
    }

    /// With `true`, a read that misses L1 visits L3 before L2. Right where L3 is kept
    /// exactly as coherent as L1 (a cluster member drops both on every invalidation it
    /// applies), so that a local disk read replaces a network round trip, and a restarted
    /// member's proven L3 serves its previous working set without asking the owners.
    /// Default `false`: L2 first.
    pub fn l3_before_l2(mut self, first: bool) -> Self {
        self.l3_first = first;
        self
    }

    /// With `false`, and an L2 to hold what is written, a write keeps no L3 copy of its own:
    /// it drops L3's older copy of the key instead, and L3 holds what this node reads (its
    /// promotions from L2). Saves L3's write of every write (a fifth of a cluster write's
    /// CPU, docs/benchmarks.md); a restarted node then comes back warm with what it read,
    /// not what it wrote. Without an L2, L3 is the only layer that survives a restart, and
    /// keeps every write whatever this says. Default `true`.
    pub fn l3_keeps_writes(mut self, keep: bool) -> Self {
        self.l3_keeps_writes = keep;
        self
    }

    /// The policy of one named namespace.
    pub fn namespace(mut self, name: &str, policy: NamespacePolicy) -> Self {
        self.policies.push((name.to_owned(), policy));
        self
    }

    /// Checks the policies and builds the cache.
    pub fn build(self) -> Result<Cache, String> {
        self.default_policy
            .validate()
            .map_err(|e| format!("namespace_defaults: {e}"))?;
        let namespaces = NsTable::default();
        for (name, policy) in &self.policies {
            Namespace::new(name).map_err(|e| e.to_string())?;
            policy
                .validate()
                .map_err(|e| format!("namespaces.{name}: {e}"))?;
            namespaces
                .get_or_create(
                    name,
                    |_, _| {
                        Ok::<_, String>(NsState {
                            policy: policy.clone(),
                            configured: true,
                            pinned: AtomicBool::new(true),
                            holders: AtomicU64::new(0),
                            epoch: AtomicU64::new(0),
                            invalidating: AtomicU64::new(0),
                            floors: Default::default(),
                        })
                    },
                    |_, _| Err("a configured namespace cannot reuse a slot".to_owned()),
                )
                .map_err(|e| format!("namespaces.{name}: {e}"))?;
        }
        let l3_write_around = !self.l3_keeps_writes && self.l2.is_some();
        let multi_load_limit = self
            .multi_load_limit
            .max(self.limits.max_value_bytes.saturating_mul(2));
        Ok(Cache {
            inner: Arc::new(Inner {
                l1: self.l1,
                l2: self.l2,
                l3: self.l3,
                clock: self.clock,
                hlc: self
                    .version_tag
                    .map_or_else(HybridClock::new, HybridClock::with_tag),
                floors: crate::floors::Floors::default(),
                everything_floor: AtomicU64::new(0),
                stamps: crate::floors::Stamps::default(),
                l3_write_around,
                limits: self.limits,
                default_policy: self.default_policy,
                namespaces,
                epoch_floor: AtomicU64::new(0),
                emptying_everything: AtomicU64::new(0),
                local_held: AtomicBool::new(false),
                reclaimed: AtomicU64::new(0),
                flights: Arc::new(Flights::default()),
                stats: CacheStats::default(),
                refuse_on_l3_fault: self.refuse_on_l3_fault,
                l3_first: AtomicBool::new(self.l3_first),
                l3_serving: AtomicBool::new(true),
                script_engine: std::sync::OnceLock::new(),
                listener: std::sync::OnceLock::new(),
                read_gate: std::sync::OnceLock::new(),
                multi_load_limit,
            }),
        })
    }
}

/// Most writes of one [`Cache::set_many`] under way at once: L3's largest commit group.
const SET_MANY_GROUP: usize = 256;

/// Default of [`CacheBuilder::multi_load_limit`]: 256 MiB, sixteen values of the default
/// largest size (or twice the largest value allowed, when that is more).
pub const MULTI_LOADED_BYTES: usize = 256 * 1024 * 1024;

/// The bytes of values one multi-key operation holds, bounded by
/// [`CacheBuilder::multi_load_limit`] ([`Cache::multi_load`]). A layer that executes
/// multi-key operations itself (a cluster's primary, the Redis bridge) charges what it
/// reads and writes the same way. The bound is the operation's own: a node-wide one
/// refused ordinary concurrent `RENAME`s of large values (review helper-120); many
/// operations at once are bounded as many clients' replies are, client by client.
#[derive(Debug)]
pub struct MultiLoad {
    held: usize,
    limit: usize,
}

impl MultiLoad {
    /// Charges a value the operation holds (a current entry it read, a value it will
    /// write): [`CacheError::MultiLoadTooLarge`] when the operation would then hold more
    /// than the limit; the caller must apply nothing after an error. A value is charged
    /// after it was read, so an operation holds at most one value past the limit.
    pub fn charge(&mut self, bytes: usize) -> Result<(), CacheError> {
        self.held = self.held.saturating_add(bytes);
        if self.held > self.limit {
            return Err(CacheError::MultiLoadTooLarge { limit: self.limit });
        }
        Ok(())
    }

    /// The operation's bound, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Charges each present entry's value ([`MultiLoad::charge`]).
    pub fn charge_entries<'a>(
        &mut self,
        entries: impl IntoIterator<Item = Option<&'a Entry>>,
    ) -> Result<(), CacheError> {
        for e in entries.into_iter().flatten() {
            self.charge(e.value.len())?;
        }
        Ok(())
    }

    /// Charges the values `effects` write ([`MultiLoad::charge`]).
    pub fn charge_writes(&mut self, effects: &[ops::MultiEffect]) -> Result<(), CacheError> {
        for fx in effects {
            if let Effect::Write { value, .. } = &fx.effect {
                self.charge(value.len())?;
            }
        }
        Ok(())
    }
}

struct Inner {
    l1: Option<Arc<MemoryTier>>,
    l2: Option<Arc<dyn Tier>>,
    l3: Option<Arc<dyn Tier>>,
    clock: Arc<dyn Clock>,
    hlc: HybridClock,
    /// Versions below which this node's own copies of a key are unwanted (decision 91).
    floors: crate::floors::Floors,
    /// Raised when this node empties every namespace ([`Cache::drop_local_everything`]): a
    /// write below it undoes its own copies (decision 91).
    everything_floor: AtomicU64,
    /// Writes and drops of each key (by slot) under way, and when one of each last
    /// finished: a promotion whose read began before, or that checks while one is under
    /// way, is undone, as it may carry the value that write replaced into a layer that no
    /// longer holds the write's (L1 after an eviction, or L3 that keeps no writes), or the
    /// value that drop removed (decisions 92 and 93).
    stamps: crate::floors::Stamps,
    /// [`CacheBuilder::l3_keeps_writes`] off, with an L2.
    l3_write_around: bool,
    limits: Limits,
    default_policy: NamespacePolicy,
    namespaces: NsTable<NsState>,
    /// Where a namespace's epoch starts, and what a namespace that does not exist is at:
    /// above every epoch of a reclaimed namespace, so that a promotion that began under a
    /// reclaimed incarnation is undone (see [`Cache::reclaim_empty_namespaces`]).
    epoch_floor: AtomicU64,
    /// [`Cache::drop_local_everything`] calls in progress: a promotion or load of any
    /// namespace that checks meanwhile is undone (also of one this node has no state for).
    emptying_everything: AtomicU64,
    /// [`Cache::hold_local_copies`]: promotions and loads are undone while it is set.
    local_held: AtomicBool,
    /// Namespaces given back by [`Cache::reclaim_empty_namespaces`].
    reclaimed: AtomicU64,
    flights: Arc<Flights>,
    stats: CacheStats,
    refuse_on_l3_fault: bool,
    l3_first: AtomicBool,
    l3_serving: AtomicBool,
    script_engine: std::sync::OnceLock<Arc<dyn ops::ScriptEngine>>,
    listener: std::sync::OnceLock<Arc<dyn ChangeListener>>,
    /// [`Cache::set_read_gate`].
    read_gate: std::sync::OnceLock<Arc<dyn ReadGate>>,
    /// [`CacheBuilder::multi_load_limit`] ([`MultiLoad`]).
    multi_load_limit: usize,
}

/// What a [`Cache`]'s reads ask before they answer, when set ([`Cache::set_read_gate`]): a
/// cluster member's pause gate (`strata::cluster::pause`). A member paused (SIGSTOP, a VM
/// freeze, a long stall) past failure detection holds copies the others changed meanwhile;
/// until its periodic tick has noticed the pause and dropped them, the gate is closed and
/// reads wait. Without it an embedded node's reads served those copies after a pause, where
/// the same node's RESP commands waited.
pub trait ReadGate: Send + Sync {
    /// Whether reads may answer now. Asked by every read, an L1 hit included: it must cost
    /// a few atomic loads, not a lock or a system call.
    fn is_open(&self) -> bool;

    /// Waits until the gate opens, or until it gives up waiting (a gate whose opener is
    /// late for good must not hang reads); the read goes on either way.
    fn wait_open(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// A cheap, cloneable handle to one node's layers. Reads and writes go straight to the
/// layers (never through an actor mailbox).
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// A handle to a [`Cache`] that does not keep it alive ([`Cache::downgrade`]): for a layer
/// that needs the cache it belongs to (the cluster tier applying invalidations to every
/// layer), so that the two do not hold each other after the node is dropped — which kept
/// every layer's memory, L3's database and the cluster's sockets for the life of the
/// process.
#[derive(Clone, Debug, Default)]
pub struct WeakCache {
    inner: std::sync::Weak<Inner>,
}

impl WeakCache {
    /// The cache, while anything else still holds it.
    pub fn upgrade(&self) -> Option<Cache> {
        self.inner.upgrade().map(|inner| Cache { inner })
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("l1", &self.inner.l1.is_some())
            .field("l2", &self.inner.l2.is_some())
            .field("l3", &self.inner.l3.is_some())
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// A builder with no layers, the system clock and default policies.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// A handle that does not keep this cache alive ([`WeakCache`]).
    pub fn downgrade(&self) -> WeakCache {
        WeakCache {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// The memory layer, if configured.
    pub fn l1(&self) -> Option<&Arc<MemoryTier>> {
        self.inner.l1.as_ref()
    }

    /// The tier filling `layer`, if configured.
    pub fn tier(&self, layer: Layer) -> Option<Arc<dyn Tier>> {
        match layer {
            Layer::L1 => self.inner.l1.clone().map(|t| t as Arc<dyn Tier>),
            Layer::L2 => self.inner.l2.clone(),
            Layer::L3 => self.inner.l3.clone(),
        }
    }

    /// The raw counters (for metric exporters).
    pub fn raw_stats(&self) -> &CacheStats {
        &self.inner.stats
    }

    /// Now, on the cache's clock (milliseconds since the Unix epoch): the time base of
    /// `Entry::expires_at_ms` and `SetOptions::expires_at_ms`.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// A mark of this moment for [`Cache::changed_since`] (the process's monotonic clock, in
    /// nanoseconds; never 0).
    pub fn change_mark(&self) -> u64 {
        crate::floors::mono_ns()
    }

    /// Whether a write or a removal of `key` on this node (a change made here, mirrored
    /// from an authority, or an invalidation received) is under way or finished since
    /// `mark` ([`Cache::change_mark`]) — or one of another key that shares its stamp slot
    /// (1 in 16,384): true is "maybe", false is "certainly not". `WATCH` of a key that is
    /// absent uses it: absent again at `EXEC` does not prove it was never written between.
    pub fn changed_since(&self, namespace: &str, key: &[u8], mark: u64) -> bool {
        self.inner.stamps.disturbed_since(namespace, key, mark)
    }

    /// The policy that applies to `namespace`.
    pub fn policy(&self, namespace: &str) -> NamespacePolicy {
        self.inner
            .namespaces
            .read(namespace, |_, s| s.policy.clone())
            .unwrap_or_else(|| self.inner.default_policy.clone())
    }

    /// `namespace`'s state, created (up to `max` namespaces) if it does not exist.
    fn ns_entry(&self, namespace: &str, max: usize) -> Result<Found<'_, NsState>, CacheError> {
        validate_name(namespace)?;
        let refuse =
            |existing: usize| (existing >= max).then_some(CacheError::TooManyNamespaces { max });
        self.inner.namespaces.get_or_create(
            namespace,
            |existing, _| match refuse(existing) {
                Some(e) => Err(e),
                None => Ok(NsState {
                    policy: self.inner.default_policy.clone(),
                    configured: false,
                    pinned: AtomicBool::new(false),
                    holders: AtomicU64::new(0),
                    epoch: AtomicU64::new(self.inner.epoch_floor.load(Ordering::Acquire)),
                    invalidating: AtomicU64::new(0),
                    floors: Default::default(),
                }),
            },
            |s, existing| {
                if let Some(e) = refuse(existing) {
                    return Err(e);
                }
                // Reclaimed slots held default-policy namespaces only (module docs of
                // `ns_table`): the policy in the slot is the default.
                debug_assert!(!s.configured);
                s.pinned.store(false, Ordering::Release);
                s.holders.store(0, Ordering::Release);
                s.epoch.fetch_max(
                    self.inner.epoch_floor.load(Ordering::Acquire),
                    Ordering::AcqRel,
                );
                Ok(())
            },
        )
    }

    /// `namespace`'s state (created if it does not exist). Its slot may be reclaimed and
    /// reused while the caller holds it; every use tolerates that: a reuse moves the epoch
    /// past every earlier one, so a copy checked against it is undone.
    fn ns_state(&self, namespace: &str) -> Result<&NsState, CacheError> {
        self.ns_entry(namespace, MAX_NAMESPACES).map(|f| f.value)
    }

    /// Marks an invalidation of `namespace` in progress, on the state that holds the
    /// namespace now (a reclaim cannot take the slot meanwhile).
    fn begin_invalidation(
        &self,
        namespace: &str,
    ) -> Result<(&NsState, InvalidationGuard<'_>), CacheError> {
        loop {
            let f = self.ns_entry(namespace, MAX_NAMESPACES)?;
            let guard = f.value.begin_invalidation();
            if self.inner.namespaces.still(f.id, f.seq) {
                return Ok((f.value, guard));
            }
        }
    }

    /// Whether a copy made in `namespace` under `epoch` ([`Cache::epoch_of`]) may have raced
    /// with an invalidation (or with a reclaim of the namespace), read by name.
    fn raced_since(&self, namespace: &str, epoch: u64) -> bool {
        if self.inner.emptying_everything.load(Ordering::SeqCst) > 0
            || self.inner.local_held.load(Ordering::SeqCst)
        {
            return true;
        }
        self.inner
            .namespaces
            .read(namespace, |_, s| s.raced(epoch))
            .unwrap_or_else(|| epoch != self.inner.epoch_floor.load(Ordering::Acquire))
    }

    /// The epoch of `namespace` without creating it: a namespace that does not exist is at
    /// the floor, which is where a new one starts.
    fn epoch_of(&self, namespace: &str) -> u64 {
        self.inner
            .namespaces
            .read(namespace, |_, s| s.epoch.load(Ordering::Acquire))
            .unwrap_or_else(|| self.inner.epoch_floor.load(Ordering::Acquire))
    }

    /// The layers below L1 a read visits, in order: L2 then L3, or L3 first with
    /// [`CacheBuilder::l3_before_l2`]; L3 only when the namespace uses it and L3 is serving
    /// reads ([`Cache::set_l3_serving`]).
    fn lower_tiers(&self, policy_use_l3: bool) -> impl Iterator<Item = &Arc<dyn Tier>> {
        let l3 = self
            .inner
            .l3
            .as_ref()
            .filter(|_| policy_use_l3 && self.inner.l3_serving.load(Ordering::Acquire));
        let l2 = self.inner.l2.as_ref();
        let order = if self.inner.l3_first.load(Ordering::Acquire) {
            [l3, l2]
        } else {
            [l2, l3]
        };
        order.into_iter().flatten()
    }

    /// While `held`, a copy read from a slower layer or loaded is not kept in the faster
    /// ones (its promotion undoes itself), so reads keep going to the shared tier. A cluster
    /// member back from a pause holds its copies until the others count it live again:
    /// invalidations of what it would copy may not reach it meanwhile. (Writes' own copies
    /// are the shared tier's to refuse: [`Tier::admits_copy`].)
    pub fn hold_local_copies(&self, held: bool) {
        self.inner.local_held.store(held, Ordering::SeqCst);
    }

    /// Takes L3 off the read path (`false`) or puts it back (`true`, the default). Writes
    /// and invalidations still reach it while it is off: how a restarted cluster member
    /// keeps its L3 out of reads until it has proven the copies current.
    pub fn set_l3_serving(&self, serving: bool) {
        self.inner.l3_serving.store(serving, Ordering::Release);
    }

    /// Whether L3 is on the read path.
    pub fn l3_serving(&self) -> bool {
        self.inner.l3_serving.load(Ordering::Acquire)
    }

    /// Reads visit L3 before L2 (`true`) or after it (see [`CacheBuilder::l3_before_l2`]).
    /// The Redis bridge switches it: L3 first while its invalidation channel is subscribed
    /// and L3 proven, L2 first otherwise.
    pub fn set_l3_first(&self, first: bool) {
        self.inner.l3_first.store(first, Ordering::Release);
    }

    /// The value of `key` in `namespace`, from the fastest layer that has it fresh.
    ///
    /// A hit in a slower layer is promoted into the faster ones. A layer that fails is
    /// counted and skipped (the read is a miss there), so a broken L3 or Redis never turns a
    /// read into an error.
    ///
    /// The L1 lookup happens here, synchronously, before any future exists: an L1 hit returns
    /// a future that is already complete, and only a miss allocates the future that visits
    /// the slower layers.
    #[inline]
    pub fn get<'a>(&'a self, namespace: &'a str, key: &'a [u8]) -> Lookup<'a> {
        if let Err(e) = self.inner.limits.check_key(key) {
            return Lookup(LookupState::Ready(Some(Err(e))));
        }
        if let Some(gate) = self.closed_gate() {
            return Lookup(LookupState::Pending(Box::pin(async move {
                gate.wait_open().await;
                self.get_open(namespace, key).await
            })));
        }
        self.get_open(namespace, key)
    }

    /// The read gate, when one is set and closed ([`Cache::set_read_gate`]).
    #[inline]
    fn closed_gate(&self) -> Option<&Arc<dyn ReadGate>> {
        self.inner.read_gate.get().filter(|g| !g.is_open())
    }

    /// Waits while the read gate is closed ([`Cache::set_read_gate`]).
    async fn wait_for_gate(&self) {
        if let Some(gate) = self.closed_gate() {
            gate.wait_open().await;
        }
    }

    /// [`Cache::get`] once the read gate is open (or gave up).
    #[inline]
    fn get_open<'a>(&'a self, namespace: &'a str, key: &'a [u8]) -> Lookup<'a> {
        if let Some(l1) = &self.inner.l1 {
            let stats = self.inner.stats.layer(Layer::L1);
            let (stripe, sample) = stats::hot_path_local();
            let start = sample.then(Instant::now);
            let hit = l1.get_value(namespace, key);
            if let Some(start) = start {
                stats.latency.record_since(start);
            }
            if let Some(value) = hit {
                stats.hits.incr_at(stripe);
                return Lookup(LookupState::Ready(Some(Ok(Some(value)))));
            }
            stats.misses.incr_at(stripe);
        }
        Lookup(LookupState::Pending(Box::pin(async move {
            Ok(self.get_below_l1(namespace, key).await?.map(|e| e.value))
        })))
    }

    /// Like [`Cache::get`], with the entry's version, expiry and tags.
    pub async fn get_entry(
        &self,
        namespace: &str,
        key: &[u8],
    ) -> Result<Option<Entry>, CacheError> {
        self.inner.limits.check_key(key)?;
        self.wait_for_gate().await;
        if let Some(l1) = &self.inner.l1 {
            let stats = self.inner.stats.layer(Layer::L1);
            if let Some(e) = l1.get_entry(namespace, key) {
                stats.hits.incr();
                return Ok(Some(e));
            }
            stats.misses.incr();
        }
        self.get_below_l1(namespace, key).await
    }

    async fn get_below_l1(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, CacheError> {
        validate_name(namespace)?;
        let epoch = self.epoch_of(namespace);
        let read_at = crate::floors::mono_ns();
        let use_l3 = self.policy_use_l3(namespace);
        for tier in self.lower_tiers(use_l3) {
            let layer = tier.layer();
            let stats = self.inner.stats.layer(layer);
            let start = Instant::now();
            let found = tier.get(namespace, key).await;
            stats.latency.record_since(start);
            match found {
                Ok(Some(entry)) => {
                    stats.hits.incr();
                    crate::changes::note_served(key, entry.expires_at_ms);
                    self.promote(namespace, key, &entry, layer, epoch, read_at)
                        .await;
                    return Ok(Some(entry));
                }
                Ok(None) => stats.misses.incr(),
                Err(err) => {
                    stats.errors.incr();
                    log_layer_error(layer, &err, "read failed; treated as a miss");
                }
            }
        }
        self.inner.stats.misses.incr();
        Ok(None)
    }

    fn policy_use_l3(&self, namespace: &str) -> bool {
        self.inner
            .namespaces
            .read(namespace, |_, s| s.policy.use_l3)
            .unwrap_or(self.inner.default_policy.use_l3)
    }

    /// Copies a hit from `from` into the faster layers: L1 always, and L3 for an L2 hit when
    /// the namespace uses L3. Undone when a pattern, tag or namespace invalidation raced
    /// with it (`epoch`), or when a write or a removal of the key (of its slot) is under
    /// way or finished after the read began (`read_at`): the hit may be the value that
    /// write replaced or that removal removed.
    async fn promote(
        &self,
        namespace: &str,
        key: &[u8],
        entry: &Entry,
        from: Layer,
        epoch: u64,
        read_at: u64,
    ) {
        if self.inner.stamps.disturbed_since(namespace, key, read_at) {
            // It would be undone: not stored at all.
            return;
        }
        let key = Bytes::copy_from_slice(key);
        let mut targets: Vec<Arc<dyn Tier>> = Vec::with_capacity(2);
        if let Some(l1) = &self.inner.l1 {
            targets.push(l1.clone());
        }
        if from == Layer::L2
            && self.policy_use_l3(namespace)
            && let Some(l3) = &self.inner.l3
        {
            targets.push(l3.clone());
        }
        // Cancelled before its check below (the reader gave up during L3's store), the
        // copies go: unchecked, they may be the value a racing write replaced.
        let mut unchecked = UncheckedPromotion {
            l1: self.inner.l1.as_ref(),
            namespace,
            key: &key,
            version: entry.version,
            targets: &targets,
            armed: true,
        };
        for tier in &targets {
            let _ = self.record_set(
                tier.layer(),
                tier.set(namespace, key.clone(), entry.clone()).await,
            );
        }
        unchecked.armed = false;
        if self.raced_since(namespace, epoch)
            || self.inner.stamps.disturbed_since(namespace, &key, read_at)
        {
            self.undo(namespace, &key, entry.version, &targets).await;
        }
    }

    /// Removes a copy of `version` that raced with an invalidation, then tells the change
    /// listener: a reader may have been served the copy in between, after the invalidation's
    /// own notice went out.
    async fn undo(&self, namespace: &str, key: &[u8], version: Version, tiers: &[Arc<dyn Tier>]) {
        for tier in tiers {
            if let Err(err) = tier.remove_version(namespace, key, version).await {
                self.inner.stats.layer(tier.layer()).errors.incr();
                tracing::warn!(layer = %tier.layer(), error = %err, "could not undo a racing copy");
            }
        }
        self.notify(Changed::Dropped(key));
    }

    fn record_set<T>(&self, layer: Layer, result: Result<T, TierError>) -> Result<T, TierError> {
        let stats = self.inner.stats.layer(layer);
        match &result {
            Ok(_) => stats.sets.incr(),
            Err(err) => {
                stats.errors.incr();
                log_layer_error(layer, err, "write failed");
            }
        }
        result
    }

    /// Stores `value` with the namespace's default TTL.
    pub async fn set(
        &self,
        namespace: &str,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<Version, CacheError> {
        self.set_with(namespace, key, value, SetOptions::default())
            .await
    }

    /// Stores `value` in every configured layer, concurrently.
    ///
    /// Fails with [`CacheError::PolicyViolation`] when the TTL exceeds the namespace's
    /// `max_ttl`, and with a size error when a limit is passed; in both cases nothing is
    /// written anywhere. Returns when L1 and L2 (if configured) hold the value; an L3 failure
    /// is counted and logged, not returned, because L3 is a local best-effort copy.
    pub async fn set_with(
        &self,
        namespace: &str,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        options: SetOptions,
    ) -> Result<Version, CacheError> {
        let (key, value) = (key.into(), value.into());
        let state = self.ns_state(namespace)?;
        self.inner.limits.check_write(&key, &value, &options.tags)?;
        let now = self.inner.clock.now_ms();
        let entry = self.make_entry(namespace, state, value, &options, None, now, None)?;
        self.write_through(namespace, state, key, entry, true).await
    }

    /// Executes a conditional or read-modify-write operation on `key` ([`crate::ops`]):
    /// at L2's authority for the key when L2 has one (a cluster's primary, Redis behind the
    /// bridge), else over this cache's layers — then the caller must hold a lock that keeps
    /// other writers of `key` on this node out until it returns, as the server's key locks
    /// do. The change is mirrored into this node's L1 and L3. A policy or size refusal is an
    /// error and changes nothing; a command's own refusal (`not an integer`) is
    /// [`Reply::Error`].
    pub async fn execute(
        &self,
        namespace: &str,
        key: Bytes,
        op: &KeyOp,
    ) -> Result<Reply, CacheError> {
        self.inner.limits.check_key(&key)?;
        self.wait_for_gate().await;
        let state = self.ns_state(namespace)?;
        if let Some(l2) = &self.inner.l2 {
            let start = Instant::now();
            // Cancelled before its mirror is done, the command's outcome is unknown here:
            // this node's older copies go, in a task of their own (a miss at worst).
            let mut unfinished = UnfinishedDrop::new(self, namespace, Changed::Key(&key));
            let done = l2.execute(self, namespace, &key, op).await;
            if !matches!(done, Ok(Some(_))) {
                unfinished.finished();
            }
            self.inner
                .stats
                .layer(Layer::L2)
                .latency
                .record_since(start);
            match done {
                Ok(Some(ex)) => {
                    self.mirror(namespace, state, l2, &key, &ex.change).await;
                    unfinished.finished();
                    return Ok(ex.reply);
                }
                Ok(None) => {}
                Err(source) => return Err(self.l2_failed(source)),
            }
        }
        let old = self.get_entry(namespace, &key).await?;
        let now = self.inner.clock.now_ms();
        let (effect, reply) = ops::apply(op, old.as_ref(), now, self.op_limits());
        match effect {
            Effect::None => {}
            Effect::Delete => {
                self.invalidate(namespace, &key).await?;
            }
            Effect::Write {
                value,
                ttl,
                keep_tags,
            } => {
                let entry = self.entry_for(namespace, &key, value, ttl, keep_tags, old.as_ref())?;
                self.write_through(namespace, state, key, entry, true)
                    .await?;
            }
        }
        Ok(reply)
    }

    /// Executes an operation on several keys ([`crate::ops::MultiOp`]: `MSETNX`, `RENAME`)
    /// as [`Cache::execute`] does one: at L2's authority when it has one (the caller has
    /// checked that the keys share it), else over this cache's layers under the caller's
    /// locks of every key.
    pub async fn execute_multi(&self, namespace: &str, op: &MultiOp) -> Result<Reply, CacheError> {
        let keys: Vec<Bytes> = op.keys().into_iter().map(Bytes::copy_from_slice).collect();
        for k in &keys {
            self.inner.limits.check_key(k)?;
        }
        self.wait_for_gate().await;
        let state = self.ns_state(namespace)?;
        if let Some(l2) = &self.inner.l2 {
            match l2.execute_multi(self, namespace, op).await {
                Ok(Some(ex)) => {
                    for (k, change) in &ex.changes {
                        self.mirror(namespace, state, l2, k, change).await;
                    }
                    return Ok(ex.reply);
                }
                Ok(None) => {}
                Err(source) => return Err(self.l2_failed(source)),
            }
        }
        // What the operation reads and writes is held until it ends, and bounded: a script
        // naming a hundred 16 MiB keys that only L3 holds would otherwise copy each into
        // memory before it runs.
        let mut load = self.multi_load();
        let mut current = Vec::with_capacity(keys.len());
        for k in &keys {
            let entry = self.get_entry(namespace, k).await?;
            load.charge_entries([entry.as_ref()])?;
            current.push(entry);
        }
        let refs: Vec<Option<&Entry>> = current.iter().map(Option::as_ref).collect();
        let now = self.inner.clock.now_ms();
        let (effects, reply) = self.apply_multi(op, &refs, now);
        load.charge_writes(&effects)?;
        // Every entry is built (and checked) before anything is written: a policy refusal
        // changes nothing.
        let mut writes = Vec::new();
        for fx in &effects {
            if let Effect::Write {
                value,
                ttl,
                keep_tags,
            } = &fx.effect
            {
                if let Some(e) = &current[fx.key] {
                    self.observe_version(e.version);
                }
                let source = current[fx.tags_from].as_ref();
                let entry = self.entry_for(
                    namespace,
                    &keys[fx.key],
                    value.clone(),
                    *ttl,
                    *keep_tags,
                    source,
                )?;
                writes.push((keys[fx.key].clone(), entry));
            }
        }
        // Every write is checked against what would refuse it before the first one is made:
        // a transaction or script is not left half applied by a value too large for L1 or
        // a failing disk (a Redis bridge failing in between still can: docs/protocol.md).
        for (k, entry) in &writes {
            self.storable(namespace, state, k, entry)?;
        }
        // Stored before the call returns, not behind: a transaction's or a `RENAME`'s writes
        // go with removals, which are on disk at once, and a crash must not keep the
        // removals without the writes (the key gone from both names).
        for (k, entry) in writes {
            self.write_through(namespace, state, k, entry, false)
                .await?;
        }
        // A removal of a key found nowhere is skipped here, as a plain `DEL` of one is: no
        // layer of this node gave a copy (one an L3 read error hid stays, as it does for a
        // plain `DEL`). A cluster's primary replicates and announces it all the same.
        for fx in &effects {
            if fx.effect == Effect::Delete && current[fx.key].is_some() {
                self.invalidate(namespace, &keys[fx.key]).await?;
            }
        }
        Ok(reply)
    }

    /// A count of the values one multi-key operation holds, against
    /// [`CacheBuilder::multi_load_limit`].
    pub fn multi_load(&self) -> MultiLoad {
        MultiLoad {
            held: 0,
            limit: self.inner.multi_load_limit,
        }
    }

    /// An L2 failure of an operation, counted.
    fn l2_failed(&self, source: TierError) -> CacheError {
        self.inner.stats.layer(Layer::L2).errors.incr();
        CacheError::Tier {
            layer: Layer::L2,
            source,
        }
    }

    /// Installs what hears of every change of a key on this node ([`crate::changes`]),
    /// L1's evictions included; once (later calls are ignored and return false).
    pub fn set_change_listener(&self, listener: Arc<dyn ChangeListener>) -> bool {
        if self.inner.listener.set(listener.clone()).is_err() {
            return false;
        }
        // An L1 eviction loses the key only where L1 is the only layer; elsewhere the key is
        // still below, unchanged, and no one needs telling. An expiry L1 finds is the key's
        // wherever it is kept: a reader told of it then drops a copy it read just before.
        if let Some(l1) = &self.inner.l1 {
            l1.set_expiry_listener(listener.clone());
            if self.inner.l2.is_none() && self.inner.l3.is_none() {
                l1.set_change_listener(listener);
            }
        }
        true
    }

    /// Tells the change listener of `change` made outside this cache's own paths (a
    /// cluster's owner store emptied after a gap, say).
    pub fn announce(&self, change: Changed<'_>) {
        self.notify(change);
    }

    #[inline]
    fn notify(&self, change: Changed<'_>) {
        if let Some(l) = self.inner.listener.get() {
            l.changed(change);
        }
    }

    /// The expiry of `key` in this node's L1 (`Some(None)`: it never expires; a past time:
    /// it expired), without counting a read; `None` when L1 holds no copy of it.
    pub fn l1_expiry(&self, namespace: &str, key: &[u8]) -> Option<Option<u64>> {
        self.inner.l1.as_ref()?.peek_expiry(namespace, key)
    }

    /// Makes every read ([`Cache::get`], [`Cache::get_entry`], [`Cache::get_or_load`],
    /// [`Cache::execute`], [`Cache::execute_multi`]) ask `gate` first and wait while it is
    /// closed (see [`ReadGate`]). A cluster member's node sets its pause gate here; only the
    /// first call takes effect (`false` after that).
    pub fn set_read_gate(&self, gate: Arc<dyn ReadGate>) -> bool {
        self.inner.read_gate.set(gate).is_ok()
    }

    /// Installs what runs scripts ([`ops::MultiOp::Script`]); once (later calls are
    /// ignored).
    pub fn set_script_engine(&self, engine: Arc<dyn ops::ScriptEngine>) {
        let _ = self.inner.script_engine.set(engine);
    }

    /// [`ops::apply_multi`] with this cache's limits and script engine: what an authority
    /// (this node, a cluster primary, the bridge) computes a multi-key operation with.
    pub fn apply_multi(
        &self,
        op: &ops::MultiOp,
        current: &[Option<&Entry>],
        now_ms: u64,
    ) -> (Vec<ops::MultiEffect>, Reply) {
        let engine = self.inner.script_engine.get().map(|e| &**e);
        ops::apply_multi_with(op, current, now_ms, self.op_limits(), engine)
    }

    /// Whether L1 can hold `entry` under `key` (it fits one of its shards), or there is no
    /// L1: a write that L1 refuses leaves the key out of L1, where a read's promotion of an
    /// older copy from a slower layer is not refused by a newer one.
    pub fn l1_can_hold(&self, namespace: &str, key: &[u8], entry: &Entry) -> bool {
        self.inner.l1.as_ref().is_none_or(|l1| {
            entry.value.len() <= l1.largest_value(namespace, key.len(), entry.tags.byte_len())
        })
    }

    /// The bounds [`ops::apply`] checks, from this cache's limits.
    pub fn op_limits(&self) -> OpLimits {
        OpLimits {
            max_value: self.inner.limits.max_value_bytes,
        }
    }

    /// The entry an operation's write makes (`ttl` resolved, tags of `old` kept when
    /// `keep_tags`), checked against the limits and the namespace's policy, stamped with a
    /// version newer than `old`'s: what an authority stores ([`Cache::execute`], a cluster
    /// primary).
    pub fn entry_for(
        &self,
        namespace: &str,
        key: &[u8],
        value: Bytes,
        ttl: Ttl,
        keep_tags: bool,
        old: Option<&Entry>,
    ) -> Result<Entry, CacheError> {
        let state = self.ns_state(namespace)?;
        let mut options = SetOptions::default();
        if keep_tags && let Some(e) = old {
            options.tags = e.tags.clone();
        }
        match ttl.resolve(old) {
            Ttl::AtMs(at) => options.expires_at_ms = Some(at),
            Ttl::Persist => options.persist = true,
            Ttl::Default | Ttl::Keep => {}
        }
        self.inner.limits.check_write(key, &value, &options.tags)?;
        if let Some(e) = old {
            self.observe_version(e.version);
        }
        let now = self.inner.clock.now_ms();
        self.make_entry(namespace, state, value, &options, None, now, None)
    }

    /// Mirrors an authority's change into this node's own copies (L1, and L3 when the
    /// namespace uses it). A written copy the authority's tier no longer admits once it is
    /// stored (an invalidation newer than it, recorded meanwhile or before: a pattern that
    /// ran while the write replicated) is removed again ([`Tier::admits_copy`]).
    async fn mirror(
        &self,
        namespace: &str,
        state: &NsState,
        authority: &Arc<dyn Tier>,
        key: &Bytes,
        change: &Change,
    ) {
        match change {
            Change::None => {}
            Change::Written(entry) => {
                self.observe_version(entry.version);
                // Until the copies here are in (or L3's older one dropped): see
                // `write_to_layers`.
                let _writing = self.inner.stamps.begin_write(namespace, key);
                if let Some(l1) = &self.inner.l1 {
                    let _ = self.record_set(
                        Layer::L1,
                        l1.set_sync(namespace, key.clone(), entry.clone()),
                    );
                }
                let l3 = self.inner.l3.as_ref().filter(|_| state.policy.use_l3);
                if let Some(l3) = l3 {
                    if self.inner.l3_write_around {
                        let _ = self.record_invalidation(
                            Layer::L3,
                            l3.remove_older(namespace, key, entry.version).await,
                        );
                    } else {
                        let _ = self.record_set(
                            Layer::L3,
                            l3.set(namespace, key.clone(), entry.clone()).await,
                        );
                    }
                }
                // The tier inside the `Arc` (with the `testsuite` feature, `Arc<dyn Tier>`
                // is a tier too, and a call on it would resolve there).
                if !self.admits_own_copy(namespace, state, key, entry, true)
                    || !(**authority).admits_copy(namespace, key, entry)
                {
                    if let Some(l1) = &self.inner.l1 {
                        l1.remove_version_sync(namespace, key, entry.version);
                    }
                    if let Some(l3) = l3 {
                        let _ = l3.remove_version(namespace, key, entry.version).await;
                    }
                }
                self.notify(Changed::Key(key));
            }
            Change::Removed(version) => {
                self.observe_version(*version);
                let _ = self
                    .invalidate_layers(namespace, false, Changed::Key(key), None, |t| async move {
                        t.remove(namespace, key).await.map(u64::from)
                    })
                    .await;
            }
        }
    }

    /// Stores many values in one namespace with the same options: the warming call (a service
    /// preloading its hot set at start) and Redis's `MSET`. Every entry is checked first, so a
    /// size or policy violation anywhere fails the whole call and writes nothing. Of a key
    /// given more than once, the last value is written, as Redis's `MSET` sets its pairs in
    /// order. Returns how many entries (distinct keys) were written.
    pub async fn set_many<I, K, V>(
        &self,
        namespace: &str,
        entries: I,
        options: SetOptions,
    ) -> Result<usize, CacheError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Bytes>,
        V: Into<Bytes>,
    {
        let state = self.ns_state(namespace)?;
        let now = self.inner.clock.now_ms();
        let mut checked = Vec::new();
        for (k, v) in entries {
            let (key, value) = (k.into(), v.into());
            self.inner.limits.check_write(&key, &value, &options.tags)?;
            let entry = self.make_entry(namespace, state, value, &options, None, now, None)?;
            checked.push((key, entry));
        }
        // Written concurrently, two writes of one key would race (a cluster's primary orders
        // them as they reach it): only a key's last pair is written.
        if checked.len() > 1 {
            let mut seen = std::collections::HashSet::with_capacity(checked.len());
            checked.reverse();
            checked.retain(|(k, _)| seen.insert(k.clone()));
            checked.reverse();
        }
        let n = checked.len();
        // Written concurrently, so that the layers can batch them (L3 commits them in one
        // group), a group of [`SET_MANY_GROUP`] at a time: one `join_all` over every pair
        // of a 40,000-key `MSET` polled them all on each wake-up, quadratic in the keys
        // (5.4 s, against 0.4 s for 10,000; review helper-118). The first error is returned
        // after every write has finished.
        let mut first_error = None;
        let mut pairs = checked.into_iter();
        loop {
            let group: Vec<(Bytes, Entry)> = pairs.by_ref().take(SET_MANY_GROUP).collect();
            if group.is_empty() {
                break;
            }
            let results = futures_util::future::join_all(
                group
                    .into_iter()
                    .map(|(key, entry)| self.write_through(namespace, state, key, entry, true)),
            )
            .await;
            if first_error.is_none() {
                first_error = results.into_iter().find_map(Result::err);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// Builds an entry checked against the namespace policy; `version` is ticked now unless
    /// the caller ticked it earlier (a load stamps its start).
    #[allow(clippy::too_many_arguments)]
    fn make_entry(
        &self,
        namespace: &str,
        state: &NsState,
        value: Bytes,
        options: &SetOptions,
        stale_grace: Option<Duration>,
        now: u64,
        version: Option<Version>,
    ) -> Result<Entry, CacheError> {
        let requested = match options.expires_at_ms {
            Some(at) => Some(Duration::from_millis(at.saturating_sub(now).max(1))),
            None => options.ttl,
        };
        let ttl = match state.policy.effective_ttl(namespace, requested) {
            Ok(_) if options.persist => match state.policy.max_ttl {
                Some(allowed) => {
                    self.inner.stats.policy_violations.incr();
                    return Err(CacheError::PolicyViolation {
                        namespace: namespace.to_owned(),
                        requested: Duration::MAX,
                        allowed,
                    });
                }
                None => None,
            },
            Ok(ttl) => ttl,
            Err(err) => {
                self.inner.stats.policy_violations.incr();
                return Err(err);
            }
        };
        let expires_at_ms = match options.expires_at_ms {
            Some(at) if !options.persist => Some(at),
            _ => ttl.map(|t| now.saturating_add(duration_ms(t))),
        };
        let stale_until_ms = match (stale_grace, ttl) {
            (Some(grace), Some(ttl)) => {
                // The grace keeps the bytes around, so it counts against max_ttl (G5).
                let retention = ttl.saturating_add(grace);
                if let Some(allowed) = state.policy.max_ttl
                    && retention > allowed
                {
                    self.inner.stats.policy_violations.incr();
                    return Err(CacheError::PolicyViolation {
                        namespace: namespace.to_owned(),
                        requested: retention,
                        allowed,
                    });
                }
                Some(now.saturating_add(duration_ms(retention)))
            }
            _ => None,
        };
        Ok(Entry {
            value,
            version: version.unwrap_or_else(|| self.inner.hlc.tick(now)),
            expires_at_ms,
            stale_until_ms,
            tags: options.tags.clone(),
        })
    }

    /// What [`Cache::write_through`] would refuse up front: a failing L3 that refuses
    /// writes, or an entry too large for L1 with no other layer to hold it.
    fn storable(
        &self,
        namespace: &str,
        state: &NsState,
        key: &[u8],
        entry: &Entry,
    ) -> Result<(), CacheError> {
        if self.inner.refuse_on_l3_fault
            && state.policy.use_l3
            && let Some(reason) = self.inner.l3.as_ref().and_then(|t| (**t).write_fault())
        {
            return Err(CacheError::L3Failing { reason });
        }
        let elsewhere = self.inner.l2.is_some() || (self.inner.l3.is_some() && state.policy.use_l3);
        if let Some(l1) = &self.inner.l1
            && !elsewhere
        {
            let max = l1.largest_value(namespace, key.len(), entry.tags.byte_len());
            if entry.value.len() > max {
                return Err(CacheError::ValueTooLarge {
                    len: entry.value.len(),
                    max,
                });
            }
        }
        Ok(())
    }

    /// Writes `entry` to every layer ([`Cache::write_to_layers`]), then tells the change
    /// listener (whether or not every layer took it: one that did not may hold it anyway).
    /// `fresh`: the entry's version was ticked for this write (not stamped before a load),
    /// so L3 may store it behind ([`Tier::set_fresh`]); and a shared tier that holds a
    /// newer version of the key does not make it a write that lost: it is stamped again,
    /// past the version held, and written again ([`RESTAMPS`]). A client's `SET` that
    /// reaches the shared tier after another node's write of the key replaces it, as in
    /// one Redis — though this node's clock had not yet heard of that write's version.
    /// Returns the version written.
    async fn write_through(
        &self,
        namespace: &str,
        state: &NsState,
        key: Bytes,
        mut entry: Entry,
        fresh: bool,
    ) -> Result<Version, CacheError> {
        let mut restamps = 0;
        let done = loop {
            match self
                .write_to_layers(namespace, state, key.clone(), &entry, fresh)
                .await
            {
                Ok(Written::Superseded) if fresh && restamps < RESTAMPS => {
                    restamps += 1;
                    if let Some(held) = self.shared_version(namespace, &key).await {
                        self.observe_version(held);
                    }
                    entry.version = self.inner.hlc.tick(self.inner.clock.now_ms());
                }
                done => break done.map(|_| entry.version),
            }
        };
        self.notify(Changed::Key(&key));
        done
    }

    /// The version of `key` the shared tier holds, if it answers with one.
    async fn shared_version(&self, namespace: &str, key: &[u8]) -> Option<Version> {
        let l2 = self.inner.l2.as_ref()?;
        l2.get(namespace, key)
            .await
            .ok()
            .flatten()
            .map(|e| e.version)
    }

    async fn write_to_layers(
        &self,
        namespace: &str,
        state: &NsState,
        key: Bytes,
        entry: &Entry,
        fresh: bool,
    ) -> Result<Written, CacheError> {
        let version = entry.version;
        if self.inner.refuse_on_l3_fault
            && state.policy.use_l3
            // `(**t)`: the tier itself, never a wrapper impl on `Arc<dyn Tier>` that might
            // not forward (the testsuite feature's once did not: writes were taken).
            && let Some(reason) = self.inner.l3.as_ref().and_then(|t| (**t).write_fault())
        {
            return Err(CacheError::L3Failing { reason });
        }
        // From L1's store until every slower layer's step is done (also if this call is
        // cancelled), a promotion of this key undoes itself: it may carry the value this
        // write replaces, into an L1 that evicted this write's copy or an L3 that does not
        // keep it (decision 92). Without slower layers the stamp still tells `WATCH` that
        // the key changed ([`Cache::changed_since`]).
        let _writing = self.inner.stamps.begin_write(namespace, &key);
        if let Some(l1) = &self.inner.l1 {
            // L1 is synchronous; a failure there only costs a future miss.
            let outcome = self.record_set(
                Layer::L1,
                l1.set_sync(namespace, key.clone(), entry.clone()),
            );
            // An entry too large for L1, with no other layer to hold it, is stored nowhere:
            // an error, not an `Ok` for a write that a read will not find.
            let elsewhere =
                self.inner.l2.is_some() || (self.inner.l3.is_some() && state.policy.use_l3);
            if matches!(outcome, Ok(SetOutcome::TooLarge)) && !elsewhere {
                return Err(CacheError::ValueTooLarge {
                    len: entry.value.len(),
                    max: l1.largest_value(namespace, key.len(), entry.tags.byte_len()),
                });
            }
        }
        let l2 = async {
            match &self.inner.l2 {
                Some(t) => Some(self.record_set(
                    Layer::L2,
                    t.set(namespace, key.clone(), entry.clone()).await,
                )),
                None => None,
            }
        };
        let l3 = self.inner.l3.as_ref().filter(|_| state.policy.use_l3);
        let l3_keeps = l3.filter(|_| !self.inner.l3_write_around);
        // Without a shared tier, this node's stamp is the key's newest anywhere: L3 may
        // store a fresh write behind (it answers reads of the key from memory meanwhile).
        let behind = fresh && self.inner.l2.is_none();
        let l3_step = async {
            match l3_keeps {
                Some(t) => Some(self.record_set(
                    Layer::L3,
                    if behind {
                        t.set_fresh(namespace, key.clone(), entry.clone()).await
                    } else {
                        t.set(namespace, key.clone(), entry.clone()).await
                    },
                )),
                None => None,
            }
        };
        // Cancelled before the shared tier answered (a caller's timeout around `set`), the
        // write's outcome there is unknown, and its copies here (L1's, and L3's once its
        // queued write lands) may be a value no other node will see: they go, with any
        // older ones (without kept writes, L3's older copy, which a read visits first), in
        // a task of their own. A miss at worst: a read then asks the shared tier.
        let mut unfinished = self
            .inner
            .l2
            .is_some()
            .then(|| UnfinishedDrop::write(self, namespace, &key, version));
        let (l2_result, l3_result) = tokio::join!(l2, l3_step);
        if let Some(t) = l3.filter(|_| self.inner.l3_write_around) {
            if matches!(
                l2_result,
                Some(Ok(SetOutcome::Stored | SetOutcome::KeptNewer))
            ) {
                // A promotion into L3 that read the older copy and lands after this drop
                // finds this write under way, or its stamp, and undoes itself.
                let _ = self
                    .record_invalidation(Layer::L3, t.remove_older(namespace, &key, version).await);
            } else if matches!(l2_result, Some(Ok(_))) {
                // The shared tier did not take it (bypassed, too large): this node's copies
                // are the write's only ones, and L3 keeps one as if it kept every write.
                let _ = self.record_set(
                    Layer::L3,
                    t.set(namespace, key.clone(), entry.clone()).await,
                );
            }
        }
        if let Some(u) = &mut unfinished {
            u.finished();
        }
        if self.inner.l2.is_none() && matches!(l3_result, Some(Ok(SetOutcome::KeptNewer))) {
            // L3 alone holds a newer version (a load stamped before a write that finished
            // first, whose L1 copy was then evicted): this older copy in L1 goes.
            if let Some(l1) = &self.inner.l1 {
                l1.remove_version_sync(namespace, &key, version);
            }
        }
        match l2_result {
            Some(Err(source)) => {
                // The shared tier did not take the write, so it is not acknowledged: do not
                // leave this node serving a value nobody else may have — in L1 or in L3,
                // which a cluster member reads first.
                self.undo(namespace, &key, version, &self.own_layers())
                    .await;
                Err(CacheError::Tier {
                    layer: Layer::L2,
                    source,
                })
            }
            Some(Ok(SetOutcome::KeptNewer)) => {
                // Another node wrote a newer version of the key to the shared tier first:
                // that write stands, so the local copies of ours go. A fresh write is then
                // stamped again and retried (`write_through`); any other is acknowledged as
                // a set that was superseded.
                self.undo(namespace, &key, version, &self.own_layers())
                    .await;
                Ok(Written::Superseded)
            }
            Some(Ok(outcome @ (SetOutcome::Stored | SetOutcome::Unconfirmed))) => {
                // A removal of the key that the shared tier ordered after this write may
                // have run here before this write's L3 copy landed (an invalidation removes
                // from L3 while L2 still works on it): once both are in, a copy the shared
                // tier no longer admits goes (the removal is on record there before it drops
                // this node's copies, so one of the two steps sees the other). The same for
                // a removal or a newer change this node heard of meanwhile: it raised the
                // key's floor when it dropped the copies (decision 91).
                // Unconfirmed (decision 94): the shared tier may hold the write, ordered
                // before such a removal; if it does not, the removal overtook the write here,
                // and this node ends where a reader of the shared tier does. Not so for the
                // everything-floor: this node raises it when it loses its own channel (a
                // Redis restart), which is no removal, and the copies here may then be the
                // write's only ones.
                let everything = outcome == SetOutcome::Stored;
                if let Some(l2) = &self.inner.l2
                    && (!self.admits_own_copy(namespace, state, &key, entry, everything)
                        || !(**l2).admits_copy(namespace, &key, entry))
                {
                    self.undo(namespace, &key, version, &self.own_layers())
                        .await;
                }
                Ok(Written::Done)
            }
            // The shared tier did not take it (bypassed, or too large for it): this node's
            // copies are the write's only ones, and a floor must not undo them.
            Some(Ok(_)) | None => Ok(Written::Done),
        }
    }

    /// Raises `key`'s removal floor before its copies here are dropped (decision 91): to
    /// `below` when only older copies go, else past every version issued so far, so that a
    /// write of the key still under way undoes the copies it stores after the drop.
    fn raise_floor(&self, namespace: &str, key: &[u8], below: Option<Version>) {
        let to = below.unwrap_or_else(|| self.inner.hlc.tick(self.inner.clock.now_ms()));
        self.inner.floors.raise(namespace, key, to);
    }

    /// Whether this node's own copy of `key` as `entry`, just stored, is still wanted: no
    /// removal of the key, no pattern, tag or namespace invalidation matching it, and no
    /// emptying of every namespace raised a floor above it meanwhile (decision 91) — that
    /// last one only with `everything`.
    fn admits_own_copy(
        &self,
        namespace: &str,
        state: &NsState,
        key: &[u8],
        entry: &Entry,
        everything: bool,
    ) -> bool {
        let version = entry.version;
        (!everything || self.inner.everything_floor.load(Ordering::SeqCst) <= version.as_u64())
            && self.inner.floors.admits(namespace, key, version)
            && state.floors.admits(key, &entry.tags, version)
    }

    /// Raises the floors that `change` names, to a fresh tick of the clock (or to `below`,
    /// for a key whose older copies only go): copies of a write still under way that this
    /// drop misses are undone by the write (decision 91).
    fn raise_floors(
        &self,
        namespace: &str,
        state: &NsState,
        change: &Changed<'_>,
        below: Option<Version>,
    ) {
        let tick = || self.inner.hlc.tick(self.inner.clock.now_ms());
        match *change {
            Changed::Key(key) => self.raise_floor(namespace, key, below),
            Changed::Pattern { pattern, .. } => {
                // Checked by the caller; a glob that does not parse raises the namespace's.
                match Glob::new(pattern) {
                    Ok(glob) => state.floors.raise_pattern(glob, tick()),
                    Err(_) => state.floors.raise_all(tick()),
                }
            }
            // No entry carries a tag longer than the limit: nothing to keep a floor for
            // (and a request-sized tag is not kept).
            Changed::Tag { tag, .. } if tag.len() > self.inner.limits.max_tag_bytes => {}
            Changed::Tag { tag, .. } => state.floors.raise_tag(Bytes::copy_from_slice(tag), tick()),
            Changed::Namespace(_) => state.floors.raise_all(tick()),
            _ => {}
        }
    }

    /// This node's own layers, L1 and L3 (those configured): where a copy of its own
    /// write is undone.
    fn own_layers(&self) -> Vec<Arc<dyn Tier>> {
        self.inner
            .l1
            .iter()
            .map(|t| t.clone() as Arc<dyn Tier>)
            .chain(self.inner.l3.iter().cloned())
            .collect()
    }

    /// Runs `op` on every configured layer (L3 only if the namespace uses it), concurrently
    /// for L2 and L3, after bumping the namespace's epoch (or marking the key's slot). An L2
    /// failure is returned; an L3 failure is counted and logged.
    async fn invalidate_everywhere<'a, F, Fut>(
        &'a self,
        namespace: &str,
        change: Changed<'_>,
        op: F,
    ) -> Result<u64, CacheError>
    where
        F: Fn(Arc<dyn Tier>) -> Fut,
        Fut: Future<Output = Result<u64, TierError>> + 'a,
    {
        self.invalidate_layers(namespace, true, change, None, op)
            .await
    }

    /// [`Cache::invalidate_everywhere`], with L2 left out when `include_l2` is false. The
    /// change listener hears of `change` once the layers have run `op` (whatever they
    /// answered: a layer that failed may have removed part of it).
    async fn invalidate_layers<'a, F, Fut>(
        &'a self,
        namespace: &str,
        include_l2: bool,
        change: Changed<'_>,
        below: Option<Version>,
        op: F,
    ) -> Result<u64, CacheError>
    where
        F: Fn(Arc<dyn Tier>) -> Fut,
        Fut: Future<Output = Result<u64, TierError>> + 'a,
    {
        // One key's removal stamps its slot (decision 93): a promotion of that key which
        // raced it undoes itself, and those of the namespace's other keys do not. The
        // others bump the namespace's epoch, which undoes every promotion under way there.
        let (state, _invalidating, _dropping) = match change {
            Changed::Key(key) => (
                self.ns_state(namespace)?,
                None,
                Some(self.inner.stamps.begin_drop(namespace, key)),
            ),
            _ => {
                let (state, guard) = self.begin_invalidation(namespace)?;
                (state, Some(guard), None)
            }
        };
        // With the shared tier in the step, it goes first: a write of this node that it
        // orders before this removal may store its copies here at any moment until the
        // removal is done there, whatever its version. Only then do the floors go up, past
        // every such write, and the copies here go; a write that stores its copies after
        // that finds the floors above it and undoes them itself (decision 91). Without it,
        // the removal is already in the shared tier's order (or there is none).
        // Cancelled from here on (a caller's timeout around `invalidate`), the copies here
        // are still dropped, by a task of their own: the shared tier may have removed the
        // key already, and this node must not go on serving it.
        let mut unfinished = None;
        let mut removed = 0u64;
        let l3 = self.inner.l3.as_ref().filter(|_| state.policy.use_l3);
        let l2_result = match self.inner.l2.as_ref().filter(|_| include_l2) {
            Some(t) => {
                unfinished = Some(UnfinishedDrop::new(self, namespace, change));
                if let Changed::Key(_) = change {
                    // One key's copies cost little to drop twice: gone now, this node stops
                    // serving them while the shared tier works (and if this call is
                    // cancelled meanwhile); the second drop below finds nothing unless a
                    // write stored copies in between.
                    if let Some(l1) = &self.inner.l1 {
                        let n = self.record_invalidation(Layer::L1, op(l1.clone()).await);
                        removed = removed.max(n.unwrap_or(0));
                    }
                    let l3_first = async {
                        match l3 {
                            Some(l3) => self.record_invalidation(Layer::L3, op(l3.clone()).await),
                            None => Ok(0),
                        }
                    };
                    let l2_step =
                        async { self.record_invalidation(Layer::L2, op(t.clone()).await) };
                    let (l2_result, l3_first) = tokio::join!(l2_step, l3_first);
                    removed = removed.max(l3_first.unwrap_or(0));
                    Some(l2_result)
                } else {
                    Some(self.record_invalidation(Layer::L2, op(t.clone()).await))
                }
            }
            None => None,
        };
        self.raise_floors(namespace, state, &change, below);
        if let Some(l1) = &self.inner.l1 {
            let n = self.record_invalidation(Layer::L1, op(l1.clone()).await);
            removed = removed.max(n.unwrap_or(0));
        }
        let l3_removed = match l3 {
            Some(t) => self
                .record_invalidation(Layer::L3, op(t.clone()).await)
                .ok(),
            None => None,
        };
        if let Some(u) = &mut unfinished {
            u.finished();
        }
        self.notify(change);
        removed = removed.max(l3_removed.unwrap_or(0));
        match l2_result {
            Some(Err(source)) => Err(CacheError::Tier {
                layer: Layer::L2,
                source,
            }),
            Some(Ok(n)) => Ok(removed.max(n)),
            None => Ok(removed),
        }
    }

    fn record_invalidation(
        &self,
        layer: Layer,
        r: Result<u64, TierError>,
    ) -> Result<u64, TierError> {
        if let Err(err) = &r {
            self.inner.stats.layer(layer).errors.incr();
            log_layer_error(layer, err, "invalidation failed");
        }
        r
    }

    /// Removes `key` from every layer; returns whether any layer held it.
    pub async fn invalidate(&self, namespace: &str, key: &[u8]) -> Result<bool, CacheError> {
        self.inner.limits.check_key(key)?;
        let n = self
            .invalidate_everywhere(namespace, Changed::Key(key), |t| async move {
                t.remove(namespace, key).await.map(u64::from)
            })
            .await?;
        Ok(n > 0)
    }

    /// Removes every key of `namespace` matching the Redis-style glob `pattern`; returns the
    /// number removed from the layer that held the most.
    pub async fn invalidate_pattern(
        &self,
        namespace: &str,
        pattern: &[u8],
    ) -> Result<u64, CacheError> {
        let glob = Glob::new(pattern)?;
        let glob = &glob;
        let change = Changed::Pattern { namespace, pattern };
        self.invalidate_everywhere(namespace, change, |t| async move {
            t.invalidate_pattern(namespace, glob).await
        })
        .await
    }

    /// Removes every entry of `namespace` tagged `tag`; returns the number removed from the
    /// layer that held the most.
    pub async fn invalidate_tag(&self, namespace: &str, tag: &[u8]) -> Result<u64, CacheError> {
        let change = Changed::Tag { namespace, tag };
        self.invalidate_everywhere(namespace, change, |t| async move {
            t.invalidate_tag(namespace, tag).await
        })
        .await
    }

    /// Empties `namespace` in every layer. O(1) in L1 (a generation bump).
    pub async fn flush_namespace(&self, namespace: &str) -> Result<(), CacheError> {
        let change = Changed::Namespace(namespace);
        self.invalidate_everywhere(namespace, change, |t| async move {
            t.flush_namespace(namespace).await.map(|()| 0)
        })
        .await
        .map(|_| ())
    }

    /// Makes this node's hybrid logical clock at least `remote` and returns its new reading:
    /// a coherence listener calls it for every version it hears of, so that this node's next
    /// writes order after writes it has seen from other nodes.
    pub fn observe_version(&self, remote: Version) -> Version {
        self.inner.hlc.observe(remote, self.inner.clock.now_ms())
    }

    /// Drops this node's own copies (L1 and L3, not L2) of `key`; with `below`, only copies
    /// older than that version. What a coherence listener does when another node changed the
    /// key in the shared tier. Returns how many copies the layer that held most dropped.
    pub async fn drop_local(
        &self,
        namespace: &str,
        key: &[u8],
        below: Option<Version>,
    ) -> Result<u64, CacheError> {
        self.inner.limits.check_key(key)?;
        self.invalidate_layers(namespace, false, Changed::Key(key), below, |t| async move {
            match below {
                None => t.remove(namespace, key).await.map(u64::from),
                Some(v) => t.remove_older(namespace, key, v).await,
            }
        })
        .await
    }

    /// Drops this node's own copies (L1 and L3) of the keys of `namespace` matching
    /// `pattern`, leaving L2 alone (see [`Cache::drop_local`]).
    pub async fn drop_local_pattern(
        &self,
        namespace: &str,
        pattern: &[u8],
    ) -> Result<u64, CacheError> {
        let glob = Glob::new(pattern)?;
        let glob = &glob;
        let change = Changed::Pattern { namespace, pattern };
        self.invalidate_layers(namespace, false, change, None, |t| async move {
            t.invalidate_pattern(namespace, glob).await
        })
        .await
    }

    /// Drops this node's own copies (L1 and L3) of the entries of `namespace` tagged `tag`,
    /// leaving L2 alone (see [`Cache::drop_local`]).
    pub async fn drop_local_tag(&self, namespace: &str, tag: &[u8]) -> Result<u64, CacheError> {
        let change = Changed::Tag { namespace, tag };
        self.invalidate_layers(namespace, false, change, None, |t| async move {
            t.invalidate_tag(namespace, tag).await
        })
        .await
    }

    /// Empties `namespace` in this node's own layers (L1 and L3), leaving L2 alone (see
    /// [`Cache::drop_local`]).
    pub async fn drop_local_namespace(&self, namespace: &str) -> Result<(), CacheError> {
        let change = Changed::Namespace(namespace);
        self.invalidate_layers(namespace, false, change, None, |t| async move {
            t.flush_namespace(namespace).await.map(|()| 0)
        })
        .await
        .map(|_| ())
    }

    /// Empties every namespace in L1, and in L3 too when `include_l3`: what a node does when
    /// it may have missed invalidations (its coherence channel dropped), so that it serves
    /// nothing it cannot vouch for. Returns how many namespaces were emptied.
    pub async fn drop_local_everything(&self, include_l3: bool) -> usize {
        let mut names = self.in_memory_namespaces();
        names.sort_unstable();
        names.dedup();
        // Every namespace's invalidation is in progress until both layers are empty, so no
        // promotion that read before the flush lands after it — also of a namespace this
        // node has no state for and L1 holds nothing of (its epoch is the floor, moved here
        // at both ends).
        let _emptying = EmptyingEverything::begin(&self.inner);
        let _invalidating: Vec<_> = names
            .iter()
            .filter_map(|n| self.begin_invalidation(n).ok())
            .collect();
        // Before any copy goes: a write still under way undoes what it stores after this
        // (decision 91).
        let to = self.inner.hlc.tick(self.inner.clock.now_ms());
        self.inner
            .everything_floor
            .fetch_max(to.as_u64(), Ordering::SeqCst);
        if let Some(l1) = &self.inner.l1 {
            for name in &names {
                l1.flush_namespace_sync(name);
            }
        }
        if include_l3 && let Some(l3) = &self.inner.l3 {
            // One step for L3 (a range delete), covering namespaces only L3 knows. If it
            // fails, L3 is untrusted until it is emptied, so it still serves nothing old.
            let _ = self.record_invalidation(Layer::L3, (**l3).flush_all().await.map(|()| 0));
        }
        self.notify(Changed::Everything);
        names.len()
    }

    /// The value of `key`, or the result of `loader` stored with `options` if no layer has it.
    ///
    /// Concurrent calls for one key on this node run the loader once; every caller gets its
    /// value or its error. A failed load is not cached: the next call runs the loader again.
    /// With `options.stale_if_error`, a failed load serves the expired value instead while it
    /// is inside its grace.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        namespace: &str,
        key: impl Into<Bytes>,
        options: LoadOptions,
        loader: F,
    ) -> Result<Bytes, CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        let key = key.into();
        let mut loader = Some(loader);
        loop {
            if let Some(value) = self.get(namespace, &key).await? {
                return Ok(value);
            }
            match self.inner.flights.join(namespace, &key) {
                Role::Follower(rx) => {
                    self.inner.stats.coalesced.incr();
                    if let Some(result) = follow(rx).await {
                        return result;
                    }
                    // The leader was cancelled; start over.
                }
                Role::Leader(guard) => {
                    let Some(loader) = loader.take() else {
                        // Only a leader consumes the loader, and a leader always returns.
                        unreachable!("get_or_load led twice")
                    };
                    let result = self.lead_load(namespace, &key, &options, loader).await;
                    guard.finish(result.clone());
                    return result;
                }
            }
        }
    }

    async fn lead_load<F, Fut, E>(
        &self,
        namespace: &str,
        key: &Bytes,
        options: &LoadOptions,
        loader: F,
    ) -> Result<Bytes, CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        // Another leader may have stored the value between our miss and taking the lead.
        if let Some(l1) = &self.inner.l1
            && let Some(v) = l1.get_value(namespace, key)
        {
            return Ok(v);
        }
        let state = self.ns_state(namespace)?;
        // By name, not from `state`: a reclaim during a long load may move the namespace to
        // another slot, and the invalidation that matters then bumps that one.
        let epoch = self.epoch_of(namespace);
        let began = crate::floors::mono_ns();
        // Stamp now, before the load, so a set made while the loader runs wins (module docs).
        let started = self.inner.clock.now_ms();
        let version = self.inner.hlc.tick(started);
        self.inner.stats.loads.incr();
        match loader().await {
            Ok(value) => {
                self.inner
                    .limits
                    .check_write(key, &value, &options.set.tags)?;
                let entry = self.make_entry(
                    namespace,
                    state,
                    value.clone(),
                    &options.set,
                    options.stale_if_error,
                    started,
                    Some(version),
                )?;
                // Stamped before the load: a write made meanwhile may be newer.
                self.write_through(namespace, state, key.clone(), entry, false)
                    .await?;
                // Its own write stamped the key's slot as written; a drop of the key, or
                // any other invalidation of the namespace, since the load began undoes it.
                if self.raced_since(namespace, epoch)
                    || self.inner.stamps.dropped_since(namespace, key, began)
                {
                    let tiers: Vec<_> = Layer::ALL.iter().filter_map(|l| self.tier(*l)).collect();
                    self.undo(namespace, key, version, &tiers).await;
                }
                Ok(value)
            }
            Err(err) => {
                self.inner.stats.load_errors.incr();
                let err = CacheError::Loader(LoaderError(Arc::from(err.into())));
                if options.stale_if_error.is_some()
                    && let Some(stale) = self.find_stale(namespace, key).await
                {
                    self.inner.stats.stale_served.incr();
                    tracing::warn!(namespace, error = %err, "loader failed; serving the stale value");
                    return Ok(stale.value);
                }
                Err(err)
            }
        }
    }

    async fn find_stale(&self, namespace: &str, key: &[u8]) -> Option<Entry> {
        for layer in Layer::ALL {
            if layer == Layer::L3 && !self.l3_serving() {
                continue; // unproven copies are not served, stale or not
            }
            if let Some(tier) = self.tier(layer)
                && let Ok(Some(e)) = tier.get_stale(namespace, key).await
            {
                return Some(e);
            }
        }
        None
    }

    /// Up to `limit` keys of `namespace` with fresh entries, in scan order ([`crate::scan`]),
    /// from `from`: the union of what L1 and the lower layers hold. A layer that fails is
    /// logged and left out (its keys may be missing from the listing, never wrong ones
    /// added). The basis of `KEYS`, `SCAN`, `DBSIZE` and `RANDOMKEY`; a page costs
    /// O(limit · log n) in L1 and one seek in L3.
    pub async fn scan_keys(
        &self,
        namespace: &str,
        from: ScanFrom<'_>,
        limit: usize,
    ) -> Result<Vec<Bytes>, CacheError> {
        Namespace::new(namespace)?;
        let mut keys = match &self.inner.l1 {
            Some(l1) => l1.scan_keys_sync(namespace, from, limit),
            None => Vec::new(),
        };
        for tier in self.lower_tiers(self.policy_use_l3(namespace)) {
            // `(**tier)`: the tier itself, never a wrapper impl on `Arc` (see testsuite).
            match (**tier).scan_keys(namespace, from, limit).await {
                Ok(more) => keys.extend(more),
                Err(e) => log_layer_error(tier.layer(), &e, "scan_keys failed"),
            }
        }
        crate::scan::sort_keys(&mut keys);
        keys.truncate(limit);
        Ok(keys)
    }

    /// How many keys of `namespace` this node holds, from the layers' counters (O(1)): the
    /// largest count of any layer it reads (each layer holds a subset of the keys, and L3,
    /// written through, usually all). An upper bound in the way Redis's `DBSIZE` is: it
    /// counts entries whose expiry passed and that are not reclaimed yet. `None` when a layer
    /// keeps no count (the Redis bridge): list the keys instead.
    pub fn key_count(&self, namespace: &str) -> Option<u64> {
        let mut n = self.l1_key_count(namespace);
        for tier in self.lower_tiers(self.policy_use_l3(namespace)) {
            n = n.max((**tier).key_count(namespace)?);
        }
        Some(n)
    }

    /// L1's count of the keys of `namespace` (0 without L1).
    fn l1_key_count(&self, namespace: &str) -> u64 {
        self.inner
            .l1
            .as_ref()
            .map_or(0, |l1| l1.key_count(namespace))
    }

    /// Returns once the writes L3 acknowledged before storing them (a single node's,
    /// [`Tier::set_fresh`]) are stored: for a caller that removes something next which must
    /// not outlive them in a crash (`MOVE`'s source after its copy).
    pub async fn settle_writes(&self) {
        // `(**l3)`: the tier itself (see testsuite). Nothing to wait for without writes
        // behind (the default): no round trip to L3's writer.
        if self.inner.l2.is_none()
            && let Some(l3) = &self.inner.l3
            && (**l3).has_writes_behind()
        {
            let _ = l3.settle().await;
        }
    }

    /// [`Cache::key_count`] once the writes L3 acknowledged before storing them (a single
    /// node's, [`Tier::set_fresh`]) are stored and counted: `DBSIZE` right after a pipeline
    /// of new keys counts them all (L1 may have evicted some) — and with a shared layer's
    /// count of the keys every node holds ([`Tier::key_count_shared`]: a cluster's, which
    /// asks the other members). Waits for L3's writer only when writes are behind.
    pub async fn key_count_settled(&self, namespace: &str) -> Option<u64> {
        self.settle_writes().await;
        let mut n = self.l1_key_count(namespace);
        for tier in self.lower_tiers(self.policy_use_l3(namespace)) {
            // `(**tier)`: the tier itself (see testsuite).
            n = n.max((**tier).key_count_shared(namespace).await?);
        }
        Some(n)
    }

    /// Whether `namespace` exists in this node's memory (written, invalidated or configured
    /// since start). Cheap: one table lookup.
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.inner.namespaces.get(namespace).is_some()
    }

    /// Creates `namespace` unless it exists, refusing when `max` namespaces (or the table's
    /// [`crate::namespace::MAX_NAMESPACES`]) already exist; the check and the creation are
    /// one step, so concurrent callers cannot race past `max`.
    pub fn open_namespace(&self, namespace: &str, max: usize) -> Result<(), CacheError> {
        self.ns_entry(namespace, max.min(MAX_NAMESPACES))
            .map(|_| ())
    }

    /// Creates `namespace` unless it exists and keeps it from being reclaimed while empty
    /// ([`Cache::reclaim_empty_namespaces`]): what a server does for its numbered databases.
    pub fn pin_namespace(&self, namespace: &str) -> Result<(), CacheError> {
        loop {
            self.ns_entry(namespace, MAX_NAMESPACES)?;
            // Under the table's lock: a reclaim between the two steps is seen here.
            if self
                .inner
                .namespaces
                .with_live(namespace, |_, s| s.pinned.store(true, Ordering::Release))
                .is_some()
            {
                return Ok(());
            }
        }
    }

    /// Opens `namespace` as [`Cache::open_namespace`] does (refused past `max`) and keeps it
    /// from being reclaimed until the returned hold drops: what a server's `SELECT name`
    /// takes for its connection, so that a namespace a client has selected is not given
    /// back while the client sits idle in it (and re-created past the bound by its next
    /// write).
    pub fn hold_namespace(&self, namespace: &str, max: usize) -> Result<NamespaceHold, CacheError> {
        loop {
            self.ns_entry(namespace, max.min(MAX_NAMESPACES))?;
            // Under the table's lock: a reclaim between the two steps is seen here.
            if self
                .inner
                .namespaces
                .with_live(namespace, |_, s| s.holders.fetch_add(1, Ordering::AcqRel))
                .is_some()
            {
                return Ok(NamespaceHold {
                    cache: self.clone(),
                    namespace: namespace.to_owned(),
                });
            }
        }
    }

    /// How many namespaces exist in this node's memory (at most
    /// [`crate::namespace::MAX_NAMESPACES`]).
    pub fn namespace_count(&self) -> usize {
        self.inner.namespaces.len()
    }

    /// Gives back the slots of namespaces that hold no key in any layer this node reads
    /// (by [`Cache::key_count`]), except those configured by name: what keeps clients that
    /// create and empty namespaces (`SELECT junk1`, …, `FLUSHDB`) from filling the table for
    /// good. Also asks the lower layers to reclaim their own (the cluster's owner store).
    /// Returns how many namespaces this cache's table gave back.
    ///
    /// A reclaimed namespace is created again by its next write. Nothing is lost by a race:
    /// a write into L1 that raced with the reclaim stores again ([`MemoryTier::set_sync`]), a
    /// copy made under the reclaimed namespace is undone (the epoch floor moves past it), and
    /// a pattern, tag or namespace invalidation in progress keeps its namespace (a removal
    /// of one key needs none: its stamp is by name, decision 93). Behind the Redis bridge, which keeps
    /// no count, namespaces are not reclaimed.
    pub fn reclaim_empty_namespaces(&self) -> usize {
        let mut names: Vec<String> = self
            .inner
            .namespaces
            .entries()
            .filter(|(_, _, s)| !s.pinned.load(Ordering::Acquire))
            .map(|(n, _, _)| n)
            .collect();
        if let Some(l1) = &self.inner.l1 {
            // Names only L1 holds (a promotion needs no state here).
            names.extend(
                l1.namespace_names()
                    .into_iter()
                    .filter(|n| self.inner.namespaces.get(n).is_none()),
            );
        }
        let mut reclaimed = 0;
        for name in names {
            if self.key_count(&name) != Some(0) {
                continue;
            }
            let floor = &self.inner.epoch_floor;
            let here = self.inner.namespaces.get(&name).is_some();
            if here
                && !self.inner.namespaces.reclaim(&name, |s| {
                    if s.pinned.load(Ordering::Acquire)
                        || s.holders.load(Ordering::Acquire) > 0
                        || s.invalidating.load(Ordering::SeqCst) > 0
                    {
                        return false;
                    }
                    floor.fetch_max(s.epoch.load(Ordering::Acquire) + 1, Ordering::AcqRel);
                    true
                })
            {
                continue;
            }
            if let Some(l1) = &self.inner.l1 {
                l1.reclaim_namespace(&name);
            }
            if here {
                reclaimed += 1;
            }
        }
        for tier in [&self.inner.l2, &self.inner.l3].into_iter().flatten() {
            (**tier).reclaim_empty_namespaces();
        }
        self.inner
            .reclaimed
            .fetch_add(reclaimed as u64, Ordering::Relaxed);
        reclaimed
    }

    /// Namespaces given back since start ([`Cache::reclaim_empty_namespaces`]).
    pub fn namespaces_reclaimed(&self) -> u64 {
        self.inner.reclaimed.load(Ordering::Relaxed)
    }

    /// The namespaces configured or touched on this node, plus those L1 holds entries of
    /// (unsorted, possibly repeated).
    fn in_memory_namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.namespaces.entries().map(|(n, _, _)| n).collect();
        if let Some(l1) = &self.inner.l1 {
            names.extend(l1.namespace_names());
        }
        names
    }

    /// Namespaces that hold entries in some layer, plus those configured; sorted.
    pub async fn namespaces(&self) -> Vec<String> {
        let mut names = self.in_memory_namespaces();
        for tier in self.lower_tiers(true) {
            match (**tier).namespaces().await {
                Ok(more) => names.extend(more),
                Err(e) => log_layer_error(tier.layer(), &e, "listing namespaces failed"),
            }
        }
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Drops expired entries from every layer now (the actors also do this periodically).
    pub async fn purge_expired(&self) -> u64 {
        let mut total = 0;
        for layer in Layer::ALL {
            if let Some(tier) = self.tier(layer) {
                match tier.purge_expired().await {
                    Ok(n) => total += n,
                    Err(err) => {
                        self.inner.stats.layer(layer).errors.incr();
                        tracing::warn!(%layer, error = %err, "sweep failed");
                    }
                }
            }
        }
        total
    }

    /// Hit and miss counts, hit rate, per-layer counters and latency percentiles.
    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot::collect(
            &self.inner.stats,
            self.inner.l1.as_deref(),
            [
                self.inner.l1.is_some(),
                self.inner.l2.is_some(),
                self.inner.l3.is_some(),
            ],
        )
    }

    /// Each configured layer's health.
    pub fn health(&self) -> CacheHealth {
        CacheHealth {
            layers: Layer::ALL
                .iter()
                .filter_map(|l| self.tier(*l).map(|t| (*l, t.health())))
                .collect::<Vec<(Layer, TierHealth)>>(),
        }
    }
}
