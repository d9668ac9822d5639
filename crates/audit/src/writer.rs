//! `Auditor`: the audit log's single writer. It commits events in batches (group commit), keeps
//! the incremental Merkle tree, and signs checkpoints.
//!
//! Callers `append(event).await` and get the event's sequence number only once the batch holding
//! it is durably committed, so a request can fail closed (503) when the log cannot be written.
//! One task owns the store's write path: while it waits for one commit, new events queue up, and
//! the next commit takes all of them (up to `max_batch`) in one transaction — one fsync for many
//! events, without any caller waiting on a timer. The queue is bounded: when it is full,
//! `append` waits (backpressure) and `try_submit` refuses.
//!
//! If a commit fails, every event in that batch gets the error and none is in the log. Every
//! `checkpoint_every` entries or `checkpoint_interval` (whichever comes first, and only if
//! something was appended) the writer signs a checkpoint, stores it, appends it to the witness
//! file and hands it to the HTTP witness's task ([`crate::witness::http`], which submits it off
//! this path, never holding up an append). These automatic checkpoints are sealed on a task of
//! their own, one at a time and in order, so the writer goes on committing while one is signed
//! and its witness line flushed (its store insert still takes turns with the appends on a store
//! with one write connection, such as SQLite's); an explicit [`Auditor::checkpoint`] and the
//! final one at shutdown wait for it and are signed in line. A checkpoint failure is logged and
//! retried at the next occasion; it does not fail appends, which are already durable.
//!
//! There must be one `Auditor` per log: sequence numbers come from the store, but the tree
//! lives here. (If another writer appends anyway, this one notices the gap and reads the missing
//! leaf hashes before going on, so its checkpoints stay correct.)

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use crate::checkpoint::{Checkpoint, SignedCheckpoint, check_origin};
use crate::event::{AuditEvent, EventError, Timestamp};
use crate::merkle::{Hash, TreeBuilder};
use crate::note::{SignerKey, VerifierKey};
use crate::shared::SharedLog;
use crate::store::{
    AuditEntry, AuditStore, AuditStoreError, MAX_APPEND_BATCH, MAX_READ, StoredCheckpoint,
};
use crate::witness::WitnessFile;
use crate::witness::http::{self, HttpWitness, HttpWitnessConfig, WitnessFeed};

mod seen;
mod sequencer;

pub use seen::{ROLLBACK_ALERT, WRONG_KEY_ALERT};

pub use sequencer::{
    DEFAULT_NEWER_RELEASE_BACKOFF, NEWER_RELEASE_BACKOFF_BOUNDS, STALL_ALERT, STALL_LEASES,
    SequencerConfig,
};

/// How the writer batches and checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditorConfig {
    /// The log's name, the first line of every checkpoint (conventionally also the signing
    /// key's name).
    pub origin: String,
    /// Sign a checkpoint after this many new entries.
    pub checkpoint_every: u64,
    /// ... or after this long, if anything was appended since the last one.
    pub checkpoint_interval: Duration,
    /// Events that may wait for the writer before `append` blocks.
    pub queue_capacity: usize,
    /// The most events in one commit.
    pub max_batch: usize,
    /// Where to append each checkpoint, outside the database.
    pub witness_path: Option<PathBuf>,
    /// A C2SP witness to submit each checkpoint to ([`crate::witness::http`]).
    pub http_witness: Option<HttpWitnessConfig>,
}

impl Default for AuditorConfig {
    fn default() -> Self {
        Self {
            origin: "wardgate/audit".into(),
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(10),
            queue_capacity: 16_384,
            max_batch: 4_096,
            witness_path: None,
            http_witness: None,
        }
    }
}

/// Why an audit write failed. Cloneable: one store failure is handed to every waiter.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AuditError {
    /// The event breaks a rule; nothing was queued.
    #[error("invalid audit event: {0}")]
    Invalid(#[from] EventError),
    /// The store could not commit the batch; the event is not in the log. Fail closed.
    #[error("audit log unavailable")]
    Unavailable(#[source] Arc<AuditStoreError>),
    /// The queue is full (only from `try_submit`).
    #[error("audit queue full")]
    Busy,
    /// The writer has shut down.
    #[error("the audit writer has stopped")]
    Closed,
    /// Signing, storing or witnessing a checkpoint failed.
    #[error("checkpoint failed: {0}")]
    Checkpoint(String),
    /// The stored log does not agree with its latest checkpoint, or with what this writer
    /// committed (truncated or rewritten underneath it). The writer refuses to go on.
    #[error("audit log inconsistent: {0}")]
    Inconsistent(String),
    /// The configuration is unusable; the message names the setting.
    #[error("invalid audit configuration: {0}")]
    Config(String),
}

/// Why an instance stopped sequencing a shared log for good ([`Auditor::fault`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditFault {
    /// The log's checkpoints are not signed by this instance's key: it refuses audited work.
    WrongKey(String),
    /// The log went back on what this instance saw: history was removed or rewritten.
    RolledBack(String),
}

