//! The cluster runtime: the I/O around `strata-cluster`'s sans-IO state machines.
//!
//! - **Gossip** (UDP, every packet sealed with the cluster secret): a receive task feeds
//!   packets to `Membership`, a timer task fires the timers it asks for, and what it
//!   outputs is carried out here (packets sent, members up and down, coherence items).
//! - **Coherence**: invalidations originated on this node are batched by a disseminator
//!   task and sent as foca custom broadcasts with a gossip round at once (or, under load,
//!   pushed over the peer connections); received ones are applied in sequence order by an
//!   applier task to the owner store and to the node's own copies (L1, L3).
//! - **Peer RPC** (TCP, `peer`): owner reads and writes, gap repair, strict
//!   invalidations and the anti-entropy ping.
//! - **The owner store**: a memory tier holding the keys this node owns; the cluster L2
//!   tier (`tier::ClusterTier`) reads and writes the owners of each key.
//!
//! The L2 layer actor runs all of it: its hook (`ClusterHook`) starts the tasks, and its
//! 100 ms maintenance tick drives coherence (gap repair, heartbeats, the anti-entropy pull),
//! refreshes the ring and sweeps the owner store. A restarted actor restarts the tasks;
//! the state (membership, coherence, sockets) lives on in `Shared`.
//!
//! By concern: this file holds `Shared` (the state every task shares) and the view of the
//! ring; `gossip` membership and the periodic tick; `dissemination` invalidations out;
//! `apply` invalidations in and the hand-off; `server` the peer RPC server; `primary`
//! per-key primary execution; `tier` the L2 tier; `warm` L3 proofs after a restart;
//! `status` what `/cluster` shows; `slots` the slot map cluster-aware clients see; `hook` the actor's hook and metrics; `peer` the
//! client side of peer RPC; `net` the sockets (tokio's or turmoil's); `pause` what a member
//! does about its own pauses.

pub(crate) mod absent;
pub(crate) mod apply;
pub(crate) mod dissemination;
pub(crate) mod executing;
pub(crate) mod generations;
pub(crate) mod gossip;
pub(crate) mod hook;
pub(crate) mod net;
pub mod pause;
pub(crate) mod peer;
pub(crate) mod primary;
pub(crate) mod pubsub;
pub(crate) mod replica;
pub(crate) mod ring_check;
pub(crate) mod server;
pub mod slots;
pub(crate) mod status;
pub(crate) mod tier;
pub(crate) mod warm;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use strata_cluster::coherence::{self, Item};
use strata_cluster::handshake;
use strata_cluster::membership::{MembershipTimer, Output};
use strata_cluster::placement;
use strata_cluster::rpc::{self, Frame, Request, Response, WireEntry};
use strata_cluster::{
    Authenticator, Coherence, CoherenceConfig, Invalidation, InvalidationOp, Membership,
    NodeIdentity, Ring,
};
use strata_core::glob::Glob;
use strata_core::{
    Cache, Clock, Entry, HybridClock, MemoryTier, MemoryTierConfig, Tags, Tier, Version,
};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::net::{TcpListener, UdpSocket};
use crate::actors::tier_actor::{LayerMetric, Maintenance};
use crate::config::{ClusterConfig, NodeConfig};
use crate::pending::Pending;
use crate::tls;

/// Largest gossip datagram read.
const MAX_DATAGRAM: usize = 64 * 1024;
/// Maintenance ticks between heartbeats and anti-entropy pulls (5 × 100 ms).
const HEARTBEAT_EVERY: u64 = 5;
/// Maintenance ticks between ring refreshes (10 × 100 ms).
const REFRESH_EVERY: u64 = 10;
/// foca broadcast items queued above which invalidations are pushed over the peer
/// connections instead of gossiped.
const GOSSIP_BACKLOG: usize = 16;
/// Keys per batch when walking the owner store.
const SCAN_BATCH: usize = 1024;

/// Peer connections allowed in the handshake at once. A new one beyond it closes the oldest
/// (rather than being refused itself), so connections an attacker leaves idle cannot keep a
/// member out: to starve members it would have to open connections faster than a member's
/// handshake completes (about a millisecond). Members open one connection per peer pair, so
/// this is far above what a healthy cluster needs.
pub(crate) const MAX_UNAUTHENTICATED: usize = 64;

/// How long a handshake waits for gossip to make its caller a member (see
/// `Shared::wait_for_member`).
const MEMBER_WAIT: Duration = Duration::from_secs(1);

/// Cluster counters (exported as metrics and in `/cluster`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) rejected_connections: AtomicU64,
    pub(crate) rpc_served: AtomicU64,
    pub(crate) remote_reads: AtomicU64,
    pub(crate) remote_hits: AtomicU64,
    pub(crate) absent_hits: AtomicU64,
    pub(crate) handoff_reads: AtomicU64,
    pub(crate) handoff_pushes: AtomicU64,
    pub(crate) refused_stale: AtomicU64,
    pub(crate) stale_reads_missed: AtomicU64,
    pub(crate) applied: AtomicU64,
    pub(crate) drops_unverified: AtomicU64,
    pub(crate) strict_invalidations: AtomicU64,
    pub(crate) ring_changes: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) pushed_batches: AtomicU64,
    /// L3 copies a restart proved current and kept ([`warm`]).
    pub(crate) warm_kept: AtomicU64,
    /// L3 copies a restart could not prove and dropped.
    pub(crate) warm_dropped: AtomicU64,
    /// `Versions` calls a restart made to prove them.
    pub(crate) warm_calls: AtomicU64,
    /// Copies pushed while this member settled that the key's other owner vouched for.
    pub(crate) warm_pushed_kept: AtomicU64,
    /// Pushed copies the key's other owner did not hold and no other member knew anything
    /// newer of (`strata_cluster::warm::keep_pushed`): kept.
    pub(crate) warm_pushed_witnessed: AtomicU64,
    /// Pushed copies dropped unproven.
    pub(crate) warm_pushed_dropped: AtomicU64,
    /// Pushed copies asked about again in a later round because a member did not answer.
    pub(crate) warm_pushed_deferred: AtomicU64,
    /// Pushes refused for now while settling, past `cluster.settling_push_limit` unproven
    /// ones (their senders send them again).
    pub(crate) pushes_deferred: AtomicU64,
    /// Hand-off batches sent again because their target, settling, refused them for now.
    pub(crate) handoff_retries: AtomicU64,
    /// Lease grants not counted: the granting member's view held a live member this node's
    /// view did not (`strata_cluster::primary::grant_counts`).
    pub(crate) lease_grants_unmatched: AtomicU64,
    /// Hand-off entries a settling target refused for now and that were not sent again (a
    /// proof's pass-on, or refused past the wait): their keys' previous owners hold them.
    pub(crate) handoff_deferred_dropped: AtomicU64,
    /// Writes executed here as the key's primary.
    pub(crate) executed: AtomicU64,
    /// Writes sent to another node, the key's primary.
    pub(crate) forwarded: AtomicU64,
    /// Replications fenced off (refused here, or refused to this node as primary).
    pub(crate) fenced: AtomicU64,
    /// Replications skipped because the owner's process was gone (connection refused).
    pub(crate) replica_down: AtomicU64,
    /// Replications refused here as an owner because this node holds the key's copy
    /// unproven, newer than the one the primary executed from
    /// (`ReplicaRefusal::Unproven`).
    pub(crate) replica_unproven: AtomicU64,
    /// Executions redone because an owner held a newer copy than the primary's.
    pub(crate) stale_base: AtomicU64,
    /// Plain `SET`s, `DEL`s and `GETDEL`s executed here without reading the other owners
    /// first ([`strata_cluster::primary::reads_before_put`]).
    pub(crate) blind_puts: AtomicU64,
    /// Writes refused here as primary because no majority answered this node's pings
    /// within the lease ([`strata_cluster::primary::Lease`]).
    pub(crate) lease_refusals: AtomicU64,
    /// Commands refused after waiting for their key's primary a tenth or more of the time
    /// their expiry had left ([`strata_cluster::primary::waited_past_expiry`]), or answered
    /// "may or may not have happened" when one attempt outlasted that.
    pub(crate) expiry_waits_refused: AtomicU64,
    /// Writes with an expiry refused (`TRYAGAIN`) because those still running here as
    /// primary held `cluster.timed_writes_max_bytes`.
    pub(crate) timed_writes_shed: AtomicU64,
    /// How long after its write each key invalidation from another member was applied here.
    pub(crate) delays: status::DelayBuckets,
}

