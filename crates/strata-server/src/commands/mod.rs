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
use strata_core::ops::{self, KeyOp, MultiOp, Ttl, range_of};
use strata_core::scan::{ScanFrom, scan_hash};
use strata_core::{CacheError, SetOptions};
use strata_resp::{Protocol, Reply};

use crate::acl::{self, User};
use crate::state::{ClientInfo, Shared};

mod keyops;
pub mod latency;
pub mod multi;
pub mod scripting;
pub mod slowlog;

/// The Redis version Strata answers as (INFO, HELLO): the command set it follows.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

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
            user,
            auth_failures: 0,
            reply_delay: None,
            reply: Reply::new(Protocol::Resp2),
            quit: false,
            tx: multi::TxState::default(),
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

/// What a command is, for dispatch, `COMMAND` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum Cmd {
    Acl,
    Append,
    Auth,
    Bitcount,
    Bitfield,
    BitfieldRo,
    Bitop,
    Bitpos,
    Client,
    Command,
    Config,
    Copy,
    Dbsize,
    Decr,
    Decrby,
    Del,
    Discard,
    Echo,
    Eval,
    EvalRo,
    Evalsha,
    EvalshaRo,
    Exec,
    Exists,
    Expire,
    Expireat,
    Expiretime,
    Flushall,
    Flushdb,
    Get,
    Getbit,
    Getdel,
    Getex,
    Getrange,
    Getset,
    Hello,
    Incr,
    Incrby,
    Incrbyfloat,
    Info,
    Keys,
    Latency,
    Lcs,
    Memory,
    Mget,
    Move,
    Mset,
    Msetnx,
    Multi,
    Object,
    Persist,
    Pexpire,
    Pexpireat,
    Pexpiretime,
    Ping,
    Psetex,
    Pttl,
    Quit,
    Randomkey,
    Rename,
    Renamenx,
    Reset,
    Scan,
    Script,
    Select,
    Set,
    Setbit,
    Setex,
    Setnx,
    Setrange,
    Slowlog,
    StrataInvalidatePattern,
    StrataInvalidateTag,
    StrataSet,
    StrataStats,
    Strlen,
    Substr,
    Time,
    Touch,
    Ttl,
    Type,
    Unlink,
    Unwatch,
    Wait,
    Watch,
}

/// A command's description: what `COMMAND INFO` and `COMMAND DOCS` report.
#[derive(Debug)]
pub struct CommandSpec {
    /// Upper-case name.
    pub name: &'static str,
    /// Redis arity: `n` exactly n arguments (name included), `-n` at least n.
    pub arity: i32,
    /// Whether it changes data.
    pub write: bool,
    /// Position of the first key (0: none).
    pub first_key: i64,
    /// Position of the last key (-1: the last argument).
    pub last_key: i64,
    /// Step between keys.
    pub step: i64,
    /// Redis's command group.
    pub group: &'static str,
    /// One line for `COMMAND DOCS`.
    pub summary: &'static str,
    /// Dispatch id.
    pub id: Cmd,
}

macro_rules! spec {
    ($name:literal, $arity:expr, $write:expr, $first:expr, $last:expr, $step:expr, $group:literal, $summary:literal, $id:ident) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            write: $write,
            first_key: $first,
            last_key: $last,
            step: $step,
            group: $group,
            summary: $summary,
            id: Cmd::$id,
        }
    };
}

