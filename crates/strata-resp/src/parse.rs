//! Parsing any RESP2/RESP3 frame.

use bytes::Bytes;

use crate::{Frame, Limits, ProtocolError};

/// Finds the CRLF-terminated line starting at `pos`. `Ok(None)`: no line end yet, and the line
/// so far is within `max` bytes.
pub(crate) fn read_line(
    buf: &[u8],
    pos: usize,
    max: usize,
    too_long: ProtocolError,
) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let window_end = buf.len().min(pos.saturating_add(max).saturating_add(2));
    let window = &buf[pos.min(window_end)..window_end];
    match memchr::memchr(b'\n', window) {
        Some(i) => {
            if i == 0 || window[i - 1] != b'\r' {
                return Err(ProtocolError::InvalidValue(
                    "line terminator (expected CRLF)",
                ));
            }
            Ok(Some((&window[..i - 1], pos + i + 1)))
        }
        None if window.len() >= max.saturating_add(2) => Err(too_long),
        None => Ok(None),
    }
}

/// A strict decimal integer: an optional `-`, then digits, no sign on zero-padding tricks
/// beyond what Redis accepts, fitting an `i64`.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        n = if neg {
            n.checked_mul(10)?.checked_sub(d)?
        } else {
            n.checked_mul(10)?.checked_add(d)?
        };
    }
    Some(n)
}

/// Parses one frame from the start of `buf`: `Ok(Some((frame, consumed)))`, `Ok(None)` when
/// more bytes are needed, or an error for bytes that can never become a valid frame.
pub fn parse_frame(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, ProtocolError> {
    parse_at(buf, 0, limits, 0)
}

type Step = Result<Option<(Frame, usize)>, ProtocolError>;

fn parse_at(buf: &[u8], pos: usize, limits: &Limits, depth: usize) -> Step {
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let line_err = ProtocolError::InvalidValue("line: too long");
    let Some((line, next)) = read_line(buf, pos + 1, limits.max_inline_len, line_err)? else {
        return Ok(None);
    };
    let frame = match tag {
        b'+' => Frame::Simple(Bytes::copy_from_slice(line)),
        b'-' => Frame::Error(Bytes::copy_from_slice(line)),
        b':' => Frame::Integer(parse_i64(line).ok_or(ProtocolError::InvalidValue("integer"))?),
        b'(' => {
            let digits = line
                .strip_prefix(b"-")
                .or(line.strip_prefix(b"+"))
                .unwrap_or(line);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(ProtocolError::InvalidValue("big number"));
            }
            Frame::BigNumber(Bytes::copy_from_slice(line))
        }
        b',' => Frame::Double(parse_double(line)?),
        b'#' => match line {
            b"t" => Frame::Boolean(true),
            b"f" => Frame::Boolean(false),
            _ => return Err(ProtocolError::InvalidValue("boolean")),
        },
        b'_' => {
            if !line.is_empty() {
                return Err(ProtocolError::InvalidValue("null"));
            }
            Frame::Null
        }
        b'$' | b'=' | b'!' => {
            let len = parse_i64(line).ok_or(ProtocolError::InvalidBulkLength)?;
            if len == -1 && tag == b'$' {
                return Ok(Some((Frame::Null, next)));
            }
            let len = usize::try_from(len).map_err(|_| ProtocolError::InvalidBulkLength)?;
            if len > limits.max_bulk_len {
                return Err(ProtocolError::InvalidBulkLength);
            }
            let Some(body) = take_blob(buf, next, len)? else {
                return Ok(None);
            };
            let end = next + len + 2;
            let frame = match tag {
                b'$' => Frame::Bulk(Bytes::copy_from_slice(body)),
                b'!' => Frame::BlobError(Bytes::copy_from_slice(body)),
                _ => {
                    if body.len() < 4 || body[3] != b':' {
                        return Err(ProtocolError::InvalidValue("verbatim string format"));
                    }
                    Frame::Verbatim {
                        format: [body[0], body[1], body[2]],
                        text: Bytes::copy_from_slice(&body[4..]),
                    }
                }
            };
            return Ok(Some((frame, end)));
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = parse_i64(line).ok_or(ProtocolError::InvalidMultibulkLength)?;
            if n == -1 && tag == b'*' {
                return Ok(Some((Frame::NullArray, next)));
            }
            let n = usize::try_from(n).map_err(|_| ProtocolError::InvalidMultibulkLength)?;
            if n > limits.max_array_len {
                return Err(ProtocolError::InvalidMultibulkLength);
            }
            if depth >= limits.max_depth {
                return Err(ProtocolError::TooDeep(limits.max_depth));
            }
            let pairs = matches!(tag, b'%' | b'|');
            let count = if pairs { n.saturating_mul(2) } else { n };
            // Each element takes at least three bytes, so the input bounds the allocation.
            let mut items = Vec::with_capacity(count.min((buf.len() - next) / 3 + 1));
            let mut at = next;
            for _ in 0..count {
                match parse_at(buf, at, limits, depth + 1)? {
                    Some((item, after)) => {
                        items.push(item);
                        at = after;
                    }
                    None => return Ok(None),
                }
            }
            let frame = match tag {
                b'*' => Frame::Array(items),
                b'~' => Frame::Set(items),
                b'>' => Frame::Push(items),
                _ => {
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    if tag == b'%' {
                        Frame::Map(pairs)
                    } else {
                        Frame::Attribute(pairs)
                    }
                }
            };
            return Ok(Some((frame, at)));
        }
        other => return Err(ProtocolError::UnknownType(other)),
    };
    Ok(Some((frame, next)))
}

/// The `len` bytes at `pos` followed by CRLF.
pub(crate) fn take_blob(
    buf: &[u8],
    pos: usize,
    len: usize,
) -> Result<Option<&[u8]>, ProtocolError> {
    let end = pos.saturating_add(len);
    if buf.len() < end.saturating_add(2) {
        // Reject a wrong terminator as soon as its first byte is there.
        if buf.len() > end && buf[end] != b'\r' {
            return Err(ProtocolError::MissingCrlf);
        }
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(ProtocolError::MissingCrlf);
    }
    Ok(Some(&buf[pos..end]))
}

fn parse_double(line: &[u8]) -> Result<f64, ProtocolError> {
    let bad = ProtocolError::InvalidValue("double");
    let s = std::str::from_utf8(line).map_err(|_| bad.clone())?;
    match s {
        "inf" | "+inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        "nan" | "-nan" => Ok(f64::NAN),
        _ if s
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            s.parse::<f64>().map_err(|_| bad)
        }
        _ => Err(bad),
    }
}