/// The state of L3 proofs ([`warm`]).
#[derive(Debug, Default)]
pub(crate) struct WarmState {
    /// The latest proof's number: only it may put L3 back on the read path, decided under
    /// this lock (a newer proof takes L3 off under it too).
    pub(crate) run: Mutex<u64>,
    /// While a restarted member's proof waits out its settle time: owner-store read repair
    /// is off (a copy read then may predate an invalidation its baseline counted as
    /// applied).
    pub(crate) settling: AtomicBool,
    /// While a restarted member settles and proves: the copies other members pushed to its
    /// owner store meanwhile (hand-off pushes, read repairs), which may predate a removal
    /// its baseline counted as applied ([`warm`]); `None` otherwise.
    pub(crate) pushed: Mutex<Option<Pushed>>,
    /// From when (`Shared::monotonic_ms`) this node's record of changes — the removals and
    /// writes it took as an owner, the invalidations it applied — is whole, as a witness
    /// of another member's proof tells it (`Request::Staleness`): since it started;
    /// moved on by a warm start's baseline (invalidations before it were counted, not
    /// seen; not whole until it ends); and a gap given up on, kept apart with the
    /// origin's life that made what was lost (`strata_cluster::warm::Record`). Not by a
    /// rejoin (its tombstones outlive it, and what changed while it was away is the
    /// others' to answer for), nor by a member's death: the changes it made reached
    /// their owners first.
    pub(crate) record: Mutex<strata_cluster::warm::Record>,
    /// The member lives this node saw end (declared down, left), each with when
    /// (`Shared::monotonic_ms`), oldest first, kept for `tombstone_ms`: what it tells a
    /// restarted member's proof as a witness ([`Response::StalenessEnded`]).
    pub(crate) ended: Mutex<std::collections::VecDeque<(String, u64, u64)>>,
    /// Since when (`Shared::monotonic_ms`) the copies held unproven may have missed a
    /// change: 0 (this process's start) for a start's proof; for a rejoin without the
    /// lease, the start of the lease's latest run of lapses
    /// (`strata_cluster::primary::Lease::lapse_began_ms`). How far back the witnesses'
    /// word must reach follows from it (`strata_cluster::warm::needed_ms`).
    pub(crate) proof_from_ms: AtomicU64,
    /// Per copy an earlier proof kept (`pushed_id`): its version and when that proof round
    /// began asking (`Shared::monotonic_ms`), for [`strata_cluster::warm::proof_from`];
    /// two generations of at most [`WarmState::push_limit`] entries each, swapped every
    /// `tombstone_ms` (`strata_cluster::warm::Vouches`). A vouch not recorded is always
    /// safe: its copy's next proof reaches back to its lapse run's start.
    pub(crate) vouched: Mutex<strata_cluster::warm::Vouches>,
    /// The membership generation this process started with: the lives from it to before
    /// the current one ended in the others' views (rejoins), not in memory
    /// (`strata_cluster::rpc::Response::StalenessLives`).
    pub(crate) first_generation: u64,
    /// Most pushed copies held unproven while settling (`cluster.settling_push_limit`); a
    /// push past them is refused for now ([`strata_cluster::rpc::Response::Deferred`]):
    /// the key's previous owners still hold it and send it again once the proof made room.
    pub(crate) push_limit: usize,
}

/// Pushed copies a settling member has not proven yet.
#[derive(Debug, Default)]
pub(crate) struct Pushed {
    /// Recorded and not yet handed to a proof.
    todo: Vec<(String, Bytes, Version)>,
    /// Per key (`pushed_id`), how many of its recorded copies are not proven yet, and the
    /// newest of their versions.
    unproven: std::collections::HashMap<Vec<u8>, (u32, Version)>,
    /// Per key (`pushed_id`) still in `unproven`, the versions some push of which its
    /// sender read after it saw this process up (`Request::HandoffFor` naming one of this
    /// process's lives): proven from this process's start
    /// (`strata_cluster::warm::needed_ms_after_start`). Per version, whichever push brought
    /// it: a version is one value, so if one read of it came after the start, every copy
    /// of it is that copy (proven per push, a `Set` or an earlier build's `Handoff` of the
    /// same version, judged from the wider window, dropped what the hand-off had kept: an
    /// attack review, helper-112).
    read_after_start: std::collections::HashMap<Vec<u8>, Vec<Version>>,
}

/// A key's identity in [`Pushed::unproven`]: the namespace's length, the namespace, the key.
fn pushed_id(namespace: &str, key: &[u8]) -> Vec<u8> {
    let mut id = Vec::with_capacity(4 + namespace.len() + key.len());
    id.extend_from_slice(&(namespace.len() as u32).to_le_bytes());
    id.extend_from_slice(namespace.as_bytes());
    id.extend_from_slice(key);
    id
}

impl WarmState {
    /// The state of a member about to join: with L3, it records pushes and its record of
    /// changes is not whole until its start's proof decides (`warm::begin`): a push can
    /// come as soon as others see it join, before that proof begins (a review saw a copy
    /// read before a `DEL`, pushed in that gap, served again by the restarted member).
    pub(crate) fn at_bind(l3: bool, push_limit: usize, generation: u64) -> Self {
        let state = WarmState {
            push_limit,
            vouched: Mutex::new(strata_cluster::warm::Vouches::new(push_limit)),
            first_generation: generation,
            ..WarmState::default()
        };
        if l3 {
            state.start_recording();
            state.record.lock().not_whole();
        }
        state
    }

