//! Client-side caching (`CLIENT TRACKING`) against real processes: the same conversation
//! with redis-server and with `strata serve` gives the same frames; redis-py's client-side
//! cache (`cache_config`) on one member of a three-node cluster sees every kind of change
//! made through another member within the coherence bound; BCAST and RESP2 `REDIRECT`
//! clients hear of them too; a client whose connection drops never serves what changed
//! meanwhile; and a client that reads millions of distinct keys leaves a bounded table.

#![allow(clippy::unwrap_used)]

#[path = "../../crates/strata-redis/tests/common/mod.rs"]
mod redis_common;

use std::process::Command;
use std::time::{Duration, Instant};

use redis_common::RedisServer;
use strata_resp::Frame;
use strata_tests::*;

/// Taken shared by every test here but the one that times a bystander, which takes it
/// alone, so that its latency is not the other tests' servers and clients on two cores.
/// (Its tail still moved 7.7–18 ms run by itself on one VM within an hour, 2026-12-07:
/// the bounds it asserts allow for that.)
static TIMING: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn alongside() -> std::sync::RwLockReadGuard<'static, ()> {
    TIMING.read().unwrap_or_else(|e| e.into_inner())
}

fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    TIMING.write().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn tracking_frames_are_redis_frames() {
    let _timing = alongside();
    let redis = RedisServer::start();
    let strata = Server::start("");
    let steps: Vec<Step<'_>> = vec![
        // Connection 0 speaks RESP3 and tracks; 1 writes; 2 is a RESP2 subscriber that
        // connection 3 (RESP2) redirects its notices to.
        (0, &[b"HELLO", b"3"], 1),
        (0, &[b"CLIENT", b"TRACKINGINFO"], 1),
        (0, &[b"CLIENT", b"GETREDIR"], 1),
        (0, &[b"CLIENT", b"CACHING", b"yes"], 1),
        (0, &[b"CLIENT", b"TRACKING", b"maybe"], 1),
        (0, &[b"CLIENT", b"TRACKING", b"on", b"PREFIX", b"a"], 1),
        (0, &[b"CLIENT", b"TRACKING", b"on", b"OPTIN", b"OPTOUT"], 1),
        (0, &[b"CLIENT", b"TRACKING", b"on", b"BCAST", b"OPTIN"], 1),
        (
            0,
            &[
                b"CLIENT",
                b"TRACKING",
                b"on",
                b"BCAST",
                b"PREFIX",
                b"ab",
                b"PREFIX",
                b"a",
            ],
            1,
        ),
        (
            0,
            &[b"CLIENT", b"TRACKING", b"on", b"REDIRECT", b"999999"],
            1,
        ),
        (0, &[b"CLIENT", b"TRACKING", b"on", b"REDIRECT", b"x"], 1),
        (
            0,
            &[
                b"CLIENT",
                b"TRACKING",
                b"on",
                b"REDIRECT",
                b"@1",
                b"REDIRECT",
                b"@2",
            ],
            1,
        ),
        (0, &[b"CLIENT", b"TRACKING", b"on", b"NOPE"], 1),
        // Default mode: a read key is announced once when another client changes it.
        (0, &[b"CLIENT", b"TRACKING", b"on"], 1),
        (0, &[b"CLIENT", b"TRACKINGINFO"], 1),
        (0, &[b"CLIENT", b"GETREDIR"], 1),
        (1, &[b"SET", b"m2", b"x"], 1),
        (0, &[b"GET", b"k"], 1),
        (0, &[b"MGET", b"m1", b"m2"], 1),
        (1, &[b"SET", b"k", b"v"], 1),
        (0, &[b"PING"], 2),
        (1, &[b"SET", b"k", b"again"], 1),
        (0, &[b"PING"], 1),
        (1, &[b"DEL", b"m2"], 1),
        (0, &[b"PING"], 2),
        // Its own write is announced after the write's reply.
        (0, &[b"GET", b"own"], 1),
        (0, &[b"SET", b"own", b"1"], 2),
        (0, &[b"STRLEN", b"k"], 1),
        (1, &[b"APPEND", b"k", b"!"], 1),
        (0, &[b"PING"], 2),
        // A flush is one null, whatever it empties.
        (0, &[b"EXISTS", b"k"], 1),
        (1, &[b"FLUSHALL"], 1),
        (0, &[b"PING"], 2),
        (0, &[b"CLIENT", b"TRACKING", b"on", b"BCAST"], 1),
        // NOLOOP: its own changes are not announced to it.
        (0, &[b"CLIENT", b"TRACKING", b"off"], 1),
        (0, &[b"CLIENT", b"TRACKING", b"on", b"NOLOOP"], 1),
        (0, &[b"GET", b"n"], 1),
        (0, &[b"SET", b"n", b"1"], 1),
        (0, &[b"PING"], 1),
        (0, &[b"GET", b"n"], 1),
        (1, &[b"SET", b"n", b"2"], 1),
        (0, &[b"PING"], 2),
        // OPTIN: only what follows CLIENT CACHING yes is recorded.
        (0, &[b"CLIENT", b"TRACKING", b"on", b"OPTIN"], 1),
        (0, &[b"CLIENT", b"TRACKING", b"off"], 1),
        (0, &[b"CLIENT", b"TRACKING", b"on", b"OPTIN"], 1),
        (0, &[b"GET", b"o"], 1),
        (1, &[b"SET", b"o", b"1"], 1),
        (0, &[b"PING"], 1),
        (0, &[b"CLIENT", b"CACHING", b"yes"], 1),
        (0, &[b"CLIENT", b"TRACKINGINFO"], 1),
        (0, &[b"GET", b"o"], 1),
        (0, &[b"CLIENT", b"TRACKINGINFO"], 1),
        (1, &[b"SET", b"o", b"2"], 1),
        (0, &[b"PING"], 2),
        (0, &[b"CLIENT", b"CACHING", b"no"], 1),
        (0, &[b"CLIENT", b"TRACKING", b"off"], 1),
        // OPTOUT: everything but what follows CLIENT CACHING no.
        (0, &[b"CLIENT", b"TRACKING", b"on", b"OPTOUT"], 1),
        (0, &[b"CLIENT", b"CACHING", b"no"], 1),
        (0, &[b"GET", b"p"], 1),
        (0, &[b"GET", b"q"], 1),
        (1, &[b"SET", b"p", b"1"], 1),
        (1, &[b"SET", b"q", b"1"], 1),
        (0, &[b"PING"], 2),
        // CLIENT CACHING no applies to the next command only, even a write.
        (0, &[b"CLIENT", b"CACHING", b"no"], 1),
        (0, &[b"SET", b"a", b"1"], 1),
        (0, &[b"GET", b"p"], 1),
        (1, &[b"SET", b"p", b"2"], 1),
        (0, &[b"PING"], 2),
        (0, &[b"CLIENT", b"CACHING", b"no"], 1),
        (0, &[b"NOSUCHCOMMAND"], 1),
        (0, &[b"GET", b"q"], 1),
        (1, &[b"SET", b"q", b"2"], 1),
        (0, &[b"PING"], 2),
        (0, &[b"CLIENT", b"TRACKING", b"off"], 1),
        // Reads inside MULTI are recorded.
        (0, &[b"CLIENT", b"TRACKING", b"on"], 1),
        (0, &[b"MULTI"], 1),
        (0, &[b"GET", b"tx1"], 1),
        (0, &[b"MGET", b"tx2", b"tx3"], 1),
        (0, &[b"EXEC"], 1),
        (1, &[b"SET", b"tx3", b"1"], 1),
        (0, &[b"PING"], 2),
        (0, &[b"CLIENT", b"TRACKING", b"off"], 1),
        // BCAST with prefixes: keys under them, read or not.
        (
            0,
            &[
                b"CLIENT",
                b"TRACKING",
                b"on",
                b"BCAST",
                b"PREFIX",
                b"user:",
                b"PREFIX",
                b"cart:",
            ],
            1,
        ),
        (
            0,
            &[
                b"CLIENT",
                b"TRACKING",
                b"on",
                b"BCAST",
                b"PREFIX",
                b"user:1",
            ],
            1,
        ),
        (0, &[b"CLIENT", b"TRACKINGINFO"], 1),
        (1, &[b"SET", b"user:7", b"a"], 1),
        (1, &[b"SET", b"order:7", b"a"], 1),
        (1, &[b"DEL", b"cart:7"], 1),
        (0, &[b"PING"], 2),
        (0, &[b"CLIENT", b"TRACKING", b"on"], 1),
        (0, &[b"CLIENT", b"TRACKING", b"off"], 1),
        (0, &[b"CLIENT", b"TRACKINGINFO"], 1),
        // RESP2 with REDIRECT to a subscribed connection: messages on __redis__:invalidate.
        (2, &[b"SUBSCRIBE", b"__redis__:invalidate"], 1),
        (3, &[b"CLIENT", b"TRACKING", b"on", b"REDIRECT", b"@2"], 1),
        (3, &[b"GET", b"r"], 1),
        (1, &[b"SET", b"r", b"1"], 1),
        (2, &[b"PING"], 2),
        (3, &[b"GET", b"r"], 1),
        (1, &[b"FLUSHDB"], 1),
        (2, &[b"PING"], 2),
        // RESP3 with REDIRECT to a RESP3 connection: pushes on the target.
        (3, &[b"CLIENT", b"TRACKING", b"off"], 1),
        (1, &[b"HELLO", b"3"], 1),
        (0, &[b"CLIENT", b"TRACKING", b"on", b"REDIRECT", b"@1"], 1),
        (0, &[b"GET", b"s"], 1),
        (3, &[b"SET", b"s", b"1"], 1),
        (1, &[b"PING"], 2),
        // A RESP2 target that is not subscribed cannot receive notices: they are dropped,
        // and the redirect is not broken.
        (0, &[b"CLIENT", b"TRACKING", b"on", b"REDIRECT", b"@3"], 1),
        (0, &[b"GET", b"u"], 1),
        (1, &[b"SET", b"u", b"1"], 1),
        (3, &[b"PING"], 1),
        (0, &[b"CLIENT", b"TRACKINGINFO"], 1),
        // Nothing is left unread anywhere.
        (0, &[b"PING"], 1),
        (1, &[b"PING"], 1),
        (2, &[b"PING"], 1),
        (3, &[b"PING"], 1),
    ];
    let want = converse(redis.port, 4, &steps);
    let got = converse(strata.port, 4, &steps);
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(g, w, "frame {i}: strata {g:?}, redis-server {w:?}");
    }
    assert_eq!(got.len(), want.len());
}

