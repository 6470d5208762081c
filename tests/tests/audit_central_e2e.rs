//! The central audit service end to end on the standard topology (a consumer node, two provider
//! nodes, the registry): traffic, checkpoints witnessed by the registry, then the service pulls
//! every node's audit API over HTTPS with its auditor certificate. The sharing matrix must equal
//! the exchanges actually made (calls per pair, denials, the grant never used), coverage must be
//! complete, an evidence bundle fetched from both nodes must verify offline and fail after a
//! one-byte change, and a node that presents a rewritten history is refused and named.

#![allow(clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use lienthong_audit::bundle;
use lienthong_audit_service::collect::Collector;
use lienthong_globalconf::key_id;
use lienthong_msglog::checkpoint::{Checkpoint, add_witness_signature, sign_checkpoint};
use lienthong_msglog::merkle::{self, MemNodes};
use lienthong_pki::PrivateKey;
use lienthong_proto::audit::v1 as audit_pb;
use lienthong_proto::msglog::v1 as pb;
use lienthong_testkit::audit::{AUDIT_KEY, AuditCredential, AuditFixture};
use lienthong_testkit::names::*;
use lienthong_testkit::{Topology, millis, service, subsystem, within};
use lienthong_types::ClientId;
use prost::Message;
use serde_json::Value;

const KEY: &str = AUDIT_KEY;
const GRANTED_GETS: usize = 5;
const GRANTED_POSTS: usize = 2;
const DENIED: usize = 3;

/// The standard topology with every node's audit API open to one auditor certificate, an extra
/// grant nobody uses, and traffic: granted GETs and POSTs, and calls to a service without grant.
async fn topology_with_traffic() -> (Topology, AuditCredential) {
    let mut t = Topology::standard().await;
    // Agreed but never used: the population department may read the civil-status service.
    t.grant(&service(HO_TICH), &ClientId::Subsystem(subsystem(DANCU))).await;
    let credential = t.open_audit().await;
    for k in 0..GRANTED_GETS + GRANTED_POSTS + DENIED {
        let (method, svc, body) = match k {
            k if k < GRANTED_GETS => ("GET", CONG_DAN, ""),
            k if k < GRANTED_GETS + GRANTED_POSTS => {
                ("POST", CONG_DAN, "{\"so_dinh_danh\":\"001099012345\"}")
            }
            _ => ("GET", HO_TICH, ""),
        };
        let mut req = Topology::r1(method, &format!("/r1/{svc}/cong-dan/{k}"), body);
        req.headers_mut().insert("x-road-id", format!("central-{k}").parse().unwrap());
        let resp = t.call(0, req).await;
        let expected = if svc == CONG_DAN { 200 } else { 500 };
        assert_eq!(resp.status(), expected, "call {k}: {}", String::from_utf8_lossy(resp.body()));
    }
    for i in 0..3 {
        t.witness(i).await;
    }
    (t, credential)
}

