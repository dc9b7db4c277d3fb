//! Embedded cluster nodes on loopback (real UDP gossip, real TCP peer RPC, one process):
//! the cluster L2 tier's contract, reads and writes across owners, invalidation across
//! nodes, strict invalidations, and the cluster secret.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata::{Layer, Node};

mod common;
use common::*;

/// The keys `{prefix}{i}` (i below 100,000) whose owners in `node`'s view are `owners`,
/// first owner first.
#[cfg(feature = "fault-injection")]
fn keys_owned_by<'a>(
    node: &'a Node,
    prefix: &'a str,
    owners: &'a [&'a str],
) -> impl Iterator<Item = String> + 'a {
    (0..100_000)
        .map(move |i| format!("{prefix}{i}"))
        .filter(move |k| node.cluster_owners(k.as_bytes()) == owners)
}

/// An entry as a test plants it in an owner store: `value`, stamped at `at_ms` (no
/// counter), expiring a minute after `now`.
#[cfg(feature = "fault-injection")]
fn planted_entry(value: &'static [u8], at_ms: u64, now: u64) -> strata_core::Entry {
    strata_core::Entry {
        value: bytes::Bytes::from_static(value),
        version: strata_core::Version::from_u64(at_ms << 16),
        expires_at_ms: Some(now + 60_000),
        stale_until_ms: None,
        tags: Default::default(),
    }
}

/// A plain `SET` of `value` (no options), as a transaction step's command.
#[cfg(feature = "fault-injection")]
fn plain_set(value: &[u8]) -> strata_core::ops::KeyOp {
    strata_core::ops::KeyOp::Set {
        value: value.to_vec(),
        ttl: strata_core::ops::Ttl::Default,
        exists: strata_core::ops::Exists::Any,
        get: false,
        integer: false,
    }
}

/// A hash tag `{{prefix}{i}}` whose keys' owners in `node`'s view are `owners` (the ring
/// places a key by its tag).
#[cfg(feature = "fault-injection")]
fn hash_tag_owned_by(node: &Node, prefix: &str, owners: &[&str]) -> String {
    (0..100_000)
        .map(|i| format!("{{{prefix}{i}}}"))
        .find(|t| node.cluster_owners(format!("{t}k").as_bytes()) == owners)
        .expect("a hash tag with those owners")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_tier_passes_the_contract_suite() {
    // Two nodes, two owners per key: every operation goes to the local store and over RPC
    // to the other owner; a read that misses locally reads through to the other.
    let kept = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let keep = kept.clone();
    strata_core::testsuite::run_dyn(move |clock| {
        let keep = keep.clone();
        async move {
            // No background sweep of the owner stores during the suite: it reads the manual
            // clock too, and would purge between the suite's clock step and its own purge.
            let nodes = cluster_with(2, 2, Some(clock), |c| {
                c.cluster.owner_sweep_interval_ms = 3_600_000;
            })
            .await;
            let tier = nodes[0].cache().tier(Layer::L2).unwrap();
            keep.lock().extend(nodes);
            tier
        }
    })
    .await;
    let nodes: Vec<Node> = std::mem::take(&mut *kept.lock());
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_one_node_are_read_on_the_others_and_invalidations_reach_every_copy() {
    let nodes = cluster(3, 1, None).await;
    let caches: Vec<_> = nodes.iter().map(Node::cache).collect();
    for k in 0..60 {
        caches[0]
            .set("ns", format!("k{k}"), format!("v{k}"))
            .await
            .unwrap();
    }
    // Every key has one owner; each node reads all of them (most through an owner RPC),
    // and keeps a copy in its L1.
    for c in &caches {
        for k in 0..60 {
            let v = c.get("ns", format!("k{k}").as_bytes()).await.unwrap();
            assert_eq!(v.as_deref(), Some(format!("v{k}").as_bytes()), "k{k}");
        }
    }
    let owned: Vec<u64> = nodes
        .iter()
        .map(|n| n.cluster_status().unwrap().owned_entries)
        .collect();
    assert_eq!(
        owned.iter().sum::<u64>(),
        60,
        "one owner per key: {owned:?}"
    );
    assert!(owned.iter().all(|o| *o > 5), "keys spread: {owned:?}");

    // A delete on node 2 must stop nodes 0 and 1 serving their L1 copies, within the
    // staleness bound (they are dropped by the gossiped invalidation).
    caches[2].invalidate("ns", b"k7").await.unwrap();
    // Within the worst case of about 1.5 s (docs/semantics.md); usually milliseconds.
    let took = eventually("k7 gone everywhere", Duration::from_secs(2), || {
        caches
            .iter()
            .all(|c| c.l1().unwrap().get_entry("ns", b"k7").is_none())
    })
    .await;
    println!("key invalidation reached every node in {took:?}");
    for c in &caches {
        assert_eq!(c.get("ns", b"k7").await.unwrap(), None);
    }

    // An overwrite on node 1 replaces node 0's and node 2's copies.
    caches[1].set("ns", "k8", "new").await.unwrap();
    eventually("k8 new everywhere", Duration::from_secs(2), || {
        caches.iter().all(|c| {
            c.l1()
                .unwrap()
                .get_entry("ns", b"k8")
                .is_none_or(|e| e.value.as_ref() == b"new")
        })
    })
    .await;
    for c in &caches {
        assert_eq!(
            c.get("ns", b"k8").await.unwrap().as_deref(),
            Some(&b"new"[..])
        );
    }

    // Pattern invalidation is strict: when it returns, no node serves a match.
    let n = caches[0].invalidate_pattern("ns", b"k1?").await.unwrap();
    assert_eq!(n, 10, "k10..k19 removed once each");
    for c in &caches {
        for k in 10..20 {
            assert_eq!(c.get("ns", format!("k{k}").as_bytes()).await.unwrap(), None);
        }
        assert!(c.get("ns", b"k20").await.unwrap().is_some());
    }
    // A namespace flush likewise.
    caches[1].flush_namespace("ns").await.unwrap();
    for c in &caches {
        assert_eq!(c.get("ns", b"k20").await.unwrap(), None);
    }
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_secret_cannot_join_or_call() {
    let nodes = cluster(2, 2, None).await;
    let seed = gossip_addr(&nodes[0]);
    let mut bad = config("intruder", &[seed], 2);
    bad.cluster.secret = Some("not the cluster secret, 32 bytes".into());
    let intruder = Node::start(bad).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(live(&intruder), 1, "the intruder joined nobody");
    for n in &nodes {
        let st = n.cluster_status().unwrap();
        assert!(st.members.iter().all(|m| m.name != "intruder"));
    }
    let rejected: u64 = nodes
        .iter()
        .map(|n| n.cluster_status().unwrap().rejected_packets)
        .sum();
    assert!(rejected > 0, "its packets were counted as rejected");

    // Its RPC connections are refused at the handshake: `peer_auth.rs` tries that and every
    // other attack on the RPC port.
    intruder.shutdown().await;
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_writes_return_after_every_member_applied_them() {
    let mut nodes = Vec::new();
    for i in 0..3 {
        let seeds: Vec<String> = nodes.first().map(gossip_addr).into_iter().collect();
        let mut c = config(&format!("s{i}"), &seeds, 1);
        c.cluster.strict_invalidations = true;
        nodes.push(Node::start(c).await.unwrap());
    }
    eventually("membership converges", Duration::from_secs(10), || {
        nodes.iter().all(|x| live(x) == 3)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let caches: Vec<_> = nodes.iter().map(Node::cache).collect();
    for round in 0..20 {
        let v = format!("v{round}");
        caches[round % 3].set("ns", "hot", v.clone()).await.unwrap();
        // No waiting: the write returned only after every member dropped older copies.
        for c in &caches {
            assert_eq!(
                c.get("ns", b"hot").await.unwrap().as_deref(),
                Some(v.as_bytes()),
                "round {round}"
            );
        }
    }
    caches[0].invalidate("ns", b"hot").await.unwrap();
    for c in &caches {
        assert_eq!(c.get("ns", b"hot").await.unwrap(), None);
    }
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_shuts_down_leaves_at_once_and_its_keys_stay_readable() {
    let mut nodes = cluster(3, 2, None).await;
    let caches: Vec<_> = nodes.iter().map(Node::cache).collect();
    for k in 0..50 {
        caches[0].set("ns", format!("k{k}"), "v").await.unwrap();
    }
    let leaving = nodes.pop().unwrap();
    let start = Instant::now();
    leaving.shutdown().await;
    // A graceful leave is announced: the others drop it without waiting for the failure
    // detector (which takes about 1.5 s on these settings, see the kill -9 test).
    let took = eventually("the leave is seen", Duration::from_secs(1), || {
        nodes.iter().all(|n| live(n) == 2)
    })
    .await;
    println!(
        "leave seen by both others {:?} after shutdown began",
        start.elapsed()
    );
    assert!(took < Duration::from_secs(1));
    // Two owners per key: every key still has one, and both remaining nodes serve all.
    for c in &caches[..2] {
        for k in 0..50 {
            assert!(
                c.get("ns", format!("k{k}").as_bytes())
                    .await
                    .unwrap()
                    .is_some(),
                "k{k}"
            );
        }
    }
    stop(nodes).await;
}

/// The real wiring (gossip and RPC tasks under the L2 actor) through a partition and a heal:
/// the majority side marks the cut-off node down and keeps writing; the cut-off node drops
/// the copies it can no longer vouch for; after the heal all three converge, and the cut-off
/// node serves nothing invalidated while it was away.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_rejoins_without_serving_what_was_invalidated_meanwhile() {
    let nodes = cluster(3, 2, None).await;
    let caches: Vec<_> = nodes.iter().map(Node::cache).collect();
    for k in 0..30 {
        caches[0].set("ns", format!("k{k}"), "old").await.unwrap();
    }
    for k in 0..30 {
        assert!(
            caches[2]
                .get("ns", format!("k{k}").as_bytes())
                .await
                .unwrap()
                .is_some()
        );
    }
    // A history of n2's invalidations (it is primary of about a third of these keys), which
    // the others applied before the cut.
    for k in 0..300 {
        caches[0].set("ns", format!("h{k}"), "x").await.unwrap();
    }
    let history = nodes[2].cluster_status().unwrap().latest_seq;
    assert!(history >= 50, "n2 made {history} invalidations");
    eventually(
        "the others applied n2's history",
        Duration::from_secs(15),
        || {
            nodes[..2]
                .iter()
                .all(|n| n.cluster_status().unwrap().in_sync)
        },
    )
    .await;
    let before: Vec<_> = nodes[..2]
        .iter()
        .map(|n| n.cluster_status().unwrap().coherence)
        .collect();
    // Cut n2 off, both ways.
    nodes[2].isolate_from(&["n0", "n1"]);
    nodes[0].isolate_from(&["n2"]);
    nodes[1].isolate_from(&["n2"]);
    let split = eventually("both sides see the split", Duration::from_secs(15), || {
        live(&nodes[0]) == 2 && live(&nodes[1]) == 2 && live(&nodes[2]) == 1
    })
    .await;
    println!("partition detected after {split:?}");
    // Writes of keys whose primary is n2 are refused (TRYAGAIN) until the majority's ring
    // no longer has n2: a suspect still owns its keys.
    let ring_of = |n: &Node| n.cluster_status().unwrap().ring_members.len();
    eventually(
        "the majority's ring drops n2",
        Duration::from_secs(15),
        || ring_of(&nodes[0]) == 2 && ring_of(&nodes[1]) == 2,
    )
    .await;
    // The majority deletes and overwrites while n2 is away.
    for k in 0..10 {
        caches[0]
            .invalidate("ns", format!("k{k}").as_bytes())
            .await
            .unwrap();
    }
    for k in 10..20 {
        caches[1].set("ns", format!("k{k}"), "new").await.unwrap();
    }
    // n2 declares the others down (suspect first): it drops the copies it cannot vouch for.
    eventually(
        "the cut-off node drops its copies",
        Duration::from_secs(15),
        || nodes[2].cluster_status().unwrap().drops_unverified > 0,
    )
    .await;
    for n in &nodes {
        n.heal_network();
    }
    // SWIM heals through periodic announcements (every 5 s to one member and to two down
    // ones): usually 5–10 s, bounded here at 60 s.
    let healed = eventually("all three again", Duration::from_secs(60), || {
        nodes.iter().all(|n| live(n) == 3)
    })
    .await;
    println!("converged {healed:?} after the heal");
    let ring = |n: &Node| n.cluster_status().unwrap().ring_version;
    eventually(
        "the nodes agree on the ring",
        Duration::from_secs(15),
        || nodes.iter().all(|n| ring(n) == ring(&nodes[0])),
    )
    .await;
    // Repair lands within about a second of agreement (docs/semantics.md); a loaded machine
    // gets 10 s, and the answer must then hold.
    let mismatch = || async {
        for (i, c) in caches.iter().enumerate() {
            for k in 0..20 {
                let got = c.get("ns", format!("k{k}").as_bytes()).await.unwrap();
                let want = (k >= 10).then_some(&b"new"[..]);
                if got.as_deref() != want {
                    return Some(format!("node {i}: k{k} is {got:?}, want {want:?}"));
                }
            }
        }
        None
    };
    let start = std::time::Instant::now();
    while let Some(m) = mismatch().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "10 s after agreement: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("consistent {:?} after agreement", start.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mismatch().await, None, "and it stays so");
    // n2 came back under a renewed identity with the same coherence life: the others kept
    // what they knew of it and repaired only what they missed, instead of taking its whole
    // history for a gap (which, past an origin's log, is given up and restarts every
    // witness's record).
    for (i, b) in before.iter().enumerate() {
        let now = nodes[i].cluster_status().unwrap().coherence;
        let applied = now.applied - b.applied;
        println!("n{i} applied {applied} invalidations across the cut (n2's history: {history})");
        assert!(
            applied < history,
            "n{i} applied {applied} invalidations across n2's cut: n2's whole history ({history}) again"
        );
        assert_eq!(now.gaps_dropped, b.gaps_dropped, "n{i} gave up a gap");
    }
    // n2 rejoined without its lease: what it owned was held unproven, not dropped. Its
    // proof kept the keys nobody changed meanwhile (k20..k29, the other owner holds that
    // version) and dropped the ten it owned that were deleted or overwritten.
    let owned_unchanged = (20..30)
        .filter(|k| {
            nodes[2]
                .cluster_owners(format!("k{k}").as_bytes())
                .iter()
                .any(|o| o == "n2")
        })
        .count();
    assert!(owned_unchanged > 0, "n2 owns none of k20..k29");
    let kept = || nodes[2].cluster_status().unwrap().unproven_kept as usize;
    eventually(
        "n2's proof keeps what nobody changed",
        Duration::from_secs(15),
        || kept() >= owned_unchanged,
    )
    .await;
    let s2 = nodes[2].cluster_status().unwrap();
    println!(
        "n2's proof after its rejoin: {} kept, {} dropped; it owns {owned_unchanged} of k20..k29",
        s2.unproven_kept, s2.unproven_dropped
    );
    stop(nodes).await;
}

/// The primary's lease (`strata_cluster::primary::Lease`), on real sockets: five nodes, two
/// owners per key, and a partition that cuts n3 and n4 off from the other three. For
/// seconds n3's view still holds all five members (failure detection is slow), so it still
/// counts a majority; a key whose owners are n3 and n4 has its primary and its replica both
/// on the cut-off side, so replication succeeds there. Without the lease n3 went on
/// acknowledging writes of that key which the majority, once it moves the key, never sees
/// (the simulator's seed 1000). With it, n3 stops within about a second of the cut, while
/// its ring still has five members. After the heal its writes are taken again.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_off_from_the_majority_stops_writing_before_its_view_notices() {
    let nodes = cluster_with(5, 2, None, |c| c.cluster.expected_size = 5).await;
    let status = |i: usize| nodes[i].cluster_status().unwrap();
    eventually("every node holds its lease", Duration::from_secs(5), || {
        (0..5).all(|i| status(i).lease_holds)
    })
    .await;
    // A key owned by n3 (its primary) and n4: both on the side that will be cut off.
    let key = keys_owned_by(&nodes[3], "lease:", &["n3", "n4"])
        .next()
        .expect("a key owned by n3 then n4");
    let c3 = nodes[3].cache();
    c3.set("ns", key.clone(), "before").await.unwrap();

    let (minority, majority) = (["n3", "n4"], ["n0", "n1", "n2"]);
    for (i, n) in nodes.iter().enumerate() {
        n.isolate_from(if i < 3 { &minority[..] } else { &majority[..] });
    }
    let cut = Instant::now();
    eventually("n3's lease lapses", Duration::from_secs(3), || {
        !status(3).lease_holds
    })
    .await;
    let lapsed = cut.elapsed();
    let ring_then = status(3).ring_members.len();
    println!("lease lapsed {lapsed:?} after the cut; n3's ring then had {ring_then} members");
    assert_eq!(
        ring_then, 5,
        "the lease must lapse before failure detection shrinks n3's ring (lapsed after {lapsed:?})"
    );
    // The write reaches its replica n4, yet is not acknowledged: n3 has no lease.
    let refused_before = status(3).lease_refusals;
    let attempt = tokio::time::timeout(
        Duration::from_millis(1500),
        c3.set("ns", key.clone(), "during"),
    )
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "a write acknowledged by a primary without its lease: {attempt:?}"
    );
    assert!(status(3).lease_refusals > refused_before);

    for n in &nodes {
        n.heal_network();
    }
    eventually("all five again", Duration::from_secs(60), || {
        nodes.iter().all(|n| live(n) == 5)
    })
    .await;
    eventually("n3 holds its lease again", Duration::from_secs(10), || {
        status(3).lease_holds
    })
    .await;
    let start = Instant::now();
    loop {
        match c3.set("ns", key.clone(), "after").await {
            Ok(_) => break,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(20), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        nodes[0]
            .cache()
            .get("ns", key.as_bytes())
            .await
            .unwrap()
            .as_deref(),
        Some(&b"after"[..])
    );
    stop(nodes).await;
}

/// Writes a key n0 is primary of (n1 its replica), takes n1's copy of it, and deletes the
/// key through n0 while n1 ignores invalidations: n1 takes its share of the DEL through
/// replication, and the primary's invalidation, which would refuse older copies there too,
/// has not come (n1 still ignores them when this returns). The key and the copy from
/// before the DEL.
#[cfg(feature = "fault-injection")]
async fn deleted_after_a_copy(nodes: &[Node], prefix: &str) -> (String, strata_core::Entry) {
    let key = keys_owned_by(&nodes[0], prefix, &["n0", "n1"])
        .next()
        .expect("a key n0 is primary of");
    let c0 = nodes[0].cache();
    c0.set("ns", key.clone(), "old").await.unwrap();
    let old = nodes[1]
        .owner_copy("ns", key.as_bytes())
        .expect("n1 holds the value");
    nodes[1].ignore_invalidations(true);
    assert!(c0.invalidate("ns", key.as_bytes()).await.unwrap());
    (key, old)
}

/// An owner that applies a removal refuses, from then on, every copy older than it — also
/// when it held nothing to remove. A previous owner's hand-off push (or a read repair) may
/// read the value before the DEL and reach an owner after it; the store cannot refuse it (the
/// key is absent there), and the DEL's invalidation does not come back to the primary that
/// made it, nor reach a replica before the primary has announced it. Seen in a 3-process
/// test: a key deleted while a member rejoined was pushed to that member, its new primary,
/// as the delete ran there, and served by it from then on.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_read_before_a_delete_and_pushed_after_it_is_refused() {
    let nodes = cluster(2, 2, None).await;
    let (key, old) = deleted_after_a_copy(&nodes, "pushed:").await;
    let c0 = nodes[0].cache();
    assert!(nodes[1].owner_copy("ns", key.as_bytes()).is_none());
    for (i, n) in nodes.iter().enumerate() {
        assert!(
            !n.receive_peer_set("ns", key.as_bytes(), &old).await,
            "n{i} stored a copy older than the DEL it applied"
        );
        assert!(n.owner_copy("ns", key.as_bytes()).is_none(), "n{i}");
        assert_eq!(
            n.cache().get("ns", key.as_bytes()).await.unwrap(),
            None,
            "n{i} serves the deleted value"
        );
    }
    nodes[1].ignore_invalidations(false);
    // A write after the DEL is newer than it: both owners take it and keep it.
    c0.set("ns", key.clone(), "new").await.unwrap();
    assert!(!nodes[1].receive_peer_set("ns", key.as_bytes(), &old).await);
    assert_eq!(
        nodes[1]
            .cache()
            .get("ns", key.as_bytes())
            .await
            .unwrap()
            .as_deref(),
        Some(&b"new"[..])
    );
    stop(nodes).await;
}

/// A removal is remembered for `tombstone_ms` of the node's own running time, whatever its
/// wall clock does. Coherence once counted on the wall clock: a step forward past
/// `tombstone_ms` (NTP correcting a drifted clock, a VM resumed from a snapshot) expired
/// every tombstone at the next tick, and a copy read before a `DEL` and pushed after it was
/// stored again and served (G3). A step back held every staleness deadline for as long.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_stepped_forward_forgets_no_delete() {
    use strata_core::ManualClock;
    let clock = ManualClock::new(1_800_000_000_000);
    let nodes = cluster(2, 2, Some(clock.clone())).await;
    let (key, old) = deleted_after_a_copy(&nodes, "stepped:").await;
    // Two minutes ahead (tombstones last one), and the maintenance ticks (every 100 ms)
    // run on the new time.
    clock.advance(Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(600)).await;
    for (i, n) in nodes.iter().enumerate() {
        assert!(
            !n.receive_peer_set("ns", key.as_bytes(), &old).await,
            "n{i} stored a copy older than the DEL it applied, after its clock stepped"
        );
        assert_eq!(
            n.cache().get("ns", key.as_bytes()).await.unwrap(),
            None,
            "n{i} serves the deleted value"
        );
    }
    nodes[1].ignore_invalidations(false);
    stop(nodes).await;
}

/// A `DEL` of a key its owners have evicted still reaches the copies other members hold
/// (the writer's own, reads'): the primary, finding the key nowhere, answers 0 and
/// announces the removal all the same — for a plain `DEL` and for one inside `MULTI`/`EXEC`
/// (or a script, which runs its steps the same way). It once announced nothing (the command
/// changed nothing it could see), and a member holding a copy kept serving the deleted
/// value from its L1 for as long as it kept it there.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_of_a_key_its_owners_evicted_reaches_the_copies_read_elsewhere() {
    use strata_core::ops::{KeyOp, MultiOp, Reply, Transaction, TxStep};
    let nodes = cluster_with(3, 2, None, |c| {
        c.cluster.owner_capacity_bytes = 1 << 20;
    })
    .await;
    let owned: Vec<String> = keys_owned_by(&nodes[0], "evicted:", &["n0", "n1"])
        .take(5_002)
        .collect();
    // One key for a plain DEL, one for a transaction's.
    let (keys, mut fillers) = (&owned[..2], owned[2..].iter());
    let (c0, c2) = (nodes[0].cache(), nodes[2].cache());
    // Written through n2, which keeps a copy of what it wrote; the owners' stores hold
    // them, unread.
    for key in keys {
        c2.set("ns", key.clone(), "before").await.unwrap();
    }
    // Other keys of the same owners push them out of both owner stores (1 MiB each). A
    // look at an owner's copy is a peek (no read counted): a look that counted as a read
    // kept a key hot in CI, and it outlived 5 MiB of fillers.
    let filler = vec![b'x'; 1024];
    let held = |n: &Node| {
        keys.iter()
            .any(|key| n.owner_copy("ns", key.as_bytes()).is_some())
    };
    for batch in 0.. {
        if !nodes[..2].iter().any(held) {
            break;
        }
        assert!(batch < 5, "the owners never evicted the keys");
        for other in fillers.by_ref().take(1_000) {
            c0.set("ns", other.clone(), filler.clone()).await.unwrap();
        }
    }
    for key in keys {
        assert_eq!(
            c2.get("ns", key.as_bytes()).await.unwrap().as_deref(),
            Some(&b"before"[..]),
            "n2's own copy outlives the owners' (what the DEL must reach)"
        );
    }
    assert!(
        !c0.invalidate("ns", keys[0].as_bytes()).await.unwrap(),
        "the key was nowhere at its owners: DEL answers 0, as on one Redis"
    );
    let tx = MultiOp::Transaction(Transaction {
        keys: vec![keys[1].as_bytes().to_vec().into()],
        watch: Vec::new(),
        steps: vec![TxStep::Key {
            key: 0,
            op: KeyOp::Del,
        }],
        default_ttl_ms: None,
    });
    assert_eq!(
        c0.execute_multi("ns", &tx).await.unwrap(),
        Reply::Exec(Some(vec![Reply::Int(0)])),
        "the transaction's DEL answers 0 too"
    );
    for key in keys {
        eventually(
            "the member that wrote the key stops serving it",
            Duration::from_secs(5),
            || nodes[2].cache().l1_expiry("ns", key.as_bytes()).is_none(),
        )
        .await;
        assert_eq!(c2.get("ns", key.as_bytes()).await.unwrap(), None);
    }
    stop(nodes).await;
}

/// A plain `DEL` or `GETDEL` at a primary that holds no copy of the key (its store evicted
/// it) skips the read of the replica, as a plain `SET` does (`reads_before_put`): it
/// changes the key whatever it finds (decision 101), so the replication's answer finds the
/// replica's copy — `Stale`, adopted, executed again from it. The replies count and carry
/// that copy, as one Redis would, and no owner or member keeps it. A replica's copy the
/// primary knows is dead (a tag invalidation the replica missed) is not counted.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_at_a_primary_that_evicted_the_key_finds_the_replicas_copy() {
    use strata_core::ops::{KeyOp, Reply};
    let nodes = cluster_with(3, 2, None, |c| {
        c.cluster.handoff_window_ms = 200;
    })
    .await;
    let keys: Vec<String> = keys_owned_by(&nodes[0], "replica-only:", &["n0", "n1"])
        .take(3)
        .collect();
    let c2 = nodes[2].cache();
    for (key, value) in keys[..2].iter().zip(["one", "two"]) {
        c2.set("ns", key.clone(), value).await.unwrap();
    }
    let tagged = strata_core::SetOptions {
        tags: strata_core::entry::Tags::new(["gone"]),
        ..Default::default()
    };
    c2.set_with("ns", keys[2].clone(), "three", tagged)
        .await
        .unwrap();
    // Past the hand-off window of the cluster's last ring change: the plan is the owners.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for key in &keys[..2] {
        assert!(
            nodes[0].evict_owner_copy("ns", key.as_bytes()),
            "the primary held it"
        );
        assert!(
            nodes[1].owner_copy("ns", key.as_bytes()).is_some(),
            "the replica holds it"
        );
    }
    // The third key's tag is invalidated everywhere but on the replica.
    nodes[1].ignore_invalidations(true);
    nodes[0]
        .cache()
        .invalidate_tag("ns", b"gone")
        .await
        .unwrap();
    assert!(nodes[0].owner_copy("ns", keys[2].as_bytes()).is_none());
    assert!(
        nodes[1].owner_copy("ns", keys[2].as_bytes()).is_some(),
        "the replica missed the tag's invalidation"
    );
    let unread = nodes[0].unread_writes();
    let del = c2
        .execute("ns", bytes::Bytes::from(keys[0].clone()), &KeyOp::Del)
        .await
        .unwrap();
    assert_eq!(
        del,
        Reply::Int(1),
        "DEL counts the replica's copy, as one Redis would"
    );
    let getdel = c2
        .execute("ns", bytes::Bytes::from(keys[1].clone()), &KeyOp::GetDel)
        .await
        .unwrap();
    assert_eq!(
        getdel,
        Reply::Bulk(b"two".to_vec()),
        "GETDEL carries the replica's copy"
    );
    let dead = c2
        .execute("ns", bytes::Bytes::from(keys[2].clone()), &KeyOp::Del)
        .await
        .unwrap();
    assert_eq!(
        dead,
        Reply::Int(0),
        "the replica's copy was dead: nothing to count"
    );
    nodes[1].ignore_invalidations(false);
    assert_eq!(
        nodes[0].unread_writes(),
        unread + 3,
        "each executed without reading the replica first"
    );
    for key in &keys {
        for n in &nodes {
            assert!(n.owner_copy("ns", key.as_bytes()).is_none());
        }
        eventually(
            "the member that wrote the key stops serving it",
            Duration::from_secs(5),
            || nodes[2].cache().l1_expiry("ns", key.as_bytes()).is_none(),
        )
        .await;
        for n in &nodes {
            assert_eq!(n.cache().get("ns", key.as_bytes()).await.unwrap(), None);
        }
    }
    stop(nodes).await;
}

