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
//! | `GET /namespaces` | every namespace the node knows of, with its policy |
//! | `POST /namespaces/count` | the same with the keys L1 and L3 hold in each (one count at a time) |
//! | `GET /`, `GET /console.js` | the web console: one page, built into the binary |
//!
//! Every request passes `guard` first: a cross-site request (an `Origin` other than this
//! host, or `Sec-Fetch-Site: cross-site`/`same-site`) is refused with 403 whatever it
//! carries; once any credential is configured (`server.admin_token`, `server.requirepass`,
//! an admin ACL user), every route needs one (`Authorization: Bearer TOKEN`, the
//! `requirepass` as a bearer token, or HTTP Basic with an admin user), except `/metrics` and
//! `/health` when `server.admin_open_reads` is set. Actions are POST-only. A refused
//! credential is counted (`strata_server_admin_denied_total`), logged (a line a second at
//! most: [`crate::guard::LogLimit`]), and answered after a short delay and its turn among
//! the node's failed credentials ([`crate::guard::AuthThrottle`]). A request with a valid
//! credential marks its connection kept ([`AdminConn`]).

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

use crate::admin_conn::{AdminConn, Bounded};
use crate::guard::{LogLimit, printable};

/// Longest part of a refused request's path written to the log.
const LOGGED_PATH_BYTES: usize = 128;
use crate::state::Shared;

#[derive(Clone)]
struct AdminState {
    node: Arc<Node>,
    shared: Arc<Shared>,
}

/// Serves the admin routes until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    node: Arc<Node>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let guard_state = AdminState {
        node: node.clone(),
        shared: shared.clone(),
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/stats", get(stats))
        .route("/status", get(status))
        .route("/cluster", get(cluster))
        .route("/invalidate", post(invalidate))
        .route("/namespaces", get(namespaces))
        .route("/namespaces/count", post(count_keys))
        .route("/", get(console_page))
        .route("/console.js", get(console_script))
        .layer(axum::middleware::from_fn_with_state(guard_state, guard))
        .with_state(AdminState {
            node,
            shared: shared.clone(),
        });
    let stopped = async move {
        crate::state::stopped(&mut stop).await;
    };
    let result = match tls {
        None => {
            axum::serve(
                Bounded::new(listener, shared.metrics.admin_closed.clone()),
                app.into_make_service_with_connect_info::<AdminConn>(),
            )
            .with_graceful_shutdown(stopped)
            .await
        }
        Some(acceptor) => match crate::tls::TlsListener::new(listener, acceptor, shared.clone()) {
            Ok(l) => {
                axum::serve(
                    Bounded::new(l, shared.metrics.admin_closed.clone()),
                    app.into_make_service_with_connect_info::<AdminConn>(),
                )
                .with_graceful_shutdown(stopped)
                .await
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "admin server failed");
    }
}

/// How long a refused credential waits before its answer (online guessing goes slowly).
const DENY_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// The console's files: static, holding no data (the page reads everything through the
/// other routes, with the credential its user types), so they need none themselves.
fn open_static(path: &str) -> bool {
    matches!(path, "/" | "/console.js")
}

/// The console's security headers: nothing loaded from elsewhere, never framed (its
/// actions cannot be clickjacked), no type sniffing.
const CONSOLE_HEADERS: [(header::HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::CACHE_CONTROL, "no-store"),
];

/// One of the console's files, with its security headers.
fn console_file(content_type: &'static str, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    r.headers_mut().extend(
        CONSOLE_HEADERS
            .iter()
            .map(|(k, v)| (k.clone(), header::HeaderValue::from_static(v))),
    );
    r
}

async fn console_page() -> Response {
    console_file(
        "text/html; charset=utf-8",
        include_str!("console/index.html"),
    )
}

async fn console_script() -> Response {
    console_file(
        "text/javascript; charset=utf-8",
        include_str!("console/console.js"),
    )
}

/// Most keys `POST /namespaces/count` counts per namespace and layer.
const KEY_COUNT_CAP: usize = 1_000_000;
/// Keys read per page while counting: the L1 index's shard locks are held for one page.
const KEY_COUNT_PAGE: usize = 10_000;
/// Whether a count is running: one at a time (a second is answered 429).
static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The namespace's policy as JSON.
fn policy_json(cache: &strata_core::Cache, name: &str) -> Value {
    let p = cache.policy(name);
    json!({
        "name": name,
        "default_ttl_ms": p.default_ttl.map(|d| d.as_millis() as u64),
        "max_ttl_ms": p.max_ttl.map(|d| d.as_millis() as u64),
        "l1_share": p.l1_share,
        "use_l3": p.use_l3,
        "compression": format!("{:?}", p.compression).to_lowercase(),
    })
}

