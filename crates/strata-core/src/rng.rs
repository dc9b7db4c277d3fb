//! The `Rng` seam: every random choice (backoff jitter, sampling) draws from an injected source.
//!
//! [`SeededRng`] is deterministic (SplitMix64), for tests and the simulator; [`SystemRng`] is
//! the same generator seeded from the process's hash-map keys and the time, which is random
//! enough for jitter and needs no extra dependency. Neither is for cryptography.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};

/// A source of pseudo-random numbers.
pub trait Rng: Send + fmt::Debug {
    /// The next 64 random bits.
    fn next_u64(&mut self) -> u64;

    /// A number in `0..bound` (0 when `bound` is 0), by multiply-shift, which has a bias below
    /// 2^-32 for the bounds used here (jitter, sampling).
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// A deterministic SplitMix64 generator: the same seed gives the same sequence everywhere.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }
}

impl Rng for SeededRng {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A generator seeded differently in every process.
#[derive(Debug, Clone)]
pub struct SystemRng {
    inner: SeededRng,
}

impl SystemRng {
    /// A generator seeded from std's per-process random hash keys.
    pub fn new() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(crate::time::Clock::now_ms(&crate::time::SystemClock));
        Self {
            inner: SeededRng::new(h.finish()),
        }
    }
}

impl Default for SystemRng {
    fn default() -> Self {
        Self::new()
    }
}

impl Rng for SystemRng {
    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_rng_replays_and_seeds_differ() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = SeededRng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = SeededRng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let mut c = SeededRng::new(8);
        assert_eq!(a, b);
        assert_ne!(a[0], c.next_u64());
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = SeededRng::new(1);
        for bound in [1u64, 2, 3, 10, 1000] {
            for _ in 0..1000 {
                assert!(r.below(bound) < bound);
            }
        }
        assert_eq!(r.below(0), 0);
    }
}
