//! What the pause gate costs an L1 hit: `Cache::get` of keys L1 holds, on a cache without a
//! read gate (a node that is not a cluster member) and on one whose reads ask a cluster
//! member's [`PauseGate`] (ticked every 100 ms as a running member's is, so open), in one
//! run.
//!
//! Run: `cargo bench -p strata --bench l1_gate`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::Criterion;
use strata::cluster::pause::PauseGate;
use strata_core::{Cache, MemoryTier, MemoryTierConfig, NamespacePolicy};

const KEYS: usize = 10_000;

fn ready<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an L1 hit must not wait"),
    }
}

fn cache(keys: &[Bytes]) -> Cache {
    let clock: Arc<dyn strata_core::Clock> = Arc::new(strata_core::CoarseClock::new());
    let l1 = MemoryTier::new(MemoryTierConfig::with_capacity(64 << 20), clock.clone()).unwrap();
    let cache = Cache::builder()
        .l1(Arc::new(l1))
        .clock(clock)
        .default_policy(NamespacePolicy::default())
        .build()
        .unwrap();
    for k in keys {
        ready(cache.set("bench", k.clone(), Bytes::from_static(&[7u8; 100]))).unwrap();
    }
    cache
}

fn l1_gate(c: &mut Criterion) {
    let keys: Vec<Bytes> = (0..KEYS)
        .map(|i| Bytes::from(format!("key:{i:08}")))
        .collect();
    let plain = cache(&keys);
    let gated = cache(&keys);
    let gate = Arc::new(PauseGate::default());
    gate.tick();
    assert!(gated.set_read_gate(gate.clone()));
    // The cluster's tick, which keeps the gate open while the member runs.
    std::thread::spawn(move || {
        loop {
            gate.tick();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    let mut g = c.benchmark_group("l1_hit_gate");
    g.bench_function("coarse_clock_read", |b| {
        b.iter(|| black_box(coarsetime::Instant::now_without_cache_update()))
    });
    for (name, cache) in [("no_gate", &plain), ("pause_gate", &gated)] {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 7919) % KEYS;
                black_box(ready(cache.get("bench", &keys[i])).unwrap())
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    l1_gate(&mut c);
    c.final_summary();
}
