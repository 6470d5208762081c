//! The `LogStore` contract, written once as functions over `&dyn LogStore` and run against every
//! store: the in-memory [`MemStore`] and the durable [`RedbStore`] (in a temporary directory).
//! A store that passes these can sit behind a `MessageLog`.
//!
//! The redb store is also reopened after a drop and must still hold everything.

use std::collections::BTreeSet;
use std::sync::Arc;

use lienthong_msglog::merkle::{self, Frontier, Hash, MemNodes};
use lienthong_msglog::store::StoreNodes;
use lienthong_msglog::{Entry, LogError, LogStore, MemStore, RedbStore};
use lienthong_proto::msglog::v1 as pb;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A store under test, with whatever must outlive it (the redb store's directory).
struct Fixture {
    store: Arc<dyn LogStore>,
    _dir: Option<tempfile::TempDir>,
}

fn mem_store() -> Fixture {
    Fixture { store: Arc::new(MemStore::new()), _dir: None }
}

fn redb_store() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(dir.path()).unwrap();
    Fixture { store: Arc::new(store), _dir: Some(dir) }
}

/// An entry whose bytes name it, indexed under the given keys.
fn entry(n: u64, message_id: &str, logged_at_ms: i64, client: &str, service: &str) -> Entry {
    Entry {
        bytes: format!("record {n} of {message_id} at {logged_at_ms}").into_bytes(),
        message_id: message_id.to_owned(),
        logged_at_ms,
        client: client.to_owned(),
        service: service.to_owned(),
    }
}

/// `count` plain entries numbered from `from`, one exchange each, logged at `1000 + n`.
fn entries(from: u64, count: u64) -> Vec<Entry> {
    (from..from + count)
        .map(|n| entry(n, &format!("msg-{n}"), 1000 + n as i64, "VN/GOV/C1", "VN/GOV/P1/sub/svc"))
        .collect()
}

/// Appends `batch` at the store's current size with the tree nodes it completes, as a log's
/// writer does. Returns the first index.
fn append(store: &dyn LogStore, batch: &[Entry]) -> u64 {
    let first = store.size().unwrap();
    let mut frontier = Frontier::from_store(&StoreNodes(store), first).unwrap();
    let nodes: Vec<_> = batch.iter().flat_map(|e| frontier.append(merkle::leaf_hash(&e.bytes))).collect();
    store.append(first, batch, &nodes).unwrap();
    first
}

/// The root of `leaves`, computed independently of the store.
fn root_of(leaves: &[Hash]) -> Hash {
    let mut nodes = MemNodes::default();
    for leaf in leaves {
        nodes.push_leaf(*leaf);
    }
    nodes.root()
}

fn signed_checkpoint(size: u64, tag: &str) -> pb::SignedCheckpoint {
    pb::SignedCheckpoint {
        checkpoint: format!("checkpoint {size} {tag}").into_bytes(),
        signatures: vec![pb::CheckpointSignature {
            role: pb::SignerRole::Log as i32,
            signer: tag.to_owned(),
            signature: None,
            signed_at_ms: size as i64,
        }],
    }
}

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

fn empty_store(store: &dyn LogStore) {
    assert_eq!(store.size().unwrap(), 0);
    assert!(store.node(0, 0).unwrap().is_none());
    assert!(store.by_exchange("msg-0").unwrap().is_empty());
    assert!(store.by_time(i64::MIN, i64::MAX, 100).unwrap().is_empty());
    assert!(store.checkpoints().unwrap().is_empty());
    assert!(store.certificates().unwrap().is_empty());
    assert_eq!(merkle::root(&StoreNodes(store), 0).unwrap(), merkle::EMPTY_ROOT);
}

fn appends_batches_and_reads_back_bytes(store: &dyn LogStore) {
    let all = entries(0, 17);
    let mut at = 0;
    for len in [1, 5, 0, 11] {
        let first = append(store, &all[at..at + len]);
        assert_eq!(first, at as u64);
        at += len;
        assert_eq!(store.size().unwrap(), at as u64, "size after a batch of {len}");
    }
    for (i, e) in all.iter().enumerate() {
        assert_eq!(store.record(i as u64).unwrap().as_deref(), Some(e.bytes.as_slice()), "record {i}");
    }
}

