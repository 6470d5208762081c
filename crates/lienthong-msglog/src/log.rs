//! The message log: appends with group commit, the tree head, proofs and checkpoints.
//!
//! Appenders hand their record to one writer thread and wait. The writer takes everything that
//! queued up meanwhile (up to `max_batch`) and writes it as one durable batch: one fsync for the
//! whole batch, so throughput grows with concurrency while each `append` still returns only once
//! its record is on disk.
//!
//! When a write fails (disk full, I/O error) the batch's appenders hear so and the log is
//! *failing*: further appends are refused at once, and the writer asks the store to repair
//! itself ([`LogStore::repair`]) with back-off (from [`RETRY_FIRST`] up to [`RETRY_MAX`]), with
//! or without traffic, until it succeeds: the log then takes appends again by itself.
//! [`MessageLog::health`] tells which state it is in, for readiness probes.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use lienthong_pki::{Certificate, PrivateKey};
use lienthong_proto::msglog::v1 as pb;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::{Checkpoint, sign_checkpoint};
use crate::error::{LogError, StorageError};
use crate::merkle::{self, Frontier, Hash};
use crate::record::Entry;
use crate::store::{LogStore, StoreNodes};

/// Tuning of the writer.
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    /// Most records written in one batch.
    pub max_batch: usize,
    /// Appends waiting for the writer before `append` itself waits (back-pressure).
    pub queue: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { max_batch: 1024, queue: 8192 }
    }
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub index: u64,
    pub leaf: Hash,
}

/// The tree as of the last durable batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub size: u64,
    pub root: Hash,
}

/// Who signs this log's checkpoints: the node, with its authentication key.
#[derive(Debug, Clone)]
pub struct CheckpointSigner {
    /// The node id, in X-Road string form.
    pub origin: String,
    pub key: Arc<PrivateKey>,
    pub certificate: Certificate,
}

struct Job {
    entry: Entry,
    reply: oneshot::Sender<Result<Appended, LogError>>,
}

/// The first wait before a failing log tries to repair its store, doubled after each failed
/// repair up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between repairs of a failing log.
pub const RETRY_MAX: Duration = Duration::from_secs(2);

/// Whether the log takes appends, for health reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogHealth {
    /// `Some` while writes fail: since when and the last error.
    pub failing: Option<Failing>,
    /// Write failures so far (batches refused by the store).
    pub failures: u64,
    /// Times the log recovered by itself from failing writes.
    pub recoveries: u64,
    /// How long the last outage lasted, from the first failed write to the repair.
    pub last_outage: Option<Duration>,
}

/// A failing log's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub since: SystemTime,
    pub error: String,
    /// Repairs tried since it started failing.
    pub repairs_tried: u64,
}

struct Shared {
    store: Arc<dyn LogStore>,
    head: Mutex<Head>,
    health: Mutex<LogHealth>,
}

impl Shared {
    fn health(&self) -> std::sync::MutexGuard<'_, LogHealth> {
        self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An open message log. Cheap to share behind an `Arc`; [`MessageLog::close`] waits for the
/// writer to finish what was queued.
pub struct MessageLog {
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MessageLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageLog").field("head", &self.head()).finish_non_exhaustive()
    }
}

impl MessageLog {
    /// Opens a log over `store`: rebuilds the tree's right edge from the stored nodes and checks
    /// that the last record matches its stored leaf hash (a damaged tail is an error, not
    /// silently extended).
    pub fn open(store: Arc<dyn LogStore>, config: LogConfig) -> Result<Self, LogError> {
        let size = store.size()?;
        let frontier = Frontier::from_store(&StoreNodes(&*store), size)?;
        if size > 0
            && let Some(bytes) = store.record(size - 1)?
            && Some(merkle::leaf_hash(&bytes)) != store.node(0, size - 1)?
        {
            return Err(LogError::store_failed(format!(
                "record {} does not match its leaf hash: the log is damaged; run `lienthong log verify`",
                size - 1
            )));
        }
        let shared = Arc::new(Shared {
            store,
            head: Mutex::new(Head { size, root: frontier.root() }),
            health: Mutex::new(LogHealth::default()),
        });
        let (jobs, queue) = mpsc::channel(config.queue.max(1));
        let writer_shared = shared.clone();
        let max_batch = config.max_batch.max(1);
        let writer = std::thread::Builder::new()
            .name("msglog-writer".into())
            .spawn(move || write_loop(&writer_shared, frontier, queue, max_batch))
            .map_err(|e| LogError::storage("starting the log writer thread", e))?;
        Ok(Self { shared, jobs: Some(jobs), writer: Some(writer) })
    }

