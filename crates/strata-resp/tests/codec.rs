//! Property tests of the RESP codec, with the `redis-protocol` crate as an independent oracle.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use proptest::prelude::*;
use redis_protocol::resp2::types::{OwnedFrame as R2, Resp2Frame};
use redis_protocol::resp3::types::{OwnedFrame as R3, Resp3Frame, VerbatimStringFormat};
use strata_resp::{Frame, Limits, ProtocolError, Request, parse_frame, parse_request};

fn line_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..24,
    )
    .prop_map(Bytes::from)
}

fn blob_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

/// Any RESP3 frame except doubles that are NaN (NaN != NaN) and attributes.
fn frame() -> impl Strategy<Value = Frame> {
    let leaf = prop_oneof![
        line_bytes().prop_map(Frame::Simple),
        line_bytes().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        blob_bytes().prop_map(Frame::Bulk),
        Just(Frame::Null),
        Just(Frame::NullArray),
        any::<f64>()
            .prop_filter("not NaN", |d| !d.is_nan())
            .prop_map(Frame::Double),
        any::<bool>().prop_map(Frame::Boolean),
        "-?[1-9][0-9]{0,40}".prop_map(|s| Frame::BigNumber(Bytes::from(s))),
        blob_bytes().prop_map(|text| Frame::Verbatim {
            format: *b"txt",
            text
        }),
        blob_bytes().prop_map(Frame::BlobError),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Array),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Set),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Push),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Frame::Map),
        ]
    })
}

fn resp2_frame() -> impl Strategy<Value = R2> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9 ]{0,16}".prop_map(|s| R2::SimpleString(s.into_bytes())),
        "[a-zA-Z0-9 ]{0,16}".prop_map(R2::Error),
        any::<i64>().prop_map(R2::Integer),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(R2::BulkString),
        Just(R2::Null),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        proptest::collection::vec(inner, 0..6).prop_map(R2::Array)
    })
}

fn from_r2(f: R2) -> Frame {
    match f {
        R2::SimpleString(s) => Frame::Simple(s.into()),
        R2::Error(e) => Frame::Error(e.into_bytes().into()),
        R2::Integer(n) => Frame::Integer(n),
        R2::BulkString(b) => Frame::Bulk(b.into()),
        R2::Array(items) => Frame::Array(items.into_iter().map(from_r2).collect()),
        R2::Null => Frame::Null,
    }
}

/// Our frame in redis-protocol's RESP3 model, for the kinds whose order it keeps.
fn to_r3(f: &Frame) -> Option<R3> {
    Some(match f {
        Frame::Simple(s) => R3::SimpleString {
            data: s.to_vec(),
            attributes: None,
        },
        Frame::Error(e) => R3::SimpleError {
            data: String::from_utf8(e.to_vec()).ok()?,
            attributes: None,
        },
        Frame::Integer(n) => R3::Number {
            data: *n,
            attributes: None,
        },
        Frame::Bulk(b) => R3::BlobString {
            data: b.to_vec(),
            attributes: None,
        },
        Frame::Null => R3::Null,
        Frame::Double(d) => R3::Double {
            data: *d,
            attributes: None,
        },
        Frame::Boolean(b) => R3::Boolean {
            data: *b,
            attributes: None,
        },
        Frame::BigNumber(n) => R3::BigNumber {
            data: n.to_vec(),
            attributes: None,
        },
        Frame::Verbatim {
            format: [b't', b'x', b't'],
            text,
        } => R3::VerbatimString {
            data: text.to_vec(),
            format: VerbatimStringFormat::Text,
            attributes: None,
        },
        Frame::BlobError(b) => R3::BlobError {
            data: b.to_vec(),
            attributes: None,
        },
        Frame::Array(items) => R3::Array {
            data: items.iter().map(to_r3).collect::<Option<_>>()?,
            attributes: None,
        },
        Frame::Push(items) => R3::Push {
            data: items.iter().map(to_r3).collect::<Option<_>>()?,
            attributes: None,
        },
        _ => return None,
    })
}

