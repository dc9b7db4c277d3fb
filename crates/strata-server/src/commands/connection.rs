//! Connection commands: `AUTH`, `ACL`, `HELLO`, `SELECT`, `CLIENT`.

use super::*;
use std::sync::atomic::Ordering;

pub(super) fn auth(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let (user, pass) = match a {
        [p] => {
            let acl = sh.acl.read();
            if !acl.any_password() && acl.initial_user().is_some() {
                return Err(ReplyError::err(
                    "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                ));
            }
            ("default", p)
        }
        [user, p] => (std::str::from_utf8(user).unwrap_or(""), p),
        _ => return Err(ReplyError::Syntax),
    };
    let found = sh.acl.read().authenticate(user, pass);
    match found {
        Some(u) => {
            s.user = Some(u);
            s.reply.ok();
            Ok(())
        }
        None => {
            // Each failure on a connection waits longer before its reply (0.1 s doubling
            // to 2 s): guessing on one connection is slow. And failures take turns
            // node-wide, so that many connections do not guess faster (300 of them made
            // ~840 guesses a second, review 2026-12-05).
            s.auth_failures = s.auth_failures.saturating_add(1);
            let shift = (s.auth_failures - 1).min(5);
            let backoff = std::time::Duration::from_millis(100 << shift)
                .min(std::time::Duration::from_secs(2));
            s.reply_delay = Some(sh.auth_throttle.wait(backoff));
            sh.metrics.auth_failures.incr();
            log_auth_failure(sh, s, user);
            Err(ReplyError::coded(
                "WRONGPASS",
                "invalid username-password pair or user is disabled.",
            ))
        }
    }
}

/// Logs a failed `AUTH`, at most one line a second for the node (the line counts those
/// left out), naming the user only when it is one the config defines: what a client sends
/// as a name is not written to the log (a review forged log lines and wrote terminal
/// escapes through it, and a client that swaps its arguments sends its password there).
fn log_auth_failure(sh: &Shared, s: &Session<'_>, user: &str) {
    static LIMIT: crate::guard::LogLimit = crate::guard::LogLimit::new();
    let Some(left_out) = LIMIT.admit() else {
        return;
    };
    let known = sh.acl.read().users().any(|u| u.name == user);
    tracing::warn!(
        addr = %s.info.addr,
        user = if known { user } else { "(not a configured user)" },
        failures_on_connection = s.auth_failures,
        other_failures_not_logged = left_out,
        "AUTH failed"
    );
}

/// `ACL WHOAMI | CAT | LIST | USERS`: the read-only part of Redis's ACL command (users come
/// from the config, so SETUSER and friends are not offered).
pub(super) fn acl_command(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let sub = &a[1];
    if eq_ic(sub, "WHOAMI") && a.len() == 2 {
        let name = s.user.as_ref().map_or("default", |u| u.name.as_str());
        s.reply.bulk(name.as_bytes());
    } else if eq_ic(sub, "CAT") && a.len() == 2 {
        let cats: &[&str] = &["keyspace", "read", "write", "string", "connection", "admin"];
        s.reply.array(cats.len());
        for c in cats {
            s.reply.bulk(c.as_bytes());
        }
    } else if eq_ic(sub, "LIST") && a.len() == 2 {
        let lines: Vec<String> = sh.acl.read().users().map(|u| u.describe()).collect();
        s.reply.array(lines.len());
        for l in lines {
            s.reply.bulk(l.as_bytes());
        }
    } else if eq_ic(sub, "USERS") && a.len() == 2 {
        let names: Vec<String> = sh.acl.read().users().map(|u| u.name.clone()).collect();
        s.reply.array(names.len());
        for n in names {
            s.reply.bulk(n.as_bytes());
        }
    } else if eq_ic(sub, "HELP") && a.len() == 2 {
        // Redis's lines for the subcommands Strata has (users come from the config).
        super::help(
            s,
            &[
                "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CAT",
                "    List all commands categories.",
                "LIST",
                "    Show users details in config file format.",
                "USERS",
                "    List all the registered usernames.",
                "WHOAMI",
                "    Return the current connection username.",
                "HELP",
                "    Prints this help.",
            ],
        );
    } else {
        return Err(ReplyError::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try ACL HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)])
        )));
    }
    Ok(())
}

