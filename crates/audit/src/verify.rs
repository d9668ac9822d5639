//! Offline verification: from the entries, the signed checkpoints (the log's own and the
//! witness's) and only the public key, decide whether the log is intact, and if not, name the
//! first entry that cannot be trusted.
//!
//! In one pass over the entries the verifier checks, for entry `i`: that it claims position `i`
//! (a missing, duplicated or reordered entry breaks this), that its leaf hash is the hash of its
//! re-encoded event (an altered event breaks this), and, whenever `i + 1` is the size of a
//! checkpoint, that the tree root over entries `0..=i` is the signed root. Every checkpoint is
//! recomputed from the same entries, so passing means all of them are prefixes of one log:
//! consistency between successive checkpoints, and with the witness's, is implied (no
//! consistency proof is needed when the verifier holds the entries; [`prove_consistency`] makes
//! one for a party that does not). A checkpoint larger than the log means entries were removed.
//!
//! What "first bad index" means: for a per-entry failure it is that entry. For a root mismatch
//! (an entry and its stored hash were both rewritten, or the log was truncated and re-extended),
//! a root alone cannot say which entry changed; the index reported is the first entry not
//! covered by a checkpoint that did verify, so every entry before it is proven and the damage is
//! at or after it, before the failing checkpoint's size. Its precision is the checkpoint
//! interval.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;

use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use crate::event::{AuditEvent, encode_leaf_into};
use crate::export::{EntryLine, ExportError, ExportReader};
use crate::merkle::{self, Hash, TreeBuilder};
use crate::note::VerifierKey;
use crate::store::{AuditStore, AuditStoreError, MAX_READ};

/// Where a checkpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointSource {
    /// The log's own (the store or the export).
    Log,
    /// The witness file.
    Witness,
}

impl std::fmt::Display for CheckpointSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Log => "log",
            Self::Witness => "witness",
        })
    }
}

/// Why verification failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The entry at position `seq` claims another position: entries are missing, duplicated
    /// or out of order from here.
    #[error(
        "entry {seq}: out of sequence (the entry there claims seq {found}); an entry is missing, duplicated or moved"
    )]
    OutOfSequence {
        /// The position.
        seq: u64,
        /// What the entry there claims.
        found: u64,
    },
    /// The entry holds the very event of an earlier entry (all but its position): a genuine
    /// event logged a second time, as a row copied back in the database would be.
    #[error(
        "entry {seq}: the same event as an earlier entry; an event was logged twice (a row \
         replayed in the database)"
    )]
    Repeated {
        /// The position of the second copy.
        seq: u64,
    },
    /// The entry's contents do not hash to its leaf hash: the event was altered.
    #[error("entry {seq}: its contents do not match its leaf hash; the entry was altered")]
    LeafHashMismatch {
        /// The position.
        seq: u64,
    },
    /// The entry cannot be read as an event.
    #[error("entry {seq}: unreadable ({reason})")]
    Malformed {
        /// The position.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// The tree root at a checkpoint's size is not the signed root.
    #[error(
        "entry {first_unproven}: the tree root at size {size} does not match the signed {which} \
         checkpoint; entries before {first_unproven} are proven, the log was altered between \
         {first_unproven} and {size}"
    )]
    RootMismatch {
        /// The first entry not covered by a checkpoint that verified.
        first_unproven: u64,
        /// The failing checkpoint's size.
        size: u64,
        /// Whose checkpoint.
        which: CheckpointSource,
    },
    /// A signed checkpoint covers more entries than the log has.
    #[error(
        "entry {seq}: missing; a signed {which} checkpoint covers {size} entries but the log has only {seq}"
    )]
    Truncated {
        /// The first missing position (the log's size).
        seq: u64,
        /// The checkpoint's size.
        size: u64,
        /// Whose checkpoint.
        which: CheckpointSource,
    },
    /// A checkpoint's note does not verify or is not a checkpoint of this log.
    #[error("{which} checkpoint #{index}: {reason}")]
    BadCheckpoint {
        /// 0-based position among that source's checkpoints.
        index: usize,
        /// Whose checkpoint.
        which: CheckpointSource,
        /// What is wrong.
        reason: String,
    },
    /// The export file is not in the expected form.
    #[error("export: {0}")]
    Format(String),
    /// Reading the store failed.
    #[error("audit store: {0}")]
    Store(String),
}

