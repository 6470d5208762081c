//! Durable append throughput and latency of the message log, and verification throughput:
//!
//!     cargo bench -p lienthong-msglog --bench append
//!
//! For each store (`LIENTHONG_BENCH_STORES`, default `redb,segment`: `RedbStore` and
//! `SegmentStore`), a `MessageLog` over it on the real disk (`target/tmp`, or `LIENTHONG_BENCH_DIR`;
//! the file system type and the measured fsync latency are printed, so a tmpfs run is
//! recognisable), 1 KiB records, N concurrent writers (tokio tasks on a multi-thread runtime),
//! each appending one record at a time and waiting for it to be durable, for a fixed duration
//! per N (`LIENTHONG_BENCH_SECS`, default 3; writer counts from `LIENTHONG_BENCH_WRITERS`,
//! default `1,16,64,256`). Then the store alone: `LogStore::append` of prebuilt batches of 64
//! and 1024 records, the ceiling of group commit at that batch size. Then verification: reopen
//! the largest log, read every record back, recompute its leaf hash and the root, and compare
//! with the stored tree.
//!
//! Plain `std::time` measurement, no harness dependency.

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_msglog::merkle::{self, Frontier};
use lienthong_msglog::record::attach_body;
use lienthong_msglog::{BodyPolicy, Entry, LogConfig, LogStore, MessageLog, RedbStore, SegmentStore};
use lienthong_proto::msglog::v1 as pb;
use lienthong_types::{ClientId, ServiceId};

/// Encoded record size the benchmark aims at.
const RECORD_BYTES: usize = 1024;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A realistic record (ids, digests, a body) padded to `RECORD_BYTES` encoded.
fn make_record(writer: usize, seq: u64) -> pb::LogRecord {
    let client: ClientId = "VN/GOV/000.00.00.G01/consumer".parse().unwrap();
    let service: ServiceId = "VN/GOV/000.00.00.G12/provider/getPerson".parse().unwrap();
    let mut r = pb::LogRecord {
        message_id: format!("bench-{writer:04}-{seq:010}"),
        request_id: format!("req-{writer:04}-{seq:010}"),
        direction: pb::Direction::Request as i32,
        role: pb::Role::Consumer as i32,
        client: Some((&client).into()),
        service: Some((&service).into()),
        method: "POST".into(),
        path: "/person/search".into(),
        logged_at_ms: 1_700_000_000_000 + seq as i64,
        headers_sha256: vec![7; 32],
        ..Default::default()
    };
    attach_body(&mut r, &[], &BodyPolicy::Full).unwrap();
    let overhead = prost::Message::encoded_len(&r) + 3; // body length prefix grows to 2 bytes
    let body = vec![(seq % 251) as u8; RECORD_BYTES.saturating_sub(overhead)];
    attach_body(&mut r, &body, &BodyPolicy::Full).unwrap();
    r
}

/// The file system holding `path` (longest mount point prefix in /proc/mounts).
fn file_system(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, at, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(at).then(|| (at.len(), format!("{fs} ({dev} on {at})")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, fs)| fs)
}

/// Median latency of a write + fsync: 4 KiB appended (the file grows), 4 KiB overwritten in
/// place, and 64 KiB appended with `fdatasync` (what an append-only segment file would pay for
/// a batch of 64 one-KiB records).
fn fsync_probe(dir: &Path) -> [Duration; 3] {
    use std::io::{Seek, SeekFrom};
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut median = |size: usize, grow: bool, data_only: bool| {
        let block = vec![0x5au8; size];
        let mut t: Vec<Duration> = (0..64)
            .map(|_| {
                if !grow {
                    f.seek(SeekFrom::Start(0)).unwrap();
                }
                f.write_all(&block).unwrap();
                let start = Instant::now();
                if data_only { f.sync_data() } else { f.sync_all() }.unwrap();
                start.elapsed()
            })
            .collect();
        t.sort();
        t[t.len() / 2]
    };
    let probes = [median(4096, true, false), median(4096, false, false), median(65536, true, true)];
    drop(f);
    let _ = std::fs::remove_file(path);
    probes
}

/// Opens a store of kind `kind` (`redb` or `segment`) in `dir`.
fn open_store(kind: &str, dir: &Path) -> Arc<dyn LogStore> {
    match kind {
        "redb" => Arc::new(RedbStore::open_dir(dir).unwrap()),
        "segment" => Arc::new(SegmentStore::open_dir(dir).unwrap()),
        other => panic!("LIENTHONG_BENCH_STORES: unknown store {other:?} (redb, segment)"),
    }
}

struct Run {
    writers: usize,
    records: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    dir: tempfile::TempDir,
}

