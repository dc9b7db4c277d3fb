//! L3 records come back from disk, where anything can happen to them: any bytes must decode to
//! an entry or an error, never a panic, and never allocate beyond the declared bounds. A
//! record that decodes must re-encode to one that decodes to the same entry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_core::Compression;
use strata_storage::record::{decode, decode_header, encode};

fn check(bytes: &[u8]) {
    let header = decode_header(bytes);
    if let Ok(entry) = decode(bytes) {
        assert!(header.is_ok(), "a record that decodes must have a decodable header");
        let again = encode(&entry, Compression::Lz4).expect("a decoded entry re-encodes");
        assert_eq!(decode(&again).expect("re-encoded record decodes"), entry);
    }
}

fuzz_target!(|data: &[u8]| {
    // As read from disk, and with a valid checksum appended, so that the body decoder and the
    // decompressors see arbitrary input too (random bytes almost never pass the checksum).
    check(data);
    let mut sealed = data.to_vec();
    let sum = xxhash_rust::xxh3::xxh3_64(&sealed);
    sealed.extend_from_slice(&sum.to_le_bytes());
    check(&sealed);
});
