//! Lua scripting as Redis has it: `EVAL`, `EVALSHA`, `EVAL_RO`, `EVALSHA_RO`, `SCRIPT LOAD |
//! EXISTS | FLUSH | KILL`, with `redis.call`, `redis.pcall`, `redis.error_reply`,
//! `redis.status_reply`, `redis.sha1hex`, `redis.log`, `KEYS`, `ARGV`, `cjson`, and Redis's
//! Lua↔RESP conversions, on Lua 5.1 (mlua, vendored).
//!
//! A script runs where its keys' writes run — this node under every key's lock, the
//! primary of the keys' hash tag in a cluster, Redis's data through the bridge — as one
//! [`MultiOp::Script`]: the node the client reached sends the source, `KEYS` and `ARGV`, and
//! the authority runs it with [`LuaEngine`] on a [`TxView`] of the declared keys; each
//! `redis.call` is parsed by the same parser as the commands (`commands/keyops.rs`) and applied to the
//! view, and the keys' final changes are what is stored and replicated (effects, not the
//! script). A script may touch only the keys it declares.
//!
//! Sandbox: a fresh Lua state per run with the base, table, string and math libraries (no
//! `os`, `io`, `debug`, `package`, `loadfile`, `dofile`, `loadstring`, `load`, `setfenv`,
//! `getfenv`), globals read-only (creating or reading an undefined global is an error), a
//! memory limit, and a time limit after which the script is stopped and nothing it did is
//! applied (`SCRIPT KILL` stops running scripts the same way).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mlua::{HookTriggers, Lua, LuaOptions, LuaSerdeExt, MultiValue, StdLib, Value, VmState};
use parking_lot::Mutex;
use sha1::{Digest, Sha1};
use strata_core::ops::{MultiOp, Reply, Script, ScriptEngine, Token, TxStep, TxView};

use super::keyops::{self, Op, Shape};
use super::{ReplyError, Res, Session, cache_err, eq_ic, lookup, one_slot, parse_int};
use crate::state::Shared;

/// Most memory one script's Lua state may allocate.
pub const SCRIPT_MEMORY_LIMIT: usize = 64 * 1024 * 1024;
/// Scripts the node remembers for `EVALSHA`, loaded and `EVAL`'s together ([`ScriptCache`]).
pub const MAX_CACHED_SCRIPTS: usize = 10_000;
/// Scripts that only `EVAL` brought which the node keeps (Redis 8's and Valkey 8's 500): past
/// it the least recently used goes.
pub const MAX_EVAL_SCRIPTS: usize = 500;
/// Bytes of script source the node remembers.
pub const MAX_CACHED_SCRIPT_BYTES: usize = 64 * 1024 * 1024;
/// Most scripts running at once on this node (each may hold up to the memory limit).
pub const MAX_RUNNING_SCRIPTS: usize = 8;
/// Most bytes of arguments one `redis.call` takes (what the script's own memory may hold):
/// they are copied out of Lua before the command runs.
pub const MAX_CALL_ARG_BYTES: usize = SCRIPT_MEMORY_LIMIT;
/// Longest text `cjson.encode` makes (what the script's own memory may hold): its input
/// is measured before it is copied out of Lua, since a table may name one large string
/// many times.
pub const MAX_JSON_OUTPUT: usize = SCRIPT_MEMORY_LIMIT;
/// Largest input `cjson.decode` takes (its Rust-side tree is about ten times the text).
pub const MAX_JSON_INPUT: usize = 4 * 1024 * 1024;
/// Longest Lua pattern `string.find`/`match`/`gmatch`/`gsub` take.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Bound on a pattern match's worst case, estimated as (subject length + 1) raised to
/// (quantifiers + 1) — every start position, and backtracking polynomial in the subject,
/// of degree the quantifiers — about a second of matching: Lua's matcher runs inside one C
/// call that neither the time limit nor SCRIPT KILL can interrupt.
pub const MAX_PATTERN_WORK: u128 = 1_000_000_000;
/// Deepest nesting of a script's reply.
const MAX_REPLY_DEPTH: usize = 32;
/// Most values in a script's reply.
const MAX_REPLY_TOKENS: usize = 1 << 20;

/// Runs scripts for the cache (installed at start). Tracks running scripts so that
/// `SCRIPT KILL` can stop them.
pub struct LuaEngine {
    running: Mutex<HashMap<u64, Arc<AtomicBool>>>,
    next: AtomicU64,
    time_limit: Duration,
    /// Bytes of the values running scripts wrote and hold until they end
    /// ([`TxView::held_bytes`]), against `held_limit`.
    held: AtomicUsize,
    held_limit: usize,
}

/// Most bytes of values all running scripts may hold before their writes are applied, when
/// the largest value allowed is smaller than half of it (see [`LuaEngine::new`]).
pub const SCRIPTS_HELD_BYTES: usize = 256 * 1024 * 1024;

impl LuaEngine {
    /// An engine that stops scripts running longer than `time_limit`
    /// (`server.script_time_limit_ms`), and those whose writes would take the values all
    /// running scripts hold past [`SCRIPTS_HELD_BYTES`] (or twice `max_value`, the largest
    /// value a write may make, when that is more).
    pub fn new(time_limit: Duration, max_value: usize) -> Self {
        Self {
            running: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            time_limit,
            held: AtomicUsize::new(0),
            held_limit: SCRIPTS_HELD_BYTES.max(max_value.saturating_mul(2)),
        }
    }

    /// Bytes of values the running scripts hold now (what [`SCRIPTS_HELD_BYTES`] bounds).
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Stops every script running on this node; how many.
    pub fn kill_all(&self) -> usize {
        let running = self.running.lock();
        for flag in running.values() {
            flag.store(true, Ordering::Relaxed);
        }
        running.len()
    }
}

/// The scripts `SCRIPT LOAD` and `EVAL` made known to `EVALSHA`, by SHA1 (hex), kept as
/// Redis 8 and Valkey 8 keep them: a script that only `EVAL` brought is dropped, least
/// recently used first, once more than [`MAX_EVAL_SCRIPTS`] such scripts are held (a client
/// that builds a new script per call — values pasted into the source — cannot grow the cache
/// nor push out anyone's loaded scripts); a script `SCRIPT LOAD` or `EVALSHA` named is
/// never dropped. When loaded scripts reach [`MAX_CACHED_SCRIPTS`] or
/// [`MAX_CACHED_SCRIPT_BYTES`], `SCRIPT LOAD` of a new one is refused, never answered by
/// silently dropping another tenant's script (Valkey's `maxmemory-scripts` does the same).
#[derive(Debug, Default)]
pub struct ScriptCache {
    by_sha: HashMap<String, Cached>,
    /// The scripts only `EVAL` brought, by the tick of their last use.
    eval_lru: BTreeMap<u64, String>,
    tick: u64,
    bytes: usize,
    /// Of `bytes`, those of the scripts only `EVAL` brought.
    eval_bytes: usize,
    evicted: u64,
}

#[derive(Debug)]
struct Cached {
    body: Bytes,
    /// `Some(tick)` (its key in `eval_lru`) while only `EVAL` has named it.
    eval_tick: Option<u64>,
}

/// Why a script was not cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheFull {
    /// Loaded scripts hold [`MAX_CACHED_SCRIPTS`] or [`MAX_CACHED_SCRIPT_BYTES`].
    Loaded,
}

impl ScriptCache {
    /// Remembers `body` for `SCRIPT LOAD`: kept until `SCRIPT FLUSH`. Its SHA1, or
    /// [`CacheFull`] when loaded scripts fill the cache (a script already held is kept
    /// whatever the count).
    pub fn load(&mut self, body: &[u8]) -> Result<String, CacheFull> {
        let sha = sha1_hex(body);
        if let Some(c) = self.by_sha.get_mut(&sha) {
            if let Some(t) = c.eval_tick.take() {
                self.eval_lru.remove(&t);
                self.eval_bytes -= c.body.len();
            }
            return Ok(sha);
        }
        self.make_room(body.len())?;
        self.bytes += body.len();
        self.by_sha.insert(
            sha.clone(),
            Cached {
                body: Bytes::copy_from_slice(body),
                eval_tick: None,
            },
        );
        Ok(sha)
    }

