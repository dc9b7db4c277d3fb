//! A restarted member's pushed copies, held unproven while it settles and proven against
//! their owners and the other members — the node's `cluster::warm::prove_pushed`, with the
//! simulator's network and stores, deciding with the node's own sans-IO rules
//! (`strata_cluster::warm::{judge, covered_ms, newer_than, needed_ms,
//! needed_ms_after_start}`).
//!
//! While a node restarted with L3 settles (from its start until its proof), a copy pushed
//! to it (a hand-off, a copy passed on, a hand-off read's repair) is held apart
//! ([`SimNode::unproven`]): nothing reads, builds on or vouches for it, as the node hides
//! it (`Shared::settled_entry`). Its proof keeps it in the owner store, passes on what it
//! kept on the members' word, asks again about copies a member did not answer for, or
//! drops it.

use super::*;

/// The node's `cluster.rpc_timeout_ms` default (how far back a witness's record must
/// reach depends on it).
const RPC_TIMEOUT_MS: u64 = 500;
/// The node's `DEFER_UNANSWERED`: how long a proof asks again about unanswered copies.
const DEFER_UNANSWERED: u64 = 30 * SEC;
/// The node's pause between rounds of a proof that deferred copies.
const DEFER_ROUND: u64 = 500 * MS;

/// Which owner-store map a pushed copy belongs in, as a key of [`SimNode::unproven`].
pub(crate) fn kind_of(p: &Pushed) -> u8 {
    match p {
        Pushed::Plain(_) => 0,
        Pushed::Counter(_) => 1,
        Pushed::Pair(_) => 2,
    }
}

pub(crate) fn version_of(p: &Pushed) -> u64 {
    match p {
        Pushed::Plain(h) => h.version,
        Pushed::Counter(e) | Pushed::Pair(e) => e.version.as_u64(),
    }
}

impl Sim {
    /// Node `j` takes a pushed copy of `key`: held apart, unproven, while it settles
    /// (admitted as the node's `Set` handler admits it); otherwise stored as before. Whether
    /// it stored it as newer in its owner store (a copy held unproven is not passed on: the
    /// node's `store_pushed`).
    pub(crate) fn push_to(&mut self, j: usize, key: u32, p: &Pushed, after_start: bool) -> bool {
        if !self.nodes[j].settling {
            return match p {
                Pushed::Plain(held) => self.owner_set(j, key, *held),
                Pushed::Counter(e) => Self::take_pushed(&mut self.nodes[j].counters, key, e),
                Pushed::Pair(e) => Self::take_pushed(&mut self.nodes[j].pairs, key, e),
            };
        }
        let version = version_of(p);
        self.observe(j, version);
        let node = &mut self.nodes[j];
        let kind = kind_of(p);
        let held = match p {
            Pushed::Plain(_) => node.store.get(&key).map(|h| h.version),
            Pushed::Counter(_) => node.counters.get(&key).map(|e| e.version.as_u64()),
            Pushed::Pair(_) => node.pairs.get(&key).map(|e| e.version.as_u64()),
        };
        let admits = !matches!(p, Pushed::Plain(_))
            || node
                .coherence
                .as_ref()
                .is_some_and(|c| c.admits_tagged("ns", &key_bytes(key), version, &[tag_of(key)]));
        let older = held.is_some_and(|v| v > version)
            || node
                .unproven
                .get(&(kind, key))
                .is_some_and(|q| version_of(q) >= version);
        let id = (kind, key);
        if admits && !older {
            node.unproven.insert(id, p.clone());
            if after_start {
                node.read_after_start.insert(id);
            } else {
                node.read_after_start.remove(&id);
            }
        } else if admits
            && after_start
            && node
                .unproven
                .get(&id)
                .is_some_and(|q| version_of(q) == version)
        {
            // The same copy again, read after this process started: whichever push brought
            // a version, one read of it after the start proves it from there (the node's
            // `Pushed::read_after_start`).
            node.read_after_start.insert(id);
        }
        false
    }

    /// The version of the copy of `key` (in store `kind`) node `j` holds unproven, if any.
    pub(crate) fn unproven_version(&self, j: usize, kind: u8, key: u32) -> Option<u64> {
        self.nodes[j].unproven.get(&(kind, key)).map(version_of)
    }

