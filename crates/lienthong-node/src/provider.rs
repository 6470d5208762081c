//! The provider side: signed requests from peer nodes (already authenticated by pinned mTLS),
//! admitted against the global configuration, logged, served by the backend (or by the node
//! itself for metaservices), and answered with a signed, logged response.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use lienthong_exchange::access::{self, Admitted};
use lienthong_exchange::envelope::{self, ENVELOPE_HEADER, Signer};
use lienthong_exchange::headers::{self as xh, forwarded_response_headers, request_hash};
use lienthong_exchange::record::{self, Direction, Refusal, Role};
use lienthong_exchange::{EXCHANGE_PATH, Reject, meta};
use lienthong_globalconf::{GlobalConf, to_millis};
use lienthong_proto::convert::required;
use lienthong_proto::exchange::v1 as ex;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{ClientId, Fault, NodeId, R1Target, ServiceId};

use crate::backend::{BackendError, BackendRequest};
use crate::body::{BodyError, SpooledBody, spool};
use crate::consumer::path_and_query;
use crate::exchange_log::Side;
use crate::state::{Body, NodeState, full, new_detail};

/// What the provider answers: a response envelope and its body.
struct Answer {
    env: ex::ResponseEnvelope,
    body: SpooledBody,
}

/// Handles one request from a peer node, identified by its pinned certificate.
pub(crate) async fn handle(state: Arc<NodeState>, req: Request<Incoming>, peer: NodeId) -> Response<Body> {
    if req.method() != Method::POST || req.uri().path() != EXCHANGE_PATH {
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = http::StatusCode::NOT_FOUND;
        return resp;
    }
    let decoded: Result<(ex::RequestEnvelope, Vec<u8>), Reject> = envelope::from_header(
        req.headers().get(ENVELOPE_HEADER).map(HeaderValue::as_bytes),
        Fault::InvalidMessage,
    );
    let (env, env_bytes) = match decoded {
        Ok(d) => d,
        Err(reject) => {
            let empty = ex::RequestEnvelope::default();
            return refuse(&state, &empty, &peer, &reject, &new_detail(), false).await;
        }
    };
    let mut logged = false;
    match serve(&state, req, &env, &env_bytes, &peer, &mut logged).await {
        Ok(answer) => respond(answer),
        Err(reject) => refuse(&state, &env, &peer, &reject, &new_detail(), logged).await,
    }
}

fn respond(answer: Answer) -> Response<Body> {
    let mut resp = Response::new(answer.body.clone().into_body());
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&envelope::to_header(&answer.env)) {
        h.insert(ENVELOPE_HEADER, v);
    }
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(answer.body.len()));
    resp
}

