//! L3 on a failing disk, for real: RocksDB on a small tmpfs that the test mounts and fills, a
//! read-only mount, a corrupt MANIFEST and SST. Whatever the disk does, L3 never serves a
//! value that was deleted or overwritten (G3), reports the fault at once, and recovers when
//! the disk does. Mounting needs root; without it each test says so and skips.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use strata_core::{
    Clock, Entry, NamespacePolicy, SetOutcome, SystemClock, Tier, TierHealth, Version,
};
use strata_storage::{DiskTier, DiskTierConfig, SharedDiskTier};

/// A tmpfs of a given size, unmounted on drop.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn tmpfs(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn config(path: &Path, capacity: u64, min_free: u64) -> DiskTierConfig {
    DiskTierConfig {
        path: path.to_path_buf(),
        capacity_bytes: capacity,
        sync_writes: false,
        write_behind: true,
        write_behind_ms: 0,
        min_free_bytes: min_free,
        policies: HashMap::new(),
        default_policy: NamespacePolicy::unbounded(),
    }
}

fn tier(path: &Path, capacity: u64, min_free: u64) -> (Arc<DiskTier>, SharedDiskTier) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let t = Arc::new(DiskTier::new(config(path, capacity, min_free), clock));
    (t.clone(), SharedDiskTier(t))
}

fn entry(value: &[u8], version: u64) -> Entry {
    Entry::new(Bytes::copy_from_slice(value), Version::from_u64(version))
}

fn value_of(e: Option<Entry>) -> Option<Vec<u8>> {
    e.map(|e| e.value.to_vec())
}

