//! Audit queries (`lienthong_audit::query`): every filter alone and combined against a brute
//! force over the same records, on every store; paging returns each record once, in leaf order,
//! also with short pages and a clock that stepped back; cursors are tied to their filter;
//! malformed filters give their documented codes; proofs verify against the witnessed
//! checkpoint's root and unwitnessed records are flagged; exports (CSV per RFC 4180, NDJSON,
//! JSON) round-trip, carry UTC ISO-8601 times and never a body.

use std::sync::Arc;

use lienthong_audit::query::{
    self, COLUMNS, Cursor, Filter, Format, MAX_LIMIT, Plan, ProofAt, QueryError, QueryOptions, RecordWriter,
    StatusFilter, format_time, query_with,
};
use lienthong_msglog::checkpoint::{self, Checkpoint};
use lienthong_msglog::merkle::{self, Frontier};
use lienthong_msglog::record::attach_body;
use lienthong_msglog::store::StoreNodes;
use lienthong_msglog::{BodyPolicy, Entry, LogStore, MemStore, RedbStore, SegmentStore};
use lienthong_pki::{Fingerprint, KeyAlgorithm, PrivateKey};
use lienthong_proto::msglog::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{ClientId, Fault, NodeId, ServiceId};

/// 2026-11-25T10:15:30.123Z.
const BASE_MS: i64 = 1_795_601_730_123;
const MINUTE: i64 = 60_000;
const CLIENTS: [&str; 3] = ["VN/GOV/000.00.00.G01/dancu", "VN/GOV/000.00.00.G02/thue", "VN/COM/0101234567"];
const SERVICES: [&str; 2] = ["VN/GOV/000.00.00.G22/csdl/getPerson", "VN/GOV/000.00.00.G22/csdl/getHousehold"];
const NODE: &str = "VN/GOV/000.00.00.G22/ss1";
const PEER: &str = "VN/GOV/000.00.00.G01/ss1";
/// A path that needs every kind of CSV quoting.
const NASTY_PATH: &str = "/persons/search?name=Nguy\u{1ec5}n, \"V\u{0103}n\" A\r\nnext line";

// ----- fixtures ------------------------------------------------------------------------------

struct Store {
    name: &'static str,
    store: Arc<dyn LogStore>,
    _dir: Option<tempfile::TempDir>,
}

fn stores() -> Vec<Store> {
    let seg = tempfile::tempdir().unwrap();
    let redb = tempfile::tempdir().unwrap();
    vec![
        Store { name: "mem", store: Arc::new(MemStore::new()), _dir: None },
        Store { name: "redb", store: Arc::new(RedbStore::open_dir(redb.path()).unwrap()), _dir: Some(redb) },
        Store {
            name: "segment",
            store: Arc::new(SegmentStore::open_dir(seg.path()).unwrap()),
            _dir: Some(seg),
        },
    ]
}

fn fault(f: Fault) -> types_pb::Fault {
    types_pb::Fault {
        code: f.code(),
        message: f.meaning().into(),
        detail: "4b1d6a52-0d7e-4d5e-9a55-1c2f3e4d5a6b".into(),
    }
}

/// Record `i`: exchange `i / 2`, request when `i` is even, its response when odd, with
/// outcomes, clients, services, users and roles cycling independently.
fn record(i: u64, logged_at_ms: i64) -> pb::LogRecord {
    let e = i / 2;
    let client: ClientId = CLIENTS[(e % 3) as usize].parse().unwrap();
    let service: ServiceId = SERVICES[((e / 3) % 2) as usize].parse().unwrap();
    let node: NodeId = NODE.parse().unwrap();
    let peer: NodeId = PEER.parse().unwrap();
    let request = i.is_multiple_of(2);
    let mut r = pb::LogRecord {
        message_id: format!("ex-{e:05}"),
        request_id: format!("rq-{e:05}"),
        direction: if request { pb::Direction::Request } else { pb::Direction::Response } as i32,
        role: if e.is_multiple_of(5) { pb::Role::Provider } else { pb::Role::Consumer } as i32,
        client: Some((&client).into()),
        service: Some((&service).into()),
        method: "POST".into(),
        path: if e == 3 { NASTY_PATH.into() } else { format!("/persons/{e}") },
        user_id: format!("user-{}", e % 4),
        node: Some((&node).into()),
        peer_node: Some((&peer).into()),
        message_time_ms: logged_at_ms - 5,
        logged_at_ms,
        grant_id: if e.is_multiple_of(5) { format!("grant-{}", e % 3) } else { String::new() },
        ..Default::default()
    };
    if !request {
        match e % 6 {
            0 => r.status = 200,
            1 => r.status = 201,
            2 => {
                r.status = 500;
                r.fault = Some(fault(Fault::ServiceFailed));
            }
            3 => {
                r.status = 500;
                r.fault = Some(fault(Fault::AccessDenied));
            }
            4 => r.status = 404,
            _ => r.status = 204,
        }
    }
    attach_body(&mut r, format!("SECRET-BODY-{i}").as_bytes(), &BodyPolicy::Full).unwrap();
    r
}

