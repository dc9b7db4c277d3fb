//! L3 on a real RocksDB directory: the Tier contract suite, restarts (clean and `kill -9`),
//! expiry across restarts, the size bound, corruption, a directory that cannot be opened, and
//! the memtable bloom filter.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_core::rng::Rng;
use strata_core::scan::{ScanFrom, scan_hash};
use strata_core::testsuite;
use strata_core::{
    Clock, Entry, ManualClock, NamespacePolicy, SetOutcome, SystemClock, Tier, TierError, Version,
};
use strata_storage::{DiskTier, DiskTierConfig, SharedDiskTier, dir_size};

fn config(path: &Path, capacity: u64) -> DiskTierConfig {
    DiskTierConfig {
        path: path.to_path_buf(),
        capacity_bytes: capacity,
        sync_writes: false,
        write_behind: true,
        write_behind_ms: 0,
        min_free_bytes: 0,
        policies: HashMap::new(),
        default_policy: NamespacePolicy::unbounded(),
    }
}

fn open(path: &Path, clock: Arc<dyn Clock>) -> SharedDiskTier {
    let t = DiskTier::new(config(path, 256 << 20), clock);
    t.open().unwrap();
    SharedDiskTier(Arc::new(t))
}

fn entry(value: &[u8], version: u64) -> Entry {
    Entry::new(Bytes::copy_from_slice(value), Version::from_u64(version))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_suite_on_l3() {
    let dirs = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let keep = dirs.clone();
    testsuite::run(move |clock| {
        let dir = tempfile::tempdir().unwrap();
        let tier = open(dir.path(), Arc::new(clock));
        keep.lock().push(dir);
        async move { tier }
    })
    .await;
    drop(dirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::default());
    let t = open(dir.path(), clock.clone());
    for i in 0..1000u64 {
        let v = format!("value-{i}").repeat(20);
        t.set(
            "ns",
            Bytes::from(format!("k{i}")),
            entry(v.as_bytes(), i + 1),
        )
        .await
        .unwrap();
    }
    t.flush_namespace("gone").await.unwrap();
    t.0.close();
    assert!(
        t.get("ns", b"k1").await.is_err(),
        "a closed tier is unavailable"
    );

    let t = open(dir.path(), clock);
    for i in 0..1000u64 {
        let got = t
            .get("ns", format!("k{i}").as_bytes())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.value, Bytes::from(format!("value-{i}").repeat(20)));
        assert_eq!(got.version, Version::from_u64(i + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_holds_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let t = open(dir.path(), Arc::new(clock.clone()));
    let mut e = entry(b"v", 1);
    e.expires_at_ms = Some(clock.now_ms() + 10_000);
    t.set("ns", Bytes::from("short"), e).await.unwrap();
    t.set("ns", Bytes::from("forever"), entry(b"v", 1))
        .await
        .unwrap();
    t.0.close();
    clock.advance(Duration::from_secs(11));
    let t = open(dir.path(), Arc::new(clock.clone()));
    assert_eq!(
        t.get("ns", b"short").await.unwrap(),
        None,
        "expired while down"
    );
    assert!(t.get("ns", b"forever").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_max_ttl_drops_longer_lived_records_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let t = open(dir.path(), Arc::new(clock.clone()));
    let mut e = entry(b"v", 1);
    e.expires_at_ms = Some(clock.now_ms() + 48 * 3_600_000);
    t.set("ecoinvent", Bytes::from("f"), e).await.unwrap();
    t.0.close();

    let mut cfg = config(dir.path(), 256 << 20);
    cfg.policies.insert(
        "ecoinvent".into(),
        NamespacePolicy {
            max_ttl: Some(Duration::from_secs(86_400)),
            ..NamespacePolicy::default()
        },
    );
    let tier = DiskTier::new(cfg, Arc::new(clock));
    tier.open().unwrap();
    let t = SharedDiskTier(Arc::new(tier));
    assert_eq!(
        t.get("ecoinvent", b"f").await.unwrap(),
        None,
        "G5: 48 h entry served under a 24 h rule"
    );
    assert_eq!(t.0.counters().policy_drops.get(), 1);
}

/// Pages from a hash (a `SCAN` cursor) list every key once, in scan order; the records of
/// the layout before scan order (`ns_len ‖ ns ‖ key`) are moved at open and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_listed_in_scan_order_and_the_old_layout_moves_over() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::default());
    let t = open(dir.path(), clock.clone());
    let mut want: Vec<Bytes> = (0..3000).map(|i| Bytes::from(format!("key:{i}"))).collect();
    for k in &want {
        t.set("ns", k.clone(), entry(k, 1)).await.unwrap();
    }
    t.set("other", Bytes::from("x"), entry(b"o", 1))
        .await
        .unwrap();
    strata_core::scan::sort_keys(&mut want);
    let mut listed = Vec::new();
    let mut cursor = 0u64;
    loop {
        let page = t
            .scan_keys("ns", ScanFrom::at_hash(cursor), 101)
            .await
            .unwrap();
        if page.len() <= 100 {
            listed.extend(page);
            break;
        }
        cursor = scan_hash(&page[100]);
        listed.extend(page.into_iter().take(100));
    }
    assert_eq!(listed, want, "each key once, in scan order");
    t.0.close();

    // Rewrite every record under the old layout, as a release before scan order left them.
    {
        let db = rocksdb::DB::open_default(dir.path()).unwrap();
        for (ns, keys) in [("ns", want.clone()), ("other", vec![Bytes::from("x")])] {
            for k in keys {
                let new = strata_storage::disk_key(ns, &k);
                let v = db.get(&new).unwrap().unwrap();
                let old = [&[ns.len() as u8][..], ns.as_bytes(), &k].concat();
                db.put(&old, &v).unwrap();
                db.delete(&new).unwrap();
            }
        }
    }
    let t = open(dir.path(), clock);
    for k in &want {
        assert_eq!(t.get("ns", k).await.unwrap().unwrap().value, *k);
    }
    assert_eq!(
        t.scan_keys("ns", ScanFrom::START, usize::MAX)
            .await
            .unwrap(),
        want
    );
    let mut names = t.namespaces().await.unwrap();
    names.sort();
    assert_eq!(names, ["ns", "other"]);
    // Nothing is left under the old layout to come back at a later open.
    t.flush_namespace("ns").await.unwrap();
    t.0.close();
    let db = rocksdb::DB::open_default(dir.path()).unwrap();
    let old = db
        .iterator(rocksdb::IteratorMode::From(
            &[1u8],
            rocksdb::Direction::Forward,
        ))
        .map(Result::unwrap)
        .take_while(|(k, _)| k[0] < 65)
        .count();
    assert_eq!(old, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_record_is_a_counted_miss_and_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::default());
    let t = open(dir.path(), clock.clone());
    t.set("ns", Bytes::from("bad"), entry(&[7u8; 300], 1))
        .await
        .unwrap();
    t.set("ns", Bytes::from("good"), entry(b"fine", 1))
        .await
        .unwrap();
    t.0.close();

    // Flip bytes in the stored record through the raw RocksDB API.
    {
        let db = rocksdb::DB::open_default(dir.path()).unwrap();
        let key = strata_storage::disk_key("ns", b"bad");
        let mut raw = db.get(&key).unwrap().unwrap();
        let mid = raw.len() / 2;
        raw[mid] ^= 0xff;
        raw[mid + 1] ^= 0x0f;
        db.put(&key, &raw).unwrap();
    }

    let t = open(dir.path(), clock);
    assert_eq!(t.get("ns", b"bad").await.unwrap(), None);
    assert_eq!(t.0.counters().corrupt_records.get(), 1);
    assert_eq!(
        t.get("ns", b"good").await.unwrap().unwrap().value,
        Bytes::from("fine")
    );
    t.0.close();
    let db = rocksdb::DB::open_default(dir.path()).unwrap();
    assert!(
        db.get(strata_storage::disk_key("ns", b"bad"))
            .unwrap()
            .is_none(),
        "corrupt record kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unopenable_directory_leaves_the_tier_down_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    // Even root cannot create a directory under a regular file.
    let tier = DiskTier::new(config(&file.join("l3"), 1 << 20), Arc::new(SystemClock));
    let err = tier.open().unwrap_err();
    assert!(matches!(err, TierError::Unavailable(_)), "{err:?}");
    let t = SharedDiskTier(Arc::new(tier));
    assert!(!t.health().is_serving());
    assert!(matches!(
        t.get("ns", b"k").await,
        Err(TierError::Unavailable(_))
    ));
    assert_eq!(t.0.counters().open_failures.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compaction_filter_drops_expired_records() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let t = open(dir.path(), Arc::new(clock.clone()));
    for i in 0..200u64 {
        let mut e = entry(&[1u8; 200], i + 1);
        e.expires_at_ms = Some(clock.now_ms() + if i % 2 == 0 { 1_000 } else { 1_000_000 });
        t.set("ns", Bytes::from(format!("k{i}")), e).await.unwrap();
    }
    clock.advance(Duration::from_secs(10));
    t.0.compact().unwrap();
    t.0.close();
    let db = rocksdb::DB::open_default(dir.path()).unwrap();
    let records = db
        .iterator(rocksdb::IteratorMode::Start)
        .filter_map(Result::ok)
        .filter(|(k, _)| k.first() != Some(&0))
        .count();
    assert_eq!(records, 100, "compaction kept expired records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_three_times_the_capacity_stays_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let capacity: u64 = 32 << 20;
    let tier = DiskTier::new(config(dir.path(), capacity), Arc::new(SystemClock));
    tier.open().unwrap();
    let t = SharedDiskTier(Arc::new(tier));
    // Incompressible values, so that what is written is what is stored.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let value: Vec<u8> = (0..16 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let n = 3 * capacity / value.len() as u64;
    // Versions carry write times: one millisecond apart, as a steady writer would produce.
    let base = SystemClock.now_ms();
    for i in 0..n {
        let v = [value.as_slice(), &i.to_le_bytes()].concat();
        t.set(
            "ns",
            Bytes::from(format!("k{i:06}")),
            entry(&v, Version::from_parts(base + i, 0).as_u64()),
        )
        .await
        .unwrap();
    }
    let report = t.0.enforce_size().unwrap();
    assert!(report.before_bytes > capacity, "{report:?}");
    assert!(report.after_bytes <= capacity, "{report:?}");
    t.0.close();
    let on_disk = dir_size(dir.path());
    eprintln!(
        "size bound: wrote {} B into a {capacity} B L3: {report:?}, directory {on_disk} B",
        n * value.len() as u64
    );
    assert!(
        on_disk as f64 <= 1.2 * capacity as f64,
        "directory {on_disk} B > 1.2 × {capacity} B"
    );
    // The newest records survive eviction; the oldest are gone.
    let t = open(dir.path(), Arc::new(SystemClock));
    assert!(
        t.get("ns", format!("k{:06}", n - 1).as_bytes())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(t.get("ns", b"k000000").await.unwrap(), None);
}

/// The writer side of the kill -9 test: writes records and reports each acknowledged one on
/// stdout, until killed.
fn crash_writer(path: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = open(path, Arc::new(SystemClock));
        let mut out = std::io::stdout();
        for i in 0u64.. {
            let v = format!("payload-{i}-").repeat(50);
            t.set(
                "ns",
                Bytes::from(format!("k{i}")),
                entry(v.as_bytes(), i + 1),
            )
            .await
            .unwrap();
            writeln!(out, "acked {i}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn kill_9_while_writing_loses_no_acknowledged_record_and_corrupts_none() {
    if let Ok(path) = std::env::var("STRATA_CRASH_WRITER_DIR") {
        crash_writer(&PathBuf::from(path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_9_while_writing_loses_no_acknowledged_record_and_corrupts_none",
            "--nocapture",
        ])
        .env("STRATA_CRASH_WRITER_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = 0u64;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked < 3_000 {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("acked ") => {
                acked = line[6..].parse::<u64>().unwrap() + 1
            }
            Some(_) => {}
            None => panic!("writer exited early"),
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let t = open(dir.path(), Arc::new(SystemClock));
        for i in 0..acked {
            let got = t.get("ns", format!("k{i}").as_bytes()).await.unwrap();
            let got = got.unwrap_or_else(|| panic!("acknowledged record k{i} lost"));
            assert_eq!(
                got.value,
                Bytes::from(format!("payload-{i}-").repeat(50)),
                "k{i} damaged"
            );
        }
        // Records written after the last ack may or may not be there, but never damaged.
        for i in acked..acked + 100 {
            if let Some(e) = t.get("ns", format!("k{i}").as_bytes()).await.unwrap() {
                assert_eq!(e.value, Bytes::from(format!("payload-{i}-").repeat(50)));
            }
        }
        assert_eq!(t.0.counters().corrupt_records.get(), 0);
    });
}

/// The group-commit writer: many concurrent writers of the same keys, in shuffled version
/// order, end with the newest version of every key stored (a group never lets an older set
/// overwrite a newer one, whether the newer one is on disk or earlier in the same group), and
/// every `Stored`/`KeptNewer` answer is consistent with that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_grouped_writes_keep_the_newest_version() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), Arc::new(SystemClock));
    let mut tasks = Vec::new();
    for w in 0..32u64 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut stored = 0;
            for i in 0..50u64 {
                // Versions interleave across writers: writer w writes version i*32 + w.
                let key = format!("k{}", (i + w) % 8);
                let v = i * 32 + w + 1;
                let e = entry(format!("{key}@{v}").as_bytes(), v);
                if t.set("ns", Bytes::from(key), e).await.unwrap()
                    == strata_core::SetOutcome::Stored
                {
                    stored += 1;
                }
            }
            stored
        }));
    }
    let mut stored = 0;
    for task in tasks {
        stored += task.await.unwrap();
    }
    assert!(
        stored >= 8,
        "at least the final write of each key was stored"
    );
    for k in 0..8u64 {
        let key = format!("k{k}");
        let got = t.get("ns", key.as_bytes()).await.unwrap().unwrap();
        // The newest version written to this key: the largest i*32+w+1 with (i+w)%8 == k.
        let newest = (0..50u64)
            .flat_map(|i| (0..32u64).map(move |w| (i, w)))
            .filter(|(i, w)| (i + w) % 8 == k)
            .map(|(i, w)| i * 32 + w + 1)
            .max()
            .unwrap();
        assert_eq!(got.version, Version::from_u64(newest), "{key}");
        assert_eq!(got.value, Bytes::from(format!("{key}@{newest}")));
    }
}

/// L3's key counts (what `DBSIZE` reads): unknown until counted after an open, then kept
/// exact by writes, overwrites, removals and a namespace flush, counted again after a
/// pattern invalidation, and exact through an expiry pass with writes during its recount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_counts_follow_every_change_and_survive_a_recount_under_writes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let t = open(dir.path(), Arc::new(clock.clone()));
    assert_eq!(t.key_count("a"), None, "unknown before the first count");
    t.0.count_keys_if_unknown().unwrap();
    assert_eq!(t.key_count("a"), Some(0));
    for i in 0..1_000u64 {
        t.set("a", Bytes::from(format!("k{i}")), entry(b"v", i + 1))
            .await
            .unwrap();
    }
    for i in 0..10u64 {
        t.set("b", Bytes::from(format!("k{i}")), entry(b"v", i + 1))
            .await
            .unwrap();
    }
    // Overwrites count once; removals (and removals of absent keys) count down once.
    for i in 0..100u64 {
        t.set("a", Bytes::from(format!("k{i}")), entry(b"w", 5_000 + i))
            .await
            .unwrap();
    }
    for i in 900..1_100u64 {
        t.remove("a", format!("k{i}").as_bytes()).await.unwrap();
    }
    assert_eq!(t.key_count("a"), Some(900));
    let glob = strata_core::glob::Glob::new(b"k1?").unwrap();
    assert_eq!(t.invalidate_pattern("a", &glob).await.unwrap(), 10);
    // A pattern's deletes are not under the keys' locks: the counts are taken again.
    assert_eq!(t.key_count("a"), None);
    t.0.count_keys_if_unknown().unwrap();
    assert_eq!(t.key_count("a"), Some(890));
    t.flush_namespace("b").await.unwrap();
    assert_eq!(t.key_count("b"), Some(0));
    assert_eq!(t.key_count("a"), Some(890));

    // An expiry pass recounts from the records while writers add keys: the count is the
    // keys held when both are done.
    let mut e = entry(b"x", 10_000);
    e.expires_at_ms = Some(1_500);
    t.set("a", Bytes::from_static(b"short"), e).await.unwrap();
    clock.set(2_000);
    let writer = {
        let t = t.clone();
        tokio::spawn(async move {
            for i in 0..2_000u64 {
                t.set("a", Bytes::from(format!("n{i}")), entry(b"v", 20_000 + i))
                    .await
                    .unwrap();
            }
        })
    };
    for _ in 0..5 {
        t.purge_expired().await.unwrap();
    }
    writer.await.unwrap();
    assert_eq!(t.key_count("a"), Some(2_890));

    // A reopen forgets the counts; the next count finds the records.
    t.0.close();
    t.0.open().unwrap();
    assert_eq!(t.key_count("a"), None);
    t.0.count_keys_if_unknown().unwrap();
    assert_eq!(t.key_count("a"), Some(2_890));
}

/// The writer reads a key's stored record only when it has not written the key lately
/// (`known.rs`): overwrites, writes of an older version and rewrites of removed keys cost
/// no read, and the key counts stay exact through them. (Without that memory, each of these
/// writes is a read: half the writer's time under SET `-P 16` over a working set L3 holds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_written_lately_is_written_again_without_reading_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), Arc::new(SystemClock));
    t.0.count_keys_if_unknown().unwrap();
    let reads = || t.0.counters().writer_reads.get();
    for i in 0..1_000u64 {
        t.set("ns", Bytes::from(format!("k{i}")), entry(b"v1", 10 + i))
            .await
            .unwrap();
    }
    let first = reads();
    assert!(
        first >= 900,
        "new keys are read (bloom filters answer): {first}"
    );
    // Overwrites with newer versions.
    for i in 0..1_000u64 {
        let out = t
            .set("ns", Bytes::from(format!("k{i}")), entry(b"v2", 5_000 + i))
            .await
            .unwrap();
        assert_eq!(out, SetOutcome::Stored);
    }
    // Older versions: refused as the record is newer, without reading it.
    for i in 0..100u64 {
        let out = t
            .set("ns", Bytes::from(format!("k{i}")), entry(b"old", 1))
            .await
            .unwrap();
        assert_eq!(out, SetOutcome::KeptNewer);
    }
    // Removed, then written again: counted back.
    for i in 0..100u64 {
        assert!(t.remove("ns", format!("k{i}").as_bytes()).await.unwrap());
    }
    assert_eq!(t.key_count("ns"), Some(900));
    for i in 0..100u64 {
        t.set("ns", Bytes::from(format!("k{i}")), entry(b"v3", 9_000 + i))
            .await
            .unwrap();
    }
    let again = reads() - first;
    assert!(
        again <= 10,
        "{again} reads for 1,200 writes of keys written lately"
    );
    assert_eq!(t.key_count("ns"), Some(1_000));
    for (i, want) in [(0u64, &b"v3"[..]), (99, b"v3"), (100, b"v2"), (999, b"v2")] {
        let got = t.get("ns", format!("k{i}").as_bytes()).await.unwrap();
        assert_eq!(
            got.map(|e| e.value),
            Some(Bytes::copy_from_slice(want)),
            "k{i}"
        );
    }
    // A namespace flush (not under the keys' locks) empties the memory: the next writes
    // read again and are counted as new.
    t.flush_namespace("ns").await.unwrap();
    for i in 0..10u64 {
        t.set("ns", Bytes::from(format!("k{i}")), entry(b"v4", 20_000 + i))
            .await
            .unwrap();
    }
    assert_eq!(t.key_count("ns"), Some(10));
    assert!(
        reads() - first - again >= 10,
        "after a flush the writer reads again"
    );
}

/// Removals of older copies (what every cluster invalidation does) against a model, over a
/// seeded random mix of writes (older and newer), removals of every kind and reopens on a
/// few keys: L3 answers them from its memory of what it last wrote where it can
/// (`floors.rs`), and that memory must never spare a copy the removal should take — a
/// write of an older version after a removal, a write refused as older, a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_of_older_copies_agree_with_a_model_of_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), Arc::new(SystemClock));
    let mut model: HashMap<&str, u64> = HashMap::new();
    let keys = ["a", "b", "c"];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for step in 0..3_000 {
        let key = keys[next(3) as usize];
        let v = 1 + next(40);
        let held = model.get(key).copied();
        match next(10) {
            0..=3 => {
                let got = t
                    .set("ns", Bytes::from(key), entry(key.as_bytes(), v))
                    .await
                    .unwrap();
                if held.is_none_or(|h| h <= v) {
                    model.insert(key, v);
                    assert_eq!(got, strata_core::SetOutcome::Stored, "step {step}");
                } else {
                    assert_eq!(got, strata_core::SetOutcome::KeptNewer, "step {step}");
                }
            }
            4..=6 => {
                let n = t
                    .remove_older("ns", key.as_bytes(), Version::from_u64(v))
                    .await
                    .unwrap();
                let older = held.is_some_and(|h| h < v);
                assert_eq!(
                    n > 0,
                    older,
                    "step {step}: remove_older({key}, {v}) with {held:?}"
                );
                if older {
                    model.remove(key);
                }
            }
            7 => {
                let exact = held.filter(|_| next(2) == 0).unwrap_or(v);
                let gone = t
                    .remove_version("ns", key.as_bytes(), Version::from_u64(exact))
                    .await
                    .unwrap();
                assert_eq!(gone, held == Some(exact), "step {step}");
                if gone {
                    model.remove(key);
                }
            }
            8 => {
                assert_eq!(
                    t.remove("ns", key.as_bytes()).await.unwrap(),
                    held.is_some()
                );
                model.remove(key);
            }
            _ if next(10) == 0 => {
                t.0.close();
                t.0.open().unwrap();
            }
            _ => {}
        }
        let got = t
            .get("ns", key.as_bytes())
            .await
            .unwrap()
            .map(|e| e.version.as_u64());
        assert_eq!(got, model.get(key).copied(), "step {step}: {key}");
    }
}

