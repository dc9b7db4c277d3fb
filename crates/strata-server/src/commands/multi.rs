//! Transactions: `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`, as Redis has them.
//!
//! Between `MULTI` and `EXEC` a command is checked (known, arity, permissions) and queued:
//! `+QUEUED`, or an error that makes `EXEC` answer `EXECABORT`. At `EXEC` each queued
//! command is parsed as it would run and becomes steps of one
//! [`ops::Transaction`] — pure operations on its keys — which runs at the keys' authority
//! ([`strata_core::Cache::execute_multi`]: this node under every key's lock, a cluster's
//! primary of the keys' hash tag, which replicates the changes before it answers). The
//! watched keys' versions travel with it and are compared there, under the same locks, so a
//! write of a watched key on any node aborts `EXEC` with a null reply.
//!
//! Commands that name no key (`PING`, `ECHO`, `TIME`, `INFO`, `DBSIZE`, `KEYS`, `SCAN`, …)
//! are answered at `EXEC` in their place but outside the atomic step; `SELECT`, `FLUSHDB`,
//! `FLUSHALL` and the `STRATA.*` writes are refused while queueing (docs/protocol.md).

use std::collections::HashMap;

use bytes::Bytes;
use strata_core::Entry;
use strata_core::ops::{self, MultiOp, Transaction, TxStep};
use strata_resp::Reply;

use super::keyops::{self, Op, Shape};
use super::{Cmd, CommandSpec, ReplyError, Res, Session, cache_err, entry, lookup, one_slot, run};
use crate::state::Shared;

/// Most keys one client may watch at once.
pub const MAX_WATCHED: usize = 10_000;

/// Most bytes one client's watched keys may hold (each keeps the value read when it was
/// watched): a `WATCH` of 40 keys of 16 MiB that only L3 held took a node from 71 to 710
/// MiB, outside every bound until the command ended (review helper-120).
pub const MAX_WATCHED_BYTES: usize = 64 * 1024 * 1024;

/// A connection's transaction state.
#[derive(Debug, Default)]
pub struct TxState {
    /// Commands queued since `MULTI` (`None`: not in a transaction).
    queue: Option<Queue>,
    /// Keys watched since the last `EXEC`, `DISCARD` or `UNWATCH`.
    watched: Vec<Watched>,
    /// The same keys, to find one in O(1) (a client may watch 10,000).
    watched_keys: std::collections::HashSet<(String, Bytes)>,
    /// [`TxState::watched_bytes`], kept as keys are watched and forgotten: recounted only
    /// when their number changed, an `UNWATCH` and a `WATCH` of as many larger keys in one
    /// read kept the smaller figure.
    watched_held: usize,
}

/// What watching `w` holds: its key and namespace here and in the lookup set, bookkeeping,
/// and the value read when it was watched (an estimate).
fn watch_charge(w: &Watched) -> usize {
    2 * (w.key.len() + w.ns.len()) + 128 + w.seen.as_ref().map_or(0, |e| e.value.len())
}

#[derive(Debug, Default)]
struct Queue {
    cmds: Vec<Vec<Bytes>>,
    bytes: usize,
    dirty: bool,
}

#[derive(Debug)]
struct Watched {
    ns: String,
    key: Bytes,
    version: Option<u64>,
    /// What the `WATCH` read: a read of the key by this client before `EXEC` answers no
    /// older value ([`TxState::no_older_than_watched`]).
    seen: Option<Entry>,
    /// When it was watched ([`strata_core::Cache::change_mark`]): a key absent then and
    /// at `EXEC` was still changed meanwhile when a write or removal of it ran since.
    mark: u64,
}

impl Watched {
    /// Whether a key watched absent, absent again now, may have been written (and
    /// removed) since: Redis aborts such a transaction. Its stamp slot is shared with 1 in
    /// 16,384 of the other keys, and a `DEL` that found nothing stamps it too, so this
    /// can abort where Redis would not (docs/protocol.md), never the other way.
    ///
    /// Only without an L2 (one node): on a cluster or behind the bridge the stamps here
    /// also move when an invalidation of a change made *before* the `WATCH` arrives late,
    /// which aborted one `EXEC` in about 300 of the differential test's, where Redis runs
    /// it; there an absent key compared absent stays unchanged (docs/protocol.md) — a
    /// serializable outcome (the write and the removal ordered before the transaction),
    /// not Redis's stricter "touched".
    fn absent_but_touched(&self, sh: &Shared) -> bool {
        self.version.is_none()
            && sh.cache.tier(strata_core::Layer::L2).is_none()
            && sh.cache.changed_since(&self.ns, &self.key, self.mark)
    }
}