impl AuditFault {
    /// What to tell a caller that asks this instance to write or sign.
    pub fn error(&self) -> AuditError {
        match self {
            AuditFault::WrongKey(why) => AuditError::Config(why.clone()),
            AuditFault::RolledBack(why) => AuditError::Inconsistent(why.clone()),
        }
    }

    /// A short name for probes and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuditFault::WrongKey(_) => "signing_key_mismatch",
            AuditFault::RolledBack(_) => "rolled_back",
        }
    }
}

type Reply = oneshot::Sender<Result<u64, AuditError>>;

/// The witness file, shared by the writer and the checkpoints it seals in the background.
type Witness = Arc<std::sync::Mutex<WitnessFile>>;

/// Where each sealed checkpoint goes besides the store.
#[derive(Clone, Default)]
struct Witnesses {
    /// The witness file, written before the checkpoint counts as sealed.
    file: Option<Witness>,
    /// The HTTP witness's task, handed the checkpoint without waiting.
    http: Option<WitnessFeed>,
}

impl Witnesses {
    /// Opens the witness file and starts the HTTP witness's task on `runtime`, as `config`
    /// asks; `store` is the log's, for the consistency proofs.
    fn start(
        config: &AuditorConfig,
        store: Arc<dyn AuditStore>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(Self, Option<HttpWitness>), AuditError> {
        let file = match &config.witness_path {
            Some(path) => Some(Arc::new(std::sync::Mutex::new(
                WitnessFile::open(path).map_err(|e| {
                    AuditError::Checkpoint(format!(
                        "cannot open the witness file {}: {e}",
                        path.display()
                    ))
                })?,
            ))),
            None => None,
        };
        let (status, http) = match &config.http_witness {
            Some(witness) => {
                let (status, feed) = http::start(witness, store, runtime)
                    .map_err(|e| AuditError::Config(format!("witness_url: {e}")))?;
                (Some(status), Some(feed))
            }
            None => (None, None),
        };
        Ok((Self { file, http }, status))
    }

    /// At shutdown: waits until the HTTP witness has been tried with the last checkpoint.
    async fn flush(&self) {
        if let Some(feed) = &self.http {
            feed.flush().await;
        }
    }
}

/// The most times the writer yields to let a batch fill before committing it.
const MAX_GATHER_YIELDS: usize = 8;

#[expect(
    clippy::large_enum_variant,
    reason = "nearly every command is an Append; boxing it would cost an allocation per event \
              to save queue space only on the rare other commands"
)]
enum Command {
    Append(AuditEvent, Reply),
    Checkpoint(oneshot::Sender<Result<SignedCheckpoint, AuditError>>),
    Shutdown(oneshot::Sender<Result<(), AuditError>>),
}

#[derive(Debug)]
struct Shared {
    size: AtomicU64,
    commits: AtomicU64,
    verifier: VerifierKey,
    capacity: usize,
    prompt_salt: PromptSalt,
    store: StoreHandle,
    /// Appends waiting in the background for room in a full queue ([`Auditor::submit`]);
    /// `shutdown` lets them in first.
    waiting: AtomicUsize,
    /// Told when `waiting` falls to zero.
    waiting_done: Notify,
    /// The shared log, when this writer queues into one ([`Auditor::start_shared`]).
    shared_log: Option<SharedLogHandle>,
    /// The HTTP witness's progress, when one is configured.
    http_witness: Option<HttpWitness>,
    /// Set once when this instance stops sequencing a shared log for good.
    fault: std::sync::OnceLock<AuditFault>,
    /// Set while queued events of the shared log wait and no instance sequences them
    /// ([`sequencer::STALL_ALERT`]).
    stalled: std::sync::atomic::AtomicBool,
}

/// The shared log a writer queues into, kept for readers ([`Auditor::shared_log`]).
struct SharedLogHandle(Arc<dyn SharedLog>);

impl std::fmt::Debug for SharedLogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedLog")
    }
}

/// Counts one background append as waiting while it lives (dropped when its task ends or is
/// cancelled), so `shutdown` knows when every one of them has been queued or is gone.
struct Waiting(Arc<Shared>);

impl Waiting {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(shared.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.0.waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.waiting_done.notify_waiters();
        }
    }
}

/// The store the writer appends to, kept for readers ([`Auditor::store`]).
struct StoreHandle(Arc<dyn AuditStore>);

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditStore")
    }
}

/// The salt of [`Auditor::prompt_digest`]; never printed.
struct PromptSalt(zeroize::Zeroizing<[u8; 32]>);

impl std::fmt::Debug for PromptSalt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PromptSalt([redacted])")
    }
}

