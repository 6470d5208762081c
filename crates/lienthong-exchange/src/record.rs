//! What each side writes to its message log. Every answer a node gives has a record: the signed
//! request and response (with the envelope bytes, so signatures verify offline), and every
//! refusal with its fault. Bodies are attached by the node according to the subsystem's policy.

use std::time::SystemTime;

use lienthong_globalconf::to_millis;
use lienthong_proto::exchange::v1 as ex;
use lienthong_proto::msglog::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{ClientId, NodeId, ServiceId};

use crate::headers::headers_sha256;

pub use pb::{Direction, Role};

fn path_and_query(path: &str, query: &str) -> String {
    if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") }
}

/// The record of a signed request, sent (consumer) or received (provider).
pub fn request_record(
    env: &ex::RequestEnvelope,
    envelope_bytes: &[u8],
    role: Role,
    node: &NodeId,
    peer: Option<&NodeId>,
    logged_at: SystemTime,
    grant_id: Option<&str>,
) -> pb::LogRecord {
    pb::LogRecord {
        message_id: env.message_id.clone(),
        request_id: env.request_id.clone(),
        direction: Direction::Request as i32,
        role: role as i32,
        client: env.client.clone(),
        service: env.service.clone(),
        method: env.method.clone(),
        path: path_and_query(&env.path, &env.query),
        user_id: env.user_id.clone(),
        issue: env.issue.clone(),
        node: Some(node.into()),
        peer_node: peer.map(Into::into),
        message_time_ms: env.created_at_ms,
        logged_at_ms: to_millis(logged_at),
        headers_sha256: headers_sha256(&env.headers).to_vec(),
        body_sha256: env.body_sha256.clone(),
        body_length: env.body_length,
        signature: env.signature.clone(),
        grant_id: grant_id.unwrap_or_default().to_owned(),
        envelope: envelope_bytes.to_vec(),
        ..Default::default()
    }
}

/// The record of a signed response, with the request's ids and path for queries.
pub fn response_record(
    request: &ex::RequestEnvelope,
    env: &ex::ResponseEnvelope,
    envelope_bytes: &[u8],
    role: Role,
    node: &NodeId,
    peer: Option<&NodeId>,
    logged_at: SystemTime,
) -> pb::LogRecord {
    pb::LogRecord {
        message_id: env.message_id.clone(),
        request_id: env.request_id.clone(),
        direction: Direction::Response as i32,
        role: role as i32,
        client: env.client.clone(),
        service: env.service.clone(),
        method: request.method.clone(),
        path: path_and_query(&request.path, &request.query),
        user_id: request.user_id.clone(),
        issue: request.issue.clone(),
        node: Some(node.into()),
        peer_node: peer.map(Into::into),
        message_time_ms: env.created_at_ms,
        logged_at_ms: to_millis(logged_at),
        status: env.status,
        fault: env.fault.clone(),
        headers_sha256: headers_sha256(&env.headers).to_vec(),
        body_sha256: env.body_sha256.clone(),
        body_length: env.body_length,
        signature: env.signature.clone(),
        envelope: envelope_bytes.to_vec(),
        ..Default::default()
    }
}

/// What is known about an exchange that a node refused or that failed.
#[derive(Debug, Clone, Default)]
pub struct Refusal<'a> {
    pub message_id: &'a str,
    pub request_id: &'a str,
    pub direction: Option<Direction>,
    pub client: Option<&'a ClientId>,
    pub service: Option<&'a ServiceId>,
    pub method: &'a str,
    pub path: &'a str,
    pub user_id: &'a str,
    pub peer: Option<&'a NodeId>,
    pub message_time_ms: i64,
}

/// The record of a refusal or failure: the fault (with the detail UUID the client saw) and its
/// HTTP status.
pub fn refusal_record(
    r: &Refusal<'_>,
    fault: types_pb::Fault,
    status: u16,
    role: Role,
    node: &NodeId,
    logged_at: SystemTime,
) -> pb::LogRecord {
    pb::LogRecord {
        message_id: r.message_id.to_owned(),
        request_id: r.request_id.to_owned(),
        direction: r.direction.unwrap_or(Direction::Response) as i32,
        role: role as i32,
        client: r.client.map(Into::into),
        service: r.service.map(Into::into),
        method: r.method.to_owned(),
        // Bounded: a refused path may be arbitrary client input.
        path: r.path.chars().take(1024).collect(),
        user_id: r.user_id.chars().take(256).collect(),
        node: Some(node.into()),
        peer_node: r.peer.map(Into::into),
        message_time_ms: r.message_time_ms,
        logged_at_ms: to_millis(logged_at),
        status: u32::from(status),
        fault: Some(fault),
        ..Default::default()
    }
}
