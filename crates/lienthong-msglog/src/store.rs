//! Where records live: the [`LogStore`] trait, with an in-memory store and a redb store that
//! share one conformance suite (`tests/store_conformance.rs`).
//!
//! A batch (records, the tree nodes it completes, its index entries) is one atomic, durable
//! write: after a crash the store holds exactly the batches whose `append` returned.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

use lienthong_proto::msglog::v1 as pb;
use prost::Message;
use redb::{Database, MultimapTableDefinition, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::LogError;
use crate::merkle::{Hash, NodeReader, ProofError};
use crate::record::Entry;

/// Storage behind a message log.
pub trait LogStore: Send + Sync + 'static {
    /// Number of records (leaves).
    fn size(&self) -> Result<u64, LogError>;
    /// Appends `entries` as records `first..`, with the tree nodes they complete, durably and
    /// atomically. `first` must be the current size.
    fn append(&self, first: u64, entries: &[Entry], nodes: &[(u8, u64, Hash)]) -> Result<(), LogError>;
    /// A record's bytes; `None` once retention has pruned it (its leaf hash stays).
    fn record(&self, index: u64) -> Result<Option<Vec<u8>>, LogError>;
    /// A stored complete-subtree hash (level 0: leaf hashes).
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, LogError>;
    /// Records of an exchange (`X-Road-Id`): request and response, both directions.
    fn by_exchange(&self, message_id: &str) -> Result<Vec<u64>, LogError>;
    /// Records logged in `[from_ms, to_ms)`, oldest first, at most `limit`.
    fn by_time(&self, from_ms: i64, to_ms: i64, limit: usize) -> Result<Vec<u64>, LogError>;
    fn by_client(&self, client: &str) -> Result<Vec<u64>, LogError>;
    fn by_service(&self, service: &str) -> Result<Vec<u64>, LogError>;
    /// Keeps a checkpoint (replacing one of the same tree size, e.g. with a co-signature added).
    fn put_checkpoint(&self, size: u64, signed: &pb::SignedCheckpoint) -> Result<(), LogError>;
    /// Every kept checkpoint, by tree size.
    fn checkpoints(&self) -> Result<Vec<pb::SignedCheckpoint>, LogError>;
    /// Keeps a certificate (DER) that signed checkpoints, for offline verification.
    fn put_certificate(&self, der: &[u8]) -> Result<(), LogError>;
    fn certificates(&self) -> Result<Vec<Vec<u8>>, LogError>;
    /// Retention: drops the bytes of records `..before` (leaf hashes and proofs stay). Returns
    /// how many were dropped.
    fn prune(&self, before: u64) -> Result<u64, LogError>;
    /// After a failed append: brings the store back to where it takes appends (cuts what the
    /// failed append left, reopens what refuses writes) and checks that the disk takes writes
    /// again. An error means it does not yet; the log tries again later.
    fn repair(&self) -> Result<(), LogError> {
        Ok(())
    }
}

/// Adapts a store to the Merkle functions.
#[derive(Debug)]
pub struct StoreNodes<'a, S: ?Sized>(pub &'a S);

impl<S: LogStore + ?Sized> NodeReader for StoreNodes<'_, S> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        self.0.node(level, index).ok().flatten().ok_or(ProofError::Missing { level, index })
    }
}

// ----- in memory -----------------------------------------------------------------------------

#[derive(Default)]
struct Mem {
    records: Vec<Option<Vec<u8>>>,
    nodes: BTreeMap<(u8, u64), Hash>,
    exchange: BTreeMap<String, Vec<u64>>,
    time: BTreeSet<(i64, u64)>,
    client: BTreeMap<String, Vec<u64>>,
    service: BTreeMap<String, Vec<u64>>,
    checkpoints: BTreeMap<u64, pb::SignedCheckpoint>,
    certificates: BTreeSet<Vec<u8>>,
}