/// A member that stores a pushed copy of a key it does not own in its own view — a hand-off
/// push or read repair placed by another member's view — passes it on to the owners in its
/// view (ARCHITECTURE decision 100; simulator seed 3237: a key's last copy was pushed by a
/// cut-off member to a member no one else counted as an owner, and its primary restarted
/// the counter from nothing). An older copy than the owner holds changes nothing there.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_copy_of_a_key_this_member_does_not_own_reaches_its_owner() {
    let nodes = cluster(3, 1, None).await;
    let key = keys_owned_by(&nodes[0], "misplaced:", &["n0"])
        .next()
        .expect("a key n0 alone owns");
    let now = nodes[0].cache().now_ms();
    assert!(nodes[0].owner_copy("ns", key.as_bytes()).is_none());
    // n1 takes the push (its store keeps what it is given) and passes it on to n0.
    let pushed = planted_entry(b"pushed", now - 10, now);
    assert!(
        nodes[1]
            .receive_peer_set("ns", key.as_bytes(), &pushed)
            .await
    );
    eventually(
        "the owner holds the pushed copy",
        Duration::from_secs(10),
        || {
            nodes[0]
                .owner_copy("ns", key.as_bytes())
                .is_some_and(|e| e.value.as_ref() == b"pushed")
        },
    )
    .await;
    assert_eq!(
        nodes[2]
            .cache()
            .get("ns", key.as_bytes())
            .await
            .unwrap()
            .as_deref(),
        Some(&b"pushed"[..]),
        "a read through a third member finds it at the owner"
    );
    // An older copy pushed to n2 reaches n0 too, which keeps its newer one.
    let older = planted_entry(b"older", now - 20, now);
    assert!(
        nodes[2]
            .receive_peer_set("ns", key.as_bytes(), &older)
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        nodes[0].owner_copy("ns", key.as_bytes()).map(|e| e.value),
        Some(bytes::Bytes::from_static(b"pushed"))
    );
    stop(nodes).await;
}

