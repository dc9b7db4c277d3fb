//! What L3 failed to apply, so that it never serves the past (G3 on a failing disk).
//!
//! A write or delete that RocksDB refused (disk full, read-only file system, a background
//! error, or L3 not open at all) leaves the key's older record on disk. Counting and dropping
//! the failure, as L3 once did, serves that older record on the next L1 miss. Instead:
//!
//! - each such key gets an in-memory **tombstone** until L3 has deleted it: reads of the key
//!   miss in L3, whatever the disk holds;
//! - tombstones are bounded ([`MAX_TOMBSTONES`] keys, [`MAX_TOMBSTONE_BYTES`] bytes); past
//!   the bound, or when a bulk change (pattern, tag, namespace flush) failed, L3 becomes
//!   **untrusted**: it leaves the read path entirely until it has been emptied;
//! - **reconciling** (the L3 actor, once writes work again) deletes the tombstoned keys in
//!   one batch, or empties L3 when it is untrusted, under the keys' locks so that no write can
//!   slip between the delete and the tombstone's removal; a tombstone recorded meanwhile has a
//!   newer generation and stays;
//! - a **marker file** in the data directory records, across restarts, that changes were
//!   lost: the first fault writes it (in place, one byte, fsync: a full disk still takes it),
//!   reconciling clears it, and a start that finds it set empties L3 before serving. Only a
//!   fault whose marker write also failed (the whole file system read-only) is not carried
//!   across a restart; the log says so.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// Most keys with a tombstone; one more makes L3 untrusted.
pub const MAX_TOMBSTONES: usize = 65_536;
/// Most bytes of tombstoned keys; more makes L3 untrusted.
pub const MAX_TOMBSTONE_BYTES: usize = 8 << 20;
/// The marker file's name inside the data directory.
pub const MARKER_FILE: &str = "STRATA_L3_STATE";

const CLEAN: u8 = b'c';
const DIRTY: u8 = b'u';

/// How a read of one key stands against the recorded faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadGate {
    /// Nothing recorded: read the disk.
    Open,
    /// The key has a tombstone: a miss.
    Tombstoned,
    /// L3 is untrusted: an error (the manager treats it as a miss).
    Untrusted(String),
}

/// What reconciling must do.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Nothing is recorded.
    Nothing,
    /// Delete these keys (with their tombstones' generations).
    Keys(Vec<(Vec<u8>, u64)>),
    /// Empty L3; tombstones up to this generation go with it.
    Everything(u64),
}

/// A summary for health and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultSummary {
    /// Keys with a tombstone.
    pub tombstones: usize,
    /// Why L3 is untrusted, if it is.
    pub untrusted: Option<String>,
    /// The last error that recorded a fault.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    tombstones: HashMap<Vec<u8>, u64>,
    bytes: usize,
    generation: u64,
    /// Why L3 is untrusted, and the generation at which it became so.
    untrusted: Option<(String, u64)>,
    last_error: Option<String>,
}

/// The fault record of one L3.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// False while nothing is recorded: the read path's lock-free check.
    any: AtomicBool,
    state: Mutex<State>,
}

impl Faults {
    /// How a read of `dkey` stands.
    pub(crate) fn gate(&self, dkey: &[u8]) -> ReadGate {
        if !self.any.load(Ordering::Acquire) {
            return ReadGate::Open;
        }
        let s = self.state.lock();
        if let Some((why, _)) = &s.untrusted {
            return ReadGate::Untrusted(why.clone());
        }
        if s.tombstones.contains_key(dkey) {
            ReadGate::Tombstoned
        } else {
            ReadGate::Open
        }
    }

