//! Where the held configuration stands: valid, expiring, expired or missing.

use std::fmt;
use std::time::{Duration, SystemTime};

use lienthong_globalconf::{Freshness, GlobalConf};

use crate::text::{human, utc};

/// Where the held configuration stands at some moment; `Display` is meant for operators
/// (e.g. a readiness endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfStatus {
    /// No configuration was ever obtained.
    Missing,
    Valid {
        version: u64,
        expires_at: SystemTime,
        remaining: Duration,
    },
    /// Still usable, but the registry has not been reached for a while.
    Expiring {
        version: u64,
        expires_at: SystemTime,
        remaining: Duration,
    },
    /// Kept as the rollback floor; not usable for traffic.
    Expired {
        version: u64,
        expires_at: SystemTime,
        since: Duration,
    },
}

impl ConfStatus {
    pub fn of(conf: Option<&GlobalConf>, now: SystemTime, warn_before: Duration) -> Self {
        let Some(conf) = conf else { return ConfStatus::Missing };
        let (version, expires_at) = (conf.version, conf.expires_at);
        match Freshness::of(conf, now, warn_before) {
            Freshness::Valid { remaining } => ConfStatus::Valid { version, expires_at, remaining },
            Freshness::Expiring { remaining } => ConfStatus::Expiring { version, expires_at, remaining },
            Freshness::Expired { since } => ConfStatus::Expired { version, expires_at, since },
        }
    }

    /// Whether traffic may be served from the held configuration.
    pub fn is_usable(&self) -> bool {
        matches!(self, ConfStatus::Valid { .. } | ConfStatus::Expiring { .. })
    }
}

impl fmt::Display for ConfStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfStatus::Missing => {
                f.write_str("no global configuration yet: the registry has never been reached")
            }
            ConfStatus::Valid { version, expires_at, remaining } => write!(
                f,
                "global configuration version {version} is valid until {} ({} left)",
                utc(expires_at),
                human(remaining)
            ),
            ConfStatus::Expiring { version, expires_at, remaining } => write!(
                f,
                "global configuration version {version} expires at {} ({} left): the registry has not been reached lately",
                utc(expires_at),
                human(remaining)
            ),
            ConfStatus::Expired { version, expires_at, since } => write!(
                f,
                "global configuration version {version} expired at {} ({} ago): traffic is refused until a fresh one is fetched",
                utc(expires_at),
                human(since)
            ),
        }
    }
}
