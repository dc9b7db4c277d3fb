//! Redis commands on a Strata node.
//!
//! The keyspace is Strata's: strings only (so no command ever meets a key of another type and
//! `WRONGTYPE` never arises; commands of other types are unknown commands), database `N` is
//! namespace `dbN` and `SELECT` also accepts a namespace name, and every TTL obeys the
//! namespace's policy — a key set without a TTL gets the namespace's `default_ttl`, and a TTL
//! above `max_ttl` (or `PERSIST` where a `max_ttl` exists) is refused with an error naming the
//! limit. Replies and error strings are Redis's own.
//!
//! Every write holds its key's lock (striped), so read-modify-write commands are atomic on
//! this node; reads take no lock, and an L1 hit is answered without leaving the connection's
//! task.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use strata_core::entry::Entry;
use strata_core::glob::Glob;
pub use strata_core::ops::parse_int;
use strata_core::ops::{self, KeyOp, MultiOp, Ttl, TtlQuery, range_of};
use strata_core::scan::{ScanFrom, scan_hash};
use strata_core::{CacheError, SetOptions};
use strata_resp::{Protocol, Reply};

use crate::acl::{self, User};
use crate::state::{ClientInfo, Shared};

mod cluster;
mod connection;
mod error;
mod keyops;
mod keyspace;
pub mod latency;
pub mod multi;
pub mod pubsub;
pub mod scripting;
mod server;
pub mod slowlog;
mod strings;
mod table;
pub mod tracking;

pub use error::ReplyError;
pub use table::{COMMANDS, Cmd, CommandSpec, lookup};

use connection::*;
use keyspace::*;
use server::*;
use strings::*;

/// The Redis version Strata answers as (INFO, HELLO): the command set it follows.
pub const REDIS_COMPAT_VERSION: &str = "7.4.0";

/// One connection's state.
pub struct Session<'a> {
    /// Server-wide state.
    pub shared: &'a Shared,
    /// This client's entry in `CLIENT LIST`.
    pub info: Arc<ClientInfo>,
    /// The selected namespace.
    pub ns: String,
    /// The selected database index, if a numbered database is selected.
    pub db: Option<u32>,
    /// The hold on a namespace selected by name: it is not reclaimed while selected.
    pub ns_hold: Option<strata_core::NamespaceHold>,
    /// The user the connection runs as: `None` until `AUTH` succeeds (unless the default
    /// user needs no password).
    pub user: Option<Arc<User>>,
    /// Failed `AUTH` attempts on this connection (each waits longer before its reply).
    pub auth_failures: u32,
    /// A wait before this command's reply is sent (after a failed `AUTH`).
    pub reply_delay: Option<std::time::Duration>,
    /// Replies waiting to be written.
    pub reply: Reply,
    /// Set by QUIT: close after the reply.
    pub quit: bool,
    /// `MULTI`'s queue and the watched keys.
    pub tx: multi::TxState,
    /// Channels and patterns subscribed to, and the queue of messages (and tracking
    /// notices) for the connection.
    pub sub: Option<crate::pubsub::Subscription>,
    /// `CLIENT TRACKING`.
    pub tracking: tracking::ClientTracking,
    /// Whether the connection came in on `server.cluster_listen`: a key whose slot another
    /// member is primary of is answered `-MOVED`.
    pub cluster_mode: bool,
    /// `READONLY`: on the cluster listener, reads of slots this node replicates run here.
    pub readonly: bool,
}

/// Connections' subscriptions being given up on the blocking pool at once, at most
/// [`MAX_CLOSERS`] (a mass disconnect could otherwise fill the pool, every thread waiting
/// for the subscription table's lock, with L3's reads queued behind them).
static CLOSERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const MAX_CLOSERS: usize = 2;

/// One of [`CLOSERS`], given back when dropped (also when the pool, shutting down, drops
/// the task unrun).
struct Closer;