/// Every namespace the node knows of (configured, written or held in a layer), with its
/// policy. Behind the Redis bridge this scans Redis's keyspace for names: the console asks
/// when it opens and when told to, not on every refresh.
async fn namespaces(State(st): State<AdminState>) -> Response {
    let cache = &st.shared.cache;
    let list: Vec<Value> = cache
        .namespaces()
        .await
        .iter()
        .map(|n| policy_json(cache, n))
        .collect();
    axum::Json(list).into_response()
}

/// The keys `layer` holds in `namespace`, counted page by page up to [`KEY_COUNT_CAP`]
/// (`None` past it, or when the layer cannot list).
async fn count_layer(
    cache: &strata_core::Cache,
    layer: strata_core::Layer,
    namespace: &str,
) -> Option<usize> {
    use strata_core::scan::ScanFrom;
    let mut n = 0;
    let mut last: Option<bytes::Bytes> = None;
    loop {
        let from = ScanFrom::resume(last.as_deref());
        let page = match layer {
            strata_core::Layer::L1 => cache.l1()?.scan_keys_sync(namespace, from, KEY_COUNT_PAGE),
            _ => (*cache.tier(layer)?)
                .scan_keys(namespace, from, KEY_COUNT_PAGE)
                .await
                .ok()?,
        };
        n += page.len();
        if page.len() < KEY_COUNT_PAGE {
            return Some(n);
        }
        if n >= KEY_COUNT_CAP {
            return None;
        }
        last = page.last().cloned();
        // Other work gets the thread between pages.
        tokio::task::yield_now().await;
    }
}

/// `POST /namespaces/count`: each namespace's policy with the keys L1 and L3 hold in it
/// (`l1_keys`, `l3_keys`; null past [`KEY_COUNT_CAP`] or for a layer the node lacks). A pass
/// over every key, page by page; one count at a time (429 while one runs); a POST, so a page
/// elsewhere cannot start one (the cross-site check refuses it).
async fn count_keys(State(st): State<AdminState>) -> Response {
    use std::sync::atomic::Ordering;
    if COUNTING.swap(true, Ordering::AcqRel) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({ "error": "a count is already running" })),
        )
            .into_response();
    }
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            COUNTING.store(false, std::sync::atomic::Ordering::Release);
        }
    }
    let _done = Done;
    let cache = &st.shared.cache;
    let mut list = Vec::new();
    for name in cache.namespaces().await {
        let mut v = policy_json(cache, &name);
        v["l1_keys"] = json!(count_layer(cache, strata_core::Layer::L1, &name).await);
        v["l3_keys"] = json!(count_layer(cache, strata_core::Layer::L3, &name).await);
        list.push(v);
    }
    axum::Json(list).into_response()
}

/// Routes that only read, which `server.admin_open_reads` may leave open.
fn open_read(path: &str) -> bool {
    matches!(path, "/metrics" | "/health")
}

/// Refuses cross-site requests and requests without a valid credential (see the module
/// documentation). Every answer, a refusal or not, says `nosniff`: a JSON answer holding
/// a key or a namespace a client chose is never read by a browser as a page or a script.
async fn guard(
    st: State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut r = checked(st, req, next).await;
    r.headers_mut()
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(header::HeaderValue::from_static("nosniff"));
    r
}

