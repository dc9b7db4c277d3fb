//! What a member does about its own pauses (SIGSTOP, a VM freeze, a long GC-like stall).
//!
//! A member paused past failure detection wakes up holding copies of keys that the others
//! deleted or overwrote meanwhile, and the invalidations announcing those changes may never
//! reach it. It used to serve those copies until membership told it it had been declared
//! down (a review read every changed key stale for ~0.2 s after SIGCONT, some for 2.2 s);
//! and its own periodic tick, which notices the pause, may run after the first commands do.
//! So:
//!
//! - the tick marks the gate every 100 ms; a server asks the gate before it answers what it
//!   read from a client ([`PauseGate::wait_open`]): when the last mark is older than
//!   [`StallGuard::STALL_MS`] (the process was paused, and the tick has not run since), or
//!   the tick found a stall and the node is still dropping what it holds unverified, the
//!   command waits;
//! - the tick that finds the stall drops every copy the node holds unverified, as after
//!   lost invalidations: L1, the owner-store entries it does not own, and L3 off the read
//!   path until proven;
//! - until a majority has answered pings sent after the stall (the others count the node
//!   live in its present life: [`strata_cluster::primary::Lease::holds_since`]) and no drop
//!   is queued, the node is *unverified*: it keeps no copy of what it reads or writes
//!   ([`strata_core::Cache::hold_local_copies`]), L3 stays off the read path (proven again
//!   once it is verified), other members' reads of its owner store get an error, and its
//!   own reads ask the keys' other owners and weigh its own copy against their answers.
//!
//! [`StallGuard::STALL_MS`]: strata_cluster::primary::StallGuard::STALL_MS

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

// The coarse monotonic clock (a few ms of resolution, read from the vDSO without a system
// call): every read of an embedded node's `Cache`, an L1 hit included, asks the gate.
use coarsetime::Instant;

use strata_cluster::primary::StallGuard;

/// The longest a command waits at the gate: past it, it runs (a node whose tick stays
/// late is overloaded, or its tick's actor is down, not paused, and answers rather than
/// hangs), and later commands do not wait for the same late tick or drop again.
pub const GATE_WAIT_MAX: Duration = Duration::from_secs(5);

/// Whether this process was paused and has not yet dealt with it (see the module docs).
#[derive(Debug)]
pub struct PauseGate {
    origin: Instant,
    /// When the tick last ran (ms since `origin`).
    last_tick_ms: AtomicU64,
    /// The tick found a stall, and the drop of unverified copies has not finished.
    dropping: AtomicBool,
    /// A wait that ran out: the last tick it waited on, plus one (0: none). Commands do
    /// not wait on that tick again.
    gave_up_on: AtomicU64,
    /// Woken when the gate may have opened (a tick ran, a drop finished). Waiters polled
    /// every 2 ms before: 1,500 connections with requests queued across a 3 s pause got
    /// their first byte 232 ms after SIGCONT (45 ms without the gate), their polls taking
    /// the cores the tick and the drop needed (review, 2026-12-06).
    opened: tokio::sync::Notify,
}

impl Default for PauseGate {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            dropping: AtomicBool::new(false),
            gave_up_on: AtomicU64::new(0),
            opened: tokio::sync::Notify::new(),
        }
    }
}

impl PauseGate {
    #[inline]
    fn now_ms(&self) -> u64 {
        // Not `elapsed()`, which also stores the time in coarsetime's process-wide cache:
        // a write to one shared cache line from every reading thread.
        (Instant::now_without_cache_update() - self.origin).as_millis() + 1
    }

    /// The periodic tick ran (the cluster's tick calls it every 100 ms; a bench of the
    /// gate's cost calls it to hold the gate open the way a running member does).
    pub fn tick(&self) {
        self.last_tick_ms.store(self.now_ms(), Ordering::Release);
        self.opened.notify_waiters();
    }

    /// The tick found a stall: commands wait until [`PauseGate::dropped`].
    pub(crate) fn dropping(&self) {
        self.dropping.store(true, Ordering::Release);
    }

    /// The copies held across the stall are dropped.
    pub(crate) fn dropped(&self) {
        self.dropping.store(false, Ordering::Release);
        self.opened.notify_waiters();
    }

