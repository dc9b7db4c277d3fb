//! Per-key primary execution on the node ([`strata_cluster::primary`] decides; this file
//! does the I/O): the primary's side of `Execute`, an owner's side of `Replicate`, and the
//! lock that makes a key's writes one at a time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use strata_cluster::InvalidationOp;
use strata_cluster::primary::{self as decide, PrimaryOp};
use strata_cluster::rpc::{ByteBuf, ReplicaChange, ReplicaRefusal, Request, Response};
use strata_core::ops::{self, Change, Effect, Executed, ExecutedMulti, KeyOp, MultiOp, Reply};
use strata_core::{Entry, Version};

use super::peer::CallError;
use super::{Shared, from_wire, to_wire};

/// What the primary did: one key's change, or a multi-key operation's changes.
enum Outcome {
    One(Executed),
    Many(ExecutedMulti),
}

/// Most keys one atomic multi-key command (`MSETNX`) may name in a cluster.
pub(crate) const MAX_MULTI_KEYS: usize = 1024;

/// Stripes of the primary's per-key execution lock.
pub(crate) const EXEC_STRIPES: usize = 1024;

/// Why this node did not execute a write as primary.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Not the key's primary in this node's view: nothing was done.
    NotPrimary(Option<String>),
    /// Nothing was applied anywhere (no majority, a stall, an owner that cannot be reached
    /// or fenced the change off before any owner took it): safe to retry, and retried while
    /// the view moves (`cluster.failover_wait_ms`). Clients get `TRYAGAIN`.
    Unavailable(String),
    /// The change may have been applied by some owner (one did not answer in time, or some
    /// took it and others refused): not acknowledged, and never retried, since a retry
    /// could apply it twice. Clients get an `ERR … may or may not have happened`, which
    /// Redis Cluster clients do not retry on their own.
    Indeterminate(String),
}

/// Room kept in a frame for its header and the request's other fields.
const FRAME_HEADROOM: usize = 4096;

/// An entry's tags as they travel.
fn wire_tags(e: &Entry) -> Vec<ByteBuf> {
    e.tags.iter().map(|t| ByteBuf::from(t.to_vec())).collect()
}

/// About how many bytes a key's change takes encoded (its key, value, tags and fields).
fn change_size(key: &[u8], change: &Change) -> usize {
    let entry = match change {
        Change::Written(e) => e.value.len() + e.tags.iter().map(|t| t.len() + 8).sum::<usize>(),
        Change::Removed(_) | Change::None => 0,
    };
    key.len() + entry + 64
}

/// About how many bytes `reply` takes encoded (bulk strings and errors by length).
fn reply_size(reply: &Reply) -> usize {
    match reply {
        Reply::Bulk(b) => b.len() + 8,
        Reply::Error(s) | Reply::Status(s) => s.len() + 8,
        Reply::Exec(Some(rs)) => rs.iter().map(reply_size).sum::<usize>() + 8,
        Reply::Tree(ts) => ts
            .iter()
            .map(|t| match t {
                ops::Token::Bulk(b) => b.len() + 8,
                ops::Token::Status(s) | ops::Token::Error(s) => s.len() + 8,
                // An integer takes up to 10 bytes, its variant one more.
                _ => 12,
            })
            .sum(),
        // An integer takes up to 10 bytes, its variant one more.
        _ => 12,
    }
}

impl Shared {
    /// The stripe of the execution lock of the key hashed `h` ([`super::executing::key_hash`]).
    fn exec_stripe(h: u64) -> usize {
        (h as usize) % EXEC_STRIPES
    }

    /// Executes `op` on `key` as its primary: under the key's lock, from the current copy,
    /// replicated to every other owner before it is applied here and acknowledged, then
    /// announced to every member. `forwarded`: for another node (else for this node's own
    /// cache, which writes the change into its own layers itself: [`Shared::commit_here`]).
    pub(crate) async fn execute_as_primary(
        self: &Arc<Self>,
        namespace: &str,
        key: &[u8],
        op: PrimaryOp,
        forwarded: bool,
    ) -> Result<Executed, Refusal> {
        self.admit(key)?;
        let h = super::executing::key_hash(namespace, key);
        let _g = self.exec_locks[Self::exec_stripe(h)].lock().await;
        // Before anything is read: a replication of the key from another primary is
        // applied before this reads, or refused until it ends (`executing`).
        let _busy = self.executing.enter(vec![h]);
        // Decided again under the lock: the view may have moved while this waited.
        let (ring, cache) = self.admit(key)?;
        let cache = &cache;
        self.counters.executed.fetch_add(1, Ordering::Relaxed);
        let mut attempt = 0;
        let mut restart = None;
        loop {
            attempt += 1;
            match self
                .execute_locked(&ring, cache, namespace, key, &op, restart.take(), attempt)
                .await?
            {
                Ok(done) => {
                    // A plain `SET` re-stamped here: the caller's layers hold the
                    // writer's version, not this one.
                    let restamped = match (&op, &done.change) {
                        (PrimaryOp::Put(w), Change::Written(e)) => e.version.as_u64() != w.version,
                        _ => false,
                    };
                    if !matches!(done.change, Change::None) {
                        let mirrored = !forwarded && !restamped;
                        self.commit_here(cache, namespace, key, &done.change, mirrored)
                            .await;
                        if let Err(lapsed) = self.lease_held_through(key) {
                            self.unmirrored(cache, namespace, key, &done.change, mirrored)
                                .await;
                            return Err(lapsed);
                        }
                    }
                    return Ok(done);
                }
                // An owner held a newer copy than this node executed against: adopt it and
                // execute again (a primary back from a pause or a partition catches up
                // here), or, when this node has applied an invalidation of that copy the
                // owner has not yet, execute again from no copy above it; likewise above
                // an invalidation an owner applied that this node has not.
                Err(newer) if attempt < STALE_RETRIES => {
                    let put = matches!(op, PrimaryOp::Put(_));
                    restart = self.restart_after(namespace, key, newer, put);
                }
                Err(_) => {
                    return Err(Refusal::Unavailable(
                        "owners kept answering with newer copies or invalidations".into(),
                    ));
                }
            }
        }
    }

    /// Whether `entry` fits the owner store (a value too large for it would be acknowledged
    /// and stored nowhere: refused before anything is replicated).
    fn fits(&self, namespace: &str, key: &[u8], entry: &Entry) -> bool {
        entry.value.len()
            <= self
                .owner
                .largest_value(namespace, key.len(), entry.tags.byte_len())
    }

    fn too_large(&self, namespace: &str, key: &[u8], entry: &Entry) -> String {
        format!(
            "ERR value is {} bytes, above the {} bytes a cluster owner store holds per entry (cluster.owner_capacity_bytes)",
            entry.value.len(),
            self.owner
                .largest_value(namespace, key.len(), entry.tags.byte_len())
        )
    }

    /// Where the next execution of one key starts after an owner answered with something
    /// newer than the change (`put`: a plain `SET`): a copy ([`Shared::adopt`]), or an
    /// invalidation of the key this node has not applied (`Superseded`). Then the next
    /// execution starts from no copy, above the invalidation. For a read-modify-write the
    /// copy it executed from is dead too (a removal of the key newer than the base covers
    /// every copy; one that refused the stored change covered the tags the change took from
    /// that copy): this node's own goes. A plain `SET`'s tags are its own, so the copy it
    /// replaces may be live: it stays until the write replaces it.
    fn restart_after(&self, namespace: &str, key: &[u8], newer: Newer, put: bool) -> Option<Start> {
        match newer {
            Newer::Copy(e) => self.adopt(namespace, key, e),
            Newer::Covered(version) => {
                self.observe(Version::from_u64(version));
                None
            }
            Newer::Invalidated(version) => {
                self.counters.stale_base.fetch_add(1, Ordering::Relaxed);
                self.observe(Version::from_u64(version));
                // A fresh copy stored since the execution read (a hand-off push): read
                // again. (An expired one it keeps would be read as none again: a loop.)
                if self
                    .own_copy(namespace, key)
                    .is_some_and(|own| own.version.as_u64() >= version)
                {
                    return None;
                }
                match self.owner.get_retained_entry(namespace, key) {
                    Some(own) if !put && own.version.as_u64() < version => {
                        Some(self.dead_below(namespace, key, own, version))
                    }
                    _ => Some(Start::Above(version)),
                }
            }
        }
    }

    /// This node's own copy `own` of `key` is dead (below `version`: a copy coherence
    /// refuses, or the base of a change an owner refused): it goes, and the next execution
    /// starts from no copy above `version`.
    fn dead_below(&self, namespace: &str, key: &[u8], own: Entry, version: u64) -> Start {
        self.counters.refused_stale.fetch_add(1, Ordering::Relaxed);
        // That version only: a hand-off push may store a newer one meanwhile.
        self.owner.remove_version_sync(namespace, key, own.version);
        Start::Above(version)
    }

