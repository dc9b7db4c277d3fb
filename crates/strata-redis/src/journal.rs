//! The outage queue on disk: the work a node owes Redis (keys written or invalidated while
//! the circuit was open, patterns, tags, namespace flushes), appended to a file beside L3 as
//! it is queued, so that a node killed during an outage (`kill -9`, a crash) still unlinks
//! those keys in Redis when it comes back, before it proves L3 — without it, the node's
//! proof dropped its newer L3 copy and Redis's value from before the outage was served
//! again over an acknowledged write.
//!
//! The file is a header ([`MAGIC`]) and records, each
//! `kind u8 | namespace length u16 | namespace | data length u32 | data | xxh3 u64` (lengths
//! and checksum little-endian; the checksum covers the record's bytes before it). A record
//! is appended before the write it stands for is acknowledged; a record cut short by a
//! crash was never acknowledged, and reading stops there. The file is rewritten (a new file
//! renamed over it) when the queue is applied. [`decode`] reads untrusted bytes: every
//! length is bounded and checked before use (fuzz target `redis_journal`).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's first bytes (format version 1).
pub const MAGIC: &[u8; 8] = b"SRBQ1\0\0\n";

/// Longest namespace name a record may hold.
pub const MAX_NAMESPACE: usize = 1024;

/// Longest key, pattern or tag a record may hold (the largest key a node accepts).
pub const MAX_DATA: usize = 1 << 20;

/// One unit of queued work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owed {
    /// A key to unlink.
    Key(String, Vec<u8>),
    /// A pattern to invalidate.
    Pattern(String, Vec<u8>),
    /// A tag to invalidate.
    Tag(String, Vec<u8>),
    /// A namespace to flush.
    Flush(String),
}

impl Owed {
    fn parts(&self) -> (u8, &str, &[u8]) {
        match self {
            Owed::Key(ns, k) => (1, ns, k),
            Owed::Pattern(ns, p) => (2, ns, p),
            Owed::Tag(ns, t) => (3, ns, t),
            Owed::Flush(ns) => (4, ns, &[]),
        }
    }
}

/// `what` as one record; `None` when a length is past its bound (never queued).
pub fn encode(what: &Owed) -> Option<Vec<u8>> {
    let (kind, ns, data) = what.parts();
    if ns.len() > MAX_NAMESPACE || data.len() > MAX_DATA {
        return None;
    }
    let mut out = Vec::with_capacity(1 + 2 + ns.len() + 4 + data.len() + 8);
    out.push(kind);
    out.extend_from_slice(&(ns.len() as u16).to_le_bytes());
    out.extend_from_slice(ns.as_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Some(out)
}

/// What a file's bytes hold.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// The records read, in order.
    pub owed: Vec<Owed>,
    /// Bytes after the last whole record (a record cut short by a crash, or damage).
    pub unread: usize,
    /// Whether the header was missing or wrong (nothing read).
    pub bad_header: bool,
}

/// Reads a journal's bytes: every whole, intact record up to the first that is not.
pub fn decode(bytes: &[u8]) -> Decoded {
    let Some(mut rest) = bytes.strip_prefix(&MAGIC[..]) else {
        return Decoded {
            owed: Vec::new(),
            unread: bytes.len(),
            bad_header: !bytes.is_empty(),
        };
    };
    let mut owed = Vec::new();
    while let Some((what, len)) = record(rest) {
        owed.push(what);
        rest = &rest[len..];
    }
    Decoded {
        owed,
        unread: rest.len(),
        bad_header: false,
    }
}

/// The record at the start of `b` and its length.
fn record(b: &[u8]) -> Option<(Owed, usize)> {
    let kind = *b.first()?;
    let ns_len = usize::from(u16::from_le_bytes(b.get(1..3)?.try_into().ok()?));
    if ns_len > MAX_NAMESPACE {
        return None;
    }
    let ns_end = 3 + ns_len;
    let ns = std::str::from_utf8(b.get(3..ns_end)?).ok()?.to_owned();
    let data_len = u32::from_le_bytes(b.get(ns_end..ns_end + 4)?.try_into().ok()?) as usize;
    if data_len > MAX_DATA {
        return None;
    }
    let data_end = ns_end + 4 + data_len;
    let data = b.get(ns_end + 4..data_end)?.to_vec();
    let sum = u64::from_le_bytes(b.get(data_end..data_end + 8)?.try_into().ok()?);
    if xxhash_rust::xxh3::xxh3_64(&b[..data_end]) != sum {
        return None;
    }
    let what = match kind {
        1 => Owed::Key(ns, data),
        2 => Owed::Pattern(ns, data),
        3 => Owed::Tag(ns, data),
        4 if data.is_empty() => Owed::Flush(ns),
        _ => return None,
    };
    Some((what, data_end + 8))
}

/// The journal file, open for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
}

