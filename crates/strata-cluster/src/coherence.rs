//! Coherent invalidation across nodes, as a sans-IO state machine.
//!
//! Every invalidation (key, pattern, tag, namespace flush) is stamped by the node that makes
//! it — the key's owner, or for the others the node the client asked — with its
//! hybrid-logical-clock version and a **per-origin sequence number**, and disseminated as a
//! foca custom broadcast. Each origin also announces its latest sequence number in a
//! periodic heartbeat, so a receiver notices a loss even when nothing follows it.
//!
//! A receiver applies an origin's invalidations in sequence order. Out-of-order items wait;
//! a **gap** (a missing sequence number, seen from a later item or a heartbeat) is first
//! repaired by asking the origin for the missing range (`Output::Repair`, served from the
//! origin's bounded log); if it is still open after `max_staleness`, the receiver gives up
//! on it and emits `Output::DropUnverified`: it drops every copy it does not own, because the
//! lost invalidation could cover any of them, and moves on. So every invalidation is either
//! applied or covered by a drop within `max_staleness` of the receiver hearing of it, which is
//! what G2 (bounded staleness) and G3 (no resurrection) rest on.
//!
//! Sequence numbers belong to one life of the origin: a restarted node (new generation)
//! starts again at 1, and receivers track `(origin, generation)`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use serde::{Deserialize, Serialize};

/// What was invalidated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvalidationOp {
    /// One key.
    Key {
        /// Namespace.
        namespace: String,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Keys matching a glob.
    Pattern {
        /// Namespace.
        namespace: String,
        /// Redis-style glob.
        #[serde(with = "serde_bytes")]
        pattern: Vec<u8>,
    },
    /// Entries carrying a tag.
    Tag {
        /// Namespace.
        namespace: String,
        /// The tag.
        #[serde(with = "serde_bytes")]
        tag: Vec<u8>,
    },
    /// A whole namespace.
    Flush {
        /// Namespace.
        namespace: String,
    },
}

/// An invalidation with its origin, sequence number and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidation {
    /// The origin node's name.
    pub origin: String,
    /// The origin's generation (sequence numbers restart with each).
    pub generation: u64,
    /// 1, 2, 3, … per origin life.
    pub seq: u64,
    /// HLC version: copies older than this are stale.
    pub version: u64,
    /// What.
    pub op: InvalidationOp,
}

/// One item of the broadcast stream. Append-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    /// An invalidation.
    Invalidation(Invalidation),
    /// An origin's latest sequence number (sent every heartbeat interval).
    Heartbeat {
        /// The origin.
        origin: String,
        /// Its generation.
        generation: u64,
        /// Its latest sequence number.
        latest: u64,
    },
    /// Consecutive invalidations of one origin life, disseminated as one item: what a node
    /// sends under load, so that foca carries one item per batch instead of one per write.
    Batch(Vec<Invalidation>),
}

/// Encoded size above which a batch is cut (foca's packets are 1400 bytes by default and
/// also carry membership updates; two or three batches share one).
pub const MAX_BATCH_BYTES: usize = 480;

impl Item {
    /// Splits `invalidations` (in sequence order) into encoded items of at most
    /// [`MAX_BATCH_BYTES`] each (a single larger invalidation is an item of its own), for
    /// dissemination.
    pub fn batches(invalidations: &[Invalidation]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < invalidations.len() {
            let mut end = start + 1;
            let mut best = Item::Batch(invalidations[start..end].to_vec()).encode();
            while end < invalidations.len() {
                let next = Item::Batch(invalidations[start..=end].to_vec()).encode();
                if next.len() > MAX_BATCH_BYTES {
                    break;
                }
                best = next;
                end += 1;
            }
            out.push(if end - start == 1 {
                Item::Invalidation(invalidations[start].clone()).encode()
            } else {
                best
            });
            start = end;
        }
        out
    }

    /// The item's wire form (`0x01 ‖ postcard`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![1u8];
        // Strings, byte vectors and integers always serialize.
        out.extend_from_slice(&postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Decodes an item (at most 64 KiB).
    pub fn decode(bytes: &[u8]) -> Option<Item> {
        if bytes.len() > 64 * 1024 || bytes.first() != Some(&1) {
            return None;
        }
        postcard::from_bytes(&bytes[1..]).ok()
    }
}

/// What foca keys a broadcast item by, to know which items replace which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKey {
    /// An invalidation: unique per (origin, generation, seq).
    Invalidation(String, u64, u64),
    /// A heartbeat: a newer one of the same origin life replaces an older one.
    Heartbeat(String, u64, u64),
}

impl foca::Invalidates for ItemKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (ItemKey::Invalidation(..), ItemKey::Invalidation(..)) => self == other,
            (ItemKey::Heartbeat(o1, g1, l1), ItemKey::Heartbeat(o2, g2, l2)) => {
                o1 == o2 && g1 == g2 && l1 >= l2
            }
            _ => false,
        }
    }
}

/// An item that did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("undecodable coherence broadcast item")]
pub struct BadItem;

/// Most invalidation keys remembered for deduplication.
const SEEN_CAPACITY: usize = 1 << 16;

#[derive(Debug, Default)]
struct InboxState {
    received: Vec<Vec<u8>>,
    seen: std::collections::BTreeSet<(String, u64, u64)>,
    seen_order: VecDeque<(String, u64, u64)>,
    heartbeats: BTreeMap<(String, u64), u64>,
    /// Whether received invalidations are passed on (see [`ItemHandler::set_relay`]).
    no_relay: bool,
}

impl InboxState {
    /// Records `k` as seen (forgetting the oldest past `SEEN_CAPACITY`); false when it was
    /// seen already.
    fn first_sight(&mut self, k: &(String, u64, u64)) -> bool {
        if !self.seen.insert(k.clone()) {
            return false;
        }
        self.seen_order.push_back(k.clone());
        if self.seen_order.len() > SEEN_CAPACITY
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

/// foca's broadcast handler for coherence items: keeps disseminating what is new, and
/// collects what arrived from the network for the coherence state machine. Clones share
/// the inbox (the membership drains it after each foca call).
#[derive(Debug, Clone, Default)]
pub struct ItemHandler {
    inner: std::sync::Arc<std::sync::Mutex<InboxState>>,
}

impl ItemHandler {
    /// Whether invalidations received from others are passed on (foca retransmits them to
    /// random members, the epidemic part of dissemination). The membership turns it off
    /// while its broadcast backlog is long: under write load every relayed item would be
    /// queued and retransmitted by every member, and the backlog is scanned on every add.
    /// Heartbeats are always relayed; what a member then misses, it repairs from the origin.
    pub fn set_relay(&self, relay: bool) {
        if let Ok(mut s) = self.inner.lock() {
            s.no_relay = !relay;
        }
    }

    /// Takes the items received since the last call.
    pub fn drain(&self) -> Vec<Vec<u8>> {
        self.inner
            .lock()
            .map(|mut s| std::mem::take(&mut s.received))
            .unwrap_or_default()
    }
}

impl foca::BroadcastHandler<crate::NodeIdentity> for ItemHandler {
    type Key = ItemKey;
    type Error = BadItem;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&crate::NodeIdentity>,
    ) -> Result<Option<ItemKey>, BadItem> {
        let item = Item::decode(data).ok_or(BadItem)?;
        let Ok(mut s) = self.inner.lock() else {
            return Ok(None);
        };
        let key = match item {
            Item::Invalidation(inv) => {
                let k = (inv.origin, inv.generation, inv.seq);
                if !s.first_sight(&k) {
                    return Ok(None);
                }
                ItemKey::Invalidation(k.0, k.1, k.2)
            }
            Item::Batch(invs) => {
                let Some(first) = invs.first() else {
                    return Ok(None);
                };
                // The high bit marks a batch's key apart from its first invalidation's
                // (sequence numbers never reach 2^63).
                let k = (first.origin.clone(), first.generation, first.seq | 1 << 63);
                if !s.first_sight(&k) {
                    return Ok(None);
                }
                ItemKey::Invalidation(k.0, k.1, k.2)
            }
            Item::Heartbeat {
                origin,
                generation,
                latest,
            } => {
                let slot = s
                    .heartbeats
                    .entry((origin.clone(), generation))
                    .or_insert(0);
                if *slot >= latest && sender.is_some() {
                    return Ok(None);
                }
                *slot = latest;
                ItemKey::Heartbeat(origin, generation, latest)
            }
        };
        if sender.is_some() {
            s.received.push(data.to_vec());
            if s.no_relay && matches!(key, ItemKey::Invalidation(..)) {
                return Ok(None);
            }
        }
        Ok(Some(key))
    }
}

/// Settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoherenceConfig {
    /// A gap still open this long after it was noticed is given up on (`DropUnverified`);
    /// the bound of G2 (default 1000 ms).
    pub max_staleness_ms: u64,
    /// Ask the origin for a gap this long after noticing it (default 100 ms): reordering
    /// usually closes a gap by itself sooner.
    pub repair_after_ms: u64,
    /// Invalidations an origin keeps for repairs (default 65,536). A key invalidation
    /// superseded by a later one of the same key takes a marker's 24 bytes instead (a
    /// repair answers it with the later one), up to eight times as many entries in all:
    /// under a hot key's writes the log reaches back that much further (a member cut off
    /// for 5 s missed 121,000 invalidations of one counter, past a log of 65,536 whole
    /// items; the gap could not be repaired and restarted its record as a witness).
    pub log_capacity: usize,
    /// How long a key's invalidation version is remembered to refuse older copies
    /// (default 60 s: longer than the ring views of a healthy cluster take to agree).
    pub tombstone_ms: u64,
    /// The seed of the 128-bit hash tombstones are kept under (a node draws a random one,
    /// so that nobody can choose two keys that share a tombstone).
    pub key_seed: u64,
}

