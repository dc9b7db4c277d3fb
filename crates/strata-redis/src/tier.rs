//! [`RedisTier`]: the `Tier` on an existing Redis.
//!
//! Every call goes through [`RedisTier::call`], which takes an in-flight slot, applies the
//! timeout and feeds the circuit breaker. While the circuit is not closed no call reaches
//! Redis: reads miss at once, writes and invalidations are recorded as *pending* and stand
//! on the local layers; before the circuit closes again the pending work is applied to
//! Redis (the keys written or invalidated meanwhile are unlinked there and announced), so a
//! value Redis held from before the outage is never served over a newer local write.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue, IntoConnectionInfo, RedisConnectionInfo,
    Value,
};
use strata_core::glob::Glob;
use strata_core::scan::{ScanFrom, scan_hash};
use strata_core::{Clock, Entry, Layer, SetOutcome, Tier, TierError, TierHealth, Version};
use tokio::sync::Semaphore;

use crate::breaker::{Breaker, BreakerState, Transition};
use crate::codec::{self, Message, Op};
use crate::config::{BridgeConfig, Topology, split_address};
use crate::journal::{Journal, Owed};

/// Most pending operations kept while the circuit is open; past this, a namespace with more
/// is flushed in Redis on recovery instead.
pub const MAX_PENDING: usize = 65_536;
/// Bytes read to decode an entry's header when scanning (tags beyond it cost a second read).
const HEADER_PEEK: usize = 4096;

/// The newest version a node believes another stamped honestly: one at most this far
/// ahead of its own clock. A version past it — a forged invalidation message, an entry
/// written into Redis by hand, a node whose clock ran far ahead — is not merged into this
/// node's clock (which would otherwise stamp every later write past it, for good), and an
/// entry holding one in Redis is replaced by the next write whatever its version.
pub const MAX_VERSION_AHEAD_MS: u64 = 60_000;

/// Whether `v` is a version a node could have stamped by now ([`MAX_VERSION_AHEAD_MS`]).
pub fn plausible_version(v: Version, now_ms: u64) -> bool {
    v.physical_ms() <= now_ms.saturating_add(MAX_VERSION_AHEAD_MS)
}

/// A plain write: stored unless Redis holds a newer version of the key (`ARGV[1]`: the
/// entry; `ARGV[2]`: PX, or 0; `ARGV[3]`, `ARGV[4]`: the channel and its message; `ARGV[5]`:
/// the largest plausible version's 16 hex digits, [`MAX_VERSION_AHEAD_MS`]). Returns 0 when
/// Redis holds a newer version, or the same version with another value (two nodes that
/// stamped one version: the second is refused, and stamps again). The change is announced
/// in the same step.
const SET_SCRIPT: &str = r"
local old = redis.call('GETRANGE', KEYS[1], 0, 16)
if string.len(old) == 17 and string.byte(old, 1) == 1 then
  local held, new = string.sub(old, 2, 17), string.sub(ARGV[1], 2, 17)
  if held <= ARGV[5]
     and (held > new or (held == new and redis.call('GET', KEYS[1]) ~= ARGV[1])) then
    return 0
  end
end
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

/// A conditional or read-modify-write operation's write, made only if the key still holds
/// the version the operation was computed from (`ARGV[1]`: its 16 hex digits, or empty for
/// no entry): compare-and-set, with the invalidation announced in the same step. 0 when
/// another writer got there first (the node reads again and recomputes). Not idempotent: a
/// script the client library resends after a broken connection may apply twice (versions
/// cannot tell a resend from another node's write: nodes sharing a Redis may stamp the
/// same version), as any Redis command resent that way.
const EXECUTE_SCRIPT: &str = r"
local cur = redis.call('GETRANGE', KEYS[1], 1, 16)
if cur ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('UNLINK', KEYS[1])
elseif ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
";

/// The compare-and-set of several keys (`MSETNX`, `RENAME`, a transaction): every key must
/// still hold the version read (ARGV per key: expected, action `k`eep / `s`et / `d`elete,
/// payload, PX, message), then every change is written and announced in the same step.
const EXECUTE_MULTI_SCRIPT: &str = r"
for i = 1, #KEYS do
  if redis.call('GETRANGE', KEYS[i], 1, 16) ~= ARGV[(i - 1) * 5 + 2] then
    return 0
  end
end
for i = 1, #KEYS do
  local b = (i - 1) * 5 + 1
  local action = ARGV[b + 2]
  if action == 'd' then
    redis.call('UNLINK', KEYS[i])
  elseif action == 's' then
    if ARGV[b + 4] == '0' then
      redis.call('SET', KEYS[i], ARGV[b + 3])
    else
      redis.call('SET', KEYS[i], ARGV[b + 3], 'PX', ARGV[b + 4])
    end
  end
  if ARGV[b + 5] ~= '' then
    redis.call('PUBLISH', ARGV[1], ARGV[b + 5])
  end
end
return 1
";

/// Longest a bridge node keeps recomputing one multi-key operation (a transaction or a
/// script) that other writers keep beating.
const EXECUTE_MULTI_DEADLINE: Duration = Duration::from_secs(10);

/// Most times a bridge node recomputes one operation that other writers keep beating.
const EXECUTE_ATTEMPTS: usize = 200;

const REMOVE_SCRIPT: &str = r"
local n = redis.call('UNLINK', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
";

const REMOVE_VERSION_SCRIPT: &str = r"
local old = redis.call('GETRANGE', KEYS[1], 1, 16)
if old ~= ARGV[1] then
  return 0
end
redis.call('UNLINK', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
";

/// Why the bridge could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// The configuration is invalid.
    #[error("invalid Redis bridge config: {0}")]
    Config(String),
    /// Redis refused the credentials: a configuration error, so the node does not start.
    #[error("Redis refused the credentials ({0}); check l2.redis.password / REDIS_PASSWORD")]
    Auth(String),
}

/// The bridge's counters, for metrics.
#[derive(Debug, Default)]
pub struct BridgeCounters {
    /// Reads answered as misses because the circuit was open.
    pub bypassed_reads: AtomicU64,
    /// Writes kept local because the circuit was open or Redis failed.
    pub bypassed_writes: AtomicU64,
    /// Invalidations kept local (and queued) because the circuit was open or Redis failed.
    pub bypassed_invalidations: AtomicU64,
    /// Calls that failed (errors and timeouts).
    pub failures: AtomicU64,
    /// Calls that timed out.
    pub timeouts: AtomicU64,
    /// Times the circuit opened.
    pub opened: AtomicU64,
    /// Times the circuit closed again.
    pub closed: AtomicU64,
    /// Values under the prefix that did not decode (a miss each).
    pub corrupt: AtomicU64,
    /// Conditional or read-modify-write operations recomputed because another writer
    /// changed the key first (compare-and-set lost).
    pub execute_retries: AtomicU64,
    /// Pending operations applied to Redis after recovery.
    pub replayed: AtomicU64,
    /// Invalidation messages received from other nodes.
    pub messages: AtomicU64,
    /// Invalidation messages that did not decode.
    pub bad_messages: AtomicU64,
    /// Times the node (re)subscribed and so emptied L1 and proved L3, because it may have
    /// missed messages.
    pub resyncs: AtomicU64,
    /// L3 copies a proof against Redis kept.
    pub warm_kept: AtomicU64,
    /// L3 copies a proof against Redis dropped.
    pub warm_dropped: AtomicU64,
    /// Pipelined `GETRANGE` batches the proofs sent.
    pub warm_calls: AtomicU64,
    /// Times the bridge found its master demoted (a Sentinel failover: `READONLY`, or
    /// `ROLE` on the health tick) and connected to the new one Sentinel named.
    pub renewed: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn bump_counter(c: &AtomicU64) {
    bump(c);
}

/// A snapshot of the bridge's state, for metrics and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeStatus {
    /// The breaker's state.
    pub breaker: BreakerState,
    /// Why it last opened.
    pub last_open_reason: String,
    /// Whether the invalidation channel is subscribed.
    pub subscribed: bool,
    /// Operations waiting for Redis to come back.
    pub pending: usize,
}

#[derive(Clone)]
enum Backend {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A SCAN in progress over every master.
struct Scan {
    /// Targets still to scan; the last is current.
    targets: Vec<ScanTarget>,
    cursor: u64,
    pattern: Vec<u8>,
}

/// Where one SCAN runs: the single server, or one cluster master.
#[derive(Clone, Debug)]
enum ScanTarget {
    Single,
    Node(String, u16),
}

impl Backend {
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> redis::RedisResult<T> {
        match self.clone() {
            Backend::Single(mut c) => cmd.query_async(&mut c).await,
            Backend::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
    }

    /// Runs `cmds` in one round trip where possible: a pipeline on one server; on a Redis
    /// Cluster, concurrent single commands (each routed to its own slot's master; a
    /// pipeline there must stay within one slot).
    async fn batch<T: FromRedisValue>(&self, cmds: Vec<Cmd>) -> redis::RedisResult<Vec<T>> {
        match self.clone() {
            Backend::Single(mut c) => {
                let mut p = redis::pipe();
                for cmd in cmds {
                    p.add_command(cmd);
                }
                p.query_async(&mut c).await
            }
            Backend::Cluster(c) => futures_util::future::join_all(cmds.into_iter().map(|cmd| {
                let mut c = c.clone();
                async move { cmd.query_async::<T>(&mut c).await }
            }))
            .await
            .into_iter()
            .collect(),
        }
    }

    async fn script(
        &self,
        script: &redis::Script,
        key: &[u8],
        args: &[&[u8]],
    ) -> redis::RedisResult<i64> {
        let mut inv = script.key(key);
        for a in args {
            inv.arg(*a);
        }
        match self.clone() {
            Backend::Single(mut c) => inv.invoke_async(&mut c).await,
            Backend::Cluster(mut c) => inv.invoke_async(&mut c).await,
        }
    }

    /// Runs `script` on several keys (one slot on a Redis Cluster).
    async fn script_keys(
        &self,
        script: &redis::Script,
        keys: &[Vec<u8>],
        args: &[Vec<u8>],
    ) -> redis::RedisResult<i64> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(k.as_slice());
        }
        for a in args {
            inv.arg(a.as_slice());
        }
        match self.clone() {
            Backend::Single(mut c) => inv.invoke_async(&mut c).await,
            Backend::Cluster(mut c) => inv.invoke_async(&mut c).await,
        }
    }

    async fn scan_targets(&self) -> redis::RedisResult<Vec<ScanTarget>> {
        match self.clone() {
            Backend::Single(_) => Ok(vec![ScanTarget::Single]),
            Backend::Cluster(mut c) => {
                let v = c
                    .route_command(
                        redis::cmd("CLUSTER").arg("SLOTS").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await?;
                let mut masters = BTreeSet::new();
                if let Value::Array(ranges) = v {
                    for r in ranges {
                        if let Value::Array(parts) = r
                            && let Some(Value::Array(master)) = parts.get(2)
                        {
                            let host: String = master
                                .first()
                                .map(String::from_redis_value_ref)
                                .transpose()?
                                .unwrap_or_default();
                            let port: u16 = master
                                .get(1)
                                .map(u16::from_redis_value_ref)
                                .transpose()?
                                .unwrap_or_default();
                            masters.insert((host, port));
                        }
                    }
                }
                Ok(masters
                    .into_iter()
                    .map(|(h, p)| ScanTarget::Node(h, p))
                    .collect())
            }
        }
    }

    async fn scan_page(
        &self,
        target: &ScanTarget,
        cursor: u64,
        pattern: &[u8],
        count: u32,
    ) -> redis::RedisResult<(u64, Vec<Vec<u8>>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        match (self.clone(), target) {
            (Backend::Single(mut c), _) => cmd.query_async(&mut c).await,
            (Backend::Cluster(mut c), ScanTarget::Node(host, port)) => {
                let v = c
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        }),
                    )
                    .await?;
                Ok(FromRedisValue::from_redis_value(v)?)
            }
            (Backend::Cluster(_), ScanTarget::Single) => Ok((0, Vec::new())),
        }
    }
}