/// `n` bytes that do not compress.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Fills L3 with 1 MiB values until RocksDB refuses one; returns the keys it stored.
async fn fill(l3: &SharedDiskTier, version: &mut u64) -> Vec<String> {
    let mut stored = Vec::new();
    for i in 0..200 {
        let big = noise(1 << 20, i + 1);
        *version += 1;
        let k = format!("fill:{i}");
        match l3
            .set("ns", Bytes::from(k.clone()), entry(&big, *version))
            .await
        {
            Ok(SetOutcome::Stored) => stored.push(k),
            Ok(_) => {}
            Err(_) => return stored,
        }
    }
    panic!("the disk never filled up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_brings_back_a_deleted_or_overwritten_value() {
    let Some(fs) = Mount::tmpfs("24m") else {
        return;
    };
    let data = fs.path().join("l3");
    // The capacity is far above the file system (a misconfiguration) and the watermark is
    // off (1 byte), so the writes run into ENOSPC itself.
    let (disk, l3) = tier(&data, 1 << 30, 1);
    disk.open().unwrap();
    let mut v = 1u64;
    l3.set("ns", Bytes::from("victim"), entry(b"v1-old", v))
        .await
        .unwrap();
    l3.set("ns", Bytes::from("other"), entry(b"o1-old", v))
        .await
        .unwrap();
    let stored = fill(&l3, &mut v).await;
    assert!(!stored.is_empty());
    assert!(
        disk.counters().write_failures.get() > 0,
        "the disk filled without a failure"
    );
    // The disk is full: the overwrite and the delete fail in RocksDB...
    v += 1;
    let over = l3
        .set("ns", Bytes::from("other"), entry(b"o2-new", v))
        .await;
    let del = l3.remove("ns", b"victim").await;
    assert!(
        over.is_err() && del.is_err(),
        "expected both to fail on a full disk: {over:?} {del:?}"
    );
    // ...and neither older value is served.
    assert_eq!(
        value_of(l3.get("ns", b"victim").await.unwrap_or(None)),
        None
    );
    assert_eq!(value_of(l3.get("ns", b"other").await.unwrap_or(None)), None);
    // Health says so at once (no maintenance tick ran).
    let h = l3.health();
    assert!(
        matches!(&h, TierHealth::Degraded(r) | TierHealth::Down(r) if r.contains("could not apply") || r.contains("off the read path")),
        "{h:?}"
    );
    assert!(l3.write_fault().is_some());

    // The process dies before the disk recovers: the next start, on the still-full file
    // system, must not serve them either. Whether RocksDB opens there at all, and whether
    // the reconcile at open finds room for its range delete, depends on the bytes the
    // failed writes left (it did in most runs, not all): either is right, serving is not.
    drop(l3);
    drop(disk);
    let (disk, l3) = tier(&data, 1 << 30, 1);
    let mut reconciled = 0;
    if disk.open().is_ok() {
        assert_eq!(
            value_of(l3.get("ns", b"victim").await.unwrap_or(None)),
            None
        );
        assert_eq!(value_of(l3.get("ns", b"other").await.unwrap_or(None)), None);
        reconciled += disk.counters().reconciles.get();
    }
    drop(l3);
    drop(disk);
    // The operator gives the disk room; the next start has applied what failed, and takes
    // writes.
    assert!(fs.remount("size=32m"), "cannot grow the tmpfs");
    let (disk, l3) = tier(&data, 1 << 30, 1);
    disk.open().unwrap();
    assert_eq!(value_of(l3.get("ns", b"victim").await.unwrap()), None);
    assert_eq!(value_of(l3.get("ns", b"other").await.unwrap()), None);
    reconciled += disk.counters().reconciles.get();
    assert_eq!(reconciled, 1, "emptied at one of the two opens");
    assert_eq!(l3.health(), TierHealth::Up);
    assert!(l3.write_fault().is_none());
    // L3 takes writes again.
    l3.set("ns", Bytes::from("fresh"), entry(b"f", v + 1))
        .await
        .unwrap();
    assert_eq!(
        value_of(l3.get("ns", b"fresh").await.unwrap()),
        Some(b"f".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_applied_when_the_disk_has_room_again() {
    let Some(fs) = Mount::tmpfs("24m") else {
        return;
    };
    let data = fs.path().join("l3");
    let ballast = fs.path().join("ballast");
    let (disk, l3) = tier(&data, 1 << 30, 1);
    disk.open().unwrap();
    for i in 0..10u64 {
        l3.set("ns", Bytes::from(format!("k{i}")), entry(b"old", i + 1))
            .await
            .unwrap();
    }
    disk.compact().unwrap();
    // Another process fills the file system.
    let _ = std::fs::write(&ballast, vec![0u8; 24 << 20]);
    let mut failed = 0;
    for i in 0..10u64 {
        let r = if i % 2 == 0 {
            l3.remove("ns", format!("k{i}").as_bytes())
                .await
                .map(|_| ())
        } else {
            l3.set(
                "ns",
                Bytes::from(format!("k{i}")),
                entry(&noise(64 << 10, i), 100 + i),
            )
            .await
            .map(|_| ())
        };
        failed += usize::from(r.is_err());
    }
    assert!(failed > 0, "nothing failed on a full file system");
    for i in 0..10u64 {
        let got = value_of(
            l3.get("ns", format!("k{i}").as_bytes())
                .await
                .unwrap_or(None),
        );
        assert_ne!(got.as_deref(), Some(&b"old"[..]), "k{i} came back");
    }
    // A reconcile cannot succeed while the disk is full...
    assert!(disk.reconcile().is_err() || disk.fault_summary().tombstones == 0);
    // ...and does once the space is back (reopening if RocksDB went read-only).
    std::fs::remove_file(&ballast).unwrap();
    if disk.reconcile().is_err() {
        disk.reopen().unwrap();
    }
    assert_eq!(disk.fault_summary(), Default::default());
    assert_eq!(l3.health(), TierHealth::Up);
    for i in 0..10u64 {
        let got = value_of(l3.get("ns", format!("k{i}").as_bytes()).await.unwrap());
        assert_ne!(
            got.as_deref(),
            Some(&b"old"[..]),
            "k{i} came back after recovery"
        );
    }
    // Writes work again and are read back.
    l3.set("ns", Bytes::from("k0"), entry(b"new", 1000))
        .await
        .unwrap();
    assert_eq!(
        value_of(l3.get("ns", b"k0").await.unwrap()),
        Some(b"new".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_watermark_new_values_are_shed_and_old_ones_never_served() {
    let Some(fs) = Mount::tmpfs("32m") else {
        return;
    };
    let data = fs.path().join("l3");
    let ballast = fs.path().join("ballast");
    // Watermark 8 MiB.
    let (disk, l3) = tier(&data, 1 << 30, 8 << 20);
    disk.open().unwrap();
    l3.set("ns", Bytes::from("k"), entry(b"old", 1))
        .await
        .unwrap();
    std::fs::write(&ballast, vec![0u8; 26 << 20]).unwrap();
    let h = disk.check_health();
    assert!(
        matches!(&h, TierHealth::Degraded(r) if r.contains("below the watermark")),
        "{h:?}"
    );
    assert!(disk.is_shedding());
    // A new value is not stored, and the older one goes with it.
    let out = l3
        .set("ns", Bytes::from("k"), entry(b"new", 2))
        .await
        .unwrap();
    assert_eq!(out, SetOutcome::Skipped);
    assert_eq!(value_of(l3.get("ns", b"k").await.unwrap()), None);
    assert_eq!(disk.counters().shed_writes.get(), 1);
    std::fs::remove_file(&ballast).unwrap();
    assert_eq!(disk.check_health(), TierHealth::Up);
    l3.set("ns", Bytes::from("k"), entry(b"newer", 3))
        .await
        .unwrap();
    assert_eq!(
        value_of(l3.get("ns", b"k").await.unwrap()),
        Some(b"newer".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_l3_cannot_open_are_applied_before_it_serves() {
    let Some(fs) = Mount::tmpfs("16m") else {
        return;
    };
    let data = fs.path().join("l3");
    {
        let (disk, l3) = tier(&data, 8 << 20, 0);
        disk.open().unwrap();
        for k in ["a", "b", "c"] {
            l3.set("ns", Bytes::from(k), entry(b"old", 1))
                .await
                .unwrap();
        }
        disk.close();
    }
    // The file system is read-only when the node starts: L3 cannot open.
    assert!(fs.remount("ro"), "cannot remount read-only");
    let (disk, l3) = tier(&data, 8 << 20, 0);
    assert!(disk.open().is_err());
    assert!(matches!(l3.health(), TierHealth::Down(_)));
    // Meanwhile `a` is deleted, `b` overwritten, and a pattern invalidation runs.
    assert!(l3.remove("ns", b"a").await.is_err());
    assert!(
        l3.set("ns", Bytes::from("b"), entry(b"new", 2))
            .await
            .is_err()
    );
    // The file system comes back; the open applies what failed before L3 serves.
    assert!(fs.remount("rw"));
    disk.open().unwrap();
    assert_eq!(value_of(l3.get("ns", b"a").await.unwrap()), None);
    assert_eq!(value_of(l3.get("ns", b"b").await.unwrap()), None);
    assert_eq!(
        value_of(l3.get("ns", b"c").await.unwrap()),
        Some(b"old".to_vec()),
        "an untouched key stays"
    );
    // A bulk change that failed while closed empties L3 at the next open.
    disk.close();
    let glob = strata_core::glob::Glob::new(b"*").unwrap();
    assert!(l3.invalidate_pattern("ns", &glob).await.is_err());
    disk.open().unwrap();
    assert_eq!(value_of(l3.get("ns", b"c").await.unwrap()), None);
    assert_eq!(l3.health(), TierHealth::Up);
}

/// The directory's files whose names end with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

fn scribble(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n / 4..n - 8] {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_manifest_is_moved_aside_and_l3_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("l3");
    {
        let (disk, l3) = tier(&data, 8 << 20, 0);
        disk.open().unwrap();
        l3.set("ns", Bytes::from("k"), entry(b"v", 1))
            .await
            .unwrap();
        disk.close();
    }
    for m in files_ending(&data, "") {
        if m.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("MANIFEST-")
        {
            scribble(&m);
        }
    }
    let (disk, l3) = tier(&data, 8 << 20, 0);
    disk.open().unwrap();
    assert_eq!(disk.counters().quarantined.get(), 1);
    assert!(dir.path().join("l3.corrupt").is_dir(), "kept for forensics");
    assert_eq!(value_of(l3.get("ns", b"k").await.unwrap()), None);
    l3.set("ns", Bytes::from("k"), entry(b"v2", 2))
        .await
        .unwrap();
    assert_eq!(
        value_of(l3.get("ns", b"k").await.unwrap()),
        Some(b"v2".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_sst_never_serves_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("l3");
    {
        let (disk, l3) = tier(&data, 8 << 20, 0);
        disk.open().unwrap();
        for i in 0..200u64 {
            l3.set(
                "ns",
                Bytes::from(format!("k{i}")),
                entry(&[i as u8; 100], i + 1),
            )
            .await
            .unwrap();
        }
        disk.close();
    }
    let ssts = files_ending(&data, ".sst");
    assert!(!ssts.is_empty());
    for s in &ssts {
        scribble(s);
    }
    let (disk, l3) = tier(&data, 8 << 20, 0);
    // RocksDB may refuse to open (then it is moved aside) or fail the reads of the bad
    // blocks: either way, no read returns bytes other than those written.
    disk.open().unwrap();
    for i in 0..200u64 {
        if let Ok(Some(e)) = l3.get("ns", format!("k{i}").as_bytes()).await {
            assert_eq!(e.value.to_vec(), vec![i as u8; 100], "k{i}");
        }
    }
    // And it takes writes afterwards (after a reopen if RocksDB recorded a background error).
    let w = l3
        .set("ns", Bytes::from("after"), entry(b"x", 10_000))
        .await;
    if w.is_err() {
        disk.reopen().unwrap();
        l3.set("ns", Bytes::from("after"), entry(b"x", 10_000))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_before_the_first_open_are_applied_precisely_not_by_emptying() {
    // A node's invalidations can reach L3 before its actor has opened it: those keys are
    // tombstoned and deleted at open; the rest of L3 stays (only a previous run's marker
    // empties it). Found when warm restarts came back cold.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("l3");
    {
        let (disk, l3) = tier(&data, 8 << 20, 0);
        disk.open().unwrap();
        for k in ["a", "b", "c"] {
            l3.set("ns", Bytes::from(k), entry(b"old", 1))
                .await
                .unwrap();
        }
        disk.close();
    }
    let (disk, l3) = tier(&data, 8 << 20, 0);
    assert!(l3.remove("ns", b"a").await.is_err(), "not open yet");
    disk.open().unwrap();
    assert_eq!(value_of(l3.get("ns", b"a").await.unwrap()), None);
    assert_eq!(
        value_of(l3.get("ns", b"c").await.unwrap()),
        Some(b"old".to_vec()),
        "L3 was emptied instead of applying one tombstone"
    );
    assert_eq!(l3.health(), TierHealth::Up);
    // And a crash right after such a fault (before the open) still empties at the next
    // start: the marker carries it.
    drop((disk, l3));
    let (disk, l3) = tier(&data, 8 << 20, 0);
    assert!(l3.remove("ns", b"b").await.is_err());
    drop((disk, l3));
    let (disk, l3) = tier(&data, 8 << 20, 0);
    disk.open().unwrap();
    assert_eq!(value_of(l3.get("ns", b"b").await.unwrap()), None);
    assert_eq!(value_of(l3.get("ns", b"c").await.unwrap()), None, "emptied");
}

/// Below the free-space watermark a reopen after a background error is still due, now and
/// then: RocksDB in its error state deletes no obsolete files, so the space a flush or an
/// eviction freed only comes back through a reopen (without one, L3 stayed degraded for good
/// in a clean-clone run). Above the watermark it is due at once, every time.
#[test]
fn a_reopen_is_due_below_the_watermark_at_most_once_per_interval() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    // A watermark no file system meets: always below it.
    let (disk, _l3) = tier(dir.path(), 8 << 20, u64::MAX / 2);
    disk.open().unwrap();
    disk.check_health();
    assert!(disk.is_shedding());
    assert!(
        disk.reopen_due(Duration::from_secs(60)),
        "never reopened yet"
    );
    disk.reopen().unwrap();
    assert!(
        !disk.reopen_due(Duration::from_secs(60)),
        "due again right after a reopen while below the watermark"
    );
    assert!(disk.reopen_due(Duration::ZERO));
    disk.close();
    drop(disk);
    // With room on the disk it is due at once, however recent the last reopen.
    let (disk, _l3) = tier(dir.path(), 8 << 20, 0);
    disk.open().unwrap();
    disk.check_health();
    assert!(!disk.is_shedding());
    disk.reopen().unwrap();
    assert!(disk.reopen_due(Duration::from_secs(60)));
}