fn append_at_wrong_first_is_refused_and_changes_nothing(store: &dyn LogStore) {
    append(store, &entries(0, 4));
    let root = merkle::root(&StoreNodes(store), 4).unwrap();
    let intruder = entry(99, "intruder", 5000, "VN/GOV/INTRUDER", "VN/GOV/P9/sub/svc");
    let leaf = merkle::leaf_hash(&intruder.bytes);
    for first in [0, 3, 5, 1000] {
        let err = store.append(first, std::slice::from_ref(&intruder), &[(0, first, leaf)]).unwrap_err();
        assert!(matches!(err, LogError::Storage(_)), "append at {first}: {err:?}");
    }
    assert_eq!(store.size().unwrap(), 4);
    assert!(matches!(store.record(4), Err(LogError::NoSuchRecord { index: 4, size: 4 })));
    for i in 0..4 {
        assert_eq!(store.node(0, i).unwrap(), Some(merkle::leaf_hash(&entries(i, 1)[0].bytes)));
    }
    assert!(store.node(0, 5).unwrap().is_none());
    assert!(store.node(0, 1000).unwrap().is_none());
    assert!(store.by_exchange("intruder").unwrap().is_empty());
    assert!(store.by_client("VN/GOV/INTRUDER").unwrap().is_empty());
    assert!(store.by_service("VN/GOV/P9/sub/svc").unwrap().is_empty());
    assert!(store.by_time(5000, 5001, 10).unwrap().is_empty());
    assert_eq!(merkle::root(&StoreNodes(store), 4).unwrap(), root);
    // The right index still works.
    assert_eq!(append(store, &entries(4, 1)), 4);
}

fn stores_the_tree_nodes(store: &dyn LogStore) {
    let all = entries(0, 13);
    append(store, &all[..6]);
    append(store, &all[6..]);
    let leaves: Vec<Hash> = all.iter().map(|e| merkle::leaf_hash(&e.bytes)).collect();
    // Every complete, aligned subtree, and nothing beyond the leaves.
    for level in 0..4u8 {
        let complete = 13u64 >> level;
        for index in 0..complete {
            let start = (index << level) as usize;
            let expected = root_of(&leaves[start..start + (1 << level)]);
            assert_eq!(store.node(level, index).unwrap(), Some(expected), "node ({level}, {index})");
        }
        assert!(store.node(level, complete).unwrap().is_none(), "incomplete node ({level}, {complete})");
    }
    let nodes = StoreNodes(store);
    for size in 1..=13 {
        let root = merkle::root(&nodes, size).unwrap();
        assert_eq!(root, root_of(&leaves[..size as usize]), "root of {size}");
        for index in 0..size {
            let proof = merkle::inclusion_proof(&nodes, index, size).unwrap();
            merkle::verify_inclusion(&leaves[index as usize], index, size, &proof, &root).unwrap();
        }
    }
}

fn indexes_both_records_of_an_exchange(store: &dyn LogStore) {
    let batch = vec![
        entry(0, "ex-A", 10, "VN/GOV/C1", "VN/GOV/P1/sub/svc"),
        entry(1, "ex-B", 11, "VN/GOV/C1", "VN/GOV/P1/sub/svc"),
        entry(2, "ex-C", 12, "VN/GOV/C1", "VN/GOV/P1/sub/svc"),
    ];
    append(store, &batch);
    // The responses arrive in a later batch.
    append(
        store,
        &[
            entry(3, "ex-B", 20, "VN/GOV/C1", "VN/GOV/P1/sub/svc"),
            entry(4, "ex-A", 21, "VN/GOV/C1", "VN/GOV/P1/sub/svc"),
        ],
    );
    assert_eq!(store.by_exchange("ex-A").unwrap(), vec![0, 4]);
    assert_eq!(store.by_exchange("ex-B").unwrap(), vec![1, 3]);
    assert_eq!(store.by_exchange("ex-C").unwrap(), vec![2]);
    assert!(store.by_exchange("ex-D").unwrap().is_empty());
    assert!(store.by_exchange("ex").unwrap().is_empty(), "exact match, not a prefix");
}

fn indexes_by_time_oldest_first_half_open_with_limit(store: &dyn LogStore) {
    let c = "VN/GOV/C1";
    let s = "VN/GOV/P1/sub/svc";
    // Logged times are not in index order (appenders race for the writer).
    append(store, &[entry(0, "a", 100, c, s), entry(1, "b", 100, c, s), entry(2, "c", 200, c, s)]);
    append(store, &[entry(3, "d", 300, c, s), entry(4, "e", 150, c, s), entry(5, "f", -50, c, s)]);
    append(store, &[entry(6, "g", 299, c, s), entry(7, "h", i64::MAX - 1, c, s)]);

    assert_eq!(store.by_time(100, 300, 100).unwrap(), vec![0, 1, 4, 2, 6], "[100, 300)");
    assert_eq!(store.by_time(100, 301, 100).unwrap(), vec![0, 1, 4, 2, 6, 3], "end is exclusive");
    assert_eq!(store.by_time(101, 300, 100).unwrap(), vec![4, 2, 6], "start is inclusive");
    assert_eq!(store.by_time(100, 300, 2).unwrap(), vec![0, 1], "limit keeps the oldest");
    assert_eq!(store.by_time(100, 300, 0).unwrap(), Vec::<u64>::new());
    assert_eq!(store.by_time(300, 300, 10).unwrap(), Vec::<u64>::new(), "empty range");
    assert_eq!(store.by_time(300, 100, 10).unwrap(), Vec::<u64>::new(), "reversed range");
    assert_eq!(store.by_time(i64::MIN, 0, 10).unwrap(), vec![5]);
    assert_eq!(store.by_time(i64::MIN, i64::MAX, 100).unwrap(), vec![5, 0, 1, 4, 2, 6, 3, 7]);
}

