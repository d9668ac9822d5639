//! The writer of a log that many instances share ([`crate::shared`]): an enqueuing writer that
//! answers each append once its event is durably queued, and a sequencer that, while this
//! instance holds the lease, moves queued events into the log, extends the tree and signs the
//! checkpoints.
//!
//! The two run as separate tasks, so a request's commit never waits behind a sequencing pass or
//! a checkpoint signature. The writer kicks the sequencer after each commit, so on the instance
//! holding the lease its own events are sequenced at once; the others' are seen within
//! [`SequencerConfig::poll_interval`].
//!
//! A queued row this release cannot read ([`crate::quarantine`]): an unreadable one is set aside
//! by the store's sequencing transaction, and this sequencer logs it
//! ([`crate::quarantine::QUARANTINE_ALERT`]); at one from a newer release the store stops, and
//! this sequencer signs what it sequenced, hands the lease back and stays off it for
//! [`SequencerConfig::newer_release_backoff`], so that an instance of the newer release takes it
//! ([`crate::quarantine::NEWER_RELEASE_ALERT`], logged once per row). Appends go on being queued
//! and answered meanwhile: queueing does not read events back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};

use super::{
    AuditError, AuditorConfig, Command, Reply, Shared, Witnesses, catch_up, gather, resume, seal,
};
use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use crate::event::{AuditEvent, EventType};
use crate::merkle::TreeBuilder;
use crate::note::SignerKey;
use crate::quarantine::{NEWER_RELEASE_ALERT, QUARANTINE_ALERT};
use crate::shared::{Lease, Sequenced, SharedLog};
use crate::store::{AuditEntry, AuditStoreError};

/// How an instance takes part in sequencing a shared log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequencerConfig {
    /// This instance's name on the lease: unique per process.
    pub holder: String,
    /// How long a lease lasts without renewal: how soon another instance takes over when the
    /// holder dies. Renewed every third of it.
    pub lease_ttl: Duration,
    /// How often the holder looks for other instances' queued events (its own it sequences at
    /// once); the sequencer lag of other instances' events is about this long.
    pub poll_interval: Duration,
    /// How long this instance stays off the lease after it met a queued event from a newer
    /// release ([`crate::quarantine`]), so that an instance of that release takes the lease
    /// and sequences it. Within [`NEWER_RELEASE_BACKOFF_BOUNDS`]; default
    /// [`DEFAULT_NEWER_RELEASE_BACKOFF`].
    pub newer_release_backoff: Duration,
}

/// The default of [`SequencerConfig::newer_release_backoff`]: long enough for an instance of
/// the newer release to ask for the lease several times (every third of its 5 s lease).
pub const DEFAULT_NEWER_RELEASE_BACKOFF: Duration = Duration::from_secs(30);
/// The shortest and the longest [`SequencerConfig::newer_release_backoff`].
pub const NEWER_RELEASE_BACKOFF_BOUNDS: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));

impl SequencerConfig {
    /// A fresh holder name (`prefix`, process id and a random part) with the default timings:
    /// a 5 s lease, a 50 ms poll.
    pub fn new(prefix: &str) -> Self {
        let random: u64 = rand::random();
        Self {
            holder: format!("{prefix}/{}/{random:016x}", std::process::id()),
            lease_ttl: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
            newer_release_backoff: DEFAULT_NEWER_RELEASE_BACKOFF,
        }
    }