/// redis-py with `cache_config` on node 1; every change goes through node 3 (a separate
/// client), and the cached client must see the new state within the bound. Prints one JSON
/// line: how long each change took to reach the cached client, and how many GETs node 1
/// answered for reads that should have come from the client's cache.
const CACHED_CLIENT: &str = r#"
import json, sys, time, redis
from redis.cache import CacheConfig
p1, p3 = int(sys.argv[1]), int(sys.argv[2])
r = redis.Redis(port=p1, protocol=3, cache_config=CacheConfig())
w = redis.Redis(port=p3)
probe = redis.Redis(port=p1)
def gets():
    return int(probe.info("commandstats").get("cmdstat_get", {}).get("calls", 0))
def cached(key, value):
    # Read once from the node, then from the client's cache: the node sees one GET at most.
    # (First, the write's own invalidation settles: it may reach node 1 just after a read
    # that already saw the new value, and is then announced, correctly but late.)
    r.get(key)
    time.sleep(0.05)
    before = gets()
    for _ in range(20):
        got = r.get(key)
        assert got == value, (key, got, value)
    served = gets() - before
    assert served <= 1, f"{key}: node 1 answered {served} of 20 reads"
def until(check, what):
    start = time.time()
    while time.time() - start < 10:
        if check():
            return round(time.time() - start, 4)
        time.sleep(0.001)
    raise AssertionError(what + ": the cached client still serves the old state after 10 s")
