//! The sharing report: for a period, who called what (consumer client x provider service) with
//! the outcomes, held against the agreements of the global configuration: grants used and never
//! used, calls denied with the reason, and successful traffic that no grant covers.
//!
//! A pure function over metadata records collected from any number of nodes ([`sharing_report`]);
//! collecting them (and proving them) is the collector's work. Both nodes of an exchange log it,
//! so records are first joined per exchange, `(message_id, request_id)`, and each exchange counts
//! once.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use lienthong_exchange::meta::is_metaservice;
use lienthong_globalconf::{GlobalConf, GrantSubject, from_millis, to_millis};
use lienthong_proto::convert::IntoDomain;
use lienthong_proto::msglog::v1 as pb;
use lienthong_types::{ClientId, Fault, ServiceId};
use serde::Serialize;

use crate::query::format_time;

/// At most this many exchange ids are listed behind each number; the number itself is exact.
pub const MAX_EXCHANGE_IDS: usize = 50;

/// The whole report, ready for `serde_json`. Rows are in a stable order (by consumer, then
/// service; grants in configuration order), so two reports of the same data compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharingReport {
    /// The period, `[from, until)`, in UTC ISO-8601.
    pub from: String,
    pub until: String,
    pub pairs: Vec<PairRow>,
    /// Every grant valid at some time within the period; `used == 0` is "agreed but not shared".
    pub grants: Vec<GrantUse>,
    pub denied: Vec<DeniedPair>,
    /// Successful calls no grant covers: empty in a healthy system.
    pub without_grant: Vec<UngrantedPair>,
    /// Records that are not part of an exchange (audit calls, refused connections, refusal
    /// summaries, records without a client or service).
    pub ignored_records: u64,
}

impl SharingReport {
    /// The grants valid in the period that no call used.
    pub fn unused_grants(&self) -> impl Iterator<Item = &GrantUse> {
        self.grants.iter().filter(|g| g.used == 0)
    }
}

/// One exchange, as the audit query's `exchange` filter (message id) and the evidence bundle
/// find it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ExchangeRef {
    pub message_id: String,
    pub request_id: String,
}

/// Who called what, in X-Road string form and split into parts for filters and labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    pub consumer: String,
    pub consumer_member: String,
    /// Absent when the client is a member itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_subsystem: Option<String>,
    /// The member's name in the configuration, when it is listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_name: Option<String>,
    pub service: String,
    pub provider_member: String,
    pub provider_subsystem: String,
    pub service_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_name: Option<String>,
}

/// One cell of the matrix. `calls = successes + failures + denials + unfinished`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairRow {
    #[serde(flatten)]
    pub pair: Pair,
    pub calls: u64,
    /// A 2xx status and no fault.
    pub successes: u64,
    /// A fault other than a denial, or a status outside 2xx.
    pub failures: u64,
    /// Refused for lack of a grant (`server.serverproxy.access_denied`).
    pub denials: u64,
    /// A request logged but no outcome on either side (in flight, or the outcome's node has not
    /// reported yet).
    pub unfinished: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// Over the calls whose request and outcome were logged on one node; absent when none was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_latency_ms: Option<i64>,
    /// The grants the provider node admitted these calls under.
    pub grant_ids: Vec<String>,
    /// The earliest calls, at most [`MAX_EXCHANGE_IDS`]; `calls` is the full count.
    pub exchange_ids: Vec<ExchangeRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    Client,
    Group,
}

/// A grant of the configuration and the calls made under it in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantUse {
    pub id: String,
    pub service: String,
    /// The client or global group, in X-Road string form.
    pub subject: String,
    pub subject_kind: SubjectKind,
    pub legal_basis: String,
    pub valid_from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// Calls whose provider record names this grant, whatever their outcome.
    pub used: u64,
    pub exchange_ids: Vec<ExchangeRef>,
}

/// The denials of one pair, per reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeniedPair {
    #[serde(flatten)]
    pub pair: Pair,
    pub count: u64,
    pub reasons: Vec<DenialReason>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DenialReason {
    /// The fault code as logged.
    pub code: String,
    pub message: String,
    pub count: u64,
    pub exchange_ids: Vec<ExchangeRef>,
}

/// Why a successful call counts as traffic without a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UngrantedReason {
    /// The provider node logged the request with no grant id: it admitted the call without one.
    NoGrantRecorded,
    /// No grant of the configuration allows the client this method and path at that time.
    NotAllowedByConfiguration,
}

