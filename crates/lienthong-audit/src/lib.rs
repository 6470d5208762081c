//! Audit over message logs: queries with inclusion proofs and exports (JSON, CSV, NDJSON), and
//! evidence bundles that prove an exchange from both sides' logs and verify offline against the
//! instance's anchor.

pub mod bundle;
pub mod query;
