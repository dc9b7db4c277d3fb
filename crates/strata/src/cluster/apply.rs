//! Coherence into this node: invalidations applied to the owner store and the node's own
//! copies, unverified copies dropped after a lost gap, the applier task, and the hand-off
//! push after a ring change.

use super::*;
use std::collections::BTreeSet;
use strata_cluster::rpc::{ByteBuf, WireEntry};
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
        let cache = self.cache();
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
        let now = self.coherence_ms();
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
        if let Some(c) = self.cache() {
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
        self.each_owner_entry(namespace, |k, e| {
            // That version only: a write stored since the read stays, and judges itself.
            if pred(k, &e)
                && self.owner.remove_version_sync(namespace, k, e.version)
                && self.is_primary(k)
            {
                n += 1;
            }
        });
        n
    }

    /// Calls `f` with each entry of `namespace` in the owner store (expired ones included),
    /// a page of keys at a time.
    fn each_owner_entry(&self, namespace: &str, mut f: impl FnMut(&[u8], Entry)) {
        let mut after: Option<Bytes> = None;
        loop {
            let keys = self.owner.scan_keys_sync(
                namespace,
                ScanFrom::resume(after.as_deref()),
                SCAN_BATCH,
            );
            let done = keys.len() < SCAN_BATCH;
            for k in &keys {
                if let Some(e) = self.owner.get_retained_entry(namespace, k) {
                    f(k, e);
                }
            }
            after = keys.last().cloned();
            if done || after.is_none() {
                return;
            }
        }
    }

    /// Invalidations of some origin may have been lost: drop every copy this node holds
    /// of keys it does not own (L1, and owner-store entries it no longer owns); L3 leaves
    /// the read path until its copies are proven current against their owners again
    /// ([`warm`]), which drops the rest. With `owned` (this node rejoined without its
    /// lease), every owned entry is held unproven until proven the same way
    /// ([`Shared::hold_unproven`]).
    ///
    /// With `lease_held` (this node rejoined with its lease held), the owner-store entries
    /// of keys it owned under a ring of the last seconds stay ([`Shared::lately_owned`]), as after any ring change:
    /// they are what the ring change's hand-off pushes and what the others' hand-off reads
    /// ask it for. A member of the majority that a cut-off member declared down renews its
    /// identity when the cut heals, in the same instant as its ring takes that member back,
    /// and it may be the stand-in owner holding a key's newest copy: dropped at once, the
    /// copy was gone before the ring change's hand-off read it, and when the key's other
    /// owner was cut off next, the returning primary executed `INCR` from no copy (a
    /// partition review, `s6_flap-061747`: a counter restarted after 11,130 acknowledged
    /// increments). Its lease held, every change of those keys made while it owned them
    /// reached it (ARCHITECTURE decision 126).
    pub(crate) async fn drop_unverified(
        self: &Arc<Self>,
        origin: &str,
        lost: u64,
        owned: bool,
        lease_held: bool,
    ) {
        self.counters
            .drops_unverified
            .fetch_add(1, Ordering::Relaxed);
        let lives = self.coherence.lock().peer_state(origin);
        tracing::info!(node = %self.name, %origin, lost, ?lives, lease_held, "invalidations may have been lost; dropping unverified copies");
        if owned {
            // Before the proof begins, which proves what is recorded by then.
            let since = self.lease.lock().lapse_began_ms().unwrap_or(0);
            self.warm.record_since(since);
            // As at a start: no read repair into this owner store until proven.
            self.warm.settling.store(true, Ordering::Release);
        }
        if let Some(c) = self.cache() {
            c.drop_local_everything(false).await;
            warm::begin(self.clone(), c.clone(), false);
        }
        // The keys this node owned lately, when its lease held.
        let kept = (lease_held && !owned).then(|| self.lately_owned());
        let kept_lately = |k: &[u8]| kept.as_ref().is_some_and(|owned_lately| owned_lately(k));
        for ns in self.owner.namespace_names() {
            if owned {
                self.hold_unproven(&ns);
            } else {
                self.remove_owned_where(&ns, |k, _| !self.owns(k) && !kept_lately(k));
            }
        }
        if owned {
            // A proof of the entries held unproven, after the settle time (with L3, the L3
            // proof begun above also proves them: the two share the records).
            warm::prove_held(self.clone());
        }
        // L1 emptied (and announced) again now that the owner store is emptied too: a read
        // from the owner store meanwhile promoted into L1 a copy the cleanup then removed,
        // and nothing else would take it out of L1; a client that read it is told as well.
        if let Some(c) = self.cache() {
            c.drop_local_everything(false).await;
        }
    }

    /// A gap of `origin`'s coherence `life` was given up on: some invalidations never
    /// reached this member, so as a witness its record starts over — for every caller but
    /// that life, which made what was lost (`strata_cluster::warm::Record`). Recorded when
    /// coherence gives the gap up, before the drop it asks for is carried out. (Not at a
    /// rejoin: the changes made while it was away went to the owners of the others' ring,
    /// whose tombstones answer for them; its own tombstones outlive the rejoin. Starting
    /// over there left the proofs of members rejoining in turn without a witness whose
    /// record reached back, and they dropped what they owned: 3,243 static keys in a
    /// partition review.)
    pub(crate) fn gap_given_up(&self, origin: &str, life: u64) {
        let mut record = self.warm.record.lock();
        record.gave_up(origin, life, self.monotonic_ms());
    }

    /// This node was out of the cluster without its lease: changes of the keys it owns went
    /// to other owners meanwhile, and the invalidations announcing them may never reach it
    /// (their origin may have restarted since). So it no longer trusts what it owns in
    /// `namespace`: each entry is held unproven — no read serves it, no execution builds
    /// on it, no proof of another member's vouches for it ([`Shared::settled_entry`]) —
    /// until its proof ([`warm`]) keeps it (the key's other owner holds that very version,
    /// or no live member knows of anything newer: `strata_cluster::warm::judge`) or drops
    /// it. Entries of keys it does not own go now; so do owned ones past
    /// `cluster.settling_push_limit` unproven copies.
    ///
    /// (Dropping every owned entry, as before, was safe but lost acknowledged writes when
    /// cuts longer than failure detection moved between members: each owner of a key
    /// rejoined in turn and dropped it before the hand-offs had put it back — 2,716 of
    /// 4,500 keys in a partition review. Keeping them trusted brings back a key deleted
    /// while the member was away, by an origin that restarted since: the turmoil test,
    /// simulator seed 1910.)
    pub(crate) fn hold_unproven(&self, namespace: &str) {
        let (mut held, mut dropped) = (0u64, 0u64);
        self.each_owner_entry(namespace, |k, e| {
            if self.owns(k) && self.warm.hold(namespace, k, e.version) {
                held += 1;
            } else if self.owner.remove_version_sync(namespace, k, e.version) {
                dropped += 1;
            }
        });
        tracing::info!(node = %self.name, namespace, held, dropped, "rejoined without its lease: owned entries held unproven until the owners vouch for them");
    }

    /// As a rejoin without the lease whose lapse began now: every owned entry held
    /// unproven ([`Shared::hold_unproven`]) and proven after the settle time, the rest
    /// dropped (a test's stand-in for a member cut off past failure detection; the
    /// membership and L1 are left as they are).
    #[cfg(feature = "fault-injection")]
    pub(crate) fn rejoin_without_lease(self: &Arc<Self>) {
        self.rejoin_without_lease_from(self.monotonic_ms());
    }

    /// [`Shared::rejoin_without_lease`], the lapse taken to have begun at `from_ms`
    /// (`Shared::monotonic_ms`; 0: this process's start).
    #[cfg(feature = "fault-injection")]
    pub(crate) fn rejoin_without_lease_from(self: &Arc<Self>, from_ms: u64) {
        self.warm.record_since(from_ms);
        self.warm.settling.store(true, Ordering::Release);
        for ns in self.owner.namespace_names() {
            self.hold_unproven(&ns);
        }
        warm::prove_held(self.clone());
    }

    /// As a gap of `origin`'s current coherence life given up on: invalidations of it
    /// lost, every unowned copy dropped, and this member's record as a witness started
    /// over for every caller but that life (`strata_cluster::warm::Record`).
    #[cfg(feature = "fault-injection")]
    pub(crate) fn give_up_gap_of(&self, origin: &str) {
        let life = self
            .coherence
            .lock()
            .peer_state(origin)
            .iter()
            .map(|(generation, ..)| *generation)
            .max()
            .unwrap_or(0);
        self.gap_given_up(origin, life);
        self.queue_drop(Work::DropUnverified {
            origin: origin.to_owned(),
            lost: 1,
            owned: false,
            after_stall: false,
            lease_held: false,
        });
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
                // A settling owner's `Deferred` is not a delivery (not sent again: the
                // hand-off and hand-off reads cover the key).
                if matches!(
                    me.pool.call(&name, addr, req, None).await,
                    Ok(Response::Stored { .. })
                ) {
                    me.counters.handoff_pushes.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    /// After the ring changed from `old` to `new`: sends up to `handoff_push_limit` of the
    /// owner store's entries to owners that did not own them before, in batches per new
    /// owner ([`Request::Handoff`], one at a time per owner). Every copy a key's new owner
    /// lacks is pushed, not only the first few thousand: until it has them, a key whose
    /// other owner dies loses its last copy (a membership review's `quick` run with
    /// `kill -9` lost 1,904 acknowledged `SET`s with a cap of 10,000 and one `Set` call per
    /// copy, members holding ~20,000 each).
    ///
    /// A target that refuses entries for now (settling after a restart, as many unproven
    /// pushes as it may hold) is not waited for in the first pass, so that the other new
    /// owners get their copies at once; a second pass sends it its share again, waiting
    /// for its proof to make room ([`Shared::send_handoff`]).
    pub(crate) async fn push_handoff(self: &Arc<Self>, old: &Ring, new: &Ring) {
        #[cfg(feature = "fault-injection")]
        {
            let ms = self.faults.handoff_delay_ms.load(Ordering::Acquire);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        let rf = self.cfg.replication_factor as usize;
        let targets = |k: &[u8]| placement::handoff_targets(old, new, &self.name, k, rf);
        self.handoff_passes(&targets).await;
    }

    /// The passes of a hand-off to the targets `targets` names per key: one to every
    /// target without waiting on refusals, then one waiting on the targets that refused.
    /// The targets that did not answer.
    async fn handoff_passes(
        self: &Arc<Self>,
        targets: &(dyn Fn(&[u8]) -> Vec<String> + Sync),
    ) -> BTreeSet<String> {
        let mut budget = self.cfg.handoff_push_limit as usize;
        let (refusing, mut unreachable) = self.handoff_pass(targets, None, &mut budget).await;
        if !refusing.is_empty() {
            let mut budget = self.cfg.handoff_push_limit as usize;
            let (_, more) = self
                .handoff_pass(targets, Some(&refusing), &mut budget)
                .await;
            unreachable.extend(more);
        }
        unreachable
    }

    /// A graceful leave's hand-off (`Node::leave_cluster`), first step: once this member is
    /// marked leaving (it executes no write as a primary), waits for the writes it had
    /// admitted, and finds which members leave too: itself, and every member that answers
    /// an empty hand-off with [`LEAVING`] or does not answer.
    ///
    /// Why a leaver hands its keys over itself: the members that stay push only what they
    /// hold when their ring drops a leaver, so a key whose owners all leave at once (two
    /// members of four stopped by one `SIGTERM`) had its only copies on the leavers; a
    /// membership review lost 672 of 5,000 keys that way, and a counter restarted from 0.
    /// Those keys go before the leave is announced ([`Shared::handoff_on_leave`] with
    /// `sole`): the members that stay then hold the copies before their rings make them
    /// the keys' primaries, and execute no write on a key they lack (pushed after, a
    /// counter restarted from 0 before its copy arrived, and the copy lost to the newer
    /// restart). Writes to this member's keys wait meanwhile, as at any failover.
    ///
    /// Two members that leave at the same instant both mark themselves leaving before
    /// they ask, so at least one of them learns of the other and hands their shared keys
    /// to the members that stay. A target that fails a batch later counts as leaving too,
    /// and the pass runs again on the ring without it.
    pub(crate) async fn leavers(self: &Arc<Self>) -> BTreeSet<String> {
        // The writes this node admitted as a primary before it marked itself leaving
        // finish first (it admits none since): the scan reads what they stored.
        let settled = Instant::now() + LEAVE_EXECUTIONS_WAIT;
        let mut idle_checks = 0;
        while idle_checks < 2 && Instant::now() < settled {
            idle_checks = if self.executing.is_idle() {
                idle_checks + 1
            } else {
                0
            };
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut gone: BTreeSet<String> = BTreeSet::from([self.name.clone()]);
        gone.extend(self.members_leaving().await);
        gone
    }

    /// One hand-off of [`Shared::leavers`]'s description on `ring` (this node's ring when
    /// it marked itself leaving), `gone` the members leaving (grown by the targets that
    /// fail). `sole`: only the keys all of whose owners on `ring` are in `gone` — the keys
    /// lost if this node stops before they go, pushed first and before the leave is
    /// announced (a review's 300,000-key hand-off, one pass over every key, ran past its
    /// 5 s bound and lost 19,093 such keys); else every key, old owners included (a copy
    /// an owner missed), after the announcement, while writes no longer wait for it.
    pub(crate) async fn handoff_on_leave(
        self: &Arc<Self>,
        ring: &Ring,
        gone: &mut BTreeSet<String>,
        sole: bool,
    ) {
        let rf = self.cfg.replication_factor as usize;
        // Each pass finds at least one more member gone, or is the last.
        for _ in 0..ring.nodes().len() {
            if placement::ring_without(ring, gone).is_none() {
                tracing::warn!(node = %self.name, "no member stays: nothing to hand this node's keys to");
                return;
            }
            let leavers = gone.clone();
            let targets = |k: &[u8]| {
                if sole && !ring.owners(k, rf).iter().all(|o| leavers.contains(*o)) {
                    return Vec::new();
                }
                placement::leave_targets(ring, &leavers, &self.name, k, rf)
            };
            let unreachable = self.handoff_passes(&targets).await;
            let before = gone.len();
            gone.extend(unreachable);
            if gone.len() == before {
                break;
            }
            tracing::info!(node = %self.name, gone = ?gone, "members leaving too: handing this node's keys over again");
        }
        tracing::info!(node = %self.name, leaving = ?gone, sole, "keys handed over to the members that stay");
    }

    /// The members of this node's view that answer an empty hand-off with [`LEAVING`] or
    /// do not answer it: leaving (or gone) like this node.
    async fn members_leaving(self: &Arc<Self>) -> Vec<String> {
        let members: Vec<(String, SocketAddr)> = self
            .view
            .read()
            .members
            .values()
            .filter(|id| id.name != self.name)
            .map(|id| (id.name.clone(), id.rpc))
            .collect();
        let asks = members.into_iter().map(|(name, addr)| async move {
            let req = Request::Handoff {
                namespace: String::new(),
                entries: Vec::new(),
            };
            let answer = self.pool.call(&name, addr, req, None).await;
            leaving_answer(&answer).then_some(name)
        });
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One scan of the owner store for a hand-off to the targets `targets_of` names per
    /// key: to every target, without waiting on refusals (`only: None`), or to the targets
    /// in `only`, waiting. The targets that refused entries for now, and those that did
    /// not answer.
    async fn handoff_pass(
        self: &Arc<Self>,
        targets_of: &(dyn Fn(&[u8]) -> Vec<String> + Sync),
        only: Option<&BTreeSet<String>>,
        budget: &mut usize,
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        let limit = self.handoff_batch_bytes();
        let patient = only.is_some();
        // Each member's address and life: a batch for a life that ended is not sent.
        let members: BTreeMap<String, (SocketAddr, u64)> = self
            .view
            .read()
            .members
            .values()
            .filter(|id| only.is_none_or(|o| o.contains(&id.name)))
            .map(|id| (id.name.clone(), (id.rpc, id.generation)))
            .collect();
        // Members a batch could not reach: the rest of theirs are dropped (hand-off reads
        // and their next ring change's hand-off cover them), so that one dead member does
        // not hold up the others' for a timeout per batch.
        let mut unreachable: BTreeSet<String> = BTreeSet::new();
        // Members that refused entries for now: the rest of this pass sends them each
        // batch once, without waiting.
        let mut refusing: BTreeSet<String> = BTreeSet::new();
        for ns in self.owner.namespace_names() {
            let mut batches: BTreeMap<String, HandoffBatch> = BTreeMap::new();
            let mut after: Option<Bytes> = None;
            'scan: loop {
                let keys =
                    self.owner
                        .scan_keys_sync(&ns, ScanFrom::resume(after.as_deref()), SCAN_BATCH);
                let done = keys.len() < SCAN_BATCH;
                for k in &keys {
                    if *budget == 0 {
                        break 'scan;
                    }
                    let targets = targets_of(k);
                    if !targets.iter().any(|t| members.contains_key(t)) {
                        continue;
                    }
                    // Not a copy pushed here while this member settles and not proven
                    // yet: its new owner would store it, and then vouch for it when this
                    // member's proof asks (`warm`'s `prove_pushed`).
                    let Some(e) = self.settled_entry(&ns, k) else {
                        continue;
                    };
                    let wire = to_wire(&e);
                    for t in targets {
                        let Some(&(addr, generation)) = members.get(&t) else {
                            continue;
                        };
                        // (A target that refused entries in the first pass gets the
                        // rest of its share in the second.)
                        if unreachable.contains(&t) || (!patient && refusing.contains(&t)) {
                            continue;
                        }
                        *budget = budget.saturating_sub(1);
                        let batch = batches.entry(t.clone()).or_default();
                        if let Some(full) = batch.push(k, wire.clone(), limit) {
                            let resend = resend_for(patient, refusing.contains(&t));
                            match self
                                .send_handoff(&t, addr, Some(generation), &ns, full, resend)
                                .await
                            {
                                Handed::Taken => {}
                                Handed::Unreachable => {
                                    unreachable.insert(t);
                                }
                                Handed::Refused => {
                                    refusing.insert(t);
                                }
                            }
                        }
                    }
                }
                after = keys.last().cloned();
                if done || after.is_none() {
                    break;
                }
            }
            for (peer, mut batch) in batches {
                let Some(&(addr, generation)) = members.get(&peer) else {
                    continue;
                };
                if unreachable.contains(&peer) || (!patient && refusing.contains(&peer)) {
                    continue;
                }
                let resend = resend_for(patient, refusing.contains(&peer));
                match self
                    .send_handoff(&peer, addr, Some(generation), &ns, batch.take(), resend)
                    .await
                {
                    Handed::Taken => {}
                    Handed::Unreachable => {
                        unreachable.insert(peer);
                    }
                    Handed::Refused => {
                        refusing.insert(peer);
                    }
                }
            }
            if *budget == 0 {
                break;
            }
        }
        (refusing, unreachable)
    }

    /// Most bytes of a hand-off batch: 1 MiB, or less where a member's frames are smaller
    /// (`max_frame` follows `limits.max_value_bytes`), room left for the frame's own fields.
    pub(crate) fn handoff_batch_bytes(&self) -> usize {
        HANDOFF_BATCH_BYTES.min(self.max_frame.saturating_sub(64 * 1024).max(1))
    }

    /// Sends one hand-off batch (its entries, and when the first was read) to `peer` (in
    /// its life `generation`, when known: a member that restarted since the batch was read
    /// gets nothing, its new life's record of changes does not reach back to that read): one `Handoff` request, or, to a member
    /// of an earlier build, one `Set` per entry. A copy read more than
    /// [`HANDOFF_MAX_AGE_RPCS`] RPC timeouts before it goes (this node stalled, or other
    /// calls were slow) is read again first: a restarted member trusts a push on the word
    /// of members whose record reaches back only a few RPC timeouts before its start
    /// (`strata_cluster::warm::needed_ms`).
    ///
    /// The entries a target refuses for now ([`Response::Deferred`]: it settles after a
    /// restart and holds as many unproven pushes as it may) are left to the caller
    /// ([`Resend::Later`]), dropped ([`Resend::Never`]), or go again, read again, as its
    /// proof makes room, for up to [`Shared::settling_wait`] ([`Resend::Wait`]: the rest of
    /// the caller's pass waits, the proof's pace is its pace). Whether the peer took the
    /// batch ([`Handed`]).
    pub(crate) async fn send_handoff(
        self: &Arc<Self>,
        peer: &str,
        addr: SocketAddr,
        generation: Option<u64>,
        ns: &str,
        (mut entries, read_at): (Vec<(ByteBuf, WireEntry)>, Instant),
        resend: Resend,
    ) -> Handed {
        let max_age = HANDOFF_MAX_AGE_RPCS * self.pool.rpc_timeout;
        let mut stale = read_at.elapsed() > max_age;
        let first_try = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            if let Some(g) = generation
                && self.view.read().members.get(peer).map(|id| id.generation) != Some(g)
            {
                tracing::debug!(%peer, "hand-off batch dropped: the member left or restarted");
                return Handed::Taken;
            }
            if stale {
                entries = self.read_again(ns, entries);
            }
            let refused = match self
                .send_handoff_once(peer, addr, generation, ns, entries, max_age)
                .await
            {
                Ok(()) => return Handed::Taken,
                Err(None) => return Handed::Unreachable,
                Err(Some(refused)) => refused,
            };
            if resend == Resend::Later {
                return Handed::Refused;
            }
            if resend == Resend::Never || first_try.elapsed() >= self.settling_wait() {
                self.counters
                    .handoff_deferred_dropped
                    .fetch_add(refused.len() as u64, Ordering::Relaxed);
                tracing::warn!(
                    %peer,
                    entries = refused.len(),
                    "hand-off entries refused for now by a settling member, not sent again"
                );
                return Handed::Refused;
            }
            self.counters
                .handoff_retries
                .fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
            entries = refused;
            stale = true;
        }
    }

    /// How long a hand-off sends entries again to a member that refuses them for now: its
    /// proof starts twice `max_staleness_ms` after its baseline (this node's setting, the
    /// cluster's in practice), then takes about a batch per round trip to its witnesses;
    /// [`HANDOFF_SETTLING_WAIT`] beyond that.
    pub(crate) fn settling_wait(&self) -> Duration {
        HANDOFF_SETTLING_WAIT + Duration::from_millis(self.cfg.max_staleness_ms * 2)
    }

    /// One attempt of [`Shared::send_handoff`]: `Ok` when delivered (or nothing to send),
    /// `Err(Some(entries))` with the entries the peer refused for now (to send again),
    /// `Err(None)` when it failed. With the peer's life `generation` (known when the batch
    /// was read, and still the peer's then: [`Shared::send_handoff`]), a `HandoffFor`
    /// naming it: a settling peer proves the batch's copies from its process's start
    /// rather than from a margin of calls before it (`strata_cluster::warm::needed_ms_after_start`).
    async fn send_handoff_once(
        self: &Arc<Self>,
        peer: &str,
        addr: SocketAddr,
        generation: Option<u64>,
        ns: &str,
        entries: Vec<(ByteBuf, WireEntry)>,
        max_age: Duration,
    ) -> Result<(), Option<Vec<(ByteBuf, WireEntry)>>> {
        let Some((k0, e0)) = entries.first() else {
            return Ok(());
        };
        let one = Request::Set {
            namespace: ns.to_owned(),
            key: k0.to_vec(),
            entry: e0.clone(),
        };
        let n = entries.len() as u64;
        let batch = Request::Handoff {
            namespace: ns.to_owned(),
            entries,
        };
        use strata_cluster::rpc::features::{HANDOFF_BATCHES, HANDOFF_LIFE};
        // The batch naming the peer's life, beside the plain one a peer of an earlier build
        // gets instead: one more copy of the entries (at most a batch, ~1 MiB, per call in
        // flight), which `pick` decides on only once the connection told its features.
        let named = generation.map(|generation| {
            let Request::Handoff { namespace, entries } = &batch else {
                unreachable!("built above")
            };
            Request::HandoffFor {
                namespace: namespace.clone(),
                generation,
                entries: entries.clone(),
            }
        });
        let (req, fallback) = match &named {
            Some(named) => (named, vec![(HANDOFF_LIFE, &batch), (HANDOFF_BATCHES, &one)]),
            None => (&batch, vec![(HANDOFF_BATCHES, &one)]),
        };
        let pushes = &self.counters.handoff_pushes;
        let answer = self.pool.call_for(peer, addr, req, &fallback, None).await;
        let Request::Handoff { entries, .. } = batch else {
            unreachable!("built above")
        };
        match answer {
            Ok((Response::HandedOff { .. }, _)) => {
                pushes.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
            // (Fallen back to one `Set`: `stored` is of that one, the batch's first.)
            Ok((Response::Deferred { stored }, _)) => {
                let mut entries = entries;
                let taken = (stored as usize).min(entries.len());
                pushes.fetch_add(taken as u64, Ordering::Relaxed);
                tracing::debug!(%peer, taken, "hand-off batch refused in part for now");
                Err(Some(entries.split_off(taken)))
            }
            Ok((Response::Stored { .. }, true)) => {
                pushes.fetch_add(1, Ordering::Relaxed);
                let mut sent_from = Instant::now();
                for (key, entry) in entries.into_iter().skip(1) {
                    // One call each: a copy that waited too long is read again.
                    let entry = if sent_from.elapsed() > max_age {
                        sent_from = Instant::now();
                        match self.settled_entry(ns, &key) {
                            Some(e) => to_wire(&e),
                            None => continue,
                        }
                    } else {
                        entry
                    };
                    let set = Request::Set {
                        namespace: ns.to_owned(),
                        key: key.into_vec(),
                        entry,
                    };
                    if matches!(
                        self.pool.call(peer, addr, set, None).await,
                        Ok(Response::Stored { .. })
                    ) {
                        pushes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
            other => {
                tracing::debug!(%peer, ?other, "hand-off batch not delivered");
                Err(None)
            }
        }
    }

    /// The copies of `entries`' keys held now (not proven pushes), for a batch that waited.
    fn read_again(
        &self,
        ns: &str,
        entries: Vec<(ByteBuf, WireEntry)>,
    ) -> Vec<(ByteBuf, WireEntry)> {
        entries
            .into_iter()
            .filter_map(|(k, _)| self.settled_entry(ns, &k).map(|e| (k, to_wire(&e))))
            .collect()
    }

    /// Queues `drop` (a [`Work::DropUnverified`]) for the applier, counted in
    /// `drops_pending` until it is carried out.
    pub(super) fn queue_drop(&self, drop: Work) {
        self.drops_pending.fetch_add(1, Ordering::AcqRel);
        if self.work_tx.send(drop).is_err() {
            self.drops_pending.fetch_sub(1, Ordering::AcqRel);
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
                    after_stall,
                    lease_held,
                } => {
                    // Invalidations were lost: any remembered absence may be one of them.
                    self.absent.forget_all();
                    self.drop_unverified(&origin, lost, owned, lease_held).await;
                    self.drops_pending.fetch_sub(1, Ordering::AcqRel);
                    if after_stall {
                        self.pause.dropped();
                    }
                }
            }
        }
    }
}

/// Whether and when [`Shared::send_handoff`] sends again what a settling target refused
/// for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Not here: the caller sends it again later (a hand-off's first pass).
    Later,
    /// As the target makes room, for up to [`Shared::settling_wait`]; then counted
    /// dropped.
    Wait,
    /// Never: counted dropped (a proof's pass-on; a target that refused past the wait).
    Never,
}

/// How a hand-off pass (`patient`: its second) sends to a target that has (`refused`) or
/// has not refused entries for now in this pass.
fn resend_for(patient: bool, refused: bool) -> Resend {
    match (patient, refused) {
        (false, _) => Resend::Later,
        (true, false) => Resend::Wait,
        (true, true) => Resend::Never,
    }
}

/// How long a leaving member waits for the writes it executes as a primary to finish
/// before it hands its keys over ([`Shared::handoff_on_leave`]).
const LEAVE_EXECUTIONS_WAIT: Duration = Duration::from_secs(2);

/// What a member that is leaving the cluster answers a hand-off or a pushed copy: it would
/// not keep it (`Shared::handoff_on_leave` asks who leaves with it so).
pub(crate) const LEAVING: &str = "the node is leaving the cluster";

/// Whether `answer` (through the pool, which makes a member's error an `Err`) says its
/// member is leaving, or did not come at all. A member of an earlier build that cannot
/// decode the request answers that its body is malformed: it stays.
pub(crate) fn leaving_answer(answer: &Result<Response, String>) -> bool {
    match answer {
        Ok(Response::Error(e)) => e.contains(LEAVING),
        Ok(_) => false,
        Err(e) => e.contains(LEAVING) || !e.contains(": malformed body: "),
    }
}

/// What became of a hand-off batch ([`Shared::send_handoff`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handed {
    /// The target took it (or it was dropped on purpose: the target left or restarted).
    Taken,
    /// The target did not answer: the rest of this hand-off skips it.
    Unreachable,
    /// The target, settling, refused some of it for now for longer than the caller waits
    /// (or the caller did not wait): the rest of this hand-off tries it once per batch.
    Refused,
}

/// How many RPC timeouts a hand-off batch may wait between its first read and its send
/// before it is read again ([`Shared::send_handoff`]).
const HANDOFF_MAX_AGE_RPCS: u32 = 4;
/// How long a hand-off batch is sent again to a target that refuses it for now (a
/// restarted member whose proof has as many pushes to prove as it may hold), beyond the
/// twice `max_staleness_ms` its proof waits before it starts ([`Shared::settling_wait`]).
const HANDOFF_SETTLING_WAIT: Duration = Duration::from_secs(60);
/// Most entries in one hand-off batch (each stored by the receiver inline, as a `Set`).
const HANDOFF_BATCH_ENTRIES: usize = 256;
/// Most bytes (keys, values, tags) in one hand-off batch, but for a single larger entry
/// ([`Shared::handoff_batch_bytes`]: less where frames are smaller).
const HANDOFF_BATCH_BYTES: usize = 1 << 20;

/// One new owner's share of a hand-off: at most [`HANDOFF_BATCH_ENTRIES`] entries and the
/// byte limit it is given, but for a single larger entry.
#[derive(Default)]
pub(crate) struct HandoffBatch {
    entries: Vec<(ByteBuf, WireEntry)>,
    bytes: usize,
    /// When its first entry was read.
    read_at: Option<Instant>,
}

impl HandoffBatch {
    /// Adds `key`'s copy, just read; when it would not fit within `limit` bytes (or the
    /// entry count), first hands back what the batch held, to be sent before it.
    pub(crate) fn push(
        &mut self,
        key: &[u8],
        entry: WireEntry,
        limit: usize,
    ) -> Option<(Vec<(ByteBuf, WireEntry)>, Instant)> {
        // Each entry's own fields (lengths, version, expiry) cost a few bytes more.
        let size = 64
            + key.len()
            + entry.value.len()
            + entry.tags.iter().map(|t| t.len() + 8).sum::<usize>();
        let full = !self.entries.is_empty()
            && (self.entries.len() >= HANDOFF_BATCH_ENTRIES || self.bytes + size > limit);
        let out = full.then(|| self.take());
        self.read_at.get_or_insert_with(Instant::now);
        self.bytes += size;
        self.entries.push((ByteBuf::from(key.to_vec()), entry));
        out
    }

    /// Its entries and when the first was read; empty again.
    pub(crate) fn take(&mut self) -> (Vec<(ByteBuf, WireEntry)>, Instant) {
        self.bytes = 0;
        let read_at = self.read_at.take().unwrap_or_else(Instant::now);
        (std::mem::take(&mut self.entries), read_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: usize) -> WireEntry {
        WireEntry {
            value: vec![0; bytes],
            version: 1,
            expires_at_ms: None,
            stale_until_ms: None,
            tags: vec![],
        }
    }

    #[test]
    fn a_hand_off_batch_never_passes_its_byte_limit_but_for_one_large_entry() {
        let mut b = HandoffBatch::default();
        let limit = 1_000;
        assert!(b.push(b"a", entry(400), limit).is_none());
        assert!(b.push(b"b", entry(400), limit).is_none());
        // The third would pass the limit: the first two go first.
        let (sent, _) = b.push(b"c", entry(400), limit).expect("sent before");
        assert_eq!(sent.len(), 2);
        // One entry larger than the limit goes alone.
        let (sent, _) = b.push(b"d", entry(5_000), limit).expect("sent before");
        assert_eq!(sent.len(), 1);
        let (sent, _) = b.push(b"e", entry(1), limit).expect("the large one alone");
        assert_eq!(sent.len(), 1);
        assert_eq!(&sent[0].0[..], b"d");
        // And at most HANDOFF_BATCH_ENTRIES entries.
        let mut b = HandoffBatch::default();
        let mut sent = 0;
        for i in 0..HANDOFF_BATCH_ENTRIES + 1 {
            if let Some((s, _)) = b.push(format!("k{i}").as_bytes(), entry(0), usize::MAX) {
                assert_eq!(s.len(), HANDOFF_BATCH_ENTRIES);
                sent += 1;
            }
        }
        assert_eq!(sent, 1);
    }
}
