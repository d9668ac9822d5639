//! `wardgate llm`: the private model service.

use std::path::Path;

use anyhow::Context as _;
use wardgate_gateway::Config;
use wardgate_gateway::app::{ConfigSource, LlmService};

use super::{env, init_logging, shutdown_signal};

/// `wardgate llm`: the engine behind the Ollama API, listening privately, signed requests only.
pub(crate) async fn llm(config_path: Option<&Path>) -> anyhow::Result<()> {
    let secrets = env("WARDGATE_LLM_SECRET").context(
        "WARDGATE_LLM_SECRET is not set: wardgate llm only serves requests signed by the \
         gateway. Generate a secret (e.g. `openssl rand -hex 32`) and give the same value to \
         the gateway as WARDGATE_BACKEND_SECRET",
    )?;
    let keys = wardgate_api::signing::SigningKey::parse_list(&secrets)
        .map_err(|e| anyhow::anyhow!("WARDGATE_LLM_SECRET: {e}"))?;
    let listen = env("WARDGATE_LLM_LISTEN").unwrap_or_else(|| "127.0.0.1:11434".to_owned());
    // The private hop can be TLS too: the service's own certificate, separate from any the
    // gateway's listener uses in the same environment.
    let (tls_cert, tls_key) = (env("WARDGATE_LLM_TLS_CERT"), env("WARDGATE_LLM_TLS_KEY"));
    // The service's own settings: the embedded engine as its only backend, no API keys and no
    // per-key rate limit (its one client, the gateway, enforces those).
    let llm_env = |name: &str| match name {
        "WARDGATE_BACKEND" => Some("embedded".to_owned()),
        "WARDGATE_RATE_LIMIT_RPM" => Some("0".to_owned()),
        "WARDGATE_LISTEN" => Some(listen.clone()),
        "WARDGATE_TLS_CERT" => tls_cert.clone(),
        "WARDGATE_TLS_KEY" => tls_key.clone(),
        "WARDGATE_TLS_CLIENT_CA" => None,
        other => env(other),
    };
    let mut config = Config::load(config_path, &llm_env)?;
    config
        .backends
        .retain(|b| b.kind == wardgate_gateway::config::BackendType::Embedded);
    config.models.clear();
    // No quotas either: they are the gateway's, per key and tenant; the engine's own slots and
    // queue bound what runs here.
    config.requests_per_minute = 0;
    config.tenant_requests_per_minute = 0;
    config.quotas = Default::default();
    let configured = init_logging(&config);
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
    service.run(listener, shutdown_signal()).await?;
    Ok(())
}
