//! The model catalog: public names and aliases mapped to ordered chains of (pool of replicas,
//! upstream model), and the walk down a chain with fallback: within a link from replica to
//! replica, then to the next link. Models can be configured or discovered from a backend's own
//! model list; configured names win.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
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
}

impl Route {
    /// Whether at least one replica of one link is healthy.
    pub fn is_ready(&self) -> bool {
        self.chain.iter().any(|l| l.pool.is_ready())
    }

    pub async fn chat(
        &self,
        req: &ChatRequest,
        first_token: Duration,
    ) -> Result<(Served, EventStream), BackendError> {
        let key = self.key(|| affinity::chat_key(req));
        self.walk_stream(key, first_token, |backend, model| {
            let mut req = req.clone();
            req.model = model.to_owned();
            async move { backend.chat(&req).await }
        })
        .await
    }

    pub async fn complete(
        &self,
        req: &CompletionRequest,
        first_token: Duration,
    ) -> Result<(Served, EventStream), BackendError> {
        let key = self.key(|| affinity::completion_key(req));
        self.walk_stream(key, first_token, |backend, model| {
            let mut req = req.clone();
            req.model = model.to_owned();
            async move { backend.complete(&req).await }
        })
        .await
    }

    pub async fn embed(
        &self,
        req: &EmbedRequest,
        timeout: Duration,
    ) -> Result<(Served, EmbedResponse), BackendError> {
        // An embedding leaves nothing in a KV cache to come back to: no affinity.
        self.walk(None, timeout, |backend, model, in_flight| {
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
        key: Option<u64>,
        first_token: Duration,
        start: F,
    ) -> Result<(Served, EventStream), BackendError>
    where
        F: Fn(Arc<dyn Backend>, &str) -> Fut,
        Fut: Future<Output = Result<EventStream, BackendError>>,
    {
        self.walk(key, first_token, |backend, model, in_flight| {
            let started = start(backend, model);
            async move {
                let mut stream = started.await?;
                match stream.next().await {
                    Some(Ok(first)) => {
                        let rest = futures::stream::once(async move { Ok(first) }).chain(stream);
                        Ok(tracked(Box::pin(rest), in_flight))
                    }
                    Some(Err(e)) => Err(e),
                    None => Err(BackendError::Protocol("empty stream".into())),
                }
            }
        })
        .await
    }

    /// Tries the replicas of each link in turn until one succeeds within `limit`: within a
    /// link, the pool's choice first (the conversation's replica for `key`, else the less
    /// loaded of two), then its other replicas; replicas whose breaker is open are skipped.
    /// A failure that is the request's fault (4xx) is returned at once: the next backend would
    /// refuse it too. For streams, success means the first event is in hand; after that
    /// nothing is retried. Each attempt holds an [`InFlight`] guard for its replica.
    async fn walk<T, F, Fut>(
        &self,
        key: Option<u64>,
        limit: Duration,
        attempt: F,
    ) -> Result<(Served, T), BackendError>
    where
        F: Fn(Arc<dyn Backend>, &str, InFlight) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let mut last = BackendError::CircuitOpen;
        let mut attempts = 0;
        for link in &self.chain {
            let mut picker = link.pool.picker(key);
            while let Some(replica) = picker.next(Instant::now()) {
                attempts += 1;
                let result = tokio::time::timeout(
                    limit,
                    attempt(
                        replica.backend.clone(),
                        &link.upstream_model,
                        replica.start(),
                    ),
                )
                .await
                .unwrap_or(Err(BackendError::Timeout));
                match result {
                    Ok(value) => {
                        replica.record(true);
                        return Ok((served(link, replica, attempts), value));
                    }
                    Err(e) => {
                        if e.is_backend_fault() {
                            replica.record(false);
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
    use crate::BreakerConfig;
    use crate::tests_support::{Mode, Scripted};

    fn scripted(name: &str) -> (Arc<Scripted>, Arc<BackendHandle>) {
        let s = Arc::new(Scripted::ok(name));
        let h = BackendHandle::new(s.clone(), BreakerConfig::default());
        (s, h)
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
        let (s0, r0) = scripted("r0");
        let (s1, r1) = scripted("r1");
        let (_, fallback) = scripted("fallback");
        let pool = Pool::new(
            "p",
            vec![(r0.clone(), "a".into()), (r1.clone(), "b".into())],
            crate::pool::DEFAULT_LOAD_FACTOR,
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
        let limit = Duration::from_secs(5);
        // As the first probes leave them.
        r0.record(true);
        r1.record(true);

        for (mode, why) in [(Mode::Busy, "busy"), (Mode::Down, "refused")] {
            s0.set(mode);
            for i in 0..20 {
                let (served, mut stream) = route
                    .chat(&chat(&format!("conversation {i}")), limit)
                    .await
                    .unwrap_or_else(|e| panic!("{why}: {e}"));
                assert_eq!(served.backend, "r1", "{why}");
                assert_eq!(first_text(&mut stream).await, "r1");
            }
            assert!(s0.calls.load(Ordering::Relaxed) > 0, "{why}: r0 was tried");
            if mode == Mode::Busy {
                assert!(!r0.breaker.is_open(), "a busy replica is not a faulty one");
            }
            s0.set(Mode::Ok);
            r0.record(true);
        }

        // Every replica of the pool busy: then, and only then, the next link.
        s0.set(Mode::Busy);
        s1.set(Mode::Busy);
        let before = (
            s0.calls.load(Ordering::Relaxed),
            s1.calls.load(Ordering::Relaxed),
        );
        let (served, _) = route
            .chat(&chat("x"), limit)
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
}