/// Every command, sorted by name (looked up by binary search).
pub static COMMANDS: &[CommandSpec] = &[
    spec!(
        "ACL",
        -2,
        false,
        0,
        0,
        0,
        "server",
        "Access control: WHOAMI, CAT, LIST, USERS.",
        Acl
    ),
    spec!(
        "APPEND",
        3,
        true,
        1,
        1,
        1,
        "string",
        "Appends a string to the value of a key.",
        Append
    ),
    spec!(
        "AUTH",
        -2,
        false,
        0,
        0,
        0,
        "connection",
        "Authenticates the connection.",
        Auth
    ),
    spec!(
        "BITCOUNT",
        -2,
        false,
        1,
        1,
        1,
        "bitmap",
        "Counts the set bits of a value (a range of bytes or bits).",
        Bitcount
    ),
    spec!(
        "BITFIELD",
        -2,
        true,
        1,
        1,
        1,
        "bitmap",
        "Reads, sets and increments integer fields of a value (GET, SET, INCRBY, OVERFLOW).",
        Bitfield
    ),
    spec!(
        "BITFIELD_RO",
        -2,
        false,
        1,
        1,
        1,
        "bitmap",
        "Reads integer fields of a value (GET only).",
        BitfieldRo
    ),
    spec!(
        "BITOP",
        -4,
        true,
        2,
        -1,
        1,
        "bitmap",
        "AND, OR, XOR or NOT of values into a key.",
        Bitop
    ),
    spec!(
        "BITPOS",
        -3,
        false,
        1,
        1,
        1,
        "bitmap",
        "Finds the first set or clear bit of a value.",
        Bitpos
    ),
    spec!(
        "CLIENT",
        -2,
        false,
        0,
        0,
        0,
        "connection",
        "Connection management (ID, SETNAME, GETNAME, LIST, INFO, SETINFO).",
        Client
    ),
    spec!(
        "COMMAND",
        -1,
        false,
        0,
        0,
        0,
        "server",
        "Details about commands (COUNT, INFO, DOCS, LIST).",
        Command
    ),
    spec!(
        "CONFIG",
        -2,
        false,
        0,
        0,
        0,
        "server",
        "Reads or changes server settings (GET, SET).",
        Config
    ),
    spec!(
        "COPY",
        -3,
        true,
        1,
        2,
        1,
        "generic",
        "Copies a key (REPLACE).",
        Copy
    ),
    spec!(
        "DBSIZE",
        1,
        false,
        0,
        0,
        0,
        "server",
        "Returns the number of keys in the selected database.",
        Dbsize
    ),
    spec!(
        "DECR",
        2,
        true,
        1,
        1,
        1,
        "string",
        "Decrements the integer value of a key by one.",
        Decr
    ),
    spec!(
        "DECRBY",
        3,
        true,
        1,
        1,
        1,
        "string",
        "Decrements the integer value of a key by a number.",
        Decrby
    ),
    spec!("DEL", -2, true, 1, -1, 1, "generic", "Deletes keys.", Del),
    spec!(
        "DISCARD",
        1,
        false,
        0,
        0,
        0,
        "transactions",
        "Discards a transaction.",
        Discard
    ),
    spec!(
        "ECHO",
        2,
        false,
        0,
        0,
        0,
        "connection",
        "Returns the given string.",
        Echo
    ),
    spec!(
        "EVAL",
        -3,
        true,
        0,
        0,
        0,
        "scripting",
        "Runs a Lua script on its declared keys, atomically.",
        Eval
    ),
    spec!(
        "EVALSHA",
        -3,
        true,
        0,
        0,
        0,
        "scripting",
        "Runs a cached Lua script by its SHA1.",
        Evalsha
    ),
    spec!(
        "EVALSHA_RO",
        -3,
        false,
        0,
        0,
        0,
        "scripting",
        "Runs a cached read-only Lua script by its SHA1.",
        EvalshaRo
    ),
    spec!(
        "EVAL_RO",
        -3,
        false,
        0,
        0,
        0,
        "scripting",
        "Runs a read-only Lua script.",
        EvalRo
    ),
    spec!(
        "EXEC",
        1,
        false,
        0,
        0,
        0,
        "transactions",
        "Executes the commands queued since MULTI, atomically.",
        Exec
    ),
    spec!(
        "EXISTS",
        -2,
        false,
        1,
        -1,
        1,
        "generic",
        "Counts how many of the keys exist.",
        Exists
    ),
    spec!(
        "EXPIRE",
        -3,
        true,
        1,
        1,
        1,
        "generic",
        "Sets a key's time to live in seconds.",
        Expire
    ),
    spec!(
        "EXPIREAT",
        -3,
        true,
        1,
        1,
        1,
        "generic",
        "Sets a key's expiry to a Unix time in seconds.",
        Expireat
    ),
    spec!(
        "EXPIRETIME",
        2,
        false,
        1,
        1,
        1,
        "generic",
        "Returns a key's expiry as a Unix time in seconds.",
        Expiretime
    ),
    spec!(
        "FLUSHALL",
        -1,
        true,
        0,
        0,
        0,
        "server",
        "Removes every key of every namespace.",
        Flushall
    ),
    spec!(
        "FLUSHDB",
        -1,
        true,
        0,
        0,
        0,
        "server",
        "Removes every key of the selected namespace.",
        Flushdb
    ),
    spec!(
        "GET",
        2,
        false,
        1,
        1,
        1,
        "string",
        "Returns the value of a key.",
        Get
    ),
    spec!(
        "GETBIT",
        3,
        false,
        1,
        1,
        1,
        "bitmap",
        "Returns a bit of a value.",
        Getbit
    ),
    spec!(
        "GETDEL",
        2,
        true,
        1,
        1,
        1,
        "string",
        "Returns the value of a key and deletes it.",
        Getdel
    ),
    spec!(
        "GETEX",
        -2,
        true,
        1,
        1,
        1,
        "string",
        "Returns the value of a key and changes its expiry.",
        Getex
    ),
    spec!(
        "GETRANGE",
        4,
        false,
        1,
        1,
        1,
        "string",
        "Returns a substring of a value.",
        Getrange
    ),
    spec!(
        "GETSET",
        3,
        true,
        1,
        1,
        1,
        "string",
        "Sets a value and returns the previous one.",
        Getset
    ),
    spec!(
        "HELLO",
        -1,
        false,
        0,
        0,
        0,
        "connection",
        "Handshake: protocol version, AUTH, SETNAME.",
        Hello
    ),
    spec!(
        "INCR",
        2,
        true,
        1,
        1,
        1,
        "string",
        "Increments the integer value of a key by one.",
        Incr
    ),
    spec!(
        "INCRBY",
        3,
        true,
        1,
        1,
        1,
        "string",
        "Increments the integer value of a key by a number.",
        Incrby
    ),
    spec!(
        "INCRBYFLOAT",
        3,
        true,
        1,
        1,
        1,
        "string",
        "Increments the float value of a key.",
        Incrbyfloat
    ),
    spec!(
        "INFO",
        -1,
        false,
        0,
        0,
        0,
        "server",
        "Server information and statistics.",
        Info
    ),
    spec!(
        "KEYS",
        2,
        false,
        0,
        0,
        0,
        "generic",
        "Returns the keys matching a pattern.",
        Keys
    ),
    spec!(
        "LATENCY",
        -2,
        false,
        0,
        0,
        0,
        "server",
        "The latency monitor: LATEST, HISTORY, RESET.",
        Latency
    ),
    spec!(
        "LCS",
        -3,
        false,
        1,
        2,
        1,
        "string",
        "The longest common subsequence of two values (LEN).",
        Lcs
    ),
    spec!(
        "MEMORY",
        -2,
        false,
        0,
        0,
        0,
        "server",
        "MEMORY USAGE key: about how many bytes a key takes.",
        Memory
    ),
    spec!(
        "MGET",
        -2,
        false,
        1,
        -1,
        1,
        "string",
        "Returns the values of several keys.",
        Mget
    ),
    spec!(
        "MOVE",
        3,
        true,
        1,
        1,
        1,
        "keyspace",
        "Moves a key to another database (one node, no Redis bridge).",
        Move
    ),
    spec!(
        "MSET",
        -3,
        true,
        1,
        -1,
        2,
        "string",
        "Sets several keys.",
        Mset
    ),
    spec!(
        "MSETNX",
        -3,
        true,
        1,
        -1,
        2,
        "string",
        "Sets several keys only if none exists.",
        Msetnx
    ),
    spec!(
        "MULTI",
        1,
        false,
        0,
        0,
        0,
        "transactions",
        "Starts a transaction.",
        Multi
    ),
    spec!(
        "OBJECT",
        -2,
        false,
        2,
        2,
        1,
        "generic",
        "Inspects a key (ENCODING, REFCOUNT, IDLETIME, FREQ).",
        Object
    ),
    spec!(
        "PERSIST",
        2,
        true,
        1,
        1,
        1,
        "generic",
        "Removes a key's expiry (where the namespace has no max_ttl).",
        Persist
    ),
    spec!(
        "PEXPIRE",
        -3,
        true,
        1,
        1,
        1,
        "generic",
        "Sets a key's time to live in milliseconds.",
        Pexpire
    ),
    spec!(
        "PEXPIREAT",
        -3,
        true,
        1,
        1,
        1,
        "generic",
        "Sets a key's expiry to a Unix time in milliseconds.",
        Pexpireat
    ),
    spec!(
        "PEXPIRETIME",
        2,
        false,
        1,
        1,
        1,
        "generic",
        "Returns a key's expiry as a Unix time in milliseconds.",
        Pexpiretime
    ),
    spec!(
        "PING",
        -1,
        false,
        0,
        0,
        0,
        "connection",
        "Returns PONG or the given message.",
        Ping
    ),
    spec!(
        "PSETEX",
        4,
        true,
        1,
        1,
        1,
        "string",
        "Sets a value with a TTL in milliseconds.",
        Psetex
    ),
    spec!(
        "PTTL",
        2,
        false,
        1,
        1,
        1,
        "generic",
        "Returns a key's time to live in milliseconds.",
        Pttl
    ),
    spec!(
        "QUIT",
        -1,
        false,
        0,
        0,
        0,
        "connection",
        "Closes the connection.",
        Quit
    ),
    spec!(
        "RANDOMKEY",
        1,
        false,
        0,
        0,
        0,
        "generic",
        "Returns a random key.",
        Randomkey
    ),
    spec!(
        "RENAME",
        3,
        true,
        1,
        2,
        1,
        "generic",
        "Renames a key.",
        Rename
    ),
    spec!(
        "RENAMENX",
        3,
        true,
        1,
        2,
        1,
        "generic",
        "Renames a key only if the new name does not exist.",
        Renamenx
    ),
    spec!(
        "RESET",
        1,
        false,
        0,
        0,
        0,
        "connection",
        "Resets the connection.",
        Reset
    ),
    spec!(
        "SCAN",
        -2,
        false,
        0,
        0,
        0,
        "generic",
        "Iterates over the keys of the selected namespace.",
        Scan
    ),
    spec!(
        "SCRIPT",
        -2,
        false,
        0,
        0,
        0,
        "scripting",
        "Script cache: LOAD, EXISTS, FLUSH, KILL.",
        Script
    ),
    spec!(
        "SELECT",
        2,
        false,
        0,
        0,
        0,
        "connection",
        "Selects a database by index, or a namespace by name.",
        Select
    ),
    spec!(
        "SET",
        -3,
        true,
        1,
        1,
        1,
        "string",
        "Sets a value (EX, PX, EXAT, PXAT, KEEPTTL, NX, XX, GET).",
        Set
    ),
    spec!(
        "SETBIT",
        4,
        true,
        1,
        1,
        1,
        "bitmap",
        "Sets a bit of a value.",
        Setbit
    ),
    spec!(
        "SETEX",
        4,
        true,
        1,
        1,
        1,
        "string",
        "Sets a value with a TTL in seconds.",
        Setex
    ),
    spec!(
        "SETNX",
        3,
        true,
        1,
        1,
        1,
        "string",
        "Sets a value only if the key does not exist.",
        Setnx
    ),
    spec!(
        "SETRANGE",
        4,
        true,
        1,
        1,
        1,
        "string",
        "Overwrites part of a value at an offset.",
        Setrange
    ),
    spec!(
        "SLOWLOG",
        -2,
        false,
        0,
        0,
        0,
        "server",
        "The commands slower than slowlog-log-slower-than: GET, LEN, RESET.",
        Slowlog
    ),
    spec!(
        "STRATA.INVALIDATE.PATTERN",
        2,
        true,
        0,
        0,
        0,
        "strata",
        "Removes every key of the namespace matching a glob, on every layer.",
        StrataInvalidatePattern
    ),
    spec!(
        "STRATA.INVALIDATE.TAG",
        2,
        true,
        0,
        0,
        0,
        "strata",
        "Removes every key of the namespace carrying a tag, on every layer.",
        StrataInvalidateTag
    ),
    spec!(
        "STRATA.SET",
        -3,
        true,
        1,
        1,
        1,
        "strata",
        "Sets a value with tags: key value [EX s|PX ms] [TAG tag]...",
        StrataSet
    ),
    spec!(
        "STRATA.STATS",
        1,
        false,
        0,
        0,
        0,
        "strata",
        "Per-layer hits, misses and latency, as JSON.",
        StrataStats
    ),
    spec!(
        "STRLEN",
        2,
        false,
        1,
        1,
        1,
        "string",
        "Returns the length of a value.",
        Strlen
    ),
    spec!(
        "SUBSTR",
        4,
        false,
        1,
        1,
        1,
        "string",
        "Returns a substring of a value (GETRANGE).",
        Substr
    ),
    spec!(
        "TIME",
        1,
        false,
        0,
        0,
        0,
        "server",
        "Returns the server time.",
        Time
    ),
    spec!(
        "TOUCH",
        -2,
        false,
        1,
        -1,
        1,
        "generic",
        "Counts how many of the keys exist.",
        Touch
    ),
    spec!(
        "TTL",
        2,
        false,
        1,
        1,
        1,
        "generic",
        "Returns a key's time to live in seconds.",
        Ttl
    ),
    spec!(
        "TYPE",
        2,
        false,
        1,
        1,
        1,
        "generic",
        "Returns the type of a key (string or none).",
        Type
    ),
    spec!(
        "UNLINK",
        -2,
        true,
        1,
        -1,
        1,
        "generic",
        "Deletes keys.",
        Unlink
    ),
    spec!(
        "UNWATCH",
        1,
        false,
        0,
        0,
        0,
        "transactions",
        "Forgets the watched keys.",
        Unwatch
    ),
    spec!(
        "WAIT",
        3,
        false,
        0,
        0,
        0,
        "generic",
        "Waits for the other owners to hold this client's writes (they already do).",
        Wait
    ),
    spec!(
        "WATCH",
        -2,
        false,
        1,
        -1,
        1,
        "transactions",
        "Watches keys: EXEC aborts if one of them changes first.",
        Watch
    ),
];

