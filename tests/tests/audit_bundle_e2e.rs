//! Evidence bundles end to end on the standard topology: an exchange through the consumer node
//! and a provider node, both nodes' logs checkpointed and witnessed by the registry, a bundle
//! built from the two live stores and verified offline against the registry's anchor; any
//! changed byte fails it, and so does a bundle from a node whose log was rewritten afterwards.

#![allow(clippy::print_stderr)]

use std::sync::Arc;

use lienthong_audit::bundle::{self, BuildError, ExchangeRef, Outcome, Side};
use lienthong_msglog::{Entry, LogError, LogStore};
use lienthong_proto::audit::v1 as audit_pb;
use lienthong_proto::msglog::v1 as log_pb;
use lienthong_testkit::names::*;
use lienthong_testkit::{Topology, within};
use prost::Message;

const MESSAGE_ID: &str = "vpcp-2026-audit-0001";

/// A node's live log store and the signed configuration it holds.
fn node_side(t: &Topology, i: usize) -> (Arc<dyn LogStore>, Vec<u8>) {
    let handle = t.nodes[i].handle();
    (handle.log().store().clone(), handle.conf().expect("a configuration").bytes.clone())
}

fn build(sides: &[(&dyn LogStore, &[u8])]) -> Result<Vec<u8>, BuildError> {
    let sides: Vec<Side<'_>> = sides
        .iter()
        .map(|(store, conf)| Side { store: *store, conf, node_certificate: None, partner_confs: &[] })
        .collect();
    bundle::build(&sides, &[ExchangeRef::message(MESSAGE_ID)])
}

/// Every byte outside the opaque blobs (framing, names, checkpoints with their signatures,
/// proofs) and every `k`-th byte inside them (records, configurations, node certificates: each
/// covered whole by a leaf hash, a signature or a registered fingerprint).
fn positions(bytes: &[u8], k: usize) -> Vec<usize> {
    let b = audit_pb::EvidenceBundle::decode(bytes).unwrap();
    let mut blobs: Vec<&[u8]> = b.global_confs.iter().map(Vec::as_slice).collect();
    for side in &b.sides {
        blobs.push(&side.node_certificate);
        blobs.extend(side.records.iter().map(|r| r.record.as_slice()));
    }
    let mut inside = vec![None; bytes.len()];
    for blob in blobs {
        let at = bytes.windows(blob.len()).position(|w| w == blob).unwrap();
        for (offset, slot) in inside[at..at + blob.len()].iter_mut().enumerate() {
            *slot = Some((offset, blob.len()));
        }
    }
    (0..bytes.len())
        .filter(|&i| inside[i].is_none_or(|(offset, len)| offset % k == 0 || offset + 1 == len))
        .collect()
}

/// The positions where flipping `mask` went unnoticed (checked on all cores).
fn survivors(
    bytes: &[u8],
    anchor: &lienthong_globalconf::Anchor,
    positions: &[usize],
    mask: u8,
) -> Vec<usize> {
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get()).min(16);
    let chunk = positions.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = positions
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut altered = bytes.to_vec();
                    let mut left = Vec::new();
                    for &i in part {
                        altered[i] ^= mask;
                        if bundle::verify(&altered, anchor).is_ok() {
                            left.push(i);
                        }
                        altered[i] ^= mask;
                    }
                    left
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

/// The provider node's log as it would look had the node changed a record after the registry
/// witnessed its checkpoint: the record's bytes differ, everything else is the real store.
struct Rewritten {
    inner: Arc<dyn LogStore>,
    index: u64,
    bytes: Vec<u8>,
}

