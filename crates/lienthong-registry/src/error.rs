//! Registry errors: every one has a stable code, a message that leaks nothing internal, and a
//! gRPC status code.

/// Why a registry operation was refused. Nothing was changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("not authorised: {0}")]
    Unauthorized(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    Duplicate(String),
    #[error("not allowed in the current state: {0}")]
    Conflict(String),
    /// A file of the registry's own directory could not be read, parsed or written (`init`,
    /// start-up): only the operator sees it, so it names the file and keeps the cause.
    #[error("{action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Storage or key failure; the detail goes to the log, not to the caller.
    #[error("internal registry error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl RegistryError {
    /// The stable code clients and tests match on.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::Invalid(_) => "invalid_request",
            RegistryError::Unauthorized(_) => "unauthorized",
            RegistryError::NotFound(_) => "not_found",
            RegistryError::Duplicate(_) => "duplicate",
            RegistryError::Conflict(_) => "conflict",
            RegistryError::File { .. } => "file",
            RegistryError::Internal(_) => "internal",
        }
    }

    pub(crate) fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        RegistryError::Internal(Box::new(e))
    }
}

impl From<redb::Error> for RegistryError {
    fn from(e: redb::Error) -> Self {
        RegistryError::internal(e)
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for RegistryError {
            fn from(e: $t) -> Self {
                RegistryError::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<lienthong_proto::ProtoError> for RegistryError {
    fn from(e: lienthong_proto::ProtoError) -> Self {
        RegistryError::Invalid(e.to_string())
    }
}

impl From<RegistryError> for tonic::Status {
    fn from(e: RegistryError) -> Self {
        match &e {
            RegistryError::Internal(source) => tracing::error!(error = %source, "registry operation failed"),
            RegistryError::File { .. } => tracing::error!(error = %e, "registry operation failed"),
            _ => {}
        }
        let code = match &e {
            RegistryError::Invalid(_) => tonic::Code::InvalidArgument,
            RegistryError::Unauthorized(_) => tonic::Code::PermissionDenied,
            RegistryError::NotFound(_) => tonic::Code::NotFound,
            RegistryError::Duplicate(_) => tonic::Code::AlreadyExists,
            RegistryError::Conflict(_) => tonic::Code::FailedPrecondition,
            RegistryError::File { .. } | RegistryError::Internal(_) => tonic::Code::Internal,
        };
        // A file error names a path on the registry's machine: callers hear only "internal".
        if code == tonic::Code::Internal {
            return tonic::Status::new(code, "internal: internal registry error");
        }
        tonic::Status::new(code, format!("{}: {e}", e.code()))
    }
}
