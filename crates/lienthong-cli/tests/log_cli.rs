//! `lienthong log ...` through the real binary, on a log the test builds with the library: a
//! durable log with a node-signed checkpoint co-signed by a "registry" key listed in an anchor
//! file. Verify, show an exchange, export and verify the archive; then tamper with a record and
//! see verify name it; and a directory without a log is refused without creating one.

#![allow(clippy::print_stderr)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::SystemTime;

use lienthong_globalconf::{Anchor, ConfKey};
use lienthong_msglog::checkpoint::{self, Checkpoint};
use lienthong_msglog::record::attach_body;
use lienthong_msglog::{BodyPolicy, CheckpointSigner, LOG_FILE, LogConfig, LogStore, MessageLog, RedbStore};
use lienthong_pki::{BodyKey, CertificateAuthority, Csr, KeyAlgorithm, PrivateKey, Validity};
use lienthong_proto::msglog::v1 as pb;
use lienthong_types::{ClientId, NodeId, ServiceId};
use redb::ReadableTable;

const NODE: &str = "VN/GOV/000.00.00.G22/ss1";
const CLIENT: &str = "VN/GOV/000.00.00.G22/consumer";
const SERVICE: &str = "VN/GOV/000.00.00.G12/provider/getPerson";
const SECRET_BODY: &str = "secret person data";

