//! An L2 hit through the Redis bridge against a bare redis-rs `GET` on the same Redis, in one
//! run: `RedisTier::get` (GET, decode, expiry check, breaker bookkeeping) and `Cache::get`
//! with no L1 (the whole manager path down to the bridge), each beside a bare
//! `MultiplexedConnection` GET of the same key. Values of 100 B and 4 KiB; one request at a
//! time, so each figure is a round-trip latency.
//!
//! The bench starts its own `redis-server` on a free loopback port and kills it at the end.
//! After the criterion groups it prints p50/p99 of 20,000 sequential hits of each.
//!
//! Run: `scripts/bench-bridge.sh` (prints the ratios docs/benchmarks.md records).

#![allow(missing_docs)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion};
use strata_core::{Cache, Clock, Entry, SystemClock, Tier, Version};
use strata_redis::{BridgeConfig, RedisTier};

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
        .expect("free port");
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

fn main() {
    let (_server, port) = start_redis();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let tier = rt
        .block_on(RedisTier::connect(
            BridgeConfig::standalone(format!("127.0.0.1:{port}")),
            clock.clone(),
        ))
        .expect("bridge");
    let cache = Cache::builder()
        .clock(clock)
        .l2(Arc::new(tier.clone()))
        .build()
        .expect("cache");
    let mut bare = rt
        .block_on(
            redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .expect("client")
                .get_multiplexed_async_connection(),
        )
        .expect("bare connection");

    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    let mut rows = Vec::new();
    let samples = if std::env::args().any(|a| a == "--bench") {
        20_000
    } else {
        100
    };
    for size in [100usize, 4096] {
        let key = Bytes::from(format!("key-{size}"));
        let value = Bytes::from(vec![7u8; size]);
        rt.block_on(tier.set(
            "bench",
            key.clone(),
            Entry::new(value.clone(), Version::from_u64(1)),
        ))
        .expect("set");
        let full = format!("strata:bench:key-{size}");
        let mut g = c.benchmark_group(format!("redis_l2_hit_{size}b"));
        g.bench_function(BenchmarkId::from_parameter("bare_redis_rs_get"), |b| {
            b.iter(|| {
                let v: Option<Vec<u8>> = rt
                    .block_on(redis::cmd("GET").arg(&full).query_async(&mut bare))
                    .expect("get");
                assert!(v.is_some());
            })
        });
        g.bench_function(BenchmarkId::from_parameter("strata_bridge_get"), |b| {
            b.iter(|| {
                let e = rt.block_on(tier.get("bench", &key)).expect("get");
                assert!(e.is_some());
            })
        });
        g.bench_function(BenchmarkId::from_parameter("strata_cache_get_l2"), |b| {
            b.iter(|| {
                let v = rt.block_on(cache.get("bench", &key)).expect("get");
                assert!(v.is_some());
            })
        });
        g.finish();

        // Percentiles of sequential hits, interleaved so drift hits all three alike (a
        // hundred only, under `cargo test`, which runs benches once as a smoke test).
        let (mut s_bare, mut s_tier, mut s_cache) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..samples {
            let t = Instant::now();
            let _: Option<Vec<u8>> = rt
                .block_on(redis::cmd("GET").arg(&full).query_async(&mut bare))
                .expect("get");
            s_bare.push(t.elapsed());
            let t = Instant::now();
            let _ = rt.block_on(tier.get("bench", &key)).expect("get");
            s_tier.push(t.elapsed());
            let t = Instant::now();
            let _ = rt.block_on(cache.get("bench", &key)).expect("get");
            s_cache.push(t.elapsed());
        }
        rows.push((
            size,
            percentiles(s_bare),
            percentiles(s_tier),
            percentiles(s_cache),
        ));
    }
    println!("\nsequential L2 hits, {samples} each (p50 / p99, µs):");
    for (size, bare, tier, cache) in rows {
        println!(
            "  {size:>5} B  bare redis-rs {:.1} / {:.1}   bridge {:.1} / {:.1} ({:.2}x / {:.2}x)   Cache::get {:.1} / {:.1} ({:.2}x / {:.2}x)",
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
    c.final_summary();
}
