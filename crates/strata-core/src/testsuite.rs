//! The shared `Tier` contract suite: every tier (L1, RocksDB, cluster, Redis, simulated) runs
//! these same checks, so the manager can treat them alike.
//!
//! Call [`run`] from a tier crate's tests with a factory that builds a fresh, empty tier on
//! the given manual clock. Each check panics with its name when the tier breaks the contract.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::entry::{Entry, Tags};
use crate::glob::Glob;
use crate::tier::{SetOutcome, Tier};
use crate::time::{Clock, ManualClock};
use crate::version::Version;

/// Runs every contract check, each on a fresh tier from `make`.
pub async fn run<T, F, Fut>(mut make: F)
where
    T: Tier,
    F: FnMut(ManualClock) -> Fut,
    Fut: Future<Output = T>,
{
    macro_rules! check {
        ($name:ident) => {{
            let clock = ManualClock::default();
            let tier = make(clock.clone()).await;
            $name(&tier, &clock).await;
        }};
    }
    check!(set_then_get_returns_the_same_entry);
    check!(absent_keys_and_namespaces_miss);
    check!(newer_versions_replace_and_older_ones_do_not);
    check!(expired_entries_are_never_served);
    check!(stale_reads_respect_the_grace);
    check!(namespaces_are_isolated);
    check!(remove_removes_one_key);
    check!(remove_version_is_conditional);
    check!(remove_older_keeps_copies_at_least_as_new);
    check!(pattern_invalidation_removes_matches_only);
    check!(tag_invalidation_removes_tagged_only);
    check!(flush_namespace_empties_one_namespace);
    check!(purge_drops_expired_and_keeps_fresh);
    check!(binary_keys_and_values_round_trip);
    check!(health_is_serving_when_fresh);
}

/// The same suite, for a tier behind an `Arc<dyn Tier>`.
pub async fn run_dyn<F, Fut>(make: F)
where
    F: FnMut(ManualClock) -> Fut,
    Fut: Future<Output = Arc<dyn Tier>>,
{
    run(make).await
}

// Every method must forward, defaults included: with this feature on, a call on an
// `Arc<dyn Tier>` resolves to this impl, not to the tier inside.
#[async_trait::async_trait]
impl Tier for Arc<dyn Tier> {
    fn layer(&self) -> crate::tier::Layer {
        (**self).layer()
    }
    async fn get(&self, ns: &str, key: &[u8]) -> Result<Option<Entry>, crate::TierError> {
        (**self).get(ns, key).await
    }
    async fn get_stale(&self, ns: &str, key: &[u8]) -> Result<Option<Entry>, crate::TierError> {
        (**self).get_stale(ns, key).await
    }
    async fn set(&self, ns: &str, key: Bytes, e: Entry) -> Result<SetOutcome, crate::TierError> {
        (**self).set(ns, key, e).await
    }
    async fn set_fresh(
        &self,
        ns: &str,
        key: Bytes,
        e: Entry,
    ) -> Result<SetOutcome, crate::TierError> {
        (**self).set_fresh(ns, key, e).await
    }
    fn has_writes_behind(&self) -> bool {
        (**self).has_writes_behind()
    }
    async fn remove(&self, ns: &str, key: &[u8]) -> Result<bool, crate::TierError> {
        (**self).remove(ns, key).await
    }
    async fn execute(
        &self,
        cache: &crate::Cache,
        ns: &str,
        key: &[u8],
        op: &crate::ops::KeyOp,
    ) -> Result<Option<crate::ops::Executed>, crate::TierError> {
        (**self).execute(cache, ns, key, op).await
    }
    async fn execute_multi(
        &self,
        cache: &crate::Cache,
        ns: &str,
        op: &crate::ops::MultiOp,
    ) -> Result<Option<crate::ops::ExecutedMulti>, crate::TierError> {
        (**self).execute_multi(cache, ns, op).await
    }
    async fn remove_version(
        &self,
        ns: &str,
        key: &[u8],
        v: Version,
    ) -> Result<bool, crate::TierError> {
        (**self).remove_version(ns, key, v).await
    }
    async fn remove_older(
        &self,
        ns: &str,
        key: &[u8],
        v: Version,
    ) -> Result<u64, crate::TierError> {
        (**self).remove_older(ns, key, v).await
    }
    async fn invalidate_pattern(&self, ns: &str, p: &Glob) -> Result<u64, crate::TierError> {
        (**self).invalidate_pattern(ns, p).await
    }
    async fn invalidate_tag(&self, ns: &str, tag: &[u8]) -> Result<u64, crate::TierError> {
        (**self).invalidate_tag(ns, tag).await
    }
    async fn flush_namespace(&self, ns: &str) -> Result<(), crate::TierError> {
        (**self).flush_namespace(ns).await
    }
    async fn purge_expired(&self) -> Result<u64, crate::TierError> {
        (**self).purge_expired().await
    }
    async fn settle(&self) -> Result<(), crate::TierError> {
        (**self).settle().await
    }
    async fn scan_keys(
        &self,
        ns: &str,
        from: crate::scan::ScanFrom<'_>,
        limit: usize,
    ) -> Result<Vec<Bytes>, crate::TierError> {
        (**self).scan_keys(ns, from, limit).await
    }
    async fn namespaces(&self) -> Result<Vec<String>, crate::TierError> {
        (**self).namespaces().await
    }
    async fn scan_versions(
        &self,
        ns: &str,
        from: crate::scan::ScanFrom<'_>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Version)>, crate::TierError> {
        (**self).scan_versions(ns, from, limit).await
    }
    async fn flush_all(&self) -> Result<(), crate::TierError> {
        (**self).flush_all().await
    }
    fn write_fault(&self) -> Option<String> {
        (**self).write_fault()
    }
    fn health(&self) -> crate::TierHealth {
        (**self).health()
    }
    fn admits_copy(&self, ns: &str, key: &[u8], e: &Entry) -> bool {
        (**self).admits_copy(ns, key, e)
    }
    fn key_count(&self, ns: &str) -> Option<u64> {
        (**self).key_count(ns)
    }
    async fn key_count_shared(&self, ns: &str) -> Option<u64> {
        (**self).key_count_shared(ns).await
    }
    fn reclaim_empty_namespaces(&self) -> usize {
        (**self).reclaim_empty_namespaces()
    }
}

