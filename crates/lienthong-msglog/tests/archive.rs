//! Archives (`export`, `verify_archive`, `verify_archive_bytes`): an exported range verifies
//! offline with nothing but the archive and the anchor's keys; any one-byte change of the
//! encoded archive is refused, except in the two informative timestamps no signature covers;
//! the checkpoint chosen is the smallest witnessed one that covers the range; pruned records,
//! uncovered ranges and a damaged store are refused at export.

#![allow(clippy::print_stderr)]

mod support;

use std::sync::Arc;

use lienthong_msglog::checkpoint::{self, Checkpoint};
use lienthong_msglog::merkle::{self, Frontier};
use lienthong_msglog::record::attach_body;
use lienthong_msglog::store::StoreNodes;
use lienthong_msglog::{
    ARCHIVE_FORMAT, BodyPolicy, CheckpointSigner, Entry, ExportError, LogConfig, LogStore, MemStore,
    MessageLog, VerifyError, WitnessKey, export, verify_archive, verify_archive_bytes,
};
use lienthong_pki::{Fingerprint, KeyAlgorithm, PrivateKey};
use lienthong_proto::msglog::v1 as pb;
use prost::Message;

const NODE: &str = "VN/GOV/000.00.00.G22/ss1";
const NOW_MS: i64 = 1_750_000_000_000;

fn witness() -> (PrivateKey, WitnessKey) {
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let public = key.public_key();
    (key, (Fingerprint::of(public.raw()), public))
}

fn record(i: u64) -> pb::LogRecord {
    let mut r = pb::LogRecord {
        message_id: format!("ex-{}", i / 2),
        direction: if i.is_multiple_of(2) { pb::Direction::Request } else { pb::Direction::Response } as i32,
        role: pb::Role::Provider as i32,
        method: "POST".into(),
        path: format!("/p/{i}"),
        logged_at_ms: NOW_MS + i as i64,
        ..Default::default()
    };
    attach_body(&mut r, format!("body {i}").as_bytes(), &BodyPolicy::Full).unwrap();
    r
}

fn append(store: &dyn LogStore, from: u64, to: u64) {
    let entries: Vec<Entry> = (from..to).map(|i| Entry::new(&record(i))).collect();
    let mut frontier = Frontier::from_store(&StoreNodes(store), from).unwrap();
    let nodes: Vec<_> = entries.iter().flat_map(|e| frontier.append(merkle::leaf_hash(&e.bytes))).collect();
    store.append(from, &entries, &nodes).unwrap();
}

fn checkpoint(store: &Arc<dyn LogStore>, signer: &CheckpointSigner) {
    let log = MessageLog::open(store.clone(), LogConfig::default()).unwrap();
    log.checkpoint(signer, NOW_MS).unwrap();
    log.close();
}

/// Adds a witness co-signature to the stored checkpoint of `size`.
fn cosign(store: &dyn LogStore, size: u64, key: &PrivateKey, id: Fingerprint) {
    let mut signed = store
        .checkpoints()
        .unwrap()
        .into_iter()
        .find(|c| Checkpoint::decode(c).unwrap().size == size)
        .unwrap();
    checkpoint::add_witness_signature(&mut signed, key, id, "VN", NOW_MS + 1000).unwrap();
    store.put_checkpoint(size, &signed).unwrap();
}

/// A log with checkpoints at each of `sizes`, the ones in `witnessed` co-signed.
fn log(sizes: &[u64], witnessed: &[u64], witness: &(PrivateKey, WitnessKey)) -> Arc<dyn LogStore> {
    let signer = support::signer_for(NODE, KeyAlgorithm::Ed25519);
    let store: Arc<dyn LogStore> = Arc::new(MemStore::new());
    let mut at = 0;
    for &size in sizes {
        append(&*store, at, size);
        at = size;
        checkpoint(&store, &signer);
        if witnessed.contains(&size) {
            cosign(&*store, size, &witness.0, witness.1.0);
        }
    }
    store
}

