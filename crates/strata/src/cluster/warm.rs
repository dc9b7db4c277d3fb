//! A restarted member's L3, proven current before it serves again: the IO around
//! [`strata_cluster::warm`] (baseline every member's coherence state, wait
//! `max_staleness`, check the L3 copies' versions against their owners in pages).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use strata_cluster::rpc::{ByteBuf, MAX_VERSIONS_PER_REQUEST, Request, Response};
use strata_cluster::warm;
use strata_core::{Cache, Layer, Version};

use super::Shared;

/// How long a restarted member waits for another member before it gives up on proving
/// its L3 and empties it instead.
const JOIN_WAIT: Duration = Duration::from_secs(10);

/// What one check did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WarmReport {
    /// L3 copies found current and kept.
    pub(crate) kept: u64,
    /// L3 copies dropped (changed, gone, unprovable).
    pub(crate) dropped: u64,
    /// `Versions` calls made.
    pub(crate) calls: u64,
}

/// Proves this member's L3 current (see the module docs) and puts it back on the read
/// path. Anything that stops the proof empties L3 instead. Runs once, after a start.
pub(crate) async fn revalidate_l3(shared: Arc<Shared>, cache: Cache) {
    let started = std::time::Instant::now();
    let Some(l3) = cache.tier(Layer::L3) else {
        return;
    };
    let report = match prove(&shared, &cache).await {
        Ok(report) => report,
        Err(why) => {
            tracing::warn!(%why, "cluster member: L3 could not be proven current; emptied");
            if let Err(e) = l3.flush_all().await {
                // L3 makes itself untrusted when a flush fails: it still serves nothing old.
                tracing::warn!(error = %e, "emptying L3 failed");
            }
            WarmReport::default()
        }
    };
    let c = &shared.counters;
    c.warm_kept.fetch_add(report.kept, Ordering::Relaxed);
    c.warm_dropped.fetch_add(report.dropped, Ordering::Relaxed);
    c.warm_calls.fetch_add(report.calls, Ordering::Relaxed);
    cache.set_l3_serving(true);
    tracing::info!(
        kept = report.kept,
        dropped = report.dropped,
        calls = report.calls,
        ms = started.elapsed().as_millis() as u64,
        "cluster member: L3 proven current against the owners; serving from it again"
    );
}

async fn prove(shared: &Arc<Shared>, cache: &Cache) -> Result<WarmReport, String> {
    let l3 = cache.tier(Layer::L3).ok_or("no L3")?;
    // 1. Joined: another member to vouch for the copies.
    let deadline = tokio::time::Instant::now() + JOIN_WAIT;
    while shared.others().is_empty() {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no other member within {JOIN_WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 2. Baseline: every member's coherence state, taken as applied.
    for (name, addr) in shared.others() {
        match shared.pool.call(&name, addr, Request::Ping, None).await {
            Ok(Response::Status { generation, latest }) => {
                let out =
                    shared
                        .coherence
                        .lock()
                        .baseline(shared.now_ms(), &name, generation, latest);
                shared.carry_out_coherence(out);
            }
            other => {
                return Err(format!(
                    "{name} did not give its coherence state: {other:?}"
                ));
            }
        }
    }
    // 3. Settle: every invalidation up to the baseline takes effect on the owners.
    tokio::time::sleep(Duration::from_millis(shared.cfg.max_staleness_ms * 2 + 100)).await;
    // 4. Check, page by page.
    let mut report = WarmReport::default();
    let namespaces = l3.namespaces().await.map_err(|e| e.to_string())?;
    for ns in namespaces {
        let mut after: Option<Bytes> = None;
        loop {
            let page = l3
                .scan_versions(&ns, after.as_deref(), MAX_VERSIONS_PER_REQUEST)
                .await
                .map_err(|e| e.to_string())?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            let done = page.len() < MAX_VERSIONS_PER_REQUEST;
            check_page(shared, cache, &ns, &page, &mut report).await;
            if done {
                break;
            }
        }
    }
    Ok(report)
}

/// Asks each peer about its share of `page` and drops what is not proven.
async fn check_page(
    shared: &Arc<Shared>,
    cache: &Cache,
    ns: &str,
    page: &[(Bytes, Version)],
    report: &mut WarmReport,
) {
    let Some(l3) = cache.tier(Layer::L3) else {
        return;
    };
    let owners: Vec<Vec<(String, std::net::SocketAddr)>> =
        page.iter().map(|(k, _)| shared.owners(ns, k)).collect();
    let names: Vec<Vec<String>> = owners
        .iter()
        .map(|o| o.iter().map(|(n, _)| n.clone()).collect())
        .collect();
    let (by_peer, orphans) = warm::plan(names.iter().map(Vec::as_slice), &shared.name);
    let mut answers: Vec<Option<Option<u64>>> = vec![None; page.len()];
    for (peer, idx) in by_peer {
        let Some(addr) = idx
            .first()
            .and_then(|&i| owners[i].iter().find(|(n, _)| *n == peer).map(|(_, a)| *a))
        else {
            continue;
        };
        let req = Request::Versions {
            namespace: ns.to_owned(),
            keys: idx
                .iter()
                .map(|&i| ByteBuf::from(page[i].0.to_vec()))
                .collect(),
        };
        report.calls += 1;
        match shared.pool.call(&peer, addr, req, None).await {
            Ok(Response::Versions(v)) if v.len() == idx.len() => {
                for (&i, a) in idx.iter().zip(v) {
                    answers[i] = Some(a);
                }
            }
            other => tracing::debug!(%peer, ?other, "Versions call failed; its keys are dropped"),
        }
    }
    debug_assert!(orphans.iter().all(|&i| answers[i].is_none()));
    for ((key, version), answer) in page.iter().zip(answers) {
        if warm::keep(version.as_u64(), answer) {
            report.kept += 1;
        } else {
            report.dropped += 1;
            if let Err(e) = l3.remove_version(ns, key, *version).await {
                tracing::debug!(error = %e, "dropping an unproven L3 copy failed (L3 tombstones it)");
            }
        }
    }
}
