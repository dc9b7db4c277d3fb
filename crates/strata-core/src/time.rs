//! The `Clock` seam: every expiry decision and every version stamp reads time through it.
//!
//! Production code uses [`SystemClock`]; tests and the simulator use [`ManualClock`], which only
//! moves when told to, so a TTL test never sleeps and a simulated run replays exactly.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, the one time unit of entries, expiries and versions.
pub type UnixMillis = u64;

/// A source of wall-clock time in milliseconds since the Unix epoch.
///
/// Wall-clock (not monotonic) time because expiry instants are absolute and are shared with
/// other nodes and with disk; the hybrid logical clock in [`crate::version`] absorbs small
/// backwards steps.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now_ms(&self) -> UnixMillis;
}

/// The operating system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now_ms(&self) -> UnixMillis {
        // A clock set before 1970 is a broken host; treat it as the epoch rather than panic.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as UnixMillis)
            .unwrap_or(0)
    }
}

/// Wall-clock time read from the kernel's coarse monotonic clock: a few nanoseconds per read
/// and, unlike [`SystemClock`], no serialising `rdtsc` on x86, which matters on the L1 hit
/// path (measured: `SystemClock` costs ~400 ns per hit in a tight lookup loop because it stops
/// the CPU from overlapping cache misses; this costs ~0).
///
/// Resolution is one kernel tick (1–4 ms depending on `CONFIG_HZ`), so an entry may be served
/// up to one tick after its expiry instant; `docs/semantics.md` counts this in G4's clock
/// tolerance. It is anchored to the system wall clock when created and then follows the
/// monotonic clock, which NTP slews like the wall clock but which does not jump when the wall
/// clock is stepped; a stepped wall clock is picked up at the next restart.
#[derive(Debug, Clone, Copy)]
pub struct CoarseClock {
    anchor_wall_ms: UnixMillis,
    anchor: coarsetime::Instant,
}

impl CoarseClock {
    /// A clock anchored to the system wall clock now.
    pub fn new() -> Self {
        Self {
            anchor_wall_ms: SystemClock.now_ms(),
            anchor: coarsetime::Instant::now(),
        }
    }
}

impl Default for CoarseClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for CoarseClock {
    #[inline]
    fn now_ms(&self) -> UnixMillis {
        self.anchor_wall_ms + self.anchor.elapsed().as_millis()
    }
}

/// A clock that moves only when [`ManualClock::advance`] or [`ManualClock::set`] is called.
///
/// Cloning shares the same time, so a test can hand one clone to the cache and keep another.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock that reads `start_ms` until moved.
    pub fn new(start_ms: UnixMillis) -> Self {
        Self {
            now_ms: Arc::new(AtomicU64::new(start_ms)),
        }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the time; it may move backwards, which is how tests model clock skew.
    pub fn set(&self, now_ms: UnixMillis) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    /// Starts at 2026-01-01T00:00:00Z, a fixed, realistic instant.
    fn default() -> Self {
        Self::new(1_767_225_600_000)
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_ms(&self) -> UnixMillis {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// Converts a duration to whole milliseconds, saturating instead of overflowing.
pub fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_time() {
        let a = ManualClock::new(1_000);
        let b = a.clone();
        assert_eq!(a.now_ms(), 1_000);
        b.advance(Duration::from_millis(250));
        assert_eq!(a.now_ms(), 1_250);
        a.set(10);
        assert_eq!(b.now_ms(), 10);
    }

    #[test]
    fn coarse_clock_tracks_the_system_clock_within_a_tick() {
        let coarse = CoarseClock::new();
        std::thread::sleep(Duration::from_millis(30));
        // Bracketed by two system readings: a preemption between the reads cannot fail it.
        let before = SystemClock.now_ms();
        let c = coarse.now_ms();
        let after = SystemClock.now_ms();
        assert!(
            c + 20 >= before && c <= after + 20,
            "coarse {c} vs system {before}..{after}"
        );
    }

    #[test]
    fn system_clock_is_after_2024() {
        assert!(SystemClock.now_ms() > 1_704_067_200_000);
    }
}

tokio::task_local! {
    static ACCEPTED_MS: UnixMillis;
}

/// Runs `fut` with `at_ms` as the time its command was accepted ([`accepted_ms`]): the
/// front end sets it before the command queues behind another of the same key, so that a
/// cluster's bound on how long a command with an expiry may wait (a tenth of the expiry's
/// time left) counts that queueing too.
pub async fn accepted_at<F: std::future::Future>(at_ms: UnixMillis, fut: F) -> F::Output {
    ACCEPTED_MS.scope(at_ms, fut).await
}

/// When the command this task runs was accepted ([`accepted_at`]); `None` outside one.
pub fn accepted_ms() -> Option<UnixMillis> {
    ACCEPTED_MS.try_with(|at| *at).ok()
}

#[cfg(test)]
mod accepted_tests {
    use super::*;

    #[tokio::test]
    async fn the_acceptance_time_is_seen_inside_its_scope_only() {
        assert_eq!(accepted_ms(), None);
        let inside = accepted_at(42, async { accepted_ms() }).await;
        assert_eq!(inside, Some(42));
        assert_eq!(accepted_ms(), None);
    }
}
