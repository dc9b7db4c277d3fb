//! Pub/sub: `SUBSCRIBE`, `PSUBSCRIBE`, `PUBLISH` and `PUBSUB` as Redis has them, on one node.
//!
//! A subscribed connection gets a queue of its own; `PUBLISH` puts the message on the queue
//! of every client subscribed to the channel or to a pattern that matches it, and the
//! connection writes it out between requests. The queue is bounded in bytes by
//! `server.pubsub_output_buffer_limit_bytes`, as Redis's `client-output-buffer-limit pubsub`
//! hard limit: a subscriber that falls that far behind is disconnected (counted and logged)
//! and never holds up the publisher or other subscribers.
//!
//! What a client can make the hub hold is bounded: names are copies (never slices of a
//! connection's read buffer) of at most `limits.max_key_bytes`, a client holds at most
//! [`MAX_SUBSCRIPTIONS_PER_CLIENT`] subscriptions, and every subscription counts in the
//! clients' memory budget ([`crate::budget`]). The node sets no bound of its own on distinct
//! patterns, as Redis sets none: a node-wide bound (10,000 until 2026-12-06) let one client
//! take every slot and have every other client's new pattern refused. Each `PUBLISH` matches
//! its channel against every pattern, as in Redis, outside the table's lock.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;
use strata_core::glob::Glob;
use tokio::sync::mpsc;

use crate::budget::ClientMemory;

/// Most channels and patterns one client may be subscribed to.
pub const MAX_SUBSCRIPTIONS_PER_CLIENT: usize = 10_000;

/// One message for one subscriber.
#[derive(Debug, Clone)]
pub struct Message {
    /// The pattern it matched (`pmessage`), or `None` for a channel subscription.
    pub pattern: Option<Bytes>,
    /// The channel it was published to.
    pub channel: Bytes,
    /// What was published.
    pub payload: Bytes,
    /// Published to a shard channel (`SPUBLISH`): written as `smessage`.
    pub sharded: bool,
    /// The payload's charge against the clients' budget, shared by every queue holding it.
    pub charge: Option<Arc<PayloadCharge>>,
}

/// A published payload's part of the clients' budget: counted once however many queues hold
/// it (they share one copy), and given back when the last one lets it go. Counted once per
/// subscriber, one `PUBLISH` of 1 MiB to 600 subscribers that all read came to 600 MiB,
/// past the 512 MiB budget, and closed 91 of them (review, 2026-12-05).
#[derive(Debug)]
pub struct PayloadCharge {
    memory: Arc<ClientMemory>,
    bytes: usize,
}

impl Drop for PayloadCharge {
    fn drop(&mut self) {
        self.memory.sub(self.bytes);
    }
}

/// One publish's [`PayloadCharge`]: made when the payload reaches its first queue, shared
/// by every queue after it.
#[derive(Default)]
struct ChargeOnce(Option<Arc<PayloadCharge>>);

impl ChargeOnce {
    fn get(&mut self, o: &Outlet, len: usize) -> Arc<PayloadCharge> {
        self.0
            .get_or_insert_with(|| {
                o.memory.add(len);
                Arc::new(PayloadCharge {
                    memory: o.memory.clone(),
                    bytes: len,
                })
            })
            .clone()
    }

    /// Queues a `PUBLISH`ed message for outlet `o` (`pattern`: the subscription it matched,
    /// if a pattern); whether it was queued.
    fn deliver(
        &mut self,
        o: &Outlet,
        pattern: Option<&Bytes>,
        channel: &Bytes,
        payload: &Bytes,
    ) -> bool {
        let m = Message {
            pattern: pattern.cloned(),
            channel: channel.clone(),
            payload: payload.clone(),
            sharded: false,
            charge: Some(self.get(o, payload.len())),
        };
        o.send(Push::Message(m))
    }
}

/// What a connection's queue carries: published messages and client-tracking pushes
/// (`crate::tracking`). The connection writes each in the shape its protocol and state call
/// for (`commands::pubsub::write_push`).
#[derive(Debug, Clone)]
pub enum Push {
    /// A published message.
    Message(Message),
    /// A key a tracking client may have cached changed; `None`: every key (a flush).
    Invalidate {
        /// The key, or `None` for all of them.
        key: Option<Bytes>,
        /// Whether a flush's null is RESP3's `_` (the tracking client speaks RESP3) rather
        /// than RESP2's `$-1`, as Redis writes it when it redirects.
        resp3_null: bool,
        /// Whether it was redirected here by another client (only then does a subscribed
        /// RESP2 connection get it, as a message on `__redis__:invalidate`).
        redirected: bool,
    },
    /// The client this one redirects its invalidations to is gone (its id).
    RedirectBroken(u64),
}

