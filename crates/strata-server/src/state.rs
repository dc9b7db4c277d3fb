//! State shared by every connection of one server.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use strata::{Node, NodeConfig};
use strata_core::Cache;
use tokio::sync::{Notify, watch};

use crate::acl::Acl;
use crate::metrics::ServerMetrics;

/// Stripes of the per-key write locks.
const KEY_LOCKS: usize = 1024;

/// What `CLIENT LIST` shows of one connection; the connection updates it as it goes.
#[derive(Debug)]
pub struct ClientInfo {
    /// `CLIENT ID`.
    pub id: u64,
    /// Peer address.
    pub addr: SocketAddr,
    /// When it connected.
    pub connected: Instant,
    /// Milliseconds since `connected` of its last command.
    pub last_cmd_ms: AtomicU64,
    /// Index in `commands::COMMANDS` of its last command (`usize::MAX`: none yet).
    pub last_cmd: AtomicUsize,
    /// Name, database, protocol and last command, changed rarely.
    pub detail: Mutex<ClientDetail>,
}

/// The mutable part of [`ClientInfo`].
#[derive(Debug, Clone, Default)]
pub struct ClientDetail {
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// The namespace the connection has selected.
    pub namespace: String,
    /// The database index, when a numbered database is selected.
    pub db: Option<u32>,
    /// 2 or 3.
    pub resp: i64,
    /// The ACL user it runs as (`default` until `AUTH` says otherwise).
    pub user: String,
}

