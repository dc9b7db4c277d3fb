//! Strata's Redis bridge: an existing Redis — standalone, behind Sentinel, or a Redis
//! Cluster — as the shared L2 tier, with L1 and L3 in front of it.
//!
//! - [`RedisTier`] implements `strata_core::Tier` and passes the shared contract suite.
//!   Entries are stored as one Redis string each (see [`codec`]) under
//!   `{prefix}:{namespace}:{key}`, with the TTL as `PX`; versions are compared inside a Lua
//!   script, so an older write never replaces a newer one.
//! - A circuit breaker ([`breaker`]) bypasses Redis while it is failing: reads fall through
//!   to L3 or the loader, writes stay local and are queued for cleanup, nothing errors;
//!   the queue is kept on disk beside L3 ([`journal`]), so a crash does not forget it.
//! - [`coherence`] keeps several nodes sharing one Redis coherent over pub/sub.

pub mod breaker;
pub mod codec;
pub mod coherence;
pub mod config;
pub mod journal;
mod tier;

pub use breaker::{Breaker, BreakerState};
pub use config::{BreakerConfig, BridgeConfig, Topology};
pub use tier::{BridgeCounters, BridgeError, BridgeStatus, MAX_PENDING, RedisTier};
