//! `strata serve` with its L3 on a failing disk, as a client and an operator see it: a
//! 48 MiB file system filled by `SET`s, a read-only one at start, restarts. A deleted or
//! overwritten value never comes back, `/health` says what is wrong within a second, and
//! the node recovers when the disk does. Mounting needs root; without it each test skips.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use redis::Commands;
use strata_tests::*;

/// One test of this binary at a time. Each fills a disk of its own, but RocksDB's
/// recovery once space is freed (flushes, compactions, deleting obsolete files after
/// out-of-space errors) ran past 45 s in CI with the others running beside it, and always
/// within 13 s alone; what is tested is the recovery, not how it shares two cores. (The
/// stall found then: below the watermark L3 never reopened after RocksDB's background
/// errors, and only a reopen deletes the files the flush freed; `DiskTier::reopen_due`.
/// Run side by side three times since, the binary's tests passed in 16–17 s.)
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The L3 entry of `/health`: (state, reason).
fn l3_health(s: &Server) -> (String, String) {
    let (_, body) = http_get(&s.admin(), "/health");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let l3 = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == "l3")
        .unwrap()
        .clone();
    (
        l3["state"].as_str().unwrap().to_owned(),
        l3["reason"].as_str().unwrap_or("").to_owned(),
    )
}

/// The files of an L3 directory with their sizes, and the lines of RocksDB's own logs that say
/// what happened (errors, space, flushes and compactions, recovery): for a failure message.
fn rocksdb_digest(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return format!("{} cannot be read", dir.display());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
        out.push_str(&format!("{name} {len}\n"));
        if name.starts_with("LOG") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            for l in text.lines().filter(|l| {
                ["rror", "space", "EVENT_LOG", "Recover"]
                    .iter()
                    .any(|w| l.contains(w))
            }) {
                out.push_str(&l[..l.len().min(300)]);
                out.push('\n');
            }
        }
    }
    out
}

/// Polls until `f` holds or `within` passes; returns whether it held.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Fills a 48 MiB L3 file system through the server, changes `victim` and `other` on the
/// full disk, and checks they never come back, before and after a restart. With `min_free`
/// `"1"` the free-space watermark is off, so RocksDB itself runs out of space (the deletes
/// fail in RocksDB and leave tombstones); with the default watermark, L3 sheds new values
/// before that. Returns the server (restarted) and the acknowledged big keys.
///
/// With `crash`, the node is killed (`kill -9`) right after the changes, and L3's maintenance
/// is slowed so that nothing reconciles before: only the marker file tells the next start.
fn fill_change_restart(fs: &Tmpfs, home: &std::path::Path, min_free: &str, crash: bool) -> Server {
    let data = fs.path().join("data");
    let interval = if crash { "600000" } else { "1000" };
    let ballast = fs.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 6 << 20]).unwrap();
    // L3's capacity is set far above the file system, as an operator might.
    let env = [
        ("STRATA__L3__DATA_DIR", data.to_str().unwrap()),
        ("STRATA__L3__CAPACITY_BYTES", "1073741824"),
        ("STRATA__L3__MIN_FREE_BYTES", min_free),
        ("STRATA__LIMITS__MAX_VALUE_BYTES", "2097152"),
        ("STRATA__L3__MAINTENANCE_INTERVAL_MS", interval),
    ];
    let mut s = Server::start_with_env(home, "", &env);
    let mut c = s.redis();
    let _: () = c.set("other", "o1-old").unwrap();
    let mut acked = Vec::new();
    for i in 0..80u64 {
        if i == 60 {
            // Written late, so that eviction (oldest first) leaves it on disk.
            let _: () = c.set("victim", "v1-old").unwrap();
        }
        let k = format!("big:{i}");
        let v = noise(1 << 20, i + 1);
        retry_eintr(&s, &mut c, |c| c.set::<_, _, ()>(&k, &v));
        acked.push(k);
    }
    // Health and the metric say the disk is in trouble within a few maintenance ticks.
    assert!(
        eventually(Duration::from_secs(3), || l3_health(&s).0 != "up"
            && metric_value(&s, "strata_layer_up{layer=\"l3\"}") != Some(1.0)),
        "health still up after filling the disk: {:?}",
        l3_health(&s)
    );
    let _: () = c.set("victim", "v2-new").unwrap();
    let n: i64 = c.del("victim").unwrap();
    assert_eq!(n, 1);
    let _: () = c.set("other", "o2-new").unwrap();
    // `victim` is gone from L1, so this read reaches L3.
    let got: Option<String> = c.get("victim").unwrap();
    assert_eq!(got, None, "a deleted value came back");
    let got: Option<String> = c.get("other").unwrap();
    assert_eq!(got.as_deref(), Some("o2-new"));

    // A restart on the same full disk (L1 starts empty, so every read reaches L3): never
    // the old values, and every acknowledged key reads as written or misses.
    if crash {
        assert!(metric_value(&s, "strata_l3_write_failures_total").unwrap() > 0.0);
        // Let the L3 writer meet the full disk with what it was given (with
        // `l3.write_behind` on, a crash takes what is younger than `write_behind_ms`).
        std::thread::sleep(Duration::from_millis(1_500));
        s.kill9();
        // RocksDB needs room to recover its log at open: an operator frees some.
        std::fs::remove_file(&ballast).unwrap();
    } else {
        assert!(s.terminate().success());
    }
    let s = Server::start_with_env(home, "", &env);
    let mut c = s.redis();
    let got: Option<String> = c.get("victim").unwrap();
    assert_eq!(got, None, "the deleted value came back after a restart");
    let got: Option<String> = c.get("other").unwrap();
    assert_ne!(
        got.as_deref(),
        Some("o1-old"),
        "an overwritten value came back after a restart"
    );
    let mut kept = 0;
    for (i, k) in acked.iter().enumerate() {
        let v: Option<Vec<u8>> = c.get(k).unwrap();
        if let Some(v) = v {
            assert_eq!(v, noise(1 << 20, i as u64 + 1), "{k} holds other bytes");
            kept += 1;
        }
    }
    eprintln!(
        "min_free_bytes {min_free}: {kept} of {} acknowledged 1 MiB values survived the restart",
        acked.len()
    );
    s
}

