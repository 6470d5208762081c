//! The provider node's side of an exchange, as steps: [`admit`] a peer's request envelope
//! (decoding, configuration, maintenance, then the admission of [`access::admit_with`]), then,
//! once the shell has checked replays and read the body, [`Admission::received`] (the body
//! against the signature, the request's record and hash), then [`Received::answer`] with what
//! the service or a metaservice returned (the signed response and its record), or [`refusal`]
//! for any step that refused (the fault envelope; its record is [`Refused::record`]).
//!
//! Pure functions of their inputs and the time, like [`crate::consumer`].

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use lienthong_globalconf::{GlobalConf, to_millis};
use lienthong_proto::convert::required;
use lienthong_proto::exchange::v1 as ex;
use lienthong_proto::msglog::v1 as log_pb;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{ClientId, Fault, NodeId, ServiceId};

use crate::access::{self, Admitted};
use crate::envelope::{self, ENVELOPE_HEADER, Signer};
use crate::headers::envelope_request_hash;
use crate::node::{Digests, Node};
use crate::record::{self, Role};
use crate::refusal::{Facts, Refused, Verdict};
use crate::{Reject, conf, error_body, meta};

/// What [`admit`] needs besides the request head.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub node: Node<'a>,
    pub conf: Option<&'a GlobalConf>,
    pub now: SystemTime,
    pub max_skew: Duration,
}

/// A request admitted: its sender, client, service and grant are known and its signature holds.
#[derive(Debug)]
pub struct Admission<'a> {
    node: Node<'a>,
    conf: &'a GlobalConf,
    peer: NodeId,
    env: ex::RequestEnvelope,
    bytes: Vec<u8>,
    admitted: Admitted,
    content_length: Option<u64>,
    facts: Facts,
}

fn facts_of(env: &ex::RequestEnvelope, peer: &NodeId) -> Facts {
    let client: Option<ClientId> = required(env.client.clone(), "client").ok();
    let service: Option<ServiceId> = required(env.service.clone(), "service").ok();
    Facts {
        message_id: env.message_id.clone(),
        request_id: env.request_id.clone(),
        client,
        service,
        method: env.method.clone(),
        path: env.path.clone(),
        user_id: env.user_id.clone(),
        peer: Some(peer.clone()),
        message_time_ms: Some(env.created_at_ms),
        source: None,
        // The peer node is proven by pinned mTLS before any request reaches this step.
        authenticated: true,
        request_logged: false,
    }
}

/// Admits a request that `peer` (the node proven by mTLS) sent with `head`: the envelope is
/// decoded, the configuration must be usable and this node not in maintenance, then
/// [`access::admit_with`] decides in its fixed order.
pub fn admit<'a>(head: &HeaderMap, peer: &NodeId, cx: &Context<'a>) -> Result<Admission<'a>, Refused> {
    let decoded: Result<(ex::RequestEnvelope, Vec<u8>), Reject> =
        envelope::from_header(head.get(ENVELOPE_HEADER).map(HeaderValue::as_bytes), Fault::InvalidMessage);
    let (env, bytes) = match decoded {
        Ok(d) => d,
        Err(reject) => {
            let facts = Facts {
                peer: Some(peer.clone()),
                authenticated: true,
                message_time_ms: Some(0),
                ..Facts::default()
            };
            return Err(Refused::new(reject, Role::Provider, facts));
        }
    };
    let facts = facts_of(&env, peer);
    let checked = conf::usable(cx.conf, cx.now, Fault::ServerGlobalConfOutdated).and_then(|gc| {
        if gc.node(cx.node.id).is_some_and(|n| n.maintenance) {
            return Err(Reject::new(Fault::ServerMaintenanceMode, "this node is in maintenance"));
        }
        let admitted =
            access::admit_with(gc, cx.node.id, peer, &env, cx.now, cx.max_skew, cx.node.protection)?;
        Ok((gc, admitted))
    });
    match checked {
        Ok((conf, admitted)) => Ok(Admission {
            node: cx.node,
            conf,
            peer: peer.clone(),
            env,
            bytes,
            admitted,
            content_length: crate::headers::content_length(head).ok().flatten(),
            facts,
        }),
        Err(reject) => Err(Refused::new(reject, Role::Provider, facts)),
    }
}