impl Push {
    /// Bytes of it the clients' budget counts per queue: all but a message's payload
    /// (counted once, [`PayloadCharge`]).
    fn own_size(&self) -> usize {
        match self {
            Push::Message(m) if m.charge.is_some() => self.size() - m.payload.len(),
            _ => self.size(),
        }
    }

    /// The bytes it holds while queued (what the client's own limit counts).
    fn size(&self) -> usize {
        match self {
            Push::Message(m) => {
                m.pattern.as_ref().map_or(0, Bytes::len)
                    + m.channel.len()
                    + m.payload.len()
                    + QUEUED_OVERHEAD
            }
            Push::Invalidate { key, .. } => key.as_ref().map_or(0, Bytes::len) + QUEUED_OVERHEAD,
            Push::RedirectBroken(_) => QUEUED_OVERHEAD,
        }
    }
}

/// What one queued push holds beyond its names and payload: its slot in the queue (the
/// `Push` itself, over 100 bytes) and its allocations. Measured: charged 64 bytes, 10
/// subscribers that never read took a node 138 MiB past its start under a 64 MiB clients'
/// budget (`small_messages_for_slow_subscribers_are_charged_what_they_hold`; review
/// helper-119 saw 1 GiB past a 512 MiB budget with 40).
const QUEUED_OVERHEAD: usize = 160;

/// The sending end of one client's queue.
#[derive(Clone)]
struct Outlet {
    tx: mpsc::UnboundedSender<Push>,
    queued: Arc<AtomicUsize>,
    over: Arc<AtomicBool>,
    /// Woken when `over` is set: the connection may be blocked writing to a client that does
    /// not read, and must close it.
    over_signal: Arc<tokio::sync::Notify>,
    limit: usize,
    /// All clients' memory: what waits in the queue counts there too.
    memory: Arc<ClientMemory>,
}

impl Outlet {
    /// Queues `m` unless the client is over its limit, or holds more than
    /// [`crate::budget::LISTED_ABOVE`] while all clients are over their budget (then it is
    /// marked to be closed). Returns whether it was queued.
    fn send(&self, m: Push) -> bool {
        if self.over.load(Ordering::Acquire) {
            return false;
        }
        let (size, own) = (m.size(), m.own_size());
        let queued = self.queued.fetch_add(size, Ordering::AcqRel) + size;
        let total = self.memory.add(own);
        if queued > self.limit
            || (total > self.memory.limit() && queued > crate::budget::LISTED_ABOVE)
        {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            self.memory.sub(own);
            self.over.store(true, Ordering::Release);
            self.over_signal.notify_one();
            return false;
        }
        if self.tx.send(m).is_err() {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            self.memory.sub(own);
            return false;
        }
        true
    }
}

/// Bookkeeping bytes of one subscription beyond its name (tree nodes here, the hub's
/// per-channel map and its queue handle), measured for the clients' memory budget: 580,000
/// subscriptions of 10-byte names grew a node by 290 MB (review, 2026-12-05; counted at 96
/// then, a 64 MiB budget admitted 4.5 times its size).
const SUBSCRIPTION_OVERHEAD: usize = 480;

/// The same for a pattern, beyond its compiled form
/// ([`strata_core::glob::HEAP_BYTES_PER_PATTERN_BYTE`] per byte): its entry in the pattern
/// table (its subscribers' map, the table's chunk and snapshot) besides the subscription's
/// own. 1,000,000 patterns of 10 bytes grew a node by 1,048 MiB, about 1,100 bytes each with
/// 320 of them the compiled pattern (review, 2026-12-06; charged 500 then).
const PATTERN_OVERHEAD: usize = 1024;

/// Takes up to `*left` names out of `set` (all of them when it has no more), counting them
/// off `*left`.
fn take_some(set: &mut BTreeSet<Bytes>, left: &mut usize) -> Vec<Bytes> {
    if set.len() <= *left {
        *left -= set.len();
        return std::mem::take(set).into_iter().collect();
    }
    let names: Vec<Bytes> = set.iter().take(*left).cloned().collect();
    for n in &names {
        set.remove(n);
    }
    *left = 0;
    names
}

/// What a subscription to a channel (or shard channel) named with `len` bytes is charged.
fn channel_charge(len: usize) -> usize {
    2 * len + SUBSCRIPTION_OVERHEAD
}

/// Channels past which `PUBSUB CHANNELS` lists them off the worker thread.
const LIST_OFF_WORKER: usize = 4096;

/// What a subscription to a pattern of `len` bytes is charged.
fn pattern_charge(len: usize) -> usize {
    2 * len + PATTERN_OVERHEAD + strata_core::glob::HEAP_BYTES_PER_PATTERN_BYTE * len
}

