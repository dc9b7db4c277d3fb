//! `SLOWLOG`: the commands that took longer than `slowlog-log-slower-than` microseconds to
//! execute (the time in the command itself, not in reading or writing the connection), the
//! newest first, at most `slowlog-max-len` of them — as Redis keeps them.
//!
//! Each entry holds what Redis's does: an id, the Unix time it was logged, the duration, the
//! arguments (at most 32: past 31 the last one says how many more there were; each at most
//! 128 bytes, then how many more bytes there were; `AUTH`'s and `HELLO … AUTH`'s secrets
//! redacted), the client's address and its name.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;

use super::{ReplyError, Res, Session, eq_ic, help, parse_int, subcommand_arity};
use crate::state::Shared;

/// Arguments an entry keeps, the last one standing for the rest (Redis's
/// `SLOWLOG_ENTRY_MAX_ARGC`).
const MAX_ARGS: usize = 32;
/// Bytes an argument keeps (Redis's `SLOWLOG_ENTRY_MAX_STRING`).
const MAX_ARG_BYTES: usize = 128;

/// One logged command.
#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    unix_secs: u64,
    micros: u64,
    args: Vec<Bytes>,
    addr: String,
    name: Bytes,
}

/// The log, with its two settings (changeable with `CONFIG SET`).
#[derive(Debug)]
pub struct SlowLog {
    entries: Mutex<VecDeque<Entry>>,
    next_id: AtomicU64,
    /// `slowlog-log-slower-than`, in microseconds: negative turns logging off, 0 logs every
    /// command.
    slower_than_us: AtomicI64,
    /// `slowlog-max-len`.
    max_len: AtomicUsize,
}

impl SlowLog {
    /// An empty log with Redis's settings' meaning.
    pub fn new(slower_than_us: i64, max_len: usize) -> Self {
        SlowLog {
            entries: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
            slower_than_us: AtomicI64::new(slower_than_us),
            max_len: AtomicUsize::new(max_len),
        }
    }

    /// `slowlog-log-slower-than`.
    pub fn slower_than_us(&self) -> i64 {
        self.slower_than_us.load(Ordering::Relaxed)
    }

    /// `slowlog-max-len`.
    pub fn max_len(&self) -> usize {
        self.max_len.load(Ordering::Relaxed)
    }

    /// `CONFIG SET slowlog-log-slower-than`.
    pub fn set_slower_than_us(&self, us: i64) {
        self.slower_than_us.store(us, Ordering::Relaxed);
    }

    /// `CONFIG SET slowlog-max-len`: a shorter log drops its oldest entries at once.
    pub fn set_max_len(&self, len: usize) {
        let mut entries = self.entries.lock();
        self.max_len.store(len, Ordering::Relaxed);
        entries.truncate(len);
    }

    /// Whether a command that took `took` goes into the log: one atomic load when it does
    /// not, so timing every command costs nothing else.
    pub fn wants(&self, took: Duration) -> bool {
        let t = self.slower_than_us();
        t >= 0 && took.as_micros() >= t as u128
    }

    /// Logs a command that took `took` (the caller has checked [`SlowLog::wants`]).
    pub fn record(&self, took: Duration, args: &[Bytes], addr: String, name: Bytes) {
        let max = self.max_len();
        if max == 0 {
            return;
        }
        let entry = Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            unix_secs: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            micros: took.as_micros() as u64,
            args: kept_args(args),
            addr,
            name,
        };
        let mut entries = self.entries.lock();
        entries.push_front(entry);
        // Read again under the lock: a `CONFIG SET slowlog-max-len` since must hold.
        entries.truncate(self.max_len());
    }

    /// How many entries the log holds.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an entry keeps of a command's arguments (see the module documentation).
fn kept_args(args: &[Bytes]) -> Vec<Bytes> {
    let keep = if args.len() > MAX_ARGS {
        MAX_ARGS - 1
    } else {
        args.len()
    };
    let mut out: Vec<Bytes> = args[..keep]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            if is_secret(args, i) {
                Bytes::from_static(b"(redacted)")
            } else if a.len() > MAX_ARG_BYTES {
                let mut v = a[..MAX_ARG_BYTES].to_vec();
                v.extend_from_slice(
                    format!("... ({} more bytes)", a.len() - MAX_ARG_BYTES).as_bytes(),
                );
                Bytes::from(v)
            } else {
                // A copy, never a slice: the argument is a view of the connection's read
                // buffer, and an entry holding it would keep the whole buffer (up to the
                // request limit) alive for as long as the entry lives.
                Bytes::copy_from_slice(a)
            }
        })
        .collect();
    if args.len() > MAX_ARGS {
        out.push(Bytes::from(format!(
            "... ({} more arguments)",
            args.len() - keep
        )));
    }
    out
}

/// Whether argument `i` of a command is a secret, shown as `(redacted)`: every argument of
/// `AUTH`, those after `HELLO`'s `AUTH` (the user name included, as Redis does), and the
/// values `CONFIG SET` gives `requirepass` (Redis 7 redacts them too).
fn is_secret(args: &[Bytes], i: usize) -> bool {
    let Some(name) = args.first() else {
        return false;
    };
    if eq_ic(name, "AUTH") {
        return i >= 1;
    }
    if eq_ic(name, "HELLO") {
        return args[..i.min(args.len())].iter().any(|a| eq_ic(a, "AUTH"));
    }
    if eq_ic(name, "CONFIG") && args.get(1).is_some_and(|a| eq_ic(a, "SET")) {
        return i >= 3 && i % 2 == 1 && eq_ic(&args[i - 1], "requirepass");
    }
    false
}

