//! The command table: every command Strata answers, one row each (name, arity, whether it
//! writes, key positions, group, dispatch id, summary). `execute` looks commands up here
//! (arity and ACL checks), `COMMAND INFO`/`DOCS`/`COUNT`/`LIST` and the metrics read it, and
//! `run` dispatches on the row's [`Cmd`] with a `match` (no boxed future per command on the
//! hot path).

/// What a command is, for dispatch, `COMMAND` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum Cmd {
    Acl,
    Append,
    Asking,
    Auth,
    Bitcount,
    Bitfield,
    BitfieldRo,
    Bitop,
    Bitpos,
    Client,
    Cluster,
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
    Psubscribe,
    Pttl,
    Publish,
    Pubsub,
    Punsubscribe,
    Quit,
    Randomkey,
    Readonly,
    Readwrite,
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
    Spublish,
    Ssubscribe,
    StrataInvalidatePattern,
    StrataInvalidateTag,
    StrataSet,
    StrataStats,
    Strlen,
    Subscribe,
    Substr,
    Sunsubscribe,
    Time,
    Touch,
    Ttl,
    Type,
    Unlink,
    Unsubscribe,
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

macro_rules! row {
    (@write W) => { true };
    (@write R) => { false };
    ($name:literal, $arity:expr, $w:ident, $first:expr, $last:expr, $step:expr, $group:literal, $id:ident, $summary:literal) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            write: row!(@write $w),
            first_key: $first,
            last_key: $last,
            step: $step,
            group: $group,
            summary: $summary,
            id: Cmd::$id,
        }
    };
}

