//! `strata import`: copies the string keys of a live Redis (or of any server speaking RESP)
//! into a running Strata node, by `SCAN` with `MATCH`, keeping each key's remaining TTL,
//! into a chosen namespace, at a bounded rate, with a progress line, a summary, and a cursor
//! file that lets an interrupted import resume where it stopped.
//!
//! `SCAN` returns every key present for the whole scan at least once, from any cursor it
//! handed out, so resuming from the last cursor written loses nothing; a key may be copied
//! twice (the second `SET` writes the same value). A key that disappears between `SCAN` and
//! `GET` is skipped; keys of other types are not scanned (`SCAN … TYPE string`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use redis::{Value, cmd};
use serde::{Deserialize, Serialize};

/// What to copy, from where, to where.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The source, as a Redis URL (`redis://[user:password@]host:port[/db]`).
    pub from: String,
    /// The Strata node's RESP address, as a Redis URL.
    pub to: String,
    /// The namespace written into (`SELECT name`; database N is `dbN`).
    pub namespace: String,
    /// Only keys matching this Redis glob.
    pub pattern: String,
    /// Keys asked per `SCAN` call (a hint to the source).
    pub batch: usize,
    /// Keys copied per second at most (0: no limit).
    pub rate: u64,
    /// Where the resume state is kept (none: an interrupted import starts over).
    pub cursor_file: Option<PathBuf>,
    /// Keep keys the target already holds (`SET … NX`).
    pub keep_existing: bool,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

/// What an import did; also the content of the cursor file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportState {
    /// The source the state belongs to, its URL without user name or password (an import
    /// from elsewhere does not resume it).
    pub from: String,
    /// The target it belongs to, without credentials.
    #[serde(default)]
    pub to: String,
    /// The namespace it writes into.
    #[serde(default)]
    pub namespace: String,
    /// The pattern it belongs to.
    pub pattern: String,
    /// The source's `run_id` when the cursor was saved: a restarted source hashes its keys
    /// anew, and an old cursor would skip some of them.
    #[serde(default)]
    pub source_run_id: String,
    /// The `SCAN` cursor to go on from ("0" with `done`: finished).
    pub cursor: String,
    /// Whether the scan went all the way round.
    pub done: bool,
    /// Keys the scan returned.
    pub scanned: u64,
    /// Keys written to the target.
    pub copied: u64,
    /// Keys gone (or expired) between the scan and the read.
    pub gone: u64,
    /// Keys the target already held, kept as they were (`keep_existing`).
    pub kept: u64,
    /// Keys the target refused for good (too large for it, a TTL over the namespace's
    /// maximum): named on stderr as they happen; the import goes on and exits non-zero.
    #[serde(default)]
    pub refused: u64,
    /// Of the keys written to the target, those with a TTL.
    pub with_ttl: u64,
    /// For a file: the XXH3 of its bytes before the cursor (hex), so that a resumed import
    /// of a file regenerated under the same name is refused instead of skipping its first
    /// part (a review's import "imported 10000 keys" and held 5,000, 2026-12-05).
    #[serde(default)]
    pub file_prefix_hash: Option<String>,
}

/// Where an import starts: from `fresh`, from the unfinished state its cursor file holds,
/// or nowhere (that import finished).
pub(crate) enum Resume {
    /// Go on from this state.
    From(ImportState),
    /// The cursor file's import finished: nothing to do.
    Finished(ImportState),
}

/// Reads the cursor file at `path`, if any: a state of another import (source, target,
/// namespace or pattern) is refused, a finished one is said so.
pub(crate) fn resume(path: Option<&Path>, fresh: ImportState) -> anyhow::Result<Resume> {
    let Some(path) = path else {
        return Ok(Resume::From(fresh));
    };
    let Some(saved) = load_state(path)? else {
        return Ok(Resume::From(fresh));
    };
    if (&saved.from, &saved.to, &saved.namespace, &saved.pattern)
        != (&fresh.from, &fresh.to, &fresh.namespace, &fresh.pattern)
    {
        bail!(
            "{} belongs to an import of {:?} from {} into {:?} on {}; remove it or choose another --cursor-file",
            path.display(),
            saved.pattern,
            saved.from,
            saved.namespace,
            saved.to
        );
    }
    if saved.done {
        eprintln!(
            "{}: this import already finished ({} keys copied); remove the file to import again",
            path.display(),
            saved.copied
        );
        return Ok(Resume::Finished(saved));
    }
    Ok(Resume::From(saved))
}

