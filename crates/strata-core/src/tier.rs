//! The `Tier` trait: what every layer (L1 memory, L3 RocksDB, the cluster L2, the Redis bridge,
//! the simulator's tiers) implements, and what the shared contract suite checks.

use async_trait::async_trait;
use bytes::Bytes;

use crate::entry::Entry;
use crate::error::TierError;
use crate::glob::Glob;

/// Which layer a tier fills in the manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// In-process memory.
    L1,
    /// The shared tier: the key's owner node(s), or an external Redis.
    L2,
    /// Local disk.
    L3,
}

impl Layer {
    /// All layers, fastest first.
    pub const ALL: [Layer; 3] = [Layer::L1, Layer::L2, Layer::L3];

    /// `"l1"`, `"l2"` or `"l3"`, as used in metric labels and stats keys.
    pub const fn as_str(self) -> &'static str {
        match self {
            Layer::L1 => "l1",
            Layer::L2 => "l2",
            Layer::L3 => "l3",
        }
    }

    /// Index into per-layer arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tier's own view of its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierHealth {
    /// Serving normally.
    Up,
    /// Serving, with a problem worth an operator's attention.
    Degraded(String),
    /// Not serving; the manager treats it as absent (reads miss, writes skip it).
    Down(String),
}

impl TierHealth {
    /// Whether the tier is serving at all.
    pub fn is_serving(&self) -> bool {
        !matches!(self, TierHealth::Down(_))
    }
}

/// How a `set` was taken by a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// The entry is now stored.
    Stored,
    /// The tier holds a newer version of the key and kept it.
    KeptNewer,
    /// The tier does not take entries this large (it is smaller than the entry); not an error,
    /// the other layers still have it.
    TooLarge,
    /// The tier is bypassed for now (the Redis bridge with its circuit open): it did not take
    /// the entry, and the write stands on the local layers alone. Not an error.
    Skipped,
    /// The tier's call failed after the entry may have reached it (a timeout, a connection
    /// lost before the answer; not a refusal, nor a call never sent, which are
    /// [`SetOutcome::Skipped`]): it may or may not hold the entry. The write stands on the
    /// local layers, as with `Skipped`, except that a removal matching the key that
    /// overtook it on this node undoes them (the shared tier may have ordered the write
    /// before that removal). Not an error.
    Unconfirmed,
}

