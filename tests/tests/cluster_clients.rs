//! Cluster-aware clients against real `strata serve` clusters: the slot map they read
//! (`CLUSTER SLOTS`/`SHARDS`/`NODES`), the redirects of the cluster listener (`MOVED`,
//! `CROSSSLOT`, `READONLY`), and real clients routing themselves with them — redis-py's
//! `RedisCluster`, redis-rs's cluster client, `redis-cli -c` and `redis-benchmark
//! --cluster` — checked by the nodes' own counters: a client that reaches each key's primary
//! makes no node forward a write. `CLUSTER KEYSLOT` and the errors are compared with a real
//! redis-server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../crates/strata-redis/tests/common/mod.rs"]
mod redis_common;

use std::process::Command;
use std::time::Duration;

use redis_common::RedisServer;
use strata_resp::Frame;
use strata_tests::*;

/// A cluster listener on a port the kernel picks.
const CLUSTER_PORT: &str = "[server]\ncluster_listen = \"127.0.0.1:0\"\n";

/// One run of `CLUSTER SLOTS`: (first, last, [(ip, port)] primary first).
type SlotRun = (i64, i64, Vec<(String, i64)>);

fn text(f: &Frame) -> String {
    match f {
        Frame::Bulk(b) | Frame::Simple(b) | Frame::Verbatim { text: b, .. } => {
            String::from_utf8_lossy(b).into_owned()
        }
        Frame::Error(e) => String::from_utf8_lossy(e).into_owned(),
        Frame::Integer(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

fn int(f: &Frame) -> i64 {
    match f {
        Frame::Integer(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

fn items(f: &Frame) -> &[Frame] {
    match f {
        Frame::Array(v) => v,
        other => panic!("not an array: {other:?}"),
    }
}

/// `CLUSTER SLOTS` read from `port`.
fn cluster_slots(port: u16) -> Vec<SlotRun> {
    let mut c = Raw::connect(port);
    let reply = c.cmd(&[b"CLUSTER", b"SLOTS"]);
    items(&reply)
        .iter()
        .map(|run| {
            let run = items(run);
            let nodes = run[2..]
                .iter()
                .map(|n| {
                    let n = items(n);
                    assert_eq!(text(&n[2]).len(), 40, "a node id of 40 hex digits");
                    (text(&n[0]), int(&n[1]))
                })
                .collect();
            (int(&run[0]), int(&run[1]), nodes)
        })
        .collect()
}

/// Each slot's primary port, from a `CLUSTER SLOTS` answer (every slot exactly once).
fn primaries(runs: &[SlotRun]) -> Vec<i64> {
    let mut out = vec![-1; 16384];
    for (first, last, nodes) in runs {
        for slot in *first..=*last {
            assert_eq!(out[slot as usize], -1, "slot {slot} listed twice");
            out[slot as usize] = nodes[0].1;
        }
    }
    assert!(out.iter().all(|p| *p > 0), "every slot has a primary");
    out
}

fn keyslot(port: u16, key: &[u8]) -> i64 {
    int(&Raw::connect(port).cmd(&[b"CLUSTER", b"KEYSLOT", key]))
}

#[test]
fn keyslot_and_cluster_errors_answer_as_redis_does() {
    let redis = RedisServer::start_with(
        None,
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    // A cluster of one (expected_size 1: it has its majority, and executes writes).
    let strata = start_node(
        dir.path(),
        "solo",
        free_port(),
        &[],
        &format!("expected_size = 1\n{CLUSTER_PORT}"),
    );
    let mut r = Raw::connect(redis.port);
    let mut s = Raw::connect(strata.port);
    // Seeded random keys, many with braces in them: tags, empty tags, nested and unclosed
    // ones, binary bytes.
    let mut rng = 0x5eed_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..2000 {
        let len = (next() % 12) as usize;
        let key: Vec<u8> = (0..len)
            .map(|_| match next() % 6 {
                0 => b'{',
                1 => b'}',
                2 => (next() % 256) as u8,
                _ => b'a' + (next() % 4) as u8,
            })
            .collect();
        let want = r.cmd(&[b"CLUSTER", b"KEYSLOT", &key]);
        assert_eq!(
            s.cmd(&[b"CLUSTER", b"KEYSLOT", &key]),
            want,
            "key #{i} {key:?}"
        );
    }
    for cmd in [
        &[&b"CLUSTER"[..], b"KEYSLOT"][..],
        &[b"CLUSTER", b"KEYSLOT", b"a", b"b"],
        &[b"CLUSTER", b"MYID", b"x"],
        &[b"CLUSTER", b"NOPE"],
        &[b"CLUSTER", b"COUNTKEYSINSLOT"],
        &[b"CLUSTER", b"COUNTKEYSINSLOT", b"x"],
        &[b"CLUSTER", b"COUNTKEYSINSLOT", b"-1"],
        &[b"CLUSTER", b"COUNTKEYSINSLOT", b"16384"],
        &[b"CLUSTER", b"GETKEYSINSLOT", b"0"],
        &[b"CLUSTER", b"GETKEYSINSLOT", b"x", b"1"],
        &[b"CLUSTER", b"GETKEYSINSLOT", b"0", b"x"],
        &[b"CLUSTER", b"GETKEYSINSLOT", b"0", b"-1"],
        &[b"CLUSTER", b"GETKEYSINSLOT", b"16384", b"1"],
    ] {
        let (want, got) = (r.cmd(cmd), s.cmd(cmd));
        assert!(matches!(want, Frame::Error(_)), "{want:?}");
        assert_eq!(got, want, "{cmd:?}");
    }
    // An empty slot, alike.
    for cmd in [
        &[&b"CLUSTER"[..], b"COUNTKEYSINSLOT", b"0"][..],
        &[b"CLUSTER", b"GETKEYSINSLOT", b"0", b"10"],
    ] {
        assert_eq!(s.cmd(cmd), r.cmd(cmd), "{cmd:?}");
    }
    // The keys of one slot this node holds: counted and listed (a Redis Cluster node with no
    // slot assigned takes no key to compare with).
    for k in [&b"{t}a"[..], b"{t}b", b"{t}c", b"other"] {
        assert_eq!(s.cmd(&[b"SET", k, b"v"]), Frame::Simple("OK".into()));
    }
    let slot = keyslot(strata.port, b"{t}").to_string();
    let count = s.cmd(&[b"CLUSTER", b"COUNTKEYSINSLOT", slot.as_bytes()]);
    assert_eq!(count, Frame::Integer(3));
    let two = s.cmd(&[b"CLUSTER", b"GETKEYSINSLOT", slot.as_bytes(), b"2"]);
    assert_eq!(items(&two).len(), 2);
    assert!(
        items(&two).iter().all(|k| text(k).starts_with("{t}")),
        "{two:?}"
    );
    // Without a cluster, both refuse the cluster commands with the same words.
    let plain_redis = RedisServer::start();
    let plain = Server::start("");
    let mut r = Raw::connect(plain_redis.port);
    let mut s = Raw::connect(plain.port);
    for cmd in [
        &[&b"CLUSTER"[..], b"SLOTS"][..],
        &[b"CLUSTER", b"KEYSLOT", b"k"],
        &[b"READONLY"],
    ] {
        let (want, got) = (r.cmd(cmd), s.cmd(cmd));
        assert!(
            err_text(&want).contains("cluster support disabled"),
            "{want:?}"
        );
        assert_eq!(got, want, "{cmd:?}");
    }
    assert!(
        text(&s.cmd(&[b"INFO", b"cluster"])).contains("cluster_enabled:0"),
        "a node outside a cluster says so"
    );
}

#[test]
fn the_cluster_listener_redirects_to_each_slots_primary() {
    let (nodes, _dirs) = three_nodes(CLUSTER_PORT);
    let cports: Vec<u16> = nodes.iter().map(|n| n.cluster_port.unwrap()).collect();
    // Every member answers the same map, on either listener, over the cluster ports.
    let runs = cluster_slots(cports[0]);
    for n in &nodes {
        assert_eq!(cluster_slots(n.port), runs);
        assert_eq!(cluster_slots(n.cluster_port.unwrap()), runs);
    }
    let primary = primaries(&runs);
    // The answer opens with a slot of each member, listed with its primary alone, so that
    // each member appears first as a primary (redis-py takes its role from there).
    for lead in &runs[..3] {
        assert_eq!((lead.0, lead.2.len()), (lead.1, 1), "{lead:?}");
    }
    let mut leads: Vec<i64> = runs[..3].iter().map(|r| r.2[0].1).collect();
    leads.sort_unstable();
    let mut all: Vec<i64> = cports.iter().map(|p| i64::from(*p)).collect();
    all.sort_unstable();
    assert_eq!(leads, all);
    for run in &runs[3..] {
        assert_eq!(run.2.len(), 2, "a primary and one replica (RF 2): {run:?}");
        assert_ne!(run.2[0], run.2[1]);
        for (ip, port) in &run.2 {
            assert_eq!(ip, "127.0.0.1");
            assert!(cports.contains(&(*port as u16)), "{port} is a cluster port");
        }
    }
    for p in &cports {
        assert!(
            primary.contains(&i64::from(*p)),
            "{p} is the primary of some slots"
        );
    }
    // CLUSTER NODES: every member a master of the slots CLUSTER SLOTS gives it; CLUSTER
    // SHARDS: the same slots, each run once.
    let nodes_text = text(&Raw::connect(cports[1]).cmd(&[b"CLUSTER", b"NODES"]));
    let mut from_nodes = vec![-1i64; 16384];
    let lines: Vec<&str> = nodes_text.lines().collect();
    assert_eq!(lines.len(), 3, "{nodes_text}");
    for line in &lines {
        let f: Vec<&str> = line.split(' ').collect();
        assert!(f[2].ends_with("master"), "{line}");
        let port: i64 = f[1]
            .split('@')
            .next()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        for range in &f[8..] {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            from_nodes[a..=b].fill(port);
        }
    }
    assert_eq!(
        from_nodes, primary,
        "CLUSTER NODES agrees with CLUSTER SLOTS"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("myself")).count(),
        1,
        "{nodes_text}"
    );
    let shards = Raw::connect(cports[2]).cmd(&[b"CLUSTER", b"SHARDS"]);
    // SHARDS: a shard per member, its master, holding the slots it is primary of.
    let mut covered = 0;
    assert_eq!(items(&shards).len(), 3);
    for shard in items(&shards) {
        let shard = items(shard);
        let nodes = items(&shard[3]);
        assert_eq!(nodes.len(), 1, "a node is in one shard only");
        let node = items(&nodes[0]);
        assert_eq!(
            (text(&node[2]), text(&node[8])),
            ("port".into(), "role".into())
        );
        assert_eq!(text(&node[9]), "master");
        let port = int(&node[3]);
        for pair in items(&shard[1]).chunks(2) {
            let (a, b) = (int(&pair[0]) as usize, int(&pair[1]) as usize);
            assert!(primary[a..=b].iter().all(|p| *p == port), "{a}-{b}");
            covered += b - a + 1;
        }
    }
    assert_eq!(covered, 16384);
    let info = text(&Raw::connect(cports[0]).cmd(&[b"CLUSTER", b"INFO"]));
    assert!(
        info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3"),
        "{info}"
    );

    // A key is served by its slot's primary and redirected by the others; the plain
    // listener serves it anywhere.
    let mut moved = 0;
    for i in 0..300 {
        let key = format!("key:{i}");
        let slot = keyslot(cports[0], key.as_bytes());
        let owner = primary[slot as usize];
        for cport in &cports {
            let mut c = Raw::connect(*cport);
            let reply = c.cmd(&[b"SET", key.as_bytes(), b"v"]);
            if i64::from(*cport) == owner {
                assert_eq!(reply, Frame::Simple("OK".into()), "{key} on its primary");
            } else {
                assert_eq!(
                    err_text(&reply),
                    format!("MOVED {slot} 127.0.0.1:{owner}"),
                    "{key} on {cport}"
                );
                moved += 1;
            }
        }
        for n in &nodes {
            let mut p = Raw::connect(n.port);
            assert_eq!(p.cmd(&[b"GET", key.as_bytes()]), Frame::bulk("v"));
        }
    }
    assert_eq!(moved, 600, "two redirects per key");
    // Keys in different slots: refused on the cluster listener, served on the plain one.
    let (a, b) = (b"key:1".as_slice(), b"key:2".as_slice());
    assert_ne!(keyslot(cports[0], a), keyslot(cports[0], b));
    let home = primary[keyslot(cports[0], a) as usize] as u16;
    let mut c = Raw::connect(home);
    assert_eq!(
        err_text(&c.cmd(&[b"MGET", a, b])),
        "CROSSSLOT Keys in request don't hash to the same slot"
    );
    assert_eq!(
        items(&Raw::connect(nodes[0].port).cmd(&[b"MGET", a, b])).len(),
        2
    );
    // A transaction with a redirected command is aborted, as on Redis Cluster.
    let other = *cports.iter().find(|p| **p != home).unwrap();
    let mut t = Raw::connect(other);
    let foreign: Vec<u8> = (0..)
        .map(|i| format!("t:{i}").into_bytes())
        .find(|k| primary[keyslot(other, k) as usize] != i64::from(other))
        .unwrap();
    assert_eq!(t.cmd(&[b"MULTI"]), Frame::Simple("OK".into()));
    assert!(err_text(&t.cmd(&[b"SET", &foreign, b"x"])).starts_with("MOVED "));
    assert!(err_text(&t.cmd(&[b"EXEC"])).starts_with("EXECABORT"));
    // MEMORY USAGE names its key after the subcommand: redirected too, by a member that
    // neither is the key's primary nor replicates it (a replica answers reads, below).
    let owns = |port: u16, slot: i64| {
        runs.iter().any(|(first, last, nodes)| {
            nodes.len() > 1
                && (*first..=*last).contains(&slot)
                && nodes.iter().any(|n| n.1 == i64::from(port))
        })
    };
    let stranger: Vec<u8> = (0..)
        .map(|i| format!("m:{i}").into_bytes())
        .find(|k| {
            let slot = keyslot(other, k);
            // (Not one of the slots listed first with their primary alone.)
            let listed_whole = runs
                .iter()
                .any(|(first, last, nodes)| nodes.len() > 1 && (*first..=*last).contains(&slot));
            listed_whole && primary[slot as usize] != i64::from(other) && !owns(other, slot)
        })
        .unwrap();
    assert!(err_text(&t.cmd(&[b"MEMORY", b"USAGE", &stranger])).starts_with("MOVED "));

    // A replica serves reads of its slots — with or without READONLY, since to a client it
    // is a master (ioredis's `scaleReads: 'slave'` never sends READONLY to it, and a MOVED
    // sent it round a loop) — never writes.
    let (slot_run, replica) = runs[3..]
        .iter()
        .map(|r| (r, r.2[1].1 as u16))
        .next()
        .unwrap();
    let key: Vec<u8> = (0..)
        .map(|i| format!("ro:{i}").into_bytes())
        .find(|k| {
            let s = keyslot(replica, k);
            s >= slot_run.0 && s <= slot_run.1
        })
        .unwrap();
    let mut w = Raw::connect(slot_run.2[0].1 as u16);
    assert_eq!(w.cmd(&[b"SET", &key, b"ro"]), Frame::Simple("OK".into()));
    let mut r = Raw::connect(replica);
    assert_eq!(r.cmd(&[b"GET", &key]), Frame::bulk("ro"));
    assert!(err_text(&r.cmd(&[b"SET", &key, b"x"])).starts_with("MOVED "));
    assert_eq!(r.cmd(&[b"READONLY"]), Frame::Simple("OK".into()));
    assert_eq!(r.cmd(&[b"GET", &key]), Frame::bulk("ro"));
    assert!(err_text(&r.cmd(&[b"SET", &key, b"x"])).starts_with("MOVED "));
    assert_eq!(r.cmd(&[b"READWRITE"]), Frame::Simple("OK".into()));
    assert_eq!(r.cmd(&[b"GET", &key]), Frame::bulk("ro"));

    // One database, as a Redis Cluster node (texts checked against redis-server
    // --cluster-enabled): a pool whose connections each ran SELECT split its keys.
    assert_eq!(r.cmd(&[b"SELECT", b"0"]), Frame::Simple("OK".into()));
    assert_eq!(
        err_text(&r.cmd(&[b"SELECT", b"1"])),
        "ERR SELECT is not allowed in cluster mode"
    );
    assert_eq!(
        err_text(&r.cmd(&[b"SELECT", b"tenant"])),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        r.cmd(&[b"GET", &key]),
        Frame::bulk("ro"),
        "still database 0"
    );
    assert_eq!(
        err_text(&w.cmd(&[b"MOVE", &key, b"1"])),
        "ERR MOVE is not allowed in cluster mode"
    );
    assert_eq!(
        err_text(&w.cmd(&[b"COPY", &key, &key, b"DB", b"1"])),
        "ERR Copying to another database is not allowed in cluster mode"
    );
    assert_eq!(w.cmd(&[b"GET", &key]), Frame::bulk("ro"));
}

/// Runs a redis-py script with the port as its argument; what it printed (it must succeed).
fn redis_py(script: &str, port: u16) -> String {
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "redis-py: {so}{se}");
    so.trim().to_owned()
}

/// The sum over the nodes of a cluster counter.
fn total(nodes: &[Server], name: &str) -> f64 {
    nodes.iter().map(|n| metric_or_zero(n, name)).sum()
}

#[test]
fn cluster_aware_clients_route_themselves_to_each_keys_primary() {
    let (nodes, _dirs) = three_nodes(CLUSTER_PORT);
    let cports: Vec<u16> = nodes.iter().map(|n| n.cluster_port.unwrap()).collect();
    let forwarded = "strata_cluster_writes_forwarded_total";
    let executed = "strata_cluster_writes_executed_total";
    let (f0, e0) = (total(&nodes, forwarded), total(&nodes, executed));

    // redis-py's RedisCluster, from one startup node: plain writes and reads, counters, a
    // pipeline, a multi-key read within a tag, and a lock.
    let py = r#"
import sys, redis
from redis.cluster import RedisCluster
r = RedisCluster(host="127.0.0.1", port=int(sys.argv[1]))
for i in range(300):
    r.set(f"py:{i}", f"v{i}")
for i in range(300):
    assert r.get(f"py:{i}") == f"v{i}".encode(), i
for i in range(200):
    r.incr(f"ctr:{i % 7}")
assert sum(int(r.get(f"ctr:{j}")) for j in range(7)) == 200
p = r.pipeline()
for i in range(100):
    p.set(f"pipe:{i}", i)
assert all(p.execute())
r.mset({"{u1}:a": "1", "{u1}:b": "2"})
assert r.mget("{u1}:a", "{u1}:b") == [b"1", b"2"]
lock = r.lock("lock:job", timeout=5)
assert lock.acquire(blocking=False)
assert not r.lock("lock:job", timeout=5).acquire(blocking=False)
lock.release()
# Listings ask every primary, and each lists the slots it is primary of: each key once.
seen = list(r.scan_iter(match="py:*", count=40))
assert len(seen) == 300 and len(set(seen)) == 300, len(seen)
primaries = r.get_primaries()
assert len(primaries) == 3, primaries
listed = [k for n in primaries for k in r.keys("py:*", target_nodes=n)]
assert sorted(listed) == sorted(seen)
assert sum(r.dbsize(target_nodes=n) for n in primaries) == 300 + 7 + 100 + 2
for n in primaries * 10:
    k = r.randomkey(target_nodes=n)
    assert r.get_node_from_key(k).name == n.name, (k, n.name)
print("ok", len(r.get_nodes()))
"#;
    assert_eq!(redis_py(py, cports[0]), "ok 3");

    // redis-rs's cluster client.
    let urls: Vec<String> = cports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}/"))
        .collect();
    let client = redis::cluster::ClusterClient::new(urls).unwrap();
    let mut c = client.get_connection().unwrap();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("rs:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    for i in 0..200 {
        let v: i64 = redis::cmd("INCR")
            .arg(format!("rs:{i}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(v, i + 1);
    }

    // redis-cli -c follows redirects from any node.
    for (i, p) in cports.iter().enumerate() {
        let port = p.to_string();
        let key = format!("cli:{i}");
        let set = Command::new("redis-cli")
            .args(["-c", "-p", &port, "SET", &key, "x"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&set.stdout).trim(), "OK");
        let get = Command::new("redis-cli")
            .args(["-c", "-p", &port, "GET", &key])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "x");
    }

    // redis-benchmark --cluster: the writes of every client go to their primaries.
    let bench = Command::new("redis-benchmark")
        .args([
            "-p",
            &cports[1].to_string(),
            "--cluster",
            "-t",
            "set,incr,get",
        ])
        .args(["-n", "3000", "-c", "6", "-r", "1000", "-q"])
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&bench.stdout),
        String::from_utf8_lossy(&bench.stderr),
    );
    assert!(bench.status.success(), "{so}{se}");
    for t in ["SET:", "INCR:", "GET:"] {
        assert!(so.contains(t), "{t} missing: {so}{se}");
    }
    assert!(!so.contains("rror") && !se.contains("rror"), "{so}{se}");

    // Every write above ran at its primary, and none was forwarded by another node.
    let executed_now = total(&nodes, executed) - e0;
    assert!(executed_now >= 600.0, "{executed_now} writes executed");
    assert_eq!(
        total(&nodes, forwarded) - f0,
        0.0,
        "a cluster-aware client's writes reached their primaries"
    );
    // The same workload through one node's plain listener forwards two thirds of them.
    let mut plain = nodes[0].redis();
    for i in 0..300 {
        let _: i64 = redis::cmd("INCR")
            .arg(format!("plain:{i}"))
            .query(&mut plain)
            .unwrap();
    }
    let now = total(&nodes, forwarded) - f0;
    assert!((120.0..=280.0).contains(&now), "{now} of 300 forwarded");
}

#[test]
fn a_cluster_client_follows_the_map_when_a_primary_dies() {
    let (mut nodes, _dirs) = three_nodes(CLUSTER_PORT);
    let cports: Vec<u16> = nodes.iter().map(|n| n.cluster_port.unwrap()).collect();
    let before = primaries(&cluster_slots(cports[0]));
    nodes[2].kill9();
    let survivors = [cports[0], cports[1]];
    // Once the others declare it down, the map names only the survivors, and every slot
    // the dead node was primary of has a new primary.
    let took = wait_for(Duration::from_secs(30), || {
        let runs = cluster_slots(cports[0]);
        runs.iter()
            .all(|r| r.2.iter().all(|(_, p)| survivors.contains(&(*p as u16))))
            && cluster_slots(cports[1]) == runs
    });
    assert!(took.is_some(), "the map never dropped the dead node");
    let after = primaries(&cluster_slots(cports[0]));
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(b, a)| b == a || *b == i64::from(cports[2])),
        "only the dead node's slots moved"
    );
    assert!(moved > 1000, "{moved} slots moved");
    // redis-py, started on a survivor, writes and reads every key.
    let py = r#"
import sys, redis
from redis.cluster import RedisCluster
r = RedisCluster(host="127.0.0.1", port=int(sys.argv[1]))
for i in range(300):
    r.set(f"after:{i}", i)
assert all(int(r.get(f"after:{i}")) == i for i in range(300))
print(len(r.get_nodes()))
"#;
    assert_eq!(redis_py(py, cports[1]), "2");

    // A second death leaves node 1 alone of three: no majority, so it serves no slot to a
    // cluster-aware client, as a Redis Cluster node on a partition's minority side.
    nodes[1].kill9();
    let down = wait_for(Duration::from_secs(30), || {
        let info = text(&Raw::connect(cports[0]).cmd(&[b"CLUSTER", b"INFO"]));
        info.contains("cluster_state:fail")
    });
    assert!(
        down.is_some(),
        "a lone member still reports cluster_state:ok"
    );
    let mut c = Raw::connect(cports[0]);
    for key in [&b"after:1"[..], b"anything"] {
        assert_eq!(
            err_text(&c.cmd(&[b"GET", key])),
            "CLUSTERDOWN The cluster is down"
        );
    }
}