/// A replica that applied a removal newer than a primary's change refuses the change — and
/// says so, so that the primary executes it again above the removal. An earlier primary whose
/// clock ran ahead deleted the key at a version the new primary's clock has not reached; the
/// replica's store took the change and dropped it at once (the removal is newer), and once
/// answered `Replicated`: the SET, and the INCR, were acknowledged and lived on the primary
/// alone, lost for good with it.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_below_a_replicas_newer_removal_is_executed_again_above_it() {
    use strata_core::ops::{KeyOp, Reply};
    let nodes = cluster(2, 2, None).await;
    let keys: Vec<String> = keys_owned_by(&nodes[0], "ahead:", &["n0", "n1"])
        .take(5)
        .collect();
    let c0 = nodes[0].cache();
    // A version `mins` minutes ahead of the wall clock (n0's clock observes each one).
    let ahead = |mins: u64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        strata_core::Version::from_parts(now + mins * 60_000, 0).as_u64()
    };

    // A SET over a removal n0 has not seen.
    let key = &keys[0];
    c0.set("ns", key.clone(), "a").await.unwrap();
    let removed_at = ahead(1);
    assert!(nodes[1].receive_replicated_removal("ns", key.as_bytes(), removed_at));
    assert!(nodes[1].owner_copy("ns", key.as_bytes()).is_none());
    c0.set("ns", key.clone(), "b").await.unwrap();
    let held = nodes[1]
        .owner_copy("ns", key.as_bytes())
        .expect("the replica holds the acknowledged SET");
    assert_eq!(&held.value[..], b"b");
    assert!(
        held.version.as_u64() > removed_at,
        "ordered after the removal"
    );
    assert_eq!(
        nodes[0].owner_copy("ns", key.as_bytes()).map(|e| e.version),
        Some(held.version),
        "both owners hold the same version"
    );

    // An INCR over a removal n0 has not seen starts from no value, as after the DEL.
    let key = &keys[1];
    c0.set("ns", key.clone(), "5").await.unwrap();
    let removed_at = ahead(2);
    assert!(nodes[1].receive_replicated_removal("ns", key.as_bytes(), removed_at));
    let got = c0
        .execute("ns", bytes::Bytes::from(key.clone()), &KeyOp::IncrBy(1))
        .await
        .unwrap();
    assert_eq!(got, Reply::Int(1), "the INCR ordered after the removal");
    let held = nodes[1]
        .owner_copy("ns", key.as_bytes())
        .expect("the replica holds the acknowledged INCR");
    assert_eq!(&held.value[..], b"1");
    assert!(held.version.as_u64() > removed_at);
    assert_eq!(
        nodes[1]
            .cache()
            .get("ns", key.as_bytes())
            .await
            .unwrap()
            .as_deref(),
        Some(&b"1"[..])
    );

    // The same removal, but n0's clock is already past it: the INCR is stamped above it,
    // and only the copy it executes from tells that it is dead (the replica checks the
    // primary's base, not only the change's version). It answered 6.
    let key = &keys[2];
    c0.set("ns", key.clone(), "5").await.unwrap();
    let base = nodes[0]
        .owner_copy("ns", key.as_bytes())
        .expect("n0 holds the value")
        .version
        .as_u64();
    let removed_at = base + 1;
    assert!(nodes[1].receive_replicated_removal("ns", key.as_bytes(), removed_at));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let got = c0
        .execute("ns", bytes::Bytes::from(key.clone()), &KeyOp::IncrBy(1))
        .await
        .unwrap();
    assert_eq!(got, Reply::Int(1), "the INCR ordered after the removal");
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(
            n.owner_copy("ns", key.as_bytes()).map(|e| e.value.to_vec()),
            Some(b"1".to_vec()),
            "n{i}"
        );
    }

    // A primary's own DEL is part of its base: the SET after it costs no second round.
    let reexecuted = |n: &strata::Node| counter(n, "strata_cluster_writes_reexecuted_total");
    let before = reexecuted(&nodes[0]);
    let key = &keys[3];
    c0.set("ns", key.clone(), "a").await.unwrap();
    assert!(c0.invalidate("ns", key.as_bytes()).await.unwrap());
    c0.set("ns", key.clone(), "b").await.unwrap();
    assert_eq!(reexecuted(&nodes[0]), before, "a write was executed twice");
    assert_eq!(
        nodes[1]
            .owner_copy("ns", key.as_bytes())
            .map(|e| e.value.to_vec()),
        Some(b"b".to_vec())
    );

    // The base is raised only when the primary executes from no copy: its tombstones also
    // record writes, and an owner holding such a write must still answer `Stale` with it.
    // n0 holds an older copy of a key and a tombstone at the version n1 holds (live);
    // raised to it, the base hid n1's copy, and the INCR ran from n0's: 6, and 10 lost.
    let key = &keys[4];
    c0.set("ns", key.clone(), "5").await.unwrap();
    let older = nodes[0].owner_copy("ns", key.as_bytes()).unwrap();
    c0.set("ns", key.clone(), "10").await.unwrap();
    let newer = nodes[1].owner_copy("ns", key.as_bytes()).unwrap();
    assert!(nodes[0].receive_replicated_removal("ns", key.as_bytes(), newer.version.as_u64()));
    nodes[0].plant_owner_copy("ns", key.as_bytes(), older);
    let got = c0
        .execute("ns", bytes::Bytes::from(key.clone()), &KeyOp::IncrBy(1))
        .await
        .unwrap();
    assert_eq!(
        got,
        Reply::Int(11),
        "the INCR ran from the owner's newer copy"
    );

    // A tag invalidation newer than a live, untagged destination does not refuse a RENAME
    // of a source refilled with that tag since: the owners check the base against the key's
    // removals, not the change's tags (the source's). It was refused for 60 s.
    let tag = hash_tag_owned_by(&nodes[0], "rn", &["n0", "n1"]);
    let (src, dst) = (format!("{tag}src"), format!("{tag}dst"));
    c0.set("ns", dst.clone(), "old").await.unwrap();
    c0.invalidate_tag("ns", b"refill").await.unwrap();
    let opts = strata_core::SetOptions {
        tags: strata_core::entry::Tags::new(["refill"]),
        ..Default::default()
    };
    c0.set_with("ns", src.clone(), "moved", opts).await.unwrap();
    let op = strata_core::ops::MultiOp::Rename {
        src: src.as_bytes().to_vec(),
        dst: dst.as_bytes().to_vec(),
        nx: false,
    };
    assert_eq!(c0.execute_multi("ns", &op).await.ok(), Some(Reply::Ok));
    assert_eq!(
        nodes[1]
            .owner_copy("ns", dst.as_bytes())
            .map(|e| e.value.to_vec()),
        Some(b"moved".to_vec())
    );
    stop(nodes).await;
}

/// A primary never executes from a copy it knows is dead. n0 (the key's primary) applies a
/// tag invalidation that n1 (its replica) has not applied yet, so n1 still holds the tagged
/// counter. An INCR at n0 finds no copy of its own, replicates `1` against no base, and n1
/// answers that it holds something newer: the dead copy. Adopting it (as the primary once
/// did) brought the invalidated value back, answering 11. Coherence refuses it, and the
/// primary executes from no copy above its version instead: 1, and n1 takes it.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_does_not_adopt_a_copy_it_has_invalidated() {
    use strata_core::ops::{KeyOp, Reply};
    let nodes = cluster(2, 2, None).await;
    let key = keys_owned_by(&nodes[0], "dead:", &["n0", "n1"])
        .next()
        .expect("a key n0 is primary of");
    let c0 = nodes[0].cache();
    let opts = strata_core::SetOptions {
        tags: strata_core::entry::Tags::new(["batch"]),
        ..Default::default()
    };
    c0.set_with("ns", key.clone(), "10", opts).await.unwrap();
    nodes[1].ignore_invalidations(true);
    c0.invalidate_tag("ns", b"batch").await.unwrap();
    assert_eq!(c0.get("ns", key.as_bytes()).await.unwrap(), None);
    let got = c0
        .execute("ns", bytes::Bytes::from(key.clone()), &KeyOp::IncrBy(1))
        .await
        .unwrap();
    assert_eq!(
        got,
        Reply::Int(1),
        "an INCR after the counter's tag was invalidated continued from the dead copy"
    );
    // The same for a multi-key command: its second key's dead copy on the replica, seen
    // by the primary's read, sets that key's base, so MSETNX is not left half applied on
    // the replica (it was: the first key replicated, the second answered `Stale`).
    let tag = hash_tag_owned_by(&nodes[0], "m", &["n0", "n1"]);
    let (a, b) = (format!("{tag}a"), format!("{tag}b"));
    nodes[1].ignore_invalidations(false);
    let opts = strata_core::SetOptions {
        tags: strata_core::entry::Tags::new(["batch2"]),
        ..Default::default()
    };
    c0.set_with("ns", b.clone(), "old", opts).await.unwrap();
    nodes[1].ignore_invalidations(true);
    c0.invalidate_tag("ns", b"batch2").await.unwrap();
    let op = strata_core::ops::MultiOp::MsetNx(vec![
        (a.as_bytes().to_vec().into(), b"1".to_vec().into()),
        (b.as_bytes().to_vec().into(), b"2".to_vec().into()),
    ]);
    let got = c0.execute_multi("ns", &op).await;
    assert_eq!(
        got.ok(),
        Some(Reply::Int(1)),
        "MSETNX over a key whose tag was invalidated (the replica still held it)"
    );
    nodes[1].ignore_invalidations(false);
    // The replica took both changes over their dead copies.
    let c1 = nodes[1].cache();
    assert_eq!(
        c1.get("ns", key.as_bytes()).await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        c1.get("ns", b.as_bytes()).await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    stop(nodes).await;
}

/// A replica that holds an expired copy still inside its stale grace, stamped above the
/// primary's clock (left by an earlier primary whose clock ran ahead), cannot store the
/// primary's change over it: its store keeps the newer version. It once answered `Replicated` all the same, so the
/// acknowledged SET lived on the primary alone; it answers `Stale` with that copy now, and
/// the primary executes again above it, so both owners hold the value.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_kept_a_newer_expired_copy_does_not_acknowledge() {
    let nodes = cluster(2, 2, None).await;
    let key = keys_owned_by(&nodes[0], "ahead:", &["n0", "n1"])
        .next()
        .expect("a key n0 is primary of");
    let now = nodes[1].cache().now_ms();
    let ahead = strata_core::Version::from_u64((now + 60_000) << 16);
    nodes[1].plant_owner_copy(
        "ns",
        key.as_bytes(),
        strata_core::Entry {
            value: bytes::Bytes::from_static(b"old"),
            version: ahead,
            expires_at_ms: Some(now - 1),
            stale_until_ms: Some(now + 60_000),
            tags: Default::default(),
        },
    );
    let c0 = nodes[0].cache();
    c0.set("ns", key.clone(), "new").await.unwrap();
    let held = nodes[1]
        .owner_copy("ns", key.as_bytes())
        .expect("the replica holds a copy");
    assert_eq!(
        &held.value[..],
        b"new",
        "an acknowledged SET is not on the replica (it kept its expired copy)"
    );
    assert!(held.version > ahead, "{:?} <= {ahead:?}", held.version);
    // A DEL of a key whose newest copy (the replica's) has expired: the primary's older
    // copy is dead, so the key does not exist, and DEL answers 0 as Redis would. It once
    // answered 1, deleting the older copy as if it were current.
    let key2 = keys_owned_by(&nodes[0], "ahead2:", &["n0", "n1"])
        .next()
        .expect("a key n0 is primary of");
    let planted = |value: &'static [u8], version, expires_at_ms| strata_core::Entry {
        value: bytes::Bytes::from_static(value),
        version,
        expires_at_ms,
        stale_until_ms: expires_at_ms.map(|_| now + 60_000),
        tags: Default::default(),
    };
    let older = strata_core::Version::from_u64(now << 16);
    nodes[0].plant_owner_copy("ns", key2.as_bytes(), planted(b"older", older, None));
    // Ahead of the primary's clock again (it observed `ahead` above).
    let further = strata_core::Version::from_u64((now + 120_000) << 16);
    nodes[1].plant_owner_copy(
        "ns",
        key2.as_bytes(),
        planted(b"old", further, Some(now - 1)),
    );
    let got = c0
        .execute(
            "ns",
            bytes::Bytes::from(key2.clone()),
            &strata_core::ops::KeyOp::Del,
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        strata_core::ops::Reply::Int(0),
        "DEL of a key whose newest copy has expired"
    );
    assert!(
        nodes[0].owner_copy("ns", key2.as_bytes()).is_none(),
        "the primary kept its dead copy"
    );
    stop(nodes).await;
}

/// A pattern invalidation that runs its removals while a write is between its primary's
/// checks and the owners' stores (a slow link to the replica here) does not leave the
/// write's value behind for good. It did: both owners stored a SET's value after the
/// pattern had removed what they held, and served it from their stores, while every other
/// member refused it (older than the pattern) — the node a client reached decided what it
/// saw, forever. Each owner now asks coherence again once it has stored a copy, and so does
/// the node that asked for an INCR when it mirrors the result into its L1. The two ran
/// concurrently, so either order is right, as long as every member sees the same one: when
/// the pattern reached the replica first, the replica refuses the write (`Superseded`) and
/// its primary executes it again above the pattern (ordered after it, served everywhere);
/// when the write got there first, the pattern removes it on every member (ordered
/// before).
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_invalidation_during_a_write_is_not_outlived_by_its_value() {
    use strata_core::ops::KeyOp;
    // The forwarded INCR waits for the delayed replication: room for a loaded machine.
    let nodes = cluster_with(2, 2, None, |c| c.cluster.rpc_timeout_ms = 5_000).await;
    // A SET through the primary n0, then an INCR through n1 (executed at n0, mirrored
    // into n1's L1).
    for (case, via) in [("set", 0usize), ("incr", 1)] {
        let key = keys_owned_by(&nodes[0], &format!("pat{case}:"), &["n0", "n1"])
            .next()
            .expect("a key n0 is primary of");
        let cache = nodes[via].cache();
        let delayed = nodes[0].replications_delayed();
        nodes[0].delay_replication(Duration::from_millis(400));
        let write = {
            let (cache, key) = (cache.clone(), key.clone());
            tokio::spawn(async move {
                match case {
                    "set" => cache.set("ns", key, "racing").await.map(|_| ()),
                    _ => cache
                        .execute("ns", bytes::Bytes::from(key), &KeyOp::IncrBy(1))
                        .await
                        .map(|_| ()),
                }
            })
        };
        // Until the write has passed its primary's checks and waits to replicate.
        let deadline = Instant::now() + Duration::from_secs(10);
        while nodes[0].replications_delayed() == delayed {
            assert!(
                Instant::now() < deadline,
                "{case}: the write never replicated"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A later millisecond than the write's stamp: a pattern stamped within the same
        // one on n1 may sort below it (the node tag decides), and then the write is
        // rightly ordered after the pattern.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let pattern = format!("pat{case}:*");
        cache
            .invalidate_pattern("ns", pattern.as_bytes())
            .await
            .unwrap();
        write.await.unwrap().unwrap();
        nodes[0].delay_replication(Duration::ZERO);
        let want: &[u8] = if case == "set" { b"racing" } else { b"1" };
        // The primary's copy says which order was chosen: the write's value (after the
        // pattern), or nothing (before it).
        let primary = nodes[0].owner_copy("ns", key.as_bytes());
        let served = primary.as_ref().map(|e| e.value.to_vec());
        assert!(
            served.as_deref().is_none_or(|v| v == want),
            "{case}: the primary holds {served:?}"
        );
        for (i, n) in nodes.iter().enumerate() {
            assert_eq!(
                n.owner_copy("ns", key.as_bytes()).map(|e| e.version),
                primary.as_ref().map(|e| e.version),
                "{case}: n{i}'s owner store disagrees with the primary's"
            );
            assert_eq!(
                n.cache()
                    .get("ns", key.as_bytes())
                    .await
                    .unwrap()
                    .map(|v| v.to_vec()),
                served,
                "{case}: n{i} serves another outcome than the owners hold"
            );
        }
    }
    stop(nodes).await;
}

/// A node that wrote a key through its primary refuses an older version of it at once,
/// whether or not the primary's invalidation has come back yet (the contract suite's
/// "an older version must not replace a newer one" once failed on a loaded CI machine when
/// it had not). Many keys, so that half of them have the other node as primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_write_after_a_newer_one_from_the_same_node_is_kept_newer() {
    let nodes = cluster(2, 2, None).await;
    let tier = nodes[0].cache().tier(Layer::L2).unwrap();
    let entry = |v: &'static [u8], version: u64| strata_core::Entry {
        value: bytes::Bytes::from_static(v),
        version: strata_core::Version::from_u64(version),
        expires_at_ms: None,
        stale_until_ms: None,
        tags: Default::default(),
    };
    let base = nodes[0].cache().now_ms() << 16;
    for i in 0..300u64 {
        let key = bytes::Bytes::from(format!("older:{i}"));
        tier.set("ns", key.clone(), entry(b"new", base + 2 * i + 2))
            .await
            .unwrap();
        assert_eq!(
            tier.set("ns", key.clone(), entry(b"old", base + 2 * i + 1))
                .await
                .unwrap(),
            strata_core::SetOutcome::KeptNewer,
            "key {i}"
        );
        assert_eq!(
            tier.get("ns", &key).await.unwrap().map(|e| e.value),
            Some(bytes::Bytes::from_static(b"new")),
            "key {i}"
        );
    }
    stop(nodes).await;
}

