//! Evidence bundles on an instance built by hand, without I/O: a CA, a configuration-signing
//! key (the anchor), two members with signing certificates, a consumer node `ss-a` and a provider
//! node `ss-b` whose logs are in-memory stores, checkpoints signed with the nodes' keys and
//! co-signed with the configuration key, as the registry's witness does.

#![allow(clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lienthong_audit::bundle::{self, BUNDLE_FORMAT, BuildError, ExchangeRef, Outcome, Report, Side};
use lienthong_exchange::envelope::{self, Signer};
use lienthong_exchange::headers::request_hash;
use lienthong_exchange::record::{self, Role};
use lienthong_globalconf::{Anchor, ConfKey, key_id, to_millis};
use lienthong_msglog::checkpoint::{Checkpoint, add_witness_signature, sign_checkpoint};
use lienthong_msglog::merkle::{Frontier, leaf_hash};
use lienthong_msglog::record::attach_body;
use lienthong_msglog::{BodyPolicy, Entry, LogError, LogStore, MemStore};
use lienthong_pki::{Certificate, CertificateAuthority, Csr, KeyAlgorithm, PrivateKey, Validity};
use lienthong_proto::audit::v1 as audit_pb;
use lienthong_proto::exchange::v1 as ex;
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::msglog::v1 as log_pb;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{ClientId, InstanceId, MemberId, NodeId, ServiceId, SubsystemId};
use prost::Message;
use sha2::{Digest, Sha256, Sha512};

const A: &str = "VN/GOV/000.00.00.A01";
const B: &str = "VN/GOV/000.00.00.B01";
const CONS: &str = "VN/GOV/000.00.00.A01/cons";
const PETS: &str = "VN/GOV/000.00.00.B01/prov/pets";
const NODE_A: &str = "VN/GOV/000.00.00.A01/ss-a";
const NODE_B: &str = "VN/GOV/000.00.00.B01/ss-b";

fn member(s: &str) -> MemberId {
    s.parse().unwrap()
}

fn node_id(s: &str) -> NodeId {
    s.parse().unwrap()
}

fn service() -> ServiceId {
    PETS.parse().unwrap()
}

fn client() -> ClientId {
    ClientId::Subsystem(CONS.parse::<SubsystemId>().unwrap())
}

struct Keyed {
    key: Arc<PrivateKey>,
    cert: Certificate,
}

/// The instance: CA, configuration key, members' and nodes' keys, and its signed configuration.
struct Instance {
    now: SystemTime,
    ca: CertificateAuthority,
    conf_key: PrivateKey,
    anchor: Anchor,
    a: Keyed,
    b: Keyed,
    node_a: Keyed,
    node_b: Keyed,
}

fn keypair(alg: KeyAlgorithm) -> Arc<PrivateKey> {
    Arc::new(PrivateKey::generate(alg).unwrap())
}

impl Instance {
    fn new() -> Self {
        let now = SystemTime::now();
        let instance = InstanceId::new("VN").unwrap();
        let ca_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let ca = CertificateAuthority::init(instance.clone(), &ca_key, Validity::days(3650), now).unwrap();
        let member_cert = |m: &str| {
            let key = keypair(KeyAlgorithm::Ed25519);
            let cert = ca
                .issue_member(
                    &Csr::for_member(&key, &member(m)).unwrap(),
                    &member(m),
                    Validity::days(365),
                    now,
                )
                .unwrap();
            Keyed { key, cert }
        };
        let node_cert = |n: &str| {
            // One node on ECDSA, to cover a second algorithm end to end.
            let alg = if n == NODE_B { KeyAlgorithm::EcdsaP256 } else { KeyAlgorithm::Ed25519 };
            let key = keypair(alg);
            let cert = ca
                .issue_node(&Csr::for_node(&key, &node_id(n)).unwrap(), &node_id(n), Validity::days(365), now)
                .unwrap();
            Keyed { key, cert }
        };
        let conf_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let anchor = Anchor {
            instance,
            conf_urls: vec!["http://registry.invalid/globalconf".into()],
            signing_keys: vec![ConfKey::new(conf_key.public_key(), now - Duration::from_secs(86400), None)],
            generated_at: now,
        };
        Self {
            now,
            a: member_cert(A),
            b: member_cert(B),
            node_a: node_cert(NODE_A),
            node_b: node_cert(NODE_B),
            ca,
            conf_key,
            anchor,
        }
    }

