//! `lienthong demo --exit` as a script runs it: the national and the provincial instance come up
//! from nothing, the traffic crosses instances, every exchange is logged on both sides, one call
//! is denied and one grant never used, both audits see the exchanges, and afterwards every
//! node's log verifies with `lienthong log verify`. A second run reuses the directory.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn lienthong(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(args)
        .current_dir(dir)
        .env_remove("LIENTHONG_KEY_PASSPHRASE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run lienthong")
}

fn demo(dir: &Path, exchanges: &str) -> Value {
    let out = lienthong(dir, &["demo", "--exchanges", exchanges, "--exit", "--json", "--dir", "demo"]);
    assert!(
        out.status.success(),
        "demo failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the summary is JSON")
}

fn pair<'a>(report: &'a Value, client: &str, service: &str) -> &'a Value {
    report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["consumer"] == client && p["service"] == service)
        .unwrap_or_else(|| panic!("no pair {client} -> {service} in {report:#}"))
}

#[test]
fn the_demo_runs_both_instances_and_every_log_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let s = demo(d, "40");
    assert_eq!(
        (s["exchanges"].as_u64(), s["succeeded"].as_u64(), s["denied"].as_u64()),
        (Some(40), Some(39), Some(1))
    );
    assert_eq!(s["logged_on_both_sides"], 40, "{s:#}");
    assert!(s["failed"].as_array().unwrap().is_empty());

    // The cross-instance call is in both instances' audits; the grants never used are listed.
    let cross = ("VN-NA/GOV/000.00.00.H40/so-tu-phap", "VN/GOV/000.00.00.G01/dancu/tra-cuu-cong-dan");
    let national = pair(&s["sharing"]["VN"], cross.0, cross.1);
    let provincial = pair(&s["sharing"]["VN-NA"], cross.0, cross.1);
    assert_eq!(national["calls"], provincial["calls"]);
    assert!(national["successes"].as_u64().unwrap() > 0);
    let denied = pair(&s["sharing"]["VN"], "VN-NA/GOV/000.00.00.H40/so-khdt", cross.1);
    assert_eq!(denied["denials"], 1);
    let unused: Vec<&Value> =
        s["sharing"]["VN-NA"]["grants"].as_array().unwrap().iter().filter(|g| g["used"] == 0).collect();
    assert_eq!(unused.len(), 1, "{s:#}");
    assert!(s["curl"].as_str().unwrap().starts_with("curl -H 'X-Road-Client: VN-NA/"));

    // Every node's log verifies offline against its instance's anchor.
    for (node, anchor) in [
        ("vn/bca", "vn/registry/anchor.json"),
        ("vn/btc", "vn/registry/anchor.json"),
        ("vn/vpcp", "vn/registry/anchor.json"),
        ("na/lgsp-na", "na/registry/anchor.json"),
    ] {
        let log = format!("demo/{node}/node/log");
        let anchor = format!("demo/{anchor}");
        let out = lienthong(d, &["log", "verify", &log, "--anchor", &anchor]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{node}: {text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("verified:"), "{node}: {text}");
    }

    // A second run reuses everything (keys, ports, logs) and adds to the same history.
    let again = demo(d, "8");
    assert_eq!(again["logged_on_both_sides"], 8, "{again:#}");
    let total = pair(&again["sharing"]["VN"], cross.0, cross.1)["calls"].as_u64().unwrap();
    assert!(total > national["calls"].as_u64().unwrap(), "the audit keeps the first run's exchanges too");
}
