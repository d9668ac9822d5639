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
//! pool, again by two choices, before the chain's next link is tried.
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

use crate::BackendHandle;
use crate::affinity;

/// Default of a pool's `load_factor`: a conversation's replica may carry 25 % more outstanding
/// requests than the pool's average (plus one) before a turn goes elsewhere.
pub const DEFAULT_LOAD_FACTOR: f64 = 0.25;

/// Replicas of one model server, balanced as one link of a chain. A backend with one URL is a
/// pool of one.
#[derive(Debug)]
pub struct Pool {
    name: String,
    replicas: Vec<Replica>,
    load_factor: f64,
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
        load_factor: f64,
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
            load_factor,
        })
    }

    /// One backend as a pool of one, under the backend's name.
    pub fn single(handle: Arc<BackendHandle>) -> Arc<Pool> {
        let name = handle.name().to_owned();
        Pool::new(name.clone(), vec![(handle, name)], DEFAULT_LOAD_FACTOR)
    }

    /// The configured backend's name (chains name the pool, not its replicas).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The replicas in configured order.
    pub fn replicas(&self) -> impl Iterator<Item = &Arc<BackendHandle>> {
        self.replicas.iter().map(|r| &r.handle)
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
        if self.outstanding(best) as f64 > (1.0 + self.load_factor) * average + 1.0 {
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
    /// The next replica to try, or `None` when every one was tried or is marked down. Replicas
    /// whose breaker is closed come first, healthy ones before those whose last probe or
    /// request failed; then a replica whose breaker has cooled down gets its one trial.
    pub(crate) fn next(&mut self, now: Instant) -> Option<&'a Arc<BackendHandle>> {
        let pool = self.pool;
        loop {
            let closed: Vec<usize> = (0..pool.replicas.len())
                .filter(|&i| !self.tried[i] && !pool.replicas[i].handle.breaker.is_open())
                .collect();
            if closed.is_empty() {
                break;
            }
            let healthy: Vec<usize> = closed
                .iter()
                .copied()
                .filter(|&i| pool.replicas[i].handle.is_healthy())
                .collect();
            let set = if healthy.is_empty() { closed } else { healthy };
            let i = match self.key.take() {
                Some(key) if set.len() > 1 => pool.affine(key, &set),
                _ => pool.two_choices(&set),
            };
            self.tried[i] = true;
            // Closed breakers allow; this one may have opened since the look above.
            if pool.replicas[i].handle.breaker.allow(now) {
                return Some(&pool.replicas[i].handle);
            }
        }
        for (i, r) in pool.replicas.iter().enumerate() {
            if !self.tried[i] {
                self.tried[i] = true;
                if r.handle.breaker.allow(now) {
                    return Some(&r.handle);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::Scripted;
    use crate::{BreakerConfig, InFlight};

    fn pool(n: usize) -> Arc<Pool> {
        let replicas = (0..n)
            .map(|i| {
                let name = format!("r{i}");
                let h = BackendHandle::new(Arc::new(Scripted::ok(&name)), BreakerConfig::default());
                h.record(true);
                (h, format!("http://10.0.0.{i}:11434"))
            })
            .collect();
        Pool::new("p", replicas, DEFAULT_LOAD_FACTOR)
    }

    fn first(pool: &Pool, key: Option<u64>) -> usize {
        let h = pool.picker(key).next(Instant::now());
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
            held.extend(h.map(|h| h.start()));
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
        p.replicas[home].handle.record(false);
        let moved = first(&p, Some(key));
        assert_ne!(moved, home);
        assert_eq!(first(&p, Some(key)), moved, "the new home is stable too");
        let mut picker = p.picker(Some(key));
        let mut seen = Vec::new();
        while let Some(h) = picker.next(Instant::now()) {
            seen.push(h.name().to_owned());
        }
        seen.sort();
        assert_eq!(
            seen,
            ["r0", "r1", "r2"],
            "the unhealthy one last, each once"
        );
        p.replicas[home].handle.record(true);
        assert_eq!(first(&p, Some(key)), home, "back when it recovers");
    }
}
