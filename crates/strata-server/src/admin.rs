//! The admin HTTP port.
//!
//! | route | what |
//! |---|---|
//! | `GET /metrics` | Prometheus/OpenMetrics text: the node's cache metrics and the server's |
//! | `GET /health` | per-layer status as JSON; 200 when ready, 503 when not |
//! | `GET /stats` | hits, misses, hit rate and per-layer figures as JSON |
//! | `GET /status` | identity, addresses, uptime, connections and health, as JSON |
//! | `GET /cluster` | members and their state, the ring version, per-peer RPC latency, coherence counters (404 when not in a cluster) |
//! | `POST /invalidate?ns=NS&key=K` (or `pattern=GLOB`, `tag=TAG`) | removes on every layer |

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use strata::Node;
use strata_core::TierHealth;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::state::Shared;

#[derive(Clone)]
struct AdminState {
    node: Arc<Node>,
    shared: Arc<Shared>,
}

/// Serves the admin routes until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/stats", get(stats))
        .route("/status", get(status))
        .route("/cluster", get(cluster))
        .route("/invalidate", post(invalidate))
        .with_state(AdminState { node, shared });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            crate::state::stopped(&mut stop).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin server failed");
    }
}

async fn metrics(State(st): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.node.encode_metrics(),
    )
        .into_response()
}

fn health_json(node: &Node) -> (bool, Value) {
    let h = node.health();
    let layers: Vec<Value> = h
        .layers
        .iter()
        .map(|l| {
            let (state, reason) = match &l.tier {
                TierHealth::Up => ("up", None),
                TierHealth::Degraded(r) => ("degraded", Some(r.clone())),
                TierHealth::Down(r) => ("down", Some(r.clone())),
            };
            json!({
                "layer": l.layer.to_string(),
                "state": state,
                "reason": reason,
                "actor": format!("{:?}", l.actor),
            })
        })
        .collect();
    (
        h.ready,
        json!({
            "ready": h.ready,
            "layers": layers,
            "restarts_total": h.restarts_total,
            "escalation": h.escalation,
        }),
    )
}

async fn health(State(st): State<AdminState>) -> Response {
    let (ready, body) = health_json(&st.node);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

/// The `/stats` document (also `STRATA.STATS`), shaped like the seeds' `get_detailed_stats`:
/// top-level hit and miss counts and rate, then per-layer figures under `cache_manager`.
pub fn stats_json(shared: &Shared) -> Value {
    let s = shared.cache.stats();
    let mut manager = serde_json::Map::new();
    let mut total_sets = 0;
    for l in &s.layers {
        let name = l.layer.to_string().to_lowercase();
        manager.insert(format!("{name}_hits"), json!(l.hits));
        manager.insert(format!("{name}_misses"), json!(l.misses));
        manager.insert(format!("{name}_sets"), json!(l.sets));
        manager.insert(format!("{name}_errors"), json!(l.errors));
        manager.insert(
            format!("{name}_latency_us"),
            json!({
                "samples": l.latency.samples,
                "p50": l.latency.p50_us,
                "p95": l.latency.p95_us,
                "p99": l.latency.p99_us,
                "max": l.latency.max_us,
            }),
        );
        total_sets = total_sets.max(l.sets);
    }
    manager.insert("total_sets".into(), json!(total_sets));
    manager.insert("overall_hit_rate".into(), json!(s.hit_rate));
    let l1 = s.l1.as_ref().map(|l| {
        json!({
            "capacity_bytes": l.capacity_bytes,
            "resident_bytes": l.resident_bytes,
            "entries": l.entries,
            "evictions": l.evictions,
            "expirations": l.expirations,
            "invalidations": l.invalidations,
        })
    });
    json!({
        "hit_count": s.hit_count,
        "miss_count": s.miss_count,
        "hit_rate": s.hit_rate,
        "cache_manager": manager,
        "l1": l1,
        "loads": s.loads,
        "load_errors": s.load_errors,
        "policy_violations": s.policy_violations,
        "server": {
            "connections": shared.connection_count(),
            "connections_total": shared.metrics.connections_total.get(),
            "commands_total": shared.metrics.total_commands(),
        },
    })
}

async fn stats(State(st): State<AdminState>) -> Response {
    axum::Json(stats_json(&st.shared)).into_response()
}

async fn status(State(st): State<AdminState>) -> Response {
    let (ready, health) = health_json(&st.node);
    let sh = &st.shared;
    axum::Json(json!({
        "node": sh.config.node.name,
        "version": env!("CARGO_PKG_VERSION"),
        "ready": ready,
        "resp_addr": sh.resp_addr.to_string(),
        "uptime_secs": sh.started.elapsed().as_secs(),
        "connections": sh.connection_count(),
        "commands_total": sh.metrics.total_commands(),
        "l3_enabled": sh.config.l3.enabled,
        "health": health,
        "cluster": st.node.cluster_status(),
    }))
    .into_response()
}

async fn cluster(State(st): State<AdminState>) -> Response {
    match st.node.cluster_status() {
        Some(c) => axum::Json(c).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "this node is not a cluster member" })),
        )
            .into_response(),
    }
}

async fn invalidate(
    State(st): State<AdminState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let bad =
        |msg: &str| (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": msg }))).into_response();
    let Some(ns) = q.get("ns") else {
        return bad("missing ns");
    };
    let cache = &st.shared.cache;
    let result = match (q.get("key"), q.get("pattern"), q.get("tag")) {
        (Some(k), None, None) => cache.invalidate(ns, k.as_bytes()).await.map(u64::from),
        (None, Some(p), None) => cache.invalidate_pattern(ns, p.as_bytes()).await,
        (None, None, Some(t)) => cache.invalidate_tag(ns, t.as_bytes()).await,
        _ => return bad("give exactly one of key, pattern, tag"),
    };
    match result {
        Ok(n) => axum::Json(json!({ "removed": n })).into_response(),
        Err(e) => bad(&e.to_string()),
    }
}
