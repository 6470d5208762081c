//! The rustls verifier traits, written once. Each trust relationship only says which chains it
//! accepts (a [`ChainCheck`]); wrapping its refusal so the caller can find it again
//! ([`super::peer_rejection`]) and checking handshake signatures with the provider's algorithms
//! are the same for all of them.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};

use super::crypto_provider;
use crate::error::PeerRejected;

/// The chain a peer presented: its certificate and the intermediates it sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Presented<'c> {
    pub(crate) end_entity: &'c CertificateDer<'c>,
    pub(crate) intermediates: &'c [CertificateDer<'c>],
}

impl<'c> Presented<'c> {
    /// A certificate sent without intermediates.
    #[cfg(test)]
    pub(crate) fn leaf(end_entity: &'c CertificateDer<'c>) -> Self {
        Self { end_entity, intermediates: &[] }
    }
}

/// Which presented chains a trust relationship accepts, at time `now`.
pub(crate) trait ChainCheck: fmt::Debug + Send + Sync + 'static {
    fn check(&self, chain: Presented<'_>, now: SystemTime) -> Result<(), PeerRejected>;
}

/// Turns a rejection into a rustls error that still carries it, so the node can log the cause.
pub(crate) fn to_rustls(e: PeerRejected) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

fn unix_to_system(t: UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    crypto_provider().signature_verification_algorithms
}

/// The handshake-signature checks, the same for a server's and a client's verifier.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

/// A [`ChainCheck`] as the verifier of the server's certificate. The TLS server name is not
/// used: each check pins the identity it expects itself.
#[derive(Debug)]
pub(crate) struct ServerVerifier<C> {
    check: C,
    algorithms: WebPkiSupportedAlgorithms,
}

impl<C: ChainCheck> ServerVerifier<C> {
    pub(crate) fn new(check: C) -> Arc<Self> {
        Arc::new(Self { check, algorithms: algorithms() })
    }
}

impl<C: ChainCheck> ServerCertVerifier for ServerVerifier<C> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check
            .check(Presented { end_entity, intermediates }, unix_to_system(now))
            .map(|()| ServerCertVerified::assertion())
            .map_err(to_rustls)
    }

    handshake_signatures!();
}

/// A [`ChainCheck`] as the verifier of a client's certificate.
#[derive(Debug)]
pub(crate) struct ClientVerifier<C> {
    check: C,
    /// Whether a client without a certificate is refused at the handshake.
    mandatory: bool,
    /// The CA names sent when asking for a client certificate.
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl<C: ChainCheck> ClientVerifier<C> {
    pub(crate) fn new(check: C, mandatory: bool, hints: Vec<DistinguishedName>) -> Arc<Self> {
        Arc::new(Self { check, mandatory, hints, algorithms: algorithms() })
    }
}

impl<C: ChainCheck> ClientCertVerifier for ClientVerifier<C> {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check
            .check(Presented { end_entity, intermediates }, unix_to_system(now))
            .map(|()| ClientCertVerified::assertion())
            .map_err(to_rustls)
    }

    handshake_signatures!();
}
