//! Entries (what every layer stores) and the size limits every write is checked against.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::CacheError;
use crate::time::UnixMillis;
use crate::version::Version;

/// A cached value with the metadata every layer keeps beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The cached bytes.
    pub value: Bytes,
    /// The version stamped by the writer's hybrid logical clock; a layer never replaces an
    /// entry with an older version.
    pub version: Version,
    /// When the entry stops being served; `None` never expires.
    pub expires_at_ms: Option<UnixMillis>,
    /// Until when an expired entry may still be served by `get_or_load` because its loader
    /// failed (the stale-if-error grace). Never later than the namespace's `max_ttl` allows.
    /// Plain reads never see an expired entry.
    pub stale_until_ms: Option<UnixMillis>,
    /// Tags for `invalidate_tag`.
    pub tags: Tags,
}

impl Entry {
    /// An entry with no expiry, no tags and no stale grace.
    pub fn new(value: Bytes, version: Version) -> Self {
        Self {
            value,
            version,
            expires_at_ms: None,
            stale_until_ms: None,
            tags: Tags::none(),
        }
    }

    /// Whether the entry may be served at `now_ms`. An entry expires *at* `expires_at_ms`.
    #[inline]
    pub fn is_fresh(&self, now_ms: UnixMillis) -> bool {
        self.expires_at_ms.is_none_or(|at| now_ms < at)
    }

    /// Whether the entry is still worth keeping at `now_ms`: fresh, or inside its stale grace.
    #[inline]
    pub fn is_retained(&self, now_ms: UnixMillis) -> bool {
        self.is_fresh(now_ms) || self.stale_until_ms.is_some_and(|until| now_ms < until)
    }

    /// Remaining lifetime at `now_ms`, `None` for an entry that never expires.
    pub fn ttl_remaining_ms(&self, now_ms: UnixMillis) -> Option<u64> {
        self.expires_at_ms.map(|at| at.saturating_sub(now_ms))
    }

    /// Bytes of payload: value plus tags (the key is counted by the layer that stores it).
    pub fn payload_bytes(&self) -> usize {
        self.value.len() + self.tags.byte_len()
    }
}

/// An entry's tags. Most entries have none, which costs no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(Option<Arc<[Bytes]>>);

impl Tags {
    /// No tags.
    pub const fn none() -> Self {
        Tags(None)
    }

    /// These tags, deduplicated, in their given order.
    pub fn new<I, T>(tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<Bytes>,
    {
        let mut out: Vec<Bytes> = Vec::new();
        for t in tags {
            let t = t.into();
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if out.is_empty() {
            Tags(None)
        } else {
            Tags(Some(out.into()))
        }
    }

    /// The same tags in allocations of their own (none of them a slice of a larger buffer).
    pub fn compacted(&self) -> Self {
        match &self.0 {
            None => Tags(None),
            Some(t) => Tags(Some(t.iter().map(|b| Bytes::copy_from_slice(b)).collect())),
        }
    }

    /// Whether `tag` is one of them.
    pub fn contains(&self, tag: &[u8]) -> bool {
        self.iter().any(|t| t.as_ref() == tag)
    }

    /// The tags.
    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.0.as_deref().unwrap_or(&[]).iter()
    }

    /// How many tags.
    pub fn len(&self) -> usize {
        self.0.as_deref().map_or(0, <[Bytes]>::len)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Total bytes of all tags.
    pub fn byte_len(&self) -> usize {
        self.iter().map(Bytes::len).sum()
    }
}

/// Size limits checked before anything is written, so that one oversized request cannot take
/// a node's memory. Each has a documented default; the config may lower or raise them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in bytes (default 8 KiB; memcached allows 250, Redis 512 MiB).
    pub max_key_bytes: usize,
    /// Largest value, in bytes (default 16 MiB).
    pub max_value_bytes: usize,
    /// Most tags on one entry (default 32).
    pub max_tags_per_entry: usize,
    /// Longest tag, in bytes (default 256).
    pub max_tag_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 8 * 1024,
            max_value_bytes: 16 * 1024 * 1024,
            max_tags_per_entry: 32,
            max_tag_bytes: 256,
        }
    }
}

impl Limits {
    /// Checks a key's length.
    #[inline]
    pub fn check_key(&self, key: &[u8]) -> Result<(), CacheError> {
        if key.len() > self.max_key_bytes {
            return Err(CacheError::KeyTooLarge {
                len: key.len(),
                max: self.max_key_bytes,
            });
        }
        Ok(())
    }

    /// Checks a whole write: key, value and tags.
    pub fn check_write(&self, key: &[u8], value: &[u8], tags: &Tags) -> Result<(), CacheError> {
        self.check_key(key)?;
        if value.len() > self.max_value_bytes {
            return Err(CacheError::ValueTooLarge {
                len: value.len(),
                max: self.max_value_bytes,
            });
        }
        if tags.len() > self.max_tags_per_entry {
            return Err(CacheError::TooManyTags {
                count: tags.len(),
                max: self.max_tags_per_entry,
            });
        }
        if let Some(t) = tags.iter().find(|t| t.len() > self.max_tag_bytes) {
            return Err(CacheError::TagTooLarge {
                len: t.len(),
                max: self.max_tag_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_exclusive_and_stale_grace_extends_retention_only() {
        let mut e = Entry::new(Bytes::from_static(b"v"), Version::from_parts(1, 0));
        assert!(e.is_fresh(u64::MAX));
        e.expires_at_ms = Some(100);
        assert!(e.is_fresh(99));
        assert!(!e.is_fresh(100));
        assert!(!e.is_retained(100));
        e.stale_until_ms = Some(150);
        assert!(!e.is_fresh(120));
        assert!(e.is_retained(120));
        assert!(!e.is_retained(150));
        assert_eq!(e.ttl_remaining_ms(40), Some(60));
    }

    #[test]
    fn tags_dedupe_and_empty_is_none() {
        let t = Tags::new(["a", "b", "a"]);
        assert_eq!(t.len(), 2);
        assert!(t.contains(b"a") && !t.contains(b"c"));
        assert!(Tags::new(Vec::<Bytes>::new()).is_empty());
        assert_eq!(t.byte_len(), 2);
    }

    #[test]
    fn limits_name_what_is_too_large() {
        let l = Limits {
            max_key_bytes: 4,
            max_value_bytes: 8,
            max_tags_per_entry: 1,
            max_tag_bytes: 2,
        };
        assert!(
            l.check_write(b"abcd", b"12345678", &Tags::new(["ab"]))
                .is_ok()
        );
        assert!(matches!(
            l.check_write(b"abcde", b"", &Tags::none()),
            Err(CacheError::KeyTooLarge { len: 5, max: 4 })
        ));
        assert!(matches!(
            l.check_write(b"k", b"123456789", &Tags::none()),
            Err(CacheError::ValueTooLarge { len: 9, max: 8 })
        ));
        assert!(matches!(
            l.check_write(b"k", b"", &Tags::new(["a", "b"])),
            Err(CacheError::TooManyTags { count: 2, max: 1 })
        ));
        assert!(matches!(
            l.check_write(b"k", b"", &Tags::new(["abc"])),
            Err(CacheError::TagTooLarge { len: 3, max: 2 })
        ));
    }
}
