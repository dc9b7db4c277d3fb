//! The node with L3 on RocksDB (needs the `l3` feature): warm restart, a disk that cannot be
//! opened, and supervision of the L3 actor.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use strata::{Layer, Node, NodeConfig, TierHealth};

fn config(dir: &Path) -> NodeConfig {
    let mut c = NodeConfig::for_test();
    c.l3.enabled = true;
    c.l3.data_dir = dir.to_path_buf();
    c
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_comes_back_warm_from_l3() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    eventually("L3 open", || node.health().ready).await;
    let cache = node.cache();
    for i in 0..200 {
        cache
            .set("factors", format!("k{i}"), format!("v{i}"))
            .await
            .unwrap();
    }
    node.shutdown().await;

    let node = Node::start(config(dir.path())).await.unwrap();
    eventually("L3 open", || node.health().ready).await;
    let cache = node.cache();
    for i in 0..200 {
        let got = cache
            .get("factors", format!("k{i}").as_bytes())
            .await
            .unwrap();
        assert_eq!(
            got,
            Some(Bytes::from(format!("v{i}"))),
            "k{i} lost across restart"
        );
    }
    let s = cache.stats();
    assert_eq!(s.layer(Layer::L3).unwrap().hits, 200, "{s:?}");
    // Promoted: the second read is an L1 hit.
    cache.get("factors", b"k0").await.unwrap();
    assert_eq!(cache.stats().layer(Layer::L1).unwrap().hits, 1);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_l3_cannot_open_serves_from_l1_and_reports_l3_down() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let node = Node::start(config(&file.join("l3"))).await.unwrap();
    let cache = node.cache();
    cache
        .set("ns", "k", "v")
        .await
        .expect("writes work without L3");
    assert_eq!(cache.get("ns", b"k").await.unwrap(), Some(Bytes::from("v")));
    assert_eq!(
        cache.get("ns", b"absent").await.unwrap(),
        None,
        "a down L3 is a miss, not an error"
    );
    let h = node.health();
    assert!(!h.ready);
    let l3 = h.layers.iter().find(|l| l.layer == Layer::L3).unwrap();
    match &l3.tier {
        TierHealth::Down(reason) => assert!(reason.contains("cannot create"), "{reason}"),
        other => panic!("L3 should be down, is {other:?}"),
    }
    assert!(cache.stats().layer(Layer::L3).unwrap().errors >= 1);
    let metrics = node.encode_metrics();
    for needle in [
        "strata_layer_up{layer=\"l1\"} 1",
        "strata_layer_up{layer=\"l3\"} 0",
        "strata_l3_corrupt_records_total 0",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle:?}:\n{metrics}"
        );
    }
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("strata_l3_open_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(failures >= 1, "open failures not counted:\n{metrics}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_l3_actor_is_restarted_and_l3_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(config(dir.path())).await.unwrap();
    eventually("L3 open", || node.health().ready).await;
    let cache = node.cache();
    cache.set("ns", "before", "1").await.unwrap();
    node.inject_fault(Layer::L3);
    eventually("restart", || node.status().restarts_total() == 1).await;
    eventually("ready", || node.health().ready).await;
    cache.set("ns", "after", "2").await.unwrap();
    let l1 = cache.l1().unwrap().clone();
    l1.remove_sync("ns", b"before");
    l1.remove_sync("ns", b"after");
    assert_eq!(
        cache.get("ns", b"before").await.unwrap(),
        Some(Bytes::from("1"))
    );
    assert_eq!(
        cache.get("ns", b"after").await.unwrap(),
        Some(Bytes::from("2"))
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_refuse_writes_a_node_whose_l3_cannot_open_refuses_writes_but_not_deletes() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let mut c = config(&file.join("l3"));
        c.l3.on_failure = strata::config::L3OnFailure::RefuseWrites;
        let node = Node::start(c).await.unwrap();
        let cache = node.cache();
        match cache.set("ns", "k", "v").await {
            Err(strata_core::CacheError::L3Failing { reason }) => {
                assert!(reason.contains("cannot create"), "{reason}")
            }
            other => panic!("expected L3Failing, got {other:?}"),
        }
        assert!(
            cache.invalidate("ns", b"k").await.is_ok(),
            "deletes are taken"
        );
        assert_eq!(cache.get("ns", b"k").await.unwrap(), None);
        node.shutdown().await;
    }
}
