//! Sending a sealed request to the provider's nodes, moving to the next only while nothing was
//! delivered.

use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use lienthong_exchange::envelope::ENVELOPE_HEADER;
use lienthong_exchange::failure::{SendProblem, send_fault, unreachable_fault};
use lienthong_exchange::{EXCHANGE_PATH, Reject};
use lienthong_types::{Fault, NodeId};

use crate::body::SpooledBody;
use crate::peer::PeerError;
use crate::state::NodeState;

/// Sends to `nodes` in order; the node that answered and its response.
pub(super) async fn send(
    state: &NodeState,
    nodes: &[NodeId],
    envelope: &str,
    body: &SpooledBody,
) -> Result<(NodeId, Response<Incoming>), Reject> {
    let mut last = None;
    let timeout = Duration::from_secs(state.config.limits.exchange_timeout_secs);
    for node in nodes {
        let req = Request::builder()
            .method(Method::POST)
            .uri(EXCHANGE_PATH)
            .header(ENVELOPE_HEADER, envelope)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body.clone().into_body())
            .map_err(|_| Reject::new(Fault::ClientInternalError, "the request could not be built"))?;
        // Connecting is timed apart from answering: a node that could not be connected to in
        // time (a black hole) got nothing, so the next one is tried.
        match state.peers.send_within(node, req, timeout).await {
            Ok(resp) => return Ok((node.clone(), resp)),
            Err(e) if e.is_before_send() => {
                tracing::warn!(%node, error = %e, "provider node not reachable, trying the next");
                last = Some((node, e));
            }
            Err(e) => return Err(send_fault(node, problem(&e))),
        }
    }
    Err(match last {
        Some((node, e)) if e.is_rejected() => send_fault(node, problem(&e)),
        _ => unreachable_fault(),
    })
}

fn problem(e: &PeerError) -> SendProblem {
    match e {
        PeerError::TimedOut { .. } => SendProblem::TimedOut,
        PeerError::Rejected { .. } => SendProblem::Rejected,
        _ => SendProblem::Broken,
    }
}
