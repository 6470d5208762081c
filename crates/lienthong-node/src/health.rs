//! `/healthz` (liveness: the process serves and its log writer runs; when it fails only a restart
//! helps) and `/readyz` (readiness: it can carry exchanges now: a valid global configuration, its
//! keys, a log that takes writes), with the reason in the body. A log that cannot write (a full
//! disk) makes the node not ready but still alive: it repairs itself once space returns, and a
//! restart would not help.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};
use lienthong_globalconf::Freshness;

use crate::respond::{Body, full};
use crate::state::NodeState;

pub(crate) async fn respond(state: &NodeState, ready_check: bool) -> Response<Body> {
    let (status, body) = if ready_check { readiness(state).await } else { liveness(state) };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn liveness(state: &NodeState) -> (StatusCode, String) {
    if state.log.log().writer_alive() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not alive: the message-log writer has stopped; restart the node\n".to_owned(),
        )
    }
}

async fn readiness(state: &NodeState) -> (StatusCode, String) {
    let mut problems = Vec::new();
    let conf = state.conf.borrow().clone();
    let conf_line = match conf {
        None => {
            problems.push("no global configuration yet");
            "conf: missing".to_owned()
        }
        Some(c) => match Freshness::of(&c.conf, state.now(), Duration::ZERO) {
            Freshness::Expired { .. } => {
                problems.push("the global configuration has expired");
                format!("conf: version {} expired", c.conf.version)
            }
            _ => format!("conf: version {} valid", c.conf.version),
        },
    };
    if state.keys.signing.is_empty() {
        problems.push("no member signing key is loaded");
    }
    let spool_ok = tokio::fs::metadata(&state.spool_dir).await.is_ok_and(|m| m.is_dir());
    let health = state.log.log().health();
    let log_line = match &health.failing {
        None => "writable".to_owned(),
        Some(f) => {
            problems.push("the message log cannot write (it retries by itself)");
            let since = f.since.elapsed().unwrap_or_default().as_secs();
            format!("write failed {since} s ago, {} repair(s) tried: {}", f.repairs_tried, f.error)
        }
    };
    if !spool_ok {
        problems.push("the spool directory is missing");
    }
    let head = state.log.log().head();
    // Not a readiness condition (exchanges go on while the registry is away), but what an
    // operator must know: the witness refusing this log needs their action.
    let witness = state.witness.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let witnessed = witness.witnessed.map_or_else(
        || "nothing witnessed yet".to_owned(),
        |(size, at)| {
            let age = (lienthong_globalconf::to_millis(state.now()) - at).max(0) / 1000;
            format!("{size} records witnessed (checkpoint dated {age} s ago)")
        },
    );
    let witness_line = match &witness.failing {
        None => witnessed,
        Some(e) => format!("{witnessed}; the last round failed: {e}"),
    };
    let body = format!(
        "{}\n{conf_line}\nkeys: {} member signing key(s)\nlog: {} records, {log_line}\n\
         log recoveries: {}, write failures: {}\nwitness: {witness_line}\n",
        if problems.is_empty() { "ready".to_owned() } else { format!("not ready: {}", problems.join("; ")) },
        state.keys.signing.len(),
        head.size,
        health.recoveries,
        health.failures,
    );
    (if problems.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
}
