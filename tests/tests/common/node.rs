//! Shared by the tests of a running topology under faults: requests of the standard
//! topology, what a gateway error must look like, what the nodes logged, health probes, and
//! the end-of-test check that every log verifies and is witnessed.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use lienthong_msglog::LogStore as _;
use lienthong_proto::msglog::v1::{Direction, LogRecord};
use lienthong_testkit::Topology;
use lienthong_testkit::names::*;

/// A GET of the granted population service from `CONG_DVC`, with a message id to find its
/// records by, optionally pinned to one provider node.
pub fn get(message_id: &str, pin: Option<&str>) -> Request<Full<Bytes>> {
    let path = format!("/r1/{CONG_DAN}/cong-dan/001090012345");
    let mut req = Topology::r1("GET", &path, "");
    req.headers_mut().insert("x-road-id", message_id.parse().unwrap());
    if let Some(node) = pin {
        req.headers_mut().insert("x-road-security-server", node.parse().unwrap());
    }
    req
}

pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices()
            .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

/// Checks a gateway error as the protocol defines it and returns its `detail`.
pub fn refused(resp: &Response<Bytes>, code: &str, status: u16) -> String {
    let body = String::from_utf8_lossy(resp.body()).into_owned();
    assert_eq!(resp.status(), status, "{body}");
    assert_eq!(resp.headers().get("x-road-error").map(|v| v.to_str().unwrap()), Some(code), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["type"], code, "{body}");
    assert!(!v["message"].as_str().unwrap_or_default().is_empty(), "{body}");
    // No internal address (backend, peer node) leaks to the client.
    assert!(!body.contains("127.0.0.1"), "{body}");
    let detail = v["detail"].as_str().unwrap_or_default().to_owned();
    assert!(is_uuid(&detail), "detail is a UUID: {body}");
    detail
}

pub fn ok(resp: &Response<Bytes>) {
    let body = String::from_utf8_lossy(resp.body());
    assert_eq!(resp.status(), 200, "{body} {:?}", resp.headers());
    assert!(resp.headers().get("x-road-error").is_none());
}

pub fn of<'a>(records: &'a [LogRecord], message_id: &str) -> Vec<&'a LogRecord> {
    records.iter().filter(|r| r.message_id == message_id).collect()
}

/// The refusal record a node wrote for a client-visible `detail`.
pub fn refusal_for<'a>(records: &'a [LogRecord], detail: &str) -> &'a LogRecord {
    records
        .iter()
        .find(|r| r.fault.as_ref().is_some_and(|f| f.detail == detail))
        .unwrap_or_else(|| panic!("no refusal record with detail {detail} in {records:#?}"))
}

pub async fn readyz(t: &Topology, i: usize) -> (u16, String) {
    let req = Request::get("/readyz").body(Full::new(Bytes::new())).unwrap();
    let resp = t.call(i, req).await;
    (resp.status().as_u16(), String::from_utf8_lossy(resp.body()).into_owned())
}

/// Waits until node `i` says it is ready; callers bound it with `within`.
pub async fn until_ready(t: &Topology, i: usize) {
    while readyz(t, i).await.0 != 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (briefly sleeping) until `cond` holds; callers bound it with `within`.
pub async fn until(cond: impl Fn() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn hits(t: &Topology) -> usize {
    t.backends.iter().map(|b| b.hits()).sum()
}

/// What the clients of a test were told, to hold the nodes' logs to it: every acknowledged
/// exchange logged on both sides, no success logged for one the client saw fail.
#[derive(Debug, Default)]
pub struct Ledger {
    /// (message id, the provider node that served it)
    acked: Vec<(String, usize)>,
    failed: Vec<String>,
}

impl Ledger {
    /// A 200 from the standard topology: served by node 1 (backend 0) or node 2 (backend 1).
    pub fn acked(&mut self, resp: &Response<Bytes>, message_id: &str) {
        let body = String::from_utf8_lossy(resp.body());
        assert_eq!(resp.status(), 200, "{message_id}: {body}");
        ok(resp);
        let provider = match resp.headers().get("x-backend").map(|v| v.as_bytes()) {
            Some(b"backend-0") => 1,
            Some(b"backend-1") => 2,
            other => panic!("no known backend answered {message_id}: {other:?}"),
        };
        self.acked.push((message_id.to_owned(), provider));
    }

    /// A gateway error the client saw for `message_id`; returns its detail.
    pub fn failed(&mut self, resp: &Response<Bytes>, message_id: &str, code: &str) -> String {
        let detail = refused(resp, code, 500);
        self.failed.push(message_id.to_owned());
        detail
    }

    /// Checks the running nodes' logs against what the clients were told.
    pub fn check(&self, t: &Topology) {
        let records: Vec<Vec<LogRecord>> = (0..3).map(|i| t.records(i)).collect();
        for (id, provider) in &self.acked {
            for node in [0, *provider] {
                let r = of(&records[node], id);
                let directions: Vec<i32> = r.iter().map(|r| r.direction).collect();
                assert_eq!(
                    directions,
                    [Direction::Request as i32, Direction::Response as i32],
                    "acknowledged {id}: request and response on node {node}: {r:#?}"
                );
                assert!(r.iter().all(|r| r.fault.is_none()), "acknowledged {id} on node {node}: {r:#?}");
            }
        }
        for id in &self.failed {
            let r = of(&records[0], id);
            assert!(
                r.iter().any(|r| r.fault.is_some()),
                "failed {id}: the consumer logged the refusal: {r:#?}"
            );
            assert!(
                !r.iter().any(|r| r.direction == Direction::Response as i32 && r.fault.is_none()),
                "failed {id}: no success logged on the consumer: {r:#?}"
            );
        }
    }
}

/// Stops every node and checks its log offline: it verifies against the registry's anchor
/// keys, and the registry witnessed all of it (the final checkpoint of a graceful stop).
pub async fn stop_and_verify_logs(t: &mut Topology) {
    let keys: Vec<_> = t.registry.anchor().signing_keys.iter().map(|k| (k.id, k.key.clone())).collect();
    let registry = t.registry.running.registry.clone();
    for i in 0..t.nodes.len() {
        let log_dir = t.node_dir(i).join("log");
        t.stop(i).await;
        let store = lienthong_msglog::SegmentStore::open_dir(&log_dir).expect("the log opens");
        let report = lienthong_msglog::verify_store(&store, Some(&keys), &mut |_, _| {})
            .unwrap_or_else(|e| panic!("node {i}'s log verifies: {e}"));
        assert_eq!(report.size, store.size().unwrap());
        let witnessed = registry.witnessed(&t.nodes[i].id).unwrap().expect("witnessed");
        let witnessed = lienthong_msglog::checkpoint::Checkpoint::decode(&witnessed).unwrap();
        assert_eq!(witnessed.size, report.size, "the registry witnessed node {i}'s whole log");
    }
}
