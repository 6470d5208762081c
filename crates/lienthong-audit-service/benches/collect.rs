//! The central collector over 1,000,000 collected records:
//!
//!     cargo bench -p lienthong-audit-service --bench collect
//!
//! Three nodes' logs of synthetic metadata records (200 clients with skewed traffic, 30 days, a
//! signed envelope of 300 bytes and a small body each, which the collector strips) are ingested
//! in batches of 20,000 with witnessed checkpoints, inclusion and consistency proofs, into a
//! redb file. Then `by_client` for one agency in a 7-day period (the issue's target: under
//! 100 ms), `LIENTHONG_BENCH_RUNS` times (default 21): median, fastest, slowest.
//!
//! Environment: `LIENTHONG_BENCH_RECORDS` (default 1000000), `LIENTHONG_BENCH_DIR` (default
//! `target/tmp`; the 1M store takes about 1.1 GB, removed at the end). Plain `std::time`,
//! nothing asserted.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant, SystemTime};

use lienthong_audit_service::collect::{Batch, Collector, Trust};
use lienthong_globalconf::{ConfKey, key_id, to_millis};
use lienthong_msglog::checkpoint::{Checkpoint, add_witness_signature, sign_checkpoint};
use lienthong_msglog::merkle::{self, MemNodes, leaf_hash};
use lienthong_pki::{CertificateAuthority, Csr, KeyAlgorithm, PrivateKey, Validity};
use lienthong_proto::audit::v1 as audit_pb;
use lienthong_proto::msglog::v1 as pb;
use lienthong_types::{ClientId, InstanceId, NodeId, ServiceId};
use prost::Message;

const DAY_MS: i64 = 86_400_000;
const START_MS: i64 = 1_793_491_200_000;
const DAYS: i64 = 30;
const CLIENTS: u64 = 200;
const NODES: usize = 3;
const BATCH: u64 = 20_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Skewed: client k with weight about 1/(k+1).
    fn client(&mut self) -> u64 {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((CLIENTS as f64 + 1.0).powf(u) - 1.0) as u64 % CLIENTS
    }
}

fn client_id(k: u64) -> ClientId {
    format!("VN/GOV/M{k:03}/app").parse().unwrap()
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let n: u64 = env_or("LIENTHONG_BENCH_RECORDS", 1_000_000);
    let runs: usize = env_or("LIENTHONG_BENCH_RUNS", 21).max(1);
    let base = std::env::var_os("LIENTHONG_BENCH_DIR")
        .map_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")), Into::into);
    std::fs::create_dir_all(&base).unwrap();
    let path = base.join(format!("collect-bench-{n}.redb"));
    let _ = std::fs::remove_file(&path);

    let now = SystemTime::now();
    let ca_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let ca = CertificateAuthority::init(InstanceId::new("VN").unwrap(), &ca_key, Validity::days(3650), now)
        .unwrap();
    let conf_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let keys = vec![ConfKey::new(conf_key.public_key(), now - Duration::from_secs(86_400), None)];
    let service: ServiceId = "VN/GOV/P/prov/data".parse().unwrap();

    let collector = Collector::open(&path).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let per_node = n / NODES as u64;
    let started = Instant::now();
    for k in 0..NODES {
        let node: NodeId = format!("VN/GOV/N{k}/ss").parse().unwrap();
        let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let cert =
            ca.issue_node(&Csr::for_node(&key, &node).unwrap(), &node, Validity::days(365), now).unwrap();
        let mut tree = MemNodes::default();
        let mut held = 0;
        while tree.size() < per_node {
            let first = tree.size();
            let mut bytes = Vec::new();
            for i in first..(first + BATCH).min(per_node) {
                let t = START_MS + (i as i64 * DAYS * DAY_MS) / per_node as i64;
                let r = pb::LogRecord {
                    message_id: format!("{k}-{i}"),
                    request_id: format!("{k}-{i}-r"),
                    direction: (1 + i % 2) as i32,
                    role: 1,
                    client: Some((&client_id(rng.client())).into()),
                    service: Some((&service).into()),
                    method: "GET".into(),
                    path: "/data/1".into(),
                    node: Some((&node).into()),
                    message_time_ms: t,
                    logged_at_ms: t + 3,
                    status: 200,
                    envelope: vec![7; 300],
                    body: Some(pb::log_record::Body::PlainBody(vec![1; 200])),
                    ..Default::default()
                }
                .encode_to_vec();
                tree.push_leaf(leaf_hash(&r));
                bytes.push(r);
            }
            let size = tree.size();
            let hashes = |v: Vec<merkle::Hash>| v.iter().map(|h| h.to_vec()).collect();
            let records = bytes
                .into_iter()
                .enumerate()
                .map(|(j, record)| {
                    let i = first + j as u64;
                    audit_pb::ProvenRecord {
                        leaf_index: i,
                        record,
                        proof: Some(pb::InclusionProof {
                            leaf_index: i,
                            tree_size: size,
                            hashes: hashes(merkle::inclusion_proof(&tree, i, size).unwrap()),
                        }),
                        next_page_token: Vec::new(),
                    }
                })
                .collect();
            let ms = to_millis(now);
            let c = Checkpoint { origin: node.to_string(), size, root: tree.root(), timestamp_ms: ms };
            let mut checkpoint = sign_checkpoint(&c, &key, cert.fingerprint(), ms).unwrap();
            add_witness_signature(&mut checkpoint, &conf_key, key_id(&conf_key.public_key()), "VN", ms)
                .unwrap();
            let consistency = (held > 0).then(|| pb::ConsistencyProof {
                old_size: held,
                new_size: size,
                hashes: hashes(merkle::consistency_proof(&tree, held, size).unwrap()),
            });
            collector
                .ingest(
                    &node,
                    Batch { checkpoint, consistency, records },
                    Trust { node_certificate: &cert, witness_keys: &keys },
                )
                .unwrap();
            held = size;
        }
    }
    let took = started.elapsed();
    let file = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "ingested {} records from {NODES} nodes in {took:.2?} ({:.0} records/s, generation and proofs included); \
         store {} MiB",
        per_node * NODES as u64,
        (per_node * NODES as u64) as f64 / took.as_secs_f64(),
        file / (1 << 20)
    );

    let period = (START_MS + 10 * DAY_MS, START_MS + 17 * DAY_MS);
    for (label, k, limit) in [
        ("busiest client, first 100", 0, 100),
        ("busiest client, all", 0, usize::MAX),
        ("client #50, all", 50, usize::MAX),
    ] {
        let client = client_id(k);
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..runs {
            let t = Instant::now();
            found = collector.by_client(&client, period, limit).unwrap().len();
            times.push(t.elapsed());
        }
        let (med, min, max) = median(times);
        println!(
            "by_client 7 days, {label}: {found} records; median {med:.2?} (min {min:.2?}, max {max:.2?})"
        );
    }
    let t = Instant::now();
    let cov = collector.coverage().unwrap();
    println!("coverage of {} nodes: {:.2?}", cov.len(), t.elapsed());
    drop(collector);
    let _ = std::fs::remove_file(&path);
}
