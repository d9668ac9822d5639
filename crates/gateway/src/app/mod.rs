//! The composition root: the one place that builds and runs each role of the binary.
//!
//! - [`Gateway`]: the public service (`wardgate serve`).
//! - [`LlmService`]: the private model service (`wardgate llm`).
//!
//! `wardgate`'s commands, the benchmarks and every router test build through here, so the
//! path a test runs is the path production runs: the same stores (in memory for tests, see
//! [`Stores::in_memory`]), the same audit log writer, the same limiter and the same
//! JWT verifier, wired the same way. Nothing else in the crate depends on this module.

mod background;
mod parts;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use wardgate_api::signing::{SigningKey, Verifier};
use wardgate_audit::{
    AuditStore, Auditor, AuditorConfig, MemoryAuditStore, SequencerConfig, SignerKey,
};

pub use crate::audit::AuditLog;
use wardgate_store::{Database, PgStore, SqliteStore};

pub use background::{preload, refresh_backends};

/// Reads now what a start of `config` would read besides the stores (backend secrets and CA
/// files, the TLS pair, JWT key files) and says what is wrong, without starting anything.
pub async fn check(config: &Config) -> Result<(), StartError> {
    parts::check(config).await
}

use crate::config::Config;
use crate::config::storage::PostgresSettings;
use crate::serve::reload::Reloader;
use crate::serve::server::LiveRouter;
use crate::state::AppState;

/// Why a role could not start; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("backend `{name}`: {reason}")]
    Backend { name: String, reason: String },
    #[error("models: {0}")]
    Catalog(#[from] wardgate_backends::catalog::CatalogError),
    #[error("cannot open the database {path}: {source}")]
    Store {
        path: String,
        source: wardgate_store::StoreError,
    },
    #[error("the audit log is required and could not start: {0}")]
    Audit(#[from] crate::audit::StartError),
    #[error("the audit log did not take the start-up event: {0}")]
    AuditStartEvent(wardgate_audit::AuditError),
    /// Names the Redis as `host:port`, never its URL (which may hold a password).
    #[error("cannot connect to Redis (rate_limit.redis_url): {0}")]
    Redis(crate::shared::RedisFailure),
    #[error(transparent)]
    Jwt(#[from] crate::identity::jwt::JwtStartError),
    #[error("cannot read the config file {path} again for its digest: {source}")]
    ConfigFile {
        path: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] crate::serve::tls::TlsError),
    #[error("{0}")]
    DefaultModel(String),
    #[error(
        "cannot listen for metrics on {addr} (metrics.listen): {source}; choose another \
         address, or `off` for no metrics listener"
    )]
    MetricsListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The origin (log name) of an in-memory audit log.
pub const IN_MEMORY_ORIGIN: &str = "wardgate-test/audit";

/// Where a role's state lives: the key and tenant store, and the audit log with its signing
/// key.
pub struct Stores {
    /// Keys and tenants (and the storage health probe): the SQLite file or PostgreSQL.
    pub db: Arc<dyn Database>,
    /// The audit log's entries and checkpoints: this process's own (SQLite, memory), or shared
    /// by every instance (PostgreSQL).
    pub audit: AuditLog,
    /// How checkpoints are signed and witnessed.
    pub signer: Signer,
}

/// The checkpoint signer of a role's audit log.
pub enum Signer {
    /// The configured key file (created when missing) and witness file (`[audit]`).
    Configured,
    /// A given key and no witness file: tests and benchmarks.
    Key(Box<SignerKey>),
}

impl Stores {
    /// The configured database: PostgreSQL when `storage.url` names it (its schema must be
    /// exactly this build's: `wardgate migrate` applies it, a start never does), else the
    /// SQLite file (`storage.sqlite_path`, migrated on open), holding the audit log too.
    pub async fn open(config: &Config) -> Result<Stores, StartError> {
        if let Some(pg) = &config.postgres {
            let db = open_postgres(pg, config.audit.durability).await?;
            db.check_schema()
                .await
                .map_err(|source| StartError::Store {
                    path: db.shown().to_owned(),
                    source,
                })?;
            let db = Arc::new(db);
            return Ok(Stores {
                audit: AuditLog::Shared(db.clone()),
                db,
                signer: Signer::Configured,
            });
        }
        let db = SqliteStore::open_with(&config.sqlite_path, config.audit.durability)
            .await
            .map_err(|source| StartError::Store {
                path: config.sqlite_path.display().to_string(),
                source,
            })?;
        let db = Arc::new(db);
        Ok(Stores {
            audit: AuditLog::Single(db.clone()),
            db,
            signer: Signer::Configured,
        })
    }

