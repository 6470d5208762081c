//! mTLS between nodes: a peer is trusted only if its chain leads to an approved CA **and** its
//! certificate's fingerprint is the one registered for the node it claims to be.
//!
//! The registered set is plain data (from the global configuration). When the configuration
//! changes, build a new [`TrustPolicy`] and new rustls configs from it; connections made after
//! that see the new set.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use lienthong_types::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::TrustAnchor;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError, ServerConfig,
    SignatureScheme,
};
use webpki::{EndEntityCert, KeyUsage};

use crate::cert::{Certificate, Fingerprint, Identity};
use crate::error::{CertError, PeerRejected};
use crate::key::PrivateKey;

/// The crypto provider every Lienthong TLS config uses (aws-lc-rs).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// TLS 1.3 preferred, TLS 1.2 allowed for compliance (Circular 39/2017 requires 1.2 or later).
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A peer that passed [`TrustPolicy::verify_peer`]. Only this module can make one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    node: NodeId,
    fingerprint: Fingerprint,
}

impl PeerIdentity {
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

/// Which side of the handshake the peer is on, i.e. which extended key usage it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// The peer is the server we connected to.
    Server,
    /// The peer is a client that connected to us.
    Client,
}

/// Approved CAs and the registered authentication certificate of every node.
pub struct TrustPolicy {
    anchors: Vec<TrustAnchor<'static>>,
    /// Subject key ids of the approved CAs: tells "signed by a CA we do not know" apart from
    /// "signed by our CA but altered" when a look-alike CA copies our CA's name.
    ca_key_ids: Vec<Vec<u8>>,
    registered: HashMap<Fingerprint, NodeId>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for TrustPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustPolicy")
            .field("approved_cas", &self.anchors.len())
            .field("registered_nodes", &self.registered.len())
            .finish()
    }
}

impl TrustPolicy {
    /// `registered` pairs each node with the fingerprint of its registered auth certificate.
    pub fn new<'a>(
        approved_cas: impl IntoIterator<Item = &'a Certificate>,
        registered: impl IntoIterator<Item = (NodeId, Fingerprint)>,
    ) -> Result<Self, CertError> {
        let approved_cas: Vec<&Certificate> = approved_cas.into_iter().collect();
        let ca_key_ids = approved_cas.iter().filter_map(|ca| ca.key_ids().0).collect();
        let anchors = approved_cas
            .iter()
            .map(|ca| {
                webpki::anchor_from_trusted_cert(ca.der())
                    .map(|a| a.to_owned())
                    .map_err(|e| CertError::Malformed(format!("CA certificate: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let registered = registered.into_iter().map(|(node, fp)| (fp, node)).collect();
        Ok(Self {
            anchors,
            ca_key_ids,
            registered,
            algorithms: crypto_provider().signature_verification_algorithms,
        })
    }

    /// Decides whether a presented chain is an acceptable peer, and which node it is.
    /// `expected` is the node we meant to reach (as a client); `None` on the server side,
    /// where any registered node may connect.
    pub fn verify_peer(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        role: PeerRole,
        expected: Option<&NodeId>,
        now: SystemTime,
    ) -> Result<PeerIdentity, PeerRejected> {
        let now = UnixTime::since_unix_epoch(now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default());
        let ee = EndEntityCert::try_from(end_entity).map_err(|e| PeerRejected::Invalid(e.to_string()))?;
        let usage = match role {
            PeerRole::Server => KeyUsage::server_auth(),
            PeerRole::Client => KeyUsage::client_auth(),
        };
        let cert = Certificate::from_der(end_entity.to_vec()).map_err(|_| PeerRejected::NotNodeCertificate);
        ee.verify_for_usage(self.algorithms.all, &self.anchors, intermediates, now, usage, None, None)
            .map_err(|e| match map_webpki(e) {
                PeerRejected::BadSignature
                    if intermediates.is_empty() && !self.issued_by_approved_ca(cert.as_ref().ok()) =>
                {
                    PeerRejected::UnknownCa
                }
                other => other,
            })?;
        let cert = cert?;
        let presented = match cert.identity() {
            Ok(Identity::Node(node)) => node,
            _ => return Err(PeerRejected::NotNodeCertificate),
        };
        let fingerprint = cert.fingerprint();
        let registered =
            self.registered.get(&fingerprint).ok_or(PeerRejected::NotRegistered { fingerprint })?;
        if registered != &presented {
            return Err(PeerRejected::IdentityMismatch {
                registered: Box::new(registered.clone()),
                presented: Box::new(presented),
            });
        }
        if let Some(expected) = expected
            && expected != &presented
        {
            return Err(PeerRejected::WrongNode {
                expected: Box::new(expected.clone()),
                presented: Box::new(presented),
            });
        }
        Ok(PeerIdentity { node: presented, fingerprint })
    }

    fn issued_by_approved_ca(&self, cert: Option<&Certificate>) -> bool {
        match cert.and_then(|c| c.key_ids().1) {
            Some(aki) => self.ca_key_ids.contains(&aki),
            // Without an authority key id we cannot tell; keep the signature verdict.
            None => true,
        }
    }
}

fn map_webpki(e: webpki::Error) -> PeerRejected {
    use webpki::Error as W;
    match e {
        W::UnknownIssuer => PeerRejected::UnknownCa,
        W::CertExpired { .. } => PeerRejected::Expired,
        W::CertNotValidYet { .. } => PeerRejected::NotYetValid,
        W::InvalidSignatureForPublicKey
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | W::UnsupportedSignatureAlgorithmContext(_) => PeerRejected::BadSignature,
        other => PeerRejected::Invalid(format!("{other:?}")),
    }
}

/// Turns a rejection into a rustls error that still carries it, so the node can log the cause.
fn to_rustls(e: PeerRejected) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

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
    fn parts(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let chain = self.chain.iter().map(|c| c.der().clone()).collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.pkcs8_der().to_vec()));
        (chain, key)
    }
}

/// The handshake-signature checks are the same for both verifiers: the provider's algorithms.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.policy.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.policy.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.policy.algorithms.supported_schemes()
        }
    };
}

