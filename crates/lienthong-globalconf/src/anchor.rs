//! The anchor file: what a node is given out of band to trust its instance's configuration.
//!
//! JSON, so an operator can read and diff it; keys are hex.

use std::time::SystemTime;

use lienthong_pki::{Fingerprint, KeyAlgorithm, PublicKey};
use lienthong_types::InstanceId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::keys::ConfKey;

/// Instance, where to fetch its configuration, and which keys may sign it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub instance: InstanceId,
    /// Global configuration download URLs, tried in order.
    pub conf_urls: Vec<String>,
    pub signing_keys: Vec<ConfKey>,
    pub generated_at: SystemTime,
}

/// The anchor file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("anchor file is not valid: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error("anchor file: {0}")]
    Invalid(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnchorFile {
    instance: InstanceId,
    conf_urls: Vec<String>,
    signing_keys: Vec<KeyFile>,
    generated_at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    key_id: String,
    algorithm: String,
    public_key: String,
    valid_from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    valid_until: Option<String>,
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_else(|_| "(time out of range)".into())
}

fn parse_time(field: &str, s: &str) -> Result<SystemTime, AnchorError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| AnchorError::Invalid(format!("{field}: {s:?} is not an RFC 3339 time: {e}")))
}

impl Anchor {
    pub fn to_json(&self) -> String {
        let file = AnchorFile {
            instance: self.instance.clone(),
            conf_urls: self.conf_urls.clone(),
            signing_keys: self
                .signing_keys
                .iter()
                .map(|k| KeyFile {
                    key_id: k.id.to_string(),
                    algorithm: k.key.algorithm().name().into(),
                    public_key: hex::encode(k.key.raw()),
                    valid_from: rfc3339(k.valid_from),
                    valid_until: k.valid_until.map(rfc3339),
                })
                .collect(),
            generated_at: rfc3339(self.generated_at),
        };
        let mut s = serde_json::to_string_pretty(&file).expect("anchor serialises");
        s.push('\n');
        s
    }

    pub fn from_json(text: &str) -> Result<Self, AnchorError> {
        let file: AnchorFile = serde_json::from_str(text)?;
        if file.conf_urls.is_empty() {
            return Err(AnchorError::Invalid("conf_urls is empty".into()));
        }
        if file.signing_keys.is_empty() {
            return Err(AnchorError::Invalid("signing_keys is empty".into()));
        }
        let signing_keys = file
            .signing_keys
            .into_iter()
            .map(|k| {
                let alg: KeyAlgorithm =
                    k.algorithm.parse().map_err(|e| AnchorError::Invalid(format!("algorithm: {e}")))?;
                let raw = hex::decode(&k.public_key)
                    .map_err(|e| AnchorError::Invalid(format!("public_key is not hex: {e}")))?;
                let valid_until =
                    k.valid_until.as_deref().map(|s| parse_time("valid_until", s)).transpose()?;
                let key = ConfKey::new(
                    PublicKey::new(alg, raw),
                    parse_time("valid_from", &k.valid_from)?,
                    valid_until,
                );
                if k.key_id.parse::<Fingerprint>().ok() != Some(key.id) {
                    return Err(AnchorError::Invalid(format!(
                        "key_id {} is not the SHA-256 of its public key ({})",
                        k.key_id, key.id
                    )));
                }
                Ok(key)
            })
            .collect::<Result<_, AnchorError>>()?;
        Ok(Self {
            instance: file.instance,
            conf_urls: file.conf_urls,
            signing_keys,
            generated_at: parse_time("generated_at", &file.generated_at)?,
        })
    }
}

impl From<&Anchor> for lienthong_proto::globalconf::v1::Anchor {
    fn from(a: &Anchor) -> Self {
        Self {
            instance: a.instance.to_string(),
            conf_urls: a.conf_urls.clone(),
            signing_keys: a.signing_keys.iter().map(Into::into).collect(),
            generated_at_ms: crate::to_millis(a.generated_at),
        }
    }
}

impl TryFrom<lienthong_proto::globalconf::v1::Anchor> for Anchor {
    type Error = AnchorError;
    fn try_from(a: lienthong_proto::globalconf::v1::Anchor) -> Result<Self, AnchorError> {
        let instance =
            InstanceId::new(&a.instance).map_err(|e| AnchorError::Invalid(format!("instance: {e}")))?;
        if a.conf_urls.is_empty() || a.signing_keys.is_empty() {
            return Err(AnchorError::Invalid("an anchor needs conf_urls and signing_keys".into()));
        }
        let signing_keys = a
            .signing_keys
            .into_iter()
            .map(|k| ConfKey::try_from(k).map_err(|e| AnchorError::Invalid(format!("signing key: {e}"))))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            instance,
            conf_urls: a.conf_urls,
            signing_keys,
            generated_at: crate::from_millis(a.generated_at_ms),
        })
    }
}
