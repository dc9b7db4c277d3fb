//! State shared by every connection of one server.

use std::collections::{BTreeMap, HashMap, VecDeque};
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
/// SCAN cursors kept at once (oldest dropped first).
const MAX_CURSORS: usize = 65_536;

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
    /// Bytes of input buffer all client connections hold (see
    /// `server.max_input_bytes_total`).
    pub input_bytes: AtomicUsize,
    /// Flips to true when shutdown begins.
    pub stop: watch::Receiver<bool>,
    next_client_id: AtomicU64,
    open: AtomicUsize,
    closed: Notify,
    clients: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    locks: Box<[tokio::sync::RwLock<()>]>,
    hasher: RandomState,
    cursors: Mutex<Cursors>,
    /// Scripts known to `EVALSHA`.
    pub scripts: Mutex<crate::commands::scripting::ScriptCache>,
    /// The script engine installed in the cache (for `SCRIPT KILL`).
    pub lua: Arc<crate::commands::scripting::LuaEngine>,
    /// `SLOWLOG`.
    pub slowlog: crate::commands::slowlog::SlowLog,
    /// `LATENCY`.
    pub latency: crate::commands::latency::LatencyMonitor,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("resp_addr", &self.resp_addr)
            .finish_non_exhaustive()
    }
}

/// SCAN cursors: id -> (namespace, last key returned, the cursor the page was asked with).
#[derive(Default)]
struct Cursors {
    next: u64,
    by_id: HashMap<u64, (String, Bytes, Option<u64>)>,
    order: VecDeque<u64>,
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
        ));
        // Scripts run wherever their keys' writes run: this node's cache runs them for its
        // own clients, and for other nodes' when it is the keys' primary.
        cache.set_script_engine(lua.clone());
        for i in 0..config.server.databases {
            if let Err(e) =
                cache.open_namespace(&format!("db{i}"), strata_core::namespace::MAX_NAMESPACES)
            {
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
            input_bytes: AtomicUsize::new(0),
            stop,
            next_client_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            closed: Notify::new(),
            clients: Mutex::new(BTreeMap::new()),
            locks: (0..KEY_LOCKS)
                .map(|_| tokio::sync::RwLock::new(()))
                .collect(),
            hasher: RandomState::new(),
            cursors: Mutex::new(Cursors::default()),
            scripts: Mutex::new(Default::default()),
            lua,
            slowlog,
            latency,
        }
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

    /// Unregisters a connection.
    pub fn leave(&self, id: u64) {
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

    /// Saves where a SCAN stopped and returns the cursor naming it (never 0). `from` is the
    /// cursor this page was asked with: a scan keeps at most two cursors (its latest, and the
    /// one before it, for a client that retries a page), so a fast scanner cannot push other
    /// clients' cursors out of the table.
    pub fn save_cursor(&self, namespace: &str, last_key: Bytes, from: u64) -> u64 {
        self.cursors.lock().save(namespace, last_key, from)
    }

    /// Where the SCAN named by `cursor` stopped, if the cursor is known for this namespace.
    pub fn cursor(&self, namespace: &str, cursor: u64) -> Option<Bytes> {
        self.cursors.lock().get(namespace, cursor)
    }
}

impl Cursors {
    fn save(&mut self, namespace: &str, last_key: Bytes, from: u64) -> u64 {
        self.next += 1;
        // Mix the counter so that cursors are not small sequential numbers clients might
        // mistake for positions.
        let id = (self.next.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1).max(1);
        // The cursor before `from` in the same scan is no longer needed.
        let prev = self.by_id.get(&from).map(|c| c.2);
        if let Some(Some(before)) = prev {
            self.by_id.remove(&before);
        }
        let parent = self.by_id.contains_key(&from).then_some(from);
        self.by_id
            .insert(id, (namespace.to_owned(), last_key, parent));
        self.order.push_back(id);
        while self.by_id.len() > MAX_CURSORS {
            match self.order.pop_front() {
                Some(old) => {
                    self.by_id.remove(&old);
                }
                None => break,
            }
        }
        // Ids removed as superseded stay in `order` until they reach its front; compact it
        // when they outnumber the live ones.
        if self.order.len() > 2 * MAX_CURSORS {
            let live = &self.by_id;
            self.order.retain(|i| live.contains_key(i));
        }
        id
    }

    fn get(&self, namespace: &str, cursor: u64) -> Option<Bytes> {
        self.by_id
            .get(&cursor)
            .filter(|(ns, _, _)| ns == namespace)
            .map(|(_, k, _)| k.clone())
    }
}

/// Completes once `stop` reads true (at once if it already does).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_fast_scanner_does_not_push_out_a_slow_ones_cursor() {
        let mut c = Cursors::default();
        let slow = c.save("db0", Bytes::from_static(b"k1"), 0);
        // Another client scans 200,000 pages (three times the table).
        let mut fast = 0;
        for i in 0..200_000u32 {
            fast = c.save("db0", Bytes::from(i.to_be_bytes().to_vec()), fast);
        }
        assert_eq!(c.get("db0", slow).unwrap(), Bytes::from_static(b"k1"));
        assert!(c.by_id.len() <= 3, "{} cursors kept", c.by_id.len());
        assert!(c.order.len() <= 2 * MAX_CURSORS + 1);
        // The slow scan goes on; its page before the latest can be retried once.
        let next = c.save("db0", Bytes::from_static(b"k2"), slow);
        assert!(c.get("db0", slow).is_some() && c.get("db0", next).is_some());
        let after = c.save("db0", Bytes::from_static(b"k3"), next);
        assert!(c.get("db0", slow).is_none(), "two back is gone");
        assert!(c.get("db0", after).is_some());
        assert!(
            c.get("db1", after).is_none(),
            "cursors belong to their namespace"
        );
    }
}