    /// Everything in memory, with a fresh signing key: for tests and benchmarks. The audit
    /// log is the real writer over an in-memory store.
    pub async fn in_memory() -> Result<Stores, StartError> {
        Stores::in_memory_with(Arc::new(MemoryAuditStore::new())).await
    }

    /// As [`Stores::in_memory`], with the audit log kept in `audit`.
    pub async fn in_memory_with(audit: Arc<dyn AuditStore>) -> Result<Stores, StartError> {
        let db = SqliteStore::open_in_memory()
            .await
            .map_err(|source| StartError::Store {
                path: ":memory:".into(),
                source,
            })?;
        let key = SignerKey::generate(IN_MEMORY_ORIGIN).map_err(|e| {
            StartError::Audit(crate::audit::StartError::Key {
                path: "(generated)".into(),
                reason: e.to_string(),
            })
        })?;
        Ok(Stores {
            db: Arc::new(db),
            audit: AuditLog::Single(audit),
            signer: Signer::Key(Box::new(key)),
        })
    }

    /// Starts the audit writer; returns it with the key store.
    async fn open_audit(self, config: &Config) -> Result<(Arc<dyn Database>, Auditor), StartError> {
        let auditor = match self.signer {
            Signer::Configured => crate::audit::start(&config.audit, self.audit).await?,
            Signer::Key(key) => {
                let settings = AuditorConfig {
                    origin: IN_MEMORY_ORIGIN.to_owned(),
                    checkpoint_every: config.audit.checkpoint_every,
                    checkpoint_interval: config.audit.checkpoint_interval,
                    ..AuditorConfig::default()
                };
                match self.audit {
                    AuditLog::Single(store) => Auditor::start(store, *key, settings).await,
                    AuditLog::Shared(store) => {
                        let sequencer = SequencerConfig::new(IN_MEMORY_ORIGIN);
                        Auditor::start_shared(store, *key, settings, sequencer).await
                    }
                }
                .map_err(|e| StartError::Audit(e.into()))?
            }
        };
        Ok((self.db, auditor))
    }
}

/// Connects to the configured PostgreSQL (`storage.url`, `storage.max_connections`), without
/// looking at its schema: `wardgate serve` then checks it, `wardgate migrate` applies it.
pub async fn open_postgres(
    pg: &PostgresSettings,
    audit_durability: wardgate_store::AuditDurability,
) -> Result<PgStore, StartError> {
    let options = wardgate_store::postgres::PgOptions {
        max_connections: pg.max_connections,
        acquire_timeout: pg.acquire_timeout,
        query_timeout: pg.query_timeout,
        audit_durability,
    };
    if let Some(warning) = pg.url.default_tls_warning() {
        tracing::warn!("{warning}");
    }
    PgStore::connect(&pg.url, options)
        .await
        .map_err(|source| StartError::Store {
            path: pg.url.shown().to_owned(),
            source,
        })
}

/// The configuration a role was loaded from, for the digest that opens each run's audit log
/// and for reloads.
pub struct ConfigSource {
    /// The config file, if any.
    pub path: Option<PathBuf>,
    /// The `WARDGATE_*` lookup the configuration was loaded with.
    pub env: Box<crate::serve::reload::Env>,
}

impl ConfigSource {
    /// The `config_change` event that opens a run, naming the digest of the file and of the
    /// `WARDGATE_*` environment.
    fn startup_event(&self, config: &Config) -> std::io::Result<wardgate_audit::AuditEvent> {
        let file = self.path.as_deref().map(std::fs::read).transpose()?;
        let digest = crate::audit::config_digest_of(file.as_deref(), &*self.env);
        Ok(crate::audit::startup_event(&digest, config.tls.is_some()))
    }
}

