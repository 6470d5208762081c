//! The consumer side: X-Road REST `r1` from local information systems, exactly as X-Road clients
//! speak it, turned into signed, logged exchanges with a provider node.
//!
//! Order of work for one call: parse and check the request (nothing is read from the body
//! yet), read the body (spooled above the memory threshold, hashed on the way), sign, log the
//! request durably, send to a provider node (failing over while nothing was delivered), read and
//! verify the response, log it durably, and only then release it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use lienthong_exchange::envelope::{self, ENVELOPE_HEADER, Signer};
use lienthong_exchange::headers::{self as xh, forwarded_request_headers, request_hash};
use lienthong_exchange::record::{self, Direction, Refusal, Role};
use lienthong_exchange::{EXCHANGE_PATH, Reject, access, error_body, meta, route};
use lienthong_globalconf::{GlobalConf, to_millis};
use lienthong_pki::Fingerprint;
use lienthong_proto::convert::required;
use lienthong_proto::exchange::v1 as ex;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{ClientId, Fault, NodeId, R1PathError, R1Target};

use crate::body::{BodyError, SpooledBody, spool};
use crate::config::ClientAuth;
use crate::exchange_log::Side;
use crate::peer::PeerError;
use crate::refusal_limit::Kind;
use crate::state::{Body, NodeState, error_response, full, new_detail};

/// Who is on the other end of a consumer-side connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub remote: SocketAddr,
    pub tls: bool,
    /// SHA-256 of the client certificate presented over TLS, if any.
    pub client_cert: Option<Fingerprint>,
}

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

/// What the handler knows of a call so far, for the record of a refusal.
#[derive(Debug, Default)]
struct Known {
    method: String,
    /// Where the call came from (the limit on unauthenticated refusals counts by it).
    source: Option<IpAddr>,
    message_id: String,
    request_id: String,
    client: Option<ClientId>,
    target: Option<R1Target>,
    user_id: String,
    peer: Option<NodeId>,
    logged_request: bool,
    /// The client passed its authentication: from here on, refusals are of an identified
    /// party's exchange and each keeps its own record (see [`crate::refusal_limit`]).
    authenticated: bool,
}

/// Handles one request on a consumer-side listener.
pub(crate) async fn handle(state: Arc<NodeState>, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
    let path = req.uri().path();
    if path == "/healthz" || path == "/readyz" {
        return crate::health::respond(&state, path == "/readyz").await;
    }
    if path.starts_with(crate::audit_api::PREFIX) {
        return crate::audit_api::handle(state, req, conn).await;
    }
    let accept = req.headers().get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut known = Known {
        method: req.method().as_str().to_owned(),
        source: Some(conn.remote.ip()),
        ..Known::default()
    };
    let result = if path == "/listClients" {
        list_clients(&state, &req).map_err(plain)
    } else {
        exchange(&state, req, &conn, &mut known).await
    };
    match result {
        Ok(resp) => resp,
        Err((reject, relayed)) => {
            // Made only for a refusal: a UUID costs a getrandom call.
            let detail = new_detail();
            refuse(&state, &reject, relayed.as_ref(), &detail, &known, accept.as_deref()).await
        }
    }
}

