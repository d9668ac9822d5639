//! Failed-authentication counts and lockouts kept in Redis, so every gateway instance sharing
//! it sees one count per source (an IPv4 address or an IPv6 block, see `identity::net`) and
//! key prefix: a source locked out at one instance is locked out at all of them. The same sliding window, threshold and duration as the
//! in-process [`LocalTracker`], decided atomically in Redis by one Lua script on Redis's clock.
//!
//! Keys, under the shared namespace: `lockout:fail:<subject>`, a sorted set of the failure
//! times within the window (it expires a window after its last failure), and
//! `lockout:lock:<subject>`, present while the subject is locked out (it expires with the
//! lockout). A subject is `source=<IPv4 address>`, `source=<IPv6 network>/<prefix>` or
//! `key_prefix=<prefix>`: the prefix is the non-secret part of a key (shown in listings and
//! written in the audit log), never the key, and an address is what the audit log records of
//! a failure; neither is PHI.
//!
//! When Redis cannot be reached, failures are counted in this process instead (as without
//! Redis), the outage is logged once, and lockouts made in this process during the outage
//! still hold after it. Authentication never waits on or fails for the tracker's sake: a
//! valid credential is served whatever Redis does.

use std::time::{Duration, Instant};

use crate::identity::lockout::{FailureTracker, LocalTracker, LockoutSettings, Subject};
use crate::shared::SharedRedis;

/// For each (failures, lock) key pair: skip a locked subject; else drop failures older than
/// the window (microseconds, `ARGV[1]`), add this one (`ARGV[4]` makes the member unique), and
/// at the threshold (`ARGV[2]`) replace the failures by a lock of `ARGV[3]` milliseconds.
/// Returns the (1-based) indexes of the pairs this failure locked.
const FAIL_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local duration = tonumber(ARGV[3])
local out = {}
for i = 1, #KEYS, 2 do
  local fails, lock = KEYS[i], KEYS[i + 1]
  if redis.call('EXISTS', lock) == 0 then
    redis.call('ZREMRANGEBYSCORE', fails, '-inf', now - window)
    redis.call('ZADD', fails, now, string.format('%d', now) .. ':' .. ARGV[4])
    if redis.call('ZCARD', fails) >= threshold then
      redis.call('DEL', fails)
      redis.call('SET', lock, '1', 'PX', duration)
      table.insert(out, (i + 1) / 2)
    else
      redis.call('PEXPIRE', fails, math.ceil(window / 1000) + 1000)
    end
  end
end
return out
";

/// The longest remaining lock among the keys, in milliseconds (0: none).
const LOCKED_SCRIPT: &str = r"
local longest = 0
for i = 1, #KEYS do
  local left = redis.call('PTTL', KEYS[i])
  if left > longest then longest = left end
end
return longest
";

/// Failures counted in Redis, shared by every instance; in this process while Redis is down.
#[derive(Debug)]
pub struct RedisTracker {
    redis: SharedRedis,
    settings: LockoutSettings,
    fail: redis::Script,
    locked: redis::Script,
    /// Where failures are counted while Redis is unreachable.
    local: LocalTracker,
}

impl RedisTracker {
    pub fn new(redis: SharedRedis, settings: LockoutSettings) -> RedisTracker {
        RedisTracker {
            redis,
            settings,
            fail: redis::Script::new(FAIL_SCRIPT),
            locked: redis::Script::new(LOCKED_SCRIPT),
            local: LocalTracker::new(settings),
        }
    }

    fn fail_key(&self, s: &Subject) -> String {
        self.redis.key(&format!("lockout:fail:{s}"))
    }

    fn lock_key(&self, s: &Subject) -> String {
        self.redis.key(&format!("lockout:lock:{s}"))
    }

    async fn shared_fail(&self, subjects: &[Subject]) -> Result<Vec<Subject>, redis::RedisError> {
        let mut call = self.fail.prepare_invoke();
        for s in subjects {
            call.key(self.fail_key(s)).key(self.lock_key(s));
        }
        let s = self.settings;
        let locked: Vec<usize> = call
            .arg(u64::try_from(s.window.as_micros()).unwrap_or(u64::MAX))
            .arg(s.threshold)
            .arg(
                u64::try_from(s.duration.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .arg(uuid::Uuid::new_v4().simple().to_string())
            // The request's second call (after `locked`): an outage has counted it already.
            .invoke_async(&mut self.redis.conn_uncounted())
            .await?;
        Ok(locked
            .into_iter()
            .filter_map(|i| subjects.get(i.checked_sub(1)?).cloned())
            .collect())
    }

    async fn shared_locked(&self, subjects: &[Subject]) -> Result<u64, redis::RedisError> {
        let mut call = self.locked.prepare_invoke();
        for s in subjects {
            call.key(self.lock_key(s));
        }
        call.invoke_async(&mut self.redis.conn()).await
    }
}

#[async_trait::async_trait]
impl FailureTracker for RedisTracker {
    async fn locked(&self, subjects: &[Subject], now: Instant) -> Option<Duration> {
        // Lockouts made here during an outage hold for their duration after it. A failure is
        // the outage's to log (`shared::RedisHealth`), once.
        let local = self.local.locked_now(subjects, now);
        let shared = match self.shared_locked(subjects).await {
            Ok(ms) => (ms > 0).then(|| Duration::from_millis(ms)),
            Err(_) => None,
        };
        local.max(shared)
    }

    async fn fail(&self, subjects: &[Subject], now: Instant) -> Vec<Subject> {
        match self.shared_fail(subjects).await {
            Ok(locked) => locked,
            Err(_) => self.local.fail_now(subjects, now),
        }
    }
}
