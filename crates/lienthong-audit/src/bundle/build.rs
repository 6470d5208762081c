//! Gathering a bundle from the nodes' log stores. Building does not judge the evidence (that is
//! [`super::verify`]'s job, with the anchor): it fails only when something the bundle needs is
//! not there, e.g. a record pruned by retention or no witnessed checkpoint covering the records.

use std::collections::BTreeMap;
use std::fmt;

use lienthong_msglog::checkpoint::{Checkpoint, is_witnessed};
use lienthong_msglog::merkle;
use lienthong_msglog::store::StoreNodes;
use lienthong_msglog::{LogError, LogStore};
use lienthong_pki::Fingerprint;
use lienthong_proto::audit::v1 as pb;
use lienthong_proto::msglog::v1 as log_pb;
use prost::Message;

use super::BUNDLE_FORMAT;

/// One exchange: an X-Road message id (`X-Road-Id`), optionally narrowed to one request
/// (`X-Road-Request-Id`), since a client may reuse a message id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExchangeRef {
    pub message_id: String,
    /// `None`: every request of that message id.
    pub request_id: Option<String>,
}

impl ExchangeRef {
    pub fn message(message_id: impl Into<String>) -> Self {
        Self { message_id: message_id.into(), request_id: None }
    }

    pub(crate) fn matches(&self, message_id: &str, request_id: &str) -> bool {
        self.message_id == message_id && self.request_id.as_deref().is_none_or(|r| r == request_id)
    }
}

impl fmt::Display for ExchangeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.request_id {
            None => write!(f, "exchange {}", self.message_id),
            Some(r) => write!(f, "exchange {} (request {r})", self.message_id),
        }
    }
}

/// One node's contribution to a bundle.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    /// The node's message log.
    pub store: &'a dyn LogStore,
    /// The signed global configuration the node holds: the exact `SignedGlobalConf` bytes (a
    /// node keeps them in `DIR/conf/globalconf.bin`).
    pub conf: &'a [u8],
    /// The node's authentication certificate (DER), if at hand. The log keeps the certificates
    /// that signed its checkpoints, so this is only needed for a log that lost them.
    pub node_certificate: Option<&'a [u8]>,
    /// The federation partners' signed views the node held (a node keeps them in
    /// `DIR/conf/partners/INSTANCE/globalconf.bin`): needed when its records carry signatures of
    /// another instance's members.
    pub partner_confs: &'a [Vec<u8>],
}

impl fmt::Debug for Side<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Side")
            .field("conf_bytes", &self.conf.len())
            .field("partner_confs", &self.partner_confs.len())
            .finish_non_exhaustive()
    }
}

/// Why a bundle could not be built. Each names the node (or side) and what is missing.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("a bundle needs at least one node's log")]
    NoSides,
    #[error("a bundle needs at least one exchange")]
    NoExchanges,
    #[error("{node}: {source}")]
    Log {
        node: String,
        #[source]
        source: LogError,
    },
    #[error("{node}: the log has no record of {}", list(.exchanges))]
    NoRecords { node: String, exchanges: Vec<ExchangeRef> },
    #[error("{exchange}: no record of it in any of the logs given")]
    NoSuchExchange { exchange: ExchangeRef },
    #[error(
        "{node}: record {index} was pruned by retention: only its leaf hash is left, it cannot be proved"
    )]
    Pruned { node: String, index: u64 },
    #[error("{node}: record {index} does not decode as a LogRecord ({reason}); run `lienthong log verify`")]
    Undecodable { node: String, index: u64, reason: String },
    #[error(
        "{node}: no checkpoint witnessed by the registry covers record {index} yet ({}); a \
         checkpoint must be witnessed first: wait for the node's next checkpoint round and try again",
        witnessed_text(*witnessed)
    )]
    NotWitnessed { node: String, index: u64, witnessed: Option<u64> },
    #[error(
        "{node}: its witnessed checkpoint of size {checkpoint} is larger than the log ({size} records): \
         the log was truncated; run `lienthong log verify`"
    )]
    Truncated { node: String, size: u64, checkpoint: u64 },
    #[error("{node}: its checkpoint of size {size} cannot be read: {reason}")]
    BadCheckpoint { node: String, size: u64, reason: String },
    #[error(
        "{node}: its checkpoint was signed with certificate {fingerprint}, which neither the log nor \
         the certificate given holds; give the node's authentication certificate"
    )]
    NoCertificate { node: String, fingerprint: String },
    #[error("node {node} is given twice")]
    DuplicateSide { node: String },
    #[error("the bundles cannot be merged: {0}")]
    Merge(String),
}

impl BuildError {
    /// A stable code for APIs: what is missing (`not_found`), what is not proven yet
    /// (`not_witnessed`), or a log that needs checking (`log_damaged`), a caller's mistake
    /// (`invalid_request`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoRecords { .. } | Self::NoSuchExchange { .. } | Self::Pruned { .. } => "not_found",
            Self::NotWitnessed { .. } => "not_witnessed",
            Self::Log { .. }
            | Self::Undecodable { .. }
            | Self::Truncated { .. }
            | Self::BadCheckpoint { .. }
            | Self::NoCertificate { .. } => "log_damaged",
            Self::NoSides | Self::NoExchanges | Self::DuplicateSide { .. } | Self::Merge(_) => {
                "invalid_request"
            }
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == "not_found"
    }
}

