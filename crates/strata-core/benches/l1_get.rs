//! L1 hit cost, side by side with the anchors, in one run:
//! `Cache::get` (an L1 hit through the whole manager) against a bare `quick_cache` get and a
//! `moka` get on the same 100k keys, Zipf-distributed reads (s = 1.0), on one thread and on
//! two; and `get_or_load` with 64 concurrent callers against moka's coalescing `get_with`.
//!
//! Every key has its own 100-byte value buffer, as in real use (one shared buffer would make
//! every hit bump the same reference count and measure that contention instead).
//!
//! Run: `scripts/bench.sh`, which runs this and prints the ratios that `docs/benchmarks.md`
//! records.

#![allow(missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Zipf};
use strata_core::{Cache, LoadOptions, MemoryTier, MemoryTierConfig, NamespacePolicy};

const KEYS: usize = 100_000;
const READS: usize = 1 << 20;
const VALUE_BYTES: usize = 100;

fn keys() -> Vec<Bytes> {
    (0..KEYS)
        .map(|i| Bytes::from(format!("factor:{i:08}")))
        .collect()
}

/// Indices of a Zipf(1.0) read sequence over the keys, fixed by a seed.
fn zipf_reads() -> Vec<usize> {
    let zipf = Zipf::new(KEYS as f64, 1.0).expect("valid Zipf parameters");
    let mut rng = StdRng::seed_from_u64(42);
    (0..READS)
        .map(|_| zipf.sample(&mut rng) as usize - 1)
        .collect()
}

/// A value buffer of its own for `key`.
fn value_for(key: &Bytes) -> Bytes {
    let mut v = vec![7u8; VALUE_BYTES];
    v[..key.len().min(VALUE_BYTES)].copy_from_slice(&key[..key.len().min(VALUE_BYTES)]);
    Bytes::from(v)
}

/// Polls a future that completes without waiting (an L1 hit) once, with no executor.
fn ready<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an L1 hit must not wait"),
    }
}

fn strata_cache(keys: &[Bytes]) -> Cache {
    let clock: Arc<dyn strata_core::Clock> = Arc::new(strata_core::CoarseClock::new());
    let l1 = MemoryTier::new(MemoryTierConfig::with_capacity(256 << 20), clock.clone())
        .expect("valid L1 config");
    // Entries carry the default 1-hour TTL, so every hit pays for its expiry check.
    let cache = Cache::builder()
        .l1(Arc::new(l1))
        .clock(clock)
        .default_policy(NamespacePolicy::default())
        .build()
        .expect("valid cache");
    for k in keys {
        ready(cache.set("bench", k.clone(), value_for(k))).expect("set");
    }
    cache
}

fn quick(keys: &[Bytes]) -> quick_cache::sync::Cache<Bytes, Bytes> {
    let c = quick_cache::sync::Cache::new(KEYS * 2);
    for k in keys {
        c.insert(k.clone(), value_for(k));
    }
    c
}

fn moka_cache(keys: &[Bytes]) -> moka::sync::Cache<Bytes, Bytes> {
    let c = moka::sync::Cache::new((KEYS * 2) as u64);
    for k in keys {
        c.insert(k.clone(), value_for(k));
    }
    c.run_pending_tasks();
    c
}

/// Runs `iters` lookups split over `threads` threads; returns the wall time.
fn parallel(
    threads: usize,
    iters: u64,
    reads: &Arc<Vec<usize>>,
    op: Arc<dyn Fn(usize) + Send + Sync>,
) -> Duration {
    let per = iters / threads as u64;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (reads, op) = (reads.clone(), op.clone());
            s.spawn(move || {
                let first = t * (READS / threads);
                for i in (first..).take(per as usize) {
                    op(reads[i % READS]);
                }
            });
        }
    });
    start.elapsed()
}

