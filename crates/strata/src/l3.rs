//! Building L3 for a node: RocksDB when the `l3` feature is on, a clear error otherwise.

use std::sync::Arc;

use strata_core::{Clock, Tier};

#[cfg(feature = "l3")]
use crate::actors::tier_actor::LayerMetric;
use crate::actors::tier_actor::Maintenance;
use crate::config::NodeConfig;

/// L3's tier and its maintenance hook (the same object behind two interfaces).
pub(crate) struct BuiltL3 {
    pub(crate) tier: Arc<dyn Tier>,
    pub(crate) maintenance: Arc<dyn Maintenance>,
}

#[cfg(feature = "l3")]
mod rocks {
    use super::*;
    use strata_storage::{DiskTier, DiskTierConfig, SharedDiskTier};

    impl Maintenance for DiskTier {
        fn start(&self) -> Result<(), String> {
            self.open().map_err(|e| e.to_string())
        }

        fn maintain(&self) {
            if !self.is_open() {
                // A failed open (disk full, permissions) is retried every interval.
                let _ = self.open();
                return;
            }
            if let Err(e) = self.enforce_size() {
                tracing::warn!(error = %e, "L3 size enforcement failed");
            }
            self.check_health();
        }

        fn stop(&self) {
            self.close();
        }

        fn metrics(&self) -> Vec<LayerMetric> {
            let c = self.counters();
            let m = |name, help, counter, value| LayerMetric {
                name,
                help,
                counter,
                value,
            };
            vec![
                m(
                    "l3_corrupt_records",
                    "L3 records that failed their checksum (deleted)",
                    true,
                    c.corrupt_records.get(),
                ),
                m(
                    "l3_policy_drops",
                    "L3 records dropped for exceeding a lowered max_ttl",
                    true,
                    c.policy_drops.get(),
                ),
                m(
                    "l3_eviction_passes",
                    "L3 eviction passes to stay within capacity",
                    true,
                    c.eviction_passes.get(),
                ),
                m(
                    "l3_open_failures",
                    "Failed attempts to open L3",
                    true,
                    c.open_failures.get(),
                ),
                m(
                    "l3_live_bytes",
                    "L3 live data (SST files and memtables)",
                    false,
                    self.live_bytes().unwrap_or(0),
                ),
                m(
                    "l3_memory_bytes",
                    "Memory RocksDB holds for L3 (memtables, block cache, index and filter blocks)",
                    false,
                    self.memory_bytes().unwrap_or(0),
                ),
                m(
                    "l3_capacity_bytes",
                    "L3 configured capacity",
                    false,
                    self.capacity_bytes(),
                ),
            ]
        }
    }

    pub(super) fn build(config: &NodeConfig, clock: Arc<dyn Clock>) -> BuiltL3 {
        let tier = Arc::new(DiskTier::new(
            DiskTierConfig {
                path: config.l3.data_dir.clone(),
                capacity_bytes: config.l3.capacity_bytes,
                sync_writes: config.l3.sync_writes,
                policies: config.namespace_policies().into_iter().collect(),
                default_policy: config.namespace_defaults.to_policy(None),
            },
            clock,
        ));
        BuiltL3 {
            tier: Arc::new(SharedDiskTier(tier.clone())),
            maintenance: tier,
        }
    }
}

/// Builds L3 (closed; its actor opens it).
#[cfg(feature = "l3")]
pub(crate) fn build(config: &NodeConfig, clock: Arc<dyn Clock>) -> Result<BuiltL3, String> {
    Ok(rocks::build(config, clock))
}

/// Without the `l3` feature, asking for L3 is a configuration error, not a silent downgrade.
#[cfg(not(feature = "l3"))]
pub(crate) fn build(_config: &NodeConfig, _clock: Arc<dyn Clock>) -> Result<BuiltL3, String> {
    Err("l3.enabled is set but this build lacks the `l3` cargo feature".into())
}