    /// Remembers `body` for `EVAL` (a script held already counts as used now). Past
    /// [`MAX_EVAL_SCRIPTS`] such scripts, the least recently used goes; when loaded scripts
    /// fill the cache the script runs uncached. Its SHA1.
    pub fn remember_eval(&mut self, body: &[u8]) -> String {
        let sha = sha1_hex(body);
        self.tick += 1;
        let tick = self.tick;
        if let Some(c) = self.by_sha.get_mut(&sha) {
            if let Some(t) = c.eval_tick.as_mut() {
                self.eval_lru.remove(t);
                *t = tick;
                self.eval_lru.insert(tick, sha.clone());
            }
            return sha;
        }
        if self.eval_lru.len() >= MAX_EVAL_SCRIPTS {
            self.evict_one_eval();
        }
        if self.make_room(body.len()).is_err() {
            return sha;
        }
        self.bytes += body.len();
        self.eval_bytes += body.len();
        self.eval_lru.insert(tick, sha.clone());
        self.by_sha.insert(
            sha.clone(),
            Cached {
                body: Bytes::copy_from_slice(body),
                eval_tick: Some(tick),
            },
        );
        sha
    }

    /// The script `EVALSHA` names (any case): from now on kept as a loaded one.
    pub fn for_evalsha(&mut self, sha: &str) -> Option<Bytes> {
        let c = self.by_sha.get_mut(&sha.to_ascii_lowercase())?;
        if let Some(t) = c.eval_tick.take() {
            self.eval_lru.remove(&t);
            self.eval_bytes -= c.body.len();
        }
        Some(c.body.clone())
    }

    /// Whether the script is held (`SCRIPT EXISTS`; does not count as a use).
    pub fn contains(&self, sha: &str) -> bool {
        self.by_sha.contains_key(&sha.to_ascii_lowercase())
    }

    /// Scripts held (`INFO memory`'s `number_of_cached_scripts`).
    pub fn len(&self) -> usize {
        self.by_sha.len()
    }

    /// Whether no script is held.
    pub fn is_empty(&self) -> bool {
        self.by_sha.is_empty()
    }

    /// Bytes of script source held (`INFO memory`'s `used_memory_scripts`).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// `EVAL` scripts dropped to make room since the node started (`INFO stats`'s
    /// `evicted_scripts`; `SCRIPT FLUSH` does not reset it).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Forgets every script (`SCRIPT FLUSH`).
    pub fn flush(&mut self) {
        let evicted = self.evicted;
        *self = ScriptCache::default();
        self.evicted = evicted;
    }

    /// Drops `EVAL` scripts, least recently used first, until one more script of `len`
    /// bytes fits the bounds; [`CacheFull`], dropping none, when it would not fit beside
    /// the loaded scripts alone (a script larger than the whole cache once emptied every
    /// `EVAL` script held, and then ran uncached).
    fn make_room(&mut self, len: usize) -> Result<(), CacheFull> {
        let loaded = self.by_sha.len() - self.eval_lru.len();
        if loaded >= MAX_CACHED_SCRIPTS
            || self.bytes - self.eval_bytes + len > MAX_CACHED_SCRIPT_BYTES
        {
            return Err(CacheFull::Loaded);
        }
        while self.by_sha.len() >= MAX_CACHED_SCRIPTS || self.bytes + len > MAX_CACHED_SCRIPT_BYTES
        {
            if !self.evict_one_eval() {
                return Err(CacheFull::Loaded);
            }
        }
        Ok(())
    }

    fn evict_one_eval(&mut self) -> bool {
        let Some((_, sha)) = self.eval_lru.pop_first() else {
            return false;
        };
        if let Some(c) = self.by_sha.remove(&sha) {
            self.bytes -= c.body.len();
            self.eval_bytes -= c.body.len();
        }
        self.evicted += 1;
        true
    }
}

/// The message of the error raised when the hook stops a script.
const STOPPED: &str = "ERR the script was stopped";

/// SHA1 of `b`, lower-case hex (`redis.sha1hex`, script ids).
pub fn sha1_hex(b: &[u8]) -> String {
    let digest = Sha1::digest(b);
    let mut s = String::with_capacity(40);
    for byte in digest {
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// An error a `redis.call` raised, carried through Lua unchanged.
#[derive(Debug)]
struct CallError(String);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CallError {}

/// The reply for a value a script raised, as Redis 7 words it: an `{err=…}` table's text, a
/// Redis error from `redis.call` as it is, a string (Lua's own errors, `error("…")`) or nil
/// as `ERR <text>`; each followed by ` script: <sha>, on @user_script:<line>.` when the line
/// that raised it is known. A table without `err` is refused in words of its own (it crashes
/// redis-server 7.0: `EVAL "error({})" 0`).
fn raised(v: &Value, body: &[u8], line: Option<usize>) -> Reply {
    let text = match v {
        Value::Table(t) => match t.raw_get::<Value>("err") {
            Ok(Value::String(e)) => e.to_string_lossy(),
            _ => {
                return Reply::Error(
                    ReplyError::err("Error running script: an error object that is not a string")
                        .to_string(),
                );
            }
        },
        Value::String(s) => ReplyError::err(s.to_string_lossy()).to_string(),
        Value::Nil => ReplyError::err("nil").to_string(),
        Value::Error(e) => error_text(e),
        other => {
            return Reply::Error(
                ReplyError::err(format!(
                    "Error running script: a {} was raised",
                    other.type_name()
                ))
                .to_string(),
            );
        }
    };
    Reply::Error(match line {
        Some(n) => format!("{text} script: {}, on @user_script:{n}.", sha1_hex(body)),
        None => text,
    })
}

/// The line of the script that raised an error, as Redis's error handler finds it: the
/// innermost frame under the handler, or the one under it when that is a C function
/// (`error`, `redis.call`). Called from the handler, while the stack is still there.
fn raise_line(lua: &Lua) -> Option<usize> {
    for level in 1..=2 {
        let (what, line) = lua.inspect_stack(level, |d| (d.source().what, d.current_line()))?;
        if what != "C" {
            return line;
        }
    }
    None
}

/// The innermost Redis error in a Lua error, else its text as `ERR …`.
fn error_text(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => error_text(cause),
        mlua::Error::ExternalError(inner) => match inner.downcast_ref::<CallError>() {
            Some(CallError(msg)) => msg.clone(),
            None => ReplyError::err(format!("{inner}")).to_string(),
        },
        mlua::Error::MemoryError(_) => {
            ReplyError::err("the script exceeded its memory limit (64 MiB)").to_string()
        }
        mlua::Error::SyntaxError { message, .. } => {
            ReplyError::err(format!("Error compiling script (new function): {message}")).to_string()
        }
        mlua::Error::RuntimeError(msg) if msg.starts_with("BUSY") || msg.starts_with("ERR ") => {
            msg.clone()
        }
        other => {
            let text = other.to_string();
            let first = text.lines().next().unwrap_or("");
            ReplyError::err(format!("Error running script: {first}")).to_string()
        }
    }
}

/// How long a script runs on the calling worker thread before it is started again on a
/// thread of its own (`block_in_place`): short scripts (nearly all) pay no thread switch,
/// and a long one does not hold up the tasks queued behind it on that worker.
const INLINE_BUDGET: Duration = Duration::from_millis(2);

impl ScriptEngine for LuaEngine {
    fn run(&self, script: &Script, keys: &[&[u8]], view: &mut TxView) -> Reply {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let kill = Arc::new(AtomicBool::new(false));
        {
            let mut running = self.running.lock();
            if running.len() >= MAX_RUNNING_SCRIPTS {
                return Reply::Error(format!(
                    "BUSY {MAX_RUNNING_SCRIPTS} scripts are running on this node; try again"
                ));
            }
            running.insert(id, kill.clone());
        }
        let started = Instant::now();
        let deadline = started + self.time_limit;
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let budget = multi_thread.then_some(started + INLINE_BUDGET);
        let held = Held {
            total: &self.held,
            limit: self.held_limit,
            mine: std::cell::Cell::new(0),
        };
        let out = match run_script(script, keys, view, &kill, deadline, budget, &held) {
            // Past the budget: nothing it did was kept; run it again from the start, off
            // the worker (a script is a function of its keys and arguments).
            Outcome::Yielded => tokio::task::block_in_place(|| {
                match run_script(script, keys, view, &kill, deadline, None, &held) {
                    Outcome::Done(r) => r,
                    Outcome::Yielded => {
                        Reply::Error(ReplyError::err("script yielded twice").to_string())
                    }
                }
            }),
            Outcome::Done(r) => r,
        };
        self.running.lock().remove(&id);
        out
    }
}

/// One running script's part of [`LuaEngine`]'s held bytes; given back when it ends.
struct Held<'a> {
    total: &'a AtomicUsize,
    limit: usize,
    mine: std::cell::Cell<usize>,
}