    /// A restarted member begins to settle: pushes are recorded from now on.
    pub(crate) fn start_recording(&self) {
        self.pushed.lock().get_or_insert_with(Pushed::default);
    }

    /// Starts recording (as [`WarmState::start_recording`]) copies that may have missed
    /// changes since `from_ms` ([`WarmState::proof_from_ms`]); a proof already recording
    /// keeps the earlier start.
    pub(crate) fn record_since(&self, from_ms: u64) {
        let mut pushed = self.pushed.lock();
        if pushed.is_some() {
            self.proof_from_ms.fetch_min(from_ms, Ordering::AcqRel);
        } else {
            self.proof_from_ms.store(from_ms, Ordering::Release);
            *pushed = Some(Pushed::default());
        }
    }

    /// Records an owned entry held unproven at a rejoin without the lease, recording or not
    /// (a proof that ended the recording meanwhile would otherwise leave it trusted); false
    /// past [`WarmState::push_limit`] unproven copies.
    pub(crate) fn hold(&self, namespace: &str, key: &[u8], version: Version) -> bool {
        self.start_recording();
        self.note_push(namespace, key, version, false)
    }

    /// Whether a copy pushed now (version `version` of `key`) may be stored: always, except
    /// past [`WarmState::push_limit`] unproven ones while settling. While settling it is
    /// recorded for the proof — before the store, so that a proof that takes the records
    /// afterwards finds it — with `after_start`: its sender read it after it saw this
    /// process up ([`Pushed::read_after_start`]).
    pub(crate) fn note_push(
        &self,
        namespace: &str,
        key: &[u8],
        version: Version,
        after_start: bool,
    ) -> bool {
        let mut pushed = self.pushed.lock();
        let Some(p) = pushed.as_mut() else {
            return true;
        };
        let id = pushed_id(namespace, key);
        // A key already waiting takes no more room (a batch sent again after a refusal
        // carries the copies stored before it).
        if p.unproven.len() >= self.push_limit && !p.unproven.contains_key(&id) {
            return false;
        }
        p.todo
            .push((namespace.to_owned(), Bytes::copy_from_slice(key), version));
        if after_start {
            let versions = p.read_after_start.entry(id.clone()).or_default();
            if !versions.contains(&version) {
                versions.push(version);
            }
        }
        let n = p.unproven.entry(id).or_insert((0, version));
        n.0 += 1;
        n.1 = n.1.max(version);
        true
    }

    /// Whether any copy is held unproven now (a cheap gate before an owner-store read on
    /// the replication path).
    pub(crate) fn any_unproven(&self) -> bool {
        self.pushed
            .lock()
            .as_ref()
            .is_some_and(|p| !p.unproven.is_empty())
    }

    /// Whether the owner store's copy of `key` at `version` may be a push not proven yet:
    /// a key with a push recorded, and a copy no newer than the newest push. A newer copy
    /// is this node's own execution as the key's primary, or a replication from its
    /// primary, both built on a copy the owners answered with: it is current. (Hiding those
    /// too left a joined primary reading every execution's base from the key's other owner,
    /// and, once that owner left, executing from none: a membership review saw hot counters
    /// restart from 0 when a member left within 2 s of another's join.)
    pub(crate) fn is_unproven(&self, namespace: &str, key: &[u8], version: Version) -> bool {
        match self.pushed.lock().as_ref() {
            None => false,
            Some(p) => p
                .unproven
                .get(&pushed_id(namespace, key))
                .is_some_and(|&(_, newest)| version <= newest),
        }
    }

    /// The pushes recorded since the last call, to prove; `None` once there are none left,
    /// which ends the recording (a push after that is trusted).
    pub(crate) fn next_to_prove(&self) -> Option<Vec<(String, Bytes, Version)>> {
        let mut pushed = self.pushed.lock();
        let p = pushed.as_mut()?;
        if p.todo.is_empty() {
            // Recording ends once no copy is unproven: not while another proof (a rejoin's
            // and an L3 proof run side by side) still has copies in hand, which ending it
            // would show unproven, and whose deferrals it would drop (an attack review).
            if p.unproven.is_empty() {
                *pushed = None;
                // The next proof is a start's unless a rejoin says otherwise.
                self.proof_from_ms.store(0, Ordering::Release);
            }
            return None;
        }
        Some(std::mem::take(&mut p.todo))
    }

    /// From when the copy of `key` at `version` may have missed a change, for a proof whose
    /// lapse run began at `lapse_from` ([`strata_cluster::warm::proof_from`]).
    pub(crate) fn proof_from(
        &self,
        namespace: &str,
        key: &[u8],
        version: Version,
        lapse_from: u64,
    ) -> u64 {
        let vouched = self.vouched.lock().get(&pushed_id(namespace, key));
        strata_cluster::warm::proof_from(lapse_from, vouched, version.as_u64())
    }

    /// A proof round that began asking at `at_ms` (with a quorum and this member's lease
    /// held throughout: `strata_cluster::warm::may_vouch`) kept the copy of `key` at
    /// `version`: it was current then.
    pub(crate) fn vouch(
        &self,
        namespace: &str,
        key: &[u8],
        version: Version,
        at_ms: u64,
        keep_ms: u64,
    ) {
        self.vouched
            .lock()
            .vouch(pushed_id(namespace, key), version.as_u64(), at_ms, keep_ms);
    }

    /// Records a copy again for the next round of the proof (a member did not answer for
    /// it); it stays unproven.
    pub(crate) fn prove_again(&self, namespace: &str, key: &[u8], version: Version) {
        if let Some(p) = self.pushed.lock().as_mut() {
            p.todo
                .push((namespace.to_owned(), Bytes::copy_from_slice(key), version));
        }
    }

    /// Whether some push of `key` at `version` was read by its sender after it saw this
    /// process up ([`Pushed::read_after_start`]).
    pub(crate) fn read_after_start(&self, namespace: &str, key: &[u8], version: Version) -> bool {
        self.pushed.lock().as_ref().is_some_and(|p| {
            p.read_after_start
                .get(&pushed_id(namespace, key))
                .is_some_and(|v| v.contains(&version))
        })
    }

