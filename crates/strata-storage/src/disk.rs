//! `DiskTier`: L3 on RocksDB.
//!
//! - **Keys** are `0x80 | ns_len (1 byte) ‖ namespace ‖ scan hash (8 bytes, big-endian) ‖
//!   key`: a namespace is a contiguous key range, so pattern invalidation iterates only its
//!   namespace and `flush_namespace` is one `delete_range`, O(1) to write; inside it keys are
//!   in scan order ([`strata_core::scan`]), so a `SCAN` cursor is a seek. Column families per
//!   namespace were rejected: up to 1024 namespaces would mean 1024 memtables. Keys starting
//!   with a 0 byte are Strata's own metadata (no namespace is empty). Keys starting with
//!   `ns_len` alone (1..=64) are the layout before scan order; `open` moves them over.
//! - **Values** are records (`crate::record`): versioned, checksummed, compressed per
//!   namespace policy. RocksDB's own block compression is off so values are not compressed
//!   twice.
//! - **Expiry**: reads check it; a compaction filter drops records expired past their grace;
//!   `purge_expired` deletes them on demand.
//! - **Size**: see `enforce_size`: records written before a watermark are evicted (misses at
//!   once; reclaimed by the compaction filter), the watermark advancing over the records'
//!   write times until the live data fits `capacity_bytes`.
//! - **WAL** on, not synced per write (unless `sync_writes`): a process crash (`kill -9`) loses
//!   nothing that returned, including invalidations — except writes stored behind
//!   ([`DiskTier::set_behind`], `crate::behind`), of which it loses the last
//!   `write_behind_ms`; an OS crash or power loss may lose the last writes. A clean `close`
//!   stores what is pending and flushes memtables, so nothing is lost and the WAL is empty.
//! - **Blocking**: a RocksDB call that may touch the disk never runs on a worker. A point
//!   read or removal first asks memory (memtables, bloom filters, block cache) on the
//!   worker; what memory cannot answer goes to L3's reader threads (`crate::readers`),
//!   writes to the group-commit writer thread, scans, flushes and bulk changes to tokio's
//!   blocking pool.
//! - **Faults** (`crate::faults`): a change RocksDB refused leaves a tombstone (or, past a
//!   bound or for a bulk change, makes L3 untrusted) so the older record is never served; the
//!   L3 actor reconciles once writes work again, a marker file carries an outstanding fault
//!   across a restart, and a free-space watermark sheds new values before the disk is full.
//!   A database RocksDB reports corrupt at open is moved aside and L3 starts empty.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use rocksdb::compaction_filter::Decision;
use rocksdb::{
    BlockBasedOptions, DB, DBCompressionType, IteratorMode, Options, WriteBatch, WriteOptions,
};
use strata_core::glob::Glob;
use strata_core::scan::{ScanFrom, scan_hash};
use strata_core::stats::Counter;
use strata_core::{
    Clock, Entry, Layer, NamespacePolicy, SetOutcome, Tier, TierError, TierHealth, Version,
};

use crate::behind::Behind;
use crate::counts::KeyCounts;
use crate::faults::{Faults, Marker, Plan, ReadGate};
use crate::floors::Floors;
use crate::known::{Known, KnownKeys};
use crate::readers::Readers;
use crate::record;

/// Metadata key holding the eviction watermark (Unix ms, little-endian u64).
const WATERMARK_KEY: &[u8] = b"\0meta:evict_before_ms";
/// Key locks serialising read-compare-write of one key; a power of two.
const KEY_LOCKS: usize = 64;
/// When live data passes the capacity, evict down to this share of it.
const EVICT_TARGET: f64 = 0.75;
/// Most passes of `enforce_size` per call.
const MAX_EVICTION_PASSES: usize = 6;

/// L3 settings.
#[derive(Debug, Clone)]
pub struct DiskTierConfig {
    /// The RocksDB directory (created if missing).
    pub path: PathBuf,
    /// Bound on live data (SST files + memtables); the directory settles within 1.2× of it.
    pub capacity_bytes: u64,
    /// fsync the WAL on every write (off by default; see the module docs).
    pub sync_writes: bool,
    /// Policies of named namespaces (compression, max_ttl).
    pub policies: HashMap<String, NamespacePolicy>,
    /// Policy of other namespaces.
    pub default_policy: NamespacePolicy,
    /// Free space to keep on L3's file system: below it, L3 stops storing new values (they
    /// stay in the other layers) and evicts. 0: 5 % of the file system, between 4 MiB and
    /// 1 GiB.
    pub min_free_bytes: u64,
    /// Acknowledge a write its caller just stamped ([`Tier::set_fresh`]) once it is readable
    /// from L3's memory, and store it behind (`crate::behind`); off with `sync_writes`.
    pub write_behind: bool,
    /// How long a write stored behind may wait for the writer (0: the writer stores it as
    /// soon as it can); overwrites of a key meanwhile are stored once.
    pub write_behind_ms: u64,
}

/// The end of the user keyspace: keys start with the namespace's length and its UTF-8 name,
/// which never contains 0xff, so `[0xff, 0xff]` is above every key.
const KEYSPACE_END: &[u8] = &[0xff, 0xff];
/// The old layout's keys (`ns_len ‖ ns ‖ key`, before scan order) lie in `[1, 65)`.
const OLD_LAYOUT: std::ops::Range<u8> = 1..65;

/// Counters that only L3 keeps.
#[derive(Debug, Default)]
pub struct DiskCounters {
    /// Records that failed their checksum or did not decode (each deleted when found).
    pub corrupt_records: Counter,
    /// Records dropped because their TTL exceeds the namespace's current `max_ttl`.
    pub policy_drops: Counter,
    /// Eviction passes run by `enforce_size`.
    pub eviction_passes: Counter,
    /// Failed attempts to open the database.
    pub open_failures: Counter,
    /// Writes and deletes RocksDB refused (each left a tombstone or made L3 untrusted).
    pub write_failures: Counter,
    /// Reconciliations that applied outstanding faults.
    pub reconciles: Counter,
    /// Databases moved aside because RocksDB found them corrupt at open.
    pub quarantined: Counter,
    /// Values not stored in L3 because its file system was below the free-space watermark.
    pub shed_writes: Counter,
    /// Records the group-commit writer read before a write, to learn the stored version:
    /// the keys it did not know from its recent writes (`known.rs`).
    pub writer_reads: Counter,
}

/// What `enforce_size` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeReport {
    /// Live bytes before.
    pub before_bytes: u64,
    /// Live bytes after.
    pub after_bytes: u64,
    /// The watermark now in force (records written before it are evicted).
    pub evict_before_ms: u64,
}

/// The L3 tier. Created closed; [`DiskTier::open`] (run by the node's L3 actor) opens it.
/// While closed or failed, every operation returns `TierError::Unavailable`, which the
/// manager treats as a miss.
pub struct DiskTier {
    config: DiskTierConfig,
    clock: Arc<dyn Clock>,
    db: RwLock<Option<Arc<DB>>>,
    health: Mutex<TierHealth>,
    watermark: Arc<AtomicU64>,
    newest_write_ms: AtomicU64,
    counters: Arc<DiskCounters>,
    key_locks: Box<[Mutex<()>]>,
    /// What the writer last stored of recent keys: an invalidation of a copy L3 has
    /// already replaced is answered without a read (`floors.rs`).
    floors: Floors,
    /// What the writer knows of the records of keys it wrote recently: a write of such a key
    /// skips the read of its stored record (`known.rs`).
    known: KnownKeys,
    /// The group-commit writer's queue, started on the first write (see [`DiskTier::set_grouped`]).
    writer: OnceLock<std::sync::mpsc::Sender<Queued>>,
    /// The reader threads, started on the first read memory cannot answer (see
    /// [`SharedDiskTier`]'s reads).
    readers: OnceLock<Readers>,
    /// Read options that never read from disk (`ReadTier::BlockCache`), made once: the reads
    /// of [`DiskTier::get_cached`] and [`DiskTier::version_cached`].
    memory_reads: rocksdb::ReadOptions,
    /// Changes RocksDB refused and not yet applied.
    faults: Faults,
    /// The marker file recording outstanding faults across restarts; its lock orders the
    /// marker's writes after the fault checks that decide them.
    marker: Mutex<(Marker, bool)>,
    /// Below the free-space watermark: new values are not stored.
    shedding: std::sync::atomic::AtomicBool,
    /// Free bytes on L3's file system at the last check (`u64::MAX` before the first).
    free_bytes: AtomicU64,
    /// When [`DiskTier::reopen`] last ran (`None` before the first).
    last_reopen: Mutex<Option<std::time::Instant>>,
    /// The watermark in force (from the config, or derived from the file system's size).
    min_free: AtomicU64,
    /// Whether the marker file said "faults outstanding" when this tier was created, i.e.
    /// a previous run left them (read once: faults this process records before the first
    /// open set the file too, and are applied precisely from memory instead).
    prior_dirty: std::sync::atomic::AtomicBool,
    /// Keys per namespace, kept on write and recounted by the expiry pass ([`crate::counts`]).
    key_counts: KeyCounts,
    /// Writes acknowledged and not yet stored ([`DiskTierConfig::write_behind`]).
    behind: Behind,
}

/// One write waiting for the group-commit writer.
struct WriteReq {
    namespace: String,
    key: Bytes,
    entry: Entry,
    /// Where its outcome goes (`None`: a write stored behind, already acknowledged).
    reply: Option<Reply>,
    /// A write from `crate::behind`: stored only if it is still pending there.
    behind: bool,
}

/// Where a queued write's outcome goes.
type Reply = tokio::sync::oneshot::Sender<Result<SetOutcome, TierError>>;

