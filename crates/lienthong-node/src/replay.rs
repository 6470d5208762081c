//! Replay protection on the provider side: a request id is accepted once within the clock-skew
//! window; older messages are refused for their time, so the window bounds the memory.
//!
//! Ids are kept as 128 bits of their SHA-256, not as text: a busy provider holds every id of the
//! last two windows (at 3,000 exchanges/s, 360,000), and two copies of each id as a `String`
//! cost about 170 bytes where the digest in both places costs about 45. Two different ids
//! agreeing in 128 bits of SHA-256 cannot be found by a peer, so no one can make another
//! node's request look replayed.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// What the guard keeps of a request id.
type Key = [u8; 16];

fn key(request_id: &str) -> Key {
    let digest = Sha256::digest(request_id.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&digest[..16]);
    k
}

/// Request ids seen in the last `window_ms`, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct ReplayGuard {
    inner: Mutex<Inner>,
    window_ms: i64,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashSet<Key>,
    order: VecDeque<(i64, Key)>,
}

impl ReplayGuard {
    pub(crate) fn new(window_ms: i64, capacity: usize) -> Self {
        Self { inner: Mutex::default(), window_ms, capacity: capacity.max(1) }
    }

    /// Records `request_id` seen at `now_ms`; false if it was already seen in the window.
    pub(crate) fn first_time(&self, request_id: &str, now_ms: i64) -> bool {
        let k = key(request_id);
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Inner { seen, order } = &mut *inner;
        while let Some((t, _)) = order.front() {
            // Twice the window: a message may be stamped up to one window in the future.
            if *t >= now_ms - 2 * self.window_ms && order.len() < self.capacity {
                break;
            }
            if let Some((_, id)) = order.pop_front() {
                seen.remove(&id);
            }
        }
        if !seen.insert(k) {
            return false;
        }
        order.push_back((now_ms, k));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_accepted_once_within_the_window() {
        let g = ReplayGuard::new(1000, 10);
        assert!(g.first_time("a", 0));
        assert!(!g.first_time("a", 500));
        assert!(g.first_time("b", 500));
        // Long after, the id has left the window (and the sender's clock check refuses it).
        assert!(g.first_time("a", 5000));
    }

    #[test]
    fn memory_is_bounded() {
        let g = ReplayGuard::new(1_000_000, 3);
        for i in 0..10 {
            assert!(g.first_time(&i.to_string(), i));
        }
        assert!(g.inner.lock().unwrap().seen.len() <= 3);
    }
}
