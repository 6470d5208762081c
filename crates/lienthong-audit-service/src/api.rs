//! The auditors' HTTP API and the dashboard. Every `/api/v1/` resource but the OpenAPI
//! description needs an auditor: an API key (`Authorization: Bearer KEY`) or, over HTTPS, a
//! listed client certificate. Errors are `{"code": ..., "message": ...}` with a stable code;
//! every call is traced with the auditor's name.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use lienthong_globalconf::to_millis;
use lienthong_pki::Fingerprint;
use lienthong_proto::convert::IntoDomain;
use lienthong_proto::msglog::v1 as pb;
use lienthong_runtime::{Conn, ServeOptions, Tls};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use lienthong_audit::bundle;
use lienthong_audit::query::{QueryError, decode_component, format_time, parse_time};
use lienthong_audit::sharing::{Pair, SharingReport, sharing_report};

use crate::collect::CollectedRecord;
use crate::{AuditService, DASHBOARD, NodeSource, OPENAPI, OPENAPI_PATH};

/// Default period of the sharing report: the last 30 days.
const DEFAULT_PERIOD_MS: i64 = 30 * 24 * 3_600_000;
const MAX_EXCHANGES: usize = 1_000;

type Answer = Response<Full<Bytes>>;

/// Serves the API on `listener` until `stopped` (HTTPS when `tls` is given: a listed client
/// certificate is then an auditor's login).
pub(crate) async fn serve(
    service: Arc<AuditService>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    max_connections: usize,
    mut stopped: watch::Receiver<bool>,
) {
    let per_connection = move |conn: &Conn| {
        let cert = conn.peer_certificates.first().map(|c| Fingerprint::of(c));
        let service = service.clone();
        Some(service_fn(move |req| {
            let service = service.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(&service, req, cert).await) }
        }))
    };
    let options = ServeOptions { name: "audit-api", max_connections, ..ServeOptions::default() };
    let shutdown = async move { crate::until_stopped(&mut stopped).await };
    lienthong_runtime::serve(listener, tls.map(Tls::fixed), per_connection, shutdown, options).await;
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Answer {
    let body = json!({ "code": code, "message": message.into() }).to_string();
    respond(status, "application/json", body)
}

fn no_configuration() -> Answer {
    error(StatusCode::SERVICE_UNAVAILABLE, "no_configuration", "no verified global configuration yet")
}

fn ok_json(value: &impl serde::Serialize) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the answer could not be written"),
    }
}

async fn handle(service: &AuditService, req: Request<Incoming>, cert: Option<Fingerprint>) -> Answer {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    match (path.as_str(), &method) {
        ("/", &Method::GET) => {
            let mut resp = respond(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD);
            let h = resp.headers_mut();
            // Everything the page needs is inline; it talks to this origin only.
            h.insert(
                "content-security-policy",
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'",
                ),
            );
            h.insert("x-frame-options", HeaderValue::from_static("DENY"));
            return resp;
        }
        ("/healthz", &Method::GET) => return respond(StatusCode::OK, "text/plain", "ok\n"),
        (OPENAPI_PATH, &Method::GET) => return respond(StatusCode::OK, "application/json", OPENAPI),
        _ => {}
    }
    if !path.starts_with("/api/v1/") {
        return error(StatusCode::NOT_FOUND, "not_found", format!("no resource {path:?}"));
    }
    let key = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let auditor = match (key, cert) {
        (Some(key), _) => service.auditors.by_key(key),
        (None, Some(fp)) => service.auditors.by_certificate(&fp),
        (None, None) => None,
    };
    let Some(auditor) = auditor.map(str::to_owned) else {
        tracing::info!(%path, "audit API call refused: no auditor");
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the audit API needs an auditor: an API key (Authorization: Bearer KEY) or a listed client certificate over HTTPS",
        );
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    };
    tracing::info!(%auditor, %path, %query, "audit API call");
    let params = match Params::parse(&query) {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    match (path.as_str(), method) {
        ("/api/v1/whoami", Method::GET) => ok_json(&json!({ "auditor": auditor })),
        ("/api/v1/sharing", Method::GET) => sharing(service, &params).await,
        ("/api/v1/coverage", Method::GET) => coverage(service).await,
        ("/api/v1/exchanges", Method::GET) => exchanges(service, &params).await,
        ("/api/v1/evidence", Method::GET) => evidence(service, &params).await,
        ("/api/v1/pull", Method::POST) => pull(service).await,
        (
            "/api/v1/whoami" | "/api/v1/sharing" | "/api/v1/coverage" | "/api/v1/exchanges"
            | "/api/v1/evidence" | "/api/v1/pull",
            m,
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "invalid_method", format!("{path} does not take {m}")),
        _ => error(StatusCode::NOT_FOUND, "not_found", format!("no resource {path:?}")),
    }
}

