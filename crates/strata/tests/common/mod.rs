//! Helpers shared by the embedded-cluster tests: configs, a cluster started and converged,
//! waiting for a condition, stopping.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata::{Node, NodeConfig, NodeDeps};
use strata_core::ManualClock;
use strata_core::rng::SeededRng;

pub const SECRET: &str = "a test secret of 32 bytes.......";

pub fn config(name: &str, seeds: &[String], rf: u32) -> NodeConfig {
    let mut c = NodeConfig::for_test();
    c.node.name = name.into();
    c.cluster.enabled = true;
    c.cluster.secret = Some(SECRET.into());
    c.cluster.gossip_listen = "127.0.0.1:0".into();
    c.cluster.rpc_listen = "127.0.0.1:0".into();
    c.cluster.seeds = seeds.to_vec();
    c.cluster.replication_factor = rf;
    c
}

/// `node`'s own gossip address (a seed for a node that joins through it).
pub fn gossip_addr(node: &Node) -> String {
    let status = node.cluster_status().unwrap();
    status
        .members
        .iter()
        .find(|m| m.state == "self")
        .expect("a member's status lists itself")
        .gossip
        .clone()
}

pub fn live(node: &Node) -> usize {
    node.cluster_status()
        .unwrap()
        .members
        .iter()
        .filter(|m| m.state == "self" || m.state == "alive")
        .count()
}

pub async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

/// Starts `n` nodes (the first is everyone's seed) and waits until each sees all of them
/// and they agree on the ring.
pub async fn cluster(n: usize, rf: u32, clock: Option<ManualClock>) -> Vec<Node> {
    cluster_with(n, rf, clock, |_| {}).await
}

/// [`cluster`], with `tweak` applied to every node's configuration.
pub async fn cluster_with(
    n: usize,
    rf: u32,
    clock: Option<ManualClock>,
    tweak: impl Fn(&mut NodeConfig),
) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let seeds: Vec<String> = nodes.first().map(gossip_addr).into_iter().collect();
        let mut cfg = config(&format!("n{i}"), &seeds, rf);
        tweak(&mut cfg);
        let node = match &clock {
            Some(c) => Node::start_with(
                cfg,
                NodeDeps {
                    clock: Arc::new(c.clone()),
                    rng: Box::new(SeededRng::new(i as u64)),
                },
            )
            .await
            .unwrap(),
            None => Node::start(cfg).await.unwrap(),
        };
        nodes.push(node);
    }
    eventually("membership converges", Duration::from_secs(10), || {
        let rings: Vec<String> = nodes
            .iter()
            .map(|x| x.cluster_status().unwrap().ring_version)
            .collect();
        nodes.iter().all(|x| live(x) == n) && rings.iter().all(|r| *r == rings[0])
    })
    .await;
    nodes
}

pub async fn stop(nodes: Vec<Node>) {
    for n in nodes {
        n.shutdown().await;
    }
}
