//! The sharing report over synthetic records of both nodes, against a configuration built by
//! hand:
//!
//! - `VN/GOV/A/cons` consumes; `VN/GOV/B/prov` provides `pets`, `open`, `secret`, `spare`;
//!   `VN/GOV/C/app` is in the global group `VN/everyone`;
//! - grants: `g-pets` (A/cons, `GET /pets/*`), `g-open` (the group, all of `open`), `g-unused`
//!   (A/cons, `spare`, never called), `g-edge` (starts in the last millisecond of the period),
//!   `g-expired` (ends at the period's start) and `g-future` (starts at its end).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lienthong_audit::sharing::{
    ExchangeRef, MAX_EXCHANGE_IDS, PairRow, SharingReport, UngrantedReason, sharing_report,
};
use lienthong_globalconf::{
    AccessGrant, Endpoint, GlobalConf, GlobalGroup, GrantSubject, Member, MemberStatus, from_millis,
};
use lienthong_proto::msglog::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{ClientId, InstanceId, MemberClass, MemberId, ServiceId};

const P0: i64 = 1_800_000_000_000;
const P1: i64 = P0 + 3_600_000;

const CONS: &str = "VN/GOV/A/cons";
const APP: &str = "VN/GOV/C/app";
const PETS: &str = "VN/GOV/B/prov/pets";
const OPEN: &str = "VN/GOV/B/prov/open";
const SECRET: &str = "VN/GOV/B/prov/secret";
const SPARE: &str = "VN/GOV/B/prov/spare";
const LIST: &str = "VN/GOV/B/prov/listMethods";
const DENIED: &str = "server.serverproxy.access_denied";

fn grant(
    id: &str,
    service: &str,
    subject: GrantSubject,
    endpoints: Vec<Endpoint>,
    valid: (i64, i64),
) -> AccessGrant {
    AccessGrant {
        id: id.into(),
        service: service.parse().unwrap(),
        endpoints,
        subject,
        legal_basis: format!("agreement {id}"),
        valid_from: from_millis(valid.0),
        valid_until: (valid.1 != 0).then(|| from_millis(valid.1)),
        granted_by: "VN/GOV/B".parse().unwrap(),
        granted_at: from_millis(valid.0),
    }
}

fn member(id: &str, name: &str, subsystem: &str) -> (MemberId, Member) {
    let id: MemberId = id.parse().unwrap();
    let member = Member {
        id: id.clone(),
        name: name.into(),
        status: MemberStatus::Active,
        status_since: from_millis(0),
        superseded_by: None,
        parent: None,
        subsystems: BTreeMap::from([(subsystem.parse().unwrap(), String::new())]),
        signing_certs: BTreeSet::new(),
    };
    (id, member)
}

fn conf() -> GlobalConf {
    let client = |s: &str| GrantSubject::Client(s.parse().unwrap());
    let group = "VN/everyone".parse().unwrap();
    let pets = vec![Endpoint { method: "GET".into(), path: "/pets/*".into() }];
    GlobalConf {
        version: 1,
        generated_at: from_millis(P0),
        expires_at: from_millis(P1) + Duration::from_secs(86_400),
        member_classes: BTreeSet::from([MemberClass::new("GOV").unwrap()]),
        members: BTreeMap::from([
            member("VN/GOV/A", "Agency A", "cons"),
            member("VN/GOV/B", "Agency B", "prov"),
            member("VN/GOV/C", "Agency C", "app"),
        ]),
        // The report reads grants and groups only; services need not be listed.
        grants: vec![
            grant("g-pets", PETS, client(CONS), pets, (P0 - 86_400_000, 0)),
            grant("g-open", OPEN, GrantSubject::Group(group), Vec::new(), (P0 - 86_400_000, 0)),
            grant("g-unused", SPARE, client(CONS), Vec::new(), (P0 - 86_400_000, P1 + 1)),
            grant("g-edge", SPARE, client(APP), Vec::new(), (P1 - 1, 0)),
            grant("g-expired", SPARE, client(APP), Vec::new(), (P0 - 86_400_000, P0)),
            grant("g-future", SPARE, client(CONS), Vec::new(), (P1, 0)),
        ],
        global_groups: BTreeMap::from([(
            "VN/everyone".parse().unwrap(),
            GlobalGroup {
                id: "VN/everyone".parse().unwrap(),
                description: String::new(),
                members: BTreeSet::from([APP.parse::<ClientId>().unwrap()]),
            },
        )]),
        ..GlobalConf::empty(InstanceId::new("VN").unwrap())
    }
}

