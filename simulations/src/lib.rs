//! Strata's deterministic simulator.
//!
//! A seeded discrete-event simulation of N nodes that drives the **same** sans-IO state
//! machines the node runs (today: `strata_cluster::Membership` — foca — and the `Ring`),
//! never a model of them. Time is simulated (microseconds), the network is simulated (loss,
//! duplication, delay and so reordering, symmetric and one-way partitions), and nodes crash,
//! restart under a new generation, and leave and rejoin. Everything random comes from one
//! seeded RNG, and nothing iterates a hash map, so a seed replays exactly.
//!
//! A run has three phases: bootstrap (every node joins through the seeds), faults (the mix
//! the seed drew), and liveness (every fault healed, crashed nodes restarted except those
//! chosen to stay dead). The checker then requires, within a bound, that every live node's
//! view is exactly the live set and that all nodes compute the same ring — and reports how
//! long that took in simulated time.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

use strata_cluster::coherence::{self, CoherenceFaults};
use strata_cluster::placement;
use strata_cluster::primary as decide;
use strata_cluster::version_tag;
use strata_cluster::{
    Coherence, CoherenceConfig, FaultSwitches, Invalidation, InvalidationOp, Membership,
    MembershipTimer, NodeIdentity, Output, lan_config,
};
use strata_cluster::{DEFAULT_REPLICATION_FACTOR as RF, DEFAULT_VNODES, Ring};
use strata_core::ops::{self, Effect, KeyOp, OpLimits};
use strata_core::{Entry, HybridClock, NamespacePolicy, Version};

mod settling;

/// The secret every simulated node shares.
const SECRET: &[u8] = b"simulated cluster secret";
/// Trace lines kept for a failure report.
const TRACE_LINES: usize = 60;

/// What a seed drew: cluster size, network faults and node faults.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultMix {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Probability that a packet is delivered twice.
    pub duplication: f64,
    /// Largest one-way delay, in ms (the smallest is 0.1 ms); different delays reorder.
    pub max_delay_ms: u64,
    /// Whether a partition splits the cluster for part of the fault phase.
    pub partition: bool,
    /// Whether the partition is one-way (A hears B, B does not hear A).
    pub one_way: bool,
    /// Nodes that crash during the fault phase (restarted at heal, except `stay_dead`).
    pub crashes: usize,
    /// Of the crashed nodes, how many never come back (the failure detector must remove them).
    pub stay_dead: usize,
    /// Nodes that leave gracefully and rejoin later.
    pub leaves: usize,
    /// Length of the fault phase, in simulated seconds.
    pub fault_secs: u64,
    /// Largest clock offset of a node from true time, in ms: each node's offset is drawn in
    /// ±this, and its versions come from a hybrid logical clock on its own clock.
    pub max_skew_ms: u64,
}

impl FaultMix {
    /// Draws a mix from `rng` for a cluster of `nodes` (swarm testing: each seed enables a
    /// different subset of faults, at different intensities).
    pub fn draw(rng: &mut StdRng, nodes: usize) -> Self {
        let on = |rng: &mut StdRng| rng.random_bool(0.5);
        let crashes = if on(rng) {
            rng.random_range(0..=nodes / 3)
        } else {
            0
        };
        FaultMix {
            nodes,
            loss: if on(rng) {
                rng.random_range(0.0..0.2)
            } else {
                0.0
            },
            duplication: if on(rng) {
                rng.random_range(0.0..0.05)
            } else {
                0.0
            },
            max_delay_ms: rng.random_range(1..=100),
            partition: on(rng),
            one_way: on(rng),
            crashes,
            stay_dead: if crashes > 0 {
                rng.random_range(0..=crashes.min(1))
            } else {
                0
            },
            leaves: if on(rng) {
                rng.random_range(0..=nodes / 4)
            } else {
                0
            },
            fault_secs: rng.random_range(5..=30),
            // Drawn by the simulator from the workload's RNG, so that adding skew left every
            // seed's schedule as it was.
            max_skew_ms: 0,
        }
    }

    /// No faults at all: the control case.
    pub fn calm(nodes: usize) -> Self {
        FaultMix {
            nodes,
            loss: 0.0,
            duplication: 0.0,
            max_delay_ms: 5,
            partition: false,
            one_way: false,
            crashes: 0,
            stay_dead: 0,
            leaves: 0,
            fault_secs: 5,
            max_skew_ms: 0,
        }
    }
}

impl fmt::Display for FaultMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nodes={} loss={:.3} dup={:.3} delay<={}ms partition={}{} crashes={} (stay dead {}) leaves={} faults={}s skew<={}ms",
            self.nodes,
            self.loss,
            self.duplication,
            self.max_delay_ms,
            self.partition,
            if self.partition && self.one_way {
                " (one-way)"
            } else {
                ""
            },
            self.crashes,
            self.stay_dead,
            self.leaves,
            self.fault_secs,
            self.max_skew_ms
        )
    }
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Force the cluster size (else drawn: 3–12 nodes).
    pub nodes: Option<usize>,
    /// Use this mix instead of drawing one.
    pub mix: Option<FaultMix>,
    /// Break the protocol on purpose (checker tests).
    pub switches: FaultSwitches,
    /// Break coherence on purpose (checker tests).
    pub coherence_faults: CoherenceFaults,
    /// Break the node's restart rule on purpose (checker tests): a restarted node keeps the
    /// copies it had in L3 instead of dropping them.
    pub keep_l3_at_start: bool,
    /// Warm restarts (a supported mode, the node's own): a restarted node keeps its L3
    /// copies off the read path, baselines every member's coherence state, waits
    /// `max_staleness`, and keeps only the copies whose version the key's first other owner
    /// holds (`strata_cluster::warm`).
    pub warm_restart: bool,
    /// Break expiry on purpose (checker tests): nodes serve entries past their expiry.
    pub ignore_expiry: bool,
    /// Break the TTL policy on purpose (checker tests): writes skip the namespace's
    /// `max_ttl` check and keep the TTL asked for.
    pub ignore_max_ttl: bool,
    /// Break the owners' version check on purpose (checker tests): an owner takes any
    /// write, push or repair, even one older than what it holds or than an invalidation it
    /// has seen, and a plain write's primary neither stamps it again nor hears of a newer
    /// copy or invalidation an owner holds.
    pub skip_version_check: bool,
    /// Nodes with clients (the first N); all when unset. A 1000-node run with every node
    /// serving clients is more invalidations than the simulator's memory holds.
    pub clients: Option<usize>,
    /// Membership only: no coherence state machines, no heartbeats, no clients (the scale
    /// run: coherence heartbeats cost O(members²), see docs/simulation.md).
    pub membership_only: bool,
    /// Untag the nodes' hybrid clocks on purpose (checker tests): two nodes writing the
    /// same key in the same millisecond can then stamp the same version.
    pub untagged_versions: bool,
    /// Simulated time allowed for convergence after heal.
    pub liveness_bound: Option<Duration>,
    /// Add one node with the wrong cluster secret, which must never get in (and whose view
    /// must stay empty).
    pub intruder: bool,
    /// Break per-key primary execution on purpose (checker tests): the node a client asked
    /// executes an `INCR` itself instead of forwarding it to the key's primary, and the
    /// owners take its result (the protocol before per-key primaries).
    pub execute_anywhere: bool,
    /// Break replication fencing on purpose (checker tests): owners take a replicated change
    /// from any node, against any base (no fencing, no stale-base refusal).
    pub replicas_admit_all: bool,
    /// Break the stall guard on purpose (checker tests): a node that was paused executes as
    /// a primary as soon as it wakes, on whatever view it has.
    pub ignore_stalls: bool,
    /// Break the primary's lease on purpose (checker tests): a primary executes while its
    /// view counts a majority, whether or not a majority answered its pings.
    pub ignore_lease: bool,
    /// Break the lease's view check on purpose (checker tests): a member's answer extends
    /// the lease whenever its view counts the caller live, whatever members it holds that
    /// the caller's view lacks (`strata_cluster::primary::grant_counts`).
    pub grant_on_liveness: bool,
    /// Broken on purpose: the ring a primary executes on leaves out the members its own
    /// view lost within the grant window (a member that granted another's lease may take
    /// its keys while that lease holds).
    pub forget_own_losses: bool,
    /// Break the join guard on purpose (checker tests): a node executes as a primary while
    /// it is still finding the members (`placement::Joining`).
    pub ignore_joining: bool,
    /// Model plain-key writes and removals as before they ran at the primary (checker
    /// tests): the node a client asked writes to the owners in its own view and announces
    /// the change itself, whatever its state (a node just back from a pause, under its old
    /// ring, included).
    pub plain_at_writer: bool,
    /// Break the rejoin's hand-off ring on purpose (checker tests): a node the others
    /// declared down keeps only its own rings when it rejoins, not theirs without it
    /// (`placement::others_ring`).
    pub skip_others_ring: bool,
    /// Never refute when a member answers again after a silence (`Silences`): suspicions
    /// raised in a cut run out into `Down`s of live members after the heal.
    pub skip_silence_refutation: bool,
    /// Trust what a node rejoining without its lease owns, on purpose (checker tests):
    /// kept as it was instead of held unproven until the owners vouch for it (the node's
    /// `hold_unproven`; ARCHITECTURE decisions 45 and 118).
    pub trust_rejoined_copies: bool,
    /// Execute over copies held unproven on purpose (checker tests): a primary whose own
    /// copy, or another owner's, is not proven yet reads it as none (the node's
    /// `Shared::refuse_unproven` and its `Get` answer refuse instead).
    pub execute_over_unproven: bool,
    /// Owners take a change executed below a copy they hold unproven, on purpose (checker
    /// tests): the primary's own refusal stays (the node's `replica_check` refuses with
    /// `ReplicaRefusal::Unproven` instead). `execute_over_unproven` turns both off. No seed
    /// of 0–1,999 in three modes catches this one (RF 2, and the simulated primaries never
    /// execute from a stale copy of their own while the replica holds a newer one
    /// unproven): `an_owner_holding_the_newest_copy_unproven_refuses_changes_from_older_ones`
    /// in crates/strata/tests/cluster.rs checks it.
    pub replicas_over_unproven: bool,
    /// Break a witness's record on purpose (checker tests): every gap it gave up on is set
    /// apart for every caller, as though the caller had made what was lost (the node sets
    /// apart only the gaps of the caller's own life: `strata_cluster::warm::covered_for`).
    pub exempt_every_gap: bool,
    /// Break a rejoin whose lease held on purpose (checker tests): it drops the copies of
    /// keys it owned under a ring of the hand-off window too, as every other drop does
    /// (the node keeps them for the hand-off: ARCHITECTURE decision 126).
    pub drop_lately_owned: bool,
    /// Ring-change hand-offs run 1–30 ms after the ring change, as the node's
    /// `push_handoff` does (a task that reads the owner store in batches and sends them
    /// over TCP), so that a drop of unverified copies, a ring change back or a crash can
    /// come between; instant otherwise. Off by default, so that every other seed replays as
    /// it did before they existed. (Instant, a rejoin's drop always came after the push,
    /// and no seed caught a rejoin that dropped what it had lately owned: ARCHITECTURE
    /// decision 126.)
    pub handoff_delays: bool,
    /// With [`RunOptions::handoff_delays`]: one hand-off in five waits 30–2,000 ms rather
    /// than 1–30 ms, as the node's do when a target refuses a push for now and it sends
    /// again after 100 ms, doubling up to 2 s (`Shared::send_handoff`). Off by default,
    /// so that every `handoff_delays` seed replays as it did.
    pub slow_handoffs: bool,
    /// Flapping cuts in every seed without a partition (3 nodes or more): one member at a
    /// time cut off from all others for 1–3 s, then mended for 1–3 s, from a random time
    /// of the fault phase to its end. Off by default, so that every other seed replays as
    /// it did before they existed.
    pub flaps: bool,
    /// Break the forwarding of misplaced pushes on purpose (checker tests): a member keeps a
    /// pushed copy of a key it does not own in its view, and passes it on to no one.
    pub skip_forwarding: bool,
    /// No owner-store evictions of counter, lock and plain-key copies (a seed replays as it
    /// did before they existed: the regression seeds found earlier).
    pub no_evictions: bool,
    /// No `WATCH` clients (a seed replays as it did before they existed).
    pub no_watch: bool,
    /// Break the owners' check of the keys a transaction reads without changing them, on
    /// purpose (checker tests): the primary replicates only the keys it changes (the
    /// protocol before ARCHITECTURE decision 96's check-only changes).
    pub skip_read_checks: bool,
    /// Break ARCHITECTURE decision 101 on purpose (checker tests): a plain `DEL` whose
    /// primary finds no copy of the key (its owners evicted it) is answered `0` and changes
    /// and announces nothing, so copies other members read earlier stay.
    pub skip_absent_removals: bool,
    /// Every graceful leave of the run at the same instant (a deployment scaled down by
    /// one `SIGTERM` to several members); the leaves are drawn as always, so the rest of
    /// the seed's schedule stays as it was.
    pub leaves_together: bool,
    /// Break the leaving member's hand-off on purpose (checker tests): a member that leaves
    /// gracefully passes nothing on, and only the members that stay push what they hold at
    /// their ring change (the protocol before `placement::leave_targets`).
    pub skip_leave_handoff: bool,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// What it simulated.
    pub mix: FaultMix,
    /// `Ok(simulated time from heal to convergence)`, or why the checker failed.
    pub result: Result<Duration, String>,
    /// Events processed.
    pub events: u64,
    /// Wall time of the run.
    pub wall: Duration,
    /// Packets sent, dropped by the network, and rejected by authentication.
    pub packets: (u64, u64, u64),
    /// The last events before the end (for a failure report).
    pub trace: Vec<String>,
    /// Times nodes were declared down and rejoined under a new generation.
    pub rejoins: u64,
    /// What the workload did.
    pub workload: Workload,
    /// Nodes with clients (`RunOptions::clients`; `None`: all).
    pub clients: Option<usize>,
}

/// What a run's clients did (each counted once, whatever the checker said).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Workload {
    /// Reads served from the node's own copy or owner store.
    pub local_reads: u64,
    /// Reads served by another owner.
    pub remote_reads: u64,
    /// Writes (key sets) and pattern, tag and namespace invalidations.
    pub writes: u64,
    /// Writes that asked for a TTL.
    pub ttl_writes: u64,
    /// Writes refused because their TTL exceeded the namespace's maximum (G5).
    pub refused_ttl: u64,
    /// Reads that found only expired entries (G4 at work).
    pub expired_misses: u64,
    /// Key removals (`DEL`).
    pub removals: u64,
    /// Writes and removals of plain keys refused: the key's primary unreachable or not
    /// admitting (not primary in its own view, no quorum, stalled, joining, no lease).
    pub plain_refused: u64,
    /// `INCR`s acknowledged (each checked: counted once).
    pub incrs: u64,
    /// `INCR`s not acknowledged (no reachable primary, fenced, an owner unreachable).
    pub incrs_refused: u64,
    /// Lock acquisitions (`SET … NX PX`) acknowledged (each checked: no overlapping holds).
    pub locks: u64,
    /// Counter and lock copies evicted from one owner store (the others keep theirs).
    pub evictions: u64,
    /// Plain keys evicted from an owner store (any owner's, the last one's included), and
    /// removals whose primary found no copy of their key anywhere it asked.
    pub plain_evictions: (u64, u64),
    /// Transactions on pair keys acknowledged (each checked), and not acknowledged.
    pub transactions: (u64, u64),
    /// `WATCH` increments committed (each checked) and aborted.
    pub watches: (u64, u64),
    /// Copies pushed to restarted members while they settled, at their proofs' rounds:
    /// kept on the key's other owner's word, kept on the members' word, asked about again,
    /// dropped (`settling.rs`).
    pub pushed_proven: [u64; 4],
}

impl std::ops::AddAssign for Workload {
    fn add_assign(&mut self, o: Self) {
        self.local_reads += o.local_reads;
        self.remote_reads += o.remote_reads;
        self.writes += o.writes;
        self.ttl_writes += o.ttl_writes;
        self.refused_ttl += o.refused_ttl;
        self.expired_misses += o.expired_misses;
        self.removals += o.removals;
        self.plain_refused += o.plain_refused;
        self.incrs += o.incrs;
        self.incrs_refused += o.incrs_refused;
        self.locks += o.locks;
        self.evictions += o.evictions;
        self.plain_evictions.0 += o.plain_evictions.0;
        self.plain_evictions.1 += o.plain_evictions.1;
        self.transactions.0 += o.transactions.0;
        self.transactions.1 += o.transactions.1;
        self.watches.0 += o.watches.0;
        self.watches.1 += o.watches.1;
        for (a, b) in self.pushed_proven.iter_mut().zip(o.pushed_proven) {
            *a += b;
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} local reads, {} remote reads, {} writes ({} with a TTL, {} refused over max_ttl), {} removals, {} writes and removals refused by their primary, {} reads missed on expiry, {} INCRs acknowledged ({} refused), {} locks acquired, {} owner-store evictions, {} plain keys evicted ({} removed when no owner held them), {} transactions acknowledged ({} not), {} WATCH increments committed ({} aborted), pushed copies proven {:?} (kept, witnessed, deferred, dropped)",
            self.local_reads,
            self.remote_reads,
            self.writes,
            self.ttl_writes,
            self.refused_ttl,
            self.removals,
            self.plain_refused,
            self.expired_misses,
            self.incrs,
            self.incrs_refused,
            self.locks,
            self.evictions,
            self.plain_evictions.0,
            self.plain_evictions.1,
            self.transactions.0,
            self.transactions.1,
            self.watches.0,
            self.watches.1,
            self.pushed_proven
        )
    }
}

impl Report {
    /// Events per second of wall time.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            Ok(t) => write!(
                f,
                "seed {} ok: converged {:.1}s after heal | {} | {} events, {:.0} events/s",
                self.seed,
                t.as_secs_f64(),
                self.mix,
                self.events,
                self.events_per_sec()
            ),
            Err(e) => write!(f, "seed {} FAILED: {e} | {}", self.seed, self.mix),
        }
    }
}

#[derive(Debug)]
enum Kind {
    Deliver {
        to: usize,
        packet: Vec<u8>,
    },
    Timer {
        node: usize,
        life: u32,
        timer: MembershipTimer,
    },
    Crash(usize),
    /// A process pause (GC, SIGSTOP, a VM freeze) of a node for this long (µs): it handles
    /// nothing meanwhile, keeps its state and its stale view, and everything sent to it
    /// waits; then it resumes where it was.
    Pause(usize, u64),
    Restart(usize),
    Leave(usize),
    Partition,
    /// A flapping link: node `node` is cut off from every other node (`one_way`: only
    /// what they send it is lost) for `len` µs, then [`Kind::Mend`].
    Cut {
        node: usize,
        len: u64,
        one_way: bool,
    },
    /// The end of a [`Kind::Cut`] of this node.
    Mend(usize),
    /// A ring change's hand-off on node `node` (of life `life`), delayed
    /// ([`RunOptions::handoff_delays`]): what its owner store holds now goes to the owners
    /// under `new` that were none under `old`.
    HandOff {
        node: usize,
        life: u32,
        old: Ring,
        new: Ring,
    },
    Heal,
    Check,
    /// A client operation on a node (read or write of a random key).
    Op(usize),
    /// A `WATCH` client's `EXEC` on node `node` (of life `life`), on pair `n`'s counter,
    /// after it read `value` at version `watched`.
    WatchExec {
        node: usize,
        life: u32,
        n: u32,
        value: i64,
        watched: Option<u64>,
    },
    /// The coherence state machine's clock tick (and, every fifth, its heartbeat).
    Tick {
        node: usize,
        life: u32,
        n: u64,
    },
    /// A repair answer arriving at `to`.
    Repaired {
        to: usize,
        life: u32,
        items: Vec<Invalidation>,
    },
    /// The final contract check, some time after membership converged.
    FinalCheck,
    /// A warm restart's steps: 0..10 wait to join, then baseline; 10 proves the copies.
    /// `run` tells a superseded proof from the current one.
    Warm {
        node: usize,
        life: u32,
        stage: u8,
        run: u32,
    },
}

impl Kind {
    /// The node an event happens on, if one.
    fn node(&self) -> Option<usize> {
        match self {
            Kind::Deliver { to, .. } | Kind::Repaired { to, .. } => Some(*to),
            Kind::Timer { node, .. }
            | Kind::Tick { node, .. }
            | Kind::Warm { node, .. }
            | Kind::HandOff { node, .. }
            | Kind::WatchExec { node, .. } => Some(*node),
            Kind::Op(i) | Kind::Crash(i) | Kind::Leave(i) => Some(*i),
            Kind::Pause(..)
            | Kind::Restart(_)
            | Kind::Partition
            | Kind::Cut { .. }
            | Kind::Mend(_)
            | Kind::Heal
            | Kind::Check
            | Kind::FinalCheck => None,
        }
    }
}

/// A copy pushed to a member: of a plain key, a counter or lock, or a pair key (the three
/// stores the simulator keeps apart; one owner store on the node).
#[derive(Debug, Clone)]
enum Pushed {
    Plain(Held),
    Counter(Entry),
    Pair(Entry),
}

/// A copy a node holds of a key it does not own.
#[derive(Debug, Clone)]
struct Copy {
    version: u64,
    /// Absolute expiry in ms (the writer's clock), as entries carry it.
    expires_at: Option<u64>,
    origin: String,
    generation: u64,
}

/// An owner-store entry: its version and absolute expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    version: u64,
    expires_at: Option<u64>,
}

