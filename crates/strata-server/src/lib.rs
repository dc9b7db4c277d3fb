//! The `strata` binary's library: a Strata node served over the Redis protocol, an admin HTTP
//! port, and the CLI that talks to it.
//!
//! - [`serve`] runs a node until SIGTERM/SIGINT (or until its shutdown handle fires): the RESP
//!   listener ([`conn`]), the admin port ([`admin`]), then a graceful drain.
//! - [`commands`] maps Redis commands onto the node's [`strata_core::Cache`]: strings only
//!   (GET/SET and friends, counters, TTLs, key listing), databases as namespaces, and Strata's
//!   own tag and pattern invalidation.
//! - [`cli`] is `strata status`, `strata stats`, `strata invalidate`, `strata config check`.

pub mod acl;
pub mod admin;
pub mod admin_conn;
pub mod alloc;
pub mod budget;
pub mod cli;
pub mod commands;
pub mod conn;
pub mod entry;
pub mod guard;
pub mod import;
pub mod import_file;
pub mod metrics;
pub mod pubsub;
pub mod state;
pub mod tls;
pub mod top;
pub mod tracking;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use strata::{Node, NodeConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use state::Shared;

/// How long a leaving cluster member keeps answering its peers after it announced that it
/// leaves (their rings drop it within a gossip round).
const LEAVE_LINGER_MS: u64 = 500;

/// A running server's addresses and its stop switch (tests and embedders use it; the binary
/// stops on signals).
#[derive(Debug)]
pub struct Running {
    /// The bound RESP address (useful with port 0).
    pub resp_addr: std::net::SocketAddr,
    /// The bound admin address.
    pub admin_addr: std::net::SocketAddr,
    /// The bound cluster-mode RESP address (`server.cluster_listen`), if any.
    pub cluster_addr: Option<std::net::SocketAddr>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Starts a graceful shutdown and waits for it: stop accepting, drain connections, stop
    /// the node (flushing L3).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.done.await.context("server task failed")?
    }
}

/// Starts a node and its listeners; returns once they are bound.
pub async fn start(config: NodeConfig) -> anyhow::Result<Running> {
    config.check_protected_mode()?;
    let tls = config.server.tls.as_ref();
    let resp_tls = match tls.filter(|t| t.resp) {
        Some(t) => Some(tls::acceptor(&t.files, &[])?),
        None => None,
    };
    let admin_tls = match tls.filter(|t| t.admin) {
        Some(t) => Some(tls::acceptor(&t.files, &[b"http/1.1"])?),
        None => None,
    };
    let resp = TcpListener::bind(&config.server.resp_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.resp_listen)",
                config.server.resp_listen
            )
        })?;
    let admin = TcpListener::bind(&config.server.admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.admin_listen)",
                config.server.admin_listen
            )
        })?;
    let cluster = match &config.server.cluster_listen {
        None => None,
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (server.cluster_listen)"))?,
        ),
    };
    let resp_addr = resp.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let cluster_addr = cluster.as_ref().map(TcpListener::local_addr).transpose()?;
    // The bound addresses (port 0 resolved): a cluster member announces them to the others.
    let mut config = config;
    config.server.resp_listen = resp_addr.to_string();
    config.server.admin_listen = admin_addr.to_string();
    config.server.cluster_listen = cluster_addr.map(|a| a.to_string());
    let node = Node::start(config.clone())
        .await
        .context("cannot start the node")?;
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared::new(&node, config, resp_addr, stop_rx.clone()));
    fit_clients_to_file_limit(&shared);
    metrics::register(&node, &shared);
    tracing::info!(
        %resp_addr,
        %admin_addr,
        cluster_addr = cluster_addr.map(|a| a.to_string()).unwrap_or_default(),
        node = %shared.config.node.name,
        resp_tls = resp_tls.is_some(),
        admin_tls = admin_tls.is_some(),
        "strata serving"
    );
    let done = tokio::spawn(run(
        node,
        shared,
        (resp, resp_tls.clone()),
        cluster.map(|l| (l, resp_tls)),
        (admin, admin_tls),
        stop_rx,
    ));
    Ok(Running {
        resp_addr,
        admin_addr,
        cluster_addr,
        stop,
        done,
    })
}

