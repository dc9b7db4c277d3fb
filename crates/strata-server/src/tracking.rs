//! Client-side caching (`CLIENT TRACKING`), as Redis has it: the node remembers which keys
//! each tracking client read, and tells it when one of them changes so that it drops its
//! copy.
//!
//! - **Default mode.** A read command of a tracking client records its keys in a table
//!   (key → client ids). When a key changes, every client recorded for it gets an
//!   `invalidate` push naming it, and the key leaves the table until it is read again. The
//!   table is bounded (`server.tracking_table_max_keys`, Redis's
//!   `tracking-table-max-keys`): past it, the oldest keys are invalidated early, so a client
//!   that reads millions of distinct keys costs the node a bounded table, not memory.
//! - **BCAST.** A client names prefixes (none: every key) and hears of every change of a key
//!   under them, read or not; nothing is recorded per key. A client names at most
//!   [`MAX_CLIENT_PREFIXES`] of [`MAX_CLIENT_PREFIX_BYTES`] in all, and what they make the
//!   node hold counts in the clients' memory budget ([`Tracker::held_bytes`]); the node sets
//!   no bound of its own (10,000 until 2026-12-06, which ten clients could take whole, and
//!   every other client's `BCAST` was then refused).
//! - **OPTIN / OPTOUT** (`CLIENT CACHING yes|no` before a command), **NOLOOP** (no notice
//!   of the client's own writes made on this node), **REDIRECT** (notices go to another
//!   connection: as pushes if it speaks RESP3, as messages on `__redis__:invalidate` if it is
//!   a subscribed RESP2 connection).
//!
//! Where the changes come from: the node's cache tells this table of every change of a key
//! on this node ([`strata_core::changes`]) — writes made here, invalidations applied from
//! other cluster members (so a write on another node reaches this node's clients within the
//! coherence bound G2), pattern, tag and namespace invalidations, L1 evictions, and copies
//! withdrawn because they raced an invalidation. Expiry is this table's own: when a tracked
//! key is read its expiry is noted (from what a read below L1 served, or from L1's copy), and
//! a timer sends the notice when it passes; and when L1 drops an expired copy it says so.
//! A pattern is sent as the recorded keys it matches (or as a flush when the table is too
//! large to match); a tag, a namespace flush and "the node may have missed changes" are
//! sent as a flush: a null `invalidate`, "drop everything".
//!
//! Ordering. A read records its keys *before* it reads, and a change is announced *after* it
//! is visible, so a change the read may have missed is always announced to its client. A
//! connection writes queued notices between replies, never inside one, so a notice always
//! follows the reply of a read it concerns (the client then drops what it just stored).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;
use strata_core::glob::Glob;
use strata_core::{ChangeListener, Changed};

use crate::pubsub::{PubSub, Push};

/// The channel RESP2 connections receive redirected invalidations on.
pub const INVALIDATE_CHANNEL: &[u8] = b"__redis__:invalidate";

/// Shards of the key table (each with its own lock and share of the bound).
const SHARDS: usize = 16;

/// A pattern invalidation is matched against the recorded keys when the table holds at most
/// this many; above, its clients are told to drop everything instead.
const PATTERN_MATCH_MAX: usize = 1 << 16;

/// Pattern-by-key work (pattern bytes × key bytes) one pattern invalidation may spend
/// matching the table before it flushes instead.
const PATTERN_MATCH_BUDGET: usize = 1 << 26;

/// How often expiries of tracked keys are checked: the most an expiry notice lags.
pub const EXPIRY_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Announces tracked keys' expiries as they pass, every [`EXPIRY_TICK`], until `stop`.
pub async fn expiry_loop(
    tracking: Arc<Tracking>,
    cache: strata_core::Cache,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                tracking.expire_due(cache.now_ms());
            }
            _ = crate::state::stopped(&mut stop) => return,
        }
    }
}

tokio::task_local! {
    /// The client whose command is running on this task: a change it makes is not announced
    /// back to it when it asked for `NOLOOP`.
    pub static ORIGIN: u64;
}

/// One tracking client's settings.
#[derive(Debug)]
pub struct Tracker {
    /// Its client id.
    pub id: u64,
    /// Where its notices go (0: to itself).
    pub redirect: u64,
    /// BCAST mode.
    pub bcast: bool,
    /// `OPTIN`.
    pub optin: bool,
    /// `OPTOUT`.
    pub optout: bool,
    /// `NOLOOP`.
    pub noloop: bool,
    /// BCAST prefixes (the empty prefix: every key).
    pub prefixes: Vec<Bytes>,
    /// Whether the client speaks RESP3 (its flush null is `_`, else `$-1`).
    pub resp3: AtomicBool,
    /// The redirect target was gone when a notice was due (`broken_redirect`).
    pub broken: AtomicBool,
    /// A flush was sent and the client ran no command since: another flush would tell it
    /// nothing (a `FLUSHALL` empties every namespace, and Redis sends one null for it).
    pub flushed: AtomicBool,
    /// [`Tracker::held_bytes`], counted when it is enabled.
    held: usize,
}

