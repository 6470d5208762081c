//! rustls configs whose verifiers pin peers to the registry's data, one file per trust
//! relationship:
//!
//! - [`peer`]: node <-> node mTLS, pinned to the registered certificate of each node;
//! - [`registry`]: nodes and administrators' tools <-> the registry (chain, usage, identity);
//! - [`consumer`]: a node's consumer listener, where its information systems connect;
//! - [`is_client`]: an information system's client config for its own node;
//! - [`backend`]: a provider node -> a service's own HTTPS backend (web PKI);
//!
//! with what they share: the approved-CA chain check (`chain`) and the rustls verifier traits,
//! written once over a per-relationship check (`verifier`).

mod backend;
mod chain;
pub mod consumer;
pub mod is_client;
mod peer;
mod registry;
mod verifier;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{CertificateError, OtherError};

pub use backend::backend_client_config;
pub use chain::PeerRole;
pub use peer::{PeerIdentity, TrustPolicy, client_config, peer_server_name, server_config};
pub use registry::{
    peer_certificate_identity, registry_client_config, registry_server_config, registry_server_name,
};

use crate::cert::Certificate;
use crate::error::PeerRejected;
use crate::key::PrivateKey;

/// The crypto provider every Lienthong TLS config uses (aws-lc-rs).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// TLS 1.3 preferred, TLS 1.2 allowed for compliance (Circular 39/2017 requires 1.2 or later).
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Finds the [`PeerRejected`] inside a rustls error, if a Lienthong verifier raised it.
pub fn peer_rejection(e: &rustls::Error) -> Option<&PeerRejected> {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => inner.downcast_ref(),
        _ => None,
    }
}

/// This node's own TLS identity: its auth certificate chain and key.
#[derive(Debug)]
pub struct TlsIdentity {
    pub chain: Vec<Certificate>,
    pub key: Arc<PrivateKey>,
}

impl TlsIdentity {
    pub(crate) fn parts(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let chain = self.chain.iter().map(|c| c.der().clone()).collect();
        (chain, key_der(&self.key))
    }
}

/// A key as rustls takes it.
fn key_der(key: &PrivateKey) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec()))
}
