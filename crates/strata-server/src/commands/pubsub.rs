//! Pub/sub commands: `SUBSCRIBE`, `UNSUBSCRIBE`, `PSUBSCRIBE`, `PUNSUBSCRIBE`, `PUBLISH` and
//! `PUBSUB`, with Redis's reply shapes (pushes in RESP3). The hub is [`crate::pubsub`]; the
//! connection writes queued messages out between requests (`conn.rs`).

use super::*;
use crate::pubsub::{Message, Push};

/// What a (un)subscribe command names: channels, patterns, or shard channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `SUBSCRIBE`, `UNSUBSCRIBE`.
    Channel,
    /// `PSUBSCRIBE`, `PUNSUBSCRIBE`.
    Pattern,
    /// `SSUBSCRIBE`, `SUNSUBSCRIBE`.
    Shard,
}

impl Kind {
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Kind::Channel => ("subscribe", "unsubscribe"),
            Kind::Pattern => ("psubscribe", "punsubscribe"),
            Kind::Shard => ("ssubscribe", "sunsubscribe"),
        }
    }
}

/// Commands a RESP2 connection may send while subscribed (Redis's list).
pub(super) fn allowed_while_subscribed(id: Cmd) -> bool {
    matches!(
        id,
        Cmd::Subscribe
            | Cmd::Unsubscribe
            | Cmd::Psubscribe
            | Cmd::Punsubscribe
            | Cmd::Ssubscribe
            | Cmd::Sunsubscribe
            | Cmd::Ping
            | Cmd::Quit
            | Cmd::Reset
    )
}

/// Whether the session is in RESP2's subscribed mode.
pub(super) fn in_subscribed_mode(s: &Session<'_>) -> bool {
    s.reply.proto == Protocol::Resp2 && s.sub.as_ref().is_some_and(|sub| sub.is_subscribed())
}

/// One (un)subscribe confirmation: `[word, name or nil, count]`; the count is of shard
/// channels for `Kind::Shard`, else of channels and patterns, as Redis counts.
fn confirm(s: &mut Session<'_>, kind: Kind, word: &str, name: Option<&[u8]>) {
    let count = s.sub.as_ref().map_or(0, |sub| {
        if kind == Kind::Shard {
            sub.shard_count()
        } else {
            sub.count()
        }
    });
    confirm_count(s, word, name, count);
}

/// A confirmation naming the count the client had right after it.
fn confirm_count(s: &mut Session<'_>, word: &str, name: Option<&[u8]>, count: usize) {
    s.reply.push(3);
    s.reply.bulk(word.as_bytes());
    match name {
        Some(n) => s.reply.bulk(n),
        None => s.reply.null(),
    }
    s.reply.integer(count as i64);
}

/// The session's queue, opened on first use (a subscription, `CLIENT TRACKING ON`, `HELLO
/// 3`): what pushes reach the connection through.
pub(super) fn subscription<'s>(
    sh: &Shared,
    s: &'s mut Session<'_>,
) -> &'s mut crate::pubsub::Subscription {
    let limit =
        usize::try_from(sh.config.server.pubsub_output_buffer_limit_bytes).unwrap_or(usize::MAX);
    let id = s.info.id;
    s.sub.get_or_insert_with(|| sh.pubsub.open(id, limit))
}

/// Checks a channel or pattern name against the size limits before anything is subscribed.
fn check_names(sh: &Shared, names: &[Bytes], pattern: bool) -> Res<()> {
    let max = sh.config.limits.max_key_bytes as usize;
    for n in names {
        if n.len() > max {
            return Err(ReplyError::err(format!(
                "channel or pattern of {} bytes, above limits.max_key_bytes ({max})",
                n.len()
            )));
        }
        if pattern && n.len() > strata_core::glob::MAX_PATTERN_BYTES {
            return Err(ReplyError::err(format!(
                "pattern of {} bytes, above the {} a pattern may have",
                n.len(),
                strata_core::glob::MAX_PATTERN_BYTES
            )));
        }
    }
    Ok(())
}