/// A handle to the audit writer. Cheap to clone; the writer stops when `shutdown` is called or
/// the last handle is dropped (after committing what was queued and signing a final
/// checkpoint).
#[derive(Clone, Debug)]
pub struct Auditor {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

/// An append queued by [`Auditor::try_submit`]; resolves to the sequence number once committed.
/// Dropping it does not withdraw the event.
#[derive(Debug)]
pub struct PendingAppend(oneshot::Receiver<Result<u64, AuditError>>);

impl Future for PendingAppend {
    type Output = Result<u64, AuditError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(AuditError::Closed)))
    }
}

impl Auditor {
    /// Resumes the log in `store` (from its latest checkpoint's saved tree state plus the leaf
    /// hashes after it), signs a checkpoint for any entries not yet covered, and starts the
    /// writer: a task on the current Tokio runtime, or, for a store whose appends block
    /// ([`AuditStore::blocks`]), a thread of its own. Automatic checkpoints are sealed on the
    /// current runtime either way. The thread is not joined: [`Auditor::shutdown`] waits for it
    /// to commit what was queued and sign the final checkpoint.
    ///
    /// Fails if the store is shorter than its latest checkpoint or the checkpoint's tree state
    /// does not give its root: a log that was truncated or rewritten must not be extended.
    pub async fn start(
        store: Arc<dyn AuditStore>,
        signer: SignerKey,
        config: AuditorConfig,
    ) -> Result<Self, AuditError> {
        check_config(&config)?;
        let (tree, last_checkpoint) = resume(store.as_ref()).await?;
        check_witness_floor(store.as_ref(), &config, &signer.verifier()).await?;
        let sealer = tokio::runtime::Handle::current();
        let (witness, http_witness) = Witnesses::start(&config, store.clone(), &sealer)?;
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let shared = Arc::new(Shared {
            size: AtomicU64::new(tree.size()),
            commits: AtomicU64::new(0),
            verifier: signer.verifier(),
            capacity: config.queue_capacity,
            prompt_salt: PromptSalt(signer.prompt_salt()),
            store: StoreHandle(store.clone()),
            waiting: AtomicUsize::new(0),
            waiting_done: Notify::new(),
            shared_log: None,
            http_witness,
            fault: std::sync::OnceLock::new(),
            stalled: std::sync::atomic::AtomicBool::new(false),
        });
        let mut writer = Writer {
            store,
            signer: Arc::new(signer),
            config,
            tree,
            last_checkpoint,
            witness,
            rx,
            shared: shared.clone(),
            deferred: None,
            broken: None,
            sealing: None,
            sealer,
        };
        if writer.tree.size() > writer.last_checkpoint.unwrap_or(0)
            || writer.last_checkpoint.is_none()
        {
            writer.checkpoint().await?;
        }
        if writer.store.blocks() {
            writer.run_on_own_thread()?;
        } else {
            tokio::spawn(writer.run());
        }
        Ok(Self { tx, shared })
    }

    /// Starts the writer of a log that many instances share ([`crate::shared`]): appends are
    /// answered once their events are durably queued, and this instance sequences the queue
    /// and signs checkpoints while it holds the sequencer lease (taken at once if it is free).
    /// [`Auditor::append`] then returns the event's queue id, not its sequence number, and
    /// [`Auditor::size`] is the log's size as this instance last sequenced or read it.
    ///
    /// Fails, like [`Auditor::start`], on a log that cannot be resumed, and when the store
    /// cannot be reached.
    pub async fn start_shared(
        store: Arc<dyn SharedLog>,
        signer: SignerKey,
        config: AuditorConfig,
        sequencer: SequencerConfig,
    ) -> Result<Self, AuditError> {
        check_config(&config)?;
        let size = store
            .size()
            .await
            .map_err(|e| AuditError::Unavailable(Arc::new(e)))?;
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let reader: Arc<dyn AuditStore> = store.clone();
        let (witness, http_witness) =
            Witnesses::start(&config, reader.clone(), &tokio::runtime::Handle::current())?;
        let shared = Arc::new(Shared {
            size: AtomicU64::new(size),
            commits: AtomicU64::new(0),
            verifier: signer.verifier(),
            capacity: config.queue_capacity,
            prompt_salt: PromptSalt(signer.prompt_salt()),
            store: StoreHandle(reader),
            waiting: AtomicUsize::new(0),
            waiting_done: Notify::new(),
            shared_log: Some(SharedLogHandle(store.clone())),
            http_witness,
            fault: std::sync::OnceLock::new(),
            stalled: std::sync::atomic::AtomicBool::new(false),
        });
        sequencer::start(
            store,
            signer,
            config,
            sequencer,
            witness,
            shared.clone(),
            rx,
        )
        .await?;
        Ok(Self { tx, shared })
    }