/// A read of a key the memtable lacks is answered by the memtable's bloom filter, not a
/// skip-list search (decision 80): RocksDB's per-thread perf counters count the filter's
/// negative answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_memtable_lacks_is_ruled_out_by_its_bloom_filter() {
    use rocksdb::perf::{PerfContext, PerfMetric, PerfStatsLevel, set_perf_stats};
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), Arc::new(SystemClock));
    for i in 0..1_000u64 {
        t.set(
            "ns",
            Bytes::from(format!("present:{i}")),
            entry(b"v", i + 1),
        )
        .await
        .unwrap();
    }
    let tier = t.0.clone();
    let (negatives, found) = tokio::task::spawn_blocking(move || {
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut ctx = PerfContext::default();
        ctx.reset();
        for i in 0..100u64 {
            let key = format!("absent:{i}");
            assert_eq!(tier.read_blocking("ns", key.as_bytes()).unwrap(), None);
        }
        let negatives = ctx.metric(PerfMetric::BloomMemtableMissCount);
        let found = tier.read_blocking("ns", b"present:7").unwrap();
        set_perf_stats(PerfStatsLevel::Disable);
        (negatives, found)
    })
    .await
    .unwrap();
    assert!(
        negatives >= 90,
        "the memtable bloom filter ruled out {negatives} of 100 absent keys"
    );
    assert_eq!(found.map(|e| e.value), Some(Bytes::from_static(b"v")));
}

