//! The model catalog: public names and aliases mapped to ordered chains of (pool of replicas,
//! upstream model), and the walk down a chain with fallback: within a link from replica to
//! replica, then to the next link. Models can be configured or discovered from a backend's own
//! model list; configured names win.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tracing::Instrument as _;
use wardgate_api::canonical::{ChatRequest, CompletionRequest, EmbedRequest, EmbedResponse};

use crate::handle::{InFlight, tracked};
use crate::{Backend, BackendError, BackendHandle, EventStream, Pool, affinity};

/// One step of a chain: a pool of replicas (often of one) and the model's name there.
#[derive(Clone, Debug)]
pub struct Link {
    pub pool: Arc<Pool>,
    pub upstream_model: String,
}

/// A public model: its chain and bounds.
#[derive(Debug)]
pub struct Route {
    /// The public name (aliases resolve to the same route).
    pub name: String,
    pub chain: Vec<Link>,
    /// Tokens the model can take, prompt and answer together.
    pub context_window: u32,
    /// When the route was defined, as unix seconds (`created` in model lists).
    pub created: i64,
    /// Whether the route came from a backend's model list rather than the config.
    pub discovered: bool,
}

/// What a served request went to, for logs, audit and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The replica that answered (a pool's replicas are named `NAME#INDEX`).
    pub backend: String,
    pub upstream_model: String,
    /// How many replicas were sent the request, this one included.
    pub attempts: u32,
    /// The replica's kind (`ollama`, `openai`, `embedded`), for the metrics' provider label.
    pub kind: &'static str,
}

/// Counter of the requests that moved on to a later link of their chain (docs/METRICS.md).
pub const FALLBACKS: &str = "wardgate_backend_fallbacks_total";

/// What bounds one request's walk down a chain.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// How long one replica may take to yield its first event (`server.first_token_timeout`).
    pub first_token: Duration,
    /// When the request must have its first event, whatever is left of the chain.
    pub deadline: Instant,
}

impl Route {
    /// Whether at least one replica of one link is healthy.
    pub fn is_ready(&self) -> bool {
        self.chain.iter().any(|l| l.pool.is_ready())
    }