impl Drop for Closer {
    fn drop(&mut self) {
        CLOSERS.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Session<'_> {
    /// A connection that held many subscriptions gives them up on the blocking pool: leaving
    /// 10,000 patterns takes the pattern table's lock 40 times and rebuilds its snapshots,
    /// which on a worker kept other clients' requests unread meanwhile ([`pace`]). It is
    /// taken out of delivery first, here (no push is queued for it, a tracking redirect to
    /// it is broken at once); its names leave the table on the pool. The connection's id is
    /// never used again, so nothing subscribed later can be taken.
    fn drop(&mut self) {
        let Some(mut sub) = self.sub.take() else {
            return;
        };
        if sub.count() + sub.shard_count() <= PACE_ITEMS
            || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        sub.detach();
        if CLOSERS.fetch_add(1, Ordering::AcqRel) >= MAX_CLOSERS {
            CLOSERS.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let closer = Closer;
        tokio::task::spawn_blocking(move || {
            drop(sub);
            drop(closer);
        });
    }
}

impl<'a> Session<'a> {
    /// A fresh connection: database 0, RESP2, authenticated only if no password is set.
    pub fn new(shared: &'a Shared, info: Arc<ClientInfo>) -> Self {
        let user = shared.acl.read().initial_user();
        Self {
            shared,
            info,
            ns: "db0".into(),
            db: Some(0),
            ns_hold: None,
            user,
            auth_failures: 0,
            reply_delay: None,
            reply: Reply::new(Protocol::Resp2),
            quit: false,
            tx: multi::TxState::default(),
            sub: None,
            tracking: tracking::ClientTracking::default(),
            cluster_mode: false,
            readonly: false,
        }
    }

    fn sync_detail(&self) {
        let mut d = self.info.detail.lock();
        d.namespace.clone_from(&self.ns);
        d.db = self.db;
        d.resp = self.reply.proto.version();
        if let Some(u) = &self.user
            && d.user != u.name
        {
            d.user.clone_from(&u.name);
        }
    }
}

/// The system clock, for bounds checks only; expiries use the node's clock
/// (`Cache::now_ms`), the time base of every stored expiry.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn eq_ic(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_lowercase()
}

/// The error reply for a cache error, naming the limit where a policy refused.
fn cache_err(e: &CacheError) -> ReplyError {
    match e {
        CacheError::PolicyViolation {
            namespace,
            requested,
            allowed,
        } => {
            let what = if *requested == Duration::MAX {
                "no expiry".to_owned()
            } else {
                format!("a TTL of {} ms", requested.as_millis())
            };
            ReplyError::err(format!(
                "policy violation: {what} exceeds the max_ttl of {} seconds of namespace '{namespace}'",
                allowed.as_secs()
            ))
        }
        CacheError::InvalidTtl { .. } => ReplyError::err("invalid expire time"),
        // Redis's answer when it refuses writes because it cannot persist.
        CacheError::L3Failing { reason } => ReplyError::coded(
            "MISCONF",
            format_args!(
                "Strata's L3 disk cannot apply writes ({reason}). Commands that may modify \
                 the data set are disabled, because l3.on_failure is \"refuse_writes\". Please \
                 check /health and the node's log for details."
            ),
        ),
        // Its text is Redis's `OOM` error line.
        CacheError::MultiLoadTooLarge { .. } => ReplyError::Line(e.to_string()),
        // A cluster write its primary could not acknowledge: Redis Cluster's word for a
        // transient refusal, so that clients retry.
        CacheError::Tier {
            source: strata_core::TierError::Unavailable(why),
            ..
        } if why.starts_with("TRYAGAIN")
            || why.starts_with("CROSSSLOT")
            || why.starts_with("ERR ") =>
        {
            ReplyError::Line(why.clone())
        }
        other => ReplyError::err(other.to_string()),
    }
}

/// A command's result: its reply is written to the session; an error is its error reply.
type Res<T> = Result<T, ReplyError>;

/// Most writes of a pipeline run as one group ([`execute_sets`]).
pub const MAX_SET_GROUP: usize = 64;

/// Items (keys, channels, patterns) a command handles between two turns it gives the
/// runtime ([`pace`]).
pub const PACE_ITEMS: usize = 1024;

/// Gives the runtime a turn before item `i` of a long command, once every [`PACE_ITEMS`]
/// items. A command whose items are all answered from memory never waits, so without it the
/// worker running it never looks at the sockets: tokio has one poller, held by whichever
/// worker went idle, and the other idle worker is woken only when two tasks are queued. A
/// client whose request arrived alone could then keep every other client's request unread
/// for as long as it ran (a `PSUBSCRIBE` of 10,000 patterns held a bystander's `PING` for
/// 60-116 ms in a debug build, an `EXISTS` of 300,000 keys for 275-296 ms; review
/// helper-121). A yielded task lets the worker poll the sockets before it goes on.
pub async fn pace(i: usize) {
    if i > 0 && i % PACE_ITEMS == 0 {
        tokio::task::yield_now().await;
    }
}

/// The single-key writes that run at the key's authority and nowhere else ([`exec`]): the
/// counters, `SETNX`, `GETSET`/`GETDEL`, `APPEND`, `SETRANGE`, the bit writes and the expiry
/// changes. A pattern, so that `run`'s match stays exhaustive over [`Cmd`] with one list.
macro_rules! single_key_write {
    () => {
        Cmd::Setnx
            | Cmd::Setbit
            | Cmd::Bitfield
            | Cmd::Getdel
            | Cmd::Getset
            | Cmd::Append
            | Cmd::Setrange
            | Cmd::Incr
            | Cmd::Decr
            | Cmd::Incrby
            | Cmd::Decrby
            | Cmd::Incrbyfloat
            | Cmd::Expire
            | Cmd::Pexpire
            | Cmd::Expireat
            | Cmd::Pexpireat
            | Cmd::Persist
    };
}

/// Whether `args` may join a group of a pipeline's writes ([`execute_sets`]): a `SET` (with
/// or without options) or another single-key write that runs at the key's authority (INCR,
/// SETNX, APPEND, EXPIRE…; not one that answers with the old value) with the right number
/// of arguments, from a client logged in with every permission, not in `MULTI` and not
/// subscribed, so that no check of [`execute`] could refuse it. (A write is not a read a
/// tracking client records.)
pub fn groupable(s: &Session<'_>, args: &[Bytes]) -> bool {
    let Some((_, spec)) = args.first().and_then(|name| lookup(name)) else {
        return false;
    };
    let n = args.len() as i32;
    // Writes that answer with the old value (`GETSET`, `GETDEL`, `SET … GET`) run alone: a
    // group's replies are held until all are done, and 64 old values of 16 MiB would pass
    // the output limit where the same pipeline run one by one is flushed as it goes.
    let returns_value = matches!(spec.id, Cmd::Getset | Cmd::Getdel)
        || (spec.id == Cmd::Set && args[3.min(args.len())..].iter().any(|o| eq_ic(o, "GET")));
    (spec.id == Cmd::Set || matches!(spec.id, single_key_write!()))
        && !returns_value
        && ((spec.arity > 0 && n == spec.arity) || (spec.arity < 0 && n >= -spec.arity))
        && !s.tx.in_multi()
        && !pubsub::in_subscribed_mode(s)
        && s.user.as_ref().is_some_and(|u| u.unrestricted())
        && cluster::check_route(s.shared, s, spec, args).is_ok()
}

/// Runs a pipeline's consecutive writes (each [`groupable`], on distinct keys) at once and
/// appends their replies in order: each is executed as [`execute`] would (a blind `SET`
/// under its key's shared lock, any other write under its exclusive lock at the key's
/// authority), but the group waits once for its writes (an L3 group commit, a cluster
/// primary's answers) instead of once per command. A reply still goes out only after its
/// write is on every local layer, or acknowledged by the cluster's owners.
pub async fn execute_sets(shared: &Shared, s: &mut Session<'_>, group: &[Vec<Bytes>]) {
    let since_start = s.info.connected.elapsed().as_millis() as u64;
    s.info.last_cmd_ms.store(since_start, Ordering::Relaxed);
    // Each write is a command that `CLIENT CACHING` would have applied to.
    s.tracking.caching = false;
    let results = {
        let ns = &s.ns;
        futures_util::future::join_all(group.iter().map(|a| async move {
            let (idx, spec) = lookup(&a[0])?;
            shared.metrics.calls[idx].incr();
            // Each write's own time, for LATENCY and SLOWLOG (not the group's).
            let started = std::time::Instant::now();
            let result = strings::write_one(shared, ns, spec.id, a).await;
            Some((idx, result, started.elapsed()))
        }))
        .await
    };
    for (result, args) in results.into_iter().zip(group) {
        let Some((idx, result, took)) = result else {
            continue;
        };
        s.info.last_cmd.store(idx, Ordering::Relaxed);
        if let Err(e) = result.and_then(|reply| write_reply(s, reply)) {
            shared.metrics.errors[idx].incr();
            s.reply.error(&e.to_string());
        }
        record_timing(shared, s, args, took);
    }
}

/// A command's time, for `LATENCY` and (when it is slow enough) `SLOWLOG`, under the
/// client's current name.
fn record_timing(shared: &Shared, s: &Session<'_>, args: &[Bytes], took: Duration) {
    shared.latency.record("command", took);
    if shared.slowlog.wants(took) {
        let name = s.info.detail.lock().name.clone().unwrap_or_default();
        shared
            .slowlog
            .record(took, args, s.info.addr.to_string(), name);
    }
}

/// `GET`: the hot read, in a future of its own (an L1 hit is ready at once).
async fn get(sh: &Shared, s: &mut Session<'_>, key: &[u8]) -> Res<()> {
    if s.tx.watching() {
        return Box::pin(get_watched(sh, s, key)).await;
    }
    match sh.cache.get(&s.ns, key).await {
        Ok(Some(v)) => s.reply.bulk(&v),
        Ok(None) => s.reply.null(),
        Err(e) => return Err(cache_err(&e)),
    }
    Ok(())
}

/// `GET` by a client that watches keys: never older than what its `WATCH` read.
async fn get_watched(sh: &Shared, s: &mut Session<'_>, key: &[u8]) -> Res<()> {
    match client_entry(sh, s, key).await? {
        Some(e) => s.reply.bulk(&e.value),
        None => s.reply.null(),
    }
    Ok(())
}

/// Runs one command and appends its reply.
pub async fn execute(shared: &Shared, s: &mut Session<'_>, args: &[Bytes]) {
    let Some(name) = args.first() else {
        return;
    };
    // One clock read for both the client's idle time and the command's own (the clock was
    // 5 % of a pipelined GET's CPU with a read for each).
    let started = std::time::Instant::now();
    let since_start = started
        .saturating_duration_since(s.info.connected)
        .as_millis() as u64;
    s.info.last_cmd_ms.store(since_start, Ordering::Relaxed);
    // `CLIENT CACHING` holds for the next command, or the whole transaction, whatever that
    // command turns out to be (refused ones included, as in Redis).
    let caching = s.tracking.caching;
    if caching && !s.tx.in_multi() && !eq_ic(name, "CLIENT") {
        s.tracking.caching = false;
    }
    let Some((idx, spec)) = lookup(name) else {
        shared.metrics.calls[COMMANDS.len()].incr();
        shared.metrics.errors[COMMANDS.len()].incr();
        let mut msg = format!(
            "unknown command '{}', with args beginning with: ",
            String::from_utf8_lossy(&name[..name.len().min(128)])
        );
        // As Redis: arguments are echoed while the echo is under 128 bytes, each cut to what
        // is left of them.
        let mut echoed = 0usize;
        for a in args.iter().skip(1) {
            if echoed >= 128 {
                break;
            }
            let part = &a[..a.len().min(128 - echoed)];
            echoed += part.len() + 3;
            let _ = write!(msg, "'{}' ", String::from_utf8_lossy(part));
        }
        s.tx.flag_error();
        s.reply.error(&ReplyError::err(msg).to_string());
        return;
    };
    shared.metrics.calls[idx].incr();
    s.info.last_cmd.store(idx, Ordering::Relaxed);
    let n = args.len() as i32;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        shared.metrics.errors[idx].incr();
        s.tx.flag_error();
        let why = format!(
            "wrong number of arguments for '{}' command",
            spec.name.to_ascii_lowercase()
        );
        if spec.id == Cmd::Exec {
            // Redis 7 ends the transaction (and the watches) on an EXEC it refuses.
            multi::abort(s);
            s.reply.error(&format!(
                "EXECABORT Transaction discarded because of: {why}"
            ));
        } else {
            s.reply.error(&ReplyError::err(why).to_string());
        }
        return;
    }
    match &s.user {
        None if !matches!(spec.id, Cmd::Auth | Cmd::Hello | Cmd::Quit | Cmd::Reset) => {
            shared.metrics.errors[idx].incr();
            s.reply.error("NOAUTH Authentication required.");
            return;
        }
        Some(u) if !u.unrestricted() => {
            if let Err(msg) = acl::permit(u, spec, args, &s.ns) {
                shared.metrics.errors[idx].incr();
                shared.metrics.acl_denied.incr();
                s.tx.flag_error();
                s.reply.error(&msg);
                return;
            }
        }
        _ => {}
    }
    if pubsub::in_subscribed_mode(s) && !pubsub::allowed_while_subscribed(spec.id) {
        shared.metrics.errors[idx].incr();
        s.reply.error(&format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            spec.name.to_ascii_lowercase()
        ));
        return;
    }
    if let Err(e) = cluster::check_route(shared, s, spec, args) {
        shared.metrics.errors[idx].incr();
        s.tx.flag_error();
        s.reply.error(&e.to_string());
        return;
    }
    if s.tx.in_multi() && !multi::runs_at_once(spec.id) {
        multi::queue(shared, s, spec, args);
        return;
    }
    // A tracking client's read records its keys before it reads (so a change it may miss
    // is announced to it), and their expiries after.
    if let Some(t) = &s.tracking.tracker {
        t.command_starts();
    }
    let tracked: Vec<Bytes> = if !s.tracking.records(caching) {
        Vec::new()
    } else if spec.id == Cmd::Exec {
        tracking::queued_read_keys(s)
    } else {
        tracking::read_keys(spec, args)
            .into_iter()
            .map(Bytes::copy_from_slice)
            .collect()
    };
    // In turns of `PACE_ITEMS` keys (an `MGET` of 100,000 keys by a tracking client held
    // every other client 125 ms here, review helper-122).
    for (i, keys) in tracked.chunks(PACE_ITEMS).enumerate() {
        if i > 0 {
            tokio::task::yield_now().await;
        }
        shared
            .tracking
            .remember(s.info.id, keys.iter().map(|k| &k[..]));
    }
    // This future is moved whole at every command (into the connection's), so it must stay
    // small: `run`'s is the largest of every command's (3.6 KiB), and was held twice here.
    // A `GET` runs in a future of its own; anything else is boxed (measured in
    // docs/benchmarks.md, "A command's future, moved whole").
    let (result, served) = if !tracked.is_empty() {
        Box::pin(strata_core::changes::served_expiries(run(
            shared, s, spec.id, args,
        )))
        .await
    } else if spec.id == Cmd::Get {
        (get(shared, s, &args[1]).await, Vec::new())
    } else {
        (Box::pin(run(shared, s, spec.id, args)).await, Vec::new())
    };
    let took = started.elapsed();
    if !tracked.is_empty() {
        let keys: Vec<&[u8]> = tracked.iter().map(|k| &k[..]).collect();
        tracking::note_expiries(shared, &s.ns, &keys, &served).await;
    }
    if matches!(spec.id, Cmd::Exec | Cmd::Discard) {
        s.tracking.caching = false;
    }
    if let Err(msg) = result {
        shared.metrics.errors[idx].incr();
        s.reply.error(&msg.to_string());
    }
    if let Some(wait) = s.reply_delay.take() {
        tokio::time::sleep(wait).await;
    }
    if matches!(
        spec.id,
        Cmd::Client | Cmd::Select | Cmd::Hello | Cmd::Reset | Cmd::Auth
    ) {
        s.sync_detail();
    }
    // After the name is synced: `CLIENT SETNAME x` is logged under `x`, as Redis logs it.
    record_timing(shared, s, args, took);
}