    /// Adopts an owner's newer copy of `key` (its `Stale` answer): stores it, and the next
    /// execution starts from it (or, when the store kept a newer one still, reads again:
    /// `None`). A copy this node cannot
    /// serve is dead instead: coherence refuses it (an invalidation this node applied, a
    /// tag, a pattern or a flush, has not reached that owner yet; executing from it would
    /// bring the invalidated value back, G3), or it has expired on this node's clock. The
    /// next execution then starts from no copy above its version, so that the owners take
    /// the change over it, and this node's own older copy goes (the dead one superseded it).
    fn adopt(&self, namespace: &str, key: &[u8], newer: Entry) -> Option<Start> {
        self.counters.stale_base.fetch_add(1, Ordering::Relaxed);
        self.observe(newer.version);
        let version = newer.version.as_u64();
        let live = newer.is_fresh(self.now_ms())
            && self.coherence.lock().admits_tagged(
                namespace,
                key,
                version,
                &super::tag_refs(&newer),
            );
        if !live {
            return Some(match self.owner.get_retained_entry(namespace, key) {
                Some(own) if own.version < newer.version => {
                    self.dead_below(namespace, key, own, version)
                }
                _ => {
                    self.counters.refused_stale.fetch_add(1, Ordering::Relaxed);
                    Start::Above(version)
                }
            });
        }
        let kept = self.store_owned(namespace, key, newer.clone());
        // After the store holds it (absent.rs: a forget follows the change).
        self.absent.forget(namespace, key);
        match kept {
            // The store holds a newer copy still (a hand-off push stored it after this
            // execution's read): the next attempt reads again, and starts from that one.
            Ok(Some(strata_core::SetOutcome::KeptNewer)) => None,
            // Refused once stored: an invalidation of it was recorded meanwhile.
            Ok(None) => Some(Start::Above(version)),
            _ => Some(Start::From(newer)),
        }
    }

    /// Whether this node may execute writes of `key` as its primary now, with the ring it
    /// decided on and its cache.
    fn admit(
        &self,
        key: &[u8],
    ) -> Result<(Arc<strata_cluster::Ring>, strata_core::Cache), Refusal> {
        if self.leaving.load(Ordering::Acquire) {
            return Err(Refusal::NotPrimary(None));
        }
        let ring = self.ring();
        if decide::primary(&ring, key) != Some(self.name.as_str()) {
            return Err(Refusal::NotPrimary(
                decide::primary(&ring, key).map(str::to_owned),
            ));
        }
        // Refused for good (`ERR`): waiting for the view to move does not help.
        if let Some(why) = self.second_of_name() {
            return Err(Refusal::Unavailable(format!("ERR {why}")));
        }
        if !self.stall.lock().may_execute(self.monotonic_ms()) {
            return Err(Refusal::Unavailable(
                "this node stalled (a pause): it executes no write until the cluster's view has reached it".into(),
            ));
        }
        if !self.view.read().joining.may_execute(self.monotonic_ms()) {
            return Err(Refusal::Unavailable(
                "this node is joining the cluster: it executes no write until its view has settled"
                    .into(),
            ));
        }
        let members = self.member_count();
        if !decide::has_quorum(members, self.cfg.expected_size as usize) {
            return Err(Refusal::Unavailable(format!(
                "this node sees {members} of the cluster's {} members (cluster.expected_size): writes need a majority",
                self.cfg.expected_size
            )));
        }
        self.check_lease(key)?;
        let Some(cache) = self.cache() else {
            return Err(Refusal::Unavailable(
                "the node's cache is not attached yet".into(),
            ));
        };
        Ok((ring, cache))
    }

    /// Whether this node holds its lease as a primary of `key` (a majority answered its
    /// pings within the last second, each from a member that held it for the grant window,
    /// and no member those answers named or this view lost within the window of a grant
    /// to it precedes it
    /// on the key: `strata_cluster::primary::ExecLease`): a node cut off from the majority
    /// stops here, before the others move its keys, even while its view still counts
    /// members it cannot reach; and a key whose primary the members' views disagree on
    /// waits until they agree.
    fn check_lease(&self, key: &[u8]) -> Result<(), Refusal> {
        let expected = self.cfg.expected_size as usize;
        let now = self.monotonic_ms();
        let verdict = self
            .exec_lease
            .lock()
            .admits(&self.name, key, now, expected);
        let why = match verdict {
            Ok(()) => return Ok(()),
            Err(decide::ExecWait::Lease { fresh }) => format!(
                "{fresh} other members answered this node's pings within the last {} ms, not a majority of the cluster's {expected} (cluster.expected_size): a primary cut off from the majority takes no write",
                decide::Lease::LEASE_MS
            ),
            Err(decide::ExecWait::Precedes(first)) => format!(
                "{first} precedes this node on the key in the view of a member whose grant this node's lease needs, or this node's view lost it within {} ms of granting it a lease: the key waits until the views agree on its primary",
                self.grant_window_ms()
            ),
            Err(decide::ExecWait::NoRing) => "this node has no view yet".to_owned(),
        };
        self.counters.lease_refusals.fetch_add(1, Ordering::Relaxed);
        Err(Refusal::Unavailable(why))
    }

    /// After a change of `key` is on every owner, stored here and announced: whether the
    /// lease still holds for it. If it lapsed while the owners took the change (a
    /// replication that took long), the others may be moving the key already, so the
    /// change is not acknowledged (an unknown outcome); it is stored and announced all the
    /// same, since every owner holds it.
    fn lease_held_through(&self, key: &[u8]) -> Result<(), Refusal> {
        match self.check_lease(key) {
            Err(Refusal::Unavailable(why)) => Err(Refusal::Indeterminate(format!(
                "the owners took the change, but {why}"
            ))),
            other => other,
        }
    }

    /// Whether this node is the primary of every key under `ring`, with the same replicas
    /// (one hash slot has them): a multi-key operation's changes go to the first key's
    /// owners together. `CROSSSLOT` otherwise; and whether its lease admits every key.
    fn owns_all(&self, ring: &strata_cluster::Ring, keys: &[Vec<u8>]) -> Result<(), Refusal> {
        let rf = self.cfg.replication_factor as usize;
        let Some(first) = keys.first() else {
            return Ok(());
        };
        let replicas = decide::replicas(ring, &self.name, first, rf);
        if keys.iter().any(|k| {
            decide::primary(ring, k) != Some(self.name.as_str())
                || decide::replicas(ring, &self.name, k, rf) != replicas
        }) {
            return Err(Refusal::Unavailable(
                "CROSSSLOT Keys in request don't hash to the same slot".into(),
            ));
        }
        // Keys of different slots may share owners in this view but not in the ring of
        // what the lease's grants named: each key's own check.
        keys.iter().try_for_each(|k| self.check_lease(k))
    }

