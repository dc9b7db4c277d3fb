//! A service embedding a Strata node: it caches a slow "emission factor" lookup with
//! `get_or_load`, serves concurrent requests with one load, invalidates by key, pattern and
//! tag, shows the 24-hour licence rule refusing a longer TTL, and prints per-layer stats.
//!
//! Run: `cargo run -p strata --example embedded` (add `RUST_LOG=debug` to see the actors).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata::config::NamespaceConfig;
use strata::{CacheError, LoadOptions, Node, NodeConfig, SetOptions};

/// Stands in for the service's database: 50 ms per lookup, and it counts its calls.
#[derive(Clone, Default)]
struct FactorDatabase {
    calls: Arc<AtomicUsize>,
}

impl FactorDatabase {
    async fn lookup(&self, fuel: &str) -> Result<Bytes, std::io::Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let kg_co2_per_litre = match fuel {
            "diesel" => "2.68",
            "petrol" => "2.31",
            "lpg" => "1.51",
            other => return Err(std::io::Error::other(format!("unknown fuel {other}"))),
        };
        Ok(Bytes::from(kg_co2_per_litre))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    // The seeds' licence rule: ecoinvent factors may be cached for 24 hours at most.
    let mut config = NodeConfig::default();
    config.namespaces.insert(
        "emission_factors".into(),
        NamespaceConfig {
            default_ttl_secs: Some(3_600),
            max_ttl_secs: Some(86_400),
            l1_share: Some(0.25),
            use_l3: None,
            compression: None,
        },
    );
    let node = Node::start(config).await?;
    let cache = node.cache();
    let db = FactorDatabase::default();
    let tagged = LoadOptions {
        set: SetOptions::default().with_tags(["source:ecoinvent"]),
        stale_if_error: None,
    };

    // 1. A miss runs the loader; the next read is an L1 hit.
    let t = Instant::now();
    let v = cache
        .get_or_load("emission_factors", "fuel:diesel", tagged.clone(), || {
            db.lookup("diesel")
        })
        .await?;
    println!(
        "diesel = {} kg CO2/l (loaded in {:?})",
        String::from_utf8_lossy(&v),
        t.elapsed()
    );
    let t = Instant::now();
    cache.get("emission_factors", b"fuel:diesel").await?;
    println!("diesel again: L1 hit in {:?}", t.elapsed());
    let t = Instant::now();
    for _ in 0..100_000 {
        cache.get("emission_factors", b"fuel:diesel").await?;
    }
    println!("100000 more reads: {:?} per read", t.elapsed() / 100_000);

    // 2. 32 concurrent requests for a cold key: one database call.
    let before = db.calls.load(Ordering::SeqCst);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (cache, db, opts) = (cache.clone(), db.clone(), tagged.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load("emission_factors", "fuel:petrol", opts, || async move {
                        db.lookup("petrol").await
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    println!(
        "32 concurrent requests for petrol -> {} database call(s)",
        db.calls.load(Ordering::SeqCst) - before
    );

    // 3. A failing load reaches every waiter and is not cached.
    match cache
        .get_or_load(
            "emission_factors",
            "fuel:hydrogen",
            LoadOptions::default(),
            || db.lookup("hydrogen"),
        )
        .await
    {
        Err(CacheError::Loader(e)) => println!("hydrogen: loader error shared with callers: {e}"),
        other => println!("hydrogen: unexpected {other:?}"),
    }

    // 4. The licence rule refuses a 48-hour TTL and writes nothing.
    let refused = cache
        .set_with(
            "emission_factors",
            "fuel:lpg",
            "1.51",
            SetOptions::ttl(Duration::from_secs(172_800)),
        )
        .await;
    if let Err(e) = refused {
        println!("48 h TTL refused: {e}");
    }

    // 5. Invalidation by key, pattern and tag.
    cache
        .get_or_load("emission_factors", "fuel:lpg", tagged.clone(), || {
            db.lookup("lpg")
        })
        .await?;
    cache.invalidate("emission_factors", b"fuel:diesel").await?;
    let n = cache
        .invalidate_pattern("emission_factors", b"fuel:p*")
        .await?;
    println!("pattern fuel:p* removed {n} key(s)");
    let n = cache
        .invalidate_tag("emission_factors", b"source:ecoinvent")
        .await?;
    println!("tag source:ecoinvent removed {n} key(s)");

    // 6. Per-layer statistics.
    let s = cache.stats();
    println!(
        "stats: hits {} misses {} hit rate {:.3}; loads {} (errors {}), coalesced waits {}",
        s.hit_count, s.miss_count, s.hit_rate, s.loads, s.load_errors, s.coalesced
    );
    for l in &s.layers {
        println!(
            "  {}: hits {} misses {} sets {} errors {} latency p50 {:.2} us p99 {:.2} us ({} samples)",
            l.layer,
            l.hits,
            l.misses,
            l.sets,
            l.errors,
            l.latency.p50_us,
            l.latency.p99_us,
            l.latency.samples
        );
    }
    if let Some(l1) = s.l1 {
        println!(
            "  l1 occupancy: {} entries, {} of {} bytes",
            l1.entries, l1.resident_bytes, l1.capacity_bytes
        );
    }
    println!("health: {:?}", node.health());
    node.shutdown().await;
    Ok(())
}