/// What the reference model knows of one acknowledged write: when (true time), the
/// writer's clock then, and the expiry the contract requires (the writer's clock plus the
/// TTL asked for, or the namespace default).
#[derive(Debug, Clone, Copy)]
struct WriteRef {
    expires_at: Option<u64>,
    written_ms: u64,
}

/// Keys of the workload.
const KEYS: u32 = 40;
/// Counters of the `INCR` workload (few, so that they are hot).
const COUNTERS: u32 = 4;
/// Locks of the lock workload, as keys `LOCKS_FROM..` of namespace `ctr`.
const LOCKS_FROM: u32 = 1000;
/// Locks of the lock workload.
const LOCKS: u32 = 2;
/// A lock's TTL (`PX`).
const LOCK_TTL_MS: u64 = 3000;
/// Pairs of the transaction workload: a counter `{pN}r` and the key `{pN}w` a transaction
/// writes after reading the counter, in one hash slot per pair, as ids `PAIRS_FROM + 2N`
/// and `PAIRS_FROM + 2N + 1`.
const PAIRS_FROM: u32 = 2000;
/// Pairs of the transaction workload.
const PAIRS: u32 = 2;

/// An acknowledged lock acquisition, not yet released.
#[derive(Debug, Clone, Copy)]
struct LockHold {
    node: usize,
    life: u32,
    /// True time of the acknowledgement (µs).
    acquired: u64,
    version: u64,
}
/// How long after a ring change reads also ask the previous owners (`cluster.handoff_window_ms`).
const HANDOFF_WINDOW: u64 = 30 * SEC;
/// Time after convergence before the final check: max_staleness (1 s) + heartbeat period
/// (0.5 s) + dissemination and repair slack.
const SETTLE: u64 = 5 * SEC;
/// An invalidation at least this old at the final check must be reflected everywhere.
const STALENESS_BOUND: u64 = 3 * SEC;
/// The node's grant window (`Shared::grant_window_ms`): a lease's second and the default
/// `cluster.rpc_timeout_ms`.
const GRANT_WINDOW_MS: u64 = decide::Lease::LEASE_MS + 500;

struct SimNode {
    name: String,
    addr: SocketAddr,
    membership: Option<Membership>,
    /// Bumped on crash and leave, so timers of a previous life are ignored.
    life: u32,
    generation: u64,
    /// Whether the node should be up at the end (false for those that stay dead).
    expected_up: bool,
    /// Holds the wrong secret: must never be a member anywhere.
    intruder: bool,
    coherence: Option<Coherence>,
    /// Keys this node owns, with their versions and expiries (the owner store).
    store: BTreeMap<u32, Held>,
    /// Copies of keys owned elsewhere.
    copies: BTreeMap<u32, Copy>,
    /// The owner store's counters (the `INCR` workload's keys, namespace `ctr`).
    counters: BTreeMap<u32, Entry>,
    /// Counters and locks whose copy this node's owner store evicted, with the version
    /// evicted (`Sim::evict`).
    evicted: BTreeMap<u32, u64>,
    /// The owner store's pair keys (the transaction workload's), apart from `counters` so
    /// that the counter workload's draws stay what they were.
    pairs: BTreeMap<u32, Entry>,
    /// Warm restart: the copies kept from the previous life are off the read path until
    /// proven.
    unverified: bool,
    /// Paused until this time (µs): its events wait until then.
    paused_until: Option<u64>,
    /// The node's own stall detector, fed by its ticks (`strata_cluster::primary`).
    stall: decide::StallGuard,
    /// The node's own lease, fed by the pings it sends every other tick
    /// (`strata_cluster::primary::Lease`).
    lease: decide::Lease,
    /// What it answers to lease pings (`strata_cluster::primary::GrantView`), as the node's
    /// `Shared::grant_view`.
    grant_view: decide::GrantView,
    /// Its execution lease, as the node's `Shared::exec_lease`: the grants that count
    /// (`strata_cluster::primary::grant_counts`) and the ring of what they named and what
    /// its view lately lost (`ExecLease`); `lease` takes every grant.
    exec_lease: decide::ExecLease,
    /// When each member last answered its lease pings (`strata_cluster::Silences`): an
    /// answer after a silence makes it refute any suspicion raised meanwhile.
    silences: strata_cluster::Silences,
    /// The current proof's number (a newer one supersedes an older one).
    warm_run: u32,
    /// Restarted with L3, it settles until its proof: copies pushed to it meanwhile are
    /// held apart in `unproven` (the node's `WarmState`, `settling.rs`).
    settling: bool,
    /// Pushed copies held unproven while settling, by (store: 0 plain, 1 counters, 2
    /// pairs; key).
    unproven: BTreeMap<(u8, u32), Pushed>,
    /// The keys of `unproven` whose copy came only in hand-offs read after their sender saw
    /// this process up (the node's `Request::HandoffFor` with a generation of this
    /// process): proven from this life's start (`warm::needed_ms_after_start`). Set or
    /// cleared wherever `unproven` takes a copy.
    read_after_start: BTreeSet<(u8, u32)>,
    /// From when (true ms) its record of changes is whole, as a witness of another
    /// member's proof tells it, with the gaps it gave up on kept apart (the node's
    /// `WarmState::record`; not whole until a warm start's baseline).
    pub(crate) record: strata_cluster::warm::Record,
    /// When this life started (true ms): a proof's witnesses must remember back past it.
    started_ms: u64,
    /// Since when (true ms) the copies held unproven may have missed a change: this
    /// life's start, or a rejoin's run of lease lapses (the node's
    /// `WarmState::proof_from_ms`).
    proof_from_ms: u64,
    /// Per copy an earlier proof of this life kept: its version and when (true ms), as the
    /// node's `WarmState::vouched` (`strata_cluster::warm::{Vouches, proof_from}`; no
    /// bound: the simulator's stores are small).
    pub(crate) vouched: strata_cluster::warm::Vouches,
    /// The proof run whose rounds ask again about unanswered copies, and until when.
    defer_until: Option<(u32, u64)>,
    /// The member lives (name, generation) this node's view declared down, with when
    /// (true ms), for `tombstone_ms`: what it tells a proof as a witness.
    ended: Vec<(String, u64, u64)>,
    /// The ring of this node's view, and the one before the last change with when it
    /// changed (the hand-off window), as the node's cluster tier keeps them.
    ring: Option<Ring>,
    previous: Vec<(Ring, u64)>,
    /// When the node last rejoined after dropping what it owned (ms), as the node's view.
    rejoined_ms: Option<u64>,
    /// Members (with the life they had then) that declared this node's current identity
    /// down, cleared when it rejoins under a new identity or restarts: hearing of it, the
    /// node rejoins, and drops what it owns unless its lease held through
    /// ([`Sim::keeps_copies_for`]).
    declared_down_by: BTreeSet<(usize, u32)>,
    /// Whether the checker counted this node's copies as lost with it
    /// ([`Sim::keeps_copies_for`]) during its current identity: at its rejoin it must then
    /// drop what it owns, or the checker's assumption is broken (a violation).
    copies_excused: std::cell::Cell<bool>,
    /// Whether it is still joining (`placement::Joining`), as the node keeps it: on the
    /// simulated true clock, as the node's is monotonic.
    joining: placement::Joining,
    /// This node's clock offset from true time (µs), and its hybrid logical clock (the
    /// node's own `HybridClock`, tagged with its name's version tag as a member's is).
    offset: i64,
    hlc: HybridClock,
}

/// What a plain `DEL`'s primary did ([`Sim::remove_at`]).
enum Removed {
    /// Stamped, replicated and applied at this version (announced by the caller).
    Stamped(u64),
    /// Nothing, as decision 101 broken on purpose leaves it; the version the removal would
    /// have had.
    Skipped(u64),
}

/// The simulation of one seed.
pub struct Sim {
    now: u64,
    seq: u64,
    rng: StdRng,
    /// The workload's own RNG (client operations, repair round trips), so that adding or
    /// changing the workload leaves each seed's fault schedule and network as they were.
    wrng: StdRng,
    /// (time, sequence, slot): small entries, so the heap moves 24 bytes, not an event.
    queue: BinaryHeap<Reverse<(u64, u64, u32)>>,
    slots: Vec<Option<Kind>>,
    free: Vec<u32>,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    mix: FaultMix,
    blocked: HashSet<(usize, usize)>,
    loss: f64,
    duplication: f64,
    seeds: Vec<SocketAddr>,
    switches: FaultSwitches,
    coherence_faults: CoherenceFaults,
    keep_l3_at_start: bool,
    warm_restart: bool,
    ignore_expiry: bool,
    ignore_max_ttl: bool,
    skip_version_check: bool,
    untagged_versions: bool,
    clients: usize,
    membership_only: bool,
    /// The namespace policy every write goes through, the node's own (`effective_ttl`):
    /// 1 h by default, 24 h at most (the licence rule, G5). Built once.
    policy: NamespacePolicy,
    /// The first contract violation seen at an operation: a read served from a copy older
    /// than an invalidation made more than `STALENESS_BOUND` before it (G2, checked at every
    /// read, not only at the end), a writer reading an older value than its own write (G1),
    /// an entry served at or after its expiry (G4), a TTL over the namespace's maximum
    /// accepted (G5).
    violation: Option<String>,
    /// The reference model's record of every acknowledged write, by (key, version).
    writes: HashMap<(u32, u64), WriteRef>,
    /// The last acknowledged write or removal of a key by a node, in that node's life:
    /// (node, key) -> (life, version). A later read on that node must not return older (G1).
    acked: HashMap<(usize, u32), (u32, u64)>,
    /// Whether a partition has started.
    partitioned: bool,
    /// When the copies are next checked against the contract while the run goes on (µs).
    next_copies_check: u64,
    execute_anywhere: bool,
    replicas_admit_all: bool,
    ignore_stalls: bool,
    ignore_joining: bool,
    ignore_lease: bool,
    grant_on_liveness: bool,
    forget_own_losses: bool,
    plain_at_writer: bool,
    skip_others_ring: bool,
    skip_silence_refutation: bool,
    trust_rejoined_copies: bool,
    execute_over_unproven: bool,
    replicas_over_unproven: bool,
    exempt_every_gap: bool,
    drop_lately_owned: bool,
    flaps: bool,
    skip_forwarding: bool,
    no_evictions: bool,
    no_watch: bool,
    leaves_together: bool,
    skip_leave_handoff: bool,
    /// The `WATCH` clients' own RNG.
    watch_rng: StdRng,
    /// `WATCH` transactions committed and aborted (a watched key had changed).
    watch_ops: (u64, u64),
    /// Pauses are drawn from their own RNG, so that the fault schedule and the workload of
    /// every seed stay as they were before pauses existed.
    pause_rng: StdRng,
    /// The flapping cuts' own RNG (drawn apart, so that adding them left every other
    /// fault of a seed as it was).
    flap_rng: StdRng,
    /// [`RunOptions::handoff_delays`].
    handoff_delays: bool,
    /// [`RunOptions::slow_handoffs`].
    slow_handoffs: bool,
    /// The hand-offs' delays' own RNG (the same reason).
    handoff_rng: StdRng,
    /// The INCR workload's own RNG (the same reason).
    incr_rng: StdRng,
    /// The anti-entropy pulls' own RNG (their losses), so that how coherence pulls does
    /// not shift the workload's draws.
    pull_rng: StdRng,
    /// Owner-store evictions' own RNG (the same reason).
    evict_rng: StdRng,
    /// Counter and lock copies evicted from an owner store.
    evictions: u64,
    /// Plain-key owner-store evictions' own RNG (the other RNGs' draws stay, though the
    /// run they make goes another way once a store lacks a key it held).
    plain_evict_rng: StdRng,
    /// Plain keys evicted from owner stores, and removals that found no copy.
    plain_evictions: (u64, u64),
    /// [`Workload::pushed_proven`].
    pushed_proven: [u64; 4],
    /// Break decision 101 on purpose ([`RunOptions::skip_absent_removals`]).
    skip_absent_removals: bool,
    /// The (key, version) of each `DEL` skipped so: a violation naming one says so.
    skipped_removals: BTreeSet<(u32, u64)>,
    /// Per counter: the largest value an acknowledged `INCR` answered, and the version of
    /// that write. A later acknowledged `INCR` must answer more (every acknowledged
    /// increment counted once), unless every copy of that write was lost with the nodes
    /// that held it (more owners crashed than the replication factor covers: a cache's
    /// data loss, not a lost update).
    counter_acks: BTreeMap<u32, (i64, u64)>,
    /// INCRs acknowledged, refused (no primary, fenced, unreachable), and lineages lost to
    /// crashes.
    incr_ops: (u64, u64, u64),
    /// Plain-key writes and removals their primary refused.
    plain_refused: u64,
    /// Per lock: the current holder, as acknowledged.
    lock_holds: BTreeMap<u32, LockHold>,
    /// The transaction workload's own RNG.
    pair_rng: StdRng,
    /// Per pair counter: the largest value an acknowledged transaction's `INCR` answered,
    /// and the version of that write. A transaction acknowledged later reads at least that
    /// (a read-only key checked by the owners, ARCHITECTURE decision 96), and a later
    /// `INCR` answers more, unless every copy of the write was lost.
    pair_acks: BTreeMap<u32, (i64, u64)>,
    /// Transactions acknowledged and not acknowledged.
    tx_ops: (u64, u64),
    /// Break the owners' check of the keys a transaction only reads, on purpose (checker
    /// tests): the primary sends them nothing of those keys.
    skip_read_checks: bool,
    /// Lock acquisitions acknowledged.
    lock_ops: u64,
    /// Every invalidation made: (time, key, version).
    invalidations: Vec<(u64, u32, u64)>,
    /// Reads served from a copy, fetched from an owner, and writes.
    ops: (u64, u64, u64),
    /// Writes with a TTL, writes refused for a TTL over the maximum, reads that found only
    /// expired entries, removals.
    ttl_ops: (u64, u64, u64, u64),
    debug_key: Option<u32>,
    /// With `SIM_NOTES` in the environment, every trace line is printed as it is noted.
    print_notes: bool,
    events: u64,
    packets: (u64, u64, u64),
    trace: VecDeque<String>,
    healed_at: Option<u64>,
    converged: Option<u64>,
}

const MS: u64 = 1_000;
const SEC: u64 = 1_000_000;

fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 7946))
}

