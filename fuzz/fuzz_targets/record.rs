//! L3 records come back from disk, where anything can happen to them: any bytes must decode to
//! an entry or an error, never a panic, and never allocate beyond the declared bounds. A
//! record that decodes must re-encode to one that decodes to the same entry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_core::Compression;
use strata_storage::record::{decode, decode_header, encode};

fuzz_target!(|data: &[u8]| {
    let header = decode_header(data);
    match decode(data) {
        Ok(entry) => {
            assert!(header.is_ok(), "a record that decodes must have a decodable header");
            let again = encode(&entry, Compression::Lz4).expect("a decoded entry re-encodes");
            assert_eq!(decode(&again).expect("re-encoded record decodes"), entry);
        }
        Err(_) => {}
    }
});
