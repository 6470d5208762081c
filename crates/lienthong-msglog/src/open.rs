//! Opening whichever durable store a log directory already holds. Kept apart from both stores
//! so that neither module needs the other.

use std::path::Path;
use std::sync::Arc;

use crate::error::LogError;
use crate::segment::{SEGMENTS_DIR, SegmentStore};
use crate::store::{LOG_FILE, LogStore, RedbStore};

/// Opens the durable log a directory already holds: a [`SegmentStore`] (a `segments`
/// directory) or a [`RedbStore`] ([`LOG_FILE`]). Refuses a directory with neither (or,
/// ambiguously, both) and creates nothing there.
pub fn open_existing(dir: &Path) -> Result<Arc<dyn LogStore>, LogError> {
    let segments = dir.join(SEGMENTS_DIR).is_dir();
    let redb = dir.join(LOG_FILE).is_file();
    match (segments, redb) {
        (true, false) => Ok(Arc::new(SegmentStore::open_dir(dir)?)),
        (false, true) => Ok(Arc::new(RedbStore::open_dir(dir)?)),
        (true, true) => Err(LogError::store_failed(format!(
            "{}: holds both a segment log ({}) and a redb log ({LOG_FILE}); move one away",
            dir.display(),
            SEGMENTS_DIR
        ))),
        (false, false) => Err(LogError::store_failed(format!(
            "{}: no message log here (neither {}/ nor {LOG_FILE})",
            dir.display(),
            SEGMENTS_DIR
        ))),
    }
}
