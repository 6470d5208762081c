//! Error types of the PKI crate: one enum per concern, each variant a distinct cause.

use lienthong_types::{IdError, InstanceId, NodeId};

use crate::{Fingerprint, Identity};

/// Loading, generating or storing a key failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the key is encrypted; a passphrase is required")]
    PassphraseRequired,
    #[error("wrong passphrase (or the encrypted key is damaged)")]
    WrongPassphrase,
    #[error("an empty passphrase does not protect anything")]
    EmptyPassphrase,
    #[error("unsupported key type: {0}")]
    UnsupportedAlgorithm(String),
    #[error("expected a private key but found a PEM {found:?} block")]
    NotAKey { found: String },
    #[error("malformed key: {0}")]
    Malformed(String),
    #[error("the system random source failed")]
    Generation,
    #[error("encrypting the key failed: {0}")]
    Encryption(String),
}

/// A signature could not be made or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature does not verify")]
    Invalid,
    #[error("signing failed")]
    SigningFailed,
}

/// A certificate, CSR or CA operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("malformed certificate: {0}")]
    Malformed(String),
    #[error("malformed certificate signing request: {0}")]
    MalformedCsr(String),
    #[error("expected a {expected} but found a PEM {found:?} block")]
    WrongPemLabel { expected: &'static str, found: String },
    #[error("the certificate carries no Lienthong identity")]
    NoIdentity,
    #[error("the certificate carries more than one Lienthong identity")]
    SeveralIdentities,
    #[error("identity in certificate: {0}")]
    BadIdentity(#[from] IdError),
    #[error("the request is for instance {requested}, this CA serves instance {ca}")]
    WrongInstance { requested: String, ca: String },
    #[error("the request asks for a {requested} certificate, a {expected} was expected")]
    WrongRole { requested: &'static str, expected: &'static str },
    #[error("the request names {requested}, but {expected} was expected")]
    IdentityMismatch { requested: String, expected: String },
    #[error("the private key does not belong to the CA certificate")]
    KeyMismatch,
    #[error("not a CA certificate")]
    NotCa,
    #[error("key: {0}")]
    Key(#[from] KeyError),
    #[error("certificate builder: {0}")]
    Builder(String),
    #[error("administrator name refused: {0}")]
    BadAdminName(&'static str),
    #[error("validity of {days} days is out of range")]
    ValidityOutOfRange { days: u64 },
}

/// Why a peer's certificate was refused: a peer node's, the registry's, or a registry client's.
/// Each cause is its own variant, so logs and security events say exactly what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRejected {
    #[error("no certificate presented")]
    NoCertificate,
    #[error("the certificate does not chain to an approved CA")]
    UnknownCa,
    #[error("a signature in the certificate chain is invalid")]
    BadSignature,
    #[error("the certificate expired")]
    Expired,
    #[error("the certificate is not valid yet")]
    NotYetValid,
    #[error("the certificate is not a node authentication certificate")]
    NotNodeCertificate,
    #[error("certificate {fingerprint} is not registered for any node")]
    NotRegistered { fingerprint: Fingerprint },
    #[error("certificate is registered for node {registered} but names node {presented}")]
    IdentityMismatch { registered: Box<NodeId>, presented: Box<NodeId> },
    #[error("expected node {expected}, the peer is node {presented}")]
    WrongNode { expected: Box<NodeId>, presented: Box<NodeId> },
    #[error("the certificate carries no valid Lienthong identity")]
    NoIdentity,
    #[error("a {presented} is not accepted here; a {expected} is required")]
    WrongRole { presented: &'static str, expected: &'static str },
    #[error("the certificate is for {presented}, but instance {expected} was expected")]
    WrongInstance { presented: Box<Identity>, expected: InstanceId },
    #[error("the certificate for {presented} was issued by a CA of another instance")]
    ForeignCa { presented: Box<Identity> },
    #[error("certificate rejected: {0}")]
    Invalid(String),
}