out = {}
w.set("k", "v1")
assert r.get("k") == b"v1"
before = gets()
for _ in range(200):
    assert r.get("k") == b"v1"
out["served_by_node"] = gets() - before
w.set("k", "v2")
out["set"] = until(lambda: r.get("k") == b"v2", "SET")
cached("k", b"v2")
w.delete("k")
out["del"] = until(lambda: r.get("k") is None, "DEL")
w.set("e", "x")
cached("e", b"x")
w.pexpire("e", 800)
start = time.time()
until(lambda: r.get("e") == b"x", "EXPIRE's own notice")
cached("e", b"x")
time.sleep(max(0, 0.4 - (time.time() - start)))
cached("e", b"x")   # not announced before its time
until(lambda: r.get("e") is None, "expiry")
out["expire_after_ttl"] = round(time.time() - start - 0.8, 4)
w.set("pat:1", "a")
cached("pat:1", b"a")
w.execute_command("STRATA.INVALIDATE.PATTERN", "pat:*")
out["pattern"] = until(lambda: r.get("pat:1") is None, "pattern invalidation")
w.execute_command("STRATA.SET", "t1", "a", "TAG", "grp")
cached("t1", b"a")
w.execute_command("STRATA.INVALIDATE.TAG", "grp")
out["tag"] = until(lambda: r.get("t1") is None, "tag invalidation")
w.set("f", "a")
cached("f", b"a")
w.flushdb()
out["flushdb"] = until(lambda: r.get("f") is None, "FLUSHDB")
print(json.dumps(out), flush=True)
"#;