    fn ms(&self, offset_secs: i64) -> i64 {
        to_millis(self.now) + offset_secs * 1000
    }

    /// The wire configuration: both members with their signing certificates, both nodes with
    /// their authentication certificates.
    fn wire_conf(&self) -> gc::GlobalConf {
        let m = |id: &str, subsystem: &str, cert: &Certificate| gc::Member {
            id: Some((&member(id)).into()),
            name: id.into(),
            status: gc::MemberStatus::Active as i32,
            subsystems: vec![gc::Subsystem { code: subsystem.into(), name: subsystem.into() }],
            signing_cert_sha256: vec![cert.fingerprint().0.to_vec()],
            ..Default::default()
        };
        let n = |id: &str, hosted: &str, cert: &Certificate| gc::Node {
            id: Some((&node_id(id)).into()),
            auth_cert_sha256: cert.fingerprint().0.to_vec(),
            hosted_subsystems: vec![(&hosted.parse::<SubsystemId>().unwrap()).into()],
            ..Default::default()
        };
        gc::GlobalConf {
            instance: "VN".into(),
            version: 7,
            generated_at_ms: self.ms(-600),
            expires_at_ms: self.ms(600),
            member_classes: vec!["GOV".into()],
            approved_cas: vec![self.ca.certificate().der().to_vec()],
            members: vec![m(A, "cons", &self.a.cert), m(B, "prov", &self.b.cert)],
            nodes: vec![
                n(NODE_A, CONS, &self.node_a.cert),
                n(NODE_B, "VN/GOV/000.00.00.B01/prov", &self.node_b.cert),
            ],
            signing_keys: self.anchor.signing_keys.iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    fn sign_conf(&self, conf: &gc::GlobalConf) -> Vec<u8> {
        lienthong_globalconf::sign(conf, &[&self.conf_key]).unwrap().encode_to_vec()
    }

    fn conf(&self) -> Vec<u8> {
        self.sign_conf(&self.wire_conf())
    }

    /// A signed request and the provider's signed 200 response to it.
    fn exchange(&self, message_id: &str, body: &[u8]) -> Exchange {
        let headers =
            vec![types_pb::Header { name: "content-type".into(), value: b"application/json".to_vec() }];
        let mut request = ex::RequestEnvelope {
            message_id: message_id.into(),
            request_id: format!("{message_id}-req"),
            client: Some((&client()).into()),
            service: Some((&service()).into()),
            method: "POST".into(),
            path: "/pets".into(),
            query: "kind=cat".into(),
            headers: headers.clone(),
            user_id: "VN012345678".into(),
            consumer_node: Some((&node_id(NODE_A)).into()),
            created_at_ms: self.ms(-60),
            body_sha256: Sha256::digest(body).to_vec(),
            body_length: body.len() as u64,
            ..Default::default()
        };
        envelope::sign_request(&mut request, Signer { key: &self.a.key, certificate: &self.a.cert }).unwrap();
        let sha512: [u8; 64] = Sha512::digest(body).into();
        let hash = request_hash(
            "POST",
            &format!("{}/pets?kind=cat", service().r1_path()),
            &headers,
            (!body.is_empty()).then_some(&sha512),
        );
        let answer = br#"{"ok":true}"#;
        let response = self.respond(&request, hash, 200, answer);
        Exchange { request, response, body: body.to_vec(), answer: answer.to_vec() }
    }

    fn respond(
        &self,
        request: &ex::RequestEnvelope,
        hash: String,
        status: u32,
        body: &[u8],
    ) -> ex::ResponseEnvelope {
        let mut response = ex::ResponseEnvelope {
            message_id: request.message_id.clone(),
            request_id: request.request_id.clone(),
            client: request.client.clone(),
            service: request.service.clone(),
            request_hash: hash,
            status,
            provider_node: Some((&node_id(NODE_B)).into()),
            created_at_ms: self.ms(-59),
            body_sha256: Sha256::digest(body).to_vec(),
            body_length: body.len() as u64,
            ..Default::default()
        };
        envelope::sign_response(&mut response, Signer { key: &self.b.key, certificate: &self.b.cert })
            .unwrap();
        response
    }
}

struct Exchange {
    request: ex::RequestEnvelope,
    response: ex::ResponseEnvelope,
    body: Vec<u8>,
    answer: Vec<u8>,
}

impl Exchange {
    fn message_id(&self) -> &str {
        &self.request.message_id
    }

    /// The records the consumer node writes: its request (no peer known yet) and the response.
    fn consumer_records(&self, at: SystemTime) -> Vec<log_pb::LogRecord> {
        let (a, b) = (node_id(NODE_A), node_id(NODE_B));
        let mut req = record::request_record(
            &self.request,
            &self.request.encode_to_vec(),
            Role::Consumer,
            &a,
            None,
            at,
            None,
        );
        attach_body(&mut req, &self.body, &BodyPolicy::Full).unwrap();
        let mut resp = record::response_record(
            &self.request,
            &self.response,
            &self.response.encode_to_vec(),
            Role::Consumer,
            &a,
            Some(&b),
            at,
        );
        attach_body(&mut resp, &self.answer, &BodyPolicy::MetadataOnly).unwrap();
        vec![req, resp]
    }

    fn provider_records(&self, at: SystemTime) -> Vec<log_pb::LogRecord> {
        let (a, b) = (node_id(NODE_A), node_id(NODE_B));
        let mut req = record::request_record(
            &self.request,
            &self.request.encode_to_vec(),
            Role::Provider,
            &b,
            Some(&a),
            at,
            Some("g-pets"),
        );
        attach_body(&mut req, &self.body, &BodyPolicy::MetadataOnly).unwrap();
        let mut resp = record::response_record(
            &self.request,
            &self.response,
            &self.response.encode_to_vec(),
            Role::Provider,
            &b,
            Some(&a),
            at,
        );
        attach_body(&mut resp, &self.answer, &BodyPolicy::Full).unwrap();
        vec![req, resp]
    }
}

/// A node's log in memory, appended the way `MessageLog` does (records and the tree nodes each
/// completes), with checkpoints signed by the node and co-signed with the configuration key.
struct TestLog {
    origin: String,
    store: Arc<MemStore>,
    frontier: Frontier,
}

impl TestLog {
    fn new(origin: &str) -> Self {
        Self { origin: origin.into(), store: Arc::new(MemStore::new()), frontier: Frontier::new() }
    }

    fn append(&mut self, records: &[log_pb::LogRecord]) {
        for r in records {
            let entry = Entry::new(r);
            let first = self.frontier.size();
            let nodes = self.frontier.append(leaf_hash(&entry.bytes));
            self.store.append(first, &[entry], &nodes).unwrap();
        }
    }

    /// Unrelated traffic, so that the exchange sits inside a larger tree.
    fn noise(&mut self, inst: &Instance, n: usize) {
        for i in 0..n {
            let e = inst.exchange(&format!("noise-{i}"), b"{}");
            self.append(&e.consumer_records(inst.now)[..1]);
        }
    }

    fn checkpoint(&self, inst: &Instance, node: &Keyed, witnessed: bool) -> log_pb::SignedCheckpoint {
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size: self.frontier.size(),
            root: self.frontier.root(),
            timestamp_ms: inst.ms(-30),
        };
        let mut signed =
            sign_checkpoint(&checkpoint, &node.key, node.cert.fingerprint(), inst.ms(-30)).unwrap();
        self.store.put_certificate(node.cert.der()).unwrap();
        if witnessed {
            let id = key_id(&inst.conf_key.public_key());
            add_witness_signature(&mut signed, &inst.conf_key, id, "VN", inst.ms(-29)).unwrap();
        }
        self.store.put_checkpoint(checkpoint.size, &signed).unwrap();
        signed
    }
}

/// Both nodes' logs after one exchange, witnessed.
struct World {
    inst: Instance,
    exchange: Exchange,
    consumer: TestLog,
    provider: TestLog,
    conf: Vec<u8>,
}

impl World {
    fn new() -> Self {
        let inst = Instance::new();
        let exchange = inst.exchange("vpcp-2026-000042", r#"{"ten":"Trần Thị Bình"}"#.as_bytes());
        let mut consumer = TestLog::new(NODE_A);
        consumer.noise(&inst, 3);
        consumer.append(&exchange.consumer_records(inst.now));
        consumer.noise(&inst, 2);
        consumer.checkpoint(&inst, &inst.node_a, true);
        let mut provider = TestLog::new(NODE_B);
        provider.noise(&inst, 6);
        provider.append(&exchange.provider_records(inst.now));
        provider.checkpoint(&inst, &inst.node_b, true);
        let conf = inst.conf();
        Self { inst, exchange, consumer, provider, conf }
    }

    fn sides(&self) -> Vec<Side<'_>> {
        vec![
            Side {
                store: &*self.consumer.store,
                conf: &self.conf,
                node_certificate: None,
                partner_confs: &[],
            },
            Side {
                store: &*self.provider.store,
                conf: &self.conf,
                node_certificate: None,
                partner_confs: &[],
            },
        ]
    }