fn lienthong(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lienthong")).args(args).current_dir(dir).output().expect("run lienthong")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = lienthong(dir, args);
    assert!(out.status.success(), "{args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = lienthong(dir, args);
    assert!(!out.status.success(), "{args:?} should fail:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

fn record(exchange: u32, response: bool, policy: &BodyPolicy) -> pb::LogRecord {
    let client: ClientId = CLIENT.parse().unwrap();
    let service: ServiceId = SERVICE.parse().unwrap();
    let node: NodeId = NODE.parse().unwrap();
    let mut r = pb::LogRecord {
        message_id: format!("exchange-{exchange}"),
        request_id: format!("request-{exchange}"),
        direction: if response { pb::Direction::Response } else { pb::Direction::Request } as i32,
        role: pb::Role::Consumer as i32,
        client: Some((&client).into()),
        service: Some((&service).into()),
        method: "GET".into(),
        path: format!("/person/{exchange}"),
        node: Some((&node).into()),
        message_time_ms: 1_750_000_000_000 + i64::from(exchange) * 10,
        logged_at_ms: 1_750_000_000_001 + i64::from(exchange) * 10,
        status: if response { 200 } else { 0 },
        headers_sha256: vec![0xab; 32],
        ..Default::default()
    };
    attach_body(&mut r, SECRET_BODY.as_bytes(), policy).unwrap();
    r
}

/// Builds the node's log in `dir/log` and the anchor in `dir/anchor.json`.
fn build(dir: &Path) {
    let now = SystemTime::now();
    let node: NodeId = NODE.parse().unwrap();
    let ca_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let ca =
        CertificateAuthority::init(node.owner.instance.clone(), &ca_key, Validity::days(365), now).unwrap();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let certificate =
        ca.issue_node(&Csr::for_node(&key, &node).unwrap(), &node, Validity::days(30), now).unwrap();
    let signer = CheckpointSigner { origin: NODE.into(), key: Arc::new(key), certificate };

    // The registry's configuration-signing key, in the anchor the auditor is given.
    let registry_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let conf_key = ConfKey::new(registry_key.public_key(), now, None);
    let anchor = Anchor {
        instance: node.owner.instance.clone(),
        conf_urls: vec!["https://registry.vn.invalid/globalconf".into()],
        signing_keys: vec![conf_key.clone()],
        generated_at: now,
    };
    std::fs::write(dir.join("anchor.json"), anchor.to_json()).unwrap();

    let store: Arc<dyn LogStore> = Arc::new(RedbStore::open_dir(&dir.join("log")).unwrap());
    let log = MessageLog::open(store.clone(), LogConfig::default()).unwrap();
    let body_key = Arc::new(BodyKey::generate().unwrap().0);
    std::fs::write(dir.join("body-key-id"), body_key.id()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        for exchange in 0..6 {
            let policy = match exchange {
                3 => BodyPolicy::Encrypted(body_key.clone()),
                4 => BodyPolicy::MetadataOnly,
                _ => BodyPolicy::Full,
            };
            log.append(&record(exchange, false, &policy)).await.unwrap();
            log.append(&record(exchange, true, &policy)).await.unwrap();
        }
    });
    let mut signed = log.checkpoint(&signer, 1_750_000_001_000).unwrap();
    let size = Checkpoint::decode(&signed).unwrap().size;
    assert_eq!(size, 12);
    checkpoint::add_witness_signature(&mut signed, &registry_key, conf_key.id, "VN", 1_750_000_002_000)
        .unwrap();
    store.put_checkpoint(size, &signed).unwrap();
    // Two more records after the checkpoint: logged, not signed yet.
    runtime.block_on(async {
        log.append(&record(6, false, &BodyPolicy::Full)).await.unwrap();
        log.append(&record(6, true, &BodyPolicy::Full)).await.unwrap();
    });
    log.close();
}

#[test]
fn an_auditor_verifies_shows_and_exports_a_node_log() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    build(d);

    // The whole log, with the anchor's key for the co-signature.
    let out = ok(d, &["log", "verify", "log", "--anchor", "anchor.json"]);
    eprintln!("{out}");
    assert!(out.contains(&format!("origin:       {NODE}")), "{out}");
    assert!(out.contains("records:      14\n"), "{out}");
    assert!(out.contains("checkpoints:  1 (1 witnessed)"), "{out}");
    assert!(out.contains("records 12..14 are not covered"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("root:") && l.len() == "root:         ".len() + 64), "{out}");
    // Without the anchor the co-signature cannot be checked.
    let err = fails(d, &["log", "verify", "log"]);
    assert!(err.contains("--anchor"), "{err}");

    // One exchange, decoded; the body is never printed, encrypted or not.
    let out = ok(d, &["log", "show", "log", "--exchange", "exchange-3"]);
    eprintln!("{out}");
    assert!(out.contains("record 6\n") && out.contains("record 7\n"), "{out}");
    assert!(out.contains("direction:      request (consumer)"), "{out}");
    assert!(out.contains("direction:      response (consumer)"), "{out}");
    assert!(out.contains(&format!("client:         {CLIENT}")), "{out}");
    assert!(out.contains(&format!("service:        {SERVICE}")), "{out}");
    assert!(out.contains("method, path:   GET /person/3"), "{out}");
    assert!(out.contains("status:         200"), "{out}");
    assert!(out.contains(&format!("headers sha256: {}", "ab".repeat(32))), "{out}");
    let key_id = std::fs::read_to_string(d.join("body-key-id")).unwrap();
    assert!(
        out.contains(&format!("body policy:    encrypted (kept: encrypted (key {key_id}); not shown)")),
        "{out}"
    );
    assert!(out.contains("logged at:      2025-"), "{out}");
    assert!(!out.contains(SECRET_BODY), "{out}");
    let out = ok(d, &["log", "show", "log", "--exchange", "exchange-0", "--json"]);
    assert!(!out.contains(SECRET_BODY), "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let records = json.as_array().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["index"], 0);
    assert_eq!(records[1]["record"]["direction"], "response");
    assert_eq!(records[1]["record"]["status"], 200);
    assert_eq!(records[1]["record"]["body_policy"], "full");
    assert_eq!(records[1]["record"]["body_length"], SECRET_BODY.len());
    assert_eq!(records[1]["record"]["client"], CLIENT);
    let err = fails(d, &["log", "show", "log", "--exchange", "no-such-exchange"]);
    assert!(err.contains("no records of exchange"), "{err}");

    // Export a range, verify it offline.
    let out = ok(d, &["log", "export", "log", "--from", "2", "--to", "9", "--out", "range.archive"]);
    assert!(out.contains("checkpoint of size 12"), "{out}");
    let out = ok(d, &["log", "verify-archive", "range.archive", "--anchor", "anchor.json"]);
    eprintln!("{out}");
    assert!(out.contains("records:      2..9 (7 records)"), "{out}");
    assert!(out.contains("witnessed:    1 co-signature(s) verified"), "{out}");
    let err = fails(d, &["log", "verify-archive", "range.archive"]);
    assert!(err.contains("--anchor"), "{err}");
    // Never overwrites; the unsigned tail cannot be exported yet.
    let err = fails(d, &["log", "export", "log", "--from", "0", "--to", "1", "--out", "range.archive"]);
    assert!(err.contains("refusing to overwrite"), "{err}");
    let err = fails(d, &["log", "export", "log", "--from", "10", "--to", "13", "--out", "tail.archive"]);
    assert!(err.contains("no checkpoint covers records 10..13"), "{err}");
    assert!(!d.join("tail.archive").exists());

    // A changed archive is refused.
    let mut bytes = std::fs::read(d.join("range.archive")).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x20;
    std::fs::write(d.join("changed.archive"), &bytes).unwrap();
    let err = fails(d, &["log", "verify-archive", "changed.archive", "--anchor", "anchor.json"]);
    assert!(err.contains("does not verify"), "{err}");
}

#[test]
fn verify_names_a_tampered_record() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    build(d);
    const RECORDS: redb::TableDefinition<'static, u64, &'static [u8]> = redb::TableDefinition::new("records");
    {
        let db = redb::Database::open(d.join("log").join(LOG_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(RECORDS).unwrap();
            let mut bytes = t.get(5).unwrap().unwrap().value().to_vec();
            bytes[10] ^= 0x01;
            t.insert(5, bytes.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let err = fails(d, &["log", "verify", "log", "--anchor", "anchor.json"]);
    eprintln!("{err}");
    assert!(err.contains("does not verify: record 5: does not match its leaf hash"), "{err}");
}

#[test]
fn a_directory_without_a_log_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("empty")).unwrap();
    for args in [
        &["log", "verify", "empty"][..],
        &["log", "show", "empty", "--exchange", "x"],
        &["log", "export", "empty", "--from", "0", "--to", "1", "--out", "a.archive"],
        &["log", "verify", "missing"],
    ] {
        let err = fails(d, args);
        assert!(err.contains("no message log here"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read_dir(d.join("empty")).unwrap().count(), 0, "nothing created");
    assert!(!d.join("missing").exists(), "no directory created");
    assert!(!d.join("a.archive").exists());
}

#[test]
fn a_refusal_summary_is_shown_with_its_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let store: Arc<dyn LogStore> = Arc::new(RedbStore::open_dir(&d.join("log")).unwrap());
    let log = MessageLog::open(store, LogConfig::default()).unwrap();
    let summary = pb::LogRecord {
        message_id: "refusals-1".into(),
        direction: pb::Direction::Request as i32,
        role: pb::Role::Provider as i32,
        node: Some((&NODE.parse::<NodeId>().unwrap()).into()),
        message_time_ms: 1_750_000_000_000,
        logged_at_ms: 1_750_000_060_000,
        refusal_summary: Some(pb::RefusalSummary {
            kind: pb::RefusalKind::PeerTls as i32,
            source: "203.0.113.7".into(),
            other_sources: false,
            interval_start_ms: 1_750_000_000_000,
            interval_end_ms: 1_750_000_060_000,
            first_seen_ms: 1_750_000_000_001,
            last_seen_ms: 1_750_000_059_999,
            recorded: 100,
            suppressed: vec![pb::FaultCount {
                code: "server.serverproxy.ssl_authentication_failed".into(),
                count: 14_900,
            }],
        }),
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(log.append(&summary)).unwrap();
    log.close();

    let out = ok(d, &["log", "show", "log", "--exchange", "refusals-1"]);
    assert!(out.contains("refusals of:    203.0.113.7 (peer_tls), 100 recorded one by one"), "{out}");
    assert!(out.contains("counted only:   14900 x server.serverproxy.ssl_authentication_failed"), "{out}");
    let out = ok(d, &["log", "show", "log", "--exchange", "refusals-1", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &json[0]["record"]["refusal_summary"];
    assert_eq!(s["kind"], "peer_tls");
    assert_eq!(s["suppressed"]["server.serverproxy.ssl_authentication_failed"], 14_900);
    assert!(json[0]["record"].get("source_address").is_none(), "only on refusals: {out}");
}
