//! Read-only views for callers and exporters: stats snapshots and health.

use crate::memory::MemoryTier;
use crate::stats::{CacheStats, LatencySummary};
use crate::tier::{Layer, TierHealth};

/// One layer's counters and latency.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSnapshot {
    /// Which layer.
    pub layer: Layer,
    /// Lookups this layer answered.
    pub hits: u64,
    /// Lookups it could not answer.
    pub misses: u64,
    /// Entries written to it.
    pub sets: u64,
    /// Failed operations.
    pub errors: u64,
    /// Lookup latency (L1 sampled; see `stats::L1_LATENCY_SAMPLE_EVERY`).
    pub latency: LatencySummary,
}

/// L1's occupancy and its own counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Snapshot {
    /// Configured byte capacity.
    pub capacity_bytes: u64,
    /// Bytes charged to resident entries.
    pub resident_bytes: u64,
    /// Resident entries.
    pub entries: u64,
    /// Entries written.
    pub inserts: u64,
    /// Entries evicted by capacity.
    pub evictions: u64,
    /// Entries dropped at expiry.
    pub expirations: u64,
    /// Entries removed by invalidation.
    pub invalidations: u64,
    /// Writes too large for L1.
    pub rejected_too_large: u64,
}

/// Everything `Cache::stats` reports, shaped like the seeds' `get_detailed_stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsSnapshot {
    /// Lookups that found a value in some layer.
    pub hit_count: u64,
    /// Lookups that found nothing anywhere.
    pub miss_count: u64,
    /// `hit_count / (hit_count + miss_count)`, 0 before any lookup.
    pub hit_rate: f64,
    /// The configured layers, fastest first.
    pub layers: Vec<LayerSnapshot>,
    /// L1 occupancy, when L1 is configured.
    pub l1: Option<L1Snapshot>,
    /// Loader runs.
    pub loads: u64,
    /// Loader failures.
    pub load_errors: u64,
    /// `get_or_load` calls that waited on another caller's load.
    pub coalesced: u64,
    /// Stale values served after a loader failure.
    pub stale_served: u64,
    /// Writes refused by `max_ttl`.
    pub policy_violations: u64,
}

impl StatsSnapshot {
    /// The snapshot of `layer`, if configured.
    pub fn layer(&self, layer: Layer) -> Option<&LayerSnapshot> {
        self.layers.iter().find(|l| l.layer == layer)
    }

    pub(crate) fn collect(stats: &CacheStats, l1: Option<&MemoryTier>, present: [bool; 3]) -> Self {
        let layers: Vec<LayerSnapshot> = Layer::ALL
            .iter()
            .filter(|l| present[l.index()])
            .map(|&layer| {
                let s = stats.layer(layer);
                LayerSnapshot {
                    layer,
                    hits: s.hits.get(),
                    misses: s.misses.get(),
                    sets: s.sets.get(),
                    errors: s.errors.get(),
                    latency: s.latency.summary(),
                }
            })
            .collect();
        let hit_count: u64 = layers.iter().map(|l| l.hits).sum();
        // A lookup is a miss when it fell through every layer (counted once, at the bottom).
        let miss_count = stats.misses.get();
        let total = hit_count + miss_count;
        Self {
            hit_count,
            miss_count,
            hit_rate: if total == 0 {
                0.0
            } else {
                hit_count as f64 / total as f64
            },
            layers,
            l1: l1.map(|t| {
                let c = t.counters();
                L1Snapshot {
                    capacity_bytes: t.capacity_bytes(),
                    resident_bytes: t.resident_bytes(),
                    entries: t.entry_count(),
                    inserts: c.inserts.get(),
                    evictions: c.evictions.get(),
                    expirations: c.expirations.get(),
                    invalidations: c.invalidations.get(),
                    rejected_too_large: c.rejected_too_large.get(),
                }
            }),
            loads: stats.loads.get(),
            load_errors: stats.load_errors.get(),
            coalesced: stats.coalesced.get(),
            stale_served: stats.stale_served.get(),
            policy_violations: stats.policy_violations.get(),
        }
    }
}

/// The health of each configured layer.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheHealth {
    /// `(layer, health)`, fastest first.
    pub layers: Vec<(Layer, TierHealth)>,
}

impl CacheHealth {
    /// Whether every layer is serving.
    pub fn all_serving(&self) -> bool {
        self.layers.iter().all(|(_, h)| h.is_serving())
    }
}