/// What the group-commit writer takes: a write, or a barrier answered once every write
/// queued before it is applied ([`Tier::settle`]).
enum Queued {
    Write(WriteReq),
    /// Store the writes pending in `crate::behind` when `write_behind_ms` is up.
    Flush,
    /// Store them at once: they are past their bound.
    FlushNow,
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Most writes the writer puts in one RocksDB batch.
const MAX_GROUP: usize = 256;

impl Drop for DiskTier {
    /// Writes acknowledged behind are stored before the database goes, also when the tier is
    /// dropped without [`DiskTier::close`] (an embedding service at exit).
    fn drop(&mut self) {
        if self.is_open() {
            self.store_behind();
        }
    }
}

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskTier")
            .field("path", &self.config.path)
            .field("health", &*self.health.lock())
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> TierError {
    TierError::Unavailable(e.to_string())
}

/// Which record a removal takes ([`DiskTier::remove_blocking`]).
#[derive(Debug, Clone, Copy)]
enum Removal {
    /// Whatever is stored.
    Any,
    /// Only the record of this version.
    Exactly(Version),
    /// Only a record older than this version (or one that does not decode).
    OlderThan(Version),
}

/// What the stored bytes of one key say ([`DiskTier::classify`]).
enum Stored {
    /// No record.
    Absent,
    /// A record written before the eviction watermark: treated as absent.
    Evicted,
    /// A record that does not decode (the reason).
    Corrupt(String),
    /// A record whose expiry is past its namespace's (possibly lowered) `max_ttl`.
    PastPolicy,
    /// A record to serve, subject to its expiry.
    Entry(Entry),
}

fn failed(e: impl std::fmt::Display) -> TierError {
    TierError::Failed(e.to_string())
}

/// The first byte of a namespace's keys is this bit and the name's length.
const NS_TAG: u8 = 0x80;
/// The first byte of the first key past every namespace (names are at most 64 bytes).
const KEYSPACE_END_TAG: u8 = NS_TAG | 65;
/// Bytes of the scan hash between the namespace and the user key.
const HASH_LEN: usize = 8;

/// `0x80 | ns_len ‖ ns`: the prefix of every key of a namespace.
fn ns_prefix(namespace: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + namespace.len() + HASH_LEN);
    p.push(NS_TAG | namespace.len() as u8);
    p.extend_from_slice(namespace.as_bytes());
    p
}

/// The RocksDB key of `key` in `namespace`: `0x80 | ns_len ‖ namespace ‖ scan_hash(key)
/// (big-endian) ‖ key` (see the module docs).
pub fn disk_key(namespace: &str, key: &[u8]) -> Vec<u8> {
    let mut k = ns_prefix(namespace);
    k.reserve(HASH_LEN + key.len());
    k.extend_from_slice(&scan_hash(key).to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The user key of a disk key of the namespace whose prefix is `prefix_len` bytes long.
fn user_key(dkey: &[u8], prefix_len: usize) -> &[u8] {
    dkey.get(prefix_len + HASH_LEN..).unwrap_or_default()
}

/// A [`ScanFrom`]'s parts, owned, to move onto the blocking pool (with the namespace).
fn owned_from(namespace: &str, from: ScanFrom<'_>) -> (String, u64, Option<Vec<u8>>) {
    (
        namespace.to_owned(),
        from.hash(),
        from.after_key().map(<[u8]>::to_vec),
    )
}

/// The [`ScanFrom`] of [`owned_from`]'s parts.
fn from_parts(hash: u64, after: Option<&[u8]>) -> ScanFrom<'_> {
    match after {
        Some(a) => ScanFrom::after(a),
        None => ScanFrom::at_hash(hash),
    }
}

/// Moves the records of the layout before scan order (`ns_len ‖ ns ‖ key`) to the current
/// one, 10,000 a batch; each batch puts the new keys and deletes the old in one write, so a
/// crash midway leaves every record under exactly one of the two and the next open carries
/// on. Returns how many records moved.
fn migrate_layout(db: &DB) -> Result<u64, rocksdb::Error> {
    let mut moved = 0;
    loop {
        let mut batch = WriteBatch::default();
        let mut n = 0u64;
        let start = [OLD_LAYOUT.start];
        for item in db.iterator(IteratorMode::From(&start, rocksdb::Direction::Forward)) {
            let (k, v) = item?;
            if !OLD_LAYOUT.contains(&k[0]) {
                break;
            }
            let len = usize::from(k[0]);
            let name = k.get(1..1 + len).and_then(|n| std::str::from_utf8(n).ok());
            if let Some(name) = name {
                batch.put(disk_key(name, &k[1 + len..]), &v);
            }
            batch.delete(&k);
            n += 1;
            if n == 10_000 {
                break;
            }
        }
        if n == 0 {
            return Ok(moved);
        }
        db.write(batch)?;
        moved += n;
    }
}

/// The smallest key greater than every key starting with `prefix` (namespace names never end
/// in 0xff, so incrementing the last byte is enough).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

/// Whether RocksDB has stopped writes (a background error, or a write stop): a manual flush
/// or compaction would then wait for ever.
fn stalled(db: &DB) -> bool {
    let prop = |name: &str| db.property_int_value(name).ok().flatten().unwrap_or(0);
    prop("rocksdb.background-errors") > 0 || prop("rocksdb.is-write-stopped") > 0
}

/// After a range delete of every user key: drops the SST files it covers at once (no new
/// file needs to be written, so it works on a full disk), then compacts what remains unless
/// RocksDB is stalled.
fn reclaim_all(db: &DB) {
    if let Err(e) = db.delete_file_in_range(&[1u8][..], KEYSPACE_END) {
        tracing::warn!(error = %e, "L3 could not drop the emptied files");
    }
    if !stalled(db) {
        db.compact_range(None::<&[u8]>, None::<&[u8]>);
    }
}

/// Free and total bytes of the file system holding `path` (for unprivileged users).
fn fs_space(path: &Path) -> Option<(u64, u64)> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some((
        st.f_bavail.saturating_mul(st.f_frsize),
        st.f_blocks.saturating_mul(st.f_frsize),
    ))
}

