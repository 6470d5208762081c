//! The instance CA and certificate signing requests.
//!
//! The CA never copies a request's extensions: it reads the identity the request asks for,
//! checks it belongs to this instance and the expected role, and builds the certificate from
//! its own profile (validity, key usages, identity SAN).

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use lienthong_types::{InstanceId, MemberId, NodeId};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateSigningRequestDer;
use time::OffsetDateTime;

use crate::cert::{Certificate, Identity};
use crate::error::CertError;
use crate::key::{KeyAlgorithm, PrivateKey, PublicKey};

/// Validity periods and clock allowance for certificates the CA issues.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start of validity, before issue time to tolerate clocks that lag a little.
    pub backdate: Duration,
    pub lifetime: Duration,
}

impl Validity {
    pub const fn days(days: u64) -> Self {
        Self {
            backdate: Duration::from_secs(300),
            lifetime: Duration::from_secs(days.saturating_mul(86_400)),
        }
    }
}

fn to_offset(t: SystemTime) -> Result<OffsetDateTime, CertError> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| CertError::Builder("time before 1970".into()))?
        .as_secs();
    OffsetDateTime::from_unix_timestamp(secs as i64).map_err(|e| CertError::Builder(e.to_string()))
}

fn random_serial() -> Result<SerialNumber, CertError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| CertError::Builder("no randomness".into()))?;
    bytes[0] &= 0x7f; // positive INTEGER
    Ok(SerialNumber::from_slice(&bytes))
}

fn base_params(
    identity: &Identity,
    validity: Validity,
    now: SystemTime,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, identity.instance().as_str());
    dn.push(
        DnType::CommonName,
        match identity {
            Identity::Ca(i) => format!("Lienthong CA {i}"),
            Identity::Node(n) => n.to_string(),
            Identity::Member(m) => m.to_string(),
        },
    );
    params.distinguished_name = dn;
    let uri = identity.to_uri().try_into().map_err(|e: rcgen::Error| CertError::Builder(e.to_string()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.not_before = to_offset(now.checked_sub(validity.backdate).unwrap_or(now))?;
    let out_of_range = || CertError::ValidityOutOfRange { days: validity.lifetime.as_secs() / 86_400 };
    let not_after = now.checked_add(validity.lifetime).ok_or_else(out_of_range)?;
    params.not_after = to_offset(not_after).map_err(|_| out_of_range())?;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    match identity {
        Identity::Ca(_) => {
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
        }
        Identity::Node(_) => {
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            params.extended_key_usages =
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        }
        Identity::Member(_) => {
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::ContentCommitment];
        }
    }
    Ok(params)
}

/// A certificate signing request: a public key, an identity, and proof of the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct Csr {
    der: Vec<u8>,
}

impl fmt::Debug for Csr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Csr({} bytes)", self.der.len())
    }
}

const PEM_CSR: &str = "CERTIFICATE REQUEST";

impl Csr {
    /// A request for a node authentication certificate.
    pub fn for_node(key: &PrivateKey, node: &NodeId) -> Result<Self, CertError> {
        Self::build(key, &Identity::Node(node.clone()))
    }

    /// A request for a member signing certificate.
    pub fn for_member(key: &PrivateKey, member: &MemberId) -> Result<Self, CertError> {
        Self::build(key, &Identity::Member(member.clone()))
    }

    fn build(key: &PrivateKey, identity: &Identity) -> Result<Self, CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.to_uri());
        params.distinguished_name = dn;
        let uri =
            identity.to_uri().try_into().map_err(|e: rcgen::Error| CertError::Builder(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let csr =
            params.serialize_request(&key.to_rcgen()?).map_err(|e| CertError::Builder(e.to_string()))?;
        Ok(Self { der: csr.der().to_vec() })
    }

    pub fn from_der(der: Vec<u8>) -> Result<Self, CertError> {
        let csr = Self { der };
        csr.parse()?;
        Ok(csr)
    }

    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        Self::from_der(crate::pem::decode_labelled(pem, PEM_CSR, CertError::MalformedCsr)?)
    }

    pub fn to_pem(&self) -> String {
        crate::pem::encode(PEM_CSR, &self.der)
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The identity the request asks for. The request's own signature is verified first.
    pub fn identity(&self) -> Result<Identity, CertError> {
        Ok(self.parse()?.1)
    }

    /// The public key the certificate would certify.
    pub fn public_key(&self) -> Result<PublicKey, CertError> {
        use rcgen::PublicKeyData;
        let key = self.parse()?.0.public_key;
        let alg = KeyAlgorithm::ALL
            .into_iter()
            .find(|a| a.rcgen_alg() == key.algorithm())
            .ok_or_else(|| CertError::MalformedCsr("unsupported key type".into()))?;
        Ok(PublicKey::new(alg, key.der_bytes().to_vec()))
    }

    fn parse(&self) -> Result<(CertificateSigningRequestParams, Identity), CertError> {
        let der = CertificateSigningRequestDer::from(self.der.as_slice());
        let params = CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| CertError::MalformedCsr(e.to_string()))?;
        let mut identity = None;
        for san in &params.params.subject_alt_names {
            let SanType::URI(uri) = san else { continue };
            if let Some(id) = Identity::from_uri(uri.as_str())
                && identity.replace(id?).is_some()
            {
                return Err(CertError::SeveralIdentities);
            }
        }
        let identity = identity.ok_or(CertError::NoIdentity)?;
        if matches!(identity, Identity::Ca(_)) {
            return Err(CertError::WrongRole {
                requested: identity.role(),
                expected: "node or member certificate",
            });
        }
        Ok((params, identity))
    }
}