/// `SUBSCRIBE channel …`, `PSUBSCRIBE pattern …` and `SSUBSCRIBE shardchannel …`. The
/// names are checked first, so a refused command subscribes to nothing.
/// A long list gives the runtime a turn every [`super::PACE_ITEMS`] names.
pub(super) async fn subscribe(
    sh: &Shared,
    s: &mut Session<'_>,
    a: &[Bytes],
    kind: Kind,
) -> Res<()> {
    check_names(sh, &a[1..], kind == Kind::Pattern)?;
    if kind == Kind::Pattern {
        // Together: the pattern table's snapshots are rebuilt once per batch.
        for (i, batch) in a[1..].chunks(super::PACE_ITEMS).enumerate() {
            if i > 0 {
                tokio::task::yield_now().await;
            }
            let (counts, refused) = sh.pubsub.psubscribe_all(subscription(sh, s), batch);
            for (name, count) in batch.iter().zip(counts) {
                confirm_count(s, kind.words().0, Some(name), count);
            }
            if let Some(why) = refused {
                return Err(ReplyError::err(why));
            }
        }
        return Ok(());
    }
    for (i, name) in a[1..].iter().enumerate() {
        super::pace(i).await;
        let sub = subscription(sh, s);
        let done = match kind {
            Kind::Channel => sh.pubsub.subscribe(sub, name),
            Kind::Pattern => sh.pubsub.psubscribe(sub, name),
            Kind::Shard => sh.pubsub.ssubscribe(sub, name),
        };
        done.map_err(ReplyError::err)?;
        confirm(s, kind, kind.words().0, Some(name));
    }
    Ok(())
}

/// Writes the messages already queued for the session into its reply, ahead of what the
/// command about to run answers: a message published before a command was read is seen
/// before its reply (and never after an unsubscribe confirmation), as Redis pushes them.
/// Returns false when the reply buffer could not take them (the client is to be closed).
pub fn drain(s: &mut Session<'_>) -> bool {
    let Some(sub) = s.sub.as_mut() else {
        return true;
    };
    let subscribed = sub.is_subscribed();
    while let Some(m) = sub.try_recv() {
        write_push(&mut s.reply, subscribed, &m);
        if s.reply.overflowed() {
            return false;
        }
    }
    true
}

/// `UNSUBSCRIBE [channel …]`, `PUNSUBSCRIBE [pattern …]` and `SUNSUBSCRIBE [shardchannel
/// …]`: without names, from every one of that kind. A long list gives the runtime a turn
/// every [`super::PACE_ITEMS`] names.
pub(super) async fn unsubscribe(sh: &Shared, s: &mut Session<'_>, a: &[Bytes], kind: Kind) {
    let word = kind.words().1;
    let names: Vec<Bytes> = if a.len() > 1 {
        a[1..].to_vec()
    } else {
        s.sub.as_ref().map_or_else(Vec::new, |sub| {
            match kind {
                Kind::Channel => &sub.channels,
                Kind::Pattern => &sub.patterns,
                Kind::Shard => &sub.shard_channels,
            }
            .iter()
            .cloned()
            .collect()
        })
    };
    if names.is_empty() {
        confirm(s, kind, word, None);
        return;
    }
    for (i, name) in names.iter().enumerate() {
        super::pace(i).await;
        if let Some(sub) = s.sub.as_mut() {
            match kind {
                Kind::Channel => sh.pubsub.unsubscribe(sub, name),
                Kind::Pattern => sh.pubsub.punsubscribe(sub, name),
                Kind::Shard => sh.pubsub.sunsubscribe(sub, name),
            };
        }
        // Anything published to it before it was removed goes out before the confirmation.
        drain(s);
        confirm(s, kind, word, Some(name));
    }
}

/// `PUBLISH channel message` (and `SPUBLISH shardchannel message` with `sharded`): the
/// number of this node's clients that got it (as on a Redis Cluster node); other members
/// deliver it to theirs.
pub(super) fn publish(sh: &Shared, s: &mut Session<'_>, a: &[Bytes], sharded: bool) -> Res<()> {
    check_names(sh, &a[1..2], false)?;
    let max = sh.config.limits.max_value_bytes as usize;
    if a[2].len() > max {
        return Err(ReplyError::err(format!(
            "message of {} bytes, above limits.max_value_bytes ({max})",
            a[2].len()
        )));
    }
    let n = if sharded {
        sh.spublish(&a[1], &a[2])
    } else {
        sh.publish(&a[1], &a[2])
    };
    s.reply.integer(n as i64);
    Ok(())
}

