//! Per-key primary execution on the node ([`strata_cluster::primary`] decides; this file
//! does the I/O): the primary's side of `Execute`, an owner's side of `Replicate`, and the
//! lock that makes a key's writes one at a time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use strata_cluster::InvalidationOp;
use strata_cluster::primary::{self as decide, PrimaryOp};
use strata_cluster::rpc::{ByteBuf, Request, Response, WireEntry};
use strata_core::ops::{self, Change, Effect, Executed, ExecutedMulti, KeyOp, MultiOp, Reply};
use strata_core::{Entry, Tier, Version};

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
    /// The write may or may not have reached some owners: an owner fenced it off or did not
    /// answer. It was not applied here and not acknowledged.
    Failed(String),
}

impl Shared {
    /// The stripe of `key`'s execution lock.
    fn exec_stripe(&self, namespace: &str, key: &[u8]) -> usize {
        let h = strata_cluster::ring::key_hash(namespace, key)
            ^ xxhash_rust::xxh3::xxh3_64(key).rotate_left(17);
        (h as usize) % EXEC_STRIPES
    }

    /// The execution lock of `key`'s stripe.
    fn exec_lock(&self, namespace: &str, key: &[u8]) -> &tokio::sync::Mutex<()> {
        &self.exec_locks[self.exec_stripe(namespace, key)]
    }