impl Held<'_> {
    /// Makes the script's part `now`; false when that takes all scripts' past the limit.
    fn set(&self, now: usize) -> bool {
        let mine = self.mine.replace(now);
        if now > mine {
            let total = self.total.fetch_add(now - mine, Ordering::Relaxed) + (now - mine);
            total <= self.limit
        } else {
            self.total.fetch_sub(mine - now, Ordering::Relaxed);
            true
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.total.fetch_sub(self.mine.get(), Ordering::Relaxed);
    }
}

/// A running script's stop check (`run_script`'s `halt`).
type Halt = Arc<dyn Fn() -> mlua::Result<()> + Send + Sync>;

enum Outcome {
    Done(Reply),
    /// Stopped at the inline budget, with nothing applied.
    Yielded,
}

/// Why the hook stopped a script: these are never caught by the script's own `pcall`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    None,
    Yield,
    Killed,
    Timeout,
    /// Its writes took the values all running scripts hold past [`LuaEngine`]'s bound.
    Memory,
}

/// Runs one script on `view`. A script stopped (time, memory, `SCRIPT KILL`) applies
/// nothing: its view is left with no change.
fn run_script(
    script: &Script,
    keys: &[&[u8]],
    view: &mut TxView,
    kill: &Arc<AtomicBool>,
    deadline: Instant,
    budget: Option<Instant>,
    held: &Held<'_>,
) -> Outcome {
    let Ok(lua) = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH,
        LuaOptions::default(),
    ) else {
        return Outcome::Done(Reply::Error(
            ReplyError::err("could not start a Lua state").to_string(),
        ));
    };
    let _ = lua.set_memory_limit(SCRIPT_MEMORY_LIMIT);
    let stop = Arc::new(Mutex::new(Stop::None));
    // Stops the script (an error no `pcall` of its own catches) once it is killed, past its
    // time limit, or past its inline budget; called by the instruction hook and before the
    // library functions that can run long in one call (`guard_library`).
    let halt: Halt = {
        let (stop, kill) = (stop.clone(), kill.clone());
        Arc::new(move || {
            let now = Instant::now();
            let why = if kill.load(Ordering::Relaxed) {
                Stop::Killed
            } else if now > deadline {
                Stop::Timeout
            } else if budget.is_some_and(|b| now > b) {
                Stop::Yield
            } else {
                return Ok(());
            };
            *stop.lock() = why;
            Err(mlua::Error::RuntimeError(STOPPED.into()))
        })
    };
    {
        let halt = halt.clone();
        // On the worker (within the inline budget) every 100 instructions: one instruction
        // can copy up to the memory limit (`..` of a 30 MB string), so 10,000 of them could
        // hold the worker, and every client whose request waits on it, for many seconds.
        // A script that runs that long is rerun off the worker, where the check only serves
        // the time limit and `SCRIPT KILL`.
        let every = if budget.is_some() { 100 } else { 10_000 };
        let _ = lua.set_hook(
            HookTriggers::new().every_nth_instruction(every),
            move |_, _| halt().map(|()| VmState::Continue),
        );
    }
    let before = view.snapshot();
    let view = std::cell::RefCell::new(view);
    // The line that raised the script's error, noted by its handler (below).
    let line = std::cell::Cell::new(None);
    let result: mlua::Result<Reply> = lua.scope(|scope| {
        let call = |pcall: bool| {
            let view = &view;
            let stop = &stop;
            scope.create_function(move |lua, args: MultiValue| {
                let result = redis_call(
                    lua,
                    script.read_only,
                    &script.keys,
                    keys,
                    &mut view.borrow_mut(),
                    args,
                );
                // Charged after the call: a call makes at most one value past the largest
                // allowed, or what the script's own (bounded) memory held as arguments.
                if !held.set(view.borrow().held_bytes()) {
                    *stop.lock() = Stop::Memory;
                    return Err(mlua::Error::RuntimeError(STOPPED.into()));
                }
                match result {
                    Ok(v) => Ok(v),
                    Err(msg) if pcall => {
                        let t = lua.create_table()?;
                        t.set("err", msg)?;
                        Ok(Value::Table(t))
                    }
                    Err(msg) => Err(mlua::Error::external(CallError(msg))),
                }
            })
        };
        let stopped = {
            let stop = stop.clone();
            move || *stop.lock() != Stop::None
        };
        // Lua's own xpcall, kept before the script's is replaced: the script's error comes
        // back as the value it raised (an `{err=…}` table is the reply, as in Redis), and the
        // handler notes the line that raised it while the stack is still there.
        let raw_xpcall: mlua::Function = lua.globals().raw_get("xpcall")?;
        let line = &line;
        let handler = scope.create_function(move |lua, err: Value| {
            line.set(raise_line(lua));
            Ok(err)
        })?;
        setup(&lua, script, call(false)?, call(true)?, stopped, &halt)?;
        let chunk = compile(&lua, &script.body)?;
        let out: MultiValue = raw_xpcall.call((chunk, handler))?;
        let mut out = out.into_iter();
        match (out.next(), out.next()) {
            (Some(Value::Boolean(true)), value) => to_reply(&value.unwrap_or(Value::Nil)),
            (_, Some(err)) => Ok(raised(&err, &script.body, line.get())),
            _ => Ok(Reply::Error(
                ReplyError::err("Error running script").to_string(),
            )),
        }
    });
    let view = view.into_inner();
    let why = *stop.lock();
    if why != Stop::None {
        // Stopped from outside the script: nothing it did is kept.
        view.restore(before);
    }
    Outcome::Done(match (why, result) {
        (Stop::Yield, _) => return Outcome::Yielded,
        (Stop::Killed, _) => Reply::Error(ReplyError::err("Script killed by user with SCRIPT KILL...").to_string()),
        (Stop::Memory, _) => Reply::Error(format!(
            "OOM the scripts running on this node would hold more than {} bytes of values they wrote; nothing this script did was applied",
            held.limit
        )),
        (Stop::Timeout, _) => Reply::Error(
            "BUSY the script ran longer than server.script_time_limit_ms and was stopped; nothing it did was applied"
                .to_owned(),
        ),
        (Stop::None, Ok(reply)) => reply,
        (Stop::None, Err(e)) => Reply::Error(error_text(&e)),
    })
}

/// Compiles a script's body as Lua source, never as precompiled bytecode: bytecode is not
/// checked by Lua 5.1's loader, and a crafted chunk reads and writes the node's memory (a
/// review crashed a node with one; Redis refuses bytecode since CVE-2015-4335).
fn compile(lua: &Lua, body: &[u8]) -> mlua::Result<mlua::Function> {
    lua.load(body)
        .set_name("@user_script")
        .set_mode(mlua::chunk::ChunkMode::Text)
        .into_function()
}

/// Whether `body` compiles as a script (what `SCRIPT LOAD` checks before it caches one, as
/// Redis does); the error is the reply.
pub(crate) fn check_compiles(body: &[u8]) -> Result<(), String> {
    let lua = Lua::new_with(StdLib::NONE, LuaOptions::default())
        .map_err(|e| ReplyError::err(format!("could not start a Lua state: {e}")).to_string())?;
    let _ = lua.set_memory_limit(SCRIPT_MEMORY_LIMIT);
    compile(&lua, body).map(|_| ()).map_err(|e| error_text(&e))
}

/// Deepest table nesting [`json_size`] follows (`cjson.encode` refuses deeper ones too).
const MAX_JSON_DEPTH: usize = 128;

/// An upper estimate of the text `cjson.encode` makes of `v`, added to `*total`: `None`
/// once it passes [`MAX_JSON_OUTPUT`] (or nests past [`MAX_JSON_DEPTH`], or holds a
/// cycle, which nests without end). Each string is counted at six bytes per byte (the
/// longest escape, `\u00XX`), each number at 24, each key and value with its punctuation.
/// A table named many times is measured once (`sizes`, by its address) and counted each
/// time: walked again at each naming, 100 levels of tables naming the one below twice
/// took 10–21 s on a worker thread that nothing could interrupt (review helper-120).
fn json_size(
    v: &Value,
    depth: usize,
    total: &mut usize,
    sizes: &mut HashMap<usize, usize>,
) -> Option<()> {
    let add = |total: &mut usize, n: usize| {
        *total = total.saturating_add(n);
        (*total <= MAX_JSON_OUTPUT).then_some(())
    };
    match v {
        Value::String(s) => add(
            total,
            s.as_bytes().len().saturating_mul(6).saturating_add(2),
        ),
        Value::Table(t) => {
            if depth >= MAX_JSON_DEPTH {
                return None;
            }
            let address = t.to_pointer() as usize;
            if let Some(&size) = sizes.get(&address) {
                return add(total, size);
            }
            // Measured alone, within the bound too, so that the walk stops early inside a
            // huge table.
            let mut own: usize = 2;
            for pair in t.clone().pairs::<Value, Value>() {
                let (k, v) = pair.ok()?;
                json_size(&k, depth + 1, &mut own, sizes)?;
                json_size(&v, depth + 1, &mut own, sizes)?;
                own = own.saturating_add(2);
                if own > MAX_JSON_OUTPUT {
                    return None;
                }
            }
            sizes.insert(address, own);
            add(total, own)
        }
        _ => add(total, 24),
    }
}

