//! Peer RPC frames: the codec, with no I/O (the transport feeds bytes in and takes frames
//! out, so the simulator can carry the same frames).
//!
//! ```text
//! frame := length   u32 big-endian: bytes after this field (at most the frame limit)
//!          version  u8 = 1 (PROTOCOL_VERSION)
//!          kind     u8: 0 request, 1 response
//!          id       u64 big-endian: the request id (a response carries its request's id,
//!                   so many requests share one connection per peer pair, out of order)
//!          body     postcard(Request) or postcard(Response)
//! ```
//!
//! `Request` and `Response` are append-only: new variants go at the end, and a peer that
//! receives a variant it does not know answers `Response::Error` instead of failing the
//! connection. A connection starts with the handshake of [`crate::handshake`] (`Login`,
//! `Challenge`, `Prove`, `Welcome`), whose frames are bounded by
//! [`crate::handshake::MAX_HANDSHAKE_FRAME`] instead of the frame limit.

use bytes::{Buf, BytesMut};
use serde::{Deserialize, Serialize};

/// The frame format's version byte.
pub const PROTOCOL_VERSION: u8 = 1;
/// What a build understands beyond the frames every build of [`PROTOCOL_VERSION`] reads
/// alike: exchanged once per connection, after the handshake ([`Request::Features`]). A
/// peer that answers the exchange with an error is of an earlier build and has none of
/// them. A sender puts a newer value in a frame only for a peer with its bit: during a
/// rolling upgrade, members of two builds serve one cluster (docs/operations.md).
pub mod features {
    /// `ReplicaChange::CHECK_ONLY` changes in a `ReplicateMulti` (ARCHITECTURE decision
    /// 96): an earlier build reads one as a removal at version 0.
    pub const CHECK_ONLY_CHANGES: u64 = 1;
    /// [`super::Request::Handoff`]: a hand-off's copies in batches. An earlier build gets
    /// them one `Set` at a time.
    pub const HANDOFF_BATCHES: u64 = 2;
    /// Understands [`super::Response::Deferred`]: a push refused for now, to send again
    /// later. A callee answers it only to a caller that told it this bit (an earlier
    /// caller gets the answer it knows: the entry counted as not stored).
    pub const DEFERRED_PUSHES: u64 = 4;
    /// Understands [`super::Response::StalenessEnded`]: a witness's answer with the member
    /// lives it saw end. An earlier caller gets [`super::Response::Staleness`].
    pub const ENDED_LIVES: u64 = 8;
    /// Understands [`super::Response::StalenessLives`]: a witness's answer that also tells
    /// which generations its process has had. An earlier caller gets
    /// [`super::Response::StalenessEnded`].
    pub const PROCESS_LIVES: u64 = 16;
    /// Understands [`super::ReplicaRefusal::Unproven`], in a `Refused` answer to a
    /// `Replicate` as well as to a `ReplicateMulti`. An earlier caller gets
    /// [`super::ReplicaRefusal::Fenced`] with no primary instead.
    pub const UNPROVEN_REFUSALS: u64 = 32;
    /// Understands [`super::Response::StalenessGaps`]: a witness's answer that also tells
    /// the gaps it gave up on, each of one origin's life, apart from how far back its
    /// record reaches without them. An earlier caller gets
    /// [`super::Response::StalenessLives`].
    pub const GAPS_TOLD: u64 = 64;
    /// Understands [`super::Request::HandoffFor`]: a hand-off batch that names the
    /// callee's life its sender saw when it read the batch. An earlier build gets
    /// [`super::Request::Handoff`].
    pub const HANDOFF_LIFE: u64 = 128;
    /// Understands [`super::Response::LeaseView`]: a lease ping's answer that tells the
    /// members the callee's view holds live. An earlier caller gets
    /// [`super::Response::Lease`].
    pub const LEASE_VIEWS: u64 = 256;
    /// Everything this build understands.
    pub const THIS_BUILD: u64 = CHECK_ONLY_CHANGES
        | HANDOFF_BATCHES
        | DEFERRED_PUSHES
        | ENDED_LIVES
        | PROCESS_LIVES
        | UNPROVEN_REFUSALS
        | GAPS_TOLD
        | HANDOFF_LIFE
        | LEASE_VIEWS;
    /// Set when bits 32–55 of the word carry the sender's ring parameters ([`with_ring`]):
    /// members that place keys with different `vnodes` or replication factors disagree on
    /// every key's primary, and each says so instead of failing writes silently. An earlier
    /// build tests only its own bits and ignores these.
    pub const RING_PARAMS: u64 = 1 << 31;

    /// `bits` with the sender's ring parameters: `vnodes` in bits 32–47, the replication
    /// factor (at most 255) in bits 48–55.
    pub fn with_ring(bits: u64, vnodes: u16, replication_factor: u32) -> u64 {
        let rf = u64::from(replication_factor.min(255));
        bits | RING_PARAMS | (u64::from(vnodes) << 32) | (rf << 48)
    }

    /// The ring parameters (`vnodes`, replication factor) a features word carries, if its
    /// sender put them there.
    pub fn ring_params(bits: u64) -> Option<(u16, u32)> {
        (bits & RING_PARAMS != 0)
            .then_some((((bits >> 32) & 0xffff) as u16, ((bits >> 48) & 0xff) as u32))
    }
}

/// Bytes of the fixed header after the length: version, kind, id.
pub const HEADER_LEN: usize = 1 + 1 + 8;
/// Default bound on a frame (the largest value plus room for its key and metadata).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024 + 64 * 1024;

/// An entry as it travels between peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Packed HLC version.
    pub version: u64,
    /// Expiry, Unix ms.
    pub expires_at_ms: Option<u64>,
    /// End of the stale grace, Unix ms.
    pub stale_until_ms: Option<u64>,
    /// Tags.
    pub tags: Vec<Vec<u8>>,
}

