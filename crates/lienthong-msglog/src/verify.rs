//! Offline verification of a whole log store (`lienthong log verify`).
//!
//! Everything is recomputed from the stored record bytes and compared with what the store
//! claims: each record against its stored leaf hash, every stored tree node against the hashes
//! of the records under it, every checkpoint's signatures (the node's, with the certificate the
//! log keeps; the registry's co-signatures, with the keys of its anchor) and every checkpoint's
//! root against the tree recomputed at its size. The first problem found is returned as a
//! [`VerifyError`] naming the record, tree node or checkpoint.
//!
//! Records are read chunk by chunk (aligned subtrees of 4096 leaves) on one thread while another
//! hashes, decodes and compares them; each chunk's records complete the tree nodes inside it,
//! and complete chunks the nodes above them.

use lienthong_pki::{CertInfo, Certificate, Fingerprint, Identity, KeyAlgorithm, PublicKey};
use lienthong_proto::msglog::v1 as pb;
use lienthong_proto::types::v1 as types_pb;
use lienthong_types::NodeId;
use prost::Message;

use crate::checkpoint::{Checkpoint, verify_log_signature, verify_witness_signatures};
use crate::error::LogError;
use crate::merkle::{self, Frontier, Hash, ProofError};
use crate::store::{LogStore, StoreNodes};

/// A witness key: the registry's configuration-signing key id (SHA-256 of the raw public key,
/// as in the anchor file) and the public key.
pub type WitnessKey = (Fingerprint, PublicKey);

/// Level of the aligned subtrees verification reads at once.
const CHUNK_LEVEL: u8 = 12;
/// Records per chunk (4096).
const CHUNK: u64 = 1 << CHUNK_LEVEL;

/// Why a log store or an archive does not verify. Each names the first record, tree node or
/// checkpoint found wrong.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The store could not be read.
    #[error(transparent)]
    Storage(#[from] LogError),
    /// The record's bytes hash to something else than the stored leaf hash: the record was
    /// altered (or moved).
    #[error("record {index}: does not match its leaf hash")]
    LeafMismatch { index: u64 },
    /// The record is there but its leaf hash is not.
    #[error("record {index}: its leaf hash is not stored")]
    LeafMissing { index: u64 },
    /// Retention only drops the oldest records, so a missing record after a kept one was
    /// deleted.
    #[error(
        "record {index}: its bytes are missing although record {kept} before it is kept \
         (retention only drops the oldest records): the record was deleted"
    )]
    Deleted { index: u64, kept: u64 },
    /// A stored tree node is not the hash of the records under it.
    #[error(
        "tree node at level {level}, index {index} (records {first}..{end}): does not match the records under it"
    )]
    NodeMismatch { level: u8, index: u64, first: u64, end: u64 },
    /// A tree node the tree needs is not stored.
    #[error("tree node at level {level}, index {index} (records {first}..{end}): is missing")]
    NodeMissing { level: u8, index: u64, first: u64, end: u64 },
    /// The record matches its hash but is not a `LogRecord`.
    #[error("record {index}: does not decode as a LogRecord ({reason}){}", others_text(*others))]
    Undecodable { index: u64, reason: String, others: u64 },
    /// A stored checkpoint could not even be decoded.
    #[error("checkpoint {position} (of those stored): cannot be read: {reason}")]
    BadCheckpoint { position: usize, reason: String },
    /// A checkpoint's signatures or statement are wrong.
    #[error("checkpoint of size {size}: {reason}")]
    Checkpoint { size: u64, reason: String },
    /// Co-signatures are present but nothing to check them with was given.
    #[error(
        "checkpoint of size {size}: carries {count} witness co-signature(s); give the registry's \
         anchor (--anchor FILE) to check them"
    )]
    WitnessKeysNeeded { size: u64, count: usize },
    /// The log is shorter than a checkpoint it signed.
    #[error(
        "checkpoint of size {checkpoint}: the log has only {size} records: records \
         {size}..{checkpoint} were removed (the log was truncated)"
    )]
    Truncated { size: u64, checkpoint: u64 },
    /// The tree recomputed from the records does not have the signed root: the records differ
    /// from those signed, among `from..size` since the previous checkpoint matched.
    #[error(
        "checkpoint of size {size}: its signed root does not match the records: history was \
         rewritten among records {from}..{size}{}",
        since_text(*from)
    )]
    Rewritten { from: u64, size: u64 },
    /// The archive as a whole is malformed or inconsistent.
    #[error("archive: {0}")]
    Archive(String),
    /// A record of an archive is not proved by the archive's checkpoint.
    #[error("archive record {index}: {reason}")]
    ArchiveRecord { index: u64, reason: String },
}

