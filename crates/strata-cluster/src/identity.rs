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

/// Highest generation a generation file may hold ([`parse_generation`]; some 285,000
/// years of Unix ms): a larger one is not this member's, and generations are shown in JSON
/// (`/cluster`, the console), whose numbers are exact only up to 2^53.
pub const MAX_GENERATION: u64 = (1 << 53) - 1;

/// The generation a member's generation file holds (the node keeps the end of the
/// generations it has reserved beside L3's files, so that a restart starts above them): a
/// decimal number up to [`MAX_GENERATION`], surrounding ASCII whitespace allowed, at most
/// 24 bytes; `None` for anything else (an empty, torn or foreign file).
pub fn parse_generation(bytes: &[u8]) -> Option<u64> {
    if bytes.len() > 24 {
        return None;
    }
    let s = std::str::from_utf8(bytes).ok()?.trim_ascii();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&g| g <= MAX_GENERATION)
}

/// How many generations ahead of the one it uses a member with a directory reserves (the
/// node's `cluster::generations`): a restart starts above the reservation, so it takes
/// neither a generation the previous process renewed to (one per rejoin, each reserved
/// before it can be reached) nor one next to them.
pub const GENERATION_RESERVE: u64 = 1_000;

/// The generation a process starting at `now_ms` (wall clock) takes, after an earlier
/// process of the same member reserved up to `last`: above both, and never 0. At one gossip
/// address the higher generation wins ([`NodeIdentity`]'s `win_addr_conflict`), so a
/// restart on a clock stepped back past its previous life's start must not take the clock's.
pub fn next_generation(now_ms: u64, last: Option<u64>) -> u64 {
    now_ms.max(last.map_or(0, |l| l.saturating_add(1))).max(1)
}

/// One identity per member name, from the live identities of a view (`live`), and the
/// names two processes hold. Two identities with the same name at different gossip
/// addresses are two processes given one `node.name`: the ring places keys by name, so
/// both took themselves for the owner and primary of that name's keys, and both served
/// stale and deleted values for good (a review, 2026-12-05). The older life (the lower
/// generation) keeps the name in the view, so every member sends that name's requests to
/// the same process; the other learns from its own view that it is the second, and stands
/// aside. A newer life at the same address is the same node restarted: it wins.
pub fn one_per_name(
    live: impl IntoIterator<Item = NodeIdentity>,
) -> (
    std::collections::BTreeMap<String, NodeIdentity>,
    std::collections::BTreeSet<String>,
) {
    let mut members: std::collections::BTreeMap<String, NodeIdentity> = Default::default();
    let mut shared = std::collections::BTreeSet::new();
    for id in live {
        match members.get(&id.name) {
            None => {
                members.insert(id.name.clone(), id);
            }
            Some(held) if held.gossip == id.gossip => {
                if id.generation > held.generation {
                    members.insert(id.name.clone(), id);
                }
            }
            Some(held) => {
                shared.insert(id.name.clone());
                if id.generation < held.generation {
                    members.insert(id.name.clone(), id);
                }
            }
        }
    }
    (members, shared)
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
    use super::{NodeIdentity, SocketAddr, one_per_name, version_tag};

    #[test]
    fn two_processes_with_one_name_leave_the_older_in_the_view() {
        let id = |name: &str, port: u16, generation: u64| NodeIdentity {
            name: name.into(),
            gossip: SocketAddr::from(([127, 0, 0, 1], port)),
            rpc: SocketAddr::from(([127, 0, 0, 1], port + 1)),
            resp: SocketAddr::from(([127, 0, 0, 1], port + 2)),
            admin: SocketAddr::from(([127, 0, 0, 1], port + 3)),
            cluster_resp: None,
            generation,
        };
        // The impostor started later (a higher generation), listed first or last.
        for live in [
            vec![id("n1", 100, 5), id("n2", 200, 7), id("n2", 300, 9)],
            vec![id("n2", 300, 9), id("n1", 100, 5), id("n2", 200, 7)],
        ] {
            let (members, shared) = one_per_name(live);
            assert_eq!(members.len(), 2);
            assert_eq!(members["n2"].gossip.port(), 200);
            assert_eq!(
                shared.into_iter().collect::<Vec<_>>(),
                vec!["n2".to_string()]
            );
        }
        // A newer life at the same address is a restart, not a second process.
        let (members, shared) = one_per_name(vec![id("n2", 200, 7), id("n2", 200, 11)]);
        assert_eq!(members["n2"].generation, 11);
        assert!(shared.is_empty());
    }

    #[test]
    fn tags_are_stable_and_spread() {
        assert_eq!(version_tag("node1"), version_tag("node1"));
        let tags: std::collections::HashSet<u8> =
            (0..64).map(|i| version_tag(&format!("n{i:04}"))).collect();
        assert!(tags.len() > 40, "64 names gave only {} tags", tags.len());
    }
}

#[cfg(test)]
mod generation_tests {
    use super::{MAX_GENERATION, next_generation, parse_generation};

    #[test]
    fn a_generation_file_holds_one_decimal_number_or_nothing() {
        assert_eq!(
            parse_generation(b"1796677155620\n"),
            Some(1_796_677_155_620)
        );
        assert_eq!(parse_generation(b"  42 "), Some(42));
        assert_eq!(parse_generation(b"9007199254740991"), Some(MAX_GENERATION));
        for bad in [
            &b""[..],
            b"\n",
            b"-1",
            b"+1",
            b"1e9",
            b"12 34",
            b"\xff\xfe",
            b"9007199254740992",
            b"4611686018427387904",
            b"18446744073709551615",
            b"18446744073709551616",
            &[b'1'; 30],
        ] {
            assert_eq!(parse_generation(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_restart_starts_above_its_previous_life_whatever_the_clock() {
        assert_eq!(next_generation(5_000, None), 5_000);
        assert_eq!(next_generation(5_000, Some(4_000)), 5_000);
        assert_eq!(next_generation(5_000, Some(9_000)), 9_001);
        assert_eq!(next_generation(0, None), 1);
        assert_eq!(next_generation(7, Some(u64::MAX)), u64::MAX);
    }
}