/// The steps the queued commands make, on keys numbered in order of first use.
#[derive(Debug, Default)]
struct Capture {
    keys: Vec<Bytes>,
    index: HashMap<Bytes, u32>,
    steps: Vec<TxStep>,
}

impl Capture {
    /// Adds a parsed command's operations as steps.
    fn add(&mut self, ops: Vec<Op<'_>>) {
        for op in ops {
            let step = match op {
                Op::Key(k, op) => TxStep::Key {
                    key: self.key(k),
                    op,
                },
                Op::MsetNx(pairs) => TxStep::MsetNx(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (self.key(k), v.to_vec().into()))
                        .collect(),
                ),
                Op::Rename(src, dst, nx) => TxStep::Rename {
                    src: self.key(src),
                    dst: self.key(dst),
                    nx,
                },
                Op::Copy(src, dst, replace) => TxStep::Copy {
                    src: self.key(src),
                    dst: self.key(dst),
                    replace,
                },
                Op::Bits(op, dst, srcs) => TxStep::BitOp {
                    op,
                    dst: self.key(dst),
                    srcs: srcs.into_iter().map(|k| self.key(k)).collect(),
                },
                Op::Lcs(a, b, mode) => TxStep::Lcs {
                    a: self.key(a),
                    b: self.key(b),
                    mode,
                },
            };
            self.steps.push(step);
        }
    }

    fn key(&mut self, key: &[u8]) -> u32 {
        if let Some(i) = self.index.get(key) {
            return *i;
        }
        let i = self.keys.len() as u32;
        let k = Bytes::copy_from_slice(key);
        self.keys.push(k.clone());
        self.index.insert(k, i);
        i
    }
}

impl TxState {
    /// Whether commands are being queued.
    pub fn in_multi(&self) -> bool {
        self.queue.is_some()
    }

    /// A command refused while queueing: `EXEC` will answer `EXECABORT`.
    pub fn flag_error(&mut self) {
        if let Some(q) = &mut self.queue {
            q.dirty = true;
        }
    }

    /// The commands queued so far.
    pub fn queued(&self) -> impl Iterator<Item = &Vec<Bytes>> {
        self.queue.iter().flat_map(|q| q.cmds.iter())
    }

    /// How many keys are watched.
    pub fn watched_len(&self) -> usize {
        self.watched.len()
    }

    /// Bytes the queued commands hold (O(1)).
    pub fn queued_bytes(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.bytes)
    }

    /// Bytes the watched keys hold, with their bookkeeping and the values read when they
    /// were watched (an estimate; O(1)).
    pub fn watched_bytes(&self) -> usize {
        self.watched_held
    }

    /// Forgets every watched key; returns them.
    fn take_watches(&mut self) -> Vec<Watched> {
        self.watched_keys.clear();
        self.watched_held = 0;
        std::mem::take(&mut self.watched)
    }

    /// Whether the client watches a key (its reads then take [`TxState::no_older_than_watched`]).
    pub fn watching(&self) -> bool {
        !self.watched.is_empty()
    }

    /// `read`, or what the `WATCH` of `key` read when that is newer: between its `WATCH` and
    /// its `EXEC` a client never reads a value older than the one whose version `EXEC`
    /// compares. On a cluster a node's copy can briefly go back to an older value (a copy
    /// promoted by a read that raced the newer write, until it is undone); a check-and-set
    /// loop that watched the newer version and then read the older value computed from it
    /// and `EXEC` ran, losing an update (a review: 1–5 of 600 increments, four clients on
    /// two nodes). A newer version than the watched one makes `EXEC` abort anyway.
    pub fn no_older_than_watched(
        &self,
        ns: &str,
        key: &[u8],
        read: Option<Entry>,
        now_ms: u64,
    ) -> Option<Entry> {
        let Some(seen) = self
            .watched
            .iter()
            .find(|w| w.ns == ns && w.key == key)
            .and_then(|w| w.seen.as_ref())
            .filter(|e| e.is_fresh(now_ms))
        else {
            return read;
        };
        match read {
            Some(r) if r.version >= seen.version => Some(r),
            _ => Some(seen.clone()),
        }
    }

    /// Forgets the transaction and the watched keys (`RESET`, a new `AUTH` user).
    pub fn reset(&mut self) {
        *self = TxState::default();
    }
}

/// Whether `id` runs at once even between `MULTI` and `EXEC`.
pub(super) fn runs_at_once(id: Cmd) -> bool {
    matches!(
        id,
        Cmd::Exec | Cmd::Discard | Cmd::Multi | Cmd::Watch | Cmd::Quit | Cmd::Reset
    )
}