/// What one peer asks another. Append-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The version 1 handshake, no longer accepted (it could be reflected: a callee tagged
    /// any nonce it was sent before the caller proved anything). Kept so that the variant
    /// numbers of the others do not move; a node answers it with an error.
    Hello {
        /// The caller's node name.
        name: String,
        /// The caller's generation.
        generation: u64,
        /// A fresh random nonce.
        nonce: u64,
        /// The caller's proof: the tag of the callee's nonce (empty in the first Hello,
        /// filled once the callee's nonce is known).
        proof: Vec<u8>,
    },
    /// Liveness and latency probe.
    Ping,
    /// Read `key` from its owner.
    Get {
        /// Namespace.
        namespace: String,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Write `key` on its owner.
    Set {
        /// Namespace.
        namespace: String,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The entry.
        entry: WireEntry,
    },
    /// Remove `key` on its owner, stamping a tombstone of `version`.
    Remove {
        /// Namespace.
        namespace: String,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The invalidation's version.
        version: u64,
    },
    /// Resend the invalidations of `origin` with sequence numbers in `from..=to` (gap repair).
    Invalidations {
        /// The origin node's name.
        origin: String,
        /// First missing sequence number.
        from: u64,
        /// Last missing sequence number.
        to: u64,
    },
    /// Apply a coherence item (an encoded `coherence::Item`) now and answer `Applied` once
    /// done: a strict invalidation waits for every live member's answer.
    Apply {
        /// The encoded item.
        #[serde(with = "serde_bytes")]
        item: Vec<u8>,
    },
    /// Take a coherence item into the receiver's stream (applied in sequence order, like
    /// one that came by gossip) and answer `Applied { removed: 0 }` at once: how an origin
    /// disseminates under load, when its gossip backlog is full.
    Push {
        /// The encoded item.
        #[serde(with = "serde_bytes")]
        item: Vec<u8>,
    },
    /// Handshake step 1 (version 2, [`crate::handshake`]): who calls whom, and the caller's
    /// nonce.
    Login {
        /// The caller's node name.
        caller: String,
        /// The node the caller means to reach.
        callee: String,
        /// The caller's generation.
        generation: u64,
        /// 16 random bytes.
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
    },
    /// Handshake step 3: the caller's proof over both names and both nonces.
    Prove {
        /// HMAC-SHA256 (32 bytes).
        #[serde(with = "serde_bytes")]
        proof: Vec<u8>,
    },
    /// The versions of the fresh entries the callee's owner store holds for `keys` (at most
    /// [`MAX_VERSIONS_PER_REQUEST`]): how a restarted node proves its L3 copies current in
    /// bulk ([`crate::warm`]).
    Versions {
        /// Namespace.
        namespace: String,
        /// The keys.
        keys: Vec<serde_bytes::ByteBuf>,
    },
    /// Execute a write of `key` as its primary ([`crate::primary`]): `op` is an encoded
    /// [`crate::primary::PrimaryOp`]. Answered `Executed`, `NotPrimary` (nothing was done:
    /// the caller may retry once its view moves) or `Error` (the outcome is unknown).
    Execute {
        /// Namespace.
        namespace: String,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The encoded operation.
        #[serde(with = "serde_bytes")]
        op: Vec<u8>,
    },
    /// A primary's change of `key`, for the other owners to apply before the primary
    /// acknowledges it. The receiver refuses it (`Fenced`) unless the caller is the key's
    /// primary in its own view, and (`Stale`) when it holds a newer version than `base`, the
    /// copy the primary executed against: a primary back from a pause or a partition learns
    /// what it missed instead of overwriting it.
    Replicate {
        /// Namespace.
        namespace: String,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The entry written, or `None` for a delete.
        entry: Option<WireEntry>,
        /// The delete's version (ignored for a write).
        version: u64,
        /// The version of the copy the primary executed against (0: it had none).
        base: u64,
    },
    /// Pub/sub messages published on the caller, in order, for this member's subscribers
    /// (at most [`MAX_PUBLISH_PER_REQUEST`]). Answered `Published`.
    Publish {
        /// (channel, payload) pairs.
        messages: Vec<(ByteBuf, ByteBuf)>,
    },
    /// Pub/sub messages published on the caller, in order, some of them to shard channels
    /// (`SPUBLISH`); as `Publish` otherwise (a batch of plain messages only is sent as
    /// `Publish`). Answered `Published`.
    PublishSharded {
        /// (channel, payload, whether it is a shard channel's) triples.
        messages: Vec<(ByteBuf, ByteBuf, bool)>,
    },
    /// A primary's lease ping ([`crate::primary::Lease`]). Answered `Lease`: whether the
    /// callee's view counts the caller as a live member ([`crate::primary::grants_lease`]).
    LeasePing,
    /// A primary's changes of several keys of one hash tag (a multi-key command's:
    /// `MSETNX`, `RENAME`, a transaction, a script), at most [`MAX_CHANGES_PER_REQUEST`].
    /// The receiver checks every change as for `Replicate` — and, for a write, as its
    /// store will (the entry's version and tags, its size) — before it applies any, and
    /// answers `Replicated` once all are applied, or `Refused` with every change it
    /// refused and nothing applied. Only a race with another request between the check and
    /// the store, or a failing store, can leave it half applied (answered `Error`).
    ReplicateMulti {
        /// Namespace.
        namespace: String,
        /// The changes, in the order the primary applies them.
        changes: Vec<ReplicaChange>,
    },
    /// The first request on a connection after the handshake: the caller's [`features`],
    /// answered with the callee's ([`Response::Features`]). A build from before this
    /// variant answers `Error` (an unknown variant): it has none of them.
    Features {
        /// The caller's feature bits.
        bits: u64,
    },
    /// For each copy (a key, its version and tags; at most [`MAX_VERSIONS_PER_REQUEST`]),
    /// the newest change of the key the callee knows of that makes the copy stale: a newer
    /// version it holds, or an invalidation above the copy's version that covers it (a
    /// key's write or removal, a pattern, tag or flush) seen in the last `tombstone_ms`.
    /// Answered [`Response::Staleness`]. How a restarted member proves a pushed copy that
    /// the key's other owner no longer holds ([`crate::warm::keep_pushed`]). A build from
    /// before this variant answers `Error` (an unknown variant): its answer proves nothing.
    Staleness {
        /// Namespace.
        namespace: String,
        /// The copies.
        copies: Vec<CopyRef>,
    },
    /// Copies a member pushes to a key's new owners after a ring change (a hand-off), at
    /// most [`MAX_HANDOFF_ENTRIES`]: each stored as a `Set` is. Answered
    /// [`Response::HandedOff`] — or, to a caller with [`features::DEFERRED_PUSHES`],
    /// [`Response::Deferred`] once the receiver holds as many unproven pushes as it may.
    /// Sent only to a peer with [`features::HANDOFF_BATCHES`].
    Handoff {
        /// Namespace.
        namespace: String,
        /// The keys and their entries.
        entries: Vec<(ByteBuf, WireEntry)>,
    },
    /// A page of the keys the callee holds as an owner in `namespace`, in scan order
    /// (`strata_core::scan`), from the position `hash` / `after` (strictly after that key
    /// when given, else at that hash): how a node lists the whole cluster's keys for
    /// `KEYS`, `SCAN`, `RANDOMKEY` and `DBSIZE` on its plain listener. Answered
    /// [`Response::Keys`] with at most `limit`, [`MAX_KEYS_PER_PAGE`] and about
    /// [`KEYS_PAGE_BYTES`] of keys; `limit` 0 asks for the count alone. A build from before
    /// this variant answers `Error` (an unknown variant): its keys are left out.
    Keys {
        /// Namespace.
        namespace: String,
        /// The scan hash the page starts at.
        hash: u64,
        /// The key the page starts strictly after (its hash is `hash`), if any.
        after: Option<ByteBuf>,
        /// Most keys wanted.
        limit: u32,
    },
    /// [`Request::Handoff`], read by its sender after it saw the callee up in its life
    /// `generation`: every copy in it was read after the callee's process with that life
    /// started. A callee settling after a restart proves such a copy from its process's
    /// start ([`crate::warm::needed_ms_after_start`]) instead of a margin of calls before
    /// it; a `generation` of another process of the callee proves nothing (the batch is
    /// taken as a `Handoff`). Answered as `Handoff`. Sent only to a peer with
    /// [`features::HANDOFF_LIFE`].
    HandoffFor {
        /// Namespace.
        namespace: String,
        /// The callee's life (membership generation) its sender saw when it read the
        /// batch.
        generation: u64,
        /// The keys and their entries.
        entries: Vec<(ByteBuf, WireEntry)>,
    },
}