impl Tracker {
    /// A tracker for client `id` with no options.
    pub fn new(id: u64) -> Self {
        Tracker {
            id,
            redirect: 0,
            bcast: false,
            optin: false,
            optout: false,
            noloop: false,
            prefixes: Vec::new(),
            resp3: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            flushed: AtomicBool::new(false),
            held: 0,
        }
    }

    /// What its BCAST prefixes make the node hold, for the clients' memory budget: the
    /// trie's node per byte (no two prefixes sharing one, the worst case) and the copies of
    /// each prefix here and in the trie's list. Counted when the tracker is enabled
    /// ([`Tracking::enable`]); O(1).
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// The client is about to run a command (before it reads anything): a flush after this
    /// point is sent again. An exchange, so that either this sees a flush's mark (and the
    /// change it announced is visible to the read), or the flush sees this one's.
    pub fn command_starts(&self) {
        self.flushed.swap(false, Ordering::AcqRel);
    }
}

#[derive(Default)]
struct Rec {
    clients: SmallVec<[u64; 2]>,
    /// Its place in [`Shard::order`].
    seq: u64,
    /// When the key expires, if it does (node clock, ms).
    deadline: Option<u64>,
}

/// What a record is charged against the byte bound: its key, its bookkeeping (the map's
/// entry, its place in the age queue and the expiry heap, the key's allocation) and a client
/// id per client. Charged 96 bytes of bookkeeping, a table of 1,000,000 keys of 16 bytes
/// grew a node by 270 MiB, about 270 bytes a key (review, 2026-12-06).
fn charge(key_len: usize, clients: usize) -> usize {
    key_len + 256 + 8 * clients
}

#[derive(Default)]
struct Shard {
    keys: HashMap<Bytes, Rec>,
    /// Bytes charged for the records ([`charge`]).
    bytes: usize,
    /// Keys in the order they were first recorded (entries whose key left or was recorded
    /// again since are skipped): the oldest go first when the shard is full.
    order: VecDeque<(Bytes, u64)>,
    next_seq: u64,
    /// Expiries of recorded keys, soonest first (entries whose key left since are skipped).
    deadlines: BinaryHeap<Reverse<(u64, Bytes)>>,
}

impl Shard {
    /// Takes `key`'s record out of the shard.
    fn take(&mut self, key: &[u8]) -> Option<Rec> {
        let rec = self.keys.remove(key)?;
        self.bytes = self
            .bytes
            .saturating_sub(charge(key.len(), rec.clients.len()));
        Some(rec)
    }

    /// Drops the queue and heap entries of keys that left, once they outnumber the live
    /// ones.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.keys.len() + 1024 {
            let keys = &self.keys;
            self.order
                .retain(|(k, seq)| keys.get(k).is_some_and(|r| r.seq == *seq));
        }
        if self.deadlines.len() > 2 * self.keys.len() + 1024 {
            let keys = &self.keys;
            self.deadlines = self
                .deadlines
                .drain()
                .filter(|Reverse((at, k))| keys.get(k).is_some_and(|r| r.deadline == Some(*at)))
                .collect();
        }
    }
}

/// Counters for `/metrics` and `INFO`.
#[derive(Debug, Default)]
pub struct TrackingStats {
    /// Invalidation pushes queued for clients (flushes included).
    pub invalidations: AtomicU64,
    /// Keys invalidated early because the table was full.
    pub evicted: AtomicU64,
    /// Keys invalidated because their expiry passed.
    pub expired: AtomicU64,
    /// Flushes sent to every tracking client (tag and namespace invalidations, lost track).
    pub flushes: AtomicU64,
}

/// What one BCAST prefix is charged against the clients' budget beside its bytes
/// ([`Tracker::held_bytes`]): two copies' bookkeeping and the client's place in the trie.
const PREFIX_CHARGE: usize = 128;

/// What each byte of a BCAST prefix is charged: a trie node (48 bytes: two vectors), its
/// place in its parent's list (an allocation of 32 bytes at least) and the byte's two
/// copies. Charged 72, 224 clients held 1,160 MiB against 1,022 MiB charged (review,
/// 2026-12-06).
const PREFIX_BYTE_CHARGE: usize = 96;

/// BCAST prefixes as a byte trie: matching a key walks it once, whatever the number of
/// prefixes (Redis keeps them in a radix tree for the same reason). A client's change edits
/// it in place, in time in proportion to that client's prefixes: rebuilt whole, one
/// client's toggles cost the node time in proportion to every client's, which is unbounded
/// once the node sets no bound of its own.
#[derive(Default)]
struct PrefixTrie {
    /// The root first (once a prefix was added); freed nodes are listed in `free`.
    nodes: Vec<TrieNode>,
    free: Vec<u32>,
    /// Each BCAST client's prefixes in the trie.
    owners: HashMap<u64, Vec<Bytes>>,
    /// (prefix, client) pairs in the trie.
    count: usize,
}

