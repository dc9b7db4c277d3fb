//! `NodeConfig`: every setting of a node, with documented defaults, three profiles from the
//! seeds, loading from TOML plus `STRATA__SECTION__KEY` environment overrides, and validation
//! that names the offending field.
//!
//! Load order (later wins): the profile's defaults → the TOML file → the environment. The
//! profile itself is read from the file's `profile` key or `STRATA__PROFILE`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod security;

pub use security::{Permission, ServerTlsConfig, TlsConfig, UserConfig, Users, is_loopback};

use serde::{Deserialize, Serialize};
use strata_core::{Compression, Limits, MemoryTierConfig, Namespace, NamespacePolicy};

/// Largest `limits.max_value_bytes` accepted: Redis's `proto-max-bulk-len` default.
pub const MAX_VALUE_BYTES_CEILING: u64 = 512 * 1024 * 1024;
/// Largest `limits.max_key_bytes` accepted.
pub const MAX_KEY_BYTES_CEILING: u64 = 1024 * 1024;
/// Prefix of environment overrides; sections and keys are separated by `__`.
pub const ENV_PREFIX: &str = "STRATA";

/// A named set of defaults, from the seeds' `create_default`, `create_high_performance` and
/// the memory-constrained variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// L1 100 MiB (the seeds' L1 size), values up to 16 MiB, sweep every second.
    #[default]
    Default,
    /// L1 1 GiB, values up to 64 MiB, sweep every 5 s (fewer passes over a large L1).
    HighPerformance,
    /// L1 16 MiB, values up to 1 MiB, keys up to 1 KiB, sweep every 250 ms (memory is
    /// reclaimed sooner).
    MemoryConstrained,
}

impl Profile {
    /// The profile's name as written in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::HighPerformance => "high_performance",
            Profile::MemoryConstrained => "memory_constrained",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Profile::Default,
            Profile::HighPerformance,
            Profile::MemoryConstrained,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// Every setting of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Which profile's defaults the rest overrides.
    #[serde(default)]
    pub profile: Profile,
    /// Identity.
    pub node: NodeSection,
    /// The memory layer.
    pub l1: L1Config,
    /// The shared layer: an existing Redis through the bridge (`[l2.redis]`).
    #[serde(default)]
    pub l2: L2Config,
    /// The disk layer.
    pub l3: L3Config,
    /// Size limits on keys, values and tags.
    pub limits: LimitsConfig,
    /// The policy of namespaces not listed under `namespaces`.
    pub namespace_defaults: NamespaceConfig,
    /// Per-namespace policies; fields left out inherit `namespace_defaults`.
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// Restart policy of the layer actors.
    pub supervisor: SupervisorConfig,
    /// Stats snapshots.
    pub metrics: MetricsConfig,
    /// The `strata serve` binary: its listeners and connection limits (unused by an
    /// embedded node).
    #[serde(default)]
    pub server: ServerConfig,
    /// Membership in a Strata cluster (`[cluster]`): with it on, L2 is the key's owner
    /// nodes.
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// `[cluster]`: this node as a member of a Strata cluster. L2 is then the owner nodes of
/// each key on a consistent-hash ring, reached over the peer RPC; invalidations are
/// disseminated by gossip (see docs/semantics.md for the guarantees, docs/protocol.md for
/// the wire formats).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Whether this node joins a cluster (default false).
    pub enabled: bool,
    /// The shared secret that authenticates every gossip packet and RPC connection (an
    /// HMAC-SHA256 key, at least 16 bytes). Required when enabled; set it with
    /// `STRATA__CLUSTER__SECRET` rather than in a file others can read.
    pub secret: Option<String>,
    /// UDP address of the gossip (membership and invalidations) socket (default
    /// `127.0.0.1:7946`).
    pub gossip_listen: String,
    /// TCP address of the peer RPC listener (default `127.0.0.1:7947`).
    pub rpc_listen: String,
    /// The IP address the other members reach this node at, announced with the bound
    /// gossip and RPC ports (and with the RESP and admin ports when those listen on every
    /// interface). Required when `gossip_listen` or `rpc_listen` binds every interface
    /// (`0.0.0.0` or `::`); unset, the bound addresses are announced as they are.
    pub advertise: Option<String>,
    /// Gossip addresses of one or more members to join through (this node's own address
    /// may be listed: it is skipped). Empty: start a new cluster.
    pub seeds: Vec<String>,
    /// Owners per key (default 2): a key survives the loss of `replication_factor - 1`
    /// nodes; each extra owner costs one more RPC per write.
    pub replication_factor: u32,
    /// Virtual nodes per member on the ring (default 128: the most loaded of 10 nodes
    /// holds under 1.25× the mean).
    pub vnodes: u16,
    /// Memory for the keys this node owns, in bytes (default 256 MiB).
    pub owner_capacity_bytes: u64,
    /// How long an invalidation gap may stay open before this node drops every copy it
    /// does not own: the staleness bound of G2 (default 1000).
    pub max_staleness_ms: u64,
    /// How long a read that found a key absent on every owner is remembered on this node,
    /// so that reads of it answer "no such key" without asking the owners again (default
    /// 500; 0 turns it off). An invalidation of the key, or a write of it through this node,
    /// ends it at once; at most `max_staleness_ms`, so a key created meanwhile is seen within
    /// G2's bound.
    pub negative_ttl_ms: u64,
    /// Time allowed for one peer RPC (default 500).
    pub rpc_timeout_ms: u64,
    /// Time allowed to connect to a peer (default 500).
    pub connect_timeout_ms: u64,
    /// How long a write whose primary cannot be reached (its process is gone, or it is no
    /// longer the primary) waits for the ring to move to the next primary before the client
    /// gets `TRYAGAIN` (default 10000: failure detection on a LAN takes about five seconds).
    pub failover_wait_ms: u64,
    /// After the ring changes, a new owner that misses reads through to the key's previous
    /// owners for this long (default 30000).
    pub handoff_window_ms: u64,
    /// Bytes of writes with an expiry this node may run at once as their key's primary
    /// (default 64 MiB), those whose clients it stopped waiting for included: a client told
    /// "may or may not have happened" at a tenth of the expiry while the owners stalled
    /// (docs/semantics.md) can send the next one at once, and the first runs on until the
    /// owners answer. Past the bound such writes get `TRYAGAIN`, nothing applied.
    pub timed_writes_max_bytes: u64,
    /// After the ring changes, each node pushes up to this many of the entries it holds to
    /// their new owners, in batches (default 1000000: all of them in practice; until a key's
    /// new owner has its copy, a failure of its other owner loses it).
    pub handoff_push_limit: u32,
    /// Most copies a restarted member holds unproven while it settles (default 100000; at
    /// least 1): pushes past them are refused for now, and their senders, which
    /// still hold them, send them again once its proof made room.
    pub settling_push_limit: u32,
    /// How often the background sweep drops expired entries from the keys this node owns
    /// (default 1000; at least one 100 ms maintenance tick). Reads never serve an expired
    /// entry meanwhile: the sweep only returns the memory.
    pub owner_sweep_interval_ms: u64,
    /// The cluster's size (default 3): the failure detector is tuned for it, and a node
    /// executes writes as a key's primary only while its view holds a majority of it (no
    /// majority is required at 1 or 2).
    pub expected_size: u32,
    /// When true, a write or key invalidation returns only after every live member has
    /// applied its invalidation (one round trip to each); when false (the default) other
    /// members' copies are dropped by gossip, within the bound in docs/semantics.md.
    /// Pattern, tag and namespace invalidations are always strict.
    pub strict_invalidations: bool,
    /// Mutual TLS on the peer RPC port (`[cluster.tls]`): every member presents its
    /// certificate, and accepts only peers whose certificate chains to `ca_file` (required).
    /// The handshake's proof of the secret still runs inside it. Unset: plaintext RPC,
    /// authenticated at the handshake only (docs/protocol.md says what that leaves open).
    pub tls: Option<TlsConfig>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            secret: None,
            gossip_listen: "127.0.0.1:7946".into(),
            rpc_listen: "127.0.0.1:7947".into(),
            advertise: None,
            seeds: Vec::new(),
            replication_factor: 2,
            vnodes: 128,
            owner_capacity_bytes: 256 * MIB,
            max_staleness_ms: 1_000,
            negative_ttl_ms: 500,
            rpc_timeout_ms: 500,
            connect_timeout_ms: 500,
            failover_wait_ms: 10_000,
            handoff_window_ms: 30_000,
            timed_writes_max_bytes: 64 * MIB,
            handoff_push_limit: 1_000_000,
            settling_push_limit: 100_000,
            owner_sweep_interval_ms: 1_000,
            expected_size: 3,
            strict_invalidations: false,
            tls: None,
        }
    }
}

