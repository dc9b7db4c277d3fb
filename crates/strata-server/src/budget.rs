//! The clients' memory budget (`server.max_input_bytes_total`, like Redis's
//! `maxmemory-clients`): what every connection makes the server hold — unparsed input, a
//! queued transaction, watched keys, subscriptions, BCAST tracking prefixes, a large reply
//! waiting to be written, and the pub/sub messages and tracking notices queued for it —
//! counted in one total.
//!
//! When a connection finds the total over the budget, the largest holder goes first, as in
//! Redis: a holder of more than [`LISTED_ABOVE`] bytes larger than the one that found it is
//! told to close ([`Share::must_go`]), wherever it waits (reading, or writing to a client
//! that does not read); only when none is larger does the finder close itself. A subscriber
//! whose queue holds more than [`LISTED_ABOVE`] while the total is over is closed by the
//! publisher that finds it so (`crate::pubsub`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Holders of more than this are listed by size, to be closed largest first; smaller ones
/// count in the total only (listing every connection would take a lock per read).
pub const LISTED_ABOVE: usize = 64 * 1024;

/// All clients' memory and its bound.
#[derive(Debug)]
pub struct ClientMemory {
    total: AtomicUsize,
    limit: usize,
    listed: parking_lot::Mutex<HashMap<u64, Holder>>,
}

#[derive(Debug)]
struct Holder {
    held: usize,
    evict: Arc<Notify>,
    told: bool,
}

impl Default for ClientMemory {
    fn default() -> Self {
        Self::new(usize::MAX)
    }
}

impl ClientMemory {
    /// A total bounded by `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            total: AtomicUsize::new(0),
            limit,
            listed: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The bytes all clients hold now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// The budget.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Counts `n` more bytes; the new total.
    pub fn add(&self, n: usize) -> usize {
        self.total.fetch_add(n, Ordering::Relaxed) + n
    }

    /// Counts `n` bytes fewer.
    pub fn sub(&self, n: usize) {
        self.total.fetch_sub(n, Ordering::Relaxed);
    }

    /// Tells the largest listed holder other than `me` that holds more than `than`, and was
    /// not told yet, to close; whether there was one.
    fn evict_larger(&self, me: u64, than: usize) -> bool {
        let mut listed = self.listed.lock();
        let victim = listed
            .iter_mut()
            .filter(|(id, h)| **id != me && !h.told && h.held > than)
            .max_by_key(|(_, h)| h.held);
        match victim {
            Some((_, h)) => {
                h.told = true;
                h.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// One connection's share of the total, returned when it ends however it ends.
#[derive(Debug)]
pub struct Share {
    memory: Arc<ClientMemory>,
    id: u64,
    held: usize,
    evict: Arc<Notify>,
    listed: bool,
}

impl Share {
    /// Connection `id`'s share, holding nothing yet.
    pub fn new(memory: Arc<ClientMemory>, id: u64) -> Self {
        Self {
            memory,
            id,
            held: 0,
            evict: Arc::new(Notify::new()),
            listed: false,
        }
    }

    /// Notified when the connection must close to bring the total back under the budget
    /// (a permit is kept if it is not waiting then).
    pub fn evict_signal(&self) -> Arc<Notify> {
        self.evict.clone()
    }

    /// Records that the connection holds `now` bytes; returns the total of all clients.
    pub fn update(&mut self, now: usize) -> usize {
        if now == self.held {
            // The common case (a small request read whole): no write to the shared line.
            return self.memory.total();
        }
        let total = if now >= self.held {
            self.memory.add(now - self.held)
        } else {
            self.memory.sub(self.held - now);
            self.memory.total()
        };
        self.held = now;
        if now > LISTED_ABOVE {
            let mut listed = self.memory.listed.lock();
            let h = listed.entry(self.id).or_insert_with(|| Holder {
                held: 0,
                evict: self.evict.clone(),
                told: false,
            });
            h.held = now;
            self.listed = true;
        } else if self.listed {
            self.memory.listed.lock().remove(&self.id);
            self.listed = false;
        }
        total
    }

    /// Records that the connection holds `now` bytes, and decides who goes when all clients
    /// together are over the budget: a larger listed holder is told to close (and this one
    /// carries on), or else this one goes if `may_go` (it holds something of its own making:
    /// an unfinished request, a large reply). True when this one must close.
    pub fn must_go(&mut self, now: usize, may_go: bool) -> bool {
        if self.update(now) <= self.memory.limit {
            return false;
        }
        if self.memory.evict_larger(self.id, now) {
            return false;
        }
        may_go
    }
}

impl Share {
    /// Whether the connection is listed as a large holder: only then can it be told to
    /// close (a connection waits on the notice only then — the wait takes a lock).
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// Whether a close this connection was told of still stands: it holds more than
    /// [`LISTED_ABOVE`] and all clients are still over the budget. When not, it may be told
    /// again later.
    pub fn still_must_go(&self) -> bool {
        if self.held > LISTED_ABOVE && self.memory.total() > self.memory.limit {
            return true;
        }
        if let Some(h) = self.memory.listed.lock().get_mut(&self.id) {
            h.told = false;
        }
        false
    }

    /// Whether the connection was told to close since it last looked (takes the notice).
    pub fn told(&self) -> bool {
        let f = std::pin::pin!(self.evict.notified());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::future::Future::poll(f, &mut cx).is_ready()
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.memory.sub(self.held);
        if self.listed {
            self.memory.listed.lock().remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_holder_goes_first_and_the_finder_only_when_none_is_larger() {
        let mem = Arc::new(ClientMemory::new(1 << 20));
        let mut hog = Share::new(mem.clone(), 1);
        let mut small = Share::new(mem.clone(), 2);
        assert!(!hog.must_go(900 << 10, true), "under the budget");
        // A 200 KiB reply pushes the total over: the 900 KiB holder is told, not this one.
        assert!(!small.must_go(200 << 10, true));
        assert!(hog.told(), "the largest holder is told to close");
        assert!(!hog.told(), "the notice is taken once");
        assert!(
            hog.still_must_go(),
            "and still stands while the total is over"
        );
        // The hog was told: the next finder tells the next larger holder (the 200 KiB one).
        let mut third = Share::new(mem.clone(), 3);
        assert!(!third.must_go(100 << 10, true));
        assert!(small.told());
        // Both larger holders told: a finder with nobody larger left goes itself, and only
        // when it may.
        assert!(third.must_go(100 << 10, true));
        assert!(!third.must_go(100 << 10, false), "only when it may go");
        drop(hog);
        assert_eq!(
            mem.total(),
            300 << 10,
            "a closed holder gives its share back"
        );
        assert!(
            !small.still_must_go(),
            "under the budget again: the notice lapses"
        );
        drop((small, third));
        assert_eq!(mem.total(), 0);
        assert!(mem.listed.lock().is_empty());
    }
}