/// The spec of a command name, matched case-insensitively.
pub fn lookup(name: &[u8]) -> Option<(usize, &'static CommandSpec)> {
    let mut upper = [0u8; 32];
    if name.len() > upper.len() {
        return None;
    }
    for (d, s) in upper.iter_mut().zip(name) {
        *d = s.to_ascii_uppercase();
    }
    let name = &upper[..name.len()];
    COMMANDS
        .binary_search_by(|s| s.name.as_bytes().cmp(name))
        .ok()
        .map(|i| (i, &COMMANDS[i]))
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
fn cache_err(e: &CacheError) -> String {
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
            format!(
                "ERR policy violation: {what} exceeds the max_ttl of {} seconds of namespace '{namespace}'",
                allowed.as_secs()
            )
        }
        CacheError::InvalidTtl { .. } => "ERR invalid expire time".to_owned(),
        // Redis's answer when it refuses writes because it cannot persist.
        CacheError::L3Failing { reason } => format!(
            "MISCONF Strata's L3 disk cannot apply writes ({reason}). Commands that may modify \
             the data set are disabled, because l3.on_failure is \"refuse_writes\". Please check \
             /health and the node's log for details."
        ),
        // A cluster write its primary could not acknowledge: Redis Cluster's word for a
        // transient refusal, so that clients retry.
        CacheError::Tier {
            source: strata_core::TierError::Unavailable(why),
            ..
        } if why.starts_with("TRYAGAIN")
            || why.starts_with("CROSSSLOT")
            || why.starts_with("ERR ") =>
        {
            why.clone()
        }
        other => format!("ERR {other}"),
    }
}

/// Errors a handler answers with: already formatted, `ERR …` and friends.
type Res<T> = Result<T, String>;

