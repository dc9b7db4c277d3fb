//! The Redis bridge against real `redis-server` processes started on loopback: the shared
//! contract suite (standalone, Redis Cluster, Sentinel), coherence between two nodes on one
//! Redis, the circuit breaker through a `kill -9` and restart, AUTH, and bad bytes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{RedisCluster, RedisSentinel, RedisServer, eventually};
use strata_core::{
    Cache, Clock, Entry, LoadOptions, MemoryTier, MemoryTierConfig, SetOptions, SystemClock, Tier,
    Version,
};
use strata_redis::{BreakerState, BridgeConfig, BridgeError, RedisTier, Topology, coherence};
use tokio::task::JoinHandle;

static PREFIX: AtomicUsize = AtomicUsize::new(0);

/// A bridge config with a prefix of its own, so each check of the suite starts empty.
fn fresh(mut cfg: BridgeConfig) -> BridgeConfig {
    cfg.key_prefix = format!("t{}", PREFIX.fetch_add(1, Ordering::Relaxed));
    cfg
}

async fn contract(cfg: BridgeConfig) {
    strata_core::testsuite::run(|clock| {
        let cfg = fresh(cfg.clone());
        async move {
            let tier = RedisTier::connect(cfg, Arc::new(clock))
                .await
                .expect("connect");
            // The suite drives expiry from a manual clock; keep Redis's own real-time expiry
            // out of its way (reads still check expiry on the manual clock).
            tier.set_expiry_slack(Duration::from_secs(60));
            tier
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_suite_on_standalone_redis() {
    let redis = RedisServer::start();
    contract(BridgeConfig::standalone(redis.address())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_suite_on_a_three_master_redis_cluster() {
    let cluster = RedisCluster::start(3);
    let cfg = BridgeConfig::with_topology(Topology::Cluster {
        nodes: cluster.addresses(),
    });
    contract(cfg.clone()).await;
    // The keys really are spread over the masters (pattern invalidation and flushes must
    // therefore scan every one of them).
    let tier = RedisTier::connect(fresh(cfg), Arc::new(SystemClock))
        .await
        .expect("connect");
    for i in 0..60 {
        tier.set(
            "ns",
            Bytes::from(format!("k{i}")),
            Entry::new(Bytes::from_static(b"v"), Version::from_u64(1)),
        )
        .await
        .expect("set");
    }
    let mine = format!("{}:ns:*", tier.config().key_prefix);
    let holding = cluster
        .nodes
        .iter()
        .filter(|n| n.cli(&["KEYS", &mine]).is_some_and(|s| !s.is_empty()))
        .count();
    assert_eq!(holding, 3, "60 keys should land on all three masters");
    tier.flush_namespace("ns").await.expect("flush");
    for n in &cluster.nodes {
        assert_eq!(
            n.cli(&["KEYS", &mine]).as_deref(),
            Some(""),
            "flush missed a master"
        );
    }

    // Coherence across the cluster: a write published by the script on whichever master owns
    // the key reaches a subscriber connected to a seed node (classic pub/sub is cluster-wide).
    let cfg = fresh(BridgeConfig::with_topology(Topology::Cluster {
        nodes: cluster.addresses(),
    }));
    let a = Node::start(cfg.clone()).await;
    let b = Node::start(cfg).await;
    // Each write is one message; B counts one only after applying it, so a round waits for
    // both of its messages before the next starts (a late count would pass for the next).
    let mut seen = b.messages();
    for i in 0..10 {
        let key = format!("c{i}");
        a.cache.set("ns", key.clone(), "old").await.unwrap();
        b.applied(seen, 1).await;
        b.cache.get("ns", key.as_bytes()).await.unwrap();
        assert!(b.l1("ns", key.as_bytes()).is_some());
        a.cache.set("ns", key.clone(), "new").await.unwrap();
        assert!(
            eventually(Duration::from_millis(500), || async {
                b.l1("ns", key.as_bytes()).is_none()
            })
            .await
            .is_some(),
            "B kept {key} after A's write on the cluster"
        );
        assert_eq!(
            b.cache.get("ns", key.as_bytes()).await.unwrap(),
            Some(Bytes::from("new"))
        );
        b.applied(seen, 2).await;
        seen += 2;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_suite_through_sentinel() {
    let sentinel = RedisSentinel::start();
    let cfg = BridgeConfig::with_topology(Topology::Sentinel {
        sentinels: vec![format!("127.0.0.1:{}", sentinel.port)],
        master_name: "mymaster".into(),
        sentinel_password: None,
    });
    contract(cfg.clone()).await;
    // A master name the sentinel does not know is a connection failure, not a panic: the
    // bridge starts with its circuit open.
    let mut wrong = cfg;
    if let Topology::Sentinel { master_name, .. } = &mut wrong.topology {
        *master_name = "nosuchmaster".into();
    }
    let tier = RedisTier::connect(wrong, Arc::new(SystemClock))
        .await
        .expect("an unknown master is not a startup error");
    assert_eq!(tier.status().breaker, BreakerState::Open);
}

/// A node: L1 in front of the bridge, with the subscriber and the maintenance loop the
/// node's actor runs.
struct Node {
    cache: Cache,
    tier: RedisTier,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    async fn start(cfg: BridgeConfig) -> Node {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let tier = RedisTier::connect(cfg, clock.clone())
            .await
            .expect("connect");
        let l1 =
            MemoryTier::new(MemoryTierConfig::with_capacity(8 << 20), clock.clone()).expect("l1");
        let cache = Cache::builder()
            .clock(clock)
            .l1(Arc::new(l1))
            .l2(Arc::new(tier.clone()))
            .build()
            .expect("cache");
        let sub = tokio::spawn(coherence::run_subscriber(tier.clone(), cache.clone()));
        let t = tier.clone();
        let maint = tokio::spawn(async move {
            loop {
                t.maintain().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let node = Node {
            cache,
            tier,
            tasks: vec![sub, maint],
        };
        if node.tier.status().breaker == BreakerState::Closed {
            let t = node.tier.clone();
            eventually(Duration::from_secs(5), || {
                let s = t.status().subscribed;
                async move { s }
            })
            .await
            .expect("subscribed");
        }
        node
    }

    /// Waits until this node has applied `n` more messages than `since`.
    async fn applied(&self, since: u64, n: u64) {
        let t = self.tier.clone();
        eventually(Duration::from_secs(2), || {
            let got = t.counters().messages.load(Ordering::Relaxed);
            async move { got >= since + n }
        })
        .await
        .expect("messages applied");
    }

    fn messages(&self) -> u64 {
        self.tier.counters().messages.load(Ordering::Relaxed)
    }

    /// What this node's L1 holds (no read-through).
    fn l1(&self, ns: &str, key: &[u8]) -> Option<Bytes> {
        self.cache.l1().and_then(|l1| l1.get_value(ns, key))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_redis_drop_stale_l1_copies() {
    let redis = RedisServer::start();
    let cfg = BridgeConfig::standalone(redis.address());
    let a = Node::start(cfg.clone()).await;
    let b = Node::start(cfg).await;
    let bound = Duration::from_millis(500);

    let seen = b.messages();
    a.cache.set("ns", "k", "v1").await.expect("set");
    b.applied(seen, 1).await;
    assert_eq!(
        b.cache.get("ns", b"k").await.unwrap(),
        Some(Bytes::from("v1"))
    );
    assert_eq!(
        b.l1("ns", b"k"),
        Some(Bytes::from("v1")),
        "promoted into B's L1"
    );

    // A write on A: B stops serving its L1 copy within the bound.
    let mut worst = Duration::ZERO;
    for round in 0..20 {
        let value = format!("v{}", round + 2);
        let start = Instant::now();
        a.cache.set("ns", "k", value.clone()).await.expect("set");
        let took = eventually(bound, || {
            let got = b.l1("ns", b"k");
            async move { got.as_deref() != Some(b"v1".as_slice()) && got.is_none() }
        })
        .await;
        let took = took.unwrap_or_else(|| panic!("B still served a stale copy after {bound:?}"));
        worst = worst.max(took.max(start.elapsed().saturating_sub(took)));
        // B reads the new value through Redis and caches it again.
        assert_eq!(
            b.cache.get("ns", b"k").await.unwrap(),
            Some(Bytes::from(value))
        );
    }
    eprintln!("worst time for B to drop its stale copy: {worst:?}");

    // Invalidations of every kind reach B's L1.
    b.cache.get("ns", b"k").await.unwrap();
    a.cache.invalidate("ns", b"k").await.expect("invalidate");
    assert!(
        eventually(bound, || async { b.l1("ns", b"k").is_none() })
            .await
            .is_some()
    );
    assert_eq!(
        b.cache.get("ns", b"k").await.unwrap(),
        None,
        "gone from Redis too"
    );

    // (Each message bumps the namespace's invalidation epoch on B, which undoes any
    // promotion in flight; wait for them so the promotions below stick.)
    let seen = b.messages();
    for k in ["user:1", "user:2", "order:1"] {
        a.cache.set("ns", k, "x").await.unwrap();
    }
    b.applied(seen, 3).await;
    for k in ["user:1", "user:2", "order:1"] {
        b.cache.get("ns", k.as_bytes()).await.unwrap();
        assert!(b.l1("ns", k.as_bytes()).is_some());
    }
    let seen = b.messages();
    a.cache.invalidate_pattern("ns", b"user:*").await.unwrap();
    assert!(
        eventually(bound, || async {
            b.l1("ns", b"user:1").is_none() && b.l1("ns", b"user:2").is_none()
        })
        .await
        .is_some()
    );
    // The copies go before the invalidation ends (its epoch bump undoes a promotion made
    // meanwhile): wait for the end, or the next copy below could be undone by it.
    b.applied(seen, 1).await;
    assert!(b.l1("ns", b"order:1").is_some(), "pattern went too far");

    let tagged = SetOptions {
        tags: strata_core::Tags::new(["t"]),
        ..SetOptions::default()
    };
    let seen = b.messages();
    a.cache.set_with("ns", "tagged", "x", tagged).await.unwrap();
    b.applied(seen, 1).await;
    b.cache.get("ns", b"tagged").await.unwrap();
    assert!(b.l1("ns", b"tagged").is_some());
    let seen = b.messages();
    a.cache.invalidate_tag("ns", b"t").await.unwrap();
    assert!(
        eventually(bound, || async { b.l1("ns", b"tagged").is_none() })
            .await
            .is_some()
    );
    b.applied(seen, 1).await;
    assert!(b.l1("ns", b"order:1").is_some(), "tag went too far");

    a.cache.flush_namespace("ns").await.unwrap();
    assert!(
        eventually(bound, || async { b.l1("ns", b"order:1").is_none() })
            .await
            .is_some()
    );

    // A node's own writes do not evict its own copy, and an older write from a node whose
    // clock lags does not replace a newer one anywhere.
    b.cache.set("ns", "mine", "b").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(b.l1("ns", b"mine"), Some(Bytes::from("b")));
    let old = Entry::new(Bytes::from_static(b"old"), Version::from_u64(1));
    assert_eq!(
        a.tier
            .set("ns", Bytes::from_static(b"mine"), old)
            .await
            .unwrap(),
        strata_core::SetOutcome::KeptNewer
    );
    assert_eq!(
        a.cache.get("ns", b"mine").await.unwrap(),
        Some(Bytes::from("b"))
    );
    assert!(a.tier.counters().messages.load(Ordering::Relaxed) > 0);
}

/// A `DEL` — a client's, or one inside `MULTI`/`EXEC` (or a script) — of a key Redis no
/// longer holds (evicted under `maxmemory`; here flushed behind the nodes' backs) is
/// published all the same: the copies nodes hold of it go, the deleting node's own too
/// (ARCHITECTURE decision 101). Both once published nothing (nothing Redis held changed),
/// and the nodes kept serving the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_of_a_key_redis_evicted_reaches_the_nodes_copies() {
    use strata_core::ops::{Exists, KeyOp, MultiOp, Reply, Transaction, Ttl, TxStep};
    const KEYS: [&[u8]; 4] = [b"plain", b"in-tx", b"getdel", b"pxat-past"];
    let redis = RedisServer::start();
    let cfg = BridgeConfig::standalone(redis.address());
    let a = Node::start(cfg.clone()).await;
    let b = Node::start(cfg).await;
    let seen = b.messages();
    for k in KEYS {
        a.cache.set("ns", k, "v").await.expect("set");
    }
    b.applied(seen, KEYS.len() as u64).await;
    for k in KEYS {
        assert_eq!(b.cache.get("ns", k).await.unwrap(), Some(Bytes::from("v")));
        assert_eq!(b.l1("ns", k), Some(Bytes::from("v")), "B holds a copy");
        assert_eq!(a.l1("ns", k), Some(Bytes::from("v")), "A holds a copy");
    }
    // Gone from Redis without a word to the nodes, as an eviction goes.
    assert_eq!(redis.cli(&["FLUSHALL"]).as_deref(), Some("OK"));
    let del = a
        .cache
        .execute("ns", Bytes::from_static(b"plain"), &KeyOp::Del)
        .await
        .unwrap();
    assert_eq!(del, Reply::Int(0), "nothing was there, as Redis answers");
    let tx = MultiOp::Transaction(Transaction {
        keys: vec![b"in-tx".to_vec().into()],
        watch: Vec::new(),
        steps: vec![TxStep::Key {
            key: 0,
            op: KeyOp::Del,
        }],
        default_ttl_ms: None,
    });
    assert_eq!(
        a.cache.execute_multi("ns", &tx).await.unwrap(),
        Reply::Exec(Some(vec![Reply::Int(0)])),
        "nothing was there to delete, as Redis answers"
    );
    let getdel = a
        .cache
        .execute("ns", Bytes::from_static(b"getdel"), &KeyOp::GetDel)
        .await
        .unwrap();
    assert_eq!(getdel, Reply::Nil, "nothing was there, as Redis answers");
    // `SET k v PXAT 1`: a write whose expiry has passed deletes the key, as in Redis.
    let past = KeyOp::Set {
        value: b"w".to_vec(),
        ttl: Ttl::AtMs(1),
        exists: Exists::Any,
        get: false,
        integer: false,
    };
    let set = a
        .cache
        .execute("ns", Bytes::from_static(b"pxat-past"), &past)
        .await
        .unwrap();
    assert_eq!(set, Reply::Ok, "as Redis answers a SET with a past PXAT");
    for k in KEYS {
        assert_eq!(a.l1("ns", k), None, "A serves a key it deleted");
        assert!(
            eventually(Duration::from_secs(2), || async { b.l1("ns", k).is_none() })
                .await
                .is_some(),
            "B still serves a deleted key"
        );
        assert_eq!(b.cache.get("ns", k).await.unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_channel_empties_l1_before_it_is_trusted_again() {
    let redis = RedisServer::start();
    let node = Node::start(BridgeConfig::standalone(redis.address())).await;
    node.cache.set("ns", "k", "v").await.unwrap();
    assert!(node.l1("ns", b"k").is_some());
    // Kill the subscriber's connection from the server side.
    redis
        .cli(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .expect("client kill");
    assert!(
        eventually(Duration::from_secs(2), || async {
            node.l1("ns", b"k").is_none()
        })
        .await
        .is_some(),
        "L1 kept a copy across a gap in the invalidation channel"
    );
    let t = node.tier.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let s = t.status().subscribed;
            async move { s }
        })
        .await
        .is_some(),
        "resubscribed"
    );
    assert!(node.tier.counters().resyncs.load(Ordering::Relaxed) >= 2);
    // Redis still has the value: reads go on.
    assert_eq!(
        node.cache.get("ns", b"k").await.unwrap(),
        Some(Bytes::from("v"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_on_kill_serves_locally_and_recovers_on_restart() {
    let mut redis = RedisServer::durable();
    let node = Arc::new(Node::start(BridgeConfig::standalone(redis.address())).await);
    let loads = Arc::new(AtomicU64::new(0));
    for i in 0..100 {
        node.cache
            .set("ns", format!("k{i}"), format!("v{i}"))
            .await
            .unwrap();
    }
    node.cache.set("ns", "changed", "before").await.unwrap();
    node.cache.set("other", "p:1", "x").await.unwrap();
    node.cache.set("other", "keep", "x").await.unwrap();

    // A bounded load of reads (through get_or_load, as a service would) and writes.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let (node, stop, errors, loads) =
            (node.clone(), stop.clone(), errors.clone(), loads.clone());
        workers.push(tokio::spawn(async move {
            let mut i = w;
            let mut ops = 0u64;
            while !stop.load(Ordering::Relaxed) && ops < 200_000 {
                let key = format!("k{}", i % 100);
                let loads = loads.clone();
                let r = node
                    .cache
                    .get_or_load("ns", key.clone(), LoadOptions::default(), || async move {
                        loads.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, std::io::Error>(Bytes::from("loaded"))
                    })
                    .await;
                if r.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                if i % 10 == 0 && node.cache.set("ns", key, "w").await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 4;
                ops += 1;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let killed = Instant::now();
    redis.kill();
    let t = node.tier.clone();
    let opened = eventually(Duration::from_secs(1), || {
        let s = t.status().breaker;
        async move { s != BreakerState::Closed }
    })
    .await
    .expect("the circuit must open within 1 s of Redis dying");
    eprintln!("circuit opened {opened:?} after kill -9");
    assert!(killed.elapsed() < Duration::from_secs(2));
    // While Redis is down: writes stay local, reads answer.
    node.cache
        .set("ns", "changed", "during")
        .await
        .expect("a write while Redis is down");
    assert_eq!(
        node.cache.get("ns", b"changed").await.unwrap(),
        Some(Bytes::from("during"))
    );
    assert!(!node.tier.health().eq(&strata_core::TierHealth::Up));
    node.cache
        .invalidate_pattern("other", b"p:*")
        .await
        .expect("an invalidation while Redis is down");
    tokio::time::sleep(Duration::from_millis(500)).await;

    redis.restart();
    let t = node.tier.clone();
    let closed = eventually(Duration::from_secs(10), || {
        let s = t.status();
        async move { s.breaker == BreakerState::Closed && s.subscribed }
    })
    .await
    .expect("the circuit must close once Redis is back");
    eprintln!("circuit closed {closed:?} after restart");
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "a caller saw an error");
    assert!(node.tier.counters().bypassed_reads.load(Ordering::Relaxed) > 0);

    // The pre-outage value Redis kept (its AOF survived the kill) was unlinked on recovery,
    // so nobody reads "before" over the newer local write.
    let mut raw = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let before: Option<Vec<u8>> = redis::cmd("GET")
        .arg("strata:ns:changed")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(before, None, "the outage-time write did not clean up Redis");
    assert!(node.tier.counters().replayed.load(Ordering::Relaxed) > 0);
    let p1: Option<Vec<u8>> = redis::cmd("GET")
        .arg("strata:other:p:1")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        p1, None,
        "the pattern invalidated during the outage was replayed"
    );
    let keep: Option<Vec<u8>> = redis::cmd("GET")
        .arg("strata:other:keep")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(keep.is_some(), "the replayed pattern went too far");

    // Writes reach Redis again.
    node.cache.set("ns", "after", "x").await.unwrap();
    let after: Option<Vec<u8>> = redis::cmd("GET")
        .arg("strata:ns:after")
        .query_async(&mut raw)
        .await
        .unwrap();
    let entry = strata_redis::codec::decode_entry(Bytes::from(after.expect("in Redis"))).unwrap();
    assert_eq!(entry.value, Bytes::from("x"));
    assert!(node.tier.counters().opened.load(Ordering::Relaxed) >= 1);
    assert!(node.tier.counters().closed.load(Ordering::Relaxed) >= 1);
}

/// A Redis restarted between two maintenance ticks leaves the bridge's command connection
/// dead, unnoticed (nothing used it meanwhile). Once the subscriber is back — health `up` —
/// commands go through, the next health PING renews the connection instead of opening the
/// circuit, and a read that finds the connection dead goes again on a new one. Before: the
/// DEL answered `Redis: broken pipe`, the PING then opened the circuit (writes `TRYAGAIN`,
/// reads missing Redis's keys for `breaker_open_ms`), all after health had said `up`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_redis_restart_costs_no_errors_once_health_is_up() {
    use strata_core::ops::{KeyOp, Reply};
    let mut redis = RedisServer::durable();
    let node = Node::start(BridgeConfig::standalone(redis.address())).await;
    for k in ["k1", "k2", "k3"] {
        node.cache.set("ns", k, "v").await.unwrap();
    }
    // No maintenance tick between the kill and the restart.
    node.tasks[1].abort();
    let counters = node.tier.counters();
    let opened = counters.opened.load(Ordering::Relaxed);
    let resyncs = counters.resyncs.load(Ordering::Relaxed);
    redis.restart();
    let t = node.tier.clone();
    eventually(Duration::from_secs(5), || {
        let back = t.counters().resyncs.load(Ordering::Relaxed) > resyncs && t.status().subscribed;
        async move { back }
    })
    .await
    .expect("subscribed again after the restart");
    assert_eq!(node.tier.health(), strata_core::TierHealth::Up);
    let del = node
        .cache
        .execute("ns", Bytes::from_static(b"k1"), &KeyOp::Del)
        .await;
    assert_eq!(del.unwrap(), Reply::Int(1), "a DEL once health says up");
    node.tier.maintain().await;
    assert_eq!(node.tier.status().breaker, BreakerState::Closed);
    assert_eq!(
        node.cache.get("ns", b"k2").await.unwrap(),
        Some(Bytes::from_static(b"v")),
        "a GET reads Redis"
    );

    // Without the subscriber's renewal: the maintenance PING finds the dead connection,
    // and a new one answers, so the circuit stays closed.
    node.tasks[0].abort();
    redis.restart();
    node.tier.maintain().await;
    assert_eq!(node.tier.status().breaker, BreakerState::Closed);
    let del = node
        .cache
        .execute("ns", Bytes::from_static(b"k3"), &KeyOp::Del)
        .await;
    assert_eq!(del.unwrap(), Reply::Int(1), "a DEL after the tick");
    assert_eq!(
        counters.opened.load(Ordering::Relaxed),
        opened,
        "the circuit never opened: Redis was back before anything needed it"
    );

    // A read that is first to find the connection dead goes again on a new one: it reads
    // the key, where it answered an error (a miss to the cache's caller).
    redis.restart();
    let got = node.tier.get("ns", b"k2").await.unwrap();
    assert_eq!(got.map(|e| e.value), Some(Bytes::from_static(b"v")));
}

/// A Redis that hangs (SIGSTOP) opens the circuit within the health PING's `op_timeout`
/// (250 ms) and a tick: a PING that timed out is not taken for a dead connection, whose
/// renewal would wait out a reconnect's timeouts too (about 2 s more) while every request
/// waited for its own timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_opens_the_circuit_within_the_ping_timeout() {
    let redis = RedisServer::start();
    let node = Node::start(BridgeConfig::standalone(redis.address())).await;
    node.cache.set("ns", "k", "v").await.unwrap();
    redis.signal("STOP");
    let t = node.tier.clone();
    let opened = eventually(Duration::from_secs(5), || {
        let s = t.status().breaker;
        async move { s != BreakerState::Closed }
    })
    .await;
    redis.signal("CONT");
    let opened = opened.expect("the circuit opens while Redis hangs");
    eprintln!("circuit opened {opened:?} after SIGSTOP");
    assert!(
        opened < Duration::from_millis(1_800),
        "opened {opened:?} after SIGSTOP: more than a PING's timeout and a tick"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_works_and_a_wrong_password_is_a_clear_startup_error() {
    let redis = RedisServer::with_password("s3cret pass");
    let mut cfg = BridgeConfig::standalone(redis.address());
    cfg.password = Some("s3cret pass".into());
    let node = Node::start(cfg.clone()).await;
    node.cache.set("ns", "k", "v").await.unwrap();
    assert_eq!(node.tier.status().breaker, BreakerState::Closed);
    assert_eq!(redis.cli(&["EXISTS", "strata:ns:k"]).as_deref(), Some("1"));

    cfg.password = Some("wrong".into());
    let err = RedisTier::connect(cfg.clone(), Arc::new(SystemClock))
        .await
        .expect_err("a wrong password must not start");
    assert!(matches!(err, BridgeError::Auth(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("credentials") && text.contains("REDIS_PASSWORD"),
        "{text}"
    );

    cfg.password = None;
    let err = RedisTier::connect(cfg, Arc::new(SystemClock))
        .await
        .expect_err("no password must not start either");
    assert!(matches!(err, BridgeError::Auth(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_bytes_and_bad_messages_are_misses_not_errors() {
    let redis = RedisServer::start();
    let node = Node::start(BridgeConfig::standalone(redis.address())).await;
    // Another program wrote under our prefix.
    redis.cli(&["SET", "strata:ns:foreign", "plain"]).unwrap();
    assert_eq!(node.cache.get("ns", b"foreign").await.unwrap(), None);
    assert_eq!(node.tier.counters().corrupt.load(Ordering::Relaxed), 1);
    // Garbage on the channel is counted and ignored; the subscription survives it.
    redis
        .cli(&["PUBLISH", "strata:invalidations", "\u{1}garbage"])
        .unwrap();
    let t = node.tier.clone();
    assert!(
        eventually(Duration::from_secs(2), || {
            let n = t.counters().bad_messages.load(Ordering::Relaxed);
            async move { n == 1 }
        })
        .await
        .is_some()
    );
    assert!(node.tier.status().subscribed);
    node.cache.set("ns", "k", "v").await.unwrap();
    assert_eq!(
        node.cache.get("ns", b"k").await.unwrap(),
        Some(Bytes::from("v"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_at_start_is_probed_until_it_answers() {
    let port = common::free_port();
    let node = Node::start(BridgeConfig::standalone(format!("127.0.0.1:{port}"))).await;
    assert_eq!(node.tier.status().breaker, BreakerState::Open);
    node.cache
        .set("ns", "k", "local")
        .await
        .expect("local write");
    assert_eq!(
        node.cache.get("ns", b"k").await.unwrap(),
        Some(Bytes::from("local"))
    );
    match node.tier.health() {
        strata_core::TierHealth::Degraded(why) => assert!(why.contains("cannot connect"), "{why}"),
        other => panic!("expected degraded, got {other:?}"),
    }
    let _redis = RedisServer::start_on(port, None, &[]);
    let t = node.tier.clone();
    eventually(Duration::from_secs(10), || {
        let s = t.status();
        async move { s.breaker == BreakerState::Closed && s.subscribed }
    })
    .await
    .expect("the bridge connects once Redis is there");
    node.cache.set("ns", "k2", "shared").await.unwrap();
    assert_eq!(
        node.tier.get("ns", b"k2").await.unwrap().map(|e| e.value),
        Some(Bytes::from("shared"))
    );
    // The write made while Redis was unreachable was queued and unlinked there.
    assert!(node.tier.counters().replayed.load(Ordering::Relaxed) >= 1);
}

/// A bridge through Sentinel, right after a Sentinel failover, with no subscriber or
/// health tick running (the test drives them). The master it was connected to is a
/// replica now. With `close_connections`, as Sentinel does it: the bridge's connection
/// is closed, and redis-rs's connection manager would reconnect to the same address — to
/// the replica, which answers reads and PING and refuses writes with `READONLY`. Without,
/// as an operator's `REPLICAOF` leaves it: the connection stays on the replica.
async fn bridge_across_a_sentinel_failover(
    close_connections: bool,
) -> (RedisSentinel, RedisServer, Node) {
    let (sentinel, replica) = RedisSentinel::with_replica();
    let node = Node::start(BridgeConfig::with_topology(Topology::Sentinel {
        sentinels: vec![format!("127.0.0.1:{}", sentinel.port)],
        master_name: "mymaster".into(),
        sentinel_password: None,
    }))
    .await;
    node.cache
        .set("ns", "before", "v")
        .await
        .expect("a write before the failover");
    for t in &node.tasks {
        t.abort();
    }
    sentinel.failover(&sentinel.master, &replica, close_connections);
    (sentinel, replica, node)
}

fn fresh_entry(i: u64) -> Entry {
    Entry::new(
        Bytes::from_static(b"v"),
        Version::from_u64((SystemClock.now_ms() << 16) + i),
    )
}

/// Twenty writes through the bridge after a failover, checked: at most one kept local
/// (a write Redis refuses stays local, `Unconfirmed`, and is counted), the circuit still
/// closed, the last write on the new master.
async fn twenty_writes_reach_the_new_master(node: &Node, new_master: &RedisServer) {
    let counters = node.tier.counters();
    let (opened, kept_local) = (
        counters.opened.load(Ordering::Relaxed),
        counters.bypassed_writes.load(Ordering::Relaxed),
    );
    for i in 0..20 {
        node.tier
            .set("ns", Bytes::from(format!("after{i}")), fresh_entry(i))
            .await
            .expect("a write through the bridge");
    }
    let kept_local = counters.bypassed_writes.load(Ordering::Relaxed) - kept_local;
    assert!(
        kept_local <= 1,
        "{kept_local} of 20 writes kept local after the failover ({:?}, {} failures, {} renewals)",
        node.tier.status(),
        counters.failures.load(Ordering::Relaxed),
        counters.renewed.load(Ordering::Relaxed)
    );
    assert_eq!(
        counters.opened.load(Ordering::Relaxed),
        opened,
        "the circuit opened"
    );
    let keys = new_master.cli(&["KEYS", "*after19"]).unwrap_or_default();
    assert!(
        keys.contains("after19"),
        "the writes reached the new master: {keys:?}"
    );
}

/// Twenty writes through Sentinel right after a failover: the first finds its
/// connection closed, and the bridge asks Sentinel again at once instead of letting
/// redis-rs reconnect to the same address (the demoted master, where the bridge did not
/// recognise `READONLY` — redis-rs displays it as `read-only` — and kept every write local
/// for as long as it stayed there: 20 of 20 in this test; without the renewal through
/// Sentinel, the second write found the demoted master: 2 of 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sentinel_failover_writes_go_to_the_new_master() {
    let (_sentinel, replica, node) = bridge_across_a_sentinel_failover(true).await;
    twenty_writes_reach_the_new_master(&node, &replica).await;
}

/// A master demoted with the bridge's connection left open (an operator's `REPLICAOF`):
/// the first write refused with `READONLY` makes the bridge ask Sentinel for the new
/// master, and the refusal does not count toward the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_demotion_the_first_refused_write_finds_the_new_master() {
    let (_sentinel, replica, node) = bridge_across_a_sentinel_failover(false).await;
    twenty_writes_reach_the_new_master(&node, &replica).await;
    assert_eq!(node.tier.counters().renewed.load(Ordering::Relaxed), 1);
}

/// A master demoted with the bridge's connection left open, and only reads: the health
/// tick's PING went through there, so health said `up` while reads came from a replica
/// and every write would be kept local. The tick's `ROLE` now finds the demotion and
/// connects to the master Sentinel names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_demotion_the_health_tick_finds_the_new_master() {
    let (_sentinel, _replica, node) = bridge_across_a_sentinel_failover(false).await;
    node.tier
        .get("ns", b"before")
        .await
        .expect("a read from the demoted master");
    assert_eq!(node.tier.counters().renewed.load(Ordering::Relaxed), 0);
    node.tier.maintain().await;
    let status = node.tier.status();
    assert_eq!(status.breaker, BreakerState::Closed, "{status:?}");
    assert_eq!(node.tier.counters().renewed.load(Ordering::Relaxed), 1);
    let first = node
        .tier
        .set("ns", Bytes::from_static(b"first"), fresh_entry(0))
        .await;
    assert!(
        matches!(first, Ok(strata_core::SetOutcome::Stored)),
        "the first write after the demotion and a health tick: {first:?}"
    );
}

/// A write whose Redis call failed answers whether Redis may still have run it (decision
/// 94): refused up front because Redis will not take it (`OOM` under `maxmemory`) it is an
/// error, Redis's own, as for a client of that Redis (until 2026-12-05 it was `Skipped`,
/// kept local, and no other node ever saw it) — and timed out against a Redis that hangs
/// (SIGSTOP), which runs it once it wakes, `Unconfirmed`, so that a removal this node hears
/// of meanwhile undoes it here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_says_whether_redis_may_have_run_it() {
    let redis = RedisServer::start();
    let mut cfg = fresh(BridgeConfig::standalone(redis.address()));
    cfg.op_timeout = Duration::from_millis(300);
    let tier = RedisTier::connect(cfg, Arc::new(SystemClock))
        .await
        .expect("connect");
    let entry = |v: &'static str, n: u64| {
        Entry::new(Bytes::from_static(v.as_bytes()), Version::from_u64(n))
    };

    redis.cli(&["CONFIG", "SET", "maxmemory", "1"]).unwrap();
    let refused = tier
        .set("ns", Bytes::from_static(b"oom"), entry("v", 1))
        .await;
    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]).unwrap();
    let refused = refused.expect_err("a write Redis refused for memory");
    assert!(refused.to_string().contains("OOM"), "{refused}");

    // Let the circuit close again if the refusal counted against it.
    let t = tier.clone();
    eventually(Duration::from_secs(10), || {
        let s = t.status().breaker;
        async move { s == BreakerState::Closed }
    })
    .await
    .expect("the circuit closes");
    redis.signal("STOP");
    let timed_out = tier
        .set("ns", Bytes::from_static(b"hung"), entry("v", 2))
        .await;
    redis.signal("CONT");
    assert_eq!(
        timed_out.unwrap(),
        strata_core::SetOutcome::Unconfirmed,
        "a call that timed out"
    );
    // Redis ran it once it woke: the outcome was indeed unknown.
    let ran = eventually(Duration::from_secs(5), || {
        let keys = redis.cli(&["KEYS", "*hung"]).unwrap_or_default();
        async move { !keys.trim().is_empty() }
    })
    .await;
    assert!(ran.is_some(), "Redis never ran the timed-out write");
}