/// Settings of `strata serve`: the Redis-protocol listener, the admin HTTP port, connection
/// limits. An embedded node ignores them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the Redis-protocol (RESP2/RESP3) listener (default `127.0.0.1:6380`).
    pub resp_listen: String,
    /// Address of a second Redis-protocol listener that speaks as a Redis Cluster node
    /// (default unset; needs `cluster.enabled`): `CLUSTER SLOTS`/`SHARDS`/`NODES` there list
    /// every member's such listener, and a command on a key whose primary is another member
    /// is answered `-MOVED slot host:port`, so cluster-aware clients (redis-py's
    /// `RedisCluster`, `redis-cli -c`, `redis-benchmark --cluster`) send each key to its
    /// primary. `resp_listen` keeps serving every key for clients that are not
    /// cluster-aware. Announced with `cluster.advertise` when it listens on every interface.
    pub cluster_listen: Option<String>,
    /// Address of the admin HTTP listener: `/metrics`, `/health`, `/stats` (default
    /// `127.0.0.1:9380`).
    pub admin_listen: String,
    /// When set, clients must `AUTH` with this password before any other command (the
    /// `default` user's password). Compared in constant time; failures are delayed and
    /// counted (`strata_auth_failures_total`).
    pub requirepass: Option<String>,
    /// ACL users (`[server.users.NAME]`), each with hashed passwords, namespaces and a
    /// permission. When any is defined and `requirepass` is not, the password-less default
    /// user is disabled: every client must `AUTH name password`.
    pub users: BTreeMap<String, UserConfig>,
    /// Refuse to start when RESP or admin listens beyond loopback with no authentication
    /// configured, as Redis's `protected-mode` (default true).
    pub protected_mode: bool,
    /// Bearer token for the admin port (`Authorization: Bearer TOKEN`, at least 16 bytes).
    /// The admin port also accepts `requirepass` as a bearer token and an admin ACL user by
    /// HTTP Basic authentication. With any credential configured, every route needs one
    /// unless `admin_open_reads` opens `/metrics` and `/health`.
    pub admin_token: Option<String>,
    /// Leave `/metrics` and `/health` open without a credential, for scrapers and probes
    /// (default false: closed once any credential is configured).
    pub admin_open_reads: bool,
    /// Host names the admin port answers to besides IP addresses and `localhost` (a request
    /// with any other `Host` is refused: DNS rebinding). Default empty.
    pub admin_hosts: Vec<String>,
    /// TLS for the RESP and admin listeners (`[server.tls]`). Unset: plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// Most concurrent client connections; more are refused with
    /// `-ERR max number of clients reached` (default 10000).
    pub max_clients: u32,
    /// Close a client connection idle for this many seconds; 0 never does (default 0, as
    /// Redis's `timeout`).
    pub idle_timeout_secs: u64,
    /// Largest request (one command with all its arguments) and largest unparsed input a
    /// connection may buffer, in bytes (default `limits.max_value_bytes` + 16 MiB); must
    /// exceed `limits.max_value_bytes`.
    pub max_request_bytes: u64,
    /// How many numbered databases `SELECT` accepts; database `N` is namespace `dbN`
    /// (default 16).
    pub databases: u32,
    /// How many namespaces may exist before `SELECT name` refuses to open a new one
    /// (default 512, at most 1024 less the configured ones and the databases): clients cannot
    /// fill the node's namespace table.
    pub max_namespaces: u32,
    /// Largest reply one command may build, in bytes (default 256 MiB; must exceed
    /// `limits.max_value_bytes`): past it the client is disconnected, counted and logged, as
    /// Redis's `client-output-buffer-limit`. `MGET` of one big key many times is the case.
    pub client_output_buffer_limit_bytes: u64,
    /// Most bytes of pub/sub messages queued for one subscriber that does not read them
    /// (default 32 MiB, Redis's `client-output-buffer-limit pubsub` hard limit): past it the
    /// subscriber is disconnected, counted and logged.
    pub pubsub_output_buffer_limit_bytes: u64,
    /// Most keys the client-tracking table (`CLIENT TRACKING`) remembers (default 1,000,000,
    /// Redis's `tracking-table-max-keys`): past it the oldest keys are invalidated early for
    /// the clients that read them. Must be greater than 0 (Redis's 0, "no limit", is
    /// refused: the bound is what keeps a client that reads every key from growing the
    /// table without end).
    pub tracking_table_max_keys: u64,
    /// Most bytes the client-tracking table's records are charged — keys, bookkeeping and a
    /// client id per client that read them (default 256 MiB): the key bound alone would let
    /// long keys hold gigabytes. Past it the oldest keys go, as past the key bound.
    pub tracking_table_max_bytes: u64,
    /// Input all client connections together may buffer (default 512 MiB): a connection
    /// whose buffer grows while the total is past it is disconnected and counted, so many
    /// unfinished requests cannot exhaust memory. Each connection is also bounded by
    /// `max_request_bytes`.
    pub max_input_bytes_total: u64,
    /// Runtime worker threads; 0 uses one per core (default 0).
    pub worker_threads: u32,
    /// How long shutdown waits for connections to finish their in-flight requests
    /// (default 5000).
    pub shutdown_grace_ms: u64,
    /// Longest a Lua script runs before it is stopped with nothing it did applied
    /// (default 5000, as Redis's `lua-time-limit`).
    pub script_time_limit_ms: u64,
    /// `SLOWLOG` keeps commands that took at least this many microseconds to execute
    /// (default 10000, as Redis's `slowlog-log-slower-than`; 0 logs every command, -1
    /// none). `CONFIG SET slowlog-log-slower-than` changes it at run time.
    pub slowlog_log_slower_than_us: i64,
    /// How many entries `SLOWLOG` keeps, the oldest dropped first (default 128, as Redis's
    /// `slowlog-max-len`).
    pub slowlog_max_len: u32,
    /// `LATENCY` records commands that took at least this many milliseconds (default 0:
    /// off, as Redis's `latency-monitor-threshold`; `CONFIG SET` changes it).
    pub latency_monitor_threshold_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            resp_listen: "127.0.0.1:6380".into(),
            cluster_listen: None,
            admin_listen: "127.0.0.1:9380".into(),
            requirepass: None,
            users: BTreeMap::new(),
            protected_mode: true,
            admin_token: None,
            admin_open_reads: false,
            admin_hosts: Vec::new(),
            tls: None,
            max_clients: 10_000,
            idle_timeout_secs: 0,
            max_request_bytes: 64 * MIB,
            databases: 16,
            max_namespaces: 512,
            client_output_buffer_limit_bytes: 256 * MIB,
            pubsub_output_buffer_limit_bytes: 32 * MIB,
            tracking_table_max_keys: 1_000_000,
            tracking_table_max_bytes: 256 * MIB,
            max_input_bytes_total: 512 * MIB,
            worker_threads: 0,
            shutdown_grace_ms: 5_000,
            script_time_limit_ms: 5_000,
            slowlog_log_slower_than_us: 10_000,
            slowlog_max_len: 128,
            latency_monitor_threshold_ms: 0,
        }
    }
}

