//! Coherence into this node: invalidations applied to the owner store and the node's own
//! copies, unverified copies dropped after a lost gap, the applier task, and the hand-off
//! push after a ring change.

use super::*;
use strata_core::scan::ScanFrom;

impl Shared {
    /// Applies an invalidation on this node: the owner store, then the node's own copies.
    /// Returns how many owner-store entries it removed of keys this node is first owner of.
    ///
    /// A key invalidation removes only older copies. A pattern, tag or flush removes every
    /// matching copy of the owner store when it is applied as the change itself (at its
    /// origin, and by a strict `Apply`, before the call that made it returns: a write
    /// acknowledged earlier goes, whatever its stamp), and only the copies older than
    /// itself when `repeat` (coherence's own application of an item, which may come after
    /// a first one, or late: a write made since stays).
    pub(crate) async fn apply(&self, inv: &Invalidation, repeat: bool) -> u64 {
        #[cfg(feature = "fault-injection")]
        if self.faults.deaf.load(Ordering::Acquire) {
            return 0;
        }
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        let version = Version::from_u64(inv.version);
        self.observe(version);
        let cache = self.cache.get();
        match &inv.op {
            InvalidationOp::Key { namespace, key } => {
                self.absent.forget(namespace, key);
                // From the write's stamp (the writer's clock) to now (this node's): how long
                // the change took to reach this node's copies.
                let delay = self.now_ms().saturating_sub(version.physical_ms());
                self.counters.delays.record(delay);
            }
            _ => self.absent.forget_all(),
        }
        match &inv.op {
            InvalidationOp::Key { namespace, key } => {
                let mut n = 0;
                if let Some(e) = self.owner.get_retained_entry(namespace, key)
                    && e.version < version
                    && Tier::remove_version(&self.owner, namespace, key, e.version)
                        .await
                        .unwrap_or(false)
                    && self.is_primary(key)
                {
                    n = 1;
                }
                if let Some(c) = cache {
                    let _ = c.drop_local(namespace, key, Some(version)).await;
                }
                n
            }
            InvalidationOp::Pattern { namespace, pattern } => {
                let Ok(glob) = Glob::new(pattern) else {
                    return 0;
                };
                let n = self.remove_owned_where(namespace, |k, e| {
                    (!repeat || e.version < version) && glob.matches(k)
                });
                if let Some(c) = cache {
                    let _ = c.drop_local_pattern(namespace, pattern).await;
                }
                n
            }
            InvalidationOp::Tag { namespace, tag } => {
                let n = self.remove_owned_where(namespace, |_, e| {
                    (!repeat || e.version < version) && e.tags.contains(tag)
                });
                if let Some(c) = cache {
                    let _ = c.drop_local_tag(namespace, tag).await;
                }
                n
            }
            InvalidationOp::Flush { namespace } => {
                let n = self.remove_owned_where(namespace, |_, e| !repeat || e.version < version);
                if let Some(c) = cache {
                    let _ = c.drop_local_namespace(namespace).await;
                }
                n
            }
        }
    }

    /// Takes the removal of `key` at `version` as one of its owners: records that copies
    /// older than `version` are stale ([`strata_cluster::Coherence::note_removed`]), then
    /// removes the owner store's copy if it is at most `version`. Returns whether a live
    /// copy was removed.
    ///
    /// Why the record first, even when the store holds nothing: a copy read elsewhere before
    /// the removal (a previous owner's hand-off push, a read repair) may arrive after it.
    /// The store cannot refuse it — the key is absent — and the removal's invalidation does
    /// not come back to its origin, nor to a member whose warm-start baseline counted it as
    /// applied; [`Shared::store_owned`]'s check after the store refuses it instead. (A
    /// 3-process test saw a key deleted during a member's rejoin served again by that
    /// member, stored by such a push.)
    pub(crate) async fn remove_owned(&self, namespace: &str, key: &[u8], version: Version) -> bool {
        let now = self.now_ms();
        self.coherence
            .lock()
            .note_removed(namespace, key, version.as_u64(), now);
        match self.owner.get_retained_entry(namespace, key) {
            Some(e) if e.version <= version => {
                Tier::remove_version(&self.owner, namespace, key, e.version)
                    .await
                    .unwrap_or(false)
            }
            _ => false,
        }
    }

