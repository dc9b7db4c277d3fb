//! The cluster runtime: the I/O around `strata-cluster`'s sans-IO state machines.
//!
//! - **Gossip** (UDP, every packet sealed with the cluster secret): a receive task feeds
//!   packets to `Membership`, a timer task fires the timers it asks for, and what it
//!   outputs is carried out here (packets sent, members up and down, coherence items).
//! - **Coherence**: invalidations originated on this node are batched by a disseminator
//!   task and sent as foca custom broadcasts with a gossip round at once (or, under load,
//!   pushed over the peer connections); received ones are applied in sequence order by an
//!   applier task to the owner store and to the node's own copies (L1, L3).
//! - **Peer RPC** (TCP, `peer`): owner reads and writes, gap repair, strict
//!   invalidations and the anti-entropy ping.
//! - **The owner store**: a memory tier holding the keys this node owns; the cluster L2
//!   tier (`tier::ClusterTier`) reads and writes the owners of each key.
//!
//! The L2 layer actor runs all of it: its hook (`ClusterHook`) starts the tasks, and its
//! 100 ms maintenance tick drives coherence (gap repair, heartbeats, the anti-entropy pull),
//! refreshes the ring and sweeps the owner store. A restarted actor restarts the tasks;
//! the state (membership, coherence, sockets) lives on in `Shared`.

pub(crate) mod net;
pub(crate) mod peer;
pub(crate) mod primary;
pub(crate) mod tier;
pub(crate) mod warm;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use strata_cluster::coherence::{self, Item};
use strata_cluster::handshake;
use strata_cluster::membership::{MembershipTimer, Output};
use strata_cluster::placement;
use strata_cluster::rpc::{self, Frame, Request, Response, WireEntry};
use strata_cluster::{
    Authenticator, Coherence, CoherenceConfig, Invalidation, InvalidationOp, Membership,
    NodeIdentity, Ring,
};
use strata_core::glob::Glob;
use strata_core::{
    Cache, Clock, Entry, HybridClock, MemoryTier, MemoryTierConfig, Tags, Tier, Version,
};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::net::{TcpListener, UdpSocket};
use crate::actors::tier_actor::{LayerMetric, Maintenance};
use crate::config::{ClusterConfig, NodeConfig};
use crate::pending::Pending;
use crate::tls;

/// Largest gossip datagram read.
const MAX_DATAGRAM: usize = 64 * 1024;
/// Maintenance ticks between heartbeats and anti-entropy pulls (5 × 100 ms).
const HEARTBEAT_EVERY: u64 = 5;
/// Maintenance ticks between owner-store sweeps and ring refreshes (10 × 100 ms).
const SWEEP_EVERY: u64 = 10;
/// foca broadcast items queued above which invalidations are pushed over the peer
/// connections instead of gossiped.
const GOSSIP_BACKLOG: usize = 16;
/// Keys per batch when walking the owner store.
const SCAN_BATCH: usize = 1024;

/// Peer connections allowed in the handshake at once. A new one beyond it closes the oldest
/// (rather than being refused itself), so connections an attacker leaves idle cannot keep a
/// member out: to starve members it would have to open connections faster than a member's
/// handshake completes (about a millisecond). Members open one connection per peer pair, so
/// this is far above what a healthy cluster needs.
pub(crate) const MAX_UNAUTHENTICATED: usize = 64;

/// How long a handshake waits for gossip to make its caller a member (see
/// `Shared::wait_for_member`).
const MEMBER_WAIT: Duration = Duration::from_secs(1);

/// Cluster counters (exported as metrics and in `/cluster`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) rejected_connections: AtomicU64,
    pub(crate) rpc_served: AtomicU64,
    pub(crate) remote_reads: AtomicU64,
    pub(crate) remote_hits: AtomicU64,
    pub(crate) handoff_reads: AtomicU64,
    pub(crate) handoff_pushes: AtomicU64,
    pub(crate) refused_stale: AtomicU64,
    pub(crate) applied: AtomicU64,
    pub(crate) drops_unverified: AtomicU64,
    pub(crate) strict_invalidations: AtomicU64,
    pub(crate) ring_changes: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) pushed_batches: AtomicU64,
    /// L3 copies a restart proved current and kept ([`warm`]).
    pub(crate) warm_kept: AtomicU64,
    /// L3 copies a restart could not prove and dropped.
    pub(crate) warm_dropped: AtomicU64,
    /// `Versions` calls a restart made to prove them.
    pub(crate) warm_calls: AtomicU64,
    /// Writes executed here as the key's primary.
    pub(crate) executed: AtomicU64,
    /// Writes sent to another node, the key's primary.
    pub(crate) forwarded: AtomicU64,
    /// Replications fenced off (refused here, or refused to this node as primary).
    pub(crate) fenced: AtomicU64,
    /// Replications skipped because the owner's process was gone (connection refused).
    pub(crate) replica_down: AtomicU64,
    /// Executions redone because an owner held a newer copy than the primary's.
    pub(crate) stale_base: AtomicU64,
}

/// The state of L3 proofs ([`warm`]).
#[derive(Debug, Default)]
pub(crate) struct WarmState {
    /// The latest proof's number: only it may put L3 back on the read path, decided under
    /// this lock (a newer proof takes L3 off under it too).
    pub(crate) run: Mutex<u64>,
    /// While a restarted member's proof waits out its settle time: owner-store read repair
    /// is off (a copy read then may predate an invalidation its baseline counted as
    /// applied).
    pub(crate) settling: AtomicBool,
}

/// The ring and the live members, as last computed from membership.
struct View {
    ring: Arc<Ring>,
    /// The ring before the last change, and when it changed (for hand-off reads).
    previous: Vec<(Arc<Ring>, Instant)>,
    members: BTreeMap<String, NodeIdentity>,
}

/// Work for the applier task.
enum Work {
    Apply(Invalidation),
    DropUnverified { origin: String, lost: u64 },
}

