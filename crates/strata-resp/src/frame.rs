//! The RESP2/RESP3 frame model.

use bytes::{BufMut, Bytes, BytesMut};

/// One RESP frame. RESP2 has the first six kinds (and [`Frame::NullArray`]); the rest are
/// RESP3.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`: a line without CR or LF.
    Simple(Bytes),
    /// `-ERR message`: a line without CR or LF.
    Error(Bytes),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nfoo`: binary-safe bytes.
    Bulk(Bytes),
    /// RESP2's `$-1` or RESP3's `_`: no value.
    Null,
    /// RESP2's `*-1`: no array.
    NullArray,
    /// `*N`: N frames.
    Array(Vec<Frame>),
    /// RESP3 `,1.5`.
    Double(f64),
    /// RESP3 `#t` / `#f`.
    Boolean(bool),
    /// RESP3 `(123…`: an integer of any size, as its decimal digits.
    BigNumber(Bytes),
    /// RESP3 `=N\r\ntxt:…`: text with a three-byte format.
    Verbatim {
        /// The format, such as `txt` or `mkd`.
        format: [u8; 3],
        /// The text.
        text: Bytes,
    },
    /// RESP3 `!N`: a binary-safe error.
    BlobError(Bytes),
    /// RESP3 `%N`: N key/value pairs.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~N`: N frames, unordered.
    Set(Vec<Frame>),
    /// RESP3 `>N`: an out-of-band message.
    Push(Vec<Frame>),
    /// RESP3 `|N`: attributes, which precede the frame they describe.
    Attribute(Vec<(Frame, Frame)>),
}

impl Frame {
    /// A bulk string frame from anything that converts to bytes.
    pub fn bulk(b: impl Into<Bytes>) -> Self {
        Frame::Bulk(b.into())
    }

    /// A simple string frame.
    pub fn simple(s: &'static str) -> Self {
        Frame::Simple(Bytes::from_static(s.as_bytes()))
    }

    /// The frame's bytes as a bulk or simple string, if it is one.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Frame::Simple(b) | Frame::Bulk(b) => Some(b),
            Frame::Verbatim { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Writes the frame in its own type (RESP3 kinds as RESP3). Simple strings and errors are
    /// written as given: the caller keeps CR and LF out of them.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Simple(s) => line(out, b'+', s),
            Frame::Error(s) => line(out, b'-', s),
            Frame::Integer(n) => number(out, b':', *n),
            Frame::Bulk(b) => blob(out, b'$', b),
            Frame::Null => out.put_slice(b"_\r\n"),
            Frame::NullArray => out.put_slice(b"*-1\r\n"),
            Frame::Array(items) => aggregate(out, b'*', items),
            Frame::Double(d) => {
                out.put_u8(b',');
                out.put_slice(format_double(*d).as_bytes());
                out.put_slice(b"\r\n");
            }
            Frame::Boolean(b) => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Frame::BigNumber(n) => line(out, b'(', n),
            Frame::Verbatim { format, text } => {
                number(out, b'=', (text.len() + 4) as i64);
                out.put_slice(format);
                out.put_u8(b':');
                out.put_slice(text);
                out.put_slice(b"\r\n");
            }
            Frame::BlobError(b) => blob(out, b'!', b),
            Frame::Map(pairs) => pairs_of(out, b'%', pairs),
            Frame::Set(items) => aggregate(out, b'~', items),
            Frame::Push(items) => aggregate(out, b'>', items),
            Frame::Attribute(pairs) => pairs_of(out, b'|', pairs),
        }
    }

    /// The frame's encoding as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

/// How Redis writes a double: `inf`, `-inf`, `nan`, or the shortest text that reads back as
/// the same value.
pub(crate) fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".to_owned()
    } else if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        format!("{d}")
    }
}

fn line(out: &mut BytesMut, tag: u8, s: &[u8]) {
    out.reserve(s.len() + 3);
    out.put_u8(tag);
    out.put_slice(s);
    out.put_slice(b"\r\n");
}

pub(crate) fn number(out: &mut BytesMut, tag: u8, n: i64) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    out.reserve(digits.len() + 3);
    out.put_u8(tag);
    out.put_slice(digits.as_bytes());
    out.put_slice(b"\r\n");
}

pub(crate) fn blob(out: &mut BytesMut, tag: u8, b: &[u8]) {
    number(out, tag, b.len() as i64);
    out.reserve(b.len() + 2);
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

fn aggregate(out: &mut BytesMut, tag: u8, items: &[Frame]) {
    number(out, tag, items.len() as i64);
    for item in items {
        item.encode(out);
    }
}

fn pairs_of(out: &mut BytesMut, tag: u8, pairs: &[(Frame, Frame)]) {
    number(out, tag, pairs.len() as i64);
    for (k, v) in pairs {
        k.encode(out);
        v.encode(out);
    }
}
