//! MULTI/EXEC/WATCH as real clients use them: redis-py's default pipeline (a transaction)
//! and its `transaction()` WATCH retry loop, redis-rs's `pipe().atomic()` and
//! `redis::transaction`, on one `strata serve` and on a three-node cluster with a client on
//! every node. A check-and-set that loses an update, a queued command that runs outside its
//! transaction, or a watched key changed on another node without EXEC aborting fails here.
//! (Reply-for-reply comparison with redis-server is in differential.rs.)
#![allow(clippy::unwrap_used)]

use std::process::Command;

use redis::Commands;
use strata_resp::Frame;
use strata_tests::{Server, three_nodes};

/// redis-py: the default pipeline, errors in place, and `transaction()` incrementing `key`
/// `n` times by check-and-set. Prints how many attempts WATCH aborted.
const PY: &str = r#"
import sys, time, redis
port, key, n, first = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
start = float(sys.argv[5])
r = redis.Redis(host="127.0.0.1", port=port)
if first:
    p = r.pipeline()
    p.set("{t}a", "1").incr("{t}a").get("{t}a").mget("{t}a", "{t}b").delete("{t}a", "{t}b")
    assert p.execute() == [True, 2, b"2", [b"2", None], 1], "default pipeline"
    p = r.pipeline()
    p.set("{t}s", "x").incr("{t}s").get("{t}s")
    out = p.execute(raise_on_error=False)
    assert out[0] is True and isinstance(out[1], redis.ResponseError) and out[2] == b"x", out
while time.time() < start:
    time.sleep(0.005)
aborted = 0
read = sys.argv[6]
def add_one(pipe):
    global aborted
    if read == "mget":
        v = int(pipe.mget(key)[0] or 0)
    elif read == "getrange":
        v = int(pipe.getrange(key, 0, -1) or 0)
    else:
        v = int(pipe.get(key) or 0)
    pipe.multi()
    pipe.set(key, v + 1)
for _ in range(n):
    while True:
        try:
            with r.pipeline() as pipe:
                pipe.watch(key)
                add_one(pipe)
                pipe.execute()
                break
        except redis.WatchError:
            aborted += 1
print(aborted)
"#;