/// Queues a command between `MULTI` and `EXEC`.
pub(super) fn queue(sh: &Shared, s: &mut Session<'_>, spec: &CommandSpec, args: &[Bytes]) {
    let refused = matches!(
        spec.id,
        Cmd::Select
            | Cmd::Move
            | Cmd::Flushdb
            | Cmd::Flushall
            | Cmd::Hello
            | Cmd::Auth
            | Cmd::StrataSet
            | Cmd::StrataInvalidatePattern
            | Cmd::StrataInvalidateTag
    );
    let Some(q) = &mut s.tx.queue else {
        return;
    };
    if refused {
        q.dirty = true;
        s.reply.error(
            &ReplyError::err(format!(
                "'{}' is not supported inside MULTI on Strata",
                spec.name.to_ascii_lowercase()
            ))
            .to_string(),
        );
        return;
    }
    let size = queued_size(args);
    let limit = usize::try_from(sh.config.server.max_request_bytes).unwrap_or(usize::MAX);
    if q.bytes.saturating_add(size) > limit {
        q.dirty = true;
        s.reply.error(
            &ReplyError::err(format!(
                "the queued commands would exceed server.max_request_bytes ({limit} bytes)"
            ))
            .to_string(),
        );
        return;
    }
    q.bytes += size;
    // Copies: a queued argument must not keep the connection's read buffer alive.
    q.cmds
        .push(args.iter().map(|a| Bytes::copy_from_slice(a)).collect());
    s.reply.simple("QUEUED");
}

/// What a queued command holds: its slot in the queue (a `Vec`, with room to grow) and,
/// per argument, its `Bytes` and its own copy's allocation. Counted as the arguments'
/// lengths plus 16 each, a queue of `PING`s held about 5 times what was counted.
fn queued_size(args: &[Bytes]) -> usize {
    const COMMAND: usize = 48;
    const ARGUMENT: usize = 32;
    COMMAND
        + args
            .iter()
            .map(|a| ARGUMENT + a.len().next_multiple_of(16).max(16))
            .sum::<usize>()
}

/// `MULTI`.
pub(super) fn multi(s: &mut Session<'_>) -> Res<()> {
    if s.tx.queue.is_some() {
        return Err(ReplyError::err("MULTI calls can not be nested"));
    }
    s.tx.queue = Some(Queue::default());
    s.reply.ok();
    Ok(())
}

/// `DISCARD`.
pub(super) fn discard(s: &mut Session<'_>) -> Res<()> {
    if s.tx.queue.is_none() {
        return Err(ReplyError::err("DISCARD without MULTI"));
    }
    abort(s);
    s.reply.ok();
    Ok(())
}

/// Ends the transaction, if any, and every watch, replying nothing.
pub(super) fn abort(s: &mut Session<'_>) {
    s.tx.queue = None;
    s.tx.take_watches();
}

/// `WATCH key...`: remembers each key's version (or absence) as this node reads it now.
pub(super) async fn watch(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    if s.tx.queue.is_some() {
        return Err(ReplyError::err("WATCH inside MULTI is not allowed"));
    }
    // A refused `WATCH` watches none of its keys: a client that went on to `EXEC` would
    // otherwise run unguarded on the keys it did not get to.
    let before = s.tx.watched.len();
    let refused = |s: &mut Session<'_>, why: ReplyError| {
        for w in s.tx.watched.drain(before..).collect::<Vec<_>>() {
            s.tx.watched_held = s.tx.watched_held.saturating_sub(watch_charge(&w));
            s.tx.watched_keys.remove(&(w.ns, w.key));
        }
        Err(why)
    };
    for (i, k) in a[1..].iter().enumerate() {
        super::pace(i).await;
        if s.tx
            .watched_keys
            .contains(&(s.ns.clone(), Bytes::copy_from_slice(k)))
        {
            continue;
        }
        if s.tx.watched.len() >= MAX_WATCHED {
            let why = ReplyError::err(format!(
                "a client watches at most {MAX_WATCHED} keys at once"
            ));
            return refused(s, why);
        }
        // Marked before the read: a change between the two makes `EXEC` abort, which is
        // safe; one missed would not be.
        let mark = sh.cache.change_mark();
        let seen = match entry(sh, &s.ns, k).await {
            Ok(seen) => seen,
            Err(why) => return refused(s, why),
        };
        let version = seen.as_ref().map(|e| e.version.as_u64());
        let key = Bytes::copy_from_slice(k);
        let w = Watched {
            ns: s.ns.clone(),
            key,
            version,
            seen,
            mark,
        };
        s.tx.watched_held += watch_charge(&w);
        s.tx.watched_keys.insert((w.ns.clone(), w.key.clone()));
        s.tx.watched.push(w);
        if s.tx.watched_held > MAX_WATCHED_BYTES {
            let why = ReplyError::coded(
                "OOM",
                format!(
                    "a client's watched keys hold at most {MAX_WATCHED_BYTES} bytes of values; none of this WATCH's keys is watched"
                ),
            );
            return refused(s, why);
        }
    }
    s.reply.ok();
    Ok(())
}

