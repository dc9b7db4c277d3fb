//! Network partitions between real processes: three `strata serve` members, each in a
//! network namespace of its own (`strata_tests::NetLab`), cut off from the others by taking
//! its link down. Needs root and `ip` (skipped with a message without).
// Helpers outside `#[test]` functions panic on a failed setup, as the tests do.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use strata_tests::*;

/// Cuts of 1.5–2.5 s that move from member to member, as a flapping link makes them, under
/// a load of `INCR`s from clients on every member. Each cut is shorter than failure
/// detection, but long enough for the others to suspect the member cut off, and for foca's
/// few transmissions of that news to be lost in the cut: the suspicion then ran out into a
/// `Down` of a live member 3–4 s after the heal. A member so declared down rejoins under a
/// new identity and, its lease lapsed in the cut, drops what it owns; two owners of the
/// same keys doing so lost them (a partition review, 2026-12-06: 1,151 of 4,500 keys gone
/// on every member, counters restarted from 1). Now a member that answers again after a
/// silence makes the other refute at once (`strata_cluster::Silences`): nobody is declared
/// down, every key stays, and no acknowledged increment is lost.
#[test]
fn members_cut_off_for_seconds_in_turn_are_not_declared_down_and_lose_nothing() {
    let Some(mut run) = FlapRun::start() else {
        return;
    };
    for (member, cut_ms) in [(1, 2_500), (2, 2_000), (3, 2_500), (1, 1_500), (2, 2_500)] {
        std::thread::sleep(Duration::from_millis(1_500));
        run.lab.cut(member);
        std::thread::sleep(Duration::from_millis(cut_ms));
        run.lab.mend(member);
    }
    // Past foca's suspicion time (4 s) after the last mend: a suspicion raised in a cut and
    // never refuted has run out by now.
    std::thread::sleep(Duration::from_secs(6));
    run.check(Counter::Exact);
    let nodes = &run.nodes;
    for n in nodes {
        assert!(
            !n.log().contains("declared this node down"),
            "a member was declared down by a cut shorter than failure detection:\n{}",
            n.log()
        );
    }
    let refutations: f64 = nodes
        .iter()
        .map(|n| metric_or_zero(n, "strata_cluster_silence_refutations_total"))
        .sum();
    assert!(refutations >= 5.0, "{refutations} refutations for 5 cuts");
}

/// Cuts of 6–7 s, longer than failure detection, moving from member to member with 3 s
/// between them. Each member cut off is declared down, and rejoins after the heal without
/// its lease. Each member cut off used to drop every key it owned at that rejoin; when the
/// cuts moved on before the hand-offs had put the keys back, both owners of a key had
/// dropped it (a partition review: 2,716 of 4,500 keys lost, counters restarted from 1).
/// Now a member that rejoins without its lease holds what it owns unproven and proves it
/// against the other members (ARCHITECTURE decision 118): every key stays.
///
/// The counter is checked only for increments it never had: it still loses acknowledged
/// ones in about one run in ten (docs/semantics.md, flapping partitions; one in three
/// before 2026-12-06 evening, when a member's rejoin made the others give up its whole
/// invalidation history as a gap, and a hot key's writes overran the origin's log within
/// a cut, both restarting every witness's record). The remaining cause is not traced.
#[test]
fn members_cut_off_past_failure_detection_in_turn_prove_what_they_own_and_lose_nothing() {
    let Some(mut run) = FlapRun::start() else {
        return;
    };
    for (member, cut_ms) in [(1, 6_500), (2, 7_000), (3, 6_000)] {
        std::thread::sleep(Duration::from_millis(3_000));
        run.lab.cut(member);
        std::thread::sleep(Duration::from_millis(cut_ms));
        run.lab.mend(member);
    }
    // Rejoins, proofs and hand-offs settle.
    std::thread::sleep(Duration::from_secs(8));
    run.check(Counter::AtMost);
    let rejoined = run
        .nodes
        .iter()
        .filter(|n| n.log().contains("holds those it owns unproven"))
        .count();
    assert!(
        rejoined >= 2,
        "{rejoined} members rejoined without their lease: the cuts did not reach past failure detection"
    );
}

