//! A bounded set of connections that have not proved anything yet (a handshake in
//! progress), oldest first. When it is full, a new connection closes the *oldest* instead of
//! being refused itself: connections an attacker opens and leaves idle then cannot keep
//! legitimate ones out; to starve them it must open connections faster than a legitimate
//! handshake completes, without pause. The peer RPC port and the server's TLS admin port
//! use it.

use std::collections::VecDeque;

use tokio::sync::oneshot;

/// Connections in their handshake, oldest first, each with the switch that closes it.
#[derive(Debug)]
pub struct Pending {
    cap: usize,
    next: u64,
    order: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Pending {
    /// At most `cap` at once.
    pub fn new(cap: usize) -> Self {
        Pending {
            cap: cap.max(1),
            next: 0,
            order: VecDeque::new(),
        }
    }

    /// Registers a new connection; returns its id, the receiver that fires when it must
    /// close, and whether an older one was closed to make room.
    pub fn enter(&mut self) -> (u64, oneshot::Receiver<()>, bool) {
        let (tx, rx) = oneshot::channel();
        self.next += 1;
        self.order.push_back((self.next, tx));
        let evicted = self.order.len() > self.cap;
        if evicted && let Some((_, close)) = self.order.pop_front() {
            let _ = close.send(());
        }
        debug_assert!(self.order.len() <= self.cap);
        (self.next, rx, evicted)
    }

    /// Connection `id` left the handshake (done, failed or closed).
    pub fn leave(&mut self, id: u64) {
        self.order.retain(|(i, _)| *i != id);
    }

    /// Connections in their handshake now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_set_closes_its_oldest() {
        let mut p = Pending::new(2);
        let (a, mut ra, e1) = p.enter();
        let (_, mut rb, e2) = p.enter();
        assert!(!e1 && !e2);
        let (_, _rc, e3) = p.enter();
        assert!(e3);
        assert!(ra.try_recv().is_ok(), "the oldest was told to close");
        assert!(rb.try_recv().is_err());
        assert_eq!(p.len(), 2);
        p.leave(a);
        assert_eq!(p.len(), 2, "a had already left");
    }
}
