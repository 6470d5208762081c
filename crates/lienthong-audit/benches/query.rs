//! Audit query latency over a node's message log of 1,000,000 records:
//!
//!     cargo bench -p lienthong-audit --bench query
//!
//! Builds a `SegmentStore` (what nodes use) of synthetic but realistic records: ~200 clients and
//! 50 services with skewed (Zipf-like) traffic, 30 days of exchanges (a request and a response
//! record each, metadata only, a signed envelope of a few hundred bytes), 93% successes, some
//! backend failures, HTTP errors and access denials; a witnessed checkpoint covers all but the
//! last 2,000 records. Then runs audit queries, each `LIENTHONG_BENCH_RUNS` times (default 21),
//! and prints the median, the fastest and the slowest run, with the plan and the records
//! decoded. The headline is the issue's: one agency's exchanges (client = X) in a 7-day period,
//! first page of 100.
//!
//! Environment: `LIENTHONG_BENCH_RECORDS` (default 1000000), `LIENTHONG_BENCH_DIR` (default
//! `target/tmp`; the file system is printed), `LIENTHONG_BENCH_STORES` (`segment`, `mem` or
//! both, default `segment`), `LIENTHONG_BENCH_KEEP=1` to keep the segment store and reuse it on
//! the next run. Timings are of warm runs (the store's files in the page cache), except the
//! first run of each query, also printed.
//!
//! Plain `std::time` measurement, no harness dependency; nothing is asserted.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_audit::query::{Filter, Page, ProofAt, QueryOptions, query_with};
use lienthong_msglog::checkpoint::{self, Checkpoint};
use lienthong_msglog::merkle::{self, Frontier};
use lienthong_msglog::store::StoreNodes;
use lienthong_msglog::{Entry, LogStore, MemStore, SegmentStore};
use lienthong_pki::{Fingerprint, KeyAlgorithm, PrivateKey};
use lienthong_proto::msglog::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{ClientId, Fault, NodeId, ServiceId};

const DAY_MS: i64 = 86_400_000;
/// 2026-11-01T00:00:00Z: the 30 days start here.
const START_MS: i64 = 1_793_491_200_000;
const DAYS: i64 = 30;
const CLIENTS: usize = 200;
const SERVICES: usize = 50;
const UNWITNESSED: u64 = 2_000;
/// Bump when the generated records change, so a kept store is rebuilt.
const DATA_VERSION: u32 = 1;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }
}

/// Picks rank `k` with weight 1/(k+1) (Zipf, s = 1): a few agencies make most of the calls.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize) -> Self {
        let mut acc = 0.0;
        Self(
            (0..n)
                .map(|k| {
                    acc += 1.0 / (k as f64 + 1.0);
                    acc
                })
                .collect(),
        )
    }

    fn pick(&self, rng: &mut Rng) -> usize {
        let total = *self.0.last().unwrap();
        let x = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        self.0.partition_point(|c| *c < x).min(self.0.len() - 1)
    }
}

struct World {
    clients: Vec<ClientId>,
    services: Vec<ServiceId>,
    node: NodeId,
    peers: Vec<NodeId>,
}

impl World {
    fn new() -> Self {
        let clients = (0..CLIENTS)
            .map(|k| {
                let class = if k % 4 == 3 { "COM" } else { "GOV" };
                let id = match k % 3 {
                    0 => format!("VN/{class}/000.{:02}.{:02}.G{:02}", k / 100, k % 100, k % 50),
                    _ => format!(
                        "VN/{class}/000.{:02}.{:02}.G{:02}/he-thong-{}",
                        k / 100,
                        k % 100,
                        k % 50,
                        k % 7
                    ),
                };
                id.parse().unwrap()
            })
            .collect();
        let services = (0..SERVICES)
            .map(|k| format!("VN/GOV/000.00.00.H{:02}/csdl-{}/service{k:02}", k / 5, k % 5).parse().unwrap())
            .collect();
        let peers = (0..20).map(|k| format!("VN/GOV/000.00.{k:02}.P01/ss1").parse().unwrap()).collect();
        Self { clients, services, node: "VN/GOV/000.00.00.H01/ss1".parse().unwrap(), peers }
    }
}

