//! The `LogStore` contract, written once as functions over `&dyn LogStore` and run against every
//! store: the in-memory [`MemStore`] and the durable [`RedbStore`] and [`SegmentStore`] (in a
//! temporary directory; the segment store also with tiny segments, so batches span many files).
//! A store that passes these can sit behind a `MessageLog`.
//!
//! The durable stores are also reopened after a drop and must still hold everything; the segment
//! store must also cut a torn tail and rebuild a lost index from its segments.

#[macro_use]
mod support;

use support::{Fixture, mem_store, redb_store, segment_store, segment_store_with};

use std::collections::BTreeSet;

use lienthong_msglog::merkle::{self, Frontier, Hash, MemNodes};
use lienthong_msglog::segment::{INDEX_FILE, SEGMENTS_DIR};
use lienthong_msglog::store::StoreNodes;
use lienthong_msglog::{Entry, LogError, LogStore, RedbStore, SegmentConfig, SegmentStore};
use lienthong_proto::msglog::v1 as pb;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// Segments of ~100 bytes (a new file nearly every batch) and a durable index commit every
/// second batch.
fn tiny_segments() -> SegmentConfig {
    SegmentConfig { segment_bytes: 100, durable_every_batches: 2, ..SegmentConfig::default() }
}

fn segment_store_tiny() -> Fixture {
    segment_store_with(tiny_segments())
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
conformance!(segment, super::segment_store);
conformance!(segment_tiny, super::segment_store_tiny);

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

// ---------------------------------------------------------------------------------------------
// The segment store: reopening, torn tails, a lost index
// ---------------------------------------------------------------------------------------------

#[test]
fn segment_reopened_after_drop_keeps_everything() {
    for config in [SegmentConfig::default(), tiny_segments()] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SegmentStore::open_dir_with(dir.path(), config).unwrap();
            populate(&store);
        }
        let store = SegmentStore::open_dir_with(dir.path(), config).unwrap();
        check_populated(&store);
        assert_eq!(append(&store, &entries(13, 2)), 13);
        drop(store);
        let store = SegmentStore::open_dir_with(dir.path(), config).unwrap();
        assert_eq!(store.size().unwrap(), 15);
        assert_eq!(store.record(14).unwrap().as_deref(), Some(entries(14, 1)[0].bytes.as_slice()));
    }
}

/// The segment files of a store directory, oldest first.
fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> =
        std::fs::read_dir(dir.join(SEGMENTS_DIR)).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// A frame as the segment store writes it: `[len][crc][body]`, the body holding the keys and
/// then the record bytes.
fn frame_of(e: &Entry) -> Vec<u8> {
    let mut body = e.logged_at_ms.to_le_bytes().to_vec();
    for key in [&e.message_id, &e.client, &e.service] {
        body.extend_from_slice(&(key.len() as u32).to_le_bytes());
        body.extend_from_slice(key.as_bytes());
    }
    body.extend_from_slice(&e.bytes);
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    frame
}

#[test]
fn segment_frame_format_is_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let all = entries(0, 3);
    {
        let store = SegmentStore::open_dir(dir.path()).unwrap();
        append(&store, &all);
    }
    let expected: Vec<u8> = all.iter().flat_map(frame_of).collect();
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with(format!("{SEGMENTS_DIR}/{:020}.seg", 0)));
    assert_eq!(std::fs::read(&files[0]).unwrap(), expected);
}

/// A torn tail (half a frame) and a frame with a bad CRC after the last good record are cut at
/// open; the good records all stay and appending continues at the right index.
#[test]
fn segment_torn_tail_is_cut_and_appending_continues() {
    for config in [SegmentConfig::default(), tiny_segments()] {
        for garbage in ["partial", "bad-crc", "both"] {
            let dir = tempfile::tempdir().unwrap();
            let all = entries(0, 12);
            {
                let store = SegmentStore::open_dir_with(dir.path(), config).unwrap();
                append(&store, &all[..5]);
                append(&store, &all[5..9]);
            }
            let last = segment_files(dir.path()).pop().unwrap();
            let good_len = std::fs::metadata(&last).unwrap().len();
            let mut tail = Vec::new();
            let next = frame_of(&entries(9, 1)[0]);
            if garbage != "partial" {
                let mut bad = next.clone();
                let n = bad.len();
                bad[n - 1] ^= 0xff; // the body no longer matches its CRC
                tail.extend_from_slice(&bad);
            }
            if garbage != "bad-crc" {
                tail.extend_from_slice(&next[..next.len() / 2]);
            }
            {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(&last).unwrap();
                f.write_all(&tail).unwrap();
            }

            let store = SegmentStore::open_dir_with(dir.path(), config).unwrap();
            assert_eq!(std::fs::metadata(&last).unwrap().len(), good_len, "{garbage}: the garbage is cut");
            assert_eq!(store.size().unwrap(), 9, "{garbage}");
            for (i, e) in all[..9].iter().enumerate() {
                assert_eq!(store.record(i as u64).unwrap().as_deref(), Some(e.bytes.as_slice()));
            }
            assert_eq!(append(&store, &all[9..]), 9, "{garbage}: continues at the end");
            let leaves: Vec<Hash> = all.iter().map(|e| merkle::leaf_hash(&e.bytes)).collect();
            assert_eq!(merkle::root(&StoreNodes(&store), 12).unwrap(), root_of(&leaves), "{garbage}");
            drop(store);
            let store = SegmentStore::open_dir_with(dir.path(), config).unwrap();
            assert_eq!(store.size().unwrap(), 12);
            assert_eq!(store.by_exchange("msg-11").unwrap(), vec![11]);
            assert_eq!(merkle::root(&StoreNodes(&store), 12).unwrap(), root_of(&leaves));
        }
    }
}