async fn run(sh: &Shared, s: &mut Session<'_>, id: Cmd, a: &[Bytes]) -> Res<()> {
    match id {
        Cmd::Multi => multi::multi(s)?,
        Cmd::Eval => scripting::eval(sh, s, a, false, false).await?,
        Cmd::EvalRo => scripting::eval(sh, s, a, false, true).await?,
        Cmd::Evalsha => scripting::eval(sh, s, a, true, false).await?,
        Cmd::EvalshaRo => scripting::eval(sh, s, a, true, true).await?,
        Cmd::Script => scripting::script(sh, s, a)?,
        Cmd::Exec => multi::exec(sh, s).await?,
        Cmd::Discard => multi::discard(s)?,
        Cmd::Watch => multi::watch(sh, s, a).await?,
        Cmd::Unwatch => multi::unwatch(s),
        Cmd::Get => get(sh, s, &a[1]).await?,
        Cmd::Set => set_command(sh, s, id, a).await?,
        // Subscribed (RESP2): a PING is answered as a message-shaped array, as Redis does.
        Cmd::Ping if pubsub::in_subscribed_mode(s) && a.len() <= 2 => {
            s.reply.array(2);
            s.reply.bulk(b"pong");
            s.reply.bulk(a.get(1).map_or(&b""[..], |m| &m[..]));
        }
        Cmd::Ping => match a.len() {
            1 => s.reply.simple("PONG"),
            2 => s.reply.bulk(&a[1]),
            _ => {
                return Err(ReplyError::err(
                    "wrong number of arguments for 'ping' command",
                ));
            }
        },
        Cmd::Echo => s.reply.bulk(&a[1]),
        Cmd::Subscribe => pubsub::subscribe(sh, s, a, pubsub::Kind::Channel).await?,
        Cmd::Psubscribe => pubsub::subscribe(sh, s, a, pubsub::Kind::Pattern).await?,
        Cmd::Ssubscribe => pubsub::subscribe(sh, s, a, pubsub::Kind::Shard).await?,
        Cmd::Unsubscribe => pubsub::unsubscribe(sh, s, a, pubsub::Kind::Channel).await,
        Cmd::Punsubscribe => pubsub::unsubscribe(sh, s, a, pubsub::Kind::Pattern).await,
        Cmd::Sunsubscribe => pubsub::unsubscribe(sh, s, a, pubsub::Kind::Shard).await,
        Cmd::Publish => pubsub::publish(sh, s, a, false)?,
        Cmd::Spublish => pubsub::publish(sh, s, a, true)?,
        Cmd::Pubsub => pubsub::pubsub(sh, s, a).await?,
        Cmd::Quit => {
            s.reply.ok();
            s.quit = true;
        }
        Cmd::Auth => auth(sh, s, &a[1..])?,
        Cmd::Acl => acl_command(sh, s, a)?,
        Cmd::Hello => hello(sh, s, a)?,
        Cmd::Select => select(sh, s, &a[1])?,
        Cmd::Reset => {
            s.reply.proto = Protocol::Resp2;
            s.ns = "db0".into();
            s.db = Some(0);
            s.ns_hold = None;
            if let Some(mut sub) = s.sub.take() {
                while sh.pubsub.close_some(&mut sub, PACE_ITEMS) {
                    tokio::task::yield_now().await;
                }
            }
            sh.tracking.disable(s.info.id);
            s.tracking = tracking::ClientTracking::default();
            s.user = sh.acl.read().initial_user();
            s.info.detail.lock().name = None;
            s.tx.reset();
            s.readonly = false;
            s.reply.simple("RESET");
        }
        Cmd::Setex | Cmd::Psetex => set_command(sh, s, id, a).await?,
        Cmd::Getex => getex(sh, s, a).await?,
        Cmd::Getbit | Cmd::Bitcount | Cmd::Bitpos | Cmd::BitfieldRo => {
            read_op(sh, s, id, a).await?;
        }
        Cmd::Object => object(sh, s, a).await?,
        Cmd::Memory if a.len() == 2 && eq_ic(&a[1], "HELP") => {
            // Redis's lines for the one subcommand Strata has.
            help(
                s,
                &[
                    "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "USAGE <key> [SAMPLES <count>]",
                    "    Return memory in bytes used by <key> and its value. Nested values are",
                    "    sampled up to <count> times (default: 5, 0 means sample all).",
                    "HELP",
                    "    Prints this help.",
                ],
            );
        }
        Cmd::Memory => {
            if eq_ic(&a[1], "HELP") || (eq_ic(&a[1], "USAGE") && a.len() < 3) {
                return Err(subcommand_arity("memory", &a[1]));
            }
            if !eq_ic(&a[1], "USAGE") {
                // Redis's words for a subcommand it does not have (checked against it).
                return Err(ReplyError::err(format!(
                    "unknown subcommand '{}'. Try MEMORY HELP.",
                    String::from_utf8_lossy(&a[1][..a[1].len().min(128)])
                )));
            }
            read_op(sh, s, id, a).await?;
        }
        Cmd::Move if s.cluster_mode => {
            return Err(ReplyError::err("MOVE is not allowed in cluster mode"));
        }
        Cmd::Move => {
            let target = other_database(sh, s, &a[2], "MOVE")?;
            let moved = copy_across(sh, s, &a[1], &target, &a[1], false, true).await?;
            s.reply.integer(moved);
        }
        Cmd::Copy if copy_target(a).is_some() => {
            let (target, replace) = copy_target(a).unwrap_or_default();
            let target = other_database(sh, s, &target, "COPY")?;
            if s.cluster_mode && target != s.ns {
                return Err(ReplyError::err(
                    "Copying to another database is not allowed in cluster mode",
                ));
            }
            if target == s.ns {
                // The same database: a COPY within it (the DB option dropped).
                let mut same: Vec<Bytes> = a[..3].to_vec();
                if replace {
                    same.push(Bytes::from_static(b"REPLACE"));
                }
                let parsed = keyops::parse(id, &same, sh.cache.now_ms())
                    .ok_or(ReplyError::err("not a key command"))??;
                multi::run_alone(sh, s, parsed.ops).await?;
            } else {
                let n = copy_across(sh, s, &a[1], &target, &a[2], replace, false).await?;
                s.reply.integer(n);
            }
        }
        Cmd::Copy | Cmd::Bitop | Cmd::Lcs => {
            let now = sh.cache.now_ms();
            let parsed =
                keyops::parse(id, a, now).ok_or(ReplyError::err("not a key command"))??;
            multi::run_alone(sh, s, parsed.ops).await?;
        }
        Cmd::Wait => {
            // Checked as Redis checks them: the count first, any integer.
            parse_int(&a[1]).ok_or(ReplyError::err("value is not an integer or out of range"))?;
            let timeout = parse_int(&a[2])
                .ok_or(ReplyError::err("timeout is not an integer or out of range"))?;
            if timeout < 0 {
                return Err(ReplyError::err("timeout is negative"));
            }
            // Every acknowledged write is on every owner already: a cluster replies only
            // after the other owners applied it.
            let others = if sh.config.cluster.enabled {
                i64::from(sh.config.cluster.replication_factor.saturating_sub(1))
            } else {
                0
            };
            s.reply.integer(others);
        }
        single_key_write!() => {
            let op = single_op(sh, id, a)?;
            exec(sh, s, &a[1], &op).await?;
        }
        Cmd::Mget if s.tx.watching() => {
            s.reply.array(a.len() - 1);
            for (i, k) in a[1..].iter().enumerate() {
                pace(i).await;
                match client_entry(sh, s, k).await {
                    Ok(Some(e)) => s.reply.bulk(&e.value),
                    Ok(None) | Err(_) => s.reply.null(),
                }
            }
        }
        Cmd::Mget => {
            s.reply.array(a.len() - 1);
            for (i, k) in a[1..].iter().enumerate() {
                pace(i).await;
                match sh.cache.get(&s.ns, k).await {
                    Ok(Some(v)) => s.reply.bulk(&v),
                    // A key that cannot exist (too long) is simply absent, as in Redis.
                    Ok(None) | Err(_) => s.reply.null(),
                }
            }
        }
        Cmd::Mset => mset(sh, s, a, false).await?,
        Cmd::Msetnx => {
            one_slot(sh, a[1..].iter().step_by(2))?;
            mset(sh, s, a, true).await?;
        }
        Cmd::Strlen => {
            let len = client_entry(sh, s, &a[1])
                .await?
                .map_or(0, |e| e.value.len());
            s.reply.integer(len as i64);
        }
        Cmd::Getrange | Cmd::Substr => {
            let (start, end) = (
                parse_int(&a[2]).ok_or_else(not_int)?,
                parse_int(&a[3]).ok_or_else(not_int)?,
            );
            let v = client_entry(sh, s, &a[1]).await?.map(|e| e.value);
            s.reply
                .bulk(range_of(v.as_deref().unwrap_or(b""), start, end));
        }
        Cmd::Del | Cmd::Unlink => {
            // The keys in groups, each key's removal under its own lock (one at a time per
            // future, so no two wait on each other), so that L3 commits a group's removals
            // together: one after the other, each waited for its own commit (80,000 keys
            // took 7.9 s in a debug build, review helper-118). A key named twice is found
            // gone the second time, as in Redis.
            let ns = &s.ns;
            let mut n = 0;
            for group in a[1..].chunks(MAX_SET_GROUP) {
                let removed = futures_util::future::join_all(group.iter().map(|k| async move {
                    let _g = sh.key_lock(ns, k).write().await;
                    sh.cache.execute(ns, k.clone(), &KeyOp::Del).await
                }))
                .await;
                for r in removed {
                    match r {
                        Ok(ops::Reply::Int(1)) => n += 1,
                        Ok(_) => {}
                        Err(e) => return Err(cache_err(&e)),
                    }
                }
            }
            s.reply.integer(n);
        }
        Cmd::Exists | Cmd::Touch => {
            let mut n = 0;
            for (i, k) in a[1..].iter().enumerate() {
                pace(i).await;
                let held = if s.tx.watching() {
                    matches!(client_entry(sh, s, k).await, Ok(Some(_)))
                } else {
                    matches!(sh.cache.get(&s.ns, k).await, Ok(Some(_)))
                };
                if held {
                    n += 1;
                }
            }
            s.reply.integer(n);
        }
        Cmd::Type => match client_entry(sh, s, &a[1]).await? {
            Some(_) => s.reply.simple("string"),
            None => s.reply.simple("none"),
        },
        Cmd::Rename | Cmd::Renamenx => {
            one_slot(sh, a[1..3].iter())?;
            rename(sh, s, a, id == Cmd::Renamenx).await?;
        }
        Cmd::Ttl | Cmd::Pttl | Cmd::Expiretime | Cmd::Pexpiretime => {
            let query = match id {
                Cmd::Ttl => TtlQuery::Ttl,
                Cmd::Pttl => TtlQuery::Pttl,
                Cmd::Expiretime => TtlQuery::ExpireTime,
                _ => TtlQuery::PexpireTime,
            };
            let e = client_entry(sh, s, &a[1]).await?;
            s.reply.integer(query.answer(e.as_ref(), sh.cache.now_ms()));
        }
        Cmd::Keys => {
            let glob = Glob::new(&a[1]).map_err(|e| ReplyError::err(format!("{e}")))?;
            let serves = cluster::listing_filter(sh, s);
            let keep = move |k: &[u8]| glob.matches(k) && serves.as_ref().is_none_or(|f| f(k));
            let keys = list_keys(sh, &s.ns, keep, usize::MAX).await?;
            s.reply.array(keys.len());
            for k in &keys {
                s.reply.bulk(k);
            }
        }
        Cmd::Scan => scan(sh, s, a).await?,
        Cmd::Randomkey => match random_key(sh, s).await? {
            Some(k) => s.reply.bulk(&k),
            None => s.reply.null(),
        },
        Cmd::Dbsize => {
            let n = match cluster::listing_filter(sh, s) {
                None => db_size(sh, &s.ns).await?,
                Some(serves) => served_size(sh, &s.ns, serves).await?,
            };
            s.reply.integer(n as i64);
        }
        Cmd::Flushdb | Cmd::Flushall => {
            if a.len() > 2 || (a.len() == 2 && !eq_ic(&a[1], "ASYNC") && !eq_ic(&a[1], "SYNC")) {
                return Err(ReplyError::Syntax);
            }
            let namespaces = if id == Cmd::Flushdb {
                vec![s.ns.clone()]
            } else {
                let mut all = sh.cache.namespaces().await;
                all.extend((0..sh.config.server.databases).map(|i| format!("db{i}")));
                all.sort_unstable();
                all.dedup();
                all
            };
            for ns in namespaces {
                sh.cache
                    .flush_namespace(&ns)
                    .await
                    .map_err(|e| cache_err(&e))?;
            }
            s.reply.ok();
        }
        Cmd::Info => info(sh, s, &a[1..]).await,
        Cmd::Slowlog => slowlog::slowlog(sh, s, a)?,
        Cmd::Latency => latency::latency(sh, s, a)?,
        Cmd::Config => config(sh, s, a)?,
        Cmd::Client => client(sh, s, a)?,
        Cmd::Cluster => cluster::cluster(sh, s, a).await?,
        Cmd::Readonly => cluster::readonly(sh, s, true)?,
        Cmd::Readwrite => cluster::readonly(sh, s, false)?,
        Cmd::Asking => {
            if sh.slots.is_none() {
                return Err(ReplyError::err(
                    "This instance has cluster support disabled",
                ));
            }
            s.reply.ok();
        }
        Cmd::Command => command(s, a)?,
        Cmd::Time => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            s.reply.array(2);
            s.reply.bulk(now.as_secs().to_string().as_bytes());
            s.reply.bulk(now.subsec_micros().to_string().as_bytes());
        }
        Cmd::StrataSet => strata_set(sh, s, a).await?,
        Cmd::StrataInvalidatePattern => {
            let n = sh
                .cache
                .invalidate_pattern(&s.ns, &a[1])
                .await
                .map_err(|e| cache_err(&e))?;
            s.reply.integer(n as i64);
        }
        Cmd::StrataInvalidateTag => {
            let n = sh
                .cache
                .invalidate_tag(&s.ns, &a[1])
                .await
                .map_err(|e| cache_err(&e))?;
            s.reply.integer(n as i64);
        }
        Cmd::StrataStats => {
            let json = crate::admin::stats_json(sh);
            s.reply.verbatim(json.to_string().as_bytes());
        }
    }
    Ok(())
}

