//! Coherence out of this node: invalidations originated here, batched and disseminated
//! (gossip, or pushed under load), strict rounds, and what the coherence state machine asks
//! for (repairs, drops).

use super::*;

/// The least time between two dissemination rounds.
const DISSEMINATION_PACE: std::time::Duration = std::time::Duration::from_millis(1);

/// Most answers one repair of a gap asks for in a row ([`Shared::carry_out_coherence`]):
/// 64 answers of up to `coherence::REPAIR_ITEMS` reach past any origin's log.
const REPAIR_ROUNDS: usize = 64;

/// An origin's repair task in flight (`Shared::repairing`): dropped when the task ends,
/// however it ends, so that a later gap of that origin is asked again.
struct Asking(Arc<Shared>, String);

impl Drop for Asking {
    fn drop(&mut self) {
        self.0.repairing.lock().remove(&self.1);
    }
}

impl Shared {
    // ----- coherence -----

    pub(crate) fn carry_out_coherence(self: &Arc<Self>, outputs: Vec<coherence::Output>) {
        for o in outputs {
            match o {
                coherence::Output::Broadcast(bytes) => {
                    self.with_membership(|m| m.broadcast_now(&bytes));
                }
                coherence::Output::Apply(inv) => {
                    // Recorded by coherence now: this node's stamps order after it from now
                    // on, not only once the applier gets to it (a write a primary restamps
                    // because coherence refuses its version must land above it).
                    self.observe(Version::from_u64(inv.version));
                    let _ = self.work_tx.send(Work::Apply(inv));
                }
                coherence::Output::DropUnverified {
                    origin,
                    lost,
                    life,
                    owned,
                } => {
                    if lost > 0 {
                        // Now, not once the applier gets to the drop: a witness answering
                        // meanwhile would tell a record whole across the gap.
                        self.gap_given_up(&origin, life);
                    }
                    self.queue_drop(Work::DropUnverified {
                        origin,
                        lost,
                        owned,
                        after_stall: false,
                        lease_held: false,
                    });
                }
                coherence::Output::AskLatest { origin } => {
                    let addr = self.view.read().members.get(&origin).map(|id| id.rpc);
                    if let Some(addr) = addr {
                        self.pull_status_from(origin, addr);
                    }
                }
                coherence::Output::Repair {
                    origin,
                    generation,
                    from,
                    to,
                } => {
                    let Some(addr) = self.view.read().members.get(&origin).map(|id| id.rpc) else {
                        continue;
                    };
                    if !self.repairing.lock().insert(origin.clone()) {
                        continue; // asked already: that task asks on for the rest
                    }
                    let me = self.clone();
                    tokio::spawn(async move {
                        // Free for the next ask however this task ends (a panic too).
                        let _asking = Asking(me.clone(), origin.clone());
                        // An answer carries part of a long range (a frame's worth, or
                        // `REPAIR_ITEMS`): the rest is asked at once, for as long as each
                        // answer brings something, rather than at the next ticks (a member
                        // back from a 5 s cut missed 121,000 invalidations, more than ten
                        // answers, and its gap must close within `max_staleness_ms`).
                        let mut next = from;
                        for _ in 0..REPAIR_ROUNDS {
                            let req = Request::Invalidations {
                                origin: origin.clone(),
                                from: next,
                                to,
                            };
                            match me.pool.call(&origin, addr, req, None).await {
                                Ok(Response::Invalidations(items)) => {
                                    tracing::debug!(node = %me.name, %origin, generation, from = next, to, got = items.len(), "gap repaired");
                                    if items.is_empty() {
                                        break;
                                    }
                                    let mut last = 0;
                                    for bytes in items {
                                        let now = me.coherence_ms();
                                        let out = match Item::decode(&bytes) {
                                            Some(item) => {
                                                if let Item::Invalidation(inv) = &item {
                                                    last = last.max(inv.seq);
                                                }
                                                me.coherence.lock().receive_item(now, item)
                                            }
                                            None => me.coherence.lock().receive(now, &bytes),
                                        };
                                        me.carry_out_coherence(out);
                                    }
                                    // Done, or no longer wanted (closed, given up, or its
                                    // life held down meanwhile).
                                    let wanted =
                                        me.coherence.lock().peer_state(&origin).iter().any(
                                            |(g, applied, _, _)| *g == generation && *applied < to,
                                        );
                                    if last < next || last >= to || !wanted {
                                        break;
                                    }
                                    next = last + 1;
                                }
                                other => {
                                    tracing::debug!(node = %me.name, %origin, generation, from = next, to, answer = ?other.map(|_| "unexpected"), "gap repair failed");
                                    break;
                                }
                            }
                        }
                    });
                }
            }
        }
    }

