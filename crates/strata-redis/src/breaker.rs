//! The circuit breaker: sans-IO (time is passed in), so its transitions are tested without
//! a Redis.
//!
//! ```text
//! Closed --(failure_threshold consecutive failures, or timeout_rate over the window)--> Open
//! Open --(open_for elapsed; the bridge's actor sends a probe)--> HalfOpen
//! HalfOpen --(probe and recovery succeed)--> Closed
//! HalfOpen --(probe fails)--> Open, for twice as long (up to max_open_for)
//! ```
//!
//! While the circuit is not closed, requests never reach Redis: they are bypassed at once,
//! so a dead Redis costs callers nothing. Only the probe talks to Redis.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::config::BreakerConfig;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests go to Redis.
    Closed = 0,
    /// Requests are bypassed.
    Open = 1,
    /// A probe is checking whether Redis is back; requests are still bypassed.
    HalfOpen = 2,
}

impl BreakerState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// `"closed"`, `"open"` or `"half_open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A change of state, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// From.
    pub from: BreakerState,
    /// To.
    pub to: BreakerState,
    /// Why.
    pub reason: String,
}

#[derive(Debug)]
struct Inner {
    consecutive_failures: u32,
    /// The last `window` outcomes: true for a timeout.
    recent: VecDeque<bool>,
    timeouts_in_window: u32,
    open_until_ms: u64,
    open_for: Duration,
    last_reason: String,
    /// Requests that succeeded while closed, ever: a health check that failed tells the
    /// ones that succeeded while it ran ([`Breaker::health_check_failed`]).
    successes: u64,
}