    /// Executes a multi-key operation as the primary of its keys (one hash tag): under
    /// every key's lock, from each key's current copy, every change replicated to the other
    /// owners before any is applied here and acknowledged.
    pub(crate) async fn execute_multi_as_primary(
        self: &Arc<Self>,
        namespace: &str,
        op: &MultiOp,
        forwarded: bool,
    ) -> Result<ExecutedMulti, Refusal> {
        let keys: Vec<Vec<u8>> = op.keys().into_iter().map(<[u8]>::to_vec).collect();
        if keys.len() > MAX_MULTI_KEYS {
            // Every key's lock is held while each is read (an RPC when this node misses it)
            // and replicated: a huge one would stall every write of this primary.
            return Ok(ExecutedMulti {
                reply: Reply::Error(format!(
                    "ERR a cluster takes at most {MAX_MULTI_KEYS} keys in one atomic multi-key command"
                )),
                changes: Vec::new(),
            });
        }
        let Some(first) = keys.first() else {
            return Ok(ExecutedMulti {
                reply: Reply::Int(0),
                changes: Vec::new(),
            });
        };
        let (ring, _) = self.admit(first)?;
        self.owns_all(&ring, &keys)?;
        let hashes: Vec<u64> = keys
            .iter()
            .map(|k| super::executing::key_hash(namespace, k))
            .collect();
        let mut stripes: Vec<usize> = hashes.iter().map(|&h| Self::exec_stripe(h)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(self.exec_locks[i].lock().await);
        }
        let _busy = self.executing.enter(hashes);
        // Decided again under the locks: the view may have moved while this waited.
        let (ring, cache) = self.admit(first)?;
        let cache = &cache;
        self.owns_all(&ring, &keys)?;
        self.counters.executed.fetch_add(1, Ordering::Relaxed);
        // Per key, where the next attempt starts after an owner answered `Stale`.
        let mut restarts: Vec<Option<Start>> = vec![None; keys.len()];
        // Per key, the newest version of a copy the attempt did not start from (a dead one
        // an owner still holds): the floor of the key's base.
        let mut floors: Vec<u64> = vec![0; keys.len()];
        'attempt: for _ in 0..STALE_RETRIES {
            let now = self.now_ms();
            // Bounded as the cache's own execution is (`Cache::multi_load`): what the
            // attempt reads and writes is held until it ends.
            let mut load = cache.multi_load();
            let refused = |e: strata_core::CacheError| ExecutedMulti {
                reply: Reply::Error(e.to_string()),
                changes: Vec::new(),
            };
            let mut current = Vec::with_capacity(keys.len());
            for (i, k) in keys.iter().enumerate() {
                let (c, floor) = match restarts[i].take() {
                    Some(Start::From(e)) => (Some(e), 0),
                    Some(Start::Above(v)) => (None, v),
                    None => self.current_copy(namespace, k).await?,
                };
                floors[i] = floor;
                if let Some(e) = &c {
                    self.observe(e.version);
                }
                if let Err(e) = load.charge_entries([c.as_ref()]) {
                    return Ok(refused(e));
                }
                current.push(c);
            }
            let refs: Vec<Option<&Entry>> = current.iter().map(Option::as_ref).collect();
            let (effects, reply) = cache.apply_multi(op, &refs, now);
            if let Err(e) = load.charge_writes(&effects) {
                return Ok(refused(e));
            }
            let mut changes: Vec<(usize, Change)> = Vec::with_capacity(effects.len());
            for fx in effects {
                let change = match fx.effect {
                    Effect::None => continue,
                    Effect::Delete => Change::Removed(self.stamp()),
                    Effect::Write {
                        value,
                        ttl,
                        keep_tags,
                    } => {
                        match cache.entry_for(
                            namespace,
                            &keys[fx.key],
                            value,
                            ttl,
                            keep_tags,
                            current[fx.tags_from].as_ref(),
                        ) {
                            Ok(e) if !self.fits(namespace, &keys[fx.key], &e) => {
                                return Ok(ExecutedMulti {
                                    reply: Reply::Error(self.too_large(
                                        namespace,
                                        &keys[fx.key],
                                        &e,
                                    )),
                                    changes: Vec::new(),
                                });
                            }
                            Ok(e) => Change::Written(e),
                            Err(e) => {
                                return Ok(ExecutedMulti {
                                    reply: Reply::Error(format!("ERR {e}")),
                                    changes: Vec::new(),
                                });
                            }
                        }
                    }
                };
                changes.push((fx.key, change));
            }
            // A transaction aborted on a key whose watched version is newer than this
            // node's copy (the client's node held the newer one): this copy may be stale
            // — a write or removal this node missed — and the owners are asked, as for a
            // key read and not changed; one that knows newer has it adopted and the
            // transaction runs again. A retry loop through that node would otherwise abort
            // until this copy were repaired. Nothing is decided by an owner that cannot be
            // reached: the abort stands.
            if changes.is_empty() {
                let suspect = watched_ahead(op, &current);
                if !suspect.is_empty() {
                    let unchanged = Change::None;
                    let items: Vec<Outgoing<'_>> = suspect
                        .iter()
                        .map(|&i| Outgoing {
                            key: &keys[i],
                            change: &unchanged,
                            base: current[i]
                                .as_ref()
                                .map_or(0, |e| e.version.as_u64())
                                .max(floors[i]),
                            base_tags: current[i].as_ref().map(wire_tags).unwrap_or_default(),
                            from_none: current[i].is_none(),
                        })
                        .collect();
                    if let Ok(refused) = self.replicate_all(&ring, namespace, &items).await
                        && !refused.is_empty()
                    {
                        for (n, newer) in refused {
                            let i = suspect[n];
                            restarts[i] = match newer {
                                Newer::Copy(newer) => self.adopt(namespace, &keys[i], newer),
                                other => self.restart_after(namespace, &keys[i], other, false),
                            };
                        }
                        continue 'attempt;
                    }
                }
            }
            // The keys read and not changed go to the owners too, to be checked as a
            // changed key's base is (`ReplicaChange::CHECK_ONLY`): a copy this node holds
            // that an owner knows to be older or removed would otherwise decide what the
            // changes are (a script that reads one key and writes another, a `WATCH`).
            // Not when nothing changes: nothing is replicated, and a read-only
            // transaction reads as a `GET` does.
            let read_only: Vec<usize> = if changes.is_empty() {
                Vec::new()
            } else {
                (0..keys.len())
                    .filter(|i| !changes.iter().any(|(k, _)| k == i))
                    .collect()
            };
            // The reply travels in one frame, and the changes in one frame to each owner
            // (and back with the reply to a node that forwarded the operation): an
            // operation whose reply or changes cannot is refused before anything is
            // applied (a transaction's MGET or SETs of large values, say).
            let reply_bytes = reply_size(&reply);
            let unchanged = Change::None;
            let sent: Vec<(usize, &Change)> = changes
                .iter()
                .map(|(i, c)| (*i, c))
                .chain(read_only.iter().map(|&i| (i, &unchanged)))
                .collect();
            let change_bytes: usize = sent
                .iter()
                .map(|&(i, c)| {
                    let base_tags = current[i]
                        .as_ref()
                        .map_or(0, |e| e.tags.iter().map(|t| t.len() + 8).sum());
                    change_size(&keys[i], c) + base_tags
                })
                .sum();
            let room = self.max_frame.saturating_sub(FRAME_HEADROOM);
            let over = if reply_bytes > room {
                Some(format!("the replies take {reply_bytes} bytes"))
            } else if change_bytes > room {
                Some(format!("the changes take {change_bytes} bytes"))
            } else if forwarded && reply_bytes + change_bytes > room {
                Some(format!(
                    "the replies and changes take {} bytes",
                    reply_bytes + change_bytes
                ))
            } else {
                None
            };
            if let Some(what) = over {
                return Ok(ExecutedMulti {
                    reply: Reply::Error(format!(
                        "ERR {what}, more than one cluster frame holds; split the transaction"
                    )),
                    changes: Vec::new(),
                });
            }
            // Every change goes to each owner in one request, checked there key by key
            // before any is applied: a refusal leaves nothing applied anywhere.
            let items: Vec<Outgoing<'_>> = sent
                .iter()
                .map(|&(i, change)| Outgoing {
                    key: &keys[i],
                    change,
                    base: current[i]
                        .as_ref()
                        .map_or(0, |e| e.version.as_u64())
                        .max(floors[i]),
                    base_tags: current[i].as_ref().map(wire_tags).unwrap_or_default(),
                    from_none: current[i].is_none(),
                })
                .collect();
            let refused = self.replicate_all(&ring, namespace, &items).await?;
            if !refused.is_empty() {
                // The owners checked each copy the execution read, changed or not, so a
                // key refused for an invalidation is executed again from no copy above
                // it, as a single key's change is.
                for (n, newer) in refused {
                    let i = sent[n].0;
                    restarts[i] = match newer {
                        Newer::Copy(newer) => self.adopt(namespace, &keys[i], newer),
                        other => self.restart_after(namespace, &keys[i], other, false),
                    };
                }
                continue 'attempt;
            }
            let mut out = Vec::with_capacity(changes.len());
            for (i, change) in changes {
                self.commit_here(cache, namespace, &keys[i], &change, !forwarded)
                    .await;
                out.push((Bytes::copy_from_slice(&keys[i]), change));
            }
            if let Err(lapsed) = out.iter().try_for_each(|(k, _)| self.lease_held_through(k)) {
                for (k, change) in &out {
                    self.unmirrored(cache, namespace, k, change, !forwarded)
                        .await;
                }
                return Err(lapsed);
            }
            return Ok(ExecutedMulti {
                reply,
                changes: out,
            });
        }
        Err(Refusal::Unavailable(
            "owners kept answering with newer copies or invalidations".into(),
        ))
    }

    /// One execution under the key's lock: `Ok(Err(entry))` when an owner answered that it
    /// holds the newer `entry`. It starts where `restart` says ([`Shared::adopt`]), else
    /// from the current copy; its base is at least the version of any copy it was answered
    /// but did not start from (a dead one an owner still holds), so that the owners take
    /// the change over it. `attempt` counts from 1.
    #[allow(clippy::too_many_arguments)]
    async fn execute_locked(
        self: &Arc<Self>,
        ring: &strata_cluster::Ring,
        cache: &strata_core::Cache,
        namespace: &str,
        key: &[u8],
        op: &PrimaryOp,
        restart: Option<Start>,
        attempt: usize,
    ) -> Result<Result<Executed, Newer>, Refusal> {
        let now = self.now_ms();
        // A plain `DEL`/`GETDEL` changes the key whatever it finds (decision 101): like a
        // plain `SET`, its replication finds any copy the replica holds.
        let removal = matches!(op, PrimaryOp::Key(KeyOp::Del | KeyOp::GetDel));
        let restart_kind = match &restart {
            None => "no",
            Some(Start::From(_)) => "from an owner's copy",
            Some(Start::Above(_)) => "above a newer change",
        };
        let (current, floor, unread) = match restart {
            Some(Start::From(e)) => (Some(e), 0, false),
            Some(Start::Above(v)) => (None, v, false),
            // The first attempt only: after an adoption the store would not take (it keeps
            // a newer copy, expired here), unread attempts could go round until the last.
            None if attempt == 1 && (removal || matches!(op, PrimaryOp::Put(_))) => {
                self.copy_for_put(ring, namespace, key).await?
            }
            None => {
                let (current, floor) = self.current_copy(namespace, key).await?;
                (current, floor, false)
            }
        };
        let base = current
            .as_ref()
            .map_or(0, |e| e.version.as_u64())
            .max(floor);
        if let Some(e) = &current {
            self.observe(e.version);
        }
        if current.is_none() && matches!(op, PrimaryOp::Key(_)) && !removal {
            // A read-modify-write of a key found nowhere: what a lost copy looks like.
            tracing::debug!(node = %self.name, namespace, key = %String::from_utf8_lossy(key), floor, attempt, restarted = restart_kind, "primary executes a read-modify-write from no copy");
        }
        let (reply, change) = match op {
            PrimaryOp::Key(op) => {
                let (effect, reply) = ops::apply(op, current.as_ref(), now, cache.op_limits());
                let change = match effect {
                    // A removal of a key found nowhere is stamped, replicated and announced
                    // all the same (its reply stays 0 / nil): the owners may have evicted
                    // the key while other members still hold copies (a writer's own, a
                    // read's), and only the announcement reaches those.
                    Effect::None
                        if current.is_none() && matches!(op, KeyOp::Del | KeyOp::GetDel) =>
                    {
                        Change::Removed(self.stamp())
                    }
                    Effect::None => Change::None,
                    Effect::Delete => Change::Removed(self.stamp()),
                    Effect::Write {
                        value,
                        ttl,
                        keep_tags,
                    } => match cache.entry_for(
                        namespace,
                        key,
                        value,
                        ttl,
                        keep_tags,
                        current.as_ref(),
                    ) {
                        Ok(e) if !self.fits(namespace, key, &e) => {
                            return Ok(Ok(Executed {
                                reply: Reply::Error(self.too_large(namespace, key, &e)),
                                change: Change::None,
                            }));
                        }
                        Ok(e) => Change::Written(e),
                        Err(e) => {
                            return Ok(Ok(Executed {
                                reply: Reply::Error(format!("ERR {e}")),
                                change: Change::None,
                            }));
                        }
                    },
                };
                (reply, change)
            }
            PrimaryOp::Put(w) => {
                // The writer's version stands unless this primary holds a version at least as
                // new, or has seen an invalidation of the key at least as new (a DEL it
                // executed that the writer had not heard of yet): then it is stamped here,
                // after both, and the later write wins, as on one Redis.
                let mut e = from_wire(w.clone());
                let superseded = current.as_ref().is_some_and(|c| c.version >= e.version)
                    || e.version.as_u64() <= base
                    || !self.coherence.lock().admits_tagged(
                        namespace,
                        key,
                        e.version.as_u64(),
                        &super::tag_refs(&e),
                    );
                self.observe(e.version);
                if superseded {
                    e.version = self.stamp();
                }
                if !self.fits(namespace, key, &e) {
                    return Ok(Ok(Executed {
                        reply: Reply::Error(self.too_large(namespace, key, &e)),
                        change: Change::None,
                    }));
                }
                (Reply::Ok, Change::Written(e))
            }
            PrimaryOp::Multi(_) => {
                return Err(Refusal::Unavailable(
                    "a multi-key operation sent as a single-key one".into(),
                ));
            }
        };
        let version = match &change {
            Change::None => return Ok(Ok(Executed { reply, change })),
            Change::Written(e) => e.version,
            Change::Removed(v) => *v,
        };
        self.observe(version);
        // A plain `SET` does not depend on the copy it replaces: whether that copy was
        // dead does not matter to it.
        let base_tags = match (&op, &current) {
            (PrimaryOp::Key(_), Some(c)) => wire_tags(c),
            _ => Vec::new(),
        };
        // An unread removal's base stays 0, not raised to the newest invalidation of the key
        // this node holds (`outgoing`: a removal, pattern, tag or flush it applied, or a
        // write it announced): the replica's copy of that write is what its `Stale` answer
        // must bring back, for the reply (`DEL`'s count, `GETDEL`'s value). A copy this
        // node knows is dead is refused when adopted (`adopt`) and costs a round more.
        let from_none = current.is_none() && !(unread && removal);
        if let Some(newer) = self
            .replicate_out(ring, namespace, key, &change, (base, base_tags), from_none)
            .await?
        {
            return Ok(Err(newer));
        }
        Ok(Ok(Executed { reply, change }))
    }

    /// Applies a replicated change here (the primary's owner store), drops this node's own
    /// older copies, and announces it. `mirrored`: the change is this node's own cache's
    /// (`Cache::execute`, `Cache::execute_multi`, `Cache::set`, `Cache::invalidate`), which
    /// writes it into its L1 and L3 itself, or removes the key there, once this returns.
    async fn commit_here(
        self: &Arc<Self>,
        cache: &strata_core::Cache,
        namespace: &str,
        key: &[u8],
        change: &Change,
        mirrored: bool,
    ) {
        let version = match change {
            Change::Written(e) => {
                if let Err(err) = self.store_owned(namespace, key, e.clone()) {
                    tracing::warn!(node = %self.name, error = %err, "primary could not store its own write");
                }
                e.version
            }
            Change::Removed(v) => {
                self.remove_owned(namespace, key, *v).await;
                *v
            }
            Change::None => return,
        };
        // This node's own remembered absence of the key ends with its change, once its store
        // holds it (its own invalidations never come back to it).
        self.absent.forget(namespace, key);
        // This node's own copies (L1, L3) of an older version go too: its own invalidations
        // never come back to it, and the caller may be another node. A write this node's
        // own cache mirrors next is left to that mirror, which writes it into L1 and L3
        // (both keep the newest version, so a read's promotion of the older copy that
        // lands later is refused): dropping the older L3 copy first cost a disk write of
        // its own, a blocking-pool hop, and a fifth of the client's node's CPU under `INCR`
        // on a cluster, and the L1 drop another 3 % (docs/benchmarks.md). Not a removal:
        // `Cache::invalidate` removes from L3 concurrently with the primary, possibly
        // before a racing write's copy landed there. Not with strict invalidations: the
        // announcement below waits, and a caller that gives up meanwhile never mirrors.
        // Not for a value L1 cannot hold either: the mirror's L1 write then leaves the key
        // out of L1, where a read that found the older copy in L3 before the mirror's L3
        // write could promote it after, with no newer copy there to refuse it.
        let mirrored = mirrored
            && matches!(change, Change::Written(e) if cache.l1_can_hold(namespace, key, e))
            && !self.cfg.strict_invalidations;
        if !mirrored {
            let _ = cache.drop_local(namespace, key, Some(version)).await;
        }
        self.announce_key(namespace, key, version).await;
    }

    /// A change committed with `mirrored` that its caller will not mirror after all (it is
    /// answered as an unknown outcome: the lease lapsed during the replication): this
    /// node's own older copies go now, as [`Shared::commit_here`] would have dropped them.
    async fn unmirrored(
        &self,
        cache: &strata_core::Cache,
        namespace: &str,
        key: &[u8],
        change: &Change,
        mirrored: bool,
    ) {
        if let (true, Change::Written(e)) = (mirrored, change) {
            let _ = cache.drop_local(namespace, key, Some(e.version)).await;
        }
    }

    /// The copy a primary executes against: its own, else the newest the other owners (and
    /// the previous ones, after a ring change) answer with; and the newest version of a
    /// copy they answered with that this node cannot serve (expired here, or refused by
    /// coherence: a dead copy an owner still holds), the floor of the execution's base so
    /// that the owners take the change over it. A dead copy newer than every live one
    /// superseded them: the execution then starts from none. An owner that cannot be asked
    /// makes it a refusal: starting from nothing could undo an acknowledged write.
    async fn current_copy(
        &self,
        namespace: &str,
        key: &[u8],
    ) -> Result<(Option<Entry>, u64), Refusal> {
        if let Some(own) = self.own_copy(namespace, key) {
            return Ok((Some(own), 0));
        }
        let (plan, _) = self.read_plan(key);
        let (copy, floor) = self.others_copy(namespace, key, &plan).await?;
        self.refuse_below_unproven(namespace, key, copy.as_ref(), floor)?;
        Ok((copy, floor))
    }

    /// Refuses (for now: retried while the view moves) an execution that would start below
    /// a copy of the key this node holds unproven ([`Shared::holds_unproven`]): what the
    /// other owners answered (`copy`, and the `floor` of dead copies) is older, or none, and
    /// the unproven copy may be the last one of the key's latest change. Executed, it would
    /// start over from less. A copy the others hold at least as new supersedes it.
    fn refuse_below_unproven(
        &self,
        namespace: &str,
        key: &[u8],
        copy: Option<&Entry>,
        floor: u64,
    ) -> Result<(), Refusal> {
        let Some(held) = self.owner.get_retained_entry(namespace, key) else {
            return Ok(());
        };
        let answered = copy.map_or(0, |c| c.version.as_u64()).max(floor);
        let unproven = Some(held.version.as_u64())
            .filter(|_| self.warm.is_unproven(namespace, key, held.version));
        if decide::below_unproven(unproven, answered) {
            return Err(Refusal::Unavailable(
                "this node's copy of the key is not proven yet (it rejoined or restarted), and no other owner holds one as new"
                    .into(),
            ));
        }
        Ok(())
    }

    /// This node's own fresh copy of `key` in its owner store.
    fn own_copy(&self, namespace: &str, key: &[u8]) -> Option<Entry> {
        let now = self.now_ms();
        self.settled_entry(namespace, key)
            .filter(|e| e.is_fresh(now))
    }

    /// [`Shared::current_copy`] once this node has no copy: the other members of `plan`.
    async fn others_copy(
        &self,
        namespace: &str,
        key: &[u8],
        plan: &[(String, std::net::SocketAddr)],
    ) -> Result<(Option<Entry>, u64), Refusal> {
        let now = self.now_ms();
        let mut answers = Vec::new();
        let mut floor = 0u64;
        for (name, addr) in plan.iter().filter(|(n, _)| *n != self.name) {
            let req = Request::Get {
                namespace: namespace.to_owned(),
                key: key.to_vec(),
            };
            match self.pool.call(name, *addr, req, None).await {
                Ok(Response::EntryAt { entry, .. } | Response::Entry(entry)) => {
                    let copy = entry.map(from_wire);
                    let live = copy.filter(|e| {
                        let live = e.is_fresh(now)
                            && self.coherence.lock().admits_tagged(
                                namespace,
                                key,
                                e.version.as_u64(),
                                &super::tag_refs(e),
                            );
                        if !live {
                            floor = floor.max(e.version.as_u64());
                        }
                        live
                    });
                    answers.push(live);
                }
                Ok(other) => {
                    return Err(Refusal::Unavailable(format!(
                        "owner {name} answered {other:?} to a read"
                    )));
                }
                Err(e) => {
                    return Err(Refusal::Unavailable(format!(
                        "owner {name} did not answer: {e}"
                    )));
                }
            }
        }
        if floor > 0 {
            // This execution's stamps order after the dead copy it supersedes.
            self.observe(Version::from_u64(floor));
        }
        let start = decide::starting_point(None, answers).filter(|e| e.version.as_u64() > floor);
        Ok((start, floor))
    }

    /// The copy a plain `SET`, `DEL` or `GETDEL` executes against: this node's own; with
    /// none, the others' only where [`decide::reads_before_put`] says so (else the
    /// replication finds any newer copy: `Stale`). The last: whether the others went unread.
    async fn copy_for_put(
        &self,
        ring: &strata_cluster::Ring,
        namespace: &str,
        key: &[u8],
    ) -> Result<(Option<Entry>, u64, bool), Refusal> {
        if let Some(own) = self.own_copy(namespace, key) {
            return Ok((Some(own), 0, false));
        }
        let (plan, _) = self.read_plan(key);
        let others: Vec<&str> = plan
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| *n != self.name)
            .collect();
        let replicas =
            decide::replicas(ring, &self.name, key, self.cfg.replication_factor as usize);
        if decide::reads_before_put(&others, &replicas) {
            let (copy, floor) = self.others_copy(namespace, key, &plan).await?;
            self.refuse_below_unproven(namespace, key, copy.as_ref(), floor)?;
            return Ok((copy, floor, false));
        }
        self.counters.blind_puts.fetch_add(1, Ordering::Relaxed);
        Ok((None, 0, true))
    }

    /// Sends `change` to every other owner under `ring` and needs each one to apply it.
    async fn replicate_out(
        &self,
        ring: &strata_cluster::Ring,
        namespace: &str,
        key: &[u8],
        change: &Change,
        (base, base_tags): (u64, Vec<ByteBuf>),
        from_none: bool,
    ) -> Result<Option<Newer>, Refusal> {
        let item = Outgoing {
            key,
            change,
            base,
            base_tags,
            from_none,
        };
        let refused = self
            .replicate_all(ring, namespace, std::slice::from_ref(&item))
            .await?;
        Ok(refused.into_iter().next().map(|(_, newer)| newer))
    }

    /// Sends the changes of one primary's keys (one key, or a multi-key command's keys of
    /// one hash tag: the same owners) to every other owner under `ring`, and needs each
    /// one to apply all of them: one `Replicate` for a single change, else one
    /// `ReplicateMulti`, which an owner checks key by key before it applies any. `Ok` with
    /// no refusal: every owner applied every change. `Ok` with refusals (by the index of
    /// the change refused): no owner applied anything, and each refused change has a newer
    /// copy or invalidation on an owner. An error: nothing applied (`Unavailable`,
    /// `NotPrimary`), or the outcome is unknown (`Indeterminate`).
    async fn replicate_all(
        &self,
        ring: &strata_cluster::Ring,
        namespace: &str,
        items: &[Outgoing<'_>],
    ) -> Result<Vec<(usize, Newer)>, Refusal> {
        let Some(first) = items.first() else {
            return Ok(Vec::new());
        };
        // Decided again before every replication, key by key, on the view as it is now:
        // an execution's checks are never more than one replication apart (an execution
        // may take several attempts, each with reads and a replication), which the lease's
        // grant window covers (`strata_cluster::primary::ExecLease`).
        let now_ring = self.ring();
        for item in items {
            if decide::primary(&now_ring, item.key) != Some(self.name.as_str()) {
                return Err(Refusal::NotPrimary(
                    decide::primary(&now_ring, item.key).map(str::to_owned),
                ));
            }
            self.check_lease(item.key)?;
        }
        let rf = self.cfg.replication_factor as usize;
        let targets = decide::replicas(ring, &self.name, first.key, rf);
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        #[cfg(feature = "fault-injection")]
        {
            let ms = self.faults.replicate_delay_ms.load(Ordering::Acquire);
            if ms > 0 {
                self.faults
                    .replications_delayed
                    .fetch_add(1, Ordering::AcqRel);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
        }
        // The changes sent, with the index of each among `items`.
        let mut sent: Vec<(usize, ReplicaChange)> = Vec::with_capacity(items.len());
        for (n, item) in items.iter().enumerate() {
            match self.outgoing(namespace, item) {
                Ok(Some(c)) => sent.push((n, c)),
                Ok(None) => {}
                // Nothing sent yet.
                Err(newer) => return Ok(vec![(n, newer)]),
            }
        }
        // One change goes as `Replicate` (what every build takes), unless the owner must
        // check its base's tags, which only `ReplicateMulti` carries, or it is a check
        // only, which `Replicate` would read as a removal at version 0.
        let req = match sent.as_slice() {
            [] => return Ok(Vec::new()),
            [(_, c)] if c.base_tags.is_empty() && !c.check_only() => Request::Replicate {
                namespace: namespace.to_owned(),
                key: c.key.to_vec(),
                entry: c.entry.clone(),
                version: c.version,
                base: c.base,
            },
            _ => Request::ReplicateMulti {
                namespace: namespace.to_owned(),
                changes: sent.iter().map(|(_, c)| c.clone()).collect(),
            },
        };
        let addrs = self.addresses(&targets);
        let multi = matches!(req, Request::ReplicateMulti { .. });
        let checks = multi && sent.iter().any(|(_, c)| c.check_only());
        // An owner of an earlier build (a rolling upgrade) reads a check-only change as a
        // removal at version 0: it gets the other changes alone — what its build checked —
        // and `kept` maps its answer's indices back (decided on the connection the request
        // goes out on, inside the call's deadline).
        let (stripped, kept) = if checks {
            let (r, k) = without_checks(&req);
            (Some(r), k)
        } else {
            (None, Vec::new())
        };
        let fallback = stripped
            .as_ref()
            .map(|r| (strata_cluster::rpc::features::CHECK_ONLY_CHANGES, r));
        let fallback = fallback.as_slice();
        let calls = addrs.iter().map(|(name, addr)| {
            let req = &req;
            async move {
                let answer = self.pool.call_for(name, *addr, req, fallback, None).await;
                (name, answer)
            }
        });
        let mut answers = Answers::new(sent.len());
        if addrs.len() < targets.len() {
            answers
                .refused
                .push("an owner is not a live member".to_owned());
        }
        for (name, answer) in futures_util::future::join_all(calls).await {
            let (r, kept) = match answer {
                // The owner's build checked nothing of these changes (all were check-only):
                // it applied nothing, and its answer counts for nothing.
                Ok((_, true)) if kept.is_empty() => continue,
                Ok((resp, fell_back)) => (Ok(resp), fell_back.then_some(&kept)),
                Err(e) => (Err(e), None),
            };
            let count = kept.map_or(sent.len(), Vec::len);
            // A `Replicate`'s refusals, or a `ReplicateMulti`'s (each change by its index);
            // any other answer to either is an unknown outcome.
            let refusals = match r {
                Ok(Response::Stale { entry }) if !multi => {
                    Some(vec![(0, ReplicaRefusal::Stale { entry })])
                }
                Ok(Response::Superseded { version }) if !multi => {
                    Some(vec![(0, ReplicaRefusal::Superseded { version })])
                }
                Ok(Response::Fenced { primary }) if !multi => {
                    Some(vec![(0, ReplicaRefusal::Fenced { primary })])
                }
                // (A `Replicate` is answered `Refused` too, for a copy held unproven.)
                Ok(Response::Refused { refusals })
                    if !refusals.is_empty()
                        && refusals.iter().all(|(i, _)| (*i as usize) < count) =>
                {
                    Some(refusals)
                }
                other => {
                    self.note_answer(&mut answers, name, other);
                    None
                }
            };
            for (i, refusal) in refusals.into_iter().flatten() {
                let i = kept.map_or(i as usize, |k| k[i as usize]);
                self.note_refusal(&mut answers, name, i, refusal);
            }
        }
        let refused = answers.conclude()?;
        Ok(refused
            .into_iter()
            .map(|(i, newer)| (sent[i].0, newer))
            .collect())
    }

    /// One change as it goes to the owners, or `None` for none; `Err` when the change
    /// cannot be ordered above a removal this node has applied (executed again above it).
    fn outgoing(
        &self,
        namespace: &str,
        item: &Outgoing<'_>,
    ) -> Result<Option<ReplicaChange>, Newer> {
        let (entry, version) = match item.change {
            Change::Written(e) => (Some(to_wire(e)), e.version.as_u64()),
            Change::Removed(v) => (None, v.as_u64()),
            // A key read and not changed (a multi-key command's): its base is checked.
            Change::None => (None, ReplicaChange::CHECK_ONLY),
        };
        // Executed from no copy, the newest removal of the key this node has applied (as
        // the owners' check counts them: no tags) is part of what it executed against:
        // an owner answers `Superseded` for one newer than the base only when this node has
        // not applied it (its own `DEL`s cost no extra round). Not when it executed from a
        // copy: the tombstones also record writes announced (a newer copy an owner holds,
        // live), which the owner's `Stale` check must still see above the base.
        let base = if item.from_none {
            let known = self
                .coherence
                .lock()
                .superseded_by(namespace, item.key, item.base, &[]);
            item.base.max(known.unwrap_or(0))
        } else {
            item.base
        };
        // A removal recorded here before this node's clock observed it (coherence takes an
        // item before dissemination observes its version) may be newer than the change's
        // own stamp: every owner would drop the change. Executed again above it.
        if let Change::Written(e) = item.change
            && base >= e.version.as_u64()
        {
            // Observed, so that the next stamp goes above it (a multi-key operation is
            // refused, and the node's retry stamps above it).
            self.observe(Version::from_u64(base));
            return Err(Newer::Invalidated(base));
        }
        Ok(Some(ReplicaChange {
            key: ByteBuf::from(item.key.to_vec()),
            entry,
            version,
            base,
            base_tags: item.base_tags.clone(),
        }))
    }

    /// Counts an owner's answer that is not a refusal: applied, not reached (nothing
    /// applied), or unknown.
    fn note_answer(&self, answers: &mut Answers, name: &str, r: Result<Response, CallError>) {
        match r {
            Ok(Response::Replicated) => answers.applied += 1,
            // Never reached (its port refuses connections — the process is gone — or no
            // connection): nothing applied there. The owner is not skipped: the write
            // waits for the ring to drop it (a REJECT rule looks the same).
            Err(CallError::Refused(e) | CallError::NotSent(e)) => {
                self.counters.replica_down.fetch_add(1, Ordering::Relaxed);
                answers
                    .refused
                    .push(format!("owner {name} cannot be reached: {e}"));
            }
            Ok(other) => answers
                .unknown
                .push(format!("owner {name} answered {other:?}")),
            Err(CallError::Unknown(e)) => {
                answers
                    .unknown
                    .push(format!("owner {name} did not answer: {e}"));
            }
        }
    }

    /// Counts an owner's refusal of the change at `index`.
    fn note_refusal(&self, answers: &mut Answers, name: &str, index: usize, r: ReplicaRefusal) {
        match r {
            ReplicaRefusal::Stale { entry } => {
                let e = from_wire(entry);
                // Whatever happens to this attempt, the next stamps go above it (a
                // multi-key or a mixed answer ends in an error the client retries).
                self.observe(e.version);
                let newer = &mut answers.newer[index];
                if newer.as_ref().is_none_or(|n| n.version < e.version) {
                    *newer = Some(e);
                }
            }
            // Not observed here: a later attempt stamped above it would be taken by that
            // owner whether or not this node's copies are dead (`Answers::conclude`).
            ReplicaRefusal::Superseded { version } => {
                let inv = &mut answers.invalidated[index];
                *inv = (*inv).max(Some(version));
            }
            // The copy executed from was checked and is live: the next stamp goes above it.
            ReplicaRefusal::Covered { version } => {
                let c = &mut answers.covered[index];
                *c = (*c).max(Some(version));
            }
            // Not retried: it would be refused again.
            ReplicaRefusal::TooLarge { largest } => {
                answers.too_large = Some(format!(
                    "ERR owner {name} holds at most {largest} bytes for the value (cluster.owner_capacity_bytes); nothing was applied"
                ));
            }
            // Nothing applied there: tried again (`cluster.failover_wait_ms`) until that
            // owner's proof keeps the copy and passes it on here, or drops it.
            ReplicaRefusal::Unproven { version } => {
                self.observe(Version::from_u64(version));
                answers.refused.push(format!(
                    "owner {name} holds a copy of the key not proven yet (it rejoined or restarted), newer than the one executed from"
                ));
            }
            ReplicaRefusal::Fenced { primary } => {
                self.counters.fenced.fetch_add(1, Ordering::Relaxed);
                answers.refused.push(match primary {
                    Some(p) => format!("owner {name} has {p} as the key's primary"),
                    None => format!(
                        "owner {name} refused it (it sees no majority of the cluster, or no primary)"
                    ),
                });
            }
        }
    }

    /// The RPC addresses of the live members named.
    fn addresses(&self, names: &[String]) -> Vec<(String, std::net::SocketAddr)> {
        let all = self.others();
        names
            .iter()
            .filter_map(|n| all.iter().find(|(m, _)| m == n).cloned())
            .collect()
    }

    /// Announces that copies of `key` older than `version` are stale (after a change reached
    /// the owners): strictly first when configured, then disseminated. A member that does
    /// not confirm a strict key invalidation is logged by `strict` and falls back to the
    /// gossip bound; the write stands.
    pub(crate) async fn announce_key(
        self: &Arc<Self>,
        namespace: &str,
        key: &[u8],
        version: Version,
    ) {
        let inv = self.originate(
            version,
            InvalidationOp::Key {
                namespace: namespace.to_owned(),
                key: key.to_vec(),
            },
        );
        if self.cfg.strict_invalidations {
            self.strict(&inv).await;
        }
        self.publish(inv);
    }

    /// Executes `op` on `key` at its primary — here, or by RPC — retrying for a while when
    /// the node asked is not the primary (the views are converging after a change). An
    /// error after the request left may hide an applied change: it is not retried.
    pub(crate) async fn execute_at_primary(
        self: &Arc<Self>,
        namespace: &str,
        key: &[u8],
        op: PrimaryOp,
    ) -> Result<Executed, String> {
        match self.route(namespace, key, op).await? {
            Outcome::One(ex) => Ok(ex),
            Outcome::Many(_) => Err("a multi-key answer to a single-key operation".into()),
        }
    }

    /// [`Shared::execute_at_primary`] for a multi-key operation (its keys share a hash tag:
    /// the caller checked), routed by its first key.
    pub(crate) async fn execute_multi_at_primary(
        self: &Arc<Self>,
        namespace: &str,
        op: &MultiOp,
    ) -> Result<ExecutedMulti, String> {
        let Some(first) = op.keys().first().map(|k| k.to_vec()) else {
            return Err("a multi-key operation without keys".into());
        };
        match self
            .route(namespace, &first, PrimaryOp::Multi(op.clone()))
            .await?
        {
            Outcome::Many(ex) => Ok(ex),
            Outcome::One(_) => Err("a single-key answer to a multi-key operation".into()),
        }
    }

    /// Runs `op` here when this node is the primary, else sends it to the primary.
    async fn route(
        self: &Arc<Self>,
        namespace: &str,
        key: &[u8],
        op: PrimaryOp,
    ) -> Result<Outcome, String> {
        let encoded = op.encode();
        // Refused before anything is sent: a frame over the limit would be dropped by the
        // primary, leaving the outcome unknown.
        let room = self.max_frame.saturating_sub(FRAME_HEADROOM);
        if encoded.len() + key.len() + namespace.len() > room {
            return Err(format!(
                "ERR the operation takes {} bytes, more than one cluster frame holds ({room}); split it",
                encoded.len()
            ));
        }
        // From when the front end accepted it, before it queued behind another command of
        // the key on this node (`strata_core::time::accepted_at`).
        let accepted_ms = strata_core::time::accepted_ms().unwrap_or_else(|| self.now_ms());
        let expiry_ms = op.earliest_expiry_ms();
        // An operation with an expiry to keep is answered within its budget, or not at all
        // (one whose budget outlasts the whole failover wait has nothing to bound: it is
        // not given a task and a timer).
        let budget = strata_cluster::primary::expiry_wait_budget_ms(accepted_ms, expiry_ms)
            .filter(|b| *b < self.cfg.failover_wait_ms);
        // (Waited, not expired: `SET k v PX 1` one tick after it was parsed runs, as on
        // Redis, as a write that has already expired.)
        if budget.is_some_and(|b| self.now_ms().saturating_sub(accepted_ms) >= b) {
            // Its tenth spent queueing on this node: refused before anything is sent.
            self.counters
                .expiry_waits_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "TRYAGAIN the command waited {} ms on this node before it was routed, a tenth of its expiry or more: not applied",
                self.now_ms().saturating_sub(accepted_ms)
            ));
        }
        let mut op = Some(op);
        let mut last = String::new();
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.cfg.failover_wait_ms);
        for attempt in 0u64.. {
            if attempt > 0 {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis((10 * attempt).min(200))).await;
                // Every attempt before this one was refused with nothing applied: refusing
                // now is safe, and running it would keep a TTL short by the wait.
                let now_ms = self.now_ms();
                if strata_cluster::primary::waited_past_expiry(accepted_ms, expiry_ms, now_ms) {
                    self.counters
                        .expiry_waits_refused
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(format!(
                        "TRYAGAIN the command waited {} ms for the key's primary ({last}), a tenth of its expiry or more: not applied",
                        now_ms.saturating_sub(accepted_ms)
                    ));
                }
            }
            let Some((name, addr)) = self.owners(key).into_iter().next() else {
                return Err("TRYAGAIN the cluster has no member to own the key".into());
            };
            if name == self.name {
                let this = match op.take() {
                    Some(o) => o,
                    None => PrimaryOp::decode(&encoded).ok_or("undecodable operation")?,
                };
                let done = match budget {
                    None => self.execute_here(namespace, key, this, false).await,
                    // Run as a task of its own, so that giving up on its answer does not
                    // cancel it halfway through replication.
                    Some(b) => {
                        // Bounded in bytes: a given-up one runs on, holding its value, while
                        // its client may already be sending the next.
                        let left = b.saturating_sub(self.now_ms().saturating_sub(accepted_ms));
                        let Some(held) =
                            self.timed_write_room(encoded.len() + key.len(), left).await
                        else {
                            self.counters
                                .timed_writes_shed
                                .fetch_add(1, Ordering::Relaxed);
                            return Err(self.timed_writes_full());
                        };
                        let (me, ns, k) = (self.clone(), namespace.to_owned(), key.to_vec());
                        // As for another node (`forwarded`): it drops this node's own
                        // older copies itself, since a caller that gave up mirrors nothing
                        // into its layers (left to the mirror, they stayed stale here).
                        let task = tokio::spawn(async move {
                            let _held = held;
                            me.execute_here(&ns, &k, this, true).await
                        });
                        match self.within_budget(task, accepted_ms, expiry_ms, b).await {
                            Some(Ok(done)) => done,
                            Some(Err(join)) => {
                                return Err(format!(
                                    "ERR the write may or may not have happened (not acknowledged): {join}"
                                ));
                            }
                            None => return Err(self.past_expiry_budget(b)),
                        }
                    }
                };
                match done {
                    Ok(out) => return Ok(out),
                    Err(Refusal::NotPrimary(p)) => {
                        last = format!("the view moved (primary now {p:?})");
                        continue;
                    }
                    // Refused for good, nothing applied: not retried.
                    Err(Refusal::Unavailable(why))
                        if why.starts_with("CROSSSLOT") || why.starts_with("ERR ") =>
                    {
                        return Err(why);
                    }
                    // Nothing applied: wait for the view to move and try again.
                    Err(Refusal::Unavailable(why)) => {
                        last = why;
                        continue;
                    }
                    Err(Refusal::Indeterminate(why)) => {
                        return Err(format!(
                            "ERR the write may or may not have happened (not acknowledged): {why}"
                        ));
                    }
                }
            }
            self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            let req = Request::Execute {
                namespace: namespace.to_owned(),
                key: key.to_vec(),
                op: encoded.clone(),
            };
            let answer = match budget {
                None => self.pool.call_typed(&name, addr, req, None).await,
                Some(b) => {
                    let call = self.pool.call_typed(&name, addr, req, None);
                    match self.within_budget(call, accepted_ms, expiry_ms, b).await {
                        Some(answer) => answer,
                        None => return Err(self.past_expiry_budget(b)),
                    }
                }
            };
            match answer {
                Ok(Response::Executed {
                    reply,
                    entry,
                    removed,
                }) => {
                    let reply: Reply = postcard::from_bytes(&reply)
                        .map_err(|e| format!("undecodable reply from {name}: {e}"))?;
                    let change = match (entry, removed) {
                        (Some(w), _) => Change::Written(from_wire(w)),
                        (None, Some(v)) => Change::Removed(Version::from_u64(v)),
                        (None, None) => Change::None,
                    };
                    return Ok(Outcome::One(Executed { reply, change }));
                }
                Ok(Response::ExecutedMulti { reply, changes }) => {
                    let reply: Reply = postcard::from_bytes(&reply)
                        .map_err(|e| format!("undecodable reply from {name}: {e}"))?;
                    let changes = changes
                        .into_iter()
                        .map(|(k, entry, removed)| {
                            let change = match entry {
                                Some(w) => Change::Written(from_wire(w)),
                                None => Change::Removed(Version::from_u64(removed)),
                            };
                            (Bytes::from(k.into_vec()), change)
                        })
                        .collect();
                    return Ok(Outcome::Many(ExecutedMulti { reply, changes }));
                }
                Ok(Response::NotPrimary { primary }) => {
                    last = format!("{name} is not the primary (it names {primary:?})");
                }
                Ok(other) => return Err(format!("unexpected answer from {name}: {other:?}")),
                // Nothing reached the primary: wait for the view to move past it (failure
                // detection) and send it to the next primary.
                Err(CallError::Refused(e) | CallError::NotSent(e)) => last = e,
                Err(CallError::Unknown(e)) => {
                    // The primary may have applied it: never sent twice.
                    let e = e
                        .strip_prefix(&format!("{name}: "))
                        .unwrap_or(&e)
                        .to_owned();
                    // (`TRYAGAIN`: the primary refused it before executing anything, its
                    // timed writes' bound full.)
                    return Err(
                        if e.starts_with("ERR ")
                            || e.starts_with("CROSSSLOT")
                            || e.starts_with("TRYAGAIN ")
                        {
                            e
                        } else {
                            format!(
                                "ERR the key's primary {name} did not answer: the write may or may not have happened: {e}"
                            )
                        },
                    );
                }
            }
        }
        Err(format!(
            "TRYAGAIN no primary for the key could take the write within {} ms (ring {:?}); nothing was applied: {last}",
            self.cfg.failover_wait_ms,
            self.ring().nodes()
        ))
    }

    /// `fut`'s output, unless the operation it attempts (accepted at `accepted_ms`, expiring
    /// at `expiry_ms`) waits past its budget of `budget_ms` first, as this node's clock
    /// counts (`waited_past_expiry`, the check between attempts): then `None`, and `fut` is
    /// dropped (a task it awaits runs on).
    /// The refusal of a write with an expiry past `cluster.timed_writes_max_bytes`: nothing
    /// was applied.
    fn timed_writes_full(&self) -> String {
        format!(
            "TRYAGAIN writes with an expiry still running on this node as their keys' primary hold cluster.timed_writes_max_bytes ({} bytes; their owners are slow): not applied",
            self.cfg.timed_writes_max_bytes
        )
    }

    /// Room for a write of `bytes` with an expiry to run here as its key's primary
    /// (`cluster.timed_writes_max_bytes`), waited for at most `wait_ms`; `None` when those
    /// running held it all that long. Each is charged at least [`TIMED_WRITE_MIN_CHARGE`]
    /// (a task's own state), and one larger than the whole bound takes all of it.
    async fn timed_write_room(
        &self,
        bytes: usize,
        wait_ms: u64,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let cap = usize::try_from(self.cfg.timed_writes_max_bytes)
            .unwrap_or(usize::MAX)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        let n = u32::try_from(bytes.max(TIMED_WRITE_MIN_CHARGE).min(cap)).unwrap_or(u32::MAX);
        let sem = self.timed_writes.clone();
        if let Ok(p) = sem.clone().try_acquire_many_owned(n) {
            return Some(p);
        }
        tokio::time::timeout(Duration::from_millis(wait_ms), sem.acquire_many_owned(n))
            .await
            .ok()?
            .ok()
    }

    async fn within_budget<F: std::future::Future>(
        &self,
        fut: F,
        accepted_ms: u64,
        expiry_ms: Option<u64>,
        budget_ms: u64,
    ) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        let mut left = budget_ms.saturating_sub(self.now_ms().saturating_sub(accepted_ms));
        loop {
            let done = tokio::time::timeout(Duration::from_millis(left.max(1)), fut.as_mut()).await;
            // Past the budget as this node's clock counts it, done or not: done too means
            // this node was paused (SIGSTOP, a VM freeze) while it ran and woke to find the
            // answer and the timer both due; a grant that late is withheld (the unknown
            // outcome), as it would have been had the timer been seen first.
            if strata_cluster::primary::waited_past_expiry(accepted_ms, expiry_ms, self.now_ms()) {
                return None;
            }
            match done {
                Ok(out) => return Some(out),
                // This node's clock has not counted the budget out yet (a test's manual
                // clock): wait on.
                Err(_) => left = 10,
            }
        }
    }

    /// The answer to an operation whose attempt outlasted its expiry's budget of `budget_ms`
    /// (`strata_cluster::primary::expiry_wait_budget_ms`): the attempt may still apply it
    /// (with the expiry fixed when it was accepted, so a lock taken so late lapses soon),
    /// but the client is not told it holds what it asked for.
    fn past_expiry_budget(&self, budget_ms: u64) -> String {
        self.counters
            .expiry_waits_refused
            .fetch_add(1, Ordering::Relaxed);
        format!(
            "ERR the write may or may not have happened (not acknowledged): its owners did not answer within {budget_ms} ms, a tenth of its expiry"
        )
    }

    /// Executes `op` here as the primary (of `key`, or of a multi-key operation's keys);
    /// `forwarded`: for another node, which the answer travels back to.
    async fn execute_here(
        self: &Arc<Self>,
        namespace: &str,
        key: &[u8],
        op: PrimaryOp,
        forwarded: bool,
    ) -> Result<Outcome, Refusal> {
        match op {
            // Boxed: the rarer multi-key path's state would otherwise be part of every
            // single-key write's future (copied whole whenever one is boxed or moved).
            PrimaryOp::Multi(m) => {
                Box::pin(self.execute_multi_as_primary(namespace, &m, forwarded))
                    .await
                    .map(Outcome::Many)
            }
            single => self
                .execute_as_primary(namespace, key, single, forwarded)
                .await
                .map(Outcome::One),
        }
    }

    /// The primary's side of `Execute`, as a response.
    pub(crate) async fn serve_execute(
        self: &Arc<Self>,
        namespace: &str,
        key: &[u8],
        op: &[u8],
    ) -> Response {
        let op_len = op.len();
        let Some(op) = PrimaryOp::decode(op) else {
            return Response::Error("undecodable operation".into());
        };
        // A write with an expiry forwarded here is bounded as one taken here is (`route`):
        // its caller gives up at a tenth of the expiry and its client may send the next,
        // while this one runs on until the owners answer.
        let budget =
            strata_cluster::primary::expiry_wait_budget_ms(self.now_ms(), op.earliest_expiry_ms())
                .filter(|b| *b < self.cfg.failover_wait_ms);
        let _held = match budget {
            None => None,
            Some(b) => match self.timed_write_room(op_len + key.len(), b).await {
                Some(p) => Some(p),
                None => {
                    self.counters
                        .timed_writes_shed
                        .fetch_add(1, Ordering::Relaxed);
                    return Response::Error(self.timed_writes_full());
                }
            },
        };
        let done = self.execute_here(namespace, key, op, true).await;
        match done {
            Ok(Outcome::One(Executed { reply, change })) => {
                let (entry, removed) = match change {
                    Change::Written(e) => (Some(to_wire(&e)), None),
                    Change::Removed(v) => (None, Some(v.as_u64())),
                    Change::None => (None, None),
                };
                Response::Executed {
                    reply: postcard::to_allocvec(&reply).unwrap_or_default(),
                    entry,
                    removed,
                }
            }
            Ok(Outcome::Many(ExecutedMulti { reply, changes })) => Response::ExecutedMulti {
                reply: postcard::to_allocvec(&reply).unwrap_or_default(),
                changes: changes
                    .into_iter()
                    .map(|(k, change)| match change {
                        Change::Written(e) => (ByteBuf::from(k.to_vec()), Some(to_wire(&e)), 0),
                        Change::Removed(v) => (ByteBuf::from(k.to_vec()), None, v.as_u64()),
                        Change::None => (ByteBuf::from(k.to_vec()), None, 0),
                    })
                    .collect(),
            },
            Err(Refusal::NotPrimary(primary)) => Response::NotPrimary { primary },
            Err(Refusal::Unavailable(why))
                if why.starts_with("CROSSSLOT") || why.starts_with("ERR ") =>
            {
                Response::Error(why)
            }
            // Nothing applied: the caller waits for its view to move and sends it again.
            Err(Refusal::Unavailable(_)) => Response::NotPrimary { primary: None },
            Err(Refusal::Indeterminate(why)) => Response::Error(format!(
                "ERR the write may or may not have happened (not acknowledged): {why}"
            )),
        }
    }
}

