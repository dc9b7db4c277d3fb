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

    /// How often L3 is reopened after a background error while its file system stays below
    /// the free-space watermark ([`DiskTier::reopen_due`]).
    const REOPEN_BELOW_WATERMARK: std::time::Duration = std::time::Duration::from_secs(5);

    impl Maintenance for DiskTier {
        fn start(&self) -> Result<(), String> {
            self.open().map_err(|e| e.to_string())
        }

        fn maintain(&self) {
            if !self.is_open() {
                // A failed open (disk full, permissions) is retried every interval; the open
                // applies what failed meanwhile before L3 serves.
                let _ = self.open();
                return;
            }
            self.check_health();
            if self.is_shedding()
                && let Err(e) = self.enforce_size()
            {
                tracing::warn!(error = %e, "L3 eviction below the free-space watermark failed");
            }
            if self.background_errors() > 0 && self.reopen_due(REOPEN_BELOW_WATERMARK) {
                // RocksDB's background error state lasts until the database is reopened:
                // with room on the disk again, that is now; below the watermark, now and
                // then (only the reopen deletes the files a flush or an eviction freed).
                if let Err(e) = self.reopen() {
                    tracing::warn!(error = %e, "L3 reopen after a background error failed");
                }
                return;
            }
            if self.fault_summary() != Default::default()
                && let Err(e) = self.reconcile()
            {
                // RocksDB refuses every write after a background error until it is opened
                // again: at once when the disk has room, now and then below the watermark.
                tracing::debug!(error = %e, "L3 cannot apply its outstanding faults yet");
                if self.reopen_due(REOPEN_BELOW_WATERMARK) {
                    let _ = self.reopen();
                }
                return;
            }
            if let Err(e) = self.enforce_size() {
                tracing::warn!(error = %e, "L3 size enforcement failed");
            }
            // DBSIZE reads L3's key counts: after an open or an eviction pass they are
            // counted again here (until then, DBSIZE lists the keys).
            if let Err(e) = self.count_keys_if_unknown() {
                tracing::debug!(error = %e, "L3 could not count its keys yet");
            }
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
                    "l3_write_failures",
                    "L3 writes and deletes RocksDB refused (each tombstoned until applied)",
                    true,
                    c.write_failures.get(),
                ),
                m(
                    "l3_reconciles",
                    "Times L3 applied the changes it had failed to apply",
                    true,
                    c.reconciles.get(),
                ),
                m(
                    "l3_quarantined",
                    "L3 databases moved aside because RocksDB found them corrupt at open",
                    true,
                    c.quarantined.get(),
                ),
                m(
                    "l3_shed_writes",
                    "Values not stored in L3 because its file system was below the free-space watermark",
                    true,
                    c.shed_writes.get(),
                ),
                m(
                    "l3_writer_reads",
                    "Records L3's writer read to learn a key's stored version (keys it had not written recently)",
                    true,
                    c.writer_reads.get(),
                ),
                m(
                    "l3_tombstones",
                    "Keys whose change L3 failed to apply (they miss in L3 until applied)",
                    false,
                    self.fault_summary().tombstones as u64,
                ),
                m(
                    "l3_untrusted",
                    "1 while L3 is off the read path until it is emptied",
                    false,
                    u64::from(self.fault_summary().untrusted.is_some()),
                ),
                m(
                    "l3_free_bytes",
                    "Free bytes on L3's file system at the last check",
                    false,
                    self.free_bytes().unwrap_or(0),
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
                    "l3_behind_bytes",
                    "Bytes of writes acknowledged and not yet stored in L3 (l3.write_behind)",
                    false,
                    self.behind_bytes() as u64,
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
                write_behind: config.l3.write_behind,
                write_behind_ms: config.l3.write_behind_ms,
                min_free_bytes: config.l3.min_free_bytes,
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