fn v(n: u16) -> Version {
    Version::from_parts(1_000_000, n)
}

fn entry(value: &'static [u8], n: u16) -> Entry {
    Entry::new(Bytes::from_static(value), v(n))
}

fn key(k: &'static str) -> Bytes {
    Bytes::from_static(k.as_bytes())
}

async fn get(t: &impl Tier, ns: &str, k: &str) -> Option<Entry> {
    t.get(ns, k.as_bytes()).await.expect("get failed")
}

async fn put(t: &impl Tier, ns: &str, k: &'static str, e: Entry) -> SetOutcome {
    t.set(ns, key(k), e).await.expect("set failed")
}

async fn set_then_get_returns_the_same_entry(t: &impl Tier, clock: &ManualClock) {
    let mut e = entry(b"value", 1);
    e.expires_at_ms = Some(clock.now_ms() + 60_000);
    e.tags = Tags::new(["t1", "t2"]);
    assert_eq!(
        put(t, "ns", "k", e.clone()).await,
        SetOutcome::Stored,
        "set_then_get"
    );
    assert_eq!(
        get(t, "ns", "k").await,
        Some(e),
        "set_then_get: entry must round-trip"
    );
}

async fn absent_keys_and_namespaces_miss(t: &impl Tier, _: &ManualClock) {
    assert_eq!(get(t, "ns", "nope").await, None, "absent key");
    put(t, "ns", "k", entry(b"v", 1)).await;
    assert_eq!(get(t, "other", "k").await, None, "absent namespace");
}

async fn newer_versions_replace_and_older_ones_do_not(t: &impl Tier, _: &ManualClock) {
    put(t, "ns", "k", entry(b"v2", 2)).await;
    assert_eq!(
        put(t, "ns", "k", entry(b"v1", 1)).await,
        SetOutcome::KeptNewer,
        "an older version must not replace a newer one"
    );
    assert_eq!(get(t, "ns", "k").await.map(|e| e.value), Some(key("v2")));
    put(t, "ns", "k", entry(b"v3", 3)).await;
    assert_eq!(get(t, "ns", "k").await.map(|e| e.value), Some(key("v3")));
}

async fn expired_entries_are_never_served(t: &impl Tier, clock: &ManualClock) {
    let mut e = entry(b"v", 1);
    e.expires_at_ms = Some(clock.now_ms() + 1_000);
    put(t, "ns", "k", e).await;
    clock.advance(Duration::from_millis(999));
    assert!(get(t, "ns", "k").await.is_some(), "fresh until expiry");
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        get(t, "ns", "k").await,
        None,
        "G4: served at its expiry instant"
    );
    clock.advance(Duration::from_secs(3600));
    assert_eq!(get(t, "ns", "k").await, None, "G4: served after expiry");
}

