//! Whether a node may act on the global configuration it holds.

use std::time::{Duration, SystemTime};

use lienthong_globalconf::{Freshness, GlobalConf};
use lienthong_types::Fault;

use crate::Reject;

/// The configuration if it may be used at `now`; otherwise `fault` (the side's
/// "configuration outdated" code).
pub fn usable(conf: Option<&GlobalConf>, now: SystemTime, fault: Fault) -> Result<&GlobalConf, Reject> {
    match conf {
        Some(c) if Freshness::of(c, now, Duration::ZERO).is_usable() => Ok(c),
        Some(_) => Err(Reject::new(fault, "this node's global configuration has expired")),
        None => Err(Reject::new(fault, "this node has no global configuration yet")),
    }
}
