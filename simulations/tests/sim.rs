//! The simulator's own tests: CI's seed sweep, exact replay, regression seeds, and proof that
//! the checker fails when the protocol is broken on purpose.

use strata_cluster::FaultSwitches;
use strata_cluster::coherence::CoherenceFaults;
use strata_sim::{FaultMix, RunOptions, run_seed};

/// Seeds CI runs on every build (the issue asks for at least 200).
const CI_SEEDS: u64 = 250;

#[test]
fn every_ci_seed_converges() {
    let opts = RunOptions::default();
    let mut failures = Vec::new();
    let mut worst = std::time::Duration::ZERO;
    for seed in 0..CI_SEEDS {
        let r = run_seed(seed, &opts);
        match &r.result {
            Ok(t) => worst = worst.max(*t),
            Err(_) => failures.push(format!("{r}\n{}", r.trace.join("\n"))),
        }
    }
    eprintln!("{CI_SEEDS} seeds: worst convergence {worst:?} after heal");
    assert!(
        failures.is_empty(),
        "failing seeds:\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn a_seed_replays_exactly() {
    let opts = RunOptions::default();
    for seed in [3, 42, 117] {
        let a = run_seed(seed, &opts);
        let b = run_seed(seed, &opts);
        assert_eq!(a.mix, b.mix);
        assert_eq!(
            a.events, b.events,
            "seed {seed}: a different number of events"
        );
        assert_eq!(a.result, b.result);
        assert_eq!(a.packets, b.packets);
        assert_eq!(a.trace, b.trace, "seed {seed}: a different trace");
    }
    // And different seeds draw different runs.
    assert_ne!(run_seed(1, &opts).events, run_seed(2, &opts).events);
}

/// Regression seeds: each once found a bug; the comment says which.
#[test]
fn regression_seeds() {
    // 163, 326, 470: a node whose every join announcement was lost (up to 18 % loss), or that
    // had forgotten everyone after a partition, stayed alone for ever: foca announces only to
    // members it knows. (Found first as seeds 81, 163 and 198 of the membership-only
    // simulator; the workload changed those runs, and time-based generations changed them
    // again, and so did clock skew: today 163, 326 and 470 exercise it.) Fixed by the Rejoin
    // timer (a node alone
    // announces to its seeds every 2 s); with the fix switched off they fail again.
    for seed in [163, 326, 470] {
        let ok = run_seed(seed, &RunOptions::default());
        assert!(ok.result.is_ok(), "{ok}");
        let broken = run_seed(
            seed,
            &RunOptions {
                switches: FaultSwitches {
                    skip_seed_rejoin: true,
                    ..FaultSwitches::default()
                },
                ..RunOptions::default()
            },
        );
        assert!(
            broken.result.is_err(),
            "seed {seed} no longer exercises the bug: {broken}"
        );
    }
}

/// Seed 543 once failed the contract: a node restarted under a generation equal to the one
/// foca had given its previous life when the others declared it down and it rejoined, so
/// nobody saw that life end, and its last invalidation (sent 80 ms before the crash) was
/// lost for good. The simulator numbered lives with a counter; it now uses the start time,
/// as the node does (decision 40 in docs/ARCHITECTURE.md).
#[test]
fn restart_generation_regression_seed() {
    let r = run_seed(543, &RunOptions::default());
    assert!(r.result.is_ok(), "{r}");
}

/// Seed 640 failed the checker, not the protocol: a pair key's primary crashed while its
/// replica was paused past failure detection (declared down by four of nine members, three
/// others dead); the new owners started the counter from nothing, as they must once both
/// copies are gone, but the checker counted the paused replica's copy as kept because it
/// counted the dead members among those that could still grant it a lease. It rejoined
/// and dropped the copy (its lease had lapsed), as the checker now expects.
#[test]
fn lease_granters_regression_seed() {
    let r = run_seed(640, &RunOptions::default());
    assert!(r.result.is_ok(), "{r}");
}

/// Seed 1335 once failed the contract: a namespace flush whose `Apply` to one owner was lost,
/// from a node that crashed 50 ms later (before gossip carried it), left that owner serving
/// flushed values, although the flush had returned `Ok`. A strict invalidation that a live
/// member does not confirm is now an error, and only confirmed ones are in the contract.
#[test]
fn unconfirmed_flush_regression_seed() {
    let r = run_seed(1335, &RunOptions::default());
    assert!(r.result.is_ok(), "{r}");
}

/// Seed 507 once failed the contract: foca renewed a node's identity when the others
/// declared it down (`Notification::Rejoin`, which Strata ignored: it handled only
/// `Defunct`, which foca never sends when identities renew themselves). The others went on
/// addressing the old identity, foca at the node ignored every such packet, and the node
/// missed an invalidation for the rest of the run. Strata now announces the renewed identity
/// to the seeds, as it did for `Defunct`. (Since members withhold foca's `TurnUndead` for a
/// refuted suspicion, 2026-12-06, nobody rejoins in seed 507; seed 515, where seven
/// identities are renewed, runs the path.)
#[test]
fn renewed_identity_regression_seed() {
    let r = run_seed(507, &RunOptions::default());
    assert!(r.result.is_ok(), "{r}");
    let r = run_seed(515, &RunOptions::default());
    assert!(r.result.is_ok(), "{r}");
    assert!(r.rejoins > 0, "{r}");
}

/// Seed 1775 once failed G4: two nodes wrote one key in the same millisecond and stamped the
/// same version (versions were wall-clock ms plus a counter, the same on every node), so the
/// owners kept one value and its expiry, a copy the other, and the G4 check saw a value
/// served past the expiry the reference model had for that version. Members' clocks are now
/// tagged with their name (`HybridClock::with_tag`), and the checker flags any two writes of
/// a key with one version (`untagged_versions` in the test below).
///
/// Seed 2123 once failed G2: the simulator queued a node's invalidation for the next
/// periodic gossip round (200 ms) where the node sends a round at once, and the writer
/// crashed 45 ms after its write, so a reader kept its copy until the writer was declared
/// down 5.7 s later. The simulator now does what the node does (`broadcast_now`).
#[test]
fn version_tie_and_immediate_gossip_regression_seeds() {
    for seed in [1775, 2123, 2927] {
        let r = run_seed(seed, &RunOptions::default());
        assert!(r.result.is_ok(), "{r}");
    }
}

/// Seeds 922, 1963 and 2157 (4-node clusters) once left a node without any of one origin's
/// broadcast items: foca sent each item at most twice, and a gossip round to all three
/// members went in member-list order, so the last member never got it. Fixed by at least 6
/// transmissions (`lan_config`); the anti-entropy pull also covers it.
#[test]
fn dissemination_regression_seeds() {
    for seed in [922, 1963, 2157] {
        let r = run_seed(seed, &RunOptions::default());
        assert!(r.result.is_ok(), "{r}");
    }
}

#[test]
fn the_checker_catches_each_protocol_breakage() {
    let switches = [
        (
            "skip_seed_rejoin",
            FaultSwitches {
                skip_seed_rejoin: true,
                ..FaultSwitches::default()
            },
        ),
        (
            "ring_without_self",
            FaultSwitches {
                ring_without_self: true,
                ..FaultSwitches::default()
            },
        ),
    ];
    let coherence = [("ignore_gaps", CoherenceFaults { ignore_gaps: true })];
    let cases = switches
        .into_iter()
        .map(|(n, s)| (n, s, CoherenceFaults::default(), false))
        .chain(
            coherence
                .into_iter()
                .map(|(n, c)| (n, FaultSwitches::default(), c, false)),
        );
    // `keep_l3_at_start` is not in this list: a restarted node's first contact with each
    // origin repairs that origin's whole life, which usually drops the kept copies within a
    // second, before a read older than the 3 s bound can catch them (1 seed in 600 with one
    // workload, none with the next). The 3-process test in strata-server catches it.
    for (name, switches, coherence_faults, keep_l3_at_start) in cases {
        let opts = RunOptions {
            switches,
            coherence_faults,
            keep_l3_at_start,
            ..RunOptions::default()
        };
        let failing: Vec<u64> = (0..600)
            .filter(|s| run_seed(*s, &opts).result.is_err())
            .take(3)
            .collect();
        assert!(
            !failing.is_empty(),
            "600 seeds never noticed {name}: the checker proves nothing about it"
        );
        for s in &failing {
            assert!(run_seed(*s, &RunOptions::default()).result.is_ok());
        }
        eprintln!("{name} caught by seeds {failing:?}");
    }
}

/// The per-operation checks of the contract, each against a breakage of what it guards:
/// expiry (G4), the TTL licence rule (G5), the owners' version check (which makes a writer
/// read back an older value than its own write: G1, or serve a superseded one: G2), and
/// version uniqueness (untagged clocks stamp two writes alike). Each must be caught within
/// 200 seeds, by the guarantee named.
#[test]
fn the_per_read_checks_catch_expiry_policy_and_version_breakage() {
    let cases: [(&str, RunOptions, &[&str]); 4] = [
        (
            "ignore_expiry",
            RunOptions {
                ignore_expiry: true,
                ..RunOptions::default()
            },
            &["G4"],
        ),
        (
            "ignore_max_ttl",
            RunOptions {
                ignore_max_ttl: true,
                ..RunOptions::default()
            },
            &["G5"],
        ),
        (
            "skip_version_check",
            RunOptions {
                skip_version_check: true,
                ..RunOptions::default()
            },
            &["G1", "G2", "stale"],
        ),
        (
            "untagged_versions",
            RunOptions {
                untagged_versions: true,
                ..RunOptions::default()
            },
            &["G2: a second write"],
        ),
    ];
    for (name, opts, guarantees) in cases {
        let caught: Vec<(u64, String)> = (0..200)
            .filter_map(|s| run_seed(s, &opts).result.err().map(|e| (s, e)))
            .take(3)
            .collect();
        assert!(
            !caught.is_empty(),
            "200 seeds never noticed {name}: the checker proves nothing about it"
        );
        for (s, why) in &caught {
            assert!(
                guarantees.iter().any(|g| why.contains(g)),
                "{name}, seed {s}: caught, but not as {guarantees:?}: {why}"
            );
            assert!(run_seed(*s, &RunOptions::default()).result.is_ok());
        }
        eprintln!(
            "{name} caught by seeds {:?}",
            caught.iter().map(|c| c.0).collect::<Vec<_>>()
        );
    }
}

/// The workload exercises what the contract is about: TTLs that expire during the run,
/// TTLs over the maximum (refused), removals, and reads both local and remote.
#[test]
fn the_workload_exercises_ttls_removals_and_both_read_paths() {
    let mut w = strata_sim::Workload::default();
    for seed in 0..20 {
        let r = run_seed(seed, &RunOptions::default());
        assert!(r.result.is_ok(), "{r}");
        w += r.workload;
    }
    eprintln!("20 seeds: {w}");
    assert!(w.ttl_writes > w.writes / 3, "{w}");
    assert!(w.refused_ttl > 0, "{w}");
    assert!(w.expired_misses > 0, "{w}");
    assert!(w.removals > 0, "{w}");
    assert!(w.local_reads > 0 && w.remote_reads > 0, "{w}");
    assert!(w.plain_evictions.0 > 0, "{w}");
    assert!(w.plain_evictions.1 > 0, "{w}");
}

/// ARCHITECTURE decision 101: a `DEL` whose primary finds no copy of the key (its owners
/// evicted it, while members that read it earlier still hold copies) is stamped,
/// replicated and announced all the same. Broken on purpose (answered `0`, nothing
/// announced, as before the decision), a copy read earlier outlives the client's `DEL`
/// past the bound. Most seeds' partitions and pauses switch the bound's checks off early,
/// and the key's next write usually drops the copy within the bound, so the calm mix (no
/// partition; a pause in half the seeds; the copies checked every second until then) finds
/// it. The failure must name a skipped `DEL`: breaking the protocol sends fewer packets,
/// so the run goes another way and could fail on something else.
#[test]
fn the_checker_catches_a_delete_that_skips_keys_its_owners_evicted() {
    let mut mix = FaultMix::calm(5);
    mix.fault_secs = 10;
    let calm = RunOptions {
        mix: Some(mix),
        ..RunOptions::default()
    };
    let broken = RunOptions {
        skip_absent_removals: true,
        ..calm.clone()
    };
    let first = (0..50).find(|&s| {
        run_seed(s, &broken)
            .result
            .is_err_and(|e| e.contains("a DEL its primary skipped"))
    });
    let Some(seed) = first else {
        panic!("50 calm seeds never noticed a DEL that skips evicted keys");
    };
    let r = run_seed(seed, &calm);
    assert!(r.result.is_ok(), "seed {seed} with decision 101: {r}");
    assert!(r.workload.plain_evictions.1 > 0, "{r}");
}

#[test]
fn a_calm_cluster_converges_in_seconds_and_crashed_nodes_are_dropped() {
    let calm = run_seed(
        5,
        &RunOptions {
            mix: Some(FaultMix::calm(8)),
            ..RunOptions::default()
        },
    );
    let t = calm.result.clone().expect("calm cluster converges");
    assert!(t.as_secs() < 5, "{calm}");
    let mut mix = FaultMix::calm(8);
    mix.crashes = 2;
    mix.stay_dead = 2;
    let r = run_seed(
        5,
        &RunOptions {
            mix: Some(mix),
            ..RunOptions::default()
        },
    );
    // Converged means every live view is exactly the 6 live nodes: the dead were removed.
    assert!(r.result.is_ok(), "{r}");
}

#[test]
fn a_node_with_the_wrong_secret_never_joins() {
    for seed in 0..20 {
        let r = run_seed(
            seed,
            &RunOptions {
                intruder: true,
                ..RunOptions::default()
            },
        );
        // Converged = every member's view is exactly the members, the intruder in none,
        // and the intruder sees nobody.
        assert!(r.result.is_ok(), "{r}");
        assert!(
            r.packets.2 > 0,
            "seed {seed}: the intruder's packets were never refused"
        );
    }
}

/// The shrinker keeps a failure while it cuts the run down: a broken TTL policy fails in
/// any cluster, so seed 0's 11-node, 21 s, partitioned run shrinks to the smallest one.
#[test]
fn a_failure_shrinks_to_a_smaller_run() {
    let opts = RunOptions {
        ignore_max_ttl: true,
        ..RunOptions::default()
    };
    let r = run_seed(0, &opts);
    assert!(r.result.is_err(), "{r}");
    let small = strata_sim::shrink(0, &opts, &r);
    assert!(small.result.is_err(), "{small}");
    assert!(small.mix.nodes < r.mix.nodes, "{} -> {}", r.mix, small.mix);
    assert_eq!(small.mix.fault_secs, 5, "{}", small.mix);
    assert!(!small.mix.partition, "{}", small.mix);
}

/// Warm restarts (the node's `cluster::warm`: a restarted node keeps its L3 copies off the
/// read path, baselines every member's coherence state, proves the copies against their
/// owners and serves them again; a node that may have lost invalidations proves its copies
/// again instead of dropping them) keep every guarantee across the same seeds.
///
/// A proof broken on purpose (keeping every copy) is not caught here: in these workloads
/// the restarted node's first contact with each origin repairs that origin's whole life,
/// which drops the stale copies before the proof runs (no seed of 0..50 had a stale copy
/// left at proof time). The 3-process test in strata-server catches it (a kept copy of a
/// key deleted during the downtime is served).
#[test]
fn warm_restarts_keep_the_contract() {
    let warm = RunOptions {
        warm_restart: true,
        ..RunOptions::default()
    };
    for seed in 0..150 {
        let r = run_seed(seed, &warm);
        assert!(r.result.is_ok(), "warm restarts, {r}");
    }
    // A member paused during two restarted members' baselines: each dropped the copies
    // pushed to it meanwhile, a pair's newest among them, and a transaction read its
    // counter as 0 after 44 (ARCHITECTURE decision 123: they are proven now).
    let r = run_seed(1497, &warm);
    assert!(r.result.is_ok(), "warm restarts, {r}");
}

/// Per-key primary execution (`strata_cluster::primary`): the checker counts every
/// acknowledged INCR once, and fails when the protocol is broken on purpose.
#[test]
fn the_checker_catches_broken_primary_execution() {
    // The protocol before per-key primaries (the node a client asked reads, increments and
    // writes; owners take any write) loses increments within 50 seeds.
    let anywhere = RunOptions {
        execute_anywhere: true,
        ..RunOptions::default()
    };
    let first = (0..50).find(|&s| run_seed(s, &anywhere).result.is_err());
    assert!(
        first.is_some(),
        "executing anywhere went unnoticed for 50 seeds"
    );
    // Seed 133 showed the stall guard's case under the ring's old placement (a primary
    // paused for 2.7 s wakes and executes on its stale view, through a replica that has not
    // moved on either). Since keys are placed by hash slot (ARCHITECTURE decision 72), no
    // seed of 0-5,499 reaches it with `ignore_stalls` (docs/simulation.md); the guard's
    // own rule is unit-tested in `strata_cluster::primary`. The seed stays a regression run.
    let r = run_seed(133, &RunOptions::default());
    assert!(r.result.is_ok(), "seed 133 with the stall guard: {r}");
    assert!(r.workload.incrs > 0, "the workload ran INCRs");
}

/// The primary's lease (`strata_cluster::primary::Lease`): seed 1000 is a 7|5 partition in
/// which the minority side's views still counted two majority members as live (SWIM's
/// indirect probes kept them), so its primaries went on acknowledging INCRs that the
/// majority's new primaries never saw. Without the lease the checker catches it; with it
/// the seed passes. (`tests/cluster.rs` in the strata crate shows the same on real sockets.)
/// The seed replays without owner-store evictions, as it was found: they change which
/// copies the minority holds.
#[test]
fn the_lease_stops_a_minority_primary_that_still_counts_a_majority() {
    let as_found = RunOptions {
        no_evictions: true,
        ..RunOptions::default()
    };
    // Found before the join guard (`placement::Joining`), which refuses the first
    // executions of every node while the cluster forms and so moves the run, and while
    // plain-key writes still ran at the writer: it replays as found with the guard off and
    // the older plain-key model (`plain_at_writer`) too.
    let broken = RunOptions {
        ignore_lease: true,
        ignore_joining: true,
        plain_at_writer: true,
        ..as_found.clone()
    };
    let r = run_seed(1000, &broken);
    assert!(
        r.result
            .as_ref()
            .is_err_and(|e| e.contains("acknowledged increment was lost")),
        "seed 1000 without the lease: {r}"
    );
    let r = run_seed(1000, &as_found);
    assert!(r.result.is_ok(), "seed 1000 with the lease: {r}");
}

/// A primary executes a key only where no member its lease's grants named precedes it on
/// the key (`strata_cluster::primary::{GrantView, ExecLease}`, ARCHITECTURE decisions 129
/// and 130). Seed 3558 (warm restarts, flapping
/// cuts, delayed hand-offs): a one-way cut kept one member from hearing a key's two
/// owners; it declared them down, became the key's primary in its view, and held its
/// lease on the word of members that still counted those owners live, while one of them
/// executed as the primary in the others' view: a `WATCH` increment started from no copy
/// after 105 acknowledged ones. Granted on liveness alone, names left out, the checker
/// catches it.
#[test]
fn the_members_a_lease_grant_names_join_the_ring_a_primary_executes_on() {
    let opts = RunOptions {
        warm_restart: true,
        flaps: true,
        handoff_delays: true,
        ..RunOptions::default()
    };
    let broken = RunOptions {
        grant_on_liveness: true,
        ..opts.clone()
    };
    let r = run_seed(3558, &broken);
    assert!(
        r.result
            .as_ref()
            .is_err_and(|e| e.contains("an acknowledged increment was lost")),
        "seed 3558 granting on liveness: {r}"
    );
    let r = run_seed(3558, &opts);
    assert!(r.result.is_ok(), "seed 3558: {r}");
}

/// A node that starts (or rejoins after being cut off from everyone) keeps the ring the
/// others had before it joined for hand-off reads (`placement::previous_ring`). Seed 2530:
/// a 4-node cluster in which counter 0's primary left and came back with an empty store;
/// keeping its solitary ring as "previous", it asked only the current owners, none of
/// which held the counter (the copy sat with the previous owner, whose hand-off push had
/// not come yet), and restarted it from 0 after an acknowledged 17.
#[test]
fn a_restarted_primary_asks_the_owners_before_it_joined() {
    let r = run_seed(2530, &RunOptions::default());
    assert!(r.result.is_ok(), "seed 2530: {r}");
    assert!(r.workload.incrs > 0, "the workload ran INCRs");
}

/// Seed 2962 (found by the first run of the transaction workload, and failing before it):
/// counter 3's old primary came back to an 11-node cluster, found the members one at a
/// time, and became primary again with a replica that had evicted its copy; its hand-off
/// rings held only the members of its first view, so it never asked the old replica that
/// held the counter, and restarted it from nothing (37 acknowledged increments lost). A
/// joining node now keeps the others' ring as it finds them (`placement::still_joining`).
/// The transaction workload itself runs in every seed.
///
/// Seeds 10011 and 11440: a primary restarted 0.4 s before, whose view lacked the member
/// holding a counter's only copy (found 0.1 s later), restarted it from nothing. A joining
/// node now executes nothing until its view has settled (`placement::Joining`); with that
/// guard off (`ignore_joining`) seed 10011 failed again, replayed as found with plain-key
/// writes at the writer (`plain_at_writer`) — now seed 10836 does (10594 did until members
/// refuted after a silence, 2026-12-06, which moved its schedule); 11440 no longer replays since the
/// simulator's read plans ask only members of the view, as the node's do. (Seed 2114,
/// which failed without the guard under today's workload, lost only a copy doomed with
/// its holder, which the checker no longer counts: `Sim::keeps_copies_for`.)
#[test]
fn a_joining_node_asks_the_members_it_found_later() {
    for seed in [2962, 10011, 11440, 2114] {
        let r = run_seed(seed, &RunOptions::default());
        assert!(r.result.is_ok(), "seed {seed}: {r}");
        assert!(
            r.workload.incrs > 0 && r.workload.transactions.0 > 0,
            "seed {seed}: {r}"
        );
    }
    // Since a primary executes only on grants from members that held it for the grant
    // window (decision 129), which a joining node waits out too, no seed of 0–999 fails
    // without the guard; 10836 replays as found with grants counted on liveness alone.
    let as_found = RunOptions {
        ignore_joining: true,
        plain_at_writer: true,
        grant_on_liveness: true,
        ..RunOptions::default()
    };
    // Since a member restarted faster than failure detection gets its keys handed back
    // (2026-12-05), 10011 runs clean without the guard too; 10836 fails the same way
    // (a `WATCH` increment from a stale copy), and only with both switches.
    let r = run_seed(10836, &as_found);
    assert!(
        r.result
            .as_ref()
            .is_err_and(|e| e.contains("acknowledged increment was lost")),
        "seed 10836 without the join guard: {r}"
    );
}

/// Seeds 10375 and 10707: a node paused past the moment the others declared it down woke
/// and wrote (10375) or removed (10707) a plain key under its old ring — itself an owner —
/// and the simulator acknowledged it, though the current owners never heard of it (its
/// gossip was ignored: it was down), so an owner kept the older value for good. The node
/// runs every write and removal at the key's primary, which admits nothing while stalled
/// or without its lease; the simulator now does too. Modelled as before
/// (`plain_at_writer`), both fail again.
#[test]
fn a_node_back_from_a_pause_writes_plain_keys_only_through_their_primary() {
    let old_model = RunOptions {
        plain_at_writer: true,
        ..RunOptions::default()
    };
    for seed in [10375, 10707] {
        let r = run_seed(seed, &RunOptions::default());
        assert!(r.result.is_ok(), "seed {seed}: {r}");
        assert!(r.workload.plain_refused > 0, "seed {seed}: {r}");
        // A stale owner entry, or a copy read from one (seed 10707 since 2026-12-06).
        let r = run_seed(seed, &old_model);
        assert!(
            r.result.as_ref().is_err_and(
                |e| e.contains("holds a stale owner entry") || e.contains("holds a stale copy")
            ),
            "seed {seed} with writes at the writer: {r}"
        );
    }
}

/// Seed 4680: a counter's primary paused for 13.6 s (declared down, its own view never
/// lost anyone); meanwhile the next primary executed two INCRs with another replica, then
/// evicted its copy, and that replica's hand-off push at the paused node's return was
/// lost. The returning primary's rings all held itself, so its read plan never reached the
/// replica, and it restarted the counter from nothing. A node the others declared down now
/// keeps their ring without it for hand-off reads (`placement::others_ring`, in the node
/// and here). Since the simulator replicates plain writes and reads as the node does, the
/// seed no longer replays that run, and no seed of 0–5,999 fails without the others' ring
/// (`skip_others_ring`); the node's unit test
/// `a_rejoining_node_asks_the_owners_of_the_ring_without_it` keeps it tested.
#[test]
fn a_node_declared_down_asks_the_owners_the_others_used_meanwhile() {
    let r = run_seed(4680, &RunOptions::default());
    assert!(r.result.is_ok(), "seed 4680: {r}");
    assert!(r.workload.incrs > 0, "seed 4680: {r}");
}

/// Seed 3237, found by the `WATCH` clients: a pair counter's primary had lost its copy at
/// its rejoin after a pause; the replica holding the last copy, cut off on a minority
/// side, pushed it at a ring change to a member its minority ring named as a new owner and
/// dropped its own at its rejoin; the majority's primary never asked that member, and a
/// `WATCH` of "no key" committed `1` after an acknowledged 36. A member that stores a
/// pushed copy of a key it does not own in its view now passes it on to the owners there
/// (`forward_misplaced`, as the node's). Since plain writes are replicated as the node
/// replicates them (fencing, refusals) the seed no longer replays that run, and no seed of
/// 0–5,999 fails without forwarding (`skip_forwarding`); the node's test
/// `a_pushed_copy_of_a_key_this_member_does_not_own_reaches_its_owner` keeps it tested.
#[test]
fn a_pushed_copy_reaches_the_owners_of_the_receivers_view() {
    let r = run_seed(3237, &RunOptions::default());
    assert!(r.result.is_ok(), "seed 3237: {r}");
    assert!(r.workload.watches.0 > 0, "the WATCH clients committed: {r}");
}

/// Two members of four leave gracefully at the same instant (one `SIGTERM` to both) and
/// come back later with nothing: the keys only they owned must reach the members that
/// stay before they go. Each leaver pushes its keys to their owners on the ring without
/// itself and every member it finds gone (`placement::leave_targets`, the node's own
/// `handoff_on_leave`); the checker fails a leave that takes a counter's last acknowledged
/// copy with it. Without the hand-off (`skip_leave_handoff`, the node before it: a
/// membership review and the black-box test `two_members_stopped_together_...` lost up to
/// 763 of 5,000 keys) the checker must notice within 50 seeds.
#[test]
fn members_leaving_together_take_no_counter_with_them() {
    let mix = FaultMix {
        leaves: 2,
        fault_secs: 10,
        ..FaultMix::calm(4)
    };
    let opts = RunOptions {
        mix: Some(mix),
        leaves_together: true,
        ..RunOptions::default()
    };
    let mut incrs = 0;
    for seed in 0..50 {
        let r = run_seed(seed, &opts);
        assert!(r.result.is_ok(), "seed {seed}: {r}");
        incrs += r.workload.incrs;
    }
    assert!(incrs > 0);
    let broken = RunOptions {
        skip_leave_handoff: true,
        ..opts
    };
    let caught = (0..50).find(|&s| {
        run_seed(s, &broken)
            .result
            .is_err_and(|e| e.contains("left gracefully holding the last acknowledged copy"))
    });
    assert!(
        caught.is_some(),
        "50 seeds never noticed leavers that hand nothing over"
    );
}

/// Flapping cuts (`RunOptions::flaps`): one member at a time cut off from all others for
/// 1–3 s, then mended. A partition review (2026-12-06) saw suspicions raised in such cuts
/// run out into `Down`s of live members after each heal, whose rejoins without their
/// leases dropped what they owned (up to 2,468 of 4,500 keys lost). The contract holds
/// under them, and a member that answers again after a silence makes the other refute at
/// once (`strata_cluster::Silences`): with that off, members rejoin far more often.
#[test]
fn flapping_cuts_keep_the_contract_and_make_fewer_members_rejoin() {
    let flaps = RunOptions {
        flaps: true,
        ..RunOptions::default()
    };
    let unrefuted = RunOptions {
        skip_silence_refutation: true,
        ..flaps.clone()
    };
    let (mut with, mut without) = (0, 0);
    for seed in 0..100 {
        let r = run_seed(seed, &flaps);
        assert!(r.result.is_ok(), "seed {seed} with flapping cuts: {r}");
        with += r.rejoins;
        without += run_seed(seed, &unrefuted).rejoins;
    }
    // 216 against 288 over these seeds since decision 130 (0.75; 0.70 over seeds 0–999,
    // 1,794 against 2,557): a fifth fewer at least.
    assert!(
        with * 5 < without * 4,
        "{with} rejoins with refutations after a silence, {without} without"
    );
}

/// A member that rejoins without its lease holds what it owns unproven until its proof
/// (ARCHITECTURE decision 118), and so does a restarted member with what is pushed to it.
/// Meanwhile it may hold the only copy of a counter's latest increment: a primary that read
/// such a copy as none (its own, or another owner's) started the counter over. The checker
/// counts copies held unproven as copies, so that shows as a lost increment: seeds 604 and
/// 625 (`INCR`s answered from nothing) and 211 (a transaction) with the refusal switched
/// off, and pass with it. (Seeds 380 and 182 did until decision 129 moved their runs, and
/// 88 until decision 130 did.)
#[test]
fn a_primary_does_not_execute_over_copies_held_unproven() {
    let broken = RunOptions {
        execute_over_unproven: true,
        ..RunOptions::default()
    };
    for seed in [604, 625, 211] {
        let r = run_seed(seed, &broken);
        assert!(
            r.result.is_err(),
            "seed {seed} no longer executes over an unproven copy: {r}"
        );
        let ok = run_seed(seed, &RunOptions::default());
        assert!(ok.result.is_ok(), "{ok}");
    }
}

/// Ring-change hand-offs that run 1–30 ms after their ring change
/// (`RunOptions::handoff_delays`), as the node's `push_handoff` task does, so that a
/// rejoin's drop, a ring change back or a crash can come before the hand-off reads the
/// owner store: the contract holds under flapping cuts and warm restarts with them, and
/// rejoins whose lease held still keep copies for those hand-offs (ARCHITECTURE decision
/// 126; with every hand-off instant, no drop ever came first).
#[test]
fn delayed_handoffs_keep_the_contract() {
    let opts = RunOptions {
        handoff_delays: true,
        flaps: true,
        ..RunOptions::default()
    };
    let warm = RunOptions {
        warm_restart: true,
        ..opts.clone()
    };
    for seed in 0..100 {
        let r = run_seed(seed, &opts);
        assert!(r.result.is_ok(), "seed {seed} with delayed hand-offs: {r}");
        let r = run_seed(seed, &warm);
        assert!(
            r.result.is_ok(),
            "seed {seed} with delayed hand-offs, warm: {r}"
        );
    }
    // A key's two owners left gracefully seconds apart and restarted; each held the copy
    // the others pushed at its join, unproven, and both lives that ended counted against a
    // replication factor of 2 until the proof learned the push was read after its process
    // started (`warm::needed_ms_after_start`): a counter restarted at 1 after 16.
    let r = run_seed(2838, &warm);
    assert!(
        r.result.is_ok(),
        "seed 2838 with delayed hand-offs, warm: {r}"
    );
}

/// Hand-offs as late as the node's resends (one in five after 30–2,000 ms) keep the
/// contract too: a drop, a ring change back or a crash has seconds to come between a ring
/// change and its hand-off's read.
#[test]
fn slow_handoffs_keep_the_contract() {
    let opts = RunOptions {
        handoff_delays: true,
        slow_handoffs: true,
        flaps: true,
        warm_restart: true,
        ..RunOptions::default()
    };
    for seed in 0..200 {
        let r = run_seed(seed, &opts);
        assert!(r.result.is_ok(), "seed {seed} with slow hand-offs: {r}");
    }
}
