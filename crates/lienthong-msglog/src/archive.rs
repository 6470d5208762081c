//! Portable archives of a closed range of a log (`lienthong log export`), verifiable offline
//! without the node: the records' exact bytes, one RFC 6962 inclusion proof per record against
//! a signed checkpoint, and the certificate that made the checkpoint's log signature. The format
//! is the protobuf `Archive` of `proto/lienthong/msglog/v1/msglog.proto`, described in
//! `docs/msglog-archive.md`.

use lienthong_pki::Fingerprint;
use lienthong_proto::msglog::v1 as pb;
use prost::Message;

use crate::checkpoint::{Checkpoint, is_witnessed};
use crate::error::LogError;
use crate::merkle::{self, Hash};
use crate::store::{LogStore, StoreNodes};
use crate::verify::{VerifyError, WitnessKey, Witnesses, certificate_info, check_checkpoint};

/// The `format` of every archive this version writes and reads.
pub const ARCHIVE_FORMAT: &str = "lienthong-log-archive-v1";

/// Why a range could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("records {from}..{to} are not a non-empty range of this log of {size} records")]
    Range { from: u64, to: u64, size: u64 },
    #[error("no checkpoint covers records {from}..{to} ({}); export again after the next checkpoint", latest_text(*latest))]
    NoCheckpoint { from: u64, to: u64, latest: Option<u64> },
    #[error("record {index} was pruned by retention: only its leaf hash is left, it cannot be exported")]
    Pruned { index: u64 },
    #[error("checkpoint of size {size} names certificate {fingerprint}, which the log does not hold")]
    NoCertificate { size: u64, fingerprint: String },
    /// The archive made from the store does not verify: the store is damaged.
    #[error("the log does not match its own checkpoint ({0}); run `lienthong log verify`")]
    Inconsistent(VerifyError),
}

fn latest_text(latest: Option<u64>) -> String {
    match latest {
        None => "the log has no checkpoint".into(),
        Some(size) => format!("the largest is of size {size}"),
    }
}

/// What a verified archive proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveReport {
    /// The node whose log it is.
    pub origin: String,
    /// Index of the first record.
    pub first_index: u64,
    /// How many records (consecutive, from `first_index`).
    pub records: u64,
    /// The checkpoint all records are proved against (its signature verified).
    pub checkpoint: Checkpoint,
    /// The certificate that made the log signature.
    pub log_certificate: Fingerprint,
    /// Witness co-signatures verified.
    pub witnessed: usize,
}

/// Exports records `from..to` of `store`, with inclusion proofs against the smallest stored
/// checkpoint of size `>= to` (a witnessed one if there is any). Refuses records whose bytes
/// retention dropped. The archive is checked before it is returned (signatures aside from the
/// witnesses', whose keys the exporter need not have).
pub fn export(store: &dyn LogStore, from: u64, to: u64) -> Result<pb::Archive, ExportError> {
    let size = store.size()?;
    if from >= to || to > size {
        return Err(ExportError::Range { from, to, size });
    }
    let mut candidates = Vec::new();
    let mut latest = None;
    for (position, signed) in store.checkpoints()?.into_iter().enumerate() {
        let cp = Checkpoint::decode(&signed).map_err(|e| {
            ExportError::Inconsistent(VerifyError::BadCheckpoint { position, reason: e.to_string() })
        })?;
        latest = latest.max(Some(cp.size));
        if cp.size >= to {
            candidates.push((!is_witnessed(&signed), cp.size, signed, cp));
        }
    }
    // Witnessed first, then the smallest.
    candidates.sort_by_key(|(unwitnessed, size, _, _)| (*unwitnessed, *size));
    let (_, _, signed, checkpoint) =
        candidates.into_iter().next().ok_or(ExportError::NoCheckpoint { from, to, latest })?;

    let fingerprint = signed
        .signatures
        .iter()
        .find(|s| s.role == pb::SignerRole::Log as i32)
        .and_then(|s| s.signature.as_ref())
        .map(|s| s.signer_sha256.clone())
        .unwrap_or_default();
    let certificate = store
        .certificates()?
        .into_iter()
        .find(|der| Fingerprint::of(der).0.as_slice() == fingerprint)
        .ok_or_else(|| ExportError::NoCertificate {
            size: checkpoint.size,
            fingerprint: fingerprint.iter().map(|b| format!("{b:02x}")).collect(),
        })?;

    let count = usize::try_from(to - from).unwrap_or(usize::MAX);
    let mut records = Vec::with_capacity(count);
    let mut proofs = Vec::with_capacity(count);
    for index in from..to {
        records.push(store.record(index)?.ok_or(ExportError::Pruned { index })?);
        let hashes =
            merkle::inclusion_proof(&StoreNodes(store), index, checkpoint.size).map_err(LogError::from)?;
        proofs.push(pb::InclusionProof {
            leaf_index: index,
            tree_size: checkpoint.size,
            hashes: hashes.iter().map(|h| h.to_vec()).collect(),
        });
    }
    let archive = pb::Archive {
        format: ARCHIVE_FORMAT.into(),
        origin: checkpoint.origin.clone(),
        first_index: from,
        records,
        proofs,
        checkpoint: Some(signed),
        log_certificate: certificate,
    };
    verify(&archive, Witnesses::Skip).map_err(ExportError::Inconsistent)?;
    Ok(archive)
}

