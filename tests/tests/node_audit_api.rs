//! The node's audit API end to end: only an auditor's certificate over HTTPS gets in; records
//! come back filtered and paged with inclusion proofs against the witnessed checkpoint, as JSON,
//! NDJSON or CSV; malformed filters are clear errors; every audit call is itself logged.

use std::net::SocketAddr;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use lienthong_msglog::checkpoint::Checkpoint;
use lienthong_msglog::merkle;
use lienthong_pki::PrivateKey;
use lienthong_pki::is_client_tls::{client_config, self_signed_client};
use lienthong_proto::msglog::v1 as pb;
use lienthong_testkit::names::*;
use lienthong_testkit::{Topology, https, node_id, within};
use prost::Message;
use rustls::pki_types::CertificateDer;

struct Auditor {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKey,
}

async fn get(t: &Topology, addr: SocketAddr, who: Option<&Auditor>, path: &str) -> Response<Bytes> {
    let client = who.map(|a| (a.chain.as_slice(), &a.key));
    let config = client_config(&t.registry.ca, &node_id(NODE_VPCP), client).unwrap();
    let req =
        Request::builder().uri(path).header("host", addr.to_string()).body(Full::new(Bytes::new())).unwrap();
    https(addr, config, false, req).await.expect("HTTPS exchange")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_query_the_log_with_proofs_and_every_query_is_recorded() {
    let mut t = Topology::standard().await;
    let (der, pem, key) = self_signed_client("kiem-toan-nha-nuoc").unwrap();
    let auditor = Auditor { chain: vec![der], key };
    let (der, _, key) = self_signed_client("someone-else").unwrap();
    let stranger = Auditor { chain: vec![der], key };
    let path = t.dir.path().join("auditor.pem");
    std::fs::write(&path, pem).unwrap();
    t.reconfigure(0, move |c| {
        c.consumer.https = Some("127.0.0.1:0".parse().unwrap());
        c.audit.certificates = vec![path];
    })
    .await;
    let addr = t.https_addr(0).unwrap();

    // Traffic: three calls, one denied.
    for rest in ["/cong-dan/1", "/cong-dan/2"] {
        let resp = t.call(0, Topology::r1("GET", &format!("/r1/{CONG_DAN}{rest}"), "")).await;
        assert_eq!(resp.status(), 200);
    }
    let denied = t.call(0, Topology::r1("GET", &format!("/r1/{HO_TICH}/x"), "")).await;
    assert_eq!(denied.status(), 500);
    t.witness(0).await;

    // Only the auditor's certificate opens the API; the refusals are on record too.
    let size_before = t.records(0).len();
    for who in [None, Some(&stranger)] {
        let resp = get(&t, addr, who, "/audit/v1/records").await;
        assert_eq!(resp.status(), 403, "{}", String::from_utf8_lossy(resp.body()));
        let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(v["code"], "unauthorized");
    }
    let plain =
        t.call(0, Request::builder().uri("/audit/v1/records").body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(plain.status(), 403, "plain HTTP never reaches the audit API");
    let after = t.records(0);
    assert_eq!(after.len(), size_before + 3, "each refused audit call is logged");
    assert!(
        after[size_before..].iter().all(|r| r.fault.as_ref().is_some_and(|f| f.code == "audit.unauthorized"))
    );

    // The client's exchanges, as JSON, each proven against the witnessed checkpoint.
    let checkpoint = get(&t, addr, Some(&auditor), "/audit/v1/checkpoint").await;
    assert_eq!(checkpoint.status(), 200);
    let cp: serde_json::Value = serde_json::from_slice(checkpoint.body()).unwrap();
    let signed =
        base64::engine::general_purpose::STANDARD.decode(cp["signed_checkpoint"].as_str().unwrap()).unwrap();
    let signed = pb::SignedCheckpoint::decode(signed.as_slice()).unwrap();
    let decoded = Checkpoint::decode(&signed).unwrap();
    assert!(lienthong_msglog::checkpoint::is_witnessed(&signed));
    let query =
        format!("/audit/v1/records?client={}&direction=request&limit=10", CONG_DVC.replace('/', "%2F"));
    let resp = get(&t, addr, Some(&auditor), &query).await;
    assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(resp.body()));
    let records: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 3, "three requests by the client: {records:#?}");
    for r in records {
        assert_eq!(r["client"], CONG_DVC);
        assert!(r.get("body").is_none(), "never a body");
        let index = r["leaf_index"].as_u64().unwrap();
        let proof: Vec<merkle::Hash> = r["proof"]["hashes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| hex::decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
            .collect();
        let bytes = t.nodes[0].handle().log().store().record(index).unwrap().unwrap();
        let leaf = merkle::leaf_hash(&bytes);
        assert_eq!(hex::encode(leaf), r["leaf_hash"].as_str().unwrap());
        merkle::verify_inclusion(&leaf, index, decoded.size, &proof, &decoded.root)
            .expect("the proof verifies");
    }

    // Denials, as CSV; paging with a cursor; malformed filters.
    let resp = get(&t, addr, Some(&auditor), "/audit/v1/records?status=denied&format=csv").await;
    assert_eq!(resp.status(), 200);
    let csv = String::from_utf8(resp.body().to_vec()).unwrap();
    assert_eq!(csv.lines().count(), 2, "a header and the one denial: {csv}");
    assert!(csv.contains("access_denied") && csv.contains("\r\n"));
    let first = get(&t, addr, Some(&auditor), "/audit/v1/records?limit=1&format=ndjson").await;
    let cursor = first.headers()["x-next-cursor"].to_str().unwrap().to_owned();
    let second =
        get(&t, addr, Some(&auditor), &format!("/audit/v1/records?limit=1&format=ndjson&cursor={cursor}"))
            .await;
    assert_eq!(second.status(), 200);
    let a: serde_json::Value = serde_json::from_slice(first.body()).unwrap();
    let b: serde_json::Value = serde_json::from_slice(second.body()).unwrap();
    assert_eq!(b["leaf_index"].as_u64().unwrap(), a["leaf_index"].as_u64().unwrap() + 1);
    for bad in ["from=yesterday", "status=maybe", "client=VN%2FGOV", "colour=red", "limit=0", "cursor=%%%"] {
        let resp = get(&t, addr, Some(&auditor), &format!("/audit/v1/records?{bad}")).await;
        assert_eq!(resp.status(), 400, "{bad}: {}", String::from_utf8_lossy(resp.body()));
        let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert!(v["code"].as_str().unwrap().starts_with("invalid_"), "{bad}: {v}");
    }

    // A collector's pull: the witnessed checkpoint, its node certificate and proven records.
    let resp = get(&t, addr, Some(&auditor), "/audit/v1/collect?from=1&limit=2").await;
    assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(resp.body()));
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let batch = lienthong_proto::audit::v1::CollectBatch::decode(resp.body().as_ref()).unwrap();
    let pulled = Checkpoint::decode(batch.checkpoint.as_ref().unwrap()).unwrap();
    assert_eq!((batch.records.len(), batch.next), (2, 3));
    assert_eq!(
        lienthong_pki::Fingerprint::of(&batch.node_certificate),
        t.nodes[0].home.open(None).unwrap().tls.chain[0].fingerprint()
    );
    for r in &batch.records {
        let proof = r.proof.as_ref().unwrap();
        let hashes: Vec<merkle::Hash> =
            proof.hashes.iter().map(|h| h.as_slice().try_into().unwrap()).collect();
        merkle::verify_inclusion(
            &merkle::leaf_hash(&r.record),
            r.leaf_index,
            pulled.size,
            &hashes,
            &pulled.root,
        )
        .expect("a pulled record is proven");
    }
    for bad in ["limit=0", "limit=100000", "from=first", "colour=red"] {
        let resp = get(&t, addr, Some(&auditor), &format!("/audit/v1/collect?{bad}")).await;
        assert_eq!(resp.status(), 400, "{bad}: {}", String::from_utf8_lossy(resp.body()));
    }
    // This node's side of an exchange's evidence; an unknown exchange is not found.
    let message_id = t.records(0)[0].message_id.clone();
    let resp = get(&t, addr, Some(&auditor), &format!("/audit/v1/evidence?exchange={message_id}")).await;
    assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(resp.body()));
    let report =
        lienthong_audit::bundle::verify(resp.body(), &t.registry.anchor()).expect("one side verifies");
    assert_eq!(report.sides.len(), 1);
    let resp = get(&t, addr, Some(&auditor), "/audit/v1/evidence?exchange=no-such-exchange").await;
    assert_eq!(resp.status(), 404, "{}", String::from_utf8_lossy(resp.body()));
    let resp = get(&t, addr, Some(&auditor), "/audit/v1/evidence").await;
    assert_eq!(resp.status(), 400, "{}", String::from_utf8_lossy(resp.body()));

    // Every audit call is in the log, with the auditor's fingerprint and what was asked.
    let audits: Vec<_> = t.records(0).into_iter().filter(|r| r.user_id.starts_with("auditor:")).collect();
    assert!(audits.iter().any(|r| r.path.contains("status=denied") && r.fault.is_none()));
    assert!(audits.iter().any(|r| r.path.contains("colour=red") && r.fault.is_some()));
    within(t.shutdown()).await;
}
