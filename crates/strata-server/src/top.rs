//! `strata top`: a live view of a node, or of every member of its cluster, one line per node
//! per interval, read from the admin port's `/metrics` (as `redis-cli --stat` reads `INFO`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cli::{Admin, http};

/// What one scrape of `/metrics` says, summed over label sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// `strata_server_commands_total`, all commands.
    pub commands: f64,
    /// Hits in any layer.
    pub hits: f64,
    /// Lookups that reached L1 (its hits and misses): every lookup starts there.
    pub lookups: f64,
    /// Open client connections.
    pub clients: f64,
    /// L1 resident and capacity bytes.
    pub l1_bytes: f64,
    /// L1's configured capacity.
    pub l1_capacity: f64,
    /// The process's RSS.
    pub rss: f64,
    /// L3's live bytes.
    pub l3_bytes: f64,
    /// L1 evictions.
    pub evictions: f64,
    /// Cluster members this node sees (absent outside a cluster).
    pub members: Option<f64>,
}

impl Sample {
    /// Reads the Prometheus text of `/metrics` (a sample per line: `name{labels} value`).
    pub fn parse(text: &str) -> Self {
        let mut by_name: BTreeMap<&str, f64> = BTreeMap::new();
        let mut l1_lookups = 0.0;
        for line in text.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            let name = series.split('{').next().unwrap_or(series);
            if (name == "strata_cache_hits_total" || name == "strata_cache_misses_total")
                && series.contains("layer=\"l1\"")
            {
                l1_lookups += v;
            }
            *by_name.entry(name).or_default() += v;
        }
        let get = |n: &str| by_name.get(n).copied().unwrap_or(0.0);
        Sample {
            commands: get("strata_server_commands_total"),
            hits: get("strata_cache_hits_total"),
            lookups: l1_lookups,
            clients: get("strata_server_connections"),
            l1_bytes: get("strata_l1_resident_bytes"),
            l1_capacity: get("strata_l1_capacity_bytes"),
            rss: get("strata_process_resident_bytes"),
            l3_bytes: get("strata_l3_live_bytes"),
            evictions: get("strata_l1_evictions_total"),
            members: by_name.get("strata_cluster_members").copied(),
        }
    }
}

/// `1.2K`, `3.4M`, `5.6G`.
fn human(v: f64) -> String {
    let (v, unit) = match v.abs() {
        x if x >= 1e9 => (v / 1e9, "G"),
        x if x >= 1e6 => (v / 1e6, "M"),
        x if x >= 1e4 => (v / 1e3, "K"),
        _ => return format!("{v:.0}"),
    };
    format!("{v:.1}{unit}")
}

/// The header line.
pub fn header() -> String {
    format!(
        "{:<22} {:>9} {:>6} {:>7} {:>15} {:>7} {:>8} {:>8} {:>7}",
        "node", "cmds/s", "hit%", "clients", "L1 used/cap", "RSS", "L3 live", "evict/s", "members"
    )
}

/// One node's line for the interval from `before` to `now`, `secs` long.
pub fn line(node: &str, before: &Sample, now: &Sample, secs: f64) -> String {
    let rate = |a: f64, b: f64| ((b - a) / secs).max(0.0);
    let lookups = now.lookups - before.lookups;
    let hit = if lookups > 0.0 {
        format!("{:.1}", 100.0 * (now.hits - before.hits) / lookups)
    } else {
        "-".to_owned()
    };
    format!(
        "{:<22} {:>9} {:>6} {:>7} {:>15} {:>7} {:>8} {:>8} {:>7}",
        node,
        human(rate(before.commands, now.commands)),
        hit,
        human(now.clients),
        format!("{}/{}", human(now.l1_bytes), human(now.l1_capacity)),
        human(now.rss),
        human(now.l3_bytes),
        human(rate(before.evictions, now.evictions)),
        now.members.map_or("-".to_owned(), human),
    )
}

async fn scrape(admin: &Admin) -> anyhow::Result<Sample> {
    let resp = http(admin, "GET", "/metrics").await?;
    anyhow::ensure!(
        resp.status == 200,
        "{} answered {} to /metrics: {}",
        admin.addr,
        resp.status,
        resp.body.lines().next().unwrap_or("")
    );
    Ok(Sample::parse(&resp.body))
}

