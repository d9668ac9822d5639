//! `wardgate llm`: the private model service.

use std::path::Path;

use anyhow::Context as _;
use wardgate_gateway::Config;
use wardgate_gateway::app::{ConfigSource, LlmService};

use super::{env, init_logging, shutdown_signal};

/// `wardgate llm`: the engine behind the Ollama API, listening privately, signed requests only.
pub(crate) async fn llm(config_path: Option<&Path>) -> anyhow::Result<()> {
    // Taken over first: SIGHUP's default action would end the service.
    let hangups = super::serve::Hangups::listen();
    let secrets = env("WARDGATE_LLM_SECRET").context(
        "WARDGATE_LLM_SECRET is not set: wardgate llm only serves requests signed by the \
         gateway. Generate a secret (e.g. `openssl rand -hex 32`) and give the same value to \
         the gateway as WARDGATE_BACKEND_SECRET",
    )?;
    let keys = wardgate_api::signing::SigningKey::parse_list(&secrets)
        .map_err(|e| anyhow::anyhow!("WARDGATE_LLM_SECRET: {e}"))?;
    // The service's own settings, validated once: the embedded engine as its only backend, its
    // own listener and TLS (`WARDGATE_LLM_*`), no per-key limits or quotas (its one client, the
    // gateway, enforces those; the engine's slots and queue bound what runs here).
    let config = Config::load_llm(config_path, &env)?;
    let (configured, traces) = init_logging(&config, "wardgate-llm")?;
    for (ignored, instead) in wardgate_gateway::config::llm::ignored_gateway_env(&env) {
        tracing::warn!(
            variable = ignored,
            instead,
            "wardgate llm does not read this gateway variable; set the one named instead"
        );
    }
    let addr = config.listen;
    let source = ConfigSource {
        path: config_path.map(Path::to_path_buf),
        env: Box::new(env),
    };
    let service = LlmService::start(config, source, keys).await?;
    let state = service.state();
    wardgate_gateway::app::refresh_backends(&state).await;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let scheme = if state.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let local = listener.local_addr()?;
    let url = format!("{scheme}://{local}");
    configured.add(local.to_string());
    configured.add(url.clone());
    tracing::info!(addr = %local, url = %url, "wardgate llm listening");
    super::serve::ignore_hangups(hangups);
    let served = service.run(listener, shutdown_signal()).await;
    // The spans of the last requests are sent before the process ends.
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    served?;
    Ok(())
}