#[derive(Debug)]
struct PinnedServerVerifier {
    policy: Arc<TrustPolicy>,
    expected: NodeId,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The node id, pinned by fingerprint, is the identity; the TLS server name is not used.
        self.policy
            .verify_peer(
                end_entity,
                intermediates,
                PeerRole::Server,
                Some(&self.expected),
                unix_to_system(now),
            )
            .map(|_| ServerCertVerified::assertion())
            .map_err(to_rustls)
    }

    handshake_signatures!();
}

#[derive(Debug)]
struct PinnedClientVerifier {
    policy: Arc<TrustPolicy>,
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.policy
            .verify_peer(end_entity, intermediates, PeerRole::Client, None, unix_to_system(now))
            .map(|_| ClientCertVerified::assertion())
            .map_err(to_rustls)
    }

    handshake_signatures!();
}

fn unix_to_system(t: UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.as_secs())
}

/// The provider side: requires a client certificate from a registered node.
pub fn server_config(own: &TlsIdentity, policy: Arc<TrustPolicy>) -> Result<ServerConfig, rustls::Error> {
    let (chain, key) = own.parts();
    ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(Arc::new(PinnedClientVerifier { policy }))
        .with_single_cert(chain, key)
}

/// The consumer side, for connections to `expected` only (one config per peer node).
pub fn client_config(
    own: &TlsIdentity,
    policy: Arc<TrustPolicy>,
    expected: NodeId,
) -> Result<ClientConfig, rustls::Error> {
    let (chain, key) = own.parts();
    ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier { policy, expected }))
        .with_client_auth_cert(chain, key)
}

/// The TLS server name a client config sends. Verification ignores it (the peer is pinned by
/// node id and fingerprint); it only has to be syntactically valid.
pub fn peer_server_name() -> ServerName<'static> {
    ServerName::try_from("node.lienthong.invalid").expect("valid DNS name")
}