/// [`guard`]'s checks.
async fn checked(
    State(st): State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Refusals are logged a line a second each (with the count left out) and their paths
    // cut and escaped: a client without any credential wrote 646 MB of log in 6 s through
    // them (review, 2026-12-06).
    static HOST_LOG: LogLimit = LogLimit::new();
    static CROSS_LOG: LogLimit = LogLimit::new();
    static CREDENTIAL_LOG: LogLimit = LogLimit::new();
    let headers = req.headers();
    let hosts = &st.shared.config.server.admin_hosts;
    // An absolute-form target (`GET http://host/path`) names the host a proxy or server
    // goes by in place of `Host` (RFC 9112 §3.2.2): it is checked as `Host` is.
    let target_allowed = req
        .uri()
        .authority()
        .is_none_or(|a| name_allowed(a.as_str(), hosts));
    if !target_allowed || !host_allowed(headers, hosts) {
        st.shared.metrics.admin_denied.incr();
        if let Some(left_out) = HOST_LOG.admit() {
            tracing::warn!(path = %logged_path(&req), others_not_logged = left_out, "admin request refused: Host is not an address of this node");
        }
        return (
            StatusCode::MISDIRECTED_REQUEST,
            axum::Json(json!({
                "error": "Host must be an IP address, localhost, or a name in server.admin_hosts"
            })),
        )
            .into_response();
    }
    // A link to the console from elsewhere (another member's console, a wiki) is a
    // navigation: its files hold no data, so it may load them; everything else is checked.
    let navigation = open_static(req.uri().path())
        && matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        )
        && headers
            .get("sec-fetch-mode")
            .is_some_and(|m| m.as_bytes() == b"navigate");
    if let Some(why) = cross_site(headers).filter(|_| !navigation) {
        st.shared.metrics.admin_denied.incr();
        if let Some(left_out) = CROSS_LOG.admit() {
            tracing::warn!(path = %logged_path(&req), why, others_not_logged = left_out, "admin request refused: cross-site");
        }
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({ "error": format!("cross-site request refused: {why}") })),
        )
            .into_response();
    }
    let cfg = &st.shared.config;
    // A `requirepass` set at run time (`CONFIG SET`) closes the port as one set at start.
    let needs_credential = (cfg.admin_auth_configured() || st.shared.requirepass.read().is_some())
        && !open_static(req.uri().path())
        && !(cfg.server.admin_open_reads && open_read(req.uri().path()));
    if needs_credential {
        match credential_ok(&st.shared, headers) {
            Ok(()) => {
                if let Some(axum::extract::ConnectInfo(conn)) =
                    req.extensions()
                        .get::<axum::extract::ConnectInfo<AdminConn>>()
                {
                    conn.keep();
                }
            }
            Err(why) => {
                st.shared.metrics.admin_denied.incr();
                st.shared.metrics.auth_failures.incr();
                if let Some(left_out) = CREDENTIAL_LOG.admit() {
                    tracing::warn!(path = %logged_path(&req), why, others_not_logged = left_out, "admin request refused: credential");
                }
                // Failures take turns node-wide: 120 connections guessed 600 a second with
                // a delay per request (review, 2026-12-06).
                tokio::time::sleep(st.shared.auth_throttle.wait(DENY_DELAY)).await;
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer realm=\"strata\"")],
                    axum::Json(json!({ "error": why })),
                )
                    .into_response();
            }
        }
    }
    next.run(req).await
}

/// A request's path as a log field: cut and escaped ([`printable`]).
fn logged_path(req: &axum::extract::Request) -> String {
    printable(req.uri().path(), LOGGED_PATH_BYTES)
}

/// Whether the `Host` header names this node as an address (an IP literal or `localhost`)
/// or as one of `server.admin_hosts`. A DNS-rebinding page sends its own domain as `Host`
/// (and as `Origin`, so the cross-site check alone cannot see it): refused here.
fn host_allowed(headers: &header::HeaderMap, extra: &[String]) -> bool {
    // Two `Host` headers name two hosts: which one a proxy in front believed is unknown.
    if headers.get_all(header::HOST).iter().count() != 1 {
        return false;
    }
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| name_allowed(host, extra))
}

