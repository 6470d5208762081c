//! The Lienthong node runtime: the consumer side (X-Road REST `r1` facing local information
//! systems), the provider side (facing peer nodes over pinned mTLS), set-up against the registry,
//! and the message log that every exchange passes through. The global configuration comes from
//! `lienthong-confclient`, which the audit service shares.

mod audit_api;
pub mod backend;
pub mod body;
pub mod config;
mod conn;
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
mod respond;
mod routes;
mod server;
mod state;
mod witness;

pub use witness::RegistryWitness;

pub use config::NodeConfig;
/// What [`StartOptions::protection`] takes.
pub use lienthong_exchange::{Protection, Signed};
pub use server::{Listeners, NodeHandle, StartError, StartOptions};
