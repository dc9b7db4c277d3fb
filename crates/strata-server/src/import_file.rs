//! `strata import --file` and `strata warm`: keys from a file of JSON lines into a running
//! node's namespace, with the rate limit, progress line, summary and resumable cursor file
//! of `strata import` from a Redis ([`crate::import`]).
//!
//! Each line is one key: `{"key": "fuel:diesel", "value": "2.68", "ttl_ms": 86400000}`.
//! `key_base64` / `value_base64` carry bytes that are not UTF-8 instead; `ttl_ms` is
//! optional (absent or null: no expiry, the namespace's default applies as for any `SET`).
//! Blank lines and lines starting with `#` are skipped. A line that is not such an object
//! stops the import with its line number before anything of its batch is written; the
//! cursor file (a byte offset) still points at the batch, so a rerun after the fix goes on
//! from there.

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use redis::cmd;
use serde::Deserialize;

use crate::import::{
    ImportOptions, ImportState, MAX_BATCH, Resume, connect, pace, resume, save_state, write_keys,
};

/// Longest line read (a key and its value, encoded).
const MAX_LINE: usize = 64 << 20;
/// Bytes of values one write holds at most.
const MAX_ROUND_BYTES: usize = 64 << 20;

/// One line of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: Option<String>,
    key_base64: Option<String>,
    value: Option<String>,
    value_base64: Option<String>,
    ttl_ms: Option<i64>,
}

/// A key to write: key, value, TTL in ms.
type Record = (Vec<u8>, Vec<u8>, Option<i64>);

/// Whether a line read with its newline (the last may have none) holds more than `max`
/// bytes.
fn too_long(line: &[u8], max: usize) -> bool {
    line.strip_suffix(b"\n").unwrap_or(line).len() > max
}

fn field(text: Option<String>, b64: Option<String>, name: &str) -> Result<Vec<u8>, String> {
    match (text, b64) {
        (Some(t), None) => Ok(t.into_bytes()),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|e| format!("{name}_base64 is not base64: {e}")),
        (Some(_), Some(_)) => Err(format!("both {name} and {name}_base64")),
        (None, None) => Err(format!("no {name} (or {name}_base64)")),
    }
}

/// The record of one line (`None` for a blank or comment line).
fn parse_line(text: &str) -> Result<Option<Record>, String> {
    let t = text.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let l: Line = serde_json::from_str(t).map_err(|e| e.to_string())?;
    let key = field(l.key, l.key_base64, "key")?;
    if key.is_empty() {
        return Err("an empty key".into());
    }
    let value = field(l.value, l.value_base64, "value")?;
    if let Some(ttl) = l.ttl_ms
        && ttl <= 0
    {
        return Err(format!("ttl_ms {ttl} is not positive"));
    }
    Ok(Some((key, value, l.ttl_ms)))
}

