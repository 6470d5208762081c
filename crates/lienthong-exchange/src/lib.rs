//! The exchange protocol without I/O.
//!
//! Everything a node decides about a message lives here, as pure functions of their inputs (the
//! time is a parameter): parsing the X-Road REST `r1` request, which headers travel, the
//! `X-Road-Request-Hash`, the signed node-to-node envelopes, routing to provider nodes, the
//! provider's admission checks, the log records both sides write, gateway error bodies and the
//! metaservices. The node runtime (`lienthong-node`) only moves bytes between these functions,
//! sockets and the message log.

pub mod access;
pub mod envelope;
pub mod error_body;
pub mod headers;
pub mod meta;
pub mod record;
mod reject;
pub mod route;

pub use reject::Reject;

/// Path of the node-to-node exchange endpoint (HTTP/2 over pinned mTLS).
pub const EXCHANGE_PATH: &str = "/lienthong/v1/exchange";
