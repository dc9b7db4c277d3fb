//! Proving L3's copies current against the shared tier, written once for every mode that
//! keeps L3 across a restart or a lost invalidation channel: a cluster member asks the
//! keys' owners (`strata_cluster::warm` picks whom), a node behind the Redis bridge asks
//! Redis. The caller makes sure every change after the check reaches this node (it is
//! subscribed, or its coherence is baselined); this module walks L3 in pages, asks, and
//! drops every copy not proven.

use std::future::Future;

use bytes::Bytes;

use crate::manager::Cache;
use crate::tier::Layer;
use crate::version::Version;

/// Keys per page (and per question to the shared tier).
pub const PAGE: usize = 1024;
/// How long a proof waits for L3 to open.
const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What one check did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WarmReport {
    /// Copies found current and kept.
    pub kept: u64,
    /// Copies dropped (changed, gone, or unprovable).
    pub dropped: u64,
    /// Questions asked of the shared tier.
    pub calls: u64,
}

/// Whether an L3 copy at version `local` may stay, given the shared tier's answer: `None`
/// when the question failed, `Some(None)` when the shared tier holds no fresh entry.
/// Only an exact match keeps it: newer means overwritten, older means the shared tier lost
/// something (trust neither), absent means deleted, flushed or evicted.
pub fn keep(local: u64, answer: Option<Option<u64>>) -> bool {
    answer == Some(Some(local))
}

impl Cache {
    /// Walks every namespace of L3 in pages of [`PAGE`] keys; for each page, `ask` returns
    /// the shared tier's version per key (`None` where it could not answer) and how many
    /// calls it made. Copies that [`keep`] refuses are removed (by version, so a copy
    /// written meanwhile stays). Errors listing L3 end the walk with `Err`: the caller
    /// empties L3 then.
    pub async fn revalidate_l3<F, Fut>(&self, mut ask: F) -> Result<WarmReport, String>
    where
        F: FnMut(String, Vec<(Bytes, Version)>) -> Fut,
        Fut: Future<Output = (Vec<Option<Option<u64>>>, u64)>,
    {
        let l3 = self.tier(Layer::L3).ok_or("no L3")?;
        // L3's actor opens it after the node's layers are built; a proof that starts first
        // (a subscription made at once) waits for it, up to OPEN_WAIT.
        let deadline = std::time::Instant::now() + OPEN_WAIT;
        while !l3.health().is_serving() {
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "L3 did not open within {OPEN_WAIT:?}: {:?}",
                    l3.health()
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut report = WarmReport::default();
        for ns in l3.namespaces().await.map_err(|e| e.to_string())? {
            let mut after: Option<Bytes> = None;
            loop {
                let page = (*l3)
                    .scan_versions(&ns, crate::scan::ScanFrom::resume(after.as_deref()), PAGE)
                    .await
                    .map_err(|e| e.to_string())?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                after = Some(last.clone());
                let full = page.len() == PAGE;
                let (answers, calls) = ask(ns.clone(), page.clone()).await;
                report.calls += calls;
                for (i, (key, version)) in page.iter().enumerate() {
                    if keep(version.as_u64(), answers.get(i).copied().flatten()) {
                        report.kept += 1;
                    } else {
                        report.dropped += 1;
                        // A failure leaves a tombstone in L3: the copy is not served either way.
                        let _ = l3.remove_version(&ns, key, *version).await;
                    }
                }
                if !full {
                    break;
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_exact_version_keeps_a_copy() {
        assert!(keep(5, Some(Some(5))));
        assert!(!keep(5, Some(Some(6))), "overwritten meanwhile");
        assert!(!keep(5, Some(Some(4))), "the shared tier went back");
        assert!(!keep(5, Some(None)), "deleted, flushed or evicted");
        assert!(!keep(5, None), "the question failed");
    }
}
