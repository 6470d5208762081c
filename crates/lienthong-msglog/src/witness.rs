//! Getting checkpoints witnessed: the node signs its head, sends it with a consistency proof
//! from the last checkpoint the witness co-signed, and keeps the co-signed copy. The transport is
//! the caller's ([`Witness`]): gRPC to the registry in a node, a direct call in tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use lienthong_proto::msglog::v1 as pb;
use lienthong_proto::registry::v1::WitnessRequest;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::checkpoint::{Checkpoint, is_witnessed};
use crate::error::LogError;
use crate::log::{CheckpointSigner, MessageLog};
use crate::merkle;
use crate::store::StoreNodes;

/// A boxed future, so [`Witness`] stays object-safe.
pub type WitnessFuture<'a> =
    Pin<Box<dyn Future<Output = Result<pb::SignedCheckpoint, LogError>> + Send + 'a>>;

/// The answer to [`Witness::witnessed`].
pub type WitnessedFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<pb::SignedCheckpoint>, LogError>> + Send + 'a>>;

/// Something that co-signs checkpoints (the registry).
pub trait Witness: Send + Sync {
    fn witness(&self, request: WitnessRequest) -> WitnessFuture<'_>;

    /// The last checkpoint this witness co-signed for the log of `origin`, if it tells.
    fn witnessed(&self, origin: &str) -> WitnessedFuture<'_> {
        let _ = origin;
        Box::pin(async { Ok(None) })
    }
}

/// The newest checkpoint in the store that carries a witness co-signature.
pub fn last_witnessed(log: &MessageLog) -> Result<Option<Checkpoint>, LogError> {
    let mut checkpoints = log.store().checkpoints()?;
    checkpoints.retain(is_witnessed);
    checkpoints.last().map(Checkpoint::decode).transpose()
}

/// Signs the current head, has it co-signed and stores the co-signed copy. The request carries a
/// consistency proof from the last witnessed checkpoint, so the witness can check that this
/// history extends the one it already vouched for.
pub async fn checkpoint_and_witness(
    log: &MessageLog,
    signer: &CheckpointSigner,
    witness: &dyn Witness,
    now_ms: i64,
) -> Result<pb::SignedCheckpoint, LogError> {
    let mut previous = last_witnessed(log)?;
    // A log whose index was rebuilt from its segments has lost its checkpoints, and the witness
    // refuses any history without a proof from the size it holds: take the witnessed checkpoint
    // back from the witness, once this log is shown to extend it.
    if previous.is_none() && log.head().size > 0 {
        previous = recover_witnessed(log, signer, witness, None).await?;
    }
    match witness_once(log, signer, witness, previous, now_ms).await {
        Err(LogError::Checkpoint(refused)) => {
            // The witness may hold a newer checkpoint than this store (the store was restored
            // from an older copy, or lost its last co-signed checkpoint in a crash).
            let held = last_witnessed(log)?.map(|c| c.size);
            match recover_witnessed(log, signer, witness, held).await? {
                Some(c) => witness_once(log, signer, witness, Some(c), now_ms).await,
                None => Err(LogError::Checkpoint(refused)),
            }
        }
        other => other,
    }
}

/// Fetches the witness's last checkpoint of this log and, if it is newer than the one this log
/// holds (`held`, its size) and this log extends it (its tree at that size has that root), keeps
/// it as the log's own witnessed checkpoint. `None` if the witness holds nothing newer.
async fn recover_witnessed(
    log: &MessageLog,
    signer: &CheckpointSigner,
    witness: &dyn Witness,
    held: Option<u64>,
) -> Result<Option<Checkpoint>, LogError> {
    let Some(theirs) = witness.witnessed(&signer.origin).await? else { return Ok(None) };
    let checkpoint = Checkpoint::decode(&theirs)?;
    if held.is_some_and(|h| checkpoint.size <= h) {
        return Ok(None);
    }
    if checkpoint.origin != signer.origin || !is_witnessed(&theirs) {
        return Err(LogError::Checkpoint(
            "the witness returned another log's or an unsigned checkpoint".into(),
        ));
    }
    let size = log.head().size;
    if checkpoint.size > size {
        return Err(LogError::Checkpoint(format!(
            "the witness co-signed {} records of this log, but it holds only {size}: acknowledged \
             records are missing. Restore the log directory from a backup; the witness will not \
             co-sign a shorter history",
            checkpoint.size
        )));
    }
    let root = merkle::root(&StoreNodes(&**log.store()), checkpoint.size)?;
    if root != checkpoint.root {
        return Err(LogError::Checkpoint(format!(
            "the first {} records of this log differ from the history the witness co-signed: the \
             log was rewritten or damaged. Run `lienthong log verify` and restore the log \
             directory from a backup",
            checkpoint.size
        )));
    }
    log.store().put_checkpoint(checkpoint.size, &theirs)?;
    tracing::info!(size = checkpoint.size, "took the witnessed checkpoint back from the witness");
    Ok(Some(checkpoint))
}