/// `SLOWLOG GET [count] | LEN | RESET | HELP`.
pub(super) fn slowlog(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let sub = &a[1];
    let log = &sh.slowlog;
    if eq_ic(sub, "GET") && a.len() <= 3 {
        let count = match a.get(2) {
            None => 10,
            Some(c) => match parse_int(c) {
                Some(-1) => usize::MAX,
                Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
                _ => {
                    return Err(ReplyError::err(
                        "count should be greater than or equal to -1",
                    ));
                }
            },
        };
        let entries: Vec<Entry> = log.entries.lock().iter().take(count).cloned().collect();
        s.reply.array(entries.len());
        for e in entries {
            s.reply.array(6);
            s.reply.integer(e.id as i64);
            s.reply.integer(e.unix_secs as i64);
            s.reply.integer(e.micros as i64);
            s.reply.array(e.args.len());
            for arg in &e.args {
                s.reply.bulk(arg);
            }
            s.reply.bulk(e.addr.as_bytes());
            s.reply.bulk(&e.name);
        }
    } else if (eq_ic(sub, "LEN") || eq_ic(sub, "RESET") || eq_ic(sub, "HELP")) && a.len() != 2 {
        return Err(subcommand_arity("slowlog", sub));
    } else if eq_ic(sub, "LEN") {
        s.reply.integer(log.len() as i64);
    } else if eq_ic(sub, "RESET") {
        log.entries.lock().clear();
        s.reply.ok();
    } else if eq_ic(sub, "HELP") {
        const HELP: &[&str] = &[
            "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET [<count>]",
            "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
            "    Entries are made of:",
            "    id, timestamp, time in microseconds, arguments array, client IP and port,",
            "    client name",
            "LEN",
            "    Return the length of the slowlog.",
            "RESET",
            "    Reset the slowlog.",
            "HELP",
            "    Prints this help.",
        ];
        help(s, HELP);
    } else if eq_ic(sub, "GET") {
        return Err(ReplyError::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try SLOWLOG HELP.",
            String::from_utf8_lossy(sub)
        )));
    } else {
        return Err(ReplyError::err(format!(
            "unknown subcommand '{}'. Try SLOWLOG HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)])
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<Bytes> {
        v.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn long_commands_and_arguments_are_cut_as_redis_cuts_them() {
        let mut many = vec!["exists".to_owned()];
        many.extend((1..=34).map(|i| format!("a{i}")));
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let kept = kept_args(&args(&many));
        assert_eq!(kept.len(), 32);
        assert_eq!(kept[30], "a30");
        assert_eq!(kept[31], "... (4 more arguments)");
        let long = "x".repeat(200);
        let kept = kept_args(&args(&["set", "k", &long]));
        assert_eq!(kept[2].len(), 128 + "... (72 more bytes)".len());
        assert!(kept[2].ends_with(b"... (72 more bytes)"));
        assert_eq!(kept_args(&args(&["get", "k"])), args(&["get", "k"]));
    }

    /// An entry owns its bytes: arguments are slices of the connection's read buffer, and
    /// keeping one would keep the whole buffer (a 60 MiB `SET` pinned 64 MiB per entry).
    #[test]
    fn entries_never_hold_the_request_buffer() {
        let buffer = Bytes::from(vec![b'x'; 1 << 20]);
        let request = vec![buffer.slice(0..3), buffer.slice(3..4), buffer.slice(4..)];
        for (kept, arg) in kept_args(&request).iter().zip(&request) {
            let within = buffer.as_ptr_range();
            assert!(
                !within.contains(&kept.as_ptr()),
                "an argument of {} bytes still points into the request",
                arg.len()
            );
        }
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            kept_args(&args(&["auth", "u", "p"])),
            args(&["auth", "(redacted)", "(redacted)"])
        );
        assert_eq!(
            kept_args(&args(&["HELLO", "3", "AUTH", "u", "p"])),
            args(&["HELLO", "3", "AUTH", "(redacted)", "(redacted)"])
        );
        assert_eq!(kept_args(&args(&["hello", "3"])), args(&["hello", "3"]));
        assert_eq!(
            kept_args(&args(&[
                "CONFIG",
                "SET",
                "timeout",
                "5",
                "requirepass",
                "s3cret"
            ])),
            args(&["CONFIG", "SET", "timeout", "5", "requirepass", "(redacted)"])
        );
    }

    #[test]
    fn the_log_keeps_the_newest_up_to_its_length() {
        let log = SlowLog::new(0, 3);
        assert!(log.wants(Duration::ZERO));
        for i in 0..5 {
            log.record(
                Duration::from_micros(i),
                &args(&["get", &i.to_string()]),
                "127.0.0.1:1".into(),
                Bytes::new(),
            );
        }
        assert_eq!(log.len(), 3);
        let ids: Vec<u64> = log.entries.lock().iter().map(|e| e.id).collect();
        assert_eq!(ids, [4, 3, 2]);
        log.set_max_len(1);
        assert_eq!(log.len(), 1);
        log.set_slower_than_us(-1);
        assert!(!log.wants(Duration::from_secs(10)), "negative turns it off");
        log.set_slower_than_us(100);
        assert!(!log.wants(Duration::from_micros(99)));
        assert!(log.wants(Duration::from_micros(100)));
    }
}