    /// Queues `event` and waits until it is durably committed; returns its sequence number.
    /// Waits for room when the queue is full. If the caller stops waiting, the event is still
    /// committed.
    pub async fn append(&self, event: AuditEvent) -> Result<u64, AuditError> {
        event.validate()?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Append(event, reply))
            .await
            .map_err(|_| AuditError::Closed)?;
        PendingAppend(rx).await
    }

    /// Queues `event` without waiting; `Busy` if the queue is full. For callers that cannot
    /// await (a `Drop`), which then spawn or await the returned future.
    pub fn try_submit(&self, event: AuditEvent) -> Result<PendingAppend, AuditError> {
        event.validate()?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Command::Append(event, reply))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AuditError::Busy,
                mpsc::error::TrySendError::Closed(_) => AuditError::Closed,
            })?;
        Ok(PendingAppend(rx))
    }

    /// Queues `event` without waiting, for code that cannot await (a `Drop`, a response body):
    /// when the queue is full, a task on the current Tokio runtime waits for room, and
    /// [`Auditor::shutdown`] lets such waiting events in before it stops the writer. The
    /// returned future resolves once the event is committed; dropping it does not withdraw
    /// the event. `Err` for an invalid event, a stopped writer, or a full queue with no
    /// runtime to wait on.
    pub fn submit(&self, event: AuditEvent) -> Result<PendingAppend, AuditError> {
        event.validate()?;
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Command::Append(event, reply)) {
            Ok(()) => Ok(PendingAppend(rx)),
            Err(mpsc::error::TrySendError::Full(command)) => {
                let rt = tokio::runtime::Handle::try_current().map_err(|_| AuditError::Busy)?;
                let tx = self.tx.clone();
                let waiting = Waiting::new(&self.shared);
                rt.spawn(async move {
                    let _waiting = waiting;
                    if tx.send(command).await.is_err() {
                        tracing::error!("audit writer stopped before a waiting event was queued");
                    }
                });
                Ok(PendingAppend(rx))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(AuditError::Closed),
        }
    }

    /// Queues `event` from code that cannot wait and has no caller left to fail (a `Drop`, the
    /// end of a response already sent): [`Auditor::submit`] without the wait for the commit.
    /// A failed commit is logged by the writer.
    pub fn submit_detached(&self, event: AuditEvent) -> Result<(), AuditError> {
        // Nobody awaits the reply: the writer ignores a closed reply channel.
        self.submit(event).map(drop)
    }

    /// Signs, stores and witnesses a checkpoint of everything committed so far.
    pub async fn checkpoint(&self) -> Result<SignedCheckpoint, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Checkpoint(reply))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.unwrap_or(Err(AuditError::Closed))
    }

    /// Commits everything queued, signs a final checkpoint, and stops the writer. Later
    /// appends on any handle fail with `Closed`.
    pub async fn shutdown(&self) -> Result<(), AuditError> {
        // Events submitted while the queue was full are still waiting for room: they were
        // handed over before the shutdown, so they go in before it.
        loop {
            let done = self.shared.waiting_done.notified();
            if self.shared.waiting.load(Ordering::Acquire) == 0 {
                break;
            }
            done.await;
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Shutdown(reply))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.unwrap_or(Err(AuditError::Closed))
    }

    /// Entries committed so far.
    pub fn size(&self) -> u64 {
        self.shared.size.load(Ordering::Acquire)
    }

    /// Batches committed by this writer so far (entries / commits is the mean batch size).
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Events waiting for the writer (a gauge for metrics).
    pub fn queued(&self) -> usize {
        self.shared.capacity.saturating_sub(self.tx.capacity())
    }

    /// Why this instance stopped sequencing the shared log for good, if it did: its key did
    /// not sign the log (appends then fail closed), or the log went back on what it saw.
    pub fn fault(&self) -> Option<&AuditFault> {
        self.shared.fault.get()
    }

    /// Whether queued events of the shared log are waiting while no instance sequences them
    /// (the alert `audit_sequencing_stalled`); false for a single writer's log.
    pub fn sequencing_stalled(&self) -> bool {
        self.shared.stalled.load(Ordering::Relaxed)
    }

    /// The HTTP witness's progress (checkpoints cosigned, failures), when one is configured.
    pub fn http_witness(&self) -> Option<&HttpWitness> {
        self.shared.http_witness.as_ref()
    }

    /// The public key checkpoints are signed with.
    pub fn verifier(&self) -> &VerifierKey {
        &self.shared.verifier
    }

    /// The store this writer appends to, for reading (queries, exports). Reads never go
    /// through the writer's queue.
    pub fn store(&self) -> &Arc<dyn AuditStore> {
        &self.shared.store.0
    }

    /// The shared log this writer queues into, if it was started with
    /// [`Auditor::start_shared`]: for reading the events still queued.
    pub fn shared_log(&self) -> Option<&Arc<dyn SharedLog>> {
        self.shared.shared_log.as_ref().map(|h| &h.0)
    }

    /// The `prompt_sha256` of a prompt made of `parts`, under the salt derived from the
    /// signing key ([`SignerKey::prompt_salt`]).
    pub fn prompt_digest<'a>(&self, parts: impl IntoIterator<Item = &'a [u8]>) -> Hash {
        crate::event::prompt_digest_parts(self.shared.prompt_salt.0.as_ref(), parts)
    }
}