/// Records of one exchange, built side by side the way the nodes write them.
struct Call {
    id: String,
    client: String,
    service: String,
    method: String,
    path: String,
    /// The request's message time.
    t: i64,
    records: Vec<pb::LogRecord>,
}

impl Call {
    fn new(id: &str, client: &str, service: &str, path: &str, t: i64) -> Self {
        Call {
            id: id.into(),
            client: client.into(),
            service: service.into(),
            method: "GET".into(),
            path: path.into(),
            t,
            records: Vec::new(),
        }
    }

    fn record(&self, role: pb::Role, direction: pb::Direction, logged_after: i64) -> pb::LogRecord {
        pb::LogRecord {
            message_id: self.id.clone(),
            request_id: format!("req-{}", self.id),
            direction: direction as i32,
            role: role as i32,
            client: Some((&self.client.parse::<ClientId>().unwrap()).into()),
            service: Some((&self.service.parse::<ServiceId>().unwrap()).into()),
            method: self.method.clone(),
            path: self.path.clone(),
            message_time_ms: self.t,
            logged_at_ms: self.t + logged_after,
            ..Default::default()
        }
    }

    /// The signed request, logged `after` ms after its creation.
    fn request(mut self, role: pb::Role, after: i64, grant: &str) -> Self {
        let mut r = self.record(role, pb::Direction::Request, after);
        r.grant_id = grant.into();
        self.records.push(r);
        self
    }

    /// The response with `status`, logged `after` ms after the request's creation.
    fn response(mut self, role: pb::Role, after: i64, status: u32) -> Self {
        let mut r = self.record(role, pb::Direction::Response, after);
        r.status = status;
        // A response envelope has its own, later creation time.
        r.message_time_ms = self.t + after - 1;
        self.records.push(r);
        self
    }

    /// A refusal with `code`; `direction` Request when the node had not logged the request.
    fn refusal(
        mut self,
        role: pb::Role,
        direction: pb::Direction,
        after: i64,
        code: &str,
        message: &str,
    ) -> Self {
        let mut r = self.record(role, direction, after);
        r.status = 500;
        r.fault = Some(types_pb::Fault { code: code.into(), message: message.into(), detail: "d".into() });
        self.records.push(r);
        self
    }
}

use pb::Direction::{Request as REQ, Response as RESP};
use pb::Role::{Consumer as C, Provider as P};

/// A success logged by both nodes: consumer latency `latency`, provider grant `grant`.
fn both_ok(id: &str, t: i64, latency: i64, grant: &str) -> Call {
    Call::new(id, CONS, PETS, &format!("/pets/{id}?full=1"), t)
        .request(C, 1, "")
        .request(P, 10, grant)
        .response(P, latency - 10, 200)
        .response(C, latency, 200)
}

