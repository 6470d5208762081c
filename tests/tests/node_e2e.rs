//! The node end to end: an information system calls another agency's service through its own
//! node, over the X-Road REST r1 protocol, in the standard in-process topology (registry, three
//! nodes, mock backends). Bad inputs and faults have their own files.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::Full;
use lienthong_exchange::envelope;
use lienthong_proto::exchange::v1 as ex;
use lienthong_proto::msglog::v1::{Direction, LogRecord, Role};
use lienthong_testkit::names::*;
use lienthong_testkit::{Topology, within};
use prost::Message;
use sha2::{Digest, Sha256, Sha512};

fn find<'a>(records: &'a [LogRecord], direction: Direction, message_id: &str) -> &'a LogRecord {
    records
        .iter()
        .find(|r| r.direction == direction as i32 && r.message_id == message_id)
        .unwrap_or_else(|| panic!("no {direction:?} record for {message_id} in {records:#?}"))
}

/// The protocol's hash, computed here independently of the node's code.
fn expected_request_hash(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
    let mut h = Sha512::new();
    h.update(format!("{method}\r\n{path}\r\n"));
    for (n, v) in headers {
        h.update(format!("{n}:{v}\r\n"));
    }
    let head = h.finalize();
    if body.is_empty() {
        return STANDARD.encode(head);
    }
    let mut outer = Sha512::new();
    outer.update(head);
    outer.update(Sha512::digest(body));
    STANDARD.encode(outer.finalize())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_post_travel_signed_and_logged_on_both_sides() {
    let t = Topology::standard().await;

    // GET with a query and the optional X-Road headers.
    let path = format!("/r1/{CONG_DAN}/cong-dan/001090012345?fields=ho_ten");
    let mut req = Topology::r1("GET", &path, "");
    req.headers_mut().insert("x-road-id", "vpcp-2026-000001".parse().unwrap());
    req.headers_mut().insert("x-road-userid", "VN012345678".parse().unwrap());
    req.headers_mut().insert("x-road-issue", "HS-2026-11".parse().unwrap());
    req.headers_mut().insert("x-road-request-id", "forged-by-client".parse().unwrap());
    req.headers_mut().insert("x-custom", "giữ nguyên".parse().unwrap());
    let resp = t.call(0, req).await;
    let body = String::from_utf8_lossy(resp.body()).into_owned();
    assert_eq!(resp.status(), 200, "{body} {:?}", resp.headers());
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["path"], "/cong-dan/001090012345?fields=ho_ten");
    assert_eq!(resp.headers()["x-road-id"], "vpcp-2026-000001");
    assert_eq!(resp.headers()["x-road-service"], CONG_DAN);
    assert_eq!(resp.headers()["x-road-client"], CONG_DVC);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().get("x-road-error").is_none());
    let request_id = resp.headers()["x-road-request-id"].to_str().unwrap().to_owned();
    assert_ne!(request_id, "forged-by-client", "the node sets a fresh request id");

    // What the backend saw: X-Road headers passed through, hop-by-hop ones not.
    let served = [&t.backends[0], &t.backends[1]].into_iter().filter_map(|b| b.last()).next().unwrap();
    assert_eq!(served.method, "GET");
    assert_eq!(served.header("x-road-client"), Some(CONG_DVC));
    assert_eq!(served.header("x-road-userid"), Some("VN012345678"));
    assert_eq!(served.header("x-road-request-id"), Some(request_id.as_str()));
    assert_eq!(served.header("x-custom"), Some("giữ nguyên"));

    // The request hash per the protocol, over the headers the consumer forwarded in order.
    let consumer = t.records(0);
    let sent = find(&consumer, Direction::Request, "vpcp-2026-000001");
    let env = ex::RequestEnvelope::decode(sent.envelope.as_slice()).unwrap();
    let headers: Vec<(String, String)> =
        env.headers.iter().map(|h| (h.name.clone(), String::from_utf8(h.value.clone()).unwrap())).collect();
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(
        resp.headers()["x-road-request-hash"],
        expected_request_hash("GET", &path, &pairs, b"").as_str(),
        "{pairs:?}"
    );

    // POST with a body: the backend echoes it.
    let payload = r#"{"ho_ten":"Trần Thị Bình","ngay_sinh":"1990-01-01"}"#;
    let mut req = Topology::r1("POST", &format!("/r1/{CONG_DAN}/echo"), payload);
    req.headers_mut().insert("content-type", "application/json".parse().unwrap());
    let resp = t.call(0, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().as_ref(), payload.as_bytes());
    let post_id = resp.headers()["x-road-id"].to_str().unwrap().to_owned();
    assert!(post_id.starts_with("VN-"), "generated as {{instance}}-{{uuid}}: {post_id}");

    // Both sides hold both signed records of each exchange; the signatures verify offline from
    // the records alone, against the global configuration.
    let conf = t.nodes[0].handle().conf().unwrap();
    let now = t.clock.now();
    let consumer = t.records(0);
    let provider: Vec<LogRecord> = t.records(1).into_iter().chain(t.records(2)).collect();
    for id in ["vpcp-2026-000001", post_id.as_str()] {
        for (records, role) in [(&consumer, Role::Consumer), (&provider, Role::Provider)] {
            let req = find(records, Direction::Request, id);
            let resp = find(records, Direction::Response, id);
            assert_eq!((req.role, resp.role), (role as i32, role as i32));
            assert!(req.fault.is_none() && resp.fault.is_none());
            let e = ex::RequestEnvelope::decode(req.envelope.as_slice()).unwrap();
            envelope::verify_request(&e, &lienthong_testkit::member(VPCP), &conf.conf, now).unwrap();
            assert_eq!(e.body_sha256, req.body_sha256);
            let r = ex::ResponseEnvelope::decode(resp.envelope.as_slice()).unwrap();
            envelope::verify_response(&r, &lienthong_testkit::member(BCA), &conf.conf, now).unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(resp.status, 200);
        }
    }
    let post_req = find(&provider, Direction::Request, &post_id);
    assert_eq!(post_req.body_sha256, Sha256::digest(payload).to_vec());
    assert!(!post_req.grant_id.is_empty(), "the provider records the grant that allowed the call");
    within(t.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_statuses_and_headers_pass_through_and_a_10_mib_body_round_trips() {
    let t = Topology::standard().await;
    t.backends[0].set_mode(lienthong_testkit::Mode::Status(404));
    t.backends[1].set_mode(lienthong_testkit::Mode::Status(404));
    let resp = t.call(0, Topology::r1("GET", &format!("/r1/{CONG_DAN}/cong-dan/0"), "")).await;
    assert_eq!(resp.status(), 404, "backend errors pass through");
    assert!(resp.headers().get("x-road-error").is_none());
    assert!(resp.headers().get("x-backend").is_some(), "response headers pass through");
    t.backends[0].set_mode(lienthong_testkit::Mode::Echo);
    t.backends[1].set_mode(lienthong_testkit::Mode::Echo);

    // 10 MiB: above the memory threshold, so both nodes spool it to disk on the way.
    let big: Bytes = (0..10 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect::<Vec<u8>>().into();
    let req = http::Request::builder()
        .method("PUT")
        .uri(format!("/r1/{CONG_DAN}/echo/big"))
        .header("x-road-client", CONG_DVC)
        .body(Full::new(big.clone()))
        .unwrap();
    let resp = t.call(0, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().len(), big.len());
    assert!(resp.body() == &big, "the body comes back byte for byte");
    let id = resp.headers()["x-road-id"].to_str().unwrap().to_owned();
    let records = t.records(0);
    let logged = find(&records, Direction::Request, &id);
    assert_eq!(logged.body_length, big.len() as u64);
    assert_eq!(logged.body_sha256, Sha256::digest(&big).to_vec());
    within(t.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_checkpoint_their_logs_and_the_registry_witnesses_them() {
    let t = Topology::standard_with("").await;
    let resp = t.call(0, Topology::r1("GET", &format!("/r1/{CONG_DAN}/cong-dan/1"), "")).await;
    assert_eq!(resp.status(), 200);
    // The node's own checkpointer runs hourly in the testkit; one round by hand, through the
    // node's registry witness.
    let cosigned = t.witness(0).await;
    let log = t.nodes[0].handle().log();
    assert_eq!(cosigned.signatures.len(), 2, "the node's and the registry's");
    let last = lienthong_msglog::witness::last_witnessed(log).unwrap().unwrap();
    assert_eq!(last.size, log.head().size);
    within(t.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_hosts_subsystems_of_several_members() {
    use lienthong_testkit::{NodeSpec, node_id, service, subsystem};
    use lienthong_types::ClientId;
    // A provincial node run by the People's Committee also hosts a department registered as a
    // member of its own; it asks to host it with the node's key, then gets its signing key.
    const UBND: &str = "VN/GOV/000.00.00.H41";
    const SO_TU_PHAP: &str = "VN/GOV/000.10.41.H41/so-tu-phap";
    const CONG_TINH: &str = "VN/GOV/000.00.00.H41/cong-tinh";
    let specs = vec![
        NodeSpec {
            id: node_id(&format!("{UBND}/ss-nghe-an")),
            subsystems: vec![subsystem(CONG_TINH), subsystem(SO_TU_PHAP)],
            services: vec![],
            extra_toml: String::new(),
        },
        NodeSpec {
            id: node_id(NODE_BCA_1),
            subsystems: vec![subsystem(DANCU)],
            services: vec![(service(CONG_DAN), 0)],
            extra_toml: String::new(),
        },
    ];
    let mut t = Topology::build(
        &[
            (BCA, "Bộ Công an", &["dancu"]),
            (UBND, "UBND tỉnh Nghệ An", &["cong-tinh"]),
            ("VN/GOV/000.10.41.H41", "Sở Tư pháp Nghệ An", &["so-tu-phap"]),
        ],
        specs,
        1,
    )
    .await;
    t.publish(&service(CONG_DAN), &node_id(NODE_BCA_1)).await;
    for client in [CONG_TINH, SO_TU_PHAP] {
        t.grant(&service(CONG_DAN), &ClientId::Subsystem(subsystem(client))).await;
    }
    t.sync().await;
    let keys = t.nodes[0].home.open(None).unwrap();
    assert_eq!(keys.signing.len(), 2, "one signing key per member hosted");
    for client in [CONG_TINH, SO_TU_PHAP] {
        let req = http::Request::builder()
            .uri(format!("/r1/{CONG_DAN}/cong-dan/1"))
            .header("x-road-client", client)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = t.call(0, req).await;
        assert_eq!(resp.status(), 200, "{client}: {}", String::from_utf8_lossy(resp.body()));
        assert_eq!(resp.headers()["x-road-client"], client);
    }
    within(t.shutdown()).await;
}