    /// One recorded copy of `key` is proven (kept or removed).
    pub(crate) fn proven(&self, namespace: &str, key: &[u8]) {
        if let Some(p) = self.pushed.lock().as_mut() {
            let id = pushed_id(namespace, key);
            if let Some((n, _)) = p.unproven.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    p.unproven.remove(&id);
                    p.read_after_start.remove(&id);
                }
            }
        }
    }

    /// Member `name`'s life `generation` ended (this node's view declared it down) at
    /// `now_ms`; lives older than `keep_ms` are forgotten.
    pub(crate) fn note_ended(&self, name: &str, generation: u64, now_ms: u64, keep_ms: u64) {
        let mut ended = self.ended.lock();
        while ended
            .front()
            .is_some_and(|(_, _, at)| now_ms.saturating_sub(*at) > keep_ms)
        {
            ended.pop_front();
        }
        // Bounded whatever the churn: the newest count, and more than a proof needs.
        if ended.len() >= 4 * rpc::MAX_ENDED_LIVES {
            ended.pop_front();
        }
        ended.push_back((name.to_owned(), generation, now_ms));
    }

    /// The lives this node saw end within the last `within_ms`, newest first, at most
    /// [`rpc::MAX_ENDED_LIVES`].
    pub(crate) fn ended_within(&self, now_ms: u64, within_ms: u64) -> Vec<rpc::EndedLife> {
        self.ended
            .lock()
            .iter()
            .rev()
            .map(|(name, generation, at)| rpc::EndedLife {
                name: name.clone(),
                generation: *generation,
                ago_ms: now_ms.saturating_sub(*at),
            })
            .take_while(|e| e.ago_ms <= within_ms)
            .take(rpc::MAX_ENDED_LIVES)
            .collect()
    }

    /// Ends the recording and trusts what was recorded: a member whose L3 starts empty does
    /// no baseline, so the invalidations made before a push reach it all the same and
    /// refuse or remove it.
    pub(crate) fn trust_recorded(&self) {
        self.pushed.lock().take();
    }
}

/// The ring and the live members, as last computed from membership.
struct View {
    ring: Arc<Ring>,
    /// The ring before the last change, and when it changed (for hand-off reads).
    previous: Vec<(Arc<Ring>, Instant)>,
    /// Whether this node is still joining the cluster (`placement::Joining`): its view has
    /// only grown since it started or was cut off from everyone, and has not settled.
    joining: strata_cluster::placement::Joining,
    /// When this node last rejoined after dropping what it owned (monotonic ms), for
    /// `placement::after_rejoin`.
    rejoined_ms: Option<u64>,
    members: BTreeMap<String, NodeIdentity>,
    /// Names two live processes hold (`identity::one_per_name`): `members` has the older.
    shared_names: BTreeSet<String>,
    /// The slot map of this view, built when first asked for ([`slots`]).
    slots: Option<Arc<slots::SlotMap>>,
}

/// Work for the applier task.
enum Work {
    Apply(Invalidation),
    DropUnverified {
        origin: String,
        lost: u64,
        owned: bool,
        /// Asked by the tick that found this node stalled: the pause gate opens after it.
        after_stall: bool,
        /// Asked by a rejoin whose lease held: the copies of keys this node owned under a
        /// ring of the hand-off window stay ([`Shared::drop_unverified`]).
        lease_held: bool,
    },
}

/// Everything the cluster's tasks and the L2 tier share.
pub(crate) struct Shared {
    pub(crate) cfg: ClusterConfig,
    pub(crate) name: String,
    /// This life's generation (Unix ms at start, above any an earlier process on this L3
    /// used: [`generations`]): coherence sequence numbers belong to it.
    pub(crate) generation: u64,
    /// The generations this member has reserved, kept beside L3's files.
    generations: generations::Generations,
    pub(crate) clock: Arc<dyn Clock>,
    /// Versions of invalidations made without a cache attached (the contract tests).
    hlc: HybridClock,
    membership: Mutex<Option<Membership>>,
    /// Held through each [`Shared::refresh_view`], from reading the membership to
    /// installing its ring: two calls at once (a gossip message and a tick) could otherwise
    /// install the older of their rings last, for a moment. Taken before any other lock.
    refreshing: Mutex<()>,
    pub(crate) coherence: Mutex<Coherence>,
    view: RwLock<View>,
    pub(crate) owner: MemoryTier,
    /// Keys reads found absent on every owner, for `cluster.negative_ttl_ms` ([`absent`]).
    pub(crate) absent: absent::Absent,
    socket: Arc<UdpSocket>,
    listener: Arc<TcpListener>,
    pub(crate) pool: peer::Pool,
    auth: Authenticator,
    timers: Mutex<BTreeMap<(Instant, u64), MembershipTimer>>,
    timer_seq: AtomicU64,
    wake: Notify,
    work_tx: mpsc::UnboundedSender<Work>,
    /// Invalidations made here, waiting for the disseminator.
    outbox: Mutex<Vec<Invalidation>>,
    outbox_wake: Notify,
    work_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Work>>,
    /// The node's cache, once attached; weak, as the cache holds this state through its
    /// cluster tier ([`Shared::cache`]).
    cache: OnceLock<strata_core::WeakCache>,
    pub(crate) counters: Counters,
    pub(crate) warm: WarmState,
    /// The primary's per-key execution lock, striped ([`primary`]).
    exec_locks: Box<[tokio::sync::Mutex<()>]>,
    /// Bytes of the writes with an expiry running here as primary in tasks of their own
    /// (`cluster.timed_writes_max_bytes`; [`primary`]'s `route`).
    timed_writes: Arc<tokio::sync::Semaphore>,
    /// The keys under execution here as their primary: replications of them from another
    /// node are refused meanwhile ([`executing`]).
    executing: executing::Executing,
    /// This node's own stalls, seen from its tick: a node that stalled executes no write
    /// as a primary until its quarantine ends ([`strata_cluster::primary::StallGuard`]).
    pub(crate) stall: Mutex<strata_cluster::primary::StallGuard>,
    /// This node's lease as a primary: the members that answered its pings lately.
    pub(crate) lease: Mutex<strata_cluster::primary::Lease>,
    /// The lease that lets this node execute writes as a primary: the answers to its lease
    /// pings from members that held it for the grant window, and the ring of what they
    /// named and what this view lately lost, on which a key's primary must be this node too
    /// (`strata_cluster::primary::ExecLease`, ARCHITECTURE decisions 129 and 130). `lease`
    /// takes every grant, for what follows liveness (lapses, rejoins, proofs).
    pub(crate) exec_lease: Mutex<strata_cluster::primary::ExecLease>,
    /// What this node answers to lease pings: its view's members with when each came, and
    /// those it lost lately (`strata_cluster::primary::GrantView`), updated at each ring
    /// change.
    pub(crate) grant_view: Mutex<strata_cluster::primary::GrantView>,
    /// Commands wait here after a pause of this process until its copies are dropped
    /// ([`pause`]).
    pub(crate) pause: Arc<pause::PauseGate>,
    /// When the tick found this node stalled (`monotonic_ms`; 0: not since a majority
    /// answered pings sent after the stall): meanwhile its owner store is read by no one
    /// ([`pause`]).
    unverified_since_ms: AtomicU64,
    /// `Work::DropUnverified` sent and not yet carried out: a node back from a pause is not
    /// counted verified while its rejoin's drop of owned copies waits in the queue.
    drops_pending: AtomicU64,
    /// The origins a repair of a gap is being asked of now (one repair task per origin at
    /// a time: the tick asks again after every answer that made progress).
    repairing: Mutex<std::collections::HashSet<String>>,
    /// Lease pings on their way, per member (a few at most: a member that does not answer
    /// gets no pile of pings).
    pub(crate) lease_pings: Mutex<std::collections::HashMap<String, u32>>,
    /// When each member last answered a lease ping: an answer after a silence makes this
    /// node refute any suspicion raised meanwhile ([`strata_cluster::Silences`]).
    pub(crate) silences: Mutex<strata_cluster::Silences>,
    /// The monotonic origin of the stall guard's clock.
    started: Instant,
    /// Set when the node leaves ahead of a shutdown: it executes no more writes as a
    /// primary (`Node::leave_cluster`).
    pub(crate) leaving: AtomicBool,
    /// Members that place keys with other ring parameters ([`ring_check`]).
    pub(crate) ring_check: Arc<ring_check::RingCheck>,
    joined: AtomicBool,
    ticks: AtomicU64,
    max_frame: usize,
    /// Mutual TLS on the RPC port (`cluster.tls`): the acceptor's and the dialer's configs.
    tls: Option<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)>,
    /// Connections still in the handshake, oldest first, each with the switch that closes
    /// it ([`MAX_UNAUTHENTICATED`]).
    unauthenticated: Mutex<Pending>,
    /// When the last "closed the oldest" warning was logged (Unix ms).
    evict_logged_ms: AtomicU64,
    /// Pub/sub messages published here, on their way to the other members ([`pubsub`]).
    pub(crate) relay: pubsub::Relay,
    /// `true` once the node stops (`ClusterHook::stop`): the peer connections it serves end
    /// then, so that nothing holds its sockets after a shutdown (an embedded node started
    /// again in the same process binds the same addresses).
    pub(crate) stopped: tokio::sync::watch::Sender<bool>,
    /// Test-only network faults (feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    pub(crate) faults: Faults,
}

