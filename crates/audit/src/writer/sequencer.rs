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

use super::seen::{Found, ROLLBACK_ALERT, Seen, WRONG_KEY_ALERT};
use super::{
    AuditError, AuditFault, AuditorConfig, Command, Reply, Shared, Witnesses, gather, seal,
};
use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use crate::event::{AuditEvent, EventType};
use crate::merkle::{Hash, TreeBuilder, leaf_hash};
use crate::note::SignerKey;
use crate::quarantine::{NEWER_RELEASE_ALERT, QUARANTINE_ALERT};
use crate::queue_tag::{QueueKey, queued_form};
use crate::shared::{Lease, Sequenced, SharedLog};
use crate::store::{AuditEntry, AuditStoreError, MAX_READ};

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

/// How many leases (plus one checkpoint interval) queued events may wait, with no larger
/// checkpoint signed, before every instance raises [`STALL_ALERT`] (30 s at the default 5 s
/// lease and 10 s interval).
pub const STALL_LEASES: u32 = 4;
/// The name of the alert raised when queued events wait and no instance sequences them.
pub const STALL_ALERT: &str = "audit_sequencing_stalled";

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
    let seen = Seen::from_witness(
        config.witness_path.as_deref(),
        &signer.verifier(),
        &config.origin,
    )
    .map_err(AuditError::Checkpoint)?;
    let kick = Arc::new(Notify::new());
    let (seq_tx, seq_rx) = mpsc::channel(8);
    let queue_key = Arc::new(signer.queue_key());
    let mut seq = Sequencer {
        store: store.clone(),
        signer,
        queue_key: queue_key.clone(),
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
        seen,
        watched_at: None,
        waiting_since: None,
        held_until: None,
        newer_row: None,
    };
    seq.pass().await?;
    let max_batch = seq.max_batch;
    tokio::spawn(seq.run());
    let writer = Enqueuer {
        store,
        queue_key,
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
    queue_key: Arc<QueueKey>,
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
        // An instance whose key did not sign the log fails closed: its events could not be
        // told from forged ones, and it cannot sign the checkpoints that would cover them.
        if let Some(AuditFault::WrongKey(why)) = self.shared.fault.get() {
            let e = AuditError::Config(why.clone());
            for r in replies {
                let _ = r.send(Err(e.clone()));
            }
            return;
        }
        let started = std::time::Instant::now();
        let queued = self.store.enqueue(events, &self.queue_key).await;
        crate::metrics::committed(started, queued.as_ref().is_ok_and(|ids| ids.len() == n));
        match queued {
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
                tracing::error!(error = %crate::causes::Causes(&e), events = n, "audit commit failed");
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
            }
            Err(e) => {
                let e = AuditError::Unavailable(Arc::new(e));
                tracing::error!(error = %crate::causes::Causes(&e), events = n, "audit commit failed");
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
    /// Tags and checks queued rows and the entries made of them ([`crate::queue_tag`]).
    queue_key: Arc<QueueKey>,
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
    /// The largest tree and checkpoint this instance has verified ([`super::seen`]).
    seen: Seen,
    /// When the store was last checked against `seen`.
    watched_at: Option<Instant>,
    /// The log's size when events were last seen waiting with it not growing, and since when
    /// ([`Self::watch_progress`]).
    waiting_since: Option<(u64, Instant)>,
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
                            tracing::error!(error = %crate::causes::Causes(&e), "audit sequencer stopped with an error");
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
                        tracing::error!(error = %crate::causes::Causes(&e), "audit sequencing failed; events stay queued");
                        last_error = Some(text);
                    }
                }
            }
        }
    }

    /// Takes or renews the lease when due, then sequences everything queued (in batches) if
    /// this instance holds it, signing checkpoints as configured.
    async fn pass(&mut self) -> Result<(), AuditError> {
        if let Some(fault) = self.shared.fault.get() {
            return Err(fault.error());
        }
        self.renew(false).await?;
        let due = self
            .watched_at
            .is_none_or(|at| at.elapsed() >= self.sequencer.lease_ttl / 3);
        // Before sequencing from a tree rebuilt from the store, the store is checked against
        // what this instance has seen.
        if due || (self.lease.is_some() && self.tree.is_none()) {
            self.watch().await?;
        }
        let Some((lease, _)) = self.lease.clone() else {
            return Ok(());
        };
        if self.tree.is_none() {
            let mut tree = self.seen.tree().unwrap_or_default();
            let size = self.store.size().await.map_err(unavailable)?;
            self.catch_up(&mut tree, size).await?;
            self.shared.size.store(tree.size(), Ordering::Release);
            self.seen.sequenced(&tree);
            self.tree = Some(tree);
            self.last_checkpoint = self.seen.signed_size();
        }
        loop {
            let at = self.tree.as_ref().map_or(0, TreeBuilder::size);
            match self
                .store
                .sequence(&lease, at, self.max_batch, &self.queue_key)
                .await
                .map_err(unavailable)?
            {
                Sequenced::Moved { size } => self.moved(size).await?,
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

    /// Checks the store against what this instance has seen ([`super::seen`]). A log signed
    /// by another key, or one that went back on what was seen, stops this instance's
    /// sequencing for good ([`Self::stop_for`]).
    async fn watch(&mut self) -> Result<(), AuditError> {
        let found = self
            .seen
            .check(
                self.store.as_ref(),
                &self.signer.verifier(),
                &self.config.origin,
            )
            .await;
        let fault = match found {
            Ok(grew) => {
                self.watched_at = Some(Instant::now());
                // Another instance's checkpoint, verified: remembered in this instance's
                // witness file too, so that a restart still refuses a log rolled back behind
                // it (the file held only this instance's own checkpoints, and a restart forgot
                // what it had seen).
                if let Some(note) = grew
                    && let Err(e) = super::append_to_witness_file(&self.witness, note).await
                {
                    tracing::warn!(
                        error = %crate::causes::Causes(&e),
                        "a checkpoint seen in the shared audit log was not written to this \
                         instance's witness file; a restart remembers only the last one written"
                    );
                }
                return self.watch_progress().await;
            }
            Err(Found::Unavailable(e)) => return Err(unavailable(e)),
            Err(Found::WrongKey(why)) => AuditFault::WrongKey(why),
            Err(Found::RolledBack(why)) => AuditFault::RolledBack(why),
        };
        Err(self.stop_for(fault).await)
    }

    /// Whether the log keeps taking in what is queued. Events waiting while no larger
    /// checkpoint is signed for [`STALL_LEASES`] leases and a checkpoint interval mean that no
    /// instance sequences: a holder that renews
    /// its lease and does nothing, or a lease row written by hand (a holder that does not
    /// exist, an expiry days away). Queued events are committed but neither signed nor
    /// witnessed, and can be removed unnoticed, so every instance raises the alert
    /// ([`STALL_ALERT`]) once, shows it on `/ready`, and says when sequencing goes on.
    async fn watch_progress(&mut self) -> Result<(), AuditError> {
        let pending = self.store.pending_count().await.map_err(unavailable)?;
        // Progress is a larger signed checkpoint (its signature verified by `seen`), not a
        // longer log: rows written straight into the log by someone squatting the lease grow
        // it without anything being signed.
        let size = self.seen.signed_size().unwrap_or(0);
        let moving = pending == 0 || self.waiting_since.is_some_and(|(was, _)| size > was);
        if moving {
            self.waiting_since = (pending > 0).then(|| (size, Instant::now()));
            if self.shared.stalled.swap(false, Ordering::Relaxed) {
                tracing::info!(
                    target: "wardgate::alert",
                    alert = STALL_ALERT,
                    size,
                    pending,
                    "audit sequencing goes on again: a checkpoint of {size} entries was signed"
                );
            }
            return Ok(());
        }
        let since = self.waiting_since.get_or_insert((size, Instant::now())).1;
        let waited = since.elapsed();
        if waited >= self.sequencer.lease_ttl * STALL_LEASES + self.config.checkpoint_interval
            && !self.shared.stalled.swap(true, Ordering::Relaxed)
        {
            tracing::error!(
                target: "wardgate::alert",
                alert = STALL_ALERT,
                size,
                pending,
                waited_ms = waited.as_millis() as u64,
                "{pending} queued audit events have waited {} s while no checkpoint past {size} \
                 entries was signed: no instance is sequencing. They are committed but \
                 not signed or witnessed, so whoever can write the database could remove them \
                 unnoticed. Check the instance the audit_sequencer row names (a live holder \
                 renews every third of its lease and sequences at once), or a row changed by \
                 hand",
                waited.as_secs()
            );
        }
        Ok(())
    }

    /// Stops sequencing for good: alerts once, gives the lease back at once, and never asks
    /// for it again. Events are still queued, for the instances that can sequence them (with
    /// a wrong key, appends fail closed instead: [`Enqueuer::batch`]).
    async fn stop_for(&mut self, fault: AuditFault) -> AuditError {
        if self.shared.fault.set(fault.clone()).is_ok() {
            match &fault {
                AuditFault::WrongKey(why) => tracing::error!(
                    target: "wardgate::alert",
                    alert = WRONG_KEY_ALERT,
                    "{why}. This instance refuses audited requests (503) and will not sequence \
                     or sign this log"
                ),
                AuditFault::RolledBack(why) => tracing::error!(
                    target: "wardgate::alert",
                    alert = ROLLBACK_ALERT,
                    "the shared audit log went back on what this instance saw: {why}. Someone \
                     with write access to the database may have removed or rewritten audit \
                     history. This instance will not sequence or sign the log again (restart it \
                     once the log is restored or the incident is understood); its own events \
                     are still queued. Compare the log with the witness (file or HTTP) and \
                     with backups"
                ),
            }
        }
        self.tree = None;
        if let Some((lease, _)) = self.lease.take()
            && let Err(e) = self.store.release_lease(&lease).await
        {
            tracing::warn!(error = %crate::causes::Causes(&e), "could not release the audit sequencer lease; it lapses by itself");
        }
        fault.error()
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
            tracing::warn!(error = %crate::causes::Causes(&e), "could not release the audit sequencer lease; it lapses by itself");
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
        if self.shared.fault.get().is_some() || self.held_back() {
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

    /// The log was found holding `size` entries where this holder's tree ends elsewhere, and
    /// nothing was sequenced: entries past the tree are checked as a previous holder's are
    /// ([`Self::catch_up`]: a row planted in the database stops sequencing for good) before
    /// anything is written on top of them; fewer entries than the tree means some were
    /// removed, and the tree is rebuilt from the store (whose check against what was seen
    /// then finds the rollback).
    async fn moved(&mut self, size: u64) -> Result<(), AuditError> {
        let Some(mut tree) = self.tree.take() else {
            return Ok(());
        };
        if size < tree.size() {
            return Err(AuditError::Inconsistent(format!(
                "the log holds {size} entries but this sequencer's tree has {}: entries were \
                 removed under it",
                tree.size()
            )));
        }
        self.catch_up(&mut tree, size).await?;
        self.shared.size.store(tree.size(), Ordering::Release);
        self.seen.sequenced(&tree);
        self.tree = Some(tree);
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
                    "the store sequenced at {} but this sequencer's tree has {} entries: \
                     entries were removed under it",
                    first.seq,
                    tree.size()
                )));
            }
            if first.seq > tree.size() {
                self.catch_up(&mut tree, first.seq).await?;
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
        self.seen.sequenced(&tree);
        self.tree = Some(tree);
        Ok(())
    }

    /// Grows `tree` to `size` with entries this instance did not sequence (a previous holder's
    /// since the last checkpoint), each checked before it is signed over: its tag must verify
    /// ([`crate::queue_tag`]) and its stored leaf hash must be its event's. An entry that fails
    /// was rewritten in the database (or sequenced by something without the key): this
    /// instance stops sequencing for good ([`Self::stop_for`]).
    async fn catch_up(&mut self, tree: &mut TreeBuilder, size: u64) -> Result<(), AuditError> {
        while tree.size() < size {
            let from = tree.size();
            let entries = self
                .store
                .tagged_leaves(from, MAX_READ)
                .await
                .map_err(unavailable)?;
            if entries.is_empty() {
                return Err(AuditError::Inconsistent(format!(
                    "entry {from} is missing from the store"
                )));
            }
            let want = usize::try_from(size - from).unwrap_or(usize::MAX);
            let entries: Vec<_> = entries.into_iter().take(want).collect();
            // A tag the log carries twice is a genuine row sequenced a second time (copied
            // back into the queue, or straight into the log, by someone with write access).
            let tags: Vec<Hash> = entries.iter().filter_map(|e| e.tag).collect();
            let positions = self.store.tag_positions(&tags).await.map_err(unavailable)?;
            for entry in entries {
                let first = entry.tag.and_then(|tag| {
                    positions
                        .iter()
                        .filter(|(t, _)| *t == tag)
                        .map(|(_, seq)| *seq)
                        .min()
                });
                let tagged = queued_form(&entry.leaf).is_some_and(|bytes| {
                    self.queue_key
                        .verify(&bytes, entry.tag.as_ref().map(|t| t.as_bytes().as_slice()))
                });
                let fault = if entry.seq != tree.size() {
                    Some(format!(
                        "the store returned entry {} where {} belongs",
                        entry.seq,
                        tree.size()
                    ))
                } else if leaf_hash(&entry.leaf) != entry.leaf_hash {
                    Some(format!(
                        "entry {}'s stored leaf hash is not its leaf's: the log was rewritten",
                        entry.seq
                    ))
                } else if let Some(earlier) = first.filter(|seq| *seq != entry.seq) {
                    Some(format!(
                        "entry {} (after the last checkpoint, not yet signed) repeats entry \
                         {earlier}: the same queued event twice, copied back in the database",
                        entry.seq
                    ))
                } else if !tagged {
                    Some(format!(
                        "entry {} (after the last checkpoint, not yet signed) has {} tag: it was \
                         rewritten in the database, or sequenced by something without this \
                         log's signing key (a release before queue tags)",
                        entry.seq,
                        if entry.tag.is_some() { "a wrong" } else { "no" }
                    ))
                } else {
                    None
                };
                if let Some(why) = fault {
                    return Err(self.stop_for(AuditFault::RolledBack(why)).await);
                }
                tree.push(entry.leaf_hash);
            }
        }
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
        let Some(mut tree) = self.tree.clone() else {
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
            self.catch_up(&mut tree, stored).await?;
            self.shared.size.store(tree.size(), Ordering::Release);
            self.tree = Some(tree.clone());
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
        self.seen.sequenced(&tree);
        self.seen.signed(&checkpoint);
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
                error = %crate::causes::Causes(&e),
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