/// The admin addresses of the members `admin` sees alive (itself included), from `/cluster`,
/// each once. Members that advertise the same address (every node keeping the default
/// `127.0.0.1:9380` on its own host) cannot be told apart from here: named on stderr, and
/// scraped once.
async fn members(admin: &Admin) -> anyhow::Result<Vec<String>> {
    let resp = http(admin, "GET", "/cluster").await?;
    anyhow::ensure!(
        resp.status == 200,
        "{} is not a cluster member: {}",
        admin.addr,
        resp.body
    );
    let v: serde_json::Value = serde_json::from_str(&resp.body)?;
    let mut by_addr: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in v["members"].as_array().into_iter().flatten() {
        if m["state"] == "down" {
            continue;
        }
        if let Some(addr) = m["admin"].as_str() {
            let name = m["name"].as_str().unwrap_or("?").to_owned();
            by_addr.entry(addr.to_owned()).or_default().push(name);
        }
    }
    for (addr, names) in &by_addr {
        if names.len() > 1 {
            eprintln!(
                "members {} all advertise the admin address {addr}: bind each one's server.admin_listen to an address the others can reach; showing {addr} once",
                names.join(", ")
            );
        }
    }
    Ok(by_addr.into_keys().collect())
}

/// Scrapes every node at once (one slow or dead member does not delay the others), each
/// sample with its own time, so that each node's rates use its own interval.
async fn scrape_all(nodes: &[Admin], limit: Duration) -> Vec<(Instant, anyhow::Result<Sample>)> {
    futures_util::future::join_all(nodes.iter().map(|n| async move {
        let r = tokio::time::timeout(limit, scrape(n)).await;
        (
            Instant::now(),
            r.unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {limit:?}"))),
        )
    }))
    .await
}

/// Prints a line per node every `interval`, `count` times (0: until interrupted); with
/// `cluster`, for every member `admin` sees (the same credential is sent to each). A node
/// that does not answer prints why, and the others go on.
pub async fn top(
    admin: &Admin,
    cluster: bool,
    interval: Duration,
    count: u64,
) -> anyhow::Result<()> {
    let nodes: Vec<Admin> = if cluster {
        members(admin)
            .await?
            .into_iter()
            .map(|addr| Admin {
                addr,
                ..admin.clone()
            })
            .collect()
    } else {
        vec![admin.clone()]
    };
    let limit = interval.max(Duration::from_secs(2));
    let mut before: Vec<Option<(Instant, Sample)>> = scrape_all(&nodes, limit)
        .await
        .into_iter()
        .map(|(at, r)| r.ok().map(|s| (at, s)))
        .collect();
    let mut printed = 0u64;
    loop {
        tokio::time::sleep(interval).await;
        if printed % 20 == 0 {
            println!("{}", header());
        }
        let now = scrape_all(&nodes, limit).await;
        for ((n, prev), (at, result)) in nodes.iter().zip(before.iter_mut()).zip(now) {
            match result {
                Ok(sample) => {
                    match prev.take() {
                        Some((was_at, was)) => {
                            let secs = at.duration_since(was_at).as_secs_f64().max(1e-3);
                            println!("{}", line(&n.addr, &was, &sample, secs));
                        }
                        // No sample before this one: no rate to show yet.
                        None => println!("{:<22} (first sample; rates from the next line)", n.addr),
                    }
                    *prev = Some((at, sample));
                }
                Err(e) => {
                    println!("{:<22} unreachable: {e:#}", n.addr);
                    *prev = None;
                }
            }
        }
        printed += 1;
        if count > 0 && printed >= count {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_reads_sums_and_rates() {
        let text = "# TYPE strata_server_commands counter\n\
            strata_server_commands_total{command=\"get\"} 100\n\
            strata_server_commands_total{command=\"set\"} 50\n\
            strata_cache_hits_total{layer=\"l1\"} 80\n\
            strata_cache_hits_total{layer=\"l3\"} 10\n\
            strata_cache_misses_total{layer=\"l1\"} 20\n\
            strata_cache_misses_total{layer=\"l3\"} 10\n\
            strata_server_connections 3\n\
            strata_l1_resident_bytes 2000000\n\
            strata_l1_capacity_bytes 100000000\n";
        let s = Sample::parse(text);
        assert_eq!(
            (s.commands, s.hits, s.lookups, s.clients),
            (150.0, 90.0, 100.0, 3.0)
        );
        assert_eq!(s.members, None);
        let zero = Sample::default();
        let l = line("n1", &zero, &s, 2.0);
        assert!(
            l.contains(" 75 ") && l.contains("90.0") && l.contains("2.0M/100.0M"),
            "{l}"
        );
    }
}
