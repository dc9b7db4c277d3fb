//! The peer handshake faces whoever can open a TCP connection. Any bytes, read as the frames
//! of a connection that has not logged in (bounded by `MAX_HANDSHAKE_FRAME`), must drive the
//! callee's state machine to a refusal or a valid challenge without panicking, and must never
//! produce a `Welcome` (a login) without the secret: the fuzzer does not have it.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use strata_cluster::Authenticator;
use strata_cluster::handshake::{Callee, Caller, MAX_HANDSHAKE_FRAME, NONCE_LEN};
use strata_cluster::rpc::{self, Frame, Response};

fuzz_target!(|data: &[u8]| {
    let auth = Authenticator::new(b"the cluster secret, not in the input");
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    while let Ok(Some(f)) = rpc::decode(&mut buf, MAX_HANDSHAKE_FRAME) {
        frames.push(f);
        if frames.len() > 4 {
            break;
        }
    }
    let mut it = frames.into_iter();
    if let Some(Frame::Request(_, login)) = it.next()
        && let Ok((callee, challenge)) = Callee::on_login("node", login, [7; NONCE_LEN])
    {
        assert!(matches!(challenge, Response::Challenge { .. }));
        assert_ne!(callee.caller(), "node");
        for f in it {
            if let Frame::Request(_, prove) = f {
                assert!(callee.on_prove(&auth, prove, 1, 1).is_err(), "a login without the secret");
            }
        }
    }
    // The caller's side, fed the same frames as answers: errors, never panics.
    let mut caller = Caller::new("me", "node", 1, [9; NONCE_LEN]);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(Frame::Response(_, r))) = rpc::decode(&mut buf, MAX_HANDSHAKE_FRAME) {
        if caller.on_challenge(&auth, r.clone()).is_err() {
            assert!(caller.on_welcome(&auth, r).is_err());
        }
    }
});
