//! Who may use the API: auditors by API key or by client certificate.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lienthong_pki::Fingerprint;
use sha2::{Digest, Sha256};

/// Who may use the API: API keys (kept as SHA-256 digests) and client certificates presented
/// over HTTPS, each with the auditor's name.
#[derive(Debug, Clone, Default)]
pub struct Auditors {
    keys: Vec<([u8; 32], String)>,
    certificates: HashMap<Fingerprint, String>,
}

impl Auditors {
    /// Adds an API key by the hex SHA-256 of the key (what the configuration file holds).
    pub fn add_key_digest(&mut self, name: &str, sha256_hex: &str) -> Result<(), String> {
        let digest: [u8; 32] = hex::decode(sha256_hex.trim())
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| format!("api key {name:?}: sha256 must be 64 hex digits"))?;
        self.keys.push((digest, name.to_owned()));
        Ok(())
    }

    pub fn add_certificate(&mut self, name: &str, fingerprint: Fingerprint) {
        self.certificates.insert(fingerprint, name.to_owned());
    }

    /// A new API key: 32 bytes from the operating system, URL-safe base64 (the key never
    /// depends on a seeded generator). Give it to the auditor; configure its
    /// [`key_digest`](Self::key_digest).
    pub fn new_api_key() -> std::io::Result<String> {
        use std::io::Read as _;
        let mut raw = [0u8; 32];
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut raw))?;
        Ok(URL_SAFE_NO_PAD.encode(raw))
    }

    /// The hex SHA-256 of an API key: what to put in the configuration for it.
    pub fn key_digest(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    pub(crate) fn by_key(&self, key: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Compared as digests, every entry, so timing says nothing about a near miss.
        let mut found = None;
        for (d, name) in &self.keys {
            let same = d.iter().zip(digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            if same {
                found = Some(name.as_str());
            }
        }
        found
    }

    pub(crate) fn by_certificate(&self, fp: &Fingerprint) -> Option<&str> {
        self.certificates.get(fp).map(String::as_str)
    }
}
