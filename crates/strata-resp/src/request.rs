//! Parsing client requests: multibulk arrays of bulk strings, and inline commands.

use std::ops::Range;

use crate::parse::{parse_i64, read_line, take_blob};
use crate::{Limits, ProtocolError};

/// One parsed request: how many bytes it took, and where its arguments are in the buffer.
///
/// Inline arguments with quotes or escapes cannot be sliced out of the input, so they are
/// carried decoded in [`Request::owned`] instead; [`Request::ranges`] is then empty.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
    /// Bytes of input the request took (including an empty line or an empty array, which are
    /// requests with no arguments and are skipped, as Redis does).
    pub consumed: usize,
    /// Argument positions in the parsed buffer.
    pub ranges: Vec<Range<usize>>,
    /// Decoded arguments of an inline request that needed unquoting.
    pub owned: Option<Vec<Vec<u8>>>,
    /// Where an incomplete multibulk request stopped: the next call resumes there instead of
    /// parsing its arguments again (a request arriving slowly costs O(its size), not
    /// O(size²)).
    resume: Option<Resume>,
}

/// Progress through an incomplete multibulk request: its argument count, and the offset of
/// the first argument not yet parsed (the parsed ones are in `ranges`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resume {
    n: usize,
    pos: usize,
}

impl Request {
    /// Forgets a partly parsed request.
    pub fn reset(&mut self) {
        self.consumed = 0;
        self.ranges.clear();
        self.owned = None;
        self.resume = None;
    }

    /// The number of arguments.
    pub fn len(&self) -> usize {
        self.owned.as_ref().map_or(self.ranges.len(), Vec::len)
    }

    /// Whether the request had no arguments (skip it).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses one request from the start of `buf` into `out` (whose vector is reused).
///
/// `Ok(true)`: `out` holds a request (possibly with no arguments); `Ok(false)`: more bytes are
/// needed; `Err`: the input is not a valid request, and the connection should be answered with
/// the error and closed (as Redis does).
///
/// After `Ok(false)`, `out` remembers how far it got: call again with the same bytes and more
/// appended (as a connection's read buffer grows) and it resumes there. To parse unrelated
/// bytes instead, start from a fresh `Request` (or call [`Request::reset`]).
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
    out: &mut Request,
) -> Result<bool, ProtocolError> {
    if let Some(r) = out.resume.take()
        && buf.first() == Some(&b'*')
        && r.pos <= buf.len()
    {
        return parse_arguments(buf, limits, out, r);
    }
    out.consumed = 0;
    out.ranges.clear();
    out.owned = None;
    match buf.first() {
        None => Ok(false),
        Some(b'*') => parse_multibulk(buf, limits, out),
        Some(_) => parse_inline(buf, limits, out),
    }
}

