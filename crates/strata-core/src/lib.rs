//! # strata-core
//!
//! The parts of Strata that do not depend on where they run: the data types, versions and
//! policies, the [`Tier`] trait that every layer implements (with a shared contract suite behind
//! the `testsuite` feature), the L1 memory tier, and the tiered manager behind [`Cache`].
//!
//! ## Parts
//! - [`entry`], [`namespace`], [`version`]: what is stored, where, and in which order.
//! - [`time`], [`rng`]: the `Clock` and `Rng` seams; nothing here reads the OS clock or the OS
//!   RNG except through them.
//! - [`tier`]: the `Tier` trait and [`Layer`].
//! - [`memory`]: L1 on quick_cache.
//! - [`manager`]: [`Cache`], lookups with promotion, write-through, invalidation, single-flight.
//! - [`stats`], [`view`]: low-overhead counters and latency histograms, and their snapshots.
//! - [`glob`]: Redis-style patterns for `invalidate_pattern`.
//! - [`changes`]: the notices a listener (the server's client tracking) gets of every change.
//!
//! ## Limits
//! No I/O happens here except through the tiers a caller plugs in. Nothing spawns tasks: the
//! background work (sweeps, stats) is driven by the `strata` crate's actors, and the manager
//! works with any subset of layers, including none below L1.

pub mod changes;
pub mod entry;
pub mod error;
mod flight;
mod floors;
pub mod glob;
mod key_bytes;
pub mod manager;
pub mod memory;
pub mod namespace;
mod ns_table;
pub mod ops;
pub mod rng;
pub mod scan;
pub mod stats;
#[cfg(feature = "testsuite")]
pub mod testsuite;
pub mod tier;
pub mod time;
pub mod version;
pub mod view;
pub mod warm;

pub use changes::{ChangeListener, Changed};
pub use entry::{Entry, Limits, Tags};
pub use error::{CacheError, LoaderError, TierError};
pub use manager::{
    Cache, CacheBuilder, LoadOptions, Lookup, MULTI_LOADED_BYTES, MultiLoad, NamespaceHold,
    ReadGate, SetOptions, WeakCache,
};
pub use memory::{MemoryTier, MemoryTierConfig};
pub use namespace::{Compression, Namespace, NamespacePolicy};
pub use tier::{Layer, SetOutcome, Tier, TierHealth};
pub use time::{Clock, CoarseClock, ManualClock, SystemClock, UnixMillis};
pub use version::{HybridClock, Version};
pub use view::{CacheHealth, L1Snapshot, LayerSnapshot, StatsSnapshot};

/// Runs `f`, a long stretch of work on memory, where it holds up only the task calling it:
/// on a worker of tokio's multi-thread runtime through `block_in_place` (the worker's other
/// tasks, and the socket poller it may hold, go to another thread meanwhile), elsewhere
/// (a current-thread runtime, the simulator, no runtime) in place.
pub fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}
