//! A pool of equal replicas serving one model (several `wardgate llm`, Ollama or vLLM servers),
//! and the choice of the replica that serves a request.
//!
//! A request with a conversation key ([`crate::affinity`]) goes to the replica that
//! rendezvous hashing picks among the healthy ones, so every turn of a conversation reaches
//! the engine that holds its prefix in its KV cache; unless that replica is overloaded — more
//! outstanding requests than `(1 + load_factor) × the pool's average + 1` — when the request
//! goes where a request without a key goes: to the less loaded of two replicas drawn at
//! random (power of two choices), which avoids both the herd that "least loaded" sends to one
//! replica between updates and round robin's blindness to slow requests. A replica that fails
//! (busy, refused, 5xx, no first token in time) sends the request to another replica of the
//! pool, again by two choices, before the chain's next link is tried; but a request waits the
//! whole first-token limit on at most [`PoolConfig::silent_attempts`] replicas of one pool
//! before it moves on to the next link, so that replicas which accept a generation and then
//! stay silent cannot spend the request's whole deadline between them.
//!
//! The order of the replicas to try: those whose breaker lets a request through (closed, or
//! open and cooled down, for its one trial), healthy ones that have not been answering busy
//! lately first, then the busy ones, then the unhealthy ones; the conversation's replica is
//! picked within the first non-empty group. A replica that answered busy several times in a
//! row so hands its conversations to their next-ranked replica for a short cool-down instead of
//! costing each of them a round trip to be refused.
//!
//! How the prefix-aware routers for vLLM and SGLang do it, and why this is simpler: the vLLM
//! production stack's prefix-aware router, Ray Serve's `PrefixCacheAffinityRouter` and
//! SGLang's cache-aware router keep a prefix tree (of text or token blocks) per replica of
//! what each was sent, route to the replica with the longest match when the load is balanced
//! (SGLang: the busiest and idlest queues differ by less than an absolute and a relative
//! threshold; Ray: less than an imbalance threshold) and otherwise to the shortest queue or two
//! choices; llm-d's scheduler and NVIDIA Dynamo score every replica by prefix overlap (Dynamo
//! from the engines' own KV-cache events) and subtract load. A tree learns shared prefixes it
//! was never told about (one long system prompt across many conversations), but it is state
//! that each gateway instance would build on its own from its own traffic, so N instances
//! behind a load balancer would each send a conversation somewhere different. wardgate hashes
//! the part of a request that a conversation's next turn repeats and uses rendezvous hashing:
//! no state, the same answer on every instance, a replica's loss moving only its own
//! conversations; the load bound (consistent hashing with bounded loads, Mirrokni, Thorup and
//! Zadimoghaddam 2018) plays the part of the routers' balance threshold.

use std::sync::Arc;
use std::time::Instant;

use rand::Rng as _;

use crate::breaker::Pass;
use crate::{BackendHandle, affinity};

/// Default of a pool's `load_factor`: a conversation's replica may carry 25 % more outstanding
/// requests than the pool's average (plus one) before a turn goes elsewhere.
pub const DEFAULT_LOAD_FACTOR: f64 = 0.25;

/// Default of a pool's `silent_attempts`: a request waits out the first-token limit on one
/// replica of a pool, then moves on to the chain's next link.
pub const DEFAULT_SILENT_ATTEMPTS: u32 = 1;

/// How a pool balances and how long a request stays with it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolConfig {
    /// How far over the pool's average of outstanding requests (plus one) a conversation's
    /// replica may be before a turn goes elsewhere: 0.25 is 25 %.
    pub load_factor: f64,
    /// How many of the pool's replicas one request may wait the whole first-token limit on
    /// before it moves on to the chain's next link (at least 1). Replicas that fail at once
    /// (busy, refused, 5xx) do not count. On a chain's last link the rest of the pool is still
    /// tried, within the request deadline: there is no later link to keep time for.
    pub silent_attempts: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            load_factor: DEFAULT_LOAD_FACTOR,
            silent_attempts: DEFAULT_SILENT_ATTEMPTS,
        }
    }
}

/// Replicas of one model server, balanced as one link of a chain. A backend with one URL is a
/// pool of one.
#[derive(Debug)]
pub struct Pool {
    name: String,
    replicas: Vec<Replica>,
    config: PoolConfig,
}

#[derive(Debug)]
struct Replica {
    handle: Arc<BackendHandle>,
    /// The replica's rendezvous identity (from its URL, not its place in the list).
    id: u64,
}