/// Most keys one [`Response::Keys`] page holds.
pub const MAX_KEYS_PER_PAGE: usize = 1024;

/// A [`Response::Keys`] page ends once its keys reach this many bytes (it holds at least
/// one key when the callee has any, whatever its size).
pub const KEYS_PAGE_BYTES: usize = 1024 * 1024;

/// A copy a [`Request::Staleness`] asks about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRef {
    /// Key.
    pub key: ByteBuf,
    /// The copy's version.
    pub version: u64,
    /// The copy's tags (a tag invalidation covers the copies that carry the tag).
    pub tags: Vec<ByteBuf>,
}

/// One key's change in a [`Request::ReplicateMulti`]: the fields of a `Replicate`. With no
/// entry and [`ReplicaChange::CHECK_ONLY`] as its version it changes nothing: a key a
/// transaction or script read without changing it, which the owner checks as it checks a
/// write's base and leaves as it is (ARCHITECTURE decision 96).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaChange {
    /// Key.
    pub key: ByteBuf,
    /// The entry written, or `None` for a delete.
    pub entry: Option<WireEntry>,
    /// The delete's version (ignored for a write); [`ReplicaChange::CHECK_ONLY`] without an
    /// entry: no change, a check of `base`.
    pub version: u64,
    /// The version of the copy the primary executed against (0: it had none).
    pub base: u64,
    /// That copy's tags: an invalidation of one of them newer than `base` made the copy
    /// dead (a `Replicate` cannot say, so its check leaves tags out).
    pub base_tags: Vec<ByteBuf>,
}

impl ReplicaChange {
    /// The version of a change that only asks the owner to check its base (no delete is
    /// ever stamped 0).
    pub const CHECK_ONLY: u64 = 0;

    /// Whether this change only asks for its base to be checked.
    pub fn check_only(&self) -> bool {
        self.entry.is_none() && self.version == Self::CHECK_ONLY
    }
}

/// Why an owner refused one key of a [`Request::ReplicateMulti`] (the answers an owner
/// gives a `Replicate` that it refuses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRefusal {
    /// As [`Response::Fenced`].
    Fenced {
        /// The primary in the callee's view.
        primary: Option<String>,
    },
    /// As [`Response::Stale`].
    Stale {
        /// The owner's newer entry.
        entry: WireEntry,
    },
    /// As [`Response::Superseded`].
    Superseded {
        /// The invalidation's version.
        version: u64,
    },
    /// The change's own entry (its version and tags) is covered by an invalidation at
    /// `version` this owner has applied, while the copy the primary executed from is not:
    /// the primary stamps the change above it (the copy stays).
    Covered {
        /// The invalidation's version.
        version: u64,
    },
    /// The value does not fit this owner's store (`cluster.owner_capacity_bytes`).
    TooLarge {
        /// The largest value this owner's store holds for the key.
        largest: u64,
    },
    /// This owner holds a copy of the key not proven yet (it rejoined without its lease, or
    /// restarted), at `version`, newer than the copy the primary executed from
    /// ([`crate::primary::below_unproven`]): nothing applied; the primary tries again once
    /// the proof has kept the copy (and passed it on) or dropped it. Sent only to a caller
    /// that told [`features::UNPROVEN_REFUSALS`]; an earlier one gets `Fenced` with no
    /// primary, which it also takes as a refusal with nothing applied.
    Unproven {
        /// The version of the copy held unproven.
        version: u64,
    },
}