/// The query string, decoded; each resource says which names it takes.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: &str) -> Result<Self, Invalid> {
        let mut out = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(name), Some(value)) = (decode_component(name), decode_component(raw)) else {
                return Err(invalid(name, "not valid percent-encoded UTF-8"));
            };
            out.push((name, value));
        }
        Ok(Self(out))
    }

    /// Refuses names other than `known`.
    fn only(&self, known: &[&str]) -> Result<(), Invalid> {
        match self.0.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            Some((n, _)) => {
                Err(invalid(n, &format!("unknown parameter; this resource takes {}", known.join(", "))))
            }
            None => Ok(()),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// `[from, until)` in Unix ms: the last 30 days by default.
    fn period(&self) -> Result<(i64, i64), Invalid> {
        let now = to_millis(SystemTime::now());
        let until = match self.get("until") {
            Some(v) => parse_time("until", v).map_err(|e| invalid("until", &reason(&e)))?,
            None => now,
        };
        let from = match self.get("from") {
            Some(v) => parse_time("from", v).map_err(|e| invalid("from", &reason(&e)))?,
            None => until.saturating_sub(DEFAULT_PERIOD_MS),
        };
        if from >= until {
            return Err(invalid("from", "must be before until"));
        }
        Ok((from, until))
    }
}

fn reason(e: &QueryError) -> String {
    let text = e.to_string();
    // "invalid_filter: from: ..." -> the part after the field.
    text.splitn(3, ": ").nth(2).map_or(text.clone(), str::to_owned)
}

/// A malformed parameter: answered 400 `invalid_filter`, naming the parameter.
struct Invalid(String);

fn invalid(name: &str, why: &str) -> Invalid {
    let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    Invalid(format!("{name}: {why}"))
}

impl From<Invalid> for Answer {
    fn from(e: Invalid) -> Self {
        error(StatusCode::BAD_REQUEST, "invalid_filter", e.0)
    }
}