fn others_text(others: u64) -> String {
    if others == 0 { String::new() } else { format!(" and {others} more records do not either") }
}

fn since_text(from: u64) -> String {
    if from == 0 { String::new() } else { format!(" (the checkpoint of size {from} still matches)") }
}

impl From<ProofError> for VerifyError {
    fn from(e: ProofError) -> Self {
        match e {
            ProofError::Missing { level, index } => node_missing(level, index),
            other => VerifyError::Storage(LogError::Proof(other)),
        }
    }
}

fn span(level: u8, index: u64) -> (u64, u64) {
    (index << level, (index + 1) << level)
}

fn node_missing(level: u8, index: u64) -> VerifyError {
    let (first, end) = span(level, index);
    VerifyError::NodeMissing { level, index, first, end }
}

/// What a verified store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The node whose log it is (from its checkpoints; `None` without any).
    pub origin: Option<String>,
    /// Number of records.
    pub size: u64,
    /// Records whose bytes retention dropped (their leaf hashes were used).
    pub pruned: u64,
    /// The tree root over all records.
    pub root: Hash,
    /// Checkpoints kept, all verified.
    pub checkpoints: usize,
    /// Checkpoints with at least one verified witness co-signature.
    pub witnessed: usize,
    /// The size of the largest checkpoint: records from here on are not signed yet.
    pub signed_size: u64,
}

/// What the signatures of one checkpoint established.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) checkpoint: Checkpoint,
    pub(crate) log_certificate: Fingerprint,
    /// Witness co-signatures verified.
    pub(crate) witnessed: usize,
}

/// How to treat witness co-signatures.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Witnesses<'a> {
    /// Check every one with these keys; `None`: there must be none.
    Check(Option<&'a [WitnessKey]>),
    /// Ignore them (an export checking its own output).
    Skip,
}

fn wire_algorithm(alg: KeyAlgorithm) -> i32 {
    let wire = match alg {
        KeyAlgorithm::Ed25519 => types_pb::SignatureAlgorithm::Ed25519,
        KeyAlgorithm::EcdsaP256 => types_pb::SignatureAlgorithm::EcdsaP256Sha256,
        KeyAlgorithm::RsaPss => types_pb::SignatureAlgorithm::RsaPssSha256,
    };
    wire as i32
}

/// A key id or fingerprint for a message, whatever its length.
fn hex_id(bytes: &[u8]) -> String {
    match <[u8; 32]>::try_from(bytes) {
        Ok(fp) => Fingerprint(fp).to_string(),
        Err(_) => format!("(malformed, {} bytes)", bytes.len()),
    }
}

/// Parses a stored or archived certificate and what it says.
pub(crate) fn certificate_info(der: &[u8]) -> Result<CertInfo, String> {
    Certificate::from_der(der.to_vec())
        .and_then(|c| c.info())
        .map_err(|e| format!("certificate {}: {e}", Fingerprint::of(der)))
}

