//! The central collector over nodes' logs built in memory: records appended to an RFC 6962 tree
//! (`MemNodes`, the message log's own in-memory tree), checkpoints signed with the node's key and
//! co-signed with a configuration key, as the registry's witness does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use lienthong_audit::sharing::sharing_report;
use lienthong_audit_service::collect::{Batch, CollectError, Collector, Trust};
use lienthong_globalconf::{ConfKey, GlobalConf, Member, MemberStatus, from_millis, key_id, to_millis};
use lienthong_msglog::checkpoint::{Checkpoint, add_witness_signature, sign_checkpoint};
use lienthong_msglog::merkle::{self, MemNodes, leaf_hash};
use lienthong_pki::{Certificate, CertificateAuthority, Csr, KeyAlgorithm, PrivateKey, Validity};
use lienthong_proto::audit::v1 as audit_pb;
use lienthong_proto::msglog::v1 as pb;
use lienthong_types::{ClientId, InstanceId, MemberClass, MemberId, NodeId, ServiceId};
use prost::Message;

const NODE_A: &str = "VN/GOV/A/ss-a";
const NODE_B: &str = "VN/GOV/B/ss-b";
const CONS: &str = "VN/GOV/A/cons";
const APP: &str = "VN/GOV/C/app";
const PETS: &str = "VN/GOV/B/prov/pets";
const T0: i64 = 1_800_000_000_000;

fn node(s: &str) -> NodeId {
    s.parse().unwrap()
}

struct Instance {
    now: SystemTime,
    ca: CertificateAuthority,
    conf_key: PrivateKey,
    keys: Vec<ConfKey>,
}

struct NodeKey {
    key: PrivateKey,
    cert: Certificate,
}

impl Instance {
    fn new() -> Self {
        let now = SystemTime::now();
        let ca_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let ca =
            CertificateAuthority::init(InstanceId::new("VN").unwrap(), &ca_key, Validity::days(3650), now)
                .unwrap();
        let conf_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let keys = vec![ConfKey::new(conf_key.public_key(), now - Duration::from_secs(86_400), None)];
        Self { now, ca, conf_key, keys }
    }

    fn node_key(&self, id: &str) -> NodeKey {
        let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let cert = self
            .ca
            .issue_node(&Csr::for_node(&key, &node(id)).unwrap(), &node(id), Validity::days(365), self.now)
            .unwrap();
        NodeKey { key, cert }
    }

    fn trust<'a>(&'a self, n: &'a NodeKey) -> Trust<'a> {
        Trust { node_certificate: &n.cert, witness_keys: &self.keys }
    }
}

/// A node's log: the exact record bytes and the tree over them.
struct Log {
    origin: String,
    records: Vec<Vec<u8>>,
    tree: MemNodes,
}

impl Log {
    fn new(origin: &str) -> Self {
        Self { origin: origin.into(), records: Vec::new(), tree: MemNodes::default() }
    }

    fn append(&mut self, r: &pb::LogRecord) {
        let bytes = r.encode_to_vec();
        self.tree.push_leaf(leaf_hash(&bytes));
        self.records.push(bytes);
    }

    /// The checkpoint of the whole log, signed by `key` and co-signed with `witness` if given.
    fn checkpoint(
        &self,
        inst: &Instance,
        key: &NodeKey,
        witness: Option<&PrivateKey>,
    ) -> pb::SignedCheckpoint {
        let ms = to_millis(inst.now) + i64::try_from(self.tree.size()).unwrap();
        let c = Checkpoint {
            origin: self.origin.clone(),
            size: self.tree.size(),
            root: self.tree.root(),
            timestamp_ms: ms,
        };
        let mut signed = sign_checkpoint(&c, &key.key, key.cert.fingerprint(), ms).unwrap();
        if let Some(w) = witness {
            add_witness_signature(&mut signed, w, key_id(&w.public_key()), "VN", ms).unwrap();
        }
        signed
    }