fn id_param<T: std::str::FromStr>(params: &Params, name: &str) -> Result<Option<String>, Invalid>
where
    T::Err: std::fmt::Display,
{
    match params.get(name) {
        None => Ok(None),
        Some(v) => v.parse::<T>().map(|_| Some(v.to_owned())).map_err(|e| invalid(name, &e.to_string())),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

async fn sharing(service: &AuditService, params: &Params) -> Answer {
    if let Err(e) = params.only(&["from", "until", "member", "service"]) {
        return e.into();
    }
    let period = match params.period() {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    let member = match id_param::<lienthong_types::MemberId>(params, "member") {
        Ok(m) => m,
        Err(e) => return e.into(),
    };
    let svc = match id_param::<lienthong_types::ServiceId>(params, "service") {
        Ok(s) => s,
        Err(e) => return e.into(),
    };
    let Some(conf) = service.conf() else { return no_configuration() };
    let collector = service.collector.clone();
    let report = blocking(move || {
        collector.records(period).map(|records| {
            let report = sharing_report(records.iter().map(|r| &r.record), &conf.conf, period);
            narrow(report, member.as_deref(), svc.as_deref())
        })
    })
    .await;
    match report {
        Some(Ok(report)) => ok_json(&report),
        Some(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()),
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the report failed"),
    }
}

/// Keeps what concerns `member` (as consumer or provider, or as a grant's owner or subject) and
/// `service`.
fn narrow(mut r: SharingReport, member: Option<&str>, service: Option<&str>) -> SharingReport {
    let of = |id: &str, m: &str| id == m || id.strip_prefix(m).is_some_and(|rest| rest.starts_with('/'));
    let pair_ok = |p: &Pair| {
        member.is_none_or(|m| p.consumer_member == m || p.provider_member == m)
            && service.is_none_or(|s| p.service == s)
    };
    r.pairs.retain(|row| pair_ok(&row.pair));
    r.denied.retain(|row| pair_ok(&row.pair));
    r.without_grant.retain(|row| pair_ok(&row.pair));
    r.grants.retain(|g| {
        member.is_none_or(|m| of(&g.service, m) || of(&g.subject, m))
            && service.is_none_or(|s| g.service == s)
    });
    r
}

async fn coverage(service: &AuditService) -> Answer {
    let collector = service.collector.clone();
    let Some(Ok(held)) = blocking(move || collector.coverage()).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "storage", "the coverage could not be read");
    };
    let status = service.pull_status();
    // Every node the configuration registers, and every node the service pulls, reported or not.
    let mut names: BTreeSet<String> = held.iter().map(|c| c.node.clone()).collect();
    names.extend(service.nodes.iter().map(|n| n.node.to_string()));
    if let Some(conf) = service.conf() {
        names.extend(conf.conf.nodes.keys().map(ToString::to_string));
    }
    let nodes: Vec<Value> = names
        .into_iter()
        .map(|name| {
            let pulled = service.nodes.iter().any(|n: &NodeSource| n.node.to_string() == name);
            let mut v = match held.iter().find(|c| c.node == name) {
                Some(c) => json!({
                    "node": name,
                    "reported": true,
                    "checkpoint_size": c.checkpoint_size,
                    "checkpoint_time": format_time(c.checkpoint_time_ms),
                    "held": c.held,
                    "contiguous_until": c.contiguous_until,
                    "missing": c.missing,
                    "gaps": c.gaps.iter().map(|g| [g.start, g.end]).collect::<Vec<_>>(),
                }),
                None => json!({ "node": name, "reported": false, "checkpoint_size": 0, "held": 0,
                                "contiguous_until": 0, "missing": 0, "gaps": [] }),
            };
            v["pulled"] = json!(pulled);
            if let Some(s) = status.get(&name) {
                v["last_pull"] = json!(s);
            }
            v
        })
        .collect();
    ok_json(&json!({ "nodes": nodes }))
}

fn record_json(c: &CollectedRecord) -> Value {
    let r = &c.record;
    let direction = match pb::Direction::try_from(r.direction) {
        Ok(pb::Direction::Request) => "request",
        Ok(pb::Direction::Response) => "response",
        _ => "unspecified",
    };
    let role = match pb::Role::try_from(r.role) {
        Ok(pb::Role::Consumer) => "consumer",
        Ok(pb::Role::Provider) => "provider",
        _ => "unspecified",
    };
    let time = if r.message_time_ms != 0 { r.message_time_ms } else { r.logged_at_ms };
    json!({
        "node": c.node,
        "leaf_index": c.leaf_index,
        "leaf_hash": hex::encode(c.leaf_hash),
        "message_id": r.message_id,
        "request_id": r.request_id,
        "direction": direction,
        "role": role,
        "time": format_time(time),
        "client": id_text(r.client.clone(), "client"),
        "service": id_text(r.service.clone(), "service"),
        "method": r.method,
        "path": r.path,
        "status": r.status,
        "fault_code": r.fault.as_ref().map(|f| f.code.clone()).filter(|c| !c.is_empty()),
        "grant_id": Some(r.grant_id.clone()).filter(|g| !g.is_empty()),
    })
}

/// A wire id in X-Road text form; a malformed one shows as null rather than failing the page.
fn id_text<T: IntoDomain>(id: Option<T>, field: &'static str) -> Value
where
    T::Domain: std::fmt::Display,
{
    id.and_then(|i| i.into_domain(field).ok()).map_or(Value::Null, |d| Value::String(d.to_string()))
}

async fn exchanges(service: &AuditService, params: &Params) -> Answer {
    if let Err(e) = params.only(&["message_id", "client", "from", "until", "limit"]) {
        return e.into();
    }
    let limit = match params.get("limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n @ 1..=MAX_EXCHANGES)) => n,
        Some(_) => return invalid("limit", &format!("must be a number from 1 to {MAX_EXCHANGES}")).into(),
    };
    let collector = service.collector.clone();
    let found = if let Some(id) = params.get("message_id") {
        if id.len() > 1024 {
            return invalid("message_id", "longer than 1024 bytes").into();
        }
        let id = id.to_owned();
        blocking(move || collector.by_exchange(&id)).await
    } else if let Some(client) = params.get("client") {
        let client: lienthong_types::ClientId = match client.parse() {
            Ok(c) => c,
            Err(e) => return invalid("client", &format!("{e}")).into(),
        };
        let period = match params.period() {
            Ok(p) => p,
            Err(e) => return e.into(),
        };
        blocking(move || collector.by_client(&client, period, limit)).await
    } else {
        return invalid("message_id", "give message_id, or client with an optional period").into();
    };
    match found {
        Some(Ok(records)) => {
            let records: Vec<Value> = records.iter().take(limit).map(record_json).collect();
            ok_json(&json!({ "records": records }))
        }
        Some(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()),
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the lookup failed"),
    }
}

/// Fetches each side of the exchange from the nodes that logged it (as collected), merges them
/// into one bundle and verifies it against the anchor, as `lienthong audit verify` would.
async fn evidence(service: &AuditService, params: &Params) -> Answer {
    if let Err(e) = params.only(&["message_id", "request_id"]) {
        return e.into();
    }
    let Some(message_id) = params.get("message_id").map(str::to_owned) else {
        return invalid("message_id", "required").into();
    };
    if message_id.len() > 1024 {
        return invalid("message_id", "longer than 1024 bytes").into();
    }
    let request_id = params.get("request_id").map(str::to_owned);
    let Some(conf) = service.conf() else { return no_configuration() };
    let collector = service.collector.clone();
    let id = message_id.clone();
    let Some(Ok(records)) = blocking(move || collector.by_exchange(&id)).await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            "the collected records could not be read",
        );
    };
    let nodes: BTreeSet<String> = records
        .iter()
        .filter(|r| request_id.as_deref().is_none_or(|q| r.record.request_id == q))
        .map(|r| r.node.clone())
        .collect();
    if nodes.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no collected record of exchange {message_id:?}"),
        );
    }
    let mut query = format!("/audit/v1/evidence?exchange={}", encode_component(&message_id));
    if let Some(r) = &request_id {
        query.push_str(&format!("&request_id={}", encode_component(r)));
    }
    let mut parts = Vec::new();
    let mut missing = Vec::new();
    for node in &nodes {
        let Some(source) = service.nodes.iter().find(|s| s.node.to_string() == *node) else {
            missing.push(json!({ "node": node, "reason": "this service does not pull that node" }));
            continue;
        };
        match service.get(source, &conf, &query).await {
            Ok(bytes) => parts.push(bytes.to_vec()),
            Err(e) => missing.push(json!({ "node": node, "code": e.code(), "reason": e.to_string() })),
        }
    }
    if parts.is_empty() {
        return ok_json(&json!({ "valid": false, "missing_sides": missing,
            "message": "no node that logged the exchange returned its evidence" }));
    }
    let merged = match bundle::merge(&parts) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_GATEWAY, "node_invalid", e.to_string()),
    };
    let anchor = service.anchor.clone();
    let bytes = merged.clone();
    let Some(verified) = blocking(move || bundle::verify(&bytes, &anchor)).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the verification failed to run");
    };
    let (report, valid) = match verified {
        Ok(report) => (report, true),
        Err(invalid) => (*invalid.0, false),
    };
    ok_json(&json!({
        "valid": valid && missing.is_empty(),
        "report": report,
        "missing_sides": missing,
        "bundle": STANDARD.encode(&merged),
    }))
}

fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn pull(service: &AuditService) -> Answer {
    let reports = service.pull_all().await;
    let nodes: Vec<Value> = reports
        .iter()
        .map(|r| match &r.outcome {
            Ok((stored, last)) => json!({
                "node": r.node,
                "stored": stored,
                "checkpoint_size": last.as_ref().map(|l| l.checkpoint_size),
                "contiguous_until": last.as_ref().map(|l| l.contiguous_until),
            }),
            Err(e) => json!({ "node": r.node, "code": e.code(), "error": e.to_string() }),
        })
        .collect();
    ok_json(&json!({ "nodes": nodes }))
}
