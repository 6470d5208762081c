//! Replay protection on the provider side: a request id is accepted once within the clock-skew
//! window; older messages are refused for their time, so the window bounds the memory.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Request ids seen in the last `window_ms`, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct ReplayGuard {
    inner: Mutex<Inner>,
    window_ms: i64,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashSet<String>,
    order: VecDeque<(i64, String)>,
}

impl ReplayGuard {
    pub(crate) fn new(window_ms: i64, capacity: usize) -> Self {
        Self { inner: Mutex::default(), window_ms, capacity: capacity.max(1) }
    }

    /// Records `request_id` seen at `now_ms`; false if it was already seen in the window.
    pub(crate) fn first_time(&self, request_id: &str, now_ms: i64) -> bool {
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
        if !seen.insert(request_id.to_owned()) {
            return false;
        }
        order.push_back((now_ms, request_id.to_owned()));
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