    /// Records `leaves` proven against the whole log, with a consistency proof from `from`.
    fn batch(
        &self,
        inst: &Instance,
        key: &NodeKey,
        leaves: impl IntoIterator<Item = u64>,
        from: u64,
    ) -> Batch {
        let size = self.tree.size();
        let records = leaves
            .into_iter()
            .map(|i| audit_pb::ProvenRecord {
                leaf_index: i,
                record: self.records[usize::try_from(i).unwrap()].clone(),
                proof: Some(pb::InclusionProof {
                    leaf_index: i,
                    tree_size: size,
                    hashes: merkle::inclusion_proof(&self.tree, i, size)
                        .unwrap()
                        .iter()
                        .map(|h| h.to_vec())
                        .collect(),
                }),
                next_page_token: Vec::new(),
            })
            .collect();
        let consistency = (from > 0 && from < size).then(|| pb::ConsistencyProof {
            old_size: from,
            new_size: size,
            hashes: merkle::consistency_proof(&self.tree, from, size)
                .unwrap()
                .iter()
                .map(|h| h.to_vec())
                .collect(),
        });
        Batch { checkpoint: self.checkpoint(inst, key, Some(&inst.conf_key)), consistency, records }
    }
}

/// A record as node `writer` logs it, with a body.
fn record(
    writer: &str,
    client: &str,
    id: &str,
    role: pb::Role,
    dir: pb::Direction,
    t: i64,
    status: u32,
) -> pb::LogRecord {
    pb::LogRecord {
        message_id: id.into(),
        request_id: format!("req-{id}"),
        direction: dir as i32,
        role: role as i32,
        client: Some((&client.parse::<ClientId>().unwrap()).into()),
        service: Some((&PETS.parse::<ServiceId>().unwrap()).into()),
        method: "GET".into(),
        path: "/pets/1".into(),
        node: Some((&node(writer)).into()),
        message_time_ms: t,
        logged_at_ms: t + 5,
        status,
        body: Some(pb::log_record::Body::PlainBody(b"{\"ten\":\"secret\"}".to_vec())),
        ..Default::default()
    }
}

/// Consumer-side request and response of exchange `id` by `client` at `t`.
fn exchange(log: &mut Log, client: &str, id: &str, t: i64) {
    log.append(&record(&log.origin.clone(), client, id, pb::Role::Consumer, pb::Direction::Request, t, 0));
    log.append(&record(
        &log.origin.clone(),
        client,
        id,
        pb::Role::Consumer,
        pb::Direction::Response,
        t + 20,
        200,
    ));
}

/// A log of `n` exchanges of CONS, one a second from T0.
fn log_of(n: usize) -> Log {
    let mut log = Log::new(NODE_A);
    for i in 0..n {
        exchange(&mut log, CONS, &format!("x{i}"), T0 + 1000 * i64::try_from(i).unwrap());
    }
    log
}

#[test]
fn ingesting_twice_is_a_no_op_and_bodies_are_not_stored() {
    let inst = Instance::new();
    let key = inst.node_key(NODE_A);
    let log = log_of(3);
    let c = Collector::in_memory().unwrap();
    let first = c.ingest(&node(NODE_A), log.batch(&inst, &key, 0..6, 0), inst.trust(&key)).unwrap();
    assert_eq!((first.checkpoint_size, first.stored, first.duplicates, first.contiguous_until), (6, 6, 0, 6));
    let again = c.ingest(&node(NODE_A), log.batch(&inst, &key, 0..6, 0), inst.trust(&key)).unwrap();
    assert_eq!((again.stored, again.duplicates, again.contiguous_until), (0, 6, 6));

    let held = c.records((T0, T0 + 10_000)).unwrap();
    assert_eq!(held.len(), 6);
    for r in &held {
        assert_eq!(r.node, NODE_A);
        assert!(r.record.body.is_none(), "a body was stored");
        // The leaf hash is the one of the bytes the node logged, body included.
        assert_eq!(r.leaf_hash, leaf_hash(&log.records[usize::try_from(r.leaf_index).unwrap()]));
        assert_eq!(r.record.message_id, format!("x{}", r.leaf_index / 2));
    }
}