/// Total size of the files in `dir` (not recursive: RocksDB keeps one flat directory).
pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl DiskTier {
    /// A closed tier.
    pub fn new(config: DiskTierConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            db: RwLock::new(None),
            health: Mutex::new(TierHealth::Down("not opened yet".into())),
            watermark: Arc::new(AtomicU64::new(0)),
            newest_write_ms: AtomicU64::new(0),
            counters: Arc::new(DiskCounters::default()),
            key_locks: (0..KEY_LOCKS).map(|_| Mutex::new(())).collect(),
            floors: Floors::new(),
            // 48 bytes a pair of slots: one pair per 512 bytes of capacity, 6 MiB at most.
            known: KnownKeys::new((config.capacity_bytes / 512).clamp(1024, 1 << 17) as usize),
            writer: OnceLock::new(),
            readers: OnceLock::new(),
            memory_reads: {
                let mut o = rocksdb::ReadOptions::default();
                o.set_read_tier(rocksdb::ReadTier::BlockCache);
                o
            },
            faults: Faults::default(),
            marker: Mutex::new((Marker::new(&config.path), false)),
            shedding: std::sync::atomic::AtomicBool::new(false),
            free_bytes: AtomicU64::new(u64::MAX),
            last_reopen: Mutex::new(None),
            min_free: AtomicU64::new(config.min_free_bytes),
            prior_dirty: std::sync::atomic::AtomicBool::new(Marker::new(&config.path).dirty()),
            key_counts: KeyCounts::default(),
            // As much as one memtable holds (options()).
            behind: Behind::new((config.capacity_bytes / 16).clamp(1 << 20, 64 << 20) as usize),
            config,
            clock,
        }
    }

    /// Bytes of the writes acknowledged behind and not yet stored (`crate::behind`; bounded by
    /// a memtable's size, between 1 and 64 MiB).
    pub fn behind_bytes(&self) -> usize {
        self.behind.bytes()
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// The configured capacity.
    pub fn capacity_bytes(&self) -> u64 {
        self.config.capacity_bytes
    }

    /// L3's own counters.
    pub fn counters(&self) -> &DiskCounters {
        &self.counters
    }

    /// Whether the database is open.
    pub fn is_open(&self) -> bool {
        self.db.read().is_some()
    }

    fn options(&self) -> Options {
        // A capacity larger than the file system (a misconfiguration, or a shared disk) must
        // not size memtables and WAL beyond what the disk can take.
        let fs_total = fs_space(&self.config.path).map_or(u64::MAX, |(_, total)| total);
        let cap = self.config.capacity_bytes.min(fs_total / 2).max(1 << 20);
        // Memtables and SST files small enough that eviction has fine granularity, large
        // enough to keep write amplification low.
        let buffer = (cap / 16).clamp(1 << 20, 64 << 20);
        let mut o = Options::default();
        o.create_if_missing(true);
        o.set_compression_type(DBCompressionType::None);
        o.set_write_buffer_size(buffer as usize);
        o.set_max_write_buffer_number(2);
        o.set_target_file_size_base(buffer);
        o.set_max_bytes_for_level_base(buffer * 4);
        o.set_max_total_wal_size(buffer * 2);
        o.set_keep_log_file_num(2);
        o.set_max_log_file_size(1 << 20);
        o.set_max_background_jobs(2);
        // A bloom filter over each memtable's whole keys (2 % of its size: ~25 bits a key at
        // 100-byte values): a read of a key the memtable lacks — the writer's check of a key
        // it stores for the first time, an invalidation of a copy this node never stored, a
        // miss — skips the skip-list search.
        o.set_memtable_prefix_bloom_ratio(0.02);
        o.set_memtable_whole_key_filtering(true);
        // A bloom filter per SST file (10 bits per key, ~1 % false positives), kept in memory:
        // a key that is not on disk is ruled out without I/O (`get_cached`).
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        o.set_block_based_table_factory(&table);
        let clock = self.clock.clone();
        let watermark = self.watermark.clone();
        let counters = self.counters.clone();
        o.set_compaction_filter(
            "strata_expiry_eviction",
            move |_level, key: &[u8], value: &[u8]| {
                if key.first() == Some(&0) {
                    return Decision::Keep;
                }
                match record::decode_header(value) {
                    Err(_) => {
                        counters.corrupt_records.incr();
                        Decision::Remove
                    }
                    Ok(h) if !h.is_retained(clock.now_ms()) => Decision::Remove,
                    Ok(h) if h.version.physical_ms() < watermark.load(Ordering::Acquire) => {
                        Decision::Remove
                    }
                    Ok(_) => Decision::Keep,
                }
            },
        );
        o
    }

    /// Opens (or recovers) the database. Blocking: call it from the blocking pool. On
    /// failure the tier stays `Down` with the reason, and may be opened again later. A
    /// database RocksDB reports corrupt is moved aside (`<dir>.corrupt`, replacing an older
    /// one) and a new, empty one is opened: L3 is a cache, and serving from the other layers
    /// beats staying down until an operator steps in. Changes that failed before the open (or
    /// in a previous run, per the marker file) are applied before the tier serves.
    pub fn open(&self) -> Result<(), TierError> {
        if self.is_open() {
            return Ok(());
        }
        let path = &self.config.path;
        let result = std::fs::create_dir_all(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))
            .and_then(|()| self.open_db());
        match result {
            Ok(db) => {
                let wm = db
                    .get(WATERMARK_KEY)
                    .ok()
                    .flatten()
                    .and_then(|v| v.try_into().ok())
                    .map(u64::from_le_bytes)
                    .unwrap_or(0);
                self.watermark.store(wm, Ordering::Release);
                match migrate_layout(&db) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(records = n, "L3 moved its records to scan order"),
                    Err(e) => {
                        // What did not move must never come back at a later open (a key
                        // deleted meanwhile would): dropped, or else L3 is emptied.
                        tracing::warn!(error = %e, "L3 could not move its records to scan order; dropping them");
                        let mut batch = WriteBatch::default();
                        batch.delete_range(&[OLD_LAYOUT.start][..], &[OLD_LAYOUT.end][..]);
                        if let Err(e) = db.write(batch) {
                            self.faults.distrust(&format!(
                                "records of the old layout could not be dropped: {e}"
                            ));
                        }
                    }
                }
                if self.prior_dirty.swap(false, Ordering::AcqRel) {
                    self.faults.distrust(
                        "a previous run recorded changes L3 could not apply; emptied at open",
                    );
                }
                {
                    // This directory's marker now says what this process knows (a directory
                    // moved aside took its marker with it).
                    let mut marker = self.marker.lock();
                    let dirty = self.faults.any();
                    let written = if dirty {
                        marker.0.set_dirty_creating()
                    } else {
                        marker.0.set_clean()
                    };
                    match written {
                        Ok(()) => marker.1 = dirty,
                        Err(e) => {
                            marker.1 = false;
                            tracing::warn!(error = %e, "cannot write the L3 marker file");
                        }
                    }
                }
                self.key_counts.invalidate();
                // Written before this table's writer (the migration above, a previous
                // database): no floor holds for them, and nothing known either.
                self.floors.clear();
                self.known.clear();
                *self.db.write() = Some(Arc::new(db));
                self.refresh_free_space();
                if let Err(e) = self.reconcile() {
                    tracing::warn!(error = %e, "L3 opened but cannot apply its outstanding faults yet");
                }
                *self.health.lock() = TierHealth::Up;
                tracing::info!(path = %path.display(), "L3 open");
                Ok(())
            }
            Err(reason) => {
                self.counters.open_failures.incr();
                tracing::error!(%reason, "L3 unavailable; serving from the other layers");
                *self.health.lock() = TierHealth::Down(reason.clone());
                Err(TierError::Unavailable(reason))
            }
        }
    }

    /// `DB::open`, moving a corrupt database aside once.
    fn open_db(&self) -> Result<DB, String> {
        let path = &self.config.path;
        match DB::open(&self.options(), path) {
            Ok(db) => Ok(db),
            Err(e) if e.kind() == rocksdb::ErrorKind::Corruption => {
                let aside = path.with_extension("corrupt");
                tracing::error!(
                    error = %e,
                    moved_to = %aside.display(),
                    "L3 database is corrupt; moving it aside and starting L3 empty"
                );
                let _ = std::fs::remove_dir_all(&aside);
                std::fs::rename(path, &aside)
                    .and_then(|()| std::fs::create_dir_all(path))
                    .map_err(|io| {
                        format!(
                            "corrupt database at {} ({e}) cannot be moved aside: {io}",
                            path.display()
                        )
                    })?;
                self.counters.quarantined.incr();
                // The marker went with the old directory; nothing old is left to distrust.
                self.prior_dirty.store(false, Ordering::Release);
                DB::open(&self.options(), path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))
            }
            Err(e) => Err(format!("cannot open {}: {e}", path.display())),
        }
    }

    /// Flushes memtables and closes the database (a clean shutdown loses nothing).
    /// Waits (up to 2 s) for operations still holding the database to finish, so that the
    /// files are closed and the directory's lock released when this returns (a reopen
    /// depends on it).
    pub fn close(&self) {
        // What was acknowledged is stored before the database closes.
        if self.is_open() {
            self.store_behind();
        }
        if self.faults.any()
            && let Err(e) = self.reconcile()
        {
            tracing::warn!(error = %e, "L3 closes with changes it could not apply (its marker file says so)");
        }
        if let Some(mut db) = self.db.write().take() {
            self.floors.clear();
            self.known.clear();
            // A stalled RocksDB (a full disk) would never finish the flush; the WAL has the
            // data anyway.
            if !stalled(&db)
                && let Err(e) = db.flush()
            {
                tracing::warn!(error = %e, "L3 flush at close failed");
            }
            *self.health.lock() = TierHealth::Down("closed".into());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            loop {
                match Arc::try_unwrap(db) {
                    Ok(db) => {
                        drop(db);
                        return;
                    }
                    Err(shared) if std::time::Instant::now() < deadline => {
                        db = shared;
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    Err(_) => {
                        tracing::warn!("L3 closed while an operation still holds the database");
                        return;
                    }
                }
            }
        }
    }

    fn db(&self) -> Result<Arc<DB>, TierError> {
        self.db
            .read()
            .clone()
            .ok_or_else(|| unavailable(format!("L3 is not open: {:?}", self.health.lock())))
    }

    fn write_opts(&self) -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(self.config.sync_writes);
        w
    }

    fn policy(&self, namespace: &str) -> &NamespacePolicy {
        self.config
            .policies
            .get(namespace)
            .unwrap_or(&self.config.default_policy)
    }

    fn key_lock(&self, key: &[u8]) -> &Mutex<()> {
        &self.key_locks[self.stripe(key)]
    }

    /// What the stored bytes of one key say, before anything is done about them.
    fn classify(&self, namespace: &str, bytes: Option<&[u8]>) -> Stored {
        let Some(bytes) = bytes else {
            return Stored::Absent;
        };
        let entry = match record::decode(bytes) {
            Ok(e) => e,
            Err(err) => return Stored::Corrupt(err.to_string()),
        };
        if entry.version.physical_ms() < self.watermark.load(Ordering::Acquire) {
            return Stored::Evicted;
        }
        if let (Some(max), Some(at)) = (self.policy(namespace).max_ttl, entry.expires_at_ms) {
            // G5 across restarts: a namespace's max_ttl may have been lowered since the write.
            let limit = self
                .clock
                .now_ms()
                .saturating_add(strata_core::time::duration_ms(max));
            if at > limit || entry.stale_until_ms.is_some_and(|s| s > limit) {
                return Stored::PastPolicy;
            }
        }
        Stored::Entry(entry)
    }

    /// Reads and checks one record. Corrupt records, records past a (possibly lowered)
    /// `max_ttl` and evicted records are deleted or ignored here; expiry is left to callers.
    fn read_record(
        &self,
        db: &DB,
        namespace: &str,
        dkey: &[u8],
    ) -> Result<Option<Entry>, TierError> {
        let bytes = db.get_pinned(dkey).map_err(failed)?;
        match self.classify(namespace, bytes.as_deref()) {
            Stored::Absent | Stored::Evicted => Ok(None),
            Stored::Entry(e) => Ok(Some(e)),
            Stored::Corrupt(err) => {
                self.counters.corrupt_records.incr();
                tracing::warn!(namespace, error = %err, "corrupt L3 record deleted");
                let seen = bytes.as_deref().map(<[u8]>::to_vec);
                drop(bytes);
                self.delete_if_unchanged(db, dkey, seen.as_deref())?;
                Ok(None)
            }
            Stored::PastPolicy => {
                self.counters.policy_drops.incr();
                let seen = bytes.as_deref().map(<[u8]>::to_vec);
                drop(bytes);
                self.delete_if_unchanged(db, dkey, seen.as_deref())?;
                Ok(None)
            }
        }
    }

    /// Deletes `dkey`'s record if it still is `seen` (a reader found it corrupt or past its
    /// namespace's policy), under the key's lock: a write that replaced it since the read
    /// stays (a reader deleting without the lock could take a record the writer had just
    /// stored; found by an attacker review), and the key count goes down exactly.
    fn delete_if_unchanged(
        &self,
        db: &DB,
        dkey: &[u8],
        seen: Option<&[u8]>,
    ) -> Result<(), TierError> {
        let _guard = self.key_lock(dkey).lock();
        let current = db.get_pinned(dkey).map_err(failed)?;
        if current.as_deref() != seen || seen.is_none() {
            return Ok(());
        }
        drop(current);
        let change = self.key_counts.change();
        db.delete_opt(dkey, &self.write_opts()).map_err(failed)?;
        self.key_counts.add(dkey, -1);
        drop(change);
        self.known.note(self.known.tag(dkey), Known::Absent);
        Ok(())
    }

    /// [`DiskTier::get_blocking`] answered on the calling thread from memory alone
    /// (memtables and the block cache, RocksDB's `ReadTier::BlockCache`), or `None` when the
    /// answer needs a read from disk or a record to be deleted: the caller then takes the
    /// blocking path. A hot key costs no hop to a reader thread (two context switches,
    /// the largest share of a cluster write's CPU before this; docs/benchmarks.md).
    fn get_cached(
        &self,
        namespace: &str,
        key: &[u8],
        stale: bool,
    ) -> Option<Result<Option<Entry>, TierError>> {
        let dkey = disk_key(namespace, key);
        // A write stored behind is the key's newest: it answers.
        if let Some(e) = self.behind.get(&dkey) {
            return Some(Ok(self.visible(e, stale)));
        }
        let db = self.db.read().clone()?;
        match self.faults.gate(&dkey) {
            ReadGate::Open => {}
            ReadGate::Tombstoned => return Some(Ok(None)),
            ReadGate::Untrusted(_) => return None,
        }
        let bytes = match db.get_pinned_opt(&dkey, &self.memory_reads) {
            Ok(b) => b,
            Err(_) => return None,
        };
        let entry = match self.classify(namespace, bytes.as_deref()) {
            Stored::Absent | Stored::Evicted => return Some(Ok(None)),
            Stored::Entry(e) => e,
            Stored::Corrupt(_) | Stored::PastPolicy => return None,
        };
        Some(Ok(self.visible(entry, stale)))
    }

    /// `entry` if a read asking for fresh (or, with `stale`, for expired but retained)
    /// entries may see it.
    fn visible(&self, entry: Entry, stale: bool) -> Option<Entry> {
        let now = self.clock.now_ms();
        if stale {
            (!entry.is_fresh(now) && entry.is_retained(now)).then_some(entry)
        } else {
            entry.is_fresh(now).then_some(entry)
        }
    }

    /// The fresh entry for `key`, read on the calling thread (blocking). For callers already
    /// on a blocking thread; the `Tier` methods run this on L3's reader threads.
    pub fn read_blocking(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, TierError> {
        self.get_blocking(namespace, key, false)
    }

    fn get_blocking(
        &self,
        namespace: &str,
        key: &[u8],
        stale: bool,
    ) -> Result<Option<Entry>, TierError> {
        let dkey = disk_key(namespace, key);
        if let Some(e) = self.behind.get(&dkey) {
            return Ok(self.visible(e, stale));
        }
        let db = self.db()?;
        match self.faults.gate(&dkey) {
            ReadGate::Open => {}
            ReadGate::Tombstoned => return Ok(None),
            ReadGate::Untrusted(why) => return Err(unavailable(format!("L3 untrusted: {why}"))),
        }
        Ok(self
            .read_record(&db, namespace, &dkey)?
            .and_then(|e| self.visible(e, stale)))
    }

    /// Writes a group of sets in one RocksDB batch (one WAL append): each is checked against
    /// the stored version (and against earlier sets of the same key in the group) under its
    /// key's lock, which is held until the batch is written (and, on failure, the keys are
    /// tombstoned), so a concurrent remove cannot slip between a check and its write. Below
    /// the free-space watermark a set deletes the key's older record instead of storing.
    ///
    /// Returns the replies to send, which the writer thread sends once it no longer holds
    /// the tier: a caller that drops its tier after the reply then finds the database
    /// closed (a test reopening it met RocksDB's lock still held).
    fn write_group(
        &self,
        reqs: Vec<WriteReq>,
    ) -> Vec<(Option<Reply>, Result<SetOutcome, TierError>)> {
        let keys: Vec<Vec<u8>> = reqs
            .iter()
            .map(|r| disk_key(&r.namespace, &r.key))
            .collect();
        let mut stripes: Vec<usize> = keys.iter().map(|k| self.stripe(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let guards: Vec<_> = stripes.iter().map(|&i| self.key_locks[i].lock()).collect();
        let db = match self.db() {
            Ok(db) => db,
            Err(e) => {
                for (r, k) in reqs.iter().zip(&keys) {
                    self.record_fault(k, &e);
                    if r.behind {
                        self.behind.done(k, r.entry.version);
                    }
                }
                drop(guards);
                return reqs
                    .into_iter()
                    .map(|r| (r.reply, Err(e.clone())))
                    .collect();
            }
        };
        // A burst of large writes can fill a disk between two maintenance ticks: look at the
        // free space before each group (one statvfs, ~1 µs).
        self.refresh_free_space();
        let shedding = self.shedding.load(Ordering::Acquire);
        // Held from the reads of what each key holds to the count update, so that a recount
        // starts (and empties `known`) before the reads or after the update, never between.
        let change = self.key_counts.change();
        // What the writer knows of keys it wrote recently stands in for the read
        // (`known.rs`).
        let tags: Vec<u64> = keys.iter().map(|k| self.known.tag(k)).collect();
        let (seen, known) = self.known.lookup(tags.iter().copied());
        let mut batch = WriteBatch::default();
        // Each key's state after the batch's earlier writes: `Some(version)` stored, `None`
        // deleted (a shed write).
        let mut in_batch: HashMap<&[u8], Option<Version>> = HashMap::new();
        // Records the batch adds (+1) or deletes (-1), for the key counts.
        let mut deltas: Vec<(&[u8], i64)> = Vec::new();
        let mut newest = 0;
        let outcomes: Vec<Result<SetOutcome, TierError>> = reqs
            .iter()
            .zip(&keys)
            .zip(&known)
            .map(|((r, dkey), known)| {
                // A write stored behind that a removal took, or a newer write replaced, since
                // it was queued: nothing to store (the newer one is stored in its turn).
                if r.behind && self.behind.version(dkey) != Some(r.entry.version) {
                    return Ok(SetOutcome::KeptNewer);
                }
                // A write stamped before it (a load) is older than a pending write of the
                // key: the pending one is its newest, as a stored one would be.
                if !r.behind
                    && self
                        .behind
                        .version(dkey)
                        .is_some_and(|v| v > r.entry.version)
                {
                    return Ok(SetOutcome::KeptNewer);
                }
                let (exists, stored) = match (in_batch.get(dkey.as_slice()), known) {
                    (Some(state), _) => (state.is_some(), *state),
                    (None, Some(Known::Absent)) => (false, None),
                    (None, Some(Known::Stored(v))) => (true, Some(*v)),
                    (None, None) => {
                        self.counters.writer_reads.incr();
                        match db.get_pinned(dkey).map_err(failed)? {
                            None => (false, None),
                            Some(old) => {
                                (true, record::decode_header(&old).ok().map(|h| h.version))
                            }
                        }
                    }
                };
                if stored.is_some_and(|v| v > r.entry.version) {
                    return Ok(SetOutcome::KeptNewer);
                }
                if shedding {
                    self.counters.shed_writes.incr();
                    batch.delete(dkey);
                    in_batch.insert(dkey, None);
                    if exists {
                        deltas.push((dkey.as_slice(), -1));
                    }
                    return Ok(SetOutcome::Skipped);
                }
                let bytes = record::encode(&r.entry, self.policy(&r.namespace).compression)
                    .map_err(failed)?;
                batch.put(dkey, &bytes);
                in_batch.insert(dkey, Some(r.entry.version));
                if !exists {
                    deltas.push((dkey.as_slice(), 1));
                }
                newest = newest.max(r.entry.version.physical_ms());
                Ok(SetOutcome::Stored)
            })
            .collect();
        // A write can go below a key's floor (an older version after a removal): the floor
        // goes before RocksDB takes it, so it never claims more than the record holds; the
        // writes' own floors are noted after.
        for ((r, dkey), outcome) in reqs.iter().zip(&keys).zip(&outcomes) {
            if matches!(outcome, Ok(SetOutcome::Stored)) {
                self.floors.lower(dkey, r.entry.version);
            }
        }
        let written = db.write_opt(batch, &self.write_opts());
        let outcomes: Vec<_> = outcomes
            .into_iter()
            .zip(&keys)
            .map(|(outcome, dkey)| {
                let outcome = match (&written, outcome) {
                    (Err(e), Ok(SetOutcome::Stored | SetOutcome::Skipped)) => Err(failed(e)),
                    (_, o) => o,
                };
                if let Err(e) = &outcome {
                    self.record_fault(dkey, e);
                }
                outcome
            })
            .collect();
        if written.is_ok() {
            // Under the keys' locks, after RocksDB took them: what each key now holds.
            for ((r, dkey), outcome) in reqs.iter().zip(&keys).zip(&outcomes) {
                if matches!(outcome, Ok(SetOutcome::Stored)) {
                    self.floors.note(dkey, r.entry.version);
                }
            }
            // In the batch's order: a key's last stored or shed write is what it holds.
            let facts =
                reqs.iter()
                    .zip(&tags)
                    .zip(&outcomes)
                    .filter_map(|((r, &tag), o)| match o {
                        Ok(SetOutcome::Stored) => Some((tag, Known::Stored(r.entry.version))),
                        Ok(SetOutcome::Skipped) => Some((tag, Known::Absent)),
                        _ => None,
                    });
            self.known.record(seen, facts);
        } else {
            // What each key holds now is not known (the keys are tombstoned).
            self.known.clear();
        }
        // Stored, kept older than what L3 holds, or failed and tombstoned: no longer pending
        // (still under the keys' locks, so a removal finds it here or on disk). A pending
        // write older than a write this group stored is no longer the key's newest.
        for ((r, dkey), outcome) in reqs.iter().zip(&keys).zip(&outcomes) {
            if r.behind {
                self.behind.done(dkey, r.entry.version);
            } else if written.is_ok() && matches!(outcome, Ok(SetOutcome::Stored)) {
                self.behind.take_if(dkey, |v| v < r.entry.version);
            }
        }
        drop(guards);
        // Released before the replies, so a close right after a write finds the database free.
        drop(db);
        if written.is_ok() {
            self.newest_write_ms.fetch_max(newest, Ordering::AcqRel);
            for (dkey, delta) in deltas {
                self.key_counts.add(dkey, delta);
            }
        }
        drop(change);
        reqs.into_iter().map(|r| r.reply).zip(outcomes).collect()
    }

    fn stripe(&self, key: &[u8]) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() as usize) & (KEY_LOCKS - 1)
    }

    /// Removes `key` (only at `version` with `only`). A removal that fails leaves a
    /// tombstone, so the record it could not delete is never served.
    fn remove_blocking(
        &self,
        namespace: &str,
        key: &[u8],
        which: Removal,
    ) -> Result<u64, TierError> {
        let dkey = disk_key(namespace, key);
        let _guard = self.key_lock(&dkey).lock();
        // A write stored behind that the removal selects goes, under the lock the writer
        // stores it under — after the disk's record: until then a reader (which takes no
        // lock) still finds the pending write, never the older record it replaced. With it
        // go the records on disk it replaced (a removal of exactly its version must not
        // leave the older value it overwrote).
        let selected = self.behind.version(&dkey).filter(|&v| match which {
            Removal::Any => true,
            Removal::Exactly(x) => v == x,
            Removal::OlderThan(x) => v < x,
        });
        let on_disk = match selected {
            Some(v) => Removal::OlderThan(Version::from_u64(v.as_u64().saturating_add(1))),
            None => which,
        };
        let result = self.remove_locked(&dkey, on_disk);
        if let Err(e) = &result {
            self.record_fault(&dkey, e);
        }
        let pending = selected.and_then(|v| self.behind.take_if(&dkey, |held| held == v));
        let fresh = pending.is_some_and(|e| e.is_retained(self.clock.now_ms()));
        result.map(|n| n.max(u64::from(fresh)))
    }

    /// Removes `dkey`'s record if `which` selects it; returns 1 if it removed a record
    /// still fresh or inside its stale grace, else 0.
    fn remove_locked(&self, dkey: &[u8], which: Removal) -> Result<u64, TierError> {
        let db = self.db()?;
        let present = match db.get_pinned(dkey).map_err(failed)? {
            None => {
                // Under the key's lock: absent (the compaction filter may have dropped a
                // record the table still knows).
                self.known.note(self.known.tag(dkey), Known::Absent);
                return Ok(0);
            }
            Some(bytes) => record::decode_header(&bytes).ok(),
        };
        let selected = match which {
            Removal::Any => true,
            Removal::Exactly(v) => present.is_some_and(|h| h.version == v),
            // A record that does not decode is removed too.
            Removal::OlderThan(v) => present.is_none_or(|h| h.version < v),
        };
        if !selected {
            return Ok(0);
        }
        let change = self.key_counts.change();
        db.delete_opt(dkey, &self.write_opts()).map_err(failed)?;
        self.key_counts.add(dkey, -1);
        drop(change);
        // Under the key's lock, after RocksDB took it.
        self.known.note(self.known.tag(dkey), Known::Absent);
        let now = self.clock.now_ms();
        Ok(u64::from(present.is_some_and(|h| h.is_retained(now))))
    }

    /// Whether the key's version floor shows there is nothing for `which` to remove: the
    /// record is absent or at least the floor, and the floor is at least the version an
    /// `OlderThan` spares (or above the one an `Exactly` names). Only while a database is
    /// open (floors speak of the open database; a removal while closed leaves a tombstone).
    fn floor_rules_out(&self, dkey: &[u8], which: Removal) -> bool {
        if !self.is_open() {
            return false;
        }
        let Some(floor) = self.floors.floor(dkey) else {
            return false;
        };
        match which {
            Removal::OlderThan(v) => floor >= v,
            Removal::Exactly(v) => floor > v,
            Removal::Any => false,
        }
    }

    /// The version of the record stored for `key`, read on the calling thread from memory
    /// alone as [`DiskTier::get_cached`] reads: `Some(None)` when there is none, `None` when
    /// that cannot be told without a read from disk (or the record does not decode).
    fn version_cached(&self, dkey: &[u8]) -> Option<Option<Version>> {
        let db = self.db.read().clone()?;
        match db.get_pinned_opt(dkey, &self.memory_reads) {
            Ok(None) => Some(None),
            Ok(Some(bytes)) => record::decode_header(&bytes).ok().map(|h| Some(h.version)),
            Err(_) => None,
        }
    }

    /// Records that the change of `dkey` failed with `e`: a tombstone, and the marker file
    /// set on the first fault. Call with the key's lock held.
    fn record_fault(&self, dkey: &[u8], e: &TierError) {
        self.counters.write_failures.incr();
        self.faults.tombstone(dkey, &e.to_string());
        self.mark_dirty();
    }

    /// Runs a bulk change (pattern, tag, namespace, everything); if it fails, L3 is
    /// untrusted until emptied, since which keys it missed is unknown.
    fn bulk<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, TierError>,
    ) -> Result<T, TierError> {
        let result = f();
        if let Err(e) = &result {
            self.counters.write_failures.incr();
            self.faults.distrust(&format!("{what} failed: {e}"));
            self.mark_dirty();
        }
        result
    }

    /// Sets the marker file dirty unless it already is (retried at every fault while the
    /// write fails, e.g. on a read-only file system).
    fn mark_dirty(&self) {
        let mut m = self.marker.lock();
        if m.1 {
            return;
        }
        match m.0.set_dirty() {
            Ok(()) => m.1 = true,
            Err(e) => tracing::error!(
                error = %e,
                "cannot record L3's fault in its marker file: if the node restarts before L3 \
                 recovers, L3 may serve values changed meanwhile"
            ),
        }
    }

    /// Sets the marker file clean, unless a fault was recorded meanwhile.
    fn mark_clean(&self) {
        let mut m = self.marker.lock();
        if self.faults.any() {
            return;
        }
        match m.0.set_clean() {
            Ok(()) => m.1 = false,
            Err(e) => tracing::warn!(error = %e, "cannot clear L3's marker file"),
        }
    }

    /// Applies the outstanding faults: deletes the tombstoned keys in one synced batch, or
    /// empties L3 when it is untrusted, holding the keys' locks so that no write slips
    /// between the delete and the tombstones' removal. Blocking; the L3 actor runs it.
    pub fn reconcile(&self) -> Result<(), TierError> {
        let (keys, upto) = match self.faults.plan() {
            Plan::Nothing => return Ok(()),
            Plan::Keys(keys) => (Some(keys), 0),
            Plan::Everything(upto) => (None, upto),
        };
        let db = self.db()?;
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        let mut batch = WriteBatch::default();
        let stripes: Vec<usize> = match &keys {
            Some(keys) => {
                let mut v: Vec<usize> = keys.iter().map(|(k, _)| self.stripe(k)).collect();
                v.sort_unstable();
                v.dedup();
                for (k, _) in keys {
                    batch.delete(k);
                }
                v
            }
            None => {
                batch.delete_range(&[1u8][..], KEYSPACE_END);
                (0..KEY_LOCKS).collect()
            }
        };
        let guards: Vec<_> = stripes.iter().map(|&i| self.key_locks[i].lock()).collect();
        let change = self.key_counts.change();
        db.write_opt(batch, &sync).map_err(failed)?;
        self.known.clear();
        match &keys {
            // Which of the keys still had a record is not known: count again.
            Some(_) => self.key_counts.invalidate(),
            None => self.key_counts.clear_all(),
        }
        drop(change);
        let clear = match &keys {
            Some(keys) => self.faults.applied_keys(keys),
            None => self.faults.applied_everything(upto),
        };
        drop(guards);
        // The marker goes clean as soon as the faults are applied, before the (slow) space
        // reclaim: health says `up` from the moment the faults are cleared, and a write taken
        // then must not be emptied by the next start because the marker still said dirty
        // (seen in CI: a SIGTERM during the reclaim of a loaded machine).
        if clear {
            self.mark_clean();
        }
        if keys.is_none() {
            // Give the space back now: a disk that filled up needs it.
            reclaim_all(&db);
        }
        self.counters.reconciles.incr();
        tracing::info!(
            tombstones = keys.as_ref().map_or(0, Vec::len),
            emptied = keys.is_none(),
            "L3 reconciled: the changes it had failed to apply are applied"
        );
        Ok(())
    }

    /// What is recorded against L3 now.
    pub fn fault_summary(&self) -> crate::faults::FaultSummary {
        self.faults.summary()
    }

    /// Empties every namespace: one range delete (a failure makes L3 untrusted, so it is
    /// emptied at reconcile anyway).
    fn flush_all_blocking(&self) -> Result<(), TierError> {
        self.bulk("emptying L3", || {
            let db = self.db()?;
            let mut batch = WriteBatch::default();
            batch.delete_range(&[1u8][..], KEYSPACE_END);
            let change = self.key_counts.change();
            let bypass = self.known.bypass();
            db.write_opt(batch, &self.write_opts()).map_err(failed)?;
            self.key_counts.clear_all();
            drop(bypass);
            drop(change);
            reclaim_all(&db);
            Ok(())
        })
    }

    /// Deletes, in one batch, every key of `namespace` starting with `start` for which
    /// `doomed` holds; returns how many live records it deleted. A pass over the namespace:
    /// its keys are in scan order, not by prefix.
    fn delete_where(
        &self,
        namespace: &str,
        start: &[u8],
        doomed: impl Fn(&[u8], &[u8]) -> bool,
    ) -> Result<u64, TierError> {
        let db = self.db()?;
        let prefix = ns_prefix(namespace);
        let now = self.clock.now_ms();
        let mut batch = WriteBatch::default();
        let mut n = 0;
        let iter = db.iterator(IteratorMode::From(&prefix, rocksdb::Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(failed)?;
            if !k.starts_with(&prefix) {
                break;
            }
            let user_key = user_key(&k, prefix.len());
            if user_key.starts_with(start) && doomed(user_key, &v) {
                batch.delete(&k);
                if record::decode_header(&v).is_ok_and(|h| h.is_retained(now)) {
                    n += 1;
                }
            }
        }
        let _bypass = self.known.bypass();
        db.write_opt(batch, &self.write_opts()).map_err(failed)?;
        // Not under the keys' locks: some of these may have been deleted meanwhile by a
        // removal that counted them, so the counts are taken again (patterns and tags are
        // a pass over the namespace anyway).
        self.key_counts.invalidate();
        Ok(n)
    }

    /// Up to `limit` keys of `namespace` holding fresh, intact records, from `from`.
    fn scan_blocking(
        &self,
        namespace: &str,
        from: ScanFrom<'_>,
        limit: usize,
    ) -> Result<Vec<Bytes>, TierError> {
        let now = self.clock.now_ms();
        // Writes stored behind are listed from memory (storing them first made a page wait
        // for up to a second of writes) — and before the disk is read: the writer takes a
        // write out of the map only after RocksDB has it, so a write the map no longer
        // shows is in the iterator opened next. Read the other way round, a group the
        // writer stored in between was in neither, and `KEYS *` missed up to 1,000 of
        // 9,000 keys present throughout (an attack review).
        let pending = (!self.behind.is_empty()).then(|| {
            self.behind.keys_where(namespace, |k, e| {
                e.is_fresh(now) && from.admits(scan_hash(k), k)
            })
        });
        let mut keys: Vec<Bytes> = self
            .scan_where(namespace, from, limit, |h| h.is_fresh(now))?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if let Some(pending) = pending {
            keys.extend(pending);
            strata_core::scan::sort_keys(&mut keys);
            keys.truncate(limit);
        }
        Ok(keys)
    }

    /// Up to `limit` keys of `namespace` holding intact records still retained (fresh, or
    /// inside their stale grace), after `after`, with their versions: every copy a proof must
    /// check (`scan_blocking` keeps only the fresh ones).
    fn scan_versions_blocking(
        &self,
        namespace: &str,
        from: ScanFrom<'_>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Version)>, TierError> {
        let now = self.clock.now_ms();
        self.scan_where(namespace, from, limit, |h| h.is_retained(now))
    }

    /// Up to `limit` keys of `namespace` from `from` (in scan order: one seek) whose intact,
    /// unevicted, untombstoned record `keep` selects, with their versions.
    fn scan_where(
        &self,
        namespace: &str,
        from: ScanFrom<'_>,
        limit: usize,
        keep: impl Fn(&record::RecordHeader) -> bool,
    ) -> Result<Vec<(Bytes, Version)>, TierError> {
        let db = self.db()?;
        if let Some(why) = self.faults.untrusted() {
            return Err(unavailable(format!("L3 untrusted: {why}")));
        }
        let prefix = ns_prefix(namespace);
        let mut seek = prefix.clone();
        seek.extend_from_slice(&from.hash().to_be_bytes());
        if let Some(a) = from.after_key() {
            seek.extend_from_slice(a);
            // The smallest key greater than `after`.
            seek.push(0);
        }
        let wm = self.watermark.load(Ordering::Acquire);
        let mut keys = Vec::new();
        let iter = db.iterator(IteratorMode::From(&seek, rocksdb::Direction::Forward));
        for item in iter {
            if keys.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(failed)?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let Ok(h) = record::decode_header(&v)
                && keep(&h)
                && h.version.physical_ms() >= wm
                && self.faults.gate(&k) == ReadGate::Open
            {
                keys.push((
                    Bytes::copy_from_slice(user_key(&k, prefix.len())),
                    h.version,
                ));
            }
        }
        Ok(keys)
    }

    /// Every namespace with at least one record, found by skipping from one namespace's key
    /// range to the next.
    fn namespaces_blocking(&self) -> Result<Vec<String>, TierError> {
        let db = self.db()?;
        let mut names = Vec::new();
        let mut from = vec![NS_TAG | 1];
        loop {
            let mut iter = db.iterator(IteratorMode::From(&from, rocksdb::Direction::Forward));
            let Some(item) = iter.next() else {
                return Ok(names);
            };
            let (k, _) = item.map_err(failed)?;
            if k[0] >= KEYSPACE_END_TAG {
                return Ok(names);
            }
            let len = usize::from(k[0] & !NS_TAG);
            let Some(name) = k.get(1..1 + len) else {
                return Ok(names);
            };
            let prefix = k[..1 + len].to_vec();
            if let Ok(n) = std::str::from_utf8(name) {
                names.push(n.to_owned());
            }
            from = prefix_end(&prefix);
        }
    }

    fn flush_blocking(&self, namespace: &str) -> Result<(), TierError> {
        self.bulk("flushing a namespace", || {
            let db = self.db()?;
            let prefix = ns_prefix(namespace);
            let end = prefix_end(&prefix);
            let mut batch = WriteBatch::default();
            batch.delete_range(&prefix, &end);
            let change = self.key_counts.change();
            let bypass = self.known.bypass();
            db.write_opt(batch, &self.write_opts()).map_err(failed)?;
            self.key_counts.clear_prefix(&prefix);
            drop(bypass);
            drop(change);
            // Reclaims the namespace's space now rather than at some later compaction. (Not
            // `delete_file_in_range`: it drops whole files without looking at what they hold,
            // and a write made after the range delete must survive.)
            if !stalled(&db) {
                db.compact_range(Some(&prefix), Some(&end));
            }
            Ok(())
        })
    }

    fn purge_blocking(&self) -> Result<u64, TierError> {
        let db = self.db()?;
        let now = self.clock.now_ms();
        let wm = self.watermark.load(Ordering::Acquire);
        // The records to drop, with the version the pass saw (`None`: corrupt).
        let mut doomed: Vec<(Box<[u8]>, Option<Version>)> = Vec::new();
        // The pass recounts the keys it keeps (see `crate::counts`).
        let mut counts: HashMap<Box<[u8]>, u64> = HashMap::new();
        let (recount, records) = self.key_counts.begin_recount(|| {
            // What the writer learned before the snapshot may be a record the compaction
            // filter dropped since: the recount must not meet it (`known.rs`).
            self.known.clear();
            db.iterator(IteratorMode::Start)
        });
        for item in records {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    if let Some(r) = recount {
                        self.key_counts.abandon_recount(r);
                    }
                    return Err(failed(e));
                }
            };
            if k.first() == Some(&0) {
                continue;
            }
            match record::decode_header(&v) {
                Ok(h) if !h.is_retained(now) || h.version.physical_ms() < wm => {
                    doomed.push((k, Some(h.version)));
                }
                Ok(_) => {
                    if let Some(prefix) = crate::counts::ns_prefix_of(&k) {
                        match counts.get_mut(prefix) {
                            Some(c) => *c += 1,
                            None => {
                                counts.insert(prefix.into(), 1);
                            }
                        }
                    }
                }
                Err(_) => {
                    self.counters.corrupt_records.incr();
                    doomed.push((k, None));
                }
            }
        }
        // Before the deletes: a record they fail to delete is expired or evicted, never
        // served, and not counted.
        if let Some(r) = recount {
            self.key_counts.finish_recount(r, counts);
        }
        // Each under its key's lock, and only if the record is still the one the pass saw:
        // a write since the pass read it must not be deleted.
        let mut n = 0;
        for chunk in doomed.chunks(1024) {
            let mut stripes: Vec<usize> = chunk.iter().map(|(k, _)| self.stripe(k)).collect();
            stripes.sort_unstable();
            stripes.dedup();
            let guards: Vec<_> = stripes.iter().map(|&i| self.key_locks[i].lock()).collect();
            let mut batch = WriteBatch::default();
            let mut gone = Vec::new();
            for (k, seen) in chunk {
                let Some(current) = db.get_pinned(k).map_err(failed)? else {
                    gone.push(self.known.tag(k));
                    continue;
                };
                let unchanged = match (record::decode_header(&current), seen) {
                    (Ok(h), Some(v)) => h.version == *v,
                    (Err(_), None) => true,
                    _ => false,
                };
                if unchanged {
                    batch.delete(k);
                    gone.push(self.known.tag(k));
                    n += 1;
                }
            }
            db.write_opt(batch, &self.write_opts()).map_err(failed)?;
            // Under the keys' locks, after RocksDB took them (these were not counted).
            for tag in gone {
                self.known.note(tag, Known::Absent);
            }
            drop(guards);
        }
        Ok(n)
    }

    /// Counts the keys of each namespace when the counts are not known (after an open or an
    /// eviction pass): the expiry pass, which counts what it keeps. Blocking.
    pub fn count_keys_if_unknown(&self) -> Result<(), TierError> {
        if self.key_counts.known() {
            return Ok(());
        }
        self.purge_blocking().map(|_| ())
    }

    /// Flushes memtables and compacts everything now, so the compaction filter drops expired
    /// and evicted records. Blocking.
    pub fn compact(&self) -> Result<(), TierError> {
        let db = self.db()?;
        if stalled(&db) {
            return Err(failed(
                "RocksDB has stopped writes (background error or full disk)",
            ));
        }
        db.flush().map_err(failed)?;
        db.compact_range(None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    /// Memory RocksDB holds for L3: memtables, the block cache and the table readers (index
    /// and bloom filter blocks), the process memory L3 costs beyond L1's budget.
    pub fn memory_bytes(&self) -> Result<u64, TierError> {
        let db = self.db()?;
        let prop = |name: &str| -> Result<u64, TierError> {
            Ok(db.property_int_value(name).map_err(failed)?.unwrap_or(0))
        };
        Ok(prop("rocksdb.cur-size-all-mem-tables")?
            + prop("rocksdb.block-cache-usage")?
            + prop("rocksdb.estimate-table-readers-mem")?)
    }

    /// Live bytes: SST files plus memtables.
    pub fn live_bytes(&self) -> Result<u64, TierError> {
        let db = self.db()?;
        let prop = |name: &str| -> Result<u64, TierError> {
            Ok(db.property_int_value(name).map_err(failed)?.unwrap_or(0))
        };
        Ok(prop("rocksdb.total-sst-files-size")? + prop("rocksdb.cur-size-all-mem-tables")?)
    }

    /// The oldest and newest write times on disk (one pass; `(0, 0)` when empty).
    fn write_time_span(&self, db: &DB) -> (u64, u64) {
        db.iterator(IteratorMode::Start)
            .filter_map(Result::ok)
            .filter(|(k, _)| k.first() != Some(&0))
            .filter_map(|(_, v)| record::decode_header(&v).ok())
            .map(|h| h.version.physical_ms())
            .fold(None, |acc: Option<(u64, u64)>, t| {
                Some(acc.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))))
            })
            .unwrap_or((0, 0))
    }

    /// Keeps live data within `capacity_bytes`: while it is above, raises the eviction
    /// watermark over the span of write times (assuming writes spread evenly over it, which
    /// a few passes correct), persists it, and compacts so the compaction filter drops the
    /// evicted records. Blocking; the L3 actor calls it periodically.
    pub fn enforce_size(&self) -> Result<SizeReport, TierError> {
        let db = self.db()?;
        let before = self.live_bytes()?;
        let cap = self.effective_capacity(before);
        let mut live = before;
        let mut passes = 0;
        // A manual compaction on a stalled RocksDB waits for the stall to end, which a full
        // disk never does: leave it to the reopen that clears the stall.
        while live > cap && passes < MAX_EVICTION_PASSES && !stalled(&db) {
            passes += 1;
            self.counters.eviction_passes.incr();
            let mut wm = self.watermark.load(Ordering::Acquire);
            if wm == 0 || self.newest_write_ms.load(Ordering::Acquire) == 0 {
                // After a restart, neither is known until the records are read once.
                let (oldest, newest) = self.write_time_span(&db);
                if wm == 0 {
                    wm = oldest;
                }
                self.newest_write_ms.fetch_max(newest, Ordering::AcqRel);
            }
            let newest = self.newest_write_ms.load(Ordering::Acquire).max(wm);
            let excess = (live as f64 - cap as f64 * EVICT_TARGET) / live as f64;
            let step = ((newest - wm) as f64 * excess.clamp(0.05, 1.0)).ceil() as u64;
            // When every record shares one write time (or the span is spent), evict them all
            // rather than make no progress.
            let next = if newest > wm {
                (wm + step.max(1)).min(newest)
            } else {
                newest + 1
            };
            self.watermark.store(next, Ordering::Release);
            db.put_opt(WATERMARK_KEY, next.to_le_bytes(), &self.write_opts())
                .map_err(failed)?;
            db.flush().map_err(failed)?;
            db.compact_range(None::<&[u8]>, None::<&[u8]>);
            live = self.live_bytes()?;
            tracing::info!(
                evict_before_ms = next,
                live_bytes = live,
                capacity_bytes = cap,
                "L3 eviction pass"
            );
        }
        if passes > 0 {
            // The compaction filter dropped records the counts still hold.
            self.key_counts.invalidate();
            self.known.clear();
        }
        Ok(SizeReport {
            before_bytes: before,
            after_bytes: live,
            evict_before_ms: self.watermark.load(Ordering::Acquire),
        })
    }

    /// Checks L3's health: RocksDB's background errors (a failed flush or compaction), the
    /// free space on its file system against the watermark, and live data against the
    /// capacity. Any of them marks the tier degraded with the reason (faults recorded
    /// against it are added by [`DiskTier::current_health`]). Blocking.
    pub fn check_health(&self) -> TierHealth {
        self.refresh_free_space();
        let Ok(db) = self.db() else {
            return self.health.lock().clone();
        };
        let prop = |name: &str| db.property_int_value(name).ok().flatten().unwrap_or(0);
        let mut problems = Vec::new();
        let bg_errors = prop("rocksdb.background-errors");
        if bg_errors > 0 {
            problems.push(format!("{bg_errors} RocksDB background errors"));
        }
        if self.shedding.load(Ordering::Acquire) {
            problems.push(format!(
                "{} bytes free on its file system, below the watermark of {}: new values are \
                 not stored in L3",
                self.free_bytes.load(Ordering::Acquire),
                self.min_free.load(Ordering::Acquire)
            ));
        }
        let live = prop("rocksdb.total-sst-files-size") + prop("rocksdb.cur-size-all-mem-tables");
        if live
            > self
                .config
                .capacity_bytes
                .saturating_add(self.config.capacity_bytes / 5)
        {
            problems.push(format!(
                "{live} live bytes, above the capacity of {} by more than 20 %",
                self.config.capacity_bytes
            ));
        }
        let h = if problems.is_empty() {
            TierHealth::Up
        } else {
            TierHealth::Degraded(problems.join("; "))
        };
        *self.health.lock() = h.clone();
        h
    }

    /// Health as the node reports it: down while closed or untrusted, degraded while
    /// changes wait to be applied or [`DiskTier::check_health`] found a problem.
    pub fn current_health(&self) -> TierHealth {
        let base = self.health.lock().clone();
        if !self.is_open() {
            return base;
        }
        let f = self.faults.summary();
        if let Some(why) = f.untrusted {
            return TierHealth::Down(format!(
                "off the read path until it is emptied: {why} (last error: {})",
                f.last_error.unwrap_or_default()
            ));
        }
        if f.tombstones > 0 {
            let mut reason = format!(
                "{} keys changed while L3 could not apply the change (last error: {}); they \
                 miss in L3 until it recovers",
                f.tombstones,
                f.last_error.unwrap_or_default()
            );
            if let TierHealth::Degraded(more) = base {
                reason.push_str("; ");
                reason.push_str(&more);
            }
            return TierHealth::Degraded(reason);
        }
        base
    }

    /// Why L3 cannot take writes now (not open, or changes waiting to be applied), for the
    /// manager's `refuse_writes_on_l3_fault`.
    pub fn write_fault(&self) -> Option<String> {
        if !self.is_open() {
            return Some(match &*self.health.lock() {
                TierHealth::Down(r) => r.clone(),
                _ => "L3 is not open".to_owned(),
            });
        }
        let f = self.faults.summary();
        if let Some(why) = f.untrusted {
            return Some(why);
        }
        (f.tombstones > 0).then(|| {
            format!(
                "{} changes failed to reach the disk (last error: {})",
                f.tombstones,
                f.last_error.unwrap_or_default()
            )
        })
    }

    /// RocksDB's background errors since the database was opened (a failed flush or
    /// compaction; after a hard one RocksDB refuses writes until reopened).
    pub fn background_errors(&self) -> u64 {
        self.db().ok().map_or(0, |db| {
            db.property_int_value("rocksdb.background-errors")
                .ok()
                .flatten()
                .unwrap_or(0)
        })
    }

    /// Free bytes on L3's file system at the last check (`None` before the first).
    pub fn free_bytes(&self) -> Option<u64> {
        Some(self.free_bytes.load(Ordering::Acquire)).filter(|f| *f != u64::MAX)
    }

    /// Whether L3 is below its free-space watermark (new values are not stored).
    pub fn is_shedding(&self) -> bool {
        self.shedding.load(Ordering::Acquire)
    }

    /// Reads the file system's free space and updates the watermark state.
    fn refresh_free_space(&self) {
        let Some((free, total)) = fs_space(&self.config.path) else {
            return;
        };
        let min = match self.config.min_free_bytes {
            0 => (total / 20).clamp(4 << 20, 1 << 30),
            m => m,
        };
        self.min_free.store(min, Ordering::Release);
        self.free_bytes.store(free, Ordering::Release);
        let shed = free < min;
        if self.shedding.swap(shed, Ordering::AcqRel) != shed {
            if shed {
                tracing::warn!(
                    free,
                    min,
                    "L3 file system below its free-space watermark: new values are not stored in L3, and L3 evicts"
                );
            } else {
                tracing::info!(
                    free,
                    min,
                    "L3 file system back above its free-space watermark"
                );
            }
        }
    }

    /// The live data L3 may hold now: the capacity, or less when the file system has less
    /// room above the watermark.
    fn effective_capacity(&self, live: u64) -> u64 {
        let free = self.free_bytes.load(Ordering::Acquire);
        if free == u64::MAX {
            return self.config.capacity_bytes;
        }
        let min = self.min_free.load(Ordering::Acquire);
        let room = if free >= min {
            live.saturating_add(free - min)
        } else {
            live.saturating_sub(min - free)
        };
        self.config.capacity_bytes.min(room)
    }

    /// Closes and opens the database again: how RocksDB leaves its read-only state after a
    /// background error (a full disk during a flush or WAL write). Blocking.
    pub fn reopen(&self) -> Result<(), TierError> {
        tracing::warn!("reopening L3 to clear a RocksDB background error");
        *self.last_reopen.lock() = Some(std::time::Instant::now());
        self.close();
        self.open()
    }

    /// Whether a reopen is due after a background error: at once with room on the disk,
    /// and at most every `below_watermark` while free space is below the watermark.
    ///
    /// Below the watermark a reopen is the only way out: RocksDB in its error state neither
    /// compacts nor deletes obsolete files, so the space a `FLUSHALL` or an eviction frees
    /// stays taken and free space never climbs back above the watermark; the open deletes
    /// those files. A clean-clone run found L3 degraded for good that way (47 background
    /// errors, 3.8 MB free of a 4 MiB watermark, 45 s after the flush). The interval keeps a
    /// disk that stays full from being reopened on every maintenance tick.
    pub fn reopen_due(&self, below_watermark: std::time::Duration) -> bool {
        if !self.is_shedding() {
            return true;
        }
        self.last_reopen
            .lock()
            .is_none_or(|at| at.elapsed() >= below_watermark)
    }

    /// Stores `entry` through the group-commit writer: a thread of its own that takes every
    /// write queued while the previous batch was being written and commits them as one
    /// RocksDB batch. Under concurrent writes this replaces a blocking-pool hop and a WAL
    /// append per write with one of each per batch; a lone write costs about the same as
    /// before. Same semantics as a single `set`: a newer stored version wins.
    pub async fn set_grouped(
        self: &Arc<Self>,
        namespace: &str,
        key: Bytes,
        entry: Entry,
    ) -> Result<SetOutcome, TierError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let req = WriteReq {
            namespace: namespace.to_owned(),
            key,
            entry,
            reply: Some(reply),
            behind: false,
        };
        self.writer_queue()?
            .send(Queued::Write(req))
            .map_err(|_| failed("L3 writer thread has stopped"))?;
        answer
            .await
            .map_err(|_| failed("L3 writer dropped a write"))?
    }

    /// Stores `entry` behind (`crate::behind`) when [`DiskTierConfig::write_behind`] allows:
    /// returns once L3 answers reads of the key with it, and before it is on disk. Only for
    /// a write its caller just stamped, so that no newer version of the key is stored
    /// ([`Tier::set_fresh`]). Where it would pass the pending bound, waits until the writer
    /// has made room; with the tier closed, as [`DiskTier::set_grouped`].
    pub async fn set_behind(
        self: &Arc<Self>,
        namespace: &str,
        key: Bytes,
        entry: Entry,
    ) -> Result<SetOutcome, TierError> {
        if !self.config.write_behind || self.config.sync_writes || !self.is_open() {
            return self.set_grouped(namespace, key, entry).await;
        }
        let dkey = disk_key(namespace, &key);
        let size = Behind::size_of(dkey.len(), &entry);
        if !self.reserve_behind(size).await? {
            // Closed while it waited: as a write stored through would be.
            return self.set_grouped(namespace, key, entry).await;
        }
        self.behind.put(dkey, namespace, key, entry, size);
        if self.behind.claim_flush() {
            self.writer_queue()?
                .send(Queued::Flush)
                .map_err(|_| failed("L3 writer thread has stopped"))?;
        }
        Ok(SetOutcome::Stored)
    }

    /// Reserves `size` bytes of the pending bound for a write about to be stored behind,
    /// waiting while they would pass it: the writer, asked to store what is pending at once,
    /// tells of each group it stores. False when the tier closed meanwhile.
    async fn reserve_behind(self: &Arc<Self>, size: usize) -> Result<bool, TierError> {
        loop {
            let progressed = self.behind.progressed();
            tokio::pin!(progressed);
            // Registered before the try: a store between the try and the wait is seen.
            progressed.as_mut().enable();
            if self.behind.try_reserve(size) {
                return Ok(true);
            }
            if !self.is_open() {
                return Ok(false);
            }
            if self.behind.claim_urgent() {
                self.writer_queue()?
                    .send(Queued::FlushNow)
                    .map_err(|_| failed("L3 writer thread has stopped"))?;
            }
            // Bounded, in case the writer is gone without a word (its queue is checked again).
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), progressed).await;
        }
    }

    /// The writer's flush of what is pending behind; `false` once the tier is gone.
    fn flush_behind(tier: &std::sync::Weak<Self>) -> bool {
        let Some(t) = tier.upgrade() else {
            return false;
        };
        // Before the snapshot: a write put from now on queues another flush.
        t.behind.flush_taken();
        t.store_behind();
        true
    }

    /// Stores the writes pending in `crate::behind` (on the calling thread; the writer's, or
    /// a blocking one before a scan or a bulk change, which must see them on disk).
    fn store_behind(&self) {
        if self.behind.is_empty() {
            return;
        }
        let mut pending: Vec<WriteReq> = self
            .behind
            .snapshot()
            .into_iter()
            .map(|p| WriteReq {
                namespace: p.namespace,
                key: p.key,
                entry: p.entry,
                reply: None,
                behind: true,
            })
            .collect();
        while !pending.is_empty() {
            let rest = pending.split_off(pending.len().min(MAX_GROUP));
            self.write_group(pending);
            self.behind.stored_some();
            pending = rest;
        }
    }

    /// Returns once every write queued through [`DiskTier::set_grouped`] or stored behind
    /// before the call has been applied or has failed — also those whose callers gave up.
    pub async fn settle(self: &Arc<Self>) -> Result<(), TierError> {
        let Some(tx) = self.writer.get() else {
            return Ok(()); // nothing was ever queued
        };
        let (done, settled) = tokio::sync::oneshot::channel();
        tx.send(Queued::Flush)
            .map_err(|_| failed("L3 writer thread has stopped"))?;
        tx.send(Queued::Barrier(done))
            .map_err(|_| failed("L3 writer thread has stopped"))?;
        settled
            .await
            .map_err(|_| failed("L3 writer dropped a barrier"))
    }

    fn writer_queue(self: &Arc<Self>) -> Result<&std::sync::mpsc::Sender<Queued>, TierError> {
        if let Some(tx) = self.writer.get() {
            return Ok(tx);
        }
        let (tx, rx) = std::sync::mpsc::channel::<Queued>();
        let tier = Arc::downgrade(self);
        let delay = std::time::Duration::from_millis(self.config.write_behind_ms);
        std::thread::Builder::new()
            .name("strata-l3-writer".into())
            .spawn(move || {
                // When the writes pending behind are due to be stored: `write_behind_ms`
                // after the first of them was put, so that overwrites of a key meanwhile are
                // stored once.
                let mut flush_at: Option<std::time::Instant> = None;
                // Ends when the tier (and with it the sender) is dropped.
                loop {
                    let first = match flush_at {
                        None => rx.recv().ok(),
                        Some(at) => {
                            let wait = at.saturating_duration_since(std::time::Instant::now());
                            match rx.recv_timeout(wait) {
                                Ok(q) => Some(q),
                                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                                    flush_at = None;
                                    if !Self::flush_behind(&tier) {
                                        return;
                                    }
                                    continue;
                                }
                                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
                            }
                        }
                    };
                    let Some(first) = first else {
                        return;
                    };
                    let (mut group, mut barriers) = (Vec::new(), Vec::new());
                    let mut next = Some(first);
                    while let Some(q) = next.take() {
                        match q {
                            Queued::Write(r) => group.push(r),
                            Queued::Flush => {
                                flush_at.get_or_insert_with(|| std::time::Instant::now() + delay);
                            }
                            Queued::FlushNow => flush_at = Some(std::time::Instant::now()),
                            Queued::Barrier(b) => barriers.push(b),
                        }
                        if group.len() < MAX_GROUP {
                            next = rx.try_recv().ok();
                        }
                    }
                    if !group.is_empty() {
                        let replies = match tier.upgrade() {
                            Some(t) => t.write_group(group),
                            None => return,
                        };
                        for (reply, outcome) in replies {
                            if let Some(reply) = reply {
                                let _ = reply.send(outcome);
                            }
                        }
                    }
                    // A barrier stores what is pending at once ([`DiskTier::settle`]).
                    let due = flush_at.is_some_and(|at| at <= std::time::Instant::now());
                    if due || !barriers.is_empty() {
                        flush_at = None;
                        if !Self::flush_behind(&tier) {
                            return;
                        }
                    }
                    // After the group: every write queued before a barrier is in it or in
                    // an earlier one, and every write stored behind before it is stored.
                    for b in barriers {
                        let _ = b.send(());
                    }
                }
            })
            .map_err(|e| failed(format!("cannot start the L3 writer thread: {e}")))?;
        // Two first writers may race here; the loser's thread sees its sender dropped at once
        // and exits.
        Ok(self.writer.get_or_init(|| tx))
    }

    /// Runs `f` with this tier on a reader thread: point reads memory cannot answer
    /// (`crate::readers`). On the blocking pool instead while the readers' queue is long
    /// (reads stuck on a failing disk hold up the threads, not every read after them).
    async fn on_reader<T, F>(self: &Arc<Self>, f: F) -> Result<T, TierError>
    where
        T: Send + 'static,
        F: FnOnce(&DiskTier) -> Result<T, TierError> + Send + 'static,
    {
        let readers = self.readers()?;
        if readers.backlogged() {
            return self.blocking(f).await;
        }
        let me = self.clone();
        readers
            .run(move || f(&me))
            .await
            .map_err(|_| failed("L3 reader thread dropped a read"))?
    }

    fn readers(&self) -> Result<&Readers, TierError> {
        if let Some(r) = self.readers.get() {
            return Ok(r);
        }
        let started = Readers::start(Readers::default_threads(), "strata-l3-reader")
            .map_err(|e| failed(format!("cannot start the L3 reader threads: {e}")))?;
        // Two first readers may race here; the loser's threads end with its queue.
        Ok(self.readers.get_or_init(|| started))
    }

    /// Runs `f` on the blocking pool with this tier.
    async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, TierError>
    where
        T: Send + 'static,
        F: FnOnce(&DiskTier) -> Result<T, TierError> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| failed(format!("L3 task failed: {e}")))?
    }
}

