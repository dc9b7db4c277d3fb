//! Client-side caching commands: `CLIENT TRACKING`, `CLIENT CACHING`, `CLIENT GETREDIR`,
//! `CLIENT TRACKINGINFO`, with Redis's options, checks and error texts; and what `execute`
//! does for a tracking client around each command (records the keys a read command reads
//! before it runs, their expiries after). The table is [`crate::tracking`].

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use super::*;
use crate::tracking::Tracker;

/// One connection's tracking state.
#[derive(Debug, Default, Clone)]
pub struct ClientTracking {
    /// `CLIENT TRACKING ON`.
    pub on: bool,
    /// BCAST mode.
    pub bcast: bool,
    /// OPTIN mode.
    pub optin: bool,
    /// OPTOUT mode.
    pub optout: bool,
    /// NOLOOP.
    pub noloop: bool,
    /// The client its notices go to (0: itself).
    pub redirect: u64,
    /// `CLIENT CACHING yes|no` was given for the next command (or the transaction).
    pub caching: bool,
    /// Its entry in the node's table.
    pub tracker: Option<Arc<Tracker>>,
}

impl ClientTracking {
    /// Whether the keys of the command about to run are recorded: tracking is on, not in
    /// BCAST mode, and OPTIN/OPTOUT say so given whether `CLIENT CACHING` was given for it
    /// (`caching`).
    pub fn records(&self, caching: bool) -> bool {
        let wanted = if self.optin {
            caching
        } else if self.optout {
            !caching
        } else {
            true
        };
        self.on && !self.bcast && wanted
    }
}

/// The keys of `args` a tracking client records: every key of a read-only command (a script
/// declares its keys, and `WATCH` reads none), none of a write, as Redis's tracking does.
pub(super) fn read_keys<'a>(spec: &CommandSpec, args: &'a [Bytes]) -> Vec<&'a [u8]> {
    let script = matches!(
        spec.id,
        Cmd::Eval | Cmd::Evalsha | Cmd::EvalRo | Cmd::EvalshaRo
    );
    if !script && (spec.write || spec.id == Cmd::Watch) {
        return Vec::new();
    }
    super::cluster::command_keys(spec, args)
}

/// The keys `EXEC` is about to run reads of (its queued read commands').
pub(super) fn queued_read_keys(s: &Session<'_>) -> Vec<Bytes> {
    let mut out = Vec::new();
    for cmd in s.tx.queued() {
        if let Some((_, spec)) = cmd.first().and_then(|n| lookup(n)) {
            out.extend(read_keys(spec, cmd).into_iter().map(Bytes::copy_from_slice));
        }
    }
    out
}

