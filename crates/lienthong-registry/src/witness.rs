//! The checkpoint witness: a node pushes its newest signed checkpoint with a consistency proof
//! from the last one this registry co-signed for it; the registry co-signs only if the new tree
//! extends the witnessed one. A node therefore cannot get a rewritten or forked history
//! witnessed, and both sides keep the co-signed checkpoint as evidence.

use lienthong_globalconf::to_millis;
use lienthong_msglog::checkpoint::{Checkpoint, add_witness_signature, verify_log_signature};
use lienthong_msglog::merkle::{self, Hash};
use lienthong_pki::{Certificate, Fingerprint};
use lienthong_proto::globalconf::v1 as gc;
use lienthong_proto::msglog::v1 as log_pb;
use lienthong_proto::registry::v1 as pb;
use lienthong_types::NodeId;

use crate::error::RegistryError;
use crate::registry::Registry;
use crate::store;

impl Registry {
    /// Verifies and co-signs a node's checkpoint (see the module documentation).
    pub fn witness(&self, request: pb::WitnessRequest) -> Result<log_pb::SignedCheckpoint, RegistryError> {
        let mut signed =
            request.checkpoint.ok_or_else(|| RegistryError::Invalid("checkpoint is missing".into()))?;
        let checkpoint = Checkpoint::decode(&signed).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let node: NodeId = checkpoint
            .origin
            .parse()
            .map_err(|e| RegistryError::Invalid(format!("checkpoint origin {:?}: {e}", checkpoint.origin)))?;
        let now = self.now();
        let mut tx = self.store().write()?;
        let registered: gc::Node = tx
            .get(store::NODES, &node.to_string())?
            .ok_or_else(|| RegistryError::Unauthorized(format!("node {node} is not registered")))?;
        let fingerprint =
            Fingerprint(
                registered.auth_cert_sha256.as_slice().try_into().map_err(|_| {
                    RegistryError::Invalid(format!("node {node} has a malformed fingerprint"))
                })?,
            );
        let issued: pb::IssuedCertificate = tx
            .get(store::CERTS, &fingerprint.to_string())?
            .ok_or_else(|| RegistryError::Unauthorized(format!("node {node} has no certificate here")))?;
        let cert = Certificate::from_der(issued.der).map_err(RegistryError::internal)?;
        let key = cert.info().map_err(RegistryError::internal)?.public_key;
        verify_log_signature(&signed, fingerprint, &key)
            .map_err(|e| RegistryError::Unauthorized(format!("checkpoint of node {node}: {e}")))?;

        if let Some(previous) = tx.get::<log_pb::SignedCheckpoint>(store::WITNESSED, &node.to_string())? {
            let previous = Checkpoint::decode(&previous).map_err(RegistryError::internal)?;
            check_extends(&previous, &checkpoint, request.proof.as_ref())?;
        }
        let instance = self.settings().instance.to_string();
        self.with_witness_key(now, |key, key_id| {
            add_witness_signature(&mut signed, key, key_id, &instance, to_millis(now))
        })?
        .map_err(RegistryError::internal)?;
        tx.put(store::WITNESSED, &node.to_string(), &signed)?;
        tx.commit_unversioned()?;
        tracing::info!(%node, size = checkpoint.size, "checkpoint witnessed");
        Ok(signed)
    }

    /// The last checkpoint witnessed for `node`, if any.
    pub fn witnessed(&self, node: &NodeId) -> Result<Option<log_pb::SignedCheckpoint>, RegistryError> {
        self.store().read()?.get(store::WITNESSED, &node.to_string())
    }
}

/// Refuses a checkpoint that does not extend the one already witnessed.
fn check_extends(
    old: &Checkpoint,
    new: &Checkpoint,
    proof: Option<&log_pb::ConsistencyProof>,
) -> Result<(), RegistryError> {
    let refuse = |why: String| RegistryError::Conflict(format!("checkpoint refused: {why}"));
    if old.size == 0 {
        // Every history extends the empty one.
        return Ok(());
    }
    if new.size < old.size {
        return Err(refuse(format!("tree size {} is smaller than the witnessed {}", new.size, old.size)));
    }
    if new.timestamp_ms < old.timestamp_ms {
        return Err(refuse("it is older than the witnessed checkpoint".into()));
    }
    let hashes: Vec<Hash> = match proof {
        None if new.size == old.size => Vec::new(),
        None => return Err(refuse(format!("no consistency proof from the witnessed size {}", old.size))),
        Some(p) => {
            if (p.old_size, p.new_size) != (old.size, new.size) {
                return Err(refuse(format!(
                    "the proof is from {} to {}, expected {} to {}",
                    p.old_size, p.new_size, old.size, new.size
                )));
            }
            p.hashes
                .iter()
                .map(|h| h.as_slice().try_into().map_err(|_| refuse("a proof hash is not 32 bytes".into())))
                .collect::<Result<_, _>>()?
        }
    };
    merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &hashes).map_err(|e| {
        refuse(format!(
            "the log of size {} does not extend the witnessed log of size {}: {e}",
            new.size, old.size
        ))
    })
}

/// Witnessing by a registry in the same process (tests, single-process set-ups).
#[derive(Debug, Clone)]
pub struct LocalWitness(pub std::sync::Arc<Registry>);

impl lienthong_msglog::witness::Witness for LocalWitness {
    fn witness(&self, request: pb::WitnessRequest) -> lienthong_msglog::witness::WitnessFuture<'_> {
        let registry = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || registry.witness(request))
                .await
                .map_err(|e| lienthong_msglog::LogError::Checkpoint(e.to_string()))?
                .map_err(|e| lienthong_msglog::LogError::Checkpoint(format!("{}: {e}", e.code())))
        })
    }

    fn witnessed(&self, origin: &str) -> lienthong_msglog::witness::WitnessedFuture<'_> {
        let registry = self.0.clone();
        let node = origin.parse::<NodeId>();
        Box::pin(async move {
            let node = node.map_err(|e| lienthong_msglog::LogError::Checkpoint(e.to_string()))?;
            tokio::task::spawn_blocking(move || registry.witnessed(&node))
                .await
                .map_err(|e| lienthong_msglog::LogError::Checkpoint(e.to_string()))?
                .map_err(|e| lienthong_msglog::LogError::Checkpoint(format!("{}: {e}", e.code())))
        })
    }
}
