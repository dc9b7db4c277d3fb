//! Warm restart of a member's L3, as sans-IO decisions the node (and the simulator) call.
//!
//! A member's L3 outlives the process; a restarted member may have missed any number of
//! invalidations while it was down, and the origins that made them may have restarted
//! since (their logs gone). Replaying is therefore not enough. Instead the restarted member
//! proves each L3 copy current against the key's owners, which every change reaches
//! before it is announced:
//!
//! 1. **Baseline.** Once it has joined, it asks every member for its coherence state
//!    (generation, latest sequence number) and takes it as applied
//!    ([`crate::Coherence::baseline`]): invalidations after it are applied or repaired as
//!    usual, so nothing that happens from here on is missed.
//! 2. **Settle.** It waits `max_staleness`: by then every invalidation up to the baseline has
//!    taken effect on every owner, or been covered by a drop there (G2).
//! 3. **Check.** It reads its L3 keys with their versions in pages and asks, per page and per
//!    peer, the first owner of each key that is not itself for the version it holds
//!    (RPC `Versions`: one frame per page and peer, not one per key). A copy is kept only
//!    when an owner holds exactly that version ([`keep`], walked by
//!    `strata_core::Cache::revalidate_l3`); anything else — an owner with a
//!    newer version, none at all (deleted, flushed, evicted), a failed call, or no other
//!    owner to ask — drops it.
//!
//! L3 stays off the read path until the check ends. G3 follows: a copy that survives was
//! current at the check, and every change after the baseline reaches this member through
//! coherence. Dropping is always safe, so every doubt drops.

use std::collections::BTreeMap;

/// The peer to ask about a key: its first owner that is not this node. `None` when this
/// node is the only owner (nobody else can vouch for the copy).
pub fn validator<'a>(owners: &'a [String], me: &str) -> Option<&'a str> {
    owners.iter().map(String::as_str).find(|o| *o != me)
}

/// Groups the indices of `keys` by the peer to ask; keys nobody can vouch for are returned
/// apart (to be dropped).
pub fn plan<'a>(
    owners_of: impl Iterator<Item = &'a [String]>,
    me: &str,
) -> (BTreeMap<String, Vec<usize>>, Vec<usize>) {
    let mut by_peer: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut orphans = Vec::new();
    for (i, owners) in owners_of.enumerate() {
        match validator(owners, me) {
            Some(p) => by_peer.entry(p.to_owned()).or_default().push(i),
            None => orphans.push(i),
        }
    }
    (by_peer, orphans)
}

/// Whether an L3 copy at version `local` may stay (the rule every mode shares).
pub use strata_core::warm::keep;

/// What another live member answered about a pushed copy
/// ([`crate::rpc::Request::Staleness`]): how far back, in ms, its record of invalidations
/// reaches complete, and the newest change it knows of that makes the copy stale, if any.
/// `None`: it did not answer.
pub type Witness = Option<(u64, Option<u64>)>;

/// What a round of a restarted member's proof of its pushed copies knows, beyond each
/// copy's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// How far back a witness's record must reach ([`needed_ms`]).
    pub needed_ms: u64,
    /// Whether this member's view holds a majority of the cluster.
    pub quorum: bool,
    /// How many member lives ended within `needed_ms`, as this member and every witness
    /// that told its ended lives saw them ([`count_ended`]).
    pub ended: usize,
    /// Whether every witness whose record reaches back told its ended lives (false: one
    /// of a build from before `ENDED_LIVES`, whose lives `ended` may lack).
    pub all_told: bool,
    /// How many owners every acknowledged change reached: the replication factor, or the
    /// view's size where that is smaller.
    pub replication_factor: usize,
    /// Whether a copy some member did not answer for is asked about again later
    /// ([`Verdict::Deferred`]).
    pub may_defer: bool,
}

/// Whether a copy that a previous owner pushed to this member while it settled after a
/// restart may stay, at `version`.
///
/// Such a copy may have been read before a removal whose invalidation this member's
/// baseline counted as applied, and stored after it: nothing here refuses it. It stays
/// when the key's other owner holds exactly that version ([`keep`], `validator`), as an L3
/// copy does. When that owner holds nothing — it became an owner after the push, because
/// a member left; and the previous owners dropped their copies of keys they no longer own
/// at that leave — the copy may be the last one: it stays when every other live member
/// (`witnesses`) answered and knows of nothing newer, this member's view holds a majority
/// (`quorum`), and fewer member lives than the replication factor ended since the copy
/// could have been read (`needed_ms`; a life whose process rejoined under the next
/// generation is not counted: [`count_ended`]), with at least one witness whose record reaches back
/// that far. A change made after the read reached `replication_factor` owners before it
/// was acknowledged, and each remembers it — a removal (`Coherence::note_removed`) or a
/// write (the newer version, `note_written`) — for `tombstone_ms`, whatever its record's
/// start says (a gap moves that, not the tombstones). So while fewer lives
/// than that ended, one of those owners is alive in its life, in this member's view (a
/// member the view dropped is a life that ended, to whoever saw it), and answers "newer".
/// A stale copy is kept only when every owner a change reached died, left or restarted
/// since. (Dropping the copy in every doubt lost 1,088 acknowledged `SET`s when a member
/// left within 2 s of a restarted member's join, in a membership review; requiring every
/// witness's record to reach back lost 193 of 624 in a `kill -9` review run, a member
/// joining 2 s after the key's other owner was killed during the proof.)
///
/// Where a witness whose record reaches back could not tell its ended lives (an earlier
/// build), the lives the others told still count, and more than half of the witnesses'
/// records must reach back as well.
pub fn keep_pushed(
    version: u64,
    validator: Option<Option<u64>>,
    witnesses: &[Witness],
    round: &Round,
) -> bool {
    if keep(version, validator) {
        return true;
    }
    let mut reaching = 0;
    for w in witnesses {
        match w {
            Some((covered, None)) => reaching += usize::from(*covered >= round.needed_ms),
            // It did not answer, or it knows of a newer change.
            _ => return false,
        }
    }
    round.quorum
        && reaching > 0
        && round.ended < round.replication_factor
        && (round.all_told || reaching * 2 > witnesses.len())
}

