//! Checkpoint witnessing end to end: a node's log checkpoints, pushed to a registry served
//! in-process over its real gRPC API, are co-signed while the history only grows; a rewritten
//! or shrunk history and a checkpoint signed by any other key are refused.

use crate::common;

use std::sync::Arc;

use common::{request, start_registry, within};
use lienthong_globalconf::sign_request;
use lienthong_msglog::checkpoint::{Checkpoint, sign_checkpoint, verify_witness_signatures};
use lienthong_msglog::witness::{
    Witness, WitnessFuture, WitnessedFuture, checkpoint_and_witness, last_witnessed,
};
use lienthong_msglog::{CheckpointSigner, LogConfig, LogError, MemStore, MessageLog};
use lienthong_pki::{Certificate, CertificateAuthority, Csr, KeyAlgorithm, PrivateKey, Validity};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::msglog::v1 as log_pb;
use lienthong_proto::registry::v1 as pb;
use lienthong_proto::registry::v1::management_service_client::ManagementServiceClient;
use lienthong_types::{MemberId, NodeId};
use tokio::sync::Mutex;
use tonic::transport::Channel;

/// The node's side of witnessing: the registry's management API over TLS.
struct GrpcWitness(Mutex<ManagementServiceClient<Channel>>);

impl Witness for GrpcWitness {
    fn witness(&self, request: pb::WitnessRequest) -> WitnessFuture<'_> {
        Box::pin(async move {
            let response = self.0.lock().await.witness_checkpoint(request).await;
            match response {
                Ok(r) => r.into_inner().checkpoint.ok_or_else(|| LogError::Checkpoint("empty answer".into())),
                Err(status) => Err(LogError::Checkpoint(status.message().to_owned())),
            }
        })
    }

    fn witnessed(&self, origin: &str) -> WitnessedFuture<'_> {
        let node: NodeId = origin.parse().unwrap();
        Box::pin(async move {
            let request = pb::GetWitnessedRequest { node: Some((&node).into()) };
            match self.0.lock().await.get_witnessed(request).await {
                Ok(r) => Ok(r.into_inner().checkpoint),
                Err(status) => Err(LogError::Checkpoint(status.message().to_owned())),
            }
        })
    }
}

fn record(i: u64, fork: bool) -> log_pb::LogRecord {
    log_pb::LogRecord {
        message_id: format!("{}-{i}", if fork { "forged" } else { "x" }),
        logged_at_ms: 1_700_000_000_000 + i as i64,
        method: "GET".into(),
        path: format!("/cong-dan/{i}"),
        ..Default::default()
    }
}