/// Logs a refusal (every answer has a record) and renders it. `relayed` is the provider node's
/// fault when it refused: its code and detail are kept, so one id finds the records of both
/// nodes. A refusal before the client was authenticated gets a record of its own only within
/// the refusal limit; beyond it, its source's summary counts it (the answer is the same).
async fn refuse(
    state: &NodeState,
    reject: &Reject,
    relayed: Option<&types_pb::Fault>,
    detail: &str,
    known: &Known,
    accept: Option<&str>,
) -> Response<Body> {
    let source = known.source.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let method = known.method.as_str();
    let (code, status, detail) = match relayed {
        None => (reject.fault.code(), reject.fault.http_status(), detail),
        Some(f) => {
            // A peer's text: used only if it is a UUID like ours.
            let uuid = f.detail.len() == 36 && f.detail.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
            let detail = if uuid { f.detail.as_str() } else { detail };
            (f.code.clone(), error_body::status_for_code(&f.code), detail)
        }
    };
    tracing::info!(%code, %detail, message = %reject.message, "consumer refused an exchange");
    // Transport-only mode (benchmarks) writes no records, refusals included.
    if state.transport_only {
        return error_response(&code, status, &reject.message, detail, accept);
    }
    if !known.authenticated && !state.admit_refusal(Kind::Client, source, &code) {
        return error_response(&code, status, &reject.message, detail, accept);
    }
    let fault =
        types_pb::Fault { code: code.clone(), message: reject.message.clone(), detail: detail.to_owned() };
    let path = known.target.as_ref().map(|t| t.rest.clone()).unwrap_or_default();
    let refusal = Refusal {
        message_id: &known.message_id,
        request_id: &known.request_id,
        direction: Some(if known.logged_request { Direction::Response } else { Direction::Request }),
        client: known.client.as_ref(),
        service: known.target.as_ref().map(|t| &t.service),
        method,
        path: &path,
        user_id: &known.user_id,
        peer: known.peer.as_ref(),
        message_time_ms: to_millis(state.now()),
    };
    let mut rec =
        record::refusal_record(&refusal, fault, status, Role::Consumer, &state.keys.node, state.now());
    if !known.authenticated {
        rec.source_address = source.to_string();
    }
    let subsystem = known.client.as_ref().and_then(ClientId::subsystem);
    if let Err(failed) = state.log.append(rec, None, subsystem, Side::Consumer).await {
        return error_response(
            &failed.fault.code(),
            failed.fault.http_status(),
            &failed.message,
            detail,
            accept,
        );
    }
    error_response(&code, status, &reject.message, detail, accept)
}

fn list_clients(state: &NodeState, req: &Request<Incoming>) -> Result<Response<Body>, Reject> {
    if req.method() != Method::GET {
        return Err(Reject::new(Fault::InvalidHttpMethod, "listClients takes GET"));
    }
    let conf = state.usable_conf(Fault::ClientGlobalConfOutdated)?;
    let own = conf.conf.instance.as_str();
    let wanted = meta::requested_instance(req.uri().query()).unwrap_or(own);
    // The node's own instance, or a federation partner whose configuration it holds.
    let known = wanted == own || conf.conf.members.keys().any(|m| m.instance.as_str() == wanted);
    if !known {
        return Err(Reject::new(
            Fault::ClientUnknownMember,
            format!("instance {wanted:?} is not known to this node"),
        ));
    }
    let mut resp = Response::new(full(meta::list_clients(&conf.conf, wanted)));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

fn one_header<'a>(headers: &'a HeaderMap, name: &str, fault: Fault) -> Result<Option<&'a str>, Reject> {
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

fn parse_target(req: &Request<Incoming>) -> Result<R1Target, Reject> {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    R1Target::parse(pq)
        .map_err(|e| match e {
            R1PathError::NotR1 | R1PathError::UnsupportedVersion(_) => {
                Reject::new(Fault::BadRequest, e.to_string())
            }
            R1PathError::TooFewSegments { .. } | R1PathError::Id(_) => {
                Reject::new(Fault::InvalidServiceIdentifier, e.to_string())
            }
        })
        .and_then(|t| {
            // The provider refuses them too; the client's mistake gets a client error here.
            access::check_path(&t.rest)
                .map_err(|problem| Reject::new(Fault::BadRequest, problem.to_string()))?;
            Ok(t)
        })
}

fn authenticate(state: &NodeState, client: &ClientId, conn: &ConnInfo) -> Result<(), Reject> {
    let denied = |m: &str| Reject::new(Fault::ClientSslAuthenticationFailed, m);
    let settings = client.subsystem().and_then(|s| state.config.client(s));
    match settings.map(|c| c.auth).unwrap_or_default() {
        ClientAuth::Loopback if !conn.remote.ip().is_loopback() => {
            Err(denied("this client may only connect from the node's own machine"))
        }
        ClientAuth::Loopback | ClientAuth::None => Ok(()),
        ClientAuth::Tls if !conn.tls => Err(denied("this client must connect over HTTPS")),
        ClientAuth::Tls => Ok(()),
        ClientAuth::TlsCert => {
            let allowed = client.subsystem().and_then(|s| state.client_certs.get(s));
            match (&conn.client_cert, allowed) {
                (Some(fp), Some(set)) if conn.tls && set.contains(fp) => Ok(()),
                _ => Err(denied("this client must present its registered TLS certificate")),
            }
        }
    }
}

fn body_reject(e: &BodyError) -> Reject {
    match e {
        BodyError::TooLarge { .. } => Reject::new(Fault::RequestTooLarge, e.to_string()),
        BodyError::Io(_) => Reject::new(Fault::ClientInternalError, "the request body could not be stored"),
        _ => Reject::new(Fault::BadRequest, e.to_string()),
    }
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Reject> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else { return Ok(None) };
    let bad = || Reject::new(Fault::BadRequest, "Content-Length is malformed or repeated");
    if values.next().is_some() {
        return Err(bad());
    }
    first.to_str().ok().and_then(|s| s.parse().ok()).map(Some).ok_or_else(bad)
}