fn pulled_cleanly(v: &Value) {
    for n in v["nodes"].as_array().unwrap() {
        assert!(n.get("error").is_none(), "pull failed: {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_central_matrix_equals_the_exchanges_made_and_evidence_verifies() {
    let (t, credential) = topology_with_traffic().await;
    let audit = AuditFixture::start(t.audit_setup(&t.audit_db(), credential)).await;

    // No auditor, no data; the description and the page are public.
    for key in [None, Some("wrong-key")] {
        let (status, v) = audit.api("GET", "/api/v1/sharing", key).await;
        assert_eq!(status, 401, "{v}");
        assert_eq!(v["code"], "unauthorized");
    }
    let (status, openapi) = audit.api("GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(openapi["openapi"], "3.1.0");
    for path in ["/api/v1/sharing", "/api/v1/coverage", "/api/v1/exchanges", "/api/v1/evidence"] {
        assert!(openapi["paths"].get(path).is_some(), "{path} is described");
    }
    let (status, page) = audit.api("GET", "/", None).await;
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("<html"), "the dashboard is served");

    // Pull every node; pulling again stores nothing twice.
    let (status, first) = audit.api("POST", "/api/v1/pull", Some(KEY)).await;
    assert_eq!(status, 200, "{first}");
    pulled_cleanly(&first);
    for n in first["nodes"].as_array().unwrap() {
        assert!(n["stored"].as_u64().unwrap() > 0, "{n}");
    }
    let (_, second) = audit.api("POST", "/api/v1/pull", Some(KEY)).await;
    pulled_cleanly(&second);

    // The matrix: one granted pair with every call made, the denied pair, the unused grant.
    let (status, report) = audit.api("GET", "/api/v1/sharing", Some(KEY)).await;
    assert_eq!(status, 200, "{report}");
    let pairs = report["pairs"].as_array().unwrap();
    let granted = pairs.iter().find(|p| p["service"] == CONG_DAN).expect("the granted pair");
    assert_eq!(granted["consumer"], CONG_DVC);
    assert_eq!(granted["calls"], (GRANTED_GETS + GRANTED_POSTS) as u64, "{granted}");
    assert_eq!(granted["successes"], (GRANTED_GETS + GRANTED_POSTS) as u64);
    assert_eq!(granted["denials"], 0);
    assert_eq!(granted["consumer_name"], "Văn phòng Chính phủ");
    assert_eq!(granted["provider_name"], "Bộ Công an");
    let denied_row = pairs.iter().find(|p| p["service"] == HO_TICH).expect("the denied pair");
    assert_eq!(denied_row["calls"], DENIED as u64);
    assert_eq!(denied_row["denials"], DENIED as u64);
    assert_eq!(pairs.len(), 2, "{pairs:#?}");
    let denied = report["denied"].as_array().unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["count"], DENIED as u64);
    assert_eq!(denied[0]["reasons"][0]["code"], "server.serverproxy.access_denied");
    let grants = report["grants"].as_array().unwrap();
    let used = grants.iter().find(|g| g["service"] == CONG_DAN).unwrap();
    assert_eq!(used["used"], (GRANTED_GETS + GRANTED_POSTS) as u64);
    let unused = grants.iter().find(|g| g["service"] == HO_TICH).unwrap();
    assert_eq!((unused["used"].as_u64(), unused["subject"].as_str()), (Some(0), Some(DANCU)));
    assert!(report["without_grant"].as_array().unwrap().is_empty());
    // The same numbers, counted on the consumer node's own log.
    let requests = t
        .records(0)
        .into_iter()
        .filter(|r| r.direction == pb::Direction::Request as i32 && r.message_id.starts_with("central-"))
        .count();
    assert_eq!(requests, GRANTED_GETS + GRANTED_POSTS + DENIED);

    // Filters narrow the report; malformed ones are clear errors.
    let (_, mine) = audit
        .api("GET", &format!("/api/v1/sharing?member={}&service={}", VPCP, enc(CONG_DAN)), Some(KEY))
        .await;
    assert_eq!(mine["pairs"].as_array().unwrap().len(), 1, "{mine}");
    let (_, none) = audit.api("GET", "/api/v1/sharing?member=VN/GOV/999", Some(KEY)).await;
    assert!(none["pairs"].as_array().unwrap().is_empty());
    for bad in
        ["from=yesterday", "member=VN%2FGOV", "service=x", "colour=red", "from=2026-12-02&until=2026-12-01"]
    {
        let (status, v) = audit.api("GET", &format!("/api/v1/sharing?{bad}"), Some(KEY)).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert_eq!(v["code"], "invalid_filter", "{bad}: {v}");
    }

    // Coverage: every node reported everything up to its checkpoint.
    let (_, coverage) = audit.api("GET", "/api/v1/coverage", Some(KEY)).await;
    let nodes = coverage["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{coverage}");
    for n in nodes {
        assert_eq!(n["reported"], true, "{n}");
        assert_eq!(n["missing"], 0, "{n}");
        assert_eq!(n["contiguous_until"], n["checkpoint_size"], "{n}");
    }

    // Drill-down: an exchange's records on both nodes (request and response on each).
    let (_, records) = audit.api("GET", "/api/v1/exchanges?message_id=central-0", Some(KEY)).await;
    let records = records["records"].as_array().unwrap();
    assert_eq!(records.len(), 4, "{records:#?}");
    assert!(records.iter().any(|r| r["node"] == NODE_VPCP && r["role"] == "consumer"));
    assert!(records.iter().any(|r| r["node"] != NODE_VPCP && r["role"] == "provider"));

    // Evidence from both nodes, verified by the service and again offline; one byte changed fails.
    let (status, evidence) = audit.api("GET", "/api/v1/evidence?message_id=central-5", Some(KEY)).await;
    assert_eq!(status, 200, "{evidence}");
    assert_eq!(evidence["valid"], true, "{evidence:#}");
    assert_eq!(evidence["report"]["sides"].as_array().unwrap().len(), 2);
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(evidence["bundle"].as_str().unwrap()).unwrap();
    let anchor = t.registry.anchor();
    let offline = bundle::verify(&bytes, &anchor).expect("the bundle verifies offline");
    assert_eq!(offline.exchanges[0].method, "POST");
    let mut altered = bytes.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x01;
    assert!(bundle::verify(&altered, &anchor).is_err(), "a changed byte fails the bundle");
    let (status, v) = audit.api("GET", "/api/v1/evidence?message_id=no-such-exchange", Some(KEY)).await;
    assert_eq!((status, v["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{v}");

    audit.shutdown().await;
    within(t.shutdown()).await;
}

fn enc(s: &str) -> String {
    s.replace('/', "%2F")
}

/// A node's log rewritten after the collector pulled it: the records with one of them changed
/// (a denied call turned into a success) and one more appended, its checkpoint signed with the
/// node's own key and co-signed with the registry's configuration key (a witness fooled or
/// colluding): every signature is genuine, only the history is not.
fn rewritten_batch(t: &Topology, i: usize, held: &pb::SignedCheckpoint) -> audit_pb::CollectBatch {
    let store = t.nodes[i].handle().log().store().clone();
    let held = Checkpoint::decode(held).unwrap();
    let mut records: Vec<Vec<u8>> =
        (0..held.size).map(|n| store.record(n).unwrap().expect("record")).collect();
    let victim = records
        .iter()
        .position(|r| pb::LogRecord::decode(r.as_slice()).unwrap().fault.is_some())
        .expect("a refusal in the provider's log");
    let mut lie = pb::LogRecord::decode(records[victim].as_slice()).unwrap();
    lie.fault = None;
    lie.status = 200;
    records[victim] = lie.encode_to_vec();
    records.push(pb::LogRecord { message_id: "after-the-rewrite".into(), ..lie }.encode_to_vec());
    let mut tree = MemNodes::default();
    for r in &records {
        tree.push_leaf(merkle::leaf_hash(r));
    }
    let size = tree.size();
    let keys = t.nodes[i].home.open(None).unwrap();
    let now = millis(t.clock.now());
    let checkpoint = Checkpoint { origin: keys.node.to_string(), size, root: tree.root(), timestamp_ms: now };
    let mut signed =
        sign_checkpoint(&checkpoint, &keys.tls.key, keys.tls.chain[0].fingerprint(), now).unwrap();
    let conf_key = registry_conf_key(t);
    add_witness_signature(&mut signed, &conf_key, key_id(&conf_key.public_key()), "VN", now).unwrap();
    let hashes = |h: Vec<merkle::Hash>| h.iter().map(|x| x.to_vec()).collect();
    audit_pb::CollectBatch {
        checkpoint: Some(signed),
        node_certificate: keys.tls.chain[0].der().to_vec(),
        consistency: Some(pb::ConsistencyProof {
            old_size: held.size,
            new_size: size,
            hashes: hashes(merkle::consistency_proof(&tree, held.size, size).unwrap()),
        }),
        records: (held.size..size)
            .map(|n| audit_pb::ProvenRecord {
                leaf_index: n,
                record: records[usize::try_from(n).unwrap()].clone(),
                proof: Some(pb::InclusionProof {
                    leaf_index: n,
                    tree_size: size,
                    hashes: hashes(merkle::inclusion_proof(&tree, n, size).unwrap()),
                }),
                next_page_token: Vec::new(),
            })
            .collect(),
        next: size,
    }
}

fn registry_conf_key(t: &Topology) -> PrivateKey {
    let keys = t.registry.home.dir().join("keys");
    let file = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("conf-"))
        .expect("the registry's configuration key");
    PrivateKey::from_pem(&std::fs::read_to_string(file).unwrap(), None).unwrap()
}

/// Serves `batch` on every request, over HTTPS with node `i`'s own TLS identity: the lying node.
async fn serve_lie(t: &Topology, i: usize, batch: audit_pb::CollectBatch) -> std::net::SocketAddr {
    let keys = t.nodes[i].home.open(None).unwrap();
    let config = lienthong_pki::consumer_tls::consumer_server_config(&keys.tls).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Bytes::from(batch.encode_to_vec());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move { Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body))) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_rewrites_its_history_is_detected_and_nothing_of_it_is_kept() {
    let (t, credential) = topology_with_traffic().await;
    let db = t.audit_db();
    let again = credential.duplicate();
    let audit = AuditFixture::start(t.audit_setup(&db, credential)).await;
    let (_, pulled) = audit.api("POST", "/api/v1/pull", Some(KEY)).await;
    pulled_cleanly(&pulled);
    let (_, before) = audit.api("GET", "/api/v1/sharing", Some(KEY)).await;
    let (_, coverage_before) = audit.api("GET", "/api/v1/coverage", Some(KEY)).await;
    audit.shutdown().await;

    // Whichever provider node served the denied calls lies about them now.
    let liar = (1..3)
        .find(|&i| {
            t.records(i).iter().any(|r| r.fault.as_ref().is_some_and(|f| f.code.contains("access_denied")))
        })
        .expect("a provider node refused a call");
    let held = Collector::open(&db).unwrap().held_checkpoint(&t.nodes[liar].id).unwrap().unwrap();
    let batch = rewritten_batch(&t, liar, &held);
    let addr = serve_lie(&t, liar, batch).await;
    let mut s = t.audit_setup(&db, again);
    s.nodes[liar].url = format!("https://{addr}");
    let audit = AuditFixture::start(s).await;

    let (_, pulled) = audit.api("POST", "/api/v1/pull", Some(KEY)).await;
    let nodes = pulled["nodes"].as_array().unwrap();
    let refused = nodes.iter().find(|n| n["node"] == t.nodes[liar].id.to_string()).unwrap();
    assert_eq!(refused["code"], "history_rewritten", "{refused}");
    let message = refused["error"].as_str().unwrap();
    assert!(message.contains(&t.nodes[liar].id.to_string()) && message.contains("forked"), "{message}");
    for n in nodes.iter().filter(|n| n["node"] != t.nodes[liar].id.to_string()) {
        assert!(n.get("error").is_none(), "the honest nodes are still collected: {n}");
    }

    // Nothing of the lie was kept: the same report, the same coverage for the liar.
    let (_, after) = audit.api("GET", "/api/v1/sharing", Some(KEY)).await;
    assert_eq!(after["pairs"], before["pairs"]);
    assert_eq!(after["denied"], before["denied"]);
    let (_, coverage_after) = audit.api("GET", "/api/v1/coverage", Some(KEY)).await;
    let of = |c: &Value| {
        c["nodes"].as_array().unwrap().iter().find(|n| n["node"] == t.nodes[liar].id.to_string()).unwrap()
            ["checkpoint_size"]
            .clone()
    };
    assert_eq!(of(&coverage_after), of(&coverage_before));
    let liar_status = &coverage_after["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == t.nodes[liar].id.to_string())
        .unwrap()["last_pull"];
    assert!(liar_status["error"].as_str().unwrap().contains("forked"), "{liar_status}");
    audit.shutdown().await;
    within(t.shutdown()).await;
}

/// The dashboard in headless Chromium: log in with the API key, the heat map shows the pairs
/// with their counts, the graph and the unused grant; a cell drills down to its exchanges and
/// one click fetches and verifies an exchange's evidence. Skipped (with a note) where Chromium
/// is not installed, unless `LIENTHONG_REQUIRE_BROWSER` is set, as `.ci/run` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_pairs_and_verifies_a_bundle_in_a_browser() {
    use lienthong_testkit::browser::Browser;
    let Some(browser) = Browser::start().await.expect("the browser starts") else {
        eprintln!("skipped: no chromium/chromedriver (set LIENTHONG_REQUIRE_BROWSER=1 to require them)");
        return;
    };
    let (t, credential) = topology_with_traffic().await;
    let audit = AuditFixture::start(t.audit_setup(&t.audit_db(), credential)).await;
    let (_, pulled) = audit.api("POST", "/api/v1/pull", Some(KEY)).await;
    pulled_cleanly(&pulled);
    let wait = Duration::from_secs(20);
    let fail = |e: String| -> ! { panic!("{e}") };

    browser.goto(&format!("http://{}/", audit.addr)).await.unwrap_or_else(|e| fail(e));
    let login = browser.wait_for("#api-key", wait).await.unwrap_or_else(|e| fail(e));
    login.send_keys("not-the-key").await.unwrap();
    browser.find("#login-button").await.unwrap().click().await.unwrap();
    let refused = browser
        .wait_until(
            "const e = document.querySelector('#login-error'); return e && e.textContent;",
            vec![],
            wait,
        )
        .await
        .unwrap_or_else(|e| fail(e));
    assert!(refused.as_str().unwrap().contains("unauthorized"), "{refused}");
    let login = browser.find("#api-key").await.unwrap();
    login.clear().await.unwrap();
    login.send_keys(KEY).await.unwrap();
    browser.find("#login-button").await.unwrap().click().await.unwrap();
    browser.wait_for("#dashboard[data-state=ready]", wait).await.unwrap_or_else(|e| fail(e));
    assert_eq!(browser.find("#auditor").await.unwrap().text().await.unwrap(), "kiem-toan");

    // The heat map: the granted pair with every call, the denied pair; the counters agree.
    let cell = |svc: &str| format!("#matrix td.cell[data-consumer='{CONG_DVC}'][data-service='{svc}']");
    let granted = browser.find(&cell(CONG_DAN)).await.unwrap_or_else(|e| fail(e));
    assert_eq!(granted.attribute("data-calls").await.unwrap().as_deref(), Some("7"));
    let denied = browser.find(&cell(HO_TICH)).await.unwrap_or_else(|e| fail(e));
    assert_eq!(denied.attribute("data-calls").await.unwrap().as_deref(), Some("3"));
    assert_eq!(browser.find_all("#matrix td.cell").await.unwrap().len(), 2);
    let value = |id: &'static str| {
        let browser = &browser;
        async move { browser.find(id).await.unwrap().attribute("data-value").await.unwrap() }
    };
    assert_eq!(value("#count-calls").await.as_deref(), Some("10"));
    assert_eq!(value("#count-denials").await.as_deref(), Some("3"));
    assert_eq!(value("#count-unused-grants").await.as_deref(), Some("1"));
    assert_eq!(browser.find_all("#grants .unused-grant").await.unwrap().len(), 1);
    assert_eq!(browser.find_all("#denied tr.denied-pair").await.unwrap().len(), 1);
    let edges =
        browser.find_all(&format!("#graph path.edge[data-from='{VPCP}'][data-to='{BCA}']")).await.unwrap();
    assert!(!edges.is_empty(), "the graph links the Government Office to the ministry");
    assert_eq!(browser.find_all("#coverage tr.coverage-node").await.unwrap().len(), 3);

    // Drill down to the pair's exchanges and verify one's evidence bundle.
    browser.find(&cell(CONG_DAN)).await.unwrap().click().await.unwrap();
    let row = browser.wait_for("#pair-detail tr.exchange", wait).await.unwrap_or_else(|e| fail(e));
    let message_id = row.attribute("data-message-id").await.unwrap().unwrap();
    assert!(message_id.starts_with("central-"), "{message_id}");
    assert_eq!(browser.find_all("#pair-detail tr.exchange").await.unwrap().len(), 7);
    row.find("button.verify").await.unwrap().click().await.unwrap();
    let status = browser.wait_for("#evidence-status[data-valid]", wait).await.unwrap_or_else(|e| fail(e));
    assert_eq!(status.attribute("data-valid").await.unwrap().as_deref(), Some("true"));
    assert_eq!(status.text().await.unwrap(), "Hợp lệ");
    assert!(browser.find_all("#evidence tr.check.failed").await.unwrap().is_empty());

    // For a look at the page: LIENTHONG_DASHBOARD_SCREENSHOT=FILE.png keeps a picture of it.
    if let Some(path) = std::env::var_os("LIENTHONG_DASHBOARD_SCREENSHOT") {
        browser.set_window_size(1280, 2400).await.unwrap();
        browser.execute("window.scrollTo(0, 0);", vec![]).await.unwrap();
        std::fs::write(path, browser.screenshot().await.unwrap()).unwrap();
    }

    // English labels on request; no script errors on the way (failed requests such as the
    // refused login are logged by Chromium as network entries, not script errors).
    browser.find("#lang").await.unwrap().click().await.unwrap();
    browser
        .wait_until("return document.body.innerText.includes('Verify evidence');", vec![], wait)
        .await
        .unwrap_or_else(|e| fail(e));
    let errors: Vec<_> = browser
        .browser_log()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE" && e["source"] != "network")
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    browser.quit().await;
    audit.shutdown().await;
    within(t.shutdown()).await;
}
