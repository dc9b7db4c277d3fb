//! `strata`: run a Strata node behind the Redis protocol, or talk to a running one
//! ([`strata_server::entry`]). Its allocator is the library's ([`strata_server::alloc`]):
//! mimalloc below 1 MiB, the system's above.

fn main() -> std::process::ExitCode {
    strata_server::entry::main()
}
