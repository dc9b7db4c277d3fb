//! Writing server replies in the protocol version a connection speaks.

use bytes::{BufMut, BytesMut};

use crate::frame::{blob, format_double, number};

/// The protocol version of a connection: RESP2 until the client sends `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2, every client's default.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

impl Protocol {
    /// The number `HELLO` reports.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// Longest error message [`Reply::error`] writes.
pub const MAX_ERROR_LEN: usize = 4096;

/// A reply buffer for one connection. RESP3-only types are written the way Redis downgrades
/// them for RESP2: null as `$-1`, a map as a flat array, a set as an array, a double as a bulk
/// string, a boolean as `:1`/`:0`, verbatim text as a bulk string.
#[derive(Debug)]
pub struct Reply {
    /// The encoded replies, ready to write to the socket.
    pub buf: BytesMut,
    /// The protocol the replies are written in.
    pub proto: Protocol,
    /// Bulk strings that would take `buf` past this many bytes are not written, and
    /// [`Reply::overflowed`] turns true: one command cannot make the server hold an
    /// unbounded reply (Redis's `client-output-buffer-limit`).
    limit: usize,
    overflowed: bool,
}

impl Default for Reply {
    fn default() -> Self {
        Reply::new(Protocol::default())
    }
}

impl Reply {
    /// An empty buffer for a connection speaking `proto`.
    pub fn new(proto: Protocol) -> Self {
        Self {
            buf: BytesMut::with_capacity(16 * 1024),
            proto,
            limit: usize::MAX,
            overflowed: false,
        }
    }

    /// Bounds the buffer: a bulk string that would take it past `limit` bytes is dropped and
    /// marks the reply as overflowed.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Whether a bulk string was dropped for the limit since [`Reply::clear_overflow`]: the
    /// caller must discard the reply in progress (it is incomplete) and close the client.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Forgets an overflow.
    pub fn clear_overflow(&mut self) {
        self.overflowed = false;
    }

    /// `+s`, with CR and LF replaced by spaces (a status may carry a script's data:
    /// `redis.status_reply(ARGV[1])` must not forge replies), as Redis does.
    pub fn simple(&mut self, s: &str) {
        self.buf.reserve(s.len() + 3);
        self.buf.put_u8(b'+');
        if s.bytes().any(|b| b == b'\r' || b == b'\n') {
            for b in s.bytes() {
                self.buf
                    .put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
            }
        } else {
            self.buf.put_slice(s.as_bytes());
        }
        self.buf.put_slice(b"\r\n");
    }

    /// `+OK`.
    pub fn ok(&mut self) {
        self.buf.put_slice(b"+OK\r\n");
    }

    /// `-msg`, with CR and LF replaced by spaces so that a message can never break framing.
    /// `msg` starts with its error code (`ERR`, `WRONGTYPE`, `NOAUTH`, …).
    /// Messages longer than [`MAX_ERROR_LEN`] are cut there (they echo client input).
    pub fn error(&mut self, msg: &str) {
        let msg = &msg.as_bytes()[..msg.len().min(MAX_ERROR_LEN)];
        self.buf.reserve(msg.len() + 3);
        self.buf.put_u8(b'-');
        for &b in msg {
            self.buf
                .put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.buf.put_slice(b"\r\n");
    }

    /// `:n`.
    pub fn integer(&mut self, n: i64) {
        number(&mut self.buf, b':', n);
    }

    /// `$len` and the bytes.
    pub fn bulk(&mut self, b: &[u8]) {
        if self.buf.len().saturating_add(b.len()) > self.limit {
            self.overflowed = true;
            return;
        }
        blob(&mut self.buf, b'$', b);
    }

    /// No value: `$-1` in RESP2, `_` in RESP3.
    pub fn null(&mut self) {
        match self.proto {
            Protocol::Resp2 => self.buf.put_slice(b"$-1\r\n"),
            Protocol::Resp3 => self.buf.put_slice(b"_\r\n"),
        }
    }

    /// No array: `*-1` in RESP2, `_` in RESP3.
    pub fn null_array(&mut self) {
        match self.proto {
            Protocol::Resp2 => self.buf.put_slice(b"*-1\r\n"),
            Protocol::Resp3 => self.buf.put_slice(b"_\r\n"),
        }
    }

    /// The header of an array of `n` elements; the caller writes them next.
    pub fn array(&mut self, n: usize) {
        number(&mut self.buf, b'*', n as i64);
    }

    /// The header of an out-of-band push of `n` elements (RESP3 `>`; an array in RESP2):
    /// pub/sub messages and (un)subscribe confirmations.
    pub fn push(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => number(&mut self.buf, b'*', n as i64),
            Protocol::Resp3 => number(&mut self.buf, b'>', n as i64),
        }
    }

    /// The header of a map of `n` pairs (an array of `2n` in RESP2).
    pub fn map(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => number(&mut self.buf, b'*', (2 * n) as i64),
            Protocol::Resp3 => number(&mut self.buf, b'%', n as i64),
        }
    }

    /// The header of a set of `n` elements (an array in RESP2).
    pub fn set(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => number(&mut self.buf, b'*', n as i64),
            Protocol::Resp3 => number(&mut self.buf, b'~', n as i64),
        }
    }

    /// A double (`,d` in RESP3, a bulk string in RESP2).
    pub fn double(&mut self, d: f64) {
        let text = format_double(d);
        match self.proto {
            Protocol::Resp2 => self.bulk(text.as_bytes()),
            Protocol::Resp3 => {
                self.buf.put_u8(b',');
                self.buf.put_slice(text.as_bytes());
                self.buf.put_slice(b"\r\n");
            }
        }
    }

    /// A boolean (`#t`/`#f` in RESP3, `:1`/`:0` in RESP2).
    pub fn boolean(&mut self, b: bool) {
        match self.proto {
            Protocol::Resp2 => self.integer(i64::from(b)),
            Protocol::Resp3 => self.buf.put_slice(if b { b"#t\r\n" } else { b"#f\r\n" }),
        }
    }

    /// Text for people (`=N\r\ntxt:…` in RESP3, a bulk string in RESP2), as `INFO` replies.
    pub fn verbatim(&mut self, text: &[u8]) {
        match self.proto {
            Protocol::Resp2 => self.bulk(text),
            Protocol::Resp3 if self.buf.len().saturating_add(text.len()) > self.limit => {
                self.overflowed = true;
            }
            Protocol::Resp3 => {
                number(&mut self.buf, b'=', text.len() as i64 + 4);
                self.buf.put_slice(b"txt:");
                self.buf.put_slice(text);
                self.buf.put_slice(b"\r\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_downgrades_resp3_types() {
        let mut r = Reply::new(Protocol::Resp2);
        r.null();
        r.map(1);
        r.double(1.5);
        r.boolean(true);
        r.error("ERR bad\r\nthing");
        r.simple("OK\r\n$6\r\nforged");
        assert_eq!(
            &r.buf[..],
            b"$-1\r\n*2\r\n$3\r\n1.5\r\n:1\r\n-ERR bad  thing\r\n+OK  $6  forged\r\n"
        );
        let mut r = Reply::new(Protocol::Resp3);
        r.null();
        r.map(1);
        r.double(f64::INFINITY);
        r.boolean(false);
        assert_eq!(&r.buf[..], b"_\r\n%1\r\n,inf\r\n#f\r\n");
    }
}
