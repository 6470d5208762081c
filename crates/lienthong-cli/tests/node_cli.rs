//! The whole product from the command line: a registry, a provider node and a consumer node
//! each run by the real `lienthong` binary, set up with `node init` (one request approved by the
//! operator with `registry requests approve`), a service published with `node publish`, a grant
//! recorded with `registry grant add`, and plain `curl` calling the service over X-Road REST r1.
//! The central audit service (`audit api-key`, `audit init`, `audit serve`) pulls both nodes and
//! reports the exchange. Afterwards both nodes' message logs verify offline with `lienthong log
//! verify`.
//!
//! Everything listens on loopback; every child process is stopped when the test ends, however it
//! ends; every wait is bounded.

mod support;

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

/// A node with r1 over HTTP, and over HTTPS on `https` for the audit service's pulls.
fn node_config(dir: &str, port: u16, https: u16, services: &str) -> String {
    format!(
        r#"data_dir = "{dir}"
[consumer]
http = "127.0.0.1:0"
https = "127.0.0.1:{https}"
[peer]
listen = "127.0.0.1:{port}"
[log]
checkpoint_interval_secs = 1
[audit]
certificates = ["audit/collector.pem"]
{services}"#
    )
}

/// The central audit service over the two nodes, with one auditor's API key; returns the key.
fn set_up_audit(d: &Path, nodes: &[(&str, u16)]) -> String {
    let mut config =
        String::from("data_dir = \"audit\"\nanchor = \"registry/anchor.json\"\nlisten = \"127.0.0.1:0\"\n");
    for (node, https) in nodes {
        config.push_str(&format!("[[nodes]]\nid = \"{node}\"\nurl = \"https://127.0.0.1:{https}\"\n"));
    }
    let made = ok(d, &["audit", "api-key", "--name", "Kiểm toán nhà nước"]);
    let key = made.lines().nth(1).map(str::trim).unwrap_or_default().to_owned();
    let snippet = made.split_once("add to audit.toml:\n").map(|(_, s)| s.to_owned()).unwrap_or_default();
    assert!(key.len() >= 40 && snippet.contains("api_key_sha256"), "{made}");
    config.push_str(&snippet);
    std::fs::write(d.join("audit.toml"), config).unwrap();
    let init = ok(d, &["audit", "init", "--config", "audit.toml", "--no-passphrase"]);
    assert!(init.contains("collector.pem"), "{init}");
    key
}