fn indexes_by_client_and_service(store: &dyn LogStore) {
    let (c1, c2) = ("VN/GOV/C1", "VN/COM/C2/sub");
    let (s1, s2) = ("VN/GOV/P1/sub/a", "VN/GOV/P1/sub/b");
    append(store, &[entry(0, "x", 1, c1, s1), entry(1, "x", 2, c1, s1), entry(2, "y", 3, c2, s1)]);
    append(store, &[entry(3, "z", 4, c2, s2), entry(4, "y", 5, c2, s1), entry(5, "w", 6, "", "")]);
    assert_eq!(store.by_client(c1).unwrap(), vec![0, 1]);
    assert_eq!(store.by_client(c2).unwrap(), vec![2, 3, 4]);
    assert_eq!(store.by_service(s1).unwrap(), vec![0, 1, 2, 4]);
    assert_eq!(store.by_service(s2).unwrap(), vec![3]);
    assert_eq!(store.by_client("").unwrap(), vec![5], "records without a client");
    assert_eq!(store.by_service("").unwrap(), vec![5], "records without a service");
    assert!(store.by_client("VN/GOV").unwrap().is_empty(), "exact match, not a prefix");
    assert!(store.by_service("VN/GOV/P1/sub/c").unwrap().is_empty());
}

fn keeps_checkpoints_by_size_replacing_the_same_size(store: &dyn LogStore) {
    store.put_checkpoint(8, &signed_checkpoint(8, "first")).unwrap();
    store.put_checkpoint(2, &signed_checkpoint(2, "first")).unwrap();
    store.put_checkpoint(300, &signed_checkpoint(300, "first")).unwrap();
    // A co-signed copy of size 8 replaces the one kept.
    let mut cosigned = signed_checkpoint(8, "first");
    cosigned.signatures.push(pb::CheckpointSignature {
        role: pb::SignerRole::Witness as i32,
        signer: "VN".into(),
        signature: None,
        signed_at_ms: 9,
    });
    store.put_checkpoint(8, &cosigned).unwrap();
    let kept = store.checkpoints().unwrap();
    assert_eq!(kept, vec![signed_checkpoint(2, "first"), cosigned, signed_checkpoint(300, "first")]);
}

fn keeps_certificates_once_each(store: &dyn LogStore) {
    let a = b"certificate A (DER)".to_vec();
    let b = b"certificate B (DER)".to_vec();
    store.put_certificate(&a).unwrap();
    store.put_certificate(&b).unwrap();
    store.put_certificate(&a).unwrap();
    let kept: Vec<Vec<u8>> = store.certificates().unwrap();
    assert_eq!(kept.len(), 2, "a certificate is kept once");
    assert_eq!(kept.into_iter().collect::<BTreeSet<_>>(), BTreeSet::from([a, b]));
}

fn prune_drops_bytes_but_keeps_hashes_and_size(store: &dyn LogStore) {
    let all = entries(0, 10);
    append(store, &all[..7]);
    append(store, &all[7..]);
    let leaves: Vec<Hash> = all.iter().map(|e| merkle::leaf_hash(&e.bytes)).collect();
    let root = merkle::root(&StoreNodes(store), 10).unwrap();

    assert_eq!(store.prune(4).unwrap(), 4);
    assert_eq!(store.size().unwrap(), 10);
    for i in 0..10u64 {
        let kept = store.record(i).unwrap();
        if i < 4 {
            assert_eq!(kept, None, "record {i} pruned");
        } else {
            assert_eq!(kept.as_deref(), Some(all[i as usize].bytes.as_slice()), "record {i} kept");
        }
        assert_eq!(store.node(0, i).unwrap(), Some(leaves[i as usize]), "leaf hash {i} kept");
    }
    assert_eq!(merkle::root(&StoreNodes(store), 10).unwrap(), root);
    let proof = merkle::inclusion_proof(&StoreNodes(store), 1, 10).unwrap();
    merkle::verify_inclusion(&leaves[1], 1, 10, &proof, &root).unwrap();
    // The index entries stay (they name records whose bytes are gone).
    assert_eq!(store.by_exchange("msg-1").unwrap(), vec![1]);

    assert_eq!(store.prune(4).unwrap(), 0, "pruning again drops nothing");
    assert_eq!(store.prune(2).unwrap(), 0, "pruning less drops nothing");
    assert_eq!(store.prune(1000).unwrap(), 6, "pruning past the end drops the rest");
    assert_eq!(store.size().unwrap(), 10);
    assert!(matches!(store.record(10), Err(LogError::NoSuchRecord { index: 10, size: 10 })));

    // Appending continues after pruning.
    assert_eq!(append(store, &entries(10, 2)), 10);
    assert_eq!(store.record(11).unwrap().as_deref(), Some(entries(11, 1)[0].bytes.as_slice()));
}