/// `settle` returns once every write queued before it has landed, also writes whose callers
/// gave up (a caller's timeout does not take a queued write back): what a node waits for
/// before it drops the copies of a write it gave up on a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_waits_for_queued_writes_whose_callers_gave_up() {
    let dir = tempfile::tempdir().unwrap();
    let l3 = open(dir.path(), Arc::new(SystemClock));
    // Nothing queued yet: settles at once.
    l3.settle().await.unwrap();
    let n = 3_000u64;
    let mut gave_up = 0;
    for i in 0..n {
        let key = Bytes::from(format!("k{i}"));
        // Polled once (queued), then dropped unanswered.
        let mut write = Box::pin(l3.set("ns", key, entry(b"v", i + 1)));
        let pending =
            std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx).is_pending()))
                .await;
        drop(write);
        if pending {
            gave_up += 1;
        }
    }
    assert!(gave_up > n / 2, "only {gave_up} of {n} calls were given up");
    l3.settle().await.unwrap();
    for i in 0..n {
        assert!(
            l3.get("ns", format!("k{i}").as_bytes())
                .await
                .unwrap()
                .is_some(),
            "k{i} had not landed when settle returned"
        );
    }
}

/// A tier whose writes stored behind wait `behind_ms` for the writer.
fn open_behind(path: &Path, capacity: u64, behind_ms: u64) -> SharedDiskTier {
    let mut c = config(path, capacity);
    c.write_behind_ms = behind_ms;
    let t = DiskTier::new(c, Arc::new(SystemClock));
    t.open().unwrap();
    SharedDiskTier(Arc::new(t))
}

