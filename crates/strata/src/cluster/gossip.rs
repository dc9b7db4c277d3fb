//! Membership on the node: foca's outputs carried out (packets, members up and down, the
//! ring refreshed), the gossip receive and timer tasks, the periodic tick, and leaving.

use super::*;

/// Most lease pings on their way to one member at once.
const LEASE_PINGS_IN_FLIGHT: u32 = 5;

impl Shared {
    // ----- membership outputs -----

    pub(crate) fn with_membership(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Membership) -> Vec<Output>,
    ) {
        let out = match self.membership.lock().as_mut() {
            Some(m) => f(m),
            None => return,
        };
        self.carry_out(out);
    }

    pub(crate) fn carry_out(self: &Arc<Self>, outputs: Vec<Output>) {
        let mut changed = false;
        let mut up = Vec::new();
        let mut replaced = Vec::new();
        for o in outputs {
            match o {
                Output::Send { to, packet } => {
                    #[cfg(feature = "fault-injection")]
                    if self.faults.gossip.read().contains(&to) {
                        continue;
                    }
                    if self.socket.try_send_to(&packet, to).is_err() {
                        self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Output::Schedule { timer, after } => {
                    let seq = self.timer_seq.fetch_add(1, Ordering::Relaxed);
                    self.timers
                        .lock()
                        .insert((Instant::now() + after, seq), timer);
                    self.wake.notify_one();
                }
                Output::Up(id) => {
                    let now = self.coherence_ms();
                    let (out, lives) = {
                        let mut c = self.coherence.lock();
                        let out = c.member_up(now, &id.name, id.generation);
                        (out, c.peer_state(&id.name))
                    };
                    // What this node knows of the member's coherence lives: (generation,
                    // applied, known, waiting).
                    tracing::info!(node = %self.name, member = %id.name, generation = id.generation, ?lives, "member up");
                    // After the view is refreshed (below): asking it needs its address.
                    up.push(out);
                    changed = true;
                }
                Output::Replaced(id) => {
                    // Its life ended unseen (a restart faster than failure detection): as
                    // a witness, this node counts it among the lives that ended.
                    tracing::info!(node = %self.name, member = %id.name, generation = id.generation, "member replaced by a newer generation");
                    let keep_ms = self.coherence.lock().tombstone_ms();
                    self.warm
                        .note_ended(&id.name, id.generation, self.monotonic_ms(), keep_ms);
                    replaced.push(id.name);
                }
                Output::Down(id) => {
                    let (out, keep_ms, lives) = {
                        let mut c = self.coherence.lock();
                        let now = self.coherence_ms();
                        let out = c.member_down(now, &id.name, id.generation);
                        (out, c.tombstone_ms(), c.peer_state(&id.name))
                    };
                    tracing::warn!(node = %self.name, member = %id.name, generation = id.generation, ?lives, "member down");
                    // A witness tells a restarted member's proof which lives ended lately.
                    self.warm
                        .note_ended(&id.name, id.generation, self.monotonic_ms(), keep_ms);
                    self.pool.forget(&id.name);
                    self.carry_out_coherence(vec![out]);
                    changed = true;
                }
                Output::Rejoined => {
                    // The renewed identity's generation, read now (a leave empties the
                    // membership), reserved on: a restart starts above it.
                    let renewed = self.member_generation();
                    let me = self.clone();
                    tokio::task::spawn_blocking(move || me.generations.note(renewed));
                    let holds = self
                        .lease
                        .lock()
                        .held_through(self.monotonic_ms(), self.cfg.expected_size as usize);
                    let out = self.coherence.lock().rejoined(holds);
                    // What it drops depends on its lease: the log said "what it held" either
                    // way, which a partition review took for a loss where nothing owned was
                    // dropped.
                    let owned = matches!(
                        out,
                        strata_cluster::coherence::Output::DropUnverified { owned: true, .. }
                    );
                    if owned {
                        tracing::warn!(node = %self.name, "the others declared this node down; back under a new identity, it empties L1, drops the owner-store copies of keys it does not own, and holds those it owns unproven until their owners vouch for them (its lease lapsed: they may have changed without it)");
                    } else {
                        tracing::warn!(node = %self.name, "the others declared this node down; back under a new identity, it empties L1 and drops the owner-store copies of keys it has not owned lately (its lease held: it keeps the keys it owns, and those it owned under a ring of the last seconds for their hand-off)");
                    }
                    // Cut off (or its lease lapsed): it joins again, and executes nothing
                    // until its view has settled (`placement::Joining`). While it was away
                    // the others placed its keys on a ring without it: its hand-off reads
                    // ask those owners too, from this view and from each one it has in the
                    // next 30 s (`placement::others_ring`, `after_rejoin`).
                    if owned {
                        let now = self.monotonic_ms();
                        let ring = self.view.read().ring.clone();
                        let kept = placement::others_ring(&ring, &self.name).map(Arc::new);
                        let mut v = self.view.write();
                        v.joining.rejoin(now);
                        v.rejoined_ms = Some(now);
                        if let Some(kept) = kept {
                            placement::keep_previous(&mut v.previous, kept, Instant::now());
                        }
                        drop(v);
                        self.carry_out_coherence(vec![out]);
                    } else {
                        // Its lease held: what it owned lately stays for the hand-offs.
                        self.drop_after_rejoin_with_lease();
                    }
                }
                Output::Received(bytes) => {
                    let out = self.coherence.lock().receive(self.coherence_ms(), &bytes);
                    self.carry_out_coherence(out);
                }
            }
        }
        if changed {
            self.refresh_view();
        }
        // A member restarted faster than failure detection comes back with an empty owner
        // store under the same ring, so no ring change hands its keys back: until they
        // reach it, a key's other owner holds its only copy (a review run with two such
        // restarts, `fast_restart`, lost 1,420 acknowledged `SET`s). Hand them over as if
        // it had just joined: to it, every key it owns (its new life, once the view has
        // it).
        for name in replaced {
            let ring = self.ring();
            if let Some(without) = placement::others_ring(&ring, &name)
                && ring.nodes().contains(&name)
            {
                let me = self.clone();
                tokio::spawn(async move { me.push_handoff(&without, &ring).await });
            }
        }
        for out in up {
            self.carry_out_coherence(out);
        }
    }

    /// After a rejoin whose lease held: drops L1 and the owner-store copies of keys this
    /// node did not own under any ring of the last seconds ([`Shared::drop_unverified`]
    /// with `lease_held`, [`Shared::lately_owned`]).
    pub(crate) fn drop_after_rejoin_with_lease(self: &Arc<Self>) {
        self.queue_drop(Work::DropUnverified {
            origin: self.name.clone(),
            lost: 0,
            owned: false,
            after_stall: false,
            lease_held: true,
        });
    }

    /// Recomputes the members and the ring from membership; on a change of ring, keeps the
    /// old one for hand-off reads and pushes owned entries to their new owners.
    pub(crate) fn refresh_view(self: &Arc<Self>) {
        // One refresh at a time, so the ring installed last is the one read last.
        let _refreshing = self.refreshing.lock();
        let Some((live, ring)) = self
            .membership
            .lock()
            .as_ref()
            .map(|m| (m.live(), m.ring(self.cfg.vnodes)))
        else {
            return;
        };
        self.coherence
            .lock()
            .note_view(live.len(), self.cfg.expected_size as usize);
        let mut v = self.view.write();
        let (members, shared_names) = strata_cluster::identity::one_per_name(live);
        if members != v.members || ring.version() != v.ring.version() {
            v.slots = None;
        }
        for name in shared_names.difference(&v.shared_names) {
            tracing::error!(node = %self.name, %name, "two processes run under the name {name}: each member's node.name must be its own; the one started first keeps the name, the other executes nothing and is not ready");
        }
        v.members = members;
        v.shared_names = shared_names;
        if ring.version() != v.ring.version() {
            let now = self.monotonic_ms();
            // Before the new ring is seen: the members it lost stay in the ring a primary
            // executes on for the grant window (`ExecLease::refresh`).
            let window = self.grant_window_ms();
            let mut grant_view = self.grant_view.lock();
            grant_view.observe(&ring, now, window);
            self.exec_lease.lock().refresh(
                &self.name,
                &ring,
                grant_view.lost_within(now, window),
                now,
            );
            drop(grant_view);
            let old = std::mem::replace(&mut v.ring, Arc::new(ring));
            tracing::info!(node = %self.name, members = v.ring.nodes().len(), ring = v.ring.version(), "ring changed");
            let new_ring = v.ring.clone();
            let expected = self.cfg.expected_size as usize;
            let joining =
                v.joining
                    .on_ring_change(Some(&old), &new_ring, &self.name, expected, now);
            if let Some(kept) = placement::previous_ring(Some(&old), &v.ring, &self.name, joining) {
                placement::keep_previous(&mut v.previous, Arc::new(kept), Instant::now());
            }
            if placement::after_rejoin(v.rejoined_ms, now)
                && let Some(kept) = placement::others_ring(&v.ring, &self.name)
            {
                placement::keep_previous(&mut v.previous, Arc::new(kept), Instant::now());
            }
            self.counters.ring_changes.fetch_add(1, Ordering::Relaxed);
            let new = v.ring.clone();
            drop(v);
            let me = self.clone();
            tokio::spawn(async move { me.push_handoff(&old, &new).await });
        }
    }

    // ----- periodic work -----

    /// One maintenance tick (every 100 ms from the L2 actor).
    pub(crate) fn tick(self: &Arc<Self>) {
        let n = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        let was = self.stall.lock().stalls();
        self.stall.lock().tick(self.monotonic_ms());
        self.lease
            .lock()
            .observe(self.monotonic_ms(), self.cfg.expected_size as usize);
        if self.stall.lock().stalls() > was {
            self.coherence.lock().note_stall();
            tracing::warn!(node = %self.name, "this node stalled (its tick came late): it executes no write as a primary for {} ms", strata_cluster::primary::StallGuard::QUARANTINE_MS);
            // Any suspicion of it raised meanwhile is refuted now, before it runs out into a
            // `Down` (`Membership::refute_after_stall`).
            self.with_membership(|m| m.refute_after_stall());
            // What it held may have changed meanwhile, unannounced to it: commands wait
            // while it drops what it holds unverified, and its owner store is read by no
            // one until a majority answers pings sent from now on ([`pause`]).
            self.pause.dropping();
            self.unverified_since_ms
                .store(self.monotonic_ms(), Ordering::Release);
            // Nothing read meanwhile is kept either: if the others declared this node
            // down, no invalidation reaches it until it has rejoined (a review's 7 s pause:
            // copies read after the drop were served stale for 8 s).
            if let Some(c) = self.cache() {
                c.hold_local_copies(true);
            }
            // A stall may have lost any origin's invalidations: as a witness, its record
            // starts over for every caller.
            self.warm.record.lock().restart(self.monotonic_ms());
            // Nor does any earlier proof's word on its own copies stand.
            self.warm.vouched.lock().clear();
            self.queue_drop(Work::DropUnverified {
                origin: self.name.clone(),
                lost: 1,
                owned: false,
                after_stall: true,
                lease_held: false,
            });
        }
        self.pause.tick();
        let since = self.unverified_since_ms.load(Ordering::Acquire);
        if since != 0
            && self.pause.is_open()
            && self.drops_pending.load(Ordering::Acquire) == 0
            && self.lease.lock().holds_since(
                since,
                self.monotonic_ms(),
                self.cfg.expected_size as usize,
            )
        {
            self.unverified_since_ms.store(0, Ordering::Release);
            tracing::info!(node = %self.name, "a majority answered after the stall: this node's owned copies are read again");
            if let Some(c) = self.cache() {
                c.hold_local_copies(false);
                // L3 stayed off the read path meanwhile; it serves again once proven
                // against the owners as they are now.
                warm::begin(self.clone(), c.clone(), false);
            }
        }
        let out = self.coherence.lock().tick(self.coherence_ms());
        self.carry_out_coherence(out);
        if n % HEARTBEAT_EVERY == 0 {
            let hb = self.coherence.lock().heartbeat();
            if let coherence::Output::Broadcast(bytes) = hb {
                // Heartbeats ride on regular gossip; no extra round for them.
                if let Some(m) = self.membership.lock().as_mut() {
                    m.broadcast(&bytes);
                }
            }
            self.pull_status();
        }
        if n % (strata_cluster::primary::Lease::PING_EVERY_MS / 100) == 0 {
            self.renew_lease();
        }
        if n % self.cfg.owner_sweep_interval_ms.div_ceil(100).max(1) == 0 {
            // The one part of a tick that may take long (a large owner store): off the
            // runtime's threads.
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.owner.purge_expired_sync());
        }
        if n % REFRESH_EVERY == 0 {
            self.refresh_view();
        }
    }

    /// Pings every member of this node's view; each answer from a member that counts this
    /// node as live grants the primary's lease from the time its ping was sent ([`strata_cluster::primary::Lease`]). Pings wait as long
    /// as any request (`rpc_timeout`: a shorter wait would mark a loaded peer's connection
    /// dead), and up to [`LEASE_PINGS_IN_FLIGHT`] may be on their way to one member, so a
    /// slow answer delays the lease's renewal, not the next ping.
    pub(crate) fn renew_lease(self: &Arc<Self>) {
        let others = self.others();
        let expected = self.cfg.expected_size as usize;
        self.lease
            .lock()
            .retain(|m| others.iter().any(|(n, _)| n == m), expected);
        {
            let now = self.monotonic_ms();
            let window = self.grant_window_ms();
            let ring = self.ring();
            let grant_view = self.grant_view.lock();
            let mut exec = self.exec_lease.lock();
            exec.retain(|m| others.iter().any(|(n, _)| n == m), expected);
            exec.refresh(&self.name, &ring, grant_view.lost_within(now, window), now);
        }
        if expected <= 2 {
            // No majority to lose: the lease always holds (`Lease::holds`).
            return;
        }
        self.lease_pings
            .lock()
            .retain(|m, _| others.iter().any(|(n, _)| n == m));
        for (name, addr) in others {
            {
                let mut inflight = self.lease_pings.lock();
                let n = inflight.entry(name.clone()).or_insert(0);
                if *n >= LEASE_PINGS_IN_FLIGHT {
                    continue;
                }
                *n += 1;
            }
            let me = self.clone();
            tokio::spawn(async move {
                let sent = me.monotonic_ms();
                let answer = me.pool.call(&name, addr, Request::LeasePing, None).await;
                let granted = lease_granted(&answer);
                if granted {
                    me.lease.lock().grant(&name, sent, expected);
                    let told = lease_view(&answer);
                    if strata_cluster::primary::grant_counts(
                        granted,
                        told.as_ref().map(|(held, named)| (*held, named.len())),
                        me.grant_window_ms(),
                    ) {
                        let named = told.map(|(_, named)| named).into_iter().flatten();
                        let ring = me.ring();
                        let mut beyond = false;
                        me.exec_lease.lock().grant(
                            &name,
                            sent,
                            named.inspect(|n| {
                                beyond |= ring
                                    .nodes()
                                    .binary_search_by(|m| m.as_str().cmp(n))
                                    .is_err();
                            }),
                            expected,
                        );
                        if beyond {
                            me.counters
                                .lease_grants_unmatched
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        me.counters
                            .lease_grants_unmatched
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Back after a silence: the member may have suspected this node in it, and
                // never told it (`strata_cluster::Silences`). Any answer is contact.
                if (answer.is_ok() || granted)
                    && me
                        .silences
                        .lock()
                        .answered(&name, me.monotonic_ms(), granted)
                {
                    tracing::info!(node = %me.name, member = %name, "a member answers again after a silence: this node refutes any suspicion of it raised meanwhile");
                    me.with_membership(|m| m.refute_after_silence());
                }
                if let Some(n) = me.lease_pings.lock().get_mut(&name) {
                    *n = n.saturating_sub(1);
                }
            });
        }
    }

    /// Anti-entropy: asks one member, each in turn, for its latest sequence number, so a
    /// gap is noticed even when gossip never delivered that member's heartbeats.
    pub(crate) fn pull_status(self: &Arc<Self>) {
        let others = self.others();
        let names: Vec<String> = others.iter().map(|(n, _)| n.clone()).collect();
        let Some(name) = self.coherence.lock().pull_target(&names).map(str::to_owned) else {
            return;
        };
        if let Some((_, addr)) = others.into_iter().find(|(n, _)| *n == name) {
            self.pull_status_from(name, addr);
        }
    }

    /// Asks `name` for its latest sequence number, in a task of its own; the answer is
    /// received as that member's heartbeat.
    pub(crate) fn pull_status_from(self: &Arc<Self>, name: String, addr: SocketAddr) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Ok(Response::Status { generation, latest }) =
                me.pool.call(&name, addr, Request::Ping, None).await
            {
                let item = Item::Heartbeat {
                    origin: name,
                    generation,
                    latest,
                };
                let out = me.coherence.lock().receive_item(me.coherence_ms(), item);
                me.carry_out_coherence(out);
            }
        });
    }

    pub(crate) async fn gossip_loop(self: Arc<Self>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut logged_rejects = 0u64;
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "gossip recv failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let packet = &buf[..n];
            #[cfg(feature = "fault-injection")]
            if self.faults.gossip.read().contains(&from) {
                continue;
            }
            self.with_membership(|m| m.handle_packet(packet));
            let rejected = self
                .membership
                .lock()
                .as_ref()
                .map_or(0, |m| m.stats().rejected_packets);
            if rejected > logged_rejects {
                // Logged once per burst, not per packet: a flood must not flood the log.
                if rejected == 1 || rejected >= logged_rejects * 2 {
                    tracing::warn!(node = %self.name, %from, rejected, "gossip packet without the cluster secret dropped");
                }
                logged_rejects = rejected;
            }
        }
    }

    pub(crate) async fn timer_loop(self: Arc<Self>) {
        loop {
            let next = self.timers.lock().keys().next().map(|(at, _)| *at);
            match next {
                None => self.wake.notified().await,
                Some(at) if at > Instant::now() => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                Some(_) => {
                    let due: Vec<MembershipTimer> = {
                        let mut t = self.timers.lock();
                        let now = Instant::now();
                        let keys: Vec<(Instant, u64)> =
                            t.range(..=(now, u64::MAX)).map(|(k, _)| *k).collect();
                        keys.into_iter().filter_map(|k| t.remove(&k)).collect()
                    };
                    for timer in due {
                        self.with_membership(|m| m.handle_timer(timer));
                    }
                }
            }
        }
    }

    /// Leaves the cluster gracefully (members mark this node down at once).
    pub(crate) fn leave(&self) {
        if let Some(m) = self.membership.lock().take() {
            for o in m.leave() {
                if let Output::Send { to, packet } = o {
                    let _ = self.socket.try_send_to(&packet, to);
                }
            }
        }
    }
}

