//! `MessageLog` over every store: concurrent group-committed appends, the head against the
//! stored records, inclusion and consistency proofs, signed and witnessed checkpoints, reopening
//! a durable log, body policies, and a failing store (`logging_failed`) that must leave no trace
//! and let the next append through.

#[macro_use]
mod support;

use support::{mem_store, redb_store, segment_store};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use lienthong_msglog::checkpoint::{self, Checkpoint};
use lienthong_msglog::merkle::{self, Hash, MemNodes};
use lienthong_msglog::record::{attach_body, decode_record, open_body};
use lienthong_msglog::store::StoreNodes;
use lienthong_msglog::{
    BodyPolicy, CheckpointSigner, Entry, Head, LogConfig, LogError, LogStore, MemStore, MessageLog,
    RedbStore, SegmentStore,
};
use lienthong_pki::{BodyKey, Fingerprint, KeyAlgorithm, PrivateKey, SealError};
use lienthong_proto::msglog::v1 as pb;
use lienthong_types::{ClientId, NodeId, ServiceId};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const NODE: &str = "VN/GOV/000.00.00.G01/ss1";

/// A request record of exchange `message_id` with a small plain body.
fn record(message_id: &str, logged_at_ms: i64) -> pb::LogRecord {
    let client: ClientId = "VN/GOV/000.00.00.G01/consumer".parse().unwrap();
    let service: ServiceId = "VN/GOV/000.00.00.G12/provider/getPerson".parse().unwrap();
    let node: NodeId = NODE.parse().unwrap();
    let mut r = pb::LogRecord {
        message_id: message_id.to_owned(),
        request_id: format!("req-{message_id}"),
        direction: pb::Direction::Request as i32,
        role: pb::Role::Consumer as i32,
        client: Some((&client).into()),
        service: Some((&service).into()),
        method: "GET".into(),
        path: "/person/1".into(),
        node: Some((&node).into()),
        logged_at_ms,
        ..Default::default()
    };
    attach_body(&mut r, format!("body of {message_id}").as_bytes(), &BodyPolicy::Full).unwrap();
    r
}

/// Every stored record's leaf hash (checked against the stored leaf node) and the root they
/// make, computed independently of the log.
fn recompute(store: &dyn LogStore) -> (Vec<Hash>, Hash) {
    let size = store.size().unwrap();
    let mut nodes = MemNodes::default();
    let mut leaves = Vec::with_capacity(size as usize);
    for i in 0..size {
        let bytes = store.record(i).unwrap().expect("not pruned");
        let leaf = merkle::leaf_hash(&bytes);
        assert_eq!(store.node(0, i).unwrap(), Some(leaf), "stored leaf hash of record {i}");
        nodes.push_leaf(leaf);
        leaves.push(leaf);
    }
    (leaves, nodes.root())
}

/// `tasks` tokio tasks each appending `per_task` records; returns (message id, appended) pairs.
async fn append_concurrently(
    log: &Arc<MessageLog>,
    wave: usize,
    tasks: usize,
    per_task: usize,
) -> Vec<(String, lienthong_msglog::Appended)> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for n in 0..per_task {
                let id = format!("w{wave}-t{t}-n{n}");
                let r = record(&id, (wave * 1_000_000 + t * 1000 + n) as i64);
                let appended = log.append(&r).await.unwrap();
                assert_eq!(appended.leaf, merkle::leaf_hash(&Entry::new(&r).bytes));
                out.push((id, appended));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all
}

fn node_signer(alg: KeyAlgorithm) -> CheckpointSigner {
    support::signer_for(NODE, alg)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64
}

// ---------------------------------------------------------------------------------------------
// Checks over any store
// ---------------------------------------------------------------------------------------------

async fn concurrent_appends_get_distinct_consecutive_indices(store: Arc<dyn LogStore>) {
    let log = Arc::new(MessageLog::open(store.clone(), LogConfig::default()).unwrap());
    let appended = append_concurrently(&log, 0, 32, 16).await;
    let mut indices: Vec<u64> = appended.iter().map(|(_, a)| a.index).collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..512).collect::<Vec<_>>(), "distinct and consecutive");
    for (id, a) in &appended {
        let stored = decode_record(&store.record(a.index).unwrap().unwrap()).unwrap();
        assert_eq!(&stored.message_id, id, "record {} is the one acknowledged there", a.index);
        assert_eq!(store.by_exchange(id).unwrap(), vec![a.index]);
    }
    assert_eq!(log.head().size, 512);
    assert_eq!(store.size().unwrap(), 512);
}

