//! `TierActor`: the background work of one layer — the expiry sweep and the periodic stats
//! snapshot — and a fault-injection message for chaos tests.
//!
//! Its mailbox is ractor's (unbounded), but only two timers and rare control messages feed
//! it, so it cannot grow: a tick is sent only while the previous ones are handled within the
//! interval, and the sweep itself runs on the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use strata_core::{Cache, Layer, Tier};
use tokio::task::JoinHandle;

use crate::status::{ActorState, NodeStatus};

/// Lifecycle work of a layer that has any (L3: open and recover, size, health). Blocking
/// methods: the actor runs them on the blocking pool.
pub(crate) trait Maintenance: Send + Sync + 'static {
    /// Opens or recovers the layer. A failure leaves the layer down (serving misses) and is
    /// retried by `maintain`; it does not fail the actor.
    fn start(&self) -> Result<(), String>;
    /// Periodic upkeep: reopen if down, enforce size, check health.
    fn maintain(&self);
    /// Clean close at node shutdown.
    fn stop(&self);
    /// The layer's own metrics for the node's registry.
    fn metrics(&self) -> Vec<LayerMetric>;
    /// True when `start`, `maintain` and `stop` never block, so they run on the actor's own
    /// task; false (the default: L3's disk work) runs them on tokio's blocking pool. The
    /// cluster hook is inline: it sends on the node's sockets, which under turmoil exist
    /// only on the runtime's own thread.
    fn inline(&self) -> bool {
        false
    }
}

/// Runs one of a hook's calls where the hook wants it (see [`Maintenance::inline`]).
pub(crate) async fn run_hook(
    m: &Arc<dyn Maintenance>,
    call: fn(&dyn Maintenance),
) -> Result<(), ActorProcessingErr> {
    if m.inline() {
        call(m.as_ref());
        Ok(())
    } else {
        let m = m.clone();
        blocking(move || call(m.as_ref())).await
    }
}

/// One metric a layer exports beyond the per-layer counters every layer has.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerMetric {
    /// Name without the `strata_` prefix (and, for counters, without `_total`).
    pub(crate) name: &'static str,
    /// Help text.
    pub(crate) help: &'static str,
    /// Counter (monotonic) or gauge.
    pub(crate) counter: bool,
    /// The value now.
    pub(crate) value: u64,
}

/// Messages of a layer actor.
#[derive(Debug)]
pub(crate) enum TierMsg {
    /// Drop expired entries now.
    Sweep,
    /// Run the layer's maintenance.
    Maintain,
    /// Record this layer's stats snapshot.
    Snapshot,
    /// Panic, to exercise supervision (chaos testing; see `Node::inject_fault`).
    InjectPanic,
}

/// What a layer actor needs; cloned by the supervisor for each (re)start.
#[derive(Clone)]
pub(crate) struct TierActorArgs {
    pub(crate) layer: Layer,
    pub(crate) tier: Arc<dyn Tier>,
    pub(crate) cache: Cache,
    pub(crate) status: Arc<NodeStatus>,
    /// How often to purge expired entries; `None` never (Redis expires its keys itself).
    pub(crate) sweep_interval: Option<Duration>,
    pub(crate) snapshot_interval: Duration,
    pub(crate) maintenance: Option<(Arc<dyn Maintenance>, Duration)>,
}

async fn blocking(f: impl FnOnce() + Send + 'static) -> Result<(), ActorProcessingErr> {
    tokio::task::spawn_blocking(f).await?;
    Ok(())
}

pub(crate) struct TierActor;

pub(crate) struct TierActorState {
    args: TierActorArgs,
    timers: Vec<JoinHandle<()>>,
}

impl Actor for TierActor {
    type Msg = TierMsg;
    type State = TierActorState;
    type Arguments = TierActorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TierMsg>,
        args: TierActorArgs,
    ) -> Result<TierActorState, ActorProcessingErr> {
        let mut timers = vec![myself.send_interval(args.snapshot_interval, || TierMsg::Snapshot)];
        if let Some(every) = args.sweep_interval {
            timers.push(myself.send_interval(every, || TierMsg::Sweep));
        }
        if let Some((m, every)) = &args.maintenance {
            run_hook(m, |m| {
                if let Err(reason) = m.start() {
                    tracing::error!(%reason, "layer failed to start; it will be retried");
                }
            })
            .await?;
            timers.push(myself.send_interval(*every, || TierMsg::Maintain));
        }
        args.status.set_actor(args.layer, ActorState::Running);
        tracing::debug!(layer = %args.layer, "layer actor started");
        Ok(TierActorState { args, timers })
    }

    async fn handle(
        &self,
        _myself: ActorRef<TierMsg>,
        msg: TierMsg,
        state: &mut TierActorState,
    ) -> Result<(), ActorProcessingErr> {
        let a = &state.args;
        match msg {
            TierMsg::Sweep => {
                let tier = a.tier.clone();
                // A sweep walks every entry of the layer under shard locks: run it off the
                // async workers so it never delays a request.
                let handle = tokio::runtime::Handle::current();
                let swept =
                    tokio::task::spawn_blocking(move || handle.block_on(tier.purge_expired()))
                        .await?;
                match swept {
                    Ok(n) if n > 0 => tracing::debug!(layer = %a.layer, dropped = n, "sweep"),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(layer = %a.layer, error = %err, "sweep failed"),
                }
                if a.layer == Layer::L1 {
                    // After L1's sweep: namespaces left with no key anywhere give their
                    // slots back (a pass over the namespace table, off the workers).
                    let cache = a.cache.clone();
                    let n = tokio::task::spawn_blocking(move || cache.reclaim_empty_namespaces())
                        .await?;
                    if n > 0 {
                        tracing::debug!(reclaimed = n, "empty namespaces reclaimed");
                    }
                }
            }
            TierMsg::Snapshot => {
                if let Some(snap) = a.cache.stats().layer(a.layer).cloned() {
                    tracing::debug!(
                        layer = %a.layer,
                        hits = snap.hits,
                        misses = snap.misses,
                        p99_us = snap.latency.p99_us,
                        "stats snapshot"
                    );
                    a.status.set_snapshot(snap);
                }
            }
            TierMsg::Maintain => {
                if let Some((m, _)) = &a.maintenance {
                    run_hook(m, |m| m.maintain()).await?;
                }
            }
            TierMsg::InjectPanic => panic!("fault injected into the {} actor", a.layer),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TierMsg>,
        state: &mut TierActorState,
    ) -> Result<(), ActorProcessingErr> {
        for t in &state.timers {
            t.abort();
        }
        Ok(())
    }
}
