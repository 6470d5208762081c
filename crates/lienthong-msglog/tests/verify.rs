//! Offline verification of a whole store (`verify_store`): an intact log verifies, and every
//! kind of tampering is found and named: a changed record, a dropped record, two swapped records,
//! a truncated log, a forged checkpoint, a changed tree node, a deleted record among kept ones,
//! witness co-signatures without or with the wrong keys, undecodable records.
//!
//! Tampering is done on the redb file itself (tables as in `store.rs`), either naively (only the
//! records) or thoroughly (the tree recomputed to match), and on large logs through a wrapper
//! store that serves altered data.

#![allow(clippy::print_stderr)]

#[macro_use]
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use lienthong_msglog::checkpoint::{self, Checkpoint};
use lienthong_msglog::merkle::{self, Frontier, Hash};
use lienthong_msglog::record::attach_body;
use lienthong_msglog::store::StoreNodes;
use lienthong_msglog::{
    BodyPolicy, CheckpointSigner, Entry, LOG_FILE, LogConfig, LogError, LogStore, MemStore, MessageLog,
    RedbStore, Report, VerifyError, WitnessKey, verify_store,
};
use lienthong_pki::{Fingerprint, KeyAlgorithm, PrivateKey};
use lienthong_proto::msglog::v1 as pb;
use lienthong_types::{ClientId, NodeId, ServiceId};
use prost::Message;
use redb::{Database, ReadableTable, TableDefinition};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const NODE: &str = "VN/GOV/000.00.00.G22/ss1";
const NOW_MS: i64 = 1_750_000_000_000;

fn signer_for(node: &str) -> CheckpointSigner {
    support::signer_for(node, KeyAlgorithm::Ed25519)
}

fn signer() -> CheckpointSigner {
    signer_for(NODE)
}

/// A witness (registry) key and its anchor entry.
fn witness() -> (PrivateKey, WitnessKey) {
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let public = key.public_key();
    (key, (Fingerprint::of(public.raw()), public))
}

/// Record `i`: half requests, half responses of exchanges `ex-{i/2}`, with a body of `pad` bytes.
fn record(i: u64, pad: usize) -> pb::LogRecord {
    let client: ClientId = "VN/GOV/000.00.00.G22/consumer".parse().unwrap();
    let service: ServiceId = "VN/GOV/000.00.00.G12/provider/getPerson".parse().unwrap();
    let node: NodeId = NODE.parse().unwrap();
    let mut r = pb::LogRecord {
        message_id: format!("ex-{}", i / 2),
        request_id: format!("req-{}", i / 2),
        direction: if i.is_multiple_of(2) { pb::Direction::Request } else { pb::Direction::Response } as i32,
        role: pb::Role::Consumer as i32,
        client: Some((&client).into()),
        service: Some((&service).into()),
        method: "GET".into(),
        path: format!("/person/{i}"),
        node: Some((&node).into()),
        logged_at_ms: NOW_MS + i as i64,
        status: if i.is_multiple_of(2) { 0 } else { 200 },
        ..Default::default()
    };
    attach_body(&mut r, &vec![b'a' + (i % 26) as u8; pad], &BodyPolicy::Full).unwrap();
    r
}

/// Appends entries in one batch, with the tree nodes they complete, straight to the store.
fn append_entries(store: &dyn LogStore, entries: &[Entry]) {
    let size = store.size().unwrap();
    let mut frontier = Frontier::from_store(&StoreNodes(store), size).unwrap();
    let nodes: Vec<_> = entries.iter().flat_map(|e| frontier.append(merkle::leaf_hash(&e.bytes))).collect();
    store.append(size, entries, &nodes).unwrap();
}

fn append(store: &dyn LogStore, from: u64, to: u64, pad: usize) {
    let entries: Vec<Entry> = (from..to).map(|i| Entry::new(&record(i, pad))).collect();
    append_entries(store, &entries);
}