    /// Appends a record; returns once it is durable. An error means it was not logged.
    pub async fn append(&self, record: &pb::LogRecord) -> Result<Appended, LogError> {
        self.append_entry(Entry::new(record)).await
    }

    pub async fn append_entry(&self, entry: Entry) -> Result<Appended, LogError> {
        let (reply, done) = oneshot::channel();
        let jobs = self.jobs.as_ref().ok_or(LogError::Closed)?;
        jobs.send(Job { entry, reply }).await.map_err(|_| LogError::Closed)?;
        done.await.map_err(|_| LogError::Closed)?
    }

    /// The tree as of the last durable batch.
    pub fn head(&self) -> Head {
        *self.shared.head.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether appends succeed now, with the failure and recovery counts.
    pub fn health(&self) -> LogHealth {
        self.shared.health().clone()
    }

    /// False once the writer thread has ended (it only ends when the log is closed, or if it
    /// panicked): nothing can be appended any more, only a restart helps.
    pub fn writer_alive(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| !w.is_finished())
    }

    pub fn store(&self) -> &Arc<dyn LogStore> {
        &self.shared.store
    }

    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        self.check_size(size)?;
        Ok(merkle::inclusion_proof(&StoreNodes(&*self.shared.store), index, size)?)
    }

    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, LogError> {
        self.check_size(new_size)?;
        Ok(merkle::consistency_proof(&StoreNodes(&*self.shared.store), old_size, new_size)?)
    }

    /// A proof is only for a tree the log has: the nodes a proof for a larger size needs may all
    /// exist already (the proof never reads the leaf itself), which would yield a "proof" for
    /// records that were never logged.
    fn check_size(&self, size: u64) -> Result<(), LogError> {
        let head = self.head().size;
        if size > head {
            return Err(LogError::NoSuchRecord { index: size - 1, size: head });
        }
        Ok(())
    }

    /// Signs and keeps a checkpoint of the current head, dated `now_ms`, or the time of the
    /// newest stored checkpoint if that is later (the clock went back).
    pub fn checkpoint(
        &self,
        signer: &CheckpointSigner,
        now_ms: i64,
    ) -> Result<pb::SignedCheckpoint, LogError> {
        let head = self.head();
        let stored = self.shared.store.checkpoints()?;
        let decoded: Vec<(bool, Checkpoint)> = stored
            .iter()
            .filter_map(|c| Checkpoint::decode(c).ok().map(|d| (crate::checkpoint::is_witnessed(c), d)))
            .collect();
        // Never older than a checkpoint already made: after the clock went back (it had run
        // ahead), the witness would refuse a checkpoint older than the one it co-signed until
        // the clock caught up. The signature still carries the signing time.
        let timestamp_ms = decoded.iter().map(|(_, c)| c.timestamp_ms).fold(now_ms, i64::max);
        let checkpoint =
            Checkpoint { origin: signer.origin.clone(), size: head.size, root: head.root, timestamp_ms };
        let signed = sign_checkpoint(&checkpoint, &signer.key, signer.certificate.fingerprint(), now_ms)?;
        self.shared.store.put_certificate(signer.certificate.der())?;
        // A witnessed checkpoint of the same size is better evidence than a fresh unwitnessed
        // one: keep it.
        let witnessed_already = decoded.iter().any(|(witnessed, c)| *witnessed && c.size == head.size);
        if !witnessed_already {
            self.shared.store.put_checkpoint(head.size, &signed)?;
        }
        Ok(signed)
    }

    /// Stops accepting appends and waits until everything queued is written.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for MessageLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The writer's view of a failing store: when to try a repair next.
struct Outage {
    started: Instant,
    next_repair: Instant,
    wait: Duration,
    /// The latest failure (of the write, then of each repair): what appenders hear meanwhile.
    cause: StorageError,
}

/// The storage error every appender hears while the store is failing: the store's own when it
/// is one, else the whole error as its source.
fn as_storage(e: LogError) -> StorageError {
    match e {
        LogError::Storage(s) => s,
        other => StorageError::caused("", other),
    }
}

