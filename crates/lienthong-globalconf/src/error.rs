use std::time::SystemTime;

use lienthong_proto::ProtoError;
use lienthong_types::InstanceId;

/// Why a global configuration was refused. Nothing about a refused configuration is used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfError {
    #[error("global configuration is malformed: {0}")]
    Malformed(#[from] ProtoError),
    #[error("global configuration is not signed by any key the anchor trusts")]
    UntrustedSigner,
    #[error("global configuration signature by key {key_id} does not verify")]
    BadSignature { key_id: String },
    #[error("global configuration is for instance {found}, expected {expected}")]
    WrongInstance { expected: InstanceId, found: InstanceId },
    #[error("global configuration expired at {}", crate::anchor::rfc3339(*.expired_at))]
    Expired { expired_at: SystemTime },
    #[error("global configuration was generated in the future ({}); check the clock", crate::anchor::rfc3339(*.generated_at))]
    FromTheFuture { generated_at: SystemTime },
    #[error(
        "global configuration version {offered} (generated {}) is older than the held version {held} (generated {}): refusing a rollback",
        crate::anchor::rfc3339(*.offered_generated_at), crate::anchor::rfc3339(*.held_generated_at)
    )]
    Rollback { offered: u64, offered_generated_at: SystemTime, held: u64, held_generated_at: SystemTime },
    #[error("global configuration is inconsistent: {0}")]
    Inconsistent(String),
}