/// `UNWATCH`.
pub(super) fn unwatch(s: &mut Session<'_>) {
    s.tx.take_watches();
    s.reply.ok();
}

/// What a queued command answers: its steps' replies, or a reply written while parsing.
enum Planned {
    Steps {
        start: usize,
        end: usize,
        shape: Shape,
    },
    Literal(Vec<u8>),
}

/// Runs a parsed multi-key command (`COPY`) as a transaction of its own: at the keys'
/// authority, under every key's lock; its reply.
pub(super) async fn run_alone(sh: &Shared, s: &mut Session<'_>, ops: Vec<Op<'_>>) -> Res<()> {
    let mut cap = Capture::default();
    cap.add(ops);
    one_slot(sh, cap.keys.iter())?;
    // Queueing for the locks counts against an expiry's tenth (`exec_reply`).
    let accepted = sh.cache.now_ms();
    let _guards = sh.lock_keys(&s.ns, cap.keys.iter().map(|k| &k[..])).await;
    let op = MultiOp::Transaction(Transaction {
        keys: cap.keys.iter().map(|k| k.to_vec().into()).collect(),
        watch: Vec::new(),
        steps: cap.steps,
        default_ttl_ms: None,
    });
    let reply = strata_core::time::accepted_at(accepted, sh.cache.execute_multi(&s.ns, &op))
        .await
        .map_err(|e| cache_err(&e))?;
    match reply {
        ops::Reply::Exec(Some(mut r)) if r.len() == 1 => super::write_reply(s, r.remove(0)),
        ops::Reply::Error(msg) => Err(ReplyError::from(msg)),
        other => Err(ReplyError::err(format!("unexpected reply {other:?}"))),
    }
}