#[test]
fn a_growing_log_is_ingested_with_consistency_proofs() {
    let inst = Instance::new();
    let key = inst.node_key(NODE_A);
    let mut log = log_of(2);
    let c = Collector::in_memory().unwrap();
    c.ingest(&node(NODE_A), log.batch(&inst, &key, 0..4, 0), inst.trust(&key)).unwrap();
    exchange(&mut log, CONS, "x2", T0 + 5000);
    exchange(&mut log, CONS, "x3", T0 + 6000);
    log.append(&record(NODE_A, APP, "x4", pb::Role::Consumer, pb::Direction::Request, T0 + 7000, 0));

    // Without the proof from the held size 4 the new checkpoint is refused, naming both sizes.
    let mut no_proof = log.batch(&inst, &key, 4..9, 4);
    no_proof.consistency = None;
    let e = c.ingest(&node(NODE_A), no_proof, inst.trust(&key)).unwrap_err();
    assert!(matches!(e, CollectError::Forked { held: 4, offered: 9, .. }), "{e}");

    let r = c.ingest(&node(NODE_A), log.batch(&inst, &key, 4..9, 4), inst.trust(&key)).unwrap();
    assert_eq!((r.checkpoint_size, r.stored, r.contiguous_until), (9, 5, 9));
    let held = c.held_checkpoint(&node(NODE_A)).unwrap().unwrap();
    assert_eq!(Checkpoint::decode(&held).unwrap().size, 9);
    // The same checkpoint again without a proof: equal size, equal root.
    c.ingest(&node(NODE_A), log.batch(&inst, &key, [8], 9), inst.trust(&key)).unwrap();
}

#[test]
fn coverage_shows_how_far_each_node_reported_and_the_gaps() {
    let inst = Instance::new();
    let (ka, kb) = (inst.node_key(NODE_A), inst.node_key(NODE_B));
    let a = log_of(5);
    let mut b = Log::new(NODE_B);
    exchange(&mut b, CONS, "y0", T0);
    let c = Collector::in_memory().unwrap();
    // Records 3, 4 and 7 were not pulled.
    let r = c.ingest(&node(NODE_A), a.batch(&inst, &ka, [0, 1, 2, 5, 6, 8, 9], 0), inst.trust(&ka)).unwrap();
    assert_eq!(r.contiguous_until, 3);
    c.ingest(&node(NODE_B), b.batch(&inst, &kb, 0..2, 0), inst.trust(&kb)).unwrap();

    let cov = c.coverage().unwrap();
    let [ca, cb] = cov.as_slice() else { panic!("{cov:?}") };
    assert_eq!((ca.node.as_str(), ca.checkpoint_size, ca.held, ca.contiguous_until), (NODE_A, 10, 7, 3));
    assert_eq!(ca.gaps, vec![3..5, 7..8]);
    assert_eq!(ca.missing, 3);
    assert_eq!(ca.checkpoint_time_ms, to_millis(inst.now) + 10);
    assert_eq!((cb.node.as_str(), cb.checkpoint_size, cb.contiguous_until, cb.missing), (NODE_B, 2, 2, 0));
    assert!(cb.gaps.is_empty());

    // Filling the gap later makes the node contiguous.
    let r = c.ingest(&node(NODE_A), a.batch(&inst, &ka, [3, 4, 7], 10), inst.trust(&ka)).unwrap();
    assert_eq!((r.stored, r.contiguous_until), (3, 10));
    let cov = c.coverage().unwrap();
    assert!(cov[0].gaps.is_empty() && cov[0].missing == 0 && cov[0].held == 10);
}

