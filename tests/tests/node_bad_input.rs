//! Bad inputs 1-8 of the test matrix (`/work/shared/design/test-matrix.md`), end to end in the
//! standard in-process topology: node 0 hosts the consumer `CONG_DVC`, nodes 1 and 2 provide
//! `DANCU` with backends 0 and 1.
//!
//! Every refusal is checked for the same things: the stable code (the `X-Road-Error` header and
//! the body's `type`, or the fault of a response envelope), the status X-Road's rule gives it,
//! a `detail` UUID that a log record of the refusing node carries in its fault, nothing internal
//! in the answer, no backend reached, and no success record written.
//!
//! Consumer-side cases go through node 0's r1 listener. Provider-side cases act as a peer node
//! with a hand-made [`PeerClient`] and hand-signed envelopes; the consumer's checks of responses
//! are driven by a fake provider listening on node 1's registered address with node 1's keys.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use lienthong_exchange::EXCHANGE_PATH;
use lienthong_exchange::envelope::{self, ENVELOPE_HEADER, Signer};
use lienthong_exchange::headers::request_hash;
use lienthong_globalconf::GlobalConf;
use lienthong_node::home::NodeKeys;
use lienthong_node::peer::{PeerBody, PeerClient, PeerClientOptions, PeerError, PeerServer, PeerTrust};
use lienthong_pki::tls::TlsIdentity;
use lienthong_pki::{Certificate, CertificateAuthority, Csr, KeyAlgorithm, PrivateKey, Validity};
use lienthong_proto::exchange::v1 as ex;
use lienthong_proto::msglog::v1::{Direction, LogRecord};
use lienthong_testkit::names::*;
use lienthong_testkit::{MockBackend, Mode, Topology, member, millis, node_id, service, subsystem, within};
use lienthong_types::{ClientId, ServiceId};
use sha2::{Digest, Sha256, Sha512};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

// ---------------------------------------------------------------------------------------------
// What every refusal must look like
// ---------------------------------------------------------------------------------------------

/// Log sizes and backend hits before a case, to see what the case added.
#[derive(Debug)]
struct Before {
    records: Vec<usize>,
    hits: Vec<usize>,
}

fn before(t: &Topology) -> Before {
    Before {
        records: (0..t.nodes.len()).map(|i| if running(t, i) { t.records(i).len() } else { 0 }).collect(),
        hits: t.backends.iter().map(|b| b.hits()).collect(),
    }
}

fn running(t: &Topology, i: usize) -> bool {
    t.nodes[i].handle.is_some()
}

fn hits(t: &Topology) -> Vec<usize> {
    t.backends.iter().map(|b| b.hits()).collect()
}

/// The records node `i` wrote since `b`.
fn new_records(t: &Topology, b: &Before, i: usize) -> Vec<LogRecord> {
    if !running(t, i) {
        return Vec::new();
    }
    t.records(i).split_off(b.records[i])
}

/// A record of a released answer: a response without a fault.
fn is_success(r: &LogRecord) -> bool {
    r.direction == Direction::Response as i32 && r.fault.is_none()
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Nothing internal in text shown to a client or a peer: no backend address, no panic or
/// stack trace, no source location.
fn assert_no_leak(t: &Topology, text: &str, what: &str) {
    for b in &t.backends {
        assert!(!text.contains(&b.addr.to_string()), "{what}: backend address leaked: {text}");
    }
    for needle in ["127.0.0.1", "panicked", "backtrace", "stack", ".rs:", "RUST_"] {
        assert!(!text.contains(needle), "{what}: {needle:?} leaked: {text}");
    }
}

fn status_for(code: &str) -> u16 {
    if code.starts_with("client.") { 400 } else { 500 }
}

/// Checks a gateway error that consumer node `via` answered with `code`: status, header, JSON
/// body, the detail UUID in a fault of that node's log, no leak, no backend reached, no success
/// record anywhere. Returns node `via`'s new records.
fn assert_refused(
    t: &Topology,
    b: &Before,
    via: usize,
    resp: &Response<Bytes>,
    code: &str,
    what: &str,
) -> Vec<LogRecord> {
    let body = String::from_utf8_lossy(resp.body()).into_owned();
    assert_eq!(resp.status(), status_for(code), "{what}: {body}");
    let header = resp.headers().get("x-road-error").and_then(|v| v.to_str().ok());
    assert_eq!(header, Some(code), "{what}: {body}");
    let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(ctype.starts_with("application/json"), "{what}: content type {ctype}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
    assert_eq!(v["type"], code, "{what}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
    let detail = v["detail"].as_str().unwrap_or_default();
    assert!(is_uuid(detail), "{what}: detail {detail:?} is not a UUID");
    assert_no_leak(t, &body, what);
    assert_eq!(hits(t), b.hits, "{what}: a backend was reached");
    let records = new_records(t, b, via);
    let refusal = records
        .iter()
        .find(|r| r.fault.as_ref().is_some_and(|f| f.detail == detail))
        .unwrap_or_else(|| panic!("{what}: no record of node {via} has detail {detail}: {records:#?}"));
    let fault = refusal.fault.as_ref().expect("fault");
    assert_eq!(fault.code, code, "{what}");
    assert_eq!(refusal.status, u32::from(status_for(code)), "{what}");
    for i in 0..t.nodes.len() {
        let success: Vec<_> = new_records(t, b, i).into_iter().filter(is_success).collect();
        assert!(success.is_empty(), "{what}: node {i} wrote a success record: {success:#?}");
    }
    records
}

/// Calls node `via` and expects node `via` itself to refuse with `code`: one record (the
/// refusal), nothing sent on to a provider node.
async fn refused_by_consumer(
    t: &Topology,
    via: usize,
    req: Request<Full<Bytes>>,
    code: &str,
    what: &str,
) -> Vec<LogRecord> {
    let b = before(t);
    let resp = t.call(via, req).await;
    refusal_of_consumer(t, &b, via, &resp, code, what)
}

fn refusal_of_consumer(
    t: &Topology,
    b: &Before,
    via: usize,
    resp: &Response<Bytes>,
    code: &str,
    what: &str,
) -> Vec<LogRecord> {
    let records = assert_refused(t, b, via, resp, code, what);
    assert_eq!(records.len(), 1, "{what}: only the refusal is logged: {records:#?}");
    assert_eq!(records[0].direction, Direction::Request as i32, "{what}: refused before anything was sent");
    for i in (0..t.nodes.len()).filter(|&i| i != via) {
        assert!(new_records(t, b, i).is_empty(), "{what}: node {i} saw the request");
    }
    records
}

/// Calls node 0 and expects a provider node (1 or 2) to refuse with `code`, which node 0
/// relays: node 0 logs its signed request and the relayed refusal, the provider one refusal,
/// both under the provider's detail (the one the client sees), for the same request id.
async fn refused_by_provider(t: &Topology, req: Request<Full<Bytes>>, code: &str, what: &str) -> LogRecord {
    let b = before(t);
    let resp = t.call(0, req).await;
    let consumer = assert_refused(t, &b, 0, &resp, code, what);
    assert_eq!(consumer.len(), 2, "{what}: the signed request, then the refusal: {consumer:#?}");
    assert_eq!(consumer[0].direction, Direction::Request as i32, "{what}");
    assert!(consumer[0].fault.is_none() && consumer[0].signature.is_some(), "{what}");
    let provider: Vec<LogRecord> = (1..t.nodes.len()).flat_map(|i| new_records(t, &b, i)).collect();
    assert_eq!(provider.len(), 1, "{what}: the provider logs its refusal only: {provider:#?}");
    let p = provider.into_iter().next().expect("one record");
    let fault = p.fault.as_ref().expect("the provider's record has the fault");
    assert_eq!(fault.code, code, "{what}");
    assert!(is_uuid(&fault.detail), "{what}");
    let relayed = consumer[1].fault.as_ref().expect("the consumer's refusal record");
    assert_eq!(relayed.detail, fault.detail, "{what}: one detail id across both nodes");
    assert_eq!(p.request_id, consumer[1].request_id, "{what}: both records name the same request");
    p
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// An r1 request with exactly these headers (`Topology::call` adds only the host).
fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &[u8])],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut r = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        r = r.header(*name, http::HeaderValue::from_bytes(value).expect("a sendable header value"));
    }
    r.body(Full::new(body.into())).expect("request")
}

