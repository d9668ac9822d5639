//! Recently verified credentials, so a busy key is not verified against the store on every
//! request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::identity::principal::Principal;

/// Recently verified keys and tokens, so a busy client does not cost a database round trip
/// (or a signature check) per request.
///
/// Entries are keyed by the SHA-256 of the presented credential (which is never held), live
/// for `ttl`, and never outlive the key's expiry or the token's `exp`. Only valid credentials
/// are cached. A revocation or rotation made elsewhere (the CLI, another instance) is
/// broadcast through Redis when it is configured (`identity::revocations`), and each instance
/// drops the key's entries by its id at once; without Redis it takes effect within `ttl`, the
/// documented bound (`auth.key_cache_ttl`, `0s` turns the cache off). While the broadcast is
/// configured but not known to be listening (Redis unreachable, its subscription silent), the
/// listener marks the cache [`unconfirmed`](KeyCache::set_unconfirmed) and entries are trusted
/// for `unconfirmed_ttl` at most (`auth.key_cache_ttl_unconfirmed`).
///
/// Every forgetting (one key, or all) starts a new generation: a credential verified against
/// the store before it is not cached after it (see [`KeyCache::generation`]), so a
/// verification that was in flight while a key was revoked cannot put the key back.
#[derive(Debug)]
pub struct KeyCache {
    ttl: std::time::Duration,
    unconfirmed_ttl: std::time::Duration,
    /// Whether revocations made elsewhere may be missed (the broadcast is not known to be
    /// listening): entries are then trusted for `unconfirmed_ttl` at most.
    unconfirmed: AtomicBool,
    /// Bumped, under the entries' lock, by every forgetting.
    generation: AtomicU64,
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
            unconfirmed_ttl: ttl,
            unconfirmed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            max_entries,
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Trusts entries for `unconfirmed_ttl` at most (never more than `ttl`) while the
    /// revocation broadcast is not known to be listening.
    pub fn with_unconfirmed_ttl(self, unconfirmed_ttl: std::time::Duration) -> KeyCache {
        KeyCache {
            unconfirmed_ttl: unconfirmed_ttl.min(self.ttl),
            ..self
        }
    }

    /// How long an entry is trusted now.
    fn trusted_for(&self) -> std::time::Duration {
        if self.unconfirmed.load(Ordering::Acquire) {
            self.unconfirmed_ttl
        } else {
            self.ttl
        }
    }

    pub(crate) fn get(&self, digest: &[u8; 32], now: time::OffsetDateTime) -> Option<Principal> {
        let ttl = self.trusted_for();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let e = entries.get(digest)?;
        let fresh = e.cached_at.elapsed() < ttl && e.expires_at.is_none_or(|x| x > now);
        fresh.then(|| e.principal.clone())
    }

    /// The current generation: read it before verifying a credential against the store, and
    /// give it to [`KeyCache::put`].
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches a credential verified in `generation`; nothing is cached when something was
    /// forgotten since (the verification may predate a revocation).
    pub(crate) fn put(
        &self,
        digest: [u8; 32],
        p: &Principal,
        expires_at: Option<time::OffsetDateTime>,
        generation: u64,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
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
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.retain(|_, e| e.principal.key_id != key_id);
    }

    /// Forgets everything (after a revocation made through this process, or when revocations
    /// broadcast while this instance was not listening may have been missed).
    pub fn clear(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// Whether revocations made elsewhere may be missed now (set by the revocation listener):
    /// while they may, entries are trusted for the shorter `unconfirmed_ttl`.
    pub fn set_unconfirmed(&self, unconfirmed: bool) {
        self.unconfirmed.store(unconfirmed, Ordering::Release);
    }

    /// Whether the cache is trusting entries for the shorter `unconfirmed_ttl` now.
    pub fn is_unconfirmed(&self) -> bool {
        self.unconfirmed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn principal(key_id: &str) -> Principal {
        Principal {
            key_id: key_id.into(),
            tenant: "acme".into(),
            models: vec![],
            roles: vec![wardgate_store::Role::User],
            method: wardgate_audit::AuthMethod::ApiKey,
        }
    }

    /// A verification that began before a key was forgotten does not put it back.
    #[test]
    fn a_verification_older_than_a_revocation_is_not_cached() {
        let c = KeyCache::new(Duration::from_secs(300), 10);
        let now = time::OffsetDateTime::now_utc();
        let before = c.generation();
        c.forget_key("key_a");
        c.put([1; 32], &principal("key_a"), None, before);
        assert!(c.get(&[1; 32], now).is_none());
        c.put([1; 32], &principal("key_a"), None, c.generation());
        assert!(c.get(&[1; 32], now).is_some());
    }

    /// While the broadcast is not known to be listening, entries are trusted for the shorter
    /// bound only; once it is, for the whole TTL again.
    #[test]
    fn unconfirmed_entries_are_trusted_for_the_shorter_bound() {
        let c = KeyCache::new(Duration::from_secs(300), 10).with_unconfirmed_ttl(Duration::ZERO);
        let now = time::OffsetDateTime::now_utc();
        c.put([1; 32], &principal("key_a"), None, c.generation());
        assert!(c.get(&[1; 32], now).is_some());
        c.set_unconfirmed(true);
        assert!(c.get(&[1; 32], now).is_none());
        c.set_unconfirmed(false);
        assert!(c.get(&[1; 32], now).is_some());
    }
}