/// A node whose clock runs a minute behind another's writes a key after a version stamped
/// by the faster clock: its next writes of the key must still win on it (G1), never be
/// refused as older than a version it wrote or noted. (The primary's re-stamping of a
/// superseded write, which the node observes when the primary answers, is not forced here:
/// it needs the other node's invalidation to be late.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_another_clock_still_reads_its_own_latest_write() {
    use strata::NodeDeps;
    use strata_core::rng::SeededRng;
    use strata_core::{Clock, ManualClock};
    let slow = ManualClock::new(1_800_000_000_000);
    let fast = ManualClock::new(1_800_000_060_000);
    let a = Node::start_with(
        config("a", &[], 2),
        NodeDeps {
            clock: Arc::new(slow.clone()),
            rng: Box::new(SeededRng::new(1)),
        },
    )
    .await
    .unwrap();
    let b = Node::start_with(
        config("b", &[gossip_addr(&a)], 2),
        NodeDeps {
            clock: Arc::new(fast.clone()),
            rng: Box::new(SeededRng::new(2)),
        },
    )
    .await
    .unwrap();
    eventually("membership converges", Duration::from_secs(10), || {
        live(&a) == 2 && live(&b) == 2
    })
    .await;
    let (ca, cb) = (a.cache(), b.cache());
    let tier = ca.tier(Layer::L2).unwrap();
    for i in 0..200 {
        let key = format!("skew:{i}");
        cb.set("ns", key.clone(), "from-b").await.unwrap();
        // A version from a clock a minute ahead (b's), written through a's cluster tier, as
        // a primary re-stamps a write that a faster clock's write superseded.
        let ahead = strata_core::Entry {
            value: bytes::Bytes::from_static(b"ahead"),
            version: strata_core::Version::from_u64((fast.now_ms() + 1) << 16),
            expires_at_ms: None,
            stale_until_ms: None,
            tags: Default::default(),
        };
        tier.set("ns", bytes::Bytes::from(key.clone()), ahead)
            .await
            .unwrap();
        ca.set("ns", key.clone(), "a1").await.unwrap();
        ca.set("ns", key.clone(), "a2").await.unwrap();
        assert_eq!(
            ca.get("ns", key.as_bytes()).await.unwrap().as_deref(),
            Some(&b"a2"[..]),
            "{key}: node a's latest acknowledged write"
        );
    }
    stop(vec![a, b]).await;
}

/// A multi-key change goes to each replica in one request, checked for every key before
/// any is applied. Sent key by key, a replica that refused a later key had already applied
/// the earlier ones: the operation was left half applied there (an unknown outcome).
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_key_change_refused_at_a_later_key_is_applied_nowhere() {
    use strata_core::ops::{MultiOp, Reply, Transaction, TxStep};
    let nodes = cluster(2, 2, None).await;
    let now = nodes[0].cache().now_ms();
    let held = |n: &Node, k: &str| n.owner_copy("ns", k.as_bytes()).map(|e| e.value);
    let planted = |value: &'static [u8], at: u64| planted_entry(value, at, now);
    // RENAME writes the destination, then deletes the source. The primary holds an older
    // copy of the source than the replica (a write it missed): the replica refuses the
    // source's delete as stale, after it has taken the destination's write.
    let tag = hash_tag_owned_by(&nodes[0], "ren", &["n0", "n1"]);
    let (src, dst) = (format!("{tag}src"), format!("{tag}dst"));
    nodes[0].plant_owner_copy("ns", src.as_bytes(), planted(b"first", now - 20));
    nodes[1].plant_owner_copy("ns", src.as_bytes(), planted(b"second", now - 10));
    let op = MultiOp::Rename {
        src: src.as_bytes().to_vec(),
        dst: dst.as_bytes().to_vec(),
        nx: false,
    };
    let got = nodes[0].cache().execute_multi("ns", &op).await;
    assert!(
        matches!(got, Ok(Reply::Ok)),
        "RENAME over a source the replica held newer: {got:?}"
    );
    for n in &nodes {
        let held = n.owner_copy("ns", dst.as_bytes()).map(|e| e.value);
        assert_eq!(
            held.as_deref(),
            Some(&b"second"[..]),
            "the destination holds the newest source on every owner"
        );
        assert!(
            n.owner_copy("ns", src.as_bytes()).is_none(),
            "the source is gone on every owner"
        );
    }
    // The replica has applied removals the primary has not (`DEL`s by an earlier primary
    // whose clock ran ahead): it refuses the keys they cover, after the check of every
    // key and with nothing applied.
    let ahead = (now + 60_000) << 16;
    let c0 = nodes[0].cache();
    // MSETNX writes its keys in order; the second was deleted. MSETNX and RENAME change
    // every key they read, so the primary executes again from no copy of the refused key,
    // above the removal: 1, on both owners.
    let tag = hash_tag_owned_by(&nodes[0], "msnx", &["n0", "n1"]);
    let (a, b) = (format!("{tag}a"), format!("{tag}b"));
    assert!(nodes[1].receive_replicated_removal("ns", b.as_bytes(), ahead));
    let msetnx = MultiOp::MsetNx(vec![
        (a.as_bytes().to_vec().into(), b"1".to_vec().into()),
        (b.as_bytes().to_vec().into(), b"2".to_vec().into()),
    ]);
    let got = c0.execute_multi("ns", &msetnx).await;
    assert!(
        matches!(got, Ok(Reply::Int(1))),
        "MSETNX over a removal only the replica has applied: {got:?}"
    );
    for n in &nodes {
        assert_eq!(held(n, &a).as_deref(), Some(&b"1"[..]));
        assert_eq!(held(n, &b).as_deref(), Some(&b"2"[..]));
    }
    // A RENAME whose source the replica has seen deleted and the primary has not: the
    // primary's copy of the source is dead. Its value written under the new name brought
    // a deleted value back (`OK`); the replica checks the source's removal against the
    // removals it applied, and the primary executes again without the dead copy: no
    // such key, as Redis answers after the `DEL`.
    let tag = hash_tag_owned_by(&nodes[0], "rendel", &["n0", "n1"]);
    let (src2, dst2) = (format!("{tag}src"), format!("{tag}dst"));
    for n in &nodes {
        n.plant_owner_copy("ns", src2.as_bytes(), planted(b"deleted", now - 20));
    }
    assert!(nodes[1].receive_replicated_removal("ns", src2.as_bytes(), ahead));
    let rename = MultiOp::Rename {
        src: src2.as_bytes().to_vec(),
        dst: dst2.as_bytes().to_vec(),
        nx: false,
    };
    let got = c0.execute_multi("ns", &rename).await;
    assert!(
        matches!(&got, Ok(Reply::Error(e)) if e.contains("no such key")),
        "RENAME of a source only the replica saw deleted: {got:?}"
    );
    for n in &nodes {
        assert_eq!(held(n, &dst2), None, "the deleted value came back renamed");
        assert_eq!(held(n, &src2), None);
    }
    // A transaction over a removal only the replica applied: every key it read is checked
    // by the owners now, changed or not (decision 96), so it executes again above the
    // removal, as a single key's change does — applied on both owners. (Before, when keys
    // read and not changed went unchecked, it was refused until the primary applied the
    // removal: here never, `TRYAGAIN` after the node's retries.)
    let tag = hash_tag_owned_by(&nodes[0], "txdel", &["n0", "n1"]);
    let (x, y) = (format!("{tag}x"), format!("{tag}y"));
    assert!(nodes[1].receive_replicated_removal("ns", y.as_bytes(), ahead));
    let set = |key: u32, value: &[u8]| TxStep::Key {
        key,
        op: plain_set(value),
    };
    let tx = MultiOp::Transaction(Transaction {
        keys: vec![x.as_bytes().to_vec().into(), y.as_bytes().to_vec().into()],
        watch: Vec::new(),
        steps: vec![set(0, b"1"), set(1, b"2")],
        default_ttl_ms: None,
    });
    let got = c0.execute_multi("ns", &tx).await;
    assert_eq!(
        got.as_ref().ok(),
        Some(&Reply::Exec(Some(vec![Reply::Ok, Reply::Ok]))),
        "a transaction over a removal the primary has not applied: {got:?}"
    );
    for n in &nodes {
        assert_eq!(held(n, &x).as_deref(), Some(&b"1"[..]));
        assert_eq!(held(n, &y).as_deref(), Some(&b"2"[..]));
        assert!(
            n.owner_copy("ns", y.as_bytes()).unwrap().version.as_u64() > ahead,
            "the write is ordered after the removal"
        );
    }
    stop(nodes).await;
}

/// A multi-key change is checked on the owner as its store will take it, size included:
/// an owner whose store holds less per entry than the primary's (a smaller
/// `cluster.owner_capacity_bytes`) refused the large value at its store, after it had
/// stored the command's first key: half applied there, and an unknown outcome.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_one_owner_cannot_hold_refuses_the_whole_multi_key_change() {
    use strata_core::ops::MultiOp;
    let nodes = cluster_with(2, 2, None, |c| {
        if c.node.name == "n1" {
            c.cluster.owner_capacity_bytes = 1 << 20;
        }
    })
    .await;
    let tag = hash_tag_owned_by(&nodes[0], "big", &["n0", "n1"]);
    let (a, b) = (format!("{tag}a"), format!("{tag}b"));
    let op = MultiOp::MsetNx(vec![
        (a.as_bytes().to_vec().into(), b"1".to_vec().into()),
        (b.as_bytes().to_vec().into(), vec![b'v'; 512 << 10].into()),
    ]);
    let got = nodes[0].cache().execute_multi("ns", &op).await;
    let why = format!("{got:?}");
    assert!(
        why.contains("ERR owner n1 holds at most") && why.contains("nothing was applied"),
        "MSETNX of a value one owner cannot hold: {why}"
    );
    let c1 = nodes[1].cache();
    assert_eq!(
        c1.get("ns", a.as_bytes()).await.unwrap(),
        None,
        "MSETNX half applied: {why}"
    );
    stop(nodes).await;
}

/// A read-modify-write executed from a copy that a tag invalidation has removed on the
/// replica, and not yet on the primary (the invalidation is on its way), must not continue
/// from the dead copy: the replica checks the base's tags (sent with the change), and the
/// primary executes again from no copy. It once answered 11 after the counter's tag was
/// invalidated, and every owner kept counting from the dead value.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_modify_write_of_a_copy_its_replica_saw_invalidated_by_tag_starts_over() {
    use strata_core::ops::{KeyOp, Reply};
    let nodes = cluster(2, 2, None).await;
    let key = keys_owned_by(&nodes[0], "tagged:", &["n0", "n1"])
        .next()
        .expect("a key n0 is primary of");
    let (c0, c1) = (nodes[0].cache(), nodes[1].cache());
    let opts = strata_core::SetOptions {
        tags: strata_core::entry::Tags::new(["batch"]),
        ..Default::default()
    };
    c0.set_with("ns", key.clone(), "10", opts).await.unwrap();
    nodes[0].ignore_invalidations(true);
    c1.invalidate_tag("ns", b"batch").await.unwrap();
    let got = c0
        .execute("ns", bytes::Bytes::from(key.clone()), &KeyOp::IncrBy(1))
        .await
        .unwrap();
    assert_eq!(
        got,
        Reply::Int(1),
        "an INCR continued from a copy whose tag the replica saw invalidated"
    );
    nodes[0].ignore_invalidations(false);
    assert_eq!(
        c1.get("ns", key.as_bytes()).await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    stop(nodes).await;
}

/// [`cluster`] with L3 on every node, each in a directory of its own (kept while the
/// returned handles live).
#[cfg(all(feature = "fault-injection", feature = "l3"))]
async fn cluster_with_l3(n: usize, rf: u32) -> (Vec<Node>, Vec<tempfile::TempDir>) {
    cluster_with_l3_keeping(n, rf, true).await
}

/// A directory holding an L3 from an earlier life of a node: a member started on it is a
/// restart, which proves the copies pushed to it while it settles (one started on an empty
/// L3 has nothing to prove and trusts them, as a member without L3 does).
#[cfg(all(feature = "fault-injection", feature = "l3"))]
async fn l3_of_an_earlier_life() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut solo = strata::NodeConfig::for_test();
    solo.l3.enabled = true;
    solo.l3.data_dir = dir.path().to_path_buf();
    let node = Node::start(solo).await.unwrap();
    node.cache().set("ns", "earlier", "life").await.unwrap();
    node.shutdown().await;
    dir
}

/// Starts `n3` on an L3 of an earlier life (a restart: it proves what is pushed to it, after
/// twice its `max_staleness_ms` of 6 s) and waits until all four members see each other;
/// when it was started.
#[cfg(all(feature = "fault-injection", feature = "l3"))]
async fn restart_n3(nodes: &mut Vec<Node>, dirs: &mut Vec<tempfile::TempDir>) -> Instant {
    restart_n3_with(nodes, dirs, |_| {}).await
}

/// [`cluster_with_l3`] of three members, RF 2, with 600 keys `kv:N` written through n0,
/// each holding `v-kv:N`; the keys.
#[cfg(all(feature = "fault-injection", feature = "l3"))]
async fn cluster_with_l3_and_keys() -> (Vec<Node>, Vec<tempfile::TempDir>, Vec<String>) {
    let (nodes, dirs) = cluster_with_l3(3, 2).await;
    let c0 = nodes[0].cache();
    let keys: Vec<String> = (0..600).map(|i| format!("kv:{i}")).collect();
    for k in &keys {
        c0.set("ns", k.clone(), format!("v-{k}")).await.unwrap();
    }
    (nodes, dirs, keys)
}

/// The value of the counter `name` (its full Prometheus name) on `node`.
#[cfg(feature = "fault-injection")]
fn counter(node: &Node, name: &str) -> u64 {
    node.encode_metrics()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("metric {name}"))
}

