//! [`SegmentStore`]: records in append-only segment files, everything else in a redb index.
//!
//! Layout of a log directory:
//!
//! - `segments/<first index, 20 digits>.seg`: the records, each one frame
//!   `[u32 LE body length][u32 LE CRC-32 of the body][body]`, where the body is the record's
//!   index keys followed by its bytes (`[i64 LE logged_at_ms]`, then message id, client and
//!   service each as `[u32 LE length][UTF-8]`, then the record bytes). The keys are in the frame
//!   so the indexes can be rebuilt from the segments alone. A new segment starts (at a batch
//!   boundary) once the current one has passed [`SegmentConfig::segment_bytes`].
//! - `index.redb` ([`INDEX_FILE`]): the tree nodes, where each batch's records are (segment,
//!   offset, frame lengths: one entry per batch), the four indexes (as `(key, record)` tables),
//!   the size, the end of the last indexed record, the prune marker, checkpoints and
//!   certificates.
//!
//! An `append` hands all frames of the batch to a long-lived sync thread, which writes them with
//! one positional write and `fdatasync`s the segment, while the calling (log writer) thread
//! builds the batch's index entries in a redb write transaction. That transaction is committed
//! (with `Durability::None`, no fsync) only once the `fdatasync` has returned, and aborted if the
//! write failed: the index never names a frame that is not durable, so no later commit (a
//! periodic durable one, or the one redb makes of pending commits when the database closes on a
//! clean shutdown) can persist an index past the segments. `append` returns once both are done.
//! Every [`SegmentConfig::durable_every_batches`] batches or [`SegmentConfig::durable_every`]
//! (checked on append), on checkpoints, certificates, pruning and on drop, a durable index commit
//! follows.
//!
//! A failed append leaves the store as it was: the active segment is cut back to its
//! acknowledged length and the index transaction is dropped. If the cut fails, or redb latched
//! an I/O error (it then refuses every transaction until the database is reopened), appends are
//! refused until [`LogStore::repair`] succeeds: it cuts the segment, reopens the index if it must
//! (replaying the segments past its last durable commit, as at open), and checks that the disk
//! takes writes again. `MessageLog` calls it with back-off, so the log recovers by itself once
//! space returns, without a restart.
//!
//! Recovery at open: redb reverts to its last durable commit, which names the index size it
//! covers and where its last record ends. The segments are scanned from there: every complete
//! frame with a valid CRC is replayed (leaf hash, tree nodes, location, indexes); the first
//! incomplete or CRC-failing frame is a torn tail, cut off (with any later segment file) and
//! logged. Nothing acknowledged is cut, because an acknowledged batch was `fdatasync`ed whole;
//! a torn tail can only be a batch that was never acknowledged. Deleting `index.redb` rebuilds
//! it from all segments (unless retention has already deleted the first ones).
//!
//! Retention ([`LogStore::prune`]) is exact for readers: `record(i)` is `None` for every pruned
//! index (a marker in the index). On disk it works by whole segments: a segment file is deleted
//! once every record in it is pruned; bytes of records in a partially pruned segment (and in the
//! segment holding the newest record) stay until the segment is wholly covered.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use lienthong_proto::msglog::v1 as pb;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::error::LogError;
use crate::merkle::{self, Frontier, Hash, NodeReader, ProofError};
use crate::record::Entry;
use crate::store::{self, LogStore};

/// The index file inside a segment store's directory.
pub const INDEX_FILE: &str = "index.redb";
/// The directory of segment files inside a segment store's directory.
pub const SEGMENTS_DIR: &str = "segments";

const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");
/// Where records are, one entry per appended batch: the batch's first record index ->
/// `[u64 LE segment (its first index)][u64 LE offset of the first frame][u32 LE frame length]...`
/// (the batch's frames are consecutive in one segment). One entry per batch, not per record:
/// it keeps the index work on the acknowledgement path small.
const LOCATIONS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("locations");
const NODES: TableDefinition<'static, (u8, u64), &'static [u8]> = TableDefinition::new("nodes");
const BY_TIME: TableDefinition<'static, (i64, u64), ()> = TableDefinition::new("by_time");
/// The key-to-records indexes, as (key, record index) -> () (cheaper to insert than multimaps).
type KeyIndex = TableDefinition<'static, (&'static str, u64), ()>;
const BY_EXCHANGE: KeyIndex = TableDefinition::new("by_exchange");
const BY_CLIENT: KeyIndex = TableDefinition::new("by_client");
const BY_SERVICE: KeyIndex = TableDefinition::new("by_service");
/// The message ids of batches not yet merged into `BY_EXCHANGE`: batch's first record index ->
/// `[u32 LE length][id bytes]` per record. Message ids are random, so inserting them one by one
/// dirties a leaf page per record; they are appended here per batch (one sequential insert)
/// and merged, sorted, at each durable commit. `by_exchange` reads both.
const PENDING_EXCHANGE: TableDefinition<'static, u64, &'static [u8]> =
    TableDefinition::new("pending_exchange");
const CHECKPOINTS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("checkpoints");
const CERTIFICATES: TableDefinition<'static, &'static [u8], ()> = TableDefinition::new("certificates");