/// Runs one command and appends its reply.
pub async fn execute(shared: &Shared, s: &mut Session<'_>, args: &[Bytes]) {
    let Some(name) = args.first() else {
        return;
    };
    let since_start = s.info.connected.elapsed().as_millis() as u64;
    s.info.last_cmd_ms.store(since_start, Ordering::Relaxed);
    let Some((idx, spec)) = lookup(name) else {
        shared.metrics.calls[COMMANDS.len()].incr();
        shared.metrics.errors[COMMANDS.len()].incr();
        let mut msg = format!(
            "ERR unknown command '{}', with args beginning with: ",
            String::from_utf8_lossy(&name[..name.len().min(128)])
        );
        for a in args.iter().skip(1).take(8) {
            let _ = write!(
                msg,
                "'{}' ",
                String::from_utf8_lossy(&a[..a.len().min(128)])
            );
        }
        s.tx.flag_error();
        s.reply.error(&msg);
        return;
    };
    shared.metrics.calls[idx].incr();
    s.info.last_cmd.store(idx, Ordering::Relaxed);
    let n = args.len() as i32;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        shared.metrics.errors[idx].incr();
        s.tx.flag_error();
        s.reply.error(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name.to_ascii_lowercase()
        ));
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
    if s.tx.in_multi() && !multi::runs_at_once(spec.id) {
        multi::queue(shared, s, spec, args);
        return;
    }
    let started = std::time::Instant::now();
    let result = run(shared, s, spec.id, args).await;
    let took = started.elapsed();
    if let Err(msg) = result {
        shared.metrics.errors[idx].incr();
        s.reply.error(&msg);
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
    shared.latency.record("command", took);
    // After the name is synced: `CLIENT SETNAME x` is logged under `x`, as Redis logs it.
    if shared.slowlog.wants(took) {
        let name = s.info.detail.lock().name.clone().unwrap_or_default();
        shared
            .slowlog
            .record(took, args, s.info.addr.to_string(), name);
    }
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
        Cmd::Get => {
            let ns = &s.ns;
            match sh.cache.get(ns, &a[1]).await {
                Ok(Some(v)) => s.reply.bulk(&v),
                Ok(None) => s.reply.null(),
                Err(e) => return Err(cache_err(&e)),
            }
        }
        Cmd::Set => set_command(sh, s, id, a).await?,
        Cmd::Ping => match a.len() {
            1 => s.reply.simple("PONG"),
            2 => s.reply.bulk(&a[1]),
            _ => return Err("ERR wrong number of arguments for 'ping' command".into()),
        },
        Cmd::Echo => s.reply.bulk(&a[1]),
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
            s.user = sh.acl.read().initial_user();
            s.info.detail.lock().name = None;
            s.tx.reset();
            s.reply.simple("RESET");
        }
        Cmd::Setex | Cmd::Psetex => set_command(sh, s, id, a).await?,
        Cmd::Getex => getex(sh, s, a).await?,
        Cmd::Getbit | Cmd::Bitcount | Cmd::Bitpos | Cmd::BitfieldRo => {
            read_op(sh, s, id, a).await?;
        }
        Cmd::Object => object(sh, s, a).await?,
        Cmd::Memory => {
            if !(a.len() >= 3 && eq_ic(&a[1], "USAGE")) {
                return Err(format!(
                    "ERR unknown subcommand or wrong number of arguments for '{}'. Try MEMORY HELP.",
                    String::from_utf8_lossy(&a[1][..a[1].len().min(64)])
                ));
            }
            read_op(sh, s, id, a).await?;
        }
        Cmd::Move => {
            let target = other_database(sh, s, &a[2], "MOVE")?;
            let moved = copy_across(sh, s, &a[1], &target, &a[1], false, true).await?;
            s.reply.integer(moved);
        }
        Cmd::Copy if copy_target(a).is_some() => {
            let (target, replace) = copy_target(a).unwrap_or_default();
            let target = other_database(sh, s, &target, "COPY")?;
            if target == s.ns {
                // The same database: a COPY within it (the DB option dropped).
                let mut same: Vec<Bytes> = a[..3].to_vec();
                if replace {
                    same.push(Bytes::from_static(b"REPLACE"));
                }
                let parsed = keyops::parse(id, &same, sh.cache.now_ms())
                    .ok_or("ERR not a key command")??;
                multi::run_alone(sh, s, parsed.ops).await?;
            } else {
                let n = copy_across(sh, s, &a[1], &target, &a[2], replace, false).await?;
                s.reply.integer(n);
            }
        }
        Cmd::Copy | Cmd::Bitop | Cmd::Lcs => {
            let now = sh.cache.now_ms();
            let parsed = keyops::parse(id, a, now).ok_or("ERR not a key command")??;
            multi::run_alone(sh, s, parsed.ops).await?;
        }
        Cmd::Wait => {
            for v in &a[1..] {
                parse_int(v)
                    .filter(|n| *n >= 0)
                    .ok_or("ERR timeout is out of range")?;
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
        | Cmd::Persist => {
            let op = single_op(sh, id, a)?;
            exec(sh, s, &a[1], &op).await?;
        }
        Cmd::Mget => {
            s.reply.array(a.len() - 1);
            for k in &a[1..] {
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
            let len = entry(sh, &s.ns, &a[1]).await?.map_or(0, |e| e.value.len());
            s.reply.integer(len as i64);
        }
        Cmd::Getrange | Cmd::Substr => {
            let (start, end) = (
                parse_int(&a[2]).ok_or_else(not_int)?,
                parse_int(&a[3]).ok_or_else(not_int)?,
            );
            let v = sh
                .cache
                .get(&s.ns, &a[1])
                .await
                .map_err(|e| cache_err(&e))?;
            s.reply
                .bulk(range_of(v.as_deref().unwrap_or(b""), start, end));
        }
        Cmd::Del | Cmd::Unlink => {
            let mut n = 0;
            for k in &a[1..] {
                let _g = sh.key_lock(&s.ns, k).write().await;
                match sh.cache.execute(&s.ns, k.clone(), &KeyOp::Del).await {
                    Ok(ops::Reply::Int(1)) => n += 1,
                    Ok(_) => {}
                    Err(e) => return Err(cache_err(&e)),
                }
            }
            s.reply.integer(n);
        }
        Cmd::Exists | Cmd::Touch => {
            let mut n = 0;
            for k in &a[1..] {
                if matches!(sh.cache.get(&s.ns, k).await, Ok(Some(_))) {
                    n += 1;
                }
            }
            s.reply.integer(n);
        }
        Cmd::Type => match entry(sh, &s.ns, &a[1]).await? {
            Some(_) => s.reply.simple("string"),
            None => s.reply.simple("none"),
        },
        Cmd::Rename | Cmd::Renamenx => {
            one_slot(sh, a[1..3].iter())?;
            rename(sh, s, a, id == Cmd::Renamenx).await?;
        }
        Cmd::Ttl | Cmd::Pttl | Cmd::Expiretime | Cmd::Pexpiretime => {
            let reply = match entry(sh, &s.ns, &a[1]).await? {
                None => -2,
                Some(e) => match e.expires_at_ms {
                    None => -1,
                    Some(at) => match id {
                        Cmd::Ttl => (at.saturating_sub(sh.cache.now_ms()) as i64 + 500) / 1000,
                        Cmd::Pttl => at.saturating_sub(sh.cache.now_ms()) as i64,
                        Cmd::Expiretime => (at / 1000) as i64,
                        _ => at as i64,
                    },
                },
            };
            s.reply.integer(reply);
        }
        Cmd::Keys => {
            let glob = Glob::new(&a[1]).map_err(|e| format!("ERR {e}"))?;
            let keys = list_keys(sh, &s.ns, Some(&glob), usize::MAX).await?;
            s.reply.array(keys.len());
            for k in &keys {
                s.reply.bulk(k);
            }
        }
        Cmd::Scan => scan(sh, s, a).await?,
        Cmd::Randomkey => {
            let start = ScanFrom::at_hash(rand::random());
            let mut keys = scan_keys(sh, &s.ns, start, 1).await?;
            if keys.is_empty() {
                keys = scan_keys(sh, &s.ns, ScanFrom::START, 1).await?;
            }
            match keys.first() {
                Some(k) => s.reply.bulk(k),
                None => s.reply.null(),
            }
        }
        Cmd::Dbsize => {
            let n = list_keys(sh, &s.ns, None, usize::MAX).await?.len();
            s.reply.integer(n as i64);
        }
        Cmd::Flushdb | Cmd::Flushall => {
            if a.len() > 2 || (a.len() == 2 && !eq_ic(&a[1], "ASYNC") && !eq_ic(&a[1], "SYNC")) {
                return Err("ERR syntax error".into());
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
/// primary: every key with the same hash tag (`{…}`), as Redis Cluster requires one slot.
fn one_slot<'k>(sh: &Shared, mut keys: impl Iterator<Item = &'k Bytes>) -> Res<()> {
    if !sh.config.cluster.enabled {
        return Ok(());
    }
    let Some(first) = keys.next() else {
        return Ok(());
    };
    let tag = strata_cluster::ring::hash_tag(first);
    if keys.all(|k| strata_cluster::ring::hash_tag(k) == tag) {
        Ok(())
    } else {
        Err("CROSSSLOT Keys in request don't hash to the same slot".into())
    }
}

/// `COPY`'s `DB n` option, and whether `REPLACE` is given, when `DB` is (the rest of the
/// syntax is checked by the COPY it becomes).
fn copy_target(a: &[Bytes]) -> Option<(Bytes, bool)> {
    let mut target = None;
    let mut replace = false;
    let mut j = 3;
    while j < a.len() {
        if eq_ic(&a[j], "REPLACE") {
            replace = true;
        } else if eq_ic(&a[j], "DB") && j + 1 < a.len() {
            target = Some(a[j + 1].clone());
            j += 1;
        } else {
            return None;
        }
        j += 1;
    }
    target.map(|t| (t, replace))
}

/// The namespace of database `arg` for `MOVE` or `COPY … DB`, checked as Redis checks it
/// (an integer, in range), and refused where a move across namespaces is not one step: in a
/// cluster (as Redis Cluster refuses it; a namespace is a unit of placement) and behind the
/// Redis bridge (other nodes write the same Redis). The user must be allowed the target.
fn other_database(sh: &Shared, s: &Session<'_>, arg: &[u8], command: &str) -> Res<String> {
    if sh.config.cluster.enabled && command == "MOVE" {
        return Err("ERR MOVE is not allowed in cluster mode".into());
    }
    let n = parse_int(arg)
        .filter(|n| i32::try_from(*n).is_ok())
        .ok_or_else(not_int)?;
    if n < 0 || n >= i64::from(sh.config.server.databases) {
        return Err("ERR DB index is out of range".into());
    }
    let target = format!("db{n}");
    if target != s.ns {
        if sh.config.cluster.enabled {
            return Err("ERR Copying to another database is not allowed in cluster mode".into());
        }
        if sh.config.l2.redis.enabled {
            return Err(format!(
                "ERR {command} to another database is not supported behind the Redis bridge"
            ));
        }
    }
    if let Some(u) = &s.user
        && !u.allows_namespace(&target)
    {
        return Err("NOPERM No permissions to access a key".into());
    }
    Ok(target)
}

/// Copies `src` of the session's namespace to `dst` of namespace `to` (value, expiry, tags),
/// then removes `src` when `remove_src` (`MOVE`): `1`, or `0` when `src` is missing or `dst`
/// exists (and not `replace`). Both keys' locks are held throughout, so on this node it is
/// one step for every other client.
async fn copy_across(
    sh: &Shared,
    s: &Session<'_>,
    src: &Bytes,
    to: &str,
    dst: &Bytes,
    replace: bool,
    remove_src: bool,
) -> Res<i64> {
    if to == s.ns && src == dst {
        return Err("ERR source and destination objects are the same".into());
    }
    let (i, j) = (sh.stripe(&s.ns, src), sh.stripe(to, dst));
    let _g1 = sh.lock_at(i.min(j)).write().await;
    let _g2 = if i != j {
        Some(sh.lock_at(i.max(j)).write().await)
    } else {
        None
    };
    let Some(e) = entry(sh, &s.ns, src).await? else {
        return Ok(0);
    };
    if !replace && entry(sh, to, dst).await?.is_some() {
        return Ok(0);
    }
    let mut opts = SetOptions {
        tags: e.tags.clone(),
        ..SetOptions::default()
    };
    match e.expires_at_ms {
        Some(at) if at <= sh.cache.now_ms() => return Ok(0),
        Some(at) => opts.expires_at_ms = Some(at),
        None => opts.persist = true,
    }
    sh.cache
        .set_with(to, dst.clone(), e.value.clone(), opts)
        .await
        .map_err(|e| cache_err(&e))?;
    if remove_src {
        remove(sh, &s.ns, src).await?;
    }
    Ok(1)
}

fn not_int() -> String {
    "ERR value is not an integer or out of range".into()
}

async fn entry(sh: &Shared, ns: &str, key: &[u8]) -> Res<Option<Entry>> {
    sh.cache.get_entry(ns, key).await.map_err(|e| cache_err(&e))
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

async fn set_command(sh: &Shared, s: &mut Session<'_>, id: Cmd, a: &[Bytes]) -> Res<()> {
    let key = &a[1];
    // The plain `SET key value` has nothing to parse (the hot path).
    let (value, ttl) = if id == Cmd::Set && a.len() == 3 {
        (a[2].clone(), Ttl::Default)
    } else {
        let op = single_op(sh, id, a)?;
        match op {
            KeyOp::Set { ttl, .. } if keyops::is_blind_set(&op) => {
                // The value is the argument itself (no copy): SET's third, SETEX's fourth.
                (
                    if id == Cmd::Set {
                        a[2].clone()
                    } else {
                        a[3].clone()
                    },
                    ttl,
                )
            }
            op => return exec(sh, s, key, &op).await,
        }
    };
    // A blind SET shares the lock (it reads nothing), and its layers order it by version.
    let _r = sh.key_lock(&s.ns, key).read().await;
    // A SET replaces the entry: no tags.
    store(sh, &s.ns, key, value, ttl, None).await?;
    s.reply.ok();
    Ok(())
}

/// A read-only key command answered from this node's copy (`GETBIT`, `BITCOUNT`, …).
async fn read_op(sh: &Shared, s: &mut Session<'_>, id: Cmd, a: &[Bytes]) -> Res<()> {
    let key = if matches!(id, Cmd::Object | Cmd::Memory) {
        &a[2]
    } else {
        &a[1]
    };
    let op = single_op(sh, id, a)?;
    let current = entry(sh, &s.ns, key).await?;
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
fn subcommand_arity(command: &str, sub: &[u8]) -> String {
    format!(
        "ERR wrong number of arguments for '{command}|{}' command",
        String::from_utf8_lossy(&sub[..sub.len().min(64)]).to_ascii_lowercase()
    )
}

/// `OBJECT ENCODING | REFCOUNT | IDLETIME | FREQ | HELP`.
async fn object(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    if a.len() == 2 && eq_ic(&a[1], "HELP") {
        let lines = [
            "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>. Strata keeps none: 0.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>. Strata keeps none: 0.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>: 1.",
        ];
        help(s, &lines);
        return Ok(());
    }
    if a.len() != 3 {
        return Err(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try OBJECT HELP.",
            String::from_utf8_lossy(&a[1][..a[1].len().min(64)])
        ));
    }
    if eq_ic(&a[1], "ENCODING") {
        return read_op(sh, s, Cmd::Object, a).await;
    }
    let known = ["REFCOUNT", "IDLETIME", "FREQ"];
    if !known.iter().any(|k| eq_ic(&a[1], k)) {
        return Err(format!(
            "ERR unknown subcommand '{}'. Try OBJECT HELP.",
            String::from_utf8_lossy(&a[1][..a[1].len().min(64)])
        ));
    }
    match entry(sh, &s.ns, &a[2]).await? {
        None => s.reply.null(),
        Some(_) => s.reply.integer(i64::from(eq_ic(&a[1], "REFCOUNT"))),
    }
    Ok(())
}

/// A single-key command's operation, parsed ([`keyops::parse`]).
fn single_op(sh: &Shared, id: Cmd, a: &[Bytes]) -> Res<KeyOp> {
    let parsed = keyops::parse(id, a, sh.cache.now_ms()).ok_or("ERR not a key command")??;
    match parsed.ops.into_iter().next() {
        Some(keyops::Op::Key(_, op)) => Ok(op),
        _ => Err("ERR not a single-key command".into()),
    }
}

/// Runs `op` on `key` at its authority ([`strata_core::Cache::execute`]: this node's
/// layers, a cluster's primary, or Redis behind the bridge), holding the key's lock so that
/// no other writer on this node interleaves, and writes its reply.
async fn exec(sh: &Shared, s: &mut Session<'_>, key: &Bytes, op: &KeyOp) -> Res<()> {
    let reply = {
        let _g = sh.key_lock(&s.ns, key).write().await;
        sh.cache
            .execute(&s.ns, key.clone(), op)
            .await
            .map_err(|e| cache_err(&e))?
    };
    write_reply(s, reply)
}

/// Writes an operation's reply ([`strata_core::ops::Reply`]).
fn write_reply(s: &mut Session<'_>, reply: ops::Reply) -> Res<()> {
    if let ops::Reply::Error(msg) = reply {
        return Err(msg);
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

async fn getex(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    match single_op(sh, Cmd::Getex, a)? {
        KeyOp::Get => match sh.cache.get(&s.ns, &a[1]).await {
            Ok(Some(v)) => s.reply.bulk(&v),
            Ok(None) => s.reply.null(),
            Err(e) => return Err(cache_err(&e)),
        },
        op => return exec(sh, s, &a[1], &op).await,
    }
    Ok(())
}

async fn mset(sh: &Shared, s: &mut Session<'_>, a: &[Bytes], nx: bool) -> Res<()> {
    if a.len() % 2 != 1 {
        let name = if nx { "msetnx" } else { "mset" };
        return Err(format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
    }
    if nx && sh.config.cluster.enabled && a.len() / 2 > MAX_ATOMIC_KEYS {
        return Err(format!(
            "ERR a cluster takes at most {MAX_ATOMIC_KEYS} keys in one atomic multi-key command"
        ));
    }
    let mut stripes: Vec<usize> = a[1..].chunks(2).map(|p| sh.stripe(&s.ns, &p[0])).collect();
    stripes.sort_unstable();
    stripes.dedup();
    let (mut exclusive, mut shared) = (Vec::new(), Vec::new());
    for i in stripes {
        if nx {
            exclusive.push(sh.lock_at(i).write().await);
        } else {
            shared.push(sh.lock_at(i).read().await);
        }
    }
    if nx {
        // At the keys' authority (a cluster's primary of their hash tag), atomically.
        let op = MultiOp::MsetNx(
            a[1..]
                .chunks(2)
                .map(|p| (p[0].to_vec().into(), p[1].to_vec().into()))
                .collect(),
        );
        let reply = sh
            .cache
            .execute_multi(&s.ns, &op)
            .await
            .map_err(|e| cache_err(&e))?;
        return write_reply(s, reply);
    }
    // Checked up front (size, policy), then written: a bad entry fails the whole call.
    sh.cache
        .set_many(
            &s.ns,
            a[1..].chunks(2).map(|p| (p[0].clone(), p[1].clone())),
            SetOptions::default(),
        )
        .await
        .map_err(|e| cache_err(&e))?;
    s.reply.ok();
    Ok(())
}

async fn rename(sh: &Shared, s: &mut Session<'_>, a: &[Bytes], nx: bool) -> Res<()> {
    let (src, dst) = (&a[1], &a[2]);
    let (i, j) = (sh.stripe(&s.ns, src), sh.stripe(&s.ns, dst));
    let _g1 = sh.lock_at(i.min(j)).write().await;
    let _g2 = if i != j {
        Some(sh.lock_at(i.max(j)).write().await)
    } else {
        None
    };
    let op = MultiOp::Rename {
        src: src.to_vec(),
        dst: dst.to_vec(),
        nx,
    };
    let reply = sh
        .cache
        .execute_multi(&s.ns, &op)
        .await
        .map_err(|e| cache_err(&e))?;
    write_reply(s, reply)
}

/// `Cache::scan_keys` on the blocking pool: KEYS and DBSIZE pass over every key (hundreds of
/// milliseconds at 400k keys), and on a worker thread they would hold up every client that
/// worker serves. Other clients' latency does not move while a KEYS, DBSIZE or SCAN runs.
async fn scan_keys(sh: &Shared, ns: &str, from: ScanFrom<'_>, limit: usize) -> Res<Vec<Bytes>> {
    let (cache, ns) = (sh.cache.clone(), ns.to_owned());
    let (hash, after) = (from.hash(), from.after_key().map(<[u8]>::to_vec));
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let from = match &after {
            Some(a) => ScanFrom::after(a),
            None => ScanFrom::at_hash(hash),
        };
        runtime.block_on(cache.scan_keys(&ns, from, limit))
    })
    .await
    .map_err(|e| format!("ERR key listing failed: {e}"))?
    .map_err(|e| cache_err(&e))
}

/// Every key of `ns` (matching `glob`), at most `max`, in one pass over each layer.
async fn list_keys(sh: &Shared, ns: &str, glob: Option<&Glob>, max: usize) -> Res<Vec<Bytes>> {
    let limit = if glob.is_some() { usize::MAX } else { max };
    let mut keys = scan_keys(sh, ns, ScanFrom::START, limit).await?;
    if let Some(g) = glob {
        keys.retain(|k| g.matches(k));
    }
    keys.truncate(max);
    Ok(keys)
}

/// Keys SCAN reads past a full page to find where the page's last hash ends.
const SCAN_LOOKAHEAD: usize = 16;

/// SCAN with a stateless cursor: the cursor is a position in scan order ([`strata_core::scan`]),
/// the smallest hash the next page starts at. A page holds COUNT keys, plus any that share
/// the last one's hash (so that a cursor never falls between keys of one hash), and its
/// cursor is the hash of the first key after it (0 when there is none). Every key present for
/// the whole scan is returned exactly once, whatever else runs, and a cursor stays valid
/// across other clients' scans and restarts. Any number is a valid cursor, as in Redis.
async fn scan(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let cursor = std::str::from_utf8(&a[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or("ERR invalid cursor")?;
    let (mut glob, mut count, mut only_strings) = (None, 10usize, true);
    let mut i = 2;
    while i < a.len() {
        let Some(v) = a.get(i + 1) else {
            return Err("ERR syntax error".into());
        };
        if eq_ic(&a[i], "MATCH") {
            glob = Some(Glob::new(v).map_err(|e| format!("ERR {e}"))?);
        } else if eq_ic(&a[i], "COUNT") {
            count = parse_int(v).filter(|c| *c >= 1).ok_or("ERR syntax error")? as usize;
            count = count.min(100_000);
        } else if eq_ic(&a[i], "TYPE") {
            only_strings = eq_ic(v, "string");
        } else {
            return Err("ERR syntax error".into());
        }
        i += 2;
    }
    let mut page = scan_keys(sh, &s.ns, ScanFrom::at_hash(cursor), count + 1).await?;
    let next = if page.len() <= count {
        0
    } else {
        let last = scan_hash(&page[count - 1]);
        let mut j = count;
        loop {
            if let Some(k) = page.get(j) {
                let h = scan_hash(k);
                if h != last {
                    page.truncate(j);
                    break h;
                }
                j += 1;
                continue;
            }
            // Every key read past the page shares its last hash: read on until it changes.
            let from = page[j - 1].clone();
            let more = scan_keys(sh, &s.ns, ScanFrom::after(&from), SCAN_LOOKAHEAD).await?;
            if more.is_empty() {
                break 0;
            }
            page.extend(more);
        }
    };
    let keys: Vec<&Bytes> = page
        .iter()
        .filter(|k| only_strings && glob.as_ref().is_none_or(|g| g.matches(k)))
        .collect();
    s.reply.array(2);
    s.reply.bulk(next.to_string().as_bytes());
    s.reply.array(keys.len());
    for k in keys {
        s.reply.bulk(k);
    }
    Ok(())
}

fn auth(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let (user, pass) = match a {
        [p] => {
            let acl = sh.acl.read();
            if !acl.any_password() && acl.initial_user().is_some() {
                return Err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into());
            }
            ("default", p)
        }
        [user, p] => (std::str::from_utf8(user).unwrap_or(""), p),
        _ => return Err("ERR syntax error".into()),
    };
    let found = sh.acl.read().authenticate(user, pass);
    match found {
        Some(u) => {
            s.user = Some(u);
            s.reply.ok();
            Ok(())
        }
        None => {
            // Each failure on a connection waits longer before its reply (0.1 s doubling
            // to 2 s): guessing on one connection is slow; the counter and the log show
            // guessing on many.
            s.auth_failures = s.auth_failures.saturating_add(1);
            let shift = (s.auth_failures - 1).min(5);
            s.reply_delay = Some(
                std::time::Duration::from_millis(100 << shift)
                    .min(std::time::Duration::from_secs(2)),
            );
            sh.metrics.auth_failures.incr();
            tracing::warn!(addr = %s.info.addr, user = %String::from_utf8_lossy(&user.as_bytes()[..user.len().min(64)]), failures = s.auth_failures, "AUTH failed");
            Err("WRONGPASS invalid username-password pair or user is disabled.".into())
        }
    }
}

/// `ACL WHOAMI | CAT | LIST | USERS`: the read-only part of Redis's ACL command (users come
/// from the config, so SETUSER and friends are not offered).
fn acl_command(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let sub = &a[1];
    if eq_ic(sub, "WHOAMI") && a.len() == 2 {
        let name = s.user.as_ref().map_or("default", |u| u.name.as_str());
        s.reply.bulk(name.as_bytes());
    } else if eq_ic(sub, "CAT") && a.len() == 2 {
        let cats: &[&str] = &["keyspace", "read", "write", "string", "connection", "admin"];
        s.reply.array(cats.len());
        for c in cats {
            s.reply.bulk(c.as_bytes());
        }
    } else if eq_ic(sub, "LIST") && a.len() == 2 {
        let lines: Vec<String> = sh.acl.read().users().map(|u| u.describe()).collect();
        s.reply.array(lines.len());
        for l in lines {
            s.reply.bulk(l.as_bytes());
        }
    } else if eq_ic(sub, "USERS") && a.len() == 2 {
        let names: Vec<String> = sh.acl.read().users().map(|u| u.name.clone()).collect();
        s.reply.array(names.len());
        for n in names {
            s.reply.bulk(n.as_bytes());
        }
    } else {
        return Err(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try ACL HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)])
        ));
    }
    Ok(())
}

fn hello(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let mut proto = s.reply.proto;
    let mut i = 1;
    if let Some(v) = a.get(1) {
        match parse_int(v) {
            Some(2) => proto = Protocol::Resp2,
            Some(3) => proto = Protocol::Resp3,
            Some(_) => return Err("NOPROTO unsupported protocol version".into()),
            None => return Err("ERR Protocol version is not an integer or out of range".into()),
        }
        i = 2;
    }
    let mut name = None;
    while i < a.len() {
        if eq_ic(&a[i], "AUTH") && i + 2 < a.len() {
            auth(sh, &mut *s, &a[i + 1..i + 3])?;
            // `auth` wrote +OK for the AUTH form; HELLO answers with its map instead.
            s.reply.buf.truncate(s.reply.buf.len() - b"+OK\r\n".len());
            i += 3;
        } else if eq_ic(&a[i], "SETNAME") && i + 1 < a.len() {
            check_client_name(&a[i + 1])?;
            name = Some(Bytes::copy_from_slice(&a[i + 1]));
            i += 2;
        } else {
            return Err(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&a[i][..a[i].len().min(128)])
            ));
        }
    }
    if s.user.is_none() {
        return Err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into());
    }
    if name.is_some() {
        s.info.detail.lock().name = name;
    }
    s.reply.proto = proto;
    s.reply.map(7);
    s.reply.bulk(b"server");
    s.reply.bulk(b"strata");
    s.reply.bulk(b"version");
    s.reply.bulk(REDIS_COMPAT_VERSION.as_bytes());
    s.reply.bulk(b"proto");
    s.reply.integer(proto.version());
    s.reply.bulk(b"id");
    s.reply.integer(s.info.id as i64);
    s.reply.bulk(b"mode");
    s.reply.bulk(b"standalone");
    s.reply.bulk(b"role");
    s.reply.bulk(b"master");
    s.reply.bulk(b"modules");
    s.reply.array(0);
    Ok(())
}