#[derive(Default)]
struct TrieNode {
    /// Children by next byte, sorted.
    next: Vec<(u8, u32)>,
    /// Clients whose prefix ends here.
    clients: Vec<u64>,
}

impl PrefixTrie {
    /// Makes `prefixes` client `client`'s prefixes: adds the ones it lacks when it keeps
    /// every one it has (a `CLIENT TRACKING ON BCAST` adds to a client's prefixes), else
    /// replaces them.
    fn set_client(&mut self, client: u64, prefixes: &[Bytes]) {
        use std::collections::HashSet;
        let wanted: HashSet<&Bytes> = prefixes.iter().collect();
        let mut held: HashSet<Bytes> = self
            .owners
            .get(&client)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default();
        if held.iter().any(|p| !wanted.contains(p)) {
            self.remove_client(client);
            held.clear();
        }
        for p in wanted {
            if !held.contains(p) {
                self.add(client, p.clone());
            }
        }
    }

    fn add(&mut self, client: u64, prefix: Bytes) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let mut n = 0usize;
        for b in prefix.iter() {
            n = match self.nodes[n].next.binary_search_by_key(b, |(c, _)| *c) {
                Ok(i) => self.nodes[n].next[i].1 as usize,
                Err(i) => {
                    let id = match self.free.pop() {
                        Some(id) => id as usize,
                        None => {
                            self.nodes.push(TrieNode::default());
                            self.nodes.len() - 1
                        }
                    };
                    self.nodes[n].next.insert(i, (*b, id as u32));
                    id
                }
            };
        }
        self.nodes[n].clients.push(client);
        self.owners.entry(client).or_default().push(prefix);
        self.count += 1;
    }

    /// Takes every prefix of `client` out; nodes left with neither clients nor children
    /// are freed (their vectors let go) for later prefixes to reuse.
    fn remove_client(&mut self, client: u64) {
        let Some(prefixes) = self.owners.remove(&client) else {
            return;
        };
        self.count -= prefixes.len();
        let mut path: Vec<(usize, u8)> = Vec::new();
        for p in &prefixes {
            path.clear();
            let mut n = 0usize;
            for b in p.iter() {
                let i = self.nodes[n]
                    .next
                    .binary_search_by_key(b, |(c, _)| *c)
                    .expect("a listed prefix is in the trie");
                path.push((n, *b));
                n = self.nodes[n].next[i].1 as usize;
            }
            let clients = &mut self.nodes[n].clients;
            if let Some(i) = clients.iter().position(|c| *c == client) {
                clients.swap_remove(i);
            }
            while let Some((parent, b)) = path.pop() {
                let node = &self.nodes[n];
                if !node.clients.is_empty() || !node.next.is_empty() {
                    break;
                }
                let siblings = &mut self.nodes[parent].next;
                if let Ok(i) = siblings.binary_search_by_key(&b, |(c, _)| *c) {
                    siblings.remove(i);
                }
                self.nodes[n] = TrieNode::default();
                self.free.push(n as u32);
                n = parent;
            }
        }
    }

    /// Nodes in use (the root included), for tests.
    #[cfg(test)]
    fn live_nodes(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Whether free nodes are many and outnumber the ones in use.
    fn mostly_free(&self) -> bool {
        self.free.len() > 1024 && self.free.len() > self.nodes.len() - self.free.len()
    }

    /// A trie of `owners`' prefixes, its node vector no larger than they need.
    fn built(owners: &HashMap<u64, Vec<Bytes>>) -> Self {
        let mut trie = PrefixTrie::default();
        for (client, prefixes) in owners {
            for p in prefixes {
                trie.add(*client, p.clone());
            }
        }
        trie.nodes.shrink_to_fit();
        trie
    }

    /// The clients with a prefix of `key`.
    fn matches(&self, key: &[u8]) -> SmallVec<[u64; 4]> {
        let mut out = SmallVec::new();
        let Some(root) = self.nodes.first() else {
            return out;
        };
        out.extend_from_slice(&root.clients);
        let mut n = root;
        for b in key {
            match n.next.binary_search_by_key(b, |(c, _)| *c) {
                Ok(i) => {
                    n = &self.nodes[n.next[i].1 as usize];
                    out.extend_from_slice(&n.clients);
                }
                Err(_) => break,
            }
        }
        out
    }
}

/// Whether client `id` is connected (a redirect target that is not is gone).
pub type Connected = Arc<dyn Fn(u64) -> bool + Send + Sync>;