/// Signs and keeps a checkpoint of the store's current size, as the node does.
fn checkpoint(store: &Arc<dyn LogStore>, signer: &CheckpointSigner) -> pb::SignedCheckpoint {
    let log = MessageLog::open(store.clone(), LogConfig::default()).unwrap();
    let signed = log.checkpoint(signer, NOW_MS).unwrap();
    log.close();
    signed
}

/// A log of 50 records with checkpoints at 8, 20 and 40.
fn standard_log(store: &Arc<dyn LogStore>, signer: &CheckpointSigner) {
    let mut at = 0;
    for size in [8, 20, 40, 50] {
        append(&**store, at, size, 64);
        at = size;
        if size != 50 {
            checkpoint(store, signer);
        }
    }
}

fn no_progress() -> impl FnMut(u64, u64) {
    |_, _| {}
}

fn verify(store: &dyn LogStore) -> Result<Report, VerifyError> {
    verify_store(store, None, &mut no_progress())
}

fn expect_err(store: &dyn LogStore) -> VerifyError {
    let err = verify(store).expect_err("tampering must be found");
    eprintln!("found: {err}");
    err
}

// ---------------------------------------------------------------------------------------------
// The redb file, edited directly
// ---------------------------------------------------------------------------------------------

const RECORDS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("records");
const NODES: TableDefinition<'static, (u8, u64), &'static [u8]> = TableDefinition::new("nodes");
const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");

/// A durable standard log in a temporary directory, closed.
fn redb_log(signer: &CheckpointSigner) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn LogStore> = Arc::new(RedbStore::open_dir(dir.path()).unwrap());
    standard_log(&store, signer);
    dir
}

fn open(dir: &Path) -> RedbStore {
    RedbStore::open_dir(dir).unwrap()
}

fn records_of(db: &Database) -> Vec<Vec<u8>> {
    let tx = db.begin_write().unwrap();
    let t = tx.open_table(RECORDS).unwrap();
    let out = t.iter().unwrap().map(|item| item.unwrap().1.value().to_vec()).collect();
    drop(t);
    tx.abort().unwrap();
    out
}

/// Rewrites the records (`edit` may change, drop or reorder them) and the size; with
/// `recompute_tree`, also every tree node, so that the store is consistent in itself and only
/// the signed checkpoints can tell.
fn rewrite(dir: &Path, recompute_tree: bool, edit: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let db = Database::open(dir.join(LOG_FILE)).unwrap();
    let mut records = records_of(&db);
    edit(&mut records);
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_table(RECORDS).unwrap();
        t.retain(|_, _| false).unwrap();
        for (i, r) in records.iter().enumerate() {
            t.insert(i as u64, r.as_slice()).unwrap();
        }
        tx.open_table(META).unwrap().insert("size", records.len() as u64).unwrap();
        if recompute_tree {
            let mut nodes = tx.open_table(NODES).unwrap();
            nodes.retain(|_, _| false).unwrap();
            let mut frontier = Frontier::new();
            for r in &records {
                for (level, index, hash) in frontier.append(merkle::leaf_hash(r)) {
                    nodes.insert((level, index), hash.as_slice()).unwrap();
                }
            }
        }
    }
    tx.commit().unwrap();
}

fn set_node(dir: &Path, level: u8, index: u64, hash: &Hash) {
    let db = Database::open(dir.join(LOG_FILE)).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(NODES).unwrap().insert((level, index), hash.as_slice()).unwrap();
    tx.commit().unwrap();
}

fn remove_record(dir: &Path, index: u64) {
    let db = Database::open(dir.join(LOG_FILE)).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(RECORDS).unwrap().remove(index).unwrap();
    tx.commit().unwrap();
}

// ---------------------------------------------------------------------------------------------
// An intact log
// ---------------------------------------------------------------------------------------------

