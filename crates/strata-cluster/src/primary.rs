//! Per-key primary execution, without I/O: who executes a key's writes, who may replicate
//! them, and which copy a primary starts from. The node's cluster tier and the simulator
//! both call these, so the simulator checks the decisions the node makes.
//!
//! - The **primary** of a key is its first owner on the ring ([`primary`]). Every write of
//!   the key — plain `SET` and `DEL` as well as conditional and read-modify-write commands
//!   — is executed there, one at a time under the primary's lock for the key, and the
//!   operation's meaning is [`strata_core::ops::apply`].
//! - Before it acknowledges a change, the primary **replicates** it to every other owner in
//!   its view and needs each one's answer. An owner accepts only when the caller is the
//!   key's primary in its *own* view ([`admits_replication`]): a primary that was paused,
//!   partitioned or is otherwise behind the ring is **fenced** and its client gets an error,
//!   never an acknowledged update that the real primary does not know about.
//! - An owner also refuses a change executed against a copy older than its own
//!   ([`replica_is_ahead`]): the primary adopts the newer copy and executes again, so a
//!   primary that missed writes while it was paused or cut off cannot overwrite them.
//! - A node that stalled (its own periodic tick came late: a pause) executes nothing until a
//!   quarantine has passed ([`StallGuard`]): it may wake on a view the others left behind.
//! - A primary executes only while it holds a [`Lease`]: a majority of the cluster answered
//!   its pings within the last second. A node cut off from the majority stops acknowledging
//!   within that second, long before the others move its keys (failure detection takes
//!   seconds), even while its own view still counts members it can no longer reach.
//! - A primary acts only while its view holds a majority of the cluster's expected size
//!   ([`has_quorum`]): the minority side of a partition refuses writes.
//! - A primary that does not hold the key asks the other owners (and, after a ring change,
//!   the previous ones) and starts from the newest fresh copy ([`starting_point`]): after a
//!   fail-over the new primary is a former replica that already holds every acknowledged
//!   change.

use serde::{Deserialize, Serialize};
use strata_core::Entry;
use strata_core::ops::KeyOp;

use crate::ring::Ring;
use crate::rpc::WireEntry;

/// A write, as it travels to a key's primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PrimaryOp {
    /// A conditional or read-modify-write operation (and `DEL`).
    Key(KeyOp),
    /// A plain `SET`: the entry the caller built (its policy-checked expiry and tags). The
    /// primary stamps its version, after every version it has seen: the later write wins,
    /// as on one Redis.
    Put(WireEntry),
    /// An operation on several keys sharing a hash tag, so one primary (`MSETNX`,
    /// `RENAME`): executed atomically there under every key's lock.
    Multi(strata_core::ops::MultiOp),
}

impl PrimaryOp {
    /// The operation's bytes (`Request::Execute::op`).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// The operation in `bytes`, or `None` when they are not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }

    /// The earliest expiry instant (Unix ms) the operation gives a key, if any: the node
    /// the client reached resolved it (`PX 3000` is now + 3 s there), so a wait before the
    /// primary executes it shortens the TTL by as much.
    pub fn earliest_expiry_ms(&self) -> Option<u64> {
        match self {
            PrimaryOp::Key(op) => op.expiry_ms(),
            PrimaryOp::Put(e) => e.expires_at_ms,
            PrimaryOp::Multi(m) => m.earliest_expiry_ms(),
        }
    }
}

/// Whether an operation accepted at `accepted_ms` with an expiry at `expiry_ms` should no
/// longer run at `now_ms` after waiting for the cluster's view (a failover): when the wait
/// took a tenth or more of the time its expiry had left (at least 50 ms), or the expiry
/// passed. Run anyway, `SET lock x NX PX 3000` after a 6 s failover wait answered `OK` for
/// a key already expired, and the next client's `SET NX` won too: several lock holders.
pub fn waited_past_expiry(accepted_ms: u64, expiry_ms: Option<u64>, now_ms: u64) -> bool {
    let Some(budget) = expiry_wait_budget_ms(accepted_ms, expiry_ms) else {
        return false;
    };
    let waited = now_ms.saturating_sub(accepted_ms);
    expiry_ms.is_some_and(|at| now_ms >= at) || waited >= budget
}

/// How long an operation accepted at `accepted_ms` with an expiry at `expiry_ms` may wait
/// for its owners in all ([`waited_past_expiry`]): a tenth of the time its expiry had left,
/// at least 50 ms; `None` when it has no expiry to keep (none, or one already past when
/// accepted: a deletion, `EXPIRE k 0`). The node bounds each attempt by what is left of it,
/// too: one attempt that reached a live primary, which then waited seconds for a dead
/// replica, granted `SET lock NX PX 2000` 4.9 s after it was sent, and three clients held
/// the lock within 8 ms (a membership review, 2026-12-04).
pub fn expiry_wait_budget_ms(accepted_ms: u64, expiry_ms: Option<u64>) -> Option<u64> {
    let left = expiry_ms?.checked_sub(accepted_ms).filter(|l| *l > 0)?;
    Some((left / 10).max(50))
}

/// The key's primary under `ring`: its first owner.
pub fn primary<'a>(ring: &'a Ring, key: &[u8]) -> Option<&'a str> {
    ring.owners(key, 1).first().copied()
}

/// The owners a primary (`me`) must hear from before it acknowledges a change of the key:
/// the other owners under its ring.
pub fn replicas(ring: &Ring, me: &str, key: &[u8], replication_factor: usize) -> Vec<String> {
    ring.owners(key, replication_factor)
        .into_iter()
        .filter(|n| *n != me)
        .map(str::to_owned)
        .collect()
}

/// Whether an owner whose ring is `ring`, and whose view holds `members` of the cluster's
/// `expected` members, accepts a change of the key replicated by `from`: only from the
/// key's primary in this ring, and only while this owner's own view holds a majority
/// ([`has_quorum`]). `Err` names the primary it knows instead (`None`: no majority here, or
/// no primary).
///
/// The owner's majority matters as much as the primary's: a primary that wakes from a
/// pause on a view the cluster left behind may still count a majority in it, and an owner
/// on its side of a partition, which sees the minority it is in, must not help it
/// acknowledge (found by the simulator, seed 590: a paused node on the minority side of a
/// partition executed INCRs from a base the majority had long moved past).
pub fn admits_replication(
    ring: &Ring,
    members: usize,
    expected: usize,
    key: &[u8],
    from: &str,
) -> Result<(), Option<String>> {
    if !has_quorum(members, expected) {
        return Err(None);
    }
    match primary(ring, key) {
        Some(p) if p == from => Ok(()),
        other => Err(other.map(str::to_owned)),
    }
}

/// The copy a primary executes against: its own fresh copy when it has one (it applied
/// every change it acknowledged), else the newest of the fresh copies the other owners
/// answered with.
pub fn starting_point(
    local: Option<Entry>,
    others: impl IntoIterator<Item = Option<Entry>>,
) -> Option<Entry> {
    if local.is_some() {
        return local;
    }
    others.into_iter().flatten().max_by_key(|e| e.version)
}

