//! The global configuration client: keeps a copy of an instance's signed global configuration
//! current, verified, and on disk. The node and the central audit service both run one.
//!
//! One poll ([`ConfClient::refresh_now`], also run by the background task every
//! `poll_interval`) tries the anchor's URLs in order until one answers 200 or 304 (`fetch`). A
//! 200 body is verified against the trusted keys at `now` (signature, instance, expiry), refused
//! if it would roll the held configuration back, persisted atomically (`store`), and only then
//! published (`client`). A refused or unpersisted configuration changes nothing: the held
//! configuration, the ETag and the files stay as they were.
//!
//! # Trust and key rollover
//!
//! The trusted keys are the anchor's keys plus the keys *learned* from the held configuration
//! (`trust`): the `signing_keys` it announces. This is safe because a configuration is only held
//! after it verified with a key that was already trusted, so every learned key was vouched for by
//! the anchor, directly or through a chain of such configurations; a key that merely signs a
//! configuration, without being announced by one signed by a trusted key, is never trusted. The
//! learned set is replaced by each accepted configuration's announcement, so a key the registry
//! stops announcing stops being trusted (the anchor's own keys always stay trusted: the operator
//! gave them out of band). Learned keys are persisted in [`LEARNED_KEYS_FILE`] (anchor JSON) so a
//! restarted client still trusts a key rolled in while it ran.
//!
//! # State directory
//!
//! - [`CONF_FILE`]: the last good `SignedGlobalConf` bytes, exactly as downloaded.
//! - [`LEARNED_KEYS_FILE`]: learned keys; absent when none are learned.
//! - `lock`: held (advisory lock) while a client uses the directory, so two clients cannot
//!   overwrite each other's rollback floor.
//!
//! The configuration is written before the learned keys. A crash between the two leaves the
//! previous learned keys, which verified the new configuration anyway; at start the learned set
//! is re-derived from the loaded configuration and rewritten.
//!
//! At start a persisted configuration that does not verify (ignoring expiry) is an **error**, not
//! skipped or moved aside: it is the rollback floor, and silently dropping it would let an
//! attacker or a stale mirror serve an older configuration. An operator who replaced the anchor
//! removes the file deliberately.

mod client;
mod error;
mod fetch;
mod settings;
mod status;
mod store;
mod text;
mod trust;

pub use client::{ConfClient, Refresh};
pub use error::{ConfClientError, FetchAttempt, FetchFailure};
/// The runtime kit's clock, re-exported: the node names it through this crate.
pub use lienthong_runtime::Clock;
pub use settings::{
    ConfClientConfig, DEFAULT_MAX_CONF_BYTES, DEFAULT_POLL_INTERVAL, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_WARN_BEFORE,
};
pub use status::ConfStatus;
pub use store::{CONF_FILE, LEARNED_KEYS_FILE};
