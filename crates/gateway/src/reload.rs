//! Configuration reload without a restart (`POST /admin/config/reload`, or SIGHUP to
//! `wardgate serve`): the file and environment are read and validated again, and when only
//! request policy changed, the next request is served with it.
//!
//! What reloads: `limits.*`, the rate limits and quotas, `phi.*`, the request timeouts,
//! `auth.key_idle_timeout`, `auth.operator_tenant` and `auth.client_cert_*`. Everything else
//! (listener, TLS settings, storage, backends and models, the engine, the audit log, JWT
//! issuers, lockout, the limiter's backend, logging) is built once at start: a reload that
//! changes any of it is refused, naming the settings, and nothing is applied. A file that
//! does not validate is refused the same way. Either outcome is an audit event.
//!
//! How: requests are served by whichever router is current (`LiveRouter`); a reload builds a
//! new state from the old one (same stores, catalog, engine, audit log, limiter and caches)
//! with the new configuration and PHI guard, and swaps in its router. Requests in flight
//! finish under the configuration they started with.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::config::{Config, ConfigError};
use crate::state::AppState;

/// The router requests are served by, swapped as a whole on reload.
#[derive(Clone)]
pub struct LiveRouter(Arc<RwLock<axum::Router>>);

impl LiveRouter {
    pub fn new(router: axum::Router) -> LiveRouter {
        LiveRouter(Arc::new(RwLock::new(router)))
    }

    pub fn get(&self) -> axum::Router {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, router: axum::Router) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = router;
    }
}

/// Why a reload was refused; nothing was applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the configuration is invalid: {0}")]
    Invalid(#[from] ConfigError),
    #[error("these settings only change with a restart: {}", .0.join(", "))]
    RestartRequired(Vec<&'static str>),
    #[error("this service was started without a reloadable configuration")]
    NotReloadable,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// The sections whose settings changed (empty: the configuration was the same).
    pub changed: Vec<&'static str>,
    /// The digest of the configuration now in force (file and `WARDGATE_*` environment).
    pub digest: String,
}

type Env = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Re-reads the configuration and swaps the router. One per running service.
pub struct Reloader {
    path: Option<PathBuf>,
    env: Box<Env>,
    live: LiveRouter,
    build: fn(AppState) -> axum::Router,
    current: std::sync::Mutex<Option<AppState>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A section's settings, as text to compare (every config type is `Debug`; nothing here is
/// ever printed).
fn fingerprint<T: std::fmt::Debug>(v: &T) -> String {
    format!("{v:?}")
}

/// The settings that only change with a restart, by name.
fn restart_only(c: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("server.listen", fingerprint(&c.listen)),
        ("server (connection limits)", fingerprint(&c.server)),
        ("server.shutdown_grace", fingerprint(&c.shutdown_grace)),
        ("server.tls", fingerprint(&c.tls)),
        ("storage", fingerprint(&c.sqlite_path)),
        ("logging", fingerprint(&(&c.log_format, &c.log_level))),
        ("rate_limit.backend", fingerprint(&c.limiter_backend)),
        ("auth.key_cache_ttl", fingerprint(&c.key_cache_ttl)),
        ("auth.max_token_bytes", fingerprint(&c.max_token_bytes)),
        ("auth (lockout)", fingerprint(&c.lockout)),
        ("auth.jwt", fingerprint(&c.jwt)),
        (
            "health",
            fingerprint(&(c.health_interval, c.health_timeout)),
        ),
        (
            "circuit_breaker",
            fingerprint(&(c.breaker_threshold, c.breaker_cooldown)),
        ),
        ("engine", fingerprint(&c.engine)),
        ("llm", fingerprint(&c.llm)),
        ("audit", fingerprint(&c.audit)),
        ("backends", fingerprint(&c.backends)),
        ("models", fingerprint(&c.models)),
    ]
}

/// The settings a reload applies, by section.
fn reloadable(c: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("limits", fingerprint(&c.limits)),
        (
            "rate_limit",
            fingerprint(&(
                c.requests_per_minute,
                c.tenant_requests_per_minute,
                c.quotas,
            )),
        ),
        ("phi", fingerprint(&c.phi)),
        (
            "server (timeouts)",
            fingerprint(&(c.request_timeout, c.first_token_timeout)),
        ),
        (
            "auth",
            fingerprint(&(&c.key_idle_timeout, &c.operator_tenant, &c.client_certs)),
        ),
    ]
}

fn differing(
    old: Vec<(&'static str, String)>,
    new: Vec<(&'static str, String)>,
) -> Vec<&'static str> {
    old.into_iter()
        .zip(new)
        .filter(|((_, a), (_, b))| a != b)
        .map(|((name, _), _)| name)
        .collect()
}

impl Reloader {
    /// A reloader for a service started from `path` (or none) with `env`, whose requests are
    /// served by `live`, routers being built with `build`.
    pub fn new(
        path: Option<PathBuf>,
        env: Box<Env>,
        live: LiveRouter,
        build: fn(AppState) -> axum::Router,
    ) -> Arc<Reloader> {
        Arc::new(Reloader {
            path,
            env,
            live,
            build,
            current: std::sync::Mutex::new(None),
        })
    }

    /// Sets the state reloads start from, and makes it reach this reloader: the state gets
    /// the reloader, and `live` serves a router built on it.
    pub fn install(self: &Arc<Self>, state: AppState) -> AppState {
        let state = state.with_reloader(self.clone());
        self.live.set((self.build)(state.clone()));
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(state.clone());
        state
    }

    /// Reads and validates the configuration again and applies it, or refuses.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let Some(old) = current.as_ref() else {
            return Err(ReloadError::NotReloadable);
        };
        let file = match &self.path {
            Some(p) => Some(std::fs::read(p).map_err(|e| {
                ConfigError::new(p.display().to_string(), format!("cannot read: {e}"))
            })?),
            None => None,
        };
        let config = Config::load(self.path.as_deref(), &*self.env)?;
        let needs_restart = differing(restart_only(&old.config), restart_only(&config));
        if !needs_restart.is_empty() {
            return Err(ReloadError::RestartRequired(needs_restart));
        }
        let changed = differing(reloadable(&old.config), reloadable(&config));
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("WARDGATE_"))
            .filter_map(|(k, _)| (self.env)(&k).map(|v| (k, v)))
            .collect();
        let digest = crate::audit::config_digest(file.as_deref(), &env);
        if !changed.is_empty() {
            let mut state = old.clone();
            state.phi = Arc::new(crate::phi_guard::PhiGuard::new(config.phi.clone()));
            state.config = Arc::new(config);
            self.live.set((self.build)(state.clone()));
            *current = Some(state);
        }
        Ok(Reloaded { changed, digest })
    }
}
