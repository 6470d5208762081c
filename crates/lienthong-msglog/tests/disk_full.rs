//! The disk under a segment store fills up (a real, small tmpfs): appends fail and are refused,
//! the log repairs itself once space returns, and the store reopens after a clean close (what a
//! SIGTERM does) whether the disk was still full or not: the index never names a frame that is
//! not durable. Needs root to mount; CI requires it (`LIENTHONG_REQUIRE_TMPFS`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_msglog::record::attach_body;
use lienthong_msglog::{BodyPolicy, LogConfig, LogStore, MessageLog, SegmentStore, verify_store};
use lienthong_proto::msglog::v1 as pb;

#[path = "../../lienthong-testkit/src/tmpfs.rs"]
mod tmpfs;

const BALLAST: &str = "ballast";

fn record(n: u64) -> pb::LogRecord {
    let mut r = pb::LogRecord {
        message_id: format!("m-{n}"),
        request_id: format!("r-{n}"),
        direction: pb::Direction::Request as i32,
        role: pb::Role::Consumer as i32,
        method: "POST".into(),
        path: "/disk-full".into(),
        logged_at_ms: 1_700_000_000_000 + i64::try_from(n).unwrap(),
        ..Default::default()
    };
    attach_body(&mut r, &vec![b'x'; 4096], &BodyPolicy::Full).unwrap();
    r
}

/// Appends from 8 tasks until appends fail (bounded): returns the acknowledged message ids.
async fn fill_until_refused(log: &Arc<MessageLog>, next: &mut u64) -> Vec<String> {
    let mut acked = Vec::new();
    let mut refusals = 0;
    for _ in 0..20_000 {
        let batch: Vec<u64> = (*next..*next + 8).collect();
        *next += 8;
        let results = futures_join(log, &batch).await;
        for (n, ok) in batch.iter().zip(results) {
            if ok {
                acked.push(format!("m-{n}"));
            } else {
                refusals += 1;
            }
        }
        if refusals >= 16 {
            return acked;
        }
    }
    panic!("the disk never filled");
}

async fn futures_join(log: &Arc<MessageLog>, ns: &[u64]) -> Vec<bool> {
    let tasks: Vec<_> = ns
        .iter()
        .map(|&n| {
            let log = log.clone();
            tokio::spawn(async move { log.append(&record(n)).await.is_ok() })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn until_writable(log: &MessageLog) -> Duration {
    let start = Instant::now();
    while log.health().failing.is_some() {
        assert!(start.elapsed() < Duration::from_secs(15), "no recovery: {:?}", log.health());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// Every acknowledged record is in the store under its id, and the store verifies.
fn check(store: &dyn LogStore, acked: &[String]) {
    for id in acked {
        assert_eq!(store.by_exchange(id).unwrap().len(), 1, "acknowledged record {id} is missing");
    }
    let report = verify_store(store, None, &mut |_, _| {}).expect("the log verifies");
    assert_eq!(report.size, store.size().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_is_survived_repaired_and_closed_cleanly() {
    let parent = tempfile::tempdir().unwrap();
    let Some(fs) = tmpfs::Tmpfs::mount(parent.path(), 6 << 20) else { return };
    let dir = fs.path().join("log");
    // The ballast holds a third of the disk; the log fills the rest.
    write_ballast(fs.path(), 2 << 20);
    let mut next = 0u64;
    let mut acked = Vec::new();

    // 1. The disk fills: appends are refused, the log says it is failing; then space returns
    //    and it takes appends again by itself; then a clean close and a reopen.
    {
        let store = Arc::new(SegmentStore::open_dir(&dir).unwrap());
        let log = Arc::new(MessageLog::open(store.clone(), LogConfig::default()).unwrap());
        acked.extend(fill_until_refused(&log, &mut next).await);
        let failing = log.health().failing.expect("the log reports the failure");
        assert!(
            failing.error.contains("No space left") || failing.error.contains("os error 28"),
            "{failing:?}"
        );
        // Still full: it stays failing (repairs are tried and fail).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(log.health().failing.is_some_and(|f| f.repairs_tried > 0), "{:?}", log.health());
        fs.free_ballast(BALLAST);
        until_writable(&log).await;
        for n in next..next + 20 {
            log.append(&record(n)).await.expect("appends succeed once space returned");
            acked.push(format!("m-{n}"));
        }
        next += 20;
        assert_eq!(log.health().recoveries, 1);
        Arc::try_unwrap(log).expect("one owner").close();
        drop(store);
    }
    check(&SegmentStore::open_dir(&dir).unwrap(), &acked);

    // 2. Full again, and closed cleanly while still full: an open on the full disk fails with
    //    a clear error and changes nothing; once space returns the open finds exactly the
    //    acknowledged records.
    write_ballast(fs.path(), 1 << 20);
    {
        let store = Arc::new(SegmentStore::open_dir(&dir).unwrap());
        let log = Arc::new(MessageLog::open(store.clone(), LogConfig::default()).unwrap());
        acked.extend(fill_until_refused(&log, &mut next).await);
        Arc::try_unwrap(log).expect("one owner").close();
        drop(store);
    }
    let err = SegmentStore::open_dir(&dir).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.is_empty() || err.contains("No space left"), "{err}");
    fs.free_ballast(BALLAST);
    let store = SegmentStore::open_dir(&dir).expect("the log reopens after a clean close on a full disk");
    check(&store, &acked);
    assert_eq!(store.size().unwrap(), acked.len() as u64, "nothing but the acknowledged records");
}

fn write_ballast(dir: &std::path::Path, bytes: usize) {
    let mut f = std::fs::File::create(dir.join(BALLAST)).unwrap();
    std::io::Write::write_all(&mut f, &vec![1u8; bytes]).unwrap();
    f.sync_all().unwrap();
}

/// The reproduction of issue #14, item 1: fill the disk until appends fail, free the space, close
/// cleanly (as on SIGTERM): the store reopens, with exactly the acknowledged records. (It used
/// to commit a batch's index before its frames were written, and closing the index made that
/// commit durable: "segment ... N bytes, but the index says acknowledged records end at M".)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_close_after_a_full_disk_reopens() {
    let parent = tempfile::tempdir().unwrap();
    let Some(fs) = tmpfs::Tmpfs::mount(parent.path(), 4 << 20) else { return };
    let dir = fs.path().join("log");
    write_ballast(fs.path(), 1 << 20);
    let mut next = 0;
    let acked = {
        let store = Arc::new(SegmentStore::open_dir(&dir).unwrap());
        let log = Arc::new(MessageLog::open(store.clone(), LogConfig::default()).unwrap());
        let acked = fill_until_refused(&log, &mut next).await;
        fs.free_ballast(BALLAST);
        Arc::try_unwrap(log).expect("one owner").close();
        acked
    };
    let store = SegmentStore::open_dir(&dir).expect("the log reopens");
    check(&store, &acked);
    assert_eq!(store.size().unwrap(), acked.len() as u64);
}