impl VerifyError {
    /// The first entry that cannot be trusted, when the failure is about entries.
    pub fn first_bad_seq(&self) -> Option<u64> {
        match self {
            Self::OutOfSequence { seq, .. }
            | Self::LeafHashMismatch { seq }
            | Self::Repeated { seq }
            | Self::Malformed { seq, .. }
            | Self::Truncated { seq, .. } => Some(*seq),
            Self::RootMismatch { first_unproven, .. } => Some(*first_unproven),
            Self::BadCheckpoint { .. } | Self::Format(_) | Self::Store(_) => None,
        }
    }
}

impl From<ExportError> for VerifyError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Store(e) => Self::Store(e.to_string()),
            other => Self::Format(other.to_string()),
        }
    }
}

/// What a successful verification covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: u64,
    /// The root over all of them.
    pub root: Hash,
    /// The log's own checkpoints that verified.
    pub log_checkpoints: usize,
    /// The witness's checkpoints that verified.
    pub witness_checkpoints: usize,
    /// The largest checkpoint size: entries below it are proven by a signature.
    pub proven: u64,
    /// The log's origin, from its checkpoints.
    pub origin: Option<String>,
}

impl VerifyReport {
    /// Entries after the last checkpoint: intact as far as their own hashes go, but not yet
    /// covered by a signature (normal for the most recent few seconds of a live log).
    pub fn unproven_tail(&self) -> u64 {
        self.entries - self.proven
    }
}

/// The incremental verifier: add every checkpoint, then push entries in order, then finish.
#[derive(Debug)]
pub struct Verifier {
    keys: Vec<VerifierKey>,
    origin: Option<String>,
    expected: BTreeMap<u64, Vec<(Hash, CheckpointSource)>>,
    counts: [usize; 2],
    tree: TreeBuilder,
    proven: u64,
    leaf: Vec<u8>,
    /// [`identity`] of each entry pushed so far: an event seen twice is a replay. 16 bytes
    /// (and a hash set's overhead) an entry: about 300 MB for ten million.
    seen: HashSet<u128>,
}

impl Verifier {
    /// A verifier trusting `keys`. With `origin`, every checkpoint must be for that log;
    /// without, they must all agree with the first.
    pub fn new(keys: Vec<VerifierKey>, origin: Option<String>) -> Self {
        Self {
            keys,
            origin,
            expected: BTreeMap::new(),
            counts: [0, 0],
            tree: TreeBuilder::new(),
            proven: 0,
            leaf: Vec::with_capacity(1024),
            seen: HashSet::new(),
        }
    }

    /// Checks a checkpoint's signature and remembers its root; its size and root. Call before
    /// pushing entries.
    pub fn add_checkpoint(
        &mut self,
        note: &str,
        which: CheckpointSource,
    ) -> Result<(u64, Hash), VerifyError> {
        let slot = match which {
            CheckpointSource::Log => 0,
            CheckpointSource::Witness => 1,
        };
        let index = self.counts[slot];
        let signed =
            SignedCheckpoint::open(note, &self.keys, self.origin.as_deref()).map_err(|e| {
                VerifyError::BadCheckpoint {
                    index,
                    which,
                    reason: e.to_string(),
                }
            })?;
        let Checkpoint { origin, size, root } = signed.checkpoint;
        if self.origin.is_none() {
            self.origin = Some(origin);
        }
        self.counts[slot] += 1;
        self.expected.entry(size).or_default().push((root, which));
        Ok((size, root))
    }

    /// Checks the next entry: its claimed position `seq`, its event and its claimed leaf hash.
    pub fn push(
        &mut self,
        seq: u64,
        event: &AuditEvent,
        leaf_hash: &Hash,
    ) -> Result<(), VerifyError> {
        let position = self.tree.size();
        if seq != position {
            return Err(VerifyError::OutOfSequence {
                seq: position,
                found: seq,
            });
        }
        self.leaf.clear();
        encode_leaf_into(position, event, &mut self.leaf);
        let computed = merkle::leaf_hash(&self.leaf);
        let identity = identity(&self.leaf);
        self.push_hashed(seq, leaf_hash, computed, identity)
    }