    /// Stamps an invalidation made on this node; the caller disseminates it with
    /// [`Shared::publish`] (after a strict round, so that members count what they remove
    /// for the round rather than for the gossip).
    pub(crate) fn originate(&self, version: Version, op: InvalidationOp) -> Invalidation {
        // The state machine's own broadcast output is one item per invalidation; the
        // disseminator batches them instead (see `disseminate_loop`). Remembered first:
        // a copy older than it, stored between the removal below and a later record,
        // would pass the store's check against coherence.
        let inv = self
            .coherence
            .lock()
            .originate(self.coherence_ms(), version.as_u64(), op)
            .0;
        if let InvalidationOp::Key { namespace, key } = &inv.op
            && let Some(e) = self.owner.get_retained_entry(namespace, key)
            && e.version < version
        {
            // This node's own store may hold an older value of a key it no longer owns
            // (found by the simulator); its own items never come back to it, so it drops
            // that value here.
            self.owner.remove_version_sync(namespace, key, e.version);
        }
        inv
    }

    /// Queues an invalidation made here for dissemination.
    pub(crate) fn publish(&self, inv: Invalidation) {
        self.outbox.lock().push(inv);
        self.outbox_wake.notify_one();
    }

    /// Disseminates what [`Shared::publish`] queued: whatever accumulated since the last
    /// round goes out as batches, so a burst of writes costs a few items rather than one
    /// each. Rounds are [`DISSEMINATION_PACE`] apart at least: a lone write still leaves at
    /// once, and a stream of them leaves in batches of a millisecond's writes (one round per
    /// write cost a gossip packet to each member, relayed again by each, per write).
    ///
    /// - Normally as foca custom broadcasts, each with a gossip round sent at once.
    /// - Under load, when foca's broadcast backlog is over [`GOSSIP_BACKLOG`] items (each
    ///   item is retransmitted several times, a packet carries two or three, and the
    ///   backlog is scanned on every add), pushed to every live member over the peer
    ///   connections instead (`Push`: one frame per batch per member).
    /// - An invalidation too large for a gossip packet (a long key or pattern) is pushed.
    ///
    /// Either way the heartbeats and the anti-entropy ping reveal anything a member missed,
    /// and it repairs the gap from this node's log.
    pub(crate) async fn disseminate_loop(self: Arc<Self>) {
        loop {
            self.outbox_wake.notified().await;
            let invs = std::mem::take(&mut *self.outbox.lock());
            if invs.is_empty() {
                continue;
            }
            let backlog = self
                .membership
                .lock()
                .as_ref()
                .map_or(0, Membership::broadcast_backlog);
            for item in Item::batches(&invs) {
                if backlog < GOSSIP_BACKLOG && item.len() <= coherence::MAX_BATCH_BYTES {
                    self.with_membership(|m| m.broadcast_now(&item));
                    continue;
                }
                self.counters.pushed_batches.fetch_add(1, Ordering::Relaxed);
                for (name, addr) in self.others() {
                    let (me, item) = (self.clone(), item.clone());
                    tokio::spawn(async move {
                        let _ = me
                            .pool
                            .call(&name, addr, Request::Push { item }, None)
                            .await;
                    });
                }
            }
            // One round per millisecond at most: under a stream of writes, what they
            // publish meanwhile leaves together in the next round.
            tokio::time::sleep(DISSEMINATION_PACE).await;
        }
    }

    /// Sends `inv` to every other live member and waits until each has applied it (or
    /// failed to answer in time). Returns the entries removed from owner stores, counting
    /// each key once (on its first owner), and the members that did not confirm.
    pub(crate) async fn strict(self: &Arc<Self>, inv: &Invalidation) -> (u64, Vec<String>) {
        self.counters
            .strict_invalidations
            .fetch_add(1, Ordering::Relaxed);
        let item = Item::Invalidation(inv.clone()).encode();
        let calls = self.others().into_iter().map(|(name, addr)| {
            let item = item.clone();
            async move {
                match self
                    .pool
                    .call(&name, addr, Request::Apply { item }, None)
                    .await
                {
                    Ok(Response::Applied { removed }) => Ok(removed),
                    Ok(other) => {
                        tracing::warn!(peer = %name, ?other, "unexpected answer to a strict invalidation");
                        Err(name)
                    }
                    Err(e) => {
                        tracing::warn!(peer = %name, error = %e, "a member did not confirm a strict invalidation");
                        Err(name)
                    }
                }
            }
        });
        let mut removed = 0;
        let mut missing = Vec::new();
        for r in futures_util::future::join_all(calls).await {
            match r {
                Ok(n) => removed += n,
                Err(name) => missing.push(name),
            }
        }
        (removed, missing)
    }
}
