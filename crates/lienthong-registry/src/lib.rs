//! The registry of one instance (the national NDXP, or a provincial LGSP): membership, the
//! service catalogue, access grants, onboarding requests, the instance CA, and the signed,
//! expiring global configuration it publishes.
//!
//! Data never flows through the registry. [`Registry`] is the state machine over a redb store;
//! [`serve`] exposes it: the configuration over plain HTTP (static, cacheable, signed) and the
//! management and admin APIs over gRPC with TLS.

pub mod admin;
pub mod client;
mod config;
mod error;
mod grpc;
mod home;
mod registry;
mod routes;
mod server;
mod store;
mod witness;

pub use config::{ConfigError, RegistryConfig};
pub use error::RegistryError;
pub use home::{InitOptions, RegistryHome};
pub use registry::{AutoApprove, Clock, Published, Registry, Settings, SigningKey, system_clock};
pub use routes::{ANCHOR_PATH, CONF_MEDIA_TYPE, CONF_PATH, FEDERATION_CONF_PATH};
pub use server::{RunningRegistry, serve, serve_on, start};
pub use witness::LocalWitness;

/// gRPC status codes, for callers matching on the admin API's answers.
pub use tonic::Code as GrpcCode;