#[derive(Default)]
struct Pending {
    keys: HashSet<(String, Bytes)>,
    patterns: Vec<(String, Vec<u8>)>,
    tags: Vec<(String, Vec<u8>)>,
    flushes: BTreeSet<String>,
    /// The same work on disk ([`crate::journal`]), when the node has a place for it: each
    /// new item is appended before the write it stands for is acknowledged.
    journal: Option<Journal>,
}

impl Pending {
    fn len(&self) -> usize {
        self.keys.len() + self.patterns.len() + self.tags.len() + self.flushes.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn full(&self) -> bool {
        self.len() >= MAX_PENDING
    }

    fn add_key(&mut self, ns: &str, key: Bytes) {
        self.add(Queued::Key(ns, &key), true);
    }

    fn push(&mut self, what: Queued<'_>) {
        self.add(what, true);
    }

    /// Queues `what`; with `record`, an item not queued yet is appended to the journal.
    fn add(&mut self, what: Queued<'_>, record: bool) {
        let owed = match what {
            Queued::Key(ns, _) if self.flushes.contains(ns) => return,
            Queued::Key(ns, _) | Queued::Pattern(ns, _) | Queued::Tag(ns, _) if self.full() => {
                if !self.flushes.insert(ns.to_owned()) {
                    return;
                }
                Owed::Flush(ns.to_owned())
            }
            Queued::Key(ns, key) => {
                if !self
                    .keys
                    .insert((ns.to_owned(), Bytes::copy_from_slice(key)))
                {
                    return;
                }
                Owed::Key(ns.to_owned(), key.to_vec())
            }
            Queued::Flush(ns) => {
                if !self.flushes.insert(ns.to_owned()) {
                    return;
                }
                Owed::Flush(ns.to_owned())
            }
            Queued::Pattern(ns, p) => {
                self.patterns.push((ns.to_owned(), p.to_vec()));
                Owed::Pattern(ns.to_owned(), p.to_vec())
            }
            Queued::Tag(ns, t) => {
                self.tags.push((ns.to_owned(), t.to_vec()));
                Owed::Tag(ns.to_owned(), t.to_vec())
            }
        };
        if record
            && let Some(j) = &mut self.journal
            && let Err(e) = j.append(&owed)
        {
            tracing::warn!(error = %e, "Redis bridge: could not append to the outage queue's file; a crash before Redis returns may serve Redis's older value of this key");
        }
    }

    /// Queues work from before (the journal read at start), without appending it again.
    fn restore(&mut self, owed: Vec<Owed>) {
        for what in &owed {
            self.add(
                match what {
                    Owed::Key(ns, k) => Queued::Key(ns, k),
                    Owed::Pattern(ns, p) => Queued::Pattern(ns, p),
                    Owed::Tag(ns, t) => Queued::Tag(ns, t),
                    Owed::Flush(ns) => Queued::Flush(ns),
                },
                false,
            );
        }
    }

    /// The queued work, taken out (the journal stays, still holding it until
    /// [`Pending::applied`]).
    fn take_work(&mut self) -> Pending {
        Pending {
            keys: std::mem::take(&mut self.keys),
            patterns: std::mem::take(&mut self.patterns),
            tags: std::mem::take(&mut self.tags),
            flushes: std::mem::take(&mut self.flushes),
            journal: None,
        }
    }

    /// Work taken out and applied: the journal now holds only what was queued since.
    fn applied(&mut self) {
        let Some(mut j) = self.journal.take() else {
            return;
        };
        let mut owed: Vec<Owed> = self
            .flushes
            .iter()
            .map(|ns| Owed::Flush(ns.clone()))
            .collect();
        owed.extend(
            self.keys
                .iter()
                .map(|(ns, k)| Owed::Key(ns.clone(), k.to_vec())),
        );
        owed.extend(
            self.patterns
                .iter()
                .map(|(ns, p)| Owed::Pattern(ns.clone(), p.clone())),
        );
        owed.extend(
            self.tags
                .iter()
                .map(|(ns, t)| Owed::Tag(ns.clone(), t.clone())),
        );
        if let Err(e) = j.rewrite(&owed) {
            tracing::warn!(error = %e, "Redis bridge: could not rewrite the outage queue's file; applied work stays in it and is applied again after a restart");
        }
        self.journal = Some(j);
    }

    /// Work taken out that could not be applied, queued again (its items are still in the
    /// journal).
    fn merge(&mut self, other: Pending) {
        for f in &other.flushes {
            self.add(Queued::Flush(f), false);
        }
        for (ns, k) in &other.keys {
            self.add(Queued::Key(ns, k), false);
        }
        for (ns, p) in &other.patterns {
            self.add(Queued::Pattern(ns, p), false);
        }
        for (ns, t) in &other.tags {
            self.add(Queued::Tag(ns, t), false);
        }
    }
}

/// One invalidation waiting for Redis.
enum Queued<'a> {
    Key(&'a str, &'a [u8]),
    Pattern(&'a str, &'a [u8]),
    Tag(&'a str, &'a [u8]),
    Flush(&'a str),
}

struct Inner {
    cfg: BridgeConfig,
    clock: Arc<dyn Clock>,
    started: Instant,
    backend: RwLock<Option<Backend>>,
    /// Held while a connection is opened ([`RedisTier::open_backend`]): the probe, the health
    /// PING's renewal and the subscriber's check never open two at once (a slower one,
    /// with an older Sentinel answer, could otherwise replace a newer one).
    reconnecting: tokio::sync::Mutex<()>,
    /// How many connections [`RedisTier::open_backend`] has opened: a call that failed on
    /// a demoted master renews the connection only if no other call did meanwhile.
    generation: AtomicU64,
    /// When a call last renewed the connection, or tried to (monotonic ms).
    last_renewal: Mutex<Option<u64>>,
    /// Where the subscriber may connect: the server, or every cluster seed node.
    pubsub: RwLock<Vec<redis::Client>>,
    breaker: Breaker,
    permits: Semaphore,
    pending: Mutex<Pending>,
    /// Where the queue is kept on disk ([`BridgeConfig::pending_journal`]).
    journal_path: Option<std::path::PathBuf>,
    counters: BridgeCounters,
    origin: u64,
    channel: String,
    match_prefix: Vec<u8>,
    expiry_slack_ms: AtomicU64,
    subscribed: AtomicBool,
    set_script: redis::Script,
    execute_script: redis::Script,
    execute_multi_script: redis::Script,
    remove_script: redis::Script,
    remove_version_script: redis::Script,
}

/// How [`RedisTier::renew_after`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renewal {
    /// This call opened a new connection, and it answers.
    Here,
    /// Another call did already.
    Elsewhere,
    /// Another call is opening one now.
    InProgress,
    /// A new connection failed, or one was tried less than a second ago.
    Failed,
}

/// What a failed call means for the breaker ([`RedisTier::verdict`]).
enum Verdict {
    /// Redis answers on a new connection: this call failed with the old one.
    Renewed,
    /// Another call is finding out: not counted.
    Pending,
    /// Counted, if it is a health error.
    Count,
}

/// L2 on an existing Redis. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct RedisTier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTier")
            .field("topology", &self.inner.cfg.topology)
            .field("breaker", &self.inner.breaker.state())
            .finish_non_exhaustive()
    }
}