/// A subscribed connection's side: its queue and what it is subscribed to.
pub struct Subscription {
    hub: Arc<PubSub>,
    id: u64,
    outlet: Outlet,
    rx: mpsc::UnboundedReceiver<Push>,
    /// Channels (sorted; Redis lists them in no particular order).
    pub channels: BTreeSet<Bytes>,
    /// Patterns.
    pub patterns: BTreeSet<Bytes>,
    /// Shard channels (`SSUBSCRIBE`).
    pub shard_channels: BTreeSet<Bytes>,
    /// What the subscriptions are charged, kept as they come and go: recounted only when
    /// their number changed, an `UNSUBSCRIBE` of small names and a `SUBSCRIBE` of as many
    /// large ones in one transaction kept the small figure (40 clients held 3,481 MiB
    /// charged 199 MB, review 2026-12-06).
    held: usize,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("channels", &self.channels.len())
            .field("patterns", &self.patterns.len())
            .field("shard_channels", &self.shard_channels.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.clone().close(self);
        self.detach();
    }
}

impl Subscription {
    /// Takes the client out of delivery at once, its names left in the table (for
    /// [`PubSub::close`], which may run elsewhere): pushes to its id find no outlet (a
    /// tracking redirect to it is broken), what is queued leaves the clients' memory with
    /// it, and sends from now on fail (and give their share back themselves).
    pub fn detach(&mut self) {
        self.hub.outlets.write().remove(&self.id);
        self.rx.close();
        while self.try_recv().is_some() {}
    }

    /// How many channels and patterns the client is subscribed to (Redis's count in every
    /// (un)subscribe reply).
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// How many shard channels the client is subscribed to (the count in every
    /// `ssubscribe`/`sunsubscribe` reply).
    pub fn shard_count(&self) -> usize {
        self.shard_channels.len()
    }

    /// Whether the client is subscribed to anything (a RESP2 client is then in subscribed
    /// mode).
    pub fn is_subscribed(&self) -> bool {
        self.count() + self.shard_count() > 0
    }

    /// Bytes the subscriptions hold (names and their bookkeeping here and in the hub, a
    /// pattern's compiled form), for the clients' memory budget; O(1).
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// The next queued push; pending while there is none.
    pub async fn recv(&mut self) -> Option<Push> {
        let m = self.rx.recv().await?;
        self.outlet.queued.fetch_sub(m.size(), Ordering::AcqRel);
        self.outlet.memory.sub(m.own_size());
        Some(m)
    }

    /// A queued push, if one is waiting.
    pub fn try_recv(&mut self) -> Option<Push> {
        let m = self.rx.try_recv().ok()?;
        self.outlet.queued.fetch_sub(m.size(), Ordering::AcqRel);
        self.outlet.memory.sub(m.own_size());
        Some(m)
    }

    /// Notified when the client falls further behind than its limit (a permit is kept if
    /// nobody waits).
    pub fn over_signal(&self) -> Arc<tokio::sync::Notify> {
        self.outlet.over_signal.clone()
    }

    /// Whether the client fell further behind than its limit (it is to be closed).
    pub fn over_limit(&self) -> bool {
        self.outlet.over.load(Ordering::Acquire)
    }
}

#[derive(Default)]
struct Subs {
    channels: HashMap<Bytes, HashMap<u64, Outlet>>,
    shards: HashMap<Bytes, HashMap<u64, Outlet>>,
    patterns: PatternTable,
}

/// Chunks of the pattern table: a distinct pattern that comes or goes rebuilds its chunk's
/// snapshot only.
const PATTERN_CHUNKS: usize = 256;

/// Patterns one `PSUBSCRIBE` adds under one hold of the table's lock
/// ([`PubSub::psubscribe_all`]).
const PATTERN_BATCH: usize = 1024;

/// The distinct patterns, in chunks by hash, each with a snapshot `PUBLISH` matches against
/// without holding the table's lock. One snapshot of every pattern, rebuilt whenever a
/// pattern came or went, made each new pattern cost time in proportion to all of them under
/// the lock every subscriber and publisher takes: quadratic once the node no longer bounds
/// their number.
struct PatternTable {
    chunks: Vec<PatternChunk>,
    hasher: RandomState,
    /// The snapshots of the chunks that hold a pattern.
    list: Arc<[Arc<[Arc<PatternSubs>]>]>,
    len: usize,
    /// The bytes of every distinct pattern: a `PUBLISH`'s matching work is at most this
    /// times its channel's length.
    bytes: usize,
}

#[derive(Default)]
struct PatternChunk {
    map: HashMap<Bytes, Arc<PatternSubs>>,
    list: Arc<[Arc<PatternSubs>]>,
}

impl Default for PatternTable {
    fn default() -> Self {
        Self {
            chunks: (0..PATTERN_CHUNKS)
                .map(|_| PatternChunk::default())
                .collect(),
            hasher: RandomState::new(),
            list: Arc::new([]),
            len: 0,
            bytes: 0,
        }
    }
}