/// Whether a primary that holds no copy of a key must read the other owners' copies before
/// it executes a plain `SET` (`PrimaryOp::Put`) or a plain `DEL`/`GETDEL`, given the
/// members its read plan names besides itself (`plan_others`: the current owners, and the
/// previous ones inside a hand-off window) and the replicas it will replicate to. A plain
/// `SET` does not depend on the copy; only its version must end up above it, and with
/// exactly one replica that is also the only other member the plan names, the replication
/// itself finds out: the replica answers `Stale` with any copy it holds, the primary adopts
/// it and executes again, and an absent key (a cache fill) costs one round trip instead of
/// two. A `DEL` or `GETDEL` changes the key whether or not it finds a copy (a removal of a
/// key found nowhere is stamped and announced all the same, ARCHITECTURE decision 101), so
/// the same holds: a replica's `Stale` copy makes the primary execute again from it (the
/// reply then counts it, or carries its value). With more replicas a mixed answer (one
/// applied, one `Stale`) would leave the outcome unknown, and inside a hand-off window a
/// previous owner that is not replicated to may hold the newest copy: both read first.
/// Every other operation reads first too: one that changes nothing when it finds no copy
/// (`EXPIRE`, `SET XX`) would otherwise never ask the replica.
pub fn reads_before_put(plan_others: &[&str], replicas: &[String]) -> bool {
    !(replicas.len() == 1 && plan_others.len() == 1 && plan_others[0] == replicas[0])
}

/// Whether an owner holding `held` must refuse a primary's change executed against the copy
/// of version `base` (0: none): it holds something newer the primary did not see.
pub fn replica_is_ahead(held: Option<&Entry>, base: u64) -> bool {
    held.is_some_and(|e| e.version.as_u64() > base)
}

/// Whether a change executed from what the owners answered (`answered`: the newest version
/// it read or was ordered above, 0 for none) must wait for the proof of a copy of the key
/// held unproven at version `unproven` (a member that rejoined without its lease, or
/// restarted, holds what it owns so until the owners vouch for it): that copy may be the
/// last one of the key's latest change, and executed below it, a read-modify-write would
/// start over from less. The primary refuses to execute so over its own unproven copy, and
/// another owner refuses to take such a change over its own (`ReplicaRefusal::Unproven`).
/// A copy executed from at least as new supersedes the unproven one (ARCHITECTURE
/// decision 122).
pub fn below_unproven(unproven: Option<u64>, answered: u64) -> bool {
    unproven.is_some_and(|u| answered < u)
}

/// Whether a member whose view is `ring` answers a lease ping from `caller` with a grant
/// ([`Lease`]): only while its view counts the caller as a live member. A member that has
/// declared the caller down is moving, or has moved, the caller's keys to other primaries;
/// extending the caller's lease then would let two primaries acknowledge writes of one key
/// (the case of a caller that can still reach it over TCP while gossip between them is
/// lost).
pub fn grants_lease(ring: &Ring, caller: &str) -> bool {
    ring.nodes().iter().any(|n| n == caller)
}

/// Most members a lease answer may name ([`crate::rpc::Response::LeaseView`]): an answer
/// naming more does not count.
pub const MAX_LEASE_MEMBERS: usize = 1024;

/// Whether a member's answer to this node's lease ping counts for this node's execution
/// lease ([`ExecLease`]; its liveness lease takes every `granted` as before): the member's
/// view counts this node live (`granted`), and — when it told its view
/// ([`GrantView::answer`]: how long it held this node, and how many members it named; an
/// earlier build tells nothing, `None`, and counts as before) — has held it for
/// `window_ms` or more, and named no more than [`MAX_LEASE_MEMBERS`]. The members it named
/// then join the ring this node executes on ([`ExecLease::grant`]).
pub fn grant_counts(granted: bool, told: Option<(u64, usize)>, window_ms: u64) -> bool {
    granted
        && told.is_none_or(|(held_ms, named)| held_ms >= window_ms && named <= MAX_LEASE_MEMBERS)
}

/// Why [`ExecLease::admits`] refused a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecWait {
    /// No majority's grants are current; `fresh` members' are.
    Lease {
        /// Members whose grant is current.
        fresh: usize,
    },
    /// This member, lost from this node's view within the window of a grant this node gave
    /// it, or named by grants without which no
    /// majority's are current, precedes this node on the key.
    Precedes(String),
    /// The ring is not built yet (no view).
    NoRing,
}

// A member restarted under its name forgets what its view lost (its `GrantView` starts
// empty), while the others' grants may still count its previous life's: it executes
// nothing until its view has settled (`placement::Joining`), by which time every lease its
// previous life granted has run out.
const _: () = assert!(crate::placement::Joining::SETTLE_MS >= Lease::LEASE_MS);

/// A primary's execution lease (decisions 129 and 130): the grants of a majority
/// ([`Lease`]) from members that held this node for the grant window ([`grant_counts`]),
/// each with the members it named (the answerer's view, with the members it lost within
/// the window of its last grant to them: [`GrantView`]), and the members this node's own
/// view lost likewise. A key executes here only when this node is its primary in its view,
/// no member its view so lost precedes it on the key, and a majority's current grants name no
/// member that precedes it on the key ([`ExecLease::admits`]). The members named and lost
/// form a ring besides the view (`members` below) to find who precedes this node on a
/// key; for most keys no one does and any majority's grants admit them.
///
/// Two members A and B that execute one key at once each had grants of a majority
/// (themselves included) that named no member preceding them on it, so the two
/// majorities share a member X, whose answers to both came less than a lease apart
/// (each was received before that instant and sent within a lease of it):
/// - X a third member: X held B for the window before it answered B, so its answer to A
///   named B (held then, or lost since, less than a window after granting it): A's
///   majority could not
///   count it unless A precedes B on the key; likewise B's, the other way round;
/// - X is A (A granted B): A held B then, and still does (its view has B) or lost it
///   less than a window after that grant: A does not execute a key B precedes it on; A
///   named itself to B.
///
/// Consistent hashing keeps the order of members two rings share, so only one of A and B
/// precedes the other on the key. Before (decision 129 as first built) a grant counted
/// only when this node's view held every member it named, and after this view lost a
/// member only grants sent since counted: every key of every primary waited about 1.5 s
/// after each membership change (about 30 % fewer increments acknowledged than before it
/// in the partition review's flapping cuts), a member whose view lacked one the others saw (a lasting one-way cut)
/// executed nothing, and the second case above was open (the majorities of A and B may
/// share only A, whose own loss of B was not counted). Now only keys a member named or
/// lately lost precedes this node on wait, and only while no majority's grants leave that
/// member out; and a member lost without a grant in the window (it crashed, or was cut off
/// both ways, so it got none while failure detection took seconds to declare it down)
/// holds nothing back at all: its keys move at once, as before decision 129.
///
/// Executions re-check this before each replication (the node's `replicate_all`), so that
/// an execution's checks are never more than a replication apart: the window's slack over
/// a lease (`cluster.rpc_timeout_ms`) covers the time between them.
#[derive(Debug, Clone, Default)]
pub struct ExecLease {
    lease: Lease,
    /// Per member: when the ping of its latest counted answer was sent, and what it named.
    named: std::collections::BTreeMap<String, (u64, Vec<String>)>,
    /// The members this node's view lost within the window of a grant to them, sorted (as
    /// of the last
    /// [`ExecLease::refresh`]).
    lost: Vec<String>,
    /// The members `ring` holds, sorted: this node, its view's losses within the window,
    /// and every member a current grant named.
    members: Vec<String>,
    /// The ring of `members` (`None`: not built yet, nothing executes).
    ring: Option<std::sync::Arc<Ring>>,
    /// The view's points per member, for `ring`.
    vnodes: u16,
}

