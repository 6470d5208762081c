//! The soak's result: a table for people, the same as JSON for the record, and the verdict.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::Args;
use crate::check::{LogCheck, LossReport, StopRecord};
use crate::faults::{FaultKind, FaultRecord, HealthLog};
use crate::traffic::{Call, Kind, Outcome};
use crate::util::min_median_max;

/// The calls of one kind.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct KindCount {
    pub calls: u64,
    pub acknowledged: u64,
    /// Acknowledged, but the answer's body then broke off.
    pub body_broken: u64,
    /// Refused, by X-Road-Error code (or HTTP status).
    pub refused: BTreeMap<String, u64>,
    /// No answer, by reason.
    pub no_answer: BTreeMap<String, u64>,
    /// Time of the acknowledged calls, head sent to body's end: median and 99th percentile, ms.
    pub acked_ms_p50: Option<f64>,
    pub acked_ms_p99: Option<f64>,
}

/// Recoveries from one kind of fault.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Recovery {
    pub injected: u64,
    pub recovered: u64,
    pub problems: u64,
    /// Seconds from the fault's end until ready: min, median, max.
    pub ready_s: Option<(f64, f64, f64)>,
    /// Seconds from the fault's end until it served a call: min, median, max.
    pub served_s: Option<(f64, f64, f64)>,
}

pub(crate) struct Inputs<'a> {
    pub args: &'a Args,
    pub seed: u64,
    pub kinds: &'a [FaultKind],
    pub ran: Duration,
    pub log_fs_bytes: Option<u64>,
    pub calls: &'a [Call],
    pub faults: Vec<FaultRecord>,
    pub unexpected: Vec<String>,
    pub stops: Vec<StopRecord>,
    pub logs: Vec<LogCheck>,
    pub loss: Result<LossReport>,
    pub health: BTreeMap<String, HealthLog>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub seed: u64,
    pub duration_s: f64,
    pub clients: u32,
    pub rate_per_s: f64,
    /// Each node's log tmpfs; `null`: plain directories.
    pub log_fs_bytes: Option<u64>,
    pub fault_kinds: Vec<&'static str>,
    pub calls: u64,
    pub by_kind: BTreeMap<Kind, KindCount>,
    /// Acknowledged (200 from the consumer node) client and probe calls.
    pub acknowledged: u64,
    /// Denied or malformed calls that were acknowledged: must be 0.
    pub wrongly_acknowledged: u64,
    pub loss: Option<LossReport>,
    /// Why the logs could not be searched, when they could not.
    pub loss_check_error: Option<String>,
    pub logs: Vec<LogCheck>,
    pub stops: Vec<StopRecord>,
    pub recoveries: BTreeMap<FaultKind, Recovery>,
    pub faults: Vec<FaultRecord>,
    pub unexpected_exits: Vec<String>,
    /// `/readyz` of each node, polled once a second.
    pub readiness: BTreeMap<String, HealthLog>,
    /// Why the run failed; empty when it passed.
    pub failures: Vec<String>,
}