/// A member process alive in a proof's view, with the generations it has had
/// ([`crate::rpc::Response::StalenessLives`]): a life of `name` from `first_generation`
/// to `generation` that a view declared down did not end in memory — the process went on
/// (under the next generation: foca renews an identity to generation + 1, or in the same
/// one, unseen by that view) and kept its memory of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// The member's name.
    pub name: String,
    /// The generation its process started with.
    pub first_generation: u64,
    /// Its generation now.
    pub generation: u64,
}

impl Process {
    /// Whether the life `generation` of `name` was one of this process's lives: an earlier
    /// one, or the current one (declared down by a view that lost sight of it, while the
    /// process went on in it and answers with its memory whole).
    pub fn went_on_from(&self, name: &str, generation: u64) -> bool {
        self.name == name && (self.first_generation..=self.generation).contains(&generation)
    }
}

/// How many distinct member lives ended within `needed_ms`, as this member (`mine`) and
/// the witnesses saw them (`told`: each answering witness's `covered_ms` and the lives it
/// told, `None` from a build that does not tell) — every list counts, whatever its
/// witness's record: a life counted that did not matter only drops more; and whether
/// every witness whose record reaches back told its lives ([`Round::all_told`]).
///
/// A life whose process went on under a later generation (`alive`: this member and each
/// witness that told its process's lives) is not counted: the others declared it down, it
/// rejoined, and it remembers every change it took as an owner as it did before
/// (tombstones outlive a rejoin). Counting such lives dropped, at the proof of a member
/// that rejoined without its lease, the copies two owners rejoining in turn each held
/// alone (a partition review with cuts of 5–8 s moving between members).
///
/// Nor is a life whose next generation is known to have ended too: a rejoin renews an
/// identity to generation + 1 (`NodeIdentity::renew`), while a restarted process starts at
/// its start's wall-clock millisecond, so the two lives were one process, which went on
/// past the first. A member out of the view that rejoined three times in the window counted
/// three ended lives, and a proof dropped a counter's last copy for it (`ended: 3` against
/// a replication factor of 2, a partition review).
pub fn count_ended(
    mine: &[crate::rpc::EndedLife],
    told: &[(u64, Option<Vec<crate::rpc::EndedLife>>)],
    needed_ms: u64,
    alive: &[Process],
) -> (usize, bool) {
    let all_told = told
        .iter()
        .all(|(covered, ended)| *covered < needed_ms || ended.is_some());
    let lives = mine
        .iter()
        .chain(told.iter().flat_map(|(_, e)| e.iter().flatten()))
        .filter(|e| !alive.iter().any(|p| p.went_on_from(&e.name, e.generation)))
        .filter(|e| e.ago_ms <= needed_ms)
        .map(|e| (e.name.as_str(), e.generation))
        .collect::<std::collections::BTreeSet<_>>();
    let ended = lives
        .iter()
        .filter(|(name, generation)| !lives.contains(&(*name, generation.saturating_add(1))))
        .count();
    (ended, all_told)
}

/// How far back, in ms, a witness's record of changes reaches whole: from
/// `record_from_ms` (its start, a warm start's baseline or a gap given up on; on
/// the witness's own monotonic clock, `u64::MAX` while it is not whole at all) to `now_ms`,
/// and no further back than it remembers changes (`tombstone_ms`).
pub fn covered_ms(record_from_ms: u64, now_ms: u64, tombstone_ms: u64) -> u64 {
    match record_from_ms {
        u64::MAX => 0,
        from => now_ms.saturating_sub(from).min(tombstone_ms),
    }
}

/// How far back a member's record of changes is whole, as a witness of another member's
/// proof tells it: from its start (this process's, or a warm start's baseline; on its own
/// monotonic clock, `u64::MAX` while it is not whole at all), and the gaps it gave up on
/// since, each kept apart with the origin's coherence life whose invalidations it lost (at
/// most [`crate::rpc::MAX_GAPS_TOLD`]; an older one moves the start instead).
///
/// A gap restarts the record for every caller but one: the life that made what was lost.
/// That life's process made each of those changes, applied it to its own copies first
/// (`Shared::originate` removes an older copy of the key; a pattern, tag or flush is
/// applied where it is made) and remembers it for `tombstone_ms`. So a member proving its
/// own copies may count a witness's record from its start where the only gaps since are
/// of its own life ([`covered_for`]). (Restarting it for everyone left the two owners of
/// a key, both holding it unproven after rejoins, with no witness: the third member had
/// just given up a gap of one owner's invalidations — that owner was cut off again as the
/// gap was noticed — and both proofs dropped 1,413 static keys, a partition review.) A
/// restarted process is a new life: a gap of its previous one still counts against it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Whole from (ms), the gaps set apart; `u64::MAX`: not whole.
    from_ms: u64,
    /// The gaps given up on since: origin, its coherence life, when (ms), oldest first.
    gaps: Vec<(String, u64, u64)>,
}

