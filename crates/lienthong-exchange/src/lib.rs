//! The exchange protocol without I/O.
//!
//! The protocol itself is two sequences of typed steps, [`consumer`] and [`provider`], in the
//! manner of quinn-proto or rustls' unbuffered API: each step takes what the node's I/O shell
//! read (a request head, a body's digests, the time) and returns the next state, with the
//! records to write and the bytes to send, or a [`Refused`] that knows its fault and side.
//!
//! Everything a node decides about a message lives here, as pure functions of their inputs (the
//! time is a parameter): parsing the X-Road REST `r1` request, which headers travel, the
//! `X-Road-Request-Hash`, the signed node-to-node envelopes, routing to provider nodes, the
//! provider's admission checks, the log records both sides write, gateway error bodies and the
//! metaservices. The node runtime (`lienthong-node`) only moves bytes between these functions,
//! sockets and the message log.

pub mod access;
pub mod conf;
pub mod consumer;
pub mod envelope;
pub mod error_body;
pub mod failure;
pub mod headers;
pub mod meta;
pub mod node;
pub mod protection;
pub mod provider;
pub mod record;
pub mod refusal;
mod reject;
pub mod route;

pub use node::{Digests, Node, SigningKeys};
pub use protection::{Protection, Signed};
pub use refusal::{Facts, Refused, Verdict};
pub use reject::Reject;

/// Path of the node-to-node exchange endpoint (HTTP/2 over pinned mTLS).
pub const EXCHANGE_PATH: &str = "/lienthong/v1/exchange";