/// A damaged record inside the log (not the tail) is reported, naming the record, not served.
#[test]
fn segment_damaged_record_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let all = entries(0, 3);
    let store = SegmentStore::open_dir(dir.path()).unwrap();
    append(&store, &all);
    let file = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let second = frame_of(&all[0]).len() + 10;
    bytes[second] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    match store.record(1) {
        Err(LogError::Storage(m)) => assert!(m.to_string().contains("record 1"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(store.record(0).unwrap().is_some());
}

/// Deleting the index file loses nothing: it is rebuilt from the segments (nodes, locations and
/// all four indexes; checkpoints and certificates live only in the index and are gone).
#[test]
fn segment_lost_index_is_rebuilt_from_the_segments() {
    for config in [SegmentConfig::default(), tiny_segments()] {
        let dir = tempfile::tempdir().unwrap();
        let all = entries(0, 13);
        {
            let store = SegmentStore::open_dir_with(dir.path(), config).unwrap();
            append(&store, &all[..9]);
            append(&store, &all[9..]);
        }
        std::fs::remove_file(dir.path().join(INDEX_FILE)).unwrap();
        let store = SegmentStore::open_dir_with(dir.path(), config).unwrap();
        assert_eq!(store.size().unwrap(), 13);
        for (i, e) in all.iter().enumerate() {
            assert_eq!(store.record(i as u64).unwrap().as_deref(), Some(e.bytes.as_slice()));
        }
        let leaves: Vec<Hash> = all.iter().map(|e| merkle::leaf_hash(&e.bytes)).collect();
        assert_eq!(merkle::root(&StoreNodes(&store), 13).unwrap(), root_of(&leaves));
        assert_eq!(store.by_exchange("msg-10").unwrap(), vec![10]);
        assert_eq!(store.by_time(1000, 1005, 100).unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(store.by_client("VN/GOV/C1").unwrap(), (0..13).collect::<Vec<_>>());
        assert_eq!(store.by_service("VN/GOV/P1/sub/svc").unwrap(), (0..13).collect::<Vec<_>>());
        assert_eq!(append(&store, &entries(13, 1)), 13);
    }
}

/// Pruning deletes whole segment files only, and what it deleted stays pruned after a reopen.
#[test]
fn segment_prune_deletes_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let all = entries(0, 10);
    {
        let store = SegmentStore::open_dir_with(dir.path(), tiny_segments()).unwrap();
        for e in &all {
            append(&store, std::slice::from_ref(e));
        }
        let before = segment_files(dir.path()).len();
        assert!(before >= 5, "tiny segments: {before} files");
        assert_eq!(store.prune(5).unwrap(), 5);
        let after = segment_files(dir.path());
        assert!(after.len() < before, "whole segments deleted");
        let first_kept: u64 = after[0].file_stem().unwrap().to_str().unwrap().parse().unwrap();
        assert!(first_kept <= 5, "segment {first_kept} holds unpruned records");
        for i in 0..10u64 {
            assert_eq!(store.record(i).unwrap().is_some(), i >= 5, "record {i}");
        }
    }
    let store = SegmentStore::open_dir_with(dir.path(), tiny_segments()).unwrap();
    for i in 0..10u64 {
        assert_eq!(store.record(i).unwrap().is_some(), i >= 5, "record {i} after reopen");
        assert!(store.node(0, i).unwrap().is_some());
    }
    assert_eq!(append(&store, &entries(10, 1)), 10);
}

#[test]
fn open_existing_picks_the_store_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (seg, redb, empty) = (dir.path().join("seg"), dir.path().join("redb"), dir.path().join("empty"));
    {
        populate(&SegmentStore::open_dir(&seg).unwrap());
        populate(&RedbStore::open_dir(&redb).unwrap());
    }
    check_populated(&*lienthong_msglog::open_existing(&seg).unwrap());
    check_populated(&*lienthong_msglog::open_existing(&redb).unwrap());
    std::fs::create_dir(&empty).unwrap();
    assert!(lienthong_msglog::open_existing(&empty).is_err());
    assert!(lienthong_msglog::open_existing(&dir.path().join("missing")).is_err());
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "nothing created");
    assert!(!dir.path().join("missing").exists());
}

/// A store that cannot create its files says where, and keeps the `io::Error` beneath (for its
/// kind, say): the message is not the only trace of the cause.
#[test]
fn a_storage_failure_keeps_the_io_error_as_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let inside = file.join("log");
    for err in [RedbStore::open_dir(&inside).unwrap_err(), SegmentStore::open_dir(&inside).unwrap_err()] {
        assert!(matches!(err, LogError::Storage(_)), "{err:?}");
        assert!(err.to_string().contains("a-file"), "{err}");
        let io = std::error::Error::source(&err)
            .and_then(std::error::Error::source)
            .and_then(|e| e.downcast_ref::<std::io::Error>());
        assert!(io.is_some(), "no io::Error beneath {err:?}");
    }
}
