//! The RESP listener: accepting (bounded by `maxclients`), reading pipelined requests,
//! answering them in order, idle timeouts, and draining on shutdown.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use strata_resp::{Limits, Request, parse_request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::budget::Share;
use crate::commands::{self, Session};
use crate::state::{ClientInfo, Shared};

/// Replies are written out once this much is buffered, even mid-pipeline.
const FLUSH_AT: usize = 64 * 1024;
/// On shutdown, a connection keeps reading what its client already sent until the client
/// has been quiet this long.
const DRAIN_QUIET: Duration = Duration::from_millis(100);
/// A connection's read buffer starts at this size, and goes back to it once empty if a large
/// request had grown it past [`SHRINK_ABOVE`]: an idle client holds 16 KiB, not the largest
/// request it ever sent.
const READ_BUFFER: usize = 16 * 1024;
/// See [`READ_BUFFER`].
const SHRINK_ABOVE: usize = 64 * 1024;

/// A large reply (more than this) counts in the clients' memory before it is written: it
/// may wait on a client that does not read.
const BUDGET_VICTIM_ABOVE: usize = crate::budget::LISTED_ABOVE;

/// The bytes a connection's state holds — its queued transaction, watched keys,
/// subscriptions and BCAST prefixes — each kept as it changes (O(1) to read). Recounted
/// only when their numbers changed, a transaction that swapped small subscriptions or
/// prefixes for as many large ones kept the small figure (review, 2026-12-06).
fn state_size(session: &Session<'_>) -> usize {
    session.tx.watched_bytes()
        + session.tx.queued_bytes()
        + session.sub.as_ref().map_or(0, |s| s.held_bytes())
        + session
            .tracking
            .tracker
            .as_ref()
            .map_or(0, |t| t.held_bytes())
}

/// The input a connection holds: its read buffer and the positions of a request's
/// arguments. An empty buffer of the base size is every connection's fixed cost (bounded by
/// `maxclients`, as Redis's client structures are) and does not count.
fn input_held(buf: &BytesMut, req: &Request) -> usize {
    let base = if buf.is_empty() && buf.capacity() <= READ_BUFFER {
        0
    } else {
        buf.capacity()
    };
    base + req.ranges.capacity() * std::mem::size_of::<Range<usize>>()
}

/// Closes a client to keep all clients' memory within the budget: what it has not been sent
/// is dropped (the reply to be written is what pushed it over), and it gets an error.
async fn over_budget<S: AsyncWrite + Unpin>(
    stream: &mut S,
    shared: &Shared,
    session: &mut Session<'_>,
    held: usize,
    share: &mut Share,
) -> std::io::Result<()> {
    let limit = shared.client_memory.limit();
    shared.metrics.input_limit_closed.incr();
    tracing::warn!(
        addr = %session.info.addr,
        held,
        "clients' memory over server.max_input_bytes_total; closing this client"
    );
    session.reply.buf = BytesMut::new();
    share.update(0);
    session.reply.error(&format!(
        "ERR client memory over the server's budget (server.max_input_bytes_total = {limit})"
    ));
    flush(stream, session).await
}

