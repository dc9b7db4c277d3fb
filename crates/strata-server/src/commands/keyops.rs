//! Key commands as data: the arguments of every command that reads or writes named keys,
//! parsed once into [`strata_core::ops`] operations. What the handlers execute, what `EXEC`
//! queues into one transaction, and what a script's `redis.call` runs — one parser, so the
//! three agree on every option and every error.

use bytes::Bytes;
use strata_core::ops::{self, BitRange, Exists, ExpiryIf, KeyOp, Ttl, TtlQuery};

use super::{Cmd, ReplyError, Res, eq_ic, not_int, now_ms, parse_int};
use strata_core::ops::parse_float;

/// One operation of a parsed command, on keys named by their bytes.
#[derive(Debug)]
pub(super) enum Op<'a> {
    /// A single-key operation.
    Key(&'a [u8], KeyOp),
    /// `MSETNX` of these pairs.
    MsetNx(Vec<(&'a [u8], &'a [u8])>),
    /// `RENAME` / `RENAMENX`.
    Rename(&'a [u8], &'a [u8], bool),
    /// `COPY src dst [REPLACE]`.
    Copy(&'a [u8], &'a [u8], bool),
    /// `BITOP op dst src...`.
    Bits(ops::BitOp, &'a [u8], Vec<&'a [u8]>),
    /// `LCS a b [LEN]`.
    Lcs(&'a [u8], &'a [u8], ops::LcsMode),
}

/// How a command's operation replies make its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// The one operation's reply.
    Single,
    /// An array of the replies (`MGET`).
    Array,
    /// The sum of the integers (`DEL`, `EXISTS`).
    Sum,
    /// `+OK` (`MSET`).
    Ok,
}

/// A key command, parsed.
#[derive(Debug)]
pub(super) struct Parsed<'a> {
    pub ops: Vec<Op<'a>>,
    pub shape: Shape,
}

impl<'a> Parsed<'a> {
    fn one(key: &'a [u8], op: KeyOp) -> Self {
        Parsed {
            ops: vec![Op::Key(key, op)],
            shape: Shape::Single,
        }
    }
}

/// Whether `id` names keys and is parsed here.
pub(super) fn is_key_command(id: Cmd) -> bool {
    matches!(
        id,
        Cmd::Get
            | Cmd::Set
            | Cmd::Setnx
            | Cmd::Setex
            | Cmd::Psetex
            | Cmd::Getset
            | Cmd::Getdel
            | Cmd::Getex
            | Cmd::Mget
            | Cmd::Mset
            | Cmd::Msetnx
            | Cmd::Append
            | Cmd::Strlen
            | Cmd::Getrange
            | Cmd::Substr
            | Cmd::Setrange
            | Cmd::Incr
            | Cmd::Decr
            | Cmd::Incrby
            | Cmd::Decrby
            | Cmd::Incrbyfloat
            | Cmd::Del
            | Cmd::Unlink
            | Cmd::Exists
            | Cmd::Touch
            | Cmd::Type
            | Cmd::Rename
            | Cmd::Renamenx
            | Cmd::Expire
            | Cmd::Pexpire
            | Cmd::Expireat
            | Cmd::Pexpireat
            | Cmd::Ttl
            | Cmd::Pttl
            | Cmd::Expiretime
            | Cmd::Pexpiretime
            | Cmd::Persist
            | Cmd::Getbit
            | Cmd::Setbit
            | Cmd::Bitfield
            | Cmd::BitfieldRo
            | Cmd::Bitcount
            | Cmd::Bitpos
            | Cmd::Copy
            | Cmd::Bitop
            | Cmd::Lcs
    )
}