impl Record {
    /// Not whole until [`Record::whole_from`] (a warm start, until its baseline).
    pub fn not_whole(&mut self) {
        self.from_ms = u64::MAX;
        self.gaps.clear();
    }

    /// Whole from `now_ms` on (a warm start's baseline).
    pub fn whole_from(&mut self, now_ms: u64) {
        self.from_ms = now_ms;
        self.gaps.clear();
    }

    /// Starts over at `now_ms` for every caller: any origin's invalidations may have been
    /// lost (this member stalled past failure detection).
    pub fn restart(&mut self, now_ms: u64) {
        self.whole_from(now_ms);
    }

    /// Whole since this process started, when nothing made it whole since (a start
    /// without L3 copies: nothing to baseline). Whether it was changed.
    pub fn whole_since_start(&mut self) -> bool {
        let changed = self.from_ms == u64::MAX;
        if changed {
            self.from_ms = 0;
        }
        changed
    }

    /// A gap of `origin`'s coherence `life` was given up on at `now_ms`: invalidations of
    /// that life never reached this member. While the record was not whole, it is whole
    /// from now.
    pub fn gave_up(&mut self, origin: &str, life: u64, now_ms: u64) {
        if self.from_ms == u64::MAX {
            self.from_ms = now_ms;
            return;
        }
        self.gaps.retain(|(o, l, _)| !(o == origin && *l == life));
        self.gaps.push((origin.to_owned(), life, now_ms));
        if self.gaps.len() > crate::rpc::MAX_GAPS_TOLD {
            let (_, _, at) = self.gaps.remove(0);
            self.from_ms = self.from_ms.max(at);
        }
    }

    /// From when the record is whole for every caller (every gap counted; `u64::MAX`: not
    /// whole).
    pub fn from_ms(&self) -> u64 {
        match self.from_ms {
            u64::MAX => u64::MAX,
            from => self.gaps.iter().map(|(_, _, at)| *at).fold(from, u64::max),
        }
    }

    /// What a witness tells at `now_ms`: how far back its record reaches with the gaps set
    /// apart ([`covered_ms`]), and the gaps within that.
    pub fn told(&self, now_ms: u64, tombstone_ms: u64) -> (u64, Vec<crate::rpc::GivenUp>) {
        let whole_ms = covered_ms(self.from_ms, now_ms, tombstone_ms);
        let gaps = self
            .gaps
            .iter()
            .map(|(origin, life, at)| crate::rpc::GivenUp {
                origin: origin.clone(),
                life: *life,
                ago_ms: now_ms.saturating_sub(*at),
            })
            .filter(|g| g.ago_ms < whole_ms)
            .collect();
        (whole_ms, gaps)
    }
}

/// How far back a witness's record reaches for a caller `me` in its coherence `life`: from
/// `whole_ms` (its start), and no further back than a gap of another life ([`Record`]), nor
/// than the caller remembers its own changes (`tombstone_ms`, its own). A gap of life 0 (no
/// life) counts for everyone.
pub fn covered_for(
    whole_ms: u64,
    gaps: &[crate::rpc::GivenUp],
    me: &str,
    life: u64,
    tombstone_ms: u64,
) -> u64 {
    let mine = |g: &crate::rpc::GivenUp| g.life != 0 && g.life == life && g.origin == me;
    let start = if gaps.iter().any(mine) {
        whole_ms.min(tombstone_ms)
    } else {
        whole_ms
    };
    gaps.iter()
        .filter(|g| !mine(g))
        .map(|g| g.ago_ms)
        .fold(start, u64::min)
}

/// The proving member's own word on a copy it holds unproven, as one more witness: a change
/// newer than the copy that its own record remembers (`superseded`,
/// `Coherence::superseded_by`) makes the copy stale, as any witness's would; its silence
/// says nothing (its record is what the proof doubts). A witness's gap of this member's own
/// life ([`covered_for`]) rests on what it made itself: this checks that, whatever way the
/// copy came into its store.
pub fn own_word(superseded: Option<u64>) -> Option<Witness> {
    superseded.map(|v| Some((0, Some(v))))
}

/// What a witness knows of that is newer than a copy at `version`: the newer of a version
/// it holds itself (`held`, any copy: a newer version exists, so this one was replaced) and
/// the change its record says supersedes the copy (`superseded`,
/// `Coherence::superseded_by`).
pub fn newer_than(version: u64, held: Option<u64>, superseded: Option<u64>) -> Option<u64> {
    held.filter(|v| *v > version).max(superseded)
}