fn calls() -> Vec<Call> {
    vec![
        // A/cons -> pets: 7 calls in the period.
        both_ok("e1", P0, 100, "g-pets"),
        both_ok("e2", P0 + 1000, 300, "g-pets"),
        // Only the consumer node reported it.
        Call::new("e3", CONS, PETS, "/pets/3?q=1", P0 + 2000).request(C, 1, "").response(C, 200, 200),
        // Denied by the provider node, relayed and logged by the consumer node.
        Call::new("e4", CONS, PETS, "/pets/4", P0 + 3000)
            .request(C, 1, "")
            .refusal(P, REQ, 20, DENIED, "client VN/GOV/A/cons may not call GET /pets/4")
            .refusal(C, RESP, 50, DENIED, "relayed"),
        // The backend failed.
        Call::new("e5", CONS, PETS, "/pets/5", P0 + 4000)
            .request(C, 1, "")
            .request(P, 10, "g-pets")
            .response(P, 390, 503)
            .response(C, 400, 503),
        // The provider answered; the consumer node then failed: the provider's outcome counts.
        Call::new("e6", CONS, PETS, "/pets/6", P0 + 5000)
            .request(C, 1, "")
            .request(P, 10, "g-pets")
            .response(P, 500, 200)
            .refusal(C, RESP, 1000, "server.clientproxy.network_error", "reset"),
        // In flight: only the consumer's request.
        Call::new("e7", CONS, PETS, "/pets/7", P0 + 6000).request(C, 1, ""),
        // Outside the period: just before it, and at its (excluded) end.
        both_ok("early", P0 - 1, 100, "g-pets"),
        both_ok("late", P1, 100, "g-pets"),
        // C/app -> open through the group grant, provider node only.
        Call::new("o1", APP, OPEN, "/x", P0 + 100).request(P, 5, "g-open").response(P, 50, 200),
        // A/cons -> secret: admitted with no grant id.
        Call::new("s1", CONS, SECRET, "/x", P0 + 200).request(P, 5, "").response(P, 50, 200),
        // A/cons -> open: consumer node only, and no grant allows it.
        Call::new("s2", CONS, OPEN, "/y", P0 + 300).request(C, 1, "").response(C, 50, 200),
        // A metaservice needs no grant.
        Call::new("m1", CONS, LIST, "", P0 + 400).request(P, 5, "").response(P, 20, 200),
    ]
}

/// Records that are no exchange: an audit call, a refused peer connection and a refusal
/// summary (given a client, service and role here, which real ones do not have, so that only
/// its kind keeps it out of the report).
fn noise() -> Vec<pb::LogRecord> {
    let call = Call::new("refusals-1", CONS, PETS, "/pets/1", P0 + 30);
    vec![
        pb::LogRecord {
            refusal_summary: Some(pb::RefusalSummary {
                kind: pb::RefusalKind::Client as i32,
                source: "203.0.113.7".into(),
                interval_start_ms: P0,
                interval_end_ms: P0 + 60_000,
                suppressed: vec![pb::FaultCount { code: "client.bad_request".into(), count: 500 }],
                ..Default::default()
            }),
            status: 200,
            ..call.record(C, REQ, 0)
        },
        pb::LogRecord {
            message_id: "audit-1".into(),
            direction: REQ as i32,
            method: "GET".into(),
            path: "/audit/v1/records".into(),
            user_id: "auditor:abcd".into(),
            message_time_ms: P0 + 10,
            logged_at_ms: P0 + 10,
            status: 200,
            ..Default::default()
        },
        pb::LogRecord {
            direction: REQ as i32,
            role: P as i32,
            status: 500,
            logged_at_ms: P0 + 20,
            fault: Some(types_pb::Fault {
                code: "server.serverproxy.ssl_authentication_failed".into(),
                message: "refused".into(),
                detail: "d".into(),
            }),
            ..Default::default()
        },
    ]
}

fn report() -> SharingReport {
    let calls = calls();
    let noise = noise();
    // Records arrive from several nodes in no particular order.
    let mut records: Vec<&pb::LogRecord> = calls.iter().flat_map(|c| &c.records).chain(&noise).collect();
    records.reverse();
    sharing_report(records, &conf(), (P0, P1))
}

fn row<'a>(r: &'a SharingReport, client: &str, service: &str) -> &'a PairRow {
    r.pairs
        .iter()
        .find(|p| p.pair.consumer == client && p.pair.service == service)
        .unwrap_or_else(|| panic!("no row {client} -> {service}"))
}

fn ids(refs: &[ExchangeRef]) -> Vec<&str> {
    refs.iter().map(|e| e.message_id.as_str()).collect()
}

