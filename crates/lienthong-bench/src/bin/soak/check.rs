//! The end of a run: everything stopped gracefully (nodes first, so each closes its log with a
//! checkpoint the registry witnesses), every node's log verified offline with
//! `lienthong log verify --anchor`, and every acknowledged exchange looked up in the logs.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use lienthong_msglog::LogStore;
use lienthong_proto::msglog::v1 as pb;
use prost::Message;
use serde::Serialize;

use crate::faults::STOP_LIMIT;
use crate::setup::{Instance, Stopped, run_cli};
use crate::traffic::Call;

/// How one process stopped at the end.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StopRecord {
    pub name: String,
    /// Exited by itself, with status 0, after SIGTERM.
    pub clean: bool,
    pub how: String,
}

/// SIGTERM to the nodes (consumer first: it sends to the providers), then the registry; the
/// backends are killed.
pub(crate) async fn stop_all(inst: &mut Instance) -> Vec<StopRecord> {
    let mut out = Vec::new();
    let daemons = inst.nodes.iter_mut().map(|n| &mut n.daemon).chain(std::iter::once(&mut inst.registry));
    for d in daemons {
        let (clean, how) = match d.terminate(STOP_LIMIT).await {
            Ok(Stopped::Exited(s)) => (s.success(), format!("exited on SIGTERM: {s}")),
            Ok(Stopped::Killed) => (false, format!("still running {STOP_LIMIT:?} after SIGTERM: killed")),
            Ok(Stopped::NotRunning) => (false, "was not running".to_owned()),
            Err(e) => (false, format!("{e:#}")),
        };
        out.push(StopRecord { name: d.name.clone(), clean, how });
    }
    for b in &mut inst.backends {
        let _ = b.kill().await;
    }
    out
}

/// `lienthong log verify` of one node's log.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LogCheck {
    pub node: String,
    pub verified: bool,
    pub records: Option<u64>,
    /// As printed, e.g. `130 (130 witnessed)`.
    pub checkpoints: Option<String>,
    /// The log's file system's use at the end, in bytes.
    pub fs_used_bytes: Option<u64>,
    /// Why it did not verify.
    pub error: Option<String>,
}

pub(crate) fn verify_logs(inst: &Instance, setup_log: &std::path::Path) -> Vec<LogCheck> {
    inst.nodes
        .iter()
        .map(|n| {
            let dir = n.log_dir();
            let anchor = inst.anchor.display().to_string();
            let dir_s = dir.display().to_string();
            let field = |text: &str, name: &str| {
                text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned())
            };
            let fs_used_bytes = n.log_fs.as_ref().and_then(|fs| du(fs.path()));
            match run_cli(&inst.lienthong, &["log", "verify", &dir_s, "--anchor", &anchor], setup_log) {
                Ok(text) => LogCheck {
                    node: n.role.to_owned(),
                    verified: true,
                    records: field(&text, "records:")
                        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok())),
                    checkpoints: field(&text, "checkpoints:"),
                    fs_used_bytes,
                    error: None,
                },
                Err(e) => LogCheck {
                    node: n.role.to_owned(),
                    verified: false,
                    records: None,
                    checkpoints: None,
                    fs_used_bytes,
                    error: Some(format!("{e:#}")),
                },
            }
        })
        .collect()
}

/// Bytes used under `dir` (its files, not following links).
fn du(dir: &std::path::Path) -> Option<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()? {
            let e = e.ok()?;
            let meta = e.metadata().ok()?;
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    Some(total)
}

/// The acknowledged exchanges against the logs.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct LossReport {
    pub acknowledged: u64,
    /// Acknowledged exchanges missing any of: the consumer's request and response records, one
    /// provider's request and response records.
    pub lost: u64,
    pub missing_consumer_request: u64,
    pub missing_consumer_response: u64,
    pub missing_provider_records: u64,
    /// Which provider node's log held each acknowledged exchange.
    pub served_by: BTreeMap<String, u64>,
    /// Acknowledged with an X-Road-Id other than the one sent (looked up by the answered one).
    pub answered_with_other_id: u64,
    /// The first lost exchanges, with what was missing.
    pub lost_examples: Vec<String>,
}

/// Which of an exchange's records a log holds for one role.
fn records_of(store: &dyn LogStore, id: &str, role: pb::Role) -> Result<(bool, bool)> {
    let (mut request, mut response) = (false, false);
    for index in store.by_exchange(id)? {
        let Some(bytes) = store.record(index)? else { continue };
        let r = pb::LogRecord::decode(bytes.as_slice()).with_context(|| format!("record {index}"))?;
        if r.message_id != id || r.role != role as i32 {
            continue;
        }
        if r.direction == pb::Direction::Request as i32 {
            request = true;
        } else if r.direction == pb::Direction::Response as i32 {
            response = true;
        }
    }
    Ok((request, response))
}