/// Pulls until both nodes reported the exchange, the provider's records included (their
/// witnessed checkpoints may still be on their way): after each try it waits for the next line any process logs (a checkpoint round
/// is logged), at most 250 ms, and for 20 s in all; returns the sharing report.
fn pull_until_collected(api: &str, key: &str, activity: &mpsc::Receiver<()>) -> serde_json::Value {
    let auth = format!("Authorization: Bearer {key}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pulled = curl(&["-X", "POST", "-H", &auth, &format!("{api}/pull")]);
        assert_eq!(pulled.status, 200, "{pulled:#?}");
        let report = curl(&["-H", &auth, &format!("{api}/sharing")]);
        assert_eq!(report.status, 200, "{report:#?}");
        let report: serde_json::Value = serde_json::from_str(&report.body).unwrap();
        let calls = report["pairs"].get(0).map(|p| p["calls"].clone());
        let coverage = curl(&["-H", &auth, &format!("{api}/coverage")]);
        let both = serde_json::from_str::<serde_json::Value>(&coverage.body).unwrap()["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().filter(|n| n["reported"] == true).count() == 2);
        // The provider's records may come a checkpoint after the consumer's: the grant's use is
        // known only from them.
        let used = report["grants"].get(0).map(|g| g["used"].clone());
        if both && calls == Some(serde_json::json!(1)) && used == Some(serde_json::json!(1)) {
            return report;
        }
        assert!(Instant::now() < deadline, "not collected in time: {pulled:#?}\n{report:#}");
        let _ = activity.recv_timeout(Duration::from_millis(250));
    }
}

#[test]
fn curl_calls_a_service_through_two_nodes_run_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    // The registry, its members, subsystems and both node directories; the service published and
    // granted.
    let (activity_tx, activity) = mpsc::channel();
    let Instance { registry, prov_port, cons_port, .. } = set_up_instance(d, &activity_tx, Stderr::Captured);
    let (backend_url, backend_seen) = mock_backend();

    // Both nodes running.
    let service_section = format!("[[service]]\nid = \"{SERVICE}\"\nurl = \"{backend_url}\"\n");
    let (prov_https, cons_https) = (free_port(), free_port());
    let audit_key = set_up_audit(d, &[(PROV_NODE, prov_https), (CONS_NODE, cons_https)]);
    std::fs::write(d.join("prov.toml"), node_config("prov", prov_port, prov_https, &service_section))
        .unwrap();
    std::fs::write(d.join("cons.toml"), node_config("cons", cons_port, cons_https, "")).unwrap();
    let mut prov =
        Daemon::start("provider node", d, &["node", "serve", "--config", "prov.toml"], &activity_tx);
    prov.line_after("peers: ");
    let mut cons =
        Daemon::start("consumer node", d, &["node", "serve", "--config", "cons.toml"], &activity_tx);
    let r1 = cons.line_after("r1 (HTTP): http://");
    let r1 = r1.strip_suffix("/r1/...").unwrap_or_else(|| panic!("r1 line: {r1:?}")).to_owned();
    let url = format!("http://{r1}/r1/{SERVICE}/001090012345");

    // The call, through both nodes to the backend and back.
    let r = call_until_ready(&url, &[&prov, &cons], &activity);
    assert_eq!(r.status, 200, "{r:#?}");
    assert_eq!(r.body, BACKEND_BODY, "{r:#?}");
    let message_id = r.header("x-road-id").unwrap_or_else(|| panic!("no X-Road-Id: {r:#?}")).to_owned();
    assert!(!message_id.is_empty());
    assert!(r.header("x-road-request-hash").is_some_and(|h| !h.is_empty()), "{r:#?}");
    assert_eq!(r.header("x-road-service"), Some(SERVICE), "{r:#?}");
    assert_eq!(r.header("x-road-client"), Some(CONG_DVC), "{r:#?}");
    assert!(r.header("x-road-error").is_none(), "{r:#?}");
    let seen = backend_seen.lock().unwrap().clone();
    assert_eq!(seen.last().map(String::as_str), Some("GET /api/v1/001090012345 HTTP/1.1"), "{seen:?}");

    // No client identifier: refused by the consumer node, as X-Road REST says.
    let bad = curl(&[url.as_str()]);
    assert_eq!(bad.status, 400, "{bad:#?}");
    assert_eq!(bad.header("x-road-error"), Some("client.invalid_client_identifier"), "{bad:#?}");
    assert!(bad.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{bad:#?}");
    let json: serde_json::Value = serde_json::from_str(&bad.body).unwrap_or_else(|e| panic!("{e}: {bad:#?}"));
    assert!(json.is_object(), "{json}");

    // The central audit service pulls both nodes and reports the one exchange, against its grant.
    let mut audit =
        Daemon::start("audit service", d, &["audit", "serve", "--config", "audit.toml"], &activity_tx);
    let audit_api = audit.line_after("audit API: ");
    let audit_api = audit_api.split_whitespace().next().unwrap().trim_end_matches('/').to_owned();
    let refused = curl(&[&format!("{audit_api}/sharing")]);
    assert_eq!(refused.status, 401, "{refused:#?}");
    let report = pull_until_collected(&audit_api, &audit_key, &activity);
    let pair = &report["pairs"][0];
    assert_eq!(
        (pair["consumer"].as_str(), pair["service"].as_str()),
        (Some(CONG_DVC), Some(SERVICE)),
        "{report:#}"
    );
    assert_eq!(pair["successes"], 1, "{report:#}");
    assert_eq!(report["grants"][0]["used"], 1, "{report:#}");
    assert!(
        audit.terminate(Duration::from_secs(20)),
        "the audit service did not stop cleanly:\n{}",
        audit.log()
    );

    // A clean stop on SIGTERM, then both logs verify offline and hold the exchange.
    assert!(
        cons.terminate(Duration::from_secs(20)),
        "the consumer node did not stop cleanly:\n{}",
        cons.log()
    );
    assert!(
        prov.terminate(Duration::from_secs(20)),
        "the provider node did not stop cleanly:\n{}",
        prov.log()
    );
    for (dir, role, node) in [("prov", "provider", PROV_NODE), ("cons", "consumer", CONS_NODE)] {
        let log = format!("{dir}/log");
        let verified = ok(d, &["log", "verify", &log, "--anchor", "registry/anchor.json"]);
        assert!(verified.contains("verified:"), "{verified}");
        assert!(verified.contains(&format!("origin:       {node}")), "{verified}");
        let witnessed = verified
            .lines()
            .find_map(|l| l.strip_prefix("checkpoints:"))
            .and_then(|l| l.split('(').nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok());
        assert!(witnessed.is_some_and(|n| n > 0), "{dir}: no witnessed checkpoint:\n{verified}");
        let shown = ok(d, &["log", "show", &log, "--exchange", &message_id, "--json"]);
        let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
        let records: Vec<&serde_json::Value> =
            shown.as_array().unwrap().iter().map(|r| &r["record"]).collect();
        let directions: Vec<&str> = records.iter().map(|r| r["direction"].as_str().unwrap()).collect();
        assert_eq!(directions, ["request", "response"], "{dir}: {shown:#}");
        for r in &records {
            assert_eq!(r["role"], role, "{dir}: {r:#}");
            assert_eq!(r["client"], CONG_DVC, "{dir}: {r:#}");
            assert_eq!(r["service"], SERVICE, "{dir}: {r:#}");
            assert_eq!(r["node"], node, "{dir}: {r:#}");
        }
        assert_eq!(records[1]["status"], 200, "{dir}: {shown:#}");
    }
    drop(registry);
}
