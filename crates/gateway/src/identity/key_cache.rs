//! Recently verified credentials, so a busy key is not verified against the store on every
//! request.

use crate::identity::principal::Principal;

/// Recently verified keys and tokens, so a busy client does not cost a database round trip
/// (or a signature check) per request.
///
/// Entries are keyed by the SHA-256 of the presented credential (which is never held), live
/// for `ttl`, and never outlive the key's expiry or the token's `exp`. Only valid credentials
/// are cached. A revocation or rotation made elsewhere (the CLI, another instance) is
/// broadcast through Redis when it is configured (`identity::revocations`), and each instance
/// drops the key's entries by its id at once; without Redis, or while it is down, it takes
/// effect within `ttl`, the documented bound (`auth.key_cache_ttl`, `0s` turns the cache off).
#[derive(Debug)]
pub struct KeyCache {
    ttl: std::time::Duration,
    max_entries: usize,
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], CachedKey>>,
}

#[derive(Debug, Clone)]
struct CachedKey {
    principal: Principal,
    cached_at: std::time::Instant,
    expires_at: Option<time::OffsetDateTime>,
}

impl KeyCache {
    pub fn new(ttl: std::time::Duration, max_entries: usize) -> KeyCache {
        KeyCache {
            ttl,
            max_entries,
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub(crate) fn get(&self, digest: &[u8; 32], now: time::OffsetDateTime) -> Option<Principal> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = entries.get(digest)?;
        let fresh = e.cached_at.elapsed() < self.ttl && e.expires_at.is_none_or(|x| x > now);
        fresh.then(|| e.principal.clone())
    }

    pub(crate) fn put(
        &self,
        digest: [u8; 32],
        p: &Principal,
        expires_at: Option<time::OffsetDateTime>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.max_entries {
            // Stale entries first; if all are fresh, start over rather than grow without bound.
            let ttl = self.ttl;
            entries.retain(|_, e| e.cached_at.elapsed() < ttl);
            if entries.len() >= self.max_entries {
                entries.clear();
            }
        }
        entries.insert(
            digest,
            CachedKey {
                principal: p.clone(),
                cached_at: std::time::Instant::now(),
                expires_at,
            },
        );
    }

    /// Forgets every entry of key `key_id` (revoked or rotated elsewhere); whatever presents it
    /// next is verified against the store again. Entries are keyed by the credential's digest,
    /// so this looks through them all: a revocation is rare, a lookup is not.
    pub fn forget_key(&self, key_id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, e| e.principal.key_id != key_id);
    }

    /// Forgets everything (after a revocation made through this process, or when revocations
    /// broadcast while this instance was not listening may have been missed).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
