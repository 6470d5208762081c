//! Audit queries over one node's message log: select records by time range, client, service,
//! status, exchange, user, direction and role ([`Filter`]); page through them in leaf order
//! with an opaque [`Cursor`]; get each with an RFC 6962 inclusion proof against the newest
//! witnessed checkpoint ([`query`]); and export them as JSON, NDJSON or CSV ([`RecordWriter`],
//! [`stream`]).
//!
//! Works on any [`LogStore`](lienthong_msglog::LogStore); no I/O of its own beyond the store's.
//!
//! Errors carry a stable code ([`QueryError::code`]) followed by a message for people: the
//! code is what scripts and the API match on.

mod cursor;
mod engine;
mod export;
mod filter;

pub use cursor::Cursor;
pub use engine::{
    DEFAULT_MAX_SCAN, InclusionProof, MAX_LIMIT, MAX_TIME_INDEX, Page, Plan, ProofAt, QueryOptions,
    QueryRecord, WitnessedCheckpoint, query, query_with,
};
pub use export::{COLUMNS, Format, RecordWriter, StreamError, StreamSummary, format_time, stream};
pub use filter::{FILTER_NAMES, Filter, StatusFilter, decode_component, parse_time};

use lienthong_msglog::LogError;

/// Why a query was refused or failed. The `Display` form starts with [`QueryError::code`].
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A filter (or the page size) is malformed: `field` is its name as the CLI and API spell it
    /// (`from`, `until`, `client`, `service`, `status`, `exchange`, `user`, `direction`, `role`,
    /// `limit`; `filter` for an unknown name).
    #[error("invalid_filter: {field}: {reason}")]
    InvalidFilter { field: &'static str, reason: String },
    /// The cursor is not one this engine made.
    #[error("invalid_cursor: {0}")]
    InvalidCursor(String),
    /// The cursor was made for another filter.
    #[error(
        "cursor_mismatch: the cursor belongs to a query with another filter; repeat the same filter \
         or start again without a cursor"
    )]
    CursorMismatch,
    /// Proofs were asked against a tree size the log has no witnessed checkpoint of.
    #[error("no_checkpoint: the log has no witnessed checkpoint of size {0}")]
    NoCheckpoint(u64),
    /// The log contradicts itself: a record does not decode, or does not match the tree the
    /// witness signed.
    #[error("log_damaged: {0}")]
    Damaged(String),
    /// The store could not be read.
    #[error("storage: {0}")]
    Storage(#[from] LogError),
}

impl QueryError {
    /// The stable code: `invalid_filter`, `invalid_cursor`, `cursor_mismatch`, `no_checkpoint`,
    /// `log_damaged` or `storage`.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::InvalidFilter { .. } => "invalid_filter",
            QueryError::InvalidCursor(_) => "invalid_cursor",
            QueryError::CursorMismatch => "cursor_mismatch",
            QueryError::NoCheckpoint(_) => "no_checkpoint",
            QueryError::Damaged(_) => "log_damaged",
            QueryError::Storage(_) => "storage",
        }
    }

    /// For [`QueryError::InvalidFilter`], the filter it is about.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            QueryError::InvalidFilter { field, .. } => Some(field),
            _ => None,
        }
    }
}
