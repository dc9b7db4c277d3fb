//! The Redis serialization protocol (RESP2 and RESP3) for Strata: parsing and encoding, with no
//! I/O.
//!
//! - [`parse_request`] reads one client request — a multibulk array of bulk strings, or an
//!   inline command as `redis-cli` and `redis-benchmark`'s `PING_INLINE` send it — and returns
//!   the byte ranges of its arguments, so the server can slice them out of its read buffer
//!   without copying.
//! - [`parse_frame`] reads any RESP2 or RESP3 frame (what a server replies); clients and tests
//!   use it.
//! - [`Frame::encode`] writes a frame; [`Reply`] writes server replies in the protocol version a
//!   connection negotiated (`HELLO 3` switches a connection to RESP3, and RESP3-only types are
//!   downgraded for RESP2 the way Redis does it).
//!
//! Every parser is bounded by [`Limits`]: bulk length, array length, inline line length and
//! nesting depth. Any byte sequence yields a frame, "need more bytes" (`Ok(None)`) or a
//! [`ProtocolError`] — never a panic, and never an allocation larger than the input justifies.

mod encode;
mod frame;
mod parse;
mod request;

pub use encode::{MAX_ERROR_LEN, Protocol, Reply};
pub use frame::Frame;
pub use parse::parse_frame;
pub use request::{Request, parse_request};

/// Redis's own limit on one bulk string (`proto-max-bulk-len`, 512 MiB).
pub const MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// The largest number of elements one array, map, set or push frame may declare.
pub const MAX_ARRAY_LEN: usize = 1024 * 1024;
/// The longest inline command line (Redis's `PROTO_INLINE_MAX_SIZE`, 64 KiB).
pub const MAX_INLINE_LEN: usize = 64 * 1024;
/// The deepest nesting of aggregate frames.
pub const MAX_DEPTH: usize = 32;
/// The most arguments a request of a client that has not authenticated may have (Redis's
/// bound before `AUTH`).
pub const UNAUTHENTICATED_MAX_ARGS: usize = 10;
/// The longest argument of a request of a client that has not authenticated (Redis's bound
/// before `AUTH`, 16 KiB).
pub const UNAUTHENTICATED_MAX_BULK: usize = 16 * 1024;

/// Bounds on what a parser accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string, verbatim string or blob error, in bytes.
    pub max_bulk_len: usize,
    /// Largest number of elements in one aggregate (pairs, for maps).
    pub max_array_len: usize,
    /// Longest inline command or simple line (simple string, error, number), in bytes.
    pub max_inline_len: usize,
    /// Deepest nesting of aggregates.
    pub max_depth: usize,
    /// The sender has not authenticated (a password is required): a request ([`parse_request`])
    /// may have at most [`UNAUTHENTICATED_MAX_ARGS`] arguments of at most
    /// [`UNAUTHENTICATED_MAX_BULK`] bytes, as Redis bounds clients before `AUTH`, so one that
    /// knows no password cannot make the server hold large requests.
    pub unauthenticated: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bulk_len: MAX_BULK_LEN,
            max_array_len: MAX_ARRAY_LEN,
            max_inline_len: MAX_INLINE_LEN,
            max_depth: MAX_DEPTH,
            unauthenticated: false,
        }
    }
}

/// Bytes that are not valid RESP, or that pass a [`Limits`] bound. The message is what Redis
/// itself would send back (after `-ERR `) for the same input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A multibulk header that is not a number, or is out of range.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// A bulk header that is not a number, or is out of range.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// A request of more than [`UNAUTHENTICATED_MAX_ARGS`] arguments before `AUTH`.
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// A request argument longer than [`UNAUTHENTICATED_MAX_BULK`] before `AUTH`.
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    /// A request array element that is not a bulk string.
    #[error("Protocol error: expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    /// An inline command longer than the limit.
    #[error("Protocol error: too big inline request")]
    InlineTooLong,
    /// An inline command with an unclosed quote.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A bulk string not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    MissingCrlf,
    /// A frame type byte the protocol does not define.
    #[error("Protocol error: unknown frame type '{}'", char::from(*.0))]
    UnknownType(u8),
    /// An integer, double, boolean or big number that does not parse.
    #[error("Protocol error: invalid {0}")]
    InvalidValue(&'static str),
    /// Aggregates nested deeper than the limit.
    #[error("Protocol error: nesting deeper than {0}")]
    TooDeep(usize),
}