/// The instance CA: issues node authentication and member signing certificates.
pub struct CertificateAuthority {
    cert: Certificate,
    instance: InstanceId,
    issuer: Issuer<'static, rcgen::KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("instance", &self.instance)
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a new self-signed CA for `instance`.
    pub fn init(
        instance: InstanceId,
        key: &PrivateKey,
        validity: Validity,
        now: SystemTime,
    ) -> Result<Self, CertError> {
        let params = base_params(&Identity::Ca(instance.clone()), validity, now)?;
        let rc_key = key.to_rcgen()?;
        let der = params.self_signed(&rc_key).map_err(|e| CertError::Builder(e.to_string()))?;
        let cert = Certificate::from_der(der.der().to_vec())?;
        Ok(Self { cert, instance, issuer: Issuer::new(params, rc_key) })
    }

    /// Re-opens a CA from its certificate and key, checking they belong together.
    pub fn load(cert: Certificate, key: &PrivateKey) -> Result<Self, CertError> {
        let info = cert.info()?;
        let Identity::Ca(instance) = info.identity else {
            return Err(CertError::NotCa);
        };
        if !info.is_ca {
            return Err(CertError::NotCa);
        }
        if info.public_key != key.public_key() {
            return Err(CertError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(cert.der(), key.to_rcgen()?)
            .map_err(|e| CertError::Builder(e.to_string()))?;
        Ok(Self { cert, instance, issuer })
    }

    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// Issues the certificate a request asks for, if it is for this instance. Use
    /// [`CertificateAuthority::issue_node`] or [`CertificateAuthority::issue_member`] when the
    /// caller knows which role to expect.
    pub fn issue(&self, csr: &Csr, validity: Validity, now: SystemTime) -> Result<Certificate, CertError> {
        let (params, identity) = csr.parse()?;
        if identity.instance() != &self.instance {
            return Err(CertError::WrongInstance {
                requested: identity.instance().to_string(),
                ca: self.instance.to_string(),
            });
        }
        let profile = base_params(&identity, validity, now)?;
        let cert = profile
            .signed_by(&params.public_key, &self.issuer)
            .map_err(|e| CertError::Builder(e.to_string()))?;
        Certificate::from_der(cert.der().to_vec())
    }

    /// Issues a node authentication certificate; the request must name exactly `node`.
    pub fn issue_node(
        &self,
        csr: &Csr,
        node: &NodeId,
        validity: Validity,
        now: SystemTime,
    ) -> Result<Certificate, CertError> {
        self.expect(csr, &Identity::Node(node.clone()))?;
        self.issue(csr, validity, now)
    }

    /// Issues a member signing certificate; the request must name exactly `member`.
    pub fn issue_member(
        &self,
        csr: &Csr,
        member: &MemberId,
        validity: Validity,
        now: SystemTime,
    ) -> Result<Certificate, CertError> {
        self.expect(csr, &Identity::Member(member.clone()))?;
        self.issue(csr, validity, now)
    }

    fn expect(&self, csr: &Csr, wanted: &Identity) -> Result<(), CertError> {
        let got = csr.identity()?;
        if std::mem::discriminant(&got) != std::mem::discriminant(wanted) {
            return Err(CertError::WrongRole { requested: got.role(), expected: wanted.role() });
        }
        if &got != wanted {
            return Err(CertError::IdentityMismatch {
                requested: got.to_string(),
                expected: wanted.to_string(),
            });
        }
        Ok(())
    }
}
