//! [`MemoryAuditStore`]: the audit log's stores ([`AuditStore`] and [`SharedLog`]) in memory,
//! for tests, benchmarks and examples.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::event::AuditEvent;
use crate::merkle::Hash;
use crate::shared::{Lease, PendingEvent, Sequenced, SharedLog};
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
    checkpoints: BTreeMap<u64, StoredCheckpoint>,
    /// The shared-log queue ([`crate::shared::SharedLog`]), by queue id.
    queue: BTreeMap<u64, AuditEvent>,
    next_queue_id: u64,
    /// The sequencer lease: holder, epoch, expiry.
    lease: Option<(String, std::time::Instant)>,
    lease_epoch: u64,
}

impl MemoryAuditStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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
    async fn enqueue(&self, events: Vec<AuditEvent>) -> Result<Vec<u64>, AuditStoreError> {
        check_batch(&events)?;
        let mut inner = self.lock()?;
        let mut ids = Vec::with_capacity(events.len());
        for e in events {
            inner.next_queue_id += 1;
            let id = inner.next_queue_id;
            inner.queue.insert(id, e);
            ids.push(id);
        }
        Ok(ids)
    }

    async fn pending_count(&self) -> Result<u64, AuditStoreError> {
        Ok(self.lock()?.queue.len() as u64)
    }

    async fn pending(&self, filter: &AuditFilter) -> Result<Vec<PendingEvent>, AuditStoreError> {
        Ok(self
            .lock()?
            .queue
            .iter()
            .filter(|(_, e)| filter.matches_event(e))
            .take(filter.effective_limit() as usize)
            .map(|(id, e)| PendingEvent {
                id: *id,
                event: e.clone(),
            })
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

    async fn sequence(&self, lease: &Lease, max: usize) -> Result<Sequenced, AuditStoreError> {
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
        let ids: Vec<u64> = inner
            .queue
            .keys()
            .take(max.min(MAX_APPEND_BATCH))
            .copied()
            .collect();
        let mut entries = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(event) = inner.queue.remove(&id) {
                let seq = inner.entries.len() as u64;
                let entry = AuditEntry::prepare(seq, event).0;
                inner.entries.push(entry.clone());
                entries.push(entry);
            }
        }
        Ok(Sequenced::Entries(entries))
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
