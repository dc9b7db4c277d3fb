//! Versions: hybrid logical clock (HLC) stamps that order every write and invalidation.
//!
//! A [`Version`] packs 48 bits of wall-clock milliseconds (enough until the year 10889) above
//! 16 bits of logical counter. Comparing two versions compares physical time first, then the
//! counter, so versions from one [`HybridClock`] are strictly increasing even when the wall
//! clock stalls or steps backwards, and versions stay close to real time so that a reader can
//! reason about their age. In a cluster the key's owner stamps versions; on a single node the
//! node's own clock does.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::time::UnixMillis;

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;
const PHYSICAL_MAX: u64 = (1 << (64 - LOGICAL_BITS)) - 1;

/// A hybrid-logical-clock stamp. `Version::ZERO` is older than every stamped version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version(u64);

impl Version {
    /// Older than any version a clock produces.
    pub const ZERO: Version = Version(0);

    /// Builds a version from its parts; `physical_ms` is truncated to 48 bits and `logical` to
    /// 16.
    pub fn from_parts(physical_ms: UnixMillis, logical: u16) -> Self {
        Version(((physical_ms & PHYSICAL_MAX) << LOGICAL_BITS) | u64::from(logical))
    }

    /// Rebuilds a version from [`Version::as_u64`] (for decoding).
    pub const fn from_u64(raw: u64) -> Self {
        Version(raw)
    }

    /// The packed form, for encoding.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The wall-clock part, in Unix milliseconds.
    pub const fn physical_ms(self) -> UnixMillis {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter part.
    pub const fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

/// A thread-safe hybrid logical clock.
///
/// `tick` returns a version greater than every version this clock has returned or observed.
/// It is lock-free (one CAS loop) because every `set` calls it.
///
/// In a cluster, two nodes writing the same key in the same millisecond would otherwise stamp
/// the same version on different values, and owners and copies that saw them in different
/// orders would keep different values for good (found by the simulator, seed 1775). A
/// [tagged](HybridClock::with_tag) clock puts its node's tag in the low 8 bits of every
/// version it issues, so nodes with different tags never issue the same version; it issues
/// up to 256 versions per millisecond before running ahead of the wall clock.
#[derive(Debug, Default)]
pub struct HybridClock {
    last: AtomicU64,
    tag: Option<u8>,
}

impl HybridClock {
    /// A clock that has issued nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock whose every version ends in `tag` (its low 8 bits).
    pub fn with_tag(tag: u8) -> Self {
        Self {
            last: AtomicU64::new(0),
            tag: Some(tag),
        }
    }

    /// A new version for a local event at wall time `now_ms`.
    pub fn tick(&self, now_ms: UnixMillis) -> Version {
        self.advance_past(Version::ZERO, now_ms)
    }

    /// Merges a version received from another node, so that later local ticks order after it;
    /// returns the new local version.
    pub fn observe(&self, remote: Version, now_ms: UnixMillis) -> Version {
        self.advance_past(remote, now_ms)
    }

    /// The newest version issued or observed so far.
    pub fn last(&self) -> Version {
        Version(self.last.load(Ordering::Acquire))
    }

    fn advance_past(&self, floor: Version, now_ms: UnixMillis) -> Version {
        let wall = Version::from_parts(now_ms, 0).0;
        let mut current = self.last.load(Ordering::Acquire);
        loop {
            // The next stamp is the wall time if that is ahead of everything seen, otherwise one
            // logical step past the largest stamp seen. Overflowing the 16-bit counter carries
            // into the millisecond field, which keeps the order total.
            let next = wall.max(current.max(floor.0).saturating_add(1));
            // A tagged clock moves up to the next value ending in its tag.
            let next = match self.tag {
                Some(t) => next.saturating_add(u64::from(t.wrapping_sub(next as u8))),
                None => next,
            };
            match self.last.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Version(next),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let v = Version::from_parts(1_767_225_600_123, 42);
        assert_eq!(v.physical_ms(), 1_767_225_600_123);
        assert_eq!(v.logical(), 42);
        assert_eq!(Version::from_u64(v.as_u64()), v);
    }

    #[test]
    fn tagged_clocks_never_issue_the_same_version() {
        let (a, b) = (HybridClock::with_tag(7), HybridClock::with_tag(200));
        let mut seen = std::collections::HashSet::new();
        let mut last = (Version::ZERO, Version::ZERO);
        for ms in [1_000, 1_000, 1_000, 1_001, 999, 1_001] {
            for _ in 0..300 {
                let (x, y) = (a.tick(ms), b.tick(ms));
                assert!(x > last.0 && y > last.1, "strictly increasing");
                assert_eq!((x.as_u64() & 0xff, y.as_u64() & 0xff), (7, 200));
                assert!(seen.insert(x) && seen.insert(y), "a version issued twice");
                last = (x, y);
            }
        }
        // Observing a remote version keeps the tag and orders after it.
        let r = Version::from_parts(5_000, 3);
        let o = a.observe(r, 1_000);
        assert!(o > r);
        assert_eq!(o.as_u64() & 0xff, 7);
        // 256 versions per millisecond fit before the clock runs ahead of the wall clock.
        let c = HybridClock::with_tag(0);
        for _ in 0..256 {
            assert_eq!(c.tick(10_000).physical_ms(), 10_000);
        }
        assert_eq!(c.tick(10_000).physical_ms(), 10_001);
    }

    #[test]
    fn ticks_increase_when_wall_clock_stalls_or_goes_back() {
        let hlc = HybridClock::new();
        let a = hlc.tick(1_000);
        let b = hlc.tick(1_000);
        let c = hlc.tick(900);
        let d = hlc.tick(2_000);
        assert!(a < b && b < c && c < d);
        assert_eq!(a.physical_ms(), 1_000);
        assert_eq!(
            c.physical_ms(),
            1_000,
            "a backwards step keeps the physical part"
        );
        assert_eq!(d, Version::from_parts(2_000, 0));
    }

    #[test]
    fn observe_orders_later_ticks_after_remote() {
        let hlc = HybridClock::new();
        let remote = Version::from_parts(5_000, 7);
        hlc.observe(remote, 1_000);
        assert!(hlc.tick(1_000) > remote);
    }

    #[test]
    fn concurrent_ticks_are_unique() {
        let hlc = std::sync::Arc::new(HybridClock::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let hlc = hlc.clone();
                std::thread::spawn(move || {
                    (0..10_000)
                        .map(|_| hlc.tick(7).as_u64())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
