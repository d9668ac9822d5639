//! [`MemoryAuditStore`]: the audit log's stores ([`AuditStore`] and [`SharedLog`]) in memory,
//! for tests, benchmarks and examples.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use crate::event::{AuditEvent, Timestamp, encode_leaf};
use crate::merkle::Hash;
use crate::quarantine::{self, QuarantinedRow, Queued, QueuedRow};
use crate::queue_tag::QueueKey;
use crate::shared::{Lease, PendingEvent, Sequenced, SharedLog, TaggedLeaf};
use crate::store::{
    AuditEntry, AuditFilter, AuditStore, AuditStoreError, MAX_APPEND_BATCH, MAX_READ,
    StoredCheckpoint, check_batch, check_checkpoint,
};

/// An in-memory `AuditStore`, for tests and examples. Holds everything in one mutex.
#[derive(Debug, Default)]
pub struct MemoryAuditStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    entries: Vec<AuditEntry>,
    /// The tag beside each entry ([`crate::queue_tag`]), by seq: `None` for a direct append.
    tags: Vec<Option<Hash>>,
    checkpoints: BTreeMap<u64, StoredCheckpoint>,
    /// The shared-log queue ([`crate::shared::SharedLog`]), by queue id: each event's leaf at
    /// position 0, as the PostgreSQL queue holds it, and its tag, so a row of another release
    /// (or damage, or a forgery) can be queued too ([`MemoryAuditStore::enqueue_raw`]).
    queue: BTreeMap<u64, (Vec<u8>, Option<Vec<u8>>)>,
    /// When each queued row was queued (Unix ms), by queue id.
    queued_ms: BTreeMap<u64, i64>,
    next_queue_id: u64,
    /// The rows sequencing set aside, by queue id.
    quarantine: BTreeMap<u64, QuarantinedRow>,
    /// The sequencer lease: holder, epoch, expiry.
    lease: Option<(String, std::time::Instant)>,
    lease_epoch: u64,
}

impl MemoryAuditStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `bytes` with `tag` as they are, as another release or someone with access to
    /// the database could: for tests of what sequencing does with a row it cannot read or
    /// authenticate. Returns its queue id.
    pub fn enqueue_raw(
        &self,
        bytes: Vec<u8>,
        tag: Option<Vec<u8>>,
    ) -> Result<u64, AuditStoreError> {
        let mut inner = self.lock()?;
        inner.next_queue_id += 1;
        let id = inner.next_queue_id;
        inner.queue.insert(id, (bytes, tag));
        inner.queued_ms.insert(id, Timestamp::now().unix_millis());
        Ok(id)
    }

    /// Puts `event` in place of entry `seq`, with its leaf hash, keeping the entry's tag, as
    /// someone with write access to the database could: for tests of how a sequencer notices.
    pub fn rewrite(&self, seq: u64, event: AuditEvent) -> Result<(), AuditStoreError> {
        let mut inner = self.lock()?;
        let at = usize::try_from(seq).unwrap_or(usize::MAX);
        let Some(entry) = inner.entries.get_mut(at) else {
            return Err(AuditStoreError::Conflict(format!("no entry {seq}")));
        };
        *entry = AuditEntry::prepare(seq, event).0;
        Ok(())
    }

    /// Appends a copy of entry `seq` (its event, at the new position, and its tag) after the
    /// last, as someone with write access to the database could replay it: for tests of how a
    /// sequencer notices.
    pub fn append_copy(&self, seq: u64) -> Result<u64, AuditStoreError> {
        let mut inner = self.lock()?;
        let at = usize::try_from(seq).unwrap_or(usize::MAX);
        let (Some(entry), Some(tag)) = (inner.entries.get(at), inner.tags.get(at)) else {
            return Err(AuditStoreError::Conflict(format!("no entry {seq}")));
        };
        let (event, tag) = (entry.event.clone(), *tag);
        let new = inner.entries.len() as u64;
        inner.entries.push(AuditEntry::prepare(new, event).0);
        inner.tags.push(tag);
        Ok(new)
    }

    /// Removes the entries from `size` on and the checkpoints larger than `size`, and ends the
    /// sequencer lease, as someone with write access to the database could to roll the log
    /// back: for tests of how the instances notice.
    pub fn rewind(&self, size: u64) -> Result<(), AuditStoreError> {
        let mut inner = self.lock()?;
        let keep = usize::try_from(size).unwrap_or(usize::MAX);
        inner.entries.truncate(keep);
        inner.tags.truncate(keep);
        inner.checkpoints.retain(|s, _| *s <= size);
        inner.lease = None;
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemoryInner>, AuditStoreError> {
        self.inner
            .lock()
            .map_err(|_| AuditStoreError::Unavailable("memory store poisoned".into()))
    }
}