/// One-way cuts past failure detection, under the same load: first member 1's packets to
/// the others are lost while theirs reach it (it hears the cluster declare it down, and
/// its refutations go nowhere), then member 2 hears nothing from the others while its
/// own packets reach them (a deaf member: it suspects and declares down members that are
/// healthy). Clients keep reaching every member. The simulator cuts one way in 30 % of
/// its flapping cuts; this is the same with real processes and sockets. Every key stays
/// and no acknowledged increment is lost.
#[test]
fn one_way_cuts_past_failure_detection_lose_nothing() {
    let Some(mut run) = FlapRun::start() else {
        return;
    };
    std::thread::sleep(Duration::from_millis(2_000));
    // Member 1 muted, until a member that hears it no more has declared it down (the cut
    // reached past failure detection; the deaf phase below also makes n2 declare n1 down,
    // so this is checked now).
    run.lab.cut_one_way(1, 2);
    run.lab.cut_one_way(1, 3);
    let muted_down = hold_until(|| run.nodes[1..].iter().any(|n| declared_down(n, "n1")));
    run.lab.mend_one_way_cuts();
    assert!(
        muted_down,
        "nobody declared the muted member down: the cut did not reach past failure detection\n{}",
        membership_events(&run.nodes)
    );
    std::thread::sleep(Duration::from_millis(4_000));
    // Member 2 deaf, until it has declared a healthy member down (n3 was never cut off;
    // n1 was, but had rejoined before). foca probes one member a second, in random order,
    // and a suspicion runs out seconds later: the second member n2 probed was seen
    // declared down 7 s into the cut, and a fixed 7 s cut missed every Down one run in
    // ten.
    let downs_before_deaf = downs_seen(&run.nodes[1]);
    run.lab.cut_one_way(1, 2);
    run.lab.cut_one_way(3, 2);
    let deaf_downs = hold_until(|| downs_seen(&run.nodes[1]) > downs_before_deaf);
    run.lab.mend_one_way_cuts();
    assert!(
        deaf_downs,
        "the deaf member declared nobody down: its cut had no effect\n{}",
        membership_events(&run.nodes)
    );
    // Rejoins, proofs and hand-offs settle.
    std::thread::sleep(Duration::from_secs(8));
    run.check(Counter::Exact);
    let downs: Vec<usize> = run.nodes.iter().map(downs_seen).collect();
    let rejoins: Vec<usize> = run
        .nodes
        .iter()
        .map(|n| n.log().matches("declared this node down").count())
        .collect();
    eprintln!(
        "members seen down, per member: {downs:?}; rejoins after being declared down: {rejoins:?}"
    );
}

