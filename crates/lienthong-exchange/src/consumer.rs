//! The consumer node's side of an exchange, as steps: [`prepare`] a client's r1 call (nothing
//! of its body read yet), [`Prepared::seal`] it once the body's digests are known (the signed
//! envelope and its record), then [`Sealed::accept_response`] the provider node's envelope and
//! [`Accepted::finish`] once its body is read (the response's record and what to release).
//!
//! Each step is a pure function of its inputs and the time; the node moves the bytes, writes
//! the records and sends. A step that refuses returns a [`Refused`] that knows its fault and
//! carries what its record needs.

use core::net::IpAddr;
use std::collections::HashSet;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use lienthong_globalconf::{GlobalConf, to_millis};
use lienthong_pki::{Certificate, Fingerprint};
use lienthong_proto::convert::required;
use lienthong_proto::exchange::v1 as ex;
use lienthong_proto::msglog::v1 as log_pb;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{ClientId, Fault, NodeId, R1PathError, R1Target, ServiceId};

use crate::envelope::{self, ENVELOPE_HEADER, Signer};
use crate::headers::{self as xh, content_length, envelope_request_hash, forwarded_request_headers};
use crate::node::{Digests, Node};
use crate::record::{self, Role};
use crate::refusal::{Facts, Refused};
use crate::{Reject, access, conf, route};

/// Methods the r1 protocol allows.
const METHODS: [Method; 8] = [
    Method::DELETE,
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::PATCH,
    Method::POST,
    Method::PUT,
    Method::TRACE,
];

/// How a client proves itself, per subsystem (the node's configuration).
#[derive(Debug, Clone, Copy)]
pub enum ClientAuth<'a> {
    /// Anyone who can reach the listener.
    Open,
    /// Only from the node's own machine.
    Loopback,
    /// Only over HTTPS.
    Tls,
    /// Over HTTPS with one of these client certificates (`None`: none is registered).
    TlsCert(Option<&'a HashSet<Fingerprint>>),
}

/// What the shell knows of the connection a call came on.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    pub source: IpAddr,
    pub tls: bool,
    /// SHA-256 of the client certificate presented over TLS, if any.
    pub client_cert: Option<&'a Fingerprint>,
}

/// A client's r1 call: the request head and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub connection: Connection<'a>,
}

/// What [`prepare`] needs besides the call: what the prepared call keeps (`'a`) and the
/// node's policy, asked during the step only (`'c`).
pub struct Context<'c, 'a> {
    pub node: Node<'a>,
    /// The global configuration the node holds, if any (checked for freshness at `now`).
    pub conf: Option<&'a GlobalConf>,
    pub now: SystemTime,
    pub max_header_bytes: usize,
    /// How a client of each subsystem must authenticate.
    pub client_auth: &'c (dyn Fn(&ClientId) -> ClientAuth<'c> + Sync),
    /// Where to start among the provider's nodes (spreads the load); asked only for a call
    /// that gets that far.
    pub rotation: &'c (dyn Fn() -> usize + Sync),
}

impl std::fmt::Debug for Context<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("node", &self.node).field("now", &self.now).finish_non_exhaustive()
    }
}

/// What a node could refuse a call with before it knows anything of the exchange (a call that
/// is not an exchange, like `listClients`).
pub fn refused(reject: Reject, method: &Method, source: IpAddr) -> Refused {
    Refused::new(
        reject,
        Role::Consumer,
        Facts { method: method.as_str().to_owned(), source: Some(source), ..Facts::default() },
    )
}

/// A call checked and routed, before its body is read: what [`Prepared::seal`] signs.
#[derive(Debug)]
pub struct Prepared<'a> {
    node: Node<'a>,
    conf: &'a GlobalConf,
    env: ex::RequestEnvelope,
    service: ServiceId,
    signer: Signer<'a>,
    nodes: Vec<NodeId>,
    content_length: Option<u64>,
    facts: Facts,
}

/// Checks and routes a client's call: method, header size, target, client, configuration,
/// hosting, authentication, maintenance, the X-Road headers, the provider nodes, and that the
/// envelope could be carried once signed (before anything is read, signed or logged).
pub fn prepare<'a>(
    call: &Call<'_>,
    cx: &Context<'_, 'a>,
    new_id: &mut dyn FnMut() -> String,
) -> Result<Prepared<'a>, Refused> {
    let mut facts = Facts {
        method: call.method.as_str().to_owned(),
        source: Some(call.connection.source),
        ..Facts::default()
    };
    match checked(call, cx, new_id, &mut facts) {
        Ok(p) => Ok(p),
        Err(reject) => Err(Refused::new(reject, Role::Consumer, facts)),
    }
}