fn select(sh: &Shared, s: &mut Session<'_>, arg: &Bytes) -> Res<()> {
    if let Some(n) = parse_int(arg) {
        if n < 0 || n >= i64::from(sh.config.server.databases) {
            return Err("ERR DB index is out of range".into());
        }
        s.ns = format!("db{n}");
        s.db = Some(n as u32);
    } else {
        let name = std::str::from_utf8(arg).map_err(|_| not_int())?;
        strata_core::namespace::Namespace::new(name).map_err(|e| format!("ERR {e}"))?;
        // Opened here, atomically against the bound: checking at SELECT and creating at
        // the first write let concurrent clients race past it.
        let max = sh.config.server.max_namespaces as usize;
        if sh.cache.open_namespace(name, max).is_err() {
            sh.metrics.namespace_refusals.incr();
            return Err(format!(
                "ERR too many namespaces: {name:?} would be one more than server.max_namespaces ({max})"
            ));
        }
        s.ns = name.to_owned();
        s.db = None;
    }
    s.reply.ok();
    Ok(())
}

async fn strata_set(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let mut opts = SetOptions::default();
    let mut tags = Vec::new();
    let mut i = 3;
    while i < a.len() {
        let Some(v) = a.get(i + 1) else {
            return Err("ERR syntax error".into());
        };
        if eq_ic(&a[i], "EX") || eq_ic(&a[i], "PX") {
            let n = parse_int(v).ok_or_else(not_int)?;
            opts.ttl = Some(Duration::from_millis(keyops::expire_ms(
                n,
                eq_ic(&a[i], "EX"),
                "strata.set",
            )?));
        } else if eq_ic(&a[i], "TAG") {
            tags.push(v.clone());
        } else {
            return Err("ERR syntax error".into());
        }
        i += 2;
    }
    opts.tags = strata_core::entry::Tags::new(tags);
    let _g = sh.key_lock(&s.ns, &a[1]).read().await;
    sh.cache
        .set_with(&s.ns, a[1].clone(), a[2].clone(), opts)
        .await
        .map_err(|e| cache_err(&e))?;
    s.reply.ok();
    Ok(())
}

