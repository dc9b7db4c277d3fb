//! This member's generations across restarts.
//!
//! A process's membership identity carries a generation: the wall clock's Unix ms when it
//! started, one more at each rejoin under a renewed identity. At one gossip address the
//! higher generation wins (`NodeIdentity::win_addr_conflict`), and every member keeps the
//! identity it last saw of an address for foca's `remove_down_after` (24 h). A process
//! restarted on a wall clock stepped back past its previous life's start (a host booted
//! with its clock behind until NTP steps it, a VM restored from a snapshot) would start
//! below that life: every member would take its announcements for an older identity's and
//! ignore them, and it could not join for a day. So with L3 on, this member reserves its
//! generations ahead in a file beside L3's files ([`FILE`]): a process writes the end of
//! its reservation ([`GENERATION_RESERVE`] above its generation) before it joins, and
//! again whenever a rejoin brings it within half of that; a restart starts above the
//! reservation. Written ahead, so that a process killed between a rejoin and its write
//! still left its renewed generation below what the file holds (a restart that took a
//! renewal's generation would be taken for the old process's life, and two processes'
//! generations side by side for one process: `strata_cluster::warm::count_ended`).
//! Without L3 (no directory of its own) the wall clock alone decides.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use strata_cluster::identity::{GENERATION_RESERVE, next_generation, parse_generation};

/// The file, in `l3.data_dir`, holding the end of the generations reserved on this
/// directory.
pub(crate) const FILE: &str = "cluster-generation";

/// Most bytes read of it: more than a generation takes, so that a longer file is seen as
/// foreign rather than cut to a number.
const MAX_FILE_BYTES: u64 = 64;

/// The generations this member has reserved, kept on disk where it has a directory.
#[derive(Debug)]
pub(crate) struct Generations {
    path: Option<PathBuf>,
    /// The end of the reservation on disk (0: none written).
    reserved: Mutex<u64>,
    /// What the file held at the start: no reservation written is lower (a start whose
    /// write failed takes the clock's generation, below it; its first rejoin must not move
    /// the file down to that, attack review helper-117).
    floor: u64,
}

impl Generations {
    /// This process's first generation at `now_ms`: above the reservation an earlier
    /// process on `dir` made, with its own reservation written there. A directory that
    /// cannot be read is logged and leaves the clock to decide. One that cannot be written
    /// (a full or read-only disk) does too: a generation above an earlier reservation that
    /// cannot be moved on would be taken again by the next restart, and two processes
    /// under one identity lose each other's invalidations; below it, the member may not be
    /// let in until the clock passes it (logged). The node starts either way, as it does
    /// with L3 failing.
    pub(crate) fn start(dir: Option<&Path>, now_ms: u64) -> (Self, u64) {
        let path = dir.map(|d| d.join(FILE));
        if let Some(p) = &path {
            remove_stale_temporaries(p);
        }
        let last = path.as_deref().and_then(read);
        let mut generation = next_generation(now_ms, last);
        let me = Generations {
            path,
            reserved: Mutex::new(0),
            floor: last.unwrap_or(0),
        };
        me.note(generation);
        let written = *me.reserved.lock() > 0;
        if let Some(last) = last.filter(|&l| l >= now_ms) {
            if written {
                tracing::warn!(
                    reserved = last,
                    now_ms,
                    generation,
                    "the wall clock is behind this member's previous life: its generation starts above that life's reservation, not at the clock"
                );
            } else {
                generation = now_ms.max(1);
                tracing::error!(
                    reserved = last,
                    now_ms,
                    generation,
                    "the wall clock is behind this member's previous life and its generation file cannot be written: its generation comes from the clock, and the other members may not let it in until the clock passes the previous life's (restart it once the clock is right, or with the file writable)"
                );
            }
        }
        (me, generation)
    }

