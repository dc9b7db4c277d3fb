//! The cluster as the L2 layer actor runs it: the hook that starts its tasks, ticks it and
//! stops it, and the metrics it reports.

use super::*;

/// The L2 actor's hook: starts the cluster's tasks (joining the cluster the first time)
/// and runs the maintenance tick.
pub(crate) struct ClusterHook {
    pub(crate) shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl ClusterHook {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        ClusterHook {
            shared,
            tasks: Mutex::new(Vec::new()),
        }
    }

    fn abort(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        self.shared.relay.stop();
    }
}

impl Drop for ClusterHook {
    fn drop(&mut self) {
        // The peer connections it serves end too (`Shared::stopped`).
        self.shared.stopped.send_replace(true);
        self.abort();
    }
}

impl Maintenance for ClusterHook {
    fn start(&self) -> Result<(), String> {
        self.abort();
        self.shared.stopped.send_replace(false);
        let rt = tokio::runtime::Handle::current();
        let s = &self.shared;
        let tasks = vec![
            rt.spawn(s.clone().gossip_loop()),
            rt.spawn(s.clone().timer_loop()),
            rt.spawn(s.clone().apply_loop()),
            rt.spawn(s.clone().serve_rpc()),
            rt.spawn(s.clone().disseminate_loop()),
        ];
        *self.tasks.lock() = tasks;
        if !s.joined.swap(true, Ordering::AcqRel) {
            s.with_membership(|m| m.join());
        }
        Ok(())
    }

    fn maintain(&self) {
        self.shared.tick();
    }

    fn inline(&self) -> bool {
        true
    }

    fn stop(&self) {
        self.shared.leave();
        self.shared.stopped.send_replace(true);
        self.abort();
    }

