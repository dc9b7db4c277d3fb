//! Real `strata serve` processes forming a cluster on loopback (UDP gossip, TCP peer RPC),
//! driven with redis-rs: reads and writes across nodes, how fast an invalidation reaches
//! every node, `kill -9` under load, a restart that must not resurrect, a fourth node
//! joining, a node with the wrong secret, and remembered absences (negative caching).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Commands;
use strata_tests::{
    Server, cluster_json, converge, free_port, metric_or_zero, nodes_joined, pipeline_set,
    scan_all, start_node, three_nodes, three_nodes_with_env, view, wait_for,
};

/// Per key, the writes acknowledged to the client: (counter, when).
type Acked = Arc<Mutex<HashMap<u64, Vec<(u64, Instant)>>>>;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn three_nodes_share_keys_and_an_invalidation_reaches_every_node_within_the_bound() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let g: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let n1 = start_node(dirs[0].path(), "n1", g[0], &[g[0]], "");
    let n2 = start_node(dirs[1].path(), "n2", g[1], &[g[0]], "");
    let n3 = start_node(dirs[2].path(), "n3", g[2], &[g[0]], "");
    let took = converge(
        &[&n1, &n2, &n3],
        &["n1", "n2", "n3"],
        Duration::from_secs(20),
    );
    println!("3 nodes converged {took:?} after the last started");

    let (mut c1, mut c2, mut c3) = (n1.redis(), n2.redis(), n3.redis());
    for i in 0..100 {
        let _: () = c1.set(format!("k{i}"), format!("v{i}")).unwrap();
    }
    for c in [&mut c2, &mut c3] {
        for i in 0..100 {
            let v: Option<String> = c.get(format!("k{i}")).unwrap();
            assert_eq!(v.as_deref(), Some(format!("v{i}").as_str()));
        }
    }
    let owned: u64 = [&n1, &n2, &n3]
        .iter()
        .map(|s| cluster_json(s)["owned_entries"].as_u64().unwrap())
        .sum();
    assert_eq!(owned, 200, "two owners per key");

    // Invalidation propagation: nodes 1 and 2 hold copies; a DEL on node 3; how long until
    // neither returns the old value? Bounded by about 1.5 s (docs/semantics.md).
    let mut lags = Vec::new();
    for round in 0..40 {
        let key = format!("k{round}");
        let _: Option<String> = c1.get(&key).unwrap();
        let _: Option<String> = c2.get(&key).unwrap();
        let start = Instant::now();
        let _: () = c3.del(&key).unwrap();
        let mut gone = [false, false];
        while !(gone[0] && gone[1]) {
            for (i, c) in [&mut c1, &mut c2].into_iter().enumerate() {
                if !gone[i] {
                    let v: Option<String> = c.get(&key).unwrap();
                    gone[i] = v.is_none();
                }
            }
            // The worst case is 1.5 s plus a round trip, when a gossip packet is lost
            // (docs/semantics.md); the median is held to the 50 ms target below.
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "round {round}: an old value was served past the 2 s bound"
            );
        }
        lags.push(start.elapsed());
    }
    lags.sort();
    let (p50, p99) = (percentile(&lags, 0.5), percentile(&lags, 0.99));
    println!("invalidation propagation over 40 DELs: p50 {p50:?}, p99 {p99:?}");
    // The 50 ms target is for p99 on a quiet machine (docs/benchmarks.md); this test shares
    // two cores with other tests, so it holds the median to it.
    assert!(
        p50 < Duration::from_millis(50),
        "p50 {p50:?} over the 50 ms target"
    );

    // A node without the secret: its announcements are dropped and counted, and nobody
    // lists it.
    let dir4 = tempfile::tempdir().unwrap();
    let g4 = free_port();
    let intruder = Server::start_with_env(
        dir4.path(),
        &format!(
            "[node]\nname = \"intruder\"\n[cluster]\nenabled = true\n\
             gossip_listen = \"127.0.0.1:{g4}\"\nrpc_listen = \"127.0.0.1:{}\"\nseeds = [\"127.0.0.1:{}\"]\n",
            free_port(),
            g[0]
        ),
        &[(
            "STRATA__CLUSTER__SECRET",
            "the wrong secret, also 32 bytes.",
        )],
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(view(&intruder).0, vec!["intruder".to_string()]);
    for s in [&n1, &n2, &n3] {
        assert!(!view(s).0.contains(&"intruder".to_string()));
    }
    assert!(
        wait_for(
            Duration::from_secs(10),
            || cluster_json(&n1)["rejected_packets"].as_u64().unwrap() > 0
        )
        .is_some(),
        "the intruder's packets are counted"
    );
    // `strata top --cluster`: a line for each member, read from its own admin port.
    let out = std::process::Command::new(strata_tests::strata_bin())
        .args(["top", "--cluster", "--admin", &n1.admin(), "--count", "1"])
        .args(["--interval-ms", "200"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for n in [&n1, &n2, &n3] {
        let l = text
            .lines()
            .find(|l| l.starts_with(&n.admin()))
            .unwrap_or_else(|| panic!("no line for {}: {text}", n.admin()));
        assert!(l.trim_end().ends_with(" 3"), "each sees three members: {l}");
    }
    // `strata cluster` shows the same document.
    let out = std::process::Command::new(strata_tests::strata_bin())
        .args(["cluster", "--admin", &n1.admin()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ring_version") && text.contains("rtt_us"),
        "{text}"
    );
    drop(intruder);
}

#[test]
fn a_killed_node_loses_nothing_a_restart_resurrects_nothing_and_a_fourth_node_joins() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let g: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let n1 = start_node(dirs[0].path(), "n1", g[0], &[g[0]], "");
    let n2 = start_node(dirs[1].path(), "n2", g[1], &[g[0]], "");
    let mut n3 = start_node(dirs[2].path(), "n3", g[2], &[g[0]], "");
    converge(
        &[&n1, &n2, &n3],
        &["n1", "n2", "n3"],
        Duration::from_secs(20),
    );

    const KEYS: u64 = 200;
    let mut c1 = n1.redis();
    for i in 0..KEYS {
        let _: () = c1.set(format!("k{i}"), "0").unwrap();
    }
    // Node 3 reads everything, so its L1 and L3 hold copies of every key.
    let mut c3 = n3.redis();
    for i in 0..KEYS {
        let _: Option<String> = c3.get(format!("k{i}")).unwrap();
    }

    // Bounded load for 6 s: one writer on node 1 bumping keys' counters, readers on
    // nodes 1 and 2 checking that no read returns a value older than a write acknowledged
    // more than the staleness bound before the read started.
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (errors, reads, stale, misses) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    // A write in flight to its primary when the primary dies has an unknown outcome: the
    // client gets TRYAGAIN (as from a Redis Cluster master that dies under a request).
    let indeterminate = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (acked, stop, errors, url) = (acked.clone(), stop.clone(), errors.clone(), n1.url());
        let indeterminate = indeterminate.clone();
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                // Keys 100..200 only: node 3's copies of 0..100 stay until it dies.
                let key = 100 + seq % (KEYS - 100);
                match c.set::<_, _, ()>(format!("k{key}"), seq.to_string()) {
                    Ok(()) => acked
                        .lock()
                        .unwrap()
                        .entry(key)
                        .or_default()
                        .push((seq, Instant::now())),
                    Err(e) if e.to_string().contains("may or may not have happened") => {
                        indeterminate.lock().unwrap().push(e.to_string());
                    }
                    Err(e) => {
                        eprintln!("write error at {:?}: {e}", std::time::SystemTime::now());
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let readers: Vec<_> = [n1.url(), n2.url()]
        .into_iter()
        .map(|url| {
            let (acked, stop, errors, reads, stale, misses) = (
                acked.clone(),
                stop.clone(),
                errors.clone(),
                reads.clone(),
                stale.clone(),
                misses.clone(),
            );
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i = (i + 7) % KEYS;
                    let started = Instant::now();
                    match c.get::<_, Option<String>>(format!("k{i}")) {
                        Ok(Some(v)) => {
                            reads.fetch_add(1, Ordering::Relaxed);
                            let got: u64 = v.parse().unwrap();
                            let newest_old_enough = acked
                                .lock()
                                .unwrap()
                                .get(&i)
                                .and_then(|w| {
                                    w.iter()
                                        .filter(|(_, at)| *at + Duration::from_secs(2) < started)
                                        .map(|(s, _)| *s)
                                        .max()
                                })
                                .unwrap_or(0);
                            if got < newest_old_enough {
                                stale.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(None) => {
                            misses.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(1));
    eprintln!("killing n3 at {:?}", std::time::SystemTime::now());
    n3.child.as_mut().unwrap().kill().unwrap(); // SIGKILL
    n3.child.take().unwrap().wait().unwrap();
    let detected = converge(&[&n1, &n2], &["n1", "n2"], Duration::from_secs(20));
    println!("n3 killed: the others marked it down {detected:?} after the kill");
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    let (reads, stale, misses, errors) = (
        reads.load(Ordering::Relaxed),
        stale.load(Ordering::Relaxed),
        misses.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    );
    println!(
        "load through the kill: {reads} hits, {misses} misses, {stale} stale, {errors} errors"
    );
    assert_eq!(
        stale, 0,
        "a read returned a value older than the bound allows"
    );
    if errors > 0 {
        for l in n1
            .log()
            .lines()
            .filter(|l| l.contains("member") || l.contains("ring"))
        {
            eprintln!("n1: {l}");
        }
    }
    assert_eq!(errors, 0, "clients saw errors");
    let indeterminate = indeterminate.lock().unwrap().clone();
    assert!(
        indeterminate.len() <= 2,
        "only the writes in flight at the kill may have an unknown outcome: {indeterminate:?}"
    );
    assert!(reads > 500, "the load ran ({reads} hits)");
    assert_eq!(misses, 0, "every key has a surviving owner");

    // While n3 is down: delete some keys and overwrite others.
    let mut c2 = n2.redis();
    for i in 0..50 {
        let _: () = c2.del(format!("k{i}")).unwrap();
    }
    for i in 50..100 {
        let _: () = c2.set(format!("k{i}"), "after").unwrap();
    }
    // n3 comes back on its old data directory (its L3 held copies of every key).
    n3 = start_node(dirs[2].path(), "n3", g[2], &[g[0]], "");
    converge(
        &[&n1, &n2, &n3],
        &["n1", "n2", "n3"],
        Duration::from_secs(20),
    );
    let mut c3 = n3.redis();
    for i in 0..50 {
        let v: Option<String> = c3.get(format!("k{i}")).unwrap();
        assert_eq!(
            v, None,
            "k{i} was deleted while n3 was down; n3 resurrected it"
        );
    }
    for i in 50..100 {
        let v: Option<String> = c3.get(format!("k{i}")).unwrap();
        assert_eq!(v.as_deref(), Some("after"), "k{i}");
    }

    // A fourth node: ownership moves; reads during and right after the move still hit
    // (hand-off reads and pushes), measured as the miss rate.
    let n4 = start_node(dirs[3].path(), "n4", g[3], &[g[0]], "");
    let joined = Instant::now();
    converge(
        &[&n1, &n2, &n3, &n4],
        &["n1", "n2", "n3", "n4"],
        Duration::from_secs(20),
    );
    let mut c4 = n4.redis();
    let (mut hits, mut missed) = (0, 0);
    for i in 50..KEYS {
        let v: Option<String> = c4.get(format!("k{i}")).unwrap();
        if v.is_some() {
            hits += 1;
        } else {
            missed += 1;
        }
    }
    let moved = cluster_json(&n4)["owned_entries"].as_u64().unwrap();
    println!(
        "4th node: converged {:?} after start; {hits} hits / {missed} misses on its first reads; it owns {moved} entries",
        joined.elapsed()
    );
    assert!(
        missed * 100 <= (hits + missed) * 2,
        "miss rate during the move over 2 %: {missed} of {}",
        hits + missed
    );
    assert!(moved > 0, "the new node took ownership of some keys");
}

#[test]
fn a_restarted_member_serves_its_previous_working_set_from_l3_and_nothing_stale() {
    const KEYS: u64 = 10_000;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let g: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let n1 = start_node(dirs[0].path(), "n1", g[0], &[g[0]], "");
    let n2 = start_node(dirs[1].path(), "n2", g[1], &[g[0]], "");
    let mut n3 = start_node(dirs[2].path(), "n3", g[2], &[g[0]], "");
    let all = ["n1", "n2", "n3"];
    converge(&[&n1, &n2, &n3], &all, Duration::from_secs(20));
    let mut c1 = n1.redis();
    pipeline_set(&mut c1, 0..KEYS, Some("v0"));
    // Node 3 reads everything: its L1 and L3 hold the working set.
    let mut c3 = n3.redis();
    let mut p = redis::pipe();
    for i in 0..KEYS {
        p.get(format!("w{i}"));
    }
    let got: Vec<Option<String>> = p.query(&mut c3).unwrap();
    assert!(got.iter().all(|v| v.as_deref() == Some("v0")));

    for (round, crash) in [(1u64, false), (2, true)] {
        // Each round changes its own slice of keys: 0..500 of the round's thousand are
        // deleted and 500..1000 overwritten while n3 is down, and 100 more of each while
        // it rejoins.
        let base = round * 1000;
        if crash {
            n3.kill9();
        } else {
            assert!(n3.terminate().success());
        }
        converge(&[&n1, &n2], &["n1", "n2"], Duration::from_secs(20));
        let mut c2 = n2.redis();
        pipeline_set(&mut c2, base..base + 500, None);
        pipeline_set(&mut c2, base + 500..base + 1000, Some("new"));
        let started = Instant::now();
        n3 = start_node(dirs[2].path(), "n3", g[2], &[g[0]], "");
        let serving_from_start = started.elapsed();
        // During the rejoin, from another node.
        let during = {
            let url = n1.url();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                for i in 0..100 {
                    std::thread::sleep(Duration::from_millis(10));
                    let _: () = c.del(format!("w{}", base + 5000 + i)).unwrap();
                    let _: () = c.set(format!("w{}", base + 5100 + i), "new").unwrap();
                }
            })
        };
        converge(&[&n1, &n2, &n3], &all, Duration::from_secs(20));
        during.join().unwrap();
        // L3 back on n3's read path: the proof ran.
        let proven = wait_for(Duration::from_secs(20), || {
            metric_or_zero(&n3, "strata_cluster_warm_kept_total")
                + metric_or_zero(&n3, "strata_cluster_warm_dropped_total")
                > 0.0
        });
        assert!(
            proven.is_some(),
            "n3 never finished proving its L3: {}",
            n3.log()
                .lines()
                .filter(|l| l.contains("L3") || l.contains("coherence state"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let kept = metric_or_zero(&n3, "strata_cluster_warm_kept_total");
        let dropped = metric_or_zero(&n3, "strata_cluster_warm_dropped_total");
        let calls = metric_or_zero(&n3, "strata_cluster_warm_calls_total");
        let l3_before = metric_or_zero(&n3, "strata_cache_hits_total{layer=\"l3\"}");
        let remote_before = metric_or_zero(&n3, "strata_cluster_remote_reads_total");
        let mut c3 = n3.redis();
        let mut p = redis::pipe();
        for i in 0..KEYS {
            p.get(format!("w{i}"));
        }
        let got: Vec<Option<String>> = p.query(&mut c3).unwrap();
        let changed = |i: u64| -> Option<Option<&str>> {
            // Every round's changes (earlier rounds' too) stand.
            for r in 1..=round {
                let b = r * 1000;
                if (b..b + 500).contains(&i) || (b + 5000..b + 5100).contains(&i) {
                    return Some(None);
                }
                if (b + 500..b + 1000).contains(&i) || (b + 5100..b + 5200).contains(&i) {
                    return Some(Some("new"));
                }
            }
            None
        };
        let mut untouched = 0u64;
        for (i, v) in (0..KEYS).zip(&got) {
            match changed(i) {
                Some(want) => assert_eq!(v.as_deref(), want, "w{i} after restart {round}"),
                None => {
                    untouched += 1;
                    assert_eq!(v.as_deref(), Some("v0"), "w{i} after restart {round}");
                }
            }
        }
        let l3_hits = metric_or_zero(&n3, "strata_cache_hits_total{layer=\"l3\"}") - l3_before;
        let remote = metric_or_zero(&n3, "strata_cluster_remote_reads_total") - remote_before;
        println!(
            "restart {round} ({}): serving after {serving_from_start:?}, L3 proven in {proven:?} \
             after the rejoin: {kept} kept, {dropped} dropped in {calls} calls; first read of \
             the working set: {l3_hits} L3 hits of {untouched} untouched keys, {remote} owner reads \
             for {KEYS} keys",
            if crash { "kill -9" } else { "SIGTERM" }
        );
        assert!(
            l3_hits >= 0.9 * untouched as f64,
            "only {l3_hits} of {untouched} untouched keys came from L3"
        );
        // Owner traffic the restart caused: the proof's calls, and owner reads beyond the
        // changed keys (which any node must read from their owners). A cold start reads
        // every key from its owners.
        let changed_keys = (KEYS - untouched) as f64;
        let caused = calls + (remote - changed_keys).max(0.0);
        println!(
            "restart {round}: owner traffic caused by the restart {caused} vs {KEYS} for a cold start"
        );
        assert!(
            caused <= 0.1 * KEYS as f64,
            "{caused} owner calls caused by the restart: a miss storm"
        );
    }
}

/// A GET that misses asks the key's owners once per `cluster.negative_ttl_ms` (500 ms), not
/// once per GET; the absence never outlives a write of the key: through the same node at
/// once, through another within the TTL.
/// A plain client on any node lists the whole cluster's keys, as it would on one Redis:
/// before, `KEYS`, `SCAN` and `RANDOMKEY` listed only what that node held (a full `SCAN`
/// through one node saw 763–812 of 1000 keys, and a key set on another node was missing from
/// an empty database's `RANDOMKEY`), so `redis-cli --scan | xargs redis-cli DEL` left keys
/// behind.
#[test]
fn every_node_lists_every_key_of_the_cluster_once() {
    let (mut nodes, _dirs) = three_nodes("");
    let mut c: Vec<redis::Connection> = nodes.iter().map(Server::redis).collect();
    let mut want: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    for (i, k) in want.iter().enumerate() {
        let _: () = c[i % 3].set(k, i).unwrap();
    }
    want.sort();
    for (n, c) in c.iter_mut().enumerate() {
        let mut keys: Vec<String> = c.keys("k*").unwrap();
        keys.sort();
        assert_eq!(keys, want, "node {n}: KEYS");
        assert_eq!(scan_all(c, "k*", 17), want, "node {n}: SCAN");
        let size: u64 = redis::cmd("DBSIZE").query(c).unwrap();
        assert_eq!(size, 300, "node {n}: DBSIZE");
    }

    // One key, written on one node, in an otherwise empty database: every node finds it.
    let _: () = redis::cmd("SELECT").arg(5).query(&mut c[0]).unwrap();
    let _: () = c[0].set("only", "1").unwrap();
    for (n, c) in c.iter_mut().enumerate().skip(1) {
        let _: () = redis::cmd("SELECT").arg(5).query(c).unwrap();
        let k: Option<String> = redis::cmd("RANDOMKEY").query(c).unwrap();
        assert_eq!(k.as_deref(), Some("only"), "node {n}: RANDOMKEY");
        let keys: Vec<String> = c.keys("*").unwrap();
        assert_eq!(keys, ["only"], "node {n}: KEYS");
        assert_eq!(scan_all(c, "*", 10), ["only"], "node {n}: SCAN");
        let size: u64 = redis::cmd("DBSIZE").query(c).unwrap();
        assert_eq!(size, 1, "node {n}: DBSIZE");
        let _: () = redis::cmd("SELECT").arg(0).query(c).unwrap();
    }
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c[0]).unwrap();

    // Past 10,000 keys DBSIZE reads counters: every member's, each key counted once.
    let mut p = redis::pipe();
    for i in 0..12_000 {
        p.set(format!("w{i}"), i).ignore();
    }
    let _: () = p.query(&mut c[1]).unwrap();
    for (n, c) in c.iter_mut().enumerate() {
        // Each member's keys come in many pages now.
        let keys: Vec<String> = c.keys("*").unwrap();
        assert_eq!(keys.len(), 12_300, "node {n}: KEYS over pages");
        let size: u64 = redis::cmd("DBSIZE").query(c).unwrap();
        assert!(
            (12_300 - 120..=12_300 + 120).contains(&size),
            "node {n}: DBSIZE {size}, 12,300 keys"
        );
    }

    // A member killed: the keys it owned have another owner, and the listing waits for no
    // dead member.
    nodes[2].kill9();
    let started = Instant::now();
    for (n, c) in c.iter_mut().enumerate().take(2) {
        assert_eq!(scan_all(c, "k*", 50), want, "node {n} with n3 down: SCAN");
        let mut keys: Vec<String> = c.keys("k*").unwrap();
        keys.sort();
        assert_eq!(keys, want, "node {n} with n3 down: KEYS");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "listings with a member down took {took:?}"
    );
}

/// `DBSIZE` past 10,000 keys, where it reads counters: the whole cluster's on a plain
/// listener, each node's slots' on the cluster listeners, and with a member stopped. Without
/// L3, whose count on each node covered for it, a node's own count is what it owns (about
/// two thirds of the keys with three members and two owners a key: 13,000 of 20,000, past
/// the 10,000 below which the count is an exact listing).
#[test]
fn dbsize_counts_the_whole_cluster_past_ten_thousand_keys() {
    let (nodes, _dirs) = three_nodes_with_env(
        "[server]\ncluster_listen = \"127.0.0.1:0\"\n",
        &[("STRATA__L3__ENABLED", "false")],
    );
    let mut c: Vec<redis::Connection> = nodes.iter().map(Server::redis).collect();
    let mut p = redis::pipe();
    for i in 0..20_000 {
        p.set(format!("w{i}"), i).ignore();
    }
    let _: () = p.query(&mut c[1]).unwrap();
    for (n, c) in c.iter_mut().enumerate() {
        let size: u64 = redis::cmd("DBSIZE").query(c).unwrap();
        assert!(
            (20_000 - 200..=20_000 + 200).contains(&size),
            "node {n}: DBSIZE {size} of 20,000 keys"
        );
    }
    // On the cluster listeners, each node counts its own slots: together, every key once
    // (the estimate scaled this node's own count by a sample of the whole cluster's keys:
    // about two thirds of the true total, a review).
    let served: u64 = nodes
        .iter()
        .map(|n| {
            let mut c =
                redis::Client::open(format!("redis://127.0.0.1:{}", n.cluster_port.unwrap()))
                    .unwrap()
                    .get_connection()
                    .unwrap();
            redis::cmd("DBSIZE").query::<u64>(&mut c).unwrap()
        })
        .sum();
    assert!(
        (20_000 * 9 / 10..=20_000 * 11 / 10).contains(&served),
        "the cluster listeners count {served} of 20,000 keys"
    );

    // A member stopped (SIGSTOP) and not yet declared down: DBSIZE takes it to hold what
    // the others hold (it read a third less), and listings wait one RPC timeout for it,
    // then leave it out for a while — not one timeout per page: a full SCAN of 40 pages
    // took about 5 s (until failure detection), each page waiting 500 ms.
    nodes[2].signal("-STOP");
    let size: u64 = redis::cmd("DBSIZE").query(&mut c[0]).unwrap();
    let started = Instant::now();
    let keys: Vec<String> = c[0].keys("w*").unwrap();
    let scanned = scan_all(&mut c[0], "*", 500);
    let listed_in = started.elapsed();
    nodes[2].signal("-CONT");
    assert!(
        (20_000 * 3 / 4..=20_000 * 5 / 4).contains(&size),
        "DBSIZE {size} of 20,000 keys with a member stopped"
    );
    assert_eq!(keys.len(), 20_000, "KEYS with a member stopped");
    let distinct: std::collections::HashSet<&String> = scanned.iter().collect();
    assert_eq!(
        (scanned.len(), distinct.len()),
        (20_000, 20_000),
        "a full SCAN with a member stopped"
    );
    assert!(
        listed_in < Duration::from_millis(2_500),
        "KEYS and a 40-page SCAN took {listed_in:?} with a member stopped"
    );
}

#[test]
fn a_missing_key_is_asked_of_its_owners_once_and_its_creation_ends_the_absence() {
    let (nodes, _dirs) = three_nodes("");
    let (remote, absent) = (
        "strata_cluster_remote_reads_total",
        "strata_cluster_absent_hits_total",
    );
    let mut c: Vec<redis::Connection> = nodes.iter().map(Server::redis).collect();

    // 300 GETs of 20 missing keys on node 1: at most a few rounds of asking per key.
    let (r0, a0) = (
        metric_or_zero(&nodes[0], remote),
        metric_or_zero(&nodes[0], absent),
    );
    let started = Instant::now();
    for i in 0..300 {
        let v: Option<String> = c[0].get(format!("none:{}", i % 20)).unwrap();
        assert_eq!(v, None);
    }
    let rounds = 1 + started.elapsed().as_millis() as u64 / 500;
    let asked = metric_or_zero(&nodes[0], remote) - r0;
    let answered = metric_or_zero(&nodes[0], absent) - a0;
    assert!(
        asked <= (20 * 2 * rounds) as f64,
        "{asked} owner reads for 300 GETs of 20 keys in {rounds} TTL rounds"
    );
    assert!(
        answered >= 300.0 - (20 * rounds) as f64,
        "{answered} from memory"
    );

    // Created through the same node: seen at once, for SET, INCR, SETNX, APPEND and MSET
    // alike (node 1's L1 holds what it wrote; its cluster tier forgets the absence too).
    for (i, cmd) in ["SET", "INCR", "SETNX", "APPEND", "MSET"]
        .iter()
        .enumerate()
    {
        let key = format!("none:{i}");
        let v: Option<String> = c[0].get(&key).unwrap();
        assert_eq!(v, None, "{key} is remembered absent");
        let mut q = redis::cmd(cmd);
        q.arg(&key);
        if *cmd != "INCR" {
            q.arg("1");
        }
        let _: redis::Value = q.query(&mut c[0]).unwrap();
        let v: Option<String> = c[0].get(&key).unwrap();
        assert_eq!(
            v.as_deref(),
            Some("1"),
            "{cmd} {key}, then GET on the same node"
        );
    }

    // A key given twice to MSET: the last value stays, on every node, whichever node took
    // it (its writes raced to the primary, which kept the first in 27 of 60 tries).
    for (n, via) in [0usize, 1, 2, 0, 1, 2].into_iter().enumerate() {
        let key = format!("twice:{n}");
        let _: () = redis::cmd("MSET")
            .arg(&key)
            .arg("1")
            .arg(format!("other:{n}"))
            .arg("x")
            .arg(&key)
            .arg("2")
            .arg(&key)
            .arg("3")
            .query(&mut c[via])
            .unwrap();
        for (i, conn) in c.iter_mut().enumerate() {
            let last = wait_for(Duration::from_secs(2), || {
                conn.get::<_, Option<String>>(&key).unwrap().as_deref() == Some("3")
            });
            assert!(
                last.is_some(),
                "MSET through node {via}: node {i} reads {key} as {:?}, not the last value",
                conn.get::<_, Option<String>>(&key).unwrap()
            );
        }
    }

    // Created through another node: node 1 sees it within the TTL (500 ms, at most
    // max_staleness_ms) whatever becomes of the invalidation, and at once when it arrives.
    // The keys are ones node 1 does not own, so that only the invalidation can end the
    // absence before its TTL.
    let unowned = keys_not_owned_by(&nodes[0], "later", 10);
    let mut waits = Vec::new();
    for (i, key) in unowned.iter().enumerate() {
        let key = key.as_str();
        let v: Option<String> = c[0].get(key).unwrap();
        assert_eq!(v, None);
        // Every other key was deleted first (its earlier absence and a DEL's invalidation
        // must not keep it absent either).
        if i % 2 == 1 {
            let _: () = c[2].del(key).unwrap();
            let _: Option<String> = c[0].get(key).unwrap();
        }
        let _: () = c[1 + i % 2].set(key, "here").unwrap();
        let written = Instant::now();
        let seen = wait_for(Duration::from_secs(3), || {
            c[0].get::<_, Option<String>>(key).unwrap().as_deref() == Some("here")
        });
        let seen = seen.unwrap_or_else(|| panic!("{key} never seen on node 1"));
        assert!(
            seen < Duration::from_millis(1_000),
            "{key} seen {seen:?} after its SET ({:?})",
            written.elapsed()
        );
        waits.push(seen);
    }
    waits.sort();
    println!("created on another node, seen on node 1 after {waits:?}");
    // The invalidation ended most absences, not their TTL (which would leave ~500 ms each).
    assert!(waits[5] < Duration::from_millis(200), "{waits:?}");
}

/// `n` keys `prefix:i` whose slots `node` neither is primary nor replica of (by its
/// `CLUSTER SLOTS`, which lists each member's RESP port when it has no cluster listener).
fn keys_not_owned_by(node: &Server, prefix: &str, n: usize) -> Vec<String> {
    use strata_resp::Frame;
    let mut raw = strata_tests::Raw::connect(node.port);
    let Frame::Array(runs) = raw.cmd(&[b"CLUSTER", b"SLOTS"]) else {
        panic!("CLUSTER SLOTS is not an array");
    };
    let mut owned = vec![false; 16384];
    for run in &runs {
        let Frame::Array(run) = run else { panic!() };
        let (Frame::Integer(first), Frame::Integer(last)) = (&run[0], &run[1]) else {
            panic!()
        };
        let mine = run[2..].iter().any(|n| match n {
            Frame::Array(n) => n[1] == Frame::Integer(i64::from(node.port)),
            _ => false,
        });
        for slot in *first..=*last {
            owned[slot as usize] |= mine;
        }
    }
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .filter(|k| {
            let Frame::Integer(slot) = raw.cmd(&[b"CLUSTER", b"KEYSLOT", k.as_bytes()]) else {
                panic!()
            };
            !owned[slot as usize]
        })
        .take(n)
        .collect()
}

/// After a member dies, each surviving owner of its keys hands its copy to the key's new
/// owner — every copy, in batches, not the first 10,000 one call at a time — so that the
/// next failure loses nothing. (A membership review's run with `kill -9` lost 1,904
/// acknowledged `SET`s when a second member died 18 s after the first: the survivors held
/// ~20,000 keys each and had pushed 10,000.)
#[test]
fn after_a_member_is_killed_every_key_is_on_two_members_again() {
    let (mut nodes, _dirs) = three_nodes("");
    const N: u64 = 40_000;
    let mut c = nodes[0].redis();
    for from in (0..N).step_by(1_000) {
        pipeline_set(&mut c, from..from + 1_000, Some("v"));
    }
    let held = |n: &Server| metric_or_zero(n, "strata_cluster_owned_entries") as u64;
    // Two owners per key among three members: each holds about two thirds.
    for n in &nodes {
        let h = held(n);
        assert!(h > N / 2 && h < N, "{h} of {N} keys held before the kill");
    }
    nodes[2].kill9();
    converge(
        &[&nodes[0], &nodes[1]],
        &["n1", "n2"],
        Duration::from_secs(20),
    );
    // With two members left, both own every key.
    let whole = wait_for(Duration::from_secs(20), || {
        // Two metrics scrapes per check, ten checks a second at most.
        std::thread::sleep(Duration::from_millis(100));
        nodes[..2].iter().all(|n| held(n) >= N)
    });
    assert!(
        whole.is_some(),
        "keys held by the survivors 20 s after they saw the death: {} and {} of {N} \
         (hand-off pushes: {} and {})",
        held(&nodes[0]),
        held(&nodes[1]),
        metric_or_zero(&nodes[0], "strata_cluster_handoff_pushes_total"),
        metric_or_zero(&nodes[1], "strata_cluster_handoff_pushes_total"),
    );
    // And every key reads back through either.
    for n in &nodes[..2] {
        let mut c = n.redis();
        for from in (0..N).step_by(5_000) {
            let keys: Vec<String> = (from..from + 5_000).map(|i| format!("w{i}")).collect();
            let got: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
            let missing = got.iter().filter(|v| v.is_none()).count();
            assert_eq!(missing, 0, "{missing} of keys w{from}.. missing");
        }
    }
}

/// A member `kill -9`ed and restarted at once, at its address, comes back before the
/// others declare it down (foca replaces its old life): the ring does not change, so no
/// ring change hands its keys back, and its owner store is empty. The others now hand
/// it every key it owns as if it had just joined; so when the key's other owner is
/// restarted the same way next, nothing is lost. (Before, a review run with two such
/// restarts, `scripts/membership-review` `fast_restart`, lost 1,420 acknowledged `SET`s:
/// the keys both restarted members owned.)
#[test]
fn members_restarted_faster_than_failure_detection_lose_nothing() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let g: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let names = ["n1", "n2", "n3"];
    let mut nodes: Vec<Server> = (0..3)
        .map(|i| start_node(dirs[i].path(), names[i], g[i], &[g[0]], ""))
        .collect();
    converge(
        &nodes.iter().collect::<Vec<_>>(),
        &names,
        Duration::from_secs(20),
    );
    const KEYS: u64 = 600;
    let mut c1 = nodes[0].redis();
    for i in 0..KEYS {
        let _: () = c1.set(format!("k{i}"), format!("v{i}")).unwrap();
    }
    // n3, then n2, killed and restarted at once (its data directory kept), each time the
    // cluster given the time a restarted member takes to settle and prove what it holds.
    for i in [2, 1] {
        nodes[i].kill9();
        nodes[i] = start_node(dirs[i].path(), names[i], g[i], &[g[0]], "");
        converge(
            &nodes.iter().collect::<Vec<_>>(),
            &names,
            Duration::from_secs(20),
        );
        std::thread::sleep(Duration::from_secs(6));
    }
    let mut c1 = nodes[0].redis();
    let mut missing = Vec::new();
    for i in 0..KEYS {
        let got: Option<String> = c1.get(format!("k{i}")).unwrap();
        if got.as_deref() != Some(format!("v{i}").as_str()) {
            missing.push((i, got));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {KEYS} acknowledged SETs lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Two members of four stopped by `SIGTERM` at the same instant (a deployment scaled
/// down) never come back: the keys only they owned must reach the two that stay before
/// they exit. The members that stay hand over only what they hold, so each leaver pushes
/// its keys to their owners on the ring without itself and without every member it finds
/// leaving too. (Before, a membership review lost 672 of 5,000 keys in 2 of 3 runs, and a
/// counter both leavers owned restarted from 0: two acknowledged `INCR`s answered alike.)
#[test]
fn two_members_stopped_together_hand_over_every_key_they_held() {
    let (mut nodes, _dirs, _) = nodes_joined(4, "", &[]);
    const KEYS: u64 = 5_000;
    const COUNTERS: u64 = 200;
    let mut c1 = nodes[0].redis();
    for from in (0..KEYS).step_by(1_000) {
        pipeline_set(&mut c1, from..from + 1_000, Some("v"));
    }
    for i in 0..COUNTERS {
        for _ in 0..3 {
            let _: i64 = c1.incr(format!("ctr{i}"), 1).unwrap();
        }
    }
    // About a sixth of the keys are owned by n3 and n4 only.
    let held_by_leavers = metric_or_zero(&nodes[2], "strata_cluster_owned_entries")
        + metric_or_zero(&nodes[3], "strata_cluster_owned_entries");
    assert!(held_by_leavers > 0.0);
    Server::signal_all(&[&nodes[2], &nodes[3]], "-TERM");
    for n in &mut nodes[2..] {
        assert!(n.wait_stopped().success());
    }
    converge(
        &[&nodes[0], &nodes[1]],
        &["n1", "n2"],
        Duration::from_secs(20),
    );
    for n in &nodes[..2] {
        let mut c = n.redis();
        let mut missing = 0;
        for from in (0..KEYS).step_by(1_000) {
            let keys: Vec<String> = (from..from + 1_000).map(|i| format!("w{i}")).collect();
            let got: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
            missing += got.iter().filter(|v| v.is_none()).count();
        }
        assert_eq!(
            missing, 0,
            "{missing} of {KEYS} keys lost when n3 and n4 left together"
        );
    }
    // Every counter goes on from 3: none restarts, so no two INCRs answer alike.
    let mut c2 = nodes[1].redis();
    let restarted: Vec<(u64, i64)> = (0..COUNTERS)
        .map(|i| (i, c2.incr(format!("ctr{i}"), 1).unwrap()))
        .filter(|&(_, v)| v != 4)
        .collect();
    assert!(
        restarted.is_empty(),
        "{} of {COUNTERS} counters did not go on from 3 (counter, INCR answer): {:?}",
        restarted.len(),
        &restarted[..restarted.len().min(8)]
    );
}

/// `/health` of a cluster member whose view holds no majority of `cluster.expected_size`
/// (3 here). A member seeded only with itself next to a running cluster stayed alone for
/// good: it answered every `GET` with nil, refused every write, and called itself ready,
/// so a load balancer sent it clients (a review, 2026-12-05). It is not ready (503, the L2
/// layer saying why) until a majority is in its view, and ready from then on.
#[test]
fn a_member_without_a_majority_of_the_cluster_is_not_ready() {
    let health = |srv: &Server| strata_tests::admin_get(srv, "/health");
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let g: Vec<u16> = (0..2).map(|_| free_port()).collect();
    // Seeded with itself only: alone.
    let n1 = start_node(dirs[0].path(), "n1", g[0], &[g[0]], "");
    std::thread::sleep(Duration::from_millis(500));
    let (code, body) = health(&n1);
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("sees 1 of the cluster's 3 members"),
        "the reason is given: {body}"
    );
    // A second member makes a majority of three: both ready.
    let n2 = start_node(dirs[1].path(), "n2", g[1], &[g[0]], "");
    converge(&[&n1, &n2], &["n1", "n2"], Duration::from_secs(20));
    for n in [&n1, &n2] {
        let ready = wait_for(Duration::from_secs(10), || health(n).0 == 200);
        assert!(ready.is_some(), "{:?}", health(n));
    }
}

/// A member started with another `cluster.vnodes` places every key differently: it joined
/// silently, writes through it failed with `TRYAGAIN … is not the primary`, and nothing
/// said why (a review, 2026-12-05). Members now tell each other their ring parameters when
/// they connect: the odd member is not ready and says why, the others stay ready and name
/// it, and each logs the difference as an error.
#[test]
fn a_member_with_other_ring_parameters_is_named_and_not_ready() {
    let (nodes, _dirs, g) = nodes_joined(3, "", &[]);
    let dir = tempfile::tempdir().unwrap();
    let odd = start_node(dir.path(), "n4", free_port(), &[g[0]], "vnodes = 64");
    let health = |srv: &Server| strata_tests::admin_get(srv, "/health");
    let told = wait_for(Duration::from_secs(20), || {
        let (code, body) = health(&odd);
        code == 503 && body.contains("place keys differently")
    });
    assert!(told.is_some(), "n4: {:?}", health(&odd));
    let (_, body) = health(&odd);
    assert!(
        body.contains("vnodes 128") && body.contains("this member: vnodes 64"),
        "{body}"
    );
    let named = wait_for(Duration::from_secs(20), || {
        let (code, body) = health(&nodes[0]);
        code == 200 && body.contains("n4 (vnodes 64, replication factor 2)")
    });
    assert!(named.is_some(), "n1: {:?}", health(&nodes[0]));
    assert!(
        odd.log().contains("must be the same on every member"),
        "the odd member logs the difference"
    );
}

/// A second process started with a member's `node.name` (its own ports and data) joined
/// a running cluster silently: both took themselves for that name's owner and primary, and
/// both served stale and deleted values for good (a review, 2026-12-05). The process
/// started first keeps the name; the second executes no write, is not ready and says why,
/// and the others name the shared name in their health. Writes through the others go on.
#[test]
fn a_second_process_with_a_members_name_stands_aside() {
    let (nodes, _dirs, g) = nodes_joined(3, "", &[]);
    let dir = tempfile::tempdir().unwrap();
    let second = start_node(dir.path(), "n2", free_port(), &[g[0]], "");
    let health = |srv: &Server| strata_tests::admin_get(srv, "/health");
    let aside = wait_for(Duration::from_secs(20), || {
        let (code, body) = health(&second);
        code == 503 && body.contains("another process named n2 runs")
    });
    assert!(aside.is_some(), "the second n2: {:?}", health(&second));
    let named = wait_for(Duration::from_secs(20), || {
        let (code, body) = health(&nodes[0]);
        code == 200 && body.contains("two processes run under the name(s) n2")
    });
    assert!(named.is_some(), "n1: {:?}", health(&nodes[0]));
    // The first n2 and the others go on: every write through n1 lands and reads back
    // through the first n2.
    let mut c1 = nodes[0].redis();
    let mut c2 = nodes[1].redis();
    for i in 0..200 {
        let _: () = c1.set(format!("dup{i}"), i).unwrap();
        let got: Option<i64> = c2.get(format!("dup{i}")).unwrap();
        assert_eq!(got, Some(i), "dup{i} read through the first n2");
    }
    // The second executes nothing as a primary: a write through it whose primary is n2
    // (in its own view, itself) is refused, not applied on a copy of its own.
    let mut cs = second.redis();
    let refused = (0..200).any(|i| {
        redis::cmd("SET")
            .arg(format!("via-second{i}"))
            .arg("x")
            .query::<()>(&mut cs)
            .is_err()
    });
    assert!(refused, "no write through the second n2 was refused");
}

/// With a member stopped (SIGSTOP): waits past failure detection (the others move its
/// keys), then, through `c`, deletes the even keys of `keys` and sets the odd ones to
/// "after". A write whose primary is the stopped member may fail ("may or may not have
/// happened") until the others move its keys: the same writes go again.
fn change_every_key_past_detection(c: &mut redis::Connection, keys: &[String]) {
    std::thread::sleep(Duration::from_secs(7));
    let mut p = redis::pipe();
    for (i, k) in keys.iter().enumerate() {
        if i % 2 == 0 {
            p.del(k).ignore();
        } else {
            p.set(k, "after").ignore();
        }
    }
    let mut tries = 0;
    while let Err(e) = p.query::<()>(c) {
        tries += 1;
        assert!(tries < 20, "the changes during the pause failed: {e}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// An embedded member (a service that runs a `strata::Node` and reads through its `Cache`)
/// paused past failure detection holds copies of keys the others changed meanwhile. Only
/// the server's commands waited at the pause gate: the service's own reads served those
/// copies from L1 the moment it resumed. Its reads now wait at the same gate.
#[test]
fn an_embedded_member_resumed_after_a_pause_reads_nothing_changed_meanwhile() {
    let (nodes, _dirs, g) = nodes_joined(2, "", &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut e = strata_tests::Embedded::start(dir.path(), "n3", free_port(), &[g[0]]);
    converge(
        &nodes.iter().collect::<Vec<_>>(),
        &["n1", "n2", "n3"],
        Duration::from_secs(20),
    );
    // Few enough requests to queue in the pipe while the process is stopped (64 KiB).
    const N: usize = 2000;
    let keys: Vec<String> = (0..N).map(|i| format!("emb:{i}")).collect();
    let mut a = nodes[0].redis();
    let mut p = redis::pipe();
    for k in &keys {
        p.set(k, "before").ignore();
    }
    let _: () = p.query(&mut a).unwrap();
    // The embedded node reads every key (and its L1 keeps them), once its view has settled.
    let read = wait_for(Duration::from_secs(20), || {
        e.get("db0", &keys)
            .iter()
            .all(|v| matches!(v, Ok(Some(v)) if v == "before"))
    });
    assert!(read.is_some(), "the embedded node never read every key");

    // A busy service: it reads every key over and over, a pause stopping it mid-loop.
    e.watch("db0", "emb:", N, 25_000);
    std::thread::sleep(Duration::from_millis(300));
    e.signal("-STOP");
    change_every_key_past_detection(&mut a, &keys);
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    let resumed = unix_ms();
    e.signal("-CONT");
    let passes = e.watched();
    let after: Vec<&(u128, String)> = passes.iter().filter(|(t, _)| *t >= resumed).collect();
    assert!(
        !after.is_empty(),
        "no pass after SIGCONT: {} before",
        passes.len()
    );
    // A deleted key that still reads, or an overwritten one that reads as before. (A nil or
    // an error is a miss, not a stale value.)
    let stale = |answers: &str| {
        answers
            .bytes()
            .enumerate()
            .filter(|(i, c)| {
                if i % 2 == 0 {
                    *c == b'b' || *c == b'a'
                } else {
                    *c == b'b'
                }
            })
            .count()
    };
    let stale_passes: Vec<(u128, usize)> = after
        .iter()
        .map(|(t, a)| (t - resumed, stale(a)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(
        stale_passes.is_empty(),
        "{} of {} read passes after SIGCONT served keys as they were before the pause (ms after SIGCONT, keys): {:?}",
        stale_passes.len(),
        after.len(),
        &stale_passes[..stale_passes.len().min(10)]
    );
    // The last pass reads every key as it is.
    let (_, last) = after[after.len() - 1];
    let wanted: String = (0..N).map(|i| if i % 2 == 0 { '.' } else { 'a' }).collect();
    assert_eq!(last, &wanted, "the last pass");
}

/// A member paused (SIGSTOP) past failure detection wakes up holding copies of keys that
/// were deleted or overwritten meanwhile. It served them (a review, 2026-12-05: every changed
/// key read back-to-back after SIGCONT was stale for the first ~0.2 s, some for 2.2 s) until
/// membership told it it had been declared down. Now the node notices its own late tick
/// before it answers anything: commands wait while it drops what it holds unverified, and
/// until the cluster counts it live again it reads the keys from their other owners and
/// keeps no copy of what it reads (the others may not tell it of later changes: a review
/// of the first version saw copies read after the drop served stale for 8 s).
#[test]
fn a_member_resumed_after_a_pause_serves_nothing_changed_meanwhile() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let (nodes, _dirs) = three_nodes("");
    let mut a = nodes[0].redis();
    let mut b = nodes[1].redis();
    const N: usize = 3000;
    const LIVE: usize = 200;
    let keys: Vec<String> = (0..N).map(|i| format!("paused:{i}")).collect();
    let live: Vec<String> = (0..LIVE).map(|i| format!("live:{i}")).collect();
    let mut p = redis::pipe();
    for k in &keys {
        p.set(k, "before").ignore();
    }
    for k in &live {
        p.set(k, 0).ignore();
    }
    let _: () = p.query(&mut a).unwrap();
    // Read through `a` so that its L1 holds every key.
    let mut p = redis::pipe();
    for k in keys.iter().chain(&live) {
        p.get(k);
    }
    let got: Vec<Option<String>> = p.query(&mut a).unwrap();
    assert!(got[..N].iter().all(|v| v.as_deref() == Some("before")));

    nodes[0].signal("-STOP");
    change_every_key_past_detection(&mut b, &keys);
    // From the resume on, b keeps writing the live keys: round r sets each to r, and
    // records when the round was acknowledged.
    let acked: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::new(Mutex::new(vec![(Instant::now(), 0)]));
    let stop = Arc::new(AtomicBool::new(false));
    nodes[0].signal("-CONT");
    let resumed = Instant::now();
    let writer = {
        let (acked, stop, live, mut b) =
            (acked.clone(), stop.clone(), live.clone(), nodes[1].redis());
        std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let mut p = redis::pipe();
                for k in &live {
                    p.set(k, round).ignore();
                }
                // A round that fails (its primary's outcome unknown while the member
                // rejoins) is not acknowledged; the next round writes every key again.
                if p.query::<()>(&mut b).is_ok() {
                    acked.lock().unwrap().push((Instant::now(), round));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // A read may lag an acknowledged write by the coherence bound, not more.
    let lag = Duration::from_millis(500);
    let mut stale_passes = Vec::new();
    let mut live_stale = Vec::new();
    let mut passes = 0;
    let mut misses = 0;
    let mut miss_passes: Vec<(Duration, usize)> = Vec::new();
    while resumed.elapsed() < Duration::from_secs(10) {
        let asked = Instant::now();
        let floor = acked
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(t, _)| *t + lag <= asked)
            .map_or(0, |(_, r)| *r);
        let mut p = redis::pipe();
        for k in keys.iter().chain(&live) {
            p.get(k);
        }
        let got: Vec<Option<String>> = match p.query(&mut a) {
            Ok(v) => v,
            Err(e) => panic!("reads through the resumed member failed: {e}"),
        };
        // Old values: a deleted key that still reads, or an overwritten one that reads as
        // before. (A nil for an overwritten key is a miss, not a stale value: counted
        // apart, and seen once in a few runs at the moment the member rejoins.)
        let stale = got[..N]
            .iter()
            .enumerate()
            .filter(|(i, v)| {
                if i % 2 == 0 {
                    v.is_some()
                } else {
                    v.is_some() && v.as_deref() != Some("after")
                }
            })
            .count();
        let missed_before = misses;
        misses += got[..N]
            .iter()
            .enumerate()
            .filter(|(i, v)| i % 2 == 1 && v.is_none())
            .count();
        // Old rounds; a nil is a miss, counted with the others.
        let behind = got[N..]
            .iter()
            .filter(|v| {
                v.as_deref()
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|r| r < floor)
            })
            .count();
        misses += got[N..].iter().filter(|v| v.is_none()).count();
        if misses > missed_before {
            miss_passes.push((resumed.elapsed(), misses - missed_before));
        }
        passes += 1;
        if passes == 1 {
            eprintln!(
                "first read pass after SIGCONT done in {:?}",
                resumed.elapsed()
            );
        }
        if stale > 0 {
            stale_passes.push((resumed.elapsed(), stale));
        }
        if behind > 0 {
            live_stale.push((resumed.elapsed(), behind, floor));
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // Misses are nils for keys that exist: seen in 5 of 14 runs (1–2 keys) at 8.1–8.3 s,
    // when the member learned it was declared down, before it stopped ignoring the others'
    // "you are down" (2026-12-06); none in 7 runs since. When they came is printed.
    eprintln!("{passes} read passes, {misses} misses of keys that exist: {miss_passes:?}");
    // The others go on as they were: the resumed member's stale self once declared them
    // down (its probes unanswered while it ignored their "you are down") and each rejoined
    // under a new identity, 5-6 s after SIGCONT (a review, 2026-12-06).
    for n in &nodes[1..] {
        assert!(
            !n.log().contains("the others declared this node down"),
            "a member that was never paused rejoined: {}",
            n.log()
                .lines()
                .filter(|l| l.contains("declared") || l.contains("member down"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        stale_passes.is_empty(),
        "after SIGCONT, {} of {passes} read passes of {N} keys served values changed during the pause: {stale_passes:?}",
        stale_passes.len()
    );
    assert!(
        live_stale.is_empty(),
        "after SIGCONT, {} of {passes} read passes served live keys more than {lag:?} behind their acknowledged writes: {:?}",
        live_stale.len(),
        &live_stale[..live_stale.len().min(20)]
    );
}
