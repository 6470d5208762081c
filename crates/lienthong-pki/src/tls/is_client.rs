//! TLS from an information system to its own node's HTTPS consumer listener.
//!
//! By default that listener presents the node's authentication certificate, which the instance
//! CA issued and which names a node id (`urn:lienthong:node:...`), not a host: an ordinary
//! host-name check can never pass. [`client_config`] checks what such a certificate does say.

use std::time::SystemTime;

use lienthong_types::NodeId;
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;

use super::chain::{ApprovedCas, PeerRole};
use super::crypto_provider;
use super::verifier::{ChainCheck, Presented, ServerVerifier};
use crate::cert::{Certificate, Identity};
use crate::error::PeerRejected;
use crate::key::PrivateKey;

/// The client config an information system uses against a node whose certificate names a node
/// id rather than a host: the server certificate must chain to `node_ca` (the instance CA), be
/// valid for server authentication now, and name exactly `node`; the TLS server name is not
/// checked. With `client`, the system presents that certificate chain (leaf first) and key, for
/// a subsystem whose node requires `auth = "tls-cert"`; any certificate will do, the node pins
/// it by fingerprint. A rejected server certificate surfaces as a
/// [`PeerRejected`] (see [`super::peer_rejection`]).
pub fn client_config(
    node_ca: &Certificate,
    node: &NodeId,
    client: Option<(&[CertificateDer<'static>], &PrivateKey)>,
) -> Result<ClientConfig, rustls::Error> {
    let cas = ApprovedCas::new(std::iter::once(node_ca))
        .map_err(|e| rustls::Error::General(format!("node CA certificate: {e}")))?;
    let verifier = ServerVerifier::new(NodeServer { cas, node: node.clone() });
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => builder.with_client_auth_cert(chain.to_vec(), super::key_der(key)),
    }
}

/// The node's server certificate: chains to the node's CA, and names exactly that node.
#[derive(Debug)]
struct NodeServer {
    cas: ApprovedCas,
    node: NodeId,
}

impl ChainCheck for NodeServer {
    fn check(&self, chain: Presented<'_>, now: SystemTime) -> Result<(), PeerRejected> {
        let chained = self.cas.verify_chain(chain, PeerRole::Server, now)?;
        // The node id takes the place of the host name.
        match chained.cert.and_then(|c| c.identity()) {
            Ok(Identity::Node(n)) if n == self.node => Ok(()),
            Ok(Identity::Node(n)) => {
                Err(PeerRejected::WrongNode { expected: Box::new(self.node.clone()), presented: Box::new(n) })
            }
            _ => Err(PeerRejected::NotNodeCertificate),
        }
    }
}

/// A self-signed TLS client certificate for an information system (`name` as its DNS name),
/// with a fresh Ed25519 key: what a system without an organisation CA presents to a node whose
/// subsystem uses `auth = "tls-cert"`. The node pins it by fingerprint. Returns the DER, the
/// PEM and the key.
pub fn self_signed_client(
    name: &str,
) -> Result<(CertificateDer<'static>, String, PrivateKey), crate::CertError> {
    let key = PrivateKey::generate(crate::KeyAlgorithm::Ed25519)
        .map_err(|e| crate::CertError::Builder(e.to_string()))?;
    let params = rcgen::CertificateParams::new(vec![name.to_owned()])
        .map_err(|e| crate::CertError::Builder(e.to_string()))?;
    let cert = params.self_signed(&key.to_rcgen()?).map_err(|e| crate::CertError::Builder(e.to_string()))?;
    Ok((cert.der().clone(), cert.pem(), key))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::{CertificateAuthority, Csr, KeyAlgorithm, Validity};
    use lienthong_types::InstanceId;

    #[test]
    fn the_node_id_replaces_the_host_name() {
        let now = SystemTime::now();
        let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let vn = InstanceId::new("VN").unwrap();
        let ca = CertificateAuthority::init(vn.clone(), &key, Validity::days(10), now).unwrap();
        let other_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let other_ca = CertificateAuthority::init(vn, &other_key, Validity::days(10), now).unwrap();
        let node: NodeId = "VN/GOV/000.00.00.G02/ss-vpcp".parse().unwrap();
        let cert =
            ca.issue_node(&Csr::for_node(&key, &node).unwrap(), &node, Validity::days(1), now).unwrap();
        let member = node.owner.clone();
        let signing =
            ca.issue_member(&Csr::for_member(&key, &member).unwrap(), &member, Validity::days(1), now);
        let v = |ca: &CertificateAuthority, node: &NodeId| NodeServer {
            cas: ApprovedCas::new(std::iter::once(ca.certificate())).unwrap(),
            node: node.clone(),
        };
        assert_eq!(v(&ca, &node).check(Presented::leaf(cert.der()), now), Ok(()));
        let other: NodeId = "VN/GOV/000.00.00.G02/ss-other".parse().unwrap();
        assert!(matches!(
            v(&ca, &other).check(Presented::leaf(cert.der()), now),
            Err(PeerRejected::WrongNode { .. })
        ));
        let late = now + Duration::from_secs(2 * 86_400);
        assert_eq!(v(&ca, &node).check(Presented::leaf(cert.der()), late), Err(PeerRejected::Expired));
        // Another CA of the same instance (same name, another key) is not the node's CA.
        let r = v(&other_ca, &node).check(Presented::leaf(cert.der()), now);
        assert!(matches!(r, Err(PeerRejected::UnknownCa | PeerRejected::BadSignature)), "{r:?}");
        // A member signing certificate is not for TLS at all.
        let r = v(&ca, &node).check(Presented::leaf(signing.unwrap().der()), now);
        assert!(r.is_err(), "{r:?}");
    }
}
