//! Peer RPC frames and gossip packets come from the network. A frame stream of any bytes
//! must decode to frames or an error without panicking or buffering past the frame limit,
//! and a decoded frame must re-encode to the same bytes' meaning. A gossip packet must be
//! refused by authentication (random bytes never carry a valid tag) without reaching foca,
//! and the same bytes sealed with the secret must not panic foca's decoder. The same bytes
//! as a coherence item (an invalidation, a batch, a heartbeat: what `Push`, `Apply` and
//! repairs carry) must be applied or counted as bad, never panic. The same bytes as an
//! `Execute` request's operation (`PrimaryOp`) must decode or be refused, and a decoded one
//! must round-trip and execute against any entry (bounded: `ops::apply` checks sizes before
//! it allocates) without panicking.
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
        cluster_resp: None,
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

    if let Some(op) = strata_cluster::primary::PrimaryOp::decode(data) {
        assert_eq!(
            strata_cluster::primary::PrimaryOp::decode(&op.encode()).map(|o| o.encode()),
            Some(op.encode())
        );
        let held = strata_core::Entry::new(bytes::Bytes::from_static(b"41"), strata_core::Version::from_u64(7));
        match &op {
            strata_cluster::primary::PrimaryOp::Key(k) => {
                let limits = strata_core::ops::OpLimits { max_value: 1 << 20 };
                let _ = strata_core::ops::apply(k, None, 5, limits);
                let _ = strata_core::ops::apply(k, Some(&held), 5, limits);
            }
            strata_cluster::primary::PrimaryOp::Multi(m) => {
                let limits = strata_core::ops::OpLimits { max_value: 1 << 20 };
                let n = m.keys().len();
                let _ = strata_core::ops::apply_multi(m, &vec![None; n], 0, limits);
                let _ = strata_core::ops::apply_multi(m, &vec![Some(&held); n], 0, limits);
            }
            strata_cluster::primary::PrimaryOp::Put(_) => {}
        }
    }
});
