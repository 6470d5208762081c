//! The node's audit API, for auditors only: `GET /audit/v1/records` (the log's records by time,
//! client, service, status, exchange, user, direction and role, paged, each with an inclusion
//! proof against the newest witnessed checkpoint; JSON, NDJSON or CSV) and
//! `GET /audit/v1/checkpoint` (that checkpoint, signed by the node and co-signed by the
//! registry).
//!
//! The auditor role is a client certificate listed in `[audit] certificates`, presented over
//! HTTPS. Every call, allowed or not, is itself a record in the log before it is answered;
//! calls without an auditor's certificate only within the refusal limit
//! ([`crate::refusal_limit`]), beyond it they are counted in their source's summary record.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use lienthong_audit::bundle::{self, ExchangeRef};
use lienthong_audit::query::{
    Cursor, FILTER_NAMES, Filter, Format, ProofAt, QueryError, QueryOptions, RecordWriter,
    decode_component as decode,
};
use lienthong_globalconf::to_millis;
use lienthong_msglog::checkpoint::Checkpoint;
use lienthong_pki::Fingerprint;
use lienthong_proto::audit::v1 as audit_pb;
use lienthong_proto::msglog::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use prost::Message;

use crate::conn::ConnInfo;
use crate::exchange_log::Side;
use crate::refusal_limit::Kind;
use crate::respond::{Body, full, new_detail};
use crate::state::NodeState;

/// The prefix the consumer listeners route here.
pub(crate) const PREFIX: &str = "/audit/";

const DEFAULT_LIMIT: usize = 100;
/// Records per collector pull when the collector does not say; and the most it may ask for.
const COLLECT_DEFAULT: u64 = 1_000;
const COLLECT_MAX: u64 = 10_000;
/// A pull's records stop growing past this many bytes (records keep bodies up to the log's
/// limit), so an answer stays well under what a collector accepts.
const COLLECT_MAX_BYTES: usize = 16 << 20;

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
    if auditor.is_none() {
        // Unauthenticated: the answer is the same whether or not it gets a record of its own.
        let code = answer.error.as_ref().map_or("", |(code, _)| code.as_str());
        if !state.admit_refusal(Kind::Audit, conn.remote.ip(), &format!("audit.{code}")) {
            return respond(answer, &detail);
        }
    }
    let mut record = audit_record(&state, &path_and_query, conn.client_cert.as_ref(), &answer, &detail);
    if auditor.is_none() {
        record.source_address = conn.remote.ip().to_string();
    }
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
        "/audit/v1/collect" => collect(state, query).await,
        "/audit/v1/evidence" => evidence(state, query).await,
        _ => error(StatusCode::NOT_FOUND, "not_found", format!("no audit resource {path:?}")),
    }
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

/// The newest witnessed checkpoint, signed and decoded, or the answer explaining its absence.
async fn witnessed(state: &Arc<NodeState>) -> Result<(pb::SignedCheckpoint, Checkpoint), Answer> {
    let store = state.log.log().store().clone();
    let found = tokio::task::spawn_blocking(move || {
        store.checkpoints().map(|all| all.into_iter().rev().find(lienthong_msglog::checkpoint::is_witnessed))
    })
    .await;
    let signed = match found {
        Ok(Ok(Some(c))) => c,
        Ok(Ok(None)) => {
            return Err(error(
                StatusCode::NOT_FOUND,
                "no_checkpoint",
                "the log has no witnessed checkpoint yet",
            ));
        }
        _ => {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                "the checkpoints could not be read",
            ));
        }
    };
    match Checkpoint::decode(&signed) {
        Ok(c) => Ok((signed, c)),
        Err(_) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "log_damaged",
            "a stored checkpoint does not decode",
        )),
    }
}

async fn checkpoint(state: &Arc<NodeState>) -> Answer {
    let (signed, c) = match witnessed(state).await {
        Ok(found) => found,
        Err(answer) => return answer,
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

/// Splits a query string into decoded `(name, value)` pairs, refusing any name not in `known`.
fn params(query: &str, known: &[&str]) -> Result<Vec<(String, String)>, Answer> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        if !known.contains(&name) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_filter",
                format!("unknown parameter {name:?}"),
            ));
        }
        let Some(value) = decode(raw) else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_filter",
                format!("{name}: not valid percent-encoded UTF-8"),
            ));
        };
        out.push((name.to_owned(), value));
    }
    Ok(out)
}

fn number(name: &str, value: &str) -> Result<u64, Answer> {
    value
        .parse()
        .map_err(|_| error(StatusCode::BAD_REQUEST, "invalid_filter", format!("{name} must be a number")))
}