#[test]
fn counts_per_pair_match_the_exchanges_each_once() {
    let r = report();
    let pets = row(&r, CONS, PETS);
    assert_eq!(
        (pets.calls, pets.successes, pets.failures, pets.denials, pets.unfinished),
        (7, 4, 1, 1, 1),
        "e1 e2 e3 e6 succeed, e5 fails, e4 is denied, e7 is in flight; early and late are outside"
    );
    assert_eq!(pets.pair.consumer_member, "VN/GOV/A");
    assert_eq!(pets.pair.consumer_subsystem.as_deref(), Some("cons"));
    assert_eq!(pets.pair.consumer_name.as_deref(), Some("Agency A"));
    assert_eq!(
        (
            pets.pair.provider_member.as_str(),
            pets.pair.provider_subsystem.as_str(),
            pets.pair.service_code.as_str()
        ),
        ("VN/GOV/B", "prov", "pets")
    );
    assert_eq!(pets.grant_ids, ["g-pets"]);

    let open = row(&r, APP, OPEN);
    assert_eq!((open.calls, open.successes), (1, 1));
    assert_eq!(open.grant_ids, ["g-open"]);
    assert_eq!(row(&r, CONS, SECRET).calls, 1);
    assert_eq!(row(&r, CONS, OPEN).calls, 1);
    assert_eq!(row(&r, CONS, LIST).successes, 1);
    assert_eq!(r.pairs.len(), 5, "{:?}", r.pairs);
    assert_eq!(r.ignored_records, 3, "the audit call, the refused connection and the refusal summary");
}

#[test]
fn the_provider_outcome_wins_over_the_consumers() {
    // e6: the consumer node logged a network error after the provider answered 200.
    let r = report();
    let pets = row(&r, CONS, PETS);
    assert!(ids(&pets.exchange_ids).contains(&"e6"));
    assert_eq!(pets.failures, 1, "only e5");
}

#[test]
fn period_boundaries_first_and_last_seen() {
    let r = report();
    assert_eq!(r.from, "2027-01-15T08:00:00.000Z");
    assert_eq!(r.until, "2027-01-15T09:00:00.000Z");
    let pets = row(&r, CONS, PETS);
    assert_eq!(pets.first_seen, "2027-01-15T08:00:00.000Z", "from is included");
    assert_eq!(pets.last_seen, "2027-01-15T08:00:06.000Z");
    let all: Vec<&str> = r.pairs.iter().flat_map(|p| ids(&p.exchange_ids)).collect();
    assert!(!all.contains(&"early") && !all.contains(&"late"), "until is excluded: {all:?}");

    // A period that holds only the exchange at its start.
    let calls = calls();
    let records = calls.iter().flat_map(|c| &c.records);
    let r = sharing_report(records, &conf(), (P0, P0 + 1));
    assert_eq!(r.pairs.len(), 1);
    assert_eq!(ids(&r.pairs[0].exchange_ids), ["e1"]);
}

#[test]
fn median_latency_on_one_nodes_clock() {
    // Consumer round trips: e1 100, e2 300, e3 200, e4 50, e5 400, e6 1000; e7 has none.
    // Sorted 50 100 200 300 400 1000: the mean of 200 and 300.
    let r = report();
    assert_eq!(row(&r, CONS, PETS).median_latency_ms, Some(250));
    // Provider node only: its response logged time minus the request's message time.
    assert_eq!(row(&r, APP, OPEN).median_latency_ms, Some(50));

    let calls = [Call::new("x", CONS, PETS, "/pets/1", P0).request(C, 1, "")];
    let r = sharing_report(calls.iter().flat_map(|c| &c.records), &conf(), (P0, P1));
    assert_eq!(r.pairs[0].median_latency_ms, None);
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["pairs"][0].get("median_latency_ms").is_none(), "omitted when unknown: {json}");
}

#[test]
fn a_denial_is_counted_and_listed_with_its_reason() {
    let r = report();
    assert_eq!(r.denied.len(), 1, "{:?}", r.denied);
    let d = &r.denied[0];
    assert_eq!((d.pair.consumer.as_str(), d.pair.service.as_str(), d.count), (CONS, PETS, 1));
    assert_eq!(d.reasons.len(), 1);
    let reason = &d.reasons[0];
    assert_eq!(reason.code, DENIED);
    assert_eq!(reason.message, "client VN/GOV/A/cons may not call GET /pets/4", "the provider's words");
    assert_eq!((reason.count, ids(&reason.exchange_ids)), (1, vec!["e4"]));
}

