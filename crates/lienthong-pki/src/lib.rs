//! Lienthong's PKI: keys, the instance CA, CSRs, certificates that carry X-Road identities,
//! detached signatures, and rustls configs whose verifiers pin peers to the registry's data.
//!
//! This is the only crate that touches rcgen and the crypto provider (aws-lc-rs). It does no
//! I/O: callers read and write files; `now` is always a parameter.

mod ca;
mod cert;
pub mod consumer_tls;
mod error;
pub mod is_client_tls;
mod key;
mod pem;
mod seal;
pub mod tls;

pub use ca::{CertificateAuthority, Csr, Validity};
pub use cert::{BadFingerprint, CertInfo, Certificate, Fingerprint, Identity};
pub use error::{CertError, KeyError, PeerRejected, SignatureError};
pub use key::{KeyAlgorithm, PrivateKey, PublicKey};
pub use seal::{BODY_KEY_LEN, BodyKey, SealError};
