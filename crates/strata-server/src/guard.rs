//! What an unauthenticated client can make the node do, bounded: the log lines its refusals
//! write ([`LogLimit`], [`printable`]) and how many passwords it can try ([`AuthThrottle`]).
//!
//! A review (2026-12-06) flooded the log through the admin port without any credential:
//! every refused request wrote a line with its path (up to 64 KiB), 646 MB in 6 s, and a
//! web page's `fetch` loop reached 485 MB/s; under journald the rate limiter then drops the
//! node's real lines. And the admin port's 200 ms delay per refused credential was per
//! request: 120 connections guessed 600 passwords a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// One log site's budget: a line a second, which says how many it left out.
#[derive(Debug, Default)]
pub struct LogLimit {
    last_second: AtomicU64,
    left_out: AtomicU64,
}

impl LogLimit {
    /// A budget with nothing logged yet (for `static`s).
    pub const fn new() -> Self {
        Self {
            last_second: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: write the line now, `n` lines having been left out since the last one;
    /// `None`: this second's line is written, count this one and write nothing.
    pub fn admit(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_second.load(Ordering::Relaxed);
        if now == last
            || self
                .last_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.left_out.swap(0, Ordering::Relaxed))
    }
}

/// `s` as a log field: at most `max` bytes of it (cut at a character boundary), with
/// control characters, quotes, backslashes and everything outside ASCII escaped, so that
/// a client's bytes cannot forge lines, reorder text (U+202E) or drive a terminal.
pub fn printable(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = s[..end].escape_default().collect();
    if end < s.len() {
        out.push_str(&format!("…(+{} bytes)", s.len() - end));
    }
    out
}

/// Failed credentials, node-wide: each is answered no sooner than its turn, at most
/// [`AuthThrottle::PER_SECOND`] a second whatever the number of connections, and never
/// sooner than its own connection's back-off. A correct credential never waits. Under a
/// guessing attack a failure waits behind the attacker's: a mistyped password then takes
/// long to be refused, which is the price of a bound that connections cannot multiply.
#[derive(Debug)]
pub struct AuthThrottle {
    next: Mutex<Instant>,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        Self {
            next: Mutex::new(Instant::now()),
        }
    }
}

impl AuthThrottle {
    /// Most failed credentials answered a second, node-wide (RESP `AUTH`/`HELLO` and the
    /// admin port together).
    pub const PER_SECOND: u32 = 20;
    /// How long the failure that just happened waits before it is answered: at least
    /// `floor`, and until its turn.
    pub fn wait(&self, floor: Duration) -> Duration {
        let now = Instant::now();
        let step = Duration::from_secs(1) / Self::PER_SECOND;
        let mut next = self.next.lock();
        let turn = (*next).max(now);
        *next = turn + step;
        (turn - now).max(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_counts_what_it_left_out() {
        let l = LogLimit::new();
        assert_eq!(l.admit(), Some(0));
        for _ in 0..5 {
            // Within the same second (a test that crosses a second boundary gets one more
            // line, which still counts what came before it).
            if let Some(n) = l.admit() {
                assert!(n <= 5);
            }
        }
    }

    #[test]
    fn log_fields_are_cut_and_escaped() {
        assert_eq!(printable("/stats", 128), "/stats");
        assert_eq!(printable("a\nb", 128), "a\\nb");
        assert_eq!(printable("x\u{202e}y", 128), "x\\u{202e}y");
        let long = "é".repeat(100);
        let p = printable(&long, 11);
        assert!(p.starts_with("\\u{e9}"), "{p}");
        assert!(p.ends_with("…(+190 bytes)"), "{p}");
    }

    #[test]
    fn failures_take_turns_node_wide() {
        let t = AuthThrottle::default();
        let floor = Duration::from_millis(200);
        // 100 failures at once: the n-th waits about n / 20 s (at least the floor).
        let waits: Vec<Duration> = (0..100).map(|_| t.wait(floor)).collect();
        assert_eq!(waits[0], floor);
        let about = |w: Duration, ms: u64| {
            w <= Duration::from_millis(ms)
                && w + Duration::from_millis(20) >= Duration::from_millis(ms)
        };
        assert!(about(waits[40], 2_000), "{:?}", waits[40]);
        assert!(about(waits[99], 4_950), "{:?}", waits[99]);
        // Once the turns are past, a failure waits its floor only.
        *t.next.lock() = Instant::now() - Duration::from_secs(1);
        assert_eq!(t.wait(floor), floor);
    }
}