/// `redis.REDIS_VERSION_NUM` of a version `"major.minor.patch"`: `0xMMmmpp`, as Redis
/// makes it.
fn version_num(version: &str) -> i64 {
    version
        .split('.')
        .take(3)
        .map(|p| p.parse::<i64>().unwrap_or(0) & 0xff)
        .fold(0, |n, p| (n << 8) | p)
}

/// The globals a script sees: `KEYS`, `ARGV`, `redis`, `cjson`, and no way out.
fn setup(
    lua: &Lua,
    script: &Script,
    call: mlua::Function,
    pcall: mlua::Function,
    stopped: impl Fn() -> bool + Clone + Send + 'static,
    halt: &Halt,
) -> mlua::Result<()> {
    let g = lua.globals();
    // `pcall` and `xpcall` are Lua's own, called through a check: a stop (time limit,
    // SCRIPT KILL) goes through, so a script cannot catch its own end and loop on; any
    // other error comes back as the value raised, as in Lua.
    // `pcall` also returns an error table's text, as Redis 7's does (`caught`).
    for name in ["pcall", "xpcall"] {
        let original: mlua::Function = g.raw_get(name)?;
        let stopped = stopped.clone();
        let texts = name == "pcall";
        g.raw_set(
            name,
            lua.create_function(move |lua, mut args: MultiValue| {
                // `xpcall`'s handler runs where the error was raised — for a stop, inside
                // the instruction hook, where Lua runs no hook: a handler that loops there
                // would never be stopped (a review hung a node for good with one). It is
                // called through a check that passes a stop's error straight on.
                if !texts && let Some(Value::Function(handler)) = args.get(1).cloned() {
                    let stopped = stopped.clone();
                    args[1] = Value::Function(lua.create_function(move |_, err: MultiValue| {
                        if stopped() {
                            return Ok(err);
                        }
                        handler.call::<MultiValue>(err)
                    })?);
                }
                let mut out = original.call::<MultiValue>(args)?;
                if stopped() {
                    return Err(mlua::Error::RuntimeError(STOPPED.into()));
                }
                if texts
                    && matches!(out.front(), Some(Value::Boolean(false)))
                    && let Some(err) = out.get_mut(1)
                {
                    *err = caught(lua, std::mem::replace(err, Value::Nil))?;
                }
                Ok(out)
            })?,
        )?;
    }
    g.raw_set("coroutine", Value::Nil)?;
    for name in [
        "dofile",
        "loadfile",
        "loadstring",
        "load",
        "setfenv",
        "getfenv",
        "newproxy",
        "print",
        "module",
        "require",
    ] {
        g.raw_set(name, Value::Nil)?;
    }
    // One string at a time: each held string takes a slot of mlua's reference stack (8,000
    // slots), and `EVAL` with 8,000 keys or arguments failed with "out of Lua stack".
    let seq = |items: &[serde_bytes::ByteBuf]| {
        let t = lua.create_table_with_capacity(items.len(), 0)?;
        for (i, b) in items.iter().enumerate() {
            t.raw_set(i + 1, lua.create_string(&b[..])?)?;
        }
        Ok::<_, mlua::Error>(t)
    };
    g.raw_set("KEYS", seq(&script.keys)?)?;
    g.raw_set("ARGV", seq(&script.args)?)?;

    let redis = lua.create_table()?;
    redis.set("call", call)?;
    redis.set("pcall", pcall)?;
    redis.set(
        "error_reply",
        lua.create_function(|lua, args: MultiValue| reply_table(lua, "err", args))?,
    )?;
    redis.set(
        "status_reply",
        lua.create_function(|lua, args: MultiValue| reply_table(lua, "ok", args))?,
    )?;
    // Raised as Redis raises them: `-ERR <text>` with the script's name and line.
    let raise =
        |text: &'static str| mlua::Error::external(CallError(ReplyError::err(text).to_string()));
    redis.set(
        "sha1hex",
        lua.create_function(move |_, args: MultiValue| match args.len() {
            1 => match args.front() {
                Some(Value::String(s)) => Ok(sha1_hex(&s.as_bytes())),
                Some(Value::Integer(n)) => Ok(sha1_hex(n.to_string().as_bytes())),
                Some(Value::Number(n)) => Ok(sha1_hex(number_arg(*n).as_bytes())),
                _ => Ok(sha1_hex(b"")),
            },
            _ => Err(raise("wrong number of arguments")),
        })?,
    )?;
    redis.set(
        "log",
        lua.create_function(move |_, args: MultiValue| {
            if args.len() < 2 {
                return Err(raise("redis.log() requires two arguments or more."));
            }
            // A number, or a string that reads as one (Lua's `tonumber`), cut toward zero as
            // Redis's C cast does.
            let level = match args.front() {
                Some(Value::Integer(n)) => Some(*n as f64),
                Some(Value::Number(n)) => Some(*n),
                Some(Value::String(s)) => {
                    s.to_str().ok().and_then(|t| t.trim().parse::<f64>().ok())
                }
                _ => None,
            };
            let Some(level) = level else {
                return Err(raise("First argument must be a number (log level)."));
            };
            if !(0.0..4.0).contains(&level.trunc()) {
                return Err(raise("Invalid debug level."));
            }
            // Every argument after the level, joined by spaces, as Redis logs them.
            let words: Vec<String> = args
                .iter()
                .skip(1)
                .map(|v| match v {
                    Value::String(s) => s.to_string_lossy().to_string(),
                    Value::Integer(n) => n.to_string(),
                    Value::Number(n) => number_arg(*n),
                    _ => String::new(),
                })
                .collect();
            tracing::info!(target: "strata::script", "{}", words.join(" "));
            Ok(())
        })?,
    )?;
    for (name, level) in [
        ("LOG_DEBUG", 0),
        ("LOG_VERBOSE", 1),
        ("LOG_NOTICE", 2),
        ("LOG_WARNING", 3),
    ] {
        redis.set(name, level)?;
    }
    // Effects are what replicates, always: these are accepted and change nothing.
    redis.set("replicate_commands", lua.create_function(|_, ()| Ok(true))?)?;
    redis.set("set_repl", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    for (name, flags) in [
        ("REPL_NONE", 0),
        ("REPL_AOF", 1),
        ("REPL_SLAVE", 2),
        ("REPL_REPLICA", 2),
        ("REPL_ALL", 3),
    ] {
        redis.set(name, flags)?;
    }
    redis.set("REDIS_VERSION", super::REDIS_COMPAT_VERSION)?;
    redis.set(
        "REDIS_VERSION_NUM",
        version_num(super::REDIS_COMPAT_VERSION),
    )?;
    g.raw_set("redis", redis)?;

    let cjson = lua.create_table()?;
    cjson.set(
        "encode",
        lua.create_function(|lua, v: Value| {
            if json_size(&v, 0, &mut 0, &mut HashMap::new()).is_none() {
                return Err(mlua::Error::external(CallError(
                    ReplyError::err(format!(
                        "cjson.encode makes at most {MAX_JSON_OUTPUT} bytes of text, of tables nested at most {MAX_JSON_DEPTH} deep"
                    ))
                    .to_string(),
                )));
            }
            let json: serde_json::Value = lua.from_value(v)?;
            serde_json::to_string(&json).map_err(mlua::Error::external)
        })?,
    )?;
    cjson.set(
        "decode",
        lua.create_function(|lua, s: mlua::LuaString| {
            let text = s.as_bytes();
            if text.len() > MAX_JSON_INPUT {
                return Err(mlua::Error::external(CallError(
                    ReplyError::err(format!("cjson.decode takes at most {MAX_JSON_INPUT} bytes"))
                        .to_string(),
                )));
            }
            let json: serde_json::Value =
                serde_json::from_slice(&text).map_err(mlua::Error::external)?;
            lua.to_value(&json)
        })?,
    )?;
    g.raw_set("cjson", cjson)?;
    guard_library(lua, halt)?;
    // math.random from a generator of this script's own (Lua 5.1's uses the process-wide
    // C rand(): one client could set what another's scripts draw), seeded the same on
    // every run, as Redis does.
    let math: mlua::Table = g.raw_get("math")?;
    let seed = Arc::new(Mutex::new(0x2545_f491_4f6c_dd1d_u64));
    {
        let seed = seed.clone();
        math.raw_set(
            "random",
            lua.create_function(move |_, (m, n): (Option<i64>, Option<i64>)| {
                let mut x = seed.lock();
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                let r = (*x >> 11) as f64 / (1u64 << 53) as f64;
                Ok(match (m, n) {
                    (None, _) => Value::Number(r),
                    (Some(hi), None) if hi >= 1 => Value::Integer(1 + (r * hi as f64) as i64),
                    // In 128 bits: `hi - lo + 1` overflows for a wide interval (a panic in
                    // a debug build, a value outside it in a release one).
                    (Some(lo), Some(hi)) if hi >= lo => {
                        let span = (i128::from(hi) - i128::from(lo) + 1) as f64;
                        let at = i128::from(lo) + (r * span) as i128;
                        Value::Integer(at.clamp(i128::from(lo), i128::from(hi)) as i64)
                    }
                    _ => return Err(mlua::Error::RuntimeError("interval is empty".into())),
                })
            })?,
        )?;
    }
    math.raw_set(
        "randomseed",
        lua.create_function(move |_, s: f64| {
            *seed.lock() = (s as i64 as u64) | 1;
            Ok(())
        })?,
    )?;

    // Globals are read-only: a script that creates or reads an undefined one fails, as in
    // Redis (a typo is not a silent nil).
    let meta = lua.create_table()?;
    meta.set(
        "__newindex",
        lua.create_function(|_, (_t, name, _v): (Value, mlua::LuaString, Value)| {
            Err::<(), _>(mlua::Error::external(CallError(ReplyError::err(format!(
                "Attempt to modify a readonly table: script attempted to create global variable '{}'",
                name.to_string_lossy()
            )).to_string())))
        })?,
    )?;
    meta.set(
        "__index",
        lua.create_function(|_, (_t, name): (Value, mlua::LuaString)| {
            Err::<(), _>(mlua::Error::external(CallError(
                ReplyError::err(format!(
                    "Script attempted to access nonexistent global variable '{}'",
                    name.to_string_lossy()
                ))
                .to_string(),
            )))
        })?,
    )?;
    g.set_metatable(Some(meta))?;
    Ok(())
}

/// Wraps the string library's matchers so that a pattern whose worst case is too much
/// work (or too deep a recursion for the C stack) is refused before Lua's matcher runs, and
/// checks `halt` before each call of `string.rep` and the matchers: one such call can take
/// long (`string.rep` of 20 MB: 100 ms in a release build), and the instruction hook runs
/// every 10,000 instructions only, so a loop of 60 of them ran 8.7 s on a worker thread
/// with every other client unanswered, past the time limit (review helper-122). A hook at
/// every call instead made call-heavy scripts 4-6x slower. (Lua 5.1's case changes,
/// `reverse` and `%q` copy byte by byte as well; they are left to the hook, which runs
/// every 100 instructions on the worker: a wrapper called from Rust changes their error
/// text from Redis's.)
fn guard_library(lua: &Lua, halt: &Halt) -> mlua::Result<()> {
    let string: mlua::Table = lua.globals().raw_get("string")?;
    // `string.dump` makes bytecode, which no script may load (`compile`).
    string.raw_set("dump", Value::Nil)?;
    // `string.rep` is one C loop, where the instruction hook never runs: two billion
    // repetitions of an empty string held every client of a node for seconds, and a loop
    // of them for minutes. An empty string or count answers at once; a result past the
    // script memory limit is refused before it is built.
    let rep: mlua::Function = string.raw_get("rep")?;
    let rep_halt = halt.clone();
    string.raw_set(
        "rep",
        lua.create_function(move |lua, (s, n): (mlua::LuaString, f64)| {
            rep_halt()?;
            let len = s.as_bytes().len() as f64;
            if len == 0.0 || n < 1.0 {
                return lua.create_string("");
            }
            if len * n.floor() > SCRIPT_MEMORY_LIMIT as f64 {
                return Err(mlua::Error::RuntimeError(
                    "string.rep: resulting string too large".into(),
                ));
            }
            rep.call::<mlua::LuaString>((s, n))
        })?,
    )?;
    for name in ["find", "match", "gmatch", "gsub"] {
        let original: mlua::Function = string.raw_get(name)?;
        let halt = halt.clone();
        let guarded = lua.create_function(move |_, args: MultiValue| {
            halt()?;
            let subject = match args.front() {
                Some(Value::String(s)) => s.as_bytes().len(),
                Some(Value::Integer(_) | Value::Number(_)) => 32,
                _ => 0,
            };
            // `find` with `plain` set does no pattern matching.
            let plain = name == "find" && matches!(args.get(3), Some(v) if v.as_boolean() == Some(true) || (!v.is_nil() && v.as_boolean().is_none()));
            if let Some(Value::String(p)) = args.get(1)
                && !plain
            {
                check_pattern(&p.as_bytes(), subject)?;
            }
            original.call::<MultiValue>(args).map_err(|e| named(e, name))
        })?;
        string.raw_set(name, guarded)?;
    }
    Ok(())
}

/// `e`, from library function `name` called through a wrapper, with the function's name
/// where Lua, seeing it called from Rust, wrote `?` (`bad argument #1 to 'upper' (string
/// expected, got no value)`, as Redis words it).
fn named(e: mlua::Error, name: &str) -> mlua::Error {
    match e {
        mlua::Error::RuntimeError(msg) if msg.contains(" to '?'") => {
            mlua::Error::RuntimeError(msg.replacen(" to '?'", &format!(" to '{name}'"), 1))
        }
        other => other,
    }
}

fn check_pattern(pattern: &[u8], subject: usize) -> mlua::Result<()> {
    let refuse = |why: &str| {
        Err(mlua::Error::external(CallError(
            ReplyError::err(format!(
                "pattern refused: {why} (Strata bounds Lua pattern matching)"
            ))
            .to_string(),
        )))
    };
    if pattern.len() > MAX_PATTERN_LEN {
        return refuse(&format!("longer than {MAX_PATTERN_LEN} bytes"));
    }
    // Each quantifier (and each %b, each capture) can multiply the backtracking; counted
    // without parsing, so an escaped one counts too (conservative).
    let quantifiers = pattern
        .iter()
        .filter(|c| matches!(c, b'*' | b'+' | b'-' | b'?' | b'('))
        .count() as u32
        + pattern.windows(2).filter(|w| w == b"%b").count() as u32;
    let base = subject as u128 + 1;
    let mut work = base;
    for _ in 0..quantifiers {
        work = work.saturating_mul(base);
        if work > MAX_PATTERN_WORK {
            return refuse("its worst case on this subject is too much work");
        }
    }
    Ok(())
}

/// `redis.call`: a key command, parsed as the server parses it, on the declared keys.
fn redis_call(
    lua: &Lua,
    read_only: bool,
    declared: &[serde_bytes::ByteBuf],
    keys: &[&[u8]],
    view: &mut TxView,
    args: MultiValue,
) -> Result<Value, String> {
    // The arguments are copied out of Lua: bounded first, since a script may name one of
    // its strings many times (250 references to one 16 MiB string are 4 GiB of copies).
    let total: usize = args
        .iter()
        .map(|v| match v {
            Value::String(s) => s.as_bytes().len(),
            _ => 0,
        })
        .fold(0, usize::saturating_add);
    if total > MAX_CALL_ARG_BYTES {
        return Err(ReplyError::err(format!(
            "the arguments of a redis.call total more than {MAX_CALL_ARG_BYTES} bytes"
        ))
        .to_string());
    }
    let mut a: Vec<Bytes> = Vec::with_capacity(args.len());
    for v in args.iter() {
        match v {
            Value::String(s) => a.push(Bytes::copy_from_slice(&s.as_bytes())),
            Value::Integer(n) => a.push(Bytes::from(number_arg(*n as f64))),
            Value::Number(n) => a.push(Bytes::from(number_arg(*n))),
            _ => return Err(bad_args()),
        }
    }
    let Some(name) = a.first() else {
        return Err(ReplyError::err(
            "Please specify at least one argument for this redis lib call",
        )
        .to_string());
    };
    let Some((_, spec)) = lookup(name) else {
        return Err(ReplyError::err("Unknown Redis command called from script").to_string());
    };
    let n = a.len() as i32;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        return Err(
            ReplyError::err("Wrong number of args calling Redis command from script").to_string(),
        );
    }
    let parsed = match keyops::parse(spec.id, &a, view.now_ms()) {
        None => {
            return Err(
                ReplyError::err("This Redis command is not allowed from script").to_string(),
            );
        }
        Some(p) => p?,
    };
    if read_only && keyops::writes(spec.id) {
        return Err(
            ReplyError::err("Write commands are not allowed from read-only scripts.").to_string(),
        );
    }
    let index = |k: &[u8]| {
        declared
            .iter()
            .any(|d| d.as_slice() == k)
            .then(|| keys.iter().position(|d| *d == k))
            .flatten()
            .map(|i| i as u32)
            .ok_or_else(|| ReplyError::err("Script attempted to access a non-declared key"))
    };
    let mut steps = Vec::with_capacity(parsed.ops.len());
    for op in parsed.ops {
        steps.push(match op {
            Op::Key(k, op) => TxStep::Key { key: index(k)?, op },
            Op::MsetNx(pairs) => TxStep::MsetNx(
                pairs
                    .into_iter()
                    .map(|(k, v)| Ok((index(k)?, v.to_vec().into())))
                    .collect::<Result<_, ReplyError>>()?,
            ),
            Op::Rename(src, dst, nx) => TxStep::Rename {
                src: index(src)?,
                dst: index(dst)?,
                nx,
            },
            Op::Copy(src, dst, replace) => TxStep::Copy {
                src: index(src)?,
                dst: index(dst)?,
                replace,
            },
            Op::Bits(op, dst, srcs) => TxStep::BitOp {
                op,
                dst: index(dst)?,
                srcs: srcs
                    .into_iter()
                    .map(index)
                    .collect::<Result<_, ReplyError>>()?,
            },
            Op::Lcs(a, b, mode) => TxStep::Lcs {
                a: index(a)?,
                b: index(b)?,
                mode,
            },
        });
    }
    let replies: Vec<Reply> = steps.iter().map(|s| view.step(s)).collect();
    let lua_err = |e: mlua::Error| e.to_string();
    match parsed.shape {
        Shape::Single => match replies.into_iter().next() {
            Some(Reply::Error(msg)) => Err(msg),
            Some(r) => to_lua(lua, &r).map_err(lua_err),
            None => Ok(Value::Boolean(false)),
        },
        Shape::Array => {
            let t = lua.create_table().map_err(lua_err)?;
            for (i, r) in replies.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, r).map_err(lua_err)?)
                    .map_err(lua_err)?;
            }
            Ok(Value::Table(t))
        }
        Shape::Sum => Ok(Value::Integer(
            replies
                .iter()
                .map(|r| if let Reply::Int(n) = r { *n } else { 0 })
                .sum(),
        )),
        Shape::Ok => to_lua(lua, &Reply::Ok).map_err(lua_err),
    }
}

