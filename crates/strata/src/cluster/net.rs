//! The cluster's sockets: tokio's, or — with feature `turmoil`, and only while running
//! inside a turmoil simulation — turmoil's simulated ones, so that the tier-2 test runs the
//! real gossip and RPC tasks over a simulated network it can partition.
//!
//! Outside a simulation every socket is tokio's, whatever the features: the variant is
//! chosen when a socket is bound or connected, by `turmoil::in_simulation()`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The gossip socket.
#[derive(Debug)]
pub(crate) enum UdpSocket {
    Tokio(tokio::net::UdpSocket),
    #[cfg(feature = "turmoil")]
    Sim(turmoil::net::UdpSocket),
}

impl UdpSocket {
    pub(crate) async fn bind(addr: &str) -> io::Result<Self> {
        #[cfg(feature = "turmoil")]
        if turmoil::in_simulation() {
            return Ok(Self::Sim(turmoil::net::UdpSocket::bind(addr).await?));
        }
        Ok(Self::Tokio(tokio::net::UdpSocket::bind(addr).await?))
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Self::Tokio(s) => s.local_addr(),
            #[cfg(feature = "turmoil")]
            Self::Sim(s) => s.local_addr(),
        }
    }

    /// Sends without waiting; a full socket buffer drops the datagram (gossip tolerates loss).
    pub(crate) fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        match self {
            Self::Tokio(s) => s.try_send_to(buf, to),
            #[cfg(feature = "turmoil")]
            Self::Sim(s) => s.try_send_to(buf, to),
        }
    }

    pub(crate) async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            Self::Tokio(s) => s.recv_from(buf).await,
            #[cfg(feature = "turmoil")]
            Self::Sim(s) => s.recv_from(buf).await,
        }
    }
}

/// The peer RPC listener.
pub(crate) enum TcpListener {
    Tokio(tokio::net::TcpListener),
    #[cfg(feature = "turmoil")]
    Sim(turmoil::net::TcpListener),
}

impl TcpListener {
    pub(crate) async fn bind(addr: &str) -> io::Result<Self> {
        #[cfg(feature = "turmoil")]
        if turmoil::in_simulation() {
            return Ok(Self::Sim(turmoil::net::TcpListener::bind(addr).await?));
        }
        Ok(Self::Tokio(tokio::net::TcpListener::bind(addr).await?))
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Self::Tokio(s) => s.local_addr(),
            #[cfg(feature = "turmoil")]
            Self::Sim(s) => s.local_addr(),
        }
    }

    pub(crate) async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        match self {
            Self::Tokio(s) => s.accept().await.map(|(c, a)| (TcpStream::Tokio(c), a)),
            #[cfg(feature = "turmoil")]
            Self::Sim(s) => s.accept().await.map(|(c, a)| (TcpStream::Sim(c), a)),
        }
    }
}

/// One peer connection.
#[derive(Debug)]
pub(crate) enum TcpStream {
    Tokio(tokio::net::TcpStream),
    #[cfg(feature = "turmoil")]
    Sim(turmoil::net::TcpStream),
}

impl TcpStream {
    pub(crate) async fn connect(addr: SocketAddr) -> io::Result<Self> {
        #[cfg(feature = "turmoil")]
        if turmoil::in_simulation() {
            return Ok(Self::Sim(turmoil::net::TcpStream::connect(addr).await?));
        }
        Ok(Self::Tokio(tokio::net::TcpStream::connect(addr).await?))
    }

    pub(crate) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            Self::Tokio(s) => s.set_nodelay(on),
            #[cfg(feature = "turmoil")]
            Self::Sim(s) => s.set_nodelay(on),
        }
    }

    /// Runs the TLS handshake of `side` over this connection and splits the result. TLS is
    /// not simulated: a turmoil connection fails here.
    /// Also returns the peer's end-entity certificate, when it presented one.
    pub(crate) async fn into_tls(
        self,
        side: TlsSide,
    ) -> io::Result<(ReadHalf, WriteHalf, Option<PeerCert>)> {
        let tcp = match self {
            Self::Tokio(s) => s,
            #[cfg(feature = "turmoil")]
            Self::Sim(_) => {
                return Err(io::Error::other(
                    "TLS is not available in a turmoil simulation",
                ));
            }
        };
        let tls: tokio_rustls::TlsStream<tokio::net::TcpStream> = match side {
            TlsSide::Client(config, name) => tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?
                .into(),
            TlsSide::Server(config) => tokio_rustls::TlsAcceptor::from(config)
                .accept(tcp)
                .await?
                .into(),
        };
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned());
        let (r, w) = tokio::io::split(tls);
        Ok((ReadHalf::Tls(r), WriteHalf::Tls(w), cert))
    }

    pub(crate) fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Self::Tokio(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tokio(r), WriteHalf::Tokio(w))
            }
            #[cfg(feature = "turmoil")]
            Self::Sim(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Sim(r), WriteHalf::Sim(w))
            }
        }
    }
}

/// Which end of a TLS connection this node is.
pub(crate) enum TlsSide {
    /// Dialing the peer with this name (checked against its certificate).
    Client(
        std::sync::Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    ),
    /// Accepting.
    Server(std::sync::Arc<rustls::ServerConfig>),
}

type TlsTcp = tokio_rustls::TlsStream<tokio::net::TcpStream>;

/// A peer's end-entity certificate.
pub(crate) type PeerCert = rustls_pki_types::CertificateDer<'static>;

/// The reading half of a peer connection.
#[derive(Debug)]
pub(crate) enum ReadHalf {
    Tokio(tokio::net::tcp::OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsTcp>),
    #[cfg(feature = "turmoil")]
    Sim(turmoil::net::tcp::OwnedReadHalf),
}

/// The writing half of a peer connection.
#[derive(Debug)]
pub(crate) enum WriteHalf {
    Tokio(tokio::net::tcp::OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsTcp>),
    #[cfg(feature = "turmoil")]
    Sim(turmoil::net::tcp::OwnedWriteHalf),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tokio(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "turmoil")]
            Self::Sim(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tokio(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "turmoil")]
            Self::Sim(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tokio(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "turmoil")]
            Self::Sim(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tokio(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "turmoil")]
            Self::Sim(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