#[test]
fn a_node_that_rewrites_its_history_is_detected() {
    let inst = Instance::new();
    let key = inst.node_key(NODE_A);
    let honest = log_of(3);
    let c = Collector::in_memory().unwrap();
    c.ingest(&node(NODE_A), honest.batch(&inst, &key, 0..6, 0), inst.trust(&key)).unwrap();

    // Same size, one record changed: a different root for the size already held.
    let mut liar = log_of(2);
    exchange(&mut liar, CONS, "forged", T0 + 2000);
    let e = c.ingest(&node(NODE_A), liar.batch(&inst, &key, [5], 6), inst.trust(&key)).unwrap_err();
    assert!(matches!(&e, CollectError::Forked { held: 6, offered: 6, .. }), "{e}");
    assert!(e.to_string().contains(NODE_A) && e.to_string().contains("size 6"), "{e}");

    // Grown from a rewritten prefix: its consistency proof from the held size fails.
    exchange(&mut liar, CONS, "more", T0 + 3000);
    let e = c.ingest(&node(NODE_A), liar.batch(&inst, &key, 6..8, 6), inst.trust(&key)).unwrap_err();
    assert!(matches!(&e, CollectError::Forked { held: 6, offered: 8, .. }), "{e}");
    assert!(e.to_string().contains("consistency proof fails"), "{e}");

    // A shrunken log.
    let e = c.ingest(&node(NODE_A), log_of(2).batch(&inst, &key, [0], 0), inst.trust(&key)).unwrap_err();
    assert!(matches!(&e, CollectError::Forked { held: 6, offered: 4, .. }), "{e}");

    // Nothing of the refused batches was stored.
    assert_eq!(c.records((T0, T0 + 10_000)).unwrap().len(), 6);
    assert!(c.records((T0, T0 + 10_000)).unwrap().iter().all(|r| r.record.message_id != "forged"));
}

#[test]
fn checkpoints_not_witnessed_or_not_the_nodes_are_refused() {
    let inst = Instance::new();
    let key = inst.node_key(NODE_A);
    let log = log_of(2);
    let c = Collector::in_memory().unwrap();

    let mut batch = log.batch(&inst, &key, 0..4, 0);
    batch.checkpoint = log.checkpoint(&inst, &key, None);
    let e = c.ingest(&node(NODE_A), batch, inst.trust(&key)).unwrap_err();
    assert!(matches!(e, CollectError::NotWitnessed { size: 4, .. }), "{e}");

    // Co-signed by a key the caller does not trust.
    let rogue = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let mut batch = log.batch(&inst, &key, 0..4, 0);
    batch.checkpoint = log.checkpoint(&inst, &key, Some(&rogue));
    let e = c.ingest(&node(NODE_A), batch, inst.trust(&key)).unwrap_err();
    assert!(matches!(e, CollectError::NotWitnessed { .. }), "{e}");

    // Signed by another certificate than the one registered for the node.
    let other = inst.node_key(NODE_A);
    let e = c.ingest(&node(NODE_A), log.batch(&inst, &other, 0..4, 0), inst.trust(&key)).unwrap_err();
    assert!(matches!(e, CollectError::Signature { .. }), "{e}");

    // Another node's log offered as this node's.
    let e = c.ingest(&node(NODE_B), log.batch(&inst, &key, 0..4, 0), inst.trust(&key)).unwrap_err();
    assert!(matches!(e, CollectError::WrongOrigin { .. }), "{e}");

    // A record altered after the proof was made.
    let mut batch = log.batch(&inst, &key, 0..4, 0);
    batch.records[1].record.push(0);
    let e = c.ingest(&node(NODE_A), batch, inst.trust(&key)).unwrap_err();
    assert!(matches!(e, CollectError::Inclusion { index: 1, size: 4, .. }), "{e}");

    assert!(c.coverage().unwrap().is_empty());
}

