//! A node's identity in the cluster, as foca carries it in every membership update.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Who a node is and where to reach it.
///
/// `name` is stable across restarts (the ring places keys by it); `generation` changes on
/// every restart, so the cluster tells a restarted node from its previous life and a stale
/// "down" about the old one cannot take the new one out. Two identities with the same gossip
/// address are the same node; the higher generation wins.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Stable node name (config `node.name`).
    pub name: String,
    /// Where gossip (UDP) reaches it.
    pub gossip: SocketAddr,
    /// Its peer RPC (TCP) listener.
    pub rpc: SocketAddr,
    /// Its Redis-protocol listener.
    pub resp: SocketAddr,
    /// Its admin HTTP listener.
    pub admin: SocketAddr,
    /// Its Redis Cluster-mode listener (`server.cluster_listen`), if it has one: the address
    /// `CLUSTER SLOTS` and `MOVED` give cluster-aware clients for the slots it is primary of.
    pub cluster_resp: Option<SocketAddr>,
    /// Changes on every restart; starts at 1 (0 is the placeholder for a seed whose identity
    /// is not known yet).
    pub generation: u64,
}

impl NodeIdentity {
    /// A placeholder for a seed known only by its gossip address: announcing to it reaches
    /// the real node, whose identity then replaces this one.
    pub fn seed(gossip: SocketAddr) -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        NodeIdentity {
            name: String::new(),
            gossip,
            rpc: unspecified,
            resp: unspecified,
            admin: unspecified,
            cluster_resp: None,
            generation: 0,
        }
    }

    /// Whether this is a seed placeholder rather than a node's own identity.
    pub fn is_placeholder(&self) -> bool {
        self.generation == 0
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeIdentity {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// The tag a member puts in the low 8 bits of every version it stamps
/// (`strata_core::HybridClock::with_tag`): a hash of its name, the same on every run, so two
/// members writing the same key in the same millisecond stamp different versions. Two names
/// share a tag with probability 1/256; those two can still tie, but only if they also write
/// the same key in the same millisecond at the same logical count.
pub fn version_tag(name: &str) -> u8 {
    // FNV-1a, folded to one byte.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.to_le_bytes().iter().fold(0, |acc, b| acc ^ b)
}

#[cfg(test)]
mod version_tag_tests {
    use super::version_tag;

    #[test]
    fn tags_are_stable_and_spread() {
        assert_eq!(version_tag("node1"), version_tag("node1"));
        let tags: std::collections::HashSet<u8> =
            (0..64).map(|i| version_tag(&format!("n{i:04}"))).collect();
        assert!(tags.len() > 40, "64 names gave only {} tags", tags.len());
    }
}
