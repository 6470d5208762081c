//! Floods of unauthenticated traffic (issue #14, item 4) end to end in the standard topology with
//! a short refusal interval: audit calls without a certificate and malformed r1 calls on node
//! 0's consumer side, TLS handshakes without a certificate on node 1's peer port.
//!
//! For each flood: every caller gets the same answer as without the limit; the log grows by at
//! most the allowed individual records plus one summary per interval; the individual records
//! and the summaries' counts add up to exactly the refusals sent; a registered client's exchange
//! succeeds during and after the flood; every log verifies offline after a clean stop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lienthong_pki::is_client_tls::client_config;
use lienthong_proto::msglog::v1::{LogRecord, RefusalKind};
use lienthong_testkit::names::*;
use lienthong_testkit::{Topology, https, node_id, within};
use tokio::task::JoinSet;

/// Per (source, kind) and interval, refusals with a record of their own.
const PER_SOURCE: u64 = 5;
const CONCURRENCY: usize = 8;

/// The standard topology with a 1-second refusal interval (so summaries come quickly) and no
/// node-wide cap in the way.
async fn topology() -> Topology {
    Topology::standard_with(&format!(
        "[refusals]\ninterval_secs = 1\nper_source = {PER_SOURCE}\nmax_sources = 100\n\
         records_per_sec = 10000\nburst = 10000\n"
    ))
    .await
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Sends `n` requests made by `make(i)` to `base` (plain HTTP), `CONCURRENCY` at a time.
async fn flood_http(
    base: String,
    n: usize,
    make: impl Fn(usize) -> Request<Full<Bytes>> + Send + Sync + 'static,
) -> Vec<Response<Bytes>> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let make = Arc::new(make);
    let mut out = Vec::with_capacity(n);
    let mut next = 0;
    let mut running = JoinSet::new();
    while out.len() < n {
        while next < n && running.len() < CONCURRENCY {
            let (client, make, base) = (client.clone(), make.clone(), base.clone());
            running.spawn(async move {
                let (mut parts, body) = make(next).into_parts();
                parts.uri = format!("{base}{}", parts.uri).parse().expect("URI");
                let resp = client.request(Request::from_parts(parts, body)).await.expect("an answer");
                let (parts, body) = resp.into_parts();
                let bytes = body.collect().await.expect("the body").to_bytes();
                Response::from_parts(parts, bytes)
            });
            next += 1;
        }
        out.push(running.join_next().await.expect("a running request").expect("the request task"));
    }
    out
}

/// What a flood left in a log: the individual refusal records from 127.0.0.1 that `is_refusal`
/// recognises, and the summaries of `kind` for 127.0.0.1.
#[derive(Debug, Default)]
struct Tally {
    individual: Vec<LogRecord>,
    summaries: u64,
    summarised_recorded: u64,
    suppressed: BTreeMap<String, u64>,
    other: Vec<LogRecord>,
}

impl Tally {
    fn of(records: Vec<LogRecord>, kind: RefusalKind, is_refusal: impl Fn(&LogRecord) -> bool) -> Self {
        let mut t = Tally::default();
        for r in records {
            if let Some(s) = &r.refusal_summary {
                assert_eq!(s.kind, kind as i32, "{s:?}");
                assert_eq!((s.source.as_str(), s.other_sources), ("127.0.0.1", false), "{s:?}");
                assert!(s.interval_end_ms - s.interval_start_ms <= 1_000, "{s:?}");
                assert!(s.interval_start_ms <= s.first_seen_ms && s.first_seen_ms <= s.last_seen_ms, "{s:?}");
                assert!(s.last_seen_ms < s.interval_end_ms, "{s:?}");
                assert!(r.client.is_none() && r.service.is_none() && r.fault.is_none(), "no exchange: {r:?}");
                t.summaries += 1;
                t.summarised_recorded += s.recorded;
                for c in &s.suppressed {
                    *t.suppressed.entry(c.code.clone()).or_default() += c.count;
                }
            } else if r.source_address == "127.0.0.1" && is_refusal(&r) {
                t.individual.push(r);
            } else {
                t.other.push(r);
            }
        }
        t
    }

    fn suppressed_total(&self) -> u64 {
        self.suppressed.values().sum()
    }

    fn accounted(&self) -> u64 {
        self.individual.len() as u64 + self.suppressed_total()
    }
}