fn append(store: &dyn LogStore, records: &[pb::LogRecord]) {
    let from = store.size().unwrap();
    let entries: Vec<Entry> = records.iter().map(Entry::new).collect();
    let mut frontier = Frontier::from_store(&StoreNodes(store), from).unwrap();
    let nodes: Vec<_> = entries.iter().flat_map(|e| frontier.append(merkle::leaf_hash(&e.bytes))).collect();
    store.append(from, &entries, &nodes).unwrap();
}

/// `n` records one minute apart.
fn fill(store: &dyn LogStore, n: u64) -> Vec<pb::LogRecord> {
    let records: Vec<_> = (0..n).map(|i| record(i, BASE_MS + i as i64 * MINUTE)).collect();
    for chunk in records.chunks(97) {
        append(store, chunk);
    }
    records
}

/// Signs a checkpoint of the first `size` records and, if `witnessed`, co-signs it.
fn put_checkpoint(store: &dyn LogStore, size: u64, witnessed: bool) -> Checkpoint {
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let cp = Checkpoint {
        origin: NODE.into(),
        size,
        root: merkle::root(&StoreNodes(store), size).unwrap(),
        timestamp_ms: BASE_MS,
    };
    let fp = Fingerprint::of(key.public_key().raw());
    let mut signed = checkpoint::sign_checkpoint(&cp, &key, fp, BASE_MS).unwrap();
    if witnessed {
        let witness = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let id = Fingerprint::of(witness.public_key().raw());
        checkpoint::add_witness_signature(&mut signed, &witness, id, "VN", BASE_MS + 1).unwrap();
    }
    store.put_checkpoint(size, &signed).unwrap();
    cp
}