async fn value_of(t: &SharedDiskTier, key: &str) -> Option<Bytes> {
    t.get("ns", key.as_bytes()).await.unwrap().map(|e| e.value)
}

/// A listing sees a write held behind whether the writer stores it before, during or after
/// the listing: it read the disk first and the pending map second, so a group the writer
/// stored in between was in neither, and a `KEYS *` right after 9,000 writes of 4 KiB keys
/// missed up to 1,000 of them (an attack review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_misses_no_write_the_writer_stores_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let t = open_behind(dir.path(), 256 << 20, 0);
    let long = "k".repeat(4096);
    for trial in 0..3u64 {
        let mark = format!(":{trial}:");
        for i in 0..3_000u64 {
            t.set_fresh(
                "ns",
                Bytes::from(format!("{long}{mark}{i}")),
                entry(b"v", trial * 10_000 + i + 1),
            )
            .await
            .unwrap();
        }
        for look in 0..4 {
            let keys = t.scan_keys("ns", ScanFrom::START, 1_000_000).await.unwrap();
            let this = keys
                .iter()
                .filter(|k| k.windows(mark.len()).any(|w| w == mark.as_bytes()))
                .count();
            assert_eq!(
                this, 3_000,
                "trial {trial}, listing {look}: {this} of 3,000 keys"
            );
        }
    }
}