/// Identity of the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// A name for logs and metrics (default `strata`).
    pub name: String,
}

/// L1 settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L1Config {
    /// Whether the node has an L1 at all (default true).
    pub enabled: bool,
    /// Byte capacity, counting key + value + tags + a fixed per-entry overhead
    /// (`strata_core::memory::ENTRY_OVERHEAD_BYTES`).
    pub capacity_bytes: u64,
    /// Interval of the background sweep that drops expired and flushed entries.
    pub sweep_interval_ms: u64,
    /// Expected mean entry size, used only to pre-size tables.
    pub estimated_entry_bytes: u64,
}

/// L2 settings. With nothing configured (the default) a node has no L2: L1 → L3.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct L2Config {
    /// An existing Redis as L2 (needs the `redis` cargo feature).
    pub redis: RedisBridgeConfig,
}

/// `[l2.redis]`: an existing Redis (standalone, Sentinel or Cluster) as L2. The variables
/// `REDIS_URL`, `REDIS_HOST`, `REDIS_PORT`, `REDIS_DB` and `REDIS_PASSWORD` (as the seeds'
/// users set them) turn the bridge on and fill these fields; `STRATA__L2__REDIS__*`
/// variables override them. The node needs the `redis` cargo feature for this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisBridgeConfig {
    /// Whether the node uses Redis as L2 (default false).
    pub enabled: bool,
    /// `redis://[user:password@]host:port[/db]`; when set, it replaces host, port, db and
    /// the credentials. `rediss://` (TLS) is refused: this build has no TLS support.
    pub url: Option<String>,
    /// Standalone server host (default `127.0.0.1`).
    pub host: String,
    /// Standalone server port (default 6379).
    pub port: u16,
    /// Logical database (default 0; must be 0 for a Redis Cluster).
    pub db: i64,
    /// ACL user name (Redis 6+).
    pub username: Option<String>,
    /// Password (`requirepass` or the ACL user's). A wrong one stops the node at start.
    pub password: Option<String>,
    /// Sentinel: the monitored master's name; setting it selects Sentinel.
    pub sentinel_master: Option<String>,
    /// Sentinel: the sentinels' `host:port` addresses.
    pub sentinel_addresses: Vec<String>,
    /// Sentinel: the sentinels' own password.
    pub sentinel_password: Option<String>,
    /// Redis Cluster: seed nodes' `host:port`; a non-empty list selects Cluster.
    pub cluster_nodes: Vec<String>,
    /// Prefix of Strata's keys, `{prefix}:{namespace}:{key}`, and of the invalidation
    /// channel `{prefix}:invalidations` (default `strata`).
    pub key_prefix: String,
    /// Time allowed to connect (default 1000).
    pub connect_timeout_ms: u64,
    /// Time allowed for one command; a slower one counts as a timeout (default 250).
    pub op_timeout_ms: u64,
    /// Commands in flight at once (default 1024).
    pub max_in_flight: u64,
    /// Keys per `SCAN` call in pattern/tag invalidation and flushes (default 1000).
    pub scan_count: u32,
    /// Consecutive failures that open the circuit (default 5).
    pub breaker_failure_threshold: u32,
    /// Share of timeouts over the window that opens the circuit (default 0.5).
    pub breaker_timeout_rate: f64,
    /// Calls the timeout share is measured over (default 20).
    pub breaker_window: u32,
    /// Time the circuit stays open before the first probe (default 500).
    pub breaker_open_ms: u64,
    /// Ceiling of the open time, which doubles on each failed probe (default 5000).
    pub breaker_max_open_ms: u64,
    /// How often the bridge's actor pings Redis, replays queued work and probes an open
    /// circuit (default 100).
    pub maintenance_interval_ms: u64,
}

