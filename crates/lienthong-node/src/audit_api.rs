//! The node's audit API, for auditors only: `GET /audit/v1/records` (the log's records by time,
//! client, service, status, exchange, user, direction and role, paged, each with an inclusion
//! proof against the newest witnessed checkpoint; JSON, NDJSON or CSV) and
//! `GET /audit/v1/checkpoint` (that checkpoint, signed by the node and co-signed by the
//! registry).
//!
//! The auditor role is a client certificate listed in `[audit] certificates`, presented over
//! HTTPS. Every call, allowed or not, is itself a record in the log before it is answered.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use lienthong_audit::query::{
    Cursor, FILTER_NAMES, Filter, Format, ProofAt, QueryError, QueryOptions, RecordWriter,
};
use lienthong_globalconf::to_millis;
use lienthong_pki::Fingerprint;
use lienthong_proto::msglog::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use prost::Message;

use crate::consumer::ConnInfo;
use crate::exchange_log::Side;
use crate::state::{Body, NodeState, full, new_detail};

/// The prefix the consumer listeners route here.
pub(crate) const PREFIX: &str = "/audit/";

const DEFAULT_LIMIT: usize = 100;

/// An answer before it is recorded: status, content type, body, extra headers, and the error
/// code when it is a refusal.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    error: Option<(String, String)>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Answer {
    let message = message.into();
    let body = serde_json::json!({ "code": code, "message": message }).to_string().into_bytes();
    Answer {
        status,
        content_type: "application/json",
        body,
        headers: Vec::new(),
        error: Some((code.to_owned(), message)),
    }
}

pub(crate) async fn handle(state: Arc<NodeState>, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
    let path_and_query = req.uri().path_and_query().map_or_else(String::new, |p| p.as_str().to_owned());
    let auditor = conn.client_cert.filter(|fp| conn.tls && state.auditors.contains(fp));
    let answer = match auditor {
        None => error(
            StatusCode::FORBIDDEN,
            "unauthorized",
            "the audit API needs an auditor's certificate, presented over HTTPS",
        ),
        Some(_) if req.method() != Method::GET => {
            error(StatusCode::METHOD_NOT_ALLOWED, "invalid_method", "the audit API takes GET")
        }
        Some(_) => route(&state, req.uri().path(), req.uri().query().unwrap_or("")).await,
    };
    let detail = new_detail();
    let record = audit_record(&state, &path_and_query, conn.client_cert.as_ref(), &answer, &detail);
    if let Err(failed) = state.log.append(record, None, None, Side::Provider).await {
        let answer = error(StatusCode::INTERNAL_SERVER_ERROR, "logging_failed", failed.message);
        return respond(answer, &detail);
    }
    respond(answer, &detail)
}

fn respond(answer: Answer, detail: &str) -> Response<Body> {
    let mut resp = Response::new(full(answer.body));
    *resp.status_mut() = answer.status;
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
    if let Ok(v) = HeaderValue::from_str(detail) {
        h.insert("x-audit-record", v);
    }
    for (name, value) in answer.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

/// The record of one audit call: who (the certificate's fingerprint), what (the path and
/// query), and the outcome.
fn audit_record(
    state: &NodeState,
    path_and_query: &str,
    cert: Option<&Fingerprint>,
    answer: &Answer,
    detail: &str,
) -> pb::LogRecord {
    pb::LogRecord {
        message_id: format!("audit-{detail}"),
        direction: pb::Direction::Request as i32,
        method: "GET".into(),
        path: path_and_query.chars().take(1024).collect(),
        user_id: cert.map_or_else(|| "auditor:none".into(), |fp| format!("auditor:{fp}")),
        node: Some((&state.keys.node).into()),
        message_time_ms: to_millis(state.now()),
        logged_at_ms: to_millis(state.now()),
        status: u32::from(answer.status.as_u16()),
        fault: answer.error.as_ref().map(|(code, message)| types_pb::Fault {
            code: format!("audit.{code}"),
            message: message.clone(),
            detail: detail.to_owned(),
        }),
        ..Default::default()
    }
}

async fn route(state: &Arc<NodeState>, path: &str, query: &str) -> Answer {
    match path {
        "/audit/v1/records" => records(state, query).await,
        "/audit/v1/checkpoint" => checkpoint(state).await,
        _ => error(StatusCode::NOT_FOUND, "not_found", format!("no audit resource {path:?}")),
    }
}

/// Decodes `%XX` and `+` in a query-string component; `None` if it is not valid UTF-8 after.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn query_error(e: &QueryError) -> Answer {
    let status = match e {
        QueryError::InvalidFilter { .. } | QueryError::InvalidCursor(_) | QueryError::CursorMismatch => {
            StatusCode::BAD_REQUEST
        }
        QueryError::NoCheckpoint(_) => StatusCode::NOT_FOUND,
        QueryError::Damaged(_) | QueryError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.code(), e.to_string())
}