impl Default for CoherenceConfig {
    fn default() -> Self {
        Self {
            max_staleness_ms: 1000,
            repair_after_ms: 100,
            log_capacity: 65_536,
            tombstone_ms: 60_000,
            key_seed: 0,
        }
    }
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Disseminate these bytes (foca `add_broadcast`).
    Broadcast(Vec<u8>),
    /// Drop this node's copies that the invalidation covers and that are older than its
    /// version.
    Apply(Invalidation),
    /// Ask `origin` (RPC `Invalidations`) for sequence numbers `from..=to` of `generation`.
    Repair {
        /// The origin.
        origin: String,
        /// Its generation.
        generation: u64,
        /// First missing.
        from: u64,
        /// Last missing.
        to: u64,
    },
    /// Invalidations of `origin` may have been lost (a gap not repaired in time, or its life
    /// ended): drop every copy this node does not own — and, when `owned`, the entries of
    /// keys it owns too.
    DropUnverified {
        /// The origin whose invalidations were lost (this node itself after
        /// [`Coherence::rejoined`]).
        origin: String,
        /// How many are known lost (0 when unknown: the origin's life ended).
        lost: u64,
        /// The coherence generation of the origin's life whose invalidations were lost
        /// (when `lost` > 0; 0 otherwise). A witness whose record a gap restarted can
        /// still vouch for that very life's copies: what it missed, that life made and
        /// remembers itself (`strata_cluster::warm::Record`).
        life: u64,
        /// Whether the owner store goes too: only when this node was out of the cluster
        /// ([`Coherence::rejoined`]), when changes of the keys it owns went to other owners
        /// and it may never hear of them. A gap alone leaves owned entries: every change of
        /// a key reaches all of its owners before it is acknowledged (primary execution),
        /// so an owner that stayed on the ring missed none of them. (Dropping them on every
        /// lost gap lost locks and counters whose owners both dropped: found when the
        /// simulator modelled that drop for them, 37 seeds in 3,600.)
        owned: bool,
    },
    /// Ask `origin` for its latest sequence number now (RPC `Ping`; the answer comes back
    /// as a heartbeat through [`Coherence::receive_item`]): this node has just met it, or
    /// met it again after a partition or a restart, and may have missed its invalidations.
    /// Waiting for its heartbeat or for the periodic pull left a rejoined node serving keys
    /// deleted meanwhile for seconds (found by the turmoil test: 2.7 s, seed 40).
    AskLatest {
        /// The member to ask.
        origin: String,
    },
}

#[derive(Debug, Default)]
struct Peer {
    /// Every seq up to this one is applied (or covered by a drop).
    applied: u64,
    /// Items received ahead of a gap.
    waiting: BTreeMap<u64, Invalidation>,
    /// The highest seq known to exist (from items or heartbeats).
    known: u64,
    /// When the current gap was noticed, and whether it was asked for.
    gap_since: Option<u64>,
    asked: bool,
    /// Since when membership holds this life down (declared down, or a newer identity of
    /// its origin came up): no repair is asked of it (it is out of the view), though a gap
    /// still runs to its deadline (G2). Kept rather than forgotten, for `tombstone_ms`: a
    /// member declared down while its process goes on (a cut longer than failure
    /// detection) rejoins under a renewed identity with the same life here, and only what
    /// it made meanwhile is missing.
    down: Option<u64>,
    /// An identity of its origin is up again since ([`Coherence::member_up`]): the life's
    /// next word (a heartbeat, an item) resumes it; a newer life retires it instead.
    back: bool,
    /// The newest membership identity (generation) of its origin reported up here since
    /// this life was heard of: an `Up` of that identity again (foca reports one both as a
    /// renaming and as an arrival) ended nothing.
    identity: u64,
    /// An `Up` of a newer identity of its origin ended this life's identity unseen (no
    /// `Down` held it down before): the copies its last invalidations covered go once a
    /// newer life of its origin speaks (a restart), not while only this life speaks (a
    /// renewed identity of the same process, whose gap is repaired as usual). Kept when a
    /// word resumes the life — a late word of a process that restarted since (a relayed
    /// heartbeat) resumes it too (attack review helper-109) — and cleared by the drop, or
    /// by a `Down` of its origin (which drops at once).
    ended_unseen: bool,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoherenceStats {
    /// Invalidations applied.
    pub applied: u64,
    /// Duplicates ignored.
    pub duplicates: u64,
    /// Repair requests sent.
    pub repairs_asked: u64,
    /// Gaps given up on (each caused a drop of unowned copies).
    pub gaps_dropped: u64,
    /// Undecodable items.
    pub bad_items: u64,
}

/// Test-only ways to break coherence (feature `fault-switches`).
#[cfg(feature = "fault-switches")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoherenceFaults {
    /// Skip gaps instead of repairing or dropping: a lost invalidation is silently missed.
    pub ignore_gaps: bool,
}

/// A hasher for keys that are already uniform hashes: it folds the 128 bits to 64.
#[derive(Debug, Default, Clone, Copy)]
struct FoldHasher(u64);

impl std::hash::Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64);
    }
}

/// Most coherence lives held down (their members declared down or gone) kept beyond any
/// newer life of theirs: a member that left for good is forgotten once this many others
/// went down after it.
pub const DOWN_LIVES_KEPT: usize = 1_024;

/// Most invalidations one repair answer carries ([`Coherence::log_range`]); the asker asks
/// again for the rest as each answer lands.
pub const REPAIR_ITEMS: usize = 16_384;

/// An entry of an origin's log.
#[derive(Debug)]
enum Logged {
    /// The invalidation as made.
    Full(Box<Invalidation>),
    /// A key invalidation a later one of the same key superseded: the key's tombstone hash
    /// (its entry in `log_latest`), in two halves to keep the entry at 24 bytes.
    Superseded([u64; 2]),
}

/// One node's coherence state.
#[derive(Debug)]
pub struct Coherence {
    /// Recent invalidation versions per (namespace, key), with when they were applied: a
    /// copy older than one of these is refused (G3), even when it comes from an owner that
    /// had not seen the invalidation yet.
    /// Keyed by a seeded 128-bit hash of the pair ([`Coherence::tomb_key`]), not the pair:
    /// a write-heavy node keeps every key invalidated in the last `tombstone_ms`, and a map
    /// of owned strings cost two allocations and a string comparison per level per write
    /// (about 8 % of a cluster's CPU under `redis-benchmark -t set`) and ~100 bytes a key.
    tombstones: HashMap<u128, (u64, u64), BuildHasherDefault<FoldHasher>>,
    /// Tombstones in the order they were last refreshed, for expiry in O(expired) per tick
    /// (a full scan every tick was the hottest path under write load).
    tomb_queue: VecDeque<(u64, u128)>,
    /// Recent pattern, tag and namespace invalidations (when seen, version, what), oldest
    /// first; copies they cover that are older are refused like a key's tombstone.
    wide: VecDeque<(u64, u64, InvalidationOp, Option<strata_core::glob::Glob>)>,
    me: String,
    generation: u64,
    next_seq: u64,
    /// This origin's recent invalidations for repairs, `log[i]` of sequence number
    /// `log_first + i`.
    log: VecDeque<Logged>,
    log_first: u64,
    /// Entries of `log` that are whole ([`Logged::Full`]).
    log_whole: usize,
    /// For each key with a whole entry in `log`, its sequence number (the newest version of
    /// the key invalidated).
    log_latest: HashMap<u128, u64, BuildHasherDefault<FoldHasher>>,
    peers: BTreeMap<(String, u64), Peer>,
    cfg: CoherenceConfig,
    stats: CoherenceStats,
    /// Anti-entropy pulls made, for [`Coherence::pull_target`]'s turn.
    pulls: u64,
    /// Whether this node was cut off from the majority, or stalled, since it last rejoined.
    cut_off: bool,
    /// Whether this node's view has held a majority since it started.
    had_quorum: bool,
    #[cfg(feature = "fault-switches")]
    faults: CoherenceFaults,
}

impl Coherence {
    /// The state of node `me` in its life `generation`.
    pub fn new(me: impl Into<String>, generation: u64, cfg: CoherenceConfig) -> Self {
        Coherence {
            tombstones: HashMap::default(),
            tomb_queue: VecDeque::new(),
            wide: VecDeque::new(),
            me: me.into(),
            generation,
            next_seq: 1,
            log: VecDeque::new(),
            log_first: 1,
            log_whole: 0,
            log_latest: HashMap::default(),
            peers: BTreeMap::new(),
            cfg,
            stats: CoherenceStats::default(),
            pulls: 0,
            cut_off: false,
            had_quorum: false,
            #[cfg(feature = "fault-switches")]
            faults: CoherenceFaults::default(),
        }
    }

    /// Breaks coherence on purpose (simulator checker tests only).
    #[cfg(feature = "fault-switches")]
    pub fn set_faults(&mut self, faults: CoherenceFaults) {
        self.faults = faults;
    }

    /// Counters.
    pub fn stats(&self) -> CoherenceStats {
        self.stats
    }

    /// Remembers `inv` as seen at `now_ms` (a tombstone for a key, the wide list for the
    /// rest); a key's tombstone-map key comes back, for the log to reuse.
    fn remember(&mut self, inv: &Invalidation, now_ms: u64) -> Option<u128> {
        match &inv.op {
            InvalidationOp::Key { namespace, key } => {
                Some(self.tombstone(namespace, key, inv.version, now_ms))
            }
            InvalidationOp::Pattern { .. }
            | InvalidationOp::Tag { .. }
            | InvalidationOp::Flush { .. } => {
                // A copy read afterwards from an owner that has not applied it yet must be
                // refused too (found by the simulator: a node that applied a pattern re-read
                // the old value from a lagging owner and kept it).
                // A pattern is compiled once here, not on every check.
                let glob = match &inv.op {
                    InvalidationOp::Pattern { pattern, .. } => {
                        strata_core::glob::Glob::new(pattern).ok()
                    }
                    _ => None,
                };
                // Once: a strict receiver remembers an item when it is noted and again
                // when it is applied in order (every check scans this list).
                if self
                    .wide
                    .iter()
                    .any(|(_, v, op, _)| *v == inv.version && *op == inv.op)
                {
                    return None;
                }
                self.wide
                    .push_back((now_ms, inv.version, inv.op.clone(), glob));
                None
            }
        }
    }

    /// An invalidation about to be applied out of order (a strict `Apply` from its origin,
    /// which may arrive before the items ahead of it): refused from now on, before its
    /// removals run, so that an owner's store-then-check sees it whatever happens to the
    /// sequence bookkeeping (a gap this item waits behind may be abandoned if its origin
    /// dies). Sequence numbers are untouched; the item still arrives as usual.
    pub fn note_invalidation(&mut self, inv: &Invalidation, now_ms: u64) {
        self.remember(inv, now_ms);
    }