    /// The kind of the chain's first replica: the provider a request to this route is counted
    /// under until a replica answers (then that replica's kind, [`Served::kind`]).
    pub fn kind(&self) -> Option<&'static str> {
        self.chain
            .first()
            .and_then(|l| l.pool.replicas().next())
            .map(|r| r.backend.kind())
    }

    /// Starts a chat. `scope` says whose conversation it is (the gateway passes the tenant):
    /// the same conversation in two scopes is placed on replicas independently, so that one
    /// scope cannot aim requests at the replica that holds another's prefix in its cache.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        scope: &str,
        budget: Budget,
    ) -> Result<(Served, EventStream), BackendError> {
        let key = self.key(|| affinity::chat_key(scope, req));
        self.walk_stream("chat", key, budget, |backend, model| {
            let mut req = req.clone();
            req.model = model.to_owned();
            async move { backend.chat(&req).await }
        })
        .await
    }

    /// Starts a completion; `scope` as for [`Route::chat`].
    pub async fn complete(
        &self,
        req: &CompletionRequest,
        scope: &str,
        budget: Budget,
    ) -> Result<(Served, EventStream), BackendError> {
        let key = self.key(|| affinity::completion_key(scope, req));
        self.walk_stream("text_completion", key, budget, |backend, model| {
            let mut req = req.clone();
            req.model = model.to_owned();
            async move { backend.complete(&req).await }
        })
        .await
    }

    /// Embeds, each replica tried for what is left until `deadline`.
    pub async fn embed(
        &self,
        req: &EmbedRequest,
        deadline: Instant,
    ) -> Result<(Served, EmbedResponse), BackendError> {
        let budget = Budget {
            first_token: deadline.saturating_duration_since(Instant::now()),
            deadline,
        };
        // An embedding leaves nothing in a KV cache to come back to: no affinity.
        self.walk("embeddings", None, budget, |backend, model, in_flight| {
            let mut req = req.clone();
            req.model = model.to_owned();
            async move {
                let answer = backend.embed(&req).await;
                drop(in_flight);
                answer
            }
        })
        .await
    }

    /// The request's conversation key, computed only when a link has replicas to choose from.
    fn key(&self, compute: impl FnOnce() -> Option<u64>) -> Option<u64> {
        if self.chain.iter().any(|l| l.pool.size() > 1) {
            compute()
        } else {
            None
        }
    }

    /// Starts a generation on each replica in turn until one yields a first event; the
    /// stream it returns counts as outstanding on its replica until it ends or is dropped.
    async fn walk_stream<F, Fut>(
        &self,
        operation: &'static str,
        key: Option<u64>,
        budget: Budget,
        start: F,
    ) -> Result<(Served, EventStream), BackendError>
    where
        F: Fn(Arc<dyn Backend>, &str) -> Fut,
        Fut: Future<Output = Result<EventStream, BackendError>>,
    {
        self.walk(operation, key, budget, |backend, model, in_flight| {
            let started = start(backend, model);
            async move {
                let mut stream = started.await?;
                match stream.next().await {
                    Some(Ok(first)) => {
                        // The attempt's span lasts as long as its answer streams.
                        let span = tracing::Span::current();
                        let rest = futures::stream::once(async move { Ok(first) })
                            .chain(stream)
                            .map(move |event| {
                                // Entered at each event: the span ends at its last exit.
                                drop(span.enter());
                                event
                            });
                        Ok(tracked(Box::pin(rest), in_flight))
                    }
                    Some(Err(e)) => Err(e),
                    None => Err(BackendError::Protocol("empty stream".into())),
                }
            }
        })
        .await
    }

    /// Tries the replicas of each link in turn until one succeeds: within a link, the pool's
    /// choice first (the conversation's replica for `key`, else the less loaded of two), then
    /// its other replicas; replicas whose breaker is open are skipped. A failure that is the
    /// request's fault (4xx) is returned at once: the next backend would refuse it too. For
    /// streams, success means the first event is in hand; after that nothing is retried. Each
    /// attempt holds an [`InFlight`] guard for its replica.
    ///
    /// Each attempt has the first-token limit, cut to what is left before the deadline. A
    /// replica that stays silent through its limit is charged a failure (its breaker opens
    /// after the threshold, however its health probes fare) unless the deadline cut its limit
    /// short after an earlier attempt had spent the time; the first replica a request tries
    /// is always charged, since it had all the time the request had. After the pool's
    /// `silent_attempts` silent replicas the walk moves on to the next link.
    async fn walk<T, F, Fut>(
        &self,
        operation: &'static str,
        key: Option<u64>,
        budget: Budget,
        attempt: F,
    ) -> Result<(Served, T), BackendError>
    where
        F: Fn(Arc<dyn Backend>, &str, InFlight) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let mut last = BackendError::CircuitOpen;
        let mut attempts = 0;
        for (n, link) in self.chain.iter().enumerate() {
            if n > 0 {
                // The links before gave no answer: the request falls back. The label is the
                // configured model name, never a client's string.
                metrics::counter!(FALLBACKS, "model" => self.name.clone()).increment(1);
            }
            let later_links = n + 1 < self.chain.len();
            let mut silent = 0;
            let mut picker = link.pool.picker(key);
            while let Some(admitted) = picker.next(Instant::now()) {
                // Timed on tokio's clock, as the caller's bound on the walk is.
                let left = tokio::time::Instant::from_std(budget.deadline)
                    .saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return Err(BackendError::Timeout);
                }
                let limit = budget.first_token.min(left);
                let whole_limit = attempts == 0 || limit >= budget.first_token;
                attempts += 1;
                let replica = admitted.handle;
                // One span per attempt (a disabled one when tracing is off): the backend's
                // request is made inside it, and carries its `traceparent`.
                let span = crate::trace::attempt_span(
                    operation,
                    &link.upstream_model,
                    replica.name(),
                    replica.backend.kind(),
                    attempts,
                );
                let result = tokio::time::timeout(
                    limit,
                    attempt(
                        replica.backend.clone(),
                        &link.upstream_model,
                        replica.start(),
                    )
                    .instrument(span.clone()),
                )
                .await;
                match &result {
                    Ok(Ok(_)) => {}
                    Err(_elapsed) => crate::trace::attempt_failed(&span, "timeout"),
                    Ok(Err(e)) => crate::trace::attempt_failed(&span, e.error_type()),
                }
                drop(span);
                match result {
                    Ok(Ok(value)) => {
                        admitted.answered();
                        return Ok((served(link, replica, attempts), value));
                    }
                    Err(_elapsed) if !whole_limit => {
                        // The request's deadline, not the replica, ended the wait.
                        return Err(BackendError::Timeout);
                    }
                    Err(_elapsed) => {
                        admitted.failed(Instant::now());
                        last = BackendError::Timeout;
                        silent += 1;
                        if later_links && silent >= link.pool.silent_attempts() {
                            break;
                        }
                    }
                    Ok(Err(e)) => {
                        if e.is_backend_fault() {
                            admitted.failed(Instant::now());
                        } else if e.is_busy() {
                            admitted.busy(Instant::now());
                        }
                        if !e.is_retryable() {
                            return Err(e);
                        }
                        last = e;
                    }
                }
            }
        }
        Err(last)
    }
}