fn checked<'a>(
    call: &Call<'_>,
    cx: &Context<'_, 'a>,
    new_id: &mut dyn FnMut() -> String,
    facts: &mut Facts,
) -> Result<Prepared<'a>, Reject> {
    let headers = call.headers;
    if !METHODS.contains(call.method) {
        return Err(Reject::new(Fault::InvalidHttpMethod, format!("method {} is not allowed", call.method)));
    }
    let header_bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if header_bytes > cx.max_header_bytes {
        return Err(Reject::new(Fault::BadRequest, "the request headers are too large"));
    }
    // Conflicting Content-Length and Transfer-Encoding never get here: hyper refuses most forms
    // and reads the rest as chunked, closing the connection after (RFC 9112, 6.1).
    // Known early, so even a refusal of a malformed call can be found by the client's id.
    facts.message_id = text_header(headers, xh::X_ROAD_ID, 255).unwrap_or_default();
    let target = parse_target(call.uri)?;
    facts.service = Some(target.service.clone());
    facts.path.clone_from(&target.rest);
    let client: ClientId = match one_header(headers, xh::X_ROAD_CLIENT, Fault::InvalidClientIdentifier)? {
        None => {
            return Err(Reject::new(Fault::InvalidClientIdentifier, "the X-Road-Client header is missing"));
        }
        Some(v) => v
            .parse()
            .map_err(|e| Reject::new(Fault::InvalidClientIdentifier, format!("X-Road-Client: {e}")))?,
    };
    facts.client = Some(client.clone());
    let gc = conf::usable(cx.conf, cx.now, Fault::ClientGlobalConfOutdated)?;
    let own = cx.node.id;
    if gc.node(own).is_none() {
        // Not the client's fault: the registry no longer lists this node.
        return Err(Reject::new(
            Fault::ClientInternalError,
            "this node is not registered in the global configuration",
        ));
    }
    let not_hosted =
        || Reject::new(Fault::UnknownClient, format!("client {client} is not hosted on this node"));
    let Some((key, cert)) = cx.node.signing.get(client.member()) else { return Err(not_hosted()) };
    if !access::node_hosts_client(gc, own, &client) {
        return Err(not_hosted());
    }
    let registered = match &client {
        ClientId::Subsystem(s) => gc.has_subsystem(s),
        ClientId::Member(m) => gc.member(m).is_some(),
    };
    if !registered {
        return Err(Reject::new(Fault::UnknownClient, format!("client {client} is not registered")));
    }
    authenticate((cx.client_auth)(&client), &call.connection)?;
    facts.authenticated = true;
    if gc.node(own).is_some_and(|n| n.maintenance) {
        return Err(Reject::new(Fault::ClientMaintenanceMode, "this node is in maintenance"));
    }
    let pinned: Option<NodeId> =
        one_header(headers, xh::X_ROAD_SECURITY_SERVER, Fault::InvalidSecurityServer)?
            .map(|v| {
                v.parse().map_err(|e| {
                    Reject::new(Fault::InvalidSecurityServer, format!("X-Road-Security-Server: {e}"))
                })
            })
            .transpose()?;
    let represented: Option<ClientId> = one_header(headers, xh::X_ROAD_REPRESENTED_PARTY, Fault::BadRequest)?
        .map(|v| {
            v.parse().map_err(|e| Reject::new(Fault::BadRequest, format!("X-Road-Represented-Party: {e}")))
        })
        .transpose()?;
    let client_id_header = text_header(headers, xh::X_ROAD_ID, 255)?;
    let user_id = text_header(headers, xh::X_ROAD_USER_ID, 255)?;
    let issue = text_header(headers, xh::X_ROAD_ISSUE, 1024)?;
    facts.user_id.clone_from(&user_id);
    let message_id =
        if client_id_header.is_empty() { format!("{}-{}", gc.instance, new_id()) } else { client_id_header };
    facts.message_id.clone_from(&message_id);
    let nodes: Vec<NodeId> = route::provider_nodes(gc, &target.service, pinned.as_ref(), (cx.rotation)())?
        .into_iter()
        .map(|n| n.id.clone())
        .collect();
    let length = content_length(headers).map_err(|e| Reject::new(Fault::BadRequest, e.to_string()))?;
    let mut forwarded = forwarded_request_headers(headers);
    let request_id = new_id();
    facts.request_id.clone_from(&request_id);
    // The provider's backend sees the final exchange ids among the forwarded headers.
    forwarded.retain(|h| h.name != xh::X_ROAD_ID);
    forwarded.push(types_pb::Header { name: xh::X_ROAD_ID.into(), value: message_id.clone().into_bytes() });
    forwarded.push(types_pb::Header {
        name: xh::X_ROAD_REQUEST_ID.into(),
        value: request_id.clone().into_bytes(),
    });
    let env = ex::RequestEnvelope {
        message_id,
        request_id,
        client: Some((&client).into()),
        service: Some((&target.service).into()),
        method: call.method.as_str().to_owned(),
        path: target.rest,
        query: target.query.unwrap_or_default(),
        headers: forwarded,
        user_id,
        issue,
        represented_party: represented.as_ref().map(Into::into),
        target_node: pinned.as_ref().map(Into::into),
        consumer_node: Some(own.into()),
        // The largest values these take once the body is read: the size check below is an
        // upper bound.
        created_at_ms: i64::MAX,
        body_sha256: vec![0; 32],
        body_length: u64::MAX,
        ..Default::default()
    };
    // Before the body is read and anything is signed or logged: the provider node could not
    // accept a larger envelope.
    check_envelope_size(&env, cert)?;
    Ok(Prepared {
        node: cx.node,
        conf: gc,
        env,
        service: target.service,
        signer: Signer { key, certificate: cert },
        nodes,
        content_length: length,
        facts: std::mem::take(facts),
    })
}