/// Escapes the glob characters of a literal, for `SCAN … MATCH`.
fn escape_glob(literal: &[u8], out: &mut Vec<u8>) {
    for &b in literal {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

fn is_auth_error(e: &redis::RedisError) -> bool {
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return true;
    }
    let text = e.to_string();
    [
        "NOAUTH",
        "WRONGPASS",
        "AUTH <password>",
        "invalid password",
        "invalid username",
    ]
    .iter()
    .any(|m| text.contains(m))
}

/// A failed [`RedisTier::call_tracked`]: the error, and whether Redis may have run the
/// command.
struct CallFailed {
    error: TierError,
    maybe_ran: bool,
    /// Redis answered that it will not take this node's writes ([`refuses_writes`]: `OOM`,
    /// `NOPERM`, `MISCONF`): it is up, and said no.
    refused: bool,
}

impl CallFailed {
    fn unsent(error: TierError) -> Self {
        Self {
            error,
            maybe_ran: false,
            refused: false,
        }
    }
}

/// Whether Redis answered `e` instead of running the command: refusals it makes before a
/// command (or a script) starts. Any other error, a script's own included, may come after
/// a write.
fn refused_before_running(e: &redis::RedisError) -> bool {
    e.is_connection_refusal()
        || [
            "READONLY",
            "OOM",
            "BUSY",
            "LOADING",
            "MASTERDOWN",
            "NOPERM",
            "NOAUTH",
            "MISCONF",
            "NOSCRIPT",
            "MOVED",
            "ASK",
            "TRYAGAIN",
            "CLUSTERDOWN",
            "CROSSSLOT",
        ]
        .iter()
        .any(|code| has_code(e, code))
}

/// Whether Redis, up and in charge of the key, answered that it will not take writes of
/// this node: out of memory under `noeviction`, no permission, or writes stopped after a
/// failed save. Not the refusals of a topology change under way (`READONLY` from a demoted
/// master, `MOVED`, `LOADING`, …), which the bridge's reconnection and recovery handle.
fn refuses_writes(e: &redis::RedisError) -> bool {
    ["OOM", "NOPERM", "MISCONF"]
        .iter()
        .any(|code| has_code(e, code))
}

/// Whether an error says something about Redis's health (the breaker counts it) rather than
/// about one command.
fn is_health_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || is_auth_error(e)
        || ["READONLY", "LOADING", "MASTERDOWN"]
            .iter()
            .any(|code| has_code(e, code))
}

/// Whether Redis answered with the error `code` (`READONLY`, …). redis-rs keeps the code
/// apart from the text it displays (`read-only`), so the text alone does not show it.
fn has_code(e: &redis::RedisError, code: &str) -> bool {
    e.code() == Some(code) || e.to_string().contains(code)
}

impl RedisTier {
    /// Connects to Redis. A refused password is an error (the node should not start); an
    /// unreachable Redis is not: the bridge starts with its circuit open, serves from the
    /// local layers, and keeps probing.
    pub async fn connect(cfg: BridgeConfig, clock: Arc<dyn Clock>) -> Result<Self, BridgeError> {
        cfg.validate().map_err(BridgeError::Config)?;
        let mut match_prefix = Vec::new();
        escape_glob(cfg.key_prefix.as_bytes(), &mut match_prefix);
        let journal_path = cfg.pending_journal.clone();
        let tier = RedisTier {
            inner: Arc::new(Inner {
                channel: cfg.channel(),
                breaker: Breaker::new(cfg.breaker.clone()),
                permits: Semaphore::new(cfg.max_in_flight),
                cfg,
                clock,
                started: Instant::now(),
                backend: RwLock::new(None),
                reconnecting: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
                last_renewal: Mutex::new(None),
                pubsub: RwLock::new(Vec::new()),
                pending: Mutex::new(Pending::default()),
                journal_path,
                counters: BridgeCounters::default(),
                origin: rand::random(),
                match_prefix,
                expiry_slack_ms: AtomicU64::new(0),
                subscribed: AtomicBool::new(false),
                set_script: redis::Script::new(SET_SCRIPT),
                execute_script: redis::Script::new(EXECUTE_SCRIPT),
                execute_multi_script: redis::Script::new(EXECUTE_MULTI_SCRIPT),
                remove_script: redis::Script::new(REMOVE_SCRIPT),
                remove_version_script: redis::Script::new(REMOVE_VERSION_SCRIPT),
            }),
        };
        tier.open_journal();
        match tier.open_backend().await {
            Ok(()) => {
                tracing::info!(topology = ?tier.inner.cfg.topology, "Redis bridge connected");
            }
            Err(e) if is_auth_error(&e) => return Err(BridgeError::Auth(e.to_string())),
            Err(e) => {
                let reason = format!("cannot connect: {e}");
                tracing::error!(%reason, "Redis bridge starts with its circuit open; it will keep probing");
                if let Some(t) = tier.inner.breaker.force_open(tier.mono_ms(), reason) {
                    tier.on_transition(&t);
                }
            }
        }
        Ok(tier)
    }

    /// Opens the outage queue's file, when the config names one, and queues the work it
    /// holds from before (a node killed during an outage owes Redis that work still).
    fn open_journal(&self) {
        let Some(path) = &self.inner.journal_path else {
            return;
        };
        match Journal::open(path) {
            Ok((journal, before)) => {
                if before.unread > 0 || before.bad_header {
                    tracing::warn!(
                        path = %path.display(),
                        unread_bytes = before.unread,
                        bad_header = before.bad_header,
                        "Redis bridge: the outage queue's file ends in a record cut short or damaged; read up to it"
                    );
                }
                if !before.owed.is_empty() {
                    tracing::info!(
                        operations = before.owed.len(),
                        "Redis bridge: work queued before the node stopped is owed to Redis still; applied before L3 is proven"
                    );
                }
                let mut pending = self.inner.pending.lock();
                pending.restore(before.owed);
                pending.journal = Some(journal);
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "Redis bridge: cannot open the outage queue's file; the queue is in memory only"
            ),
        }
    }

    /// Whether work waits for Redis's return.
    pub fn has_pending(&self) -> bool {
        !self.inner.pending.lock().is_empty()
    }

    /// Keeps expired entries in Redis `slack` longer than their expiry (they are never
    /// served: every read checks expiry on this node's clock). Zero by default; tests that
    /// drive expiry from a manual clock set it, so that Redis's real-time expiry does not
    /// race the manual one.
    pub fn set_expiry_slack(&self, slack: Duration) {
        self.inner
            .expiry_slack_ms
            .store(slack.as_millis() as u64, Ordering::Relaxed);
    }

    /// This node's id on the invalidation channel.
    pub fn origin(&self) -> u64 {
        self.inner.origin
    }

    /// The config the bridge runs with.
    pub fn config(&self) -> &BridgeConfig {
        &self.inner.cfg
    }

    /// The counters.
    pub fn counters(&self) -> &BridgeCounters {
        &self.inner.counters
    }

    /// The breaker's state, the subscription and the backlog.
    pub fn status(&self) -> BridgeStatus {
        BridgeStatus {
            breaker: self.inner.breaker.state(),
            last_open_reason: self.inner.breaker.last_reason(),
            subscribed: self.inner.subscribed.load(Ordering::Acquire),
            pending: self.inner.pending.lock().len(),
        }
    }

    fn mono_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    fn redis_settings(&self) -> RedisConnectionInfo {
        let c = &self.inner.cfg;
        let mut r = RedisConnectionInfo::default().set_db(c.db);
        if let Some(u) = &c.username {
            r = r.set_username(u);
        }
        if let Some(p) = &c.password {
            r = r.set_password(p);
        }
        r
    }

    fn connection_info(&self, host: String, port: u16) -> ConnectionInfo {
        ConnectionAddr::Tcp(host, port)
            .into_connection_info()
            .map(|i| i.set_redis_settings(self.redis_settings()))
            // Building from an address cannot fail.
            .unwrap_or_else(|_| unreachable!("a TCP address is always a connection info"))
    }

    async fn open_backend(&self) -> redis::RedisResult<()> {
        let _one_at_a_time = self.inner.reconnecting.lock().await;
        self.connect_locked().await
    }

    /// [`RedisTier::open_backend`] for a call that found the connection of generation
    /// `seen` failing — unless another call already opened a newer one, or is opening
    /// one now (this does not wait: calls failing together do not queue up for a connect
    /// each, holding their in-flight slots), or a renewal was tried less than a second
    /// ago.
    async fn renew_after(&self, seen: u64) -> Renewal {
        if self.inner.generation.load(Ordering::Acquire) != seen {
            return Renewal::Elsewhere;
        }
        let Ok(_one_at_a_time) = self.inner.reconnecting.try_lock() else {
            return Renewal::InProgress;
        };
        if self.inner.generation.load(Ordering::Acquire) != seen {
            return Renewal::Elsewhere;
        }
        // At most one renewal a second: a Redis that takes connections and then drops
        // them under commands must still be counted (and open the circuit), not renewed
        // away call after call.
        if self
            .inner
            .last_renewal
            .lock()
            .is_some_and(|at| self.mono_ms().saturating_sub(at) < 1000)
        {
            return Renewal::Failed;
        }
        let done = self.connect_locked().await;
        *self.inner.last_renewal.lock() = Some(self.mono_ms());
        match done {
            Ok(()) => Renewal::Here,
            Err(e) => {
                tracing::debug!(error = %e, "Redis bridge: a new connection failed");
                Renewal::Failed
            }
        }
    }

    /// [`RedisTier::open_backend`], waiting for a reconnect another call may be running,
    /// unless a connection newer than generation `seen` is in use by then: whether this
    /// opened one.
    async fn reopen_unless_renewed(&self, seen: u64) -> redis::RedisResult<bool> {
        let _one_at_a_time = self.inner.reconnecting.lock().await;
        if self.inner.generation.load(Ordering::Acquire) != seen {
            return Ok(false);
        }
        self.connect_locked().await.map(|()| true)
    }

