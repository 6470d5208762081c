//! The global configuration as data: what a registry signs and what a node trusts.
//!
//! - [`sign`] makes a [`SignedGlobalConf`](lienthong_proto::globalconf::v1::SignedGlobalConf)
//!   from a wire configuration with one or more configuration-signing keys (two during a rollover);
//! - [`verify`] checks one against an [`Anchor`] at a given time and yields a [`VerifiedConf`]: a
//!   validated, typed [`GlobalConf`] with the lookups the node needs (who hosts what, which
//!   certificate each node is pinned to, which grants allow a call);
//! - [`Freshness`] says whether a held configuration is valid, about to expire, or expired;
//! - [`sign_request`] signs a management request the way the registry verifies it.
//!
//! No I/O: callers fetch and store the bytes; `now` is always a parameter.

mod anchor;
mod error;
mod keys;
mod model;
mod request;
mod time_ms;
mod verify;

pub use anchor::{Anchor, AnchorError};
pub use error::ConfError;
pub use keys::{ConfKey, SIGNING_CONTEXT, algorithm_from_wire, algorithm_to_wire, key_id, sign};
pub use model::{
    AccessGrant, Endpoint, FederationPartner, GlobalConf, GlobalGroup, GrantSubject, Member, MemberStatus,
    Node, NodeAddress, Service, ServiceType,
};
pub use request::{REQUEST_SIGNING_CONTEXT, request_signed_message, sign_request};
pub use time_ms::{from_millis, to_millis};
pub use verify::{Freshness, VerifiedConf, verify, verify_ignoring_expiry};
