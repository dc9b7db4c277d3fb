//! `strata`: run a Strata node behind the Redis protocol, or talk to a running one
//! ([`strata_server::entry`]).

fn main() -> std::process::ExitCode {
    strata_server::entry::main()
}
