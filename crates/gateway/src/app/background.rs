//! The work a running role does beside serving: backend health probes, model discovery,
//! preloading, and unloading idle models.

use tokio::task::JoinHandle;
use wardgate_backends::Pool;

use crate::config;
use crate::state::AppState;

/// Probes every backend (every replica of a pool) once and refreshes discovered models; logs,
/// clearly, each one that does not answer. Returns how many answered.
pub async fn refresh_backends(state: &AppState) -> usize {
    let mut answered = 0;
    // Every replica of every backend at once: a start waits for the slowest probe, not for
    // their sum.
    let timeout = state.config.health_timeout;
    let pools = state.catalog.pools().iter().map(|pool| async move {
        let probes = pool
            .replicas()
            .map(|h| async move { (h.clone(), h.probe(timeout).await) });
        (pool, futures::future::join_all(probes).await)
    });
    for (pool, probes) in futures::future::join_all(pools).await {
        let urls = state
            .config
            .backends
            .iter()
            .find(|b| b.name == pool.name())
            .map(|b| b.urls.as_slice())
            .unwrap_or_default();
        let mut any = false;
        for (i, (handle, probe)) in probes.into_iter().enumerate() {
            let url = urls.get(i).map(String::as_str).unwrap_or_default();
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
                    "backend is not usable until it answers; its requests go to another \
                     replica or the next chain link, else fail with 503"
                );
                continue;
            }
            answered += 1;
            any = true;
        }
        if any {
            discover(state, pool).await;
        }
    }
    answered
}

/// Reads a backend's model list from the first of its replicas that answers, when the
/// backend discovers.
async fn discover(state: &AppState, pool: &Pool) {
    let Some(b) = state.config.backends.iter().find(|b| b.name == pool.name()) else {
        return;
    };
    if !b.discover {
        return;
    }
    let mut failed = None;
    // Healthy replicas first; the replicas of a pool serve the same models.
    let (healthy, others): (Vec<_>, Vec<_>) = pool.replicas().partition(|h| h.is_healthy());
    for handle in healthy.into_iter().chain(others) {
        match tokio::time::timeout(state.config.health_timeout, handle.backend.list_models()).await
        {
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
                    .set_discovered(pool.name(), names, crate::handlers::unix_now());
                return;
            }
            Ok(Err(e)) => failed = Some((handle, e.to_string())),
            Err(_) => failed = Some((handle, "timed out".to_owned())),
        }
    }
    if let Some((handle, error)) = failed {
        tracing::warn!(backend = handle.name(), %error, "model discovery failed");
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

/// Background work: health probes (which also close the breaker of a backend that failed its
/// probes and answers again; one that failed requests waits for a trial request) and model
/// discovery, each on its own interval.
pub(super) fn spawn(state: AppState) -> Vec<JoinHandle<()>> {
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
                if let Some(pool) = s.catalog.pools().iter().find(|p| p.name() == name) {
                    discover(&s, pool).await;
                }
            }
        }));
    }
    tasks
}
