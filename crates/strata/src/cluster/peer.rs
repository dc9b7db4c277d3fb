//! Peer RPC over TCP: one multiplexed connection per peer pair, opened with a mutual
//! handshake that proves both sides hold the cluster secret.
//!
//! The handshake is [`strata_cluster::handshake`] (version 2): the caller logs in with its
//! name, the callee's name and a nonce; the callee answers with a nonce of its own; the
//! caller proves it holds the secret over both names and nonces, then the callee does.
//! Anything else closes the connection, and the callee counts and logs it.
//!
//! After that, requests carry ids and responses may come back in any order; a request
//! waits at most `rpc_timeout`, and a connection that fails fails every request on it and
//! is opened again by the next request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::net::{ReadHalf, TcpStream, TlsSide, WriteHalf};
use bytes::BytesMut;
use parking_lot::Mutex;
use rustls_pki_types::ServerName;
use strata_cluster::Authenticator;
use strata_cluster::handshake;
use strata_cluster::rpc::{self, Frame, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Most retry credit banked, in tenths of a retry (10 retries).
const RETRY_BANK: u64 = 100;
/// What one retry costs, in tenths.
const RETRY_COST: u64 = 10;

/// Time allowed for the whole handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads one frame from `read` (with `buf` holding what was read ahead).
pub(crate) async fn read_frame(
    read: &mut ReadHalf,
    buf: &mut BytesMut,
    max_frame: usize,
) -> Result<Frame, String> {
    loop {
        match rpc::decode(buf, max_frame) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err((_, e)) => return Err(e.to_string()),
        }
        let n = read.read_buf(buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
    }
}

/// Reads the next answer on a caller's connection. An answer whose body this build cannot
/// decode (a variant of a newer build) answers its request with an `Error` — an unknown
/// outcome to the caller — and the connection goes on; it once closed the connection and
/// failed every call waiting on it. A request frame (never sent to a caller) is skipped.
pub(crate) async fn read_answer(
    read: &mut ReadHalf,
    buf: &mut BytesMut,
    max_frame: usize,
) -> Result<(u64, Response), String> {
    loop {
        match rpc::decode(buf, max_frame) {
            Ok(Some(Frame::Response(id, r))) => return Ok((id, r)),
            Ok(Some(Frame::Request(..))) => continue,
            Ok(None) => {}
            Err((Some(id), rpc::FrameError::Body(why))) => {
                return Ok((id, Response::Error(undecodable_answer(&why))));
            }
            Err((_, e)) => return Err(e.to_string()),
        }
        let n = read.read_buf(buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
    }
}

/// The error an undecodable answer becomes. Not the wording of a callee's own decode error
/// (`malformed body`), which an earlier build's answer to a `LeasePing` is, and which grants
/// the lease ([`super::gossip`]): an answer this build cannot read grants nothing.
pub(crate) fn undecodable_answer(why: &str) -> String {
    format!("undecodable answer (a later build's variant?): {why}")
}

/// Writes what arrives on `rx` to `write`, coalescing what is queued into one write (at
/// most about 256 KiB), until the channel closes or a write fails.
///
/// A frame alone in the queue waits one turn of the scheduler first (`yield_now`): the
/// tasks already woken — the other requests of a client's pipeline, the answers to a
/// peer's batch of frames read together — queue theirs behind it and leave in the same
/// send, where each would otherwise cost a system call on both sides.
pub(crate) async fn write_loop(mut write: WriteHalf, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(first) = rx.recv().await {
        let mut batch = first;
        if rx.is_empty() {
            tokio::task::yield_now().await;
        }
        while let Ok(more) = rx.try_recv() {
            batch.extend_from_slice(&more);
            if batch.len() > 256 * 1024 {
                break;
            }
        }
        if write.write_all(&batch).await.is_err() {
            break;
        }
    }
}

/// Reads one handshake answer (bounded by [`handshake::MAX_HANDSHAKE_FRAME`]: the peer has
/// not proved anything yet).
async fn handshake_answer(read: &mut ReadHalf, buf: &mut BytesMut) -> Result<Response, String> {
    match read_frame(read, buf, handshake::MAX_HANDSHAKE_FRAME).await? {
        Frame::Response(0, r) => Ok(r),
        other => Err(format!("unexpected handshake frame {other:?}")),
    }
}

async fn write_frame(write: &mut WriteHalf, frame: &Frame) -> Result<(), String> {
    write
        .write_all(&rpc::to_bytes(frame))
        .await
        .map_err(|e| e.to_string())
}

/// A random number for choices that need no secrecy (foca's RNG seed, which member to ask):
/// the OS RNG through std's hasher seeding. Handshake nonces use a CSPRNG
/// ([`handshake::fresh_nonce`]).
pub(crate) fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Per-peer RPC figures (for `/cluster`).
#[derive(Debug, Default)]
pub(crate) struct PeerStats {
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// Smoothed round trip (EWMA, 1/8 weight), µs.
    pub(crate) rtt_us: AtomicU64,
    pub(crate) last_rtt_us: AtomicU64,
}

struct Conn {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>,
    alive: Arc<AtomicBool>,
    /// What the peer's build understands (`rpc::features`), told after the handshake.
    features: u64,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A call's entry in its connection's pending answers, removed when the call ends or is
/// dropped (the reader removes it first when the answer comes).
struct Waiting<'a> {
    pending: &'a Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.id);
    }
}

struct Slot {
    addr: SocketAddr,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    stats: Arc<PeerStats>,
}

/// The caller's side: connections to peers, by name.
pub(crate) struct Pool {
    /// Where the ring parameters peers tell are checked against this member's.
    ring_check: Option<Arc<super::ring_check::RingCheck>>,
    me: String,
    generation: u64,
    auth: Authenticator,
    /// Mutual TLS to peers (`cluster.tls`).
    tls: Option<Arc<rustls::ClientConfig>>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    next_id: AtomicU64,
    /// Retry budget, in tenths of a retry.
    retry_tokens: AtomicU64,
    #[cfg(feature = "fault-injection")]
    blocked: Mutex<std::collections::HashSet<String>>,
    /// Announces no features on new connections, as a caller of an earlier build does
    /// (rolling-upgrade tests).
    #[cfg(feature = "fault-injection")]
    announce_none: AtomicBool,
    retries: AtomicU64,
    pub(crate) rpc_timeout: Duration,
    connect_timeout: Duration,
    max_frame: usize,
}

impl Pool {
    pub(crate) fn new(
        me: String,
        generation: u64,
        auth: Authenticator,
        tls: Option<Arc<rustls::ClientConfig>>,
        rpc_timeout: Duration,
        connect_timeout: Duration,
        max_frame: usize,
    ) -> Self {
        Pool {
            ring_check: None,
            me,
            generation,
            auth,
            tls,
            slots: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            retry_tokens: AtomicU64::new(RETRY_BANK),
            #[cfg(feature = "fault-injection")]
            blocked: Mutex::new(Default::default()),
            #[cfg(feature = "fault-injection")]
            announce_none: AtomicBool::new(false),
            retries: AtomicU64::new(0),
            rpc_timeout,
            connect_timeout,
            max_frame,
        }
    }

    /// The pool, checking the ring parameters peers tell against `ring_check`.
    pub(crate) fn checking_rings(mut self, ring_check: Arc<super::ring_check::RingCheck>) -> Self {
        self.ring_check = Some(ring_check);
        self
    }

    fn slot(&self, name: &str, addr: SocketAddr) -> Arc<Slot> {
        let mut slots = self.slots.lock();
        match slots.get(name) {
            Some(s) if s.addr == addr => s.clone(),
            _ => {
                let s = Arc::new(Slot {
                    addr,
                    conn: tokio::sync::Mutex::new(None),
                    stats: Arc::new(PeerStats::default()),
                });
                slots.insert(name.to_owned(), s.clone());
                s
            }
        }
    }

    /// Announces no features on the connections opened from now on (`true`), as a caller
    /// of an earlier build would.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn announce_no_features(&self, none: bool) {
        self.announce_none.store(none, Ordering::Release);
    }

    /// Fails every request to `name` from now on (partition tests).
    #[cfg(feature = "fault-injection")]
    pub(crate) fn block(&self, name: &str) {
        self.blocked.lock().insert(name.to_owned());
        self.forget(name);
    }

    /// Lifts [`Pool::block`].
    #[cfg(feature = "fault-injection")]
    pub(crate) fn unblock_all(&self) {
        self.blocked.lock().clear();
    }

    /// Closes and forgets the connection to `name` (it left or was declared down).
    pub(crate) fn forget(&self, name: &str) {
        self.slots.lock().remove(name);
    }

    /// Per-peer figures: (name, requests, errors, smoothed rtt µs, last rtt µs).
    pub(crate) fn stats(&self) -> Vec<(String, u64, u64, u64, u64)> {
        let mut v: Vec<_> = self
            .slots
            .lock()
            .iter()
            .map(|(n, s)| {
                let st = &s.stats;
                (
                    n.clone(),
                    st.requests.load(Ordering::Relaxed),
                    st.errors.load(Ordering::Relaxed),
                    st.rtt_us.load(Ordering::Relaxed),
                    st.last_rtt_us.load(Ordering::Relaxed),
                )
            })
            .collect();
        v.sort();
        v
    }

    async fn connect(&self, addr: SocketAddr, peer: &str) -> Result<Conn, String> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {peer} at {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {peer} at {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let hs = async {
            let (mut read, mut write) = match &self.tls {
                Some(config) => {
                    let name = ServerName::try_from(peer.to_owned()).map_err(|_| {
                        format!("{peer:?} is not a DNS name, which cluster.tls needs")
                    })?;
                    let (r, w, _) = stream
                        .into_tls(TlsSide::Client(config.clone(), name))
                        .await
                        .map_err(|e| format!("TLS with {peer} at {addr}: {e}"))?;
                    (r, w)
                }
                None => stream.into_split(),
            };
            let mut hs =
                handshake::Caller::new(&self.me, peer, self.generation, handshake::fresh_nonce());
            write_frame(&mut write, &Frame::Request(0, hs.login())).await?;
            let challenge = handshake_answer(&mut read, &mut buf).await?;
            let prove = hs
                .on_challenge(&self.auth, challenge)
                .map_err(|e| format!("handshake with {peer} at {addr}: {e}"))?;
            write_frame(&mut write, &Frame::Request(0, prove)).await?;
            let welcome = handshake_answer(&mut read, &mut buf).await?;
            hs.on_welcome(&self.auth, welcome)
                .map_err(|e| format!("handshake with {peer} at {addr}: {e}"))?;
            // What the peer's build understands; an earlier build answers with an error
            // (an unknown request) and has none of the features.
            #[allow(unused_mut)]
            let mut bits = match &self.ring_check {
                Some(r) => r.announce(rpc::features::THIS_BUILD),
                None => rpc::features::THIS_BUILD,
            };
            #[cfg(feature = "fault-injection")]
            if self.announce_none.load(Ordering::Acquire) {
                bits = 0;
            }
            write_frame(&mut write, &Frame::Request(0, Request::Features { bits })).await?;
            // Read as any answer is, so that one this build cannot decode (a later build's
            // shape) counts as no features rather than failing the connection.
            let features =
                match read_answer(&mut read, &mut buf, handshake::MAX_HANDSHAKE_FRAME).await? {
                    (0, Response::Features { bits }) => bits,
                    _ => 0,
                };
            if let Some(r) = &self.ring_check {
                r.note(&self.me, peer, features);
            }
            tracing::debug!(peer, features, "peer connected");
            Ok::<_, String>((read, write, features))
        };
        let (mut read, write, features) = tokio::time::timeout(HANDSHAKE_TIMEOUT, hs)
            .await
            .map_err(|_| format!("handshake with {peer} timed out"))??;

        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>> = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let writer = {
            let alive = alive.clone();
            tokio::spawn(async move {
                write_loop(write, rx).await;
                alive.store(false, Ordering::Release);
            })
        };
        let reader = {
            let (pending, alive, max) = (pending.clone(), alive.clone(), self.max_frame);
            tokio::spawn(async move {
                while let Ok((id, resp)) = read_answer(&mut read, &mut buf, max).await {
                    if let Some(tx) = pending.lock().remove(&id) {
                        let _ = tx.send(resp);
                    }
                }
                alive.store(false, Ordering::Release);
                // Fail every request still waiting on this connection.
                pending.lock().clear();
            })
        };
        Ok(Conn {
            tx,
            pending,
            alive,
            features,
            tasks: [writer, reader],
        })
    }

    async fn conn(&self, slot: &Slot, peer: &str) -> Result<Arc<Conn>, String> {
        let mut guard = slot.conn.lock().await;
        if let Some(c) = guard.as_ref()
            && c.alive.load(Ordering::Acquire)
        {
            return Ok(c.clone());
        }
        *guard = None;
        // Boxed: the handshake's state (TLS included) is large, and unboxed it would be
        // part of every call's future, copied whenever one is boxed or moved (a cluster
        // write's futures measured 10 KiB, their copies ~7 % of a node's CPU).
        let c = Arc::new(Box::pin(self.connect(slot.addr, peer)).await?);
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Sends `req` to `peer` (at RPC address `addr`) and waits for the answer, at most
    /// `timeout` (the pool's `rpc_timeout` when `None`).
    pub(crate) async fn call(
        &self,
        peer: &str,
        addr: SocketAddr,
        req: Request,
        timeout: Option<Duration>,
    ) -> Result<Response, String> {
        self.call_typed(peer, addr, req, timeout)
            .await
            .map_err(|e| match e {
                CallError::Refused(why) | CallError::NotSent(why) | CallError::Unknown(why) => why,
            })
    }

    /// [`Pool::call`], saying whether a failed request may have reached the peer. A request
    /// that is not idempotent (`Execute`, `Publish`) is never sent twice: it is retried on a new
    /// connection only when the first one failed before the request left.
    pub(crate) async fn call_typed(
        &self,
        peer: &str,
        addr: SocketAddr,
        req: Request,
        timeout: Option<Duration>,
    ) -> Result<Response, CallError> {
        self.call_for(peer, addr, &req, &[], timeout)
            .await
            .map(|(resp, _)| resp)
    }

    /// [`Pool::call_typed`], with `fallback`: the feature bits `req` needs and the request
    /// to send instead to a peer whose build lacks any of them (`rpc::features`, as the
    /// connection the request goes out on was told); each further pair the bits that
    /// request needs and the one to send instead, and so on ([`pick`]). The answer says
    /// whether a fallback went (on the last attempt, if the request was retried on a new
    /// connection).
    pub(crate) async fn call_for(
        &self,
        peer: &str,
        addr: SocketAddr,
        req: &Request,
        fallback: &[(u64, &Request)],
        timeout: Option<Duration>,
    ) -> Result<(Response, bool), CallError> {
        #[cfg(feature = "fault-injection")]
        if self.blocked.lock().contains(peer) {
            return Err(CallError::NotSent(format!(
                "{peer} is cut off (fault injection)"
            )));
        }
        // Executions and published messages must not happen twice.
        let idempotent = !matches!(
            req,
            Request::Execute { .. } | Request::Publish { .. } | Request::PublishSharded { .. }
        );
        let slot = self.slot(peer, addr);
        let start = Instant::now();
        slot.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.deposit();
        let timeout = timeout.unwrap_or(self.rpc_timeout);
        let deadline = start + timeout;
        let mut result = self.call_on(&slot, peer, req, fallback, deadline).await;
        // A connection that broke under the request (the peer restarted, say) is retried
        // once on a new connection, inside the same deadline and the retry budget.
        if let Err(f) = &result
            && (f.stage == Stage::Unsent || (f.stage == Stage::Broken && idempotent))
            && Instant::now() < deadline
            && self.withdraw()
        {
            self.retries.fetch_add(1, Ordering::Relaxed);
            result = self.call_on(&slot, peer, req, fallback, deadline).await;
        }
        let result = result.map_err(|f| match f.stage {
            // Refused: the peer's host is up and nothing listens on its port (the process
            // is gone), as opposed to a peer that cannot be reached at all.
            Stage::Unsent if f.why.contains("Connection refused") => CallError::Refused(f.why),
            Stage::Unsent => CallError::NotSent(f.why),
            Stage::Broken | Stage::Answered => CallError::Unknown(f.why),
        });
        match &result {
            Ok(_) => {
                let us = start.elapsed().as_micros() as u64;
                let st = &slot.stats;
                st.last_rtt_us.store(us, Ordering::Relaxed);
                let old = st.rtt_us.load(Ordering::Relaxed);
                let new = if old == 0 { us } else { (old * 7 + us) / 8 };
                st.rtt_us.store(new, Ordering::Relaxed);
            }
            Err(_) => {
                slot.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// Each call earns a tenth of a retry (at most 10 banked): retries stay under 10 % of
    /// calls, so a failing peer is not hit with a storm of them.
    fn deposit(&self) {
        let _ = self
            .retry_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t < RETRY_BANK).then_some(t + 1)
            });
    }

    fn withdraw(&self) -> bool {
        self.retry_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                t.checked_sub(RETRY_COST)
            })
            .is_ok()
    }

    /// Retries spent so far.
    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// One attempt; the error says whether a retry on a new connection may help (the
    /// connection broke before the answer) and why it failed.
    async fn call_on(
        &self,
        slot: &Slot,
        peer: &str,
        req: &Request,
        fallback: &[(u64, &Request)],
        deadline: Instant,
    ) -> Result<(Response, bool), Failure> {
        let fail = |stage, why| Failure { stage, why };
        let timeout = deadline.saturating_duration_since(Instant::now());
        let conn = tokio::time::timeout(timeout, self.conn(slot, peer))
            .await
            .map_err(|_| fail(Stage::Unsent, format!("connecting to {peer} timed out")))?
            .map_err(|e| fail(Stage::Unsent, e))?;
        let (req, fell_back) = pick(req, fallback, conn.features);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().insert(id, tx);
        // However this attempt ends — answered, timed out, or its future dropped by a
        // caller that stopped waiting (a client that disconnected during a forwarded
        // command) — its entry goes with it.
        let _waiting = Waiting {
            pending: &conn.pending,
            id,
        };
        if conn.tx.send(rpc::request_bytes(id, req)).is_err() {
            conn.alive.store(false, Ordering::Release);
            return Err(fail(Stage::Unsent, format!("connection to {peer} closed")));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx).await {
            Ok(Ok(Response::Error(e))) => Err(fail(Stage::Answered, format!("{peer}: {e}"))),
            Ok(Ok(resp)) => Ok((resp, fell_back)),
            Ok(Err(_)) => Err(fail(Stage::Broken, format!("connection to {peer} failed"))),
            Err(_) => {
                // A connection that stops answering may be dead without knowing it (a
                // partition or a middlebox dropped its segments, a peer vanished without a
                // reset): the next call opens a new one rather than wait on it for ever
                // (found by the turmoil test: every repair after a partition timed out on
                // the connection from before it). Requests still pending on it may finish.
                conn.alive.store(false, Ordering::Release);
                Err(fail(
                    Stage::Answered,
                    format!("{peer} did not answer in time"),
                ))
            }
        }
    }
}