    /// Stores a copy of `key` in the owner store, then asks coherence whether it still
    /// admits it; returns the store's outcome, or `None` when it did not and the copy was
    /// removed again.
    ///
    /// Why after: a pattern, tag or flush invalidation newer than the copy may have run its
    /// removals between a caller's checks and this store (a primary checks a write before
    /// it replicates, and the invalidation reached both owners meanwhile). The copy would
    /// then outlive the invalidation here for good, served by reads of this store (which do
    /// not ask coherence) while every other member refuses it. After the store, either this
    /// check sees the invalidation recorded, or its recording comes later, and so does the
    /// apply that follows it on every member (the origin's, or coherence's own after an
    /// item arrives), which removes the copy.
    pub(crate) fn store_owned(
        &self,
        namespace: &str,
        key: &[u8],
        entry: Entry,
    ) -> Result<Option<strata_core::SetOutcome>, strata_core::TierError> {
        Ok(self.store_owned_or_superseded(namespace, key, entry)?.ok())
    }

    /// [`Shared::store_owned`], naming the invalidation that refused the copy once stored
    /// (`Err(version)`, the newest that covers it): a replica answers its primary with it.
    pub(crate) fn store_owned_or_superseded(
        &self,
        namespace: &str,
        key: &[u8],
        entry: Entry,
    ) -> Result<Result<strata_core::SetOutcome, u64>, strata_core::TierError> {
        let version = entry.version;
        let tags = entry.tags.clone();
        let stored = self
            .owner
            .set_sync(namespace, Bytes::copy_from_slice(key), entry)?;
        if stored != strata_core::SetOutcome::Stored {
            return Ok(Ok(stored));
        }
        let refs: Vec<&[u8]> = tags.iter().map(|t| t.as_ref()).collect();
        let by = self
            .coherence
            .lock()
            .superseded_by(namespace, key, version.as_u64(), &refs);
        let Some(by) = by else {
            return Ok(Ok(stored));
        };
        self.counters.refused_stale.fetch_add(1, Ordering::Relaxed);
        self.owner.remove_version_sync(namespace, key, version);
        // A read of this store in between may have put the copy in L1 or L3.
        if let Some(c) = self.cache.get() {
            let (c, namespace, key) = (c.clone(), namespace.to_owned(), key.to_vec());
            let above = Version::from_u64(version.as_u64().saturating_add(1));
            tokio::spawn(async move {
                let _ = c.drop_local(&namespace, &key, Some(above)).await;
            });
        }
        Ok(Err(by))
    }

    /// Removes the owner store's entries of `namespace` that `pred` selects; returns how
    /// many of them this node is first owner of.
    pub(crate) fn remove_owned_where(
        &self,
        namespace: &str,
        pred: impl Fn(&[u8], &Entry) -> bool,
    ) -> u64 {
        let mut n = 0;
        let mut after: Option<Bytes> = None;
        loop {
            let keys = self.owner.scan_keys_sync(
                namespace,
                ScanFrom::resume(after.as_deref()),
                SCAN_BATCH,
            );
            let done = keys.len() < SCAN_BATCH;
            for k in &keys {
                // That version only: a write stored since the read stays, and judges itself.
                if let Some(e) = self.owner.get_retained_entry(namespace, k)
                    && pred(k, &e)
                    && self.owner.remove_version_sync(namespace, k, e.version)
                    && self.is_primary(k)
                {
                    n += 1;
                }
            }
            after = keys.last().cloned();
            if done || after.is_none() {
                return n;
            }
        }
    }

    /// Invalidations of some origin may have been lost: drop every copy this node holds
    /// of keys it does not own (L1, and owner-store entries it no longer owns), and with
    /// `owned` every owner-store entry; L3 leaves the read path until its copies are proven
    /// current against their owners again ([`warm`]), which drops the rest.
    pub(crate) async fn drop_unverified(self: &Arc<Self>, origin: &str, lost: u64, owned: bool) {
        self.counters
            .drops_unverified
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(node = %self.name, %origin, lost, "invalidations may have been lost; dropping unverified copies");
        if let Some(c) = self.cache.get() {
            c.drop_local_everything(false).await;
            warm::begin(self.clone(), c.clone(), false);
        }
        for ns in self.owner.namespace_names() {
            if owned {
                // This node was out of the cluster: changes of the keys it owns went to
                // other owners meanwhile, and the invalidations announcing them may never
                // reach it (their origin may have restarted since), so owned entries go as
                // well; reads and primaries read the other owners. (Found by the turmoil
                // test: a minority node whose repairs after a partition failed kept serving
                // a key deleted meanwhile, for good; and by the simulator, seed 1910.)
                self.owner.flush_namespace_sync(&ns);
            } else {
                self.remove_owned_where(&ns, |k, _| !self.owns(k));
            }
        }
        // L1 emptied (and announced) again now that the owner store is emptied too: a read
        // from the owner store meanwhile promoted into L1 a copy the cleanup then removed,
        // and nothing else would take it out of L1; a client that read it is told as well.
        if let Some(c) = self.cache.get() {
            c.drop_local_everything(false).await;
        }
    }