/// After a recorded read: notes each key's expiry, so that its clients are told when it
/// passes. What a read below L1 served carries its expiry (`served`: read again, a key
/// that expired meanwhile, or whose copy L1 lost, would be found absent and never
/// announced); L1 answers for a key it holds, fresh or expired since the read; the keys
/// neither knows are read again, together.
pub(super) async fn note_expiries(
    sh: &Shared,
    ns: &str,
    keys: &[&[u8]],
    served: &strata_core::changes::Served,
) {
    // Each served key's earliest expiry (`Some(None)`: it never expires), when the read
    // served a key more than once.
    let mut from_below: HashMap<&[u8], Option<u64>> = HashMap::with_capacity(served.len());
    for (k, at) in served {
        let e = from_below.entry(&k[..]).or_insert(*at);
        *e = match (*e, *at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let mut rest = Vec::new();
    for k in keys {
        if let Some(at) = from_below.get(k) {
            if let Some(at) = at {
                sh.tracking.expires_at(k, *at);
            }
            continue;
        }
        match sh.cache.l1_expiry(ns, k) {
            Some(Some(at)) => sh.tracking.expires_at(k, at),
            Some(None) => {}
            None => rest.push(*k),
        }
    }
    if rest.is_empty() {
        return;
    }
    let found =
        futures_util::future::join_all(rest.iter().map(|k| sh.cache.get_entry(ns, k))).await;
    for (k, e) in rest.iter().zip(found) {
        if let Ok(Some(Entry {
            expires_at_ms: Some(at),
            ..
        })) = e
        {
            sh.tracking.expires_at(k, at);
        }
    }
}

/// `CLIENT TRACKING ON|OFF [REDIRECT id] [BCAST] [PREFIX p]... [OPTIN] [OPTOUT] [NOLOOP]`.
pub(super) fn client_tracking(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let (mut redirect, mut bcast, mut optin, mut optout, mut noloop) =
        (0u64, false, false, false, false);
    let mut prefixes: Vec<Bytes> = Vec::new();
    let mut j = 3;
    while j < a.len() {
        let more = j + 1 < a.len();
        let opt = &a[j];
        if eq_ic(opt, "REDIRECT") && more {
            j += 1;
            if redirect != 0 {
                return Err(ReplyError::err(
                    "A client can only redirect to a single other client",
                ));
            }
            let id = parse_int(&a[j]).ok_or(ReplyError::NotInteger)?;
            if id <= 0 || !sh.client_exists(id as u64) {
                return Err(ReplyError::err(
                    "The client ID you want redirect to does not exist",
                ));
            }
            redirect = id as u64;
        } else if eq_ic(opt, "BCAST") {
            bcast = true;
        } else if eq_ic(opt, "OPTIN") {
            optin = true;
        } else if eq_ic(opt, "OPTOUT") {
            optout = true;
        } else if eq_ic(opt, "NOLOOP") {
            noloop = true;
        } else if eq_ic(opt, "PREFIX") && more {
            j += 1;
            if a[j].len() > sh.config.limits.max_key_bytes as usize {
                return Err(ReplyError::err(format!(
                    "prefix of {} bytes, above limits.max_key_bytes ({})",
                    a[j].len(),
                    sh.config.limits.max_key_bytes
                )));
            }
            if prefixes.len() >= crate::tracking::MAX_CLIENT_PREFIXES {
                return Err(ReplyError::err(format!(
                    "a client may name at most {} tracking prefixes",
                    crate::tracking::MAX_CLIENT_PREFIXES
                )));
            }
            prefixes.push(Bytes::copy_from_slice(&a[j]));
        } else {
            return Err(ReplyError::Syntax);
        }
        j += 1;
    }
    let id = s.info.id;
    if eq_ic(&a[2], "OFF") {
        sh.tracking.disable(id);
        s.tracking = ClientTracking::default();
        s.reply.ok();
        return Ok(());
    }
    if !eq_ic(&a[2], "ON") {
        return Err(ReplyError::Syntax);
    }
    let old = &s.tracking;
    if !bcast && !prefixes.is_empty() {
        return Err(ReplyError::err(
            "PREFIX option requires BCAST mode to be enabled",
        ));
    }
    if old.on && old.bcast != bcast {
        return Err(ReplyError::err(
            "You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.",
        ));
    }
    if bcast && (optin || optout) {
        return Err(ReplyError::err(
            "OPTIN and OPTOUT are not compatible with BCAST",
        ));
    }
    if optin && optout {
        return Err(ReplyError::err(
            "You can't specify both OPTIN mode and OPTOUT mode",
        ));
    }
    if (optin && old.optout) || (optout && old.optin) {
        return Err(ReplyError::err(
            "You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.",
        ));
    }
    let existing: Vec<Bytes> = sh
        .tracking
        .tracker(id)
        .map(|t| t.prefixes.clone())
        .unwrap_or_default();
    if bcast {
        // Bounded before the pairwise check below (Redis's, for its error texts).
        if existing.len() + prefixes.len() > crate::tracking::MAX_CLIENT_PREFIXES
            || existing
                .iter()
                .chain(&prefixes)
                .map(Bytes::len)
                .sum::<usize>()
                > crate::tracking::MAX_CLIENT_PREFIX_BYTES
        {
            return Err(ReplyError::err(format!(
                "a client may name at most {} tracking prefixes of {} bytes in all",
                crate::tracking::MAX_CLIENT_PREFIXES,
                crate::tracking::MAX_CLIENT_PREFIX_BYTES
            )));
        }
        for (i, p) in prefixes.iter().enumerate() {
            if let Some(e) = existing.iter().find(|e| overlap(e, p)) {
                return Err(ReplyError::err(format!(
                    "Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(e)
                )));
            }
            if let Some(q) = prefixes[i + 1..].iter().find(|q| overlap(p, q)) {
                return Err(ReplyError::err(format!(
                    "Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(q)
                )));
            }
        }
        if prefixes.is_empty() {
            // Every key (added to the client's prefixes, unchecked, as Redis does).
            prefixes.push(Bytes::new());
        }
    }
    let mut t = Tracker::new(id);
    (t.redirect, t.bcast, t.optin, t.optout, t.noloop) = (redirect, bcast, optin, optout, noloop);
    t.prefixes = prefixes;
    t.resp3 = AtomicBool::new(s.reply.proto == Protocol::Resp3);
    let tracker = sh.tracking.enable(t).map_err(ReplyError::err)?;
    // Its notices (or a broken redirect's) come through the connection's queue.
    pubsub::subscription(sh, s);
    s.tracking = ClientTracking {
        on: true,
        bcast,
        optin,
        optout,
        noloop,
        redirect,
        caching: false,
        tracker: Some(tracker),
    };
    s.reply.ok();
    Ok(())
}

/// Whether one prefix starts the other (Redis refuses overlapping prefixes of one client).
fn overlap(a: &[u8], b: &[u8]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// `CLIENT CACHING YES|NO`.
pub(super) fn client_caching(s: &mut Session<'_>, opt: &[u8]) -> Res<()> {
    if !s.tracking.on {
        return Err(ReplyError::err(
            "CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
        ));
    }
    if eq_ic(opt, "YES") {
        if !s.tracking.optin {
            return Err(ReplyError::err(
                "CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
            ));
        }
    } else if eq_ic(opt, "NO") {
        if !s.tracking.optout {
            return Err(ReplyError::err(
                "CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
            ));
        }
    } else {
        return Err(ReplyError::Syntax);
    }
    s.tracking.caching = true;
    s.reply.ok();
    Ok(())
}

/// `CLIENT GETREDIR`: the redirect target, 0 for none, -1 when tracking is off.
pub(super) fn client_getredir(s: &mut Session<'_>) {
    let r = if s.tracking.on {
        s.tracking.redirect as i64
    } else {
        -1
    };
    s.reply.integer(r);
}

/// `CLIENT TRACKINGINFO`: flags, redirect and prefixes, as Redis answers it.
pub(super) fn client_trackinginfo(sh: &Shared, s: &mut Session<'_>) {
    let t = &s.tracking;
    let tracker = sh.tracking.tracker(s.info.id);
    let mut flags: Vec<&str> = vec![if t.on { "on" } else { "off" }];
    if t.bcast {
        flags.push("bcast");
    }
    if t.optin {
        flags.push("optin");
        if t.caching {
            flags.push("caching-yes");
        }
    }
    if t.optout {
        flags.push("optout");
        if t.caching {
            flags.push("caching-no");
        }
    }
    if t.noloop {
        flags.push("noloop");
    }
    if tracker
        .as_ref()
        .is_some_and(|t| t.broken.load(std::sync::atomic::Ordering::Relaxed))
    {
        flags.push("broken_redirect");
    }
    let redirect = if t.on { t.redirect as i64 } else { -1 };
    let mut prefixes = tracker.map(|t| t.prefixes.clone()).unwrap_or_default();
    prefixes.sort();
    s.reply.map(3);
    s.reply.bulk(b"flags");
    s.reply.set(flags.len());
    for f in flags {
        s.reply.bulk(f.as_bytes());
    }
    s.reply.bulk(b"redirect");
    s.reply.integer(redirect);
    s.reply.bulk(b"prefixes");
    s.reply.array(prefixes.len());
    for p in &prefixes {
        s.reply.bulk(p);
    }
}
