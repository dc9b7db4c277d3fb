//! The bridge's settings: where Redis is (standalone, Sentinel or Cluster), how long to wait,
//! and when the circuit breaker opens.

use std::time::Duration;

/// Where the bridge finds Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One Redis server (possibly with replicas the bridge does not use).
    Standalone {
        /// `host:port`.
        address: String,
    },
    /// A master found through Redis Sentinel; on failover the bridge asks again.
    Sentinel {
        /// The sentinels, `host:port` each.
        sentinels: Vec<String>,
        /// The monitored master's name (`sentinel monitor <name> …`).
        master_name: String,
        /// The sentinels' own password, when they have one.
        sentinel_password: Option<String>,
    },
    /// A Redis Cluster, reached through any of its nodes.
    Cluster {
        /// Seed nodes, `host:port` each.
        nodes: Vec<String>,
    },
}

/// When the breaker opens and how it recovers.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures (errors or timeouts) that open the circuit.
    pub failure_threshold: u32,
    /// Share of timeouts among the last `window` calls that opens the circuit, in (0, 1].
    pub timeout_rate: f64,
    /// Calls the timeout rate is measured over.
    pub window: u32,
    /// How long the circuit stays open before the first probe.
    pub open_for: Duration,
    /// Ceiling of the open time, which doubles after each failed probe.
    pub max_open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            timeout_rate: 0.5,
            window: 20,
            open_for: Duration::from_millis(500),
            max_open_for: Duration::from_secs(5),
        }
    }
}

/// Everything the bridge needs.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeConfig {
    /// Where Redis is.
    pub topology: Topology,
    /// Logical database (standalone and Sentinel; Redis Cluster has only database 0).
    pub db: i64,
    /// ACL user name (Redis 6+), when not the default user.
    pub username: Option<String>,
    /// Password (`requirepass`, or the ACL user's).
    pub password: Option<String>,
    /// Prefix of every key the bridge writes: `{prefix}:{namespace}:{key}`. The invalidation
    /// channel is `{prefix}:invalidations`.
    pub key_prefix: String,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed for one command; past it the call is a timeout, counted by the breaker.
    pub op_timeout: Duration,
    /// Commands in flight at once; more wait (within `op_timeout`) for a slot.
    pub max_in_flight: usize,
    /// Keys asked for per `SCAN` call (pattern and tag invalidation, namespace flush).
    pub scan_count: u32,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// A file that keeps the work queued for Redis while it is unreachable
    /// ([`crate::journal`]), so that a node killed during an outage still owes it when it
    /// comes back; a node with L3 keeps it beside L3. `None`: in memory only.
    pub pending_journal: Option<std::path::PathBuf>,
}

impl BridgeConfig {
    /// A standalone Redis at `address` (`host:port`), defaults elsewhere.
    pub fn standalone(address: impl Into<String>) -> Self {
        Self::with_topology(Topology::Standalone {
            address: address.into(),
        })
    }

