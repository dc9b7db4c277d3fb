//! The keys this node is executing as their primary, so that, as an owner, it refuses a
//! replication of one of them from another primary meanwhile (decision 96).
//!
//! During a view change two nodes can each hold themselves the primary of a key: n2,
//! primary under the old view, executes `INCR k` from `v` and replicates `v+1` to its
//! replica; n1, back in the ring, becomes the primary in n2's new view, reads `v` from n2
//! (n2 has not stored its own `v+1` yet) and replicates its `v+1` to n2, which — fencing
//! satisfied, nothing newer than the base held — took it. Both acknowledged `v+1`: an
//! increment was lost (an attack review reproduced it, 2 runs of 2). An owner now refuses
//! (as fenced: nothing applied, the other primary tries again once its view or this
//! execution moves on) a replication of a key it is executing itself, and takes the check
//! and the apply under the same shard lock that an execution registers under, before it
//! reads the key: either the replication was applied before, and the execution reads it,
//! or it is refused.
//!
//! Keys are 64-bit hashes of (namespace, key); a count per hash, so two keys sharing a hash
//! (about 2^-64) only cost a needless refusal.

use std::collections::HashMap;

use parking_lot::{Mutex, MutexGuard};

const SHARDS: usize = 64;

/// The keys under execution here ([module docs](self)).
pub(crate) struct Executing {
    shards: Box<[Mutex<HashMap<u64, u32>>]>,
}

impl std::fmt::Debug for Executing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executing").finish_non_exhaustive()
    }
}

impl Default for Executing {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// The hash a key is registered under.
pub(crate) fn key_hash(namespace: &str, key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(namespace.as_bytes()).rotate_left(17)
        ^ xxhash_rust::xxh3::xxh3_64(key)
}

fn shard_of(h: u64) -> usize {
    (h >> 58) as usize % SHARDS
}

/// Keys registered as under execution until dropped.
pub(crate) struct Registered<'a> {
    executing: &'a Executing,
    hashes: Vec<u64>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        for &h in &self.hashes {
            let mut shard = self.executing.shards[shard_of(h)].lock();
            if let Some(n) = shard.get_mut(&h) {
                *n -= 1;
                if *n == 0 {
                    shard.remove(&h);
                }
            }
        }
    }
}

impl Executing {
    /// Registers `hashes` as under execution until the guard drops. Call before the
    /// execution reads its keys.
    pub(crate) fn enter(&self, hashes: Vec<u64>) -> Registered<'_> {
        for &h in &hashes {
            *self.shards[shard_of(h)].lock().entry(h).or_insert(0) += 1;
        }
        Registered {
            executing: self,
            hashes,
        }
    }

    /// Whether no key is under execution here now.
    pub(crate) fn is_idle(&self) -> bool {
        self.shards.iter().all(|s| s.lock().is_empty())
    }

    /// Runs `f` with whether any of `hashes` is under execution, holding their shards'
    /// locks throughout, so that no execution registers one of them meanwhile. `f` must
    /// not register or check keys itself.
    pub(crate) fn while_checked<R>(&self, hashes: &[u64], f: impl FnOnce(bool) -> R) -> R {
        // One key (every `Replicate`, on each cluster write): one lock, no allocation.
        if let [h] = hashes {
            let shard = self.shards[shard_of(*h)].lock();
            let out = f(shard.contains_key(h));
            drop(shard);
            return out;
        }
        let mut shards: Vec<usize> = hashes.iter().map(|&h| shard_of(h)).collect();
        shards.sort_unstable();
        shards.dedup();
        let guards: Vec<MutexGuard<'_, HashMap<u64, u32>>> =
            shards.iter().map(|&i| self.shards[i].lock()).collect();
        let busy = hashes.iter().any(|&h| {
            let i = shards.binary_search(&shard_of(h)).unwrap_or(0);
            guards[i].contains_key(&h)
        });
        let out = f(busy);
        drop(guards);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_busy_while_registered_and_only_then() {
        let ex = Executing::default();
        let (a, b) = (key_hash("db0", b"a"), key_hash("db0", b"b"));
        assert_ne!(
            a,
            key_hash("db1", b"a"),
            "the namespace is part of the hash"
        );
        assert!(!ex.while_checked(&[a], |busy| busy));
        {
            let _g = ex.enter(vec![a]);
            assert!(ex.while_checked(&[a], |busy| busy));
            assert!(ex.while_checked(&[b, a], |busy| busy));
            assert!(!ex.while_checked(&[b], |busy| busy));
            {
                // Registered twice (two keys of one hash): busy until both end.
                let _h = ex.enter(vec![a]);
            }
            assert!(ex.while_checked(&[a], |busy| busy));
        }
        assert!(!ex.while_checked(&[a, b], |busy| busy));
    }

    #[test]
    fn a_registration_waits_for_a_check_under_way() {
        let ex = std::sync::Arc::new(Executing::default());
        let a = key_hash("db0", b"a");
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let ex2 = ex.clone();
        let checker = std::thread::spawn(move || {
            ex2.while_checked(&[a], |busy| {
                started_tx.send(()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(100));
                busy
            })
        });
        started_rx.recv().unwrap();
        let t = std::time::Instant::now();
        let _g = ex.enter(vec![a]);
        assert!(
            t.elapsed() >= std::time::Duration::from_millis(50),
            "registered while a check held the key's shard"
        );
        assert!(!checker.join().unwrap());
    }
}