    /// Whether `inv` has already been applied here in its origin's order (a strict `Apply`
    /// that arrives after its item came by gossip is late: its call has returned).
    pub fn has_applied(&self, inv: &Invalidation) -> bool {
        inv.origin == self.me
            || self
                .peers
                .get(&(inv.origin.clone(), inv.generation))
                .is_some_and(|p| inv.seq <= p.applied)
    }

    /// This node wrote `version` of `key` through its primary, or took it by replication as
    /// one of the key's owners: copies older than it are stale from now on, here, without
    /// waiting for the primary's invalidation (a second write of an older version from this
    /// node is then refused at once; and a witness of a restarted member's proof remembers
    /// the write after its copy is gone).
    pub fn note_written(&mut self, namespace: &str, key: &[u8], version: u64, now_ms: u64) {
        self.tombstone(namespace, key, version, now_ms);
    }

    /// This node, an owner of `key`, applies the removal of `key` at `version` (its primary's
    /// delete, or a replica's share of it): copies older than `version` are stale from now on,
    /// here, even when the store held none to remove. A copy read elsewhere before the
    /// removal and stored here after it — a hand-off push from a previous owner, a read
    /// repair — is then refused (the store-then-check of the `Set` path), where the store's
    /// own newest-wins cannot refuse it: the key is absent. The origin's invalidation does
    /// not cover this node when it is the origin, or when a warm start's baseline counted
    /// the invalidation as applied.
    pub fn note_removed(&mut self, namespace: &str, key: &[u8], version: u64, now_ms: u64) {
        self.tombstone(namespace, key, version, now_ms);
    }

    /// Records that copies of `key` older than `version` are stale, for `tombstone_ms` from
    /// `now_ms`.
    /// Returns the key's tombstone-map key.
    fn tombstone(&mut self, namespace: &str, key: &[u8], version: u64, now_ms: u64) -> u128 {
        let k = self.tomb_key(namespace, key);
        let slot = self.tombstones.entry(k).or_insert((0, now_ms));
        slot.0 = slot.0.max(version);
        slot.1 = now_ms;
        self.tomb_queue.push_back((now_ms, k));
        k
    }

    /// The tombstone map's key for (`namespace`, `key`): a seeded 128-bit hash of both. A
    /// collision would make a copy of
    /// one key refused for another's invalidation (a miss); at 128 bits it does not happen.
    fn tomb_key(&self, namespace: &str, key: &[u8]) -> u128 {
        // The namespace goes into the key's seed (through the secret seed, so that nobody
        // can pick two namespaces that seed alike): one-shot hashes, no streaming state.
        let ns = xxhash_rust::xxh3::xxh3_64_with_seed(namespace.as_bytes(), self.cfg.key_seed);
        xxhash_rust::xxh3::xxh3_128_with_seed(key, ns)
    }

    /// How long an invalidation stays remembered here (`tombstone_ms`).
    pub fn tombstone_ms(&self) -> u64 {
        self.cfg.tombstone_ms
    }

    /// Tombstones held now (each about 64 bytes with its queue entry).
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    fn expire_tombstones(&mut self, now_ms: u64) {
        let keep = self.cfg.tombstone_ms;
        while self
            .wide
            .front()
            .is_some_and(|(at, ..)| now_ms.saturating_sub(*at) >= keep)
        {
            self.wide.pop_front();
        }
        while let Some((at, _)) = self.tomb_queue.front() {
            if now_ms.saturating_sub(*at) < keep {
                break;
            }
            let Some((at, k)) = self.tomb_queue.pop_front() else {
                break;
            };
            // Refreshed since: a later queue entry expires it.
            if self.tombstones.get(&k).is_some_and(|(_, last)| *last <= at) {
                self.tombstones.remove(&k);
            }
        }
    }

    /// Whether a copy of `key` at `version` may be stored and served: false when a newer
    /// invalidation of the key was seen in the last `tombstone_ms` (G3: a set older than a
    /// tombstone is refused).
    pub fn admits(&self, namespace: &str, key: &[u8], version: u64) -> bool {
        self.admits_tagged(namespace, key, version, &[])
    }

    /// Like [`Coherence::admits`], for an entry carrying `tags`: also false when a newer
    /// pattern, tag or namespace invalidation seen in the last `tombstone_ms` covers it.
    pub fn admits_tagged(&self, namespace: &str, key: &[u8], version: u64, tags: &[&[u8]]) -> bool {
        self.superseded_by(namespace, key, version, tags).is_none()
    }

    /// The newest invalidation seen in the last `tombstone_ms` that covers a copy of `key`
    /// at `version` carrying `tags` (its version is above the copy's), if any: the floor a
    /// change refused by it must be stamped above to stand.
    pub fn superseded_by(
        &self,
        namespace: &str,
        key: &[u8],
        version: u64,
        tags: &[&[u8]],
    ) -> Option<u64> {
        let mut newest = self
            .tombstones
            .get(&self.tomb_key(namespace, key))
            .map(|(v, _)| *v)
            .filter(|v| version < *v);
        for (_, v, op, glob) in &self.wide {
            if version >= *v || newest.is_some_and(|n| n >= *v) {
                continue;
            }
            let covers = match op {
                InvalidationOp::Pattern { namespace: ns, .. } => {
                    ns == namespace && glob.as_ref().is_some_and(|g| g.matches(key))
                }
                InvalidationOp::Tag { namespace: ns, tag } => {
                    ns == namespace && tags.contains(&tag.as_slice())
                }
                InvalidationOp::Flush { namespace: ns } => ns == namespace,
                InvalidationOp::Key { .. } => false,
            };
            if covers {
                newest = Some(*v);
            }
        }
        newest
    }

    /// Stamps and disseminates an invalidation made on this node at `now_ms` (the caller has
    /// already applied it locally). Returns the invalidation and the output to carry out.
    pub fn originate(
        &mut self,
        now_ms: u64,
        version: u64,
        op: InvalidationOp,
    ) -> (Invalidation, Output) {
        let inv = Invalidation {
            origin: self.me.clone(),
            generation: self.generation,
            seq: self.next_seq,
            version,
            op,
        };
        self.next_seq += 1;
        let tk = self.remember(&inv, now_ms);
        self.log_push(&inv, tk);
        let out = Output::Broadcast(Item::Invalidation(inv.clone()).encode());
        (inv, out)
    }

    /// The periodic heartbeat: this origin's latest sequence number.
    pub fn heartbeat(&self) -> Output {
        Output::Broadcast(
            Item::Heartbeat {
                origin: self.me.clone(),
                generation: self.generation,
                latest: self.next_seq - 1,
            }
            .encode(),
        )
    }

    /// Appends `inv` to the log; an older whole entry of the same key becomes a marker, and
    /// the oldest entries go past the log's bounds. `tk` is a key invalidation's
    /// tombstone-map key (hashed once, by `remember`).
    fn log_push(&mut self, inv: &Invalidation, tk: Option<u128>) {
        if let (InvalidationOp::Key { .. }, Some(tk)) = (&inv.op, tk) {
            let prev = self.log_latest.get(&tk).copied();
            let prev_at = prev
                .and_then(|p| p.checked_sub(self.log_first))
                .map(|i| i as usize);
            // The same key (not only the same hash: chosen keys can collide), and a version
            // no lower.
            let supersedes = match prev_at.and_then(|i| self.log.get(i)) {
                Some(Logged::Full(p)) => p.version <= inv.version && p.op == inv.op,
                Some(Logged::Superseded(_)) => false,
                None => prev.is_none(),
            };
            if supersedes {
                if let Some(i) = prev_at
                    && let Some(e) = self.log.get_mut(i)
                    && matches!(e, Logged::Full(_))
                {
                    *e = Logged::Superseded([tk as u64, (tk >> 64) as u64]);
                    self.log_whole -= 1;
                }
                self.log_latest.insert(tk, inv.seq);
            }
        }
        // Room first, so the log never grows past its bound (nor its buffer past it).
        let cap = self.cfg.log_capacity.max(1);
        while self.log_whole >= cap || self.log.len() >= cap.saturating_mul(8) {
            let Some(front) = self.log.pop_front() else {
                break;
            };
            if let Logged::Full(i) = front {
                self.log_whole -= 1;
                if let InvalidationOp::Key { namespace, key } = &i.op {
                    let tk = self.tomb_key(namespace, key);
                    if self.log_latest.get(&tk) == Some(&i.seq) {
                        self.log_latest.remove(&tk);
                    }
                }
            }
            self.log_first += 1;
        }
        self.log.push_back(Logged::Full(Box::new(inv.clone())));
        self.log_whole += 1;
    }

    /// This node's invalidations `from..=to` of its current life still in the log (for a
    /// peer's repair request), at most [`REPAIR_ITEMS`]. One superseded by a later
    /// invalidation of the same key is answered with that later one's version under its own
    /// sequence number: applying the newer removal covers the older.
    pub fn log_range(&self, generation: u64, from: u64, to: u64) -> Vec<Invalidation> {
        if generation != self.generation {
            return Vec::new();
        }
        let last = self.log_first + self.log.len() as u64;
        let (from, to) = (from.max(self.log_first), to.min(last.saturating_sub(1)));
        let mut out = Vec::new();
        for seq in (from..=to).take(REPAIR_ITEMS) {
            let whole = match &self.log[(seq - self.log_first) as usize] {
                Logged::Full(i) => Some(i.as_ref()),
                Logged::Superseded([lo, hi]) => {
                    let tk = u128::from(*lo) | (u128::from(*hi) << 64);
                    self.log_latest
                        .get(&tk)
                        .and_then(|l| l.checked_sub(self.log_first))
                        .and_then(|i| self.log.get(i as usize))
                        .and_then(|e| match e {
                            Logged::Full(i) => Some(i.as_ref()),
                            Logged::Superseded(_) => None,
                        })
                }
            };
            if let Some(i) = whole {
                out.push(Invalidation { seq, ..i.clone() });
            }
        }
        out
    }