fn get_as(client: &str, uri: &str) -> Request<Full<Bytes>> {
    request("GET", uri, &[("x-road-client", client.as_bytes())], "")
}

fn r1(svc: &str, rest: &str) -> String {
    format!("/r1/{svc}{rest}")
}

async fn ok(t: &Topology, req: Request<Full<Bytes>>, what: &str) {
    let resp = t.call(0, req).await;
    assert_eq!(resp.status(), 200, "{what}: {:?} {}", resp.headers(), String::from_utf8_lossy(resp.body()));
    assert!(resp.headers().get("x-road-error").is_none(), "{what}");
}

// ---------------------------------------------------------------------------------------------
// 1-2. Malformed identifiers; X-Road-Client missing, repeated, not hosted, unknown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_identifiers_and_bad_clients_are_refused_by_the_consumer_node() {
    let t = Topology::standard().await;
    let long = "a".repeat(256);
    const SVC: &str = "client.invalid_service_identifier";
    let paths: Vec<(String, &str, &str)> = vec![
        (r1(DANCU, ""), SVC, "4 identifier segments"),
        ("/r1/VN/GOV".into(), SVC, "2 identifier segments"),
        ("/r1/".into(), SVC, "no identifier segment"),
        ("/r1/VN/GOV//dancu/cong-dan".into(), SVC, "empty member code"),
        (r1(DANCU, "/"), SVC, "empty service code"),
        ("/r1/VN/GOV/000.00.00.G01/dan%ZZcu/cong-dan".into(), SVC, "bad percent-encoding"),
        (r1(DANCU, "/cong-dan%4"), SVC, "truncated percent-encoding"),
        (r1(DANCU, "/cong%C3%28dan"), SVC, "percent-encoded invalid UTF-8"),
        (r1(DANCU, "/cong%0Adan"), SVC, "percent-encoded line feed"),
        (r1(DANCU, "/cong%00dan"), SVC, "percent-encoded NUL"),
        (r1(DANCU, "/cong_dan"), SVC, "'_' is outside the allowed set"),
        (r1(DANCU, "/cong%20dan"), SVC, "space"),
        (r1(DANCU, "/cong%2Fdan"), SVC, "'/' inside one segment"),
        (r1(DANCU, "/c%C3%B4ng-d%C3%A2n"), SVC, "non-ASCII letters"),
        (r1(DANCU, &format!("/{long}")), SVC, "256-character service code"),
        (format!("/r1/{long}/GOV/000.00.00.G01/dancu/cong-dan"), SVC, "256-character instance"),
        (r1(CONG_DAN, "").replacen("/r1/", "/r2/", 1), "client.bad_request", "version r2"),
        (r1(CONG_DAN, "").replacen("/r1/", "/r10/", 1), "client.bad_request", "version r10"),
        (r1(CONG_DAN, "").replacen("/r1/", "/R1/", 1), "client.bad_request", "version R1"),
        (r1(CONG_DAN, "").replacen("/r1/", "/v1/", 1), "client.bad_request", "version v1"),
        (CONG_DAN.into(), "client.bad_request", "no version at all"),
    ];
    for (path, code, what) in &paths {
        let path = if path.starts_with('/') { path.clone() } else { format!("/{path}") };
        refused_by_consumer(&t, 0, get_as(CONG_DVC, &path), code, what).await;
    }
    // 255 characters is X-Road's own limit and still valid: the code is merely unknown.
    let at_limit = r1(DANCU, &format!("/{}", "a".repeat(255)));
    refused_by_consumer(
        &t,
        0,
        get_as(CONG_DVC, &at_limit),
        "server.clientproxy.unknown_service",
        "255 chars",
    )
    .await;

    // The same rules for X-Road-Client, with its own code.
    const CLIENT: &str = "client.invalid_client_identifier";
    let target = r1(CONG_DAN, "/x");
    let clients: Vec<(Vec<u8>, &str)> = vec![
        (b"VN/GOV".to_vec(), "2 segments"),
        (b"VN/GOV/000.00.00.G02/cong-dvc/x".to_vec(), "5 segments"),
        (b"".to_vec(), "empty value"),
        (b"VN//000.00.00.G02/cong-dvc".to_vec(), "empty class"),
        (b"VN/GOV/000.00.00.G02/".to_vec(), "empty subsystem"),
        (b"VN/GOV/000.00.00.G02/cong%ZZ".to_vec(), "bad percent-encoding"),
        (b"VN/GOV/000.00.00.G02/cong%C3%28".to_vec(), "percent-encoded invalid UTF-8"),
        (b"VN/GOV/000.00.00.G02/cong\xC3\x28".to_vec(), "raw invalid UTF-8"),
        (b"VN/GOV/000.00.00.G02/c\xC3\xB4ng".to_vec(), "raw UTF-8 (not header text)"),
        (b"VN/GOV/000.00.00.G02/cong%0Advc".to_vec(), "percent-encoded line feed"),
        (b"VN/GOV/000.00.00.G02/cong\tdvc".to_vec(), "tab"),
        (b"VN/GOV/000.00.00.G02/cong dvc".to_vec(), "space"),
        (b"VN/GOV/000.00.00.G02/cong_dvc".to_vec(), "'_'"),
        (format!("VN/GOV/000.00.00.G02/{long}").into_bytes(), "256-character subsystem"),
    ];
    for (value, what) in &clients {
        let req = request("GET", &target, &[("x-road-client", value)], "");
        refused_by_consumer(&t, 0, req, CLIENT, &format!("X-Road-Client: {what}")).await;
    }

    // 2. Missing or repeated X-Road-Client (X-Road takes the last; refusing is safer).
    refused_by_consumer(&t, 0, request("GET", &target, &[], ""), CLIENT, "no X-Road-Client").await;
    let twice = [("x-road-client", CONG_DVC.as_bytes()), ("x-road-client", CONG_DVC.as_bytes())];
    refused_by_consumer(&t, 0, request("GET", &target, &twice, ""), CLIENT, "X-Road-Client twice").await;
    let two = [("x-road-client", CONG_DVC.as_bytes()), ("x-road-client", DANCU.as_bytes())];
    refused_by_consumer(&t, 0, request("GET", &target, &two, ""), CLIENT, "two X-Road-Clients").await;

    // A client hosted on another node, or on no node at all.
    const UNKNOWN: &str = "client.unknown_client";
    refused_by_consumer(&t, 0, get_as(DANCU, &target), UNKNOWN, "node 1's client at node 0").await;
    refused_by_consumer(&t, 1, get_as(CONG_DVC, &target), UNKNOWN, "node 0's client at node 1").await;
    refused_by_consumer(&t, 0, get_as(BCA, &target), UNKNOWN, "another member, member-level").await;
    let unknown =
        ["VN/GOV/000.00.00.G99/khong-co", "VN/GOV/000.00.00.G02/khong-co", "XX/GOV/000.00.00.G02/cong-dvc"];
    for c in unknown {
        refused_by_consumer(&t, 0, get_as(c, &target), UNKNOWN, c).await;
    }
    // A method r1 does not have.
    let req = request("FROB", &target, &[("x-road-client", CONG_DVC.as_bytes())], "");
    refused_by_consumer(&t, 0, req, "client.invalid_http_method", "method FROB").await;

    // After all that, the node still serves.
    ok(&t, Topology::r1("GET", &target, ""), "a good call after the bad ones").await;
    within(t.shutdown()).await;
}