/// Imports `file` into `opts.namespace` on `opts.to` (`opts.from` and `opts.pattern` are
/// ignored; the state names the file).
pub fn import_file(file: &Path, opts: &ImportOptions) -> anyhow::Result<ImportState> {
    // A pipe (`/dev/stdin`, `<(zcat dump.gz)`) has no path of its own to resolve to.
    let abs = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let source = format!("file://{}", abs.display());
    let target = crate::import::without_credentials(&opts.to);
    let mut state = ImportState {
        from: source.clone(),
        to: target.clone(),
        namespace: opts.namespace.clone(),
        pattern: "*".into(),
        cursor: "0".into(),
        ..ImportState::default()
    };
    match resume(opts.cursor_file.as_deref(), state)? {
        Resume::Finished(saved) => return Ok(saved),
        Resume::From(s) => state = s,
    }
    let mut offset: u64 = state.cursor.parse().context("the cursor file's offset")?;
    let f = std::fs::File::open(&abs).with_context(|| format!("opening {}", abs.display()))?;
    let len = f.metadata()?.len();
    if offset > len {
        bail!(
            "the cursor file points at byte {offset} of {}, which has {len}: was it replaced? remove the cursor file to start over",
            abs.display()
        );
    }
    let mut reader = BufReader::new(f);
    // The bytes before the cursor are read again (not skipped by a seek: a pipe has none),
    // hashed, and checked against what the cursor saw.
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    if offset > 0 {
        let mut prefix = std::io::Read::take(&mut reader, offset);
        let mut chunk = vec![0u8; 1 << 16];
        let mut last = 0u8;
        loop {
            let n = std::io::Read::read(&mut prefix, &mut chunk)
                .with_context(|| format!("reading {}", abs.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&chunk[..n]);
            last = chunk[n - 1];
        }
        let seen = format!("{:016x}", hasher.digest());
        // A cursor ends a line: anything else means the file changed under it.
        if last != b'\n' || state.file_prefix_hash.as_ref().is_some_and(|h| *h != seen) {
            bail!(
                "the cursor file points at byte {offset} of {}, whose bytes before it are not the ones imported: was the file changed? remove the cursor file to start over",
                abs.display()
            );
        }
    }
    let mut dst = connect(&opts.to, "target")?;
    let _: () = cmd("SELECT")
        .arg(&opts.namespace)
        .query(&mut dst)
        .with_context(|| format!("selecting namespace {:?} on the target", opts.namespace))?;
    let mut batch_max = opts.batch.clamp(1, MAX_BATCH);
    if opts.rate > 0 {
        batch_max = batch_max.min(usize::try_from(opts.rate).unwrap_or(usize::MAX));
    }
    let started = Instant::now();
    let scanned_before = state.scanned;
    let mut last_progress = Instant::now();
    let mut buf = Vec::new();
    loop {
        // A batch: up to `batch_max` records or MAX_ROUND_BYTES of them.
        let mut batch: Vec<Record> = Vec::new();
        let mut bytes = 0usize;
        let mut next = offset;
        let mut eof = false;
        while batch.len() < batch_max && bytes < MAX_ROUND_BYTES {
            buf.clear();
            // Room for a line of MAX_LINE bytes, its newline, and one byte more to tell a
            // longer one.
            let n = std::io::Read::take(&mut reader, MAX_LINE as u64 + 2)
                .read_until(b'\n', &mut buf)
                .with_context(|| format!("reading {}", abs.display()))?;
            if n == 0 {
                eof = true;
                break;
            }
            let line_no = state.scanned + 1;
            if too_long(&buf, MAX_LINE) {
                bail!(
                    "{} line {line_no}: longer than {MAX_LINE} bytes; nothing of its batch was written (the cursor file points before it)",
                    abs.display()
                );
            }
            let at_start = next == 0;
            let text = std::str::from_utf8(&buf).map_err(|_| {
                anyhow::anyhow!(
                    "{} line {line_no}: not UTF-8 (use key_base64 / value_base64 for bytes); nothing of its batch was written (the cursor file points before it)",
                    abs.display()
                )
            })?;
            // A byte-order mark (tools on Windows write one) is not part of the first line.
            let text = if at_start {
                text.strip_prefix('\u{feff}').unwrap_or(text)
            } else {
                text
            };
            match parse_line(text) {
                Ok(Some(r)) => {
                    bytes += r.0.len() + r.1.len();
                    batch.push(r);
                }
                Ok(None) => {}
                Err(why) => bail!(
                    "{} line {line_no}: {why}; nothing of its batch was written (the cursor file points before it)",
                    abs.display()
                ),
            }
            state.scanned += 1;
            next += n as u64;
            hasher.update(&buf);
        }
        if !batch.is_empty() {
            let records: Vec<(&[u8], &[u8], Option<i64>)> =
                batch.iter().map(|(k, v, t)| (&k[..], &v[..], *t)).collect();
            write_keys(&mut dst, &records, opts.keep_existing, &mut state)?;
        }
        offset = next;
        state.cursor = offset.to_string();
        state.file_prefix_hash = Some(format!("{:016x}", hasher.digest()));
        state.done = eof;
        if let Some(path) = &opts.cursor_file {
            save_state(path, &state)?;
        }
        if opts.progress && (last_progress.elapsed() >= Duration::from_secs(1) || state.done) {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\rread {} lines ({:.0}%)  copied {}  kept {}  refused {}  {:.0} lines/s   ",
                state.scanned,
                if len > 0 {
                    100.0 * offset as f64 / len as f64
                } else {
                    100.0
                },
                state.copied,
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
        pace(opts.rate, state.scanned - scanned_before, started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_of_exactly_the_limit_is_taken_with_its_newline() {
        assert!(!too_long(b"abcd\n", 4));
        assert!(!too_long(b"abcd", 4));
        assert!(too_long(b"abcde", 4));
        assert!(too_long(b"abcde\n", 4));
    }

    #[test]
    fn lines_are_read_as_documented_and_bad_ones_say_why() {
        assert_eq!(
            parse_line(r#"{"key":"a","value":"1","ttl_ms":500}"#).unwrap(),
            Some((b"a".to_vec(), b"1".to_vec(), Some(500)))
        );
        assert_eq!(
            parse_line(r#"{"key_base64":"AP8=","value":""}"#).unwrap(),
            Some((vec![0, 255], Vec::new(), None))
        );
        assert_eq!(parse_line("  # a comment").unwrap(), None);
        assert_eq!(parse_line("").unwrap(), None);
        for (bad, why) in [
            (r#"{"value":"1"}"#, "no key"),
            (r#"{"key":"a"}"#, "no value"),
            (r#"{"key":"a","value":"1","ttl_ms":0}"#, "not positive"),
            (r#"{"key":"a","value":"1","ttl":5}"#, "unknown field"),
            (r#"{"key":"a","key_base64":"YQ==","value":"1"}"#, "both key"),
            (r#"{"key":"a","value_base64":"%%%"}"#, "not base64"),
            ("not json", "expected"),
        ] {
            let e = parse_line(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