impl ExecLease {
    /// `member` answered a ping sent at `sent_at_ms` (this node's monotonic ms) with a
    /// grant that counts ([`grant_counts`]), naming `named` (none from an earlier build).
    /// A name the ring lacks enters it before the grant counts.
    pub fn grant<'a>(
        &mut self,
        member: &str,
        sent_at_ms: u64,
        named: impl IntoIterator<Item = &'a str>,
        expected: usize,
    ) {
        let named: Vec<String> = named.into_iter().map(str::to_owned).collect();
        let newer = self
            .named
            .get(member)
            .is_none_or(|(at, _)| *at <= sent_at_ms);
        if newer {
            // Before the first refresh nothing executes, and the ring waits for the view's
            // points per member.
            if self.ring.is_some() && named.iter().any(|n| self.members.binary_search(n).is_err()) {
                let mut members = std::mem::take(&mut self.members);
                members.extend(named.iter().cloned());
                members.sort_unstable();
                members.dedup();
                self.rebuild(members);
            }
            self.named.insert(member.to_owned(), (sent_at_ms, named));
        }
        self.lease.grant(member, sent_at_ms, expected);
    }

    /// Forgets the grants of members for which `keep` is false (those that left the view);
    /// what they named stays in the ring until the next [`ExecLease::refresh`].
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool, expected: usize) {
        self.named.retain(|m, _| keep(m));
        self.lease.retain(keep, expected);
    }

    /// Rebuilds the ring at `now_ms` (at every view change, before the new view is used,
    /// and on every lease tick): `me`, the members `view` lost within the window of a grant
    /// (`lost`:
    /// [`GrantView::lost_within`]), and the names of every grant still current (sent within
    /// [`Lease::LEASE_MS`]). Names of grants that ran out leave it.
    pub fn refresh<'a>(
        &mut self,
        me: &str,
        view: &Ring,
        lost: impl IntoIterator<Item = &'a str>,
        now_ms: u64,
    ) {
        self.vnodes = view.vnodes();
        self.lost = lost.into_iter().map(str::to_owned).collect();
        self.lost.sort_unstable();
        self.lost.dedup();
        let mut members: Vec<String> = vec![me.to_owned()];
        members.extend(self.lost.iter().cloned());
        for (at, named) in self.named.values() {
            if at.saturating_add(Lease::LEASE_MS) > now_ms {
                members.extend(named.iter().cloned());
            }
        }
        members.sort_unstable();
        members.dedup();
        if self.ring.is_none() || members != self.members {
            self.rebuild(members);
        }
    }

    /// Builds the ring of `members` (sorted, each once).
    fn rebuild(&mut self, members: Vec<String>) {
        self.ring = Some(std::sync::Arc::new(Ring::new(
            members.iter().cloned(),
            self.vnodes.max(1),
        )));
        self.members = members;
    }

    /// Whether a majority's grants hold at `now_ms` ([`Lease::holds`]).
    pub fn holds(&self, now_ms: u64, expected: usize) -> bool {
        self.lease.holds(now_ms, expected)
    }

    /// Whether `me` may execute `key` at `now_ms` in a cluster of `expected` members (it
    /// must be the key's primary in its view too): a majority's grants hold, no member its
    /// view lost within the window of a grant precedes it on the key, and grants of a majority
    /// (`expected / 2` others) are current that name no member preceding it there. Most
    /// keys have none: `me` is their first member in the ring of every name, and any
    /// majority's grants do. Nothing before the first [`ExecLease::refresh`].
    pub fn admits(
        &self,
        me: &str,
        key: &[u8],
        now_ms: u64,
        expected: usize,
    ) -> Result<(), ExecWait> {
        if !self.lease.holds(now_ms, expected) {
            return Err(ExecWait::Lease {
                fresh: self.lease.fresh(now_ms),
            });
        }
        let Some(ring) = self.ring.as_ref() else {
            return Err(ExecWait::NoRing);
        };
        if primary(ring, key) == Some(me) {
            return Ok(());
        }
        let ahead: Vec<&str> = ring
            .owners_of_hash(crate::ring::key_hash(key), ring.nodes().len())
            .into_iter()
            .take_while(|n| *n != me)
            .collect();
        if let Some(lost) = ahead
            .iter()
            .find(|n| self.lost.binary_search_by(|m| m.as_str().cmp(n)).is_ok())
        {
            return Err(ExecWait::Precedes((*lost).to_owned()));
        }
        let clean = self
            .named
            .values()
            .filter(|(at, named)| {
                at.saturating_add(Lease::LEASE_MS) > now_ms
                    && !named.iter().any(|n| ahead.contains(&n.as_str()))
            })
            .count();
        if expected <= 2 || clean >= expected / 2 {
            Ok(())
        } else {
            Err(ExecWait::Precedes(
                ahead.first().map_or_else(String::new, |n| (*n).to_owned()),
            ))
        }
    }

    /// The members the ring holds, sorted.
    pub fn members(&self) -> &[String] {
        &self.members
    }
}

/// What a member answers to lease pings ([`grant_counts`]): its view's members, each with
/// when it entered the view, and the members that left it after this member granted them
/// a lease, with when it last did, for the grant window (`window_ms`: a lease's
/// [`Lease::LEASE_MS`] and the longest a ping's answer may take). On the member's own
/// monotonic clock.
///
/// Only a lost member granted within the window may still hold a lease on this member's
/// word, so only such a member is named, and kept from this member's own executions
/// ([`ExecLease::refresh`]): a member that crashed, or was cut off both ways, got no
/// grant in the seconds failure detection took to declare it down, and its keys move at
/// once (decision 130).
#[derive(Debug, Clone, Default)]
pub struct GrantView {
    live: std::collections::BTreeMap<String, u64>,
    /// Per member the view holds: when this member last granted it a lease.
    granted: std::collections::BTreeMap<String, u64>,
    /// Per member lost since a grant: when this member last granted it one.
    gone: std::collections::BTreeMap<String, u64>,
}

impl GrantView {
    /// The view's ring at `now_ms`: its new members entered now, the members it lost left
    /// now; those last granted more than `window_ms` ago are forgotten.
    pub fn observe(&mut self, ring: &Ring, now_ms: u64, window_ms: u64) {
        let names = ring.nodes();
        let lost: Vec<String> = self
            .live
            .keys()
            .filter(|n| names.binary_search(n).is_err())
            .cloned()
            .collect();
        for n in lost {
            self.live.remove(&n);
            if let Some(at) = self.granted.remove(&n) {
                let t = self.gone.entry(n).or_insert(at);
                *t = (*t).max(at);
            }
        }
        for n in names {
            if !self.live.contains_key(n) {
                // Back within the window of a grant: the grant's time stays, so that a
                // second loss before the next grant still names it (attack review
                // helper-115: a ring installed late by one of two refreshes brought a
                // member back for a moment).
                if let Some(at) = self.gone.remove(n) {
                    self.granted.insert(n.clone(), at);
                }
                self.live.insert(n.clone(), now_ms);
            }
        }
        self.gone
            .retain(|_, at| now_ms.saturating_sub(*at) <= window_ms);
    }

