//! Signed node-to-node envelopes.
//!
//! A request travels as a [`pb::RequestEnvelope`] in the [`ENVELOPE_HEADER`] (base64 of the
//! protobuf) followed by the body; a response likewise. Each envelope is signed by the member it
//! speaks for: the signature covers a context string and the envelope's protobuf encoding with
//! the signature field empty, which binds the ids, method, path, query, headers, times and the
//! body's SHA-256 and length (`digest_version` 1). The signer's certificate travels inside, so
//! a log record that keeps the envelope verifies offline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lienthong_globalconf::{GlobalConf, MemberStatus, algorithm_from_wire, algorithm_to_wire};
use lienthong_pki::{CertError, CertInfo, Certificate, Fingerprint, Identity, PrivateKey, SignatureError};
use lienthong_proto::exchange::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::{Fault, MemberId};
use prost::Message;

use crate::Reject;

/// The HTTP header that carries the envelope between nodes.
pub const ENVELOPE_HEADER: &str = "x-lienthong-envelope";
/// The version of the signed form defined here.
pub const DIGEST_VERSION: u32 = 1;
/// Envelopes are small (ids, path, query, headers, one certificate); anything bigger is refused
/// unread, and a node refuses to sign one that would be bigger ([`request_len_when_signed`]).
pub const MAX_ENVELOPE_BYTES: usize = 48 * 1024;
/// The longest [`ENVELOPE_HEADER`] value: [`MAX_ENVELOPE_BYTES`] in padded base64.
pub const MAX_ENVELOPE_HEADER_LEN: usize = MAX_ENVELOPE_BYTES.div_ceil(3) * 4;
/// The largest HTTP/2 header block (SETTINGS_MAX_HEADER_LIST_SIZE, which counts each field's
/// name and value plus 32 bytes) that both ends of a peer connection accept: the largest
/// envelope header and room for the few other headers of an exchange (method, scheme,
/// authority, path, status, content length, date). Peer servers and clients both use it, so
/// an envelope a node agreed to sign always reaches the other node.
pub const MAX_PEER_HEADER_LIST_BYTES: u32 = {
    let bytes = MAX_ENVELOPE_HEADER_LEN + ENVELOPE_HEADER.len() + 32 + PEER_HEADER_ROOM;
    assert!(bytes <= u32::MAX as usize);
    bytes as u32
};
/// What [`MAX_PEER_HEADER_LIST_BYTES`] allows besides the envelope header.
const PEER_HEADER_ROOM: usize = 4 * 1024;
/// The longest signature value a supported algorithm makes (RSA keys up to 8192 bits).
const MAX_SIGNATURE_VALUE_BYTES: usize = 1024;

const REQUEST_CONTEXT: &[u8] = b"lienthong.exchange.request.v1\0";
const RESPONSE_CONTEXT: &[u8] = b"lienthong.exchange.response.v1\0";

/// A member's signing key and certificate.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    pub key: &'a PrivateKey,
    pub certificate: &'a Certificate,
}

fn signed_message(context: &[u8], unsigned: &[u8]) -> Vec<u8> {
    [context, unsigned].concat()
}

fn signature(
    signer: Signer<'_>,
    context: &[u8],
    unsigned: &[u8],
) -> Result<types_pb::Signature, SignatureError> {
    Ok(types_pb::Signature {
        algorithm: algorithm_to_wire(signer.key.algorithm()) as i32,
        signer_sha256: signer.certificate.fingerprint().0.to_vec(),
        value: signer.key.sign(&signed_message(context, unsigned))?,
    })
}

/// The two envelopes, signed the same way under different contexts.
trait Envelope: Message + Clone {
    const CONTEXT: &'static [u8];
    /// The digest version, signer certificate and signature fields.
    fn signed_fields(&mut self) -> (&mut u32, &mut Vec<u8>, &mut Option<types_pb::Signature>);
}

impl Envelope for pb::RequestEnvelope {
    const CONTEXT: &'static [u8] = REQUEST_CONTEXT;
    fn signed_fields(&mut self) -> (&mut u32, &mut Vec<u8>, &mut Option<types_pb::Signature>) {
        (&mut self.digest_version, &mut self.signer_certificate, &mut self.signature)
    }
}

impl Envelope for pb::ResponseEnvelope {
    const CONTEXT: &'static [u8] = RESPONSE_CONTEXT;
    fn signed_fields(&mut self) -> (&mut u32, &mut Vec<u8>, &mut Option<types_pb::Signature>) {
        (&mut self.digest_version, &mut self.signer_certificate, &mut self.signature)
    }
}