/// A refusal, with the provider node's own fault when it was relayed.
type Failure = (Reject, Option<types_pb::Fault>);

fn plain(r: Reject) -> Failure {
    (r, None)
}

async fn exchange(
    state: &NodeState,
    req: Request<Incoming>,
    conn: &ConnInfo,
    known: &mut Known,
) -> Result<Response<Body>, Failure> {
    if !METHODS.contains(req.method()) {
        return Err(plain(Reject::new(
            Fault::InvalidHttpMethod,
            format!("method {} is not allowed", req.method()),
        )));
    }
    let header_bytes: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if header_bytes > state.config.limits.max_header_bytes {
        return Err(plain(Reject::new(Fault::BadRequest, "the request headers are too large")));
    }
    // Conflicting Content-Length and Transfer-Encoding never get here: hyper refuses most forms
    // and reads the rest as chunked, closing the connection after (RFC 9112, 6.1).
    // Known early, so even a refusal of a malformed call can be found by the client's id.
    known.message_id = text_header(req.headers(), xh::X_ROAD_ID, 255).unwrap_or_default();
    let target = parse_target(&req).map_err(plain)?;
    known.target = Some(target.clone());
    let client: ClientId =
        match one_header(req.headers(), xh::X_ROAD_CLIENT, Fault::InvalidClientIdentifier).map_err(plain)? {
            None => {
                return Err(plain(Reject::new(
                    Fault::InvalidClientIdentifier,
                    "the X-Road-Client header is missing",
                )));
            }
            Some(v) => v.parse().map_err(|e| {
                plain(Reject::new(Fault::InvalidClientIdentifier, format!("X-Road-Client: {e}")))
            })?,
        };
    known.client = Some(client.clone());
    let conf = state.usable_conf(Fault::ClientGlobalConfOutdated).map_err(plain)?;
    let gc: &GlobalConf = &conf.conf;
    let own = &state.keys.node;
    if gc.node(own).is_none() {
        // Not the client's fault: the registry no longer lists this node.
        return Err(plain(Reject::new(
            Fault::ClientInternalError,
            "this node is not registered in the global configuration",
        )));
    }
    let Some((key, cert)) = state.keys.signing.get(client.member()) else {
        return Err(plain(Reject::new(
            Fault::UnknownClient,
            format!("client {client} is not hosted on this node"),
        )));
    };
    if !access::node_hosts_client(gc, own, &client) {
        return Err(plain(Reject::new(
            Fault::UnknownClient,
            format!("client {client} is not hosted on this node"),
        )));
    }
    let registered = match &client {
        ClientId::Subsystem(s) => gc.has_subsystem(s),
        ClientId::Member(m) => gc.member(m).is_some(),
    };
    if !registered {
        return Err(plain(Reject::new(Fault::UnknownClient, format!("client {client} is not registered"))));
    }
    authenticate(state, &client, conn).map_err(plain)?;
    known.authenticated = true;
    if gc.node(own).is_some_and(|n| n.maintenance) {
        return Err(plain(Reject::new(Fault::ClientMaintenanceMode, "this node is in maintenance")));
    }
    let pinned: Option<NodeId> =
        one_header(req.headers(), xh::X_ROAD_SECURITY_SERVER, Fault::InvalidSecurityServer)
            .map_err(plain)?
            .map(|v| {
                v.parse().map_err(|e| {
                    Reject::new(Fault::InvalidSecurityServer, format!("X-Road-Security-Server: {e}"))
                })
            })
            .transpose()
            .map_err(plain)?;
    let represented: Option<ClientId> =
        one_header(req.headers(), xh::X_ROAD_REPRESENTED_PARTY, Fault::BadRequest)
            .map_err(plain)?
            .map(|v| {
                v.parse()
                    .map_err(|e| Reject::new(Fault::BadRequest, format!("X-Road-Represented-Party: {e}")))
            })
            .transpose()
            .map_err(plain)?;
    let client_id_header = text_header(req.headers(), xh::X_ROAD_ID, 255).map_err(plain)?;
    let user_id = text_header(req.headers(), xh::X_ROAD_USER_ID, 255).map_err(plain)?;
    let issue = text_header(req.headers(), xh::X_ROAD_ISSUE, 1024).map_err(plain)?;
    known.user_id = user_id.clone();
    let message_id = if client_id_header.is_empty() {
        format!("{}-{}", gc.instance, uuid::Uuid::new_v4())
    } else {
        client_id_header
    };
    known.message_id = message_id.clone();
    let nodes: Vec<NodeId> = route::provider_nodes(gc, &target.service, pinned.as_ref(), state.rotation())
        .map_err(plain)?
        .into_iter()
        .map(|n| n.id.clone())
        .collect();

    let length = content_length(req.headers()).map_err(plain)?;
    let method = req.method().clone();
    let mut headers = forwarded_request_headers(req.headers());
    let request_id = uuid::Uuid::new_v4().to_string();
    known.request_id = request_id.clone();
    // The provider's backend sees the final exchange ids among the forwarded headers.
    headers.retain(|h| h.name != xh::X_ROAD_ID);
    headers.push(types_pb::Header { name: xh::X_ROAD_ID.into(), value: message_id.clone().into_bytes() });
    headers.push(types_pb::Header {
        name: xh::X_ROAD_REQUEST_ID.into(),
        value: request_id.clone().into_bytes(),
    });
    let mut env = ex::RequestEnvelope {
        message_id: message_id.clone(),
        request_id: request_id.clone(),
        client: Some((&client).into()),
        service: Some((&target.service).into()),
        method: method.as_str().to_owned(),
        path: target.rest.clone(),
        query: target.query.clone().unwrap_or_default(),
        headers,
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
    check_envelope_size(&env, cert).map_err(plain)?;
    let body = spool(req.into_body(), &state.limits, &state.spool_dir, length)
        .await
        .map_err(|e| plain(body_reject(&e)))?;
    env.created_at_ms = to_millis(state.now());
    env.body_sha256 = body.sha256().to_vec();
    env.body_length = body.len();
    // Transport-only mode (benchmarks): the request travels unsigned and unlogged.
    if !state.transport_only {
        envelope::sign_request(&mut env, Signer { key, certificate: cert })
            .map_err(|_| plain(Reject::new(Fault::ClientInternalError, "the request could not be signed")))?;
        let env_bytes = prost::Message::encode_to_vec(&env);
        let rec = record::request_record(&env, &env_bytes, Role::Consumer, own, None, state.now(), None);
        state.log.append(rec, Some(&body), client.subsystem(), Side::Consumer).await.map_err(plain)?;
        known.logged_request = true;
    }
    let env_header = envelope::to_header(&env);
    let expected_hash = request_hash(
        env.method.as_str(),
        &path_and_query(&target),
        &env.headers,
        (!body.is_empty()).then(|| body.sha512()).as_ref(),
    );

    let (peer, response) = send(state, &nodes, &env_header, &body).await.map_err(plain)?;
    known.peer = Some(peer.clone());
    receive(state, gc, &env, &expected_hash, &peer, response).await
}

/// Refuses a request whose signed envelope could exceed [`envelope::MAX_ENVELOPE_BYTES`] (the
/// most a provider node accepts), naming the largest of the parts the client controls.
fn check_envelope_size(env: &ex::RequestEnvelope, cert: &lienthong_pki::Certificate) -> Result<(), Reject> {
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

/// The canonical `path?query` both nodes hash: the r1 path of the service, the rest, the query.
pub(crate) fn path_and_query(target: &R1Target) -> String {
    let mut s = target.service.r1_path();
    s.push_str(&target.rest);
    if let Some(q) = &target.query {
        s.push('?');
        s.push_str(q);
    }
    s
}

/// Sends to the provider nodes in order; moves to the next only while nothing was delivered.
async fn send(
    state: &NodeState,
    nodes: &[NodeId],
    env_header: &str,
    body: &SpooledBody,
) -> Result<(NodeId, Response<Incoming>), Reject> {
    let mut last = None;
    for node in nodes {
        let req = Request::builder()
            .method(Method::POST)
            .uri(EXCHANGE_PATH)
            .header(ENVELOPE_HEADER, env_header)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body.clone().into_body())
            .map_err(|_| Reject::new(Fault::ClientInternalError, "the request could not be built"))?;
        let timeout = std::time::Duration::from_secs(state.config.limits.exchange_timeout_secs);
        // Connecting is timed apart from answering: a node that could not be connected to in
        // time (a black hole) got nothing, so the next one is tried.
        match state.peers.send_within(node, req, timeout).await {
            Ok(resp) => return Ok((node.clone(), resp)),
            Err(e) if e.is_before_send() => {
                tracing::warn!(%node, error = %e, "provider node not reachable, trying the next");
                last = Some((node, e));
            }
            Err(e) => return Err(peer_reject(node, &e)),
        }
    }
    Err(match last {
        Some((node, e)) if e.is_rejected() => peer_reject(node, &e),
        _ => Reject::new(Fault::ClientNetworkError, "no node of the provider could be reached"),
    })
}

fn peer_reject(node: &NodeId, e: &PeerError) -> Reject {
    match e {
        PeerError::TimedOut { .. } => {
            Reject::new(Fault::ClientNetworkError, format!("node {node} did not answer in time"))
        }
        PeerError::Rejected { .. } => Reject::new(
            Fault::ClientSslAuthenticationFailed,
            format!("node {node} failed TLS authentication"),
        ),
        _ => Reject::new(Fault::ClientNetworkError, format!("the exchange with node {node} broke off")),
    }
}

/// Verifies, logs and releases the provider's response.
async fn receive(
    state: &NodeState,
    gc: &GlobalConf,
    req: &ex::RequestEnvelope,
    expected_hash: &str,
    peer: &NodeId,
    response: Response<Incoming>,
) -> Result<Response<Body>, Failure> {
    let inconsistent = |m: &str| plain(Reject::new(Fault::InconsistentResponse, m));
    let (parts, incoming) = response.into_parts();
    let (env, env_bytes): (ex::ResponseEnvelope, Vec<u8>) = envelope::from_header(
        parts.headers.get(ENVELOPE_HEADER).map(HeaderValue::as_bytes),
        Fault::InconsistentResponse,
    )
    .map_err(plain)?;
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
    if env.message_id != req.message_id
        || env.request_id != req.request_id
        || env.client != req.client
        || env.service != req.service
    {
        return Err(inconsistent("the response is for another request"));
    }
    if env.request_hash != expected_hash {
        return Err(inconsistent("the provider received a different request (request hash differs)"));
    }
    if env.provider_node.as_ref() != Some(&peer.into()) {
        return Err(inconsistent("the response names another provider node"));
    }
    let Ok(service) = required::<types_pb::ServiceId>(req.service.clone(), "service") else {
        return Err(inconsistent("the request has no service"));
    };
    // Transport-only mode (benchmarks): the provider node signs nothing either.
    if !state.transport_only {
        envelope::verify_response(&env, &service.subsystem.member, gc, state.now()).map_err(plain)?;
    }
    let length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = spool(incoming, &state.limits, &state.spool_dir, length).await.map_err(|e| {
        plain(match e {
            BodyError::TooLarge { .. } => {
                Reject::new(Fault::ClientNetworkError, "the response is larger than this node accepts")
            }
            _ => Reject::new(Fault::ClientNetworkError, format!("the response could not be read: {e}")),
        })
    })?;
    envelope::check_body(
        &env.body_sha256,
        env.body_length,
        &body.sha256(),
        body.len(),
        Fault::ClientInvalidSignatureValue,
    )
    .map_err(plain)?;
    let client: Option<ClientId> = required(req.client.clone(), "client").ok();
    // Transport-only mode (benchmarks): released unlogged.
    if !state.transport_only {
        let rec = record::response_record(
            req,
            &env,
            &env_bytes,
            Role::Consumer,
            &state.keys.node,
            Some(peer),
            state.now(),
        );
        let subsystem = client.as_ref().and_then(ClientId::subsystem);
        state.log.append(rec, Some(&body), subsystem, Side::Consumer).await.map_err(plain)?;
    }

    let mut resp = Response::new(body.clone().into_body());
    *resp.status_mut() = u16::try_from(env.status)
        .ok()
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .unwrap_or(http::StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    // Filtered again here: the provider node filters, but this node answers for what it releases.
    *h = xh::to_header_map(&xh::forwarded_response_headers(&xh::to_header_map(&env.headers)));
    let set = |h: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(h, xh::X_ROAD_ID, &env.message_id);
    set(h, xh::X_ROAD_REQUEST_ID, &env.request_id);
    set(h, xh::X_ROAD_REQUEST_HASH, &env.request_hash);
    if let Some(c) = &client {
        set(h, xh::X_ROAD_CLIENT, &c.to_string());
    }
    set(h, xh::X_ROAD_SERVICE, &service.to_string());
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Ok(resp)
}