/// Checks one signed checkpoint: exactly one log signature, by the node named as origin, made
/// with one of `certificates` (which must be that node's); the witness co-signatures as
/// `witnesses` says; no signature of another role.
pub(crate) fn check_checkpoint(
    signed: &pb::SignedCheckpoint,
    position: usize,
    certificates: &[CertInfo],
    certificates_are: &str,
    witnesses: Witnesses<'_>,
) -> Result<Checked, VerifyError> {
    let checkpoint = Checkpoint::decode(signed)
        .map_err(|e| VerifyError::BadCheckpoint { position, reason: e.to_string() })?;
    let size = checkpoint.size;
    let fail = |reason: String| VerifyError::Checkpoint { size, reason };
    let node: NodeId = checkpoint
        .origin
        .parse()
        .map_err(|e| fail(format!("origin {:?} is not a node id: {e}", checkpoint.origin)))?;

    let log_role = pb::SignerRole::Log as i32;
    let witness_role = pb::SignerRole::Witness as i32;
    if let Some(other) = signed.signatures.iter().find(|s| s.role != log_role && s.role != witness_role) {
        return Err(fail(format!("a signature by {:?} has the unknown role {}", other.signer, other.role)));
    }
    let mut logs = signed.signatures.iter().filter(|s| s.role == log_role);
    let log = logs.next().ok_or_else(|| fail("it has no log signature".into()))?;
    if logs.next().is_some() {
        return Err(fail("it has more than one log signature".into()));
    }
    let sig = log.signature.as_ref().ok_or_else(|| fail("its log signature is empty".into()))?;
    let fingerprint = <[u8; 32]>::try_from(sig.signer_sha256.as_slice())
        .map(Fingerprint)
        .map_err(|_| fail("its log signature names no certificate".into()))?;
    let cert = certificates.iter().find(|c| c.fingerprint == fingerprint).ok_or_else(|| {
        fail(format!("signed with certificate {fingerprint}, which is not {certificates_are}"))
    })?;
    match &cert.identity {
        Identity::Node(n) if *n == node => {}
        other => {
            return Err(fail(format!(
                "signed with certificate {fingerprint} of {other}, not of node {}",
                checkpoint.origin
            )));
        }
    }
    if sig.algorithm != wire_algorithm(cert.public_key.algorithm()) {
        return Err(fail(format!(
            "its log signature claims algorithm {}, but certificate {fingerprint} has a {} key",
            sig.algorithm,
            cert.public_key.algorithm()
        )));
    }
    verify_log_signature(signed, fingerprint, &cert.public_key).map_err(|e| fail(e.to_string()))?;

    let cosigs: Vec<&pb::CheckpointSignature> =
        signed.signatures.iter().filter(|s| s.role == witness_role).collect();
    let witnessed = match witnesses {
        Witnesses::Skip => 0,
        Witnesses::Check(_) if cosigs.is_empty() => 0,
        Witnesses::Check(None) => return Err(VerifyError::WitnessKeysNeeded { size, count: cosigs.len() }),
        Witnesses::Check(Some(keys)) => {
            let instance = node.owner.instance.to_string();
            for cosig in &cosigs {
                if cosig.signer != instance {
                    return Err(fail(format!(
                        "witness co-signature by {:?}, not by the registry of instance {instance}",
                        cosig.signer
                    )));
                }
                let s =
                    cosig.signature.as_ref().ok_or_else(|| fail("a witness co-signature is empty".into()))?;
                let (_, key) =
                    keys.iter().find(|(id, _)| id.0.as_slice() == s.signer_sha256).ok_or_else(|| {
                        fail(format!(
                            "witness co-signature by key {}, which the anchor does not list",
                            hex_id(&s.signer_sha256)
                        ))
                    })?;
                if s.algorithm != wire_algorithm(key.algorithm()) {
                    return Err(fail(format!(
                        "witness co-signature claims algorithm {}, but key {} is {}",
                        s.algorithm,
                        hex_id(&s.signer_sha256),
                        key.algorithm()
                    )));
                }
            }
            // Every co-signature is by a listed key, so all of them are checked here.
            let verified = verify_witness_signatures(signed, keys).map_err(|e| fail(e.to_string()))?;
            debug_assert_eq!(verified, cosigs.len());
            verified
        }
    };
    Ok(Checked { checkpoint, log_certificate: fingerprint, witnessed })
}

