//! `strata-sim`: run seeds of the deterministic simulator.
//!
//! ```text
//! cargo run -p strata-sim --release -- --seeds 1000        # seeds 0..1000
//! cargo run -p strata-sim --release -- --seed 42           # replay one seed exactly
//! cargo run -p strata-sim --release -- --seed 7 --nodes 1000 --calm   # scale run
//! ```
//!
//! Exit status 1 when any seed fails; a failure prints its trace and the smallest failing
//! mix the shrinker found.

use std::process::ExitCode;
use std::time::Instant;

use strata_sim::{FaultMix, RunOptions, run_seed, shrink};

fn usage() -> ExitCode {
    eprintln!(
        "usage: strata-sim [--seeds N | --seed S] [--first F] [--nodes N] [--clients N] [--membership-only] [--warm-restart] [--calm] [--partition] [--no-shrink] [--no-evictions] [--no-watch] [--leaves-together] [--flaps] [--handoff-delays] [--slow-handoffs] [--break SWITCH]..."
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seeds: Option<u64> = None;
    let mut one: Option<u64> = None;
    let mut first = 0u64;
    let mut nodes: Option<usize> = None;
    let mut clients: Option<usize> = None;
    let mut membership_only = false;
    let mut warm_restart = false;
    let mut calm = false;
    let mut partition = false;
    let mut no_shrink = false;
    let mut no_evictions = false;
    let mut no_watch = false;
    let mut leaves_together = false;
    let mut flaps = false;
    let mut handoff_delays = false;
    let mut slow_handoffs = false;
    let mut breaks: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse::<u64>().ok());
        match a.as_str() {
            "--seeds" => match num() {
                Some(n) => seeds = Some(n),
                None => return usage(),
            },
            "--seed" => match num() {
                Some(n) => one = Some(n),
                None => return usage(),
            },
            "--first" => match num() {
                Some(n) => first = n,
                None => return usage(),
            },
            "--nodes" => match num() {
                Some(n) => nodes = Some(n as usize),
                None => return usage(),
            },
            "--clients" => match num() {
                Some(n) => clients = Some(n as usize),
                None => return usage(),
            },
            "--membership-only" => membership_only = true,
            "--warm-restart" => warm_restart = true,
            "--calm" => calm = true,
            "--partition" => partition = true,
            "--no-shrink" => no_shrink = true,
            "--no-evictions" => no_evictions = true,
            "--no-watch" => no_watch = true,
            "--leaves-together" => leaves_together = true,
            "--flaps" => flaps = true,
            "--handoff-delays" => handoff_delays = true,
            "--slow-handoffs" => slow_handoffs = true,
            "--break" => match it.next() {
                Some(name) => breaks.push(name.clone()),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    let mut opts = RunOptions {
        nodes,
        clients,
        membership_only,
        warm_restart,
        no_evictions,
        no_watch,
        flaps,
        handoff_delays: handoff_delays || slow_handoffs,
        slow_handoffs,
        ..RunOptions::default()
    };
    for b in &breaks {
        match b.as_str() {
            "skip_seed_rejoin" => opts.switches.skip_seed_rejoin = true,
            "ring_without_self" => opts.switches.ring_without_self = true,
            "ignore_gaps" => opts.coherence_faults.ignore_gaps = true,
            "keep_l3_at_start" => opts.keep_l3_at_start = true,
            "ignore_expiry" => opts.ignore_expiry = true,
            "ignore_max_ttl" => opts.ignore_max_ttl = true,
            "skip_version_check" => opts.skip_version_check = true,
            "untagged_versions" => opts.untagged_versions = true,
            "execute_anywhere" => opts.execute_anywhere = true,
            "replicas_admit_all" => opts.replicas_admit_all = true,
            "ignore_stalls" => opts.ignore_stalls = true,
            "ignore_lease" => opts.ignore_lease = true,
            "grant_on_liveness" => opts.grant_on_liveness = true,
            "forget_own_losses" => opts.forget_own_losses = true,
            "skip_read_checks" => opts.skip_read_checks = true,
            "ignore_joining" => opts.ignore_joining = true,
            "plain_at_writer" => opts.plain_at_writer = true,
            "skip_others_ring" => opts.skip_others_ring = true,
            "skip_silence_refutation" => opts.skip_silence_refutation = true,
            "trust_rejoined_copies" => opts.trust_rejoined_copies = true,
            "execute_over_unproven" => opts.execute_over_unproven = true,
            "replicas_over_unproven" => opts.replicas_over_unproven = true,
            "exempt_every_gap" => opts.exempt_every_gap = true,
            "drop_lately_owned" => opts.drop_lately_owned = true,
            "skip_forwarding" => opts.skip_forwarding = true,
            "skip_absent_removals" => opts.skip_absent_removals = true,
            "skip_leave_handoff" => opts.skip_leave_handoff = true,
            _ => {
                eprintln!(
                    "unknown --break {b}: skip_seed_rejoin, ring_without_self, ignore_gaps, keep_l3_at_start, \
                     ignore_expiry, ignore_max_ttl, skip_version_check, untagged_versions, execute_anywhere, replicas_admit_all, ignore_stalls, ignore_lease, grant_on_liveness, forget_own_losses, skip_read_checks, ignore_joining, plain_at_writer, skip_others_ring, skip_silence_refutation, trust_rejoined_copies, execute_over_unproven, replicas_over_unproven, exempt_every_gap, drop_lately_owned, skip_forwarding, skip_absent_removals, skip_leave_handoff"
                );
                return ExitCode::from(2);
            }
        }
    }
    if leaves_together {
        // Two members of the cluster leave gracefully at the same instant, nothing else.
        let n = nodes.unwrap_or(4);
        let mut mix = FaultMix::calm(n);
        mix.leaves = 2.min(n - 1);
        mix.fault_secs = 10;
        opts.mix = Some(mix);
        opts.leaves_together = true;
    }
    if calm || partition {
        let mut mix = FaultMix::calm(nodes.unwrap_or(5));
        mix.partition = partition;
        mix.fault_secs = 10;
        opts.mix = Some(mix);
    }
    let list: Vec<u64> = match (one, seeds) {
        (Some(s), _) => vec![s],
        (None, Some(n)) => (first..first + n).collect(),
        (None, None) => (first..first + 100).collect(),
    };
    let start = Instant::now();
    let (mut failed, mut events, mut rejoins) = (0usize, 0u64, 0u64);
    let mut workload = strata_sim::Workload::default();
    let mut worst = std::time::Duration::ZERO;
    for seed in &list {
        let r = run_seed(*seed, &opts);
        events += r.events;
        rejoins += r.rejoins;
        workload += r.workload;
        println!("{r}");
        match &r.result {
            Ok(t) => worst = worst.max(*t),
            Err(_) => {
                failed += 1;
                println!("  trace (last events):");
                for line in &r.trace {
                    println!("    {line}");
                }
                if !no_shrink {
                    let small = shrink(*seed, &opts, &r);
                    println!(
                        "  smallest failing mix: {}{}",
                        small.mix,
                        small
                            .clients
                            .map(|c| format!(", clients on {c} node(s) (--clients {c})"))
                            .unwrap_or_default()
                    );
                }
                println!("  replay: cargo run -p strata-sim --release -- --seed {seed}");
            }
        }
    }
    let wall = start.elapsed();
    println!(
        "{} seeds, {failed} failed; worst convergence {:.1}s after heal; {rejoins} rejoins after being declared down; {events} events in {:.1}s ({:.0} events/s)",
        list.len(),
        worst.as_secs_f64(),
        wall.as_secs_f64(),
        events as f64 / wall.as_secs_f64().max(1e-9)
    );
    println!("workload: {workload}");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