impl Sim {
    /// Builds the simulation of `seed`.
    pub fn new(seed: u64, opts: &RunOptions) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = opts.nodes.unwrap_or_else(|| rng.random_range(3..=12));
        let mut wrng = StdRng::seed_from_u64(seed ^ 0x005e_ed0f_c04e_5ece);
        let mix = opts.mix.clone().unwrap_or_else(|| {
            let mut m = FaultMix::draw(&mut rng, n);
            if wrng.random_bool(0.5) {
                m.max_skew_ms = wrng.random_range(1..=500);
            }
            m
        });
        let total = mix.nodes + usize::from(opts.intruder);
        let nodes: Vec<SimNode> = (0..total)
            .map(|i| SimNode {
                name: format!("n{i:04}"),
                addr: addr_of(i),
                membership: None,
                life: 0,
                generation: 0,
                expected_up: true,
                intruder: i >= mix.nodes,
                coherence: None,
                store: BTreeMap::new(),
                copies: BTreeMap::new(),
                counters: BTreeMap::new(),
                evicted: BTreeMap::new(),
                pairs: BTreeMap::new(),
                paused_until: None,
                stall: decide::StallGuard::default(),
                lease: decide::Lease::default(),
                grant_view: decide::GrantView::default(),
                exec_lease: decide::ExecLease::default(),
                silences: strata_cluster::Silences::default(),
                unverified: false,
                warm_run: 0,
                settling: false,
                unproven: BTreeMap::new(),
                read_after_start: BTreeSet::new(),
                record: strata_cluster::warm::Record::default(),
                started_ms: 0,
                proof_from_ms: 0,
                vouched: strata_cluster::warm::Vouches::new(usize::MAX),
                defer_until: None,
                ended: Vec::new(),
                ring: None,
                previous: Vec::new(),
                rejoined_ms: None,
                declared_down_by: BTreeSet::new(),
                copies_excused: std::cell::Cell::new(false),
                joining: placement::Joining::new(0),
                offset: 0,
                hlc: HybridClock::with_tag(version_tag(&format!("n{i:04}"))),
            })
            .collect();
        let by_addr = nodes.iter().enumerate().map(|(i, n)| (n.addr, i)).collect();
        let seeds = (0..mix.nodes.min(3)).map(addr_of).collect();
        Sim {
            now: 0,
            seq: 0,
            loss: mix.loss,
            duplication: mix.duplication,
            rng,
            wrng,
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            nodes,
            by_addr,
            mix,
            blocked: HashSet::new(),
            seeds,
            switches: opts.switches,
            coherence_faults: opts.coherence_faults,
            keep_l3_at_start: opts.keep_l3_at_start,
            warm_restart: opts.warm_restart,
            ignore_expiry: opts.ignore_expiry,
            ignore_max_ttl: opts.ignore_max_ttl,
            skip_version_check: opts.skip_version_check,
            untagged_versions: opts.untagged_versions,
            clients: if opts.membership_only {
                0
            } else {
                opts.clients.unwrap_or(usize::MAX)
            },
            membership_only: opts.membership_only,
            policy: NamespacePolicy::default(),
            violation: None,
            writes: HashMap::new(),
            acked: HashMap::new(),
            partitioned: false,
            next_copies_check: 0,
            execute_anywhere: opts.execute_anywhere,
            // Executing anywhere is the broken protocol before per-key primaries: every
            // node read, incremented and wrote to the owners, which took any write.
            replicas_admit_all: opts.replicas_admit_all || opts.execute_anywhere,
            ignore_stalls: opts.ignore_stalls,
            ignore_joining: opts.ignore_joining,
            ignore_lease: opts.ignore_lease,
            grant_on_liveness: opts.grant_on_liveness,
            forget_own_losses: opts.forget_own_losses,
            plain_at_writer: opts.plain_at_writer,
            skip_others_ring: opts.skip_others_ring,
            skip_silence_refutation: opts.skip_silence_refutation,
            trust_rejoined_copies: opts.trust_rejoined_copies,
            execute_over_unproven: opts.execute_over_unproven,
            replicas_over_unproven: opts.replicas_over_unproven,
            exempt_every_gap: opts.exempt_every_gap,
            drop_lately_owned: opts.drop_lately_owned,
            flaps: opts.flaps,
            skip_forwarding: opts.skip_forwarding,
            no_evictions: opts.no_evictions,
            no_watch: opts.no_watch,
            leaves_together: opts.leaves_together,
            skip_leave_handoff: opts.skip_leave_handoff,
            watch_rng: StdRng::seed_from_u64(seed ^ 0x7761_7463_6800_0006),
            watch_ops: (0, 0),
            counter_acks: BTreeMap::new(),
            pause_rng: StdRng::seed_from_u64(seed ^ 0x7061_7573_6573_0001),
            flap_rng: StdRng::seed_from_u64(seed ^ 0x666c_6170_0000_0008),
            handoff_delays: opts.handoff_delays,
            slow_handoffs: opts.slow_handoffs,
            handoff_rng: StdRng::seed_from_u64(seed ^ 0x6861_6e64_0000_0009),
            incr_rng: StdRng::seed_from_u64(seed ^ 0x696e_6372_0000_0002),
            evict_rng: StdRng::seed_from_u64(seed ^ 0x6576_6963_7400_0003),
            evictions: 0,
            plain_evict_rng: StdRng::seed_from_u64(seed ^ 0x706c_6169_6e00_0007),
            plain_evictions: (0, 0),
            pushed_proven: [0; 4],
            skip_absent_removals: opts.skip_absent_removals,
            skipped_removals: BTreeSet::new(),
            pull_rng: StdRng::seed_from_u64(seed ^ 0x7075_6c6c_0000_0003),
            incr_ops: (0, 0, 0),
            plain_refused: 0,
            lock_holds: BTreeMap::new(),
            pair_rng: StdRng::seed_from_u64(seed ^ 0x7061_6972_7300_0005),
            pair_acks: BTreeMap::new(),
            tx_ops: (0, 0),
            skip_read_checks: opts.skip_read_checks,
            lock_ops: 0,
            invalidations: Vec::new(),
            ops: (0, 0, 0),
            ttl_ops: (0, 0, 0, 0),
            debug_key: std::env::var("STRATA_SIM_KEY")
                .ok()
                .and_then(|v| v.parse().ok()),
            print_notes: std::env::var_os("SIM_NOTES").is_some(),
            events: 0,
            packets: (0, 0, 0),
            trace: VecDeque::with_capacity(TRACE_LINES),
            healed_at: None,
            converged: None,
        }
    }

    fn push(&mut self, after: u64, kind: Kind) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(kind);
                i
            }
            None => {
                self.slots.push(Some(kind));
                (self.slots.len() - 1) as u32
            }
        };
        self.queue.push(Reverse((self.now + after, self.seq, slot)));
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if self.trace.len() == TRACE_LINES {
            self.trace.pop_front();
        }
        let t = self.now as f64 / SEC as f64;
        let l = format!("{t:10.4}s {}", line());
        if self.print_notes {
            eprintln!("{l}");
        }
        self.trace.push_back(l);
    }

    fn start_node(&mut self, i: usize) {
        let node_is_intruder = self.nodes[i].intruder;
        let node = &mut self.nodes[i];
        // As the node does (`strata_cluster::identity::next_generation`, above the
        // generations its previous life reserved beside L3; a simulated disk always takes
        // the reservation, and no life here rejoins `GENERATION_RESERVE / 2` times): the
        // start time in ms, above the previous life's. foca renews a member's identity to
        // generation + 1 when the others declared it down; a counter bumped per start
        // collided with such a renewal (seed 543: a restart took the renewed identity's
        // generation, so nobody saw the old life end and its last invalidation was lost).
        node.generation = strata_cluster::identity::next_generation(
            self.now / MS,
            (node.generation > 0)
                .then(|| node.generation + strata_cluster::identity::GENERATION_RESERVE),
        );
        node.declared_down_by.clear();
        node.copies_excused.set(false);
        let id = NodeIdentity {
            name: node.name.clone(),
            gossip: node.addr,
            rpc: node.addr,
            resp: node.addr,
            admin: node.addr,
            cluster_resp: None,
            generation: node.generation,
        };
        let mut m = Membership::new(
            id,
            lan_config(self.mix.nodes as u32),
            self.rng.random(),
            if node_is_intruder {
                b"not the cluster secret"
            } else {
                SECRET
            },
            self.seeds.clone(),
        );
        m.set_fault_switches(self.switches);
        let out = m.join();
        self.nodes[i].membership = Some(m);
        let generation = self.nodes[i].generation;
        let mut c = Coherence::new(
            self.nodes[i].name.clone(),
            generation,
            CoherenceConfig::default(),
        );
        c.set_faults(self.coherence_faults);
        if !self.membership_only {
            self.nodes[i].coherence = Some(c);
        }
        // A restarted node has lost its memory (L1, the owner store); its L3 copies survived
        // the crash but are unverified, and the node drops them before it serves (copies
        // here stand for L1 and L3 together). `keep_l3_at_start` breaks that on purpose.
        let now_ms = self.now / MS;
        self.nodes[i].started_ms = now_ms;
        self.nodes[i].proof_from_ms = now_ms;
        self.nodes[i].vouched.clear();
        self.nodes[i].unproven.clear();
        self.nodes[i].read_after_start.clear();
        self.nodes[i].defer_until = None;
        self.nodes[i].ended.clear();
        if self.warm_restart && !self.nodes[i].copies.is_empty() {
            // Its record is whole from its baseline on; what is pushed to it until its
            // proof is held unproven.
            self.nodes[i].settling = true;
            self.nodes[i].record.not_whole();
            self.begin_warm(i, 0, 500 * MS);
        } else {
            self.nodes[i].settling = false;
            self.nodes[i].record.whole_from(now_ms);
            if !self.keep_l3_at_start {
                self.nodes[i].copies.clear();
            }
        }
        self.nodes[i].store.clear();
        self.nodes[i].counters.clear();
        self.nodes[i].pairs.clear();
        self.nodes[i].stall = decide::StallGuard::default();
        self.nodes[i].lease = decide::Lease::default();
        self.nodes[i].grant_view = decide::GrantView::default();
        self.nodes[i].exec_lease = decide::ExecLease::default();
        self.nodes[i].silences = strata_cluster::Silences::default();
        // A new process: a new clock (it starts at its wall clock).
        self.nodes[i].hlc = if self.untagged_versions {
            HybridClock::new()
        } else {
            HybridClock::with_tag(version_tag(&self.nodes[i].name))
        };
        self.nodes[i].ring = None;
        self.nodes[i].previous.clear();
        self.nodes[i].joining = placement::Joining::new(self.now / MS);
        let life = self.nodes[i].life;
        if !self.membership_only {
            self.push(
                100 * MS,
                Kind::Tick {
                    node: i,
                    life,
                    n: 0,
                },
            );
        }
        let generation = self.nodes[i].generation;
        self.note(|| format!("start n{i} generation {generation}"));
        self.apply(i, out);
    }

    fn apply(&mut self, from: usize, outputs: Vec<Output>) {
        let life = self.nodes[from].life;
        let changed = outputs
            .iter()
            .any(|o| matches!(o, Output::Up(_) | Output::Down(_)));
        self.apply_outputs(from, life, outputs);
        // Membership only: no workload reads the rings, and keeping two per node (the
        // current one and the previous, 128 points per member each) is what a 1000-node
        // run cannot afford (2 MB a ring, rebuilt on every membership event).
        if !self.membership_only && (changed || self.nodes[from].ring.is_none()) {
            self.refresh_ring(from);
        }
    }

    /// The node recomputes its ring after a membership change, as its cluster tier does;
    /// on a change it keeps the old ring for hand-off reads and pushes its owner store's
    /// entries to their new owners (`placement::handoff_targets`).
    fn refresh_ring(&mut self, at: usize) {
        let Some(new) = self.nodes[at]
            .membership
            .as_ref()
            .map(|m| m.ring(DEFAULT_VNODES))
        else {
            return;
        };
        let members = new.nodes().len();
        if let Some(c) = self.nodes[at].coherence.as_mut() {
            c.note_view(members, self.mix.nodes);
        }
        let old = self.nodes[at].ring.take();
        if old.as_ref().is_none_or(|o| o.version() != new.version()) {
            let me = &self.nodes[at].name.clone();
            let now_ms = self.now / MS;
            // As the node's `refresh_view`: the lease answers name the members it lost for
            // the grant window, and so does the ring it executes on.
            self.nodes[at]
                .grant_view
                .observe(&new, now_ms, GRANT_WINDOW_MS);
            self.refresh_exec_ring(at, &new, now_ms);
            let expected = self.mix.nodes;
            let joining =
                self.nodes[at]
                    .joining
                    .on_ring_change(old.as_ref(), &new, me, expected, now_ms);
            if let Some(kept) = placement::previous_ring(old.as_ref(), &new, me, joining) {
                placement::keep_previous(&mut self.nodes[at].previous, kept, self.now);
            }
            if !self.skip_others_ring
                && placement::after_rejoin(self.nodes[at].rejoined_ms, now_ms)
                && let Some(kept) = placement::others_ring(&new, me)
            {
                placement::keep_previous(&mut self.nodes[at].previous, kept, self.now);
            }
        }
        if let Some(old) = old.filter(|o| o.version() != new.version()) {
            if self.handoff_delays {
                let after = if self.slow_handoffs && self.handoff_rng.random_bool(0.2) {
                    self.handoff_rng.random_range(30..=2_000)
                } else {
                    self.handoff_rng.random_range(1..=30)
                } * MS;
                let life = self.nodes[at].life;
                self.push(
                    after,
                    Kind::HandOff {
                        node: at,
                        life,
                        old,
                        new: new.clone(),
                    },
                );
            } else {
                self.hand_off(at, &old, &new, true);
            }
        }
        self.nodes[at].ring = Some(new);
    }

    /// `at` pushes its owner store's entries to the owners under `new` that were not
    /// owners under `old` (`placement::handoff_targets`), as the node's `push_handoff`;
    /// `lossy`: each push may be lost (drawn from the workload's RNGs, as at a ring change;
    /// the hand-off to a member's replaced life draws nothing, so that each seed's run
    /// stays what it was where no life is replaced).
    fn hand_off(&mut self, at: usize, old: &Ring, new: &Ring, lossy: bool) {
        let me = self.nodes[at].name.clone();
        self.push_owned(at, lossy, |key| {
            placement::handoff_targets(old, new, &me, key, RF)
        });
    }

    /// `at`, about to leave gracefully, pushes its owner store's entries to the owners
    /// under its ring without it and without every member of that ring it finds gone
    /// (`placement::leave_targets`), as the node's `handoff_on_leave`: a member that left,
    /// crashed or does not answer counts as gone (the node asks each, a leaving member
    /// refuses, and a batch that fails makes the node count its target gone and push
    /// again), and members that leave at the same instant leave one after another here, so
    /// the last of them finds the others gone. The node's pushes go over TCP and are
    /// retried elsewhere when they fail, so none is lost here. Then the checker's rule: a
    /// graceful leave loses no counter's last acknowledged copy while a member stays that
    /// it can reach (a crash may; a leave is no crash).
    fn hand_off_leaving(&mut self, at: usize) {
        let Some(ring) = self.nodes[at].ring.clone() else {
            return;
        };
        let me = self.nodes[at].name.clone();
        let gone: std::collections::BTreeSet<String> = ring
            .nodes()
            .iter()
            .filter(|n| {
                **n == me
                    || self.nodes.iter().enumerate().any(|(j, x)| {
                        x.name == **n
                            && (x.membership.is_none()
                                || !(self.reachable(at, j) && self.reachable(j, at)))
                    })
            })
            .cloned()
            .collect();
        if !self.skip_leave_handoff {
            self.note(|| format!("{me} hands off before it leaves (gone: {gone:?})"));
            self.push_owned(at, false, |key| {
                placement::leave_targets(&ring, &gone, &me, key, RF)
            });
        }
        if placement::ring_without(&ring, &gone).is_none() {
            return;
        }
        let lost = self.nodes[at].counters.iter().find_map(|(c, e)| {
            let acked = self.counter_acks.get(c)?.1;
            let kept = (0..self.nodes.len()).any(|j| {
                let n = &self.nodes[j];
                !gone.contains(&n.name)
                    && n.membership.is_some()
                    && (n
                        .counters
                        .get(c)
                        .is_some_and(|x| x.version.as_u64() >= acked)
                        || n.unproven.contains_key(&(1, *c)))
            });
            (e.version.as_u64() >= acked && !kept).then_some(*c)
        });
        if let Some(c) = lost {
            self.violate(|| {
                format!("{me} left gracefully holding the last acknowledged copy of counter {c}, and passed it to no member that stays")
            });
        }
    }

    /// `at` pushes each entry of its owner store to the nodes `targets` names for its key;
    /// `lossy`: each push may be lost ([`Sim::hand_off`]).
    fn push_owned(&mut self, at: usize, lossy: bool, targets: impl Fn(&[u8]) -> Vec<String>) {
        // Every copy the node's one owner store holds: the plain keys, then the counters,
        // then the pair keys (whose losses are drawn from the transaction workload's RNG),
        // in the order their draws were always made.
        let node = &self.nodes[at];
        let pushes: Vec<(u32, Pushed)> = (node.store.iter())
            .map(|(k, v)| (*k, Pushed::Plain(*v)))
            .chain(
                node.counters
                    .iter()
                    .map(|(k, e)| (*k, Pushed::Counter(e.clone()))),
            )
            .chain(
                node.pairs
                    .iter()
                    .map(|(k, e)| (*k, Pushed::Pair(e.clone()))),
            )
            .collect();
        for (key, pushed) in pushes {
            for t in targets(&key_bytes(key)) {
                if let Some(j) = self.nodes.iter().position(|n| n.name == t)
                    && self.reachable(at, j)
                    && !(lossy && self.push_lost(&pushed))
                    && self.push_to(j, key, &pushed, self.sees_process(at, j))
                {
                    self.forward_misplaced(j, key, pushed.clone());
                }
            }
        }
    }

    /// Whether `at`'s view holds `j`'s current process up (one of its lives since it
    /// started): a hand-off `at` reads now is read after that process started, as the
    /// node's `Request::HandoffFor` tells its callee.
    fn sees_process(&self, at: usize, j: usize) -> bool {
        let (name, first) = (&self.nodes[j].name, self.nodes[j].generation);
        self.nodes[at].membership.as_ref().is_some_and(|m| {
            m.live()
                .iter()
                .any(|id| id.name == *name && id.generation >= first)
        })
    }

    /// Whether a hand-off push of `pushed` is lost (a pair key's draw comes from the
    /// transaction workload's RNG, any other's from the write workload's).
    fn push_lost(&mut self, pushed: &Pushed) -> bool {
        match pushed {
            Pushed::Pair(_) => self.pair_rng.random_bool(self.loss),
            _ => self.wrng.random_bool(self.loss),
        }
    }

    /// The nodes `at` asks for `key` ([`placement::read_plan`]): the owners under `ring`,
    /// then those under the rings `at` kept within the hand-off window — members of its
    /// current view only, as the node asks (`read_plan` in the node's `cluster/mod.rs`).
    fn read_plan(&self, at: usize, ring: &Ring, key: &[u8]) -> Vec<String> {
        let window: Vec<&Ring> = self.nodes[at]
            .previous
            .iter()
            .filter(|(_, t)| self.now.saturating_sub(*t) <= HANDOFF_WINDOW)
            .map(|(r, _)| r)
            .collect();
        let plan = placement::read_plan(ring, &window, key, RF);
        // As the node's `read_plan`: only members of `at`'s current view are asked.
        let Some(view) = self.ring_of(at) else {
            return plan;
        };
        plan.into_iter()
            .filter(|n| view.nodes().contains(n))
            .collect()
    }

    /// An owner store takes a pushed entry of `c` if it holds none or an older one; whether
    /// it did.
    fn take_pushed(store: &mut BTreeMap<u32, Entry>, c: u32, e: &Entry) -> bool {
        match store.get(&c) {
            Some(held) if held.version >= e.version => false,
            _ => {
                store.insert(c, e.clone());
                true
            }
        }
    }

    /// As the node's `forward_misplaced`: `j` took a pushed copy of `key` as newer, and if
    /// it does not own the key in its own view it passes the copy on to the owners there
    /// that it reaches (a peer call: no loss but a cut), each of which does the same. Seed
    /// 3237: a cut-off member pushed a key's last copy to a new owner of its minority ring,
    /// then dropped its own at its rejoin, and the majority's primary never asked that
    /// member. Off with `skip_forwarding`.
    fn forward_misplaced(&mut self, j: usize, key: u32, pushed: Pushed) {
        if self.skip_forwarding {
            return;
        }
        let Some(ring) = self.ring_of(j) else {
            return;
        };
        let owners: Vec<usize> = ring
            .owners(&key_bytes(key), RF)
            .into_iter()
            .filter_map(|n| self.index_of(n))
            .collect();
        if owners.contains(&j) {
            return;
        }
        for o in owners {
            if !(self.reachable(j, o) && self.reachable(o, j)) {
                continue;
            }
            if self.push_to(o, key, &pushed, false) {
                self.forward_misplaced(o, key, pushed.clone());
            }
        }
    }

    /// An owner takes `version` of `key` (a write, a hand-off push or a read repair) unless
    /// it holds a newer one or has seen a newer invalidation (the `Set` handler's checks).
    /// Returns false when it kept a newer one.
    fn owner_set(&mut self, at: usize, key: u32, held: Held) -> bool {
        let version = held.version;
        self.observe(at, version);
        let node = &mut self.nodes[at];
        let admits = node
            .coherence
            .as_ref()
            .is_some_and(|c| c.admits_tagged("ns", &key_bytes(key), version, &[tag_of(key)]));
        let newer = node.store.get(&key).is_some_and(|h| h.version > version);
        if (!admits || newer) && !self.skip_version_check {
            return false;
        }
        node.store.insert(key, held);
        true
    }

    fn apply_outputs(&mut self, from: usize, life: u32, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Send { to, packet } => {
                    self.packets.0 += 1;
                    let Some(&j) = self.by_addr.get(&to) else {
                        continue;
                    };
                    if self.blocked.contains(&(from, j)) || self.rng.random_bool(self.loss) {
                        self.packets.1 += 1;
                        continue;
                    }
                    let max = self.mix.max_delay_ms * MS;
                    let delay = self.rng.random_range(100..=max.max(101));
                    if self.duplication > 0.0 && self.rng.random_bool(self.duplication) {
                        let again = self.rng.random_range(100..=max.max(101));
                        self.push(
                            again,
                            Kind::Deliver {
                                to: j,
                                packet: packet.clone(),
                            },
                        );
                    }
                    self.push(delay, Kind::Deliver { to: j, packet });
                }
                Output::Schedule { timer, after } => {
                    self.push(
                        after.as_micros() as u64,
                        Kind::Timer {
                            node: from,
                            life,
                            timer,
                        },
                    );
                }
                Output::Replaced(id) => {
                    // As the node: a life that ended unseen counts as ended, and the new
                    // life, back with an empty owner store under the same ring, gets every
                    // key it owns handed over as if it had just joined.
                    self.note_ended(from, &id.name, id.generation);
                    if let Some(ring) = self.nodes[from].ring.clone()
                        && ring.nodes().contains(&id.name)
                        && let Some(without) = placement::others_ring(&ring, &id.name)
                    {
                        self.hand_off(from, &without, &ring, false);
                    }
                }
                Output::Up(id) => {
                    let now_ms = self.now / MS;
                    let out = self.nodes[from]
                        .coherence
                        .as_mut()
                        .map(|c| c.member_up(now_ms, &id.name, id.generation))
                        .unwrap_or_default();
                    self.apply_coherence(from, out);
                    self.note(|| format!("n{from} sees {} up (gen {})", id.name, id.generation))
                }
                Output::Down(id) => {
                    let now_ms = self.now / MS;
                    if let Some(i) = self.index_of(&id.name)
                        && self.nodes[i]
                            .membership
                            .as_ref()
                            .is_some_and(|m| m.identity().generation == id.generation)
                    {
                        let by = (from, self.nodes[from].life);
                        self.nodes[i].declared_down_by.insert(by);
                    }
                    self.note_ended(from, &id.name, id.generation);
                    if let Some(c) = self.nodes[from].coherence.as_mut() {
                        let out = c.member_down(now_ms, &id.name, id.generation);
                        self.apply_coherence(from, vec![out]);
                    }
                    self.note(|| format!("n{from} sees {} down (gen {})", id.name, id.generation))
                }
                Output::Rejoined => {
                    self.nodes[from].declared_down_by.clear();
                    let excused = self.nodes[from].copies_excused.replace(false);
                    let holds = self.nodes[from]
                        .lease
                        .held_through(self.now / MS, self.mix.nodes);
                    let out = self.nodes[from]
                        .coherence
                        .as_mut()
                        .map(|c| c.rejoined(holds));
                    let dropped = matches!(
                        out,
                        Some(coherence::Output::DropUnverified { owned: true, .. })
                    );
                    if excused && !dropped {
                        self.violate(|| {
                            format!(
                                "checker: n{from} rejoined keeping what it owns, after its copies were counted as lost with it"
                            )
                        });
                    }
                    if let Some(out) = out {
                        // As the node: cut off, it joins again (`placement::Joining`).
                        if matches!(out, coherence::Output::DropUnverified { owned: true, .. }) {
                            self.nodes[from].joining.rejoin(self.now / MS);
                            // As the node: the others' ring while it was away, for hand-off
                            // reads, now and at each ring change for 30 s
                            // (`placement::others_ring`, `after_rejoin`; seed 4680).
                            self.nodes[from].rejoined_ms = Some(self.now / MS);
                            let me = self.nodes[from].name.clone();
                            let kept = self.nodes[from]
                                .ring
                                .as_ref()
                                .and_then(|r| placement::others_ring(r, &me));
                            if let Some(kept) = kept
                                && !self.skip_others_ring
                            {
                                let now = self.now;
                                placement::keep_previous(&mut self.nodes[from].previous, kept, now);
                            }
                        }
                        self.apply_coherence(from, vec![out]);
                    }
                    self.note(|| format!("n{from} rejoins under a new identity"));
                }
                Output::Received(bytes) => {
                    let now_ms = self.now / MS;
                    if let Some(c) = self.nodes[from].coherence.as_mut() {
                        let out = c.receive(now_ms, &bytes);
                        self.apply_coherence(from, out);
                    }
                }
            }
        }
    }

    /// Starts a proof of `i`'s copies at `stage` (0: a start, with join and baseline; 10:
    /// after a loss, prove once the settle time has passed), superseding any running one.
    fn begin_warm(&mut self, i: usize, stage: u8, after: u64) {
        self.nodes[i].unverified = true;
        self.schedule_proof(i, stage, after);
    }

    /// Schedules stage `stage` of a new proof run of `i` in `after` µs, superseding any
    /// running one, without taking L3 off the read path (a rejoin's proof of what it holds
    /// unproven on a node without L3: the node's `warm::prove_held`).
    fn schedule_proof(&mut self, i: usize, stage: u8, after: u64) {
        self.nodes[i].warm_run += 1;
        let (life, run) = (self.nodes[i].life, self.nodes[i].warm_run);
        self.push(
            after,
            Kind::Warm {
                node: i,
                life,
                stage,
                run,
            },
        );
    }

    /// The other members live in `i`'s view (the node's `Shared::others`).
    fn view_others(&self, i: usize) -> Vec<usize> {
        self.nodes[i]
            .membership
            .as_ref()
            .map(|m| {
                m.live()
                    .into_iter()
                    .filter_map(|id| self.index_of(&id.name))
                    .filter(|&j| j != i)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Node `i`'s baseline failed (`why`), as the node's `prove` handles it: L3 is emptied,
    /// and what was pushed meanwhile is proven after the settle time as at a rejoin (by
    /// the key's other owner or the members' word), not dropped; the baselines taken so
    /// far stand, and its record is whole from now on. (Dropped unproven, pushed copies
    /// were lost: seed 1497 with `--warm-restart`, a member paused during two restarted
    /// members' baselines, and a transaction read a pair's counter as 0 after 44.)
    fn baseline_failed(&mut self, i: usize, why: &str) {
        self.note(|| format!("n{i} warm restart: {why}; L3 copies dropped, pushed copies proven"));
        self.nodes[i].copies.clear();
        self.nodes[i].unverified = false;
        self.prove_after_settle(i);
    }

    /// `i`'s record is whole from now on; the proof (stage 10 of its current run) follows
    /// once the settle time has passed (the node's `prove`).
    fn prove_after_settle(&mut self, i: usize) {
        let (life, run) = (self.nodes[i].life, self.nodes[i].warm_run);
        self.nodes[i].record.whole_from(self.now / MS);
        let settle = (CoherenceConfig::default().max_staleness_ms * 2 + 100) * MS;
        self.push(
            settle,
            Kind::Warm {
                node: i,
                life,
                stage: 10,
                run,
            },
        );
    }

    /// One step of a warm restart (the node's `cluster::warm`, with the simulator's
    /// network): join, baseline every member's coherence state, settle, prove.
    fn warm_step(&mut self, i: usize, stage: u8) {
        let (life, run) = (self.nodes[i].life, self.nodes[i].warm_run);
        let others = self.view_others(i);
        let give_up = |sim: &mut Self, why: &str| {
            sim.note(|| format!("n{i} warm restart: {why}; copies dropped"));
            sim.nodes[i].copies.clear();
            sim.nodes[i].unverified = false;
            // (No ring after the pushes' proof: nothing is left unproven.) Its record is
            // whole from now on.
            sim.nodes[i].unproven.clear();
            sim.nodes[i].read_after_start.clear();
            sim.nodes[i].settling = false;
            sim.nodes[i].record.whole_from(sim.now / MS);
        };
        if stage < 10 {
            if others.is_empty() {
                if stage == 9 {
                    self.baseline_failed(i, "no other member");
                } else {
                    self.push(
                        500 * MS,
                        Kind::Warm {
                            node: i,
                            life,
                            stage: stage + 1,
                            run,
                        },
                    );
                }
                return;
            }
            let now_ms = self.now / MS;
            let mut out = Vec::new();
            for j in others {
                if !self.reachable(i, j) {
                    // The node's `prove` on a failed baseline: L3 is emptied, and what was
                    // pushed meanwhile is proven after the settle time as at a rejoin (by
                    // the other owner or the members' word), not dropped; the baselines
                    // taken so far stand, and its record is whole from now on.
                    self.apply_coherence(i, out);
                    self.baseline_failed(i, "a member did not answer");
                    return;
                }
                let (name, generation) = (self.nodes[j].name.clone(), self.nodes[j].generation);
                let latest = self.nodes[j]
                    .coherence
                    .as_ref()
                    .map_or(0, |c| c.latest_seq());
                if let Some(c) = self.nodes[i].coherence.as_mut() {
                    out.extend(c.baseline(now_ms, &name, generation, latest));
                }
            }
            self.apply_coherence(i, out);
            self.prove_after_settle(i);
            return;
        }
        // The copies pushed while it settled first, in rounds (`settling.rs`).
        if !self.pushes_proven(i, life, run) {
            return;
        }
        if !self.warm_restart {
            // No L3 to prove: only what a rejoin held unproven (`warm::prove_held`).
            return;
        }
        let Some(ring) = self.nodes[i].ring.clone() else {
            give_up(self, "no ring");
            return;
        };
        let me = self.nodes[i].name.clone();
        let keys: Vec<(u32, u64)> = self.nodes[i]
            .copies
            .iter()
            .map(|(k, c)| (*k, c.version))
            .collect();
        let mut dropped = 0;
        for (key, version) in keys {
            let owners: Vec<String> = ring
                .owners(&key_bytes(key), RF)
                .into_iter()
                .map(str::to_owned)
                .collect();
            let answer = strata_cluster::warm::validator(&owners, &me)
                .and_then(|v| self.index_of(v))
                .filter(|&j| self.reachable(i, j))
                .map(|j| {
                    self.nodes[j]
                        .store
                        .get(&key)
                        .filter(|h| self.fresh(j, h.expires_at))
                        .map(|h| h.version)
                });
            if !strata_cluster::warm::keep(version, answer) {
                self.nodes[i].copies.remove(&key);
                dropped += 1;
            }
        }
        self.nodes[i].unverified = false;
        self.note(|| format!("n{i} warm restart: proven, {dropped} copies dropped"));
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        let running = |i: usize| self.nodes[i].paused_until.is_none_or(|t| self.now >= t);
        self.nodes[b].membership.is_some()
            && running(a)
            && running(b)
            && !self.blocked.contains(&(a, b))
            && !self.blocked.contains(&(b, a))
    }

    /// Applies an invalidation on node `at` as the node's `Shared::apply` does: a key's
    /// copies and owner-store entry older than the version; every copy a pattern, tag or
    /// flush matches, and every owner-store entry it matches when applied as the change
    /// itself (at the origin, strictly) or only those older than it when `repeat`
    /// (coherence's own application).
    fn apply_invalidation(&mut self, at: usize, inv: &Invalidation, repeat: bool) {
        self.observe(at, inv.version);
        let matches: Box<dyn Fn(u32) -> bool> = match &inv.op {
            InvalidationOp::Key { key, .. } => {
                let Some(k) = key_id(key) else { return };
                let (origin, seq, v) = (inv.origin.clone(), inv.seq, inv.version);
                self.debug_key(k, || format!("n{at} applies {origin}#{seq} version {v}"));
                let node = &mut self.nodes[at];
                if node.copies.get(&k).is_some_and(|c| c.version < inv.version) {
                    node.copies.remove(&k);
                }
                // An owner that missed a write (it was unreachable, or owned the key under
                // another view of the ring) drops its older value too.
                if node.store.get(&k).is_some_and(|h| h.version < inv.version) {
                    node.store.remove(&k);
                }
                if node
                    .unproven
                    .get(&(0, k))
                    .is_some_and(|p| matches!(p, Pushed::Plain(h) if h.version < inv.version))
                {
                    node.unproven.remove(&(0, k));
                }
                return;
            }
            InvalidationOp::Pattern { pattern, .. } => {
                let Ok(glob) = strata_core::glob::Glob::new(pattern) else {
                    return;
                };
                Box::new(move |k| glob.matches(&key_bytes(k)))
            }
            InvalidationOp::Flush { .. } => Box::new(|_| true),
            InvalidationOp::Tag { tag, .. } => {
                let tag = tag.clone();
                Box::new(move |k| tag_of(k) == tag.as_slice())
            }
        };
        let node = &mut self.nodes[at];
        node.copies.retain(|k, _| !matches(*k));
        node.store
            .retain(|k, h| !(matches(*k) && (!repeat || h.version < inv.version)));
        node.unproven.retain(|(kind, k), p| match p {
            Pushed::Plain(h) => {
                !(*kind == 0 && matches(*k) && (!repeat || h.version < inv.version))
            }
            _ => true,
        });
    }

    /// Carries out what a node's coherence state machine asked for.
    fn apply_coherence(&mut self, at: usize, outputs: Vec<coherence::Output>) {
        for o in outputs {
            match o {
                coherence::Output::Broadcast(bytes) => {
                    // As the node's disseminator: queued and sent in a gossip round at once
                    // (seed 2123: queued only, an invalidation waited for the next periodic
                    // round, 200 ms, and its writer crashed first; the node never waits).
                    if let Some(m) = self.nodes[at].membership.as_mut() {
                        let out = m.broadcast_now(&bytes);
                        self.apply(at, out);
                    }
                }
                coherence::Output::Apply(inv) => self.apply_invalidation(at, &inv, true),
                coherence::Output::DropUnverified {
                    origin,
                    lost,
                    life,
                    owned,
                } => {
                    if lost > 0 {
                        // Some invalidations never reached it: as a witness, its record
                        // starts over for all but the life that made what was lost, as the
                        // node's `gap_given_up` records it before the drop (not at a
                        // rejoin: the node's `drop_unverified`).
                        self.nodes[at].record.gave_up(&origin, life, self.now / MS);
                    }
                    // Every copy it does not own, and owner-store entries of keys it no
                    // longer owns — or, when invalidations are known lost, every owner-store
                    // entry (the node's `drop_unverified`).
                    let ring = self.nodes[at].ring.clone();
                    let me = self.nodes[at].name.clone();
                    // A rejoin whose lease held (coherence names this node itself as the
                    // origin only there) keeps what it owned under a ring of the hand-off
                    // window, as the node's `drop_unverified` with `lease_held`.
                    let lately: Vec<Ring> =
                        if origin == me && lost == 0 && !owned && !self.drop_lately_owned {
                            let now = self.now;
                            self.nodes[at]
                                .previous
                                .iter()
                                .filter(|(_, t)| {
                                    now.saturating_sub(*t)
                                        <= HANDOFF_WINDOW
                                            .min(decide::Lease::LAPSE_REMEMBERED_MS * MS)
                                })
                                .map(|(r, _)| r.clone())
                                .collect()
                        } else {
                            Vec::new()
                        };
                    if self.warm_restart {
                        // The node's L3 copies leave the read path and are proven again
                        // (its L1 copies are dropped: they are also in L3, which the
                        // copies here stand for together).
                        let settle = (CoherenceConfig::default().max_staleness_ms * 2 + 100) * MS;
                        self.begin_warm(at, 10, settle);
                        // The node's superseded start proof still baselines (its task runs
                        // on; only the latest run puts L3 back): its record is whole.
                        if self.nodes[at].record.from_ms() == u64::MAX {
                            self.nodes[at].record.whole_from(self.now / MS);
                        }
                    } else {
                        self.nodes[at].copies.clear();
                    }
                    let node = &mut self.nodes[at];
                    // The owner store holds both namespaces, as on the node.
                    if owned && self.trust_rejoined_copies {
                        // Broken on purpose: what it owns stays trusted.
                        node.unproven.clear();
                        node.read_after_start.clear();
                    } else if owned {
                        // What it owns is held unproven until its proof, as the node's
                        // `hold_unproven`; the rest goes.
                        let owns = |k: u32| {
                            ring.as_ref()
                                .is_some_and(|r| r.owners(&key_bytes(k), RF).contains(&me.as_str()))
                        };
                        let since = node.lease.lapse_began_ms().unwrap_or(node.started_ms);
                        node.proof_from_ms = if node.settling {
                            node.proof_from_ms.min(since)
                        } else {
                            since
                        };
                        node.settling = true;
                        let held: Vec<((u8, u32), Pushed)> = std::mem::take(&mut node.store)
                            .into_iter()
                            .map(|(k, h)| ((0, k), Pushed::Plain(h)))
                            .chain(
                                std::mem::take(&mut node.counters)
                                    .into_iter()
                                    .map(|(k, e)| ((1, k), Pushed::Counter(e))),
                            )
                            .chain(
                                std::mem::take(&mut node.pairs)
                                    .into_iter()
                                    .map(|(k, e)| ((2, k), Pushed::Pair(e))),
                            )
                            .collect();
                        node.unproven.retain(|(_, k), _| owns(*k));
                        for (id, p) in held {
                            if !owns(id.1) {
                                continue;
                            }
                            let newer = node.unproven.get(&id).is_some_and(|q| {
                                settling::version_of(q) >= settling::version_of(&p)
                            });
                            if !newer {
                                node.read_after_start.remove(&id);
                                node.unproven.insert(id, p);
                            }
                        }
                        if !self.warm_restart {
                            // Without L3 the node proves only these (`warm::prove_held`).
                            let settle =
                                (CoherenceConfig::default().max_staleness_ms * 2 + 100) * MS;
                            self.schedule_proof(at, 10, settle);
                        }
                    } else if let Some(ring) = ring {
                        // (A ring change's hand-off runs at once here, `refresh_ring`,
                        // unless `handoff_delays`: only then can a drop come between a ring
                        // change and its hand-off's read, as on the node. What the copies
                        // kept here change is what the others' hand-off reads find, and
                        // what a delayed or later push carries.)
                        let owns = |k: u32| {
                            let k = key_bytes(k);
                            std::iter::once(&ring)
                                .chain(&lately)
                                .any(|r| r.owners(&k, RF).contains(&me.as_str()))
                        };
                        node.unproven.retain(|(_, k), _| owns(*k));
                        node.store.retain(|k, _| owns(*k));
                        node.counters.retain(|c, _| owns(*c));
                        node.pairs.retain(|c, _| owns(*c));
                    }
                    self.note(|| {
                        format!("n{at} lost {lost} invalidations of {origin}: drops its copies")
                    });
                }
                coherence::Output::AskLatest { origin } => self.pull_heartbeat_from(at, origin),
                coherence::Output::Repair {
                    origin,
                    generation,
                    from,
                    to,
                } => {
                    let Some(o) = self.nodes.iter().position(|n| n.name == origin) else {
                        continue;
                    };
                    if !self.reachable(at, o) || self.nodes[o].generation != generation {
                        continue;
                    }
                    let items = self.nodes[o]
                        .coherence
                        .as_ref()
                        .map(|c| c.log_range(generation, from, to))
                        .unwrap_or_default();
                    if self.rng.random_bool(self.loss) {
                        continue;
                    }
                    let rtt = 2 * self
                        .rng
                        .random_range(100..=(self.mix.max_delay_ms * MS).max(101));
                    let life = self.nodes[at].life;
                    self.push(
                        rtt,
                        Kind::Repaired {
                            to: at,
                            life,
                            items,
                        },
                    );
                }
            }
        }
    }

    /// The node's lease pings (`cluster::gossip` on the node): `at` pings every other member
    /// of its view over the peer connections, and each that answers grants the lease from
    /// the send time. A member answers when its process is up, not paused, and both
    /// directions between them are open (a peer connection is TCP: no loss, and the
    /// simulator's round trips take no time).
    fn renew_lease(&mut self, at: usize) {
        let Some(ring) = self.ring_of(at) else {
            return;
        };
        let now_ms = self.now / MS;
        let expected = self.mix.nodes;
        let me = self.nodes[at].name.clone();
        let mut answered = Vec::new();
        let mut refused = Vec::new();
        for name in ring.nodes() {
            if *name == me {
                continue;
            }
            let Some(o) = self.index_of(name) else {
                continue;
            };
            let paused = self.nodes[o].paused_until.is_some_and(|u| self.now < u);
            // The answer grants the lease only while the answerer's view counts `at` live.
            if self.nodes[o].membership.is_some()
                && !paused
                && self.reachable(at, o)
                && self.reachable(o, at)
            {
                // As the node: a grant is the answerer's view counting this node live
                // (`grants_lease`); it counts for the execution lease only when the
                // answerer held this node for the grant window (`GrantView::answer`,
                // `grant_counts`), and every member it names joins the ring the node
                // executes on (`ExecLease::grant`). Contact is made either way. Broken on
                // purpose, every grant counts and names nothing.
                let granted = self
                    .ring_of(o)
                    .is_some_and(|r| decide::grants_lease(&r, &me))
                    && self.nodes[o].grant_view.holds(&me);
                if granted {
                    self.nodes[o].grant_view.note_grant(&me, now_ms);
                }
                let (_, held, named) =
                    self.nodes[o]
                        .grant_view
                        .answer(&me, now_ms, GRANT_WINDOW_MS);
                let counts = self.grant_on_liveness
                    || decide::grant_counts(granted, Some((held, named.len())), GRANT_WINDOW_MS);
                if granted {
                    answered.push((name.clone(), counts, named));
                } else {
                    refused.push(name.clone());
                }
            }
        }
        let lease = &mut self.nodes[at].lease;
        lease.retain(|m| ring.nodes().iter().any(|n| n == m), expected);
        for (name, _, _) in &answered {
            lease.grant(name, now_ms, expected);
        }
        self.nodes[at]
            .exec_lease
            .retain(|m| ring.nodes().iter().any(|n| n == m), expected);
        self.refresh_exec_ring(at, &ring, now_ms);
        let exec_lease = &mut self.nodes[at].exec_lease;
        for (name, counts, named) in &answered {
            if *counts {
                // Broken on purpose, no name joins the ring it executes on.
                let named = named
                    .iter()
                    .map(String::as_str)
                    .filter(|_| !self.grant_on_liveness);
                exec_lease.grant(name, now_ms, named, expected);
            }
        }
        // As the node: every answer is contact; one that grants the lease after a silence
        // makes it refute (`Membership::refute_after_silence`).
        for name in &refused {
            self.nodes[at].silences.answered(name, now_ms, false);
        }
        for (name, _, _) in &answered {
            if self.nodes[at].silences.answered(name, now_ms, true)
                && !self.skip_silence_refutation
                && let Some(m) = self.nodes[at].membership.as_mut()
            {
                let out = m.refute_after_silence();
                self.apply(at, out);
            }
        }
    }

    /// With `STRATA_SIM_KEY=N` in the environment, prints every event about key N (to find
    /// why a contract check failed).
    fn debug_key(&self, key: u32, line: impl FnOnce() -> String) {
        if self.debug_key == Some(key) {
            eprintln!(
                "{:10.4}s key {key}: {}",
                self.now as f64 / SEC as f64,
                line()
            );
        }
    }

    /// Anti-entropy: `at` asks one member, each in turn, for its latest sequence number (the RPC
    /// `Ping` answer carries it), so a gap is noticed even when gossip never delivered that
    /// member's heartbeats (piggybacked dissemination is probabilistic: the simulator found
    /// a node that missed every item of one origin for seconds, seeds 922 and 1963).
    fn pull_heartbeat(&mut self, at: usize) {
        let Some(m) = self.nodes[at].membership.as_ref() else {
            return;
        };
        let others: Vec<String> = m
            .live()
            .into_iter()
            .map(|id| id.name)
            .filter(|n| *n != self.nodes[at].name)
            .collect();
        let Some(pick) = self.nodes[at]
            .coherence
            .as_mut()
            .and_then(|c| c.pull_target(&others))
            .map(str::to_owned)
        else {
            return;
        };
        self.pull_heartbeat_from(at, pick);
    }

    /// `at` asks `pick` for its latest sequence number (the node's `Ping`).
    fn pull_heartbeat_from(&mut self, at: usize, pick: String) {
        let Some(y) = self.nodes.iter().position(|n| n.name == pick) else {
            return;
        };
        if !self.reachable(at, y) || self.pull_rng.random_bool(self.loss) {
            return;
        }
        let Some(latest) = self.nodes[y].coherence.as_ref().map(Coherence::latest_seq) else {
            return;
        };
        let item = coherence::Item::Heartbeat {
            origin: pick,
            generation: self.nodes[y].generation,
            latest,
        };
        let now_ms = self.now / MS;
        let out = self.nodes[at]
            .coherence
            .as_mut()
            .map(|c| c.receive_item(now_ms, item))
            .unwrap_or_default();
        self.apply_coherence(at, out);
    }

    /// A new version from `at`'s hybrid logical clock: its own clock (true time plus its
    /// offset, in ms) unless it has seen a later version, then one past that.
    fn stamp(&mut self, at: usize) -> u64 {
        let ms = self.clock_ms(at);
        self.nodes[at].hlc.tick(ms).as_u64()
    }

    /// `at` saw `version`: its later stamps order after it.
    fn observe(&mut self, at: usize, version: u64) {
        let ms = self.clock_ms(at);
        self.nodes[at].hlc.observe(Version::from_u64(version), ms);
    }

    /// As the node's lease tick and ring change: the ring `at` executes on holds itself,
    /// the members its view (`view`) lost within the grant window of a grant to them
    /// (`GrantView::lost_within`) and those its current
    /// grants named (`ExecLease::refresh`). Broken on purpose, its own losses are left out.
    fn refresh_exec_ring(&mut self, at: usize, view: &Ring, now_ms: u64) {
        let node = &mut self.nodes[at];
        let lost: Vec<String> = if self.forget_own_losses {
            Vec::new()
        } else {
            node.grant_view
                .lost_within(now_ms, GRANT_WINDOW_MS)
                .map(str::to_owned)
                .collect()
        };
        node.exec_lease
            .refresh(&node.name, view, lost.iter().map(String::as_str), now_ms);
    }

    /// The ring of `at`'s view.
    fn ring_of(&self, at: usize) -> Option<Ring> {
        self.nodes[at].ring.clone().or_else(|| {
            self.nodes[at]
                .membership
                .as_ref()
                .map(|m| m.ring(DEFAULT_VNODES))
        })
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Whether a node touching `i` is cut off by the partition (its writes are not covered
    /// by the contract: the other side cannot see them, as on a Redis Cluster minority).
    fn cut_off(&self, i: usize) -> bool {
        self.blocked.iter().any(|(a, b)| *a == i || *b == i)
    }

    /// A copy of `held` read from (or written through) `owner`'s current life.
    fn copy_from(&self, owner: usize, held: Held) -> Copy {
        Copy {
            version: held.version,
            expires_at: held.expires_at,
            origin: self.nodes[owner].name.clone(),
            generation: self.nodes[owner].generation,
        }
    }

    /// A client operation on node `at`: mostly reads and writes of one key, sometimes a
    /// pattern invalidation or a namespace flush.
    fn op(&mut self, at: usize) {
        if self.nodes[at].membership.is_none() || self.nodes[at].intruder {
            return;
        }
        let key = self.wrng.random_range(0..KEYS);
        let roll = self.wrng.random_range(0..100u32);
        let Some(ring) = self.ring_of(at) else {
            return;
        };
        // INCRs come from their own RNG, so that the rest of the workload of every seed stays
        // what it was before they existed.
        if self.incr_rng.random_bool(0.3) {
            let c = self.incr_rng.random_range(0..COUNTERS);
            self.incr(at, c);
        }
        if self.incr_rng.random_bool(0.15) {
            let l = self.incr_rng.random_range(0..LOCKS);
            self.lock(at, l);
        }
        if self.pair_rng.random_bool(0.2) {
            let n = self.pair_rng.random_range(0..PAIRS);
            self.pair_op(at, n);
        }
        if !self.no_watch && self.watch_rng.random_bool(0.1) {
            let n = self.watch_rng.random_range(0..PAIRS);
            self.watch_op(at, n);
        }
        if !self.no_evictions && self.evict_rng.random_bool(0.03) {
            self.evict();
        }
        if !self.no_evictions && self.plain_evict_rng.random_bool(0.05) {
            self.evict_plain();
        }
        if roll < 4 {
            self.invalidate_many(at, roll);
        } else if roll < 34 {
            self.write(at, key);
        } else if roll < 39 {
            self.remove(at, key);
        } else {
            self.read(at, key, &ring);
        }
    }

    /// An owner store's capacity eviction: one node drops one counter or lock copy (its
    /// owner store is full), but only while another owner of the key (in the evicting
    /// node's view) holds that version or a newer one: a primary that lost its copy must
    /// find the replica's (its read, or the replica's `Stale` answer). Evicting the last
    /// owner's copy would be a cache's data loss the checker could not tell from a lost
    /// update (a former owner may still hold the copy no read asks for).
    fn evict(&mut self) {
        let i = self.evict_rng.random_range(0..self.nodes.len());
        let held = self.nodes[i].counters.len();
        if self.nodes[i].membership.is_none() || held == 0 {
            return;
        }
        let nth = self.evict_rng.random_range(0..held);
        let Some((&c, version)) = self.nodes[i]
            .counters
            .iter()
            .nth(nth)
            .map(|(c, e)| (c, e.version))
        else {
            return;
        };
        let Some(ring) = self.ring_of(i) else {
            return;
        };
        let kept_elsewhere = ring
            .owners(&key_bytes(c), RF)
            .into_iter()
            .filter_map(|n| self.index_of(n))
            .any(|o| {
                o != i
                    && self.nodes[o].membership.is_some()
                    && self.nodes[o]
                        .counters
                        .get(&c)
                        .is_some_and(|e| e.version >= version)
            });
        if kept_elsewhere {
            self.nodes[i].counters.remove(&c);
            self.nodes[i].evicted.insert(c, version.as_u64());
            self.evictions += 1;
            self.debug_key(c, || format!("n{i} evicts its copy of counter/lock {c}"));
        }
    }

    /// An owner store's capacity eviction of a plain key: one node drops one key it stores,
    /// whatever the other owners hold — the node's owner stores are bounded caches, and a
    /// key every owner evicted is a miss (the client loads it again). Copies other members
    /// read earlier stay until an invalidation reaches them: a later `DEL` must still
    /// announce the removal (ARCHITECTURE decision 101). Half the time the key is one
    /// another member holds a copy of: such a key is read from those copies, so it is
    /// the one that goes cold in its owners' stores and is evicted there first.
    fn evict_plain(&mut self) {
        let i = self.plain_evict_rng.random_range(0..self.nodes.len());
        if self.nodes[i].membership.is_none() {
            return;
        }
        let copied: Vec<u32> = self.nodes[i]
            .store
            .keys()
            .copied()
            .filter(|k| {
                self.nodes
                    .iter()
                    .enumerate()
                    .any(|(j, n)| j != i && n.copies.contains_key(k))
            })
            .collect();
        let candidates: Vec<u32> = if !copied.is_empty() && self.plain_evict_rng.random_bool(0.5) {
            copied
        } else {
            self.nodes[i].store.keys().copied().collect()
        };
        if candidates.is_empty() {
            return;
        }
        let key = candidates[self.plain_evict_rng.random_range(0..candidates.len())];
        self.nodes[i].store.remove(&key);
        self.plain_evictions.0 += 1;
        self.debug_key(key, || format!("n{i} evicts its copy of key {key}"));
    }

    /// `at`'s clock (true time plus its offset), in ms.
    fn clock_ms(&self, at: usize) -> u64 {
        self.now.saturating_add_signed(self.nodes[at].offset) / MS
    }

    /// Whether `at` serves an entry expiring at `expires_at` now (`Entry::is_fresh` on its
    /// own clock), unless expiry is switched off on purpose.
    fn fresh(&self, at: usize, expires_at: Option<u64>) -> bool {
        self.ignore_expiry || expires_at.is_none_or(|e| self.clock_ms(at) < e)
    }

    /// The TTL a client asks for: none (the namespace default), short ones that expire
    /// during the run, long ones, and now and then one over the 24 h maximum.
    fn draw_ttl(&mut self) -> Option<Duration> {
        let roll = self.wrng.random_range(0..100u32);
        match roll {
            0..35 => None,
            35..65 => Some(Duration::from_millis(self.wrng.random_range(200..3_000))),
            65..90 => Some(Duration::from_millis(self.wrng.random_range(3_000..20_000))),
            90..98 => Some(Duration::from_secs(self.wrng.random_range(3_600..=86_400))),
            _ => Some(Duration::from_secs(
                self.wrng.random_range(86_401..=172_800),
            )),
        }
    }

    /// Records the first contract violation seen at an operation.
    /// What a violation adds when the invalidation or acknowledgement it names is a `DEL`
    /// skipped on purpose ([`RunOptions::skip_absent_removals`]).
    fn skipped(&self, key: u32, version: u64) -> &'static str {
        if self.skipped_removals.contains(&(key, version)) {
            " (a DEL its primary skipped: decision 101 broken)"
        } else {
            ""
        }
    }

    fn violate(&mut self, what: impl FnOnce() -> String) {
        if self.violation.is_none() {
            let t = self.now as f64 / SEC as f64;
            self.violation = Some(format!("{} (at {t:.3}s)", what()));
        }
    }

    /// The checks every served read goes through: G1 (not older than the reader's own last
    /// acknowledged write or removal of the key, in this life), G2 (not older than an
    /// invalidation made more than `STALENESS_BOUND` ago, until a partition starts), G4 (not
    /// at or after the expiry the reference model computed for that write, on the reader's
    /// clock) and G5 (no entry lives longer than `max_ttl` from its write).
    fn check_served(&mut self, at: usize, key: u32, held: Held) {
        let version = held.version;
        if self.partitioned {
            // No bound holds across a partition (docs/semantics.md): reads are checked in
            // runs until a partition starts.
            return;
        }
        if let Some(&(life, mine)) = self.acked.get(&(at, key))
            && life == self.nodes[at].life
            && version < mine
        {
            let why = self.skipped(key, mine);
            self.violate(|| {
                format!("G1: n{at} read key {key} at version {version}, older than its own acknowledged version {mine}{why}")
            });
        }
        if let Some((t, _, v)) = self
            .invalidations
            .iter()
            .find(|(t, k, v)| *k == key && *v > version && t + STALENESS_BOUND <= self.now)
            .copied()
        {
            let why = self.skipped(key, v);
            self.violate(|| {
                format!(
                    "G2: n{at} served key {key} at version {version}; it was invalidated at {:.3}s by version {v}{why}",
                    t as f64 / SEC as f64
                )
            });
        }
        if let Some(w) = self.writes.get(&(key, version)).copied() {
            let now_ms = self.clock_ms(at);
            if let Some(e) = w.expires_at
                && now_ms >= e
            {
                self.violate(|| {
                    format!("G4: n{at} served key {key} version {version} at {now_ms} ms on its clock; it expired at {e} ms")
                });
            }
            let max = self
                .policy
                .max_ttl
                .map_or(u64::MAX, |d| d.as_millis() as u64);
            if held
                .expires_at
                .is_none_or(|e| e.saturating_sub(w.written_ms) > max)
            {
                self.violate(|| {
                    format!("G5: n{at} served key {key} version {version} expiring at {:?}, more than max_ttl after its write at {} ms", held.expires_at, w.written_ms)
                });
            }
        }
    }

    /// A write: every owner in `at`'s view it can reach takes it (the cluster tier's `set`),
    /// then `at` originates the invalidation that drops older copies elsewhere.
    fn write(&mut self, at: usize, key: u32) {
        let Some((p, ring_p)) = self.plain_primary(at, key) else {
            return;
        };
        let owners: Vec<usize> = ring_p
            .owners(&key_bytes(key), RF)
            .into_iter()
            .filter_map(|n| self.index_of(n))
            .collect();
        if self.plain_at_writer && !owners.iter().any(|&o| o == p || self.reachable(p, o)) {
            return;
        }
        // The namespace policy, checked by the node the client asked (G5): a TTL over
        // `max_ttl` is refused before any owner is written.
        let requested = self.draw_ttl();
        let ttl = match self.policy.effective_ttl("ns", requested) {
            Ok(t) => t,
            Err(_) if self.ignore_max_ttl => requested,
            Err(_) => {
                self.ttl_ops.1 += 1;
                return;
            }
        };
        let max = self.policy.max_ttl.unwrap_or(Duration::MAX);
        if requested.is_some_and(|r| r > max) {
            self.violate(|| format!("G5: n{at} accepted a TTL of {requested:?} over max_ttl"));
        }
        if requested.is_some() {
            self.ttl_ops.0 += 1;
        }
        // The writer's hybrid clock: its own (skewed) clock, past every version it has seen.
        let version = self.stamp(at);
        let written_ms = self.clock_ms(at);
        let held = Held {
            version,
            expires_at: ttl.map(|t| written_ms + t.as_millis() as u64),
        };
        // The reference model's expiry: computed from what the client asked, not from what
        // the node stored.
        let default = self.policy.default_ttl;
        let reference = WriteRef {
            expires_at: requested
                .or(default)
                .map(|t| written_ms + t.as_millis() as u64),
            written_ms,
        };
        if !self.nodes[at]
            .coherence
            .as_ref()
            .is_some_and(|c| c.admits_tagged("ns", &key_bytes(key), version, &[tag_of(key)]))
        {
            return;
        }
        self.ops.2 += 1;
        self.debug_key(key, || {
            format!("n{at} writes at n{p} (owners {owners:?}) version {version}")
        });
        // Versions order every write; two writes of one key with one version would let
        // owners and copies keep different values for good (seed 1775, before the clocks
        // were tagged).
        if self.writes.insert((key, version), reference).is_some() {
            self.violate(|| {
                format!("G2: a second write of key {key} stamped version {version} (n{at}): holders of either value keep it")
            });
        }
        let stored = if self.plain_at_writer {
            self.put_at_writer(at, key, held, &owners)
        } else {
            self.put_at(p, &ring_p, key, held, reference)
        };
        let Some(stored) = stored else {
            // Refused (`TRYAGAIN`), or superseded under the old model: not acknowledged,
            // and the writer keeps no copy of it (owners that took it keep theirs: an
            // unknown outcome).
            if !self.plain_at_writer {
                self.plain_refused += 1;
            }
            self.nodes[at].copies.remove(&key);
            return;
        };
        // The owners written (under the old model, those the writer reached).
        let written: Vec<usize> = owners
            .iter()
            .copied()
            .filter(|&o| !self.plain_at_writer || o == p || self.reachable(p, o))
            .collect();
        for &o in &written {
            self.nodes[o].copies.remove(&key);
        }
        if !self.cut_off(at) {
            let life = self.nodes[at].life;
            self.acked.insert((at, key), (life, stored.version));
        }
        self.nodes[at].copies.remove(&key);
        if !owners.contains(&at) && stored.version == version {
            let origin = if self.plain_at_writer { written[0] } else { p };
            let copy = self.copy_from(origin, stored);
            self.nodes[at].copies.insert(key, copy);
        }
        // The contract covers writes whose writer, primary and owners are connected to the
        // cluster.
        if !self.cut_off(at) && !self.cut_off(p) && !written.iter().any(|&o| self.cut_off(o)) {
            self.invalidations.push((self.now, key, stored.version));
        }
        let op = InvalidationOp::Key {
            namespace: "ns".into(),
            key: key_bytes(key),
        };
        // The primary announces the write; the writer's own older copy went above.
        self.observe(p, stored.version);
        self.originate(p, stored.version, op, false);
    }

    /// Whether owner `o` takes a change of `key` that primary `p` (named `name_p`) replicates
    /// to it, before any version check: its process is up (a gone one refuses the
    /// connection, and the write waits for the ring to drop that owner, as on the node's
    /// `replicate_out`; skipping it, as this simulator once did, let two primaries with
    /// overlapping views each write alone: seed 264), the two reach each other, and — when
    /// `fenced` — its own view admits `p` as the key's primary with a quorum
    /// (`decide::admits_replication`). `false` makes the execution a refusal.
    fn replica_takes(&self, p: usize, o: usize, key: &[u8], name_p: &str, fenced: bool) -> bool {
        if self.nodes[o].membership.is_none() || !(self.reachable(p, o) && self.reachable(o, p)) {
            return false;
        }
        if !fenced {
            return true;
        }
        self.ring_of(o).is_some_and(|ring_o| {
            let members = ring_o.nodes().len();
            decide::admits_replication(&ring_o, members, self.mix.nodes, key, name_p).is_ok()
        })
    }

    /// [`Sim::others_copy`] for a plain key's execution at `p`: `None` (refused) also when
    /// `p` holds a newer copy unproven (the node's `refuse_below_unproven`).
    fn base_copy(&self, p: usize, others: &[&str], key: u32) -> Option<(Option<Held>, u64)> {
        let (copy, floor) = self.others_copy(p, others, key)?;
        let answered = copy.map_or(0, |h| h.version).max(floor);
        (!self.below_unproven(p, 0, key, answered)).then_some((copy, floor))
    }

    /// What a primary `p` without a fresh copy of plain key `key` executes against, as the
    /// node's `others_copy`: the newest copy the members `others` answer with that `p` can
    /// serve (fresh on its clock, not refused by its coherence), and the newest version of
    /// one it cannot (a dead copy), the floor above which the execution's change must be
    /// stamped; a live copy at or below that floor is no starting point. `None` when a
    /// member cannot be asked (the execution is refused: starting from nothing could undo
    /// an acknowledged write).
    fn others_copy(&self, p: usize, others: &[&str], key: u32) -> Option<(Option<Held>, u64)> {
        let kb = key_bytes(key);
        let tag = tag_of(key);
        let (mut newest, mut floor): (Option<Held>, u64) = (None, 0);
        for n in others {
            let Some(o) = self.index_of(n) else { continue };
            if !(self.reachable(p, o) && self.reachable(o, p)) || self.refuses_unproven(o, 0, key) {
                return None;
            }
            let Some(h) = self.nodes[o].store.get(&key).copied() else {
                continue;
            };
            let live = self.fresh(p, h.expires_at)
                && self.nodes[p]
                    .coherence
                    .as_ref()
                    .is_some_and(|c| c.admits_tagged("ns", &kb, h.version, &[tag]));
            if !live {
                floor = floor.max(h.version);
            } else if newest.is_none_or(|x| x.version < h.version) {
                newest = Some(h);
            }
        }
        Some((newest.filter(|h| h.version > floor), floor))
    }

    /// A plain `SET` of `key` at its primary `p`, as the node's `execute_locked` runs a
    /// `PrimaryOp::Put`: against the primary's own copy, or the other owners' where
    /// `decide::reads_before_put` says so (one that cannot be asked refuses the write);
    /// stamped again at the primary when it knows a copy or an invalidation at least as new
    /// as the writer's version (the later write wins, as on one Redis); replicated to every
    /// other owner, each of which takes it only from the primary of its own view, with a
    /// quorum (`decide::admits_replication`: fencing), and answers with what it holds when
    /// that is newer than the primary's base or superseded by an invalidation it applied
    /// (the primary then executes again); stored at the primary once every owner took it.
    /// The copy stored, or `None` when the write was refused: an owner gone, cut off or
    /// fencing it (the node answers `TRYAGAIN`; owners that took it keep it).
    fn put_at(
        &mut self,
        p: usize,
        ring_p: &Ring,
        key: u32,
        mut held: Held,
        reference: WriteRef,
    ) -> Option<Held> {
        let kb = key_bytes(key);
        let tag = tag_of(key);
        let name_p = self.nodes[p].name.clone();
        let replicas = decide::replicas(ring_p, &name_p, &kb, RF);
        // (copy to execute against, floor of the base): a restart's.
        let mut restart: Option<(Option<Held>, u64)> = None;
        for _attempt in 0..4 {
            let (current, floor) = match restart.take() {
                Some(r) => r,
                None => match self.nodes[p].store.get(&key).copied() {
                    Some(h) if self.fresh(p, h.expires_at) => (Some(h), 0),
                    _ => {
                        let plan = self.read_plan(p, ring_p, &kb);
                        let others: Vec<&str> = plan
                            .iter()
                            .map(String::as_str)
                            .filter(|n| *n != name_p)
                            .collect();
                        if decide::reads_before_put(&others, &replicas) {
                            self.base_copy(p, &others, key)?
                        } else {
                            (None, 0)
                        }
                    }
                },
            };
            let base = current.map_or(0, |h| h.version).max(floor);
            self.observe(p, base);
            let superseded = !self.skip_version_check
                && (current.is_some_and(|c| c.version >= held.version)
                    || held.version <= base
                    || !self.nodes[p]
                        .coherence
                        .as_ref()
                        .is_some_and(|c| c.admits_tagged("ns", &kb, held.version, &[tag])));
            self.observe(p, held.version);
            if superseded {
                held.version = self.stamp(p);
                self.debug_key(key, || {
                    format!("n{p} stamps the write again: version {}", held.version)
                });
                self.writes.insert((key, held.version), reference);
            }
            let mut failed = false;
            let mut newer: Option<(Option<Held>, u64)> = None;
            for r in &replicas {
                let Some(o) = self.index_of(r) else { continue };
                if !self.replica_takes(p, o, &kb, &name_p, !self.replicas_admit_all)
                    || self.replica_refuses_unproven(o, 0, key, base)
                {
                    failed = true;
                    continue;
                }
                if !self.replicas_admit_all && !self.skip_version_check {
                    let there = self.nodes[o].store.get(&key).copied();
                    if there.is_some_and(|h| h.version > base) {
                        newer = Some((there, 0));
                        continue;
                    }
                    let refused_by = self.nodes[o]
                        .coherence
                        .as_ref()
                        .and_then(|c| c.superseded_by("ns", &kb, held.version, &[tag]));
                    if let Some(v) = refused_by {
                        newer = Some((None, v));
                        continue;
                    }
                }
                self.owner_set(o, key, held);
            }
            if failed {
                return None;
            }
            if let Some((copy, floor)) = newer {
                // The node adopts a newer copy into its own store and executes again.
                if let Some(h) = copy {
                    self.observe(p, h.version);
                    self.owner_set(p, key, h);
                }
                self.observe(p, floor);
                restart = Some((copy, floor));
                continue;
            }
            self.owner_set(p, key, held);
            return Some(held);
        }
        None
    }

    /// The model of a plain `SET` before per-key primaries (`plain_at_writer`): the writer
    /// writes every owner it reaches, each keeping a newer version it holds; superseded, the
    /// write is acknowledged and nothing is announced.
    fn put_at_writer(&mut self, at: usize, key: u32, held: Held, owners: &[usize]) -> Option<Held> {
        let mut kept_newer = false;
        for &o in owners {
            if o == at || self.reachable(at, o) {
                kept_newer |= !self.owner_set(o, key, held);
            }
        }
        if kept_newer {
            if !self.cut_off(at) {
                let life = self.nodes[at].life;
                self.acked.insert((at, key), (life, held.version));
            }
            return None;
        }
        Some(held)
    }

    /// An `INCR` of counter `c` asked of node `at`, as the node's cluster tier runs it: sent
    /// to the key's primary in `at`'s view, which — if it is the primary in its own view —
    /// executes `ops::apply` against its copy (else the newest the other owners hold),
    /// replicates the result to every other owner (each admits it only from its own view's
    /// primary and against a base at least as new as what it holds), and applies it itself
    /// once every owner did. Every decision is `strata_cluster::primary`'s, the node's own.
    fn incr(&mut self, at: usize, c: u32) {
        if let Some((p, ops::Reply::Int(n), version)) = self.execute(at, c, &KeyOp::IncrBy(1)) {
            if let Some(&(last, _)) = self.counter_acks.get(&c)
                && n <= last
            {
                self.violate(|| {
                    format!(
                        "INCR of counter {c} at n{p} (asked of n{at}) answered {n} after an acknowledged {last}: an acknowledged increment was lost"
                    )
                });
            }
            self.counter_acks.insert(c, (n, version));
        }
    }

    /// Where a plain-key write or removal asked of `at` runs, as the node's `set` and `remove`
    /// do: at the key's primary in `at`'s view, if that node admits it (seed 10707: a
    /// removal made by a node just back from a pause, under its old ring, reached neither
    /// the current owners nor anyone's gossip, and was acknowledged). `None` is counted as
    /// refused.
    fn plain_primary(&mut self, at: usize, key: u32) -> Option<(usize, Ring)> {
        if self.plain_at_writer {
            return self.ring_of(at).map(|r| (at, r));
        }
        let found = self.admitting_primary(at, &key_bytes(key));
        if found.is_none() {
            self.plain_refused += 1;
        }
        found
    }

    /// Whether node `i`'s copies still count for an execution at primary `p` (the checker's
    /// "every copy of the write was lost"): `p`'s own, or a live node connected to `p` —
    /// unless `p`'s view has left it out, so many of the cluster's members (live, in the
    /// life in which they did so) have declared its current identity down that the others
    /// are too few to grant it a lease, and its lease has not held through. Such a node
    /// cannot get its lease back before it rejoins (members grant it only while their view
    /// counts it live: `decide::grants_lease`; seed 5587: 4 of 8), so when it
    /// rejoins it drops what it owns (`Coherence::rejoined`, ARCHITECTURE decision 45, as a
    /// Redis Cluster master left in a minority loses its writes), and no read plan of the
    /// primary's reaches it meanwhile. Seed 8828: the majority's primary, whose replica had
    /// dropped its copy at a rejoin of its own, committed a `WATCH` increment from nothing
    /// 0.2 s after a heal, while the old primary — out of its view, declared down, without
    /// a lease for 12 s — was reachable again and still held the last copy, which it
    /// dropped 1.9 s later. A copy on a node in the primary's view, on one too few
    /// declared down, or on one whose lease held (a short false suspicion: it keeps what
    /// it owns) counts. (A doomed copy may still be pushed to a new owner before the
    /// rejoin; the counter's later answers are checked against the new lineage then.)
    fn keeps_copies_for(&self, p: usize, i: usize) -> bool {
        if i == p {
            return true;
        }
        let node = &self.nodes[i];
        if node.membership.is_none() || !(self.reachable(p, i) && self.reachable(i, p)) {
            return false;
        }
        let in_view = self
            .ring_of(p)
            .is_some_and(|r| r.nodes().contains(&node.name));
        let declarers = node
            .declared_down_by
            .iter()
            .filter(|&&(j, life)| self.nodes[j].life == life && self.nodes[j].membership.is_some())
            .count();
        // The members that may still grant its lease: every other live one but the
        // declarers (a crashed or departed member answers no ping; seed 640: a replica
        // paused past detection while its primary crashed counted three dead members as
        // granters, and its doomed copy as kept). A lease needs `expected / 2` of them
        // (`Lease`).
        let live_others = (0..self.mix.nodes)
            .filter(|&j| j != i && self.nodes[j].membership.is_some())
            .count();
        let granters = live_others.saturating_sub(declarers);
        let counts = in_view
            || granters >= self.mix.nodes / 2
            || node.lease.held_through(self.now / MS, self.mix.nodes);
        if !counts {
            node.copies_excused.set(true);
        }
        counts
    }

    /// The primary of `key` in `at`'s view and its own ring, when `at` reaches it and it
    /// executes there as the node's `admit` decides: the primary in its own view, with a
    /// quorum, not stalled, not joining, holding its lease (each but the first can be
    /// switched off to show what it guards). `None` is a refusal: the client gets an error.
    fn admitting_primary(&self, at: usize, key: &[u8]) -> Option<(usize, Ring)> {
        let ring_at = self.ring_of(at)?;
        if self.execute_anywhere {
            return Some((at, ring_at));
        }
        let p = decide::primary(&ring_at, key).and_then(|n| self.index_of(n))?;
        if p != at && !(self.reachable(at, p) && self.reachable(p, at)) {
            return None;
        }
        let ring_p = self.ring_of(p)?;
        let now_ms = self.now / MS;
        let node = &self.nodes[p];
        let admits = decide::primary(&ring_p, key) == Some(node.name.as_str())
            && decide::has_quorum(ring_p.nodes().len(), self.mix.nodes)
            && (self.ignore_stalls || node.stall.may_execute(now_ms))
            && (self.ignore_joining || node.joining.may_execute(now_ms))
            && (self.ignore_lease
                || node.lease.holds(now_ms, self.mix.nodes)
                    && (self.grant_on_liveness
                        || node
                            .exec_lease
                            .admits(&node.name, key, now_ms, self.mix.nodes)
                            .is_ok()));
        admits.then_some((p, ring_p))
    }

    /// Executes `op` on counter `c` at its primary, as `incr` describes; the
    /// primary, the reply and the version written (0 when nothing was), or `None` when it
    /// was not acknowledged.
    fn execute(&mut self, at: usize, c: u32, op: &KeyOp) -> Option<(usize, ops::Reply, u64)> {
        self.ring_of(at)?;
        let Some((p, ring_p)) = self.admitting_primary(at, &key_bytes(c)) else {
            self.incr_ops.1 += 1;
            return None;
        };
        let name_p = self.nodes[p].name.clone();
        // Every copy of the last acknowledged write gone or cut off from the primary (more
        // owners crashed or partitioned away than the replication factor covers): a new
        // lineage starts — a cache's data loss, not a lost update. (A primary on a minority
        // side never gets here: it lacks the quorum to execute.)
        // Judged now, applied only if this execution is acknowledged: a refused attempt
        // (an owner unreachable for a moment) must not wipe the counter's history.
        // A primary whose own copy of the last acknowledged write was evicted (its owner
        // store was full) lost one copy by design; a copy on a member out of its view is then
        // out of its reach too: two copies gone for it, as many as the replication factor
        // covers (seed 253: the primary evicted a counter, the replica was declared down for
        // 0.4 s, and the primary restarted the counter).
        let evicted_here = |v: u64| self.nodes[p].evicted.get(&c).is_some_and(|&e| e >= v);
        let in_view_of_p = |i: usize| {
            self.ring_of(p)
                .is_some_and(|r| r.nodes().contains(&self.nodes[i].name))
        };
        let lineage_lost = c < COUNTERS
            && self.counter_acks.get(&c).is_some_and(|&(_, v)| {
                !(0..self.nodes.len()).any(|i| {
                    (!evicted_here(v) || i == p || in_view_of_p(i))
                        && self.keeps_copies_for(p, i)
                        && (self.nodes[i]
                            .counters
                            .get(&c)
                            .is_some_and(|e| e.version.as_u64() >= v)
                            // Held unproven, it is still a copy: its proof may keep it.
                            || self.unproven_version(i, 1, c).is_some_and(|u| u >= v))
                })
            });
        let result = self.execute_at(at, p, c, op, &ring_p, &name_p);
        if result.is_some() && lineage_lost {
            self.counter_acks.remove(&c);
            self.incr_ops.2 += 1;
        }
        result
    }

    /// [`Sim::execute`] at the primary `p` (in `at`'s view), named `name_p`, with its ring.
    fn execute_at(
        &mut self,
        at: usize,
        p: usize,
        c: u32,
        op: &KeyOp,
        ring_p: &Ring,
        name_p: &str,
    ) -> Option<(usize, ops::Reply, u64)> {
        let key = key_bytes(c);
        for _attempt in 0..4 {
            let now_p = self.clock_ms(p);
            let local = self.nodes[p]
                .counters
                .get(&c)
                .filter(|e| e.is_fresh(now_p))
                .cloned();
            let current = if local.is_some() {
                local
            } else {
                let plan = self.read_plan(p, ring_p, &key);
                let mut answers = Vec::new();
                for n in plan.iter().filter(|n| **n != name_p) {
                    let Some(o) = self.index_of(n) else { continue };
                    if !(self.reachable(p, o) && self.reachable(o, p))
                        || self.refuses_unproven(o, 1, c)
                    {
                        self.incr_ops.1 += 1;
                        return None;
                    }
                    answers.push(
                        self.nodes[o]
                            .counters
                            .get(&c)
                            .filter(|e| e.is_fresh(now_p))
                            .cloned(),
                    );
                }
                if debug_counter(c) {
                    let alive: Vec<bool> =
                        self.nodes.iter().map(|n| n.membership.is_some()).collect();
                    eprintln!(
                        "{:.3} c0 plan at n{p}: {plan:?} answers {:?} alive {alive:?} paused {:?}",
                        self.now as f64 / SEC as f64,
                        answers
                            .iter()
                            .map(|a| a.as_ref().map(|e| e.version.as_u64()))
                            .collect::<Vec<_>>(),
                        self.nodes
                            .iter()
                            .map(|n| n.paused_until)
                            .collect::<Vec<_>>()
                    );
                }
                let start = decide::starting_point(None, answers);
                if self.below_unproven(p, 1, c, start.as_ref().map_or(0, |e| e.version.as_u64())) {
                    self.incr_ops.1 += 1;
                    return None;
                }
                start
            };
            let base = current.as_ref().map_or(0, |e| e.version.as_u64());
            if base > 0 {
                self.observe(p, base);
            }
            let now_ms = self.clock_ms(p);
            let limits = OpLimits { max_value: 1 << 20 };
            let (effect, reply) = ops::apply(op, current.as_ref(), now_ms, limits);
            let version = self.stamp(p);
            // The change: an entry written, or (None) the key deleted.
            let entry = match effect {
                Effect::None => return Some((p, reply, 0)),
                Effect::Write { value, ttl, .. } => {
                    let mut e = Entry::new(value, Version::from_u64(version));
                    if let ops::Ttl::AtMs(t) = ttl {
                        e.expires_at_ms = Some(t);
                    }
                    Some(e)
                }
                Effect::Delete => None,
            };
            let mut newer: Option<Entry> = None;
            let mut failed = false;
            for r in decide::replicas(ring_p, name_p, &key, RF) {
                let Some(o) = self.index_of(&r) else { continue };
                if !self.replica_takes(p, o, &key, name_p, !self.replicas_admit_all)
                    || self.replica_refuses_unproven(o, 1, c, base)
                {
                    failed = true;
                    continue;
                }
                if !self.replicas_admit_all {
                    let held = self.nodes[o].counters.get(&c);
                    if decide::replica_is_ahead(held, base) {
                        if newer
                            .as_ref()
                            .is_none_or(|e| held.is_some_and(|h| h.version > e.version))
                        {
                            newer = held.cloned();
                        }
                        continue;
                    }
                }
                self.observe(o, version);
                Self::apply_change(&mut self.nodes[o].counters, c, entry.as_ref(), version);
            }
            if failed {
                // Not acknowledged; owners that took it keep it (an unknown outcome).
                self.incr_ops.1 += 1;
                return None;
            }
            if let Some(e) = newer {
                self.observe(p, e.version.as_u64());
                self.nodes[p].counters.insert(c, e);
                continue;
            }
            Self::apply_change(&mut self.nodes[p].counters, c, entry.as_ref(), version);
            self.incr_ops.0 += 1;
            if debug_counter(c) {
                let t = self.now as f64 / SEC as f64;
                let reps = decide::replicas(ring_p, name_p, &key, RF);
                let rings: Vec<String> = (0..self.nodes.len())
                    .map(|i| {
                        self.ring_of(i)
                            .map(|r| r.nodes().join(","))
                            .unwrap_or_default()
                    })
                    .collect();
                eprintln!(
                    "{t:.3} c{c} asked n{at} primary n{p} -> {reply:?} v{version} base {base} replicas {reps:?} rings {rings:?} blocked {:?}",
                    self.blocked
                );
            }
            return Some((p, reply, version));
        }
        self.incr_ops.1 += 1;
        None
    }

    /// An owner store applies a primary's change of `c`: the entry, if newer than what it
    /// holds, or (None) the delete of what it holds at or below `version`.
    fn apply_change(store: &mut BTreeMap<u32, Entry>, c: u32, entry: Option<&Entry>, version: u64) {
        match entry {
            Some(e) => {
                let slot = store.entry(c).or_insert_with(|| e.clone());
                if slot.version < e.version {
                    *slot = e.clone();
                }
            }
            None => {
                if store.get(&c).is_some_and(|h| h.version.as_u64() <= version) {
                    store.remove(&c);
                }
            }
        }
    }

    /// A transaction client on node `at`, on pair `n`: half the time `MULTI; INCR r; EXEC`,
    /// else `MULTI; GET r; SET w copied; EXEC` — a key read and not changed, which the
    /// owners check (ARCHITECTURE decision 96). The checker requires an acknowledged `INCR`
    /// to answer more than every earlier one and a read to see at least the last
    /// acknowledged value, unless every copy of that write was lost with the nodes holding
    /// it (a cache's data loss, as for counters).
    fn pair_op(&mut self, at: usize, n: u32) {
        use ops::{Transaction, TxStep};
        let (r, w) = (PAIRS_FROM + 2 * n, PAIRS_FROM + 2 * n + 1);
        let incr = self.pair_rng.random_bool(0.5);
        let (ids, steps) = if incr {
            (
                vec![r],
                vec![TxStep::Key {
                    key: 0,
                    op: KeyOp::IncrBy(1),
                }],
            )
        } else {
            (
                vec![r, w],
                vec![
                    TxStep::Key {
                        key: 0,
                        op: KeyOp::Get,
                    },
                    TxStep::Key {
                        key: 1,
                        op: KeyOp::Set {
                            value: b"copied".to_vec(),
                            ttl: ops::Ttl::Default,
                            exists: ops::Exists::Any,
                            get: false,
                            integer: false,
                        },
                    },
                ],
            )
        };
        let op = ops::MultiOp::Transaction(Transaction {
            keys: ids.iter().map(|&c| key_bytes(c).into()).collect(),
            watch: Vec::new(),
            steps,
            default_ttl_ms: None,
        });
        let Some((p, reply, versions, lost)) = self.execute_multi(at, &ids, &op) else {
            return;
        };
        let replies = match reply {
            ops::Reply::Exec(Some(replies)) => replies,
            other => {
                self.violate(|| format!("a transaction on pair {n} at n{p} answered {other:?}"));
                return;
            }
        };
        if lost {
            self.pair_acks.remove(&r);
        }
        let last = self.pair_acks.get(&r).map(|&(v, _)| v);
        match (incr, replies.first()) {
            (true, Some(ops::Reply::Int(v))) => {
                if let Some(last) = last
                    && *v <= last
                {
                    let v = *v;
                    self.violate(|| {
                        format!(
                            "a transaction's INCR of pair {n} at n{p} (asked of n{at}) answered {v} after an acknowledged {last}: an acknowledged increment was lost"
                        )
                    });
                }
                self.pair_acks.insert(r, (*v, versions[0]));
            }
            (false, Some(ops::Reply::Bulk(_) | ops::Reply::Nil)) => {
                let read = match &replies[0] {
                    ops::Reply::Bulk(b) => std::str::from_utf8(b)
                        .ok()
                        .and_then(|t| t.parse::<i64>().ok())
                        .unwrap_or(-1),
                    _ => 0,
                };
                if let Some(last) = last
                    && read < last
                {
                    self.violate(|| {
                        format!(
                            "a transaction at n{p} (asked of n{at}) read pair {n}'s counter as {read} after an acknowledged {last}: a stale copy decided what it wrote"
                        )
                    });
                }
            }
            (_, first) => {
                let first = first.cloned();
                self.violate(|| {
                    format!("a transaction on pair {n} at n{p} answered {first:?} first")
                });
            }
        }
    }

    /// A `WATCH` client on node `at`, on pair `n`'s counter `r`: `WATCH r; GET r` now, and
    /// `MULTI; SET r v+1; EXEC` up to 300 ms later ([`Sim::watch_exec`]) — an increment
    /// by compare-and-set, as redis-py's `transaction` helper runs it, with other clients'
    /// increments of `r` in between. The `GET` is served as the node's read plan serves it
    /// (the first owner `at` reaches that holds the key: possibly a replica that missed a
    /// change), and the watch is of the version it read.
    fn watch_op(&mut self, at: usize, n: u32) {
        let r = PAIRS_FROM + 2 * n;
        let Some(ring_at) = self.ring_of(at) else {
            return;
        };
        let now_at = self.clock_ms(at);
        let plan = self.read_plan(at, &ring_at, &key_bytes(r));
        let mut read = None;
        for name in &plan {
            let Some(o) = self.index_of(name) else {
                continue;
            };
            if o != at && !(self.reachable(at, o) && self.reachable(o, at)) {
                continue;
            }
            if let Some(e) = self.nodes[o].pairs.get(&r).filter(|e| e.is_fresh(now_at)) {
                read = Some(e.clone());
                break;
            }
        }
        let value = read
            .as_ref()
            .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse::<i64>().ok())
            .unwrap_or(0);
        let watched = read.as_ref().map(|e| e.version.as_u64());
        let after = self.watch_rng.random_range(MS..300 * MS);
        let life = self.nodes[at].life;
        self.push(
            after,
            Kind::WatchExec {
                node: at,
                life,
                n,
                value,
                watched,
            },
        );
    }

    /// A `WATCH` client's `EXEC` ([`Sim::watch_op`]) on node `at`. The primary aborts when
    /// the watched version is not its copy's; the owners check the copy it executed from
    /// (decision 96), and a newer one there makes it execute again — and abort. The checker
    /// requires a committed increment to write more than the last acknowledged value
    /// (unless every copy of that was lost, as for counters): a commit over a stale read is
    /// a lost update.
    fn watch_exec(&mut self, at: usize, n: u32, value: i64, watched: Option<u64>) {
        use ops::{Transaction, TxStep};
        let r = PAIRS_FROM + 2 * n;
        let op = ops::MultiOp::Transaction(Transaction {
            keys: vec![key_bytes(r).into()],
            watch: vec![(0, watched)],
            steps: vec![TxStep::Key {
                key: 0,
                op: KeyOp::Set {
                    value: (value + 1).to_string().into_bytes(),
                    ttl: ops::Ttl::Default,
                    exists: ops::Exists::Any,
                    get: false,
                    integer: false,
                },
            }],
            default_ttl_ms: None,
        });
        let Some((p, reply, versions, lost)) = self.execute_multi(at, &[r], &op) else {
            return;
        };
        match reply {
            ops::Reply::Exec(None) => self.watch_ops.1 += 1,
            ops::Reply::Exec(Some(_)) => {
                self.watch_ops.0 += 1;
                if lost {
                    self.pair_acks.remove(&r);
                }
                let wrote = value + 1;
                if let Some(&(last, _)) = self.pair_acks.get(&r)
                    && wrote <= last
                {
                    self.violate(|| {
                        format!(
                            "a WATCH increment of pair {n} at n{p} (asked of n{at}) committed {wrote} after an acknowledged {last}: it watched a stale copy (version {watched:?}) and an acknowledged increment was lost"
                        )
                    });
                }
                self.pair_acks.insert(r, (wrote, versions[0]));
            }
            other => {
                self.violate(|| {
                    format!("a WATCH transaction on pair {n} at n{p} answered {other:?}")
                });
            }
        }
    }

    /// A transaction on pair keys `ids` (one hash slot) asked of node `at`, as the node's
    /// cluster tier runs it: sent to the keys' primary in `at`'s view, executed there if it
    /// is the primary in its own view (quorum, stall guard and lease as for `INCR`), its
    /// changes — and the keys it read without changing, as check-only changes — sent to
    /// every other owner, each of which admits them only from its view's primary and
    /// against bases at least as new as what it holds, all or none; applied at the primary
    /// once every owner did. Answers the primary, the reply, each key's version written (0:
    /// unchanged) and whether the first key's last acknowledged write had lost every copy
    /// (judged before, as for counters); `None` when not acknowledged.
    fn execute_multi(
        &mut self,
        at: usize,
        ids: &[u32],
        op: &ops::MultiOp,
    ) -> Option<(usize, ops::Reply, Vec<u64>, bool)> {
        self.ring_of(at)?;
        let Some((p, ring_p)) = self.admitting_primary(at, &key_bytes(ids[0])) else {
            self.tx_ops.1 += 1;
            return None;
        };
        let name_p = self.nodes[p].name.clone();
        let r = ids[0];
        let lost = self.pair_acks.get(&r).is_some_and(|&(_, v)| {
            !(0..self.nodes.len()).any(|i| {
                self.keeps_copies_for(p, i)
                    && (self.nodes[i]
                        .pairs
                        .get(&r)
                        .is_some_and(|e| e.version.as_u64() >= v)
                        || self.unproven_version(i, 2, r).is_some_and(|u| u >= v))
            })
        });
        let (reply, versions) = self.execute_multi_at(p, ids, op, &ring_p, &name_p)?;
        Some((p, reply, versions, lost))
    }

    /// [`Sim::execute_multi`] at the primary `p`, named `name_p`, with its ring.
    fn execute_multi_at(
        &mut self,
        p: usize,
        ids: &[u32],
        op: &ops::MultiOp,
        ring_p: &Ring,
        name_p: &str,
    ) -> Option<(ops::Reply, Vec<u64>)> {
        let key = key_bytes(ids[0]);
        if debug_counter(ids[0]) {
            let holders: Vec<(usize, u64)> = (0..self.nodes.len())
                .filter_map(|i| {
                    self.nodes[i]
                        .pairs
                        .get(&ids[0])
                        .map(|e| (i, e.version.as_u64()))
                })
                .collect();
            eprintln!(
                "{:.3} pair key {} executed at n{p} (held by {holders:?}), replicas {:?}, previous {:?}",
                self.now as f64 / SEC as f64,
                ids[0],
                decide::replicas(ring_p, name_p, &key, RF),
                self.nodes[p]
                    .previous
                    .iter()
                    .map(|(r, t)| (r.owners(&key, RF).join(","), *t / MS))
                    .collect::<Vec<_>>()
            );
        }
        for _attempt in 0..4 {
            let now_p = self.clock_ms(p);
            let mut current: Vec<Option<Entry>> = Vec::with_capacity(ids.len());
            for &c in ids {
                let local = self.nodes[p]
                    .pairs
                    .get(&c)
                    .filter(|e| e.is_fresh(now_p))
                    .cloned();
                let copy = if local.is_some() {
                    local
                } else {
                    let plan = self.read_plan(p, ring_p, &key_bytes(c));
                    let mut answers = Vec::new();
                    for n in plan.iter().filter(|n| **n != name_p) {
                        let Some(o) = self.index_of(n) else { continue };
                        if !(self.reachable(p, o) && self.reachable(o, p))
                            || self.refuses_unproven(o, 2, c)
                        {
                            self.tx_ops.1 += 1;
                            return None;
                        }
                        answers.push(
                            self.nodes[o]
                                .pairs
                                .get(&c)
                                .filter(|e| e.is_fresh(now_p))
                                .cloned(),
                        );
                    }
                    if debug_counter(c) {
                        let versions: Vec<Option<u64>> = answers
                            .iter()
                            .map(|a| a.as_ref().map(|e| e.version.as_u64()))
                            .collect();
                        let holders: Vec<(usize, u64)> = (0..self.nodes.len())
                            .filter_map(|i| {
                                self.nodes[i].pairs.get(&c).map(|e| (i, e.version.as_u64()))
                            })
                            .collect();
                        eprintln!(
                            "{:.3} pair key {c} plan at n{p}: {plan:?} answers {versions:?}; held by {holders:?}",
                            self.now as f64 / SEC as f64
                        );
                    }
                    let start = decide::starting_point(None, answers);
                    if self.below_unproven(
                        p,
                        2,
                        c,
                        start.as_ref().map_or(0, |e| e.version.as_u64()),
                    ) {
                        self.tx_ops.1 += 1;
                        return None;
                    }
                    start
                };
                if let Some(e) = &copy {
                    self.observe(p, e.version.as_u64());
                }
                current.push(copy);
            }
            let refs: Vec<Option<&Entry>> = current.iter().map(Option::as_ref).collect();
            let limits = OpLimits { max_value: 1 << 20 };
            let (effects, reply) = ops::apply_multi(op, &refs, self.clock_ms(p), limits);
            // Each key's change: an entry written, or (None) the key deleted.
            let mut changes: Vec<(usize, Option<Entry>, u64)> = Vec::new();
            for fx in effects {
                let entry = match fx.effect {
                    Effect::None => continue,
                    Effect::Write { value, ttl, .. } => {
                        let mut e = Entry::new(value, Version::from_u64(self.stamp(p)));
                        if let ops::Ttl::AtMs(t) = ttl {
                            e.expires_at_ms = Some(t);
                        }
                        Some(e)
                    }
                    Effect::Delete => None,
                };
                let version = entry
                    .as_ref()
                    .map_or_else(|| self.stamp(p), |e| e.version.as_u64());
                changes.push((fx.key, entry, version));
            }
            let mut versions = vec![0; ids.len()];
            for (i, _, v) in &changes {
                versions[*i] = *v;
            }
            if changes.is_empty() {
                self.tx_ops.0 += 1;
                return Some((reply, versions));
            }
            // What the owners check: every key changed, and every key read without being
            // changed (unless broken on purpose), against the copy it was executed from.
            let checked: Vec<usize> = (0..ids.len())
                .filter(|i| !self.skip_read_checks || changes.iter().any(|(k, ..)| k == i))
                .collect();
            let base = |i: usize| current[i].as_ref().map_or(0, |e| e.version.as_u64());
            let mut newer: Vec<Option<Entry>> = vec![None; ids.len()];
            let mut failed = false;
            for o_name in decide::replicas(ring_p, name_p, &key, RF) {
                let Some(o) = self.index_of(&o_name) else {
                    continue;
                };
                if !self.replica_takes(p, o, &key, name_p, true)
                    || checked
                        .iter()
                        .any(|&i| self.replica_refuses_unproven(o, 2, ids[i], base(i)))
                {
                    failed = true;
                    continue;
                }
                // Checked key by key before anything is applied: a refusal applies nothing.
                let mut refused = false;
                for &i in &checked {
                    let held = self.nodes[o].pairs.get(&ids[i]);
                    if decide::replica_is_ahead(held, base(i)) {
                        refused = true;
                        if newer[i]
                            .as_ref()
                            .is_none_or(|e| held.is_some_and(|h| h.version > e.version))
                        {
                            newer[i] = held.cloned();
                        }
                    }
                }
                if refused {
                    continue;
                }
                for (i, entry, version) in &changes {
                    self.observe(o, *version);
                    Self::apply_change(&mut self.nodes[o].pairs, ids[*i], entry.as_ref(), *version);
                }
            }
            if failed {
                // Not acknowledged; owners that took it keep it (an unknown outcome).
                self.tx_ops.1 += 1;
                return None;
            }
            if newer.iter().any(Option::is_some) {
                for (i, e) in newer.into_iter().enumerate() {
                    if let Some(e) = e {
                        self.observe(p, e.version.as_u64());
                        self.nodes[p].pairs.insert(ids[i], e);
                    }
                }
                continue;
            }
            for (i, entry, version) in &changes {
                Self::apply_change(&mut self.nodes[p].pairs, ids[*i], entry.as_ref(), *version);
            }
            self.tx_ops.0 += 1;
            return Some((reply, versions));
        }
        self.tx_ops.1 += 1;
        None
    }

    /// A lock client on node `at`: the holder of lock `l` releases it (`DEL`) half the time;
    /// anyone else tries `SET lock token NX PX 3000`. The checker requires that no two
    /// acquisitions overlap: a second one acknowledged before the first was released must
    /// come after its TTL ran out on any node's clock (skew allowed), unless every copy of
    /// the first was lost (more owners crashed or cut off than the replication factor
    /// covers).
    fn lock(&mut self, at: usize, l: u32) {
        let c = LOCKS_FROM + l;
        let now_at = self.clock_ms(at);
        if let Some(hold) = self.lock_holds.get(&l).copied()
            && hold.node == at
            && hold.life == self.nodes[at].life
            && self.incr_rng.random_bool(0.5)
        {
            if self.execute(at, c, &KeyOp::Del).is_some() {
                self.lock_holds.remove(&l);
            }
            return;
        }
        let op = KeyOp::Set {
            value: format!("n{at}@{now_at}").into_bytes(),
            ttl: ops::Ttl::AtMs(now_at + LOCK_TTL_MS),
            exists: ops::Exists::Absent,
            get: false,
            integer: false,
        };
        // Whether every copy of the current hold is gone (crashes, evictions), judged before
        // the attempt overwrites them: from the key's primary in `at`'s view, as the
        // attempt will reach it.
        let holders = |sim: &Self, p: usize, prev: &LockHold| {
            (0..sim.nodes.len()).any(|i| {
                sim.keeps_copies_for(p, i)
                    && sim.nodes[i]
                        .counters
                        .get(&c)
                        .is_some_and(|e| e.version.as_u64() >= prev.version)
            })
        };
        let before: Vec<bool> = match self.lock_holds.get(&l).copied() {
            Some(prev) => (0..self.nodes.len())
                .map(|p| holders(self, p, &prev))
                .collect(),
            None => Vec::new(),
        };
        let Some((p, ops::Reply::Ok, version)) = self.execute(at, c, &op) else {
            return;
        };
        self.lock_ops += 1;
        if let Some(prev) = self.lock_holds.get(&l).copied() {
            let lost = !before.get(p).copied().unwrap_or(false);
            let skew = 2 * self.mix.max_skew_ms * MS + 10 * MS;
            let expired = self.now + skew >= prev.acquired + LOCK_TTL_MS * MS;
            if !lost && !expired {
                let after = (self.now - prev.acquired) as f64 / SEC as f64;
                self.violate(|| {
                    format!(
                        "lock {l}: n{at} acquired it (primary n{p}) {after:.3}s after n{} did, before its TTL ran out or a release",
                        prev.node
                    )
                });
            }
        }
        let life = self.nodes[at].life;
        self.lock_holds.insert(
            l,
            LockHold {
                node: at,
                life,
                acquired: self.now,
                version,
            },
        );
    }

    /// A removal (`DEL`), as the cluster tier's `remove` runs it: at the key's primary in
    /// `at`'s view, if it admits it; every owner in the primary's view that it reaches
    /// removes the key if it holds that version or an older one, `at` drops its own copy,
    /// and the primary originates the key's invalidation.
    fn remove(&mut self, at: usize, key: u32) {
        let Some((p, ring_p)) = self.plain_primary(at, key) else {
            return;
        };
        let owners: Vec<usize> = ring_p
            .owners(&key_bytes(key), RF)
            .into_iter()
            .filter_map(|n| self.index_of(n))
            .collect();
        self.ttl_ops.3 += 1;
        self.nodes[at].copies.remove(&key);
        let reached: Vec<usize> = if self.plain_at_writer {
            owners
                .iter()
                .copied()
                .filter(|&o| o == p || self.reachable(p, o))
                .collect()
        } else {
            owners.clone()
        };
        let version = if self.plain_at_writer {
            let version = self.stamp(p);
            for &o in &reached {
                self.remove_owned(o, key, version);
            }
            version
        } else {
            match self.remove_at(p, &ring_p, key) {
                Some(Removed::Stamped(v)) => v,
                Some(Removed::Skipped(v)) => {
                    // Broken on purpose: the client has its `0`, and the checker holds the
                    // removal to the contract as if it had been announced at `v`.
                    self.skipped_removals.insert((key, v));
                    if !self.cut_off(at) && !self.cut_off(p) {
                        self.invalidations.push((self.now, key, v));
                        let life = self.nodes[at].life;
                        self.acked.insert((at, key), (life, v));
                    }
                    return;
                }
                None => {
                    self.plain_refused += 1;
                    return;
                }
            }
        };
        self.debug_key(key, || {
            format!(
                "n{at} removes version {version} at n{p} (owners {owners:?}, reached {reached:?})"
            )
        });
        if !self.cut_off(at) && !self.cut_off(p) && !reached.iter().any(|&o| self.cut_off(o)) {
            self.invalidations.push((self.now, key, version));
            let life = self.nodes[at].life;
            self.acked.insert((at, key), (life, version));
        }
        let op = InvalidationOp::Key {
            namespace: "ns".into(),
            key: key_bytes(key),
        };
        self.observe(at, version);
        self.originate(p, version, op, false);
    }

    /// An owner applies a removal of `key` at `version`, as the node's
    /// `Shared::remove_owned` does: older copies are refused from now on, also where there
    /// was nothing to remove. (This model's removal and its origin's invalidation happen at
    /// once, so it cannot show the window the node has between them.)
    fn remove_owned(&mut self, o: usize, key: u32, version: u64) {
        self.observe(o, version);
        let now_ms = self.now / MS;
        if let Some(c) = self.nodes[o].coherence.as_mut() {
            c.note_removed("ns", &key_bytes(key), version, now_ms);
        }
        if self.nodes[o]
            .store
            .get(&key)
            .is_some_and(|h| h.version <= version)
        {
            self.nodes[o].store.remove(&key);
        }
    }

    /// A plain `DEL` of `key` at its primary `p`, as the node's `execute_locked` runs one:
    /// against its own copy, else — where `decide::reads_before_put` says so, as for a
    /// plain `SET` — the newest the read plan's members hold (one that cannot be asked
    /// refuses it; without the read, the replication finds the replica's copy); stamped there — whether or not a copy was found (a key its
    /// owners evicted may still have copies elsewhere, which only the announcement
    /// reaches); replicated to every other owner as [`Sim::put_at`] replicates a write
    /// (fencing, and a newer copy held there makes the primary adopt it and execute again);
    /// applied at the primary once every owner did. The removal's version, or `None` when
    /// it was refused (`TRYAGAIN`).
    fn remove_at(&mut self, p: usize, ring_p: &Ring, key: u32) -> Option<Removed> {
        let kb = key_bytes(key);
        let name_p = self.nodes[p].name.clone();
        let replicas = decide::replicas(ring_p, &name_p, &kb, RF);
        let mut adopted: Option<Held> = None;
        for _attempt in 0..4 {
            let (current, floor) = match adopted.take() {
                Some(h) => (Some(h), 0),
                None => match self.nodes[p].store.get(&key).copied() {
                    Some(h) if self.fresh(p, h.expires_at) => (Some(h), 0),
                    _ => {
                        let plan = self.read_plan(p, ring_p, &kb);
                        let others: Vec<&str> = plan
                            .iter()
                            .map(String::as_str)
                            .filter(|n| *n != name_p)
                            .collect();
                        // As a plain `SET`'s: the replication finds the replica's copy
                        // (the switch's protocol, from before decision 101, read first).
                        if self.skip_absent_removals || decide::reads_before_put(&others, &replicas)
                        {
                            self.base_copy(p, &others, key)?
                        } else {
                            (None, 0)
                        }
                    }
                },
            };
            let base = current.map_or(0, |h| h.version).max(floor);
            self.observe(p, base);
            let version = self.stamp(p);
            if current.is_none() && self.skip_absent_removals {
                self.plain_evictions.1 += 1;
                return Some(Removed::Skipped(version));
            }
            let mut failed = false;
            let mut newer: Option<Held> = None;
            for r in &replicas {
                let Some(o) = self.index_of(r) else { continue };
                if !self.replica_takes(p, o, &kb, &name_p, !self.replicas_admit_all)
                    || self.replica_refuses_unproven(o, 0, key, base)
                {
                    failed = true;
                    continue;
                }
                if !self.replicas_admit_all && !self.skip_version_check {
                    let there = self.nodes[o].store.get(&key).copied();
                    if let Some(h) = there.filter(|h| h.version > base) {
                        newer = Some(h);
                        continue;
                    }
                }
                self.remove_owned(o, key, version);
            }
            if failed {
                return None;
            }
            if let Some(h) = newer {
                self.observe(p, h.version);
                adopted = Some(h);
                continue;
            }
            self.remove_owned(p, key, version);
            if current.is_none() {
                self.plain_evictions.1 += 1;
            }
            return Some(Removed::Stamped(version));
        }
        None
    }

    /// `at` stamps and disseminates an invalidation; a strict one is also applied at once
    /// by every member `at` reaches (the `Apply` RPC of pattern and flush invalidations).
    /// Returns, for a strict one, whether every live member confirmed it (else the client
    /// gets an error: the invalidation is not acknowledged).
    fn originate(&mut self, at: usize, version: u64, op: InvalidationOp, strict: bool) -> bool {
        let now_ms = self.now / MS;
        // The node's own store may hold an older value of a key it no longer owns; its own
        // invalidation never comes back to it, so `originate` drops it (seed 283).
        if let InvalidationOp::Key { key, .. } = &op
            && let Some(k) = key_id(key)
            && self.nodes[at]
                .store
                .get(&k)
                .is_some_and(|h| h.version < version)
        {
            self.nodes[at].store.remove(&k);
        }
        let Some((inv, out)) = self.nodes[at]
            .coherence
            .as_mut()
            .map(|c| c.originate(now_ms, version, op))
        else {
            return false;
        };
        let mut confirmed = true;
        if strict {
            self.apply_invalidation(at, &inv, false);
            for j in 0..self.nodes.len() {
                if j == at || self.nodes[j].membership.is_none() || self.nodes[j].intruder {
                    continue;
                }
                let delivered = self.reachable(at, j) && !self.wrng.random_bool(self.loss);
                confirmed &= delivered;
                if delivered {
                    // As the node's strict `Apply`: refused first, then applied.
                    if let Some(c) = self.nodes[j].coherence.as_mut() {
                        c.note_invalidation(&inv, now_ms);
                    }
                    self.apply_invalidation(j, &inv, false);
                    let item = coherence::Item::Invalidation(inv.clone());
                    let out = self.nodes[j]
                        .coherence
                        .as_mut()
                        .map(|c| c.receive_item(now_ms, item))
                        .unwrap_or_default();
                    self.apply_coherence(j, out);
                }
            }
        }
        self.apply_coherence(at, vec![out]);
        confirmed
    }

    /// A namespace flush (`kind` 0), a pattern invalidation (`k1*`: keys 1 and 10–19;
    /// `kind` 1 or 2) or a tag invalidation (`kind` 3) from `at`:
    /// strict, like the cluster tier's.
    fn invalidate_many(&mut self, at: usize, kind: u32) {
        let version = self.stamp(at);
        let (op, matches): (InvalidationOp, Vec<u32>) = if kind == 3 {
            let tag = tag_of(self.wrng.random_range(0..KEYS)).to_vec();
            let matches = (0..KEYS).filter(|k| tag_of(*k) == tag.as_slice()).collect();
            (
                InvalidationOp::Tag {
                    namespace: "ns".into(),
                    tag,
                },
                matches,
            )
        } else if kind == 0 {
            (
                InvalidationOp::Flush {
                    namespace: "ns".into(),
                },
                (0..KEYS).collect(),
            )
        } else {
            (
                InvalidationOp::Pattern {
                    namespace: "ns".into(),
                    pattern: b"k1*".to_vec(),
                },
                (0..KEYS)
                    .filter(|k| key_bytes(*k).starts_with(b"k1"))
                    .collect(),
            )
        };
        self.ops.2 += 1;
        // Acknowledged only when every live member confirmed it (the cluster tier returns
        // an error otherwise); the contract covers acknowledged invalidations.
        if self.originate(at, version, op, true) && !self.cut_off(at) {
            for k in matches {
                self.invalidations.push((self.now, k, version));
            }
        }
    }

    /// A read: `at`'s own copy or owner store, else the read plan (owners, then previous
    /// owners inside the hand-off window) as the cluster tier walks it.
    fn read(&mut self, at: usize, key: u32, ring: &Ring) {
        let kb = key_bytes(key);
        let owns = ring.owners(&kb, RF).contains(&self.nodes[at].name.as_str());
        let local = if owns {
            self.nodes[at].store.get(&key).copied()
        } else if self.nodes[at].unverified {
            None
        } else {
            self.nodes[at].copies.get(&key).map(|c| Held {
                version: c.version,
                expires_at: c.expires_at,
            })
        };
        let mut expired = false;
        if let Some(held) = local {
            if self.fresh(at, held.expires_at) {
                self.ops.0 += 1;
                self.check_served(at, key, held);
                return;
            }
            // Expired: a miss here, and the read goes on to the owners.
            expired = true;
        }
        let plan = self.read_plan(at, ring, &kb);
        let current = placement::current_owners(ring, RF);
        for (i, name) in plan.iter().enumerate() {
            let Some(o) = self.index_of(name) else {
                continue;
            };
            if o == at || !self.reachable(at, o) {
                continue;
            }
            // The owner has no value, or only an expired one (its store's `get` on its own
            // clock): ask the next (all miss: the client would load it).
            let Some(held) = self.nodes[o].store.get(&key).copied() else {
                continue;
            };
            let version = held.version;
            // The owner's store serves only fresh entries, on its clock; the reader checks
            // again on its own (the cluster tier's `fetch`).
            if !self.fresh(o, held.expires_at) || !self.fresh(at, held.expires_at) {
                expired = true;
                continue;
            }
            // G3: a copy older than an invalidation this node has seen is refused.
            if !self.nodes[at]
                .coherence
                .as_ref()
                .is_some_and(|c| c.admits_tagged("ns", &kb, version, &[tag_of(key)]))
            {
                continue;
            }
            self.ops.1 += 1;
            self.observe(at, version);
            self.debug_key(key, || format!("n{at} reads from n{o} version {version}"));
            self.check_served(at, key, held);
            let copy = self.copy_from(o, held);
            let seq = self.nodes[o]
                .coherence
                .as_ref()
                .map_or(0, Coherence::latest_seq);
            if let Some(c) = self.nodes[at].coherence.as_mut() {
                c.note_read(&copy.origin, copy.generation, seq);
            }
            let me = plan.iter().position(|n| *n == self.nodes[at].name);
            // The node also pauses its own read repair while a warm restart's proof settles.
            let settling = self.nodes[at].settling;
            match placement::read_repair(current, i, me, settling) {
                placement::Repair::Owners => {
                    // A hand-off read: the current owners get the value (held unproven by
                    // one that settles, itself included: the node's `note_push`).
                    for n in &plan[..current.min(plan.len())] {
                        if let Some(t) = self.index_of(n)
                            && (t == at || self.reachable(at, t))
                            && self.push_to(t, key, &Pushed::Plain(held), false)
                            && t != at
                        {
                            // A `Set` to another member, which passes on what it does not
                            // own (the node's `forward_misplaced`).
                            self.forward_misplaced(t, key, Pushed::Plain(held));
                        }
                    }
                }
                // Read repair of this node's own store.
                placement::Repair::Own => {
                    self.owner_set(at, key, held);
                }
                placement::Repair::None => {}
            }
            if !owns {
                self.nodes[at].copies.insert(key, copy);
            }
            return;
        }
        if expired {
            self.ttl_ops.2 += 1;
        }
    }

    /// G2/G3 on the copies: no node holds a copy older than an invalidation of its key made
    /// more than `STALENESS_BOUND` ago.
    fn check_copies(&self, during_run: bool) -> Result<(), String> {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.membership.is_none() || n.unverified {
                // Unproven warm-restart copies are not served.
                continue;
            }
            // During the run, only what a read would serve: a node's reads of a key it owns
            // go to its owner store, never to a copy it kept (a warm restart's, proven,
            // of a key the ring has since given it).
            let ring = during_run.then(|| self.ring_of(i)).flatten();
            for (key, copy) in &n.copies {
                // An expired copy is never served (G4): holding it is no violation.
                if !self.fresh(i, copy.expires_at) {
                    continue;
                }
                if ring
                    .as_ref()
                    .is_some_and(|r| r.owners(&key_bytes(*key), RF).contains(&n.name.as_str()))
                {
                    continue;
                }
                if let Some((t, _, v)) = self.invalidations.iter().find(|(t, k, v)| {
                    k == key && *v > copy.version && t + STALENESS_BOUND <= self.now
                }) {
                    let c = n.coherence.as_ref().map(|c| (c.stats(), c.in_sync()));
                    let m = n.membership.as_ref().map(|m| m.stats());
                    if self.debug_key.is_some() {
                        let own = n.membership.as_ref().map(|m| m.identity().generation);
                        eprintln!("  {} is generation {own:?}; the others see it as:", n.name);
                        for o in &self.nodes {
                            if let Some(m) = o.membership.as_ref() {
                                let seen: Vec<_> = m
                                    .member_states()
                                    .into_iter()
                                    .filter(|(id, _)| id.name == n.name)
                                    .map(|(id, st)| (id.generation, st))
                                    .collect();
                                eprintln!("    {}: {seen:?}", o.name);
                            }
                        }
                        for o in &self.nodes {
                            let st = n.coherence.as_ref().map(|c| c.peer_state(&o.name));
                            eprintln!("  {} knows of {}: {st:?}", n.name, o.name);
                        }
                    }
                    return Err(format!(
                        "{} holds a stale copy of key {key} (version {}, from {} gen {}); it was invalidated at {:.3}s by version {v}{} [coherence {c:?}, membership {m:?}]",
                        n.name,
                        copy.version,
                        copy.origin,
                        copy.generation,
                        *t as f64 / SEC as f64,
                        self.skipped(*key, *v)
                    ));
                }
            }
            // Owner stores are served too: an owner that missed a write (unreachable, or an
            // owner under another view) must have dropped its older value by now.
            for (key, held) in &n.store {
                let version = &held.version;
                if !self.fresh(i, held.expires_at) {
                    continue;
                }
                if let Some((t, _, v)) = self
                    .invalidations
                    .iter()
                    .find(|(t, k, v)| k == key && *v > *version && t + STALENESS_BOUND <= self.now)
                {
                    return Err(format!(
                        "{} holds a stale owner entry of key {key} (version {version}); it was invalidated at {:.3}s by version {v}{}",
                        n.name,
                        *t as f64 / SEC as f64,
                        self.skipped(*key, *v)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Schedules the bootstrap and the drawn faults.
    fn plan(&mut self) {
        let n = self.mix.nodes;
        let skew = self.mix.max_skew_ms as i64 * MS as i64;
        for node in &mut self.nodes {
            node.offset = if skew > 0 {
                self.wrng.random_range(-skew..=skew)
            } else {
                0
            };
        }
        // Bootstrap: the seeds first, then everyone within two seconds (the intruder too).
        for i in 0..self.nodes.len() {
            let at = if i < self.seeds.len() {
                i as u64 * MS
            } else {
                self.rng.random_range(10 * MS..2 * SEC)
            };
            self.push(at, Kind::Restart(i));
        }
        let fault_start = 5 * SEC;
        let fault_end = fault_start + self.mix.fault_secs * SEC;
        let mut victims: Vec<usize> = (0..n).collect();
        // Fisher–Yates with the sim's RNG (deterministic).
        for i in (1..victims.len()).rev() {
            let j = self.rng.random_range(0..=i);
            victims.swap(i, j);
        }
        let crashes = self.mix.crashes.min(n.saturating_sub(1));
        for (k, &v) in victims.iter().take(crashes).enumerate() {
            let at = self.rng.random_range(fault_start..fault_end);
            self.push(at, Kind::Crash(v));
            if k < self.mix.stay_dead {
                self.nodes[v].expected_up = false;
            } else if self.rng.random_bool(0.5) {
                // Some come back during the fault phase; the rest at heal.
                let back = self.rng.random_range(at..fault_end.max(at + 1));
                self.push(back, Kind::Restart(v));
            }
        }
        let mut first_leave = None;
        for &v in victims.iter().skip(crashes).take(self.mix.leaves) {
            let drawn = self.rng.random_range(fault_start..fault_end);
            let at = if self.leaves_together {
                *first_leave.get_or_insert(drawn)
            } else {
                drawn
            };
            self.push(at, Kind::Leave(v));
            let back = self.rng.random_range(at..fault_end.max(at + 1));
            self.push(back, Kind::Restart(v));
        }
        if self.mix.partition && n >= 2 {
            let at = self.rng.random_range(fault_start..fault_end);
            self.push(at, Kind::Partition);
        }
        if !self.membership_only && self.pause_rng.random_bool(0.5) {
            // Mostly the primary of counter 0 (in the ring of every node), so that a
            // paused primary waking up on its stale view is exercised often.
            let v = if self.pause_rng.random_bool(0.8) {
                let all = Ring::new(
                    self.nodes[..n].iter().map(|x| x.name.clone()),
                    DEFAULT_VNODES,
                );
                decide::primary(&all, &key_bytes(0))
                    .and_then(|p| self.index_of(p))
                    .unwrap_or(0)
            } else {
                self.pause_rng.random_range(0..n)
            };
            let at = self.pause_rng.random_range(fault_start..fault_end);
            // Over before the heal, so that the liveness phase starts from resumed nodes.
            let len = self
                .pause_rng
                .random_range(4 * SEC..15 * SEC)
                .min(fault_end.saturating_sub(at + SEC).max(SEC));
            self.push(at, Kind::Pause(v, len));
        }
        // Flapping cuts (a partition review, 2026-12-06; `RunOptions::flaps`): one member at
        // a time cut off from all others for 1–3 s, then mended for 1–3 s, through part of
        // the fault phase.
        // Suspicions raised in the cuts ran out into `Down`s of live members after each
        // heal, and two owners of the same keys rejoining without their leases dropped
        // them (`Silences`).
        if self.flaps && !self.membership_only && !self.mix.partition && n >= 3 {
            let mut t = self.flap_rng.random_range(fault_start..fault_end);
            while t + SEC < fault_end {
                let node = self.flap_rng.random_range(0..n);
                let len = self.flap_rng.random_range(SEC..3 * SEC);
                let one_way = self.flap_rng.random_bool(0.3);
                self.push(t, Kind::Cut { node, len, one_way });
                t += len + self.flap_rng.random_range(SEC..3 * SEC);
            }
        }
        // The workload: each node with clients (all, unless limited for a scale run) serves
        // a client operation every 50–350 ms until the heal.
        for i in 0..n.min(self.clients) {
            let mut t = 2 * SEC + self.wrng.random_range(0..300 * MS);
            while t < fault_end {
                self.push(t, Kind::Op(i));
                t += self.wrng.random_range(50 * MS..350 * MS);
            }
        }
        self.push(fault_end, Kind::Heal);
    }

    fn partition(&mut self) {
        self.partitioned = true;
        let n = self.mix.nodes;
        let cut = self.rng.random_range(1..n);
        let one_way = self.mix.one_way;
        for a in 0..cut {
            for b in cut..n {
                self.blocked.insert((a, b));
                if !one_way {
                    self.blocked.insert((b, a));
                }
            }
        }
        self.note(|| {
            format!(
                "partition at {cut}{}",
                if one_way { " (one-way)" } else { "" }
            )
        });
    }

    /// A flapping link cuts node `v` off from every other node (`one_way`: only what
    /// they send it is lost) for `len` µs.
    fn cut(&mut self, v: usize, len: u64, one_way: bool) {
        // No staleness bound holds across a partition, short ones included.
        self.partitioned = true;
        for j in 0..self.mix.nodes {
            if j != v {
                self.blocked.insert((j, v));
                if !one_way {
                    self.blocked.insert((v, j));
                }
            }
        }
        self.push(len, Kind::Mend(v));
        self.note(|| {
            format!(
                "n{v} cut off for {:.1}s{}",
                len as f64 / SEC as f64,
                if one_way { " (one-way)" } else { "" }
            )
        });
    }

    fn heal(&mut self) {
        self.blocked.clear();
        self.loss = 0.0;
        self.duplication = 0.0;
        for i in 0..self.nodes.len() {
            if self.nodes[i].membership.is_none() && self.nodes[i].expected_up {
                self.start_node(i);
            }
        }
        self.healed_at = Some(self.now);
        self.note(|| "heal: network repaired, crashed nodes restarted".into());
        self.push(100 * MS, Kind::Check);
    }

    /// Whether every live node sees exactly the live set and computes the same ring.
    fn converged(&self) -> Result<(), String> {
        let expected: BTreeSet<&str> = self
            .nodes
            .iter()
            .filter(|n| n.membership.is_some() && !n.intruder)
            .map(|n| n.name.as_str())
            .collect();
        for n in self.nodes.iter().filter(|n| n.intruder) {
            if let Some(m) = &n.membership
                && m.num_live() != 1
            {
                return Err(format!("the intruder {} got a view of the cluster", n.name));
            }
        }
        let mut ring_version = None;
        // Cheap first: every node must count the right number of members.
        for n in self.nodes.iter().filter(|n| !n.intruder) {
            if let Some(m) = &n.membership
                && m.num_live() != expected.len()
            {
                return Err(format!(
                    "{} counts {} live members, expected {}",
                    n.name,
                    m.num_live(),
                    expected.len()
                ));
            }
        }
        for n in self.nodes.iter().filter(|n| !n.intruder) {
            let Some(m) = &n.membership else { continue };
            let live = m.live();
            let seen: BTreeSet<&str> = live.iter().map(|id| id.name.as_str()).collect();
            if seen != expected {
                let missing: Vec<_> = expected.difference(&seen).collect();
                let extra: Vec<_> = seen.difference(&expected).collect();
                let about: Vec<String> = m
                    .member_states()
                    .into_iter()
                    .filter(|(id, _)| missing.iter().chain(extra.iter()).any(|x| **x == id.name))
                    .map(|(id, st)| format!("{} gen {} {st:?}", id.name, id.generation))
                    .collect();
                let their: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|o| missing.iter().any(|x| **x == o.name))
                    .filter_map(|o| {
                        o.membership.as_ref().map(|om| {
                            format!(
                                "{} (gen {}) sees {} members",
                                o.name,
                                om.identity().generation,
                                om.live().len()
                            )
                        })
                    })
                    .collect();
                return Err(format!(
                    "{} sees {} members (missing {missing:?}, extra {extra:?}; its states of them: {about:?}; {their:?})",
                    n.name,
                    seen.len()
                ));
            }
            // The ring each node itself computes (node code, not the checker's).
            let v = m.ring(strata_cluster::DEFAULT_VNODES).version();
            if *ring_version.get_or_insert(v) != v {
                return Err(format!("{} computes another ring", n.name));
            }
        }
        Ok(())
    }

    /// Runs to convergence or to the liveness bound.
    pub fn run(mut self, seed: u64, bound: Duration) -> Report {
        let wall = Instant::now();
        self.plan();
        let bound_us = bound.as_micros() as u64;
        let mut result: Option<Result<Duration, String>> = None;
        while let Some(Reverse((at, _, slot))) = self.queue.pop() {
            self.now = at;
            self.events += 1;
            let Some(kind) = self.slots[slot as usize].take() else {
                continue;
            };
            self.free.push(slot);
            // A paused node handles nothing: its events wait for it to resume.
            if let Some(node) = kind.node()
                && let Some(until) = self.nodes[node].paused_until
            {
                if self.now < until {
                    // The worst order on waking: the clients' requests are handled before the
                    // packets and timers that would tell the node what it missed.
                    let lag = if matches!(kind, Kind::Op(_)) {
                        0
                    } else {
                        5 * MS
                    };
                    self.push(until - self.now + lag, kind);
                    continue;
                }
                self.nodes[node].paused_until = None;
            }
            match kind {
                Kind::Pause(i, len) => {
                    if self.nodes[i].membership.is_some() {
                        self.nodes[i].paused_until = Some(self.now + len);
                        // A paused node cannot hear invalidations, and until its first tick
                        // after it resumes it does not know it missed them: to it a pause is
                        // a partition, and no staleness bound holds across one
                        // (docs/semantics.md). Reads are checked until a pause starts.
                        self.partitioned = true;
                        self.note(|| format!("n{i} pauses for {:.1}s", len as f64 / SEC as f64));
                        if std::env::var_os("SIM_DEBUG_C").is_some() {
                            eprintln!(
                                "{:.3} n{i} pauses for {:.1}s",
                                self.now as f64 / SEC as f64,
                                len as f64 / SEC as f64
                            );
                        }
                    }
                }
                Kind::Deliver { to, packet } => {
                    if let Some(m) = self.nodes[to].membership.as_mut() {
                        let before = m.stats().rejected_packets;
                        let out = m.handle_packet(&packet);
                        if m.stats().rejected_packets > before {
                            self.packets.2 += 1;
                        }
                        self.apply(to, out);
                    }
                }
                Kind::Timer { node, life, timer } => {
                    if self.nodes[node].life == life
                        && let Some(m) = self.nodes[node].membership.as_mut()
                    {
                        let out = m.handle_timer(timer);
                        self.apply(node, out);
                    }
                }
                Kind::Crash(i) => {
                    if self.nodes[i].membership.take().is_some() {
                        self.nodes[i].life += 1;
                        self.note(|| format!("crash n{i}"));
                    }
                }
                Kind::Leave(i) => {
                    if self.nodes[i].membership.is_some() {
                        self.hand_off_leaving(i);
                    }
                    if let Some(m) = self.nodes[i].membership.take() {
                        self.nodes[i].life += 1;
                        let out = m.leave();
                        self.note(|| format!("n{i} leaves"));
                        self.apply(i, out);
                    }
                }
                Kind::Restart(i) => {
                    if self.nodes[i].membership.is_none() && self.healed_at.is_none() {
                        self.start_node(i);
                    }
                }
                Kind::Op(i) => self.op(i),
                Kind::WatchExec {
                    node,
                    life,
                    n,
                    value,
                    watched,
                } => {
                    // A client whose node crashed meanwhile lost its connection.
                    if self.nodes[node].life == life && self.nodes[node].membership.is_some() {
                        self.watch_exec(node, n, value, watched);
                    }
                }
                Kind::Warm {
                    node,
                    life,
                    stage,
                    run,
                } => {
                    if self.nodes[node].life == life
                        && self.nodes[node].warm_run == run
                        && self.nodes[node].membership.is_some()
                    {
                        self.warm_step(node, stage);
                    }
                }
                Kind::Tick { node, life, n } => {
                    // Every copy a member holds is one its next read serves: once a second,
                    // until a partition or a pause starts, each is held to the bound as a
                    // read of it would be (G2/G3), not only at the end of the run.
                    if !self.partitioned && self.now >= self.next_copies_check {
                        self.next_copies_check = self.now + SEC;
                        if let Err(e) = self.check_copies(true) {
                            self.violate(|| e);
                        }
                    }
                    if self.nodes[node].life == life && self.nodes[node].membership.is_some() {
                        let now_ms = self.now / MS;
                        let was = self.nodes[node].stall.stalls();
                        self.nodes[node].stall.tick(now_ms);
                        let expected = self.mix.nodes;
                        self.nodes[node].lease.observe(now_ms, expected);
                        if self.nodes[node].stall.stalls() > was {
                            if let Some(c) = self.nodes[node].coherence.as_mut() {
                                c.note_stall();
                            }
                            // As the node's tick: any suspicion raised during the stall is
                            // refuted at once (`Membership::refute_after_stall`).
                            if let Some(m) = self.nodes[node].membership.as_mut() {
                                let out = m.refute_after_stall();
                                self.apply(node, out);
                            }
                        }
                        let mut out = Vec::new();
                        if let Some(c) = self.nodes[node].coherence.as_mut() {
                            out = c.tick(now_ms);
                            if n % 5 == 0
                                && let coherence::Output::Broadcast(hb) = c.heartbeat()
                                && let Some(m) = self.nodes[node].membership.as_mut()
                            {
                                // Heartbeats ride on regular gossip, as on the node.
                                m.broadcast(&hb);
                            }
                        }
                        self.apply_coherence(node, out);
                        if n % 5 == 2 {
                            self.pull_heartbeat(node);
                        }
                        if n % (decide::Lease::PING_EVERY_MS / 100) == 0 {
                            self.renew_lease(node);
                        }
                        self.push(
                            100 * MS,
                            Kind::Tick {
                                node,
                                life,
                                n: n + 1,
                            },
                        );
                    }
                }
                Kind::Repaired { to, life, items } => {
                    if self.nodes[to].life == life {
                        let now_ms = self.now / MS;
                        let mut out = Vec::new();
                        if let Some(c) = self.nodes[to].coherence.as_mut() {
                            for inv in items {
                                out.extend(
                                    c.receive_item(now_ms, coherence::Item::Invalidation(inv)),
                                );
                            }
                        }
                        self.apply_coherence(to, out);
                    }
                }
                Kind::FinalCheck => {
                    let healed = self.healed_at.unwrap_or(self.now);
                    let converged = self.converged.unwrap_or(self.now);
                    let served = self.violation.take().map_or(Ok(()), Err);
                    result = Some(match served.and_then(|()| self.check_copies(false)) {
                        Ok(()) => Ok(Duration::from_micros(converged - healed)),
                        Err(e) => Err(format!("contract: {e}")),
                    });
                    break;
                }
                Kind::Partition => self.partition(),
                Kind::Cut { node, len, one_way } => self.cut(node, len, one_way),
                Kind::HandOff {
                    node,
                    life,
                    old,
                    new,
                } => {
                    if self.nodes[node].life == life && self.nodes[node].membership.is_some() {
                        self.hand_off(node, &old, &new, true);
                    }
                }
                Kind::Mend(v) => {
                    self.blocked.retain(|&(a, b)| a != v && b != v);
                    self.note(|| format!("n{v}'s cut mended"));
                }
                Kind::Heal => self.heal(),
                Kind::Check => {
                    let healed = self.healed_at.unwrap_or(self.now);
                    match self.converged() {
                        Ok(()) => {
                            self.converged = Some(self.now);
                            self.push(SETTLE, Kind::FinalCheck);
                        }
                        Err(why) => {
                            if self.now - healed > bound_us {
                                result = Some(Err(format!(
                                    "no convergence {}s after heal: {why}",
                                    bound.as_secs()
                                )));
                                break;
                            }
                            self.push(100 * MS, Kind::Check);
                        }
                    }
                }
            }
        }
        let rejoins = self
            .nodes
            .iter()
            .filter_map(|n| n.membership.as_ref())
            .map(|m| m.stats().rejoins)
            .sum();
        Report {
            rejoins,
            seed,
            mix: self.mix.clone(),
            result: result.unwrap_or_else(|| Err("the event queue ran dry".into())),
            events: self.events,
            wall: wall.elapsed(),
            packets: self.packets,
            trace: self.trace.into_iter().collect(),
            workload: Workload {
                local_reads: self.ops.0,
                remote_reads: self.ops.1,
                writes: self.ops.2,
                ttl_writes: self.ttl_ops.0,
                refused_ttl: self.ttl_ops.1,
                expired_misses: self.ttl_ops.2,
                removals: self.ttl_ops.3,
                plain_refused: self.plain_refused,
                incrs: self.incr_ops.0,
                incrs_refused: self.incr_ops.1,
                locks: self.lock_ops,
                transactions: self.tx_ops,
                watches: self.watch_ops,
                evictions: self.evictions,
                plain_evictions: self.plain_evictions,
                pushed_proven: self.pushed_proven,
            },
            clients: (self.clients < self.mix.nodes).then_some(self.clients),
        }
    }
}

/// The default liveness bound: 60 s of simulated time, plus 0.6 s per node beyond 100.
/// SWIM learns of a member through probes and piggybacked updates; a node that missed every
/// copy of a join learns it from a random member's feed (every 5 s, about 25 identities
/// per packet), so the tail of convergence grows with the cluster (measured in
/// docs/simulation.md).
pub fn default_bound(nodes: usize) -> Duration {
    Duration::from_secs(60 + (nodes.saturating_sub(100) as u64 * 3) / 5)
}

/// Every entry of key `k` carries one tag, `t0`..`t3` (`k % 4`), for tag invalidations.
fn tag_of(key: u32) -> &'static [u8] {
    [b"t0", b"t1", b"t2", b"t3"][(key % 4) as usize]
}

fn key_bytes(key: u32) -> Vec<u8> {
    if key >= PAIRS_FROM {
        let n = key - PAIRS_FROM;
        let side = if n % 2 == 0 { 'r' } else { 'w' };
        return format!("{{p{}}}{side}", n / 2).into_bytes();
    }
    format!("k{key}").into_bytes()
}

fn key_id(bytes: &[u8]) -> Option<u32> {
    std::str::from_utf8(bytes.strip_prefix(b"k")?)
        .ok()?
        .parse()
        .ok()
}

/// Runs `seed` with `opts`.
pub fn run_seed(seed: u64, opts: &RunOptions) -> Report {
    let sim = Sim::new(seed, opts);
    let bound = opts
        .liveness_bound
        .unwrap_or_else(|| default_bound(sim.mix.nodes));
    sim.run(seed, bound)
}

/// Re-runs a failing seed with fewer faults and fewer nodes while it still fails, and
/// returns the smallest failing mix found (with its report).
pub fn shrink(seed: u64, opts: &RunOptions, failing: &Report) -> Report {
    let mut best = failing.clone();
    let mut mix = failing.mix.clone();
    let mut clients = opts.clients;
    let still_fails = |mix: &FaultMix, clients: Option<usize>| {
        let o = RunOptions {
            mix: Some(mix.clone()),
            clients,
            ..opts.clone()
        };
        let r = run_seed(seed, &o);
        r.result.is_err().then_some(r)
    };
    let candidates: Vec<fn(&mut FaultMix)> = vec![
        |m| m.loss = 0.0,
        |m| m.duplication = 0.0,
        |m| m.leaves = 0,
        |m| {
            m.crashes = 0;
            m.stay_dead = 0
        },
        |m| m.partition = false,
        |m| m.max_delay_ms = 5,
        |m| m.max_skew_ms = 0,
    ];
    for c in candidates {
        let mut tried = mix.clone();
        c(&mut tried);
        if tried != mix
            && let Some(r) = still_fails(&tried, clients)
        {
            mix = tried;
            best = r;
        }
    }
    // A shorter fault phase: fewer events before the failure, a shorter trace to read.
    while mix.fault_secs > 5 {
        let mut tried = mix.clone();
        tried.fault_secs = (mix.fault_secs / 2).max(5);
        match still_fails(&tried, clients) {
            Some(r) => {
                mix = tried;
                best = r;
            }
            None => break,
        }
    }
    while mix.nodes > 2 {
        let mut tried = mix.clone();
        tried.nodes = (mix.nodes / 2).max(2);
        tried.crashes = tried.crashes.min(tried.nodes - 1);
        tried.stay_dead = tried.stay_dead.min(tried.crashes);
        tried.leaves = tried.leaves.min(tried.nodes - 1);
        match still_fails(&tried, clients) {
            Some(r) => {
                mix = tried;
                best = r;
            }
            None => break,
        }
    }
    // Fewer clients: fewer operations in the trace, down to one node serving them.
    loop {
        let now = clients.unwrap_or(mix.nodes).min(mix.nodes);
        if now <= 1 {
            break;
        }
        let tried = Some(now / 2);
        match still_fails(&mix, tried) {
            Some(r) => {
                clients = tried;
                best = r;
            }
            None => break,
        }
    }
    best
}

/// Whether `SIM_DEBUG_C` names counter (or lock, or pair key) `c`: its executions are traced.
fn debug_counter(c: u32) -> bool {
    std::env::var("SIM_DEBUG_C")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        == Some(c)
}