/// Records the index covers.
const SIZE: &str = "size";
/// The segment holding the last indexed record, and the offset just past it.
const END_SEGMENT: &str = "end_segment";
const END_OFFSET: &str = "end_offset";
/// Records `..pruned_before` are pruned.
const PRUNED_BEFORE: &str = "pruned_before";

/// Frame header: body length and CRC-32.
const HEADER: usize = 8;

/// What a repair writes (and cuts again) to see that the disk takes writes.
const REPAIR_PROBE_BYTES: usize = 64 << 10;

/// Tuning of a [`SegmentStore`].
#[derive(Debug, Clone, Copy)]
pub struct SegmentConfig {
    /// A new segment file starts once the current one is at least this large.
    pub segment_bytes: u64,
    /// A durable index commit at least every this many appends...
    pub durable_every_batches: u32,
    /// ...and at least this often (checked on append).
    pub durable_every: Duration,
    /// The index's page cache. redb's own default is 1 GiB, which a node's resident memory
    /// grows into as its log grows; the index is written at its tail and read by key, so a
    /// small cache holds what is hot.
    pub index_cache_bytes: usize,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            durable_every_batches: 64,
            durable_every: Duration::from_millis(250),
            index_cache_bytes: DEFAULT_INDEX_CACHE,
        }
    }
}

/// See [`SegmentConfig::index_cache_bytes`]; measured in `docs/performance.md`.
pub const DEFAULT_INDEX_CACHE: usize = 16 << 20;

fn st<E: std::error::Error + Send + Sync + 'static>(e: E) -> LogError {
    LogError::storage("", e)
}

fn io(path: &Path, e: std::io::Error) -> LogError {
    LogError::storage(path.display().to_string(), e)
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

/// Appends one frame for `e` to `out`; returns the frame length.
fn encode_frame(out: &mut Vec<u8>, e: &Entry) -> Result<u32, LogError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&e.logged_at_ms.to_le_bytes());
    for key in [&e.message_id, &e.client, &e.service] {
        let len = u32::try_from(key.len()).map_err(|_| LogError::store_failed("index key too long"))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(key.as_bytes());
    }
    out.extend_from_slice(&e.bytes);
    let body_len = u32::try_from(out.len() - start - HEADER)
        .map_err(|_| LogError::store_failed("record too large for a segment frame"))?;
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    u32::try_from(out.len() - start).map_err(|_| LogError::store_failed("record too large"))
}

/// Splits a frame body into its entry (keys and record bytes); `None` if malformed.
fn decode_body(body: &[u8]) -> Option<Entry> {
    let (at, mut rest) = body.split_first_chunk::<8>()?;
    let mut keys = Vec::with_capacity(3);
    for _ in 0..3 {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        if tail.len() < len {
            return None;
        }
        let (key, tail) = tail.split_at(len);
        keys.push(String::from_utf8(key.to_vec()).ok()?);
        rest = tail;
    }
    let service = keys.pop()?;
    let client = keys.pop()?;
    let message_id = keys.pop()?;
    Some(Entry { bytes: rest.to_vec(), message_id, logged_at_ms: i64::from_le_bytes(*at), client, service })
}

/// The first frame of `data`: its body, or `None` if `data` does not start with a complete
/// frame whose CRC matches.
fn next_frame(data: &[u8]) -> Option<&[u8]> {
    let (head, rest) = data.split_first_chunk::<HEADER>()?;
    let len = usize::try_from(u32::from_le_bytes([head[0], head[1], head[2], head[3]])).ok()?;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let body = rest.get(..len)?;
    (crc32fast::hash(body) == crc).then_some(body)
}

/// The index's position: size, end of the last record, prune marker.
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    size: u64,
    end_segment: u64,
    end_offset: u64,
}

/// Writes a batch's index entries (and the position after it) into `tx`.
fn index_batch(
    tx: &WriteTransaction,
    first: u64,
    entries: &[Entry],
    locations: &[(u64, u64, u32)],
    nodes: &[(u8, u64, Hash)],
    after: Position,
) -> Result<(), LogError> {
    let mut meta = tx.open_table(META).map_err(st)?;
    let mut locs = tx.open_table(LOCATIONS).map_err(st)?;
    let mut time = tx.open_table(BY_TIME).map_err(st)?;
    let mut pending = tx.open_table(PENDING_EXCHANGE).map_err(st)?;
    let mut client = tx.open_table(BY_CLIENT).map_err(st)?;
    let mut service = tx.open_table(BY_SERVICE).map_err(st)?;
    if let Some(&(segment, offset, _)) = locations.first() {
        let mut run = Vec::with_capacity(16 + 4 * locations.len());
        run.extend_from_slice(&segment.to_le_bytes());
        run.extend_from_slice(&offset.to_le_bytes());
        let mut next = offset;
        for &(s, at, len) in locations {
            if s != segment || at != next {
                return Err(LogError::store_failed("a batch's frames must be consecutive in one segment"));
            }
            run.extend_from_slice(&len.to_le_bytes());
            next += u64::from(len);
        }
        locs.insert(first, run.as_slice()).map_err(st)?;
    }
    let mut ids = Vec::with_capacity(entries.iter().map(|e| 4 + e.message_id.len()).sum());
    for (i, e) in entries.iter().enumerate() {
        let index = first + i as u64;
        time.insert((e.logged_at_ms, index), ()).map_err(st)?;
        ids.extend_from_slice(&u32::try_from(e.message_id.len()).map_err(st)?.to_le_bytes());
        ids.extend_from_slice(e.message_id.as_bytes());
        client.insert((e.client.as_str(), index), ()).map_err(st)?;
        service.insert((e.service.as_str(), index), ()).map_err(st)?;
    }
    if !entries.is_empty() {
        pending.insert(first, ids.as_slice()).map_err(st)?;
    }
    let mut tree = tx.open_table(NODES).map_err(st)?;
    for (level, index, hash) in nodes {
        tree.insert((*level, *index), hash.as_slice()).map_err(st)?;
    }
    meta.insert(SIZE, after.size).map_err(st)?;
    meta.insert(END_SEGMENT, after.end_segment).map_err(st)?;
    meta.insert(END_OFFSET, after.end_offset).map_err(st)?;
    Ok(())
}