async fn serve(
    state: &NodeState,
    req: Request<Incoming>,
    env: &ex::RequestEnvelope,
    env_bytes: &[u8],
    peer: &NodeId,
    logged: &mut bool,
) -> Result<Answer, Reject> {
    let conf = state.usable_conf(Fault::ServerGlobalConfOutdated)?;
    let gc: &GlobalConf = &conf.conf;
    let own = &state.keys.node;
    if gc.node(own).is_some_and(|n| n.maintenance) {
        return Err(Reject::new(Fault::ServerMaintenanceMode, "this node is in maintenance"));
    }
    let now = state.now();
    // Transport-only mode (benchmarks): the consumer node signs nothing; the rest is checked.
    let admitted = if state.transport_only {
        access::admit_without_signature(gc, own, peer, env, now, state.max_skew())?
    } else {
        access::admit(gc, own, peer, env, now, state.max_skew())?
    };
    let replayed = !state.replay.first_time(&env.request_id, to_millis(now))
        || (env.created_at_ms < state.started_at_ms && logged_before(state, env));
    if replayed {
        return Err(Reject::new(Fault::ReplayedMessage, "this request was already received"));
    }
    let length = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body =
        spool(req.into_body(), &state.limits, &state.spool_dir, length).await.map_err(|e| match e {
            BodyError::TooLarge { .. } => Reject::new(Fault::RequestTooLarge, e.to_string()),
            BodyError::Io(_) => {
                Reject::new(Fault::ServerInternalError, "the request body could not be stored")
            }
            _ => Reject::new(Fault::InvalidMessage, e.to_string()),
        })?;
    envelope::check_body(
        &env.body_sha256,
        env.body_length,
        &body.sha256(),
        body.len(),
        Fault::ServerInvalidSignatureValue,
    )?;
    let subsystem = admitted.service.subsystem.clone();
    // Transport-only mode (benchmarks): served unlogged.
    if !state.transport_only {
        let rec = record::request_record(
            env,
            env_bytes,
            Role::Provider,
            own,
            Some(peer),
            state.now(),
            admitted.grant_id.as_deref(),
        );
        state.log.append(rec, Some(&body), Some(&subsystem), Side::Provider).await?;
        *logged = true;
    }

    let target = R1Target {
        service: admitted.service.clone(),
        rest: env.path.clone(),
        query: (!env.query.is_empty()).then(|| env.query.clone()),
    };
    let hash = request_hash(
        &env.method,
        &path_and_query(&target),
        &env.headers,
        (!body.is_empty()).then(|| body.sha512()).as_ref(),
    );
    let (status, headers, out) = if meta::is_metaservice(admitted.service.code.as_str()) {
        metaservice(state, gc, &admitted, env)?
    } else {
        call_backend(state, &admitted, env, body).await?
    };
    let mut resp = ex::ResponseEnvelope {
        message_id: env.message_id.clone(),
        request_id: env.request_id.clone(),
        client: env.client.clone(),
        service: env.service.clone(),
        request_hash: hash,
        status: u32::from(status),
        headers,
        provider_node: Some(own.into()),
        created_at_ms: to_millis(state.now()),
        body_sha256: out.sha256().to_vec(),
        body_length: out.len(),
        ..Default::default()
    };
    let signing = state.keys.signing.get(&admitted.service.subsystem.member);
    check_response_size(&resp, signing.map(|(_, cert)| cert))?;
    // Transport-only mode (benchmarks): answered unsigned and unlogged.
    if state.transport_only {
        return Ok(Answer { env: resp, body: out });
    }
    let (key, cert) = signing.ok_or_else(|| {
        Reject::new(Fault::ServerInternalError, "this node holds no signing key for the provider")
    })?;
    envelope::sign_response(&mut resp, Signer { key, certificate: cert })
        .map_err(|_| Reject::new(Fault::ServerInternalError, "the response could not be signed"))?;
    let resp_bytes = prost::Message::encode_to_vec(&resp);
    let rec = record::response_record(env, &resp, &resp_bytes, Role::Provider, own, Some(peer), state.now());
    state.log.append(rec, Some(&out), Some(&subsystem), Side::Provider).await?;
    Ok(Answer { env: resp, body: out })
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

/// Whether this node already logged receiving this request: the replay memory starts empty
/// at each start, so a message older than the process is looked up in the log instead.
fn logged_before(state: &NodeState, env: &ex::RequestEnvelope) -> bool {
    let store = state.log.log().store();
    let Ok(indexes) = store.by_exchange(&env.message_id) else { return false };
    indexes.into_iter().filter_map(|i| store.record(i).ok().flatten()).any(|bytes| {
        lienthong_msglog::record::decode_record(&bytes).is_ok_and(|r| {
            r.request_id == env.request_id
                && r.role == record::Role::Provider as i32
                && r.direction == Direction::Request as i32
                && r.fault.is_none()
        })
    })
}

type Served = (u16, Vec<types_pb::Header>, SpooledBody);

fn json(bytes: Vec<u8>) -> Served {
    let headers = vec![types_pb::Header { name: "content-type".into(), value: b"application/json".to_vec() }];
    (200, headers, SpooledBody::from_bytes(Bytes::from(bytes)))
}

fn metaservice(
    state: &NodeState,
    gc: &GlobalConf,
    admitted: &Admitted,
    env: &ex::RequestEnvelope,
) -> Result<Served, Reject> {
    if env.method != "GET" {
        return Err(Reject::new(Fault::InvalidMessage, "metaservices take GET"));
    }
    let subsystem = &admitted.service.subsystem;
    match admitted.service.code.as_str() {
        meta::LIST_METHODS => Ok(json(meta::list_methods(gc, subsystem, None))),
        meta::ALLOWED_METHODS => {
            Ok(json(meta::list_methods(gc, subsystem, Some((&admitted.client, state.now())))))
        }
        _ => {
            let code = meta::requested_service_code(&env.query)
                .ok_or_else(|| Reject::new(Fault::InvalidMessage, "getOpenAPI needs ?serviceCode="))?;
            let id: ServiceId = format!("{subsystem}/{code}")
                .parse()
                .map_err(|_| Reject::new(Fault::InvalidMessage, "serviceCode is not a valid service code"))?;
            let doc = state
                .backends
                .get(&id)
                .and_then(|b| b.openapi.clone())
                .filter(|_| gc.service(&id).is_some())
                .ok_or_else(|| {
                    Reject::new(
                        Fault::ServerUnknownService,
                        format!("service {id} has no OpenAPI description"),
                    )
                })?;
            let mut served = json(meta::public_openapi(&doc));
            if doc.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                served.1 = vec![types_pb::Header {
                    name: "content-type".into(),
                    value: b"application/yaml".to_vec(),
                }];
            }
            Ok(served)
        }
    }
}