impl Report {
    pub(crate) fn new(i: Inputs<'_>) -> Self {
        let mut by_kind = BTreeMap::<Kind, KindCount>::new();
        for c in i.calls {
            let k = by_kind.entry(c.kind).or_default();
            k.calls += 1;
            match &c.outcome {
                Outcome::Ack { body_error } => {
                    k.acknowledged += 1;
                    k.body_broken += u64::from(body_error.is_some());
                }
                Outcome::Refused { code, .. } => *k.refused.entry(code.clone()).or_default() += 1,
                Outcome::NoAnswer(why) => *k.no_answer.entry(why.clone()).or_default() += 1,
            }
        }
        for (kind, k) in &mut by_kind {
            let mut ms: Vec<f64> = i
                .calls
                .iter()
                .filter(|c| c.kind == *kind && matches!(c.outcome, Outcome::Ack { .. }))
                .map(|c| c.elapsed.as_secs_f64() * 1000.0)
                .collect();
            ms.sort_by(f64::total_cmp);
            let at = |q: f64| ms.get(((ms.len() as f64 - 1.0) * q).round() as usize).copied();
            k.acked_ms_p50 = at(0.5);
            k.acked_ms_p99 = at(0.99);
        }
        let acknowledged = by_kind.values().map(|k| k.acknowledged).sum();
        let wrongly_acknowledged =
            by_kind.iter().filter(|(k, _)| k.must_fail()).map(|(_, c)| c.acknowledged).sum();
        let mut recoveries = BTreeMap::<FaultKind, Recovery>::new();
        for kind in i.kinds {
            let of: Vec<&FaultRecord> = i.faults.iter().filter(|f| f.kind == *kind).collect();
            let secs = |v: Vec<Option<f64>>| {
                min_median_max(&v.into_iter().flatten().map(Duration::from_secs_f64).collect::<Vec<_>>())
            };
            recoveries.insert(
                *kind,
                Recovery {
                    injected: of.len() as u64,
                    recovered: of.iter().filter(|f| f.served_after_s.is_some()).count() as u64,
                    problems: of.iter().filter(|f| f.problem.is_some()).count() as u64,
                    ready_s: secs(of.iter().map(|f| f.ready_after_s).collect()),
                    served_s: secs(of.iter().map(|f| f.served_after_s).collect()),
                },
            );
        }
        let (loss, loss_check_error) = match i.loss {
            Ok(l) => (Some(l), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let mut r = Self {
            tool: "lienthong-soak",
            version: env!("CARGO_PKG_VERSION"),
            seed: i.seed,
            duration_s: i.ran.as_secs_f64(),
            clients: i.args.clients,
            rate_per_s: i.args.rate,
            log_fs_bytes: i.log_fs_bytes,
            fault_kinds: i.kinds.iter().map(|k| k.name()).collect(),
            calls: i.calls.len() as u64,
            by_kind,
            acknowledged,
            wrongly_acknowledged,
            loss,
            loss_check_error,
            logs: i.logs,
            stops: i.stops,
            recoveries,
            faults: i.faults,
            unexpected_exits: i.unexpected,
            readiness: i.health,
            failures: vec![],
        };
        r.failures = r.find_failures();
        r
    }

    fn find_failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        match (&self.loss, &self.loss_check_error) {
            (Some(l), _) if l.lost > 0 => f.push(format!("{} acknowledged exchanges lost", l.lost)),
            (None, Some(e)) => f.push(format!("the logs could not be searched: {e}")),
            _ => {}
        }
        for l in self.logs.iter().filter(|l| !l.verified) {
            f.push(format!("the log of {} does not verify", l.node));
        }
        if self.wrongly_acknowledged > 0 {
            f.push(format!("{} denied or malformed calls were acknowledged", self.wrongly_acknowledged));
        }
        for r in self.faults.iter().filter(|r| r.problem.is_some()) {
            f.push(format!(
                "{} of {} at {:.0} s: {}",
                r.kind.name(),
                r.target,
                r.started_at_s,
                r.problem.as_deref().unwrap_or_default()
            ));
        }
        for u in &self.unexpected_exits {
            f.push(format!("unexpected exit: {u}"));
        }
        for s in self.stops.iter().filter(|s| !s.clean) {
            f.push(format!("{} did not stop cleanly at the end: {}", s.name, s.how));
        }
        f
    }

    pub(crate) fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub(crate) fn text(&self) -> String {
        let mut s = String::new();
        let fs = self
            .log_fs_bytes
            .map_or_else(|| "plain directories".to_owned(), |b| format!("tmpfs of {} MiB each", b >> 20));
        let _ = writeln!(
            s,
            "\nlienthong-soak {}: seed {}, {:.0} s of traffic, {} clients at {} calls/s, node logs on {fs}",
            self.version, self.seed, self.duration_s, self.clients, self.rate_per_s
        );
        let _ = writeln!(s, "\ncalls                {:>8}", self.calls);
        let _ = writeln!(
            s,
            "  {:<12} {:>8} {:>8} {:>8} {:>9}  acked in ms (p50 / p99)",
            "kind", "calls", "acked", "refused", "no answer"
        );
        for (k, c) in &self.by_kind {
            let refused: u64 = c.refused.values().sum();
            let none: u64 = c.no_answer.values().sum();
            let ms = match (c.acked_ms_p50, c.acked_ms_p99) {
                (Some(a), Some(b)) => format!("{a:.0} / {b:.0}"),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                s,
                "  {:<12} {:>8} {:>8} {:>8} {:>9}  {ms}",
                k.name(),
                c.calls,
                c.acknowledged,
                refused,
                none
            );
        }
        let mut codes = BTreeMap::<String, BTreeMap<&str, u64>>::new();
        for (k, c) in &self.by_kind {
            for (code, n) in c.refused.iter().chain(c.no_answer.iter()) {
                *codes.entry(code.clone()).or_default().entry(k.name()).or_default() += n;
            }
        }
        if !codes.is_empty() {
            let _ = writeln!(s, "  refusals and calls without an answer, by X-Road-Error code or reason:");
            for (code, kinds) in &codes {
                let per: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
                let _ = writeln!(s, "    {code:<48} {}", per.join(", "));
            }
        }
        let broken: u64 = self.by_kind.values().map(|c| c.body_broken).sum();
        let _ = writeln!(
            s,
            "\nexchanges acknowledged {:>6}   (200 from the consumer node{})",
            self.acknowledged,
            if broken > 0 { format!("; {broken} of them then broke off mid-body") } else { String::new() }
        );
        match (&self.loss, &self.loss_check_error) {
            (Some(l), _) => {
                let _ = writeln!(
                    s,
                    "lost                   {:>6}   (must be 0; served by: {})",
                    l.lost,
                    l.served_by.iter().map(|(p, n)| format!("{p} {n}")).collect::<Vec<_>>().join(", ")
                );
                if l.lost > 0 {
                    let _ = writeln!(
                        s,
                        "  missing: consumer request {}, consumer response {}, provider records {}",
                        l.missing_consumer_request, l.missing_consumer_response, l.missing_provider_records
                    );
                    for e in &l.lost_examples {
                        let _ = writeln!(s, "  {e}");
                    }
                }
            }
            (None, e) => {
                let _ = writeln!(s, "lost                   unknown: {}", e.as_deref().unwrap_or_default());
            }
        }
        let _ = writeln!(
            s,
            "wrongly acknowledged   {:>6}   (denied or malformed calls; must be 0)",
            self.wrongly_acknowledged
        );
        let verified = self.logs.iter().filter(|l| l.verified).count();
        let _ = writeln!(
            s,
            "\nlogs verified          {verified} of {}   (lienthong log verify --anchor, after a graceful stop)",
            self.logs.len()
        );
        for l in &self.logs {
            if l.verified {
                let _ = writeln!(
                    s,
                    "  {:<11} {:>8} records, checkpoints {}, {} MiB on its file system",
                    l.node,
                    l.records.unwrap_or(0),
                    l.checkpoints.as_deref().unwrap_or("?"),
                    l.fs_used_bytes.unwrap_or(0) >> 20
                );
            } else {
                let _ = writeln!(
                    s,
                    "  {:<11} DOES NOT VERIFY: {}",
                    l.node,
                    l.error.as_deref().unwrap_or_default()
                );
            }
        }
        let t = |v: Option<(f64, f64, f64)>| {
            v.map_or_else(|| "-".to_owned(), |(a, b, c)| format!("{a:.1} / {b:.1} / {c:.1}"))
        };
        let _ = writeln!(s, "\nfaults and recoveries (seconds from the fault's end; min / median / max)");
        let _ = writeln!(
            s,
            "  {:<14} {:>8} {:>9}  {:<20} {:<20}",
            "fault", "injected", "recovered", "ready", "served a call"
        );
        for (k, r) in &self.recoveries {
            let _ = writeln!(
                s,
                "  {:<14} {:>8} {:>9}  {:<20} {:<20}",
                k.name(),
                r.injected,
                r.recovered,
                t(r.ready_s),
                t(r.served_s)
            );
        }
        let _ = writeln!(s, "\nreadiness (/readyz once a second): seconds ready / not ready / unreachable");
        for (node, h) in &self.readiness {
            let not_ready: u64 = h.not_ready.values().sum();
            let _ = writeln!(s, "  {node:<11} {} / {not_ready} / {}", h.ready, h.unreachable);
            for (why, n) in &h.not_ready {
                let _ = writeln!(s, "      {n:>4} s  {why}");
            }
        }
        if self.failures.is_empty() {
            let _ = writeln!(s, "\nPASSED: nothing lost, every log verified, every fault recovered from");
        } else {
            let _ = writeln!(s, "\nFAILED:");
            for f in &self.failures {
                let _ = writeln!(s, "  - {f}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn report(lost: u64, verified: bool, denied_outcome: Outcome) -> Report {
        let args = crate::Cli::parse_from(["lienthong-soak", "--duration", "30s"]).args;
        let call = |kind, outcome| Call {
            kind,
            id: "x".into(),
            answered_id: None,
            outcome,
            at: Duration::ZERO,
            elapsed: Duration::from_millis(5),
        };
        let calls =
            vec![call(Kind::Get, Outcome::Ack { body_error: None }), call(Kind::Denied, denied_outcome)];
        let log = LogCheck {
            node: "consumer".into(),
            verified,
            records: Some(4),
            checkpoints: Some("1 (1 witnessed)".into()),
            fs_used_bytes: None,
            error: (!verified).then(|| "broken".into()),
        };
        Report::new(Inputs {
            args: &args,
            seed: 1,
            kinds: &[FaultKind::NodeSigkill],
            ran: Duration::from_secs(30),
            log_fs_bytes: None,
            calls: &calls,
            faults: vec![],
            unexpected: vec![],
            stops: vec![],
            logs: vec![log],
            loss: Ok(LossReport { acknowledged: 1, lost, ..Default::default() }),
            health: BTreeMap::new(),
        })
    }

    #[test]
    fn a_loss_a_log_that_does_not_verify_or_a_wrongly_acknowledged_call_fails_the_run() {
        let refused = || Outcome::Refused { status: 500, code: "server.serverproxy.access_denied".into() };
        let good = report(0, true, refused());
        assert!(good.passed(), "{:?}", good.failures);
        assert!(good.text().contains("PASSED"));
        assert_eq!(good.acknowledged, 1);

        let lost = report(1, true, refused());
        assert!(!lost.passed());
        assert!(lost.text().contains("1 acknowledged exchanges lost"));
        assert!(!report(0, false, refused()).passed());
        let wrongly = report(0, true, Outcome::Ack { body_error: None });
        assert_eq!(wrongly.wrongly_acknowledged, 1);
        assert!(!wrongly.passed());
    }
}