/// The `Tier` face of a shared `DiskTier` (the tier and its actor share one `Arc`).
#[derive(Debug, Clone)]
pub struct SharedDiskTier(pub Arc<DiskTier>);

impl SharedDiskTier {
    /// A read that costs no hop to a reader thread when memory can answer (`get_cached`:
    /// memtables, bloom filters and the block cache, so a key certainly absent too).
    async fn read(
        &self,
        namespace: &str,
        key: &[u8],
        stale: bool,
    ) -> Result<Option<Entry>, TierError> {
        if let Some(answer) = self.0.get_cached(namespace, key, stale) {
            return answer;
        }
        let (ns, key) = (namespace.to_owned(), key.to_vec());
        self.0
            .on_reader(move |t| t.get_blocking(&ns, &key, stale))
            .await
    }

    /// A removal that costs no hop when memory shows there is nothing to remove.
    async fn take(&self, namespace: &str, key: &[u8], which: Removal) -> Result<u64, TierError> {
        let dkey = disk_key(namespace, key);
        // A write stored behind and not yet on disk is something to remove.
        let pending = self.0.behind.version(&dkey).is_some();
        if !pending && self.0.floor_rules_out(&dkey, which) {
            return Ok(0);
        }
        let nothing = match (which, self.0.version_cached(&dkey)) {
            (_, Some(None)) => true,
            (Removal::Exactly(v), Some(Some(held))) => held != v,
            (Removal::OlderThan(v), Some(Some(held))) => held >= v,
            _ => false,
        };
        if nothing && !pending {
            return Ok(0);
        }
        // The blocking pool, not a reader thread: a removal waits for its key's lock, which
        // the writer holds through a slow commit (a sync, a write stall) and a purge holds
        // across reads from disk; a few such waits must not hold up every read.
        let (ns, key) = (namespace.to_owned(), key.to_vec());
        self.0
            .blocking(move |t| t.remove_blocking(&ns, &key, which))
            .await
    }
}