impl Pool {
    /// A pool named `name` of `replicas`, each with the identity rendezvous hashing knows it
    /// by (its URL: reordering the list then moves no conversation).
    pub fn new(
        name: impl Into<String>,
        replicas: Vec<(Arc<BackendHandle>, String)>,
        config: PoolConfig,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            name: name.into(),
            replicas: replicas
                .into_iter()
                .map(|(handle, identity)| Replica {
                    handle,
                    id: affinity::replica_id(&identity),
                })
                .collect(),
            config,
        })
    }

    /// One backend as a pool of one, under the backend's name.
    pub fn single(handle: Arc<BackendHandle>) -> Arc<Pool> {
        let name = handle.name().to_owned();
        Pool::new(name.clone(), vec![(handle, name)], PoolConfig::default())
    }

    /// The configured backend's name (chains name the pool, not its replicas).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The replicas in configured order.
    pub fn replicas(&self) -> impl Iterator<Item = &Arc<BackendHandle>> {
        self.replicas.iter().map(|r| &r.handle)
    }

    /// See [`PoolConfig::silent_attempts`].
    pub fn silent_attempts(&self) -> u32 {
        self.config.silent_attempts
    }

    /// How many replicas the pool has.
    pub fn size(&self) -> usize {
        self.replicas.len()
    }

    /// Whether at least one replica is healthy.
    pub fn is_ready(&self) -> bool {
        self.replicas.iter().any(|r| r.handle.is_healthy())
    }

    /// The replicas to try for one request, best first; `key` is its conversation key.
    pub(crate) fn picker(&self, key: Option<u64>) -> Picker<'_> {
        Picker {
            pool: self,
            key,
            tried: vec![false; self.replicas.len()],
        }
    }

    /// The replica for conversation `key` among `set`, unless it is over the load bound.
    fn affine(&self, key: u64, set: &[usize]) -> usize {
        let Some(&best) = set
            .iter()
            .max_by_key(|&&i| affinity::weight(key, self.replicas[i].id))
        else {
            return self.two_choices(set);
        };
        let total: usize = set.iter().map(|&i| self.outstanding(i)).sum();
        let average = total as f64 / set.len() as f64;
        if self.outstanding(best) as f64 > (1.0 + self.config.load_factor) * average + 1.0 {
            return self.two_choices(set);
        }
        best
    }

    /// The less loaded of two distinct replicas of `set` drawn at random (`set` not empty).
    fn two_choices(&self, set: &[usize]) -> usize {
        if set.len() < 2 {
            return set.first().copied().unwrap_or(0);
        }
        let mut rng = rand::rng();
        let a = rng.random_range(0..set.len());
        let mut b = rng.random_range(0..set.len() - 1);
        if b >= a {
            b += 1;
        }
        let (a, b) = (set[a], set[b]);
        if self.outstanding(b) < self.outstanding(a) {
            b
        } else {
            a
        }
    }

    fn outstanding(&self, i: usize) -> usize {
        self.replicas[i].handle.outstanding()
    }
}

/// The replicas one request tries in turn, each at most once.
pub(crate) struct Picker<'a> {
    pool: &'a Pool,
    /// Used for the first choice only: a retry goes wherever the load is lowest.
    key: Option<u64>,
    tried: Vec<bool>,
}

impl<'a> Picker<'a> {
    /// The next replica to try, or `None` when every one was tried or is marked down. Among the
    /// replicas whose breaker lets a request through now (closed, or cooled down for its
    /// trial), healthy ones come first, then those that answered busy lately, then those whose
    /// last probe or request failed.
    pub(crate) fn next(&mut self, now: Instant) -> Option<Admitted<'a>> {
        let pool = self.pool;
        loop {
            let available: Vec<(usize, u8)> = (0..pool.replicas.len())
                .filter(|&i| !self.tried[i] && pool.replicas[i].handle.breaker.is_available(now))
                .map(|i| (i, rank(&pool.replicas[i].handle, now)))
                .collect();
            let best = available.iter().map(|&(_, rank)| rank).min()?;
            let set: Vec<usize> = available
                .iter()
                .filter(|&&(_, rank)| rank == best)
                .map(|&(i, _)| i)
                .collect();
            let i = match self.key.take() {
                Some(key) if set.len() > 1 => pool.affine(key, &set),
                _ => pool.two_choices(&set),
            };
            self.tried[i] = true;
            // Another request may have taken the trial since the look above.
            let handle = &pool.replicas[i].handle;
            if let Some(pass) = handle.breaker.allow(now) {
                return Some(Admitted {
                    handle,
                    trial: pass == Pass::Trial,
                });
            }
        }
    }
}

/// The order in which a picker offers a replica: lower first.
fn rank(handle: &BackendHandle, now: Instant) -> u8 {
    if !handle.is_healthy() {
        2
    } else if handle.breaker.is_busy(now) {
        1
    } else {
        0
    }
}

/// A replica a request may go to now. Its outcome is reported with [`Admitted::answered`],
/// [`Admitted::failed`] or [`Admitted::busy`]; one dropped without a report (the request was
/// dropped, cut by its deadline, or refused as the client's fault) that held its breaker's
/// trial gives the trial back, so that the breaker is never left waiting for a report that
/// will not come.
pub(crate) struct Admitted<'a> {
    pub(crate) handle: &'a Arc<BackendHandle>,
    trial: bool,
}

