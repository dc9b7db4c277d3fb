//! The cluster secret: every gossip packet (and every RPC connection's handshake) carries an
//! HMAC-SHA256 tag, truncated to 16 bytes, over its bytes. A packet without a valid tag is
//! dropped before any decoder sees it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the tag in front of every sealed packet.
pub const TAG_LEN: usize = 16;
/// Bytes of an untruncated HMAC-SHA256 tag (the peer handshake's proofs).
pub const FULL_TAG_LEN: usize = 32;

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Shorter than a tag.
    #[error("packet too short to carry an authentication tag")]
    Short,
    /// The tag does not match: another cluster, a forged or a corrupted packet.
    #[error("bad authentication tag")]
    BadTag,
}

/// Seals and opens packets with the cluster secret.
#[derive(Clone)]
pub struct Authenticator {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator { .. }")
    }
}

impl Authenticator {
    /// An authenticator for `secret` (any length; HMAC hashes long keys).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            // HMAC takes keys of any length.
            mac: Hmac::<Sha256>::new_from_slice(secret)
                .unwrap_or_else(|_| unreachable!("HMAC accepts any key length")),
        }
    }

    fn tag(&self, payload: &[u8]) -> [u8; TAG_LEN] {
        let mut m = self.mac.clone();
        m.update(payload);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&full[..TAG_LEN]);
        out
    }

    /// `tag ‖ payload`.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(TAG_LEN + payload.len());
        out.extend_from_slice(&self.tag(payload));
        out.extend_from_slice(payload);
        out
    }

    /// The full HMAC-SHA256 of `msg` (the peer handshake's proofs).
    pub fn mac(&self, msg: &[u8]) -> [u8; FULL_TAG_LEN] {
        let mut m = self.mac.clone();
        m.update(msg);
        m.finalize().into_bytes().into()
    }

    /// Whether `tag` is [`Authenticator::mac`] of `msg`, compared in constant time (a tag
    /// of another length is refused).
    pub fn verify(&self, msg: &[u8], tag: &[u8]) -> bool {
        let mut m = self.mac.clone();
        m.update(msg);
        m.verify_slice(tag).is_ok()
    }

    /// The payload of a sealed packet, if its tag is right (compared in constant time).
    pub fn open<'a>(&self, packet: &'a [u8]) -> Result<&'a [u8], AuthError> {
        if packet.len() < TAG_LEN {
            return Err(AuthError::Short);
        }
        let (tag, payload) = packet.split_at(TAG_LEN);
        let mut m = self.mac.clone();
        m.update(payload);
        m.verify_truncated_left(tag)
            .map_err(|_| AuthError::BadTag)?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_secret_opens() {
        let a = Authenticator::new(b"cluster secret");
        let sealed = a.seal(b"hello");
        assert_eq!(a.open(&sealed), Ok(&b"hello"[..]));
        assert_eq!(
            Authenticator::new(b"other").open(&sealed),
            Err(AuthError::BadTag)
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(a.open(&flipped), Err(AuthError::BadTag));
        assert_eq!(a.open(&sealed[..5]), Err(AuthError::Short));
        assert_eq!(a.open(&a.seal(b"")), Ok(&b""[..]));
    }
}