impl<'a> Admission<'a> {
    /// What is known of the exchange so far.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    pub fn envelope(&self) -> &ex::RequestEnvelope {
        &self.env
    }

    pub fn admitted(&self) -> &Admitted {
        &self.admitted
    }

    /// The declared length of the body (a hint for reading it).
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// Whether the request was made before `started_at_ms`, when this node's replay memory
    /// began: only then must the log say whether it was already received.
    pub fn predates(&self, started_at_ms: i64) -> bool {
        self.env.created_at_ms < started_at_ms
    }

    /// The refusal of a request already received (the shell's replay memory or log said so).
    #[must_use]
    pub fn replayed(self) -> Refused {
        self.refuse(Reject::new(Fault::ReplayedMessage, "this request was already received"))
    }

    #[must_use]
    pub fn refuse(self, reject: Reject) -> Refused {
        Refused::new(reject, Role::Provider, self.facts)
    }

    /// Checks the body that arrived against the signed one: the request's record (with the
    /// grant that allowed it) and what the service is to be called with.
    pub fn received(self, body: &Digests, now: SystemTime) -> Result<Received<'a>, Refused> {
        let env = &self.env;
        if let Err(reject) = envelope::check_body(
            &env.body_sha256,
            env.body_length,
            &body.sha256,
            body.len,
            Fault::ServerInvalidSignatureValue,
        ) {
            return Err(self.refuse(reject));
        }
        let record = self.node.protection.keeps_records().then(|| {
            record::request_record(
                env,
                &self.bytes,
                Role::Provider,
                self.node.id,
                Some(&self.peer),
                now,
                self.admitted.grant_id.as_deref(),
            )
        });
        let request_hash =
            envelope_request_hash(env, &self.admitted.service, (body.len > 0).then_some(&body.sha512));
        let Admission { node, conf, peer, env, admitted, facts, .. } = self;
        Ok(Received { node, conf, peer, env, admitted, request_hash, record, facts })
    }
}

/// A request whose body matched its signature, to be logged and served.
#[derive(Debug)]
pub struct Received<'a> {
    node: Node<'a>,
    conf: &'a GlobalConf,
    peer: NodeId,
    env: ex::RequestEnvelope,
    admitted: Admitted,
    request_hash: String,
    /// The request's record, for the shell to append before the service is called.
    pub record: Option<log_pb::LogRecord>,
    facts: Facts,
}

/// What the service (or a metaservice) answered.
#[derive(Debug, Clone)]
pub struct Served {
    pub status: u16,
    /// The response headers that travel (see [`crate::headers::forwarded_response_headers`]).
    pub headers: Vec<types_pb::Header>,
}

/// The metaservice answer: status, headers and body.
#[derive(Debug, Clone)]
pub struct MetaAnswer {
    pub served: Served,
    pub body: Vec<u8>,
}

fn json(body: Vec<u8>) -> MetaAnswer {
    let headers = vec![types_pb::Header { name: "content-type".into(), value: b"application/json".to_vec() }];
    MetaAnswer { served: Served { status: 200, headers }, body }
}

impl<'a> Received<'a> {
    /// What is known of the exchange so far.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    pub fn envelope(&self) -> &ex::RequestEnvelope {
        &self.env
    }

    pub fn admitted(&self) -> &Admitted {
        &self.admitted
    }

    /// The request's record was appended: a refusal from now on is its response.
    pub fn logged(&mut self) {
        self.facts.request_logged = true;
    }

    /// Whether the node answers itself ([`Received::metaservice`]) rather than a backend.
    pub fn is_metaservice(&self) -> bool {
        meta::is_metaservice(self.admitted.service.code.as_str())
    }

    #[must_use]
    pub fn refuse(self, reject: Reject) -> Refused {
        Refused::new(reject, Role::Provider, self.facts)
    }

    /// A metaservice's answer (`listMethods`, `allowedMethods`, `getOpenAPI`); `openapi` gives
    /// the OpenAPI description this node holds for a service.
    pub fn metaservice(
        &self,
        now: SystemTime,
        openapi: &dyn Fn(&ServiceId) -> Option<Vec<u8>>,
    ) -> Result<MetaAnswer, Reject> {
        let (env, admitted, gc) = (&self.env, &self.admitted, self.conf);
        if env.method != "GET" {
            return Err(Reject::new(Fault::InvalidMessage, "metaservices take GET"));
        }
        let subsystem = &admitted.service.subsystem;
        match admitted.service.code.as_str() {
            meta::LIST_METHODS => Ok(json(meta::list_methods(gc, subsystem, None))),
            meta::ALLOWED_METHODS => {
                Ok(json(meta::list_methods(gc, subsystem, Some((&admitted.client, now)))))
            }
            _ => {
                let code = meta::requested_service_code(&env.query)
                    .ok_or_else(|| Reject::new(Fault::InvalidMessage, "getOpenAPI needs ?serviceCode="))?;
                let id: ServiceId = format!("{subsystem}/{code}").parse().map_err(|_| {
                    Reject::new(Fault::InvalidMessage, "serviceCode is not a valid service code")
                })?;
                let doc = openapi(&id).filter(|_| gc.service(&id).is_some()).ok_or_else(|| {
                    Reject::new(
                        Fault::ServerUnknownService,
                        format!("service {id} has no OpenAPI description"),
                    )
                })?;
                let mut answer = json(meta::public_openapi(&doc));
                if doc.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                    answer.served.headers = vec![types_pb::Header {
                        name: "content-type".into(),
                        value: b"application/yaml".to_vec(),
                    }];
                }
                Ok(answer)
            }
        }
    }

    /// The signed response for what was served (`body` read to its end): its envelope and
    /// record. Refused, before anything is signed or logged, when its envelope could not reach
    /// the consumer node.
    pub fn answer(self, served: Served, body: &Digests, now: SystemTime) -> Result<Answer, Refused> {
        let own = self.node.id;
        let mut resp = ex::ResponseEnvelope {
            message_id: self.env.message_id.clone(),
            request_id: self.env.request_id.clone(),
            client: self.env.client.clone(),
            service: self.env.service.clone(),
            request_hash: self.request_hash.clone(),
            status: u32::from(served.status),
            headers: served.headers,
            provider_node: Some(own.into()),
            created_at_ms: to_millis(now),
            body_sha256: body.sha256.to_vec(),
            body_length: body.len,
            ..Default::default()
        };
        let signing = self.node.signing.get(&self.admitted.service.subsystem.member);
        if let Err(reject) = check_response_size(&resp, signing.map(|(_, cert)| cert)) {
            return Err(self.refuse(reject));
        }
        let Some((key, cert)) = signing else {
            return Err(self.refuse(Reject::new(
                Fault::ServerInternalError,
                "this node holds no signing key for the provider",
            )));
        };
        let protection = self.node.protection;
        if protection.sign_response(&mut resp, Signer { key, certificate: cert }).is_err() {
            return Err(
                self.refuse(Reject::new(Fault::ServerInternalError, "the response could not be signed"))
            );
        }
        let record = protection.keeps_records().then(|| {
            let bytes = prost::Message::encode_to_vec(&resp);
            record::response_record(&self.env, &resp, &bytes, Role::Provider, own, Some(&self.peer), now)
        });
        Ok(Answer { header: envelope::to_header(&resp), record, facts: self.facts })
    }
}

