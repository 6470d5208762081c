//! The Lienthong node runtime: the consumer side (X-Road REST `r1` facing local information
//! systems), the provider side (facing peer nodes over pinned mTLS), the configuration client,
//! set-up against the registry, and the message log that every exchange passes through.

mod audit_api;
pub mod backend;
pub mod body;
mod confclient;
pub mod config;
mod consumer;
mod exchange_log;
pub mod federation;
mod health;
pub mod home;
pub mod manage;
pub mod peer;
mod provider;
mod refusal_limit;
mod replay;
mod routes;
mod server;
mod state;
mod witness;

pub use witness::RegistryWitness;

pub use confclient::{
    CONF_FILE, Clock, ConfClient, ConfClientConfig, ConfClientError, ConfStatus, DEFAULT_MAX_CONF_BYTES,
    DEFAULT_POLL_INTERVAL, DEFAULT_REQUEST_TIMEOUT, DEFAULT_WARN_BEFORE, FetchAttempt, FetchFailure,
    LEARNED_KEYS_FILE, Refresh,
};
pub use config::NodeConfig;
/// What [`StartOptions::protection`] takes.
pub use lienthong_exchange::{Protection, Signed};
pub use server::{Listeners, NodeHandle, StartError, StartOptions};