impl Default for RedisBridgeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: None,
            host: "127.0.0.1".into(),
            port: 6379,
            db: 0,
            username: None,
            password: None,
            sentinel_master: None,
            sentinel_addresses: Vec::new(),
            sentinel_password: None,
            cluster_nodes: Vec::new(),
            key_prefix: "strata".into(),
            connect_timeout_ms: 1_000,
            op_timeout_ms: 250,
            max_in_flight: 1024,
            scan_count: 1000,
            breaker_failure_threshold: 5,
            breaker_timeout_rate: 0.5,
            breaker_window: 20,
            breaker_open_ms: 500,
            breaker_max_open_ms: 5_000,
            maintenance_interval_ms: 100,
        }
    }
}

/// The Redis variables the seeds' users set, as the `STRATA__L2__REDIS__*` overrides they
/// mean; an explicit `STRATA__` variable for the same field wins.
fn redis_env_overrides(env: &[(String, String)]) -> Vec<(String, String)> {
    let has = |k: &str| env.iter().any(|(n, _)| n == k);
    let mut out = Vec::new();
    for (name, field) in [
        ("REDIS_URL", "URL"),
        ("REDIS_HOST", "HOST"),
        ("REDIS_PORT", "PORT"),
        ("REDIS_DB", "DB"),
        ("REDIS_PASSWORD", "PASSWORD"),
    ] {
        if let Some((_, v)) = env.iter().find(|(n, _)| n == name) {
            let key = format!("{ENV_PREFIX}__L2__REDIS__{field}");
            if !has(&key) {
                out.push((key, v.clone()));
            }
            let on = format!("{ENV_PREFIX}__L2__REDIS__ENABLED");
            if matches!(field, "URL" | "HOST") && !has(&on) && !out.iter().any(|(n, _)| *n == on) {
                out.push((on, "true".into()));
            }
        }
    }
    out
}

/// What writes do while L3 cannot apply them (see [`L3Config::on_failure`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum L3OnFailure {
    /// Keep taking writes in the other layers.
    #[default]
    Serve,
    /// Refuse writes (`MISCONF`) until L3 recovers.
    RefuseWrites,
}

/// L3 (RocksDB) settings. The node needs the `l3` cargo feature to enable it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L3Config {
    /// Whether the node has an L3 (default false for an embedded node: a library should not
    /// write to disk unless asked; the server turns it on).
    pub enabled: bool,
    /// The RocksDB directory.
    pub data_dir: PathBuf,
    /// Bound on live data; the directory settles within 1.2× of it.
    pub capacity_bytes: u64,
    /// fsync the WAL on every write: survive power loss at the cost of write latency.
    pub sync_writes: bool,
    /// Acknowledge a single node's writes once L3 answers reads of them from memory, and
    /// store them on disk behind (default `false`: a write returns once RocksDB has it, so
    /// it survives `kill -9`; docs/benchmarks.md has what `true` gains and costs). Off with `sync_writes`, and for a cluster member or a
    /// node behind the Redis bridge, whose writes L3 always stores first.
    pub write_behind: bool,
    /// How long a write stored behind may wait before the writer stores it (default 1000):
    /// a key written again meanwhile is stored once. What a `kill -9` can lose.
    pub write_behind_ms: u64,
    /// How often the L3 actor checks size (and evicts), health and free space, applies the
    /// changes a failing disk refused, and reopens a failed L3 (default 1000).
    pub maintenance_interval_ms: u64,
    /// Free space to keep on L3's file system: below it, new values are not stored in L3
    /// (they stay in the other layers), L3 evicts, and health says so. 0 (the default): 5 %
    /// of the file system, between 4 MiB and 1 GiB.
    #[serde(default)]
    pub min_free_bytes: u64,
    /// What writes do while L3 cannot apply them (not open, or a failing disk):
    /// `"serve"` (the default, right for a cache) keeps taking them in the other layers;
    /// `"refuse_writes"` fails them with `MISCONF`, as Redis does when it cannot persist.
    /// Deletes are taken either way (L3 never serves what it failed to delete).
    #[serde(default)]
    pub on_failure: L3OnFailure,
    /// How often the L3 actor scans for expired records (a full pass; the compaction filter
    /// also drops them as it goes).
    pub sweep_interval_ms: u64,
    /// Whether a write keeps an L3 copy (default true). With false, and an L2 (a cluster or
    /// the Redis bridge) holding what is written, a write drops L3's older copy instead,
    /// and L3 holds what this node reads: a fifth less CPU per cluster write, and a
    /// restarted node comes back warm with what it read. Without an L2, L3 keeps every
    /// write whatever this says (it is the only layer that survives a restart).
    #[serde(default = "default_true")]
    pub keep_writes: bool,
}

fn default_true() -> bool {
    true
}

/// Size limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Longest key in bytes.
    pub max_key_bytes: u64,
    /// Largest value in bytes (at most 512 MiB).
    pub max_value_bytes: u64,
    /// Most tags per entry.
    pub max_tags_per_entry: u64,
    /// Longest tag in bytes.
    pub max_tag_bytes: u64,
}

