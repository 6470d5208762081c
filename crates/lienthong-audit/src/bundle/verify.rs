//! Verifying a bundle offline against the instance's anchor. Every check is made (not only up to
//! the first failure) and recorded with its outcome in plain words, so a report explains all that
//! is wrong: which configuration, which side, which record, which check.
//!
//! What ties the bundle to the anchor: the global configurations verify with the anchor's keys;
//! they register each node's certificate and each member's signing certificates; the node's
//! certificate signed its checkpoint and the registry (a key of the anchor or of the verified
//! configuration) co-signed it; each record is a leaf of that checkpoint's tree; each record's
//! envelope is signed by the member it speaks for. Then the sides are compared with each other.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use lienthong_exchange::envelope;
use lienthong_exchange::headers::{headers_sha256, request_hash};
use lienthong_globalconf::{
    Anchor, ConfKey, GlobalConf, SIGNING_CONTEXT, algorithm_to_wire, from_millis, verify_ignoring_expiry,
};
use lienthong_msglog::checkpoint::{Checkpoint, verify_log_signature, verify_witness_signatures};
use lienthong_msglog::merkle::{self, Hash, ProofError};
use lienthong_pki::tls::{PeerRole, TrustPolicy};
use lienthong_pki::{CertInfo, Certificate, Fingerprint};
use lienthong_proto::audit::v1 as pb;
use lienthong_proto::convert::IntoDomain;
use lienthong_proto::exchange::v1 as ex;
use lienthong_proto::globalconf::v1 as gc_pb;
use lienthong_proto::msglog::v1 as log_pb;
use lienthong_types::{ClientId, NodeId, ServiceId};
use prost::Message;
use sha2::{Digest, Sha256, Sha512};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::BUNDLE_FORMAT;
use super::build::ExchangeRef;
use super::report::{Check, ExchangeSummary, Outcome, Report, SideSummary};

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

    /// The bundle's structure: what it names, in canonical order, each part used.
    fn check_contents(&mut self, bundle: &pb::EvidenceBundle) -> Vec<ExchangeRef> {
        let subject = "bundle";
        let before = self.failed();
        let wanted: Vec<ExchangeRef> = bundle
            .exchanges
            .iter()
            .map(|e| ExchangeRef {
                message_id: e.message_id.clone(),
                request_id: (!e.request_id.is_empty()).then(|| e.request_id.clone()),
            })
            .collect();
        if wanted.is_empty() {
            self.fail(subject, "contents", "it names no exchange");
        }
        if wanted.iter().any(|e| e.message_id.is_empty()) {
            self.fail(subject, "contents", "it names an exchange without a message id");
        }
        if wanted.windows(2).any(|w| w[0] >= w[1]) {
            self.fail(subject, "contents", "its exchanges are not sorted or are named twice");
        }
        if bundle.sides.is_empty() {
            self.fail(subject, "contents", "it holds no node's log");
        }
        if bundle.sides.windows(2).any(|w| w[0].node >= w[1].node) {
            self.fail(subject, "contents", "its sides are not sorted by node or a node appears twice");
        }
        // Configurations: distinct, and numbered in the order the sides first name them, so
        // pointing a side at another configuration is never a valid alternative encoding.
        let mut next = 0usize;
        for side in &bundle.sides {
            let index = usize::try_from(side.global_conf).unwrap_or(usize::MAX);
            if index >= bundle.global_confs.len() {
                self.fail(
                    subject,
                    "contents",
                    format!(
                        "node {} names global configuration {} but the bundle holds {}",
                        side.node,
                        u64::from(side.global_conf) + 1,
                        bundle.global_confs.len()
                    ),
                );
            } else if index == next {
                next += 1;
            } else if index > next {
                self.fail(
                    subject,
                    "contents",
                    format!(
                        "node {} names global configuration {} before {}",
                        side.node,
                        index + 1,
                        next + 1
                    ),
                );
            }
        }
        if next < bundle.global_confs.len() {
            self.fail(subject, "contents", "it holds a global configuration no side uses");
        }
        let confs = &bundle.global_confs;
        if (1..confs.len()).any(|i| confs[..i].contains(&confs[i])) {
            self.fail(subject, "contents", "it holds the same global configuration twice");
        }
        if self.failed() == before {
            let records: usize = bundle.sides.iter().map(|s| s.records.len()).sum();
            self.pass(
                subject,
                "contents",
                format!(
                    "{} exchange(s), the logs of {} node(s) with {records} record(s), {} global configuration(s)",
                    wanted.len(),
                    bundle.sides.len(),
                    confs.len()
                ),
            );
        }
        wanted
    }

    /// A global configuration: the anchor's keys signed it, for the anchor's instance, and every
    /// signature it carries verifies.
    fn check_conf(&mut self, i: usize, bytes: &[u8]) -> Option<Conf> {
        let subject = format!("global configuration {}", i + 1);
        let check = "configuration signature";
        let signed = match gc_pb::SignedGlobalConf::decode(bytes) {
            Ok(s) => s,
            Err(e) => {
                self.fail(&subject, check, format!("is not a signed global configuration ({e})"));
                return None;
            }
        };
        let before = self.failed();
        if signed.encode_to_vec() != bytes {
            self.fail(&subject, check, "its encoding is not canonical (unknown fields or altered framing)");
        }
        // Evidence does not expire: the anchor's keys are taken as of when the configuration
        // was made (the time is signed, so it cannot be moved without breaking the signature).
        let generated_at = gc_pb::GlobalConf::decode(signed.conf.as_slice())
            .map_or(SystemTime::UNIX_EPOCH, |c| from_millis(c.generated_at_ms));
        let verified = match verify_ignoring_expiry(bytes, self.anchor, generated_at) {
            Ok(v) => v,
            Err(e) => {
                self.fail(
                    &subject,
                    check,
                    format!("does not verify against the anchor of instance {}: {e}", self.anchor.instance),
                );
                return None;
            }
        };
        let mut keys = self.anchor.signing_keys.clone();
        for k in &verified.conf.signing_keys {
            if !keys.iter().any(|a| a.id == k.id) {
                keys.push(k.clone());
            }
        }
        // `verify_ignoring_expiry` skips signatures by keys the anchor does not know (a key being
        // rolled in); in evidence every signature must verify, so none is unchecked.
        let message = [SIGNING_CONTEXT, signed.conf.as_slice()].concat();
        for sig in &signed.signatures {
            match keys.iter().find(|k| k.id.0.as_slice() == sig.signer_sha256) {
                None => self.fail(
                    &subject,
                    check,
                    format!(
                        "carries a signature by key {}, which neither the anchor nor the configuration lists",
                        hex_id(&sig.signer_sha256)
                    ),
                ),
                Some(k)
                    if sig.algorithm != algorithm_to_wire(k.key.algorithm()) as i32
                        || k.key.verify(&message, &sig.value).is_err() =>
                {
                    self.fail(&subject, check, format!("its signature by key {} does not verify", k.id));
                }
                Some(_) => {}
            }
        }
        if self.failed() == before {
            self.pass(
                &subject,
                check,
                format!(
                    "version {} of instance {}, generated {}, signed by the anchor's key {}",
                    verified.conf.version,
                    verified.conf.instance,
                    time_text(verified.conf.generated_at),
                    verified.signed_by.id
                ),
            );
        }
        let trust = TrustPolicy::new(verified.conf.approved_cas.iter(), verified.conf.registered_nodes())
            .map_err(|e| e.to_string());
        Some(Conf { conf: verified.conf, trust, keys })
    }

    fn check_side(
        &mut self,
        side: &pb::EvidenceSide,
        confs: &[Option<Conf>],
        wanted: &[ExchangeRef],
    ) -> Vec<Rec> {
        let subject = format!("node {}", side.node);
        let mut summary = SideSummary {
            node: side.node.clone(),
            node_certificate: Fingerprint::of(&side.node_certificate).to_string(),
            ..SideSummary::default()
        };
        let conf = usize::try_from(side.global_conf).ok().and_then(|i| confs.get(i)).and_then(Option::as_ref);
        summary.global_conf_version = conf.map(|c| c.conf.version);
        let node: Option<NodeId> = match side.node.parse() {
            Ok(n) => Some(n),
            Err(e) => {
                self.fail(&subject, "contents", format!("{:?} is not a node id: {e}", side.node));
                None
            }
        };
        let checkpoint = self.check_checkpoint(&subject, side, node.as_ref(), conf, &mut summary);
        // Records may carry signatures of a federation partner's members: checked against the
        // side's configuration with the partners' views it carries added, as the node had them.
        let federated = conf.and_then(|c| self.with_partners(&subject, side, c));
        let conf = federated.as_ref().or(conf);

        let mut out = Vec::with_capacity(side.records.len());
        let mut previous: Option<u64> = None;
        for (position, r) in side.records.iter().enumerate() {
            let index = r.proof.as_ref().map(|p| p.leaf_index);
            if let (Some(prev), Some(index)) = (previous, index)
                && index <= prev
            {
                self.fail(
                    &subject,
                    "contents",
                    "its records are not in increasing log order, or one appears twice",
                );
            }
            previous = index.or(previous);
            summary.records.extend(index);
            out.extend(self.check_record(side, position, r, checkpoint.as_ref(), conf, wanted));
        }
        if side.records.is_empty() {
            self.fail(&subject, "contents", "it holds no record");
        }
        self.sides.push(summary);
        out
    }

    /// `conf` with the federation partners' views `side` carries, each verified against the keys
    /// `conf` announces for that partner; `None` when it carries none.
    fn with_partners(&mut self, subject: &str, side: &pb::EvidenceSide, conf: &Conf) -> Option<Conf> {
        if side.partner_confs.is_empty() {
            return None;
        }
        let check = "partner configuration";
        let mut merged = conf.conf.clone();
        let mut previous: Option<String> = None;
        for bytes in &side.partner_confs {
            let inner = gc_pb::SignedGlobalConf::decode(bytes.as_slice())
                .ok()
                .filter(|s| s.encode_to_vec() == *bytes)
                .and_then(|s| gc_pb::GlobalConf::decode(s.conf.as_slice()).ok());
            let Some(inner) = inner else {
                self.fail(
                    subject,
                    check,
                    "a partner configuration is not a signed global configuration in canonical encoding",
                );
                continue;
            };
            if previous.as_ref().is_some_and(|p| *p >= inner.instance) {
                self.fail(
                    subject,
                    check,
                    "its partner configurations are not one per instance in instance order",
                );
            }
            previous = Some(inner.instance.clone());
            let Some(partner) =
                conf.conf.federation_partners.iter().find(|p| p.instance.as_str() == inner.instance)
            else {
                self.fail(
                    subject,
                    check,
                    format!(
                        "instance {:?} is not a federation partner in configuration version {}",
                        inner.instance, conf.conf.version
                    ),
                );
                continue;
            };
            let anchor = Anchor {
                instance: partner.instance.clone(),
                conf_urls: partner.conf_urls.clone(),
                signing_keys: partner.signing_keys.clone(),
                generated_at: conf.conf.generated_at,
            };
            match verify_ignoring_expiry(bytes, &anchor, from_millis(inner.generated_at_ms)) {
                Ok(v) => {
                    merged.add_partner(&v.conf);
                    self.pass(
                        subject,
                        check,
                        format!(
                            "version {} of partner instance {}, signed with a key configuration version {} announces for it",
                            v.conf.version, partner.instance, conf.conf.version
                        ),
                    );
                }
                Err(e) => self.fail(
                    subject,
                    check,
                    format!(
                        "the configuration of partner instance {} does not verify: {e}",
                        partner.instance
                    ),
                ),
            }
        }
        let trust = TrustPolicy::new(merged.approved_cas.iter(), merged.registered_nodes())
            .map_err(|e| e.to_string());
        Some(Conf { conf: merged, trust, keys: conf.keys.clone() })
    }

    /// The checkpoint: the node signed it with the certificate the configuration registers for
    /// it, and the registry co-signed it. Returns the statement (even if a signature failed, so
    /// the records can still be placed; the failure is recorded).
    fn check_checkpoint(
        &mut self,
        subject: &str,
        side: &pb::EvidenceSide,
        node: Option<&NodeId>,
        conf: Option<&Conf>,
        summary: &mut SideSummary,
    ) -> Option<Checkpoint> {
        let check = "checkpoint signature";
        let Some(signed) = &side.checkpoint else {
            self.fail(subject, check, "the side has no checkpoint");
            return None;
        };
        let checkpoint = match Checkpoint::decode(signed) {
            Ok(c) => c,
            Err(e) => {
                self.fail(subject, check, format!("the checkpoint cannot be read ({e})"));
                return None;
            }
        };
        summary.checkpoint_size = checkpoint.size;
        summary.checkpoint_root = hex::encode(checkpoint.root);
        summary.checkpoint_time = ms_text(checkpoint.timestamp_ms);
        let before = self.failed();
        if checkpoint.origin != side.node {
            self.fail(
                subject,
                check,
                format!("the checkpoint is of node {}'s log, not of this node's", checkpoint.origin),
            );
        }
        let log_role = log_pb::SignerRole::Log as i32;
        let witness_role = log_pb::SignerRole::Witness as i32;
        if let Some(other) = signed.signatures.iter().find(|s| s.role != log_role && s.role != witness_role) {
            self.fail(
                subject,
                check,
                format!("a signature by {:?} has the unknown role {}", other.signer, other.role),
            );
        }
        let logs: Vec<&log_pb::CheckpointSignature> =
            signed.signatures.iter().filter(|s| s.role == log_role).collect();
        let [log] = logs.as_slice() else {
            self.fail(subject, check, format!("it has {} log signatures, not exactly one", logs.len()));
            self.check_witnesses(subject, signed, conf, summary);
            return Some(checkpoint);
        };
        let signed_at = from_millis(log.signed_at_ms);
        match self.check_node_certificate(subject, side, node, conf, signed_at) {
            None => self.skip(subject, check, "not checked: the node certificate is not accepted"),
            Some(info) => {
                let algorithm = log.signature.as_ref().map_or(0, |s| s.algorithm);
                if algorithm != algorithm_to_wire(info.public_key.algorithm()) as i32 {
                    self.fail(
                        subject,
                        check,
                        format!(
                            "the log signature claims algorithm {algorithm}, not the certificate's {}",
                            info.public_key.algorithm()
                        ),
                    );
                } else if log.signer != checkpoint.origin {
                    self.fail(
                        subject,
                        check,
                        format!("the log signature is by {:?}, not by the log's node", log.signer),
                    );
                } else {
                    match verify_log_signature(signed, info.fingerprint, &info.public_key) {
                        Err(e) => {
                            self.fail(subject, check, format!("the node's signature does not verify ({e})"))
                        }
                        Ok(_) if self.failed() == before => self.pass(
                            subject,
                            check,
                            format!(
                                "the node signed, at {}, that its log had {} records with root {}",
                                time_text(signed_at),
                                checkpoint.size,
                                hex::encode(checkpoint.root)
                            ),
                        ),
                        Ok(_) => {}
                    }
                }
            }
        }
        self.check_witnesses(subject, signed, conf, summary);
        Some(checkpoint)
    }

    /// The node's certificate chains to an approved CA of the configuration, is the one it
    /// registers for the node, and was valid when the node signed the checkpoint.
    fn check_node_certificate(
        &mut self,
        subject: &str,
        side: &pb::EvidenceSide,
        node: Option<&NodeId>,
        conf: Option<&Conf>,
        at: SystemTime,
    ) -> Option<CertInfo> {
        let check = "node certificate";
        let Some(conf) = conf else {
            self.skip(subject, check, "not checked: the node's global configuration does not verify");
            return None;
        };
        let node = node?;
        let fingerprint = Fingerprint::of(&side.node_certificate);
        let cert = match Certificate::from_der(side.node_certificate.clone())
            .and_then(|c| c.info().map(|i| (c, i)))
        {
            Ok(c) => c,
            Err(e) => {
                self.fail(subject, check, format!("it is not a readable certificate ({e})"));
                return None;
            }
        };
        let policy = match &conf.trust {
            Ok(p) => p,
            Err(e) => {
                self.fail(subject, check, format!("the configuration's approved CAs cannot be used ({e})"));
                return None;
            }
        };
        match policy.verify_peer(cert.0.der(), &[], PeerRole::Client, Some(node), at) {
            Ok(_) => {
                self.pass(
                    subject,
                    check,
                    format!(
                        "certificate {fingerprint} is the one configuration version {} registers for the node, \
                         issued by an approved CA and valid when it signed the checkpoint",
                        conf.conf.version
                    ),
                );
                Some(cert.1)
            }
            Err(e) => {
                self.fail(
                    subject,
                    check,
                    format!(
                        "certificate {fingerprint} is not accepted for the node by configuration version {} at {}: {e}",
                        conf.conf.version,
                        time_text(at)
                    ),
                );
                None
            }
        }
    }

    /// Every witness co-signature: by the instance's registry, with a key of the anchor or of
    /// the verified configuration valid when it signed; at least one.
    fn check_witnesses(
        &mut self,
        subject: &str,
        signed: &log_pb::SignedCheckpoint,
        conf: Option<&Conf>,
        summary: &mut SideSummary,
    ) {
        let check = "witness co-signature";
        let witness_role = log_pb::SignerRole::Witness as i32;
        let cosigs: Vec<&log_pb::CheckpointSignature> =
            signed.signatures.iter().filter(|s| s.role == witness_role).collect();
        if cosigs.is_empty() {
            self.fail(
                subject,
                check,
                "the checkpoint carries no witness co-signature: the registry never vouched for this history",
            );
            return;
        }
        let keys = conf.map_or_else(|| self.anchor.signing_keys.clone(), |c| c.keys.clone());
        let instance = self.anchor.instance.to_string();
        for cosig in cosigs {
            let at = from_millis(cosig.signed_at_ms);
            let id = cosig.signature.as_ref().map(|s| s.signer_sha256.as_slice()).unwrap_or_default();
            let algorithm = cosig.signature.as_ref().map_or(0, |s| s.algorithm);
            let Some(key) = keys.iter().find(|k| k.id.0.as_slice() == id) else {
                self.fail(
                    subject,
                    check,
                    format!(
                        "a co-signature by key {}, which neither the anchor nor the configuration lists",
                        hex_id(id)
                    ),
                );
                continue;
            };
            if cosig.signer != instance {
                self.fail(
                    subject,
                    check,
                    format!(
                        "a co-signature by {:?}, not by the registry of instance {instance}",
                        cosig.signer
                    ),
                );
            } else if !key.is_valid_at(at) {
                self.fail(
                    subject,
                    check,
                    format!("registry key {} was not valid when it co-signed ({})", key.id, time_text(at)),
                );
            } else if algorithm != algorithm_to_wire(key.key.algorithm()) as i32 {
                self.fail(
                    subject,
                    check,
                    format!("the co-signature claims algorithm {algorithm}, not key {}'s", key.id),
                );
            } else {
                // One co-signature at a time, so each is known to be checked.
                let one = log_pb::SignedCheckpoint {
                    checkpoint: signed.checkpoint.clone(),
                    signatures: vec![cosig.clone()],
                };
                match verify_witness_signatures(&one, &[(key.id, key.key.clone())]) {
                    Ok(1) => {
                        summary.witnessed_by.push(key.id.to_string());
                        self.pass(
                            subject,
                            check,
                            format!(
                                "the registry of instance {instance} co-signed the checkpoint at {} with key {}, \
                                 vouching that this history extends the one it witnessed before",
                                time_text(at),
                                key.id
                            ),
                        );
                    }
                    Ok(_) | Err(_) => {
                        self.fail(
                            subject,
                            check,
                            format!("the registry's co-signature with key {} does not verify", key.id),
                        );
                    }
                }
            }
        }
    }

    /// One record: its inclusion in the checkpoint, what it is, and its envelope's signature.
    fn check_record(
        &mut self,
        side: &pb::EvidenceSide,
        position: usize,
        r: &pb::EvidenceRecord,
        checkpoint: Option<&Checkpoint>,
        conf: Option<&Conf>,
        wanted: &[ExchangeRef],
    ) -> Option<Rec> {
        let decoded = log_pb::LogRecord::decode(r.record.as_slice());
        let index = r.proof.as_ref().map(|p| p.leaf_index);
        let mut subject = match index {
            Some(i) => format!("node {}, record {i}", side.node),
            None => format!("node {}, record #{} of the bundle", side.node, position + 1),
        };
        if let Ok(rec) = &decoded {
            subject.push_str(&format!(
                " ({} {} of {})",
                role_name(rec.role),
                direction_name(rec.direction),
                rec.message_id
            ));
        }
        self.check_inclusion(&subject, r, checkpoint);
        let record = match decoded {
            Ok(rec) => rec,
            Err(e) => {
                self.fail(&subject, "record", format!("does not decode as a LogRecord ({e})"));
                return None;
            }
        };

        let before = self.failed();
        let written_by = id_text(record.node.as_ref());
        if written_by != side.node {
            self.fail(&subject, "record", format!("it was written by node {written_by:?}, not by this node"));
        }
        if role_name(record.role).starts_with("unknown")
            || direction_name(record.direction).starts_with("unknown")
        {
            self.fail(&subject, "record", "its role or direction is not known");
        }
        if !wanted.iter().any(|e| e.matches(&record.message_id, &record.request_id)) {
            self.fail(
                &subject,
                "record",
                format!(
                    "it is of exchange {} (request {}), which the bundle does not name",
                    record.message_id, record.request_id
                ),
            );
        }
        if self.failed() == before {
            self.pass(
                &subject,
                "record",
                format!(
                    "logged by this node at {} as the {} side's {} of exchange {} (request {})",
                    ms_text(record.logged_at_ms),
                    role_name(record.role),
                    direction_name(record.direction),
                    record.message_id,
                    record.request_id
                ),
            );
        }
        let mut rec = Rec {
            node: side.node.clone(),
            index: index.unwrap_or_default(),
            record,
            request: None,
            response: None,
        };
        self.check_envelope(&subject, &mut rec, conf);
        self.check_body(&subject, &rec.record);
        Some(rec)
    }

    fn check_inclusion(&mut self, subject: &str, r: &pb::EvidenceRecord, checkpoint: Option<&Checkpoint>) {
        let check = "inclusion proof";
        let Some(proof) = &r.proof else {
            self.fail(subject, check, "the record has no inclusion proof");
            return;
        };
        let Some(cp) = checkpoint else {
            self.skip(subject, check, "not checked: the side's checkpoint cannot be read");
            return;
        };
        if proof.tree_size != cp.size {
            self.fail(
                subject,
                check,
                format!(
                    "the proof is for a tree of {} records, not the checkpoint's {}",
                    proof.tree_size, cp.size
                ),
            );
            return;
        }
        let mut path: Vec<Hash> = Vec::with_capacity(proof.hashes.len());
        for h in &proof.hashes {
            let Ok(h) = <Hash>::try_from(h.as_slice()) else {
                self.fail(subject, check, "the proof holds a hash that is not 32 bytes");
                return;
            };
            path.push(h);
        }
        match merkle::verify_inclusion(
            &merkle::leaf_hash(&r.record),
            proof.leaf_index,
            cp.size,
            &path,
            &cp.root,
        ) {
            Ok(()) => self.pass(
                subject,
                check,
                format!(
                    "it is record {} of the log of {} records the checkpoint signs",
                    proof.leaf_index, cp.size
                ),
            ),
            Err(ProofError::RootMismatch) => self.fail(
                subject,
                check,
                format!(
                    "it is not record {} of the log the checkpoint signs: the record's bytes (or its proof) \
                     differ from what the node had logged when it signed the checkpoint of size {}",
                    proof.leaf_index, cp.size
                ),
            ),
            Err(e) => self.fail(subject, check, format!("it is not in the log the checkpoint signs ({e})")),
        }
    }

    /// The record's envelope is signed by the member it speaks for, with a certificate the
    /// configuration registers for that member, and the record says what the envelope says.
    fn check_envelope(&mut self, subject: &str, rec: &mut Rec, conf: Option<&Conf>) {
        let check = "envelope signature";
        let record = &rec.record;
        if record.envelope.is_empty() {
            match &record.fault {
                Some(f) => self.skip(
                    subject,
                    check,
                    format!(
                        "a refusal record (fault {}: {}; detail {}): no member signed it, the node's log alone proves it",
                        f.code, f.message, f.detail
                    ),
                ),
                None => self.fail(subject, check, "the record carries neither a signed envelope nor a fault"),
            }
            return;
        }
        let direction =
            log_pb::Direction::try_from(record.direction).unwrap_or(log_pb::Direction::Unspecified);
        match direction {
            log_pb::Direction::Request => {
                let Ok(env) = ex::RequestEnvelope::decode(record.envelope.as_slice()) else {
                    self.fail(subject, check, "its envelope does not decode as a request envelope");
                    return;
                };
                let signer = env.client.clone().map(|c| c.into_domain("client"));
                match (signer, conf) {
                    (Some(Ok(client)), Some(conf)) => {
                        let client: ClientId = client;
                        let at = from_millis(env.created_at_ms);
                        let result = envelope::verify_request(&env, client.member(), &conf.conf, at);
                        self.signature_outcome(
                            subject,
                            client.member().to_string(),
                            result.map_err(|r| r.message),
                            conf,
                            at,
                        );
                    }
                    (_, None) => self.skip(
                        subject,
                        check,
                        "not checked: the node's global configuration does not verify",
                    ),
                    (_, Some(_)) => self.fail(subject, check, "the envelope names no valid client"),
                }
                self.check_request_fields(subject, record, &env);
                rec.request = Some((env, record.envelope.clone()));
            }
            log_pb::Direction::Response => {
                let Ok(env) = ex::ResponseEnvelope::decode(record.envelope.as_slice()) else {
                    self.fail(subject, check, "its envelope does not decode as a response envelope");
                    return;
                };
                let signer = env.service.clone().map(|s| s.into_domain("service"));
                match (signer, conf) {
                    (Some(Ok(service)), Some(conf)) => {
                        let service: ServiceId = service;
                        let at = from_millis(env.created_at_ms);
                        let member = &service.subsystem.member;
                        let result = envelope::verify_response(&env, member, &conf.conf, at);
                        self.signature_outcome(
                            subject,
                            member.to_string(),
                            result.map_err(|r| r.message),
                            conf,
                            at,
                        );
                    }
                    (_, None) => self.skip(
                        subject,
                        check,
                        "not checked: the node's global configuration does not verify",
                    ),
                    (_, Some(_)) => self.fail(subject, check, "the envelope names no valid service"),
                }
                self.check_response_fields(subject, record, &env);
                rec.response = Some((env, record.envelope.clone()));
            }
            log_pb::Direction::Unspecified => {
                self.fail(
                    subject,
                    check,
                    "the record's direction is not known, so its envelope cannot be read",
                );
            }
        }
    }

    fn signature_outcome(
        &mut self,
        subject: &str,
        member: String,
        result: Result<Fingerprint, String>,
        conf: &Conf,
        at: SystemTime,
    ) {
        let check = "envelope signature";
        match result {
            Ok(fp) => self.pass(
                subject,
                check,
                format!(
                    "signed by member {member} with certificate {fp}, which configuration version {} lists \
                     for it, valid when the message was made ({})",
                    conf.conf.version,
                    time_text(at)
                ),
            ),
            Err(why) => self.fail(subject, check, format!("not a valid signature of member {member}: {why}")),
        }
    }

    fn fields_outcome(&mut self, subject: &str, differ: &[&str]) {
        let check = "record matches envelope";
        if differ.is_empty() {
            self.pass(
                subject,
                check,
                "the record's ids, call, times, digests and nodes are those of its signed envelope",
            );
        } else {
            self.fail(
                subject,
                check,
                format!(
                    "the record says something else than its signed envelope: {} differ",
                    differ.join(", ")
                ),
            );
        }
    }

    fn check_request_fields(&mut self, subject: &str, r: &log_pb::LogRecord, env: &ex::RequestEnvelope) {
        let mut differ = Vec::new();
        let mut cmp = |same: bool, name: &'static str| {
            if !same {
                differ.push(name);
            }
        };
        cmp(r.message_id == env.message_id, "message id");
        cmp(r.request_id == env.request_id, "request id");
        cmp(r.client == env.client, "client");
        cmp(r.service == env.service, "service");
        cmp(r.method == env.method, "method");
        cmp(r.path == path_and_query(&env.path, &env.query), "path");
        cmp(r.user_id == env.user_id, "user id");
        cmp(r.issue == env.issue, "issue");
        cmp(r.message_time_ms == env.created_at_ms, "message time");
        cmp(r.headers_sha256 == headers_sha256(&env.headers), "headers digest");
        cmp(r.body_sha256 == env.body_sha256, "body digest");
        cmp(r.body_length == env.body_length, "body length");
        cmp(r.signature == env.signature, "signature");
        // The consumer node signs itself in; the provider logs it as its peer.
        match log_pb::Role::try_from(r.role) {
            Ok(log_pb::Role::Consumer) => cmp(env.consumer_node == r.node, "consumer node"),
            Ok(log_pb::Role::Provider) => cmp(env.consumer_node == r.peer_node, "peer node"),
            _ => {}
        }
        self.fields_outcome(subject, &differ);
    }

    fn check_response_fields(&mut self, subject: &str, r: &log_pb::LogRecord, env: &ex::ResponseEnvelope) {
        let mut differ = Vec::new();
        let mut cmp = |same: bool, name: &'static str| {
            if !same {
                differ.push(name);
            }
        };
        cmp(r.message_id == env.message_id, "message id");
        cmp(r.request_id == env.request_id, "request id");
        cmp(r.client == env.client, "client");
        cmp(r.service == env.service, "service");
        cmp(r.status == env.status, "status");
        cmp(r.fault == env.fault, "fault");
        cmp(r.message_time_ms == env.created_at_ms, "message time");
        cmp(r.headers_sha256 == headers_sha256(&env.headers), "headers digest");
        cmp(r.body_sha256 == env.body_sha256, "body digest");
        cmp(r.body_length == env.body_length, "body length");
        cmp(r.signature == env.signature, "signature");
        match log_pb::Role::try_from(r.role) {
            Ok(log_pb::Role::Provider) => cmp(env.provider_node == r.node, "provider node"),
            Ok(log_pb::Role::Consumer) => cmp(env.provider_node == r.peer_node, "peer node"),
            _ => {}
        }
        self.fields_outcome(subject, &differ);
    }

    /// A body the log kept in full must be the one whose digest was signed.
    fn check_body(&mut self, subject: &str, r: &log_pb::LogRecord) {
        let check = "body";
        match &r.body {
            Some(log_pb::log_record::Body::PlainBody(body)) => {
                let digest: [u8; 32] = Sha256::digest(body).into();
                if digest.as_slice() == r.body_sha256 && body.len() as u64 == r.body_length {
                    self.pass(
                        subject,
                        check,
                        format!("the logged body ({} bytes) has the signed digest and length", body.len()),
                    );
                } else {
                    self.fail(subject, check, "the logged body does not have the signed digest and length");
                }
            }
            Some(log_pb::log_record::Body::EncryptedBody(e)) => self.skip(
                subject,
                check,
                format!("kept encrypted with the node's body key {}: not checkable without it", e.key_id),
            ),
            None if r.body_length > 0 => {
                self.skip(
                    subject,
                    check,
                    "the log keeps only the body's digest and length (metadata-only policy or a large body)",
                );
            }
            None => {}
        }
    }

    /// Across records and sides, per exchange: both sides logged the same signed messages and
    /// name each other.
    fn check_exchanges(&mut self, wanted: &[ExchangeRef], records: &[Rec]) {
        for e in wanted {
            if !records.iter().any(|r| e.matches(&r.record.message_id, &r.record.request_id)) {
                self.fail(&e.to_string(), "coverage", "the bundle holds no readable record of it");
            }
        }
        let mut groups: BTreeMap<(&str, &str), Vec<&Rec>> = BTreeMap::new();
        for r in records {
            groups.entry((r.record.message_id.as_str(), r.record.request_id.as_str())).or_default().push(r);
        }
        for ((message_id, request_id), recs) in groups {
            self.check_exchange(message_id, request_id, &recs);
        }
    }

    fn check_exchange(&mut self, message_id: &str, request_id: &str, recs: &[&Rec]) {
        let subject = format!("exchange {message_id} (request {request_id})");
        let mut summary = ExchangeSummary {
            message_id: message_id.to_owned(),
            request_id: request_id.to_owned(),
            ..ExchangeSummary::default()
        };
        let requests: Vec<(&Rec, &ex::RequestEnvelope, &[u8])> =
            recs.iter().filter_map(|r| r.request.as_ref().map(|(e, b)| (*r, e, b.as_slice()))).collect();
        let responses: Vec<(&Rec, &ex::ResponseEnvelope, &[u8])> =
            recs.iter().filter_map(|r| r.response.as_ref().map(|(e, b)| (*r, e, b.as_slice()))).collect();

        // What the exchange was, from the signed request if there is one.
        if let Some((_, env, _)) = requests.first() {
            summary.client = id_text(env.client.as_ref());
            summary.service = id_text(env.service.as_ref());
            summary.method.clone_from(&env.method);
            summary.path = path_and_query(&env.path, &env.query);
        } else if let Some(r) = recs.first() {
            summary.client = id_text(r.record.client.as_ref());
            summary.service = id_text(r.record.service.as_ref());
            summary.method.clone_from(&r.record.method);
            summary.path.clone_from(&r.record.path);
        }
        summary.status = responses.first().map(|(_, e, _)| e.status).or_else(|| {
            recs.iter()
                .find(|r| r.record.direction == log_pb::Direction::Response as i32)
                .map(|r| r.record.status)
        });
        summary.fault = recs.iter().find_map(|r| r.record.fault.as_ref()).map(|f| f.code.clone());

        // 1. The same signed request and response on every side.
        if let Some(((first, env, bytes), rest)) = requests.split_first() {
            let mut same = true;
            for (other, other_env, other_bytes) in rest {
                if bytes != other_bytes {
                    same = false;
                    self.fail(
                        &subject,
                        "consistency",
                        format!(
                            "{} and {} hold different signed requests ({} differ)",
                            first.label(),
                            other.label(),
                            request_differences(env, other_env)
                        ),
                    );
                }
            }
            if same && !rest.is_empty() {
                self.pass(
                    &subject,
                    "consistency",
                    format!(
                        "both sides logged the same signed request: message id, request id, client, service, call, \
                         body digest ({}) and length ({} bytes) agree",
                        hex::encode(&env.body_sha256),
                        env.body_length
                    ),
                );
            }
        }
        if let Some(((first, env, bytes), rest)) = responses.split_first() {
            let mut same = true;
            for (other, other_env, other_bytes) in rest {
                if bytes != other_bytes {
                    same = false;
                    self.fail(
                        &subject,
                        "consistency",
                        format!(
                            "{} and {} hold different signed responses ({} differ)",
                            first.label(),
                            other.label(),
                            response_differences(env, other_env)
                        ),
                    );
                }
            }
            if same && !rest.is_empty() {
                self.pass(
                    &subject,
                    "consistency",
                    format!(
                        "both sides logged the same signed response: status {}, request hash, body digest ({}) \
                         and length ({} bytes) agree",
                        env.status,
                        hex::encode(&env.body_sha256),
                        env.body_length
                    ),
                );
            }
        }
        // 2. The response answers this request.
        if let (Some((rq, req, _)), Some((rs, resp, _))) = (requests.first(), responses.first()) {
            let mut differ = Vec::new();
            for (same, name) in [
                (req.message_id == resp.message_id, "message id"),
                (req.request_id == resp.request_id, "request id"),
                (req.client == resp.client, "client"),
                (req.service == resp.service, "service"),
            ] {
                if !same {
                    differ.push(name);
                }
            }
            if differ.is_empty() {
                self.pass(
                    &subject,
                    "consistency",
                    "the signed response names the signed request's ids, client and service",
                );
            } else {
                self.fail(
                    &subject,
                    "consistency",
                    format!(
                        "{} answers another request than {}: {} differ",
                        rs.label(),
                        rq.label(),
                        differ.join(", ")
                    ),
                );
            }
            self.check_request_hash(&subject, &requests, resp);
        }
        // 3. The nodes name each other.
        self.check_nodes(&subject, recs, &mut summary);

        // 4. What the bundle covers.
        let mut present = BTreeSet::new();
        for r in recs {
            present.insert((r.record.role, r.record.direction));
        }
        summary.records = present
            .iter()
            .map(|(role, direction)| format!("{} {}", role_name(*role), direction_name(*direction)))
            .collect();
        let consumer = present.iter().any(|(role, _)| *role == log_pb::Role::Consumer as i32);
        let provider = present.iter().any(|(role, _)| *role == log_pb::Role::Provider as i32);
        match (consumer, provider) {
            (true, true) => self.pass(
                &subject,
                "coverage",
                format!("proved from both sides' logs: {}", summary.records.join(", ")),
            ),
            (true, false) => self.skip(
                &subject,
                "coverage",
                "only the consumer node's log is in the bundle: what the provider node received and answered is not proved here",
            ),
            (false, true) => self.skip(
                &subject,
                "coverage",
                "only the provider node's log is in the bundle: what the consumer node sent and received is not proved here",
            ),
            (false, false) => {}
        }
        self.exchanges.push(summary);
    }

    /// The provider's signed response carries `X-Road-Request-Hash` of the request it received;
    /// recomputed from the consumer's signed request when the log kept the request body.
    fn check_request_hash(
        &mut self,
        subject: &str,
        requests: &[(&Rec, &ex::RequestEnvelope, &[u8])],
        resp: &ex::ResponseEnvelope,
    ) {
        let check = "request hash";
        let Some((_, req, _)) = requests.first() else { return };
        let Some(Ok(service)) = req.service.clone().map(|s| s.into_domain("service")) else { return };
        let service: ServiceId = service;
        let body: Option<Option<[u8; 64]>> = if req.body_length == 0 {
            Some(None)
        } else {
            requests.iter().find_map(|(r, _, _)| match &r.record.body {
                Some(log_pb::log_record::Body::PlainBody(b))
                    if Sha256::digest(b).as_slice() == req.body_sha256
                        && b.len() as u64 == req.body_length =>
                {
                    Some(Some(Sha512::digest(b).into()))
                }
                _ => None,
            })
        };
        let Some(body) = body else {
            self.skip(
                subject,
                check,
                "the request body is not in the logs (only its digest), so X-Road-Request-Hash cannot be recomputed",
            );
            return;
        };
        let mut path = service.r1_path();
        path.push_str(&path_and_query(&req.path, &req.query));
        let expected = request_hash(&req.method, &path, &req.headers, body.as_ref());
        if resp.request_hash == expected {
            self.pass(
                subject,
                check,
                "the provider's signed response carries the X-Road-Request-Hash of exactly this request",
            );
        } else {
            self.fail(
                subject,
                check,
                format!(
                    "the provider's signed response carries request hash {}, but the signed request hashes to {expected}: \
                     the provider received a different request",
                    resp.request_hash
                ),
            );
        }
    }

    fn check_nodes(&mut self, subject: &str, recs: &[&Rec], summary: &mut ExchangeSummary) {
        let check = "consistency";
        let of_role = |role: log_pb::Role| -> BTreeSet<&str> {
            recs.iter().filter(|r| r.record.role == role as i32).map(|r| r.node.as_str()).collect()
        };
        let consumers = of_role(log_pb::Role::Consumer);
        let providers = of_role(log_pb::Role::Provider);
        let before = self.failed();
        for (set, role) in [(&consumers, "consumer"), (&providers, "provider")] {
            if set.len() > 1 {
                let nodes: Vec<&str> = set.iter().copied().collect();
                self.fail(
                    subject,
                    check,
                    format!("{role} records come from several nodes: {}", nodes.join(", ")),
                );
            }
        }
        let consumer = consumers.first().copied();
        let provider = providers.first().copied();
        summary.consumer_node = consumer.map(str::to_owned);
        summary.provider_node = provider.map(str::to_owned).or_else(|| {
            // A consumer-only bundle still says which node answered.
            recs.iter()
                .find(|r| r.record.role == log_pb::Role::Consumer as i32 && r.record.peer_node.is_some())
                .map(|r| id_text(r.record.peer_node.as_ref()))
        });
        let mut named = false;
        for r in recs {
            let peer = id_text(r.record.peer_node.as_ref());
            let (expected, what) = match log_pb::Role::try_from(r.record.role) {
                Ok(log_pb::Role::Consumer) => (provider, "provider"),
                Ok(log_pb::Role::Provider) => (consumer, "consumer"),
                _ => continue,
            };
            // The consumer logs its request before it knows which provider node will answer.
            if r.record.peer_node.is_none() {
                continue;
            }
            if let Some(expected) = expected {
                named = true;
                if peer != expected {
                    self.fail(
                        subject,
                        check,
                        format!(
                            "{} names {peer} as the {what} node, but the {what}'s records are from node {expected}",
                            r.label()
                        ),
                    );
                }
            }
        }
        if named && self.failed() == before {
            self.pass(
                subject,
                check,
                format!(
                    "the consumer node {} and the provider node {} name each other as peers",
                    consumer.unwrap_or("-"),
                    provider.unwrap_or("-")
                ),
            );
        }
    }
}