/// How far back a witness's record must reach for its word on a copy pushed to a member
/// (`age_ms` old) to count: to before the copy was read. Every copy pushed to a process was
/// read after its sender's call to it began, and that call could not begin long before the
/// process started: each hop of a push (a hand-off, a read repair, a copy passed on) is one
/// call of at most `rpc_timeout_ms`, and a hand-off batch waits at most a few other
/// batches' calls; the margin allows eight, and a second. (A node sends a copy that waited
/// longer than four again only after reading it again.)
pub fn needed_ms(age_ms: u64, rpc_timeout_ms: u64) -> u64 {
    age_ms + 8 * rpc_timeout_ms + 1_000
}

/// [`needed_ms`] for a copy pushed in a batch its sender read after it saw this member's
/// process up (`Request::HandoffFor`, with a generation of this process): the read came
/// after the process started, `since_start_ms` ago, so a witness's record must reach back
/// to that start and one RPC timeout more (clock rates, the answers' flight), and never
/// further than [`needed_ms`] asks for the same copy (`age_ms`: a rejoin's lapse run or an
/// earlier proof may start later). No margin of calls before the start: a life that ended
/// before it cannot have taken a change made after the read. (With that margin, a key's two
/// owners leaving gracefully within seconds of each other and restarting each held the
/// copy the others pushed at their joins, unproven, each the other's validator: both lives
/// that ended counted against a replication factor of 2, both proofs dropped it, and a
/// counter restarted at 1 after 16 acknowledged increments, simulator seed 2838 with
/// `--warm-restart --flaps --handoff-delays`.)
pub fn needed_ms_after_start(age_ms: u64, since_start_ms: u64, rpc_timeout_ms: u64) -> u64 {
    needed_ms(age_ms, rpc_timeout_ms).min(since_start_ms.saturating_add(rpc_timeout_ms))
}

/// From when (this member's monotonic ms) a copy at `version` it holds unproven may have
/// missed a change: `lapse_from` (this process's start, or the start of a rejoin's run of
/// lease lapses: `Lease::lapse_began_ms`), or later, when an earlier proof of this member
/// kept that very version (`vouched`: the version and when that proof round began asking).
/// Such a copy was current then — its other owner held it, or no member knew anything
/// newer with a record reaching back — so only a change after that can have passed it
/// by, and the witnesses' record must reach back only that far ([`needed_ms`]). On the
/// member's own clock, as `lapse_from` is: no wall clock enters. (Counted from the run's
/// start, lapses chained for over a minute under flapping cuts needed more record than
/// any witness keeps, `tombstone_ms`, and proofs dropped copies every witness called
/// current: a counter restarted after 16,601 acknowledged increments in a partition
/// review, `needed_ms` 61,904.)
pub fn proof_from(lapse_from: u64, vouched: Option<(u64, u64)>, version: u64) -> u64 {
    match vouched {
        Some((v, at)) if v == version => lapse_from.max(at),
        _ => lapse_from,
    }
}

/// Whether a proof round may record the copies it keeps as current when it began asking
/// ([`Vouches`], [`proof_from`]): its view held a majority (`quorum`), and this member's
/// lease held when the round began asking and when it judged (`lease_held`), with no lapse
/// seen between (`lapsed_before` = `lapsed_after`, `Lease::lapsed_at_ms`). Only then did
/// every change of a key this member owns reach it, so a copy its other owner held was
/// current: a validator the majority had declared down, not knowing it yet, may hold a
/// copy a removal by the key's new owners superseded, and a vouch from its word would
/// start every later window after that removal (an attack review, helper-105).
pub fn may_vouch(
    quorum: bool,
    lease_held: bool,
    lapsed_before: Option<u64>,
    lapsed_after: Option<u64>,
) -> bool {
    quorum && lease_held && lapsed_before == lapsed_after
}

/// The copies earlier proofs of this process kept, each with its version and when the
/// round that kept it began asking ([`proof_from`]), by an id of the caller's (namespace
/// and key). Two generations, swapped every `keep_ms` (`tombstone_ms`: an older vouch can
/// never shorten a window enough for a witness to reach back), each of at most `limit`
/// entries: a vouch past that is not recorded, which only leaves its copy's next window
/// at the lapse run's start. Memory: at most twice `limit` ids and 16 bytes each.
#[derive(Debug, Clone, Default)]
pub struct Vouches {
    current: std::collections::HashMap<Vec<u8>, (u64, u64)>,
    previous: std::collections::HashMap<Vec<u8>, (u64, u64)>,
    since_ms: u64,
    limit: usize,
}

impl Vouches {
    /// An empty record of at most `limit` entries per generation.
    pub fn new(limit: usize) -> Self {
        Vouches {
            limit,
            ..Vouches::default()
        }
    }

    /// The copy `id` at `version` was kept by a round that began asking at `at_ms`.
    pub fn vouch(&mut self, id: Vec<u8>, version: u64, at_ms: u64, keep_ms: u64) {
        if at_ms.saturating_sub(self.since_ms) >= keep_ms {
            self.previous = std::mem::take(&mut self.current);
            self.since_ms = at_ms;
        }
        if self.current.len() < self.limit || self.current.contains_key(&id) {
            self.current.insert(id, (version, at_ms));
        }
    }

    /// The newest vouch of `id`: its version and when.
    pub fn get(&self, id: &[u8]) -> Option<(u64, u64)> {
        self.current
            .get(id)
            .or_else(|| self.previous.get(id))
            .copied()
    }

    /// Forgets every vouch (this member stalled: its times may not say what they did).
    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }
}