// ---------------------------------------------------------------------------------------------
// 3 and 8. Unknown member / subsystem / service, service disabled; access not granted, revoked,
// limited to some methods and paths
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_disabled_services_and_missing_grants_are_refused() {
    let mut t = Topology::standard().await;
    let unknown_member = "server.clientproxy.unknown_member";
    for (path, what) in [
        ("/r1/VN/GOV/000.00.00.G99/dancu/cong-dan", "unknown member"),
        ("/r1/VN/BUS/000.00.00.G01/dancu/cong-dan", "unknown member class"),
        ("/r1/XX/GOV/000.00.00.G01/dancu/cong-dan", "unknown instance"),
        ("/r1/VN/GOV/000.00.00.G01/khong-co/cong-dan", "unknown subsystem"),
    ] {
        refused_by_consumer(&t, 0, Topology::r1("GET", path, ""), unknown_member, what).await;
    }
    let path = r1(DANCU, "/khong-co");
    refused_by_consumer(
        &t,
        0,
        Topology::r1("GET", &path, ""),
        "server.clientproxy.unknown_service",
        "service",
    )
    .await;
    // The consumer's own subsystem publishes nothing.
    let path = r1(CONG_DVC, "/cong-dan");
    refused_by_consumer(&t, 0, Topology::r1("GET", &path, ""), "server.clientproxy.unknown_service", "own")
        .await;

    // A disabled service is refused by the provider node, and works again once re-enabled.
    let cong_dan = r1(CONG_DAN, "/001090012345");
    ok(&t, Topology::r1("GET", &cong_dan, ""), "before disabling").await;
    t.publish_with(&service(CONG_DAN), &node_id(NODE_BCA_1), true).await;
    t.sync().await;
    let req = Topology::r1("GET", &cong_dan, "");
    refused_by_provider(&t, req, "server.serverproxy.service_disabled", "disabled").await;
    t.publish_with(&service(CONG_DAN), &node_id(NODE_BCA_1), false).await;
    t.sync().await;
    ok(&t, Topology::r1("GET", &cong_dan, ""), "re-enabled").await;

    // 8. HO_TICH is published but not granted.
    const DENIED: &str = "server.serverproxy.access_denied";
    let ho_tich = r1(HO_TICH, "/ho-tich/123");
    refused_by_provider(&t, Topology::r1("GET", &ho_tich, ""), DENIED, "never granted").await;

    // Granted, then revoked in a newer configuration.
    let client = ClientId::Subsystem(subsystem(CONG_DVC));
    let grant = t.grant(&service(HO_TICH), &client).await;
    t.sync().await;
    ok(&t, Topology::r1("GET", &ho_tich, ""), "granted").await;
    t.revoke(&grant).await;
    t.sync().await;
    refused_by_provider(&t, Topology::r1("GET", &ho_tich, ""), DENIED, "grant revoked").await;

    // A grant for GET under /ho-tich/ only.
    t.grant_endpoints(&service(HO_TICH), &client, &[("GET", "/ho-tich/*")]).await;
    t.sync().await;
    ok(&t, Topology::r1("GET", &ho_tich, ""), "the granted method and path").await;
    ok(&t, Topology::r1("GET", &r1(HO_TICH, "/ho-tich/123/khai-sinh?x=1"), ""), "deeper path").await;
    for (method, rest) in [
        ("POST", "/ho-tich/123"),
        ("DELETE", "/ho-tich/123"),
        ("GET", "/khai-sinh/123"),
        ("GET", "/ho-tich"),
        ("GET", ""),
        ("GET", "/ho-tichx/1"),
    ] {
        let req = Topology::r1(method, &r1(HO_TICH, rest), "");
        refused_by_provider(&t, req, DENIED, &format!("{method} {rest} outside the grant")).await;
    }
    // A dot segment may match a grant's pattern as text, but a backend would resolve it outside
    // the granted path: the consumer refuses it as the client's mistake (and the provider
    // refuses it too, see the provider-side test).
    for rest in ["/ho-tich/../admin", "/ho-tich/%2e%2E/admin", "/ho-tich/./1", "/ho-tich/123/.."] {
        let req = Topology::r1("GET", &r1(HO_TICH, rest), "");
        refused_by_consumer(&t, 0, req, "client.bad_request", rest).await;
    }
    within(t.shutdown()).await;
}

// ---------------------------------------------------------------------------------------------
// 4-5. Body and header limits, slow bodies, request smuggling: raw HTTP/1.1 on a TCP socket
// ---------------------------------------------------------------------------------------------

/// The node's answer on a raw connection: the first response, and how many responses the
/// stream held (a smuggled request would add one).
#[derive(Debug)]
struct Raw {
    first: Option<Response<Bytes>>,
    responses: usize,
    text: String,
}

/// Parses what a raw connection received, up to the node's close.
fn parse_raw(bytes: &[u8]) -> Raw {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let responses = text.matches("HTTP/1.1 ").count();
    let first = bytes.windows(4).position(|w| w == b"\r\n\r\n").and_then(|end| {
        let head = std::str::from_utf8(&bytes[..end]).ok()?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let mut resp = Response::builder().status(status);
        let mut length = None;
        for line in lines {
            let (name, value) = line.split_once(':')?;
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
            resp = resp.header(name.trim(), value.trim());
        }
        let rest = &bytes[end + 4..];
        let body = Bytes::copy_from_slice(&rest[..length.unwrap_or(0).min(rest.len())]);
        resp.body(body).ok()
    });
    Raw { first, responses, text }
}

