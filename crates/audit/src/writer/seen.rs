//! What one instance has seen of a shared log, and the check that the log never goes back on
//! it.
//!
//! Whoever can write the database can delete the newest entries and checkpoints of a shared
//! log and then let the lease lapse (or end it by hand). A sequencer that rebuilt its tree
//! from the store alone would then sign the shorter history, and `verify` would pass. So every
//! instance, sequencing or not, keeps the largest tree it has verified: the compact range of
//! the tree it sequenced itself, or of the latest signed checkpoint it read and checked against
//! the stored leaves. About every third of a lease it reads the store again, and the store must
//! still hold what was seen:
//! - at least as many entries as the tree seen;
//! - a latest checkpoint signed by this instance's key (else this instance has the wrong key,
//!   or someone wrote the checkpoint by hand), no smaller than the largest one seen, with the
//!   same root at the same size, and whose root the stored leaves give when the tree seen is
//!   extended by them (one consistent tree, not a fork).
//!
//! The last checkpoint in the witness file (the largest: the log only grows), where one is
//! kept, is the floor at start, so a restarted sequencer also remembers. An instance that finds the log rolled back alerts
//! ([`ROLLBACK_ALERT`]), hands the lease back and never sequences again; it keeps queueing its
//! own events, which lose nothing. This detects a rollback at the next check of any instance
//! that saw the removed part; it cannot tell what nobody saw (events queued and sequenced since
//! the last check of every instance). The HTTP witness, which refuses a smaller tree, is the
//! copy no database owner reaches.

use std::path::Path;

use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use crate::merkle::TreeBuilder;
use crate::note::VerifierKey;
use crate::store::{AuditStore, AuditStoreError, MAX_READ};

/// The name of the error logged when the log went back on what an instance saw (the `alert`
/// field of the log line, target `wardgate::alert`).
pub const ROLLBACK_ALERT: &str = "audit_log_rolled_back";
/// The name of the error logged when the log's checkpoints are signed by another key.
pub const WRONG_KEY_ALERT: &str = "audit_signing_key_mismatch";

/// What a check found wrong.
#[derive(Debug)]
pub(super) enum Found {
    /// The store could not be read; nothing is known.
    Unavailable(AuditStoreError),
    /// The log's latest checkpoint does not verify with this instance's key.
    WrongKey(String),
    /// The log no longer holds what this instance saw.
    RolledBack(String),
}

/// The largest tree and checkpoint this instance has verified.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// The compact range of the largest tree seen: this instance's own while it sequenced, or
    /// a checked checkpoint's extended by the stored leaves.
    tree: Option<TreeBuilder>,
    /// The largest signed checkpoint seen (from the store, or the witness file at start).
    signed: Option<Checkpoint>,
}