impl LogStore for Rewritten {
    fn size(&self) -> Result<u64, LogError> {
        self.inner.size()
    }
    fn append(&self, first: u64, entries: &[Entry], nodes: &[(u8, u64, [u8; 32])]) -> Result<(), LogError> {
        self.inner.append(first, entries, nodes)
    }
    fn record(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        if index == self.index { Ok(Some(self.bytes.clone())) } else { self.inner.record(index) }
    }
    fn node(&self, level: u8, index: u64) -> Result<Option<[u8; 32]>, LogError> {
        self.inner.node(level, index)
    }
    fn by_exchange(&self, message_id: &str) -> Result<Vec<u64>, LogError> {
        self.inner.by_exchange(message_id)
    }
    fn by_time(&self, from_ms: i64, to_ms: i64, limit: usize) -> Result<Vec<u64>, LogError> {
        self.inner.by_time(from_ms, to_ms, limit)
    }
    fn by_client(&self, client: &str) -> Result<Vec<u64>, LogError> {
        self.inner.by_client(client)
    }
    fn by_service(&self, service: &str) -> Result<Vec<u64>, LogError> {
        self.inner.by_service(service)
    }
    fn put_checkpoint(&self, size: u64, signed: &log_pb::SignedCheckpoint) -> Result<(), LogError> {
        self.inner.put_checkpoint(size, signed)
    }
    fn checkpoints(&self) -> Result<Vec<log_pb::SignedCheckpoint>, LogError> {
        self.inner.checkpoints()
    }
    fn put_certificate(&self, der: &[u8]) -> Result<(), LogError> {
        self.inner.put_certificate(der)
    }
    fn certificates(&self) -> Result<Vec<Vec<u8>>, LogError> {
        self.inner.certificates()
    }
    fn prune(&self, before: u64) -> Result<u64, LogError> {
        self.inner.prune(before)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_is_proved_from_both_nodes_logs_and_verifies_offline() {
    let t = Topology::standard().await;
    let payload = r#"{"so_dinh_danh":"001090012345"}"#;
    let mut req = Topology::r1("POST", &format!("/r1/{CONG_DAN}/echo?fields=ho_ten"), payload);
    req.headers_mut().insert("x-road-id", MESSAGE_ID.parse().unwrap());
    req.headers_mut().insert("content-type", "application/json".parse().unwrap());
    let resp = t.call(0, req).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.body());
    // The provider node that served it (either may, the consumer picks).
    let provider = [1, 2]
        .into_iter()
        .find(|&i| t.records(i).iter().any(|r| r.message_id == MESSAGE_ID))
        .expect("a provider node logged the exchange");
    let (consumer_store, consumer_conf) = node_side(&t, 0);
    let (provider_store, provider_conf) = node_side(&t, provider);

    // Before a witnessed checkpoint covers the records, there is nothing to prove them with.
    let err = build(&[(&*consumer_store, &consumer_conf), (&*provider_store, &provider_conf)]).unwrap_err();
    assert!(matches!(err, BuildError::NotWitnessed { .. }), "{err:?}");
    assert!(err.to_string().contains("a checkpoint must be witnessed first"), "{err}");

    t.witness(0).await;
    t.witness(provider).await;
    let bytes = build(&[(&*consumer_store, &consumer_conf), (&*provider_store, &provider_conf)]).unwrap();
    let anchor = t.registry.anchor();
    let report = bundle::verify(&bytes, &anchor).unwrap_or_else(|e| panic!("{}", e.0));
    let [exchange] = report.exchanges.as_slice() else { panic!("{report}") };
    assert_eq!(exchange.message_id, MESSAGE_ID);
    assert_eq!(exchange.client, CONG_DVC);
    assert_eq!(exchange.service, CONG_DAN);
    assert_eq!((exchange.method.as_str(), exchange.path.as_str()), ("POST", "/echo?fields=ho_ten"));
    assert_eq!(exchange.status, Some(200));
    assert_eq!(exchange.consumer_node.as_deref(), Some(NODE_VPCP));
    assert_eq!(exchange.provider_node.as_deref(), Some(t.nodes[provider].id.to_string().as_str()));
    assert_eq!(
        exchange.records,
        ["consumer request", "consumer response", "provider request", "provider response"]
    );
    assert_eq!(report.sides.len(), 2);
    for side in &report.sides {
        assert_eq!(side.witnessed_by.len(), 1, "{report}");
        assert_eq!(side.records.len(), 2);
    }
    for check in ["envelope signature", "inclusion proof"] {
        let passed =
            report.checks.iter().filter(|c| c.check == check && c.outcome == Outcome::Passed).count();
        assert_eq!(passed, 4, "{check}: {report}");
    }
    assert!(
        report.checks.iter().any(|c| c.check == "request hash" && c.outcome == Outcome::Passed),
        "the request body is logged in full, so the request hash is recomputed: {report}"
    );

    // Any changed byte fails it.
    let started = std::time::Instant::now();
    let chosen = positions(&bytes, 5);
    let left = survivors(&bytes, &anchor, &chosen, 0x01);
    assert!(left.is_empty(), "changing bytes {left:?} of {} went unnoticed", bytes.len());
    let every_29th: Vec<usize> = (3..bytes.len()).step_by(29).collect();
    let left = survivors(&bytes, &anchor, &every_29th, 0x80);
    assert!(left.is_empty(), "changing bytes {left:?} of {} went unnoticed", bytes.len());
    eprintln!(
        "{} one-byte changes of a {}-byte bundle refused in {:?}",
        chosen.len() + every_29th.len(),
        bytes.len(),
        started.elapsed()
    );

    // The provider node changes its response record afterwards (it claims it answered 403): the
    // witnessed checkpoint no longer leads to it, and the record contradicts its signed envelope.
    let index = provider_store
        .by_exchange(MESSAGE_ID)
        .unwrap()
        .into_iter()
        .find(|&i| {
            let r = log_pb::LogRecord::decode(provider_store.record(i).unwrap().unwrap().as_slice()).unwrap();
            r.direction == log_pb::Direction::Response as i32
        })
        .unwrap();
    let mut record =
        log_pb::LogRecord::decode(provider_store.record(index).unwrap().unwrap().as_slice()).unwrap();
    record.status = 403;
    let rewritten = Rewritten { inner: provider_store.clone(), index, bytes: record.encode_to_vec() };
    let bytes = build(&[(&*consumer_store, &consumer_conf), (&rewritten, &provider_conf)]).unwrap();
    let report = *bundle::verify(&bytes, &anchor).expect_err("a rewritten log does not verify").0;
    let failed: Vec<String> =
        report.failures().map(|c| format!("{}: {}: {}", c.subject, c.check, c.detail)).collect();
    let subject =
        format!("node {}, record {index} (provider response of {MESSAGE_ID})", t.nodes[provider].id);
    assert!(
        failed
            .iter()
            .any(|f| f.starts_with(&format!("{subject}: inclusion proof: it is not record {index}"))
                && f.contains("differ from what the node had logged")),
        "{failed:#?}"
    );
    assert!(
        failed
            .iter()
            .any(|f| f.starts_with(&format!("{subject}: record matches envelope")) && f.contains("status")),
        "{failed:#?}"
    );
    // The consumer's side still verifies on its own.
    assert!(!failed.iter().any(|f| f.contains(NODE_VPCP) && f.contains("inclusion proof")), "{failed:#?}");
    within(t.shutdown()).await;
}
