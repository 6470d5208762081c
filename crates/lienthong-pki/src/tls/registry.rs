//! TLS to the registry, for nodes and administrators' tools: chain, usage and identity only. A
//! node may register before it has a certificate, and the registry decides on revocation and
//! registration itself, from [`peer_certificate_identity`].

use std::time::SystemTime;

use lienthong_types::InstanceId;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};

use super::chain::{ApprovedCas, PeerRole};
use super::verifier::{ChainCheck, ClientVerifier, Presented, ServerVerifier};
use super::{TlsIdentity, VERSIONS, crypto_provider};
use crate::cert::{Certificate, Fingerprint, Identity};
use crate::error::PeerRejected;

/// Who may present a client certificate to the registry.
const REGISTRY_CLIENTS: &str = "node, member or registry administrator certificate";

/// The registry's check of client certificates: any of our client identities, from the
/// instance of the approved CA it chains to.
#[derive(Debug)]
struct RegistryClients {
    cas: ApprovedCas,
}

impl ChainCheck for RegistryClients {
    fn check(&self, chain: Presented<'_>, now: SystemTime) -> Result<(), PeerRejected> {
        let chained = self.cas.verify_chain(chain, PeerRole::Client, now)?;
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

/// A registry client's check of the server certificate: exactly `Identity::Registry(instance)`,
/// issued by an approved CA of that instance.
#[derive(Debug)]
struct RegistryServer {
    cas: ApprovedCas,
    instance: InstanceId,
}

impl ChainCheck for RegistryServer {
    fn check(&self, chain: Presented<'_>, now: SystemTime) -> Result<(), PeerRejected> {
        let chained = self.cas.verify_chain(chain, PeerRole::Server, now)?;
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

/// The registry's server side. A client certificate is optional; one that is presented must
/// chain to an approved CA with clientAuth usage and name a node, member or administrator of
/// that CA's instance, or the handshake fails. Whether that certificate is still registered
/// or revoked is for the registry to decide after the handshake ([`peer_certificate_identity`]).
pub fn registry_server_config(
    own: &TlsIdentity,
    approved_cas: &[Certificate],
) -> Result<ServerConfig, rustls::Error> {
    let cas = ApprovedCas::of_instances(approved_cas)?;
    let hints = cas.hints.clone();
    // A node registering for the first time has no certificate yet; it proves itself by
    // signing its request, which the registry checks.
    let verifier = ClientVerifier::new(RegistryClients { cas }, false, hints);
    let (chain, key) = own.parts();
    ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(verifier)
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
    let verifier = ServerVerifier::new(RegistryServer {
        cas: ApprovedCas::of_instances(approved_cas)?,
        instance: instance.clone(),
    });
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{KeyAlgorithm, PrivateKey};
    use crate::{CertificateAuthority, Csr, Validity};

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
        let server = RegistryServer { cas, instance: vn.clone() };
        assert_eq!(
            server.check(Presented::leaf(registry.der()), now),
            Err(PeerRejected::ForeignCa { presented: Box::new(Identity::Registry(vn.clone())) })
        );

        let admin = hn_ca.issue_admin(&Csr::for_admin(&key, &vn, "An").unwrap(), v, now).unwrap();
        let client = RegistryClients { cas: server.cas };
        assert_eq!(
            client.check(Presented::leaf(admin.der()), now),
            Err(PeerRejected::ForeignCa { presented: Box::new(Identity::Admin(vn)) })
        );
    }
}