/// Checks `config`.
fn check_config(config: &AuditorConfig) -> Result<(), AuditError> {
    check_origin(&config.origin)
        .map_err(|_| AuditError::Config("origin must be 1-256 printable characters".into()))?;
    if config.checkpoint_every == 0 {
        return Err(AuditError::Config(
            "checkpoint_every must be at least 1".into(),
        ));
    }
    if config.checkpoint_interval.is_zero() {
        return Err(AuditError::Config(
            "checkpoint_interval must be positive".into(),
        ));
    }
    if config.queue_capacity == 0 {
        return Err(AuditError::Config(
            "queue_capacity must be at least 1".into(),
        ));
    }
    if !(1..=MAX_APPEND_BATCH).contains(&config.max_batch) {
        return Err(AuditError::Config(format!(
            "max_batch must be 1 to {MAX_APPEND_BATCH}"
        )));
    }
    if let Some(witness) = &config.http_witness {
        witness
            .check()
            .map_err(|e| AuditError::Config(format!("witness_url: {e}")))?;
    }
    Ok(())
}

/// Refuses a log that no longer holds the last checkpoint its witness file has: restored from
/// a backup older than the witness, or cut back. Signing over it would fork the log from the
/// checkpoints that have already left the database (the sequencer of a shared log checks the
/// same at start and on every pass, `seen.rs`). Alerts as the sequencer does.
async fn check_witness_floor(
    store: &dyn AuditStore,
    config: &AuditorConfig,
    verifier: &VerifierKey,
) -> Result<(), AuditError> {
    let seen = seen::Seen::from_witness(config.witness_path.as_deref(), verifier, &config.origin)
        .map_err(AuditError::Checkpoint)?;
    match seen.check_floor(store).await {
        Ok(()) => Ok(()),
        Err(seen::Found::Unavailable(e)) => Err(AuditError::Unavailable(Arc::new(e))),
        Err(seen::Found::RolledBack(why) | seen::Found::WrongKey(why)) => {
            tracing::error!(
                target: "wardgate::alert",
                alert = ROLLBACK_ALERT,
                "the audit log is older than its witness file: {why}. This gateway will not \
                 sign or extend it"
            );
            Err(AuditError::Inconsistent(why))
        }
    }
}

/// Rebuilds the tree from the latest checkpoint's saved state and the leaf hashes after it.
async fn resume(store: &dyn AuditStore) -> Result<(TreeBuilder, Option<u64>), AuditError> {
    let unavailable = |e| AuditError::Unavailable(Arc::new(e));
    let latest = store.latest_checkpoint().await.map_err(unavailable)?;
    let mut tree = match &latest {
        Some(cp) => TreeBuilder::from_parts(cp.size, cp.subtrees.clone())
            .filter(|t| t.root() == cp.root)
            .ok_or_else(|| {
                AuditError::Inconsistent(format!(
                    "the stored tree state of checkpoint {} does not give its root",
                    cp.size
                ))
            })?,
        None => TreeBuilder::new(),
    };
    let size = store.size().await.map_err(unavailable)?;
    if size < tree.size() {
        return Err(AuditError::Inconsistent(format!(
            "the log has {size} entries but its latest checkpoint covers {}: entries were removed",
            tree.size()
        )));
    }
    catch_up(store, &mut tree, size).await?;
    Ok((tree, latest.map(|c| c.size)))
}

/// Pushes stored leaf hashes until the tree has `size` leaves.
async fn catch_up(
    store: &dyn AuditStore,
    tree: &mut TreeBuilder,
    size: u64,
) -> Result<(), AuditError> {
    while tree.size() < size {
        let hashes = store
            .leaf_hashes(tree.size(), MAX_READ)
            .await
            .map_err(|e| AuditError::Unavailable(Arc::new(e)))?;
        if hashes.is_empty() {
            return Err(AuditError::Inconsistent(format!(
                "entry {} is missing from the store",
                tree.size()
            )));
        }
        for h in hashes.into_iter().take((size - tree.size()) as usize) {
            tree.push(h);
        }
    }
    Ok(())
}

/// How an automatic checkpoint sealed in the background ended.
enum Sealed {
    /// Signed, stored and witnessed at this size.
    At(u64),
    /// Not signed: the store holds a larger checkpoint, so another writer appended; this
    /// writer reads what it missed before signing again (a rare, slower path).
    Behind,
}

/// An automatic checkpoint on its way to the store and the witness file.
struct Sealing {
    size: u64,
    task: tokio::task::JoinHandle<Result<Sealed, AuditError>>,
}