async fn head_proofs_and_consistency_match_the_stored_records(store: Arc<dyn LogStore>) {
    let log = Arc::new(MessageLog::open(store.clone(), LogConfig { max_batch: 7, queue: 64 }).unwrap());
    assert_eq!(log.head(), Head { size: 0, root: merkle::EMPTY_ROOT });
    let mut heads = Vec::new();
    for (wave, (tasks, per_task)) in [(1, 1), (5, 3), (16, 4), (3, 9), (8, 8)].into_iter().enumerate() {
        append_concurrently(&log, wave, tasks, per_task).await;
        let head = log.head();
        let (leaves, root) = recompute(&*store);
        assert_eq!(head.size, leaves.len() as u64);
        assert_eq!(head.root, root, "head root after wave {wave}");
        assert_eq!(merkle::root(&StoreNodes(&*store), head.size).unwrap(), root);
        heads.push(head);
    }
    let last = *heads.last().unwrap();
    let (leaves, _) = recompute(&*store);
    for (index, leaf) in leaves.iter().enumerate() {
        let index = index as u64;
        let proof = log.inclusion_proof(index, last.size).unwrap();
        merkle::verify_inclusion(leaf, index, last.size, &proof, &last.root).unwrap();
        // And in every earlier head that holds it.
        for head in heads.iter().filter(|h| index < h.size) {
            let proof = log.inclusion_proof(index, head.size).unwrap();
            merkle::verify_inclusion(leaf, index, head.size, &proof, &head.root).unwrap();
        }
    }
    for (i, old) in heads.iter().enumerate() {
        for new in &heads[i..] {
            let proof = log.consistency_proof(old.size, new.size).unwrap();
            merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &proof).unwrap();
        }
    }
    // A proof for a tree larger than the log is refused, not made up from the nodes there are
    // (the proof of a leaf never reads the leaf itself).
    for (index, size) in [(last.size, last.size + 1), (0, last.size + 1), (0, last.size + 1000)] {
        let err = log.inclusion_proof(index, size).unwrap_err();
        assert!(matches!(err, LogError::NoSuchRecord { .. }), "inclusion of {index} in {size}: {err:?}");
    }
    for new_size in [last.size + 1, last.size + 5, 2 * last.size] {
        let err = log.consistency_proof(last.size, new_size).unwrap_err();
        assert!(matches!(err, LogError::NoSuchRecord { .. }), "consistency to {new_size}: {err:?}");
    }
}