/// Every page of `filter`, checking leaf order and that cursors appear exactly when more follows.
fn all(store: &dyn LogStore, filter: &Filter, limit: usize, max_scan: usize) -> Vec<query::QueryRecord> {
    let options = QueryOptions { proofs: ProofAt::Latest, max_scan };
    let mut out: Vec<query::QueryRecord> = Vec::new();
    let mut cursor: Option<Cursor> = None;
    for _ in 0..100_000 {
        let page = query_with(store, filter, cursor.as_ref(), limit, &options).unwrap();
        assert!(page.records.len() <= limit);
        for r in page.records {
            if let Some(prev) = out.last() {
                assert!(
                    r.leaf_index > prev.leaf_index,
                    "leaf order: {} after {}",
                    r.leaf_index,
                    prev.leaf_index
                );
            }
            out.push(r);
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
    panic!("paging did not end");
}

fn indexes(records: &[query::QueryRecord]) -> Vec<u64> {
    records.iter().map(|r| r.leaf_index).collect()
}

fn expect(records: &[pb::LogRecord], keep: impl Fn(&pb::LogRecord) -> bool) -> Vec<u64> {
    records.iter().enumerate().filter(|(_, r)| keep(r)).map(|(i, _)| i as u64).collect()
}

fn filter(pairs: &[(&str, &str)]) -> Filter {
    Filter::from_pairs(pairs.iter().copied()).unwrap()
}

fn client_of(r: &pb::LogRecord) -> String {
    use lienthong_proto::convert::IntoDomain;
    r.client.clone().unwrap().into_domain("client").unwrap().to_string()
}

fn service_of(r: &pb::LogRecord) -> String {
    use lienthong_proto::convert::IntoDomain;
    r.service.clone().unwrap().into_domain("service").unwrap().to_string()
}

fn fault_code(r: &pb::LogRecord) -> &str {
    r.fault.as_ref().map_or("", |f| f.code.as_str())
}

fn time_text(ms: i64) -> String {
    format_time(ms)
}

// ----- filters -------------------------------------------------------------------------------

/// One filter case: the filter as text and the same selection written out by hand.
type Case = (Vec<(&'static str, String)>, Box<dyn Fn(&pb::LogRecord) -> bool>);

fn cases() -> Vec<Case> {
    let t = |m: i64| time_text(BASE_MS + m * MINUTE);
    let has_outcome = |r: &pb::LogRecord| r.status != 0 || r.fault.is_some();
    let ok = move |r: &pb::LogRecord| has_outcome(r) && (200..300).contains(&r.status) && r.fault.is_none();
    vec![
        (vec![("client", CLIENTS[1].into())], Box::new(|r| client_of(r) == CLIENTS[1])),
        (vec![("client", CLIENTS[2].into())], Box::new(|r| client_of(r) == CLIENTS[2])),
        (vec![("service", SERVICES[0].into())], Box::new(|r| service_of(r) == SERVICES[0])),
        (vec![("exchange", "ex-00042".into())], Box::new(|r| r.message_id == "ex-00042")),
        (vec![("exchange", "ex-99999".into())], Box::new(|_| false)),
        (vec![("user", "user-2".into())], Box::new(|r| r.user_id == "user-2")),
        (vec![("direction", "response".into())], Box::new(|r| r.direction == pb::Direction::Response as i32)),
        (vec![("role", "provider".into())], Box::new(|r| r.role == pb::Role::Provider as i32)),
        (vec![("status", "ok".into())], Box::new(ok)),
        (vec![("status", "failed".into())], Box::new(move |r| has_outcome(r) && !ok(r))),
        (
            vec![("status", "denied".into())],
            Box::new(|r| fault_code(r) == "server.serverproxy.access_denied"),
        ),
        (
            vec![("status", "Server.ServerProxy.ServiceFailed".into())],
            Box::new(|r| fault_code(r) == "server.serverproxy.service_failed"),
        ),
        (vec![("status", "404".into())], Box::new(|r| r.status == 404)),
        (vec![("from", t(100))], Box::new(|r| r.logged_at_ms >= BASE_MS + 100 * MINUTE)),
        (vec![("until", t(100))], Box::new(|r| r.logged_at_ms < BASE_MS + 100 * MINUTE)),
        (
            vec![("from", t(50)), ("until", t(250))],
            Box::new(|r| (BASE_MS + 50 * MINUTE..BASE_MS + 250 * MINUTE).contains(&r.logged_at_ms)),
        ),
        // Combined.
        (
            vec![("client", CLIENTS[0].into()), ("from", t(50)), ("until", t(250))],
            Box::new(|r| {
                client_of(r) == CLIENTS[0]
                    && (BASE_MS + 50 * MINUTE..BASE_MS + 250 * MINUTE).contains(&r.logged_at_ms)
            }),
        ),
        (
            vec![("client", CLIENTS[1].into()), ("service", SERVICES[1].into()), ("status", "failed".into())],
            Box::new(move |r| {
                client_of(r) == CLIENTS[1] && service_of(r) == SERVICES[1] && has_outcome(r) && !ok(r)
            }),
        ),
        // Few key candidates and a wide time range: the range is checked on the records.
        (
            vec![("exchange", "ex-00042".into()), ("from", t(50))],
            Box::new(|r| r.message_id == "ex-00042" && r.logged_at_ms >= BASE_MS + 50 * MINUTE),
        ),
        (
            vec![("exchange", "ex-00042".into()), ("until", t(50))],
            Box::new(|r| r.message_id == "ex-00042" && r.logged_at_ms < BASE_MS + 50 * MINUTE),
        ),
        (
            vec![("exchange", "ex-00010".into()), ("direction", "request".into())],
            Box::new(|r| r.message_id == "ex-00010" && r.direction == pb::Direction::Request as i32),
        ),
        (
            vec![("exchange", "ex-00010".into()), ("client", CLIENTS[2].into())],
            Box::new(|r| r.message_id == "ex-00010" && client_of(r) == CLIENTS[2]),
        ),
        (
            vec![("service", SERVICES[0].into()), ("user", "user-1".into()), ("role", "consumer".into())],
            Box::new(|r| {
                service_of(r) == SERVICES[0] && r.user_id == "user-1" && r.role == pb::Role::Consumer as i32
            }),
        ),
        (
            vec![("status", "denied".into()), ("from", t(200))],
            Box::new(|r| {
                fault_code(r) == "server.serverproxy.access_denied"
                    && r.logged_at_ms >= BASE_MS + 200 * MINUTE
            }),
        ),
        (
            vec![("client", CLIENTS[0].into()), ("service", SERVICES[0].into()), ("from", t(399))],
            Box::new(|r| {
                client_of(r) == CLIENTS[0]
                    && service_of(r) == SERVICES[0]
                    && r.logged_at_ms >= BASE_MS + 399 * MINUTE
            }),
        ),
    ]
}

#[test]
fn each_filter_alone_and_combined_selects_exactly_the_matching_records() {
    for s in stores() {
        let records = fill(&*s.store, 400);
        for (pairs, keep) in cases() {
            let f = Filter::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
            let want = expect(&records, keep);
            for (limit, max_scan) in
                [(MAX_LIMIT, query::DEFAULT_MAX_SCAN), (7, query::DEFAULT_MAX_SCAN), (5, 3)]
            {
                let got = indexes(&all(&*s.store, &f, limit, max_scan));
                assert_eq!(
                    got, want,
                    "{} store, filter {pairs:?}, limit {limit}, max_scan {max_scan}",
                    s.name
                );
            }
        }
    }
}

#[test]
fn the_empty_filter_selects_everything_and_a_typed_filter_equals_the_parsed_one() {
    let store = MemStore::new();
    let records = fill(&store, 50);
    assert_eq!(indexes(&all(&store, &Filter::default(), 10, 1000)), expect(&records, |_| true));

    let typed = Filter {
        client: Some(CLIENTS[0].parse().unwrap()),
        status: Some(StatusFilter::Fault(Fault::AccessDenied)),
        ..Filter::default()
    };
    let parsed = filter(&[("client", CLIENTS[0]), ("status", "server.serverproxy.access_denied")]);
    assert_eq!(typed, parsed);
    // A cursor made with one is accepted by the other: same filter, same digest.
    let page = query::query(&store, &typed, None, 1, None).unwrap();
    query::query(&store, &parsed, page.next.as_ref(), 1, None).unwrap();
}

#[test]
fn the_plan_uses_the_narrowest_index() {
    let store = MemStore::new();
    fill(&store, 400);
    let plan = |pairs: &[(&str, &str)]| query::query(&store, &filter(pairs), None, 10, None).unwrap().plan;
    assert_eq!(plan(&[("client", CLIENTS[0])]), Plan::Keys);
    assert_eq!(plan(&[("exchange", "ex-00001"), ("client", CLIENTS[1])]), Plan::Keys);
    let t = time_text(BASE_MS + 390 * MINUTE);
    assert_eq!(plan(&[("client", CLIENTS[0]), ("from", &t)]), Plan::KeysAndTime);
    assert_eq!(plan(&[("from", &t)]), Plan::Time);
    let t = time_text(BASE_MS + 10 * MINUTE);
    assert_eq!(plan(&[("exchange", "ex-00100"), ("from", &t)]), Plan::Keys);
    assert_eq!(plan(&[("status", "ok")]), Plan::Scan);
}

// ----- paging --------------------------------------------------------------------------------

#[test]
fn paging_over_many_records_returns_each_exactly_once_in_leaf_order() {
    for s in stores() {
        let records = fill(&*s.store, 2500);
        for (pairs, limit) in
            [(vec![], 1000), (vec![], 33), (vec![("client", CLIENTS[0])], 1), (vec![("status", "ok")], 17)]
        {
            let f = filter(&pairs);
            let got = indexes(&all(&*s.store, &f, limit, query::DEFAULT_MAX_SCAN));
            let want = expect(&records, |r| matches(&pairs, r));
            assert_eq!(got, want, "{} store, {pairs:?}, limit {limit}", s.name);
        }
    }

    fn matches(pairs: &[(&str, &str)], r: &pb::LogRecord) -> bool {
        pairs.iter().all(|(k, v)| match *k {
            "client" => client_of(r) == *v,
            "status" => (200..300).contains(&r.status) && r.fault.is_none(),
            _ => unreachable!(),
        })
    }
}

#[test]
fn a_short_page_still_has_a_cursor_and_the_last_page_has_none() {
    let store = MemStore::new();
    fill(&store, 300);
    // Denials are one response in twelve records: a scan budget of 10 fills no page.
    let f = filter(&[("status", "denied")]);
    let options = QueryOptions { max_scan: 10, ..QueryOptions::default() };
    let first = query_with(&store, &f, None, 5, &options).unwrap();
    assert!(first.records.len() < 5);
    assert_eq!(first.scanned, 10);
    assert_eq!(first.next.unwrap().last_leaf(), 9);

    // A page that ends exactly at the last match has no cursor: no empty page to fetch.
    let f = filter(&[("exchange", "ex-00007")]);
    let page = query::query(&store, &f, None, 2, None).unwrap();
    assert_eq!(indexes(&page.records), [14, 15]);
    assert!(page.next.is_none());
    let page = query::query(&store, &f, None, 1, None).unwrap();
    assert_eq!(indexes(&page.records), [14]);
    let page = query::query(&store, &f, page.next.as_ref(), 1, None).unwrap();
    assert_eq!(indexes(&page.records), [15]);
    assert!(page.next.is_none());
}

#[test]
fn records_appended_between_pages_appear_once_at_the_end() {
    let store = MemStore::new();
    let mut records = fill(&store, 100);
    let f = filter(&[("client", CLIENTS[0])]);
    let first = query::query(&store, &f, None, 10, None).unwrap();
    let more: Vec<_> = (100..140).map(|i| record(i, BASE_MS + i as i64 * MINUTE)).collect();
    append(&store, &more);
    records.extend(more);
    let mut got = indexes(&first.records);
    let mut cursor = first.next;
    while let Some(c) = cursor {
        let page = query::query(&store, &f, Some(&c), 10, None).unwrap();
        got.extend(indexes(&page.records));
        cursor = page.next;
    }
    assert_eq!(got, expect(&records, |r| client_of(r) == CLIENTS[0]));
}

#[test]
fn a_clock_that_steps_back_does_not_lose_or_reorder_records() {
    for s in stores() {
        // Times go up, then jump an hour back at record 60 (an NTP step), with races in between.
        let records: Vec<_> = (0..200u64)
            .map(|i| {
                let mut at = BASE_MS + i as i64 * MINUTE;
                if i >= 60 {
                    at -= 90 * MINUTE;
                }
                if i.is_multiple_of(7) {
                    at += 3 * MINUTE;
                }
                record(i, at)
            })
            .collect();
        append(&*s.store, &records);
        let (from, until) = (BASE_MS + 20 * MINUTE, BASE_MS + 80 * MINUTE);
        let f = Filter { from_ms: Some(from), until_ms: Some(until), ..Filter::default() };
        let want = expect(&records, |r| (from..until).contains(&r.logged_at_ms));
        assert_eq!(indexes(&all(&*s.store, &f, 9, 1000)), want, "{} store", s.name);
        let f = Filter { client: Some(CLIENTS[1].parse().unwrap()), ..f };
        let want =
            expect(&records, |r| (from..until).contains(&r.logged_at_ms) && client_of(r) == CLIENTS[1]);
        assert_eq!(indexes(&all(&*s.store, &f, 4, 1000)), want, "{} store", s.name);
    }
}

// ----- cursors and malformed input -----------------------------------------------------------

#[test]
fn a_cursor_is_refused_with_another_filter_and_garbage_is_not_a_cursor() {
    let store = MemStore::new();
    fill(&store, 100);
    let a = filter(&[("client", CLIENTS[0])]);
    let b = filter(&[("client", CLIENTS[1])]);
    let page = query::query(&store, &a, None, 5, None).unwrap();
    let cursor = page.next.unwrap();
    let err = query::query(&store, &b, Some(&cursor), 5, None).unwrap_err();
    assert_eq!(err.code(), "cursor_mismatch");
    assert!(err.to_string().starts_with("cursor_mismatch: "), "{err}");
    // Same filter plus a time bound is another filter too.
    let c = filter(&[("client", CLIENTS[0]), ("from", "2026-11-01")]);
    assert_eq!(query::query(&store, &c, Some(&cursor), 5, None).unwrap_err().code(), "cursor_mismatch");

    // The cursor round-trips through its text form.
    let text = cursor.to_string();
    assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{text}");
    assert_eq!(text.parse::<Cursor>().unwrap(), cursor);
    for bad in ["", "not a cursor!", "AAAA", &"A".repeat(200), &text[..text.len() - 2]] {
        let err = bad.parse::<Cursor>().unwrap_err();
        assert_eq!(err.code(), "invalid_cursor", "{bad:?}");
        assert!(err.to_string().starts_with("invalid_cursor: "));
    }
}

#[test]
fn malformed_filters_give_the_documented_code_field_and_message() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (filter, value, field, part of the message)
        ("from", "yesterday", "from", "expected RFC 3339 such as 2026-11-01T00:00:00Z"),
        ("from", "2026-13-01T00:00:00Z", "from", "is not a time"),
        ("until", "2026-11-01T00:00:00", "until", "add Z for UTC"),
        ("from", "2026-02-30", "from", "is not a time"),
        ("client", "VN/GOV", "client", "has 2 segments"),
        ("client", "VN/GOV/000 00/x", "client", "not allowed"),
        ("service", "VN/GOV/000.00.00.G22/csdl", "service", "INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE"),
        ("status", "maybe", "status", "unknown status \"maybe\": expected ok, failed, denied"),
        ("status", "99", "status", "outside 100-599"),
        ("status", "server.serverproxy.no_such_fault", "status", "unknown status"),
        ("exchange", "", "exchange", "is empty"),
        ("user", "alice\u{7}", "user", "control character"),
        ("direction", "sideways", "direction", "expected request or response"),
        ("role", "auditor", "role", "expected consumer or provider"),
        ("colour", "blue", "filter", "unknown filter \"colour\""),
    ];
    for (name, value, field, message) in cases {
        let err = Filter::from_pairs([(*name, *value)]).unwrap_err();
        assert_eq!(err.code(), "invalid_filter", "{name}={value:?}");
        assert_eq!(err.field(), Some(*field), "{name}={value:?}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("invalid_filter: {field}: ")), "{text}");
        assert!(text.contains(message), "{name}={value:?}: {text}");
    }
    let long = "x".repeat(5000);
    assert_eq!(Filter::from_pairs([("user", long.as_str())]).unwrap_err().field(), Some("user"));

    let err = Filter::from_pairs([("from", "2026-11-02"), ("until", "2026-11-01")]).unwrap_err();
    assert_eq!((err.code(), err.field()), ("invalid_filter", Some("until")));
    assert!(err.to_string().contains("must be later than from"), "{err}");
    let err = Filter::from_pairs([("client", CLIENTS[0]), ("client", CLIENTS[1])]).unwrap_err();
    assert_eq!(err.field(), Some("client"));
    assert!(err.to_string().contains("more than once"));

    // A hand-built filter is checked by the query too, and so is the page size.
    let store = MemStore::new();
    fill(&store, 10);
    let reversed = Filter { from_ms: Some(10), until_ms: Some(10), ..Filter::default() };
    assert_eq!(query::query(&store, &reversed, None, 10, None).unwrap_err().field(), Some("until"));
    for limit in [0, MAX_LIMIT + 1] {
        let err = query::query(&store, &Filter::default(), None, limit, None).unwrap_err();
        assert_eq!((err.code(), err.field()), ("invalid_filter", Some("limit")));
    }
}

#[test]
fn times_parse_as_rfc_3339_or_a_date_in_utc() {
    let ms = |s: &str| query::parse_time("from", s).unwrap();
    assert_eq!(ms("2026-11-25T10:15:30.123Z"), BASE_MS);
    assert_eq!(ms("2026-11-25T17:15:30.123+07:00"), BASE_MS);
    assert_eq!(ms("2026-11-01"), 1_793_491_200_000);
    assert_eq!(ms("2026-11-01T00:00:00Z"), 1_793_491_200_000);
}

// ----- proofs --------------------------------------------------------------------------------

#[test]
fn proofs_verify_against_the_witnessed_checkpoint_and_later_records_are_flagged() {
    for s in stores() {
        let store = &*s.store;
        fill(store, 100);
        // Nothing witnessed yet: no proofs, every record flagged.
        let page = query::query(store, &Filter::default(), None, 100, None).unwrap();
        assert!(page.checkpoint.is_none());
        assert!(page.records.iter().all(|r| !r.witnessed() && r.proof.is_none()));

        let old = put_checkpoint(store, 40, true);
        let latest = put_checkpoint(store, 70, true);
        put_checkpoint(store, 90, false); // signed by the node only: not used for proofs
        let page = query::query(store, &Filter::default(), None, 100, None).unwrap();
        let cp = page.checkpoint.as_ref().unwrap();
        assert_eq!((cp.size, cp.root, cp.origin.as_str()), (latest.size, latest.root, NODE));
        assert!(checkpoint::is_witnessed(&cp.signed));
        for r in &page.records {
            // The leaf hash from the stored bytes, not from the query's answer.
            let leaf = merkle::leaf_hash(&store.record(r.leaf_index).unwrap().unwrap());
            assert_eq!(r.leaf_hash, leaf);
            if r.leaf_index < 70 {
                let proof = r.proof.as_ref().expect("covered by the checkpoint");
                assert!(r.witnessed());
                assert_eq!((proof.tree_size, proof.root), (70, latest.root));
                merkle::verify_inclusion(&leaf, r.leaf_index, latest.size, &proof.hashes, &latest.root)
                    .unwrap();
                // And not against another root.
                assert!(
                    merkle::verify_inclusion(
                        &leaf,
                        r.leaf_index,
                        old.size.max(r.leaf_index + 1),
                        &proof.hashes,
                        &old.root
                    )
                    .is_err()
                );
            } else {
                assert!(!r.witnessed() && r.proof.is_none(), "record {} is not yet witnessed", r.leaf_index);
            }
        }

        // Against an older checkpoint the auditor already holds.
        let page = query::query(store, &filter(&[("client", CLIENTS[0])]), None, 100, Some(40)).unwrap();
        assert_eq!(page.checkpoint.as_ref().unwrap().size, 40);
        for r in &page.records {
            match &r.proof {
                Some(p) => {
                    merkle::verify_inclusion(&r.leaf_hash, r.leaf_index, 40, &p.hashes, &old.root).unwrap()
                }
                None => assert!(r.leaf_index >= 40),
            }
        }
        let err = query::query(store, &Filter::default(), None, 10, Some(90)).unwrap_err();
        assert_eq!(err.code(), "no_checkpoint", "an unwitnessed checkpoint is not offered");
        let options = QueryOptions { proofs: ProofAt::None, ..QueryOptions::default() };
        let page = query_with(store, &Filter::default(), None, 10, &options).unwrap();
        assert!(page.checkpoint.is_none() && page.records.iter().all(|r| r.proof.is_none()));
    }
}

#[test]
fn a_record_that_does_not_match_the_witnessed_tree_is_reported_as_damage() {
    let store = MemStore::new();
    fill(&store, 20);
    // A co-signed checkpoint whose root is not this log's: the store was rewritten after.
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let cp = Checkpoint { origin: NODE.into(), size: 20, root: [7; 32], timestamp_ms: BASE_MS };
    let mut signed = checkpoint::sign_checkpoint(&cp, &key, Fingerprint([1; 32]), BASE_MS).unwrap();
    checkpoint::add_witness_signature(&mut signed, &key, Fingerprint([2; 32]), "VN", BASE_MS).unwrap();
    store.put_checkpoint(20, &signed).unwrap();
    let err = query::query(&store, &Filter::default(), None, 10, None).unwrap_err();
    assert_eq!(err.code(), "log_damaged");
    assert!(err.to_string().contains("lienthong log verify"), "{err}");

    // A witnessed checkpoint beyond the log's end.
    let store = MemStore::new();
    fill(&store, 20);
    let mut bigger = signed.clone();
    let c = Checkpoint { size: 50, ..cp };
    bigger.checkpoint = prost::Message::encode_to_vec(&pb::Checkpoint {
        origin: c.origin,
        tree_size: 50,
        root_hash: c.root.to_vec(),
        timestamp_ms: c.timestamp_ms,
    });
    store.put_checkpoint(50, &bigger).unwrap();
    assert_eq!(query::query(&store, &Filter::default(), None, 10, None).unwrap_err().code(), "log_damaged");
}

#[test]
fn pruned_records_are_skipped_and_counted() {
    let store = MemStore::new();
    let records = fill(&store, 60);
    store.prune(20).unwrap();
    let f = filter(&[("client", CLIENTS[0])]);
    let page = query::query(&store, &f, None, 100, None).unwrap();
    let want: Vec<u64> =
        expect(&records, |r| client_of(r) == CLIENTS[0]).into_iter().filter(|i| *i >= 20).collect();
    assert_eq!(indexes(&page.records), want);
    assert_eq!(
        page.pruned,
        expect(&records, |r| client_of(r) == CLIENTS[0]).iter().filter(|i| **i < 20).count() as u64
    );
}

// ----- exports -------------------------------------------------------------------------------

fn export(records: &[query::QueryRecord], format: Format) -> String {
    let mut w = RecordWriter::new(Vec::new(), format).unwrap();
    for r in records {
        w.write(r).unwrap();
    }
    String::from_utf8(w.finish().unwrap()).unwrap()
}

/// A strict RFC 4180 reader: CRLF records, quoted fields with doubled quotes; anything else
/// (a bare quote in an unquoted field, a lone CR or LF outside quotes) is an error.
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ',' | '\r' => break,
                    '"' | '\n' => return Err(format!("bare {c:?} in an unquoted field")),
                    _ => {
                        field.push(c);
                        chars.next();
                    }
                }
            }
        }
        row.push(field);
        match chars.next() {
            Some(',') => {}
            Some('\r') => {
                if chars.next() != Some('\n') {
                    return Err("CR without LF".into());
                }
                rows.push(std::mem::take(&mut row));
                if chars.peek().is_none() {
                    return Ok(rows);
                }
            }
            None => return Err("the last record has no CRLF".into()),
            Some(c) => return Err(format!("{c:?} after a quoted field")),
        }
    }
}

