//! Signed management requests: the registry verifies what nodes and members sign, so both sides
//! use these functions and agree on the signed bytes.

use lienthong_pki::{Certificate, PrivateKey, SignatureError};
use lienthong_proto::registry::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use prost::Message;

use crate::keys::{algorithm_to_wire, key_id};

/// Prefixed to the request bytes before signing (domain separation from every other signature).
pub const REQUEST_SIGNING_CONTEXT: &[u8] = b"lienthong.registry.request.v1\0";

/// The bytes a management request's signature covers.
pub fn request_signed_message(request: &[u8]) -> Vec<u8> {
    [REQUEST_SIGNING_CONTEXT, request].concat()
}

/// Signs a request with `key`. `cert` is the signer's certificate; `None` only for a first node
/// registration, where the key is the one in the request's CSR.
pub fn sign_request(
    request: &pb::ManagementRequest,
    key: &PrivateKey,
    cert: Option<&Certificate>,
) -> Result<pb::SignedManagementRequest, SignatureError> {
    let bytes = request.encode_to_vec();
    let value = key.sign(&request_signed_message(&bytes))?;
    let signer_sha256 = cert.map_or_else(|| key_id(&key.public_key()), Certificate::fingerprint);
    Ok(pb::SignedManagementRequest {
        request: bytes,
        signature: Some(types_pb::Signature {
            algorithm: algorithm_to_wire(key.algorithm()) as i32,
            signer_sha256: signer_sha256.0.to_vec(),
            value,
        }),
        signer_certificate: cert.map(|c| c.der().to_vec()).unwrap_or_default(),
    })
}