impl PatternTable {
    fn chunk_of(&self, pattern: &[u8]) -> usize {
        (self.hasher.hash_one(pattern) as usize) % PATTERN_CHUNKS
    }

    fn get(&self, pattern: &[u8]) -> Option<&Arc<PatternSubs>> {
        self.chunks[self.chunk_of(pattern)].map.get(pattern)
    }

    /// Adds a distinct pattern (not in the table); the chunk whose snapshot is then out of
    /// date ([`Self::refresh`]).
    fn add(&mut self, p: PatternSubs) -> usize {
        let c = self.chunk_of(&p.pattern);
        self.len += 1;
        self.bytes += p.pattern.len();
        self.chunks[c].map.insert(p.pattern.clone(), Arc::new(p));
        c
    }

    /// Takes client `id` off `pattern`, and the pattern off the table once nobody is on
    /// it; the chunk whose snapshot is then out of date ([`Self::refresh`]).
    fn leave(&mut self, pattern: &[u8], id: u64) -> Option<usize> {
        let c = self.chunk_of(pattern);
        let p = self.chunks[c].map.get(pattern)?;
        let mut clients = p.clients.write();
        clients.remove(&id);
        if !clients.is_empty() {
            return None;
        }
        drop(clients);
        self.chunks[c].map.remove(pattern);
        self.len -= 1;
        self.bytes -= pattern.len();
        Some(c)
    }

    /// Rebuilds the snapshots of `chunks` (each once), then the list of non-empty ones.
    fn refresh(&mut self, chunks: &[usize]) {
        if chunks.is_empty() {
            return;
        }
        let mut chunks = chunks.to_vec();
        chunks.sort_unstable();
        chunks.dedup();
        for &c in &chunks {
            let chunk = &mut self.chunks[c];
            chunk.list = chunk.map.values().cloned().collect();
        }
        self.list = self
            .chunks
            .iter()
            .filter(|c| !c.list.is_empty())
            .map(|c| c.list.clone())
            .collect();
    }
}

/// One distinct pattern and its subscribers. `PUBLISH` matches against a snapshot of these,
/// outside the table's lock: 1,000 patterns built to be slow against 8 KiB channel names
/// held the lock 17 s per `PUBLISH`, and every `SUBSCRIBE`, `UNSUBSCRIBE` and subscriber's
/// disconnection (and, behind them, every other `PUBLISH`) waited that long (review,
/// 2026-12-04).
struct PatternSubs {
    pattern: Bytes,
    glob: Glob,
    clients: RwLock<HashMap<u64, Outlet>>,
}

/// Matching work (pattern bytes × channel bytes) above which a `PUBLISH` lets the runtime
/// move this worker's other connections to another thread while it matches.
const PUBLISH_BLOCKING_WORK: usize = 1 << 22;

/// Takes client `id` off `name` in `map`, and the name off the map once nobody is on it.
fn leave(map: &mut HashMap<Bytes, HashMap<u64, Outlet>>, name: &[u8], id: u64) {
    if let Some(clients) = map.get_mut(name) {
        clients.remove(&id);
        if clients.is_empty() {
            map.remove(name);
        }
    }
}

/// The node's subscriptions, and every open queue by client id (where client-tracking
/// pushes for a client are sent).
#[derive(Default)]
pub struct PubSub {
    subs: RwLock<Subs>,
    outlets: RwLock<HashMap<u64, Outlet>>,
    /// Clients disconnected for falling behind their limit.
    pub closed_over_limit: AtomicUsize,
    /// All clients' memory, where queued messages count.
    memory: Arc<ClientMemory>,
}

impl std::fmt::Debug for PubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub").finish_non_exhaustive()
    }
}

impl PubSub {
    /// A hub whose queues count in `memory` (the clients' budget).
    pub fn new(memory: Arc<ClientMemory>) -> Self {
        Self {
            memory,
            ..Self::default()
        }
    }

