//! A record's signed envelope: signed by the member it speaks for, and saying what the record
//! says. Requests and responses are checked by the same code, through [`Envelope`].

use std::time::SystemTime;

use lienthong_exchange::envelope;
use lienthong_exchange::headers::headers_sha256;
use lienthong_globalconf::{GlobalConf, from_millis};
use lienthong_pki::Fingerprint;
use lienthong_proto::convert::IntoDomain;
use lienthong_proto::exchange::v1 as ex;
use lienthong_proto::msglog::v1 as log_pb;
use lienthong_types::{ClientId, MemberId, ServiceId};
use prost::Message;

use super::{Conf, Rec, Verifier, path_and_query, time_text};

/// What the checks need of a signed envelope, once for requests and once for responses.
pub(super) trait Envelope: Message + Default + Sized {
    /// "request" or "response".
    const KIND: &'static str;
    /// Whom the envelope names as its signer's side: "client" or "service".
    const SIGNER: &'static str;
    /// The member that must have signed, if the envelope names a valid one.
    fn member(&self) -> Option<MemberId>;
    /// Checks the signature against the members' certificates in `conf`, as of `at`.
    fn verify(&self, member: &MemberId, conf: &GlobalConf, at: SystemTime) -> Result<Fingerprint, String>;
    fn created_at_ms(&self) -> i64;
    /// For each field a log record copies from its envelope: whether `r` has it the same.
    fn record_fields(&self, r: &log_pb::LogRecord) -> Vec<(bool, &'static str)>;
    /// For each field: whether `other` (another side's copy) has it the same.
    fn compare(&self, other: &Self) -> Vec<(bool, &'static str)>;
    /// What two sides agree on when they hold the same envelope.
    fn agreement(&self) -> String;
    /// Keeps the envelope (and its bytes) with the record, for the checks across sides.
    fn keep(self, rec: &mut Rec);
}

/// The names of the fields that differ.
pub(super) fn differing(fields: &[(bool, &'static str)]) -> Vec<&'static str> {
    fields.iter().filter(|(same, _)| !same).map(|(_, name)| *name).collect()
}

/// Whether record `r` has each field it copies from envelope `e`: those both kinds of envelope
/// carry under the same names, around `specific`, in the order a report lists them.
macro_rules! record_fields {
    ($r:expr, $e:expr, [$($specific:expr),* $(,)?]) => {
        vec![
            ($r.message_id == $e.message_id, "message id"),
            ($r.request_id == $e.request_id, "request id"),
            ($r.client == $e.client, "client"),
            ($r.service == $e.service, "service"),
            $($specific,)*
            ($r.message_time_ms == $e.created_at_ms, "message time"),
            ($r.headers_sha256 == headers_sha256(&$e.headers), "headers digest"),
            ($r.body_sha256 == $e.body_sha256, "body digest"),
            ($r.body_length == $e.body_length, "body length"),
            ($r.signature == $e.signature, "signature"),
        ]
    };
}

/// Whether two copies of an envelope have each field: the shared ones around `specific`.
macro_rules! compare_fields {
    ($a:expr, $b:expr, [$($specific:expr),* $(,)?]) => {
        vec![
            ($a.message_id == $b.message_id, "message id"),
            ($a.request_id == $b.request_id, "request id"),
            $($specific,)*
            ($a.created_at_ms == $b.created_at_ms, "time"),
            ($a.body_sha256 == $b.body_sha256, "body digest"),
            ($a.body_length == $b.body_length, "body length"),
            ($a.signer_certificate == $b.signer_certificate && $a.signature == $b.signature, "signature"),
        ]
    };
}

impl Envelope for ex::RequestEnvelope {
    const KIND: &'static str = "request";
    const SIGNER: &'static str = "client";

    fn member(&self) -> Option<MemberId> {
        let client: ClientId = self.client.clone()?.into_domain("client").ok()?;
        Some(client.member().clone())
    }

    fn verify(&self, member: &MemberId, conf: &GlobalConf, at: SystemTime) -> Result<Fingerprint, String> {
        envelope::verify_request(self, member, conf, at).map_err(|r| r.message)
    }

    fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }

    fn record_fields(&self, r: &log_pb::LogRecord) -> Vec<(bool, &'static str)> {
        let mut fields = record_fields!(
            r,
            self,
            [
                (r.method == self.method, "method"),
                (r.path == path_and_query(&self.path, &self.query), "path"),
                (r.user_id == self.user_id, "user id"),
                (r.issue == self.issue, "issue"),
            ]
        );
        // The consumer node signs itself in; the provider logs it as its peer.
        match log_pb::Role::try_from(r.role) {
            Ok(log_pb::Role::Consumer) => fields.push((self.consumer_node == r.node, "consumer node")),
            Ok(log_pb::Role::Provider) => fields.push((self.consumer_node == r.peer_node, "peer node")),
            _ => {}
        }
        fields
    }

    fn compare(&self, b: &Self) -> Vec<(bool, &'static str)> {
        let a = self;
        compare_fields!(
            a,
            b,
            [
                (a.client == b.client, "client"),
                (a.service == b.service, "service"),
                (a.method == b.method, "method"),
                (a.path == b.path && a.query == b.query, "path"),
                (a.headers == b.headers, "headers"),
                (a.user_id == b.user_id && a.issue == b.issue, "user id or issue"),
                (a.consumer_node == b.consumer_node && a.target_node == b.target_node, "nodes"),
            ]
        )
    }

    fn agreement(&self) -> String {
        format!(
            "message id, request id, client, service, call, body digest ({}) and length ({} bytes) agree",
            hex::encode(&self.body_sha256),
            self.body_length
        )
    }

    fn keep(self, rec: &mut Rec) {
        rec.request = Some((self, rec.record.envelope.clone()));
    }
}

impl Envelope for ex::ResponseEnvelope {
    const KIND: &'static str = "response";
    const SIGNER: &'static str = "service";

    fn member(&self) -> Option<MemberId> {
        let service: ServiceId = self.service.clone()?.into_domain("service").ok()?;
        Some(service.subsystem.member)
    }

    fn verify(&self, member: &MemberId, conf: &GlobalConf, at: SystemTime) -> Result<Fingerprint, String> {
        envelope::verify_response(self, member, conf, at).map_err(|r| r.message)
    }

    fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }

    fn record_fields(&self, r: &log_pb::LogRecord) -> Vec<(bool, &'static str)> {
        let mut fields =
            record_fields!(r, self, [(r.status == self.status, "status"), (r.fault == self.fault, "fault")]);
        match log_pb::Role::try_from(r.role) {
            Ok(log_pb::Role::Provider) => fields.push((self.provider_node == r.node, "provider node")),
            Ok(log_pb::Role::Consumer) => fields.push((self.provider_node == r.peer_node, "peer node")),
            _ => {}
        }
        fields
    }

    fn compare(&self, b: &Self) -> Vec<(bool, &'static str)> {
        let a = self;
        compare_fields!(
            a,
            b,
            [
                (a.client == b.client && a.service == b.service, "client or service"),
                (a.request_hash == b.request_hash, "request hash"),
                (a.status == b.status && a.fault == b.fault, "status"),
                (a.headers == b.headers, "headers"),
                (a.provider_node == b.provider_node, "provider node"),
            ]
        )
    }

    fn agreement(&self) -> String {
        format!(
            "status {}, request hash, body digest ({}) and length ({} bytes) agree",
            self.status,
            hex::encode(&self.body_sha256),
            self.body_length
        )
    }

    fn keep(self, rec: &mut Rec) {
        rec.response = Some((self, rec.record.envelope.clone()));
    }
}

impl Verifier<'_> {
    /// The record's envelope is signed by the member it speaks for, with a certificate the
    /// configuration registers for that member, and the record says what the envelope says.
    pub(super) fn check_envelope(&mut self, subject: &str, rec: &mut Rec, conf: Option<&Conf>) {
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
        match log_pb::Direction::try_from(record.direction).unwrap_or(log_pb::Direction::Unspecified) {
            log_pb::Direction::Request => self.check_signed::<ex::RequestEnvelope>(subject, rec, conf),
            log_pb::Direction::Response => self.check_signed::<ex::ResponseEnvelope>(subject, rec, conf),
            log_pb::Direction::Unspecified => {
                self.fail(
                    subject,
                    check,
                    "the record's direction is not known, so its envelope cannot be read",
                );
            }
        }
    }

    /// The envelope of a request or response record: its signature, then its fields.
    fn check_signed<E: Envelope>(&mut self, subject: &str, rec: &mut Rec, conf: Option<&Conf>) {
        let check = "envelope signature";
        let Ok(env) = E::decode(rec.record.envelope.as_slice()) else {
            self.fail(subject, check, format!("its envelope does not decode as a {} envelope", E::KIND));
            return;
        };
        match (env.member(), conf) {
            (Some(member), Some(conf)) => {
                let at = from_millis(env.created_at_ms());
                let result = env.verify(&member, &conf.conf, at);
                self.signature_outcome(subject, member.to_string(), result, conf, at);
            }
            (_, None) => {
                self.skip(subject, check, "not checked: the node's global configuration does not verify")
            }
            (None, Some(_)) => {
                self.fail(subject, check, format!("the envelope names no valid {}", E::SIGNER))
            }
        }
        self.fields_outcome(subject, &differing(&env.record_fields(&rec.record)));
        env.keep(rec);
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
}