/// Gathers whatever else is queued behind `first`, up to `max_batch` events; a non-append
/// command met on the way is left in `deferred`, to be handled right after the batch.
async fn gather(
    rx: &mut mpsc::Receiver<Command>,
    deferred: &mut Option<Command>,
    first: AuditEvent,
    reply: Reply,
    max_batch: usize,
) -> (Vec<AuditEvent>, Vec<Reply>) {
    let mut events = vec![first];
    let mut replies = vec![reply];
    // The previous commit's replies have just woken its callers, and many will append again
    // at once. Yielding while the queue still grows lets them join this commit instead of
    // each paying for the next one; it never waits on a timer, so a lone event goes out
    // immediately.
    let mut queued = rx.len();
    for _ in 0..MAX_GATHER_YIELDS {
        if queued + 1 >= max_batch {
            break;
        }
        tokio::task::yield_now().await;
        let now = rx.len();
        if now == queued {
            break;
        }
        queued = now;
    }
    while events.len() < max_batch {
        match rx.try_recv() {
            Ok(Command::Append(event, reply)) => {
                events.push(event);
                replies.push(reply);
            }
            Ok(other) => {
                *deferred = Some(other);
                break;
            }
            Err(_) => break,
        }
    }
    (events, replies)
}

struct Writer {
    store: Arc<dyn AuditStore>,
    signer: Arc<SignerKey>,
    config: AuditorConfig,
    tree: TreeBuilder,
    last_checkpoint: Option<u64>,
    witness: Witnesses,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    /// A non-append command met while gathering a batch, handled right after it.
    deferred: Option<Command>,
    /// Set when this writer's tree no longer matches the store; every later append fails.
    broken: Option<String>,
    /// The automatic checkpoint being sealed, if one is.
    sealing: Option<Sealing>,
    /// The runtime automatic checkpoints are sealed on: the one `start` was called on.
    sealer: tokio::runtime::Handle,
}