/// A store in memory: for tests and for nodes configured without persistence of the log
/// (never in production: nothing survives a restart).
#[derive(Default)]
pub struct MemStore(Mutex<Mem>);

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemStore")
    }
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl LogStore for MemStore {
    fn size(&self) -> Result<u64, LogError> {
        Ok(self.lock().records.len() as u64)
    }

    fn append(&self, first: u64, entries: &[Entry], nodes: &[(u8, u64, Hash)]) -> Result<(), LogError> {
        let mut m = self.lock();
        if first != m.records.len() as u64 {
            return Err(LogError::store_failed(format!(
                "append at {first} but the log has {}",
                m.records.len()
            )));
        }
        for (i, e) in entries.iter().enumerate() {
            let index = first + i as u64;
            m.records.push(Some(e.bytes.clone()));
            m.exchange.entry(e.message_id.clone()).or_default().push(index);
            m.time.insert((e.logged_at_ms, index));
            m.client.entry(e.client.clone()).or_default().push(index);
            m.service.entry(e.service.clone()).or_default().push(index);
        }
        for (level, index, hash) in nodes {
            m.nodes.insert((*level, *index), *hash);
        }
        Ok(())
    }

    fn record(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        let m = self.lock();
        let size = m.records.len() as u64;
        let slot = usize::try_from(index).ok().and_then(|i| m.records.get(i));
        slot.cloned().ok_or(LogError::NoSuchRecord { index, size })
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, LogError> {
        Ok(self.lock().nodes.get(&(level, index)).copied())
    }

    fn by_exchange(&self, message_id: &str) -> Result<Vec<u64>, LogError> {
        Ok(self.lock().exchange.get(message_id).cloned().unwrap_or_default())
    }

    fn by_time(&self, from_ms: i64, to_ms: i64, limit: usize) -> Result<Vec<u64>, LogError> {
        if from_ms >= to_ms {
            // An empty or reversed range (BTreeSet::range would panic on a reversed one).
            return Ok(Vec::new());
        }
        let m = self.lock();
        Ok(m.time.range((from_ms, 0)..(to_ms, 0)).take(limit).map(|(_, i)| *i).collect())
    }

    fn by_client(&self, client: &str) -> Result<Vec<u64>, LogError> {
        Ok(self.lock().client.get(client).cloned().unwrap_or_default())
    }

    fn by_service(&self, service: &str) -> Result<Vec<u64>, LogError> {
        Ok(self.lock().service.get(service).cloned().unwrap_or_default())
    }

    fn put_checkpoint(&self, size: u64, signed: &pb::SignedCheckpoint) -> Result<(), LogError> {
        self.lock().checkpoints.insert(size, signed.clone());
        Ok(())
    }

    fn checkpoints(&self) -> Result<Vec<pb::SignedCheckpoint>, LogError> {
        Ok(self.lock().checkpoints.values().cloned().collect())
    }

    fn put_certificate(&self, der: &[u8]) -> Result<(), LogError> {
        self.lock().certificates.insert(der.to_vec());
        Ok(())
    }

    fn certificates(&self) -> Result<Vec<Vec<u8>>, LogError> {
        Ok(self.lock().certificates.iter().cloned().collect())
    }

    fn prune(&self, before: u64) -> Result<u64, LogError> {
        let mut m = self.lock();
        let end = usize::try_from(before).unwrap_or(usize::MAX).min(m.records.len());
        let mut dropped = 0;
        for slot in &mut m.records[..end] {
            if slot.take().is_some() {
                dropped += 1;
            }
        }
        Ok(dropped)
    }
}

// ----- redb ----------------------------------------------------------------------------------

const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");
const RECORDS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("records");
const NODES: TableDefinition<'static, (u8, u64), &'static [u8]> = TableDefinition::new("nodes");
const BY_TIME: TableDefinition<'static, (i64, u64), ()> = TableDefinition::new("by_time");
const BY_EXCHANGE: MultimapTableDefinition<'static, &'static str, u64> =
    MultimapTableDefinition::new("by_exchange");
const BY_CLIENT: MultimapTableDefinition<'static, &'static str, u64> =
    MultimapTableDefinition::new("by_client");
const BY_SERVICE: MultimapTableDefinition<'static, &'static str, u64> =
    MultimapTableDefinition::new("by_service");
const CHECKPOINTS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("checkpoints");
const CERTIFICATES: TableDefinition<'static, &'static [u8], ()> = TableDefinition::new("certificates");

const SIZE: &str = "size";

/// The durable store: one redb file. Every append is one write transaction committed with
/// `Durability::Immediate` (fsync), so a batch is on disk when `append` returns; redb's
/// checksummed commit makes a torn last transaction invisible after a crash.
pub struct RedbStore {
    db: Database,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbStore")
    }
}

