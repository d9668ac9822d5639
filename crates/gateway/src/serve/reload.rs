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
//!
//! A reload is applied only once its audit event is committed (fail closed, as model requests
//! are): [`Reloader::prepare`] checks the configuration and returns a [`Prepared`] reload,
//! the caller commits the `config_change` event, and only then [`Prepared::apply`] swaps it
//! in. Dropping a `Prepared` applies nothing. One reload runs at a time, from its check to
//! its swap, so a reload never applies a state checked against one that was since replaced.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::serve::server::LiveRouter;
use crate::state::AppState;

/// Why a reload was refused; nothing was applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the configuration is invalid: {0}")]
    Invalid(#[from] ConfigError),
    #[error("these settings only change with a restart: {}", .0.join(", "))]
    RestartRequired(Vec<&'static str>),
    #[error("this service was started without a reloadable configuration")]
    NotReloadable,
    #[error("the reload was interrupted before its check finished; try again")]
    Interrupted,
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// The sections whose settings changed (empty: the configuration was the same).
    pub changed: Vec<&'static str>,
    /// The digest of the configuration now in force (file and `WARDGATE_*` environment).
    pub digest: String,
}

/// Where `WARDGATE_*` overrides are looked up (the process environment, in production).
pub type Env = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Re-reads the configuration and swaps the router. One per running service.
pub struct Reloader {
    path: Option<PathBuf>,
    env: Box<Env>,
    live: LiveRouter,
    build: fn(AppState) -> axum::Router,
    current: std::sync::Mutex<Option<AppState>>,
    /// Held by the one reload in progress, from its check to its swap (or its drop).
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

// The two parts of the configuration (`Config::parts`) are compared as typed values
// (`PartialEq`), never as `Debug` text: a `HashMap` prints in a different order in every
// process and every copy, and a secret prints as `[redacted]` whatever it is.
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
            turn: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Sets the state reloads start from, and makes `live` serve a router built on it, which
    /// reaches this reloader (as a request extension: the admin route reads it there).
    pub fn install(self: &Arc<Self>, state: AppState) -> AppState {
        self.live.set(self.router(state.clone()));
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(state.clone());
        state
    }

    /// The state the router now serving was built on; `None` before `install`.
    pub fn current(&self) -> Option<AppState> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn router(self: &Arc<Self>, state: AppState) -> axum::Router {
        (self.build)(state).layer(axum::Extension(self.clone()))
    }

    /// Waits for any other reload to finish, then reads and validates the configuration
    /// again, and compares it with the one in force. Nothing is applied yet: the caller
    /// commits the reload's audit event, then calls [`Prepared::apply`]; until then (or until
    /// the `Prepared` is dropped) other reloads wait.
    pub async fn prepare(self: &Arc<Self>) -> Result<Prepared, ReloadError> {
        let turn = self.turn.clone().lock_owned().await;
        let me = self.clone();
        // Reading the file blocks: off the runtime's threads.
        let (state, reloaded) = match tokio::task::spawn_blocking(move || me.check()).await {
            Ok(checked) => checked?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return Err(ReloadError::Interrupted),
        };
        Ok(Prepared {
            reloader: self.clone(),
            state,
            reloaded,
            _turn: turn,
        })
    }

    /// Reads and validates the configuration, and builds the state it would apply (`None`:
    /// nothing changed).
    fn check(&self) -> Result<(Option<AppState>, Reloaded), ReloadError> {
        let Some(old) = self.current() else {
            return Err(ReloadError::NotReloadable);
        };
        let file = match &self.path {
            Some(p) => Some(std::fs::read(p).map_err(|e| {
                ConfigError::new(p.display().to_string(), format!("cannot read: {e}"))
            })?),
            None => None,
        };
        let config = Config::load(self.path.as_deref(), &*self.env)?;
        let (old_startup, old_live) = old.config.parts();
        let (startup, live) = config.parts();
        if startup != old_startup {
            return Err(ReloadError::RestartRequired(old_startup.changed(&startup)));
        }
        let changed = old_live.changed(&live);
        let digest = crate::audit::config_digest_of(file.as_deref(), &*self.env);
        let state = (!changed.is_empty()).then(|| {
            let mut state = old.clone();
            state.phi = Arc::new(crate::guards::phi_guard::PhiGuard::new(config.phi.clone()));
            state.config = Arc::new(config);
            state
        });
        Ok((state, Reloaded { changed, digest }))
    }
}

/// A reload checked and not yet applied (see [`Reloader::prepare`]). Other reloads wait while
/// it exists; dropped, it applies nothing.
#[must_use = "a prepared reload applies nothing until `apply` is called"]
pub struct Prepared {
    reloader: Arc<Reloader>,
    state: Option<AppState>,
    reloaded: Reloaded,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("reloaded", &self.reloaded)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// What applying it will do: the sections that change, and the digest then in force.
    pub fn reloaded(&self) -> &Reloaded {
        &self.reloaded
    }

    /// Swaps in the new configuration (when anything changed). Call it only once the
    /// reload's audit event is committed.
    pub fn apply(self) -> Reloaded {
        let Prepared {
            reloader,
            state,
            reloaded,
            _turn,
        } = self;
        if let Some(state) = state {
            reloader.live.set(reloader.router(state.clone()));
            *reloader.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
        }
        reloaded
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    const JWT: &str = r#"
[[auth.jwt]]
issuer = "https://idp.example.org"
audiences = ["wardgate"]
algorithms = ["HS256"]
secret_env = "WG_RELOAD_TEST_SECRET"
"#;

    fn load(toml: &str, secret: &'static str) -> Config {
        let raw = crate::config::parse_toml(toml).unwrap();
        Config::from_raw(raw, &|k: &str| {
            (k == "WG_RELOAD_TEST_SECRET").then(|| secret.to_owned())
        })
        .unwrap()
    }

    /// A secret's `Debug` text is `[redacted]` whatever it holds, so comparing text missed a
    /// changed HS256 secret: the reload said nothing changed and the old secret stayed in force.
    #[test]
    fn a_changed_jwt_secret_is_a_change_that_needs_a_restart() {
        let a = load(JWT, "0123456789abcdef0123456789abcdef");
        let same = load(JWT, "0123456789abcdef0123456789abcdef");
        let other = load(JWT, "fedcba9876543210fedcba9876543210");
        assert!(a.parts().0.changed(&same.parts().0).is_empty());
        assert_eq!(a.parts().0.changed(&other.parts().0), ["auth.jwt"]);
    }

    /// Maps compare by content: two loads of the same rules are equal, whatever order each
    /// map happens to iterate in.
    #[test]
    fn phi_rules_loaded_twice_are_the_same() {
        let mut toml = String::from("[phi]\nmode = \"block\"\n");
        for i in 0..16 {
            toml.push_str(&format!(
                "[[phi.tenants]]\nname = \"t{i}\"\nmode = \"deidentify\"\n\
                 [[phi.models]]\nname = \"m{i}\"\nmode = \"off\"\n"
            ));
        }
        let a = load(&toml, "unused");
        for _ in 0..10 {
            let b = load(&toml, "unused");
            assert!(a.parts().1 == b.parts().1);
            assert!(a.parts().0 == b.parts().0);
        }
    }
}