/// A circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: AtomicU8,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            inner: Mutex::new(Inner {
                consecutive_failures: 0,
                recent: VecDeque::with_capacity(cfg.window as usize),
                timeouts_in_window: 0,
                open_until_ms: 0,
                open_for: cfg.open_for,
                last_reason: String::new(),
                successes: 0,
            }),
            cfg,
            state: AtomicU8::new(BreakerState::Closed as u8),
        }
    }

    /// The state now.
    #[inline]
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether requests may go to Redis.
    #[inline]
    pub fn allows(&self) -> bool {
        self.state() == BreakerState::Closed
    }

    /// Why the circuit last opened.
    pub fn last_reason(&self) -> String {
        self.inner.lock().last_reason.clone()
    }

    fn push(&self, inner: &mut Inner, timeout: bool) {
        if inner.recent.len() == self.cfg.window as usize
            && let Some(old) = inner.recent.pop_front()
            && old
        {
            inner.timeouts_in_window -= 1;
        }
        inner.recent.push_back(timeout);
        if timeout {
            inner.timeouts_in_window += 1;
        }
    }

    /// A request succeeded.
    pub fn on_success(&self) {
        if self.state() != BreakerState::Closed {
            return;
        }
        let mut inner = self.inner.lock();
        inner.consecutive_failures = 0;
        inner.successes += 1;
        self.push(&mut inner, false);
    }

    /// How many requests have succeeded while closed: taken before a health check, for
    /// [`Breaker::health_check_failed`].
    pub fn successes(&self) -> u64 {
        self.inner.lock().successes
    }

    /// The health check begun when [`Breaker::successes`] was `successes_before` failed:
    /// opens the circuit, unless a request succeeded while it ran — then Redis answered
    /// after the check began (a check on a connection that a Redis restart killed, which
    /// ends after a call on the new one went through), and the next check decides.
    /// (Opening on such a late failure refused conditional writes with `TRYAGAIN` for
    /// `breaker_open_ms` while Redis answered: attack review helper-106.)
    pub fn health_check_failed(
        &self,
        now_ms: u64,
        successes_before: u64,
        reason: String,
    ) -> Option<Transition> {
        let mut inner = self.inner.lock();
        if inner.successes != successes_before {
            return None;
        }
        let from = self.state();
        if from == BreakerState::Open {
            inner.last_reason = reason;
            return None;
        }
        Some(self.open(&mut inner, now_ms, from, reason))
    }

    /// A request failed (`timeout`: it timed out); returns the transition if this opened the
    /// circuit.
    pub fn on_failure(&self, now_ms: u64, timeout: bool, error: &str) -> Option<Transition> {
        if self.state() != BreakerState::Closed {
            return None;
        }
        let mut inner = self.inner.lock();
        if self.state() != BreakerState::Closed {
            return None;
        }
        inner.consecutive_failures += 1;
        self.push(&mut inner, timeout);
        let full = inner.recent.len() == self.cfg.window as usize;
        let rate = f64::from(inner.timeouts_in_window) / f64::from(self.cfg.window);
        let reason = if inner.consecutive_failures >= self.cfg.failure_threshold {
            format!(
                "{} consecutive failures, the last: {error}",
                inner.consecutive_failures
            )
        } else if full && rate >= self.cfg.timeout_rate {
            format!(
                "{} of the last {} calls timed out",
                inner.timeouts_in_window, self.cfg.window
            )
        } else {
            return None;
        };
        inner.open_for = self.cfg.open_for;
        Some(self.open(&mut inner, now_ms, BreakerState::Closed, reason))
    }

    /// Opens the circuit from any state (the bridge could not connect at all, say).
    pub fn force_open(&self, now_ms: u64, reason: String) -> Option<Transition> {
        let mut inner = self.inner.lock();
        let from = self.state();
        if from == BreakerState::Open {
            inner.last_reason = reason;
            return None;
        }
        Some(self.open(&mut inner, now_ms, from, reason))
    }

    fn open(
        &self,
        inner: &mut Inner,
        now_ms: u64,
        from: BreakerState,
        reason: String,
    ) -> Transition {
        inner.open_until_ms = now_ms.saturating_add(inner.open_for.as_millis() as u64);
        inner.consecutive_failures = 0;
        inner.recent.clear();
        inner.timeouts_in_window = 0;
        inner.last_reason = reason.clone();
        self.state
            .store(BreakerState::Open as u8, Ordering::Release);
        Transition {
            from,
            to: BreakerState::Open,
            reason,
        }
    }

    /// If the circuit is open and its time is up, moves it to half-open and returns true: the
    /// caller then probes and reports with [`Breaker::probe_result`].
    pub fn begin_probe(&self, now_ms: u64) -> bool {
        let inner = self.inner.lock();
        if self.state() == BreakerState::Open && now_ms >= inner.open_until_ms {
            self.state
                .store(BreakerState::HalfOpen as u8, Ordering::Release);
            return true;
        }
        false
    }

    /// The probe's outcome: closes the circuit, or opens it for twice as long.
    pub fn probe_result(&self, now_ms: u64, result: Result<(), String>) -> Transition {
        let mut inner = self.inner.lock();
        match result {
            Ok(()) => {
                inner.open_for = self.cfg.open_for;
                inner.consecutive_failures = 0;
                self.state
                    .store(BreakerState::Closed as u8, Ordering::Release);
                Transition {
                    from: BreakerState::HalfOpen,
                    to: BreakerState::Closed,
                    reason: "probe succeeded".into(),
                }
            }
            Err(e) => {
                inner.open_for = (inner.open_for * 2).min(self.cfg.max_open_for);
                self.open(
                    &mut inner,
                    now_ms,
                    BreakerState::HalfOpen,
                    format!("probe failed: {e}"),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            timeout_rate: 0.5,
            window: 4,
            open_for: Duration::from_millis(100),
            max_open_for: Duration::from_millis(300),
        }
    }

    #[test]
    fn consecutive_failures_open_and_a_success_resets_the_count() {
        let b = Breaker::new(cfg());
        assert!(b.on_failure(0, false, "x").is_none());
        assert!(b.on_failure(0, false, "x").is_none());
        b.on_success();
        assert!(b.on_failure(0, false, "x").is_none());
        assert!(b.on_failure(0, false, "x").is_none());
        let t = b
            .on_failure(0, false, "refused")
            .expect("third failure opens");
        assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));
        assert!(t.reason.contains("refused"), "{}", t.reason);
        assert!(!b.allows());
    }

    #[test]
    fn a_timeout_rate_opens_without_consecutive_failures() {
        let b = Breaker::new(cfg());
        // success, timeout, success, timeout: 2 of 4 timed out = 0.5.
        b.on_success();
        assert!(b.on_failure(0, true, "t").is_none());
        b.on_success();
        let t = b.on_failure(0, true, "t").expect("rate reached");
        assert!(t.reason.contains("2 of the last 4"), "{}", t.reason);
    }

    #[test]
    fn probes_wait_then_close_or_back_off() {
        let b = Breaker::new(cfg());
        for _ in 0..3 {
            b.on_failure(1_000, false, "x");
        }
        assert!(!b.begin_probe(1_099), "too early");
        assert!(b.begin_probe(1_100));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allows(), "half-open still bypasses requests");
        let t = b.probe_result(1_100, Err("down".into()));
        assert_eq!(t.to, BreakerState::Open);
        assert!(!b.begin_probe(1_299), "open time doubled to 200 ms");
        assert!(b.begin_probe(1_300));
        b.probe_result(1_300, Err("down".into()));
        assert!(!b.begin_probe(1_599), "capped at 300 ms");
        assert!(b.begin_probe(1_600));
        let t = b.probe_result(1_600, Ok(()));
        assert_eq!(t.to, BreakerState::Closed);
        assert!(b.allows());
        // After closing, the open time is back to its start.
        for _ in 0..3 {
            b.on_failure(2_000, false, "x");
        }
        assert!(b.begin_probe(2_100));
    }

    #[test]
    fn a_health_check_failing_after_a_later_success_does_not_open() {
        let b = Breaker::new(cfg());
        let before = b.successes();
        b.on_success();
        assert!(
            b.health_check_failed(0, before, "PING: connection reset".into())
                .is_none()
        );
        assert!(b.allows());
        // With no success while it ran, a failed check opens at once.
        let before = b.successes();
        let t = b
            .health_check_failed(0, before, "PING: timed out".into())
            .expect("opens");
        assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));
        assert!(!b.allows());
    }

    #[test]
    fn failures_while_open_change_nothing() {
        let b = Breaker::new(cfg());
        b.force_open(0, "cannot connect".into());
        assert!(b.on_failure(0, false, "x").is_none());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.last_reason(), "cannot connect");
    }
}