    /// Whether the view holds `member` (a grant goes only to a member it holds: the node's
    /// ring and this view change one after the other).
    pub fn holds(&self, member: &str) -> bool {
        self.live.contains_key(member)
    }

    /// This member answered `caller`'s lease ping with a grant at `now_ms` (whatever its
    /// view: a caller it lost meanwhile is named for the window after this grant too).
    pub fn note_grant(&mut self, caller: &str, now_ms: u64) {
        let map = if self.live.contains_key(caller) {
            &mut self.granted
        } else {
            &mut self.gone
        };
        match map.get_mut(caller) {
            Some(t) => *t = (*t).max(now_ms),
            None => {
                map.insert(caller.to_owned(), now_ms);
            }
        }
    }

    /// The members the view lost that this member granted within `window_ms` before
    /// `now_ms` ([`ExecLease::refresh`]).
    pub fn lost_within(&self, now_ms: u64, window_ms: u64) -> impl Iterator<Item = &str> {
        self.gone
            .iter()
            .filter(move |(_, at)| now_ms.saturating_sub(**at) <= window_ms)
            .map(|(n, _)| n.as_str())
    }

    /// The answer to `caller`'s lease ping at `now_ms`: whether the view holds the caller,
    /// for how long (ms; a newcomer counts for execution only after `window_ms`: a caller
    /// that does not see it yet may hold a grant of this member's from before it came), and
    /// the members to name — those the view holds and those it lost that it granted within
    /// `window_ms` (such a member may still hold a lease on this member's grant).
    pub fn answer(&self, caller: &str, now_ms: u64, window_ms: u64) -> (bool, u64, Vec<String>) {
        let held = self
            .live
            .get(caller)
            .map(|since| now_ms.saturating_sub(*since));
        let members = self
            .live
            .keys()
            .chain(
                self.gone
                    .iter()
                    .filter(|(_, at)| now_ms.saturating_sub(**at) <= window_ms)
                    .map(|(n, _)| n),
            )
            .cloned()
            .collect();
        (held.is_some(), held.unwrap_or(0), members)
    }
}

/// Whether a node whose view holds `members` members (itself included) may act as a
/// primary in a cluster of `expected` members (`cluster.expected_size`): only with a
/// majority, so that the two sides of a partition never both acknowledge writes of one key
/// (the minority side refuses them, as a Redis Cluster master cut off from the majority
/// stops taking writes). Clusters of one or two expected members have no majority to lose.
pub fn has_quorum(members: usize, expected: usize) -> bool {
    expected <= 2 || members * 2 > expected
}

/// A node's own stalls (a GC pause, SIGSTOP, a frozen VM), seen from its periodic tick: a
/// node that stalled may wake on a view the cluster left behind, in which it is still the
/// primary of keys that moved and an owner it replicates to is gone. It executes nothing
/// while its ticks are late, and for a quarantine after one was (time for membership to
/// tell it what changed).
#[derive(Debug, Clone, Default)]
pub struct StallGuard {
    last_tick_ms: u64,
    quiet_until_ms: u64,
    stalls: u64,
}

impl StallGuard {
    /// A tick later than this after the previous one is a stall (ticks come every 100 ms).
    /// Under foca's failure detection (about 4 s from suspicion to down on a LAN): a
    /// shorter pause cannot have let the others move the node's keys, and a loaded
    /// machine's late tick is not mistaken for one.
    pub const STALL_MS: u64 = 2_000;
    /// How long a node that stalled executes nothing: over foca's failure detection, so
    /// that a view the others changed meanwhile has reached it.
    pub const QUARANTINE_MS: u64 = 6_000;

    /// The periodic tick, at `now_ms` on a monotonic clock.
    pub fn tick(&mut self, now_ms: u64) {
        if self.last_tick_ms != 0 && now_ms.saturating_sub(self.last_tick_ms) > Self::STALL_MS {
            self.quiet_until_ms = now_ms + Self::QUARANTINE_MS;
            self.stalls += 1;
        }
        self.last_tick_ms = now_ms;
    }

    /// Whether the node may execute writes as a primary at `now_ms`: its ticks are on time
    /// and no quarantine runs.
    pub fn may_execute(&self, now_ms: u64) -> bool {
        (self.last_tick_ms == 0 || now_ms.saturating_sub(self.last_tick_ms) <= Self::STALL_MS)
            && now_ms >= self.quiet_until_ms
    }

    /// Stalls seen.
    pub fn stalls(&self) -> u64 {
        self.stalls
    }
}

/// A primary's lease: it executes writes only while a majority of the cluster's expected
/// members answered one of its pings within the last [`Lease::LEASE_MS`].
///
/// A view alone cannot tell a node that it was cut off: failure detection takes seconds,
/// and through indirect probes a node can keep members it cannot reach in its view for
/// longer still. Meanwhile the majority side has moved its keys to new primaries. Without a
/// lease the old primary kept acknowledging increments the new one never saw (the
/// simulator, seed 1000: a 7|5 partition in which the minority side still counted two
/// majority members as live and acknowledged four INCRs that were then lost).
///
/// Every [`Lease::PING_EVERY_MS`] a node pings every member of its view over the peer
/// connections; an answer grants the lease from the time the ping was *sent*, on the
/// sender's monotonic clock, so no clock of another node is trusted. The majority side
/// moves a key only after failure detection declared its primary down, which takes longer
/// than a lease lasts after the last answer the primary could get from that side.
#[derive(Debug, Clone, Default)]
pub struct Lease {
    /// Per member: when (this node's monotonic ms) the latest ping it answered was sent.
    grants: std::collections::BTreeMap<String, u64>,
    /// The lease holds before this time (this node's monotonic ms).
    until_ms: u64,
    /// Whether the lease ever held ([`Lease::observe`]).
    held_once: bool,
    /// When [`Lease::observe`] first ran (this life's start, near enough).
    first_observed_ms: Option<u64>,
    /// The last time [`Lease::observe`] found it not holding after it had held, or more
    /// than [`Lease::FIRST_HOLD_MS`] into a life in which it never held.
    lapsed_at_ms: Option<u64>,
    /// When the latest run of lapses began ([`Lease::lapse_began_ms`]).
    lapse_began_ms: Option<u64>,
}

impl Lease {
    /// How often a node pings every member of its view.
    pub const PING_EVERY_MS: u64 = 200;
    /// How long an answered ping counts. Well under foca's failure detection (about 4 s on
    /// a LAN), the time the others take to move a silent primary's keys.
    pub const LEASE_MS: u64 = 1_000;

    /// `member` answered a ping this node sent at `sent_at_ms`; `expected` is the
    /// cluster's expected size.
    pub fn grant(&mut self, member: &str, sent_at_ms: u64, expected: usize) {
        match self.grants.get_mut(member) {
            Some(t) => *t = (*t).max(sent_at_ms),
            None => {
                self.grants.insert(member.to_owned(), sent_at_ms);
            }
        }
        self.recompute(expected);
    }

