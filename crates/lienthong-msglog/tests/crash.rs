//! Crash consistency of the durable log: a child process (this test binary, re-executed) appends
//! from many tasks and prints each acknowledgement; the parent kills it with SIGKILL at a random
//! moment, reopens the store and checks that every acknowledged record is there, intact, at the
//! index it was acknowledged at, that the tree is whole, and that the log takes new appends.
//! Rounds accumulate in one directory, so later rounds also reopen logs that were killed before.
//! Runs against both durable stores: `RedbStore` and `SegmentStore`. The child also signs a
//! checkpoint every few milliseconds, so kills land during checkpoint writes too: every kept
//! checkpoint must verify against the reopened tree.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lienthong_msglog::merkle::{self, MemNodes};
use lienthong_msglog::record::{attach_body, decode_record};
use lienthong_msglog::store::StoreNodes;
use lienthong_msglog::{
    BodyPolicy, Entry, LogConfig, LogStore, MessageLog, RedbStore, SegmentStore, verify_store,
};
use lienthong_proto::msglog::v1 as pb;

/// Selects the child role: the directory of the log it writes.
const CHILD_ENV: &str = "LIENTHONG_CRASH_CHILD";
/// Which store the child opens: `redb` or `segment`.
const STORE_ENV: &str = "LIENTHONG_CRASH_STORE";
const CHILD_TEST: &str = "crash_child_appends_until_killed";
const WRITERS: usize = 32;
const ROUNDS: usize = 5;
/// The child stops by itself after this long, should the parent be gone.
const CHILD_LIMIT: Duration = Duration::from_secs(30);
/// How long a round may take before the test gives up.
const ROUND_LIMIT: Duration = Duration::from_secs(20);

/// The record for a message id: fully determined by it, with a 1 KiB body, so the parent can
/// rebuild the exact bytes that were acknowledged.
fn record_for(message_id: &str) -> pb::LogRecord {
    let seq: i64 = message_id.rsplit('-').next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut r = pb::LogRecord {
        message_id: message_id.to_owned(),
        request_id: format!("req-{message_id}"),
        direction: pb::Direction::Request as i32,
        role: pb::Role::Consumer as i32,
        method: "POST".into(),
        path: "/crash".into(),
        logged_at_ms: 1_700_000_000_000 + seq,
        ..Default::default()
    };
    let body: Vec<u8> = message_id.bytes().cycle().take(1024).collect();
    attach_body(&mut r, &body, &BodyPolicy::Full).unwrap();
    r
}

/// Opens the durable store of kind `kind` (`redb` or `segment`) in `dir`.
fn open_store(kind: &str, dir: &Path) -> Arc<dyn LogStore> {
    match kind {
        "redb" => Arc::new(RedbStore::open_dir(dir).unwrap()),
        "segment" => Arc::new(SegmentStore::open_dir(dir).unwrap()),
        other => panic!("unknown store kind {other:?}"),
    }
}

fn random() -> u64 {
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// The child: appends from `WRITERS` tasks until killed (or `CHILD_LIMIT`), printing
/// `ack <message id> <index>` once each append has returned.
#[test]
#[ignore = "run by crash::acknowledged_records_survive_sigkill{,_segment_store} in a child process"]
fn crash_child_appends_until_killed() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // run by hand with --ignored: nothing to do
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let kind = std::env::var(STORE_ENV).unwrap_or_else(|_| "redb".into());
        let store = open_store(&kind, Path::new(&dir));
        let log = Arc::new(MessageLog::open(store, LogConfig::default()).unwrap());
        let started = Instant::now();
        let pid = std::process::id();
        let signer = support::signer_for("VN/GOV/000.00.00.G01/ss1", lienthong_pki::KeyAlgorithm::Ed25519);
        let checkpoints = {
            let log = log.clone();
            tokio::spawn(async move {
                while started.elapsed() < CHILD_LIMIT {
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as i64;
                    log.checkpoint(&signer, now_ms).unwrap();
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            })
        };
        let tasks: Vec<_> = (0..WRITERS)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut seq = 0u64;
                    while started.elapsed() < CHILD_LIMIT {
                        let id = format!("p{pid}-t{t}-{seq}");
                        let at = log.append(&record_for(&id)).await.unwrap();
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ack {id} {}", at.index).unwrap();
                        out.flush().unwrap();
                        seq += 1;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        checkpoints.await.unwrap();
    });
}

