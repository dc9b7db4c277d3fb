//! Change notices: how code outside the cache hears of every change of a key on this node —
//! a write or delete made here, an invalidation applied from another node, a pattern, tag or
//! namespace invalidation, an L1 eviction or expiry, a copy withdrawn after it raced an
//! invalidation, and "everything", when the node may have missed changes and dropped its
//! copies. The server's client-side-caching table (`CLIENT TRACKING`) listens, to tell its
//! clients which of their copies to drop.
//!
//! A notice comes *after* the change is visible in this node's layers, so a reader that
//! registered its interest before it read is told of every change its read may have missed.
//! Notices are called synchronously on the task that made the change: a listener must be
//! quick, must not block, and must not call back into the cache.

/// Which keys a change touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed<'a> {
    /// One key, in some namespace (a listener that keeps keys across namespaces, as Redis's
    /// tracking table does, needs no more).
    Key(&'a [u8]),
    /// The keys of `namespace` matching the Redis glob `pattern`.
    Pattern {
        /// The namespace.
        namespace: &'a str,
        /// The glob.
        pattern: &'a [u8],
    },
    /// The keys of `namespace` carrying `tag`.
    Tag {
        /// The namespace.
        namespace: &'a str,
        /// The tag.
        tag: &'a [u8],
    },
    /// Every key of a namespace (a flush).
    Namespace(&'a str),
    /// A key pushed out of L1 by capacity, when L1 is the node's only layer (so the key is
    /// gone). Not a change a client made: announced even to a client that asked not to hear
    /// of its own changes.
    Evicted(&'a [u8]),
    /// A copy this node held, and may have served, is gone without a client's write: its
    /// expiry passed and L1 dropped it (on a read or in its sweep), or a copy promoted or
    /// loaded into the node's layers raced an invalidation and was withdrawn. Announced even
    /// to a client that asked not to hear of its own changes.
    Dropped(&'a [u8]),
    /// Every key: the node dropped every copy it held because it may have missed changes.
    Everything,
}

/// Hears of every change of a key on this node ([`crate::Cache::set_change_listener`]).
pub trait ChangeListener: Send + Sync {
    /// Called after `change` is visible in this node's layers.
    fn changed(&self, change: Changed<'_>);
}

/// The expiries of the entries reads below L1 served during [`served_expiries`]: each key
/// and its expiry (node clock, ms; `None`: it never expires).
pub type Served = Vec<(bytes::Bytes, Option<u64>)>;

tokio::task_local! {
    static SERVED: std::cell::RefCell<Served>;
}

/// Runs `read`, and returns with its output the key and expiry of every entry that
/// [`crate::Cache::get`] or [`crate::Cache::get_entry`] served from below L1 (L2 or L3) on
/// this task meanwhile. Not listed: an L1 hit (L1's copy can be asked afterwards,
/// [`crate::Cache::l1_expiry`]), a value `get_or_load` loaded or served stale, and what an
/// operation executed at L2 read (`Cache::execute_multi` at a cluster primary or in Redis).
///
/// For a listener that must learn when what a reader was served expires (client-side
/// caching): reading the expiry again after the read finds nothing for a key that expired
/// in between, or whose copy L1 lost meanwhile, and the reader would never be told.
pub async fn served_expiries<F: std::future::Future>(read: F) -> (F::Output, Served) {
    SERVED
        .scope(std::cell::RefCell::new(Vec::new()), async move {
            let out = read.await;
            (out, SERVED.with(|s| s.take()))
        })
        .await
}

/// Notes that a read below L1 served `key` with this expiry (inside [`served_expiries`];
/// nothing otherwise).
pub(crate) fn note_served(key: &[u8], expires_at_ms: Option<u64>) {
    let _ = SERVED.try_with(|s| {
        s.borrow_mut()
            .push((bytes::Bytes::copy_from_slice(key), expires_at_ms));
    });
}