/// The records of one exchange: the request, then its response.
fn exchange(world: &World, rng: &mut Rng, zc: &Zipf, zs: &Zipf, at_ms: i64) -> [pb::LogRecord; 2] {
    let client = &world.clients[zc.pick(rng)];
    let service = &world.services[zs.pick(rng)];
    let role = if rng.below(10) < 7 { pb::Role::Consumer } else { pb::Role::Provider };
    let message_id = rng.uuid();
    let request_id = rng.uuid();
    let user = format!("CCCD{:08}", rng.below(5000));
    let peer = &world.peers[rng.below(world.peers.len() as u64) as usize];
    let get = rng.below(3) > 0;
    let base = pb::LogRecord {
        message_id,
        request_id,
        role: role as i32,
        client: Some(client.into()),
        service: Some(service.into()),
        method: if get { "GET" } else { "POST" }.into(),
        path: format!("{}/records?id={:010}", service.r1_path(), rng.below(10_000_000_000)),
        user_id: user,
        issue: if rng.below(10) == 0 { format!("HS-{}", rng.below(100_000)) } else { String::new() },
        node: Some((&world.node).into()),
        peer_node: Some(peer.into()),
        headers_sha256: rng.bytes(32),
        body_policy: pb::BodyPolicy::MetadataOnly as i32,
        grant_id: if role == pb::Role::Provider {
            format!("grant-{}", rng.below(400))
        } else {
            String::new()
        },
        ..Default::default()
    };
    let signature = |rng: &mut Rng| types_pb::Signature {
        algorithm: types_pb::SignatureAlgorithm::Ed25519 as i32,
        signer_sha256: rng.bytes(32),
        value: rng.bytes(64),
    };
    let request = pb::LogRecord {
        direction: pb::Direction::Request as i32,
        message_time_ms: at_ms - 3,
        logged_at_ms: at_ms,
        body_sha256: rng.bytes(32),
        body_length: if get { 0 } else { 200 + rng.below(4000) },
        signature: Some(signature(rng)),
        envelope: rng.bytes(420),
        ..base.clone()
    };
    let latency = 20 + rng.below(400) as i64;
    let roll = rng.below(100);
    let (status, fault) = match roll {
        0..93 => (200, None),
        93..95 => (if roll == 93 { 404 } else { 400 }, None),
        95..98 => (500, Some(Fault::ServiceFailed)),
        _ => (500, Some(Fault::AccessDenied)),
    };
    let response = pb::LogRecord {
        direction: pb::Direction::Response as i32,
        message_time_ms: at_ms + latency - 2,
        logged_at_ms: at_ms + latency,
        status,
        fault: fault.map(|f| types_pb::Fault {
            code: f.code(),
            message: f.meaning().into(),
            detail: rng.uuid(),
        }),
        body_sha256: rng.bytes(32),
        body_length: if fault.is_some() { 180 } else { 300 + rng.below(20_000) },
        signature: fault.is_none().then(|| signature(rng)),
        envelope: if fault.is_some() { Vec::new() } else { rng.bytes(380) },
        ..base
    };
    [request, response]
}

/// Appends `n` records spread over 30 days, in batches like the log writer's.
fn build(store: &dyn LogStore, n: u64) -> Duration {
    let started = Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let world = World::new();
    let (zc, zs) = (Zipf::new(CLIENTS), Zipf::new(SERVICES));
    let mut rng = Rng(42);
    let mut frontier = Frontier::new();
    let step = (DAYS * DAY_MS) as f64 / (n / 2) as f64;
    let mut batch: Vec<Entry> = Vec::with_capacity(1024);
    let mut nodes = Vec::with_capacity(2048);
    let flush = |batch: &mut Vec<Entry>, nodes: &mut Vec<(u8, u64, [u8; 32])>, first: u64| {
        store.append(first, batch, nodes).unwrap();
        batch.clear();
        nodes.clear();
    };
    let mut first = 0;
    for e in 0..n.div_ceil(2) {
        let at = START_MS + (e as f64 * step) as i64;
        for r in exchange(&world, &mut rng, &zc, &zs, at) {
            if frontier.size() == n {
                break;
            }
            let entry = Entry::new(&r);
            nodes.extend(frontier.append(merkle::leaf_hash(&entry.bytes)));
            batch.push(entry);
        }
        if batch.len() >= 1024 {
            let len = batch.len() as u64;
            flush(&mut batch, &mut nodes, first);
            first += len;
        }
        if e % 50_000 == 0 && e > 0 && tty {
            print!("\r  built {} records", frontier.size());
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut nodes, first);
    }
    let cr = if tty { "\r" } else { "" };
    println!("{cr}  built {} records in {:.1} s", frontier.size(), started.elapsed().as_secs_f64());
    started.elapsed()
}

