//! Two `strata serve` processes sharing one real `redis-server` as L2, driven with redis-cli
//! and redis-rs: coherence between them, the seeds' `REDIS_*` variables, health and metrics
//! through an outage, and a wrong password stopping the server at start.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../strata-redis/tests/common/mod.rs"]
mod redis_common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, http_get};
use redis::Commands;
use redis_common::RedisServer;

fn l2_health(srv: &Server) -> serde_json::Value {
    let (_, body) = http_get(&srv.admin(), "/health");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    h["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == "l2")
        .cloned()
        .unwrap_or_else(|| panic!("no l2 in /health: {body}"))
}

fn metric(srv: &Server, name: &str) -> f64 {
    let (_, body) = http_get(&srv.admin(), "/metrics");
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

fn wait_for(within: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

#[test]
fn two_servers_share_one_redis_coherently_and_survive_its_outage() {
    let mut redis = RedisServer::start();
    let port = redis.port.to_string();
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    // A is configured the way the seeds' users configure Redis: environment variables.
    let a = Server::start_with_env(
        dir_a.path(),
        "",
        &[("REDIS_HOST", "127.0.0.1"), ("REDIS_PORT", &port)],
    );
    // B through its config file.
    let b = Server::start_in(
        dir_b.path(),
        &format!("[l2.redis]\nenabled = true\nport = {port}\n"),
    );
    for srv in [&a, &b] {
        assert!(
            wait_for(Duration::from_secs(5), || l2_health(srv)["state"] == "up").is_some(),
            "l2 never came up: {}",
            l2_health(srv)
        );
    }
    let mut ca = a.redis();
    let mut cb = b.redis();

    let _: () = ca.set("k", "v1").unwrap();
    // The entry is in Redis, in the bridge's format, under strata:db0:k.
    assert_eq!(redis.cli(&["EXISTS", "strata:db0:k"]).as_deref(), Some("1"));
    let got: Option<String> = cb.get("k").unwrap();
    assert_eq!(got.as_deref(), Some("v1"));

    // Writes on A: B stops serving its L1 copy within the bound.
    let bound = Duration::from_millis(500);
    let mut worst = Duration::ZERO;
    for i in 2..12 {
        let v = format!("v{i}");
        let _: () = ca.set("k", &v).unwrap();
        let took = wait_for(bound, || {
            cb.get::<_, Option<String>>("k").unwrap().as_deref() == Some(v.as_str())
        })
        .unwrap_or_else(|| panic!("B kept serving an old value past {bound:?}"));
        worst = worst.max(took);
    }
    eprintln!("worst time for B to serve A's write: {worst:?}");

    // A DEL on B is honoured on A.
    let _: () = ca.set("gone", "x").unwrap();
    let _: Option<String> = cb.get("gone").unwrap();
    let _: () = cb.del("gone").unwrap();
    assert!(
        wait_for(bound, || ca
            .get::<_, Option<String>>("gone")
            .unwrap()
            .is_none())
        .is_some()
    );
    assert_eq!(metric(&a, "strata_redis_breaker_state"), 0.0);
    assert!(metric(&a, "strata_redis_invalidation_messages_total") >= 1.0);

    // Redis dies: within a second the circuit is open (health says why), every read still
    // answers, and writes keep working on the node.
    let _: () = ca.set("during", "before").unwrap();
    redis.kill();
    let opened = wait_for(Duration::from_secs(1), || {
        let h = l2_health(&a);
        h["state"] == "degraded"
            && h["reason"]
                .as_str()
                .is_some_and(|r| r.contains("circuit open"))
    });
    eprintln!("circuit open after {opened:?}");
    assert!(
        opened.is_some(),
        "the circuit did not open within 1 s: {}",
        l2_health(&a)
    );
    let (code, _) = http_get(&a.admin(), "/health");
    assert_eq!(code, 200, "a node without its Redis still serves: ready");
    for _ in 0..50 {
        let _: Option<String> = ca.get("k").unwrap();
    }
    let _: () = ca.set("during", "after").unwrap();
    let got: Option<String> = ca.get("during").unwrap();
    assert_eq!(got.as_deref(), Some("after"));
    assert_eq!(metric(&a, "strata_redis_breaker_state"), 1.0);
    assert!(metric(&a, "strata_redis_bypassed_writes_total") >= 1.0);

    // Redis returns: the circuit closes by itself.
    redis.restart();
    assert!(
        wait_for(Duration::from_secs(10), || l2_health(&a)["state"] == "up").is_some(),
        "the bridge did not recover: {}",
        l2_health(&a)
    );
    assert_eq!(metric(&a, "strata_redis_breaker_state"), 0.0);
    let _: () = ca.set("back", "1").unwrap();
    assert_eq!(
        redis.cli(&["EXISTS", "strata:db0:back"]).as_deref(),
        Some("1")
    );
}

#[test]
fn a_wrong_redis_password_stops_the_server_at_start_with_a_clear_error() {
    let redis = RedisServer::with_password("right");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        format!(
            "[l3]\ndata_dir = {:?}\n[l2.redis]\nenabled = true\nport = {}\npassword = \"wrong\"\n",
            dir.path().join("data"),
            redis.port
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "--config"])
        .arg(&config)
        .args([
            "--resp-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with a wrong password");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Redis refused the credentials") && err.contains("REDIS_PASSWORD"),
        "{err}"
    );
    // And through REDIS_PASSWORD, right this time, it starts.
    let srv = Server::start_with_env(
        dir.path(),
        &format!("[l2.redis]\nenabled = true\nport = {}\n", redis.port),
        &[("REDIS_PASSWORD", "right")],
    );
    let mut c = srv.redis();
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(redis.cli(&["EXISTS", "strata:db0:k"]).as_deref(), Some("1"));
}