/// Whether `id` may change data (what a read-only script refuses).
pub(super) fn writes(id: Cmd) -> bool {
    !matches!(
        id,
        Cmd::Get
            | Cmd::Mget
            | Cmd::Strlen
            | Cmd::Getrange
            | Cmd::Substr
            | Cmd::Exists
            | Cmd::Touch
            | Cmd::Type
            | Cmd::Ttl
            | Cmd::Pttl
            | Cmd::Expiretime
            | Cmd::Pexpiretime
            | Cmd::Getbit
            | Cmd::BitfieldRo
            | Cmd::Bitcount
            | Cmd::Bitpos
            | Cmd::Object
            | Cmd::Lcs
            | Cmd::Memory
    )
}

/// Parses key command `id` with arguments `a` (the name first; arity already checked) at
/// `now` (the cache clock, ms): `None` when `id` is not a key command.
pub(super) fn parse(id: Cmd, a: &[Bytes], now: u64) -> Option<Res<Parsed<'_>>> {
    if id == Cmd::Object && a.len() == 3 && eq_ic(&a[1], "ENCODING") {
        return Some(Ok(Parsed::one(&a[2], KeyOp::Encoding)));
    }
    if id == Cmd::Memory && a.len() >= 3 && eq_ic(&a[1], "USAGE") {
        // SAMPLES n is accepted and changes nothing: a string has no elements to sample.
        return Some(match &a[3..] {
            [] => Ok(Parsed::one(&a[2], KeyOp::MemoryUsage)),
            [opt, n] if eq_ic(opt, "SAMPLES") => match parse_int(n) {
                Some(_) => Ok(Parsed::one(&a[2], KeyOp::MemoryUsage)),
                None => Err(not_int()),
            },
            _ => Err(ReplyError::Syntax),
        });
    }
    if !is_key_command(id) {
        return None;
    }
    Some(parse_key(id, a, now))
}

