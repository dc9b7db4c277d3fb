//! The `strata` binary, built as part of the black-box test package so that `cargo test`
//! always runs the tests against a fresh build of it.

fn main() -> std::process::ExitCode {
    strata_server::entry::main()
}