#[test]
fn an_exported_range_verifies_offline() {
    let w = witness();
    let store = log(&[10, 20, 30], &[20], &w);
    let archive = export(&*store, 3, 17).unwrap();
    assert_eq!(archive.format, ARCHIVE_FORMAT);
    assert_eq!(archive.records.len(), 14);
    assert_eq!(archive.proofs.len(), 14);
    for (i, r) in (3..).zip(&archive.records) {
        assert_eq!(*r, store.record(i).unwrap().unwrap(), "exact stored bytes of record {i}");
    }

    // Through the encoded form, as a file would carry it.
    let bytes = archive.encode_to_vec();
    let report = verify_archive_bytes(&bytes, Some(std::slice::from_ref(&w.1))).unwrap();
    assert_eq!(report.origin, NODE);
    assert_eq!((report.first_index, report.records), (3, 14));
    assert_eq!(report.checkpoint.size, 20);
    assert_eq!(report.checkpoint.root, merkle::root(&StoreNodes(&*store), 20).unwrap());
    assert_eq!(report.witnessed, 1);

    // Without the anchor, its co-signature cannot be checked: refused, naming the flag.
    let err = verify_archive(&archive, None).unwrap_err();
    assert!(matches!(err, VerifyError::WitnessKeysNeeded { size: 20, count: 1 }), "{err:?}");
    // With a key the anchor does not list.
    let err = verify_archive(&archive, Some(&[witness().1])).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Checkpoint { reason, .. } if reason.contains("does not list")),
        "{err:?}"
    );
}

#[test]
fn the_smallest_covering_checkpoint_is_chosen_a_witnessed_one_first() {
    let w = witness();
    let store = log(&[10, 20, 30, 40], &[30], &w);
    let size_for = |from, to| export(&*store, from, to).unwrap().proofs[0].tree_size;
    assert_eq!(size_for(0, 5), 30, "witnessed beats smaller");
    assert_eq!(size_for(0, 30), 30);
    assert_eq!(size_for(30, 31), 40, "no witnessed one covers it: the smallest that does");

    let store = log(&[10, 20, 30], &[], &w);
    assert_eq!(export(&*store, 9, 10).unwrap().proofs[0].tree_size, 10);
    assert_eq!(export(&*store, 9, 11).unwrap().proofs[0].tree_size, 20);
    // Without co-signatures no anchor is needed.
    let archive = export(&*store, 0, 30).unwrap();
    assert_eq!(verify_archive(&archive, None).unwrap().records, 30);
}

#[test]
fn export_refuses_what_it_cannot_prove() {
    let w = witness();
    let store = log(&[10, 20], &[], &w);
    append(&*store, 20, 25);
    let err = export(&*store, 18, 22).unwrap_err();
    assert!(matches!(err, ExportError::NoCheckpoint { from: 18, to: 22, latest: Some(20) }), "{err:?}");
    assert!(matches!(export(&*store, 5, 5), Err(ExportError::Range { .. })));
    assert!(matches!(export(&*store, 5, 26), Err(ExportError::Range { size: 25, .. })));
    store.prune(4).unwrap();
    let err = export(&*store, 2, 8).unwrap_err();
    assert!(matches!(err, ExportError::Pruned { index: 2 }), "{err:?}");
    assert_eq!(export(&*store, 4, 8).unwrap().records.len(), 4);

    let empty: Arc<dyn LogStore> = Arc::new(MemStore::new());
    append(&*empty, 0, 3);
    let err = export(&*empty, 0, 3).unwrap_err();
    assert!(err.to_string().contains("the log has no checkpoint"), "{err}");
}

#[test]
fn export_from_a_damaged_store_is_refused() {
    let w = witness();
    let store = log(&[10], &[], &w);
    // Rebuild the same records with record 4 changed, keeping the original checkpoint.
    let damaged: Arc<dyn LogStore> = Arc::new(MemStore::new());
    let mut entries: Vec<Entry> = (0..10).map(|i| Entry::new(&record(i))).collect();
    entries[4].bytes[3] ^= 1;
    let mut frontier = Frontier::new();
    let nodes: Vec<_> = entries.iter().flat_map(|e| frontier.append(merkle::leaf_hash(&e.bytes))).collect();
    damaged.append(0, &entries, &nodes).unwrap();
    for c in store.checkpoints().unwrap() {
        damaged.put_checkpoint(10, &c).unwrap();
    }
    for der in store.certificates().unwrap() {
        damaged.put_certificate(&der).unwrap();
    }
    // Records 0..4 are unchanged, but their proofs pass through the changed one's subtree.
    let err = export(&*damaged, 0, 4).unwrap_err();
    assert!(matches!(err, ExportError::Inconsistent(VerifyError::ArchiveRecord { index: 0, .. })), "{err:?}");
    assert!(err.to_string().contains("run `lienthong log verify`"), "{err}");
}

