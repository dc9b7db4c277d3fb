//! Pub/sub across the cluster: a message published on one member reaches the subscribers of
//! every member, in the order it was published there.
//!
//! The server installs a sink ([`crate::Node::set_publish_sink`]) that delivers to its own
//! subscribers. `PUBLISH` delivers locally and puts the message on one queue per other live
//! member; a task per member sends its queue in batches (`Publish` requests, or
//! `PublishSharded` when `SPUBLISH` messages are among them), one batch at a time and never
//! twice, so a member receives a member's messages in order, of both kinds. On the
//! receiving side, each peer connection hands its batches to a delivery task of its own, in
//! order, and answers at once: delivering (matching every pattern) never holds up the
//! replication and execution requests that share the connection. Delivery is at most once, as
//! in Redis: a member that is down, cut off or slow misses what it could not take — each
//! queue holds at most [`PEER_QUEUE_BYTES`] — and one slow member never delays the others.

use std::collections::HashMap;

use super::*;

/// Most bytes of messages waiting for one member; past it, new ones are not forwarded to it.
pub(crate) const PEER_QUEUE_BYTES: usize = 64 << 20;

/// Most bytes of messages in one `Publish` request (a single larger message goes alone; it
/// fits a frame, since a message is at most a key and a value).
const BATCH_BYTES: usize = 1 << 20;

/// Most batches a connection's delivery task may have waiting; past it, batches from that
/// peer are dropped (counted).
const DELIVERY_BACKLOG: usize = 64;

/// What delivers a message to this node's subscribers: (channel, payload, whether it is a
/// shard channel's, `SPUBLISH`); returns how many got it.
pub type PublishSink = Arc<dyn Fn(&[u8], &[u8], bool) -> usize + Send + Sync>;

/// One message on its way to the other members (shared by their queues): channel, payload,
/// sharded.
type Msg = Arc<(Vec<u8>, Vec<u8>, bool)>;