/// Peers this node cannot reach, for partition tests (feature `fault-injection`): gossip to
/// and from their gossip addresses is dropped, and RPCs to them fail at once.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    gossip: RwLock<std::collections::HashSet<SocketAddr>>,
    /// Invalidations are taken into coherence's bookkeeping but drop nothing here (an
    /// owner that has not applied them yet).
    pub(crate) deaf: std::sync::atomic::AtomicBool,
    /// How long a primary waits before it sends a replication (ms; 0: not at all): a slow
    /// link to the replicas, so that other changes can run in the window.
    pub(crate) replicate_delay_ms: AtomicU64,
    /// Replications that have begun that wait (checks done, version stamped).
    pub(crate) replications_delayed: AtomicU64,
    /// Acts as a member of a build from before check-only changes: answers `Features`
    /// with an error and reads a check-only change as a removal at version 0.
    pub(crate) earlier_build: std::sync::atomic::AtomicBool,
    /// Check-only changes received in a `ReplicateMulti`.
    pub(crate) checks_received: AtomicU64,
    /// How long a ring change's hand-off waits before it reads the owner store (ms; 0:
    /// not at all): a slow hand-off, so that what runs meanwhile can be tested.
    pub(crate) handoff_delay_ms: AtomicU64,
}

#[cfg(feature = "fault-injection")]
impl Shared {
    /// Cuts this node off from the members named (in its current view).
    pub(crate) fn isolate(&self, names: &[&str]) {
        let v = self.view.read();
        let mut g = self.faults.gossip.write();
        for n in names {
            if let Some(id) = v.members.get(*n) {
                g.insert(id.gossip);
            }
            self.pool.block(n);
        }
    }

    /// Makes this node apply no invalidation (`true`) until told otherwise.
    pub(crate) fn set_deaf(&self, deaf: bool) {
        self.faults.deaf.store(deaf, Ordering::Release);
    }

    /// Makes this node, as a primary, wait `ms` before each replication it sends.
    pub(crate) fn set_replicate_delay(&self, ms: u64) {
        self.faults.replicate_delay_ms.store(ms, Ordering::Release);
    }

    /// Makes this node act as a member of a build from before check-only changes (and
    /// before every later feature: as a caller, it announces none on new connections).
    pub(crate) fn set_earlier_build(&self, earlier: bool) {
        self.faults.earlier_build.store(earlier, Ordering::Release);
        self.pool.announce_no_features(earlier);
    }

    /// Makes each ring change's hand-off wait `ms` before it reads the owner store.
    pub(crate) fn set_handoff_delay(&self, ms: u64) {
        self.faults.handoff_delay_ms.store(ms, Ordering::Release);
    }

    /// Check-only changes this node has received as an owner.
    pub(crate) fn checks_received(&self) -> u64 {
        self.faults.checks_received.load(Ordering::Acquire)
    }

    /// How many replications have begun their wait ([`Shared::set_replicate_delay`]).
    pub(crate) fn replications_delayed(&self) -> u64 {
        self.faults.replications_delayed.load(Ordering::Acquire)
    }

    /// Stores `entry` in this node's owner store as it is, version and expiry included
    /// (a copy left by an earlier primary, for tests).
    pub(crate) fn plant_owner_copy(&self, namespace: &str, key: &[u8], entry: strata_core::Entry) {
        let _ = self
            .owner
            .set_sync(namespace, bytes::Bytes::copy_from_slice(key), entry);
    }

    /// Drops this node's owner-store copy of `key` as a full store evicts it: nothing is
    /// recorded (no removal, no floor). Whether there was one.
    pub(crate) fn evict_owner_copy(&self, namespace: &str, key: &[u8]) -> bool {
        self.owner
            .peek_retained_entry(namespace, key)
            .is_some_and(|e| self.owner.remove_version_sync(namespace, key, e.version))
    }

    /// Plain `SET`s, `DEL`s and `GETDEL`s executed here as primary without reading the
    /// other owners first.
    pub(crate) fn unread_writes(&self) -> u64 {
        self.counters.blind_puts.load(Ordering::Relaxed)
    }

    /// This node's owner-store copy of `key`, fresh or inside its stale grace, looked at
    /// without counting a read (a look must not keep the copy from being evicted).
    pub(crate) fn owner_copy(&self, namespace: &str, key: &[u8]) -> Option<strata_core::Entry> {
        self.owner.peek_retained_entry(namespace, key)
    }