/// Longest client name `CLIENT SETNAME` and `HELLO … SETNAME` accept (Redis has no limit;
/// every name is held for the connection's life and listed by CLIENT LIST).
const MAX_CLIENT_NAME: usize = 512;

fn check_client_name(name: &[u8]) -> Res<()> {
    if name.len() > MAX_CLIENT_NAME {
        return Err(format!(
            "ERR Client names are limited to {MAX_CLIENT_NAME} bytes"
        ));
    }
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(
            "ERR Client names cannot contain spaces, newlines or special characters.".into(),
        );
    }
    Ok(())
}

fn client_line(sh: &Shared, c: &ClientInfo) -> String {
    let d = c.detail.lock().clone();
    let age = c.connected.elapsed().as_secs();
    let idle = c
        .connected
        .elapsed()
        .as_millis()
        .saturating_sub(u128::from(c.last_cmd_ms.load(Ordering::Relaxed)))
        / 1000;
    format!(
        "id={} addr={} laddr={} name={} age={} idle={} flags=N db={} ns={} cmd={} user={} resp={}\n",
        c.id,
        c.addr,
        sh.resp_addr,
        d.name
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default(),
        age,
        idle,
        d.db.map_or(-1, i64::from),
        d.namespace,
        COMMANDS
            .get(c.last_cmd.load(Ordering::Relaxed))
            .map_or_else(|| "NULL".to_owned(), |spec| spec.name.to_ascii_lowercase()),
        d.user,
        d.resp
    )
}

