//! Building L2 for a node: the Redis bridge when the `redis` feature is on, a clear error
//! otherwise.

use std::sync::Arc;

use strata_core::{Cache, Clock, Tier};

use crate::actors::tier_actor::Maintenance;
use crate::config::NodeConfig;

/// L2's tier, its actor's hook, and how to hand the finished cache to it (the bridge's
/// subscriber drops the node's own copies when other nodes write).
pub(crate) struct BuiltL2 {
    pub(crate) tier: Arc<dyn Tier>,
    pub(crate) maintenance: Arc<dyn Maintenance>,
    pub(crate) attach: Box<dyn FnOnce(Cache) + Send>,
    pub(crate) maintenance_interval: std::time::Duration,
}

#[cfg(feature = "redis")]
mod bridge {
    use std::sync::OnceLock;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use parking_lot::Mutex;
    use strata_redis::{BreakerConfig, BridgeConfig, RedisTier, Topology, coherence};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::actors::tier_actor::LayerMetric;
    use crate::config::RedisBridgeConfig;

    /// The bridge's background work, run by the L2 actor: the invalidation subscriber
    /// (started with the actor, so a restarted actor restarts it) and the periodic
    /// ping / replay / probe.
    pub(crate) struct BridgeHook {
        tier: RedisTier,
        cache: OnceLock<Cache>,
        subscriber: Mutex<Option<JoinHandle<()>>>,
    }

    impl BridgeHook {
        fn abort_subscriber(&self) {
            if let Some(t) = self.subscriber.lock().take() {
                t.abort();
            }
        }
    }

    impl Drop for BridgeHook {
        fn drop(&mut self) {
            self.abort_subscriber();
        }
    }

    impl Maintenance for BridgeHook {
        fn start(&self) -> Result<(), String> {
            self.abort_subscriber();
            let cache = self
                .cache
                .get()
                .cloned()
                .ok_or("the cache is not attached yet")?;
            let task = tokio::runtime::Handle::current()
                .spawn(coherence::run_subscriber(self.tier.clone(), cache));
            *self.subscriber.lock() = Some(task);
            Ok(())
        }

        fn maintain(&self) {
            tokio::runtime::Handle::current().block_on(self.tier.maintain());
        }

        fn stop(&self) {
            self.abort_subscriber();
        }

        fn metrics(&self) -> Vec<LayerMetric> {
            let c = self.tier.counters();
            let s = self.tier.status();
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let m = |name, help, counter, value| LayerMetric {
                name,
                help,
                counter,
                value,
            };
            vec![
                m(
                    "redis_breaker_state",
                    "Redis bridge circuit: 0 closed, 1 open, 2 half-open",
                    false,
                    s.breaker as u64,
                ),
                m(
                    "redis_breaker_opened",
                    "Times the Redis bridge circuit opened",
                    true,
                    get(&c.opened),
                ),
                m(
                    "redis_breaker_closed",
                    "Times the Redis bridge circuit closed again",
                    true,
                    get(&c.closed),
                ),
                m(
                    "redis_subscribed",
                    "1 while the invalidation channel is subscribed",
                    false,
                    u64::from(s.subscribed),
                ),
                m(
                    "redis_pending_operations",
                    "Writes and invalidations queued for Redis's return",
                    false,
                    s.pending as u64,
                ),
                m(
                    "redis_bypassed_reads",
                    "Reads that skipped Redis because the circuit was open",
                    true,
                    get(&c.bypassed_reads),
                ),
                m(
                    "redis_bypassed_writes",
                    "Writes kept local because Redis was unreachable",
                    true,
                    get(&c.bypassed_writes),
                ),
                m(
                    "redis_bypassed_invalidations",
                    "Invalidations queued because Redis was unreachable",
                    true,
                    get(&c.bypassed_invalidations),
                ),
                m(
                    "redis_failures",
                    "Redis calls that failed or timed out",
                    true,
                    get(&c.failures),
                ),
                m(
                    "redis_timeouts",
                    "Redis calls that timed out",
                    true,
                    get(&c.timeouts),
                ),
                m(
                    "redis_corrupt_values",
                    "Values under the prefix that did not decode (misses)",
                    true,
                    get(&c.corrupt),
                ),
                m(
                    "redis_execute_retries",
                    "Conditional or read-modify-write operations recomputed because another writer changed the key first",
                    true,
                    get(&c.execute_retries),
                ),
                m(
                    "redis_master_renewals",
                    "Times the bridge found its Sentinel master demoted and connected to the new one",
                    true,
                    get(&c.renewed),
                ),
                m(
                    "redis_replayed_operations",
                    "Queued operations applied after Redis came back",
                    true,
                    get(&c.replayed),
                ),
                m(
                    "redis_invalidation_messages",
                    "Invalidations received from other nodes and applied",
                    true,
                    get(&c.messages),
                ),
                m(
                    "redis_bad_messages",
                    "Undecodable messages on the invalidation channel",
                    true,
                    get(&c.bad_messages),
                ),
                m(
                    "redis_resyncs",
                    "Times L1 was emptied and L3 proven against Redis after a gap in the channel",
                    true,
                    get(&c.resyncs),
                ),
                m(
                    "redis_warm_kept",
                    "L3 copies a proof against Redis kept",
                    true,
                    get(&c.warm_kept),
                ),
                m(
                    "redis_warm_dropped",
                    "L3 copies a proof against Redis dropped",
                    true,
                    get(&c.warm_dropped),
                ),
                m(
                    "redis_warm_calls",
                    "Pipelined version reads the proofs sent to Redis",
                    true,
                    get(&c.warm_calls),
                ),
            ]
        }
    }