fn window<T: Clone>(items: &[T], start: u64, limit: u32) -> Vec<T> {
    let start = usize::try_from(start)
        .unwrap_or(usize::MAX)
        .min(items.len());
    let limit = limit.min(MAX_READ) as usize;
    items[start..].iter().take(limit).cloned().collect()
}

#[async_trait::async_trait]
impl AuditStore for MemoryAuditStore {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditEntry>, AuditStoreError> {
        check_batch(&events)?;
        let mut inner = self.lock()?;
        let start = inner.entries.len() as u64;
        let entries: Vec<AuditEntry> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| AuditEntry::prepare(start + i as u64, e).0)
            .collect();
        inner.entries.extend(entries.iter().cloned());
        let size = inner.entries.len();
        inner.tags.resize(size, None);
        Ok(entries)
    }

    async fn size(&self) -> Result<u64, AuditStoreError> {
        Ok(self.lock()?.entries.len() as u64)
    }

    async fn read_range(&self, start: u64, limit: u32) -> Result<Vec<AuditEntry>, AuditStoreError> {
        Ok(window(&self.lock()?.entries, start, limit))
    }

    async fn leaf_hashes(&self, start: u64, limit: u32) -> Result<Vec<Hash>, AuditStoreError> {
        let inner = self.lock()?;
        Ok(window(&inner.entries, start, limit)
            .into_iter()
            .map(|e| e.leaf_hash)
            .collect())
    }

    async fn add_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), AuditStoreError> {
        check_checkpoint(checkpoint)?;
        let mut inner = self.lock()?;
        if let Some(existing) = inner.checkpoints.get(&checkpoint.size) {
            return if existing.root == checkpoint.root {
                Ok(())
            } else {
                Err(AuditStoreError::Conflict(format!(
                    "a checkpoint of size {} with another root exists",
                    checkpoint.size
                )))
            };
        }
        inner
            .checkpoints
            .insert(checkpoint.size, checkpoint.clone());
        Ok(())
    }

    async fn checkpoints(
        &self,
        from_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, AuditStoreError> {
        Ok(self
            .lock()?
            .checkpoints
            .range(from_size..)
            .take(limit.min(MAX_READ) as usize)
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, AuditStoreError> {
        Ok(self
            .lock()?
            .checkpoints
            .last_key_value()
            .map(|(_, c)| c.clone()))
    }

    async fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, AuditStoreError> {
        Ok(self
            .lock()?
            .entries
            .iter()
            .filter(|e| filter.matches(e))
            .take(filter.effective_limit() as usize)
            .cloned()
            .collect())
    }
}

#[async_trait::async_trait]
impl SharedLog for MemoryAuditStore {
    async fn enqueue(
        &self,
        events: Vec<AuditEvent>,
        key: &QueueKey,
    ) -> Result<Vec<u64>, AuditStoreError> {
        check_batch(&events)?;
        let mut inner = self.lock()?;
        let mut ids = Vec::with_capacity(events.len());
        let now = Timestamp::now().unix_millis();
        for e in events {
            inner.next_queue_id += 1;
            let id = inner.next_queue_id;
            let bytes = encode_leaf(0, &e);
            let tag = key.tag(&bytes).as_bytes().to_vec();
            inner.queue.insert(id, (bytes, Some(tag)));
            inner.queued_ms.insert(id, now);
            ids.push(id);
        }
        Ok(ids)
    }

    async fn pending_count(&self) -> Result<u64, AuditStoreError> {
        Ok(self.lock()?.queue.len() as u64)
    }

    async fn oldest_pending_ms(&self) -> Result<Option<i64>, AuditStoreError> {
        let inner = self.lock()?;
        Ok(inner
            .queue
            .keys()
            .next()
            .and_then(|id| inner.queued_ms.get(id).copied()))
    }

    async fn pending(&self, filter: &AuditFilter) -> Result<Vec<PendingEvent>, AuditStoreError> {
        Ok(self
            .lock()?
            .queue
            .iter()
            .filter_map(|(id, (bytes, _))| match quarantine::read_queued(bytes) {
                QueuedRow::Event(event) => Some(PendingEvent { id: *id, event }),
                QueuedRow::NewerRelease(_) | QueuedRow::Unreadable(_) => None,
            })
            .filter(|p| filter.matches_event(&p.event))
            .take(filter.effective_limit() as usize)
            .collect())
    }

    async fn acquire_lease(
        &self,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>, AuditStoreError> {
        let mut inner = self.lock()?;
        let now = std::time::Instant::now();
        let held_by_us = match &inner.lease {
            Some((h, until)) if *until > now => {
                if h != holder {
                    return Ok(None);
                }
                true
            }
            _ => false,
        };
        if !held_by_us {
            inner.lease_epoch += 1;
        }
        inner.lease = Some((holder.to_owned(), now + ttl));
        Ok(Some(Lease {
            holder: holder.to_owned(),
            epoch: inner.lease_epoch,
        }))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), AuditStoreError> {
        let mut inner = self.lock()?;
        if inner.lease_epoch == lease.epoch
            && inner
                .lease
                .as_ref()
                .is_some_and(|(h, _)| *h == lease.holder)
        {
            inner.lease = None;
        }
        Ok(())
    }

    async fn sequence(
        &self,
        lease: &Lease,
        at: u64,
        max: usize,
        key: &QueueKey,
    ) -> Result<Sequenced, AuditStoreError> {
        let mut inner = self.lock()?;
        let now = std::time::Instant::now();
        let held = inner.lease_epoch == lease.epoch
            && inner
                .lease
                .as_ref()
                .is_some_and(|(h, until)| *h == lease.holder && *until > now);
        if !held {
            return Ok(Sequenced::LeaseLost);
        }
        let size = inner.entries.len() as u64;
        if size != at {
            return Ok(Sequenced::Moved { size });
        }
        let rows: Vec<Queued> = inner
            .queue
            .iter()
            .take(max.clamp(1, MAX_APPEND_BATCH))
            .map(|(id, (bytes, tag))| Queued {
                queue_id: *id,
                bytes: bytes.clone(),
                tag: tag.clone(),
            })
            .collect();
        let now = Timestamp::now();
        let logged: std::collections::HashSet<Hash> = rows
            .iter()
            .filter_map(|r| r.tag.as_deref().and_then(Hash::from_slice))
            .filter(|t| inner.tags.contains(&Some(*t)))
            .collect();
        let plan = quarantine::plan(rows, now, key, &logged);
        let mut entries = Vec::with_capacity(plan.take.len());
        for planned in plan.take {
            inner.queued_ms.remove(&planned.queue_id);
            let Some((bytes, _)) = inner.queue.remove(&planned.queue_id) else {
                continue;
            };
            let seq = inner.entries.len() as u64;
            if let Some((_, sha256)) = planned.set_aside {
                inner.quarantine.insert(
                    planned.queue_id,
                    QuarantinedRow {
                        queue_id: planned.queue_id,
                        seq,
                        bytes,
                        sha256,
                        quarantined_at: now,
                    },
                );
            }
            let entry = AuditEntry::prepare(seq, planned.event).0;
            inner.entries.push(entry.clone());
            inner.tags.push(Some(planned.tag));
            entries.push(entry);
        }
        Ok(Sequenced::ended(entries, plan.held))
    }

    async fn tagged_leaves(
        &self,
        start: u64,
        limit: u32,
    ) -> Result<Vec<TaggedLeaf>, AuditStoreError> {
        let inner = self.lock()?;
        let entries = window(&inner.entries, start, limit);
        let tags = window(&inner.tags, start, limit);
        Ok(entries
            .into_iter()
            .zip(tags)
            .map(|(e, tag)| TaggedLeaf {
                seq: e.seq,
                leaf: encode_leaf(e.seq, &e.event),
                leaf_hash: e.leaf_hash,
                tag,
            })
            .collect())
    }

    async fn tag_positions(&self, tags: &[Hash]) -> Result<Vec<(Hash, u64)>, AuditStoreError> {
        let inner = self.lock()?;
        Ok(inner
            .tags
            .iter()
            .enumerate()
            .filter_map(|(seq, tag)| tag.filter(|t| tags.contains(t)).map(|t| (t, seq as u64)))
            .collect())
    }

    async fn quarantined(
        &self,
        after_queue_id: u64,
        limit: u32,
    ) -> Result<Vec<QuarantinedRow>, AuditStoreError> {
        Ok(self
            .lock()?
            .quarantine
            .range((Bound::Excluded(after_queue_id), Bound::Unbounded))
            .take(limit.min(MAX_READ) as usize)
            .map(|(_, row)| row.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        crate::conformance::suite(&super::MemoryAuditStore::new()).await;
    }

    #[tokio::test]
    async fn memory_store_passes_the_shared_log_suite() {
        crate::conformance::shared_suite(&super::MemoryAuditStore::new()).await;
    }
}
