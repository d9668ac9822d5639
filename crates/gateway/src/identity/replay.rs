//! The replay defence of `wardgate llm` across replicas: the nonces of verified signed requests,
//! shared through Redis by every replica pointed at the same Redis and namespace, so a request
//! signed once is served once by the whole pool, not once per replica.
//!
//! Why a shared nonce cache and not the target's authority in the signed text: replicas behind
//! one load balancer URL share an authority, so signing it cannot tell them apart, while a
//! shared cache refuses a replay to any replica however the replicas are addressed (behind one
//! URL, or named one by one in a pool). Signing the authority would add a check only where
//! replicas are named one by one and do not share a Redis; it would also change the signed
//! text, which every gateway and replica would have to change in step, and each replica would
//! have to be told the name it is reached by. So the signed text is unchanged (`v1`).
//!
//! Each replica keeps its own replay cache as well (`wardgate_api::signing::Verifier`), which
//! is checked first; the shared one is checked after it, before the body is read. A nonce is
//! stored as `<namespace>:llm-nonce:<hex of 128 bits of its SHA-256>` (the nonce is public: it
//! travels in a header) until its timestamp leaves the skew window, `SET NX` with that expiry,
//! so the cache holds only the last minute's nonces.
//!
//! When Redis cannot be reached, each replica falls back to its own cache (logged once per
//! outage), rather than refusing every request: a replay then works only across replicas,
//! only within the 30-second skew window of a request captured on the private hop, and only
//! during the outage. Whoever can capture that hop already reads the prompts and completions
//! on it (unless it runs over TLS, where nothing can be captured to replay), so a replay gives
//! them little more, while failing closed would turn a Redis outage into an outage of every
//! model.

use std::time::Duration;

use crate::shared::SharedRedis;

/// The nonces every replica sharing the Redis has seen.
#[derive(Debug)]
pub struct SharedNonces {
    redis: SharedRedis,
}

impl SharedNonces {
    pub fn new(redis: SharedRedis) -> SharedNonces {
        SharedNonces { redis }
    }

    /// Records nonce `id` until `expires` (Unix seconds); false when a replica sharing the
    /// Redis has already recorded it (a replay). True when Redis cannot say: the replica's own
    /// cache has already passed the nonce.
    pub async fn claim(&self, id: [u8; 16], expires: i64, now_unix: i64) -> bool {
        // Kept a second past the last second the timestamp is accepted.
        let keep = Duration::from_secs(expires.saturating_sub(now_unix).max(0).unsigned_abs() + 1);
        let key = self.redis.key(&format!("llm-nonce:{}", hex(&id)));
        let set: Result<Option<String>, _> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut self.redis.conn())
            .await;
        // A failure is the outage's to log (`shared::RedisHealth`), once.
        set.map_or(true, |reply| reply.is_some())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