async fn log_with(records: impl IntoIterator<Item = log_pb::LogRecord>) -> MessageLog {
    let log = MessageLog::open(Arc::new(MemStore::new()), LogConfig::default()).unwrap();
    for r in records {
        within(log.append(&r)).await.unwrap();
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_witnesses_growing_logs_and_refuses_rewritten_ones() {
    let mut w = start_registry().await;
    let g01: MemberId = "VN/GOV/000.00.00.G01".parse().unwrap();
    within(w.admin.add_member(&g01, "Bộ Công an", None)).await.unwrap();
    let node: NodeId = "VN/GOV/000.00.00.G01/ss1".parse().unwrap();
    let key = Arc::new(PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap());
    let instance = w.running.registry.settings().instance.clone();
    let url = w.running.grpc_url();
    let client =
        lienthong_registry::client::management_client(&url, None, std::slice::from_ref(&w.ca), &instance);
    let mut mgmt = within(client).await.unwrap();
    let register = request(
        "reg-ss1",
        pb::management_request::Kind::RegisterNode(pb::RegisterNode {
            node: Some((&node).into()),
            csr: Csr::for_node(&key, &node).unwrap().der().to_vec(),
            addresses: vec![gc::NodeAddress {
                url: "https://10.0.0.1:5500".into(),
                network: "internet".into(),
            }],
        }),
    );
    within(mgmt.submit(sign_request(&register, &key, None).unwrap())).await.unwrap();
    let status = within(w.admin.decide("reg-ss1", true, "checked")).await.unwrap();
    let certificate = Certificate::from_der(status.certificate).unwrap();
    let signer = CheckpointSigner { origin: node.to_string(), key: key.clone(), certificate };
    let witness = GrpcWitness(Mutex::new(mgmt));
    let anchor_keys: Vec<_> = w.running.registry.conf_keys().into_iter().map(|k| (k.id, k.key)).collect();
    let now = || w.running.registry.now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;

    // The first checkpoint is taken on trust; later ones must extend it.
    let log = log_with((0..5).map(|i| record(i, false))).await;
    let first = within(checkpoint_and_witness(&log, &signer, &witness, now())).await.unwrap();
    assert_eq!(verify_witness_signatures(&first, &anchor_keys).unwrap(), 1);
    for i in 5..12 {
        within(log.append(&record(i, false))).await.unwrap();
    }
    let second = within(checkpoint_and_witness(&log, &signer, &witness, now())).await.unwrap();
    assert_eq!(Checkpoint::decode(&second).unwrap().size, 12);
    assert_eq!(last_witnessed(&log).unwrap().unwrap().size, 12, "the co-signed copy is kept by the node");
    assert_eq!(
        w.running.registry.witnessed(&node).unwrap().unwrap().checkpoint,
        second.checkpoint,
        "and by the registry"
    );
    // Nothing new: the same head is witnessed again without a proof.
    w.clock.advance(1);
    let again = within(checkpoint_and_witness(&log, &signer, &witness, now())).await.unwrap();
    let held = w.running.registry.witnessed(&node).unwrap().unwrap();
    assert_eq!(held.checkpoint, again.checkpoint);

    // A node that rewrote record 7 and grew its log further cannot prove it extends size 12.
    let forged = log_with((0..20).map(|i| record(i, i == 7))).await;
    forged.store().put_checkpoint(12, &second).unwrap(); // it claims the witnessed checkpoint as its own
    let refused = within(checkpoint_and_witness(&forged, &signer, &witness, now())).await.unwrap_err();
    assert!(refused.to_string().contains("does not extend"), "{refused}");

    // A shrunk log, and a checkpoint signed by another key, are refused too.
    let head = log.head();
    let small = sign_checkpoint(
        &Checkpoint { origin: node.to_string(), size: 3, root: head.root, timestamp_ms: now() },
        &key,
        signer.certificate.fingerprint(),
        now(),
    )
    .unwrap();
    let err = within(witness.witness(pb::WitnessRequest { checkpoint: Some(small), proof: None }))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("smaller than the witnessed"), "{err}");
    let other_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let ca_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let rogue_ca = CertificateAuthority::init(
        instance.clone(),
        &ca_key,
        Validity::days(1),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let rogue_cert = rogue_ca
        .issue_node(
            &Csr::for_node(&other_key, &node).unwrap(),
            &node,
            Validity::days(1),
            std::time::SystemTime::now(),
        )
        .unwrap();
    let rogue =
        CheckpointSigner { origin: node.to_string(), key: Arc::new(other_key), certificate: rogue_cert };
    let err = within(checkpoint_and_witness(&log, &rogue, &witness, now())).await.unwrap_err();
    assert!(err.to_string().starts_with("checkpoint: unauthorized"), "{err}");
    assert_eq!(
        w.running.registry.witnessed(&node).unwrap().unwrap().checkpoint,
        held.checkpoint,
        "nothing refused changed what the registry holds"
    );

    // A log that lost its checkpoints (an index rebuilt from its segments) takes the witnessed
    // one back when its tree extends it, and witnessing goes on...
    let rebuilt = log_with((0..15).map(|i| record(i, false))).await;
    let cosigned = within(checkpoint_and_witness(&rebuilt, &signer, &witness, now())).await.unwrap();
    assert_eq!(Checkpoint::decode(&cosigned).unwrap().size, 15);
    assert_eq!(w.running.registry.witnessed(&node).unwrap().unwrap().checkpoint, cosigned.checkpoint);
    // A node killed during a witness round: the registry co-signed and kept size 18, the node
    // never stored the answer (it still holds 15). Its next round proves from 18, not 15.
    for i in 15..18 {
        within(rebuilt.append(&record(i, false))).await.unwrap();
    }
    let head = rebuilt.head();
    let unanswered = sign_checkpoint(
        &Checkpoint { origin: node.to_string(), size: head.size, root: head.root, timestamp_ms: now() },
        &key,
        signer.certificate.fingerprint(),
        now(),
    )
    .unwrap();
    let proof = log_pb::ConsistencyProof {
        old_size: 15,
        new_size: 18,
        hashes: rebuilt.consistency_proof(15, 18).unwrap().iter().map(|h| h.to_vec()).collect(),
    };
    within(witness.witness(pb::WitnessRequest { checkpoint: Some(unanswered), proof: Some(proof) }))
        .await
        .unwrap();
    assert_eq!(last_witnessed(&rebuilt).unwrap().unwrap().size, 15);
    within(rebuilt.append(&record(18, false))).await.unwrap();
    w.clock.advance(1);
    let cosigned = within(checkpoint_and_witness(&rebuilt, &signer, &witness, now())).await.unwrap();
    assert_eq!(Checkpoint::decode(&cosigned).unwrap().size, 19);
    assert_eq!(w.running.registry.witnessed(&node).unwrap().unwrap().checkpoint, cosigned.checkpoint);

    // ...and one that lost witnessed records, or holds another history, says what to do.
    let shorter = log_with((0..8).map(|i| record(i, false))).await;
    let err = within(checkpoint_and_witness(&shorter, &signer, &witness, now())).await.unwrap_err();
    assert!(err.to_string().contains("acknowledged records are missing. Restore"), "{err}");
    let rewritten = log_with((0..20).map(|i| record(i, i == 3))).await;
    let err = within(checkpoint_and_witness(&rewritten, &signer, &witness, now())).await.unwrap_err();
    assert!(err.to_string().contains("differ from the history the witness co-signed"), "{err}");
    assert_eq!(w.running.registry.witnessed(&node).unwrap().unwrap().checkpoint, cosigned.checkpoint);
    for l in [rebuilt, shorter, rewritten] {
        l.close();
    }
    log.close();
    forged.close();
    within(w.running.shutdown()).await;
}