/// A cache layer.
///
/// Contract (checked by `strata_core::testsuite` for every implementation):
/// - `get` never returns an entry that is expired at the tier's clock's now (G4), nor bytes
///   other than those set (G6);
/// - `set` never replaces a newer version with an older one;
/// - namespaces are isolated: nothing done in one is visible in another;
/// - `remove`, `invalidate_pattern`, `invalidate_tag` and `flush_namespace` remove what they
///   name and nothing else, and what they remove is not served again;
/// - an operation that cannot be done returns a [`TierError`]; it never panics.
#[async_trait]
pub trait Tier: Send + Sync + std::fmt::Debug + 'static {
    /// Which layer this tier fills.
    fn layer(&self) -> Layer;

    /// The fresh entry for `key`, if any.
    async fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, TierError>;

    /// An entry that is expired but still inside its stale grace (`Entry::stale_until_ms`),
    /// for `get_or_load` when the loader fails. Tiers that do not keep stale entries return
    /// `Ok(None)`, the default.
    async fn get_stale(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, TierError> {
        let _ = (namespace, key);
        Ok(None)
    }

    /// Stores `entry` unless a newer version of `key` is already stored.
    async fn set(&self, namespace: &str, key: Bytes, entry: Entry)
    -> Result<SetOutcome, TierError>;

    /// Stores a write its caller has just stamped — no newer version of `key` exists where
    /// this tier could hear of it — for a caller that needs it readable from this tier when
    /// the call returns, not yet durable: a tier may acknowledge before its write is on
    /// disk (L3's `write_behind`). The default is [`Tier::set`].
    async fn set_fresh(
        &self,
        namespace: &str,
        key: Bytes,
        entry: Entry,
    ) -> Result<SetOutcome, TierError> {
        self.set(namespace, key, entry).await
    }

    /// Whether writes taken by [`Tier::set_fresh`] are not yet durable here (a caller then
    /// [`Tier::settle`]s before what must not outlive them). The default: never.
    fn has_writes_behind(&self) -> bool {
        false
    }

    /// Removes `key`; returns whether it was present.
    async fn remove(&self, namespace: &str, key: &[u8]) -> Result<bool, TierError>;

    /// Executes a conditional or read-modify-write `op` on `key` at this tier's single
    /// authority for the key — a cluster's primary owner, Redis itself behind the bridge —
    /// atomically there, and answers what it did. `Ok(None)` (the default): this tier is no
    /// authority, and the cache executes the operation over its own layers, under its
    /// caller's key lock. `cache` is the calling node's (its namespace policies and clock
    /// make the entries an operation writes: [`crate::Cache::entry_for`]).
    async fn execute(
        &self,
        cache: &crate::Cache,
        namespace: &str,
        key: &[u8],
        op: &crate::ops::KeyOp,
    ) -> Result<Option<crate::ops::Executed>, TierError> {
        let _ = (cache, namespace, key, op);
        Ok(None)
    }

    /// [`Tier::execute`] for an operation on several keys ([`crate::ops::MultiOp`]), which
    /// the caller has checked share one authority (in a cluster: one hash tag). `Ok(None)`
    /// (the default): the cache executes it over its own layers under its caller's locks.
    async fn execute_multi(
        &self,
        cache: &crate::Cache,
        namespace: &str,
        op: &crate::ops::MultiOp,
    ) -> Result<Option<crate::ops::ExecutedMulti>, TierError> {
        let _ = (cache, namespace, op);
        Ok(None)
    }

    /// Whether the cache may keep `entry`, a copy of `key` this tier's authority wrote
    /// ([`Tier::execute`]), in its faster layers: false when this tier knows of an
    /// invalidation newer than it. Asked after the copy is stored there, so that an
    /// invalidation this misses is one whose removals come after the store. The default:
    /// true (the tier knows of none).
    fn admits_copy(&self, namespace: &str, key: &[u8], entry: &Entry) -> bool {
        let _ = (namespace, key, entry);
        true
    }

    /// Removes `key` only if its stored version is `version` (used to undo a promotion that
    /// raced with an invalidation); returns whether it removed it.
    async fn remove_version(
        &self,
        namespace: &str,
        key: &[u8],
        version: crate::version::Version,
    ) -> Result<bool, TierError>;

    /// Removes the copy of `key` held here if it is older than `below` (fresh, or inside its
    /// stale grace: `get_or_load` may serve that one); returns how many it removed (0 or 1).
    /// A tier that cannot say what it holds removes the key outright: a failed read must not
    /// leave an older copy behind. [`crate::Cache::drop_local`] calls this for each layer.
    ///
    /// The default reads with `get` and `get_stale` and removes with `remove_version`; a
    /// tier whose calls each cost a thread hop (L3) does it in one.
    async fn remove_older(
        &self,
        namespace: &str,
        key: &[u8],
        below: crate::version::Version,
    ) -> Result<u64, TierError> {
        let held = match self.get(namespace, key).await {
            Ok(Some(e)) => Some(e),
            Ok(None) => match self.get_stale(namespace, key).await {
                Ok(e) => e,
                Err(_) => return self.remove(namespace, key).await.map(u64::from),
            },
            Err(_) => return self.remove(namespace, key).await.map(u64::from),
        };
        match held {
            Some(e) if e.version < below => self
                .remove_version(namespace, key, e.version)
                .await
                .map(u64::from),
            _ => Ok(0),
        }
    }

    /// Removes every key of `namespace` that matches `pattern`; returns how many.
    async fn invalidate_pattern(&self, namespace: &str, pattern: &Glob) -> Result<u64, TierError>;

    /// Removes every entry of `namespace` carrying `tag`; returns how many.
    async fn invalidate_tag(&self, namespace: &str, tag: &[u8]) -> Result<u64, TierError>;

    /// Removes every entry of `namespace`.
    async fn flush_namespace(&self, namespace: &str) -> Result<(), TierError>;

    /// Drops entries that are expired and past their stale grace (the background sweep);
    /// returns how many.
    async fn purge_expired(&self) -> Result<u64, TierError>;

    /// Up to `limit` keys of `namespace` that hold fresh entries, in scan order
    /// ([`crate::scan`]: by hash, then bytes), from `from`: what `KEYS`, `SCAN`, `DBSIZE` and
    /// `RANDOMKEY` are built on. Tiers that cannot list keys return an error (the default).
    async fn scan_keys(
        &self,
        namespace: &str,
        from: crate::scan::ScanFrom<'_>,
        limit: usize,
    ) -> Result<Vec<Bytes>, TierError> {
        let _ = (namespace, from, limit);
        Err(TierError::Failed(format!(
            "{} cannot list keys",
            self.layer()
        )))
    }

    /// Like [`Tier::scan_keys`], with each entry's version: what a restarted cluster member
    /// checks against the owners before its L3 serves again. Tiers that cannot list keys
    /// return an error (the default).
    async fn scan_versions(
        &self,
        namespace: &str,
        from: crate::scan::ScanFrom<'_>,
        limit: usize,
    ) -> Result<Vec<(Bytes, crate::version::Version)>, TierError> {
        let _ = (namespace, from, limit);
        Err(TierError::Failed(format!(
            "{} cannot list versions",
            self.layer()
        )))
    }

    /// The namespaces that hold at least one entry (possibly also some that were emptied
    /// recently). Tiers that cannot list them return an error (the default).
    async fn namespaces(&self) -> Result<Vec<String>, TierError> {
        Err(TierError::Failed(format!(
            "{} cannot list namespaces",
            self.layer()
        )))
    }

    /// How many keys of `namespace` this tier holds, read from counters kept on write (O(1)
    /// or close to it): what `DBSIZE` and `INFO keyspace` answer for a large keyspace. It may
    /// count entries whose expiry passed and that are not reclaimed yet, as Redis's `DBSIZE`
    /// does. `None` (the default): the tier keeps no count, and callers list the keys.
    fn key_count(&self, namespace: &str) -> Option<u64> {
        let _ = namespace;
        None
    }

    /// How many keys of `namespace` the whole layer holds, when it is shared by several
    /// nodes (a cluster: every member's keys, each counted once), else [`Tier::key_count`]
    /// (the default): what `DBSIZE` answers for a large keyspace on a node's plain
    /// listener. An estimate in a cluster; may ask other nodes.
    async fn key_count_shared(&self, namespace: &str) -> Option<u64> {
        self.key_count(namespace)
    }

    /// Gives back whatever this tier keeps per namespace for namespaces it holds no key of
    /// (the cluster's owner store: its namespace table); returns how many. The default: the
    /// tier keeps nothing per namespace.
    fn reclaim_empty_namespaces(&self) -> usize {
        0
    }

    /// Returns once every write handed to this tier before the call has been applied (or
    /// has failed): for a tier that queues writes and applies them later (L3's group
    /// commit), even when their callers gave up. The default: writes are applied within
    /// their calls.
    async fn settle(&self) -> Result<(), TierError> {
        Ok(())
    }

    /// Removes every entry of every namespace. The default flushes each namespace that
    /// [`Tier::namespaces`] lists; tiers that can do it in one step (L3: a range delete)
    /// override it.
    async fn flush_all(&self) -> Result<(), TierError> {
        for ns in self.namespaces().await? {
            self.flush_namespace(&ns).await?;
        }
        Ok(())
    }

    /// Why this tier cannot apply writes now, if it cannot (L3: not open, or changes it
    /// failed to apply are outstanding). The manager refuses writes on it when configured to
    /// (`CacheBuilder::refuse_writes_on_l3_fault`, like Redis's `MISCONF`). `None` (the
    /// default): writes are taken.
    fn write_fault(&self) -> Option<String> {
        None
    }

    /// Current health.
    fn health(&self) -> TierHealth;
}
