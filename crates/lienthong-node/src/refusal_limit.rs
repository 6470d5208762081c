//! The rate limit on records of refused unauthenticated traffic, so that anyone who can reach a
//! node cannot grow its log without bound, while every refusal stays evidence.
//!
//! **Which refusals count as unauthenticated** (the rule): a refusal made before the caller was
//! identified and authenticated:
//! - peer-port connections refused at TLS (no certificate, a certificate of no registered node,
//!   a failed or timed-out handshake) ([`Kind::PeerTls`]);
//! - audit API calls without an auditor's certificate over HTTPS ([`Kind::Audit`]);
//! - r1 calls (and `listClients`) refused before the client's authentication succeeded:
//!   disallowed method, oversized headers, malformed path or X-Road-Client, no usable global
//!   configuration, a client not hosted here or not registered, client authentication failed
//!   ([`Kind::Client`]).
//!
//! Everything refused after that point (a registered client that passed its authentication:
//! maintenance, unknown service, access denied, a failed exchange; a peer node that passed
//! pinned mTLS; an auditor's bad query) keeps one record per refusal: that is the evidence an
//! auditor needs about an identified party. For a client whose `auth` is `none` or `loopback`
//! the authentication is the network's: its refusals after that check are not limited.
//!
//! **What the limit does**: per (source, kind) and per interval, the first `per_source`
//! refusals get a record of their own, as long as the node-wide token bucket (`records_per_sec`,
//! `burst`) has a token; the others are only counted, per fault code. When the interval ends,
//! each (source, kind) with counted refusals gets one summary record ([`Summary`]): source,
//! kind, interval, first and last seen, how many were recorded and the counted ones per fault
//! code. At most `max_sources` (source, kind) pairs are tracked per interval; refusals from
//! sources beyond that are counted together under "other sources" (per kind). A source is an
//! IPv4 address or an IPv6 /64 (one host commonly holds a whole /64).
//!
//! Pure logic: the caller passes the time (ms since the Unix epoch).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use lienthong_proto::msglog::v1 as pb;

/// Distinct fault codes counted per (source, kind); the rest are counted under [`OTHER_CODE`].
const MAX_CODES: usize = 16;
pub(crate) const OTHER_CODE: &str = "other";

/// The kind of unauthenticated traffic refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    PeerTls,
    Audit,
    Client,
}

impl Kind {
    pub(crate) fn to_pb(self) -> pb::RefusalKind {
        match self {
            Kind::PeerTls => pb::RefusalKind::PeerTls,
            Kind::Audit => pb::RefusalKind::Audit,
            Kind::Client => pb::RefusalKind::Client,
        }
    }
}

/// Where refusals came from: an address (IPv6 by /64), or every source beyond the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Source {
    Addr(IpAddr),
    Other,
}

impl Source {
    /// The source an address is counted under.
    pub(crate) fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Source::Addr(addr),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::Addr(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    Source::Addr(IpAddr::V6(bits.into()))
                }
            },
        }
    }

    /// As a summary names it: `203.0.113.7`, `2001:db8:1:2::/64`, or empty for other sources.
    pub(crate) fn text(self) -> String {
        match self {
            Source::Addr(a @ IpAddr::V4(_)) => a.to_string(),
            Source::Addr(a @ IpAddr::V6(_)) => format!("{a}/64"),
            Source::Other => String::new(),
        }
    }
}

/// The limits (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub interval_ms: i64,
    pub per_source: u64,
    pub max_sources: usize,
    pub records_per_sec: u64,
    pub burst: u64,
}

/// One (source, kind)'s refusals in one interval, once it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    pub kind: Kind,
    pub source: Source,
    pub interval_start_ms: i64,
    pub interval_end_ms: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub recorded: u64,
    /// Counted only, by fault code (in code order).
    pub suppressed: Vec<(String, u64)>,
}

impl Summary {
    pub(crate) fn suppressed_total(&self) -> u64 {
        self.suppressed.iter().map(|(_, n)| n).sum()
    }
}

#[derive(Debug)]
struct Tally {
    recorded: u64,
    suppressed: BTreeMap<String, u64>,
    first_seen_ms: i64,
    last_seen_ms: i64,
}

/// The limiter's state: the current interval's tallies and the node-wide token bucket.
#[derive(Debug)]
pub(crate) struct RefusalLimiter {
    limits: Limits,
    window_start_ms: i64,
    tallies: HashMap<(Source, Kind), Tally>,
    /// Summaries of intervals that ended, until taken.
    closed: Vec<Summary>,
    /// Thousandths of a record.
    tokens: u64,
    tokens_at_ms: i64,
}

