//! Audit over message logs: queries with inclusion proofs and exports (JSON, CSV, NDJSON),
//! evidence bundles that prove an exchange from both sides' logs and verify offline against the
//! instance's anchor, the central collector's store, and the sharing report (who called whom,
//! against the agreements), and the central audit service that collects from nodes and serves
//! the auditors' API and dashboard.

pub mod bundle;
pub mod collect;
pub mod query;
pub mod service;
pub mod sharing;
