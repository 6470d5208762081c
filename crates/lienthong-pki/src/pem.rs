//! PEM armour for keys, certificates and requests, in one place.

use pkcs8::der::pem::{self, LineEnding};

use crate::error::CertError;

/// Splits a PEM document into its label and DER bytes.
pub(crate) fn decode(text: &str) -> Result<(String, Vec<u8>), String> {
    let (label, der) = pem::decode_vec(text.as_bytes()).map_err(|e| format!("not a PEM document: {e}"))?;
    Ok((label.to_owned(), der))
}

/// Decodes a document that must carry `label`; `malformed` builds the error for unreadable input.
pub(crate) fn decode_labelled(
    text: &str,
    label: &'static str,
    malformed: fn(String) -> CertError,
) -> Result<Vec<u8>, CertError> {
    let (found, der) = decode(text).map_err(malformed)?;
    if found != label {
        return Err(CertError::WrongPemLabel { expected: label, found });
    }
    Ok(der)
}

pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    pem::encode_string(label, LineEnding::LF, der).expect("PEM encoding of bytes cannot fail")
}