async fn call_backend(
    state: &NodeState,
    admitted: &Admitted,
    env: &ex::RequestEnvelope,
    body: SpooledBody,
) -> Result<Served, Reject> {
    let backend = state.backends.get(&admitted.service).ok_or_else(|| {
        Reject::new(Fault::ServiceFailed, format!("service {} has no backend on this node", admitted.service))
    })?;
    let method = Method::from_bytes(env.method.as_bytes())
        .map_err(|_| Reject::new(Fault::InvalidMessage, "bad method"))?;
    let headers = xh::to_header_pairs(&env.headers);
    let request = BackendRequest {
        method,
        url: backend.url.clone(),
        path: env.path.clone(),
        query: env.query.clone(),
        headers,
        content_length: Some(body.len()),
        body: body.into_body(),
    };
    let response = backend.client.call(request, backend.timeout).await.map_err(|e| match e {
        BackendError::Timeout => Reject::new(Fault::ServerNetworkError, "the service did not answer in time"),
        other => {
            tracing::warn!(service = %admitted.service, error = ?other, "backend call failed");
            Reject::new(Fault::ServiceFailed, "the service could not be reached or failed")
        }
    })?;
    let mut map = http::HeaderMap::new();
    for (n, v) in &response.headers {
        map.append(n.clone(), v.clone());
    }
    // HEAD, 204 and 304 answers declare a length but carry no body.
    let bodiless = env.method == "HEAD" || matches!(response.status.as_u16(), 204 | 304);
    let length = map
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .filter(|_| !bodiless);
    let out = spool(response.body, &state.limits, &state.spool_dir, length).await.map_err(|e| match e {
        BodyError::TooLarge { .. } => {
            Reject::new(Fault::ServiceFailed, "the service's response is larger than allowed")
        }
        BodyError::Timeout | BodyError::TooSlow { .. } => {
            Reject::new(Fault::ServerNetworkError, "the service's response did not arrive in time")
        }
        _ => Reject::new(Fault::ServiceFailed, "the service's response broke off"),
    })?;
    Ok((response.status.as_u16(), forwarded_response_headers(&map), out))
}

/// Logs and answers a refusal with a fault envelope, signed when this node holds the provider's
/// key (the consumer does not require it: the channel is pinned mTLS).
async fn refuse(
    state: &NodeState,
    env: &ex::RequestEnvelope,
    peer: &NodeId,
    reject: &Reject,
    detail: &str,
    request_logged: bool,
) -> Response<Body> {
    tracing::info!(code = %reject.fault, %detail, %peer, message = %reject.message, "provider refused an exchange");
    let client: Option<ClientId> = required(env.client.clone(), "client").ok();
    let service: Option<ServiceId> = required(env.service.clone(), "service").ok();
    let refusal = Refusal {
        message_id: &env.message_id,
        request_id: &env.request_id,
        direction: Some(if request_logged { Direction::Response } else { Direction::Request }),
        client: client.as_ref(),
        service: service.as_ref(),
        method: &env.method,
        path: &env.path,
        user_id: &env.user_id,
        peer: Some(peer),
        message_time_ms: env.created_at_ms,
    };
    let mut reject = reject.clone();
    let mut fault = lienthong_exchange::error_body::to_pb(&reject, detail);
    let rec = record::refusal_record(
        &refusal,
        fault.clone(),
        reject.fault.http_status(),
        Role::Provider,
        &state.keys.node,
        state.now(),
    );
    // Transport-only mode (benchmarks) writes no records, refusals included.
    if !state.transport_only
        && let Err(failed) =
            state.log.append(rec, None, service.as_ref().map(|s| &s.subsystem), Side::Provider).await
    {
        reject = failed;
        fault = lienthong_exchange::error_body::to_pb(&reject, detail);
    }
    let mut resp = ex::ResponseEnvelope {
        message_id: env.message_id.clone(),
        request_id: env.request_id.clone(),
        client: env.client.clone(),
        service: env.service.clone(),
        status: u32::from(reject.fault.http_status()),
        fault: Some(fault),
        provider_node: Some((&state.keys.node).into()),
        created_at_ms: to_millis(state.now()),
        body_sha256: SpooledBody::from_bytes(Bytes::new()).sha256().to_vec(),
        ..Default::default()
    };
    // Transport-only mode (benchmarks) signs nothing.
    let signing = service.as_ref().and_then(|s| state.keys.signing.get(&s.subsystem.member));
    if let Some((key, cert)) = signing.filter(|_| !state.transport_only) {
        let _ = envelope::sign_response(&mut resp, Signer { key, certificate: cert });
    }
    respond(Answer { env: resp, body: SpooledBody::from_bytes(Bytes::new()) })
}