/// One round: runs the child, kills it, returns what it acknowledged (message id, index).
fn run_child_and_kill(kind: &str, dir: &Path, round: usize) -> Vec<(String, u64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", CHILD_TEST, "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, dir)
        .env(STORE_ENV, kind)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, acks_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("ack ") {
                let (id, index) = rest.split_once(' ').expect("ack <id> <index>");
                let ack = (id.to_owned(), index.parse::<u64>().expect("an index"));
                if lines.send(ack).is_err() {
                    break;
                }
            }
        }
    });

    // Kill after a random number of acknowledgements or a random 50–400 ms after the first,
    // whichever comes first: sometimes in the middle of a commit, sometimes between two.
    let kill_after_acks = 1 + random() % 4000;
    let kill_after = Duration::from_millis(50 + random() % 351);
    let deadline = Instant::now() + ROUND_LIMIT;
    let mut acks = Vec::new();
    let mut first_ack = None;
    loop {
        let now = Instant::now();
        assert!(now < deadline, "round {round}: the child acknowledged nothing in time");
        if first_ack.is_some_and(|t: Instant| now >= t + kill_after) || acks.len() as u64 >= kill_after_acks {
            break;
        }
        let wait = first_ack.map_or(deadline - now, |t| (t + kill_after).saturating_duration_since(now));
        match acks_rx.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(ack) => {
                first_ack.get_or_insert_with(Instant::now);
                acks.push(ack);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("round {round}: the child exited by itself: {:?}", child.wait())
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "round {round}: the child was killed");
    // Lines already written before the kill are acknowledgements too.
    reader.join().unwrap();
    acks.extend(acks_rx.try_iter());
    acks
}

/// Reopens the store after a kill and checks everything acknowledged so far.
fn check_after_crash(kind: &str, dir: &Path, acked: &BTreeMap<u64, String>, round: usize) -> u64 {
    let store: Arc<dyn LogStore> = open_store(kind, dir);
    let size = store.size().unwrap();
    if let Some((&max, _)) = acked.last_key_value() {
        assert!(size > max, "round {round}: {size} records, but record {max} was acknowledged");
    }
    for (&index, id) in acked {
        let bytes = store.record(index).unwrap().unwrap_or_else(|| panic!("record {index} is gone"));
        let expected = Entry::new(&record_for(id)).bytes;
        assert!(bytes == expected, "round {round}: record {index} is not the acknowledged {id}");
        assert!(store.by_exchange(id).unwrap().contains(&index), "{id} is indexed");
    }

    // The whole tree recomputed from the records is the stored one; every record decodes.
    let mut leaves = MemNodes::default();
    for index in 0..size {
        let bytes = store.record(index).unwrap().expect("nothing pruned");
        decode_record(&bytes).unwrap();
        let leaf = merkle::leaf_hash(&bytes);
        assert_eq!(store.node(0, index).unwrap(), Some(leaf), "round {round}: leaf hash {index}");
        leaves.push_leaf(leaf);
    }
    let root = leaves.root();
    assert_eq!(merkle::root(&StoreNodes(&*store), size).unwrap(), root, "round {round}: stored tree");
    // Every checkpoint kept (signed while the kill could land) matches the tree at its size.
    let report = verify_store(&*store, None, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("round {round}: the log with its checkpoints verifies: {e}"));
    assert_eq!(report.size, size);

    // The log opens over it and takes a fresh append at the end.
    let log = MessageLog::open(store.clone(), LogConfig::default()).unwrap();
    assert_eq!((log.head().size, log.head().root), (size, root));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let id = format!("after-crash-{round}-0");
    let at = runtime.block_on(log.append(&record_for(&id))).unwrap();
    assert_eq!(at.index, size, "round {round}: the next append goes at the end");
    leaves.push_leaf(at.leaf);
    assert_eq!(log.head().root, leaves.root());
    log.close();
    size + 1
}

#[test]
fn acknowledged_records_survive_sigkill() {
    survives_sigkill("redb");
}

#[test]
fn acknowledged_records_survive_sigkill_segment_store() {
    survives_sigkill("segment");
}

fn survives_sigkill(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    // Every acknowledgement of every round, by index (an index is acknowledged once).
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    let mut size = 0;
    for round in 0..ROUNDS {
        let acks = run_child_and_kill(kind, dir.path(), round);
        assert!(!acks.is_empty(), "round {round}");
        for (id, index) in &acks {
            assert!(*index >= size, "round {round}: {id} acknowledged at {index}, below the start {size}");
            assert!(ids.insert(id.clone()), "{id} acknowledged twice");
            if let Some(other) = acked.insert(*index, id.clone()) {
                panic!("index {index} acknowledged for both {other} and {id}");
            }
        }
        let after = check_after_crash(kind, dir.path(), &acked, round);
        // The post-crash append is part of the log now; keep it checked in later rounds.
        acked.insert(after - 1, format!("after-crash-{round}-0"));
        size = after;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{kind} round {round}: {} acknowledged, log has {size} records", acks.len()).unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
}