/// Verifies an archive offline: its checkpoint's log signature with the archived certificate
/// (which must be the origin node's), its witness co-signatures with `witness_keys` (the
/// registry's anchor; without keys, co-signatures are an error), every record's inclusion proof
/// against the checkpoint's root, and that every record decodes.
///
/// The archived certificate is only checked to be the origin node's; that the instance CA
/// issued it, or that the registry witnessed the checkpoint, is what makes it trustworthy.
pub fn verify_archive(
    archive: &pb::Archive,
    witness_keys: Option<&[WitnessKey]>,
) -> Result<ArchiveReport, VerifyError> {
    verify(archive, Witnesses::Check(witness_keys))
}

/// Decodes an encoded archive (a file) and verifies it. The encoding must be canonical: the
/// archive re-encodes to exactly the bytes given, so nothing (unknown fields, altered framing)
/// goes unchecked alongside it.
pub fn verify_archive_bytes(
    bytes: &[u8],
    witness_keys: Option<&[WitnessKey]>,
) -> Result<ArchiveReport, VerifyError> {
    let archive = pb::Archive::decode(bytes)
        .map_err(|e| VerifyError::Archive(format!("not a lienthong log archive: {e}")))?;
    if archive.encoded_len() != bytes.len() || archive.encode_to_vec() != bytes {
        return Err(VerifyError::Archive(
            "its encoding is not canonical (unknown fields or altered framing)".into(),
        ));
    }
    verify_archive(&archive, witness_keys)
}

fn verify(archive: &pb::Archive, witnesses: Witnesses<'_>) -> Result<ArchiveReport, VerifyError> {
    if archive.format != ARCHIVE_FORMAT {
        return Err(VerifyError::Archive(format!("format {:?} is not {ARCHIVE_FORMAT:?}", archive.format)));
    }
    let signed =
        archive.checkpoint.as_ref().ok_or_else(|| VerifyError::Archive("it has no checkpoint".into()))?;
    let certificate =
        certificate_info(&archive.log_certificate).map_err(|e| VerifyError::Archive(format!("log {e}")))?;
    let checked = check_checkpoint(
        signed,
        0,
        std::slice::from_ref(&certificate),
        "the archive's log certificate",
        witnesses,
    )?;
    let checkpoint = checked.checkpoint;
    if archive.origin != checkpoint.origin {
        return Err(VerifyError::Archive(format!(
            "it says it is {}'s log, but its checkpoint is {}'s",
            archive.origin, checkpoint.origin
        )));
    }
    if archive.records.is_empty() {
        return Err(VerifyError::Archive("it holds no records".into()));
    }
    if archive.proofs.len() != archive.records.len() {
        return Err(VerifyError::Archive(format!(
            "it has {} proofs for {} records",
            archive.proofs.len(),
            archive.records.len()
        )));
    }
    let first = archive.first_index;
    let count = archive.records.len() as u64;
    if first.checked_add(count).is_none_or(|end| end > checkpoint.size) {
        return Err(VerifyError::Archive(format!(
            "records {first}.. ({count} of them) are not all covered by its checkpoint of size {}",
            checkpoint.size
        )));
    }
    let mut path: Vec<Hash> = Vec::with_capacity(64);
    for ((index, record), proof) in (first..).zip(&archive.records).zip(&archive.proofs) {
        let fail = |reason: String| VerifyError::ArchiveRecord { index, reason };
        if proof.leaf_index != index || proof.tree_size != checkpoint.size {
            return Err(fail(format!(
                "its proof is for record {} of a tree of {}, not for this record in the checkpoint's tree of {}",
                proof.leaf_index, proof.tree_size, checkpoint.size
            )));
        }
        path.clear();
        for hash in &proof.hashes {
            path.push(
                hash.as_slice()
                    .try_into()
                    .map_err(|_| fail("its proof holds a hash that is not 32 bytes".into()))?,
            );
        }
        merkle::verify_inclusion(&merkle::leaf_hash(record), index, checkpoint.size, &path, &checkpoint.root)
            .map_err(|e| fail(format!("is not in the checkpoint's tree ({e})")))?;
        pb::LogRecord::decode(record.as_slice())
            .map_err(|e| fail(format!("does not decode as a LogRecord ({e})")))?;
    }
    Ok(ArchiveReport {
        origin: checkpoint.origin.clone(),
        first_index: first,
        records: count,
        checkpoint,
        log_certificate: checked.log_certificate,
        witnessed: checked.witnessed,
    })
}