/// A checkpoint of the first `size` records, signed and co-signed by throwaway keys (the query
/// engine reads checkpoints; it does not check their signatures).
fn witness(store: &dyn LogStore, size: u64) {
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let cp = Checkpoint {
        origin: "VN/GOV/000.00.00.H01/ss1".into(),
        size,
        root: merkle::root(&StoreNodes(store), size).unwrap(),
        timestamp_ms: START_MS + DAYS * DAY_MS,
    };
    let mut signed =
        checkpoint::sign_checkpoint(&cp, &key, Fingerprint::of(key.public_key().raw()), cp.timestamp_ms)
            .unwrap();
    let w = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    checkpoint::add_witness_signature(
        &mut signed,
        &w,
        Fingerprint::of(w.public_key().raw()),
        "VN",
        cp.timestamp_ms,
    )
    .unwrap();
    store.put_checkpoint(size, &signed).unwrap();
}

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

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            if m.is_dir() { dir_bytes(&e.path()) } else { m.len() }
        })
        .sum()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Case {
    name: String,
    filter: Filter,
    limit: usize,
    proofs: ProofAt,
    /// Every page, not just the first.
    all_pages: bool,
}

fn case(name: impl Into<String>, pairs: &[(&str, &str)], limit: usize) -> Case {
    let filter = Filter::from_pairs(pairs.iter().copied()).unwrap();
    Case { name: name.into(), filter, limit, proofs: ProofAt::Latest, all_pages: false }
}

fn run(store: &dyn LogStore, c: &Case) -> (Duration, usize, u64, Page) {
    let options = QueryOptions { proofs: c.proofs, ..QueryOptions::default() };
    let started = Instant::now();
    let mut page = query_with(store, &c.filter, None, c.limit, &options).unwrap();
    let (mut records, mut scanned) = (page.records.len(), page.scanned);
    while c.all_pages && page.next.is_some() {
        page = query_with(store, &c.filter, page.next.as_ref(), c.limit, &options).unwrap();
        records += page.records.len();
        scanned += page.scanned;
    }
    (started.elapsed(), records, scanned, page)
}

/// What one candidate costs: reading its bytes from the store, decoding them, proving it.
fn unit_costs(store: &dyn LogStore) {
    let size = store.size().unwrap();
    let sample: Vec<u64> = (0..10_000u64).map(|i| i * (size / 10_000).max(1) % size).collect();
    let started = Instant::now();
    let bytes: Vec<Vec<u8>> = sample.iter().map(|i| store.record(*i).unwrap().unwrap()).collect();
    let read = started.elapsed();
    let started = Instant::now();
    for b in &bytes {
        std::hint::black_box(lienthong_msglog::record::decode_record(b).unwrap());
    }
    let decode = started.elapsed();
    let proof_size = size.saturating_sub(UNWITNESSED).max(1);
    let started = Instant::now();
    for i in sample.iter().take(1000) {
        std::hint::black_box(
            merkle::inclusion_proof(&StoreNodes(store), *i % proof_size, proof_size).unwrap(),
        );
    }
    let prove = started.elapsed();
    let per = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "  per record: read {:.2} us, decode {:.2} us, inclusion proof {:.2} us; {} bytes on average",
        per(read, bytes.len()),
        per(decode, bytes.len()),
        per(prove, 1000),
        bytes.iter().map(Vec::len).sum::<usize>() / bytes.len()
    );
}

fn bench(store: &dyn LogStore, cases: &[Case], runs: usize) {
    unit_costs(store);
    println!(
        "  {:<58} {:>11} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "query", "plan", "records", "decoded", "first ms", "median ms", "min ms", "max ms"
    );
    for c in cases {
        let (first, records, scanned, page) = run(store, c);
        let mut times: Vec<Duration> = (0..runs).map(|_| run(store, c).0).collect();
        times.sort_unstable();
        println!(
            "  {:<58} {:>11} {:>7} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            c.name,
            format!("{:?}", page.plan),
            records,
            scanned,
            ms(first),
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1]),
        );
    }
}

