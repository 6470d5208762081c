//! Certificates: the identity they carry, fingerprints, validity.
//!
//! Lienthong puts the identity in a URI subject alternative name, so it survives any subject
//! naming policy: `urn:lienthong:node:VN/GOV/000.00.00.G22/ss1` for a node authentication
//! certificate, `urn:lienthong:member:VN/GOV/000.00.00.G22` for a member signing certificate,
//! `urn:lienthong:registry:VN` for the registry's TLS server certificate,
//! `urn:lienthong:admin:VN` for a registry administrator's TLS client certificate and
//! `urn:lienthong:ca:VN` for an instance CA. `?` is percent-encoded in the URI.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use lienthong_types::{InstanceId, MemberId, NodeId};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use crate::error::CertError;
use crate::key::{KeyAlgorithm, PublicKey};

pub(crate) const URN_NODE: &str = "urn:lienthong:node:";
pub(crate) const URN_MEMBER: &str = "urn:lienthong:member:";
pub(crate) const URN_CA: &str = "urn:lienthong:ca:";
pub(crate) const URN_REGISTRY: &str = "urn:lienthong:registry:";
pub(crate) const URN_ADMIN: &str = "urn:lienthong:admin:";

/// SHA-256 of a certificate's DER: how the global configuration pins a node's certificate.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Self {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        Self(d.as_ref().try_into().expect("SHA-256 is 32 bytes"))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why a fingerprint string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a SHA-256 fingerprint is 64 hex digits (colons allowed)")]
pub struct BadFingerprint;

impl FromStr for Fingerprint {
    type Err = BadFingerprint;
    /// Accepts `ab12...` and the `AB:12:...` form openssl prints.
    fn from_str(s: &str) -> Result<Self, BadFingerprint> {
        let hex: String = s.chars().filter(|&c| c != ':').collect();
        let bytes = hex::decode(hex).map_err(|_| BadFingerprint)?;
        Ok(Self(bytes.try_into().map_err(|_| BadFingerprint)?))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Who a certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// An instance CA.
    Ca(InstanceId),
    /// A node's TLS authentication certificate.
    Node(NodeId),
    /// A member's message-signing certificate.
    Member(MemberId),
    /// The registry's TLS server certificate.
    Registry(InstanceId),
    /// A registry administrator's TLS client certificate. The person's name is only in the
    /// subject CN, for display: every administrator of an instance has this same identity.
    Admin(InstanceId),
}

impl Identity {
    pub fn role(&self) -> &'static str {
        match self {
            Identity::Ca(_) => "CA certificate",
            Identity::Node(_) => "node authentication certificate",
            Identity::Member(_) => "member signing certificate",
            Identity::Registry(_) => "registry server certificate",
            Identity::Admin(_) => "registry administrator certificate",
        }
    }

    pub fn instance(&self) -> &InstanceId {
        match self {
            Identity::Ca(i) | Identity::Registry(i) | Identity::Admin(i) => i,
            Identity::Node(n) => &n.owner.instance,
            Identity::Member(m) => &m.instance,
        }
    }

    pub(crate) fn to_uri(&self) -> String {
        let (prefix, id) = match self {
            Identity::Ca(i) => (URN_CA, i.to_string()),
            Identity::Node(n) => (URN_NODE, n.to_string()),
            Identity::Member(m) => (URN_MEMBER, m.to_string()),
            Identity::Registry(i) => (URN_REGISTRY, i.to_string()),
            Identity::Admin(i) => (URN_ADMIN, i.to_string()),
        };
        // `?` would start a URI query component.
        format!("{prefix}{}", id.replace('?', "%3F"))
    }

    /// Reads an identity from a URI SAN; `None` for URIs that are not ours.
    pub(crate) fn from_uri(uri: &str) -> Option<Result<Identity, CertError>> {
        let parse = || -> Option<Result<Identity, lienthong_types::IdError>> {
            if let Some(id) = uri.strip_prefix(URN_NODE) {
                return Some(id.parse().map(Identity::Node));
            }
            if let Some(id) = uri.strip_prefix(URN_MEMBER) {
                return Some(id.parse().map(Identity::Member));
            }
            if let Some(id) = uri.strip_prefix(URN_REGISTRY) {
                return Some(id.parse().map(Identity::Registry));
            }
            if let Some(id) = uri.strip_prefix(URN_ADMIN) {
                return Some(id.parse().map(Identity::Admin));
            }
            uri.strip_prefix(URN_CA).map(|id| id.parse().map(Identity::Ca))
        };
        parse().map(|r| r.map_err(CertError::from))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Ca(i) => write!(f, "CA of instance {i}"),
            Identity::Node(n) => write!(f, "node {n}"),
            Identity::Member(m) => write!(f, "member {m}"),
            Identity::Registry(i) => write!(f, "registry of instance {i}"),
            Identity::Admin(i) => write!(f, "registry administrator of instance {i}"),
        }
    }
}