    /// Forgets the grants of members for which `keep` is false (those that left the view).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool, expected: usize) {
        self.grants.retain(|m, _| keep(m));
        self.recompute(expected);
    }

    fn recompute(&mut self, expected: usize) {
        // A majority counts this node too: it needs `expected / 2` others.
        let others = expected / 2;
        if others == 0 {
            self.until_ms = u64::MAX;
            return;
        }
        let mut times: Vec<u64> = self.grants.values().copied().collect();
        if times.len() < others {
            self.until_ms = 0;
            return;
        }
        times.sort_unstable_by(|a, b| b.cmp(a));
        self.until_ms = times[others - 1].saturating_add(Self::LEASE_MS);
    }

    /// Whether the lease holds at `now_ms` (this node's monotonic ms) in a cluster of
    /// `expected` members. Clusters of one or two expected members have no majority to
    /// lose ([`has_quorum`]): the lease always holds there.
    pub fn holds(&self, now_ms: u64, expected: usize) -> bool {
        expected <= 2 || now_ms < self.until_ms
    }

    /// Whether a majority of a cluster of `expected` members (this node counted) answered
    /// pings this node sent at or after `since_ms`, within [`Lease::LEASE_MS`] of `now_ms`:
    /// after a stall ended at `since_ms`, the others count this node live in its present
    /// life (a member that declared it down grants nothing until it has rejoined, and its
    /// rejoin drops what it held first). Always true for one or two expected members.
    pub fn holds_since(&self, since_ms: u64, now_ms: u64, expected: usize) -> bool {
        // As [`Lease::holds`]: clusters of one or two have no majority to lose.
        let others = expected / 2;
        expected <= 2
            || self
                .grants
                .values()
                .filter(|&&t| t >= since_ms && t.saturating_add(Self::LEASE_MS) > now_ms)
                .count()
                >= others
    }

    /// Members whose grant is current at `now_ms` (for status pages).
    pub fn fresh(&self, now_ms: u64) -> usize {
        self.grants
            .values()
            .filter(|t| t.saturating_add(Self::LEASE_MS) > now_ms)
            .count()
    }

    /// How recent a lapse counts in [`Lease::held_through`]: longer than failure detection
    /// takes to declare a silent member down (about 4–5 s with foca's defaults), so a
    /// lapse that let the others move this node's keys is still remembered when it hears
    /// that they declared it down.
    pub const LAPSE_REMEMBERED_MS: u64 = 15_000;

    /// How long a new life may go without its lease before that counts as a lapse: a
    /// member joins and hears from a majority well within it.
    pub const FIRST_HOLD_MS: u64 = 5_000;

    /// Notes whether the lease holds at `now_ms` (called on every tick): a lapse after it
    /// held is remembered for [`Lease::held_through`], and so is a new life still without
    /// it [`Lease::FIRST_HOLD_MS`] after it began. A life that never held its lease was as
    /// cut off as one whose lease lapsed: a member restarted on the minority side of a
    /// one-way partition, declared down there, kept what it owned at its rejoin after the
    /// heal because no lapse was on record (the simulator, seed 1750: copies the majority
    /// had already counted lost with it).
    pub fn observe(&mut self, now_ms: u64, expected: usize) {
        let first = *self.first_observed_ms.get_or_insert(now_ms);
        if self.holds(now_ms, expected) {
            self.held_once = true;
        } else if self.held_once || now_ms.saturating_sub(first) > Self::FIRST_HOLD_MS {
            let new_run = self
                .lapsed_at_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= Self::LAPSE_REMEMBERED_MS);
            if new_run {
                // It stopped holding when its last grant ran out (`until_ms`), which may be
                // long before this tick: no tick runs while the process is paused, and a
                // lapse run that began at the end of a 70 s pause would have asked the
                // witnesses to remember only since then (an attack review). A life that
                // never held missed everything since it began.
                self.lapse_began_ms = Some(if self.held_once {
                    self.until_ms.min(now_ms)
                } else {
                    first
                });
            }
            self.lapsed_at_ms = Some(now_ms);
        }
    }

    /// When the latest run of lapses began (this node's monotonic ms): when the lease
    /// stopped holding before the first lapse [`Lease::observe`] saw after it had held
    /// through [`Lease::LAPSE_REMEMBERED_MS`] (or this life's start, in a life that never
    /// held it).
    /// Until then the others counted this node live, so every change of a key it owns
    /// reached it (the majority moves a key only after its failure detector declared the
    /// owner down, which takes longer than a lease lasts): a copy it held then was current,
    /// and only changes after this time can have passed it by. `None`: no lapse yet.
    pub fn lapse_began_ms(&self) -> Option<u64> {
        self.lapse_began_ms
    }

    /// The last time [`Lease::observe`] saw a lapse (`None`: never): two readings that
    /// differ have a lapse between them.
    pub fn lapsed_at_ms(&self) -> Option<u64> {
        self.lapsed_at_ms
    }

    /// Whether the lease holds at `now_ms` and did not lapse within the last
    /// [`Lease::LAPSE_REMEMBERED_MS`] (as [`Lease::observe`] saw it): a node that rejoins
    /// without that was cut off from the majority, even if a partition healed in time for
    /// its peers to grant it again before it heard they had declared it down.
    pub fn held_through(&self, now_ms: u64, expected: usize) -> bool {
        self.holds(now_ms, expected)
            && self
                .lapsed_at_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= Self::LAPSE_REMEMBERED_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grant counts for execution only from a member that held this node for the window,
    /// naming no more than the cap; an earlier build's answer, which tells nothing, counts
    /// as it did.
    #[test]
    fn a_grant_counts_only_from_a_member_that_held_this_node_for_the_window() {
        let w = 1_500;
        assert!(grant_counts(true, Some((w, 3)), w));
        assert!(
            !grant_counts(true, Some((w - 1, 3)), w),
            "it has held this node for less than the window"
        );
        assert!(!grant_counts(false, Some((w, 3)), w));
        assert!(grant_counts(true, None, w));
        assert!(!grant_counts(false, None, w));
        assert!(
            !grant_counts(true, Some((w, MAX_LEASE_MEMBERS + 1)), w),
            "too long a list"
        );
    }

    /// Keys whose primary would be a member this view lost within the window of a grant to
    /// it wait; so do
    /// keys a member named precedes this node on, while no majority's current grants leave
    /// that member out; every other key executes.
    #[test]
    fn an_execution_lease_admits_only_keys_no_named_or_lately_lost_member_precedes() {
        let w = 1_500;
        let view = Ring::new(["a", "b", "c"], 16);
        let wider = Ring::new(["a", "b", "c", "d"], 16);
        // Keys a is primary of in its view: some of them d would take.
        let keys: Vec<Vec<u8>> = (0..2_000u32)
            .map(|i| format!("k{i}").into_bytes())
            .filter(|k| primary(&view, k) == Some("a"))
            .collect();
        let taken = |k: &Vec<u8>| primary(&wider, k) == Some("d");
        assert!(keys.iter().any(taken) && !keys.iter().all(taken));
        let mut e = ExecLease::default();
        e.grant("b", 0, ["a", "b", "c"], 3);
        assert_eq!(
            e.admits("a", &keys[0], 10, 3),
            Err(ExecWait::NoRing),
            "nothing before the first refresh"
        );
        e.refresh("a", &view, [], 20);
        assert!(keys.iter().all(|k| e.admits("a", k, 30, 3).is_ok()));
        assert_eq!(
            e.admits("a", &keys[0], 1_000, 3),
            Err(ExecWait::Lease { fresh: 0 }),
            "the grant ran out"
        );
        e.grant("b", 1_100, ["a", "b", "c"], 3);
        // c's answer names d, which a's view lacks (a one-way cut keeps d from a); b's
        // grant, current, leaves d out: a majority's (a and b) still admit every key.
        e.grant("c", 1_300, ["a", "b", "c", "d"], 3);
        assert!(keys.iter().all(|k| e.admits("a", k, 1_400, 3).is_ok()));
        // b's grant ran out: d's keys wait, the others execute on c's grant.
        for k in &keys {
            let r = e.admits("a", k, 2_150, 3);
            if taken(k) {
                assert_eq!(r, Err(ExecWait::Precedes("d".into())));
            } else {
                assert!(r.is_ok());
            }
        }
        e.grant("b", 2_200, ["a", "b", "c"], 3);
        assert!(keys.iter().all(|k| e.admits("a", k, 2_250, 3).is_ok()));
        // Refreshed once c's grant ran out, d leaves the ring.
        e.refresh("a", &view, [], 2_301);
        assert_eq!(e.members(), ["a", "b", "c"]);
        // This node's own view loses d within the window (the second case: its majority and
        // d's may share only this node): d's keys wait whatever the grants name.
        let mut g = GrantView::default();
        g.observe(&wider, 0, w);
        g.note_grant("d", 2_990);
        g.observe(&view, 3_000, w);
        e.refresh("a", &view, g.lost_within(3_100, w), 3_100);
        e.grant("b", 3_100, ["a", "b", "c"], 3);
        e.grant("c", 3_100, ["a", "b", "c"], 3);
        for k in &keys {
            assert_eq!(e.admits("a", k, 3_200, 3).is_ok(), !taken(k));
        }
        e.refresh("a", &view, g.lost_within(4_491, w), 4_491);
        e.grant("b", 4_491, ["a", "b", "c"], 3);
        assert!(keys.iter().all(|k| e.admits("a", k, 4_600, 3).is_ok()));
    }

    /// Five members, the four left when b leaves, and a key b is primary of that a takes.
    fn b_leaves_five() -> (Ring, Ring, Vec<u8>) {
        let five = Ring::new(["a", "b", "c", "d", "e"], 16);
        let four = Ring::new(["a", "c", "d", "e"], 16);
        let key = (0..5_000u32)
            .map(|i| format!("k{i}").into_bytes())
            .find(|k| primary(&five, k) == Some("b") && primary(&four, k) == Some("a"))
            .expect("a key of b's that a takes");
        (five, four, key)
    }

    /// The case decision 129's first rule left open: b's lease rests on a's grant and c's,
    /// a's on d's and e's; d and e lost b long ago, a only now. Each holds a majority (five
    /// expected); b is primary of its keys in its view, a of them in its own. a's own loss
    /// of b keeps b's keys from it for the window.
    #[test]
    fn a_member_that_granted_another_does_not_take_its_keys_within_the_window() {
        let w = 1_500;
        let (five, four, key) = b_leaves_five();
        let mut a_view = GrantView::default();
        a_view.observe(&five, 0, w);
        // a granted b at 9,900 (and held it since 0); a's view loses b at 10,000.
        a_view.note_grant("b", 9_900);
        let (live, held, _) = a_view.answer("b", 9_900, w);
        assert!(live && grant_counts(true, Some((held, 5)), w));
        a_view.observe(&four, 10_000, w);
        let mut a = ExecLease::default();
        a.refresh("a", &four, a_view.lost_within(10_000, w), 10_000);
        a.grant("d", 10_050, ["a", "c", "d", "e"], 5);
        a.grant("e", 10_050, ["a", "c", "d", "e"], 5);
        assert!(a.holds(10_100, 5), "a majority granted a");
        assert!(primary(&four, &key) == Some("a"));
        assert_eq!(
            a.admits("a", &key, 10_100, 5),
            Err(ExecWait::Precedes("b".into())),
            "b, lately lost, precedes a on its key"
        );
        a.refresh("a", &four, a_view.lost_within(11_401, w), 11_401);
        a.grant("d", 11_401, ["a", "c", "d", "e"], 5);
        a.grant("e", 11_401, ["a", "c", "d", "e"], 5);
        assert!(
            a.admits("a", &key, 11_450, 5).is_ok(),
            "a window after a's last grant to b (that lease ran out)"
        );
        // Had a never granted b (b crashed, or was cut off both ways, before failure
        // detection declared it down), b's keys would have moved to a at once.
        let mut quiet = GrantView::default();
        quiet.observe(&five, 0, w);
        quiet.observe(&four, 10_000, w);
        let mut a = ExecLease::default();
        a.refresh("a", &four, quiet.lost_within(10_000, w), 10_000);
        a.grant("d", 10_050, ["a", "c", "d", "e"], 5);
        a.grant("e", 10_050, ["a", "c", "d", "e"], 5);
        assert!(a.admits("a", &key, 10_100, 5).is_ok());
    }

    /// A member that one grant names and the majority's grants do not (a view that kept a
    /// member the others dropped) holds no key back.
    #[test]
    fn one_granters_view_holds_no_key_back_from_a_majority() {
        let (_, four, key) = b_leaves_five();
        let mut a = ExecLease::default();
        a.refresh("a", &four, [], 0);
        a.grant("e", 100, ["a", "b", "c", "d", "e"], 5);
        a.grant("c", 100, ["a", "c", "d", "e"], 5);
        assert_eq!(
            a.admits("a", &key, 200, 5),
            Err(ExecWait::Precedes("b".into())),
            "c's grant alone leaves b out: not a majority's"
        );
        a.grant("d", 150, ["a", "c", "d", "e"], 5);
        assert!(a.admits("a", &key, 200, 5).is_ok());
    }

    /// A member tells how long its view has held a caller, and names the members it lost
    /// within the window as well as those it holds.
    #[test]
    fn a_grant_view_tells_how_long_it_held_a_caller_and_names_members_lately_lost() {
        let w = 1_500;
        let mut g = GrantView::default();
        g.observe(&Ring::new(["a", "b", "c", "e"], 16), 0, w);
        assert_eq!(g.answer("b", 1_000, w).1, 1_000, "b came 1 s ago");
        let (live, held, named) = g.answer("b", 1_500, w);
        assert!(live && held == 1_500);
        assert_eq!(named, ["a", "b", "c", "e"]);
        assert!(!g.answer("d", 2_000, w).0, "not in the view");
        // c was granted at 1.9 s; c and e (never granted: a crash, a cut both ways) leave
        // at 2 s, d comes.
        g.note_grant("c", 1_900);
        g.observe(&Ring::new(["a", "b", "d"], 16), 2_000, w);
        let (live, held, named) = g.answer("b", 2_100, w);
        assert!(live && held == 2_100, "b stayed");
        assert_eq!(
            named,
            ["a", "b", "d", "c"],
            "c is named until 3.4 s, e not at all"
        );
        assert_eq!(g.lost_within(3_400, w).collect::<Vec<_>>(), ["c"]);
        assert_eq!(g.answer("d", 3_000, w).1, 1_000);
        assert_eq!(g.answer("b", 3_401, w).2, ["a", "b", "d"]);
        assert_eq!(g.lost_within(3_401, w).count(), 0);
        // A grant to a member the view no longer holds (the answer raced a ring change)
        // names it for the window all the same.
        g.note_grant("e", 3_500);
        assert_eq!(g.answer("b", 4_900, w).2, ["a", "b", "d", "e"]);
        // c comes back: a newcomer again.
        g.observe(&Ring::new(["a", "b", "c", "d"], 16), 4_000, w);
        assert_eq!(g.answer("c", 5_000, w).1, 1_000);
        // Granted, lost, back for a moment and lost again before another grant: still
        // named for the window of that grant.
        g.note_grant("c", 6_000);
        g.observe(&Ring::new(["a", "b", "d"], 16), 6_100, w);
        g.observe(&Ring::new(["a", "b", "c", "d"], 16), 6_300, w);
        g.observe(&Ring::new(["a", "b", "d"], 16), 6_400, w);
        assert_eq!(g.lost_within(7_500, w).collect::<Vec<_>>(), ["c"]);
        assert_eq!(g.lost_within(7_501, w).count(), 0);
    }

    use bytes::Bytes;
    use strata_core::Version;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn a_lease_since_a_stall_counts_only_pings_sent_after_it() {
        let mut l = Lease::default();
        l.grant("n1", 1_000, 5);
        l.grant("n2", 1_100, 5);
        // Granted, but by pings sent before the stall ended at 1,050.
        assert!(l.holds(1_200, 5));
        assert!(!l.holds_since(1_050, 1_200, 5));
        l.grant("n1", 1_300, 5);
        assert!(l.holds_since(1_050, 1_400, 5));
        // Stale grants do not count.
        assert!(!l.holds_since(1_050, 2_200, 5));
        // Clusters of one or two expected members have no majority to wait for.
        assert!(Lease::default().holds_since(5, 10, 2));
    }

    #[test]
    fn a_wait_that_cuts_a_tenth_of_an_expiry_refuses_the_command() {
        // PX 3000 accepted at 1000: 299 ms of waiting is fine, 300 is not, nor a past expiry.
        assert!(!waited_past_expiry(1000, Some(4000), 1299));
        assert!(waited_past_expiry(1000, Some(4000), 1300));
        assert!(waited_past_expiry(1000, Some(4000), 7000));
        // Short TTLs get 50 ms; no expiry, or one already past when accepted (a deletion),
        // never refuses.
        assert!(!waited_past_expiry(1000, Some(1100), 1049));
        assert!(waited_past_expiry(1000, Some(1100), 1050));
        assert!(!waited_past_expiry(1000, None, 60_000));
        assert!(!waited_past_expiry(1000, Some(900), 60_000));
        // What one attempt may take in all: the same tenth.
        assert_eq!(expiry_wait_budget_ms(1000, Some(4000)), Some(300));
        assert_eq!(expiry_wait_budget_ms(1000, Some(1100)), Some(50));
        assert_eq!(expiry_wait_budget_ms(1000, Some(900)), None);
        assert_eq!(expiry_wait_budget_ms(1000, None), None);
        assert!(!waited_past_expiry(1000, Some(1000), 60_000));
        // A day's TTL waits through any failover.
        assert!(!waited_past_expiry(0, Some(86_400_000), 10_000));
    }

    #[test]
    fn only_the_primary_in_the_owners_view_may_replicate() {
        let ring = Ring::new(names(3), 64);
        let p = primary(&ring, b"k").expect("a primary").to_owned();
        assert!(admits_replication(&ring, 3, 3, b"k", &p).is_ok());
        let other = names(3)
            .into_iter()
            .find(|n| *n != p)
            .expect("another node");
        assert_eq!(
            admits_replication(&ring, 3, 3, b"k", &other),
            Err(Some(p.clone()))
        );
        // An owner that sees only a minority of the cluster takes no change at all.
        assert_eq!(admits_replication(&ring, 1, 3, b"k", &p), Err(None));
        assert_eq!(admits_replication(&ring, 3, 7, b"k", &p), Err(None));
        assert!(admits_replication(&ring, 4, 7, b"k", &p).is_ok());
        assert!(admits_replication(&ring, 1, 2, b"k", &p).is_ok());
        // The primary leaves the owners' ring: its replication is refused from then on.
        let without: Vec<String> = names(3).into_iter().filter(|n| *n != p).collect();
        let moved = Ring::new(without, 64);
        assert!(admits_replication(&moved, 2, 3, b"k", &p).is_err());
        assert!(!replicas(&ring, &p, b"k", 2).contains(&p));
        assert_eq!(replicas(&ring, &p, b"k", 2).len(), 1);
    }

    #[test]
    fn a_put_skips_the_read_only_with_one_replica_and_no_other_owner() {
        let one = vec!["n1".to_owned()];
        assert!(!reads_before_put(&["n1"], &one));
        // A previous owner in a hand-off window, or a second replica: read first.
        assert!(reads_before_put(&["n1", "n2"], &one));
        let two = vec!["n1".to_owned(), "n2".to_owned()];
        assert!(reads_before_put(&["n1", "n2"], &two));
        // The plan names someone the write does not replicate to.
        assert!(reads_before_put(&["n2"], &one));
        // No replica at all (one owner): the primary's own store is the only copy, and it
        // has none; nothing to ask either way.
        assert!(reads_before_put(&[], &[]));
    }

    #[test]
    fn only_a_member_that_counts_the_caller_live_grants_its_lease() {
        let ring = Ring::new(names(3), 64);
        assert!(grants_lease(&ring, "n0"));
        // n0 declared down in this view: its pings still arrive (TCP), but grant nothing.
        let without = Ring::new(vec!["n1".to_owned(), "n2".to_owned()], 64);
        assert!(!grants_lease(&without, "n0"));
        assert!(grants_lease(&without, "n1"));
    }

    #[test]
    fn a_primary_starts_from_its_own_copy_else_the_newest_answer() {
        let e = |v: u64| Entry::new(Bytes::from_static(b"x"), Version::from_u64(v));
        assert_eq!(
            starting_point(Some(e(1)), [Some(e(9))]).map(|e| e.version.as_u64()),
            Some(1)
        );
        assert_eq!(
            starting_point(None, [Some(e(3)), None, Some(e(7))]).map(|e| e.version.as_u64()),
            Some(7)
        );
        assert!(starting_point(None, [None, None]).is_none());
        assert!(replica_is_ahead(Some(&e(6)), 5));
        assert!(!replica_is_ahead(Some(&e(5)), 5));
        assert!(replica_is_ahead(Some(&e(1)), 0));
        assert!(!replica_is_ahead(None, 0));
        assert!(has_quorum(1, 1) && has_quorum(1, 2));
        assert!(has_quorum(2, 3) && !has_quorum(1, 3));
        assert!(has_quorum(3, 4) && !has_quorum(2, 4));
    }

    #[test]
    fn a_late_tick_quarantines_the_node() {
        let mut g = StallGuard::default();
        assert!(g.may_execute(5));
        g.tick(100);
        g.tick(200);
        assert!(g.may_execute(250));
        // Woken after a pause: its tick has not run yet, then it does, late.
        assert!(g.may_execute(200 + StallGuard::STALL_MS));
        assert!(!g.may_execute(5_000));
        g.tick(5_000);
        assert!(!g.may_execute(5_100));
        g.tick(5_100);
        assert!(!g.may_execute(5_200));
        let mut t = 5_100;
        while t < 5_000 + StallGuard::QUARANTINE_MS {
            t += 100;
            g.tick(t);
        }
        assert!(g.may_execute(t));
        assert_eq!(g.stalls(), 1);
    }

    #[test]
    fn operations_round_trip_and_garbage_is_refused() {
        let op = PrimaryOp::Key(KeyOp::IncrBy(-3));
        assert_eq!(PrimaryOp::decode(&op.encode()), Some(op));
        assert_eq!(PrimaryOp::decode(&[0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn exec_replies_decode_flat_and_refuse_nesting() {
        use strata_core::ops::Reply;
        let flat = Reply::Exec(Some(vec![
            Reply::Ok,
            Reply::Nil,
            Reply::Int(-3),
            Reply::Bulk(b"v".to_vec()),
            Reply::Error("ERR x".into()),
            Reply::Status("string".into()),
        ]));
        let bytes = postcard::to_allocvec(&flat).unwrap();
        assert_eq!(postcard::from_bytes::<Reply>(&bytes).unwrap(), flat);
        let aborted = postcard::to_allocvec(&Reply::Exec(None)).unwrap();
        assert_eq!(
            postcard::from_bytes::<Reply>(&aborted).unwrap(),
            Reply::Exec(None)
        );
        // A peer cannot make the decoder recurse: an Exec inside an Exec is refused.
        let mut nested = Reply::Exec(Some(vec![]));
        for _ in 0..3 {
            nested = Reply::Exec(Some(vec![nested]));
        }
        let bytes = postcard::to_allocvec(&nested).unwrap();
        assert!(postcard::from_bytes::<Reply>(&bytes).is_err());
    }

    #[test]
    fn the_lease_needs_a_majority_of_answers_within_its_length() {
        let mut l = Lease::default();
        // Five expected members: two others must have answered.
        assert!(!l.holds(10, 5));
        l.grant("a", 100, 5);
        assert!(!l.holds(150, 5), "one answer is not a majority of five");
        l.grant("b", 300, 5);
        assert!(l.holds(301, 5));
        // It lasts from the older of the two sends that make the majority.
        assert!(l.holds(100 + Lease::LEASE_MS - 1, 5));
        assert!(!l.holds(100 + Lease::LEASE_MS, 5));
        l.grant("a", 900, 5);
        assert!(l.holds(300 + Lease::LEASE_MS - 1, 5));
        assert!(!l.holds(300 + Lease::LEASE_MS, 5));
        // An older answer arriving late does not shorten it.
        l.grant("b", 200, 5);
        assert!(l.holds(300 + Lease::LEASE_MS - 1, 5));
        // A member that left the view no longer counts.
        l.retain(|m| m != "b", 5);
        assert!(!l.holds(400, 5));
        assert_eq!(l.fresh(400), 1);
        // One or two expected members: no majority to lose.
        assert!(Lease::default().holds(u64::MAX - 1, 2));
        assert!(Lease::default().holds(0, 1));
        // Three: one other answer is a majority.
        let mut three = Lease::default();
        three.grant("x", 50, 3);
        assert!(three.holds(60, 3) && !three.holds(50 + Lease::LEASE_MS, 3));
    }

    /// A lapse is remembered for [`Lease::LAPSE_REMEMBERED_MS`]: a node whose peers granted
    /// its lease again before it heard it was declared down was still cut off.
    #[test]
    fn a_recent_lapse_counts_against_the_lease_at_a_rejoin() {
        let mut l = Lease::default();
        l.observe(0, 3);
        l.grant("x", 100, 3);
        l.observe(150, 3);
        assert!(l.held_through(150, 3), "held since its life began");
        // A life that goes without its lease past its first seconds lapsed.
        let mut late = Lease::default();
        late.observe(0, 3);
        late.observe(Lease::FIRST_HOLD_MS, 3);
        assert!(
            late.lapsed_at_ms.is_none(),
            "not yet: it may still be joining"
        );
        late.observe(Lease::FIRST_HOLD_MS + 100, 3);
        late.grant("x", Lease::FIRST_HOLD_MS + 200, 3);
        late.observe(Lease::FIRST_HOLD_MS + 300, 3);
        assert!(late.holds(Lease::FIRST_HOLD_MS + 300, 3));
        assert!(
            !late.held_through(Lease::FIRST_HOLD_MS + 300, 3),
            "a life without its lease for its first 5 s was cut off"
        );
        assert_eq!(
            late.lapse_began_ms(),
            Some(0),
            "a life that never held may have missed everything since it began"
        );
        let start = 150;
        assert_eq!(l.lapse_began_ms(), None);
        // Cut off: no answer for longer than the lease.
        l.observe(start + Lease::LEASE_MS, 3);
        assert!(!l.held_through(start + Lease::LEASE_MS, 3));
        // It stopped holding when the grant of the ping sent at 100 ran out, before the tick
        // that saw it (a tick after a pause comes late).
        assert_eq!(l.lapse_began_ms(), Some(100 + Lease::LEASE_MS));
        // Lapses in a row are one run: it began with the first.
        l.observe(start + 3_000, 3);
        assert_eq!(l.lapse_began_ms(), Some(100 + Lease::LEASE_MS));
        // The partition heals: granted again, but the lapse is recent.
        let healed = start + 6_000;
        l.grant("x", healed, 3);
        l.observe(healed, 3);
        assert!(l.holds(healed, 3));
        assert!(!l.held_through(healed, 3), "a lapse 5 s ago is remembered");
        // Cut off again soon after: still the same run.
        l.observe(healed + 2 * Lease::LEASE_MS, 3);
        assert_eq!(l.lapse_began_ms(), Some(100 + Lease::LEASE_MS));
        // Long after, with the lease renewed all along: it held through.
        // (the lapse at `healed + 2 s` above is the latest one remembered)
        let later = healed + 2 * Lease::LEASE_MS + Lease::LAPSE_REMEMBERED_MS;
        l.grant("x", later - 10, 3);
        l.observe(later, 3);
        assert!(l.held_through(later, 3));
        // A lapse after the lease held through begins a new run: when its last grant ran
        // out, even if the tick that sees it comes a long pause later.
        l.observe(later + 70_000, 3);
        assert_eq!(l.lapse_began_ms(), Some(later - 10 + Lease::LEASE_MS));
        // No majority to lose: always.
        assert!(Lease::default().held_through(0, 2));
    }
}