fn parse_key(id: Cmd, a: &[Bytes], now: u64) -> Res<Parsed<'_>> {
    let key = &a[1][..];
    let int = |b: &Bytes| parse_int(b).ok_or_else(not_int);
    let each = |op: KeyOp, shape: Shape| Parsed {
        ops: a[1..].iter().map(|k| Op::Key(k, op.clone())).collect(),
        shape,
    };
    Ok(match id {
        Cmd::Get => Parsed::one(key, KeyOp::Get),
        Cmd::Set => Parsed::one(key, set_options(a, now)?),
        Cmd::Setnx => Parsed::one(
            key,
            KeyOp::Set {
                value: a[2].to_vec(),
                ttl: Ttl::Default,
                exists: Exists::Absent,
                get: false,
                integer: true,
            },
        ),
        Cmd::Setex | Cmd::Psetex => {
            let name = if id == Cmd::Setex { "setex" } else { "psetex" };
            let ms = expire_ms(int(&a[2])?, id == Cmd::Setex, name, now)?;
            Parsed::one(key, blind_set(&a[3], Ttl::AtMs(now.saturating_add(ms))))
        }
        Cmd::Getset => Parsed::one(
            key,
            KeyOp::Set {
                value: a[2].to_vec(),
                ttl: Ttl::Default,
                exists: Exists::Any,
                get: true,
                integer: false,
            },
        ),
        Cmd::Getdel => Parsed::one(key, KeyOp::GetDel),
        Cmd::Getex => Parsed::one(
            key,
            match getex_options(a, now) {
                Ok(Some(ttl)) => KeyOp::GetEx(ttl),
                Ok(None) => KeyOp::Get,
                Err(ReplyError::Syntax) => return Err(ReplyError::Syntax),
                // Redis reads the key before it checks the expiry's value: nil when absent.
                Err(e) => KeyOp::RefusedIfPresent(e.to_string()),
            },
        ),
        Cmd::Mget => each(KeyOp::Get, Shape::Array),
        Cmd::Mset | Cmd::Msetnx if a.len() % 2 != 1 => {
            let name = if id == Cmd::Mset { "mset" } else { "msetnx" };
            return Err(ReplyError::err(format!(
                "wrong number of arguments for '{name}' command"
            )));
        }
        Cmd::Mset => Parsed {
            ops: a[1..]
                .chunks(2)
                .map(|p| Op::Key(&p[0], blind_set(&p[1], Ttl::Default)))
                .collect(),
            shape: Shape::Ok,
        },
        Cmd::Msetnx => Parsed {
            ops: vec![Op::MsetNx(
                a[1..].chunks(2).map(|p| (&p[0][..], &p[1][..])).collect(),
            )],
            shape: Shape::Single,
        },
        Cmd::Append => Parsed::one(key, KeyOp::Append(a[2].to_vec())),
        Cmd::Strlen => Parsed::one(key, KeyOp::Strlen),
        Cmd::Getrange | Cmd::Substr => Parsed::one(
            key,
            KeyOp::GetRange {
                start: int(&a[2])?,
                end: int(&a[3])?,
            },
        ),
        Cmd::Setrange => {
            let offset = int(&a[2])?;
            if offset < 0 {
                return Err(ReplyError::err("offset is out of range"));
            }
            Parsed::one(
                key,
                KeyOp::SetRange {
                    offset: offset as u64,
                    patch: a[3].to_vec(),
                },
            )
        }
        Cmd::Incr => Parsed::one(key, KeyOp::IncrBy(1)),
        Cmd::Decr => Parsed::one(key, KeyOp::IncrBy(-1)),
        Cmd::Incrby => Parsed::one(key, KeyOp::IncrBy(int(&a[2])?)),
        Cmd::Decrby => {
            let by = int(&a[2])?
                .checked_neg()
                .ok_or(ReplyError::err("decrement would overflow"))?;
            Parsed::one(key, KeyOp::IncrBy(by))
        }
        Cmd::Incrbyfloat => {
            let by = parse_float(&a[2]).ok_or(ReplyError::err("value is not a valid float"))?;
            Parsed::one(key, KeyOp::IncrByFloat(by))
        }
        Cmd::Del | Cmd::Unlink => each(KeyOp::Del, Shape::Sum),
        Cmd::Exists | Cmd::Touch => each(KeyOp::Exists, Shape::Sum),
        Cmd::Type => Parsed::one(key, KeyOp::Type),
        Cmd::Rename | Cmd::Renamenx => Parsed {
            ops: vec![Op::Rename(key, &a[2], id == Cmd::Renamenx)],
            shape: Shape::Single,
        },
        Cmd::Expire | Cmd::Pexpire | Cmd::Expireat | Cmd::Pexpireat => {
            Parsed::one(key, expire_options(id, a, now)?)
        }
        Cmd::Ttl => Parsed::one(key, KeyOp::TtlOf(TtlQuery::Ttl)),
        Cmd::Pttl => Parsed::one(key, KeyOp::TtlOf(TtlQuery::Pttl)),
        Cmd::Expiretime => Parsed::one(key, KeyOp::TtlOf(TtlQuery::ExpireTime)),
        Cmd::Pexpiretime => Parsed::one(key, KeyOp::TtlOf(TtlQuery::PexpireTime)),
        Cmd::Persist => Parsed::one(key, KeyOp::Persist),
        Cmd::Getbit => Parsed::one(key, KeyOp::GetBit(bit_offset(&a[2])?)),
        Cmd::Setbit => {
            let offset = bit_offset(&a[2])?;
            let on = match &a[3][..] {
                b"0" => false,
                b"1" => true,
                _ => return Err(ReplyError::err("bit is not an integer or out of range")),
            };
            Parsed::one(key, KeyOp::SetBit { offset, on })
        }
        Cmd::Bitfield | Cmd::BitfieldRo => Parsed::one(
            key,
            KeyOp::Bitfield(bitfield_ops(&a[2..], id == Cmd::BitfieldRo)?),
        ),
        Cmd::Bitcount => {
            let range = match a.len() {
                2 => None,
                4 | 5 => Some(BitRange {
                    start: int(&a[2])?,
                    end: Some(int(&a[3])?),
                    bits: unit(a.get(4))?,
                }),
                _ => return Err(ReplyError::Syntax),
            };
            Parsed::one(key, KeyOp::BitCount(range))
        }
        Cmd::Bitpos => {
            let bit = match parse_int(&a[2]) {
                None => return Err(not_int()),
                Some(0) => false,
                Some(1) => true,
                Some(_) => return Err(ReplyError::err("The bit argument must be 1 or 0.")),
            };
            let range = match a.len() {
                3 => None,
                4..=6 => Some(BitRange {
                    start: int(&a[3])?,
                    end: a.get(4).map(int).transpose()?,
                    bits: unit(a.get(5))?,
                }),
                _ => return Err(ReplyError::Syntax),
            };
            Parsed::one(key, KeyOp::BitPos { bit, range })
        }
        Cmd::Copy => {
            let mut replace = false;
            for (i, opt) in a.iter().enumerate().skip(3) {
                if eq_ic(opt, "REPLACE") {
                    replace = true;
                } else if eq_ic(opt, "DB") && i + 1 < a.len() {
                    // The server runs COPY … DB itself (`copy_across`); not as a step of a
                    // transaction or a script, which run on one namespace's keys.
                    return Err(ReplyError::err(
                        "COPY to another database is not supported in MULTI or scripts on Strata",
                    ));
                } else {
                    return Err(ReplyError::Syntax);
                }
            }
            Parsed {
                ops: vec![Op::Copy(key, &a[2], replace)],
                shape: Shape::Single,
            }
        }
        Cmd::Bitop => {
            let op = if eq_ic(&a[1], "AND") {
                ops::BitOp::And
            } else if eq_ic(&a[1], "OR") {
                ops::BitOp::Or
            } else if eq_ic(&a[1], "XOR") {
                ops::BitOp::Xor
            } else if eq_ic(&a[1], "NOT") {
                ops::BitOp::Not
            } else {
                return Err(ReplyError::Syntax);
            };
            if op == ops::BitOp::Not && a.len() != 4 {
                return Err(ReplyError::err(
                    "BITOP NOT must be called with a single source key.",
                ));
            }
            Parsed {
                ops: vec![Op::Bits(op, &a[2], a[3..].iter().map(|k| &k[..]).collect())],
                shape: Shape::Single,
            }
        }
        Cmd::Lcs => {
            let (mut len, mut idx, mut min_len, mut with_len) = (false, false, 0u64, false);
            let mut j = 3;
            while j < a.len() {
                let opt = &a[j];
                if eq_ic(opt, "LEN") {
                    len = true;
                } else if eq_ic(opt, "IDX") {
                    idx = true;
                } else if eq_ic(opt, "WITHMATCHLEN") {
                    with_len = true;
                } else if eq_ic(opt, "MINMATCHLEN") && j + 1 < a.len() {
                    min_len = int(&a[j + 1])?.max(0) as u64;
                    j += 1;
                } else {
                    return Err(ReplyError::Syntax);
                }
                j += 1;
            }
            if idx && len {
                return Err(ReplyError::err(
                    "If you want both the length and indexes, please just use IDX.",
                ));
            }
            let mode = match (idx, len) {
                (true, _) => ops::LcsMode::Idx { min_len, with_len },
                (false, true) => ops::LcsMode::Len,
                (false, false) => ops::LcsMode::String,
            };
            Parsed {
                ops: vec![Op::Lcs(key, &a[2], mode)],
                shape: Shape::Single,
            }
        }
        _ => return Err(ReplyError::err("not a key command")),
    })
}