async fn checkpoints_are_signed_witnessed_and_kept(store: Arc<dyn LogStore>) {
    let log = Arc::new(MessageLog::open(store.clone(), LogConfig::default()).unwrap());
    for alg in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256] {
        append_concurrently(&log, alg as usize, 4, 5).await;
        let head = log.head();
        let signer = node_signer(alg);
        let info = signer.certificate.info().unwrap();
        let at = now_ms();
        let mut signed = log.checkpoint(&signer, at).unwrap();

        let stated =
            checkpoint::verify_log_signature(&signed, signer.certificate.fingerprint(), &info.public_key)
                .unwrap();
        assert_eq!(
            stated,
            Checkpoint { origin: NODE.into(), size: head.size, root: head.root, timestamp_ms: at }
        );
        // Kept: the checkpoint and the certificate that verifies it.
        assert_eq!(store.checkpoints().unwrap().last(), Some(&signed));
        assert!(store.certificates().unwrap().contains(&signer.certificate.der().to_vec()));
        // Another certificate's fingerprint, or another key, does not verify it.
        let other = node_signer(alg);
        assert!(
            checkpoint::verify_log_signature(&signed, other.certificate.fingerprint(), &info.public_key)
                .is_err()
        );
        assert!(
            checkpoint::verify_log_signature(
                &signed,
                signer.certificate.fingerprint(),
                &other.certificate.info().unwrap().public_key
            )
            .is_err()
        );

        // The registry co-signs.
        let witness = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let witness_id = Fingerprint::of(witness.public_key().raw());
        assert!(!checkpoint::is_witnessed(&signed));
        checkpoint::add_witness_signature(&mut signed, &witness, witness_id, "VN", at + 1).unwrap();
        assert!(checkpoint::is_witnessed(&signed));
        let keys = [(witness_id, witness.public_key())];
        assert_eq!(checkpoint::verify_witness_signatures(&signed, &keys).unwrap(), 1);
        let stranger = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let strangers = [(Fingerprint::of(stranger.public_key().raw()), stranger.public_key())];
        assert_eq!(checkpoint::verify_witness_signatures(&signed, &strangers).unwrap(), 0, "not trusted");
        // A witness id naming the right key id but another public key does not verify.
        assert!(
            checkpoint::verify_witness_signatures(&signed, &[(witness_id, stranger.public_key())]).is_err()
        );
        // The log signature still verifies beside the co-signature.
        checkpoint::verify_log_signature(&signed, signer.certificate.fingerprint(), &info.public_key)
            .unwrap();

        // The co-signed copy replaces the kept one.
        store.put_checkpoint(head.size, &signed).unwrap();
        let kept = store.checkpoints().unwrap();
        assert_eq!(kept.iter().filter(|c| Checkpoint::decode(c).unwrap().size == head.size).count(), 1);
        assert_eq!(kept.last(), Some(&signed));

        // An altered statement verifies under neither signature.
        let mut forged = signed.clone();
        let mut statement = Checkpoint::decode(&forged).unwrap();
        statement.size += 1;
        forged.checkpoint = prost::Message::encode_to_vec(&pb::Checkpoint {
            origin: statement.origin,
            tree_size: statement.size,
            root_hash: statement.root.to_vec(),
            timestamp_ms: statement.timestamp_ms,
        });
        assert!(
            checkpoint::verify_log_signature(&forged, signer.certificate.fingerprint(), &info.public_key)
                .is_err()
        );
        assert!(checkpoint::verify_witness_signatures(&forged, &keys).is_err());
    }
}

/// A clock that went back (it had run ahead) does not date a checkpoint before one already
/// made: the witness refuses a checkpoint older than the one it co-signed. The signature keeps
/// the real signing time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_is_never_dated_before_an_earlier_one() {
    let fixture = mem_store();
    let log = Arc::new(MessageLog::open(fixture.store.clone(), LogConfig::default()).unwrap());
    let signer = node_signer(KeyAlgorithm::Ed25519);
    let ahead = now_ms() + 3_600_000;
    append_concurrently(&log, 0, 1, 2).await;
    let first = Checkpoint::decode(&log.checkpoint(&signer, ahead).unwrap()).unwrap();
    append_concurrently(&log, 1, 1, 2).await;
    let back = now_ms();
    let signed = log.checkpoint(&signer, back).unwrap();
    let second = Checkpoint::decode(&signed).unwrap();
    assert!(second.size > first.size);
    assert_eq!(second.timestamp_ms, ahead);
    assert_eq!(signed.signatures[0].signed_at_ms, back);
    // Once the clock is past it again, checkpoints carry the clock's time.
    let later = ahead + 1000;
    assert_eq!(Checkpoint::decode(&log.checkpoint(&signer, later).unwrap()).unwrap().timestamp_ms, later);
}