    fn wanted(&self) -> Vec<ExchangeRef> {
        vec![ExchangeRef::message(self.exchange.message_id())]
    }

    fn bundle(&self) -> Vec<u8> {
        bundle::build(&self.sides(), &self.wanted()).unwrap()
    }
}

/// Building must fail (without printing the bundle's bytes if it does not).
fn build_err(sides: &[Side<'_>], wanted: &[ExchangeRef]) -> BuildError {
    match bundle::build(sides, wanted) {
        Ok(bytes) => panic!("a bundle of {} bytes was built", bytes.len()),
        Err(e) => e,
    }
}

fn failures(report: &Report) -> Vec<String> {
    report.failures().map(|c| format!("{}: {}: {}", c.subject, c.check, c.detail)).collect()
}

/// Verifies, expecting failure; returns the report.
fn invalid(bytes: &[u8], anchor: &Anchor) -> Report {
    match bundle::verify(bytes, anchor) {
        Ok(report) => panic!("the bundle verified:\n{report}"),
        Err(invalid) => {
            assert!(invalid.0.failures().next().is_some());
            *invalid.0
        }
    }
}

#[test]
fn a_bundle_of_both_sides_verifies_and_says_what_it_proves() {
    let w = World::new();
    let bytes = w.bundle();
    let report = bundle::verify(&bytes, &w.inst.anchor).unwrap_or_else(|e| panic!("{}", e.0));
    assert!(report.valid);
    assert_eq!(report.format, BUNDLE_FORMAT);
    assert_eq!(report.instance, "VN");

    let [e] = report.exchanges.as_slice() else { panic!("{:?}", report.exchanges) };
    assert_eq!(e.message_id, w.exchange.message_id());
    assert_eq!(e.client, CONS);
    assert_eq!(e.service, PETS);
    assert_eq!((e.method.as_str(), e.path.as_str()), ("POST", "/pets?kind=cat"));
    assert_eq!(e.status, Some(200));
    assert_eq!(e.consumer_node.as_deref(), Some(NODE_A));
    assert_eq!(e.provider_node.as_deref(), Some(NODE_B));
    assert_eq!(e.records, ["consumer request", "consumer response", "provider request", "provider response"]);

    let nodes: Vec<&str> = report.sides.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(nodes, [NODE_A, NODE_B]);
    assert_eq!(report.sides[0].records, [3, 4]);
    assert_eq!(report.sides[1].records, [6, 7]);
    assert_eq!(report.sides[0].checkpoint_size, 7);
    assert_eq!(report.sides[0].global_conf_version, Some(7));
    assert_eq!(report.sides[1].node_certificate, w.inst.node_b.cert.fingerprint().to_string());
    for s in &report.sides {
        assert_eq!(s.witnessed_by, [key_id(&w.inst.conf_key.public_key()).to_string()]);
    }

    // Every kind of check was made and passed, on each record where it applies.
    let passed = |check: &str| {
        report.checks.iter().filter(|c| c.check == check && c.outcome == Outcome::Passed).count()
    };
    assert_eq!(passed("configuration signature"), 1);
    assert_eq!(passed("node certificate"), 2);
    assert_eq!(passed("checkpoint signature"), 2);
    assert_eq!(passed("witness co-signature"), 2);
    assert_eq!(passed("inclusion proof"), 4);
    assert_eq!(passed("envelope signature"), 4);
    assert_eq!(passed("record matches envelope"), 4);
    assert_eq!(passed("body"), 2, "the bodies the logs kept in full");
    assert_eq!(passed("request hash"), 1, "recomputed from the consumer's logged request body");
    assert_eq!(
        passed("consistency"),
        4,
        "same request, same response, response answers it, nodes name each other"
    );
    assert_eq!(passed("coverage"), 1);

    // The text names the exchange and says it is valid; the JSON has stable names.
    let text = report.to_string();
    assert!(text.starts_with("evidence bundle (lienthong-evidence-bundle-v1), instance VN: VALID"), "{text}");
    assert!(text.contains(w.exchange.message_id()), "{text}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["valid"], true);
    assert_eq!(json["exchanges"][0]["provider_node"], NODE_B);
    assert_eq!(json["checks"][0]["outcome"], "passed");

    // Building is deterministic: no time or other unsigned metadata.
    assert_eq!(w.bundle(), bytes);
}

#[test]
fn building_needs_a_witnessed_checkpoint_that_covers_the_records() {
    let inst = Instance::new();
    let e = inst.exchange("m-1", b"{}");
    let mut log = TestLog::new(NODE_A);
    log.append(&e.consumer_records(inst.now));
    let conf = inst.conf();
    let store = log.store.clone();
    let sides = [Side { store: &*store, conf: &conf, node_certificate: None, partner_confs: &[] }];
    let wanted = [ExchangeRef::message("m-1")];

    // Signed by the node only.
    log.checkpoint(&inst, &inst.node_a, false);
    let err = build_err(&sides, &wanted);
    assert!(matches!(err, BuildError::NotWitnessed { witnessed: None, index: 1, .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("a checkpoint must be witnessed first"), "{text}");
    assert!(text.contains(NODE_A), "{text}");

    // Witnessed, but records came after it.
    log.checkpoint(&inst, &inst.node_a, true);
    let later = inst.exchange("m-2", b"{}");
    log.append(&later.consumer_records(inst.now));
    let err = build_err(&sides, &[ExchangeRef::message("m-2")]);
    assert!(matches!(err, BuildError::NotWitnessed { witnessed: Some(2), index: 3, .. }), "{err:?}");
    assert!(err.to_string().contains("the latest witnessed one has size 2"), "{err}");
    // The earlier exchange is covered.
    bundle::build(&sides, &wanted).unwrap();
}

#[test]
fn building_names_what_is_missing() {
    let w = World::new();
    // An exchange no log holds.
    let err = build_err(&w.sides(), &[ExchangeRef::message("nowhere")]);
    assert!(matches!(err, BuildError::NoRecords { .. }), "{err:?}");
    // A log without the exchange, next to one with it.
    let other = TestLog::new(NODE_B);
    let sides = [
        w.sides()[0],
        Side { store: &*other.store, conf: &w.conf, node_certificate: None, partner_confs: &[] },
    ];
    let err = build_err(&sides, &w.wanted());
    assert!(matches!(err, BuildError::NoRecords { .. }), "{err}");
    // The same node twice.
    let sides = [w.sides()[0], w.sides()[0]];
    assert!(matches!(bundle::build(&sides, &w.wanted()), Err(BuildError::DuplicateSide { .. })));
    // A record pruned by retention cannot be proved.
    w.provider.store.prune(7).unwrap();
    let err = build_err(&w.sides(), &w.wanted());
    assert!(matches!(err, BuildError::Pruned { index: 6, .. }), "{err:?}");
    assert!(bundle::build(&[], &w.wanted()).is_err());
    assert!(matches!(bundle::build(&w.sides(), &[]), Err(BuildError::NoExchanges)));
}

#[test]
fn a_request_id_narrows_a_reused_message_id() {
    let inst = Instance::new();
    let first = inst.exchange("reused", b"{}");
    let mut second = inst.exchange("reused", b"[]");
    second.request.request_id = "another".into();
    envelope::sign_request(&mut second.request, Signer { key: &inst.a.key, certificate: &inst.a.cert })
        .unwrap();
    let mut log = TestLog::new(NODE_A);
    log.append(&first.consumer_records(inst.now)[..1]);
    log.append(&second.consumer_records(inst.now)[..1]);
    log.checkpoint(&inst, &inst.node_a, true);
    let conf = inst.conf();
    let sides = [Side { store: &*log.store, conf: &conf, node_certificate: None, partner_confs: &[] }];

    let all = bundle::build(&sides, &[ExchangeRef::message("reused")]).unwrap();
    let report = bundle::verify(&all, &inst.anchor).unwrap();
    assert_eq!(report.exchanges.len(), 2);
    let one = ExchangeRef { message_id: "reused".into(), request_id: Some("another".into()) };
    let narrowed = bundle::build(&sides, &[one]).unwrap();
    let report = bundle::verify(&narrowed, &inst.anchor).unwrap();
    assert_eq!(report.sides[0].records, [1]);
    assert_eq!(report.exchanges[0].request_id, "another");
    // Only one side: valid, and the report says what is not proved.
    assert!(report.checks.iter().any(|c| c.check == "coverage"
        && c.outcome == Outcome::Skipped
        && c.detail.contains("only the consumer node's log")));
}

/// Flips bits of `bytes` at `positions` one at a time (in parallel) and returns the positions
/// where the altered bundle still verified.
fn survivors(bytes: &[u8], anchor: &Anchor, positions: &[usize], mask: u8) -> Vec<usize> {
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

/// The bundle's byte positions to alter: every byte of its framing, names, checkpoints (with all
/// their signatures) and proofs, and every `k`-th byte (and the first and last) of the opaque
/// blobs that one hash or signature covers as a whole: the records (leaf hash), configurations
/// (the registry's signature) and node certificates (the registered fingerprint).
fn positions(bytes: &[u8], k: usize) -> Vec<usize> {
    let b = audit_pb::EvidenceBundle::decode(bytes).unwrap();
    let mut blobs: Vec<&[u8]> = b.global_confs.iter().map(Vec::as_slice).collect();
    for side in &b.sides {
        blobs.push(&side.node_certificate);
        blobs.extend(side.records.iter().map(|r| r.record.as_slice()));
    }
    let mut inside = vec![None; bytes.len()];
    for blob in blobs {
        let at = bytes.windows(blob.len()).position(|w| w == blob).expect("a blob of the bundle");
        for (offset, slot) in inside[at..at + blob.len()].iter_mut().enumerate() {
            *slot = Some((offset, blob.len()));
        }
    }
    (0..bytes.len())
        .filter(|&i| match inside[i] {
            None => true,
            Some((offset, len)) => offset % k == 0 || offset + 1 == len,
        })
        .collect()
}

#[test]
fn changing_any_byte_of_a_bundle_makes_it_fail() {
    let w = World::new();
    let bytes = w.bundle();
    bundle::verify(&bytes, &w.inst.anchor).unwrap();
    let started = std::time::Instant::now();
    let chosen = positions(&bytes, 3);
    let left = survivors(&bytes, &w.inst.anchor, &chosen, 0x01);
    assert!(left.is_empty(), "flipping the low bit of bytes {left:?} (of {}) went unnoticed", bytes.len());
    // The high bit turns a varint's last byte into a continuation: framing changes.
    let every_7th: Vec<usize> = (0..bytes.len()).step_by(7).collect();
    let left = survivors(&bytes, &w.inst.anchor, &every_7th, 0x80);
    assert!(left.is_empty(), "flipping the high bit of bytes {left:?} went unnoticed");
    // Appended or truncated bytes too.
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(bundle::verify(&longer, &w.inst.anchor).is_err());
    assert!(bundle::verify(&bytes[..bytes.len() - 1], &w.inst.anchor).is_err());
    eprintln!(
        "{} one-byte changes of a {}-byte bundle checked in {:?}",
        chosen.len() + every_7th.len(),
        bytes.len(),
        started.elapsed()
    );
}

#[test]
fn a_bundle_that_is_not_one_is_explained() {
    let w = World::new();
    let report = invalid(b"not a bundle at all", &w.inst.anchor);
    assert_eq!(report.checks.len(), 1);
    assert_eq!(report.checks[0].check, "format");
    assert!(report.checks[0].detail.contains("not a Lienthong evidence bundle"), "{:?}", report.checks);

    let mut other = audit_pb::EvidenceBundle::decode(w.bundle().as_slice()).unwrap();
    other.format = "lienthong-evidence-bundle-v9".into();
    let report = invalid(&other.encode_to_vec(), &w.inst.anchor);
    assert!(failures(&report)[0].contains("is not \"lienthong-evidence-bundle-v1\""), "{report}");
}

/// A log whose record `index` was changed after the node signed (and the registry witnessed) a
/// checkpoint over it: the node rewrote its history.
struct Rewritten {
    inner: Arc<MemStore>,
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

#[test]
fn a_record_changed_after_the_checkpoint_is_named() {
    let w = World::new();
    // The provider node claims afterwards that it answered 500.
    let mut record =
        log_pb::LogRecord::decode(w.provider.store.record(7).unwrap().unwrap().as_slice()).unwrap();
    record.status = 500;
    let rewritten = Rewritten { inner: w.provider.store.clone(), index: 7, bytes: record.encode_to_vec() };
    let sides =
        [w.sides()[0], Side { store: &rewritten, conf: &w.conf, node_certificate: None, partner_confs: &[] }];
    let bytes = bundle::build(&sides, &w.wanted()).unwrap();
    let report = invalid(&bytes, &w.inst.anchor);
    let failed = failures(&report);
    let subject = format!("node {NODE_B}, record 7 (provider response of {})", w.exchange.message_id());
    assert!(
        failed.iter().any(|f| f.starts_with(&format!("{subject}: inclusion proof: it is not record 7"))),
        "{failed:#?}"
    );
    // The record no longer says what its signed envelope says either.
    assert!(
        failed
            .iter()
            .any(|f| f.starts_with(&format!("{subject}: record matches envelope")) && f.contains("status")),
        "{failed:#?}"
    );
    assert!(report.to_string().contains("NOT VALID"), "{report}");
}

#[test]
fn a_history_re_signed_without_the_witness_is_refused() {
    let w = World::new();
    // The node rebuilds its log with a changed record and signs a new checkpoint over it; the
    // registry would refuse to witness it, so the node copies the old co-signature over.
    let old = w.provider.store.checkpoints().unwrap().pop().unwrap();
    let mut forged_log = TestLog::new(NODE_B);
    forged_log.noise(&w.inst, 6);
    let mut records = w.exchange.provider_records(w.inst.now);
    records[1].status = 500;
    forged_log.append(&records);
    let mut forged = forged_log.checkpoint(&w.inst, &w.inst.node_b, false);
    forged
        .signatures
        .extend(old.signatures.iter().filter(|s| s.role == log_pb::SignerRole::Witness as i32).cloned());
    forged_log.store.put_checkpoint(8, &forged).unwrap();

    let sides = [
        w.sides()[0],
        Side { store: &*forged_log.store, conf: &w.conf, node_certificate: None, partner_confs: &[] },
    ];
    let report = invalid(&bundle::build(&sides, &w.wanted()).unwrap(), &w.inst.anchor);
    let failed = failures(&report);
    assert!(
        failed.iter().any(|f| f.starts_with(&format!("node {NODE_B}: witness co-signature"))
            && f.contains("does not verify")),
        "{failed:#?}"
    );
    // Its own log signature is fine: it is the registry's that exposes the rewrite.
    assert!(report.checks.iter().any(|c| c.subject == format!("node {NODE_B}")
        && c.check == "checkpoint signature"
        && c.outcome == Outcome::Passed));
    // The two sides no longer hold the same response.
    assert!(
        failed
            .iter()
            .any(|f| f.contains("hold different signed responses") || f.contains("record matches envelope")),
        "{failed:#?}"
    );
}

#[test]
fn sides_that_logged_different_responses_are_named() {
    let w = World::new();
    // The provider logged (and signed) a 500 while the consumer holds the signed 200.
    let mut provider = TestLog::new(NODE_B);
    provider.noise(&w.inst, 6);
    let other = Exchange {
        response: w.inst.respond(&w.exchange.request, w.exchange.response.request_hash.clone(), 500, b"{}"),
        request: w.exchange.request.clone(),
        body: w.exchange.body.clone(),
        answer: b"{}".to_vec(),
    };
    provider.append(&other.provider_records(w.inst.now));
    provider.checkpoint(&w.inst, &w.inst.node_b, true);
    let sides = [
        w.sides()[0],
        Side { store: &*provider.store, conf: &w.conf, node_certificate: None, partner_confs: &[] },
    ];
    let report = invalid(&bundle::build(&sides, &w.wanted()).unwrap(), &w.inst.anchor);
    let failed = failures(&report);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(failed[0].contains("hold different signed responses"), "{failed:#?}");
    assert!(failed[0].contains("status"), "{failed:#?}");
    assert!(
        failed[0].contains(&format!("the consumer's response record (node {NODE_A}, record 4)")),
        "{failed:#?}"
    );
}

#[test]
fn a_provider_that_received_another_request_is_caught_by_the_request_hash() {
    let w = World::new();
    let mut other = Exchange { ..w.inst.exchange(w.exchange.message_id(), &w.exchange.body) };
    other.request = w.exchange.request.clone();
    other.response =
        w.inst.respond(&w.exchange.request, "bm90IHRoaXMgcmVxdWVzdA==".into(), 200, &w.exchange.answer);
    let mut consumer = TestLog::new(NODE_A);
    consumer.append(&other.consumer_records(w.inst.now));
    consumer.checkpoint(&w.inst, &w.inst.node_a, true);
    let sides = [Side { store: &*consumer.store, conf: &w.conf, node_certificate: None, partner_confs: &[] }];
    let report = invalid(&bundle::build(&sides, &w.wanted()).unwrap(), &w.inst.anchor);
    let failed = failures(&report);
    assert!(
        failed.iter().any(
            |f| f.contains(": request hash: ") && f.contains("the provider received a different request")
        ),
        "{failed:#?}"
    );
}

#[test]
fn a_signature_by_a_certificate_the_configuration_does_not_list_is_refused() {
    let w = World::new();
    // A configuration in which member A's signing certificate was replaced.
    let mut conf = w.inst.wire_conf();
    conf.members[0].signing_cert_sha256 = vec![vec![7; 32]];
    let conf = w.inst.sign_conf(&conf);
    let sides: Vec<Side<'_>> = w.sides().into_iter().map(|s| Side { conf: &conf, ..s }).collect();
    let report = invalid(&bundle::build(&sides, &w.wanted()).unwrap(), &w.inst.anchor);
    let failed = failures(&report);
    // Both sides' request records, and nothing else.
    assert_eq!(failed.len(), 2, "{failed:#?}");
    for f in &failed {
        assert!(
            f.contains("request of vpcp-2026-000042): envelope signature: not a valid signature of member"),
            "{f}"
        );
        assert!(f.contains("not registered for member"), "{f}");
    }
}

#[test]
fn a_node_certificate_the_configuration_does_not_register_is_refused() {
    let w = World::new();
    // The provider node signs its checkpoints with a certificate the registry never registered.
    let stray = {
        let key = keypair(KeyAlgorithm::Ed25519);
        let cert = w
            .inst
            .ca
            .issue_node(
                &Csr::for_node(&key, &node_id(NODE_B)).unwrap(),
                &node_id(NODE_B),
                Validity::days(30),
                w.inst.now,
            )
            .unwrap();
        Keyed { key, cert }
    };
    w.provider.checkpoint(&w.inst, &stray, true);
    let report = invalid(&w.bundle(), &w.inst.anchor);
    let failed = failures(&report);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(
        failed[0].starts_with(&format!(
            "node {NODE_B}: node certificate: certificate {}",
            stray.cert.fingerprint()
        )),
        "{failed:#?}"
    );
    assert!(failed[0].contains("not registered"), "{failed:#?}");
    assert!(report.checks.iter().any(|c| c.check == "checkpoint signature" && c.outcome == Outcome::Skipped));
}

#[test]
fn another_instance_anchor_refuses_the_configuration_and_the_witness() {
    let w = World::new();
    let bytes = w.bundle();
    let stranger = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let anchor = Anchor {
        signing_keys: vec![ConfKey::new(
            stranger.public_key(),
            w.inst.now - Duration::from_secs(86400),
            None,
        )],
        ..w.inst.anchor.clone()
    };
    let report = invalid(&bytes, &anchor);
    let failed = failures(&report);
    assert!(
        failed[0].starts_with(
            "global configuration 1: configuration signature: does not verify against the anchor"
        ),
        "{failed:#?}"
    );
    // Nothing that depends on the configuration passes; the witness is not the anchor's.
    assert!(!report.checks.iter().any(|c| c.outcome == Outcome::Passed && c.check == "envelope signature"));
    assert!(failed.iter().any(|f| f.contains("witness co-signature: a co-signature by key")), "{failed:#?}");
}

#[test]
fn a_bundle_with_the_sides_configurations_swapped_is_refused() {
    // Two configurations (versions 7 and 8): each side names the one it holds, in first-use
    // order, so pointing a side at the other is never a valid re-encoding.
    let w = World::new();
    let mut newer = w.inst.wire_conf();
    newer.version = 8;
    let newer = w.inst.sign_conf(&newer);
    let sides = [w.sides()[0], Side { conf: &newer, ..w.sides()[1] }];
    let bytes = bundle::build(&sides, &w.wanted()).unwrap();
    let report = bundle::verify(&bytes, &w.inst.anchor).unwrap();
    assert_eq!(report.sides[0].global_conf_version, Some(7));
    assert_eq!(report.sides[1].global_conf_version, Some(8));

    let mut swapped = audit_pb::EvidenceBundle::decode(bytes.as_slice()).unwrap();
    swapped.sides[0].global_conf = 1;
    swapped.sides[1].global_conf = 0;
    let failed = failures(&invalid(&swapped.encode_to_vec(), &w.inst.anchor));
    assert!(failed.iter().any(|f| f.contains("names global configuration 2 before 1")), "{failed:#?}");
}
