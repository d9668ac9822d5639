//! What every handler shares: configuration, the model catalog, the stores and the limiter.

use std::sync::Arc;

use wardgate_backends::{Catalog, Route};
use wardgate_store::{Health, KeyStore, TenantStore};

use crate::config::{Config, valid_model_name};
use crate::error::ApiError;
use crate::guards::ratelimit::RateLimiter;
use crate::identity::principal::Principal;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub catalog: Arc<Catalog>,
    pub keys: Arc<dyn KeyStore>,
    pub tenants: Arc<dyn TenantStore>,
    pub store_health: Arc<dyn Health>,
    /// Rate limits and quotas (in process, or shared through Redis).
    pub limiter: Arc<dyn RateLimiter>,
    /// Failed-authentication counting and lockout.
    pub lockout: Arc<crate::identity::lockout::Lockout>,
    /// Each key's 429s in the current refusal audit window (`limits.refusal_audit_window`).
    pub refusals: Arc<crate::guards::audit_fold::AuditFolds<crate::guards::ratelimit::RefusedKey>>,
    /// Trusted JWT issuers; `None` when none is configured.
    pub jwt: Option<Arc<crate::identity::jwt::JwtVerifier>>,
    /// Recently verified keys; `None` when `auth.key_cache_ttl` is `0s`.
    pub key_cache: Option<Arc<crate::identity::key_cache::KeyCache>>,
    /// The Redis instances share (its health for `/ready`); `None` without Redis.
    pub redis: Option<crate::shared::SharedRedis>,
    /// Key revocations and rotations announced to, and heard from, the other instances
    /// sharing the Redis; `None` without Redis.
    pub revocations: Option<Arc<crate::identity::revocations::Revocations>>,
    /// The in-process engine, when a backend is `embedded`.
    pub engine: Option<Arc<wardgate_engine::Engine>>,
    /// Set once the preload models are loaded; `/ready` waits for it.
    pub preloaded: Arc<std::sync::atomic::AtomicBool>,
    /// The PHI guard with its per-tenant and per-model policy.
    pub phi: Arc<crate::guards::phi_guard::PhiGuard>,
    /// The audit log writer (tests write to an in-memory store; see `app::Stores`).
    pub audit: wardgate_audit::Auditor,
}

impl AppState {
    /// The route for a client-supplied model name, if the name is well formed, exists, and the
    /// principal may use it. A model the key may not use is answered exactly like a model that
    /// does not exist, so keys cannot probe the catalog.
    pub fn route_for(&self, p: &Principal, name: &str) -> Result<Arc<Route>, ApiError> {
        if !valid_model_name(name) {
            return Err(ApiError::BadRequest(wardgate_api::BadRequest::param(
                "model",
                "model must be 1-128 letters, digits or `._:/-`",
            )));
        }
        match self.catalog.resolve(name) {
            Some(route) if p.may_use(name, &route.name) => Ok(route),
            Some(_) => Err(ApiError::ModelNotFound(name.to_owned())),
            // While a discovered backend has never listed its models, an unknown name may be
            // one of them: say the server is unavailable rather than that the model is not.
            None if self.discovery_pending() => Err(ApiError::BackendUnavailable),
            None => Err(ApiError::ModelNotFound(name.to_owned())),
        }
    }

    fn discovery_pending(&self) -> bool {
        self.config
            .backends
            .iter()
            .any(|b| b.discover && !self.catalog.has_discovered(&b.name))
    }

    /// The public models a principal may see, with their routes.
    pub fn visible_models(&self, p: &Principal) -> Vec<(String, Arc<Route>)> {
        self.catalog
            .list()
            .into_iter()
            .filter(|(name, route)| p.may_use(name, &route.name))
            .collect()
    }
}
