//! Configuration-signing keys: separate from the CA key, so the CA can stay offline while the
//! configuration is re-signed every minute.

use std::time::SystemTime;

use lienthong_pki::{Fingerprint, KeyAlgorithm, PrivateKey, PublicKey, SignatureError};
use lienthong_proto::ProtoError;
use lienthong_proto::convert::known_enum;
use lienthong_proto::globalconf::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use prost::Message;

use crate::time_ms::{from_millis, optional_millis, to_millis};

/// Prefixed to the configuration bytes before signing, so a configuration signature can never be
/// replayed as a signature over some other Lienthong message.
pub const SIGNING_CONTEXT: &[u8] = b"lienthong.globalconf.v1\0";

/// A public configuration-signing key and when it may sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfKey {
    /// SHA-256 of the raw public key; matches `Signature.signer_sha256`.
    pub id: Fingerprint,
    pub key: PublicKey,
    pub valid_from: SystemTime,
    /// `None`: until replaced.
    pub valid_until: Option<SystemTime>,
}

/// The id of a configuration-signing key: SHA-256 of its raw public key.
pub fn key_id(key: &PublicKey) -> Fingerprint {
    Fingerprint::of(key.raw())
}

impl ConfKey {
    pub fn new(key: PublicKey, valid_from: SystemTime, valid_until: Option<SystemTime>) -> Self {
        Self { id: key_id(&key), key, valid_from, valid_until }
    }

    /// Whether the key may sign at `t`.
    pub fn is_valid_at(&self, t: SystemTime) -> bool {
        self.valid_from <= t && self.valid_until.is_none_or(|until| t < until)
    }

    pub(crate) fn from_wire(k: pb::ConfSigningKey, field: &'static str) -> Result<Self, ProtoError> {
        let alg: types_pb::SignatureAlgorithm = known_enum(k.algorithm, field)?;
        let key = PublicKey::new(algorithm_from_wire(alg), k.public_key);
        let this = Self::new(key, from_millis(k.valid_from_ms), optional_millis(k.valid_until_ms));
        if k.key_id != this.id.0 {
            return Err(ProtoError::Decode {
                message: field,
                reason: "key_id is not SHA-256 of the key".into(),
            });
        }
        Ok(this)
    }
}

impl TryFrom<pb::ConfSigningKey> for ConfKey {
    type Error = ProtoError;
    fn try_from(k: pb::ConfSigningKey) -> Result<Self, ProtoError> {
        Self::from_wire(k, "ConfSigningKey")
    }
}

impl From<&ConfKey> for pb::ConfSigningKey {
    fn from(k: &ConfKey) -> Self {
        Self {
            key_id: k.id.0.to_vec(),
            algorithm: algorithm_to_wire(k.key.algorithm()) as i32,
            public_key: k.key.raw().to_vec(),
            valid_from_ms: to_millis(k.valid_from),
            valid_until_ms: k.valid_until.map_or(0, to_millis),
        }
    }
}

/// The wire name of a signature algorithm.
pub fn algorithm_to_wire(alg: KeyAlgorithm) -> types_pb::SignatureAlgorithm {
    match alg {
        KeyAlgorithm::Ed25519 => types_pb::SignatureAlgorithm::Ed25519,
        KeyAlgorithm::EcdsaP256 => types_pb::SignatureAlgorithm::EcdsaP256Sha256,
        KeyAlgorithm::RsaPss => types_pb::SignatureAlgorithm::RsaPssSha256,
    }
}

/// The algorithm of a wire signature; callers refuse `Unspecified` first.
pub fn algorithm_from_wire(alg: types_pb::SignatureAlgorithm) -> KeyAlgorithm {
    match alg {
        types_pb::SignatureAlgorithm::Ed25519 => KeyAlgorithm::Ed25519,
        types_pb::SignatureAlgorithm::EcdsaP256Sha256 => KeyAlgorithm::EcdsaP256,
        // `known_enum` has already refused Unspecified.
        types_pb::SignatureAlgorithm::RsaPssSha256 | types_pb::SignatureAlgorithm::Unspecified => {
            KeyAlgorithm::RsaPss
        }
    }
}

pub(crate) fn signed_message(conf: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, conf].concat()
}

/// Encodes `conf` once and signs those exact bytes with every key given.
pub fn sign(conf: &pb::GlobalConf, keys: &[&PrivateKey]) -> Result<pb::SignedGlobalConf, SignatureError> {
    let bytes = conf.encode_to_vec();
    let message = signed_message(&bytes);
    let signatures = keys
        .iter()
        .map(|key| {
            Ok(types_pb::Signature {
                algorithm: algorithm_to_wire(key.algorithm()) as i32,
                signer_sha256: key_id(&key.public_key()).0.to_vec(),
                value: key.sign(&message)?,
            })
        })
        .collect::<Result<_, SignatureError>>()?;
    Ok(pb::SignedGlobalConf { conf: bytes, signatures })
}
