//! Strata's cluster protocol as sans-IO state machines, driven unchanged by the node binary
//! and by the deterministic simulator (`simulations/`):
//!
//! - [`membership`]: foca (SWIM) membership and failure detection, with packets sealed by
//!   the cluster secret ([`auth`]);
//! - [`ring`]: consistent hashing over the live view: `owners(key)`;
//! - [`coherence`]: per-origin sequenced invalidations, gap repair, and the drop of
//!   unverifiable copies when a gap cannot be repaired;
//! - [`identity`]: what a node is known by (stable name, addresses, generation);
//! - [`rpc`]: peer RPC frames (length-prefixed postcard, versioned, multiplexed by request id)
//!   and [`handshake`], the mutual authentication that opens each connection.
//!
//! No tokio, no sockets, no clock: inputs come in (packets, timer events), outputs go out.

pub mod auth;
pub mod coherence;
pub mod handshake;
pub mod identity;
pub mod membership;
pub mod placement;
pub mod primary;
pub mod ring;
pub mod rpc;
pub mod warm;

pub use auth::{AuthError, Authenticator};
pub use coherence::{Coherence, CoherenceConfig, Invalidation, InvalidationOp, ItemHandler};
pub use identity::{NodeIdentity, version_tag};
#[cfg(feature = "fault-switches")]
pub use membership::FaultSwitches;
pub use membership::{Membership, MembershipStats, MembershipTimer, Output, Silences, lan_config};
pub use ring::{DEFAULT_REPLICATION_FACTOR, DEFAULT_VNODES, Ring};