fn one_header<'h>(headers: &'h HeaderMap, name: &str, fault: Fault) -> Result<Option<&'h str>, Reject> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Reject::new(fault, format!("header {name} is repeated")));
    }
    first.to_str().map(Some).map_err(|_| Reject::new(fault, format!("header {name} is not valid text")))
}

/// An X-Road-Id, X-Road-UserId or X-Road-Issue value: visible text, bounded.
fn text_header(headers: &HeaderMap, name: &str, max: usize) -> Result<String, Reject> {
    let v = one_header(headers, name, Fault::BadRequest)?.unwrap_or_default();
    if v.len() > max || v.chars().any(char::is_control) {
        return Err(Reject::new(
            Fault::BadRequest,
            format!("header {name} is too long or has control characters"),
        ));
    }
    Ok(v.to_owned())
}

fn parse_target(uri: &Uri) -> Result<R1Target, Reject> {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let target = R1Target::parse(pq).map_err(|e| match e {
        R1PathError::NotR1 | R1PathError::UnsupportedVersion(_) => {
            Reject::new(Fault::BadRequest, e.to_string())
        }
        R1PathError::TooFewSegments { .. } | R1PathError::Id(_) => {
            Reject::new(Fault::InvalidServiceIdentifier, e.to_string())
        }
    })?;
    // The provider refuses them too; the client's mistake gets a client error here.
    access::check_path(&target.rest)
        .map_err(|problem| Reject::new(Fault::BadRequest, problem.to_string()))?;
    Ok(target)
}

fn authenticate(rule: ClientAuth<'_>, conn: &Connection<'_>) -> Result<(), Reject> {
    let denied = |m: &str| Reject::new(Fault::ClientSslAuthenticationFailed, m);
    match rule {
        ClientAuth::Loopback if !conn.source.is_loopback() => {
            Err(denied("this client may only connect from the node's own machine"))
        }
        ClientAuth::Loopback | ClientAuth::Open => Ok(()),
        ClientAuth::Tls if !conn.tls => Err(denied("this client must connect over HTTPS")),
        ClientAuth::Tls => Ok(()),
        ClientAuth::TlsCert(allowed) => match (conn.client_cert, allowed) {
            (Some(fp), Some(set)) if conn.tls && set.contains(fp) => Ok(()),
            _ => Err(denied("this client must present its registered TLS certificate")),
        },
    }
}