/// Most keys of one atomic multi-key command in a cluster (checked again by the primary).
const MAX_ATOMIC_KEYS: usize = 1024;

/// In a cluster, a command that must change several keys atomically needs them on one
/// primary: every key in the same hash slot, as Redis Cluster requires (keys with the same
/// `{tag}` always are).
fn one_slot<'k>(sh: &Shared, mut keys: impl Iterator<Item = &'k Bytes>) -> Res<()> {
    if !sh.config.cluster.enabled {
        return Ok(());
    }
    let Some(first) = keys.next() else {
        return Ok(());
    };
    let slot = strata_cluster::ring::key_slot(first);
    if keys.all(|k| strata_cluster::ring::key_slot(k) == slot) {
        Ok(())
    } else {
        Err(ReplyError::coded(
            "CROSSSLOT",
            "Keys in request don't hash to the same slot",
        ))
    }
}

fn not_int() -> ReplyError {
    ReplyError::NotInteger
}

async fn entry(sh: &Shared, ns: &str, key: &[u8]) -> Res<Option<Entry>> {
    sh.cache.get_entry(ns, key).await.map_err(|e| cache_err(&e))
}

/// `key`'s entry as this client reads it: for a client that watches keys, never older than
/// its `WATCH` read ([`multi::TxState::no_older_than_watched`]) — whatever command reads it
/// (`GET`, `MGET`, `STRLEN`, `GETRANGE`, `TTL`, `EXISTS`, the bit commands…).
async fn client_entry(sh: &Shared, s: &Session<'_>, key: &[u8]) -> Res<Option<Entry>> {
    let read = entry(sh, &s.ns, key).await?;
    if !s.tx.watching() {
        return Ok(read);
    }
    Ok(s.tx.no_older_than_watched(&s.ns, key, read, sh.cache.now_ms()))
}

