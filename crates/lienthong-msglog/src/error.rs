use std::error::Error;
use std::fmt;
use std::sync::Arc;

use crate::merkle::ProofError;

/// A message-log operation failed. Appends that fail were not acknowledged and left no trace.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The store could not write or read (disk full, I/O error): the node must refuse new
    /// exchanges (`logging_failed`) rather than forward them unlogged.
    #[error("log storage failed: {0}")]
    Storage(#[source] StorageError),
    #[error("the log is closed")]
    Closed,
    #[error("record {index} does not exist (the log has {size})")]
    NoSuchRecord { index: u64, size: u64 },
    #[error("record is malformed: {0}")]
    Malformed(String),
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error("body: {0}")]
    Body(#[from] lienthong_pki::SealError),
    #[error("signature: {0}")]
    Signature(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

impl LogError {
    /// A storage failure the store itself detected (no underlying error to keep).
    pub(crate) fn store_failed(message: impl Into<String>) -> Self {
        LogError::Storage(StorageError::new(message))
    }

    /// A storage failure caused by `source` (an I/O or index error), with what was being done.
    pub(crate) fn storage(context: impl Into<String>, source: impl Error + Send + Sync + 'static) -> Self {
        LogError::Storage(StorageError::caused(context, source))
    }
}

/// What a store failed to do, with the error beneath it (I/O, the redb index) when there is
/// one. Its `Display` keeps the underlying message too (nodes show it in `/readyz` and in
/// `logging_failed` faults, which print `Display` only); [`Error::source`] gives the error
/// itself (for its `io::ErrorKind`, say). Cheap to clone: one failed batch answers every
/// appender in it with the same error.
#[derive(Debug, Clone)]
pub struct StorageError {
    context: String,
    source: Option<Arc<dyn Error + Send + Sync>>,
}

impl StorageError {
    /// A failure the store itself detected (no underlying error).
    pub fn new(context: impl Into<String>) -> Self {
        Self { context: context.into(), source: None }
    }

    /// A failure caused by `source`; `context` (may be empty) says what was being done.
    pub fn caused(context: impl Into<String>, source: impl Error + Send + Sync + 'static) -> Self {
        Self { context: context.into(), source: Some(Arc::new(source)) }
    }

    /// What was being done (without the underlying error's message).
    pub fn context(&self) -> &str {
        &self.context
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            None => f.write_str(&self.context),
            Some(source) if self.context.is_empty() => write!(f, "{source}"),
            Some(source) => write!(f, "{}: {source}", self.context),
        }
    }
}

impl Error for StorageError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn Error + 'static))
    }
}

impl From<String> for StorageError {
    fn from(context: String) -> Self {
        Self::new(context)
    }
}

impl From<&str> for StorageError {
    fn from(context: &str) -> Self {
        Self::new(context)
    }
}