/// Runs the redis-py script against each of `ports` at once (the first one also checks the
/// pipelines; all start their loops at the same instant; clients read the counter with
/// `GET`, `MGET` and `GETRANGE` in turn); returns the WATCH aborts each saw.
fn python_check_and_set(ports: &[u16], key: &str, n: usize) -> Vec<u64> {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 2.0;
    let procs: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Command::new("python3")
                .args([
                    "-c",
                    PY,
                    &p.to_string(),
                    key,
                    &n.to_string(),
                    if i == 0 { "1" } else { "0" },
                    &start.to_string(),
                    // Each of a watching client's reads answers no older than its WATCH.
                    ["get", "mget", "getrange"][i % 3],
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    procs
        .into_iter()
        .map(|p| {
            let out = p.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "redis-py: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        })
        .collect()
}

/// redis-rs: `pipe().atomic()` and `redis::transaction` adding one `n` times, from a thread
/// per url at once.
fn rust_check_and_set(urls: &[String], key: &'static str, n: usize) {
    let threads: Vec<_> = urls
        .iter()
        .cloned()
        .map(|url| {
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                let (v, got): (i64, String) = redis::pipe()
                    .atomic()
                    .set("{t}rs", 5)
                    .ignore()
                    .incr("{t}rs", 2)
                    .get("{t}rs")
                    .query(&mut c)
                    .unwrap();
                assert_eq!((v, got.as_str()), (7, "7"), "SET and INCR ran as one");
                for _ in 0..n {
                    let _: () = redis::transaction(&mut c, &[key], |c, pipe| {
                        let v: Option<i64> = c.get(key)?;
                        pipe.set(key, v.unwrap_or(0) + 1).ignore().query(c)
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn client_transactions_lose_no_update_on_one_node() {
    let srv = Server::start("");
    let aborted = python_check_and_set(&[srv.port, srv.port], "{t}py", 150);
    let mut c = srv.redis();
    assert_eq!(
        c.get::<_, i64>("{t}py").unwrap(),
        300,
        "aborts: {aborted:?}"
    );
    rust_check_and_set(&[srv.url(), srv.url()], "{t}rsc", 150);
    assert_eq!(c.get::<_, i64>("{t}rsc").unwrap(), 300);
}

/// `key` read through `srv` once it is `want`, or what it last read after 2 s: a node's copy
/// may lag the last `EXEC` through another node by the coherence bound (docs/semantics.md
/// G2); a lost update stays lost however long one waits.
fn settled_count(srv: &Server, key: &str, want: i64) -> i64 {
    let mut c = srv.redis();
    let started = std::time::Instant::now();
    loop {
        let got: i64 = c.get(key).unwrap();
        if got == want || started.elapsed() > std::time::Duration::from_secs(2) {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn client_transactions_lose_no_update_across_a_cluster() {
    let (nodes, _dirs) = three_nodes("");
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let aborted = python_check_and_set(&ports, "{t}py", 100);
    for n in &nodes {
        assert_eq!(
            settled_count(n, "{t}py", 300),
            300,
            "every node reads every update (aborts: {aborted:?})"
        );
    }
    assert!(
        aborted.iter().sum::<u64>() > 0,
        "the clients raced: {aborted:?}"
    );
    // Two clients on every node, twice: a node's copy could go back to an older value for
    // a moment (a read's promotion racing a newer write); a client that watched the newer
    // version and then read the older value computed from it, and EXEC ran — 1 to 4 of 600
    // updates lost in about half of such runs, before a watching client's GET answered no
    // older than its WATCH read.
    for round in 0..2 {
        let key = format!("{{t}}py6-{round}");
        let six: Vec<u16> = ports.iter().chain(&ports).copied().collect();
        let aborted = python_check_and_set(&six, &key, 100);
        for n in &nodes {
            assert_eq!(
                settled_count(n, &key, 600),
                600,
                "{key}: an update was lost (aborts: {aborted:?})"
            );
        }
    }
    let urls: Vec<String> = nodes.iter().map(Server::url).collect();
    rust_check_and_set(&urls, "{t}rsc", 100);
    assert_eq!(settled_count(&nodes[2], "{t}rsc", 300), 300);

    // A key watched through node 1 and written through node 2 aborts node 1's EXEC.
    let (mut c1, mut c2) = (nodes[0].redis(), nodes[1].redis());
    let _: () = redis::cmd("WATCH").arg("{t}w").query(&mut c1).unwrap();
    let _: () = c2.set("{t}w", "from node 2").unwrap();
    let _: () = redis::cmd("MULTI").query(&mut c1).unwrap();
    let _: () = redis::cmd("SET")
        .arg("{t}w")
        .arg("from node 1")
        .query(&mut c1)
        .unwrap();
    let r: redis::Value = redis::cmd("EXEC").query(&mut c1).unwrap();
    assert_eq!(r, redis::Value::Nil, "EXEC aborted");
    assert_eq!(c1.get::<_, String>("{t}w").unwrap(), "from node 2");

    // A key watched in another database than the transaction's cannot be compared at its
    // primary: refused, nothing written (node 1's copy could be behind node 2's write).
    let _: () = redis::cmd("WATCH").arg("{t}w").query(&mut c1).unwrap();
    let _: () = c2.set("{t}w", "again from node 2").unwrap();
    let _: () = redis::cmd("SELECT").arg(1).query(&mut c1).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut c1).unwrap();
    let _: () = redis::cmd("SET")
        .arg("{t}x")
        .arg("1")
        .query(&mut c1)
        .unwrap();
    let e = redis::cmd("EXEC")
        .query::<redis::Value>(&mut c1)
        .unwrap_err();
    assert_eq!(e.code(), Some("EXECABORT"), "{e}");
    assert!(e.to_string().contains("another database"), "{e}");
    assert_eq!(c1.get::<_, Option<String>>("{t}x").unwrap(), None);
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c1).unwrap();

    // Keys of different hash tags: CROSSSLOT, and nothing of the transaction is written.
    let _: () = redis::cmd("MULTI").query(&mut c1).unwrap();
    let _: () = redis::cmd("SET").arg("x1").arg("1").query(&mut c1).unwrap();
    let _: () = redis::cmd("SET").arg("x2").arg("2").query(&mut c1).unwrap();
    let e = redis::cmd("EXEC")
        .query::<redis::Value>(&mut c1)
        .unwrap_err();
    assert!(e.to_string().contains("don't hash to the same slot"), "{e}");
    assert_eq!(c2.get::<_, Option<String>>("x1").unwrap(), None);

    // A transaction larger than one cluster frame (16 MiB by default), or whose replies
    // would be, is refused whole before anything applies, never half done.
    let mb = vec![b'v'; 1 << 20];
    for i in 0..20 {
        let _: () = c1.set(format!("{{t}}big{i}"), &mb[..]).unwrap();
    }
    let _: () = redis::cmd("MULTI").query(&mut c1).unwrap();
    let _: () = redis::cmd("SET")
        .arg("{t}marker")
        .arg("1")
        .query(&mut c1)
        .unwrap();
    let keys: Vec<String> = (0..20).map(|i| format!("{{t}}big{i}")).collect();
    let _: () = redis::cmd("MGET").arg(&keys).query(&mut c1).unwrap();
    let e = redis::cmd("EXEC")
        .query::<redis::Value>(&mut c1)
        .unwrap_err();
    assert!(e.to_string().contains("more than one cluster frame"), "{e}");
    assert_eq!(c2.get::<_, Option<String>>("{t}marker").unwrap(), None);
    let _: () = redis::cmd("MULTI").query(&mut c1).unwrap();
    for i in 0..20 {
        let _: () = redis::cmd("SET")
            .arg(format!("{{t}}new{i}"))
            .arg(&mb[..])
            .query(&mut c1)
            .unwrap();
    }
    let e = redis::cmd("EXEC")
        .query::<redis::Value>(&mut c1)
        .unwrap_err();
    assert!(e.to_string().contains("more than one cluster frame"), "{e}");
    assert_eq!(c2.exists::<_, i64>("{t}new0").unwrap(), 0);
    // Nor one whose changes would not fit (one byte appended to each large value: a small
    // request and small replies), since they go to each owner in one frame.
    let _: () = redis::cmd("MULTI").query(&mut c1).unwrap();
    for k in &keys {
        let _: () = redis::cmd("APPEND").arg(k).arg("x").query(&mut c1).unwrap();
    }
    let e = redis::cmd("EXEC")
        .query::<redis::Value>(&mut c1)
        .unwrap_err();
    assert!(e.to_string().contains("more than one cluster frame"), "{e}");
    for c in [&mut c1, &mut c2] {
        assert_eq!(c.strlen::<_, usize>("{t}big0").unwrap(), 1 << 20);
        assert_eq!(c.strlen::<_, usize>("{t}big19").unwrap(), 1 << 20);
    }
}

/// A careless or hostile client: commands queued without end are bounded by
/// `server.max_request_bytes` (EXECABORT after), WATCH by a count, and errors inside EXEC
/// come back in place while the other commands apply.
#[test]
fn queued_commands_are_bounded_and_errors_stay_in_place() {
    let srv = Server::start("[server]\nmax_request_bytes = 20000000\n");
    let mut c = srv.redis();
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let big = vec![b'x'; 1 << 20];
    let mut refused = 0;
    for i in 0..30 {
        match redis::cmd("SET")
            .arg(format!("big{i}"))
            .arg(&big[..])
            .query::<String>(&mut c)
        {
            Ok(q) => assert_eq!(q, "QUEUED"),
            Err(e) => {
                assert!(e.to_string().contains("max_request_bytes"), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused >= 10, "refused {refused}");
    let e = redis::cmd("EXEC")
        .query::<redis::Value>(&mut c)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("Transaction discarded because of previous errors"),
        "{e}"
    );
    assert_eq!(c.exists::<_, i64>("big0").unwrap(), 0, "nothing of it ran");

    // Many reads of one large value: the replies are bounded (256 MiB), not held per step.
    let _: () = c.set("mb", vec![b'x'; 1 << 20]).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: () = c.set("touched", "1").unwrap();
    for _ in 0..400 {
        let _: () = redis::cmd("GET").arg("mb").query(&mut c).unwrap();
    }
    let e = redis::cmd("EXEC")
        .query::<redis::Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("would exceed"), "{e}");
    assert_eq!(c.exists::<_, i64>("touched").unwrap(), 0, "nothing applied");

    // Work is bounded too: each SETBIT of an 8 MiB value copies it; 200 would be 1.6 GiB.
    let _: () = c.set("bits", vec![0u8; 8 << 20]).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    for i in 0..200 {
        let _: () = redis::cmd("SETBIT")
            .arg("bits")
            .arg(i)
            .arg(1)
            .query(&mut c)
            .unwrap();
    }
    let e = redis::cmd("EXEC")
        .query::<redis::Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("values gone through"), "{e}");
    assert_eq!(
        redis::cmd("GETBIT")
            .arg("bits")
            .arg(0)
            .query::<i64>(&mut c)
            .unwrap(),
        0
    );

    let keys: Vec<String> = (0..10_001).map(|i| format!("w{i}")).collect();
    let e = redis::cmd("WATCH")
        .arg(&keys)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("at most 10000"), "{e}");
    let _: () = redis::cmd("UNWATCH").query(&mut c).unwrap();

    let _: () = c.set("n", "abc").unwrap();
    let mut raw = srv.raw();
    for cmd in [
        &[&b"MULTI"[..]][..],
        &[b"SET", b"m", b"1"],
        &[b"INCR", b"n"],
        &[b"INCR", b"m"],
    ] {
        raw.cmd(cmd);
    }
    match raw.cmd(&[b"EXEC"]) {
        Frame::Array(r) => {
            assert_eq!(r[0], Frame::Simple("OK".into()));
            assert!(
                matches!(&r[1], Frame::Error(e) if e.starts_with(b"ERR value is not an integer")),
                "{r:?}"
            );
            assert_eq!(r[2], Frame::Integer(2));
        }
        other => panic!("{other:?}"),
    }
    // Refused inside MULTI: commands that would change the namespace under the queue.
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    assert!(redis::cmd("FLUSHALL").query::<()>(&mut c).is_err());
    assert!(
        redis::cmd("EXEC")
            .query::<redis::Value>(&mut c)
            .unwrap_err()
            .to_string()
            .contains("Transaction discarded because of previous errors")
    );
    assert_eq!(c.get::<_, i64>("m").unwrap(), 2);
}

/// A transaction whose later write L1 cannot hold (an L1-only server: the value is larger
/// than one L1 shard) applies nothing, not its first writes.
#[test]
fn a_transaction_is_not_left_half_applied_by_a_refused_write() {
    let srv = Server::start_l1_only("");
    let mut c = srv.redis();
    let _: () = c.set("c", "old").unwrap();
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: () = redis::cmd("SET").arg("a").arg("1").query(&mut c).unwrap();
    let _: () = redis::cmd("SET")
        .arg("b")
        .arg(vec![b'x'; 8 << 20])
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("DEL").arg("c").query(&mut c).unwrap();
    let e = redis::cmd("EXEC")
        .query::<redis::Value>(&mut c)
        .unwrap_err();
    assert!(e.to_string().contains("above the limit"), "{e}");
    assert_eq!(c.get::<_, Option<String>>("a").unwrap(), None);
    assert_eq!(c.get::<_, String>("c").unwrap(), "old");
}
