//! Checkpoints: a node signs "my log `origin` has `size` leaves with root `root` at `time`"; a
//! registry that checked consistency with the previous checkpoint it saw adds a witness
//! co-signature. Each signature covers `CHECKPOINT_CONTEXT || role (1 byte) || signed_at_ms (8
//! bytes, big-endian) || checkpoint bytes`, so who signed in which role and when is signed too.

use lienthong_pki::{Fingerprint, KeyAlgorithm, PrivateKey, PublicKey};
use lienthong_proto::msglog::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use prost::Message;

use crate::error::LogError;
use crate::merkle::Hash;

/// Domain separation for checkpoint signatures.
pub const CHECKPOINT_CONTEXT: &[u8] = b"lienthong.msglog.checkpoint.v1\0";

/// The statement a checkpoint makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The node whose log it is, in X-Road string form.
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub timestamp_ms: i64,
}

impl Checkpoint {
    fn encode(&self) -> Vec<u8> {
        pb::Checkpoint {
            origin: self.origin.clone(),
            tree_size: self.size,
            root_hash: self.root.to_vec(),
            timestamp_ms: self.timestamp_ms,
        }
        .encode_to_vec()
    }

    /// Reads the statement of a signed checkpoint (without checking any signature).
    pub fn decode(signed: &pb::SignedCheckpoint) -> Result<Self, LogError> {
        let c = pb::Checkpoint::decode(signed.checkpoint.as_slice())
            .map_err(|e| LogError::Checkpoint(format!("undecodable: {e}")))?;
        let root = c
            .root_hash
            .as_slice()
            .try_into()
            .map_err(|_| LogError::Checkpoint("root_hash is not 32 bytes".into()))?;
        Ok(Self { origin: c.origin, size: c.tree_size, root, timestamp_ms: c.timestamp_ms })
    }
}

fn signed_message(checkpoint: &[u8], role: i32, signed_at_ms: i64) -> Vec<u8> {
    let role = u8::try_from(role).unwrap_or(u8::MAX);
    [CHECKPOINT_CONTEXT, &[role], &signed_at_ms.to_be_bytes(), checkpoint].concat()
}

fn algorithm(alg: KeyAlgorithm) -> types_pb::SignatureAlgorithm {
    match alg {
        KeyAlgorithm::Ed25519 => types_pb::SignatureAlgorithm::Ed25519,
        KeyAlgorithm::EcdsaP256 => types_pb::SignatureAlgorithm::EcdsaP256Sha256,
        KeyAlgorithm::RsaPss => types_pb::SignatureAlgorithm::RsaPssSha256,
    }
}

fn signature(
    message: &[u8],
    key: &PrivateKey,
    signer_sha256: Fingerprint,
    role: pb::SignerRole,
    signer: &str,
    now_ms: i64,
) -> Result<pb::CheckpointSignature, LogError> {
    let value = key
        .sign(&signed_message(message, role as i32, now_ms))
        .map_err(|e| LogError::Signature(e.to_string()))?;
    Ok(pb::CheckpointSignature {
        role: role as i32,
        signer: signer.to_owned(),
        signature: Some(types_pb::Signature {
            algorithm: algorithm(key.algorithm()) as i32,
            signer_sha256: signer_sha256.0.to_vec(),
            value,
        }),
        signed_at_ms: now_ms,
    })
}

/// The node signs its checkpoint with its authentication key; `cert` is that key's certificate
/// fingerprint, so a verifier knows which certificate to check it with.
pub fn sign_checkpoint(
    checkpoint: &Checkpoint,
    key: &PrivateKey,
    cert: Fingerprint,
    now_ms: i64,
) -> Result<pb::SignedCheckpoint, LogError> {
    let bytes = checkpoint.encode();
    let sig = signature(&bytes, key, cert, pb::SignerRole::Log, &checkpoint.origin, now_ms)?;
    Ok(pb::SignedCheckpoint { checkpoint: bytes, signatures: vec![sig] })
}

/// A witness (registry `witness`, key `key_id`) adds its co-signature.
pub fn add_witness_signature(
    signed: &mut pb::SignedCheckpoint,
    key: &PrivateKey,
    key_id: Fingerprint,
    witness: &str,
    now_ms: i64,
) -> Result<(), LogError> {
    let sig = signature(&signed.checkpoint, key, key_id, pb::SignerRole::Witness, witness, now_ms)?;
    signed.signatures.push(sig);
    Ok(())
}

fn check(sig: &pb::CheckpointSignature, message: &[u8], key: &PublicKey) -> Result<(), LogError> {
    let value = sig.signature.as_ref().map(|s| s.value.as_slice()).unwrap_or_default();
    key.verify(&signed_message(message, sig.role, sig.signed_at_ms), value).map_err(|_| {
        LogError::Signature(format!("{} signature by {} does not verify", role_name(sig.role), sig.signer))
    })
}

fn role_name(role: i32) -> &'static str {
    if role == pb::SignerRole::Witness as i32 { "witness" } else { "log" }
}

/// Checks the node's own signature (made by the key of certificate `cert_fp`, public key
/// `key`) and returns the statement.
pub fn verify_log_signature(
    signed: &pb::SignedCheckpoint,
    cert_fp: Fingerprint,
    key: &PublicKey,
) -> Result<Checkpoint, LogError> {
    let checkpoint = Checkpoint::decode(signed)?;
    let sig = signed
        .signatures
        .iter()
        .find(|s| {
            s.role == pb::SignerRole::Log as i32
                && s.signature.as_ref().is_some_and(|x| x.signer_sha256 == cert_fp.0)
        })
        .ok_or_else(|| {
            LogError::Signature(format!(
                "checkpoint of size {} has no log signature by that certificate",
                checkpoint.size
            ))
        })?;
    if sig.signer != checkpoint.origin {
        return Err(LogError::Signature(format!(
            "log signature by {} on {}'s checkpoint",
            sig.signer, checkpoint.origin
        )));
    }
    check(sig, &signed.checkpoint, key)?;
    Ok(checkpoint)
}

/// Checks every witness co-signature made by one of `keys` (key id, public key); returns how many
/// verified. A co-signature by a key not given is not counted (and not trusted).
pub fn verify_witness_signatures(
    signed: &pb::SignedCheckpoint,
    keys: &[(Fingerprint, PublicKey)],
) -> Result<usize, LogError> {
    let mut verified = 0;
    for sig in signed.signatures.iter().filter(|s| s.role == pb::SignerRole::Witness as i32) {
        let id = sig.signature.as_ref().map(|s| s.signer_sha256.as_slice()).unwrap_or_default();
        if let Some((_, key)) = keys.iter().find(|(fp, _)| fp.0 == id) {
            check(sig, &signed.checkpoint, key)?;
            verified += 1;
        }
    }
    Ok(verified)
}

/// Whether a checkpoint carries any witness co-signature.
pub fn is_witnessed(signed: &pb::SignedCheckpoint) -> bool {
    signed.signatures.iter().any(|s| s.role == pb::SignerRole::Witness as i32)
}