#[test]
fn an_intact_durable_log_verifies_and_reports_what_it_holds() {
    let signer = signer();
    let dir = redb_log(&signer);
    let store = open(dir.path());
    let mut calls = Vec::new();
    let report = verify_store(&store, None, &mut |done, total| calls.push((done, total))).unwrap();
    let expected_root = merkle::root(&StoreNodes(&store), 50).unwrap();
    assert_eq!(
        report,
        Report {
            origin: Some(NODE.into()),
            size: 50,
            pruned: 0,
            root: expected_root,
            checkpoints: 3,
            witnessed: 0,
            signed_size: 40,
        }
    );
    assert_eq!(calls.first(), Some(&(0, 50)));
    assert_eq!(calls.last(), Some(&(50, 50)));
}

#[test]
fn an_empty_log_verifies() {
    let store = MemStore::new();
    let report = verify(&store).unwrap();
    assert_eq!(report.size, 0);
    assert_eq!(report.root, merkle::EMPTY_ROOT);
    assert_eq!(report.origin, None);
}

#[test]
fn pruned_records_are_verified_by_their_leaf_hashes_and_counted() {
    let signer = signer();
    let store: Arc<dyn LogStore> = Arc::new(MemStore::new());
    standard_log(&store, &signer);
    assert_eq!(store.prune(12).unwrap(), 12);
    let report = verify(&*store).unwrap();
    assert_eq!((report.size, report.pruned, report.checkpoints), (50, 12, 3));
}

// ---------------------------------------------------------------------------------------------
// Tampering with records
// ---------------------------------------------------------------------------------------------

#[test]
fn a_flipped_byte_in_a_record_is_named() {
    let signer = signer();
    let dir = redb_log(&signer);
    rewrite(dir.path(), false, |records| records[17][5] ^= 0x01);
    let err = expect_err(&open(dir.path()));
    assert!(matches!(err, VerifyError::LeafMismatch { index: 17 }), "{err:?}");
    assert_eq!(err.to_string(), "record 17: does not match its leaf hash");
}

#[test]
fn a_changed_record_with_a_matching_leaf_hash_is_caught_by_the_tree_node_above() {
    let signer = signer();
    let dir = redb_log(&signer);
    let mut changed = Vec::new();
    rewrite(dir.path(), false, |records| {
        records[17][5] ^= 0x01;
        changed = records[17].clone();
    });
    set_node(dir.path(), 0, 17, &merkle::leaf_hash(&changed));
    let err = expect_err(&open(dir.path()));
    assert!(matches!(err, VerifyError::NodeMismatch { level: 1, index: 8, first: 16, end: 18 }), "{err:?}");
    assert!(err.to_string().contains("records 16..18"), "{err}");
}