#[test]
fn out_of_space_in_rocksdb_never_brings_back_a_deleted_value_even_after_kill_9() {
    let _serial = one_at_a_time();
    let Some(fs) = Tmpfs::mount("48m") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let s = fill_change_restart(&fs, home.path(), "1", true);
    let _ = s;
}

#[test]
fn below_the_watermark_nothing_comes_back_and_l3_recovers_when_space_is_freed() {
    let _serial = one_at_a_time();
    let Some(fs) = Tmpfs::mount("48m") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let mut s = fill_change_restart(&fs, home.path(), "0", false);
    let mut c = s.redis();
    // Space comes back (FLUSHALL empties L3 in one range delete and compacts): health
    // returns to up and L3 stores and serves again, across a restart.
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    // RocksDB frees the space in steps (it flushes, compacts the range delete and deletes
    // obsolete files), slower while this binary's other tests fill their own disks beside
    // it: on 2026-12-01 it twice still had 3.7 MB of 4 free after 15 s there, and always
    // recovered within 13 s alone.
    assert!(
        eventually(Duration::from_secs(45), || l3_health(&s).0 == "up"),
        "L3 did not recover after space was freed: {:?}",
        l3_health(&s)
    );
    // A write is shed while free space is below the watermark, and space comes back in
    // steps (RocksDB flushes and compacts after the range delete): L3 stores again within a
    // few maintenance ticks, which the shed-writes and write-failure counters show. Both
    // count: the compaction after FLUSHALL can take the last free bytes, and a set taken
    // while L3 reopens to clear that background error fails (L1 keeps it; its tombstone is
    // applied at the open). A clean-clone run on 2026-12-02 ended the wait on such a write.
    let unstored = |s: &Server| {
        metric_or_zero(s, "strata_l3_shed_writes_total")
            + metric_or_zero(s, "strata_l3_write_failures_total")
    };
    assert!(
        eventually(Duration::from_secs(45), || {
            let before = unstored(&s);
            let _: () = c.set("after", "recovered").unwrap();
            unstored(&s) == before
        }),
        "L3 still sheds writes after space was freed: {:?}; log: {}",
        l3_health(&s),
        s.log()
    );
    assert!(s.terminate().success());
    let before = s.log();
    let data = fs.path().join("data");
    let env = [
        ("STRATA__L3__DATA_DIR", data.to_str().unwrap()),
        ("STRATA__L3__CAPACITY_BYTES", "1073741824"),
    ];
    let s = Server::start_with_env(home.path(), "", &env);
    let mut c = s.redis();
    let got: Option<String> = c.get("after").unwrap();
    assert_eq!(
        got.as_deref(),
        Some("recovered"),
        "a value L3 stored was lost across a restart; log before the restart: {before}\nlog after: \
         {}\nL3's directory: {}",
        s.log(),
        rocksdb_digest(&data)
    );
    let got: Option<String> = c.get("victim").unwrap();
    assert_eq!(got, None);
}

#[test]
fn refuse_writes_answers_misconf_while_l3_cannot_write_and_recovers() {
    let _serial = one_at_a_time();
    let Some(fs) = Tmpfs::mount("16m") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let data = fs.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    assert!(fs.remount("ro"));
    let env = [
        ("STRATA__L3__DATA_DIR", data.to_str().unwrap()),
        ("STRATA__L3__ON_FAILURE", "refuse_writes"),
    ];
    let s = Server::start_with_env(home.path(), "", &env);
    let (state, reason) = l3_health(&s);
    assert_eq!(state, "down", "{reason}");
    let mut raw = s.raw();
    let f = raw.cmd(&[b"SET", b"k", b"v"]);
    assert!(
        matches!(&f, strata_resp::Frame::Error(_)),
        "SET answered {f:?} while L3 was {:?}; log: {}",
        l3_health(&s),
        s.log()
    );
    let e = err_text(&f);
    assert!(e.starts_with("MISCONF "), "{e}");
    // Deletes and reads are served.
    assert_eq!(raw.cmd(&[b"DEL", b"k"]), strata_resp::Frame::Integer(0));
    assert_eq!(raw.cmd(&[b"GET", b"k"]), strata_resp::Frame::Null);
    // The disk comes back: within a few maintenance intervals L3 opens and writes work.
    assert!(fs.remount("rw"));
    assert!(
        eventually(Duration::from_secs(5), || l3_health(&s).0 == "up"),
        "{:?}",
        l3_health(&s)
    );
    assert_eq!(
        raw.cmd(&[b"SET", b"k", b"v"]),
        strata_resp::Frame::Simple("OK".into())
    );
}