/// One member's queue and the task that sends it.
struct PeerQueue {
    tx: mpsc::UnboundedSender<Msg>,
    bytes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

/// The per-member queues and the local sink.
#[derive(Default)]
pub(crate) struct Relay {
    pub(crate) sink: OnceLock<PublishSink>,
    queues: Mutex<HashMap<String, PeerQueue>>,
    /// Messages not forwarded to a member because its queue was full (per member).
    pub(crate) dropped: AtomicU64,
    /// Messages sent to other members (per member).
    pub(crate) forwarded: AtomicU64,
    /// Messages received from other members and delivered here.
    pub(crate) received: AtomicU64,
}

impl Relay {
    /// Stops every member's sending task (the cluster stops).
    pub(crate) fn stop(&self) {
        for (_, q) in self.queues.lock().drain() {
            q.task.abort();
        }
    }
}

fn size(m: &(Vec<u8>, Vec<u8>, bool)) -> u64 {
    (m.0.len() + m.1.len() + 32) as u64
}

impl Shared {
    /// Queues a message published here (`sharded`: by `SPUBLISH`) for every other live
    /// member.
    pub(crate) fn forward_publish(self: &Arc<Self>, channel: &[u8], payload: &[u8], sharded: bool) {
        let others = self.others();
        if others.is_empty() {
            return;
        }
        let msg: Msg = Arc::new((channel.to_vec(), payload.to_vec(), sharded));
        let n = size(&msg);
        let mut queues = self.relay.queues.lock();
        for (peer, addr) in others {
            let q = queues.entry(peer.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let bytes = Arc::new(AtomicU64::new(0));
                let task = tokio::spawn(self.clone().send_loop(peer, addr, rx, bytes.clone()));
                PeerQueue { tx, bytes, task }
            });
            if q.bytes.load(Ordering::Acquire) + n > PEER_QUEUE_BYTES as u64 {
                self.relay.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            q.bytes.fetch_add(n, Ordering::AcqRel);
            if q.tx.send(msg.clone()).is_err() {
                q.bytes.fetch_sub(n, Ordering::AcqRel);
                self.relay.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends one member's queue, a batch at a time, until aborted.
    async fn send_loop(
        self: Arc<Self>,
        peer: String,
        addr: SocketAddr,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        bytes: Arc<AtomicU64>,
    ) {
        while let Some(first) = rx.recv().await {
            let mut batch_bytes = size(&first);
            let mut batch = vec![first];
            while batch_bytes < BATCH_BYTES as u64 && batch.len() < rpc::MAX_PUBLISH_PER_REQUEST {
                match rx.try_recv() {
                    Ok(m) => {
                        batch_bytes += size(&m);
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
            bytes.fetch_sub(batch_bytes, Ordering::AcqRel);
            let n = batch.len() as u64;
            // Plain messages only: the request every build knows; with shard channels among
            // them, each message says which it is.
            let owned = |m: &Msg| {
                (
                    rpc::ByteBuf::from(m.0.clone()),
                    rpc::ByteBuf::from(m.1.clone()),
                )
            };
            let req = if batch.iter().any(|m| m.2) {
                Request::PublishSharded {
                    messages: batch
                        .iter()
                        .map(|m| {
                            let (channel, payload) = owned(m);
                            (channel, payload, m.2)
                        })
                        .collect(),
                }
            } else {
                Request::Publish {
                    messages: batch.iter().map(owned).collect(),
                }
            };
            // The member's address may have changed (a restart): use the current one.
            let addr = self
                .others()
                .into_iter()
                .find(|(name, _)| *name == peer)
                .map_or(addr, |(_, a)| a);
            match self.pool.call(&peer, addr, req, None).await {
                Ok(_) => {
                    self.relay.forwarded.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    self.relay.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::debug!(node = %self.name, %peer, error = %e, "forwarding published messages failed");
                }
            }
        }
    }

    /// Delivers messages another member forwarded to this node's subscribers (a shard
    /// channel's to the shard-channel ones).
    pub(crate) fn deliver_published(&self, messages: &[Forwarded]) -> u64 {
        let Some(sink) = self.relay.sink.get() else {
            return 0;
        };
        self.relay
            .received
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        messages
            .iter()
            .map(|(c, p, sharded)| sink(c, p, *sharded) as u64)
            .sum()
    }
}

/// One peer connection's delivery of forwarded messages: batches are delivered in the order
/// they arrived, on a task of their own, so the connection's reader answers at once.
pub(crate) struct Delivery {
    tx: mpsc::Sender<Vec<Forwarded>>,
}

/// A message forwarded by another member: channel, payload, whether it is a shard channel's.
pub(crate) type Forwarded = (rpc::ByteBuf, rpc::ByteBuf, bool);

/// A request, with a `Publish` or `PublishSharded` one's messages taken out.
pub(crate) enum Sorted {
    /// The messages of a publish request, each with its kind.
    Published(Vec<Forwarded>),
    /// Any other request.
    Other(Request),
}

/// Takes the messages out of a `Publish` or `PublishSharded` request.
pub(crate) fn forwarded(req: Request) -> Sorted {
    match req {
        Request::Publish { messages } => {
            Sorted::Published(messages.into_iter().map(|(c, p)| (c, p, false)).collect())
        }
        Request::PublishSharded { messages } => Sorted::Published(messages),
        other => Sorted::Other(other),
    }
}

impl Delivery {
    /// Starts the delivery task for one connection.
    pub(crate) fn start(shared: &Arc<Shared>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<Forwarded>>(DELIVERY_BACKLOG);
        let me = shared.clone();
        // Ends once the connection is gone (its sender dropped) and the queue is delivered.
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                me.deliver_published(&batch);
            }
        });
        Delivery { tx }
    }

    /// Hands a batch over; false (and counted as dropped) when the backlog is full.
    pub(crate) fn offer(&self, shared: &Shared, messages: Vec<Forwarded>) -> bool {
        let n = messages.len() as u64;
        if self.tx.try_send(messages).is_err() {
            shared.relay.dropped.fetch_add(n, Ordering::Relaxed);
            return false;
        }
        true
    }
}