/// Server-wide state.
pub struct Shared {
    /// The node's cache handle.
    pub cache: Cache,
    /// The configuration the server started with.
    pub config: NodeConfig,
    /// The RESP listener's address.
    pub resp_addr: SocketAddr,
    /// Counters exported on `/metrics`.
    pub metrics: ServerMetrics,
    /// `requirepass`, changeable with `CONFIG SET` (shown by `CONFIG GET`; [`Shared::acl`]
    /// is what checks it).
    pub requirepass: parking_lot::RwLock<Option<String>>,
    /// The users and their passwords.
    pub acl: parking_lot::RwLock<Acl>,
    /// `maxclients`, changeable with `CONFIG SET`.
    pub max_clients: AtomicU32,
    /// `timeout` in seconds, changeable with `CONFIG SET`.
    pub idle_timeout_secs: AtomicU64,
    /// When the server started.
    pub started: Instant,
    /// The memory all client connections hold, against `server.max_input_bytes_total`
    /// ([`crate::budget`]).
    pub client_memory: Arc<crate::budget::ClientMemory>,
    /// Flips to true when shutdown begins.
    pub stop: watch::Receiver<bool>,
    next_client_id: AtomicU64,
    open: AtomicUsize,
    closed: Notify,
    clients: Arc<Mutex<BTreeMap<u64, Arc<ClientInfo>>>>,
    locks: Box<[tokio::sync::RwLock<()>]>,
    hasher: RandomState,
    /// Scripts known to `EVALSHA`.
    pub scripts: Mutex<crate::commands::scripting::ScriptCache>,
    /// The script engine installed in the cache (for `SCRIPT KILL`).
    pub lua: Arc<crate::commands::scripting::LuaEngine>,
    /// `SLOWLOG`.
    pub slowlog: crate::commands::slowlog::SlowLog,
    /// `LATENCY`.
    pub latency: crate::commands::latency::LatencyMonitor,
    /// Pub/sub subscriptions of this node's clients.
    pub pubsub: Arc<crate::pubsub::PubSub>,
    /// Forwards messages published here to the other cluster members.
    publisher: Option<strata::Publisher>,
    /// Which member is primary of each hash slot (`None` when the node is not a cluster
    /// member): `CLUSTER SLOTS` and the cluster listener's redirects read it.
    pub slots: Option<strata::SlotSource>,
    /// Where commands wait after a pause of this process (`None` outside a cluster).
    pub pause_gate: Option<Arc<strata::cluster::pause::PauseGate>>,
    /// `CLIENT TRACKING`: which clients read which keys.
    pub tracking: Arc<crate::tracking::Tracking>,
    /// Failed credentials take turns, node-wide ([`crate::guard::AuthThrottle`]).
    pub auth_throttle: crate::guard::AuthThrottle,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("resp_addr", &self.resp_addr)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// State for a server in front of `node`. The numbered databases are opened here, so
    /// that `SELECT N` and `FLUSHALL` work whatever clients do with named namespaces.
    pub fn new(
        node: &Node,
        config: NodeConfig,
        resp_addr: SocketAddr,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let cache = node.cache();
        let lua = Arc::new(crate::commands::scripting::LuaEngine::new(
            std::time::Duration::from_millis(config.server.script_time_limit_ms),
            usize::try_from(config.limits.max_value_bytes).unwrap_or(usize::MAX),
        ));
        // Scripts run wherever their keys' writes run: this node's cache runs them for its
        // own clients, and for other nodes' when it is the keys' primary.
        cache.set_script_engine(lua.clone());
        for i in 0..config.server.databases {
            // Open from the start and never reclaimed while empty, as Redis's databases.
            if let Err(e) = cache.pin_namespace(&format!("db{i}")) {
                tracing::warn!(error = %e, "cannot open database {i}");
            }
        }
        let slowlog = crate::commands::slowlog::SlowLog::new(
            config.server.slowlog_log_slower_than_us,
            usize::try_from(config.server.slowlog_max_len).unwrap_or(usize::MAX),
        );
        let latency = crate::commands::latency::LatencyMonitor::new(
            config.server.latency_monitor_threshold_ms,
        );
        // Messages published on other members reach this node's subscribers through here.
        let client_memory = Arc::new(crate::budget::ClientMemory::new(
            usize::try_from(config.server.max_input_bytes_total).unwrap_or(usize::MAX),
        ));
        let pubsub = Arc::new(crate::pubsub::PubSub::new(client_memory.clone()));
        let hub = pubsub.clone();
        node.set_publish_sink(Arc::new(
            move |channel: &[u8], payload: &[u8], sharded: bool| {
                if sharded {
                    hub.spublish(channel, payload)
                } else {
                    hub.publish(channel, payload)
                }
            },
        ));
        // Every change of a key on this node (made here or applied from another member) is
        // announced to the clients tracking it.
        let clients: Arc<Mutex<BTreeMap<u64, Arc<ClientInfo>>>> = Arc::default();
        let connected = clients.clone();
        let tracking = Arc::new(crate::tracking::Tracking::new(
            config.server.tracking_table_max_keys,
            config.server.tracking_table_max_bytes,
            pubsub.clone(),
            Arc::new(move |id| connected.lock().contains_key(&id)),
        ));
        if !cache.set_change_listener(tracking.clone()) {
            tracing::warn!(
                "the cache already has a change listener; CLIENT TRACKING will not hear of changes"
            );
        }
        Self {
            cache,
            requirepass: parking_lot::RwLock::new(config.server.requirepass.clone()),
            acl: parking_lot::RwLock::new(Acl::from_config(&config.server)),
            max_clients: AtomicU32::new(config.server.max_clients),
            idle_timeout_secs: AtomicU64::new(config.server.idle_timeout_secs),
            config,
            resp_addr,
            metrics: ServerMetrics::default(),
            started: Instant::now(),
            client_memory,
            stop,
            next_client_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            closed: Notify::new(),
            clients,
            locks: (0..KEY_LOCKS)
                .map(|_| tokio::sync::RwLock::new(()))
                .collect(),
            hasher: RandomState::new(),
            scripts: Mutex::new(Default::default()),
            lua,
            slowlog,
            latency,
            pubsub,
            publisher: node.publisher(),
            slots: node.slots(),
            pause_gate: node.pause_gate(),
            tracking,
            auth_throttle: Default::default(),
        }
    }

