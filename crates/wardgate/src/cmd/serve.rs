//! `wardgate serve`: the public gateway, with reload on SIGHUP.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use wardgate_gateway::middleware::events::{ConfigReloaded, ReloadVia};
use wardgate_store::SqliteStore;

use super::{ensure_default_model, env, init_logging, load_config, shutdown_signal};

pub(crate) async fn serve(config_path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    let configured = init_logging(&config);
    if config.audit.durability == wardgate_store::AuditDurability::Process {
        tracing::warn!(
            "audit.durability = \"process\": audit commits are not flushed to the disk before \
             requests go on; a power loss or kernel crash can lose the last audit entries"
        );
    }
    let store = Arc::new(
        SqliteStore::open_with(&config.sqlite_path, config.audit.durability)
            .await
            .with_context(|| {
                format!("cannot open the database {}", config.sqlite_path.display())
            })?,
    );
    let engine = wardgate_gateway::build_engine(&config)?;
    if let Some(e) = &engine {
        ensure_default_model(&config, e)?;
    }
    let catalog = wardgate_gateway::build_catalog(&config, engine.as_ref())?;
    let listen = config.listen;
    let auditor = wardgate_gateway::audit::start(&config.audit, store.clone())
        .await
        .context("the audit log is required and could not start")?;
    // Each run opens with the digest of its configuration (config changes across restarts
    // are audited); a log that cannot take this event stops the start.
    let file = config_path.map(std::fs::read).transpose()?;
    let digest = wardgate_gateway::audit::config_digest(
        file.as_deref(),
        &std::env::vars().collect::<Vec<_>>(),
    );
    auditor
        .append(wardgate_gateway::audit::startup_event(
            &digest,
            config.tls.is_some(),
        ))
        .await
        .context("the audit log did not take the start-up event")?;
    let jwt = if config.jwt.is_empty() {
        None
    } else {
        let v = Arc::new(
            wardgate_gateway::identity::jwt::JwtVerifier::start(
                config.jwt.clone(),
                config.max_token_bytes,
            )
            .await?,
        );
        v.spawn_refresh();
        Some(v)
    };
    let limiter = wardgate_gateway::connect_limiter(&config)
        .await
        .context("cannot connect to the rate limiter's Redis (rate_limit.redis_url)")?;
    let mut state =
        wardgate_gateway::build_state(config, catalog, engine, store).with_audit(auditor.clone());
    state.jwt = jwt;
    state.limiter = Some(limiter);
    if wardgate_gateway::refresh_backends(&state).await == 0 {
        let names: Vec<String> = state
            .config
            .backends
            .iter()
            .map(|b| format!("{} ({})", b.name, b.url))
            .collect();
        // The example is this program's own text, not a request's: readable in the log.
        const EXAMPLE: &str = "ollama:http://127.0.0.1:11434";
        configured.add(EXAMPLE);
        tracing::error!(
            backends = %names.join(", "),
            example = EXAMPLE,
            "no model server answers: wardgate is running, but every model request gets 503 \
             until one does. Start the server, or point WARDGATE_BACKEND at one that runs"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    let scheme = if state.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{local}");
    configured.add(local.to_string());
    configured.add(url.clone());
    tracing::info!(addr = %local, url = %url, "wardgate listening");
    let preload_state = state.clone();
    tokio::spawn(async move {
        wardgate_gateway::preload(&preload_state).await;
    });
    // Requests are served by the current router; a reload (admin API or SIGHUP) swaps it.
    let live =
        wardgate_gateway::serve::server::LiveRouter::new(wardgate_gateway::router(state.clone()));
    let reloader = wardgate_gateway::serve::reload::Reloader::new(
        config_path.map(Path::to_path_buf),
        Box::new(env),
        live.clone(),
        wardgate_gateway::router,
    );
    let state = reloader.install(state);
    reload_on_hangup(reloader, auditor.clone());
    wardgate_gateway::serve_live(state, live, listener, shutdown_signal()).await?;
    // Commits what is queued and signs a final checkpoint.
    if let Err(e) = auditor.shutdown().await {
        tracing::error!(error = %e, "the audit log did not close cleanly");
    }
    Ok(())
}

/// SIGHUP reloads the configuration, like the admin API; each attempt is audited.
pub(crate) fn reload_on_hangup(
    reloader: Arc<wardgate_gateway::serve::reload::Reloader>,
    auditor: wardgate_audit::Auditor,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload through the admin API instead");
            return;
        };
        while hangups.recv().await.is_some() {
            let r = reloader.clone();
            let Ok(result) = tokio::task::spawn_blocking(move || r.reload()).await else {
                continue;
            };
            ConfigReloaded {
                via: ReloadVia::Sighup,
                result: &result,
            }
            .append(&auditor)
            .await;
        }
    });
    #[cfg(not(unix))]
    let _ = (reloader, auditor);
}
