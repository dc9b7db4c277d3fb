//! The server's own metrics, exported in the node's Prometheus registry next to the cache's:
//! `strata_server_connections` (gauge), `strata_server_accepted_connections_total`,
//! `strata_auth_failures_total`, `strata_server_acl_denied_total`,
//! `strata_server_admin_denied_total`, `strata_server_admin_connections_closed_total`,
//! `strata_server_tls_handshake_failures_total`,
//! `strata_server_rejected_connections_total`, `strata_server_protocol_errors_total`,
//! `strata_server_commands_total{command}` and `strata_server_command_errors_total{command}`.
//! Counters are striped per thread, so the hot path never contends on a shared cache line.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use strata::Node;
use strata_core::stats::Counter;

use crate::commands::COMMANDS;
use crate::state::Shared;

/// Counters of one server.
#[derive(Debug)]
pub struct ServerMetrics {
    /// Connections accepted since start.
    pub connections_total: Counter,
    /// Connections refused by `maxclients`.
    pub rejected_connections: Counter,
    /// Connections closed for a protocol error.
    pub protocol_errors: Counter,
    /// Connections closed by the idle timeout.
    pub idle_closed: Counter,
    /// Failed `AUTH` (and `HELLO … AUTH`) attempts.
    pub auth_failures: Counter,
    /// Commands refused with `NOPERM`.
    pub acl_denied: Counter,
    /// Admin requests refused: no or a wrong credential, or a cross-site request.
    pub admin_denied: Counter,
    /// TLS handshakes that failed (RESP and admin).
    pub tls_failures: Counter,
    /// Admin connections closed idle or to make room for a newer one
    /// ([`crate::admin_conn`]).
    pub admin_closed: Arc<Counter>,
    /// Clients disconnected for a reply over `client_output_buffer_limit_bytes`.
    pub output_limit_closed: Counter,
    /// Clients disconnected while the input of all clients was over
    /// `max_input_bytes_total`.
    pub input_limit_closed: Counter,
    /// `SELECT name` refused by `max_namespaces`.
    pub namespace_refusals: Counter,
    /// Commands with an expiry refused (`TRYAGAIN`) after waiting a tenth of it for their
    /// key's lock on this node, in a cluster.
    pub key_lock_waits_refused: Counter,
    /// Calls per command, indexed like [`COMMANDS`]; the last slot counts unknown commands.
    pub calls: Box<[Counter]>,
    /// Error replies per command, indexed like `calls`.
    pub errors: Box<[Counter]>,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        let n = COMMANDS.len() + 1;
        Self {
            connections_total: Counter::default(),
            rejected_connections: Counter::default(),
            protocol_errors: Counter::default(),
            idle_closed: Counter::default(),
            auth_failures: Counter::default(),
            acl_denied: Counter::default(),
            admin_denied: Counter::default(),
            admin_closed: Arc::default(),
            tls_failures: Counter::default(),
            output_limit_closed: Counter::default(),
            input_limit_closed: Counter::default(),
            namespace_refusals: Counter::default(),
            key_lock_waits_refused: Counter::default(),
            calls: (0..n).map(|_| Counter::default()).collect(),
            errors: (0..n).map(|_| Counter::default()).collect(),
        }
    }
}

impl ServerMetrics {
    /// Commands processed since start.
    pub fn total_commands(&self) -> u64 {
        self.calls.iter().map(Counter::get).sum()
    }
}

/// The process's resident set size (Linux `/proc/self/status`), for `INFO memory` and
/// `/metrics`.
pub fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

struct ServerCollector(Arc<Shared>);