/// [`restart_n3`] with `tweak` applied to n3's configuration.
#[cfg(all(feature = "fault-injection", feature = "l3"))]
async fn restart_n3_with(
    nodes: &mut Vec<Node>,
    dirs: &mut Vec<tempfile::TempDir>,
    tweak: impl FnOnce(&mut strata::NodeConfig),
) -> Instant {
    let dir = l3_of_an_earlier_life().await;
    let mut cfg = config("n3", &[gossip_addr(&nodes[0])], 2);
    cfg.l3.enabled = true;
    cfg.l3.data_dir = dir.path().to_path_buf();
    cfg.cluster.max_staleness_ms = 6_000;
    tweak(&mut cfg);
    dirs.push(dir);
    let started = Instant::now();
    nodes.push(Node::start(cfg).await.unwrap());
    eventually("n3 joins", Duration::from_secs(10), || {
        nodes.iter().all(|n| live(n) == 4)
    })
    .await;
    started
}

/// [`cluster_with_l3`] with `l3.keep_writes` as given.
#[cfg(all(feature = "fault-injection", feature = "l3"))]
async fn cluster_with_l3_keeping(
    n: usize,
    rf: u32,
    keep_writes: bool,
) -> (Vec<Node>, Vec<tempfile::TempDir>) {
    let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let nodes = cluster_with(n, rf, None, |c| {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.l3.enabled = true;
        c.l3.data_dir = dirs[i].path().to_path_buf();
        c.l3.keep_writes = keep_writes;
    })
    .await;
    (nodes, dirs)
}