fn cases() -> Vec<Case> {
    let world = World::new();
    let day = |d: i64| lienthong_audit::query::format_time(START_MS + d * DAY_MS);
    let (d20, d21, d27) = (day(20), day(21), day(27));
    let hour = lienthong_audit::query::format_time(START_MS + 20 * DAY_MS + 3_600_000);
    let [busy, typical, small] = [0, 20, 150].map(|k| world.clients[k].to_string());
    let service = world.services[3].to_string();
    // An exchange id that exists: the generator is deterministic.
    let exchange = {
        let mut rng = Rng(42);
        exchange(&world, &mut rng, &Zipf::new(CLIENTS), &Zipf::new(SERVICES), START_MS)[0].message_id.clone()
    };
    let mut out = vec![
        case(
            "client X (typical, rank 20), 7 days, first 100",
            &[("client", &typical), ("from", &d20), ("until", &d27)],
            100,
        ),
        case(
            "client X (busiest, rank 0), 7 days, first 100",
            &[("client", &busy), ("from", &d20), ("until", &d27)],
            100,
        ),
        case(
            "client X (small, rank 150), 7 days, first 100",
            &[("client", &small), ("from", &d20), ("until", &d27)],
            100,
        ),
        case(
            "client X (typical), 1 day, first 100",
            &[("client", &typical), ("from", &d20), ("until", &d21)],
            100,
        ),
        case("client X (typical), no time range, first 100", &[("client", &typical)], 100),
        case(
            "client X (typical), failed, 30 days, first 100",
            &[("client", &typical), ("status", "failed")],
            100,
        ),
        case("service Y, 1 day, first 100", &[("service", &service), ("from", &d20), ("until", &d21)], 100),
        case("exchange id", &[("exchange", &exchange)], 100),
        case("time only, 1 hour, first 100", &[("from", &d20), ("until", &hour)], 100),
        case("time only, 1 day, first 100", &[("from", &d20), ("until", &d21)], 100),
        case("time only, 7 days, first 100", &[("from", &d20), ("until", &d27)], 100),
        case("status denied, whole log, first 100 (no index)", &[("status", "denied")], 100),
        case("user U, whole log, first 100 (no index)", &[("user", "CCCD00000042")], 100),
    ];
    let mut no_proofs = case(
        "client X (typical), 7 days, first 100, no proofs",
        &[("client", &typical), ("from", &d20), ("until", &d27)],
        100,
    );
    no_proofs.proofs = ProofAt::None;
    out.insert(1, no_proofs);
    let mut every = case(
        "client X (typical), 7 days, every page of 100",
        &[("client", &typical), ("from", &d20), ("until", &d27)],
        100,
    );
    every.all_pages = true;
    out.insert(2, every);
    out
}

fn main() {
    let n: u64 = env_or("LIENTHONG_BENCH_RECORDS", 1_000_000);
    let runs: usize = env_or("LIENTHONG_BENCH_RUNS", 21).max(1);
    let keep = std::env::var_os("LIENTHONG_BENCH_KEEP").is_some();
    let stores: Vec<String> = std::env::var("LIENTHONG_BENCH_STORES")
        .unwrap_or_else(|_| "segment".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let base: PathBuf = std::env::var_os("LIENTHONG_BENCH_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    std::fs::create_dir_all(&base).unwrap();
    println!("records:    {n} ({CLIENTS} clients, {SERVICES} services, {DAYS} days; {runs} runs per query)");
    let cases = cases();

    for kind in &stores {
        match kind.as_str() {
            "segment" => {
                let dir = base.join(format!("audit-query-bench-v{DATA_VERSION}-{n}"));
                let marker = dir.join("complete");
                println!("\nSegmentStore in {} ({})", dir.display(), file_system(&base));
                if !(keep && marker.exists()) {
                    let _ = std::fs::remove_dir_all(&dir);
                    let store = SegmentStore::open_dir(&dir).unwrap();
                    build(&store, n);
                    witness(&store, n.saturating_sub(UNWITNESSED).max(1));
                    drop(store);
                    std::fs::write(&marker, b"").unwrap();
                }
                let opened = Instant::now();
                let store: Arc<dyn LogStore> = Arc::new(SegmentStore::open_dir(&dir).unwrap());
                println!(
                    "  on disk: {:.0} MiB; opened in {:.1} ms",
                    dir_bytes(&dir) as f64 / (1 << 20) as f64,
                    ms(opened.elapsed())
                );
                bench(&*store, &cases, runs);
                drop(store);
                if !keep {
                    std::fs::remove_dir_all(&dir).unwrap();
                }
            }
            "mem" => {
                println!("\nMemStore");
                let store = MemStore::new();
                build(&store, n);
                witness(&store, n.saturating_sub(UNWITNESSED).max(1));
                bench(&store, &cases, runs);
            }
            other => panic!("LIENTHONG_BENCH_STORES: unknown store {other:?} (segment, mem)"),
        }
    }
}
