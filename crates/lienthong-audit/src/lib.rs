//! The audit library over message logs: queries with inclusion proofs and exports (JSON, CSV,
//! NDJSON), evidence bundles that prove an exchange from both sides' logs and verify offline
//! against the instance's anchor, and the sharing report (who called whom, against the
//! agreements). It does no network I/O: the node answers its audit API with it, and the central
//! audit service (`lienthong-audit-service`) collects and serves with it.

pub mod bundle;
pub mod query;
pub mod sharing;
