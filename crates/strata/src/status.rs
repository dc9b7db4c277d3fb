//! Shared, lock-light status of the node's actors, written by the supervisor and the layer
//! actors, read by `Node::health` and the metrics exporter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use strata_core::{Layer, LayerSnapshot};

/// The state of one layer's actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorState {
    /// Running its background work.
    Running,
    /// Failed and waiting for its restart (`attempt` counts restarts in the current window).
    Restarting {
        /// Restarts in the current window, this one included.
        attempt: u32,
    },
    /// Failed more often than the restart budget allows; the supervisor gave up on it. The
    /// data path still serves, but background work (sweeps, snapshots) has stopped.
    Failed(String),
    /// Stopped by shutdown.
    Stopped,
}

/// What the supervisor and actors report.
#[derive(Debug, Default)]
pub struct NodeStatus {
    actors: Mutex<BTreeMap<Layer, ActorState>>,
    snapshots: Mutex<BTreeMap<Layer, LayerSnapshot>>,
    restarts_total: AtomicU64,
    escalation: Mutex<Option<String>>,
}

impl NodeStatus {
    pub(crate) fn set_actor(&self, layer: Layer, state: ActorState) {
        self.actors.lock().insert(layer, state);
    }

    /// Each layer actor's state.
    pub fn actors(&self) -> BTreeMap<Layer, ActorState> {
        self.actors.lock().clone()
    }

    pub(crate) fn record_restart(&self) {
        self.restarts_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Actor restarts since the node started.
    pub fn restarts_total(&self) -> u64 {
        self.restarts_total.load(Ordering::Relaxed)
    }

    pub(crate) fn escalate(&self, why: String) {
        *self.escalation.lock() = Some(why);
    }

    /// Why the supervisor escalated, if it did.
    pub fn escalation(&self) -> Option<String> {
        self.escalation.lock().clone()
    }

    pub(crate) fn set_snapshot(&self, snap: LayerSnapshot) {
        self.snapshots.lock().insert(snap.layer, snap);
    }

    /// The latest periodic snapshot of each layer's stats.
    pub fn snapshots(&self) -> BTreeMap<Layer, LayerSnapshot> {
        self.snapshots.lock().clone()
    }
}