fn st<E: std::error::Error + Send + Sync + 'static>(e: E) -> LogError {
    LogError::storage("", e)
}

/// Checkpoints and signer certificates are kept the same way by both redb-backed stores.
pub(crate) fn write_checkpoint(
    tx: &redb::WriteTransaction,
    size: u64,
    signed: &pb::SignedCheckpoint,
) -> Result<(), LogError> {
    tx.open_table(CHECKPOINTS).map_err(st)?.insert(size, signed.encode_to_vec().as_slice()).map_err(st)?;
    Ok(())
}

pub(crate) fn write_certificate(tx: &redb::WriteTransaction, der: &[u8]) -> Result<(), LogError> {
    tx.open_table(CERTIFICATES).map_err(st)?.insert(der, ()).map_err(st)?;
    Ok(())
}

pub(crate) fn read_checkpoints(db: &impl ReadableDatabase) -> Result<Vec<pb::SignedCheckpoint>, LogError> {
    let tx = db.begin_read().map_err(st)?;
    let t = tx.open_table(CHECKPOINTS).map_err(st)?;
    let mut out = Vec::new();
    for item in t.iter().map_err(st)? {
        let (_, v) = item.map_err(st)?;
        out.push(pb::SignedCheckpoint::decode(v.value()).map_err(|e| LogError::Malformed(e.to_string()))?);
    }
    Ok(out)
}

pub(crate) fn read_certificates(db: &impl ReadableDatabase) -> Result<Vec<Vec<u8>>, LogError> {
    let tx = db.begin_read().map_err(st)?;
    let t = tx.open_table(CERTIFICATES).map_err(st)?;
    let mut out = Vec::new();
    for item in t.iter().map_err(st)? {
        out.push(item.map_err(st)?.0.value().to_vec());
    }
    Ok(out)
}

/// The file name of a node's log inside its log directory.
pub const LOG_FILE: &str = "msglog.redb";

impl RedbStore {
    /// Opens or creates the log in directory `dir` (file [`LOG_FILE`]).
    pub fn open_dir(dir: &Path) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| LogError::storage(dir.display().to_string(), e))?;
        Self::open(&dir.join(LOG_FILE))
    }

    /// Opens or creates the log file at `path`.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        let db = Database::create(path).map_err(|e| LogError::storage(path.display().to_string(), e))?;
        let tx = db.begin_write().map_err(st)?;
        {
            tx.open_table(META).map_err(st)?;
            tx.open_table(RECORDS).map_err(st)?;
            tx.open_table(NODES).map_err(st)?;
            tx.open_table(BY_TIME).map_err(st)?;
            tx.open_multimap_table(BY_EXCHANGE).map_err(st)?;
            tx.open_multimap_table(BY_CLIENT).map_err(st)?;
            tx.open_multimap_table(BY_SERVICE).map_err(st)?;
            tx.open_table(CHECKPOINTS).map_err(st)?;
            tx.open_table(CERTIFICATES).map_err(st)?;
        }
        tx.commit().map_err(st)?;
        Ok(Self { db })
    }

    fn multimap(
        &self,
        table: MultimapTableDefinition<'static, &'static str, u64>,
        key: &str,
    ) -> Result<Vec<u64>, LogError> {
        let tx = self.db.begin_read().map_err(st)?;
        let t = tx.open_multimap_table(table).map_err(st)?;
        let mut out = Vec::new();
        for v in t.get(key).map_err(st)? {
            out.push(v.map_err(st)?.value());
        }
        out.sort_unstable();
        Ok(out)
    }
}

impl LogStore for RedbStore {
    fn size(&self) -> Result<u64, LogError> {
        let tx = self.db.begin_read().map_err(st)?;
        let meta = tx.open_table(META).map_err(st)?;
        Ok(meta.get(SIZE).map_err(st)?.map_or(0, |v| v.value()))
    }

