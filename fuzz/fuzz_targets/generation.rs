//! A member's generation file (`l3.data_dir/cluster-generation`) is read at every start of a
//! cluster member: whatever a torn write, a full disk or another program left there must
//! give a generation within bounds, or none, without panicking, and a generation read back
//! as written must be the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_cluster::identity::{MAX_GENERATION, next_generation, parse_generation};

fuzz_target!(|data: &[u8]| {
    if let Some(g) = parse_generation(data) {
        assert!(g <= MAX_GENERATION);
        assert!(next_generation(0, Some(g)) > g);
        assert_eq!(parse_generation(format!("{g}\n").as_bytes()), Some(g));
    }
});