impl RefusalLimiter {
    pub(crate) fn new(limits: Limits, now_ms: i64) -> Self {
        let limits = Limits { interval_ms: limits.interval_ms.max(1), ..limits };
        Self {
            window_start_ms: align(now_ms, limits.interval_ms),
            tallies: HashMap::new(),
            closed: Vec::new(),
            tokens: limits.burst.saturating_mul(1000),
            tokens_at_ms: now_ms,
            limits,
        }
    }

    /// Counts one refusal of `kind` from `addr` with fault `code`; true when it gets a record
    /// of its own, false when only this count keeps it.
    pub(crate) fn admit(&mut self, now_ms: i64, kind: Kind, addr: IpAddr, code: &str) -> bool {
        self.roll(now_ms);
        let mut source = Source::of(addr);
        if !self.tallies.contains_key(&(source, kind)) && self.tracked() >= self.limits.max_sources {
            source = Source::Other;
        }
        let recorded = self.tallies.get(&(source, kind)).map_or(0, |t| t.recorded);
        let under_quota = recorded < self.limits.per_source;
        let record = under_quota && self.take_token(now_ms);
        let tally = self.tallies.entry((source, kind)).or_insert_with(|| Tally {
            recorded: 0,
            suppressed: BTreeMap::new(),
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
        });
        tally.first_seen_ms = tally.first_seen_ms.min(now_ms);
        tally.last_seen_ms = tally.last_seen_ms.max(now_ms);
        if record {
            tally.recorded += 1;
        } else {
            let code = if tally.suppressed.contains_key(code) || tally.suppressed.len() < MAX_CODES - 1 {
                code
            } else {
                OTHER_CODE
            };
            *tally.suppressed.entry(code.to_owned()).or_default() += 1;
        }
        record
    }

    /// The summaries of the intervals that have ended by `now_ms`.
    pub(crate) fn take_due(&mut self, now_ms: i64) -> Vec<Summary> {
        self.roll(now_ms);
        std::mem::take(&mut self.closed)
    }

    /// Ends the current interval at `now_ms` (at shutdown) and returns every pending summary.
    pub(crate) fn take_all(&mut self, now_ms: i64) -> Vec<Summary> {
        self.roll(now_ms);
        let end = now_ms.max(self.window_start_ms);
        self.close(end);
        self.window_start_ms = end;
        std::mem::take(&mut self.closed)
    }

    /// Pairs tracked individually (the "other sources" buckets not included).
    fn tracked(&self) -> usize {
        self.tallies.keys().filter(|(s, _)| *s != Source::Other).count()
    }

    /// Closes the current interval if it has ended. A clock that went back stays in the
    /// current interval.
    fn roll(&mut self, now_ms: i64) {
        let end = self.window_start_ms.saturating_add(self.limits.interval_ms);
        if now_ms >= end {
            self.close(end);
            self.window_start_ms = align(now_ms, self.limits.interval_ms);
        }
    }

    fn close(&mut self, end_ms: i64) {
        let mut ended: Vec<_> = self.tallies.drain().filter(|(_, t)| !t.suppressed.is_empty()).collect();
        ended.sort_unstable_by_key(|((source, kind), _)| (*kind, *source));
        for ((source, kind), t) in ended {
            self.closed.push(Summary {
                kind,
                source,
                interval_start_ms: self.window_start_ms,
                interval_end_ms: end_ms,
                first_seen_ms: t.first_seen_ms,
                last_seen_ms: t.last_seen_ms,
                recorded: t.recorded,
                suppressed: t.suppressed.into_iter().collect(),
            });
        }
    }

    fn take_token(&mut self, now_ms: i64) -> bool {
        let cap = self.limits.burst.saturating_mul(1000);
        // A clock that went back refills nothing.
        let elapsed = u64::try_from(now_ms.saturating_sub(self.tokens_at_ms)).unwrap_or(0);
        self.tokens =
            self.tokens.saturating_add(elapsed.saturating_mul(self.limits.records_per_sec)).min(cap);
        self.tokens_at_ms = self.tokens_at_ms.max(now_ms);
        if self.tokens >= 1000 {
            self.tokens -= 1000;
            true
        } else {
            false
        }
    }
}

fn align(now_ms: i64, interval_ms: i64) -> i64 {
    now_ms - now_ms.rem_euclid(interval_ms)
}