    fn check(&self) -> Result<(), AuditError> {
        if self.holder.is_empty() || self.holder.len() > 256 {
            return Err(AuditError::Config(
                "the sequencer holder name must be 1-256 characters".into(),
            ));
        }
        if self.lease_ttl < Duration::from_millis(100) || self.lease_ttl > Duration::from_secs(600)
        {
            return Err(AuditError::Config(
                "the sequencer lease must last 100 ms to 10 min".into(),
            ));
        }
        if self.poll_interval.is_zero() || self.poll_interval >= self.lease_ttl {
            return Err(AuditError::Config(
                "the sequencer poll interval must be positive and shorter than the lease".into(),
            ));
        }
        let (shortest, longest) = NEWER_RELEASE_BACKOFF_BOUNDS;
        if !(shortest..=longest).contains(&self.newer_release_backoff) {
            return Err(AuditError::Config(
                "the sequencer's back-off after a newer release's event must be 100 ms to 1 h"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// What the enqueuing writer asks of the sequencer.
pub(super) enum SeqCommand {
    Checkpoint(oneshot::Sender<Result<SignedCheckpoint, AuditError>>),
    Stop(oneshot::Sender<Result<(), AuditError>>),
}

/// Starts both tasks on the current runtime after one sequencing pass (which takes the lease if
/// it is free, and so fails start-up on a log that cannot be resumed). Returns the command
/// channel's sender for the [`super::Auditor`] handle.
pub(super) async fn start(
    store: Arc<dyn SharedLog>,
    signer: SignerKey,
    config: AuditorConfig,
    sequencer: SequencerConfig,
    witness: Witnesses,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
) -> Result<(), AuditError> {
    sequencer.check()?;
    let kick = Arc::new(Notify::new());
    let (seq_tx, seq_rx) = mpsc::channel(8);
    let mut seq = Sequencer {
        store: store.clone(),
        signer,
        max_batch: config.max_batch,
        config,
        sequencer,
        witness,
        shared: shared.clone(),
        rx: seq_rx,
        kick: kick.clone(),
        lease: None,
        tried_at: None,
        tree: None,
        last_checkpoint: None,
        checkpointed_at: Instant::now(),
        wrong_key: false,
        held_until: None,
        newer_row: None,
    };
    seq.pass().await?;
    let max_batch = seq.max_batch;
    tokio::spawn(seq.run());
    let writer = Enqueuer {
        store,
        rx,
        deferred: None,
        shared,
        kick,
        seq_tx,
        max_batch,
    };
    tokio::spawn(writer.run());
    Ok(())
}

/// Commits appends to the queue.
struct Enqueuer {
    store: Arc<dyn SharedLog>,
    rx: mpsc::Receiver<Command>,
    deferred: Option<Command>,
    shared: Arc<Shared>,
    kick: Arc<Notify>,
    seq_tx: mpsc::Sender<SeqCommand>,
    max_batch: usize,
}

impl Enqueuer {
    async fn run(mut self) {
        loop {
            let command = match self.deferred.take() {
                Some(c) => Some(c),
                None => self.rx.recv().await,
            };
            match command {
                Some(Command::Append(event, reply)) => self.batch(event, reply).await,
                Some(Command::Checkpoint(reply)) => {
                    if let Err(mpsc::error::SendError(SeqCommand::Checkpoint(reply))) =
                        self.seq_tx.send(SeqCommand::Checkpoint(reply)).await
                    {
                        let _ = reply.send(Err(AuditError::Closed));
                    }
                }
                Some(Command::Shutdown(reply)) => {
                    // Refuse new work, commit what is already queued, then let the sequencer
                    // sequence it (if this instance holds the lease) and stop.
                    self.rx.close();
                    while let Some(command) = match self.deferred.take() {
                        Some(c) => Some(c),
                        None => self.rx.recv().await,
                    } {
                        match command {
                            Command::Append(event, reply) => self.batch(event, reply).await,
                            Command::Checkpoint(r) => {
                                let _ = r.send(Err(AuditError::Closed));
                            }
                            Command::Shutdown(r) => {
                                let _ = r.send(Ok(()));
                            }
                        }
                    }
                    self.stop_sequencer(reply).await;
                    return;
                }
                None => {
                    let (reply, _) = oneshot::channel();
                    self.stop_sequencer(reply).await;
                    return;
                }
            }
        }
    }

    async fn stop_sequencer(&self, reply: oneshot::Sender<Result<(), AuditError>>) {
        if let Err(mpsc::error::SendError(SeqCommand::Stop(reply))) =
            self.seq_tx.send(SeqCommand::Stop(reply)).await
        {
            let _ = reply.send(Err(AuditError::Closed));
        }
    }

    async fn batch(&mut self, first: AuditEvent, reply: Reply) {
        let (events, replies) = gather(
            &mut self.rx,
            &mut self.deferred,
            first,
            reply,
            self.max_batch,
        )
        .await;
        let n = events.len();
        match self.store.enqueue(events).await {
            Ok(ids) if ids.len() == n => {
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                for (r, id) in replies.into_iter().zip(ids) {
                    let _ = r.send(Ok(id));
                }
                self.kick.notify_one();
            }
            Ok(_) => {
                let e = AuditError::Inconsistent(
                    "the store queued a different number of events than given".into(),
                );
                tracing::error!(error = %e, events = n, "audit commit failed");
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
            }
            Err(e) => {
                let e = AuditError::Unavailable(Arc::new(e));
                tracing::error!(error = %e, events = n, "audit commit failed");
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Holds (or waits for) the lease, sequences the queue and signs checkpoints.
struct Sequencer {
    store: Arc<dyn SharedLog>,
    signer: SignerKey,
    config: AuditorConfig,
    sequencer: SequencerConfig,
    max_batch: usize,
    witness: Witnesses,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<SeqCommand>,
    kick: Arc<Notify>,
    /// The lease and when it was last taken or renewed (this instance's clock).
    lease: Option<(Lease, Instant)>,
    /// When this instance last asked for the lease while another held it.
    tried_at: Option<Instant>,
    /// The tree, while this instance holds the lease (rebuilt from the store on taking it).
    tree: Option<TreeBuilder>,
    last_checkpoint: Option<u64>,
    checkpointed_at: Instant,
    /// Set when this instance's key did not sign the log ([`Self::check_key`]): it never
    /// takes the lease again.
    wrong_key: bool,
    /// Until when this instance stays off the lease, having handed it to a newer release
    /// ([`Self::hand_back`]).
    held_until: Option<Instant>,
    /// The queued row from a newer release this instance last stopped at (logged once).
    newer_row: Option<u64>,
}

impl Sequencer {
    async fn run(mut self) {
        // Errors are logged once per change of kind, not once per poll, so an outage does not
        // flood the log.
        let mut last_error: Option<String> = None;
        loop {
            let wait = if self.lease.is_some() {
                self.sequencer.poll_interval
            } else {
                self.sequencer.lease_ttl / 3
            };
            tokio::select! {
                command = self.rx.recv() => match command {
                    Some(SeqCommand::Checkpoint(reply)) => {
                        let _ = reply.send(self.checkpoint_now().await);
                        continue;
                    }
                    Some(SeqCommand::Stop(reply)) => {
                        let _ = reply.send(self.stop().await);
                        return;
                    }
                    None => {
                        if let Err(e) = self.stop().await {
                            tracing::error!(error = %e, "audit sequencer stopped with an error");
                        }
                        return;
                    }
                },
                _ = self.kick.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            match self.pass().await {
                Ok(()) => {
                    if last_error.take().is_some() {
                        tracing::info!("audit sequencing resumed");
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(&text) {
                        tracing::error!(error = %e, "audit sequencing failed; events stay queued");
                        last_error = Some(text);
                    }
                }
            }
        }
    }

    /// Takes or renews the lease when due, then sequences everything queued (in batches) if
    /// this instance holds it, signing checkpoints as configured.
    async fn pass(&mut self) -> Result<(), AuditError> {
        self.renew(false).await?;
        let Some((lease, _)) = self.lease.clone() else {
            return Ok(());
        };
        if self.tree.is_none() {
            self.check_key(&lease).await?;
            let (tree, last) = resume(self.store.as_ref()).await?;
            self.shared.size.store(tree.size(), Ordering::Release);
            self.tree = Some(tree);
            self.last_checkpoint = last;
        }
        loop {
            match self
                .store
                .sequence(&lease, self.max_batch)
                .await
                .map_err(unavailable)?
            {
                Sequenced::LeaseLost => {
                    tracing::warn!(
                        holder = %lease.holder,
                        epoch = lease.epoch,
                        "lost the audit sequencer lease to another instance"
                    );
                    self.lease = None;
                    self.tree = None;
                    return Ok(());
                }
                Sequenced::NewerRelease {
                    entries,
                    queue_id,
                    what,
                } => {
                    self.absorb(&entries).await?;
                    report_quarantined(&entries);
                    // What came before the row is signed here; the newer release goes on.
                    let signed = if self.uncheckpointed() > 0 {
                        self.sign().await.map(drop)
                    } else {
                        Ok(())
                    };
                    self.hand_back(&lease, queue_id, &what).await;
                    return signed;
                }
                Sequenced::Entries(entries) => {
                    let n = entries.len();
                    self.absorb(&entries).await?;
                    report_quarantined(&entries);
                    if self.uncheckpointed() >= self.config.checkpoint_every {
                        self.sign().await?;
                    }
                    if n < self.max_batch {
                        break;
                    }
                }
            }
        }
        if self.uncheckpointed() > 0
            && (self.checkpointed_at.elapsed() >= self.config.checkpoint_interval
                || self.last_checkpoint.is_none())
        {
            self.sign().await?;
        }
        Ok(())
    }

    /// Refuses to sequence a log whose latest checkpoint this instance's key did not sign: its
    /// checkpoints would not verify with the log's public key. Checked at every take of the
    /// lease, not only at start, since another instance may have signed the first checkpoint
    /// of a new log with another key meanwhile. The lease is given back at once, and this
    /// instance never asks for it again; its events are still queued, for the others.
    async fn check_key(&mut self, lease: &Lease) -> Result<(), AuditError> {
        let latest = self.store.latest_checkpoint().await.map_err(unavailable)?;
        let Some(latest) = latest else {
            return Ok(());
        };
        if crate::note::open(&latest.note, &[self.signer.verifier()]).is_ok() {
            return Ok(());
        }
        self.wrong_key = true;
        self.lease = None;
        if let Err(e) = self.store.release_lease(lease).await {
            tracing::warn!(error = %e, "could not release the audit sequencer lease; it lapses by itself");
        }
        Err(AuditError::Config(format!(
            "this instance's audit signing key did not sign the log's last checkpoint (size {}): \
             it will not sequence or sign this log. Give every instance the key that signed it \
             (WARDGATE_AUDIT_SIGNING_KEY)",
            latest.size
        )))
    }

    /// Gives the lease up after sequencing stopped at queued row `queue_id`, from a newer
    /// release, and stays off it for the back-off, so that an instance of that release takes
    /// it. Logged once per row, however often this instance meets it again.
    async fn hand_back(&mut self, lease: &Lease, queue_id: u64, what: &str) {
        let backoff = self.sequencer.newer_release_backoff;
        if self.newer_row != Some(queue_id) {
            tracing::error!(
                target: "wardgate::alert",
                alert = NEWER_RELEASE_ALERT,
                queue_id,
                what,
                "queued audit event {queue_id} is from a newer release of wardgate ({what}): \
                 this instance cannot read it and sequences nothing past it. An instance of a \
                 newer release must sequence; finish the upgrade. Events are still queued and \
                 requests answered; this instance hands the sequencer lease back and stays off \
                 it for {backoff:?} at a time"
            );
            self.newer_row = Some(queue_id);
        }
        self.lease = None;
        self.tree = None;
        self.held_until = Some(Instant::now() + backoff);
        if let Err(e) = self.store.release_lease(lease).await {
            tracing::warn!(error = %e, "could not release the audit sequencer lease; it lapses by itself");
        }
    }

    /// Whether this instance is staying off the lease for a newer release.
    fn held_back(&self) -> bool {
        self.held_until.is_some_and(|until| Instant::now() < until)
    }

    /// Asks for the lease when this instance holds it and a third of it has passed (renewal),
    /// or holds none and a third of a lease has passed since it last asked; or now, if `now`.
    /// Never while it stays off the lease for a newer release.
    async fn renew(&mut self, now: bool) -> Result<(), AuditError> {
        if self.wrong_key || self.held_back() {
            return Ok(());
        }
        let third = self.sequencer.lease_ttl / 3;
        let due = now
            || match (&self.lease, self.tried_at) {
                (Some((_, at)), _) => at.elapsed() >= third,
                (None, Some(at)) => at.elapsed() >= third,
                (None, None) => true,
            };
        if !due {
            return Ok(());
        }
        let asked = Instant::now();
        let got = self
            .store
            .acquire_lease(&self.sequencer.holder, self.sequencer.lease_ttl)
            .await
            .map_err(unavailable)?;
        match got {
            Some(lease) => {
                let same = self
                    .lease
                    .as_ref()
                    .is_some_and(|(l, _)| l.epoch == lease.epoch);
                if !same {
                    tracing::info!(
                        holder = %lease.holder,
                        epoch = lease.epoch,
                        "took the audit sequencer lease"
                    );
                    // Whatever this instance knew of the tree may be stale: rebuild it.
                    self.tree = None;
                }
                self.lease = Some((lease, asked));
                self.tried_at = None;
            }
            None => {
                if self.lease.take().is_some() {
                    tracing::warn!("the audit sequencer lease passed to another instance");
                }
                self.tree = None;
                self.tried_at = Some(asked);
            }
        }
        Ok(())
    }

    /// Adds sequenced entries to the tree. Entries appended past the tree by someone else
    /// (a direct append) are read first; an overlap means the tree is stale, so it is dropped
    /// and rebuilt from the store on the next pass.
    async fn absorb(&mut self, entries: &[AuditEntry]) -> Result<(), AuditError> {
        // Taken out while it is extended, and put back only if every entry fitted.
        let Some(mut tree) = self.tree.take() else {
            return Ok(());
        };
        if let Some(first) = entries.first() {
            if first.seq < tree.size() {
                return Err(AuditError::Inconsistent(format!(
                    "the store sequenced at {} but this sequencer's tree has {} entries; \
                     rebuilding it from the store",
                    first.seq,
                    tree.size()
                )));
            }
            if first.seq > tree.size() {
                catch_up(self.store.as_ref(), &mut tree, first.seq).await?;
            }
        }
        for entry in entries {
            if entry.seq != tree.size() {
                return Err(AuditError::Inconsistent(format!(
                    "the store returned seq {} out of order; rebuilding the tree from the store",
                    entry.seq
                )));
            }
            tree.push(entry.leaf_hash);
        }
        self.shared.size.store(tree.size(), Ordering::Release);
        self.tree = Some(tree);
        Ok(())
    }

    fn uncheckpointed(&self) -> u64 {
        self.tree.as_ref().map_or(0, |t| {
            t.size().saturating_sub(self.last_checkpoint.unwrap_or(0))
        })
    }

    /// Signs, stores and witnesses a checkpoint of the tree (only the lease holder has one).
    async fn sign(&mut self) -> Result<SignedCheckpoint, AuditError> {
        let held_for = self.newer_row.filter(|_| self.held_back());
        let Some(tree) = self.tree.as_mut() else {
            return Err(AuditError::Checkpoint(match held_for {
                Some(id) => format!(
                    "queued audit event {id} is from a newer release: this instance handed the \
                     sequencer lease back, and an instance of that release signs the checkpoints"
                ),
                None => "another instance holds the audit sequencer lease; it signs the \
                         checkpoints"
                    .into(),
            }));
        };
        // A direct append (or a previous holder) may have gone further than this tree.
        let stored = self.store.size().await.map_err(unavailable)?;
        if stored > tree.size() {
            catch_up(self.store.as_ref(), tree, stored).await?;
            self.shared.size.store(tree.size(), Ordering::Release);
        }
        let checkpoint = Checkpoint {
            origin: self.config.origin.clone(),
            size: tree.size(),
            root: tree.root(),
        };
        let signed = seal(
            self.store.as_ref(),
            &self.signer,
            &self.witness,
            &checkpoint,
            tree.subtrees().to_vec(),
        )
        .await?;
        self.last_checkpoint = Some(checkpoint.size);
        self.checkpointed_at = Instant::now();
        Ok(signed)
    }

    /// An explicit checkpoint: asks for the lease now (not at the next renewal), sequences
    /// what is queued, and signs; only the lease holder can.
    async fn checkpoint_now(&mut self) -> Result<SignedCheckpoint, AuditError> {
        self.renew(true).await?;
        self.pass().await?;
        self.sign().await
    }

    /// Sequences what is queued (if this instance holds the lease or it is free), signs a final
    /// checkpoint, gives the lease up, so the next sequencer need not wait for it to lapse, and
    /// waits for the HTTP witness to be tried with this instance's last checkpoint.
    async fn stop(&mut self) -> Result<(), AuditError> {
        self.tried_at = None;
        // Renew now, so the final pass cannot run out of lease half-way.
        let result = match self.renew(true).await {
            Ok(()) => self.pass().await,
            Err(e) => Err(e),
        };
        let signed = if result.is_ok() && self.uncheckpointed() > 0 {
            self.sign().await.map(drop)
        } else {
            Ok(())
        };
        if let Some((lease, _)) = self.lease.take()
            && let Err(e) = self.store.release_lease(&lease).await
        {
            tracing::warn!(
                error = %e,
                "could not release the audit sequencer lease; it lapses by itself"
            );
        }
        self.witness.flush().await;
        result.and(signed)
    }
}

/// Logs each queued row the store set aside in this batch (its quarantine event is in the log).
fn report_quarantined(entries: &[AuditEntry]) {
    for e in entries
        .iter()
        .filter(|e| e.event.event_type == EventType::AuditQuarantined)
    {
        let reason = e.event.deny_reason.as_deref().unwrap_or_default();
        let detail = e.event.detail.as_deref().unwrap_or_default();
        tracing::error!(
            target: "wardgate::alert",
            alert = QUARANTINE_ALERT,
            seq = e.seq,
            reason,
            detail,
            "a queued audit row that no release can read ({reason}) was set aside: its bytes \
             are in the quarantine table (audit_quarantine), and the log records it at seq {} \
             ({detail}). Find out what wrote it: damage, or someone with access to the database",
            e.seq
        );
    }
}

fn unavailable(e: AuditStoreError) -> AuditError {
    AuditError::Unavailable(Arc::new(e))
}