/// What becomes of a copy pushed to a restarted member while it settled, at its proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The key's other owner holds exactly this version ([`keep`]).
    Kept,
    /// Kept on the other members' word ([`keep_pushed`]): this member may hold the last
    /// copy, so it passes it on to the key's other owners.
    Witnessed,
    /// Some member did not answer: proven again in a later round.
    Deferred,
    /// Removed (that version only).
    Dropped,
}

/// The verdict on a pushed copy at `version`: [`keep`] on the validator's answer, else
/// [`keep_pushed`] on the witnesses'. A copy that neither keeps, and that no member knows
/// a newer change of (then it is stale: no later round keeps it), is deferred:
/// - while `round.may_defer`, when some witness did not answer (it may have been killed
///   and not yet declared down: once the view drops it, the key's new other owner is
///   asked; the node does not count time without a quorum against that wait);
/// - for as long as the view has no quorum: cut off again, this member has no one to
///   ask, and nobody's silence says the copy is stale. (Dropped there, a member cut off
///   again during the proof of its rejoin dropped every copy it held unproven: 1,578
///   keys, both owners of each, in a partition review. Tying this to `may_defer` as well
///   dropped them when the quorum went during a round begun after the wait ran out: all
///   three counters of a review run restarted.) The copy stays hidden meanwhile.
///
/// Dropped otherwise.
pub fn judge(
    version: u64,
    validator: Option<Option<u64>>,
    witnesses: &[Witness],
    round: &Round,
) -> Verdict {
    let newer_known = witnesses.iter().flatten().any(|(_, newer)| newer.is_some())
        || matches!(validator, Some(Some(v)) if v > version);
    if keep(version, validator) {
        Verdict::Kept
    } else if keep_pushed(version, validator, witnesses, round) {
        Verdict::Witnessed
    } else if !newer_known
        && (!round.quorum || (round.may_defer && witnesses.iter().any(Option::is_none)))
    {
        Verdict::Deferred
    } else {
        Verdict::Dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_validator_is_the_first_owner_that_is_not_me() {
        assert_eq!(validator(&owners(&["me", "b", "c"]), "me"), Some("b"));
        assert_eq!(validator(&owners(&["c", "me"]), "me"), Some("c"));
        assert_eq!(validator(&owners(&["me"]), "me"), None);
        assert_eq!(validator(&owners(&[]), "me"), None);
    }

    #[test]
    fn plan_groups_by_peer_and_sets_orphans_apart() {
        let all = [
            owners(&["me", "b"]),
            owners(&["c", "me"]),
            owners(&["me"]),
            owners(&["b", "c"]),
        ];
        let (by_peer, orphans) = plan(all.iter().map(Vec::as_slice), "me");
        assert_eq!(by_peer["b"], vec![0, 3]);
        assert_eq!(by_peer["c"], vec![1]);
        assert_eq!(orphans, vec![2]);
    }

    /// A round needing 3 s of record, with a majority, RF 2, `ended` lives seen (`None`:
    /// none told, a witness of an earlier build).
    fn round(ended: Option<usize>) -> Round {
        Round {
            needed_ms: 3_000,
            quorum: true,
            ended: ended.unwrap_or(0),
            all_told: ended.is_some(),
            replication_factor: 2,
            may_defer: true,
        }
    }

    #[test]
    fn a_pushed_copy_stays_on_its_owners_word_or_when_no_member_knows_anything_newer() {
        let clean = Some((10_000, None));
        let short = Some((2_999, None));
        let none_ended = round(Some(0));
        // The other owner holds exactly this version: kept, whatever the others say.
        let no_quorum = Round {
            quorum: false,
            ..none_ended
        };
        assert!(keep_pushed(
            5,
            Some(Some(5)),
            &[Some((0, Some(9)))],
            &no_quorum
        ));
        // It holds nothing: every member answered, none knows of anything newer, a record
        // reaches back far enough, and fewer lives than RF ended meanwhile.
        assert!(keep_pushed(5, Some(None), &[clean, clean], &none_ended));
        assert!(keep_pushed(5, Some(None), &[clean, short], &round(Some(1))));
        // Any member that knows of a newer change (a removal's tombstone, a newer write),
        // a short record included.
        assert!(!keep_pushed(
            5,
            Some(None),
            &[clean, Some((10_000, Some(6)))],
            &none_ended
        ));
        assert!(!keep_pushed(
            5,
            Some(None),
            &[clean, Some((1_000, Some(6))), clean],
            &none_ended
        ));
        // A member that did not answer.
        assert!(!keep_pushed(5, Some(None), &[clean, None], &none_ended));
        // As many lives ended as a change reached owners: every owner of a change may be
        // among them (two owners restarted inside the window, a rolling restart).
        assert!(!keep_pushed(
            5,
            Some(None),
            &[clean, short, short],
            &round(Some(2))
        ));
        // No record reaches back, whatever ended.
        assert!(!keep_pushed(5, Some(None), &[short, short], &none_ended));
        // Without a count of ended lives (an earlier build's witness), most records must
        // reach back.
        assert!(keep_pushed(
            5,
            Some(None),
            &[clean, short, clean],
            &round(None)
        ));
        assert!(!keep_pushed(5, Some(None), &[clean, short], &round(None)));
        assert!(!keep_pushed(
            5,
            Some(None),
            &[short, clean, short],
            &round(None)
        ));
        // ... and what the others told still counts.
        let partly = Round {
            ended: 2,
            all_told: false,
            ..none_ended
        };
        assert!(!keep_pushed(5, Some(None), &[clean, clean, clean], &partly));
        // Nobody to ask, or a view without a majority.
        assert!(!keep_pushed(5, Some(None), &[], &none_ended));
        assert!(!keep_pushed(5, Some(None), &[clean], &no_quorum));
        // The owner holds a newer version: dropped (it is also a witness of it).
        assert!(!keep_pushed(
            5,
            Some(Some(6)),
            &[Some((10_000, Some(6)))],
            &none_ended
        ));
        // The owner's call failed: the witnesses decide.
        assert!(keep_pushed(5, None, &[clean], &none_ended));
    }

    #[test]
    fn every_told_list_counts_and_an_earlier_builds_silence_is_noted() {
        let life = |name: &str, generation, ago_ms| crate::rpc::EndedLife {
            name: name.into(),
            generation,
            ago_ms,
        };
        let mine = [life("a", 1, 1_000)];
        let told = [
            // A witness whose record reaches back, and one whose does not: both lists count.
            (5_000, Some(vec![life("a", 1, 1_100), life("b", 2, 2_000)])),
            (100, Some(vec![life("c", 3, 50)])),
            // Out of the window.
            (5_000, Some(vec![life("d", 4, 3_500)])),
        ];
        assert_eq!(count_ended(&mine, &told, 3_000, &[]), (3, true));
        // An earlier build's witness with a short record says nothing that matters...
        let mut more = told.to_vec();
        more.push((100, None));
        assert_eq!(count_ended(&mine, &more, 3_000, &[]), (3, true));
        // ... one whose record reaches back leaves the count partial.
        more.push((5_000, None));
        assert_eq!(count_ended(&mine, &more, 3_000, &[]), (3, false));
        assert_eq!(count_ended(&[], &[], 3_000, &[]), (0, true));
    }

    /// A life whose process rejoined under the next generation kept its memory of
    /// changes: it is not counted as ended. A restart (a new process) is.
    #[test]
    fn a_life_that_rejoined_in_the_same_process_does_not_count_as_ended() {
        let life = |name: &str, generation, ago_ms| crate::rpc::EndedLife {
            name: name.into(),
            generation,
            ago_ms,
        };
        let process = |name: &str, first_generation, generation| Process {
            name: name.into(),
            first_generation,
            generation,
        };
        let told = [(5_000, Some(vec![life("a", 7, 100), life("b", 3, 200)]))];
        assert_eq!(count_ended(&[], &told, 3_000, &[]), (2, true));
        // `a` rejoined as 8 in the process that began as 7: only `b`'s life ended.
        let a = process("a", 7, 8);
        assert_eq!(
            count_ended(&[], &told, 3_000, std::slice::from_ref(&a)),
            (1, true)
        );
        // Twice: 7 and 8 were both its lives.
        let twice = [(5_000, Some(vec![life("a", 7, 100), life("a", 8, 50)]))];
        assert_eq!(
            count_ended(&[], &twice, 3_000, &[process("a", 7, 9)]),
            (0, true)
        );
        // A process that began as 8 (a restart after 7) did not live 7.
        assert_eq!(
            count_ended(&[], &told, 3_000, &[process("a", 8, 9)]),
            (2, true)
        );
        // Nor does another member's process.
        assert_eq!(
            count_ended(&[], &told, 3_000, &[process("c", 1, 9)]),
            (2, true)
        );
        // A life a view declared down while its process went on in it and answers.
        assert_eq!(
            count_ended(&[], &told, 3_000, &[process("a", 7, 7)]),
            (1, true)
        );
        assert!(a.went_on_from("a", 7) && a.went_on_from("a", 8) && !a.went_on_from("a", 9));
        assert!(!a.went_on_from("a", 6) && !a.went_on_from("b", 7));
    }

    #[test]
    fn ended_lives_are_counted_once_and_only_within_the_window() {
        let life = |name: &str, generation, ago_ms| crate::rpc::EndedLife {
            name: name.into(),
            generation,
            ago_ms,
        };
        let seen = [
            life("a", 1, 500),
            life("a", 1, 900),
            life("b", 7, 3_001),
            life("c", 4, 3_000),
        ];
        assert_eq!(count_ended(&seen, &[], 3_000, &[]), (2, true));
        assert_eq!(count_ended(&seen, &[], 99, &[]), (0, true));
    }

    /// Lives of one name whose generations follow each other (a rejoin renews an identity
    /// to generation + 1) were one process, which went on past all but the last: a member
    /// out of the view that rejoined three times counts once. A restart's generation does
    /// not follow its predecessor's.
    #[test]
    fn renewed_lives_of_one_process_count_once() {
        let life = |name: &str, generation, ago_ms| crate::rpc::EndedLife {
            name: name.into(),
            generation,
            ago_ms,
        };
        let told = [(
            60_000,
            Some(vec![
                life("a", 7, 30_000),
                life("a", 8, 20_000),
                life("a", 9, 10_000),
            ]),
        )];
        assert_eq!(count_ended(&[], &told, 40_000, &[]), (1, true));
        // A restart (generation 5,000) after the renewals: two processes ended.
        let mine = [life("a", 5_000, 1_000)];
        assert_eq!(count_ended(&mine, &told, 40_000, &[]), (2, true));
        // Part of the chain in the window: once.
        assert_eq!(count_ended(&[], &told, 25_000, &[]), (1, true));
    }

    #[test]
    fn a_witness_answers_how_far_back_its_record_reaches_and_what_it_knows_newer() {
        assert_eq!(covered_ms(u64::MAX, 50_000, 60_000), 0, "not whole yet");
        assert_eq!(covered_ms(10_000, 50_000, 60_000), 40_000);
        assert_eq!(
            covered_ms(0, 90_000, 60_000),
            60_000,
            "no further than it remembers"
        );
        assert_eq!(
            covered_ms(60_000, 50_000, 60_000),
            0,
            "a clock read before the move"
        );
        assert_eq!(
            newer_than(5, Some(5), None),
            None,
            "the same version is no news"
        );
        assert_eq!(newer_than(5, Some(4), None), None);
        assert_eq!(newer_than(5, Some(7), Some(6)), Some(7));
        assert_eq!(newer_than(5, None, Some(6)), Some(6));
        assert_eq!(newer_than(5, Some(3), Some(6)), Some(6));
        assert_eq!(needed_ms(4_000, 1_000), 13_000);
        // Read after this process started 4 s ago: back to that start, and a timeout more.
        assert_eq!(needed_ms_after_start(4_000, 4_000, 1_000), 5_000);
        // A later window (a lapse run, a vouch) stays the narrower one.
        assert_eq!(needed_ms_after_start(1_000, 60_000, 500), 6_000);
    }

    /// A gap restarts a witness's record for every caller but the life that made what was
    /// lost; a restarted process (a new life of that name) is not that life.
    #[test]
    fn a_gap_restarts_the_record_for_all_but_the_life_it_missed() {
        let mut r = Record::default();
        assert_eq!(r.from_ms(), 0, "whole since the start");
        r.gave_up("a", 7, 10_000);
        r.gave_up("b", 3, 20_000);
        assert_eq!(r.from_ms(), 20_000, "every gap counts for everyone");
        let (whole, gaps) = r.told(50_000, 60_000);
        assert_eq!(whole, 50_000);
        assert_eq!(gaps.len(), 2);
        assert_eq!(
            covered_for(whole, &gaps, "a", 7, 60_000),
            30_000,
            "b's gap counts"
        );
        assert_eq!(
            covered_for(whole, &gaps, "b", 3, 60_000),
            40_000,
            "a's gap counts"
        );
        assert_eq!(
            covered_for(whole, &gaps, "a", 8, 60_000),
            30_000,
            "a later life of a"
        );
        assert_eq!(covered_for(whole, &gaps, "c", 1, 60_000), 30_000);
        // The same life's later gap replaces its earlier one.
        r.gave_up("a", 7, 30_000);
        let (whole, gaps) = r.told(50_000, 60_000);
        assert_eq!(gaps.len(), 2);
        assert_eq!(covered_for(whole, &gaps, "b", 3, 60_000), 20_000);
        assert_eq!(covered_for(whole, &gaps, "a", 7, 60_000), 30_000);
        // Only its own life's gaps: the record reaches back to its start.
        let mut only = Record::default();
        only.whole_from(5_000);
        only.gave_up("a", 7, 40_000);
        let (whole, gaps) = only.told(50_000, 60_000);
        assert_eq!(covered_for(whole, &gaps, "a", 7, 60_000), 45_000);
        assert_eq!(covered_for(whole, &gaps, "a", 9, 60_000), 10_000);
        // No further back than the caller remembers what it made itself.
        assert_eq!(covered_for(whole, &gaps, "a", 7, 30_000), 30_000);
        // A gap of no life (0) counts for everyone, the name matching or not.
        only.gave_up("a", 0, 41_000);
        let (whole, gaps) = only.told(50_000, 60_000);
        assert_eq!(covered_for(whole, &gaps, "a", 0, 60_000), 9_000);
        assert_eq!(covered_for(whole, &gaps, "a", 7, 60_000), 9_000);
        // A stall restarts it for everyone.
        let mut stalled = only.clone();
        stalled.restart(48_000);
        let (whole, gaps) = stalled.told(50_000, 60_000);
        assert_eq!(covered_for(whole, &gaps, "a", 7, 60_000), 2_000);
        assert_eq!(only.from_ms(), 41_000);
        // No further back than it remembers changes, and gaps outside that are not told.
        let (whole, gaps) = only.told(200_000, 60_000);
        assert_eq!((whole, gaps.len()), (60_000, 0));
        // A baseline makes it whole from then, the gaps before it gone.
        only.whole_from(45_000);
        assert_eq!(only.from_ms(), 45_000);
        assert!(only.told(50_000, 60_000).1.is_empty());
        // Not whole: a gap makes it whole from then (nothing to set apart), and a start
        // without copies does not move it back.
        let mut fresh = Record::default();
        fresh.not_whole();
        assert_eq!(fresh.from_ms(), u64::MAX);
        assert_eq!(fresh.told(1_000, 60_000).0, 0);
        fresh.gave_up("a", 7, 700);
        assert!(!fresh.whole_since_start());
        assert_eq!(fresh.from_ms(), 700);
        let mut empty = Record::default();
        empty.not_whole();
        assert!(empty.whole_since_start());
        assert_eq!(empty.from_ms(), 0);
    }

    /// Past the most gaps told, the oldest moves the record's start: nothing is forgotten.
    #[test]
    fn gaps_past_the_bound_move_the_start() {
        let mut r = Record::default();
        for i in 0..=crate::rpc::MAX_GAPS_TOLD as u64 {
            r.gave_up(&format!("o{i}"), 1, 1_000 + i);
        }
        let (whole, gaps) = r.told(10_000, 60_000);
        assert_eq!(gaps.len(), crate::rpc::MAX_GAPS_TOLD);
        assert_eq!(whole, 9_000, "the oldest gap became the start");
        assert_eq!(covered_for(whole, &gaps, "o0", 1, 60_000), 9_000 - 64);
        assert_eq!(r.from_ms(), 1_000 + crate::rpc::MAX_GAPS_TOLD as u64);
    }

    /// A copy an earlier proof kept needs the witnesses' record only since that proof; a
    /// copy of another version (changed since, or older) since the lapse run began.
    #[test]
    fn a_copy_kept_before_is_proven_from_then() {
        assert_eq!(proof_from(1_000, None, 5), 1_000);
        assert_eq!(proof_from(1_000, Some((5, 40_000)), 5), 40_000);
        assert_eq!(proof_from(1_000, Some((4, 40_000)), 5), 1_000);
        assert_eq!(proof_from(1_000, Some((6, 40_000)), 5), 1_000);
        // Never before the lapse: a vouch older than the run changes nothing.
        assert_eq!(proof_from(50_000, Some((5, 40_000)), 5), 50_000);
    }

    /// Vouches are bounded per generation without forgetting the ones already recorded,
    /// and a generation older than `keep_ms` goes at the next swap.
    #[test]
    fn vouches_are_bounded_and_age_out() {
        let mut v = Vouches::new(2);
        v.vouch(b"a".to_vec(), 1, 100, 60_000);
        v.vouch(b"b".to_vec(), 1, 100, 60_000);
        v.vouch(b"c".to_vec(), 1, 100, 60_000);
        assert_eq!(v.get(b"c"), None, "past the limit: not recorded");
        v.vouch(b"a".to_vec(), 2, 200, 60_000);
        assert_eq!(
            v.get(b"a"),
            Some((2, 200)),
            "a recorded key is updated when full"
        );
        assert_eq!(
            v.get(b"b"),
            Some((1, 100)),
            "nothing recorded is forgotten when full"
        );
        // A generation later: the earlier one still answers; two later it is gone.
        v.vouch(b"c".to_vec(), 1, 60_100, 60_000);
        assert_eq!(v.get(b"c"), Some((1, 60_100)));
        assert_eq!(v.get(b"b"), Some((1, 100)));
        v.vouch(b"d".to_vec(), 1, 120_200, 60_000);
        assert_eq!(v.get(b"b"), None);
        assert_eq!(v.get(b"c"), Some((1, 60_100)));
        v.clear();
        assert_eq!(v.get(b"c"), None);
        // A vouch only from a round with a quorum and the lease held throughout.
        assert!(may_vouch(true, true, Some(5), Some(5)));
        assert!(may_vouch(true, true, None, None));
        assert!(!may_vouch(false, true, None, None));
        assert!(!may_vouch(true, false, None, None));
        assert!(!may_vouch(true, true, Some(5), Some(9)), "a lapse between");
        assert!(!may_vouch(true, true, None, Some(9)));
    }

    #[test]
    fn a_pushed_copy_is_kept_witnessed_deferred_or_dropped() {
        let clean = Some((10_000, None));
        let r = round(Some(0));
        let last = Round {
            may_defer: false,
            ..r
        };
        assert_eq!(judge(5, Some(Some(5)), &[], &r), Verdict::Kept);
        assert_eq!(
            judge(5, Some(None), &[clean, clean], &r),
            Verdict::Witnessed
        );
        // A member that did not answer: asked again while deferring is allowed.
        assert_eq!(judge(5, None, &[clean, None], &r), Verdict::Deferred);
        assert_eq!(judge(5, None, &[clean, None], &last), Verdict::Dropped);
        // A member that knows of a newer change drops it at once, answered or not.
        assert_eq!(
            judge(5, Some(None), &[Some((10_000, Some(6)))], &r),
            Verdict::Dropped
        );
        assert_eq!(
            judge(5, Some(Some(6)), &[Some((10_000, Some(6))), None], &r),
            Verdict::Dropped,
            "a copy a member knows newer of is stale, whoever else is silent"
        );
        // Cut off again (no quorum, no one to ask): deferred for as long as that lasts,
        // even past the wait for silent members, unless the validator holds something
        // newer.
        let alone = Round {
            quorum: false,
            ..last
        };
        assert_eq!(judge(5, None, &[], &alone), Verdict::Deferred);
        assert_eq!(judge(5, Some(None), &[clean], &alone), Verdict::Deferred);
        assert_eq!(judge(5, Some(Some(4)), &[], &alone), Verdict::Deferred);
        assert_eq!(judge(5, Some(Some(6)), &[], &alone), Verdict::Dropped);
        assert_eq!(
            judge(5, None, &[Some((10_000, Some(6)))], &alone),
            Verdict::Dropped
        );
    }
}
