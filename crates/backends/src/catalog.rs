//! The model catalog: public names and aliases mapped to ordered chains of (backend, upstream
//! model), and the walk down a chain with fallback. Models can be configured or discovered
//! from a backend's own model list; configured names win.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use wardgate_api::canonical::{ChatRequest, CompletionRequest, EmbedRequest, EmbedResponse};

use crate::{Backend, BackendError, Breaker, BreakerConfig, EventStream};

/// A backend with its health and its circuit breaker.
pub struct BackendHandle {
    pub backend: Arc<dyn Backend>,
    pub breaker: Breaker,
    healthy: AtomicBool,
}

impl std::fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendHandle")
            .field("name", &self.backend.name())
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

impl BackendHandle {
    pub fn new(backend: Arc<dyn Backend>, breaker: BreakerConfig) -> Arc<Self> {
        Arc::new(BackendHandle {
            backend,
            breaker: Breaker::new(breaker),
            healthy: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        self.backend.name()
    }

    /// Healthy as of the last probe or request.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Runs the health probe and feeds the result to the breaker: a backend that answers again
    /// is taken back into service without waiting for a client request to risk it.
    pub async fn probe(&self, timeout: Duration) -> Result<(), BackendError> {
        let result = tokio::time::timeout(timeout, self.backend.health())
            .await
            .unwrap_or(Err(BackendError::Timeout));
        self.record(result.is_ok());
        result
    }

    fn record(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Relaxed);
        if ok {
            self.breaker.success();
        } else {
            self.breaker.failure(Instant::now());
        }
    }
}

/// One step of a chain.
#[derive(Clone, Debug)]
pub struct Link {
    pub backend: Arc<BackendHandle>,
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
    pub backend: String,
    pub upstream_model: String,
    /// How many links were tried, this one included.
    pub attempts: u32,
}

impl Route {
    /// Whether at least one link's backend is healthy.
    pub fn is_ready(&self) -> bool {
        self.chain.iter().any(|l| l.backend.is_healthy())
    }

    pub async fn chat(
        &self,
        req: &ChatRequest,
        first_token: Duration,
    ) -> Result<(Served, EventStream), BackendError> {
        self.walk_stream(first_token, |backend, model| {
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
        self.walk_stream(first_token, |backend, model| {
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
        self.walk(timeout, |backend, model| {
            let mut req = req.clone();
            req.model = model.to_owned();
            async move { backend.embed(&req).await }
        })
        .await
    }

    /// Starts a generation on each link in turn until one yields a first event.
    async fn walk_stream<F, Fut>(
        &self,
        first_token: Duration,
        start: F,
    ) -> Result<(Served, EventStream), BackendError>
    where
        F: Fn(Arc<dyn Backend>, &str) -> Fut,
        Fut: Future<Output = Result<EventStream, BackendError>>,
    {
        self.walk(first_token, |backend, model| {
            let started = start(backend, model);
            async move {
                let mut stream = started.await?;
                match stream.next().await {
                    Some(Ok(first)) => {
                        let rest = futures::stream::once(async move { Ok(first) }).chain(stream);
                        Ok(Box::pin(rest) as EventStream)
                    }
                    Some(Err(e)) => Err(e),
                    None => Err(BackendError::Protocol("empty stream".into())),
                }
            }
        })
        .await
    }

    /// Tries each link in order until one succeeds within `limit`. Links whose breaker is open
    /// are skipped. A failure that is the request's fault (4xx) is returned at once: the next
    /// backend would refuse it too. For streams, success means the first event is in hand;
    /// after that nothing is retried.
    async fn walk<T, F, Fut>(
        &self,
        limit: Duration,
        attempt: F,
    ) -> Result<(Served, T), BackendError>
    where
        F: Fn(Arc<dyn Backend>, &str) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let mut last = BackendError::CircuitOpen;
        for (i, link) in self.chain.iter().enumerate() {
            if !link.backend.breaker.allow(Instant::now()) {
                continue;
            }
            let result = tokio::time::timeout(
                limit,
                attempt(link.backend.backend.clone(), &link.upstream_model),
            )
            .await
            .unwrap_or(Err(BackendError::Timeout));
            match result {
                Ok(value) => {
                    link.backend.record(true);
                    return Ok((served(link, i), value));
                }
                Err(e) => {
                    if e.is_backend_fault() {
                        link.backend.record(false);
                    }
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }
}

fn served(link: &Link, i: usize) -> Served {
    Served {
        backend: link.backend.name().to_owned(),
        upstream_model: link.upstream_model.clone(),
        attempts: i as u32 + 1,
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
        backends: Vec<Arc<BackendHandle>>,
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
                let handle = backends.iter().find(|h| h.name() == b).ok_or_else(|| {
                    CatalogError::UnknownBackend {
                        model: m.name.clone(),
                        backend: b.clone(),
                    }
                })?;
                chain.push(Link {
                    backend: handle.clone(),
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
        Ok(Catalog {
            backends,
            configured,
            configured_names,
            discovered: RwLock::new(BTreeMap::new()),
            default_context_window,
        })
    }

    pub fn backends(&self) -> &[Arc<BackendHandle>] {
        &self.backends
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

    /// Replaces the models discovered on `backend` with `names`, each served by that backend
    /// under its own name.
    pub fn set_discovered(&self, backend: &str, names: Vec<String>, now_unix: i64) {
        let Some(handle) = self.backends.iter().find(|h| h.name() == backend) else {
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
                    backend: handle.clone(),
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