/// The answer an owner gives a `Replicate` it refuses for this reason.
impl From<ReplicaRefusal> for Response {
    fn from(r: ReplicaRefusal) -> Self {
        match r {
            ReplicaRefusal::Fenced { primary } => Response::Fenced { primary },
            ReplicaRefusal::Stale { entry } => Response::Stale { entry },
            ReplicaRefusal::Superseded { version } | ReplicaRefusal::Covered { version } => {
                Response::Superseded { version }
            }
            ReplicaRefusal::TooLarge { .. } => {
                Response::Error("the value does not fit this owner store".into())
            }
            // A `Replicate` has no refusal of its own for it: answered as a `ReplicateMulti`
            // of one change is, which a caller that knows the variant reads either way.
            unproven @ ReplicaRefusal::Unproven { .. } => Response::Refused {
                refusals: vec![(0, unproven)],
            },
        }
    }
}

/// Most changes one `ReplicateMulti` request may carry (a larger one is answered with an
/// error, nothing applied).
pub const MAX_CHANGES_PER_REQUEST: usize = 1024;

/// Most messages one `Publish` request may carry (a larger one is answered with an error).
pub const MAX_PUBLISH_PER_REQUEST: usize = 1024;

/// The byte-string type of `Versions` keys (serialized as bytes, not a sequence).
pub use serde_bytes::ByteBuf;

/// Most keys one `Versions` request may name (a larger one is answered with an error).
pub const MAX_VERSIONS_PER_REQUEST: usize = 1024;

/// Most tags a copy in a `Staleness` request may carry (an entry carries at most
/// `limits.max_tags_per_entry`: 32 by default, 1024 at most).
pub const MAX_TAGS_PER_COPY: usize = 1024;

/// Most entries one `Handoff` request may carry (a larger one is answered with an error,
/// nothing stored).
pub const MAX_HANDOFF_ENTRIES: usize = 1024;