fn is_iso_utc_ms(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn exported_sample() -> (MemStore, Vec<query::QueryRecord>) {
    let store = MemStore::new();
    fill(&store, 12);
    put_checkpoint(&store, 8, true);
    let records = query::query(&store, &Filter::default(), None, 100, None).unwrap().records;
    (store, records)
}

#[test]
fn csv_is_rfc_4180_and_round_trips_a_path_with_comma_quote_and_newline() {
    let (_store, records) = exported_sample();
    let text = export(&records, Format::Csv);
    assert!(text.ends_with("\r\n"));
    let rows = parse_csv(&text).unwrap();
    assert_eq!(rows[0], COLUMNS);
    assert_eq!(rows.len(), records.len() + 1);
    let col = |name: &str| COLUMNS.iter().position(|c| *c == name).unwrap();
    for (row, r) in rows[1..].iter().zip(&records) {
        assert_eq!(row.len(), COLUMNS.len());
        assert_eq!(row[col("leaf_index")], r.leaf_index.to_string());
        assert_eq!(row[col("path")], r.record.path, "the path round-trips exactly");
        assert_eq!(row[col("message_id")], r.record.message_id);
        assert_eq!(row[col("client")], client_of(&r.record));
        assert_eq!(row[col("logged_at")], format_time(r.record.logged_at_ms));
        assert!(is_iso_utc_ms(&row[col("logged_at")]), "{}", row[col("logged_at")]);
        assert!(is_iso_utc_ms(&row[col("message_time")]));
        assert_eq!(row[col("witnessed")], (r.leaf_index < 8).to_string());
        assert_eq!(row[col("body_sha256")], hex::encode(&r.record.body_sha256));
        assert_eq!(row[col("body_length")], r.record.body_length.to_string());
        let status = row[col("status")].as_str();
        assert_eq!(status, if r.record.status == 0 { String::new() } else { r.record.status.to_string() });
    }
    let nasty = rows.iter().find(|row| row[col("path")] == NASTY_PATH).expect("the nasty path is exported");
    assert_eq!(nasty[col("direction")], "request");
    // The raw text shows the quoting: doubled quotes inside a quoted field.
    assert!(text.contains("\"/persons/search?name=Nguy\u{1ec5}n, \"\"V\u{0103}n\"\" A\r\nnext line\""));
    assert!(!text.contains("SECRET-BODY"));
    // A header alone for no records.
    assert_eq!(export(&[], Format::Csv), format!("{}\r\n", COLUMNS.join(",")));
}

#[test]
fn ndjson_lines_and_the_json_array_parse_and_carry_proofs_but_no_body() {
    let (store, records) = exported_sample();
    let text = export(&records, Format::Ndjson);
    let lines: Vec<&str> = text.lines().collect();
    assert!(text.ends_with('\n'));
    assert_eq!(lines.len(), records.len());
    let cp = Checkpoint::decode(&store.checkpoints().unwrap()[0]).unwrap();
    for (line, r) in lines.iter().zip(&records) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let obj = v.as_object().unwrap();
        for c in COLUMNS {
            assert!(obj.contains_key(*c), "{c} missing in {line}");
        }
        assert_eq!(v["leaf_index"], r.leaf_index);
        assert_eq!(v["path"], r.record.path.as_str());
        assert!(is_iso_utc_ms(v["logged_at"].as_str().unwrap()));
        assert_eq!(v["witnessed"], r.leaf_index < 8);
        if r.leaf_index < 8 {
            let p = &v["proof"];
            assert_eq!(p["checkpoint_size"], 8);
            assert_eq!(p["checkpoint_root"], hex::encode(cp.root));
            let hashes: Vec<[u8; 32]> = p["hashes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| hex::decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
                .collect();
            let leaf: [u8; 32] = hex::decode(v["leaf_hash"].as_str().unwrap()).unwrap().try_into().unwrap();
            merkle::verify_inclusion(&leaf, r.leaf_index, 8, &hashes, &cp.root).unwrap();
        } else {
            assert!(v["proof"].is_null());
        }
        if r.record.direction == pb::Direction::Request as i32 {
            assert!(v["status"].is_null());
        }
    }
    assert!(!text.contains("SECRET-BODY") && !text.contains("plain_body"));
    assert!(records.iter().all(|r| r.record.body.is_none()), "decoded records carry no body");

    let json = export(&records, Format::Json);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let array = v.as_array().unwrap();
    assert_eq!(array.len(), records.len());
    assert_eq!(array[3]["leaf_index"], 3);
    assert!(!json.contains("SECRET-BODY"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&export(&[], Format::Json)).unwrap(),
        serde_json::json!([])
    );
    assert_eq!(export(&[], Format::Ndjson), "");
}

#[test]
fn times_are_utc_iso_8601_with_milliseconds() {
    assert_eq!(format_time(BASE_MS), "2026-11-25T10:15:30.123Z");
    assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(format_time(1_793_491_200_000), "2026-11-01T00:00:00.000Z");
    assert_eq!(format_time(-1), "1969-12-31T23:59:59.999Z");
    // Nothing that ISO-8601 would have to write with more than four year digits.
    assert_eq!(format_time(i64::MAX), i64::MAX.to_string());
}

#[test]
fn streaming_writes_every_page_against_one_checkpoint() {
    let store = MemStore::new();
    let records = fill(&store, 250);
    put_checkpoint(&store, 100, true);
    let f = filter(&[("client", CLIENTS[2])]);
    let (summary, out) =
        query::stream(&store, &f, None, 7, &QueryOptions::default(), Vec::new(), Format::Ndjson).unwrap();
    let text = String::from_utf8(out).unwrap();
    let want = expect(&records, |r| client_of(r) == CLIENTS[2]);
    assert_eq!(summary.records, want.len() as u64);
    assert_eq!(summary.unwitnessed, want.iter().filter(|i| **i >= 100).count() as u64);
    assert!(summary.pages > 1);
    let got: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["leaf_index"].as_u64().unwrap())
        .collect();
    assert_eq!(got, want);

    // A first page that fails writes nothing: no lone "[" before the error.
    let other = filter(&[("client", CLIENTS[1])]);
    let cursor = query::query(&store, &other, None, 1, None).unwrap().next.unwrap();
    let mut out = Vec::new();
    let err = query::stream(&store, &f, Some(&cursor), 7, &QueryOptions::default(), &mut out, Format::Json);
    assert_eq!(err.unwrap_err().to_string(), QueryError::CursorMismatch.to_string());
    assert!(out.is_empty());
}