    fn append(&self, first: u64, entries: &[Entry], nodes: &[(u8, u64, Hash)]) -> Result<(), LogError> {
        let tx = self.db.begin_write().map_err(st)?;
        {
            let mut meta = tx.open_table(META).map_err(st)?;
            let size = meta.get(SIZE).map_err(st)?.map_or(0, |v| v.value());
            if size != first {
                return Err(LogError::store_failed(format!("append at {first} but the log has {size}")));
            }
            let mut records = tx.open_table(RECORDS).map_err(st)?;
            let mut time = tx.open_table(BY_TIME).map_err(st)?;
            let mut exchange = tx.open_multimap_table(BY_EXCHANGE).map_err(st)?;
            let mut client = tx.open_multimap_table(BY_CLIENT).map_err(st)?;
            let mut service = tx.open_multimap_table(BY_SERVICE).map_err(st)?;
            for (i, e) in entries.iter().enumerate() {
                let index = first + i as u64;
                records.insert(index, e.bytes.as_slice()).map_err(st)?;
                time.insert((e.logged_at_ms, index), ()).map_err(st)?;
                exchange.insert(e.message_id.as_str(), index).map_err(st)?;
                client.insert(e.client.as_str(), index).map_err(st)?;
                service.insert(e.service.as_str(), index).map_err(st)?;
            }
            let mut tree = tx.open_table(NODES).map_err(st)?;
            for (level, index, hash) in nodes {
                tree.insert((*level, *index), hash.as_slice()).map_err(st)?;
            }
            meta.insert(SIZE, first + entries.len() as u64).map_err(st)?;
        }
        tx.commit().map_err(st)
    }

    fn record(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        let size = self.size()?;
        if index >= size {
            return Err(LogError::NoSuchRecord { index, size });
        }
        let tx = self.db.begin_read().map_err(st)?;
        let t = tx.open_table(RECORDS).map_err(st)?;
        Ok(t.get(index).map_err(st)?.map(|v| v.value().to_vec()))
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, LogError> {
        let tx = self.db.begin_read().map_err(st)?;
        let t = tx.open_table(NODES).map_err(st)?;
        let v = t.get((level, index)).map_err(st)?;
        v.map(|v| {
            v.value()
                .try_into()
                .map_err(|_| LogError::store_failed(format!("node ({level}, {index}) is not 32 bytes")))
        })
        .transpose()
    }

    fn by_exchange(&self, message_id: &str) -> Result<Vec<u64>, LogError> {
        self.multimap(BY_EXCHANGE, message_id)
    }

    fn by_time(&self, from_ms: i64, to_ms: i64, limit: usize) -> Result<Vec<u64>, LogError> {
        let tx = self.db.begin_read().map_err(st)?;
        let t = tx.open_table(BY_TIME).map_err(st)?;
        let mut out = Vec::new();
        for item in t.range((from_ms, 0)..(to_ms, 0)).map_err(st)?.take(limit) {
            out.push(item.map_err(st)?.0.value().1);
        }
        Ok(out)
    }

    fn by_client(&self, client: &str) -> Result<Vec<u64>, LogError> {
        self.multimap(BY_CLIENT, client)
    }

    fn by_service(&self, service: &str) -> Result<Vec<u64>, LogError> {
        self.multimap(BY_SERVICE, service)
    }

    fn put_checkpoint(&self, size: u64, signed: &pb::SignedCheckpoint) -> Result<(), LogError> {
        let tx = self.db.begin_write().map_err(st)?;
        write_checkpoint(&tx, size, signed)?;
        tx.commit().map_err(st)
    }

    fn checkpoints(&self) -> Result<Vec<pb::SignedCheckpoint>, LogError> {
        read_checkpoints(&self.db)
    }

    fn put_certificate(&self, der: &[u8]) -> Result<(), LogError> {
        let tx = self.db.begin_write().map_err(st)?;
        write_certificate(&tx, der)?;
        tx.commit().map_err(st)
    }

    fn certificates(&self) -> Result<Vec<Vec<u8>>, LogError> {
        read_certificates(&self.db)
    }

    fn prune(&self, before: u64) -> Result<u64, LogError> {
        let tx = self.db.begin_write().map_err(st)?;
        let dropped = {
            let mut records = tx.open_table(RECORDS).map_err(st)?;
            let mut n = 0;
            let existing: Vec<u64> = records
                .range(..before)
                .map_err(st)?
                .map(|item| item.map(|(k, _)| k.value()).map_err(st))
                .collect::<Result<_, _>>()?;
            for index in existing {
                records.remove(index).map_err(st)?;
                n += 1;
            }
            n
        };
        tx.commit().map_err(st)?;
        Ok(dropped)
    }
}