/// The message ids of a pending batch, in record order.
fn pending_ids(blob: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = blob;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        let id = tail.get(..len)?;
        rest = &tail[len..];
        Some(id)
    })
}

/// Moves the pending message ids into `BY_EXCHANGE`, in key order (one pass over the tree).
fn merge_pending_exchange(tx: &WriteTransaction) -> Result<(), LogError> {
    let mut pending = tx.open_table(PENDING_EXCHANGE).map_err(st)?;
    let mut merged: Vec<(Vec<u8>, u64)> = Vec::new();
    let mut batches = Vec::new();
    for item in pending.iter().map_err(st)? {
        let (first, blob) = item.map_err(st)?;
        let first = first.value();
        batches.push(first);
        merged.extend(pending_ids(blob.value()).enumerate().map(|(i, id)| (id.to_vec(), first + i as u64)));
    }
    if batches.is_empty() {
        return Ok(());
    }
    merged.sort_unstable();
    let mut exchange = tx.open_table(BY_EXCHANGE).map_err(st)?;
    for (id, index) in &merged {
        let id = std::str::from_utf8(id).map_err(st)?;
        exchange.insert((id, *index), ()).map_err(st)?;
    }
    for first in batches {
        pending.remove(first).map_err(st)?;
    }
    Ok(())
}

fn write_tx(db: &Database, durable: bool) -> Result<WriteTransaction, LogError> {
    let mut tx = db.begin_write().map_err(st)?;
    tx.set_durability(if durable { Durability::Immediate } else { Durability::None }).map_err(st)?;
    Ok(tx)
}

/// Reads tree nodes straight from the index (for rebuilding the frontier at open).
struct DbNodes<'a>(&'a Database);

impl NodeReader for DbNodes<'_> {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        read_node(self.0, level, index).ok().flatten().ok_or(ProofError::Missing { level, index })
    }
}

fn read_node(db: &Database, level: u8, index: u64) -> Result<Option<Hash>, LogError> {
    let tx = db.begin_read().map_err(st)?;
    let t = tx.open_table(NODES).map_err(st)?;
    let v = t.get((level, index)).map_err(st)?;
    v.map(|v| {
        v.value()
            .try_into()
            .map_err(|_| LogError::store_failed(format!("node ({level}, {index}) is not 32 bytes")))
    })
    .transpose()
}

/// Batches of fewer records are written and synced on the writer thread itself.
const INLINE_SYNC_BELOW: usize = 8;

/// A batch's frames to write at `at` in `file` and `fdatasync`.
struct SyncJob {
    file: Arc<File>,
    at: u64,
    frames: Vec<u8>,
}

/// The outcome of a [`SyncJob`]: the write and `fdatasync` result, and the bytes written.
type SyncDone = (std::io::Result<()>, u64);
type SyncReply = std::sync::mpsc::Receiver<SyncDone>;
type SyncQueue = std::sync::mpsc::Sender<(SyncJob, std::sync::mpsc::SyncSender<SyncDone>)>;

/// A long-lived thread (spawning one per batch costs more than the fdatasync on a small VM)
/// that writes a batch's frames and waits for the disk, while the writer builds the index.
struct Syncer {
    jobs: Option<SyncQueue>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start() -> Result<Self, LogError> {
        let (jobs, queue) = std::sync::mpsc::channel::<(SyncJob, std::sync::mpsc::SyncSender<SyncDone>)>();
        let thread = std::thread::Builder::new()
            .name("msglog-segment-sync".into())
            .spawn(move || {
                for (job, reply) in queue {
                    let result =
                        job.file.write_all_at(&job.frames, job.at).and_then(|()| job.file.sync_data());
                    let _ = reply.send((result, job.frames.len() as u64));
                }
            })
            .map_err(st)?;
        Ok(Self { jobs: Some(jobs), thread: Some(thread) })
    }