/// Accepts connections until shutdown begins; with `tls`, each connection's TLS handshake
/// runs in its own task (bounded by [`crate::tls::HANDSHAKE_TIMEOUT`]) before it is served.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cluster_mode: bool,
) {
    let mut stop = shared.stop.clone();
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::state::stopped(&mut stop) => return,
        };
        shared.metrics.connections_total.incr();
        let _ = stream.set_nodelay(true);
        match shared.admit(addr) {
            Some(info) => match &tls {
                None => {
                    tokio::spawn(handle(stream, info, shared.clone(), cluster_mode));
                }
                Some(acceptor) => {
                    let (acceptor, shared) = (acceptor.clone(), shared.clone());
                    tokio::spawn(async move {
                        match crate::tls::accept(&acceptor, stream).await {
                            Ok(tls) => handle(tls, info, shared, cluster_mode).await,
                            Err(e) => {
                                shared.metrics.tls_failures.incr();
                                tracing::debug!(%addr, error = %e, "TLS handshake failed");
                                shared.leave(info.id);
                            }
                        }
                    });
                }
            },
            None if tls.is_some() => {
                // No handshake was made, so an error written now would reach the client as
                // plaintext bytes inside what it reads as TLS records (a review saw
                // `-ERR max number of clients reached` arrive as a "wrong version number"
                // TLS failure). Redis writes nothing either: the connection just drops. A
                // handshake for every refused client would cost the most CPU exactly when
                // the node is full.
                shared.metrics.rejected_connections.incr();
                tracing::debug!(%addr, "TLS connection refused: max number of clients reached");
                drop(stream);
            }
            None => {
                shared.metrics.rejected_connections.incr();
                tracing::debug!(%addr, "connection refused: max number of clients reached");
                tokio::spawn(async move {
                    let mut stream = stream;
                    let _ = stream
                        .write_all(b"-ERR max number of clients reached\r\n")
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        }
    }
}

/// Unregisters a connection when dropped — also when its task unwinds from a panic, which
/// otherwise left a ghost in `CLIENT LIST`, its slot of `maxclients` taken for good and a
/// shutdown waiting out its grace for it.
struct Registered(Arc<Shared>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    info: Arc<ClientInfo>,
    shared: Arc<Shared>,
    cluster_mode: bool,
) {
    let _registered = Registered(shared.clone(), info.id);
    let addr = info.addr;
    if let Err(e) = serve_connection(&mut stream, info, &shared, cluster_mode).await {
        tracing::debug!(%addr, error = %e, "connection ended with an I/O error");
    }
    // Bounded: a TLS close may wait to write to a client that does not read.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    info: Arc<ClientInfo>,
    shared: &Arc<Shared>,
    cluster_mode: bool,
) -> std::io::Result<()> {
    let max_request = shared.config.server.max_request_bytes as usize;
    let limits = Limits {
        max_bulk_len: max_request,
        ..Limits::default()
    };
    // Before AUTH (when a password is needed) requests stay small, as in Redis.
    let unauthenticated = Limits {
        unauthenticated: true,
        ..limits
    };
    let mut session = Session::new(shared, info);
    session.cluster_mode = cluster_mode;
    let out_limit = usize::try_from(shared.config.server.client_output_buffer_limit_bytes)
        .unwrap_or(usize::MAX);
    session.reply.set_limit(out_limit);
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let mut share = Share::new(shared.client_memory.clone(), session.info.id);
    let evict = share.evict_signal();
    let mut req = Request::default();
    let mut stop = shared.stop.clone();
    let mut draining = *stop.borrow();
    // A pipeline's consecutive single-key writes, run together (`commands::execute_sets`).
    let mut group: Vec<Vec<Bytes>> = Vec::new();
    loop {
        // Answer every complete request in the buffer (a pipeline), in order.
        loop {
            let limits = if session.user.is_some() {
                &limits
            } else {
                &unauthenticated
            };
            match parse_request(&buf, limits, &mut req) {
                Ok(true) => {
                    let chunk = buf.split_to(req.consumed).freeze();
                    if req.is_empty() {
                        continue;
                    }
                    // Messages already queued go out ahead of this request's reply.
                    if !commands::pubsub::drain(&mut session) {
                        return close_subscriber(shared, &session);
                    }
                    let args: Vec<Bytes> = match req.owned.take() {
                        Some(owned) => owned.into_iter().map(Bytes::from).collect(),
                        None => req.ranges.iter().map(|r| chunk.slice(r.clone())).collect(),
                    };
                    if is_http(&args[0]) {
                        // A browser made to post to this port (a web page's `fetch`): its
                        // body would run as commands. Closed before anything after it runs;
                        // what came before in the same read runs, and no reply to any of it
                        // is sent, as in Redis (which frees such a client before writing).
                        shared.metrics.protocol_errors.incr();
                        tracing::warn!(
                            addr = %session.info.addr,
                            "possible cross-protocol attack: an HTTP request on the RESP port; closing"
                        );
                        run_group(shared, &mut session, &mut group, out_limit).await;
                        session.reply.buf.clear();
                        return Ok(());
                    }
                    // A pipeline's single-key writes wait for their writes together.
                    if commands::groupable(&session, &args) {
                        let full = group.len() >= commands::MAX_SET_GROUP
                            || group.iter().any(|g| g[1] == args[1]);
                        if full {
                            if run_group(shared, &mut session, &mut group, out_limit).await {
                                return flush(stream, &mut session).await;
                            }
                            if session.reply.buf.len() >= FLUSH_AT {
                                let base = input_held(&buf, &req) + state_size(&session);
                                if let Some(end) =
                                    send(stream, shared, &mut session, &mut share, base).await?
                                {
                                    return end;
                                }
                            }
                        }
                        group.push(args);
                        continue;
                    }
                    if run_group(shared, &mut session, &mut group, out_limit).await {
                        return flush(stream, &mut session).await;
                    }
                    let mark = session.reply.buf.len();
                    as_origin(
                        origin(&session),
                        commands::execute(shared, &mut session, &args),
                    )
                    .await;
                    drop(args);
                    if req.ranges.capacity() > 4096 {
                        // The positions of a million-argument request stay allocated
                        // otherwise.
                        req.ranges = Vec::new();
                    }
                    if over_output_limit(shared, &mut session, mark, out_limit) {
                        return flush(stream, &mut session).await;
                    }
                    if session.quit {
                        return flush(stream, &mut session).await;
                    }
                    if session.reply.buf.len() >= FLUSH_AT {
                        let base = input_held(&buf, &req) + state_size(&session);
                        if let Some(end) =
                            send(stream, shared, &mut session, &mut share, base).await?
                        {
                            return end;
                        }
                    }
                }
                Ok(false) => {
                    if run_group(shared, &mut session, &mut group, out_limit).await {
                        return flush(stream, &mut session).await;
                    }
                    break;
                }
                Err(e) => {
                    if run_group(shared, &mut session, &mut group, out_limit).await {
                        return flush(stream, &mut session).await;
                    }
                    shared.metrics.protocol_errors.incr();
                    tracing::debug!(addr = %session.info.addr, error = %e, "protocol error; closing");
                    session.reply.error(&format!("ERR {e}"));
                    return flush(stream, &mut session).await;
                }
            }
        }
        if buf.len() > max_request {
            shared.metrics.protocol_errors.incr();
            session.reply.error(&format!(
                "ERR Protocol error: request larger than server.max_request_bytes ({max_request})"
            ));
            return flush(stream, &mut session).await;
        }
        let base = input_held(&buf, &req) + state_size(&session);
        if let Some(end) = send(stream, shared, &mut session, &mut share, base).await? {
            return end;
        }
        if buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
            buf = BytesMut::with_capacity(READ_BUFFER);
        } else if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_BUFFER);
        }
        let held = input_held(&buf, &req) + state_size(&session);
        // Every client together is over the budget, and no larger holder is left to close:
        // this one goes if it holds an unfinished request, or a large transaction or set of
        // watched keys or subscriptions.
        if share.must_go(held, !buf.is_empty() || held > BUDGET_VICTIM_ABOVE) {
            return over_budget(stream, shared, &mut session, held, &mut share).await;
        }
        let idle = shared
            .idle_timeout_secs
            .load(std::sync::atomic::Ordering::Relaxed);
        let n = if draining {
            // Shutdown: take what the client already sent, answer it, then close.
            match tokio::time::timeout(DRAIN_QUIET, stream.read_buf(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            }
        } else {
            // Subscribers are not idle (Redis exempts them from `timeout`).
            let subscribed = session.sub.as_ref().is_some_and(|s| s.is_subscribed());
            let read = stream.read_buf(&mut buf);
            let idle_wait = async {
                if idle == 0 || subscribed {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(Duration::from_secs(idle)).await
                }
            };
            // Only a listed (large) holder can be told to close; waiting on the notice
            // takes a lock, which an ordinary read does without.
            let evict_wait = async {
                if share.listed() {
                    evict.notified().await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let over_signal = session.sub.as_ref().map(|s| s.over_signal());
            let over = async {
                match over_signal {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            let message = async {
                match session.sub.as_mut() {
                    Some(sub) => sub.recv().await,
                    None => std::future::pending().await,
                }
            };
            // Not biased: a subscriber under a steady flow of messages still gets its
            // UNSUBSCRIBE read (messages queued before a request are written ahead of its
            // reply by `drain`).
            let woke = tokio::select! {
                m = message => Woke::Message(m),
                _ = over => Woke::Over,
                r = read => Woke::Read(r?),
                _ = crate::state::stopped(&mut stop) => Woke::Stop,
                _ = idle_wait => Woke::Idle,
                _ = evict_wait => Woke::Evicted,
            };
            match woke {
                Woke::Read(n) => n,
                Woke::Message(m) => {
                    // Written by the flush at the top of the loop, which also closes a
                    // subscriber over its limit.
                    if let Some(m) = m
                        && !deliver(&mut session, m)
                    {
                        return close_subscriber(shared, &session);
                    }
                    continue;
                }
                Woke::Over => return close_subscriber(shared, &session),
                Woke::Evicted => {
                    if share.still_must_go() {
                        return over_budget(stream, shared, &mut session, held, &mut share).await;
                    }
                    continue;
                }
                Woke::Stop => {
                    draining = true;
                    continue;
                }
                Woke::Idle => {
                    shared.metrics.idle_closed.incr();
                    tracing::debug!(addr = %session.info.addr, "idle timeout; closing");
                    return Ok(());
                }
            }
        };
        if n == 0 {
            return Ok(());
        }
        // This process may have been paused (SIGSTOP, a VM freeze) while the request was on
        // its way, holding copies the cluster changed meanwhile: it is answered once they
        // are dropped (`strata::cluster::pause`).
        if let Some(gate) = &shared.pause_gate
            && !gate.is_open()
            && !gate.wait_open().await
        {
            tracing::warn!("the cluster tick stays late: answering without waiting longer");
        }
    }
}

/// Whether a request's first word is one an HTTP request starts a line with and no Redis
/// command has: `POST` (the request line a browser's cross-site `fetch` sends) or `Host:`
/// (a header every HTTP/1.1 request carries) — Redis's test for the same attack.
fn is_http(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"POST") || name.eq_ignore_ascii_case(b"Host:")
}

/// The client a command runs for, when its changes must not be announced back to it
/// (`CLIENT TRACKING … NOLOOP`).
/// Runs a pipeline's pending group of writes (`commands::execute_sets`), if any, and empties
/// it; true when its replies passed the output limit (see [`over_output_limit`]: the caller sends
/// what came before and closes the client).
async fn run_group(
    shared: &Shared,
    session: &mut Session<'_>,
    group: &mut Vec<Vec<Bytes>>,
    out_limit: usize,
) -> bool {
    if group.is_empty() {
        return false;
    }
    let mark = session.reply.buf.len();
    as_origin(
        origin(session),
        commands::execute_sets(shared, session, group),
    )
    .await;
    group.clear();
    over_output_limit(shared, session, mark, out_limit)
}

/// Whether the replies written since `mark` passed the output limit: they are incomplete,
/// so they are dropped, and the caller sends what came before and closes the client, as
/// Redis does past `client-output-buffer-limit`.
fn over_output_limit(
    shared: &Shared,
    session: &mut Session<'_>,
    mark: usize,
    out_limit: usize,
) -> bool {
    if !session.reply.overflowed() {
        return false;
    }
    session.reply.buf.truncate(mark);
    shared.metrics.output_limit_closed.incr();
    tracing::warn!(
        addr = %session.info.addr,
        limit = out_limit,
        "reply over server.client_output_buffer_limit_bytes; closing the client"
    );
    true
}

fn origin(session: &Session<'_>) -> Option<u64> {
    session.tracking.noloop.then_some(session.info.id)
}

/// Runs `f` as client `origin`'s command ([`crate::tracking::ORIGIN`]).
fn as_origin<F: std::future::Future>(
    origin: Option<u64>,
    f: F,
) -> impl std::future::Future<Output = F::Output> {
    // Not an `async fn`: one holding `f` in two branches was twice its size, and the
    // connection moves this future whole at every command.
    match origin {
        Some(id) => futures_util::future::Either::Left(crate::tracking::ORIGIN.scope(id, f)),
        None => futures_util::future::Either::Right(f),
    }
}

/// What woke a connection waiting for input.
enum Woke {
    Read(usize),
    Message(Option<crate::pubsub::Push>),
    /// The subscriber fell further behind than its limit.
    Over,
    Stop,
    Idle,
    /// Told to close: it is the largest holder while all clients are over their budget.
    Evicted,
}

/// Writes `first` and the messages queued behind it (up to a batch) into the reply buffer;
/// the loop flushes them. False when the reply buffer could not take them.
fn deliver(session: &mut Session<'_>, first: crate::pubsub::Push) -> bool {
    let subscribed = session.sub.as_ref().is_some_and(|s| s.is_subscribed());
    commands::pubsub::write_push(&mut session.reply, subscribed, &first);
    for _ in 0..256 {
        if session.reply.overflowed() || session.reply.buf.len() >= FLUSH_AT {
            break;
        }
        let Some(m) = session.sub.as_mut().and_then(|s| s.try_recv()) else {
            break;
        };
        commands::pubsub::write_push(&mut session.reply, subscribed, &m);
    }
    !session.reply.overflowed()
}

/// Writes the reply. A large one (more than [`BUDGET_VICTIM_ABOVE`]) may wait on a client
/// that does not read, so it first counts in the clients' memory with `base` (the
/// connection's input and state), which may close this client; a small one is written at
/// once (the next update at the read counts the rest). `Some` when the connection is to
/// close, with what the caller returns.
async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    shared: &Shared,
    session: &mut Session<'_>,
    share: &mut Share,
    base: usize,
) -> std::io::Result<Option<std::io::Result<()>>> {
    // Notices the batch's own commands caused (a tracking client's write of a key it
    // cached) go out with its replies, as Redis sends them before it reads again: a
    // client-side cache checks the socket for notices before it answers from memory, and
    // one sent after a later wake-up let redis-py's cache serve the value its own acknowledged
    // write had replaced (86 of 2,000 tries; review 2026-12-05).
    if !commands::pubsub::drain(session) {
        return Ok(Some(close_subscriber(shared, session)));
    }
    if session.reply.buf.len() > BUDGET_VICTIM_ABOVE {
        let held = base + session.reply.buf.len();
        if share.must_go(held, true) {
            return Ok(Some(
                over_budget(stream, shared, session, held, share).await,
            ));
        }
    }
    Ok(match flush_checked(stream, session, share).await? {
        Flushed::Done => None,
        Flushed::SubscriberOver => Some(close_subscriber(shared, session)),
        Flushed::Evicted => Some(evicted(shared, session)),
    })
}

/// How [`flush_checked`] ended.
enum Flushed {
    Done,
    /// The subscriber fell behind its limit (or the clients' budget).
    SubscriberOver,
    /// Told to close by the clients' budget while writing a large reply.
    Evicted,
}

/// Flushes the reply; for a subscriber, racing its queue passing the limit, and for a large
/// reply, racing a notice from the clients' budget (a client that does not read blocks the
/// write).
async fn flush_checked<S: AsyncWrite + Unpin>(
    stream: &mut S,
    session: &mut Session<'_>,
    share: &Share,
) -> std::io::Result<Flushed> {
    let over = session.sub.as_ref().map(|s| s.over_signal());
    let large = session.reply.buf.len() > BUDGET_VICTIM_ABOVE;
    if large && share.told() && share.still_must_go() {
        return Ok(Flushed::Evicted);
    }
    if over.is_none() && !large {
        flush(stream, session).await?;
        return Ok(Flushed::Done);
    }
    let evict = share.evict_signal();
    let over_wait = async {
        match &over {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    let evict_wait = async {
        if large {
            evict.notified().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let flushed = tokio::select! {
        r = flush(stream, session) => { r?; Flushed::Done }
        _ = over_wait => Flushed::SubscriberOver,
        _ = evict_wait => Flushed::Evicted,
    };
    if matches!(flushed, Flushed::Done) && session.sub.as_ref().is_some_and(|s| s.over_limit()) {
        return Ok(Flushed::SubscriberOver);
    }
    Ok(flushed)
}

/// Counts and logs a client closed by the clients' budget in the middle of writing its
/// reply (nothing more can be sent on it); the caller returns what this returns.
fn evicted(shared: &Shared, session: &Session<'_>) -> std::io::Result<()> {
    shared.metrics.input_limit_closed.incr();
    tracing::warn!(
        addr = %session.info.addr,
        "clients' memory over server.max_input_bytes_total and this client holds the most; closing it"
    );
    Ok(())
}

/// Counts and logs a subscriber closed for falling behind; the caller returns what this
/// returns, which closes the connection and drops its subscriptions.
fn close_subscriber(shared: &Shared, session: &Session<'_>) -> std::io::Result<()> {
    shared
        .pubsub
        .closed_over_limit
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(
        addr = %session.info.addr,
        limit = shared.config.server.pubsub_output_buffer_limit_bytes,
        "subscriber over server.pubsub_output_buffer_limit_bytes (or its reply buffer); closing the client"
    );
    Ok(())
}

async fn flush<S: AsyncWrite + Unpin>(
    stream: &mut S,
    session: &mut Session<'_>,
) -> std::io::Result<()> {
    if !session.reply.buf.is_empty() {
        stream.write_all(&session.reply.buf).await?;
        session.reply.buf.clear();
        // A large reply is not kept allocated for the connection's life.
        if session.reply.buf.capacity() > SHRINK_ABOVE {
            session.reply.buf = BytesMut::with_capacity(READ_BUFFER);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The future the connection builds and moves at every command stays small: it was
    /// 22 KiB (a `run` held twice, and `as_origin` holding that twice again), and copying
    /// it was half of a pipelined `GET`'s `memmove` — 10 % of the node's CPU
    /// (docs/benchmarks.md, "A command's future, moved whole").
    #[tokio::test]
    async fn a_commands_future_stays_small() {
        let mut config = strata::NodeConfig::default();
        config.l3.enabled = false;
        let node = strata::Node::start(config.clone()).await.unwrap();
        let (_stop, stop_rx) = tokio::sync::watch::channel(false);
        let shared = Shared::new(&node, config, "127.0.0.1:0".parse().unwrap(), stop_rx);
        let info = shared.admit("127.0.0.1:1".parse().unwrap()).unwrap();
        let mut session = Session::new(&shared, info);
        let args = [Bytes::from_static(b"GET"), Bytes::from_static(b"k")];
        let size = {
            let f = as_origin(Some(1), commands::execute(&shared, &mut session, &args));
            std::mem::size_of_val(&f)
        };
        assert!(size <= 640, "a command's future is {size} bytes");
        let group = [args.to_vec()];
        let size = {
            let f = as_origin(None, commands::execute_sets(&shared, &mut session, &group));
            std::mem::size_of_val(&f)
        };
        assert!(size <= 640, "a write group's future is {size} bytes");
        node.shutdown().await;
    }
}
