//! Bounds on the admin port's connections: at most [`ADMIN_CONNECTIONS`] at once — one more
//! closes the oldest (the policy of [`strata::pending::Pending`]), so connections an attacker
//! opens and leaves idle cannot use up the process's file descriptors and lock out the RESP
//! port, nor keep operators out — and a connection that neither reads nor writes for
//! [`ADMIN_IDLE`] is closed.
//!
//! [`Bounded`] wraps any listener axum serves (plain TCP, or [`crate::tls::TlsListener`]),
//! and each connection it hands out as a [`Tracked`] stream that ends with an error once it
//! is evicted or idle; hyper then drops it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use strata::pending::Pending;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use strata_core::stats::Counter;

/// Most admin connections open at once.
pub const ADMIN_CONNECTIONS: usize = 128;
/// An admin connection with no traffic either way for this long is closed (a scraper's
/// keep-alive connection is used every few seconds).
pub const ADMIN_IDLE: Duration = Duration::from_secs(60);

/// A listener whose connections are bounded in number and idle time.
pub struct Bounded<L> {
    inner: L,
    open: Arc<parking_lot::Mutex<Pending>>,
    closed: Arc<Counter>,
    idle: Duration,
}

impl<L> Bounded<L> {
    /// Wraps `inner`, counting the connections it closes in `closed`.
    pub fn new(inner: L, closed: Arc<Counter>) -> Self {
        Self::with(inner, closed, ADMIN_CONNECTIONS, ADMIN_IDLE)
    }

    /// [`Bounded::new`] with other bounds (tests).
    pub fn with(inner: L, closed: Arc<Counter>, cap: usize, idle: Duration) -> Self {
        Self {
            inner,
            open: Arc::new(parking_lot::Mutex::new(Pending::new(cap))),
            closed,
            idle,
        }
    }
}

impl<L: axum::serve::Listener> axum::serve::Listener for Bounded<L> {
    type Io = Tracked<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        let (id, evict, evicted) = self.open.lock().enter();
        if evicted {
            self.closed.incr();
            // A client that opens connections in a loop would write a line each.
            static LIMIT: crate::guard::LogLimit = crate::guard::LogLimit::new();
            if let Some(left_out) = LIMIT.admit() {
                tracing::warn!(
                    cap = self.open.lock().len(),
                    others_not_logged = left_out,
                    "admin connections at their bound; closed the oldest"
                );
            }
        }
        let io = Tracked {
            inner: io,
            id,
            evict,
            open: self.open.clone(),
            idle: self.idle,
            deadline: Box::pin(tokio::time::sleep(self.idle)),
            closed: self.closed.clone(),
            ended: None,
        };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Which admin connection a request came on (axum's `ConnectInfo`): a request with a valid
/// credential marks its connection kept ([`AdminConn::keep`]). A client that opened
/// connections in a loop, each new one closing the oldest, closed operators' connections in
/// the middle of their requests (8 of 14 `POST /namespaces/count` failed, review
/// 2026-12-06); a kept connection goes only after every connection that is not.
#[derive(Clone)]
pub struct AdminConn {
    id: u64,
    open: Arc<parking_lot::Mutex<Pending>>,
}

impl AdminConn {
    /// The connection carried a valid credential.
    pub fn keep(&self) {
        self.open.lock().prefer(self.id);
    }
}

impl<L: axum::serve::Listener>
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Bounded<L>>>
    for AdminConn
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Bounded<L>>) -> Self {
        let io = stream.io();
        Self {
            id: io.id,
            open: io.open.clone(),
        }
    }
}

/// One admin connection: `inner`, failing every read and write once it was closed to make
/// room or went idle.
pub struct Tracked<T> {
    inner: T,
    id: u64,
    evict: oneshot::Receiver<()>,
    open: Arc<parking_lot::Mutex<Pending>>,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    closed: Arc<Counter>,
    /// Why it ended, once it has (the eviction switch is not polled again).
    ended: Option<(io::ErrorKind, &'static str)>,
}

impl<T> Tracked<T> {
    /// An error when the connection must end (registering the task to be woken when it
    /// must), else `None`.
    fn ended(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.ended.is_none() {
            // Fires on eviction; a dropped sender (never, while registered) counts too.
            if Pin::new(&mut self.evict).poll(cx).is_ready() {
                self.ended = Some((
                    io::ErrorKind::ConnectionAborted,
                    "admin connection closed to make room",
                ));
            } else if self.deadline.as_mut().poll(cx).is_ready() {
                self.closed.incr();
                self.ended = Some((io::ErrorKind::TimedOut, "admin connection idle"));
            }
        }
        self.ended.map(|(kind, why)| io::Error::new(kind, why))
    }

    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }
}

impl<T> Drop for Tracked<T> {
    fn drop(&mut self) {
        self.open.lock().leave(self.id);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.ended(cx) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.ended(cx) {
            return Poll::Ready(Err(e));
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.ended(cx) {
            return Poll::Ready(Err(e));
        }
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn bounded(cap: usize, idle: Duration) -> (Bounded<tokio::net::TcpListener>, u16) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        (Bounded::with(l, Arc::default(), cap, idle), port)
    }

    /// Reads until EOF or an error; true when the server side ended the connection.
    async fn ended(c: &mut tokio::net::TcpStream) -> bool {
        let mut b = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), c.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    /// Echoes what each connection sends, as a server task would.
    fn echo(mut io: Tracked<tokio::net::TcpStream>) {
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            while let Ok(n) = io.read(&mut b).await {
                if n == 0 || io.write_all(&b[..n]).await.is_err() {
                    break;
                }
            }
        });
    }

    #[tokio::test]
    async fn one_connection_past_the_bound_closes_the_oldest() {
        let (mut l, port) = bounded(2, Duration::from_secs(60)).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap(),
            );
            echo(l.accept().await.0);
        }
        assert!(ended(&mut clients[0]).await, "the oldest was closed");
        assert_eq!(l.closed.get(), 1);
        for c in &mut clients[1..] {
            c.write_all(b"ping").await.unwrap();
            let mut b = [0u8; 4];
            c.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"ping", "the newer ones still work");
        }
        assert_eq!(l.open.lock().len(), 2);
        drop(clients);
        // A closed connection leaves the set.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(l.open.lock().len(), 0);
    }

    #[tokio::test]
    async fn a_connection_with_no_traffic_is_closed() {
        let (mut l, port) = bounded(8, Duration::from_millis(300)).await;
        let mut quiet = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        echo(l.accept().await.0);
        let mut busy = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        echo(l.accept().await.0);
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            busy.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            busy.read_exact(&mut b).await.unwrap();
        }
        assert!(ended(&mut quiet).await, "idle past the bound");
        assert_eq!(l.closed.get(), 1, "the busy one stayed");
    }
}