    /// Defaults around `topology`.
    pub fn with_topology(topology: Topology) -> Self {
        Self {
            topology,
            db: 0,
            username: None,
            password: None,
            key_prefix: "strata".into(),
            connect_timeout: Duration::from_secs(1),
            op_timeout: Duration::from_millis(250),
            max_in_flight: 1024,
            scan_count: 1000,
            breaker: BreakerConfig::default(),
            pending_journal: None,
        }
    }

    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |field: &str, why: &str| Err(format!("{field}: {why}"));
        match &self.topology {
            Topology::Standalone { address } => check_address("address", address)?,
            Topology::Sentinel {
                sentinels,
                master_name,
                ..
            } => {
                if sentinels.is_empty() {
                    return bad("sentinel.addresses", "must name at least one sentinel");
                }
                for a in sentinels {
                    check_address("sentinel.addresses", a)?;
                }
                if master_name.is_empty() {
                    return bad("sentinel.master_name", "must not be empty");
                }
            }
            Topology::Cluster { nodes } => {
                if nodes.is_empty() {
                    return bad("cluster_nodes", "must name at least one node");
                }
                for a in nodes {
                    check_address("cluster_nodes", a)?;
                }
                if self.db != 0 {
                    return bad("db", "Redis Cluster has only database 0");
                }
            }
        }
        if self.db < 0 {
            return bad("db", "must not be negative");
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return bad(
                "key_prefix",
                "must be non-empty and hold no '{' or '}' (Redis Cluster hash tags)",
            );
        }
        if self.op_timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("op_timeout_ms/connect_timeout_ms", "must be greater than 0");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be greater than 0");
        }
        if self.scan_count == 0 {
            return bad("scan_count", "must be greater than 0");
        }
        let b = &self.breaker;
        if b.failure_threshold == 0 {
            return bad("breaker.failure_threshold", "must be greater than 0");
        }
        if !(b.timeout_rate > 0.0 && b.timeout_rate <= 1.0) {
            return bad("breaker.timeout_rate", "must be in (0, 1]");
        }
        if b.window == 0 || b.window > 1024 {
            return bad("breaker.window", "must be between 1 and 1024");
        }
        if b.open_for.is_zero() || b.max_open_for < b.open_for {
            return bad(
                "breaker.open_ms/max_open_ms",
                "open_ms must be > 0 and max_open_ms >= open_ms",
            );
        }
        Ok(())
    }

    /// Takes address, database and credentials from a `redis://[user:password@]host:port[/db]`
    /// URL (`rediss://`, TLS, is refused: this build has no TLS support).
    pub fn apply_url(&mut self, url: &str) -> Result<(), String> {
        use redis::IntoConnectionInfo;
        if url.starts_with("rediss://") {
            return Err("url: TLS (rediss://) is not supported by this build".into());
        }
        let info = url
            .into_connection_info()
            .map_err(|e| format!("url: {e}"))?;
        match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => {
                self.topology = Topology::Standalone {
                    address: format!("{host}:{port}"),
                };
            }
            other => return Err(format!("url: unsupported address {other:?}")),
        }
        let r = info.redis_settings();
        self.db = r.db();
        if let Some(u) = r.username() {
            self.username = Some(u.to_owned());
        }
        if let Some(p) = r.password() {
            self.password = Some(p.to_owned());
        }
        Ok(())
    }

    /// The invalidation channel.
    pub fn channel(&self) -> String {
        format!("{}:invalidations", self.key_prefix)
    }
}

/// Splits `host:port`.
pub(crate) fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

fn check_address(field: &str, address: &str) -> Result<(), String> {
    split_address(address)
        .map(|_| ())
        .ok_or_else(|| format!("{field}: {address:?} is not host:port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        assert!(
            BridgeConfig::standalone("127.0.0.1:6379")
                .validate()
                .is_ok()
        );
        let e = BridgeConfig::standalone("nope").validate().unwrap_err();
        assert!(e.starts_with("address"), "{e}");
        let mut c = BridgeConfig::standalone("127.0.0.1:6379");
        c.key_prefix = "a{b}".into();
        assert!(c.validate().unwrap_err().starts_with("key_prefix"));
        let mut c = BridgeConfig::with_topology(Topology::Cluster {
            nodes: vec!["127.0.0.1:7000".into()],
        });
        c.db = 2;
        assert!(c.validate().unwrap_err().starts_with("db"));
        let c = BridgeConfig::with_topology(Topology::Sentinel {
            sentinels: vec![],
            master_name: "m".into(),
            sentinel_password: None,
        });
        assert!(c.validate().unwrap_err().starts_with("sentinel.addresses"));
    }

    #[test]
    fn urls_fill_address_db_and_credentials() {
        let mut c = BridgeConfig::standalone("x:1");
        c.apply_url("redis://u:p%40ss@10.0.0.5:6390/3").unwrap();
        assert_eq!(
            c.topology,
            Topology::Standalone {
                address: "10.0.0.5:6390".into()
            }
        );
        assert_eq!(
            (c.db, c.username.as_deref(), c.password.as_deref()),
            (3, Some("u"), Some("p@ss"))
        );
        assert!(c.apply_url("rediss://h:1").unwrap_err().contains("TLS"));
        assert!(c.apply_url("http://h:1").is_err());
    }

    #[test]
    fn addresses_split() {
        assert_eq!(split_address("h:1"), Some(("h".into(), 1)));
        assert_eq!(split_address("[::1]:6379"), Some(("::1".into(), 6379)));
        assert_eq!(split_address("h"), None);
        assert_eq!(split_address(":1"), None);
    }
}