impl Writer {
    /// Runs the writer on a thread of its own, with a single-threaded runtime for its queue and
    /// timer, for a store that blocks ([`AuditStore::blocks`]). Automatic checkpoints are still
    /// sealed on the caller's runtime, so their commits and witness flushes never hold up the
    /// appends queued meanwhile.
    fn run_on_own_thread(self) -> Result<(), AuditError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(cannot_start)?;
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                crate::store::allow_blocking_on_this_thread();
                runtime.block_on(self.run());
            })
            .map_err(cannot_start)?;
        Ok(())
    }

    async fn run(mut self) {
        let interval = self.config.checkpoint_interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let command = match self.deferred.take() {
                Some(c) => Some(c),
                None => tokio::select! {
                    c = self.rx.recv() => c,
                    _ = ticker.tick() => {
                        self.collect_sealed(false).await;
                        if self.uncheckpointed() > 0 {
                            self.seal_in_background().await;
                        }
                        continue;
                    }
                },
            };
            match command {
                Some(Command::Append(event, reply)) => self.batch(event, reply).await,
                Some(Command::Checkpoint(reply)) => {
                    let _ = reply.send(self.checkpoint().await);
                }
                Some(Command::Shutdown(reply)) => {
                    let _ = reply.send(self.drain_and_stop().await);
                    return;
                }
                None => {
                    // Every handle is gone: seal what was written.
                    self.collect_sealed(true).await;
                    if self.uncheckpointed() > 0 {
                        self.checkpoint_logged().await;
                    }
                    self.witness.flush().await;
                    return;
                }
            }
        }
    }

    /// Entries not covered by a checkpoint, counting the one being sealed as done.
    fn uncheckpointed(&self) -> u64 {
        let sealed = self.last_checkpoint.unwrap_or(0);
        let sealing = self.sealing.as_ref().map_or(0, |s| s.size);
        self.tree.size().saturating_sub(sealed.max(sealing))
    }

    /// Gathers whatever else is queued (up to `max_batch`) behind `first` and commits it.
    async fn batch(&mut self, first: AuditEvent, reply: Reply) {
        let (events, replies) = gather(
            &mut self.rx,
            &mut self.deferred,
            first,
            reply,
            self.config.max_batch,
        )
        .await;
        self.commit(events, replies).await;
    }

    async fn commit(&mut self, events: Vec<AuditEvent>, replies: Vec<Reply>) {
        if let Some(why) = &self.broken {
            let e = AuditError::Inconsistent(why.clone());
            for r in replies {
                let _ = r.send(Err(e.clone()));
            }
            return;
        }
        let n = events.len();
        let started = std::time::Instant::now();
        let result = match self.store.append(events).await {
            Ok(entries) if entries.len() == n => self.absorb(&entries).await.map(|()| entries),
            Ok(_) => Err(AuditError::Inconsistent(
                "the store stored a different number of events than given".into(),
            )),
            Err(e) => Err(AuditError::Unavailable(Arc::new(e))),
        };
        crate::metrics::committed(started, result.is_ok());
        match result {
            Ok(entries) => {
                self.shared.size.store(self.tree.size(), Ordering::Release);
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                for (r, entry) in replies.into_iter().zip(&entries) {
                    let _ = r.send(Ok(entry.seq));
                }
                if self.uncheckpointed() >= self.config.checkpoint_every {
                    self.seal_in_background().await;
                }
            }
            Err(e) => {
                tracing::error!(error = %crate::causes::Causes(&e), events = n, "audit commit failed");
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
            }
        }
    }

    /// Adds committed entries to the tree, first catching up on entries another writer added.
    async fn absorb(&mut self, entries: &[AuditEntry]) -> Result<(), AuditError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.seq < self.tree.size() {
            let why = format!(
                "the store assigned seq {} but this writer already has {} entries",
                first.seq,
                self.tree.size()
            );
            self.broken = Some(why.clone());
            return Err(AuditError::Inconsistent(why));
        }
        if first.seq > self.tree.size() {
            tracing::warn!(
                expected = self.tree.size(),
                got = first.seq,
                "another writer appended to the audit log; catching up"
            );
            if let Err(e) = catch_up(self.store.as_ref(), &mut self.tree, first.seq).await {
                self.broken = Some(e.to_string());
                return Err(e);
            }
        }
        for entry in entries {
            if entry.seq != self.tree.size() {
                let why = format!("the store returned seq {} out of order", entry.seq);
                self.broken = Some(why.clone());
                return Err(AuditError::Inconsistent(why));
            }
            self.tree.push(entry.leaf_hash);
        }
        Ok(())
    }

    /// Signs, stores and witnesses a checkpoint of the current tree on a task of its own: the
    /// store's commit and the witness file's flush would otherwise sit in front of every append
    /// queued behind this batch. Only one at a time, so checkpoints reach the store and the
    /// witness in order; while one is in flight the next waits for a later occasion.
    async fn seal_in_background(&mut self) {
        // Collecting may have signed in line (another writer's checkpoint was larger).
        if !self.collect_sealed(false).await || self.broken.is_some() || self.uncheckpointed() == 0
        {
            return;
        }
        let size = self.tree.size();
        let job = Seal {
            store: self.store.clone(),
            signer: self.signer.clone(),
            witnesses: self.witness.clone(),
            checkpoint: Checkpoint {
                origin: self.config.origin.clone(),
                size,
                root: self.tree.root(),
            },
            subtrees: self.tree.subtrees().to_vec(),
        };
        self.sealing = Some(Sealing {
            size,
            task: self.sealer.spawn(job.run()),
        });
    }

    /// Takes the outcome of the background checkpoint once it has finished (with `wait`, waits
    /// for it). Returns whether none is in flight any more.
    async fn collect_sealed(&mut self, wait: bool) -> bool {
        let Some(sealing) = self.sealing.take() else {
            return true;
        };
        if !wait && !sealing.task.is_finished() {
            self.sealing = Some(sealing);
            return false;
        }
        match sealing.task.await {
            Ok(Ok(Sealed::At(size))) => {
                self.last_checkpoint = Some(self.last_checkpoint.map_or(size, |l| l.max(size)));
            }
            Ok(Ok(Sealed::Behind)) => {
                // The in-line path reads the other writer's entries, then signs.
                if let Err(e) = self.checkpoint_in_line().await {
                    tracing::error!(error = %crate::causes::Causes(&e), size = self.tree.size(), "audit checkpoint failed");
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %crate::causes::Causes(&e), size = sealing.size, "audit checkpoint failed");
            }
            Err(e) => {
                tracing::error!(error = %crate::causes::Causes(&e), size = sealing.size, "audit checkpoint task failed");
            }
        }
        true
    }

    async fn checkpoint_logged(&mut self) {
        if let Err(e) = self.checkpoint().await {
            tracing::error!(error = %crate::causes::Causes(&e), size = self.tree.size(), "audit checkpoint failed");
        }
    }

    /// Signs, stores, then witnesses a checkpoint of the current tree, after the one being
    /// sealed in the background (if any), so that the witness file stays in order.
    async fn checkpoint(&mut self) -> Result<SignedCheckpoint, AuditError> {
        self.collect_sealed(true).await;
        self.checkpoint_in_line().await
    }

    /// [`Self::checkpoint`] with nothing in flight.
    async fn checkpoint_in_line(&mut self) -> Result<SignedCheckpoint, AuditError> {
        if let Some(why) = &self.broken {
            return Err(AuditError::Inconsistent(why.clone()));
        }
        // Another writer (`wardgate keys` from the command line) may have appended, and signed,
        // since this one's last commit: sign the whole log, so that this checkpoint never
        // trails one already in the store and the witness file only grows.
        let stored = self
            .store
            .size()
            .await
            .map_err(|e| AuditError::Unavailable(Arc::new(e)))?;
        if stored > self.tree.size() {
            if let Err(e) = catch_up(self.store.as_ref(), &mut self.tree, stored).await {
                self.broken = Some(e.to_string());
                return Err(e);
            }
            self.shared.size.store(self.tree.size(), Ordering::Release);
        }
        let checkpoint = Checkpoint {
            origin: self.config.origin.clone(),
            size: self.tree.size(),
            root: self.tree.root(),
        };
        let signed = seal(
            self.store.as_ref(),
            &self.signer,
            &self.witness,
            &checkpoint,
            self.tree.subtrees().to_vec(),
        )
        .await?;
        self.last_checkpoint = Some(checkpoint.size);
        Ok(signed)
    }

    async fn drain_and_stop(&mut self) -> Result<(), AuditError> {
        self.collect_sealed(true).await;
        // Refuse new work, then commit what is already queued.
        self.rx.close();
        loop {
            let command = match self.deferred.take() {
                Some(c) => c,
                None => match self.rx.recv().await {
                    Some(c) => c,
                    None => break,
                },
            };
            match command {
                Command::Append(event, reply) => self.batch(event, reply).await,
                Command::Checkpoint(reply) => {
                    let _ = reply.send(self.checkpoint().await);
                }
                Command::Shutdown(reply) => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        let sealed = if self.uncheckpointed() > 0 {
            self.checkpoint().await.map(drop)
        } else {
            Ok(())
        };
        // The witness gets the final checkpoint (or another try at the last one) before the
        // writer reports that it has stopped.
        self.witness.flush().await;
        sealed
    }
}

/// The operating system refused the writer's thread or its runtime.
fn cannot_start(e: std::io::Error) -> AuditError {
    AuditError::Unavailable(Arc::new(AuditStoreError::Unavailable(Box::new(e))))
}

/// An automatic checkpoint, sealed on its own task ([`Writer::seal_in_background`]).
struct Seal {
    store: Arc<dyn AuditStore>,
    signer: Arc<SignerKey>,
    witnesses: Witnesses,
    checkpoint: Checkpoint,
    subtrees: Vec<Hash>,
}

impl Seal {
    async fn run(self) -> Result<Sealed, AuditError> {
        // Another writer (`wardgate keys` from the command line) may have appended and signed
        // since this writer last caught up. Its checkpoint then covers more than this one, and
        // signing this one would put a smaller checkpoint after it in the witness file.
        let latest = self
            .store
            .latest_checkpoint()
            .await
            .map_err(|e| AuditError::Unavailable(Arc::new(e)))?;
        if latest.is_some_and(|l| l.size > self.checkpoint.size) {
            return Ok(Sealed::Behind);
        }
        seal(
            self.store.as_ref(),
            &self.signer,
            &self.witnesses,
            &self.checkpoint,
            self.subtrees,
        )
        .await?;
        Ok(Sealed::At(self.checkpoint.size))
    }
}

/// Signs `checkpoint`, stores it with the tree state `subtrees`, appends it to the witness
/// file, then hands it to the HTTP witness (without waiting for it).
async fn seal(
    store: &dyn AuditStore,
    signer: &SignerKey,
    witnesses: &Witnesses,
    checkpoint: &Checkpoint,
    subtrees: Vec<Hash>,
) -> Result<SignedCheckpoint, AuditError> {
    let signed = checkpoint
        .sign(signer)
        .map_err(|e| AuditError::Checkpoint(e.to_string()))?;
    let stored = StoredCheckpoint {
        size: checkpoint.size,
        root: checkpoint.root,
        note: signed.note.clone(),
        subtrees: subtrees.clone(),
        created_at: Timestamp::now(),
    };
    store
        .add_checkpoint(&stored)
        .await
        .map_err(|e| AuditError::Unavailable(Arc::new(e)))?;
    append_to_witness_file(witnesses, signed.note.clone()).await?;
    if let Some(feed) = &witnesses.http {
        feed.offer(&signed, &subtrees);
    }
    Ok(signed)
}

/// Appends a checkpoint's signed note to the witness file, if there is one, off the runtime's
/// threads.
async fn append_to_witness_file(witnesses: &Witnesses, note: String) -> Result<(), AuditError> {
    let Some(witness) = &witnesses.file else {
        return Ok(());
    };
    let witness = witness.clone();
    tokio::task::spawn_blocking(move || match witness.lock() {
        Ok(mut w) => w.append(&note),
        Err(_) => Err(std::io::Error::other("witness file lock poisoned")),
    })
    .await
    .map_err(|e| AuditError::Checkpoint(format!("witness task failed: {e}")))?
    .map_err(|e| AuditError::Checkpoint(format!("cannot write the witness file: {e}")))
}

#[cfg(test)]
mod http_witness_tests;
#[cfg(test)]
mod tests;