/// Everything the cluster's tasks and the L2 tier share.
pub(crate) struct Shared {
    pub(crate) cfg: ClusterConfig,
    pub(crate) name: String,
    /// This life's generation (Unix ms at start): coherence sequence numbers belong to it.
    pub(crate) generation: u64,
    pub(crate) clock: Arc<dyn Clock>,
    /// Versions of invalidations made without a cache attached (the contract tests).
    hlc: HybridClock,
    membership: Mutex<Option<Membership>>,
    pub(crate) coherence: Mutex<Coherence>,
    view: RwLock<View>,
    pub(crate) owner: MemoryTier,
    socket: Arc<UdpSocket>,
    listener: Arc<TcpListener>,
    pub(crate) pool: peer::Pool,
    auth: Authenticator,
    timers: Mutex<BTreeMap<(Instant, u64), MembershipTimer>>,
    timer_seq: AtomicU64,
    wake: Notify,
    work_tx: mpsc::UnboundedSender<Work>,
    /// Invalidations made here, waiting for the disseminator.
    outbox: Mutex<Vec<Invalidation>>,
    outbox_wake: Notify,
    work_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Work>>,
    pub(crate) cache: OnceLock<Cache>,
    pub(crate) counters: Counters,
    pub(crate) warm: WarmState,
    /// The primary's per-key execution lock, striped ([`primary`]).
    exec_locks: Box<[tokio::sync::Mutex<()>]>,
    /// This node's own stalls, seen from its tick: a node that stalled executes no write
    /// as a primary until its quarantine ends ([`strata_cluster::primary::StallGuard`]).
    pub(crate) stall: Mutex<strata_cluster::primary::StallGuard>,
    /// The monotonic origin of the stall guard's clock.
    started: Instant,
    joined: AtomicBool,
    ticks: AtomicU64,
    max_frame: usize,
    /// Mutual TLS on the RPC port (`cluster.tls`): the acceptor's and the dialer's configs.
    tls: Option<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)>,
    /// Connections still in the handshake, oldest first, each with the switch that closes
    /// it ([`MAX_UNAUTHENTICATED`]).
    unauthenticated: Mutex<Pending>,
    /// When the last "closed the oldest" warning was logged (Unix ms).
    evict_logged_ms: AtomicU64,
    /// Test-only network faults (feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
    pub(crate) faults: Faults,
}

/// Peers this node cannot reach, for partition tests (feature `fault-injection`): gossip to
/// and from their gossip addresses is dropped, and RPCs to them fail at once.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    gossip: RwLock<std::collections::HashSet<SocketAddr>>,
}

#[cfg(feature = "fault-injection")]
impl Shared {
    /// Cuts this node off from the members named (in its current view).
    pub(crate) fn isolate(&self, names: &[&str]) {
        let v = self.view.read();
        let mut g = self.faults.gossip.write();
        for n in names {
            if let Some(id) = v.members.get(*n) {
                g.insert(id.gossip);
            }
            self.pool.block(n);
        }
    }