/// The public gateway: its state, the router serving it (swapped by a reload) and the
/// reloader.
#[derive(Clone)]
pub struct Gateway {
    state: AppState,
    live: LiveRouter,
    /// The event that opens this run in the audit log, written once the service can serve
    /// (listener bound, TLS loaded); `None` for a gateway built without [`Gateway::start`].
    opening: Option<wardgate_audit::AuditEvent>,
    /// `None` when built from a configuration value rather than a source to re-read.
    reloader: Option<Arc<Reloader>>,
}

impl Gateway {
    /// Builds the gateway from `config` over `stores`: the engine (when a backend is
    /// `embedded`, fetching the default model into an empty store when configured), the
    /// backends and catalog, the audit writer, the JWT issuers, the limiter (Redis connected
    /// and checked now) and the router. A reload re-reads `source`; without one, reloads are
    /// refused. Nothing is written to the audit log yet: see [`Gateway::start`].
    pub async fn build(
        config: Config,
        stores: Stores,
        source: Option<ConfigSource>,
    ) -> Result<Gateway, StartError> {
        Gateway::assemble(config, stores, source, None).await
    }

    /// As [`Gateway::build`], over a given catalog instead of the configured backends (a
    /// test stands a backend of its own in).
    pub async fn build_over(
        config: Config,
        stores: Stores,
        source: Option<ConfigSource>,
        catalog: wardgate_backends::Catalog,
    ) -> Result<Gateway, StartError> {
        Gateway::assemble(config, stores, source, Some(catalog)).await
    }

    async fn assemble(
        config: Config,
        stores: Stores,
        source: Option<ConfigSource>,
        catalog: Option<wardgate_backends::Catalog>,
    ) -> Result<Gateway, StartError> {
        let jwt = parts::jwt(&config).await?;
        let (mut state, _) = shared_state(config, stores, catalog).await?;
        state.jwt = jwt;
        let live = LiveRouter::new(crate::router(state.clone()));
        let reloader = source.map(|source| {
            let reloader = Reloader::new(source.path, source.env, live.clone(), crate::router);
            reloader.install(state.clone());
            reloader
        });
        Ok(Gateway {
            state,
            live,
            opening: None,
            reloader,
        })
    }

    /// Opens the configured stores and builds the gateway; [`Gateway::run`] opens this run of
    /// the audit log with the digest of its configuration once it can serve (a start that
    /// fails before, on a taken port or a bad TLS key, is no run; a log that cannot take the
    /// event stops the start).
    pub async fn start(config: Config, source: ConfigSource) -> Result<Gateway, StartError> {
        let (stores, opening) = open(&config, &source).await?;
        let mut gateway = Gateway::build(config, stores, Some(source)).await?;
        gateway.opening = Some(opening);
        Ok(gateway)
    }

    /// The shared state of the router now serving.
    pub fn state(&self) -> AppState {
        self.reloader
            .as_ref()
            .and_then(|r| r.current())
            .unwrap_or_else(|| self.state.clone())
    }

    /// The router now serving (a reload swaps it).
    pub fn router(&self) -> axum::Router {
        self.live.get()
    }

    /// Re-reads the configuration (the admin API and SIGHUP do this); `None` when the
    /// gateway was built without a source to re-read.
    pub fn reloader(&self) -> Option<Arc<Reloader>> {
        self.reloader.clone()
    }

    /// Serves on `listener` until `shutdown` resolves: probes the backends, preloads the
    /// configured models, runs the background work, drains in-flight requests for at most
    /// `server.shutdown_grace`, and closes the audit log (a final signed checkpoint).
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let state = self.state.clone();
        let preload_state = state.clone();
        tokio::spawn(async move {
            preload(&preload_state).await;
        });
        let reloader = self.reloader.clone();
        let initial = state.clone();
        let current: crate::metrics::listener::CurrentState = Arc::new(move || {
            reloader
                .as_ref()
                .and_then(|r| r.current())
                .unwrap_or_else(|| initial.clone())
        });
        let role = Role {
            name: "serve",
            current,
        };
        run_service(state, self.live, listener, shutdown, self.opening, role).await
    }
}

