//! What `/cluster` and `strata status` show: the node's view, its peers, its coherence.

use super::*;

impl Shared {
    /// What `/cluster` shows.
    pub(crate) fn status(&self) -> ClusterStatus {
        let rpc = self.pool.stats();
        let (states, identity, membership_stats) = match self.membership.lock().as_ref() {
            Some(m) => (m.member_states(), Some(m.identity().clone()), m.stats()),
            None => (Vec::new(), None, Default::default()),
        };
        let mut members: Vec<MemberStatus> = Vec::new();
        if let Some(id) = identity {
            members.push(MemberStatus::of(&id, "self", None));
        }
        for (id, state) in states {
            if id.is_placeholder() {
                continue;
            }
            let state = match state {
                foca_state::ALIVE => "alive",
                foca_state::SUSPECT => "suspect",
                _ => "down",
            };
            let peer = rpc.iter().find(|r| r.0 == id.name).map(|r| PeerRpc {
                requests: r.1,
                errors: r.2,
                rtt_us: r.3,
                last_rtt_us: r.4,
            });
            members.push(MemberStatus::of(&id, state, peer));
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let (c, in_sync, latest) = {
            let c = self.coherence.lock();
            (c.stats(), c.in_sync(), c.latest_seq())
        };
        let ring = self.ring();
        let k = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClusterStatus {
            node: self.name.clone(),
            generation: self.generation,
            ring_version: format!("{:016x}", ring.version()),
            ring_members: ring.nodes().to_vec(),
            ring_shares: ring
                .shares()
                .into_iter()
                .map(|(n, s)| (n.to_owned(), s))
                .collect(),
            replication_factor: self.cfg.replication_factor,
            members,
            in_sync,
            latest_seq: latest,
            owned_entries: self.owner.entry_count(),
            coherence: CoherenceFigures {
                applied: c.applied,
                duplicates: c.duplicates,
                repairs_asked: c.repairs_asked,
                gaps_dropped: c.gaps_dropped,
                bad_items: c.bad_items,
            },
            rejected_packets: membership_stats.rejected_packets,
            stuck_suspects: membership_stats.stuck_suspects,
            rejected_connections: get(&k.rejected_connections),
            handoff_reads: get(&k.handoff_reads),
            handoff_pushes: get(&k.handoff_pushes),
            drops_unverified: get(&k.drops_unverified),
            unproven_kept: get(&k.warm_pushed_kept) + get(&k.warm_pushed_witnessed),
            unproven_dropped: get(&k.warm_pushed_dropped),
            lease_holds: self
                .lease
                .lock()
                .holds(self.monotonic_ms(), self.cfg.expected_size as usize),
            lease_refusals: get(&k.lease_refusals),
            expiry_waits_refused: get(&k.expiry_waits_refused),
            timed_writes_shed: get(&k.timed_writes_shed),
            invalidation_delays: k.delays.snapshot(),
        }
    }
}

/// foca's member states, named (foca::State is not matchable by value across versions).
mod foca_state {
    pub(super) const ALIVE: foca::State = foca::State::Alive;
    pub(super) const SUSPECT: foca::State = foca::State::Suspect;
}

/// The cluster as `/cluster` and `strata status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// This node's name.
    pub node: String,
    /// This life's generation.
    pub generation: u64,
    /// The ring's version (a hash of the member list; equal on nodes that agree).
    pub ring_version: String,
    /// Members on the ring.
    pub ring_members: Vec<String>,
    /// Each ring member's share of the keys as their primary (they sum to 1).
    pub ring_shares: std::collections::BTreeMap<String, f64>,
    /// Owners per key.
    pub replication_factor: u32,
    /// Every member this node knows of, itself first.
    pub members: Vec<MemberStatus>,
    /// No invalidation gap is open.
    pub in_sync: bool,
    /// This node's latest invalidation sequence number.
    pub latest_seq: u64,
    /// Entries in the owner store.
    pub owned_entries: u64,
    /// Coherence counters.
    pub coherence: CoherenceFigures,
    /// Gossip packets dropped for a missing or wrong authentication tag.
    pub rejected_packets: u64,
    /// Members this node declared down itself after they stayed suspect too long (foca
    /// had stopped acting on the suspicion; see docs/ARCHITECTURE.md, decision 46).
    pub stuck_suspects: u64,
    /// Peer connections refused (failed handshake).
    pub rejected_connections: u64,
    /// Reads served by a previous owner during a hand-off.
    pub handoff_reads: u64,
    /// Entries pushed to new owners after a ring change.
    pub handoff_pushes: u64,
    /// Times this node dropped its unverified copies.
    pub drops_unverified: u64,
    /// Copies held unproven — pushed while this member settled after a restart, or owned
    /// when it rejoined without its lease — that its proofs kept (the key's other owner
    /// held that version, or no live member knew of anything newer).
    pub unproven_kept: u64,
    /// Copies held unproven that its proofs dropped.
    pub unproven_dropped: u64,
    /// Whether this node holds its lease as a primary: a majority of the cluster answered
    /// its pings within the last second (`strata_cluster::primary::Lease`). Without it, it
    /// executes no write.
    pub lease_holds: bool,
    /// Writes refused here as primary for want of the lease.
    pub lease_refusals: u64,
    /// Commands with an expiry refused after a wait for their key's primary (a failover)
    /// that would have cut a tenth or more of it (`TRYAGAIN`, nothing applied).
    pub expiry_waits_refused: u64,
    /// Writes with an expiry refused (`TRYAGAIN`, nothing applied) because those still
    /// running here as primary held `cluster.timed_writes_max_bytes`.
    pub timed_writes_shed: u64,
    /// Key invalidations from other members applied here, by how long after the write's
    /// stamp (the writer's clock) they were applied: one bucket per bound of
    /// [`DELAY_BOUNDS_MS`] and a last one for anything longer. Counts since start; the
    /// difference of two readings is a period's distribution. (On one machine the clocks
    /// agree; across machines the skew adds in.)
    pub invalidation_delays: Vec<u64>,
}

