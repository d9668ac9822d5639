//! The revocation broadcast: a key revoked or rotated through any instance (the admin API, or
//! `wardgate keys` run beside a server) is announced on a Redis pub/sub channel, and every
//! instance listening drops the key's entries from its cache of verified credentials at once,
//! so the next request with it is verified against the store and refused. Without it another
//! instance would serve the key until its cache entry ages out (`auth.key_cache_ttl`).
//!
//! The channel is `<namespace>:key-changed`; a message is the key's id, which is not secret
//! (the admin API and the audit log show it) and from which nothing about the secret follows.
//!
//! Liveness: a subscription can die without its socket saying so (a NAT or firewall that
//! drops the flow, a paused Redis): nothing arrives, nothing fails. So the listener checks the
//! whole path: every `auth.revocation_heartbeat_interval` the instance publishes a heartbeat
//! through its ordinary connection on a channel of its own
//! (`<namespace>:key-changed:heartbeat:<uuid>`, subscribed on the same connection as the
//! announcements), and expects it back. Redis delivers a connection's messages in the order it
//! handled their publishes, so a heartbeat heard means every announcement published before it
//! was heard too. When none sent in the last interval has come back within
//! `auth.revocation_heartbeat_timeout`, the subscription is taken as lost: at most
//! [`BroadcastSettings::silence_bound`] after it went silent.
//!
//! Degradation: the listener is subscribed before a gateway starts serving (a start with an
//! unreachable Redis fails, as the limiter's does). When the subscription is lost (its
//! connection closed, or its heartbeat silent) the listener logs that once, forgets every
//! cached credential, marks the cache unconfirmed (each verified credential is then trusted for
//! `auth.key_cache_ttl_unconfirmed` at most) and resubscribes, each try bounded in time, with a
//! growing pause of up to [`MAX_RESUBSCRIBE_PAUSE`]. Once subscribed again it forgets every
//! cached credential once more, since announcements made while it was away are lost, and the
//! cache is trusted for `auth.key_cache_ttl` again when the first heartbeat comes back. A
//! publish that fails is logged with the key's id; the change itself stands, and other
//! instances refuse the key within the cache TTL.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt as _;

use crate::config::auth::BroadcastSettings;
use crate::identity::key_cache::KeyCache;
use crate::shared::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT, SharedRedis};

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
    /// Whether the last announcement failed.
    unannounced: std::sync::atomic::AtomicBool,
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
            unannounced: std::sync::atomic::AtomicBool::new(false),
            listener: None,
        }
    }

    /// Subscribes now (a change announced after this returns is not missed) and, in the
    /// background, drops the entries of each announced key from `cache`, checking that the
    /// subscription still hears what is published (see the module's doc).
    pub async fn listen(
        redis: SharedRedis,
        cache: &Arc<KeyCache>,
        settings: BroadcastSettings,
    ) -> Result<Revocations, crate::shared::RedisFailure> {
        let mut me = Revocations::publisher(redis);
        let listener = Listener {
            heartbeat: me.redis.key(&format!(
                "key-changed:heartbeat:{}",
                uuid::Uuid::new_v4().simple()
            )),
            changes: me.channel.clone(),
            redis: me.redis.clone(),
            settings,
            origin: Instant::now(),
            cache: Arc::downgrade(cache),
        };
        let pubsub = listener
            .subscribe()
            .await
            .map_err(|e| listener.redis.failure(e))?;
        me.listener = Some(AbortOnDrop(tokio::spawn(listener.run(pubsub))));
        Ok(me)
    }

    /// False while announcing fails (from a failed publish to the next that succeeds).
    pub fn announcing(&self) -> bool {
        !self.unannounced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Announces that key `key_id` was revoked or rotated. A failure is logged, not returned:
    /// the change stands, and other instances refuse the key within `auth.key_cache_ttl`.
    pub async fn publish(&self, key_id: &str) {
        let sent: Result<u64, _> = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(key_id)
            .query_async(&mut self.redis.conn())
            .await;
        self.unannounced
            .store(sent.is_err(), std::sync::atomic::Ordering::Release);
        // Per change, not per request: an operator who changed a key is told that it was not
        // announced.
        if let Err(e) = sent {
            let e = self.redis.failure(e);
            tracing::warn!(
                target: "wardgate::redis",
                key_id,
                error = %e,
                "the key change was not announced to the other instances ({e}); they refuse \
                 the key within auth.key_cache_ttl"
            );
        }
    }
}

/// How long one try to (re)subscribe may take: a connection, then the subscriptions' answers.
const SUBSCRIBE_TIMEOUT: Duration = CONNECT_TIMEOUT
    .saturating_add(RESPONSE_TIMEOUT)
    .saturating_add(RESPONSE_TIMEOUT);

/// The background half of [`Revocations::listen`].
struct Listener {
    redis: SharedRedis,
    /// `<namespace>:key-changed`: the announcements.
    changes: String,
    /// This instance's own heartbeat channel.
    heartbeat: String,
    settings: BroadcastSettings,
    /// Heartbeats carry the milliseconds from this instant to their publish.
    origin: Instant,
    cache: Weak<KeyCache>,
}

/// Why a subscription was given up.
enum Lost {
    /// The connection said it closed.
    Closed,
    /// The connection stayed open, but no heartbeat came back in time.
    Silent,
    /// The cache is gone: the service stopped.
    Stopped,
}

