//! Central collection: the registry (or a standalone audit service) pulls metadata records and
//! witnessed checkpoints from every node and keeps them in its own redb store. Nothing is stored
//! before the whole batch verified: the checkpoint is the node's (origin, node signature), the
//! registry co-signed it with a trusted key, it extends the last checkpoint held for that node
//! (consistency proof), and every record is a leaf of it (inclusion proof). A node that rewrites
//! its history is therefore refused, naming the node and the sizes.
//!
//! Records are stored without bodies; the leaf hash of the exact bytes the node logged is stored
//! with each, so the node's inclusion proofs still verify against the held checkpoints.
//! Ingestion is idempotent by (node, leaf index). This module does no network I/O: the caller
//! pulls a [`Batch`] and says which certificate and keys to trust ([`Trust`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use lienthong_globalconf::{ConfKey, from_millis};
use lienthong_msglog::checkpoint::{Checkpoint, verify_log_signature, verify_witness_signatures};
use lienthong_msglog::merkle::{self, Hash};
use lienthong_pki::Certificate;
use lienthong_proto::audit::v1 as audit_pb;
use lienthong_proto::convert::IntoDomain;
use lienthong_proto::msglog::v1 as pb;
use lienthong_types::{ClientId, NodeId};
use prost::Message;
use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// Node -> the largest signed checkpoint held (encoded `SignedCheckpoint`).
const CHECKPOINTS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("checkpoints");
/// (node, leaf index) -> leaf hash of the original bytes (32 bytes) || record without body.
const RECORDS: TableDefinition<'static, (&'static str, u64), &'static [u8]> = TableDefinition::new("records");
/// (node, first leaf) -> end (exclusive): the held leaves as merged ranges, so coverage and
/// `contiguous_until` need no scan of the records.
const HELD: TableDefinition<'static, (&'static str, u64), u64> = TableDefinition::new("held");
/// (record time, node, leaf): the period scan behind [`Collector::records`].
const BY_TIME: TableDefinition<'static, (i64, &'static str, u64), ()> = TableDefinition::new("by_time");
/// (client, record time, node, leaf): one agency's exchanges in a period is one range scan.
const BY_CLIENT: TableDefinition<'static, (&'static str, i64, &'static str, u64), ()> =
    TableDefinition::new("by_client");

/// (message id, node, leaf): the records of one exchange, for drill-down and evidence.
const BY_EXCHANGE: TableDefinition<'static, (&'static str, &'static str, u64), ()> =
    TableDefinition::new("by_exchange");

/// [`Collector::records`] widens the period by this much on each side: the sharing report places
/// an exchange at its request's time, and the response records of an exchange near an edge
/// carry later times. The report applies the exact period itself.
pub const RECORDS_MARGIN_MS: i64 = 3_600_000;

/// At most this many gaps are listed per node; `NodeCoverage::missing` is the exact count.
pub const MAX_GAPS: usize = 100;

/// Why a batch was refused (nothing of it was stored) or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("collector store: {0}")]
    Store(String),
    #[error("batch from node {node}: {reason}")]
    Invalid { node: String, reason: String },
    #[error("node {node}: the checkpoint is {origin:?}'s, not this node's")]
    WrongOrigin { node: String, origin: String },
    #[error("node {node}: checkpoint of size {size}: {reason}")]
    Signature { node: String, size: u64, reason: String },
    #[error("node {node}: checkpoint of size {size} has no valid co-signature by a trusted registry key")]
    NotWitnessed { node: String, size: u64 },
    /// The new checkpoint does not extend the one held: smaller, same size with another root, or
    /// a consistency proof that is missing or fails.
    #[error(
        "node {node} forked its log: checkpoint of size {offered} does not extend the held checkpoint of size {held}: {reason}"
    )]
    Forked { node: String, held: u64, offered: u64, reason: String },
    /// A leaf already held has different bytes now.
    #[error("node {node} rewrote its log: leaf {index} differs from the one collected before")]
    Rewritten { node: String, index: u64 },
    #[error("node {node}: record {index} is not in the checkpoint of size {size}: {reason}")]
    Inclusion { node: String, index: u64, size: u64, reason: String },
}

