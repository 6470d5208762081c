//! The check every Lienthong trust relationship starts from: a chain that leads to an approved
//! CA, valid now, with the extended key usage of its side of the handshake. Which identity the
//! certificate must then carry is for each relationship to say.

use std::fmt;
use std::time::SystemTime;

use lienthong_types::InstanceId;
use rustls::DistinguishedName;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use super::crypto_provider;
use super::verifier::Presented;
use crate::cert::{Certificate, Identity};
use crate::error::{CertError, PeerRejected};

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
    pub(super) hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
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
    /// How many CAs are approved.
    pub(super) fn len(&self) -> usize {
        self.anchors.len()
    }

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
    pub(super) fn of_instances(approved_cas: &[Certificate]) -> Result<Self, rustls::Error> {
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
        Presented { end_entity, intermediates }: Presented<'_>,
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
