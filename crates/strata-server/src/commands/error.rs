//! Error replies, typed: what a command answers when it refuses, in Redis's words.

use std::borrow::Cow;
use std::fmt;

/// An error reply. Redis's generic `ERR` replies are built from their message
/// ([`ReplyError::err`]) and the most common have a variant of their own; a reply with
/// another code (`NOPERM`, `TRYAGAIN`, `CROSSSLOT`, `NOSCRIPT`, `BUSY`, …) is built with
/// [`ReplyError::coded`]; a whole error line from a layer below (the cache, a script, the
/// ACL) converts from its `String` as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// `ERR syntax error`.
    Syntax,
    /// `ERR value is not an integer or out of range`.
    NotInteger,
    /// `ERR <message>`.
    Err(Cow<'static, str>),
    /// A whole error line, its code first.
    Line(String),
}

impl ReplyError {
    /// `ERR <msg>`.
    pub fn err(msg: impl Into<Cow<'static, str>>) -> Self {
        ReplyError::Err(msg.into())
    }

    /// `<code> <msg>`: an error with a code of its own.
    pub fn coded(code: &str, msg: impl fmt::Display) -> Self {
        ReplyError::Line(format!("{code} {msg}"))
    }
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Syntax => f.write_str("ERR syntax error"),
            ReplyError::NotInteger => f.write_str("ERR value is not an integer or out of range"),
            ReplyError::Err(m) => write!(f, "ERR {m}"),
            ReplyError::Line(l) => f.write_str(l),
        }
    }
}

/// A whole error line from a layer below (its code first).
impl From<String> for ReplyError {
    fn from(line: String) -> Self {
        ReplyError::Line(line)
    }
}

impl From<ReplyError> for String {
    fn from(e: ReplyError) -> Self {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_as_redis_words_them() {
        assert_eq!(ReplyError::Syntax.to_string(), "ERR syntax error");
        assert_eq!(
            ReplyError::NotInteger.to_string(),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            ReplyError::err("no such key").to_string(),
            "ERR no such key"
        );
        assert_eq!(
            ReplyError::coded("NOSCRIPT", "No matching script.").to_string(),
            "NOSCRIPT No matching script."
        );
    }
}