fn client(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let sub = &a[1];
    if eq_ic(sub, "ID") && a.len() == 2 {
        s.reply.integer(s.info.id as i64);
    } else if eq_ic(sub, "SETNAME") && a.len() == 3 {
        check_client_name(&a[2])?;
        // A copy: the argument is a slice of the connection's read buffer, which a kept
        // slice would keep alive whole.
        s.info.detail.lock().name = (!a[2].is_empty()).then(|| Bytes::copy_from_slice(&a[2]));
        s.reply.ok();
    } else if eq_ic(sub, "GETNAME") && a.len() == 2 {
        match s.info.detail.lock().name.clone() {
            Some(n) => s.reply.bulk(&n),
            None => s.reply.null(),
        }
    } else if eq_ic(sub, "LIST") {
        s.sync_detail();
        let mut out = String::new();
        for c in sh.shared_clients() {
            out.push_str(&client_line(sh, &c));
        }
        s.reply.verbatim(out.as_bytes());
    } else if eq_ic(sub, "INFO") && a.len() == 2 {
        s.sync_detail();
        s.reply.verbatim(client_line(sh, &s.info).as_bytes());
    } else if eq_ic(sub, "SETINFO") && a.len() == 4 {
        // Client libraries announce their name and version; accepted and ignored.
        s.reply.ok();
    } else if (eq_ic(sub, "NO-EVICT") || eq_ic(sub, "NO-TOUCH")) && a.len() == 3 {
        s.reply.ok();
    } else {
        return Err(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)])
        ));
    }
    Ok(())
}

impl Shared {
    fn shared_clients(&self) -> Vec<Arc<ClientInfo>> {
        self.clients()
    }
}

/// The settings `CONFIG GET` reports, with their current values.
fn config_values(sh: &Shared) -> Vec<(&'static str, String)> {
    let c = &sh.config;
    vec![
        ("bind", sh.resp_addr.ip().to_string()),
        ("port", sh.resp_addr.port().to_string()),
        ("databases", c.server.databases.to_string()),
        (
            "maxclients",
            sh.max_clients.load(Ordering::Relaxed).to_string(),
        ),
        (
            "timeout",
            sh.idle_timeout_secs.load(Ordering::Relaxed).to_string(),
        ),
        (
            "requirepass",
            sh.requirepass.read().clone().unwrap_or_default(),
        ),
        (
            "maxmemory",
            if c.l1.enabled { c.l1.capacity_bytes } else { 0 }.to_string(),
        ),
        ("maxmemory-policy", "allkeys-lfu".into()),
        ("proto-max-bulk-len", c.limits.max_value_bytes.to_string()),
        (
            "client-query-buffer-limit",
            c.server.max_request_bytes.to_string(),
        ),
        ("save", String::new()),
        ("appendonly", "no".into()),
        (
            "slowlog-log-slower-than",
            sh.slowlog.slower_than_us().to_string(),
        ),
        ("slowlog-max-len", sh.slowlog.max_len().to_string()),
        (
            "latency-monitor-threshold",
            sh.latency.threshold_ms().to_string(),
        ),
    ]
}

/// A `CONFIG SET` integer of at least `min`, with Redis's two refusals.
fn config_int(v: &[u8], min: i64, name: &str) -> Res<i64> {
    match parse_int(v) {
        Some(n) if n >= min => Ok(n),
        Some(_) => Err(format!(
            "ERR CONFIG SET failed (possibly related to argument '{name}') - argument must be between {min} and 9223372036854775807 inclusive"
        )),
        None => Err(format!(
            "ERR CONFIG SET failed (possibly related to argument '{name}') - argument couldn't be parsed into an integer"
        )),
    }
}

fn config(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let sub = &a[1];
    if eq_ic(sub, "GET") && a.len() >= 3 {
        let mut pairs = Vec::new();
        for pat in &a[2..] {
            let glob = Glob::new(&lower(pat).into_bytes()).map_err(|e| format!("ERR {e}"))?;
            for (k, v) in config_values(sh) {
                if glob.matches(k.as_bytes())
                    && !pairs.iter().any(|(pk, _): &(&str, String)| *pk == k)
                {
                    pairs.push((k, v));
                }
            }
        }
        s.reply.map(pairs.len());
        for (k, v) in pairs {
            s.reply.bulk(k.as_bytes());
            s.reply.bulk(v.as_bytes());
        }
    } else if eq_ic(sub, "SET") && a.len() >= 4 && a.len() % 2 == 0 {
        for pair in a[2..].chunks(2) {
            let (k, v) = (lower(&pair[0]), &pair[1]);
            match k.as_str() {
                "maxclients" => {
                    let n = parse_int(v).filter(|n| *n >= 1 && *n <= i64::from(u32::MAX)).ok_or_else(|| {
                        "ERR CONFIG SET failed (possibly related to argument 'maxclients') - argument must be a positive integer".to_string()
                    })?;
                    sh.max_clients.store(n as u32, Ordering::Relaxed);
                }
                "timeout" => {
                    let n = parse_int(v).filter(|n| *n >= 0).ok_or_else(|| {
                        "ERR CONFIG SET failed (possibly related to argument 'timeout') - argument must be a non-negative integer".to_string()
                    })?;
                    sh.idle_timeout_secs.store(n as u64, Ordering::Relaxed);
                }
                "requirepass" => {
                    let p = String::from_utf8(v.to_vec())
                        .map_err(|_| "ERR requirepass must be UTF-8".to_string())?;
                    let p = (!p.is_empty()).then_some(p);
                    let srv = &sh.config.server;
                    if p.is_none()
                        && srv.protected_mode
                        && srv.users.is_empty()
                        && !strata::config::is_loopback(&srv.resp_listen)
                    {
                        return Err("ERR CONFIG SET failed (possibly related to argument 'requirepass') - protected mode: this node listens beyond loopback and would have no password".into());
                    }
                    sh.acl.write().set_requirepass(p.as_deref());
                    *sh.requirepass.write() = p;
                }
                "slowlog-log-slower-than" => {
                    let n = config_int(v, -1, "slowlog-log-slower-than")?;
                    sh.slowlog.set_slower_than_us(n);
                }
                "slowlog-max-len" => {
                    let n = config_int(v, 0, "slowlog-max-len")?;
                    sh.slowlog
                        .set_max_len(usize::try_from(n).unwrap_or(usize::MAX));
                }
                "latency-monitor-threshold" => {
                    let n = config_int(v, 0, "latency-monitor-threshold")?;
                    sh.latency.set_threshold_ms(n as u64);
                }
                "save" | "appendonly" => {}
                other => {
                    return Err(format!(
                        "ERR Unknown option or number of arguments for CONFIG SET - '{other}'"
                    ));
                }
            }
        }
        s.reply.ok();
    } else if eq_ic(sub, "RESETSTAT") && a.len() == 2 {
        s.reply.ok();
    } else {
        return Err(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)])
        ));
    }
    Ok(())
}

