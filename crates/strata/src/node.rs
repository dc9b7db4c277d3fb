//! `Node`: builds the layers and the cache from a [`NodeConfig`], starts the supervision tree,
//! and exposes the [`Cache`] handle, health, metrics and shutdown.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use ractor::{Actor, ActorRef};
use strata_core::rng::{Rng, SystemRng};
use strata_core::{Cache, Clock, CoarseClock, Layer, MemoryTier, Tier, TierHealth};
use tokio::task::JoinHandle;

use crate::actors::supervisor::{NodeSupervisor, SupervisorArgs, SupervisorMsg};
use crate::actors::tier_actor::{Maintenance, TierActorArgs};
use crate::config::{ConfigError, NodeConfig};
use crate::metrics::CacheCollector;
use crate::status::{ActorState, NodeStatus};

/// The cluster's maintenance tick (coherence repair deadlines, heartbeats, ring refresh).
const CLUSTER_TICK: Duration = Duration::from_millis(100);

/// How long `shutdown` waits for the actors to stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a node could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A layer could not be built from a valid config.
    #[error("cannot build {layer}: {reason}")]
    Layer {
        /// The layer.
        layer: Layer,
        /// Why.
        reason: String,
    },
    /// The supervision tree could not start.
    #[error("cannot start the supervision tree: {0}")]
    Supervisor(String),
}

/// The seams a node takes from its host. The default is the coarse system clock (see
/// `strata_core::time::CoarseClock` for why and for its resolution) and a randomly seeded RNG;
/// tests pass a `ManualClock` and a `SeededRng`.
pub struct NodeDeps {
    /// Time for expiry and versions.
    pub clock: Arc<dyn Clock>,
    /// Randomness for restart jitter.
    pub rng: Box<dyn Rng>,
}

impl Default for NodeDeps {
    fn default() -> Self {
        Self {
            clock: Arc::new(CoarseClock::new()),
            rng: Box::new(SystemRng::new()),
        }
    }
}

/// One layer's health as the node sees it: the tier's own view and its actor's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerHealth {
    /// Which layer.
    pub layer: Layer,
    /// The tier's own health.
    pub tier: TierHealth,
    /// The state of the actor doing its background work.
    pub actor: ActorState,
}

/// The node's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    /// True when every layer serves and every actor runs (and, for a cluster member, its
    /// view holds a majority of `cluster.expected_size`, it places keys as most members
    /// do, and no process that started earlier holds its `node.name`).
    pub ready: bool,
    /// Per-layer detail.
    pub layers: Vec<LayerHealth>,
    /// Actor restarts since start.
    pub restarts_total: u64,
    /// Why the supervisor escalated, if it did.
    pub escalation: Option<String>,
}

/// One configured layer before its actor starts.
struct LayerSlot {
    layer: Layer,
    tier: Arc<dyn Tier>,
    maintenance: Option<(Arc<dyn Maintenance>, Duration)>,
}

/// A running Strata node embedded in the host process.
pub struct Node {
    config: NodeConfig,
    cache: Cache,
    status: Arc<NodeStatus>,
    registry: Arc<Mutex<Registry>>,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_task: JoinHandle<()>,
    /// Layers to close after the actors stop (L3 flushes its memtables).
    stoppers: Vec<Arc<dyn Maintenance>>,
    /// The cluster runtime, when this node is a member.
    cluster: Option<Arc<crate::cluster::Shared>>,
}

/// Sends messages published on this node to the other cluster members
/// ([`Node::publisher`]), in order and at most once.
#[derive(Clone)]
pub struct Publisher(Arc<crate::cluster::Shared>);

impl Publisher {
    /// Queues `payload` on `channel` for the other members' subscribers.
    pub fn publish(&self, channel: &[u8], payload: &[u8]) {
        self.0.forward_publish(channel, payload, false);
    }

