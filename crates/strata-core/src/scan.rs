//! The order every layer lists keys in: by [`scan_hash`] of the key, then by the key's bytes.
//!
//! `SCAN` cursors are positions in this order, so they need no state on the server: cursor
//! `c` means "the keys whose hash is at least `c`". A key present for a whole scan has one
//! hash, and a scan's cursor only grows, so the scan returns it exactly once, whatever other
//! clients scan or write meanwhile and across restarts (Redis's guarantee, without its
//! reverse-binary trick: nothing here is resized). A page ends where the hash changes, so a
//! cursor never falls in the middle of keys that share a hash.
//!
//! The hash is XXH3-64 of the key, with no seed: the on-disk layout (L3 keys start with it)
//! depends on it never changing. It is not keyed, so someone who can write keys could craft
//! some that share a hash; the cost is only that one `SCAN` page holds all of them.

use xxhash_rust::xxh3::xxh3_64;

/// The hash that orders `key` in listings (see the module docs). Stable across releases and
/// machines.
#[inline]
pub fn scan_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Where a listing starts: at a hash (a `SCAN` cursor), or strictly after a key (the next
/// page of a listing that knows its last key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanFrom<'a> {
    hash: u64,
    after: Option<&'a [u8]>,
}

impl<'a> ScanFrom<'a> {
    /// The first key.
    pub const START: ScanFrom<'static> = ScanFrom {
        hash: 0,
        after: None,
    };

    /// The keys whose hash is `hash` or more.
    pub fn at_hash(hash: u64) -> Self {
        ScanFrom { hash, after: None }
    }

    /// The keys after `key` in scan order (`key` itself excluded, held or not).
    pub fn after(key: &'a [u8]) -> Self {
        ScanFrom {
            hash: scan_hash(key),
            after: Some(key),
        }
    }

    /// After `key` when there is one (the next page of a listing), else [`ScanFrom::START`].
    pub fn resume(after: Option<&'a [u8]>) -> Self {
        after.map_or(ScanFrom::START, ScanFrom::after)
    }

    /// The hash this position starts at.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The key this position is strictly after, if it is one.
    pub fn after_key(&self) -> Option<&'a [u8]> {
        self.after
    }

    /// Whether a key with hash `hash` comes at or after this position.
    pub fn admits(&self, hash: u64, key: &[u8]) -> bool {
        match self.after {
            None => hash >= self.hash,
            Some(a) => (hash, key) > (self.hash, a),
        }
    }
}

/// Sorts `keys` into scan order and drops repeats.
pub fn sort_keys(keys: &mut Vec<bytes::Bytes>) {
    // Each key hashed once (not once per comparison), and no clone of a key per comparison.
    let mut keyed: Vec<(u64, bytes::Bytes)> = keys.drain(..).map(|k| (scan_hash(&k), k)).collect();
    keyed.sort_unstable();
    keyed.dedup();
    keys.extend(keyed.into_iter().map(|(_, k)| k));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_admit_what_follows_them_in_scan_order() {
        let (a, b) = (&b"alpha"[..], &b"beta"[..]);
        let (ha, hb) = (scan_hash(a), scan_hash(b));
        assert!(ScanFrom::START.admits(ha, a));
        assert!(!ScanFrom::after(a).admits(ha, a), "strictly after");
        assert_eq!(ScanFrom::after(a).admits(hb, b), (hb, b) > (ha, a));
        assert!(ScanFrom::at_hash(hb).admits(hb, b), "at a hash includes it");
        assert!(!ScanFrom::at_hash(hb.wrapping_add(1)).admits(hb, b) || hb == u64::MAX);
    }

    #[test]
    fn the_hash_never_changes() {
        // L3's keys start with it: a different value would lose every key on disk.
        assert_eq!(scan_hash(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(scan_hash(b"key"), scan_hash(b"key"));
    }

    #[test]
    fn sorting_follows_the_hash_and_drops_repeats() {
        let mut keys: Vec<bytes::Bytes> = ["c", "a", "b", "a"]
            .iter()
            .map(|s| bytes::Bytes::from(*s))
            .collect();
        sort_keys(&mut keys);
        assert_eq!(keys.len(), 3);
        assert!(
            keys.windows(2)
                .all(|w| scan_hash(&w[0]) <= scan_hash(&w[1]))
        );
    }
}
