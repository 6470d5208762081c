//! Serving processes whose stderr (or stdout) cannot be written: `/dev/full`, or a pipe whose
//! reader died. Logging used to panic there (tracing-subscriber reports a failed write with
//! `eprintln!`): a refused r1 call got no answer and no record, and a node or registry on
//! `/dev/full` exited at start. Now a log line that cannot be written is lost and counted, and
//! nothing else changes: every call is answered and logged.
//!
//! Each test drives the real `lienthong` binary; every wait is bounded.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

/// The number of records the node's log holds, from `/readyz` once it says ready: after each "not
/// ready" it waits for the next line any captured process logs, at most 100 ms, and for 20 s in
/// all.
fn ready(base: &str, activity: &mpsc::Receiver<()>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = curl(&[&format!("{base}/readyz")]);
        if r.status == 200 {
            assert!(r.body.starts_with("ready\n"), "{r:#?}");
            return r
                .body
                .lines()
                .find_map(|l| l.strip_prefix("log: "))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no record count in {r:#?}"));
        }
        assert!(Instant::now() < deadline, "never ready: {r:#?}");
        let _ = activity.recv_timeout(Duration::from_millis(100));
    }
}

/// A call without X-Road-Client, under the message id `id`: refused by the consumer node.
fn refused_call(base: &str, id: &str) {
    let r = curl(&["-H", &format!("X-Road-Id: {id}"), &format!("{base}/r1/{SERVICE}/001090012345")]);
    assert_eq!(r.status, 400, "{r:#?}");
    assert_eq!(r.header("x-road-error"), Some("client.invalid_client_identifier"), "{r:#?}");
}

/// The records of exchange `id` in a stopped node's log, after the whole log verifies.
fn records_of(d: &Path, log: &str, id: &str) -> Vec<serde_json::Value> {
    let verified = ok(d, &["log", "verify", log, "--anchor", "registry/anchor.json"]);
    assert!(verified.contains("verified:"), "{verified}");
    let shown = ok(d, &["log", "show", log, "--exchange", id, "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    shown.as_array().unwrap().iter().map(|r| r["record"].clone()).collect()
}

fn assert_refusal_logged(d: &Path, log: &str, id: &str) {
    let records = records_of(d, log, id);
    assert_eq!(records.len(), 1, "{id}: {records:#?}");
    assert_eq!(records[0]["fault"]["code"], "client.invalid_client_identifier", "{id}: {records:#?}");
}

#[test]
fn a_node_with_stderr_on_dev_full_serves_and_logs_its_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (activity_tx, activity) = mpsc::channel();
    let instance = set_up_instance(d, &activity_tx, Stderr::Captured);
    std::fs::write(d.join("cons.toml"), node_config("cons", instance.cons_port, "")).unwrap();

    let mut node = Daemon::start_with(
        "consumer node",
        d,
        &["node", "serve", "--config", "cons.toml"],
        &activity_tx,
        Stderr::DevFull,
    );
    let base = r1_base(&node);
    let before = ready(&base, &activity);
    for i in 0..3 {
        refused_call(&base, &format!("dev-full-refused-{i}"));
    }
    assert_eq!(ready(&base, &activity), before + 3, "each refusal is a record");
    assert!(node.alive(), "the node exited");

    assert!(node.terminate(Duration::from_secs(20)), "the node did not stop cleanly");
    // Its log lines were lost, and it says so where it can.
    let said = node.printed_at_exit().join("\n");
    assert!(said.contains("log line(s) could not be written to stderr"), "{said}");
    for i in 0..3 {
        assert_refusal_logged(d, "cons/log", &format!("dev-full-refused-{i}"));
    }
}

#[test]
fn a_node_whose_stderr_reader_died_answers_and_logs_every_call() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (activity_tx, activity) = mpsc::channel();
    let instance = set_up_instance(d, &activity_tx, Stderr::Captured);
    write_node_configs(d, &instance);

    let mut prov =
        Daemon::start("provider node", d, &["node", "serve", "--config", "prov.toml"], &activity_tx);
    prov.line_after("peers: ");
    let mut cons = Daemon::start_with(
        "consumer node",
        d,
        &["node", "serve", "--config", "cons.toml"],
        &activity_tx,
        Stderr::Unread,
    );
    let base = r1_base(&cons);
    let url = format!("{base}/r1/{SERVICE}/001090012345");
    let first = call_until_ready(&url, &[&prov, &cons], &activity);
    assert_eq!(first.status, 200, "{first:#?}");

    // The reader dies: from now on every write to the node's stderr fails.
    cons.close_stderr();
    let before = ready(&base, &activity);
    for i in 0..3 {
        refused_call(&base, &format!("dead-pipe-refused-{i}"));
        let id = format!("dead-pipe-ok-{i}");
        let r = curl(&["-H", &format!("X-Road-Client: {CONG_DVC}"), "-H", &format!("X-Road-Id: {id}"), &url]);
        assert_eq!(r.status, 200, "{r:#?}");
        assert_eq!(r.body, BACKEND_BODY, "{r:#?}");
        assert_eq!(r.header("x-road-id"), Some(id.as_str()), "{r:#?}");
    }
    // A record per refusal, a request and a response per exchange: the log writer kept going.
    assert_eq!(ready(&base, &activity), before + 3 + 3 * 2, "/readyz");
    assert!(cons.alive(), "the consumer node exited");

    assert!(cons.terminate(Duration::from_secs(20)), "the consumer node did not stop cleanly");
    assert!(
        prov.terminate(Duration::from_secs(20)),
        "the provider node did not stop cleanly:\n{}",
        prov.log()
    );
    for i in 0..3 {
        assert_refusal_logged(d, "cons/log", &format!("dead-pipe-refused-{i}"));
        let records = records_of(d, "cons/log", &format!("dead-pipe-ok-{i}"));
        let directions: Vec<&str> = records.iter().map(|r| r["direction"].as_str().unwrap()).collect();
        assert_eq!(directions, ["request", "response"], "{records:#?}");
        assert_eq!(records[1]["status"], 200, "{records:#?}");
    }
    records_of(d, "prov/log", "dead-pipe-ok-0");
}

#[test]
fn a_registry_with_stderr_on_dev_full_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("registry.toml"), REGISTRY_CONFIG).unwrap();
    ok(d, &["registry", "init", "--config", "registry.toml", "--no-passphrase"]);
    let (activity_tx, _activity) = mpsc::channel();
    let mut registry = Daemon::start_with(
        "registry",
        d,
        &["registry", "serve", "--config", "registry.toml"],
        &activity_tx,
        Stderr::DevFull,
    );
    let conf = registry.line_after("configuration: ");
    let api = registry.line_after("api: ");

    let added = ok(
        d,
        &[
            "registry",
            "member",
            "add",
            PROVIDER,
            "--name",
            "Bộ Công an",
            "--config",
            "registry.toml",
            "--url",
            &api,
        ],
    );
    assert!(added.contains("added member"), "{added}");
    // The configuration is protobuf; its anchor, next to it, is text.
    let anchor = conf.replace("/globalconf", "/anchor.json");
    let served = curl(&[&anchor]);
    assert_eq!(served.status, 200, "{served:#?}");
    assert!(served.body.contains("\"instance\""), "{served:#?}");
    assert!(registry.alive(), "the registry exited");
    assert!(registry.terminate(Duration::from_secs(20)), "the registry did not stop cleanly");
}

#[test]
fn a_one_shot_command_whose_stdout_is_closed_exits_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["demo", "--pki", "--dir"])
        .arg(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `lienthong demo --pki | head -0`: the reader is gone before the first line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