pub(super) fn hello(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let mut proto = s.reply.proto;
    let mut i = 1;
    if let Some(v) = a.get(1) {
        match parse_int(v) {
            Some(2) => proto = Protocol::Resp2,
            Some(3) => proto = Protocol::Resp3,
            Some(_) => return Err(ReplyError::coded("NOPROTO", "unsupported protocol version")),
            None => {
                return Err(ReplyError::err(
                    "Protocol version is not an integer or out of range",
                ));
            }
        }
        i = 2;
    }
    let mut name = None;
    while i < a.len() {
        if eq_ic(&a[i], "AUTH") && i + 2 < a.len() {
            auth(sh, &mut *s, &a[i + 1..i + 3])?;
            // `auth` wrote +OK for the AUTH form; HELLO answers with its map instead.
            s.reply.buf.truncate(s.reply.buf.len() - b"+OK\r\n".len());
            i += 3;
        } else if eq_ic(&a[i], "SETNAME") && i + 1 < a.len() {
            check_client_name(&a[i + 1])?;
            name = Some(Bytes::copy_from_slice(&a[i + 1]));
            i += 2;
        } else {
            return Err(ReplyError::err(format!(
                "Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&a[i][..a[i].len().min(128)])
            )));
        }
    }
    if s.user.is_none() {
        return Err(ReplyError::coded(
            "NOAUTH",
            "HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        ));
    }
    if name.is_some() {
        s.info.detail.lock().name = name;
    }
    s.reply.proto = proto;
    if proto == Protocol::Resp3 {
        // Pushes (tracking notices, a redirect's) reach a RESP3 connection through its queue.
        super::pubsub::subscription(sh, s);
    }
    if let Some(t) = sh.tracking.tracker(s.info.id) {
        t.resp3.store(proto == Protocol::Resp3, Ordering::Relaxed);
    }
    s.reply.map(7);
    // "redis": client libraries gate features on it (redis-py's client-side caching needs
    // "redis" and 7.4 or later); INFO's strata_version says what answers.
    s.reply.bulk(b"server");
    s.reply.bulk(b"redis");
    s.reply.bulk(b"version");
    s.reply.bulk(REDIS_COMPAT_VERSION.as_bytes());
    s.reply.bulk(b"proto");
    s.reply.integer(proto.version());
    s.reply.bulk(b"id");
    s.reply.integer(s.info.id as i64);
    s.reply.bulk(b"mode");
    s.reply.bulk(b"standalone");
    s.reply.bulk(b"role");
    s.reply.bulk(b"master");
    s.reply.bulk(b"modules");
    s.reply.array(0);
    Ok(())
}

pub(super) fn select(sh: &Shared, s: &mut Session<'_>, arg: &Bytes) -> Res<()> {
    if s.cluster_mode {
        // As a Redis Cluster node: database 0 only (a client's pool would otherwise split
        // its keys between databases, one connection at a time).
        return match parse_int(arg) {
            Some(0) => {
                s.reply.ok();
                Ok(())
            }
            Some(_) => Err(ReplyError::err("SELECT is not allowed in cluster mode")),
            None => Err(not_int()),
        };
    }
    if let Some(n) = parse_int(arg) {
        if n < 0 || n >= i64::from(sh.config.server.databases) {
            return Err(ReplyError::err("DB index is out of range"));
        }
        s.ns = format!("db{n}");
        s.db = Some(n as u32);
        s.ns_hold = None;
    } else {
        // Digits that are not a database number Redis takes (`01`, `-0`, one past `i64`)
        // are Redis's error, not a namespace of that name: a zero-padded number from a
        // configuration file would otherwise select an empty namespace (review helper-118).
        // A namespace the configuration names (`[namespaces."007"]`) is selected all the
        // same (review helper-120).
        let digits = arg.strip_prefix(b"-").unwrap_or(arg);
        if !digits.is_empty()
            && digits.iter().all(u8::is_ascii_digit)
            && !std::str::from_utf8(arg).is_ok_and(|n| sh.config.namespaces.contains_key(n))
        {
            return Err(not_int());
        }
        let name = std::str::from_utf8(arg).map_err(|_| not_int())?;
        strata_core::namespace::Namespace::new(name)
            .map_err(|e| ReplyError::err(format!("{e}")))?;
        // Opened here, atomically against the bound: checking at SELECT and creating at
        // the first write let concurrent clients race past it.
        // Held while selected: an emptied namespace is reclaimed only once no client has
        // it selected (its next write would re-create it past the bound otherwise).
        let max = sh.config.server.max_namespaces as usize;
        let Ok(hold) = sh.cache.hold_namespace(name, max) else {
            sh.metrics.namespace_refusals.incr();
            return Err(ReplyError::err(format!(
                "too many namespaces: {name:?} would be one more than server.max_namespaces ({max})"
            )));
        };
        s.ns = name.to_owned();
        s.db = None;
        s.ns_hold = Some(hold);
    }
    s.reply.ok();
    Ok(())
}

pub(super) fn check_client_name(name: &[u8]) -> Res<()> {
    if name.len() > MAX_CLIENT_NAME {
        return Err(ReplyError::err(format!(
            "Client names are limited to {MAX_CLIENT_NAME} bytes"
        )));
    }
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(ReplyError::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

pub(super) fn client_line(sh: &Shared, c: &ClientInfo) -> String {
    let d = c.detail.lock().clone();
    let age = c.connected.elapsed().as_secs();
    let idle = c
        .connected
        .elapsed()
        .as_millis()
        .saturating_sub(u128::from(c.last_cmd_ms.load(Ordering::Relaxed)))
        / 1000;
    format!(
        "id={} addr={} laddr={} name={} age={} idle={} flags=N db={} ns={} cmd={} user={} resp={}\n",
        c.id,
        c.addr,
        sh.resp_addr,
        d.name
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default(),
        age,
        idle,
        d.db.map_or(-1, i64::from),
        d.namespace,
        COMMANDS
            .get(c.last_cmd.load(Ordering::Relaxed))
            .map_or_else(|| "NULL".to_owned(), |spec| spec.name.to_ascii_lowercase()),
        d.user,
        d.resp
    )
}

pub(super) fn client(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let sub = &a[1];
    if eq_ic(sub, "ID") && a.len() == 2 {
        s.reply.integer(s.info.id as i64);
    } else if eq_ic(sub, "SETNAME") && a.len() == 3 {
        check_client_name(&a[2])?;
        // A copy: the argument is a slice of the connection's read buffer, which a kept
        // slice would keep alive whole.
        s.info.detail.lock().name = (!a[2].is_empty()).then(|| Bytes::copy_from_slice(&a[2]));
        s.reply.ok();
    } else if eq_ic(sub, "GETNAME") && a.len() == 2 {
        match s.info.detail.lock().name.clone() {
            Some(n) => s.reply.bulk(&n),
            None => s.reply.null(),
        }
    } else if eq_ic(sub, "LIST") {
        s.sync_detail();
        let mut out = String::new();
        for c in sh.shared_clients() {
            out.push_str(&client_line(sh, &c));
        }
        s.reply.verbatim(out.as_bytes());
    } else if eq_ic(sub, "INFO") && a.len() == 2 {
        s.sync_detail();
        s.reply.verbatim(client_line(sh, &s.info).as_bytes());
    } else if eq_ic(sub, "SETINFO") && a.len() == 4 {
        // Client libraries announce their name and version; accepted and ignored.
        s.reply.ok();
    } else if (eq_ic(sub, "NO-EVICT") || eq_ic(sub, "NO-TOUCH")) && a.len() == 3 {
        s.reply.ok();
    } else if eq_ic(sub, "TRACKING") && a.len() >= 3 {
        super::tracking::client_tracking(sh, s, a)?;
    } else if eq_ic(sub, "CACHING") && a.len() >= 3 {
        super::tracking::client_caching(s, &a[2])?;
    } else if eq_ic(sub, "GETREDIR") && a.len() == 2 {
        super::tracking::client_getredir(s);
    } else if eq_ic(sub, "TRACKINGINFO") && a.len() == 2 {
        super::tracking::client_trackinginfo(sh, s);
    } else if eq_ic(sub, "HELP") && a.len() == 2 {
        // Redis's lines for the subcommands Strata has.
        super::help(
            s,
            &[
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CACHING (YES|NO)",
                "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
                "GETREDIR",
                "    Return the client ID we are redirecting to when tracking is enabled.",
                "GETNAME",
                "    Return the name of the current connection.",
                "ID",
                "    Return the ID of the current connection.",
                "INFO",
                "    Return information about the current client connection.",
                "LIST",
                "    Return information about client connections.",
                "NO-EVICT (ON|OFF)",
                "    Accepted; Strata evicts no client for memory by this flag.",
                "NO-TOUCH (ON|OFF)",
                "    Accepted.",
                "SETINFO <option> <value>",
                "    Set client meta attr. Options are:",
                "    * LIB-NAME: the client lib name.",
                "    * LIB-VER: the client lib version.",
                "SETNAME <name>",
                "    Assign the name <name> to the current connection.",
                "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]]",
                "         [OPTIN] [OPTOUT] [NOLOOP]",
                "    Control server assisted client side caching.",
                "TRACKINGINFO",
                "    Report tracking status for the current connection.",
                "HELP",
                "    Prints this help.",
            ],
        );
    } else {
        return Err(ReplyError::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)])
        )));
    }
    Ok(())
}
