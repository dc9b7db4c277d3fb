//! Peer RPC frames and gossip packets come from the network. A frame stream of any bytes
//! must decode to frames or an error without panicking or buffering past the frame limit,
//! and a decoded frame must re-encode to the same bytes' meaning. A gossip packet must be
//! refused by authentication (random bytes never carry a valid tag) without reaching foca,
//! and the same bytes sealed with the secret must not panic foca's decoder. The same bytes
//! as a coherence item (an invalidation, a batch, a heartbeat: what `Push`, `Apply` and
//! repairs carry) must be applied or counted as bad, never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use strata_cluster::rpc::{self, Frame};
use strata_cluster::{
    Authenticator, Coherence, CoherenceConfig, Membership, NodeIdentity, lan_config,
};

const SECRET: &[u8] = b"fuzz";

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = rpc::decode(&mut buf, 1 << 16) {
        let again = rpc::to_bytes(&frame);
        let mut b = BytesMut::from(&again[..]);
        let round: Frame = rpc::decode(&mut b, usize::MAX).expect("re-decodes").expect("whole");
        assert_eq!(round, frame);
    }

    let addr = SocketAddr::from(([127, 0, 0, 1], 7946));
    let me = NodeIdentity {
        name: "me".into(),
        gossip: addr,
        rpc: addr,
        resp: addr,
        admin: addr,
        generation: 1,
    };
    let mut m = Membership::new(me, lan_config(3), 1, SECRET, vec![]);
    let _ = m.handle_packet(data);
    assert_eq!(m.stats().rejected_packets, u64::from(Authenticator::new(SECRET).open(data).is_err()));
    let _ = m.handle_packet(&Authenticator::new(SECRET).seal(data));

    let mut c = Coherence::new("me", 1, CoherenceConfig::default());
    let before = c.stats().bad_items;
    let out = c.receive(0, data);
    assert!(out.is_empty() || c.stats().bad_items == before);
    let _ = c.tick(10_000);
});
