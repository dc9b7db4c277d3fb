//! A service that embeds a cluster member ([`strata::Node`]) and reads through its
//! [`strata::Cache`] directly, as an embedded user does: for black-box tests of an
//! embedded node's reads in a process the test can pause (SIGSTOP), unlike itself.
//!
//! `strata-embedded-node CONFIG` starts a node from the TOML file `CONFIG` (the same file
//! `strata serve --config` reads; `STRATA__…` variables apply), prints `ready`, then answers
//! each line of stdin:
//! - `get NAMESPACE KEY`: one line, `value VALUE`, `nil` or `error TEXT`;
//! - `watch NAMESPACE PREFIX N MILLIS`: reads keys `PREFIX0`…`PREFIX{N-1}` over and over for
//!   `MILLIS` ms of wall time, as a busy service does (a pause stops it mid-loop, and it
//!   reads on the moment the process resumes); one line, `pass START_MS ANSWERS` (the
//!   pass's start in Unix ms; one character per key: the value's first byte, `.` for nil,
//!   `!` for an error), for each pass whose answers differ from the last pass's or that
//!   starts over 100 ms after it did (the first after a pause), and `done` at the end.
//!
//! It shuts the node down when stdin closes. Logs go to stderr.

use std::io::Write;
use std::process::ExitCode;

use tokio::io::AsyncBufReadExt;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: strata-embedded-node CONFIG");
        return ExitCode::from(2);
    };
    let config = match strata::NodeConfig::load_with_env(
        Some(std::path::Path::new(&path)),
        std::env::vars(),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("config: {e}");
            return ExitCode::from(2);
        }
    };
    let node = match strata::Node::start(config).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cache = node.cache();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut words = line.splitn(3, ' ');
        let answer = match (words.next(), words.next(), words.next()) {
            (Some("get"), Some(ns), Some(key)) => match cache.get(ns, key.as_bytes()).await {
                Ok(Some(v)) => format!("value {}", String::from_utf8_lossy(&v)),
                Ok(None) => "nil".to_owned(),
                Err(e) => format!("error {e}"),
            },
            (Some("watch"), Some(ns), Some(rest)) => {
                let args: Vec<&str> = rest.split(' ').collect();
                match args.as_slice() {
                    [prefix, n, millis] => match (n.parse::<usize>(), millis.parse::<u64>()) {
                        (Ok(n), Ok(millis)) => {
                            watch(&cache, ns, prefix, n, millis, &mut out).await;
                            "done".to_owned()
                        }
                        _ => format!("error bad watch request {line:?}"),
                    },
                    _ => format!("error bad watch request {line:?}"),
                }
            }
            _ => format!("error unknown request {line:?}"),
        };
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
    drop(out);
    node.shutdown().await;
    ExitCode::SUCCESS
}

/// The `watch` request (see the module docs).
async fn watch(
    cache: &strata::Cache,
    namespace: &str,
    prefix: &str,
    n: usize,
    millis: u64,
    out: &mut impl Write,
) {
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    };
    let keys: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("{prefix}{i}").into_bytes())
        .collect();
    let until = std::time::SystemTime::now() + std::time::Duration::from_millis(millis);
    let mut answers = String::with_capacity(n);
    let mut last = (0, String::new());
    while std::time::SystemTime::now() < until {
        let start = unix_ms();
        answers.clear();
        for k in &keys {
            answers.push(match cache.get(namespace, k).await {
                Ok(Some(v)) => v.first().map_or('?', |b| char::from(*b)),
                Ok(None) => '.',
                Err(_) => '!',
            });
        }
        if answers != last.1 || start > last.0 + 100 {
            let _ = writeln!(out, "pass {start} {answers}");
            let _ = out.flush();
        }
        last = (start, answers.clone());
        // A busy service: the next pass is ready at once, not after a timer.
        tokio::task::yield_now().await;
    }
}
