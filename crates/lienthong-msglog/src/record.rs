//! Records: one protobuf `LogRecord` per message. The leaf is the exact encoded bytes, so the
//! store keeps bytes, never re-encodes them.

use std::sync::Arc;

use lienthong_pki::BodyKey;
use lienthong_proto::msglog::v1 as pb;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::error::LogError;

/// What the log keeps of a body (per subsystem).
#[derive(Debug, Clone)]
pub enum BodyPolicy {
    /// The body itself.
    Full,
    /// Only its digest and length.
    MetadataOnly,
    /// The body encrypted with the node's key (AES-256-GCM).
    Encrypted(Arc<BodyKey>),
}

/// Associated data binding an encrypted body to its record's identity.
fn body_aad(r: &pb::LogRecord) -> Vec<u8> {
    format!("{}\0{}\0{}\0{}", r.message_id, r.request_id, r.direction, r.role).into_bytes()
}

/// Sets the body fields of `record` from `body` under `policy`: digest and length always.
pub fn attach_body(record: &mut pb::LogRecord, body: &[u8], policy: &BodyPolicy) -> Result<(), LogError> {
    record.body_sha256 = Sha256::digest(body).to_vec();
    record.body_length = body.len() as u64;
    match policy {
        BodyPolicy::Full => {
            record.body_policy = pb::BodyPolicy::Full as i32;
            record.body = Some(pb::log_record::Body::PlainBody(body.to_vec()));
        }
        BodyPolicy::MetadataOnly => {
            record.body_policy = pb::BodyPolicy::MetadataOnly as i32;
            record.body = None;
        }
        BodyPolicy::Encrypted(key) => {
            record.body_policy = pb::BodyPolicy::Encrypted as i32;
            let (nonce, ciphertext) = key.seal(body, &body_aad(record))?;
            record.body = Some(pb::log_record::Body::EncryptedBody(pb::EncryptedBody {
                key_id: key.id().to_owned(),
                nonce: nonce.to_vec(),
                ciphertext,
            }));
        }
    }
    Ok(())
}

/// The body kept in `record`, decrypted if needed and checked against its digest; `None` when
/// only metadata was kept. `key` finds a body key by id.
pub fn open_body(
    record: &pb::LogRecord,
    key: impl Fn(&str) -> Option<Arc<BodyKey>>,
) -> Result<Option<Vec<u8>>, LogError> {
    let body = match &record.body {
        None => return Ok(None),
        Some(pb::log_record::Body::PlainBody(b)) => b.clone(),
        Some(pb::log_record::Body::EncryptedBody(e)) => {
            let k = key(&e.key_id).ok_or_else(|| LogError::Malformed(format!("no body key {}", e.key_id)))?;
            k.open(&e.nonce, &e.ciphertext, &body_aad(record))?
        }
    };
    if Sha256::digest(&body).as_slice() != record.body_sha256.as_slice() {
        return Err(LogError::Malformed("the body does not match its digest".into()));
    }
    Ok(Some(body))
}

/// A record ready to append: its bytes and the keys it is indexed under.
#[derive(Debug, Clone)]
pub struct Entry {
    pub bytes: Vec<u8>,
    pub message_id: String,
    pub logged_at_ms: i64,
    /// Client and service in X-Road string form ("" if absent).
    pub client: String,
    pub service: String,
}

impl Entry {
    pub fn new(record: &pb::LogRecord) -> Self {
        Self {
            bytes: record.encode_to_vec(),
            message_id: record.message_id.clone(),
            logged_at_ms: record.logged_at_ms,
            client: record.client.clone().and_then(id_string).unwrap_or_default(),
            service: record.service.clone().and_then(id_string).unwrap_or_default(),
        }
    }
}

fn id_string<T: lienthong_proto::convert::IntoDomain>(v: T) -> Option<String>
where
    T::Domain: std::fmt::Display,
{
    v.into_domain("id").ok().map(|d| d.to_string())
}

/// The name a refusal summary's kind has in exports and the CLI (`peer_tls`, `audit`, `client`).
pub fn refusal_kind_name(kind: i32) -> &'static str {
    match pb::RefusalKind::try_from(kind) {
        Ok(pb::RefusalKind::PeerTls) => "peer_tls",
        Ok(pb::RefusalKind::Audit) => "audit",
        Ok(pb::RefusalKind::Client) => "client",
        _ => "unspecified",
    }
}

/// Decodes stored record bytes.
pub fn decode_record(bytes: &[u8]) -> Result<pb::LogRecord, LogError> {
    pb::LogRecord::decode(bytes).map_err(|e| LogError::Malformed(e.to_string()))
}
