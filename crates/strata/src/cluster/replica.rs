//! An owner's side of a primary's replication ([`crate::cluster::primary`]): `Replicate`
//! for one key's change, `ReplicateMulti` for a multi-key command's changes. Each change is
//! first checked — the sender is the key's primary in this node's view (fencing), this node
//! holds nothing newer than the copy the primary executed from, and no invalidation newer
//! than that copy — and only then applied. A multi-key command's changes are all checked
//! before any is applied, so a refusal of a later key leaves nothing applied here.

use strata_cluster::primary as decide;
use strata_cluster::rpc::{ReplicaChange, ReplicaRefusal, Response, WireEntry};
use strata_core::Version;

use super::{Shared, from_wire, to_wire};

impl Shared {
    /// An owner's side of `Replicate`: applies a change from `from` when `from` is the
    /// key's primary in this node's view, else fences it off. `knows_unproven`: the
    /// caller's build understands [`ReplicaRefusal::Unproven`]
    /// (`rpc::features::UNPROVEN_REFUSALS`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn replicate_in(
        &self,
        from: &str,
        namespace: &str,
        key: &[u8],
        entry: Option<WireEntry>,
        version: u64,
        base: u64,
        knows_unproven: bool,
    ) -> Response {
        let h = super::executing::key_hash(namespace, key);
        self.executing.while_checked(&[h], |busy| {
            if busy {
                return self.executing_here().into();
            }
            if let Err(refusal) =
                self.replica_check(from, namespace, key, entry.is_some(), base, &[])
            {
                return for_caller(refusal, knows_unproven).into();
            }
            self.replica_apply(namespace, key, entry, version)
        })
    }

    /// The refusal of a replication of a key this node is executing as its primary itself
    /// (its view is about to move, or has moved under the execution): fenced, nothing
    /// applied; the sender tries again once the view or the execution moves on.
    fn executing_here(&self) -> ReplicaRefusal {
        self.counters
            .fenced
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ReplicaRefusal::Fenced {
            primary: Some(self.name.clone()),
        }
    }

    /// An owner's side of `ReplicateMulti`: every change checked as [`Shared::replicate_in`]
    /// checks a write (a removal too), and as the store will check it
    /// ([`Shared::replica_would_store`]), before any is applied. Answers `Replicated` once
    /// all are applied, `Refused` with every change refused and nothing applied, or an
    /// error — the only answer after which some may be applied and others not: a store
    /// that failed, or a request of another connection that changed a key between the
    /// check and the store (an invalidation, a newer copy pushed or repaired); the
    /// primary reports an unknown outcome.
    pub(crate) fn replicate_multi_in(
        &self,
        from: &str,
        namespace: &str,
        changes: Vec<ReplicaChange>,
        knows_unproven: bool,
    ) -> Response {
        if changes.len() > strata_cluster::rpc::MAX_CHANGES_PER_REQUEST {
            return Response::Error(format!(
                "a replication of {} changes: at most {} in one request (nothing applied)",
                changes.len(),
                strata_cluster::rpc::MAX_CHANGES_PER_REQUEST
            ));
        }
        let hashes: Vec<u64> = changes
            .iter()
            .map(|c| super::executing::key_hash(namespace, &c.key))
            .collect();
        self.executing.while_checked(&hashes, |busy| {
            if busy {
                return Response::Refused {
                    refusals: vec![(0, self.executing_here())],
                };
            }
            match self.replicate_multi_checked(from, namespace, changes) {
                Response::Refused { refusals } => Response::Refused {
                    refusals: refusals
                        .into_iter()
                        .map(|(i, r)| (i, for_caller(r, knows_unproven)))
                        .collect(),
                },
                other => other,
            }
        })
    }

    /// [`Shared::replicate_multi_in`] once no key of it is under execution here.
    fn replicate_multi_checked(
        &self,
        from: &str,
        namespace: &str,
        changes: Vec<ReplicaChange>,
    ) -> Response {
        // A member of a build from before check-only changes read one as a removal at
        // version 0 (tests of rolling upgrades: `Node::act_as_earlier_build`).
        #[cfg(feature = "fault-injection")]
        let earlier = {
            let n = changes.iter().filter(|c| c.check_only()).count() as u64;
            (self.faults.checks_received).fetch_add(n, std::sync::atomic::Ordering::AcqRel);
            (self.faults.earlier_build).load(std::sync::atomic::Ordering::Acquire)
        };
        #[cfg(not(feature = "fault-injection"))]
        let earlier = false;
        let check_only = |c: &ReplicaChange| c.check_only() && !earlier;
        let mut refusals = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            // A removal is checked against newer removals too: the command read the key's
            // copy before it removed it (a `RENAME`'s source, whose value it wrote under
            // the new name), so a dead copy made its other changes wrong.
            // A key read and not changed is checked as a write's base, and nothing more.
            let base_tags: Vec<&[u8]> = c.base_tags.iter().map(|t| t.as_slice()).collect();
            let checked = self
                .replica_check(from, namespace, &c.key, true, c.base, &base_tags)
                .and_then(|()| match check_only(c) {
                    true => Ok(()),
                    false => self.replica_would_store(namespace, &c.key, c),
                });
            match checked {
                Ok(()) => {}
                // Every key has the same primary: once is enough.
                Err(fenced @ ReplicaRefusal::Fenced { .. }) => {
                    return Response::Refused {
                        refusals: vec![(i as u32, fenced)],
                    };
                }
                Err(refusal) => refusals.push((i as u32, refusal)),
            }
        }
        if !refusals.is_empty() {
            return Response::Refused { refusals };
        }
        for (i, c) in changes.into_iter().enumerate() {
            if check_only(&c) {
                continue;
            }
            match self.replica_apply(namespace, &c.key, c.entry, c.version) {
                Response::Replicated => {}
                // Nothing stored (a request of another connection stored a newer copy
                // since the check): a refusal like the check's.
                Response::Stale { entry } if i == 0 => {
                    return Response::Refused {
                        refusals: vec![(0, ReplicaRefusal::Stale { entry })],
                    };
                }
                // Not `Superseded`: the store wrote the change over the previous copy
                // before it dropped the change, so that copy is gone (an unknown outcome).
                other => {
                    return Response::Error(format!(
                        "change {i} answered {other:?} after every change was checked: {i} earlier ones are applied here"
                    ));
                }
            }
        }
        Response::Replicated
    }

    /// Whether this owner takes a change of `key` from `from` executed against the copy of
    /// version `base` (0: none) carrying `base_tags`: `from` is the key's primary in this
    /// node's view, this node holds no fresh copy newer than `base`, and — for a write —
    /// has applied no invalidation newer than `base` that covers that copy.
    fn replica_check(
        &self,
        from: &str,
        namespace: &str,
        key: &[u8],
        write: bool,
        base: u64,
        base_tags: &[&[u8]],
    ) -> Result<(), ReplicaRefusal> {
        let ring = self.ring();
        let (members, expected) = (self.member_count(), self.cfg.expected_size as usize);
        if let Err(primary) = decide::admits_replication(&ring, members, expected, key, from) {
            self.counters
                .fenced
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(ReplicaRefusal::Fenced { primary });
        }
        // A fresh copy held unproven, newer than the one the change was executed from, may
        // be the last one of the key's latest change: refused until its proof keeps it (and
        // passes it on) or drops it (decision 122). A removal or a plain `SET` waits as
        // well: an owner cannot tell one from a read-modify-write executed from none.
        let unproven = (self.warm.any_unproven())
            .then(|| self.owner.get_retained_entry(namespace, key))
            .flatten()
            .filter(|e| e.is_fresh(self.now_ms()))
            .map(|e| e.version)
            .filter(|v| self.warm.is_unproven(namespace, key, *v));
        if decide::below_unproven(unproven.map(Version::as_u64), base)
            && let Some(version) = unproven
        {
            self.counters
                .replica_unproven
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(ReplicaRefusal::Unproven {
                version: version.as_u64(),
            });
        }
        let held = self
            .settled_entry(namespace, key)
            .filter(|e| e.is_fresh(self.now_ms()));
        if decide::replica_is_ahead(held.as_ref(), base)
            && let Some(e) = held
        {
            return Err(ReplicaRefusal::Stale { entry: to_wire(&e) });
        }
        if write {
            // A removal of the key newer than the copy the primary executed from (the
            // key's own, a pattern's, a flush's: each covers every copy of the key) made
            // that copy dead: executed from it — a `DEL` of an earlier primary the new one
            // has not applied, even when its clock is past it and the change stamped above
            // it — the change would bring the removed value back. The primary executes
            // again from no copy above it. Tags count when the primary sent the base's
            // (`ReplicateMulti`); a `Replicate` leaves them out: the change's may not be
            // the base's — a `RENAME` takes the source's, a plain `SET` has its own — and a
            // tag would refuse a live base.
            let by = self
                .coherence
                .lock()
                .superseded_by(namespace, key, base, base_tags);
            if let Some(version) = by {
                return Err(ReplicaRefusal::Superseded { version });
            }
        }
        Ok(())
    }

    /// Whether this node's store will take `change` as [`Shared::replica_apply`] stores it:
    /// it holds no copy, expired or not, newer than the change (the store would keep it:
    /// `Stale`); for a write, no invalidation newer than the entry covers the entry, tags
    /// included (the store would drop it: `Covered`), and the value fits the store.
    fn replica_would_store(
        &self,
        namespace: &str,
        key: &[u8],
        change: &ReplicaChange,
    ) -> Result<(), ReplicaRefusal> {
        let version = change.entry.as_ref().map_or(change.version, |e| e.version);
        if let Some(kept) = self.owner.get_retained_entry(namespace, key)
            && kept.version.as_u64() > version
        {
            return Err(ReplicaRefusal::Stale {
                entry: to_wire(&kept),
            });
        }
        let Some(e) = &change.entry else {
            return Ok(());
        };
        let tags: Vec<&[u8]> = e.tags.iter().map(Vec::as_slice).collect();
        let by = self
            .coherence
            .lock()
            .superseded_by(namespace, key, e.version, &tags);
        if let Some(version) = by {
            return Err(ReplicaRefusal::Covered { version });
        }
        let tag_bytes = e.tags.iter().map(Vec::len).sum();
        let largest = self.owner.largest_value(namespace, key.len(), tag_bytes);
        if e.value.len() > largest {
            return Err(ReplicaRefusal::TooLarge {
                largest: largest as u64,
            });
        }
        Ok(())
    }

    /// Applies a change [`Shared::replica_check`] admitted: stores the entry written, or
    /// records and applies the removal.
    fn replica_apply(
        &self,
        namespace: &str,
        key: &[u8],
        entry: Option<WireEntry>,
        version: u64,
    ) -> Response {
        let resp = match entry {
            Some(w) => {
                let e = from_wire(w);
                let e_version = e.version;
                self.observe(e_version);
                match self.store_owned_or_superseded(namespace, key, e) {
                    // Stored, then refused by an invalidation newer than the change (a `DEL`
                    // by an earlier primary whose clock ran ahead of this one's, a pattern
                    // that ran meanwhile). Answering `Replicated` would leave the change on
                    // the primary alone: it executes again above the invalidation instead.
                    Ok(Err(version)) => Response::Superseded { version },
                    Ok(Ok(strata_core::SetOutcome::TooLarge)) => {
                        Response::Error("the value does not fit this owner store".into())
                    }
                    // The store kept a newer copy than the primary's change: one the check
                    // did not show, expired here (a stamp from a clock ahead of the
                    // primary's). Acknowledging would leave the change on the primary
                    // alone; the primary re-executes above that copy instead (`adopt`:
                    // an expired copy is a floor, not a start).
                    Ok(Ok(strata_core::SetOutcome::KeptNewer)) => {
                        match self.owner.get_retained_entry(namespace, key) {
                            Some(kept) if kept.version > e_version => Response::Stale {
                                entry: to_wire(&kept),
                            },
                            _ => Response::Replicated,
                        }
                    }
                    Ok(Ok(_)) => {
                        // Remembered as the primary's write (tombstone_ms): copies older than
                        // it are stale, here, even once this copy is evicted or has expired
                        // and the primary died before its invalidation left — a restarted
                        // member's proof asks every member what it knows
                        // (`strata_cluster::warm::keep_pushed`).
                        let now = self.coherence_ms();
                        self.coherence
                            .lock()
                            .note_written(namespace, key, e_version.as_u64(), now);
                        Response::Replicated
                    }
                    Err(err) => Response::Error(err.to_string()),
                }
            }
            None => {
                let v = Version::from_u64(version);
                self.observe(v);
                // Before the store's check, as in `remove_owned`: a push or repair of an
                // older copy arriving after this removal is refused.
                let now = self.coherence_ms();
                self.coherence
                    .lock()
                    .note_removed(namespace, key, version, now);
                match self.owner.get_retained_entry(namespace, key) {
                    Some(e) if e.version <= v => {
                        self.owner.remove_sync(namespace, key);
                        Response::Replicated
                    }
                    // Newer than the removal, and not fresh (the check would have shown
                    // it): as for a write above, the primary executes again above it.
                    Some(kept) => Response::Stale {
                        entry: to_wire(&kept),
                    },
                    None => Response::Replicated,
                }
            }
        };
        // Once the store holds the change (absent.rs).
        self.absent.forget(namespace, key);
        resp
    }
}

/// `refusal` as a caller that does not know [`ReplicaRefusal::Unproven`]
/// (`knows_unproven` false: an earlier build) understands it: `Fenced` with no primary, a
/// refusal with nothing applied there too.
fn for_caller(refusal: ReplicaRefusal, knows_unproven: bool) -> ReplicaRefusal {
    match refusal {
        ReplicaRefusal::Unproven { .. } if !knows_unproven => {
            ReplicaRefusal::Fenced { primary: None }
        }
        other => other,
    }
}
