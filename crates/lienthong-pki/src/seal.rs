//! Encryption at rest for logged message bodies: AES-256-GCM with a node key, a fresh random
//! 96-bit nonce per body, and the record's identity as associated data so a ciphertext cannot
//! be moved to another record unnoticed.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Length of a body key in bytes.
pub const BODY_KEY_LEN: usize = 32;

/// Why a body could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("a body key must be {BODY_KEY_LEN} bytes, got {0}")]
    KeyLength(usize),
    #[error("the nonce must be {NONCE_LEN} bytes, got {0}")]
    NonceLength(usize),
    #[error("the system random source failed")]
    Random,
    #[error("the body does not decrypt: wrong key, or the ciphertext or its record was altered")]
    Open,
}

/// A node's key for bodies at rest.
pub struct BodyKey {
    id: String,
    key: LessSafeKey,
}

impl fmt::Debug for BodyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BodyKey({})", self.id)
    }
}

impl BodyKey {
    /// A new random key and its raw bytes (for the caller to store protected).
    pub fn generate() -> Result<(Self, Zeroizing<Vec<u8>>), SealError> {
        let mut raw = Zeroizing::new(vec![0u8; BODY_KEY_LEN]);
        SystemRandom::new().fill(&mut raw).map_err(|_| SealError::Random)?;
        Ok((Self::from_bytes(&raw)?, raw))
    }

    pub fn from_bytes(raw: &[u8]) -> Result<Self, SealError> {
        if raw.len() != BODY_KEY_LEN {
            return Err(SealError::KeyLength(raw.len()));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, raw).map_err(|_| SealError::KeyLength(raw.len()))?;
        // The id names the key in records without revealing anything about it.
        let id = digest(&SHA256, &[b"lienthong body key id\0".as_slice(), raw].concat());
        Ok(Self { id: hex::encode(&id.as_ref()[..8]), key: LessSafeKey::new(unbound) })
    }

    /// A short public name for the key, stored beside each ciphertext.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `body`, bound to `aad`; returns the nonce and the ciphertext (with its tag).
    pub fn seal(&self, body: &[u8], aad: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>), SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut out = body.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut out)
            .map_err(|_| SealError::Random)?;
        Ok((nonce, out))
    }

    /// Decrypts what [`Self::seal`] produced with the same `aad`.
    pub fn open(&self, nonce: &[u8], ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::NonceLength(nonce.len()))?;
        let mut buf = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}