/// The request to send on a connection told `features` ([`Pool::call_for`]): `req` while
/// the connection has every bit the first pair of `fallback` names, else that pair's
/// request under the same rule for the next pair, and so on; the last request named needs
/// nothing. Whether a fallback was picked.
fn pick<'a>(
    req: &'a Request,
    fallback: &[(u64, &'a Request)],
    features: u64,
) -> (&'a Request, bool) {
    let mut picked = (req, false);
    for (needs, instead) in fallback {
        if features & needs == *needs {
            break;
        }
        picked = (*instead, true);
    }
    picked
}

/// Why a call failed, and whether its request may have reached the peer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The peer's address refused the connection: its process is not running. The request
    /// never left.
    Refused(String),
    /// The request never left this node (no connection): the peer did nothing.
    NotSent(String),
    /// The request may have been carried out (it left, then the connection broke, the
    /// answer did not come in time, or the peer answered an error).
    Unknown(String),
}

/// Where an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the request was handed to a connection.
    Unsent,
    /// The connection broke after the request was handed to it.
    Broken,
    /// The peer answered an error, or did not answer in time.
    Answered,
}

/// One failed attempt.
struct Failure {
    stage: Stage,
    why: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each peer gets the newest request its build understands: the batch naming its life,
    /// a plain batch, or one entry at a time.
    #[test]
    fn a_fallback_chain_picks_the_newest_request_a_peer_understands() {
        use strata_cluster::rpc::features::{HANDOFF_BATCHES, HANDOFF_LIFE};
        let newest = Request::Features { bits: 3 };
        let batch = Request::Features { bits: 2 };
        let one = Request::Features { bits: 1 };
        let chain = [(HANDOFF_LIFE, &batch), (HANDOFF_BATCHES, &one)];
        let bits = |r: &Request| match r {
            Request::Features { bits } => *bits,
            _ => unreachable!(),
        };
        let both = HANDOFF_LIFE | HANDOFF_BATCHES;
        let got = |features| {
            let (r, fell) = pick(&newest, &chain, features);
            (bits(r), fell)
        };
        assert_eq!(got(both), (3, false));
        assert_eq!(got(HANDOFF_BATCHES), (2, true));
        assert_eq!(got(0), (1, true));
        assert_eq!(
            got(HANDOFF_LIFE),
            (3, false),
            "a request needs only its own bits"
        );
        assert_eq!(bits(pick(&newest, &[], 0).0), 3, "no fallback: the request");
    }

