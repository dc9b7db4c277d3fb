//! Namespaces isolate keys and carry a policy: default and maximum TTL, share of L1, whether
//! L3 is used.

use std::sync::Arc;
use std::time::Duration;

use crate::error::CacheError;

/// Longest namespace name, in bytes. Names travel in every peer frame and disk key, so they are
/// kept short.
pub const MAX_NAMESPACE_BYTES: usize = 64;

/// Most namespaces one node holds (configured ones plus those created by first use). Each costs
/// a small table entry and, with an `l1_share`, a dedicated L1 pool; the bound stops a client
/// from creating namespaces without limit.
pub const MAX_NAMESPACES: usize = 1024;

/// A validated namespace name: 1 to [`MAX_NAMESPACE_BYTES`] bytes of `[A-Za-z0-9_.-]`.
///
/// Cheap to clone (an `Arc<str>`). `:` is excluded because bridges and disk keys use it as a
/// separator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(Arc<str>);

impl Namespace {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, CacheError> {
        validate_name(name)?;
        Ok(Namespace(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Namespace {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Checks a namespace name without allocating.
pub fn validate_name(name: &str) -> Result<(), CacheError> {
    let reason = if name.is_empty() {
        Some("a namespace name must not be empty")
    } else if name.len() > MAX_NAMESPACE_BYTES {
        Some("a namespace name is at most 64 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        Some("a namespace name may hold only ASCII letters, digits, '_', '-' and '.'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CacheError::InvalidNamespace {
            // Echo at most 64 characters: the name comes from a client, and an error must not
            // grow with what was sent.
            name: name.chars().take(64).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// How a namespace's values are compressed where they are stored as bytes (L3, bridges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Stored as given.
    None,
    /// LZ4: fast, moderate ratio; the default.
    #[default]
    Lz4,
    /// Zstandard (level 3): slower, better ratio, for large, cold values.
    Zstd,
}

/// The rules one namespace's entries follow.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespacePolicy {
    /// The TTL of a `set` that names none. `None` means such entries do not expire (allowed
    /// only when `max_ttl` is `None` too).
    pub default_ttl: Option<Duration>,
    /// The longest TTL a `set` may ask for; a longer one fails with
    /// [`CacheError::PolicyViolation`] and is never clamped, because a silently shortened TTL
    /// hides a licence breach from the caller that asked for it.
    pub max_ttl: Option<Duration>,
    /// The fraction of L1's byte capacity reserved for this namespace, in a pool of its own, so
    /// that a busy namespace cannot evict a small critical one. `None` shares the common pool.
    pub l1_share: Option<f64>,
    /// Whether this namespace's entries are written to the local disk tier (L3).
    pub use_l3: bool,
    /// Compression of stored values (L3 and bridges; L1 keeps values as given).
    pub compression: Compression,
}

impl Default for NamespacePolicy {
    /// One hour by default, 24 hours at most (the seeds' licence rule), shared L1, L3 on.
    fn default() -> Self {
        Self {
            default_ttl: Some(Duration::from_secs(3600)),
            max_ttl: Some(Duration::from_secs(86_400)),
            l1_share: None,
            use_l3: true,
            compression: Compression::Lz4,
        }
    }
}

impl NamespacePolicy {
    /// A policy with no TTL limits at all (Redis's behaviour: keys live until deleted).
    pub fn unbounded() -> Self {
        Self {
            default_ttl: None,
            max_ttl: None,
            l1_share: None,
            use_l3: true,
            compression: Compression::Lz4,
        }
    }

    /// Checks the policy's own consistency; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.default_ttl.is_some_and(|t| t.is_zero()) {
            return Err("default_ttl must be greater than 0".into());
        }
        if self.max_ttl.is_some_and(|t| t.is_zero()) {
            return Err("max_ttl must be greater than 0".into());
        }
        match (self.default_ttl, self.max_ttl) {
            (Some(d), Some(m)) if d > m => {
                return Err(format!(
                    "default_ttl ({}s) must not exceed max_ttl ({}s)",
                    d.as_secs(),
                    m.as_secs()
                ));
            }
            (None, Some(_)) => {
                return Err(
                    "default_ttl must be set when max_ttl is set (an entry without a TTL would outlive max_ttl)"
                        .into(),
                );
            }
            _ => {}
        }
        if let Some(share) = self.l1_share
            && !(share > 0.0 && share <= 1.0)
        {
            return Err(format!("l1_share must be in (0, 1], got {share}"));
        }
        Ok(())
    }

    /// The TTL a write ends up with: the requested one or the default, checked against
    /// `max_ttl`. `Ok(None)` means no expiry.
    pub fn effective_ttl(
        &self,
        namespace: &str,
        requested: Option<Duration>,
    ) -> Result<Option<Duration>, CacheError> {
        let ttl = requested.or(self.default_ttl);
        if ttl.is_some_and(|t| t.as_millis() == 0) {
            return Err(CacheError::InvalidTtl {
                namespace: namespace.to_owned(),
            });
        }
        if let Some(allowed) = self.max_ttl {
            match ttl {
                Some(t) if t <= allowed => {}
                // `validate` makes `None` impossible here when `max_ttl` is set; refuse anyway
                // rather than store an entry that never expires.
                other => {
                    return Err(CacheError::PolicyViolation {
                        namespace: namespace.to_owned(),
                        requested: other.unwrap_or(Duration::MAX),
                        allowed,
                    });
                }
            }
        }
        Ok(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(Namespace::new("emission_factors").is_ok());
        assert!(Namespace::new("a.b-c_9").is_ok());
        for bad in ["", "has space", "colon:sep", "é", &"x".repeat(65)] {
            assert!(
                matches!(
                    Namespace::new(bad),
                    Err(CacheError::InvalidNamespace { .. })
                ),
                "{bad:?} accepted"
            );
        }
        assert!(Namespace::new(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn ttl_above_max_is_a_violation_carrying_both_values() {
        let p = NamespacePolicy::default();
        let err = p
            .effective_ttl("ns", Some(Duration::from_secs(86_401)))
            .unwrap_err();
        match err {
            CacheError::PolicyViolation {
                requested, allowed, ..
            } => {
                assert_eq!(requested, Duration::from_secs(86_401));
                assert_eq!(allowed, Duration::from_secs(86_400));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            p.effective_ttl("ns", Some(Duration::from_secs(86_400)))
                .unwrap(),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            p.effective_ttl("ns", None).unwrap(),
            Some(Duration::from_secs(3600))
        );
        assert!(matches!(
            p.effective_ttl("ns", Some(Duration::ZERO)),
            Err(CacheError::InvalidTtl { .. })
        ));
        assert_eq!(
            NamespacePolicy::unbounded()
                .effective_ttl("ns", None)
                .unwrap(),
            None
        );
    }

    #[test]
    fn inconsistent_policies_are_refused_naming_the_field() {
        let mut p = NamespacePolicy {
            default_ttl: Some(Duration::from_secs(10)),
            max_ttl: Some(Duration::from_secs(5)),
            ..NamespacePolicy::default()
        };
        assert!(p.validate().unwrap_err().contains("default_ttl"));
        p.default_ttl = None;
        assert!(p.validate().unwrap_err().contains("default_ttl"));
        p = NamespacePolicy {
            l1_share: Some(1.5),
            ..NamespacePolicy::default()
        };
        assert!(p.validate().unwrap_err().contains("l1_share"));
        assert!(NamespacePolicy::default().validate().is_ok());
    }
}
