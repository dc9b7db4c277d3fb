//! L3 hit latency and throughput (the L1 is absent, so every `Cache::get` is an L3 hit), for
//! 1 KiB and 64 KiB incompressible values, and L3 write throughput; then a latency pass that
//! records every operation in an HDR histogram and prints p50/p99. Also times the same read
//! done directly on the calling thread, which shows what the hop to L3's reader threads
//! costs.
//!
//! Run: `cargo bench -p strata-storage --bench l3` (or `scripts/bench.sh`).

#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use strata_core::{Cache, NamespacePolicy, SystemClock};
use strata_storage::{DiskTier, DiskTierConfig, SharedDiskTier};

const KEYS_1K: usize = 50_000;
const KEYS_64K: usize = 1_000;

fn noise(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    Bytes::from(
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>(),
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    tier: Arc<DiskTier>,
    cache: Cache,
    rt: tokio::runtime::Runtime,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = Arc::new(DiskTier::new(
        DiskTierConfig {
            path: dir.path().to_path_buf(),
            capacity_bytes: 4 << 30,
            sync_writes: false,
            write_behind: true,
            write_behind_ms: 0,
            min_free_bytes: 0,
            policies: HashMap::new(),
            default_policy: NamespacePolicy::unbounded(),
        },
        Arc::new(SystemClock),
    ));
    tier.open().expect("open L3");
    let cache = Cache::builder()
        .l3(Arc::new(SharedDiskTier(tier.clone())))
        .default_policy(NamespacePolicy::unbounded())
        .build()
        .expect("cache");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for i in 0..KEYS_1K {
            cache
                .set("k1", format!("key{i:06}"), noise(1024, i as u64))
                .await
                .expect("set");
        }
        for i in 0..KEYS_64K {
            cache
                .set("k64", format!("key{i:06}"), noise(64 * 1024, i as u64))
                .await
                .expect("set");
        }
    });
    tier.compact().expect("compact");
    Setup {
        _dir: dir,
        tier,
        cache,
        rt,
    }
}

fn key(i: u64, n: usize) -> String {
    // A fixed stride walks the keys in a scattered order.
    format!("key{:06}", (i.wrapping_mul(7919) % n as u64))
}

fn bench(c: &mut Criterion, s: &Setup) {
    for (ns, n, size) in [("k1", KEYS_1K, 1024u64), ("k64", KEYS_64K, 64 * 1024)] {
        let mut g = c.benchmark_group(format!("l3_hit_{}k", size / 1024));
        g.throughput(Throughput::Bytes(size));
        let mut i = 0u64;
        g.bench_function("cache_get_via_reader_thread", |b| {
            b.to_async(&s.rt).iter(|| {
                i += 1;
                let k = key(i, n);
                async move {
                    black_box(
                        s.cache
                            .get(ns, k.as_bytes())
                            .await
                            .expect("get")
                            .expect("hit"),
                    )
                }
            })
        });
        g.bench_function("disk_tier_read_on_calling_thread", |b| {
            b.iter(|| {
                i += 1;
                black_box(
                    s.tier
                        .read_blocking(ns, key(i, n).as_bytes())
                        .expect("get")
                        .expect("hit"),
                )
            })
        });
        g.finish();
    }
    let mut g = c.benchmark_group("l3_write_1k");
    g.throughput(Throughput::Bytes(1024));
    let value = noise(1024, 99);
    let mut i = 0u64;
    g.bench_function("cache_set", |b| {
        b.to_async(&s.rt).iter(|| {
            i += 1;
            let v = value.clone();
            async move { s.cache.set("w", format!("w{i}"), v).await.expect("set") }
        })
    });
    g.finish();
}

/// Every read's latency in a histogram: p50 and p99 through `Cache::get`.
fn percentiles(s: &Setup) {
    for (ns, n, size) in [("k1", KEYS_1K, 1024), ("k64", KEYS_64K, 64 * 1024)] {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)
            .expect("histogram");
        let ops = 20_000u64;
        let start = Instant::now();
        s.rt.block_on(async {
            for i in 0..ops {
                let k = key(i, n);
                let t = Instant::now();
                black_box(
                    s.cache
                        .get(ns, k.as_bytes())
                        .await
                        .expect("get")
                        .expect("hit"),
                );
                h.saturating_record(t.elapsed().as_nanos() as u64);
            }
        });
        let secs = start.elapsed().as_secs_f64();
        println!(
            "l3 hit {:>2} KiB via Cache::get: p50 {:.1} us, p99 {:.1} us, max {:.1} us, {:.0} reads/s, {:.1} MiB/s (one task)",
            size / 1024,
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.max() as f64 / 1e3,
            ops as f64 / secs,
            ops as f64 * size as f64 / secs / (1 << 20) as f64,
        );
    }
    // Concurrent readers: 16 tasks on 2 workers.
    let ops_per_task = 5_000u64;
    let start = Instant::now();
    s.rt.block_on(async {
        let tasks: Vec<_> = (0..16u64)
            .map(|t| {
                let cache = s.cache.clone();
                tokio::spawn(async move {
                    for i in 0..ops_per_task {
                        let k = key(t * ops_per_task + i, KEYS_1K);
                        black_box(cache.get("k1", k.as_bytes()).await.expect("get"));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("join");
        }
    });
    println!(
        "l3 hit  1 KiB, 16 concurrent tasks: {:.0} reads/s",
        (16 * ops_per_task) as f64 / start.elapsed().as_secs_f64()
    );
}

fn main() {
    let s = setup();
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    bench(&mut c, &s);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        percentiles(&s);
    }
}
