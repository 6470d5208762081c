//! The message log: every request and response a node handles, as leaves of an RFC 6962 Merkle
//! tree, durably stored, with signed checkpoints a registry witnesses.
//!
//! - [`record`]: the `LogRecord` leaf and its body policy (full, metadata only, encrypted);
//! - [`merkle`]: hashing, inclusion and consistency proofs, offline verification;
//! - [`store`]: the [`LogStore`] trait, [`MemStore`] and the durable [`RedbStore`];
//! - [`segment`]: the durable [`SegmentStore`]: append-only segment files with a redb index;
//! - [`MessageLog`]: group-committed appends, the tree head, proofs, checkpoints;
//! - [`checkpoint`]: signing, witnessing and verifying checkpoints;
//! - [`verify`]: offline verification of a whole store;
//! - [`archive`]: portable, offline-verifiable exports of a range of records.

pub mod archive;
pub mod checkpoint;
mod error;
mod log;
pub mod merkle;
mod open;
pub mod record;
pub mod retention;
pub mod segment;
pub mod store;
pub mod verify;
pub mod witness;

pub use archive::{ARCHIVE_FORMAT, ArchiveReport, ExportError, export, verify_archive, verify_archive_bytes};
pub use error::{LogError, StorageError};
pub use log::{
    Appended, CheckpointSigner, Failing, Head, LogConfig, LogHealth, MessageLog, RETRY_FIRST, RETRY_MAX,
};
pub use open::open_existing;
pub use record::{BodyPolicy, Entry};
pub use segment::{SegmentConfig, SegmentStore};
pub use store::{LOG_FILE, LogStore, MemStore, RedbStore};
pub use verify::{Report, VerifyError, WitnessKey, verify_store};