/// The private model service: the engine behind the Ollama API, signed requests only.
#[derive(Clone)]
pub struct LlmService {
    state: AppState,
    router: axum::Router,
    /// As [`Gateway`]'s: written by `run` once the service can serve.
    opening: Option<wardgate_audit::AuditEvent>,
}

impl LlmService {
    /// Builds the service from `config` (as `wardgate llm` loads it: the embedded engine
    /// its only backend) over `stores`: the engine (fetching the default model into an empty
    /// store when configured), its catalog, the audit log, and the router that verifies each
    /// request's signature with `keys`.
    pub async fn build(
        config: Config,
        stores: Stores,
        keys: Vec<SigningKey>,
    ) -> Result<LlmService, StartError> {
        LlmService::assemble(config, stores, keys, None).await
    }

    /// As [`LlmService::build`], over a given catalog (a test stands a backend of its own
    /// in for the engine).
    pub async fn build_over(
        config: Config,
        stores: Stores,
        keys: Vec<SigningKey>,
        catalog: wardgate_backends::Catalog,
    ) -> Result<LlmService, StartError> {
        LlmService::assemble(config, stores, keys, Some(catalog)).await
    }

    async fn assemble(
        config: Config,
        stores: Stores,
        keys: Vec<SigningKey>,
        catalog: Option<wardgate_backends::Catalog>,
    ) -> Result<LlmService, StartError> {
        let (state, redis) = shared_state(config, stores, catalog).await?;
        let verifier = Arc::new(Verifier::new(
            keys,
            wardgate_api::signing::DEFAULT_SKEW_SECS,
            state.config.llm.replay_cache_size(),
        ));
        // Replicas sharing a Redis share their replay cache (`identity::replay`).
        let nonces = redis.map(|r| Arc::new(crate::identity::replay::SharedNonces::new(r)));
        let router = crate::llm::llm_router(state.clone(), verifier, nonces);
        Ok(LlmService {
            state,
            router,
            opening: None,
        })
    }

    /// Opens the configured stores and builds the service; its audit log opens with the
    /// digest of its configuration.
    pub async fn start(
        config: Config,
        source: ConfigSource,
        keys: Vec<SigningKey>,
    ) -> Result<LlmService, StartError> {
        let (stores, opening) = open(&config, &source).await?;
        let mut service = LlmService::build(config, stores, keys).await?;
        service.opening = Some(opening);
        Ok(service)
    }

    /// The service's shared state.
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// The service's router.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Serves on `listener` until `shutdown` resolves, as [`Gateway::run`] does.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let preload_state = self.state.clone();
        tokio::spawn(async move {
            preload(&preload_state).await;
        });
        let state = self.state.clone();
        let role = Role {
            name: "llm",
            current: Arc::new(move || state.clone()),
        };
        run_service(
            self.state,
            LiveRouter::new(self.router),
            listener,
            shutdown,
            self.opening,
            role,
        )
        .await
    }
}

/// What both roles' state is built from: the backends (the configured ones, with the
/// engine when one is `embedded`, or a given catalog), the audit writer, the limiter, and
/// what instances share through Redis when it is configured (returned too, for the role's
/// own shared parts).
async fn shared_state(
    config: Config,
    stores: Stores,
    catalog: Option<wardgate_backends::Catalog>,
) -> Result<(AppState, Option<crate::shared::SharedRedis>), StartError> {
    let (catalog, engine) = match catalog {
        Some(c) => (c, None),
        None => parts::backends(&config)?,
    };
    let (db, auditor) = stores.open_audit(&config).await?;
    let redis = parts::connect_redis(&config)
        .await
        .map_err(StartError::Redis)?;
    let mut state = parts::build_state(config, catalog, engine, db, auditor, redis.as_ref());
    if let Some(r) = &redis {
        let revocations = parts::revocations(r, state.key_cache.as_ref(), state.config.broadcast)
            .await
            .map_err(StartError::Redis)?;
        state.revocations = Some(Arc::new(revocations));
    }
    Ok((state, redis))
}