impl Admitted<'_> {
    /// The replica answered (its first event is in hand).
    pub(crate) fn answered(mut self) {
        self.trial = false;
        self.handle.record_request(true, Instant::now());
    }

    /// The replica failed through its own fault: refused, 5xx, no first token in time.
    pub(crate) fn failed(mut self, now: Instant) {
        self.trial = false;
        self.handle.record_request(false, now);
    }

    /// The replica answered busy. It is healthy and merely full, so a trial is not decided
    /// by it; a replica busy time after time is tried last for a while.
    pub(crate) fn busy(self, now: Instant) {
        self.handle.breaker.busy(now);
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if self.trial {
            self.handle.breaker.abandon_trial(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::Scripted;
    use crate::{BreakerConfig, InFlight};

    fn pool(n: usize) -> Arc<Pool> {
        pool_with(n, BreakerConfig::default())
    }

    fn pool_with(n: usize, breaker: BreakerConfig) -> Arc<Pool> {
        let replicas = (0..n)
            .map(|i| {
                let name = format!("r{i}");
                let h = BackendHandle::new(Arc::new(Scripted::ok(&name)), breaker);
                h.record_probe(true);
                (h, format!("http://10.0.0.{i}:11434"))
            })
            .collect();
        Pool::new("p", replicas, PoolConfig::default())
    }

    fn first(pool: &Pool, key: Option<u64>) -> usize {
        let h = pool.picker(key).next(Instant::now()).map(|a| a.handle);
        pool.replicas()
            .position(|r| h.is_some_and(|h| Arc::ptr_eq(h, r)))
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn two_choices_keeps_the_outstanding_counts_level() {
        let p = pool(3);
        let mut held: Vec<InFlight> = Vec::new();
        for _ in 0..300 {
            let h = p.picker(None).next(Instant::now());
            held.extend(h.map(|a| a.handle.start()));
        }
        let counts: Vec<usize> = p.replicas().map(|r| r.outstanding()).collect();
        // Two choices keeps the gap between the most and least loaded replica at a few
        // requests, where a random choice would drift by about the square root of 300.
        let (lo, hi) = (counts.iter().min(), counts.iter().max());
        assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 3), "{counts:?}");
        drop(held);
        assert!(p.replicas().all(|r| r.outstanding() == 0));
    }

    #[test]
    fn a_conversation_stays_on_its_replica_until_the_load_bound() {
        let p = pool(3);
        let key = 42;
        let home = first(&p, Some(key));
        for _ in 0..10 {
            assert_eq!(
                first(&p, Some(key)),
                home,
                "idle pool: always the same replica"
            );
        }
        // Held requests of the same conversation: it stays while the replica is within
        // (1 + 0.25) × the average + 1 outstanding.
        let mut held = Vec::new();
        let mut placed = Vec::new();
        for _ in 0..30 {
            let i = first(&p, Some(key));
            placed.push(i);
            held.push(p.replicas[i].handle.start());
        }
        assert_eq!(&placed[..2], &[home, home], "{placed:?}");
        let counts: Vec<usize> = p.replicas().map(|r| r.outstanding()).collect();
        let average = 10.0;
        assert!(
            counts[home] as f64 <= 1.25 * average + 2.0,
            "the hot conversation spilled over: {counts:?}"
        );
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    }

    #[test]
    fn affinity_skips_unhealthy_replicas_and_retries_try_each_once() {
        let p = pool(3);
        let key = 7;
        let home = first(&p, Some(key));
        p.replicas[home].handle.record_probe(false);
        let moved = first(&p, Some(key));
        assert_ne!(moved, home);
        assert_eq!(first(&p, Some(key)), moved, "the new home is stable too");
        let mut picker = p.picker(Some(key));
        let mut seen = Vec::new();
        while let Some(a) = picker.next(Instant::now()) {
            seen.push(a.handle.name().to_owned());
        }
        seen.sort();
        assert_eq!(
            seen,
            ["r0", "r1", "r2"],
            "the unhealthy one last, each once"
        );
        p.replicas[home].handle.record_probe(true);
        assert_eq!(first(&p, Some(key)), home, "back when it recovers");
    }

    #[test]
    fn a_cooled_down_replica_gets_its_trial_in_turn_and_a_dropped_trial_is_given_back() {
        let p = pool_with(
            3,
            BreakerConfig {
                failure_threshold: 1,
                cooldown: std::time::Duration::ZERO,
                ..BreakerConfig::default()
            },
        );
        let key = 7;
        let home = first(&p, Some(key));
        let handle = &p.replicas[home].handle;
        handle.record_request(false, Instant::now());
        handle.record_probe(true);
        assert!(handle.breaker.is_open(), "opened by a request");
        // Cooled down (at once here), the conversation's next request is the trial: it is not
        // kept for when every other replica has failed, or a replica that answers its probes
        // would never get one.
        let trial = p.picker(Some(key)).next(Instant::now());
        assert!(
            trial
                .as_ref()
                .is_some_and(|a| Arc::ptr_eq(a.handle, handle))
        );
        assert_ne!(first(&p, Some(key)), home, "one trial at a time");
        // The request went away before an answer: the trial is offered again.
        drop(trial);
        assert_eq!(first(&p, Some(key)), home);
        assert!(handle.breaker.is_open());
    }
}