/// Reads until the node closes the connection (or resets it: what arrived before counts).
async fn read_to_close(tcp: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match within(tcp.read(&mut buf)).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `bytes` on a fresh connection to `addr` and reads everything the node answers.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> Raw {
    let mut tcp = within(TcpStream::connect(addr)).await.expect("connect");
    // The node may answer and close before reading everything; what it answered still counts.
    let _ = within(tcp.write_all(bytes)).await;
    parse_raw(&read_to_close(&mut tcp).await)
}

fn consumer_addr(t: &Topology, i: usize) -> SocketAddr {
    t.nodes[i].handle().http.expect("an HTTP listener")
}

/// The head of a raw r1 request from `CONG_DVC` to `CONG_DAN`, without the final empty line.
fn raw_head(method: &str, extra: &str) -> String {
    format!(
        "{method} {} HTTP/1.1\r\nhost: node\r\nx-road-client: {CONG_DVC}\r\n{extra}",
        r1(CONG_DAN, "/001090012345")
    )
}

/// A complete, valid GET that would reach backend 0 or 1 if the node ever parsed it.
fn smuggled_get() -> String {
    format!("{}connection: close\r\n\r\n", raw_head("GET", ""))
}

/// The node still serves: health and a real exchange.
async fn assert_healthy(t: &Topology, what: &str) {
    let resp = t.call(0, request("GET", "/healthz", &[], "")).await;
    assert_eq!(resp.status(), 200, "{what}: /healthz");
    ok(t, Topology::r1("GET", &r1(CONG_DAN, "/1"), ""), what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_slow_and_smuggled_requests_are_refused() {
    let t = Topology::standard_with(
        "[limits]\nmax_body_bytes = 1024\nbody_idle_timeout_secs = 1\nmax_header_bytes = 2048\n",
    )
    .await;
    let addr = consumer_addr(&t, 0);
    let path = r1(CONG_DAN, "/001090012345");

    // The limit itself is allowed.
    ok(&t, Topology::r1("POST", &path, vec![b'x'; 1024]), "a body of exactly the limit").await;
    // Over the limit with Content-Length: refused before reading the body.
    let req = Topology::r1("POST", &path, vec![b'x'; 1025]);
    refused_by_consumer(&t, 0, req, "client.request_too_large", "1025 bytes with Content-Length").await;
    // Over the limit, chunked (no Content-Length): refused while reading.
    let b = before(&t);
    let chunk = "y".repeat(700);
    let chunked = format!(
        "{}transfer-encoding: chunked\r\nconnection: close\r\n\r\n2bc\r\n{chunk}\r\n2bc\r\n{chunk}\r\n0\r\n\r\n",
        raw_head("POST", "")
    );
    let got = raw(addr, chunked.as_bytes()).await;
    let resp = got.first.expect("an answer to the chunked body");
    refusal_of_consumer(&t, &b, 0, &resp, "client.request_too_large", "1400 bytes chunked");

    // A body that stalls: refused once it has sent nothing for the idle timeout (1 s).
    let b = before(&t);
    let mut tcp = within(TcpStream::connect(addr)).await.expect("connect");
    let head = format!("{}content-length: 100\r\n\r\n0123456789", raw_head("POST", ""));
    let started = Instant::now();
    within(tcp.write_all(head.as_bytes())).await.expect("send the start of the body");
    let got = parse_raw(&read_to_close(&mut tcp).await);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(10), "{waited:?}");
    let resp = got.first.expect("an answer to the stalled body");
    refusal_of_consumer(&t, &b, 0, &resp, "client.bad_request", "stalled body");
    drop(tcp);

    // Headers over limits.max_header_bytes (2048): our own check, with our error body.
    let big: Vec<(String, Vec<u8>)> = (0..30).map(|i| (format!("x-pad-{i}"), vec![b'p'; 80])).collect();
    let headers: Vec<(&str, &[u8])> = std::iter::once(("x-road-client", CONG_DVC.as_bytes()))
        .chain(big.iter().map(|(n, v)| (n.as_str(), v.as_slice())))
        .collect();
    let req = request("GET", &path, &headers, "");
    refused_by_consumer(&t, 0, req, "client.bad_request", "3 KiB of headers").await;
    // More headers than hyper parses (100), and one header larger than its read buffer
    // (128 KiB): hyper answers 431 itself, before any handler runs, so there is no gateway error
    // body and no log record; nothing is forwarded and the node keeps serving.
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let huge = format!("x-huge: {}\r\n", "h".repeat(200 * 1024));
    for (extra, what) in [(many, "150 headers"), (huge, "a 200 KiB header")] {
        let b = before(&t);
        let got =
            raw(addr, format!("{}{extra}connection: close\r\n\r\n", raw_head("GET", "")).as_bytes()).await;
        let status = got.first.as_ref().map(|r| r.status().as_u16());
        assert_eq!(status, Some(431), "{what}: {}", got.text);
        assert!(got.first.as_ref().is_some_and(|r| r.headers().get("x-road-error").is_none()), "{what}");
        assert_eq!(hits(&t), b.hits, "{what}");
        assert!(new_records(&t, &b, 0).is_empty(), "{what}: hyper answered, the handler never ran");
    }
    // HTTP/2 floods do not apply to the plain consumer listener: it speaks HTTP/1.1 only, so an
    // HTTP/2 preface is not a request it serves (no SETTINGS frame comes back).
    let got = raw(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await;
    assert!(
        got.first.as_ref().is_none_or(|r| r.status().is_client_error() || r.status().is_server_error()),
        "HTTP/2 preface: {}",
        got.text
    );
    assert!(got.text.is_empty() || got.text.starts_with("HTTP/1.1 "), "no HTTP/2 frames: {:?}", got.text);
    assert_healthy(&t, "after oversized requests").await;

    // 5. Request smuggling: framing that two parsers could read differently, each followed by a
    // valid request that would reach a backend if the node read the stream the other way.
    let smuggle = smuggled_get();
    let post = raw_head("POST", "");
    // Both Content-Length and Transfer-Encoding: hyper drops Content-Length before the handler
    // sees the request, reads the body as chunked (RFC 9112 section 6.1 allows this) and closes
    // the connection after answering, which is what defeats smuggling: the request after the
    // chunked body is never read. The outer request is an ordinary exchange with an empty body.
    let conflicting = [
        (
            format!("{post}content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggle}"),
            "CL then TE",
        ),
        (
            format!(
                "{post}transfer-encoding: chunked\r\ncontent-length: {}\r\n\r\n0\r\n\r\n{smuggle}",
                5 + smuggle.len()
            ),
            "TE then CL",
        ),
    ];
    for (bytes, what) in &conflicting {
        let b = before(&t);
        let got = raw(addr, bytes.as_bytes()).await;
        let resp = got.first.as_ref().unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(resp.status(), 200, "{what}: {}", got.text);
        assert_eq!(resp.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]), "{what}");
        assert_eq!(got.responses, 1, "{what}: the trailing request was served: {}", got.text);
        let reached: usize = hits(&t).iter().zip(&b.hits).map(|(now, was)| now - was).sum();
        assert_eq!(reached, 1, "{what}: only the outer request reaches a backend");
        let reached = (0..t.backends.len()).find(|&i| hits(&t)[i] > b.hits[i]).expect("a backend");
        let seen = t.backends[reached].last().expect("a request");
        assert_eq!(
            (seen.method.as_str(), seen.body_len),
            ("POST", 0),
            "{what}: the body was read as chunked"
        );
    }
    // Framing hyper refuses outright with 400 (no handler runs, nothing is logged), or our own
    // check refuses with a full gateway error.
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{post}content-length: 0\r\ncontent-length: {}\r\n\r\n{smuggle}", smuggle.len()),
            "two Content-Lengths",
        ),
        (format!("{post}content-length: 0, {}\r\n\r\n{smuggle}", smuggle.len()), "a Content-Length list"),
        (format!("{post}content-length: +0\r\n\r\n{smuggle}"), "a signed Content-Length"),
        (
            format!("{post}transfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggle}"),
            "TE not ending in chunked",
        ),
        (format!("{post}transfer-encoding: xchunked\r\n\r\n0\r\n\r\n{smuggle}"), "TE xchunked"),
        (format!("{post}transfer-encoding : chunked\r\n\r\n0\r\n\r\n{smuggle}"), "space before the colon"),
        (
            format!(
                "{}transfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggle}",
                post.replace("HTTP/1.1", "HTTP/1.0")
            ),
            "chunked in HTTP/1.0",
        ),
    ];
    for (bytes, what) in &cases {
        let b = before(&t);
        let got = raw(addr, bytes.as_bytes()).await;
        let resp = got.first.as_ref().unwrap_or_else(|| panic!("{what}: no answer"));
        assert!(resp.status().is_client_error(), "{what}: {}", got.text);
        assert_eq!(got.responses, 1, "{what}: the trailing request was served: {}", got.text);
        assert_eq!(hits(&t), b.hits, "{what}: a backend was reached");
        if resp.headers().contains_key("x-road-error") {
            refusal_of_consumer(&t, &b, 0, resp, "client.bad_request", what);
        } else {
            assert!(new_records(&t, &b, 0).is_empty(), "{what}");
        }
        for i in 1..t.nodes.len() {
            assert!(new_records(&t, &b, i).is_empty(), "{what}: node {i} saw the request");
        }
    }
    assert_healthy(&t, "after smuggling attempts").await;
    within(t.shutdown()).await;
}

// ---------------------------------------------------------------------------------------------
// 6-7. Acting as a peer node: untrusted certificates, revoked nodes, clients not hosted, forged
// or altered signatures, swapped ids, replays
// ---------------------------------------------------------------------------------------------

fn peer_body(bytes: impl Into<Bytes>) -> PeerBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A peer node made by hand: presents `identity`, trusts what `conf` says about the others.
fn peer(conf: &GlobalConf, identity: &TlsIdentity) -> PeerClient {
    let trust = PeerTrust::new(conf, identity).expect("peer trust");
    PeerClient::new(Arc::new(trust), PeerClientOptions::default())
}

fn conf_of(t: &Topology, i: usize) -> GlobalConf {
    t.nodes[i].handle().conf().expect("a configuration").conf.clone()
}

