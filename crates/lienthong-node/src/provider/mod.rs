//! The provider side: signed requests from peer nodes (already authenticated by pinned mTLS),
//! admitted against the global configuration, logged, served by the backend (or by the node
//! itself for metaservices), and answered with a signed, logged response.
//!
//! The protocol's decisions are [`lienthong_exchange::provider`]'s steps; this shell checks the
//! replay memory, reads the bodies, calls the backend and appends each record durably before
//! going on. Every refusal is answered with a fault envelope and recorded.

mod service;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Body as HttpBody;
use lienthong_exchange::envelope::ENVELOPE_HEADER;
use lienthong_exchange::failure::{BodyOf, body_fault};
use lienthong_exchange::provider::{self as step, Context};
use lienthong_exchange::record::{Direction, Role};
use lienthong_exchange::{EXCHANGE_PATH, Refused};
use lienthong_globalconf::to_millis;
use lienthong_proto::exchange::v1 as ex;
use lienthong_types::{NodeId, ServiceId};
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::body::{SpooledBody, spool};
use crate::exchange_log::Side;
use crate::respond::{Body, full, new_detail};
use crate::state::NodeState;

/// Handles one request from a peer node, identified by its pinned certificate.
pub(crate) async fn handle<B>(state: &NodeState, req: Request<B>, peer: NodeId) -> Response<Body>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    if req.method() != Method::POST || req.uri().path() != EXCHANGE_PATH {
        let mut resp = Response::new(full(Bytes::new()));
        *resp.status_mut() = http::StatusCode::NOT_FOUND;
        return resp;
    }
    let span =
        tracing::info_span!("exchange", side = "provider", %peer, message_id = Empty, request_id = Empty);
    async {
        match serve(state, req, &peer).await {
            Ok(resp) => resp,
            Err(refused) => refuse(state, refused).await,
        }
    }
    .instrument(span)
    .await
}

fn respond(envelope: &str, body: SpooledBody) -> Response<Body> {
    let len = body.len();
    let mut resp = Response::new(body.into_body());
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(envelope) {
        h.insert(ENVELOPE_HEADER, v);
    }
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// One exchange, step by step: admit, check for a replay, read the body, log the request,
/// serve, answer and log the response.
async fn serve<B>(state: &NodeState, req: Request<B>, peer: &NodeId) -> Result<Response<Body>, Refused>
where
    B: HttpBody<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let (head, body) = req.into_parts();
    let conf = state.conf.borrow().clone();
    let now = state.now();
    let cx = Context {
        node: state.node(),
        conf: conf.as_deref().map(|c| &c.conf),
        now,
        max_skew: state.max_skew(),
    };
    let admission = step::admit(&head.headers, peer, &cx)?;
    let env = admission.envelope();
    tracing::Span::current().record("message_id", &env.message_id).record("request_id", &env.request_id);
    let replayed = !state.replay.first_time(&env.request_id, to_millis(now))
        || (admission.predates(state.started_at_ms) && logged_before(state, env));
    if replayed {
        return Err(admission.replayed());
    }
    let body = match spool(body, &state.limits, &state.spool_dir, admission.content_length()).await {
        Ok(b) => b,
        Err(e) => return Err(admission.refuse(body_fault(BodyOf::PeerRequest, e.problem(), &e))),
    };
    let subsystem = admission.admitted().service.subsystem.clone();
    let mut received = admission.received(&body.digests(), state.now())?;
    if let Some(rec) = received.record.take() {
        if let Err(failed) = state.log.append(rec, Some(&body), Some(&subsystem), Side::Provider).await {
            return Err(received.refuse(failed));
        }
        received.logged();
    }
    let served = if received.is_metaservice() {
        let openapi =
            |id: &ServiceId| state.backends.get(id).and_then(|b| b.openapi.as_ref()).map(|b| b.to_vec());
        received
            .metaservice(state.now(), &openapi)
            .map(|m| (m.served, SpooledBody::from_bytes(Bytes::from(m.body))))
    } else {
        service::call(state, received.admitted(), received.envelope(), body).await
    };
    let (served, out) = match served {
        Ok(s) => s,
        Err(reject) => return Err(received.refuse(reject)),
    };
    let mut answer = received.answer(served, &out.digests(), state.now())?;
    if let Some(rec) = answer.record.take()
        && let Err(failed) = state.log.append(rec, Some(&out), Some(&subsystem), Side::Provider).await
    {
        return Err(answer.refuse(failed));
    }
    Ok(respond(&answer.header, out))
}

/// Whether this node already logged receiving this request: the replay memory starts empty
/// at each start, so a message older than the process is looked up in the log instead.
fn logged_before(state: &NodeState, env: &ex::RequestEnvelope) -> bool {
    let store = state.log.log().store();
    let Ok(indexes) = store.by_exchange(&env.message_id) else { return false };
    indexes.into_iter().filter_map(|i| store.record(i).ok().flatten()).any(|bytes| {
        lienthong_msglog::record::decode_record(&bytes).is_ok_and(|r| {
            r.request_id == env.request_id
                && r.role == Role::Provider as i32
                && r.direction == Direction::Request as i32
                && r.fault.is_none()
        })
    })
}

/// Logs and answers a refusal with a fault envelope. A refusal that cannot be logged is
/// answered as the logging failure it became.
async fn refuse(state: &NodeState, mut refused: Refused) -> Response<Body> {
    let detail = new_detail();
    let reject = &refused.reject;
    tracing::info!(code = %reject.fault, %detail, message = %reject.message, "provider refused an exchange");
    let mut verdict = refused.verdict(&detail);
    if let Some(rec) = refused.record(&verdict, &state.keys.node, state.now(), state.protection.as_ref())
        && let Err(failed) = state.log.append(rec, None, refused.subsystem(), Side::Provider).await
    {
        refused = refused.replaced(failed);
        verdict = refused.verdict(&detail);
    }
    let envelope = step::refusal(&refused, &verdict, state.node(), state.now());
    respond(&envelope, SpooledBody::from_bytes(Bytes::new()))
}