/// What a peer answers. Append-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The callee's half of the handshake: its nonce, and its tag of the caller's nonce.
    Hello {
        /// The callee's node name.
        name: String,
        /// A fresh random nonce for the caller to tag.
        nonce: u64,
        /// The tag of the caller's nonce.
        proof: Vec<u8>,
    },
    /// Answer to `Ping`.
    Pong,
    /// Answer to `Get`.
    Entry(Option<WireEntry>),
    /// Answer to `Set`: stored, or a newer version was kept.
    Stored {
        /// True when the owner held a newer version (or a newer tombstone).
        kept_newer: bool,
    },
    /// Answer to `Remove`: whether the key was present.
    Removed(bool),
    /// Answer to `Invalidations`: those still in the origin's log (encoded ops), in order;
    /// fewer than asked when the log no longer reaches back that far.
    Invalidations(Vec<Vec<u8>>),
    /// The request failed (or was of a kind this peer does not know).
    Error(String),
    /// The answer to `Get` that nodes send: the entry, with the owner's coherence
    /// generation and latest invalidation sequence number (the reader records that its
    /// copy reflects every invalidation up to it). `Entry` stays for older peers.
    EntryAt {
        /// The entry, if the owner holds it.
        entry: Option<WireEntry>,
        /// The owner's coherence generation.
        generation: u64,
        /// The owner's latest invalidation sequence number.
        latest: u64,
    },
    /// The answer to `Ping` that nodes send: the peer's coherence generation and latest
    /// sequence number (the anti-entropy pull). `Pong` stays for older peers.
    Status {
        /// The peer's coherence generation.
        generation: u64,
        /// The peer's latest invalidation sequence number.
        latest: u64,
    },
    /// The answer to `Apply`: how many owner-store entries it removed of keys the peer is
    /// first owner of (so that the origin can count each key once).
    Applied {
        /// Entries removed.
        removed: u64,
    },
    /// Handshake step 2: the callee's nonce (and nothing derived from the secret).
    Challenge {
        /// 16 random bytes.
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
    },
    /// Handshake step 4: the callee's proof, and its coherence state (as `Status`).
    Welcome {
        /// HMAC-SHA256 (32 bytes).
        #[serde(with = "serde_bytes")]
        proof: Vec<u8>,
        /// The callee's coherence generation.
        generation: u64,
        /// The callee's latest invalidation sequence number.
        latest: u64,
    },
    /// Answer to `Versions`: per key, in order, the version of the fresh entry held, if any.
    Versions(Vec<Option<u64>>),
    /// Answer to `Execute`: the encoded [`strata_core::ops::Reply`], and the change made
    /// (the entry written, or the version of a delete).
    Executed {
        /// The encoded reply.
        #[serde(with = "serde_bytes")]
        reply: Vec<u8>,
        /// The entry now stored, for a write.
        entry: Option<WireEntry>,
        /// The delete's version, for a delete.
        removed: Option<u64>,
    },
    /// Answer to `Execute` by a node that is not the key's primary in its view (nothing
    /// was done), naming the one it believes is.
    NotPrimary {
        /// The primary in the callee's view.
        primary: Option<String>,
    },
    /// Answer to `Replicate`: applied.
    Replicated,
    /// Answer to `Replicate` from an owner whose view has another primary for the key: the
    /// caller is fenced off and must not acknowledge the change.
    Fenced {
        /// The primary in the callee's view.
        primary: Option<String>,
    },
    /// Answer to `Replicate` from an owner holding a newer version than the primary's base:
    /// nothing was applied; the primary adopts this entry and executes again.
    Stale {
        /// The owner's newer entry.
        entry: WireEntry,
    },
    /// Answer to an `Execute` of a multi-key operation: the encoded reply, and each key's
    /// change.
    ExecutedMulti {
        /// The encoded reply.
        #[serde(with = "serde_bytes")]
        reply: Vec<u8>,
        /// The keys changed: (key, the entry written or `None` for a delete, the delete's
        /// version).
        changes: Vec<(ByteBuf, Option<WireEntry>, u64)>,
    },
    /// Answer to `Publish`: how many of this member's clients got the messages.
    Published(u64),
    /// Answer to `LeasePing`.
    Lease {
        /// Whether the callee counts the caller as a live member: only then does the answer
        /// extend the caller's lease.
        granted: bool,
    },
    /// Answer to `Replicate` from an owner that has applied an invalidation of the key at
    /// `version`, at or above the change's own (a `DEL` by an earlier primary whose clock
    /// ran ahead of this one's): nothing was kept. The primary executes again from no copy,
    /// stamped above `version`, so that the change is ordered after the invalidation on
    /// every owner instead of living on the primary alone.
    Superseded {
        /// The invalidation's version.
        version: u64,
    },
    /// Answer to `ReplicateMulti` from an owner that refused some of its changes: nothing
    /// of the request was applied.
    Refused {
        /// Each change refused (its index in the request) and why; a fenced request is
        /// named once.
        refusals: Vec<(u32, ReplicaRefusal)>,
    },
    /// Answer to `Features`: the callee's feature bits.
    Features {
        /// The callee's feature bits ([`features`]).
        bits: u64,
    },
    /// Answer to `Staleness`.
    Staleness {
        /// How far back, in ms, the callee's record of invalidations reaches complete: since
        /// it started (or, after a warm start, since its baseline), at most its
        /// `tombstone_ms`. A change older than that may have left no trace here.
        covered_ms: u64,
        /// Per copy, in order: the version of the newest change known here that makes it
        /// stale, if any.
        newer: Vec<Option<u64>>,
    },
    /// Answer to `Handoff`: how many of its entries were stored (the others were older
    /// than what the callee holds or knows of).
    HandedOff {
        /// Entries stored.
        stored: u32,
    },
    /// Answer to `Handoff` or `Set`, only to a caller with [`features::DEFERRED_PUSHES`]:
    /// the callee (a member restarted with L3, settling) holds as many unproven pushed
    /// copies as it may, and took the first `stored` entries only; the caller still holds
    /// the rest and sends them again once the callee's proof made room.
    Deferred {
        /// Entries taken, from the first (0 for a `Set`).
        stored: u32,
    },
    /// Answer to `Staleness`, only to a caller with [`features::ENDED_LIVES`]: as
    /// [`Response::Staleness`], with the member lives the callee saw end.
    StalenessEnded {
        /// As in [`Response::Staleness`].
        covered_ms: u64,
        /// As in [`Response::Staleness`].
        newer: Vec<Option<u64>>,
        /// The member lives the callee saw end (declared down, left, replaced) within its
        /// `covered_ms`, newest first, at most [`MAX_ENDED_LIVES`].
        ended: Vec<EndedLife>,
    },
    /// Answer to `Keys`.
    Keys {
        /// The keys, in scan order.
        keys: Vec<ByteBuf>,
        /// Whether the callee stopped before `limit` with more keys to list (its page
        /// bound): the caller asks again after the last key.
        more: bool,
        /// How many keys the callee holds as an owner in the namespace (its counter, which
        /// counts expired keys not yet reclaimed).
        count: u64,
    },
    /// Answer to `Staleness`, only to a caller with [`features::PROCESS_LIVES`]: as
    /// [`Response::StalenessEnded`], with the generations the callee's process has had.
    /// A member declared down rejoins under generation + 1 in the same process, which
    /// keeps what it remembers of changes (its tombstones): lives from `first_generation`
    /// to `generation` that a view declared down did not end in memory, and a proof does
    /// not count them among the lives whose memory ended (`strata_cluster::warm::count_ended`).
    StalenessLives {
        /// As in [`Response::Staleness`].
        covered_ms: u64,
        /// As in [`Response::Staleness`].
        newer: Vec<Option<u64>>,
        /// As in [`Response::StalenessEnded`].
        ended: Vec<EndedLife>,
        /// The generation the callee's process started with.
        first_generation: u64,
        /// The callee's generation now.
        generation: u64,
    },
    /// Answer to `Staleness`, only to a caller with [`features::GAPS_TOLD`]: as
    /// [`Response::StalenessLives`], with the gaps the callee gave up on told apart. Its
    /// `covered_ms` counts every gap (a caller of this build reads `whole_ms` and `gaps`
    /// instead); `whole_ms` is how far back its record reaches without them — since it
    /// started, a warm start's baseline, a stall, a gap given up on while the record was
    /// not whole, or the oldest gap past [`MAX_GAPS_TOLD`]; at most its `tombstone_ms` —
    /// and `gaps` the gaps given up on within that, oldest first. A caller whose own
    /// coherence life is the only one a gap missed counts the record from `whole_ms`
    /// (`strata_cluster::warm::covered_for`): what the witness missed, it made itself.
    /// `ended` reaches back as far as `whole_ms`: the lives a member saw end come from
    /// membership, which a gap of invalidations does not touch.
    StalenessGaps {
        /// As in [`Response::Staleness`]: every gap counted.
        covered_ms: u64,
        /// As in [`Response::Staleness`].
        newer: Vec<Option<u64>>,
        /// As in [`Response::StalenessEnded`].
        ended: Vec<EndedLife>,
        /// As in [`Response::StalenessLives`].
        first_generation: u64,
        /// As in [`Response::StalenessLives`].
        generation: u64,
        /// How far back, in ms, the callee's record reaches with the gaps set apart.
        whole_ms: u64,
        /// The gaps given up on within `whole_ms`, oldest first.
        gaps: Vec<GivenUp>,
    },
    /// Answer to `LeasePing`, to a caller with [`features::LEASE_VIEWS`]: whether the
    /// callee's view counts the caller live, for how long, and the members it holds live
    /// (its ring's) or lost lately, so that the caller counts the grant for executing as a
    /// primary only when its own view holds each of them
    /// ([`crate::primary::grant_counts`]).
    LeaseView {
        /// The callee's view counts the caller as a live member.
        granted: bool,
        /// For how long (ms) the callee's view has held the caller.
        held_ms: u64,
        /// The members the callee's view holds live, itself included, and those it lost
        /// within the grant window.
        members: Vec<String>,
    },
}

