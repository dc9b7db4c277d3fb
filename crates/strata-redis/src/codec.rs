//! How entries and invalidation messages look in Redis. Both are read back from a server
//! other processes also write to, so both decoders treat their input as untrusted: bounded
//! sizes, no panics, a clear error (fuzzed by `fuzz/fuzz_targets/redis_codec.rs`).
//!
//! An entry is one Redis string:
//!
//! ```text
//! byte 0        format (1)
//! bytes 1..17   version, 16 lowercase hex digits (so a Lua script can compare versions as
//!               strings, with GETRANGE key 1 16)
//! bytes 17..21  length of the metadata, u32 big-endian (at most MAX_META_BYTES)
//! then          metadata: postcard { expires_at_ms: Option<u64>, stale_until_ms: Option<u64>,
//!               tags: Vec<bytes> }
//! then          the value, to the end of the string
//! ```
//!
//! An invalidation message is `format (1) ‖ postcard(Message)`; `Op` is append-only.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strata_core::{Entry, Tags, Version};

/// The format byte of entries and messages written by this version.
pub const FORMAT: u8 = 1;
/// Bytes before the metadata: format, version, metadata length.
pub const HEADER_BYTES: usize = 1 + 16 + 4;
/// Largest metadata accepted (tags are bounded far below this by the node's limits).
pub const MAX_META_BYTES: usize = 1 << 20;
/// Largest invalidation message accepted: one about a key (or pattern, or tag) of the
/// largest size a node accepts (`limits.max_key_bytes` goes up to 1 MiB), with room for its
/// namespace and framing. (It was 64 KiB, and a longer key's changes never reached the
/// other nodes.)
pub const MAX_MESSAGE_BYTES: usize = (1 << 20) + 1024;