fn append_run(base: &Path, kind: &str, writers: usize, duration: Duration) -> Run {
    let dir = tempfile::tempdir_in(base).unwrap();
    let store = open_store(kind, dir.path());
    let log = Arc::new(MessageLog::open(store, LogConfig::default()).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (latencies, elapsed) = runtime.block_on(async {
        let start = Instant::now();
        let deadline = start + duration;
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut seq = 0;
                    while Instant::now() < deadline {
                        let r = make_record(w, seq);
                        let t = Instant::now();
                        log.append(&r).await.unwrap();
                        latencies.push(t.elapsed());
                        seq += 1;
                    }
                    latencies
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        (all, start.elapsed())
    });
    let mut latencies = latencies;
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let records = latencies.len() as u64;
    assert_eq!(log.head().size, records);
    let (p50, p99) = (pick(0.50), pick(0.99));
    Arc::into_inner(log).unwrap().close();
    Run { writers, records, elapsed, p50, p99, dir }
}

/// The store alone, without the log or any task: `LogStore::append` of prebuilt batches of
/// `batch` records (with their tree nodes), one durable commit each: the ceiling the log's group
/// commit can reach when every batch is exactly that large (only the time inside `append`
/// counts, not building the records).
fn store_run(base: &Path, kind: &str, batch: usize, duration: Duration) -> (u64, Duration) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let store = open_store(kind, dir.path());
    let mut frontier = Frontier::new();
    let start = Instant::now();
    let mut in_store = Duration::ZERO;
    let mut seq = 0u64;
    while start.elapsed() < duration {
        let entries: Vec<Entry> =
            (0..batch).map(|i| Entry::new(&make_record(i % 64, seq + i as u64))).collect();
        let nodes: Vec<_> =
            entries.iter().flat_map(|e| frontier.append(merkle::leaf_hash(&e.bytes))).collect();
        let t = Instant::now();
        store.append(seq, &entries, &nodes).unwrap();
        in_store += t.elapsed();
        seq += batch as u64;
    }
    (seq, in_store)
}

/// Reads every record back, recomputes leaf hashes and the root; returns (records, elapsed).
fn verify_run(kind: &str, dir: &Path) -> (u64, Duration) {
    let store = open_store(kind, dir);
    let expected =
        merkle::root(&lienthong_msglog::store::StoreNodes(&*store), store.size().unwrap()).unwrap();
    let start = Instant::now();
    let size = store.size().unwrap();
    let mut frontier = Frontier::new();
    for i in 0..size {
        let bytes = store.record(i).unwrap().expect("not pruned");
        frontier.append(merkle::leaf_hash(&bytes));
    }
    let root = frontier.root();
    let elapsed = start.elapsed();
    assert_eq!(root, expected, "the recomputed root is the stored one");
    (size, elapsed)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let base: PathBuf = std::env::var_os("LIENTHONG_BENCH_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    std::fs::create_dir_all(&base).unwrap();
    let secs: f64 = env_or("LIENTHONG_BENCH_SECS", 3.0);
    let writers: Vec<usize> = std::env::var("LIENTHONG_BENCH_WRITERS")
        .unwrap_or_else(|_| "1,16,64,256".into())
        .split(',')
        .map(|w| w.trim().parse().expect("LIENTHONG_BENCH_WRITERS: comma-separated counts"))
        .collect();
    let fs = file_system(&base);
    let [grow, overwrite, segment] = fsync_probe(&base);
    let record_bytes = Entry::new(&make_record(0, 0)).bytes.len();
    println!("directory:  {}", base.display());
    println!("filesystem: {fs}");
    let not_a_disk = fs.starts_with("tmpfs") || fs.starts_with("ramfs");
    println!(
        "fsync:      median {:.3} ms for 4 KiB appended, {:.3} ms for 4 KiB overwritten, \
         {:.3} ms for 64 KiB appended (fdatasync){}",
        ms(grow),
        ms(overwrite),
        ms(segment),
        if not_a_disk { "  -- NOT A REAL DISK: fsync is free here" } else { "" }
    );
    println!(
        "cpus:       {}",
        std::thread::available_parallelism().map_or_else(|_| "?".into(), |n| n.to_string())
    );
    println!("records:    {record_bytes} bytes encoded, {secs} s per writer count, durable before acked");
    let stores: Vec<String> = std::env::var("LIENTHONG_BENCH_STORES")
        .unwrap_or_else(|_| "redb,segment".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    for kind in &stores {
        println!();
        println!("== {kind} ==");
        println!("{:>8} {:>10} {:>12} {:>10} {:>10}", "writers", "records", "records/s", "p50 ms", "p99 ms");
        let mut largest: Option<Run> = None;
        for &w in &writers {
            let run = append_run(&base, kind, w, Duration::from_secs_f64(secs));
            println!(
                "{:>8} {:>10} {:>12.0} {:>10.3} {:>10.3}",
                run.writers,
                run.records,
                run.records as f64 / run.elapsed.as_secs_f64(),
                ms(run.p50),
                ms(run.p99)
            );
            if largest.as_ref().is_none_or(|l| run.records > l.records) {
                largest = Some(run);
            }
        }
        println!();
        println!("store alone ({kind}: LogStore::append of prebuilt batches):");
        println!("{:>8} {:>10} {:>12} {:>14}", "batch", "records", "records/s", "ms per append");
        for batch in [64, 1024] {
            let (records, elapsed) = store_run(&base, kind, batch, Duration::from_secs_f64(secs));
            println!(
                "{:>8} {:>10} {:>12.0} {:>14.3}",
                batch,
                records,
                records as f64 / elapsed.as_secs_f64(),
                ms(elapsed) / (records / batch as u64) as f64
            );
        }
        if let Some(run) = largest {
            let (records, elapsed) = verify_run(kind, run.dir.path());
            println!();
            println!(
                "verify ({kind}): {records} records read back, leaf hashes and root recomputed in {:.0} ms: {:.0} records/s ({:.0} MiB/s)",
                ms(elapsed),
                records as f64 / elapsed.as_secs_f64(),
                (records as f64 * record_bytes as f64) / elapsed.as_secs_f64() / (1024.0 * 1024.0)
            );
        }
    }
}