/// A certificate in DER. Cheap to clone; parse it with [`Certificate::info`].
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    der: CertificateDer<'static>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Certificate({})", self.fingerprint())
    }
}

/// What a certificate says, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub identity: Identity,
    pub fingerprint: Fingerprint,
    pub serial: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub is_ca: bool,
    pub public_key: PublicKey,
}

impl CertInfo {
    /// True when `now` lies inside the validity period.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

const PEM_CERT: &str = "CERTIFICATE";

/// The DER of every certificate in a PEM bundle, in order, without requiring a Lienthong
/// identity: roots of an ordinary web PKI (a backend's CA). At least one is required.
pub fn certificates_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, CertError> {
    crate::pem::decode_every(pem, PEM_CERT, CertError::Malformed)
}

impl Certificate {
    /// Wraps DER bytes after checking they parse as a certificate with a Lienthong identity.
    pub fn from_der(der: Vec<u8>) -> Result<Self, CertError> {
        let cert = Self { der: CertificateDer::from(der) };
        cert.info()?;
        Ok(cert)
    }

    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        Self::from_der(crate::pem::decode_labelled(pem, PEM_CERT, CertError::Malformed)?)
    }

    /// Every certificate in a PEM file, in order (a chain: leaf first); other documents, such
    /// as a key kept in the same file, are skipped. At least one is required.
    pub fn chain_from_pem(pem: &str) -> Result<Vec<Self>, CertError> {
        crate::pem::decode_every(pem, PEM_CERT, CertError::Malformed)?
            .into_iter()
            .map(Self::from_der)
            .collect()
    }

    pub fn to_pem(&self) -> String {
        crate::pem::encode(PEM_CERT, &self.der)
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.der)
    }

    pub fn identity(&self) -> Result<Identity, CertError> {
        Ok(self.info()?.identity)
    }

    /// Parses the certificate and reads its identity, validity and key.
    pub fn info(&self) -> Result<CertInfo, CertError> {
        let (rest, x509) =
            X509Certificate::from_der(&self.der).map_err(|e| CertError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertError::Malformed("trailing bytes after the certificate".into()));
        }
        let mut identity = None;
        let mut is_ca = false;
        for ext in x509.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        let GeneralName::URI(uri) = name else {
                            continue;
                        };
                        if let Some(id) = Identity::from_uri(uri)
                            && identity.replace(id?).is_some()
                        {
                            return Err(CertError::SeveralIdentities);
                        }
                    }
                }
                ParsedExtension::BasicConstraints(bc) => is_ca = bc.ca,
                _ => {}
            }
        }
        let identity = identity.ok_or(CertError::NoIdentity)?;
        let spki = x509.public_key();
        let param =
            spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
        let alg = KeyAlgorithm::from_oids(&spki.algorithm.algorithm.to_id_string(), param.as_deref())?;
        let to_time = |t: x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            if secs >= 0 {
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
            } else {
                SystemTime::UNIX_EPOCH
            }
        };
        Ok(CertInfo {
            identity,
            fingerprint: self.fingerprint(),
            serial: x509.raw_serial_as_string(),
            subject: x509.subject().to_string(),
            issuer: x509.issuer().to_string(),
            not_before: to_time(x509.validity().not_before),
            not_after: to_time(x509.validity().not_after),
            is_ca,
            public_key: PublicKey::new(alg, spki.subject_public_key.data.to_vec()),
        })
    }

    /// The subject key id and the authority key id extensions, when present.
    pub(crate) fn key_ids(&self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let Ok((_, x509)) = X509Certificate::from_der(&self.der) else {
            return (None, None);
        };
        let (mut ski, mut aki) = (None, None);
        for ext in x509.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => ski = Some(id.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    aki = a.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => {}
            }
        }
        (ski, aki)
    }
}