fn list(exchanges: &[ExchangeRef]) -> String {
    exchanges.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn witnessed_text(witnessed: Option<u64>) -> String {
    match witnessed {
        None => "the log has no witnessed checkpoint".into(),
        Some(size) => format!("the latest witnessed one has size {size}"),
    }
}

/// One side, gathered.
struct Gathered {
    node: String,
    conf: Vec<u8>,
    partner_confs: Vec<Vec<u8>>,
    certificate: Vec<u8>,
    checkpoint: log_pb::SignedCheckpoint,
    records: Vec<pb::EvidenceRecord>,
}

/// Builds a bundle proving `exchanges` from the logs of `sides` (one per node; typically the
/// consumer's node and the provider's node that served the exchange). Returns the encoded
/// `EvidenceBundle`.
///
/// For each side: every record of the exchanges in that log, with an inclusion proof against
/// the latest checkpoint the registry witnessed (it must cover them all), the certificate that
/// signed that checkpoint, and the side's configuration. Each side must hold at least one record
/// of the exchanges and each exchange must be in at least one log.
pub fn build(sides: &[Side<'_>], exchanges: &[ExchangeRef]) -> Result<Vec<u8>, BuildError> {
    if sides.is_empty() {
        return Err(BuildError::NoSides);
    }
    // An empty request id means none (that is how the bundle encodes "every request").
    let mut wanted: Vec<ExchangeRef> = exchanges
        .iter()
        .map(|e| ExchangeRef {
            message_id: e.message_id.clone(),
            request_id: e.request_id.clone().filter(|r| !r.is_empty()),
        })
        .collect();
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() {
        return Err(BuildError::NoExchanges);
    }
    let mut found = vec![false; wanted.len()];
    let mut gathered = BTreeMap::new();
    for (position, side) in sides.iter().enumerate() {
        let g = gather(position, side, &wanted, &mut found)?;
        if gathered.contains_key(&g.node) {
            return Err(BuildError::DuplicateSide { node: g.node });
        }
        gathered.insert(g.node.clone(), g);
    }
    if let Some(missing) = found.iter().position(|f| !f) {
        return Err(BuildError::NoSuchExchange { exchange: wanted[missing].clone() });
    }

    // Sides by node id; configurations deduplicated in the order the sides first name them.
    let mut global_confs: Vec<Vec<u8>> = Vec::new();
    let mut out_sides = Vec::with_capacity(gathered.len());
    for (node, g) in gathered {
        let index = match global_confs.iter().position(|c| *c == g.conf) {
            Some(i) => i,
            None => {
                global_confs.push(g.conf);
                global_confs.len() - 1
            }
        };
        out_sides.push(pb::EvidenceSide {
            node,
            global_conf: u32::try_from(index).unwrap_or(u32::MAX),
            node_certificate: g.certificate,
            checkpoint: Some(g.checkpoint),
            records: g.records,
            partner_confs: g.partner_confs,
        });
    }
    let bundle = pb::EvidenceBundle {
        format: BUNDLE_FORMAT.into(),
        exchanges: wanted
            .iter()
            .map(|e| pb::ExchangeRef {
                message_id: e.message_id.clone(),
                request_id: e.request_id.clone().unwrap_or_default(),
            })
            .collect(),
        global_confs,
        sides: out_sides,
    };
    Ok(bundle.encode_to_vec())
}

fn gather(
    position: usize,
    side: &Side<'_>,
    wanted: &[ExchangeRef],
    found: &mut [bool],
) -> Result<Gathered, BuildError> {
    let store = side.store;
    // Named by its checkpoints' origin as soon as one is read; by its position until then.
    let mut node = format!("log {} of those given", position + 1);
    let log = |node: &str, source: LogError| BuildError::Log { node: node.to_owned(), source };

    let mut witnessed: Option<(Checkpoint, log_pb::SignedCheckpoint)> = None;
    for signed in store.checkpoints().map_err(|e| log(&node, e))? {
        let Ok(cp) = Checkpoint::decode(&signed) else { continue };
        node.clone_from(&cp.origin);
        if is_witnessed(&signed) && witnessed.as_ref().is_none_or(|(w, _)| cp.size > w.size) {
            witnessed = Some((cp, signed));
        }
    }

    // The records of the wanted exchanges, by index.
    let mut records: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut message_ids: Vec<&str> = wanted.iter().map(|e| e.message_id.as_str()).collect();
    message_ids.dedup();
    for message_id in message_ids {
        for index in store.by_exchange(message_id).map_err(|e| log(&node, e))? {
            let bytes = store
                .record(index)
                .map_err(|e| log(&node, e))?
                .ok_or(BuildError::Pruned { node: node.clone(), index })?;
            let record = log_pb::LogRecord::decode(bytes.as_slice())
                .map_err(|e| BuildError::Undecodable { node: node.clone(), index, reason: e.to_string() })?;
            let mut any = false;
            for (i, e) in wanted.iter().enumerate() {
                if e.matches(&record.message_id, &record.request_id) {
                    found[i] = true;
                    any = true;
                }
            }
            if any {
                records.insert(index, bytes);
            }
        }
    }
    let Some(&last) = records.keys().next_back() else {
        return Err(BuildError::NoRecords { node, exchanges: wanted.to_vec() });
    };

    let (checkpoint, signed) = match witnessed {
        Some((cp, signed)) if cp.size > last => (cp, signed),
        other => {
            return Err(BuildError::NotWitnessed {
                node,
                index: last,
                witnessed: other.map(|(c, _)| c.size),
            });
        }
    };
    let size = store.size().map_err(|e| log(&node, e))?;
    if size < checkpoint.size {
        return Err(BuildError::Truncated { node, size, checkpoint: checkpoint.size });
    }

    let fingerprint = signed
        .signatures
        .iter()
        .find(|s| s.role == log_pb::SignerRole::Log as i32)
        .and_then(|s| s.signature.as_ref())
        .map(|s| s.signer_sha256.clone())
        .ok_or_else(|| BuildError::BadCheckpoint {
            node: node.clone(),
            size: checkpoint.size,
            reason: "it has no log signature".into(),
        })?;
    let mut candidates = store.certificates().map_err(|e| log(&node, e))?;
    candidates.extend(side.node_certificate.map(<[u8]>::to_vec));
    let certificate =
        candidates.into_iter().find(|der| Fingerprint::of(der).0.as_slice() == fingerprint).ok_or_else(
            || BuildError::NoCertificate { node: node.clone(), fingerprint: hex::encode(&fingerprint) },
        )?;

    let mut out = Vec::with_capacity(records.len());
    for (index, bytes) in records {
        let hashes = merkle::inclusion_proof(&StoreNodes(store), index, checkpoint.size)
            .map_err(|e| log(&node, LogError::Proof(e)))?;
        out.push(pb::EvidenceRecord {
            record: bytes,
            proof: Some(log_pb::InclusionProof {
                leaf_index: index,
                tree_size: checkpoint.size,
                hashes: hashes.iter().map(|h| h.to_vec()).collect(),
            }),
        });
    }
    // By instance, each once: one canonical order.
    let mut partner_confs: Vec<(String, Vec<u8>)> =
        side.partner_confs.iter().map(|bytes| (conf_instance(bytes), bytes.clone())).collect();
    partner_confs.sort();
    partner_confs.dedup_by(|a, b| a.0 == b.0);
    Ok(Gathered {
        node,
        conf: side.conf.to_vec(),
        partner_confs: partner_confs.into_iter().map(|(_, b)| b).collect(),
        certificate,
        checkpoint: signed,
        records: out,
    })
}

/// Merges bundles of the same exchanges built from different nodes' logs (each node builds its
/// own side, e.g. over its audit API) into one bundle, as [`build`] over all the logs would
/// have. Nothing is judged here either: [`super::verify`] checks the result.
pub fn merge(parts: &[Vec<u8>]) -> Result<Vec<u8>, BuildError> {
    let mut decoded = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let b = pb::EvidenceBundle::decode(part.as_slice())
            .map_err(|e| BuildError::Merge(format!("part {} does not decode: {e}", i + 1)))?;
        decoded.push(b);
    }
    let Some(first) = decoded.first() else { return Err(BuildError::NoSides) };
    let (format, exchanges) = (first.format.clone(), first.exchanges.clone());
    let mut sides: BTreeMap<String, pb::EvidenceSide> = BTreeMap::new();
    let mut global_confs: Vec<Vec<u8>> = Vec::new();
    for (i, b) in decoded.into_iter().enumerate() {
        if b.format != format || b.exchanges != exchanges {
            return Err(BuildError::Merge(format!("part {} is about other exchanges", i + 1)));
        }
        for mut side in b.sides {
            let conf = usize::try_from(side.global_conf)
                .ok()
                .and_then(|c| b.global_confs.get(c))
                .ok_or_else(|| BuildError::Merge(format!("part {} names a missing configuration", i + 1)))?;
            let index = match global_confs.iter().position(|c| c == conf) {
                Some(i) => i,
                None => {
                    global_confs.push(conf.clone());
                    global_confs.len() - 1
                }
            };
            side.global_conf = u32::try_from(index).unwrap_or(u32::MAX);
            if sides.contains_key(&side.node) {
                return Err(BuildError::DuplicateSide { node: side.node });
            }
            sides.insert(side.node.clone(), side);
        }
    }
    let bundle = pb::EvidenceBundle { format, exchanges, global_confs, sides: sides.into_values().collect() };
    Ok(bundle.encode_to_vec())
}

/// The instance a signed configuration is of (empty if it does not decode: verification says why).
fn conf_instance(bytes: &[u8]) -> String {
    lienthong_proto::globalconf::v1::SignedGlobalConf::decode(bytes)
        .ok()
        .and_then(|s| lienthong_proto::globalconf::v1::GlobalConf::decode(s.conf.as_slice()).ok())
        .map(|c| c.instance)
        .unwrap_or_default()
}