    /// Whether node `j`, as another owner, refuses a primary's read of `key` (store
    /// `kind`): it holds a copy unproven (the node's `Shared::holds_unproven`: it answers
    /// `Get` with an error).
    pub(crate) fn refuses_unproven(&self, j: usize, kind: u8, key: u32) -> bool {
        !self.execute_over_unproven && self.nodes[j].unproven.contains_key(&(kind, key))
    }

    /// Whether primary `p` refuses to execute `key` (store `kind`) from what the other
    /// owners answered (`answered`: the newest version, 0 for none) because it holds a
    /// newer copy unproven (the node's `refuse_below_unproven`).
    pub(crate) fn below_unproven(&self, p: usize, kind: u8, key: u32, answered: u64) -> bool {
        !self.execute_over_unproven
            && strata_cluster::primary::below_unproven(
                self.unproven_version(p, kind, key),
                answered,
            )
    }

    /// Whether owner `o` refuses a primary's change of `key` (store `kind`) executed from
    /// the copy of version `base` because it holds a newer copy unproven (the node's
    /// `replica_check`: `ReplicaRefusal::Unproven`, nothing applied there).
    pub(crate) fn replica_refuses_unproven(&self, o: usize, kind: u8, key: u32, base: u64) -> bool {
        !self.replicas_over_unproven && self.below_unproven(o, kind, key, base)
    }

    /// The version `j`'s owner store holds of a copy like `p`, any (a witness's word), or
    /// fresh only (an owner's answer to `Versions`).
    fn held_by(&self, j: usize, kind: u8, key: u32, fresh_only: bool) -> Option<u64> {
        let node = &self.nodes[j];
        match kind {
            0 => node
                .store
                .get(&key)
                .filter(|h| !fresh_only || self.fresh(j, h.expires_at))
                .map(|h| h.version),
            1 => node
                .counters
                .get(&key)
                .filter(|e| !fresh_only || self.fresh(j, e.expires_at_ms))
                .map(|e| e.version.as_u64()),
            _ => node
                .pairs
                .get(&key)
                .filter(|e| !fresh_only || self.fresh(j, e.expires_at_ms))
                .map(|e| e.version.as_u64()),
        }
    }

