//! The public HTTP service of wardgate: configuration, the request path (router, middleware,
//! handlers), and the background work that keeps the model catalog current.

pub mod audit;
pub mod config;
pub mod error;
pub mod guards;
pub mod handlers;
pub mod identity;
pub mod llm;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod pipeline;
pub mod redact_log;
pub mod router;
pub mod serve;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use wardgate_api::signing::SigningKey;
use wardgate_backends::{
    Backend, BackendHandle, BreakerConfig, Catalog, EmbeddedBackend, HttpBackend,
    HttpBackendConfig, ModelEntry,
};
use wardgate_engine::{Engine, EngineConfig};
use wardgate_store::{Health, KeyStore, TenantStore};

pub use config::{Config, ConfigError};
pub use router::router;
pub use state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("backend `{name}`: {reason}")]
    Backend { name: String, reason: String },
    #[error("models: {0}")]
    Catalog(#[from] wardgate_backends::catalog::CatalogError),
    #[error("storage: {0}")]
    Store(#[from] wardgate_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] serve::tls::TlsError),
}

/// The in-process engine for the config's embedded backend, if it has one.
pub fn build_engine(config: &Config) -> Result<Option<Arc<Engine>>, StartError> {
    if !config
        .backends
        .iter()
        .any(|b| b.kind == config::BackendType::Embedded)
    {
        return Ok(None);
    }
    let e = &config.engine;
    let mut ec = EngineConfig::new(&e.models_dir);
    if let Some(t) = e.threads {
        ec.threads = t as i32;
    }
    ec.slots = e.slots;
    ec.slot_ctx = e.slot_ctx;
    ec.batch = e.batch;
    ec.queue = e.queue;
    if let Some(m) = e.memory_budget {
        ec.memory_budget = m;
    }
    ec.keep_alive = e.keep_alive;
    ec.max_keep_alive = e.max_keep_alive;
    ec.max_tokens = config.limits.max_output_tokens;
    ec.schema = e.schema;
    Engine::new(ec)
        .map(|e| Some(Arc::new(e)))
        .map_err(|e| StartError::Backend {
            name: "embedded".into(),
            reason: e.to_string(),
        })
}

/// Builds the backends and the catalog from config.
pub fn build_catalog(config: &Config, engine: Option<&Arc<Engine>>) -> Result<Catalog, StartError> {
    let breaker = BreakerConfig {
        failure_threshold: config.breaker_threshold,
        cooldown: config.breaker_cooldown,
    };
    let mut handles = Vec::with_capacity(config.backends.len());
    for b in &config.backends {
        let kind = match b.kind {
            config::BackendType::Embedded => {
                let engine = engine.ok_or_else(|| StartError::Backend {
                    name: b.name.clone(),
                    reason: "no engine was built for the embedded backend".into(),
                })?;
                let backend = EmbeddedBackend::new(&b.name, engine.clone());
                handles.push(BackendHandle::new(
                    Arc::new(backend) as Arc<dyn Backend>,
                    breaker,
                ));
                continue;
            }
            config::BackendType::Http(kind) => kind,
        };
        let mut hc = HttpBackendConfig::new(&b.name, kind, &b.url);
        if let Some(var) = &b.secret_env {
            let value = std::env::var(var).map_err(|_| StartError::Backend {
                name: b.name.clone(),
                reason: format!("secret_env names `{var}`, which is not set"),
            })?;
            let keys = SigningKey::parse_list(&value).map_err(|e| StartError::Backend {
                name: b.name.clone(),
                reason: format!("`{var}`: {e}"),
            })?;
            hc.signer = keys.into_iter().next();
        }
        hc.connect_timeout = b.connect_timeout;
        if let Some(ca) = &b.ca_file {
            hc.ca_pem = Some(std::fs::read(ca).map_err(|e| StartError::Backend {
                name: b.name.clone(),
                reason: format!("ca_file {}: {e}", ca.display()),
            })?);
        }
        if let Some(var) = &b.api_key_env {
            let key = std::env::var(var).map_err(|_| StartError::Backend {
                name: b.name.clone(),
                reason: format!("api_key_env names `{var}`, which is not set"),
            })?;
            hc.api_key = Some(key);
        }
        let backend = HttpBackend::new(hc).map_err(|e| StartError::Backend {
            name: b.name.clone(),
            reason: e.to_string(),
        })?;
        handles.push(BackendHandle::new(
            Arc::new(backend) as Arc<dyn Backend>,
            breaker,
        ));
    }
    let models: Vec<ModelEntry> = config
        .models
        .iter()
        .map(|m| ModelEntry {
            name: m.name.clone(),
            aliases: m.aliases.clone(),
            chain: m.chain.clone(),
            context_window: m.context_window,
        })
        .collect();
    Ok(Catalog::new(
        handles,
        &models,
        config.limits.default_context_window,
        handlers::unix_now(),
    )?)
}

/// Assembles the shared state from its parts.
pub fn build_state<S>(
    config: Config,
    catalog: Catalog,
    engine: Option<Arc<Engine>>,
    store: Arc<S>,
) -> AppState
where
    S: KeyStore + TenantStore + Health,
{
    // The Redis limiter needs a connection: `wardgate serve` sets it after `connect_limiter`.
    let limiter: Option<Arc<dyn guards::ratelimit::RateLimiter>> =
        (config.limiter_backend == config::LimiterBackend::Memory).then(|| {
            Arc::new(guards::ratelimit::InProcessLimiter::new())
                as Arc<dyn guards::ratelimit::RateLimiter>
        });
    let key_cache = (!config.key_cache_ttl.is_zero()).then(|| {
        Arc::new(identity::key_cache::KeyCache::new(
            config.key_cache_ttl,
            100_000,
        ))
    });
    // With nothing to preload the service is ready as soon as its backends are.
    let nothing_to_preload = engine.is_none() || config.engine.preload.is_empty();
    let config_phi = config.phi.clone();
    let lockout = Arc::new(identity::lockout::Lockout::new(config.lockout));
    let refusals = Arc::new(guards::audit_fold::AuditFolds::new(
        config.limits.refusal_audit_window,
    ));
    AppState {
        config: Arc::new(config),
        catalog: Arc::new(catalog),
        keys: store.clone(),
        tenants: store.clone(),
        store_health: store,
        limiter,
        key_cache,
        jwt: None,
        lockout,
        refusals,
        engine,
        preloaded: Arc::new(std::sync::atomic::AtomicBool::new(nothing_to_preload)),
        phi: Arc::new(guards::phi_guard::PhiGuard::new(config_phi)),
        audit: None,
    }
}

/// The configured rate limiter; for Redis, connected and checked now, so a wrong URL stops
/// the start instead of refusing every request later.
pub async fn connect_limiter(
    config: &Config,
) -> Result<Arc<dyn guards::ratelimit::RateLimiter>, redis::RedisError> {
    Ok(match &config.limiter_backend {
        config::LimiterBackend::Memory => Arc::new(guards::ratelimit::InProcessLimiter::new()),
        config::LimiterBackend::Redis { url, namespace } => {
            Arc::new(guards::ratelimit::RedisLimiter::connect(url, namespace).await?)
        }
    })
}

/// Probes every backend once and refreshes discovered models; logs, clearly, each backend
/// that does not answer. Returns how many answered.
pub async fn refresh_backends(state: &AppState) -> usize {
    let mut answered = 0;
    let probes = state.catalog.backends().iter().map(|h| {
        let timeout = state.config.health_timeout;
        async move { (h.clone(), h.probe(timeout).await) }
    });
    for (handle, probe) in futures::future::join_all(probes).await {
        let url = state
            .config
            .backends
            .iter()
            .find(|b| b.name == handle.name())
            .map(|b| b.url.as_str())
            .unwrap_or_default();
        if let Err(e) = probe {
            let why = match &e {
                wardgate_backends::BackendError::Status {
                    kind: wardgate_backends::UpstreamKind::Auth,
                    ..
                } => "the backend refused the gateway's credentials: check its secret \
                      (secret_env / WARDGATE_BACKEND_SECRET) or API key"
                    .to_owned(),
                other => other.to_string(),
            };
            tracing::warn!(
                backend = handle.name(),
                url,
                reason = %why,
                "backend is not usable; its models fail with 503 until it is"
            );
            continue;
        }
        answered += 1;
        discover(state, &handle).await;
    }
    answered
}

async fn discover(state: &AppState, handle: &BackendHandle) {
    let Some(b) = state
        .config
        .backends
        .iter()
        .find(|b| b.name == handle.name())
    else {
        return;
    };
    if !b.discover {
        return;
    }
    match tokio::time::timeout(state.config.health_timeout, handle.backend.list_models()).await {
        Ok(Ok(names)) => {
            let names: Vec<String> = names
                .into_iter()
                .filter(|n| config::valid_model_name(n))
                .collect();
            tracing::debug!(
                backend = handle.name(),
                models = names.len(),
                "models discovered"
            );
            state
                .catalog
                .set_discovered(handle.name(), names, handlers::unix_now());
        }
        Ok(Err(e)) => tracing::warn!(backend = handle.name(), error = %e, "model discovery failed"),
        Err(_) => tracing::warn!(backend = handle.name(), "model discovery timed out"),
    }
}

/// Loads the configured preload models, then marks the state preloaded (`/ready` waits for
/// it). A model that fails to load is logged and leaves the service not ready.
pub async fn preload(state: &AppState) -> bool {
    let mut ok = true;
    if let Some(engine) = &state.engine {
        for name in &state.config.engine.preload {
            let started = std::time::Instant::now();
            match engine.load(name, wardgate_engine::KeepAlive::Forever).await {
                Ok(_) => tracing::info!(
                    model = %name,
                    load_ms = started.elapsed().as_millis() as u64,
                    "model preloaded"
                ),
                Err(e) => {
                    ok = false;
                    tracing::error!(model = %name, error = %e, "preload failed");
                }
            }
        }
    }
    state
        .preloaded
        .store(ok, std::sync::atomic::Ordering::Relaxed);
    ok
}

/// Background work: health probes (which also close a recovered backend's breaker) and model
/// discovery, each on its own interval.
pub fn spawn_background(state: AppState) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let s = state.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(s.config.health_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let probes = s
                .catalog
                .backends()
                .iter()
                .map(|h| h.probe(s.config.health_timeout));
            futures::future::join_all(probes).await;
        }
    }));
    if let Some(engine) = state.engine.clone() {
        // Idle models past their keep-alive are unloaded, as Ollama does.
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                engine.evict_expired();
            }
        }));
    }
    for b in state.config.backends.iter().filter(|b| b.discover) {
        let s = state.clone();
        let name = b.name.clone();
        let every = b.discover_interval;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Some(h) = s.catalog.backends().iter().find(|h| h.name() == name) {
                    discover(&s, h).await;
                }
            }
        }));
    }
    tasks
}