impl Journal {
    /// Opens (or creates) the journal at `path`; the work it holds from before.
    pub fn open(path: &Path) -> std::io::Result<(Self, Decoded)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let before = match std::fs::read(path) {
            Ok(b) => decode(&b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Decoded::default(),
            Err(e) => return Err(e),
        };
        // Rewritten from what was read: a damaged tail is not appended after.
        let journal = Self::write_new(path, &before.owed)?;
        Ok((journal, before))
    }

    /// A journal at `path` holding exactly `owed` (written aside, then renamed over).
    fn write_new(path: &Path, owed: &[Owed]) -> std::io::Result<Self> {
        let tmp = path.with_extension("tmp");
        let mut bytes = MAGIC.to_vec();
        for what in owed {
            if let Some(r) = encode(what) {
                bytes.extend_from_slice(&r);
            }
        }
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, path)?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Appends one record (before the write it stands for is acknowledged).
    pub fn append(&mut self, what: &Owed) -> std::io::Result<()> {
        match encode(what) {
            Some(r) => self.file.write_all(&r),
            None => Ok(()),
        }
    }

    /// Makes the file hold exactly `owed` (what is still queued once the rest was applied).
    pub fn rewrite(&mut self, owed: &[Owed]) -> std::io::Result<()> {
        *self = Self::write_new(&self.path, owed)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn all() -> Vec<Owed> {
        vec![
            Owed::Key("db0".into(), b"k\x00\xff".to_vec()),
            Owed::Pattern("app".into(), b"user:*".to_vec()),
            Owed::Tag("app".into(), b"t".to_vec()),
            Owed::Flush("db3".into()),
            Owed::Key(String::new(), Vec::new()),
        ]
    }

    #[test]
    fn records_read_back_and_a_cut_tail_is_left_unread() {
        let mut bytes = MAGIC.to_vec();
        for w in all() {
            bytes.extend_from_slice(&encode(&w).unwrap());
        }
        let d = decode(&bytes);
        assert_eq!(d.owed, all());
        assert_eq!(d.unread, 0);
        // Cut anywhere inside the last record: the ones before it are read.
        let last = encode(all().last().unwrap()).unwrap().len();
        for cut in 1..last {
            let d = decode(&bytes[..bytes.len() - cut]);
            assert_eq!(d.owed, all()[..4]);
            assert_eq!(d.unread, last - cut);
        }
        // A flipped byte fails its checksum.
        let mut bad = bytes.clone();
        bad[MAGIC.len() + 4] ^= 1;
        assert!(decode(&bad).owed.is_empty());
        assert!(decode(b"not a journal").bad_header);
        assert_eq!(decode(b""), Decoded::default());
    }

    #[test]
    fn lengths_past_their_bounds_are_never_written_nor_read() {
        assert!(encode(&Owed::Key("n".into(), vec![0; MAX_DATA + 1])).is_none());
        assert!(encode(&Owed::Flush("n".repeat(MAX_NAMESPACE + 1))).is_none());
        // A length field claiming 4 GiB: read as a cut record, nothing allocated.
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 1, 0, b'n', 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decode(&bytes).owed, Vec::new());
    }

    proptest::proptest! {
        /// Any bytes after the header: read without a panic, and what is read re-encodes
        /// to the bytes it came from (the fuzz target `redis_journal` runs the same check).
        #[test]
        fn any_bytes_read_back_as_what_they_hold(
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            cut in 0usize..64,
        ) {
            let mut bytes = MAGIC.to_vec();
            for w in all() {
                bytes.extend_from_slice(&encode(&w).unwrap());
            }
            bytes.truncate(bytes.len().saturating_sub(cut).max(MAGIC.len()));
            bytes.extend_from_slice(&tail);
            let read = decode(&bytes);
            let mut again = MAGIC.to_vec();
            for w in &read.owed {
                again.extend_from_slice(&encode(w).unwrap());
            }
            proptest::prop_assert_eq!(&again[..], &bytes[..bytes.len() - read.unread]);
        }
    }

    #[test]
    fn a_reopened_journal_holds_what_was_appended_and_rewrites_drop_the_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("pending");
        let (mut j, before) = Journal::open(&path).unwrap();
        assert!(before.owed.is_empty());
        for w in all() {
            j.append(&w).unwrap();
        }
        drop(j);
        // A torn append after them.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[1, 3]).unwrap();
        drop(f);
        let (mut j, before) = Journal::open(&path).unwrap();
        assert_eq!(before.owed, all());
        assert_eq!(before.unread, 2);
        j.append(&Owed::Flush("x".into())).unwrap();
        let (mut j, before) = Journal::open(&path).unwrap();
        assert_eq!(before.owed.len(), 6, "the torn bytes were dropped at open");
        j.rewrite(&[Owed::Flush("y".into())]).unwrap();
        drop(j);
        let (_, before) = Journal::open(&path).unwrap();
        assert_eq!(before.owed, vec![Owed::Flush("y".into())]);
    }
}
