//! The on-disk record: one RocksDB value per entry.
//!
//! ```text
//! byte 0        format version (RECORD_FORMAT_V1 = 1)
//! bytes 1..n-8  postcard(RecordBody): version, expires_at_ms, stale_until_ms, tags,
//!               compression, raw_len, payload (the value, compressed or not)
//! bytes n-8..n  xxh3_64 of bytes 0..n-8, little-endian
//! ```
//!
//! `docs/protocol.md` documents it byte by byte; `golden_bytes_are_stable` pins it. Decoding
//! never panics and never allocates more than the bounds below allow: a record that fails
//! any check is `RecordError`, which the tier treats as corruption (a miss, deleted, counted).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strata_core::{Compression, Entry, Tags, Version};
use xxhash_rust::xxh3::xxh3_64;

/// The only format written today. A reader refuses versions it does not know.
pub const RECORD_FORMAT_V1: u8 = 1;
/// Largest value a record may declare (Redis's `proto-max-bulk-len` default).
pub const MAX_RECORD_VALUE_BYTES: u32 = 512 * 1024 * 1024;
/// Most tags a record may carry.
pub const MAX_RECORD_TAGS: usize = 1024;
/// Values shorter than this are stored uncompressed: compression would not pay.
pub const MIN_COMPRESS_BYTES: usize = 128;
const CHECKSUM_BYTES: usize = 8;

const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_LZ4: u8 = 1;
const COMPRESSION_ZSTD: u8 = 2;
const ZSTD_LEVEL: i32 = 3;

#[derive(Serialize, Deserialize)]
struct RecordBody<'a> {
    version: u64,
    expires_at_ms: Option<u64>,
    stale_until_ms: Option<u64>,
    #[serde(borrow)]
    tags: Vec<&'a [u8]>,
    compression: u8,
    raw_len: u32,
    #[serde(borrow)]
    payload: &'a [u8],
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than a version byte and a checksum.
    #[error("record too short ({0} bytes)")]
    TooShort(usize),
    /// A format version this build does not know.
    #[error("unknown record format version {0}")]
    UnknownFormat(u8),
    /// The checksum does not match the bytes.
    #[error("checksum mismatch")]
    Checksum,
    /// The body does not decode.
    #[error("malformed record body: {0}")]
    Malformed(String),
    /// A declared size is beyond the bounds.
    #[error("record declares {what} = {value}, above the limit")]
    OutOfBounds {
        /// Which size.
        what: &'static str,
        /// The declared size.
        value: u64,
    },
}

/// The header fields, decoded without touching the payload (for the compaction filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// The entry's version.
    pub version: Version,
    /// Expiry, if any.
    pub expires_at_ms: Option<u64>,
    /// End of the stale grace, if any.
    pub stale_until_ms: Option<u64>,
}

impl RecordHeader {
    /// Whether the record may be served at `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| now_ms < at)
    }

    /// Whether the record is worth keeping at `now_ms`: fresh or inside its grace.
    pub fn is_retained(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| now_ms < at)
            || self.stale_until_ms.is_some_and(|until| now_ms < until)
    }
}

/// Encodes `entry`, compressing its value as `compression` says when that pays.
pub fn encode(entry: &Entry, compression: Compression) -> Result<Vec<u8>, RecordError> {
    if entry.value.len() > MAX_RECORD_VALUE_BYTES as usize || entry.tags.len() > MAX_RECORD_TAGS {
        return Err(RecordError::OutOfBounds {
            what: "value or tags",
            value: entry.value.len() as u64,
        });
    }
    let raw = entry.value.as_ref();
    let compressed: Option<(u8, Vec<u8>)> = if raw.len() < MIN_COMPRESS_BYTES {
        None
    } else {
        match compression {
            Compression::None => None,
            Compression::Lz4 => Some((COMPRESSION_LZ4, lz4_flex::compress(raw))),
            Compression::Zstd => zstd::bulk::compress(raw, ZSTD_LEVEL)
                .ok()
                .map(|c| (COMPRESSION_ZSTD, c)),
        }
    };
    // Keep the compressed form only when it is smaller.
    let (kind, payload): (u8, &[u8]) = match &compressed {
        Some((kind, c)) if c.len() < raw.len() => (*kind, c),
        _ => (COMPRESSION_NONE, raw),
    };
    let body = RecordBody {
        version: entry.version.as_u64(),
        expires_at_ms: entry.expires_at_ms,
        stale_until_ms: entry.stale_until_ms,
        tags: entry.tags.iter().map(|t| t.as_ref()).collect(),
        compression: kind,
        raw_len: raw.len() as u32,
        payload,
    };
    let mut out = Vec::with_capacity(payload.len() + 64);
    out.push(RECORD_FORMAT_V1);
    let mut out =
        postcard::to_extend(&body, out).map_err(|e| RecordError::Malformed(e.to_string()))?;
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    debug_assert!(
        decode(&out).is_ok(),
        "a record must decode right after encoding"
    );
    Ok(out)
}