    /// Queues `payload` on shard channel `channel` (`SPUBLISH`) for the other members'
    /// shard-channel subscribers.
    pub fn publish_sharded(&self, channel: &[u8], payload: &[u8]) {
        self.0.forward_publish(channel, payload, true);
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.config.node.name)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts a node with the system clock and RNG. Needs a running tokio runtime.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        Self::start_with(config, NodeDeps::default()).await
    }

    /// Starts a node with the given seams.
    pub async fn start_with(config: NodeConfig, mut deps: NodeDeps) -> Result<Node, NodeError> {
        config.validate()?;
        let mut builder = Cache::builder().clock(deps.clock.clone());
        if config.cluster.enabled {
            // Members stamp versions no other member stamps (see `HybridClock::with_tag`).
            builder = builder.version_tag(strata_cluster::version_tag(&config.node.name));
        } else if config.l2.redis.enabled {
            // Nodes sharing a Redis likewise, or two of them could stamp one version on two
            // values in one millisecond. Their names are often the same (the default), so
            // the tag is drawn at random: two nodes share one with a chance of 1 in 256, and
            // then the bridge's script still refuses a second value at a stored version.
            builder = builder.version_tag(deps.rng.next_u64() as u8);
        }
        let mut builder = builder
            // A member drops its L3 copies exactly as its L1 copies on every invalidation,
            // so a local disk read may come before a network round trip to the owners.
            .l3_before_l2(config.cluster.enabled && config.l3.enabled)
            .l3_keeps_writes(config.l3.keep_writes)
            .refuse_writes_on_l3_fault(
                config.l3.enabled
                    && config.l3.on_failure == crate::config::L3OnFailure::RefuseWrites,
            )
            .limits(config.core_limits())
            .default_policy(config.namespace_defaults.to_policy(None));
        for (name, policy) in config.namespace_policies() {
            builder = builder.namespace(&name, policy);
        }
        let mut layers: Vec<LayerSlot> = Vec::new();
        if config.l1.enabled {
            let l1 =
                MemoryTier::new(config.l1_tier_config(), deps.clock.clone()).map_err(|reason| {
                    NodeError::Layer {
                        layer: Layer::L1,
                        reason,
                    }
                })?;
            let l1 = Arc::new(l1);
            builder = builder.l1(l1.clone());
            layers.push(LayerSlot {
                layer: Layer::L1,
                tier: l1,
                maintenance: None,
            });
        }
        let mut attach_l2: Option<Box<dyn FnOnce(Cache) + Send>> = None;
        let mut cluster = None;
        if config.cluster.enabled {
            let shared = crate::cluster::Shared::bind(&config, deps.clock.clone())
                .await
                .map_err(|reason| NodeError::Layer {
                    layer: Layer::L2,
                    reason,
                })?;
            let tier: Arc<dyn Tier> =
                Arc::new(crate::cluster::tier::ClusterTier::new(shared.clone()));
            builder = builder.l2(tier.clone());
            let hook: Arc<dyn Maintenance> =
                Arc::new(crate::cluster::ClusterHook::new(shared.clone()));
            let attach_to = shared.clone();
            attach_l2 = Some(Box::new(move |cache: Cache| {
                // Reads made straight on the cache (an embedded node) wait at the pause
                // gate as the server's commands do.
                cache.set_read_gate(attach_to.pause.clone());
                attach_to.attach_cache(&cache);
            }));
            layers.push(LayerSlot {
                layer: Layer::L2,
                tier,
                maintenance: Some((hook, CLUSTER_TICK)),
            });
            cluster = Some(shared);
        } else if config.l2.redis.enabled {
            let built = crate::l2::build(&config, deps.clock.clone())
                .await
                .map_err(|reason| NodeError::Layer {
                    layer: Layer::L2,
                    reason,
                })?;
            builder = builder.l2(built.tier.clone());
            attach_l2 = Some(built.attach);
            layers.push(LayerSlot {
                layer: Layer::L2,
                tier: built.tier,
                maintenance: Some((built.maintenance, built.maintenance_interval)),
            });
        }
        if config.l3.enabled {
            let built = crate::l3::build(&config, deps.clock.clone()).map_err(|reason| {
                NodeError::Layer {
                    layer: Layer::L3,
                    reason,
                }
            })?;
            builder = builder.l3(built.tier.clone());
            layers.push(LayerSlot {
                layer: Layer::L3,
                tier: built.tier,
                maintenance: Some((
                    built.maintenance,
                    Duration::from_millis(config.l3.maintenance_interval_ms),
                )),
            });
        }
        let cache = builder.build().map_err(|reason| NodeError::Layer {
            layer: Layer::L1,
            reason,
        })?;
        if let Some(attach) = attach_l2 {
            attach(cache.clone());
        }

        let status = Arc::new(NodeStatus::default());
        let stoppers: Vec<Arc<dyn Maintenance>> = layers
            .iter()
            .filter_map(|l| l.maintenance.as_ref().map(|(m, _)| m.clone()))
            .collect();
        let children = layers
            .into_iter()
            .map(
                |LayerSlot {
                     layer,
                     tier,
                     maintenance,
                 }| TierActorArgs {
                    layer,
                    tier,
                    cache: cache.clone(),
                    status: status.clone(),
                    sweep_interval: match layer {
                        Layer::L1 => Some(config.sweep_interval()),
                        Layer::L2 => None,
                        Layer::L3 => Some(Duration::from_millis(config.l3.sweep_interval_ms)),
                    },
                    snapshot_interval: Duration::from_millis(config.metrics.stats_interval_ms),
                    maintenance,
                },
            )
            .collect();
        let (supervisor, supervisor_task) = Actor::spawn(
            None,
            NodeSupervisor,
            SupervisorArgs {
                children,
                policy: config.supervisor.clone(),
                rng: deps.rng,
                status: status.clone(),
            },
        )
        .await
        .map_err(|e| NodeError::Supervisor(e.to_string()))?;

        if let Some(shared) = &cluster
            && config.l3.enabled
        {
            // Restart safety (G3): L3's copies may predate invalidations made while this
            // node was down. They stay off the read path until they are proven current
            // against their owners (`cluster::warm`); what cannot be proven is dropped.
            // (After the supervisor started: L3's actor is what opens the database.)
            crate::cluster::warm::begin(shared.clone(), cache.clone(), true);
        }
        let mut registry = Registry::with_prefix("strata");
        registry.register_collector(Box::new(CacheCollector::new(
            cache.clone(),
            status.clone(),
            stoppers.clone(),
        )));
        tracing::info!(node = %config.node.name, profile = config.profile.as_str(), "node started");
        Ok(Node {
            config,
            cache,
            status,
            registry: Arc::new(Mutex::new(registry)),
            supervisor,
            supervisor_task,
            stoppers,
            cluster,
        })
    }

    /// The cache handle: cheap to clone, reads and writes the layers directly.
    pub fn cache(&self) -> Cache {
        self.cache.clone()
    }

    /// The config the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Actor states, restart counts and snapshots.
    pub fn status(&self) -> &NodeStatus {
        &self.status
    }

    /// The node's Prometheus registry, for an HTTP endpoint to encode (and for the host to
    /// add its own metrics to).
    pub fn registry(&self) -> Arc<Mutex<Registry>> {
        self.registry.clone()
    }

    /// The metrics in Prometheus text format.
    pub fn encode_metrics(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock());
        out
    }

    /// Leaves the cluster ahead of a shutdown, while still answering peers: the node
    /// announces that it leaves, stops executing writes as a primary (a write sent to it
    /// meanwhile is answered `NotPrimary`, so the sender waits for its ring to move to the
    /// next primary instead of failing), and keeps serving reads and replication for up to
    /// `linger`, while the others' rings drop it. Within `handoff` in all, it pushes the
    /// keys it holds to the owners each gets once it (and every other member it finds
    /// leaving at the same time) is gone: first, before it announces the leave, the keys
    /// whose owners all leave (the members that stay hand over only what they hold, so
    /// these would be lost), then every key. (Past `handoff`, what was not pushed
    /// survives only where a member that stays owned it too.) A no-op when the node is
    /// not a member.
    /// `strata serve` calls it after its clients have drained (`handoff` is
    /// `server.shutdown_grace_ms`), before [`Node::shutdown`].
    pub async fn leave_cluster(&self, linger: std::time::Duration, handoff: std::time::Duration) {
        if let Some(c) = &self.cluster {
            c.leaving.store(true, std::sync::atomic::Ordering::Release);
            let ring = c.ring();
            let until = tokio::time::Instant::now() + handoff;
            let mut gone = tokio::time::timeout_at(until, c.leavers())
                .await
                .unwrap_or_else(|_| [c.name.clone()].into());
            // The keys only leavers hold, while the others still count this member: they
            // hold the copies before their rings make them the keys' primaries.
            if tokio::time::timeout_at(until, c.handoff_on_leave(&ring, &mut gone, true))
                .await
                .is_err()
            {
                tracing::warn!(
                    "the keys only leaving members held were not all handed over within {} ms: those not pushed are lost",
                    handoff.as_millis()
                );
            }
            c.leave();
            // Then every key, old owners included, while writes go to the next primaries.
            let rest = tokio::time::timeout_at(until, c.handoff_on_leave(&ring, &mut gone, false));
            let (rest, ()) = tokio::join!(rest, tokio::time::sleep(linger));
            if rest.is_err() {
                tracing::info!(
                    "the other keys were not all pushed again within {} ms; each has an owner that stays",
                    handoff.as_millis()
                );
            }
        }
    }

    /// Installs what delivers pub/sub messages to this node's clients (the server's
    /// subscriptions): messages published on other members arrive through it. Only the first
    /// call takes effect.
    pub fn set_publish_sink(&self, sink: crate::cluster::pubsub::PublishSink) {
        if let Some(c) = &self.cluster {
            let _ = c.relay.sink.set(sink);
        }
    }

    /// A handle that sends messages published on this node to the other members (`None`
    /// when the node is not a cluster member).
    pub fn publisher(&self) -> Option<Publisher> {
        self.cluster.clone().map(Publisher)
    }

    /// Which member is primary of each hash slot, for cluster-aware clients (`None` when the
    /// node is not a cluster member).
    pub fn slots(&self) -> Option<crate::cluster::slots::SlotSource> {
        self.cluster.clone().map(crate::cluster::slots::SlotSource)
    }

    /// Where a server's commands wait after this process was paused, until the copies it
    /// held across the pause are dropped (`None` when the node is not a cluster member;
    /// see [`crate::cluster::pause`]). Reads made straight on [`Node::cache`] wait at it too
    /// ([`strata_core::Cache::set_read_gate`]).
    pub fn pause_gate(&self) -> Option<Arc<crate::cluster::pause::PauseGate>> {
        self.cluster.as_ref().map(|c| c.pause.clone())
    }

    /// The cluster as this node sees it (members, ring, coherence), when it is a member.
    pub fn cluster_status(&self) -> Option<crate::cluster::ClusterStatus> {
        self.cluster.as_ref().map(|c| c.status())
    }

    /// The owners of `key` in this node's current view, its primary first (empty when
    /// this node is not a cluster member). Like Hazelcast's partition owner lookup: for
    /// tooling and tests; a client never needs it, any node routes any key.
    pub fn cluster_owners(&self, key: &[u8]) -> Vec<String> {
        self.cluster
            .as_ref()
            .map(|c| c.owners(key).into_iter().map(|(n, _)| n).collect())
            .unwrap_or_default()
    }

    /// Cuts this node off from the cluster members named: gossip to and from them is
    /// dropped and RPCs to them fail (a partition, for tests; call it on both sides for a
    /// symmetric one). Feature `fault-injection`; never in a production build.
    #[cfg(feature = "fault-injection")]
    pub fn isolate_from(&self, names: &[&str]) {
        if let Some(c) = &self.cluster {
            c.isolate(names);
        }
    }

    /// Makes this node apply no cluster invalidation until called with `false` (an owner
    /// the invalidations have not reached yet, for tests). Feature `fault-injection`; never
    /// in a production build.
    #[cfg(feature = "fault-injection")]
    pub fn ignore_invalidations(&self, ignore: bool) {
        if let Some(c) = &self.cluster {
            c.set_deaf(ignore);
        }
    }

    /// Makes this node, as a key's primary, wait `delay` before it sends each replication
    /// (zero: no wait): a slow link to the replicas, for tests of what runs in between.
    /// Feature `fault-injection`; never in a production build.
    #[cfg(feature = "fault-injection")]
    pub fn delay_replication(&self, delay: std::time::Duration) {
        if let Some(c) = &self.cluster {
            c.set_replicate_delay(delay.as_millis() as u64);
        }
    }

    /// Makes each hand-off this node starts at a ring change wait `delay` before it reads
    /// its owner store (zero: no wait): a slow hand-off, for tests of what runs meanwhile.
    /// Feature `fault-injection`; never in a production build.
    #[cfg(feature = "fault-injection")]
    pub fn delay_handoffs(&self, delay: std::time::Duration) {
        if let Some(c) = &self.cluster {
            c.set_handoff_delay(delay.as_millis() as u64);
        }
    }

    /// Makes this node act as a member of a build from before check-only changes (a
    /// rolling upgrade, for tests): it tells peers it has no features — answering their
    /// `Features`, and announcing none on the connections it opens from now on — and reads
    /// a check-only change as that build did, a removal at version 0. Peers connected
    /// before keep what they were told until they reconnect. Feature `fault-injection`; never in a
    /// production build.
    #[cfg(feature = "fault-injection")]
    pub fn act_as_earlier_build(&self, earlier: bool) {
        if let Some(c) = &self.cluster {
            c.set_earlier_build(earlier);
        }
    }

    /// Check-only changes this node has received as an owner
    /// ([`Node::act_as_earlier_build`]). Feature `fault-injection`; never in a production
    /// build.
    #[cfg(feature = "fault-injection")]
    pub fn check_only_changes_received(&self) -> u64 {
        self.cluster.as_ref().map_or(0, |c| c.checks_received())
    }

    /// How many replications this node has begun waiting before
    /// ([`Node::delay_replication`]): a test's signal that a write is in the window.
    /// Feature `fault-injection`; never in a production build.
    #[cfg(feature = "fault-injection")]
    pub fn replications_delayed(&self) -> u64 {
        self.cluster
            .as_ref()
            .map_or(0, |c| c.replications_delayed())
    }

    /// Stores `entry` in this node's owner store as it is, version and expiry included,
    /// when this node is a cluster member (a copy left by an earlier primary whose clock ran
    /// ahead, for tests). Feature `fault-injection`; never in a production build.
    #[cfg(feature = "fault-injection")]
    pub fn plant_owner_copy(&self, namespace: &str, key: &[u8], entry: strata_core::Entry) {
        if let Some(c) = &self.cluster {
            c.plant_owner_copy(namespace, key, entry);
        }
    }

    /// Makes this node hold every owner-store entry it owns unproven and prove it after the
    /// settle time, as a member that rejoins without its lease does (its lapse taken to
    /// begin now; membership and L1 untouched), and drops the entries of keys it does not
    /// own. Feature `fault-injection`; never in a production build.
    #[cfg(feature = "fault-injection")]
    pub fn rejoin_without_lease(&self) {
        if let Some(c) = &self.cluster {
            c.rejoin_without_lease();
        }
    }

    /// Makes this node drop what it holds as a member that rejoins with its lease held
    /// does: L1, and the owner-store entries of keys it did not own under any ring of the
    /// last seconds (membership untouched). Feature `fault-injection`; never in a
    /// production build.
    #[cfg(feature = "fault-injection")]
    pub fn rejoin_with_lease(&self) {
        if let Some(c) = &self.cluster {
            c.drop_after_rejoin_with_lease();
        }
    }

    /// As [`Node::rejoin_without_lease`], with a lapse that began when this node started (a
    /// run of lapses chained since then). Feature `fault-injection`; never in a production
    /// build.
    #[cfg(feature = "fault-injection")]
    pub fn rejoin_without_lease_since_start(&self) {
        if let Some(c) = &self.cluster {
            c.rejoin_without_lease_from(0);
        }
    }

    /// Makes this node give up on a gap of `origin`'s invalidations, as when the origin
    /// was cut off before the gap was repaired: it drops the copies it does not own, and
    /// its record as a witness starts over for every member but `origin`'s current life.
    /// Feature `fault-injection`; never in a production build.
    #[cfg(feature = "fault-injection")]
    pub fn give_up_gap_of(&self, origin: &str) {
        if let Some(c) = &self.cluster {
            c.give_up_gap_of(origin);
        }
    }

    /// Hands `entry` to this node's peer RPC handler as another member's `Set` of it
    /// arrives — a previous owner's hand-off push, a read repair — and returns whether its
    /// owner store took it (false too when this node is not a cluster member). Feature
    /// `fault-injection`; never in a production build.
    #[cfg(feature = "fault-injection")]
    pub async fn receive_peer_set(
        &self,
        namespace: &str,
        key: &[u8],
        entry: &strata_core::Entry,
    ) -> bool {
        self.receive_push(namespace, key, entry, false).await
    }

    /// As [`Node::receive_peer_set`], as a hand-off batch arrives from a member that read
    /// it after it saw this node's current life up (a ring change's hand-off from a member
    /// of this build). Feature `fault-injection`; never in a production build.
    #[cfg(feature = "fault-injection")]
    pub async fn receive_peer_handoff(
        &self,
        namespace: &str,
        key: &[u8],
        entry: &strata_core::Entry,
    ) -> bool {
        self.receive_push(namespace, key, entry, true).await
    }

    #[cfg(feature = "fault-injection")]
    async fn receive_push(
        &self,
        namespace: &str,
        key: &[u8],
        entry: &strata_core::Entry,
        handoff: bool,
    ) -> bool {
        match &self.cluster {
            Some(c) => c.receive_push(namespace, key, entry, handoff).await,
            None => false,
        }
    }

    /// Hands this node, as one of `key`'s replicas, its primary's removal of `key` at
    /// `version` — a `DEL` by a primary whose clock runs ahead — and returns whether it was
    /// applied (false too when this node is not a cluster member). Feature
    /// `fault-injection`; never in a production build.
    #[cfg(feature = "fault-injection")]
    pub fn receive_replicated_removal(&self, namespace: &str, key: &[u8], version: u64) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.receive_replicated_removal(namespace, key, version))
    }

    /// This node's owner-store copy of `key`, fresh or inside its stale grace (`None` when
    /// it holds none or is not a cluster member), looked at without counting a read. Feature `fault-injection`; never in a production build.
    #[cfg(feature = "fault-injection")]
    pub fn owner_copy(&self, namespace: &str, key: &[u8]) -> Option<strata_core::Entry> {
        self.cluster.as_ref()?.owner_copy(namespace, key)
    }

    /// Drops this node's owner-store copy of `key` as a full owner store evicts it (no
    /// removal recorded); whether it held one. Feature `fault-injection`; never in a
    /// production build.
    #[cfg(feature = "fault-injection")]
    pub fn evict_owner_copy(&self, namespace: &str, key: &[u8]) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.evict_owner_copy(namespace, key))
    }

    /// Plain `SET`s, `DEL`s and `GETDEL`s this node executed as primary without reading
    /// the other owners first (`cluster_writes_unread_total`). Feature `fault-injection`;
    /// never in a production build.
    #[cfg(feature = "fault-injection")]
    pub fn unread_writes(&self) -> u64 {
        self.cluster.as_ref().map_or(0, |c| c.unread_writes())
    }

    /// Lifts [`Node::isolate_from`].
    #[cfg(feature = "fault-injection")]
    pub fn heal_network(&self) {
        if let Some(c) = &self.cluster {
            c.heal();
        }
    }

    /// Per-layer health, combining each tier's view and its actor's state.
    pub fn health(&self) -> NodeHealth {
        let actors = self.status.actors();
        let layers: Vec<LayerHealth> = self
            .cache
            .health()
            .layers
            .into_iter()
            .map(|(layer, tier)| LayerHealth {
                layer,
                tier,
                actor: actors.get(&layer).cloned().unwrap_or(ActorState::Stopped),
            })
            .collect();
        let escalation = self.status.escalation();
        // A cluster member whose view holds no majority of the cluster is not ready (its
        // L2 layer says why).
        let quorum = self
            .cluster
            .as_ref()
            .is_none_or(|c| c.not_ready().is_none());
        NodeHealth {
            ready: escalation.is_none()
                && quorum
                && layers
                    .iter()
                    .all(|l| l.tier.is_serving() && l.actor == ActorState::Running),
            layers,
            restarts_total: self.status.restarts_total(),
            escalation,
        }
    }

    /// Makes the actor of `layer` panic, as a chaos test of supervision (like Redis's
    /// `DEBUG SEGFAULT`, but the node survives): the supervisor restarts it, and the cache
    /// keeps serving throughout.
    pub fn inject_fault(&self, layer: Layer) {
        let _ = self.supervisor.cast(SupervisorMsg::InjectFault(layer));
    }

    /// Stops the actors and waits for them. Cache handles still held elsewhere keep working
    /// on the in-memory layers, without background sweeps.
    pub async fn shutdown(mut self) {
        let _ = self
            .supervisor
            .stop_and_wait(Some("shutdown".into()), Some(SHUTDOWN_TIMEOUT))
            .await;
        let _ = (&mut self.supervisor_task).await;
        for m in self.stoppers.drain(..) {
            let _ = crate::actors::tier_actor::run_hook(&m, |m| m.stop()).await;
        }
        tracing::info!(node = %self.config.node.name, "node stopped");
    }
}

impl Drop for Node {
    /// A node dropped without `shutdown` still stops its actors (without waiting for them),
    /// so that no sweep outlives it.
    fn drop(&mut self) {
        self.supervisor.stop(Some("node dropped".into()));
    }
}