    /// A call whose future is dropped while it waits (its client went away) leaves no entry
    /// in its connection's pending answers: they once stayed until the answer came or the
    /// connection closed.
    #[tokio::test]
    async fn a_dropped_call_leaves_no_pending_entry() {
        let pending: Mutex<HashMap<u64, oneshot::Sender<Response>>> = Mutex::default();
        let waits = async {
            let (tx, rx) = oneshot::channel();
            pending.lock().insert(7, tx);
            let _waiting = Waiting {
                pending: &pending,
                id: 7,
            };
            let _ = rx.await;
        };
        let dropped = tokio::time::timeout(Duration::from_millis(20), waits).await;
        assert!(dropped.is_err(), "nobody answered");
        assert!(pending.lock().is_empty());
    }

    /// An answer of a newer build's variant fails its own call only; the connection and the
    /// answers after it go on (it once closed the connection, failing every waiting call).
    #[tokio::test]
    async fn an_undecodable_answer_fails_its_call_and_the_connection_goes_on() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // Response variant 250 of request 1 (a `Pong` frame, its one body byte
            // changed): no build has it.
            let mut unknown = rpc::to_bytes(&Frame::Response(1, Response::Pong));
            *unknown.last_mut().unwrap() = 250;
            s.write_all(&unknown).await.unwrap();
            s.write_all(&rpc::to_bytes(&Frame::Response(2, Response::Replicated)))
                .await
                .unwrap();
            s.flush().await.unwrap();
            // Held open until the reader has read both.
            let mut b = [0u8; 1];
            let _ = s.read(&mut b).await;
        });
        let (mut read, _write) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut buf = BytesMut::new();
        let (id, first) = read_answer(&mut read, &mut buf, 1 << 20).await.unwrap();
        assert_eq!(id, 1);
        assert!(
            matches!(&first, Response::Error(e) if e.contains("undecodable")),
            "{first:?}"
        );
        let (id, second) = read_answer(&mut read, &mut buf, 1 << 20).await.unwrap();
        assert_eq!((id, second), (2, Response::Replicated));
        drop(_write);
        server.await.unwrap();
    }
}