/// The node's tracking table and its tracking clients.
pub struct Tracking {
    shards: Box<[Mutex<Shard>]>,
    per_shard_max: usize,
    per_shard_bytes: usize,
    clients: RwLock<HashMap<u64, Arc<Tracker>>>,
    /// Every BCAST prefix. A client's change edits it in place under this lock, in time in
    /// proportion to that client's prefixes: a trie of 10,000 prefixes was once rebuilt
    /// under this lock at every `CLIENT TRACKING` toggle, and every write on the node
    /// waited to match its key (a bystander's `SET` p50 20.7 ms while one client toggled
    /// BCAST, review 2026-12-04).
    prefixes: RwLock<PrefixTrie>,
    /// Held while a client's tracking changes: its settings and its prefixes change together.
    prefix_edit: Mutex<()>,
    active: AtomicUsize,
    keys: AtomicUsize,
    items: AtomicUsize,
    pubsub: Arc<PubSub>,
    connected: Connected,
    hasher: RandomState,
    /// Counters.
    pub stats: TrackingStats,
}

impl std::fmt::Debug for Tracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracking")
            .field("clients", &self.client_count())
            .field("keys", &self.key_count())
            .finish_non_exhaustive()
    }
}

/// Most BCAST prefixes one client may name.
pub const MAX_CLIENT_PREFIXES: usize = 1_000;

/// Most bytes of BCAST prefixes one client may name.
pub const MAX_CLIENT_PREFIX_BYTES: usize = 64 * 1024;

