//! The work a running role does beside serving: backend health probes, model discovery,
//! preloading, and unloading idle models.

use tokio::task::JoinHandle;
use wardgate_backends::BackendHandle;

use crate::config;
use crate::state::AppState;

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
                .set_discovered(handle.name(), names, crate::handlers::unix_now());
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
                if let Some(h) = s.catalog.backends().iter().find(|h| h.name() == name) {
                    discover(&s, h).await;
                }
            }
        }));
    }
    tasks
}