    /// One round of node `i`'s proof of its pushed copies (the node's `prove_pushed`);
    /// whether copies were deferred to a later round.
    pub(crate) fn prove_pushes(&mut self, i: usize, may_defer: bool) -> bool {
        let Some(ring) = self.nodes[i].ring.clone() else {
            return false;
        };
        let me = self.nodes[i].name.clone();
        let others = self.view_others(i);
        let quorum = decide::has_quorum(others.len() + 1, self.mix.nodes);
        let now_ms = self.now / MS;
        let lease_held = self.nodes[i].lease.holds(now_ms, self.mix.nodes);
        let pushed: Vec<((u8, u32), Pushed)> = std::mem::take(&mut self.nodes[i].unproven)
            .into_iter()
            .collect();
        let (mut kept, mut witnessed, mut deferred, mut dropped) = (0u64, 0u64, 0u64, 0u64);
        for ((kind, key), p) in pushed {
            let version = version_of(&p);
            // Replaced meanwhile by a change it executed or took by replication.
            if self
                .held_by(i, kind, key, false)
                .is_some_and(|v| v >= version)
            {
                continue;
            }
            // Since this life started, or a rejoin's run of lease lapses began, or an
            // earlier proof kept this very version (the node's `WarmState::proof_from`).
            let from = strata_cluster::warm::proof_from(
                self.nodes[i].proof_from_ms,
                self.nodes[i].vouched.get(&vouch_id(kind, key)),
                version,
            );
            let age_ms = now_ms.saturating_sub(from);
            let needed = if self.nodes[i].read_after_start.contains(&(kind, key)) {
                let since_start = now_ms.saturating_sub(self.nodes[i].started_ms);
                strata_cluster::warm::needed_ms_after_start(age_ms, since_start, RPC_TIMEOUT_MS)
            } else {
                strata_cluster::warm::needed_ms(age_ms, RPC_TIMEOUT_MS)
            };
            let kb = key_bytes(key);
            let owners: Vec<String> = ring
                .owners(&kb, RF)
                .into_iter()
                .map(str::to_owned)
                .collect();
            let answer = strata_cluster::warm::validator(&owners, &me)
                .and_then(|v| self.index_of(v))
                .filter(|&j| self.reachable(i, j) && self.reachable(j, i))
                .map(|j| self.held_by(j, kind, key, true));
            let (ns, tags): (&str, Vec<&[u8]>) = match kind {
                0 => ("ns", vec![tag_of(key)]),
                1 => ("ctr", Vec::new()),
                _ => ("tx", Vec::new()),
            };
            let mut witnesses: Vec<strata_cluster::warm::Witness> = others
                .iter()
                .map(|&j| {
                    if !(self.reachable(i, j) && self.reachable(j, i)) {
                        return None;
                    }
                    let c = self.nodes[j].coherence.as_ref()?;
                    let covered = self.covered_for(j, i, now_ms);
                    let unproven = self.nodes[j].unproven.get(&(kind, key)).map(version_of);
                    let held = self.held_by(j, kind, key, false).max(unproven);
                    let superseded = c.superseded_by(ns, &kb, version, &tags);
                    Some((
                        covered,
                        strata_cluster::warm::newer_than(version, held, superseded),
                    ))
                })
                .collect();
            // Its own record's word, as the node's `own_newer`.
            witnesses.extend(strata_cluster::warm::own_word(
                self.nodes[i]
                    .coherence
                    .as_ref()
                    .and_then(|c| c.superseded_by(ns, &kb, version, &tags)),
            ));
            let (ended, all_told) = self.ended_lives(i, &others, needed, now_ms);
            let round = strata_cluster::warm::Round {
                needed_ms: needed,
                quorum,
                ended,
                all_told,
                replication_factor: RF.min(others.len() + 1),
                may_defer,
            };
            let verdict = strata_cluster::warm::judge(version, answer, &witnesses, &round);
            use strata_cluster::warm::Verdict;
            match verdict {
                Verdict::Kept | Verdict::Witnessed => {
                    // Current now, if its lease holds (`may_vouch`; a round here takes no
                    // time, so no lapse falls between its asking and its verdict): a later
                    // proof of this version reaches back to here.
                    if strata_cluster::warm::may_vouch(quorum, lease_held, None, None) {
                        self.nodes[i].vouched.vouch(
                            vouch_id(kind, key),
                            version,
                            now_ms,
                            CoherenceConfig::default().tombstone_ms,
                        );
                    }
                    if verdict == Verdict::Kept {
                        kept += 1;
                    } else {
                        witnessed += 1;
                    }
                    match &p {
                        Pushed::Plain(h) => {
                            self.nodes[i].store.insert(key, *h);
                        }
                        Pushed::Counter(e) => {
                            self.nodes[i].counters.insert(key, e.clone());
                        }
                        Pushed::Pair(e) => {
                            self.nodes[i].pairs.insert(key, e.clone());
                        }
                    }
                    if verdict == Verdict::Witnessed {
                        // Held here alone: passed on to the key's other owners.
                        for o in owners.iter().filter(|o| **o != me) {
                            if let Some(o) = self.index_of(o)
                                && self.reachable(i, o)
                                && self.reachable(o, i)
                            {
                                self.push_to(o, key, &p, false);
                            }
                        }
                    }
                }
                Verdict::Deferred => {
                    deferred += 1;
                    self.nodes[i].unproven.insert((kind, key), p);
                }
                Verdict::Dropped => dropped += 1,
            }
        }
        for (n, c) in [kept, witnessed, deferred, dropped].into_iter().enumerate() {
            self.pushed_proven[n] += c;
        }
        if kept + witnessed + deferred + dropped > 0 {
            self.note(|| {
                format!(
                    "n{i} proves its pushed copies: {kept} kept, {witnessed} witnessed, {deferred} deferred, {dropped} dropped"
                )
            });
        }
        deferred > 0
    }

    /// As the node's `WarmState::note_ended`: `at`'s view saw `name`'s life `generation`
    /// end (declared down, or replaced unseen); kept for `tombstone_ms`.
    pub(crate) fn note_ended(&mut self, at: usize, name: &str, generation: u64) {
        let now_ms = self.now / MS;
        let keep_ms = CoherenceConfig::default().tombstone_ms;
        let ended = &mut self.nodes[at].ended;
        ended.retain(|(_, _, t)| now_ms.saturating_sub(*t) <= keep_ms);
        ended.push((name.to_owned(), generation, now_ms));
    }