/// Opens the configured stores, and makes the event that opens this run of the audit log.
async fn open(
    config: &Config,
    source: &ConfigSource,
) -> Result<(Stores, wardgate_audit::AuditEvent), StartError> {
    if config.audit.durability == wardgate_store::AuditDurability::Process {
        if config.postgres.is_some() {
            tracing::warn!(
                "audit.durability = \"process\": audit events are queued in PostgreSQL without \
                 waiting for its WAL flush (synchronous_commit off for those transactions); a \
                 crash of the database server can lose the last audit events (up to three \
                 wal_writer_delay, 600 ms by default)"
            );
        } else {
            tracing::warn!(
                "audit.durability = \"process\": audit commits are not flushed to the disk \
                 before requests go on; a power loss or kernel crash can lose the last audit \
                 entries"
            );
        }
    }
    let stores = Stores::open(config).await?;
    let event = source
        .startup_event(config)
        .map_err(|source_error| StartError::ConfigFile {
            path: source
                .path
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            source: source_error,
        })?;
    Ok((stores, event))
}

/// Opens this run in the audit log with the digest of its configuration (configuration
/// changes across restarts are audited); a log that cannot take it stops the start.
async fn begin_run(
    state: &AppState,
    opening: wardgate_audit::AuditEvent,
) -> Result<(), StartError> {
    state
        .audit
        .append(opening)
        .await
        .map(drop)
        .map_err(StartError::AuditStartEvent)
}

/// Serves whichever router `app` holds, with the background tasks and the bounded drain,
/// over TLS when the config has it; then writes the folded refusals and closes the audit log.
/// Which role runs, for what both roles serve beside their own listener (the metrics).
struct Role {
    /// `serve` or `llm`: the metrics' `listener` label.
    name: &'static str,
    /// The state now serving (a reload swaps the gateway's).
    current: crate::metrics::listener::CurrentState,
}

async fn run_service(
    state: AppState,
    app: LiveRouter,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    opening: Option<wardgate_audit::AuditEvent>,
    role: Role,
) -> Result<(), StartError> {
    let grace = state.config.shutdown_grace;
    let tls = state
        .config
        .tls
        .as_ref()
        .map(crate::serve::tls::Tls::load)
        .transpose()?;
    // Bound before the run opens: an address in use stops the start, as the main listener's
    // does, rather than leaving an operator without the metrics they set up.
    let metrics_listener = match state.config.metrics.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::MetricsListen { addr, source })?,
        ),
        None => None,
    };
    // The listener is bound and TLS loaded: from here the service runs, and its run opens.
    if let Some(event) = opening {
        begin_run(&state, event).await?;
    }
    let limits = state.config.server.clone();
    let lockout = state.lockout.clone();
    let refusals = state.refusals.clone();
    let audit = state.audit.clone();
    let store = state.store_health.clone();
    let mut tasks = background::spawn(state);
    if let Some(t) = &tls {
        tasks.push(t.spawn_reload());
    }
    if let Some(l) = metrics_listener {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(addr = %addr, "metrics listening (GET /metrics)");
        }
        tasks.push(crate::metrics::listener::spawn(
            l,
            role.current,
            role.name,
            tls.clone(),
        ));
    }
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
    };
    // Returns once every connection has ended: drained within `grace`, or closed at it (their
    // requests' terminal audit events queued before the writer stops below).
    crate::serve::server::run(listener, app, limits, tls, shutdown, grace).await;
    for t in tasks {
        t.abort();
    }
    // Refusals folded in windows that have not ended yet (failed authentications, 429s) are
    // written now, so a stop loses none of the evidence; then the log closes with a final
    // signed checkpoint.
    lockout.flush_folded(&audit).await;
    refusals.flush(&audit).await;
    if let Err(e) = audit.shutdown().await {
        tracing::error!(error = %crate::causes::Causes(&e), "the audit log did not close cleanly");
    }
    // The last write is done: a SQLite database file is then complete on its own (its WAL
    // copied in and emptied), so an offline copy of the file alone misses nothing.
    if let Err(e) = store.settle().await {
        tracing::warn!(error = %crate::causes::Causes(&e), "the SQLite WAL was not all copied into the \
             database file at the stop: an offline copy must take the -wal file too");
    }
    Ok(())
}
