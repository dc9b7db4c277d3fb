//! `strata`: run a Strata node behind the Redis protocol, or talk to a running one
//! ([`strata_server::entry`]).

/// mimalloc, not glibc's allocator: a write's buffers are allocated on a tokio worker and
/// freed on L3's writer thread (and the other way round), and glibc's arena locks made
/// those frees wait on each other (`futex` under `malloc` in `perf`). Built without
/// transparent huge pages (`no_thp`): with them a 64 MiB L1 held 25 % more RSS than with
/// glibc's allocator. Measured in docs/benchmarks.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    strata_server::entry::main()
}