    /// Records that a copy was just read from `origin` as of its sequence number `seq`
    /// (owners return their latest seq with every read): `origin` has made at least `seq`
    /// invalidations, so any of them this node has not applied is a gap to repair.
    ///
    /// A first contact through a read does *not* start at `seq`: the copy just read reflects
    /// those invalidations, but the node's *other* copies may not (found by the simulator,
    /// seed 507: a node skipped an origin's invalidation of a key it held because its first
    /// read from that origin, of another key, came after it). Like a first contact through
    /// an item, it repairs the origin's whole life.
    pub fn note_read(&mut self, origin: &str, generation: u64, seq: u64) {
        if origin == self.me {
            return;
        }
        let p = self
            .peers
            .entry((origin.to_owned(), generation))
            .or_default();
        p.known = p.known.max(seq);
    }

    /// A restarted node's starting point for `origin` (as `generation`): every invalidation
    /// up to `seq` is treated as applied, so no repair reaches back before it. Sound only
    /// when this node's copies are proven current some other way after every such
    /// invalidation took effect — what [`crate::warm`] does by checking them against their
    /// owners once `max_staleness` has passed. Later invalidations are applied (or repaired)
    /// as usual.
    pub fn baseline(
        &mut self,
        now_ms: u64,
        origin: &str,
        generation: u64,
        seq: u64,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        if origin == self.me {
            return out;
        }
        let key = (origin.to_owned(), generation);
        let p = self.heard_from(&key);
        p.applied = p.applied.max(seq);
        p.known = p.known.max(seq);
        let applied = p.applied;
        p.waiting.retain(|s, _| *s > applied);
        self.advance(&key, now_ms, &mut out);
        out
    }

    /// Bytes from the broadcast stream (or a repair answer, item by item).
    pub fn receive(&mut self, now_ms: u64, bytes: &[u8]) -> Vec<Output> {
        let Some(item) = Item::decode(bytes) else {
            self.stats.bad_items += 1;
            return Vec::new();
        };
        self.receive_item(now_ms, item)
    }

    /// An item already decoded.
    pub fn receive_item(&mut self, now_ms: u64, item: Item) -> Vec<Output> {
        let mut out = Vec::new();
        match item {
            Item::Invalidation(inv) => self.receive_invalidation(now_ms, inv, &mut out),
            Item::Batch(invs) => {
                for inv in invs {
                    self.receive_invalidation(now_ms, inv, &mut out);
                }
            }
            Item::Heartbeat {
                origin,
                generation,
                latest,
            } => {
                if origin == self.me {
                    return out;
                }
                let key = (origin, generation);
                let p = self.heard_from(&key);
                p.known = p.known.max(latest);
                self.advance(&key, now_ms, &mut out);
            }
        }
        out
    }

    fn receive_invalidation(&mut self, now_ms: u64, inv: Invalidation, out: &mut Vec<Output>) {
        if inv.origin == self.me {
            return;
        }
        let key = (inv.origin.clone(), inv.generation);
        // An origin heard of for the first time: its whole life so far is a gap to
        // repair. Its earlier invalidations may cover copies this node read from
        // *another* owner while views of the ring disagreed (found by the simulator).
        let p = self.heard_from(&key);
        p.known = p.known.max(inv.seq);
        if inv.seq <= p.applied || p.waiting.contains_key(&inv.seq) {
            self.stats.duplicates += 1;
            return;
        }
        p.waiting.insert(inv.seq, inv);
        self.advance(&key, now_ms, out);
    }

    /// Applies what is contiguous, and notes or clears the gap.
    fn advance(&mut self, key: &(String, u64), now_ms: u64, out: &mut Vec<Output>) {
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        let before = p.applied;
        let mut applied_now = Vec::new();
        while let Some(inv) = p.waiting.remove(&(p.applied + 1)) {
            p.applied += 1;
            applied_now.push(inv);
        }
        if p.applied > before {
            // Progress (a repair answered in part, say): what is still missing may be asked
            // for again; its deadline stays the one set when the gap was first noticed.
            p.asked = false;
        }
        #[cfg(feature = "fault-switches")]
        if self.faults.ignore_gaps && p.known > p.applied {
            // Broken on purpose: jump over the gap as if nothing were missing.
            let waiting = std::mem::take(&mut p.waiting);
            for (_, inv) in waiting {
                self.stats.applied += 1;
                out.push(Output::Apply(inv));
            }
            p.applied = p.known;
        }
        if p.known > p.applied {
            p.gap_since.get_or_insert(now_ms);
        } else {
            p.gap_since = None;
            p.asked = false;
        }
        for inv in applied_now {
            self.remember(&inv, now_ms);
            self.stats.applied += 1;
            out.push(Output::Apply(inv));
        }
    }