    /// Hands `entry` to this node's peer RPC handler as another member's push arrives:
    /// a `Set` (a hand-off push or a read repair), or with `handoff` a hand-off batch of one
    /// from a member that read it after it saw this node's current life up
    /// (`Request::HandoffFor`); whether the owner store took it.
    pub(crate) async fn receive_push(
        self: &Arc<Self>,
        namespace: &str,
        key: &[u8],
        entry: &strata_core::Entry,
        handoff: bool,
    ) -> bool {
        use strata_cluster::rpc::{ByteBuf, Request, Response};
        let (namespace, entry) = (namespace.to_owned(), to_wire(entry));
        let req = if handoff {
            Request::HandoffFor {
                namespace,
                generation: self.member_generation(),
                entries: vec![(ByteBuf::from(key.to_vec()), entry)],
            }
        } else {
            Request::Set {
                namespace,
                key: key.to_vec(),
                entry,
            }
        };
        matches!(
            self.handle(req, strata_cluster::rpc::features::THIS_BUILD)
                .await,
            Response::Stored { kept_newer: false } | Response::HandedOff { stored: 1 }
        )
    }

    /// Hands this node a `Replicate` of the removal of `key` at `version` from the key's
    /// primary in its view, executed against the copy it holds, as a primary's change
    /// arrives; whether it was applied.
    pub(crate) fn receive_replicated_removal(
        &self,
        namespace: &str,
        key: &[u8],
        version: u64,
    ) -> bool {
        let ring = self.ring();
        let Some(primary) = strata_cluster::primary::primary(&ring, key) else {
            return false;
        };
        // Executed against the copy this node holds.
        let base = self
            .owner
            .get_retained_entry(namespace, key)
            .map_or(0, |e| e.version.as_u64());
        matches!(
            self.replicate_in(primary, namespace, key, None, version, base, true),
            strata_cluster::rpc::Response::Replicated
        )
    }

