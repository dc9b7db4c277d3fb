//! L1's key bytes: a key of up to [`INLINE`] bytes is held in place, a longer one behind a
//! shared [`Bytes`]. A lookup compares the key it is given with the key in quick_cache's
//! table: held in place, that comparison reads the cache line the table entry is already
//! on, where a heap key costs one more cache miss per lookup. Most keys are short
//! (`user:1234:profile`, redis-benchmark's `key:000000012345`).

use std::cmp::Ordering;
use std::ops::Deref;

use bytes::Bytes;

/// The longest key held in place: with the length byte, as large as a [`Bytes`], so a
/// [`KeyBytes`] is no larger than the `Bytes` it replaces.
pub(crate) const INLINE: usize = 23;

/// A key's bytes, in place when short ([`INLINE`]), else shared.
#[derive(Clone)]
pub(crate) enum KeyBytes {
    /// `buf[..len]`.
    Inline { len: u8, buf: [u8; INLINE] },
    /// Longer than [`INLINE`].
    Heap(Bytes),
}

impl KeyBytes {
    /// A copy of `key`: in place when short, else a new allocation of exactly its bytes.
    pub(crate) fn copied(key: &[u8]) -> Self {
        Self::inline(key).unwrap_or_else(|| KeyBytes::Heap(Bytes::copy_from_slice(key)))
    }

    /// `key`, in place when short (the `Bytes` is dropped), else the `Bytes` itself.
    pub(crate) fn from_bytes(key: Bytes) -> Self {
        Self::inline(&key).unwrap_or(KeyBytes::Heap(key))
    }

    fn inline(key: &[u8]) -> Option<Self> {
        (key.len() <= INLINE).then(|| {
            let mut buf = [0u8; INLINE];
            buf[..key.len()].copy_from_slice(key);
            KeyBytes::Inline {
                len: key.len() as u8,
                buf,
            }
        })
    }

    /// The key as a `Bytes`: a copy when held in place.
    pub(crate) fn to_bytes(&self) -> Bytes {
        match self {
            KeyBytes::Inline { .. } => Bytes::copy_from_slice(self),
            KeyBytes::Heap(b) => b.clone(),
        }
    }

    /// The heap a key of `len` bytes takes once held this way.
    pub(crate) const fn heap_bytes(len: usize) -> u64 {
        if len <= INLINE {
            0
        } else {
            crate::memory::heap_bytes(len)
        }
    }
}

impl Deref for KeyBytes {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, buf } => &buf[..*len as usize],
            KeyBytes::Heap(b) => b,
        }
    }
}

impl PartialEq for KeyBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for KeyBytes {}

impl PartialOrd for KeyBytes {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Byte order, as `[u8]` and `Bytes` compare: where a key is held does not change it.
impl Ord for KeyBytes {
    fn cmp(&self, other: &Self) -> Ordering {
        (**self).cmp(&**other)
    }
}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&Bytes::copy_from_slice(self), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_no_larger_than_the_bytes_it_replaces() {
        assert_eq!(
            std::mem::size_of::<KeyBytes>(),
            std::mem::size_of::<Bytes>()
        );
    }

    #[test]
    fn keeps_every_length_and_orders_as_bytes() {
        let keys: Vec<Vec<u8>> = (0..=INLINE + 2)
            .flat_map(|n| [vec![b'a'; n], vec![0xff; n], vec![0; n]])
            .collect();
        for a in &keys {
            let k = KeyBytes::copied(a);
            assert_eq!(&*k, &a[..]);
            assert_eq!(&*KeyBytes::from_bytes(Bytes::copy_from_slice(a)), &a[..]);
            assert_eq!(k.to_bytes(), Bytes::copy_from_slice(a));
            assert_eq!(matches!(k, KeyBytes::Inline { .. }), a.len() <= INLINE);
            for b in &keys {
                let kb = KeyBytes::copied(b);
                assert_eq!(k.cmp(&kb), a.cmp(b), "{a:?} against {b:?}");
                assert_eq!(k == kb, a == b);
            }
        }
    }

    #[test]
    fn a_key_held_in_place_takes_no_heap() {
        assert_eq!(KeyBytes::heap_bytes(INLINE), 0);
        assert_eq!(
            KeyBytes::heap_bytes(INLINE + 1),
            crate::memory::heap_bytes(INLINE + 1)
        );
    }
}