/// Refuses a request whose signed envelope could exceed [`envelope::MAX_ENVELOPE_BYTES`] (the
/// most a provider node accepts), naming the largest of the parts the client controls.
fn check_envelope_size(env: &ex::RequestEnvelope, cert: &Certificate) -> Result<(), Reject> {
    let len = envelope::request_len_when_signed(env, cert);
    if len <= envelope::MAX_ENVELOPE_BYTES {
        return Ok(());
    }
    let headers: usize = env.headers.iter().map(|h| h.name.len() + h.value.len()).sum();
    let parts = [("query string", env.query.len()), ("path", env.path.len()), ("headers", headers)];
    let (part, size) = parts.into_iter().max_by_key(|(_, n)| *n).unwrap_or(("headers", headers));
    // What the client's parts may take together: the limit less everything else.
    let fixed = len.saturating_sub(env.query.len() + env.path.len() + headers);
    let room = envelope::MAX_ENVELOPE_BYTES.saturating_sub(fixed);
    Err(Reject::new(
        Fault::BadRequest,
        format!(
            "the request's {part} ({size} bytes) is too large to carry to the provider node: the path, \
             query string and headers together may have at most about {room} bytes"
        ),
    ))
}

impl<'a> Prepared<'a> {
    /// What is known of the exchange so far.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// The declared length of the client's body (a hint for reading it).
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// The exchange's ids: (message id, request id).
    pub fn ids(&self) -> (&str, &str) {
        (&self.env.message_id, &self.env.request_id)
    }

    /// What is known so far, for a refusal (the body could not be read).
    #[must_use]
    pub fn refuse(self, reject: Reject) -> Refused {
        Refused::new(reject, Role::Consumer, self.facts)
    }

    /// Completes the envelope with the body's digests and the time, and signs it: the envelope,
    /// its record (unless the protection keeps none) and the request hash the provider must
    /// report back.
    pub fn seal(self, body: &Digests, now: SystemTime) -> Result<Sealed<'a>, Refused> {
        let Prepared { node, conf, mut env, service, signer, nodes, facts, .. } = self;
        env.created_at_ms = to_millis(now);
        env.body_sha256 = body.sha256.to_vec();
        env.body_length = body.len;
        if node.protection.sign_request(&mut env, signer).is_err() {
            let reject = Reject::new(Fault::ClientInternalError, "the request could not be signed");
            return Err(Refused::new(reject, Role::Consumer, facts));
        }
        let record = node.protection.keeps_records().then(|| {
            let bytes = prost::Message::encode_to_vec(&env);
            record::request_record(&env, &bytes, Role::Consumer, node.id, None, now, None)
        });
        let expected_hash = envelope_request_hash(&env, &service, (body.len > 0).then_some(&body.sha512));
        Ok(Sealed {
            header: envelope::to_header(&env),
            node,
            conf,
            env,
            service,
            nodes,
            expected_hash,
            record,
            facts,
        })
    }
}

/// A signed request, ready to be logged and sent.
#[derive(Debug)]
pub struct Sealed<'a> {
    node: Node<'a>,
    conf: &'a GlobalConf,
    env: ex::RequestEnvelope,
    service: ServiceId,
    nodes: Vec<NodeId>,
    expected_hash: String,
    /// The envelope as the [`ENVELOPE_HEADER`] value.
    pub header: String,
    /// The request's record, for the shell to append before sending.
    pub record: Option<log_pb::LogRecord>,
    facts: Facts,
}

impl<'a> Sealed<'a> {
    /// What is known of the exchange so far.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// The provider nodes to try, in order.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// The request's record was appended: a refusal from now on is its response.
    pub fn logged(&mut self) {
        self.facts.request_logged = true;
    }

    /// What is known so far, for a refusal (the request could not be logged or sent).
    #[must_use]
    pub fn refuse(self, reject: Reject) -> Refused {
        Refused::new(reject, Role::Consumer, self.facts)
    }