/// Serves the public gateway until `shutdown` resolves, then stops accepting and drains
/// in-flight requests for at most `shutdown_grace`.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let app = router(state.clone());
    serve_router(state, app, listener, shutdown).await
}

/// Serves a router (the gateway's or `wardgate llm`'s) with the background tasks and the
/// bounded drain, over TLS when the config has it.
pub async fn serve_router(
    state: AppState,
    app: axum::Router,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    serve_live(
        state,
        serve::server::LiveRouter::new(app),
        listener,
        shutdown,
    )
    .await
}

/// Serves whichever router `app` holds (a configuration reload swaps it), with the
/// background tasks and the bounded drain, over TLS when the config has it.
pub async fn serve_live(
    state: AppState,
    app: serve::server::LiveRouter,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let grace = state.config.shutdown_grace;
    let tls = state
        .config
        .tls
        .as_ref()
        .map(serve::tls::Tls::load)
        .transpose()?;
    let limits = state.config.server.clone();
    let lockout = state.lockout.clone();
    let refusals = state.refusals.clone();
    let audit = state.audit.clone();
    let mut tasks = spawn_background(state);
    if let Some(t) = &tls {
        tasks.push(t.spawn_reload());
    }
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
    };
    // Returns once every connection has ended: drained within `grace`, or closed at it (their
    // requests' terminal audit events queued before the caller stops the audit writer).
    serve::server::run(listener, app, limits, tls, shutdown, grace).await;
    for t in tasks {
        t.abort();
    }
    // Refusals folded in windows that have not ended yet (failed authentications, 429s) are
    // written now, so a stop loses none of the evidence (the caller then closes the log).
    if let Some(audit) = &audit {
        lockout.flush_folded(audit).await;
        refusals.flush(audit).await;
    }
    Ok(())
}