fn sign<E: Envelope>(env: &mut E, signer: Signer<'_>) -> Result<(), SignatureError> {
    let (version, cert, sig) = env.signed_fields();
    *version = DIGEST_VERSION;
    *cert = signer.certificate.der().to_vec();
    *sig = None;
    let signed = signature(signer, E::CONTEXT, &env.encode_to_vec())?;
    *env.signed_fields().2 = Some(signed);
    Ok(())
}

/// Signs a request envelope in place with the client member's key.
pub fn sign_request(env: &mut pb::RequestEnvelope, signer: Signer<'_>) -> Result<(), SignatureError> {
    sign(env, signer)
}

/// Signs a response envelope in place with the provider member's key.
pub fn sign_response(env: &mut pb::ResponseEnvelope, signer: Signer<'_>) -> Result<(), SignatureError> {
    sign(env, signer)
}

/// An upper bound of `env`'s encoded size once signed with `certificate`, whatever the key's
/// algorithm: what the node checks against [`MAX_ENVELOPE_BYTES`] before it signs or logs.
/// `env` must not be signed yet.
pub fn request_len_when_signed(env: &pb::RequestEnvelope, certificate: &Certificate) -> usize {
    len_when_signed(env, certificate)
}

/// [`request_len_when_signed`] for a response envelope.
pub fn response_len_when_signed(env: &pb::ResponseEnvelope, certificate: &Certificate) -> usize {
    len_when_signed(env, certificate)
}

fn len_when_signed<E: Envelope>(env: &E, certificate: &Certificate) -> usize {
    let mut probe = env.clone();
    let (version, cert, sig) = probe.signed_fields();
    *version = DIGEST_VERSION;
    *cert = certificate.der().to_vec();
    // Every field at its longest: the largest enum value, a full fingerprint and signature.
    *sig = Some(types_pb::Signature {
        algorithm: i32::MAX,
        signer_sha256: vec![0; 32],
        value: vec![0; MAX_SIGNATURE_VALUE_BYTES],
    });
    probe.encoded_len()
}

/// What failed in a signature check, before it is given a side's fault code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureProblem {
    Missing,
    Invalid(String),
}

/// The signed parts of an envelope.
struct Signed<'a> {
    context: &'a [u8],
    /// The envelope encoded with its signature field empty.
    unsigned: &'a [u8],
    sig: Option<&'a types_pb::Signature>,
    cert_der: &'a [u8],
    digest_version: u32,
}

/// Checks that `expected` signed the envelope: the certificate is one the global configuration
/// lists for that (active) member, valid now, and the signature verifies over `unsigned`.
fn verify(
    signed: Signed<'_>,
    expected: &MemberId,
    conf: &GlobalConf,
    now: SystemTime,
) -> Result<Fingerprint, SignatureProblem> {
    let Signed { context, unsigned, sig, cert_der, digest_version } = signed;
    let sig = match sig {
        Some(s) if !s.value.is_empty() => s,
        _ => return Err(SignatureProblem::Missing),
    };
    let bad = |m: &str| SignatureProblem::Invalid(m.to_owned());
    if digest_version != DIGEST_VERSION {
        return Err(bad("unsupported digest version"));
    }
    let fingerprint = Fingerprint::of(cert_der);
    let info = signer_info(fingerprint, cert_der).map_err(|_| bad("the signer certificate is malformed"))?;
    if sig.signer_sha256 != fingerprint.0 {
        return Err(bad("the signature names another certificate"));
    }
    if info.identity != Identity::Member(expected.clone()) {
        return Err(SignatureProblem::Invalid(format!("the signer is not member {expected}")));
    }
    let member = conf.member(expected).filter(|m| m.status == MemberStatus::Active);
    if !member.is_some_and(|m| m.signing_certs.contains(&fingerprint)) {
        return Err(SignatureProblem::Invalid(format!(
            "the signing certificate is not registered for member {expected}"
        )));
    }
    if !info.is_valid_at(now) {
        return Err(bad("the signing certificate is expired or not yet valid"));
    }
    let alg = types_pb::SignatureAlgorithm::try_from(sig.algorithm)
        .ok()
        .filter(|a| *a != types_pb::SignatureAlgorithm::Unspecified)
        .ok_or_else(|| bad("unknown signature algorithm"))?;
    if algorithm_from_wire(alg) != info.public_key.algorithm() {
        return Err(bad("the signature algorithm does not match the certificate"));
    }
    info.public_key
        .verify(&signed_message(context, unsigned), &sig.value)
        .map_err(|_| bad("the signature does not verify"))?;
    Ok(fingerprint)
}