    /// Time passes: asks for gaps older than `repair_after_ms`, gives up on those older than
    /// `max_staleness_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        let mut out = Vec::new();
        self.expire_tombstones(now_ms);
        let mut late = Vec::new();
        self.retire(now_ms, &mut out);
        for ((origin, generation), p) in self.peers.iter_mut() {
            let Some(since) = p.gap_since else { continue };
            let age = now_ms.saturating_sub(since);
            if age >= self.cfg.max_staleness_ms {
                let lost = p.known - p.applied;
                // Whatever waits past the gap is applied too (the drop covers the gap).
                for (_, inv) in std::mem::take(&mut p.waiting) {
                    self.stats.applied += 1;
                    late.push(inv.clone());
                    out.push(Output::Apply(inv));
                }
                p.applied = p.known;
                p.gap_since = None;
                p.asked = false;
                self.stats.gaps_dropped += 1;
                out.push(Output::DropUnverified {
                    origin: origin.clone(),
                    lost,
                    life: *generation,
                    owned: false,
                });
            } else if age >= self.cfg.repair_after_ms && !p.asked && p.down.is_none() {
                // Asked once per stretch without progress; progress re-arms it.
                p.asked = true;
                self.stats.repairs_asked += 1;
                // The whole open range: items already waiting come back as duplicates,
                // which is cheaper than one request per hole.
                out.push(Output::Repair {
                    origin: origin.clone(),
                    generation: *generation,
                    from: p.applied + 1,
                    to: p.known,
                });
            }
        }
        for inv in late {
            self.remember(&inv, now_ms);
        }
        out
    }

    /// Whether this node can vouch for its copies now: no gap is open. (A node that cannot,
    /// stops serving copies it does not own that are older than `max_staleness`.)
    pub fn in_sync(&self) -> bool {
        self.peers.values().all(|p| p.gap_since.is_none())
    }

    /// Membership says `origin`'s life `generation` ended (declared down, or left). The
    /// invalidations it made just before may never reach this node, and they may cover
    /// copies read from *any* owner (views of the ring disagree during churn), so this node
    /// drops every copy it does not own (found by the simulator: a member that left right
    /// after an invalidation left a stale copy read from another owner).
    ///
    /// What this node knows of the origin's coherence lives up to `generation` (a process
    /// keeps the coherence life it started with while membership renews its identity) is
    /// kept, held down: if the process goes on and rejoins, only what it made meanwhile is a
    /// gap to repair. (Forgetting it made the rejoined member's whole history a gap — some
    /// 200,000 invalidations in a partition review — that could not be repaired, was given
    /// up, and restarted every witness's record: a rejoined member's proof then found no
    /// witness whose record reached back, and dropped a counter's last copy.) A `Down` of an
    /// identity older than one already seen up says nothing of the lives it holds.
    pub fn member_down(&mut self, now_ms: u64, origin: &str, generation: u64) -> Output {
        for ((_, g), p) in self.lives_mut(origin) {
            if *g <= generation && p.identity <= generation {
                p.down.get_or_insert(now_ms);
                p.back = false;
            }
        }
        // Every life of it: this drop covers what any ended unseen may have lost.
        for (_, p) in self.lives_mut(origin) {
            p.ended_unseen = false;
        }
        Output::DropUnverified {
            origin: origin.to_owned(),
            lost: 0,
            life: 0,
            owned: false,
        }
    }

    /// This node's view of the cluster now holds `members` of its `expected` members: a
    /// view without a majority means this node is cut off from the rest, which may move
    /// its keys to other owners (see [`Coherence::rejoined`]).
    ///
    /// A node starting alone (its view of one before it joins) is not cut off: only losing
    /// a majority it had counts.
    pub fn note_view(&mut self, members: usize, expected: usize) {
        if crate::primary::has_quorum(members, expected) {
            self.had_quorum = true;
        } else if self.had_quorum {
            self.cut_off = true;
        }
    }

    /// This node stalled (a pause longer than failure detection may take): the others may
    /// have moved its keys to other owners meanwhile (see [`Coherence::rejoined`]).
    pub fn note_stall(&mut self) {
        self.cut_off = true;
    }

    /// Membership says a member declared this node down and it came back under a new
    /// identity (`membership::Output::Rejoined`). If this node was cut off from the
    /// majority or stalled since it last rejoined ([`Coherence::note_view`],
    /// [`Coherence::note_stall`]), the majority took its keys to other owners: writes and
    /// deletes went to them, and the invalidations announcing them may never reach this
    /// node (their origin may have restarted since, its log gone). So it drops everything
    /// it holds, owned entries included, and reads what it owns from the owners that kept
    /// it (found by the simulator, seed 1910: a node paused past failure detection, back as
    /// an owner of a key deleted meanwhile by a member that then restarted, kept the deleted
    /// value for good). A node of the majority that a cut-off member declared down (it
    /// hears of it at the heal) keeps its owned entries: they are the ones that count.
    ///
    /// `lease_holds`: whether this node holds its primary's lease now (a majority answered
    /// its pings within the last second, `primary::Lease`) and held it through the last
    /// seconds (`Lease::held_through`). A node that did not was cut off too, even when its
    /// own view never lost a majority: a partition healed within
    /// about a probe period of the majority declaring it down leaves its view whole, and it
    /// kept the copies a removal made meanwhile had made dead, executing a script or
    /// transaction that only read one until coherence repaired it (an attack review
    /// reproduced it; the repair given up, for good).
    pub fn rejoined(&mut self, lease_holds: bool) -> Output {
        let owned = std::mem::take(&mut self.cut_off) || !lease_holds;
        Output::DropUnverified {
            origin: self.me.clone(),
            lost: 0,
            life: 0,
            owned,
        }
    }

    /// Membership says `origin` is up as `generation`: this node asks it for its latest
    /// sequence number at once ([`Output::AskLatest`]), so that a gap is repaired within a
    /// round trip or two rather than whenever a heartbeat or the periodic pull gets there.
    ///
    /// If an older identity of it was live here, that identity ended unseen — a restart
    /// faster than the failure detector, or a rejoin this node never saw go down. The
    /// coherence lives this node knows of it are kept, held down until the origin speaks:
    /// a rejoined process goes on with its life, whose next word resumes it, and its gap
    /// (what it made while away) is repaired; a restarted one speaks as a newer life,
    /// which retires the older ones ([`Coherence::tick`]) — and only then, for a life that
    /// ended unseen, are the copies its last invalidations may have covered dropped, as
    /// at a [`Coherence::member_down`]. The answer to the question asked here is such a
    /// word. (Dropping them at the `Up` removed a stand-in owner's copies of keys the ring
    /// had just given back to their owner before the ring change's hand-off read them:
    /// when the key's other owner was cut off next, the returning primary executed `INCR`
    /// from no copy — a partition review, `s6_flap-090027`, a counter restarted after
    /// 19,094 acknowledged increments. A renewed identity loses no invalidation: its life
    /// goes on, numbered.)
    pub fn member_up(&mut self, now_ms: u64, origin: &str, generation: u64) -> Vec<Output> {
        if origin == self.me {
            return Vec::new();
        }
        for ((_, g), p) in self.lives_mut(origin) {
            if *g < generation && p.identity < generation {
                // Not held down, or up again since it was and not heard from since: it
                // may have made what this node never heard of (a life held down and
                // back was live under its renewed identity; attack review helper-110).
                p.ended_unseen |= p.down.is_none() || p.back;
                p.down.get_or_insert(now_ms);
            }
            // A late `Up` of an identity older than one seen up says nothing of it: it
            // does not open a held-down life to a late word (a relayed heartbeat of a
            // process that restarted since would resume it; attack review helper-111).
            if generation >= p.identity {
                p.back = p.down.is_some();
            }
            p.identity = p.identity.max(generation);
        }
        vec![Output::AskLatest {
            origin: origin.to_owned(),
        }]
    }

    /// The state of life `key`, new if unknown; a life held down whose origin is up again
    /// resumes at this word of it (a gap noticed while it was down keeps its deadline).
    fn heard_from(&mut self, key: &(String, u64)) -> &mut Peer {
        let p = self.peers.entry(key.clone()).or_default();
        if p.back {
            p.down = None;
            p.back = false;
            p.asked = false;
        }
        p
    }

    /// What this node knows of `origin`'s coherence lives, oldest first.
    fn lives_mut<'a>(
        &'a mut self,
        origin: &'a str,
    ) -> impl Iterator<Item = (&'a (String, u64), &'a mut Peer)> + 'a {
        self.peers
            .range_mut((origin.to_owned(), 0)..=(origin.to_owned(), u64::MAX))
    }

    /// Forgets the lives held down that ended for good: those a newer life of the same
    /// origin superseded (a restart), and, past [`DOWN_LIVES_KEPT`] lives held down, the
    /// longest down (members that left). A gap still open in one is given up as lost.
    /// Lives not held down are never retired: two processes given one name, or a restart
    /// whose clock stepped back, keep both lives tracked. (Retiring a life after
    /// `tombstone_ms` instead brought back, for a cut longer than that, the whole history
    /// taken for a gap at the member's return: an attack review, helper-101.)
    fn retire(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let mut retired: Vec<(String, u64)> = Vec::new();
        let mut down: Vec<(u64, (String, u64))> = Vec::new();
        // Lives that ended unseen and were resumed since, now that a newer life of their
        // origin speaks: not retired (not held down), but their copies go once.
        let mut ended: Vec<(String, u64)> = Vec::new();
        let mut it = self.peers.iter().peekable();
        while let Some(((o, g), p)) = it.next() {
            let newer = it.peek().is_some_and(|((next, _), _)| next == o);
            let Some(since) = p.down else {
                if newer && p.ended_unseen {
                    ended.push((o.clone(), *g));
                }
                continue;
            };
            if newer {
                retired.push((o.clone(), *g));
            } else {
                down.push((since, (o.clone(), *g)));
            }
        }
        for key in ended {
            if let Some(p) = self.peers.get_mut(&key) {
                p.ended_unseen = false;
            }
            out.push(Output::DropUnverified {
                origin: key.0,
                lost: 0,
                life: key.1,
                owned: false,
            });
        }
        if down.len() > DOWN_LIVES_KEPT {
            down.sort_unstable();
            let extra = down.len() - DOWN_LIVES_KEPT;
            retired.extend(down.into_iter().take(extra).map(|(_, k)| k));
        }
        for key in retired {
            let Some(p) = self.peers.remove(&key) else {
                continue;
            };
            if p.known > p.applied {
                self.stats.gaps_dropped += 1;
                let lost = p.known - p.applied;
                for (_, inv) in p.waiting {
                    self.stats.applied += 1;
                    self.remember(&inv, now_ms);
                    out.push(Output::Apply(inv));
                }
                out.push(Output::DropUnverified {
                    origin: key.0,
                    lost,
                    life: key.1,
                    owned: false,
                });
            } else if p.ended_unseen {
                // Ended unseen and never resumed: what it made last may never have
                // reached this node, as at a `Down` ([`Coherence::member_up`]).
                out.push(Output::DropUnverified {
                    origin: key.0,
                    lost: 0,
                    life: key.1,
                    owned: false,
                });
            }
        }
    }

    /// Whom the periodic anti-entropy pull asks for its latest sequence number, among the
    /// live members `others` (this node excluded): each in turn, so that a gap gossip never
    /// announced is noticed within `others.len()` pulls (a random pick, as before, left one
    /// member unasked for 2.5 s in one run of fifty).
    pub fn pull_target<'a>(&mut self, others: &'a [String]) -> Option<&'a str> {
        if others.is_empty() {
            return None;
        }
        self.pulls = self.pulls.wrapping_add(1);
        Some(others[(self.pulls % others.len() as u64) as usize].as_str())
    }

    /// What this node knows of `origin`'s lives, for diagnostics: (generation, highest
    /// sequence number applied or covered, highest known to exist, items waiting).
    pub fn peer_state(&self, origin: &str) -> Vec<(u64, u64, u64, usize)> {
        self.peers
            .iter()
            .filter(|((o, _), _)| o == origin)
            .map(|((_, g), p)| (*g, p.applied, p.known, p.waiting.len()))
            .collect()
    }

    /// This node's latest sequence number (owners send it with every read, for
    /// [`Coherence::note_read`]).
    pub fn latest_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// This node's coherence life: the generation its process started with, which its
    /// invalidations carry (membership renews its identity at a rejoin; this stays).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_baseline_skips_the_history_before_it_and_repairs_after() {
        let mut a = Coherence::new("a", 1, CoherenceConfig::default());
        let mut b = Coherence::new("b", 7, CoherenceConfig::default());
        let mut items = Vec::new();
        for i in 0..10 {
            if let (_, Output::Broadcast(bytes)) = b.originate(0, i + 1, key_op("k")) {
                items.push(bytes);
            }
        }
        // `a` takes b's state at seq 6 as its baseline, then hears item 8 (7 was lost).
        assert!(a.baseline(0, "b", 7, 6).is_empty());
        assert!(a.in_sync());
        let out = a.receive(0, &items[7]);
        assert!(out.is_empty(), "8 waits for 7");
        assert!(!a.in_sync());
        let out = a.tick(200);
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Repair { from: 7, .. })),
            "only 7 is repaired, not 1..=6: {out:?}"
        );
        let out = a.receive(300, &items[6]);
        assert_eq!(out.len(), 2, "7 and 8 apply: {out:?}");
        assert!(a.in_sync());
    }

    fn key_op(k: &str) -> InvalidationOp {
        InvalidationOp::Key {
            namespace: "ns".into(),
            key: k.as_bytes().to_vec(),
        }
    }

    fn bytes(o: &Output) -> &[u8] {
        match o {
            Output::Broadcast(b) => b,
            other => panic!("not a broadcast: {other:?}"),
        }
    }

    fn applied(out: &[Output]) -> Vec<u64> {
        out.iter()
            .filter_map(|o| match o {
                Output::Apply(i) => Some(i.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn in_order_items_apply_and_duplicates_do_not() {
        let mut a = Coherence::new("a", 1, CoherenceConfig::default());
        let mut b = Coherence::new("b", 1, CoherenceConfig::default());
        let (_, o1) = a.originate(0, 10, key_op("k1"));
        let (_, o2) = a.originate(0, 11, key_op("k2"));
        assert_eq!(applied(&b.receive(0, bytes(&o1))), [1]);
        assert_eq!(applied(&b.receive(0, bytes(&o2))), [2]);
        assert!(b.receive(0, bytes(&o2)).is_empty());
        assert_eq!(b.stats().duplicates, 1);
        assert!(b.in_sync());
        // A node ignores its own items.
        assert!(a.receive(0, bytes(&o1)).is_empty());
    }

    #[test]
    fn batches_fit_the_bound_keep_order_and_apply_like_single_items() {
        let mut a = Coherence::new("a", 1, CoherenceConfig::default());
        let mut b = Coherence::new("b", 1, CoherenceConfig::default());
        b.note_read("a", 1, 0);
        let invs: Vec<Invalidation> = (0..100)
            .map(|i| a.originate(0, 10 + i, key_op(&format!("key-{i}"))).0)
            .collect();
        let items = Item::batches(&invs);
        assert!(items.len() > 1 && items.len() < 50, "{} items", items.len());
        assert!(items.iter().all(|i| i.len() <= MAX_BATCH_BYTES));
        let mut seqs = Vec::new();
        for item in &items {
            seqs.extend(applied(&b.receive(0, item)));
        }
        assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
        assert!(b.in_sync());
        // A batch seen again is all duplicates.
        assert!(applied(&b.receive(0, &items[0])).is_empty());
        // One invalidation too large for a batch is an item of its own.
        let big = a.originate(0, 200, key_op(&"x".repeat(2000))).0;
        let alone = Item::batches(std::slice::from_ref(&big));
        assert_eq!(alone.len(), 1);
        assert_eq!(Item::decode(&alone[0]), Some(Item::Invalidation(big)));
        // A batch decoding as garbage is counted, not applied.
        let mut bad = items[0].clone();
        bad.truncate(bad.len() / 2);
        assert!(b.receive(0, &bad).is_empty());
        assert_eq!(b.stats().bad_items, 1);
    }

    /// Origin `a` and receiver `b` (generation 1 both), `b` in contact with `a` from its
    /// first sequence number.
    /// What a drop of the copies life `life` of origin `a` may have covered reads as.
    fn dropped_life(life: u64) -> Output {
        Output::DropUnverified {
            origin: "a".into(),
            lost: 0,
            life,
            owned: false,
        }
    }

    fn origin_and_receiver(cfg: CoherenceConfig) -> (Coherence, Coherence) {
        let a = Coherence::new("a", 1, cfg);
        let mut b = Coherence::new("b", 1, cfg);
        b.note_read("a", 1, 0);
        (a, b)
    }

    #[test]
    fn tombstones_refuse_older_copies_until_they_expire() {
        let (mut a, mut b) = origin_and_receiver(CoherenceConfig {
            tombstone_ms: 1_000,
            ..CoherenceConfig::default()
        });
        let (_, o) = a.originate(0, 50, key_op("k"));
        b.receive(0, bytes(&o));
        assert!(!b.admits("ns", b"k", 49));
        assert!(b.admits("ns", b"k", 50));
        assert!(b.admits("ns", b"other", 1));
        // Refreshed at 600 by a newer invalidation: still there at 1500, gone at 1600.
        let (_, o) = a.originate(600, 60, key_op("k"));
        b.receive(600, bytes(&o));
        b.tick(1_500);
        assert!(!b.admits("ns", b"k", 59));
        b.tick(1_600);
        assert!(b.admits("ns", b"k", 1));
    }

    /// A strict `Apply` that arrives ahead of its origin's earlier items (a gap) refuses
    /// what it covers at once, before its removals run, and whatever becomes of the gap;
    /// the sequence bookkeeping is not moved by it.
    #[test]
    fn an_invalidation_noted_out_of_order_refuses_at_once_and_leaves_sequences_alone() {
        let (mut a, mut b) = origin_and_receiver(CoherenceConfig::default());
        let key = |k: &[u8]| InvalidationOp::Key {
            namespace: "ns".into(),
            key: k.to_vec(),
        };
        let (first, _) = a.originate(0, 50, key(b"k"));
        let (second, _) = a.originate(
            0,
            100,
            InvalidationOp::Pattern {
                namespace: "ns".into(),
                pattern: b"user:*".to_vec(),
            },
        );
        assert!(b.admits("ns", b"user:1", 99));
        b.note_invalidation(&second, 0);
        assert!(!b.admits("ns", b"user:1", 99), "refused once noted");
        assert!(b.admits("ns", b"user:1", 100));
        // The gap before it is still a gap: the item is applied once it is filled.
        let out = b.receive_item(0, Item::Invalidation(second.clone()));
        assert!(
            out.iter().all(|o| !matches!(o, Output::Apply(_))),
            "{out:?}"
        );
        let out = b.receive_item(0, Item::Invalidation(first));
        let applied = out.iter().filter(|o| matches!(o, Output::Apply(_))).count();
        assert_eq!(applied, 2, "{out:?}");
        assert!(b.has_applied(&second));
        // Noted and applied, it is remembered once.
        assert_eq!(b.wide.len(), 1);
    }

    #[test]
    fn pattern_tag_and_flush_invalidations_refuse_older_copies_they_cover() {
        let (mut a, mut b) = origin_and_receiver(CoherenceConfig {
            tombstone_ms: 1_000,
            ..CoherenceConfig::default()
        });
        let ops = [
            InvalidationOp::Pattern {
                namespace: "ns".into(),
                pattern: b"user:*".to_vec(),
            },
            InvalidationOp::Tag {
                namespace: "ns".into(),
                tag: b"t1".to_vec(),
            },
            InvalidationOp::Flush {
                namespace: "other".into(),
            },
        ];
        for (i, op) in ops.into_iter().enumerate() {
            let (_, o) = a.originate(0, 100 + i as u64, op);
            b.receive(0, bytes(&o));
        }
        // The pattern: matching keys older than it are refused, others and newer ones not.
        assert!(!b.admits("ns", b"user:1", 99));
        assert!(b.admits("ns", b"user:1", 100));
        assert!(b.admits("ns", b"order:1", 1));
        assert!(b.admits("ns2", b"user:1", 1));
        // The tag: only entries carrying it.
        assert!(!b.admits_tagged("ns", b"order:1", 100, &[b"t0", b"t1"]));
        assert!(b.admits_tagged("ns", b"order:1", 100, &[b"t0"]));
        assert!(b.admits_tagged("ns", b"order:1", 101, &[b"t1"]));
        // The flush: every key of its namespace.
        assert!(!b.admits("other", b"anything", 101));
        assert!(b.admits("other", b"anything", 102));
        // The newest invalidation covering a refused copy: the floor its writer restamps above.
        b.note_removed("ns", b"user:1", 150, 0);
        assert_eq!(b.superseded_by("ns", b"user:1", 99, &[]), Some(150));
        assert_eq!(b.superseded_by("ns", b"user:1", 150, &[]), None);
        assert_eq!(b.superseded_by("ns", b"order:1", 99, &[b"t1"]), Some(101));
        assert_eq!(b.superseded_by("ns", b"order:1", 99, &[b"t0"]), None);
        assert_eq!(b.superseded_by("other", b"user:1", 1, &[b"t1"]), Some(102));
        // All forgotten after tombstone_ms.
        b.tick(1_000);
        assert!(b.admits("ns", b"user:1", 1));
        assert!(b.admits("other", b"anything", 1));
    }

    #[test]
    fn a_gap_is_repaired_from_the_origin_log() {
        let (mut a, mut b) = origin_and_receiver(CoherenceConfig::default());
        let items: Vec<Output> = (0..3)
            .map(|i| a.originate(0, 10 + i, key_op("k")).1)
            .collect();
        // Item 2 is lost.
        assert_eq!(applied(&b.receive(0, bytes(&items[0]))), [1]);
        assert!(
            applied(&b.receive(5, bytes(&items[2]))).is_empty(),
            "3 waits for 2"
        );
        assert!(!b.in_sync());
        assert!(b.tick(50).is_empty(), "too early to ask");
        let ask = b.tick(105);
        assert_eq!(
            ask,
            [Output::Repair {
                origin: "a".into(),
                generation: 1,
                from: 2,
                to: 3
            }]
        );
        assert!(b.tick(150).is_empty(), "asked once");
        let answer = a.log_range(1, 2, 3);
        let mut got = Vec::new();
        for inv in answer {
            got.extend(applied(&b.receive_item(160, Item::Invalidation(inv))));
        }
        assert_eq!(got, [2, 3]);
        assert!(b.in_sync());
    }

    #[test]
    fn a_lost_tail_is_noticed_by_the_heartbeat_and_dropped_when_unrepairable() {
        let (mut a, mut b) = origin_and_receiver(CoherenceConfig::default());
        let _lost = a.originate(0, 10, key_op("k"));
        assert!(b.receive(0, bytes(&a.heartbeat())).is_empty());
        assert!(!b.in_sync(), "the heartbeat revealed seq 1");
        assert!(matches!(
            b.tick(100)[..],
            [Output::Repair { from: 1, to: 1, .. }]
        ));
        // The origin cannot answer (crashed); past max_staleness the gap is dropped.
        let out = b.tick(1000);
        assert_eq!(
            out,
            [Output::DropUnverified {
                origin: "a".into(),
                lost: 1,
                life: 1,
                owned: false,
            }]
        );
        assert!(b.in_sync());
        assert_eq!(b.stats().gaps_dropped, 1);
    }

    #[test]
    fn a_new_life_starts_its_own_sequence() {
        let cfg = CoherenceConfig::default();
        let mut b = Coherence::new("b", 1, cfg);
        let mut a1 = Coherence::new("a", 1, cfg);
        for _ in 0..3 {
            let (_, o) = a1.originate(0, 1, key_op("k"));
            b.receive(0, bytes(&o));
        }
        let mut a2 = Coherence::new("a", 2, cfg);
        let (_, o) = a2.originate(0, 5, key_op("k"));
        assert_eq!(applied(&b.receive(0, bytes(&o))), [1]);
        assert!(b.in_sync());
        assert!(
            a2.log_range(1, 1, 3).is_empty(),
            "no answers about an old life"
        );
        // Both lives stay tracked until membership ends the old one (two processes given
        // one name both speak); then the newer one retires it at the next tick, and the
        // copies the old one's last invalidations may have covered go then (it ended
        // unseen: no `Down` dropped them).
        assert!(b.tick(10).is_empty());
        assert_eq!(b.peer_state("a").len(), 2);
        assert!(matches!(
            b.member_up(20, "a", 2)[..],
            [Output::AskLatest { .. }]
        ));
        assert_eq!(
            b.tick(30),
            [Output::DropUnverified {
                origin: "a".into(),
                lost: 0,
                life: 1,
                owned: false,
            }]
        );
        assert_eq!(b.peer_state("a"), [(2, 1, 1, 0)]);
    }

    /// A member that comes back is asked for its latest sequence number at once. An `Up`
    /// of a newer identity ends the older one unseen, and drops nothing yet: the life's
    /// next word says whether the process goes on (nothing lost: its gap is repaired) or
    /// restarted (its copies go when the newer life retires it:
    /// `a_life_that_ended_unseen_drops_its_copies_when_a_newer_one_retires_it`).
    #[test]
    fn a_member_that_comes_up_is_asked_at_once() {
        let cfg = CoherenceConfig::default();
        let mut b = Coherence::new("b", 1, cfg);
        let ask = Output::AskLatest { origin: "a".into() };
        assert_eq!(b.member_up(0, "a", 1), std::slice::from_ref(&ask));
        assert!(b.member_up(0, "b", 1).is_empty(), "never itself");
        let mut a = Coherence::new("a", 1, cfg);
        let (_, o) = a.originate(0, 1, key_op("k"));
        b.receive(0, bytes(&o));
        assert_eq!(b.member_up(0, "a", 2), std::slice::from_ref(&ask));
        // foca reports a renewed identity up twice (renamed, then up): the second ends
        // nothing either.
        assert_eq!(b.member_up(0, "a", 2), std::slice::from_ref(&ask));
        // A `Down` of an identity older than one seen up holds nothing down.
        b.member_down(0, "a", 1);
        if let Output::Broadcast(hb) = a.heartbeat() {
            b.receive(0, &hb);
        }
        a.originate(0, 2, key_op("k"));
        if let Output::Broadcast(hb) = a.heartbeat() {
            b.receive(0, &hb);
        }
        assert!(matches!(
            b.tick(cfg.repair_after_ms)[..],
            [Output::Repair { from: 2, to: 2, .. }]
        ));
        // The same process went on: once its gap is repaired, no drop, ever, for the
        // identity that ended unseen.
        for inv in a.log_range(1, 2, 2) {
            b.receive_item(cfg.repair_after_ms + 10, Item::Invalidation(inv));
        }
        assert!(b.in_sync());
        assert!(
            b.tick(cfg.repair_after_ms + cfg.max_staleness_ms * 10)
                .is_empty()
        );
    }

    /// A process restarted faster than failure detection: the `Up` of its new identity
    /// ends the old one unseen, and its new life's first word retires the old life at the
    /// next tick, dropping the copies the old life's last invalidations may have covered
    /// (none of which this node may ever have heard of).
    #[test]
    fn a_life_that_ended_unseen_drops_its_copies_when_a_newer_one_retires_it() {
        let cfg = CoherenceConfig::default();
        let (mut a1, mut b) = origin_and_receiver(cfg);
        let (_, o) = a1.originate(0, 1, key_op("k"));
        b.receive(0, bytes(&o));
        assert_eq!(
            b.member_up(5_000, "a", 5_000),
            [Output::AskLatest { origin: "a".into() }]
        );
        assert!(b.tick(5_010).is_empty(), "nothing before a word of it");
        b.receive(5_020, bytes(&Coherence::new("a", 5_000, cfg).heartbeat()));
        assert_eq!(b.tick(5_030), [dropped_life(1)]);
        assert_eq!(b.peer_state("a"), [(5_000, 0, 0, 0)]);
        assert!(b.tick(5_040).is_empty(), "dropped once");

        // A late word of the old life (a relayed heartbeat) after the `Up` resumes it; the
        // new life's word still drops its copies, once (attack review helper-109).
        let (mut a1, mut c) = origin_and_receiver(cfg);
        let (_, o) = a1.originate(0, 1, key_op("k"));
        c.receive(0, bytes(&o));
        c.member_up(5_000, "a", 5_000);
        c.receive(5_010, bytes(&a1.heartbeat()));
        assert!(c.tick(5_020).is_empty(), "only the old life spoke");
        c.receive(5_030, bytes(&Coherence::new("a", 5_000, cfg).heartbeat()));
        assert_eq!(c.tick(5_040), [dropped_life(1)]);
        assert!(c.tick(5_050).is_empty(), "dropped once");
        // Declared down (its copies go), back under a renewed identity and not heard from
        // since, then restarted: the renewed identity's `Up` left the life held down, and
        // what it made while back (a `DEL` this node missed) is covered by the drop when
        // the new life speaks (attack review helper-110: nothing dropped then, and the
        // retired life's gap, never announced here, was no gap).
        let (mut a1, mut f) = origin_and_receiver(cfg);
        let (_, o) = a1.originate(0, 1, key_op("k"));
        f.receive(0, bytes(&o));
        f.member_down(1_000, "a", 1);
        f.member_up(2_000, "a", 2);
        a1.originate(2_100, 2, key_op("k"));
        f.member_up(5_000, "a", 5_000);
        f.receive(5_020, bytes(&Coherence::new("a", 5_000, cfg).heartbeat()));
        assert_eq!(f.tick(5_030), [dropped_life(1)]);
        // The restarted process is declared down in turn, then a late `Up` of an older
        // identity arrives and a late word of the dead life (a relayed heartbeat): the
        // life stays held down (a stale `Up` does not open it to a word; attack review
        // helper-111), so the next restart's word retires it.
        let a2 = Coherence::new("a", 5_000, cfg);
        // foca reports the restarted identity up a second time: now known to its life.
        f.member_up(5_050, "a", 5_000);
        assert!(matches!(
            f.member_down(5_100, "a", 5_000),
            Output::DropUnverified { .. }
        ));
        f.member_up(5_110, "a", 2);
        f.receive(5_120, bytes(&a2.heartbeat()));
        f.receive(9_010, bytes(&Coherence::new("a", 9_000, cfg).heartbeat()));
        f.tick(9_020);
        assert_eq!(f.peer_state("a"), [(9_000, 0, 0, 0)]);
        // A `Down` drops at once, and nothing more when a newer life speaks after it.
        let (mut a1, mut d) = origin_and_receiver(cfg);
        let (_, o) = a1.originate(0, 1, key_op("k"));
        d.receive(0, bytes(&o));
        d.member_up(5_000, "a", 5_000);
        assert!(matches!(
            d.member_down(5_010, "a", 5_000),
            Output::DropUnverified { lost: 0, .. }
        ));
        d.receive(9_010, bytes(&Coherence::new("a", 9_000, cfg).heartbeat()));
        assert!(d.tick(9_020).is_empty(), "already dropped at the Down");
    }

    /// A hot key's invalidations keep the log reaching back far: the superseded ones are
    /// markers, answered with the key's newest, and a receiver that missed 200,000 of them
    /// is repaired in answers of at most `REPAIR_ITEMS`. The log stays within its bounds.
    #[test]
    fn a_hot_keys_history_is_repaired_past_the_log_of_whole_items() {
        let cfg = CoherenceConfig::default();
        let (mut a, mut b) = origin_and_receiver(cfg);
        let n = 200_000u64;
        for v in 1..=n {
            a.originate(0, v, key_op("hot"));
            if v % 1_000 == 0 {
                a.originate(0, v, key_op(&format!("k{v}")));
            }
        }
        let latest = a.latest_seq();
        assert!(a.log_whole <= cfg.log_capacity && a.log.len() <= cfg.log_capacity * 8);
        let first = a.log_range(1, 1, 1);
        assert_eq!(first.len(), 1);
        assert_eq!(
            (first[0].seq, first[0].version),
            (1, n),
            "answered with the newest"
        );
        if let Output::Broadcast(hb) = a.heartbeat() {
            b.receive(0, &hb);
        }
        let mut t = 0;
        let mut answers = 0;
        while !b.in_sync() {
            t += cfg.repair_after_ms;
            let asks: Vec<_> = b
                .tick(t)
                .into_iter()
                .filter_map(|o| match o {
                    Output::Repair { from, to, .. } => Some((from, to)),
                    _ => None,
                })
                .collect();
            // As the node asks: the rest of the range at once, while answers bring some.
            for (mut from, to) in asks {
                while from <= to {
                    let answer = a.log_range(1, from, to);
                    assert!(answer.len() <= REPAIR_ITEMS);
                    answers += 1;
                    let Some(last) = answer.last().map(|i| i.seq) else {
                        break;
                    };
                    for inv in answer {
                        b.receive_item(t, Item::Invalidation(inv));
                    }
                    from = last + 1;
                }
            }
            assert!(t < cfg.max_staleness_ms, "not repaired in time");
        }
        assert_eq!(b.stats().gaps_dropped, 0);
        assert!(answers >= latest as usize / REPAIR_ITEMS);
        assert!(!b.admits("ns", b"hot", n - 1));
        assert!(!b.admits("ns", b"k1000", 999));
        // Whole items of distinct keys are still bounded by `log_capacity`.
        let mut c = Coherence::new("c", 1, cfg);
        for v in 1..=(cfg.log_capacity as u64 + 10) {
            c.originate(0, v, key_op(&format!("d{v}")));
        }
        assert!(c.log_range(1, 1, 10).is_empty(), "the oldest went");
        assert_eq!(c.log_range(1, 11, 11).len(), 1);
    }

    /// A member declared down while its process goes on (a cut longer than failure
    /// detection) rejoins under a renewed identity and the same coherence life: what this
    /// node knew of that life is kept, and only what the member made while away is a gap
    /// to repair.
    #[test]
    fn a_member_declared_down_and_back_keeps_its_life_and_repairs_only_what_it_missed() {
        let cfg = CoherenceConfig::default();
        let (mut a, mut b) = origin_and_receiver(cfg);
        for v in 1..=3 {
            let (_, o) = a.originate(0, v, key_op("k"));
            b.receive(0, bytes(&o));
        }
        // Declared down (membership generation 1 = its coherence life's): its copies go.
        assert!(matches!(
            b.member_down(0, "a", 1),
            Output::DropUnverified { lost: 0, .. }
        ));
        // Cut off, it goes on writing; nothing of it gets through.
        for v in 4..=5 {
            a.originate(100, v, key_op("k"));
        }
        assert!(b.tick(100 + cfg.max_staleness_ms * 10).is_empty());
        // Back as generation 2 (renewed identity, same process): asked at once, nothing
        // dropped (it was seen going down); its answer resumes the life, and only 4..=5
        // are repaired.
        let t = 20_000;
        assert_eq!(
            b.member_up(t, "a", 2),
            [Output::AskLatest { origin: "a".into() }]
        );
        if let Output::Broadcast(hb) = a.heartbeat() {
            b.receive(t, &hb);
        }
        assert!(!b.in_sync());
        assert_eq!(
            b.tick(t + cfg.repair_after_ms),
            [Output::Repair {
                origin: "a".into(),
                generation: 1,
                from: 4,
                to: 5
            }]
        );
        let mut seqs = Vec::new();
        for inv in a.log_range(1, 4, 5) {
            seqs.extend(applied(&b.receive_item(t + 200, Item::Invalidation(inv))));
        }
        assert_eq!(seqs, [4, 5]);
        assert!(b.in_sync());
        assert!(b.tick(t + cfg.max_staleness_ms * 2).is_empty());
        assert_eq!(b.stats().gaps_dropped, 0);
    }

    /// A gap noticed while its origin is held down (a heartbeat relayed through another
    /// member) is not asked for — the origin is out of the view — but is given up within
    /// `max_staleness_ms` all the same (G2), as what it is: two invalidations, not the
    /// origin's history.
    #[test]
    fn a_gap_of_a_member_held_down_still_runs_to_its_deadline() {
        let cfg = CoherenceConfig::default();
        let (mut a, mut b) = origin_and_receiver(cfg);
        for v in 1..=3 {
            let (_, o) = a.originate(0, v, key_op("k"));
            b.receive(0, bytes(&o));
        }
        b.member_down(0, "a", 1);
        a.originate(100, 4, key_op("k"));
        let (_, five) = a.originate(100, 5, key_op("k"));
        if let Output::Broadcast(hb) = a.heartbeat() {
            b.receive(100, &hb);
        }
        assert!(applied(&b.receive(100, bytes(&five))).is_empty(), "waits");
        assert!(!b.in_sync());
        assert!(
            b.tick(100 + cfg.repair_after_ms).is_empty(),
            "nothing asked of a member out of the view"
        );
        let out = b.tick(100 + cfg.max_staleness_ms);
        assert_eq!(applied(&out), [5]);
        assert!(out.contains(&Output::DropUnverified {
            origin: "a".into(),
            lost: 2,
            life: 1,
            owned: false,
        }));
        assert!(b.in_sync());
    }

    /// A member that restarted (a newer coherence life) while this node held its old life
    /// down: the old life is retired without a second drop; a gap still open in it is
    /// given up as lost. Lives held down past `DOWN_LIVES_KEPT` go, the longest down first
    /// (members that left for good).
    #[test]
    fn held_down_lives_are_retired_by_a_newer_life_or_in_time() {
        let cfg = CoherenceConfig::default();
        let (mut a1, mut b) = origin_and_receiver(cfg);
        let (_, o) = a1.originate(0, 1, key_op("k"));
        b.receive(0, bytes(&o));
        b.member_down(0, "a", 1);
        // The restarted process: membership and coherence generation 7000.
        let a2 = Coherence::new("a", 7_000, cfg);
        assert_eq!(
            b.member_up(7_000, "a", 7_000),
            [Output::AskLatest { origin: "a".into() }]
        );
        if let Output::Broadcast(hb) = a2.heartbeat() {
            b.receive(7_010, &hb);
        }
        assert!(b.tick(7_020).is_empty(), "already dropped at its down");
        assert_eq!(b.peer_state("a"), [(7_000, 0, 0, 0)]);
        assert_eq!(b.stats().gaps_dropped, 0);
        // With a gap open when it is retired, the gap is given up as lost.
        let mut d = Coherence::new("d", 1, cfg);
        let mut x = Coherence::new("a", 1, cfg);
        for v in 1..=2 {
            x.originate(0, v, key_op("k"));
        }
        if let Output::Broadcast(hb) = x.heartbeat() {
            d.receive(0, &hb);
        }
        d.member_down(0, "a", 1);
        if let Output::Broadcast(hb) = Coherence::new("a", 9, cfg).heartbeat() {
            d.receive(10, &hb);
        }
        assert!(d.tick(20).contains(&Output::DropUnverified {
            origin: "a".into(),
            lost: 2,
            life: 1,
            owned: false,
        }));
        assert_eq!(d.peer_state("a"), [(9, 0, 0, 0)]);
        // Held down however long without a word (a cut of minutes keeps what is known)...
        d.member_down(30, "a", 9);
        assert!(d.tick(30 + cfg.tombstone_ms * 10).is_empty());
        assert_eq!(d.peer_state("a").len(), 1);
        // ... until more than `DOWN_LIVES_KEPT` lives are held down: the longest down goes.
        for i in 0..DOWN_LIVES_KEPT as u64 {
            let name = format!("m{i}");
            d.note_read(&name, 1, 0);
            d.member_down(40 + i, &name, 1);
        }
        d.tick(2 * cfg.tombstone_ms * 10);
        assert!(d.peer_state("a").is_empty());
        assert_eq!(d.peer_state("m0").len(), 1);
    }

    /// Back under a new identity, a node drops its owned entries only if it was cut off
    /// from the majority (or stalled) meanwhile: the majority's members keep theirs.
    #[test]
    fn only_a_node_that_was_cut_off_drops_what_it_owns_at_rejoin() {
        let mut b = Coherence::new("b", 1, CoherenceConfig::default());
        let owned = |o: Output| matches!(o, Output::DropUnverified { owned: true, .. });
        b.note_view(1, 3);
        assert!(!owned(b.rejoined(true)), "alone at start is not cut off");
        b.note_view(2, 3);
        assert!(
            !owned(b.rejoined(true)),
            "a majority member declared down by a minority"
        );
        b.note_view(1, 3);
        b.note_view(3, 3);
        assert!(owned(b.rejoined(true)), "it was on the minority side");
        assert!(!owned(b.rejoined(true)), "once per absence");
        b.note_stall();
        assert!(owned(b.rejoined(true)), "paused past failure detection");
        b.note_view(1, 2);
        assert!(
            !owned(b.rejoined(true)),
            "two members have no majority to lose"
        );
        // Its view whole, but no majority answered its pings: cut off all the same.
        b.note_view(3, 3);
        assert!(
            owned(b.rejoined(false)),
            "a node without its lease was cut off"
        );
        assert!(!owned(b.rejoined(true)), "a node with it was not");
    }

    /// The periodic pull asks every member in turn: none waits more than one round.
    #[test]
    fn the_pull_takes_every_member_in_turn() {
        let mut b = Coherence::new("b", 1, CoherenceConfig::default());
        assert_eq!(b.pull_target(&[]), None);
        let others = ["a".to_owned(), "c".to_owned(), "d".to_owned()];
        let mut seen: Vec<&str> = (0..3).filter_map(|_| b.pull_target(&others)).collect();
        seen.sort_unstable();
        assert_eq!(seen, ["a", "c", "d"]);
    }

    #[test]
    fn garbage_is_counted() {
        let mut b = Coherence::new("b", 1, CoherenceConfig::default());
        assert!(b.receive(0, b"\x02junk").is_empty());
        assert!(b.receive(0, &[]).is_empty());
        assert_eq!(b.stats().bad_items, 2);
    }

    /// The switch that breaks gap handling really breaks it: a lost invalidation is then
    /// neither applied nor covered by a drop (what the property below would catch).
    #[cfg(feature = "fault-switches")]
    #[test]
    fn ignoring_gaps_misses_invalidations_silently() {
        let cfg = CoherenceConfig::default();
        let mut a = Coherence::new("a", 1, cfg);
        let mut b = Coherence::new("b", 1, cfg);
        b.set_faults(CoherenceFaults { ignore_gaps: true });
        b.note_read("a", 1, 0);
        let _lost = a.originate(0, 1, key_op("k1"));
        let (_, o2) = a.originate(0, 2, key_op("k2"));
        assert_eq!(applied(&b.receive(0, bytes(&o2))), [2]);
        let later: Vec<Output> = (1..30).flat_map(|t| b.tick(t * 100)).collect();
        assert!(
            later.is_empty(),
            "seq 1 was skipped without a repair or a drop"
        );
        assert_eq!(b.stats().gaps_dropped, 0);
    }

    proptest! {
        /// The safety property behind G2/G3: whatever the network loses, duplicates or
        /// reorders, and whether or not repairs arrive, every invalidation the origin made is
        /// either applied by the receiver or covered by a `DropUnverified`, within
        /// `max_staleness` of the receiver hearing of it (here: by the end, after heartbeats).
        #[test]
        fn every_invalidation_is_applied_or_covered_by_a_drop(
            n in 1usize..40,
            fate in proptest::collection::vec(0u8..4, 40),
            order in proptest::collection::vec(any::<u16>(), 40),
            repairs_work in any::<bool>(),
        ) {
            let cfg = CoherenceConfig::default();
            let mut a = Coherence::new("a", 1, cfg);
            let mut b = Coherence::new("b", 1, cfg);
            b.note_read("a", 1, 0);
            let mut sent: Vec<(u16, Vec<u8>)> = Vec::new();
            for i in 0..n {
                let (_, o) = a.originate(0, 100 + i as u64, key_op("k"));
                let bytes = bytes(&o).to_vec();
                match fate[i] {
                    0 => {} // lost
                    1 => { sent.push((order[i], bytes.clone())); sent.push((order[i] / 2, bytes)); } // duplicated
                    _ => sent.push((order[i], bytes)),
                }
            }
            sent.sort_by_key(|(k, _)| *k); // reordered
            let mut applied_seqs = std::collections::BTreeSet::new();
            let mut dropped = false;
            let mut now = 0;
            let handle = |out: Vec<Output>, b: &mut Coherence, now: u64, applied_seqs: &mut std::collections::BTreeSet<u64>, dropped: &mut bool| {
                let mut queue = out;
                while let Some(o) = queue.pop() {
                    match o {
                        Output::Apply(i) => { applied_seqs.insert(i.seq); }
                        Output::DropUnverified { .. } => *dropped = true,
                        Output::Repair { from, to, generation, .. } if repairs_work => {
                            for inv in a.log_range(generation, from, to) {
                                queue.extend(b.receive_item(now, Item::Invalidation(inv)));
                            }
                        }
                        _ => {}
                    }
                }
            };
            for (_, bytes) in &sent {
                now += 1;
                let out = b.receive(now, bytes);
                handle(out, &mut b, now, &mut applied_seqs, &mut dropped);
            }
            let hb = bytes(&a.heartbeat()).to_vec();
            let out = b.receive(now, &hb);
            handle(out, &mut b, now, &mut applied_seqs, &mut dropped);
            let heard = now;
            while now <= heard + cfg.max_staleness_ms {
                now += 50;
                let out = b.tick(now);
                handle(out, &mut b, now, &mut applied_seqs, &mut dropped);
            }
            let all_applied = applied_seqs.len() == n;
            prop_assert!(all_applied || dropped, "an invalidation was silently missed");
            prop_assert!(b.in_sync());
            if repairs_work {
                prop_assert!(all_applied, "repairs were available, yet something was dropped");
            }
        }
    }
}