    /// Lifts every fault.
    pub(crate) fn heal(&self) {
        self.faults.gossip.write().clear();
        self.pool.unblock_all();
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterShared")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

fn addr_or_unspecified(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

impl Shared {
    /// Binds the gossip and RPC sockets and builds the state; nothing runs until the hook
    /// starts.
    pub(crate) async fn bind(
        config: &NodeConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, String> {
        let c = config.cluster.clone();
        let secret = c.secret.clone().unwrap_or_default();
        let socket = UdpSocket::bind(&c.gossip_listen)
            .await
            .map_err(|e| format!("cannot bind cluster.gossip_listen {}: {e}", c.gossip_listen))?;
        let listener = TcpListener::bind(&c.rpc_listen)
            .await
            .map_err(|e| format!("cannot bind cluster.rpc_listen {}: {e}", c.rpc_listen))?;
        let advertise: Option<std::net::IpAddr> =
            c.advertise.as_deref().and_then(|a| a.parse().ok());
        let announced = |mut a: SocketAddr, always: bool| {
            if let Some(ip) = advertise.filter(|_| always || a.ip().is_unspecified()) {
                a.set_ip(ip);
            }
            a
        };
        let gossip = announced(socket.local_addr().map_err(|e| e.to_string())?, true);
        let rpc_addr = announced(listener.local_addr().map_err(|e| e.to_string())?, true);
        let generation = clock.now_ms().max(1);
        let identity = NodeIdentity {
            name: config.node.name.clone(),
            gossip,
            rpc: rpc_addr,
            resp: announced(addr_or_unspecified(&config.server.resp_listen), false),
            admin: announced(addr_or_unspecified(&config.server.admin_listen), false),
            generation,
        };
        let seeds: Vec<SocketAddr> = c.seeds.iter().filter_map(|s| s.parse().ok()).collect();
        let membership = Membership::new(
            identity.clone(),
            strata_cluster::lan_config(c.expected_size),
            generation ^ peer::nonce(),
            secret.as_bytes(),
            seeds,
        );
        let coherence = Coherence::new(
            config.node.name.clone(),
            generation,
            CoherenceConfig {
                max_staleness_ms: c.max_staleness_ms,
                ..CoherenceConfig::default()
            },
        );
        let owner = MemoryTier::new(
            MemoryTierConfig::with_capacity(c.owner_capacity_bytes),
            clock.clone(),
        )?;
        let auth = Authenticator::new(secret.as_bytes());
        let max_frame = (config.limits.max_value_bytes as usize)
            .saturating_add(config.limits.max_key_bytes as usize)
            .saturating_add(64 * 1024);
        let tls_configs = match &c.tls {
            Some(t) => Some(tls::peer_configs(t).map_err(|e| format!("cluster.tls: {e}"))?),
            None => None,
        };
        let pool = peer::Pool::new(
            config.node.name.clone(),
            generation,
            auth.clone(),
            tls_configs.as_ref().map(|(_, client)| client.clone()),
            Duration::from_millis(c.rpc_timeout_ms),
            Duration::from_millis(c.connect_timeout_ms),
            max_frame,
        );
        let mut members = BTreeMap::new();
        members.insert(identity.name.clone(), identity);
        let ring = Arc::new(Ring::new([config.node.name.clone()], c.vnodes));
        let (work_tx, work_rx) = mpsc::unbounded_channel();
        tracing::info!(node = %config.node.name, %gossip, rpc = %rpc_addr, generation, "cluster sockets bound");
        Ok(Arc::new(Shared {
            name: config.node.name.clone(),
            generation,
            clock,
            hlc: HybridClock::with_tag(strata_cluster::version_tag(&config.node.name)),
            membership: Mutex::new(Some(membership)),
            coherence: Mutex::new(coherence),
            view: RwLock::new(View {
                ring,
                previous: Vec::new(),
                members,
            }),
            owner,
            socket: Arc::new(socket),
            listener: Arc::new(listener),
            pool,
            auth,
            timers: Mutex::new(BTreeMap::new()),
            timer_seq: AtomicU64::new(0),
            wake: Notify::new(),
            work_tx,
            outbox: Mutex::new(Vec::new()),
            outbox_wake: Notify::new(),
            work_rx: tokio::sync::Mutex::new(work_rx),
            cache: OnceLock::new(),
            counters: Counters::default(),
            warm: WarmState::default(),
            exec_locks: (0..primary::EXEC_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            stall: Mutex::new(Default::default()),
            started: Instant::now(),
            joined: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            max_frame,
            unauthenticated: Mutex::new(Pending::new(MAX_UNAUTHENTICATED)),
            evict_logged_ms: AtomicU64::new(0),
            tls: tls_configs,
            #[cfg(feature = "fault-injection")]
            faults: Faults::default(),
            cfg: c,
        }))
    }

    /// Milliseconds since this node's cluster state was built, on a monotonic clock.
    pub(crate) fn monotonic_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A fresh version for an invalidation made here (the cache's HLC when attached).
    pub(crate) fn stamp(&self) -> Version {
        match self.cache.get() {
            Some(c) => c.observe_version(self.hlc.last()),
            None => self.hlc.tick(self.now_ms()),
        }
    }

    /// Makes later stamps order after `v`.
    pub(crate) fn observe(&self, v: Version) {
        self.hlc.observe(v, self.now_ms());
        if let Some(c) = self.cache.get() {
            c.observe_version(v);
        }
    }

    pub(crate) fn ring(&self) -> Arc<Ring> {
        self.view.read().ring.clone()
    }

    /// The owners of a key in the current view, as (name, rpc address), first owner first.
    pub(crate) fn owners(&self, namespace: &str, key: &[u8]) -> Vec<(String, SocketAddr)> {
        let v = self.view.read();
        v.ring
            .owners(namespace, key, self.cfg.replication_factor as usize)
            .into_iter()
            .filter_map(|n| v.members.get(n).map(|id| (n.to_owned(), id.rpc)))
            .collect()
    }

    /// The nodes a read of the key asks, in order (`placement::read_plan`: the owners,
    /// then the previous owners while the hand-off window is open), as (name, rpc address),
    /// and how many of them are current owners.
    pub(crate) fn read_plan(
        &self,
        namespace: &str,
        key: &[u8],
    ) -> (Vec<(String, SocketAddr)>, usize) {
        let v = self.view.read();
        let window = Duration::from_millis(self.cfg.handoff_window_ms);
        let previous: Vec<&Ring> = v
            .previous
            .iter()
            .filter(|(_, at)| at.elapsed() <= window)
            .map(|(r, _)| &**r)
            .collect();
        let rf = self.cfg.replication_factor as usize;
        let plan = placement::read_plan(&v.ring, &previous, namespace, key, rf);
        let current = placement::current_owners(&v.ring, rf);
        let mut out = Vec::with_capacity(plan.len());
        let mut owners = 0;
        for (i, n) in plan.into_iter().enumerate() {
            if let Some(id) = v.members.get(&n) {
                if i < current {
                    owners += 1;
                }
                out.push((n, id.rpc));
            }
        }
        (out, owners)
    }

    /// Every live member but this node, as (name, rpc address).
    pub(crate) fn others(&self) -> Vec<(String, SocketAddr)> {
        self.view
            .read()
            .members
            .values()
            .filter(|id| id.name != self.name)
            .map(|id| (id.name.clone(), id.rpc))
            .collect()
    }

    fn is_primary(&self, namespace: &str, key: &[u8]) -> bool {
        self.view
            .read()
            .ring
            .owners(namespace, key, 1)
            .first()
            .is_none_or(|n| *n == self.name)
    }

    fn owns(&self, namespace: &str, key: &[u8]) -> bool {
        self.view
            .read()
            .ring
            .owners(namespace, key, self.cfg.replication_factor as usize)
            .contains(&self.name.as_str())
    }

    // ----- membership outputs -----

    fn with_membership(self: &Arc<Self>, f: impl FnOnce(&mut Membership) -> Vec<Output>) {
        let out = match self.membership.lock().as_mut() {
            Some(m) => f(m),
            None => return,
        };
        self.carry_out(out);
    }

    fn carry_out(self: &Arc<Self>, outputs: Vec<Output>) {
        let mut changed = false;
        for o in outputs {
            match o {
                Output::Send { to, packet } => {
                    #[cfg(feature = "fault-injection")]
                    if self.faults.gossip.read().contains(&to) {
                        continue;
                    }
                    if self.socket.try_send_to(&packet, to).is_err() {
                        self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Output::Schedule { timer, after } => {
                    let seq = self.timer_seq.fetch_add(1, Ordering::Relaxed);
                    self.timers
                        .lock()
                        .insert((Instant::now() + after, seq), timer);
                    self.wake.notify_one();
                }
                Output::Up(id) => {
                    tracing::info!(node = %self.name, member = %id.name, generation = id.generation, "member up");
                    let out = self.coherence.lock().member_up(&id.name, id.generation);
                    if let Some(out) = out {
                        self.carry_out_coherence(vec![out]);
                    }
                    changed = true;
                }
                Output::Down(id) => {
                    tracing::warn!(node = %self.name, member = %id.name, generation = id.generation, "member down");
                    let out = self.coherence.lock().member_down(&id.name, id.generation);
                    self.pool.forget(&id.name);
                    self.carry_out_coherence(vec![out]);
                    changed = true;
                }
                Output::Received(bytes) => {
                    let out = self.coherence.lock().receive(self.now_ms(), &bytes);
                    self.carry_out_coherence(out);
                }
            }
        }
        if changed {
            self.refresh_view();
        }
    }

    /// Recomputes the members and the ring from membership; on a change of ring, keeps the
    /// old one for hand-off reads and pushes owned entries to their new owners.
    fn refresh_view(self: &Arc<Self>) {
        let Some((live, ring)) = self
            .membership
            .lock()
            .as_ref()
            .map(|m| (m.live(), m.ring(self.cfg.vnodes)))
        else {
            return;
        };
        let mut v = self.view.write();
        v.members = live.into_iter().map(|id| (id.name.clone(), id)).collect();
        if ring.version() != v.ring.version() {
            let old = std::mem::replace(&mut v.ring, Arc::new(ring));
            tracing::info!(node = %self.name, members = v.ring.nodes().len(), ring = v.ring.version(), "ring changed");
            v.previous.insert(0, (old.clone(), Instant::now()));
            v.previous.truncate(placement::MAX_PREVIOUS_RINGS);
            self.counters.ring_changes.fetch_add(1, Ordering::Relaxed);
            let new = v.ring.clone();
            drop(v);
            let me = self.clone();
            tokio::spawn(async move { me.push_handoff(&old, &new).await });
        }
    }

    // ----- coherence -----

    pub(crate) fn carry_out_coherence(self: &Arc<Self>, outputs: Vec<coherence::Output>) {
        for o in outputs {
            match o {
                coherence::Output::Broadcast(bytes) => {
                    self.with_membership(|m| m.broadcast_now(&bytes));
                }
                coherence::Output::Apply(inv) => {
                    let _ = self.work_tx.send(Work::Apply(inv));
                }
                coherence::Output::DropUnverified { origin, lost } => {
                    let _ = self.work_tx.send(Work::DropUnverified { origin, lost });
                }
                coherence::Output::Repair {
                    origin,
                    generation,
                    from,
                    to,
                } => {
                    let Some(addr) = self.view.read().members.get(&origin).map(|id| id.rpc) else {
                        continue;
                    };
                    let me = self.clone();
                    tokio::spawn(async move {
                        let req = Request::Invalidations {
                            origin: origin.clone(),
                            from,
                            to,
                        };
                        if let Ok(Response::Invalidations(items)) =
                            me.pool.call(&origin, addr, req, None).await
                        {
                            tracing::debug!(node = %me.name, %origin, generation, from, to, got = items.len(), "gap repaired");
                            for item in items {
                                let out = me.coherence.lock().receive(me.now_ms(), &item);
                                me.carry_out_coherence(out);
                            }
                        }
                    });
                }
            }
        }
    }

    /// Stamps an invalidation made on this node; the caller disseminates it with
    /// [`Shared::publish`] (after a strict round, so that members count what they remove
    /// for the round rather than for the gossip).
    pub(crate) fn originate(&self, version: Version, op: InvalidationOp) -> Invalidation {
        if let InvalidationOp::Key { namespace, key } = &op
            && let Some(e) = self.owner.get_entry(namespace, key)
            && e.version < version
        {
            // This node's own store may hold an older value of a key it no longer owns
            // (found by the simulator); its own items never come back to it, so it drops
            // that value here.
            self.owner.remove_sync(namespace, key);
        }
        // The state machine's own broadcast output is one item per invalidation; the
        // disseminator batches them instead (see `disseminate_loop`).
        self.coherence
            .lock()
            .originate(self.now_ms(), version.as_u64(), op)
            .0
    }

    /// Queues an invalidation made here for dissemination.
    pub(crate) fn publish(&self, inv: Invalidation) {
        self.outbox.lock().push(inv);
        self.outbox_wake.notify_one();
    }

    /// Disseminates what [`Shared::publish`] queued: whatever accumulated since the last
    /// round goes out as batches, so a burst of writes costs a few items rather than one
    /// each.
    ///
    /// - Normally as foca custom broadcasts, each with a gossip round sent at once.
    /// - Under load, when foca's broadcast backlog is over [`GOSSIP_BACKLOG`] items (each
    ///   item is retransmitted several times, a packet carries two or three, and the
    ///   backlog is scanned on every add), pushed to every live member over the peer
    ///   connections instead (`Push`: one frame per batch per member).
    /// - An invalidation too large for a gossip packet (a long key or pattern) is pushed.
    ///
    /// Either way the heartbeats and the anti-entropy ping reveal anything a member missed,
    /// and it repairs the gap from this node's log.
    async fn disseminate_loop(self: Arc<Self>) {
        loop {
            self.outbox_wake.notified().await;
            let invs = std::mem::take(&mut *self.outbox.lock());
            if invs.is_empty() {
                continue;
            }
            let backlog = self
                .membership
                .lock()
                .as_ref()
                .map_or(0, Membership::broadcast_backlog);
            for item in Item::batches(&invs) {
                if backlog < GOSSIP_BACKLOG && item.len() <= coherence::MAX_BATCH_BYTES {
                    self.with_membership(|m| m.broadcast_now(&item));
                    continue;
                }
                self.counters.pushed_batches.fetch_add(1, Ordering::Relaxed);
                for (name, addr) in self.others() {
                    let (me, item) = (self.clone(), item.clone());
                    tokio::spawn(async move {
                        let _ = me
                            .pool
                            .call(&name, addr, Request::Push { item }, None)
                            .await;
                    });
                }
            }
        }
    }

    /// Sends `inv` to every other live member and waits until each has applied it (or
    /// failed to answer in time). Returns the entries removed from owner stores, counting
    /// each key once (on its first owner), and the members that did not confirm.
    pub(crate) async fn strict(self: &Arc<Self>, inv: &Invalidation) -> (u64, Vec<String>) {
        self.counters
            .strict_invalidations
            .fetch_add(1, Ordering::Relaxed);
        let item = Item::Invalidation(inv.clone()).encode();
        let calls = self.others().into_iter().map(|(name, addr)| {
            let item = item.clone();
            async move {
                match self
                    .pool
                    .call(&name, addr, Request::Apply { item }, None)
                    .await
                {
                    Ok(Response::Applied { removed }) => Ok(removed),
                    Ok(other) => {
                        tracing::warn!(peer = %name, ?other, "unexpected answer to a strict invalidation");
                        Err(name)
                    }
                    Err(e) => {
                        tracing::warn!(peer = %name, error = %e, "a member did not confirm a strict invalidation");
                        Err(name)
                    }
                }
            }
        });
        let mut removed = 0;
        let mut missing = Vec::new();
        for r in futures_util::future::join_all(calls).await {
            match r {
                Ok(n) => removed += n,
                Err(name) => missing.push(name),
            }
        }
        (removed, missing)
    }

    /// Applies an invalidation on this node: the owner store, then the node's own copies.
    /// Returns how many owner-store entries it removed of keys this node is first owner of.
    pub(crate) async fn apply(&self, inv: &Invalidation) -> u64 {
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        let version = Version::from_u64(inv.version);
        self.observe(version);
        let cache = self.cache.get();
        match &inv.op {
            InvalidationOp::Key { namespace, key } => {
                let mut n = 0;
                if let Some(e) = self.owner.get_entry(namespace, key)
                    && e.version < version
                    && Tier::remove_version(&self.owner, namespace, key, e.version)
                        .await
                        .unwrap_or(false)
                    && self.is_primary(namespace, key)
                {
                    n = 1;
                }
                if let Some(c) = cache {
                    let _ = c.drop_local(namespace, key, Some(version)).await;
                }
                n
            }
            InvalidationOp::Pattern { namespace, pattern } => {
                let Ok(glob) = Glob::new(pattern) else {
                    return 0;
                };
                let n = self.remove_owned_where(namespace, |k, _| glob.matches(k));
                if let Some(c) = cache {
                    let _ = c.drop_local_pattern(namespace, pattern).await;
                }
                n
            }
            InvalidationOp::Tag { namespace, tag } => {
                let n = self.remove_owned_where(namespace, |_, e| e.tags.contains(tag));
                if let Some(c) = cache {
                    let _ = c.drop_local_tag(namespace, tag).await;
                }
                n
            }
            InvalidationOp::Flush { namespace } => {
                let n = self.remove_owned_where(namespace, |_, _| true);
                if let Some(c) = cache {
                    let _ = c.drop_local_namespace(namespace).await;
                }
                n
            }
        }
    }

    /// Removes the owner store's entries of `namespace` that `pred` selects; returns how
    /// many of them this node is first owner of.
    fn remove_owned_where(&self, namespace: &str, pred: impl Fn(&[u8], &Entry) -> bool) -> u64 {
        let mut n = 0;
        let mut after: Option<Bytes> = None;
        loop {
            let keys = self
                .owner
                .scan_keys_sync(namespace, after.as_deref(), SCAN_BATCH);
            let done = keys.len() < SCAN_BATCH;
            for k in &keys {
                if let Some(e) = self.owner.get_entry(namespace, k)
                    && pred(k, &e)
                    && self.owner.remove_sync(namespace, k)
                    && self.is_primary(namespace, k)
                {
                    n += 1;
                }
            }
            after = keys.last().cloned();
            if done || after.is_none() {
                return n;
            }
        }
    }

    /// Invalidations of some origin may have been lost: drop every copy this node holds
    /// of keys it does not own (L1, and owner-store entries it no longer owns); L3 leaves
    /// the read path until its copies are proven current against their owners again
    /// ([`warm`]), which drops the rest.
    async fn drop_unverified(self: &Arc<Self>, origin: &str, lost: u64) {
        self.counters
            .drops_unverified
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(node = %self.name, %origin, lost, "invalidations may have been lost; dropping unverified copies");
        if let Some(c) = self.cache.get() {
            c.drop_local_everything(false).await;
            warm::begin(self.clone(), c.clone(), false);
        }
        for ns in self.owner.namespace_names() {
            if lost > 0 {
                // Invalidations known to exist were never applied: they may cover keys this
                // node owns too (an owner cut off when a key was deleted hears of it only
                // through them), so owned entries go as well; reads fall through to the
                // other owners. (Found by the turmoil test: a minority node whose repairs
                // after a partition failed kept serving a key deleted meanwhile, for good.)
                self.owner.flush_namespace_sync(&ns);
            } else {
                self.remove_owned_where(&ns, |k, _| !self.owns(&ns, k));
            }
        }
    }

    // ----- hand-off -----

    /// After the ring changed from `old` to `new`: sends up to `handoff_push_limit` of the
    /// owner store's entries to owners that did not own them before.
    async fn push_handoff(self: &Arc<Self>, old: &Ring, new: &Ring) {
        let rf = self.cfg.replication_factor as usize;
        let mut budget = self.cfg.handoff_push_limit as usize;
        let members: BTreeMap<String, SocketAddr> = self
            .view
            .read()
            .members
            .values()
            .map(|id| (id.name.clone(), id.rpc))
            .collect();
        'outer: for ns in self.owner.namespace_names() {
            let mut after: Option<Bytes> = None;
            loop {
                let keys = self.owner.scan_keys_sync(&ns, after.as_deref(), SCAN_BATCH);
                let done = keys.len() < SCAN_BATCH;
                for k in &keys {
                    if budget == 0 {
                        break 'outer;
                    }
                    let targets = placement::handoff_targets(old, new, &self.name, &ns, k, rf);
                    if targets.is_empty() {
                        continue;
                    }
                    let Some(e) = self.owner.get_entry(&ns, k) else {
                        continue;
                    };
                    for t in targets {
                        let Some(addr) = members.get(&t) else {
                            continue;
                        };
                        budget = budget.saturating_sub(1);
                        let req = Request::Set {
                            namespace: ns.clone(),
                            key: k.to_vec(),
                            entry: to_wire(&e),
                        };
                        if self.pool.call(&t, *addr, req, None).await.is_ok() {
                            self.counters.handoff_pushes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                after = keys.last().cloned();
                if done || after.is_none() {
                    break;
                }
            }
        }
    }

    // ----- the RPC server -----

    /// Whether `name` is a member of this node's view, waiting up to [`MEMBER_WAIT`] for
    /// gossip to bring it: a node that has just joined may call before its announcement
    /// reached this one.
    async fn wait_for_member(&self, name: &str) -> bool {
        let deadline = Instant::now() + MEMBER_WAIT;
        loop {
            if self.view.read().members.contains_key(name) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn serve_rpc(self: Arc<Self>) {
        loop {
            let (stream, from) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster rpc accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.clone().serve_conn(stream, from).await {
                    me.counters
                        .rejected_connections
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %me.name, %from, reason = %e, "peer connection refused");
                }
            });
        }
    }

    /// One peer connection: the handshake ([`strata_cluster::handshake`]), then requests
    /// until it closes. Errors of the handshake are returned (the connection is refused and
    /// counted). At most [`MAX_UNAUTHENTICATED`] connections may be in the handshake at
    /// once, each for at most [`peer::HANDSHAKE_TIMEOUT`], and none may send a frame larger
    /// than [`handshake::MAX_HANDSHAKE_FRAME`] before it has proved it holds the secret.
    async fn serve_conn(
        self: Arc<Self>,
        stream: net::TcpStream,
        from: SocketAddr,
    ) -> Result<(), String> {
        // A connection from a member's address is preferred: a flood from other addresses
        // cannot push it out of the handshake (`Pending::enter_as`).
        let preferred = self
            .view
            .read()
            .members
            .values()
            .any(|m| m.rpc.ip() == from.ip() && m.name != self.name);
        let (pending_id, mut evict, evicted) = self.unauthenticated.lock().enter_as(preferred);
        if evicted {
            // The closed connection counts itself as refused when its task ends. A flood
            // would log a line per connection: one line a second says it as well.
            let now = self.now_ms();
            let last = self.evict_logged_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 1000
                && self
                    .evict_logged_ms
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(node = %self.name, "{MAX_UNAUTHENTICATED} connections in the handshake; closing the oldest (logged at most once a second)");
            }
        }
        let mut buf = BytesMut::with_capacity(1024);
        let max = self.max_frame;
        let handshake = async {
            use tokio::io::AsyncWriteExt;
            let (mut read, mut write, cert) = match &self.tls {
                Some((server, _)) => stream
                    .into_tls(net::TlsSide::Server(server.clone()))
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?,
                None => {
                    let (r, w) = stream.into_split();
                    (r, w, None)
                }
            };
            let refuse = |e: String| rpc::to_bytes(&Frame::Response(0, Response::Error(e)));
            let first =
                peer::read_frame(&mut read, &mut buf, handshake::MAX_HANDSHAKE_FRAME).await?;
            let Frame::Request(0, login) = first else {
                return Err("the first frame was not a Login".to_string());
            };
            let (callee, challenge) =
                match handshake::Callee::on_login(&self.name, login, handshake::fresh_nonce()) {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = write.write_all(&refuse(e.to_string())).await;
                        return Err(e.to_string());
                    }
                };
            // Under mutual TLS the certificate must also name the caller: one member's
            // certificate cannot log in as another member.
            if let Some(cert) = &cert
                && !tls::cert_names(cert, callee.caller())
            {
                let why = format!(
                    "the TLS certificate presented is not valid for {:?}",
                    callee.caller()
                );
                let _ = write.write_all(&refuse(why.clone())).await;
                return Err(why);
            }
            if !self.wait_for_member(callee.caller()).await {
                let why = format!("{:?} is not a member of this node's view", callee.caller());
                let _ = write.write_all(&refuse(why.clone())).await;
                return Err(why);
            }
            write
                .write_all(&rpc::to_bytes(&Frame::Response(0, challenge)))
                .await
                .map_err(|e| e.to_string())?;
            let Frame::Request(0, prove) =
                peer::read_frame(&mut read, &mut buf, handshake::MAX_HANDSHAKE_FRAME).await?
            else {
                return Err("the third frame was not a Prove".to_string());
            };
            let latest = self.coherence.lock().latest_seq();
            match callee.on_prove(&self.auth, prove, self.generation, latest) {
                Ok(welcome) => Ok((callee.caller().to_owned(), welcome, read, write)),
                Err(e) => {
                    let _ = write
                        .write_all(&refuse("authentication failed".into()))
                        .await;
                    Err(e.to_string())
                }
            }
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(peer::HANDSHAKE_TIMEOUT, handshake) => {
                r.map_err(|_| "handshake timed out".to_string())
            }
            _ = &mut evict => Err("closed to make room for newer connections".to_string()),
        };
        self.unauthenticated.lock().leave(pending_id);
        let (caller, ok, mut read, write) = outcome??;
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let _ = tx.send(rpc::to_bytes(&Frame::Response(0, ok)));
        let writer = tokio::spawn(peer::write_loop(write, rx));
        tracing::debug!(node = %self.name, peer = %caller, "peer connected");
        loop {
            let frame = loop {
                match rpc::decode(&mut buf, max) {
                    Ok(Some(f)) => break Some(f),
                    Ok(None) => {}
                    Err((Some(id), e)) if e.is_recoverable() => {
                        let _ = tx.send(rpc::to_bytes(&Frame::Response(
                            id,
                            Response::Error(e.to_string()),
                        )));
                        continue;
                    }
                    Err((_, e)) => {
                        tracing::warn!(node = %self.name, peer = %caller, error = %e, "bad frame; closing the connection");
                        break None;
                    }
                }
                use tokio::io::AsyncReadExt;
                match read.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break None,
                    Ok(_) => {}
                }
            };
            let Some(frame) = frame else { break };
            let Frame::Request(id, req) = frame else {
                continue;
            };
            self.counters.rpc_served.fetch_add(1, Ordering::Relaxed);
            let me = self.clone();
            let tx = tx.clone();
            let from = caller.clone();
            tokio::spawn(async move {
                let resp = me.handle(&from, req).await;
                let _ = tx.send(rpc::to_bytes(&Frame::Response(id, resp)));
            });
        }
        drop(tx);
        let _ = writer.await;
        Ok(())
    }

    /// Answers one request from the authenticated peer `from`.
    async fn handle(self: &Arc<Self>, from: &str, req: Request) -> Response {
        match req {
            Request::Hello { .. } | Request::Login { .. } | Request::Prove { .. } => {
                Response::Error("already connected".into())
            }
            Request::Ping => Response::Status {
                generation: self.generation,
                latest: self.coherence.lock().latest_seq(),
            },
            Request::Get { namespace, key } => {
                // The sequence number is read before the store: the copy reflects at least
                // every invalidation up to it.
                let latest = self.coherence.lock().latest_seq();
                let entry = self.owner.get_entry(&namespace, &key).map(|e| to_wire(&e));
                Response::EntryAt {
                    entry,
                    generation: self.generation,
                    latest,
                }
            }
            Request::Set {
                namespace,
                key,
                entry,
            } => {
                let entry = from_wire(entry);
                if !self.coherence.lock().admits_tagged(
                    &namespace,
                    &key,
                    entry.version.as_u64(),
                    &tag_refs(&entry),
                ) {
                    self.counters.refused_stale.fetch_add(1, Ordering::Relaxed);
                    return Response::Stored { kept_newer: true };
                }
                self.observe(entry.version);
                match self.owner.set_sync(&namespace, Bytes::from(key), entry) {
                    Ok(strata_core::SetOutcome::KeptNewer) => Response::Stored { kept_newer: true },
                    Ok(_) => Response::Stored { kept_newer: false },
                    Err(e) => Response::Error(e.to_string()),
                }
            }
            Request::Remove {
                namespace,
                key,
                version,
            } => {
                let version = Version::from_u64(version);
                self.observe(version);
                let removed = match self.owner.get_entry(&namespace, &key) {
                    Some(e) if e.version <= version => {
                        Tier::remove_version(&self.owner, &namespace, &key, e.version)
                            .await
                            .unwrap_or(false)
                    }
                    _ => false,
                };
                Response::Removed(removed)
            }
            Request::Invalidations { origin, from, to } => {
                if origin != self.name {
                    return Response::Invalidations(Vec::new());
                }
                let items = self
                    .coherence
                    .lock()
                    .log_range(self.generation, from, to)
                    .into_iter()
                    .map(|i| Item::Invalidation(i).encode())
                    .collect();
                Response::Invalidations(items)
            }
            Request::Push { item } => {
                let out = self.coherence.lock().receive(self.now_ms(), &item);
                self.carry_out_coherence(out);
                Response::Applied { removed: 0 }
            }
            Request::Apply { item } => {
                let Some(decoded) = Item::decode(&item) else {
                    return Response::Error("undecodable coherence item".into());
                };
                let mut removed = 0;
                if let Item::Invalidation(inv) = &decoded {
                    // Applied now, out of order if need be (invalidations only ever drop),
                    // and fed to coherence too, which keeps the sequence bookkeeping (its
                    // own later apply of the same item is a harmless repeat).
                    removed = self.apply(inv).await;
                }
                let out = self.coherence.lock().receive_item(self.now_ms(), decoded);
                self.carry_out_coherence(out);
                Response::Applied { removed }
            }
            Request::Execute { namespace, key, op } => {
                self.serve_execute(&namespace, &key, &op).await
            }
            Request::Replicate {
                namespace,
                key,
                entry,
                version,
                base,
            } => self.replicate_in(from, &namespace, &key, entry, version, base),
            Request::Versions { namespace, keys } => {
                if keys.len() > strata_cluster::rpc::MAX_VERSIONS_PER_REQUEST {
                    return Response::Error(format!(
                        "at most {} keys per Versions request",
                        strata_cluster::rpc::MAX_VERSIONS_PER_REQUEST
                    ));
                }
                let now = self.now_ms();
                Response::Versions(
                    keys.iter()
                        .map(|k| {
                            self.owner
                                .get_entry(&namespace, k)
                                .filter(|e| e.is_fresh(now))
                                .map(|e| e.version.as_u64())
                        })
                        .collect(),
                )
            }
        }
    }

    // ----- periodic work -----

    /// One maintenance tick (every 100 ms from the L2 actor).
    fn tick(self: &Arc<Self>) {
        let n = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        let was = self.stall.lock().stalls();
        self.stall.lock().tick(self.monotonic_ms());
        if self.stall.lock().stalls() > was {
            tracing::warn!(node = %self.name, "this node stalled (its tick came late): it executes no write as a primary for {} ms", strata_cluster::primary::StallGuard::QUARANTINE_MS);
        }
        let out = self.coherence.lock().tick(self.now_ms());
        self.carry_out_coherence(out);
        if n % HEARTBEAT_EVERY == 0 {
            let hb = self.coherence.lock().heartbeat();
            if let coherence::Output::Broadcast(bytes) = hb {
                // Heartbeats ride on regular gossip; no extra round for them.
                if let Some(m) = self.membership.lock().as_mut() {
                    m.broadcast(&bytes);
                }
            }
            self.pull_status();
        }
        if n % SWEEP_EVERY == 0 {
            // The one part of a tick that may take long (a large owner store): off the
            // runtime's threads.
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.owner.purge_expired_sync());
            self.refresh_view();
        }
    }

    /// Anti-entropy: asks one random member for its latest sequence number, so a gap is
    /// noticed even when gossip never delivered that member's heartbeats.
    fn pull_status(self: &Arc<Self>) {
        let others = self.others();
        if others.is_empty() {
            return;
        }
        let (name, addr) = others[(peer::nonce() % others.len() as u64) as usize].clone();
        let me = self.clone();
        tokio::spawn(async move {
            if let Ok(Response::Status { generation, latest }) =
                me.pool.call(&name, addr, Request::Ping, None).await
            {
                let item = Item::Heartbeat {
                    origin: name,
                    generation,
                    latest,
                };
                let out = me.coherence.lock().receive_item(me.now_ms(), item);
                me.carry_out_coherence(out);
            }
        });
    }

    async fn gossip_loop(self: Arc<Self>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut logged_rejects = 0u64;
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "gossip recv failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let packet = &buf[..n];
            #[cfg(feature = "fault-injection")]
            if self.faults.gossip.read().contains(&from) {
                continue;
            }
            self.with_membership(|m| m.handle_packet(packet));
            let rejected = self
                .membership
                .lock()
                .as_ref()
                .map_or(0, |m| m.stats().rejected_packets);
            if rejected > logged_rejects {
                // Logged once per burst, not per packet: a flood must not flood the log.
                if rejected == 1 || rejected >= logged_rejects * 2 {
                    tracing::warn!(node = %self.name, %from, rejected, "gossip packet without the cluster secret dropped");
                }
                logged_rejects = rejected;
            }
        }
    }

    async fn timer_loop(self: Arc<Self>) {
        loop {
            let next = self.timers.lock().keys().next().map(|(at, _)| *at);
            match next {
                None => self.wake.notified().await,
                Some(at) if at > Instant::now() => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                Some(_) => {
                    let due: Vec<MembershipTimer> = {
                        let mut t = self.timers.lock();
                        let now = Instant::now();
                        let keys: Vec<(Instant, u64)> =
                            t.range(..=(now, u64::MAX)).map(|(k, _)| *k).collect();
                        keys.into_iter().filter_map(|k| t.remove(&k)).collect()
                    };
                    for timer in due {
                        self.with_membership(|m| m.handle_timer(timer));
                    }
                }
            }
        }
    }

    async fn apply_loop(self: Arc<Self>) {
        let mut rx = self.work_rx.lock().await;
        while let Some(w) = rx.recv().await {
            match w {
                Work::Apply(inv) => {
                    self.apply(&inv).await;
                }
                Work::DropUnverified { origin, lost } => self.drop_unverified(&origin, lost).await,
            }
        }
    }

    /// Leaves the cluster gracefully (members mark this node down at once).
    pub(crate) fn leave(&self) {
        if let Some(m) = self.membership.lock().take() {
            for o in m.leave() {
                if let Output::Send { to, packet } = o {
                    let _ = self.socket.try_send_to(&packet, to);
                }
            }
        }
    }

    /// What `/cluster` shows.
    pub(crate) fn status(&self) -> ClusterStatus {
        let rpc = self.pool.stats();
        let (states, identity, membership_stats) = match self.membership.lock().as_ref() {
            Some(m) => (m.member_states(), Some(m.identity().clone()), m.stats()),
            None => (Vec::new(), None, Default::default()),
        };
        let mut members: Vec<MemberStatus> = Vec::new();
        if let Some(id) = identity {
            members.push(MemberStatus::of(&id, "self", None));
        }
        for (id, state) in states {
            if id.is_placeholder() {
                continue;
            }
            let state = match state {
                foca_state::ALIVE => "alive",
                foca_state::SUSPECT => "suspect",
                _ => "down",
            };
            let peer = rpc.iter().find(|r| r.0 == id.name).map(|r| PeerRpc {
                requests: r.1,
                errors: r.2,
                rtt_us: r.3,
                last_rtt_us: r.4,
            });
            members.push(MemberStatus::of(&id, state, peer));
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let (c, in_sync, latest) = {
            let c = self.coherence.lock();
            (c.stats(), c.in_sync(), c.latest_seq())
        };
        let ring = self.ring();
        let k = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClusterStatus {
            node: self.name.clone(),
            generation: self.generation,
            ring_version: format!("{:016x}", ring.version()),
            ring_members: ring.nodes().to_vec(),
            replication_factor: self.cfg.replication_factor,
            members,
            in_sync,
            latest_seq: latest,
            owned_entries: self.owner.entry_count(),
            coherence: CoherenceFigures {
                applied: c.applied,
                duplicates: c.duplicates,
                repairs_asked: c.repairs_asked,
                gaps_dropped: c.gaps_dropped,
                bad_items: c.bad_items,
            },
            rejected_packets: membership_stats.rejected_packets,
            stuck_suspects: membership_stats.stuck_suspects,
            rejected_connections: get(&k.rejected_connections),
            handoff_reads: get(&k.handoff_reads),
            handoff_pushes: get(&k.handoff_pushes),
            drops_unverified: get(&k.drops_unverified),
        }
    }
}

/// foca's member states, named (foca::State is not matchable by value across versions).
mod foca_state {
    pub(super) const ALIVE: foca::State = foca::State::Alive;
    pub(super) const SUSPECT: foca::State = foca::State::Suspect;
}

/// An entry's tags as the slices `Coherence::admits_tagged` takes.
pub(crate) fn tag_refs(e: &Entry) -> Vec<&[u8]> {
    e.tags.iter().map(|t| t.as_ref()).collect()
}

pub(crate) fn to_wire(e: &Entry) -> WireEntry {
    WireEntry {
        value: e.value.to_vec(),
        version: e.version.as_u64(),
        expires_at_ms: e.expires_at_ms,
        stale_until_ms: e.stale_until_ms,
        tags: e.tags.iter().map(|t| t.to_vec()).collect(),
    }
}

pub(crate) fn from_wire(w: WireEntry) -> Entry {
    Entry {
        value: Bytes::from(w.value),
        version: Version::from_u64(w.version),
        expires_at_ms: w.expires_at_ms,
        stale_until_ms: w.stale_until_ms,
        tags: Tags::new(w.tags),
    }
}

/// The cluster as `/cluster` and `strata status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// This node's name.
    pub node: String,
    /// This life's generation.
    pub generation: u64,
    /// The ring's version (a hash of the member list; equal on nodes that agree).
    pub ring_version: String,
    /// Members on the ring.
    pub ring_members: Vec<String>,
    /// Owners per key.
    pub replication_factor: u32,
    /// Every member this node knows of, itself first.
    pub members: Vec<MemberStatus>,
    /// No invalidation gap is open.
    pub in_sync: bool,
    /// This node's latest invalidation sequence number.
    pub latest_seq: u64,
    /// Entries in the owner store.
    pub owned_entries: u64,
    /// Coherence counters.
    pub coherence: CoherenceFigures,
    /// Gossip packets dropped for a missing or wrong authentication tag.
    pub rejected_packets: u64,
    /// Members this node declared down itself after they stayed suspect too long (foca
    /// had stopped acting on the suspicion; see docs/ARCHITECTURE.md, decision 46).
    pub stuck_suspects: u64,
    /// Peer connections refused (failed handshake).
    pub rejected_connections: u64,
    /// Reads served by a previous owner during a hand-off.
    pub handoff_reads: u64,
    /// Entries pushed to new owners after a ring change.
    pub handoff_pushes: u64,
    /// Times this node dropped its unverified copies.
    pub drops_unverified: u64,
}

/// One member.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// Name.
    pub name: String,
    /// `self`, `alive`, `suspect` or `down`.
    pub state: String,
    /// Generation.
    pub generation: u64,
    /// Gossip address.
    pub gossip: String,
    /// Peer RPC address.
    pub rpc: String,
    /// Redis-protocol address.
    pub resp: String,
    /// Admin HTTP address.
    pub admin: String,
    /// This node's RPCs to it.
    pub rpc_stats: Option<PeerRpc>,
}

impl MemberStatus {
    fn of(id: &NodeIdentity, state: &str, rpc_stats: Option<PeerRpc>) -> Self {
        MemberStatus {
            name: id.name.clone(),
            state: state.into(),
            generation: id.generation,
            gossip: id.gossip.to_string(),
            rpc: id.rpc.to_string(),
            resp: id.resp.to_string(),
            admin: id.admin.to_string(),
            rpc_stats,
        }
    }
}

/// RPC figures towards one peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRpc {
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed or timed out.
    pub errors: u64,
    /// Smoothed round trip, µs.
    pub rtt_us: u64,
    /// Last round trip, µs.
    pub last_rtt_us: u64,
}

/// Coherence counters.
#[derive(Debug, Clone, Serialize)]
pub struct CoherenceFigures {
    /// Invalidations from other nodes applied.
    pub applied: u64,
    /// Duplicates ignored.
    pub duplicates: u64,
    /// Gap repairs asked for.
    pub repairs_asked: u64,
    /// Gaps given up on.
    pub gaps_dropped: u64,
    /// Undecodable items.
    pub bad_items: u64,
}

/// The L2 actor's hook: starts the cluster's tasks (joining the cluster the first time)
/// and runs the maintenance tick.
pub(crate) struct ClusterHook {
    pub(crate) shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl ClusterHook {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        ClusterHook {
            shared,
            tasks: Mutex::new(Vec::new()),
        }
    }

    fn abort(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
    }
}

impl Drop for ClusterHook {
    fn drop(&mut self) {
        self.abort();
    }
}

impl Maintenance for ClusterHook {
    fn start(&self) -> Result<(), String> {
        self.abort();
        let rt = tokio::runtime::Handle::current();
        let s = &self.shared;
        let tasks = vec![
            rt.spawn(s.clone().gossip_loop()),
            rt.spawn(s.clone().timer_loop()),
            rt.spawn(s.clone().apply_loop()),
            rt.spawn(s.clone().serve_rpc()),
            rt.spawn(s.clone().disseminate_loop()),
        ];
        *self.tasks.lock() = tasks;
        if !s.joined.swap(true, Ordering::AcqRel) {
            s.with_membership(|m| m.join());
        }
        Ok(())
    }

    fn maintain(&self) {
        self.shared.tick();
    }

    fn inline(&self) -> bool {
        true
    }

    fn stop(&self) {
        self.shared.leave();
        self.abort();
    }

    fn metrics(&self) -> Vec<LayerMetric> {
        let s = &self.shared;
        let k = &s.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let st = s.coherence.lock().stats();
        let (live, ms) = s
            .membership
            .lock()
            .as_ref()
            .map_or((0, Default::default()), |m| {
                (m.num_live() as u64, m.stats())
            });
        let m = |name, help, counter, value| LayerMetric {
            name,
            help,
            counter,
            value,
        };
        vec![
            m(
                "cluster_members",
                "Live members in this node's view, itself included",
                false,
                live,
            ),
            m(
                "cluster_ring_changes",
                "Times the ring changed",
                true,
                get(&k.ring_changes),
            ),
            m(
                "cluster_owned_entries",
                "Entries in this node's owner store",
                false,
                s.owner.entry_count(),
            ),
            m(
                "cluster_rpc_served",
                "Peer requests served",
                true,
                get(&k.rpc_served),
            ),
            m(
                "cluster_remote_reads",
                "Reads sent to an owner",
                true,
                get(&k.remote_reads),
            ),
            m(
                "cluster_remote_hits",
                "Reads an owner answered with an entry",
                true,
                get(&k.remote_hits),
            ),
            m(
                "cluster_handoff_reads",
                "Reads served by a previous owner during a hand-off",
                true,
                get(&k.handoff_reads),
            ),
            m(
                "cluster_handoff_pushes",
                "Entries pushed to new owners after a ring change",
                true,
                get(&k.handoff_pushes),
            ),
            m(
                "cluster_refused_stale",
                "Copies refused because a newer invalidation was seen",
                true,
                get(&k.refused_stale),
            ),
            m(
                "cluster_invalidations_applied",
                "Invalidations applied on this node",
                true,
                get(&k.applied),
            ),
            m(
                "cluster_gap_repairs",
                "Gap repairs asked for",
                true,
                st.repairs_asked,
            ),
            m(
                "cluster_gaps_dropped",
                "Gaps given up on (unverified copies dropped)",
                true,
                st.gaps_dropped,
            ),
            m(
                "cluster_warm_kept",
                "L3 copies a restart proved current against their owners and kept",
                true,
                get(&k.warm_kept),
            ),
            m(
                "cluster_warm_dropped",
                "L3 copies a restart could not prove current and dropped",
                true,
                get(&k.warm_dropped),
            ),
            m(
                "cluster_warm_calls",
                "Versions calls a restart made to prove its L3 copies",
                true,
                get(&k.warm_calls),
            ),
            m(
                "cluster_drops_unverified",
                "Times this node dropped its unverified copies",
                true,
                get(&k.drops_unverified),
            ),
            m(
                "cluster_rpc_retries",
                "Peer requests retried on a new connection (at most 10 % of requests)",
                true,
                s.pool.retries(),
            ),
            m(
                "cluster_pushed_batches",
                "Invalidation batches pushed over peer connections (gossip backlog full)",
                true,
                get(&k.pushed_batches),
            ),
            m(
                "cluster_strict_invalidations",
                "Invalidations confirmed by every member before returning",
                true,
                get(&k.strict_invalidations),
            ),
            m(
                "cluster_rejected_packets",
                "Gossip packets dropped for a wrong or missing secret",
                true,
                ms.rejected_packets,
            ),
            m(
                "cluster_stuck_suspects",
                "Members declared down here after staying suspect for over twice the suspicion timeout",
                true,
                ms.stuck_suspects,
            ),
            m(
                "cluster_rejected_connections",
                "Peer connections refused at the handshake",
                true,
                get(&k.rejected_connections),
            ),
        ]
    }
}