    /// This member now uses `generation` (its start, or a rejoin's renewed identity): the
    /// reservation on disk is moved on when `generation` has come within half of it. The
    /// file never goes down: not below what it held at the start, nor below what it holds
    /// now (a second process given the same directory by mistake, or an embedded node's
    /// next life, may have moved it on since). Blocking file I/O: call it off the
    /// runtime's threads.
    pub(crate) fn note(&self, generation: u64) {
        let mut reserved = self.reserved.lock();
        if generation.saturating_add(GENERATION_RESERVE / 2) <= *reserved {
            return;
        }
        let Some(path) = &self.path else {
            return;
        };
        let until = generation.saturating_add(GENERATION_RESERVE);
        if read(path).is_some_and(|on_disk| on_disk >= until) || self.floor >= until {
            // Reserved beyond it already.
            *reserved = until;
            return;
        }
        match write(path, until) {
            Ok(()) => *reserved = until,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot reserve this member's generations: a restart on a wall clock stepped back past them may start below them");
            }
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

/// Removes temporary files a process killed mid-write left beside `path`
/// (`cluster-generation.<pid>.<n>.tmp`).
fn remove_stale_temporaries(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{name}.");
    for e in entries.flatten() {
        let file = e.file_name();
        if let Some(f) = file.to_str()
            && f.starts_with(&prefix)
            && f.ends_with(".tmp")
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `generation` to `path` whole or not at all: a temporary file, synced, renamed
/// over it.
fn write(path: &Path, generation: u64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Named for this process and write: two processes given one directory by mistake, or
    // two nodes of one process, do not write through one temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("{}.{n}.tmp", std::process::id()));
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
        const R: u64 = GENERATION_RESERVE;
        let dir = tempfile::tempdir().unwrap();
        let (first, g1) = Generations::start(Some(dir.path()), 10_000_000);
        assert_eq!(g1, 10_000_000);
        // Rejoins renew the identity one by one; the reservation moves on before they
        // reach it.
        for g in g1 + 1..g1 + R {
            first.note(g);
            let reserved = *first.reserved.lock();
            assert!(
                reserved >= g + R / 2,
                "{reserved} reserved at generation {g}"
            );
        }
        let reserved = *first.reserved.lock();
        drop(first);
        // The clock stepped back an hour: above the reservation, not next to any
        // generation the earlier process used.
        let (_, g2) = Generations::start(Some(dir.path()), 10_000_000 - 3_600_000);
        assert_eq!(g2, reserved + 1);
        // Restarted again at once, still behind: above the second one's reservation.
        let (_, g3) = Generations::start(Some(dir.path()), 10_000_000 - 3_500_000);
        assert_eq!(g3, g2 + R + 1);
        // A later clock wins as before.
        let (_, g4) = Generations::start(Some(dir.path()), 20_000_000);
        assert_eq!(g4, 20_000_000);
        // A torn or foreign file is ignored: the clock decides.
        std::fs::write(dir.path().join(FILE), b"garbage").unwrap();
        let (_, g5) = Generations::start(Some(dir.path()), 15_000_000);
        assert_eq!(g5, 15_000_000);
        // Without a directory: the clock alone.
        let (_, g6) = Generations::start(None, 3);
        assert_eq!(g6, 3);
    }

    #[test]
    fn a_reservation_that_cannot_be_moved_on_is_not_started_above_again() {
        const R: u64 = GENERATION_RESERVE;
        let dir = tempfile::tempdir().unwrap();
        let (_, g1) = Generations::start(Some(dir.path()), 10_000_000);
        // The file cannot be replaced now (its name is a directory's, which a rename cannot
        // overwrite): a restart behind the clock must not take the same generation as the
        // last one that could not write either.
        let file = dir.path().join(FILE);
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        let (_, g2) = Generations::start(Some(dir.path()), 9_000_000);
        let (_, g3) = Generations::start(Some(dir.path()), 9_000_001);
        assert_eq!(
            (g2, g3),
            (9_000_000, 9_000_001),
            "from the clock (after {g1})"
        );
        std::fs::remove_dir(&file).unwrap();
        std::fs::write(&file, format!("{}\n", g1 + R)).unwrap();

        // A start whose write fails takes the clock's generation, below the file; once the
        // disk takes writes again, its rejoins do not move the file down to theirs.
        let blocker = dir.path().join("blocker");
        let (behind, g4) = {
            // Fails to write: the file's name taken by a directory for the start alone.
            let kept = std::fs::read(&file).unwrap();
            std::fs::remove_file(&file).unwrap();
            std::fs::create_dir(&file).unwrap();
            std::fs::write(&blocker, &kept).unwrap();
            let started = Generations::start(Some(dir.path()), 9_500_000);
            std::fs::remove_dir(&file).unwrap();
            std::fs::rename(&blocker, &file).unwrap();
            started
        };
        assert_eq!(g4, 9_500_000);
        // (Its floor is what it read: nothing, the name was a directory. The file's own
        // value keeps it from going down.)
        behind.note(g4 + 1);
        let on_disk = read(&file).unwrap();
        assert!(
            on_disk >= g1 + R,
            "{on_disk} after a rejoin, below {}",
            g1 + R
        );
        let (_, g5) = Generations::start(Some(dir.path()), 9_500_002);
        assert!(g5 > g1 + R, "{g5}");
        // A second writer's late note never moves the file down either.
        let (newer, g6) = Generations::start(Some(dir.path()), 30_000_000);
        assert_eq!(g6, 30_000_000);
        behind.note(g4 + 600);
        assert_eq!(read(&file), Some(30_000_000 + R));
        drop(newer);
    }

    #[test]
    fn temporaries_left_by_a_killed_write_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!("{FILE}.4242.7.tmp"));
        std::fs::write(&stale, b"12").unwrap();
        let other = dir.path().join("000012.log");
        std::fs::write(&other, b"rocksdb's").unwrap();
        let (_, g) = Generations::start(Some(dir.path()), 5_000);
        assert_eq!(g, 5_000);
        assert!(!stale.exists());
        assert!(other.exists(), "only its own temporaries");
        assert_eq!(
            read(&dir.path().join(FILE)),
            Some(5_000 + GENERATION_RESERVE)
        );
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
        assert_eq!(*g.reserved.lock(), 0);
    }
}
