//! Where a key's reads, writes and hand-off pushes go: pure functions of the ring(s), shared
//! by the node's cluster tier and the simulator, so the simulator checks the placement the
//! node runs.

use crate::ring::Ring;

/// The nodes a read of `key` asks, in order: the key's owners under `ring`, then the owners
/// under each of the `previous` rings (those seen before the last changes, newest first,
/// while the hand-off window is open) that were not already listed. A node that joined owns
/// keys it has never seen; asking the previous owners next turns what would be a miss into
/// a hit (hand-off). Several rings back, not one: after changes in quick succession (a node
/// leaves, comes back, another crashes) the only copy may be on an owner of two rings ago.
pub fn read_plan(
    ring: &Ring,
    previous: &[&Ring],
    key: &[u8],
    replication_factor: usize,
) -> Vec<String> {
    let mut plan: Vec<String> = ring
        .owners(key, replication_factor)
        .into_iter()
        .map(str::to_owned)
        .collect();
    for prev in previous {
        for n in prev.owners(key, replication_factor) {
            if !plan.iter().any(|p| p == n) {
                plan.push(n.to_owned());
            }
        }
    }
    plan
}

/// Whether a node whose ring changes from `old` (`None`: it had none yet) to `new` is still
/// joining the cluster: it had no ring or was alone on it (it just started, or had been cut
/// off from everyone), or it was joining (`was`) and its view has only grown since — it
/// finds the members one at a time, and each ring it sees on the way lacks some of them.
pub fn still_joining(was: bool, old: Option<&Ring>, new: &Ring, me: &str) -> bool {
    match old {
        Some(o) if o.nodes().iter().any(|n| n != me) => {
            was && o.nodes().iter().all(|n| new.nodes().contains(n))
        }
        _ => true,
    }
}

/// A node's joining state: from its start, or a rejoin after being cut off from everyone,
/// until its view has not changed for [`Joining::SETTLE_MS`]. While joining, a node
/// executes nothing as a primary: a member it has not found yet may hold the only copy of
/// a key it now owns, and its read plan cannot ask it (simulator seed 10011: a primary
/// restarted 0.4 s before restarted a counter from nothing, while the old replica it had
/// not found yet held 68 acknowledged increments). And while its view has only grown
/// since it began, it keeps the others' ring as it finds them for hand-off reads
/// ([`still_joining`], [`previous_ring`]). A node joins at its start, when it comes back
/// from being cut off (its view was itself alone or short of a majority, or the others
/// declared it down: [`Joining::rejoin`]), and for at most [`Joining::MAX_MS`]: a view that
/// never stays still (members flapping one after another) does not keep its keys
/// unwritable for ever.
#[derive(Debug, Clone)]
pub struct Joining {
    /// Joining: since the start or a rejoin, the view has not stayed still for
    /// `SETTLE_MS` (as of `changed_ms`).
    active: bool,
    /// The view has only grown since the start or the rejoin.
    growing: bool,
    changed_ms: u64,
    began_ms: u64,
}

impl Joining {
    /// How long a joining node's view must stay as it is before it counts as joined: the
    /// members a seed knows reach a new node within a few gossip rounds (under 1 s in the
    /// simulator's faults, found one feed at a time).
    pub const SETTLE_MS: u64 = 1_500;
    /// The longest a node joins, whatever its view does (the default
    /// `cluster.failover_wait_ms`: a write waiting for it still gets its answer).
    pub const MAX_MS: u64 = 10_000;

    /// Joining, from `now_ms` (a monotonic clock).
    pub fn new(now_ms: u64) -> Self {
        Joining {
            active: true,
            growing: true,
            changed_ms: now_ms,
            began_ms: now_ms,
        }
    }

    /// The node came back from being cut off at `now_ms` (the others declared it down and
    /// it rejoined under a new identity): it joins again, keeping the rings it has.
    pub fn rejoin(&mut self, now_ms: u64) {
        *self = Joining {
            growing: false,
            ..Joining::new(now_ms)
        };
    }

