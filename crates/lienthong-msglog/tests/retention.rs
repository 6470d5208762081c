//! Retention drops old record bytes but keeps every leaf hash: the tree, checkpoints and proofs
//! still verify, and nothing a checkpoint does not cover is pruned.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lienthong_msglog::merkle::verify_inclusion;
use lienthong_msglog::retention::{Retention, apply};
use lienthong_msglog::{CheckpointSigner, LogConfig, MemStore, MessageLog};
use lienthong_pki::{CertificateAuthority, Csr, KeyAlgorithm, PrivateKey, Validity};
use lienthong_proto::msglog::v1 as pb;
use lienthong_types::NodeId;

const DAY_MS: i64 = 86_400_000;

fn signer() -> CheckpointSigner {
    let node: NodeId = "VN/GOV/000.00.00.G01/ss1".parse().unwrap();
    let ca_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let ca =
        CertificateAuthority::init("VN".parse().unwrap(), &ca_key, Validity::days(10), SystemTime::now())
            .unwrap();
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let certificate = ca
        .issue_node(&Csr::for_node(&key, &node).unwrap(), &node, Validity::days(10), SystemTime::now())
        .unwrap();
    CheckpointSigner { origin: node.to_string(), key: Arc::new(key), certificate }
}

#[tokio::test]
async fn old_records_lose_their_bytes_but_stay_provable() {
    let log = MessageLog::open(Arc::new(MemStore::new()), LogConfig::default()).unwrap();
    let now = 100 * DAY_MS;
    // Records 0..10 are 40 days old, 10..20 are 10 days old.
    for i in 0..20i64 {
        let age = if i < 10 { 40 } else { 10 };
        let r = pb::LogRecord {
            message_id: format!("m{i}"),
            logged_at_ms: now - age * DAY_MS,
            ..Default::default()
        };
        log.append(&r).await.unwrap();
    }
    let keep_30_days = Retention { keep: Duration::from_secs(30 * 86_400) };

    // Nothing is covered by a checkpoint yet: nothing is pruned.
    assert_eq!(apply(&log, keep_30_days, now).unwrap(), 0);
    let signer = signer();
    log.checkpoint(&signer, now).unwrap();
    assert_eq!(apply(&log, keep_30_days, now).unwrap(), 10);
    assert_eq!(apply(&log, keep_30_days, now).unwrap(), 0, "pruning again finds nothing");

    let store = log.store();
    assert!(store.record(9).unwrap().is_none());
    assert!(store.record(10).unwrap().is_some());
    assert_eq!(store.size().unwrap(), 20);
    let head = log.head();
    for index in [0, 9, 10, 19] {
        let leaf = store.node(0, index).unwrap().unwrap();
        let proof = log.inclusion_proof(index, head.size).unwrap();
        verify_inclusion(&leaf, index, head.size, &proof, &head.root).unwrap();
    }
    // The log keeps growing on top of pruned records.
    log.append(&pb::LogRecord { message_id: "m20".into(), logged_at_ms: now, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(log.head().size, 21);
}