async fn remove(sh: &Shared, ns: &str, key: &[u8]) -> Res<bool> {
    sh.cache
        .invalidate(ns, key)
        .await
        .map_err(|e| cache_err(&e))
}

/// Writes `value` with the given expiry; `old` (the entry being replaced, read under the
/// key's lock) supplies the TTL for [`Ttl::Keep`] and the tags of in-place updates.
async fn store(
    sh: &Shared,
    ns: &str,
    key: &Bytes,
    value: Bytes,
    ttl: Ttl,
    old: Option<&Entry>,
) -> Res<()> {
    let mut opts = SetOptions::default();
    if let Some(e) = old {
        opts.tags = e.tags.clone();
    }
    match resolve_keep(ttl, old) {
        Ttl::AtMs(at) => {
            if at <= sh.cache.now_ms() {
                remove(sh, ns, key).await?;
                return Ok(());
            }
            opts.expires_at_ms = Some(at);
        }
        Ttl::Persist => opts.persist = true,
        Ttl::Default | Ttl::Keep => {}
    }
    sh.cache
        .set_with(ns, key.clone(), value, opts)
        .await
        .map(|_| ())
        .map_err(|e| cache_err(&e))
}

/// [`Ttl::Keep`] as the expiry of `old` (the default TTL when there is no old entry).
fn resolve_keep(ttl: Ttl, old: Option<&Entry>) -> Ttl {
    match (ttl, old) {
        (Ttl::Keep, Some(e)) => match e.expires_at_ms {
            Some(at) => Ttl::AtMs(at),
            None => Ttl::Persist,
        },
        (Ttl::Keep, None) => Ttl::Default,
        (other, _) => other,
    }
}