/// One namespace's policy. In `namespaces.NAME`, a field left out inherits
/// `namespace_defaults`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// TTL of a write that names none. Unset (or 0, to override an inherited value): no
    /// expiry.
    pub default_ttl_secs: Option<u64>,
    /// Longest TTL a write may ask for; longer ones are refused (`PolicyViolation`). Unset
    /// (or 0, to override an inherited value): no limit.
    pub max_ttl_secs: Option<u64>,
    /// Share of L1 reserved for this namespace (0 < share < 1), in a pool of its own.
    pub l1_share: Option<f64>,
    /// Whether entries go to the disk layer (default true).
    pub use_l3: Option<bool>,
    /// Compression of values on disk: `none`, `lz4` (default) or `zstd`.
    pub compression: Option<CompressionConfig>,
}

/// Compression names as written in config files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompressionConfig {
    /// Stored as given.
    None,
    /// LZ4 (default).
    #[default]
    Lz4,
    /// Zstandard level 3.
    Zstd,
}

/// How the node supervisor restarts a failed layer actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    /// Restarts allowed within `restart_window_ms` before the supervisor escalates (gives up
    /// on the actor and reports the node unhealthy).
    pub max_restarts: u32,
    /// The window over which restarts are counted.
    pub restart_window_ms: u64,
    /// Delay before the first restart; doubles with each restart in the window.
    pub backoff_initial_ms: u64,
    /// Longest delay between restarts.
    pub backoff_max_ms: u64,
}