fn st(e: impl Into<redb::Error>) -> CollectError {
    CollectError::Store(e.into().to_string())
}

/// What one pull from a node's audit API yields.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The node's newest checkpoint, signed by the node and co-signed by the registry.
    pub checkpoint: pb::SignedCheckpoint,
    /// From the checkpoint held for this node ([`Collector::held_checkpoint`]) to `checkpoint`;
    /// needed when the held one is smaller.
    pub consistency: Option<pb::ConsistencyProof>,
    /// Records with inclusion proofs against `checkpoint`.
    pub records: Vec<audit_pb::ProvenRecord>,
}

/// What the caller trusts for one node, from a verified global configuration.
#[derive(Debug, Clone, Copy)]
pub struct Trust<'a> {
    /// The node's authentication certificate, whose fingerprint the configuration registers.
    pub node_certificate: &'a Certificate,
    /// The registry's configuration-signing keys (anchor and configuration) that may co-sign.
    pub witness_keys: &'a [ConfKey],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReport {
    pub checkpoint_size: u64,
    /// Records stored by this batch.
    pub stored: u64,
    /// Records already held with the same leaf hash (re-ingested).
    pub duplicates: u64,
    /// Every leaf below this index is held.
    pub contiguous_until: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCoverage {
    pub node: String,
    /// The largest checkpoint held.
    pub checkpoint_size: u64,
    pub checkpoint_time_ms: i64,
    pub held: u64,
    pub contiguous_until: u64,
    /// The end of the last held range: a collector pulls on from here (leaves below it that
    /// are missing were pruned on the node, or are counted in `gaps`).
    pub held_until: u64,
    /// Missing leaf ranges below `checkpoint_size`, the first [`MAX_GAPS`].
    pub gaps: Vec<Range<u64>>,
    /// Leaves missing below `checkpoint_size` (all gaps, not only those listed).
    pub missing: u64,
}

/// A collected record (metadata only) and where it sits in its node's log.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectedRecord {
    pub node: String,
    pub leaf_index: u64,
    /// The hash of the leaf as the node logged it (with its body, if any).
    pub leaf_hash: Hash,
    pub record: pb::LogRecord,
}

/// The collector's store.
pub struct Collector {
    db: Database,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").finish_non_exhaustive()
    }
}

/// The time a record is indexed under: the sharing report's (message time, else logged time).
fn record_time(r: &pb::LogRecord) -> i64 {
    if r.message_time_ms != 0 { r.message_time_ms } else { r.logged_at_ms }
}

fn client_key(r: &pb::LogRecord) -> Option<String> {
    let client: ClientId = r.client.clone()?.into_domain("client").ok()?;
    Some(client.to_string())
}

/// A verified record ready to store.
struct Verified {
    index: u64,
    leaf: Hash,
    stripped: Vec<u8>,
    time: i64,
    client: Option<String>,
    message_id: String,
}

impl Collector {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, CollectError> {
        Self::init(Database::create(path).map_err(st)?)
    }

    /// A store in memory, for tests.
    pub fn in_memory() -> Result<Self, CollectError> {
        Self::init(Database::builder().create_with_backend(InMemoryBackend::new()).map_err(st)?)
    }

    fn init(db: Database) -> Result<Self, CollectError> {
        let tx = db.begin_write().map_err(st)?;
        tx.open_table(CHECKPOINTS).map_err(st)?;
        tx.open_table(RECORDS).map_err(st)?;
        tx.open_table(HELD).map_err(st)?;
        tx.open_table(BY_TIME).map_err(st)?;
        tx.open_table(BY_CLIENT).map_err(st)?;
        tx.open_table(BY_EXCHANGE).map_err(st)?;
        tx.commit().map_err(st)?;
        Ok(Self { db })
    }

