//! Arbitrary bytes into the RESP parsers (requests as a server reads them, frames as a client
//! reads them), with small limits so that the bounds are exercised. Checks: no panic, nothing
//! consumed past the input, argument ranges inside the request, and that a parsed frame
//! re-encodes to bytes that parse back to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_resp::{Frame, Limits, Request, parse_frame, parse_request};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_bulk_len: 4096,
        max_array_len: 64,
        max_inline_len: 256,
        max_depth: 8,
        // Half the inputs parsed as from a client before AUTH.
        unauthenticated: data.first().is_some_and(|b| b & 1 == 1),
    };
    let mut req = Request::default();
    let mut rest = data;
    while let Ok(true) = parse_request(rest, &limits, &mut req) {
        assert!(req.consumed > 0 && req.consumed <= rest.len());
        assert!(req.ranges.iter().all(|r| r.start <= r.end && r.end <= req.consumed));
        rest = &rest[req.consumed..];
    }
    if let Ok(Some((frame, used))) = parse_frame(data, &limits) {
        assert!(used <= data.len());
        let has_nan = format!("{frame:?}").contains("NaN");
        let again = frame.to_bytes();
        let (back, n) = parse_frame(&again, &Limits::default())
            .expect("re-encoded frame parses")
            .expect("re-encoded frame is complete");
        assert_eq!(n, again.len());
        if !has_nan {
            assert_eq!(back, frame);
        }
        let _: &Frame = &back;
    }
});