    fn submit(&self, job: SyncJob) -> Result<SyncReply, LogError> {
        let (reply, done) = std::sync::mpsc::sync_channel(1);
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send((job, reply)).ok())
            .ok_or_else(|| LogError::store_failed("the segment sync thread is gone"))?;
        Ok(done)
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The append side, behind one lock: only the log's writer appends.
struct Writer {
    /// The newest segment, open for writing.
    active: Arc<File>,
    active_first: u64,
    /// Bytes of the active segment that hold acknowledged frames.
    active_len: u64,
    /// Where the last record ends (may be an older segment right after a rotation).
    position: Position,
    batches_since_durable: u32,
    last_durable: Instant,
    /// Set when a failed append could not be undone (the segment may hold garbage past the
    /// end, or redb latched an I/O error): no further appends are taken until a repair.
    poisoned: Option<String>,
}

/// The durable store with records in append-only segment files and a redb index; see the
/// [module documentation](self).
pub struct SegmentStore {
    dir: PathBuf,
    segments: PathBuf,
    /// The index; `None` only while [`LogStore::repair`] reopens it (redb holds a lock on the
    /// file, so the old handle must be gone before the new one opens).
    db: RwLock<Option<Database>>,
    config: SegmentConfig,
    writer: Mutex<Writer>,
    /// The thread that writes and `fdatasync`s segment frames while the writer indexes.
    syncer: Syncer,
    /// Read handles of every segment file, by first index.
    readers: RwLock<BTreeMap<u64, Arc<File>>>,
    size: AtomicU64,
    pruned_before: AtomicU64,
}

/// A read handle of the open index.
struct Index<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for Index<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        // `SegmentStore::index` hands out an `Index` only for `Some`.
        self.0.as_ref().expect("checked when the Index was made")
    }
}