/// The successful calls of one pair that no grant covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UngrantedPair {
    #[serde(flatten)]
    pub pair: Pair,
    pub count: u64,
    /// The earliest, at most [`MAX_EXCHANGE_IDS`].
    pub calls: Vec<UngrantedCall>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UngrantedCall {
    pub exchange: ExchangeRef,
    pub time: String,
    pub method: String,
    pub path: String,
    /// The grant id the provider node logged, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    pub reason: UngrantedReason,
}

/// The records one node wrote about one exchange.
#[derive(Debug, Default)]
struct SideRecords<'a> {
    request: Option<&'a pb::LogRecord>,
    /// The record carrying the outcome: a response, or a refusal (which may be the only one).
    outcome: Option<&'a pb::LogRecord>,
}

impl SideRecords<'_> {
    /// Response logged time minus request message time, on one node's records.
    fn latency_ms(&self) -> Option<i64> {
        let (req, out) = (self.request?, self.outcome?);
        let ms = out.logged_at_ms.checked_sub(req.message_time_ms)?;
        (req.message_time_ms != 0 && ms >= 0).then_some(ms)
    }
}

#[derive(Debug)]
struct Exchange<'a> {
    client: ClientId,
    service: ServiceId,
    /// The ids were read from a provider record (preferred: that node checked them).
    ids_from_provider: bool,
    /// The earliest message time of its records (the request's creation, the same on both
    /// sides), or logged time when a record has none.
    time_ms: i64,
    consumer: SideRecords<'a>,
    provider: SideRecords<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    Denial,
    Unfinished,
}

fn fault_of(r: &pb::LogRecord) -> Option<&lienthong_proto::types::v1::Fault> {
    r.fault.as_ref().filter(|f| !f.code.is_empty())
}

fn has_outcome(r: &pb::LogRecord) -> bool {
    r.status != 0 || fault_of(r).is_some()
}

fn outcome(r: Option<&pb::LogRecord>) -> Outcome {
    let Some(r) = r else { return Outcome::Unfinished };
    match fault_of(r) {
        // Older CamelCase codes are denials too.
        Some(f) if Fault::from_code(&f.code) == Some(Fault::AccessDenied) => Outcome::Denial,
        Some(_) => Outcome::Failure,
        None if (200..300).contains(&r.status) => Outcome::Success,
        None => Outcome::Failure,
    }
}

/// The exchange's client and service, when the record names both validly.
fn ids(r: &pb::LogRecord) -> Option<(ClientId, ServiceId)> {
    let client = r.client.clone()?.into_domain("client").ok()?;
    let service = r.service.clone()?.into_domain("service").ok()?;
    Some((client, service))
}

fn record_time(r: &pb::LogRecord) -> i64 {
    if r.message_time_ms != 0 { r.message_time_ms } else { r.logged_at_ms }
}

/// The service-relative path a grant is matched against: records keep `path?query`.
fn grant_path(path: &str) -> &str {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path.is_empty() { "/" } else { path }
}

fn pair_of(conf: &GlobalConf, client: &ClientId, service: &ServiceId) -> Pair {
    let name = |m| conf.member(m).map(|m| m.name.clone()).filter(|n| !n.is_empty());
    Pair {
        consumer: client.to_string(),
        consumer_member: client.member().to_string(),
        consumer_subsystem: client.subsystem().map(|s| s.code.as_str().to_owned()),
        consumer_name: name(client.member()),
        service: service.to_string(),
        provider_member: service.subsystem.member.to_string(),
        provider_subsystem: service.subsystem.code.as_str().to_owned(),
        service_code: service.code.as_str().to_owned(),
        provider_name: name(&service.subsystem.member),
    }
}

/// An exchange in the period: (time, message id, request id), which sorts the earliest first.
type Key<'a> = (i64, &'a str, &'a str);

/// A successful call without a grant, until it is written out.
#[derive(Debug)]
struct Ungranted<'a> {
    key: Key<'a>,
    /// The record the method and path come from.
    record: &'a pb::LogRecord,
    grant_id: Option<&'a str>,
    reason: UngrantedReason,
}

/// The earliest `MAX_EXCHANGE_IDS` exchanges.
fn earliest(mut ids: Vec<Key<'_>>) -> Vec<ExchangeRef> {
    ids.sort_unstable();
    ids.into_iter()
        .take(MAX_EXCHANGE_IDS)
        .map(|(_, m, r)| ExchangeRef { message_id: m.to_owned(), request_id: r.to_owned() })
        .collect()
}

/// The median; for an even count the mean of the two middle values, rounded down.
fn median(mut v: Vec<i64>) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { v[mid - 1] + (v[mid] - v[mid - 1]) / 2 })
}