/// Compares a recomputed tree node with the stored one.
fn check_node(stored: Option<Hash>, level: u8, index: u64, hash: &Hash) -> Result<(), VerifyError> {
    match stored {
        Some(stored) if stored == *hash => Ok(()),
        Some(_) => {
            let (first, end) = span(level, index);
            Err(VerifyError::NodeMismatch { level, index, first, end })
        }
        None => Err(node_missing(level, index)),
    }
}

/// What the store holds for one chunk `start..end` (aligned on [`CHUNK`]): the records, and
/// every tree node inside the chunk and the nodes above it that the chunk completes.
#[derive(Debug)]
struct ChunkData {
    start: u64,
    records: Vec<Option<Vec<u8>>>,
    /// `inner[l]`: the stored nodes of level `l` inside the chunk, in order (level 0: leaves).
    inner: Vec<Vec<Option<Hash>>>,
    /// The stored nodes of levels `CHUNK_LEVEL + 1..` that a complete chunk completes.
    outer: Vec<Option<Hash>>,
}

/// Reads one chunk. Only this reads the store during the scan, on its own thread: store reads
/// do not scale over threads (each is a read transaction), hashing and decoding do.
fn read_chunk(store: &dyn LogStore, start: u64, end: u64) -> Result<ChunkData, VerifyError> {
    debug_assert_eq!(start % CHUNK, 0);
    let len = end - start;
    let records = (start..end).map(|i| store.record(i)).collect::<Result<Vec<_>, _>>()?;
    let inner = (0..=CHUNK_LEVEL)
        .map(|level| {
            let first = start >> level;
            (first..first + (len >> level)).map(|i| store.node(level, i)).collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut outer = Vec::new();
    if len == CHUNK {
        let chunk = start >> CHUNK_LEVEL;
        for k in 1..=chunk.trailing_ones() {
            outer.push(store.node(CHUNK_LEVEL + k as u8, chunk >> k)?);
        }
    }
    Ok(ChunkData { start, records, inner, outer })
}

/// Totals over the chunks checked so far.
#[derive(Debug, Default)]
struct Scan {
    /// The chunk roots, as leaves of the tree above the chunks.
    outer: Frontier,
    pruned: u64,
    last_kept: Option<u64>,
    undecodable: u64,
    first_undecodable: Option<(u64, String)>,
}

impl Scan {
    /// Checks one chunk's records against their leaf hashes and every node it completes
    /// against the stored one.
    fn check(&mut self, chunk: &ChunkData) -> Result<(), VerifyError> {
        let start = chunk.start;
        let mut hashes = Vec::with_capacity(chunk.records.len());
        for (index, (record, stored)) in (start..).zip(chunk.records.iter().zip(&chunk.inner[0])) {
            hashes.push(match record {
                Some(bytes) => {
                    let leaf = merkle::leaf_hash(bytes);
                    match stored {
                        None => return Err(VerifyError::LeafMissing { index }),
                        Some(h) if *h != leaf => return Err(VerifyError::LeafMismatch { index }),
                        Some(_) => {}
                    }
                    if let Err(e) = pb::LogRecord::decode(bytes.as_slice()) {
                        self.undecodable += 1;
                        self.first_undecodable.get_or_insert((index, e.to_string()));
                    }
                    self.last_kept = Some(index);
                    leaf
                }
                None => {
                    if let Some(kept) = self.last_kept {
                        return Err(VerifyError::Deleted { index, kept });
                    }
                    self.pruned += 1;
                    stored.ok_or(VerifyError::LeafMissing { index })?
                }
            });
        }
        // Level by level: node `(l, i)` is the hash of nodes `(l - 1, 2i)` and `(l - 1, 2i + 1)`.
        // The chunk starts on a multiple of every level inside it, so its nodes of a level are
        // the complete pairs of the level below, and a node's global index is offset by
        // `start >> level`.
        for level in 1..=CHUNK_LEVEL {
            let below = std::mem::take(&mut hashes);
            hashes = below.chunks_exact(2).map(|pair| merkle::node_hash(&pair[0], &pair[1])).collect();
            for ((local, hash), stored) in (0u64..).zip(&hashes).zip(&chunk.inner[usize::from(level)]) {
                check_node(*stored, level, (start >> level) + local, hash)?;
            }
        }
        if let ([root], true) = (hashes.as_slice(), chunk.records.len() as u64 == CHUNK) {
            let above = self.outer.append(*root);
            for ((level, index, hash), stored) in above.into_iter().skip(1).zip(&chunk.outer) {
                check_node(*stored, level + CHUNK_LEVEL, index, &hash)?;
            }
        }
        Ok(())
    }
}

/// Reads the chunks of `0..size` on one thread and checks them, in order, on this one.
fn scan(store: &dyn LogStore, size: u64, progress: &mut dyn FnMut(u64, u64)) -> Result<Scan, VerifyError> {
    let mut totals = Scan::default();
    progress(0, size);
    std::thread::scope(|s| {
        // A few chunks ahead at most: bounded memory, and the reader stops when checking does
        // (its next send fails).
        let (chunks, ready) = std::sync::mpsc::sync_channel(2);
        s.spawn(move || {
            let mut start = 0;
            while start < size {
                let end = (start + CHUNK).min(size);
                let chunk = read_chunk(store, start, end);
                let failed = chunk.is_err();
                if chunks.send(chunk).is_err() || failed {
                    break;
                }
                start = end;
            }
        });
        for chunk in ready {
            let chunk = chunk?;
            totals.check(&chunk)?;
            progress(chunk.start + chunk.records.len() as u64, size);
        }
        Ok::<_, VerifyError>(())
    })?;
    Ok(totals)
}

/// Verifies a whole log store offline. `witness_keys` are the registry's keys from its anchor;
/// without them a checkpoint carrying co-signatures is an error (they would go unchecked).
/// `progress(done, total)` is called as records are checked. Returns what was verified, or the
/// first problem found.
pub fn verify_store(
    store: &dyn LogStore,
    witness_keys: Option<&[WitnessKey]>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, VerifyError> {
    let size = store.size()?;

    // Signatures first: they are cheap, and a forged checkpoint makes the long scan moot.
    let certificates = store
        .certificates()?
        .iter()
        .map(|der| certificate_info(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| VerifyError::Storage(LogError::Malformed(format!("stored {e}"))))?;
    let mut checked = Vec::new();
    for (position, signed) in store.checkpoints()?.iter().enumerate() {
        checked.push(check_checkpoint(
            signed,
            position,
            &certificates,
            "among the log's certificates",
            Witnesses::Check(witness_keys),
        )?);
    }
    checked.sort_by_key(|c| c.checkpoint.size);
    let origin = checked.first().map(|c| c.checkpoint.origin.clone());
    if let Some(origin) = &origin
        && let Some(other) = checked.iter().find(|c| c.checkpoint.origin != *origin)
    {
        return Err(VerifyError::Checkpoint {
            size: other.checkpoint.size,
            reason: format!(
                "it is for {}, but the log's other checkpoints are for {origin}",
                other.checkpoint.origin
            ),
        });
    }

    // Records and tree.
    let scan = scan(store, size, progress)?;
    // Every stored node inside the tree now matches the records, so roots computed from them
    // are the roots of the records.
    let root = merkle::root(&StoreNodes(store), size)?;

    let mut previous = 0;
    for c in &checked {
        let cp = &c.checkpoint;
        if cp.size > size {
            return Err(VerifyError::Truncated { size, checkpoint: cp.size });
        }
        if merkle::root(&StoreNodes(store), cp.size)? != cp.root {
            return Err(VerifyError::Rewritten { from: previous, size: cp.size });
        }
        previous = cp.size;
    }

    if let Some((index, reason)) = scan.first_undecodable {
        return Err(VerifyError::Undecodable { index, reason, others: scan.undecodable - 1 });
    }
    Ok(Report {
        origin,
        size,
        pruned: scan.pruned,
        root,
        checkpoints: checked.len(),
        witnessed: checked.iter().filter(|c| c.witnessed > 0).count(),
        signed_size: checked.last().map_or(0, |c| c.checkpoint.size),
    })
}
