//! mTLS between nodes: a peer is trusted only if its chain leads to an approved CA **and** its
//! certificate's fingerprint is the one registered for the node it claims to be.
//!
//! The registered set is plain data (from the global configuration). When the configuration
//! changes, build a new [`TrustPolicy`] and new rustls configs from it; connections made after
//! that see the new set.
//!
//! TLS to the registry ([`registry_server_config`], [`registry_client_config`]) checks chain,
//! usage and identity only: a node may register before it has a certificate, and the registry
//! decides on revocation and registration itself, from [`peer_certificate_identity`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use lienthong_types::{InstanceId, NodeId};
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

/// The approved CAs as webpki trust anchors, with the instance each one serves.
pub(crate) struct ApprovedCas {
    anchors: Vec<TrustAnchor<'static>>,
    /// The instance of each anchor, in the same order; `None` if it is not a Lienthong CA.
    instances: Vec<Option<InstanceId>>,
    /// Subject key ids of the approved CAs: tells "signed by a CA we do not know" apart from
    /// "signed by our CA but altered" when a look-alike CA copies our CA's name.
    ca_key_ids: Vec<Vec<u8>>,
    /// The CA names a server sends when it asks for a client certificate.
    hints: Vec<DistinguishedName>,
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for ApprovedCas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovedCas").field("instances", &self.instances).finish_non_exhaustive()
    }
}

/// A chain that verified: the end-entity certificate, if it parses as ours, and the instance
/// of the CA it chains to.
pub(crate) struct Chained<'a> {
    pub(crate) cert: Result<Certificate, CertError>,
    pub(crate) ca_instance: Option<&'a InstanceId>,
}

impl ApprovedCas {
    pub(crate) fn new<'a>(
        approved_cas: impl IntoIterator<Item = &'a Certificate>,
    ) -> Result<Self, CertError> {
        let approved_cas: Vec<&Certificate> = approved_cas.into_iter().collect();
        let ca_key_ids = approved_cas.iter().filter_map(|ca| ca.key_ids().0).collect();
        let instances = approved_cas
            .iter()
            .map(|ca| match ca.identity() {
                Ok(Identity::Ca(instance)) => Some(instance),
                _ => None,
            })
            .collect();
        let anchors = approved_cas
            .iter()
            .map(|ca| {
                webpki::anchor_from_trusted_cert(ca.der())
                    .map(|a| a.to_owned())
                    .map_err(|e| CertError::Malformed(format!("CA certificate: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hints = anchors.iter().map(|a| DistinguishedName::in_sequence(&a.subject)).collect();
        Ok(Self {
            anchors,
            instances,
            ca_key_ids,
            hints,
            algorithms: crypto_provider().signature_verification_algorithms,
        })
    }

    /// For the registry configs, which need each CA's instance: refuses anything else.
    fn of_instances(approved_cas: &[Certificate]) -> Result<Self, rustls::Error> {
        let cas = Self::new(approved_cas).map_err(|e| rustls::Error::General(e.to_string()))?;
        if let Some(i) = cas.instances.iter().position(Option::is_none) {
            return Err(rustls::Error::General(format!(
                "approved CA {} is not a Lienthong CA certificate",
                approved_cas[i].fingerprint()
            )));
        }
        Ok(cas)
    }

    /// Checks the chain, validity and extended key usage for `role`; not the identity.
    pub(crate) fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        role: PeerRole,
        now: SystemTime,
    ) -> Result<Chained<'_>, PeerRejected> {
        let now = UnixTime::since_unix_epoch(now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default());
        let ee = EndEntityCert::try_from(end_entity).map_err(|e| PeerRejected::Invalid(e.to_string()))?;
        let usage = match role {
            PeerRole::Server => KeyUsage::server_auth(),
            PeerRole::Client => KeyUsage::client_auth(),
        };
        let cert = Certificate::from_der(end_entity.to_vec());
        let path = ee
            .verify_for_usage(self.algorithms.all, &self.anchors, intermediates, now, usage, None, None)
            .map_err(|e| match map_webpki(e) {
                PeerRejected::BadSignature
                    if intermediates.is_empty() && !self.issued_by_approved_ca(cert.as_ref().ok()) =>
                {
                    PeerRejected::UnknownCa
                }
                other => other,
            })?;
        let ca_instance =
            self.anchors.iter().position(|a| a == path.anchor()).and_then(|i| self.instances[i].as_ref());
        Ok(Chained { cert, ca_instance })
    }

    fn issued_by_approved_ca(&self, cert: Option<&Certificate>) -> bool {
        match cert.and_then(|c| c.key_ids().1) {
            Some(aki) => self.ca_key_ids.contains(&aki),
            // Without an authority key id we cannot tell; keep the signature verdict.
            None => true,
        }
    }
}

/// Approved CAs and the registered authentication certificate of every node.
pub struct TrustPolicy {
    cas: ApprovedCas,
    registered: HashMap<Fingerprint, NodeId>,
}

impl fmt::Debug for TrustPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustPolicy")
            .field("approved_cas", &self.cas.anchors.len())
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
        let cas = ApprovedCas::new(approved_cas)?;
        let registered = registered.into_iter().map(|(node, fp)| (fp, node)).collect();
        Ok(Self { cas, registered })
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
        let cert = self
            .cas
            .verify_chain(end_entity, intermediates, role, now)?
            .cert
            .map_err(|_| PeerRejected::NotNodeCertificate)?;
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
pub(crate) fn to_rustls(e: PeerRejected) -> rustls::Error {
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
    pub(crate) fn parts(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let chain = self.chain.iter().map(|c| c.der().clone()).collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.pkcs8_der().to_vec()));
        (chain, key)
    }
}

