//! The `strata` command line: run a Strata node behind the Redis protocol, or talk to a
//! running one. `src/main.rs` is [`main`]; the black-box tests' own copy of the binary
//! (`tests/`) calls it too.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use strata::NodeConfig;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a multi-layer cache that speaks the Redis protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: RESP on --resp-listen, admin HTTP on --admin-listen, L1 + L3 by default.
    Serve {
        /// A TOML config file (profile, layers, namespaces, the `[server]` table); flags
        /// override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address of the Redis-protocol listener (server.resp_listen).
        #[arg(long)]
        resp_listen: Option<String>,
        /// Address of the admin HTTP listener (server.admin_listen).
        #[arg(long)]
        admin_listen: Option<String>,
        /// L3's RocksDB directory (l3.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Log format; the level comes from RUST_LOG (default info).
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Show a running node's identity, uptime, connections, health and (in a cluster) its
    /// members, ring version and per-peer RPC latency.
    Status {
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Show a running node's view of its cluster: members and their state, the ring
    /// version, per-peer RPC latency, coherence counters.
    Cluster {
        #[command(flatten)]
        target: AdminArgs,
    },
    /// A live view of a node (or, with --cluster, of every member it sees): commands/s, hit
    /// ratio, clients, L1 memory against capacity, RSS, L3 bytes, evictions/s, members; one
    /// line per node per interval, read from /metrics.
    Top {
        #[command(flatten)]
        target: AdminArgs,
        /// Every member of the node's cluster, not only the node.
        #[arg(long)]
        cluster: bool,
        /// Milliseconds between lines.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Stop after this many intervals (0: until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Show a running node's hit/miss statistics per layer.
    Stats {
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Remove a key, the keys matching a glob, or the keys carrying a tag, on every layer.
    Invalidate {
        /// The namespace (database N is namespace dbN).
        namespace: String,
        /// The key.
        key: Option<String>,
        /// A Redis glob instead of a key.
        #[arg(long, conflicts_with_all = ["key", "tag"])]
        pattern: Option<String>,
        /// A tag instead of a key.
        #[arg(long, conflicts_with_all = ["key", "pattern"])]
        tag: Option<String>,
        #[command(flatten)]
        target: AdminArgs,
    },
    /// Copy the string keys of a live Redis (SCAN with MATCH, keeping TTLs), or the keys of
    /// a file of JSON lines (--file), into a running node's namespace, at a bounded rate;
    /// with --cursor-file, an interrupted import resumes where it stopped.
    Import {
        /// The source, as a Redis URL (redis://[user:password@]host:port[/db]); from the
        /// environment, a password stays out of `ps` and shell history.
        #[arg(
            long,
            env = "STRATA_IMPORT_FROM",
            hide_env_values = true,
            required_unless_present = "file",
            conflicts_with = "file"
        )]
        from: Option<String>,
        /// A file of JSON lines instead, one key each: {"key": …, "value": …, "ttl_ms": …}
        /// (key_base64 / value_base64 for bytes; docs/operations.md).
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        target: ImportTarget,
        /// Only keys matching this Redis glob.
        #[arg(long = "match", default_value = "*")]
        pattern: String,
        /// Keys asked per SCAN call (at most 10000, and at most --rate).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Keys copied per second at most (0: no limit).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// The resume state: read at start (an unfinished import goes on from its cursor),
        /// rewritten after every batch.
        #[arg(long)]
        cursor_file: Option<PathBuf>,
        /// Leave keys the node already holds as they are (SET NX).
        #[arg(long)]
        keep_existing: bool,
        /// No progress line on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Warm a namespace of a running node from a file of JSON lines (as `import --file`),
    /// leaving the keys it already holds as they are: the seeds' "pre-populate the cache
    /// with the most-accessed entries" at start.
    Warm {
        /// The file of JSON lines.
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        target: ImportTarget,
        /// Keys written per second at most (0: no limit).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// No progress line on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// Where `import` and `warm` write.
#[derive(Args)]
struct ImportTarget {
    /// The Strata node's RESP address, as a Redis URL.
    #[arg(
        long,
        env = "STRATA_IMPORT_TO",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6380"
    )]
    to: String,
    /// The namespace to write into (database N is dbN).
    #[arg(long, default_value = "db0")]
    namespace: String,
}

/// How the CLI reaches a node's admin port.
#[derive(Args)]
struct AdminArgs {
    /// The node's admin address.
    #[arg(long, default_value = "127.0.0.1:9380")]
    admin: String,
    /// The admin credential (server.admin_token or the requirepass), sent as a bearer token.
    #[arg(long, env = "STRATA_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Speak HTTPS to the admin port, trusting this CA (PEM).
    #[arg(long, env = "STRATA_ADMIN_CACERT")]
    cacert: Option<PathBuf>,
}

impl From<AdminArgs> for crate::cli::Admin {
    fn from(a: AdminArgs) -> Self {
        crate::cli::Admin {
            addr: a.admin,
            token: a.token,
            cacert: a.cacert,
        }
    }
}

/// Prints `path` of the admin port; fails the process when the node answered an error.
fn show(target: AdminArgs, path: &str) -> anyhow::Result<ExitCode> {
    let ok = runtime(1)?.block_on(crate::cli::show(&target.into(), path))?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Load and validate a config file (with the STRATA__ environment applied) and print the
    /// result; exits non-zero with the offending field named when it is invalid.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

/// The server's defaults on top of a profile: L3 on, in ./strata-data, and namespaces as
/// Redis's databases are: no default TTL and no maximum unless the config sets them (a key
/// written without a TTL lives until it is evicted or deleted, and `TTL` says -1). The
/// embedded crate keeps the profile's own defaults (1 hour, 24 hours at most).
fn server_defaults(c: &mut NodeConfig) {
    c.l3.enabled = true;
    c.namespace_defaults.default_ttl_secs = None;
    c.namespace_defaults.max_ttl_secs = None;
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn runtime(threads: u32) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    if threads > 0 {
        b.worker_threads(threads as usize);
    }
    b.build()
}

/// Parses the process's arguments and runs the command: the whole `strata` binary.
pub fn main() -> ExitCode {
    keep_large_buffers_out_of_the_heap();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Blocks of 1 MiB and more (a client's 8 MiB argument, a 30 MiB reply) are mapped on their
/// own and given back to the system when freed.
///
/// glibc's malloc starts that way but raises its threshold to the size of every mapped
/// block it frees, up to 32 MiB; after a few large requests each later one came from a
/// thread's arena and stayed in the process when freed: 50–64 MiB kept by 20 idle clients
/// (`tests/tests/bounds.rs`, `nothing_a_client_sent_or_got_is_kept_past_its_command`), for
/// good. Setting the threshold fixes it, as jemalloc's decay does for redis-server. Called
/// before any thread starts; elsewhere than glibc it does nothing. Since the binary's Rust
/// allocations go to mimalloc (decision 84), this governs the C and C++ ones: RocksDB's,
/// LuaJIT's.
#[allow(unsafe_code)]
fn keep_large_buffers_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tuning parameter of glibc's allocator; it is called from
    // `main` before any other thread exists, and a failure (return 0) leaves the default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            resp_listen,
            admin_listen,
            data_dir,
            log_format,
        } => {
            init_logs(log_format);
            let mut cfg =
                NodeConfig::load_layered(config.as_deref(), std::env::vars(), server_defaults)?;
            if let Some(a) = resp_listen {
                cfg.server.resp_listen = a;
            }
            if let Some(a) = admin_listen {
                cfg.server.admin_listen = a;
            }
            if let Some(d) = data_dir {
                cfg.l3.data_dir = d;
            }
            cfg.validate()?;
            let rt = runtime(cfg.server.worker_threads)?;
            rt.block_on(crate::serve(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import {
            from,
            file,
            target: ImportTarget { to, namespace },
            pattern,
            batch,
            rate,
            cursor_file,
            keep_existing,
            quiet,
        } => {
            let opts = crate::import::ImportOptions {
                from: from.unwrap_or_default(),
                to,
                namespace,
                pattern,
                batch,
                rate,
                cursor_file,
                keep_existing,
                progress: !quiet,
            };
            let s = match &file {
                Some(f) => crate::import_file::import_file(f, &opts)?,
                None => crate::import::import(&opts)?,
            };
            if file.is_some() {
                println!(
                    "imported {} keys into {:?} ({} with a TTL); read {} lines, already there and kept {}, refused by the node {}",
                    s.copied, opts.namespace, s.with_ttl, s.scanned, s.kept, s.refused
                );
            } else {
                println!(
                    "imported {} keys into {:?} ({} with a TTL); scanned {}, gone before they were read {}, already there and kept {}, refused by the node {}",
                    s.copied, opts.namespace, s.with_ttl, s.scanned, s.gone, s.kept, s.refused
                );
            }
            if s.refused > 0 {
                eprintln!(
                    "{} keys were refused by the node (named above): they are not in {:?}",
                    s.refused, opts.namespace
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Warm {
            file,
            target: ImportTarget { to, namespace },
            rate,
            quiet,
        } => {
            let opts = crate::import::ImportOptions {
                from: String::new(),
                to,
                namespace,
                pattern: "*".into(),
                batch: 1000,
                rate,
                cursor_file: None,
                keep_existing: true,
                progress: !quiet,
            };
            let s = crate::import_file::import_file(&file, &opts)?;
            println!(
                "warmed {:?} with {} keys ({} with a TTL); {} already there and kept, {} refused by the node",
                opts.namespace, s.copied, s.with_ttl, s.kept, s.refused
            );
            Ok(if s.refused > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Status { target } => show(target, "/status"),
        Command::Cluster { target } => show(target, "/cluster"),
        Command::Stats { target } => show(target, "/stats"),
        Command::Top {
            target,
            cluster,
            interval_ms,
            count,
        } => {
            let admin = target.into();
            runtime(1)?.block_on(crate::top::top(
                &admin,
                cluster,
                std::time::Duration::from_millis(interval_ms.max(100)),
                count,
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Invalidate {
            namespace,
            key,
            pattern,
            tag,
            target,
        } => {
            let admin = target.into();
            let n = runtime(1)?.block_on(crate::cli::invalidate(
                &admin,
                &namespace,
                key.as_deref(),
                pattern.as_deref(),
                tag.as_deref(),
            ))?;
            println!("removed {n}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            action: ConfigAction::Check { file },
        } => {
            let cfg = NodeConfig::load_layered(Some(&file), std::env::vars(), server_defaults)?;
            cfg.check_protected_mode()?;
            println!("{}: valid", file.display());
            println!(
                "resp_listen = {}, admin_listen = {}, l1 = {} bytes, l3 = {} ({})",
                cfg.server.resp_listen,
                cfg.server.admin_listen,
                if cfg.l1.enabled {
                    cfg.l1.capacity_bytes
                } else {
                    0
                },
                if cfg.l3.enabled { "on" } else { "off" },
                cfg.l3.data_dir.display()
            );
            let srv = &cfg.server;
            println!(
                "security: resp auth {}, {} ACL user(s), admin credential {}, protected mode {}, tls resp {}, tls admin {}",
                if cfg.resp_auth_configured() {
                    "on"
                } else {
                    "off"
                },
                srv.users.len(),
                if !cfg.admin_auth_configured() {
                    "off"
                } else if cfg.admin_credential_exists() {
                    "on"
                } else {
                    "on (none configured: admin actions refused; set server.admin_token or an admin user)"
                },
                if srv.protected_mode { "on" } else { "OFF" },
                if srv.tls.as_ref().is_some_and(|t| t.resp) {
                    "on"
                } else {
                    "off"
                },
                if srv.tls.as_ref().is_some_and(|t| t.admin) {
                    "on"
                } else {
                    "off"
                },
            );
            let c = &cfg.cluster;
            if c.enabled {
                println!(
                    "cluster = on: gossip {}, rpc {} ({}), {} seed(s), replication factor {}, {} strict invalidations",
                    c.gossip_listen,
                    c.rpc_listen,
                    if c.tls.is_some() {
                        "mutual TLS"
                    } else {
                        "plaintext"
                    },
                    c.seeds.len(),
                    c.replication_factor,
                    if c.strict_invalidations {
                        "with"
                    } else {
                        "without"
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