    /// The checkpoint held for `node`: the next batch's consistency proof starts at its size.
    pub fn held_checkpoint(&self, node: &NodeId) -> Result<Option<pb::SignedCheckpoint>, CollectError> {
        let tx = self.db.begin_read().map_err(st)?;
        let table = tx.open_table(CHECKPOINTS).map_err(st)?;
        let Some(bytes) = table.get(node.to_string().as_str()).map_err(st)? else { return Ok(None) };
        pb::SignedCheckpoint::decode(bytes.value()).map(Some).map_err(|e| CollectError::Store(e.to_string()))
    }

    /// Verifies `batch` (see the module documentation) and stores it in one transaction; a
    /// batch that fails any check stores nothing.
    pub fn ingest(
        &self,
        node: &NodeId,
        batch: Batch,
        trust: Trust<'_>,
    ) -> Result<IngestReport, CollectError> {
        let name = node.to_string();
        let checkpoint = verify_checkpoint(&name, &batch.checkpoint, trust)?;
        let records = verify_records(&name, &checkpoint, &batch.records)?;

        // The held checkpoint is read in the write transaction: ingests of one node serialise.
        let tx = self.db.begin_write().map_err(st)?;
        let mut stored = 0;
        let mut duplicates = 0;
        let contiguous_until;
        {
            let mut checkpoints = tx.open_table(CHECKPOINTS).map_err(st)?;
            let held =
                match checkpoints.get(name.as_str()).map_err(st)? {
                    None => None,
                    Some(b) => Some(
                        pb::SignedCheckpoint::decode(b.value())
                            .map_err(|e| CollectError::Store(e.to_string()))
                            .and_then(|s| {
                                Checkpoint::decode(&s).map_err(|e| CollectError::Store(e.to_string()))
                            })?,
                    ),
                };
            let replace = match &held {
                None => true,
                Some(old) => {
                    check_extends(&name, old, &checkpoint, batch.consistency.as_ref())?;
                    checkpoint.size > old.size || checkpoint.timestamp_ms > old.timestamp_ms
                }
            };
            if replace {
                checkpoints.insert(name.as_str(), batch.checkpoint.encode_to_vec().as_slice()).map_err(st)?;
            }

            let mut table = tx.open_table(RECORDS).map_err(st)?;
            let mut by_time = tx.open_table(BY_TIME).map_err(st)?;
            let mut by_client = tx.open_table(BY_CLIENT).map_err(st)?;
            let mut by_exchange = tx.open_table(BY_EXCHANGE).map_err(st)?;
            let mut new_leaves = Vec::new();
            for r in &records {
                if let Some(old) = table.get((name.as_str(), r.index)).map_err(st)? {
                    if old.value().get(..32) != Some(r.leaf.as_slice()) {
                        return Err(CollectError::Rewritten { node: name.clone(), index: r.index });
                    }
                    duplicates += 1;
                    continue;
                }
                let value = [r.leaf.as_slice(), &r.stripped].concat();
                table.insert((name.as_str(), r.index), value.as_slice()).map_err(st)?;
                by_time.insert((r.time, name.as_str(), r.index), ()).map_err(st)?;
                if let Some(client) = &r.client {
                    by_client.insert((client.as_str(), r.time, name.as_str(), r.index), ()).map_err(st)?;
                }
                if !r.message_id.is_empty() {
                    by_exchange.insert((r.message_id.as_str(), name.as_str(), r.index), ()).map_err(st)?;
                }
                new_leaves.push(r.index);
                stored += 1;
            }
            let mut held_table = tx.open_table(HELD).map_err(st)?;
            contiguous_until = merge_held(&mut held_table, &name, &new_leaves)?;
        }
        tx.commit().map_err(st)?;
        Ok(IngestReport { checkpoint_size: checkpoint.size, stored, duplicates, contiguous_until })
    }