/// Why stored bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Shorter than its header says.
    #[error("truncated: {0}")]
    Truncated(&'static str),
    /// A format this version does not read.
    #[error("unknown format byte {0}")]
    UnknownFormat(u8),
    /// The version field is not 16 hex digits.
    #[error("bad version field")]
    BadVersion,
    /// Bigger than the bound.
    #[error("{what} of {len} bytes exceeds {max}")]
    TooLarge {
        /// Which part.
        what: &'static str,
        /// Declared length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The postcard body is malformed.
    #[error("malformed body: {0}")]
    Body(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    expires_at_ms: Option<u64>,
    stale_until_ms: Option<u64>,
    tags: Vec<Vec<u8>>,
}

/// The version and metadata of a stored entry, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The entry's version.
    pub version: Version,
    /// When it expires.
    pub expires_at_ms: Option<u64>,
    /// Until when it may be served stale.
    pub stale_until_ms: Option<u64>,
    /// Its tags.
    pub tags: Tags,
    /// Where the value starts.
    pub value_offset: usize,
}

/// The version field as written: 16 lowercase hex digits.
pub fn version_hex(v: Version) -> [u8; 16] {
    let mut out = [0u8; 16];
    let hex = b"0123456789abcdef";
    let raw = v.as_u64();
    for (i, b) in out.iter_mut().enumerate() {
        *b = hex[((raw >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

fn parse_version(hex: &[u8]) -> Result<Version, CodecError> {
    let mut raw = 0u64;
    for &b in hex {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return Err(CodecError::BadVersion),
        };
        raw = (raw << 4) | u64::from(d);
    }
    Ok(Version::from_u64(raw))
}

/// The version of an entry from its first 17 bytes (`GETRANGE key 0 16`): `None` when they
/// are not this format's header (missing key, foreign or corrupt value).
pub fn version_of_prefix(prefix: &[u8]) -> Option<Version> {
    if prefix.len() < 17 || prefix[0] != FORMAT {
        return None;
    }
    parse_version(&prefix[1..17]).ok()
}

/// Encodes `entry` as one Redis string.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let meta = Meta {
        expires_at_ms: entry.expires_at_ms,
        stale_until_ms: entry.stale_until_ms,
        tags: entry.tags.iter().map(|t| t.to_vec()).collect(),
    };
    // Serializing plain integers and byte vectors into a Vec cannot fail.
    let meta = postcard::to_allocvec(&meta).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_BYTES + meta.len() + entry.value.len());
    out.push(FORMAT);
    out.extend_from_slice(&version_hex(entry.version));
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&entry.value);
    out
}

/// How many leading bytes [`decode_header`] needs, when `prefix` is a prefix of an entry:
/// `Ok(n)` with `n <= prefix.len()` means the header is all there.
pub fn header_len(prefix: &[u8]) -> Result<usize, CodecError> {
    if prefix.len() < HEADER_BYTES {
        return Ok(HEADER_BYTES);
    }
    if prefix[0] != FORMAT {
        return Err(CodecError::UnknownFormat(prefix[0]));
    }
    let meta_len = u32::from_be_bytes([prefix[17], prefix[18], prefix[19], prefix[20]]) as usize;
    if meta_len > MAX_META_BYTES {
        return Err(CodecError::TooLarge {
            what: "metadata",
            len: meta_len,
            max: MAX_META_BYTES,
        });
    }
    Ok(HEADER_BYTES + meta_len)
}

/// Decodes the header of an entry from (a prefix of) its bytes.
pub fn decode_header(bytes: &[u8]) -> Result<Header, CodecError> {
    if bytes.is_empty() {
        return Err(CodecError::Truncated("empty"));
    }
    if bytes[0] != FORMAT {
        return Err(CodecError::UnknownFormat(bytes[0]));
    }
    let need = header_len(bytes)?;
    if bytes.len() < need {
        return Err(CodecError::Truncated("header"));
    }
    let version = parse_version(&bytes[1..17])?;
    let meta: Meta = postcard::from_bytes(&bytes[HEADER_BYTES..need])
        .map_err(|e| CodecError::Body(e.to_string()))?;
    Ok(Header {
        version,
        expires_at_ms: meta.expires_at_ms,
        stale_until_ms: meta.stale_until_ms,
        tags: Tags::new(meta.tags),
        value_offset: need,
    })
}

/// Decodes a whole entry; the value shares `bytes`.
pub fn decode_entry(bytes: Bytes) -> Result<Entry, CodecError> {
    let h = decode_header(&bytes)?;
    Ok(Entry {
        value: bytes.slice(h.value_offset..),
        version: h.version,
        expires_at_ms: h.expires_at_ms,
        stale_until_ms: h.stale_until_ms,
        tags: h.tags,
    })
}

/// What an invalidation message says happened. Append-only: new kinds go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `key` was set at `version`: copies older than that are stale.
    Set {
        /// Namespace.
        namespace: String,
        /// Key.
        key: Vec<u8>,
        /// The new version (packed HLC stamp).
        version: u64,
    },
    /// `key` was removed.
    Remove {
        /// Namespace.
        namespace: String,
        /// Key.
        key: Vec<u8>,
    },
    /// The keys matching `pattern` were removed.
    Pattern {
        /// Namespace.
        namespace: String,
        /// Redis-style glob.
        pattern: Vec<u8>,
    },
    /// The entries tagged `tag` were removed.
    Tag {
        /// Namespace.
        namespace: String,
        /// The tag.
        tag: Vec<u8>,
    },
    /// The namespace was emptied.
    Flush {
        /// Namespace.
        namespace: String,
    },
}

impl Op {
    /// The namespace the operation is about.
    pub fn namespace(&self) -> &str {
        match self {
            Op::Set { namespace, .. }
            | Op::Remove { namespace, .. }
            | Op::Pattern { namespace, .. }
            | Op::Tag { namespace, .. }
            | Op::Flush { namespace } => namespace,
        }
    }
}

/// One invalidation message on the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sending node's random id; a node ignores its own messages.
    pub origin: u64,
    /// What happened.
    pub op: Op,
}

/// Encodes a message.
pub fn encode_message(m: &Message) -> Vec<u8> {
    let mut out = vec![FORMAT];
    // Strings, byte vectors and integers always serialize.
    out.extend_from_slice(&postcard::to_allocvec(m).unwrap_or_default());
    out
}

/// Decodes a message, checking its size and its namespace name.
pub fn decode_message(bytes: &[u8]) -> Result<Message, CodecError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge {
            what: "message",
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    match bytes.first() {
        None => Err(CodecError::Truncated("empty")),
        Some(&FORMAT) => {
            let m: Message =
                postcard::from_bytes(&bytes[1..]).map_err(|e| CodecError::Body(e.to_string()))?;
            strata_core::namespace::validate_name(m.op.namespace())
                .map_err(|e| CodecError::Body(e.to_string()))?;
            Ok(m)
        }
        Some(&other) => Err(CodecError::UnknownFormat(other)),
    }
}