/// The least a write with an expiry is charged against `cluster.timed_writes_max_bytes`:
/// a task's own state, so that a flood of tiny ones is bounded in number too.
const TIMED_WRITE_MIN_CHARGE: usize = 1024;

/// How many times a primary executes one write against newer copies owners answer with.
const STALE_RETRIES: usize = 4;

/// One key's change for [`Shared::replicate_all`].
struct Outgoing<'a> {
    key: &'a [u8],
    change: &'a Change,
    /// The version of the copy the change was executed from (or the floor of its base).
    base: u64,
    /// That copy's tags, when whether it was live matters to the change (empty for a
    /// plain `SET`).
    base_tags: Vec<ByteBuf>,
    /// Executed from no copy.
    from_none: bool,
}

/// What the owners answered a replication: each owner applied every change, refused one
/// (and applied nothing), could not be reached (nothing applied), or left it unknown.
struct Answers {
    applied: usize,
    refused: Vec<String>,
    /// An owner's store cannot hold a value (the command fails, nothing applied).
    too_large: Option<String>,
    unknown: Vec<String>,
    /// Per change: the newest copy an owner refused it for (`Stale`).
    newer: Vec<Option<Entry>>,
    /// Per change: the newest invalidation an owner refused it for (`Superseded`).
    invalidated: Vec<Option<u64>>,
    /// Per change: the newest invalidation an owner found covering its entry (`Covered`).
    covered: Vec<Option<u64>>,
}