/// Upper bounds, in ms, of [`ClusterStatus::invalidation_delays`]'s buckets.
pub const DELAY_BOUNDS_MS: [u64; 10] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

/// Counts of invalidation delays by [`DELAY_BOUNDS_MS`] bucket (the last: longer).
#[derive(Debug, Default)]
pub(crate) struct DelayBuckets {
    counts: [AtomicU64; DELAY_BOUNDS_MS.len() + 1],
}

impl DelayBuckets {
    pub(crate) fn record(&self, ms: u64) {
        let i = DELAY_BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(DELAY_BOUNDS_MS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Invalidations applied within `bound_ms` (one of [`DELAY_BOUNDS_MS`]).
    pub(crate) fn within(&self, bound_ms: u64) -> u64 {
        DELAY_BOUNDS_MS
            .iter()
            .zip(&self.counts)
            .take_while(|(b, _)| **b <= bound_ms)
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// One member.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// Name.
    pub name: String,
    /// `self`, `alive`, `suspect` or `down`.
    pub state: String,
    /// Generation.
    pub generation: u64,
    /// Gossip address.
    pub gossip: String,
    /// Peer RPC address.
    pub rpc: String,
    /// Redis-protocol address.
    pub resp: String,
    /// Admin HTTP address.
    pub admin: String,
    /// This node's RPCs to it.
    pub rpc_stats: Option<PeerRpc>,
}

impl MemberStatus {
    fn of(id: &NodeIdentity, state: &str, rpc_stats: Option<PeerRpc>) -> Self {
        MemberStatus {
            name: id.name.clone(),
            state: state.into(),
            generation: id.generation,
            gossip: id.gossip.to_string(),
            rpc: id.rpc.to_string(),
            resp: id.resp.to_string(),
            admin: id.admin.to_string(),
            rpc_stats,
        }
    }
}

/// RPC figures towards one peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRpc {
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed or timed out.
    pub errors: u64,
    /// Smoothed round trip, µs.
    pub rtt_us: u64,
    /// Last round trip, µs.
    pub last_rtt_us: u64,
}

/// Coherence counters.
#[derive(Debug, Clone, Serialize)]
pub struct CoherenceFigures {
    /// Invalidations from other nodes applied.
    pub applied: u64,
    /// Duplicates ignored.
    pub duplicates: u64,
    /// Gap repairs asked for.
    pub repairs_asked: u64,
    /// Gaps given up on.
    pub gaps_dropped: u64,
    /// Undecodable items.
    pub bad_items: u64,
}

#[cfg(test)]
mod delay_tests {
    use super::*;

    #[test]
    fn delays_fall_in_their_buckets_and_within_counts_the_ones_in_time() {
        let d = DelayBuckets::default();
        for ms in [0, 1, 2, 3, 20, 21, 999, 1000, 1001, u64::MAX] {
            d.record(ms);
        }
        let s = d.snapshot();
        assert_eq!(s.len(), DELAY_BOUNDS_MS.len() + 1);
        assert_eq!(s[0], 2, "0 and 1 ms: within 1 ms");
        assert_eq!(s[1], 1);
        assert_eq!(s[2], 1, "3 ms: within 5");
        assert_eq!(s[4], 1, "20 ms: within 20");
        assert_eq!(s[5], 1, "21 ms: within 50");
        assert_eq!(s[9], 2, "999 and 1000 ms: within 1000");
        assert_eq!(s[10], 2, "longer");
        assert_eq!(s.iter().sum::<u64>(), 10);
        assert_eq!(d.within(20), 5);
        assert_eq!(d.within(1000), 8);
    }
}
