//! The message log: every request and response a node handles, as leaves of an RFC 6962 Merkle
//! tree, durably stored, with signed checkpoints a registry witnesses.
//!
//! - [`record`]: the `LogRecord` leaf and its body policy (full, metadata only, encrypted);
//! - [`merkle`]: hashing, inclusion and consistency proofs, offline verification;
//! - [`store`]: the [`LogStore`] trait, [`MemStore`] and the durable [`RedbStore`];
//! - [`MessageLog`]: group-committed appends, the tree head, proofs, checkpoints;
//! - [`checkpoint`]: signing, witnessing and verifying checkpoints.

pub mod checkpoint;
mod error;
mod log;
pub mod merkle;
pub mod record;
pub mod store;

pub use error::LogError;
pub use log::{Appended, CheckpointSigner, Head, LogConfig, MessageLog};
pub use record::{BodyPolicy, Entry};
pub use store::{LOG_FILE, LogStore, MemStore, RedbStore};