/// The parsed certificate with this fingerprint (the SHA-256 of `der`). A node sees the same few
/// signing certificates on every exchange, and parsing one costs about half as much as
/// verifying the signature it carries, so parses are kept (at most [`SIGNER_CACHE`]; the cache
/// starts again when full). Validity is still checked on every use.
fn signer_info(fingerprint: Fingerprint, der: &[u8]) -> Result<Arc<CertInfo>, CertError> {
    static CACHE: OnceLock<Mutex<HashMap<Fingerprint, Arc<CertInfo>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(info) = cache.lock().unwrap_or_else(PoisonError::into_inner).get(&fingerprint) {
        return Ok(info.clone());
    }
    let info = Arc::new(Certificate::from_der(der.to_vec())?.info()?);
    let mut cached = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cached.len() >= SIGNER_CACHE {
        cached.clear();
    }
    cached.insert(fingerprint, info.clone());
    Ok(info)
}

/// How many parsed signer certificates [`signer_info`] keeps.
const SIGNER_CACHE: usize = 1024;

fn on_side(problem: SignatureProblem, missing: Fault, invalid: Fault) -> Reject {
    match problem {
        SignatureProblem::Missing => Reject::new(missing, "the message carries no signature"),
        SignatureProblem::Invalid(m) => Reject::new(invalid, m),
    }
}

fn check<E: Envelope>(
    env: &E,
    expected: &MemberId,
    conf: &GlobalConf,
    now: SystemTime,
) -> Result<Fingerprint, SignatureProblem> {
    let mut unsigned = env.clone();
    let (version, cert, sig) = unsigned.signed_fields();
    let (version, cert, sig) = (*version, cert.clone(), sig.take());
    let bytes = unsigned.encode_to_vec();
    let signed = Signed {
        context: E::CONTEXT,
        unsigned: &bytes,
        sig: sig.as_ref(),
        cert_der: &cert,
        digest_version: version,
    };
    verify(signed, expected, conf, now)
}

/// The provider's check of a request's signature by the client member.
pub fn verify_request(
    env: &pb::RequestEnvelope,
    client_member: &MemberId,
    conf: &GlobalConf,
    now: SystemTime,
) -> Result<Fingerprint, Reject> {
    check(env, client_member, conf, now)
        .map_err(|p| on_side(p, Fault::ServerMissingSignature, Fault::ServerInvalidSignatureValue))
}

/// The consumer's check of a response's signature by the provider member.
pub fn verify_response(
    env: &pb::ResponseEnvelope,
    provider_member: &MemberId,
    conf: &GlobalConf,
    now: SystemTime,
) -> Result<Fingerprint, Reject> {
    check(env, provider_member, conf, now)
        .map_err(|p| on_side(p, Fault::ClientMissingSignature, Fault::ClientInvalidSignatureValue))
}

/// Checks the body that arrived against the one that was signed.
pub fn check_body(
    signed_sha256: &[u8],
    signed_len: u64,
    sha256: &[u8; 32],
    len: u64,
    fault: Fault,
) -> Result<(), Reject> {
    if signed_sha256 != sha256 || signed_len != len {
        return Err(Reject::new(fault, "the body does not match the signed message (altered after signing)"));
    }
    Ok(())
}

/// Encodes an envelope for the [`ENVELOPE_HEADER`].
pub fn to_header<M: Message>(env: &M) -> String {
    STANDARD.encode(env.encode_to_vec())
}

/// Decodes an envelope from the [`ENVELOPE_HEADER`]; `fault` is the side's malformed-message code.
/// Returns the envelope and its exact bytes.
pub fn from_header<M: Message + Default>(value: Option<&[u8]>, fault: Fault) -> Result<(M, Vec<u8>), Reject> {
    let value = value.ok_or_else(|| Reject::new(fault, "the exchange envelope is missing"))?;
    if value.len() > MAX_ENVELOPE_HEADER_LEN {
        return Err(Reject::new(fault, "the exchange envelope is too large"));
    }
    let bytes =
        STANDARD.decode(value).map_err(|_| Reject::new(fault, "the exchange envelope is not base64"))?;
    let env =
        M::decode(bytes.as_slice()).map_err(|_| Reject::new(fault, "the exchange envelope is malformed"))?;
    Ok((env, bytes))
}