    /// What a call that failed with `e` on the connection of generation `seen` means for
    /// the breaker: a dropped connection (a Redis restarted since it was opened; single
    /// server or Sentinel) or a demoted master (`READONLY` behind Sentinel) is renewed,
    /// and the failure is not Redis's when the new connection answers (as a master).
    async fn verdict(&self, e: &redis::RedisError, seen: u64, single: bool) -> Verdict {
        let demoted = self.sentinel() && has_code(e, "READONLY");
        let dropped = single && e.is_connection_dropped() && !e.is_timeout();
        if !demoted && !dropped {
            return Verdict::Count;
        }
        let renewal = self.renew_after(seen).await;
        match renewal {
            Renewal::InProgress => Verdict::Pending,
            Renewal::Failed => Verdict::Count,
            Renewal::Here | Renewal::Elsewhere if !demoted => {
                if renewal == Renewal::Here {
                    tracing::info!(error = %e, "Redis bridge: the connection had failed (a Redis restart?); a new one answers");
                }
                Verdict::Renewed
            }
            Renewal::Here | Renewal::Elsewhere => {
                if !self.connected_to_master().await {
                    return Verdict::Count;
                }
                if renewal == Renewal::Here {
                    self.note_renewed();
                }
                Verdict::Renewed
            }
        }
    }

