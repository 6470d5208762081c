//! Retention: records older than the retention period lose their bytes; their leaf hashes stay,
//! so the tree, every checkpoint and every proof for the records still held keep verifying.
//! Only records covered by a kept checkpoint are pruned, so what was evidence stays provable
//! (export it with `lienthong log export` first if the bytes must be kept elsewhere).

use std::time::Duration;

use crate::checkpoint::Checkpoint;
use crate::error::LogError;
use crate::log::MessageLog;

/// How long record bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep: Duration,
}

/// Prunes the records older than `retention` (a prefix of the log: records are dropped in
/// index order) that a checkpoint covers. Returns how many were pruned.
pub fn apply(log: &MessageLog, retention: Retention, now_ms: i64) -> Result<u64, LogError> {
    let keep_ms = i64::try_from(retention.keep.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now_ms.saturating_sub(keep_ms);
    let store = log.store();
    let mut old = store.by_time(i64::MIN, cutoff, usize::MAX)?;
    old.sort_unstable();
    // The longest prefix 0, 1, 2, ... of records all older than the cutoff.
    let prefix = old.iter().enumerate().take_while(|(i, index)| *i as u64 == **index).count() as u64;
    let covered = store
        .checkpoints()?
        .iter()
        .filter_map(|c| Checkpoint::decode(c).ok())
        .map(|c| c.size)
        .max()
        .unwrap_or(0);
    store.prune(prefix.min(covered))
}