/// A number passed to `redis.call`, as Redis 7.4 turns it into an argument: an integer
/// within ±2^62 in plain digits, anything else as the shortest decimal that reads back as
/// the same double (Rust's, where Redis's Grisu2 may rarely print a longer one), placed as
/// fpconv places it — plain up to 7 zeros past the digits, `0.000…` down to 10^-7, else
/// `d.ddde±x` — and `nan` (`-nan` with the sign bit), `inf`, `-inf`. Lua's own `tostring` keeps 14 digits and would
/// store `1796290721000000` as `1.796290721e+15`.
fn number_arg(n: f64) -> String {
    const SAFE: f64 = (i64::MAX / 2) as f64;
    if n.is_nan() {
        // The sign as C prints it: Lua's `0/0` on x86 is a negative NaN.
        return if n.is_sign_negative() { "-nan" } else { "nan" }.to_owned();
    }
    if n.is_infinite() {
        return if n > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if (-SAFE..=SAFE).contains(&n) && n.trunc() == n {
        return (n as i64).to_string();
    }
    // The shortest digits and the exponent of their first: `d.ddde±x`.
    let sci = format!("{:e}", n.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let first_exp: i32 = exp.parse().unwrap_or(0);
    let nd = digits.len() as i32;
    // The value is `digits` × 10^k.
    let k = first_exp - (nd - 1);
    let mut out = String::with_capacity(32);
    if n < 0.0 {
        out.push('-');
    }
    let e = first_exp.abs();
    if k >= 0 && e < nd + 7 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', k as usize));
    } else if k < 0 && (k > -7 || e < 4) {
        let offset = nd + k;
        if offset <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-offset) as usize));
            out.push_str(&digits);
        } else {
            out.push_str(&digits[..offset as usize]);
            out.push('.');
            out.push_str(&digits[offset as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if nd > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if first_exp < 0 { '-' } else { '+' });
        out.push_str(&e.to_string());
    }
    out
}