    /// As [`Self::push`], with the leaf hash already recomputed from the event re-encoded at
    /// position [`Self::next_seq`], and its [`identity`] (done in parallel by
    /// [`verify_export`]).
    fn push_hashed(
        &mut self,
        seq: u64,
        claimed: &Hash,
        computed: Hash,
        identity: u128,
    ) -> Result<(), VerifyError> {
        let position = self.tree.size();
        if seq != position {
            return Err(VerifyError::OutOfSequence {
                seq: position,
                found: seq,
            });
        }
        if computed != *claimed {
            return Err(VerifyError::LeafHashMismatch { seq: position });
        }
        if !self.seen.insert(identity) {
            return Err(VerifyError::Repeated { seq: position });
        }
        self.tree.push(computed);
        self.check_roots()
    }

    /// The position the next pushed entry must have.
    pub fn next_seq(&self) -> u64 {
        self.tree.size()
    }

    fn check_roots(&mut self) -> Result<(), VerifyError> {
        let size = self.tree.size();
        if let Some(expected) = self.expected.get(&size) {
            let root = self.tree.root();
            for (want, which) in expected {
                if *want != root {
                    return Err(VerifyError::RootMismatch {
                        first_unproven: self.proven,
                        size,
                        which: *which,
                    });
                }
            }
            self.proven = size;
        }
        Ok(())
    }

    /// Ends the pass: fails if any checkpoint is larger than the log.
    pub fn finish(mut self) -> Result<VerifyReport, VerifyError> {
        if self.tree.size() == 0 {
            // A checkpoint of the empty tree is checked here, since no entry triggers it.
            self.check_roots()?;
        }
        if let Some((&size, expected)) = self.expected.range(self.tree.size() + 1..).next() {
            let which = expected
                .iter()
                .map(|(_, w)| *w)
                .find(|w| *w == CheckpointSource::Witness)
                .unwrap_or(CheckpointSource::Log);
            return Err(VerifyError::Truncated {
                seq: self.tree.size(),
                size,
                which,
            });
        }
        Ok(VerifyReport {
            entries: self.tree.size(),
            root: self.tree.root(),
            log_checkpoints: self.counts[0],
            witness_checkpoints: self.counts[1],
            proven: self.proven,
            origin: self.origin,
        })
    }
}

