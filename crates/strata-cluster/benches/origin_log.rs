//! The cost an origin pays per invalidation it makes (`Coherence::originate`: a sequence
//! number, a tombstone, the repair log with its hot-key markers, the encoded broadcast),
//! beside its anchor in one run: the same invalidation cloned into a plain bounded
//! `VecDeque` of `log_capacity` whole items and encoded, the least any origin keeping a
//! log for repairs pays.
//!
//! Two workloads: one hot key written over and over (a counter's primary under `INCR`: the
//! log keeps markers) and 1 Mi distinct keys in turn (no marker). The clock moves 1 ms per
//! 25 invalidations (25,000 a second, the hot counter's rate measured under load), and a
//! `tick` runs every millisecond, so tombstones expire as on a node.
//!
//! Run: `cargo bench -p strata-cluster --bench origin_log`; docs/benchmarks.md records the
//! figures.

#![allow(missing_docs)]

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use strata_cluster::coherence::Item;
use strata_cluster::{Coherence, CoherenceConfig, Invalidation, InvalidationOp};

const PER_MS: u64 = 25;

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("user:{i:08}").into_bytes())
        .collect()
}

fn origin_log(c: &mut Criterion) {
    let mut g = c.benchmark_group("originate");
    for (name, n) in [("hot_key", 1usize), ("distinct_keys", 1 << 20)] {
        let ks = keys(n);
        g.bench_function(format!("strata/{name}"), |b| {
            let mut co = Coherence::new("node-1", 1, CoherenceConfig::default());
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                let now = i / PER_MS;
                if i % PER_MS == 0 {
                    black_box(co.tick(now));
                }
                let op = InvalidationOp::Key {
                    namespace: "default".into(),
                    key: ks[i as usize % n].clone(),
                };
                black_box(co.originate(now, i, op))
            });
        });
        g.bench_function(format!("anchor_bounded_log/{name}"), |b| {
            let cap = CoherenceConfig::default().log_capacity;
            let mut log: VecDeque<Invalidation> = VecDeque::with_capacity(cap);
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                let inv = Invalidation {
                    origin: "node-1".into(),
                    generation: 1,
                    seq: i,
                    version: i,
                    op: InvalidationOp::Key {
                        namespace: "default".into(),
                        key: ks[i as usize % n].clone(),
                    },
                };
                if log.len() >= cap {
                    log.pop_front();
                }
                log.push_back(inv.clone());
                black_box(Item::Invalidation(inv).encode())
            });
        });
    }
    g.finish();
}

criterion_group!(benches, origin_log);
criterion_main!(benches);