/// The text Redis 7 keeps in an error table (`redis.error_reply`, and errors raised by
/// `redis.call`): a leading `-` dropped, the first word as the code when there are two, else
/// `ERR`, and the message trimmed of CR and LF at both ends.
fn error_table_text(msg: &[u8]) -> Vec<u8> {
    let body = msg.strip_prefix(b"-").unwrap_or(msg);
    let (code, text): (&[u8], &[u8]) = match body.iter().position(|&b| b == b' ') {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (b"ERR", body),
    };
    let trim = |b: &u8| *b != b'\r' && *b != b'\n';
    let start = text.iter().position(trim).unwrap_or(text.len());
    let end = text.iter().rposition(trim).map_or(start, |i| i + 1);
    let mut out = Vec::with_capacity(code.len() + 1 + end - start);
    out.extend_from_slice(code);
    out.push(b' ');
    out.extend_from_slice(&text[start..end]);
    out
}

/// `redis.error_reply` and `redis.status_reply`: a one-field table of a string argument
/// (the error's text normalised as Redis does), else an error table, as Redis answers
/// anything but exactly one string.
fn reply_table(lua: &Lua, field: &str, args: MultiValue) -> mlua::Result<mlua::Table> {
    let t = lua.create_table()?;
    match (args.len(), args.front()) {
        (1, Some(Value::String(s))) if field == "err" => {
            t.set(field, lua.create_string(error_table_text(&s.as_bytes()))?)?
        }
        (1, Some(Value::String(s))) => t.set(field, s.clone())?,
        _ => t.set("err", "ERR wrong number or type of arguments")?,
    }
    Ok(t)
}

/// What Lua's `pcall` returns for an error caught: Redis 7 replaces `pcall` so that an
/// error table (what `redis.call` and `error(redis.error_reply(…))` raise) comes back as
/// its text. Strata's `redis.call` raises a Rust error, which comes back as its text too.
fn caught(lua: &Lua, err: Value) -> mlua::Result<Value> {
    Ok(match &err {
        // A number counts as a string there, as Lua's `lua_isstring` says.
        Value::Table(t) => match t.raw_get::<Value>("err")? {
            e @ (Value::String(_) | Value::Integer(_) | Value::Number(_)) => e,
            _ => err,
        },
        Value::Error(e) => match call_error(e) {
            Some(msg) => Value::String(lua.create_string(msg)?),
            None => err,
        },
        _ => err,
    })
}

/// The text of a `redis.call` error inside `e`, if it is one.
fn call_error(e: &mlua::Error) -> Option<&str> {
    match e {
        mlua::Error::CallbackError { cause, .. } => call_error(cause),
        mlua::Error::ExternalError(inner) => inner
            .downcast_ref::<CallError>()
            .map(|CallError(msg)| msg.as_str()),
        _ => None,
    }
}

fn bad_args() -> String {
    ReplyError::err("Lua redis lib command arguments must be strings or integers").to_string()
}

/// A command's reply as Lua sees it (Redis's conversion).
fn to_lua(lua: &Lua, r: &Reply) -> mlua::Result<Value> {
    Ok(match r {
        Reply::Int(n) => Value::Integer(*n),
        Reply::Bulk(b) => Value::String(lua.create_string(b)?),
        Reply::Nil | Reply::Exec(None) => Value::Boolean(false),
        Reply::Ok | Reply::Status(_) => {
            let t = lua.create_table()?;
            t.set(
                "ok",
                match r {
                    Reply::Status(s) => s.as_str(),
                    _ => "OK",
                },
            )?;
            Value::Table(t)
        }
        Reply::Error(e) => {
            let t = lua.create_table()?;
            t.set("err", e.as_str())?;
            Value::Table(t)
        }
        Reply::Tree(tokens) => tree_to_lua(lua, tokens, &mut 0, 0)?,
        Reply::Exec(Some(_)) => Value::Nil,
    })
}