fn request_differences(a: &ex::RequestEnvelope, b: &ex::RequestEnvelope) -> String {
    let fields = [
        (a.message_id == b.message_id, "message id"),
        (a.request_id == b.request_id, "request id"),
        (a.client == b.client, "client"),
        (a.service == b.service, "service"),
        (a.method == b.method, "method"),
        (a.path == b.path && a.query == b.query, "path"),
        (a.headers == b.headers, "headers"),
        (a.user_id == b.user_id && a.issue == b.issue, "user id or issue"),
        (a.consumer_node == b.consumer_node && a.target_node == b.target_node, "nodes"),
        (a.created_at_ms == b.created_at_ms, "time"),
        (a.body_sha256 == b.body_sha256, "body digest"),
        (a.body_length == b.body_length, "body length"),
        (a.signer_certificate == b.signer_certificate && a.signature == b.signature, "signature"),
    ];
    differences(&fields)
}

fn response_differences(a: &ex::ResponseEnvelope, b: &ex::ResponseEnvelope) -> String {
    let fields = [
        (a.message_id == b.message_id, "message id"),
        (a.request_id == b.request_id, "request id"),
        (a.client == b.client && a.service == b.service, "client or service"),
        (a.request_hash == b.request_hash, "request hash"),
        (a.status == b.status && a.fault == b.fault, "status"),
        (a.headers == b.headers, "headers"),
        (a.provider_node == b.provider_node, "provider node"),
        (a.created_at_ms == b.created_at_ms, "time"),
        (a.body_sha256 == b.body_sha256, "body digest"),
        (a.body_length == b.body_length, "body length"),
        (a.signer_certificate == b.signer_certificate && a.signature == b.signature, "signature"),
    ];
    differences(&fields)
}

fn differences(fields: &[(bool, &str)]) -> String {
    let names: Vec<&str> = fields.iter().filter(|(same, _)| !same).map(|(_, name)| *name).collect();
    if names.is_empty() { "their encodings".into() } else { names.join(", ") }
}