fn served(link: &Link, replica: &BackendHandle, attempts: u32) -> Served {
    Served {
        backend: replica.name().to_owned(),
        upstream_model: link.upstream_model.clone(),
        attempts,
        kind: replica.backend.kind(),
    }
}

/// A configured public model, before its links are bound to backend handles.
#[derive(Clone, Debug)]
pub struct ModelEntry {
    pub name: String,
    pub aliases: Vec<String>,
    /// (backend name, upstream model) in order of preference.
    pub chain: Vec<(String, String)>,
    pub context_window: u32,
}

/// All public models. Configured routes are fixed at start; discovered ones are replaced
/// wholesale per backend on each refresh.
#[derive(Debug)]
pub struct Catalog {
    pools: Vec<Arc<Pool>>,
    /// Every replica of every pool, each probed on its own.
    backends: Vec<Arc<BackendHandle>>,
    configured: HashMap<String, Arc<Route>>,
    /// Public names in listing order (configured names, then their aliases).
    configured_names: Vec<String>,
    /// Backend name → (model → route).
    discovered: RwLock<BTreeMap<String, BTreeMap<String, Arc<Route>>>>,
    default_context_window: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("model `{model}` names backend `{backend}`, which is not configured")]
    UnknownBackend { model: String, backend: String },
    #[error("model name `{0}` is defined twice")]
    Duplicate(String),
    #[error("model `{0}` has an empty chain")]
    EmptyChain(String),
}

impl Catalog {
    pub fn new(
        pools: Vec<Arc<Pool>>,
        models: &[ModelEntry],
        default_context_window: u32,
        now_unix: i64,
    ) -> Result<Catalog, CatalogError> {
        let mut configured = HashMap::new();
        let mut configured_names = Vec::new();
        for m in models {
            if m.chain.is_empty() {
                return Err(CatalogError::EmptyChain(m.name.clone()));
            }
            let mut chain = Vec::with_capacity(m.chain.len());
            for (b, upstream) in &m.chain {
                let pool = pools.iter().find(|p| p.name() == b).ok_or_else(|| {
                    CatalogError::UnknownBackend {
                        model: m.name.clone(),
                        backend: b.clone(),
                    }
                })?;
                chain.push(Link {
                    pool: pool.clone(),
                    upstream_model: upstream.clone(),
                });
            }
            let route = Arc::new(Route {
                name: m.name.clone(),
                chain,
                context_window: m.context_window,
                created: now_unix,
                discovered: false,
            });
            for name in std::iter::once(&m.name).chain(&m.aliases) {
                if configured.insert(name.clone(), route.clone()).is_some() {
                    return Err(CatalogError::Duplicate(name.clone()));
                }
                configured_names.push(name.clone());
            }
        }
        let backends = pools.iter().flat_map(|p| p.replicas().cloned()).collect();
        Ok(Catalog {
            pools,
            backends,
            configured,
            configured_names,
            discovered: RwLock::new(BTreeMap::new()),
            default_context_window,
        })
    }