/// The handshake-signature checks are the same for every verifier: the provider's algorithms,
/// found at the field path given (e.g. `policy.cas.algorithms`).
macro_rules! handshake_signatures {
    ($($field:ident).+) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.$($field).+)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.$($field).+)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.$($field).+.supported_schemes()
        }
    };
}
pub(crate) use handshake_signatures;

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

    handshake_signatures!(policy.cas.algorithms);
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

    handshake_signatures!(policy.cas.algorithms);
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

/// Who may present a client certificate to the registry.
const REGISTRY_CLIENTS: &str = "node, member or registry administrator certificate";

/// Verifies client certificates at the registry: any of our client identities, from the
/// instance of the approved CA it chains to.
#[derive(Debug)]
struct RegistryClientVerifier {
    cas: ApprovedCas,
}

impl RegistryClientVerifier {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<(), PeerRejected> {
        let chained = self.cas.verify_chain(end_entity, intermediates, PeerRole::Client, now)?;
        let identity = chained.cert.and_then(|c| c.identity()).map_err(|_| PeerRejected::NoIdentity)?;
        if !matches!(identity, Identity::Node(_) | Identity::Member(_) | Identity::Admin(_)) {
            return Err(PeerRejected::WrongRole { presented: identity.role(), expected: REGISTRY_CLIENTS });
        }
        if chained.ca_instance != Some(identity.instance()) {
            return Err(PeerRejected::ForeignCa { presented: Box::new(identity) });
        }
        Ok(())
    }
}

impl ClientCertVerifier for RegistryClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// A node registering for the first time has no certificate yet; it proves itself by
    /// signing its request, which the registry checks.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.cas.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, unix_to_system(now))
            .map(|()| ClientCertVerified::assertion())
            .map_err(to_rustls)
    }

    handshake_signatures!(cas.algorithms);
}

/// Verifies the registry's server certificate: exactly `Identity::Registry(instance)`,
/// issued by an approved CA of that instance.
#[derive(Debug)]
struct RegistryServerVerifier {
    cas: ApprovedCas,
    instance: InstanceId,
}