#[test]
fn by_client_is_a_range_over_one_agencys_records() {
    let inst = Instance::new();
    let key = inst.node_key(NODE_A);
    let mut log = Log::new(NODE_A);
    for i in 0..10 {
        let client = if i % 2 == 0 { CONS } else { APP };
        exchange(&mut log, client, &format!("x{i}"), T0 + 1000 * i);
    }
    let c = Collector::in_memory().unwrap();
    c.ingest(&node(NODE_A), log.batch(&inst, &key, 0..20, 0), inst.trust(&key)).unwrap();

    let cons: ClientId = CONS.parse().unwrap();
    // x2, x4, x6 (requests at T0+2000.., responses 20 ms later); x8 starts at the period's end.
    let got = c.by_client(&cons, (T0 + 2000, T0 + 8000), 100).unwrap();
    let ids: Vec<_> = got.iter().map(|r| (r.record.message_id.as_str(), r.record.direction)).collect();
    let (q, s) = (pb::Direction::Request as i32, pb::Direction::Response as i32);
    assert_eq!(ids, [("x2", q), ("x2", s), ("x4", q), ("x4", s), ("x6", q), ("x6", s)]);
    assert!(got.iter().all(|r| r.record.body.is_none()));
    assert_eq!(c.by_client(&cons, (T0 + 2000, T0 + 8000), 3).unwrap().len(), 3);
    assert!(c.by_client(&"VN/GOV/C/other".parse().unwrap(), (T0, T0 + 20_000), 10).unwrap().is_empty());
}

fn conf() -> GlobalConf {
    let member = |id: &str, sub: &str| {
        let id: MemberId = id.parse().unwrap();
        let m = Member {
            id: id.clone(),
            name: id.to_string(),
            status: MemberStatus::Active,
            status_since: from_millis(0),
            superseded_by: None,
            parent: None,
            subsystems: BTreeMap::from([(sub.parse().unwrap(), String::new())]),
            signing_certs: BTreeSet::new(),
        };
        (id, m)
    };
    GlobalConf {
        version: 1,
        generated_at: from_millis(T0),
        expires_at: from_millis(T0) + Duration::from_secs(86_400),
        member_classes: BTreeSet::from([MemberClass::new("GOV").unwrap()]),
        members: BTreeMap::from([
            member("VN/GOV/A", "cons"),
            member("VN/GOV/B", "prov"),
            member("VN/GOV/C", "app"),
        ]),
        ..GlobalConf::empty(InstanceId::new("VN").unwrap())
    }
}

#[test]
fn the_sharing_report_runs_over_collected_records() {
    let inst = Instance::new();
    let (ka, kb) = (inst.node_key(NODE_A), inst.node_key(NODE_B));
    let mut a = Log::new(NODE_A);
    let mut b = Log::new(NODE_B);
    // CONS calls 3 times (both nodes log each), APP twice (consumer side only here); one CONS
    // call lies before the period.
    for (i, t) in [(0, T0 - 60_000), (1, T0 + 1000), (2, T0 + 2000), (3, T0 + 3000)] {
        let id = format!("c{i}");
        exchange(&mut a, CONS, &id, t);
        b.append(&record(NODE_B, CONS, &id, pb::Role::Provider, pb::Direction::Request, t + 1, 0));
        b.append(&record(NODE_B, CONS, &id, pb::Role::Provider, pb::Direction::Response, t + 10, 200));
    }
    exchange(&mut a, APP, "p0", T0 + 4000);
    exchange(&mut a, APP, "p1", T0 + 5000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collect.redb");
    {
        let c = Collector::open(&path).unwrap();
        c.ingest(&node(NODE_A), a.batch(&inst, &ka, 0..12, 0), inst.trust(&ka)).unwrap();
        c.ingest(&node(NODE_B), b.batch(&inst, &kb, 0..8, 0), inst.trust(&kb)).unwrap();
    }
    // Reopened: what was collected is still there.
    let c = Collector::open(&path).unwrap();
    let period = (T0, T0 + 60_000);
    let records = c.records(period).unwrap();
    let report = sharing_report(records.iter().map(|r| &r.record), &conf(), period);
    let pairs: Vec<_> = report
        .pairs
        .iter()
        .map(|p| (p.pair.consumer.as_str(), p.pair.service.as_str(), p.calls, p.successes))
        .collect();
    assert_eq!(pairs, [(CONS, PETS, 3, 3), (APP, PETS, 2, 2)]);
}
