//! Coherence across nodes that share one Redis: every write and invalidation the bridge
//! makes is announced on the channel `{prefix}:invalidations` (by the same Lua script that
//! makes the change, so a change is announced exactly when it happens); every node subscribes
//! and drops its own L1 and L3 copies that the message makes stale.
//!
//! Why pub/sub and not RESP3 `CLIENT TRACKING`: a message carries the writer's version, so a
//! node drops only copies *older* than the write (never a newer one it wrote itself), and
//! ignores its own messages by origin id, with no `NOLOOP` connection juggling; pattern, tag
//! and namespace invalidations travel as one message each instead of one per key; and
//! classic pub/sub is cluster-wide, so one subscription covers standalone, Sentinel and
//! Redis Cluster alike, where tracking needs a connection per master. What it does not see:
//! changes made to Strata's keys by other Redis clients (documented in docs/semantics.md).
//!
//! Pub/sub is at-most-once: messages sent while a node is not subscribed are lost. So when
//! the subscription drops, the node empties L1 at once (it can no longer vouch for it) and
//! reads Redis before L3 again (L3 keeps serving what Redis cannot, while it is
//! unreachable). Once it is subscribed again — including the first time, at start — it
//! empties L1 and **proves** L3 before trusting it: L3 leaves the read path, every L3 copy's
//! version is compared with the one Redis holds (`RedisTier::versions`, pipelined in pages,
//! walked by `Cache::revalidate_l3`), and only exact matches stay. Every change made before
//! the check is visible in Redis by then (the script that makes a change announces it), and
//! every change after it arrives on the channel the node now listens to. Then reads visit L3
//! before Redis: a restarted or reconnected node serves its previous working set from disk.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use strata_core::{Cache, Layer, Version};

use crate::codec::{self, Op};
use crate::tier::{RedisTier, bump_counter};

/// Applies one message from the channel to `cache`'s local layers.
pub async fn apply(tier: &RedisTier, cache: &Cache, payload: &[u8]) {
    let msg = match codec::decode_message(payload) {
        Ok(m) => m,
        Err(e) => {
            bump_counter(&tier.counters().bad_messages);
            tracing::warn!(error = %e, "Redis bridge: undecodable invalidation message ignored");
            return;
        }
    };
    if msg.origin == tier.origin() {
        return;
    }
    let result = match msg.op {
        Op::Set {
            namespace,
            key,
            version,
        } => {
            let v = Version::from_u64(version);
            // A version no node could have stamped by now is not merged into this node's
            // clock (`tier::MAX_VERSION_AHEAD_MS`); the copies older than it still go.
            if crate::tier::plausible_version(v, cache.now_ms()) {
                cache.observe_version(v);
            }
            cache
                .drop_local(&namespace, &key, Some(v))
                .await
                .map(|_| ())
        }
        Op::Remove { namespace, key } => cache.drop_local(&namespace, &key, None).await.map(|_| ()),
        Op::Pattern { namespace, pattern } => cache
            .drop_local_pattern(&namespace, &pattern)
            .await
            .map(|_| ()),
        Op::Tag { namespace, tag } => cache.drop_local_tag(&namespace, &tag).await.map(|_| ()),
        Op::Flush { namespace } => cache.drop_local_namespace(&namespace).await,
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "Redis bridge: applying an invalidation failed");
    }
    bump_counter(&tier.counters().messages);
}