impl RegistryServerVerifier {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<(), PeerRejected> {
        let chained = self.cas.verify_chain(end_entity, intermediates, PeerRole::Server, now)?;
        let identity = chained.cert.and_then(|c| c.identity()).map_err(|_| PeerRejected::NoIdentity)?;
        let Identity::Registry(instance) = &identity else {
            return Err(PeerRejected::WrongRole {
                presented: identity.role(),
                expected: Identity::Registry(self.instance.clone()).role(),
            });
        };
        if instance != &self.instance {
            return Err(PeerRejected::WrongInstance {
                presented: Box::new(identity),
                expected: self.instance.clone(),
            });
        }
        if chained.ca_instance != Some(&self.instance) {
            return Err(PeerRejected::ForeignCa { presented: Box::new(identity) });
        }
        Ok(())
    }
}

impl ServerCertVerifier for RegistryServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The identity in the certificate names the registry; the TLS server name is not used.
        self.verify(end_entity, intermediates, unix_to_system(now))
            .map(|()| ServerCertVerified::assertion())
            .map_err(to_rustls)
    }

    handshake_signatures!(cas.algorithms);
}

/// The registry's server side. A client certificate is optional; one that is presented must
/// chain to an approved CA with clientAuth usage and name a node, member or administrator of
/// that CA's instance, or the handshake fails. Whether that certificate is still registered
/// or revoked is for the registry to decide after the handshake ([`peer_certificate_identity`]).
pub fn registry_server_config(
    own: &TlsIdentity,
    approved_cas: &[Certificate],
) -> Result<ServerConfig, rustls::Error> {
    let verifier = RegistryClientVerifier { cas: ApprovedCas::of_instances(approved_cas)? };
    let (chain, key) = own.parts();
    ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, key)
}

