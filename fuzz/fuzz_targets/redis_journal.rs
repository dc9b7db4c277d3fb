//! The Redis bridge's outage queue file, read at start from a disk that may hold anything:
//! reading may not panic nor allocate past a record's bounds, and every record read must
//! re-encode to the bytes it was read from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_redis::journal;

fuzz_target!(|data: &[u8]| {
    let mut file = journal::MAGIC.to_vec();
    file.extend_from_slice(data);
    for bytes in [data, &file[..]] {
        let read = journal::decode(bytes);
        let mut again = journal::MAGIC.to_vec();
        for owed in &read.owed {
            again.extend_from_slice(&journal::encode(owed).expect("a record read fits its bounds"));
        }
        if !read.bad_header && !bytes.is_empty() {
            assert_eq!(&again[..], &bytes[..bytes.len() - read.unread]);
        }
    }
});