    /// Lifts every fault.
    pub(crate) fn heal(&self) {
        self.faults.gossip.write().clear();
        self.pool.unblock_all();
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterShared")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

fn addr_or_unspecified(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

impl Shared {
    /// Binds the gossip and RPC sockets and builds the state; nothing runs until the hook
    /// starts.
    pub(crate) async fn bind(
        config: &NodeConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, String> {
        let c = config.cluster.clone();
        let secret = c.secret.clone().unwrap_or_default();
        let socket = UdpSocket::bind(&c.gossip_listen)
            .await
            .map_err(|e| format!("cannot bind cluster.gossip_listen {}: {e}", c.gossip_listen))?;
        let listener = TcpListener::bind(&c.rpc_listen)
            .await
            .map_err(|e| format!("cannot bind cluster.rpc_listen {}: {e}", c.rpc_listen))?;
        let advertise: Option<std::net::IpAddr> =
            c.advertise.as_deref().and_then(|a| a.parse().ok());
        let announced = |mut a: SocketAddr, always: bool| {
            if let Some(ip) = advertise.filter(|_| always || a.ip().is_unspecified()) {
                a.set_ip(ip);
            }
            a
        };
        let gossip = announced(socket.local_addr().map_err(|e| e.to_string())?, true);
        let rpc_addr = announced(listener.local_addr().map_err(|e| e.to_string())?, true);
        let now_ms = clock.now_ms();
        let (generations, generation) = if config.l3.enabled {
            // File I/O with syncs: off the runtime's threads.
            let dir = config.l3.data_dir.clone();
            tokio::task::spawn_blocking(move || generations::Generations::start(Some(&dir), now_ms))
                .await
                .map_err(|e| format!("reserving this member's generations: {e}"))?
        } else {
            generations::Generations::start(None, now_ms)
        };
        let identity = NodeIdentity {
            name: config.node.name.clone(),
            gossip,
            rpc: rpc_addr,
            resp: announced(addr_or_unspecified(&config.server.resp_listen), false),
            admin: announced(addr_or_unspecified(&config.server.admin_listen), false),
            cluster_resp: config
                .server
                .cluster_listen
                .as_deref()
                .map(|a| announced(addr_or_unspecified(a), false)),
            generation,
        };
        let seeds: Vec<SocketAddr> = c.seeds.iter().filter_map(|s| s.parse().ok()).collect();
        let membership = Membership::new(
            identity.clone(),
            strata_cluster::lan_config(c.expected_size),
            generation ^ peer::nonce(),
            secret.as_bytes(),
            seeds,
        );
        let coherence = Coherence::new(
            config.node.name.clone(),
            generation,
            CoherenceConfig {
                max_staleness_ms: c.max_staleness_ms,
                key_seed: peer::nonce(),
                ..CoherenceConfig::default()
            },
        );
        let owner = MemoryTier::new(
            MemoryTierConfig::with_capacity(c.owner_capacity_bytes),
            clock.clone(),
        )?;
        let auth = Authenticator::new(secret.as_bytes());
        let max_frame = (config.limits.max_value_bytes as usize)
            .saturating_add(config.limits.max_key_bytes as usize)
            .saturating_add(64 * 1024);
        let tls_configs = match &c.tls {
            Some(t) => Some(tls::peer_configs(t).map_err(|e| format!("cluster.tls: {e}"))?),
            None => None,
        };
        let ring_check = Arc::new(ring_check::RingCheck::new(c.vnodes, c.replication_factor));
        let pool = peer::Pool::new(
            config.node.name.clone(),
            generation,
            auth.clone(),
            tls_configs.as_ref().map(|(_, client)| client.clone()),
            Duration::from_millis(c.rpc_timeout_ms),
            Duration::from_millis(c.connect_timeout_ms),
            max_frame,
        )
        .checking_rings(ring_check.clone());
        let mut members = BTreeMap::new();
        members.insert(identity.name.clone(), identity);
        let ring = Arc::new(Ring::new([config.node.name.clone()], c.vnodes));
        let (work_tx, work_rx) = mpsc::unbounded_channel();
        tracing::info!(node = %config.node.name, %gossip, rpc = %rpc_addr, generation, "cluster sockets bound");
        Ok(Arc::new(Shared {
            name: config.node.name.clone(),
            generation,
            generations,
            clock,
            hlc: HybridClock::with_tag(strata_cluster::version_tag(&config.node.name)),
            membership: Mutex::new(Some(membership)),
            refreshing: Mutex::new(()),
            coherence: Mutex::new(coherence),
            view: RwLock::new(View {
                ring,
                previous: Vec::new(),
                joining: strata_cluster::placement::Joining::new(0),
                rejoined_ms: None,
                members,
                shared_names: BTreeSet::new(),
                slots: None,
            }),
            owner,
            absent: absent::Absent::new(c.negative_ttl_ms),
            socket: Arc::new(socket),
            listener: Arc::new(listener),
            pool,
            auth,
            timers: Mutex::new(BTreeMap::new()),
            timer_seq: AtomicU64::new(0),
            wake: Notify::new(),
            work_tx,
            outbox: Mutex::new(Vec::new()),
            outbox_wake: Notify::new(),
            work_rx: tokio::sync::Mutex::new(work_rx),
            cache: OnceLock::new(),
            counters: Counters::default(),
            warm: WarmState::at_bind(
                config.l3.enabled,
                config.cluster.settling_push_limit as usize,
                generation,
            ),
            exec_locks: (0..primary::EXEC_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            timed_writes: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(c.timed_writes_max_bytes)
                    .unwrap_or(usize::MAX)
                    .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
            executing: Default::default(),
            stall: Mutex::new(Default::default()),
            lease: Mutex::new(Default::default()),
            exec_lease: Mutex::new(Default::default()),
            grant_view: Mutex::new(Default::default()),
            pause: Arc::default(),
            unverified_since_ms: AtomicU64::new(0),
            drops_pending: AtomicU64::new(0),
            repairing: Mutex::new(std::collections::HashSet::new()),
            lease_pings: Mutex::new(Default::default()),
            silences: Mutex::new(Default::default()),
            started: Instant::now(),
            leaving: AtomicBool::new(false),
            ring_check,
            joined: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            max_frame,
            unauthenticated: Mutex::new(Pending::new(MAX_UNAUTHENTICATED)),
            evict_logged_ms: AtomicU64::new(0),
            relay: pubsub::Relay::default(),
            stopped: tokio::sync::watch::Sender::new(false),
            tls: tls_configs,
            #[cfg(feature = "fault-injection")]
            faults: Faults::default(),
            cfg: c,
        }))
    }

    /// Whether this node stalled and a majority has not yet answered pings sent after it:
    /// its owner store may hold copies changed during the pause, and is read by no one
    /// ([`pause`]).
    pub(crate) fn unverified(&self) -> bool {
        self.unverified_since_ms.load(Ordering::Acquire) != 0
    }

    /// The node's cache, while the node runs (`None` before it is attached and after the
    /// node is dropped).
    pub(crate) fn cache(&self) -> Option<Cache> {
        self.cache.get().and_then(strata_core::WeakCache::upgrade)
    }

    /// Runs `work` until it ends or the node stops (`ClusterHook::stop`, or the hook's
    /// drop), whichever comes first: `None` when the node stopped first. The subscription
    /// is taken at the call, so a stop between the call and the first poll still ends it.
    /// Every task that holds the node's cache or sockets past a request runs under it, so a
    /// stopped node lets go of them at once.
    pub(crate) fn until_stopped<F: std::future::Future>(
        &self,
        work: F,
    ) -> impl std::future::Future<Output = Option<F::Output>> + use<F> {
        let mut stopped = self.stopped.subscribe();
        async move {
            tokio::select! {
                out = work => Some(out),
                _ = stopped.wait_for(|&s| s) => None,
            }
        }
    }

    /// Attaches the node's cache (once; later calls change nothing).
    pub(crate) fn attach_cache(&self, cache: &Cache) {
        let _ = self.cache.set(cache.downgrade());
    }

    /// This member's generation in the membership now (this life's, until it rejoined
    /// under a renewed identity).
    pub(crate) fn member_generation(&self) -> u64 {
        self.membership
            .lock()
            .as_ref()
            .map_or(self.generation, |m| m.identity().generation)
    }

    /// How long a lease answer names the members its view lost, and how long its view must
    /// have held a caller before it grants ([`strata_cluster::primary::GrantView`]): a
    /// lease's second and the longest a ping's answer may take.
    pub(crate) fn grant_window_ms(&self) -> u64 {
        strata_cluster::primary::Lease::LEASE_MS + self.cfg.rpc_timeout_ms
    }

    /// Milliseconds since this node's cluster state was built, on a monotonic clock.
    pub(crate) fn monotonic_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// The time coherence runs on (tombstones, gaps, staleness deadlines): durations on this
    /// node, so the monotonic clock. On the wall clock, a step forward expired every
    /// tombstone at once (an older copy of a deleted key was stored again) and a step back
    /// held the staleness bound (G2) for as long as the step.
    pub(crate) fn coherence_ms(&self) -> u64 {
        self.monotonic_ms()
    }

    /// A copy another member pushed (a hand-off, a read repair) is about to be stored:
    /// while this member settles, recorded for its proof ([`WarmState::note_push`]) —
    /// unless the store holds that very version already, and not as an unproven push: that
    /// copy came from this node's own execution or its primary's replication, and a record
    /// would hide it. (A primary's hand-off push of the version it had just replicated made
    /// the replica, primary next, execute a counter from none: a membership review's
    /// `join_leave` run.) An older push is recorded all the same: it hides nothing newer,
    /// and if the held copy goes before the push is stored, the push is proven, not trusted.
    /// `after_start`: its sender read it after it saw this process up
    /// ([`Pushed::read_after_start`]).
    /// `false`: refused (too many unproven).
    pub(crate) fn note_push(
        &self,
        namespace: &str,
        key: &[u8],
        version: Version,
        after_start: bool,
    ) -> bool {
        if self
            .owner
            .get_retained_entry(namespace, key)
            .is_some_and(|held| {
                held.version == version && !self.warm.is_unproven(namespace, key, held.version)
            })
        {
            return true;
        }
        self.warm.note_push(namespace, key, version, after_start)
    }

    /// The owner store's copy of `key` (as `get_entry`: fresh), unless it may be a copy
    /// pushed while this member settled and not proven yet ([`WarmState::is_unproven`]):
    /// then none, so that no read serves it, no execution builds on it and no proof of
    /// another member's vouches for it.
    pub(crate) fn settled_entry(&self, namespace: &str, key: &[u8]) -> Option<Entry> {
        self.owner
            .get_entry(namespace, key)
            .filter(|e| !self.warm.is_unproven(namespace, key, e.version))
    }

    /// Whether the owner store holds a copy of `key` not proven yet
    /// ([`WarmState::is_unproven`]), fresh or not. It may be the last copy of the key's
    /// latest change: as another owner this node answers `Get` with an error then, and as
    /// primary it does not execute from less (`refuse_below_unproven`). (Two owners that
    /// rejoined without their leases at once each held the counter unproven; the primary
    /// read neither and restarted it from 1, in a partition review with cuts of 5–8 s.)
    pub(crate) fn holds_unproven(&self, namespace: &str, key: &[u8]) -> bool {
        self.owner
            .get_retained_entry(namespace, key)
            .is_some_and(|e| self.warm.is_unproven(namespace, key, e.version))
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A fresh version for an invalidation made here (the cache's HLC when attached).
    pub(crate) fn stamp(&self) -> Version {
        match self.cache() {
            Some(c) => c.observe_version(self.hlc.last()),
            None => self.hlc.tick(self.now_ms()),
        }
    }

    /// Makes later stamps order after `v`.
    pub(crate) fn observe(&self, v: Version) {
        self.hlc.observe(v, self.now_ms());
        if let Some(c) = self.cache() {
            c.observe_version(v);
        }
    }

    pub(crate) fn ring(&self) -> Arc<Ring> {
        self.view.read().ring.clone()
    }

    /// The owners of a key in the current view, as (name, rpc address), first owner first.
    pub(crate) fn owners(&self, key: &[u8]) -> Vec<(String, SocketAddr)> {
        let v = self.view.read();
        v.ring
            .owners(key, self.cfg.replication_factor as usize)
            .into_iter()
            .filter_map(|n| v.members.get(n).map(|id| (n.to_owned(), id.rpc)))
            .collect()
    }

    /// The nodes a read of the key asks, in order (`placement::read_plan`: the owners,
    /// then the previous owners while the hand-off window is open), as (name, rpc address),
    /// and how many of them are current owners.
    pub(crate) fn read_plan(&self, key: &[u8]) -> (Vec<(String, SocketAddr)>, usize) {
        let v = self.view.read();
        let window = Duration::from_millis(self.cfg.handoff_window_ms);
        let previous: Vec<&Ring> = v
            .previous
            .iter()
            .filter(|(_, at)| at.elapsed() <= window)
            .map(|(r, _)| &**r)
            .collect();
        let rf = self.cfg.replication_factor as usize;
        let plan = placement::read_plan(&v.ring, &previous, key, rf);
        let current = placement::current_owners(&v.ring, rf);
        let mut out = Vec::with_capacity(plan.len());
        let mut owners = 0;
        for (i, n) in plan.into_iter().enumerate() {
            if let Some(id) = v.members.get(&n) {
                if i < current {
                    owners += 1;
                }
                out.push((n, id.rpc));
            }
        }
        (out, owners)
    }

    /// How many live members this node's view holds, itself included (no allocation: the
    /// primary checks it on every write).
    pub(crate) fn member_count(&self) -> usize {
        self.view.read().members.len().max(1)
    }

    /// Why this node is not ready as a cluster member, if it is not: its view holds no
    /// majority of `cluster.expected_size` (it executes no write as a primary, and reads
    /// find only what the members it sees hold: a member seeded only with itself next to
    /// a running cluster stayed alone, answered every `GET` with nil, and `/health` called
    /// it ready; a review, 2026-12-05).
    pub(crate) fn not_ready(&self) -> Option<String> {
        let (members, expected) = (self.member_count(), self.cfg.expected_size as usize);
        if !strata_cluster::primary::has_quorum(members, expected) {
            return Some(format!(
                "this node sees {members} of the cluster's {expected} members (cluster.expected_size): no majority, so it is not ready (check cluster.seeds)"
            ));
        }
        if let Some(why) = self.second_of_name() {
            return Some(why);
        }
        self.ring_problem()
            .filter(|(not_ready, _)| *not_ready)
            .map(|(_, why)| why)
    }

    /// Why this process stands aside, when another live process holds its `node.name` and
    /// started earlier (`identity::one_per_name`): it executes no write as a primary and is
    /// not ready until that process is gone.
    pub(crate) fn second_of_name(&self) -> Option<String> {
        let view = self.view.read();
        if !view.shared_names.contains(&self.name) {
            return None;
        }
        let first = view.members.get(&self.name)?;
        (first.generation != self.generation).then(
            || {
                format!(
                    "another process named {} runs (gossip {}, started earlier): this one executes nothing and is not ready until it is gone (give every member its own node.name)",
                    self.name, first.gossip
                )
            },
        )
    }

    /// The names two live processes hold in this node's view, for the operator.
    pub(crate) fn shared_names_problem(&self) -> Option<String> {
        let view = self.view.read();
        (!view.shared_names.is_empty()).then(|| {
            format!(
                "two processes run under the name(s) {}: each member's node.name must be its own (the one started first keeps the name)",
                view.shared_names.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// Members of this node's view that place keys with other ring parameters
    /// ([`ring_check`]): whether that leaves this node not ready (it differs from as many
    /// members as it agrees with), and what to tell the operator.
    pub(crate) fn ring_problem(&self) -> Option<(bool, String)> {
        let view = self.view.read();
        self.ring_check
            .problem(view.members.keys(), view.members.len().max(1))
    }

    /// Every live member but this node, as (name, rpc address).
    pub(crate) fn others(&self) -> Vec<(String, SocketAddr)> {
        self.view
            .read()
            .members
            .values()
            .filter(|id| id.name != self.name)
            .map(|id| (id.name.clone(), id.rpc))
            .collect()
    }

    pub(crate) fn is_primary(&self, key: &[u8]) -> bool {
        self.view
            .read()
            .ring
            .owners(key, 1)
            .first()
            .is_none_or(|n| *n == self.name)
    }

    /// Whether this node owns a key under its ring or under a previous ring kept within
    /// the hand-off window (`cluster.handoff_window_ms`) and within the time its lease
    /// remembers a lapse (`Lease::LAPSE_REMEMBERED_MS`: what "its lease held" vouches
    /// for), as a test of many keys: the rings are those of now.
    pub(crate) fn lately_owned(&self) -> impl Fn(&[u8]) -> bool + use<> {
        let v = self.view.read();
        let window = Duration::from_millis(
            self.cfg
                .handoff_window_ms
                .min(strata_cluster::primary::Lease::LAPSE_REMEMBERED_MS),
        );
        let rings: Vec<Arc<Ring>> = std::iter::once(v.ring.clone())
            .chain(
                v.previous
                    .iter()
                    .filter(|(_, at)| at.elapsed() <= window)
                    .map(|(r, _)| r.clone()),
            )
            .collect();
        let (me, rf) = (self.name.clone(), self.cfg.replication_factor as usize);
        move |k: &[u8]| {
            let hash = strata_cluster::ring::key_hash(k);
            rings
                .iter()
                .any(|r| r.owners_of_hash(hash, rf).contains(&me.as_str()))
        }
    }

    fn owns(&self, key: &[u8]) -> bool {
        self.view
            .read()
            .ring
            .owners(key, self.cfg.replication_factor as usize)
            .contains(&self.name.as_str())
    }
}

/// An entry's tags as the slices `Coherence::admits_tagged` takes.
pub(crate) fn tag_refs(e: &Entry) -> Vec<&[u8]> {
    e.tags.iter().map(|t| t.as_ref()).collect()
}

pub(crate) fn to_wire(e: &Entry) -> WireEntry {
    WireEntry {
        value: e.value.to_vec(),
        version: e.version.as_u64(),
        expires_at_ms: e.expires_at_ms,
        stale_until_ms: e.stale_until_ms,
        tags: e.tags.iter().map(|t| t.to_vec()).collect(),
    }
}

pub(crate) fn from_wire(w: WireEntry) -> Entry {
    Entry {
        value: Bytes::from(w.value),
        version: Version::from_u64(w.version),
        expires_at_ms: w.expires_at_ms,
        stale_until_ms: w.stale_until_ms,
        tags: Tags::new(w.tags),
    }
}

pub(crate) use hook::ClusterHook;
pub use status::{ClusterStatus, CoherenceFigures, DELAY_BOUNDS_MS, MemberStatus, PeerRpc};