#[test]
fn formats_parse_by_name() {
    assert_eq!("csv".parse::<Format>().unwrap(), Format::Csv);
    assert_eq!("NDJSON".parse::<Format>().unwrap(), Format::Ndjson);
    assert_eq!("json".parse::<Format>().unwrap(), Format::Json);
    assert!("xml".parse::<Format>().unwrap_err().contains("expected json, ndjson or csv"));
    let _: fn(&QueryError) -> &str = QueryError::code;
}

#[test]
fn a_refusal_summary_is_exported_with_its_counts_and_matches_no_outcome_filter() {
    let store = MemStore::new();
    let summary = pb::LogRecord {
        message_id: "refusals-1".into(),
        direction: pb::Direction::Request as i32,
        role: pb::Role::Provider as i32,
        node: Some((&NODE.parse::<NodeId>().unwrap()).into()),
        message_time_ms: BASE_MS,
        logged_at_ms: BASE_MS + MINUTE,
        refusal_summary: Some(pb::RefusalSummary {
            kind: pb::RefusalKind::Audit as i32,
            source: "203.0.113.7".into(),
            other_sources: false,
            interval_start_ms: BASE_MS,
            interval_end_ms: BASE_MS + MINUTE,
            first_seen_ms: BASE_MS + 1,
            last_seen_ms: BASE_MS + 59_999,
            recorded: 10,
            suppressed: vec![pb::FaultCount { code: "audit.unauthorized".into(), count: 490 }],
        }),
        ..Default::default()
    };
    let refusal = pb::LogRecord {
        message_id: "audit-2".into(),
        status: 403,
        logged_at_ms: BASE_MS + 2,
        source_address: "203.0.113.7".into(),
        ..Default::default()
    };
    append(&store, &[summary, refusal]);
    let records = query::query(&store, &Filter::default(), None, 10, None).unwrap().records;

    let text = export(&records, Format::Ndjson);
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let s = &v["refusal_summary"];
    assert_eq!(s["kind"], "audit");
    assert_eq!(s["source"], "203.0.113.7");
    assert_eq!(s["interval_start"], format_time(BASE_MS));
    assert_eq!(s["last_seen"], format_time(BASE_MS + 59_999));
    assert_eq!((s["recorded"].as_u64(), s["suppressed_total"].as_u64()), (Some(10), Some(490)));
    assert_eq!(s["suppressed"]["audit.unauthorized"], 490);
    let second: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert!(second["refusal_summary"].is_null());
    assert_eq!(second["source_address"], "203.0.113.7");

    let rows = parse_csv(&export(&records, Format::Csv)).unwrap();
    let col = |name: &str| COLUMNS.iter().position(|c| *c == name).unwrap();
    let in_csv: serde_json::Value = serde_json::from_str(&rows[1][col("refusal_summary")]).unwrap();
    assert_eq!(&in_csv, s, "CSV carries the same object as JSON text");
    assert_eq!(rows[2][col("source_address")], "203.0.113.7");
    assert_eq!(rows[2][col("refusal_summary")], "");

    // A summary carries no outcome of its own: status filters never select it.
    for status in ["ok", "failed", "403"] {
        let found = query::query(&store, &filter(&[("status", status)]), None, 10, None).unwrap().records;
        assert!(found.iter().all(|r| r.record.refusal_summary.is_none()), "status={status}");
    }
}