    // ----- hand-off -----

    /// A copy another member pushed here (a hand-off or a read repair, placed by the
    /// sender's view) that this node does not own in its own view: passed on to the owners
    /// in this view, in a task of its own. Views disagree for a while after every change,
    /// and a copy left only with a member no one else counts as an owner is never asked
    /// for (simulator seed 3237: a cut-off member pushed a key's last copy to a new owner of
    /// its minority ring, then dropped its own at its rejoin; the primary of the majority
    /// never asked that member and restarted the counter from nothing). Only a copy this
    /// node stored as newer is passed on, so disagreeing views cannot pass it back and forth
    /// for ever: each member takes a version once.
    pub(crate) fn forward_misplaced(self: &Arc<Self>, ns: String, key: Vec<u8>, entry: Entry) {
        let owners = self.owners(&key);
        if owners.is_empty() || owners.iter().any(|(n, _)| *n == self.name) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            for (name, addr) in owners {
                let req = Request::Set {
                    namespace: ns.clone(),
                    key: key.clone(),
                    entry: to_wire(&entry),
                };
                if me.pool.call(&name, addr, req, None).await.is_ok() {
                    me.counters.handoff_pushes.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    /// After the ring changed from `old` to `new`: sends up to `handoff_push_limit` of the
    /// owner store's entries to owners that did not own them before.
    pub(crate) async fn push_handoff(self: &Arc<Self>, old: &Ring, new: &Ring) {
        let rf = self.cfg.replication_factor as usize;
        let mut budget = self.cfg.handoff_push_limit as usize;
        let members: BTreeMap<String, SocketAddr> = self
            .view
            .read()
            .members
            .values()
            .map(|id| (id.name.clone(), id.rpc))
            .collect();
        'outer: for ns in self.owner.namespace_names() {
            let mut after: Option<Bytes> = None;
            loop {
                let keys =
                    self.owner
                        .scan_keys_sync(&ns, ScanFrom::resume(after.as_deref()), SCAN_BATCH);
                let done = keys.len() < SCAN_BATCH;
                for k in &keys {
                    if budget == 0 {
                        break 'outer;
                    }
                    let targets = placement::handoff_targets(old, new, &self.name, k, rf);
                    if targets.is_empty() {
                        continue;
                    }
                    // Not a copy pushed here while this member settles and not proven
                    // yet: its new owner would store it, and then vouch for it when this
                    // member's proof asks (`warm`'s `prove_pushed`).
                    let Some(e) = self.settled_entry(&ns, k) else {
                        continue;
                    };
                    for t in targets {
                        let Some(addr) = members.get(&t) else {
                            continue;
                        };
                        budget = budget.saturating_sub(1);
                        let req = Request::Set {
                            namespace: ns.clone(),
                            key: k.to_vec(),
                            entry: to_wire(&e),
                        };
                        if self.pool.call(&t, *addr, req, None).await.is_ok() {
                            self.counters.handoff_pushes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                after = keys.last().cloned();
                if done || after.is_none() {
                    break;
                }
            }
        }
    }

    pub(crate) async fn apply_loop(self: Arc<Self>) {
        let mut rx = self.work_rx.lock().await;
        while let Some(w) = rx.recv().await {
            match w {
                Work::Apply(inv) => {
                    self.apply(&inv, true).await;
                }
                Work::DropUnverified {
                    origin,
                    lost,
                    owned,
                } => {
                    // Invalidations were lost: any remembered absence may be one of them.
                    self.absent.forget_all();
                    self.drop_unverified(&origin, lost, owned).await;
                }
            }
        }
    }
}