    /// Opens a connection and makes it the one in use; the caller holds `reconnecting`.
    async fn connect_locked(&self) -> redis::RedisResult<()> {
        let cfg = &self.inner.cfg;
        let connect = async {
            match &cfg.topology {
                Topology::Standalone { address } => {
                    let (host, port) = split_address(address).unwrap_or_default();
                    let client = redis::Client::open(self.connection_info(host, port))?;
                    let conn = self.manager(client.clone()).await?;
                    Ok::<_, redis::RedisError>((Backend::Single(conn), vec![client]))
                }
                Topology::Sentinel {
                    sentinels,
                    master_name,
                    sentinel_password,
                } => {
                    let addrs: Vec<ConnectionAddr> = sentinels
                        .iter()
                        .filter_map(|a| split_address(a))
                        .map(|(h, p)| ConnectionAddr::Tcp(h, p))
                        .collect();
                    let mut b = redis::sentinel::SentinelClientBuilder::new(
                        addrs,
                        master_name,
                        redis::sentinel::SentinelServerType::Master,
                    )?
                    .set_client_to_redis_db(cfg.db);
                    if let Some(u) = &cfg.username {
                        b = b.set_client_to_redis_username(u);
                    }
                    if let Some(p) = &cfg.password {
                        b = b.set_client_to_redis_password(p);
                    }
                    if let Some(p) = sentinel_password {
                        b = b.set_client_to_sentinel_password(p);
                    }
                    let mut sentinel = b.build()?;
                    let client = sentinel.async_get_client().await?;
                    let conn = self.manager(client.clone()).await?;
                    Ok((Backend::Single(conn), vec![client]))
                }
                Topology::Cluster { nodes } => {
                    let infos: Vec<ConnectionInfo> = nodes
                        .iter()
                        .filter_map(|a| split_address(a))
                        .map(|(h, p)| self.connection_info(h, p))
                        .collect();
                    let mut b = redis::cluster::ClusterClientBuilder::new(infos.clone())
                        .connection_timeout(cfg.connect_timeout)
                        .response_timeout(cfg.op_timeout)
                        .retries(1);
                    if let Some(u) = &cfg.username {
                        b = b.username(u);
                    }
                    if let Some(p) = &cfg.password {
                        b = b.password(p);
                    }
                    let conn = b.build()?.get_async_connection().await?;
                    // Classic pub/sub is cluster-wide: any node carries the channel, so the
                    // subscriber may use any seed (it moves on when one fails).
                    let clients = infos
                        .into_iter()
                        .map(redis::Client::open)
                        .collect::<redis::RedisResult<Vec<_>>>()?;
                    Ok((Backend::Cluster(conn), clients))
                }
            }
        };
        let (backend, clients) = tokio::time::timeout(cfg.connect_timeout * 2, connect)
            .await
            .map_err(|_| {
                redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to Redis timed out",
                ))
            })??;
        // A PING proves the credentials before anything relies on them.
        tokio::time::timeout(
            cfg.op_timeout * 4,
            backend.query::<String>(&redis::cmd("PING")),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "PING timed out",
            ))
        })??;
        // The generation moves first: a call that reads the new generation with the old
        // connection renews once more (harmless); the other way round, a call failing on
        // the new connection would take it for an old one.
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        *self.inner.backend.write() = Some(backend);
        *self.inner.pubsub.write() = clients;
        Ok(())
    }

    fn sentinel(&self) -> bool {
        matches!(self.inner.cfg.topology, Topology::Sentinel { .. })
    }

    /// Whether the server of the connection in use is a master (`ROLE`). `Ok(true)` too
    /// when the bridge's user may not run `ROLE` (a PING's answer is all it can know).
    async fn is_master(&self, backend: &Backend) -> redis::RedisResult<bool> {
        match backend.query::<redis::Value>(&redis::cmd("ROLE")).await {
            Ok(redis::Value::Array(items)) => Ok(matches!(
                items.first(),
                Some(redis::Value::BulkString(role)) if role == b"master"
            )),
            Ok(_) => Ok(true),
            Err(e) if has_code(&e, "NOPERM") => backend
                .query::<String>(&redis::cmd("PING"))
                .await
                .map(|_| true),
            Err(e) => Err(e),
        }
    }

    /// Whether the connection in use answers `ROLE` as a master, within `op_timeout`.
    async fn connected_to_master(&self) -> bool {
        let Some(backend) = self.inner.backend.read().clone() else {
            return false;
        };
        matches!(
            tokio::time::timeout(self.inner.cfg.op_timeout, self.is_master(&backend)).await,
            Ok(Ok(true))
        )
    }

    fn note_renewed(&self) {
        bump(&self.inner.counters.renewed);
        tracing::info!(
            "Redis bridge: the master was demoted (a Sentinel failover); connected to the new one"
        );
    }

    async fn manager(&self, client: redis::Client) -> redis::RedisResult<ConnectionManager> {
        let cfg = &self.inner.cfg;
        let mc = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.op_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        ConnectionManager::new_with_config(client, mc).await
    }

    /// The client the invalidation subscriber connects with on its `attempt`th try: the
    /// server (the master, for Sentinel), or the cluster's seed nodes in turn.
    pub(crate) fn pubsub_client(&self, attempt: usize) -> Option<redis::Client> {
        let clients = self.inner.pubsub.read();
        (!clients.is_empty()).then(|| clients[attempt % clients.len()].clone())
    }

    pub(crate) fn set_subscribed(&self, on: bool) {
        self.inner.subscribed.store(on, Ordering::Release);
    }

    pub(crate) fn channel(&self) -> &str {
        &self.inner.channel
    }

    fn on_transition(&self, t: &Transition) {
        match t.to {
            BreakerState::Open => {
                bump(&self.inner.counters.opened);
                tracing::warn!(from = t.from.as_str(), reason = %t.reason, "Redis bridge circuit opened: serving from the local layers");
            }
            BreakerState::Closed => {
                bump(&self.inner.counters.closed);
                tracing::info!("Redis bridge circuit closed: Redis is back");
            }
            BreakerState::HalfOpen => {}
        }
    }

    fn fail(&self, timeout: bool, error: &str) {
        bump(&self.inner.counters.failures);
        if timeout {
            bump(&self.inner.counters.timeouts);
        }
        if let Some(t) = self
            .inner
            .breaker
            .on_failure(self.mono_ms(), timeout, error)
        {
            self.on_transition(&t);
        }
    }

    /// Runs one Redis round trip: an in-flight slot, the timeout, and the breaker's books.
    async fn call<T, F>(&self, f: impl FnOnce(Backend) -> F) -> Result<T, TierError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        self.call_tracked(f).await.map_err(|failed| failed.error)
    }

    /// [`Self::call`], telling a failure Redis may have run the command through (the
    /// request left, and no answer said it was refused: a timeout, a connection lost) from
    /// one it did not (never sent, or refused before running: `READONLY`, `OOM`, …).
    async fn call_tracked<T, F>(&self, f: impl FnOnce(Backend) -> F) -> Result<T, CallFailed>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let timeout = self.inner.cfg.op_timeout;
        let start = Instant::now();
        let generation = self.inner.generation.load(Ordering::Acquire);
        let Some(backend) = self.inner.backend.read().clone() else {
            return Err(CallFailed::unsent(TierError::Unavailable(
                "Redis not connected".into(),
            )));
        };
        let single = matches!(backend, Backend::Single(_));
        let Ok(Ok(_permit)) = tokio::time::timeout(timeout, self.inner.permits.acquire()).await
        else {
            self.fail(true, "no free in-flight slot");
            return Err(CallFailed::unsent(TierError::Failed(
                "Redis bridge: too many requests in flight".into(),
            )));
        };
        let left = timeout.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, f(backend)).await {
            Ok(Ok(v)) => {
                self.inner.breaker.on_success();
                Ok(v)
            }
            Ok(Err(e)) => {
                match self.verdict(&e, generation, single).await {
                    // The connection this call used is gone and a new one answers, or
                    // another call is finding out: not counted (nor counted as a success).
                    Verdict::Renewed | Verdict::Pending => {}
                    Verdict::Count if is_health_error(&e) => {
                        self.fail(e.is_timeout(), &e.to_string());
                    }
                    Verdict::Count => {}
                }
                Err(CallFailed {
                    maybe_ran: !refused_before_running(&e),
                    refused: refuses_writes(&e),
                    error: TierError::Failed(format!("Redis: {e}")),
                })
            }
            Err(_) => {
                self.fail(true, "timed out");
                Err(CallFailed {
                    maybe_ran: true,
                    refused: false,
                    error: TierError::Failed(format!(
                        "Redis: no reply within {} ms",
                        timeout.as_millis()
                    )),
                })
            }
        }
    }

    /// A conditional write's script failed: when Redis may have run it (a timeout, a
    /// connection lost before the answer), this node's copies of its keys may be what Redis
    /// no longer holds — and this node hears no announcement of its own change — so they go
    /// before the error is returned (a miss at worst: the next read asks Redis). Before, an
    /// `INCR` that timed out but that Redis applied left its node serving the old value for
    /// good.
    async fn outcome_unknown(
        &self,
        failed: CallFailed,
        cache: &strata_core::Cache,
        namespace: &str,
        keys: &[&[u8]],
    ) -> TierError {
        if failed.maybe_ran {
            for key in keys {
                if let Err(e) = cache.drop_local(namespace, key, None).await {
                    tracing::warn!(error = %e, "Redis bridge: a copy whose change may have run was not dropped");
                }
            }
        }
        failed.error
    }

    fn full_key(&self, namespace: &str, key: &[u8]) -> Vec<u8> {
        let p = self.inner.cfg.key_prefix.as_bytes();
        let mut k = Vec::with_capacity(p.len() + namespace.len() + key.len() + 2);
        k.extend_from_slice(p);
        k.push(b':');
        k.extend_from_slice(namespace.as_bytes());
        k.push(b':');
        k.extend_from_slice(key);
        k
    }

    /// `{escaped prefix}:{namespace}:` as a MATCH prefix.
    fn ns_match(&self, namespace: &str) -> Vec<u8> {
        let mut m = self.inner.match_prefix.clone();
        m.push(b':');
        m.extend_from_slice(namespace.as_bytes());
        m.push(b':');
        m
    }

    fn message(&self, op: Op) -> Vec<u8> {
        codec::encode_message(&Message {
            origin: self.inner.origin,
            op,
        })
    }

    /// Runs an invalidation on Redis; while the circuit is open, or when it fails, queues it
    /// for Redis's return instead (the local layers have already applied it). Returns how
    /// many keys Redis removed (0 when queued).
    async fn invalidate_or_queue<F, Fut>(&self, what: Queued<'_>, op: F) -> u64
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<u64, TierError>>,
    {
        if self.inner.breaker.allows() {
            match op().await {
                Ok(n) => return n,
                Err(e) => {
                    tracing::debug!(error = %e, "Redis bridge: invalidation queued for Redis's return");
                }
            }
        }
        bump(&self.inner.counters.bypassed_invalidations);
        self.inner.pending.lock().push(what);
        0
    }

    /// Starts a SCAN of every key matching `pattern` (a full-key MATCH pattern) on every
    /// master; pages come from [`RedisTier::next_page`].
    async fn scan(&self, pattern: Vec<u8>) -> Result<Scan, TierError> {
        let targets = self.call(|b| async move { b.scan_targets().await }).await?;
        Ok(Scan {
            targets,
            cursor: 0,
            pattern,
        })
    }

    /// The next page of keys, `None` when the scan is done.
    async fn next_page(&self, scan: &mut Scan) -> Result<Option<Vec<Vec<u8>>>, TierError> {
        let count = self.inner.cfg.scan_count;
        while let Some(target) = scan.targets.last().cloned() {
            let (cursor, pattern) = (scan.cursor, scan.pattern.as_slice());
            let (next, keys) = self
                .call(|b| async move { b.scan_page(&target, cursor, pattern, count).await })
                .await?;
            if next == 0 {
                scan.targets.pop();
                scan.cursor = 0;
            } else {
                scan.cursor = next;
            }
            if !keys.is_empty() {
                return Ok(Some(keys));
            }
        }
        Ok(None)
    }

    /// The headers of `keys` (missing or undecodable ones are `None`).
    async fn headers(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<codec::Header>>, TierError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cmds: Vec<Cmd> = keys
            .iter()
            .map(|k| {
                let mut c = redis::cmd("GETRANGE");
                c.arg(k).arg(0).arg(HEADER_PEEK - 1);
                c
            })
            .collect();
        let peeks: Vec<Vec<u8>> = self.call(|b| async move { b.batch(cmds).await }).await?;
        let mut out = Vec::with_capacity(keys.len());
        for (k, peek) in keys.iter().zip(peeks) {
            if peek.is_empty() {
                out.push(None);
                continue;
            }
            let header = match codec::header_len(&peek) {
                Ok(n) if n <= peek.len() => codec::decode_header(&peek),
                Ok(n) => {
                    let full: Vec<u8> = self
                        .call(|b| async move {
                            b.query(redis::cmd("GETRANGE").arg(k).arg(0).arg(n - 1))
                                .await
                        })
                        .await?;
                    codec::decode_header(&full)
                }
                Err(e) => Err(e),
            };
            if header.is_err() {
                bump(&self.inner.counters.corrupt);
            }
            out.push(header.ok());
        }
        Ok(out)
    }

    async fn unlink(&self, keys: &[Vec<u8>]) -> Result<u64, TierError> {
        if keys.is_empty() {
            return Ok(0);
        }
        // One UNLINK per key, batched: a Redis Cluster routes each to its slot.
        let cmds: Vec<Cmd> = keys
            .iter()
            .map(|k| {
                let mut c = redis::cmd("UNLINK");
                c.arg(k);
                c
            })
            .collect();
        let n: Vec<u64> = self.call(|b| async move { b.batch(cmds).await }).await?;
        Ok(n.iter().sum())
    }

    async fn publish(&self, op: Op) -> Result<(), TierError> {
        let msg = self.message(op);
        let channel = self.inner.channel.as_str();
        self.call(|b| async move {
            b.query::<i64>(redis::cmd("PUBLISH").arg(channel).arg(&msg))
                .await
        })
        .await
        .map(|_| ())
    }

    async fn raw_pattern(&self, namespace: &str, glob: &Glob) -> Result<u64, TierError> {
        let mut pattern = self.ns_match(namespace);
        pattern.extend_from_slice(glob.as_bytes());
        let skip = self.full_key(namespace, b"").len();
        let mut removed = 0u64;
        let mut scan = self.scan(pattern).await?;
        while let Some(keys) = self.next_page(&mut scan).await? {
            let keys: Vec<Vec<u8>> = keys
                .into_iter()
                .filter(|k| k.len() >= skip && glob.matches(&k[skip..]))
                .collect();
            removed += self.unlink(&keys).await?;
        }
        self.publish(Op::Pattern {
            namespace: namespace.to_owned(),
            pattern: glob.as_bytes().to_vec(),
        })
        .await?;
        Ok(removed)
    }

    async fn raw_tag(&self, namespace: &str, tag: &[u8]) -> Result<u64, TierError> {
        let mut pattern = self.ns_match(namespace);
        pattern.push(b'*');
        let mut removed = 0u64;
        let mut scan = self.scan(pattern).await?;
        while let Some(keys) = self.next_page(&mut scan).await? {
            let headers = self.headers(&keys).await?;
            let tagged: Vec<Vec<u8>> = keys
                .into_iter()
                .zip(headers)
                .filter(|(_, h)| h.as_ref().is_some_and(|h| h.tags.contains(tag)))
                .map(|(k, _)| k)
                .collect();
            removed += self.unlink(&tagged).await?;
        }
        self.publish(Op::Tag {
            namespace: namespace.to_owned(),
            tag: tag.to_vec(),
        })
        .await?;
        Ok(removed)
    }

    async fn raw_flush(&self, namespace: &str) -> Result<(), TierError> {
        let mut pattern = self.ns_match(namespace);
        pattern.push(b'*');
        let mut scan = self.scan(pattern).await?;
        while let Some(keys) = self.next_page(&mut scan).await? {
            self.unlink(&keys).await?;
        }
        self.publish(Op::Flush {
            namespace: namespace.to_owned(),
        })
        .await
    }

    async fn raw_remove(&self, namespace: &str, key: &[u8]) -> Result<bool, TierError> {
        let full = self.full_key(namespace, key);
        let msg = self.message(Op::Remove {
            namespace: namespace.to_owned(),
            key: key.to_vec(),
        });
        let channel = self.inner.channel.as_bytes();
        let script = &self.inner.remove_script;
        let n = self
            .call(|b| async move { b.script(script, &full, &[channel, &msg]).await })
            .await?;
        Ok(n > 0)
    }

    /// Applies what was queued while Redis was unreachable; on failure, requeues all of it
    /// (every operation is idempotent).
    pub(crate) async fn replay_pending(&self) -> Result<usize, String> {
        let work = self.inner.pending.lock().take_work();
        if work.is_empty() {
            return Ok(0);
        }
        let n = work.len();
        let result: Result<(), TierError> = async {
            for ns in &work.flushes {
                self.raw_flush(ns).await?;
            }
            for (ns, p) in &work.patterns {
                let glob = Glob::new(p).map_err(|e| TierError::Failed(e.to_string()))?;
                self.raw_pattern(ns, &glob).await?;
            }
            for (ns, t) in &work.tags {
                self.raw_tag(ns, t).await?;
            }
            for (ns, k) in &work.keys {
                if !work.flushes.contains(ns) {
                    self.raw_remove(ns, k).await?;
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                self.inner.pending.lock().applied();
                self.inner
                    .counters
                    .replayed
                    .fetch_add(n as u64, Ordering::Relaxed);
                tracing::info!(
                    operations = n,
                    "Redis bridge: applied the work queued during the outage"
                );
                Ok(n)
            }
            Err(e) => {
                self.inner.pending.lock().merge(work);
                Err(e.to_string())
            }
        }
    }

    /// Periodic upkeep, run by the node's L2 actor: a health PING while closed (a failed one
    /// opens the circuit, so it opens even without traffic), the queued work once Redis
    /// answers again, and the probe that closes an open circuit.
    pub async fn maintain(&self) {
        match self.inner.breaker.state() {
            BreakerState::Closed => {
                // The health PING is the one call that must succeed: when it fails, the
                // circuit opens at once instead of after `failure_threshold` request failures
                // (so an idle node notices a dead Redis within one interval) — unless the
                // connection was what failed and a new one answers: a Redis restarted
                // between two ticks leaves the old socket dead, and opening the circuit
                // then refused writes for `breaker_open_ms` after Redis was back — or a
                // request succeeded while the PING ran (a PING on the dead connection can
                // end after a call on the new one went through): Redis answered, and the
                // next tick's PING decides (`Breaker::health_check_failed`).
                let successes = self.inner.breaker.successes();
                if let Err(e) = self.refresh_connection().await
                    && let Some(t) = self.inner.breaker.health_check_failed(
                        self.mono_ms(),
                        successes,
                        format!("health PING failed: {e}"),
                    )
                {
                    self.on_transition(&t);
                }
                if self.inner.breaker.allows()
                    && !self.inner.pending.lock().is_empty()
                    && let Err(e) = self.replay_pending().await
                {
                    tracing::warn!(error = %e, "Redis bridge: replaying queued work failed; will retry");
                }
            }
            BreakerState::Open => {
                if self.inner.breaker.begin_probe(self.mono_ms()) {
                    let result = self.probe().await;
                    let t = self.inner.breaker.probe_result(self.mono_ms(), result);
                    self.on_transition(&t);
                }
            }
            BreakerState::HalfOpen => {}
        }
    }

    /// A PING on the connection the data path uses; when the connection itself failed
    /// (a reset, a broken pipe: a Redis restarted since it was opened), a new one is
    /// opened and PINGed instead. `Ok` when Redis answered on the connection now in use.
    /// The subscriber runs this before it reports the bridge subscribed again, so health
    /// says `up` only once commands go through.
    pub(crate) async fn refresh_connection(&self) -> Result<(), String> {
        let before = self.inner.generation.load(Ordering::Acquire);
        let (pinged, dropped) = self
            .call_noting_drop(|b| async move { b.query::<String>(&redis::cmd("PING")).await })
            .await;
        match pinged {
            // Behind Sentinel, a master demoted by a failover still answers PING; its
            // writes are refused (`READONLY`). Asked again, Sentinel names the new one.
            Ok(_) if self.sentinel() => {
                let generation = self.inner.generation.load(Ordering::Acquire);
                let Some(backend) = self.inner.backend.read().clone() else {
                    return Err("Redis not connected".into());
                };
                match tokio::time::timeout(self.inner.cfg.op_timeout, self.is_master(&backend))
                    .await
                {
                    Ok(Ok(true)) => Ok(()),
                    Ok(Ok(false)) => {
                        // The tick waits for a reconnect another call may be running.
                        let renewed_here =
                            self.reopen_unless_renewed(generation).await.map_err(|e| {
                                format!("the master was demoted; asking Sentinel again failed: {e}")
                            })?;
                        if !self.connected_to_master().await {
                            return Err("the server Sentinel names is not a master (a failover in progress?)".into());
                        }
                        if renewed_here {
                            self.note_renewed();
                        }
                        Ok(())
                    }
                    Ok(Err(e)) => Err(format!("ROLE failed: {e}")),
                    Err(_) => Err("ROLE timed out".into()),
                }
            }
            Ok(_) => Ok(()),
            // The failed PING's call renewed the connection already.
            Err(_) if dropped && self.inner.generation.load(Ordering::Acquire) != before => Ok(()),
            Err(e) if dropped => {
                let renewed_here = self
                    .reopen_unless_renewed(before)
                    .await
                    .map_err(|again| format!("{e}; a new connection failed too: {again}"))?;
                self.inner.breaker.on_success();
                if renewed_here {
                    tracing::info!(error = %e, "Redis bridge: the connection had failed (a Redis restart?); a new one answers");
                }
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// [`RedisTier::call`], and whether it failed because the connection was dropped (a
    /// reset, a broken pipe: a Redis restarted since it was opened) — not on a timeout,
    /// which redis-rs reports as an I/O error too: a Redis that hangs must open the circuit
    /// within `op_timeout`, not after a reconnect's timeouts as well.
    async fn call_noting_drop<T, F>(
        &self,
        f: impl FnOnce(Backend) -> F,
    ) -> (Result<T, TierError>, bool)
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let dropped = AtomicBool::new(false);
        let result = self
            .call(|b| {
                let dropped = &dropped;
                let op = f(b);
                async move {
                    let r = op.await;
                    if let Err(e) = &r
                        && e.is_connection_dropped()
                        && !e.is_timeout()
                    {
                        dropped.store(true, Ordering::Relaxed);
                    }
                    r
                }
            })
            .await;
        (result, dropped.load(Ordering::Relaxed))
    }

    /// What the subscriber checks before it reports itself subscribed: while the circuit
    /// is closed, that commands go through on a single Redis (or Sentinel's master), with
    /// a dead connection renewed ([`RedisTier::refresh_connection`]). Not while the circuit
    /// is open (only the probe talks to Redis then; health says so anyway), and not on a
    /// Redis Cluster, whose client reconnects by itself and whose PING needs every master
    /// (one down would keep the subscriber out until a failover).
    pub(crate) async fn check_before_subscribed(&self) -> Result<(), String> {
        let single = matches!(&*self.inner.backend.read(), Some(Backend::Single(_)));
        if !single || self.inner.breaker.state() != BreakerState::Closed {
            return Ok(());
        }
        let before = self.inner.generation.load(Ordering::Acquire);
        self.refresh_connection().await?;
        // A new connection — behind Sentinel, maybe to another server than the one the
        // subscription was just made on (a failover): subscribe again, with its client.
        if self.inner.generation.load(Ordering::Acquire) != before {
            return Err("the connection was renewed: subscribing again on the new one".into());
        }
        Ok(())
    }

    /// Reconnects (asking Sentinel again for the master), then applies the queued work.
    async fn probe(&self) -> Result<(), String> {
        self.open_backend().await.map_err(|e| e.to_string())?;
        // The circuit is half-open, so `call` reaches Redis; its failures must not count
        // toward opening it again (the probe result does that).
        self.replay_pending().await.map(|_| ())
    }

    /// Decodes a value read from Redis; garbage is a counted miss (G6).
    fn decode(&self, raw: Option<Vec<u8>>) -> Option<Entry> {
        let raw = raw?;
        match codec::decode_entry(Bytes::from(raw)) {
            Ok(e) => Some(e),
            Err(err) => {
                bump(&self.inner.counters.corrupt);
                tracing::debug!(error = %err, "Redis bridge: a value under the prefix did not decode");
                None
            }
        }
    }

    /// The versions Redis holds for `keys` of `namespace` (one pipelined `GETRANGE key 0 16`
    /// per key, 17 bytes each: the format byte and the version), `None` where Redis holds no
    /// entry in this format: what a node proves its L3 copies with after it (re)subscribes.
    /// Refused while the circuit is open.
    pub async fn versions(
        &self,
        namespace: &str,
        keys: &[Bytes],
    ) -> Result<Vec<Option<u64>>, TierError> {
        if !self.inner.breaker.allows() {
            return Err(TierError::Unavailable("Redis bridge: circuit open".into()));
        }
        let cmds: Vec<redis::Cmd> = keys
            .iter()
            .map(|k| {
                let mut c = redis::cmd("GETRANGE");
                c.arg(self.full_key(namespace, k)).arg(0).arg(16);
                c
            })
            .collect();
        let raw: Vec<Vec<u8>> = self.call(|b| async move { b.batch(cmds).await }).await?;
        Ok(raw
            .iter()
            .map(|p| codec::version_of_prefix(p).map(Version::as_u64))
            .collect())
    }

    async fn read(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, TierError> {
        if !self.inner.breaker.allows() {
            bump(&self.inner.counters.bypassed_reads);
            return Ok(None);
        }
        let full = self.full_key(namespace, key);
        let full = &full;
        let get =
            || self.call_noting_drop(|b| async move { b.query(redis::cmd("GET").arg(full)).await });
        // A read is safe to send twice: one that found the connection dead (a Redis
        // restarted since it was opened) goes again, on the connection redis-rs opens in
        // its place, instead of missing a key Redis holds.
        let raw: Option<Vec<u8>> = match get().await {
            (Err(_), true) => get().await.0?,
            (r, _) => r?,
        };
        Ok(self.decode(raw))
    }
}

#[async_trait]
impl Tier for RedisTier {
    fn layer(&self) -> Layer {
        Layer::L2
    }

    async fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, TierError> {
        let now = self.inner.clock.now_ms();
        Ok(self.read(namespace, key).await?.filter(|e| e.is_fresh(now)))
    }

    async fn get_stale(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, TierError> {
        let now = self.inner.clock.now_ms();
        Ok(self
            .read(namespace, key)
            .await?
            .filter(|e| !e.is_fresh(now) && e.is_retained(now)))
    }

    async fn set(
        &self,
        namespace: &str,
        key: Bytes,
        entry: Entry,
    ) -> Result<SetOutcome, TierError> {
        if !self.inner.breaker.allows() {
            bump(&self.inner.counters.bypassed_writes);
            self.inner.pending.lock().add_key(namespace, key);
            return Ok(SetOutcome::Skipped);
        }
        let now = self.inner.clock.now_ms();
        let px = match entry.stale_until_ms.or(entry.expires_at_ms) {
            Some(until) => {
                until.saturating_sub(now).max(1)
                    + self.inner.expiry_slack_ms.load(Ordering::Relaxed)
            }
            None => 0,
        };
        let full = self.full_key(namespace, &key);
        let payload = codec::encode_entry(&entry);
        let msg = self.message(Op::Set {
            namespace: namespace.to_owned(),
            key: key.to_vec(),
            version: entry.version.as_u64(),
        });
        let px = px.to_string();
        let channel = self.inner.channel.as_bytes();
        let script = &self.inner.set_script;
        let plausible = codec::version_hex(Version::from_parts(
            now.saturating_add(MAX_VERSION_AHEAD_MS),
            u16::MAX,
        ));
        let stored = self
            .call_tracked(|b| async move {
                b.script(
                    script,
                    &full,
                    &[&payload, px.as_bytes(), channel, &msg, &plausible],
                )
                .await
            })
            .await;
        match stored {
            Ok(1) => Ok(SetOutcome::Stored),
            Ok(_) => Ok(SetOutcome::KeptNewer),
            // Redis is up and said no (out of memory under `noeviction`, no permission,
            // writes stopped after a failed save): the write fails with its words, as it
            // would for a client of that Redis, and the manager undoes this node's copies. Kept local
            // instead, it stayed this node's alone for good: nothing reconciles a queued key
            // while the circuit stays closed.
            Err(failed) if failed.refused => Err(failed.error),
            Err(failed) => {
                // The write stands locally, and the key is unlinked in Redis once it answers
                // again, so nobody keeps serving the old value there over this one. Redis
                // may have run it (decision 94): then a removal this node heard of meanwhile
                // may be ordered after it there, and the manager checks for one.
                tracing::debug!(error = %failed.error, "Redis bridge: write kept local");
                bump(&self.inner.counters.bypassed_writes);
                self.inner.pending.lock().add_key(namespace, key);
                Ok(match failed.maybe_ran {
                    true => SetOutcome::Unconfirmed,
                    false => SetOutcome::Skipped,
                })
            }
        }
    }

    /// Conditional and read-modify-write operations execute against Redis, so that nodes
    /// sharing it see one Redis's atomicity: read the entry, compute with
    /// [`strata_core::ops::apply`], and write only if Redis still holds the version read
    /// (compare-and-set in one script, which also announces the change); recompute when
    /// another writer got there first. Refused while the circuit is open: an operation that
    /// only this node saw would not be atomic with the others.
    async fn execute(
        &self,
        cache: &strata_core::Cache,
        namespace: &str,
        key: &[u8],
        op: &strata_core::ops::KeyOp,
    ) -> Result<Option<strata_core::ops::Executed>, TierError> {
        use strata_core::ops::{self, Change, Effect, Executed, KeyOp};
        if !self.inner.breaker.allows() {
            return Err(TierError::Unavailable(
                "TRYAGAIN the Redis bridge's circuit is open: conditional writes need Redis".into(),
            ));
        }
        let full = self.full_key(namespace, key);
        let channel = self.inner.channel.as_bytes();
        let script = &self.inner.execute_script;
        for attempt in 0..EXECUTE_ATTEMPTS {
            if attempt >= 4 {
                // Others keep winning the race: back off a little, at random.
                let us = rand::random::<u64>() % (200 * attempt as u64).min(5_000);
                tokio::time::sleep(Duration::from_micros(us)).await;
            }
            let raw: Option<Vec<u8>> = self
                .call(|b| {
                    let full = full.clone();
                    async move { b.query(redis::cmd("GET").arg(&full)).await }
                })
                .await?;
            let held = match raw {
                Some(raw) => Some(codec::decode_entry(Bytes::from(raw)).map_err(|e| {
                    bump(&self.inner.counters.corrupt);
                    TierError::Failed(format!(
                        "the value in Redis is not a Strata entry ({e}): not changed"
                    ))
                })?),
                None => None,
            };
            let expected = held
                .as_ref()
                .map(|e| codec::version_hex(e.version).to_vec())
                .unwrap_or_default();
            let now = self.inner.clock.now_ms();
            if let Some(e) = held.as_ref().filter(|e| plausible_version(e.version, now)) {
                cache.observe_version(e.version);
            }
            let fresh = held.filter(|e| e.is_fresh(now));
            let (effect, reply) = ops::apply(op, fresh.as_ref(), now, cache.op_limits());
            // A removal of a key Redis no longer holds (evicted under `maxmemory`, or
            // expired) is published all the same, its reply unchanged: copies nodes hold of
            // it — this node's too — go (ARCHITECTURE decision 101).
            let effect = match effect {
                Effect::None if fresh.is_none() && matches!(op, KeyOp::Del | KeyOp::GetDel) => {
                    Effect::Delete
                }
                other => other,
            };
            let (payload, px, change, msg) = match effect {
                Effect::None => {
                    return Ok(Some(Executed {
                        reply,
                        change: Change::None,
                    }));
                }
                Effect::Write {
                    value,
                    ttl,
                    keep_tags,
                } => {
                    let entry = match cache.entry_for(
                        namespace,
                        key,
                        value,
                        ttl,
                        keep_tags,
                        fresh.as_ref(),
                    ) {
                        Ok(e) => e,
                        Err(e) => {
                            return Ok(Some(Executed {
                                reply: ops::Reply::Error(format!("ERR {e}")),
                                change: Change::None,
                            }));
                        }
                    };
                    let px = match entry.stale_until_ms.or(entry.expires_at_ms) {
                        Some(until) => {
                            until.saturating_sub(now).max(1)
                                + self.inner.expiry_slack_ms.load(Ordering::Relaxed)
                        }
                        None => 0,
                    };
                    let msg = self.message(Op::Set {
                        namespace: namespace.to_owned(),
                        key: key.to_vec(),
                        version: entry.version.as_u64(),
                    });
                    (codec::encode_entry(&entry), px, Change::Written(entry), msg)
                }
                Effect::Delete => {
                    let version = cache.observe_version(strata_core::Version::from_u64(0));
                    let msg = self.message(Op::Remove {
                        namespace: namespace.to_owned(),
                        key: key.to_vec(),
                    });
                    (Vec::new(), 0, Change::Removed(version), msg)
                }
            };
            let px = px.to_string();
            let done: Result<i64, _> = self
                .call_tracked(|b| {
                    let (full, expected, payload, msg) = (&full, &expected, &payload, &msg);
                    let px = px.as_bytes();
                    async move {
                        b.script(script, full, &[expected, payload, px, channel, msg])
                            .await
                    }
                })
                .await;
            let done = match done {
                Ok(done) => done,
                Err(failed) => {
                    return Err(self.outcome_unknown(failed, cache, namespace, &[key]).await);
                }
            };
            if done == 1 {
                return Ok(Some(Executed { reply, change }));
            }
            bump(&self.inner.counters.execute_retries);
        }
        Err(TierError::Unavailable(format!(
            "TRYAGAIN other writers changed the key {EXECUTE_ATTEMPTS} times while this node computed"
        )))
    }

    /// Multi-key operations (`MSETNX`, `RENAME`, a transaction) execute against Redis as
    /// single-key ones do: read every key in one `MGET` (one snapshot), compute with
    /// [`strata_core::ops::apply_multi`], and write every change only if no key's version
    /// moved since (one script, which also announces the changes); recompute otherwise. On
    /// a Redis Cluster the keys must share a slot (Redis answers `CROSSSLOT` otherwise).
    async fn execute_multi(
        &self,
        cache: &strata_core::Cache,
        namespace: &str,
        op: &strata_core::ops::MultiOp,
    ) -> Result<Option<strata_core::ops::ExecutedMulti>, TierError> {
        use strata_core::ops::{self, Change, Effect, ExecutedMulti};
        if !self.inner.breaker.allows() {
            return Err(TierError::Unavailable(
                "TRYAGAIN the Redis bridge's circuit is open: conditional writes need Redis".into(),
            ));
        }
        let keys: Vec<Vec<u8>> = op.keys().into_iter().map(<[u8]>::to_vec).collect();
        if keys.is_empty() {
            return Ok(None);
        }
        let full: Vec<Vec<u8>> = keys.iter().map(|k| self.full_key(namespace, k)).collect();
        // Where the keys' values could pass the operation's bound, their sizes first (one
        // round trip), so that a refusal reads none of them: the `MGET` below reads them
        // all at once (150 keys of 16 MiB were 2.4 GB read before the bound was checked,
        // and the read's timeout opened the circuit for every operation; review
        // helper-120).
        let bound = cache.multi_load().limit();
        if keys.len().saturating_mul(cache.op_limits().max_value) > bound {
            let sizes: Vec<usize> = self
                .call(|b| {
                    let cmds = full
                        .iter()
                        .map(|k| {
                            let mut c = redis::cmd("STRLEN");
                            c.arg(k.as_slice());
                            c
                        })
                        .collect();
                    async move { b.batch(cmds).await }
                })
                .await?;
            let mut probe = cache.multi_load();
            for size in sizes {
                if let Err(e) = probe.charge(size) {
                    return Ok(Some(ExecutedMulti {
                        reply: ops::Reply::Error(e.to_string()),
                        changes: Vec::new(),
                    }));
                }
            }
        }
        let channel = self.inner.channel.as_bytes().to_vec();
        let script = &self.inner.execute_multi_script;
        let started = Instant::now();
        for attempt in 0..EXECUTE_ATTEMPTS {
            // A user script is recomputed on every attempt: bounded in time, not only in
            // attempts (each could run up to the script time limit).
            if started.elapsed() > EXECUTE_MULTI_DEADLINE {
                break;
            }
            if attempt >= 4 {
                let us = rand::random::<u64>() % (200 * attempt as u64).min(5_000);
                tokio::time::sleep(Duration::from_micros(us)).await;
            }
            let raws: Vec<Option<Vec<u8>>> = self
                .call(|b| {
                    let mut cmd = redis::cmd("MGET");
                    for k in &full {
                        cmd.arg(k.as_slice());
                    }
                    async move { b.query(&cmd).await }
                })
                .await?;
            let now = self.inner.clock.now_ms();
            let mut expected = Vec::with_capacity(keys.len());
            let mut fresh = Vec::with_capacity(keys.len());
            for raw in raws {
                let held = match raw {
                    Some(raw) => Some(codec::decode_entry(Bytes::from(raw)).map_err(|e| {
                        bump(&self.inner.counters.corrupt);
                        TierError::Failed(format!(
                            "the value in Redis is not a Strata entry ({e}): not changed"
                        ))
                    })?),
                    None => None,
                };
                expected.push(
                    held.as_ref()
                        .map(|e| codec::version_hex(e.version).to_vec())
                        .unwrap_or_default(),
                );
                if let Some(e) = held.as_ref().filter(|e| plausible_version(e.version, now)) {
                    cache.observe_version(e.version);
                }
                fresh.push(held.filter(|e| e.is_fresh(now)));
            }
            // Bounded as the cache's own execution is (`Cache::multi_load`).
            let mut load = cache.multi_load();
            let refs: Vec<Option<&strata_core::Entry>> = fresh.iter().map(Option::as_ref).collect();
            let charged = load.charge_entries(refs.iter().copied());
            let (effects, reply) = match charged {
                Ok(()) => cache.apply_multi(op, &refs, now),
                Err(e) => (Vec::new(), ops::Reply::Error(e.to_string())),
            };
            if let Err(e) = load.charge_writes(&effects) {
                return Ok(Some(ExecutedMulti {
                    reply: ops::Reply::Error(e.to_string()),
                    changes: Vec::new(),
                }));
            }
            if effects.is_empty() {
                return Ok(Some(ExecutedMulti {
                    reply,
                    changes: Vec::new(),
                }));
            }
            // Per key: (action, payload, px, message).
            let mut plan: Vec<(&[u8], Vec<u8>, u64, Vec<u8>)> =
                vec![(&b"k"[..], Vec::new(), 0, Vec::new()); keys.len()];
            let mut changes = Vec::with_capacity(effects.len());
            for fx in effects {
                let key = &keys[fx.key];
                match fx.effect {
                    Effect::None => {}
                    Effect::Write {
                        value,
                        ttl,
                        keep_tags,
                    } => {
                        let entry = match cache.entry_for(
                            namespace,
                            key,
                            value,
                            ttl,
                            keep_tags,
                            fresh[fx.tags_from].as_ref(),
                        ) {
                            Ok(e) => e,
                            Err(e) => {
                                return Ok(Some(ExecutedMulti {
                                    reply: ops::Reply::Error(format!("ERR {e}")),
                                    changes: Vec::new(),
                                }));
                            }
                        };
                        let px = match entry.stale_until_ms.or(entry.expires_at_ms) {
                            Some(until) => {
                                until.saturating_sub(now).max(1)
                                    + self.inner.expiry_slack_ms.load(Ordering::Relaxed)
                            }
                            None => 0,
                        };
                        let msg = self.message(Op::Set {
                            namespace: namespace.to_owned(),
                            key: key.clone(),
                            version: entry.version.as_u64(),
                        });
                        plan[fx.key] = (b"s", codec::encode_entry(&entry), px, msg);
                        changes.push((Bytes::copy_from_slice(key), Change::Written(entry)));
                    }
                    // A removal of a key Redis no longer holds (evicted, say) is published
                    // all the same, as a plain `DEL` always is: copies nodes hold of it go.
                    Effect::Delete => {
                        let version = cache.observe_version(strata_core::Version::from_u64(0));
                        let msg = self.message(Op::Remove {
                            namespace: namespace.to_owned(),
                            key: key.clone(),
                        });
                        plan[fx.key] = (b"d", Vec::new(), 0, msg);
                        changes.push((Bytes::copy_from_slice(key), Change::Removed(version)));
                    }
                }
            }
            let mut args = Vec::with_capacity(1 + 5 * keys.len());
            args.push(channel.clone());
            for (i, (action, payload, px, msg)) in plan.into_iter().enumerate() {
                args.push(std::mem::take(&mut expected[i]));
                args.push(action.to_vec());
                args.push(payload);
                args.push(px.to_string().into_bytes());
                args.push(msg);
            }
            let done: Result<i64, _> = self
                .call_tracked(|b| {
                    let (full, args) = (&full, &args);
                    async move { b.script_keys(script, full, args).await }
                })
                .await;
            let done = match done {
                Ok(done) => done,
                Err(failed) => {
                    let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                    return Err(self.outcome_unknown(failed, cache, namespace, &keys).await);
                }
            };
            if done == 1 {
                return Ok(Some(ExecutedMulti { reply, changes }));
            }
            bump(&self.inner.counters.execute_retries);
        }
        Err(TierError::Unavailable(format!(
            "TRYAGAIN other writers changed the keys {EXECUTE_ATTEMPTS} times while this node computed"
        )))
    }

    async fn remove(&self, namespace: &str, key: &[u8]) -> Result<bool, TierError> {
        let n = self
            .invalidate_or_queue(Queued::Key(namespace, key), || async {
                self.raw_remove(namespace, key).await.map(u64::from)
            })
            .await;
        Ok(n > 0)
    }

    async fn remove_version(
        &self,
        namespace: &str,
        key: &[u8],
        version: Version,
    ) -> Result<bool, TierError> {
        if !self.inner.breaker.allows() {
            return Ok(false);
        }
        let full = self.full_key(namespace, key);
        let hex = codec::version_hex(version);
        let msg = self.message(Op::Remove {
            namespace: namespace.to_owned(),
            key: key.to_vec(),
        });
        let channel = self.inner.channel.as_bytes();
        let script = &self.inner.remove_version_script;
        let n = self
            .call(|b| async move { b.script(script, &full, &[&hex, channel, &msg]).await })
            .await?;
        Ok(n > 0)
    }

    async fn invalidate_pattern(&self, namespace: &str, pattern: &Glob) -> Result<u64, TierError> {
        Ok(self
            .invalidate_or_queue(Queued::Pattern(namespace, pattern.as_bytes()), || {
                self.raw_pattern(namespace, pattern)
            })
            .await)
    }

    async fn invalidate_tag(&self, namespace: &str, tag: &[u8]) -> Result<u64, TierError> {
        Ok(self
            .invalidate_or_queue(Queued::Tag(namespace, tag), || self.raw_tag(namespace, tag))
            .await)
    }

    async fn flush_namespace(&self, namespace: &str) -> Result<(), TierError> {
        self.invalidate_or_queue(Queued::Flush(namespace), || async {
            self.raw_flush(namespace).await.map(|()| 0)
        })
        .await;
        Ok(())
    }

    async fn purge_expired(&self) -> Result<u64, TierError> {
        if !self.inner.breaker.allows() {
            return Ok(0);
        }
        let now = self.inner.clock.now_ms();
        let mut pattern = self.inner.match_prefix.clone();
        pattern.extend_from_slice(b":*");
        let mut removed = 0u64;
        let mut scan = self.scan(pattern).await?;
        while let Some(keys) = self.next_page(&mut scan).await? {
            let headers = self.headers(&keys).await?;
            let expired: Vec<Vec<u8>> = keys
                .into_iter()
                .zip(headers)
                .filter(|(_, h)| {
                    h.as_ref().is_some_and(|h| {
                        let until = h.stale_until_ms.or(h.expires_at_ms);
                        until.is_some_and(|u| now >= u)
                    })
                })
                .map(|(k, _)| k)
                .collect();
            removed += self.unlink(&expired).await?;
        }
        Ok(removed)
    }

    async fn scan_keys(
        &self,
        namespace: &str,
        from: ScanFrom<'_>,
        limit: usize,
    ) -> Result<Vec<Bytes>, TierError> {
        if !self.inner.breaker.allows() {
            return Ok(Vec::new());
        }
        let now = self.inner.clock.now_ms();
        let mut pattern = self.ns_match(namespace);
        pattern.push(b'*');
        let skip = self.full_key(namespace, b"").len();
        let mut found: Vec<Bytes> = Vec::new();
        let mut scan = self.scan(pattern).await?;
        while let Some(keys) = self.next_page(&mut scan).await? {
            let keys: Vec<Vec<u8>> = keys
                .into_iter()
                .filter(|k| k.len() >= skip && from.admits(scan_hash(&k[skip..]), &k[skip..]))
                .collect();
            let headers = self.headers(&keys).await?;
            for (k, h) in keys.into_iter().zip(headers) {
                if h.is_some_and(|h| h.expires_at_ms.is_none_or(|at| now < at)) {
                    found.push(Bytes::copy_from_slice(&k[skip..]));
                }
            }
        }
        strata_core::scan::sort_keys(&mut found);
        found.truncate(limit);
        Ok(found)
    }

    async fn namespaces(&self) -> Result<Vec<String>, TierError> {
        if !self.inner.breaker.allows() {
            return Ok(Vec::new());
        }
        let mut pattern = self.inner.match_prefix.clone();
        pattern.extend_from_slice(b":*");
        let skip = self.inner.cfg.key_prefix.len() + 1;
        let mut names = BTreeSet::new();
        let mut scan = self.scan(pattern).await?;
        while let Some(keys) = self.next_page(&mut scan).await? {
            for k in keys {
                if let Some(rest) = k.get(skip..)
                    && let Some(end) = rest.iter().position(|&b| b == b':')
                    && let Ok(ns) = std::str::from_utf8(&rest[..end])
                {
                    names.insert(ns.to_owned());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    fn health(&self) -> TierHealth {
        match self.inner.breaker.state() {
            BreakerState::Closed if self.inner.subscribed.load(Ordering::Acquire) => TierHealth::Up,
            BreakerState::Closed => {
                TierHealth::Degraded("Redis bridge: invalidation channel not subscribed".into())
            }
            s => TierHealth::Degraded(format!(
                "Redis bridge circuit {}: {}",
                s.as_str(),
                self.inner.breaker.last_reason()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_turns_further_work_into_namespace_flushes() {
        let mut p = Pending::default();
        for i in 0..MAX_PENDING {
            p.add_key("a", Bytes::from(i.to_string()));
        }
        assert!(p.full());
        p.add_key("b", Bytes::from_static(b"k"));
        p.push(Queued::Pattern("c", b"x*"));
        p.push(Queued::Tag("d", b"t"));
        assert_eq!(p.len(), MAX_PENDING + 3);
        assert!(["b", "c", "d"].iter().all(|ns| p.flushes.contains(*ns)));
        // Keys of a namespace already queued for a flush are covered by it.
        p.add_key("b", Bytes::from_static(b"k2"));
        assert_eq!(p.len(), MAX_PENDING + 3);
        let mut q = Pending::default();
        q.push(Queued::Key("a", b"0"));
        q.merge(p);
        // The keys of "a" overflow once more, so "a" becomes a flush too: the bound holds
        // (at most one flush per namespace beyond it) and nothing is forgotten.
        assert!(
            q.len() <= MAX_PENDING + 4,
            "merging keeps the bound: {}",
            q.len()
        );
        assert!(
            ["a", "b", "c", "d"]
                .iter()
                .all(|ns| q.flushes.contains(*ns))
        );
    }
}