/// Subscribes to the invalidation channel and applies every message, reconnecting for
/// ever (the node aborts the task at shutdown; the tasks it started go with it).
pub async fn run_subscriber(tier: RedisTier, cache: Cache) {
    let mut l3 = L3Control::default();
    // Not subscribed yet: L3 may only stand in for an unreachable Redis.
    l3.unsubscribed(&tier, &cache);
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 0usize;
    loop {
        if let Some(client) = tier.pubsub_client(attempt) {
            let channel = tier.channel().to_owned();
            let connect = async {
                let mut ps = client.get_async_pubsub().await?;
                ps.subscribe(&channel).await?;
                // The data path's connection may predate a Redis restart this subscription
                // follows: checked (renewed if it is dead) before the bridge says it is
                // subscribed, so that health `up` and the L3 proof do not rely on a dead
                // socket, nor on a Redis still loading its data (`SUBSCRIBE` works then,
                // commands do not): until a PING goes through, this tries again.
                tier.check_before_subscribed()
                    .await
                    .map_err(|e| redis::RedisError::from(std::io::Error::other(e)))?;
                Ok::<_, redis::RedisError>(ps)
            };
            match tokio::time::timeout(tier.config().connect_timeout * 2, connect).await {
                Ok(Ok(ps)) => {
                    backoff = Duration::from_millis(50);
                    // Anything sent before this point may have been missed: L1 goes, L3 is
                    // proven against Redis while the messages from now on are applied.
                    let n = cache.drop_local_everything(false).await;
                    l3.subscribed(&tier, &cache);
                    tier.set_subscribed(true);
                    bump_counter(&tier.counters().resyncs);
                    tracing::info!(
                        channel,
                        namespaces = n,
                        "Redis bridge: subscribed; L1 emptied, L3 being proven against Redis"
                    );
                    let mut stream = ps.into_on_message();
                    while let Some(msg) = stream.next().await {
                        apply(&tier, &cache, msg.get_payload_bytes()).await;
                    }
                    tier.set_subscribed(false);
                    // A proof still running is void; L3 is read after Redis again, and only
                    // while Redis is unreachable.
                    l3.unsubscribed(&tier, &cache);
                    cache.drop_local_everything(false).await;
                    tracing::warn!(
                        channel,
                        "Redis bridge: invalidation channel dropped; L1 emptied until it is back"
                    );
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "Redis bridge: cannot subscribe yet"),
                Err(_) => tracing::debug!("Redis bridge: subscribing timed out"),
            }
            attempt = attempt.wrapping_add(1);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// The subscriber's say over L3's place on the read path: a state number (a new state
/// voids the tasks of the previous one, decided under its lock) and the tasks of the
/// current state, aborted when it ends or when the subscriber itself is dropped.
#[derive(Default)]
struct L3Control {
    state: Arc<Mutex<u64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for L3Control {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl L3Control {
    /// Ends the current state; returns the new one's number.
    fn next(&mut self, cache: &Cache, serving: bool) -> u64 {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let mut state = self.state.lock();
        *state += 1;
        cache.set_l3_first(false);
        cache.set_l3_serving(serving);
        *state
    }

    /// Not subscribed: L3 after Redis, serving only while the circuit is open.
    fn unsubscribed(&mut self, tier: &RedisTier, cache: &Cache) {
        let me = self.next(cache, false);
        self.tasks.push(tokio::spawn(unsubscribed_l3(
            tier.clone(),
            cache.clone(),
            self.state.clone(),
            me,
        )));
    }

    /// Subscribed: L3 off the read path until proven against Redis.
    fn subscribed(&mut self, tier: &RedisTier, cache: &Cache) {
        let me = self.next(cache, false);
        if cache.tier(Layer::L3).is_some() {
            self.tasks.push(tokio::spawn(prove_l3(
                tier.clone(),
                cache.clone(),
                self.state.clone(),
                me,
            )));
        }
    }
}

/// Proves L3 against Redis (see the module docs): copies Redis does not hold at the same
/// version are dropped, and — unless the subscriber's state moved on meanwhile — L3 comes
/// back, read before Redis. A proof that cannot finish (L3 failing) empties L3 instead.
async fn prove_l3(tier: RedisTier, cache: Cache, state: Arc<Mutex<u64>>, me: u64) {
    let Some(l3) = cache.tier(Layer::L3) else {
        return;
    };
    let started = std::time::Instant::now();
    // The subscription can come back before the circuit closes (another connection): asked
    // through an open circuit, every copy would be dropped.
    while tier.status().breaker != crate::breaker::BreakerState::Closed {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Work owed to Redis first (the outage queue, perhaps from before a crash): a key this
    // node wrote while Redis was away must be unlinked there before the proof, or the proof
    // drops the node's newer copy and Redis's older value is served again.
    while tier.has_pending() {
        if *state.lock() != me {
            return;
        }
        if tier.replay_pending().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let result = cache
        .revalidate_l3(|ns, page| {
            let tier = tier.clone();
            async move {
                let keys: Vec<bytes::Bytes> = page.into_iter().map(|(k, _)| k).collect();
                match tier.versions(&ns, &keys).await {
                    Ok(v) => (v.into_iter().map(Some).collect(), 1),
                    // Unanswered: every copy of the page is dropped.
                    Err(_) => (Vec::new(), 1),
                }
            }
        })
        .await;
    let report = match result {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(%why, "Redis bridge: L3 could not be proven; emptied");
            let _ = l3.flush_all().await;
            strata_core::warm::WarmReport::default()
        }
    };
    {
        let current = state.lock();
        if *current != me {
            return; // the subscription dropped or came back meanwhile: that state decides
        }
        cache.set_l3_serving(true);
        cache.set_l3_first(true);
    }
    // Counted once L3 serves again (a superseded proof counts nothing): a reader of the
    // counters may rely on it.
    let c = tier.counters();
    c.warm_kept.fetch_add(report.kept, Ordering::Relaxed);
    c.warm_dropped.fetch_add(report.dropped, Ordering::Relaxed);
    c.warm_calls.fetch_add(report.calls, Ordering::Relaxed);
    tracing::info!(
        kept = report.kept,
        dropped = report.dropped,
        calls = report.calls,
        ms = started.elapsed().as_millis() as u64,
        "Redis bridge: L3 proven against Redis; read before Redis again"
    );
}

/// While the node is not subscribed, messages it misses could make any L3 copy stale, so L3
/// may not answer what Redis would: it serves only while the circuit is open (Redis
/// unreachable: the failover of docs/semantics.md, "Redis down"), and is off the read path
/// otherwise. Runs until the subscriber's state moves on.
async fn unsubscribed_l3(tier: RedisTier, cache: Cache, state: Arc<Mutex<u64>>, me: u64) {
    loop {
        {
            let current = state.lock();
            if *current != me {
                return;
            }
            let open = tier.status().breaker != crate::breaker::BreakerState::Closed;
            cache.set_l3_serving(open);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
