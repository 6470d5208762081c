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
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};

use super::chain::{ApprovedCas, PeerRole};
use super::verifier::{ChainCheck, ClientVerifier, Presented, ServerVerifier};
use super::{TlsIdentity, VERSIONS, crypto_provider};
use crate::cert::{Certificate, Fingerprint, Identity};
use crate::error::{CertError, PeerRejected};

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

/// Approved CAs and the registered authentication certificate of every node.
pub struct TrustPolicy {
    cas: ApprovedCas,
    registered: HashMap<Fingerprint, NodeId>,
}

impl fmt::Debug for TrustPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustPolicy")
            .field("approved_cas", &self.cas.len())
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
            .verify_chain(Presented { end_entity, intermediates }, role, now)?
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

/// The check each side of a node-to-node connection makes: [`TrustPolicy::verify_peer`].
#[derive(Debug)]
struct PinnedPeer {
    policy: Arc<TrustPolicy>,
    role: PeerRole,
    /// The node a client meant to reach; `None` on the server side.
    expected: Option<NodeId>,
}

impl ChainCheck for PinnedPeer {
    fn check(&self, chain: Presented<'_>, now: SystemTime) -> Result<(), PeerRejected> {
        // The node id, pinned by fingerprint, is the identity; the TLS server name is not used.
        self.policy
            .verify_peer(chain.end_entity, chain.intermediates, self.role, self.expected.as_ref(), now)
            .map(|_| ())
    }
}

/// The provider side: requires a client certificate from a registered node.
pub fn server_config(own: &TlsIdentity, policy: Arc<TrustPolicy>) -> Result<ServerConfig, rustls::Error> {
    let (chain, key) = own.parts();
    ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(ClientVerifier::new(
            PinnedPeer { policy, role: PeerRole::Client, expected: None },
            true,
            Vec::new(),
        ))
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
        .with_custom_certificate_verifier(ServerVerifier::new(PinnedPeer {
            policy,
            role: PeerRole::Server,
            expected: Some(expected),
        }))
        .with_client_auth_cert(chain, key)
}

/// The TLS server name a client config sends. Verification ignores it (the peer is pinned by
/// node id and fingerprint); it only has to be syntactically valid.
pub fn peer_server_name() -> ServerName<'static> {
    ServerName::try_from("node.lienthong.invalid").expect("valid DNS name")
}