    fn bridge_config(r: &RedisBridgeConfig) -> Result<BridgeConfig, String> {
        let topology = if let Some(master) = &r.sentinel_master {
            Topology::Sentinel {
                sentinels: r.sentinel_addresses.clone(),
                master_name: master.clone(),
                sentinel_password: r.sentinel_password.clone(),
            }
        } else if !r.cluster_nodes.is_empty() {
            Topology::Cluster {
                nodes: r.cluster_nodes.clone(),
            }
        } else {
            Topology::Standalone {
                address: format!("{}:{}", r.host, r.port),
            }
        };
        let mut c = BridgeConfig::with_topology(topology);
        c.db = r.db;
        c.username = r.username.clone();
        c.password = r.password.clone();
        if let Some(url) = &r.url {
            c.apply_url(url)?;
        }
        c.key_prefix = r.key_prefix.clone();
        c.connect_timeout = Duration::from_millis(r.connect_timeout_ms);
        c.op_timeout = Duration::from_millis(r.op_timeout_ms);
        c.max_in_flight = r.max_in_flight as usize;
        c.scan_count = r.scan_count;
        c.breaker = BreakerConfig {
            failure_threshold: r.breaker_failure_threshold,
            timeout_rate: r.breaker_timeout_rate,
            window: r.breaker_window,
            open_for: Duration::from_millis(r.breaker_open_ms),
            max_open_for: Duration::from_millis(r.breaker_max_open_ms),
        };
        c.validate()?;
        Ok(c)
    }

    pub(super) async fn build(
        config: &NodeConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<BuiltL2, String> {
        let r = &config.l2.redis;
        let mut cfg = bridge_config(r).map_err(|e| format!("l2.redis: {e}"))?;
        // Beside L3: the work owed to Redis outlives a crash as L3's copies do.
        if config.l3.enabled {
            cfg.pending_journal = Some(config.l3.data_dir.join("redis-bridge-pending"));
        }
        let tier = RedisTier::connect(cfg, clock)
            .await
            .map_err(|e| e.to_string())?;
        let hook = Arc::new(BridgeHook {
            tier: tier.clone(),
            cache: OnceLock::new(),
            subscriber: Mutex::new(None),
        });
        let attach_to = hook.clone();
        Ok(BuiltL2 {
            tier: Arc::new(tier),
            maintenance: hook,
            attach: Box::new(move |cache| {
                let _ = attach_to.cache.set(cache);
            }),
            maintenance_interval: Duration::from_millis(r.maintenance_interval_ms),
        })
    }
}

/// Connects the Redis bridge. An unreachable Redis is not an error (the bridge starts with
/// its circuit open and keeps probing); a refused password or a bad address is.
#[cfg(feature = "redis")]
pub(crate) async fn build(config: &NodeConfig, clock: Arc<dyn Clock>) -> Result<BuiltL2, String> {
    bridge::build(config, clock).await
}

/// Without the `redis` feature, asking for the bridge is a configuration error.
#[cfg(not(feature = "redis"))]
pub(crate) async fn build(_config: &NodeConfig, _clock: Arc<dyn Clock>) -> Result<BuiltL2, String> {
    Err("l2.redis.enabled is set but this build lacks the `redis` cargo feature".into())
}