fn write_loop(shared: &Shared, mut frontier: Frontier, mut queue: mpsc::Receiver<Job>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut outage: Option<Outage> = None;
    let mut timer = None;
    loop {
        let first = match &outage {
            None => match queue.blocking_recv() {
                Some(job) => job,
                None => return,
            },
            // Failing: wake for the next repair even without traffic, so that readiness turns
            // back by itself.
            Some(o) => match next_job_until(&mut queue, o.next_repair, &mut timer) {
                Next::Job(job) => job,
                Next::Closed => return,
                Next::Timeout => {
                    try_repair(shared, &mut outage);
                    continue;
                }
            },
        };
        batch.push(first);
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if outage.as_ref().is_some_and(|o| Instant::now() >= o.next_repair) {
            try_repair(shared, &mut outage);
        }
        if let Some(o) = &outage {
            // Refused at once: the store has not been repaired yet.
            let cause = o.cause.clone();
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(LogError::Storage(cause.clone())));
            }
            continue;
        }
        let start = frontier.size();
        let mut next = frontier.clone();
        let mut nodes = Vec::with_capacity(batch.len() * 2);
        let mut leaves = Vec::with_capacity(batch.len());
        for job in &batch {
            let leaf = merkle::leaf_hash(&job.entry.bytes);
            leaves.push(leaf);
            nodes.extend(next.append(leaf));
        }
        let entries: Vec<Entry> = batch.iter().map(|j| j.entry.clone()).collect();
        match shared.store.append(start, &entries, &nodes) {
            Ok(()) => {
                frontier = next;
                *shared.head.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Head { size: frontier.size(), root: frontier.root() };
                for (i, (job, leaf)) in batch.drain(..).zip(leaves).enumerate() {
                    let _ = job.reply.send(Ok(Appended { index: start + i as u64, leaf }));
                }
            }
            Err(e) => {
                // Nothing of the batch was written; every appender hears so (and must not
                // acknowledge its exchange). The store is repaired before the next batch.
                tracing::error!(error = %e, records = batch.len(), "log write failed; retrying with back-off");
                let message = e.to_string();
                {
                    let mut health = shared.health();
                    health.failures += 1;
                    health.failing =
                        Some(Failing { since: SystemTime::now(), error: message, repairs_tried: 0 });
                }
                let now = Instant::now();
                let cause = as_storage(e);
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(LogError::Storage(cause.clone())));
                }
                outage =
                    Some(Outage { started: now, next_repair: now + RETRY_FIRST, wait: RETRY_FIRST, cause });
            }
        }
    }
}

enum Next {
    Job(Job),
    Closed,
    Timeout,
}

/// Waits for a job until `deadline`. The queue is a tokio channel (appenders are async) and
/// this is a plain thread: the wait runs on a small runtime of its own, made at the first outage.
fn next_job_until(
    queue: &mut mpsc::Receiver<Job>,
    deadline: Instant,
    timer: &mut Option<tokio::runtime::Runtime>,
) -> Next {
    let rt = match timer {
        Some(rt) => rt,
        None => match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(rt) => timer.insert(rt),
            // Without a timer, wait for the next job (or its absence) and try then.
            Err(_) => return queue.blocking_recv().map_or(Next::Closed, Next::Job),
        },
    };
    let wait = deadline.saturating_duration_since(Instant::now());
    match rt.block_on(async { tokio::time::timeout(wait, queue.recv()).await }) {
        Ok(Some(job)) => Next::Job(job),
        Ok(None) => Next::Closed,
        Err(_) => Next::Timeout,
    }
}

/// Asks the store to repair itself; ends the outage if it did, or schedules the next try.
fn try_repair(shared: &Shared, outage: &mut Option<Outage>) {
    let Some(o) = outage.as_mut() else { return };
    match shared.store.repair() {
        Ok(()) => {
            let took = o.started.elapsed();
            tracing::info!(outage_ms = took.as_millis() as u64, "message log writable again");
            let mut health = shared.health();
            health.failing = None;
            health.recoveries += 1;
            health.last_outage = Some(took);
            *outage = None;
        }
        Err(e) => {
            o.wait = (o.wait * 2).min(RETRY_MAX);
            o.next_repair = Instant::now() + o.wait;
            let mut health = shared.health();
            if let Some(f) = health.failing.as_mut() {
                f.repairs_tried += 1;
                f.error = e.to_string();
            }
            drop(health);
            tracing::debug!(error = %e, retry_in_ms = o.wait.as_millis() as u64, "message log still not writable");
            o.cause = as_storage(e);
        }
    }
}