/// `PUBSUB CHANNELS [pattern] | NUMSUB [channel …] | NUMPAT` (this node's subscriptions).
pub(super) async fn pubsub(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let sub = String::from_utf8_lossy(&a[1]).to_ascii_uppercase();
    match sub.as_str() {
        "CHANNELS" if a.len() <= 3 => {
            let glob = match a.get(2) {
                Some(p) => Some(
                    strata_core::glob::Glob::new(p).map_err(|e| ReplyError::err(e.to_string()))?,
                ),
                None => None,
            };
            let channels = sh.pubsub.channels(glob.as_ref());
            s.reply.array(channels.len());
            for c in channels {
                s.reply.bulk(&c);
            }
        }
        "NUMSUB" => {
            s.reply.array(2 * (a.len() - 2));
            for (i, c) in a[2..].iter().enumerate() {
                super::pace(i).await;
                s.reply.bulk(c);
                s.reply.integer(sh.pubsub.numsub(c) as i64);
            }
        }
        "NUMPAT" if a.len() == 2 => s.reply.integer(sh.pubsub.numpat() as i64),
        "SHARDCHANNELS" if a.len() <= 3 => {
            let glob = match a.get(2) {
                Some(p) => Some(
                    strata_core::glob::Glob::new(p).map_err(|e| ReplyError::err(e.to_string()))?,
                ),
                None => None,
            };
            let channels = sh.pubsub.shard_channels(glob.as_ref());
            s.reply.array(channels.len());
            for c in channels {
                s.reply.bulk(&c);
            }
        }
        "SHARDNUMSUB" => {
            s.reply.array(2 * (a.len() - 2));
            for (i, c) in a[2..].iter().enumerate() {
                super::pace(i).await;
                s.reply.bulk(c);
                s.reply.integer(sh.pubsub.shard_numsub(c) as i64);
            }
        }
        "HELP" => {
            let lines = [
                "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CHANNELS [<pattern>]",
                "    Return the currently active channels matching a <pattern> (default: '*').",
                "NUMPAT",
                "    Return number of subscriptions to patterns.",
                "NUMSUB [<channel> ...]",
                "    Return the number of subscribers for the specified channels, excluding",
                "    pattern subscriptions(default: no channels).",
                "SHARDCHANNELS [<pattern>]",
                "    Return the currently active shard level channels matching a <pattern> (default: '*').",
                "SHARDNUMSUB [<shardchannel> ...]",
                "    Return the number of subscribers for the specified shard level channel(s)",
            ];
            s.reply.array(lines.len());
            for l in lines {
                s.reply.simple(l);
            }
        }
        // Redis's own wording for each (the table's arity, and the handler's check).
        "NUMPAT" => {
            return Err(ReplyError::err(
                "wrong number of arguments for 'pubsub|numpat' command",
            ));
        }
        "CHANNELS" | "SHARDCHANNELS" => {
            return Err(ReplyError::err(format!(
                "unknown subcommand or wrong number of arguments for '{}'. Try PUBSUB HELP.",
                String::from_utf8_lossy(&a[1])
            )));
        }
        _ => {
            return Err(ReplyError::err(format!(
                "unknown subcommand '{}'. Try PUBSUB HELP.",
                String::from_utf8_lossy(&a[1][..a[1].len().min(128)])
            )));
        }
    }
    Ok(())
}

/// Writes one queued push as Redis would to this client: a message as `message`/`pmessage`;
/// an invalidation as an `invalidate` push in RESP3, or, to a RESP2 client in subscribed
/// mode (the target of a `REDIRECT`), as a message on `__redis__:invalidate`, and not at all
/// to another RESP2 client (it has no way to receive it); a broken redirect as a
/// `tracking-redir-broken` push, in RESP3 only.
pub fn write_push(reply: &mut strata_resp::Reply, subscribed: bool, p: &Push) {
    let resp3 = reply.proto == Protocol::Resp3;
    match p {
        Push::Message(m) => write_message(reply, m),
        Push::Invalidate {
            key,
            resp3_null,
            redirected,
        } => {
            if resp3 {
                reply.push(2);
                reply.bulk(b"invalidate");
            } else if subscribed && *redirected {
                reply.push(3);
                reply.bulk(b"message");
                reply.bulk(crate::tracking::INVALIDATE_CHANNEL);
            } else {
                return;
            }
            match key {
                Some(k) => {
                    reply.array(1);
                    reply.bulk(k);
                }
                // The tracking client's null, whoever receives it (as Redis).
                None if *resp3_null => reply.buf.extend_from_slice(b"_\r\n"),
                None => reply.buf.extend_from_slice(b"$-1\r\n"),
            }
        }
        Push::RedirectBroken(id) => {
            if resp3 {
                reply.push(2);
                reply.bulk(b"tracking-redir-broken");
                reply.integer(*id as i64);
            }
        }
    }
}

/// Writes a published message: `[message, channel, payload]`, `[smessage, channel,
/// payload]` or `[pmessage, pattern, channel, payload]`.
pub fn write_message(reply: &mut strata_resp::Reply, m: &Message) {
    match &m.pattern {
        None => {
            reply.push(3);
            reply.bulk(if m.sharded { b"smessage" } else { b"message" });
        }
        Some(p) => {
            reply.push(4);
            reply.bulk(b"pmessage");
            reply.bulk(p);
        }
    }
    reply.bulk(&m.channel);
    reply.bulk(&m.payload);
}
