//! The message log: appends with group commit, the tree head, proofs and checkpoints.
//!
//! Appenders hand their record to one writer thread and wait. The writer takes everything that
//! queued up meanwhile (up to `max_batch`) and writes it as one durable batch: one fsync for the
//! whole batch, so throughput grows with concurrency while each `append` still returns only once
//! its record is on disk.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use lienthong_pki::{Certificate, PrivateKey};
use lienthong_proto::msglog::v1 as pb;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::{Checkpoint, sign_checkpoint};
use crate::error::LogError;
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

struct Shared {
    store: Arc<dyn LogStore>,
    head: Mutex<Head>,
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
            return Err(LogError::Storage(format!(
                "record {} does not match its leaf hash: the log is damaged; run `lienthong log verify`",
                size - 1
            )));
        }
        let shared = Arc::new(Shared { store, head: Mutex::new(Head { size, root: frontier.root() }) });
        let (jobs, queue) = mpsc::channel(config.queue.max(1));
        let writer_shared = shared.clone();
        let max_batch = config.max_batch.max(1);
        let writer = std::thread::Builder::new()
            .name("msglog-writer".into())
            .spawn(move || write_loop(&writer_shared, frontier, queue, max_batch))
            .map_err(LogError::storage)?;
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

    /// Signs and keeps a checkpoint of the current head.
    pub fn checkpoint(
        &self,
        signer: &CheckpointSigner,
        now_ms: i64,
    ) -> Result<pb::SignedCheckpoint, LogError> {
        let head = self.head();
        let checkpoint = Checkpoint {
            origin: signer.origin.clone(),
            size: head.size,
            root: head.root,
            timestamp_ms: now_ms,
        };
        let signed = sign_checkpoint(&checkpoint, &signer.key, signer.certificate.fingerprint(), now_ms)?;
        self.shared.store.put_certificate(signer.certificate.der())?;
        // A witnessed checkpoint of the same size is better evidence than a fresh unwitnessed
        // one: keep it.
        let witnessed_already = self.shared.store.checkpoints()?.iter().any(|c| {
            crate::checkpoint::is_witnessed(c) && Checkpoint::decode(c).is_ok_and(|c| c.size == head.size)
        });
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

fn write_loop(shared: &Shared, mut frontier: Frontier, mut queue: mpsc::Receiver<Job>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
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
                // acknowledge its exchange). The next batch tries again from the same size.
                tracing::error!(error = %e, records = batch.len(), "log write failed");
                let message = e.to_string();
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(LogError::Storage(message.clone())));
                }
            }
        }
    }
}