#[cfg(test)]
mod version_prefix_tests {
    use super::*;

    #[test]
    fn the_version_reads_from_the_first_17_bytes_only() {
        let e = Entry::new(Bytes::from_static(b"value"), Version::from_u64(0xabc));
        let bytes = encode_entry(&e);
        assert_eq!(
            version_of_prefix(&bytes[..17]),
            Some(Version::from_u64(0xabc))
        );
        assert_eq!(version_of_prefix(&bytes[..16]), None);
        assert_eq!(version_of_prefix(b""), None);
        let mut foreign = bytes[..17].to_vec();
        foreign[0] = b'x';
        assert_eq!(version_of_prefix(&foreign), None);
        foreign[0] = FORMAT;
        foreign[5] = b'Z';
        assert_eq!(version_of_prefix(&foreign), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Entry {
        Entry {
            value: Bytes::from_static(b"hello"),
            version: Version::from_parts(1_767_225_600_000, 7),
            expires_at_ms: Some(1_767_225_660_000),
            stale_until_ms: None,
            tags: Tags::new(["t"]),
        }
    }

    #[test]
    fn golden_bytes() {
        let bytes = encode_entry(&sample());
        let mut want = vec![1u8];
        want.extend_from_slice(b"019b76daa8000007");
        // postcard: Some(1767225660000) as varint, None, one tag "t".
        let meta = [
            1u8, 0xe0, 0xa4, 0xee, 0xb6, 0xb7, 0x33, 0x00, 0x01, 0x01, b't',
        ];
        want.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        want.extend_from_slice(&meta);
        want.extend_from_slice(b"hello");
        assert_eq!(bytes, want);
        assert_eq!(decode_entry(Bytes::from(bytes)).unwrap(), sample());
        let msg = Message {
            origin: 5,
            op: Op::Remove {
                namespace: "ns".into(),
                key: b"k".to_vec(),
            },
        };
        assert_eq!(encode_message(&msg), [1, 5, 1, 2, b'n', b's', 1, b'k']);
    }

    #[test]
    fn hex_versions_sort_like_versions() {
        let a = version_hex(Version::from_u64(0x00ff));
        let b = version_hex(Version::from_u64(0x0100));
        assert!(a < b);
        assert_eq!(parse_version(&b).unwrap(), Version::from_u64(0x100));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(
            decode_entry(Bytes::new()),
            Err(CodecError::Truncated("empty"))
        );
        assert_eq!(
            decode_entry(Bytes::from_static(b"plain redis value")),
            Err(CodecError::UnknownFormat(b'p'))
        );
        let mut b = encode_entry(&sample());
        b[3] = b'z';
        assert_eq!(decode_entry(Bytes::from(b)), Err(CodecError::BadVersion));
        let mut b = encode_entry(&sample());
        b[17..21].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_entry(Bytes::from(b)),
            Err(CodecError::TooLarge { .. })
        ));
        let b = encode_entry(&sample());
        assert_eq!(
            decode_entry(Bytes::copy_from_slice(&b[..22])),
            Err(CodecError::Truncated("header"))
        );
        let bad_ns = Message {
            origin: 1,
            op: Op::Flush {
                namespace: "no spaces".into(),
            },
        };
        assert!(matches!(
            decode_message(&encode_message(&bad_ns)),
            Err(CodecError::Body(_))
        ));
        assert!(decode_message(&[2, 0]).is_err());
    }

    proptest! {
        #[test]
        fn entries_round_trip(
            value in proptest::collection::vec(any::<u8>(), 0..512),
            version in any::<u64>(),
            expires in proptest::option::of(any::<u64>()),
            stale in proptest::option::of(any::<u64>()),
            tags in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 0..4),
        ) {
            let e = Entry {
                value: Bytes::from(value),
                version: Version::from_u64(version),
                expires_at_ms: expires,
                stale_until_ms: stale,
                tags: Tags::new(tags),
            };
            let bytes = encode_entry(&e);
            prop_assert_eq!(header_len(&bytes).unwrap(), decode_header(&bytes).unwrap().value_offset);
            prop_assert_eq!(decode_entry(Bytes::from(bytes)).unwrap(), e);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_entry(Bytes::from(bytes.clone()));
            let _ = decode_message(&bytes);
        }
    }
}