    /// Whether L3 is untrusted (off the read path).
    pub(crate) fn untrusted(&self) -> Option<String> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.state.lock().untrusted.as_ref().map(|(w, _)| w.clone())
    }

    /// Whether anything is recorded.
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Records that a change of `dkey` could not be applied. Returns true when this is the
    /// first fault recorded (the caller marks the disk).
    pub(crate) fn tombstone(&self, dkey: &[u8], error: &str) -> bool {
        let mut s = self.state.lock();
        let first = !self.any.swap(true, Ordering::AcqRel);
        s.generation += 1;
        let generation = s.generation;
        s.last_error = Some(error.to_owned());
        if let Some((_, g)) = &mut s.untrusted {
            // Covered by emptying L3, but only by an emptying planned after this fault.
            *g = generation;
            return first;
        }
        if let Some(g) = s.tombstones.get_mut(dkey) {
            *g = generation;
            return first;
        }
        if s.tombstones.len() >= MAX_TOMBSTONES || s.bytes + dkey.len() > MAX_TOMBSTONE_BYTES {
            let why = format!(
                "more than {MAX_TOMBSTONES} keys ({} bytes) changed while L3 could not apply them",
                s.bytes
            );
            s.tombstones.clear();
            s.bytes = 0;
            s.untrusted = Some((why, generation));
            return first;
        }
        s.bytes += dkey.len();
        s.tombstones.insert(dkey.to_vec(), generation);
        first
    }

    /// Records that L3 as a whole cannot be trusted (a bulk change failed, or a previous run
    /// left faults behind). Returns true when this is the first fault recorded.
    pub(crate) fn distrust(&self, why: &str) -> bool {
        let mut s = self.state.lock();
        let first = !self.any.swap(true, Ordering::AcqRel);
        s.generation += 1;
        let generation = s.generation;
        s.last_error = Some(why.to_owned());
        s.tombstones.clear();
        s.bytes = 0;
        s.untrusted = Some((why.to_owned(), generation));
        first
    }

    /// What reconciling must do now.
    pub(crate) fn plan(&self) -> Plan {
        if !self.any.load(Ordering::Acquire) {
            return Plan::Nothing;
        }
        let s = self.state.lock();
        if s.untrusted.is_some() {
            return Plan::Everything(s.generation);
        }
        if s.tombstones.is_empty() {
            return Plan::Nothing;
        }
        Plan::Keys(s.tombstones.iter().map(|(k, g)| (k.clone(), *g)).collect())
    }

    /// The keys of `plan` were deleted from disk: their tombstones go, unless recorded again
    /// since. Returns true when nothing is recorded any more.
    pub(crate) fn applied_keys(&self, keys: &[(Vec<u8>, u64)]) -> bool {
        let mut s = self.state.lock();
        for (k, g) in keys {
            if s.tombstones.get(k) == Some(g) {
                s.tombstones.remove(k);
                s.bytes -= k.len();
            }
        }
        self.settle(&mut s)
    }

    /// L3 was emptied when the generation was `upto`: everything recorded until then goes.
    /// Returns true when nothing is recorded any more.
    pub(crate) fn applied_everything(&self, upto: u64) -> bool {
        let mut s = self.state.lock();
        if s.untrusted.as_ref().is_some_and(|(_, g)| *g <= upto) {
            s.untrusted = None;
        }
        let before = s.tombstones.len();
        s.tombstones.retain(|_, g| *g > upto);
        if s.tombstones.len() != before {
            s.bytes = s.tombstones.keys().map(Vec::len).sum();
        }
        self.settle(&mut s)
    }

    fn settle(&self, s: &mut State) -> bool {
        let clear = s.untrusted.is_none() && s.tombstones.is_empty();
        if clear {
            s.last_error = None;
            self.any.store(false, Ordering::Release);
        }
        clear
    }

    /// For health and metrics.
    pub(crate) fn summary(&self) -> FaultSummary {
        if !self.any.load(Ordering::Acquire) {
            return FaultSummary::default();
        }
        let s = self.state.lock();
        FaultSummary {
            tombstones: s.tombstones.len(),
            untrusted: s.untrusted.as_ref().map(|(w, _)| w.clone()),
            last_error: s.last_error.clone(),
        }
    }
}

/// The marker file: one byte, `c` when no fault is outstanding, `u` when a fault was recorded
/// and not yet reconciled.
#[derive(Debug)]
pub(crate) struct Marker {
    path: PathBuf,
}

