//! `lienthong audit bundle` and `audit verify` through the real binary, on the standard testkit
//! topology: an exchange, the nodes stopped (their last checkpoint witnessed at shutdown), a
//! bundle built from the two node directories and verified with the anchor file; a node still
//! running is named as the reason its log cannot be read, and a changed byte fails verification.

use std::path::Path;
use std::process::{Command, Output};

use lienthong_testkit::names::{CONG_DAN, CONG_DVC};
use lienthong_testkit::{Topology, within};

const MESSAGE_ID: &str = "vpcp-2026-cli-0001";

fn lienthong(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run lienthong")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = lienthong(dir, args);
    assert!(out.status.success(), "{args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns (stdout, stderr).
fn fails(dir: &Path, args: &[&str]) -> (String, String) {
    let out = lienthong(dir, args);
    assert!(!out.status.success(), "{args:?} should fail:\n{}", String::from_utf8_lossy(&out.stdout));
    (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_and_verify_an_exchange_from_the_command_line() {
    let mut t = Topology::standard().await;
    let mut req = Topology::r1("GET", &format!("/r1/{CONG_DAN}/cong-dan/001090012345"), "");
    req.headers_mut().insert("x-road-id", MESSAGE_ID.parse().unwrap());
    assert_eq!(t.call(0, req).await.status(), 200);
    let provider = [1, 2]
        .into_iter()
        .find(|&i| t.records(i).iter().any(|r| r.message_id == MESSAGE_ID))
        .expect("a provider node logged the exchange");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (consumer_dir, provider_dir) = (t.node_dir(0), t.node_dir(provider));
    let (consumer_dir, provider_dir) = (consumer_dir.to_str().unwrap(), provider_dir.to_str().unwrap());
    let args = [
        "audit",
        "bundle",
        "--node-dir",
        consumer_dir,
        "--node-dir",
        provider_dir,
        "--exchange",
        MESSAGE_ID,
        "--out",
        "evidence.bin",
    ];

    // A running node holds its log.
    let (_, err) = fails(dir, &args);
    assert!(err.contains("held open by a running node"), "{err}");
    assert!(!dir.join("evidence.bin").exists());

    // Stopped, each node's last checkpoint is witnessed by the registry.
    t.stop(0).await;
    t.stop(provider).await;
    let out = ok(dir, &args);
    assert!(
        out.contains("wrote an evidence bundle of 1 exchange(s), 4 record(s) from 2 node log(s)"),
        "{out}"
    );
    std::fs::write(dir.join("anchor.json"), t.registry.anchor().to_json()).unwrap();

    let out = ok(dir, &["audit", "verify", "evidence.bin", "--anchor", "anchor.json"]);
    assert!(out.starts_with("evidence bundle (lienthong-evidence-bundle-v1), instance VN: VALID"), "{out}");
    assert!(out.contains(&format!("exchange {MESSAGE_ID}")), "{out}");
    let json = ok(dir, &["audit", "verify", "evidence.bin", "--anchor", "anchor.json", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["exchanges"][0]["message_id"], MESSAGE_ID);
    assert_eq!(v["sides"].as_array().unwrap().len(), 2);

    // One changed byte (inside the first record's bytes): not valid, and why.
    let mut bytes = std::fs::read(dir.join("evidence.bin")).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(dir.join("altered.bin"), &bytes).unwrap();
    let (out, err) = fails(dir, &["audit", "verify", "altered.bin", "--anchor", "anchor.json"]);
    assert!(out.contains("NOT VALID"), "{out}");
    assert!(out.contains("FAIL"), "{out}");
    assert!(err.contains("evidence bundle altered.bin is NOT valid"), "{err}");
    let (json, _) = fails(dir, &["audit", "verify", "altered.bin", "--anchor", "anchor.json", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["valid"], false);

    // An existing file is never overwritten.
    let (_, err) = fails(dir, &args);
    assert!(err.contains("already exists"), "{err}");

    // The consumer's log, queried: its request and response of the exchange, with proofs.
    let log = format!("{consumer_dir}/log");
    let out = ok(dir, &["audit", "query", "--log", &log, "--exchange", MESSAGE_ID, "--format", "ndjson"]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines.iter().all(|l| l["message_id"] == MESSAGE_ID && l["witnessed"] == true), "{out}");
    let csv = ok(dir, &["audit", "query", "--log", &log, "--client", CONG_DVC, "--format", "csv"]);
    assert!(csv.starts_with("leaf_index,"), "{csv}");
    let (_, err) = fails(dir, &["audit", "query", "--log", &log, "--status", "maybe"]);
    assert!(err.contains("invalid_filter"), "{err}");
    within(t.shutdown()).await;
}
