//! The typed errors of the core: what a caller did wrong (policy, sizes, names) is kept apart
//! from what a layer failed to do ([`TierError`]) and from what a loader returned.
//!
//! A miss is not an error: lookups return `Ok(None)`.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::tier::Layer;

/// Why a cache operation failed. Cloneable so that one loader failure can be handed to every
/// caller waiting on it.
#[derive(Debug, Clone, Error)]
pub enum CacheError {
    /// The requested TTL is longer than the namespace's `max_ttl` (for example the 24-hour
    /// licence rule). Nothing was written to any layer.
    #[error(
        "policy violation: TTL {requested:?} for namespace '{namespace}' exceeds its max_ttl of {allowed:?}"
    )]
    PolicyViolation {
        /// The namespace whose policy refused the write.
        namespace: String,
        /// The TTL the caller asked for (or the namespace default it fell back to).
        requested: Duration,
        /// The namespace's `max_ttl`.
        allowed: Duration,
    },
    /// A TTL of zero, which Redis also refuses ("invalid expire time").
    #[error("invalid TTL for namespace '{namespace}': a TTL must be at least 1 ms")]
    InvalidTtl {
        /// The namespace of the refused write.
        namespace: String,
    },
    /// The key is longer than `limits.max_key_bytes`.
    #[error("key is {len} bytes, above the limit of {max} bytes")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The value is longer than `limits.max_value_bytes`.
    #[error("value is {len} bytes, above the limit of {max} bytes")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// More tags than `limits.max_tags_per_entry`.
    #[error("entry has {count} tags, above the limit of {max}")]
    TooManyTags {
        /// How many tags the entry had.
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// A tag longer than `limits.max_tag_bytes`.
    #[error("tag is {len} bytes, above the limit of {max} bytes")]
    TagTooLarge {
        /// The tag's length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The namespace name is empty, too long, or has characters outside `[A-Za-z0-9_.-]`.
    #[error("invalid namespace name {name:?}: {reason}")]
    InvalidNamespace {
        /// The refused name (lossy UTF-8).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The node already holds `MAX_NAMESPACES` namespaces.
    #[error("too many namespaces: the limit is {max}")]
    TooManyNamespaces {
        /// The limit.
        max: usize,
    },
    /// A glob pattern longer than [`crate::glob::MAX_PATTERN_BYTES`].
    #[error("pattern is {len} bytes, above the limit of {max} bytes")]
    PatternTooLong {
        /// The pattern's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A layer failed in a way the caller must hear about (for example the L2 owner refused a
    /// write). Failures of local best-effort layers are counted and logged instead.
    #[error("{layer} failed: {source}")]
    Tier {
        /// The layer that failed.
        layer: Layer,
        /// What it reported.
        source: TierError,
    },
    /// The write was refused because L3 cannot apply writes now and the cache is configured
    /// to refuse writes then (`CacheBuilder::refuse_writes_on_l3_fault`, Redis's `MISCONF`
    /// choice). Nothing was written to any layer.
    #[error("L3 cannot apply writes now ({reason}); writes are refused until it recovers")]
    L3Failing {
        /// What L3 reported.
        reason: String,
    },
    /// A multi-key operation (a transaction, a script, `MSETNX`, `RENAME`, `COPY`) would
    /// hold more than `limit` bytes of the values it reads and writes
    /// (`CacheBuilder::multi_load_limit`). Nothing it would do was applied. Its text starts
    /// with Redis's `OOM` code.
    #[error(
        "OOM the values this transaction or script reads and writes come to more than {limit} bytes; nothing was applied"
    )]
    MultiLoadTooLarge {
        /// The operation's bound, in bytes.
        limit: usize,
    },
    /// The loader given to `get_or_load` failed; every caller waiting on that load gets this.
    #[error("loader failed: {0}")]
    Loader(LoaderError),
}

/// A loader's error, shared by every caller that waited on the same load.
#[derive(Debug, Clone)]
pub struct LoaderError(pub Arc<dyn std::error::Error + Send + Sync + 'static>);

impl std::fmt::Display for LoaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for LoaderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// What a layer reports when it cannot do what was asked.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TierError {
    /// The layer is down (not open, circuit open, disk full); the manager treats its reads as
    /// misses.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// One operation failed (I/O error, timeout, refused by a peer).
    #[error("operation failed: {0}")]
    Failed(String),
}