/// A read-only key command answered from this node's copy (`GETBIT`, `BITCOUNT`, …).
async fn read_op(sh: &Shared, s: &mut Session<'_>, id: Cmd, a: &[Bytes]) -> Res<()> {
    let key = if matches!(id, Cmd::Object | Cmd::Memory) {
        &a[2]
    } else {
        &a[1]
    };
    let op = single_op(sh, id, a)?;
    let current = client_entry(sh, s, key).await?;
    let (_, reply) = ops::apply(
        &op,
        current.as_ref(),
        sh.cache.now_ms(),
        sh.cache.op_limits(),
    );
    write_reply(s, reply)
}

/// A `HELP` subcommand's answer: one status line per entry, as Redis sends them.
fn help(s: &mut Session<'_>, lines: &[&str]) {
    s.reply.array(lines.len());
    for l in lines {
        s.reply.simple(l);
    }
}

/// Redis's arity error for a subcommand (`'slowlog|len'`), named in lower case.
fn subcommand_arity(command: &str, sub: &[u8]) -> ReplyError {
    ReplyError::err(format!(
        "wrong number of arguments for '{command}|{}' command",
        String::from_utf8_lossy(&sub[..sub.len().min(64)]).to_ascii_lowercase()
    ))
}

/// A single-key command's operation, parsed ([`keyops::parse`]).
fn single_op(sh: &Shared, id: Cmd, a: &[Bytes]) -> Res<KeyOp> {
    let parsed =
        keyops::parse(id, a, sh.cache.now_ms()).ok_or(ReplyError::err("not a key command"))??;
    match parsed.ops.into_iter().next() {
        Some(keyops::Op::Key(_, op)) => Ok(op),
        _ => Err(ReplyError::err("not a single-key command")),
    }
}

