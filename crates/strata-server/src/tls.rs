//! TLS on the server's listeners (`[server.tls]`): the RESP port (as `redis-server
//! --tls-port`: `redis-cli --tls`, redis-py `ssl=True`, redis-rs `rediss://`) and the admin
//! port (HTTPS). Each handshake runs in its own task and must finish within
//! [`HANDSHAKE_TIMEOUT`], so a client that connects and sends nothing holds one task for
//! that long, never the accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use strata::config::TlsConfig;
use strata::pending::Pending;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::state::Shared;

/// Time a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections in their TLS handshake at once.
const ADMIN_HANDSHAKES: usize = 64;

/// An acceptor for `files`, offering `alpn` (empty for RESP; `http/1.1` for the admin port).
pub fn acceptor(files: &TlsConfig, alpn: &[&[u8]]) -> anyhow::Result<TlsAcceptor> {
    let config = strata::tls::server_config(files, alpn).context("server.tls")?;
    Ok(TlsAcceptor::from(config))
}

/// Runs the server side of a TLS handshake on `stream`, within [`HANDSHAKE_TIMEOUT`].
pub async fn accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// The admin port over HTTPS, as an axum listener: a task accepts TCP connections and runs
/// their handshakes (at most 64 at once; one more closes the oldest, so
/// idle sockets cannot lock operators out), and `accept` hands out the finished ones.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `acceptor`; failures count in `shared`'s metrics.
    pub fn new(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        shared: Arc<Shared>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(ADMIN_HANDSHAKES);
        let pending = Arc::new(parking_lot::Mutex::new(Pending::new(ADMIN_HANDSHAKES)));
        let task = tokio::spawn(async move {
            loop {
                let (stream, addr) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (id, mut evict, _) = pending.lock().enter();
                let (acceptor, tx, shared, pending) = (
                    acceptor.clone(),
                    tx.clone(),
                    shared.clone(),
                    pending.clone(),
                );
                tokio::spawn(async move {
                    let outcome = tokio::select! {
                        r = accept(&acceptor, stream) => r,
                        _ = &mut evict => Err(std::io::Error::other("closed to make room")),
                    };
                    pending.lock().leave(id);
                    match outcome {
                        Ok(tls) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Err(e) => {
                            shared.metrics.tls_failures.incr();
                            tracing::debug!(%addr, error = %e, "admin TLS handshake failed");
                        }
                    }
                });
            }
        });
        Ok(Self { local, ready, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accepting task ended (only at shutdown): wait for the server to stop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