/// Stats snapshots taken by the layer actors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Interval of per-layer stats snapshots (also logged at debug level).
    pub stats_interval_ms: u64,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a value has the wrong type or an unknown key.
    #[error("cannot load config{}: {source}", .path.as_ref().map(|p| format!(" from {}", p.display())).unwrap_or_default())]
    Load {
        /// The file, if one was given.
        path: Option<PathBuf>,
        /// What the parser reported (it names the key).
        source: config::ConfigError,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid config: {field}: {reason}")]
    Invalid {
        /// The dotted path of the field, such as `l1.capacity_bytes`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

const MIB: u64 = 1024 * 1024;

impl Default for NodeConfig {
    fn default() -> Self {
        Self::for_profile(Profile::Default)
    }
}

impl NodeConfig {
    /// The defaults of `profile`.
    pub fn for_profile(profile: Profile) -> Self {
        let (l1_bytes, sweep_ms, max_value, max_key, est_entry) = match profile {
            Profile::Default => (100 * MIB, 1_000, 16 * MIB, 8 * 1024, 1024),
            Profile::HighPerformance => (1024 * MIB, 5_000, 64 * MIB, 8 * 1024, 4096),
            Profile::MemoryConstrained => (16 * MIB, 250, MIB, 1024, 512),
        };
        let l3_bytes = match profile {
            Profile::Default => 10 * 1024 * MIB,
            Profile::HighPerformance => 50 * 1024 * MIB,
            Profile::MemoryConstrained => 1024 * MIB,
        };
        Self {
            profile,
            node: NodeSection {
                name: "strata".into(),
            },
            l1: L1Config {
                enabled: true,
                capacity_bytes: l1_bytes,
                sweep_interval_ms: sweep_ms,
                estimated_entry_bytes: est_entry,
            },
            l2: L2Config::default(),
            l3: L3Config {
                enabled: false,
                data_dir: PathBuf::from("strata-data"),
                capacity_bytes: l3_bytes,
                sync_writes: false,
                write_behind: false,
                write_behind_ms: 1_000,
                maintenance_interval_ms: 1_000,
                min_free_bytes: 0,
                on_failure: L3OnFailure::Serve,
                sweep_interval_ms: 60_000,
                keep_writes: true,
            },
            limits: LimitsConfig {
                max_key_bytes: max_key,
                max_value_bytes: max_value,
                max_tags_per_entry: 32,
                max_tag_bytes: 256,
            },
            namespace_defaults: NamespaceConfig {
                default_ttl_secs: Some(3_600),
                max_ttl_secs: Some(86_400),
                l1_share: None,
                use_l3: Some(true),
                compression: Some(CompressionConfig::Lz4),
            },
            namespaces: BTreeMap::new(),
            supervisor: SupervisorConfig {
                max_restarts: 5,
                restart_window_ms: 60_000,
                backoff_initial_ms: 100,
                backoff_max_ms: 5_000,
            },
            metrics: MetricsConfig {
                stats_interval_ms: 10_000,
            },
            server: ServerConfig {
                max_request_bytes: max_value + 16 * MIB,
                ..ServerConfig::default()
            },
            cluster: ClusterConfig::default(),
        }
    }

    /// Small and fast-ticking, for tests: 8 MiB L1, 50 ms sweeps, 10 ms restart backoff.
    pub fn for_test() -> Self {
        let mut c = Self::for_profile(Profile::Default);
        c.node.name = "test".into();
        c.l1.capacity_bytes = 8 * MIB;
        c.l1.sweep_interval_ms = 50;
        c.supervisor = SupervisorConfig {
            max_restarts: 3,
            restart_window_ms: 10_000,
            backoff_initial_ms: 10,
            backoff_max_ms: 100,
        };
        c.metrics.stats_interval_ms = 100;
        c.l3.capacity_bytes = 64 * MIB;
        c.l3.maintenance_interval_ms = 100;
        c.l3.sweep_interval_ms = 200;
        c
    }

    /// Loads from an optional TOML file and the process environment, then validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`NodeConfig::load`] with an explicit environment (tests pass their own, so they
    /// do not race on the process environment).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::load_layered(path, env, |_| {})
    }

    /// Like [`NodeConfig::load_with_env`], with `base` applied to the profile's defaults
    /// before the file and the environment: how `strata serve` turns L3 on by default while
    /// a file can still turn it off.
    pub fn load_layered(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        base: impl Fn(&mut NodeConfig),
    ) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let redis = redis_env_overrides(&env);
        let env: config::Map<String, String> = env
            .into_iter()
            .chain(redis)
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        let load_err = |source| ConfigError::Load {
            path: path.map(Path::to_path_buf),
            source,
        };
        let env_source = || {
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env.clone()))
        };
        let file_source = || path.map(|p| config::File::from(p).format(config::FileFormat::Toml));

        // First pass: which profile?
        let probe = config::Config::builder()
            .add_source(file_source().into_iter().collect::<Vec<_>>())
            .add_source(env_source())
            .build()
            .map_err(load_err)?;
        let profile = match probe.get_string("profile") {
            Ok(name) => Profile::parse(&name).ok_or_else(|| {
                invalid(
                    "profile",
                    format!("unknown profile {name:?}; expected default, high_performance or memory_constrained"),
                )
            })?,
            Err(config::ConfigError::NotFound(_)) => Profile::Default,
            Err(e) => return Err(load_err(e)),
        };

        let mut defaults = Self::for_profile(profile);
        base(&mut defaults);
        let defaults = config::Config::try_from(&defaults).map_err(load_err)?;
        let merged = config::Config::builder()
            .add_source(defaults)
            .add_source(file_source().into_iter().collect::<Vec<_>>())
            .add_source(env_source())
            .build()
            .map_err(load_err)?;
        let cfg: NodeConfig = merged.try_deserialize().map_err(load_err)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and consistency; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.name.is_empty() {
            return Err(invalid("node.name", "must not be empty"));
        }
        if self.l1.enabled {
            if self.l1.capacity_bytes == 0 {
                return Err(invalid("l1.capacity_bytes", "must be greater than 0"));
            }
            if self.l1.sweep_interval_ms == 0 {
                return Err(invalid("l1.sweep_interval_ms", "must be greater than 0"));
            }
            if self.l1.estimated_entry_bytes == 0 {
                return Err(invalid(
                    "l1.estimated_entry_bytes",
                    "must be greater than 0",
                ));
            }
        }
        if self.l3.enabled {
            if self.l3.capacity_bytes < MIB {
                return Err(invalid("l3.capacity_bytes", "must be at least 1 MiB"));
            }
            if self.l3.maintenance_interval_ms == 0 {
                return Err(invalid(
                    "l3.maintenance_interval_ms",
                    "must be greater than 0",
                ));
            }
            if self.l3.sweep_interval_ms == 0 {
                return Err(invalid("l3.sweep_interval_ms", "must be greater than 0"));
            }
            if self.l3.write_behind_ms > 60_000 {
                return Err(invalid(
                    "l3.write_behind_ms",
                    "must be at most 60000 (what a crash can lose)",
                ));
            }
            if self.l3.data_dir.as_os_str().is_empty() {
                return Err(invalid("l3.data_dir", "must not be empty"));
            }
        }
        let l = &self.limits;
        for (field, v, max) in [
            (
                "limits.max_key_bytes",
                l.max_key_bytes,
                MAX_KEY_BYTES_CEILING,
            ),
            (
                "limits.max_value_bytes",
                l.max_value_bytes,
                MAX_VALUE_BYTES_CEILING,
            ),
            ("limits.max_tags_per_entry", l.max_tags_per_entry, 1024),
            ("limits.max_tag_bytes", l.max_tag_bytes, 64 * 1024),
        ] {
            if v == 0 || v > max {
                return Err(invalid(
                    field,
                    format!("must be between 1 and {max}, got {v}"),
                ));
            }
        }
        self.namespace_defaults
            .to_policy(None)
            .validate()
            .map_err(|e| invalid("namespace_defaults", e))?;
        if self.namespace_defaults.l1_share.is_some() {
            return Err(invalid(
                "namespace_defaults.l1_share",
                "a share is reserved per named namespace, not for all of them",
            ));
        }
        let mut share_sum = 0.0;
        for (name, ns) in &self.namespaces {
            let field = format!("namespaces.{name}");
            Namespace::new(name).map_err(|e| invalid(&field, e.to_string()))?;
            ns.to_policy(Some(&self.namespace_defaults))
                .validate()
                .map_err(|e| invalid(&field, e))?;
            if let Some(s) = ns.l1_share {
                if !(s > 0.0 && s < 1.0) {
                    return Err(invalid(
                        format!("{field}.l1_share"),
                        format!("must be in (0, 1), got {s}"),
                    ));
                }
                share_sum += s;
            }
        }
        if share_sum >= 1.0 {
            return Err(invalid(
                "namespaces.*.l1_share",
                format!(
                    "shares sum to {share_sum}; they must sum to less than 1 (the rest is shared)"
                ),
            ));
        }
        let s = &self.supervisor;
        if s.restart_window_ms == 0 {
            return Err(invalid(
                "supervisor.restart_window_ms",
                "must be greater than 0",
            ));
        }
        if s.backoff_initial_ms > s.backoff_max_ms {
            return Err(invalid(
                "supervisor.backoff_initial_ms",
                format!("must not exceed backoff_max_ms ({})", s.backoff_max_ms),
            ));
        }
        let srv = &self.server;
        for (field, addr) in [
            ("server.resp_listen", &srv.resp_listen),
            ("server.admin_listen", &srv.admin_listen),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    field,
                    format!("{addr:?} is not an IP:port address"),
                ));
            }
        }
        if let Some(addr) = &srv.cluster_listen {
            let Ok(parsed) = addr.parse::<std::net::SocketAddr>() else {
                return Err(invalid(
                    "server.cluster_listen",
                    format!("{addr:?} is not an IP:port address"),
                ));
            };
            if parsed.ip().is_unspecified() && self.cluster.advertise.is_none() {
                return Err(invalid(
                    "server.cluster_listen",
                    format!(
                        "{addr} listens on every interface: set cluster.advertise to the \
                         address clients reach this node at (MOVED redirects name it)"
                    ),
                ));
            }
            if !self.cluster.enabled {
                return Err(invalid(
                    "server.cluster_listen",
                    "answers as a Redis Cluster node, which needs cluster.enabled = true",
                ));
            }
        }
        if srv.script_time_limit_ms == 0 {
            return Err(invalid(
                "server.script_time_limit_ms",
                "must be greater than 0",
            ));
        }
        if srv.max_clients == 0 {
            return Err(invalid("server.max_clients", "must be greater than 0"));
        }
        if srv.slowlog_log_slower_than_us < -1 {
            return Err(invalid(
                "server.slowlog_log_slower_than_us",
                "must be -1 (off), 0 (every command) or more",
            ));
        }
        if srv.max_request_bytes <= self.limits.max_value_bytes {
            return Err(invalid(
                "server.max_request_bytes",
                format!(
                    "must exceed limits.max_value_bytes ({}) so that the largest value fits in a request",
                    self.limits.max_value_bytes
                ),
            ));
        }
        if srv.databases == 0 || srv.databases > 1024 {
            return Err(invalid("server.databases", "must be between 1 and 1024"));
        }
        let room = strata_core::namespace::MAX_NAMESPACES as u64
            - (self.namespaces.len() as u64).min(1024);
        if srv.max_namespaces == 0 || u64::from(srv.max_namespaces) > room {
            return Err(invalid(
                "server.max_namespaces",
                format!("must be between 1 and {room} (1024 less the configured namespaces)"),
            ));
        }
        if srv.tracking_table_max_bytes < 64 * 1024 {
            return Err(invalid(
                "server.tracking_table_max_bytes",
                "must be at least 65536",
            ));
        }
        if srv.tracking_table_max_keys == 0 {
            return Err(invalid(
                "server.tracking_table_max_keys",
                "must be greater than 0",
            ));
        }
        if srv.pubsub_output_buffer_limit_bytes == 0 {
            return Err(invalid(
                "server.pubsub_output_buffer_limit_bytes",
                "must be greater than 0",
            ));
        }
        if srv.client_output_buffer_limit_bytes <= self.limits.max_value_bytes {
            return Err(invalid(
                "server.client_output_buffer_limit_bytes",
                format!(
                    "must exceed limits.max_value_bytes ({}) so that the largest value can be read",
                    self.limits.max_value_bytes
                ),
            ));
        }
        if srv.max_input_bytes_total < srv.max_request_bytes {
            return Err(invalid(
                "server.max_input_bytes_total",
                format!(
                    "must be at least server.max_request_bytes ({})",
                    srv.max_request_bytes
                ),
            ));
        }
        if srv.requirepass.as_deref() == Some("") {
            return Err(invalid(
                "server.requirepass",
                "must not be empty (leave it out for no password)",
            ));
        }
        self.validate_security()?;
        let c = &self.cluster;
        if c.enabled {
            if self.l2.redis.enabled {
                return Err(invalid(
                    "cluster.enabled",
                    "a node's L2 is either the cluster or a Redis bridge, not both",
                ));
            }
            match &c.secret {
                None => {
                    return Err(invalid(
                        "cluster.secret",
                        "required when the cluster is enabled (STRATA__CLUSTER__SECRET)",
                    ));
                }
                Some(s) if s.len() < 16 => {
                    return Err(invalid(
                        "cluster.secret",
                        format!("must be at least 16 bytes, got {}", s.len()),
                    ));
                }
                Some(_) => {}
            }
            let advertise = match &c.advertise {
                None => None,
                Some(a) => Some(a.parse::<std::net::IpAddr>().map_err(|_| {
                    invalid("cluster.advertise", format!("{a:?} is not an IP address"))
                })?),
            };
            if advertise.is_some_and(|a| a.is_unspecified()) {
                return Err(invalid(
                    "cluster.advertise",
                    "must be an address the other members can reach, not 0.0.0.0 or ::",
                ));
            }
            for (field, addr) in [
                ("cluster.gossip_listen", &c.gossip_listen),
                ("cluster.rpc_listen", &c.rpc_listen),
            ] {
                match addr.parse::<std::net::SocketAddr>() {
                    Err(_) => {
                        return Err(invalid(
                            field,
                            format!("{addr:?} is not an IP:port address"),
                        ));
                    }
                    Ok(a) if a.ip().is_unspecified() && advertise.is_none() => {
                        return Err(invalid(
                            field,
                            format!(
                                "{addr} listens on every interface: set cluster.advertise to \
                                 the address the other members reach this node at"
                            ),
                        ));
                    }
                    Ok(_) => {}
                }
            }
            for seed in &c.seeds {
                if seed.parse::<std::net::SocketAddr>().is_err() {
                    return Err(invalid(
                        "cluster.seeds",
                        format!("{seed:?} is not an IP:port address"),
                    ));
                }
            }
            if c.replication_factor == 0 || c.replication_factor > 5 {
                return Err(invalid(
                    "cluster.replication_factor",
                    "must be between 1 and 5",
                ));
            }
            if c.vnodes == 0 {
                return Err(invalid("cluster.vnodes", "must be greater than 0"));
            }
            if c.owner_capacity_bytes < MIB {
                return Err(invalid(
                    "cluster.owner_capacity_bytes",
                    "must be at least 1 MiB",
                ));
            }
            if c.timed_writes_max_bytes < MIB {
                return Err(invalid(
                    "cluster.timed_writes_max_bytes",
                    "must be at least 1 MiB",
                ));
            }
            if c.negative_ttl_ms > c.max_staleness_ms {
                return Err(invalid(
                    "cluster.negative_ttl_ms",
                    "must be at most cluster.max_staleness_ms (a remembered absence is a stale answer once the key exists)",
                ));
            }
            for (field, v) in [
                ("cluster.max_staleness_ms", c.max_staleness_ms),
                ("cluster.rpc_timeout_ms", c.rpc_timeout_ms),
                ("cluster.connect_timeout_ms", c.connect_timeout_ms),
                ("cluster.expected_size", u64::from(c.expected_size)),
                ("cluster.owner_sweep_interval_ms", c.owner_sweep_interval_ms),
                (
                    "cluster.settling_push_limit",
                    u64::from(c.settling_push_limit),
                ),
            ] {
                if v == 0 {
                    return Err(invalid(field, "must be greater than 0"));
                }
            }
        }
        let r = &self.l2.redis;
        if r.enabled {
            let field = |f: &str| format!("l2.redis.{f}");
            if r.maintenance_interval_ms == 0 {
                return Err(invalid(
                    field("maintenance_interval_ms"),
                    "must be greater than 0",
                ));
            }
            if r.max_in_flight == 0 {
                return Err(invalid(field("max_in_flight"), "must be greater than 0"));
            }
            if r.sentinel_master.is_some() && !r.cluster_nodes.is_empty() {
                return Err(invalid(
                    field("sentinel_master"),
                    "Sentinel and cluster_nodes are exclusive; set one",
                ));
            }
        }
        if self.metrics.stats_interval_ms == 0 {
            return Err(invalid(
                "metrics.stats_interval_ms",
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    /// The core's size limits.
    pub fn core_limits(&self) -> Limits {
        let l = &self.limits;
        Limits {
            max_key_bytes: l.max_key_bytes as usize,
            max_value_bytes: l.max_value_bytes as usize,
            max_tags_per_entry: l.max_tags_per_entry as usize,
            max_tag_bytes: l.max_tag_bytes as usize,
        }
    }

    /// The L1 tier's config, with the pools of namespaces that reserve a share.
    pub fn l1_tier_config(&self) -> MemoryTierConfig {
        MemoryTierConfig {
            capacity_bytes: self.l1.capacity_bytes,
            dedicated: self
                .namespaces
                .iter()
                .filter_map(|(n, ns)| ns.l1_share.map(|s| (n.clone(), s)))
                .collect(),
            estimated_entry_bytes: self.l1.estimated_entry_bytes,
        }
    }

    /// The policy of every named namespace, with inherited fields filled in.
    pub fn namespace_policies(&self) -> Vec<(String, NamespacePolicy)> {
        self.namespaces
            .iter()
            .map(|(n, ns)| (n.clone(), ns.to_policy(Some(&self.namespace_defaults))))
            .collect()
    }

    /// `Duration` views of the interval settings.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.l1.sweep_interval_ms)
    }
}

impl NamespaceConfig {
    /// This config as a core policy, taking unset fields from `inherit`.
    pub fn to_policy(&self, inherit: Option<&NamespaceConfig>) -> NamespacePolicy {
        let pick = |own: Option<u64>, f: fn(&NamespaceConfig) -> Option<u64>| {
            own.or_else(|| inherit.and_then(f))
        };
        NamespacePolicy {
            // 0 means "none": TOML has no null to override an inherited value with.
            default_ttl: pick(self.default_ttl_secs, |d| d.default_ttl_secs)
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            max_ttl: pick(self.max_ttl_secs, |d| d.max_ttl_secs)
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            l1_share: self.l1_share,
            use_l3: self
                .use_l3
                .or_else(|| inherit.and_then(|d| d.use_l3))
                .unwrap_or(true),
            compression: match self
                .compression
                .or_else(|| inherit.and_then(|d| d.compression))
                .unwrap_or_default()
            {
                CompressionConfig::None => Compression::None,
                CompressionConfig::Lz4 => Compression::Lz4,
                CompressionConfig::Zstd => Compression::Zstd,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_validate_and_differ() {
        for p in [
            Profile::Default,
            Profile::HighPerformance,
            Profile::MemoryConstrained,
        ] {
            NodeConfig::for_profile(p).validate().unwrap();
        }
        assert_eq!(NodeConfig::default().l1.capacity_bytes, 100 * MIB);
        assert!(
            NodeConfig::for_profile(Profile::MemoryConstrained)
                .l1
                .capacity_bytes
                < NodeConfig::for_profile(Profile::HighPerformance)
                    .l1
                    .capacity_bytes
        );
        NodeConfig::for_test().validate().unwrap();
    }

    /// A member bound to every interface must say which address to announce: announcing
    /// `0.0.0.0` would make it unreachable, and the error names the field to set.
    #[test]
    fn a_wildcard_cluster_listener_needs_an_advertised_address() {
        let mut c = NodeConfig::for_test();
        c.cluster.enabled = true;
        c.cluster.secret = Some("sixteen bytes at least".into());
        c.validate().unwrap();
        c.cluster.gossip_listen = "0.0.0.0:7946".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cluster.gossip_listen"), "{err}");
        assert!(err.contains("cluster.advertise"), "{err}");
        c.cluster.advertise = Some("10.0.0.7".into());
        c.validate().unwrap();
        c.cluster.rpc_listen = "[::]:7947".into();
        c.validate().unwrap();
        for bad in ["0.0.0.0", "not-an-ip", "10.0.0.7:7946"] {
            c.cluster.advertise = Some(bad.into());
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("cluster.advertise"), "{bad}: {err}");
        }
    }

    /// A remembered absence is a stale answer once the key exists: it may not outlive the
    /// staleness bound.
    #[test]
    fn negative_caching_stays_within_the_staleness_bound() {
        let mut c = NodeConfig::for_test();
        c.cluster.enabled = true;
        c.cluster.secret = Some("sixteen bytes at least".into());
        c.validate().unwrap();
        c.cluster.negative_ttl_ms = c.cluster.max_staleness_ms + 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cluster.negative_ttl_ms"), "{err}");
        c.cluster.negative_ttl_ms = 0;
        c.validate().unwrap();
    }

    #[test]
    fn namespaces_inherit_unset_fields() {
        let mut c = NodeConfig::default();
        c.namespaces.insert(
            "emission_factors".into(),
            NamespaceConfig {
                default_ttl_secs: Some(600),
                ..Default::default()
            },
        );
        let p = &c.namespace_policies()[0].1;
        assert_eq!(p.default_ttl, Some(Duration::from_secs(600)));
        assert_eq!(p.max_ttl, Some(Duration::from_secs(86_400)), "inherited");
        assert!(p.use_l3);
    }
}

#[cfg(test)]
mod env_order_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn two_overrides_in_one_table_both_apply_whatever_the_map_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(
            &file,
            "[l1]\ncapacity_bytes = 16777216\n[l3]\ndata_dir = \"/tmp/x\"\ncapacity_bytes = 67108864\n",
        )
        .unwrap();
        for _ in 0..200 {
            let c = NodeConfig::load_layered(
                Some(&file),
                [
                    ("STRATA__L3__DATA_DIR".to_owned(), "/tmp/y".to_owned()),
                    (
                        "STRATA__L3__ON_FAILURE".to_owned(),
                        "refuse_writes".to_owned(),
                    ),
                ],
                |c| c.l3.enabled = true,
            )
            .unwrap();
            assert_eq!(c.l3.data_dir, PathBuf::from("/tmp/y"));
            assert_eq!(c.l3.on_failure, L3OnFailure::RefuseWrites);
        }
    }
}
