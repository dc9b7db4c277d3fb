//! Single-flight: concurrent misses for one key on one node run the loader once.
//!
//! The first caller becomes the leader and runs the loader in its own task; later callers
//! wait on a `watch` channel for the leader's result, value or error. If the leader is
//! cancelled (its future dropped) before finishing, the channel closes without a result and
//! the waiters start over, so one cancelled caller never strands the others.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::error::CacheError;

pub(crate) type FlightResult = Result<Bytes, CacheError>;
type FlightKey = (Box<str>, Bytes);
type Slot = Option<FlightResult>;

#[derive(Default)]
pub(crate) struct Flights {
    inflight: Mutex<HashMap<FlightKey, watch::Receiver<Slot>>>,
}

pub(crate) enum Role {
    Leader(LeaderGuard),
    Follower(watch::Receiver<Slot>),
}

impl Flights {
    /// Joins the load of `(namespace, key)`: the caller leads it or follows the one under way.
    pub(crate) fn join(self: &Arc<Self>, namespace: &str, key: &Bytes) -> Role {
        let fkey: FlightKey = (namespace.into(), key.clone());
        let mut map = self.inflight.lock();
        if let Some(rx) = map.get(&fkey) {
            return Role::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(fkey.clone(), rx);
        Role::Leader(LeaderGuard {
            flights: self.clone(),
            key: Some(fkey),
            tx,
        })
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inflight.lock().len()
    }
}

/// Waits for the leader; `None` means it was cancelled and the caller should start over.
pub(crate) async fn follow(mut rx: watch::Receiver<Slot>) -> Option<FlightResult> {
    match rx.wait_for(Option::is_some).await {
        Ok(slot) => slot.clone(),
        Err(_) => None,
    }
}

/// Held by the caller running the loader; publishes its result or, if dropped first, releases
/// the waiters to retry.
pub(crate) struct LeaderGuard {
    flights: Arc<Flights>,
    key: Option<FlightKey>,
    tx: watch::Sender<Slot>,
}

impl LeaderGuard {
    /// Hands `result` to every waiter and ends the flight.
    pub(crate) fn finish(mut self, result: FlightResult) {
        // send_replace stores the value even if nobody is waiting.
        self.tx.send_replace(Some(result));
        self.release();
    }

    fn release(&mut self) {
        if let Some(key) = self.key.take() {
            let mut map = self.flights.inflight.lock();
            // Remove only our own flight: the key may already belong to a newer one.
            if map
                .get(&key)
                .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
            {
                map.remove(&key);
            }
        }
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_result() {
        let f = Arc::new(Flights::default());
        let key = Bytes::from_static(b"k");
        let Role::Leader(guard) = f.join("ns", &key) else {
            panic!("first caller must lead")
        };
        let Role::Follower(rx) = f.join("ns", &key) else {
            panic!("second caller must follow")
        };
        let waiter = tokio::spawn(follow(rx));
        guard.finish(Ok(Bytes::from_static(b"v")));
        let got = waiter.await.unwrap();
        assert_eq!(got.unwrap().unwrap(), Bytes::from_static(b"v"));
        assert_eq!(f.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_followers_to_retry() {
        let f = Arc::new(Flights::default());
        let key = Bytes::from_static(b"k");
        let Role::Leader(guard) = f.join("ns", &key) else {
            panic!()
        };
        let Role::Follower(rx) = f.join("ns", &key) else {
            panic!()
        };
        drop(guard);
        assert!(follow(rx).await.is_none());
        assert!(matches!(f.join("ns", &key), Role::Leader(_)));
    }
}