/// Samples the bytes `t` holds behind `samples` times, `every_ms` apart: the most it saw.
fn most_behind(
    t: &SharedDiskTier,
    samples: usize,
    every_ms: u64,
) -> tokio::task::JoinHandle<usize> {
    let t = t.clone();
    tokio::spawn(async move {
        let mut most = 0;
        for _ in 0..samples {
            most = most.max(t.0.behind_bytes());
            tokio::time::sleep(std::time::Duration::from_millis(every_ms)).await;
        }
        most
    })
}

/// Writes past the bound of what L3 holds behind wait for the writer to make room, not for
/// `write_behind_ms`: the pending bytes stay under the bound under writers that outrun the
/// writer, however many write at once, every write lands, and a close releases writers
/// that wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_behind_bound_wait_for_room_not_for_the_timer() {
    let dir = tempfile::tempdir().unwrap();
    // A 16 MiB tier holds at most 1 MiB behind; the writer's timer is a minute away.
    let t = open_behind(dir.path(), 16 << 20, 60_000);
    let bound = 1usize << 20;
    let value = vec![b'x'; 1024];
    let started = std::time::Instant::now();
    let watcher = most_behind(&t, 400, 5);
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (t, value) = (t.clone(), value.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..1500u64 {
                let out = t
                    .set_fresh(
                        "ns",
                        Bytes::from(format!("w{w}:{i}")),
                        entry(&value, 1 + w * 10_000 + i),
                    )
                    .await
                    .unwrap();
                assert_eq!(out, SetOutcome::Stored);
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(30),
        "6,000 writes of 1 KiB past a 1 MiB bound took {took:?}: they waited for the timer"
    );
    let most = watcher.await.unwrap();
    // Reserved before each write is put: never past the bound.
    assert!(
        most <= bound,
        "{most} bytes were pending behind a {bound}-byte bound"
    );
    // Many writers of large values at once: each reserves before it puts (put first and
    // checked after, every writer's value went in: 100 clients of 2 MB values held 195 MiB
    // behind a 4 MiB bound, an attack review).
    let watcher = most_behind(&t, 300, 2);
    let big = vec![b'y'; 256 << 10];
    let mut writers = Vec::new();
    for w in 0..32u64 {
        let (t, big) = (t.clone(), big.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..4u64 {
                t.set_fresh(
                    "ns",
                    Bytes::from(format!("big{w}:{i}")),
                    entry(&big, 50_000 + w * 10 + i),
                )
                .await
                .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let most = watcher.await.unwrap();
    assert!(
        most <= bound,
        "32 writers of 256 KiB held {most} bytes behind a {bound}-byte bound"
    );
    assert_eq!(value_of(&t, "big31:3").await.as_deref(), Some(&big[..]));
    for w in 0..4u64 {
        for i in (0..1500u64).step_by(97) {
            assert_eq!(
                value_of(&t, &format!("w{w}:{i}")).await.as_deref(),
                Some(&value[..]),
                "w{w}:{i}"
            );
        }
    }

    // Writers waiting for room when the tier closes are released (as errors or as writes
    // the close stored), not left waiting.
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (t, value) = (t.clone(), value.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..3000u64 {
                if t.set_fresh(
                    "ns",
                    Bytes::from(format!("late{w}:{i}")),
                    entry(&value, 100_000 + w * 10_000 + i),
                )
                .await
                .is_err()
                {
                    break;
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    t.0.close();
    for w in writers {
        tokio::time::timeout(std::time::Duration::from_secs(10), w)
            .await
            .expect("a writer was left waiting after the close")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_stored_behind_answer_reads_and_removals_before_they_are_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    // The writer waits a minute: until the close, every write below is only pending.
    let t = open_behind(dir.path(), 256 << 20, 60_000);
    for i in 0..300u64 {
        let out = t
            .set_fresh(
                "ns",
                Bytes::from(format!("k{i}")),
                entry(format!("v{i}").as_bytes(), i + 1),
            )
            .await
            .unwrap();
        assert_eq!(out, SetOutcome::Stored);
    }
    assert!(
        t.0.behind_bytes() > 0,
        "nothing is pending: the writes went to disk"
    );
    assert_eq!(value_of(&t, "k7").await.as_deref(), Some(&b"v7"[..]));
    for i in 0..100u64 {
        assert!(
            t.remove("ns", format!("k{i}").as_bytes()).await.unwrap(),
            "k{i}"
        );
        assert_eq!(value_of(&t, &format!("k{i}")).await, None, "k{i} removed");
    }
    // Removals by version see the pending write's version.
    assert!(
        !t.remove_version("ns", b"k100", Version::from_u64(5))
            .await
            .unwrap()
    );
    assert!(
        t.remove_version("ns", b"k101", Version::from_u64(102))
            .await
            .unwrap()
    );
    assert_eq!(
        t.remove_older("ns", b"k102", Version::from_u64(103))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        t.remove_older("ns", b"k103", Version::from_u64(105))
            .await
            .unwrap(),
        1
    );
    assert_eq!(value_of(&t, "k100").await.as_deref(), Some(&b"v100"[..]));
    assert_eq!(value_of(&t, "k101").await, None);
    assert_eq!(value_of(&t, "k102").await.as_deref(), Some(&b"v102"[..]));
    assert_eq!(value_of(&t, "k103").await, None);
    // Overwritten while pending: the newest is read, and stored.
    for i in 200..300u64 {
        t.set_fresh(
            "ns",
            Bytes::from(format!("k{i}")),
            entry(b"newer", 1000 + i),
        )
        .await
        .unwrap();
    }
    assert_eq!(value_of(&t, "k250").await.as_deref(), Some(&b"newer"[..]));
    // A pattern invalidation and a scan reach pending writes.
    let removed = t
        .invalidate_pattern("ns", &strata_core::glob::Glob::new(b"k11*").unwrap())
        .await
        .unwrap();
    assert_eq!(removed, 10, "k110..k119 (k11 was removed before)");
    assert_eq!(value_of(&t, "k115").await, None);
    t.set_fresh("ns", Bytes::from_static(b"late"), entry(b"l", 5000))
        .await
        .unwrap();
    let keys = t.scan_keys("ns", ScanFrom::START, 1000).await.unwrap();
    assert!(
        keys.contains(&Bytes::from_static(b"late")),
        "a scan missed a pending write"
    );
    assert_eq!(keys.len(), 300 - 100 - 2 - 10 + 1);

    // A clean close stores what was pending; a new tier on the directory reads it.
    t.0.close();
    drop(t);
    let t = open_behind(dir.path(), 256 << 20, 60_000);
    assert_eq!(t.0.behind_bytes(), 0);
    for i in 0..300u64 {
        let k = format!("k{i}");
        // Removed: k0..k99, k101 (its version), k103 (older than asked), k110..k119.
        let gone = i < 100 || i == 101 || i == 103 || (110..120).contains(&i);
        let want: Option<Vec<u8>> = if gone {
            None
        } else if i >= 200 {
            Some(b"newer".to_vec())
        } else {
            Some(format!("v{i}").into_bytes())
        };
        assert_eq!(
            value_of(&t, &k).await.map(|b| b.to_vec()),
            want,
            "{k} after a restart"
        );
    }
    assert_eq!(value_of(&t, "late").await.as_deref(), Some(&b"l"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_racing_the_writer_never_bring_a_pending_write_back() {
    let dir = tempfile::tempdir().unwrap();
    // The writer stores pending writes as fast as it can, racing every removal below.
    let t = Arc::new(open_behind(dir.path(), 256 << 20, 0));
    let version = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let mut tasks = Vec::new();
    for task in 0..4u64 {
        let (t, version) = (t.clone(), version.clone());
        tasks.push(tokio::spawn(async move {
            // Each task alone changes its keys, so each key's last change is known.
            let mut model: HashMap<String, Option<Vec<u8>>> = HashMap::new();
            let mut rng = strata_core::rng::SeededRng::new(task + 17);
            for step in 0..3_000u64 {
                let k = format!("t{task}:{}", rng.below(40));
                if rng.below(3) == 0 {
                    t.remove("ns", k.as_bytes()).await.unwrap();
                    model.insert(k.clone(), None);
                } else {
                    let v = format!("{k}@{step}").into_bytes();
                    let at = version.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    t.set_fresh("ns", Bytes::from(k.clone()), entry(&v, at))
                        .await
                        .unwrap();
                    model.insert(k.clone(), Some(v));
                }
                if step % 7 == 0 {
                    tokio::task::yield_now().await;
                }
                let got = value_of(&t, &k).await.map(|b| b.to_vec());
                assert_eq!(&got, model.get(&k).unwrap(), "{k} at step {step}");
            }
            model
        }));
    }
    let mut model = HashMap::new();
    for task in tasks {
        model.extend(task.await.unwrap());
    }
    t.settle().await.unwrap();
    assert_eq!(t.0.behind_bytes(), 0, "settle left writes pending");
    for (k, want) in &model {
        assert_eq!(
            &value_of(&t, k).await.map(|b| b.to_vec()),
            want,
            "{k} once settled"
        );
    }
    // What is on disk agrees (a new tier reads nothing but the disk).
    let t = Arc::try_unwrap(t).ok().unwrap();
    t.0.close();
    drop(t);
    let t = open_behind(dir.path(), 256 << 20, 0);
    for (k, want) in &model {
        assert_eq!(
            &value_of(&t, k).await.map(|b| b.to_vec()),
            want,
            "{k} on disk"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_writes_stay_within_their_bound() {
    let dir = tempfile::tempdir().unwrap();
    // 16 MiB of capacity: 1 MiB may be pending. The writer would wait a minute.
    let t = open_behind(dir.path(), 16 << 20, 60_000);
    let value = vec![7u8; 64 << 10];
    let mut most = 0;
    for i in 0..64u64 {
        t.set_fresh("ns", Bytes::from(format!("big{i}")), entry(&value, i + 1))
            .await
            .unwrap();
        most = most.max(t.0.behind_bytes());
    }
    assert!(
        most <= (1 << 20) + (66 << 10),
        "{most} bytes pending, past the 1 MiB bound"
    );
    for i in 0..64u64 {
        assert_eq!(
            value_of(&t, &format!("big{i}")).await.map(|v| v.len()),
            Some(64 << 10)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_write_orders_with_loads_and_exact_removals_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let t = open_behind(dir.path(), 256 << 20, 60_000);
    // A load stamped before a pending write finishes after it: the pending write stays.
    t.set_fresh("ns", Bytes::from_static(b"a"), entry(b"set", 10))
        .await
        .unwrap();
    let out = t
        .set("ns", Bytes::from_static(b"a"), entry(b"loaded", 5))
        .await
        .unwrap();
    assert_eq!(out, SetOutcome::KeptNewer);
    assert_eq!(value_of(&t, "a").await.as_deref(), Some(&b"set"[..]));
    // A write newer than the pending one replaces it, in memory and on disk.
    t.set("ns", Bytes::from_static(b"a"), entry(b"newer", 20))
        .await
        .unwrap();
    assert_eq!(value_of(&t, "a").await.as_deref(), Some(&b"newer"[..]));
    // Removing exactly the pending version takes the older record it overwrote too.
    t.set("ns", Bytes::from_static(b"b"), entry(b"old", 1))
        .await
        .unwrap();
    t.set_fresh("ns", Bytes::from_static(b"b"), entry(b"pending", 2))
        .await
        .unwrap();
    assert!(
        t.remove_version("ns", b"b", Version::from_u64(2))
            .await
            .unwrap()
    );
    assert_eq!(
        value_of(&t, "b").await,
        None,
        "the overwritten value came back"
    );
    t.0.close();
    drop(t);
    let t = open_behind(dir.path(), 256 << 20, 60_000);
    assert_eq!(value_of(&t, "a").await.as_deref(), Some(&b"newer"[..]));
    assert_eq!(
        value_of(&t, "b").await,
        None,
        "the overwritten value came back after a restart"
    );
}