/// Waits (bounded) until node `i`'s new records since `from` account for `sent` refusals, then
/// checks the bound on what the flood added: per interval it touched, `PER_SOURCE` individual
/// records and one summary.
async fn settled(
    t: &Topology,
    i: usize,
    from: usize,
    sent: u64,
    elapsed: Duration,
    kind: RefusalKind,
    is_refusal: impl Fn(&LogRecord) -> bool,
) -> Tally {
    let deadline = Instant::now() + Duration::from_secs(20);
    let tally = loop {
        let tally = Tally::of(t.records(i).split_off(from), kind, &is_refusal);
        if tally.accounted() >= sent || Instant::now() > deadline {
            break tally;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        tally.accounted(),
        sent,
        "individual records ({}) and summarised counts ({:?}) add up to the refusals sent",
        tally.individual.len(),
        tally.suppressed
    );
    // A flood of `elapsed` touches at most this many 1-second intervals.
    let intervals = elapsed.as_secs() + 2;
    assert!(
        tally.individual.len() as u64 <= intervals * PER_SOURCE,
        "{} individual records for {intervals} intervals",
        tally.individual.len()
    );
    assert!(tally.summaries <= intervals, "{} summaries for {intervals} intervals", tally.summaries);
    assert!(tally.summaries >= 1, "the flood went beyond the limit");
    assert!(tally.summarised_recorded <= tally.individual.len() as u64);
    tally
}

/// A registered client's exchange through node 0.
async fn legit(t: &Topology, what: &str) {
    let resp = t.call(0, Topology::r1("GET", &format!("/r1/{CONG_DAN}/1"), "")).await;
    assert_eq!(resp.status(), 200, "{what}: {}", String::from_utf8_lossy(resp.body()));
}

/// Every node stopped cleanly (pending summaries are written, a last checkpoint signed) and
/// its log verified offline against the registry's anchor.
async fn stop_and_verify(mut t: Topology) {
    let anchor = t.registry.anchor();
    let keys: Vec<_> = anchor.signing_keys.iter().map(|k| (k.id, k.key.clone())).collect();
    for i in 0..t.nodes.len() {
        t.stop(i).await;
        let store = lienthong_msglog::open_existing(&t.node_dir(i).join("log")).expect("the log opens");
        let report = lienthong_msglog::verify_store(&*store, Some(&keys), &mut |_, _| {})
            .unwrap_or_else(|e| panic!("node {i}'s log does not verify: {e}"));
        assert!(report.size > 0);
    }
    within(t.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_audit_calls_and_malformed_r1_calls_are_summarised_not_logged_one_by_one() {
    let t = topology().await;
    legit(&t, "before the floods").await;
    let base = t.nodes[0].url();

    // 500 audit calls without a certificate (plain HTTP), while a registered client calls.
    const AUDIT: u64 = 500;
    let from = t.records(0).len();
    let started = Instant::now();
    let flood = flood_http(base.clone(), AUDIT as usize, |_| {
        Request::builder().uri("/audit/v1/records").body(Full::new(Bytes::new())).expect("request")
    });
    let (answers, ()) = tokio::join!(flood, legit(&t, "during the audit flood"));
    let elapsed = started.elapsed();
    let mut details = BTreeSet::new();
    for resp in &answers {
        assert_eq!(resp.status(), 403);
        let v: serde_json::Value = serde_json::from_slice(resp.body()).expect("JSON");
        assert_eq!(v["code"], "unauthorized", "the same answer, recorded or not");
        let detail = resp.headers()["x-audit-record"].to_str().unwrap().to_owned();
        assert!(is_uuid(&detail));
        details.insert(detail);
    }
    assert_eq!(details.len() as u64, AUDIT, "each call its own detail id");
    let audit = settled(&t, 0, from, AUDIT, elapsed, RefusalKind::Audit, |r| {
        r.fault.as_ref().is_some_and(|f| f.code == "audit.unauthorized")
    })
    .await;
    assert_eq!(audit.suppressed.keys().collect::<Vec<_>>(), ["audit.unauthorized"]);
    for r in &audit.individual {
        let detail = &r.fault.as_ref().unwrap().detail;
        assert!(details.contains(detail), "an individual record is one of the answers: {r:?}");
    }
    // Besides the flood, only the registered client's exchange (its request and response).
    assert!(
        audit.other.iter().all(|r| r.client.is_some() && r.refusal_summary.is_none() && r.fault.is_none()),
        "{:#?}",
        audit.other
    );
    assert!(audit.other.len() <= 2, "{:#?}", audit.other);

    // 300 malformed r1 calls: three kinds of mistake before the client is known.
    const R1: u64 = 300;
    let cases: [(&str, Option<&str>, &str); 3] = [
        ("/r1/VN/GOV", Some(CONG_DVC), "client.invalid_service_identifier"),
        ("/r2/VN/GOV/000.00.00.G01/dancu/cong-dan", Some(CONG_DVC), "client.bad_request"),
        ("/r1/VN/GOV/000.00.00.G01/dancu/cong-dan/1", None, "client.invalid_client_identifier"),
    ];
    let from = t.records(0).len();
    let started = Instant::now();
    let flood = flood_http(base, R1 as usize, move |i| {
        let (path, client, _) = cases[i % 3];
        let mut r = Request::builder().uri(path);
        if let Some(c) = client {
            r = r.header("x-road-client", c);
        }
        r.body(Full::new(Bytes::new())).expect("request")
    });
    let (answers, ()) = tokio::join!(flood, legit(&t, "during the r1 flood"));
    let elapsed = started.elapsed();
    let mut sent_codes: BTreeMap<String, u64> = BTreeMap::new();
    for resp in &answers {
        assert_eq!(resp.status(), 400);
        let code = resp.headers()["x-road-error"].to_str().unwrap().to_owned();
        assert!(cases.iter().any(|c| c.2 == code), "{code}");
        let v: serde_json::Value = serde_json::from_slice(resp.body()).expect("JSON");
        assert_eq!(v["type"], code.as_str());
        assert!(is_uuid(v["detail"].as_str().unwrap()));
        *sent_codes.entry(code).or_default() += 1;
    }
    let r1 = settled(&t, 0, from, R1, elapsed, RefusalKind::Client, |r| {
        r.fault.as_ref().is_some_and(|f| f.code.starts_with("client."))
    })
    .await;
    // Per fault code too, the records and the counts are the calls sent.
    let mut accounted = r1.suppressed.clone();
    for r in &r1.individual {
        *accounted.entry(r.fault.as_ref().unwrap().code.clone()).or_default() += 1;
    }
    assert_eq!(accounted, sent_codes);
    assert!(r1.other.len() <= 2, "{:#?}", r1.other);

    legit(&t, "after the floods").await;
    stop_and_verify(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_handshakes_without_a_certificate_on_the_peer_port_is_summarised() {
    let t = topology().await;
    legit(&t, "before the flood").await;
    let peer: SocketAddr = t.nodes[1].handle().peer;
    // TLS to node 1's peer port that trusts its certificate but presents none.
    let config = client_config(&t.registry.ca, &node_id(NODE_BCA_1), None).expect("client config");

    const HANDSHAKES: u64 = 200;
    let from = t.records(1).len();
    let started = Instant::now();
    let flood = async {
        let mut refused = 0;
        let mut running = JoinSet::new();
        let mut next = 0;
        while refused < HANDSHAKES {
            while next < HANDSHAKES && running.len() < CONCURRENCY {
                let config = config.clone();
                running.spawn(async move {
                    let req =
                        Request::builder().uri("/exchange").body(Full::new(Bytes::new())).expect("request");
                    https(peer, config, true, req).await
                });
                next += 1;
            }
            let answer = running.join_next().await.expect("a running handshake").expect("the task");
            assert!(answer.is_err(), "no request passes without a certificate: {answer:?}");
            refused += 1;
        }
    };
    tokio::join!(flood, legit(&t, "during the flood"));
    let elapsed = started.elapsed();
    let peer_tls = settled(&t, 1, from, HANDSHAKES, elapsed, RefusalKind::PeerTls, |r| {
        r.fault.as_ref().is_some_and(|f| {
            f.code == "server.serverproxy.ssl_authentication_failed"
                && f.message.contains("refused a peer connection")
        })
    })
    .await;
    assert_eq!(
        peer_tls.suppressed.keys().collect::<Vec<_>>(),
        ["server.serverproxy.ssl_authentication_failed"]
    );
    // Anything else on node 1 is the registered client's exchange, if it was routed there.
    assert!(peer_tls.other.iter().all(|r| r.client.is_some() && r.fault.is_none()), "{:#?}", peer_tls.other);

    legit(&t, "after the flood").await;
    stop_and_verify(t).await;
}