#[async_trait]
impl Tier for SharedDiskTier {
    fn layer(&self) -> Layer {
        Layer::L3
    }

    async fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, TierError> {
        self.read(namespace, key, false).await
    }

    async fn get_stale(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, TierError> {
        self.read(namespace, key, true).await
    }

    async fn set(
        &self,
        namespace: &str,
        key: Bytes,
        entry: Entry,
    ) -> Result<SetOutcome, TierError> {
        self.0.set_grouped(namespace, key, entry).await
    }

    async fn set_fresh(
        &self,
        namespace: &str,
        key: Bytes,
        entry: Entry,
    ) -> Result<SetOutcome, TierError> {
        self.0.set_behind(namespace, key, entry).await
    }

    fn has_writes_behind(&self) -> bool {
        !self.0.behind.is_empty()
    }

    async fn remove(&self, namespace: &str, key: &[u8]) -> Result<bool, TierError> {
        self.take(namespace, key, Removal::Any).await.map(|n| n > 0)
    }

    async fn remove_version(
        &self,
        namespace: &str,
        key: &[u8],
        version: Version,
    ) -> Result<bool, TierError> {
        self.take(namespace, key, Removal::Exactly(version))
            .await
            .map(|n| n > 0)
    }

    /// One read and, only when the copy is older, one removal under the key's lock: on a
    /// worker thread when memory can tell (nothing on disk, or a copy at least as new),
    /// else one hop to the blocking pool, not the default's three.
    async fn remove_older(
        &self,
        namespace: &str,
        key: &[u8],
        below: Version,
    ) -> Result<u64, TierError> {
        self.take(namespace, key, Removal::OlderThan(below)).await
    }

    async fn invalidate_pattern(&self, namespace: &str, pattern: &Glob) -> Result<u64, TierError> {
        let (ns, glob) = (namespace.to_owned(), pattern.clone());
        self.0
            .blocking(move |t| {
                // Writes stored behind are on disk first, where the change reaches them.
                t.store_behind();
                let start = glob.literal_prefix();
                t.bulk("a pattern invalidation", || {
                    t.delete_where(&ns, &start, |k, _| glob.matches(k))
                })
            })
            .await
    }

    async fn invalidate_tag(&self, namespace: &str, tag: &[u8]) -> Result<u64, TierError> {
        let (ns, tag) = (namespace.to_owned(), tag.to_vec());
        self.0
            .blocking(move |t| {
                t.store_behind();
                t.bulk("a tag invalidation", || {
                    t.delete_where(&ns, b"", |_, v| {
                        record::decode(v).is_ok_and(|e| e.tags.contains(&tag))
                    })
                })
            })
            .await
    }

    async fn scan_keys(
        &self,
        namespace: &str,
        from: ScanFrom<'_>,
        limit: usize,
    ) -> Result<Vec<Bytes>, TierError> {
        let (ns, hash, after) = owned_from(namespace, from);
        self.0
            .blocking(move |t| t.scan_blocking(&ns, from_parts(hash, after.as_deref()), limit))
            .await
    }

    async fn scan_versions(
        &self,
        namespace: &str,
        from: ScanFrom<'_>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Version)>, TierError> {
        let (ns, hash, after) = owned_from(namespace, from);
        self.0
            .blocking(move |t| {
                t.store_behind();
                t.scan_versions_blocking(&ns, from_parts(hash, after.as_deref()), limit)
            })
            .await
    }

    async fn namespaces(&self) -> Result<Vec<String>, TierError> {
        self.0
            .blocking(|t| {
                t.store_behind();
                t.namespaces_blocking()
            })
            .await
    }

    async fn flush_namespace(&self, namespace: &str) -> Result<(), TierError> {
        let ns = namespace.to_owned();
        self.0
            .blocking(move |t| {
                t.store_behind();
                t.flush_blocking(&ns)
            })
            .await
    }

    async fn purge_expired(&self) -> Result<u64, TierError> {
        self.0
            .blocking(|t| {
                t.store_behind();
                t.purge_blocking()
            })
            .await
    }

    async fn flush_all(&self) -> Result<(), TierError> {
        self.0
            .blocking(|t| {
                t.store_behind();
                t.flush_all_blocking()
            })
            .await
    }

    async fn settle(&self) -> Result<(), TierError> {
        self.0.settle().await
    }

    fn write_fault(&self) -> Option<String> {
        self.0.write_fault()
    }

    fn key_count(&self, namespace: &str) -> Option<u64> {
        self.0.key_counts.get(&ns_prefix(namespace))
    }

    fn health(&self) -> TierHealth {
        self.0.current_health()
    }
}