/// A gap a witness gave up on ([`Response::StalenessGaps`]): invalidations of one origin's
/// coherence life that never reached it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GivenUp {
    /// The origin's name.
    pub origin: String,
    /// The origin's coherence life (the generation its process started with).
    pub life: u64,
    /// How long ago, in ms, the witness gave it up.
    pub ago_ms: u64,
}

/// Most gaps a [`Response::StalenessGaps`] tells: a witness that gave up on more within its
/// record moves its record's start past the oldest instead.
pub const MAX_GAPS_TOLD: usize = 64;

/// A member's life that ended, as a witness saw it ([`Response::StalenessEnded`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedLife {
    /// The member's name.
    pub name: String,
    /// Its generation (the life's start).
    pub generation: u64,
    /// How long ago, in ms, the witness saw it end.
    pub ago_ms: u64,
}

/// Most ended lives a [`Response::StalenessEnded`] carries: a witness that saw more end
/// within its record says so by sending this many, which no proof takes as fewer than its
/// replication factor.
pub const MAX_ENDED_LIVES: usize = 256;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A request and its id.
    Request(u64, Request),
    /// A response to request `id`.
    Response(u64, Response),
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field exceeds the limit: the peer is broken or hostile; close.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Shorter than the fixed header.
    #[error("frame of {0} bytes is shorter than its header")]
    Short(usize),
    /// A protocol version this build does not speak.
    #[error("unknown protocol version {0}")]
    Version(u8),
    /// Neither request nor response.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// The body does not decode (possibly a newer peer's variant).
    #[error("malformed body: {0}")]
    Body(String),
}

impl FrameError {
    /// Whether the connection can go on after this error (the frame was well delimited,
    /// only its body was unknown), as opposed to a broken stream that must be closed.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, FrameError::Body(_))
    }
}

/// `frame` as bytes: the length prefix, the header and the body, serialized in one buffer
/// (no body serialized apart and copied after it, no growth from an empty vector).
pub fn to_bytes(frame: &Frame) -> Vec<u8> {
    match frame {
        Frame::Request(id, r) => frame_bytes(0, *id, r),
        Frame::Response(id, r) => frame_bytes(1, *id, r),
    }
}

/// What [`to_bytes`] makes of `Frame::Request(id, req)`, from a borrowed request: a caller
/// that may send the same request twice (a retry on a new connection) keeps it without
/// cloning it.
pub fn request_bytes(id: u64, req: &Request) -> Vec<u8> {
    frame_bytes(0, id, req)
}

fn frame_bytes<T: Serialize>(kind: u8, id: u64, body: &T) -> Vec<u8> {
    let header = |capacity: usize| {
        let mut v = Vec::with_capacity(capacity);
        v.extend_from_slice(&[0; 4]);
        v.push(PROTOCOL_VERSION);
        v.push(kind);
        v.extend_from_slice(&id.to_be_bytes());
        v
    };
    // Serializing owned strings, byte vectors and integers into a vector cannot fail.
    let mut v = postcard::to_extend(body, header(FRAME_CAPACITY))
        .unwrap_or_else(|_| header(4 + HEADER_LEN));
    let len = (v.len() - 4) as u32;
    v[..4].copy_from_slice(&len.to_be_bytes());
    v
}

/// The first allocation of an encoded frame: a replication or an answer of a small value
/// fits without growing.
const FRAME_CAPACITY: usize = 256;

