//! # strata-storage
//!
//! L3, the local disk tier, on RocksDB: a [`strata_core::Tier`] that survives restarts, keeps
//! every record checksummed and versioned, compresses values per namespace policy, drops
//! expired records in a compaction filter, and keeps its live data within a byte capacity.
//!
//! ## Parts
//! - [`record`]: the on-disk record format (format byte, postcard body, xxh3 trailer) with a
//!   bounded decoder that never panics.
//! - [`disk`]: [`DiskTier`], the RocksDB-backed tier, and its open/close, size enforcement and
//!   health checks (driven by the node's L3 actor).
//! - `behind`: writes acknowledged before they are on disk (`DiskTierConfig::write_behind`),
//!   answered from memory until the writer stores them, each key once at its newest version.
//! - [`faults`]: what L3 failed to apply (tombstones, distrust, the marker file), so a failing
//!   disk never serves an older value.
//!
//! ## Limits
//! Every RocksDB call blocks: the `Tier` methods answer from memory on the caller's thread
//! when they can, and otherwise run the call on L3's own threads (a group-commit writer,
//! reader threads) or, for scans and bulk changes, on tokio's blocking pool. The
//! tier is opened explicitly (`DiskTier::open`); until then, or after a failed open, every
//! operation returns `TierError::Unavailable`, which the manager serves as a miss.

#[cfg(feature = "rocksdb")]
mod behind;
#[cfg(feature = "rocksdb")]
mod counts;
#[cfg(feature = "rocksdb")]
pub mod disk;
#[cfg(feature = "rocksdb")]
pub mod faults;
#[cfg(feature = "rocksdb")]
mod floors;
#[cfg(feature = "rocksdb")]
mod known;
#[cfg(feature = "rocksdb")]
mod readers;
pub mod record;

#[cfg(feature = "rocksdb")]
pub use disk::{
    DiskCounters, DiskTier, DiskTierConfig, SharedDiskTier, SizeReport, dir_size, disk_key,
};
#[cfg(feature = "rocksdb")]
pub use faults::FaultSummary;
pub use record::{RecordError, RecordHeader};