/// Whether an answer to `LeasePing` extends the caller's lease: a member whose view counts
/// the caller live grants it. A member of an earlier build cannot decode `LeasePing` and
/// answers that its body is malformed ([`strata_cluster::rpc::FrameError::Body`]); that
/// answer grants, as every answer did in that build, so that a rolling upgrade does not
/// leave the first upgraded nodes without leases. Nothing else does: not a timeout, an
/// overloaded or departing peer, or any other error.
fn lease_granted(answer: &Result<Response, String>) -> bool {
    match answer {
        Ok(Response::Lease { granted } | Response::LeaseView { granted, .. }) => *granted,
        Err(e) => e.contains(": malformed body: "),
        Ok(_) => false,
    }
}

/// For how long a lease ping's answerer has held this node and the members it named, when
/// it told them ([`Response::LeaseView`]; `None` from an earlier build: its grant counts as
/// it did, `strata_cluster::primary::grant_counts`).
fn lease_view(
    answer: &Result<Response, String>,
) -> Option<(u64, impl ExactSizeIterator<Item = &str>)> {
    match answer {
        Ok(Response::LeaseView {
            held_ms, members, ..
        }) => Some((*held_ms, members.iter().map(String::as_str))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_grant_or_an_earlier_builds_decode_error_extends_the_lease() {
        assert!(lease_granted(&Ok(Response::Lease { granted: true })));
        assert!(!lease_granted(&Ok(Response::Lease { granted: false })));
        // What a member of an earlier build answers to a request variant it does not know,
        // as the caller's pool reports it.
        let old = strata_cluster::rpc::FrameError::Body("unknown variant index 15".into());
        assert!(lease_granted(&Err(format!("n1: {old}"))));
        assert!(!lease_granted(&Err("n1 did not answer in time".into())));
        // An answer this build cannot decode (a later build's variant) grants nothing.
        let later = super::super::peer::undecodable_answer("unknown variant index 30");
        assert!(!lease_granted(&Err(format!("n1: {later}"))));
        assert!(!lease_granted(&Err("connection to n1 closed".into())));
        assert!(!lease_granted(&Err("n1: the node is shutting down".into())));
        assert!(!lease_granted(&Ok(Response::Pong)));
    }
}
