//! Commands of the string family that are more than a parse into a key operation: `SET` and its variants, `GETEX`, `MSET`/`MSETNX`, and `STRATA.SET` (tags and TTL).

use super::*;

pub(super) async fn set_command(sh: &Shared, s: &mut Session<'_>, id: Cmd, a: &[Bytes]) -> Res<()> {
    let reply = write_one(sh, &s.ns, id, a).await?;
    write_reply(s, reply)
}

/// One `SET`-family or single-key write (`SET` and its options, `SETEX`, `PSETEX`, and what
/// [`exec`] runs): a blind set stores under its key's shared lock, anything else runs at the
/// key's authority under its exclusive lock. The reply is returned, not written: a
/// pipeline's group ([`super::execute_sets`]) runs several at once.
pub(super) async fn write_one(sh: &Shared, ns: &str, id: Cmd, a: &[Bytes]) -> Res<ops::Reply> {
    let key = &a[1];
    // The plain `SET key value` has nothing to parse (the hot path).
    let (value, ttl) = if id == Cmd::Set && a.len() == 3 {
        (a[2].clone(), Ttl::Default)
    } else {
        let op = single_op(sh, id, a)?;
        match op {
            KeyOp::Set { ttl, .. } if keyops::is_blind_set(&op) => {
                // The value is the argument itself (no copy): SET's third, SETEX's fourth.
                let value = if id == Cmd::Set { &a[2] } else { &a[3] };
                (value.clone(), ttl)
            }
            op => return exec_reply(sh, ns, key, &op).await,
        }
    };
    let timed = !matches!(ttl, Ttl::Default);
    let run = async {
        // A blind SET shares the lock (it reads nothing), and its layers order it by version.
        let _r = sh.key_lock(ns, key).read().await;
        // A SET replaces the entry: no tags.
        store(sh, ns, key, value, ttl, None).await
    };
    if timed {
        // Its wait for the lock (behind a writer of the key) counts against a cluster's
        // tenth of the expiry, as `exec_reply`'s does.
        strata_core::time::accepted_at(sh.cache.now_ms(), run).await?;
    } else {
        run.await?;
    }
    Ok(ops::Reply::Ok)
}

pub(super) async fn getex(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    match single_op(sh, Cmd::Getex, a)? {
        KeyOp::Get => match sh.cache.get(&s.ns, &a[1]).await {
            Ok(Some(v)) => s.reply.bulk(&v),
            Ok(None) => s.reply.null(),
            Err(e) => return Err(cache_err(&e)),
        },
        op => return exec(sh, s, &a[1], &op).await,
    }
    Ok(())
}

pub(super) async fn mset(sh: &Shared, s: &mut Session<'_>, a: &[Bytes], nx: bool) -> Res<()> {
    if a.len() % 2 != 1 {
        let name = if nx { "msetnx" } else { "mset" };
        return Err(ReplyError::err(format!(
            "wrong number of arguments for '{name}' command"
        )));
    }
    if nx && sh.config.cluster.enabled && a.len() / 2 > MAX_ATOMIC_KEYS {
        return Err(ReplyError::err(format!(
            "a cluster takes at most {MAX_ATOMIC_KEYS} keys in one atomic multi-key command"
        )));
    }
    let mut stripes: Vec<usize> = a[1..].chunks(2).map(|p| sh.stripe(&s.ns, &p[0])).collect();
    stripes.sort_unstable();
    stripes.dedup();
    let (mut exclusive, mut shared) = (Vec::new(), Vec::new());
    for i in stripes {
        if nx {
            exclusive.push(sh.lock_at(i).write().await);
        } else {
            shared.push(sh.lock_at(i).read().await);
        }
    }
    if nx {
        // At the keys' authority (a cluster's primary of their hash tag), atomically.
        let op = MultiOp::MsetNx(
            a[1..]
                .chunks(2)
                .map(|p| (p[0].to_vec().into(), p[1].to_vec().into()))
                .collect(),
        );
        let reply = sh
            .cache
            .execute_multi(&s.ns, &op)
            .await
            .map_err(|e| cache_err(&e))?;
        return write_reply(s, reply);
    }
    // Checked up front (size, policy), then written: a bad entry fails the whole call.
    sh.cache
        .set_many(
            &s.ns,
            a[1..].chunks(2).map(|p| (p[0].clone(), p[1].clone())),
            SetOptions::default(),
        )
        .await
        .map_err(|e| cache_err(&e))?;
    s.reply.ok();
    Ok(())
}

pub(super) async fn strata_set(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let mut opts = SetOptions::default();
    let mut tags = Vec::new();
    let mut i = 3;
    while i < a.len() {
        let Some(v) = a.get(i + 1) else {
            return Err(ReplyError::Syntax);
        };
        if eq_ic(&a[i], "EX") || eq_ic(&a[i], "PX") {
            let n = parse_int(v).ok_or_else(not_int)?;
            opts.ttl = Some(Duration::from_millis(keyops::expire_ms(
                n,
                eq_ic(&a[i], "EX"),
                "strata.set",
                sh.cache.now_ms(),
            )?));
        } else if eq_ic(&a[i], "TAG") {
            tags.push(v.clone());
        } else {
            return Err(ReplyError::Syntax);
        }
        i += 2;
    }
    opts.tags = strata_core::entry::Tags::new(tags);
    let _g = sh.key_lock(&s.ns, &a[1]).read().await;
    sh.cache
        .set_with(&s.ns, a[1].clone(), a[2].clone(), opts)
        .await
        .map_err(|e| cache_err(&e))?;
    s.reply.ok();
    Ok(())
}
