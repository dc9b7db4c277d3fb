//! Keyspace commands: `RENAME`, key listing (`KEYS`, `SCAN`, `DBSIZE`, `RANDOMKEY` through `scan_keys`), `OBJECT`, and `MOVE` / `COPY … DB` across databases.

use super::*;

pub(super) async fn rename(sh: &Shared, s: &mut Session<'_>, a: &[Bytes], nx: bool) -> Res<()> {
    let (src, dst) = (&a[1], &a[2]);
    let (i, j) = (sh.stripe(&s.ns, src), sh.stripe(&s.ns, dst));
    let _g1 = sh.lock_at(i.min(j)).write().await;
    let _g2 = if i != j {
        Some(sh.lock_at(i.max(j)).write().await)
    } else {
        None
    };
    let op = MultiOp::Rename {
        src: src.to_vec(),
        dst: dst.to_vec(),
        nx,
    };
    let reply = sh
        .cache
        .execute_multi(&s.ns, &op)
        .await
        .map_err(|e| cache_err(&e))?;
    write_reply(s, reply)
}

/// `Cache::scan_keys` on the blocking pool: KEYS and DBSIZE pass over every key (hundreds of
/// milliseconds at 400k keys), and on a worker thread they would hold up every client that
/// worker serves. Other clients' latency does not move while a KEYS, DBSIZE or SCAN runs.
pub(super) async fn scan_keys(
    sh: &Shared,
    ns: &str,
    from: ScanFrom<'_>,
    limit: usize,
) -> Res<Vec<Bytes>> {
    let (cache, ns) = (sh.cache.clone(), ns.to_owned());
    let (hash, after) = (from.hash(), from.after_key().map(<[u8]>::to_vec));
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let from = match &after {
            Some(a) => ScanFrom::after(a),
            None => ScanFrom::at_hash(hash),
        };
        runtime.block_on(cache.scan_keys(&ns, from, limit))
    })
    .await
    .map_err(|e| ReplyError::err(format!("key listing failed: {e}")))?
    .map_err(|e| cache_err(&e))
}

/// Most keys a listing reads from the layers at a time. A listing holds one page and what
/// it keeps, not every key of the database: `KEYS nomatch*` over 864k keys grew a node by
/// 180 MiB when it listed them all at once (Redis's `KEYS` allocates only its reply).
const LIST_PAGE: usize = 8_192;
/// Keys of the first page, before the keys' size is known.
const FIRST_PAGE: usize = 256;
/// Fewest keys a page asks for, however long the keys.
const MIN_PAGE: usize = 64;
/// About how many bytes of keys a page holds: with 8 KiB keys, a page of 8,192 was 64 MiB
/// in each layer (an attack review measured +129 MiB for a `KEYS` matching ten keys).
const PAGE_BYTES: usize = 1 << 20;

/// Folds the keys of `ns` into `acc` a page at a time (about [`PAGE_BYTES`] of keys, at
/// most [`LIST_PAGE`] keys), in scan order, until `step` returns
/// false or the keys run out; every key present throughout is seen once, as with `SCAN`.
/// On one blocking-pool thread from start to end (see [`scan_keys`]): pages are allocated
/// and freed on the same thread, so the allocator reuses them.
async fn fold_pages<T, F>(sh: &Shared, ns: &str, acc: T, mut step: F) -> Res<T>
where
    T: Send + 'static,
    F: FnMut(&mut T, Vec<Bytes>) -> bool + Send + 'static,
{
    let (cache, ns) = (sh.cache.clone(), ns.to_owned());
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut acc = acc;
        let mut after: Option<Bytes> = None;
        let mut size = FIRST_PAGE;
        loop {
            let from = ScanFrom::resume(after.as_deref());
            let page = runtime.block_on(cache.scan_keys(&ns, from, size))?;
            let last = page.len() < size;
            after = page.last().cloned();
            size = next_page_size(key_bytes(&page), page.len());
            if !step(&mut acc, page) || last {
                return Ok(acc);
            }
        }
    })
    .await
    .map_err(|e| ReplyError::err(format!("key listing failed: {e}")))?
    .map_err(|e| cache_err(&e))
}

/// The bytes of `keys`.
fn key_bytes(keys: &[Bytes]) -> usize {
    keys.iter().map(Bytes::len).sum()
}

