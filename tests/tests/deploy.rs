//! The operators' files in `deploy/`: the Grafana dashboard is valid JSON with its data
//! source and node variables and the panels it claims; the Prometheus rules pass `promtool
//! check rules`; and every `strata_*` metric either names exists in `/metrics` of running
//! nodes (parsed with a Prometheus parser), so a renamed metric breaks this test, not a
//! dashboard in production. The nodes: a one-node cluster (cluster metrics) and a node with a
//! Redis bridge on a real redis-server (bridge metrics).
#![allow(clippy::unwrap_used)]

#[path = "../../crates/strata-redis/tests/common/mod.rs"]
mod redis_common;

use std::collections::BTreeSet;
use std::path::Path;

use redis_common::RedisServer;
use strata_tests::*;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The `strata_*` metric names in `text` (a PromQL expression or a rules file), with a
/// histogram's `_bucket`, `_sum` and `_count` taken back to its name.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("strata_") {
        let before = rest[..at].chars().last();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(base.to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// The metric names of a node's `/metrics`, parsed.
fn exposed(srv: &Server) -> BTreeSet<String> {
    let (code, body) = http_get(&srv.admin(), "/metrics");
    assert_eq!(code, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    scrape.samples.into_iter().map(|s| s.metric).collect()
}

#[test]
fn the_dashboard_and_the_rules_name_metrics_the_nodes_export() {
    // The dashboard: importable JSON, its variables, and every panel querying through them.
    let text =
        std::fs::read_to_string(repo().join("deploy/grafana/strata-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vars = dash["templating"]["list"].as_array().unwrap();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap().clone();
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("node")["type"], "query");
    let panels = dash["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Commands per second",
        "Hit ratio by layer",
        "Lookup latency p50 / p99",
        "L1 memory: resident vs capacity",
        "Evictions and expirations",
        "Clients",
        "Redis bridge circuit breaker",
        "Cluster members and ring changes",
    ] {
        assert!(titles.contains(&want), "no panel {want:?}: {titles:?}");
    }
    let mut from_dashboard = BTreeSet::new();
    for p in panels {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(expr.contains("$node"), "{}: {expr}", p["title"]);
            from_dashboard.extend(metric_names(expr));
        }
    }

    // The rules: promtool accepts them (Debian's prometheus package; scripts/test.sh installs it).
    let rules = repo().join("deploy/prometheus/strata-rules.yml");
    let check = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (apt-get install prometheus; scripts/test.sh does)");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    for alert in [
        "StrataNodeDown",
        "StrataL3Degraded",
        "StrataHitRatioLow",
        "StrataLookupP99High",
        "StrataEvictionsHigh",
        "StrataRedisBreakerOpen",
        "StrataClusterNotInSync",
        "StrataInvalidationGaps",
    ] {
        assert!(rules_text.contains(&format!("alert: {alert}")), "{alert}");
    }
    let from_rules = metric_names(&rules_text);

    // Every metric named is one a node exports.
    let cluster_dir = tempfile::tempdir().unwrap();
    let cluster = start_node(
        cluster_dir.path(),
        "n1",
        free_port(),
        &[],
        "expected_size = 1",
    );
    let redis = RedisServer::start();
    let bridged = Server::start(&format!(
        "[l2.redis]\nenabled = true\nurl = \"redis://127.0.0.1:{}\"\n",
        redis.port
    ));
    for srv in [&cluster, &bridged] {
        let mut c = srv.redis();
        let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
        let _: Option<String> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
        // Per-command error counters have samples once a command failed.
        assert!(redis::cmd("INCR").arg("k").query::<i64>(&mut c).is_err());
    }
    let mut exported = exposed(&cluster);
    exported.extend(exposed(&bridged));
    let named: BTreeSet<String> = from_dashboard.union(&from_rules).cloned().collect();
    let missing: Vec<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but not exported: {missing:?}"
    );
    assert!(
        named.len() >= 25,
        "{} metrics named: {named:?}",
        named.len()
    );
}
