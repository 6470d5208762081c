//! TLS for the consumer side's HTTPS listener, where local information systems connect.
//!
//! The node presents a server certificate (its own auth certificate by default, or one the
//! operator configures). Client certificates are optional at the TLS layer and are not chained
//! to any CA: an information system's certificate is trusted by its fingerprint, listed per
//! subsystem in the node's configuration, which the node checks after the handshake. The
//! handshake signature is still verified, so presenting a certificate proves holding its key.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use crate::key::PrivateKey;
use crate::tls::{TlsIdentity, crypto_provider, handshake_signatures};

#[derive(Debug)]
struct AnyClientCertificate {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Pinned by fingerprint per subsystem after the handshake (see the module comment).
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!(algorithms);
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
    server_config_with(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec())))
}

fn server_config_with(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let provider = crypto_provider();
    let algorithms = provider.signature_verification_algorithms;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(AnyClientCertificate { algorithms }))
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
