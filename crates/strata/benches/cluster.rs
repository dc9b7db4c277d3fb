//! The cluster over loopback, in one run:
//!
//! 1. **Remote L2 hit**: node A's cluster tier reading a key whose only owner is node B
//!    (one peer RPC round trip, decode, freshness and tombstone checks), and `Cache::get` on
//!    A with no L1 (the whole manager path), beside the anchor: a bare redis-rs `GET` on a
//!    `redis-server` the bench starts. Values of 100 B and 4 KiB, one request at a time.
//! 2. **Invalidation propagation**: three nodes; nodes 1 and 2 hold a copy of a key in L1,
//!    node 0 deletes it; the time until neither copy is left, over 500 rounds (p50/p99).
//!
//! Run: `scripts/bench-cluster.sh` (also runs redis-benchmark against one node of a 3-node
//! cluster and a single node, and prints the ratios docs/benchmarks.md records).

#![allow(missing_docs, clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion};
use strata::{Layer, Node, NodeConfig};
use strata_core::Tier;

const SECRET: &str = "bench secret, at least 16 bytes";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> (Server, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/test.sh installs it)");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, port)
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

fn config(name: &str, seeds: &[String], rf: u32, l1: bool) -> NodeConfig {
    let mut c = NodeConfig::for_test();
    c.node.name = name.into();
    c.l1.enabled = l1;
    c.cluster.enabled = true;
    c.cluster.secret = Some(SECRET.into());
    c.cluster.gossip_listen = "127.0.0.1:0".into();
    c.cluster.rpc_listen = "127.0.0.1:0".into();
    c.cluster.seeds = seeds.to_vec();
    c.cluster.replication_factor = rf;
    c
}

async fn cluster(n: usize, rf: u32, first_l1: bool) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let seeds: Vec<String> = nodes
            .first()
            .map(|x| x.cluster_status().unwrap().members[0].gossip.clone())
            .into_iter()
            .collect();
        let l1 = i != 0 || first_l1;
        nodes.push(
            Node::start(config(&format!("b{i}"), &seeds, rf, l1))
                .await
                .unwrap(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = nodes.iter().all(|x| {
            let s = x.cluster_status().unwrap();
            s.ring_members.len() == n
        });
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "no convergence");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes
}

fn main() {
    let (_redis, port) = start_redis();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let full = std::env::args().any(|a| a == "--bench");
    let samples = if full { 20_000 } else { 100 };
    let rounds = if full { 500 } else { 10 };

    // 1. Remote L2 hits: two nodes, one owner per key, A without L1.
    let nodes = rt.block_on(cluster(2, 1, false));
    let a = nodes[0].cache();
    let b = nodes[1].cache();
    let tier = a.tier(Layer::L2).unwrap();
    let mut bare = rt
        .block_on(
            redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .unwrap()
                .get_multiplexed_async_connection(),
        )
        .unwrap();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    let mut rows = Vec::new();
    for size in [100usize, 4096] {
        let value = Bytes::from(vec![7u8; size]);
        // A key node B owns (the ring puts it there; A never holds it).
        let key = (0..)
            .map(|i| format!("key-{size}-{i}"))
            .find(|k| {
                let st = nodes[0].cluster_status().unwrap();
                let ring = strata_cluster::Ring::new(st.ring_members.clone(), 128);
                ring.owners(k.as_bytes(), 1)[0] == "b1"
            })
            .unwrap();
        rt.block_on(b.set("bench", key.clone(), value.clone()))
            .unwrap();
        let _: () = rt
            .block_on(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(value.as_ref())
                    .query_async(&mut bare),
            )
            .unwrap();
        let mut g = c.benchmark_group(format!("remote_l2_hit_{size}b"));
        g.bench_function(BenchmarkId::from_parameter("bare_redis_rs_get"), |bch| {
            bch.iter(|| {
                let v: Option<Vec<u8>> = rt
                    .block_on(redis::cmd("GET").arg(&key).query_async(&mut bare))
                    .unwrap();
                assert!(v.is_some());
            })
        });
        g.bench_function(
            BenchmarkId::from_parameter("strata_cluster_tier_get"),
            |bch| {
                bch.iter(|| {
                    let e = rt.block_on(tier.get("bench", key.as_bytes())).unwrap();
                    assert!(e.is_some());
                })
            },
        );
        g.bench_function(BenchmarkId::from_parameter("strata_cache_get_l2"), |bch| {
            bch.iter(|| {
                let v = rt.block_on(a.get("bench", key.as_bytes())).unwrap();
                assert!(v.is_some());
            })
        });
        g.finish();
        let (mut s_bare, mut s_tier, mut s_cache) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..samples {
            let t = Instant::now();
            let _: Option<Vec<u8>> = rt
                .block_on(redis::cmd("GET").arg(&key).query_async(&mut bare))
                .unwrap();
            s_bare.push(t.elapsed());
            let t = Instant::now();
            let _ = rt.block_on(tier.get("bench", key.as_bytes())).unwrap();
            s_tier.push(t.elapsed());
            let t = Instant::now();
            let _ = rt.block_on(a.get("bench", key.as_bytes())).unwrap();
            s_cache.push(t.elapsed());
        }
        rows.push((
            size,
            percentiles(s_bare),
            percentiles(s_tier),
            percentiles(s_cache),
        ));
    }
    println!("\nsequential remote L2 hits, {samples} each (p50 / p99, µs):");
    for (size, bare, tier, cache) in rows {
        println!(
            "  {size:>5} B  redis-server GET {:.1} / {:.1}   cluster tier {:.1} / {:.1} ({:.2}x / {:.2}x)   Cache::get {:.1} / {:.1} ({:.2}x / {:.2}x)",
            bare.0,
            bare.1,
            tier.0,
            tier.1,
            tier.0 / bare.0,
            tier.1 / bare.1,
            cache.0,
            cache.1,
            cache.0 / bare.0,
            cache.1 / bare.1
        );
    }
    rt.block_on(async {
        for n in nodes {
            n.shutdown().await;
        }
    });

    // 2. Invalidation propagation across three nodes (two owners per key).
    let lags = rt.block_on(async {
        let nodes = cluster(3, 2, true).await;
        let caches: Vec<_> = nodes.iter().map(Node::cache).collect();
        let mut lags = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let key = format!("inv-{round}");
            caches[0].set("bench", key.clone(), "v").await.unwrap();
            for c in &caches[1..] {
                // The write's own invalidation may still be in flight and undo a promotion
                // that raced with it: read until the copy is in L1.
                for _ in 0..1000 {
                    assert!(c.get("bench", key.as_bytes()).await.unwrap().is_some());
                    if c.l1().unwrap().get_entry("bench", key.as_bytes()).is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                assert!(c.l1().unwrap().get_entry("bench", key.as_bytes()).is_some());
            }
            let start = Instant::now();
            caches[0].invalidate("bench", key.as_bytes()).await.unwrap();
            loop {
                let left = caches[1..]
                    .iter()
                    .any(|c| c.l1().unwrap().get_entry("bench", key.as_bytes()).is_some());
                if !left {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(2),
                    "round {round} stuck"
                );
                tokio::task::yield_now().await;
            }
            lags.push(start.elapsed());
        }
        for n in nodes {
            n.shutdown().await;
        }
        lags
    });
    let (p50, p99) = percentiles(lags);
    println!(
        "\ninvalidation propagation, 3 nodes, {rounds} deletes (until no other node holds a copy): p50 {p50:.0} µs, p99 {p99:.0} µs"
    );
    c.final_summary();
}
