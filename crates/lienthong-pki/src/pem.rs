//! PEM armour for keys, certificates and requests, in one place: the workspace's one PEM reader.

use pkcs8::der::pem::{self, LineEnding};

use crate::error::CertError;

/// Splits a PEM document into its label and DER bytes.
pub(crate) fn decode(text: &str) -> Result<(String, Vec<u8>), String> {
    let (label, der) = pem::decode_vec(text.as_bytes()).map_err(|e| format!("not a PEM document: {e}"))?;
    Ok((label.to_owned(), der))
}

/// Every PEM document in `text`, in order (a chain file, a bundle of roots); text around and
/// between documents is ignored.
pub(crate) fn decode_all(text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    const BEGIN: &str = "-----BEGIN ";
    const END: &str = "-----END ";
    let mut documents = Vec::new();
    let mut rest = text;
    while let Some(begin) = rest.find(BEGIN) {
        let document = &rest[begin..];
        let close = document
            .find(END)
            .and_then(|end| {
                document[end + END.len()..].find("-----").map(|dashes| end + END.len() + dashes + 5)
            })
            .ok_or_else(|| format!("PEM document {} has no END line", documents.len() + 1))?;
        documents.push(decode(&document[..close])?);
        rest = &document[close..];
    }
    Ok(documents)
}

/// The DER of every `label` document in `text`, in order; other documents are skipped. At
/// least one is required.
pub(crate) fn decode_every(
    text: &str,
    label: &'static str,
    malformed: fn(String) -> CertError,
) -> Result<Vec<Vec<u8>>, CertError> {
    let found: Vec<Vec<u8>> = decode_all(text)
        .map_err(malformed)?
        .into_iter()
        .filter(|(l, _)| l == label)
        .map(|(_, der)| der)
        .collect();
    if found.is_empty() {
        return Err(malformed(format!("no {label} in the PEM text")));
    }
    Ok(found)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_is_read_in_order_and_others_are_skipped() {
        let text = format!(
            "chain for a node\n{}{}\n{}",
            encode("CERTIFICATE", b"leaf"),
            encode("PRIVATE KEY", b"key"),
            encode("CERTIFICATE", b"ca")
        );
        let all = decode_all(&text).unwrap();
        assert_eq!(
            all.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(),
            ["CERTIFICATE", "PRIVATE KEY", "CERTIFICATE"]
        );
        let certs = decode_every(&text, "CERTIFICATE", CertError::Malformed).unwrap();
        assert_eq!(certs, [b"leaf".to_vec(), b"ca".to_vec()]);
        assert!(decode_every(&encode("PRIVATE KEY", b"key"), "CERTIFICATE", CertError::Malformed).is_err());
        let torn = encode("CERTIFICATE", b"leaf").replace("-----END CERTIFICATE-----", "");
        assert!(decode_all(&torn).is_err());
    }
}
