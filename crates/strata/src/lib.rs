//! # strata
//!
//! The embeddable Strata node. A Rust service calls [`Node::start`] with a [`NodeConfig`],
//! takes a cheap, cloneable [`Cache`] handle from [`Node::cache`], and caches values in
//! namespaces with TTLs, tags, pattern and namespace invalidation, and single-flight loading.
//!
//! ## Parts
//! - [`config`]: `NodeConfig` with documented defaults, profiles, TOML + `STRATA__` env
//!   loading, validation that names the field.
//! - [`node`]: builds the layers and the supervision tree, and exposes health, metrics and
//!   shutdown.
//! - the supervision tree (private): a node supervisor and one actor per layer owning its
//!   background work (expiry sweeps, stats snapshots); a failed actor is restarted with
//!   backoff, and the supervisor escalates when the restart budget is spent.
//! - [`metrics`]: a per-node prometheus-client registry fed by a collector.
//!
//! ## Limits
//! The data path never goes through an actor: `Cache` reads and writes the layers directly,
//! so an actor's failure or restart never blocks or fails a request. This crate has L1 today;
//! L3 (RocksDB), the cluster L2 and the Redis bridge plug into the same `Tier` slots.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let node = strata::Node::start(strata::NodeConfig::default()).await?;
//! let cache = node.cache();
//! cache.set("emission_factors", "diesel", "2.68").await?;
//! assert!(cache.get("emission_factors", b"diesel").await?.is_some());
//! node.shutdown().await;
//! # Ok(()) }
//! ```

mod actors;
pub mod cluster;
pub mod config;
mod l2;
mod l3;
pub mod metrics;
pub mod node;
pub mod pending;
pub mod status;
pub mod tls;

pub use cluster::ClusterStatus;
pub use cluster::pubsub::PublishSink;
pub use cluster::slots::{SlotMap, SlotSource};
pub use config::{ClusterConfig, ConfigError, NodeConfig, Profile};
pub use node::{LayerHealth, Node, NodeDeps, NodeError, NodeHealth, Publisher};
pub use status::{ActorState, NodeStatus};
pub use strata_core::{
    Cache, CacheError, Entry, Layer, LoadOptions, NamespacePolicy, SetOptions, StatsSnapshot, Tags,
    TierHealth, Version,
};