#[test]
fn grants_used_and_never_used() {
    let r = report();
    let listed: Vec<&str> = r.grants.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(
        listed,
        ["g-pets", "g-open", "g-unused", "g-edge"],
        "expired and future grants are not listed"
    );
    let pets = &r.grants[0];
    // e1 e2 e5 e6 were admitted under it (whatever the outcome); e3 has no provider record.
    assert_eq!((pets.used, ids(&pets.exchange_ids)), (4, vec!["e1", "e2", "e5", "e6"]));
    assert_eq!(pets.subject, CONS);
    assert_eq!(r.grants[1].used, 1);
    assert_eq!(r.grants[1].subject, "VN/everyone");
    let unused: Vec<&str> = r.unused_grants().map(|g| g.id.as_str()).collect();
    assert_eq!(unused, ["g-unused", "g-edge"]);
    assert_eq!(r.grants[2].valid_until.as_deref(), Some("2027-01-15T09:00:00.001Z"));
    assert_eq!(r.grants[2].legal_basis, "agreement g-unused");
}

#[test]
fn successes_without_a_grant_are_listed() {
    let r = report();
    let listed: Vec<(&str, &str, UngrantedReason)> = r
        .without_grant
        .iter()
        .flat_map(|p| {
            p.calls.iter().map(move |c| (p.pair.service.as_str(), c.exchange.message_id.as_str(), c.reason))
        })
        .collect();
    assert_eq!(
        listed,
        [
            (OPEN, "s2", UngrantedReason::NotAllowedByConfiguration),
            (SECRET, "s1", UngrantedReason::NoGrantRecorded),
        ],
        "e3 (consumer only, query string aside) is allowed; metaservices need no grant"
    );
    let s2 = &r.without_grant.iter().find(|p| p.pair.service == OPEN).unwrap();
    assert_eq!((s2.count, s2.calls[0].method.as_str(), s2.calls[0].path.as_str()), (1, "GET", "/y"));
}

#[test]
fn exchange_ids_link_every_number_and_are_capped() {
    let r = report();
    assert_eq!(ids(&row(&r, CONS, PETS).exchange_ids), ["e1", "e2", "e3", "e4", "e5", "e6", "e7"]);
    assert_eq!(row(&r, CONS, PETS).exchange_ids[0].request_id, "req-e1");

    let many: Vec<Call> = (0..MAX_EXCHANGE_IDS as i64 + 10)
        .map(|i| both_ok(&format!("n{i:03}"), P0 + i, 100, "g-pets"))
        .collect();
    let r = sharing_report(many.iter().flat_map(|c| &c.records), &conf(), (P0, P1));
    let pets = row(&r, CONS, PETS);
    assert_eq!(pets.calls, MAX_EXCHANGE_IDS as u64 + 10);
    assert_eq!(pets.exchange_ids.len(), MAX_EXCHANGE_IDS);
    assert_eq!(pets.exchange_ids[0].message_id, "n000", "the earliest first");
    assert_eq!(r.grants[0].used, MAX_EXCHANGE_IDS as u64 + 10);
    assert_eq!(r.grants[0].exchange_ids.len(), MAX_EXCHANGE_IDS);
}

#[test]
fn the_report_is_plain_json() {
    let json = serde_json::to_value(report()).unwrap();
    let pair = json["pairs"].as_array().unwrap().iter().find(|p| p["service"] == PETS).unwrap();
    assert_eq!(pair["consumer"], CONS);
    assert_eq!(pair["calls"], 7);
    assert_eq!(pair["exchange_ids"][0]["message_id"], "e1");
    assert_eq!(json["without_grant"][0]["calls"][0]["reason"], "not_allowed_by_configuration");
    assert_eq!(json["grants"][1]["subject_kind"], "group");
    assert_eq!(json["denied"][0]["reasons"][0]["code"], DENIED);
    // Same records, any order: the same report.
    let (calls, noise) = (calls(), noise());
    let records = calls.iter().flat_map(|c| &c.records).chain(&noise);
    assert_eq!(serde_json::to_value(sharing_report(records, &conf(), (P0, P1))).unwrap(), json);
}

#[test]
fn nothing_in_the_period_lists_only_the_grants() {
    let r = sharing_report(std::iter::empty(), &conf(), (P0, P1));
    assert!(r.pairs.is_empty() && r.denied.is_empty() && r.without_grant.is_empty());
    assert_eq!(r.unused_grants().count(), 4);
}