    /// Per node: the largest checkpoint held, how far the records are contiguous, and the gaps.
    pub fn coverage(&self) -> Result<Vec<NodeCoverage>, CollectError> {
        let tx = self.db.begin_read().map_err(st)?;
        let checkpoints = tx.open_table(CHECKPOINTS).map_err(st)?;
        let held = tx.open_table(HELD).map_err(st)?;
        let mut out = Vec::new();
        for entry in checkpoints.iter().map_err(st)? {
            let (node, bytes) = entry.map_err(st)?;
            let node = node.value().to_owned();
            let checkpoint = pb::SignedCheckpoint::decode(bytes.value())
                .map_err(|e| CollectError::Store(e.to_string()))
                .and_then(|s| Checkpoint::decode(&s).map_err(|e| CollectError::Store(e.to_string())))?;
            let mut c = NodeCoverage {
                node: node.clone(),
                checkpoint_size: checkpoint.size,
                checkpoint_time_ms: checkpoint.timestamp_ms,
                held: 0,
                contiguous_until: 0,
                held_until: 0,
                gaps: Vec::new(),
                missing: 0,
            };
            let mut next = 0;
            for range in held.range((node.as_str(), 0)..=(node.as_str(), u64::MAX)).map_err(st)? {
                let (k, end) = range.map_err(st)?;
                let (start, end) = (k.value().1, end.value());
                c.held += end - start;
                if start == 0 {
                    c.contiguous_until = end;
                }
                push_gap(&mut c, next..start.min(checkpoint.size));
                next = end;
                c.held_until = end;
            }
            push_gap(&mut c, next..checkpoint.size);
            out.push(c);
        }
        Ok(out)
    }

    /// The records whose time is in `period` = `[from, until)` (Unix ms) widened by
    /// [`RECORDS_MARGIN_MS`] on each side, by time: the input of
    /// [`sharing_report`](lienthong_audit::sharing::sharing_report) for that period.
    pub fn records(&self, period: (i64, i64)) -> Result<Vec<CollectedRecord>, CollectError> {
        let tx = self.db.begin_read().map_err(st)?;
        let by_time = tx.open_table(BY_TIME).map_err(st)?;
        let records = tx.open_table(RECORDS).map_err(st)?;
        let from = period.0.saturating_sub(RECORDS_MARGIN_MS);
        let until = period.1.saturating_add(RECORDS_MARGIN_MS);
        let mut out = Vec::new();
        for k in by_time.range((from, "", 0)..(until, "", 0)).map_err(st)? {
            let (k, _) = k.map_err(st)?;
            let (_, node, index) = k.value();
            out.push(load(&records, node, index)?);
        }
        Ok(out)
    }

    /// Every collected record of the exchanges with this message id (`X-Road-Id`), from every
    /// node, by node and leaf.
    pub fn by_exchange(&self, message_id: &str) -> Result<Vec<CollectedRecord>, CollectError> {
        let tx = self.db.begin_read().map_err(st)?;
        let index = tx.open_table(BY_EXCHANGE).map_err(st)?;
        let records = tx.open_table(RECORDS).map_err(st)?;
        let mut out = Vec::new();
        for k in index.range((message_id, "", 0)..=(message_id, "\u{10ffff}", u64::MAX)).map_err(st)? {
            let (k, _) = k.map_err(st)?;
            let (_, node, leaf) = k.value();
            out.push(load(&records, node, leaf)?);
        }
        Ok(out)
    }

    /// Up to `limit` records of `client` (as the calling agency) whose time is in `period` =
    /// `[from, until)`, by time: one index range scan.
    pub fn by_client(
        &self,
        client: &ClientId,
        period: (i64, i64),
        limit: usize,
    ) -> Result<Vec<CollectedRecord>, CollectError> {
        let client = client.to_string();
        let tx = self.db.begin_read().map_err(st)?;
        let by_client = tx.open_table(BY_CLIENT).map_err(st)?;
        let records = tx.open_table(RECORDS).map_err(st)?;
        let c = client.as_str();
        let mut out = Vec::new();
        for k in by_client.range((c, period.0, "", 0)..(c, period.1, "", 0)).map_err(st)?.take(limit) {
            let (k, _) = k.map_err(st)?;
            let (_, _, node, index) = k.value();
            out.push(load(&records, node, index)?);
        }
        Ok(out)
    }
}