impl Answers {
    fn new(changes: usize) -> Self {
        Self {
            applied: 0,
            refused: Vec::new(),
            too_large: None,
            unknown: Vec::new(),
            newer: vec![None; changes],
            invalidated: vec![None; changes],
            covered: vec![None; changes],
        }
    }

    /// Every owner applied everything (no refusal), or none did: the changes refused, by
    /// index, with what refused them; else an error.
    fn conclude(self) -> Result<Vec<(usize, Newer)>, Refusal> {
        let Answers {
            applied,
            mut refused,
            too_large,
            mut unknown,
            newer,
            invalidated,
            covered,
        } = self;
        let any_newer = newer.iter().any(Option::is_some)
            || invalidated.iter().any(Option::is_some)
            || covered.iter().any(Option::is_some);
        let partial = applied > 0 && (any_newer || !refused.is_empty() || too_large.is_some());
        if !unknown.is_empty() || partial {
            if too_large.is_some() {
                refused.push("an owner cannot hold a value".into());
            }
            unknown.extend(refused);
            return Err(Refusal::Indeterminate(unknown.join("; ")));
        }
        if !refused.is_empty() {
            return Err(Refusal::Unavailable(refused.join("; ")));
        }
        let mut out = Vec::new();
        for (i, ((newer, invalidated), covered)) in
            newer.into_iter().zip(invalidated).zip(covered).enumerate()
        {
            match (newer, invalidated) {
                (None, None) => {
                    if let Some(v) = covered {
                        out.push((i, Newer::Covered(v)));
                    }
                }
                (Some(e), None) => out.push((i, Newer::Copy(e))),
                (None, Some(v)) => out.push((i, Newer::Invalidated(v))),
                // A copy at or above the invalidation is not covered by it (coherence
                // admits a copy at its version).
                (Some(e), Some(v)) if e.version.as_u64() >= v => out.push((i, Newer::Copy(e))),
                // Whether the copy is live depends on an invalidation this node has not
                // applied (one owner has, another has not): nothing was applied. Not
                // observed, so a later attempt is refused alike until this node or that
                // owner has applied it.
                (Some(_), Some(_)) => {
                    return Err(Refusal::Unavailable(
                        "owners answered with a newer copy and with a newer invalidation of the key: nothing was applied".into(),
                    ));
                }
            }
        }
        // A value an owner cannot hold fails the command at once (`route` does not retry
        // an `ERR`), unless executing again from what the owners answered may change it.
        if out.is_empty()
            && let Some(why) = too_large
        {
            return Err(Refusal::Unavailable(why));
        }
        Ok(out)
    }
}