#[derive(Debug, Default)]
struct PairAcc<'a> {
    calls: u64,
    successes: u64,
    failures: u64,
    denials: u64,
    unfinished: u64,
    first_ms: i64,
    last_ms: i64,
    latencies: Vec<i64>,
    grant_ids: BTreeSet<&'a str>,
    exchanges: Vec<Key<'a>>,
    /// (code, message) -> exchanges.
    denied: BTreeMap<(&'a str, &'a str), Vec<Key<'a>>>,
    ungranted: Vec<Ungranted<'a>>,
}

/// The sharing report for `period` = `[from_ms, until_ms)` (Unix milliseconds) over `records`
/// collected from any number of nodes, against `conf`.
///
/// An exchange is in the period when its time (the request's message time) is. Its outcome is
/// the provider node's when that node's records are present (it decided), the consumer node's
/// otherwise. Latency is taken on the consumer node when it logged both the request and the
/// outcome (the whole round trip on one clock), else on the provider node. Grants are judged
/// with this one configuration: a grant since removed from it is not listed, and calls it
/// covered appear under `without_grant` as `not_allowed_by_configuration`.
pub fn sharing_report<'a>(
    records: impl IntoIterator<Item = &'a pb::LogRecord>,
    conf: &GlobalConf,
    period: (i64, i64),
) -> SharingReport {
    let (from_ms, until_ms) = period;
    let mut ignored_records = 0u64;
    let mut exchanges: HashMap<(&'a str, &'a str), Exchange<'a>> = HashMap::new();
    for r in records {
        let role = pb::Role::try_from(r.role).unwrap_or(pb::Role::Unspecified);
        let ids = ids(r);
        // Audit calls are logged by the node too but are no exchange, nor are refusal summaries
        // (counts of unauthenticated traffic); refused connections and calls refused before the
        // client and service were known cannot be put in a pair.
        let (Some((client, service)), false, false, false) = (
            ids,
            r.user_id.starts_with("auditor:"),
            role == pb::Role::Unspecified,
            r.refusal_summary.is_some(),
        ) else {
            ignored_records += 1;
            continue;
        };
        let is_provider = role == pb::Role::Provider;
        let e = exchanges.entry((r.message_id.as_str(), r.request_id.as_str())).or_insert_with(|| Exchange {
            client: client.clone(),
            service: service.clone(),
            ids_from_provider: is_provider,
            time_ms: record_time(r),
            consumer: SideRecords::default(),
            provider: SideRecords::default(),
        });
        if is_provider && !e.ids_from_provider {
            (e.client, e.service, e.ids_from_provider) = (client, service, true);
        }
        e.time_ms = e.time_ms.min(record_time(r));
        let side = if is_provider { &mut e.provider } else { &mut e.consumer };
        if has_outcome(r) {
            // Should a node log two outcomes, the later one is its last word.
            if side.outcome.is_none_or(|o| o.logged_at_ms <= r.logged_at_ms) {
                side.outcome = Some(r);
            }
        } else if r.direction == pb::Direction::Request as i32
            && side.request.is_none_or(|q| r.logged_at_ms < q.logged_at_ms)
        {
            side.request = Some(r);
        }
    }

    // Grants valid at some time in the period, by id (ids are unique in a configuration; the
    // first wins if not).
    let valid_grants: Vec<_> = conf
        .grants
        .iter()
        .filter(|g| {
            to_millis(g.valid_from) < until_ms && g.valid_until.is_none_or(|u| to_millis(u) > from_ms)
        })
        .collect();
    let mut grant_calls: HashMap<&str, Vec<Key<'a>>> =
        valid_grants.iter().map(|g| (g.id.as_str(), Vec::new())).collect();

    let mut pairs: BTreeMap<(ClientId, ServiceId), PairAcc<'a>> = BTreeMap::new();
    for ((message_id, request_id), e) in &exchanges {
        let t = e.time_ms;
        if t < from_ms || t >= until_ms {
            continue;
        }
        let id = (t, *message_id, *request_id);
        let decided = if e.provider.outcome.is_some() { e.provider.outcome } else { e.consumer.outcome };
        let out = outcome(decided);
        let latency = e.consumer.latency_ms().or_else(|| e.provider.latency_ms());
        let grant_id = e.provider.request.map(|r| r.grant_id.as_str()).filter(|g| !g.is_empty());

        let acc = pairs.entry((e.client.clone(), e.service.clone())).or_default();
        if acc.calls == 0 {
            (acc.first_ms, acc.last_ms) = (t, t);
        }
        acc.calls += 1;
        acc.first_ms = acc.first_ms.min(t);
        acc.last_ms = acc.last_ms.max(t);
        acc.exchanges.push(id);
        acc.latencies.extend(latency);
        if let Some(g) = grant_id {
            acc.grant_ids.insert(g);
            if let Some(calls) = grant_calls.get_mut(g) {
                calls.push(id);
            }
        }
        match out {
            Outcome::Success => {
                acc.successes += 1;
                // Grants are the provider instance's: a call to a federation partner's service
                // is judged by that instance's audit, not against this configuration.
                if is_metaservice(e.service.code.as_str())
                    || e.service.subsystem.member.instance != conf.instance
                {
                    continue;
                }
                // The request record has the method and path; any record of the exchange will
                // do when the request's was not collected.
                let Some(rec) = e.provider.request.or(e.consumer.request).or(decided) else { continue };
                let allowed = conf
                    .allowing_grant(&e.client, &e.service, &rec.method, grant_path(&rec.path), from_millis(t))
                    .is_some();
                let reason = if e.provider.request.is_some() && grant_id.is_none() {
                    Some(UngrantedReason::NoGrantRecorded)
                } else if !allowed {
                    Some(UngrantedReason::NotAllowedByConfiguration)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    acc.ungranted.push(Ungranted { key: id, record: rec, grant_id, reason });
                }
            }
            Outcome::Failure => acc.failures += 1,
            Outcome::Unfinished => acc.unfinished += 1,
            Outcome::Denial => {
                acc.denials += 1;
                let f =
                    decided.and_then(fault_of).map_or(("", ""), |f| (f.code.as_str(), f.message.as_str()));
                acc.denied.entry(f).or_default().push(id);
            }
        }
    }

    let mut report = SharingReport {
        from: format_time(from_ms),
        until: format_time(until_ms),
        pairs: Vec::with_capacity(pairs.len()),
        grants: Vec::with_capacity(valid_grants.len()),
        denied: Vec::new(),
        without_grant: Vec::new(),
        ignored_records,
    };
    for ((client, service), mut acc) in pairs {
        let pair = pair_of(conf, &client, &service);
        if !acc.denied.is_empty() {
            report.denied.push(DeniedPair {
                pair: pair.clone(),
                count: acc.denials,
                reasons: std::mem::take(&mut acc.denied)
                    .into_iter()
                    .map(|((code, message), ids)| DenialReason {
                        code: code.to_owned(),
                        message: message.to_owned(),
                        count: ids.len() as u64,
                        exchange_ids: earliest(ids),
                    })
                    .collect(),
            });
        }
        if !acc.ungranted.is_empty() {
            let mut calls = std::mem::take(&mut acc.ungranted);
            calls.sort_unstable_by_key(|c| c.key);
            report.without_grant.push(UngrantedPair {
                pair: pair.clone(),
                count: calls.len() as u64,
                calls: calls
                    .into_iter()
                    .take(MAX_EXCHANGE_IDS)
                    .map(|Ungranted { key: (t, m, r), record, grant_id, reason }| UngrantedCall {
                        exchange: ExchangeRef { message_id: m.to_owned(), request_id: r.to_owned() },
                        time: format_time(t),
                        method: record.method.clone(),
                        path: record.path.clone(),
                        grant_id: grant_id.map(str::to_owned),
                        reason,
                    })
                    .collect(),
            });
        }
        report.pairs.push(PairRow {
            pair,
            calls: acc.calls,
            successes: acc.successes,
            failures: acc.failures,
            denials: acc.denials,
            unfinished: acc.unfinished,
            first_seen: format_time(acc.first_ms),
            last_seen: format_time(acc.last_ms),
            median_latency_ms: median(acc.latencies),
            grant_ids: acc.grant_ids.into_iter().map(str::to_owned).collect(),
            exchange_ids: earliest(acc.exchanges),
        });
    }
    let mut listed = BTreeSet::new();
    for g in valid_grants {
        if !listed.insert(g.id.as_str()) {
            continue;
        }
        let calls = grant_calls.remove(g.id.as_str()).unwrap_or_default();
        let (subject, subject_kind) = match &g.subject {
            GrantSubject::Client(c) => (c.to_string(), SubjectKind::Client),
            GrantSubject::Group(gr) => (gr.to_string(), SubjectKind::Group),
        };
        report.grants.push(GrantUse {
            id: g.id.clone(),
            service: g.service.to_string(),
            subject,
            subject_kind,
            legal_basis: g.legal_basis.clone(),
            valid_from: format_time(to_millis(g.valid_from)),
            valid_until: g.valid_until.map(|u| format_time(to_millis(u))),
            used: calls.len() as u64,
            exchange_ids: earliest(calls),
        });
    }
    report
}
