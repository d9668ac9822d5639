//! The revocation broadcast: a key revoked or rotated through any instance (the admin API, or
//! `wardgate keys` run beside a server) is announced on a Redis pub/sub channel, and every
//! instance listening drops the key's entries from its cache of verified credentials at once,
//! so the next request with it is verified against the store and refused. Without it another
//! instance would serve the key until its cache entry ages out (`auth.key_cache_ttl`).
//!
//! The channel is `<namespace>:key-changed`; a message is the key's id, which is not secret
//! (the admin API and the audit log show it) and from which nothing about the secret follows.
//!
//! Degradation: the listener is subscribed before a gateway starts serving (a start with an
//! unreachable Redis fails, as the limiter's does). When the subscription's connection is lost
//! it logs that once and resubscribes, with a growing pause of up to [`MAX_RESUBSCRIBE_PAUSE`];
//! meanwhile a revocation elsewhere takes effect here within `auth.key_cache_ttl`, as without
//! Redis. Once subscribed again it forgets every cached credential, since announcements made
//! while it was away are lost. A publish that fails is logged with the key's id; the change
//! itself stands, and other instances refuse the key within the cache TTL.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt as _;

use crate::identity::key_cache::KeyCache;
use crate::shared::{Outage, SharedRedis};

/// The first pause before resubscribing after the connection was lost; it doubles up to
/// [`MAX_RESUBSCRIBE_PAUSE`].
const FIRST_RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between attempts to resubscribe.
pub const MAX_RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(5);

/// Publishes key changes, and (in a serving instance) listens for them.
#[derive(Debug)]
pub struct Revocations {
    redis: SharedRedis,
    channel: String,
    outage: Outage,
    /// The listener, stopped when this is dropped (the last state holding it).
    listener: Option<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Revocations {
    /// Announces changes without listening (the CLI, or an instance with no credential cache).
    pub fn publisher(redis: SharedRedis) -> Revocations {
        Revocations {
            channel: redis.key("key-changed"),
            redis,
            outage: Outage::new("key changes made here are not announced to other instances"),
            listener: None,
        }
    }

    /// Subscribes now (a change announced after this returns is not missed) and, in the
    /// background, drops the entries of each announced key from `cache`.
    pub async fn listen(
        redis: SharedRedis,
        cache: &Arc<KeyCache>,
    ) -> Result<Revocations, redis::RedisError> {
        let mut me = Revocations::publisher(redis);
        let pubsub = subscribe(me.redis.client(), &me.channel).await?;
        let task = tokio::spawn(listen(
            me.redis.client().clone(),
            me.channel.clone(),
            pubsub,
            Arc::downgrade(cache),
        ));
        me.listener = Some(AbortOnDrop(task));
        Ok(me)
    }

    /// False while announcing fails (from a failed publish to the next that succeeds).
    pub fn announcing(&self) -> bool {
        !self.outage.is_down()
    }

    /// Announces that key `key_id` was revoked or rotated. A failure is logged, not returned:
    /// the change stands, and other instances refuse the key within `auth.key_cache_ttl`.
    pub async fn publish(&self, key_id: &str) {
        let sent: Result<u64, _> = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(key_id)
            .query_async(&mut self.redis.conn())
            .await;
        match sent {
            Ok(_) => self.outage.recovered(),
            Err(e) => {
                self.outage.failed(&e);
                tracing::warn!(
                    target: "wardgate::redis",
                    key_id,
                    error = %e,
                    "the key change was not announced to the other instances; they refuse \
                     the key within auth.key_cache_ttl"
                );
            }
        }
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Drops announced keys from the cache; when the connection is lost, resubscribes and then
/// forgets every cached credential. Ends when the cache is gone.
async fn listen(
    client: redis::Client,
    channel: String,
    mut pubsub: redis::aio::PubSub,
    cache: Weak<KeyCache>,
) {
    loop {
        {
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let Some(cache) = cache.upgrade() else {
                    return;
                };
                match msg.get_payload::<String>() {
                    Ok(key_id) => cache.forget_key(&key_id),
                    // Not one of ours: nothing to drop.
                    Err(_) => continue,
                }
            }
        }
        tracing::warn!(
            target: "wardgate::redis",
            "the revocation broadcast lost its Redis connection: keys revoked at other \
             instances are refused here within auth.key_cache_ttl until it is back"
        );
        let mut pause = FIRST_RESUBSCRIBE_PAUSE;
        pubsub = loop {
            tokio::time::sleep(pause).await;
            if cache.strong_count() == 0 {
                return;
            }
            match subscribe(&client, &channel).await {
                Ok(p) => break p,
                Err(_) => pause = (pause * 2).min(MAX_RESUBSCRIBE_PAUSE),
            }
        };
        // Whatever was announced while this instance was not listening is lost.
        if let Some(cache) = cache.upgrade() {
            cache.clear();
        }
        tracing::info!(
            target: "wardgate::redis",
            "the revocation broadcast is listening again; cached credentials were dropped"
        );
    }
}