/// The summary's log record: no exchange, the counts in `refusal_summary`.
pub(crate) fn summary_record(
    s: &Summary,
    node: &lienthong_types::NodeId,
    logged_at_ms: i64,
) -> pb::LogRecord {
    let role = match s.kind {
        Kind::Client => pb::Role::Consumer,
        Kind::PeerTls | Kind::Audit => pb::Role::Provider,
    };
    pb::LogRecord {
        message_id: format!("refusals-{}", crate::respond::new_detail()),
        direction: pb::Direction::Request as i32,
        role: role as i32,
        node: Some(node.into()),
        message_time_ms: s.first_seen_ms,
        logged_at_ms,
        refusal_summary: Some(pb::RefusalSummary {
            kind: s.kind.to_pb() as i32,
            source: s.source.text(),
            other_sources: s.source == Source::Other,
            interval_start_ms: s.interval_start_ms,
            interval_end_ms: s.interval_end_ms,
            first_seen_ms: s.first_seen_ms,
            last_seen_ms: s.last_seen_ms,
            recorded: s.recorded,
            suppressed: s
                .suppressed
                .iter()
                .map(|(code, count)| pb::FaultCount { code: code.clone(), count: *count })
                .collect(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    fn limits() -> Limits {
        Limits { interval_ms: 60_000, per_source: 3, max_sources: 2, records_per_sec: 1_000, burst: 1_000 }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_refusals_of_a_source_are_recorded_the_rest_counted_and_summarised_once() {
        let mut l = RefusalLimiter::new(limits(), T0);
        let a = ip("203.0.113.7");
        let admitted: Vec<bool> = (0..10)
            .map(|i| l.admit(T0 + i * 100, Kind::Client, a, if i % 2 == 0 { "x.a" } else { "x.b" }))
            .collect();
        assert_eq!(admitted, [true, true, true, false, false, false, false, false, false, false]);
        assert!(l.take_due(T0 + 59_999).is_empty(), "the interval has not ended");
        let due = l.take_due(T0 + 60_000);
        assert_eq!(
            due,
            [Summary {
                kind: Kind::Client,
                source: Source::Addr(a),
                interval_start_ms: T0 - T0.rem_euclid(60_000),
                interval_end_ms: T0 - T0.rem_euclid(60_000) + 60_000,
                first_seen_ms: T0,
                last_seen_ms: T0 + 900,
                recorded: 3,
                suppressed: vec![("x.a".into(), 3), ("x.b".into(), 4)],
            }]
        );
        assert!(l.take_due(T0 + 120_000).is_empty(), "one summary per interval");
        // The next interval starts afresh.
        assert!(l.admit(T0 + 120_000, Kind::Client, a, "x.a"));
    }

    #[test]
    fn sources_and_kinds_are_limited_separately_and_quiet_ones_get_no_summary() {
        let mut l = RefusalLimiter::new(Limits { max_sources: 10, ..limits() }, T0);
        for i in 0..5 {
            l.admit(T0 + i, Kind::Audit, ip("10.0.0.1"), "audit.unauthorized");
            l.admit(T0 + i, Kind::PeerTls, ip("10.0.0.1"), "server.serverproxy.ssl_authentication_failed");
        }
        for i in 0..3 {
            assert!(l.admit(T0 + i, Kind::Audit, ip("10.0.0.2"), "audit.unauthorized"));
        }
        let due = l.take_all(T0 + 10);
        let keys: Vec<_> = due.iter().map(|s| (s.kind, s.source, s.recorded, s.suppressed_total())).collect();
        assert_eq!(
            keys,
            [
                (Kind::PeerTls, Source::Addr(ip("10.0.0.1")), 3, 2),
                (Kind::Audit, Source::Addr(ip("10.0.0.1")), 3, 2),
            ],
            "10.0.0.2 stayed within its quota: its records say it all"
        );
        assert_eq!(due[0].interval_end_ms, T0 + 10, "a flush ends the interval now");
    }

    #[test]
    fn sources_beyond_the_tracking_limit_are_counted_together() {
        let mut l = RefusalLimiter::new(limits(), T0);
        for host in 1..=20u8 {
            for _ in 0..4 {
                l.admit(T0, Kind::Client, IpAddr::from([192, 0, 2, host]), "c");
            }
        }
        assert_eq!(l.tallies.len(), 3, "two sources and the other-sources bucket");
        let due = l.take_all(T0 + 1);
        let other = due.iter().find(|s| s.source == Source::Other).unwrap();
        // 18 sources x 4 refusals, the bucket's first 3 recorded.
        assert_eq!((other.recorded, other.suppressed_total()), (3, 69));
        let total: u64 = due.iter().map(|s| s.recorded + s.suppressed_total()).sum();
        assert_eq!(total, 80, "every refusal is counted once");
        assert_eq!(other.source.text(), "");
    }

    #[test]
    fn the_node_wide_bucket_caps_records_across_sources() {
        let limits = Limits { per_source: 100, max_sources: 1_000, records_per_sec: 2, burst: 5, ..limits() };
        let mut l = RefusalLimiter::new(limits, T0);
        let recorded =
            (0..50u8).filter(|h| l.admit(T0, Kind::PeerTls, IpAddr::from([198, 51, 100, *h]), "t")).count();
        assert_eq!(recorded, 5, "the burst");
        assert!(!l.admit(T0 + 400, Kind::PeerTls, ip("198.51.100.1"), "t"), "not yet a whole token");
        assert!(l.admit(T0 + 500, Kind::PeerTls, ip("198.51.100.1"), "t"), "2 per second");
        assert!(!l.admit(T0 + 500, Kind::PeerTls, ip("198.51.100.1"), "t"));
        let due = l.take_all(T0 + 600);
        let total: u64 = due.iter().map(|s| s.recorded + s.suppressed_total()).sum();
        let recorded: u64 = due.iter().map(|s| s.recorded).sum();
        assert_eq!(total - recorded, 53 - 6);
    }

    #[test]
    fn ipv6_hosts_count_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(Source::of(ip("2001:db8:1:2::1")), Source::of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(Source::of(ip("2001:db8:1:2::1")), Source::of(ip("2001:db8:1:3::1")));
        assert_eq!(Source::of(ip("2001:db8:1:2::1")).text(), "2001:db8:1:2::/64");
        assert_eq!(Source::of(ip("::ffff:192.0.2.1")), Source::of(ip("192.0.2.1")));
    }

    #[test]
    fn many_fault_codes_are_bounded() {
        let mut l = RefusalLimiter::new(Limits { per_source: 0, ..limits() }, T0);
        for i in 0..100 {
            l.admit(T0, Kind::Client, ip("10.1.1.1"), &format!("code.{i}"));
        }
        let due = l.take_all(T0 + 1);
        assert_eq!(due[0].suppressed.len(), MAX_CODES);
        assert_eq!(due[0].suppressed_total(), 100);
        assert!(due[0].suppressed.iter().any(|(c, n)| c == OTHER_CODE && *n == 85));
    }

    #[test]
    fn a_clock_going_back_keeps_counting_in_the_current_interval() {
        let mut l = RefusalLimiter::new(Limits { per_source: 1, ..limits() }, T0);
        assert!(l.admit(T0, Kind::Audit, ip("10.0.0.1"), "a"));
        assert!(!l.admit(T0 - 3_600_000, Kind::Audit, ip("10.0.0.1"), "a"));
        assert!(l.take_due(T0 - 3_600_000).is_empty());
        let due = l.take_due(T0 + 120_000);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].first_seen_ms, due[0].last_seen_ms), (T0 - 3_600_000, T0));
    }

    #[test]
    fn a_summary_record_names_its_counts_and_is_no_exchange() {
        let s = Summary {
            kind: Kind::Audit,
            source: Source::of(ip("203.0.113.9")),
            interval_start_ms: T0,
            interval_end_ms: T0 + 1_000,
            first_seen_ms: T0 + 1,
            last_seen_ms: T0 + 999,
            recorded: 2,
            suppressed: vec![("audit.unauthorized".into(), 7)],
        };
        let node: lienthong_types::NodeId = "VN/GOV/000.00.00.G02/ss-1".parse().unwrap();
        let r = summary_record(&s, &node, T0 + 1_001);
        assert!(r.message_id.starts_with("refusals-"));
        assert!(r.client.is_none() && r.service.is_none() && r.fault.is_none() && r.status == 0);
        let sum = r.refusal_summary.unwrap();
        assert_eq!(sum.kind, pb::RefusalKind::Audit as i32);
        assert_eq!(sum.source, "203.0.113.9");
        assert_eq!(sum.suppressed, [pb::FaultCount { code: "audit.unauthorized".into(), count: 7 }]);
        assert_eq!(sum.recorded, 2);
    }
}