fn python(script: &str, args: &[String]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The documented bound for a change on another member to reach a client's cache: the
/// coherence bound G2 (about 1.5 s at worst, docs/semantics.md), with room for a loaded CI
/// machine.
const BOUND: f64 = 2.0;

#[test]
fn redis_py_client_cache_sees_changes_made_through_another_member() {
    let _timing = alongside();
    let (nodes, _dirs) = three_nodes("");
    let out = python(
        CACHED_CLIENT,
        &[nodes[0].port.to_string(), nodes[2].port.to_string()],
    );
    cached_client_kept_up(&out);
}

/// Checks `CACHED_CLIENT`'s report: its cache answered the 200 reads (node 1 saw none of
/// them), and every change reached it within the bound.
fn cached_client_kept_up(out: &str) {
    println!("{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["served_by_node"], 0, "{v}");
    for change in [
        "set",
        "del",
        "pattern",
        "tag",
        "flushdb",
        "expire_after_ttl",
    ] {
        let t = v[change].as_f64().unwrap();
        assert!(t < BOUND, "{change}: {t} s to reach the client's cache");
    }
}

/// Reads frames from `c` until one satisfies `want` (pushes and replies in between are
/// skipped), within `within`; how long it took.
fn until_frame(c: &mut Raw, within: Duration, mut want: impl FnMut(&Frame) -> bool) -> Duration {
    let start = Instant::now();
    c.stream
        .set_read_timeout(Some(within.max(Duration::from_millis(10))))
        .unwrap();
    loop {
        let f = c.frame();
        if want(&f) {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not seen within {within:?}");
    }
}

/// Whether `f` is an invalidation notice that names `key`.
fn names(f: &Frame, key: &[u8]) -> bool {
    matches!(notice_keys(f), Some(Frame::Array(ks)) if ks.iter().any(|k| *k == Frame::Bulk(key.to_vec().into())))
}

/// Whether `f` is a notice naming no key — "drop everything", as Redis sends on
/// `FLUSHALL`, and as a member sends when it empties its copies: a restarted member does at
/// the end of its warm-up, about 2 s after it first reaches another (crates/strata/src/
/// cluster/warm.rs), which on a busy machine can fall inside a test's loop.
fn is_flush(f: &Frame) -> bool {
    matches!(notice_keys(f), Some(Frame::Null | Frame::NullArray))
}

/// The keys part of an invalidation notice.
fn notice_keys(f: &Frame) -> Option<&Frame> {
    match f {
        // RESP3: >2 invalidate [keys]
        Frame::Push(parts) if parts.len() == 2 && parts[0] == Frame::Bulk("invalidate".into()) => {
            Some(&parts[1])
        }
        // RESP2 redirect: *3 message __redis__:invalidate [keys]
        Frame::Array(parts)
            if parts.len() == 3 && parts[1] == Frame::Bulk("__redis__:invalidate".into()) =>
        {
            Some(&parts[2])
        }
        _ => None,
    }
}

/// BCAST with prefixes (RESP3) and a RESP2 client redirecting to a subscribed connection,
/// both on node 1, hear of writes made through node 3; a key outside the prefixes is not
/// announced to the BCAST client.
#[test]
fn bcast_and_redirect_clients_hear_of_writes_on_another_member() {
    let _timing = alongside();
    let (nodes, _dirs) = three_nodes("");
    let mut writer = nodes[2].raw();
    let mut bcast = nodes[0].raw();
    bcast.cmd(&[b"HELLO", b"3"]);
    assert_eq!(
        bcast.cmd(&[b"CLIENT", b"TRACKING", b"on", b"BCAST", b"PREFIX", b"user:"]),
        Frame::Simple("OK".into())
    );
    let mut sub = nodes[0].raw();
    let id = match sub.cmd(&[b"CLIENT", b"ID"]) {
        Frame::Integer(n) => n.to_string(),
        other => panic!("{other:?}"),
    };
    sub.cmd(&[b"SUBSCRIBE", b"__redis__:invalidate"]);
    let mut resp2 = nodes[0].raw();
    assert_eq!(
        resp2.cmd(&[b"CLIENT", b"TRACKING", b"on", b"REDIRECT", id.as_bytes()]),
        Frame::Simple("OK".into())
    );
    let bound = Duration::from_secs_f64(BOUND);
    let mut worst = Duration::ZERO;
    // A notice to drop everything empties the node's record of what the REDIRECT client
    // read: a round that meets one is run again (a few times at most), so that every key
    // still needs a notice naming it from a round without one. (CI once met one from a
    // member's warm-up and waited in vain for the key's notice.)
    let mut flushes = 0;
    let mut i = 0;
    while i < 20 {
        let key = format!("user:{i}");
        resp2.cmd(&[b"GET", key.as_bytes()]);
        writer.cmd(&[b"SET", b"order:1", b"x"]);
        writer.cmd(&[b"SET", key.as_bytes(), b"v"]);
        let t = until_frame(&mut bcast, bound, |f| {
            assert!(!names(f, b"order:1"), "order:1 is outside the prefix");
            names(f, key.as_bytes())
        });
        let mut flushed = false;
        let u = until_frame(&mut sub, bound, |f| {
            flushed = is_flush(f);
            flushed || names(f, key.as_bytes())
        });
        if flushed {
            flushes += 1;
            assert!(flushes <= 3, "{flushes} notices to drop everything");
            eprintln!("round {i} met a notice to drop everything: run again");
            continue;
        }
        i += 1;
        worst = worst.max(t).max(u);
    }
    println!("worst delay of 40 notices from another member: {worst:?}");
}

/// A client whose connection drops never serves what changed while it was away: redis-py's
/// cache is dropped with the connection (node 1 closes idle clients — checked before the key
/// changes through node 3, so no notice can reach the client — and the next read is fresh),
/// and after node 1 restarts on the same port.
const RECONNECTING: &str = r#"
import sys, time, redis
from redis.cache import CacheConfig
p1, p3 = int(sys.argv[1]), int(sys.argv[2])
w = redis.Redis(port=p3)
redis.Redis(port=p1).config_set("timeout", 1)  # node 1 closes clients idle for 1 s
r = redis.Redis(port=p1, protocol=3, cache_config=CacheConfig(),
                retry_on_error=[redis.ConnectionError])
w.set("k", "before")
assert r.get("k") == b"before"
assert r.get("k") == b"before"  # from the client's cache
time.sleep(2.5)
# Node 1 closed every idle client, the cached one included, before the change below: no
# notice of it can reach that client.
clients = int(redis.Redis(port=p1).info("clients")["connected_clients"])
assert clients == 1, f"{clients} clients still connected to node 1"
w.set("k", "after")
got = r.get("k")
assert got == b"after", got
print("ok", flush=True)
"#;

#[test]
fn a_reconnected_client_never_serves_a_value_changed_meanwhile() {
    let _timing = alongside();
    let (nodes, _dirs) = three_nodes("");
    let out = python(
        RECONNECTING,
        &[nodes[0].port.to_string(), nodes[2].port.to_string()],
    );
    assert_eq!(out.trim(), "ok");

    // A restart: the client's connection ends with the process; the node comes back on the
    // same port, the key changes, and the client's next read is fresh.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut first = Server::start_listening("", &listen);
    let script = r#"
import sys, time, redis
from redis.cache import CacheConfig
port = int(sys.argv[1])
r = redis.Redis(port=port, protocol=3, cache_config=CacheConfig(),
                retry_on_error=[redis.ConnectionError])
redis.Redis(port=port).set("k", "before")
assert r.get("k") == b"before"
print("cached", flush=True)
sys.stdin.readline()  # the node restarts, and "after" is written
for _ in range(50):
    try:
        got = r.get("k")
        break
    except redis.ConnectionError:
        time.sleep(0.1)
assert got == b"after", got
print("ok", flush=True)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "cached");
    first.kill9();
    let second = Server::start_listening("", &listen);
    second.cli(&["set", "k", "after"]);
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"go\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(line.trim(), "ok");
}

/// A client that reads two million distinct keys (MGET, a thousand at a time), then a
/// hundred thousand keys of 2 KiB, leaves the table at its bounds (keys, then bytes): the
/// oldest keys are invalidated early (the client is told), and the node's memory stays
/// where it was.
#[test]
fn the_tracking_table_stays_within_its_bound() {
    let _timing = alongside();
    const MAX: u64 = 10_000;
    const MAX_BYTES: u64 = 4 << 20;
    let s = Server::start_l1_only(&format!(
        "[server]\ntracking_table_max_keys = {MAX}\ntracking_table_max_bytes = {MAX_BYTES}\n"
    ));
    let mut c = s.raw();
    c.cmd(&[b"HELLO", b"3"]);
    assert_eq!(
        c.cmd(&[b"CLIENT", b"TRACKING", b"on"]),
        Frame::Simple("OK".into())
    );
    let before = s.rss();
    let mut told = 0usize;
    let mut read = |c: &mut Raw, keys: usize, len: usize| {
        let started = Instant::now();
        for batch in 0..keys / 1000 {
            let mut args: Vec<Vec<u8>> = vec![b"MGET".to_vec()];
            args.extend((0..1000).map(|i| {
                let mut k = format!("key:{len}:{}:", batch * 1000 + i).into_bytes();
                k.resize(len.max(k.len()), b'x');
                k
            }));
            let cmd = Frame::Array(args.into_iter().map(|a| Frame::Bulk(a.into())).collect());
            c.send(&cmd.to_bytes());
            loop {
                match c.frame() {
                    Frame::Push(p) if p.first() == Some(&Frame::Bulk("invalidate".into())) => {
                        told += 1
                    }
                    Frame::Array(v) => {
                        assert_eq!(v.len(), 1000);
                        break;
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        started.elapsed()
    };
    let took = read(&mut c, 2_000_000, 0);
    let keys = metric_value(&s, "strata_server_tracking_keys").unwrap();
    let evicted = metric_value(&s, "strata_server_tracking_evicted_keys_total").unwrap();
    println!("2,000,000 short keys in {took:?}: table {keys}, invalidated early {evicted}");
    assert!(keys <= MAX as f64, "the table holds {keys} keys");
    assert!(
        evicted >= (2_000_000 - MAX) as f64,
        "{evicted} invalidated early"
    );
    let took = read(&mut c, 100_000, 2048);
    let keys = metric_value(&s, "strata_server_tracking_keys").unwrap();
    let bytes = metric_value(&s, "strata_server_tracking_bytes").unwrap();
    let evicted = metric_value(&s, "strata_server_tracking_evicted_keys_total").unwrap();
    let grown = s.rss().saturating_sub(before);
    println!(
        "100,000 keys of 2 KiB in {took:?}: table {keys} keys, {bytes} bytes; told {told} of \
         {evicted}; RSS +{} MiB",
        grown >> 20
    );
    assert!(
        bytes <= MAX_BYTES as f64,
        "the table is charged {bytes} bytes"
    );
    assert!(keys < 2100.0, "{keys} keys of 2 KiB within 4 MiB");
    // Every early invalidation reached the client (they follow the replies they concern;
    // the last batch's may still be on their way).
    assert!(told as f64 >= evicted - 1000.0, "told {told} of {evicted}");
    assert!(grown < 64 << 20, "RSS grew by {} MiB", grown >> 20);
}

/// Many cached clients on nodes 1 and 2 read while writers on nodes 2 and 3 set, delete,
/// expire and pattern-invalidate the same 200 keys; once the writers stop and the bound
/// has passed, every client's cache agrees with the cluster, key by key. A notice missed
/// anywhere shows here as a client serving an old value for good.
const STRESS: &str = r#"
import random, sys, threading, time, redis
from redis.cache import CacheConfig
p1, p2, p3 = (int(a) for a in sys.argv[1:4])
K, stop, errors = 200, threading.Event(), []
def writer(port, seed):
    try:
        w, rnd = redis.Redis(port=port), random.Random(seed)
        while not stop.is_set():
            k, op = f"s:{rnd.randrange(K)}", rnd.random()
            if op < 0.6:
                w.set(k, str(rnd.random()))
            elif op < 0.8:
                w.delete(k)
            elif op < 0.95:
                w.pexpire(k, rnd.randrange(50, 400))
            else:
                w.execute_command("STRATA.INVALIDATE.PATTERN", f"s:{rnd.randrange(10)}*")
    except Exception as e:
        errors.append(repr(e))
readers = [redis.Redis(port=p, protocol=3, cache_config=CacheConfig(max_size=500))
           for p in (p1, p1, p2, p2)]
def reader(r, seed):
    try:
        rnd = random.Random(seed)
        while not stop.is_set():
            r.get(f"s:{rnd.randrange(K)}")
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=writer, args=(p, i)) for i, p in enumerate((p2, p3))]
threads += [threading.Thread(target=reader, args=(r, 10 + i)) for i, r in enumerate(readers)]
for t in threads:
    t.start()
time.sleep(6)
stop.set()
for t in threads:
    t.join()
assert not errors, errors
# Every TTL set above has passed by now; then every cache must agree within the bound (a
# loaded machine gets up to 10 s: a copy stale for good stays stale).
time.sleep(0.5)
truth = redis.Redis(port=p3)
deadline = time.time() + 10
while True:
    want = {i: truth.get(f"s:{i}") for i in range(K)}
    stale = [(n, i, r.get(f"s:{i}"), want[i]) for n, r in enumerate(readers) for i in range(K)
             if r.get(f"s:{i}") != want[i]]
    if not stale or time.time() > deadline:
        break
    time.sleep(0.5)
cached = sum(r.get_cache().size for r in readers)
live = sum(1 for v in want.values() if v is not None)
# For a stale key: what each node answers a client without a cache, and its PTTL there
# (a node still serving the old value is a cluster fault; all agreeing is a missed notice).
plain = [redis.Redis(port=p) for p in (p1, p2, p3)]
nodes = {i: [(c.get(f"s:{i}"), c.pttl(f"s:{i}")) for c in plain] for i in {s[1] for s in stale}}
print(len(stale), cached, live, stale[:5], nodes, flush=True)
"#;

#[test]
fn cached_clients_agree_with_the_cluster_after_concurrent_changes() {
    let _timing = alongside();
    let (nodes, _dirs) = three_nodes("");
    let out = python(
        STRESS,
        &[
            nodes[0].port.to_string(),
            nodes[1].port.to_string(),
            nodes[2].port.to_string(),
        ],
    );
    println!("{out}");
    let mut parts = out.split_whitespace();
    let stale: usize = parts.next().unwrap().parse().unwrap();
    let cached: usize = parts.next().unwrap().parse().unwrap();
    let live: usize = parts.next().unwrap().parse().unwrap();
    assert_eq!(stale, 0, "cached clients serving old values: {out}");
    // The clients did cache (redis-py keeps no missing key): each of the four holds every
    // key that exists, so the check above compared caches, not the network.
    assert!(
        live > 0 && cached >= 4 * live,
        "{cached} entries cached, {live} keys: {out}"
    );
}

/// Behind the Redis bridge: two nodes share one redis-server as L2, and redis-py's cache on
/// node A sees every kind of change made through node B (they reach A as the bridge's
/// invalidation messages).
#[test]
fn behind_redis_a_cached_client_sees_changes_made_through_another_node() {
    let _timing = alongside();
    let redis = RedisServer::start();
    let config = format!("[l2.redis]\nenabled = true\nport = {}\n", redis.port);
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Server::start_in(dirs[0].path(), &config);
    let b = Server::start_in(dirs[1].path(), &config);
    let (mut ca, mut cb) = (a.raw(), b.raw());
    let shared = wait_for(Duration::from_secs(10), || {
        cb.cmd(&[b"SET", b"probe", b"1"]) == Frame::Simple("OK".into())
            && ca.cmd(&[b"GET", b"probe"]) == Frame::Bulk("1".into())
    });
    assert!(shared.is_some(), "the two nodes never shared Redis");
    let out = python(CACHED_CLIENT, &[a.port.to_string(), b.port.to_string()]);
    cached_client_kept_up(&out);
}

/// A redirect whose target disconnected is broken, as in Redis: the tracking client (RESP3)
/// gets a `tracking-redir-broken` push naming the target instead of the notice, and
/// `CLIENT TRACKINGINFO` says `broken_redirect`. The same steps against redis-server give
/// the same frames (the target's id, which differs, left out).
#[test]
fn a_redirect_to_a_closed_connection_is_broken_as_in_redis() {
    let _timing = alongside();
    fn run(port: u16) -> Vec<Frame> {
        let mut a = Raw::connect(port);
        a.cmd(&[b"HELLO", b"3"]);
        let mut b = Raw::connect(port);
        let id = match b.cmd(&[b"CLIENT", b"ID"]) {
            Frame::Integer(n) => n.to_string(),
            other => panic!("{other:?}"),
        };
        let mut out = vec![a.cmd(&[b"CLIENT", b"TRACKING", b"on", b"REDIRECT", id.as_bytes()])];
        out.push(a.cmd(&[b"GET", b"k"]));
        drop(b);
        let mut w = Raw::connect(port);
        let gone = wait_for(Duration::from_secs(5), || {
            match w.cmd(&[b"CLIENT", b"LIST"]) {
                Frame::Bulk(list) => !String::from_utf8_lossy(&list).contains(&format!("id={id} ")),
                other => panic!("{other:?}"),
            }
        });
        assert!(gone.is_some(), "the target's connection never went away");
        out.push(w.cmd(&[b"SET", b"k", b"v"]));
        out.push(a.cmd(&[b"PING"]));
        out.push(a.frame());
        out.push(a.cmd(&[b"CLIENT", b"TRACKINGINFO"]));
        // The target's id, as a placeholder.
        out.into_iter()
            .map(|f| match f {
                Frame::Push(mut p)
                    if p.len() == 2 && p[1] == Frame::Integer(id.parse().unwrap()) =>
                {
                    p[1] = Frame::Simple("target".into());
                    Frame::Push(p)
                }
                Frame::Map(m) => Frame::Map(
                    m.into_iter()
                        .map(|(k, v)| {
                            if k == Frame::Bulk("redirect".into()) {
                                (k, Frame::Simple("target".into()))
                            } else {
                                (k, v)
                            }
                        })
                        .collect(),
                ),
                other => other,
            })
            .collect()
    }
    let redis = RedisServer::start();
    let strata = Server::start("");
    let want = run(redis.port);
    let got = run(strata.port);
    assert!(
        want.iter().any(
            |f| matches!(f, Frame::Push(p) if p[0] == Frame::Bulk("tracking-redir-broken".into()))
        ),
        "redis-server: {want:?}"
    );
    assert_eq!(got, want);
}

/// A client's own write reaches its own cache before its next read: the notice a command
/// causes goes out with that command's reply, as Redis sends it (before, it went out at a
/// later wake-up, and redis-py's cache served the value its acknowledged `SET` had replaced
/// in 73 of 2,000 tries; review 2026-12-05).
#[test]
fn redis_py_cache_reads_its_own_writes() {
    let _timing = alongside();
    let s = Server::start("");
    let out = python(
        "import sys, redis\n\
         from redis.cache import CacheConfig\n\
         r = redis.Redis(port=int(sys.argv[1]), protocol=3, cache_config=CacheConfig(max_size=10000))\n\
         stale = 0\n\
         for i in range(2000):\n\
         \x20   k = 'own:%d' % (i % 20)\n\
         \x20   r.set(k, 'old%d' % i); r.get(k); r.get(k); r.set(k, 'new%d' % i)\n\
         \x20   if r.get(k) != ('new%d' % i).encode(): stale += 1\n\
         print(stale)\n",
        &[s.port.to_string()],
    );
    assert_eq!(
        out.trim(),
        "0",
        "reads of the old value after the client's own acknowledged SET"
    );
}

/// One client turning BCAST tracking on and off, with the most prefixes a client may name,
/// while nine others hold theirs: every write on the node matches its key against the
/// prefixes, and the prefix trie was rebuilt under the lock those matches take, so a
/// bystander's `SET` waited for each rebuild (p50 20.7 ms in a review, 2026-12-04; p99
/// 27.5 ms and 3,829 `SET`s in 3 s here, against 0.12 ms and 52,706 since). Now the new trie
/// is built aside and swapped in.
#[test]
fn bcast_toggles_do_not_hold_up_other_clients_writes() {
    let _timing = alone();
    let s = Server::start("");
    let prefixes = |owner: usize| -> Vec<Vec<u8>> {
        (0..1000)
            .map(|i| format!("p{owner:02}:{i:04}:{}", "x".repeat(48)).into_bytes())
            .collect()
    };
    let tracking_on = |c: &mut Raw, owner: usize| {
        let ps = prefixes(owner);
        let mut args: Vec<&[u8]> = vec![b"CLIENT", b"TRACKING", b"ON", b"BCAST"];
        for p in &ps {
            args.push(b"PREFIX");
            args.push(p);
        }
        assert_eq!(c.cmd(&args), Frame::Simple("OK".into()));
    };
    let mut holders: Vec<Raw> = (0..9)
        .map(|i| {
            let mut c = s.raw();
            assert!(matches!(c.cmd(&[b"HELLO", b"3"]), Frame::Map(_)));
            tracking_on(&mut c, i);
            c
        })
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toggler = {
        let (port, stop) = (s.port, stop.clone());
        std::thread::spawn(move || {
            let mut c = Raw::connect(port);
            assert!(matches!(c.cmd(&[b"HELLO", b"3"]), Frame::Map(_)));
            let mut toggles = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ps: Vec<Vec<u8>> = (0..1000)
                    .map(|i| format!("p99:{i:04}:{}", "x".repeat(48)).into_bytes())
                    .collect();
                let mut args: Vec<&[u8]> = vec![b"CLIENT", b"TRACKING", b"ON", b"BCAST"];
                for p in &ps {
                    args.push(b"PREFIX");
                    args.push(p);
                }
                assert_eq!(c.cmd(&args), Frame::Simple("OK".into()));
                assert_eq!(
                    c.cmd(&[b"CLIENT", b"TRACKING", b"OFF"]),
                    Frame::Simple("OK".into())
                );
                toggles += 2;
            }
            toggles
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut by = s.raw();
    let mut lat = Vec::new();
    let until = Instant::now() + Duration::from_secs(3);
    let mut i = 0u64;
    while Instant::now() < until {
        let t = Instant::now();
        let key = format!("bystander:{i}");
        assert_eq!(
            by.cmd(&[b"SET", key.as_bytes(), b"v"]),
            Frame::Simple("OK".into())
        );
        lat.push(t.elapsed());
        i += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let toggles = toggler.join().unwrap();
    lat.sort();
    let p50 = lat[lat.len() / 2];
    eprintln!(
        "{} SETs, p50 {p50:?}, p99 {:?}, {toggles} toggles",
        lat.len(),
        lat[lat.len() * 99 / 100]
    );
    assert!(toggles >= 4, "the toggler ran: {toggles}");
    // The rebuild under the lock made every SET wait for one: p50 20.7 ms. Built aside, a
    // SET waits for none, and its p50 stays a fraction of a millisecond; its tail is the
    // two cores' scheduling while the toggler's rebuilds run (p99 7.7–18 ms in the debug
    // build on one fresh 2-core VM over an hour, 2026-12-07; a 10 ms bound on it failed
    // there while the code had not changed), so the tail is bounded loosely.
    let p99 = lat[lat.len() * 99 / 100];
    assert!(
        p50 < Duration::from_millis(5) && p99 < Duration::from_millis(50),
        "a bystander's SET p50 {p50:?}, p99 {p99:?} ({} SETs) while another client toggled BCAST {toggles} times",
        lat.len()
    );
    // The holders still hear of writes under their prefixes.
    let key = format!("p03:0007:{}tail", "x".repeat(48));
    assert_eq!(
        by.cmd(&[b"SET", key.as_bytes(), b"v"]),
        Frame::Simple("OK".into())
    );
    until_frame(&mut holders[3], Duration::from_secs(5), |f| {
        names(f, key.as_bytes())
    });
}