/// Runs `op` on `key` at its authority ([`strata_core::Cache::execute`]: this node's
/// layers, a cluster's primary, or Redis behind the bridge), holding the key's lock so that
/// no other writer on this node interleaves, and writes its reply.
async fn exec(sh: &Shared, s: &mut Session<'_>, key: &Bytes, op: &KeyOp) -> Res<()> {
    let reply = exec_reply(sh, &s.ns, key, op).await?;
    write_reply(s, reply)
}

/// [`exec`]'s work, with the reply returned rather than written.
///
/// In a cluster, a command with an expiry (`SET … NX PX`) waits for the key's lock at most
/// a tenth of its expiry's time left (`strata_cluster::primary::expiry_wait_budget_ms`),
/// and the time it waited counts against the same tenth once it is routed
/// ([`strata_core::time::accepted_at`]): behind a release whose replica stopped, a lock
/// request was granted 1.2–1.3 s after it was sent, its `PX 2000` mostly spent (a
/// membership review, 2026-12-04).
async fn exec_reply(sh: &Shared, ns: &str, key: &Bytes, op: &KeyOp) -> Res<ops::Reply> {
    let accepted = sh.cache.now_ms();
    let budget = sh
        .slots
        .as_ref()
        .and_then(|_| strata_cluster::primary::expiry_wait_budget_ms(accepted, op.expiry_ms()));
    strata_core::time::accepted_at(accepted, async {
        let lock = sh.key_lock(ns, key).write();
        let _g = match budget {
            None => lock.await,
            Some(b) => tokio::time::timeout(std::time::Duration::from_millis(b), lock)
                .await
                .map_err(|_| {
                    sh.metrics.key_lock_waits_refused.incr();
                    ReplyError::from(format!(
                        "TRYAGAIN the command waited {b} ms behind another command of the key on this node, a tenth of its expiry: not applied"
                    ))
                })?,
        };
        sh.cache
            .execute(ns, key.clone(), op)
            .await
            .map_err(|e| cache_err(&e))
    })
    .await
}