/// A client of the registry of `instance` (a node or an administrator's tool). The server
/// must chain to an approved CA of `instance` with serverAuth usage and be exactly
/// `Identity::Registry(instance)`. `own` is presented as the client certificate when given.
/// Connect with [`registry_server_name`].
pub fn registry_client_config(
    own: Option<&TlsIdentity>,
    approved_cas: &[Certificate],
    instance: &InstanceId,
) -> Result<ClientConfig, rustls::Error> {
    let verifier =
        RegistryServerVerifier { cas: ApprovedCas::of_instances(approved_cas)?, instance: instance.clone() };
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    match own {
        Some(own) => {
            let (chain, key) = own.parts();
            builder.with_client_auth_cert(chain, key)
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The TLS server name a registry client sends. Verification ignores it (the certificate's
/// identity names the registry); it only has to be syntactically valid.
pub fn registry_server_name() -> ServerName<'static> {
    ServerName::try_from("registry.lienthong.invalid").expect("valid DNS name")
}

/// The identity and fingerprint of the end-entity certificate a peer presented (the first of
/// `peer_certificates()`); `None` if there is none or it carries no identity. This verifies
/// nothing: use it only on certificates a handshake with these configs already accepted.
pub fn peer_certificate_identity(certs: &[CertificateDer<'_>]) -> Option<(Identity, Fingerprint)> {
    let cert = Certificate::from_der(certs.first()?.to_vec()).ok()?;
    Some((cert.identity().ok()?, cert.fingerprint()))
}

/// TLS from a provider node to a service's own backend (its HTTPS URL), not to another node.
///
/// With `verify`, the backend must present a certificate that chains to `system_roots` (the
/// host's trust store, loaded by the caller: this crate does no I/O) or `extra_roots` (CAs the
/// operator configured for internal backends) and names the host that was dialled. Unusable
/// system roots are skipped, as trust stores often hold a few; an unusable extra root is an error.
///
/// Without `verify`, any certificate is accepted and the roots are ignored. It exists because
/// some organisations run backends on self-signed certificates on a network they control; the
/// operator opts out per service, it is off by default, and the connection is still encrypted.
/// Handshake signatures are checked either way.
pub fn backend_client_config(
    verify: bool,
    system_roots: &[CertificateDer<'_>],
    extra_roots: &[CertificateDer<'_>],
) -> Result<ClientConfig, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(crypto_provider()).with_protocol_versions(VERSIONS)?;
    if !verify {
        let verifier = AnyServerCert { algorithms: crypto_provider().signature_verification_algorithms };
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(system_roots.iter().map(|c| c.clone().into_owned()));
    for (i, root) in extra_roots.iter().enumerate() {
        roots
            .add(root.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("extra backend root {}: {e}", i + 1)))?;
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Accepts any server certificate; used only by [`backend_client_config`] without `verify`.
#[derive(Debug)]
struct AnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!(algorithms);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertificateAuthority, Csr, KeyAlgorithm, Validity};

    #[test]
    fn identities_must_belong_to_the_instance_of_their_ca() {
        let (vn, hn) = (InstanceId::new("VN").unwrap(), InstanceId::new("HN").unwrap());
        let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let (v, now) = (Validity::days(1), SystemTime::now());
        let vn_ca = CertificateAuthority::init(vn.clone(), &key, v, now).unwrap();
        let hn_ca = CertificateAuthority::init(hn, &key, v, now).unwrap();
        let cas =
            ApprovedCas::of_instances(&[vn_ca.certificate().clone(), hn_ca.certificate().clone()]).unwrap();
        let hn_ca = hn_ca.claiming_instance(vn.clone());

        let registry = hn_ca.issue_registry(&Csr::for_registry(&key, &vn).unwrap(), v, now).unwrap();
        let server = RegistryServerVerifier { cas, instance: vn.clone() };
        assert_eq!(
            server.verify(registry.der(), &[], now),
            Err(PeerRejected::ForeignCa { presented: Box::new(Identity::Registry(vn.clone())) })
        );

        let admin = hn_ca.issue_admin(&Csr::for_admin(&key, &vn, "An").unwrap(), v, now).unwrap();
        let client = RegistryClientVerifier { cas: server.cas };
        assert_eq!(
            client.verify(admin.der(), &[], now),
            Err(PeerRejected::ForeignCa { presented: Box::new(Identity::Admin(vn)) })
        );
    }

    /// A CA and a server certificate for `names`, made with rcgen: backends use ordinary web
    /// certificates, which our CA does not issue.
    fn web_pki(ca_name: &str, names: &[&str]) -> (CertificateDer<'static>, ServerConfig) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server = ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        (ca.der().clone(), server)
    }

    /// One handshake in memory (this crate does no I/O); the client's verdict.
    fn handshake(client: ClientConfig, server: ServerConfig, name: &str) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut server = rustls::ServerConnection::new(Arc::new(server))?;
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut wire.as_slice()).unwrap();
            // A server-side failure shows up as an alert the client reports.
            let _ = server.process_new_packets();
            wire.clear();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn backend_tls_verifies_chain_and_name_unless_the_operator_opts_out() {
        let (ca, server) = web_pki("Backend CA", &["127.0.0.1", "backend.test"]);
        let (other_ca, _) = web_pki("Other CA", &["127.0.0.1"]);
        let trusted =
            || backend_client_config(true, std::slice::from_ref(&other_ca), std::slice::from_ref(&ca));

        assert_eq!(handshake(trusted().unwrap(), server.clone(), "127.0.0.1"), Ok(()));
        assert_eq!(handshake(trusted().unwrap(), server.clone(), "backend.test"), Ok(()));
        // Our CA as a system root works the same.
        let system = backend_client_config(true, std::slice::from_ref(&ca), &[]).unwrap();
        assert_eq!(handshake(system, server.clone(), "backend.test"), Ok(()));

        let unknown = backend_client_config(true, &[], std::slice::from_ref(&other_ca)).unwrap();
        assert_eq!(
            handshake(unknown, server.clone(), "127.0.0.1"),
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
        );
        let r = handshake(trusted().unwrap(), server.clone(), "other.test");
        assert!(
            matches!(
                r,
                Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }))
            ),
            "{r:?}"
        );

        let any = backend_client_config(false, &[], &[]).unwrap();
        assert_eq!(handshake(any, server, "other.test"), Ok(()));
    }

    #[test]
    fn unusable_roots_are_skipped_from_the_system_store_and_refused_when_configured() {
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(backend_client_config(true, std::slice::from_ref(&junk), &[]).is_ok());
        let e = backend_client_config(true, &[], std::slice::from_ref(&junk)).unwrap_err();
        assert!(e.to_string().contains("extra backend root 1"), "{e}");
    }
}