fn command_info(s: &mut Session<'_>, c: &CommandSpec) {
    s.reply.array(10);
    s.reply.bulk(c.name.to_ascii_lowercase().as_bytes());
    s.reply.integer(i64::from(c.arity));
    let flags: &[&str] = if c.write {
        &["write"]
    } else {
        &["readonly", "fast"]
    };
    s.reply.set(flags.len());
    for f in flags {
        s.reply.simple(f);
    }
    s.reply.integer(c.first_key);
    s.reply.integer(c.last_key);
    s.reply.integer(c.step);
    s.reply.set(0);
    s.reply.set(0);
    s.reply.array(0);
    s.reply.array(0);
}

fn command(s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let Some(sub) = a.get(1) else {
        s.reply.array(COMMANDS.len());
        for c in COMMANDS {
            command_info(s, c);
        }
        return Ok(());
    };
    if eq_ic(sub, "COUNT") {
        s.reply.integer(COMMANDS.len() as i64);
    } else if eq_ic(sub, "LIST") {
        s.reply.array(COMMANDS.len());
        for c in COMMANDS {
            s.reply.bulk(c.name.to_ascii_lowercase().as_bytes());
        }
    } else if eq_ic(sub, "INFO") {
        let names = &a[2..];
        if names.is_empty() {
            s.reply.array(COMMANDS.len());
            for c in COMMANDS {
                command_info(s, c);
            }
        } else {
            s.reply.array(names.len());
            for n in names {
                match lookup(n) {
                    Some((_, c)) => command_info(s, c),
                    None => s.reply.null_array(),
                }
            }
        }
    } else if eq_ic(sub, "DOCS") {
        let wanted: Vec<&CommandSpec> = if a.len() > 2 {
            a[2..]
                .iter()
                .filter_map(|n| lookup(n).map(|(_, c)| c))
                .collect()
        } else {
            COMMANDS.iter().collect()
        };
        s.reply.map(wanted.len());
        for c in wanted {
            s.reply.bulk(c.name.to_ascii_lowercase().as_bytes());
            s.reply.map(3);
            s.reply.bulk(b"summary");
            s.reply.bulk(c.summary.as_bytes());
            s.reply.bulk(b"since");
            s.reply.bulk(b"1.0.0");
            s.reply.bulk(b"group");
            s.reply.bulk(c.group.as_bytes());
        }
    } else {
        return Err(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)])
        ));
    }
    Ok(())
}

async fn info(sh: &Shared, s: &mut Session<'_>, sections: &[Bytes]) {
    let want = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|w| {
                eq_ic(w, name) || eq_ic(w, "all") || eq_ic(w, "everything") || eq_ic(w, "default")
            })
    };
    let mut out = String::new();
    let stats = sh.cache.stats();
    if want("server") {
        let up = sh.started.elapsed().as_secs();
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nstrata_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{}\r\nnode_name:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            sh.resp_addr.port(),
            up / 86_400,
            sh.config.node.name,
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\r\n",
            sh.connection_count(),
            sh.max_clients.load(Ordering::Relaxed)
        );
    }
    if want("memory") {
        let (used, max) = stats
            .l1
            .as_ref()
            .map_or((0, 0), |l| (l.resident_bytes, l.capacity_bytes));
        let input = sh.input_bytes.load(Ordering::Relaxed);
        let rss = crate::metrics::process_rss_bytes().unwrap_or(0);
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{:.2}M\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{:.2}M\r\nmaxmemory:{max}\r\nmaxmemory_human:{:.2}M\r\nmaxmemory_policy:allkeys-lfu\r\nmem_clients_normal:{input}\r\nstrata_l1_resident_bytes:{used}\r\nstrata_client_input_bytes:{input}\r\nstrata_client_input_budget_bytes:{}\r\nstrata_client_output_limit_bytes:{}\r\n\r\n",
            used as f64 / 1048576.0,
            rss as f64 / 1048576.0,
            max as f64 / 1048576.0,
            sh.config.server.max_input_bytes_total,
            sh.config.server.client_output_buffer_limit_bytes,
        );
    }
    if want("persistence") {
        // L3 writes through on every write: there is no snapshot or append-only file to
        // report, and nothing is ever loading.
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\nasync_loading:0\r\nrdb_changes_since_last_save:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_bgsave_status:ok\r\naof_enabled:0\r\naof_rewrite_in_progress:0\r\nstrata_l3_enabled:{}\r\n\r\n",
            u8::from(sh.config.l3.enabled)
        );
    }
    if want("stats") {
        let m = &sh.metrics;
        let evicted = stats.l1.as_ref().map_or(0, |l| l.evictions);
        let expired = stats.l1.as_ref().map_or(0, |l| l.expirations);
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\nexpired_keys:{expired}\r\nevicted_keys:{evicted}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\n\r\n",
            m.connections_total.get(),
            m.total_commands(),
            m.rejected_connections.get(),
            stats.hit_count,
            stats.miss_count,
        );
    }
    if want("replication") {
        // Every node is a primary for some keys and a replica for others; to a Redis
        // client each is a master with no replicas of its own.
        let _ = write!(
            out,
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_repl_offset:0\r\nrepl_backlog_active:0\r\n\r\n"
        );
    }
    if want("cpu") {
        let (user, sys) = cpu_seconds().unwrap_or((0.0, 0.0));
        let _ = write!(
            out,
            "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\n\r\n"
        );
    }
    if want("cluster") {
        // Strata's cluster is not Redis Cluster's protocol: clients see one server.
        out.push_str("# Cluster\r\ncluster_enabled:0\r\n\r\n");
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        for i in 0..sh.config.server.databases {
            let ns = format!("db{i}");
            if s.user.as_ref().is_some_and(|u| !u.allows_namespace(&ns)) {
                continue;
            }
            if let Ok(keys) = list_keys(sh, &ns, None, usize::MAX).await
                && !keys.is_empty()
            {
                let _ = write!(
                    out,
                    "db{i}:keys={},expires={},avg_ttl=0\r\n",
                    keys.len(),
                    keys.len()
                );
            }
        }
        out.push_str("\r\n");
    }
    if want("strata") {
        out.push_str("# Strata\r\n");
        let _ = write!(out, "hit_rate:{:.4}\r\n", stats.hit_rate);
        for l in &stats.layers {
            let name = l.layer.to_string().to_lowercase();
            let _ = write!(
                out,
                "{name}_hits:{}\r\n{name}_misses:{}\r\n{name}_sets:{}\r\n{name}_errors:{}\r\n{name}_latency_p50_us:{:.2}\r\n{name}_latency_p99_us:{:.2}\r\n",
                l.hits, l.misses, l.sets, l.errors, l.latency.p50_us, l.latency.p99_us
            );
        }
        let _ = write!(out, "policy_violations:{}\r\n\r\n", stats.policy_violations);
    }
    s.reply.verbatim(out.trim_end_matches("\r\n").as_bytes());
}

/// The process's user and system CPU time in seconds (`/proc/self/stat`).
fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    let ticks = 100.0; // USER_HZ on Linux
    let user: f64 = fields.get(11)?.parse().ok()?;
    let sys: f64 = fields.get(12)?.parse().ok()?;
    Some((user / ticks, sys / ticks))
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
