//! Across records and sides, per exchange: both sides logged the same signed messages, the
//! response answers the request, and the nodes name each other.

use std::collections::{BTreeMap, BTreeSet};

use lienthong_exchange::headers::envelope_request_hash;
use lienthong_proto::convert::IntoDomain;
use lienthong_proto::exchange::v1 as ex;
use lienthong_proto::msglog::v1 as log_pb;
use lienthong_types::ServiceId;
use sha2::{Digest, Sha256, Sha512};

use super::envelopes::{Envelope, differing};

use super::{Rec, Verifier, direction_name, id_text, path_and_query, role_name};
use crate::bundle::build::ExchangeRef;
use crate::bundle::report::ExchangeSummary;

impl Verifier<'_> {
    /// Across records and sides, per exchange: both sides logged the same signed messages and
    /// name each other.
    pub(super) fn check_exchanges(&mut self, wanted: &[ExchangeRef], records: &[Rec]) {
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
        self.check_same_on_every_side(&subject, &requests);
        self.check_same_on_every_side(&subject, &responses);
        // 2. The response answers this request.
        if let (Some((rq, req, _)), Some((rs, resp, _))) = (requests.first(), responses.first()) {
            let differ = differing(&[
                (req.message_id == resp.message_id, "message id"),
                (req.request_id == resp.request_id, "request id"),
                (req.client == resp.client, "client"),
                (req.service == resp.service, "service"),
            ]);
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

    /// Every side that logged the exchange's signed request (or response) logged the same bytes.
    fn check_same_on_every_side<E: Envelope>(&mut self, subject: &str, signed: &[(&Rec, &E, &[u8])]) {
        let Some(((first, env, bytes), rest)) = signed.split_first() else { return };
        let mut same = true;
        for (other, other_env, other_bytes) in rest {
            if bytes != other_bytes {
                same = false;
                self.fail(
                    subject,
                    "consistency",
                    format!(
                        "{} and {} hold different signed {}s ({} differ)",
                        first.label(),
                        other.label(),
                        E::KIND,
                        differences(*env, *other_env)
                    ),
                );
            }
        }
        if same && !rest.is_empty() {
            self.pass(
                subject,
                "consistency",
                format!("both sides logged the same signed {}: {}", E::KIND, env.agreement()),
            );
        }
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
        // The same function both nodes hash with, so a verifier cannot drift from the protocol.
        let expected = envelope_request_hash(req, &service, body.as_ref());
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

/// What differs between two copies of an envelope, for a report.
fn differences<E: Envelope>(a: &E, b: &E) -> String {
    let names = differing(&a.compare(b));
    if names.is_empty() { "their encodings".into() } else { names.join(", ") }
}
