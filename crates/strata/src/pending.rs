//! A bounded set of connections that have not proved anything yet (a handshake in
//! progress), oldest first. When it is full, a new connection closes the *oldest* instead of
//! being refused itself: connections an attacker opens and leaves idle then cannot keep
//! legitimate ones out; to starve them it must open connections faster than a legitimate
//! handshake completes, without pause. The peer RPC port and the server's TLS admin port
//! use it.

use std::collections::VecDeque;

use tokio::sync::oneshot;

/// Connections in their handshake, oldest first, each with the switch that closes it and
/// whether it is *preferred* (it comes from an address a legitimate party uses, such as a
/// member's): when the set is full, the oldest connection that is not preferred goes first,
/// so a flood from elsewhere cannot evict those.
#[derive(Debug)]
pub struct Pending {
    cap: usize,
    next: u64,
    order: VecDeque<(u64, oneshot::Sender<()>, bool)>,
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
        self.enter_as(false)
    }

    /// [`Pending::enter`] for a connection that is `preferred` or not. A full set closes its
    /// oldest connection that is not preferred, or, when all are, its oldest.
    pub fn enter_as(&mut self, preferred: bool) -> (u64, oneshot::Receiver<()>, bool) {
        let (tx, rx) = oneshot::channel();
        self.next += 1;
        self.order.push_back((self.next, tx, preferred));
        let evicted = self.order.len() > self.cap;
        if evicted {
            let victim = self.order.iter().position(|(_, _, p)| !p).unwrap_or(0);
            if let Some((_, close, _)) = self.order.remove(victim) {
                let _ = close.send(());
            }
        }
        debug_assert!(self.order.len() <= self.cap);
        (self.next, rx, evicted)
    }

    /// Connection `id` proved itself (an admin request with a valid credential): from now
    /// on it goes only after every connection that did not.
    pub fn prefer(&mut self, id: u64) {
        if let Some(e) = self.order.iter_mut().find(|(i, _, _)| *i == id) {
            e.2 = true;
        }
    }

    /// Connection `id` left the handshake (done, failed or closed).
    pub fn leave(&mut self, id: u64) {
        self.order.retain(|(i, _, _)| *i != id);
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

    #[test]
    fn a_flood_of_others_never_evicts_a_preferred_connection() {
        let mut p = Pending::new(3);
        let (_, mut member, _) = p.enter_as(true);
        let mut others = Vec::new();
        for _ in 0..100 {
            others.push(p.enter_as(false).1);
        }
        assert!(member.try_recv().is_err(), "the member's handshake goes on");
        assert_eq!(p.len(), 3);
        // Full of preferred ones: a newcomer that is not preferred is the one closed; a
        // preferred newcomer closes the oldest.
        let mut q = Pending::new(2);
        let (_, mut first, _) = q.enter_as(true);
        let (_, _second, _) = q.enter_as(true);
        let (_, mut other, _) = q.enter_as(false);
        assert!(other.try_recv().is_ok() && first.try_recv().is_err());
        let (_, _third, _) = q.enter_as(true);
        assert!(first.try_recv().is_ok());
    }
}
