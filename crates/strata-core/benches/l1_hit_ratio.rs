//! L1's hit ratio, side by side with moka (W-TinyLFU) and a plain LRU, on the same access
//! sequences: cache-aside (a miss stores the key), 100,000 keys of 100-byte values, at
//! capacities of 1 %, 5 % and 20 % of the keys, on Zipf(0.8), Zipf(0.99), and Zipf(0.99) with
//! scans mixed in (one access in a hundred starts a run of 64 keys read once, from a space
//! of 10 million: about 40 % of the accesses). Prints one table; hit ratio is a count, not a time, so this is not a
//! criterion bench.
//!
//! Run: `cargo bench -p strata-core --bench l1_hit_ratio` (docs/benchmarks.md records it).
//! Under `cargo test` (no `--bench` argument) it runs a small version, as a smoke test.

#![allow(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use strata_core::memory::entry_weight;
use strata_core::{Entry, MemoryTier, MemoryTierConfig, SystemClock, Tags, Version};

const KEYS: u64 = 100_000;
const VALUE_BYTES: usize = 100;

/// An access sequence: key numbers (scan keys are numbered above `KEYS`).
fn sequence(s: f64, scans: bool, len: usize, seed: u64) -> Vec<u64> {
    let zipf = Zipf::new(KEYS as f64, s).expect("valid Zipf parameters");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        if scans && rng.random_range(0..100u32) == 0 {
            let start = KEYS + rng.random_range(0..10_000_000u64);
            out.extend(start..start + 64);
        } else {
            out.push(zipf.sample(&mut rng) as u64 - 1);
        }
    }
    out.truncate(len);
    out
}

fn key(n: u64) -> Bytes {
    Bytes::from(format!("key:{n:010}"))
}

/// Strata's L1 (its own eviction, weights and shards), sized to hold `entries` entries.
fn strata(seq: &[u64], entries: u64) -> f64 {
    let weight = entry_weight(key(0).len(), VALUE_BYTES, 0);
    let mut config = MemoryTierConfig::with_capacity(entries * weight);
    config.estimated_entry_bytes = weight;
    let l1 = MemoryTier::new(config, Arc::new(SystemClock)).expect("a valid L1");
    let value = Bytes::from(vec![7u8; VALUE_BYTES]);
    let mut hits = 0u64;
    for (i, n) in seq.iter().enumerate() {
        let k = key(*n);
        if l1.get_value("bench", &k).is_some() {
            hits += 1;
        } else {
            let entry = Entry {
                value: value.clone(),
                version: Version::from_u64(i as u64 + 1),
                expires_at_ms: None,
                stale_until_ms: None,
                tags: Tags::default(),
            };
            let _ = l1.set_sync("bench", k, entry);
        }
    }
    hits as f64 / seq.len() as f64
}

/// moka's W-TinyLFU, `entries` entries.
fn moka(seq: &[u64], entries: u64) -> f64 {
    let cache: moka::sync::Cache<Bytes, Bytes> = moka::sync::Cache::new(entries);
    let value = Bytes::from(vec![7u8; VALUE_BYTES]);
    let mut hits = 0u64;
    for n in seq {
        let k = key(*n);
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            cache.insert(k, value.clone());
        }
    }
    hits as f64 / seq.len() as f64
}

/// A plain LRU of `entries` entries.
fn lru(seq: &[u64], entries: u64) -> f64 {
    let mut last_use: HashMap<u64, u64> = HashMap::new();
    let mut by_age: BTreeMap<u64, u64> = BTreeMap::new();
    let mut hits = 0u64;
    for (t, n) in seq.iter().enumerate() {
        let t = t as u64;
        match last_use.insert(*n, t) {
            Some(old) => {
                hits += 1;
                by_age.remove(&old);
            }
            None if last_use.len() as u64 > entries => {
                if let Some((_, oldest)) = by_age.pop_first() {
                    last_use.remove(&oldest);
                }
            }
            None => {}
        }
        by_age.insert(t, *n);
    }
    hits as f64 / seq.len() as f64
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let len = if full { 2_000_000 } else { 20_000 };
    println!(
        "hit ratio, cache-aside, {KEYS} keys, {len} accesses; capacity in entries (% of the keys)"
    );
    println!(
        "{:<26} {:>9} {:>8} {:>8} {:>8} {:>14}",
        "workload", "capacity", "strata", "moka", "lru", "strata - moka"
    );
    for (name, s, scans) in [
        ("zipf 0.8", 0.8, false),
        ("zipf 0.99", 0.99, false),
        ("zipf 0.99 + scans", 0.99, true),
    ] {
        let seq = sequence(s, scans, len, 42);
        for pct in [1u64, 5, 20] {
            let entries = KEYS * pct / 100;
            let (a, b, c) = (
                strata(&seq, entries),
                moka(&seq, entries),
                lru(&seq, entries),
            );
            assert!((0.0..=1.0).contains(&a) && (0.0..=1.0).contains(&b));
            println!(
                "{name:<26} {:>8}% {:>8.3} {:>8.3} {:>8.3} {:>+14.3}",
                pct,
                a,
                b,
                c,
                a - b
            );
        }
    }
}