impl std::fmt::Debug for SegmentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// Segment files in `segments`, by first index.
fn list_segments(segments: &Path) -> Result<BTreeMap<u64, PathBuf>, LogError> {
    let mut out = BTreeMap::new();
    for item in std::fs::read_dir(segments).map_err(|e| io(segments, e))? {
        let item = item.map_err(|e| io(segments, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else { continue };
        if stem.len() == 20
            && let Ok(first) = stem.parse::<u64>()
        {
            out.insert(first, item.path());
        }
    }
    Ok(out)
}

impl SegmentStore {
    /// Opens or creates the log in directory `dir`, with the default [`SegmentConfig`].
    pub fn open_dir(dir: &Path) -> Result<Self, LogError> {
        Self::open_dir_with(dir, SegmentConfig::default())
    }

    /// Opens or creates the log in directory `dir`, recovering a torn tail (see the module
    /// documentation).
    pub fn open_dir_with(dir: &Path, config: SegmentConfig) -> Result<Self, LogError> {
        let segments = dir.join(SEGMENTS_DIR);
        if !segments.is_dir() {
            std::fs::create_dir_all(&segments).map_err(|e| io(&segments, e))?;
            sync_dir(dir)?;
        }
        let db = open_index(dir, &config)?;
        let (position, pruned_before) = read_position(&db)?;
        let mut files = list_segments(&segments)?;
        let position = recover(&db, &segments, &mut files, position)?;
        if files.is_empty() {
            let path = segments.join(segment_name(0));
            File::create_new(&path).map_err(|e| io(&path, e))?;
            sync_dir(&segments)?;
            files.insert(0, path);
        }

        let mut readers = BTreeMap::new();
        for (&first, path) in &files {
            readers.insert(first, Arc::new(File::open(path).map_err(|e| io(path, e))?));
        }
        let (&active_first, active_path) = files.last_key_value().expect("at least one segment");
        let active = OpenOptions::new().write(true).open(active_path).map_err(|e| io(active_path, e))?;
        let active_len = active.metadata().map_err(|e| io(active_path, e))?.len();
        let writer = Writer {
            active: Arc::new(active),
            active_first,
            active_len,
            position,
            batches_since_durable: 0,
            last_durable: Instant::now(),
            poisoned: None,
        };
        Ok(Self {
            dir: dir.to_owned(),
            segments,
            db: RwLock::new(Some(db)),
            config,
            writer: Mutex::new(writer),
            syncer: Syncer::start()?,
            readers: RwLock::new(readers),
            size: AtomicU64::new(position.size),
            pruned_before: AtomicU64::new(pruned_before),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts segment `first` and makes it the active one.
    fn rotate(&self, w: &mut Writer, first: u64) -> Result<(), LogError> {
        let path = self.segments.join(segment_name(first));
        let file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| io(&path, e))?;
        sync_dir(&self.segments)?;
        let reader = File::open(&path).map_err(|e| io(&path, e))?;
        self.readers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(first, Arc::new(reader));
        w.active = Arc::new(file);
        w.active_first = first;
        w.active_len = 0;
        Ok(())
    }

    /// The open index, or an error while a repair reopens it.
    fn index(&self) -> Result<Index<'_>, LogError> {
        let guard = self.db.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none() {
            return Err(LogError::store_failed("the message log's index is being reopened"));
        }
        Ok(Index(guard))
    }

    /// Cuts what a failed append may have written to the active segment.
    fn undo(w: &mut Writer) {
        if let Err(e) = w.active.set_len(w.active_len).and_then(|()| w.active.sync_data()) {
            tracing::error!(error = %e, "could not cut a failed append from the segment; refusing appends");
            w.poisoned = Some(format!("a failed append could not be undone ({e})"));
        }
    }

    /// Brings the store back to a writable state after a failed append; see the module
    /// documentation. Cheap when there is nothing to repair.
    fn repair_locked(&self, w: &mut Writer) -> Result<(), LogError> {
        let active = self.segments.join(segment_name(w.active_first));
        // Anything past the acknowledged end is a failed append's.
        w.active.set_len(w.active_len).and_then(|()| w.active.sync_data()).map_err(|e| io(&active, e))?;
        // Does the index still take writes? After a latched I/O error redb refuses every
        // transaction until it is reopened.
        if let Err(e) = self.durable_commit() {
            tracing::warn!(error = %e, "the message log's index refuses writes; reopening it");
            self.reopen_index(w)?;
        }
        // Does the disk take writes again? A probe past the end of the active segment, cut
        // again: without it a store on a full disk would be "repaired" and fail the next batch.
        let probe = vec![0u8; REPAIR_PROBE_BYTES];
        let probed = w.active.write_all_at(&probe, w.active_len).and_then(|()| w.active.sync_data());
        let cut = w.active.set_len(w.active_len).and_then(|()| w.active.sync_data());
        probed.and(cut).map_err(|e| io(&active, e))?;
        w.poisoned = None;
        Ok(())
    }

    /// Drops and reopens the index, replaying the segments past its last durable commit (as at
    /// open). It must then cover exactly the acknowledged records.
    fn reopen_index(&self, w: &mut Writer) -> Result<(), LogError> {
        let mut slot = self.db.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(slot.take());
        let db = open_index(&self.dir, &self.config)?;
        let (durable, _) = read_position(&db)?;
        let mut files = list_segments(&self.segments)?;
        let position = recover(&db, &self.segments, &mut files, durable)?;
        if position.size != w.position.size {
            return Err(LogError::store_failed(format!(
                "the reopened index covers {} records, but {} were acknowledged",
                position.size, w.position.size
            )));
        }
        *slot = Some(db);
        tracing::info!(size = position.size, "message log index reopened");
        Ok(())
    }

    /// The records indexed under `key`, in order.
    fn by_key(&self, table: KeyIndex, key: &str) -> Result<Vec<u64>, LogError> {
        let db = self.index()?;
        let tx = db.begin_read().map_err(st)?;
        let t = tx.open_table(table).map_err(st)?;
        let mut out = Vec::new();
        // Only durable records (the index may already name the batch being synced).
        let size = self.size.load(Ordering::Acquire);
        for item in t.range((key, 0)..(key, size)).map_err(st)? {
            out.push(item.map_err(st)?.0.value().1);
        }
        Ok(out)
    }

    /// A durable write transaction, taken with the writer lock held (so that it never races a
    /// repair that reopens the index).
    fn durable_tx(&self) -> Result<WriteTransaction, LogError> {
        write_tx(&*self.index()?, true)
    }

    /// A durable commit that changes nothing else (flushes every `Durability::None` commit).
    fn durable_commit(&self) -> Result<(), LogError> {
        let tx = self.durable_tx()?;
        merge_pending_exchange(&tx)?;
        {
            let mut meta = tx.open_table(META).map_err(st)?;
            let size = meta.get(SIZE).map_err(st)?.map_or(0, |v| v.value());
            meta.insert(SIZE, size).map_err(st)?;
        }
        tx.commit().map_err(st)
    }
}

fn io_redb(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> LogError {
    LogError::storage(path.display().to_string(), e)
}

/// Opens (or creates) the index of the store in `dir`, with every table.
fn open_index(dir: &Path, config: &SegmentConfig) -> Result<Database, LogError> {
    let index_path = dir.join(INDEX_FILE);
    let db = Database::builder()
        .set_cache_size(config.index_cache_bytes)
        .create(&index_path)
        .map_err(|e| io_redb(&index_path, e))?;
    let tx = db.begin_write().map_err(st)?;
    tx.open_table(META).map_err(st)?;
    tx.open_table(LOCATIONS).map_err(st)?;
    tx.open_table(NODES).map_err(st)?;
    tx.open_table(BY_TIME).map_err(st)?;
    tx.open_table(BY_EXCHANGE).map_err(st)?;
    tx.open_table(PENDING_EXCHANGE).map_err(st)?;
    tx.open_table(BY_CLIENT).map_err(st)?;
    tx.open_table(BY_SERVICE).map_err(st)?;
    tx.open_table(CHECKPOINTS).map_err(st)?;
    tx.open_table(CERTIFICATES).map_err(st)?;
    tx.commit().map_err(st)?;
    Ok(db)
}

/// The index's durable position and prune marker.
fn read_position(db: &Database) -> Result<(Position, u64), LogError> {
    let tx = db.begin_read().map_err(st)?;
    let meta = tx.open_table(META).map_err(st)?;
    let get =
        |key: &str| -> Result<u64, LogError> { Ok(meta.get(key).map_err(st)?.map_or(0, |v| v.value())) };
    Ok((
        Position { size: get(SIZE)?, end_segment: get(END_SEGMENT)?, end_offset: get(END_OFFSET)? },
        get(PRUNED_BEFORE)?,
    ))
}

/// Replays the segments past the durable index position, cutting a torn tail. Returns the
/// position after replay (committed durably if anything changed).
fn recover(
    db: &Database,
    segments: &Path,
    files: &mut BTreeMap<u64, PathBuf>,
    durable: Position,
) -> Result<Position, LogError> {
    let Some((&first_segment, _)) = files.first_key_value() else {
        if durable.size > 0 {
            return Err(LogError::store_failed(format!(
                "{}: no segment files, but the index holds {} records",
                segments.display(),
                durable.size
            )));
        }
        return Ok(durable);
    };
    let start_segment = if durable.size == 0 {
        if first_segment != 0 {
            return Err(LogError::store_failed(format!(
                "{}: the index is empty but the first segment starts at record {first_segment} \
                 (earlier segments were pruned): the tree cannot be rebuilt",
                segments.display()
            )));
        }
        0
    } else {
        if !files.contains_key(&durable.end_segment) {
            return Err(LogError::store_failed(format!(
                "{}: segment {} holding record {} is missing",
                segments.display(),
                segment_name(durable.end_segment),
                durable.size - 1
            )));
        }
        durable.end_segment
    };
    let mut frontier = Frontier::from_store(&DbNodes(db), durable.size)?;
    let mut position = durable;
    let mut replayed = 0u64;
    let mut changed = false;
    let later: Vec<(u64, PathBuf)> =
        files.range(start_segment..).map(|(first, path)| (*first, path.clone())).collect();
    for (i, (first, path)) in later.iter().enumerate() {
        let from = if *first == start_segment && durable.size > 0 { durable.end_offset } else { 0 };
        if *first != start_segment && *first != position.size {
            return Err(LogError::store_failed(format!(
                "{}: segment starts at record {first}, but the previous one ends at {}",
                path.display(),
                position.size
            )));
        }
        let data = std::fs::read(path).map_err(|e| io(path, e))?;
        let Some(tail) = usize::try_from(from).ok().and_then(|f| data.get(f..)) else {
            return Err(LogError::store_failed(format!(
                "{}: {} bytes, but the index says acknowledged records end at {from}",
                path.display(),
                data.len()
            )));
        };
        let mut offset = 0usize;
        let mut batch: Vec<Entry> = Vec::new();
        let mut locations = Vec::new();
        let mut nodes = Vec::new();
        let mut batch_first = position.size;
        while offset < tail.len() {
            let Some(entry) = next_frame(&tail[offset..]).and_then(decode_body) else { break };
            let frame_len = HEADER + entry_body_len(&tail[offset..]);
            let at = from + offset as u64;
            nodes.extend(frontier.append(merkle::leaf_hash(&entry.bytes)));
            locations.push((*first, at, u32::try_from(frame_len).map_err(st)?));
            batch.push(entry);
            offset += frame_len;
            position =
                Position { size: position.size + 1, end_segment: *first, end_offset: from + offset as u64 };
            if batch.len() >= 4096 {
                let tx = write_tx(db, false)?;
                index_batch(&tx, batch_first, &batch, &locations, &nodes, position)?;
                tx.commit().map_err(st)?;
                replayed += batch.len() as u64;
                batch_first = position.size;
                batch.clear();
                locations.clear();
                nodes.clear();
            }
        }
        if !batch.is_empty() {
            let tx = write_tx(db, false)?;
            index_batch(&tx, batch_first, &batch, &locations, &nodes, position)?;
            tx.commit().map_err(st)?;
            replayed += batch.len() as u64;
        }
        if offset < tail.len() {
            // A torn tail: cut it, and every later segment file.
            let keep = from + offset as u64;
            let file = OpenOptions::new().write(true).open(path).map_err(|e| io(path, e))?;
            file.set_len(keep).map_err(|e| io(path, e))?;
            file.sync_all().map_err(|e| io(path, e))?;
            let mut cut = (tail.len() - offset) as u64;
            for (first, later_path) in &later[i + 1..] {
                cut += std::fs::metadata(later_path).map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(later_path).map_err(|e| io(later_path, e))?;
                files.remove(first);
            }
            sync_dir(segments)?;
            tracing::warn!(
                segment = %path.display(),
                offset = keep,
                bytes = cut,
                "cut a torn tail off the message log (an append that was never acknowledged)"
            );
            changed = true;
            break;
        }
    }
    if replayed > 0 || changed {
        tracing::info!(records = replayed, size = position.size, "message log index replayed from segments");
        let tx = write_tx(db, true)?;
        merge_pending_exchange(&tx)?;
        {
            let mut meta = tx.open_table(META).map_err(st)?;
            meta.insert(SIZE, position.size).map_err(st)?;
            meta.insert(END_SEGMENT, position.end_segment).map_err(st)?;
            meta.insert(END_OFFSET, position.end_offset).map_err(st)?;
        }
        tx.commit().map_err(st)?;
    }
    Ok(position)
}

/// The `pos`-th record of a batch's location entry: (segment, offset, frame length).
fn locate(run: &[u8], pos: u64) -> Option<(u64, u64, u32)> {
    let (segment, rest) = run.split_first_chunk::<8>()?;
    let (offset, lens) = rest.split_first_chunk::<8>()?;
    let pos = usize::try_from(pos).ok()?;
    let mut at = u64::from_le_bytes(*offset);
    let mut lens = lens.chunks_exact(4).map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]));
    for len in lens.by_ref().take(pos) {
        at += u64::from(len);
    }
    Some((u64::from_le_bytes(*segment), at, lens.next()?))
}

/// The body length of a frame already checked by [`next_frame`].
fn entry_body_len(frame: &[u8]) -> usize {
    u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize
}

impl LogStore for SegmentStore {
    fn size(&self) -> Result<u64, LogError> {
        Ok(self.size.load(Ordering::Acquire))
    }

    fn append(&self, first: u64, entries: &[Entry], nodes: &[(u8, u64, Hash)]) -> Result<(), LogError> {
        let mut w = self.lock();
        if let Some(why) = &w.poisoned {
            return Err(LogError::store_failed(format!("{why}; waiting for a repair")));
        }
        if first != w.position.size {
            return Err(LogError::store_failed(format!(
                "append at {first} but the log has {}",
                w.position.size
            )));
        }
        if !entries.is_empty() && w.active_len >= self.config.segment_bytes {
            self.rotate(&mut w, first)?;
        }
        let mut frames = Vec::with_capacity(entries.iter().map(|e| e.bytes.len() + 96).sum());
        let mut locations = Vec::with_capacity(entries.len());
        for e in entries {
            let at = w.active_len + frames.len() as u64;
            let len = encode_frame(&mut frames, e)?;
            locations.push((w.active_first, at, len));
        }
        let after = if entries.is_empty() {
            w.position
        } else {
            Position {
                size: first + entries.len() as u64,
                end_segment: w.active_first,
                end_offset: w.active_len + frames.len() as u64,
            }
        };
        let durable = w.batches_since_durable + 1 >= self.config.durable_every_batches
            || w.last_durable.elapsed() >= self.config.durable_every;
        // The segment write and its fdatasync (waiting on the disk) run on a helper thread
        // while this one builds the index (CPU). The index is committed only once the frames
        // are durable, and dropped if they are not: it never names a frame that a crash, or the
        // commit redb makes of pending commits when it closes, could outlive.
        // A small batch indexes in less time than the hand-over to the sync thread and back
        // costs (two context switches): it is written and synced here, after its index.
        let inline = entries.len() < INLINE_SYNC_BELOW;
        let mut frames = Some(frames);
        let pending = frames
            .take_if(|f| !f.is_empty() && !inline)
            .map(|frames| self.syncer.submit(SyncJob { file: w.active.clone(), at: w.active_len, frames }))
            .transpose()?;
        let db = self.index()?;
        let indexed = write_tx(&db, false).and_then(|tx| {
            index_batch(&tx, first, entries, &locations, nodes, after)?;
            Ok(tx)
        });
        let (written, frames_len) = match (pending, frames) {
            (Some(done), _) => match done.recv() {
                Ok((result, len)) => (result, len),
                Err(_) => (Err(std::io::Error::other("the segment sync thread is gone")), 0),
            },
            (None, Some(f)) if !f.is_empty() => {
                (w.active.write_all_at(&f, w.active_len).and_then(|()| w.active.sync_data()), f.len() as u64)
            }
            (None, _) => (Ok(()), 0),
        };
        let committed = match (written, indexed) {
            (Ok(()), Ok(tx)) => tx.commit().map_err(st),
            (Err(e), indexed) => {
                if let Ok(tx) = indexed {
                    let _ = tx.abort();
                }
                Err(LogError::storage(format!("segment {}", segment_name(w.active_first)), e))
            }
            (Ok(()), Err(e)) => Err(e),
        };
        drop(db);
        if let Err(e) = committed {
            // Nothing names what was written: cut it, so the segment ends where the index does.
            Self::undo(&mut w);
            return Err(e);
        }
        if durable && let Err(e) = self.durable_commit() {
            // The batch is durable in its segment; the index catches up from there at open.
            tracing::warn!(error = %e, "durable index commit failed");
        }
        w.active_len += frames_len;
        w.position = after;
        if durable {
            w.batches_since_durable = 0;
            w.last_durable = Instant::now();
        } else {
            w.batches_since_durable += 1;
        }
        self.size.store(after.size, Ordering::Release);
        Ok(())
    }

    fn record(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        let size = self.size.load(Ordering::Acquire);
        if index >= size {
            return Err(LogError::NoSuchRecord { index, size });
        }
        if index < self.pruned_before.load(Ordering::Acquire) {
            return Ok(None);
        }
        let (segment, offset, len) = {
            let db = self.index()?;
            let tx = db.begin_read().map_err(st)?;
            let t = tx.open_table(LOCATIONS).map_err(st)?;
            let run = t.range(..=index).map_err(st)?.next_back().transpose().map_err(st)?;
            run.and_then(|(first, run)| locate(run.value(), index - first.value())).ok_or_else(|| {
                LogError::store_failed(format!("record {index} has no location in the index"))
            })?
        };
        let file =
            self.readers.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&segment).cloned();
        let Some(file) = file else {
            // Pruned meanwhile (the marker moves before files are deleted).
            if index < self.pruned_before.load(Ordering::Acquire) {
                return Ok(None);
            }
            return Err(LogError::store_failed(format!(
                "record {index}: segment {} is missing",
                segment_name(segment)
            )));
        };
        let mut frame = vec![0u8; len as usize];
        file.read_exact_at(&mut frame, offset).map_err(|e| {
            LogError::storage(format!("record {index} (segment {})", segment_name(segment)), e)
        })?;
        let entry = next_frame(&frame)
            .filter(|body| body.len() + HEADER == frame.len())
            .and_then(decode_body)
            .ok_or_else(|| {
                LogError::store_failed(format!(
                    "record {index} (segment {}, offset {offset}) fails its CRC: the log is damaged",
                    segment_name(segment)
                ))
            })?;
        Ok(Some(entry.bytes))
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, LogError> {
        read_node(&*self.index()?, level, index)
    }

    fn by_exchange(&self, message_id: &str) -> Result<Vec<u64>, LogError> {
        // One read transaction for both tables, so a merge in between cannot hide a record.
        let db = self.index()?;
        let tx = db.begin_read().map_err(st)?;
        let size = self.size.load(Ordering::Acquire);
        let mut out = Vec::new();
        let merged = tx.open_table(BY_EXCHANGE).map_err(st)?;
        for item in merged.range((message_id, 0)..(message_id, size)).map_err(st)? {
            out.push(item.map_err(st)?.0.value().1);
        }
        let pending = tx.open_table(PENDING_EXCHANGE).map_err(st)?;
        for item in pending.iter().map_err(st)? {
            let (first, blob) = item.map_err(st)?;
            let first = first.value();
            for (i, id) in pending_ids(blob.value()).enumerate() {
                let index = first + i as u64;
                if id == message_id.as_bytes() && index < size {
                    out.push(index);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn by_time(&self, from_ms: i64, to_ms: i64, limit: usize) -> Result<Vec<u64>, LogError> {
        if from_ms >= to_ms {
            return Ok(Vec::new());
        }
        let db = self.index()?;
        let tx = db.begin_read().map_err(st)?;
        let t = tx.open_table(BY_TIME).map_err(st)?;
        let mut out = Vec::new();
        let size = self.size.load(Ordering::Acquire);
        for item in t.range((from_ms, 0)..(to_ms, 0)).map_err(st)? {
            if out.len() >= limit {
                break;
            }
            let index = item.map_err(st)?.0.value().1;
            // Only durable records (the index may already name the batch being synced).
            if index < size {
                out.push(index);
            }
        }
        Ok(out)
    }

    fn by_client(&self, client: &str) -> Result<Vec<u64>, LogError> {
        self.by_key(BY_CLIENT, client)
    }

    fn by_service(&self, service: &str) -> Result<Vec<u64>, LogError> {
        self.by_key(BY_SERVICE, service)
    }

    fn put_checkpoint(&self, size: u64, signed: &pb::SignedCheckpoint) -> Result<(), LogError> {
        let _w = self.lock();
        let tx = self.durable_tx()?;
        store::write_checkpoint(&tx, size, signed)?;
        tx.commit().map_err(st)
    }

    fn checkpoints(&self) -> Result<Vec<pb::SignedCheckpoint>, LogError> {
        store::read_checkpoints(&*self.index()?)
    }

    fn put_certificate(&self, der: &[u8]) -> Result<(), LogError> {
        let _w = self.lock();
        let tx = self.durable_tx()?;
        store::write_certificate(&tx, der)?;
        tx.commit().map_err(st)
    }

    fn certificates(&self) -> Result<Vec<Vec<u8>>, LogError> {
        store::read_certificates(&*self.index()?)
    }

    fn repair(&self) -> Result<(), LogError> {
        let mut w = self.lock();
        self.repair_locked(&mut w)
    }

    fn prune(&self, before: u64) -> Result<u64, LogError> {
        let w = self.lock();
        let old = self.pruned_before.load(Ordering::Acquire);
        let new = before.min(w.position.size).max(old);
        if new == old {
            return Ok(0);
        }
        let tx = self.durable_tx()?;
        tx.open_table(META).map_err(st)?.insert(PRUNED_BEFORE, new).map_err(st)?;
        tx.commit().map_err(st)?;
        self.pruned_before.store(new, Ordering::Release);

        // Delete the segment files wholly pruned, never the one holding the newest record (nor
        // anything after it): recovery starts there.
        let doomed: Vec<u64> = {
            let readers = self.readers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let firsts: Vec<u64> = readers.keys().copied().collect();
            firsts
                .windows(2)
                .filter(|pair| pair[1] <= new && pair[0] < w.position.end_segment)
                .map(|pair| pair[0])
                .collect()
        };
        if !doomed.is_empty() {
            let mut readers = self.readers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for first in &doomed {
                readers.remove(first);
            }
            drop(readers);
            for first in doomed {
                let path = self.segments.join(segment_name(first));
                std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
            }
            sync_dir(&self.segments)?;
        }
        Ok(new - old)
    }
}

impl Drop for SegmentStore {
    fn drop(&mut self) {
        if let Err(e) = self.durable_commit() {
            tracing::warn!(error = %e, "final durable index commit failed; the index will be replayed at open");
        }
    }
}