/// One witnessing round from `previous`.
async fn witness_once(
    log: &MessageLog,
    signer: &CheckpointSigner,
    witness: &dyn Witness,
    previous: Option<Checkpoint>,
    now_ms: i64,
) -> Result<pb::SignedCheckpoint, LogError> {
    let signed = log.checkpoint(signer, now_ms)?;
    let size = Checkpoint::decode(&signed)?.size;
    let proof = match previous {
        Some(old) if old.size > 0 && old.size < size => Some(pb::ConsistencyProof {
            old_size: old.size,
            new_size: size,
            hashes: log.consistency_proof(old.size, size)?.iter().map(|h| h.to_vec()).collect(),
        }),
        _ => None,
    };
    let cosigned = witness.witness(WitnessRequest { checkpoint: Some(signed.clone()), proof }).await?;
    if cosigned.checkpoint != signed.checkpoint || !is_witnessed(&cosigned) {
        return Err(LogError::Checkpoint("the witness returned a different or unsigned checkpoint".into()));
    }
    log.store().put_checkpoint(size, &cosigned)?;
    Ok(cosigned)
}

/// What the checkpointer last achieved with its witness, for health reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WitnessStatus {
    /// The newest checkpoint the witness co-signed: its tree size and time (ms).
    pub witnessed: Option<(u64, i64)>,
    /// The last round's error, while rounds fail (what the operator must do, when it knows).
    pub failing: Option<String>,
}

/// A background task that checkpoints every `interval` when the log has grown, and has each
/// checkpoint witnessed if a witness is given. Stop it with [`Checkpointer::stop`].
#[derive(Debug)]
pub struct Checkpointer {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    status: Arc<std::sync::Mutex<WitnessStatus>>,
}

impl Checkpointer {
    pub fn spawn(
        log: Arc<MessageLog>,
        signer: CheckpointSigner,
        witness: Option<Arc<dyn Witness>>,
        interval: Duration,
        now_ms: impl Fn() -> i64 + Send + Sync + 'static,
    ) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let witnessed = last_witnessed(&log).ok().flatten().map(|c| (c.size, c.timestamp_ms));
        let status = Arc::new(std::sync::Mutex::new(WitnessStatus { witnessed, failing: None }));
        let report = status.clone();
        let set = move |f: &dyn Fn(&mut WitnessStatus)| {
            f(&mut report.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        };
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_size = None;
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return,
                    _ = ticker.tick() => {}
                }
                let size = log.head().size;
                if last_size == Some(size) {
                    continue;
                }
                let result = match &witness {
                    Some(w) => checkpoint_and_witness(&log, &signer, w.as_ref(), now_ms()).await.map(Some),
                    None => log.checkpoint(&signer, now_ms()).map(|_| None),
                };
                match result {
                    Ok(cosigned) => {
                        last_size = Some(size);
                        if let Some(c) = cosigned.as_ref().and_then(|c| Checkpoint::decode(c).ok()) {
                            set(&|s| {
                                *s =
                                    WitnessStatus { witnessed: Some((c.size, c.timestamp_ms)), failing: None }
                            });
                        }
                    }
                    // Retried at the next tick; the signed checkpoint is kept either way.
                    Err(e) => {
                        tracing::warn!(error = %e, size, "checkpoint not witnessed");
                        let error = e.to_string();
                        set(&|s| s.failing = Some(error.clone()));
                    }
                }
            }
        });
        Self { stop, task, status }
    }

    /// What the last rounds achieved; shared, so a health endpoint can read it later.
    pub fn status(&self) -> Arc<std::sync::Mutex<WitnessStatus>> {
        self.status.clone()
    }

    /// Stops the task and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
