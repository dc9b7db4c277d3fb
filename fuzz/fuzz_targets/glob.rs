//! Glob patterns arrive from clients (pattern invalidation now; KEYS and SCAN MATCH with the
//! server). Any pattern and key must compile and match without panicking, in time bounded by
//! pattern × key, and the literal prefix must be a prefix of every key the pattern matches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_core::glob::{Glob, MAX_PATTERN_BYTES};

fuzz_target!(|data: &[u8]| {
    // First byte splits the input into a pattern and a key.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (split as usize).min(rest.len());
    let (pattern, key) = rest.split_at(at);
    match Glob::new(pattern) {
        Ok(glob) => {
            assert!(pattern.len() <= MAX_PATTERN_BYTES);
            if glob.matches(key) {
                assert!(key.starts_with(&glob.literal_prefix()), "prefix must hold for matches");
            }
            if glob.matches_everything() {
                assert!(glob.matches(key));
            }
        }
        Err(_) => assert!(pattern.len() > MAX_PATTERN_BYTES),
    }
});