impl Marker {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            path: dir.join(MARKER_FILE),
        }
    }

    /// Whether a previous run left faults behind. A missing or unreadable marker reads clean
    /// (a directory from before the marker existed, or a fresh one).
    pub(crate) fn dirty(&self) -> bool {
        let mut b = [0u8; 1];
        std::fs::File::open(&self.path)
            .and_then(|mut f| f.read_exact(&mut b))
            .is_ok_and(|()| b[0] == DIRTY)
    }

    /// Marks the directory clean, creating the file if needed (at open, and after a
    /// reconcile).
    pub(crate) fn set_clean(&self) -> std::io::Result<()> {
        self.write(CLEAN, true)
    }

    /// Marks the directory dirty: overwrites the existing byte in place, so a full file
    /// system still takes it.
    pub(crate) fn set_dirty(&self) -> std::io::Result<()> {
        self.write(DIRTY, false)
    }

    /// Marks the directory dirty, creating the file if needed (at open, with faults
    /// recorded before it).
    pub(crate) fn set_dirty_creating(&self) -> std::io::Result<()> {
        self.write(DIRTY, true)
    }

    fn write(&self, byte: u8, create: bool) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(create)
            .truncate(false)
            .open(&self.path)?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&[byte])?;
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tombstones_gate_reads_until_applied() {
        let f = Faults::default();
        assert_eq!(f.gate(b"k"), ReadGate::Open);
        assert!(f.tombstone(b"k", "disk full"));
        assert!(!f.tombstone(b"j", "disk full"));
        assert_eq!(f.gate(b"k"), ReadGate::Tombstoned);
        assert_eq!(f.gate(b"x"), ReadGate::Open);
        let Plan::Keys(keys) = f.plan() else {
            panic!("expected keys")
        };
        assert_eq!(keys.len(), 2);
        // A new fault on `k` after the plan was taken keeps its tombstone.
        f.tombstone(b"k", "again");
        assert!(!f.applied_keys(&keys));
        assert_eq!(f.gate(b"k"), ReadGate::Tombstoned);
        assert_eq!(f.gate(b"j"), ReadGate::Open);
        let Plan::Keys(keys) = f.plan() else {
            panic!("expected keys")
        };
        assert!(f.applied_keys(&keys));
        assert!(!f.any());
        assert_eq!(f.summary(), FaultSummary::default());
    }

    #[test]
    fn past_the_bound_l3_is_untrusted_until_emptied() {
        let f = Faults::default();
        for i in 0..=MAX_TOMBSTONES {
            f.tombstone(format!("key{i}").as_bytes(), "disk full");
        }
        assert!(matches!(f.gate(b"anything"), ReadGate::Untrusted(_)));
        assert_eq!(
            f.summary().tombstones,
            0,
            "the tombstones' memory is released"
        );
        let Plan::Everything(upto) = f.plan() else {
            panic!("expected everything")
        };
        // A fault after the plan was taken keeps L3 untrusted past that plan's emptying.
        f.tombstone(b"later", "still failing");
        assert!(!f.applied_everything(upto));
        assert!(matches!(f.gate(b"later"), ReadGate::Untrusted(_)));
        let Plan::Everything(upto) = f.plan() else {
            panic!("expected everything")
        };
        assert!(f.applied_everything(upto));
        assert_eq!(f.gate(b"later"), ReadGate::Open);
    }

    #[test]
    fn a_distrust_after_the_plan_survives_the_apply() {
        let f = Faults::default();
        f.distrust("flush failed");
        let Plan::Everything(upto) = f.plan() else {
            panic!()
        };
        f.distrust("pattern failed");
        assert!(!f.applied_everything(upto));
        assert!(f.untrusted().is_some());
        let Plan::Everything(upto) = f.plan() else {
            panic!()
        };
        assert!(f.applied_everything(upto));
    }

    #[test]
    fn the_marker_round_trips_and_reads_clean_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let m = Marker::new(dir.path());
        assert!(!m.dirty());
        // Dirty needs an existing file (it never allocates).
        assert!(m.set_dirty().is_err());
        m.set_clean().unwrap();
        assert!(!m.dirty());
        m.set_dirty().unwrap();
        assert!(m.dirty());
        m.set_clean().unwrap();
        assert!(!m.dirty());
    }
}
