//! `/healthz` (the process serves) and `/readyz` (it can carry exchanges now: a valid global
//! configuration, its keys, a writable log), with the reason in the body.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};
use lienthong_globalconf::Freshness;

use crate::state::{Body, NodeState, full};

pub(crate) async fn respond(state: &NodeState, ready_check: bool) -> Response<Body> {
    let (status, body) =
        if ready_check { readiness(state).await } else { (StatusCode::OK, "ok\n".to_owned()) };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
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
    if !state.log.is_writable() {
        problems.push("the last message-log write failed");
    }
    if !spool_ok {
        problems.push("the spool directory is missing");
    }
    let head = state.log.log().head();
    let body = format!(
        "{}\n{conf_line}\nkeys: {} member signing key(s)\nlog: {} records, {}\n",
        if problems.is_empty() { "ready".to_owned() } else { format!("not ready: {}", problems.join("; ")) },
        state.keys.signing.len(),
        head.size,
        if state.log.is_writable() { "writable" } else { "write failed" },
    );
    (if problems.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
}