async fn body_policies_round_trip_through_the_log(store: Arc<dyn LogStore>) {
    let log = MessageLog::open(store.clone(), LogConfig::default()).unwrap();
    let (key, _raw) = BodyKey::generate().unwrap();
    let key = Arc::new(key);
    let keys = {
        let key = key.clone();
        move |id: &str| (id == key.id()).then(|| key.clone())
    };
    let body = vec![0xA5u8; 1024];
    let mut stored = Vec::new();
    for (i, policy) in
        [BodyPolicy::Full, BodyPolicy::MetadataOnly, BodyPolicy::Encrypted(key.clone())].iter().enumerate()
    {
        let mut r = record(&format!("body-{i}"), i as i64);
        attach_body(&mut r, &body, policy).unwrap();
        let at = log.append(&r).await.unwrap();
        let back = decode_record(&store.record(at.index).unwrap().unwrap()).unwrap();
        assert_eq!(back, r, "stored bytes decode to the appended record");
        assert_eq!(back.body_length, 1024);
        assert_eq!(back.body_sha256, sha2_of(&body));
        stored.push(back);
    }
    let [full, metadata, encrypted] = <[pb::LogRecord; 3]>::try_from(stored).unwrap();

    assert_eq!(full.body_policy, pb::BodyPolicy::Full as i32);
    assert_eq!(open_body(&full, &keys).unwrap(), Some(body.clone()));

    assert_eq!(metadata.body_policy, pb::BodyPolicy::MetadataOnly as i32);
    assert!(metadata.body.is_none());
    assert_eq!(open_body(&metadata, &keys).unwrap(), None);

    assert_eq!(encrypted.body_policy, pb::BodyPolicy::Encrypted as i32);
    let Some(pb::log_record::Body::EncryptedBody(sealed)) = &encrypted.body else {
        panic!("not encrypted: {:?}", encrypted.body);
    };
    assert_eq!(sealed.key_id, key.id());
    assert!(!sealed.ciphertext.windows(16).any(|w| w == &body[..16]), "no plaintext at rest");
    assert_eq!(open_body(&encrypted, &keys).unwrap(), Some(body.clone()));

    // The encrypted body moved onto another record (same digest and length) does not open.
    let mut moved = full.clone();
    moved.body_policy = encrypted.body_policy;
    moved.body = encrypted.body.clone();
    assert!(matches!(open_body(&moved, &keys), Err(LogError::Body(SealError::Open))), "moved body");
    // Nor onto the response of the same exchange.
    let mut response = encrypted.clone();
    response.direction = pb::Direction::Response as i32;
    assert!(matches!(open_body(&response, &keys), Err(LogError::Body(SealError::Open))));
    // Nor with the ciphertext altered.
    let mut altered = encrypted.clone();
    if let Some(pb::log_record::Body::EncryptedBody(e)) = &mut altered.body {
        e.ciphertext[0] ^= 1;
    }
    assert!(matches!(open_body(&altered, &keys), Err(LogError::Body(SealError::Open))));
    // Without the key: refused by name; with another key under that name: does not open.
    assert!(matches!(open_body(&encrypted, |_: &str| None), Err(LogError::Malformed(_))));
    let (other, _) = BodyKey::generate().unwrap();
    let other = Arc::new(other);
    assert!(matches!(open_body(&encrypted, |_: &str| Some(other.clone())), Err(LogError::Body(_))));
    // A plain body that does not match its digest is refused.
    let mut swapped = full.clone();
    swapped.body = Some(pb::log_record::Body::PlainBody(b"something else".to_vec()));
    assert!(matches!(open_body(&swapped, &keys), Err(LogError::Malformed(_))));
}

fn sha2_of(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let fixture = super::mem_store();
                    super::$name(fixture.store.clone()).await;
                }
            )*
        }
        mod redb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let fixture = super::redb_store();
                    super::$name(fixture.store.clone()).await;
                }
            )*
        }
        mod segment {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let fixture = super::segment_store();
                    super::$name(fixture.store.clone()).await;
                }
            )*
        }
    };
}

on_every_store!(
    concurrent_appends_get_distinct_consecutive_indices,
    head_proofs_and_consistency_match_the_stored_records,
    checkpoints_are_signed_witnessed_and_kept,
    body_policies_round_trip_through_the_log,
);

