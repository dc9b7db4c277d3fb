//! The server's memory allocator: mimalloc for everything below 1 MiB, the system's
//! allocator (glibc, which maps blocks of 1 MiB and more on their own and unmaps them when
//! freed: [`crate::entry`] sets its threshold) for the rest.
//!
//! mimalloc, not glibc's allocator, for the small blocks: a write's buffers are allocated on
//! a tokio worker and freed on L3's writer thread (and the other way round), and glibc's
//! arena locks made those frees wait on each other (`futex` under `malloc` in `perf`).
//! Built without transparent huge pages (`no_thp`): with them a 64 MiB L1 held 25 % more RSS
//! than with glibc's allocator. Measured in docs/benchmarks.md (decision 84).
//!
//! mimalloc keeps what a thread frees for reuse and gives it back to the system only when
//! that thread calls into it again after a delay. A node that went idle after serving large
//! values then kept them: 30 clients that asked for 32 MiB replies and were closed by the
//! clients' budget (128 MiB) left the process 252–281 MiB larger, for good (`tests/tests/bounds.rs`,
//! `replies_nobody_reads_stay_within_the_clients_budget`, which passed only because the
//! test binary did not use the shipped allocator). Blocks of 1 MiB and more — large values,
//! arguments and replies — are rare on the hot path and cost a `mmap` each either way.
//!
//! Declared here, in the library, so that every binary of this crate — `strata` and the
//! test package's `strata-test-node` — runs with the allocator users run.

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Blocks of at least this many bytes go to the system's allocator.
pub const LARGE_BLOCK: usize = 1 << 20;

/// mimalloc below [`LARGE_BLOCK`], the system's allocator from it on.
#[derive(Debug)]
pub struct ServerAlloc;

fn large(size: usize) -> bool {
    size >= LARGE_BLOCK
}

// SAFETY: every block is freed (and resized in place) by the allocator that made it, which
// the size in its layout tells: `GlobalAlloc` is given the layout a block was allocated (or
// last reallocated) with. A resize across the threshold moves the block between them.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for ServerAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract (a non-zero size) is passed on.
        unsafe {
            if large(layout.size()) {
                System.alloc(layout)
            } else {
                MiMalloc.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if large(layout.size()) {
                System.alloc_zeroed(layout)
            } else {
                MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated with `layout` by this allocator, so by the one its size
        // picks.
        unsafe {
            if large(layout.size()) {
                System.dealloc(ptr, layout)
            } else {
                MiMalloc.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc` for `ptr`; `new_size` is non-zero and, rounded up to the
        // alignment, does not overflow `isize` (the caller's contract), so the new layout
        // is valid.
        unsafe {
            match (large(layout.size()), large(new_size)) {
                (true, true) => System.realloc(ptr, layout, new_size),
                (false, false) => MiMalloc.realloc(ptr, layout, new_size),
                _ => {
                    let new = Layout::from_size_align_unchecked(new_size, layout.align());
                    let moved = self.alloc(new);
                    if !moved.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[global_allocator]
static GLOBAL: ServerAlloc = ServerAlloc;

#[cfg(test)]
mod tests {
    #[test]
    fn blocks_move_between_the_allocators_with_their_contents() {
        // Grown across the threshold and shrunk back, a vector keeps its bytes.
        let mut v: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        v.reserve_exact(super::LARGE_BLOCK);
        assert!(v.capacity() >= super::LARGE_BLOCK);
        assert!(v.iter().enumerate().all(|(i, b)| *b == i as u8));
        v.extend(std::iter::repeat_n(7u8, super::LARGE_BLOCK));
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, (0..10u8).collect::<Vec<_>>());
        let z = vec![0u8; 2 * super::LARGE_BLOCK];
        assert!(z.iter().all(|b| *b == 0));
    }
}