fn keys_of(t: &Topology, i: usize) -> NodeKeys {
    t.nodes[i].home.open(None).expect("node keys")
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// An unsigned request envelope from `consumer` for `client` to `svc`, with `body`.
fn envelope_for(
    t: &Topology,
    consumer: &str,
    client: &str,
    svc: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> ex::RequestEnvelope {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let now = millis(t.clock.now());
    let client: ClientId = client.parse().expect("client id");
    ex::RequestEnvelope {
        message_id: format!("VN-bad-input-{n}"),
        request_id: format!("bad-input-{n}-{now}"),
        client: Some((&client).into()),
        service: Some((&service(svc)).into()),
        method: method.into(),
        path: path.into(),
        consumer_node: Some((&node_id(consumer)).into()),
        created_at_ms: now,
        body_sha256: Sha256::digest(body).to_vec(),
        body_length: body.len() as u64,
        ..Default::default()
    }
}

/// Signs with `signer`'s member key as held in `keys`.
fn signed(mut env: ex::RequestEnvelope, keys: &NodeKeys, signer: &str) -> ex::RequestEnvelope {
    let (key, certificate) = keys.signing.get(&member(signer)).expect("the member's key");
    envelope::sign_request(&mut env, Signer { key, certificate }).expect("sign");
    env
}

/// Sends an envelope and body to node `to` the way a consumer node does; the provider's
/// response envelope and body.
async fn exchange(
    client: &PeerClient,
    to: &str,
    env: &ex::RequestEnvelope,
    body: &[u8],
) -> Result<(ex::ResponseEnvelope, Bytes), PeerError> {
    let req = Request::builder()
        .method("POST")
        .uri(EXCHANGE_PATH)
        .header(ENVELOPE_HEADER, envelope::to_header(env))
        .header("content-length", body.len())
        .body(peer_body(body.to_vec()))
        .expect("request");
    let resp = within(client.send(&node_id(to), req)).await?;
    // Refusals too come back as 200: the fault travels in the envelope.
    assert_eq!(resp.status(), 200);
    let (env, _) = envelope::from_header::<ex::ResponseEnvelope>(
        resp.headers().get(ENVELOPE_HEADER).map(|v| v.as_bytes()),
        lienthong_types::Fault::InconsistentResponse,
    )
    .expect("a response envelope");
    let body = within(resp.into_body().collect()).await.expect("body").to_bytes();
    Ok((env, body))
}

/// Node `node` refused the exchange with `code`: the fault in the response envelope, the same
/// fault (detail included) in its one new log record, no body, no backend reached.
fn assert_provider_refused(
    t: &Topology,
    b: &Before,
    node: usize,
    answer: &(ex::ResponseEnvelope, Bytes),
    code: &str,
    what: &str,
) {
    let (env, body) = answer;
    let fault = env.fault.as_ref().unwrap_or_else(|| panic!("{what}: no fault in {env:#?}"));
    assert_eq!(fault.code, code, "{what}: {}", fault.message);
    assert!(is_uuid(&fault.detail), "{what}");
    assert_eq!(env.status, u32::from(status_for(code)), "{what}");
    assert!(body.is_empty(), "{what}");
    assert_no_leak(t, &fault.message, what);
    assert_eq!(hits(t), b.hits, "{what}: a backend was reached");
    let records = new_records(t, b, node);
    assert_eq!(records.len(), 1, "{what}: only the refusal is logged: {records:#?}");
    assert_eq!(records[0].fault.as_ref(), Some(fault), "{what}: the record has the fault the peer saw");
    assert!(!is_success(&records[0]), "{what}");
}

/// A TLS identity for `node`, issued by `ca` for a fresh key.
fn issued_identity(ca: &CertificateAuthority, node: &str) -> TlsIdentity {
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).expect("key");
    let csr = Csr::for_node(&key, &node_id(node)).expect("CSR");
    let now = std::time::SystemTime::now();
    let cert = ca.issue_node(&csr, &node_id(node), Validity::days(1), now).expect("certificate");
    TlsIdentity { chain: vec![cert, ca.certificate().clone()], key: Arc::new(key) }
}

/// The topology's own CA, loaded from the registry directory.
fn registry_ca(t: &Topology) -> CertificateAuthority {
    let dir = t.registry.home.dir();
    let key = PrivateKey::from_pem(&std::fs::read_to_string(dir.join("keys/ca.key")).expect("CA key"), None)
        .expect("CA key");
    let cert = Certificate::from_pem(&std::fs::read_to_string(t.registry.home.ca_cert_path()).expect("CA"))
        .expect("CA certificate");
    CertificateAuthority::load(cert, &key).expect("the registry CA")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_refuses_untrusted_peers_and_clients_they_do_not_host() {
    let mut t = Topology::standard().await;
    let conf = conf_of(&t, 0);
    let vpcp = keys_of(&t, 0);
    let bca = keys_of(&t, 1);
    let good =
        |t: &Topology| signed(envelope_for(t, NODE_VPCP, CONG_DVC, CONG_DAN, "GET", "/1", b""), &vpcp, VPCP);

    // The hand-made peer works when it is node 0 with node 0's keys: the harness is sound.
    let node0 = peer(&conf, &vpcp.tls);
    let b = before(&t);
    let (env, body) = exchange(&node0, NODE_BCA_1, &good(&t), b"").await.expect("exchange");
    assert!(env.fault.is_none() && env.status == 200, "{env:#?}");
    assert!(!body.is_empty());
    assert_eq!(hits(&t)[0], b.hits[0] + 1);

    // 6. A certificate for node 0 from an unknown CA, and one from the right CA that is not
    // the certificate registered for node 0: the TLS handshake fails, nothing is served, and the
    // provider logs the refused connection as a security event (no exchange ids: there are none).
    let stranger_key = PrivateKey::generate(KeyAlgorithm::Ed25519).expect("key");
    let vn = "VN".parse().expect("instance");
    let stranger =
        CertificateAuthority::init(vn, &stranger_key, Validity::days(1), std::time::SystemTime::now())
            .expect("an unknown CA");
    for (identity, what) in [
        (issued_identity(&stranger, NODE_VPCP), "unknown CA"),
        (issued_identity(&registry_ca(&t), NODE_VPCP), "right CA, unregistered certificate"),
    ] {
        let b = before(&t);
        let result = exchange(&peer(&conf, &identity), NODE_BCA_1, &good(&t), b"").await;
        let err = result.expect_err(what);
        assert!(err.is_rejected() && err.is_before_send(), "{what}: {err}");
        assert_eq!(hits(&t), b.hits, "{what}");
        let events = security_events(&t, &b, 1, 1).await;
        assert_eq!(events.len(), 1, "{what}: one record of the refused connection: {events:#?}");
    }

    // A node claiming a client it does not host: node 0 speaks for node 1's DANCU (even with
    // that member's valid signature) or for the member BCA.
    let claims = [
        (signed(envelope_for(&t, NODE_VPCP, DANCU, CONG_DAN, "GET", "/1", b""), &bca, BCA), "DANCU"),
        (signed(envelope_for(&t, NODE_VPCP, BCA, CONG_DAN, "GET", "/1", b""), &bca, BCA), "member BCA"),
        (
            signed(
                envelope_for(&t, NODE_VPCP, "VN/GOV/000.00.00.G02/khong-co", CONG_DAN, "GET", "/1", b""),
                &vpcp,
                VPCP,
            ),
            "an unregistered subsystem of its own member",
        ),
    ];
    for (env, what) in &claims {
        let b = before(&t);
        let answer = exchange(&node0, NODE_BCA_1, env, b"").await.expect("exchange");
        assert_provider_refused(&t, &b, 1, &answer, "server.serverproxy.ssl_authentication_failed", what);
    }

    // A node removed from the registry: once the nodes have the new configuration, its
    // handshakes are refused, and its own consumer side no longer speaks for its clients.
    within(t.registry.admin.remove_node(&node_id(NODE_VPCP), "test: revoked")).await.expect("remove node 0");
    t.sync().await;
    let b = before(&t);
    let err = exchange(&peer(&conf_of(&t, 1), &vpcp.tls), NODE_BCA_1, &good(&t), b"")
        .await
        .expect_err("a removed node is refused");
    assert!(err.is_rejected(), "{err}");
    // The connection made before the removal is closed too.
    let err = exchange(&node0, NODE_BCA_1, &good(&t), b"").await.expect_err("pooled connection");
    assert!(err.is_before_send(), "{err}");
    assert_eq!(hits(&t), b.hits);
    // Both refused handshakes (the new peer and the pooled connection's reconnection).
    assert_eq!(security_events(&t, &b, 1, 2).await.len(), 2, "the refused handshakes are on record");
    assert!(new_records(&t, &b, 2).is_empty());
    let req = Topology::r1("GET", &r1(CONG_DAN, "/1"), "");
    // Not the client's mistake: the node itself is no longer registered.
    refused_by_consumer(&t, 0, req, "server.clientproxy.internal_error", "a removed node's client").await;
    within(t.shutdown()).await;
}

/// The new records of node `i`, once at least `n` are there (the refused-connection record is
/// written by a background task): each must be a refused connection, nothing else.
async fn security_events(t: &Topology, b: &Before, i: usize, n: usize) -> Vec<LogRecord> {
    let records = within(async {
        loop {
            let r = new_records(t, b, i);
            if r.len() >= n {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    for r in &records {
        let fault = r.fault.as_ref().expect("a refusal");
        assert_eq!(fault.code, "server.serverproxy.ssl_authentication_failed", "{r:#?}");
        assert!(fault.message.contains("refused a peer connection"), "{r:#?}");
        assert!(r.message_id.is_empty() && r.client.is_none(), "{r:#?}");
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_refuses_forged_altered_swapped_and_replayed_envelopes() {
    let mut t = Topology::standard().await;
    let conf = conf_of(&t, 0);
    let vpcp = keys_of(&t, 0);
    let bca = keys_of(&t, 1);
    let node0 = peer(&conf, &vpcp.tls);
    let fresh = |body: &[u8]| envelope_for(&t, NODE_VPCP, CONG_DVC, CONG_DAN, "POST", "/1", body);
    const INVALID: &str = "server.serverproxy.invalid_signature_value";

    let mut cases: Vec<(ex::RequestEnvelope, &[u8], &str, &str)> = Vec::new();
    // Stripped: no signature at all, or an empty one.
    let mut env = signed(fresh(b"{}"), &vpcp, VPCP);
    env.signature = None;
    cases.push((env, b"{}", "server.serverproxy.missing_signature", "signature stripped"));
    let mut env = signed(fresh(b"{}"), &vpcp, VPCP);
    env.signature.as_mut().expect("signature").value.clear();
    cases.push((env, b"{}", "server.serverproxy.missing_signature", "empty signature"));
    // Forged: one bit of the signature flipped.
    let mut env = signed(fresh(b"{}"), &vpcp, VPCP);
    env.signature.as_mut().expect("signature").value[0] ^= 1;
    cases.push((env, b"{}", INVALID, "signature flipped"));
    // The signed fields changed after signing.
    let mut env = signed(fresh(b"{}"), &vpcp, VPCP);
    env.path = "/2".into();
    cases.push((env, b"{}", INVALID, "path altered after signing"));
    let mut env = signed(fresh(b"{}"), &vpcp, VPCP);
    env.method = "DELETE".into();
    cases.push((env, b"{}", INVALID, "method altered after signing"));
    // The body altered after signing (same length, other bytes), or longer than signed.
    cases.push((signed(fresh(b"{}"), &vpcp, VPCP), b"[]", INVALID, "body altered after signing"));
    cases.push((signed(fresh(b"{}"), &vpcp, VPCP), b"{} ", INVALID, "body longer than signed"));
    // Signed by another member's key (valid, registered, but not the client's member).
    cases.push((signed(fresh(b"{}"), &bca, BCA), b"{}", INVALID, "signed by the wrong member"));
    // Signed with a key the registry CA certified for the client's member but never registered.
    let rogue_key = PrivateKey::generate(KeyAlgorithm::Ed25519).expect("key");
    let csr = Csr::for_member(&rogue_key, &member(VPCP)).expect("CSR");
    let rogue_cert = registry_ca(&t)
        .issue_member(&csr, &member(VPCP), Validity::days(1), std::time::SystemTime::now())
        .expect("certificate");
    let mut env = fresh(b"{}");
    envelope::sign_request(&mut env, Signer { key: &rogue_key, certificate: &rogue_cert }).expect("sign");
    cases.push((env, b"{}", INVALID, "an unregistered signing certificate"));
    // Ids swapped: the envelope names node 2 as its sender while node 0 is on the line.
    let env = signed(envelope_for(&t, NODE_BCA_2, CONG_DVC, CONG_DAN, "POST", "/1", b"{}"), &vpcp, VPCP);
    cases.push((env, b"{}", "server.serverproxy.ssl_authentication_failed", "another consumer node"));
    // For another provider node (X-Road-Security-Server pinned elsewhere).
    let mut env = fresh(b"{}");
    env.target_node = Some((&node_id(NODE_BCA_2)).into());
    let env = signed(env, &vpcp, VPCP);
    cases.push((env, b"{}", "client.invalid_security_server", "for another provider node"));
    // A signed, granted request whose path would leave the service's base path.
    let env =
        signed(envelope_for(&t, NODE_VPCP, CONG_DVC, CONG_DAN, "GET", "/a/../../admin", b""), &vpcp, VPCP);
    cases.push((env, b"", "server.serverproxy.invalid_message", "dot segments"));
    // Outside the allowed clock skew (60 s).
    let mut env = fresh(b"{}");
    env.created_at_ms -= 10 * 60 * 1000;
    let env = signed(env, &vpcp, VPCP);
    cases.push((env, b"{}", "server.serverproxy.clock_skew", "ten minutes old"));
    for (env, body, code, what) in &cases {
        let b = before(&t);
        let answer = exchange(&node0, NODE_BCA_1, env, body).await.expect("exchange");
        assert_provider_refused(&t, &b, 1, &answer, code, what);
    }
    // An envelope that is not one.
    let b = before(&t);
    let req = Request::builder()
        .method("POST")
        .uri(EXCHANGE_PATH)
        .header(ENVELOPE_HEADER, "bm90IGFuIGVudmVsb3Bl")
        .body(peer_body(Bytes::new()))
        .expect("request");
    let resp = within(node0.send(&node_id(NODE_BCA_1), req)).await.expect("exchange");
    let (env, _) = envelope::from_header::<ex::ResponseEnvelope>(
        resp.headers().get(ENVELOPE_HEADER).map(|v| v.as_bytes()),
        lienthong_types::Fault::InconsistentResponse,
    )
    .expect("a response envelope");
    assert_provider_refused(&t, &b, 1, &(env, Bytes::new()), "server.serverproxy.invalid_message", "garbage");

    // Replay: the same signed envelope twice. The first is served, the second refused before
    // the backend, whatever the body.
    let env = signed(fresh(b"{}"), &vpcp, VPCP);
    let b = before(&t);
    let (first, _) = exchange(&node0, NODE_BCA_1, &env, b"{}").await.expect("exchange");
    assert!(first.fault.is_none(), "{first:#?}");
    assert_eq!(hits(&t)[0], b.hits[0] + 1);
    let records = new_records(&t, &b, 1);
    assert_eq!(records.len(), 2, "the request and the response");
    let b = before(&t);
    let answer = exchange(&node0, NODE_BCA_1, &env, b"{}").await.expect("exchange");
    assert_provider_refused(&t, &b, 1, &answer, "server.serverproxy.replayed_message", "replayed");
    // Also after the provider restarts (its replay memory starts empty; the log remembers).
    t.restart(1).await;
    let b = before(&t);
    let answer = exchange(&node0, NODE_BCA_1, &env, b"{}").await.expect("exchange");
    assert_provider_refused(
        &t,
        &b,
        1,
        &answer,
        "server.serverproxy.replayed_message",
        "replayed after restart",
    );
    within(t.shutdown()).await;
}

// ---------------------------------------------------------------------------------------------
// 7 (consumer side). Responses that do not match the request, or whose signature fails: a fake
// provider on node 1's registered address, with node 1's own keys, tampers with its answers
// ---------------------------------------------------------------------------------------------

/// What the fake provider does to its otherwise correct response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tamper {
    Nothing,
    RequestId,
    MessageId,
    Client,
    RequestHash,
    ProviderNode,
    StripSignature,
    ForgeSignature,
    WrongSigner,
    Body,
    NoEnvelope,
}

const TAMPERS: [Tamper; 11] = [
    Tamper::Nothing,
    Tamper::RequestId,
    Tamper::MessageId,
    Tamper::Client,
    Tamper::RequestHash,
    Tamper::ProviderNode,
    Tamper::StripSignature,
    Tamper::ForgeSignature,
    Tamper::WrongSigner,
    Tamper::Body,
    Tamper::NoEnvelope,
];

struct FakeProvider {
    tamper: AtomicU8,
    provider: (Arc<PrivateKey>, Certificate),
    other: (Arc<PrivateKey>, Certificate),
}

impl FakeProvider {
    fn tamper(&self) -> Tamper {
        TAMPERS[usize::from(self.tamper.load(Ordering::SeqCst))]
    }

    /// Answers like a provider node would (see the provider's `serve`), then tampers.
    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<PeerBody> {
        let tamper = self.tamper();
        let (parts, body) = req.into_parts();
        let env: ex::RequestEnvelope = envelope::from_header(
            parts.headers.get(ENVELOPE_HEADER).map(|v| v.as_bytes()),
            lienthong_types::Fault::InvalidMessage,
        )
        .map(|(env, _)| env)
        .unwrap_or_default();
        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let svc: Option<ServiceId> = lienthong_proto::convert::required(env.service.clone(), "service").ok();
        let mut pq = svc.map(|s| s.r1_path()).unwrap_or_default();
        pq.push_str(&env.path);
        if !env.query.is_empty() {
            pq.push('?');
            pq.push_str(&env.query);
        }
        let body_sha512: Option<[u8; 64]> = (!body.is_empty()).then(|| Sha512::digest(&body).into());
        let out = Bytes::from_static(b"{\"from\":\"the provider\"}");
        let mut resp = ex::ResponseEnvelope {
            message_id: env.message_id.clone(),
            request_id: env.request_id.clone(),
            client: env.client.clone(),
            service: env.service.clone(),
            request_hash: request_hash(&env.method, &pq, &env.headers, body_sha512.as_ref()),
            status: 200,
            headers: vec![lienthong_proto::types::v1::Header {
                name: "content-type".into(),
                value: b"application/json".to_vec(),
            }],
            provider_node: Some((&node_id(NODE_BCA_1)).into()),
            created_at_ms: millis(std::time::SystemTime::now()),
            body_sha256: Sha256::digest(&out).to_vec(),
            body_length: out.len() as u64,
            ..Default::default()
        };
        let other_client: ClientId = DANCU.parse().expect("client");
        match tamper {
            Tamper::RequestId => resp.request_id = "another-request".into(),
            Tamper::MessageId => resp.message_id = "VN-another-message".into(),
            Tamper::Client => resp.client = Some((&other_client).into()),
            Tamper::RequestHash => resp.request_hash = "bm90IHRoZSBoYXNo".into(),
            Tamper::ProviderNode => resp.provider_node = Some((&node_id(NODE_BCA_2)).into()),
            _ => {}
        }
        let (key, certificate) = if tamper == Tamper::WrongSigner { &self.other } else { &self.provider };
        envelope::sign_response(&mut resp, Signer { key, certificate }).expect("sign");
        match tamper {
            Tamper::StripSignature => resp.signature = None,
            Tamper::ForgeSignature => resp.signature.as_mut().expect("signature").value[0] ^= 1,
            _ => {}
        }
        // Same length, other bytes: only the digest can tell.
        let out =
            if tamper == Tamper::Body { Bytes::from_static(b"{\"from\":\"the attacker\"}") } else { out };
        let mut answer = Response::builder().header("content-length", out.len());
        if tamper != Tamper::NoEnvelope {
            answer = answer.header(ENVELOPE_HEADER, envelope::to_header(&resp));
        }
        answer.body(peer_body(out)).expect("response")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_refuses_inconsistent_or_forged_responses() {
    let mut t = Topology::standard().await;
    let conf = conf_of(&t, 0);
    let bca = keys_of(&t, 1);
    let vpcp = keys_of(&t, 0);
    let fake = Arc::new(FakeProvider {
        tamper: AtomicU8::new(0),
        provider: bca.signing.get(&member(BCA)).expect("BCA key").clone(),
        other: vpcp.signing.get(&member(VPCP)).expect("VPCP key").clone(),
    });
    // Node 1 goes away; the fake takes its registered address and certificate.
    let addr = t.nodes[1].handle().peer;
    t.stop(1).await;
    let listener = within(TcpListener::bind(addr)).await.expect("node 1's peer address");
    let (_trust_tx, trust_rx) = watch::channel(Arc::new(PeerTrust::new(&conf, &bca.tls).expect("trust")));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handler = {
        let fake = fake.clone();
        move |req, _peer| {
            let fake = fake.clone();
            async move { fake.answer(req).await }
        }
    };
    let server = tokio::spawn(PeerServer::from_listener(listener).serve(trust_rx, handler, async move {
        let _ = stop_rx.await;
    }));

    let pinned = |body: &'static str| {
        let headers =
            [("x-road-client", CONG_DVC.as_bytes()), ("x-road-security-server", NODE_BCA_1.as_bytes())];
        request("POST", &r1(CONG_DAN, "/1?q=2"), &headers, body)
    };
    for (i, tamper) in TAMPERS.iter().enumerate() {
        fake.tamper.store(u8::try_from(i).expect("small"), Ordering::SeqCst);
        let what = format!("{tamper:?}");
        let code = match tamper {
            Tamper::Nothing => {
                let resp = t.call(0, pinned("{}")).await;
                assert_eq!(resp.status(), 200, "{what}: {resp:?}");
                assert_eq!(&resp.body()[..], b"{\"from\":\"the provider\"}");
                continue;
            }
            Tamper::StripSignature => "server.clientproxy.missing_signature",
            Tamper::ForgeSignature | Tamper::WrongSigner | Tamper::Body => {
                "server.clientproxy.invalid_signature_value"
            }
            _ => "server.clientproxy.inconsistent_response",
        };
        let b = before(&t);
        let resp = t.call(0, pinned("{}")).await;
        let records = assert_refused(&t, &b, 0, &resp, code, &what);
        assert!(!String::from_utf8_lossy(resp.body()).contains("attacker"), "{what}: the body was released");
        assert_eq!(records.len(), 2, "{what}: the signed request, then the refusal: {records:#?}");
        assert!(new_records(&t, &b, 2).is_empty(), "{what}: pinned to node 1");
    }
    let _ = stop_tx.send(());
    within(server).await.expect("fake provider task").expect("fake provider");
    within(t.shutdown()).await;
}

// ---------------------------------------------------------------------------------------------
// 13. Path forms that backends read as traversal (the path rule, `access::check_path`)
// ---------------------------------------------------------------------------------------------

/// Paths a Tomcat/Spring, IIS or double-decoding backend could resolve outside `/public/`,
/// though each matches the grant pattern `/public/*` as text.
const TRAVERSALS: [&str; 7] = [
    "/public/..;/secret",
    "/public/%2e%2e%2fsecret",
    "/public/..%5csecret",
    "/public/%252e%252e/secret",
    "/public//secret",
    "/public/%2fsecret",
    "/public/%00/secret",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_for_a_path_prefix_cannot_be_left_by_path_forms_backends_read_as_traversal() {
    let mut t = Topology::standard().await;
    let client = ClientId::Subsystem(subsystem(CONG_DVC));
    t.grant_endpoints(&service(HO_TICH), &client, &[("GET", "/public/*")]).await;
    t.sync().await;
    // Ordinary paths under the grant pass, dots and parameters inside segments included.
    for rest in ["/public/a.b/c", "/public/v1/..x", "/public/x%20y", "/public/%E1%BB%87", "/public/items;v=2"]
    {
        ok(&t, Topology::r1("GET", &r1(HO_TICH, rest), ""), rest).await;
    }
    let b = before(&t);
    let req = Topology::r1("GET", &r1(HO_TICH, "/secret"), "");
    refused_by_provider(&t, req, "server.serverproxy.access_denied", "outside the grant").await;
    assert_eq!(hits(&t), b.hits);

    // The consumer node refuses each before anything is signed, sent or granted.
    for rest in TRAVERSALS {
        let req = Topology::r1("GET", &r1(HO_TICH, rest), "");
        let records = refused_by_consumer(&t, 0, req, "client.bad_request", rest).await;
        let message = &records[0].fault.as_ref().expect("fault").message;
        assert!(message.starts_with("the path has"), "{rest}: {message}");
    }
    // The provider node applies the same rule to a consumer node that let such a path through.
    let vpcp = keys_of(&t, 0);
    let node0 = peer(&conf_of(&t, 0), &vpcp.tls);
    for path in TRAVERSALS {
        let env = signed(envelope_for(&t, NODE_VPCP, CONG_DVC, HO_TICH, "GET", path, b""), &vpcp, VPCP);
        let b = before(&t);
        let answer = exchange(&node0, NODE_BCA_1, &env, b"").await.expect("exchange");
        assert_provider_refused(&t, &b, 1, &answer, "server.serverproxy.invalid_message", path);
        let message = &answer.0.fault.as_ref().expect("fault").message;
        assert!(message.starts_with("the path has"), "{path}: {message}");
    }
    within(t.shutdown()).await;
}

// ---------------------------------------------------------------------------------------------
// 14. Envelopes larger than a peer accepts: refused before anything is signed or logged
// ---------------------------------------------------------------------------------------------

/// The "at most about N bytes" a size refusal names.
fn room_in(message: &str) -> usize {
    let after = message.split("at most about ").nth(1).unwrap_or_else(|| panic!("no room in {message:?}"));
    after.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{message:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_larger_than_a_peer_accepts_are_refused_before_signing() {
    let t = Topology::standard().await;
    let path = r1(CONG_DAN, "/001090012345");

    // A 60 KB query: the client's fault, refused before the body is read or anything is signed.
    let query = format!("?q={}", "x".repeat(60_000));
    let req = Topology::r1("GET", &format!("{path}{query}"), "");
    let records = refused_by_consumer(&t, 0, req, "client.bad_request", "a 60 KB query").await;
    assert!(records[0].signature.is_none(), "nothing signed for the refusal's request");
    let message = records[0].fault.as_ref().expect("fault").message.clone();
    assert!(message.contains("query string (60002 bytes) is too large"), "{message}");
    // Many headers: the same, naming the headers.
    let pad: Vec<(String, Vec<u8>)> = (0..50).map(|i| (format!("x-pad-{i}"), vec![b'p'; 1100])).collect();
    let headers: Vec<(&str, &[u8])> = std::iter::once(("x-road-client", CONG_DVC.as_bytes()))
        .chain(pad.iter().map(|(n, v)| (n.as_str(), v.as_slice())))
        .collect();
    let req = request("GET", &path, &headers, "");
    let records = refused_by_consumer(&t, 0, req, "client.bad_request", "55 KB of headers").await;
    let message = &records[0].fault.as_ref().expect("fault").message;
    assert!(message.contains("headers ("), "{message}");

    // A query just inside the room the refusal named reaches the backend: the envelope it makes
    // is near the largest a node signs, and the provider node's header limit admits it.
    let fits = room_in(message) - path.len() - 300;
    let query = format!("?q={}", "y".repeat(fits));
    ok(&t, Topology::r1("GET", &format!("{path}{query}"), ""), "a query just inside the limit").await;
    let seen = t.backends.iter().filter_map(MockBackend::last).find(|s| s.path_and_query.ends_with(&query));
    assert!(seen.is_some(), "the backend got the whole query");

    // The other direction: a backend's response headers too large for the consumer node are the
    // provider's fault, refused before the response is signed: no success record anywhere.
    for b in &t.backends {
        b.set_mode(Mode::LargeHeaders(60 * 1024));
    }
    let b = before(&t);
    let resp = t.call(0, Topology::r1("GET", &path, "")).await;
    let code = "server.serverproxy.service_failed";
    assert_eq!(resp.status(), 500, "{}", String::from_utf8_lossy(resp.body()));
    assert_eq!(resp.headers().get("x-road-error").and_then(|v| v.to_str().ok()), Some(code));
    let body: serde_json::Value = serde_json::from_slice(resp.body()).expect("JSON error");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("response headers")), "{body}");
    assert_no_leak(&t, &body.to_string(), "large response headers");
    let reached: usize = hits(&t).iter().zip(&b.hits).map(|(now, was)| now - was).sum();
    assert_eq!(reached, 1, "the backend answered once");
    let consumer = new_records(&t, &b, 0);
    assert_eq!(consumer.len(), 2, "the signed request, then the relayed refusal: {consumer:#?}");
    let provider: Vec<LogRecord> = (1..t.nodes.len()).flat_map(|i| new_records(&t, &b, i)).collect();
    assert_eq!(provider.len(), 2, "the request, then the refusal: {provider:#?}");
    assert!(provider[0].fault.is_none() && provider[1].fault.as_ref().is_some_and(|f| f.code == code));
    assert_eq!(provider[1].direction, Direction::Response as i32);
    let detail = body["detail"].as_str().expect("detail");
    assert!(consumer[1].fault.as_ref().is_some_and(|f| f.detail == detail && f.code == code));
    assert!(provider[1].fault.as_ref().is_some_and(|f| f.detail == detail));
    for i in 0..t.nodes.len() {
        assert!(!new_records(&t, &b, i).iter().any(is_success), "node {i} wrote a success record");
    }
    for b in &t.backends {
        b.set_mode(Mode::Echo);
    }
    ok(&t, Topology::r1("GET", &path, ""), "after the large responses").await;
    within(t.shutdown()).await;
}

// ---------------------------------------------------------------------------------------------
// 4, faults 12. Slow clients: a body that trickles, and more connections than a listener takes
// ---------------------------------------------------------------------------------------------

/// Whether the node closed `tcp` within a short wait (or reset it); a connection it holds
/// stays silent.
async fn closed_soon(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_bodies_and_connections_past_the_cap_are_bounded() {
    let t = Topology::standard_with(
        "[limits]\nbody_idle_timeout_secs = 1\nbody_total_timeout_secs = 2\nmax_client_connections = 3\n",
    )
    .await;
    let addr = consumer_addr(&t, 0);

    // One byte of a 100-byte body every 250 ms: never idle for the idle timeout (1 s), but not
    // complete within the total time (2 s). Refused then, with a record, and the connection
    // closed.
    let b = before(&t);
    let tcp = within(TcpStream::connect(addr)).await.expect("connect");
    let (mut read, mut write) = tcp.into_split();
    let head = format!("{}content-length: 100\r\n\r\n", raw_head("POST", ""));
    within(write.write_all(head.as_bytes())).await.expect("send the head");
    let started = Instant::now();
    let drip = tokio::spawn(async move {
        for _ in 0..99 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if write.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match within(read.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(6), "{waited:?}");
    let got = parse_raw(&got);
    let resp = got.first.expect("an answer to the trickling body");
    let records = refusal_of_consumer(&t, &b, 0, &resp, "client.bad_request", "trickling body");
    let message = &records[0].fault.as_ref().expect("fault").message;
    assert!(message.contains("not complete within the limit of 2 s"), "{message}");
    drip.abort();

    // Three idle connections are held; the fourth is closed at once; once one of the three goes,
    // a new connection is served again.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = within(TcpStream::connect(addr)).await.expect("connect");
        assert!(!closed_soon(&mut tcp).await, "a connection under the cap is held");
        held.push(tcp);
    }
    let mut over = within(TcpStream::connect(addr)).await.expect("the kernel accepts");
    assert!(closed_soon(&mut over).await, "the connection past the cap is closed at once");
    drop(held.pop());
    let served = within(async {
        for _ in 0..50 {
            let got = raw(addr, b"GET /healthz HTTP/1.1\r\nhost: node\r\nconnection: close\r\n\r\n").await;
            if got.first.as_ref().is_some_and(|r| r.status() == 200) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    })
    .await;
    assert!(served, "a freed slot serves a new connection");
    drop(held);
    within(t.shutdown()).await;
}