fn l1_hit(c: &mut Criterion) {
    let keys = Arc::new(keys());
    let reads = Arc::new(zipf_reads());
    let strata = strata_cache(&keys);
    let qc = Arc::new(quick(&keys));
    let mk = Arc::new(moka_cache(&keys));

    let mut g = c.benchmark_group("l1_hit_1thread");
    let mut i = 0usize;
    g.bench_function("strata_cache_get", |b| {
        b.iter(|| {
            i = (i + 1) % READS;
            black_box(ready(strata.get("bench", &keys[reads[i]])).expect("get"))
        })
    });
    let tier = strata.l1().expect("L1 configured").clone();
    g.bench_function("strata_l1_tier_get_value", |b| {
        b.iter(|| {
            i = (i + 1) % READS;
            black_box(tier.get_value("bench", &keys[reads[i]]))
        })
    });
    g.bench_function("quick_cache_get", |b| {
        b.iter(|| {
            i = (i + 1) % READS;
            black_box(qc.get(&keys[reads[i]]))
        })
    });
    g.bench_function("moka_get", |b| {
        b.iter(|| {
            i = (i + 1) % READS;
            black_box(mk.get(&keys[reads[i]]))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("l1_hit_2threads");
    let (k1, s1) = (keys.clone(), strata.clone());
    let strata_op: Arc<dyn Fn(usize) + Send + Sync> = Arc::new(move |r| {
        black_box(ready(s1.get("bench", &k1[r])).expect("get"));
    });
    let (k2, q2) = (keys.clone(), qc.clone());
    let qc_op: Arc<dyn Fn(usize) + Send + Sync> = Arc::new(move |r| {
        black_box(q2.get(&k2[r]));
    });
    let (k3, m3) = (keys.clone(), mk.clone());
    let moka_op: Arc<dyn Fn(usize) + Send + Sync> = Arc::new(move |r| {
        black_box(m3.get(&k3[r]));
    });
    for (name, op) in [
        ("strata_cache_get", strata_op),
        ("quick_cache_get", qc_op),
        ("moka_get", moka_op),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| parallel(2, iters, &reads, op.clone()))
        });
    }
    g.finish();
}

fn get_or_load_64(c: &mut Criterion) {
    const CALLERS: usize = 64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let strata = strata_cache(&[]);
    let mk: moka::future::Cache<Bytes, Bytes> = moka::future::Cache::new(1024);
    let loads = Arc::new(AtomicUsize::new(0));
    let batches = Arc::new(AtomicUsize::new(0));
    let mut g = c.benchmark_group("get_or_load_64_callers");
    g.bench_function("strata_get_or_load", |b| {
        b.to_async(&rt).iter(|| {
            let (strata, loads) = (strata.clone(), loads.clone());
            batches.fetch_add(1, Ordering::Relaxed);
            async move {
                strata
                    .invalidate("bench", b"hot")
                    .await
                    .expect("invalidate");
                let tasks: Vec<_> = (0..CALLERS)
                    .map(|_| {
                        let (strata, loads) = (strata.clone(), loads.clone());
                        tokio::spawn(async move {
                            strata
                                .get_or_load(
                                    "bench",
                                    "hot",
                                    LoadOptions::default(),
                                    || async move {
                                        loads.fetch_add(1, Ordering::Relaxed);
                                        tokio::task::yield_now().await;
                                        Ok::<_, std::io::Error>(Bytes::from_static(b"loaded"))
                                    },
                                )
                                .await
                        })
                    })
                    .collect();
                for t in tasks {
                    black_box(t.await.expect("join").expect("load"));
                }
            }
        })
    });
    g.bench_function("moka_get_with", |b| {
        b.to_async(&rt).iter(|| {
            let mk = mk.clone();
            async move {
                mk.invalidate(&Bytes::from_static(b"hot")).await;
                let tasks: Vec<_> = (0..CALLERS)
                    .map(|_| {
                        let mk = mk.clone();
                        tokio::spawn(async move {
                            mk.get_with(Bytes::from_static(b"hot"), async {
                                tokio::task::yield_now().await;
                                Bytes::from_static(b"loaded")
                            })
                            .await
                        })
                    })
                    .collect();
                for t in tasks {
                    black_box(t.await.expect("join"));
                }
            }
        })
    });
    g.finish();
    let (runs, n) = (
        loads.load(Ordering::Relaxed),
        batches.load(Ordering::Relaxed),
    );
    eprintln!(
        "get_or_load: {runs} loader runs in {n} batches of 64 concurrent callers ({:.3} per batch)",
        runs as f64 / n.max(1) as f64
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = l1_hit, get_or_load_64
}
criterion_main!(benches);