// ---------------------------------------------------------------------------------------------
// The durable log across restarts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reopened_redb_log_continues_with_consistent_roots() {
    reopened_log_continues_with_consistent_roots(|dir| Arc::new(RedbStore::open_dir(dir).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reopened_segment_log_continues_with_consistent_roots() {
    reopened_log_continues_with_consistent_roots(|dir| Arc::new(SegmentStore::open_dir(dir).unwrap())).await;
}

async fn reopened_log_continues_with_consistent_roots(open: fn(&std::path::Path) -> Arc<dyn LogStore>) {
    let dir = tempfile::tempdir().unwrap();
    let signer = node_signer(KeyAlgorithm::Ed25519);
    let (first, signed) = {
        let log = Arc::new(MessageLog::open(open(dir.path()), LogConfig::default()).unwrap());
        append_concurrently(&log, 0, 10, 7).await;
        let signed = log.checkpoint(&signer, now_ms()).unwrap();
        let head = log.head();
        Arc::into_inner(log).unwrap().close();
        (head, signed)
    };
    assert_eq!(first.size, 70);

    for restart in 1..=3 {
        let store: Arc<dyn LogStore> = open(dir.path());
        let log = Arc::new(MessageLog::open(store.clone(), LogConfig::default()).unwrap());
        let before = log.head();
        assert_eq!(before.root, recompute(&*store).1, "head after restart {restart}");
        let appended = append_concurrently(&log, restart, 6, 5).await;
        let mut indices: Vec<u64> = appended.iter().map(|(_, a)| a.index).collect();
        indices.sort_unstable();
        assert_eq!(indices, (before.size..before.size + 30).collect::<Vec<_>>(), "continues at the end");
        let after = log.head();
        assert_eq!(after.root, recompute(&*store).1);
        for old in [first, before] {
            let proof = log.consistency_proof(old.size, after.size).unwrap();
            merkle::verify_consistency(old.size, after.size, &old.root, &after.root, &proof).unwrap();
        }
        // The checkpoint signed before the first restart is still there and still verifies.
        assert_eq!(store.checkpoints().unwrap().first(), Some(&signed));
        let info = signer.certificate.info().unwrap();
        let stated =
            checkpoint::verify_log_signature(&signed, signer.certificate.fingerprint(), &info.public_key)
                .unwrap();
        assert_eq!((stated.size, stated.root), (first.size, first.root));
        Arc::into_inner(log).unwrap().close();
    }
}

#[test]
fn open_refuses_a_tail_that_does_not_match_its_leaf_hash() {
    let store = Arc::new(MemStore::new());
    let good = Entry::new(&record("good", 1));
    let bad = Entry::new(&record("bad", 2));
    let good_leaf = merkle::leaf_hash(&good.bytes);
    let wrong = merkle::leaf_hash(b"not the record");
    store
        .append(
            0,
            &[good, bad],
            &[(0, 0, good_leaf), (0, 1, wrong), (1, 0, merkle::node_hash(&good_leaf, &wrong))],
        )
        .unwrap();
    match MessageLog::open(store, LogConfig::default()) {
        Err(LogError::Storage(msg)) => assert!(msg.to_string().contains("record 1"), "{msg}"),
        other => panic!("opened a damaged log: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// A store that fails on demand (disk full, I/O error)
// ---------------------------------------------------------------------------------------------

/// Delegates to a `MemStore`, but `append` fails while `fail` is set, and can be held (the
/// writer blocks inside `append` until released) so that a batch queues up behind it.
#[derive(Default)]
struct FailingStore {
    inner: MemStore,
    fail: AtomicBool,
    /// (entered, release): `append` signals `entered`, then waits for `release`.
    hold: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
    /// Every batch the writer tried: (first, records, succeeded).
    batches: Mutex<Vec<(u64, usize, bool)>>,
    /// Repairs the log asked for.
    repairs: std::sync::atomic::AtomicU64,
}

impl LogStore for FailingStore {
    fn size(&self) -> Result<u64, LogError> {
        self.inner.size()
    }
    fn append(&self, first: u64, entries: &[Entry], nodes: &[(u8, u64, Hash)]) -> Result<(), LogError> {
        let hold = self.hold.lock().unwrap().take();
        if let Some((entered, release)) = hold {
            entered.send(()).unwrap();
            release.recv_timeout(Duration::from_secs(10)).expect("the test releases the writer");
        }
        let result = if self.fail.load(Ordering::SeqCst) {
            Err(LogError::Storage("No space left on device (os error 28)".into()))
        } else {
            self.inner.append(first, entries, nodes)
        };
        self.batches.lock().unwrap().push((first, entries.len(), result.is_ok()));
        result
    }
    fn record(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        self.inner.record(index)
    }
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, LogError> {
        self.inner.node(level, index)
    }
    fn repair(&self) -> Result<(), LogError> {
        self.repairs.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(LogError::Storage("No space left on device (os error 28)".into()));
        }
        Ok(())
    }
    delegate_indexes_to_inner!();
}

/// Waits (bounded) until the log says it takes appends again.
async fn until_healthy(log: &MessageLog) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.health().failing.is_some() {
        assert!(std::time::Instant::now() < deadline, "the log did not recover: {:?}", log.health());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

type AppendFuture = Pin<Box<dyn Future<Output = Result<lienthong_msglog::Appended, LogError>> + Send>>;

/// Polls an append once, which queues it for the writer (the queue has room).
fn queue(fut: &mut AppendFuture) {
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Pending), "the writer is held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_store_write_fails_every_record_of_the_batch_and_the_log_recovers_by_itself() {
    let store = Arc::new(FailingStore::default());
    let log = Arc::new(MessageLog::open(store.clone(), LogConfig::default()).unwrap());
    for n in 0..3 {
        assert_eq!(log.append(&record(&format!("ok-{n}"), n)).await.unwrap().index, n as u64);
    }
    let before = log.head();

    // The disk fills up. The writer is held inside the first failing write while 20 more
    // appends queue behind it: they form the next batch, which fails as a whole.
    store.fail.store(true, Ordering::SeqCst);
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    *store.hold.lock().unwrap() = Some((entered_tx, release_rx));
    let first = tokio::spawn({
        let log = log.clone();
        async move { log.append(&record("lost-first", 10)).await }
    });
    tokio::task::spawn_blocking(move || entered.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the writer reached the store");
    let mut queued: Vec<AppendFuture> = (0..20)
        .map(|n| {
            let log = log.clone();
            Box::pin(async move { log.append(&record(&format!("lost-{n}"), 20 + n)).await }) as AppendFuture
        })
        .collect();
    for fut in &mut queued {
        queue(fut);
    }
    release.send(()).unwrap();

    let err = first.await.unwrap().unwrap_err();
    assert!(matches!(err, LogError::Storage(ref m) if m.to_string().contains("No space left")), "{err:?}");
    for fut in queued {
        let err = fut.await.unwrap_err();
        assert!(matches!(err, LogError::Storage(_)), "{err:?}");
    }
    assert_eq!(
        *store.batches.lock().unwrap(),
        vec![(0, 1, true), (1, 1, true), (2, 1, true), (3, 1, false)],
        "the 20 appends queued behind the failed write were refused without a write: the log \
         is failing until its store is repaired"
    );

    // Nothing was acknowledged or left behind.
    assert_eq!(log.head(), before);
    assert_eq!(store.size().unwrap(), 3);
    assert!(store.by_exchange("lost-first").unwrap().is_empty());
    assert!(store.by_exchange("lost-7").unwrap().is_empty());
    assert!(store.node(0, 3).unwrap().is_none());

    // While the store is failing, appends are refused without reaching it, and health says so.
    let failing = log.health().failing.expect("the log reports that it is failing");
    assert!(failing.error.contains("No space left"), "{failing:?}");
    assert!(log.writer_alive());
    let err = log.append(&record("refused-while-failing", 25)).await.unwrap_err();
    assert!(matches!(err, LogError::Storage(_)), "{err:?}");
    assert_eq!(store.batches.lock().unwrap().len(), 4, "refused before the store");

    // It keeps trying to repair the store with back-off, without traffic.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.repairs.load(Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "no repair was tried");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(log.health().failing.is_some());

    // The disk has room again: the log recovers by itself (no append needed), the next append
    // lands at the same index, the tree is whole.
    store.fail.store(false, Ordering::SeqCst);
    until_healthy(&log).await;
    let health = log.health();
    assert_eq!((health.failures, health.recoveries), (1, 1), "{health:?}");
    let again = log.append(&record("retry", 30)).await.unwrap();
    assert_eq!(again.index, 3);
    let (_, root) = recompute(&*store);
    assert_eq!(log.head(), Head { size: 4, root });
    let proof = log.consistency_proof(before.size, 4).unwrap();
    merkle::verify_consistency(before.size, 4, &before.root, &root, &proof).unwrap();
    assert_eq!(store.batches.lock().unwrap().last(), Some(&(3, 1, true)));
}