/// What an owner held that a primary's change was not executed over: it executes again.
#[derive(Debug)]
enum Newer {
    /// A newer copy (`Stale`): adopted, or, when this node cannot serve it, a floor.
    Copy(Entry),
    /// An invalidation of the key at this version, at or above the change's (`Superseded`).
    Invalidated(u64),
    /// An invalidation at this version covers the change's own entry, not the copy it was
    /// executed from (`Covered`): executed again from the same copies, stamped above it.
    Covered(u64),
}

/// Where a primary's next execution of a key starts after an owner answered `Stale`
/// ([`Shared::adopt`]).
#[derive(Debug, Clone)]
enum Start {
    /// From this copy (adopted).
    From(Entry),
    /// From no copy, above this version (a dead copy an owner still holds).
    Above(u64),
}

/// A `DEL` as the primary executes it.
pub(crate) fn del() -> PrimaryOp {
    PrimaryOp::Key(KeyOp::Del)
}

/// `req` (a `ReplicateMulti`) without its check-only changes, for an owner of a build from
/// before them (`rpc::features::CHECK_ONLY_CHANGES`), and the index in `req` of each change
/// kept. An owner of that build checks the keys a command changes, not the keys it only
/// read: what that build's primaries did (docs/operations.md, rolling upgrades).
fn without_checks(req: &Request) -> (Request, Vec<usize>) {
    let Request::ReplicateMulti { namespace, changes } = req else {
        return (req.clone(), Vec::new());
    };
    let (kept, changes): (Vec<usize>, Vec<ReplicaChange>) = changes
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.check_only())
        .map(|(i, c)| (i, c.clone()))
        .unzip();
    let req = Request::ReplicateMulti {
        namespace: namespace.clone(),
        changes,
    };
    (req, kept)
}