/// A `GETBIT`/`SETBIT` offset: 0 to 2^32 - 1, as Redis.
fn bit_offset(b: &[u8]) -> Res<u64> {
    parse_int(b)
        .filter(|n| (0..=ops::MAX_BIT_OFFSET as i64).contains(n))
        .map(|n| n as u64)
        .ok_or_else(|| ReplyError::err("bit offset is not an integer or out of range"))
}

/// `BITFIELD`'s subcommands, parsed and checked as Redis does, in its order: a malformed
/// subcommand is refused before `BITFIELD_RO` refuses one that writes.
fn bitfield_ops(a: &[Bytes], read_only: bool) -> Res<Vec<ops::BitfieldOp>> {
    use ops::{BitfieldOp, BitfieldType, Overflow};
    let mut out = Vec::new();
    let mut ow = Overflow::Wrap;
    let mut writes = false;
    let mut j = 0;
    while j < a.len() {
        let rest = a.len() - j - 1;
        let sub = &a[j];
        if eq_ic(sub, "OVERFLOW") && rest >= 1 {
            ow = match &a[j + 1] {
                v if eq_ic(v, "WRAP") => Overflow::Wrap,
                v if eq_ic(v, "SAT") => Overflow::Sat,
                v if eq_ic(v, "FAIL") => Overflow::Fail,
                _ => return Err(ReplyError::err("Invalid OVERFLOW type specified")),
            };
            j += 2;
            continue;
        }
        let get = eq_ic(sub, "GET") && rest >= 2;
        if !get && !((eq_ic(sub, "SET") || eq_ic(sub, "INCRBY")) && rest >= 3) {
            return Err(ReplyError::Syntax);
        }
        let t = {
            let bad = || {
                ReplyError::err(
                    "Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.",
                )
            };
            let enc = &a[j + 1];
            let signed = match enc.first() {
                Some(b'i') => true,
                Some(b'u') => false,
                _ => return Err(bad()),
            };
            let bits = parse_int(&enc[1..])
                .filter(|b| *b >= 1 && *b <= if signed { 64 } else { 63 })
                .ok_or_else(bad)?;
            BitfieldType {
                signed,
                bits: bits as u8,
            }
        };
        let offset = {
            let raw = &a[j + 2];
            let (hash, digits) = match raw.first() {
                Some(b'#') => (true, &raw[1..]),
                _ => (false, &raw[..]),
            };
            parse_int(digits)
                .and_then(|n| {
                    if hash {
                        n.checked_mul(i64::from(t.bits))
                    } else {
                        Some(n)
                    }
                })
                .filter(|n| (0..=ops::MAX_BIT_OFFSET as i64).contains(n))
                .ok_or(ReplyError::err(
                    "bit offset is not an integer or out of range",
                ))? as u64
        };
        if get {
            out.push(BitfieldOp::Get(t, offset));
            j += 3;
            continue;
        }
        writes = true;
        let n = parse_int(&a[j + 3])
            .ok_or(ReplyError::err("value is not an integer or out of range"))?;
        out.push(if eq_ic(sub, "SET") {
            BitfieldOp::Set(t, offset, n, ow)
        } else {
            BitfieldOp::IncrBy(t, offset, n, ow)
        });
        j += 4;
    }
    if read_only && writes {
        return Err(ReplyError::err(
            "BITFIELD_RO only supports the GET subcommand",
        ));
    }
    Ok(out)
}