    /// The lives `j` saw end, as its answer tells them (`WarmState::ended_within`).
    fn ended_of(&self, j: usize, now_ms: u64) -> Vec<strata_cluster::rpc::EndedLife> {
        self.nodes[j]
            .ended
            .iter()
            .map(|(name, generation, at)| strata_cluster::rpc::EndedLife {
                name: name.clone(),
                generation: *generation,
                ago_ms: now_ms.saturating_sub(*at),
            })
            .collect()
    }

    /// How far back witness `j`'s record reaches for `i`'s proof, as the node's
    /// `ask_witnesses` reads a witness's answer: gaps of `i`'s own coherence life set
    /// apart (`strata_cluster::warm::covered_for`).
    fn covered_for(&self, j: usize, i: usize, now_ms: u64) -> u64 {
        let Some(c) = self.nodes[j].coherence.as_ref() else {
            return 0;
        };
        let (whole, gaps) = self.nodes[j].record.told(now_ms, c.tombstone_ms());
        if self.exempt_every_gap {
            return whole;
        }
        let (life, memory) = self.nodes[i]
            .coherence
            .as_ref()
            .map_or((0, 0), |c| (c.generation(), c.tombstone_ms()));
        strata_cluster::warm::covered_for(whole, &gaps, &self.nodes[i].name, life, memory)
    }

    /// As the node's proof: the lives that ended within `needed` ms as `i` and every
    /// witness it reaches told them, but those whose process went on (`i`'s and each
    /// witness's, `strata_cluster::warm::count_ended`; every witness here is of this
    /// build).
    fn ended_lives(&self, i: usize, others: &[usize], needed: u64, now_ms: u64) -> (usize, bool) {
        let answering: Vec<usize> = others
            .iter()
            .copied()
            .filter(|&j| self.reachable(i, j) && self.reachable(j, i))
            .filter(|&j| self.nodes[j].coherence.is_some())
            .collect();
        let alive: Vec<strata_cluster::warm::Process> = answering
            .iter()
            .copied()
            .chain([i])
            .filter_map(|j| {
                let m = self.nodes[j].membership.as_ref()?;
                Some(strata_cluster::warm::Process {
                    name: self.nodes[j].name.clone(),
                    first_generation: self.nodes[j].generation,
                    generation: m.identity().generation,
                })
            })
            .collect();
        let told: Vec<(u64, Option<Vec<strata_cluster::rpc::EndedLife>>)> = answering
            .iter()
            .copied()
            .map(|j| {
                (
                    self.covered_for(j, i, now_ms),
                    Some(self.ended_of(j, now_ms)),
                )
            })
            .collect();
        strata_cluster::warm::count_ended(&self.ended_of(i, now_ms), &told, needed, &alive)
    }

    /// Stage 10 of a warm restart, first half: rounds of [`Sim::prove_pushes`] until none
    /// is deferred (or [`DEFER_UNANSWERED`] passed since the run's first round); whether
    /// the proof goes on now (false: a later round is scheduled).
    pub(crate) fn pushes_proven(&mut self, i: usize, life: u32, run: u32) -> bool {
        let until = match self.nodes[i].defer_until {
            Some((r, t)) if r == run => t,
            _ => {
                let t = self.now + DEFER_UNANSWERED;
                self.nodes[i].defer_until = Some((run, t));
                t
            }
        };
        if self.prove_pushes(i, self.now < until) {
            self.push(
                DEFER_ROUND,
                Kind::Warm {
                    node: i,
                    life,
                    stage: 10,
                    run,
                },
            );
            return false;
        }
        self.nodes[i].settling = false;
        self.nodes[i].proof_from_ms = self.nodes[i].started_ms;
        true
    }
}

/// A copy's id in a member's [`strata_cluster::warm::Vouches`]: its store and key.
fn vouch_id(kind: u8, key: u32) -> Vec<u8> {
    let mut id = vec![kind];
    id.extend_from_slice(&key.to_le_bytes());
    id
}