impl std::fmt::Debug for ServerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerCollector")
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn per_command(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[Counter],
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (i, c) in values.iter().enumerate() {
        let v = c.get();
        if v == 0 {
            continue;
        }
        let command = COMMANDS.get(i).map_or("unknown", |s| s.name);
        let labels = [("command", command.to_ascii_lowercase())];
        ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for ServerCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let m = &s.metrics;
        let g = ConstGauge::new(s.connection_count() as i64);
        g.encode(enc.encode_descriptor(
            "server_connections",
            "Open client connections",
            None,
            g.metric_type(),
        )?)?;
        for (name, help, v) in [
            (
                "server_client_input_bytes",
                "Client memory all connections hold: unparsed input, queued transactions, watched keys, subscriptions and large unsent replies (budget: server.max_input_bytes_total)",
                s.client_memory.total() as i64,
            ),
            (
                "process_resident_bytes",
                "The process's resident set size",
                process_rss_bytes().unwrap_or(0) as i64,
            ),
            (
                "namespaces",
                "Namespaces in this node's table (configured, numbered databases, and those clients created and have not emptied)",
                s.cache.namespace_count() as i64,
            ),
            (
                "server_tracking_clients",
                "Clients with CLIENT TRACKING on",
                s.tracking.client_count() as i64,
            ),
            (
                "server_tracking_keys",
                "Keys in the client-tracking table (bound: server.tracking_table_max_keys)",
                s.tracking.key_count() as i64,
            ),
            (
                "server_tracking_bytes",
                "Bytes the client-tracking table's records are charged (bound: server.tracking_table_max_bytes)",
                s.tracking.bytes() as i64,
            ),
        ] {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        counter(
            &mut enc,
            "server_accepted_connections",
            "Client connections accepted",
            m.connections_total.get(),
        )?;
        counter(
            &mut enc,
            "server_rejected_connections",
            "Connections refused because maxclients was reached",
            m.rejected_connections.get(),
        )?;
        counter(
            &mut enc,
            "server_protocol_errors",
            "Connections closed after a protocol error",
            m.protocol_errors.get(),
        )?;
        counter(
            &mut enc,
            "server_idle_closed",
            "Connections closed by the idle timeout",
            m.idle_closed.get(),
        )?;
        for (name, help, v) in [
            (
                "auth_failures",
                "Failed AUTH attempts (RESP) and refused admin credentials",
                m.auth_failures.get(),
            ),
            (
                "server_acl_denied",
                "Commands refused with NOPERM",
                m.acl_denied.get(),
            ),
            (
                "server_admin_denied",
                "Admin requests refused: missing or wrong credential, or cross-site",
                m.admin_denied.get(),
            ),
            (
                "server_admin_connections_closed",
                "Admin connections closed idle or to make room for a newer one (at most 128 are open)",
                m.admin_closed.get(),
            ),
            (
                "server_tls_handshake_failures",
                "TLS handshakes that failed on the RESP or admin port",
                m.tls_failures.get(),
            ),
            (
                "server_output_limit_closed",
                "Clients disconnected for a reply over server.client_output_buffer_limit_bytes",
                m.output_limit_closed.get(),
            ),
            (
                "server_input_limit_closed",
                "Clients disconnected while all clients' input was over server.max_input_bytes_total",
                m.input_limit_closed.get(),
            ),
            (
                "server_namespace_refusals",
                "SELECT name refused by server.max_namespaces",
                m.namespace_refusals.get(),
            ),
            (
                "server_key_lock_waits_refused",
                "Commands with an expiry refused (TRYAGAIN, nothing applied) after waiting a tenth of it for their key's lock on this node behind another command of the key (cluster only)",
                m.key_lock_waits_refused.get(),
            ),
            (
                "server_pubsub_limit_closed",
                "Subscribers disconnected for falling server.pubsub_output_buffer_limit_bytes behind",
                s.pubsub
                    .closed_over_limit
                    .load(std::sync::atomic::Ordering::Relaxed) as u64,
            ),
            (
                "server_tracking_invalidations",
                "Invalidation pushes queued for tracking clients (flushes included)",
                s.tracking
                    .stats
                    .invalidations
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "server_tracking_evicted_keys",
                "Tracked keys invalidated early because the tracking table was full",
                s.tracking
                    .stats
                    .evicted
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "server_tracking_expired_keys",
                "Tracked keys invalidated because their expiry passed",
                s.tracking
                    .stats
                    .expired
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "server_tracking_flushes",
                "Flushes sent to every tracking client (tag and namespace invalidations, changes possibly missed)",
                s.tracking
                    .stats
                    .flushes
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "namespaces_reclaimed",
                "Empty namespaces whose table slot was given back",
                s.cache.namespaces_reclaimed(),
            ),
        ] {
            counter(&mut enc, name, help, v)?;
        }
        per_command(
            &mut enc,
            "server_commands",
            "Commands processed, by command",
            &m.calls,
        )?;
        per_command(
            &mut enc,
            "server_command_errors",
            "Error replies, by command",
            &m.errors,
        )?;
        Ok(())
    }
}

/// Adds the server's collector to the node's registry.
pub fn register(node: &Node, shared: &Arc<Shared>) {
    node.registry()
        .lock()
        .register_collector(Box::new(ServerCollector(shared.clone())));
}