    fn metrics(&self) -> Vec<LayerMetric> {
        let s = &self.shared;
        let k = &s.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let st = s.coherence.lock().stats();
        let (live, ms) = s
            .membership
            .lock()
            .as_ref()
            .map_or((0, Default::default()), |m| {
                (m.num_live() as u64, m.stats())
            });
        let m = |name, help, counter, value| LayerMetric {
            name,
            help,
            counter,
            value,
        };
        vec![
            m(
                "cluster_members",
                "Live members in this node's view, itself included",
                false,
                live,
            ),
            m(
                "cluster_ring_changes",
                "Times the ring changed",
                true,
                get(&k.ring_changes),
            ),
            m(
                "cluster_owned_entries",
                "Entries in this node's owner store",
                false,
                s.owner.entry_count(),
            ),
            m(
                "cluster_rpc_served",
                "Peer requests served",
                true,
                get(&k.rpc_served),
            ),
            m(
                "cluster_publish_forwarded",
                "Pub/sub messages published here and sent to the other members",
                true,
                get(&s.relay.forwarded),
            ),
            m(
                "cluster_publish_received",
                "Pub/sub messages other members published, delivered here",
                true,
                get(&s.relay.received),
            ),
            m(
                "cluster_publish_dropped",
                "Pub/sub messages not forwarded to a member (its queue full, a failed send, or the receiver's backlog full)",
                true,
                get(&s.relay.dropped),
            ),
            m(
                "cluster_remote_reads",
                "Reads sent to an owner",
                true,
                get(&k.remote_reads),
            ),
            m(
                "cluster_absent_hits",
                "Reads answered \"no such key\" from a remembered absence (cluster.negative_ttl_ms), without asking the owners",
                true,
                get(&k.absent_hits),
            ),
            m(
                "cluster_remote_hits",
                "Reads an owner answered with an entry",
                true,
                get(&k.remote_hits),
            ),
            m(
                "cluster_handoff_reads",
                "Reads served by a previous owner during a hand-off",
                true,
                get(&k.handoff_reads),
            ),
            m(
                "cluster_handoff_pushes",
                "Entries pushed to new owners after a ring change",
                true,
                get(&k.handoff_pushes),
            ),
            m(
                "cluster_refused_stale",
                "Copies refused because a newer invalidation was seen",
                true,
                get(&k.refused_stale),
            ),
            m(
                "cluster_stale_reads_missed",
                "Reads answered as a miss because every owner held only copies older than a change this node had seen, after three passes",
                true,
                get(&k.stale_reads_missed),
            ),
            m(
                "cluster_invalidations_applied",
                "Invalidations applied on this node",
                true,
                get(&k.applied),
            ),
            m(
                "cluster_gap_repairs",
                "Gap repairs asked for",
                true,
                st.repairs_asked,
            ),
            m(
                "cluster_gaps_dropped",
                "Gaps given up on (unverified copies dropped)",
                true,
                st.gaps_dropped,
            ),
            m(
                "cluster_warm_kept",
                "L3 copies a restart proved current against their owners and kept",
                true,
                get(&k.warm_kept),
            ),
            m(
                "cluster_warm_dropped",
                "L3 copies a restart could not prove current and dropped",
                true,
                get(&k.warm_dropped),
            ),
            m(
                "cluster_warm_calls",
                "Versions calls a restart made to prove its L3 copies",
                true,
                get(&k.warm_calls),
            ),
            m(
                "cluster_warm_pushed_kept",
                "Copies pushed during a restart's settle time that the key's other owner vouched for",
                true,
                get(&k.warm_pushed_kept),
            ),
            m(
                "cluster_warm_pushed_witnessed",
                "Pushed copies the key's other owner did not hold, kept because no live member knew of a newer change",
                true,
                get(&k.warm_pushed_witnessed),
            ),
            m(
                "cluster_warm_pushed_dropped",
                "Copies pushed during a restart's settle time dropped unproven",
                true,
                get(&k.warm_pushed_dropped),
            ),
            m(
                "cluster_warm_pushed_deferred",
                "Pushed copies a restart's proof asked about again because a member did not answer",
                true,
                get(&k.warm_pushed_deferred),
            ),
            m(
                "cluster_warm_pushes_deferred",
                "Pushes refused for now while this member settled, past cluster.settling_push_limit unproven ones",
                true,
                get(&k.pushes_deferred),
            ),
            m(
                "cluster_lease_grants_unmatched",
                "Lease grants not counted because the granting member saw a live member this node's view lacked",
                true,
                get(&k.lease_grants_unmatched),
            ),
            m(
                "cluster_handoff_retries",
                "Hand-off batches sent again because a settling member refused them for now",
                true,
                get(&k.handoff_retries),
            ),
            m(
                "cluster_handoff_deferred_dropped",
                "Hand-off entries a settling member refused for now and this node did not send again",
                true,
                get(&k.handoff_deferred_dropped),
            ),
            m(
                "cluster_drops_unverified",
                "Times this node dropped its unverified copies",
                true,
                get(&k.drops_unverified),
            ),
            m(
                "cluster_rpc_retries",
                "Peer requests retried on a new connection (at most 10 % of requests)",
                true,
                s.pool.retries(),
            ),
            m(
                "cluster_pushed_batches",
                "Invalidation batches pushed over peer connections (gossip backlog full)",
                true,
                get(&k.pushed_batches),
            ),
            m(
                "cluster_strict_invalidations",
                "Invalidations confirmed by every member before returning",
                true,
                get(&k.strict_invalidations),
            ),
            m(
                "cluster_rejected_packets",
                "Gossip packets dropped for a wrong or missing secret",
                true,
                ms.rejected_packets,
            ),
            m(
                "cluster_stuck_suspects",
                "Members declared down here after staying suspect for over twice the suspicion timeout",
                true,
                ms.stuck_suspects,
            ),
            m(
                "cluster_silence_refutations",
                "Refutations gossiped when a member answered again after a silence (a cut, or a pause of either end)",
                true,
                ms.silence_refutations,
            ),
            m(
                "cluster_rejected_connections",
                "Peer connections refused at the handshake",
                true,
                get(&k.rejected_connections),
            ),
            m(
                "cluster_writes_executed",
                "Writes executed here as their key's primary",
                true,
                get(&k.executed),
            ),
            m(
                "cluster_writes_forwarded",
                "Writes sent to their key's primary on another member (a cluster-aware client sends none: it reaches the primary itself)",
                true,
                get(&k.forwarded),
            ),
            m(
                "cluster_writes_unread",
                "Plain SETs, DELs and GETDELs executed here as primary, with no copy here, without reading the replica first: its answer to the replication names any newer copy",
                true,
                get(&k.blind_puts),
            ),
            m(
                "cluster_writes_reexecuted",
                "Executions redone here as primary because an owner held a newer copy than the one executed against, or had applied a newer invalidation of the key",
                true,
                get(&k.stale_base),
            ),
            m(
                "cluster_replications_refused_unproven",
                "Replications refused here as an owner until this node's proof of its copy, held unproven after a rejoin without its lease or a restart, newer than the copy the primary executed from",
                true,
                get(&k.replica_unproven),
            ),
            m(
                "cluster_invalidations_within_20ms",
                "Key invalidations from other members applied here within 20 ms of their write's stamp (against cluster_invalidations_applied: the share seen in time)",
                true,
                k.delays.within(20),
            ),
            m(
                "cluster_tombstones",
                "Keys whose invalidation this node remembers to refuse older copies (coherence tombstones, about 64 bytes each, kept for 60 s)",
                false,
                s.coherence.lock().tombstone_count() as u64,
            ),
            m(
                "cluster_lease_refusals",
                "Writes refused here as their key's primary because no majority of the cluster answered this node's pings within the last second (the primary's lease)",
                true,
                get(&k.lease_refusals),
            ),
            m(
                "cluster_expiry_waits_refused",
                "Commands with an expiry not acknowledged after waiting for their key's owners, a failover, for a tenth or more of the time their expiry had left (TRYAGAIN, nothing applied; or an unknown outcome when one attempt outlasted it)",
                true,
                get(&k.expiry_waits_refused),
            ),
            m(
                "cluster_timed_writes_shed",
                "Writes with an expiry refused (TRYAGAIN, nothing applied) because those still running here as their key's primary, given-up ones included, held cluster.timed_writes_max_bytes",
                true,
                get(&k.timed_writes_shed),
            ),
        ]
    }
}