async fn records(state: &Arc<NodeState>, query: &str) -> Answer {
    let mut filter = Filter::default();
    let (mut limit, mut cursor, mut format, mut proofs) =
        (DEFAULT_LIMIT, None, Format::Json, ProofAt::Latest);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(value) = decode(raw) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_filter",
                format!("{name}: not valid percent-encoded UTF-8"),
            );
        };
        let set = match name {
            "limit" => value.parse().map(|n| limit = n).map_err(|_| "limit must be a number".to_owned()),
            "cursor" => value.parse::<Cursor>().map(|c| cursor = Some(c)).map_err(|e| e.to_string()),
            "format" => value.parse().map(|f| format = f),
            "proof_size" => value
                .parse()
                .map(|n| proofs = ProofAt::Size(n))
                .map_err(|_| "proof_size must be a number".into()),
            "proofs" if value == "none" => {
                proofs = ProofAt::None;
                Ok(())
            }
            n if FILTER_NAMES.contains(&n) => filter.set(n, &value).map_err(|e| e.to_string()),
            n => Err(format!("unknown parameter {n:?}")),
        };
        if let Err(reason) = set {
            let reason = reason.strip_prefix("invalid_filter: ").unwrap_or(&reason).to_owned();
            return error(StatusCode::BAD_REQUEST, "invalid_filter", format!("{name}: {reason}"));
        }
    }
    let store = state.log.log().store().clone();
    let options = QueryOptions { proofs, ..QueryOptions::default() };
    // Store reads block; keep them off the async workers.
    let page = tokio::task::spawn_blocking(move || {
        lienthong_audit::query::query_with(store.as_ref(), &filter, cursor.as_ref(), limit, &options)
    })
    .await;
    let page = match page {
        Ok(Ok(page)) => page,
        Ok(Err(e)) => return query_error(&e),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the query failed"),
    };
    let written = RecordWriter::new(Vec::new(), format).and_then(|mut w| {
        for r in &page.records {
            w.write(r)?;
        }
        w.finish()
    });
    let Ok(body) = written else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the records could not be written");
    };
    let mut headers = vec![("x-log-size", page.log_size.to_string())];
    if let Some(next) = page.next {
        headers.push(("x-next-cursor", next.to_string()));
    }
    if let Some(c) = &page.checkpoint {
        headers.push(("x-checkpoint-size", c.size.to_string()));
    }
    let content_type = match format {
        Format::Json => "application/json",
        Format::Ndjson => "application/x-ndjson",
        Format::Csv => "text/csv; charset=utf-8",
    };
    Answer { status: StatusCode::OK, content_type, body, headers, error: None }
}

async fn checkpoint(state: &Arc<NodeState>) -> Answer {
    let store = state.log.log().store().clone();
    let found = tokio::task::spawn_blocking(move || {
        store.checkpoints().map(|all| all.into_iter().rev().find(lienthong_msglog::checkpoint::is_witnessed))
    })
    .await;
    let signed = match found {
        Ok(Ok(Some(c))) => c,
        Ok(Ok(None)) => {
            return error(StatusCode::NOT_FOUND, "no_checkpoint", "the log has no witnessed checkpoint yet");
        }
        _ => return error(StatusCode::INTERNAL_SERVER_ERROR, "storage", "the checkpoints could not be read"),
    };
    let Ok(c) = lienthong_msglog::checkpoint::Checkpoint::decode(&signed) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "log_damaged",
            "a stored checkpoint does not decode",
        );
    };
    let body = serde_json::json!({
        "origin": c.origin,
        "tree_size": c.size,
        "root_hash": hex::encode(c.root),
        "timestamp": lienthong_audit::query::format_time(c.timestamp_ms),
        "signed_checkpoint": STANDARD.encode(signed.encode_to_vec()),
    });
    Answer {
        status: StatusCode::OK,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        headers: Vec::new(),
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn query_components_decode() {
        assert_eq!(decode("VN%2FGOV%2F000.00.00.G01").as_deref(), Some("VN/GOV/000.00.00.G01"));
        assert_eq!(decode("a+b").as_deref(), Some("a b"));
        assert_eq!(decode("%ZZ"), None);
        assert_eq!(decode("%C3%28"), None);
        assert_eq!(decode("%4"), None);
    }
}
