//! Lienthong's PKI: keys, the instance CA, CSRs, certificates that carry X-Road identities,
//! detached signatures, and rustls configs whose verifiers pin peers to the registry's data.
//!
//! This is the only crate that touches rcgen and the crypto provider (aws-lc-rs). It does no
//! I/O: callers read and write files; `now` is always a parameter.

mod ca;
mod cert;
mod error;
mod key;
mod pem;
mod seal;
pub mod tls;

pub use ca::{CertificateAuthority, Csr, Validity};
pub use cert::{BadFingerprint, CertInfo, Certificate, Fingerprint, Identity, certificates_from_pem};
pub use error::{CertError, KeyError, PeerRejected, SignatureError};
pub use key::{KeyAlgorithm, PrivateKey, PublicKey};
pub use seal::{BODY_KEY_LEN, BodyKey, SealError};
/// The information-system side of TLS, under the paths callers have always used.
pub use tls::{consumer as consumer_tls, is_client as is_client_tls};