/// Whether `host` (`name`, `name:port`, `[v6]` or `[v6]:port`) is an IP literal,
/// `localhost` or one of `extra`.
fn name_allowed(host: &str, extra: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`, nothing else after the bracket (`[::1]evil.com` is not
        // an address of this node).
        Some(v6) => match v6.split_once(']') {
            Some((addr, "")) => addr,
            Some((addr, port))
                if port
                    .strip_prefix(':')
                    .is_some_and(|p| p.parse::<u16>().is_ok()) =>
            {
                addr
            }
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || extra.iter().any(|e| e.eq_ignore_ascii_case(name))
}

/// Why a request looks cross-site, if it does: a browser sends `Sec-Fetch-Site` and, on
/// POST, `Origin`; command-line clients send neither.
fn cross_site(headers: &header::HeaderMap) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.as_bytes();
        if site != b"same-origin" && site != b"none" {
            return Some("Sec-Fetch-Site is not same-origin");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).map(|h| h.as_bytes());
        let origin = origin.as_bytes();
        let origin_host = origin
            .strip_prefix(b"http://")
            .or_else(|| origin.strip_prefix(b"https://"));
        if origin_host.is_none() || origin_host != host {
            return Some("Origin is not this host");
        }
    }
    None
}

/// Checks the `Authorization` header: a bearer token (the admin token or `requirepass`) or
/// Basic credentials of an enabled admin user, every comparison in constant time.
fn credential_ok(
    shared: &crate::state::Shared,
    headers: &header::HeaderMap,
) -> Result<(), &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("credential required (Authorization: Bearer TOKEN)");
    };
    let value = value.as_bytes();
    if let Some(token) = value.strip_prefix(b"Bearer ") {
        let mut ok = false;
        if let Some(t) = &shared.config.server.admin_token {
            ok |= crate::acl::ct_eq_secret(token, t.as_bytes());
        }
        if let Some(p) = shared.requirepass.read().as_deref() {
            ok |= crate::acl::ct_eq_secret(token, p.as_bytes());
        }
        return if ok { Ok(()) } else { Err("wrong credential") };
    }
    if let Some(b64) = value.strip_prefix(b"Basic ") {
        let decoded = base64_decode(b64).ok_or("malformed Basic credential")?;
        let sep = decoded
            .iter()
            .position(|b| *b == b':')
            .ok_or("malformed Basic credential")?;
        let user = std::str::from_utf8(&decoded[..sep]).map_err(|_| "wrong credential")?;
        return match shared.acl.read().authenticate(user, &decoded[sep + 1..]) {
            // A password-less user (the default one, with no requirepass) accepts any
            // password on RESP; it must never open the admin port.
            Some(u) if u.permission == strata::config::Permission::Admin && u.has_password() => {
                Ok(())
            }
            _ => Err("wrong credential"),
        };
    }
    Err("unsupported Authorization scheme (Bearer or Basic)")
}

/// Standard base64 with padding (what HTTP Basic uses); `None` on anything else.
fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    if input.len() % 4 != 0 || input.len() > 4096 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    for (i, chunk) in input.chunks(4).enumerate() {
        let last = i == input.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for (j, c) in chunk.iter().enumerate() {
            let v = if j >= 4 - pad { 0 } else { val(*c)? };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base64_decodes_what_http_basic_sends() {
        assert_eq!(base64_decode(b"YWRtaW46cHc=").unwrap(), b"admin:pw");
        assert_eq!(base64_decode(b"YTpi").unwrap(), b"a:b");
        assert_eq!(base64_decode(b"YQ==").unwrap(), b"a");
        assert_eq!(base64_decode(b"").unwrap(), b"");
        assert!(base64_decode(b"YQ=").is_none());
        assert!(base64_decode(b"Y===").is_none());
        assert!(base64_decode(b"YQ==YQ==").is_none());
        assert!(base64_decode(b"Y!Q=").is_none());
    }

    #[test]
    fn only_addresses_and_listed_names_are_accepted_as_host() {
        let h = |host: &'static str| {
            let mut m = header::HeaderMap::new();
            m.insert("host", host.parse().unwrap());
            m
        };
        for ok in [
            "127.0.0.1:9380",
            "localhost:9380",
            "[::1]:9380",
            "10.0.0.5",
            "LOCALHOST",
        ] {
            assert!(host_allowed(&h(ok), &[]), "{ok}");
        }
        for bad in [
            "evil.example:9380",
            "127.0.0.1.nip.io:9380",
            "localhost.evil:1",
        ] {
            assert!(!host_allowed(&h(bad), &[]), "{bad}");
        }
        assert!(host_allowed(
            &h("cache-a.internal:9380"),
            &["cache-a.internal".into()]
        ));
        assert!(!host_allowed(&header::HeaderMap::new(), &[]), "no Host");
        let mut two = h("127.0.0.1:9380");
        two.append("host", "evil.example".parse().unwrap());
        assert!(!host_allowed(&two, &[]), "a second Host header");
        // An absolute-form target's authority is judged by the same rule.
        for (authority, ok) in [
            ("127.0.0.1:9380", true),
            ("[::1]:9380", true),
            ("evil.example", false),
            ("user@127.0.0.1:9380", false),
        ] {
            assert_eq!(name_allowed(authority, &[]), ok, "{authority}");
        }
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = header::HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        assert_eq!(cross_site(&h(&[("host", "127.0.0.1:9380")])), None);
        assert_eq!(
            cross_site(&h(&[
                ("host", "127.0.0.1:9380"),
                ("origin", "http://127.0.0.1:9380")
            ])),
            None
        );
        assert!(
            cross_site(&h(&[
                ("host", "127.0.0.1:9380"),
                ("origin", "http://evil.example")
            ]))
            .is_some()
        );
        assert!(cross_site(&h(&[("host", "x"), ("origin", "null")])).is_some());
        assert!(cross_site(&h(&[("sec-fetch-site", "cross-site")])).is_some());
        assert!(cross_site(&h(&[("sec-fetch-site", "same-site")])).is_some());
        assert_eq!(cross_site(&h(&[("sec-fetch-site", "none")])), None);
    }
}
