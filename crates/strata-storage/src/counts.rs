//! L3's key count per namespace, kept on write so that `DBSIZE` and `INFO keyspace` read a
//! number instead of passing over the keyspace.
//!
//! The write paths adjust it: a record stored where none was adds one, a deleted record
//! takes one off, a namespace flush sets it to zero. Two kinds of change bypass them: the
//! compaction filter drops expired and evicted records without a callback, and a failed
//! change is applied later by the reconcile. Both leave the count high (an upper bound, as
//! Redis's `DBSIZE` counts expired keys not yet reclaimed), and the periodic expiry pass
//! recounts from the records themselves. Until the first count after an open, the count is
//! unknown and callers list the keys.

use std::collections::HashMap;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

/// Per-namespace counts, keyed by the namespace's key prefix (`0x80 | len ‖ name`).
#[derive(Default)]
pub(crate) struct KeyCounts {
    inner: Mutex<Inner>,
    /// Held (shared) by every change across its RocksDB write and its count update, and
    /// (exclusive) by a recount while it takes its snapshot: a change is then either in the
    /// snapshot or in the recount's `pending`, never both or neither.
    gate: RwLock<()>,
}

#[derive(Default)]
struct Inner {
    /// Whether `by_ns` was counted from the records since the last open (or invalidation).
    known: bool,
    by_ns: HashMap<Box<[u8]>, u64>,
    /// While a recount runs: the changes made after its snapshot.
    pending: Option<Pending>,
    /// Bumped by [`KeyCounts::invalidate`]: a recount that started before is discarded.
    epoch: u64,
}

/// Changes made after a recount's snapshot.
#[derive(Default)]
struct Pending {
    /// Every namespace was emptied after the snapshot.
    all_reset: bool,
    /// Per namespace: emptied after the snapshot, and records added minus deleted since.
    by_ns: HashMap<Box<[u8]>, (bool, i64)>,
}

/// A recount in progress ([`KeyCounts::begin_recount`]).
pub(crate) struct Recount {
    epoch: u64,
}

/// The namespace prefix of a disk key in the current layout (`None` for metadata and the old
/// layout).
pub(crate) fn ns_prefix_of(dkey: &[u8]) -> Option<&[u8]> {
    let first = *dkey.first()?;
    if first & 0x80 == 0 {
        return None;
    }
    dkey.get(..1 + usize::from(first & 0x7f))
}

impl KeyCounts {
    /// Hold this across a change's RocksDB write and its count update.
    pub(crate) fn change(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read()
    }

    /// Adds `delta` to the namespace of `dkey` (kept only while the counts are known or
    /// being counted).
    pub(crate) fn add(&self, dkey: &[u8], delta: i64) {
        let Some(prefix) = ns_prefix_of(dkey) else {
            return;
        };
        self.add_prefix(prefix, delta);
    }

    /// Adds `delta` to the namespace whose key prefix is `prefix`.
    pub(crate) fn add_prefix(&self, prefix: &[u8], delta: i64) {
        if delta == 0 {
            return;
        }
        let mut g = self.inner.lock();
        if let Some(p) = &mut g.pending {
            p.by_ns.entry(prefix.into()).or_default().1 += delta;
        }
        if !g.known {
            return;
        }
        match g.by_ns.get_mut(prefix) {
            Some(n) => *n = n.saturating_add_signed(delta),
            None if delta > 0 => {
                g.by_ns.insert(prefix.into(), delta as u64);
            }
            None => {}
        }
    }

    /// The namespace whose key prefix is `prefix` was emptied.
    pub(crate) fn clear_prefix(&self, prefix: &[u8]) {
        let mut g = self.inner.lock();
        if let Some(p) = &mut g.pending {
            p.by_ns.insert(prefix.into(), (true, 0));
        }
        g.by_ns.remove(prefix);
    }

    /// Every namespace was emptied: the counts are known to be zero.
    pub(crate) fn clear_all(&self) {
        let mut g = self.inner.lock();
        if let Some(p) = &mut g.pending {
            *p = Pending {
                all_reset: true,
                ..Pending::default()
            };
        }
        g.by_ns.clear();
        g.known = true;
    }

    /// Starts a recount: call `snapshot` (which creates the RocksDB iterator the recount
    /// reads) with no change in flight; changes after it are kept aside for
    /// [`KeyCounts::finish_recount`]. `None` for the recount when another one is running
    /// (the snapshot is taken all the same; only one recount's result is applied).
    pub(crate) fn begin_recount<T>(&self, snapshot: impl FnOnce() -> T) -> (Option<Recount>, T) {
        let _exclusive = self.gate.write();
        let mut g = self.inner.lock();
        if g.pending.is_some() {
            drop(g);
            return (None, snapshot());
        }
        g.pending = Some(Pending::default());
        g.epoch += 1;
        let epoch = g.epoch;
        drop(g);
        (Some(Recount { epoch }), snapshot())
    }