/// The keys (indices) a transaction watched at a version newer than the copy it was just
/// executed from — or watched present while there is no copy — when that aborted it.
fn watched_ahead(op: &MultiOp, current: &[Option<Entry>]) -> Vec<usize> {
    let MultiOp::Transaction(t) = op else {
        return Vec::new();
    };
    t.watch
        .iter()
        .filter_map(|&(i, watched)| {
            let held = current
                .get(i as usize)?
                .as_ref()
                .map(|e| e.version.as_u64());
            match (watched, held) {
                (Some(_), None) => Some(i as usize),
                (Some(w), Some(h)) if w > h => Some(i as usize),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &str, check_only: bool) -> ReplicaChange {
        ReplicaChange {
            key: ByteBuf::from(key.as_bytes().to_vec()),
            entry: None,
            version: if check_only {
                ReplicaChange::CHECK_ONLY
            } else {
                7
            },
            base: 3,
            base_tags: Vec::new(),
        }
    }

    /// An earlier build's owner gets the changed keys alone, in order, and each index of
    /// its answer maps back to the change's index in the full request — with check-only
    /// changes before, between and after the others.
    #[test]
    fn an_earlier_builds_request_keeps_the_changes_and_maps_their_indices() {
        let full = Request::ReplicateMulti {
            namespace: "ns".into(),
            changes: vec![
                change("a", true),
                change("b", false),
                change("c", true),
                change("d", false),
                change("e", true),
            ],
        };
        let (stripped, kept) = without_checks(&full);
        let Request::ReplicateMulti { changes, .. } = &stripped else {
            panic!("not a ReplicateMulti: {stripped:?}");
        };
        let keys: Vec<&[u8]> = changes.iter().map(|c| c.key.as_slice()).collect();
        assert_eq!(keys, [b"b".as_slice(), b"d"]);
        assert!(changes.iter().all(|c| !c.check_only()));
        assert_eq!(kept, [1, 3]);
        // Only check-only changes: nothing to send, nothing kept.
        let only = Request::ReplicateMulti {
            namespace: "ns".into(),
            changes: vec![change("a", true)],
        };
        let (stripped, kept) = without_checks(&only);
        assert!(matches!(stripped, Request::ReplicateMulti { changes, .. } if changes.is_empty()));
        assert!(kept.is_empty());
    }
}
