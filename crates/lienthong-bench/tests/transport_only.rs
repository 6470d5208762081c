//! The benchmark's transport-only nodes (`lienthong_bench::transport_only::TransportOnly`, the
//! protection of topology C): exchanges are carried with every check except signatures, and
//! nothing is written to the message log. A normal node refuses such a node's unsigned
//! envelopes, whichever side it is on.
//!
//! The standard in-process topology: node 0 hosts the consumer `CONG_DVC`, nodes 1 and 2 provide
//! `DANCU` with backends 0 and 1.

use lienthong_bench::transport_only::protection;
use lienthong_proto::msglog::v1::LogRecord;
use lienthong_testkit::names::*;
use lienthong_testkit::{Mode, Topology, within};
use lienthong_types::Fault;

/// How many records each node's log holds.
fn log_sizes(t: &Topology) -> Vec<u64> {
    t.nodes.iter().map(|n| n.handle().log().head().size).collect()
}

fn backend_hits(t: &Topology) -> usize {
    t.backends.iter().map(lienthong_testkit::MockBackend::hits).sum()
}

fn error_code(resp: &http::Response<bytes::Bytes>) -> &str {
    resp.headers().get("x-road-error").map_or("", |v| v.to_str().unwrap())
}

/// The record of a refusal with `code` for `message_id`, if `records` hold one.
fn refusal<'a>(records: &'a [LogRecord], message_id: &str, code: &str) -> Option<&'a LogRecord> {
    records.iter().find(|r| r.message_id == message_id && r.fault.as_ref().is_some_and(|f| f.code == code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_transport_only_nodes_carry_a_call_and_log_nothing() {
    let mut t = Topology::standard().await;
    for i in 0..3 {
        t.restart_with_protection(i, Some(protection())).await;
    }
    let before = log_sizes(&t);

    // A body travels both ways (its hash and length are still checked on each side).
    let payload = r#"{"ho_ten":"Trần Thị Bình","ngay_sinh":"1990-01-01"}"#;
    let mut req = Topology::r1("POST", &format!("/r1/{CONG_DAN}/echo"), payload);
    req.headers_mut().insert("x-road-id", "bench-000001".parse().unwrap());
    let resp = t.call(0, req).await;
    assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(resp.body()));
    assert_eq!(resp.body().as_ref(), payload.as_bytes());
    assert_eq!(resp.headers()["x-road-id"], "bench-000001");
    assert_eq!(resp.headers()["x-road-service"], CONG_DAN);
    assert!(resp.headers().get("x-road-request-hash").is_some());

    // The backend's status and body pass through.
    for b in &t.backends {
        b.set_mode(Mode::Status(404));
    }
    let resp = t.call(0, Topology::r1("GET", &format!("/r1/{CONG_DAN}/cong-dan/0"), "")).await;
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().get("x-road-error").is_none());
    let body: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(body, serde_json::json!({ "error": "backend says no", "status": 404 }));
    assert_eq!(backend_hits(&t), 2);

    // Grants are still checked without signatures: HO_TICH is published but not granted. The
    // refusal is not logged either.
    let resp = t.call(0, Topology::r1("GET", &format!("/r1/{HO_TICH}/ho-tich/1"), "")).await;
    assert_eq!(error_code(&resp), Fault::AccessDenied.code());
    assert_eq!(error_code(&resp), "server.serverproxy.access_denied");
    assert_eq!(backend_hits(&t), 2, "a refused call reaches no backend");

    assert_eq!(log_sizes(&t), before, "no node logged any of it");
    within(t.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_node_refuses_a_transport_only_nodes_unsigned_envelopes() {
    let mut t = Topology::standard().await;

    // A transport-only consumer and normal providers: the unsigned request is refused before
    // the backend, with the provider's fault relayed.
    t.restart_with_protection(0, Some(protection())).await;
    let consumer_before = log_sizes(&t)[0];
    let mut req = Topology::r1("GET", &format!("/r1/{CONG_DAN}/cong-dan/1"), "");
    req.headers_mut().insert("x-road-id", "unsigned-request".parse().unwrap());
    let resp = t.call(0, req).await;
    assert_eq!(error_code(&resp), Fault::ServerMissingSignature.code());
    assert_eq!(error_code(&resp), "server.serverproxy.missing_signature");
    assert_eq!(resp.status(), 500);
    assert_eq!(backend_hits(&t), 0, "the backend is not reached");
    // The normal provider logged its refusal as always; the consumer logged nothing.
    let provider: Vec<LogRecord> = t.records(1).into_iter().chain(t.records(2)).collect();
    assert!(refusal(&provider, "unsigned-request", "server.serverproxy.missing_signature").is_some());
    assert_eq!(log_sizes(&t)[0], consumer_before);

    // A normal consumer and transport-only providers: the provider serves the signed request
    // but answers unsigned, and the consumer refuses to release the answer.
    t.restart_with_protection(0, None).await;
    t.restart_with_protection(1, Some(protection())).await;
    t.restart_with_protection(2, Some(protection())).await;
    let mut req = Topology::r1("GET", &format!("/r1/{CONG_DAN}/cong-dan/2"), "");
    req.headers_mut().insert("x-road-id", "unsigned-response".parse().unwrap());
    let resp = t.call(0, req).await;
    assert_eq!(error_code(&resp), Fault::ClientMissingSignature.code());
    assert_eq!(error_code(&resp), "server.clientproxy.missing_signature");
    assert_eq!(resp.status(), 500);
    assert!(!String::from_utf8_lossy(resp.body()).contains("Nguyễn"), "the answer is not released");
    let consumer = t.records(0);
    assert!(refusal(&consumer, "unsigned-response", "server.clientproxy.missing_signature").is_some());
    within(t.shutdown()).await;
}
