//! The cap on open connections: excess ones are closed at once (a client finds out now instead
//! of waiting in a queue), counted, and traced at most every ten seconds so a flood costs a few
//! log lines, not one per connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How often refusals at the cap are traced (with the count since the last trace).
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// At most `max` connections open at once on one listener.
#[derive(Debug, Clone)]
pub struct ConnectionCap {
    listener: &'static str,
    open: Arc<Semaphore>,
    over: Arc<Mutex<Over>>,
}

#[derive(Debug, Default)]
struct Over {
    refused: u64,
    total: u64,
    last: Option<Instant>,
}

/// One admitted connection; the slot frees when it drops.
#[derive(Debug)]
pub struct ConnectionPermit(#[allow(dead_code, reason = "held for its drop")] OwnedSemaphorePermit);

impl ConnectionCap {
    /// `listener` names the listener in traces.
    pub fn new(listener: &'static str, max: usize) -> Self {
        Self { listener, open: Arc::new(Semaphore::new(max)), over: Arc::default() }
    }

    /// Admits a connection from `remote`, or counts and (at most every ten seconds) traces its
    /// refusal; the caller closes a refused connection at once.
    pub fn admit(&self, remote: SocketAddr) -> Option<ConnectionPermit> {
        if let Ok(p) = self.open.clone().try_acquire_owned() {
            return Some(ConnectionPermit(p));
        }
        let mut over = self.over.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        over.refused += 1;
        over.total += 1;
        let now = Instant::now();
        if over.last.is_none_or(|last| now.duration_since(last) >= REPORT_EVERY) {
            tracing::warn!(
                listener = self.listener,
                %remote,
                refused = over.refused,
                "too many open connections: closed new ones at once (count since the last report)"
            );
            over.refused = 0;
            over.last = Some(now);
        }
        None
    }

    /// Connections refused at the cap since this cap was made.
    pub fn refused_total(&self) -> u64 {
        self.over.lock().unwrap_or_else(std::sync::PoisonError::into_inner).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_admits_up_to_max_and_frees_a_slot_on_drop() {
        let cap = ConnectionCap::new("test", 2);
        let remote = SocketAddr::from(([127, 0, 0, 1], 0));
        let a = cap.admit(remote).expect("first");
        let _b = cap.admit(remote).expect("second");
        assert!(cap.admit(remote).is_none());
        assert!(cap.admit(remote).is_none());
        assert_eq!(cap.refused_total(), 2);
        drop(a);
        assert!(cap.admit(remote).is_some());
    }
}