/// What tells two entries' events apart, whatever their positions: the first 16 bytes of the
/// SHA-256 of the leaf as it was queued (at position 0, [`crate::queue_tag::queued_form`]).
/// Every event carries its time to the millisecond, and those of a request its id, so two
/// genuine events never share one.
fn identity(leaf: &[u8]) -> u128 {
    use sha2::{Digest as _, Sha256};
    let digest = match crate::queue_tag::queued_form(leaf) {
        Some(queued) => Sha256::digest(&queued),
        None => Sha256::digest(leaf),
    };
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

/// Verifies an export (see [`crate::export`]) against `keys`, with the witness's checkpoint
/// notes if there are any.
pub fn verify_export(
    reader: impl BufRead,
    keys: Vec<VerifierKey>,
    witness_notes: &[String],
    origin: Option<String>,
) -> Result<VerifyReport, VerifyError> {
    let (mut export, notes) = ExportReader::open(reader)?;
    let mut verifier = Verifier::new(keys, origin);
    for note in &notes {
        verifier.add_checkpoint(note, CheckpointSource::Log)?;
    }
    for note in witness_notes {
        verifier.add_checkpoint(note, CheckpointSource::Witness)?;
    }
    // Parsing, re-encoding and hashing each line is nearly all the work and needs nothing from
    // the lines before it, so chunks of lines are hashed on every core; the tree, which must see
    // the leaves in order, is then fed from the results in order.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS);
    let mut buf = Vec::new();
    let mut spans = Vec::new();
    while export.read_raw_lines(CHUNK_LINES, &mut buf, &mut spans)? > 0 {
        let first = verifier.next_seq();
        for hashed in hash_lines(&buf, &spans, first, threads) {
            match hashed {
                Hashed::Entry {
                    seq,
                    claimed,
                    computed,
                    identity,
                } => verifier.push_hashed(seq, &claimed, computed, identity)?,
                Hashed::Unreadable(reason) => {
                    return Err(VerifyError::Malformed {
                        seq: verifier.next_seq(),
                        reason,
                    });
                }
            }
        }
    }
    verifier.finish()
}

/// Lines hashed per parallel step.
const CHUNK_LINES: usize = 16_384;
/// The most threads `verify_export` uses.
const MAX_THREADS: usize = 8;

/// One export line, parsed and hashed.
enum Hashed {
    Entry {
        /// The position the line claims.
        seq: u64,
        /// The leaf hash the line claims.
        claimed: Hash,
        /// The hash of the event re-encoded at the line's actual position.
        computed: Hash,
        /// The event's [`identity`].
        identity: u128,
    },
    Unreadable(String),
}

/// Hashes the lines `spans` of `buf`, the first at position `first`, on up to `threads`
/// threads; results in line order.
fn hash_lines(
    buf: &[u8],
    spans: &[std::ops::Range<usize>],
    first: u64,
    threads: usize,
) -> Vec<Hashed> {
    let per = spans.len().div_ceil(threads.max(1)).max(1);
    let part = |k: usize, lines: &[std::ops::Range<usize>]| {
        let mut leaf = Vec::with_capacity(1024);
        lines
            .iter()
            .enumerate()
            .map(|(i, span)| {
                let position = first + (k * per + i) as u64;
                match serde_json::from_slice::<EntryLine>(&buf[span.clone()]) {
                    Ok(line) => {
                        leaf.clear();
                        encode_leaf_into(position, &line.event, &mut leaf);
                        Hashed::Entry {
                            seq: line.seq,
                            claimed: line.leaf_hash,
                            computed: merkle::leaf_hash(&leaf),
                            identity: identity(&leaf),
                        }
                    }
                    Err(e) => Hashed::Unreadable(e.to_string()),
                }
            })
            .collect::<Vec<_>>()
    };
    let mut parts = spans.chunks(per).enumerate();
    let Some((_, head)) = parts.next() else {
        return Vec::new();
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .map(|(k, lines)| scope.spawn(move || part(k, lines)))
            .collect();
        let mut out = part(0, head);
        for handle in handles {
            match handle.join() {
                Ok(hashed) => out.extend(hashed),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// Verifies the log in a live store, reading it in pages.
pub async fn verify_store(
    store: &dyn AuditStore,
    keys: Vec<VerifierKey>,
    witness_notes: &[String],
    origin: Option<String>,
) -> Result<VerifyReport, VerifyError> {
    let store_err = |e: AuditStoreError| VerifyError::Store(e.to_string());
    let mut verifier = Verifier::new(keys, origin);
    let mut from = 0;
    loop {
        let page = store.checkpoints(from, MAX_READ).await.map_err(store_err)?;
        let Some(last) = page.last() else { break };
        from = last.size + 1;
        for cp in &page {
            let index = verifier.counts[0];
            let (size, root) = verifier.add_checkpoint(&cp.note, CheckpointSource::Log)?;
            // The row's own columns are what the instances read first: a row whose columns
            // say another size or root than its signed note was written by hand.
            if (size, root) != (cp.size, cp.root) {
                return Err(VerifyError::BadCheckpoint {
                    index,
                    which: CheckpointSource::Log,
                    reason: format!(
                        "the row says size {} and root {}, its signed note size {size} and root \
                         {root}: the row was written or rewritten in the database",
                        cp.size, cp.root
                    ),
                });
            }
        }
    }
    for note in witness_notes {
        verifier.add_checkpoint(note, CheckpointSource::Witness)?;
    }
    loop {
        let page = match store.read_range(verifier.next_seq(), MAX_READ).await {
            Ok(page) => page,
            // A row that does not decode is a bad entry, not an unreadable store. The page
            // failed as a whole, so walk it one row at a time to name the first bad one.
            Err(AuditStoreError::Corrupt { .. }) => loop {
                let next = verifier.next_seq();
                match store.read_range(next, 1).await {
                    Ok(rows) => match rows.first() {
                        Some(entry) => verifier.push(entry.seq, &entry.event, &entry.leaf_hash)?,
                        None => return verifier.finish(),
                    },
                    Err(AuditStoreError::Corrupt { seq, what }) if seq == next => {
                        return Err(VerifyError::Malformed { seq, reason: what });
                    }
                    // The next row present is not the next position: rows are missing.
                    Err(AuditStoreError::Corrupt { seq, .. }) => {
                        return Err(VerifyError::OutOfSequence {
                            seq: next,
                            found: seq,
                        });
                    }
                    Err(e) => return Err(store_err(e)),
                }
            },
            Err(e) => return Err(store_err(e)),
        };
        if page.is_empty() {
            break;
        }
        for entry in &page {
            verifier.push(entry.seq, &entry.event, &entry.leaf_hash)?;
        }
    }
    verifier.finish()
}

/// A consistency proof between an old checkpoint and the current log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The old checkpoint's size.
    pub old_size: u64,
    /// The current size.
    pub new_size: u64,
    /// The old checkpoint's root.
    pub old_root: Hash,
    /// The current root.
    pub new_root: Hash,
    /// RFC 6962 §2.1.2 proof; check with [`merkle::verify_consistency`].
    pub proof: Vec<Hash>,
}

/// Why the current log is not an extension of an old checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    /// The log is now shorter than the checkpoint.
    #[error("the log has {current_size} entries, fewer than the {old_size} the checkpoint covers")]
    Truncated {
        /// The checkpoint's size.
        old_size: u64,
        /// The log's size.
        current_size: u64,
    },
    /// The log's first `old_size` entries no longer hash to the checkpoint's root: they were
    /// rewritten.
    #[error(
        "the log's first {old_size} entries have root {found}, not the checkpoint's {expected}: the log was rewritten"
    )]
    Rewritten {
        /// The checkpoint's size.
        old_size: u64,
        /// The checkpoint's root.
        expected: Hash,
        /// The current log's root at that size.
        found: Hash,
    },
    /// Reading the store failed.
    #[error("audit store: {0}")]
    Store(String),
}

/// Proves that the log whose leaf hashes are `current` extends `old`, or shows that it does
/// not. The proof is checked before it is returned.
pub fn prove_consistency(
    old: &Checkpoint,
    current: &[Hash],
) -> Result<ConsistencyProof, ConsistencyError> {
    let current_size = current.len() as u64;
    if old.size > current_size {
        return Err(ConsistencyError::Truncated {
            old_size: old.size,
            current_size,
        });
    }
    let new_root = merkle::root(current);
    let proof =
        merkle::consistency_proof(current, old.size).map_err(|_| ConsistencyError::Truncated {
            old_size: old.size,
            current_size,
        })?;
    if merkle::verify_consistency(old.size, current_size, &old.root, &new_root, &proof).is_err() {
        return Err(ConsistencyError::Rewritten {
            old_size: old.size,
            expected: old.root,
            found: merkle::root(&current[..old.size as usize]),
        });
    }
    Ok(ConsistencyProof {
        old_size: old.size,
        new_size: current_size,
        old_root: old.root,
        new_root,
        proof,
    })
}

/// [`prove_consistency`] against the log in a store (reads every leaf hash).
pub async fn prove_consistency_in_store(
    old: &Checkpoint,
    store: &dyn AuditStore,
) -> Result<ConsistencyProof, ConsistencyError> {
    let mut leaves = Vec::new();
    loop {
        let page = store
            .leaf_hashes(leaves.len() as u64, MAX_READ)
            .await
            .map_err(|e| ConsistencyError::Store(e.to_string()))?;
        if page.is_empty() {
            break;
        }
        leaves.extend(page);
    }
    prove_consistency(old, &leaves)
}

#[cfg(test)]
mod tests;