    /// Whether the node is still joining at `now_ms`.
    pub fn joining_at(&self, now_ms: u64) -> bool {
        self.active
            && now_ms.saturating_sub(self.changed_ms) < Self::SETTLE_MS
            && now_ms.saturating_sub(self.began_ms) < Self::MAX_MS
    }

    /// The node's ring changed from `old` to `new` at `now_ms`, in a cluster of `expected`
    /// members; answers whether it keeps the others' ring ([`still_joining`]), which
    /// [`previous_ring`] takes. A change while joining — a member found or lost — starts
    /// the settling again; a change from a ring of this node alone, or from one short of a
    /// majority to one with it (back from being cut off), begins joining.
    pub fn on_ring_change(
        &mut self,
        old: Option<&Ring>,
        new: &Ring,
        me: &str,
        expected: usize,
        now_ms: u64,
    ) -> bool {
        let joining = self.joining_at(now_ms);
        let alone_before = old.is_none_or(|o| o.nodes().iter().all(|n| n == me));
        let majority_back = old.is_some_and(|o| {
            !crate::primary::has_quorum(o.nodes().len(), expected)
                && crate::primary::has_quorum(new.nodes().len(), expected)
        });
        self.growing = still_joining(joining && self.growing, old, new, me);
        if !joining && (alone_before || majority_back) {
            self.began_ms = now_ms;
        }
        self.active = joining || alone_before || majority_back;
        self.changed_ms = now_ms;
        self.growing
    }

    /// Whether the node may execute as a primary at `now_ms`: it has joined.
    pub fn may_execute(&self, now_ms: u64) -> bool {
        !self.joining_at(now_ms)
    }
}

/// The ring a node keeps for hand-off reads when its own ring changes from `old` to `new`
/// ([`still_joining`] says whether it is `joining`): `old`, unless it is joining. Then the
/// keys it now owns sit with the members it found, placed as they were before it joined:
/// their ring without it, as far as it knows them now — each change of a joining node's
/// view keeps the larger one. (Keeping its solitary ring instead left a restarted primary
/// unable to ask anyone but the current owners, and it restarted a counter from nothing
/// while the previous owner still held it: the simulator, seed 2530. Keeping the others'
/// ring of its first view only, whose members it had found so far, did the same when a
/// key's last copy sat on a member it found later: seed 2962.)
pub fn previous_ring(old: Option<&Ring>, new: &Ring, me: &str, joining: bool) -> Option<Ring> {
    match old {
        Some(o) if !joining => Some(o.clone()),
        _ => others_ring(new, me),
    }
}

/// `ring` without `me` (`None` when no one else is on it): where the others placed keys
/// while they counted `me` out. A node the others declared down and that dropped what it
/// owned (cut off, or its lease lapsed) keeps it for hand-off reads when it rejoins, and
/// at every change of its ring for [`REJOIN_RINGS_MS`] after ([`after_rejoin`]): its
/// view at the rejoin may be stale (a pause) or a minority's (a partition), and the
/// ring the others used is the one without it of the view it then learns. While it was
/// away the others executed its keys on that ring, and the newest copy of a key it owns
/// again may sit only with a member that owned the key there (simulator seed 4680: a
/// primary paused for 13.6 s came back to a counter whose primary meanwhile had evicted
/// its copy, the hand-off push to it was lost, and its read plan — its own rings, all
/// with itself — asked only that primary; it restarted the counter from nothing while the
/// other owner held 21).
pub fn others_ring(ring: &Ring, me: &str) -> Option<Ring> {
    let others: Vec<&String> = ring.nodes().iter().filter(|n| *n != me).collect();
    (!others.is_empty()).then(|| Ring::new(others, ring.vnodes()))
}

/// `ring` without every member in `gone` (`None` when no one else is on it): the ring a
/// member that leaves gracefully hands its keys over to, `gone` holding itself and every
/// member it found leaving too ([`leave_targets`]).
pub fn ring_without(ring: &Ring, gone: &std::collections::BTreeSet<String>) -> Option<Ring> {
    let rest: Vec<&String> = ring.nodes().iter().filter(|n| !gone.contains(*n)).collect();
    (!rest.is_empty()).then(|| Ring::new(rest, ring.vnodes()))
}