async fn stale_reads_respect_the_grace(t: &impl Tier, clock: &ManualClock) {
    let now = clock.now_ms();
    let mut e = entry(b"v", 1);
    e.expires_at_ms = Some(now + 1_000);
    e.stale_until_ms = Some(now + 5_000);
    put(t, "ns", "k", e).await;
    let stale = t.get_stale("ns", b"k").await.expect("get_stale failed");
    assert_eq!(stale, None, "get_stale must not return a fresh entry");
    clock.advance(Duration::from_millis(2_000));
    assert_eq!(get(t, "ns", "k").await, None, "expired is a miss for get");
    if let Some(s) = t.get_stale("ns", b"k").await.expect("get_stale failed") {
        assert_eq!(s.value, key("v"), "stale value must be the written one");
    }
    clock.advance(Duration::from_millis(3_000));
    let past = t.get_stale("ns", b"k").await.expect("get_stale failed");
    assert_eq!(past, None, "get_stale must not serve past the grace");
}

async fn namespaces_are_isolated(t: &impl Tier, _: &ManualClock) {
    put(t, "a", "k", entry(b"in-a", 1)).await;
    put(t, "b", "k", entry(b"in-b", 1)).await;
    assert_eq!(get(t, "a", "k").await.map(|e| e.value), Some(key("in-a")));
    assert_eq!(get(t, "b", "k").await.map(|e| e.value), Some(key("in-b")));
    assert!(t.remove("a", b"k").await.expect("remove failed"));
    assert!(get(t, "b", "k").await.is_some(), "remove in a touched b");
}

async fn remove_removes_one_key(t: &impl Tier, _: &ManualClock) {
    put(t, "ns", "k1", entry(b"v", 1)).await;
    put(t, "ns", "k2", entry(b"v", 1)).await;
    assert!(
        t.remove("ns", b"k1").await.expect("remove failed"),
        "present key"
    );
    assert!(
        !t.remove("ns", b"k1").await.expect("remove failed"),
        "absent key"
    );
    assert_eq!(get(t, "ns", "k1").await, None);
    assert!(
        get(t, "ns", "k2").await.is_some(),
        "remove took a neighbour"
    );
}

async fn remove_version_is_conditional(t: &impl Tier, _: &ManualClock) {
    put(t, "ns", "k", entry(b"v", 5)).await;
    assert!(!t.remove_version("ns", b"k", v(4)).await.expect("failed"));
    assert!(get(t, "ns", "k").await.is_some(), "wrong version removed");
    assert!(t.remove_version("ns", b"k", v(5)).await.expect("failed"));
    assert_eq!(get(t, "ns", "k").await, None);
}

async fn older(t: &impl Tier, k: &str, n: u16) -> u64 {
    t.remove_older("ns", k.as_bytes(), v(n))
        .await
        .expect("remove_older failed")
}

async fn remove_older_keeps_copies_at_least_as_new(t: &impl Tier, clock: &ManualClock) {
    assert_eq!(older(t, "absent", 9).await, 0, "nothing held");
    put(t, "ns", "k", entry(b"v", 5)).await;
    assert_eq!(older(t, "k", 5).await, 0, "the same version is kept");
    assert_eq!(older(t, "k", 4).await, 0, "a newer copy is kept");
    assert!(
        get(t, "ns", "k").await.is_some(),
        "a copy as new was removed"
    );
    assert_eq!(older(t, "k", 6).await, 1, "an older copy goes");
    assert_eq!(
        get(t, "ns", "k").await,
        None,
        "an older copy is still served"
    );
    // A copy inside its stale grace may still be served by `get_or_load`: it goes too.
    let mut e = entry(b"v", 5);
    e.expires_at_ms = Some(clock.now_ms() + 1_000);
    e.stale_until_ms = Some(clock.now_ms() + 60_000);
    put(t, "ns", "s", e).await;
    clock.advance(Duration::from_millis(2_000));
    older(t, "s", 6).await;
    assert_eq!(
        t.get_stale("ns", b"s").await.expect("get_stale failed"),
        None,
        "an older stale copy survived"
    );
}

async fn pattern_invalidation_removes_matches_only(t: &impl Tier, _: &ManualClock) {
    for k in ["user:1", "user:2", "user:10", "order:1"] {
        put(t, "ns", k, entry(b"v", 1)).await;
    }
    put(t, "other", "user:1", entry(b"v", 1)).await;
    let glob = Glob::new(b"user:?").expect("glob");
    let n = t
        .invalidate_pattern("ns", &glob)
        .await
        .expect("pattern failed");
    assert_eq!(n, 2, "user:1 and user:2 match user:?");
    assert_eq!(get(t, "ns", "user:1").await, None);
    assert_eq!(get(t, "ns", "user:2").await, None);
    assert!(
        get(t, "ns", "user:10").await.is_some(),
        "user:10 does not match"
    );
    assert!(get(t, "ns", "order:1").await.is_some());
    assert!(
        get(t, "other", "user:1").await.is_some(),
        "pattern crossed namespaces"
    );
}