/// `BYTE` (the default) or `BIT`: whether a range counts bits.
fn unit(b: Option<&Bytes>) -> Res<bool> {
    match b {
        None => Ok(false),
        Some(u) if eq_ic(u, "BYTE") => Ok(false),
        Some(u) if eq_ic(u, "BIT") => Ok(true),
        Some(_) => Err(ReplyError::Syntax),
    }
}

/// An unconditional `SET` of `value`.
pub(super) fn blind_set(value: &[u8], ttl: Ttl) -> KeyOp {
    KeyOp::Set {
        value: value.to_vec(),
        ttl,
        exists: Exists::Any,
        get: false,
        integer: false,
    }
}

/// Whether `op` is a `SET` that reads nothing (no condition, no `GET`, no `KEEPTTL`).
pub(super) fn is_blind_set(op: &KeyOp) -> bool {
    matches!(
        op,
        KeyOp::Set {
            exists: Exists::Any,
            get: false,
            integer: false,
            ttl: Ttl::Default | Ttl::AtMs(_),
            ..
        }
    )
}

/// The expiry options of `SET` and `GETEX`.
const EXPIRY_OPTIONS: [&str; 4] = ["EX", "PX", "EXAT", "PXAT"];

/// An `EX`/`PX`/`EXAT`/`PXAT` option at `a[i]` with its value, taken as Redis 7 takes it:
/// the same option again replaces it (the last wins), a different one — or `other`
/// (`KEEPTTL`, `PERSIST`) given before — is a syntax error. `Ok(false)`: not an expiry
/// option. The value is checked after every option is parsed (`expiry_at`).
fn expiry_option<'a>(
    a: &'a [Bytes],
    i: usize,
    taken: &mut Option<(&'a [u8], &'a [u8])>,
    other: bool,
) -> Res<bool> {
    let opt = &a[i][..];
    let Some(v) = a.get(i + 1) else {
        return Ok(false);
    };
    if !EXPIRY_OPTIONS.iter().any(|o| eq_ic(opt, o)) {
        return Ok(false);
    }
    if other || taken.is_some_and(|(o, _)| !o.eq_ignore_ascii_case(opt)) {
        return Err(ReplyError::Syntax);
    }
    *taken = Some((opt, &v[..]));
    Ok(true)
}