    /// `PUBLISH`: delivers `payload` on `channel` to this node's subscribers, and queues it
    /// for the other cluster members'; returns how many of this node's clients got it (as a
    /// Redis Cluster node answers).
    pub fn publish(&self, channel: &[u8], payload: &[u8]) -> usize {
        if let Some(p) = &self.publisher {
            p.publish(channel, payload);
        }
        self.pubsub.publish(channel, payload)
    }

    /// `SPUBLISH`: as [`Shared::publish`], for shard channels.
    pub fn spublish(&self, channel: &[u8], payload: &[u8]) -> usize {
        if let Some(p) = &self.publisher {
            p.publish_sharded(channel, payload);
        }
        self.pubsub.spublish(channel, payload)
    }

    /// Registers a new connection unless `maxclients` is reached.
    pub fn admit(&self, addr: SocketAddr) -> Option<Arc<ClientInfo>> {
        let max = self.max_clients.load(Ordering::Relaxed) as usize;
        let prev = self.open.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.release_slot();
            return None;
        }
        let id = self.next_client_id.fetch_add(1, Ordering::Relaxed);
        let info = Arc::new(ClientInfo {
            id,
            addr,
            connected: Instant::now(),
            last_cmd_ms: AtomicU64::new(0),
            last_cmd: AtomicUsize::new(usize::MAX),
            detail: Mutex::new(ClientDetail {
                namespace: "db0".into(),
                db: Some(0),
                resp: 2,
                name: None,
                user: "default".into(),
            }),
        });
        self.clients.lock().insert(id, info.clone());
        Some(info)
    }

    /// Whether client `id` is connected.
    pub fn client_exists(&self, id: u64) -> bool {
        self.clients.lock().contains_key(&id)
    }

    /// Unregisters a connection (and its tracking).
    pub fn leave(&self, id: u64) {
        self.tracking.disable(id);
        self.clients.lock().remove(&id);
        self.release_slot();
    }

    fn release_slot(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.closed.notify_waiters();
        }
    }

    /// Open client connections.
    pub fn connection_count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Completes when no client connection is open.
    pub async fn drained(&self) {
        loop {
            let notified = self.closed.notified();
            if self.connection_count() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A snapshot of the connected clients, by id.
    pub fn clients(&self) -> Vec<Arc<ClientInfo>> {
        self.clients.lock().values().cloned().collect()
    }

    /// The lock of one key (stripes shared by keys that hash alike). Read-modify-write
    /// commands (INCR, APPEND, SET NX, …) hold it exclusively, so they are atomic on this
    /// node; blind writes (SET, MSET) hold it shared, so they run concurrently with each other
    /// (the layers order them by version) but never inside a read-modify-write.
    pub fn key_lock(&self, namespace: &str, key: &[u8]) -> &tokio::sync::RwLock<()> {
        &self.locks[self.stripe(namespace, key)]
    }

    /// The stripe index of a key, for taking several locks in a fixed order.
    pub fn stripe(&self, namespace: &str, key: &[u8]) -> usize {
        let mut h = self.hasher.build_hasher();
        namespace.hash(&mut h);
        key.hash(&mut h);
        (h.finish() as usize) % KEY_LOCKS
    }

    /// The lock of stripe `i`.
    pub fn lock_at(&self, i: usize) -> &tokio::sync::RwLock<()> {
        &self.locks[i]
    }

    /// Every lock of `keys` of `namespace`, exclusively, taken in stripe order (so two
    /// callers never wait on each other in a cycle): what an operation on several keys
    /// holds while it runs.
    pub async fn lock_keys<'k>(
        &self,
        namespace: &str,
        keys: impl Iterator<Item = &'k [u8]>,
    ) -> Vec<tokio::sync::RwLockWriteGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys.map(|k| self.stripe(namespace, k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(self.lock_at(i).write().await);
        }
        guards
    }
}

/// Completes once `stop` reads true (at once if it already does).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
