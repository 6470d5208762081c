//! Key pairs, detached signatures and passphrase-encrypted PKCS#8 storage.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use pkcs8::der::Decode;
use pkcs8::pkcs5::{pbes2, scrypt};
use zeroize::Zeroizing;

use crate::error::{KeyError, SignatureError};

const OID_ED25519: &str = "1.3.101.112";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_RSA: &str = "1.2.840.113549.1.1.1";

/// The key algorithms Lienthong signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// The default: small keys, fast, deterministic signatures.
    Ed25519,
    /// ECDSA over P-256 with SHA-256 (ASN.1 signatures).
    EcdsaP256,
    /// RSA with RSASSA-PSS / SHA-256 detached signatures (listed in Circular 39/2017). New keys
    /// are 3072 bits; loaded keys must have at least 2048.
    /// Certificates this key issues are signed PKCS#1 v1.5, which every X.509 stack verifies.
    RsaPss,
}

impl KeyAlgorithm {
    pub const ALL: [KeyAlgorithm; 3] = [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256, KeyAlgorithm::RsaPss];

    /// The name used in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::RsaPss => "rsa-pss",
        }
    }

    pub(crate) fn rcgen_alg(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::RsaPss => &rcgen::PKCS_RSA_SHA256,
        }
    }

    fn verification_alg(self) -> &'static dyn sig::VerificationAlgorithm {
        match self {
            KeyAlgorithm::Ed25519 => &sig::ED25519,
            KeyAlgorithm::EcdsaP256 => &sig::ECDSA_P256_SHA256_ASN1,
            KeyAlgorithm::RsaPss => &sig::RSA_PSS_2048_8192_SHA256,
        }
    }

    /// Recognises an algorithm from an X.509 / PKCS#8 algorithm identifier.
    pub(crate) fn from_oids(alg: &str, param: Option<&str>) -> Result<Self, KeyError> {
        match (alg, param) {
            (OID_ED25519, _) => Ok(KeyAlgorithm::Ed25519),
            (OID_EC_PUBLIC_KEY, Some(OID_P256)) => Ok(KeyAlgorithm::EcdsaP256),
            (OID_RSA, _) => Ok(KeyAlgorithm::RsaPss),
            (OID_EC_PUBLIC_KEY, curve) => Err(KeyError::UnsupportedAlgorithm(format!(
                "EC key on curve {}; only P-256 is supported",
                curve.unwrap_or("(none)")
            ))),
            (other, _) => Err(KeyError::UnsupportedAlgorithm(format!("algorithm OID {other}"))),
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        KeyAlgorithm::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            KeyError::UnsupportedAlgorithm(format!("{s:?}; choose one of ed25519, ecdsa-p256, rsa-pss"))
        })
    }
}

enum Signer {
    Ed25519(sig::Ed25519KeyPair),
    Ecdsa(sig::EcdsaKeyPair),
    Rsa(sig::RsaKeyPair),
}

/// A private key held in memory. Its PKCS#8 bytes are wiped on drop; it prints no secret.
pub struct PrivateKey {
    alg: KeyAlgorithm,
    pkcs8: Zeroizing<Vec<u8>>,
    signer: Signer,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("alg", &self.alg).finish_non_exhaustive()
    }
}

/// scrypt N = 2^14, r = 8, p = 1 (16 MiB): OpenSSL's own `-scrypt` parameters, and inside its
/// 32 MiB default memory limit, so `openssl pkey` can read the keys this crate writes.
const SCRYPT_LOG_N: u8 = 14;

const PEM_PLAIN: &str = "PRIVATE KEY";
const PEM_ENCRYPTED: &str = "ENCRYPTED PRIVATE KEY";

