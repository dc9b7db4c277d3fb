//! The cluster L2 tier: each key lives on its owners (the first `replication_factor`
//! distinct members clockwise from the key's hash on the ring).
//!
//! - **get**: the owners in ring order (this node's own owner store when it is one, else
//!   an RPC), then, inside the hand-off window after a ring change, the key's previous
//!   owners. A hit from a later owner is copied to this node's store when it owns the key
//!   (read repair after a restart or a move). A copy older than an invalidation this node
//!   has seen is refused (G3), and so is an expired one (G4).
//! - **set / remove**: every owner, concurrently; then an invalidation stamped with the
//!   write's version is broadcast so other nodes drop older copies. With
//!   `cluster.strict_invalidations`, the call waits for every live member to apply it.
//! - **pattern, tag, flush**: always strict: owners of matching keys may be any member, so
//!   each live member applies it before the call returns.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use bytes::Bytes;
use strata_cluster::InvalidationOp;
use strata_cluster::rpc::{Request, Response};
use strata_core::glob::Glob;
use strata_core::{Entry, Layer, SetOutcome, Tier, TierError, TierHealth, Version};

use strata_cluster::placement::{self, Repair};
use strata_cluster::primary::PrimaryOp;
use strata_core::ops::{Executed, ExecutedMulti, KeyOp, MultiOp, Reply};
use strata_core::scan::ScanFrom;

use super::{Shared, from_wire, primary, tag_refs, to_wire};

/// The cluster as a `Tier`.
#[derive(Debug, Clone)]
pub(crate) struct ClusterTier {
    pub(crate) shared: Arc<Shared>,
    /// Members whose key listing failed lately, with when ([`LISTING_QUIET`]).
    pub(crate) quiet:
        Arc<parking_lot::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
}

/// How long listings leave out a member whose key listing failed. A member stopped but not
/// yet declared down (SIGSTOP, a frozen VM) cost every page of every listing one RPC
/// timeout until failure detection dropped it, about 5 s: a `SCAN` loop of 40 pages paid
/// them all. Its keys have other owners, so a listing without it still lists every key
/// unless another owner is down too (as with the member left out once detected).
const LISTING_QUIET: std::time::Duration = std::time::Duration::from_secs(3);

impl ClusterTier {
    /// The cluster tier over `shared`.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            quiet: Arc::default(),
        }
    }

    /// Whether listings leave `name` out for now (its last listing failed lately).
    fn listing_quiet(&self, name: &str) -> bool {
        let mut quiet = self.quiet.lock();
        match quiet.get(name) {
            Some(at) if at.elapsed() < LISTING_QUIET => true,
            Some(_) => {
                quiet.remove(name);
                false
            }
            None => false,
        }
    }
}

enum Fetched {
    Hit(Entry),
    Miss,
    /// The owner's copy is older than a change this node has seen of the key: the newer
    /// copy is on its way to that owner, or held by another (not an absence).
    Stale,
    Failed,
}

/// How many times a read asks the key's owners while they answer only with copies older
/// than a change this node has seen ([`Fetched::Stale`]), and the pause before each pass
/// after the first.
const STALE_READ_PASSES: [u64; 3] = [0, 2, 10];

impl ClusterTier {
    /// After a read found `e` at `plan[hit]` (the first `owners` entries of `plan` are the
    /// key's current owners): repairs the owners that miss it ([`placement::read_repair`]).
    async fn repair(
        &self,
        plan: &[(String, std::net::SocketAddr)],
        owners: usize,
        hit: usize,
        namespace: &str,
        key: &[u8],
        e: &Entry,
    ) {
        let s = &self.shared;
        let k = Bytes::copy_from_slice(key);
        let me = plan.iter().position(|(n, _)| *n == s.name);
        let settling = s.warm.settling.load(Ordering::Acquire);
        match placement::read_repair(owners, hit, me, settling) {
            Repair::Owners => {
                // Found on a previous owner (hand-off): give it to the owners.
                s.counters.handoff_reads.fetch_add(1, Ordering::Relaxed);
                for (o, a) in &plan[..owners] {
                    let _ = self.store(o, *a, namespace, &k, e).await;
                }
            }
            Repair::Own => {
                let _ = s.store_owned(namespace, &k, e.clone());
                s.absent.forget(namespace, key);
            }
            Repair::None => {}
        }
    }