/// Holds a cut for 7 s, then until `reached` (polled; at most 20 s in all): whether it
/// was.
fn hold_until(reached: impl Fn() -> bool) -> bool {
    std::thread::sleep(Duration::from_millis(7_000));
    let end = std::time::Instant::now() + Duration::from_millis(13_000);
    while !reached() {
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// How many times `n`'s log says it saw a member down.
fn downs_seen(n: &Server) -> usize {
    n.log().matches("\"member down\"").count()
}

/// A partial one-way cut: member 1's packets to member 2 are lost for 8 s, longer than
/// failure detection, while every other path works (member 3 still hears both, and each
/// hears it). foca's indirect probes go through member 3, so nobody may be declared down;
/// the peer connections between 1 and 2 fail both ways (their TCP acknowledgements are
/// lost), so writes that one of them must replicate to the other are refused rather than
/// acknowledged on one copy. Under the same load of `INCR`s from clients on every
/// member: every key stays, no acknowledged increment is lost, and after the mend the
/// counter's writes go through again.
#[test]
fn a_partial_one_way_cut_declares_nobody_down_and_loses_nothing() {
    let Some(mut run) = FlapRun::start() else {
        return;
    };
    std::thread::sleep(Duration::from_millis(2_000));
    run.lab.cut_one_way(1, 2);
    // Meanwhile, through member 3, increments of keys of every pair of owners: about a
    // third have members 1 and 2 as their owners. Each key's acknowledged and failed
    // increments are counted.
    let cut_over = Arc::new(AtomicBool::new(false));
    let keys: Vec<String> = (0..12).map(|i| format!("cut{i}")).collect();
    let during = {
        let (url, cut_over, keys) = (run.nodes[2].url(), cut_over.clone(), keys.clone());
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut seen = vec![(0u64, 0u64); keys.len()];
            while !cut_over.load(Ordering::Relaxed) {
                for (k, (acked, failed)) in keys.iter().zip(&mut seen) {
                    match redis::cmd("INCR").arg(k).query::<i64>(&mut c) {
                        Ok(_) => *acked += 1,
                        Err(_) => *failed += 1,
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(8_000));
    cut_over.store(true, Ordering::Relaxed);
    run.lab.mend_one_way_cuts();
    let seen = during.join().unwrap();
    eprintln!("increments through member 3 in the cut, per key (acknowledged, failed): {seen:?}");
    assert!(
        seen.iter().any(|&(_, failed)| failed > 0) && seen.iter().any(|&(acked, _)| acked > 0),
        "the cut refused no increment, or every one: {seen:?}"
    );
    std::thread::sleep(Duration::from_secs(4));
    // Every key's writes go through again, and count what was acknowledged in the cut.
    let mut c = run.nodes[2].redis();
    for (k, (acked, failed)) in keys.iter().zip(&seen) {
        let mut tries = 0;
        let now = loop {
            match redis::cmd("INCR").arg(k).query::<u64>(&mut c) {
                Ok(n) => break n,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 50, "INCR {k} still refused 9 s after the mend: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        assert!(
            now > *acked && now <= acked + failed + 1,
            "{k} reads {now} after one more increment: {acked} acknowledged in the cut, {failed} failed"
        );
    }
    run.check(Counter::Exact);
    for n in &run.nodes {
        assert_eq!(
            downs_seen(n),
            0,
            "{} saw a member down in a partial one-way cut (indirect probes should have kept it up)\n{}",
            n.host,
            membership_events(&run.nodes)
        );
    }
}

/// Whether `n`'s log (JSON lines) says it saw `member` down.
fn declared_down(n: &Server, member: &str) -> bool {
    let field = format!("\"member\":\"{member}\"");
    n.log()
        .lines()
        .any(|l| l.contains("\"member down\"") && l.contains(&field))
}

/// Three members in network namespaces of their own, 3,000 keys written, and a client on
/// every member sending `INCR ctr` until [`FlapRun::check`].
struct FlapRun {
    // Dropped in this order: the members, their directories, then their namespaces.
    nodes: Vec<Server>,
    _dirs: Vec<tempfile::TempDir>,
    lab: NetLab,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    unsure: Arc<AtomicU64>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl FlapRun {
    const KEYS: u64 = 3_000;

    /// `None` without root or `ip` (the lab says why).
    fn start() -> Option<FlapRun> {
        let lab = NetLab::new(3)?;
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let nodes: Vec<Server> = (1..=3)
            .map(|i| lab.start_member(i, dirs[i - 1].path(), ""))
            .collect();
        let all: Vec<&Server> = nodes.iter().collect();
        converge(&all, &["n1", "n2", "n3"], Duration::from_secs(30));
        pipeline_set(&mut nodes[1].redis(), 0..Self::KEYS, Some("kept"));

        // Counters from a client on every member, each acknowledged increment counted.
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let unsure = Arc::new(AtomicU64::new(0));
        let clients: Vec<_> = nodes
            .iter()
            .map(|n| {
                let (url, stop, acked, unsure) =
                    (n.url(), stop.clone(), acked.clone(), unsure.clone());
                std::thread::spawn(move || {
                    let client = redis::Client::open(url).unwrap();
                    let mut conn = None;
                    while !stop.load(Ordering::Relaxed) {
                        let c = match conn.as_mut() {
                            Some(c) => c,
                            None => {
                                match client.get_connection_with_timeout(Duration::from_secs(1)) {
                                    Ok(c) => {
                                        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                                        conn.insert(c)
                                    }
                                    Err(_) => {
                                        std::thread::sleep(Duration::from_millis(50));
                                        continue;
                                    }
                                }
                            }
                        };
                        match redis::cmd("INCR").arg("ctr").query::<i64>(c) {
                            Ok(_) => {
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                // Refused before it ran, or not known either way: counted
                                // as possibly done (a looser upper bound, the same lower one).
                                unsure.fetch_add(1, Ordering::Relaxed);
                                if e.is_io_error() || e.is_timeout() {
                                    conn = None;
                                }
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                })
            })
            .collect();

        Some(FlapRun {
            lab,
            _dirs: dirs,
            nodes,
            stop,
            acked,
            unsure,
            clients,
        })
    }

    /// Stops the clients, and checks through every member that every key reads as written
    /// and the counter counts no more increments than were sent, and with
    /// [`Counter::Exact`] every acknowledged one.
    fn check(&mut self, counter: Counter) {
        self.stop.store(true, Ordering::Relaxed);
        for c in std::mem::take(&mut self.clients) {
            c.join().unwrap();
        }
        let nodes = &self.nodes;
        let all: Vec<&Server> = nodes.iter().collect();
        converge(&all, &["n1", "n2", "n3"], Duration::from_secs(10));
        let keys: Vec<String> = (0..Self::KEYS).map(|i| format!("w{i}")).collect();
        let (acked, unsure) = (
            self.acked.load(Ordering::Relaxed),
            self.unsure.load(Ordering::Relaxed),
        );
        assert!(acked > 100, "only {acked} increments acknowledged");
        for n in nodes {
            let mut c = n.redis();
            let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
            let lost = values
                .iter()
                .filter(|v| v.as_deref() != Some("kept"))
                .count();
            assert_eq!(
                lost,
                0,
                "{lost} of {} keys lost, read through {}",
                Self::KEYS,
                n.host
            );
            let counted: u64 = redis::cmd("GET").arg("ctr").query(&mut c).unwrap();
            eprintln!(
                "the counter reads {counted} through {}: {acked} increments acknowledged, {unsure} failed",
                n.host
            );
            assert!(
                (counted >= acked || counter == Counter::AtMost) && counted <= acked + unsure,
                "the counter reads {counted} through {}: {acked} increments acknowledged, {unsure} failed; what the members did:\n{}",
                n.host,
                membership_events(nodes)
            );
        }
    }
}

/// What [`FlapRun::check`] requires of the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    /// Every acknowledged increment counted, and no more than were sent.
    Exact,
    /// No more than were sent.
    AtMost,
}

/// The lines of every member's log about membership changes, rejoins and proofs.
fn membership_events(nodes: &[Server]) -> String {
    let mut out = String::new();
    for n in nodes {
        for line in n.log().lines().filter(|l| {
            [
                "member down",
                "member up",
                "declared this node down",
                "proven",
                "held unproven",
                "from no copy",
                "unproven copy is dropped",
                "may have been lost",
            ]
            .iter()
            .any(|w| l.contains(w))
        }) {
            out.push_str(&n.host);
            out.push(' ');
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
