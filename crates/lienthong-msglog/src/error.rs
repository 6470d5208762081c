use crate::merkle::ProofError;

/// A message-log operation failed. Appends that fail were not acknowledged and left no trace.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The store could not write or read (disk full, I/O error): the node must refuse new
    /// exchanges (`logging_failed`) rather than forward them unlogged.
    #[error("log storage failed: {0}")]
    Storage(String),
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
    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        LogError::Storage(e.to_string())
    }
}