impl PrivateKey {
    /// Generates a fresh key from the system's random source.
    pub fn generate(alg: KeyAlgorithm) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let der: Vec<u8> = match alg {
            KeyAlgorithm::Ed25519 => {
                // PKCS#8 v1: OpenSSL 3.0 cannot read the v2 form (with the public key).
                sig::Ed25519KeyPair::generate_pkcs8v1(&rng)
                    .map_err(|_| KeyError::Generation)?
                    .as_ref()
                    .to_vec()
            }
            KeyAlgorithm::EcdsaP256 => {
                sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                    .map_err(|_| KeyError::Generation)?
                    .as_ref()
                    .to_vec()
            }
            KeyAlgorithm::RsaPss => {
                let kp = sig::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072)
                    .map_err(|_| KeyError::Generation)?;
                let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&kp)
                    .map_err(|_| KeyError::Generation)?;
                der.as_ref().to_vec()
            }
        };
        Self::from_pkcs8_der(&der)
    }

    /// Loads a plain PKCS#8 DER key; the algorithm is read from the key itself.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let info = pkcs8::PrivateKeyInfo::from_der(der)
            .map_err(|e| KeyError::Malformed(format!("not a PKCS#8 private key: {e}")))?;
        let param = info.algorithm.parameters_oid().ok().map(|o| o.to_string());
        let alg = KeyAlgorithm::from_oids(&info.algorithm.oid.to_string(), param.as_deref())?;
        let bad = |what: &str| KeyError::Malformed(format!("invalid {what} key"));
        let signer = match alg {
            KeyAlgorithm::Ed25519 => Signer::Ed25519(
                sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| bad("Ed25519"))?,
            ),
            KeyAlgorithm::EcdsaP256 => Signer::Ecdsa(
                sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, der)
                    .map_err(|_| bad("ECDSA P-256"))?,
            ),
            KeyAlgorithm::RsaPss => {
                let kp = sig::RsaKeyPair::from_pkcs8(der).map_err(|_| bad("RSA"))?;
                if kp.public_modulus_len() < 256 {
                    return Err(KeyError::UnsupportedAlgorithm(format!(
                        "RSA key of {} bits; at least 2048 are required",
                        kp.public_modulus_len() * 8
                    )));
                }
                Signer::Rsa(kp)
            }
        };
        Ok(Self { alg, pkcs8: Zeroizing::new(der.to_vec()), signer })
    }

    /// Reads a PEM key: `PRIVATE KEY` (plain) or `ENCRYPTED PRIVATE KEY` (needs the passphrase).
    pub fn from_pem(pem: &str, passphrase: Option<&[u8]>) -> Result<Self, KeyError> {
        let (label, der) = crate::pem::decode(pem).map_err(KeyError::Malformed)?;
        let der = Zeroizing::new(der);
        match (label.as_str(), passphrase) {
            (PEM_PLAIN, _) => Self::from_pkcs8_der(&der),
            (PEM_ENCRYPTED, None) => Err(KeyError::PassphraseRequired),
            (PEM_ENCRYPTED, Some(pass)) => {
                let info = pkcs8::EncryptedPrivateKeyInfo::from_der(&der)
                    .map_err(|e| KeyError::Malformed(format!("bad encrypted key: {e}")))?;
                // A wrong passphrase usually fails the padding check, and otherwise yields
                // garbage that is not PKCS#8: both mean the same to the operator.
                let plain = info.decrypt(pass).map_err(|_| KeyError::WrongPassphrase)?;
                Self::from_pkcs8_der(plain.as_bytes()).map_err(|e| match e {
                    KeyError::Malformed(_) => KeyError::WrongPassphrase,
                    other => other,
                })
            }
            _ => Err(KeyError::NotAKey { found: label }),
        }
    }

    /// PEM of the unencrypted key, for keys that live in memory or in a secret store.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::pem::encode(PEM_PLAIN, &self.pkcs8))
    }

    /// PEM of the key encrypted with a passphrase (PKCS#8 PBES2: scrypt and AES-256-CBC).
    pub fn to_encrypted_pem(&self, passphrase: &[u8]) -> Result<Zeroizing<String>, KeyError> {
        if passphrase.is_empty() {
            return Err(KeyError::EmptyPassphrase);
        }
        let rng = SystemRandom::new();
        let mut salt = [0u8; 16];
        let mut iv = [0u8; 16];
        rng.fill(&mut salt).map_err(|_| KeyError::Generation)?;
        rng.fill(&mut iv).map_err(|_| KeyError::Generation)?;
        let encryption = |e: &dyn std::fmt::Display| KeyError::Encryption(e.to_string());
        let kdf = scrypt::Params::new(SCRYPT_LOG_N, 8, 1, 32).map_err(|e| encryption(&e))?;
        let params = pbes2::Parameters::scrypt_aes256cbc(kdf, &salt, &iv).map_err(|e| encryption(&e))?;
        let info = pkcs8::PrivateKeyInfo::from_der(&self.pkcs8).map_err(|e| encryption(&e))?;
        let doc = info.encrypt_with_params(params, passphrase).map_err(|e| encryption(&e))?;
        Ok(Zeroizing::new(crate::pem::encode(PEM_ENCRYPTED, doc.as_bytes())))
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.alg
    }

    pub(crate) fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn public_key(&self) -> PublicKey {
        let raw = match &self.signer {
            Signer::Ed25519(k) => k.public_key().as_ref().to_vec(),
            Signer::Ecdsa(k) => k.public_key().as_ref().to_vec(),
            Signer::Rsa(k) => k.public_key().as_ref().to_vec(),
        };
        PublicKey { alg: self.alg, raw }
    }

    /// A detached signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignatureError> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Ed25519(k) => Ok(k.sign(msg).as_ref().to_vec()),
            Signer::Ecdsa(k) => {
                Ok(k.sign(&rng, msg).map_err(|_| SignatureError::SigningFailed)?.as_ref().to_vec())
            }
            Signer::Rsa(k) => {
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign(&sig::RSA_PSS_SHA256, &rng, msg, &mut out)
                    .map_err(|_| SignatureError::SigningFailed)?;
                Ok(out)
            }
        }
    }

    /// The same key in rcgen's form, for issuing certificates and CSRs.
    pub(crate) fn to_rcgen(&self) -> Result<rcgen::KeyPair, KeyError> {
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(self.pkcs8.as_slice());
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, self.alg.rcgen_alg())
            .map_err(|e| KeyError::Malformed(format!("key rejected by the certificate builder: {e}")))
    }
}

/// A public key in the raw form its algorithm verifies with (as carried in a certificate's
/// subjectPublicKey bit string).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    alg: KeyAlgorithm,
    raw: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({}, {} bytes)", self.alg, self.raw.len())
    }
}

impl PublicKey {
    pub fn new(alg: KeyAlgorithm, raw: Vec<u8>) -> Self {
        Self { alg, raw }
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.alg
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Checks a detached signature over `msg`.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        sig::UnparsedPublicKey::new(self.alg.verification_alg(), &self.raw)
            .verify(msg, signature)
            .map_err(|_| SignatureError::Invalid)
    }
}