impl Tracking {
    /// A table of at most `max_keys` keys and `max_bytes` bytes, whose notices go through
    /// `pubsub`'s queues; `connected` says whether a redirect target still exists.
    pub fn new(max_keys: u64, max_bytes: u64, pubsub: Arc<PubSub>, connected: Connected) -> Self {
        let per = |n: u64| {
            usize::try_from(n.max(1).div_ceil(SHARDS as u64))
                .unwrap_or(usize::MAX)
                .max(1)
        };
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard_max: per(max_keys),
            per_shard_bytes: per(max_bytes),
            clients: RwLock::new(HashMap::new()),
            prefixes: RwLock::new(PrefixTrie::default()),
            prefix_edit: Mutex::new(()),
            active: AtomicUsize::new(0),
            keys: AtomicUsize::new(0),
            items: AtomicUsize::new(0),
            pubsub,
            connected,
            hasher: RandomState::new(),
            stats: TrackingStats::default(),
        }
    }

    /// Clients with tracking on.
    pub fn client_count(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Keys in the table.
    pub fn key_count(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    /// (key, client) pairs in the table (Redis's `tracking_total_items`).
    pub fn item_count(&self) -> usize {
        self.items.load(Ordering::Relaxed)
    }

    /// BCAST prefixes of every client.
    pub fn prefix_count(&self) -> usize {
        self.prefixes.read().count
    }

    /// The most keys the table holds.
    pub fn max_keys(&self) -> usize {
        self.per_shard_max * SHARDS
    }

    /// Bytes the table's records are charged (bound: `server.tracking_table_max_bytes`).
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().bytes).sum()
    }

    /// A client's settings, when it tracks.
    pub fn tracker(&self, id: u64) -> Option<Arc<Tracker>> {
        self.clients.read().get(&id).cloned()
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Takes `key`'s record out of its shard, counted.
    fn take(&self, shard: &mut Shard, key: &[u8]) -> Option<Rec> {
        let rec = shard.take(key)?;
        self.keys.fetch_sub(1, Ordering::Relaxed);
        self.items.fetch_sub(rec.clients.len(), Ordering::Relaxed);
        Some(rec)
    }

    /// Turns tracking on for `t.id` (replacing its settings; BCAST prefixes add to the
    /// ones it had, as in Redis). Fails when the client's prefix bounds would be passed.
    pub fn enable(&self, t: Tracker) -> Result<Arc<Tracker>, String> {
        let id = t.id;
        let _edit = self.prefix_edit.lock();
        let mut t = t;
        if let Some(old) = self.clients.read().get(&id) {
            for p in &old.prefixes {
                if !t.prefixes.contains(p) {
                    t.prefixes.push(p.clone());
                }
            }
        }
        if t.prefixes.len() > MAX_CLIENT_PREFIXES
            || t.prefixes.iter().map(Bytes::len).sum::<usize>() > MAX_CLIENT_PREFIX_BYTES
        {
            return Err(format!(
                "a client may name at most {MAX_CLIENT_PREFIXES} tracking prefixes of {MAX_CLIENT_PREFIX_BYTES} bytes in all"
            ));
        }
        {
            let mut trie = self.prefixes.write();
            if t.bcast {
                trie.set_client(id, &t.prefixes);
            } else {
                trie.remove_client(id);
            }
        }
        self.compact_prefixes();
        t.held = t
            .prefixes
            .iter()
            .map(|p| PREFIX_CHARGE + p.len() * PREFIX_BYTE_CHARGE)
            .sum();
        let t = Arc::new(t);
        if self.clients.write().insert(id, t.clone()).is_none() {
            self.active.fetch_add(1, Ordering::SeqCst);
        }
        Ok(t)
    }

    /// Turns tracking off for client `id` (its recorded keys go when they change or age
    /// out, as in Redis).
    pub fn disable(&self, id: u64) {
        let _edit = self.prefix_edit.lock();
        if self.clients.write().remove(&id).is_some() {
            self.active.fetch_sub(1, Ordering::SeqCst);
        }
        if self.prefixes.read().owners.contains_key(&id) {
            self.prefixes.write().remove_client(id);
            self.compact_prefixes();
        }
    }

    /// Rebuilds the prefix trie when most of its nodes are free: freed nodes are reused by
    /// later prefixes but their vector never shrank, and a node whose BCAST clients all
    /// left kept their peak for good, uncharged (768 MiB after 224 clients left, review
    /// 2026-12-06). Built aside (the caller holds `prefix_edit`, so nothing else edits it
    /// meanwhile), swapped in, and the old one let go outside the lock. A rebuild follows
    /// at least as many freed nodes as the trie keeps, so its cost is spread over them.
    fn compact_prefixes(&self) {
        let owners = {
            let trie = self.prefixes.read();
            if !trie.mostly_free() {
                return;
            }
            trie.owners.clone()
        };
        let fresh = PrefixTrie::built(&owners);
        let old = std::mem::replace(&mut *self.prefixes.write(), fresh);
        drop(old);
    }

    /// Nodes the prefix trie holds, free ones included (for tests).
    #[cfg(test)]
    fn prefix_nodes(&self) -> usize {
        self.prefixes.read().nodes.len()
    }

    /// Records that client `id` reads `keys` (before it reads them). Keys pushed out of a
    /// full table are invalidated for their clients.
    pub fn remember<'k>(&self, id: u64, keys: impl Iterator<Item = &'k [u8]>) {
        let mut evicted: Vec<(Bytes, SmallVec<[u64; 2]>)> = Vec::new();
        for key in keys {
            let mut guard = self.shard(key).lock();
            let shard = &mut *guard;
            if let Some(rec) = shard.keys.get_mut(key) {
                if !rec.clients.contains(&id) {
                    rec.clients.push(id);
                    shard.bytes += 8;
                    self.items.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                let k = Bytes::copy_from_slice(key);
                let seq = shard.next_seq;
                shard.next_seq += 1;
                shard.order.push_back((k.clone(), seq));
                let mut clients = SmallVec::new();
                clients.push(id);
                shard.keys.insert(
                    k,
                    Rec {
                        clients,
                        seq,
                        deadline: None,
                    },
                );
                shard.bytes += charge(key.len(), 1);
                self.keys.fetch_add(1, Ordering::Relaxed);
                self.items.fetch_add(1, Ordering::Relaxed);
            }
            while shard.keys.len() > self.per_shard_max || shard.bytes > self.per_shard_bytes {
                let Some((old, seq)) = shard.order.pop_front() else {
                    break;
                };
                if shard.keys.get(&old).is_some_and(|r| r.seq == seq)
                    && let Some(rec) = self.take(shard, &old)
                {
                    evicted.push((old, rec.clients));
                }
            }
            shard.compact();
        }
        for (key, clients) in evicted {
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
            for c in clients {
                // Not a change of the key: sent even to a NOLOOP client (as Redis).
                self.notify(c, Some(&key), None, false);
            }
        }
    }

    /// Notes when a recorded key expires (node clock, ms), so that its clients are told then.
    pub fn expires_at(&self, key: &[u8], at: u64) {
        let mut guard = self.shard(key).lock();
        let shard = &mut *guard;
        let Some((k, rec)) = shard.keys.get_key_value(key) else {
            return;
        };
        if rec.deadline.is_some_and(|d| d <= at) {
            return;
        }
        let k = k.clone();
        if let Some(rec) = shard.keys.get_mut(key) {
            rec.deadline = Some(at);
        }
        shard.deadlines.push(Reverse((at, k)));
        shard.compact();
    }

    /// Invalidates the recorded keys whose expiry is at or before `now` (node clock, ms);
    /// returns how many.
    pub fn expire_due(&self, now: u64) -> usize {
        if self.key_count() == 0 {
            return 0;
        }
        let mut n = 0;
        for shard in self.shards.iter() {
            let mut due = Vec::new();
            {
                let mut guard = shard.lock();
                let shard = &mut *guard;
                while let Some(Reverse((at, _))) = shard.deadlines.peek() {
                    if *at > now {
                        break;
                    }
                    let Some(Reverse((at, key))) = shard.deadlines.pop() else {
                        break;
                    };
                    if shard.keys.get(&key).is_some_and(|r| r.deadline == Some(at))
                        && let Some(rec) = self.take(shard, &key)
                    {
                        due.push((key, rec.clients));
                    }
                }
            }
            for (key, clients) in due {
                n += 1;
                self.stats.expired.fetch_add(1, Ordering::Relaxed);
                for c in clients {
                    self.notify(c, Some(&key), None, false);
                }
            }
        }
        n
    }

    /// Sends client `id` (or its redirect target) an invalidation of `key` (`None`: of
    /// everything). `origin` is the client whose command made the change, if one did;
    /// `bcast` says whether the notice comes from a BCAST prefix (a default-mode notice is
    /// not sent to a client that switched to BCAST since it read, as in Redis).
    fn notify(&self, id: u64, key: Option<&Bytes>, origin: Option<u64>, bcast: bool) {
        let Some(t) = self.tracker(id) else {
            return;
        };
        if key.is_some() && t.bcast != bcast {
            return;
        }
        if t.noloop && origin == Some(id) {
            return;
        }
        let push = Push::Invalidate {
            key: key.cloned(),
            resp3_null: t.resp3.load(Ordering::Relaxed),
            redirected: t.redirect != 0,
        };
        let target = if t.redirect == 0 { id } else { t.redirect };
        match self.pubsub.push_to(target, push) {
            Some(_) => {
                self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
            }
            // Gone: the tracking client hears of it (as Redis tells it).
            None if t.redirect != 0 && !(self.connected)(t.redirect) => {
                t.broken.store(true, Ordering::Relaxed);
                let _ = self.pubsub.push_to(id, Push::RedirectBroken(t.redirect));
            }
            // Connected but with no way to receive it (RESP2, not subscribed): dropped, as
            // Redis drops it.
            None => {}
        }
    }

    /// A change of `key`: its recorded clients and the BCAST clients whose prefixes it
    /// falls under are told. `origin`: the client that made it (for NOLOOP).
    fn key_changed(&self, key: &[u8], origin: Option<u64>) {
        let rec = self.take(&mut self.shard(key).lock(), key);
        let mut k: Option<Bytes> = None;
        if let Some(rec) = rec {
            let key = k.get_or_insert_with(|| Bytes::copy_from_slice(key)).clone();
            for c in rec.clients {
                self.notify(c, Some(&key), origin, false);
            }
        }
        let targets = self.prefixes.read().matches(key);
        if targets.is_empty() {
            return;
        }
        let key = k.get_or_insert_with(|| Bytes::copy_from_slice(key)).clone();
        for c in targets {
            self.notify(c, Some(&key), origin, true);
        }
    }

    /// Every tracking client is told to drop everything, and the table is emptied (as
    /// Redis does on `FLUSHALL`).
    pub fn flush_all(&self) {
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        for shard in self.shards.iter() {
            let old = std::mem::take(&mut *shard.lock());
            self.keys.fetch_sub(old.keys.len(), Ordering::Relaxed);
            let items: usize = old.keys.values().map(|r| r.clients.len()).sum();
            self.items.fetch_sub(items, Ordering::Relaxed);
            drop(old);
        }
        let due: Vec<u64> = self
            .clients
            .read()
            .values()
            .filter(|t| !t.flushed.swap(true, Ordering::AcqRel))
            .map(|t| t.id)
            .collect();
        for id in due {
            self.notify(id, None, None, false);
        }
    }

    /// A pattern invalidation in some namespace: the recorded keys it matches are
    /// invalidated (keys are recorded across namespaces, so a match in another namespace is
    /// invalidated too, harmlessly); BCAST clients, whose keys are not recorded, are told to
    /// drop everything. The keys are matched outside the shard locks, within a budget of
    /// pattern-by-key work; a table too large to match within it is flushed.
    fn pattern_changed(&self, pattern: &[u8]) {
        let Ok(glob) = Glob::new(pattern) else {
            return self.flush_all();
        };
        if self.key_count() > PATTERN_MATCH_MAX {
            return self.flush_all();
        }
        let mut budget = PATTERN_MATCH_BUDGET / pattern.len().max(1);
        let mut hit = Vec::new();
        for shard in self.shards.iter() {
            let keys: Vec<Bytes> = shard.lock().keys.keys().cloned().collect();
            let mut matching = Vec::new();
            for k in keys {
                budget = match budget.checked_sub(k.len() + 1) {
                    Some(b) => b,
                    None => return self.flush_all(),
                };
                if glob.matches(&k) {
                    matching.push(k);
                }
            }
            let mut guard = shard.lock();
            for k in matching {
                if let Some(rec) = self.take(&mut guard, &k) {
                    hit.push((k, rec.clients));
                }
            }
        }
        let origin = ORIGIN.try_with(|o| *o).ok();
        for (key, clients) in hit {
            for c in clients {
                self.notify(c, Some(&key), origin, false);
            }
        }
        let bcast: Vec<u64> = {
            let mut ids: Vec<u64> = self.prefixes.read().owners.keys().copied().collect();
            ids.sort_unstable();
            ids
        };
        for id in bcast {
            self.notify(id, None, origin, true);
        }
    }
}

