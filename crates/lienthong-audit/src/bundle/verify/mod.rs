//! Verifying a bundle offline against the instance's anchor. Every check is made (not only up to
//! the first failure) and recorded with its outcome in plain words, so a report explains all that
//! is wrong: which configuration, which side, which record, which check.
//!
//! What ties the bundle to the anchor: the global configurations verify with the anchor's keys;
//! they register each node's certificate and each member's signing certificates; the node's
//! certificate signed its checkpoint and the registry (a key of the anchor or of the verified
//! configuration) co-signed it; each record is a leaf of that checkpoint's tree; each record's
//! envelope is signed by the member it speaks for. Then the sides are compared with each other.

use std::time::SystemTime;

use lienthong_globalconf::{Anchor, ConfKey, GlobalConf, from_millis};
use lienthong_pki::tls::TrustPolicy;
use lienthong_proto::audit::v1 as pb;
use lienthong_proto::convert::IntoDomain;
use lienthong_proto::exchange::v1 as ex;
use lienthong_proto::msglog::v1 as log_pb;
use prost::Message;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::BUNDLE_FORMAT;
use super::report::{Check, ExchangeSummary, Outcome, Report, SideSummary};

mod configuration;
mod envelopes;
mod exchange;
mod record;
mod side;
mod structure;

/// A bundle that does not verify, with the full report (every failure explained).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub Box<Report>);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let failures: Vec<String> =
            self.0.failures().map(|c| format!("{}: {}: {}", c.subject, c.check, c.detail)).collect();
        write!(f, "the evidence bundle is not valid: {}", failures.join("; "))
    }
}

impl std::error::Error for Invalid {}

/// Verifies an encoded bundle offline against the instance's `anchor`. `Ok` only if every check
/// passed (skipped ones aside: they say what the bundle cannot show, e.g. an encrypted body);
/// either way the report lists every check made.
///
/// Expiry does not matter for evidence: a configuration is checked with the anchor's keys valid
/// when it was generated, a node certificate when it signed its checkpoint, a member's signing
/// certificate when the message was made.
pub fn verify(bundle: &[u8], anchor: &Anchor) -> Result<Report, Invalid> {
    let mut v = Verifier {
        anchor,
        checks: Vec::new(),
        format: String::new(),
        exchanges: Vec::new(),
        sides: Vec::new(),
    };
    v.run(bundle);
    let report = Report {
        valid: !v.checks.iter().any(|c| c.outcome == Outcome::Failed),
        format: v.format,
        instance: anchor.instance.to_string(),
        exchanges: v.exchanges,
        sides: v.sides,
        checks: v.checks,
    };
    if report.valid { Ok(report) } else { Err(Invalid(Box::new(report))) }
}

/// A global configuration that verified.
struct Conf {
    conf: GlobalConf,
    /// The approved CAs and registered node certificates, or why they cannot be used.
    trust: Result<TrustPolicy, String>,
    /// The registry keys that may co-sign checkpoints: the anchor's, and those the verified
    /// configuration lists (keys rolled in since the anchor was made).
    keys: Vec<ConfKey>,
}

/// A decoded record of a side, for the checks across sides.
struct Rec {
    node: String,
    index: u64,
    record: log_pb::LogRecord,
    request: Option<(ex::RequestEnvelope, Vec<u8>)>,
    response: Option<(ex::ResponseEnvelope, Vec<u8>)>,
}

impl Rec {
    fn role(&self) -> &'static str {
        role_name(self.record.role)
    }

    /// "the provider's request record (node X, record 7)".
    fn label(&self) -> String {
        format!(
            "the {}'s {} record (node {}, record {})",
            self.role(),
            direction_name(self.record.direction),
            self.node,
            self.index
        )
    }
}

fn role_name(role: i32) -> &'static str {
    match log_pb::Role::try_from(role) {
        Ok(log_pb::Role::Consumer) => "consumer",
        Ok(log_pb::Role::Provider) => "provider",
        _ => "unknown role",
    }
}

fn direction_name(direction: i32) -> &'static str {
    match log_pb::Direction::try_from(direction) {
        Ok(log_pb::Direction::Request) => "request",
        Ok(log_pb::Direction::Response) => "response",
        _ => "unknown direction",
    }
}

fn time_text(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_else(|_| "(time out of range)".into())
}

fn ms_text(ms: i64) -> String {
    time_text(from_millis(ms))
}

fn hex_id(bytes: &[u8]) -> String {
    if bytes.is_empty() { "(none)".into() } else { hex::encode(bytes) }
}

fn id_text<T>(value: Option<&T>) -> String
where
    T: IntoDomain + Clone,
    T::Domain: std::fmt::Display,
{
    match value {
        None => String::new(),
        Some(v) => v.clone().into_domain("id").map_or_else(|e| format!("(invalid: {e})"), |d| d.to_string()),
    }
}

fn path_and_query(path: &str, query: &str) -> String {
    if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") }
}

struct Verifier<'a> {
    anchor: &'a Anchor,
    checks: Vec<Check>,
    format: String,
    exchanges: Vec<ExchangeSummary>,
    sides: Vec<SideSummary>,
}

impl Verifier<'_> {
    fn record(&mut self, subject: &str, check: &'static str, outcome: Outcome, detail: impl Into<String>) {
        self.checks.push(Check { subject: subject.to_owned(), check, outcome, detail: detail.into() });
    }

    /// How many checks failed so far: a summary passes when none failed since.
    fn failed(&self) -> usize {
        self.checks.iter().filter(|c| c.outcome == Outcome::Failed).count()
    }

    fn pass(&mut self, subject: &str, check: &'static str, detail: impl Into<String>) {
        self.record(subject, check, Outcome::Passed, detail);
    }

    fn fail(&mut self, subject: &str, check: &'static str, detail: impl Into<String>) {
        self.record(subject, check, Outcome::Failed, detail);
    }

    fn skip(&mut self, subject: &str, check: &'static str, detail: impl Into<String>) {
        self.record(subject, check, Outcome::Skipped, detail);
    }

    fn run(&mut self, bytes: &[u8]) {
        let bundle = match pb::EvidenceBundle::decode(bytes) {
            Ok(b) => b,
            Err(e) => {
                self.fail(
                    "bundle",
                    "format",
                    format!("not a Lienthong evidence bundle (it does not decode: {e})"),
                );
                return;
            }
        };
        self.format.clone_from(&bundle.format);
        if bundle.format != BUNDLE_FORMAT {
            // Another format's fields could mean other things: nothing more is checked.
            self.fail("bundle", "format", format!("format {:?} is not {BUNDLE_FORMAT:?}", bundle.format));
            return;
        }
        // Nothing may ride along unchecked: unknown fields, reordered or padded framing and
        // trailing bytes all change the re-encoding.
        if bundle.encoded_len() == bytes.len() && bundle.encode_to_vec() == bytes {
            self.pass("bundle", "format", format!("a {BUNDLE_FORMAT} bundle in canonical encoding"));
        } else {
            self.fail(
                "bundle",
                "format",
                "its encoding is not canonical (unknown fields, altered framing or extra bytes): it was changed",
            );
        }
        let wanted = self.check_contents(&bundle);
        let confs: Vec<Option<Conf>> =
            bundle.global_confs.iter().enumerate().map(|(i, c)| self.check_conf(i, c)).collect();
        let mut records = Vec::new();
        for side in &bundle.sides {
            records.extend(self.check_side(side, &confs, &wanted));
        }
        self.check_exchanges(&wanted, &records);
    }
}
