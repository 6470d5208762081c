//! TLS for the consumer side's HTTPS listener, where local information systems connect.
//!
//! The node presents a server certificate (its own auth certificate by default, or one the
//! operator configures). Client certificates are optional at the TLS layer and are not chained
//! to any CA: an information system's certificate is trusted by its fingerprint, listed per
//! subsystem in the node's configuration, which the node checks after the handshake. The
//! handshake signature is still verified, so presenting a certificate proves holding its key.

use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::verifier::{ChainCheck, ClientVerifier, Presented};
use super::{TlsIdentity, crypto_provider, key_der};
use crate::error::PeerRejected;
use crate::key::PrivateKey;

/// Accepts any client certificate: it is pinned by fingerprint per subsystem after the
/// handshake (see the module comment).
#[derive(Debug)]
struct PinnedAfterHandshake;

impl ChainCheck for PinnedAfterHandshake {
    fn check(&self, _: Presented<'_>, _: SystemTime) -> Result<(), PeerRejected> {
        Ok(())
    }
}

/// The consumer side's HTTPS server config: `own` as server certificate, client certificates
/// optional and pinned by the caller. ALPN offers HTTP/2 and HTTP/1.1.
pub fn consumer_server_config(own: &TlsIdentity) -> Result<ServerConfig, rustls::Error> {
    let (chain, key) = own.parts();
    server_config_with(chain, key)
}

/// [`consumer_server_config`] with any server certificate chain (leaf first), e.g. one from an
/// organisation's own CA for a web-facing service such as the audit dashboard.
pub fn server_config_for_chain(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKey,
) -> Result<ServerConfig, rustls::Error> {
    server_config_with(chain, key_der(key))
}

fn server_config_with(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(ClientVerifier::new(PinnedAfterHandshake, false, Vec::new()))
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