/// The value at `tokens[*pos]` (an array or map with its items) as Lua sees it: arrays and
/// maps as tables (a map as its keys and values in turn, as RESP2 sends it), the rest as
/// [`to_lua`] converts them. Nesting is bounded: a reply from a peer is data.
fn tree_to_lua(lua: &Lua, tokens: &[Token], pos: &mut usize, depth: u32) -> mlua::Result<Value> {
    let Some(t) = tokens.get(*pos) else {
        return Ok(Value::Nil);
    };
    *pos += 1;
    Ok(match t {
        Token::Array(n) | Token::Map(n) => {
            if depth > 64 {
                return Err(mlua::Error::runtime("reply nested too deeply"));
            }
            let items = match t {
                Token::Map(_) => 2 * *n,
                _ => *n,
            };
            let table = lua.create_table()?;
            for i in 1..=items {
                table.raw_set(i, tree_to_lua(lua, tokens, pos, depth + 1)?)?;
            }
            Value::Table(table)
        }
        Token::Int(n) => to_lua(lua, &Reply::Int(*n))?,
        Token::Bulk(b) => Value::String(lua.create_string(b)?),
        Token::Nil => Value::Boolean(false),
        Token::Status(st) => to_lua(lua, &Reply::Status(st.clone()))?,
        Token::Error(e) => to_lua(lua, &Reply::Error(e.clone()))?,
    })
}

/// A script's return value as a reply (Redis's conversion): numbers as integers (cut
/// toward zero), strings as bulk strings, `{ok=…}` as a status, `{err=…}` as an error, a
/// table as an array up to its first nil, true as 1, false and nil as a null.
fn to_reply(v: &Value) -> mlua::Result<Reply> {
    match v {
        Value::Table(t) => {
            if let Ok(Value::String(e)) = t.raw_get::<Value>("err") {
                return Ok(Reply::Error(e.to_string_lossy()));
            }
            let mut tokens = Vec::new();
            flatten(v, 0, &mut tokens, &mut 0)?;
            Ok(Reply::Tree(tokens))
        }
        other => {
            let mut tokens = Vec::with_capacity(1);
            flatten(other, 0, &mut tokens, &mut 0)?;
            Ok(match tokens.pop() {
                Some(Token::Int(n)) => Reply::Int(n),
                Some(Token::Bulk(b)) => Reply::Bulk(b),
                _ => Reply::Nil,
            })
        }
    }
}

/// A Lua number as Redis makes it an integer reply, a C cast: toward zero, and on x86 the
/// smallest integer for what does not fit (NaN, ±huge).
fn c_cast(f: f64) -> i64 {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f.is_nan() || !(-TWO_63..TWO_63).contains(&f) {
        i64::MIN
    } else {
        f as i64
    }
}

fn flatten(v: &Value, depth: usize, out: &mut Vec<Token>, bytes: &mut usize) -> mlua::Result<()> {
    if out.len() >= MAX_REPLY_TOKENS
        || depth > MAX_REPLY_DEPTH
        || *bytes > strata_core::ops::MAX_REPLY_BYTES
    {
        return Err(too_big());
    }
    match v {
        Value::Integer(n) => out.push(Token::Int(*n)),
        Value::Number(f) => out.push(Token::Int(c_cast(*f))),
        Value::String(s) => {
            // One string returned many times is copied each time: the budget counts copies.
            let b = s.as_bytes();
            *bytes = bytes.saturating_add(b.len() + 16);
            if *bytes > strata_core::ops::MAX_REPLY_BYTES {
                return Err(too_big());
            }
            out.push(Token::Bulk(b.to_vec()));
        }
        Value::Boolean(true) => out.push(Token::Int(1)),
        Value::Table(t) => {
            if let Ok(Value::String(e)) = t.raw_get::<Value>("err") {
                out.push(Token::Error(e.to_string_lossy()));
            } else if let Ok(Value::String(s)) = t.raw_get::<Value>("ok") {
                out.push(Token::Status(s.to_string_lossy()));
            } else {
                let at = out.len();
                out.push(Token::Array(0));
                let mut n = 0u32;
                loop {
                    let item: Value = t.raw_get(n as i64 + 1)?;
                    if item.is_nil() {
                        break;
                    }
                    flatten(&item, depth + 1, out, bytes)?;
                    n += 1;
                }
                out[at] = Token::Array(n);
            }
        }
        _ => out.push(Token::Nil),
    }
    Ok(())
}

/// The script `EVAL`/`EVALSHA` (`by_sha`) with arguments `a` names, for the selected
/// namespace.
pub(super) fn build(
    sh: &Shared,
    s: &Session<'_>,
    a: &[Bytes],
    by_sha: bool,
    read_only: bool,
) -> Res<Script> {
    let body = if by_sha {
        let sha = String::from_utf8_lossy(&a[1]).to_string();
        sh.scripts
            .lock()
            .for_evalsha(&sha)
            .ok_or(ReplyError::coded(
                "NOSCRIPT",
                "No matching script. Please use EVAL.",
            ))?
    } else {
        sh.scripts.lock().remember_eval(&a[1]);
        a[1].clone()
    };
    let numkeys =
        parse_int(&a[2]).ok_or(ReplyError::err("value is not an integer or out of range"))?;
    if numkeys < 0 {
        return Err(ReplyError::err("Number of keys can't be negative"));
    }
    let numkeys = numkeys as usize;
    if numkeys > a.len() - 3 {
        return Err(ReplyError::err(
            "Number of keys can't be greater than number of args",
        ));
    }
    let (keys, args) = a[3..].split_at(numkeys);
    Ok(Script {
        body: body.to_vec(),
        keys: keys.iter().map(|k| k.to_vec().into()).collect(),
        args: args.iter().map(|k| k.to_vec().into()).collect(),
        read_only,
        default_ttl_ms: sh
            .cache
            .policy(&s.ns)
            .default_ttl
            .map(|d| d.as_millis() as u64),
    })
}

fn too_big() -> mlua::Error {
    mlua::Error::external(CallError(
        ReplyError::err("the script's reply is too large or too deeply nested").to_string(),
    ))
}

/// `EVAL script numkeys key... arg...` (`by_sha`: `EVALSHA`'s id instead of a body).
pub(super) async fn eval(
    sh: &Shared,
    s: &mut Session<'_>,
    a: &[Bytes],
    by_sha: bool,
    read_only: bool,
) -> Res<()> {
    let script = build(sh, s, a, by_sha, read_only)?;
    let keys: Vec<Bytes> = script
        .keys
        .iter()
        .map(|k| Bytes::copy_from_slice(k))
        .collect();
    one_slot(sh, keys.iter())?;
    let op = MultiOp::Script(script);
    let reply = if keys.is_empty() {
        // No key: nothing to lock or route; it runs here.
        sh.cache.apply_multi(&op, &[], sh.cache.now_ms()).1
    } else {
        // Queueing for the locks counts against an expiry's tenth (`exec_reply`).
        let accepted = sh.cache.now_ms();
        let _guards = sh.lock_keys(&s.ns, keys.iter().map(|k| &k[..])).await;
        strata_core::time::accepted_at(accepted, sh.cache.execute_multi(&s.ns, &op))
            .await
            .map_err(|e| cache_err(&e))?
    };
    super::write_value(s, &reply);
    Ok(())
}