/// RESP2's spelling of null (`$-1`) at any depth; everything else as `Frame::encode`.
fn encode_resp2(f: &Frame, out: &mut bytes::BytesMut) {
    match f {
        Frame::Null => out.extend_from_slice(b"$-1\r\n"),
        Frame::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for i in items {
                encode_resp2(i, out);
            }
        }
        other => other.encode(out),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// encode → parse is the identity, consuming exactly the encoding.
    #[test]
    fn round_trip(f in frame()) {
        let bytes = f.to_bytes();
        let (parsed, used) = parse_frame(&bytes, &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(parsed, f);
    }

    /// Every strict prefix of a frame is "need more bytes", never an error or a frame.
    #[test]
    fn prefixes_need_more(f in frame(), cut in any::<prop::sample::Index>()) {
        let bytes = f.to_bytes();
        let at = cut.index(bytes.len());
        prop_assert_eq!(parse_frame(&bytes[..at], &Limits::default()), Ok(None));
    }

    /// Arbitrary bytes: a frame within the input, more-bytes, or an error; never a panic.
    #[test]
    fn garbage_is_handled(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(Some((_, used))) = parse_frame(&bytes, &Limits::default()) {
            prop_assert!(used <= bytes.len());
        }
        let mut req = Request::default();
        if let Ok(true) = parse_request(&bytes, &Limits::default(), &mut req) {
            prop_assert!(req.consumed <= bytes.len());
            for r in &req.ranges {
                prop_assert!(r.end <= req.consumed);
            }
        }
    }

    /// The oracle decodes what we encode (RESP2 kinds) to the same frame.
    #[test]
    fn oracle_reads_our_resp2(f in resp2_frame()) {
        let ours = from_r2(f.clone());
        let mut bytes = bytes::BytesMut::new();
        encode_resp2(&ours, &mut bytes);
        let (theirs, used) = redis_protocol::resp2::decode::decode(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(theirs, f);
    }

    /// We decode what the oracle encodes (RESP2) to the same frame.
    #[test]
    fn we_read_oracle_resp2(f in resp2_frame()) {
        let mut buf = vec![0u8; f.encode_len(false)];
        let n = redis_protocol::resp2::encode::encode(&mut buf, &f, false).unwrap();
        let (ours, used) = parse_frame(&buf[..n], &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(used, n);
        prop_assert_eq!(ours, from_r2(f));
    }

    /// The oracle decodes what we encode in RESP3 (kinds with an order) to the same frame,
    /// and we decode its encoding of it back.
    #[test]
    fn resp3_agrees_with_oracle(f in frame()) {
        if let Some(theirs) = to_r3(&f) {
            let bytes = f.to_bytes();
            let (decoded, used) = redis_protocol::resp3::decode::complete::decode(&bytes).unwrap().unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(&decoded, &theirs);
            let mut buf = vec![0u8; theirs.encode_len(false)];
            let n = redis_protocol::resp3::encode::complete::encode(&mut buf, &theirs, false).unwrap();
            let (back, used) = parse_frame(&buf[..n], &Limits::default()).unwrap().unwrap();
            prop_assert_eq!(used, n);
            prop_assert_eq!(back, f);
        }
    }

    /// A request encoded as an array of bulk strings parses to its arguments, and the
    /// arguments are slices of the input.
    #[test]
    fn request_round_trip(args in proptest::collection::vec(blob_bytes(), 1..8)) {
        let bytes = Frame::Array(args.iter().cloned().map(Frame::Bulk).collect()).to_bytes();
        let mut req = Request::default();
        prop_assert_eq!(parse_request(&bytes, &Limits::default(), &mut req), Ok(true));
        prop_assert_eq!(req.consumed, bytes.len());
        let got: Vec<&[u8]> = req.ranges.iter().map(|r| &bytes[r.clone()]).collect();
        let want: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
        prop_assert_eq!(got, want);
        for cut in 0..bytes.len() {
            prop_assert_eq!(parse_request(&bytes[..cut], &Limits::default(), &mut req), Ok(false));
        }
    }
}

#[test]
fn bounds_are_enforced_before_allocation() {
    let small = Limits {
        max_bulk_len: 16,
        max_array_len: 4,
        max_inline_len: 32,
        max_depth: 2,
        unauthenticated: false,
    };
    assert_eq!(
        parse_frame(b"$17\r\n", &small),
        Err(ProtocolError::InvalidBulkLength)
    );
    assert_eq!(
        parse_frame(b"*5\r\n", &small),
        Err(ProtocolError::InvalidMultibulkLength)
    );
    assert_eq!(
        parse_frame(b"*1\r\n*1\r\n*1\r\n:1\r\n", &small),
        Err(ProtocolError::TooDeep(2))
    );
    let long = [b'+'; 40];
    assert!(
        parse_frame(&long, &small).is_err(),
        "a line past the limit with no CRLF is an error"
    );
    // A huge declared array with no elements yet allocates nothing large and asks for more.
    assert_eq!(parse_frame(b"*1000000\r\n", &Limits::default()), Ok(None));
    assert_eq!(
        parse_frame(b"$536870913\r\n", &Limits::default()),
        Err(ProtocolError::InvalidBulkLength)
    );
}

#[test]
fn malformed_frames_are_errors() {
    let l = Limits::default();
    assert_eq!(
        parse_frame(b"?x\r\n", &l),
        Err(ProtocolError::UnknownType(b'?'))
    );
    assert_eq!(
        parse_frame(b":12a\r\n", &l),
        Err(ProtocolError::InvalidValue("integer"))
    );
    assert_eq!(
        parse_frame(b":99999999999999999999\r\n", &l),
        Err(ProtocolError::InvalidValue("integer"))
    );
    assert_eq!(
        parse_frame(b"#x\r\n", &l),
        Err(ProtocolError::InvalidValue("boolean"))
    );
    assert_eq!(
        parse_frame(b"$3\r\nabcd\r\n", &l),
        Err(ProtocolError::MissingCrlf)
    );
    assert_eq!(
        parse_frame(b"=2\r\nab\r\n", &l),
        Err(ProtocolError::InvalidValue("verbatim string format"))
    );
    assert!(parse_frame(b"+OK\n", &l).is_err(), "bare LF");
    assert_eq!(
        parse_frame(b",1.5\r\n", &l),
        Ok(Some((Frame::Double(1.5), 6)))
    );
    assert_eq!(parse_frame(b"$-1\r\n", &l), Ok(Some((Frame::Null, 5))));
}