/// `EXEC`.
pub(super) async fn exec(sh: &Shared, s: &mut Session<'_>) -> Res<()> {
    let Some(queue) = s.tx.queue.take() else {
        return Err(ReplyError::err("EXEC without MULTI"));
    };
    let watched = s.tx.take_watches();
    if queue.dirty {
        return Err(ReplyError::coded(
            "EXECABORT",
            "Transaction discarded because of previous errors.",
        ));
    }
    // A watched key of another namespace (WATCH before a SELECT) is compared here, before
    // the atomic step. Not on a cluster: this node's copy may be behind a change another
    // node acknowledged (up to the coherence bound), and the comparison is not made at
    // the key's primary under its lock — a review committed 30 of 200 such transactions
    // over a change made through another node. Refused there (docs/protocol.md).
    if sh.config.cluster.enabled && watched.iter().any(|w| w.ns != s.ns) {
        return Err(ReplyError::coded(
            "EXECABORT",
            "Transaction discarded because of: a WATCHed key of another database than the transaction's cannot be checked on a cluster",
        ));
    }
    for w in watched.iter().filter(|w| w.ns != s.ns) {
        let now = entry(sh, &w.ns, &w.key).await?.map(|e| e.version.as_u64());
        if now != w.version || w.absent_but_touched(sh) {
            s.reply.null_array();
            return Ok(());
        }
    }

    // Key commands become steps; the others run now, each into a reply buffer of its own.
    let limit =
        usize::try_from(sh.config.server.client_output_buffer_limit_bytes).unwrap_or(usize::MAX);
    let mut scratch = Reply::new(s.reply.proto);
    scratch.set_limit(limit);
    let mut saved = std::mem::replace(&mut s.reply, scratch);
    let mut cap = Capture::default();
    let mut planned = Vec::with_capacity(queue.cmds.len());
    let now = sh.cache.now_ms();
    for args in &queue.cmds {
        let Some((_, spec)) = lookup(&args[0]) else {
            continue;
        };
        if matches!(
            spec.id,
            Cmd::Eval | Cmd::EvalRo | Cmd::Evalsha | Cmd::EvalshaRo
        ) {
            // A script runs as one step of the transaction, on keys it shares.
            let by_sha = matches!(spec.id, Cmd::Evalsha | Cmd::EvalshaRo);
            let read_only = matches!(spec.id, Cmd::EvalRo | Cmd::EvalshaRo);
            match super::scripting::build(sh, s, args, by_sha, read_only) {
                Ok(script) => {
                    for k in &script.keys {
                        cap.key(k);
                    }
                    let start = cap.steps.len();
                    cap.steps.push(TxStep::Script(script));
                    planned.push(Planned::Steps {
                        start,
                        end: start + 1,
                        shape: Shape::Single,
                    });
                    continue;
                }
                Err(msg) => s.reply.error(&msg.to_string()),
            }
        } else {
            match keyops::parse(spec.id, args, now) {
                Some(Ok(parsed)) => {
                    let start = cap.steps.len();
                    cap.add(parsed.ops);
                    planned.push(Planned::Steps {
                        start,
                        end: cap.steps.len(),
                        shape: parsed.shape,
                    });
                    continue;
                }
                Some(Err(msg)) => s.reply.error(&msg.to_string()),
                None => {
                    if let Err(msg) = Box::pin(run(sh, s, spec.id, args)).await {
                        s.reply.buf.clear();
                        s.reply.error(&msg.to_string());
                    }
                }
            }
        }
        if s.reply.overflowed() {
            s.reply.clear_overflow();
            planned.push(Planned::Literal(
                b"-ERR reply over server.client_output_buffer_limit_bytes\r\n".to_vec(),
            ));
        } else {
            planned.push(Planned::Literal(s.reply.buf.to_vec()));
        }
        s.reply.buf.clear();
    }
    std::mem::swap(&mut s.reply, &mut saved);

    let mut replies = Vec::new();
    let here: Vec<&Watched> = watched.iter().filter(|w| w.ns == s.ns).collect();
    if !cap.steps.is_empty() || !here.is_empty() {
        let watch: Vec<(u32, Option<u64>)> =
            here.iter().map(|w| (cap.key(&w.key), w.version)).collect();
        one_slot(sh, cap.keys.iter())?;
        let default_ttl_ms = sh
            .cache
            .policy(&s.ns)
            .default_ttl
            .map(|d| d.as_millis() as u64);
        // Queueing for the locks counts against an expiry's tenth (`exec_reply`).
        let accepted = sh.cache.now_ms();
        let guards = sh.lock_keys(&s.ns, cap.keys.iter().map(|k| &k[..])).await;
        // A key watched absent and absent again compares equal below; whether it was
        // written meanwhile is known here, from this node's stamps (every change made
        // here, and every invalidation received — on a cluster, one made elsewhere is seen
        // once its invalidation arrived: docs/protocol.md). Checked under the keys' locks.
        if here.iter().any(|w| w.absent_but_touched(sh)) {
            drop(guards);
            s.reply.null_array();
            return Ok(());
        }
        let op = MultiOp::Transaction(Transaction {
            keys: cap.keys.iter().map(|k| k.to_vec().into()).collect(),
            watch,
            steps: cap.steps,
            default_ttl_ms,
        });
        let reply = strata_core::time::accepted_at(accepted, sh.cache.execute_multi(&s.ns, &op))
            .await
            .map_err(|e| cache_err(&e))?;
        drop(guards);
        match reply {
            ops::Reply::Exec(Some(r)) => replies = r,
            ops::Reply::Exec(None) => {
                s.reply.null_array();
                return Ok(());
            }
            ops::Reply::Error(msg) => return Err(ReplyError::from(msg)),
            other => {
                return Err(ReplyError::err(format!(
                    "unexpected transaction reply {other:?}"
                )));
            }
        }
    }

    s.reply.array(planned.len());
    for p in planned {
        match p {
            Planned::Literal(bytes) => s.reply.buf.extend_from_slice(&bytes),
            Planned::Steps { start, end, shape } => {
                let Some(rs) = replies.get(start..end) else {
                    s.reply.error("ERR transaction reply missing");
                    continue;
                };
                compose(s, rs, shape);
            }
        }
    }
    Ok(())
}

/// Writes one command's reply from its steps' replies.
fn compose(s: &mut Session<'_>, rs: &[ops::Reply], shape: Shape) {
    match shape {
        Shape::Single => {
            for r in rs {
                super::write_value(s, r);
            }
        }
        Shape::Array => {
            s.reply.array(rs.len());
            for r in rs {
                super::write_value(s, r);
            }
        }
        Shape::Sum => {
            let n: i64 = rs
                .iter()
                .map(|r| if let ops::Reply::Int(n) = r { *n } else { 0 })
                .sum();
            s.reply.integer(n);
        }
        Shape::Ok => s.reply.ok(),
    }
}
