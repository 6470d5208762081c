//! The wire carries times as Unix milliseconds; the domain uses `SystemTime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix milliseconds to a `SystemTime`; negative values clamp to the epoch.
pub fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A `SystemTime` to Unix milliseconds; times before the epoch clamp to 0.
pub fn to_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// 0 on the wire means "no end".
pub(crate) fn optional_millis(ms: i64) -> Option<SystemTime> {
    (ms != 0).then(|| from_millis(ms))
}