/// The signed response, to be logged and sent.
#[derive(Debug)]
pub struct Answer {
    /// The envelope as the [`ENVELOPE_HEADER`] value.
    pub header: String,
    /// The response's record, for the shell to append before answering.
    pub record: Option<log_pb::LogRecord>,
    facts: Facts,
}

impl Answer {
    /// What is known of the exchange so far.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// What is known, for a refusal (the response could not be logged).
    #[must_use]
    pub fn refuse(self, reject: Reject) -> Refused {
        Refused::new(reject, Role::Provider, self.facts)
    }
}

/// Refuses, before it is signed or logged, a response whose envelope could exceed what the
/// consumer node accepts ([`envelope::MAX_ENVELOPE_BYTES`]): the backend's headers are the only
/// part of it that can grow, so they are what is named.
fn check_response_size(
    resp: &ex::ResponseEnvelope,
    cert: Option<&lienthong_pki::Certificate>,
) -> Result<(), Reject> {
    let len = match cert {
        Some(cert) => envelope::response_len_when_signed(resp, cert),
        None => prost::Message::encoded_len(resp),
    };
    if len <= envelope::MAX_ENVELOPE_BYTES {
        return Ok(());
    }
    let headers: usize = resp.headers.iter().map(|h| h.name.len() + h.value.len()).sum();
    Err(Reject::new(
        Fault::ServiceFailed,
        format!(
            "the service's response headers ({} headers, {headers} bytes) are too large to carry to the \
             consumer node",
            resp.headers.len()
        ),
    ))
}

/// The fault envelope that answers a refusal (`verdict` as [`Refused::verdict`] gave it, after
/// the record was written), signed when this node holds the provider's key (the consumer does
/// not require it: the channel is pinned mTLS).
pub fn refusal(refused: &Refused, verdict: &Verdict, node: Node<'_>, now: SystemTime) -> String {
    let f = &refused.facts;
    let fault = error_body::to_pb(&refused.reject, &verdict.detail);
    let mut resp = ex::ResponseEnvelope {
        message_id: f.message_id.clone(),
        request_id: f.request_id.clone(),
        client: f.client.as_ref().map(Into::into),
        service: f.service.as_ref().map(Into::into),
        status: u32::from(refused.reject.fault.http_status()),
        fault: Some(fault),
        provider_node: Some(node.id.into()),
        created_at_ms: to_millis(now),
        // A fault carries an empty body.
        body_sha256: sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new()).to_vec(),
        ..Default::default()
    };
    let signing = f.service.as_ref().and_then(|s| node.signing.get(&s.subsystem.member));
    if let Some((key, cert)) = signing {
        // Best effort: an unsigned fault still answers.
        let _signed = node.protection.sign_response(&mut resp, Signer { key, certificate: cert });
    }
    envelope::to_header(&resp)
}