fn record_past_the_end_is_no_such_record(store: &dyn LogStore) {
    assert!(matches!(store.record(0), Err(LogError::NoSuchRecord { index: 0, size: 0 })));
    append(store, &entries(0, 3));
    for index in [3, 4, u64::MAX] {
        match store.record(index) {
            Err(LogError::NoSuchRecord { index: i, size: 3 }) => assert_eq!(i, index),
            other => panic!("record({index}) gave {other:?}"),
        }
    }
    assert!(store.record(2).unwrap().is_some());
}

/// Fills a store with a bit of everything (for the reopen check).
fn populate(store: &dyn LogStore) {
    append(store, &entries(0, 9));
    append(store, &entries(9, 4));
    store.prune(3).unwrap();
    store.put_checkpoint(9, &signed_checkpoint(9, "p")).unwrap();
    store.put_checkpoint(13, &signed_checkpoint(13, "p")).unwrap();
    store.put_certificate(b"cert").unwrap();
}

/// What [`populate`] left.
fn check_populated(store: &dyn LogStore) {
    let all = entries(0, 13);
    assert_eq!(store.size().unwrap(), 13);
    for (i, e) in all.iter().enumerate() {
        let expected = (i >= 3).then_some(e.bytes.as_slice());
        assert_eq!(store.record(i as u64).unwrap().as_deref(), expected, "record {i}");
    }
    let leaves: Vec<Hash> = all.iter().map(|e| merkle::leaf_hash(&e.bytes)).collect();
    assert_eq!(merkle::root(&StoreNodes(store), 13).unwrap(), root_of(&leaves));
    assert_eq!(store.by_exchange("msg-10").unwrap(), vec![10]);
    assert_eq!(store.by_time(1000, 1005, 100).unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(store.by_client("VN/GOV/C1").unwrap(), (0..13).collect::<Vec<_>>());
    assert_eq!(store.by_service("VN/GOV/P1/sub/svc").unwrap(), (0..13).collect::<Vec<_>>());
    assert_eq!(store.checkpoints().unwrap(), vec![signed_checkpoint(9, "p"), signed_checkpoint(13, "p")]);
    assert_eq!(store.certificates().unwrap(), vec![b"cert".to_vec()]);
}

fn populated(store: &dyn LogStore) {
    populate(store);
    check_populated(store);
}

// ---------------------------------------------------------------------------------------------
// Every check against every store
// ---------------------------------------------------------------------------------------------

macro_rules! conformance {
    ($store:ident, $make:path) => {
        mod $store {
            macro_rules! check {
                ($name:ident) => {
                    #[test]
                    fn $name() {
                        let fixture = $make();
                        super::$name(&*fixture.store);
                    }
                };
            }
            check!(empty_store);
            check!(appends_batches_and_reads_back_bytes);
            check!(append_at_wrong_first_is_refused_and_changes_nothing);
            check!(stores_the_tree_nodes);
            check!(indexes_both_records_of_an_exchange);
            check!(indexes_by_time_oldest_first_half_open_with_limit);
            check!(indexes_by_client_and_service);
            check!(keeps_checkpoints_by_size_replacing_the_same_size);
            check!(keeps_certificates_once_each);
            check!(prune_drops_bytes_but_keeps_hashes_and_size);
            check!(record_past_the_end_is_no_such_record);
            check!(populated);
        }
    };
}

conformance!(mem, super::mem_store);
conformance!(redb, super::redb_store);

#[test]
fn redb_reopened_after_drop_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RedbStore::open_dir(dir.path()).unwrap();
        populate(&store);
    }
    let store = RedbStore::open_dir(dir.path()).unwrap();
    check_populated(&store);
    // And it takes the next batch at the right index.
    assert_eq!(append(&store, &entries(13, 2)), 13);
    drop(store);
    let store = RedbStore::open_dir(dir.path()).unwrap();
    assert_eq!(store.size().unwrap(), 15);
    assert_eq!(store.record(14).unwrap().as_deref(), Some(entries(14, 1)[0].bytes.as_slice()));
}

#[test]
fn redb_open_dir_creates_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a").join("b");
    let store = RedbStore::open_dir(&nested).unwrap();
    assert!(nested.join(lienthong_msglog::LOG_FILE).is_file());
    empty_store(&store);
}