pub(crate) fn check_losses(inst: &Instance, acked: &[&Call]) -> Result<LossReport> {
    let open = |i: usize| -> Result<Arc<dyn LogStore>> {
        let dir = inst.nodes[i].log_dir();
        lienthong_msglog::open_existing(&dir).with_context(|| format!("opening {}", dir.display()))
    };
    let consumer = open(0)?;
    let providers: Vec<(String, Arc<dyn LogStore>)> = (1..inst.nodes.len())
        .map(|i| Ok((inst.nodes[i].role.to_owned(), open(i)?)))
        .collect::<Result<_>>()?;
    losses_in(&*consumer, &providers, acked)
}

/// Looks up `acked` in the consumer's log and the providers' logs.
fn losses_in(
    consumer: &dyn LogStore,
    providers: &[(String, Arc<dyn LogStore>)],
    acked: &[&Call],
) -> Result<LossReport> {
    let mut r = LossReport { acknowledged: acked.len() as u64, ..Default::default() };
    for call in acked {
        let id = match &call.answered_id {
            Some(a) if *a != call.id => {
                r.answered_with_other_id += 1;
                a.as_str()
            }
            _ => call.id.as_str(),
        };
        let (req, resp) = records_of(consumer, id, pb::Role::Consumer)?;
        let mut provider = None;
        for (name, store) in providers {
            if records_of(&**store, id, pb::Role::Provider)? == (true, true) {
                provider = Some(name.clone());
                break;
            }
        }
        let mut missing = Vec::new();
        if !req {
            r.missing_consumer_request += 1;
            missing.push("the consumer's request record");
        }
        if !resp {
            r.missing_consumer_response += 1;
            missing.push("the consumer's response record");
        }
        match provider {
            Some(p) => *r.served_by.entry(p).or_default() += 1,
            None => {
                r.missing_provider_records += 1;
                missing.push("a provider's request and response records");
            }
        }
        if !missing.is_empty() {
            r.lost += 1;
            if r.lost_examples.len() < 20 {
                r.lost_examples.push(format!(
                    "{id} ({} at {:.1} s): missing {}",
                    call.kind.name(),
                    call.at.as_secs_f64(),
                    missing.join(", ")
                ));
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lienthong_msglog::{Entry, MemStore};

    use super::*;
    use crate::traffic::{Kind, Outcome};

    fn record(id: &str, direction: pb::Direction, role: pb::Role) -> pb::LogRecord {
        pb::LogRecord {
            message_id: id.into(),
            direction: direction as i32,
            role: role as i32,
            ..Default::default()
        }
    }

    fn store(records: &[pb::LogRecord]) -> Arc<dyn LogStore> {
        let s = MemStore::new();
        let entries: Vec<Entry> = records.iter().map(Entry::new).collect();
        s.append(0, &entries, &[]).unwrap();
        Arc::new(s)
    }

    fn acked(id: &str) -> Call {
        Call {
            kind: Kind::Get,
            id: id.into(),
            answered_id: Some(id.into()),
            outcome: Outcome::Ack { body_error: None },
            at: Duration::ZERO,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn an_exchange_missing_any_record_is_lost() {
        use pb::Direction::{Request, Response};
        use pb::Role::{Consumer, Provider};
        let consumer = store(&[
            record("whole", Request, Consumer),
            record("whole", Response, Consumer),
            record("no-consumer-response", Request, Consumer),
            record("no-provider-response", Request, Consumer),
            record("no-provider-response", Response, Consumer),
            // A provider's record in the consumer's log does not count for the provider.
            record("whole", Request, Provider),
        ]);
        let a = store(&[
            record("whole", Request, Provider),
            record("no-consumer-response", Request, Provider),
            record("no-consumer-response", Response, Provider),
            record("no-provider-response", Request, Provider),
        ]);
        // The provider's two records must be in one log, not split across both.
        let b =
            store(&[record("no-provider-response", Response, Provider), record("whole", Response, Provider)]);
        let providers = vec![("provider-a".to_owned(), a), ("provider-b".to_owned(), b.clone())];
        let calls: Vec<Call> =
            ["whole", "no-consumer-response", "no-provider-response", "unknown"].map(acked).into();
        let refs: Vec<&Call> = calls.iter().collect();
        let r = losses_in(&*consumer, &providers, &refs).unwrap();
        assert_eq!(r.acknowledged, 4);
        // Each one misses something: "whole" and "no-provider-response" have their provider
        // records split across the two logs, "unknown" is nowhere.
        assert_eq!(r.lost, 4, "{r:?}");
        assert_eq!(r.missing_consumer_request, 1);
        assert_eq!(r.missing_consumer_response, 2);
        assert_eq!(r.missing_provider_records, 3);

        // Complete in one provider's log: not lost, and counted for that provider.
        let whole_b = store(&[record("whole", Request, Provider), record("whole", Response, Provider)]);
        let providers = vec![("provider-a".to_owned(), b), ("provider-b".to_owned(), whole_b)];
        let whole = acked("whole");
        let r = losses_in(&*consumer, &providers, &[&whole]).unwrap();
        assert_eq!(r.lost, 0, "{r:?}");
        assert_eq!(r.served_by.get("provider-b"), Some(&1));
    }
}
