//! The Prometheus view of a node: a collector that reads the cache's counters on each scrape,
//! so the hot path pays nothing for the export.
//!
//! Names (with the registry's `strata_` prefix): `cache_hits_total{layer}`,
//! `cache_misses_total{layer}`, `cache_sets_total{layer}`, `cache_errors_total{layer}`,
//! `cache_lookup_latency_seconds{layer}` (histogram; L1 sampled), `l1_evictions_total`,
//! `l1_expirations_total`, `l1_resident_bytes`, `l1_capacity_bytes`, `l1_entries`,
//! `loads_total`, `load_errors_total`, `loads_coalesced_total`, `stale_served_total`,
//! `policy_violations_total`, `actor_restarts_total`, `layer_up{layer}`, `layer_state{layer}`,
//! and with L3:
//! `l3_corrupt_records_total`, `l3_policy_drops_total`, `l3_eviction_passes_total`,
//! `l3_open_failures_total`, `l3_write_failures_total`, `l3_reconciles_total`,
//! `l3_quarantined_total`, `l3_shed_writes_total`, `l3_tombstones`, `l3_untrusted`,
//! `l3_free_bytes`, `l3_live_bytes`, `l3_memory_bytes`, `l3_behind_bytes`, `l3_capacity_bytes`.

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use strata_core::{Cache, Layer, TierHealth};

use crate::actors::tier_actor::Maintenance;
use crate::status::NodeStatus;

/// Upper bounds of the latency histogram buckets, in seconds: 100 ns to 1 s.
const LATENCY_BUCKETS_S: [f64; 16] = [
    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 1e-1,
    0.5, 1.0,
];

pub(crate) struct CacheCollector {
    cache: Cache,
    status: Arc<NodeStatus>,
    layer_metrics: Vec<Arc<dyn Maintenance>>,
}

impl std::fmt::Debug for CacheCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheCollector").finish_non_exhaustive()
    }
}

impl CacheCollector {
    pub(crate) fn new(
        cache: Cache,
        status: Arc<NodeStatus>,
        layer_metrics: Vec<Arc<dyn Maintenance>>,
    ) -> Self {
        Self {
            cache,
            status,
            layer_metrics,
        }
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn per_layer(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Layer, u64)],
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (layer, v) in rows {
        let labels: [(Cow<'static, str>, Cow<'static, str>); 1] =
            [(Cow::Borrowed("layer"), Cow::Borrowed(layer.as_str()))];
        ConstCounter::new(*v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for CacheCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.cache.stats();
        let rows = |f: fn(&strata_core::LayerSnapshot) -> u64| -> Vec<(Layer, u64)> {
            s.layers.iter().map(|l| (l.layer, f(l))).collect()
        };
        per_layer(
            &mut enc,
            "cache_hits",
            "Lookups answered by the layer",
            &rows(|l| l.hits),
        )?;
        per_layer(
            &mut enc,
            "cache_misses",
            "Lookups the layer could not answer",
            &rows(|l| l.misses),
        )?;
        per_layer(
            &mut enc,
            "cache_sets",
            "Entries written to the layer",
            &rows(|l| l.sets),
        )?;
        per_layer(
            &mut enc,
            "cache_errors",
            "Failed layer operations",
            &rows(|l| l.errors),
        )?;

        let mut family = enc.encode_descriptor(
            "cache_lookup_latency_seconds",
            "Lookup latency per layer (L1 hits sampled)",
            None,
            MetricType::Histogram,
        )?;
        for l in &s.layers {
            let h = self.cache.raw_stats().layer(l.layer).latency.merged();
            let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_S
                .iter()
                .map(|&le| (le, h.count_between(0, (le * 1e9) as u64)))
                .collect();
            buckets.push((f64::INFINITY, h.len()));
            let sum_s = h.mean() * h.len() as f64 / 1e9;
            let labels: [(Cow<'static, str>, Cow<'static, str>); 1] =
                [(Cow::Borrowed("layer"), Cow::Borrowed(l.layer.as_str()))];
            family
                .encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum_s,
                    h.len(),
                    &buckets,
                    None,
                )?;
        }

        if let Some(l1) = s.l1 {
            counter(
                &mut enc,
                "l1_evictions",
                "L1 entries evicted by capacity",
                l1.evictions,
            )?;
            counter(
                &mut enc,
                "l1_expirations",
                "L1 entries dropped at expiry",
                l1.expirations,
            )?;
            gauge(
                &mut enc,
                "l1_resident_bytes",
                "Bytes charged to L1 entries",
                l1.resident_bytes as i64,
            )?;
            gauge(
                &mut enc,
                "l1_capacity_bytes",
                "L1 byte capacity",
                l1.capacity_bytes as i64,
            )?;
            gauge(
                &mut enc,
                "l1_entries",
                "Entries resident in L1",
                l1.entries as i64,
            )?;
        }
        counter(&mut enc, "loads", "Loader runs by get_or_load", s.loads)?;
        counter(&mut enc, "load_errors", "Loader failures", s.load_errors)?;
        counter(
            &mut enc,
            "loads_coalesced",
            "get_or_load calls that waited on another's load",
            s.coalesced,
        )?;
        counter(
            &mut enc,
            "stale_served",
            "Stale values served after a loader failure",
            s.stale_served,
        )?;
        counter(
            &mut enc,
            "policy_violations",
            "Writes refused by a namespace max_ttl",
            s.policy_violations,
        )?;
        counter(
            &mut enc,
            "actor_restarts",
            "Layer actor restarts by the supervisor",
            self.status.restarts_total(),
        )?;

        let layers = self.cache.health().layers;
        let mut up = enc.encode_descriptor(
            "layer_up",
            "1 when the layer is up, 0 when it is degraded or down (/health says why)",
            None,
            MetricType::Gauge,
        )?;
        for (layer, health) in &layers {
            let labels: [(Cow<'static, str>, Cow<'static, str>); 1] =
                [(Cow::Borrowed("layer"), Cow::Borrowed(layer.as_str()))];
            ConstGauge::new(i64::from(*health == TierHealth::Up))
                .encode(up.encode_family(&labels)?)?;
        }
        let mut state = enc.encode_descriptor(
            "layer_state",
            "0 up, 1 degraded (serving, with a problem), 2 down (not serving)",
            None,
            MetricType::Gauge,
        )?;
        for (layer, health) in &layers {
            let labels: [(Cow<'static, str>, Cow<'static, str>); 1] =
                [(Cow::Borrowed("layer"), Cow::Borrowed(layer.as_str()))];
            let v = match health {
                TierHealth::Up => 0,
                TierHealth::Degraded(_) => 1,
                TierHealth::Down(_) => 2,
            };
            ConstGauge::new(v).encode(state.encode_family(&labels)?)?;
        }
        for m in self.layer_metrics.iter().flat_map(|l| l.metrics()) {
            if m.counter {
                counter(&mut enc, m.name, m.help, m.value)?;
            } else {
                gauge(&mut enc, m.name, m.help, m.value as i64)?;
            }
        }
        Ok(())
    }
}
