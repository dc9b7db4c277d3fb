//! The Redis bridge's decoders: entries read back from a Redis other programs also write
//! to, and messages from the shared invalidation channel. Neither may panic or allocate
//! beyond its bounds; an entry that decodes must re-encode to bytes that decode the same.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strata_redis::codec;

fuzz_target!(|data: &[u8]| {
    let _ = codec::header_len(data);
    let _ = codec::decode_header(data);
    if let Ok(entry) = codec::decode_entry(Bytes::copy_from_slice(data)) {
        let again = codec::decode_entry(Bytes::from(codec::encode_entry(&entry)))
            .expect("a decoded entry must re-encode");
        assert_eq!(again, entry);
    }
    if let Ok(msg) = codec::decode_message(data) {
        let again = codec::decode_message(&codec::encode_message(&msg))
            .expect("a decoded message must re-encode");
        assert_eq!(again, msg);
    }
});
