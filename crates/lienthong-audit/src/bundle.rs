//! Evidence bundles: one file that proves an exchange (or a few) from the logs of the nodes that
//! took part, and that anyone can check offline with nothing but the instance's anchor.
//!
//! For each node (a *side*) a bundle holds the exchange's records exactly as logged, an RFC 6962
//! inclusion proof for each against a checkpoint the node signed and the registry witnessed, the
//! node's authentication certificate, and the signed global configuration the node held, which
//! registers the node's certificate and the members' signing certificates. [`build`] gathers
//! that from the nodes' log stores; [`verify`] checks every signature, proof and cross-reference
//! and says in plain words what holds and what does not. The format is the protobuf
//! `lienthong.audit.v1.EvidenceBundle`, described in `docs/audit-evidence.md`; it carries no
//! unsigned metadata, so changing any byte makes verification fail.
//!
//! No I/O here: callers read the files (`lienthong audit bundle` / `verify`).

mod build;
mod report;
mod verify;

pub use build::{BuildError, ExchangeRef, Side, build, merge};
pub use report::{Check, ExchangeSummary, Outcome, Report, SideSummary};
pub use verify::{Invalid, verify};

/// The `format` of every bundle this version writes and reads.
pub const BUNDLE_FORMAT: &str = "lienthong-evidence-bundle-v1";

/// The media type a bundle is served with.
pub const CONTENT_TYPE: &str = "application/vnd.lienthong.evidence.v1+protobuf";