    /// Executes `op` on `key` as its primary: under the key's lock, from the current copy,
    /// replicated to every other owner before it is applied here and acknowledged, then
    /// announced to every member.
    pub(crate) async fn execute_as_primary(
        self: &Arc<Self>,
        namespace: &str,
        key: &[u8],
        op: PrimaryOp,
    ) -> Result<Executed, Refusal> {
        let (ring, cache) = self.admit(namespace, key)?;
        let _g = self.exec_lock(namespace, key).lock().await;
        self.counters.executed.fetch_add(1, Ordering::Relaxed);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .execute_locked(&ring, cache, namespace, key, &op)
                .await?
            {
                Ok(done) => return Ok(done),
                // An owner held a newer copy than this node executed against: adopt it and
                // execute again (a primary back from a pause or a partition catches up here).
                Err(newer) if attempt < STALE_RETRIES => self.adopt(namespace, key, newer),
                Err(_) => {
                    return Err(Refusal::Failed(
                        "owners kept answering with newer copies".into(),
                    ));
                }
            }
        }
    }

    /// Adopts an owner's newer copy of `key` (its `Stale` answer).
    fn adopt(&self, namespace: &str, key: &[u8], newer: Entry) {
        self.counters.stale_base.fetch_add(1, Ordering::Relaxed);
        self.observe(newer.version);
        let _ = self
            .owner
            .set_sync(namespace, Bytes::copy_from_slice(key), newer);
    }

    /// Whether this node may execute writes of `key` as its primary now, with the ring it
    /// decided on and its cache.
    fn admit(
        &self,
        namespace: &str,
        key: &[u8],
    ) -> Result<(Arc<strata_cluster::Ring>, &strata_core::Cache), Refusal> {
        if self.leaving.load(Ordering::Acquire) {
            return Err(Refusal::NotPrimary(None));
        }
        let ring = self.ring();
        if decide::primary(&ring, namespace, key) != Some(self.name.as_str()) {
            return Err(Refusal::NotPrimary(
                decide::primary(&ring, namespace, key).map(str::to_owned),
            ));
        }
        if !self.stall.lock().may_execute(self.monotonic_ms()) {
            return Err(Refusal::Failed(
                "this node stalled (a pause): it executes no write until the cluster's view has reached it".into(),
            ));
        }
        let members = self.others().len() + 1;
        if !decide::has_quorum(members, self.cfg.expected_size as usize) {
            return Err(Refusal::Failed(format!(
                "this node sees {members} of the cluster's {} members (cluster.expected_size): writes need a majority",
                self.cfg.expected_size
            )));
        }
        let Some(cache) = self.cache.get() else {
            return Err(Refusal::Failed(
                "the node's cache is not attached yet".into(),
            ));
        };
        Ok((ring, cache))
    }

    /// Executes a multi-key operation as the primary of its keys (one hash tag): under
    /// every key's lock, from each key's current copy, every change replicated to the other
    /// owners before any is applied here and acknowledged.
    pub(crate) async fn execute_multi_as_primary(
        self: &Arc<Self>,
        namespace: &str,
        op: &MultiOp,
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
        let (ring, cache) = self.admit(namespace, first)?;
        if keys
            .iter()
            .any(|k| decide::primary(&ring, namespace, k) != Some(self.name.as_str()))
        {
            return Err(Refusal::Failed(
                "CROSSSLOT Keys in request don't hash to the same slot".into(),
            ));
        }
        let mut stripes: Vec<usize> = keys
            .iter()
            .map(|k| self.exec_stripe(namespace, k))
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(self.exec_locks[i].lock().await);
        }
        self.counters.executed.fetch_add(1, Ordering::Relaxed);
        'attempt: for _ in 0..STALE_RETRIES {
            let now = self.now_ms();
            let mut current = Vec::with_capacity(keys.len());
            for k in &keys {
                let c = self.current_copy(namespace, k).await?;
                if let Some(e) = &c {
                    self.observe(e.version);
                }
                current.push(c);
            }
            let _ = now;
            let refs: Vec<Option<&Entry>> = current.iter().map(Option::as_ref).collect();
            let (effects, reply) = ops::apply_multi(op, &refs);
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
            for (i, change) in &changes {
                let base = current[*i].as_ref().map_or(0, |e| e.version.as_u64());
                if let Some(newer) = self
                    .replicate_out(&ring, namespace, &keys[*i], change, base)
                    .await?
                {
                    self.adopt(namespace, &keys[*i], newer);
                    continue 'attempt;
                }
            }
            let mut out = Vec::with_capacity(changes.len());
            for (i, change) in changes {
                self.commit_here(cache, namespace, &keys[i], &change).await;
                out.push((Bytes::copy_from_slice(&keys[i]), change));
            }
            return Ok(ExecutedMulti {
                reply,
                changes: out,
            });
        }
        Err(Refusal::Failed(
            "owners kept answering with newer copies".into(),
        ))
    }

    /// One execution under the key's lock: `Ok(Err(entry))` when an owner answered that it
    /// holds the newer `entry`.
    async fn execute_locked(
        self: &Arc<Self>,
        ring: &strata_cluster::Ring,
        cache: &strata_core::Cache,
        namespace: &str,
        key: &[u8],
        op: &PrimaryOp,
    ) -> Result<Result<Executed, Entry>, Refusal> {
        let now = self.now_ms();
        let current = self.current_copy(namespace, key).await?;
        let base = current.as_ref().map_or(0, |e| e.version.as_u64());
        if let Some(e) = &current {
            self.observe(e.version);
        }
        let (reply, change) = match op {
            PrimaryOp::Key(op) => {
                let (effect, reply) = ops::apply(op, current.as_ref(), now, cache.op_limits());
                let change = match effect {
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
                let mut e = from_wire(w.clone());
                if decide::put_needs_restamp(current.as_ref(), e.version.as_u64()) {
                    e.version = self.stamp();
                }
                (Reply::Ok, Change::Written(e))
            }
            PrimaryOp::Multi(_) => {
                return Err(Refusal::Failed(
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
        if let Some(newer) = self
            .replicate_out(ring, namespace, key, &change, base)
            .await?
        {
            return Ok(Err(newer));
        }
        self.commit_here(cache, namespace, key, &change).await;
        Ok(Ok(Executed { reply, change }))
    }

    /// Applies a replicated change here (the primary's owner store), drops this node's own
    /// older copies, and announces it.
    async fn commit_here(
        self: &Arc<Self>,
        cache: &strata_core::Cache,
        namespace: &str,
        key: &[u8],
        change: &Change,
    ) {
        let version = match change {
            Change::Written(e) => {
                if let Err(err) =
                    self.owner
                        .set_sync(namespace, Bytes::copy_from_slice(key), e.clone())
                {
                    tracing::warn!(node = %self.name, error = %err, "primary could not store its own write");
                }
                e.version
            }
            Change::Removed(v) => {
                if let Some(e) = self.owner.get_entry(namespace, key)
                    && e.version <= *v
                {
                    let _ = Tier::remove_version(&self.owner, namespace, key, e.version).await;
                }
                *v
            }
            Change::None => return,
        };
        // This node's own copies (L1, L3) of an older version go too: its own invalidations
        // never come back to it, and the caller may be another node.
        let _ = cache.drop_local(namespace, key, Some(version)).await;
        self.announce_key(namespace, key, version).await;
    }

    /// The copy a primary executes against: its own, else the newest the other owners (and
    /// the previous ones, after a ring change) answer with. An owner that cannot be asked
    /// makes it a refusal: starting from nothing could undo an acknowledged write.
    async fn current_copy(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, Refusal> {
        let now = self.now_ms();
        let local = self
            .owner
            .get_entry(namespace, key)
            .filter(|e| e.is_fresh(now));
        if local.is_some() {
            return Ok(local);
        }
        let (plan, _) = self.read_plan(namespace, key);
        let mut answers = Vec::new();
        for (name, addr) in plan.iter().filter(|(n, _)| *n != self.name) {
            let req = Request::Get {
                namespace: namespace.to_owned(),
                key: key.to_vec(),
            };
            match self.pool.call(name, *addr, req, None).await {
                Ok(Response::EntryAt { entry, .. } | Response::Entry(entry)) => answers.push(
                    entry
                        .map(from_wire)
                        .filter(|e| e.is_fresh(now))
                        .filter(|e| {
                            self.coherence.lock().admits_tagged(
                                namespace,
                                key,
                                e.version.as_u64(),
                                &super::tag_refs(e),
                            )
                        }),
                ),
                Ok(other) => {
                    return Err(Refusal::Failed(format!(
                        "owner {name} answered {other:?} to a read"
                    )));
                }
                Err(e) => {
                    return Err(Refusal::Failed(format!("owner {name} did not answer: {e}")));
                }
            }
        }
        Ok(decide::starting_point(None, answers))
    }

    /// Sends `change` to every other owner under `ring` and needs each one to apply it.
    async fn replicate_out(
        &self,
        ring: &strata_cluster::Ring,
        namespace: &str,
        key: &[u8],
        change: &Change,
        base: u64,
    ) -> Result<Option<Entry>, Refusal> {
        let rf = self.cfg.replication_factor as usize;
        let targets = decide::replicas(ring, &self.name, namespace, key, rf);
        if targets.is_empty() {
            return Ok(None);
        }
        let (entry, version) = match change {
            Change::Written(e) => (Some(to_wire(e)), e.version.as_u64()),
            Change::Removed(v) => (None, v.as_u64()),
            Change::None => return Ok(None),
        };
        let addrs = self.addresses(&targets);
        let calls = addrs.iter().map(|(name, addr)| {
            let req = Request::Replicate {
                namespace: namespace.to_owned(),
                key: key.to_vec(),
                entry: entry.clone(),
                version,
                base,
            };
            async move { (name, self.pool.call_typed(name, *addr, req, None).await) }
        });
        let mut failures = Vec::new();
        let mut newer: Option<Entry> = None;
        if addrs.len() < targets.len() {
            failures.push("an owner is not a live member".to_owned());
        }
        for (name, r) in futures_util::future::join_all(calls).await {
            match r {
                Ok(Response::Replicated) => {}
                Ok(Response::Stale { entry }) => {
                    let e = from_wire(entry);
                    if newer.as_ref().is_none_or(|n| n.version < e.version) {
                        newer = Some(e);
                    }
                }
                // The owner's process is gone (its port refuses connections): it will leave
                // the ring, and it cannot hold a copy that disagrees. A paused or cut-off
                // owner is not this: it times out, and the write is refused.
                Err(CallError::Refused(_)) => {
                    self.counters.replica_down.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Response::Fenced { primary }) => {
                    self.counters.fenced.fetch_add(1, Ordering::Relaxed);
                    failures.push(format!(
                        "owner {name} has {} as the key's primary",
                        primary.as_deref().unwrap_or("no node")
                    ));
                }
                Ok(other) => failures.push(format!("owner {name} answered {other:?}")),
                Err(CallError::NotSent(e) | CallError::Unknown(e)) => {
                    failures.push(format!("owner {name} did not answer: {e}"));
                }
            }
        }
        if !failures.is_empty() {
            Err(Refusal::Failed(failures.join("; ")))
        } else {
            Ok(newer)
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

    /// An owner's side of `Replicate`: applies a change from `from` when `from` is the
    /// key's primary in this node's view, else fences it off.
    pub(crate) fn replicate_in(
        &self,
        from: &str,
        namespace: &str,
        key: &[u8],
        entry: Option<WireEntry>,
        version: u64,
        base: u64,
    ) -> Response {
        let ring = self.ring();
        if let Err(primary) = decide::admits_replication(&ring, namespace, key, from) {
            self.counters.fenced.fetch_add(1, Ordering::Relaxed);
            return Response::Fenced { primary };
        }
        let held = self
            .owner
            .get_entry(namespace, key)
            .filter(|e| e.is_fresh(self.now_ms()));
        if decide::replica_is_ahead(held.as_ref(), base)
            && let Some(e) = held
        {
            return Response::Stale { entry: to_wire(&e) };
        }
        match entry {
            Some(w) => {
                let e = from_wire(w);
                self.observe(e.version);
                match self
                    .owner
                    .set_sync(namespace, Bytes::copy_from_slice(key), e)
                {
                    Ok(_) => Response::Replicated,
                    Err(err) => Response::Error(err.to_string()),
                }
            }
            None => {
                let v = Version::from_u64(version);
                self.observe(v);
                if let Some(e) = self.owner.get_entry(namespace, key)
                    && e.version <= v
                {
                    self.owner.remove_sync(namespace, key);
                }
                Response::Replicated
            }
        }
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
            }
            let Some((name, addr)) = self.owners(namespace, key).into_iter().next() else {
                return Err("TRYAGAIN the cluster has no member to own the key".into());
            };
            if name == self.name {
                let this = match op.take() {
                    Some(o) => o,
                    None => PrimaryOp::decode(&encoded).ok_or("undecodable operation")?,
                };
                let done = match this {
                    PrimaryOp::Multi(m) => self
                        .execute_multi_as_primary(namespace, &m)
                        .await
                        .map(Outcome::Many),
                    single => self
                        .execute_as_primary(namespace, key, single)
                        .await
                        .map(Outcome::One),
                };
                match done {
                    Ok(out) => return Ok(out),
                    Err(Refusal::NotPrimary(p)) => {
                        last = format!("the view moved (primary now {p:?})");
                        continue;
                    }
                    Err(Refusal::Failed(why)) if why.starts_with("CROSSSLOT") => return Err(why),
                    Err(Refusal::Failed(why)) => {
                        return Err(format!("TRYAGAIN the write was not acknowledged: {why}"));
                    }
                }
            }
            self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            let req = Request::Execute {
                namespace: namespace.to_owned(),
                key: key.to_vec(),
                op: encoded.clone(),
            };
            match self.pool.call_typed(&name, addr, req, None).await {
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
                    return Err(if e.starts_with("TRYAGAIN") || e.starts_with("CROSSSLOT") {
                        e
                    } else {
                        format!(
                            "TRYAGAIN the key's primary {name} did not answer (the write may or may not have happened): {e}"
                        )
                    });
                }
            }
        }
        Err(format!(
            "TRYAGAIN no primary for the key could take the write within {} ms (ring {:?}): {last}",
            self.cfg.failover_wait_ms,
            self.ring().nodes()
        ))
    }

    /// The primary's side of `Execute`, as a response.
    pub(crate) async fn serve_execute(
        self: &Arc<Self>,
        namespace: &str,
        key: &[u8],
        op: &[u8],
    ) -> Response {
        let Some(op) = PrimaryOp::decode(op) else {
            return Response::Error("undecodable operation".into());
        };
        let done = match op {
            PrimaryOp::Multi(m) => self
                .execute_multi_as_primary(namespace, &m)
                .await
                .map(Outcome::Many),
            single => self
                .execute_as_primary(namespace, key, single)
                .await
                .map(Outcome::One),
        };
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
            Err(Refusal::Failed(why)) if why.starts_with("CROSSSLOT") => Response::Error(why),
            Err(Refusal::Failed(why)) => {
                Response::Error(format!("TRYAGAIN the write was not acknowledged: {why}"))
            }
        }
    }
}

/// How many times a primary executes one write against newer copies owners answer with.
const STALE_RETRIES: usize = 4;

/// A `DEL` as the primary executes it.
pub(crate) fn del() -> PrimaryOp {
    PrimaryOp::Key(KeyOp::Del)
}