    /// Every replica of every configured backend.
    pub fn backends(&self) -> &[Arc<BackendHandle>] {
        &self.backends
    }

    /// The configured backends, each a pool of its replicas, in configured order.
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    pub fn configured_routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.configured_names
            .iter()
            .filter_map(|n| self.configured.get(n))
            .filter(|r| !r.discovered)
    }

    /// Finds the route for a public name or alias.
    pub fn resolve(&self, name: &str) -> Option<Arc<Route>> {
        if let Some(r) = self.configured.get(name) {
            return Some(r.clone());
        }
        let discovered = self.discovered.read().unwrap_or_else(|e| e.into_inner());
        discovered.values().find_map(|m| m.get(name).cloned())
    }

    /// Every public name with its route, configured first, each name once.
    pub fn list(&self) -> Vec<(String, Arc<Route>)> {
        let mut out: Vec<(String, Arc<Route>)> = self
            .configured_names
            .iter()
            .filter_map(|n| self.configured.get(n).map(|r| (n.clone(), r.clone())))
            .collect();
        let discovered = self.discovered.read().unwrap_or_else(|e| e.into_inner());
        for models in discovered.values() {
            for (name, route) in models {
                if !out.iter().any(|(n, _)| n == name) {
                    out.push((name.clone(), route.clone()));
                }
            }
        }
        out
    }

    /// Whether `backend`'s model list has been read at least once.
    pub fn has_discovered(&self, backend: &str) -> bool {
        self.discovered
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(backend)
    }

    /// Replaces the models discovered on `backend` (a configured backend: a pool) with
    /// `names`, each served by that backend under its own name.
    pub fn set_discovered(&self, backend: &str, names: Vec<String>, now_unix: i64) {
        let Some(pool) = self.pools.iter().find(|p| p.name() == backend) else {
            return;
        };
        let mut map = BTreeMap::new();
        for name in names {
            if self.configured.contains_key(&name) {
                continue;
            }
            let route = Arc::new(Route {
                name: name.clone(),
                chain: vec![Link {
                    pool: pool.clone(),
                    upstream_model: name.clone(),
                }],
                context_window: self.default_context_window,
                created: now_unix,
                discovered: true,
            });
            map.insert(name, route);
        }
        let mut discovered = self.discovered.write().unwrap_or_else(|e| e.into_inner());
        // Keep the `created` time of models seen before, so listings stay stable.
        if let Some(old) = discovered.get(backend) {
            for (name, route) in map.iter_mut() {
                if let Some(prev) = old.get(name) {
                    *route = prev.clone();
                }
            }
        }
        discovered.insert(backend.to_owned(), map);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use wardgate_api::canonical::{Event, Role};

    use super::*;
    use crate::tests_support::{Mode, Scripted};
    use crate::{BreakerConfig, PoolConfig};

    fn scripted(name: &str) -> (Arc<Scripted>, Arc<BackendHandle>) {
        scripted_with(name, BreakerConfig::default())
    }

    fn scripted_with(name: &str, breaker: BreakerConfig) -> (Arc<Scripted>, Arc<BackendHandle>) {
        let s = Arc::new(Scripted::ok(name));
        let h = BackendHandle::new(s.clone(), breaker);
        (s, h)
    }

    /// A first-token limit of `first_token` within a request deadline of 30 s.
    fn budget(first_token: Duration) -> Budget {
        Budget {
            first_token,
            deadline: in_(Duration::from_secs(30)),
        }
    }

    /// `d` from now on tokio's clock, which paused tests move.
    fn in_(d: Duration) -> Instant {
        (tokio::time::Instant::now() + d).into_std()
    }

    /// Model `m` over `links`, each a pool of the given replicas with `config`.
    fn route(links: Vec<(Vec<Arc<BackendHandle>>, PoolConfig)>) -> Arc<Route> {
        let mut pools = Vec::new();
        let mut chain = Vec::new();
        for (n, (replicas, config)) in links.into_iter().enumerate() {
            let name = format!("p{n}");
            let replicas = replicas
                .into_iter()
                .map(|h| {
                    h.record_probe(true);
                    let id = h.name().to_owned();
                    (h, id)
                })
                .collect();
            pools.push(Pool::new(&name, replicas, config));
            chain.push((name, "up".to_owned()));
        }
        let model = ModelEntry {
            name: "m".into(),
            aliases: vec![],
            chain,
            context_window: 100,
        };
        let catalog = Catalog::new(pools, &[model], 100, 0).unwrap_or_else(|e| panic!("{e}"));
        catalog.resolve("m").unwrap_or_else(|| panic!("no route"))
    }

    /// Model `m` over one pool of three replicas `r0`, `r1`, `r2` with `breaker`.
    fn pool_of_three(
        breaker: BreakerConfig,
    ) -> ([Arc<Scripted>; 3], [Arc<BackendHandle>; 3], Arc<Route>) {
        let [(s0, r0), (s1, r1), (s2, r2)] =
            ["r0", "r1", "r2"].map(|name| scripted_with(name, breaker));
        let route = route(vec![(
            vec![r0.clone(), r1.clone(), r2.clone()],
            PoolConfig::default(),
        )]);
        ([s0, s1, s2], [r0, r1, r2], route)
    }

    /// What served a chat of `text` on `route`, which must answer.
    async fn answered(route: &Route, text: &str) -> Served {
        let (served, _) = route
            .chat(&chat(text), "t", budget(Duration::from_secs(5)))
            .await
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        served
    }

    /// `n` replicas `r0`, `r1`, ... that never send a first event.
    fn silent_replicas(n: usize) -> Vec<(Arc<Scripted>, Arc<BackendHandle>)> {
        let replicas: Vec<_> = (0..n).map(|i| scripted(&format!("r{i}"))).collect();
        for (s, _) in &replicas {
            s.set(Mode::Silent);
        }
        replicas
    }

    fn calls(s: &Scripted) -> usize {
        s.calls.load(Ordering::Relaxed)
    }

    fn chat(text: &str) -> ChatRequest {
        crate::tests_support::chat(&[(Role::User, text)])
    }

    /// The name of the replica that wrote the first event.
    async fn first_text(stream: &mut EventStream) -> String {
        match stream.next().await {
            Some(Ok(Event::Delta { content, .. })) => content,
            other => format!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_busy_or_dead_replica_hands_the_request_to_another_before_the_next_link() {
        // Neither the breaker nor the busy mark takes r0 out here: each request meets it.
        let lenient = BreakerConfig {
            failure_threshold: 1000,
            busy_threshold: 1000,
            ..BreakerConfig::default()
        };
        let (s0, r0) = scripted_with("r0", lenient);
        let (s1, r1) = scripted_with("r1", lenient);
        let (_, fallback) = scripted("fallback");
        let pool = Pool::new(
            "p",
            vec![(r0.clone(), "a".into()), (r1.clone(), "b".into())],
            PoolConfig::default(),
        );
        let catalog = Catalog::new(
            vec![pool, Pool::single(fallback)],
            &[ModelEntry {
                name: "m".into(),
                aliases: vec![],
                chain: vec![("p".into(), "up".into()), ("fallback".into(), "up".into())],
                context_window: 100,
            }],
            100,
            0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let route = catalog.resolve("m").unwrap_or_else(|| panic!("no route"));
        let limit = budget(Duration::from_secs(5));
        // As the first probes leave them.
        r0.record_probe(true);
        r1.record_probe(true);

        for (mode, why) in [(Mode::Busy, "busy"), (Mode::Down, "refused")] {
            s0.set(mode);
            let before = calls(&s0);
            for i in 0..20 {
                let (served, mut stream) = route
                    .chat(&chat(&format!("conversation {i}")), "t", limit)
                    .await
                    .unwrap_or_else(|e| panic!("{why}: {e}"));
                assert_eq!(served.backend, "r1", "{why}");
                assert_eq!(first_text(&mut stream).await, "r1");
            }
            assert!(calls(&s0) > before, "{why}: r0 was tried");
            if mode == Mode::Busy {
                assert!(!r0.breaker.is_open(), "a busy replica is not a faulty one");
            }
            s0.set(Mode::Ok);
            r0.record_probe(true);
        }

        // Every replica of the pool busy: then, and only then, the next link.
        s0.set(Mode::Busy);
        s1.set(Mode::Busy);
        let before = (
            s0.calls.load(Ordering::Relaxed),
            s1.calls.load(Ordering::Relaxed),
        );
        let (served, _) = route
            .chat(&chat("x"), "t", limit)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((served.backend.as_str(), served.attempts), ("fallback", 3));
        assert_eq!(
            (
                s0.calls.load(Ordering::Relaxed),
                s1.calls.load(Ordering::Relaxed)
            ),
            (before.0 + 1, before.1 + 1),
            "each replica once"
        );
        assert!(
            !r0.breaker.is_open() && !r1.breaker.is_open(),
            "busy is not a fault"
        );
        assert!(catalog.backends().iter().all(|h| h.outstanding() == 0));
    }

    /// A replica that passes its health checks and never sends a first token: each request
    /// that meets it loses one first-token limit, until the threshold of them opens its
    /// breaker; probes that pass in between neither reset the count nor close the breaker.
    #[tokio::test(start_paused = true)]
    async fn a_silent_replica_is_taken_out_after_the_threshold_and_probes_do_not_bring_it_back() {
        let (scripts, replicas, route) = pool_of_three(BreakerConfig {
            failure_threshold: 3,
            cooldown: Duration::from_secs(3600),
            ..BreakerConfig::default()
        });
        let (silent, r0) = (&scripts[0], &replicas[0]);
        silent.set(Mode::Silent);
        let first_token = Duration::from_secs(1);
        for i in 0..60 {
            let t = tokio::time::Instant::now();
            let (served, mut stream) = route
                .chat(
                    &chat(&format!("conversation {i}")),
                    "t",
                    budget(first_token),
                )
                .await
                .unwrap_or_else(|e| panic!("conversation {i}: {e}"));
            assert_ne!(served.backend, "r0");
            assert_eq!(first_text(&mut stream).await, served.backend);
            assert!(
                t.elapsed() <= first_token + Duration::from_millis(10),
                "conversation {i}: at most one first-token limit lost, took {:?}",
                t.elapsed()
            );
            // The probe runs between every two requests and passes.
            r0.probe(Duration::from_secs(1))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(calls(silent), 3, "the threshold, then no more");
        assert!(r0.breaker.is_open());
        assert!(r0.is_healthy(), "it passes its probes all along");
    }

    /// Replicas that stay silent cost a request at most `silent_attempts` first-token limits
    /// in one pool before the next link answers; on the last link the rest of the pool is
    /// still tried, within the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_request_waits_on_at_most_silent_attempts_replicas_of_a_pool() {
        let first_token = Duration::from_secs(1);
        for silent_attempts in [1, 2] {
            let replicas = silent_replicas(3);
            let (_, fallback) = scripted("fallback");
            let config = PoolConfig {
                silent_attempts,
                ..PoolConfig::default()
            };
            let route = route(vec![
                (replicas.iter().map(|(_, h)| h.clone()).collect(), config),
                (vec![fallback], PoolConfig::default()),
            ]);
            let t = tokio::time::Instant::now();
            let (served, _) = route
                .chat(&chat("x"), "t", budget(first_token))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                (served.backend.as_str(), served.attempts),
                ("fallback", silent_attempts + 1)
            );
            let lost = first_token * silent_attempts;
            assert!(
                t.elapsed() >= lost && t.elapsed() <= lost + Duration::from_millis(10),
                "silent_attempts {silent_attempts}: took {:?}",
                t.elapsed()
            );
            let tried: usize = replicas.iter().map(|(s, _)| calls(s)).sum();
            assert_eq!(tried, silent_attempts as usize);
        }

        // The last link: every replica is tried, each for what is left of the deadline; the
        // first is charged, the one the deadline cut short is not.
        let replicas = silent_replicas(3);
        let route = route(vec![(
            replicas.iter().map(|(_, h)| h.clone()).collect(),
            PoolConfig::default(),
        )]);
        let t = tokio::time::Instant::now();
        let deadline = in_(Duration::from_millis(1500));
        let result = route
            .chat(
                &chat("x"),
                "t",
                Budget {
                    first_token,
                    deadline,
                },
            )
            .await;
        assert!(
            matches!(result, Err(BackendError::Timeout)),
            "{:?}",
            result.as_ref().err()
        );
        let tried: Vec<usize> = replicas.iter().map(|(s, _)| calls(s)).collect();
        assert_eq!(tried.iter().sum::<usize>(), 2, "{tried:?}");
        let charged = replicas.iter().filter(|(_, h)| !h.is_healthy()).count();
        assert_eq!(charged, 1, "only the replica that had the whole limit");
        assert!(
            t.elapsed() >= Duration::from_millis(1500)
                && t.elapsed() <= Duration::from_millis(1510),
            "ends at the deadline: {:?}",
            t.elapsed()
        );
    }

    /// A replica that is always full: after `busy_threshold` busy answers its conversations
    /// go to their next replica for the cool-down, instead of each paying a round trip.
    #[tokio::test]
    async fn a_replica_that_keeps_answering_busy_is_tried_last_for_the_cool_down() {
        let (scripts, replicas, route) = pool_of_three(BreakerConfig {
            busy_threshold: 2,
            busy_cooldown: Duration::from_secs(3600),
            ..BreakerConfig::default()
        });
        let [full, s1, s2] = &scripts;
        let r0 = &replicas[0];
        full.set(Mode::Busy);
        let mut homes = Vec::new();
        for i in 0..60 {
            let refused = calls(full);
            let served = answered(&route, &format!("conversation {i}")).await;
            assert_ne!(served.backend, "r0");
            // A refused request's retry goes by load; the others went by affinity.
            if calls(full) == refused {
                homes.push((i, served.backend));
            }
        }
        assert_eq!(calls(full), 2, "two busy answers, then it is passed over");
        assert!(!r0.breaker.is_open(), "busy is not a fault");
        // The conversations stay where they went, those r0 would hold included.
        for (i, home) in &homes {
            let served = answered(&route, &format!("conversation {i}")).await;
            assert_eq!(&served.backend, home, "conversation {i}");
        }
        // It is tried last, not never: with the others full it gets the request, and an
        // answer clears its mark.
        full.set(Mode::Ok);
        s1.set(Mode::Busy);
        s2.set(Mode::Busy);
        let served = answered(&route, "lone").await;
        assert_eq!((served.backend.as_str(), served.attempts), ("r0", 3));
        assert!(!r0.breaker.is_busy(Instant::now()));
    }
}