/// Keys of the next page: as many as [`PAGE_BYTES`] hold of keys like the last page's
/// (`bytes` over `keys`), within [`MIN_PAGE`]..=[`LIST_PAGE`].
fn next_page_size(bytes: usize, keys: usize) -> usize {
    let mean = (bytes / keys.max(1)).max(1);
    (PAGE_BYTES / mean).clamp(MIN_PAGE, LIST_PAGE)
}

/// What a listed key costs while the listing holds it, beyond its bytes: its `Bytes`
/// handle and its reply's framing.
const LISTED_KEY_OVERHEAD: usize = 48;

/// The bytes a key listing holds, counted in the clients' memory budget
/// ([`crate::budget`]) until it is dropped: a `KEYS *` over a million keys held ~200 MB
/// that no budget saw, and six at once took a node past 2 GB (review helper-119).
struct ListingCharge {
    memory: Arc<crate::budget::ClientMemory>,
    held: usize,
    over: bool,
}

impl ListingCharge {
    /// Counts `n` more bytes; false (and noted) once the clients' total passes half the
    /// budget. Half: a listing is not among the holders the budget closes, and one that
    /// took the total to the budget had an ordinary client's 8 MB `SET` closed instead
    /// (review helper-120).
    fn add(&mut self, n: usize) -> bool {
        self.held += n;
        if self.memory.add(n) > self.memory.limit() / 2 {
            self.over = true;
        }
        !self.over
    }
}

impl Drop for ListingCharge {
    fn drop(&mut self) {
        self.memory.sub(self.held);
    }
}

/// The keys of `ns` that `keep` picks, at most `max`, in scan order. The keys held count in
/// the clients' memory budget while the listing runs; a listing that would take the total
/// past it stops and answers an `OOM` error.
pub(super) async fn list_keys(
    sh: &Shared,
    ns: &str,
    keep: impl Fn(&[u8]) -> bool + Send + 'static,
    max: usize,
) -> Res<Vec<Bytes>> {
    let charge = ListingCharge {
        memory: sh.client_memory.clone(),
        held: 0,
        over: false,
    };
    let (mut keys, charge) = fold_pages(sh, ns, (Vec::new(), charge), move |acc, page| {
        let (keys, charge) = acc;
        let before = keys.len();
        keys.extend(page.into_iter().filter(|k| keep(k)));
        let bytes: usize = keys[before..]
            .iter()
            .map(|k| k.len() + LISTED_KEY_OVERHEAD)
            .sum();
        charge.add(bytes) && keys.len() < max
    })
    .await?;
    if charge.over {
        return Err(ReplyError::Line(format!(
            "OOM listing the keys would take the clients' memory past half of server.max_input_bytes_total ({} bytes); list them with SCAN",
            sh.client_memory.limit()
        )));
    }
    keys.truncate(max);
    Ok(keys)
}

/// How many keys of `ns` `keep` picks, by a listing that keeps none of them.
pub(super) async fn count_keys(
    sh: &Shared,
    ns: &str,
    keep: impl Fn(&[u8]) -> bool + Send + 'static,
) -> Res<u64> {
    fold_pages(sh, ns, 0u64, move |n, page| {
        *n += page.iter().filter(|k| keep(k)).count() as u64;
        true
    })
    .await
}

/// Below this many keys (by the layers' counters), `DBSIZE` and `INFO keyspace` list the keys
/// and answer exactly; above it they answer the counters in O(1) (see
/// [`strata_core::Cache::key_count`]; docs/protocol.md).
const COUNT_EXACTLY_UP_TO: u64 = 10_000;

/// The number of keys of `ns`, as `DBSIZE` answers it: the layers' counters for a large
/// keyspace (O(1)), a listing for a small one or where a layer keeps no count (the Redis
/// bridge).
pub(super) async fn db_size(sh: &Shared, ns: &str) -> Res<u64> {
    match sh.cache.key_count_settled(ns).await {
        Some(n) if n > COUNT_EXACTLY_UP_TO => Ok(n),
        _ => count_keys(sh, ns, |_| true).await,
    }
}