fn parse_multibulk(buf: &[u8], limits: &Limits, out: &mut Request) -> Result<bool, ProtocolError> {
    let Some((line, pos)) = read_line(
        buf,
        1,
        limits.max_inline_len,
        ProtocolError::InvalidMultibulkLength,
    )?
    else {
        return Ok(false);
    };
    let n = parse_i64(line).ok_or(ProtocolError::InvalidMultibulkLength)?;
    if n <= 0 {
        // `*0` and `*-1` are empty requests.
        out.consumed = pos;
        return Ok(true);
    }
    let n = usize::try_from(n).map_err(|_| ProtocolError::InvalidMultibulkLength)?;
    if n > limits.max_array_len {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    if limits.unauthenticated && n > crate::UNAUTHENTICATED_MAX_ARGS {
        return Err(ProtocolError::UnauthenticatedMultibulkLength);
    }
    out.ranges.reserve(n.min(64));
    parse_arguments(buf, limits, out, Resume { n, pos })
}

/// Parses arguments from `r.pos` until `r.n` are in `out.ranges`; on running out of input,
/// records where it stopped.
fn parse_arguments(
    buf: &[u8],
    limits: &Limits,
    out: &mut Request,
    r: Resume,
) -> Result<bool, ProtocolError> {
    let Resume { n, mut pos } = r;
    debug_assert!(out.ranges.len() <= n);
    while out.ranges.len() < n {
        let Some(&tag) = buf.get(pos) else {
            out.resume = Some(Resume { n, pos });
            return Ok(false);
        };
        if tag != b'$' {
            return Err(ProtocolError::ExpectedBulk(tag));
        }
        let Some((line, next)) = read_line(
            buf,
            pos + 1,
            limits.max_inline_len,
            ProtocolError::InvalidBulkLength,
        )?
        else {
            out.resume = Some(Resume { n, pos });
            return Ok(false);
        };
        let len = parse_i64(line)
            .and_then(|l| usize::try_from(l).ok())
            .filter(|&l| l <= limits.max_bulk_len)
            .ok_or(ProtocolError::InvalidBulkLength)?;
        if limits.unauthenticated && len > crate::UNAUTHENTICATED_MAX_BULK {
            return Err(ProtocolError::UnauthenticatedBulkLength);
        }
        if take_blob(buf, next, len)?.is_none() {
            out.resume = Some(Resume { n, pos });
            return Ok(false);
        }
        out.ranges.push(next..next + len);
        pos = next + len + 2;
    }
    out.consumed = pos;
    Ok(true)
}

fn parse_inline(buf: &[u8], limits: &Limits, out: &mut Request) -> Result<bool, ProtocolError> {
    let window = &buf[..buf.len().min(limits.max_inline_len.saturating_add(1))];
    let Some(nl) = memchr::memchr(b'\n', window) else {
        if window.len() > limits.max_inline_len {
            return Err(ProtocolError::InlineTooLong);
        }
        return Ok(false);
    };
    out.consumed = nl + 1;
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let line = &buf[..line_end];
    if !line.iter().any(|&b| b == b'"' || b == b'\'') {
        // The common case: split on whitespace, arguments are slices of the input.
        let mut start = None;
        for (i, &b) in line.iter().enumerate() {
            match (is_space(b), start) {
                (true, Some(s)) => {
                    out.ranges.push(s..i);
                    start = None;
                }
                (false, None) => start = Some(i),
                _ => {}
            }
        }
        if let Some(s) = start {
            out.ranges.push(s..line.len());
        }
        return Ok(true);
    }
    out.owned = Some(split_quoted(line)?);
    Ok(true)
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

/// Splits a line the way Redis's `sdssplitargs` does: whitespace-separated words, double
/// quotes with `\n \r \t \b \a \\ \" \xHH` escapes, single quotes with `\'`, and a closing
/// quote that must be followed by whitespace or the end.
fn split_quoted(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(args);
        }
        let mut cur = Vec::new();
        let (mut in_dq, mut in_sq) = (false, false);
        loop {
            let Some(&c) = line.get(i) else {
                if in_dq || in_sq {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                break;
            };
            if in_dq {
                if c == b'\\'
                    && i + 3 < line.len()
                    && line[i + 1] == b'x'
                    && hex(line[i + 2]).is_some()
                    && hex(line[i + 3]).is_some()
                {
                    let (h, l) = (hex(line[i + 2]).unwrap_or(0), hex(line[i + 3]).unwrap_or(0));
                    cur.push(h * 16 + l);
                    i += 3;
                } else if c == b'\\' && i + 1 < line.len() {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if line.get(i + 1).is_some_and(|&n| !is_space(n)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else if in_sq {
                if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                    i += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if line.get(i + 1).is_some_and(|&n| !is_space(n)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
            } else if is_space(c) {
                break;
            } else if c == b'"' {
                in_dq = true;
            } else if c == b'\'' {
                in_sq = true;
            } else {
                cur.push(c);
            }
            i += 1;
        }
        args.push(cur);
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(buf: &[u8]) -> Vec<Vec<u8>> {
        let mut req = Request::default();
        assert!(parse_request(buf, &Limits::default(), &mut req).unwrap());
        match req.owned {
            Some(o) => o,
            None => req.ranges.iter().map(|r| buf[r.clone()].to_vec()).collect(),
        }
    }

    #[test]
    fn a_request_arriving_in_pieces_resumes_where_it_stopped() {
        let mut bytes = b"*100000\r\n".to_vec();
        for i in 0..100_000 {
            let a = format!("k{i}");
            bytes.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        let mut req = Request::default();
        let mut at = 0;
        let mut corrupted = false;
        let done = loop {
            at = (at + 700).min(bytes.len());
            if !corrupted && at > bytes.len() / 2 {
                // Bytes already parsed are not read again: garbage there goes unnoticed (a
                // parser that started over each time would fail on it).
                bytes[1] = b'x';
                bytes[12] = b'x';
                corrupted = true;
            }
            if parse_request(&bytes[..at], &Limits::default(), &mut req).unwrap() {
                break at;
            }
        };
        assert_eq!(done, bytes.len());
        assert_eq!(req.ranges.len(), 100_000);
        assert_eq!(req.consumed, bytes.len());
        assert_eq!(&bytes[req.ranges[99_999].clone()], b"k99999");
        // A fresh parse of other bytes after a partial one: reset forgets the progress.
        let mut partial = Request::default();
        assert!(!parse_request(b"*2\r\n$1\r\na\r\n", &Limits::default(), &mut partial).unwrap());
        partial.reset();
        assert!(parse_request(b"*1\r\n$1\r\nb\r\n", &Limits::default(), &mut partial).unwrap());
        assert_eq!(partial.ranges.len(), 1);
    }

    #[test]
    fn inline_splits_like_redis() {
        assert_eq!(
            args(b"SET  a   b\r\n"),
            vec![b"SET".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(args(b"PING\n"), vec![b"PING".to_vec()]);
        assert_eq!(
            args(b"set k \"a b\\x41\\n\" 'it\\'s'\r\n"),
            vec![
                b"set".to_vec(),
                b"k".to_vec(),
                b"a bA\n".to_vec(),
                b"it's".to_vec()
            ]
        );
        assert!(args(b"\r\n").is_empty());
    }

    #[test]
    fn inline_errors() {
        let mut req = Request::default();
        let l = Limits::default();
        assert_eq!(
            parse_request(b"get \"abc\r\n", &l, &mut req),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            parse_request(b"get \"a\"b\r\n", &l, &mut req),
            Err(ProtocolError::UnbalancedQuotes)
        );
        let small = Limits {
            max_inline_len: 8,
            ..l
        };
        assert_eq!(
            parse_request(b"get aaaaaaaaa", &small, &mut req),
            Err(ProtocolError::InlineTooLong)
        );
        assert_eq!(parse_request(b"get aaa", &small, &mut req), Ok(false));
    }

    #[test]
    fn a_client_before_auth_sends_only_small_requests() {
        let mut req = Request::default();
        let unauth = Limits {
            unauthenticated: true,
            ..Limits::default()
        };
        let eleven = format!("*11\r\n{}", "$1\r\nx\r\n".repeat(11));
        assert_eq!(
            parse_request(eleven.as_bytes(), &unauth, &mut req),
            Err(ProtocolError::UnauthenticatedMultibulkLength)
        );
        // Refused from the header alone: nothing of the body needs to arrive.
        assert_eq!(
            parse_request(b"*11\r\n", &unauth, &mut req),
            Err(ProtocolError::UnauthenticatedMultibulkLength)
        );
        assert_eq!(
            parse_request(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n", &unauth, &mut req),
            Err(ProtocolError::UnauthenticatedBulkLength)
        );
        // A bad number is still a bad number, as in Redis.
        assert_eq!(
            parse_request(b"*x\r\n", &unauth, &mut req),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        let ten = format!("*10\r\n{}", "$1\r\nx\r\n".repeat(10));
        assert_eq!(parse_request(ten.as_bytes(), &unauth, &mut req), Ok(true));
        let pw = "p".repeat(16 * 1024);
        let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{pw}\r\n", pw.len());
        assert_eq!(parse_request(auth.as_bytes(), &unauth, &mut req), Ok(true));
        assert_eq!(
            parse_request(eleven.as_bytes(), &Limits::default(), &mut req),
            Ok(true)
        );
    }

    #[test]
    fn multibulk_errors_name_what_is_wrong() {
        let mut req = Request::default();
        let l = Limits::default();
        assert_eq!(
            parse_request(b"*x\r\n", &l, &mut req),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            parse_request(b"*1\r\n:1\r\n", &l, &mut req),
            Err(ProtocolError::ExpectedBulk(b':'))
        );
        assert_eq!(
            parse_request(b"*1\r\n$-5\r\n", &l, &mut req),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parse_request(b"*1\r\n$1\r\nab\r\n", &l, &mut req),
            Err(ProtocolError::MissingCrlf)
        );
        let small = Limits {
            max_bulk_len: 4,
            ..l
        };
        assert_eq!(
            parse_request(b"*1\r\n$5\r\n", &small, &mut req),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parse_request(b"*2000000\r\n", &l, &mut req),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(parse_request(b"*2\r\n$1\r\na\r\n", &l, &mut req), Ok(false));
    }
}