    /// Checks the head of `peer`'s response: its envelope (a relayed refusal becomes one of
    /// ours, keeping the provider's fault), that it answers this request as it was received,
    /// from that node, signed by the provider member.
    pub fn accept_response(
        mut self,
        peer: &NodeId,
        head: &HeaderMap,
        now: SystemTime,
    ) -> Result<Accepted<'a>, Refused> {
        self.facts.peer = Some(peer.clone());
        match self.check_response(peer, head, now) {
            Ok((env, bytes)) => Ok(Accepted {
                node: self.node,
                request: self.env,
                service: self.service,
                peer: peer.clone(),
                env,
                bytes,
                content_length: content_length(head).ok().flatten(),
                facts: self.facts,
            }),
            Err((reject, relayed)) => {
                let mut refused = Refused::new(reject, Role::Consumer, self.facts);
                refused.relayed = relayed.map(Box::new);
                Err(refused)
            }
        }
    }

    fn check_response(&self, peer: &NodeId, head: &HeaderMap, now: SystemTime) -> Result<Decoded, Relayed> {
        let inconsistent = |m: &str| (Reject::new(Fault::InconsistentResponse, m), None);
        let (env, bytes): (ex::ResponseEnvelope, Vec<u8>) = envelope::from_header(
            head.get(ENVELOPE_HEADER).map(HeaderValue::as_bytes),
            Fault::InconsistentResponse,
        )
        .map_err(|r| (r, None))?;
        if let Some(fault) = &env.fault {
            // The provider node refused or failed; its record has the details under its detail id.
            let reject = Reject::new(
                Fault::from_code(&fault.code).unwrap_or(Fault::ServerInternalError),
                if fault.message.is_empty() {
                    "the provider node refused the request".into()
                } else {
                    fault.message.clone()
                },
            );
            return Err((reject, Some(fault.clone())));
        }
        let req = &self.env;
        if env.message_id != req.message_id
            || env.request_id != req.request_id
            || env.client != req.client
            || env.service != req.service
        {
            return Err(inconsistent("the response is for another request"));
        }
        if env.request_hash != self.expected_hash {
            return Err(inconsistent("the provider received a different request (request hash differs)"));
        }
        if env.provider_node.as_ref() != Some(&peer.into()) {
            return Err(inconsistent("the response names another provider node"));
        }
        self.node
            .protection
            .verify_response(&env, &self.service.subsystem.member, self.conf, now)
            .map_err(|r| (r, None))?;
        Ok((env, bytes))
    }
}

/// A response envelope and its exact bytes.
type Decoded = (ex::ResponseEnvelope, Vec<u8>);
/// A refusal, with the provider node's own fault when it relayed one.
type Relayed = (Reject, Option<types_pb::Fault>);

/// A response whose head was verified; its body is still to be read.
#[derive(Debug)]
pub struct Accepted<'a> {
    node: Node<'a>,
    request: ex::RequestEnvelope,
    service: ServiceId,
    peer: NodeId,
    env: ex::ResponseEnvelope,
    bytes: Vec<u8>,
    content_length: Option<u64>,
    facts: Facts,
}

/// A verified response, to be logged and released.
#[derive(Debug)]
pub struct Release {
    pub status: StatusCode,
    /// The headers to release: the backend's that may travel, and the X-Road ids.
    pub headers: HeaderMap,
    /// The response's record, for the shell to append before releasing.
    pub record: Option<log_pb::LogRecord>,
    facts: Facts,
}

impl Release {
    /// What is known of the exchange so far.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// What is known, for a refusal (the response could not be logged).
    #[must_use]
    pub fn refuse(self, reject: Reject) -> Refused {
        Refused::new(reject, Role::Consumer, self.facts)
    }
}

impl Accepted<'_> {
    /// What is known of the exchange so far.
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    /// The declared length of the response body (a hint for reading it).
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }

    /// What is known so far, for a refusal (the body could not be read).
    #[must_use]
    pub fn refuse(self, reject: Reject) -> Refused {
        Refused::new(reject, Role::Consumer, self.facts)
    }

    /// Checks the body that arrived against the signed one; the response's record and the
    /// status and headers to release.
    pub fn finish(self, body: &Digests, now: SystemTime) -> Result<Release, Refused> {
        let Accepted { node, request, service, peer, env, bytes, facts, .. } = self;
        if let Err(reject) = envelope::check_body(
            &env.body_sha256,
            env.body_length,
            &body.sha256,
            body.len,
            Fault::ClientInvalidSignatureValue,
        ) {
            return Err(Refused::new(reject, Role::Consumer, facts));
        }
        let record = node.protection.keeps_records().then(|| {
            record::response_record(&request, &env, &bytes, Role::Consumer, node.id, Some(&peer), now)
        });
        let status = u16::try_from(env.status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::BAD_GATEWAY);
        // Filtered again here: the provider node filters, but this node answers for what it releases.
        let mut h = xh::to_header_map(&xh::forwarded_response_headers(&xh::to_header_map(&env.headers)));
        let set = |h: &mut HeaderMap, name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        };
        set(&mut h, xh::X_ROAD_ID, &env.message_id);
        set(&mut h, xh::X_ROAD_REQUEST_ID, &env.request_id);
        set(&mut h, xh::X_ROAD_REQUEST_HASH, &env.request_hash);
        let client: Option<ClientId> = required(request.client.clone(), "client").ok();
        if let Some(c) = client {
            set(&mut h, xh::X_ROAD_CLIENT, &c.to_string());
        }
        set(&mut h, xh::X_ROAD_SERVICE, &service.to_string());
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len));
        Ok(Release { status, headers: h, record, facts })
    }
}