/// Writes an operation's reply ([`strata_core::ops::Reply`]).
fn write_reply(s: &mut Session<'_>, reply: ops::Reply) -> Res<()> {
    if let ops::Reply::Error(msg) = reply {
        return Err(ReplyError::from(msg));
    }
    write_value(s, &reply);
    Ok(())
}

/// Writes an operation's reply (an error in its place).
fn write_value(s: &mut Session<'_>, r: &ops::Reply) {
    match r {
        ops::Reply::Ok => s.reply.ok(),
        ops::Reply::Nil => s.reply.null(),
        ops::Reply::Int(n) => s.reply.integer(*n),
        ops::Reply::Bulk(b) => s.reply.bulk(b),
        ops::Reply::Error(msg) => s.reply.error(msg),
        ops::Reply::Status(st) => s.reply.simple(st),
        ops::Reply::Exec(None) => s.reply.null_array(),
        ops::Reply::Exec(Some(inner)) => {
            s.reply.array(inner.len());
            for r in inner {
                write_value(s, r);
            }
        }
        ops::Reply::Tree(tokens) => {
            for t in tokens {
                match t {
                    ops::Token::Array(n) => s.reply.array(*n as usize),
                    ops::Token::Int(n) => s.reply.integer(*n),
                    ops::Token::Bulk(b) => s.reply.bulk(b),
                    ops::Token::Nil => s.reply.null(),
                    ops::Token::Status(st) => s.reply.simple(st),
                    ops::Token::Error(e) => s.reply.error(e),
                    ops::Token::Map(n) => s.reply.map(*n as usize),
                }
            }
        }
    }
}

/// Keys SCAN reads past a full page to find where the page's last hash ends.
const SCAN_LOOKAHEAD: usize = 16;

/// Longest client name `CLIENT SETNAME` and `HELLO … SETNAME` accept (Redis has no limit;
/// every name is held for the connection's life and listed by CLIENT LIST).
const MAX_CLIENT_NAME: usize = 512;

impl Shared {
    fn shared_clients(&self) -> Vec<Arc<ClientInfo>> {
        self.clients()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_lookup_ignores_case() {
        assert!(
            COMMANDS.windows(2).all(|w| w[0].name < w[1].name),
            "COMMANDS must stay sorted"
        );
        assert_eq!(lookup(b"get").map(|(_, c)| c.id), Some(Cmd::Get));
        assert_eq!(
            lookup(b"StRaTa.SeT").map(|(_, c)| c.id),
            Some(Cmd::StrataSet)
        );
        assert!(lookup(b"LPUSH").is_none());
        assert!(lookup(&[b'A'; 40]).is_none());
        assert!(lookup(b"").is_none());
        // Every row, in any case, and nothing one byte off.
        for (i, spec) in COMMANDS.iter().enumerate() {
            assert!(spec.name.len() < 32, "{} is too long to look up", spec.name);
            let name = spec.name.as_bytes();
            assert_eq!(lookup(name).map(|(j, _)| j), Some(i), "{}", spec.name);
            let lower = name.to_ascii_lowercase();
            assert_eq!(lookup(&lower).map(|(j, _)| j), Some(i), "{}", spec.name);
            assert!(lookup(&name[..name.len() - 1]).is_none_or(|(j, _)| j != i));
            let mut longer = name.to_vec();
            longer.push(b'X');
            assert!(lookup(&longer).is_none_or(|(j, _)| j != i));
        }
    }

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(parse_int(b"-42"), Some(-42));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        for bad in [&b""[..], b"+1", b" 1", b"01", b"-0", b"1.0", b"abc"] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn getrange_indexes_like_redis() {
        let v = b"This is a string";
        assert_eq!(range_of(v, 0, 3), b"This");
        assert_eq!(range_of(v, -3, -1), b"ing");
        assert_eq!(range_of(v, 0, -1), v);
        assert_eq!(range_of(v, 10, 100), b"string");
        assert_eq!(range_of(v, 5, 3), b"");
        assert_eq!(range_of(b"", 0, -1), b"");
    }

    #[test]
    fn floats_print_without_exponent() {
        assert_eq!(strata_core::ops::format_float(10.5 + 0.1), "10.6");
        assert_eq!(strata_core::ops::format_float(3.0), "3");
        assert_eq!(strata_core::ops::format_float(5.0e3), "5000");
    }
}