impl Listener {
    /// Subscribes to the announcements and this instance's heartbeats, within
    /// [`SUBSCRIBE_TIMEOUT`] (a connection to a silent peer would otherwise wait forever).
    async fn subscribe(&self) -> Result<redis::aio::PubSub, redis::RedisError> {
        let attempt = async {
            let mut pubsub = self.redis.client().get_async_pubsub().await?;
            pubsub.subscribe(&self.changes).await?;
            pubsub.subscribe(&self.heartbeat).await?;
            Ok(pubsub)
        };
        tokio::time::timeout(SUBSCRIBE_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "Redis did not answer the subscription in time",
                )
                .into())
            })
    }

    /// Listens until the cache is gone: follows the subscription, and when it is lost, says so
    /// once, stops trusting the cache and resubscribes.
    async fn run(self, mut pubsub: redis::aio::PubSub) {
        let _beats = AbortOnDrop(tokio::spawn(heartbeats(
            self.redis.clone(),
            self.heartbeat.clone(),
            self.origin,
            self.settings.heartbeat_interval,
        )));
        // Just subscribed, with nothing cached yet: trusted until the heartbeat says otherwise.
        let mut confirmed = true;
        loop {
            let why = self.follow(&mut pubsub, &mut confirmed).await;
            let Some(cache) = self.cache.upgrade() else {
                return;
            };
            // Whatever is cached may have been revoked unheard: forgotten, and what is
            // verified until the subscription is confirmed again is trusted briefly only.
            cache.set_unconfirmed(true);
            cache.clear();
            drop(cache);
            if confirmed {
                self.warn_lost(&why);
            }
            confirmed = false;
            let Some(again) = self.resubscribe().await else {
                return;
            };
            pubsub = again;
            // Whatever was announced while this instance was not listening is lost.
            if let Some(cache) = self.cache.upgrade() {
                cache.clear();
            }
        }
    }

    fn warn_lost(&self, why: &Lost) {
        let unconfirmed = humantime::format_duration(self.settings.unconfirmed_ttl);
        match why {
            Lost::Closed | Lost::Stopped => tracing::warn!(
                target: "wardgate::redis",
                redis = %self.redis.address(),
                "the revocation broadcast lost its connection to Redis at {}: cached \
                 credentials were dropped, and until it listens again each is trusted for at \
                 most {unconfirmed} (auth.key_cache_ttl_unconfirmed)",
                self.redis.address()
            ),
            Lost::Silent => tracing::warn!(
                target: "wardgate::redis",
                redis = %self.redis.address(),
                "the revocation broadcast's subscription to Redis at {} is silent (no \
                 heartbeat came back within {}): it is taken as lost, cached credentials were \
                 dropped, and until it listens again each is trusted for at most \
                 {unconfirmed} (auth.key_cache_ttl_unconfirmed)",
                self.redis.address(),
                humantime::format_duration(self.settings.silence_bound())
            ),
        }
    }

    /// Drops announced keys from the cache and follows the heartbeat, until the subscription
    /// is lost. `confirmed` turns true at the first heartbeat heard.
    async fn follow(&self, pubsub: &mut redis::aio::PubSub, confirmed: &mut bool) -> Lost {
        // The newest heartbeat heard was published then (or the subscription began).
        let mut heard = Instant::now();
        let mut messages = pubsub.on_message();
        loop {
            let deadline = heard + self.settings.silence_bound();
            let msg = tokio::select! {
                // What has arrived is read before the deadline is looked at.
                biased;
                msg = messages.next() => msg,
                () = tokio::time::sleep_until(deadline.into()) => return Lost::Silent,
            };
            let Some(msg) = msg else {
                return Lost::Closed;
            };
            let Some(cache) = self.cache.upgrade() else {
                return Lost::Stopped;
            };
            let Ok(payload) = msg.get_payload::<String>() else {
                // Not one of ours: nothing to drop.
                continue;
            };
            if msg.get_channel_name() != self.heartbeat {
                cache.forget_key(&payload);
                continue;
            }
            let Some(sent) = payload
                .parse::<u64>()
                .ok()
                .and_then(|ms| self.origin.checked_add(Duration::from_millis(ms)))
            else {
                continue;
            };
            heard = heard.max(sent);
            if !*confirmed {
                *confirmed = true;
                cache.set_unconfirmed(false);
                tracing::info!(
                    target: "wardgate::redis",
                    redis = %self.redis.address(),
                    "the revocation broadcast is listening to Redis at {} again; credentials \
                     cached before were dropped",
                    self.redis.address()
                );
            }
        }
    }

    /// Subscribes again, pausing longer after each failure; `None` when the cache is gone.
    async fn resubscribe(&self) -> Option<redis::aio::PubSub> {
        let mut pause = FIRST_RESUBSCRIBE_PAUSE;
        loop {
            tokio::time::sleep(pause).await;
            if self.cache.strong_count() == 0 {
                return None;
            }
            match self.subscribe().await {
                Ok(p) => return Some(p),
                Err(_) => pause = (pause * 2).min(MAX_RESUBSCRIBE_PAUSE),
            }
        }
    }
}

/// Publishes this instance's heartbeat every `every`, through the ordinary connection: the
/// milliseconds since `origin`. A publish that fails shows as a heartbeat that does not come
/// back; the listener says so.
async fn heartbeats(redis: SharedRedis, channel: String, origin: Instant, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ms = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let _: Result<u64, _> = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(ms)
            .query_async(&mut redis.conn_uncounted())
            .await;
    }
}
