//! The Lienthong node runtime.
//!
//! It currently holds the global configuration client ([`ConfClient`]): it polls the registry for
//! the instance's signed global configuration, verifies it against the anchor (and keys rolled in
//! since), refuses rollbacks, persists the last good copy and publishes it to the rest of the node.

mod confclient;

pub use confclient::{
    CONF_FILE, Clock, ConfClient, ConfClientConfig, ConfClientError, ConfStatus, DEFAULT_MAX_CONF_BYTES,
    DEFAULT_POLL_INTERVAL, DEFAULT_REQUEST_TIMEOUT, DEFAULT_WARN_BEFORE, FetchAttempt, FetchFailure,
    LEARNED_KEYS_FILE, Refresh,
};