async fn tag_invalidation_removes_tagged_only(t: &impl Tier, _: &ManualClock) {
    let mut tagged = entry(b"v", 1);
    tagged.tags = Tags::new(["factor:co2", "region:eu"]);
    put(t, "ns", "a", tagged.clone()).await;
    put(t, "ns", "b", tagged.clone()).await;
    put(t, "ns", "c", entry(b"v", 1)).await;
    put(t, "other", "a", tagged).await;
    let n = t
        .invalidate_tag("ns", b"region:eu")
        .await
        .expect("tag failed");
    assert_eq!(n, 2);
    assert_eq!(get(t, "ns", "a").await, None);
    assert_eq!(get(t, "ns", "b").await, None);
    assert!(get(t, "ns", "c").await.is_some(), "untagged entry removed");
    assert!(
        get(t, "other", "a").await.is_some(),
        "tag crossed namespaces"
    );
}

async fn flush_namespace_empties_one_namespace(t: &impl Tier, clock: &ManualClock) {
    for k in ["a", "b", "c"] {
        put(t, "ns", k, entry(b"v", 1)).await;
    }
    put(t, "keep", "a", entry(b"v", 1)).await;
    t.flush_namespace("ns").await.expect("flush failed");
    for k in ["a", "b", "c"] {
        assert_eq!(get(t, "ns", k).await, None, "flushed key {k} served");
    }
    assert!(
        get(t, "keep", "a").await.is_some(),
        "flush crossed namespaces"
    );
    // A write made after the flush: its version is stamped later (versions are hybrid
    // clock stamps; a tier may refuse a write older than an invalidation it has seen, as
    // the cluster does for G3).
    clock.advance(Duration::from_millis(1));
    let mut after = entry(b"after", 0);
    after.version = Version::from_parts(clock.now_ms(), 0);
    put(t, "ns", "a", after).await;
    assert_eq!(
        get(t, "ns", "a").await.map(|e| e.value),
        Some(key("after")),
        "writes after a flush must be served"
    );
}

async fn purge_drops_expired_and_keeps_fresh(t: &impl Tier, clock: &ManualClock) {
    let now = clock.now_ms();
    for (k, ttl) in [("short1", 10), ("short2", 10), ("long", 100_000)] {
        let mut e = entry(b"v", 1);
        e.expires_at_ms = Some(now + ttl);
        put(t, "ns", k, e).await;
    }
    clock.advance(Duration::from_millis(50));
    let n = t.purge_expired().await.expect("purge failed");
    assert!(
        n >= 2,
        "purge must report the expired entries it dropped, got {n}"
    );
    assert!(
        get(t, "ns", "long").await.is_some(),
        "purge dropped a fresh entry"
    );
}

async fn binary_keys_and_values_round_trip(t: &impl Tier, _: &ManualClock) {
    let k = Bytes::from_static(&[0, 255, b'*', b'\n', 0x80]);
    let val = Bytes::from(vec![0u8, 1, 2, 255, 0]);
    t.set("ns", k.clone(), Entry::new(val.clone(), v(1)))
        .await
        .expect("set failed");
    t.set("ns", key("empty"), Entry::new(Bytes::new(), v(1)))
        .await
        .expect("set failed");
    let got = t.get("ns", &k).await.expect("get failed").map(|e| e.value);
    assert_eq!(got, Some(val), "binary value");
    let empty = t
        .get("ns", b"empty")
        .await
        .expect("get failed")
        .map(|e| e.value);
    assert_eq!(
        empty,
        Some(Bytes::new()),
        "an empty value is a hit, not a miss"
    );
}

async fn health_is_serving_when_fresh(t: &impl Tier, _: &ManualClock) {
    assert!(t.health().is_serving(), "a fresh tier must be serving");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryTier, MemoryTierConfig};

    /// The `Arc<dyn Tier>` impl forwards the listing methods too (a missing forward once made
    /// KEYS/SCAN/DBSIZE skip L3 in builds with this feature on).
    #[tokio::test]
    async fn arc_dyn_tier_forwards_every_method() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let tier = MemoryTier::new(MemoryTierConfig::with_capacity(1 << 20), clock).unwrap();
        let tier: Arc<dyn Tier> = Arc::new(tier);
        Tier::set(&tier, "ns", key("a"), entry(b"v", 1))
            .await
            .unwrap();
        assert_eq!(
            Tier::scan_keys(&tier, "ns", crate::scan::ScanFrom::START, 10)
                .await
                .unwrap(),
            vec![key("a")]
        );
        assert_eq!(
            Tier::namespaces(&tier).await.unwrap(),
            vec!["ns".to_string()]
        );
    }
}