    /// Abandons a recount that could not finish (its pass failed).
    pub(crate) fn abandon_recount(&self, r: Recount) {
        let mut g = self.inner.lock();
        if g.epoch == r.epoch {
            g.pending = None;
        }
    }

    /// Ends a recount with the counts of the records its snapshot held; the changes made
    /// since are applied on top. Discarded if the counts were invalidated meanwhile.
    pub(crate) fn finish_recount(&self, r: Recount, mut counted: HashMap<Box<[u8]>, u64>) {
        let mut g = self.inner.lock();
        if g.epoch != r.epoch {
            return;
        }
        let Some(p) = g.pending.take() else {
            return;
        };
        if p.all_reset {
            counted.clear();
        }
        for (prefix, (reset, delta)) in p.by_ns {
            let base = if reset {
                0
            } else {
                counted.get(&prefix).copied().unwrap_or(0)
            };
            counted.insert(prefix, base.saturating_add_signed(delta));
        }
        counted.retain(|_, n| *n > 0);
        g.by_ns = counted;
        g.known = true;
    }

    /// Forgets the counts (a close, or a change whose effect on them is unknown): callers
    /// list keys until the next recount, and a recount running now is discarded.
    pub(crate) fn invalidate(&self) {
        let mut g = self.inner.lock();
        g.known = false;
        g.by_ns.clear();
        g.pending = None;
        g.epoch += 1;
    }

    /// Whether the counts are known.
    pub(crate) fn known(&self) -> bool {
        self.inner.lock().known
    }

    /// The count of the namespace whose key prefix is `prefix`, if known.
    pub(crate) fn get(&self, prefix: &[u8]) -> Option<u64> {
        let g = self.inner.lock();
        g.known.then(|| g.by_ns.get(prefix).copied().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_unknown_until_replaced_and_never_go_below_zero() {
        let c = KeyCounts::default();
        let k = |ns: &str, key: &[u8]| {
            let mut v = vec![0x80 | ns.len() as u8];
            v.extend_from_slice(ns.as_bytes());
            v.extend_from_slice(&[0; 8]);
            v.extend_from_slice(key);
            v
        };
        let p = |ns: &str| {
            let mut v = vec![0x80 | ns.len() as u8];
            v.extend_from_slice(ns.as_bytes());
            v
        };
        c.add(&k("a", b"x"), 1);
        assert_eq!(c.get(&p("a")), None, "unknown before the first count");
        let (r, ()) = c.begin_recount(|| ());
        let r = r.unwrap();
        // A change after the snapshot is added to what the recount found.
        c.add(&k("a", b"w"), 1);
        c.finish_recount(r, HashMap::from([(p("a").into_boxed_slice(), 1)]));
        assert_eq!(c.get(&p("a")), Some(2));
        c.add(&k("a", b"x"), -1);
        c.add(&k("a", b"y"), 1);
        c.add(&k("a", b"x"), 1);
        c.add(&k("b", b"y"), 1);
        c.add(&k("b", b"z"), -3);
        assert_eq!(c.get(&p("a")), Some(3));
        assert_eq!(c.get(&p("b")), Some(0), "saturates at zero");
        assert_eq!(c.get(&p("c")), Some(0));
        c.add(&[0u8, 1, 2], 1);
        c.clear_prefix(&p("a"));
        assert_eq!(c.get(&p("a")), Some(0));
        c.invalidate();
        assert_eq!(c.get(&p("b")), None);
        c.clear_all();
        assert_eq!(c.get(&p("b")), Some(0));
        assert!(c.known());
    }

    #[test]
    fn a_recount_applies_flushes_after_its_snapshot_and_is_dropped_by_an_invalidation() {
        let c = KeyCounts::default();
        let p = |ns: &str| {
            let mut v = vec![0x80 | ns.len() as u8];
            v.extend_from_slice(ns.as_bytes());
            v.into_boxed_slice()
        };
        let (r, ()) = c.begin_recount(|| ());
        let r = r.unwrap();
        c.clear_prefix(&p("a"));
        c.add_prefix(&p("a"), 2);
        c.finish_recount(r, HashMap::from([(p("a"), 10), (p("b"), 5)]));
        assert_eq!(
            c.get(&p("a")),
            Some(2),
            "emptied after the snapshot, then two written"
        );
        assert_eq!(c.get(&p("b")), Some(5));
        let (r, ()) = c.begin_recount(|| ());
        let r = r.unwrap();
        c.clear_all();
        c.add_prefix(&p("b"), 1);
        c.finish_recount(r, HashMap::from([(p("b"), 7)]));
        assert_eq!(c.get(&p("b")), Some(1));
        let (r, ()) = c.begin_recount(|| ());
        let r = r.unwrap();
        c.invalidate();
        c.finish_recount(r, HashMap::from([(p("b"), 7)]));
        assert_eq!(c.get(&p("b")), None, "an invalidated recount is discarded");
    }
}
