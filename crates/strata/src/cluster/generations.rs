//! This member's generations across restarts.
//!
//! A process's membership identity carries a generation: the wall clock's Unix ms when it
//! started, one more at each rejoin under a renewed identity. At one gossip address the
//! higher generation wins (`NodeIdentity::win_addr_conflict`), and every member keeps the
//! identity it last saw of an address for foca's `remove_down_after` (24 h). A process
//! restarted on a wall clock stepped back past its previous life's start (a host booted
//! with its clock behind until NTP steps it, a VM restored from a snapshot) would start
//! below that life: every member would take its announcements for an older identity's and
//! ignore them, and it could not join for a day. So with L3 on, the highest generation
//! this member has used is kept in a file beside L3's files ([`FILE`]), and a restart
//! starts above it. Without L3 (no directory of its own) the wall clock alone decides.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use strata_cluster::identity::{next_generation, parse_generation};

/// The file, in `l3.data_dir`, holding the highest generation used on this directory.
pub(crate) const FILE: &str = "cluster-generation";

/// Most bytes read of it: more than a generation takes, so that a longer file is seen as
/// foreign rather than cut to a number.
const MAX_FILE_BYTES: u64 = 64;

/// The highest generation this member has used, kept on disk where it has a directory.
#[derive(Debug)]
pub(crate) struct Generations {
    path: Option<PathBuf>,
    highest: Mutex<u64>,
}

impl Generations {
    /// This process's first generation at `now_ms`, above what an earlier process on `dir`
    /// used, and written there. A directory that cannot be read or written (a full or
    /// read-only disk) is logged and leaves the wall clock to decide: the node still
    /// starts, as it does with L3 failing.
    pub(crate) fn start(dir: Option<&Path>, now_ms: u64) -> (Self, u64) {
        let path = dir.map(|d| d.join(FILE));
        let last = path.as_deref().and_then(read);
        let generation = next_generation(now_ms, last);
        if let Some(last) = last.filter(|&l| l >= now_ms) {
            tracing::warn!(
                last,
                now_ms,
                generation,
                "the wall clock is behind this member's previous life: its generation starts above that life's, not at the clock"
            );
        }
        let me = Generations {
            path,
            highest: Mutex::new(0),
        };
        me.note(generation);
        (me, generation)
    }

    /// Records that this member now uses `generation` (a rejoin renewed its identity), if it
    /// is the highest yet. Blocking file I/O: call it off the runtime's threads.
    pub(crate) fn note(&self, generation: u64) {
        let mut highest = self.highest.lock();
        if generation <= *highest {
            return;
        }
        *highest = generation;
        if let Some(path) = &self.path
            && let Err(e) = write(path, generation)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot record this member's generation: a restart on a wall clock stepped back past it may start below it");
        }
    }
}

/// The generation `path` holds; `None` when it is missing or unreadable (logged unless
/// missing).
fn read(path: &Path) -> Option<u64> {
    let mut bytes = Vec::new();
    let read =
        std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES).read_to_end(&mut bytes));
    match read {
        Ok(_) => {
            let found = parse_generation(&bytes);
            if found.is_none() {
                tracing::warn!(path = %path.display(), "this member's generation file holds no generation: ignored");
            }
            found
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read this member's generation file: ignored");
            None
        }
    }
}

/// Writes `generation` to `path` whole or not at all: a temporary file, synced, renamed
/// over it.
fn write(path: &Path, generation: u64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{generation}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        // The rename's directory entry; best effort (not every filesystem allows it).
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_on_a_clock_stepped_back_starts_above_its_previous_life() {
        let dir = tempfile::tempdir().unwrap();
        let (first, g1) = Generations::start(Some(dir.path()), 10_000_000);
        assert_eq!(g1, 10_000_000);
        // Two rejoins, then the process ends.
        first.note(10_000_001);
        first.note(10_000_002);
        first.note(10_000_001);
        drop(first);
        // The clock stepped back an hour.
        let (_, g2) = Generations::start(Some(dir.path()), 10_000_000 - 3_600_000);
        assert_eq!(g2, 10_000_003);
        // A later clock wins as before.
        let (_, g3) = Generations::start(Some(dir.path()), 20_000_000);
        assert_eq!(g3, 20_000_000);
        // A torn or foreign file is ignored: the clock decides.
        std::fs::write(dir.path().join(FILE), b"garbage").unwrap();
        let (_, g4) = Generations::start(Some(dir.path()), 15_000_000);
        assert_eq!(g4, 15_000_000);
        // Without a directory: the clock alone.
        let (_, g5) = Generations::start(None, 3);
        assert_eq!(g5, 3);
    }

    #[test]
    fn a_directory_it_cannot_create_leaves_the_clock_to_decide() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        // A directory under a file cannot exist.
        let (g, generation) = Generations::start(Some(&file.join("l3")), 77);
        assert_eq!(generation, 77);
        g.note(78);
        assert_eq!(*g.highest.lock(), 78);
    }
}