/// Every command, sorted by name (the order `COMMAND LIST` shows; [`lookup`] finds a row
/// through an index by length and first letter): one row each. `W` marks a command that
/// changes data (what ACL read users and read-only scripts refuse); the three
/// numbers are Redis's key positions (first, last, step; 0 0 0 for none).
#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    // row!(name, arity, W writes | R reads, first key, last key, key step, group, dispatch, summary)
    row!("ACL",                       -2, R, 0, 0,  0, "server",       Acl,                     "Access control: WHOAMI, CAT, LIST, USERS."),
    row!("APPEND",                    3,  W, 1, 1,  1, "string",       Append,                  "Appends a string to the value of a key."),
    row!("ASKING",                    1,  R, 0, 0,  0, "cluster",      Asking,                  "Accepted for cluster clients (Strata never answers ASK)."),
    row!("AUTH",                      -2, R, 0, 0,  0, "connection",   Auth,                    "Authenticates the connection."),
    row!("BITCOUNT",                  -2, R, 1, 1,  1, "bitmap",       Bitcount,                "Counts the set bits of a value (a range of bytes or bits)."),
    row!("BITFIELD",                  -2, W, 1, 1,  1, "bitmap",       Bitfield,                "Reads, sets and increments integer fields of a value (GET, SET, INCRBY, OVERFLOW)."),
    row!("BITFIELD_RO",               -2, R, 1, 1,  1, "bitmap",       BitfieldRo,              "Reads integer fields of a value (GET only)."),
    row!("BITOP",                     -4, W, 2, -1, 1, "bitmap",       Bitop,                   "AND, OR, XOR or NOT of values into a key."),
    row!("BITPOS",                    -3, R, 1, 1,  1, "bitmap",       Bitpos,                  "Finds the first set or clear bit of a value."),
    row!("CLIENT",                    -2, R, 0, 0,  0, "connection",   Client,                  "Connection management (ID, SETNAME, GETNAME, LIST, INFO, SETINFO)."),
    row!("CLUSTER",                   -2, R, 0, 0,  0, "cluster",      Cluster,                 "Redis Cluster's view: KEYSLOT, SLOTS, SHARDS, NODES, MYID, INFO."),
    row!("COMMAND",                   -1, R, 0, 0,  0, "server",       Command,                 "Details about commands (COUNT, INFO, DOCS, LIST)."),
    row!("CONFIG",                    -2, R, 0, 0,  0, "server",       Config,                  "Reads or changes server settings (GET, SET)."),
    row!("COPY",                      -3, W, 1, 2,  1, "generic",      Copy,                    "Copies a key (REPLACE)."),
    row!("DBSIZE",                    1,  R, 0, 0,  0, "server",       Dbsize,                  "Returns the number of keys in the selected database."),
    row!("DECR",                      2,  W, 1, 1,  1, "string",       Decr,                    "Decrements the integer value of a key by one."),
    row!("DECRBY",                    3,  W, 1, 1,  1, "string",       Decrby,                  "Decrements the integer value of a key by a number."),
    row!("DEL",                       -2, W, 1, -1, 1, "generic",      Del,                     "Deletes keys."),
    row!("DISCARD",                   1,  R, 0, 0,  0, "transactions", Discard,                 "Discards a transaction."),
    row!("ECHO",                      2,  R, 0, 0,  0, "connection",   Echo,                    "Returns the given string."),
    row!("EVAL",                      -3, W, 0, 0,  0, "scripting",    Eval,                    "Runs a Lua script on its declared keys, atomically."),
    row!("EVALSHA",                   -3, W, 0, 0,  0, "scripting",    Evalsha,                 "Runs a cached Lua script by its SHA1."),
    row!("EVALSHA_RO",                -3, R, 0, 0,  0, "scripting",    EvalshaRo,               "Runs a cached read-only Lua script by its SHA1."),
    row!("EVAL_RO",                   -3, R, 0, 0,  0, "scripting",    EvalRo,                  "Runs a read-only Lua script."),
    row!("EXEC",                      1,  R, 0, 0,  0, "transactions", Exec,                    "Executes the commands queued since MULTI, atomically."),
    row!("EXISTS",                    -2, R, 1, -1, 1, "generic",      Exists,                  "Counts how many of the keys exist."),
    row!("EXPIRE",                    -3, W, 1, 1,  1, "generic",      Expire,                  "Sets a key's time to live in seconds."),
    row!("EXPIREAT",                  -3, W, 1, 1,  1, "generic",      Expireat,                "Sets a key's expiry to a Unix time in seconds."),
    row!("EXPIRETIME",                2,  R, 1, 1,  1, "generic",      Expiretime,              "Returns a key's expiry as a Unix time in seconds."),
    row!("FLUSHALL",                  -1, W, 0, 0,  0, "server",       Flushall,                "Removes every key of every namespace."),
    row!("FLUSHDB",                   -1, W, 0, 0,  0, "server",       Flushdb,                 "Removes every key of the selected namespace."),
    row!("GET",                       2,  R, 1, 1,  1, "string",       Get,                     "Returns the value of a key."),
    row!("GETBIT",                    3,  R, 1, 1,  1, "bitmap",       Getbit,                  "Returns a bit of a value."),
    row!("GETDEL",                    2,  W, 1, 1,  1, "string",       Getdel,                  "Returns the value of a key and deletes it."),
    row!("GETEX",                     -2, W, 1, 1,  1, "string",       Getex,                   "Returns the value of a key and changes its expiry."),
    row!("GETRANGE",                  4,  R, 1, 1,  1, "string",       Getrange,                "Returns a substring of a value."),
    row!("GETSET",                    3,  W, 1, 1,  1, "string",       Getset,                  "Sets a value and returns the previous one."),
    row!("HELLO",                     -1, R, 0, 0,  0, "connection",   Hello,                   "Handshake: protocol version, AUTH, SETNAME."),
    row!("INCR",                      2,  W, 1, 1,  1, "string",       Incr,                    "Increments the integer value of a key by one."),
    row!("INCRBY",                    3,  W, 1, 1,  1, "string",       Incrby,                  "Increments the integer value of a key by a number."),
    row!("INCRBYFLOAT",               3,  W, 1, 1,  1, "string",       Incrbyfloat,             "Increments the float value of a key."),
    row!("INFO",                      -1, R, 0, 0,  0, "server",       Info,                    "Server information and statistics."),
    row!("KEYS",                      2,  R, 0, 0,  0, "generic",      Keys,                    "Returns the keys matching a pattern."),
    row!("LATENCY",                   -2, R, 0, 0,  0, "server",       Latency,                 "The latency monitor: LATEST, HISTORY, RESET."),
    row!("LCS",                       -3, R, 1, 2,  1, "string",       Lcs,                     "The longest common subsequence of two values (LEN)."),
    row!("MEMORY",                    -2, R, 0, 0,  0, "server",       Memory,                  "MEMORY USAGE key: about how many bytes a key takes."),
    row!("MGET",                      -2, R, 1, -1, 1, "string",       Mget,                    "Returns the values of several keys."),
    row!("MOVE",                      3,  W, 1, 1,  1, "keyspace",     Move,                    "Moves a key to another database (one node, no Redis bridge)."),
    row!("MSET",                      -3, W, 1, -1, 2, "string",       Mset,                    "Sets several keys."),
    row!("MSETNX",                    -3, W, 1, -1, 2, "string",       Msetnx,                  "Sets several keys only if none exists."),
    row!("MULTI",                     1,  R, 0, 0,  0, "transactions", Multi,                   "Starts a transaction."),
    row!("OBJECT",                    -2, R, 2, 2,  1, "generic",      Object,                  "Inspects a key (ENCODING, REFCOUNT, IDLETIME, FREQ)."),
    row!("PERSIST",                   2,  W, 1, 1,  1, "generic",      Persist,                 "Removes a key's expiry (where the namespace has no max_ttl)."),
    row!("PEXPIRE",                   -3, W, 1, 1,  1, "generic",      Pexpire,                 "Sets a key's time to live in milliseconds."),
    row!("PEXPIREAT",                 -3, W, 1, 1,  1, "generic",      Pexpireat,               "Sets a key's expiry to a Unix time in milliseconds."),
    row!("PEXPIRETIME",               2,  R, 1, 1,  1, "generic",      Pexpiretime,             "Returns a key's expiry as a Unix time in milliseconds."),
    row!("PING",                      -1, R, 0, 0,  0, "connection",   Ping,                    "Returns PONG or the given message."),
    row!("PSETEX",                    4,  W, 1, 1,  1, "string",       Psetex,                  "Sets a value with a TTL in milliseconds."),
    row!("PSUBSCRIBE",                -2, R, 0, 0,  0, "pubsub",       Psubscribe,              "Subscribes to channels matching patterns."),
    row!("PTTL",                      2,  R, 1, 1,  1, "generic",      Pttl,                    "Returns a key's time to live in milliseconds."),
    row!("PUBLISH",                   3,  R, 0, 0,  0, "pubsub",       Publish,                 "Posts a message to a channel, on every node of the cluster."),
    row!("PUBSUB",                    -2, R, 0, 0,  0, "pubsub",       Pubsub,                  "Channels and subscriber counts (CHANNELS, NUMSUB, NUMPAT, SHARDCHANNELS, SHARDNUMSUB)."),
    row!("PUNSUBSCRIBE",              -1, R, 0, 0,  0, "pubsub",       Punsubscribe,            "Unsubscribes from patterns (all without arguments)."),
    row!("QUIT",                      -1, R, 0, 0,  0, "connection",   Quit,                    "Closes the connection."),
    row!("RANDOMKEY",                 1,  R, 0, 0,  0, "generic",      Randomkey,               "Returns a random key."),
    row!("READONLY",                  1,  R, 0, 0,  0, "cluster",      Readonly,                "On the cluster listener: reads of slots this node replicates run here."),
    row!("READWRITE",                 1,  R, 0, 0,  0, "cluster",      Readwrite,               "Ends READONLY."),
    row!("RENAME",                    3,  W, 1, 2,  1, "generic",      Rename,                  "Renames a key."),
    row!("RENAMENX",                  3,  W, 1, 2,  1, "generic",      Renamenx,                "Renames a key only if the new name does not exist."),
    row!("RESET",                     1,  R, 0, 0,  0, "connection",   Reset,                   "Resets the connection."),
    row!("SCAN",                      -2, R, 0, 0,  0, "generic",      Scan,                    "Iterates over the keys of the selected namespace."),
    row!("SCRIPT",                    -2, R, 0, 0,  0, "scripting",    Script,                  "Script cache: LOAD, EXISTS, FLUSH, KILL."),
    row!("SELECT",                    2,  R, 0, 0,  0, "connection",   Select,                  "Selects a database by index, or a namespace by name."),
    row!("SET",                       -3, W, 1, 1,  1, "string",       Set,                     "Sets a value (EX, PX, EXAT, PXAT, KEEPTTL, NX, XX, GET)."),
    row!("SETBIT",                    4,  W, 1, 1,  1, "bitmap",       Setbit,                  "Sets a bit of a value."),
    row!("SETEX",                     4,  W, 1, 1,  1, "string",       Setex,                   "Sets a value with a TTL in seconds."),
    row!("SETNX",                     3,  W, 1, 1,  1, "string",       Setnx,                   "Sets a value only if the key does not exist."),
    row!("SETRANGE",                  4,  W, 1, 1,  1, "string",       Setrange,                "Overwrites part of a value at an offset."),
    row!("SLOWLOG",                   -2, R, 0, 0,  0, "server",       Slowlog,                 "The commands slower than slowlog-log-slower-than: GET, LEN, RESET."),
    row!("SPUBLISH",                  3,  R, 0, 0,  0, "pubsub",       Spublish,                "Posts a message to a shard channel, on every node of the cluster."),
    row!("SSUBSCRIBE",                -2, R, 0, 0,  0, "pubsub",       Ssubscribe,              "Subscribes to shard channels."),
    row!("STRATA.INVALIDATE.PATTERN", 2,  W, 0, 0,  0, "strata",       StrataInvalidatePattern, "Removes every key of the namespace matching a glob, on every layer."),
    row!("STRATA.INVALIDATE.TAG",     2,  W, 0, 0,  0, "strata",       StrataInvalidateTag,     "Removes every key of the namespace carrying a tag, on every layer."),
    row!("STRATA.SET",                -3, W, 1, 1,  1, "strata",       StrataSet,               "Sets a value with tags: key value [EX s|PX ms] [TAG tag]..."),
    row!("STRATA.STATS",              1,  R, 0, 0,  0, "strata",       StrataStats,             "Per-layer hits, misses and latency, as JSON."),
    row!("STRLEN",                    2,  R, 1, 1,  1, "string",       Strlen,                  "Returns the length of a value."),
    row!("SUBSCRIBE",                 -2, R, 0, 0,  0, "pubsub",       Subscribe,               "Subscribes to channels."),
    row!("SUBSTR",                    4,  R, 1, 1,  1, "string",       Substr,                  "Returns a substring of a value (GETRANGE)."),
    row!("SUNSUBSCRIBE",              -1, R, 0, 0,  0, "pubsub",       Sunsubscribe,            "Unsubscribes from shard channels (all without arguments)."),
    row!("TIME",                      1,  R, 0, 0,  0, "server",       Time,                    "Returns the server time."),
    row!("TOUCH",                     -2, R, 1, -1, 1, "generic",      Touch,                   "Counts how many of the keys exist."),
    row!("TTL",                       2,  R, 1, 1,  1, "generic",      Ttl,                     "Returns a key's time to live in seconds."),
    row!("TYPE",                      2,  R, 1, 1,  1, "generic",      Type,                    "Returns the type of a key (string or none)."),
    row!("UNLINK",                    -2, W, 1, -1, 1, "generic",      Unlink,                  "Deletes keys."),
    row!("UNSUBSCRIBE",               -1, R, 0, 0,  0, "pubsub",       Unsubscribe,             "Unsubscribes from channels (all without arguments)."),
    row!("UNWATCH",                   1,  R, 0, 0,  0, "transactions", Unwatch,                 "Forgets the watched keys."),
    row!("WAIT",                      3,  R, 0, 0,  0, "generic",      Wait,                    "Waits for the other owners to hold this client's writes (they already do)."),
    row!("WATCH",                     -2, R, 1, -1, 1, "transactions", Watch,                   "Watches keys: EXEC aborts if one of them changes first."),
];