fn push_gap(c: &mut NodeCoverage, gap: Range<u64>) {
    if gap.is_empty() {
        return;
    }
    c.missing += gap.end - gap.start;
    if c.gaps.len() < MAX_GAPS {
        c.gaps.push(gap);
    }
}

fn load(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    node: &str,
    index: u64,
) -> Result<CollectedRecord, CollectError> {
    let corrupt = || CollectError::Store(format!("record {index} of node {node} is missing or corrupt"));
    let value = table.get((node, index)).map_err(st)?.ok_or_else(corrupt)?;
    let bytes = value.value();
    let leaf: Hash = bytes.get(..32).and_then(|h| h.try_into().ok()).ok_or_else(corrupt)?;
    let record = pb::LogRecord::decode(&bytes[32..]).map_err(|_| corrupt())?;
    Ok(CollectedRecord { node: node.to_owned(), leaf_index: index, leaf_hash: leaf, record })
}

/// Adds `leaves` to the node's held ranges, merging neighbours; returns the end of the range
/// starting at 0 (0 if leaf 0 is not held).
fn merge_held(
    table: &mut redb::Table<'_, (&'static str, u64), u64>,
    node: &str,
    leaves: &[u64],
) -> Result<u64, CollectError> {
    let mut ranges: BTreeMap<u64, u64> = BTreeMap::new();
    for r in table.range((node, 0)..=(node, u64::MAX)).map_err(st)? {
        let (k, end) = r.map_err(st)?;
        ranges.insert(k.value().1, end.value());
    }
    if !leaves.is_empty() {
        let mut sorted = leaves.to_vec();
        sorted.sort_unstable();
        for i in sorted {
            ranges.insert(i, i + 1);
        }
        let mut merged: BTreeMap<u64, u64> = BTreeMap::new();
        let mut last: Option<(u64, u64)> = None;
        for (s, e) in ranges {
            last = match last {
                Some((ls, le)) if s <= le => Some((ls, le.max(e))),
                Some(prev) => {
                    merged.insert(prev.0, prev.1);
                    Some((s, e))
                }
                None => Some((s, e)),
            };
        }
        if let Some((s, e)) = last {
            merged.insert(s, e);
        }
        table.retain_in((node, 0)..=(node, u64::MAX), |_, _| false).map_err(st)?;
        for (s, e) in &merged {
            table.insert((node, *s), *e).map_err(st)?;
        }
        ranges = merged;
    }
    Ok(ranges.get(&0).copied().unwrap_or(0))
}

/// The checkpoint is `node`'s, signed with its certificate and co-signed with a trusted key
/// that was valid when it co-signed.
fn verify_checkpoint(
    node: &str,
    signed: &pb::SignedCheckpoint,
    trust: Trust<'_>,
) -> Result<Checkpoint, CollectError> {
    let checkpoint = Checkpoint::decode(signed)
        .map_err(|e| CollectError::Invalid { node: node.to_owned(), reason: e.to_string() })?;
    if checkpoint.origin != node {
        return Err(CollectError::WrongOrigin { node: node.to_owned(), origin: checkpoint.origin });
    }
    let size = checkpoint.size;
    let sig_err = |reason: String| CollectError::Signature { node: node.to_owned(), size, reason };
    let info = trust.node_certificate.info().map_err(|e| sig_err(format!("node certificate: {e}")))?;
    verify_log_signature(signed, info.fingerprint, &info.public_key).map_err(|e| sig_err(e.to_string()))?;

    // Each co-signature by a trusted key alone, so that key validity is checked at its time.
    let witness = pb::SignerRole::Witness as i32;
    let mut witnessed = false;
    for sig in signed.signatures.iter().filter(|s| s.role == witness) {
        let id = sig.signature.as_ref().map(|s| s.signer_sha256.as_slice()).unwrap_or_default();
        let Some(key) = trust.witness_keys.iter().find(|k| k.id.0.as_slice() == id) else { continue };
        if !key.is_valid_at(from_millis(sig.signed_at_ms)) {
            continue;
        }
        let one =
            pb::SignedCheckpoint { checkpoint: signed.checkpoint.clone(), signatures: vec![sig.clone()] };
        if verify_witness_signatures(&one, &[(key.id, key.key.clone())]).is_ok_and(|n| n == 1) {
            witnessed = true;
        }
    }
    if !witnessed {
        return Err(CollectError::NotWitnessed { node: node.to_owned(), size });
    }
    Ok(checkpoint)
}