    /// Whether a command may run now: the tick ran within [`StallGuard::STALL_MS`] (or has
    /// not started) and no drop after a stall is under way — or a wait on the same tick
    /// ran out already ([`GATE_WAIT_MAX`]).
    #[inline]
    pub fn is_open(&self) -> bool {
        let last = self.last_tick_ms.load(Ordering::Acquire);
        let open = !self.dropping.load(Ordering::Acquire)
            && (last == 0 || self.now_ms().saturating_sub(last) <= StallGuard::STALL_MS);
        open || self.gave_up_on.load(Ordering::Acquire) == last + 1
    }

    /// Waits until the gate is open, at most [`GATE_WAIT_MAX`]; whether it opened.
    pub async fn wait_open(&self) -> bool {
        let until = tokio::time::Instant::now() + GATE_WAIT_MAX;
        loop {
            // Registered before the check: an opening between the two is not missed.
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if self.is_open() {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                let last = self.last_tick_ms.load(Ordering::Acquire);
                self.gave_up_on.store(last + 1, Ordering::Release);
                return false;
            }
            // Woken by a tick or a finished drop; the time bound is checked again after.
            let _ = tokio::time::timeout_at(until, opened).await;
        }
    }
}

/// An embedded node's reads wait at the gate too ([`strata_core::Cache::set_read_gate`]).
impl strata_core::ReadGate for PauseGate {
    fn is_open(&self) -> bool {
        PauseGate::is_open(self)
    }

    fn wait_open(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            // Outside a tokio runtime (a caller polling with another executor) there is no
            // timer to bound the wait with: the read goes on, as after a wait that ran out.
            if tokio::runtime::Handle::try_current().is_err() {
                return;
            }
            if !PauseGate::wait_open(self).await {
                tracing::warn!(
                    "the cluster tick stays late: a read answers without waiting longer"
                );
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_closes_on_a_late_tick_and_while_dropping() {
        let g = PauseGate::default();
        assert!(g.is_open(), "open before the first tick");
        g.tick();
        assert!(g.is_open());
        // The last tick as long ago as a stall: the process was paused since.
        let g = PauseGate {
            origin: Instant::now() - coarsetime::Duration::from_millis(StallGuard::STALL_MS + 50),
            last_tick_ms: AtomicU64::new(1),
            dropping: AtomicBool::new(false),
            gave_up_on: AtomicU64::new(0),
            opened: tokio::sync::Notify::new(),
        };
        assert!(!g.is_open(), "closed: the last tick is older than a stall");
        g.dropping();
        g.tick();
        assert!(!g.is_open(), "closed while dropping");
        g.dropped();
        assert!(g.is_open());
    }

    #[tokio::test]
    async fn waiters_open_with_the_tick_and_the_drop() {
        let g = std::sync::Arc::new(PauseGate {
            origin: Instant::now() - coarsetime::Duration::from_millis(StallGuard::STALL_MS + 50),
            last_tick_ms: AtomicU64::new(1),
            dropping: AtomicBool::new(true),
            gave_up_on: AtomicU64::new(0),
            opened: tokio::sync::Notify::new(),
        });
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let g = g.clone();
                tokio::spawn(async move { g.wait_open().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        g.tick();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "closed while dropping"
        );
        let opened_at = std::time::Instant::now();
        g.dropped();
        for w in waiters {
            assert!(w.await.unwrap(), "opened, not ran out");
        }
        assert!(opened_at.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_that_stays_late_holds_one_wait_not_every_command() {
        // The tick's actor stopped: the first command waits the bound out, the next do not.
        let g = PauseGate {
            origin: Instant::now() - coarsetime::Duration::from_millis(StallGuard::STALL_MS + 50),
            last_tick_ms: AtomicU64::new(1),
            dropping: AtomicBool::new(false),
            gave_up_on: AtomicU64::new(0),
            opened: tokio::sync::Notify::new(),
        };
        assert!(!g.is_open());
        assert!(!g.wait_open().await, "ran out");
        assert!(g.is_open(), "later commands do not wait on the same tick");
        // A tick that comes, then is late again, closes the gate again.
        g.tick();
        assert!(g.is_open());
    }
}