/// `SCRIPT LOAD | EXISTS | FLUSH | KILL`.
pub(super) fn script(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let sub = &a[1];
    if eq_ic(sub, "LOAD") && a.len() == 3 {
        check_compiles(&a[2]).map_err(ReplyError::Line)?;
        let sha = sh.scripts.lock().load(&a[2]).map_err(|_| {
            ReplyError::coded(
                "OOM",
                format!(
                    "the node's script cache is full ({MAX_CACHED_SCRIPTS} scripts or {} MiB loaded with SCRIPT LOAD); SCRIPT FLUSH empties it",
                    MAX_CACHED_SCRIPT_BYTES >> 20
                ),
            )
        })?;
        s.reply.bulk(sha.as_bytes());
    } else if eq_ic(sub, "EXISTS") && a.len() >= 3 {
        let cache = sh.scripts.lock();
        s.reply.array(a.len() - 2);
        for sha in &a[2..] {
            let known = cache.contains(&String::from_utf8_lossy(sha));
            s.reply.integer(i64::from(known));
        }
    } else if eq_ic(sub, "FLUSH")
        && (a.len() == 2 || (a.len() == 3 && (eq_ic(&a[2], "ASYNC") || eq_ic(&a[2], "SYNC"))))
    {
        sh.scripts.lock().flush();
        s.reply.ok();
    } else if eq_ic(sub, "KILL") && a.len() == 2 {
        if sh.lua.kill_all() == 0 {
            return Err(ReplyError::coded(
                "NOTBUSY",
                "No scripts in execution right now.",
            ));
        }
        s.reply.ok();
    } else if eq_ic(sub, "HELP") && a.len() == 2 {
        // Redis's lines for the subcommands Strata has.
        super::help(
            s,
            &[
                "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "EXISTS <sha1> [<sha1> ...]",
                "    Return information about the existence of the scripts in the script cache.",
                "FLUSH [ASYNC|SYNC]",
                "    Flush the Lua scripts cache. Very dangerous on replicas.",
                "    When called without the optional mode argument, the behavior is determined by the",
                "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
                "    * ASYNC: Asynchronously flush the scripts cache.",
                "    * SYNC: Synchronously flush the scripts cache.",
                "KILL",
                "    Kill the currently executing Lua script.",
                "LOAD <script>",
                "    Load a script into the scripts cache without executing it.",
                "HELP",
                "    Prints this help.",
            ],
        );
    } else {
        return Err(ReplyError::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try SCRIPT HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(64)])
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_scripts_share_one_bound_and_give_it_back() {
        let total = AtomicUsize::new(0);
        let held = |limit| Held {
            total: &total,
            limit,
            mine: std::cell::Cell::new(0),
        };
        let (a, b) = (held(100), held(100));
        assert!(a.set(60));
        // Together past the bound: the one that grows is refused.
        assert!(!b.set(50));
        // Shrinking is never refused, and what is given back is free for the other.
        assert!(a.set(10));
        assert!(b.set(50));
        drop(a);
        assert_eq!(total.load(Ordering::Relaxed), 50);
        drop(b);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn numbers_become_arguments_as_redis_7_4_prints_them() {
        for (n, want) in [
            (1796290721000000.0, "1796290721000000"),
            (123456789012345.0, "123456789012345"),
            (-42.0, "-42"),
            (-0.0, "0"),
            (1.0 / 3.0, "0.3333333333333333"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (-2.5, "-2.5"),
            (0.000001, "0.000001"),
            (1.5e-7, "1.5e-7"),
            (1.5e-10, "1.5e-10"),
            (1e20, "1e+20"),
            (1.25e300, "1.25e+300"),
            (9223372036854775808.0, "9223372036854776000"),
            (5e-324, "5e-324"),
            (f64::NAN, "nan"),
            (-f64::NAN, "-nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(number_arg(n), want, "{n:e}");
        }
        // What reads back: every finite double prints as one that parses to itself.
        for n in [1.0 / 7.0, 2.0f64.powi(62) + 2048.0, -1e-300, 6.02214076e23] {
            assert_eq!(number_arg(n).parse::<f64>().unwrap(), n);
        }
    }

    #[test]
    fn error_tables_keep_redis_7s_text() {
        for (msg, want) in [
            ("-ERR x", "ERR x"),
            ("locked", "ERR locked"),
            ("", "ERR "),
            ("-", "ERR "),
            ("MYERR boom", "MYERR boom"),
            (
                "-WRONGTYPE Operation against a key\r\n",
                "WRONGTYPE Operation against a key",
            ),
            ("my error text", "my error text"),
        ] {
            assert_eq!(
                String::from_utf8(error_table_text(msg.as_bytes())).unwrap(),
                want,
                "{msg:?}"
            );
        }
    }

    #[test]
    fn numbers_become_integer_replies_as_a_c_cast_does() {
        assert_eq!(c_cast(3.9), 3);
        assert_eq!(c_cast(-3.9), -3);
        assert_eq!(c_cast(1e20), i64::MIN);
        assert_eq!(c_cast(-1e20), i64::MIN);
        assert_eq!(c_cast(f64::NAN), i64::MIN);
        assert_eq!(c_cast(f64::INFINITY), i64::MIN);
        assert_eq!(c_cast(9.2e18), 9_200_000_000_000_000_000);
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn body(i: usize) -> Vec<u8> {
        format!("return {i}").into_bytes()
    }

    #[test]
    fn eval_scripts_go_least_recently_used_first_and_loaded_ones_stay() {
        let mut c = ScriptCache::default();
        let loaded = c.load(b"return 'mine'").unwrap();
        let first = c.remember_eval(&body(0));
        for i in 1..MAX_EVAL_SCRIPTS {
            c.remember_eval(&body(i));
        }
        // Used again: now the most recent, so the next new script pushes out body(1).
        c.remember_eval(&body(0));
        c.remember_eval(&body(MAX_EVAL_SCRIPTS));
        assert!(c.contains(&first));
        assert!(!c.contains(&sha1_hex(&body(1))));
        assert_eq!(c.evicted(), 1);
        // A careless client's stream of new scripts never pushes out a loaded one.
        for i in 0..5 * MAX_EVAL_SCRIPTS {
            c.remember_eval(format!("return 'x{i}'").as_bytes());
        }
        assert_eq!(c.len(), MAX_EVAL_SCRIPTS + 1);
        assert_eq!(
            c.for_evalsha(&loaded.to_uppercase()).unwrap(),
            "return 'mine'"
        );
    }

    #[test]
    fn evalsha_and_script_load_keep_an_eval_script_for_good() {
        let mut c = ScriptCache::default();
        let by_sha = c.remember_eval(b"return 1");
        let by_load = c.remember_eval(b"return 2");
        assert!(c.for_evalsha(&by_sha).is_some());
        assert_eq!(c.load(b"return 2").unwrap(), by_load);
        for i in 0..2 * MAX_EVAL_SCRIPTS {
            c.remember_eval(&body(i + 10));
        }
        assert!(c.contains(&by_sha) && c.contains(&by_load));
    }

    #[test]
    fn a_full_cache_refuses_script_load_and_runs_evals_uncached() {
        let mut c = ScriptCache::default();
        let evals: Vec<String> = (0..10).map(|i| c.remember_eval(&body(i))).collect();
        for i in 0..MAX_CACHED_SCRIPTS - 10 {
            c.load(format!("return 'l{i}'").as_bytes()).unwrap();
        }
        // Full: a new loaded script first pushes out EVAL's scripts, then is refused.
        for i in 0..10 {
            c.load(format!("return 'more{i}'").as_bytes()).unwrap();
        }
        assert!(evals.iter().all(|s| !c.contains(s)));
        assert_eq!(c.load(b"return 'one too many'"), Err(CacheFull::Loaded));
        // A script held already is still answered, and an EVAL runs without being kept.
        assert!(c.load(b"return 'l0'").is_ok());
        let sha = c.remember_eval(b"return 'uncached'");
        assert!(!c.contains(&sha));
        assert_eq!(c.len(), MAX_CACHED_SCRIPTS);
        let before = c.bytes();
        c.flush();
        assert!(c.is_empty() && c.bytes() == 0 && before > 0);
        assert_eq!(c.evicted(), 10, "SCRIPT FLUSH keeps the count");
    }

    #[test]
    fn source_bytes_bound_the_cache_too() {
        let mut c = ScriptCache::default();
        let big = vec![b' '; MAX_CACHED_SCRIPT_BYTES / 4];
        let mut shas = Vec::new();
        for i in 0..4 {
            let mut b = big.clone();
            b.extend_from_slice(format!("return {i}").as_bytes());
            shas.push(c.remember_eval(&b));
        }
        // The fourth did not fit beside the first three (the suffix makes them larger than a
        // quarter): the least recently used went.
        assert!(c.bytes() <= MAX_CACHED_SCRIPT_BYTES);
        assert!(!c.contains(&shas[0]) && c.contains(&shas[3]));
    }

    /// A script that could never fit runs uncached and pushes out nobody's: it once emptied
    /// every `EVAL` script held first.
    #[test]
    fn a_script_larger_than_the_cache_drops_nothing() {
        let mut c = ScriptCache::default();
        let evals: Vec<String> = (0..10).map(|i| c.remember_eval(&body(i))).collect();
        let loaded = c.load(&vec![b' '; MAX_CACHED_SCRIPT_BYTES / 2]).unwrap();
        let huge = vec![b'-'; MAX_CACHED_SCRIPT_BYTES / 2 + 1];
        let sha = c.remember_eval(&huge);
        assert!(!c.contains(&sha));
        assert!(
            evals.iter().all(|s| c.contains(s)),
            "EVAL scripts were dropped"
        );
        assert_eq!(c.load(&huge), Err(CacheFull::Loaded));
        assert!(evals.iter().all(|s| c.contains(s)) && c.contains(&loaded));
        assert_eq!(c.evicted(), 0);
        // Room made by EVAL scripts alone is still made: a script that fits beside the
        // loaded one pushes the least recently used out.
        let fits = vec![b'+'; MAX_CACHED_SCRIPT_BYTES / 2 - 50];
        c.remember_eval(&fits);
        assert!(!c.contains(&evals[0]) && c.evicted() > 0);
    }
}