    /// A new subscription for client `id`, its queue bounded by `limit` bytes.
    pub fn open(self: &Arc<Self>, id: u64, limit: usize) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let outlet = Outlet {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            over: Arc::new(AtomicBool::new(false)),
            over_signal: Arc::new(tokio::sync::Notify::new()),
            limit,
            memory: self.memory.clone(),
        };
        self.outlets.write().insert(id, outlet.clone());
        Subscription {
            hub: self.clone(),
            id,
            outlet,
            rx,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            shard_channels: BTreeSet::new(),
            held: 0,
        }
    }

    /// Checks that `sub` may take one more subscription.
    fn room(sub: &Subscription) -> Result<(), String> {
        if sub.count() + sub.shard_count() >= MAX_SUBSCRIPTIONS_PER_CLIENT {
            return Err(format!(
                "a client may hold at most {MAX_SUBSCRIPTIONS_PER_CLIENT} subscriptions"
            ));
        }
        Ok(())
    }

    /// Subscribes `sub` to `channel` (no-op if it is).
    pub fn subscribe(&self, sub: &mut Subscription, channel: &[u8]) -> Result<(), String> {
        self.join(sub, channel, false)
    }

    /// Subscribes `sub` to shard channel `channel` (`SSUBSCRIBE`; no-op if it is).
    pub fn ssubscribe(&self, sub: &mut Subscription, channel: &[u8]) -> Result<(), String> {
        self.join(sub, channel, true)
    }

    /// Unsubscribes `sub` from `channel`; returns whether it was subscribed.
    pub fn unsubscribe(&self, sub: &mut Subscription, channel: &[u8]) -> bool {
        sub.channels.remove(channel) && {
            sub.held -= channel_charge(channel.len());
            leave(&mut self.subs.write().channels, channel, sub.id);
            true
        }
    }

    /// Unsubscribes `sub` from shard channel `channel`; returns whether it was subscribed.
    pub fn sunsubscribe(&self, sub: &mut Subscription, channel: &[u8]) -> bool {
        sub.shard_channels.remove(channel) && {
            sub.held -= channel_charge(channel.len());
            leave(&mut self.subs.write().shards, channel, sub.id);
            true
        }
    }

    /// Subscribes `sub` to a channel, or a shard channel with `shard`.
    fn join(&self, sub: &mut Subscription, channel: &[u8], shard: bool) -> Result<(), String> {
        let held = if shard {
            &sub.shard_channels
        } else {
            &sub.channels
        };
        if held.contains(channel) {
            return Ok(());
        }
        Self::room(sub)?;
        let channel = Bytes::copy_from_slice(channel);
        sub.held += channel_charge(channel.len());
        if shard {
            sub.shard_channels.insert(channel.clone());
        } else {
            sub.channels.insert(channel.clone());
        }
        let mut subs = self.subs.write();
        let map = if shard {
            &mut subs.shards
        } else {
            &mut subs.channels
        };
        map.entry(channel)
            .or_default()
            .insert(sub.id, sub.outlet.clone());
        Ok(())
    }

    /// Subscribes `sub` to `pattern` (a Redis glob).
    pub fn psubscribe(&self, sub: &mut Subscription, pattern: &[u8]) -> Result<(), String> {
        let (_, refused) = self.psubscribe_all(sub, std::slice::from_ref(&pattern));
        refused.map_or(Ok(()), Err)
    }

    /// Subscribes `sub` to each of `patterns` in turn, until one is refused: the client's
    /// subscription count after each one taken, and why the next was refused. The table's
    /// snapshots are rebuilt once per 1,024 patterns, not once per pattern: one
    /// `PSUBSCRIBE` of 10,000 patterns rebuilt them 10,000 times and held every client up
    /// for its 0.2–0.4 s (review helper-119).
    pub fn psubscribe_all<P: AsRef<[u8]>>(
        &self,
        sub: &mut Subscription,
        patterns: &[P],
    ) -> (Vec<usize>, Option<String>) {
        let mut taken = Vec::with_capacity(patterns.len());
        for batch in patterns.chunks(PATTERN_BATCH) {
            let mut subs = self.subs.write();
            let mut touched = Vec::new();
            for pattern in batch {
                let pattern = pattern.as_ref();
                if sub.patterns.contains(pattern) {
                    taken.push(sub.count());
                    continue;
                }
                let checked =
                    Self::room(sub).and_then(|()| Glob::new(pattern).map_err(|e| e.to_string()));
                let glob = match checked {
                    Ok(glob) => glob,
                    Err(why) => {
                        subs.patterns.refresh(&touched);
                        return (taken, Some(why));
                    }
                };
                let pattern = Bytes::copy_from_slice(pattern);
                if let Some(p) = subs.patterns.get(&pattern) {
                    p.clients.write().insert(sub.id, sub.outlet.clone());
                } else {
                    touched.push(subs.patterns.add(PatternSubs {
                        pattern: pattern.clone(),
                        glob,
                        clients: RwLock::new(HashMap::from([(sub.id, sub.outlet.clone())])),
                    }));
                }
                sub.held += pattern_charge(pattern.len());
                sub.patterns.insert(pattern);
                taken.push(sub.count());
            }
            subs.patterns.refresh(&touched);
        }
        (taken, None)
    }

    /// Unsubscribes `sub` from `pattern`; returns whether it was subscribed.
    pub fn punsubscribe(&self, sub: &mut Subscription, pattern: &[u8]) -> bool {
        if !sub.patterns.remove(pattern) {
            return false;
        }
        sub.held -= pattern_charge(pattern.len());
        let mut subs = self.subs.write();
        if let Some(c) = subs.patterns.leave(pattern, sub.id) {
            subs.patterns.refresh(&[c]);
        }
        true
    }

    /// Drops every subscription of `sub` (its connection ends, or `RESET`), in batches so
    /// that the lock is let go between them.
    pub fn close(&self, sub: &mut Subscription) {
        while self.close_some(sub, usize::MAX) {}
    }

    /// Drops up to `max` of `sub`'s subscriptions, in batches of 256 under the lock; returns
    /// whether some are left (the caller may give the runtime a turn between calls).
    pub fn close_some(&self, sub: &mut Subscription, max: usize) -> bool {
        let mut left = max;
        for shard in [false, true] {
            let set = if shard {
                &mut sub.shard_channels
            } else {
                &mut sub.channels
            };
            let names = take_some(set, &mut left);
            sub.held = sub
                .held
                .saturating_sub(names.iter().map(|c| channel_charge(c.len())).sum::<usize>());
            for batch in names.chunks(256) {
                let mut subs = self.subs.write();
                let map = if shard {
                    &mut subs.shards
                } else {
                    &mut subs.channels
                };
                for c in batch {
                    leave(map, c, sub.id);
                }
            }
        }
        let patterns = take_some(&mut sub.patterns, &mut left);
        sub.held = sub.held.saturating_sub(
            patterns
                .iter()
                .map(|p| pattern_charge(p.len()))
                .sum::<usize>(),
        );
        for batch in patterns.chunks(256) {
            let mut subs = self.subs.write();
            let mut changed: Vec<usize> = batch
                .iter()
                .filter_map(|p| subs.patterns.leave(p, sub.id))
                .collect();
            if !changed.is_empty() {
                changed.sort_unstable();
                changed.dedup();
                subs.patterns.refresh(&changed);
            }
        }
        !(sub.channels.is_empty() && sub.shard_channels.is_empty() && sub.patterns.is_empty())
    }

    /// Queues `push` for client `id`: `None` when it has no queue (not connected, or neither
    /// subscribed nor tracking nor RESP3), else whether it was queued (false: the client is
    /// over its limit and is being closed).
    pub fn push_to(&self, id: u64, push: Push) -> Option<bool> {
        let outlets = self.outlets.read();
        Some(outlets.get(&id)?.send(push))
    }

    /// Delivers `payload` on `channel` to this node's subscribers; returns how many clients
    /// got it (a client subscribed to the channel and to matching patterns counts once
    /// per subscription, as in Redis).
    pub fn publish(&self, channel: &[u8], payload: &[u8]) -> usize {
        // Copies: the caller's bytes may be a slice of a connection's read buffer.
        let (channel, payload) = (
            &Bytes::copy_from_slice(channel),
            &Bytes::copy_from_slice(payload),
        );
        let mut n = 0;
        let mut charge = ChargeOnce::default();
        let (patterns, work) = {
            let subs = self.subs.read();
            if let Some(clients) = subs.channels.get(channel) {
                for o in clients.values() {
                    n += usize::from(charge.deliver(o, None, channel, payload));
                }
            }
            (
                subs.patterns.list.clone(),
                subs.patterns.bytes.saturating_mul(channel.len()),
            )
        };
        if patterns.is_empty() {
            return n;
        }
        let mut deliver = || {
            for p in patterns.iter().flat_map(|chunk| chunk.iter()) {
                if !p.glob.matches(channel) {
                    continue;
                }
                for o in p.clients.read().values() {
                    n += usize::from(charge.deliver(o, Some(&p.pattern), channel, payload));
                }
            }
        };
        // Long matching (Redis's matcher spends as long, and stops the whole server) runs
        // where it holds up this connection only.
        if work > PUBLISH_BLOCKING_WORK {
            strata_core::off_worker(deliver);
        } else {
            deliver();
        }
        n
    }

    /// Delivers `payload` on shard channel `channel` (`SPUBLISH`) to this node's
    /// shard-channel subscribers (patterns do not apply, as in Redis); returns how many got
    /// it.
    pub fn spublish(&self, channel: &[u8], payload: &[u8]) -> usize {
        let (channel, payload) = (
            &Bytes::copy_from_slice(channel),
            &Bytes::copy_from_slice(payload),
        );
        let subs = self.subs.read();
        let Some(clients) = subs.shards.get(channel) else {
            return 0;
        };
        let mut charge = ChargeOnce::default();
        clients
            .values()
            .filter(|o| {
                o.send(Push::Message(Message {
                    pattern: None,
                    channel: channel.clone(),
                    payload: payload.clone(),
                    sharded: true,
                    charge: Some(charge.get(o, payload.len())),
                }))
            })
            .count()
    }

    /// Shard channels with at least one subscriber, matching `pattern` when given (`PUBSUB
    /// SHARDCHANNELS`).
    pub fn shard_channels(&self, pattern: Option<&Glob>) -> Vec<Bytes> {
        self.list_channels(true, pattern)
    }

    /// Subscribers of shard channel `channel` (`PUBSUB SHARDNUMSUB`).
    pub fn shard_numsub(&self, channel: &[u8]) -> usize {
        self.subs.read().shards.get(channel).map_or(0, HashMap::len)
    }

    /// Channels with at least one subscriber, matching `pattern` when given (`PUBSUB
    /// CHANNELS`).
    pub fn channels(&self, pattern: Option<&Glob>) -> Vec<Bytes> {
        self.list_channels(false, pattern)
    }

    /// The channels (`shard`: shard channels) with a subscriber that match `pattern`, sorted.
    /// Listed off the worker past [`LIST_OFF_WORKER`] channels: 40,000 took 145 ms in a debug
    /// build, with every other client unanswered meanwhile (review helper-122).
    fn list_channels(&self, shard: bool, pattern: Option<&Glob>) -> Vec<Bytes> {
        let list = || {
            let subs = self.subs.read();
            let map = if shard { &subs.shards } else { &subs.channels };
            let mut out: Vec<Bytes> = map
                .keys()
                .filter(|c| pattern.is_none_or(|g| g.matches(c)))
                .cloned()
                .collect();
            drop(subs);
            out.sort();
            out
        };
        let held = {
            let subs = self.subs.read();
            if shard {
                subs.shards.len()
            } else {
                subs.channels.len()
            }
        };
        if held > LIST_OFF_WORKER {
            strata_core::off_worker(list)
        } else {
            list()
        }
    }

    /// Subscribers of `channel` (`PUBSUB NUMSUB`; patterns not counted, as in Redis).
    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.subs
            .read()
            .channels
            .get(channel)
            .map_or(0, HashMap::len)
    }

    /// Patterns with at least one subscriber (`PUBSUB NUMPAT`).
    pub fn numpat(&self) -> usize {
        self.subs.read().patterns.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_payload_counts_once_however_many_queues_hold_it() {
        let memory = Arc::new(ClientMemory::new(64 << 20));
        let ps = Arc::new(PubSub::new(memory.clone()));
        let mut subs: Vec<_> = (0..100).map(|i| ps.open(i, 32 << 20)).collect();
        for s in &mut subs[..50] {
            ps.subscribe(s, b"news").unwrap();
        }
        for s in &mut subs[50..] {
            ps.psubscribe(s, b"n*").unwrap();
        }
        // 100 queues × 1 MiB would be 100 MiB, past the 64 MiB budget: one copy is 1 MiB.
        let payload = vec![b'x'; 1 << 20];
        assert_eq!(ps.publish(b"news", &payload), 100);
        let held = memory.total();
        assert!(
            ((1 << 20)..(1 << 20) + 100 * 1024).contains(&held),
            "{held} bytes counted"
        );
        assert!(subs.iter().all(|s| !s.over_limit()), "none closed");
        // Given back as the queues let it go: the payload with the last one.
        for s in &mut subs[..99] {
            assert!(s.try_recv().is_some());
        }
        assert!(memory.total() >= 1 << 20);
        let last = subs[99].try_recv();
        assert!(last.is_some());
        drop(last);
        assert_eq!(memory.total(), 0);
    }

    #[test]
    fn a_subscriptions_charge_follows_every_change() {
        let ps = Arc::new(PubSub::default());
        let mut a = ps.open(1, 1 << 20);
        let recount = |a: &Subscription| -> usize {
            a.channels
                .iter()
                .chain(&a.shard_channels)
                .map(|c| channel_charge(c.len()))
                .sum::<usize>()
                + a.patterns
                    .iter()
                    .map(|p| pattern_charge(p.len()))
                    .sum::<usize>()
        };
        for i in 0..10 {
            ps.subscribe(&mut a, format!("c{i}").as_bytes()).unwrap();
            ps.psubscribe(&mut a, format!("p{i}*").as_bytes()).unwrap();
        }
        let small = a.held_bytes();
        assert_eq!(small, recount(&a));
        // As many names, larger: the same count, a larger charge.
        for i in 0..10 {
            assert!(ps.unsubscribe(&mut a, format!("c{i}").as_bytes()));
            assert!(ps.punsubscribe(&mut a, format!("p{i}*").as_bytes()));
            ps.subscribe(&mut a, format!("c{i}{}", "x".repeat(8000)).as_bytes())
                .unwrap();
            ps.ssubscribe(&mut a, format!("s{i}").as_bytes()).unwrap();
            assert!(ps.sunsubscribe(&mut a, format!("s{i}").as_bytes()));
            ps.psubscribe(&mut a, format!("p{i}{}*", "x".repeat(1000)).as_bytes())
                .unwrap();
        }
        assert_eq!(a.count(), 20);
        assert_eq!(a.held_bytes(), recount(&a));
        assert!(
            a.held_bytes() > 10 * 16_000 + 10 * 14_000,
            "{}",
            a.held_bytes()
        );
        ps.close(&mut a);
        assert_eq!(a.held_bytes(), 0);
    }

    #[tokio::test]
    async fn publish_reaches_channel_and_pattern_subscribers_and_bounds_a_slow_one() {
        let ps = Arc::new(PubSub::default());
        let mut a = ps.open(1, 1 << 20);
        let mut b = ps.open(2, 300);
        ps.subscribe(&mut a, b"news").unwrap();
        ps.psubscribe(&mut b, b"n*").unwrap();
        assert_eq!(ps.publish(b"news", b"hi"), 2);
        let Some(Push::Message(m)) = a.recv().await else {
            panic!("a message")
        };
        assert_eq!(
            (m.pattern, &m.channel[..], &m.payload[..]),
            (None, &b"news"[..], &b"hi"[..])
        );
        let Some(Push::Message(m)) = b.recv().await else {
            panic!("a message")
        };
        assert_eq!(m.pattern.as_deref(), Some(&b"n*"[..]));
        assert_eq!(ps.channels(None), vec![Bytes::from_static(b"news")]);
        assert_eq!((ps.numsub(b"news"), ps.numpat()), (1, 1));
        // b never reads: past 300 bytes queued it is over its limit, and a is unaffected.
        for _ in 0..10 {
            ps.publish(b"news", &[b'x'; 100]);
        }
        assert!(b.over_limit());
        assert!(!a.over_limit());
        let mut got = 0;
        while a.try_recv().is_some() {
            got += 1;
        }
        assert_eq!(got, 10);
        assert!(ps.unsubscribe(&mut a, b"news"));
        assert!(!ps.unsubscribe(&mut a, b"news"));
        ps.close(&mut b);
        assert!(ps.channels(None).is_empty());
        assert_eq!(ps.numpat(), 0);
    }

    #[test]
    fn subscriptions_are_bounded_per_client_and_take_no_other_clients_room() {
        let ps = Arc::new(PubSub::default());
        let mut a = ps.open(1, 1 << 20);
        for i in 0..MAX_SUBSCRIPTIONS_PER_CLIENT {
            ps.subscribe(&mut a, format!("c{i}").as_bytes()).unwrap();
        }
        assert!(ps.subscribe(&mut a, b"one-more").is_err());
        assert!(ps.psubscribe(&mut a, b"p*").is_err());
        ps.subscribe(&mut a, b"c1").unwrap();
        assert_eq!(a.count(), MAX_SUBSCRIPTIONS_PER_CLIENT);
        drop(a);
        assert!(
            ps.channels(None).is_empty(),
            "a dropped subscription leaves the hub"
        );
        // One client at its bound takes no other client's room: the node sets none.
        let mut b = ps.open(2, 1 << 20);
        for i in 0..MAX_SUBSCRIPTIONS_PER_CLIENT {
            ps.psubscribe(&mut b, format!("p{i}*").as_bytes()).unwrap();
        }
        assert!(ps.psubscribe(&mut b, b"one-more*").is_err());
        let mut c = ps.open(3, 1 << 20);
        for i in 0..MAX_SUBSCRIPTIONS_PER_CLIENT {
            ps.psubscribe(&mut c, format!("q{i}*").as_bytes()).unwrap();
        }
        let mut d = ps.open(4, 1 << 20);
        ps.psubscribe(&mut d, b"new*").unwrap();
        ps.psubscribe(&mut d, b"p1*").unwrap();
        assert_eq!(ps.numpat(), 2 * MAX_SUBSCRIPTIONS_PER_CLIENT + 1);
        // Every chunk's snapshot is current: a publish reaches exactly the matching ones.
        assert_eq!(ps.publish(b"p17", b"x"), 3, "p1* (b's and d's) and p17*");
        assert_eq!(ps.publish(b"q9999", b"x"), 4, "q9*, q99*, q999*, q9999*");
        assert_eq!(ps.publish(b"news", b"x"), 1);
        ps.close(&mut b);
        assert_eq!(ps.numpat(), MAX_SUBSCRIPTIONS_PER_CLIENT + 2);
        assert_eq!(ps.publish(b"p17", b"x"), 1, "d's p1* only");
        assert!(ps.punsubscribe(&mut d, b"new*"));
        assert_eq!(ps.publish(b"news", b"x"), 0);
        assert_eq!(ps.numpat(), MAX_SUBSCRIPTIONS_PER_CLIENT + 1);
    }
}
