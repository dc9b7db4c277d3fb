//! Members that place keys differently: `cluster.vnodes` and `cluster.replication_factor`
//! must be the same on every member, or members disagree on every key's primary and
//! owners. A member with another `vnodes` joined silently before: writes through it failed
//! with `TRYAGAIN … is not the primary`, and its RPCs stormed the others (a review,
//! 2026-12-05). Each connection's features exchange now carries both parameters, either
//! way (`rpc::features::with_ring`); a member that differs is logged as an error, named in
//! `/health`, and a member that differs from as many members as it agrees with (itself
//! counted) is not ready.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use strata_cluster::rpc::features;

/// A ring's parameters: `vnodes` and the replication factor.
pub(crate) type RingParams = (u16, u32);

/// This member's ring parameters and the members that told other ones.
#[derive(Debug)]
pub(crate) struct RingCheck {
    mine: RingParams,
    differing: Mutex<BTreeMap<String, RingParams>>,
}

impl RingCheck {
    pub(crate) fn new(vnodes: u16, replication_factor: u32) -> Self {
        RingCheck {
            mine: (vnodes, replication_factor.min(255)),
            differing: Mutex::default(),
        }
    }

    /// The features word this member sends: `bits` and its ring parameters.
    pub(crate) fn announce(&self, bits: u64) -> u64 {
        features::with_ring(bits, self.mine.0, self.mine.1)
    }

    /// Notes what `peer` told in a features exchange (an earlier build tells nothing, and
    /// is taken to agree).
    pub(crate) fn note(&self, me: &str, peer: &str, bits: u64) {
        let Some(theirs) = features::ring_params(bits) else {
            return;
        };
        let mut differing = self.differing.lock();
        if theirs == self.mine {
            if differing.remove(peer).is_some() {
                tracing::info!(node = %me, %peer, "member now places keys as this one does");
            }
        } else if differing.insert(peer.to_owned(), theirs) != Some(theirs) {
            tracing::error!(
                node = %me,
                %peer,
                "member {peer} places keys with cluster.vnodes = {} and cluster.replication_factor = {}, this member with {} and {}: they must be the same on every member (members disagree on every key's primary)",
                theirs.0, theirs.1, self.mine.0, self.mine.1
            );
        }
    }

    /// What is wrong, among the members of `view` (this member's live view, itself
    /// included, `members` of them): `(not_ready, why)`, or `None` when every member that
    /// told agrees.
    pub(crate) fn problem<'a>(
        &self,
        view: impl Iterator<Item = &'a String>,
        members: usize,
    ) -> Option<(bool, String)> {
        let differing = self.differing.lock();
        let named: Vec<String> = view
            .filter_map(|n| {
                differing
                    .get(n)
                    .map(|(v, rf)| format!("{n} (vnodes {v}, replication factor {rf})"))
            })
            .collect();
        if named.is_empty() {
            return None;
        }
        let not_ready = named.len() * 2 >= members;
        Some((
            not_ready,
            format!(
                "members place keys differently: {}; this member: vnodes {}, replication factor {} (cluster.vnodes and cluster.replication_factor must be the same on every member)",
                named.join(", "),
                self.mine.0,
                self.mine.1
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_odd_member_is_not_ready_and_the_others_name_it() {
        let good = RingCheck::new(128, 2);
        let odd = RingCheck::new(64, 2);
        // Each hears the other's word.
        good.note("n1", "n4", odd.announce(features::THIS_BUILD));
        for p in ["n1", "n2", "n3"] {
            odd.note("n4", p, good.announce(features::THIS_BUILD));
        }
        let view: Vec<String> = ["n1", "n2", "n3", "n4"].map(String::from).into();
        let (not_ready, why) = good.problem(view.iter(), 4).unwrap();
        assert!(!not_ready, "one odd member of four: the others stay ready");
        assert!(
            why.contains("n4 (vnodes 64, replication factor 2)"),
            "{why}"
        );
        let (not_ready, why) = odd.problem(view.iter(), 4).unwrap();
        assert!(not_ready, "{why}");
        // An earlier build tells nothing: taken to agree.
        let other = RingCheck::new(128, 2);
        other.note("n1", "n5", features::THIS_BUILD);
        assert!(other.problem(view.iter(), 4).is_none());
        // A member restarted with the right value is forgotten.
        good.note("n1", "n4", RingCheck::new(128, 2).announce(0));
        assert!(good.problem(view.iter(), 4).is_none());
        // A member that left the view is not counted.
        odd.note("n4", "n9", good.announce(0));
        let alone: Vec<String> = vec!["n4".into()];
        assert!(odd.problem(alone.iter(), 1).is_none());
    }
}
