//! Shared by the message-log tests: store fixtures, and the delegation stores that wrap
//! another store to fail or alter on demand.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use lienthong_msglog::{CheckpointSigner, LogStore, MemStore, RedbStore, SegmentConfig, SegmentStore};
use lienthong_pki::{CertificateAuthority, Csr, KeyAlgorithm, PrivateKey, Validity};
use lienthong_types::NodeId;

/// A node's checkpoint signer: a key of `alg` with a node certificate from a fresh CA.
pub fn signer_for(node: &str, alg: KeyAlgorithm) -> CheckpointSigner {
    let now = std::time::SystemTime::now();
    let node_id: NodeId = node.parse().unwrap();
    let ca_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let ca = CertificateAuthority::init(node_id.owner.instance.clone(), &ca_key, Validity::days(365), now)
        .unwrap();
    let key = PrivateKey::generate(alg).unwrap();
    let csr = Csr::for_node(&key, &node_id).unwrap();
    let certificate = ca.issue_node(&csr, &node_id, Validity::days(30), now).unwrap();
    CheckpointSigner { origin: node.into(), key: Arc::new(key), certificate }
}

/// A store under test, with whatever must outlive it (its directory).
pub struct Fixture {
    pub store: Arc<dyn LogStore>,
    pub _dir: Option<tempfile::TempDir>,
}

pub fn mem_store() -> Fixture {
    Fixture { store: Arc::new(MemStore::new()), _dir: None }
}

pub fn redb_store() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_dir(dir.path()).unwrap();
    Fixture { store: Arc::new(store), _dir: Some(dir) }
}

pub fn segment_store() -> Fixture {
    segment_store_with(SegmentConfig::default())
}

pub fn segment_store_with(config: SegmentConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SegmentStore::open_dir_with(dir.path(), config).unwrap();
    Fixture { store: Arc::new(store), _dir: Some(dir) }
}

/// Implements the `LogStore` methods a wrapper does not change by handing them to
/// `self.inner`: indexes, checkpoints, certificates and pruning.
#[macro_export]
macro_rules! delegate_indexes_to_inner {
    () => {
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
        fn put_checkpoint(&self, size: u64, signed: &pb::SignedCheckpoint) -> Result<(), LogError> {
            self.inner.put_checkpoint(size, signed)
        }
        fn checkpoints(&self) -> Result<Vec<pb::SignedCheckpoint>, LogError> {
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
    };
}