    /// Reads `key` from owner `name`.
    async fn fetch(&self, name: &str, addr: std::net::SocketAddr, ns: &str, key: &[u8]) -> Fetched {
        let s = &self.shared;
        if name == s.name {
            if s.unverified() {
                // Held across a pause: changed meanwhile, maybe ([`super::pause`]).
                return Fetched::Failed;
            }
            return match s.settled_entry(ns, key) {
                Some(e) => Fetched::Hit(e),
                // Not proven yet: perhaps the last copy (as another owner answers `Get`).
                None if s.holds_unproven(ns, key) => Fetched::Failed,
                None => Fetched::Miss,
            };
        }
        s.counters.remote_reads.fetch_add(1, Ordering::Relaxed);
        let req = Request::Get {
            namespace: ns.to_owned(),
            key: key.to_vec(),
        };
        let (entry, generation, latest) = match s.pool.call(name, addr, req, None).await {
            Ok(Response::EntryAt {
                entry,
                generation,
                latest,
            }) => (entry, generation, latest),
            Ok(Response::Entry(entry)) => (entry, 0, 0),
            Ok(other) => {
                tracing::debug!(peer = %name, ?other, "unexpected answer to Get");
                return Fetched::Failed;
            }
            Err(e) => {
                tracing::debug!(peer = %name, error = %e, "owner read failed");
                return Fetched::Failed;
            }
        };
        if generation != 0 {
            s.coherence.lock().note_read(name, generation, latest);
        }
        let Some(w) = entry else {
            return Fetched::Miss;
        };
        let e = from_wire(w);
        if !e.is_fresh(s.now_ms()) {
            return Fetched::Miss;
        }
        if !s
            .coherence
            .lock()
            .admits_tagged(ns, key, e.version.as_u64(), &tag_refs(&e))
        {
            s.counters.refused_stale.fetch_add(1, Ordering::Relaxed);
            return Fetched::Stale;
        }
        s.observe(e.version);
        s.counters.remote_hits.fetch_add(1, Ordering::Relaxed);
        Fetched::Hit(e)
    }

    /// Stores `entry` on the owner `name` (this node's store or an RPC); `Ok(true)` when a
    /// newer version was kept.
    async fn store(
        &self,
        name: &str,
        addr: std::net::SocketAddr,
        ns: &str,
        key: &Bytes,
        entry: &Entry,
    ) -> Result<bool, String> {
        let s = &self.shared;
        if name == s.name {
            // A copy found on a previous owner while this member settles may predate a
            // removal its baseline counted as applied: recorded and proven, as a push is.
            if !s.note_push(ns, key, entry.version, false) {
                return Ok(true);
            }
            let stored = s.store_owned(ns, key, entry.clone());
            // Once the store holds it (absent.rs).
            s.absent.forget(ns, key);
            return match stored {
                Ok(None | Some(SetOutcome::KeptNewer)) => Ok(true),
                Ok(Some(_)) => Ok(false),
                Err(e) => Err(e.to_string()),
            };
        }
        let req = Request::Set {
            namespace: ns.to_owned(),
            key: key.to_vec(),
            entry: to_wire(entry),
        };
        match s.pool.call(name, addr, req, None).await? {
            Response::Stored { kept_newer } => Ok(kept_newer),
            other => Err(format!("unexpected answer to Set: {other:?}")),
        }
    }

