//! L3's reader threads: a few threads of its own that run the point reads memory cannot
//! answer (decision 95).
//!
//! They replaced tokio's blocking pool for those calls. The pool hands each call to a thread
//! that is parked or new: under 50 clients missing L1 it grew a thread per concurrent read,
//! and every read paid a futex wake-up and a context switch there and back (an L3 hit cost
//! ~25 µs of CPU against a 5 µs read). Here a fixed set of threads share one queue: while
//! reads keep coming a thread takes the next without sleeping, and a sender wakes a thread
//! only when one is asleep. Removals, scans, flushes and bulk changes keep the blocking
//! pool: a removal waits for its key's lock (held by the writer through a slow commit), and
//! a long job here would hold up the point reads queued behind it. While more than
//! [`MAX_QUEUED`] reads wait (the threads stuck on a failing disk), callers take the
//! blocking pool too ([`Readers::backlogged`]).
//!
//! A job's closure is dropped before its answer is sent, so what it captured (the tier, and
//! with it RocksDB's lock on the directory) is released by the time the caller sees the
//! answer — as with `spawn_blocking`.

use std::future::Future;

/// A job: runs on a reader thread and sends its own answer.
type Job = Box<dyn FnOnce() + Send>;

/// Reads waiting past which callers take the blocking pool instead.
pub(crate) const MAX_QUEUED: usize = 1024;

/// The reader threads' queue ([module docs](self)). Dropping it ends the threads once the
/// jobs queued before have run.
#[derive(Debug)]
pub(crate) struct Readers {
    tx: crossbeam_channel::Sender<Job>,
}

/// The readers stopped (a job panicked, or they were dropped) before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stopped;

impl Readers {
    /// Starts `threads` reader threads named `name` (at least one).
    pub(crate) fn start(threads: usize, name: &str) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for _ in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    // Ends when every sender is gone and the queue is empty. A job that
                    // panics drops its answer (its caller sees `Stopped`), not the thread.
                    while let Ok(job) = rx.recv() {
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Self { tx })
    }

    /// How many threads L3 runs for its reads: one per core, at least 4 (reads that wait on
    /// the disk must not hold up every other; an idle thread costs nothing), at most 8.
    /// On 2 cores, 1, 2, 4 and 8 threads gave the same throughput within noise
    /// (docs/benchmarks.md).
    pub(crate) fn default_threads() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(4)
            .clamp(4, 8)
    }

    /// Whether more than [`MAX_QUEUED`] jobs wait: the caller should run its own elsewhere.
    pub(crate) fn backlogged(&self) -> bool {
        self.tx.len() > MAX_QUEUED
    }

    /// Runs `f` on a reader thread; resolves to its result. `f` (and what it captured) is
    /// dropped before the result is sent.
    pub(crate) fn run<T, F>(&self, f: F) -> impl Future<Output = Result<T, Stopped>> + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let out = f();
            // `f` was consumed above: its captures are dropped by now.
            let _ = reply.send(out);
        });
        let queued = self.tx.send(job).is_ok();
        async move {
            if !queued {
                return Err(Stopped);
            }
            answer.await.map_err(|_| Stopped)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn runs_jobs_off_the_caller_and_answers_each() {
        let readers = Readers::start(2, "test-reader").unwrap();
        let caller = std::thread::current().id();
        let mut answers = Vec::new();
        for i in 0..100u64 {
            answers.push(readers.run(move || (i * 2, std::thread::current().id())));
        }
        for (i, a) in answers.into_iter().enumerate() {
            let (v, thread) = a.await.unwrap();
            assert_eq!(v, i as u64 * 2);
            assert_ne!(thread, caller, "the job ran on the calling thread");
        }
    }

    #[tokio::test]
    async fn a_job_releases_what_it_captured_before_its_answer() {
        let readers = Readers::start(1, "test-reader").unwrap();
        let held = Arc::new(());
        let mine = held.clone();
        let counted = readers.run(move || Arc::strong_count(&mine)).await.unwrap();
        assert_eq!(counted, 2, "the job saw both handles");
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "the job's handle was still alive when its answer arrived"
        );
    }

    #[tokio::test]
    async fn a_panicking_job_fails_its_caller_and_the_threads_live_on() {
        let readers = Readers::start(2, "test-reader").unwrap();
        // More panics than threads: a thread that died with its job would leave none.
        for _ in 0..5 {
            let failed = readers.run(|| -> u32 { panic!("a job that panics") }).await;
            assert_eq!(failed, Err(Stopped));
        }
        assert_eq!(readers.run(|| 7).await, Ok(7));
    }

    #[tokio::test]
    async fn a_stuck_reader_makes_the_queue_say_backlogged() {
        let readers = Readers::start(1, "test-reader").unwrap();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let stuck = readers.run(move || {
            let _ = release_rx.recv();
        });
        let mut queued = Vec::new();
        while !readers.backlogged() {
            queued.push(readers.run(|| ()));
            assert!(queued.len() <= MAX_QUEUED + 2, "never backlogged");
        }
        assert!(
            queued.len() >= MAX_QUEUED,
            "backlogged early: {}",
            queued.len()
        );
        release_tx.send(()).unwrap();
        stuck.await.unwrap();
        for q in queued {
            q.await.unwrap();
        }
        assert!(!readers.backlogged());
    }

    #[test]
    fn dropping_the_readers_still_runs_the_jobs_queued_before() {
        let ran = Arc::new(AtomicUsize::new(0));
        let readers = Readers::start(2, "test-reader").unwrap();
        let mut pending = Vec::new();
        for _ in 0..50 {
            let ran = ran.clone();
            pending.push(readers.run(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            }));
        }
        drop(readers);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for p in pending {
            assert_eq!(rt.block_on(p), Ok(()));
        }
        assert_eq!(ran.load(Ordering::SeqCst), 50);
    }
}