/// Waits until `done` items since `started` are due at `rate` a second (0: no limit).
pub(crate) fn pace(rate: u64, done: u64, started: Instant) {
    if rate > 0 {
        let due = Duration::from_secs_f64(done as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

fn load_state(path: &Path) -> anyhow::Result<Option<ImportState>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("{} is not an import cursor file", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the state beside the file and renames it over: a crash leaves the old state or the
/// new one, never half of either.
pub(crate) fn save_state(path: &Path, state: &ImportState) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(state)?)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}

/// `url` without its user name and password: what the cursor file keeps and messages show.
pub(crate) fn without_credentials(url: &str) -> String {
    // `redis+unix:///socket?pass=…` carries them in the query.
    let url = url.split_once('?').map_or(url, |(u, _)| u);
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

pub(crate) fn connect(url: &str, what: &str) -> anyhow::Result<redis::Connection> {
    let shown = without_credentials(url);
    let client =
        redis::Client::open(url).with_context(|| format!("{what} URL {shown:?} is not valid"))?;
    let c = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .with_context(|| format!("connecting to the {what} {shown}"))?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    c.set_write_timeout(Some(Duration::from_secs(30)))?;
    Ok(c)
}

/// Largest `SCAN COUNT` asked of the source: a larger one blocks a single-threaded Redis
/// for the whole call.
pub const MAX_BATCH: usize = 10_000;

/// The `INFO` field `name` of `section`, from the source.
fn info_field(c: &mut redis::Connection, section: &str, name: &str) -> anyhow::Result<String> {
    let info: String = cmd("INFO")
        .arg(section)
        .query(c)
        .context("INFO on the source")?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or("")
        .trim()
        .to_owned())
}

/// Runs the import; returns what it did (also left in the cursor file when one is given).
pub fn import(opts: &ImportOptions) -> anyhow::Result<ImportState> {
    let source = without_credentials(&opts.from);
    let target = without_credentials(&opts.to);
    let mut state = ImportState {
        from: source.clone(),
        to: target.clone(),
        namespace: opts.namespace.clone(),
        pattern: opts.pattern.clone(),
        cursor: "0".into(),
        ..ImportState::default()
    };
    match resume(opts.cursor_file.as_deref(), state)? {
        Resume::Finished(saved) => return Ok(saved),
        Resume::From(s) => state = s,
    }
    let mut src = connect(&opts.from, "source")?;
    if info_field(&mut src, "cluster", "cluster_enabled")? == "1" {
        bail!(
            "{source} is a Redis Cluster node: SCAN sees only its own keys; import from each master in turn (one --cursor-file each)"
        );
    }
    let run_id = info_field(&mut src, "server", "run_id")?;
    if state.cursor != "0" && state.source_run_id != run_id {
        eprintln!(
            "{source} restarted since the cursor was saved (its run_id changed): its SCAN cursors mean nothing now, so the scan starts over (keys already copied are written again)"
        );
        state.cursor = "0".into();
    }
    state.source_run_id = run_id;
    let mut dst = connect(&opts.to, "target")?;
    let _: () = cmd("SELECT")
        .arg(&opts.namespace)
        .query(&mut dst)
        .with_context(|| format!("selecting namespace {:?} on the target", opts.namespace))?;
    let mut batch = opts.batch.clamp(1, MAX_BATCH);
    if opts.rate > 0 {
        // A batch goes out at once: at most a second's worth of the rate.
        batch = batch.min(usize::try_from(opts.rate).unwrap_or(usize::MAX));
    }
    let started = Instant::now();
    let scanned_before = state.scanned;
    let mut last_progress = Instant::now();
    loop {
        let (next, keys): (String, Vec<Vec<u8>>) = cmd("SCAN")
            .arg(&state.cursor)
            .arg("MATCH")
            .arg(&opts.pattern)
            .arg("COUNT")
            .arg(batch)
            .arg("TYPE")
            .arg("string")
            .query(&mut src)
            .context("SCAN on the source")?;
        state.scanned += keys.len() as u64;
        if !keys.is_empty() {
            // An error here leaves the cursor file at the previous batch: a rerun retries
            // this one.
            copy_batch(&mut src, &mut dst, &keys, opts.keep_existing, &mut state)?;
        }
        state.cursor = next;
        state.done = state.cursor == "0";
        if let Some(path) = &opts.cursor_file {
            save_state(path, &state)?;
        }
        if opts.progress && (last_progress.elapsed() >= Duration::from_secs(1) || state.done) {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\rscanned {}  copied {}  gone {}  kept {}  refused {}  {:.0} keys/s   ",
                state.scanned,
                state.copied,
                state.gone,
                state.kept,
                state.refused,
                (state.scanned - scanned_before) as f64 / secs
            );
            let _ = std::io::stderr().flush();
        }
        if state.done {
            if opts.progress {
                eprintln!();
            }
            return Ok(state);
        }
        // Ahead of the rate: wait until the keys scanned so far are due (scanned, not
        // copied: keys kept or refused cost the source as much).
        pace(opts.rate, state.scanned - scanned_before, started);
    }
}

/// Bytes of values one read-and-write round holds at most: a batch of large values is read
/// and written in several rounds (a key larger than this alone in one), so the import's
/// memory stays near this whatever the source holds.
const MAX_ROUND_BYTES: u64 = 64 << 20;

/// Copies `keys`: their lengths in one pipeline, then the values (each with its TTL) in
/// rounds of at most [`MAX_ROUND_BYTES`], each read in one pipeline and written in one. A key
/// the source cannot read as a string (its type changed since the scan) counts as gone; a
/// key the target refuses with `ERR` (too large for it, say) is named on stderr and counted
/// as refused; any other refusal stops the import.
fn copy_batch(
    src: &mut redis::Connection,
    dst: &mut redis::Connection,
    keys: &[Vec<u8>],
    keep_existing: bool,
    state: &mut ImportState,
) -> anyhow::Result<()> {
    // Lengths only, to cut the batch into rounds; a key gone since the scan reads as 0
    // here and as gone in its round (where value and TTL are read together).
    let mut sizes = redis::pipe();
    sizes.ignore_errors();
    for k in keys {
        sizes.cmd("STRLEN").arg(k);
    }
    let lengths: Vec<redis::RedisResult<i64>> = sizes
        .query(src)
        .context("reading key sizes from the source")?;
    let mut round: Vec<&[u8]> = Vec::new();
    let mut round_bytes = 0u64;
    for (k, len) in keys.iter().zip(lengths) {
        let len = len.ok().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        if !round.is_empty() && round_bytes + len > MAX_ROUND_BYTES {
            copy_round(src, dst, &round, keep_existing, state)?;
            round.clear();
            round_bytes = 0;
        }
        round.push(k);
        round_bytes += len;
    }
    if !round.is_empty() {
        copy_round(src, dst, &round, keep_existing, state)?;
    }
    Ok(())
}

/// Reads the values of `keys`, each with its TTL of the same moment, and writes them.
fn copy_round(
    src: &mut redis::Connection,
    dst: &mut redis::Connection,
    keys: &[&[u8]],
    keep_existing: bool,
    state: &mut ImportState,
) -> anyhow::Result<()> {
    // Each value with its TTL of the same moment (one MULTI): a key overwritten or
    // PERSISTed since the sizes were read is copied as it is now.
    let mut read = redis::pipe();
    read.atomic();
    for k in keys {
        read.cmd("GET").arg(*k).cmd("PTTL").arg(*k);
    }
    let values: Vec<Value> = match read.query(src) {
        Ok(v) => v,
        // A key whose type changed since the scan fails the whole transaction: read the
        // round key by key instead.
        Err(e) if e.code().is_some() => {
            let mut v = Vec::with_capacity(keys.len() * 2);
            for k in keys {
                let mut one = redis::pipe();
                one.atomic().cmd("GET").arg(*k).cmd("PTTL").arg(*k);
                match one.query::<Vec<Value>>(src) {
                    Ok(pair) => v.extend(pair),
                    Err(e) if e.code().is_some() => v.extend([Value::Nil, Value::Int(-2)]),
                    Err(e) => return Err(e).context("reading keys from the source"),
                }
            }
            v
        }
        Err(e) => return Err(e).context("reading keys from the source"),
    };
    let mut records: Vec<(&[u8], &[u8], Option<i64>)> = Vec::new();
    for (k, pair) in keys.iter().zip(values.chunks(2)) {
        let (Value::BulkString(v), Value::Int(pttl)) = (&pair[0], &pair[1]) else {
            state.gone += 1;
            continue;
        };
        if *pttl == -2 || (*pttl != -1 && *pttl <= 0) {
            state.gone += 1;
            continue;
        }
        records.push((k, v, (*pttl > 0).then_some(*pttl)));
    }
    write_keys(dst, &records, keep_existing, state)
}

/// Writes `records` (key, value, TTL in ms) in one pipeline: `SET key value [PX ttl] [NX]`.
/// A key the target refuses with `ERR` (too large for it, a TTL over the namespace's
/// maximum) is named on stderr and counted as refused, and the others go on; any other
/// refusal stops the import before its cursor passes the batch, so a rerun retries it.
pub(crate) fn write_keys(
    dst: &mut redis::Connection,
    records: &[(&[u8], &[u8], Option<i64>)],
    keep_existing: bool,
    state: &mut ImportState,
) -> anyhow::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut write = redis::pipe();
    write.ignore_errors();
    for (k, v, ttl) in records {
        let c = write.cmd("SET").arg(*k).arg(*v);
        if let Some(ms) = ttl {
            c.arg("PX").arg(*ms);
        }
        if keep_existing {
            c.arg("NX");
        }
    }
    let replies: Vec<redis::RedisResult<Value>> =
        write.query(dst).context("writing keys to the target")?;
    for ((k, _, ttl), r) in records.iter().zip(replies) {
        match r {
            // Counted once the target took it (a refused key's TTL is not in the summary).
            Ok(Value::Okay) => {
                state.copied += 1;
                state.with_ttl += u64::from(ttl.is_some());
            }
            Ok(Value::SimpleString(s)) if s == "OK" => {
                state.copied += 1;
                state.with_ttl += u64::from(ttl.is_some());
            }
            Ok(_) => state.kept += 1,
            // `ERR …`: this key cannot be stored there; the others can.
            Err(e) if e.code() == Some("ERR") => {
                eprintln!(
                    "\rkey {:?} not copied: {e}",
                    String::from_utf8_lossy(&k[..k.len().min(128)])
                );
                state.refused += 1;
            }
            // NOPERM, OOM, MISCONF, TRYAGAIN, READONLY…: the node takes no key now.
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "the target refused key {:?}; the cursor file still points before this batch",
                        String::from_utf8_lossy(&k[..k.len().min(128)])
                    )
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_leave_the_url() {
        assert_eq!(
            without_credentials("redis://user:p%40ss@10.0.0.5:6379/2"),
            "redis://10.0.0.5:6379/2"
        );
        assert_eq!(
            without_credentials("rediss://:secret@host:6380"),
            "rediss://host:6380"
        );
        assert_eq!(
            without_credentials("redis://host:6379"),
            "redis://host:6379"
        );
    }
}