/// Checks format and checksum and parses the body (borrowing from `bytes`).
fn parse(bytes: &[u8]) -> Result<RecordBody<'_>, RecordError> {
    if bytes.len() < 1 + CHECKSUM_BYTES {
        return Err(RecordError::TooShort(bytes.len()));
    }
    if bytes[0] != RECORD_FORMAT_V1 {
        return Err(RecordError::UnknownFormat(bytes[0]));
    }
    let (data, sum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    let mut sum_bytes = [0u8; CHECKSUM_BYTES];
    sum_bytes.copy_from_slice(sum);
    if xxh3_64(data) != u64::from_le_bytes(sum_bytes) {
        return Err(RecordError::Checksum);
    }
    let body: RecordBody<'_> =
        postcard::from_bytes(&data[1..]).map_err(|e| RecordError::Malformed(e.to_string()))?;
    if body.raw_len > MAX_RECORD_VALUE_BYTES {
        return Err(RecordError::OutOfBounds {
            what: "raw_len",
            value: u64::from(body.raw_len),
        });
    }
    if body.tags.len() > MAX_RECORD_TAGS {
        return Err(RecordError::OutOfBounds {
            what: "tags",
            value: body.tags.len() as u64,
        });
    }
    Ok(body)
}

/// Decodes only the header (no decompression).
pub fn decode_header(bytes: &[u8]) -> Result<RecordHeader, RecordError> {
    let body = parse(bytes)?;
    Ok(RecordHeader {
        version: Version::from_u64(body.version),
        expires_at_ms: body.expires_at_ms,
        stale_until_ms: body.stale_until_ms,
    })
}

/// Decodes a whole entry, decompressing the value.
pub fn decode(bytes: &[u8]) -> Result<Entry, RecordError> {
    let body = parse(bytes)?;
    let raw_len = body.raw_len as usize;
    let value = match body.compression {
        COMPRESSION_NONE => {
            if body.payload.len() != raw_len {
                return Err(RecordError::Malformed("raw length mismatch".into()));
            }
            Bytes::copy_from_slice(body.payload)
        }
        COMPRESSION_LZ4 => {
            let v = lz4_flex::decompress(body.payload, raw_len)
                .map_err(|e| RecordError::Malformed(format!("lz4: {e}")))?;
            Bytes::from(v)
        }
        COMPRESSION_ZSTD => {
            let v = zstd::bulk::decompress(body.payload, raw_len)
                .map_err(|e| RecordError::Malformed(format!("zstd: {e}")))?;
            Bytes::from(v)
        }
        other => {
            return Err(RecordError::Malformed(format!(
                "unknown compression {other}"
            )));
        }
    };
    if value.len() != raw_len {
        return Err(RecordError::Malformed(
            "decompressed length mismatch".into(),
        ));
    }
    Ok(Entry {
        value,
        version: Version::from_u64(body.version),
        expires_at_ms: body.expires_at_ms,
        stale_until_ms: body.stale_until_ms,
        tags: Tags::new(body.tags.into_iter().map(Bytes::copy_from_slice)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Entry {
        Entry {
            value: Bytes::from_static(b"2.68"),
            version: Version::from_parts(1_767_225_600_000, 7),
            expires_at_ms: Some(1_767_229_200_000),
            stale_until_ms: None,
            tags: Tags::new(["eu"]),
        }
    }

    /// Fails if the format changes by accident. A deliberate change bumps
    /// `RECORD_FORMAT_V1`, keeps a decoder for the old format, and updates docs/protocol.md.
    #[test]
    fn golden_bytes_are_stable() {
        let bytes = encode(&sample(), Compression::Lz4).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "01878080c0aadbddcd010180adc6b8b7330001026575000404322e3638f8029fecb8b886ab"
        );
        assert_eq!(decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn compression_round_trips_and_only_when_it_pays() {
        let mut e = sample();
        e.value = Bytes::from(vec![b'x'; 10_000]);
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let bytes = encode(&e, c).unwrap();
            assert_eq!(decode(&bytes).unwrap(), e, "{c:?}");
            if c != Compression::None {
                assert!(
                    bytes.len() < 1_000,
                    "{c:?} did not compress: {}",
                    bytes.len()
                );
            }
        }
        // Incompressible bytes are stored raw even under lz4.
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        e.value = Bytes::from(noise);
        let bytes = encode(&e, Compression::Lz4).unwrap();
        assert!(bytes.len() < 4096 + 64);
        assert_eq!(decode(&bytes).unwrap(), e);
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let bytes = encode(&sample(), Compression::Lz4).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5a;
            assert!(decode(&bad).is_err(), "flip at {i} not detected");
        }
        assert_eq!(decode(&bytes[..3]), Err(RecordError::TooShort(3)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let _ = decode_header(&bytes);
        }

        #[test]
        fn arbitrary_bytes_with_a_valid_checksum_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = vec![RECORD_FORMAT_V1];
            bytes.extend_from_slice(&body);
            let sum = xxh3_64(&bytes);
            bytes.extend_from_slice(&sum.to_le_bytes());
            let _ = decode(&bytes);
        }

        #[test]
        fn entries_round_trip(value in proptest::collection::vec(any::<u8>(), 0..2048),
                              version in any::<u64>(),
                              expires in proptest::option::of(any::<u64>()),
                              tags in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 0..4),
                              zstd in any::<bool>()) {
            let e = Entry {
                value: Bytes::from(value),
                version: Version::from_u64(version),
                expires_at_ms: expires,
                stale_until_ms: None,
                tags: Tags::new(tags),
            };
            let c = if zstd { Compression::Zstd } else { Compression::Lz4 };
            prop_assert_eq!(decode(&encode(&e, c).unwrap()).unwrap(), e);
        }
    }
}