#[test]
fn every_one_byte_change_is_refused() {
    let w = witness();
    let store = log(&[6], &[6], &w);
    let archive = export(&*store, 1, 4).unwrap();
    let bytes = archive.encode_to_vec();
    let keys = [w.1.clone()];
    verify_archive_bytes(&bytes, Some(&keys)).unwrap();
    for pos in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut changed = bytes.clone();
            changed[pos] ^= mask;
            assert!(
                verify_archive_bytes(&changed, Some(&keys)).is_err(),
                "byte {pos} of {} ^ {mask:#04x} was accepted",
                bytes.len()
            );
        }
    }
}

#[test]
fn changed_records_and_proofs_are_named() {
    let w = witness();
    let store = log(&[16], &[], &w);
    let archive = export(&*store, 2, 12).unwrap();

    let mut a = archive.clone();
    a.records.swap(3, 4);
    let err = verify_archive(&a, None).unwrap_err();
    assert!(matches!(err, VerifyError::ArchiveRecord { index: 5, .. }), "{err:?}");
    assert!(err.to_string().starts_with("archive record 5: is not in the checkpoint's tree"), "{err}");

    let mut a = archive.clone();
    a.records.remove(7);
    a.proofs.remove(7);
    let err = verify_archive(&a, None).unwrap_err();
    assert!(matches!(err, VerifyError::ArchiveRecord { index: 9, .. }), "{err:?}");

    let mut a = archive.clone();
    a.first_index = 3;
    assert!(matches!(verify_archive(&a, None), Err(VerifyError::ArchiveRecord { index: 3, .. })));

    let mut a = archive.clone();
    a.proofs[0].hashes[1][0] ^= 1;
    assert!(matches!(verify_archive(&a, None), Err(VerifyError::ArchiveRecord { index: 2, .. })));

    let mut a = archive.clone();
    a.format = "lienthong-log-archive-v2".into();
    assert!(matches!(verify_archive(&a, None), Err(VerifyError::Archive(_))));

    let mut a = archive.clone();
    a.origin = "VN/GOV/000.00.00.G22/ss2".into();
    assert!(matches!(verify_archive(&a, None), Err(VerifyError::Archive(_))));

    let mut a = archive.clone();
    a.records.clear();
    a.proofs.clear();
    assert!(matches!(verify_archive(&a, None), Err(VerifyError::Archive(_))));

    // The certificate of another node cannot stand in for the origin's.
    let mut a = archive.clone();
    let other = support::signer_for("VN/GOV/000.00.00.G22/ss2", KeyAlgorithm::Ed25519);
    a.log_certificate = other.certificate.der().to_vec();
    let err = verify_archive(&a, None).unwrap_err();
    assert!(matches!(&err, VerifyError::Checkpoint { size: 16, .. }), "{err:?}");
}

#[test]
fn a_checkpoint_re_signed_by_another_node_key_is_refused() {
    // An archive whose checkpoint (for NODE) is signed by another node's key, with that
    // node's certificate: the certificate is not the origin's.
    let w = witness();
    let store = log(&[8], &[], &w);
    let mut archive = export(&*store, 0, 8).unwrap();
    let cp = Checkpoint::decode(archive.checkpoint.as_ref().unwrap()).unwrap();
    let other = support::signer_for("VN/GOV/000.00.00.G22/ss2", KeyAlgorithm::EcdsaP256);
    archive.checkpoint =
        Some(checkpoint::sign_checkpoint(&cp, &other.key, other.certificate.fingerprint(), NOW_MS).unwrap());
    archive.log_certificate = other.certificate.der().to_vec();
    let err = verify_archive(&archive, None).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Checkpoint { reason, .. } if reason.contains("not of node")),
        "{err:?}"
    );
}