/// A collector's pull: the newest witnessed checkpoint, a consistency proof from `held` (the size
/// the collector holds) and up to `limit` records from leaf `from`, each proven against the
/// checkpoint, as one protobuf `CollectBatch`. Records pruned by retention are left out (the
/// collector reports them as gaps).
async fn collect(state: &Arc<NodeState>, query: &str) -> Answer {
    let (mut from, mut held, mut limit) = (0, 0, COLLECT_DEFAULT);
    let parsed = match params(query, &["from", "held", "limit"]) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    for (name, value) in parsed {
        let n = match number(&name, &value) {
            Ok(n) => n,
            Err(answer) => return answer,
        };
        match name.as_str() {
            "from" => from = n,
            "held" => held = n,
            _ => limit = n,
        }
    }
    if !(1..=COLLECT_MAX).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_filter",
            format!("limit must be between 1 and {COLLECT_MAX}"),
        );
    }
    let (signed, c) = match witnessed(state).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let state = state.clone();
    let built = tokio::task::spawn_blocking(move || {
        let log = state.log.log();
        let consistency = if held > 0 && held < c.size {
            let hashes = log.consistency_proof(held, c.size)?;
            Some(pb::ConsistencyProof {
                old_size: held,
                new_size: c.size,
                hashes: hashes.iter().map(|h| h.to_vec()).collect(),
            })
        } else {
            None
        };
        let mut end = from.saturating_add(limit).min(c.size);
        let mut records = Vec::new();
        let mut bytes = 0;
        for index in from..end {
            if bytes >= COLLECT_MAX_BYTES {
                end = index;
                break;
            }
            let Some(record) = log.store().record(index)? else { continue };
            bytes += record.len();
            let hashes = log.inclusion_proof(index, c.size)?;
            records.push(audit_pb::ProvenRecord {
                leaf_index: index,
                record,
                proof: Some(pb::InclusionProof {
                    leaf_index: index,
                    tree_size: c.size,
                    hashes: hashes.iter().map(|h| h.to_vec()).collect(),
                }),
                next_page_token: Vec::new(),
            });
        }
        Ok::<_, lienthong_msglog::LogError>(audit_pb::CollectBatch {
            checkpoint: Some(signed),
            node_certificate: state.keys.tls.chain[0].der().to_vec(),
            consistency,
            records,
            next: end.max(from),
        })
    })
    .await;
    match built {
        Ok(Ok(batch)) => Answer {
            status: StatusCode::OK,
            content_type: "application/x-protobuf",
            body: batch.encode_to_vec(),
            headers: Vec::new(),
            error: None,
        },
        Ok(Err(e)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "storage", format!("the log could not be read: {e}"))
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the pull failed"),
    }
}

/// This node's side of the evidence for one exchange (`exchange`, optionally `request_id`): a
/// bundle file of its records with proofs against its newest witnessed checkpoint, its
/// certificate and the configuration it holds. An audit service merges both sides' files.
async fn evidence(state: &Arc<NodeState>, query: &str) -> Answer {
    let parsed = match params(query, &["exchange", "request_id"]) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    let mut exchange = ExchangeRef::message(String::new());
    for (name, value) in parsed {
        if name == "exchange" {
            exchange.message_id = value;
        } else {
            exchange.request_id = Some(value);
        }
    }
    if exchange.message_id.is_empty() {
        return error(StatusCode::BAD_REQUEST, "invalid_filter", "exchange: the message id is required");
    }
    let Some(conf) = state.conf.borrow().clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_configuration",
            "this node has no global configuration yet",
        );
    };
    let state = state.clone();
    let built = tokio::task::spawn_blocking(move || {
        let store = state.log.log().store().clone();
        let partner_confs: Vec<Vec<u8>> = conf.partners.iter().map(|p| p.bytes.clone()).collect();
        let side = bundle::Side {
            store: store.as_ref(),
            conf: &conf.bytes,
            node_certificate: Some(state.keys.tls.chain[0].der()),
            partner_confs: &partner_confs,
        };
        bundle::build(&[side], &[exchange])
    })
    .await;
    match built {
        Ok(Ok(bytes)) => Answer {
            status: StatusCode::OK,
            content_type: bundle::CONTENT_TYPE,
            body: bytes,
            headers: Vec::new(),
            error: None,
        },
        Ok(Err(e)) => {
            let status = if e.is_not_found() { StatusCode::NOT_FOUND } else { StatusCode::CONFLICT };
            error(status, e.code(), e.to_string())
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the bundle could not be built"),
    }
}