/// Takes one frame off the front of `buf`: `Ok(None)` when more bytes are needed. On an
/// unrecoverable error the stream is out of sync and the connection must be closed; on a
/// recoverable one the frame was consumed (its id is returned so the caller can answer it).
pub fn decode(
    buf: &mut BytesMut,
    max_frame: usize,
) -> Result<Option<Frame>, (Option<u64>, FrameError)> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max_frame {
        return Err((
            None,
            FrameError::TooLarge {
                len,
                max: max_frame,
            },
        ));
    }
    if len < HEADER_LEN {
        return Err((None, FrameError::Short(len)));
    }
    if buf.len() < 4 + len {
        // Reserve only what the declared (bounded) length needs.
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let frame = buf.split_to(len);
    let (version, kind) = (frame[0], frame[1]);
    let id = u64::from_be_bytes(frame[2..10].try_into().unwrap_or([0; 8]));
    if version != PROTOCOL_VERSION {
        return Err((None, FrameError::Version(version)));
    }
    let body = &frame[HEADER_LEN..];
    let bad = |e: postcard::Error| (Some(id), FrameError::Body(e.to_string()));
    match kind {
        0 => Ok(Some(Frame::Request(
            id,
            postcard::from_bytes(body).map_err(bad)?,
        ))),
        1 => Ok(Some(Frame::Response(
            id,
            postcard::from_bytes(body).map_err(bad)?,
        ))),
        k => Err((Some(id), FrameError::Kind(k))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ring_parameters_ride_in_the_features_word_and_leave_its_bits_alone() {
        let bits = features::with_ring(features::THIS_BUILD, 128, 2);
        assert_eq!(features::ring_params(bits), Some((128, 2)));
        assert_eq!(
            bits & 0xffff_ffff & !features::RING_PARAMS,
            features::THIS_BUILD
        );
        assert_eq!(features::ring_params(features::THIS_BUILD), None);
        assert_eq!(
            features::ring_params(features::with_ring(0, u16::MAX, 9_999)),
            Some((u16::MAX, 255))
        );
        assert_eq!(
            features::ring_params(features::with_ring(0, 64, 3)),
            Some((64, 3))
        );
    }

    #[test]
    fn golden_bytes() {
        let f = Frame::Request(
            7,
            Request::Get {
                namespace: "ns".into(),
                key: b"k".to_vec(),
            },
        );
        // length 16 | version 1 | kind 0 | id 7 | Get (variant 2), "ns", b"k"
        let want = [
            0, 0, 0, 16, 1, 0, 0, 0, 0, 0, 0, 0, 0, 7, 2, 2, b'n', b's', 1, b'k',
        ];
        assert_eq!(to_bytes(&f), want);
        if let Frame::Request(id, r) = &f {
            assert_eq!(
                request_bytes(*id, r),
                want,
                "a borrowed request encodes alike"
            );
        }
        // The version 2 handshake's first frame: Login (variant 8), "a", "b", generation 1,
        // 16 nonce bytes.
        let login = Frame::Request(
            0,
            Request::Login {
                caller: "a".into(),
                callee: "b".into(),
                generation: 1,
                nonce: vec![0; 16],
            },
        );
        let mut want = vec![0, 0, 0, 33, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(&[8, 1, b'a', 1, b'b', 1, 16]);
        want.extend_from_slice(&[0; 16]);
        assert_eq!(to_bytes(&login), want);
        // Versions (request variant 10, response variant 12).
        let v = Frame::Request(
            3,
            Request::Versions {
                namespace: "n".into(),
                keys: vec![serde_bytes::ByteBuf::from(b"k".to_vec())],
            },
        );
        assert_eq!(
            to_bytes(&v),
            [
                0, 0, 0, 16, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 10, 1, b'n', 1, 1, b'k'
            ]
        );
        let a = Frame::Response(3, Response::Versions(vec![Some(5), None]));
        assert_eq!(
            to_bytes(&a),
            [0, 0, 0, 15, 1, 1, 0, 0, 0, 0, 0, 0, 0, 3, 12, 2, 1, 5, 0]
        );
        // The feature exchange (request variant 17, response variant 23), appended.
        let f = Frame::Request(0, Request::Features { bits: 1 });
        assert_eq!(
            to_bytes(&f),
            [0, 0, 0, 12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 17, 1]
        );
        let f = Frame::Response(0, Response::Features { bits: 1 });
        assert_eq!(
            to_bytes(&f),
            [0, 0, 0, 12, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 23, 1]
        );
        // A hand-off batch (request variant 19, response variant 25), appended.
        let h = Frame::Request(
            5,
            Request::Handoff {
                namespace: "n".into(),
                entries: vec![(
                    ByteBuf::from(b"k".to_vec()),
                    WireEntry {
                        value: b"v".to_vec(),
                        version: 3,
                        expires_at_ms: None,
                        stale_until_ms: None,
                        tags: vec![],
                    },
                )],
            },
        );
        assert_eq!(
            to_bytes(&h),
            [
                0, 0, 0, 22, 1, 0, 0, 0, 0, 0, 0, 0, 0, 5, 19, 1, b'n', 1, 1, b'k', 1, b'v', 3, 0,
                0, 0
            ]
        );
        let a = Frame::Response(5, Response::HandedOff { stored: 1 });
        assert_eq!(
            to_bytes(&a),
            [0, 0, 0, 12, 1, 1, 0, 0, 0, 0, 0, 0, 0, 5, 25, 1]
        );
        // A hand-off batch naming the callee's life (request variant 21), appended.
        let f = Frame::Request(
            6,
            Request::HandoffFor {
                namespace: "n".into(),
                generation: 300,
                entries: vec![],
            },
        );
        assert_eq!(
            to_bytes(&f),
            [
                0, 0, 0, 16, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 21, 1, b'n', 172, 2, 0
            ]
        );
        // A push refused for now (response variant 26), appended.
        let d = Frame::Response(5, Response::Deferred { stored: 3 });
        assert_eq!(
            to_bytes(&d),
            [0, 0, 0, 12, 1, 1, 0, 0, 0, 0, 0, 0, 0, 5, 26, 3]
        );
        // A witness's answer with the lives it saw end (response variant 27), appended.
        let e = Frame::Response(
            4,
            Response::StalenessEnded {
                covered_ms: 9,
                newer: vec![Some(8)],
                ended: vec![EndedLife {
                    name: "a".into(),
                    generation: 3,
                    ago_ms: 5,
                }],
            },
        );
        assert_eq!(
            to_bytes(&e),
            [
                0, 0, 0, 20, 1, 1, 0, 0, 0, 0, 0, 0, 0, 4, 27, 9, 1, 1, 8, 1, 1, b'a', 3, 5
            ]
        );
        // A witness's answer with its process's lives (response variant 29), appended.
        let l = Frame::Response(
            4,
            Response::StalenessLives {
                covered_ms: 9,
                newer: vec![None],
                ended: Vec::new(),
                first_generation: 2,
                generation: 3,
            },
        );
        assert_eq!(
            to_bytes(&l),
            [
                0, 0, 0, 17, 1, 1, 0, 0, 0, 0, 0, 0, 0, 4, 29, 9, 1, 0, 0, 2, 3
            ]
        );
        // A witness's answer with the gaps it gave up on (response variant 30), appended.
        let g = Frame::Response(
            4,
            Response::StalenessGaps {
                covered_ms: 1,
                newer: vec![None],
                ended: Vec::new(),
                first_generation: 2,
                generation: 3,
                whole_ms: 9,
                gaps: vec![GivenUp {
                    origin: "a".into(),
                    life: 2,
                    ago_ms: 1,
                }],
            },
        );
        assert_eq!(
            to_bytes(&g),
            [
                0, 0, 0, 23, 1, 1, 0, 0, 0, 0, 0, 0, 0, 4, 30, 1, 1, 0, 0, 2, 3, 9, 1, 1, b'a', 2,
                1
            ]
        );
        // A page of keys (request variant 20, response variant 28), appended.
        let k = Frame::Request(
            6,
            Request::Keys {
                namespace: "n".into(),
                hash: 5,
                after: Some(ByteBuf::from(b"k".to_vec())),
                limit: 2,
            },
        );
        assert_eq!(
            to_bytes(&k),
            [
                0, 0, 0, 18, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 20, 1, b'n', 5, 1, 1, b'k', 2
            ]
        );
        let a = Frame::Response(
            6,
            Response::Keys {
                keys: vec![ByteBuf::from(b"k".to_vec())],
                more: true,
                count: 3,
            },
        );
        assert_eq!(
            to_bytes(&a),
            [
                0, 0, 0, 16, 1, 1, 0, 0, 0, 0, 0, 0, 0, 6, 28, 1, 1, b'k', 1, 3
            ]
        );
        // The staleness check (request variant 18, response variant 24), appended.
        let s = Frame::Request(
            4,
            Request::Staleness {
                namespace: "n".into(),
                copies: vec![CopyRef {
                    key: ByteBuf::from(b"k".to_vec()),
                    version: 7,
                    tags: vec![ByteBuf::from(b"t".to_vec())],
                }],
            },
        );
        assert_eq!(
            to_bytes(&s),
            [
                0, 0, 0, 20, 1, 0, 0, 0, 0, 0, 0, 0, 0, 4, 18, 1, b'n', 1, 1, b'k', 7, 1, 1, b't'
            ]
        );
        let a = Frame::Response(
            4,
            Response::Staleness {
                covered_ms: 9,
                newer: vec![None, Some(8)],
            },
        );
        assert_eq!(
            to_bytes(&a),
            [0, 0, 0, 16, 1, 1, 0, 0, 0, 0, 0, 0, 0, 4, 24, 9, 2, 0, 1, 8]
        );
        let r = Frame::Response(7, Response::Stored { kept_newer: true });
        assert_eq!(
            to_bytes(&r),
            [0, 0, 0, 12, 1, 1, 0, 0, 0, 0, 0, 0, 0, 7, 3, 1]
        );
        // The lease ping and its answer (request variant 15, response variant 20), appended.
        let p = Frame::Request(9, Request::LeasePing);
        assert_eq!(
            to_bytes(&p),
            [0, 0, 0, 11, 1, 0, 0, 0, 0, 0, 0, 0, 0, 9, 15]
        );
        let g = Frame::Response(9, Response::Lease { granted: true });
        assert_eq!(
            to_bytes(&g),
            [0, 0, 0, 12, 1, 1, 0, 0, 0, 0, 0, 0, 0, 9, 20, 1]
        );
        // ... and its answer telling the callee's view (response variant 31), appended.
        let v = Frame::Response(
            9,
            Response::LeaseView {
                granted: true,
                held_ms: 2,
                members: vec!["a".into()],
            },
        );
        assert_eq!(
            to_bytes(&v),
            [
                0, 0, 0, 16, 1, 1, 0, 0, 0, 0, 0, 0, 0, 9, 31, 1, 2, 1, 1, b'a'
            ]
        );
        // A replica's refusal of a change below an invalidation (response variant 21).
        let s = Frame::Response(4, Response::Superseded { version: 300 });
        assert_eq!(
            to_bytes(&s),
            [0, 0, 0, 13, 1, 1, 0, 0, 0, 0, 0, 0, 0, 4, 21, 0xac, 0x02]
        );
        // A multi-key replication (request variant 16) and a refusal of its second key
        // (response variant 22, one refusal of variant 2), appended.
        let m = Frame::Request(
            5,
            Request::ReplicateMulti {
                namespace: "n".into(),
                changes: vec![ReplicaChange {
                    key: ByteBuf::from(b"k".to_vec()),
                    entry: None,
                    version: 7,
                    base: 3,
                    base_tags: vec![ByteBuf::from(b"t".to_vec())],
                }],
            },
        );
        assert_eq!(
            to_bytes(&m),
            [
                0, 0, 0, 22, 1, 0, 0, 0, 0, 0, 0, 0, 0, 5, 16, 1, b'n', 1, 1, b'k', 0, 7, 3, 1, 1,
                b't'
            ]
        );
        let r = Frame::Response(
            5,
            Response::Refused {
                refusals: vec![(1, ReplicaRefusal::Superseded { version: 9 })],
            },
        );
        assert_eq!(
            to_bytes(&r),
            [0, 0, 0, 15, 1, 1, 0, 0, 0, 0, 0, 0, 0, 5, 22, 1, 1, 2, 9]
        );
    }

    #[test]
    fn frames_split_anywhere_reassemble() {
        let frames = vec![
            Frame::Request(1, Request::Ping),
            Frame::Response(1, Response::Pong),
            Frame::Request(
                2,
                Request::Set {
                    namespace: "ns".into(),
                    key: vec![0, 255],
                    entry: WireEntry {
                        value: vec![9; 300],
                        version: 42,
                        expires_at_ms: Some(5),
                        stale_until_ms: None,
                        tags: vec![b"t".to_vec()],
                    },
                },
            ),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(to_bytes).collect();
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut got = Vec::new();
            while let Some(f) = decode(&mut buf, DEFAULT_MAX_FRAME).unwrap() {
                got.push(f);
            }
            buf.extend_from_slice(&bytes[cut..]);
            while let Some(f) = decode(&mut buf, DEFAULT_MAX_FRAME).unwrap() {
                got.push(f);
            }
            assert_eq!(got, frames, "split at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn bad_frames_are_errors_and_oversized_ones_are_refused_before_buffering() {
        let mut huge = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(matches!(
            decode(&mut huge, DEFAULT_MAX_FRAME),
            Err((None, FrameError::TooLarge { .. }))
        ));
        let mut short = BytesMut::from(&[0u8, 0, 0, 3, 1, 0, 0][..]);
        assert!(matches!(
            decode(&mut short, 1024),
            Err((None, FrameError::Short(3)))
        ));
        let mut v2 = BytesMut::from(&to_bytes(&Frame::Request(1, Request::Ping))[..]);
        v2[4] = 2;
        assert!(matches!(
            decode(&mut v2, 1024),
            Err((None, FrameError::Version(2)))
        ));
        // An unknown request variant (from a newer peer) is recoverable, with its id.
        let mut newer = BytesMut::from(&[0u8, 0, 0, 11, 1, 0, 0, 0, 0, 0, 0, 0, 0, 9, 99][..]);
        let (id, err) = decode(&mut newer, 1024).unwrap_err();
        assert_eq!(id, Some(9));
        assert!(err.is_recoverable());
        assert!(newer.is_empty(), "the bad frame was consumed");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..4 {
                match decode(&mut buf, 4096) {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