/// `SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT n|KEEPTTL]`. As in Redis 7, an option
/// may repeat (`EX 10 EX 20`: the last wins), conflicting ones are a syntax error, and the
/// expiry's value is checked once every option parsed.
fn set_options(a: &[Bytes], now: u64) -> Res<KeyOp> {
    let (mut nx, mut xx, mut get, mut keep) = (false, false, false, false);
    let mut expiry = None;
    let mut i = 3;
    while i < a.len() {
        let opt = &a[i];
        if eq_ic(opt, "NX") && !xx {
            nx = true;
        } else if eq_ic(opt, "XX") && !nx {
            xx = true;
        } else if eq_ic(opt, "GET") {
            get = true;
        } else if eq_ic(opt, "KEEPTTL") && expiry.is_none() {
            keep = true;
        } else if expiry_option(a, i, &mut expiry, keep)? {
            i += 1;
        } else {
            return Err(ReplyError::Syntax);
        }
        i += 1;
    }
    let ttl = match expiry {
        Some((opt, v)) => Ttl::AtMs(expiry_at(now, opt, v, "set")?),
        None if keep => Ttl::Keep,
        None => Ttl::Default,
    };
    Ok(KeyOp::Set {
        value: a[2].to_vec(),
        ttl,
        exists: if nx {
            Exists::Absent
        } else if xx {
            Exists::Present
        } else {
            Exists::Any
        },
        get,
        integer: false,
    })
}

/// `GETEX key [EX|PX|EXAT|PXAT n|PERSIST]`: the new expiry, `None` without an option.
/// Options repeat and conflict as `SET`'s do; a syntax error is an error, a bad expiry
/// value the caller answers only for a key that exists, as Redis does.
fn getex_options(a: &[Bytes], now: u64) -> Res<Option<Ttl>> {
    let mut persist = false;
    let mut expiry = None;
    let mut i = 2;
    while i < a.len() {
        if eq_ic(&a[i], "PERSIST") && expiry.is_none() {
            persist = true;
        } else if expiry_option(a, i, &mut expiry, persist)? {
            i += 1;
        } else {
            return Err(ReplyError::Syntax);
        }
        i += 1;
    }
    Ok(match expiry {
        Some((opt, v)) => Some(Ttl::AtMs(expiry_at(now, opt, v, "getex")?)),
        None => persist.then_some(Ttl::Persist),
    })
}

/// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` with `NX`, `XX`, `GT`, `LT`.
fn expire_options(id: Cmd, a: &[Bytes], now: u64) -> Res<KeyOp> {
    let name = match id {
        Cmd::Expire => "expire",
        Cmd::Pexpire => "pexpire",
        Cmd::Expireat => "expireat",
        _ => "pexpireat",
    };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &a[3..] {
        if eq_ic(opt, "NX") {
            nx = true;
        } else if eq_ic(opt, "XX") {
            xx = true;
        } else if eq_ic(opt, "GT") {
            gt = true;
        } else if eq_ic(opt, "LT") {
            lt = true;
        } else {
            return Err(ReplyError::err(format!(
                "Unsupported option {}",
                String::from_utf8_lossy(&opt[..opt.len().min(128)])
            )));
        }
    }
    if nx && (xx || gt || lt) {
        return Err(ReplyError::err(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(ReplyError::err(
            "GT and LT options at the same time are not compatible",
        ));
    }
    // The time is read once the options are known good, as Redis does.
    let n = parse_int(&a[2]).ok_or_else(not_int)?;
    let invalid = || ReplyError::err(format!("invalid expire time in '{name}' command"));
    let now = now as i64;
    let at: i64 = match id {
        Cmd::Expire => n
            .checked_mul(1000)
            .and_then(|ms| ms.checked_add(now))
            .ok_or_else(invalid)?,
        Cmd::Pexpire => n.checked_add(now).ok_or_else(invalid)?,
        Cmd::Expireat => n.checked_mul(1000).ok_or_else(invalid)?,
        _ => n,
    };
    // A relative time of zero or less is already past on every clock: the key's primary
    // (another node, whose clock may read a few ms behind this one's) deletes it, as Redis
    // does, instead of keeping it until `now + n` passes there. Against a live key's
    // expiry (always in the future) 0 compares as `now + n` does, so GT and LT agree.
    let at = if matches!(id, Cmd::Expire | Cmd::Pexpire) && n <= 0 {
        0
    } else {
        at
    };
    Ok(KeyOp::Expire {
        at_ms: at,
        when: ExpiryIf { nx, xx, gt, lt },
    })
}

/// The instant (ms, cache clock `now`) an `EX`/`PX`/`EXAT`/`PXAT` option with value `v`
/// names, refusing what Redis refuses for `cmd`.
fn expiry_at(now: u64, opt: &[u8], v: &[u8], cmd: &str) -> Res<u64> {
    let n = parse_int(v).ok_or_else(not_int)?;
    let invalid = || ReplyError::err(format!("invalid expire time in '{cmd}' command"));
    if n <= 0 {
        return Err(invalid());
    }
    Ok(if eq_ic(opt, "EX") {
        now + expire_ms(n, true, cmd, now)?
    } else if eq_ic(opt, "PX") {
        now + expire_ms(n, false, cmd, now)?
    } else if eq_ic(opt, "EXAT") {
        // As Redis: seconds whose milliseconds do not fit a signed 64-bit integer.
        if n > i64::MAX / 1000 {
            return Err(invalid());
        }
        n as u64 * 1000
    } else {
        n as u64
    })
}

/// `n` seconds (or milliseconds) as milliseconds, refusing what Redis refuses: among it an
/// expiry that, added to `now` (the clock the caller adds it to: the cache's), passes the
/// largest signed 64-bit millisecond. (Checked against the system clock, a cache clock a
/// few ms ahead stored expiries past it, which `PEXPIRETIME` answered negative.)
pub(super) fn expire_ms(n: i64, seconds: bool, cmd: &str, now: u64) -> Res<u64> {
    let invalid = || ReplyError::err(format!("invalid expire time in '{cmd}' command"));
    if n <= 0 {
        return Err(invalid());
    }
    let ms = if seconds {
        n.checked_mul(1000).ok_or_else(invalid)?
    } else {
        n
    };
    // Redis also refuses expiries that overflow when added to now; a margin of a second
    // covers a later read of the clock by the caller.
    (ms as u64)
        .checked_add(now.max(now_ms()))
        .and_then(|v| v.checked_add(1_000))
        .filter(|v| *v < i64::MAX as u64)
        .ok_or_else(invalid)?;
    Ok(ms as u64)
}
