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
//! the subscription drops, the node empties L1 at once (it can no longer vouch for it; L3
//! keeps serving while Redis is unreachable), and once it is subscribed again — including
//! the first time, at start — it empties L1 and L3 before it trusts them again.

use std::time::Duration;

use futures_util::StreamExt;
use strata_core::{Cache, Version};

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
            cache.observe_version(v);
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
/// ever (the node aborts the task at shutdown).
pub async fn run_subscriber(tier: RedisTier, cache: Cache) {
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 0usize;
    loop {
        if let Some(client) = tier.pubsub_client(attempt) {
            let channel = tier.channel().to_owned();
            let connect = async {
                let mut ps = client.get_async_pubsub().await?;
                ps.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            match tokio::time::timeout(tier.config().connect_timeout * 2, connect).await {
                Ok(Ok(ps)) => {
                    backoff = Duration::from_millis(50);
                    // Anything sent before this point may have been missed.
                    let n = cache.drop_local_everything(true).await;
                    tier.set_subscribed(true);
                    bump_counter(&tier.counters().resyncs);
                    tracing::info!(
                        channel,
                        namespaces = n,
                        "Redis bridge: subscribed; local layers emptied so nothing unverified is served"
                    );
                    let mut stream = ps.into_on_message();
                    while let Some(msg) = stream.next().await {
                        apply(&tier, &cache, msg.get_payload_bytes()).await;
                    }
                    tier.set_subscribed(false);
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