/// The number of keys of `ns` in the slots this node serves on its cluster listener
/// (`serves`, [`cluster::listing_filter`]): exact for a small keyspace, else the cluster's
/// count scaled by the share of a sample of the cluster's keys in those slots
/// (docs/protocol.md). The sample is the whole cluster's, so the count it scales is too:
/// this node's own count, scaled so, read about two thirds of the slots' keys (a review).
pub(super) async fn served_size(
    sh: &Shared,
    ns: &str,
    serves: impl Fn(&[u8]) -> bool + Send + 'static,
) -> Res<u64> {
    match sh.cache.key_count_settled(ns).await {
        Some(n) if n > COUNT_EXACTLY_UP_TO => {
            let sample = scan_keys(sh, ns, ScanFrom::START, COUNT_EXACTLY_UP_TO as usize).await?;
            let hits = sample.iter().filter(|k| serves(k)).count() as u64;
            Ok(n * hits / (sample.len() as u64).max(1))
        }
        _ => count_keys(sh, ns, serves).await,
    }
}

/// `RANDOMKEY`: the first key at or after a random position in scan order (wrapping round),
/// of the slots this node serves when the connection is on the cluster listener.
pub(super) async fn random_key(sh: &Shared, s: &Session<'_>) -> Res<Option<Bytes>> {
    /// Keys read from a random place in scan order, one of which is picked. The key after
    /// a random hash alone was picked in proportion to the gap before it: of two keys, one
    /// came back 383 times in 400 (Redis: about 200 each); a pick among the next 32 (the
    /// keyspace's start once its end is reached) evens the gaps out, and is exact for up
    /// to 32 keys.
    const SAMPLE: usize = 32;
    let serves = cluster::listing_filter(sh, s);
    let listed = |k: &Bytes| serves.as_ref().is_none_or(|f| f(k));
    let mut keys = scan_keys(sh, &s.ns, ScanFrom::at_hash(rand::random()), SAMPLE).await?;
    if keys.len() < SAMPLE {
        for k in scan_keys(sh, &s.ns, ScanFrom::START, SAMPLE - keys.len()).await? {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys.retain(listed);
    if keys.is_empty() && serves.is_some() {
        // None of the keys read were this node's (the cluster listener): one of all of them,
        // each as likely, by a listing that keeps only the pick.
        let serves = cluster::listing_filter(sh, s);
        let (_, pick) = fold_pages(sh, &s.ns, (0u64, None), move |(seen, pick), page| {
            for k in page {
                if serves.as_ref().is_none_or(|f| f(&k)) {
                    *seen += 1;
                    if rand::random::<u64>() % *seen == 0 {
                        *pick = Some(k);
                    }
                }
            }
            true
        })
        .await?;
        return Ok(pick);
    }
    if keys.is_empty() {
        return Ok(None);
    }
    let i = rand::random::<u64>() as usize % keys.len();
    Ok(Some(keys.swap_remove(i)))
}

/// Bits of a key's scan hash a `SCAN` cursor leaves out: cursors are the hash's top 53
/// bits, so they stay within 2^53 − 1 — clients that hold a cursor in a JavaScript number
/// (node-redis 4 converts it with `Number()`) would otherwise round it and skip keys.
const CURSOR_SHIFT: u32 = 11;

/// The cursor of a key whose scan hash is `h`.
fn cursor_of(h: u64) -> u64 {
    h >> CURSOR_SHIFT
}

/// SCAN with a stateless cursor: the cursor is a position in scan order ([`strata_core::scan`]),
/// the top 53 bits of the smallest hash the next page starts at ([`CURSOR_SHIFT`]). A page
/// holds COUNT keys, plus any whose hash has the same cursor as the last one's (so that a
/// cursor never falls between them), and its cursor is that of the first key after it (0
/// when there is none). Every key present for the whole scan is returned exactly once,
/// whatever else runs, and a cursor stays valid across other clients' scans and restarts.
/// Any number is a valid cursor, as in Redis (one past 2^53 − 1 ends the scan).
pub(super) async fn scan(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    let cursor = std::str::from_utf8(&a[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or(ReplyError::err("invalid cursor"))?;
    let (mut glob, mut count, mut only_strings) = (None, 10usize, true);
    let mut i = 2;
    while i < a.len() {
        let Some(v) = a.get(i + 1) else {
            return Err(ReplyError::Syntax);
        };
        if eq_ic(&a[i], "MATCH") {
            glob = Some(Glob::new(v).map_err(|e| ReplyError::err(format!("{e}")))?);
        } else if eq_ic(&a[i], "COUNT") {
            // As Redis: not a number is `not an integer`, below 1 a syntax error.
            let n = parse_int(v).ok_or_else(super::not_int)?;
            if n < 1 {
                return Err(ReplyError::Syntax);
            }
            count = n as usize;
            count = count.min(100_000);
        } else if eq_ic(&a[i], "TYPE") {
            only_strings = eq_ic(v, "string");
        } else {
            return Err(ReplyError::Syntax);
        }
        i += 2;
    }
    let Some(from) = cursor
        .checked_shl(CURSOR_SHIFT)
        .filter(|f| f >> CURSOR_SHIFT == cursor)
    else {
        // Past every position (a cursor from before cursors were cut to 53 bits): done.
        s.reply.array(2);
        s.reply.bulk(b"0");
        s.reply.array(0);
        return Ok(());
    };
    let (mut page, count) = scan_page(sh, &s.ns, from, count).await?;
    let next = if page.len() <= count {
        0
    } else {
        let last = cursor_of(scan_hash(&page[count - 1]));
        let mut j = count;
        loop {
            if let Some(k) = page.get(j) {
                let h = cursor_of(scan_hash(k));
                if h != last {
                    page.truncate(j);
                    break h;
                }
                j += 1;
                continue;
            }
            // Every key read past the page shares its last cursor: read on until it changes.
            let from = page[j - 1].clone();
            let more = scan_keys(sh, &s.ns, ScanFrom::after(&from), SCAN_LOOKAHEAD).await?;
            if more.is_empty() {
                break 0;
            }
            page.extend(more);
        }
    };
    let slots = cluster::listing_filter(sh, s);
    let keys: Vec<&Bytes> = page
        .iter()
        .filter(|k| only_strings && glob.as_ref().is_none_or(|g| g.matches(k)))
        .filter(|k| slots.as_ref().is_none_or(|serves| serves(k)))
        .collect();
    s.reply.array(2);
    s.reply.bulk(next.to_string().as_bytes());
    s.reply.array(keys.len());
    for k in keys {
        s.reply.bulk(k);
    }
    Ok(())
}

/// Most bytes of keys one `SCAN` call reads: `COUNT` is a hint (Redis may answer fewer),
/// and 100,000 keys of 8 KiB read at once grew a node by 232 MiB (an attack review).
const SCAN_BYTES: usize = 4 << 20;

/// The keys a `SCAN` page examines from cursor position `from`: `count` and one more (to
/// place the next cursor), read in pieces of about [`PAGE_BYTES`] and at most [`SCAN_BYTES`]
/// of keys in all — then the count is what was read, less the one past it. Returns the keys
/// and the count the page answers for.
async fn scan_page(sh: &Shared, ns: &str, from: u64, count: usize) -> Res<(Vec<Bytes>, usize)> {
    let mut page: Vec<Bytes> = Vec::new();
    let (mut size, mut bytes) = (FIRST_PAGE, 0usize);
    loop {
        let want = (count + 1 - page.len()).min(size);
        let start = match page.last() {
            Some(k) => ScanFrom::after(k),
            None => ScanFrom::at_hash(from),
        };
        let got = scan_keys(sh, ns, start, want).await?;
        let end = got.len() < want;
        let read = key_bytes(&got);
        bytes += read;
        size = next_page_size(read, got.len());
        page.extend(got);
        if end || page.len() > count {
            return Ok((page, count));
        }
        if bytes >= SCAN_BYTES && page.len() >= 2 {
            let n = page.len() - 1;
            return Ok((page, n));
        }
    }
}

/// `OBJECT ENCODING | REFCOUNT | IDLETIME | FREQ | HELP`.
pub(super) async fn object(sh: &Shared, s: &mut Session<'_>, a: &[Bytes]) -> Res<()> {
    if a.len() == 2 && eq_ic(&a[1], "HELP") {
        let lines = [
            "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>. Strata keeps none: 0.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>. Strata keeps none: 0.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>: 1.",
        ];
        help(s, &lines);
        return Ok(());
    }
    if a.len() != 3 {
        return Err(ReplyError::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try OBJECT HELP.",
            String::from_utf8_lossy(&a[1][..a[1].len().min(64)])
        )));
    }
    if eq_ic(&a[1], "ENCODING") {
        return read_op(sh, s, Cmd::Object, a).await;
    }
    let known = ["REFCOUNT", "IDLETIME", "FREQ"];
    if !known.iter().any(|k| eq_ic(&a[1], k)) {
        return Err(ReplyError::err(format!(
            "unknown subcommand '{}'. Try OBJECT HELP.",
            String::from_utf8_lossy(&a[1][..a[1].len().min(64)])
        )));
    }
    match entry(sh, &s.ns, &a[2]).await? {
        None => s.reply.null(),
        Some(_) => s.reply.integer(i64::from(eq_ic(&a[1], "REFCOUNT"))),
    }
    Ok(())
}

/// `COPY`'s `DB n` option, and whether `REPLACE` is given, when `DB` is (the rest of the
/// syntax is checked by the COPY it becomes).
pub(super) fn copy_target(a: &[Bytes]) -> Option<(Bytes, bool)> {
    let mut target = None;
    let mut replace = false;
    let mut j = 3;
    while j < a.len() {
        if eq_ic(&a[j], "REPLACE") {
            replace = true;
        } else if eq_ic(&a[j], "DB") && j + 1 < a.len() {
            target = Some(a[j + 1].clone());
            j += 1;
        } else {
            return None;
        }
        j += 1;
    }
    target.map(|t| (t, replace))
}

/// The namespace of database `arg` for `MOVE` or `COPY … DB`, checked as Redis checks it
/// (an integer, in range), and refused where a move across namespaces is not one step: in a
/// cluster (as Redis Cluster refuses it; a namespace is a unit of placement) and behind the
/// Redis bridge (other nodes write the same Redis). The user must be allowed the target.
pub(super) fn other_database(
    sh: &Shared,
    s: &Session<'_>,
    arg: &[u8],
    command: &str,
) -> Res<String> {
    if sh.config.cluster.enabled && command == "MOVE" {
        return Err(ReplyError::err("MOVE is not allowed in cluster mode"));
    }
    let n = parse_int(arg)
        .filter(|n| i32::try_from(*n).is_ok())
        .ok_or_else(not_int)?;
    if n < 0 || n >= i64::from(sh.config.server.databases) {
        return Err(ReplyError::err("DB index is out of range"));
    }
    let target = format!("db{n}");
    if target != s.ns {
        if sh.config.cluster.enabled {
            return Err(ReplyError::err(
                "Copying to another database is not allowed in cluster mode",
            ));
        }
        if sh.config.l2.redis.enabled {
            return Err(ReplyError::err(format!(
                "{command} to another database is not supported behind the Redis bridge"
            )));
        }
    }
    if let Some(u) = &s.user
        && !u.allows_namespace(&target)
    {
        return Err(ReplyError::coded(
            "NOPERM",
            "No permissions to access a key",
        ));
    }
    Ok(target)
}

/// Copies `src` of the session's namespace to `dst` of namespace `to` (value, expiry, tags),
/// then removes `src` when `remove_src` (`MOVE`): `1`, or `0` when `src` is missing or `dst`
/// exists (and not `replace`). Both keys' locks are held throughout, so on this node it is
/// one step for every other client.
pub(super) async fn copy_across(
    sh: &Shared,
    s: &Session<'_>,
    src: &Bytes,
    to: &str,
    dst: &Bytes,
    replace: bool,
    remove_src: bool,
) -> Res<i64> {
    if to == s.ns && src == dst {
        return Err(ReplyError::err(
            "source and destination objects are the same",
        ));
    }
    let (i, j) = (sh.stripe(&s.ns, src), sh.stripe(to, dst));
    let _g1 = sh.lock_at(i.min(j)).write().await;
    let _g2 = if i != j {
        Some(sh.lock_at(i.max(j)).write().await)
    } else {
        None
    };
    let Some(e) = entry(sh, &s.ns, src).await? else {
        return Ok(0);
    };
    if !replace && entry(sh, to, dst).await?.is_some() {
        return Ok(0);
    }
    let mut opts = SetOptions {
        tags: e.tags.clone(),
        ..SetOptions::default()
    };
    match e.expires_at_ms {
        Some(at) if at <= sh.cache.now_ms() => return Ok(0),
        Some(at) => opts.expires_at_ms = Some(at),
        None => opts.persist = true,
    }
    sh.cache
        .set_with(to, dst.clone(), e.value.clone(), opts)
        .await
        .map_err(|e| cache_err(&e))?;
    if remove_src {
        // The copy is on disk before the source goes (a removal is, at once): a crash
        // between the two leaves the key in both databases, never in neither.
        sh.cache.settle_writes().await;
        remove(sh, &s.ns, src).await?;
    }
    Ok(1)
}