/// The spec of a command name, matched case-insensitively.
///
/// Twice per command on the hot path (a pipeline's grouping check, then dispatch): the
/// names are bucketed by length and first letter (`index`), so a lookup compares one or
/// two names, where a binary search over the table compared seven (8 % of a node's CPU
/// under `GET -P 16`, measured with `perf`).
pub fn lookup(name: &[u8]) -> Option<(usize, &'static CommandSpec)> {
    let mut upper = [0u8; MAX_NAME];
    if name.is_empty() || name.len() > upper.len() {
        return None;
    }
    for (d, s) in upper.iter_mut().zip(name) {
        *d = s.to_ascii_uppercase();
    }
    let name = &upper[..name.len()];
    let index = index();
    let b = bucket(name);
    index.order[index.starts[b] as usize..index.starts[b + 1] as usize]
        .iter()
        .map(|&i| i as usize)
        .find(|&i| COMMANDS[i].name.as_bytes() == name)
        .map(|i| (i, &COMMANDS[i]))
}

/// The longest name a lookup considers (every command's is shorter).
const MAX_NAME: usize = 32;

/// Buckets: 32 lengths × 32 values of the first byte's low five bits (a letter's position).
const BUCKETS: usize = MAX_NAME * 32;

fn bucket(upper: &[u8]) -> usize {
    ((upper.len() - 1) << 5) | (upper[0] & 31) as usize
}

/// [`COMMANDS`]' positions grouped by [`bucket`]: bucket `b`'s are
/// `order[starts[b]..starts[b + 1]]`.
struct Index {
    starts: [u16; BUCKETS + 1],
    order: Vec<u16>,
}

fn index() -> &'static Index {
    static INDEX: std::sync::OnceLock<Index> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        let mut order: Vec<u16> = (0..COMMANDS.len() as u16).collect();
        order.sort_by_key(|&i| bucket(COMMANDS[i as usize].name.as_bytes()));
        let mut starts = [0u16; BUCKETS + 1];
        for &i in &order {
            starts[bucket(COMMANDS[i as usize].name.as_bytes()) + 1] += 1;
        }
        for b in 0..BUCKETS {
            starts[b + 1] += starts[b];
        }
        Index { starts, order }
    })
}