impl Seen {
    /// Starts from the last checkpoint in the witness file at `path` that `verifier` signed
    /// for `origin` (none if there is no file yet).
    pub(super) fn from_witness(
        path: Option<&Path>,
        verifier: &VerifierKey,
        origin: &str,
    ) -> Result<Self, String> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let contents = match crate::witness::read(path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(format!(
                    "cannot read the witness file {}: {e}",
                    path.display()
                ));
            }
        };
        // The file is appended in the order this instance signed, and a log only grows, so
        // the last checkpoint that verifies is the largest of this log: found from the end,
        // without checking the signature of every line a long-lived file holds.
        let signed = contents.notes.iter().rev().find_map(|note| {
            SignedCheckpoint::open(note, std::slice::from_ref(verifier), Some(origin))
                .ok()
                .map(|s| s.checkpoint)
        });
        Ok(Self { tree: None, signed })
    }

    /// The tree seen, to resume sequencing from (a clone: it is extended by the caller).
    pub(super) fn tree(&self) -> Option<TreeBuilder> {
        self.tree.clone()
    }

    /// The size of the largest tree seen.
    pub(super) fn size(&self) -> u64 {
        self.tree.as_ref().map_or(0, TreeBuilder::size)
    }

    /// The size of the largest signed checkpoint seen.
    pub(super) fn signed_size(&self) -> Option<u64> {
        self.signed.as_ref().map(|s| s.size)
    }

    /// This instance sequenced `tree`: it is what it has seen.
    pub(super) fn sequenced(&mut self, tree: &TreeBuilder) {
        if tree.size() >= self.size() {
            self.tree = Some(tree.clone());
        }
    }

    /// This instance signed `checkpoint` of its own tree.
    pub(super) fn signed(&mut self, checkpoint: &Checkpoint) {
        if self
            .signed
            .as_ref()
            .is_none_or(|s| checkpoint.size >= s.size)
        {
            self.signed = Some(checkpoint.clone());
        }
    }

    /// Reads the store and checks that it still holds everything seen (the module says what
    /// that means); on success, what was seen grows to the store's latest checkpoint, whose
    /// signed note is returned when it is larger than any seen before (for the witness file,
    /// so that a restart remembers it).
    pub(super) async fn check(
        &mut self,
        store: &dyn AuditStore,
        verifier: &VerifierKey,
        origin: &str,
    ) -> Result<Option<String>, Found> {
        let latest = store
            .latest_checkpoint()
            .await
            .map_err(Found::Unavailable)?;
        let size = store.size().await.map_err(Found::Unavailable)?;
        if size < self.size() {
            return Err(Found::RolledBack(format!(
                "the log holds {size} entries, but this instance saw {}: entries were removed",
                self.size()
            )));
        }
        let Some(latest) = latest else {
            return match &self.signed {
                Some(s) => Err(Found::RolledBack(format!(
                    "the log has no checkpoint, but this instance saw one of size {}: \
                     checkpoints were removed. If this instance was pointed at a new database \
                     on purpose, move its witness file (audit.witness_file) aside",
                    s.size
                ))),
                None => Ok(None),
            };
        };
        let opened = SignedCheckpoint::open(
            &latest.note,
            std::slice::from_ref(verifier),
            Some(origin),
        )
        .map_err(|e| {
            Found::WrongKey(format!(
                "the log's latest checkpoint (size {}) does not verify with this instance's \
                     key {} for origin {origin:?}: {e}. Either the instances were given \
                     different signing keys (give every instance the one that signed the log, \
                     WARDGATE_AUDIT_SIGNING_KEY), or someone wrote the checkpoint into the \
                     database",
                latest.size,
                verifier.name()
            ))
        })?
        .checkpoint;
        if opened.size != latest.size || opened.root != latest.root {
            return Err(Found::RolledBack(format!(
                "the stored checkpoint of size {} says size {} and root {} in its signed note: \
                 its columns were rewritten",
                latest.size,
                opened.size,
                opened.root.to_hex()
            )));
        }
        if let Some(s) = &self.signed {
            if opened.size < s.size {
                return Err(Found::RolledBack(format!(
                    "the log's latest checkpoint has size {}, but this instance saw one of \
                     size {}: checkpoints were removed",
                    opened.size, s.size
                )));
            }
            if opened.size == s.size && opened.root != s.root {
                return Err(Found::RolledBack(format!(
                    "the log's checkpoint of size {} has another root than the one this \
                     instance saw: the log was rewritten",
                    s.size
                )));
            }
        }
        self.extend_to(store, &latest.subtrees, &opened).await?;
        let grew = self.signed.as_ref().is_none_or(|s| opened.size > s.size);
        self.signed = Some(opened);
        Ok(grew.then_some(latest.note))
    }

    /// Grows the tree seen to checkpoint `to` (with stored tree state `subtrees`), checking
    /// that the stored leaves give its root.
    async fn extend_to(
        &mut self,
        store: &dyn AuditStore,
        subtrees: &[crate::merkle::Hash],
        to: &Checkpoint,
    ) -> Result<(), Found> {
        if self.size() >= to.size {
            // Seen past it already (this instance's own tree); its root at `to.size` was
            // checked when the tree grew past it, or is this instance's own.
            return Ok(());
        }
        let mut tree = match (self.tree.take(), &self.signed) {
            (Some(tree), _) => tree,
            (None, Some(_)) => self.floor_tree(store).await?,
            // Nothing seen yet: the stored state of the checkpoint is taken on trust, as a
            // new instance must (its signature and root are checked).
            (None, None) => {
                let tree = TreeBuilder::from_parts(to.size, subtrees.to_vec())
                    .filter(|t| t.root() == to.root)
                    .ok_or_else(|| {
                        Found::RolledBack(format!(
                            "the stored tree state of checkpoint {} does not give its root",
                            to.size
                        ))
                    })?;
                self.tree = Some(tree);
                return Ok(());
            }
        };
        while tree.size() < to.size {
            let hashes = store
                .leaf_hashes(tree.size(), MAX_READ)
                .await
                .map_err(Found::Unavailable)?;
            if hashes.is_empty() {
                return Err(Found::RolledBack(format!(
                    "entry {} is missing, but checkpoint {} covers it",
                    tree.size(),
                    to.size
                )));
            }
            let take = usize::try_from(to.size - tree.size()).unwrap_or(usize::MAX);
            for h in hashes.into_iter().take(take) {
                tree.push(h);
            }
        }
        if tree.root() != to.root {
            return Err(Found::RolledBack(format!(
                "the stored leaves up to checkpoint {} do not give its root when they extend \
                 the tree this instance saw (size {}): the log was rewritten",
                to.size,
                self.signed.as_ref().map_or(0, |s| s.size)
            )));
        }
        self.tree = Some(tree);
        Ok(())
    }

    /// Checks that the store holds the signed checkpoint seen (from the witness file) with
    /// the same root: what a single writer checks at start.
    pub(super) async fn check_floor(&self, store: &dyn AuditStore) -> Result<(), Found> {
        self.floor_tree(store).await.map(drop)
    }

    /// The tree to extend when none was seen yet: the stored state of the signed checkpoint
    /// seen (from the witness file), or the empty tree.
    async fn floor_tree(&self, store: &dyn AuditStore) -> Result<TreeBuilder, Found> {
        let Some(floor) = &self.signed else {
            return Ok(TreeBuilder::new());
        };
        let stored = store
            .checkpoints(floor.size, 1)
            .await
            .map_err(Found::Unavailable)?;
        let tree = stored
            .into_iter()
            .find(|c| c.size == floor.size && c.root == floor.root)
            .and_then(|c| TreeBuilder::from_parts(c.size, c.subtrees))
            .filter(|t| t.root() == floor.root);
        tree.ok_or_else(|| {
            Found::RolledBack(format!(
                "the checkpoint of size {} in this instance's witness file is no longer in the \
                 store (or its stored tree state does not give its root): the log was cut back \
                 (restored from an older backup?) or rewritten. If this instance was pointed at \
                 a restored or new database on purpose, keep the witness file as the record, \
                 move it aside (audit.witness_file) and see \
                 docs/operations/disaster-recovery.md",
                floor.size
            ))
        })
    }
}