impl ChangeListener for Tracking {
    fn changed(&self, change: Changed<'_>) {
        // No tracking client: nobody to tell (records of clients that stopped tracking
        // wait for their key's next notice, or for the table's bound). SeqCst, as the
        // increment in `enable`: a client turns tracking on a round trip before it reads.
        if self.active.load(Ordering::SeqCst) == 0 {
            return;
        }
        match change {
            Changed::Key(key) => self.key_changed(key, ORIGIN.try_with(|o| *o).ok()),
            Changed::Evicted(key) | Changed::Dropped(key) => self.key_changed(key, None),
            Changed::Pattern { pattern, .. } => self.pattern_changed(pattern),
            Changed::Tag { .. } | Changed::Namespace(_) | Changed::Everything => {
                self.flush_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(id: u64) -> Tracker {
        Tracker::new(id)
    }

    fn drained(sub: &mut crate::pubsub::Subscription) -> Vec<Option<Bytes>> {
        let mut out = Vec::new();
        while let Some(p) = sub.try_recv() {
            if let Push::Invalidate { key, .. } = p {
                out.push(key);
            }
        }
        out
    }

    #[test]
    fn a_change_reaches_the_clients_that_read_the_key_once() {
        let ps = Arc::new(PubSub::default());
        let t = Tracking::new(1000, u64::MAX, ps.clone(), Arc::new(|id| id != 99));
        let mut a = ps.open(1, 1 << 20);
        let mut b = ps.open(2, 1 << 20);
        t.enable(tracker(1)).unwrap();
        t.enable(tracker(2)).unwrap();
        t.remember(1, [&b"k"[..], b"j"].into_iter());
        t.remember(2, [&b"k"[..]].into_iter());
        t.changed(Changed::Key(b"k"));
        assert_eq!(drained(&mut a), vec![Some(Bytes::from_static(b"k"))]);
        assert_eq!(drained(&mut b), vec![Some(Bytes::from_static(b"k"))]);
        // The key left the table: a second change is not announced until it is read again.
        t.changed(Changed::Key(b"k"));
        assert!(drained(&mut a).is_empty());
        assert_eq!(t.key_count(), 1);
        t.changed(Changed::Namespace("db0"));
        t.changed(Changed::Namespace("db1"));
        // One flush each: no command ran between the two.
        assert_eq!(drained(&mut a), vec![None]);
        assert_eq!(drained(&mut b), vec![None]);
        assert_eq!(t.key_count(), 0);
        t.tracker(1).unwrap().command_starts();
        t.changed(Changed::Everything);
        assert_eq!(drained(&mut a), vec![None]);
        assert!(drained(&mut b).is_empty());
    }

    #[test]
    fn the_table_stays_within_its_bound_and_invalidates_the_oldest() {
        let ps = Arc::new(PubSub::default());
        let t = Tracking::new(160, u64::MAX, ps.clone(), Arc::new(|_| true));
        let mut a = ps.open(1, 1 << 30);
        t.enable(tracker(1)).unwrap();
        for i in 0..100_000u32 {
            t.remember(1, [&i.to_be_bytes()[..]].into_iter());
            assert!(t.key_count() <= t.max_keys());
        }
        let evicted = drained(&mut a);
        assert_eq!(evicted.len() + t.key_count(), 100_000);
        // Keys 0.. were recorded first and invalidated first.
        assert!(evicted.contains(&Some(Bytes::copy_from_slice(&0u32.to_be_bytes()))));
        for shard in t.shards.iter() {
            let s = shard.lock();
            assert!(s.order.len() <= 2 * s.keys.len() + 1024 + 1);
        }
        // The byte bound holds with long keys: 64 KiB of them, 1 KiB each.
        let t = Tracking::new(1_000_000, 64 * 1024, ps.clone(), Arc::new(|_| true));
        t.enable(tracker(1)).unwrap();
        for i in 0..10_000u32 {
            let mut key = vec![b'k'; 1024];
            key[..4].copy_from_slice(&i.to_be_bytes());
            t.remember(1, [&key[..]].into_iter());
            assert!(t.bytes() <= 64 * 1024 + 16 * 2048, "{}", t.bytes());
        }
        assert!(t.key_count() < 64, "{}", t.key_count());
        assert_eq!(t.item_count(), t.key_count());
        drained(&mut a);
    }

    #[test]
    fn prefixes_match_through_the_trie() {
        let b = Bytes::from_static;
        let mut trie = PrefixTrie::default();
        trie.set_client(1, &[b(b"")]);
        trie.set_client(2, &[b(b"user:"), b(b"cart")]);
        trie.set_client(3, &[b(b"user:1")]);
        let m = |trie: &PrefixTrie, k: &[u8]| {
            let mut v = trie.matches(k).to_vec();
            v.sort_unstable();
            v
        };
        assert_eq!(m(&trie, b"user:12"), vec![1, 2, 3]);
        assert_eq!(m(&trie, b"user:2"), vec![1, 2]);
        assert_eq!(m(&trie, b"use"), vec![1]);
        assert_eq!(m(&trie, b"cart:9"), vec![1, 2]);
        assert_eq!(trie.count, 4);
        assert!(PrefixTrie::default().matches(b"x").is_empty());
        // Edited in place: a client's prefixes go with it, and its nodes are freed.
        let full = trie.live_nodes();
        trie.remove_client(3);
        assert_eq!(m(&trie, b"user:12"), vec![1, 2]);
        assert_eq!(trie.live_nodes(), full - 1, "user:1's last node");
        // Adding to a client's prefixes keeps the ones it had; naming fewer replaces them.
        trie.set_client(2, &[b(b"user:"), b(b"cart"), b(b"order")]);
        assert_eq!(m(&trie, b"order:1"), vec![1, 2]);
        assert_eq!(m(&trie, b"cart"), vec![1, 2]);
        trie.set_client(2, &[b(b"cart")]);
        assert_eq!(m(&trie, b"user:1"), vec![1]);
        assert_eq!(m(&trie, b"order"), vec![1]);
        assert_eq!(m(&trie, b"cart"), vec![1, 2]);
        trie.remove_client(2);
        trie.remove_client(1);
        assert_eq!(
            (trie.count, trie.live_nodes()),
            (0, 1),
            "only the root is left"
        );
        // Freed nodes are reused: churn does not grow the trie.
        for round in 0..100u32 {
            let prefixes: Vec<Bytes> = (0..50)
                .map(|i| Bytes::from(format!("{round}:{i}:some-prefix")))
                .collect();
            trie.set_client(7, &prefixes);
            assert_eq!(
                m(&trie, format!("{round}:3:some-prefix-key").as_bytes()),
                vec![7]
            );
            trie.remove_client(7);
        }
        assert!(
            trie.nodes.len() < 2_000,
            "{} nodes after churn",
            trie.nodes.len()
        );
    }

    #[test]
    fn the_prefix_trie_gives_back_what_clients_that_left_held() {
        let ps = Arc::new(PubSub::default());
        let t = Tracking::new(1000, u64::MAX, ps, Arc::new(|_| true));
        for id in 1..=20u64 {
            let mut bc = tracker(id);
            bc.bcast = true;
            bc.prefixes = (0..100)
                .map(|i| Bytes::from(format!("{id}:{i}:{}", "x".repeat(40))))
                .collect();
            t.enable(bc).unwrap();
        }
        let full = t.prefix_nodes();
        assert!(full > 20 * 100 * 40, "{full} nodes");
        for id in 2..=20u64 {
            t.disable(id);
        }
        assert_eq!(t.prefix_count(), 100);
        assert!(
            t.prefix_nodes() < full / 4,
            "{} of {full} nodes kept after 19 of 20 clients left",
            t.prefix_nodes()
        );
        // The rebuilt trie still matches the prefixes left.
        let key = format!("1:7:{}key", "x".repeat(40));
        assert_eq!(t.prefixes.read().matches(key.as_bytes()).to_vec(), vec![1]);
        t.disable(1);
        assert!(
            t.prefix_nodes() <= 1,
            "{} nodes with no prefix",
            t.prefix_nodes()
        );
    }

    #[test]
    fn bcast_prefixes_noloop_and_expiry() {
        let ps = Arc::new(PubSub::default());
        let t = Tracking::new(1000, u64::MAX, ps.clone(), Arc::new(|id| id != 99));
        let mut a = ps.open(1, 1 << 20);
        let mut b = ps.open(2, 1 << 20);
        let mut bc = tracker(1);
        bc.bcast = true;
        bc.prefixes = vec![Bytes::from_static(b"user:")];
        t.enable(bc).unwrap();
        let mut nl = tracker(2);
        nl.noloop = true;
        t.enable(nl).unwrap();
        t.changed(Changed::Key(b"user:1"));
        t.changed(Changed::Key(b"order:1"));
        assert_eq!(drained(&mut a), vec![Some(Bytes::from_static(b"user:1"))]);
        // NOLOOP: client 2's own change is not announced to it; another's is.
        t.remember(2, [&b"x"[..]].into_iter());
        ORIGIN.sync_scope(2, || t.changed(Changed::Key(b"x")));
        assert!(drained(&mut b).is_empty());
        t.remember(2, [&b"x"[..]].into_iter());
        ORIGIN.sync_scope(3, || t.changed(Changed::Key(b"x")));
        assert_eq!(drained(&mut b), vec![Some(Bytes::from_static(b"x"))]);
        // Expiry: announced once the deadline passes, not before.
        t.remember(2, [&b"ttl"[..]].into_iter());
        t.expires_at(b"ttl", 1_000);
        assert_eq!(t.expire_due(999), 0);
        assert_eq!(t.expire_due(1_000), 1);
        assert_eq!(drained(&mut b), vec![Some(Bytes::from_static(b"ttl"))]);
        // A redirect to a client with no queue is broken, and the tracking client is told.
        let mut r = tracker(2);
        r.redirect = 99;
        t.enable(r).unwrap();
        t.remember(2, [&b"y"[..]].into_iter());
        t.changed(Changed::Key(b"y"));
        assert!(t.tracker(2).unwrap().broken.load(Ordering::Relaxed));
        assert!(matches!(b.try_recv(), Some(Push::RedirectBroken(99))));
        t.disable(1);
        assert_eq!((t.client_count(), t.prefix_count()), (1, 0));
    }
}