/// With `l3.keep_writes = false`, writes on both nodes race reads on one of them (whose
/// promotions fill its L3): once all are done, that node's L3 holds, for every key, either
/// nothing or what the owners hold, and reads from it after L1 is emptied answer the
/// owners' value.
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_kept_writes_l3_never_holds_what_a_write_replaced() {
    let (nodes, _dirs) = cluster_with_l3_keeping(3, 2, false).await;
    let (c0, c1) = (nodes[0].cache(), nodes[1].cache());
    let (l2, l3) = (
        c0.tier(Layer::L2).expect("L2 on"),
        c0.tier(Layer::L3).expect("L3 on"),
    );
    // Keys n0 does not own: its reads and writes go to the other two.
    let keys: Vec<String> = keys_owned_by(&nodes[0], "wa:", &["n1", "n2"])
        .take(300)
        .collect();
    for (i, key) in keys.iter().enumerate() {
        c1.set("ns", key.clone(), format!("first{i}"))
            .await
            .unwrap();
    }
    // Read through n0 one by one: L3 takes copies of the first values.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut first_in_l3 = 0;
    for key in &keys {
        c0.get("ns", key.as_bytes()).await.unwrap();
        if l3.get("ns", key.as_bytes()).await.unwrap().is_some() {
            first_in_l3 += 1;
        }
    }
    assert!(first_in_l3 > 0, "no read was promoted into L3");
    let mut promoted = 0;
    for (i, key) in keys.iter().enumerate() {
        // The read goes first: it misses L1 and asks the owners, while the write follows.
        let (read, write) = tokio::join!(
            c0.get("ns", key.as_bytes()),
            c0.set("ns", key.clone(), format!("n0-{i}")),
        );
        read.unwrap();
        write.unwrap();
        if l3.get("ns", key.as_bytes()).await.unwrap().is_some() {
            promoted += 1;
        }
    }
    // Half the keys written again on n1, then everything read through n0 (promotions).
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        c1.set("ns", key.clone(), format!("n1-{i}")).await.unwrap();
    }
    c0.drop_local_everything(false).await;
    for key in &keys {
        c0.get("ns", key.as_bytes()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    c0.drop_local_everything(false).await;
    let mut in_l3 = 0;
    for key in &keys {
        let owners = l2.get("ns", key.as_bytes()).await.unwrap().map(|e| e.value);
        let disk = l3.get("ns", key.as_bytes()).await.unwrap().map(|e| e.value);
        if disk.is_some() {
            in_l3 += 1;
            assert_eq!(disk, owners, "{key}: L3 holds what a write replaced");
        }
        assert_eq!(
            c0.get("ns", key.as_bytes()).await.unwrap(),
            owners,
            "{key}: n0 answers what the owners no longer hold"
        );
    }
    assert!(
        in_l3 > 0,
        "no read was promoted into L3 (during the race: {promoted})"
    );
    stop(nodes).await;
}

/// A read-modify-write this node executes as the key's primary for its own client leaves
/// L3 to the client's cache, which writes the result there (or removes the key) at once:
/// this node's L3 never keeps the value the command replaced.
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primarys_own_command_leaves_no_older_copy_in_its_l3() {
    use strata_core::ops::{KeyOp, Reply};
    let (nodes, _dirs) = cluster_with_l3(2, 2).await;
    let key = keys_owned_by(&nodes[0], "own:", &["n0", "n1"])
        .next()
        .expect("a key n0 is primary of");
    let c0 = nodes[0].cache();
    let l3 = c0.tier(Layer::L3).expect("L3 on");
    let on_disk = || async { l3.get("ns", key.as_bytes()).await.unwrap().map(|e| e.value) };
    c0.set("ns", key.clone(), "10").await.unwrap();
    assert_eq!(on_disk().await.as_deref(), Some(&b"10"[..]));
    let k = bytes::Bytes::from(key.clone());
    for want in 11..14 {
        let got = c0
            .execute("ns", k.clone(), &KeyOp::IncrBy(1))
            .await
            .unwrap();
        assert_eq!(got, Reply::Int(want));
        assert_eq!(
            on_disk().await.as_deref(),
            Some(want.to_string().as_bytes()),
            "L3 kept the value INCR replaced"
        );
    }
    let got = c0.execute("ns", k.clone(), &KeyOp::GetDel).await.unwrap();
    assert_eq!(got, Reply::Bulk(b"13".to_vec()));
    assert_eq!(on_disk().await, None, "L3 kept the value GETDEL removed");
    c0.set("ns", key.clone(), "20").await.unwrap();
    assert!(c0.invalidate("ns", key.as_bytes()).await.unwrap());
    assert_eq!(on_disk().await, None, "L3 kept the value DEL removed");
    stop(nodes).await;
}

/// A delete racing a write of the same key on the key's primary node: once both are
/// acknowledged, that node's L3 holds what the owners hold — never the write's copy after
/// the delete won (the delete removes from L3 while the primary still works on it, before
/// the racing write's copy has landed there).
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_a_write_on_the_primary_leaves_no_copy_in_its_l3() {
    let (nodes, _dirs) = cluster_with_l3(2, 2).await;
    let c0 = nodes[0].cache();
    let (l2, l3) = (
        c0.tier(Layer::L2).expect("L2 on"),
        c0.tier(Layer::L3).expect("L3 on"),
    );
    let keys: Vec<String> = keys_owned_by(&nodes[0], "race:", &["n0", "n1"])
        .take(200)
        .collect();
    let mut deleted_last = 0;
    for key in &keys {
        let (set, del) = tokio::join!(
            c0.set("ns", key.clone(), "v"),
            c0.invalidate("ns", key.as_bytes())
        );
        set.unwrap();
        del.unwrap();
        let owners = l2.get("ns", key.as_bytes()).await.unwrap();
        let disk = l3.get("ns", key.as_bytes()).await.unwrap();
        if owners.is_none() {
            deleted_last += 1;
            assert_eq!(
                disk.map(|e| e.value),
                None,
                "{key}: L3 kept a copy the owners deleted"
            );
        }
    }
    assert!(
        deleted_last > 0,
        "the delete never came last: the race was not run"
    );
    stop(nodes).await;
}

/// A write a node could not get to its key's owners is an error, and leaves no copy on that
/// node: not in L1, nor in L3, which a member reads first (decision 94). Before, the L3 copy
/// stayed, and the node served the failed write's value, which no owner had.
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_failed_leaves_no_copy_on_the_node_that_took_it() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let nodes = cluster_with(3, 2, None, |c| {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.l3.enabled = true;
        c.l3.data_dir = dirs[i].path().to_path_buf();
        c.cluster.rpc_timeout_ms = 300;
        c.cluster.failover_wait_ms = 300;
    })
    .await;
    let c0 = nodes[0].cache();
    let l3 = c0.tier(Layer::L3).expect("L3 on");
    eventually(
        "n0's L3 is proven and serves",
        Duration::from_secs(30),
        || c0.l3_serving(),
    )
    .await;
    // A key n0 does not own.
    let key = keys_owned_by(&nodes[0], "failed:", &["n1", "n2"])
        .next()
        .expect("a key owned by n1 then n2");
    // Once the primary has joined and holds its lease (an L3 that starts empty is on the
    // read path at once, before that).
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = c0.set("ns", key.clone(), "first").await {
        assert!(Instant::now() < deadline, "the first write never went: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nodes[0].isolate_from(&["n1", "n2"]);
    let failed = c0.set("ns", key.clone(), "failed").await;
    assert!(failed.is_err(), "a write no owner could take: {failed:?}");
    assert!(
        l3.get("ns", key.as_bytes())
            .await
            .unwrap()
            .is_none_or(|e| e.value != "failed"),
        "L3 kept the failed write"
    );
    let read = c0.get("ns", key.as_bytes()).await;
    assert!(
        !matches!(&read, Ok(Some(v)) if v == "failed"),
        "n0 served the failed write's value: {read:?}"
    );
    nodes[0].heal_network();
    eventually("all three again", Duration::from_secs(30), || {
        nodes.iter().all(|n| live(n) == 3)
    })
    .await;
    assert_eq!(
        c0.get("ns", key.as_bytes()).await.unwrap().as_deref(),
        Some(&b"first"[..]),
        "after the partition healed"
    );
    stop(nodes).await;
}

/// While a node executes a key as its primary, it refuses a replication of that key from
/// whoever its view names the primary, and takes it once the execution ended (decision 96).
/// Without it, a view change under an execution lost increments: n2, primary under the old
/// view, executed `INCR` from `v`; n1, primary in n2's new view, read `v` from n2, and n2
/// took n1's `v+1` as its replica, then stored its own `v+1` — both acknowledged `v+1` (an
/// attack review reproduced it with real processes: one value answered twice in 2 runs of
/// 2). Here the replication arrives through the fault-injection hook, as from the primary
/// in this node's view, while the node's own `INCR` waits to replicate.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_executing_a_key_takes_no_replication_of_it_meanwhile() {
    use strata_core::ops::{KeyOp, Reply};
    let nodes = cluster_with(2, 2, None, |c| c.cluster.rpc_timeout_ms = 5_000).await;
    let key = keys_owned_by(&nodes[0], "exec:", &["n0", "n1"])
        .next()
        .expect("a key n0 is primary of");
    let c0 = nodes[0].cache();
    c0.set("ns", key.clone(), "10").await.unwrap();
    let delayed = nodes[0].replications_delayed();
    nodes[0].delay_replication(Duration::from_millis(500));
    let incr = {
        let (c0, key) = (c0.clone(), key.clone());
        tokio::spawn(async move {
            c0.execute("ns", bytes::Bytes::from(key), &KeyOp::IncrBy(1))
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[0].replications_delayed() == delayed {
        assert!(Instant::now() < deadline, "the INCR never replicated");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // A removal stamped well above anything the INCR stamps.
    let ahead = nodes[0]
        .owner_copy("ns", key.as_bytes())
        .expect("n0 holds the key")
        .version
        .as_u64()
        + (1 << 40);
    assert!(
        !nodes[0].receive_replicated_removal("ns", key.as_bytes(), ahead),
        "n0 took a replication of a key it was executing"
    );
    assert_eq!(incr.await.unwrap().unwrap(), Reply::Int(11));
    nodes[0].delay_replication(Duration::ZERO);
    assert_eq!(
        nodes[0]
            .owner_copy("ns", key.as_bytes())
            .map(|e| e.value.to_vec()),
        Some(b"11".to_vec()),
        "the INCR's result is not what n0 holds"
    );
    // Once the execution ended, the same replication is taken.
    assert!(nodes[0].receive_replicated_removal("ns", key.as_bytes(), ahead + 1));
    assert!(nodes[0].owner_copy("ns", key.as_bytes()).is_none());
    stop(nodes).await;
}

/// The keys a transaction reads without changing them are checked by the owners as a
/// changed key's base is (decision 96): a primary holding an older copy of one — a write it
/// missed, as a primary back from a partition does — executes again from the owner's newer
/// copy, so a `WATCH` of it aborts and a read of it answers the newer value, where before
/// the transaction committed on the stale copy.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_a_transaction_only_reads_are_checked_by_the_owners() {
    use strata_core::ops::{KeyOp, MultiOp, Reply, Transaction, TxStep};
    let nodes = cluster(2, 2, None).await;
    let now = nodes[0].cache().now_ms();
    let planted = |value: &'static [u8], at: u64| planted_entry(value, at, now);
    for watch in [true, false] {
        let tag = hash_tag_owned_by(
            &nodes[0],
            if watch { "ro-w" } else { "ro-r" },
            &["n0", "n1"],
        );
        let (read, written) = (format!("{tag}read"), format!("{tag}written"));
        let old = planted(b"old", now - 20);
        nodes[0].plant_owner_copy("ns", read.as_bytes(), old.clone());
        nodes[1].plant_owner_copy("ns", read.as_bytes(), planted(b"new", now - 10));
        let tx = Transaction {
            keys: vec![
                read.as_bytes().to_vec().into(),
                written.as_bytes().to_vec().into(),
            ],
            // Watched at the version the primary holds (the stale one).
            watch: if watch {
                vec![(0, Some(old.version.as_u64()))]
            } else {
                Vec::new()
            },
            steps: vec![
                TxStep::Key {
                    key: 0,
                    op: KeyOp::Get,
                },
                TxStep::Key {
                    key: 1,
                    op: plain_set(b"x"),
                },
            ],
            default_ttl_ms: None,
        };
        let got = nodes[0]
            .cache()
            .execute_multi("ns", &MultiOp::Transaction(tx))
            .await
            .unwrap();
        if watch {
            assert_eq!(
                got,
                Reply::Exec(None),
                "a WATCH of a stale copy did not abort"
            );
            for n in &nodes {
                assert!(n.owner_copy("ns", written.as_bytes()).is_none());
            }
        } else {
            assert_eq!(
                got,
                Reply::Exec(Some(vec![Reply::Bulk(b"new".to_vec()), Reply::Ok])),
                "the transaction read the primary's stale copy"
            );
        }
    }
    stop(nodes).await;
}

/// A rolling upgrade: an owner of a build from before check-only changes (decision 96)
/// reads one as a removal at version 0. Members now tell each other what their build
/// understands once a connection is open (`rpc::features`), and such an owner gets a
/// transaction's changed keys alone — what its own build's primaries sent — where before it
/// got the keys only read as well. The same transaction through owners of one build sends
/// them (the control).
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_of_an_earlier_build_gets_no_check_only_changes() {
    use strata_core::ops::{KeyOp, MultiOp, Reply, Transaction, TxStep};
    let nodes = cluster(2, 2, None).await;
    let now = nodes[0].cache().now_ms();
    let tag = hash_tag_owned_by(&nodes[0], "upgrade", &["n0", "n1"]);
    let (read, written) = (format!("{tag}read"), format!("{tag}written"));
    for n in &nodes {
        n.plant_owner_copy("ns", read.as_bytes(), planted_entry(b"same", now - 10, now));
    }
    let tx = |value: &[u8]| {
        MultiOp::Transaction(Transaction {
            keys: vec![
                read.as_bytes().to_vec().into(),
                written.as_bytes().to_vec().into(),
            ],
            watch: Vec::new(),
            steps: vec![
                TxStep::Key {
                    key: 0,
                    op: KeyOp::Get,
                },
                TxStep::Key {
                    key: 1,
                    op: plain_set(value),
                },
            ],
            default_ttl_ms: None,
        })
    };
    let committed = Reply::Exec(Some(vec![Reply::Bulk(b"same".to_vec()), Reply::Ok]));
    let got = nodes[0].cache().execute_multi("ns", &tx(b"one")).await;
    assert_eq!(got.unwrap(), committed);
    let checks = nodes[1].check_only_changes_received();
    assert!(checks > 0, "owners of one build check the keys only read");

    // n1 acts as the earlier build; n0 opens a new connection to it and is told so.
    nodes[1].act_as_earlier_build(true);
    nodes[0].isolate_from(&["n1"]);
    nodes[0].heal_network();
    let got = nodes[0].cache().execute_multi("ns", &tx(b"two")).await;
    assert_eq!(got.unwrap(), committed);
    assert_eq!(
        nodes[1].check_only_changes_received(),
        checks,
        "a check-only change went to an owner of an earlier build"
    );
    for n in &nodes {
        let copy = n
            .owner_copy("ns", written.as_bytes())
            .expect("the write on every owner");
        assert_eq!(&copy.value[..], b"two");
    }
    stop(nodes).await;
}

/// A `WATCH` whose version came from a newer copy than the primary's (the client's node
/// read the owner's newer copy; the primary missed it): the primary asks the owners about
/// the watched key when it would abort, adopts the newer copy and commits — where before a
/// retry loop through that node aborted every time until the primary's copy was repaired.
/// A watch of a version no owner holds still aborts.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_newer_than_the_primarys_copy_is_checked_with_the_owners() {
    use strata_core::ops::{KeyOp, MultiOp, Reply, Transaction, TxStep};
    let nodes = cluster(2, 2, None).await;
    let now = nodes[0].cache().now_ms();
    let tag = hash_tag_owned_by(&nodes[0], "watch-ahead", &["n0", "n1"]);
    let (watched, written) = (format!("{tag}watched"), format!("{tag}written"));
    let newer = planted_entry(b"new", now - 10, now);
    nodes[0].plant_owner_copy(
        "ns",
        watched.as_bytes(),
        planted_entry(b"old", now - 20, now),
    );
    nodes[1].plant_owner_copy("ns", watched.as_bytes(), newer.clone());
    let tx = |version: u64, value: &[u8]| {
        MultiOp::Transaction(Transaction {
            keys: vec![
                watched.as_bytes().to_vec().into(),
                written.as_bytes().to_vec().into(),
            ],
            watch: vec![(0, Some(version))],
            steps: vec![
                TxStep::Key {
                    key: 0,
                    op: KeyOp::Get,
                },
                TxStep::Key {
                    key: 1,
                    op: plain_set(value),
                },
            ],
            default_ttl_ms: None,
        })
    };
    // The owner's newer version: committed, reading the newer value.
    let got = nodes[0]
        .cache()
        .execute_multi("ns", &tx(newer.version.as_u64(), b"x"))
        .await;
    assert_eq!(
        got.unwrap(),
        Reply::Exec(Some(vec![Reply::Bulk(b"new".to_vec()), Reply::Ok])),
        "a watch of the owners' newer version aborted at a stale primary"
    );
    // A version no owner holds (above the newer copy): aborted, nothing written.
    let got = nodes[0]
        .cache()
        .execute_multi("ns", &tx(newer.version.as_u64() + 1, b"y"))
        .await;
    assert_eq!(got.unwrap(), Reply::Exec(None));
    for n in &nodes {
        let copy = n
            .owner_copy("ns", written.as_bytes())
            .expect("written on every owner");
        assert_eq!(&copy.value[..], b"x");
    }
    stop(nodes).await;
}

/// A member that joins holds the copies the previous owners push to it unproven until its
/// proof has run (they may predate a removal its baseline counted as applied); what it
/// executes as their primary meanwhile is current all the same, and later executions
/// build on it, also after a late push of the version it holds. They once did not: the
/// joined primary read every base from the key's other owner, and when that owner left
/// before the proof ended, it executed from none. A membership review saw hot counters
/// restart from 0 when a member left within 2 s of another's join (10,248 increments
/// acknowledged, 2,946 at the end); with only its own executions seen, a replica that
/// got a push of the version its primary had just replicated to it did the same.
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_primary_keeps_counting_when_the_old_one_leaves_before_its_proof() {
    use strata_core::ops::{KeyOp, Reply};
    let (mut nodes, mut dirs) = cluster_with_l3(3, 2).await;
    let keys: Vec<String> = (0..300).map(|i| format!("ctr:{i}")).collect();
    for k in &keys {
        for _ in 0..5 {
            nodes[0]
                .cache()
                .execute("ns", bytes::Bytes::from(k.clone()), &KeyOp::IncrBy(1))
                .await
                .unwrap();
        }
    }
    // The joiner: its proof of pushed copies waits twice its max_staleness_ms first.
    let joined_at = restart_n3(&mut nodes, &mut dirs).await;
    // Keys n3 is now primary of, with n0 (the one that leaves) as their only other owner.
    let moved: Vec<&String> = keys
        .iter()
        .filter(|k| nodes[3].cluster_owners(k.as_bytes()) == ["n3", "n0"])
        .collect();
    assert!(moved.len() >= 5, "{} keys moved to n3 with n0", moved.len());
    // Their previous owners' hand-off pushes, as they reach n3 while it settles and before
    // it holds them (the real ones may have come before it began to record them).
    for k in &moved {
        let pushed = nodes[0]
            .owner_copy("ns", k.as_bytes())
            .expect("n0 holds it");
        nodes[3].evict_owner_copy("ns", k.as_bytes());
        assert!(nodes[3].receive_peer_set("ns", k.as_bytes(), &pushed).await);
    }
    let incr = |n: &Node, k: &str| {
        let c = n.cache();
        let k = bytes::Bytes::from(k.to_owned());
        async move { c.execute("ns", k, &KeyOp::IncrBy(1)).await.unwrap() }
    };
    // Executed by n3 once it has joined (the command waits for that).
    for k in &moved {
        assert_eq!(incr(&nodes[3], k).await, Reply::Int(6), "{k} on n3");
        // A late push of the version n3 holds now (a previous owner read it back, or the
        // primary pushed what it had just replicated) does not make n3's copy a push.
        let own = nodes[3]
            .owner_copy("ns", k.as_bytes())
            .expect("n3 holds its 6");
        nodes[3].receive_peer_set("ns", k.as_bytes(), &own).await;
    }
    let n0 = nodes.remove(0);
    n0.shutdown().await;
    eventually("n0's leave is seen", Duration::from_secs(5), || {
        nodes.iter().all(|n| live(n) == 3)
    })
    .await;
    let before_proof = joined_at.elapsed();
    for k in &moved {
        assert_eq!(incr(&nodes[2], k).await, Reply::Int(7), "{k} after n0 left");
    }
    assert!(
        joined_at.elapsed() < Duration::from_millis(12_000),
        "the pushed copies were proven before the check ({before_proof:?}): it proves nothing"
    );
    stop(nodes).await;
}

/// A member of the majority that a cut-off member declared down renews its identity when
/// the cut heals, as its ring takes that member back. It may be a stand-in owner holding
/// a key's newest copy that the key's other owner cannot pass on (here: its hand-off has
/// not run yet): its rejoin keeps what it owned under a ring of the hand-off window, its
/// hand-off pushes it to the returning owner, and the returning primary, once that other
/// owner is cut off, counts on from it. (Dropped at the rejoin, before the ring change's
/// hand-off read it, a counter restarted after 11,130 acknowledged increments in a
/// partition review, `s6_flap-061747`.)
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stand_in_owners_rejoin_keeps_its_copies_for_the_hand_off() {
    use strata_core::ops::{KeyOp, Reply};
    let nodes = cluster(3, 2, None).await;
    // Counters n0 is primary of, with n1; while n0 is away, n1 and n2 own them.
    let keys: Vec<String> = keys_owned_by(&nodes[0], "ctr:", &["n0", "n1"])
        .take(10)
        .collect();
    let split = |cut: usize| {
        let others: Vec<String> = (0..3)
            .filter(|&i| i != cut)
            .map(|i| format!("n{i}"))
            .collect();
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        nodes[cut].isolate_from(&others);
        for i in (0..3).filter(|&i| i != cut) {
            nodes[i].isolate_from(&[format!("n{cut}").as_str()]);
        }
    };
    let ring_of = |n: &Node| n.cluster_status().unwrap().ring_members.len();
    split(0);
    // n0 declares the others down too: they renew their identities when the cut heals.
    eventually("both sides see the split", Duration::from_secs(15), || {
        live(&nodes[0]) == 1 && ring_of(&nodes[1]) == 2 && ring_of(&nodes[2]) == 2
    })
    .await;
    let incr = |n: &Node, k: &str| {
        let c = n.cache();
        let k = bytes::Bytes::from(k.to_owned());
        async move { c.execute("ns", k, &KeyOp::IncrBy(1)).await }
    };
    for k in &keys {
        for _ in 0..100 {
            incr(&nodes[1], k).await.unwrap();
        }
        assert!(
            nodes[2].owner_copy("ns", k.as_bytes()).is_some(),
            "n2 holds {k}"
        );
    }
    // n1's hand-off to n0 will not run before n1 is cut off in turn; n2's waits 2 s.
    nodes[1].delay_handoffs(Duration::from_secs(60));
    nodes[2].delay_handoffs(Duration::from_secs(2));
    for n in &nodes {
        n.heal_network();
    }
    eventually("n2's ring takes n0 back", Duration::from_secs(20), || {
        ring_of(&nodes[2]) == 3
    })
    .await;
    // n2's renewal of its identity (its lease held), as it came a few ms after the ring
    // change in the review (here foca may have reported it just before: then n2 still
    // owned the keys under its ring of the time).
    nodes[2].rejoin_with_lease();
    eventually("the ring takes n0 back", Duration::from_secs(20), || {
        nodes.iter().all(|n| live(n) == 3 && ring_of(n) == 3)
    })
    .await;
    for k in &keys {
        assert!(
            nodes[2].owner_copy("ns", k.as_bytes()).is_some(),
            "n2 dropped {k} at its rejoin"
        );
    }
    // n2's hand-off (2 s late) pushes them to n0.
    eventually("n0 holds what n2 pushed", Duration::from_secs(10), || {
        keys.iter().all(|k| {
            nodes[0]
                .owner_copy("ns", k.as_bytes())
                .is_some_and(|e| e.value.as_ref() == b"100")
        })
    })
    .await;
    split(1);
    eventually(
        "n1 is out of the others' ring",
        Duration::from_secs(15),
        || ring_of(&nodes[0]) == 2 && ring_of(&nodes[2]) == 2,
    )
    .await;
    for k in &keys {
        let deadline = Instant::now() + Duration::from_secs(30);
        let reply = loop {
            match incr(&nodes[0], k).await {
                Ok(r) => break r,
                Err(e) if Instant::now() < deadline => {
                    println!("{k}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{k}: {e}"),
            }
        };
        assert_eq!(
            reply,
            Reply::Int(101),
            "{k}: the count went on from the stand-in's copy"
        );
    }
    // And a delete is not undone by a copy n2 kept.
    for k in &keys {
        nodes[0]
            .cache()
            .invalidate("ns", k.as_bytes())
            .await
            .unwrap();
        for i in [0, 2] {
            let got = nodes[i].cache().get("ns", k.as_bytes()).await.unwrap();
            assert!(got.is_none(), "{k} read on n{i} after its delete");
        }
    }
    for n in &nodes {
        n.heal_network();
    }
    stop(nodes).await;
}

/// A member that restarts with L3 proves the copies previous owners push to it while it
/// settles against each key's other owner. When a member leaves before that proof, the
/// other owner can be a member that never held the key, and the previous owners dropped
/// their copies of keys they no longer own at the leave: the pushed copy is the last one.
/// It stays when no live member knows of a newer change; a copy read before a `DEL` that
/// the restarted member's baseline skipped still goes, on the word of the members that
/// saw the `DEL`. (A membership review's `quick` run lost 1,088 acknowledged `SET`s when
/// a member left 2 s after a restarted member's join.)
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_keeps_the_last_pushed_copy_when_an_owner_leaves_before_its_proof() {
    let (nodes, _dirs, kept) = last_pushed_copies(Before::Leave).await;
    // A copy kept on the members' word was n3's alone: n3 passed it on to the key's other
    // owner, so that a failure of n3 now loses nothing. (Checked where that owner is n2:
    // the reads above went through n1, and an owner's own read repairs its store.)
    let with_n2: Vec<&String> = kept
        .iter()
        .filter(|k| nodes[2].cluster_owners(k.as_bytes()) == ["n3", "n2"])
        .collect();
    assert!(
        with_n2.len() >= 2,
        "{} kept keys owned with n2",
        with_n2.len()
    );
    // (The copies are readable as soon as they are proven, a moment before they are sent.)
    eventually(
        "n3 passes its witnessed copies on to n2",
        Duration::from_secs(5),
        || {
            with_n2.iter().all(|k| {
                nodes[1]
                    .owner_copy("ns", k.as_bytes())
                    .map(|e| e.value)
                    .as_deref()
                    == Some(format!("v-{k}").as_bytes())
            })
        },
    )
    .await;
    stop(nodes).await;
}

/// As [`a_restarted_member_keeps_the_last_pushed_copy_when_an_owner_leaves_before_its_proof`],
/// with a member started a moment before the proof among the witnesses: its record of
/// changes does not reach back to before the pushes were read, and the others' do. Its
/// silence on that time does not drop the copies, and the deleted keys still stay deleted.
/// (Requiring every witness's record to reach back lost 193 of 624 acknowledged `SET`s in
/// a `kill -9` review run: a key's other owner was killed during the proof, and a member
/// joined 2 s later.)
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_keeps_the_last_pushed_copy_when_a_young_member_is_a_witness() {
    let (nodes, _dirs, _kept) = last_pushed_copies(Before::YoungWitness).await;
    assert!(
        counter(&nodes[2], "strata_cluster_warm_pushed_witnessed_total") > 0,
        "no copy was kept on the members' word: the test proves nothing"
    );
    stop(nodes).await;
}

/// As [`a_restarted_member_keeps_the_last_pushed_copy_when_an_owner_leaves_before_its_proof`],
/// with a second member's life ended before the proof (n4 joins and leaves): as many lives
/// ended since the pushes could have been read as a change reaches owners (two), so every
/// owner of a `DEL` made meanwhile could be among them, and the members' word keeps no
/// copy — though the two witnesses left remember far enough back, which alone would have
/// kept them (a rolling restart of two owners faster than a member's proof could then
/// bring a deleted value back).
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_keeps_no_copy_on_the_members_word_once_two_lives_ended() {
    let (nodes, _dirs, kept) = last_pushed_copies(Before::TwoEnded).await;
    assert_eq!(
        counter(&nodes[2], "strata_cluster_warm_pushed_witnessed_total"),
        0,
        "copies kept on the word of members two of whose lives ended"
    );
    assert!(counter(&nodes[2], "strata_cluster_warm_pushed_dropped_total") > 0);
    for k in &kept {
        assert_eq!(nodes[2].owner_copy("ns", k.as_bytes()), None, "{k}");
    }
    stop(nodes).await;
}

/// As [`a_restarted_member_keeps_no_copy_on_the_members_word_once_two_lives_ended`], with
/// one of the two lives ended 1.5 s before n3 started, and the copies pushed to n3 in
/// hand-off batches their senders read after they saw n3 up (`Request::HandoffFor`): a
/// life that ended before n3's process started cannot have taken a change made after such
/// a read, so only n0's counts, and n3 keeps every copy on the members' word — though the
/// same copies came in `Set`s too (a version read once after the start is proven from
/// there, whichever push brought it). The deleted keys' copies, pushed the same way
/// though read before n3 started, still go: the witnesses remember the `DEL`s. (Counted
/// from a margin of calls before the start, as a `Set`'s read must be, a key's two owners
/// that left gracefully seconds apart and restarted each dropped the copy the others had
/// pushed at their joins: a counter restarted at 1 after 16 acknowledged increments,
/// simulator seed 2838.)
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_proves_a_hand_off_read_after_its_start_from_that_start() {
    let (nodes, _dirs, kept) = last_pushed_copies(Before::EndedBeforeStart).await;
    assert!(
        counter(&nodes[2], "strata_cluster_warm_pushed_witnessed_total") >= kept.len() as u64,
        "the copies were not kept on the members' word: the test proves nothing"
    );
    for k in &kept {
        assert_eq!(
            nodes[2].owner_copy("ns", k.as_bytes()).map(|e| e.value),
            Some(format!("v-{k}").into()),
            "{k}: n3 dropped a copy read after its start"
        );
    }
    stop(nodes).await;
}

/// What happens before n3's proof in [`last_pushed_copies`].
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Before {
    /// n0, the keys' other owner, leaves.
    Leave,
    /// n0 leaves and a member n4 without L3 joins: its record is too short.
    YoungWitness,
    /// n0 leaves, n4 joins and leaves: two lives ended.
    TwoEnded,
    /// n4 joins and leaves before n3 starts, n0 leaves after: one life ended within a
    /// margin of calls before n3's start, one after it. The pushes come in hand-off
    /// batches read after n3's start (`Request::HandoffFor`), not as `Set`s.
    EndedBeforeStart,
}

/// Stops `leaving`, waits until the members left (`nodes`) see it gone, and evicts `moved`
/// from the stores of `nodes[0]` and `nodes[1]`, the keys' previous owners, as an owner
/// store under memory pressure would (a hand-off push racing their drop is let through
/// first).
#[cfg(all(feature = "fault-injection", feature = "l3"))]
async fn leave_and_evict(nodes: &[Node], leaving: Node, moved: &[&String]) {
    leaving.shutdown().await;
    eventually("the leave is seen", Duration::from_secs(5), || {
        nodes.iter().all(|n| live(n) == nodes.len())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for k in moved {
        for n in &nodes[..2] {
            n.evict_owner_copy("ns", k.as_bytes());
        }
    }
}

/// The body of the tests above: n3 restarts with L3 (after n4 joined and left, for
/// [`Before::EndedBeforeStart`]); the pushes of keys it now owns with n0 reach it while it
/// settles (every third key's copy read before its `DEL`); n0 leaves; every other copy of
/// those keys is evicted; then `before` (n4 joins, or joins and leaves). Checks that every live key is read back after the proof (unless two lives
/// ended) and that no deleted one comes back; the members (n1, n2, n3, and n4 if it
/// stayed), their directories, and the live keys.
#[cfg(all(feature = "fault-injection", feature = "l3"))]
async fn last_pushed_copies(before: Before) -> (Vec<Node>, Vec<tempfile::TempDir>, Vec<String>) {
    let young_witness = matches!(before, Before::YoungWitness | Before::TwoEnded);
    // Whether the copies stay: not once two lives ended since they could have been read.
    let stay = before != Before::TwoEnded;
    let (mut nodes, mut dirs, keys) = cluster_with_l3_and_keys().await;
    let c0 = nodes[0].cache();
    let copy_of = |nodes: &[Node], k: &str| {
        nodes
            .iter()
            .find_map(|n| n.owner_copy("ns", k.as_bytes()))
            .expect("an owner holds it")
    };
    // Every third key is deleted before the restart; its copy from before the DEL is
    // what a late push would carry.
    let mut before_del = std::collections::HashMap::new();
    for k in keys.iter().step_by(3) {
        before_del.insert(k.clone(), copy_of(&nodes, k));
        assert!(c0.invalidate("ns", k.as_bytes()).await.unwrap());
    }
    // The witnesses' records must reach back to before the pushes were read (the joiner's
    // age at its proof and a margin of eight RPC timeouts and a second: 5 s).
    tokio::time::sleep(Duration::from_millis(6_000)).await;
    // n3 proves its pushes twice its `max_staleness_ms` after its baseline: 12 s, or 18 s
    // when a member joins first, 24 s when it leaves again (n0's leave, n4's join and
    // leave and the evictions must come before it on a loaded machine too).
    let staleness_ms = match before {
        Before::Leave | Before::EndedBeforeStart => 6_000,
        Before::YoungWitness => 9_000,
        Before::TwoEnded => 12_000,
    };
    if before == Before::EndedBeforeStart {
        // n4's life ends 1.5 s before n3 starts: after the earliest read a `Set` pushed to
        // n3 may carry (a margin of 8 RPC timeouts and a second, 5 s), before any read of
        // a hand-off naming n3's life (n3's start, and one RPC timeout: 0.5 s).
        let cfg = config("n4", &[gossip_addr(&nodes[0])], 2);
        let n4 = Node::start(cfg).await.unwrap();
        eventually("n4 joins", Duration::from_secs(5), || {
            nodes.iter().all(|n| live(n) == 4)
        })
        .await;
        n4.shutdown().await;
        eventually("n4's leave is seen", Duration::from_secs(5), || {
            nodes.iter().all(|n| live(n) == 3)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    let joined_at = restart_n3_with(&mut nodes, &mut dirs, |c| {
        c.cluster.max_staleness_ms = staleness_ms;
    })
    .await;
    let proof_at = Duration::from_millis(2 * staleness_ms);
    // Keys n3 now owns with n0, the member about to leave.
    let moved: Vec<&String> = keys
        .iter()
        .filter(|k| nodes[3].cluster_owners(k.as_bytes()) == ["n3", "n0"])
        .collect();
    let (gone, kept): (Vec<&String>, Vec<&String>) = moved
        .iter()
        .partition(|k| before_del.contains_key(k.as_str()));
    assert!(
        gone.len() >= 5 && kept.len() >= 5,
        "{} deleted and {} live keys moved to n3 with n0",
        gone.len(),
        kept.len()
    );
    // The pushes as they reach n3 while it settles (the real ones may have come before it
    // began to record them): the live keys' current copies, and the deleted keys' copies
    // read before their DEL.
    let handoff = before == Before::EndedBeforeStart;
    let n3_set = |k: &str, entry: &strata_core::Entry| {
        let n3 = &nodes[3];
        let (k, entry) = (k.to_owned(), entry.clone());
        async move { n3.receive_peer_set("ns", k.as_bytes(), &entry).await }
    };
    let push = |k: &str, entry: &strata_core::Entry| {
        let n3 = &nodes[3];
        let (k, entry) = (k.to_owned(), entry.clone());
        async move {
            if handoff {
                n3.receive_peer_handoff("ns", k.as_bytes(), &entry).await
            } else {
                n3.receive_peer_set("ns", k.as_bytes(), &entry).await
            }
        }
    };
    for k in &kept {
        let current = copy_of(&nodes[..3], k);
        nodes[3].evict_owner_copy("ns", k.as_bytes());
        assert!(push(k, &current).await);
        if handoff {
            // The same copy in a `Set` as well (a read repair, or the hand-off of a member
            // of an earlier build): one read after the start proves the version, whichever
            // push it came in.
            n3_set(k, &current).await;
        }
    }
    for k in &gone {
        assert!(
            push(k, &before_del[k.as_str()]).await,
            "{k}: n3 stored the late push (its baseline skipped the DEL)"
        );
    }
    // The previous owners dropped what they no longer own, and n0 handed nothing over:
    // n3's unproven copy is the last one of each moved key.
    let n0 = nodes.remove(0);
    leave_and_evict(&nodes, n0, &moved).await;
    if young_witness {
        let cfg = config("n4", &[gossip_addr(&nodes[0])], 2);
        nodes.push(Node::start(cfg).await.unwrap());
        eventually("n4 joins", Duration::from_secs(5), || {
            nodes.iter().all(|n| live(n) == 4)
        })
        .await;
        // What a hand-off to n4 may have carried goes too.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for k in &moved {
            for n in [&nodes[0], &nodes[1], &nodes[3]] {
                n.evict_owner_copy("ns", k.as_bytes());
            }
        }
        if before == Before::TwoEnded {
            let n4 = nodes.pop().expect("n4");
            leave_and_evict(&nodes, n4, &moved).await;
        }
    }
    let before_proof = joined_at.elapsed();
    assert!(
        before_proof + Duration::from_millis(1_000) < proof_at,
        "n3 may have proven its pushes already ({before_proof:?}): the test proves nothing"
    );
    let c1 = nodes[0].cache();
    let deadline = Instant::now() + Duration::from_secs(30);
    if !stay {
        // Its pushes are proven in one round (every witness answers): the drops show it.
        eventually("n3 proves its pushes", Duration::from_secs(40), || {
            counter(&nodes[2], "strata_cluster_warm_pushed_dropped_total") > 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for k in kept.iter().filter(|_| stay) {
        loop {
            let got = c1.get("ns", k.as_bytes()).await.unwrap();
            if got.as_deref() == Some(format!("v-{k}").as_bytes()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{k}: acknowledged SET lost after n3's proof ({got:?}; {:?} after the join)",
                joined_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(joined_at.elapsed() >= proof_at, "read before n3's proof");
    for k in &gone {
        for n in &nodes {
            assert_eq!(
                n.cache().get("ns", k.as_bytes()).await.unwrap(),
                None,
                "{k}: a deleted value came back on the member at {}",
                gossip_addr(n)
            );
        }
    }
    let kept: Vec<String> = kept.into_iter().cloned().collect();
    (nodes, dirs, kept)
}

/// A restarted member refuses pushes past `cluster.settling_push_limit` unproven ones for
/// now (`Response::Deferred`), and the members that hand its keys over send them again as its proof
/// makes room: once settled it holds every key it owns, so that the death of a key's other
/// owner next loses nothing. (Before, the refused pushes counted as delivered and were
/// never sent again; their previous owners dropped them at the next member's death.)
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_gets_the_pushes_it_refused_while_settling_once_it_made_room() {
    let (mut nodes, mut dirs, keys) = cluster_with_l3_and_keys().await;
    let c0 = nodes[0].cache();
    let joined_at = restart_n3_with(&mut nodes, &mut dirs, |c| {
        c.cluster.settling_push_limit = 20;
    })
    .await;
    let owned: Vec<&String> = keys
        .iter()
        .filter(|k| {
            nodes[3]
                .cluster_owners(k.as_bytes())
                .contains(&"n3".to_owned())
        })
        .collect();
    assert!(owned.len() >= 100, "n3 owns {} keys", owned.len());
    let held = |k: &str| {
        nodes[3]
            .owner_copy("ns", k.as_bytes())
            .map(|e| e.value)
            .as_deref()
            == Some(format!("v-{k}").as_bytes())
    };
    // While it settles (its proof starts 12 s after its start), it holds at most 20 of
    // them unproven.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let early = owned.iter().filter(|k| held(k)).count();
    assert!(
        joined_at.elapsed() < Duration::from_millis(11_000),
        "n3 may be proving already"
    );
    assert!(early <= 20, "n3 held {early} pushed copies while settling");
    assert!(counter(&nodes[3], "strata_cluster_warm_pushes_deferred_total") > 0);
    // Deleted while their pushes wait to be sent again: they must not come back.
    let deleted: Vec<&String> = owned.iter().step_by(10).copied().collect();
    let live: Vec<&String> = owned
        .iter()
        .copied()
        .filter(|k| !deleted.contains(k))
        .collect();
    for k in &deleted {
        assert!(c0.invalidate("ns", k.as_bytes()).await.unwrap());
    }
    eventually(
        "n3 holds every live key it owns once settled",
        Duration::from_secs(60),
        || live.iter().all(|k| held(k)),
    )
    .await;
    for k in &deleted {
        assert_eq!(nodes[3].owner_copy("ns", k.as_bytes()), None, "{k} on n3");
        for n in &nodes {
            assert_eq!(
                n.cache().get("ns", k.as_bytes()).await.unwrap(),
                None,
                "{k}"
            );
        }
    }
    let sum = |name: &str| nodes[..3].iter().map(|n| counter(n, name)).sum::<u64>();
    assert!(
        sum("strata_cluster_handoff_retries_total") > 0,
        "no hand-off batch was sent again"
    );
    assert_eq!(sum("strata_cluster_handoff_deferred_dropped_total"), 0);
    stop(nodes).await;
}

/// During a rolling upgrade: members of an earlier build, whose callers do not announce
/// `DEFERRED_PUSHES`, hand keys over to a restarted member of this build that refuses
/// pushes for now. It answers them as their build expects (the entries not stored), never
/// with a `Deferred` they could not decode: they go on with their hand-off, sending
/// nothing again.
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settling_member_answers_an_earlier_builds_pushes_as_that_build_expects() {
    let (mut nodes, mut dirs) = cluster_with_l3(3, 2).await;
    let c0 = nodes[0].cache();
    for i in 0..600 {
        c0.set("ns", format!("kv:{i}"), "v").await.unwrap();
    }
    for n in &nodes {
        n.act_as_earlier_build(true);
    }
    restart_n3_with(&mut nodes, &mut dirs, |c| {
        c.cluster.settling_push_limit = 20;
    })
    .await;
    eventually("n3 refuses pushes for now", Duration::from_secs(8), || {
        counter(&nodes[3], "strata_cluster_warm_pushes_deferred_total") > 0
    })
    .await;
    // Long enough for a caller answered `Deferred` to send again (its first pause: 100 ms).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let sum = |name: &str| nodes[..3].iter().map(|n| counter(n, name)).sum::<u64>();
    assert_eq!(
        sum("strata_cluster_handoff_retries_total"),
        0,
        "an earlier build's caller was answered Deferred"
    );
    assert_eq!(sum("strata_cluster_handoff_deferred_dropped_total"), 0);
    stop(nodes).await;
}

/// A restarted member's proof does not drop a pushed copy because a member did not answer
/// for it (killed and not yet declared down, or cut off): it asks again in a later round.
/// (A review run with `kill -9` lost keys whose other owner was killed during the proof:
/// every copy it was to vouch for was dropped, and the previous owners dropped theirs when
/// it was declared down.)
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_members_proof_asks_again_about_copies_a_member_did_not_answer_for() {
    let (mut nodes, mut dirs, keys) = cluster_with_l3_and_keys().await;
    let joined_at = restart_n3(&mut nodes, &mut dirs).await;
    let moved: Vec<&String> = keys
        .iter()
        .filter(|k| nodes[3].cluster_owners(k.as_bytes()) == ["n3", "n0"])
        .collect();
    assert!(moved.len() >= 5, "{} keys moved to n3 with n0", moved.len());
    // The pushes as they reach n3 while it settles: recorded for its proof.
    for k in &moved {
        let current = nodes[..3]
            .iter()
            .find_map(|n| n.owner_copy("ns", k.as_bytes()))
            .expect("an owner holds it");
        nodes[3].evict_owner_copy("ns", k.as_bytes());
        assert!(
            nodes[3]
                .receive_peer_set("ns", k.as_bytes(), &current)
                .await
        );
    }
    // n0, which vouches for them, does not answer n3 when its proof starts (12 s or more
    // after its start), and answers again a little later.
    let at = |ms: u64| tokio::time::sleep_until((joined_at + Duration::from_millis(ms)).into());
    at(11_000).await;
    nodes[3].isolate_from(&["n0"]);
    at(14_500).await;
    nodes[3].heal_network();
    // Its pushes are proven before its L3 (whose proof's calls are counted at its end).
    eventually("n3's proof ends", Duration::from_secs(40), || {
        counter(&nodes[3], "strata_cluster_warm_calls_total") > 0
    })
    .await;
    assert_eq!(
        counter(&nodes[3], "strata_cluster_warm_pushed_dropped_total"),
        0,
        "pushed copies dropped for want of an answer"
    );
    for k in &moved {
        assert_eq!(
            nodes[3].owner_copy("ns", k.as_bytes()).map(|e| e.value),
            Some(bytes::Bytes::from(format!("v-{k}"))),
            "{k}"
        );
    }
    assert!(
        counter(&nodes[3], "strata_cluster_warm_pushed_deferred_total") > 0,
        "n0 answered the first round: the test proves nothing"
    );
    stop(nodes).await;
}

/// An owner holding a key's newest copy unproven (it rejoined without its lease, and its
/// proof has not run yet) refuses a change executed from an older copy until its proof
/// keeps the copy and passes it on: the primary then executes from it. Taken over the
/// unproven copy, a counter started again from less — in a partition review with cuts of
/// 5–8 s, a primary back from its cut executed `INCR` from its stale copy, was answered
/// that a newer change existed, executed again from no copy above it, and the replica
/// holding the counter's newest copy unproven took it: the counter restarted from 1 after
/// 14,120 acknowledged increments.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_holding_the_newest_copy_unproven_refuses_changes_from_older_ones() {
    refuses_changes_below_an_unproven_copy(false).await;
}

/// The same with a primary of an earlier build, which knows no `Unproven` refusal: the
/// owner answers it `Fenced` with no primary, which it also reads as a refusal with
/// nothing applied, and tries again.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_of_an_earlier_build_is_refused_as_fenced_below_an_unproven_copy() {
    refuses_changes_below_an_unproven_copy(true).await;
}

/// n0, primary of a counter at 5, increments it while n1, its other owner, holds 100
/// unproven; with `earlier_primary`, n0 announces no features to its peers (an earlier
/// build's primary). Asserts the increment answers 101 and n1 refused a change meanwhile.
#[cfg(feature = "fault-injection")]
async fn refuses_changes_below_an_unproven_copy(earlier_primary: bool) {
    use strata_core::ops::{KeyOp, Reply};
    let started = Instant::now();
    let nodes = cluster(3, 2, None).await;
    if earlier_primary {
        // Its connections opened again (a cut of a moment, far shorter than failure
        // detection), each announcing no features.
        nodes[0].act_as_earlier_build(true);
        nodes[0].isolate_from(&["n1", "n2"]);
        nodes[0].heal_network();
    }
    let key = keys_owned_by(&nodes[0], "unproven:", &["n0", "n1"])
        .next()
        .unwrap();
    let c0 = nodes[0].cache();
    let incr = || c0.execute("ns", bytes::Bytes::from(key.clone()), &KeyOp::IncrBy(1));
    for want in 1..=5 {
        assert_eq!(incr().await.unwrap(), Reply::Int(want));
    }
    // n1 alone holds a newer copy (the increments acknowledged while n0 was cut off, say),
    // and rejoins without its lease: held unproven, proven after the settle time.
    let five = nodes[1].owner_copy("ns", key.as_bytes()).unwrap();
    assert_eq!(&five.value[..], b"5");
    let newest = strata_core::Entry {
        value: bytes::Bytes::from_static(b"100"),
        version: strata_core::Version::from_u64(five.version.as_u64() + (1 << 16)),
        ..five
    };
    nodes[1].plant_owner_copy("ns", key.as_bytes(), newest);
    // The witnesses' records must reach back past the proof's window (the rpc timeouts of
    // a push's hops, `strata_cluster::warm::needed_ms`): the cluster has run for 6 s.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(started.elapsed())).await;
    nodes[1].rejoin_without_lease();
    // n0 executes from its own copy (5); n1 refuses until its proof has kept 100 and passed
    // it on to n0, which then executes from it.
    let got = incr().await.unwrap();
    assert_eq!(
        got,
        Reply::Int(101),
        "the INCR ran over the owner's unproven copy"
    );
    let refused = counter(
        &nodes[1],
        "strata_cluster_replications_refused_unproven_total",
    );
    assert!(
        refused > 0,
        "n1 never refused a change for its unproven copy"
    );
    assert_eq!(incr().await.unwrap(), Reply::Int(102));
    stop(nodes).await;
}

/// The two owners of 20 keys (n0 and n1) both hold them unproven at once (each rejoined
/// without its lease, the keys set 8 s before and never changed), after each member in
/// `gaps` gave up a gap of the other member's invalidations; once both proofs end, how
/// many copies they kept on the witnesses' word and how many they dropped, and whether
/// every key still reads its value through n2.
#[cfg(feature = "fault-injection")]
async fn owners_prove_together_after_gaps(gaps: &[(usize, &str)]) -> (u64, u64, bool) {
    let started = Instant::now();
    let nodes = cluster(3, 2, None).await;
    let keys: Vec<String> = keys_owned_by(&nodes[0], "both:", &["n0", "n1"])
        .take(20)
        .collect();
    let c2 = nodes[2].cache();
    for k in &keys {
        c2.set("ns", k.clone(), format!("v-{k}")).await.unwrap();
    }
    // The records must reach back past the proofs' window (the settle time and the rpc
    // timeouts of a push's hops, `strata_cluster::warm::needed_ms`): 8 s of cluster life.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(started.elapsed())).await;
    let drops = |n: &Node| counter(n, "strata_cluster_drops_unverified_total");
    let before: Vec<u64> = nodes.iter().map(drops).collect();
    for (at, origin) in gaps {
        nodes[*at].give_up_gap_of(origin);
    }
    eventually("the gaps are given up", Duration::from_secs(5), || {
        (0..3).all(|i| {
            let given = gaps.iter().filter(|(at, _)| *at == i).count() as u64;
            drops(&nodes[i]) >= before[i] + given
        })
    })
    .await;
    nodes[0].rejoin_without_lease();
    nodes[1].rejoin_without_lease();
    let total = |name: &str| -> u64 { nodes[..2].iter().map(|n| counter(n, name)).sum() };
    let proven = |n: &Node| {
        counter(n, "strata_cluster_warm_pushed_kept_total")
            + counter(n, "strata_cluster_warm_pushed_witnessed_total")
            + counter(n, "strata_cluster_warm_pushed_dropped_total")
    };
    eventually("both proofs end", Duration::from_secs(40), || {
        proven(&nodes[0]) >= keys.len() as u64 && proven(&nodes[1]) >= keys.len() as u64
    })
    .await;
    let witnessed = total("strata_cluster_warm_pushed_witnessed_total");
    let dropped = total("strata_cluster_warm_pushed_dropped_total");
    let mut readable = true;
    for k in &keys {
        readable &= c2.get("ns", k.as_bytes()).await.unwrap().as_deref()
            == Some(format!("v-{k}").as_bytes());
    }
    stop(nodes).await;
    (witnessed, dropped, readable)
}

/// The two owners of keys both hold them unproven, and every member's record as a witness
/// started over at a gap given up on — the third member's at gaps of both owners, each
/// owner's at a gap of the other. What a member missed of an owner's invalidations, that
/// owner made and remembers itself, so each owner's proof still counts the other's record
/// from its start and keeps the keys. (With every gap restarting the record for every
/// caller, both proofs dropped them: 1,413 static keys lost in a partition review, the
/// third member out of the view, each owner having given up a gap of the other, cut off
/// again as the gap was noticed.)
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_holding_a_key_unproven_together_vouch_across_gaps_of_their_own_lives() {
    let (witnessed, dropped, readable) =
        owners_prove_together_after_gaps(&[(2, "n0"), (2, "n1"), (1, "n0"), (0, "n1")]).await;
    assert_eq!(
        dropped, 0,
        "a proof dropped keys that nobody changed ({witnessed} witnessed)"
    );
    // The first proof to ask keeps them on the witnesses' word (the other owner holds them
    // unproven too, and vouches for nothing); the second, on the first's.
    assert!(
        witnessed >= 20,
        "no proof asked while the other held the keys unproven: the test proves nothing"
    );
    assert!(readable, "a key no longer reads its value");
}

/// The same, but the gaps every record started over at are of another member's life (n2's
/// at the owners, each owner's at n2): no witness's record reaches back for either owner,
/// and the proofs drop the keys — what a witness missed of n2, n2 is not proving.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_of_another_members_life_still_restarts_the_record_for_a_proof() {
    let (witnessed, dropped, readable) =
        owners_prove_together_after_gaps(&[(2, "n0"), (2, "n1"), (1, "n2"), (0, "n2")]).await;
    assert_eq!(
        witnessed, 0,
        "kept on the word of records that did not reach back"
    );
    assert!(
        dropped >= 20,
        "the first proof kept the keys: {dropped} dropped"
    );
    assert!(!readable);
}

/// A copy an earlier proof kept needs the witnesses' record only since that proof: the
/// two owners of 20 keys hold them unproven twice, the second time after a run of lapses
/// that began when they started, longer ago than any witness's record reaches. Counted
/// from the run's start, the second proofs dropped every key that the first had kept and
/// nobody changed since (a partition review: lapses chained for over a minute under
/// flapping cuts needed 61,904 ms of record, more than any witness keeps, and a counter
/// restarted after 16,601 acknowledged increments).
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_kept_by_an_earlier_proof_is_proven_from_then() {
    kept_copies_proven_twice(None).await;
}

/// The same, with as many unproven copies allowed as the owners hold
/// (`cluster.settling_push_limit`): the record of what the first proofs kept is full, and
/// still answers for every copy.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_record_of_kept_copies_still_answers_for_each() {
    kept_copies_proven_twice(Some(20)).await;
}

/// Two rounds of both owners of 20 keys holding them unproven (the second after a lapse
/// run as old as the cluster), with `push_limit` as `cluster.settling_push_limit`: asserts
/// neither round drops any and every key still reads its value.
#[cfg(feature = "fault-injection")]
async fn kept_copies_proven_twice(push_limit: Option<u32>) {
    let started = Instant::now();
    let nodes = common::cluster_with(3, 2, None, |c| {
        if let Some(limit) = push_limit {
            c.cluster.settling_push_limit = limit;
        }
    })
    .await;
    let keys: Vec<String> = keys_owned_by(&nodes[0], "again:", &["n0", "n1"])
        .take(20)
        .collect();
    let c2 = nodes[2].cache();
    for k in &keys {
        c2.set("ns", k.clone(), format!("v-{k}")).await.unwrap();
    }
    let proven = |n: &Node| {
        counter(n, "strata_cluster_warm_pushed_kept_total")
            + counter(n, "strata_cluster_warm_pushed_witnessed_total")
            + counter(n, "strata_cluster_warm_pushed_dropped_total")
    };
    let dropped = |n: &Node| counter(n, "strata_cluster_warm_pushed_dropped_total");
    // The first time, the lapse began now: the records (8 s) reach back past the window
    // (the settle time and the rpc timeouts of a push's hops).
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(started.elapsed())).await;
    nodes[0].rejoin_without_lease();
    nodes[1].rejoin_without_lease();
    eventually("the first proofs end", Duration::from_secs(40), || {
        proven(&nodes[0]) >= keys.len() as u64 && proven(&nodes[1]) >= keys.len() as u64
    })
    .await;
    assert_eq!(
        dropped(&nodes[0]) + dropped(&nodes[1]),
        0,
        "the first proofs"
    );
    // The second time, the run of lapses began at their start: its window alone is longer
    // than any record (every member started with them).
    let first: Vec<u64> = nodes[..2].iter().map(proven).collect();
    nodes[0].rejoin_without_lease_since_start();
    nodes[1].rejoin_without_lease_since_start();
    eventually("the second proofs end", Duration::from_secs(40), || {
        proven(&nodes[0]) >= first[0] + keys.len() as u64
            && proven(&nodes[1]) >= first[1] + keys.len() as u64
    })
    .await;
    assert_eq!(
        dropped(&nodes[0]) + dropped(&nodes[1]),
        0,
        "the second proofs dropped keys the first kept and nobody changed"
    );
    for k in &keys {
        assert_eq!(
            c2.get("ns", k.as_bytes()).await.unwrap().as_deref(),
            Some(format!("v-{k}").as_bytes()),
            "{k}"
        );
    }
    stop(nodes).await;
}

/// A wall clock an hour behind the system's: a host booted with its clock behind, before
/// NTP stepped it.
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[derive(Debug)]
struct HourBehind;

#[cfg(all(feature = "fault-injection", feature = "l3"))]
impl strata_core::Clock for HourBehind {
    fn now_ms(&self) -> u64 {
        strata_core::Clock::now_ms(&strata_core::SystemClock) - 3_600_000
    }
}

/// A member restarted on its L3 directory and gossip address with its wall clock an hour
/// behind its previous life's start joins again at once: its generation starts above the
/// one it used before (kept beside L3's files), so the others do not take the new process
/// for an older identity of that address — which foca ignores, for as long as it keeps the
/// old one (24 h).
#[cfg(all(feature = "fault-injection", feature = "l3"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_on_a_clock_stepped_back_joins_again() {
    let (mut nodes, dirs) = cluster_with_l3(3, 2).await;
    let self_status = |n: &Node| {
        n.cluster_status()
            .unwrap()
            .members
            .into_iter()
            .find(|m| m.state == "self")
            .unwrap()
    };
    let before = self_status(&nodes[2]);
    let n2 = nodes.pop().unwrap();
    n2.shutdown().await;
    eventually("n2 leaves", Duration::from_secs(10), || {
        nodes.iter().all(|n| live(n) == 2)
    })
    .await;

    let mut cfg = config("n2", &[gossip_addr(&nodes[0])], 2);
    cfg.cluster.gossip_listen = before.gossip.clone();
    cfg.l3.enabled = true;
    cfg.l3.data_dir = dirs[2].path().to_path_buf();
    let started = Instant::now();
    let restarted = loop {
        match Node::start_with(
            cfg.clone(),
            strata::NodeDeps {
                clock: Arc::new(HourBehind),
                rng: Box::new(strata_core::rng::SeededRng::new(2)),
            },
        )
        .await
        {
            Ok(n) => break n,
            // Its sockets are released once the stopped node's tasks end
            // (`a_stopped_member_releases_its_sockets_and_layers`).
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let after = self_status(&restarted);
    assert_eq!(after.gossip, before.gossip, "the same gossip address");
    assert!(
        after.generation > before.generation,
        "generation {} after a restart, {} before",
        after.generation,
        before.generation
    );
    nodes.push(restarted);
    eventually(
        "the restarted member joins",
        Duration::from_secs(10),
        || nodes.iter().all(|n| live(n) == 3),
    )
    .await;
}

/// A cluster member stopped with `shutdown` lets go of everything it held: its cache with
/// every layer (the cluster tier and the cache once held each other, so a stopped node kept
/// its memory and sockets for the life of the process) and its gossip and RPC sockets,
/// which a node started again in the same process binds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_releases_its_sockets_and_layers() {
    let mut nodes = cluster(3, 2, None).await;
    let n2 = nodes.pop().unwrap();
    let cache = n2.cache().downgrade();
    let status = n2.cluster_status().unwrap();
    let me = status.members.iter().find(|m| m.state == "self").unwrap();
    let (gossip, rpc) = (me.gossip.clone(), me.rpc.clone());
    n2.shutdown().await;
    eventually(
        "the stopped node's cache and sockets are released",
        Duration::from_secs(5),
        || {
            cache.upgrade().is_none()
                && std::net::UdpSocket::bind(&gossip).is_ok()
                && std::net::TcpListener::bind(&rpc).is_ok()
        },
    )
    .await;
}