/// Where a member that leaves gracefully (`me`, in `gone`) pushes its copy of `key` before
/// it stops: every owner under `ring` without every member of `gone`. The members that stay
/// push only what they hold when their ring drops the leavers; a key whose owners all
/// leave at once (two members stopped by one `SIGTERM` to a deployment) has its copies
/// only on leavers, and is lost unless they pass it on. Owners the key had before get it
/// too: the leaver's copy may be the newest (an owner that missed a replication during a
/// partition), and a push older than what an owner holds is not taken. Empty when no one
/// stays.
pub fn leave_targets(
    ring: &Ring,
    gone: &std::collections::BTreeSet<String>,
    me: &str,
    key: &[u8],
    replication_factor: usize,
) -> Vec<String> {
    ring_without(ring, gone)
        .map(|rest| {
            rest.owners(key, replication_factor)
                .into_iter()
                .filter(|n| *n != me)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Where a hit goes after a read found it at `plan[hit]` ([`read_plan`], whose first
/// `current` entries are the current owners), as read by the node at `plan[me]` (`None`:
/// not in the plan): the node's cluster tier and the simulator both follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Found on a previous owner (a hand-off): store it on the current owners.
    Owners,
    /// `me` owns the key and missed it (restarted, or new to the key): store it in `me`'s
    /// owner store.
    Own,
    /// Nothing to repair.
    None,
}

/// The read repair for a hit at `plan[hit]` read by the node at `plan[me]`; `settling`: a
/// restarted member's proof is waiting out its settle time (a copy read then may predate an
/// invalidation its baseline counted as applied, so its own store is not repaired).
pub fn read_repair(current: usize, hit: usize, me: Option<usize>, settling: bool) -> Repair {
    if hit >= current {
        Repair::Owners
    } else if !settling && me.is_some_and(|m| m < current && m != hit) {
        Repair::Own
    } else {
        Repair::None
    }
}

/// Most rings a node remembers for hand-off reads ([`read_plan`]).
pub const MAX_PREVIOUS_RINGS: usize = 8;

/// How long after a rejoin a node also keeps, at each change of its ring, the ring
/// without it ([`others_ring`]): as long as the default hand-off window.
pub const REJOIN_RINGS_MS: u64 = 30_000;

/// Whether a ring change at `now_ms` comes within [`REJOIN_RINGS_MS`] of a rejoin at
/// `rejoined_ms` (`None`: no rejoin yet).
pub fn after_rejoin(rejoined_ms: Option<u64>, now_ms: u64) -> bool {
    rejoined_ms.is_some_and(|r| now_ms.saturating_sub(r) < REJOIN_RINGS_MS)
}

/// Puts `ring`, kept at `at`, first among a node's previous rings for hand-off reads:
/// an equal ring kept earlier goes (the same ring twice would push a needed older one
/// out), and at most [`MAX_PREVIOUS_RINGS`] stay.
pub fn keep_previous<R: std::borrow::Borrow<Ring>, T>(previous: &mut Vec<(R, T)>, ring: R, at: T) {
    let version = ring.borrow().version();
    previous.retain(|(r, _)| r.borrow().version() != version);
    previous.insert(0, (ring, at));
    previous.truncate(MAX_PREVIOUS_RINGS);
}

/// How many entries of a read plan are owners under the current ring (the rest are
/// previous owners, asked only for a hand-off).
pub fn current_owners(ring: &Ring, replication_factor: usize) -> usize {
    replication_factor.min(ring.nodes().len())
}

/// The nodes an entry this node (`me`) holds should be pushed to after the ring changed from
/// `old` to `new`: owners under `new` that were not owners under `old`, other than `me`.
pub fn handoff_targets(
    old: &Ring,
    new: &Ring,
    me: &str,
    key: &[u8],
    replication_factor: usize,
) -> Vec<String> {
    let before = old.owners(key, replication_factor);
    new.owners(key, replication_factor)
        .into_iter()
        .filter(|n| !before.contains(n) && *n != me)
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_leaving_together_hand_every_key_to_the_members_that_stay() {
        let ring = Ring::new(["a", "b", "c", "d"], 64);
        let both: std::collections::BTreeSet<String> = ["a".into(), "b".into()].into();
        let alone: std::collections::BTreeSet<String> = ["a".into()].into();
        let mut shared = 0;
        for i in 0..2000 {
            let key = format!("k{i}");
            let owners = ring.owners(key.as_bytes(), 2);
            if !owners.contains(&"a") {
                continue;
            }
            // Knowing that "b" leaves too: both owners that stay get it, none leaving.
            let t = leave_targets(&ring, &both, "a", key.as_bytes(), 2);
            let rest = ring_without(&ring, &both).unwrap();
            let mut stay = rest.owners(key.as_bytes(), 2);
            stay.sort_unstable();
            let mut got: Vec<&str> = t.iter().map(String::as_str).collect();
            got.sort_unstable();
            assert_eq!(got, stay, "{key}");
            assert_eq!(t.len(), 2, "{key}");
            shared += usize::from(owners.contains(&"b"));
            // Alone, "a" pushes to the key's owners without it: its other owner too (its
            // copy may be older) and the new one.
            let t = leave_targets(&ring, &alone, "a", key.as_bytes(), 2);
            assert_eq!(t.len(), 2, "{key}");
            assert!(t.iter().all(|n| n != "a"));
            let other = owners.iter().find(|n| **n != "a").unwrap();
            assert!(t.iter().any(|n| n == other), "{key}");
        }
        assert!(shared > 0);
        // No one stays: nowhere to push.
        let all: std::collections::BTreeSet<String> =
            ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert!(leave_targets(&ring, &all, "a", b"k1", 2).is_empty());
    }

    #[test]
    fn read_repair_goes_to_the_owners_after_a_hand_off_and_to_an_owner_that_missed() {
        // Plan [a, b, c], two current owners. Found on a previous owner (index 2).
        assert_eq!(read_repair(2, 2, Some(0), false), Repair::Owners);
        // "b" (index 1) owns the key and found it on "a": it repairs its own store, unless
        // settling.
        assert_eq!(read_repair(2, 0, Some(1), false), Repair::Own);
        assert_eq!(read_repair(2, 0, Some(1), true), Repair::None);
        // A node outside the plan reading from an owner, a previous owner reading from a
        // current one, and an owner's own hit repair nothing.
        assert_eq!(read_repair(2, 0, None, false), Repair::None);
        assert_eq!(read_repair(2, 0, Some(2), false), Repair::None);
        assert_eq!(read_repair(2, 1, Some(1), false), Repair::None);
    }

    #[test]
    fn reads_ask_owners_then_previous_owners_once() {
        let old = Ring::new(["a", "b", "c"], 64);
        let new = Ring::new(["a", "b", "c", "d"], 64);
        let mut moved = 0;
        for i in 0..500 {
            let key = format!("k{i}");
            let plan = read_plan(&new, &[&old], key.as_bytes(), 2);
            let owners = new.owners(key.as_bytes(), 2);
            assert_eq!(plan[..2], owners[..], "owners first, in ring order");
            let mut dedup = plan.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(dedup.len(), plan.len(), "nobody asked twice");
            for n in old.owners(key.as_bytes(), 2) {
                assert!(plan.iter().any(|p| p == n), "previous owner {n} missing");
            }
            let targets = handoff_targets(&old, &new, "a", key.as_bytes(), 2);
            if !targets.is_empty() {
                moved += 1;
                // Only the new node can be a new owner when one node joins.
                assert_eq!(targets, ["d"]);
            }
            assert!(plan.len() <= 3);
        }
        assert!(moved > 100 && moved < 400, "{moved} keys gained an owner");
        assert_eq!(read_plan(&new, &[], b"k", 2).len(), 2);
        assert_eq!(current_owners(&Ring::new(["a"], 8), 2), 1);
    }

    #[test]
    fn a_node_alone_before_keeps_the_others_ring_without_it() {
        let all = Ring::new(["a", "b", "c"], 16);
        let before = Ring::new(["a", "b"], 16);
        // An ordinary change keeps the old ring.
        assert!(!still_joining(false, Some(&before), &all, "a"));
        let kept = previous_ring(Some(&before), &all, "a", false).unwrap();
        assert_eq!(kept.version(), before.version());
        // Just started (no ring, or one of itself alone): the others' ring without it.
        let alone = Ring::new(["c"], 16);
        for old in [None, Some(&alone)] {
            assert!(still_joining(false, old, &all, "c"));
            let p = previous_ring(old, &all, "c", true).unwrap();
            assert_eq!(p.nodes(), before.nodes());
            assert_eq!(p.version(), before.version());
        }
        // Nobody else on the new ring either: nothing to keep.
        assert!(previous_ring(None, &alone, "c", true).is_none());
    }

    /// A node the others declared down keeps their ring without it (seed 4680): a key it
    /// owns again was placed there meanwhile, and the read plan reaches that ring's owners.
    #[test]
    fn a_rejoining_node_asks_the_owners_of_the_ring_without_it() {
        let all = Ring::new(["n0", "n1", "n2", "n3", "n4"], 16);
        let without = others_ring(&all, "n3").unwrap();
        assert_eq!(
            without.version(),
            Ring::new(["n0", "n1", "n2", "n4"], 16).version()
        );
        assert_eq!(without.vnodes(), all.vnodes());
        // A key n3 owns on the full ring, whose other owner there is not its owner on the
        // ring without n3: the plan asks both of the latter's owners.
        let key = (0..1000)
            .map(|i| format!("k{i}").into_bytes())
            .find(|k| {
                let mine = all.owners(k, 2);
                let away = without.owners(k, 2);
                mine[0] == "n3" && away.iter().any(|n| !mine.contains(n))
            })
            .expect("some key moves");
        let plan = read_plan(&all, &[&without], &key, 2);
        for n in without.owners(&key, 2) {
            assert!(plan.iter().any(|p| p == n), "{n} missing from {plan:?}");
        }
        assert!(others_ring(&Ring::new(["n3"], 16), "n3").is_none());
    }

    /// The previous rings hold each ring once, newest first, at most
    /// `MAX_PREVIOUS_RINGS`; the rule after a rejoin lasts `REJOIN_RINGS_MS`.
    #[test]
    fn previous_rings_hold_each_ring_once() {
        let a = Ring::new(["a", "b"], 16);
        let b = Ring::new(["a", "b", "c"], 16);
        let mut previous: Vec<(Ring, u64)> = Vec::new();
        keep_previous(&mut previous, a.clone(), 1);
        keep_previous(&mut previous, b.clone(), 2);
        keep_previous(&mut previous, a.clone(), 3);
        let kept: Vec<(u64, u64)> = previous.iter().map(|(r, t)| (r.version(), *t)).collect();
        assert_eq!(kept, vec![(a.version(), 3), (b.version(), 2)]);
        for i in 0..20 {
            let names: Vec<String> = (0..=i).map(|n| format!("n{n}")).collect();
            keep_previous(&mut previous, Ring::new(names, 16), 10 + i);
        }
        assert_eq!(previous.len(), MAX_PREVIOUS_RINGS);
        assert!(!after_rejoin(None, 5));
        assert!(after_rejoin(Some(1_000), 1_000 + REJOIN_RINGS_MS - 1));
        assert!(!after_rejoin(Some(1_000), 1_000 + REJOIN_RINGS_MS));
    }

    /// A node that finds the members one at a time keeps, at each step, the others' ring as
    /// far as it knows them (seed 2962: a counter's last copy sat on a member it found after
    /// its first view); once a member leaves its view, it is no longer joining.
    #[test]
    fn a_joining_node_keeps_the_others_ring_as_it_grows() {
        let first = Ring::new(["c", "a"], 16);
        let more = Ring::new(["c", "a", "b"], 16);
        let all = Ring::new(["c", "a", "b", "d"], 16);
        let joining = still_joining(false, None, &first, "c");
        assert!(joining);
        let joining = still_joining(joining, Some(&first), &more, "c");
        assert!(joining);
        let p = previous_ring(Some(&first), &more, "c", joining).unwrap();
        assert_eq!(p.nodes(), Ring::new(["a", "b"], 16).nodes());
        let joining = still_joining(joining, Some(&more), &all, "c");
        let p = previous_ring(Some(&more), &all, "c", joining).unwrap();
        assert_eq!(p.nodes(), Ring::new(["a", "b", "d"], 16).nodes());
        // A member left: an ordinary change from then on, even when the view grows again.
        let less = Ring::new(["c", "a", "d"], 16);
        let joining = still_joining(joining, Some(&all), &less, "c");
        assert!(!joining);
        assert!(!still_joining(joining, Some(&less), &all, "c"));
        let p = previous_ring(Some(&less), &all, "c", false).unwrap();
        assert_eq!(p.version(), less.version());
    }

    /// A node executes nothing while it joins: until its view has stayed as it is for
    /// `SETTLE_MS`; a growth after it has joined is an ordinary change.
    #[test]
    fn a_node_executes_once_its_view_has_settled() {
        let first = Ring::new(["c", "a"], 16);
        let all = Ring::new(["c", "a", "b"], 16);
        let mut j = Joining::new(1_000);
        assert!(!j.may_execute(1_000));
        assert!(j.on_ring_change(None, &first, "c", 3, 1_100));
        assert!(j.on_ring_change(Some(&first), &all, "c", 3, 1_900));
        assert!(!j.may_execute(1_900 + Joining::SETTLE_MS - 1));
        assert!(j.may_execute(1_900 + Joining::SETTLE_MS));
        // Joined: a member that joins later is an ordinary change, and execution goes on.
        let more = Ring::new(["c", "a", "b", "d"], 16);
        assert!(!j.on_ring_change(Some(&all), &more, "c", 3, 9_000));
        assert!(j.may_execute(9_000));
        // Cut off from everyone, then back: joining again.
        let alone = Ring::new(["c"], 16);
        assert!(!j.on_ring_change(Some(&more), &alone, "c", 3, 10_000));
        assert!(j.may_execute(10_000));
        assert!(j.on_ring_change(Some(&alone), &more, "c", 3, 11_000));
        assert!(!j.may_execute(11_000));
        // A member lost while joining: no longer the others' ring, and the settling starts
        // again rather than ending.
        assert!(!j.on_ring_change(Some(&more), &all, "c", 3, 11_500));
        assert!(!j.may_execute(11_500 + Joining::SETTLE_MS - 1));
        assert!(j.may_execute(11_500 + Joining::SETTLE_MS));
        // A view that never settles: joined after MAX_MS all the same.
        let mut j = Joining::new(0);
        let mut t = 0;
        while t < Joining::MAX_MS + 2 * Joining::SETTLE_MS {
            let (a, b) = if (t / 1_000) % 2 == 0 {
                (&all, &more)
            } else {
                (&more, &all)
            };
            j.on_ring_change(Some(a), b, "c", 3, t);
            assert_eq!(j.may_execute(t), t >= Joining::MAX_MS, "at {t} ms");
            t += 1_000;
        }
        // Back from a minority (a view short of a majority of 5): joining again; and after
        // the others declared this node down.
        let mut j = Joining::new(0);
        let minority = Ring::new(["c", "a"], 16);
        let majority = Ring::new(["c", "a", "b"], 16);
        j.on_ring_change(Some(&majority), &minority, "c", 5, 20_000);
        assert!(j.may_execute(20_000));
        j.on_ring_change(Some(&minority), &majority, "c", 5, 30_000);
        assert!(!j.may_execute(30_000));
        assert!(j.may_execute(30_000 + Joining::SETTLE_MS));
        j.rejoin(40_000);
        assert!(!j.may_execute(40_000));
        assert!(j.may_execute(40_000 + Joining::SETTLE_MS));
    }
}
