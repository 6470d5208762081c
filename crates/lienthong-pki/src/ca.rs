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
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, DnValue,
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

/// Longest administrator name: X.520's upper bound for a common name.
const MAX_ADMIN_NAME: usize = 64;

/// Checks an administrator's display name before it goes into a subject CN.
fn check_admin_name(name: &str) -> Result<(), CertError> {
    if name.trim().is_empty() {
        return Err(CertError::BadAdminName("it is empty"));
    }
    if name.chars().count() > MAX_ADMIN_NAME {
        return Err(CertError::BadAdminName("it is longer than 64 characters"));
    }
    // Control characters could forge lines in logs and terminals that display the name.
    if name.chars().any(char::is_control) {
        return Err(CertError::BadAdminName("it contains control characters"));
    }
    Ok(())
}

/// The subject CN of a certificate the CA issues; `admin_name` is used for administrators only.
fn common_name(identity: &Identity, admin_name: Option<&str>) -> String {
    match (identity, admin_name) {
        (Identity::Ca(i), _) => format!("Lienthong CA {i}"),
        (Identity::Node(n), _) => n.to_string(),
        (Identity::Member(m), _) => m.to_string(),
        (Identity::Registry(i), _) => format!("Lienthong registry {i}"),
        (Identity::Admin(_), Some(name)) => name.to_owned(),
        (Identity::Admin(i), None) => format!("Lienthong administrator {i}"),
    }
}

fn base_params(
    identity: &Identity,
    common_name: String,
    validity: Validity,
    now: SystemTime,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, identity.instance().as_str());
    dn.push(DnType::CommonName, common_name);
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
        // One TLS side each, so neither certificate can stand in for the other. rustls only
        // signs with the key (no RSA key transport), so digitalSignature is enough.
        Identity::Registry(_) => {
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
        Identity::Admin(_) => {
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
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

    /// A request for the registry's TLS server certificate.
    pub fn for_registry(key: &PrivateKey, instance: &InstanceId) -> Result<Self, CertError> {
        Self::build(key, &Identity::Registry(instance.clone()))
    }

    /// A request for a registry administrator's TLS client certificate. `name` (a person's
    /// name, at most 64 characters, no control characters) becomes the certificate's subject CN.
    pub fn for_admin(key: &PrivateKey, instance: &InstanceId, name: &str) -> Result<Self, CertError> {
        check_admin_name(name)?;
        Self::build_named(key, &Identity::Admin(instance.clone()), name.to_owned())
    }

    fn build(key: &PrivateKey, identity: &Identity) -> Result<Self, CertError> {
        Self::build_named(key, identity, identity.to_uri())
    }

    fn build_named(key: &PrivateKey, identity: &Identity, common_name: String) -> Result<Self, CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
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
                expected: "node, member, registry or administrator certificate",
            });
        }
        Ok((params, identity))
    }

    /// The administrator's name from the request's subject CN, checked like [`Csr::for_admin`]
    /// does: the request may come from anywhere.
    fn admin_name(params: &CertificateSigningRequestParams) -> Result<String, CertError> {
        match params.params.distinguished_name.get(&DnType::CommonName) {
            Some(DnValue::Utf8String(name)) => {
                check_admin_name(name)?;
                Ok(name.clone())
            }
            Some(_) => Err(CertError::BadAdminName("it is not a UTF-8 string")),
            None => Err(CertError::BadAdminName("the request has no common name")),
        }
    }
}

/// The instance CA: issues node authentication, member signing, registry server and registry
/// administrator certificates.
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
        let identity = Identity::Ca(instance.clone());
        let params = base_params(&identity, common_name(&identity, None), validity, now)?;
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

    /// Issues the node or member certificate a request asks for, if it is for this instance. Use
    /// [`CertificateAuthority::issue_node`] or [`CertificateAuthority::issue_member`] when the
    /// caller knows which role to expect. Registry and administrator requests are refused here
    /// (`WrongRole`): those privileged roles are only issued when asked for by name, with
    /// [`CertificateAuthority::issue_registry`] or [`CertificateAuthority::issue_admin`].
    pub fn issue(&self, csr: &Csr, validity: Validity, now: SystemTime) -> Result<Certificate, CertError> {
        let identity = csr.identity()?;
        if matches!(identity, Identity::Registry(_) | Identity::Admin(_)) {
            return Err(CertError::WrongRole {
                requested: identity.role(),
                expected: "node or member certificate",
            });
        }
        self.sign(csr, validity, now)
    }

    fn sign(&self, csr: &Csr, validity: Validity, now: SystemTime) -> Result<Certificate, CertError> {
        let (params, identity) = csr.parse()?;
        if identity.instance() != &self.instance {
            return Err(CertError::WrongInstance {
                requested: identity.instance().to_string(),
                ca: self.instance.to_string(),
            });
        }
        let admin_name = match identity {
            Identity::Admin(_) => Some(Csr::admin_name(&params)?),
            _ => None,
        };
        let profile = base_params(&identity, common_name(&identity, admin_name.as_deref()), validity, now)?;
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
        self.sign(csr, validity, now)
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
        self.sign(csr, validity, now)
    }

    /// Issues this instance's registry TLS server certificate (serverAuth only); the request
    /// must ask for exactly that.
    pub fn issue_registry(
        &self,
        csr: &Csr,
        validity: Validity,
        now: SystemTime,
    ) -> Result<Certificate, CertError> {
        self.expect(csr, &Identity::Registry(self.instance.clone()))?;
        self.sign(csr, validity, now)
    }

    /// Issues a registry administrator's TLS client certificate (clientAuth only) for this
    /// instance; the request must ask for exactly that. The subject CN is the name in the
    /// request, checked again here.
    pub fn issue_admin(
        &self,
        csr: &Csr,
        validity: Validity,
        now: SystemTime,
    ) -> Result<Certificate, CertError> {
        self.expect(csr, &Identity::Admin(self.instance.clone()))?;
        self.sign(csr, validity, now)
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

#[cfg(test)]
impl CertificateAuthority {
    /// A CA that issues for `instance` while its certificate names another: what a misbehaving
    /// CA of another instance could sign, which verifiers must refuse.
    pub(crate) fn claiming_instance(mut self, instance: InstanceId) -> Self {
        self.instance = instance;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_checks_the_admin_name_again() {
        let vn = InstanceId::new("VN").unwrap();
        let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let ca = CertificateAuthority::init(vn.clone(), &key, Validity::days(1), SystemTime::now()).unwrap();
        // A request made by other software, which did not check the name.
        let csr = Csr::build_named(&key, &Identity::Admin(vn), "An\nroot".into()).unwrap();
        let r = ca.issue_admin(&csr, Validity::days(1), SystemTime::now());
        assert!(matches!(r, Err(CertError::BadAdminName(_))), "{r:?}");
    }
}
