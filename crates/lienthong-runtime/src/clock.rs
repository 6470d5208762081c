//! Where processes read the time.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

/// What time it is. Injectable so tests can move time without sleeping.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Clock {
    pub fn system() -> Self {
        Self(Arc::new(SystemTime::now))
    }

    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

/// A clock can be called like the function it wraps (`clock()`), as code written against the
/// registry's former `Arc<dyn Fn() -> SystemTime>` does.
impl Deref for Clock {
    type Target = dyn Fn() -> SystemTime + Send + Sync;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// The system clock shifted by an offset that tests move (all copies share it): time passes as
/// usual and jumps when a test says so.
#[derive(Debug, Clone, Default)]
pub struct OffsetClock(Arc<AtomicI64>);

impl OffsetClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn now(&self) -> SystemTime {
        shift(SystemTime::now(), self.0.load(Ordering::SeqCst))
    }

    /// Moves the clock by `secs` (back if negative).
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }

    /// This clock as a [`Clock`].
    pub fn clock(&self) -> Clock {
        let c = self.clone();
        Clock::from_fn(move || c.now())
    }

    /// This clock as a [`Clock`] shifted further by `skew` seconds (read at each call), e.g. a
    /// node whose clock drifts.
    pub fn skewed(&self, skew: Arc<AtomicI64>) -> Clock {
        let c = self.clone();
        Clock::from_fn(move || shift(c.now(), skew.load(Ordering::SeqCst)))
    }
}

/// A clock that stands still at a time a test sets (all copies share it).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<std::sync::Mutex<SystemTime>>);

impl ManualClock {
    pub fn new(at: SystemTime) -> Self {
        Self(Arc::new(std::sync::Mutex::new(at)))
    }

    pub fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set(&self, at: SystemTime) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *t += by;
    }

    /// This clock as a [`Clock`].
    pub fn clock(&self) -> Clock {
        let c = self.clone();
        Clock::from_fn(move || c.now())
    }
}

fn shift(t: SystemTime, secs: i64) -> SystemTime {
    if secs >= 0 {
        t + Duration::from_secs(secs as u64)
    } else {
        t - Duration::from_secs(secs.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_clock_moves_every_copy_and_a_clock_calls_like_a_function() {
        let c = OffsetClock::new();
        let as_clock = c.clock();
        c.advance(3600);
        let ahead = as_clock.now().duration_since(SystemTime::now()).expect("ahead");
        assert!(ahead >= Duration::from_secs(3599), "{ahead:?}");
        let skew = Arc::new(AtomicI64::new(-7200));
        let behind = c.skewed(skew)();
        assert!(behind < SystemTime::now() - Duration::from_secs(3500));

        let m = ManualClock::new(SystemTime::UNIX_EPOCH);
        let as_clock = m.clock();
        m.advance(Duration::from_secs(5));
        assert_eq!(as_clock(), SystemTime::UNIX_EPOCH + Duration::from_secs(5));
        m.set(SystemTime::UNIX_EPOCH);
        assert_eq!(as_clock.now(), SystemTime::UNIX_EPOCH);
    }
}