    /// Removes `key` on every owner if its stored version is at most `version`.
    async fn remove_on_owners(&self, ns: &str, key: &[u8], version: Version) -> bool {
        let s = &self.shared;
        let calls = s.owners(key).into_iter().map(|(name, addr)| async move {
            if name == s.name {
                return s.remove_owned(ns, key, version).await;
            }
            let req = Request::Remove {
                namespace: ns.to_owned(),
                key: key.to_vec(),
                version: version.as_u64(),
            };
            matches!(
                s.pool.call(&name, addr, req, None).await,
                Ok(Response::Removed(true))
            )
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .any(|r| r)
    }

    /// Up to `limit` keys member `name` holds as an owner in `ns`, from `from`, page by
    /// page; with its key count. A member that cannot answer (down, or a build from before
    /// [`Request::Keys`]) gives what it gave so far: its keys are missing from the listing
    /// unless another owner holds them.
    async fn peer_keys(
        &self,
        name: &str,
        addr: std::net::SocketAddr,
        ns: &str,
        from: ScanFrom<'_>,
        limit: usize,
    ) -> (Vec<Bytes>, Option<u64>) {
        use strata_cluster::rpc::ByteBuf;
        let s = &self.shared;
        let mut keys: Vec<Bytes> = Vec::new();
        let mut after = from.after_key().map(|k| ByteBuf::from(k.to_vec()));
        let mut counted = None;
        if self.listing_quiet(name) {
            return (keys, counted);
        }
        loop {
            // All it still wants (the callee answers a page of it, and says whether more
            // is left only when it knows more was wanted).
            let want = (limit - keys.len()).min(u32::MAX as usize) as u32;
            let req = Request::Keys {
                namespace: ns.to_owned(),
                hash: from.hash(),
                after: after.take(),
                limit: want,
            };
            match s.pool.call(name, addr, req, None).await {
                Ok(Response::Keys {
                    keys: page,
                    more,
                    count,
                }) => {
                    counted = Some(count);
                    let got = page.len();
                    keys.extend(page.into_iter().map(|k| Bytes::from(k.into_vec())));
                    if !more || got == 0 || keys.len() >= limit {
                        break;
                    }
                    after = keys.last().map(|k| ByteBuf::from(k.to_vec()));
                }
                Ok(other) => {
                    tracing::debug!(peer = %name, ?other, "peer did not list its keys");
                    break;
                }
                Err(e) => {
                    tracing::debug!(peer = %name, error = %e, "peer key listing failed; left out of listings for a while");
                    self.quiet
                        .lock()
                        .insert(name.to_owned(), std::time::Instant::now());
                    break;
                }
            }
        }
        (keys, counted)
    }

    /// Originates an invalidation, applies it here, and waits for every member. A member
    /// that does not confirm makes it an error: the caller is told the invalidation may not
    /// have reached every owner yet (members apply it when they next hear from this node,
    /// if this node lives).
    async fn invalidate_strict(&self, op: InvalidationOp) -> Result<u64, TierError> {
        let s = &self.shared;
        let inv = s.originate(s.stamp(), op);
        let here = s.apply(&inv, false).await;
        let (there, missing) = s.strict(&inv).await;
        s.publish(inv);
        if missing.is_empty() {
            Ok(here + there)
        } else {
            Err(TierError::Failed(format!(
                "invalidation not confirmed by {}; it is applied where confirmed and disseminated to the rest",
                missing.join(", ")
            )))
        }
    }
}

#[async_trait]
impl Tier for ClusterTier {
    fn layer(&self) -> Layer {
        Layer::L2
    }

    async fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, TierError> {
        let s = &self.shared;
        let asked_ms = s.monotonic_ms();
        let stamp = match s.absent.check(namespace, key, asked_ms) {
            Ok(()) => {
                s.counters.absent_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
            Err(stamp) => stamp,
        };
        // A copy older than a change this node has seen is no answer, and no absence
        // either: the key exists (an owner read a moment before the replication reached
        // it, while this node already had the change's announcement). The owners are asked
        // again, briefly; taken for a miss, a counter being incremented read as nil (a
        // membership review: 4 of 253,000 reads) and, remembered as absent, stayed nil for
        // `cluster.negative_ttl_ms`.
        // Back from a pause and not yet counted live again, this node does not answer from
        // its own owner store first: a change made meanwhile may not have reached it. It
        // still weighs its own copy against what the others answer ([`super::pause`]):
        // skipped outright, a key whose other owner was killed meanwhile, or whose other
        // owner's copy was behind a change this node had seen, read as nil (a review: 98
        // of 2,000 keys).
        let own = if s.unverified() {
            s.settled_entry(namespace, key)
        } else {
            None
        };
        let mut stale = 0;
        for pause_ms in STALE_READ_PASSES {
            if stale > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
            }
            stale = 0;
            let (plan, owners) = s.read_plan(key);
            let mut failed = 0;
            for (i, (name, addr)) in plan.iter().enumerate() {
                match self.fetch(name, *addr, namespace, key).await {
                    Fetched::Hit(e) => {
                        // The newer of the two: an owner that lags a replication does not
                        // take this node back in time.
                        if let Some(o) = own.as_ref().filter(|o| o.version > e.version) {
                            return Ok(Some(o.clone()));
                        }
                        self.repair(&plan, owners, i, namespace, key, &e).await;
                        return Ok(Some(e));
                    }
                    Fetched::Miss => {}
                    Fetched::Stale => stale += 1,
                    Fetched::Failed => failed += 1,
                }
            }
            if let Some(o) = &own {
                // No other owner answered at all (its own copy is the last one left), or
                // they answered only with copies older than a change this node has seen,
                // which its own copy is not older than.
                let others_failed = failed == plan.len();
                let own_is_current = stale > 0
                    && s.coherence.lock().admits_tagged(
                        namespace,
                        key,
                        o.version.as_u64(),
                        &super::tag_refs(o),
                    );
                if others_failed || own_is_current {
                    return Ok(Some(o.clone()));
                }
            }
            if failed > 0 && failed == plan.len() {
                return Err(TierError::Unavailable(format!(
                    "no owner of the key answered ({failed} tried)"
                )));
            }
            if stale == 0 {
                if failed == 0 && !plan.is_empty() {
                    // Every owner answered that it has no such key.
                    s.absent
                        .remember(namespace, key, stamp, asked_ms, s.monotonic_ms());
                }
                return Ok(None);
            }
        }
        s.counters
            .stale_reads_missed
            .fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }

    async fn get_stale(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, TierError> {
        Tier::get_stale(&self.shared.owner, namespace, key).await
    }

    async fn set(
        &self,
        namespace: &str,
        key: Bytes,
        entry: Entry,
    ) -> Result<SetOutcome, TierError> {
        let s = &self.shared;
        s.observe(entry.version);
        if !s.coherence.lock().admits_tagged(
            namespace,
            &key,
            entry.version.as_u64(),
            &tag_refs(&entry),
        ) {
            s.counters.refused_stale.fetch_add(1, Ordering::Relaxed);
            return Ok(SetOutcome::KeptNewer);
        }
        let result = s
            .execute_at_primary(namespace, &key, PrimaryOp::Put(to_wire(&entry)))
            .await;
        // After the write (a read of the key that was under way when it ran remembers no
        // absence: its stamp no longer matches).
        s.absent.forget(namespace, &key);
        match result {
            Ok(ex) => {
                // What the primary stored is the newest version here at once: an older
                // write from this node is refused above, whether or not the primary's
                // invalidation has come back yet (a contract-suite flake on a loaded CI
                // machine, where it had not).
                // The primary may have re-stamped it past a newer clock's write: this node's
                // clock moves past that version first, so its next writes sort after it. (A
                // primary here recorded it already, as it announced the write.)
                if let strata_core::ops::Change::Written(e) = &ex.change {
                    s.observe(e.version);
                    if !s.is_primary(&key) {
                        let now = s.coherence_ms();
                        s.coherence
                            .lock()
                            .note_written(namespace, &key, e.version.as_u64(), now);
                    }
                }
                Ok(SetOutcome::Stored)
            }
            Err(why) => Err(TierError::Unavailable(why)),
        }
    }

    async fn remove(&self, namespace: &str, key: &[u8]) -> Result<bool, TierError> {
        match self
            .shared
            .execute_at_primary(namespace, key, primary::del())
            .await
        {
            Ok(ex) => Ok(ex.reply == Reply::Int(1)),
            Err(why) => Err(TierError::Unavailable(why)),
        }
    }

    async fn execute_multi(
        &self,
        _cache: &strata_core::Cache,
        namespace: &str,
        op: &MultiOp,
    ) -> Result<Option<ExecutedMulti>, TierError> {
        let result = self.shared.execute_multi_at_primary(namespace, op).await;
        for key in op.keys() {
            self.shared.absent.forget(namespace, key);
        }
        result.map(Some).map_err(TierError::Unavailable)
    }

    async fn execute(
        &self,
        _cache: &strata_core::Cache,
        namespace: &str,
        key: &[u8],
        op: &KeyOp,
    ) -> Result<Option<Executed>, TierError> {
        let result = self
            .shared
            .execute_at_primary(namespace, key, PrimaryOp::Key(op.clone()))
            .await;
        self.shared.absent.forget(namespace, key);
        result.map(Some).map_err(TierError::Unavailable)
    }

    async fn remove_version(
        &self,
        namespace: &str,
        key: &[u8],
        version: Version,
    ) -> Result<bool, TierError> {
        Ok(self.remove_on_owners(namespace, key, version).await)
    }

    fn admits_copy(&self, namespace: &str, key: &[u8], entry: &Entry) -> bool {
        // Back from a pause and not yet counted live again: this node keeps no copy of its
        // own writes either, as invalidations of them may not reach it ([`super::pause`]).
        if self.shared.unverified() {
            return false;
        }
        self.shared.coherence.lock().admits_tagged(
            namespace,
            key,
            entry.version.as_u64(),
            &super::tag_refs(entry),
        )
    }

    async fn invalidate_pattern(&self, namespace: &str, pattern: &Glob) -> Result<u64, TierError> {
        self.invalidate_strict(InvalidationOp::Pattern {
            namespace: namespace.to_owned(),
            pattern: pattern.as_bytes().to_vec(),
        })
        .await
    }

    async fn invalidate_tag(&self, namespace: &str, tag: &[u8]) -> Result<u64, TierError> {
        self.invalidate_strict(InvalidationOp::Tag {
            namespace: namespace.to_owned(),
            tag: tag.to_vec(),
        })
        .await
    }

    async fn flush_namespace(&self, namespace: &str) -> Result<(), TierError> {
        self.invalidate_strict(InvalidationOp::Flush {
            namespace: namespace.to_owned(),
        })
        .await
        .map(|_| ())
    }

    async fn purge_expired(&self) -> Result<u64, TierError> {
        Ok(self.shared.owner.purge_expired_sync())
    }

    async fn scan_keys(
        &self,
        namespace: &str,
        from: ScanFrom<'_>,
        limit: usize,
    ) -> Result<Vec<Bytes>, TierError> {
        // Every member's owner store, not only this one's: a client on any node's plain
        // listener lists the whole keyspace, as one Redis would (each member holds the keys
        // it owns; together, every key).
        let s = &self.shared;
        let mut keys = s.owner.scan_keys_sync(namespace, from, limit);
        let others = s.others();
        if limit == 0 || others.is_empty() {
            return Ok(keys);
        }
        let calls = others
            .iter()
            .map(|(name, addr)| self.peer_keys(name, *addr, namespace, from, limit));
        for (more, _) in futures_util::future::join_all(calls).await {
            keys.extend(more);
        }
        strata_core::scan::sort_keys(&mut keys);
        keys.truncate(limit);
        Ok(keys)
    }

    /// Every member's owner-store count, summed and divided by the number of owners a key
    /// has: an estimate of the cluster's keys (exact when every member answers and every
    /// key has all its owners). A member the view counts that does not answer (stopped,
    /// not yet declared down) is taken to hold what the others hold on average: without
    /// that, a stalled member of three took a third of the count with it (a review).
    async fn key_count_shared(&self, namespace: &str) -> Option<u64> {
        let s = &self.shared;
        let others = s.others();
        let calls = others
            .iter()
            .map(|(name, addr)| self.peer_keys(name, *addr, namespace, ScanFrom::START, 0));
        let mut total = s.owner.key_count(namespace);
        let mut answered = 1u64;
        for (_, count) in futures_util::future::join_all(calls).await {
            if let Some(n) = count {
                total += n;
                answered += 1;
            }
        }
        let members = others.len() as u64 + 1;
        let owners = (s.cfg.replication_factor as u64).clamp(1, members);
        Some(total * members / answered / owners)
    }

    async fn namespaces(&self) -> Result<Vec<String>, TierError> {
        Ok(self.shared.owner.namespace_names())
    }

    /// The keys this member holds as an owner (primary or replica), as a Redis Cluster
    /// node's `DBSIZE` counts its own slots' keys.
    fn key_count(&self, namespace: &str) -> Option<u64> {
        Some(self.shared.owner.key_count(namespace))
    }

    fn reclaim_empty_namespaces(&self) -> usize {
        self.shared.owner.reclaim_empty_namespaces()
    }

    fn health(&self) -> TierHealth {
        let s = &self.shared;
        if let Some(why) = s.not_ready() {
            return TierHealth::Degraded(why);
        }
        if let Some((_, why)) = s.ring_problem() {
            return TierHealth::Degraded(why);
        }
        if let Some(why) = s.shared_names_problem() {
            return TierHealth::Degraded(why);
        }
        if !s.cfg.seeds.is_empty() && s.others().is_empty() {
            return TierHealth::Degraded("no other cluster member is reachable".into());
        }
        if !s.coherence.lock().in_sync() {
            return TierHealth::Degraded("an invalidation gap is open (repairing)".into());
        }
        TierHealth::Up
    }
}