#[test]
fn a_changed_record_with_a_recomputed_tree_is_caught_by_the_signed_checkpoint() {
    let signer = signer();
    let dir = redb_log(&signer);
    rewrite(dir.path(), true, |records| records[33][5] ^= 0x01);
    let err = expect_err(&open(dir.path()));
    assert!(matches!(err, VerifyError::Rewritten { from: 20, size: 40 }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("checkpoint of size 40") && text.contains("records 20..40"), "{text}");
}

#[test]
fn a_dropped_record_is_named() {
    let signer = signer();
    let dir = redb_log(&signer);
    // The later records move down by one; the stored tree stays as it was.
    rewrite(dir.path(), false, |records| {
        records.remove(12);
    });
    let err = expect_err(&open(dir.path()));
    assert!(matches!(err, VerifyError::LeafMismatch { index: 12 }), "{err:?}");
}

#[test]
fn a_dropped_record_with_a_recomputed_tree_names_the_rewritten_range() {
    let signer = signer();
    let dir = redb_log(&signer);
    rewrite(dir.path(), true, |records| {
        records.remove(12);
    });
    let err = expect_err(&open(dir.path()));
    // Records 0..8 are intact; the checkpoint of size 20 is the first that cannot match.
    assert!(matches!(err, VerifyError::Rewritten { from: 8, size: 20 }), "{err:?}");
}

#[test]
fn swapped_records_are_named() {
    let signer = signer();
    let dir = redb_log(&signer);
    rewrite(dir.path(), false, |records| records.swap(30, 31));
    let err = expect_err(&open(dir.path()));
    assert!(matches!(err, VerifyError::LeafMismatch { index: 30 }), "{err:?}");

    let dir = redb_log(&signer);
    rewrite(dir.path(), true, |records| records.swap(30, 31));
    let err = expect_err(&open(dir.path()));
    assert!(matches!(err, VerifyError::Rewritten { from: 20, size: 40 }), "{err:?}");
}

#[test]
fn a_log_truncated_below_a_checkpoint_is_named() {
    let signer = signer();
    let dir = redb_log(&signer);
    rewrite(dir.path(), false, |records| records.truncate(30));
    let err = expect_err(&open(dir.path()));
    assert!(matches!(err, VerifyError::Truncated { size: 30, checkpoint: 40 }), "{err:?}");
    assert!(err.to_string().contains("records 30..40 were removed"), "{err}");
}

#[test]
fn a_log_truncated_above_every_checkpoint_still_verifies_what_is_left() {
    // Indistinguishable from a log that never had the unsigned tail: why checkpoints matter.
    let signer = signer();
    let dir = redb_log(&signer);
    rewrite(dir.path(), false, |records| records.truncate(45));
    let report = verify(&open(dir.path())).unwrap();
    assert_eq!((report.size, report.signed_size), (45, 40));
}

#[test]
fn a_record_deleted_among_kept_ones_is_named() {
    let signer = signer();
    let dir = redb_log(&signer);
    remove_record(dir.path(), 20);
    let err = expect_err(&open(dir.path()));
    assert!(matches!(err, VerifyError::Deleted { index: 20, kept: 19 }), "{err:?}");
}

#[test]
fn a_missing_tree_node_is_named() {
    let signer = signer();
    let dir = redb_log(&signer);
    let db = Database::open(dir.path().join(LOG_FILE)).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(NODES).unwrap().remove((2u8, 3u64)).unwrap();
    tx.commit().unwrap();
    drop(db);
    let err = expect_err(&open(dir.path()));
    assert!(matches!(err, VerifyError::NodeMissing { level: 2, index: 3, first: 12, end: 16 }), "{err:?}");
}

#[test]
fn undecodable_records_are_reported_after_the_integrity_checks() {
    let store = MemStore::new();
    append(&store, 0, 5, 16);
    let junk = |bytes: &[u8]| Entry {
        bytes: bytes.to_vec(),
        message_id: "junk".into(),
        logged_at_ms: NOW_MS,
        client: String::new(),
        service: String::new(),
    };
    append_entries(&store, &[junk(&[0xff, 0xff, 0xff]), junk(b"\x0a\x10short")]);
    append(&store, 7, 9, 16);
    let err = expect_err(&store);
    assert!(matches!(err, VerifyError::Undecodable { index: 5, others: 1, .. }), "{err:?}");
    assert!(err.to_string().starts_with("record 5: does not decode as a LogRecord"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Checkpoints
// ---------------------------------------------------------------------------------------------

/// Replaces the stored checkpoint of `size` with `edit` applied.
fn edit_checkpoint(store: &dyn LogStore, size: u64, edit: impl FnOnce(&mut pb::SignedCheckpoint)) {
    let mut signed = store
        .checkpoints()
        .unwrap()
        .into_iter()
        .find(|c| Checkpoint::decode(c).unwrap().size == size)
        .unwrap();
    edit(&mut signed);
    store.put_checkpoint(size, &signed).unwrap();
}

#[test]
fn a_checkpoint_with_an_altered_root_fails_its_signature() {
    let signer = signer();
    let dir = redb_log(&signer);
    let store = open(dir.path());
    edit_checkpoint(&store, 20, |signed| {
        let mut c = pb::Checkpoint::decode(signed.checkpoint.as_slice()).unwrap();
        c.root_hash[0] ^= 0x80;
        signed.checkpoint = c.encode_to_vec();
    });
    let err = expect_err(&store);
    assert!(
        matches!(&err, VerifyError::Checkpoint { size: 20, reason } if reason.contains("does not verify")),
        "{err:?}"
    );
}

#[test]
fn a_checkpoint_signed_with_a_certificate_the_log_lacks_or_of_another_node_is_refused() {
    let signer = signer();
    let store = MemStore::new();
    append(&store, 0, 4, 16);
    let cp = Checkpoint {
        origin: NODE.into(),
        size: 4,
        root: merkle::root(&StoreNodes(&store), 4).unwrap(),
        timestamp_ms: NOW_MS,
    };
    let signed =
        checkpoint::sign_checkpoint(&cp, &signer.key, signer.certificate.fingerprint(), NOW_MS).unwrap();
    store.put_checkpoint(4, &signed).unwrap();
    let err = expect_err(&store);
    assert!(
        matches!(&err, VerifyError::Checkpoint { size: 4, reason } if reason.contains("which is not among the log's certificates")),
        "{err:?}"
    );

    // Another node's certificate, whose key really made the signature.
    let other = signer_for("VN/GOV/000.00.00.G22/ss2");
    let signed =
        checkpoint::sign_checkpoint(&cp, &other.key, other.certificate.fingerprint(), NOW_MS).unwrap();
    store.put_certificate(other.certificate.der()).unwrap();
    store.put_checkpoint(4, &signed).unwrap();
    let err = expect_err(&store);
    assert!(
        matches!(&err, VerifyError::Checkpoint { size: 4, reason } if reason.contains("not of node")),
        "{err:?}"
    );
}

#[test]
fn checkpoints_of_different_origins_are_refused() {
    let store: Arc<dyn LogStore> = Arc::new(MemStore::new());
    append(&*store, 0, 4, 16);
    checkpoint(&store, &signer());
    append(&*store, 4, 6, 16);
    checkpoint(&store, &signer_for("VN/GOV/000.00.00.G22/ss2"));
    let err = expect_err(&*store);
    assert!(
        matches!(&err, VerifyError::Checkpoint { size: 6, reason } if reason.contains("other checkpoints are for")),
        "{err:?}"
    );
}

#[test]
fn witness_co_signatures_need_the_anchor_keys_and_must_all_verify() {
    let signer = signer();
    let (wkey, wpub) = witness();
    let store: Arc<dyn LogStore> = Arc::new(MemStore::new());
    standard_log(&store, &signer);
    edit_checkpoint(&*store, 20, |signed| {
        checkpoint::add_witness_signature(signed, &wkey, wpub.0, "VN", NOW_MS + 5).unwrap();
    });

    let err = expect_err(&*store);
    assert!(matches!(err, VerifyError::WitnessKeysNeeded { size: 20, count: 1 }), "{err:?}");
    assert!(err.to_string().contains("--anchor"), "{err}");

    let keys = [wpub.clone()];
    let report = verify_store(&*store, Some(&keys), &mut no_progress()).unwrap();
    assert_eq!((report.checkpoints, report.witnessed), (3, 1));

    // A key the anchor does not list.
    let (_, other) = witness();
    let err = verify_store(&*store, Some(&[other]), &mut no_progress()).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Checkpoint { size: 20, reason } if reason.contains("does not list")),
        "{err:?}"
    );

    // A co-signature that does not verify.
    edit_checkpoint(&*store, 20, |signed| {
        let sig = signed.signatures.last_mut().unwrap().signature.as_mut().unwrap();
        sig.value[3] ^= 1;
    });
    let err = verify_store(&*store, Some(&keys), &mut no_progress()).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Checkpoint { size: 20, reason } if reason.contains("witness signature by VN does not verify")),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Large logs, through a store that serves altered data
// ---------------------------------------------------------------------------------------------

/// A store that answers from `inner` except where told otherwise.
struct Altered {
    inner: Arc<MemStore>,
    records: HashMap<u64, Option<Vec<u8>>>,
    nodes: HashMap<(u8, u64), Hash>,
}

impl LogStore for Altered {
    fn size(&self) -> Result<u64, LogError> {
        self.inner.size()
    }
    fn append(&self, first: u64, entries: &[Entry], nodes: &[(u8, u64, Hash)]) -> Result<(), LogError> {
        self.inner.append(first, entries, nodes)
    }
    fn record(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        match self.records.get(&index) {
            Some(r) => Ok(r.clone()),
            None => self.inner.record(index),
        }
    }
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, LogError> {
        match self.nodes.get(&(level, index)) {
            Some(h) => Ok(Some(*h)),
            None => self.inner.node(level, index),
        }
    }
    delegate_indexes_to_inner!();
}

/// 20 000 records (several 4096-record chunks, an incomplete last one), checkpoints at 9000
/// and 20 000.
fn large() -> Altered {
    let signer = signer();
    let inner = Arc::new(MemStore::new());
    let store: Arc<dyn LogStore> = inner.clone();
    append(&*store, 0, 9000, 8);
    checkpoint(&store, &signer);
    append(&*store, 9000, 20_000, 8);
    checkpoint(&store, &signer);
    Altered { inner, records: HashMap::new(), nodes: HashMap::new() }
}

#[test]
fn a_large_log_verifies_across_chunks_with_progress() {
    let store = large();
    let mut last = (0, 0);
    let mut calls = 0;
    let report = verify_store(&store, None, &mut |done, total| {
        assert!(done >= last.0 && done <= total);
        last = (done, total);
        calls += 1;
    })
    .unwrap();
    assert_eq!((report.size, report.checkpoints, report.signed_size), (20_000, 2, 20_000));
    assert_eq!(last, (20_000, 20_000));
    assert!(calls >= 2);
}

#[test]
fn tampering_deep_in_a_large_log_is_named() {
    // A record in the fourth chunk.
    let mut store = large();
    let mut bytes = store.inner.record(13_000).unwrap().unwrap();
    bytes[2] ^= 4;
    store.records.insert(13_000, Some(bytes.clone()));
    assert!(matches!(expect_err(&store), VerifyError::LeafMismatch { index: 13_000 }));

    // With its leaf hash changed too, the node above it is wrong.
    store.nodes.insert((0, 13_000), merkle::leaf_hash(&bytes));
    assert!(matches!(expect_err(&store), VerifyError::NodeMismatch { level: 1, index: 6500, .. }));

    // A node above the chunks (level 13 covers two chunks).
    let mut store = large();
    store.nodes.insert((13, 1), [7; 32]);
    let err = expect_err(&store);
    assert!(
        matches!(err, VerifyError::NodeMismatch { level: 13, index: 1, first: 8192, end: 16_384 }),
        "{err:?}"
    );

    // A record deleted in a later chunk than the last pruned one.
    let mut store = large();
    store.inner.prune(100).unwrap();
    store.records.insert(10_000, None);
    let err = expect_err(&store);
    assert!(matches!(err, VerifyError::Deleted { index: 10_000, kept: 9999 }), "{err:?}");

    // In the last, incomplete chunk, after the last checkpoint's records: the leaf hash check.
    let mut store = large();
    store.records.insert(19_999, Some(b"\x0a\x01x".to_vec()));
    assert!(matches!(expect_err(&store), VerifyError::LeafMismatch { index: 19_999 }));
}

/// Throughput on 1 KiB records in a durable store. Run with
/// `cargo test --release -p lienthong-msglog --test verify -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: run in release"]
fn verification_throughput_on_1_kib_records() {
    const N: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    {
        let store: Arc<dyn LogStore> = Arc::new(RedbStore::open_dir(dir.path()).unwrap());
        let mut at = 0;
        while at < N {
            let end = (at + 10_000).min(N);
            append(&*store, at, end, 800);
            at = end;
        }
        let size = store.record(0).unwrap().unwrap().len();
        eprintln!("record size: {size} bytes");
        checkpoint(&store, &signer());
    }
    let store = open(dir.path());
    let start = std::time::Instant::now();
    let report = verify(&store).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(report.size, N);
    eprintln!("verified {N} records in {elapsed:?}: {:.0} records/s", N as f64 / elapsed.as_secs_f64());
}