fn verify_records(
    node: &str,
    checkpoint: &Checkpoint,
    records: &[audit_pb::ProvenRecord],
) -> Result<Vec<Verified>, CollectError> {
    let size = checkpoint.size;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let index = r.leaf_index;
        let bad = |reason: String| CollectError::Inclusion { node: node.to_owned(), index, size, reason };
        let proof = r.proof.as_ref().ok_or_else(|| bad("no inclusion proof".into()))?;
        if (proof.leaf_index, proof.tree_size) != (index, size) {
            return Err(bad(format!(
                "the proof is for leaf {} of a tree of size {}",
                proof.leaf_index, proof.tree_size
            )));
        }
        let hashes: Vec<Hash> = proof
            .hashes
            .iter()
            .map(|h| h.as_slice().try_into().map_err(|_| bad("a proof hash is not 32 bytes".into())))
            .collect::<Result<_, _>>()?;
        let leaf = merkle::leaf_hash(&r.record);
        merkle::verify_inclusion(&leaf, index, size, &hashes, &checkpoint.root)
            .map_err(|e| bad(e.to_string()))?;
        let mut record = pb::LogRecord::decode(r.record.as_slice()).map_err(|e| CollectError::Invalid {
            node: node.to_owned(),
            reason: format!("record {index}: {e}"),
        })?;
        // A record another node wrote cannot be in this node's log; it would be misattributed.
        if let Some(writer) = record.node.clone() {
            let writer: Result<NodeId, _> = writer.into_domain("node");
            if writer.as_ref().map(ToString::to_string).ok().as_deref() != Some(node) {
                return Err(CollectError::Invalid {
                    node: node.to_owned(),
                    reason: format!("record {index} names another writing node"),
                });
            }
        }
        // Only metadata is collected; the leaf hash above still binds the original bytes.
        record.body = None;
        out.push(Verified {
            index,
            leaf,
            time: record_time(&record),
            client: client_key(&record),
            message_id: record.message_id.clone(),
            stripped: record.encode_to_vec(),
        });
    }
    Ok(out)
}

/// `new` extends `old`: never smaller, same size only with the same root, otherwise a
/// consistency proof from exactly `old.size` to `new.size` that verifies.
fn check_extends(
    node: &str,
    old: &Checkpoint,
    new: &Checkpoint,
    proof: Option<&pb::ConsistencyProof>,
) -> Result<(), CollectError> {
    let forked = |reason: String| CollectError::Forked {
        node: node.to_owned(),
        held: old.size,
        offered: new.size,
        reason,
    };
    if old.size == 0 {
        return Ok(());
    }
    if new.size < old.size {
        return Err(forked("the log shrank".into()));
    }
    if new.size == old.size {
        return if new.root == old.root { Ok(()) } else { Err(forked("same size, different root".into())) };
    }
    let proof = proof.ok_or_else(|| forked("no consistency proof".into()))?;
    if (proof.old_size, proof.new_size) != (old.size, new.size) {
        return Err(forked(format!(
            "the consistency proof is from {} to {}",
            proof.old_size, proof.new_size
        )));
    }
    let hashes: Vec<Hash> = proof
        .hashes
        .iter()
        .map(|h| h.as_slice().try_into().map_err(|_| forked("a proof hash is not 32 bytes".into())))
        .collect::<Result<_, _>>()?;
    merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &hashes)
        .map_err(|e| forked(format!("the consistency proof fails: {e}")))
}
