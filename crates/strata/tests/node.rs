//! Black-box tests of the embeddable node: lifecycle, background sweeps, supervision (restart
//! and escalation), metrics, and configuration from TOML and the environment.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use strata::config::ConfigError;
use strata::{ActorState, CacheError, Layer, Node, NodeConfig, NodeDeps, Profile, SetOptions};
use strata_core::ManualClock;
use strata_core::rng::SeededRng;

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn manual_node(config: NodeConfig) -> (Node, ManualClock) {
    let clock = ManualClock::default();
    let deps = NodeDeps {
        clock: Arc::new(clock.clone()),
        rng: Box::new(SeededRng::new(7)),
    };
    (Node::start_with(config, deps).await.unwrap(), clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_serves_reports_and_shuts_down() {
    let node = Node::start(NodeConfig::for_test()).await.unwrap();
    let cache = node.cache();
    cache
        .set("emission_factors", "diesel", "2.68")
        .await
        .unwrap();
    assert_eq!(
        cache.get("emission_factors", b"diesel").await.unwrap(),
        Some(Bytes::from("2.68"))
    );
    assert_eq!(
        cache.get("emission_factors", b"petrol").await.unwrap(),
        None
    );

    eventually("L1 actor running", || node.health().ready).await;
    let h = node.health();
    assert_eq!(h.layers.len(), 1);
    assert_eq!(h.layers[0].actor, ActorState::Running);

    let metrics = node.encode_metrics();
    for needle in [
        "strata_cache_hits_total{layer=\"l1\"} 1",
        "strata_cache_misses_total{layer=\"l1\"} 1",
        "strata_cache_sets_total{layer=\"l1\"} 1",
        "strata_l1_capacity_bytes 8388608",
        "strata_cache_lookup_latency_seconds_bucket{le=\"+Inf\",layer=\"l1\"}",
        "strata_actor_restarts_total 0",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle:?}:\n{metrics}"
        );
    }
    eventually("stats snapshot taken by the L1 actor", || {
        node.status()
            .snapshots()
            .get(&Layer::L1)
            .is_some_and(|s| s.hits == 1)
    })
    .await;
    node.shutdown().await;
    // A handle held past shutdown still reads the memory layer.
    assert!(
        cache
            .get("emission_factors", b"diesel")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_l1_actor_sweeps_expired_entries_without_reads() {
    let (node, clock) = manual_node(NodeConfig::for_test()).await;
    let cache = node.cache();
    for i in 0..100 {
        cache
            .set_with(
                "ns",
                format!("k{i}"),
                "v",
                SetOptions::ttl(Duration::from_secs(1)),
            )
            .await
            .unwrap();
    }
    cache
        .set_with("ns", "keep", "v", SetOptions::ttl(Duration::from_secs(600)))
        .await
        .unwrap();
    let l1 = cache.l1().unwrap().clone();
    assert_eq!(l1.entry_count(), 101);
    clock.advance(Duration::from_secs(2));
    // The count of expirations moves after the entries go: both are waited for (the
    // count lagged the entry count once, under the full suite's load).
    eventually("sweep dropped and counted the expired entries", || {
        l1.entry_count() == 1 && l1.counters().expirations.get() >= 100
    })
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_layer_actor_is_restarted_while_the_cache_keeps_answering() {
    let (node, clock) = manual_node(NodeConfig::for_test()).await;
    let cache = node.cache();
    cache.set("ns", "hot", "value").await.unwrap();
    eventually("actor running", || node.health().ready).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (reads, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (cache, stop, reads, errors) =
            (cache.clone(), stop.clone(), reads.clone(), errors.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match cache.get("ns", b"hot").await {
                    Ok(Some(v)) if v == "value" => {}
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if cache.set("ns", format!("w{}", i % 100), "x").await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                reads.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };

    node.inject_fault(Layer::L1);
    eventually("restart recorded", || node.status().restarts_total() == 1).await;
    eventually("actor running again", || node.health().ready).await;
    let during = reads.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "the cache failed while the actor restarted"
    );
    assert!(
        reads.load(Ordering::Relaxed) > during,
        "the cache stopped answering"
    );

    // The restarted actor does its job: it sweeps.
    cache
        .set_with("ns", "short", "v", SetOptions::ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    let l1 = cache.l1().unwrap().clone();
    eventually("restarted actor sweeps", || {
        l1.counters().expirations.get() >= 1
    })
    .await;
    assert!(
        node.encode_metrics()
            .contains("strata_actor_restarts_total 1")
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spending_the_restart_budget_escalates_and_the_cache_still_answers() {
    let mut config = NodeConfig::for_test();
    config.supervisor.max_restarts = 2;
    let (node, _clock) = manual_node(config).await;
    let cache = node.cache();
    cache.set("ns", "k", "v").await.unwrap();
    for n in 1..=2 {
        eventually("actor running", || node.health().ready).await;
        node.inject_fault(Layer::L1);
        eventually("restart", || node.status().restarts_total() == n).await;
    }
    eventually("actor running", || node.health().ready).await;
    node.inject_fault(Layer::L1);
    eventually("escalation", || node.health().escalation.is_some()).await;
    let h = node.health();
    assert!(!h.ready);
    assert!(matches!(h.layers[0].actor, ActorState::Failed(_)), "{h:?}");
    assert!(h.escalation.unwrap().contains("budget 2"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        node.status().restarts_total(),
        2,
        "no restart after escalation"
    );
    assert_eq!(cache.get("ns", b"k").await.unwrap(), Some(Bytes::from("v")));
    node.shutdown().await;
}

#[tokio::test]
async fn namespace_policy_from_config_refuses_long_ttls() {
    let mut config = NodeConfig::for_test();
    config.namespaces.insert(
        "ecoinvent".into(),
        strata::config::NamespaceConfig {
            max_ttl_secs: Some(86_400),
            default_ttl_secs: Some(3_600),
            ..Default::default()
        },
    );
    let node = Node::start(config).await.unwrap();
    let err = node
        .cache()
        .set_with(
            "ecoinvent",
            "f",
            "v",
            SetOptions::ttl(Duration::from_secs(90_000)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::PolicyViolation { .. }), "{err}");
    assert!(
        err.to_string().contains("86400s"),
        "message names the limit: {err}"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn two_nodes_share_a_process_without_interfering() {
    let a = Node::start(NodeConfig::for_test()).await.unwrap();
    let b = Node::start(NodeConfig::for_test()).await.unwrap();
    a.cache().set("ns", "k", "a").await.unwrap();
    assert_eq!(b.cache().get("ns", b"k").await.unwrap(), None);
    a.shutdown().await;
    b.cache().set("ns", "k", "b").await.unwrap();
    assert_eq!(
        b.cache().get("ns", b"k").await.unwrap(),
        Some(Bytes::from("b"))
    );
    b.shutdown().await;
}

#[tokio::test]
async fn dropping_a_node_stops_its_actors() {
    let node = Node::start(NodeConfig::for_test()).await.unwrap();
    eventually("actor running", || node.health().ready).await;
    let cache = node.cache();
    let l1 = cache.l1().unwrap().clone();
    drop(node);
    // Entries expire but no sweep runs any more: the count stays put.
    cache
        .set_with("ns", "k", "v", SetOptions::ttl(Duration::from_millis(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        l1.entry_count(),
        1,
        "a sweep ran after the node was dropped"
    );
}

/// Built without the `l3` feature, a config asking for L3 is refused, not silently ignored.
#[cfg(not(feature = "l3"))]
#[tokio::test]
async fn asking_for_l3_without_the_feature_is_a_clear_error() {
    let mut config = NodeConfig::for_test();
    config.l3.enabled = true;
    let err = Node::start(config).await.unwrap_err();
    assert!(err.to_string().contains("`l3` cargo feature"), "{err}");
}

#[tokio::test]
async fn an_invalid_config_is_refused_at_start() {
    let mut config = NodeConfig::for_test();
    config.l1.capacity_bytes = 0;
    let err = Node::start(config).await.unwrap_err();
    assert!(err.to_string().contains("l1.capacity_bytes"), "{err}");
}

fn write(dir: &tempfile::TempDir, body: &str) -> std::path::PathBuf {
    let p = dir.path().join("strata.toml");
    std::fs::write(&p, body).unwrap();
    p
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn config_from_toml_with_profile_namespaces_and_env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        r#"
profile = "memory_constrained"

[node]
name = "factor-broker"

[l1]
sweep_interval_ms = 500

[namespaces.emission_factors]
max_ttl_secs = 86400
default_ttl_secs = 600
l1_share = 0.25
"#,
    );
    let c = NodeConfig::load_with_env(Some(&path), env(&[])).unwrap();
    assert_eq!(c.profile, Profile::MemoryConstrained);
    assert_eq!(c.node.name, "factor-broker");
    assert_eq!(c.l1.sweep_interval_ms, 500, "file overrides the profile");
    assert_eq!(
        c.l1.capacity_bytes,
        16 * 1024 * 1024,
        "profile default kept"
    );
    assert_eq!(
        c.limits.max_value_bytes,
        1024 * 1024,
        "profile default kept"
    );
    let ns = &c.namespaces["emission_factors"];
    assert_eq!(ns.max_ttl_secs, Some(86_400));
    assert_eq!(ns.l1_share, Some(0.25));

    let c = NodeConfig::load_with_env(
        Some(&path),
        env(&[
            ("STRATA__L1__CAPACITY_BYTES", "33554432"),
            (
                "STRATA__NAMESPACES__EMISSION_FACTORS__DEFAULT_TTL_SECS",
                "60",
            ),
            ("STRATA__PROFILE", "high_performance"),
            ("UNRELATED", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(c.l1.capacity_bytes, 33_554_432, "env overrides the file");
    assert_eq!(c.namespaces["emission_factors"].default_ttl_secs, Some(60));
    assert_eq!(c.profile, Profile::HighPerformance);
    assert_eq!(
        c.limits.max_value_bytes,
        64 * 1024 * 1024,
        "env-selected profile's defaults"
    );
    assert_eq!(
        c.l1.sweep_interval_ms, 500,
        "file still applies over the profile"
    );
}

#[test]
fn no_file_gives_the_default_profile() {
    let c = NodeConfig::load_with_env(None, env(&[])).unwrap();
    assert_eq!(c, NodeConfig::default());
}

fn load_err(body: &str, vars: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, body);
    NodeConfig::load_with_env(Some(&path), env(vars))
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_configs_are_refused_with_a_message_naming_the_field() {
    // (file body, environment, words the error must contain)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        ("[l1]\ncapcity_bytes = 10\n", &[], &["capcity_bytes"]),
        ("[l1]\ncapacity_bytes = 0\n", &[], &["l1.capacity_bytes"]),
        (
            "[l1]\ncapacity_bytes = \"lots\"\n",
            &[],
            &["capacity_bytes"],
        ),
        (
            "[namespace_defaults]\ndefault_ttl_secs = 100000\nmax_ttl_secs = 86400\n",
            &[],
            &["namespace_defaults", "default_ttl"],
        ),
        (
            "[namespaces.ecoinvent]\ndefault_ttl_secs = 90000\n",
            &[],
            &["namespaces.ecoinvent", "default_ttl"],
        ),
        (
            "[namespaces.\"bad name\"]\nmax_ttl_secs = 10\n",
            &[],
            &["namespaces.bad name"],
        ),
        (
            "[namespaces.a]\nl1_share = 0.6\n[namespaces.b]\nl1_share = 0.6\n",
            &[],
            &["l1_share", "less than 1"],
        ),
        ("profile = \"turbo\"\n", &[], &["profile", "turbo"]),
        ("[l1\ncapacity_bytes = 1\n", &[], &["strata.toml"]),
        (
            "",
            &[("STRATA__L1__CAPACITY_BYTES", "0")],
            &["l1.capacity_bytes"],
        ),
        ("", &[("STRATA__L1__NOPE", "1")], &["nope"]),
        (
            "[supervisor]\nbackoff_initial_ms = 10000\nbackoff_max_ms = 100\n",
            &[],
            &["supervisor.backoff_initial_ms"],
        ),
    ];
    for (body, vars, needles) in cases {
        let msg = load_err(body, vars);
        for n in *needles {
            assert!(
                msg.contains(n),
                "error for {body:?} / {vars:?} should mention {n:?}: {msg}"
            );
        }
    }
    let missing = NodeConfig::load_with_env(
        Some(std::path::Path::new("/nonexistent/strata.toml")),
        env(&[]),
    )
    .unwrap_err();
    assert!(matches!(missing, ConfigError::Load { .. }));
    assert!(
        missing.to_string().contains("/nonexistent/strata.toml"),
        "{missing}"
    );
}

/// `NodeConfig::load` reads the real process environment. Setting variables in this process
/// would race with other tests, so the test re-runs itself as a child process with them set.
#[test]
fn load_reads_the_process_environment() {
    if std::env::var("STRATA_ENV_CHILD").is_ok() {
        let c = NodeConfig::load(None).unwrap();
        assert_eq!(c.l1.capacity_bytes, 4_194_304);
        assert_eq!(c.node.name, "from-env");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "load_reads_the_process_environment",
            "--nocapture",
        ])
        .env("STRATA_ENV_CHILD", "1")
        .env("STRATA__L1__CAPACITY_BYTES", "4194304")
        .env("STRATA__NODE__NAME", "from-env")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "child failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_seeds_redis_variables_turn_the_bridge_on() {
    let c = NodeConfig::load_with_env(None, env(&[])).unwrap();
    assert!(!c.l2.redis.enabled, "no Redis unless asked");
    let c = NodeConfig::load_with_env(
        None,
        env(&[
            ("REDIS_HOST", "10.1.2.3"),
            ("REDIS_PORT", "6390"),
            ("REDIS_DB", "2"),
            ("REDIS_PASSWORD", "pw"),
        ]),
    )
    .unwrap();
    let r = &c.l2.redis;
    assert!(r.enabled);
    assert_eq!(
        (r.host.as_str(), r.port, r.db, r.password.as_deref()),
        ("10.1.2.3", 6390, 2, Some("pw"))
    );
    // An explicit STRATA__ variable wins over the seeds' one; a port alone turns nothing on.
    let c = NodeConfig::load_with_env(
        None,
        env(&[
            ("REDIS_HOST", "10.1.2.3"),
            ("STRATA__L2__REDIS__HOST", "10.9.9.9"),
        ]),
    )
    .unwrap();
    assert_eq!(c.l2.redis.host, "10.9.9.9");
    let c = NodeConfig::load_with_env(None, env(&[("REDIS_PORT", "6390")])).unwrap();
    assert!(!c.l2.redis.enabled);
    let e = load_err(
        "[l2.redis]\nenabled = true\nsentinel_master = \"m\"\ncluster_nodes = [\"h:1\"]\n",
        &[],
    );
    assert!(e.contains("l2.redis.sentinel_master"), "{e}");
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn asking_for_the_bridge_without_the_feature_is_a_clear_error() {
    let mut config = NodeConfig::for_test();
    config.l2.redis.enabled = true;
    let err = Node::start(config).await.expect_err("no redis feature");
    assert!(err.to_string().contains("`redis` cargo feature"), "{err}");
}
