//! The peer RPC server: the handshake on each accepted connection, then every request
//! answered (`Shared::handle`).

use super::*;

impl Shared {
    // ----- the RPC server -----

    /// Whether `name` is a member of this node's view, waiting up to [`MEMBER_WAIT`] for
    /// gossip to bring it: a node that has just joined may call before its announcement
    /// reached this one.
    pub(crate) async fn wait_for_member(&self, name: &str) -> bool {
        let deadline = Instant::now() + MEMBER_WAIT;
        loop {
            if self.view.read().members.contains_key(name) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub(crate) async fn serve_rpc(self: Arc<Self>) {
        loop {
            let (stream, from) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster rpc accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let me = self.clone();
            let served = self.until_stopped(self.clone().serve_conn(stream, from));
            tokio::spawn(async move {
                if let Some(Err(e)) = served.await {
                    me.counters
                        .rejected_connections
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %me.name, %from, reason = %e, "peer connection refused");
                }
            });
        }
    }

    /// One peer connection: the handshake ([`strata_cluster::handshake`]), then requests
    /// until it closes. Errors of the handshake are returned (the connection is refused and
    /// counted). At most [`MAX_UNAUTHENTICATED`] connections may be in the handshake at
    /// once, each for at most [`peer::HANDSHAKE_TIMEOUT`], and none may send a frame larger
    /// than [`handshake::MAX_HANDSHAKE_FRAME`] before it has proved it holds the secret.
    pub(crate) async fn serve_conn(
        self: Arc<Self>,
        stream: net::TcpStream,
        from: SocketAddr,
    ) -> Result<(), String> {
        // A connection from a member's address is preferred: a flood from other addresses
        // cannot push it out of the handshake (`Pending::enter_as`).
        let preferred = self
            .view
            .read()
            .members
            .values()
            .any(|m| m.rpc.ip() == from.ip() && m.name != self.name);
        let (pending_id, mut evict, evicted) = self.unauthenticated.lock().enter_as(preferred);
        if evicted {
            // The closed connection counts itself as refused when its task ends. A flood
            // would log a line per connection: one line a second says it as well.
            let now = self.now_ms();
            let last = self.evict_logged_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 1000
                && self
                    .evict_logged_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(node = %self.name, "{MAX_UNAUTHENTICATED} connections in the handshake; closing the oldest (logged at most once a second)");
            }
        }
        let mut buf = BytesMut::with_capacity(1024);
        let max = self.max_frame;
        let handshake = async {
            use tokio::io::AsyncWriteExt;
            let (mut read, mut write, cert) = match &self.tls {
                Some((server, _)) => stream
                    .into_tls(net::TlsSide::Server(server.clone()))
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?,
                None => {
                    let (r, w) = stream.into_split();
                    (r, w, None)
                }
            };
            let refuse = |e: String| rpc::to_bytes(&Frame::Response(0, Response::Error(e)));
            let first =
                peer::read_frame(&mut read, &mut buf, handshake::MAX_HANDSHAKE_FRAME).await?;
            let Frame::Request(0, login) = first else {
                return Err("the first frame was not a Login".to_string());
            };
            let (callee, challenge) =
                match handshake::Callee::on_login(&self.name, login, handshake::fresh_nonce()) {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = write.write_all(&refuse(e.to_string())).await;
                        return Err(e.to_string());
                    }
                };
            // Under mutual TLS the certificate must also name the caller: one member's
            // certificate cannot log in as another member.
            if let Some(cert) = &cert
                && !tls::cert_names(cert, callee.caller())
            {
                let why = format!(
                    "the TLS certificate presented is not valid for {:?}",
                    callee.caller()
                );
                let _ = write.write_all(&refuse(why.clone())).await;
                return Err(why);
            }
            if !self.wait_for_member(callee.caller()).await {
                let why = format!("{:?} is not a member of this node's view", callee.caller());
                let _ = write.write_all(&refuse(why.clone())).await;
                return Err(why);
            }
            write
                .write_all(&rpc::to_bytes(&Frame::Response(0, challenge)))
                .await
                .map_err(|e| e.to_string())?;
            let Frame::Request(0, prove) =
                peer::read_frame(&mut read, &mut buf, handshake::MAX_HANDSHAKE_FRAME).await?
            else {
                return Err("the third frame was not a Prove".to_string());
            };
            let latest = self.coherence.lock().latest_seq();
            match callee.on_prove(&self.auth, prove, self.generation, latest) {
                Ok(welcome) => Ok((callee.caller().to_owned(), welcome, read, write)),
                Err(e) => {
                    let _ = write
                        .write_all(&refuse("authentication failed".into()))
                        .await;
                    Err(e.to_string())
                }
            }
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(peer::HANDSHAKE_TIMEOUT, handshake) => {
                r.map_err(|_| "handshake timed out".to_string())
            }
            _ = &mut evict => Err("closed to make room for newer connections".to_string()),
        };
        self.unauthenticated.lock().leave(pending_id);
        let (caller, ok, mut read, write) = outcome??;
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let _ = tx.send(rpc::to_bytes(&Frame::Response(0, ok)));
        let writer = tokio::spawn(peer::write_loop(write, rx));
        tracing::debug!(node = %self.name, peer = %caller, "peer connected");
        // This connection's delivery of forwarded pub/sub messages (started on the first).
        let mut delivery: Option<pubsub::Delivery> = None;
        let mut caller_features = 0u64;
        loop {
            let frame = loop {
                match rpc::decode(&mut buf, max) {
                    Ok(Some(f)) => break Some(f),
                    Ok(None) => {}
                    Err((Some(id), e)) if e.is_recoverable() => {
                        let _ = tx.send(rpc::to_bytes(&Frame::Response(
                            id,
                            Response::Error(e.to_string()),
                        )));
                        continue;
                    }
                    Err((_, e)) => {
                        tracing::warn!(node = %self.name, peer = %caller, error = %e, "bad frame; closing the connection");
                        break None;
                    }
                }
                use tokio::io::AsyncReadExt;
                match read.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break None,
                    Ok(_) => {}
                }
            };
            let Some(frame) = frame else { break };
            let Frame::Request(id, req) = frame else {
                continue;
            };
            self.counters.rpc_served.fetch_add(1, Ordering::Relaxed);
            // Published messages go to this connection's delivery task, in the order they came
            // (a member's messages reach this one's subscribers in the order it sent them),
            // and are answered at once: delivering never holds up the requests behind them.
            let req = match pubsub::forwarded(req) {
                pubsub::Sorted::Published(messages) => {
                    let resp = if messages.len() > rpc::MAX_PUBLISH_PER_REQUEST {
                        Response::Error(format!(
                            "at most {} messages per Publish",
                            rpc::MAX_PUBLISH_PER_REQUEST
                        ))
                    } else {
                        delivery
                            .get_or_insert_with(|| pubsub::Delivery::start(&self))
                            .offer(&self, messages);
                        Response::Published(0)
                    };
                    let _ = tx.send(rpc::to_bytes(&Frame::Response(id, resp)));
                    continue;
                }
                pubsub::Sorted::Other(other) => other,
            };
            // Reads and replication touch only memory: answered here, in order, without a
            // task of their own (a write's replication and a missed read's fallback are on
            // every such request's critical path).
            // What the caller's build understands, as it told (an earlier build: nothing).
            if let Request::Features { bits } = &req {
                caller_features = *bits;
                self.ring_check.note(&self.name, &caller, *bits);
            }
            let req = match self.answer_now(&caller, req, caller_features) {
                Answer::Now(resp) => {
                    let _ = tx.send(rpc::to_bytes(&Frame::Response(id, resp)));
                    continue;
                }
                Answer::Later(req) => req,
            };
            let me = self.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let resp = me.handle(req, caller_features).await;
                let _ = tx.send(rpc::to_bytes(&Frame::Response(id, resp)));
            });
        }
        drop(tx);
        let _ = writer.await;
        Ok(())
    }

    /// Delivers forwarded pub/sub messages to this node's subscribers.
    fn serve_publish(&self, messages: &[pubsub::Forwarded]) -> Response {
        if messages.len() > rpc::MAX_PUBLISH_PER_REQUEST {
            return Response::Error(format!(
                "at most {} messages per Publish",
                rpc::MAX_PUBLISH_PER_REQUEST
            ));
        }
        Response::Published(self.deliver_published(messages))
    }

    /// Answers a request that waits on nothing (`Ping`, `Get`, `Replicate`, `ReplicateMulti`:
    /// memory only) at once; any other is handed back for [`Shared::handle`].
    /// `caller_features`: what the caller's build understands (`rpc::features`).
    fn answer_now(&self, from: &str, req: Request, caller_features: u64) -> Answer {
        let knows_unproven =
            caller_features & strata_cluster::rpc::features::UNPROVEN_REFUSALS != 0;
        Answer::Now(match req {
            Request::Ping => Response::Status {
                generation: self.generation,
                latest: self.coherence.lock().latest_seq(),
            },
            Request::LeasePing => {
                let granted = strata_cluster::primary::grants_lease(&self.ring(), from);
                let now = self.monotonic_ms();
                let mut grant_view = self.grant_view.lock();
                // And in the grant view, which a ring change updates first: a member the
                // view lost just now gets no grant (an earlier build's caller would count
                // it, helper-115), not one recorded after this node's own losses were read.
                let granted = granted && grant_view.holds(from);
                // Remembered before it is sent: a member this view loses within the grant
                // window after a grant is named, and kept from this node's executions.
                if granted {
                    grant_view.note_grant(from, now);
                }
                if caller_features & strata_cluster::rpc::features::LEASE_VIEWS != 0 {
                    let (_, held_ms, members) =
                        grant_view.answer(from, now, self.grant_window_ms());
                    Response::LeaseView {
                        granted,
                        held_ms,
                        members,
                    }
                } else {
                    Response::Lease { granted }
                }
            }
            Request::Get { .. } if self.unverified() => Response::Error(
                "this node stalled; its copies are unverified until the cluster counts it live again"
                    .into(),
            ),
            Request::Get { namespace, key } if self.holds_unproven(&namespace, &key) => {
                Response::Error(
                    "this member's copy of the key is not proven yet (it rejoined or restarted); ask again".into(),
                )
            }
            Request::Get { namespace, key } => {
                // The sequence number is read before the store: the copy reflects at least
                // every invalidation up to it.
                let latest = self.coherence.lock().latest_seq();
                let entry = self.settled_entry(&namespace, &key).map(|e| to_wire(&e));
                Response::EntryAt {
                    entry,
                    generation: self.generation,
                    latest,
                }
            }
            Request::Replicate {
                namespace,
                key,
                entry,
                version,
                base,
            } => self.replicate_in(
                from,
                &namespace,
                &key,
                entry,
                version,
                base,
                knows_unproven,
            ),
            Request::ReplicateMulti { namespace, changes } => {
                self.replicate_multi_in(from, &namespace, changes, knows_unproven)
            }
            Request::Features { .. } => {
                #[cfg(feature = "fault-injection")]
                if self.faults.earlier_build.load(Ordering::Acquire) {
                    return Answer::Now(Response::Error(
                        "Found an enum discriminant that was out of range (an earlier build)"
                            .into(),
                    ));
                }
                Response::Features {
                    bits: self
                        .ring_check
                        .announce(strata_cluster::rpc::features::THIS_BUILD),
                }
            }
            other => return Answer::Later(other),
        })
    }

    /// Answers one request from the authenticated peer `from` that [`Shared::answer_now`]
    /// handed back; `caller_features`: what the caller's build understands
    /// (`rpc::features`).
    pub(crate) async fn handle(self: &Arc<Self>, req: Request, caller_features: u64) -> Response {
        #[allow(unused_mut)]
        let mut defers = caller_features & strata_cluster::rpc::features::DEFERRED_PUSHES != 0;
        #[allow(unused_mut)]
        let mut tells_ended = caller_features & strata_cluster::rpc::features::ENDED_LIVES != 0;
        #[allow(unused_mut)]
        let mut tells_lives = caller_features & strata_cluster::rpc::features::PROCESS_LIVES != 0;
        #[allow(unused_mut)]
        let mut tells_gaps = caller_features & strata_cluster::rpc::features::GAPS_TOLD != 0;
        #[cfg(feature = "fault-injection")]
        if self.faults.earlier_build.load(Ordering::Acquire) {
            // As a callee of an earlier build: it knows no `Deferred`, nor ended lives.
            defers = false;
            tells_ended = false;
            tells_lives = false;
            tells_gaps = false;
        }
        let tells = match (tells_ended, tells_lives, tells_gaps) {
            (_, _, true) => Tells::Gaps,
            (_, true, false) => Tells::Lives,
            (true, false, false) => Tells::Ended,
            (false, false, false) => Tells::Record,
        };
        match req {
            Request::Hello { .. } | Request::Login { .. } | Request::Prove { .. } => {
                Response::Error("already connected".into())
            }
            // Answered on the reader task, never handed here.
            Request::Ping
            | Request::LeasePing
            | Request::Get { .. }
            | Request::Replicate { .. }
            | Request::ReplicateMulti { .. }
            | Request::Features { .. } => {
                Response::Error("internal: a memory-only request was not answered".into())
            }
            // A member leaving would not keep a pushed copy: the sender keeps it for
            // the members that stay (and a leaving sender learns that this one leaves too,
            // `Shared::handoff_on_leave`).
            Request::Set { .. } | Request::Handoff { .. } | Request::HandoffFor { .. }
                if self.leaving.load(Ordering::Acquire) =>
            {
                Response::Error(super::apply::LEAVING.into())
            }
            Request::Set {
                namespace,
                key,
                entry,
            } => match self.store_pushed(&namespace, key, entry, false) {
                Ok(Pushed::Deferred) if defers => Response::Deferred { stored: 0 },
                Ok(pushed) => Response::Stored {
                    kept_newer: pushed != Pushed::Stored,
                },
                Err(e) => Response::Error(e),
            },
            Request::Handoff { namespace, entries } => {
                self.serve_handoff(&namespace, entries, false, defers)
            }
            Request::HandoffFor {
                namespace,
                generation,
                entries,
            } => {
                // Read after its sender saw this process up: one of its lives, from the
                // one it started with to the current one.
                let this_process =
                    (self.warm.first_generation..=self.member_generation()).contains(&generation);
                self.serve_handoff(&namespace, entries, this_process, defers)
            }
            Request::Remove {
                namespace,
                key,
                version,
            } => {
                let version = Version::from_u64(version);
                self.observe(version);
                Response::Removed(self.remove_owned(&namespace, &key, version).await)
            }
            Request::Invalidations { origin, from, to } => {
                if origin != self.name {
                    return Response::Invalidations(Vec::new());
                }
                // The first items of the range that fit a frame: a member back from a long
                // cut may miss tens of thousands, and an answer past the frame limit would
                // repair nothing. The asker asks again for the rest as each answer lands.
                let budget = self.handoff_batch_bytes();
                let (mut used, mut first) = (0usize, true);
                let items = self
                    .coherence
                    .lock()
                    .log_range(self.generation, from, to)
                    .into_iter()
                    .map(|i| Item::Invalidation(i).encode())
                    .take_while(|b| {
                        used += b.len() + 8;
                        let fits = first || used <= budget;
                        first = false;
                        fits
                    })
                    .collect();
                Response::Invalidations(items)
            }
            Request::Push { item } => {
                let out = self.coherence.lock().receive(self.coherence_ms(), &item);
                self.carry_out_coherence(out);
                Response::Applied { removed: 0 }
            }
            Request::Apply { item } => {
                let Some(decoded) = Item::decode(&item) else {
                    return Response::Error("undecodable coherence item".into());
                };
                let mut removed = 0;
                if let Item::Invalidation(inv) = &decoded {
                    // Applied now, out of order if need be (invalidations only ever drop),
                    // and fed to coherence too, which keeps the sequence bookkeeping (its
                    // own later apply of the same item repeats it, by version). Refused
                    // first: an owner's store-then-check (`store_owned`) must see it from
                    // before its removals run.
                    // This node's stamps order after it first (a primary that restamps a
                    // write coherence refuses lands above it).
                    let version = Version::from_u64(inv.version);
                    self.observe(version);
                    let late = {
                        let mut c = self.coherence.lock();
                        c.note_invalidation(inv, self.coherence_ms());
                        // Already applied in order (gossip came first), or older than any
                        // caller still waits for: the call has returned, and a write made
                        // since must survive — removed by version, as a repeat.
                        c.has_applied(inv)
                            || self.now_ms().saturating_sub(version.physical_ms())
                                > self.pool.rpc_timeout.as_millis() as u64
                    };
                    removed = self.apply(inv, late).await;
                }
                let out = self
                    .coherence
                    .lock()
                    .receive_item(self.coherence_ms(), decoded);
                self.carry_out_coherence(out);
                Response::Applied { removed }
            }
            Request::Execute { namespace, key, op } => {
                self.serve_execute(&namespace, &key, &op).await
            }
            r @ (Request::Publish { .. } | Request::PublishSharded { .. }) => {
                match pubsub::forwarded(r) {
                    pubsub::Sorted::Published(messages) => self.serve_publish(&messages),
                    pubsub::Sorted::Other(_) => Response::Error("not a publish request".into()),
                }
            }
            Request::Versions { namespace, keys } => {
                if keys.len() > strata_cluster::rpc::MAX_VERSIONS_PER_REQUEST {
                    return Response::Error(format!(
                        "at most {} keys per Versions request",
                        strata_cluster::rpc::MAX_VERSIONS_PER_REQUEST
                    ));
                }
                let now = self.now_ms();
                Response::Versions(
                    keys.iter()
                        .map(|k| {
                            self.settled_entry(&namespace, k)
                                .filter(|e| e.is_fresh(now))
                                .map(|e| e.version.as_u64())
                        })
                        .collect(),
                )
            }
            Request::Staleness { namespace, copies } => {
                if copies.len() > strata_cluster::rpc::MAX_VERSIONS_PER_REQUEST
                    || copies
                        .iter()
                        .any(|c| c.tags.len() > strata_cluster::rpc::MAX_TAGS_PER_COPY)
                {
                    return Response::Error(format!(
                        "at most {} copies per Staleness request, {} tags each",
                        strata_cluster::rpc::MAX_VERSIONS_PER_REQUEST,
                        strata_cluster::rpc::MAX_TAGS_PER_COPY
                    ));
                }
                self.serve_staleness(&namespace, &copies, tells)
            }
            Request::Keys {
                namespace,
                hash,
                after,
                limit,
            } => self.serve_keys(
                &namespace,
                hash,
                after.as_ref().map(|k| k.as_slice()),
                limit,
            ),
        }
    }

    /// Answers [`Request::Keys`]: a page of the keys the owner store holds in `namespace`
    /// from the position given, bounded by `limit`, [`rpc::MAX_KEYS_PER_PAGE`] and
    /// [`rpc::KEYS_PAGE_BYTES`], with the store's key count.
    fn serve_keys(&self, namespace: &str, hash: u64, after: Option<&[u8]>, limit: u32) -> Response {
        use strata_cluster::rpc;
        use strata_core::scan::ScanFrom;
        let count = self.owner.key_count(namespace);
        let want = (limit as usize).min(rpc::MAX_KEYS_PER_PAGE);
        let from = match after {
            Some(k) => ScanFrom::after(k),
            None => ScanFrom::at_hash(hash),
        };
        let mut keys = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        if want > 0 {
            let page = self.owner.scan_keys_sync(namespace, from, want);
            // A full page may have more after it when the caller wanted more than one page.
            more = page.len() == want && want < limit as usize;
            let listed = page.len();
            for k in page {
                bytes += k.len();
                keys.push(rpc::ByteBuf::from(k.to_vec()));
                if bytes >= rpc::KEYS_PAGE_BYTES {
                    break;
                }
            }
            more |= keys.len() < listed;
        }
        Response::Keys { keys, more, count }
    }

    /// Answers a hand-off batch (`Handoff`, or `HandoffFor` with `after_start`: its sender
    /// read it after it saw this process up): each entry stored as [`Shared::store_pushed`]
    /// stores it; to a caller that knows `Deferred` (`defers`), the count stored before the
    /// first entry refused for now.
    fn serve_handoff(
        self: &Arc<Self>,
        namespace: &str,
        entries: Vec<(strata_cluster::rpc::ByteBuf, strata_cluster::rpc::WireEntry)>,
        after_start: bool,
        defers: bool,
    ) -> Response {
        if entries.len() > strata_cluster::rpc::MAX_HANDOFF_ENTRIES {
            return Response::Error(format!(
                "at most {} entries per Handoff request",
                strata_cluster::rpc::MAX_HANDOFF_ENTRIES
            ));
        }
        let mut stored = 0u32;
        for (i, (key, entry)) in entries.into_iter().enumerate() {
            match self.store_pushed(namespace, key.into_vec(), entry, after_start) {
                Ok(Pushed::Stored) => stored += 1,
                // The rest would be refused too: the caller sends them again.
                Ok(Pushed::Deferred) if defers => {
                    return Response::Deferred { stored: i as u32 };
                }
                Ok(_) => {}
                Err(e) => return Response::Error(e),
            }
        }
        Response::HandedOff { stored }
    }

    /// Stores a copy another member pushed (a `Set`: a hand-off, a read repair, a
    /// misplaced copy passed on; or one entry of a hand-off batch): refused when coherence
    /// knows a newer change of the key, recorded for the proof while this member settles
    /// (`after_start`: its sender read it after it saw this process up,
    /// `WarmState::note_push`), stored newest-wins, and passed on to the key's owners when
    /// this member is not one. Whether it was stored (`false`: something newer is held or
    /// known).
    pub(crate) fn store_pushed(
        self: &Arc<Self>,
        namespace: &str,
        key: Vec<u8>,
        entry: strata_cluster::rpc::WireEntry,
        after_start: bool,
    ) -> Result<Pushed, String> {
        let entry = from_wire(entry);
        if !self.coherence.lock().admits_tagged(
            namespace,
            &key,
            entry.version.as_u64(),
            &tag_refs(&entry),
        ) {
            self.counters.refused_stale.fetch_add(1, Ordering::Relaxed);
            return Ok(Pushed::NotStored);
        }
        self.observe(entry.version);
        // A push to a restarted member that is settling may predate an invalidation its
        // baseline counted as applied: recorded, and proven once settled. Past the most it
        // may hold unproven, refused for now: the sender still holds the copy and sends it
        // again later (it counted it delivered, and the key's one other copy was on its
        // other owner: lost if that owner died next).
        if !self.note_push(namespace, &key, entry.version, after_start) {
            self.counters
                .pushes_deferred
                .fetch_add(1, Ordering::Relaxed);
            return Ok(Pushed::Deferred);
        }
        let forward = entry.clone();
        let stored = self.store_owned(namespace, &key, entry);
        // Once the store holds it (absent.rs).
        self.absent.forget(namespace, &key);
        match stored {
            Ok(None | Some(strata_core::SetOutcome::KeptNewer)) => Ok(Pushed::NotStored),
            Ok(Some(_)) => {
                // Not while it is an unproven push: its owners would store it and vouch for
                // it when this member's proof asks; the proof passes on what it keeps.
                if !self.warm.is_unproven(namespace, &key, forward.version) {
                    self.forward_misplaced(namespace.to_owned(), key, forward);
                }
                Ok(Pushed::Stored)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Answers a restarted member's [`Request::Staleness`]: per copy, a newer version held
    /// here (any copy, pushed or expired: a newer version exists, so this one was replaced)
    /// or a newer invalidation remembered here that covers it, and how far back that
    /// record is whole (`WarmState::record`: this process's start at the earliest — what
    /// it removed as an owner, wrote, or applied before is gone with its earlier life).
    /// To a caller with `ENDED_LIVES`, the member lives it saw end within that record as
    /// well; with `PROCESS_LIVES`, also the generations its process has had; with
    /// `GAPS_TOLD`, also the gaps it gave up on, told apart from its record's start.
    fn serve_staleness(
        &self,
        namespace: &str,
        copies: &[strata_cluster::rpc::CopyRef],
        tells: Tells,
    ) -> Response {
        // The store first, without holding coherence (every write takes it).
        let held: Vec<Option<u64>> = copies
            .iter()
            .map(|c| {
                self.owner
                    .get_retained_entry(namespace, &c.key)
                    .map(|e| e.version.as_u64())
            })
            .collect();
        let record = self.warm.record.lock().clone();
        let from = record.from_ms();
        let mut newer = Vec::with_capacity(copies.len());
        let mut tombstone_ms = 0;
        // Coherence is held for a few copies at a time: every write takes it.
        for (chunk, held) in copies.chunks(64).zip(held.chunks(64)) {
            let coherence = self.coherence.lock();
            tombstone_ms = coherence.tombstone_ms();
            for (c, held) in chunk.iter().zip(held) {
                let tags: Vec<&[u8]> = c.tags.iter().map(|t| t.as_slice()).collect();
                newer.push(strata_cluster::warm::newer_than(
                    c.version,
                    *held,
                    coherence.superseded_by(namespace, &c.key, c.version, &tags),
                ));
            }
        }
        let now = self.monotonic_ms();
        let covered_ms = strata_cluster::warm::covered_ms(from, now, tombstone_ms);
        match tells {
            Tells::Record => Response::Staleness { covered_ms, newer },
            Tells::Ended => Response::StalenessEnded {
                covered_ms,
                newer,
                ended: self.warm.ended_within(now, covered_ms),
            },
            Tells::Lives => Response::StalenessLives {
                covered_ms,
                newer,
                ended: self.warm.ended_within(now, covered_ms),
                first_generation: self.warm.first_generation,
                generation: self.member_generation(),
            },
            Tells::Gaps => {
                let (whole_ms, gaps) = record.told(now, tombstone_ms);
                Response::StalenessGaps {
                    covered_ms,
                    newer,
                    // The lives that ended within the record a caller may count.
                    ended: self.warm.ended_within(now, whole_ms),
                    first_generation: self.warm.first_generation,
                    generation: self.member_generation(),
                    whole_ms,
                    gaps,
                }
            }
        }
    }
}

/// What a witness's answer to `Staleness` tells beyond its word on each copy, by what its
/// caller understands.
#[derive(Debug, Clone, Copy)]
enum Tells {
    /// How far back its record reaches.
    Record,
    /// And the member lives it saw end (`ENDED_LIVES`).
    Ended,
    /// And the generations its process has had (`PROCESS_LIVES`).
    Lives,
    /// And the gaps it gave up on, apart from its record's start (`GAPS_TOLD`).
    Gaps,
}

/// What [`Shared::answer_now`] did with a request.
enum Answer {
    /// Answered at once.
    Now(Response),
    /// Needs [`Shared::handle`] (it waits on something).
    Later(Request),
}

/// What became of a copy another member pushed ([`Shared::store_pushed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Stored.
    Stored,
    /// Not stored: this node holds or knows of something newer.
    NotStored,
    /// Refused for now: this member settles and holds as many unproven pushes as it may
    /// (`cluster.settling_push_limit`); the sender still holds the copy.
    Deferred,
}