/// A listener and the TLS acceptor in front of it, if any.
type Listening = (TcpListener, Option<tokio_rustls::TlsAcceptor>);

async fn run(
    node: Node,
    shared: Arc<Shared>,
    (resp, resp_tls): Listening,
    cluster: Option<Listening>,
    (admin, admin_tls): Listening,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let node = Arc::new(node);
    let admin_task = tokio::spawn(admin::serve(
        admin,
        admin_tls,
        node.clone(),
        shared.clone(),
        stop.clone(),
    ));
    let expiries = tokio::spawn(tracking::expiry_loop(
        shared.tracking.clone(),
        shared.cache.clone(),
        stop.clone(),
    ));
    // The cluster listener's connections are answered as by a Redis Cluster node.
    let cluster_accept =
        cluster.map(|(l, tls)| tokio::spawn(conn::accept_loop(l, shared.clone(), tls, true)));
    let accept = conn::accept_loop(resp, shared.clone(), resp_tls, false);
    tokio::select! {
        _ = accept => {}
        _ = crate::state::stopped(&mut stop) => {}
    }
    if let Some(task) = cluster_accept {
        let _ = task.await;
    }
    tracing::info!("shutting down: no new connections; draining");
    let grace = Duration::from_millis(shared.config.server.shutdown_grace_ms);
    if tokio::time::timeout(grace, shared.drained()).await.is_err() {
        tracing::warn!(
            open = shared.connection_count(),
            "connections still open after the shutdown grace; closing them"
        );
    }
    let _ = admin_task.await;
    let _ = expiries.await;
    // Leave the cluster before answering nothing: peers stop sending this node writes as
    // their rings drop it, and what they sent meanwhile goes to the next primary.
    // It hands its keys to the members that stay meanwhile, for up to the grace again.
    node.leave_cluster(Duration::from_millis(LEAVE_LINGER_MS), grace)
        .await;
    match Arc::try_unwrap(node) {
        Ok(node) => node.shutdown().await,
        Err(_) => tracing::warn!("node still referenced at shutdown; dropping it"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// File descriptors kept for everything but clients: RocksDB's files, peers, the admin
/// port, listeners, logs.
pub const RESERVED_FDS: u64 = 256;

/// As Redis does at start: raises the process's open-file limit to what `max_clients`
/// needs (up to the hard limit), and lowers `max_clients` when the limit cannot cover it,
/// so that a busy server refuses clients with `-ERR max number of clients reached` rather
/// than failing to accept (or to open its own files) with EMFILE.
fn fit_clients_to_file_limit(shared: &Shared) {
    use std::sync::atomic::Ordering;
    let want = u64::from(shared.max_clients.load(Ordering::Relaxed)) + RESERVED_FDS;
    let Ok(limit) = rlimit::increase_nofile_limit(want) else {
        return;
    };
    if limit < want {
        let fit = u32::try_from(limit.saturating_sub(RESERVED_FDS))
            .unwrap_or(u32::MAX)
            .max(1);
        tracing::warn!(
            open_file_limit = limit,
            max_clients = fit,
            "the open-file limit cannot cover server.max_clients: lowered it (raise `ulimit -n` or LimitNOFILE for more)"
        );
        shared.max_clients.store(fit, Ordering::Relaxed);
    }
}

/// Runs a server until SIGTERM or SIGINT, then shuts it down gracefully.
pub async fn serve(config: NodeConfig) -> anyhow::Result<()> {
    let running = start(config).await?;
    wait_for_signal().await;
    running.shutdown().await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
