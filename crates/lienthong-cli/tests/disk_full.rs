//! A real `lienthong node serve` process whose log is on a small tmpfs that fills up (issue 14,
//! items 1 and 3, as an operator meets them): calls are refused with `logging_failed`, `/readyz`
//! says why while `/healthz` stays alive, the node serves again by itself once space returns; and
//! stopped in that state, with SIGKILL or SIGTERM, it starts again with every acknowledged
//! exchange in a log that verifies. Needs root to mount; CI requires it
//! (`LIENTHONG_REQUIRE_TMPFS`).

mod support;

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lienthong_testkit::tmpfs::Tmpfs;
use support::*;

const BALLAST: &str = "ballast";

fn call(url: &str, id: &str) -> Response {
    curl(&["-H", &format!("X-Road-Client: {CONG_DVC}"), "-H", &format!("X-Road-Id: {id}"), url])
}

/// Calls until the consumer refuses with `logging_failed` (bounded); the ids it acknowledged.
fn call_until_refused(url: &str, tag: &str) -> Vec<String> {
    let mut acked = Vec::new();
    for n in 0..5_000 {
        let id = format!("{tag}-{n}");
        let r = call(url, &id);
        if r.status == 200 {
            acked.push(id);
            continue;
        }
        assert_eq!(r.status, 500, "{r:#?}");
        assert_eq!(r.header("x-road-error"), Some("server.clientproxy.logging_failed"), "{r:#?}");
        return acked;
    }
    panic!("the log's disk never filled");
}

/// Waits (bounded) until `/readyz` answers `status`; returns its body.
fn readyz_until(base: &str, status: u16, activity: &mpsc::Receiver<()>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = curl(&[&format!("{base}/readyz")]);
        if r.status == status {
            return r.body;
        }
        assert!(Instant::now() < deadline, "/readyz never answered {status}: {r:#?}");
        let _ = activity.recv_timeout(Duration::from_millis(100));
    }
}

fn start_consumer(d: &Path, activity: &mpsc::Sender<()>) -> (Daemon, String) {
    let node = Daemon::start("consumer node", d, &["node", "serve", "--config", "cons.toml"], activity);
    let base = r1_base(&node);
    (node, base)
}

#[test]
fn a_node_process_on_a_full_disk_refuses_recovers_and_restarts_after_sigkill_and_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (activity_tx, activity) = mpsc::channel();
    let instance = set_up_instance(d, &activity_tx, Stderr::Captured);
    write_node_configs(d, &instance);
    let Some(fs) = Tmpfs::mount_at(&d.join("cons").join("log"), 8 << 20) else { return };

    let mut prov =
        Daemon::start("provider node", d, &["node", "serve", "--config", "prov.toml"], &activity_tx);
    prov.line_after("peers: ");
    let (mut cons, base) = start_consumer(d, &activity_tx);
    let url = format!("{base}/r1/{SERVICE}/001090012345");
    assert_eq!(call_until_ready(&url, &[&prov, &cons], &activity).status, 200);
    let mut acked = Vec::new();

    // Full: refused, not ready (with the reason), alive; space returns: ready by itself.
    fs.fill(BALLAST);
    acked.extend(call_until_refused(&url, "full-1"));
    let body = readyz_until(&base, 503, &activity);
    assert!(body.contains("the message log cannot write"), "{body}");
    assert_eq!(curl(&[&format!("{base}/healthz")]).status, 200, "a restart would not free the disk");
    fs.free_ballast(BALLAST);
    readyz_until(&base, 200, &activity);
    let r = call(&url, "after-free");
    assert_eq!(r.status, 200, "{r:#?}");
    acked.push("after-free".into());

    // Full again, then SIGKILL; space returns; it starts and serves.
    fs.fill(BALLAST);
    acked.extend(call_until_refused(&url, "full-2"));
    cons.kill();
    fs.free_ballast(BALLAST);
    let (mut cons, base) = start_consumer(d, &activity_tx);
    let url = format!("{base}/r1/{SERVICE}/001090012345");
    let r = call_until_ready(&url, &[&prov, &cons], &activity);
    assert_eq!(r.status, 200, "{r:#?}");

    // Full again, then SIGTERM while still full; space returns; it starts and serves.
    fs.fill(BALLAST);
    acked.extend(call_until_refused(&url, "full-3"));
    assert!(cons.terminate(Duration::from_secs(20)), "a clean stop on a full disk:\n{}", cons.log());
    fs.free_ballast(BALLAST);
    let (mut cons, base) = start_consumer(d, &activity_tx);
    let url = format!("{base}/r1/{SERVICE}/001090012345");
    let r = call_until_ready(&url, &[&prov, &cons], &activity);
    assert_eq!(r.status, 200, "{r:#?}");

    assert!(cons.terminate(Duration::from_secs(20)), "{}", cons.log());
    assert!(prov.terminate(Duration::from_secs(20)), "{}", prov.log());
    let verified = ok(d, &["log", "verify", "cons/log", "--anchor", "registry/anchor.json"]);
    assert!(verified.contains("verified:"), "{verified}");
    for id in &acked {
        let shown = ok(d, &["log", "show", "cons/log", "--exchange", id, "--json"]);
        let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
        let directions: Vec<&str> =
            shown.as_array().unwrap().iter().map(|r| r["record"]["direction"].as_str().unwrap()).collect();
        assert_eq!(directions, ["request", "response"], "acknowledged exchange {id}");
    }
    drop(fs);
}
