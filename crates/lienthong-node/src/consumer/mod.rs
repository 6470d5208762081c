//! The consumer side: X-Road REST `r1` from local information systems, exactly as X-Road clients
//! speak it, turned into signed, logged exchanges with a provider node.
//!
//! The protocol's decisions are [`lienthong_exchange::consumer`]'s steps; this shell moves the
//! bytes between them: it reads the body (spooled above the memory threshold, hashed on the
//! way), appends each record durably before going on, sends to a provider node (failing over
//! while nothing was delivered), reads the response, and only then releases it.

mod list_clients;
mod send;

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Body as HttpBody;
use lienthong_exchange::consumer::{self as step, Call, ClientAuth, Connection, Context};
use lienthong_exchange::failure::{BodyOf, body_fault};
use lienthong_exchange::{Refused, Verdict};
use lienthong_types::ClientId;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::body::spool;
use crate::config::ClientAuth as ConfiguredAuth;
use crate::conn::ConnInfo;
use crate::exchange_log::Side;
use crate::refusal_limit::Kind;
use crate::respond::{Body, error_response, new_detail};
use crate::state::NodeState;

/// Handles a call that is not for the node's health or audit API: `listClients` or an r1
/// exchange. Every refusal is answered in X-Road's form and recorded.
pub(crate) async fn handle<B>(state: &NodeState, req: Request<B>, conn: &ConnInfo) -> Response<Body>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let accept = req.headers().get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let result = if req.uri().path() == "/listClients" {
        list_clients::respond(state, &req)
            .map_err(|reject| step::refused(reject, req.method(), conn.remote.ip()))
    } else {
        let span = tracing::info_span!("exchange", side = "consumer", message_id = Empty, request_id = Empty);
        exchange(state, req, conn).instrument(span).await
    };
    match result {
        Ok(resp) => resp,
        Err(refused) => refuse(state, &refused, accept.as_deref()).await,
    }
}

/// Logs a refusal (every answer has a record) and renders it. A refusal before the client was
/// authenticated gets a record of its own only within the refusal limit; beyond it, its
/// source's summary counts it (the answer is the same).
async fn refuse(state: &NodeState, refused: &Refused, accept: Option<&str>) -> Response<Body> {
    // Made only for a refusal: a UUID costs a getrandom call.
    let verdict: Verdict = refused.verdict(&new_detail());
    tracing::info!(code = %verdict.code, detail = %verdict.detail, message = %verdict.message, "consumer refused an exchange");
    let source = refused.facts.source.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let record = refused
        .record(&verdict, &state.keys.node, state.now(), state.protection.as_ref())
        .filter(|_| refused.facts.authenticated || state.admit_refusal(Kind::Client, source, &verdict.code));
    if let Some(rec) = record
        && let Err(failed) = state.log.append(rec, None, refused.subsystem(), Side::Consumer).await
    {
        let (code, status) = (failed.fault.code(), failed.fault.http_status());
        return error_response(&code, status, &failed.message, &verdict.detail, accept);
    }
    error_response(&verdict.code, verdict.status, &verdict.message, &verdict.detail, accept)
}

/// How `client` must authenticate, from the node's configuration.
fn client_auth<'s>(state: &'s NodeState, client: &ClientId) -> ClientAuth<'s> {
    let subsystem = client.subsystem();
    match subsystem.and_then(|s| state.config.client(s)).map(|c| c.auth).unwrap_or_default() {
        ConfiguredAuth::None => ClientAuth::Open,
        ConfiguredAuth::Loopback => ClientAuth::Loopback,
        ConfiguredAuth::Tls => ClientAuth::Tls,
        ConfiguredAuth::TlsCert => ClientAuth::TlsCert(subsystem.and_then(|s| state.client_certs.get(s))),
    }
}

/// One r1 exchange, step by step: prepare, read the body, seal and log, send, accept the
/// response's head, read its body, finish and log, release.
async fn exchange<B>(state: &NodeState, req: Request<B>, conn: &ConnInfo) -> Result<Response<Body>, Refused>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let (head, body) = req.into_parts();
    let conf = state.conf.borrow().clone();
    let auth = |client: &ClientId| client_auth(state, client);
    let rotation = || state.rotation();
    let cx = Context {
        node: state.node(),
        conf: conf.as_deref().map(|c| &c.conf),
        now: state.now(),
        max_header_bytes: state.config.limits.max_header_bytes,
        client_auth: &auth,
        rotation: &rotation,
    };
    let connection =
        Connection { source: conn.remote.ip(), tls: conn.tls, client_cert: conn.client_cert.as_ref() };
    let call = Call { method: &head.method, uri: &head.uri, headers: &head.headers, connection };
    let prepared = step::prepare(&call, &cx, &mut new_detail)?;
    let (message_id, request_id) = prepared.ids();
    tracing::Span::current().record("message_id", message_id).record("request_id", request_id);

    let length = prepared.content_length();
    let body = match spool(body, &state.limits, &state.spool_dir, length).await {
        Ok(b) => b,
        Err(e) => return Err(prepared.refuse(body_fault(BodyOf::ClientRequest, e.problem(), &e))),
    };
    let mut sealed = prepared.seal(&body.digests(), state.now())?;
    if let Some(rec) = sealed.record.take() {
        let subsystem = sealed.facts().client.as_ref().and_then(ClientId::subsystem).cloned();
        if let Err(failed) = state.log.append(rec, Some(&body), subsystem.as_ref(), Side::Consumer).await {
            return Err(sealed.refuse(failed));
        }
        sealed.logged();
    }
    let (peer, response) = match send::send(state, sealed.nodes(), &sealed.header, &body).await {
        Ok(r) => r,
        Err(reject) => return Err(sealed.refuse(reject)),
    };
    let (head, incoming) = response.into_parts();
    let accepted = sealed.accept_response(&peer, &head.headers, state.now())?;
    let length = accepted.content_length();
    let body = match spool(incoming, &state.limits, &state.spool_dir, length).await {
        Ok(b) => b,
        Err(e) => return Err(accepted.refuse(body_fault(BodyOf::PeerResponse, e.problem(), &e))),
    };
    let mut release = accepted.finish(&body.digests(), state.now())?;
    if let Some(rec) = release.record.take() {
        let subsystem = release.facts().client.as_ref().and_then(ClientId::subsystem).cloned();
        if let Err(failed) = state.log.append(rec, Some(&body), subsystem.as_ref(), Side::Consumer).await {
            return Err(release.refuse(failed));
        }
    }
    let mut resp = Response::new(body.into_body());
    *resp.status_mut() = release.status;
    *resp.headers_mut() = std::mem::take(&mut release.headers);
    Ok(resp)
}
