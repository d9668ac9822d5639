//! `wardgate serve`: the public gateway, with reload on SIGHUP.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use wardgate_gateway::app::{ConfigSource, Gateway};
use wardgate_gateway::middleware::events::{ConfigReloaded, ReloadVia};

use super::{env, init_logging, load_config, shutdown_signal};

pub(crate) async fn serve(config_path: Option<&Path>) -> anyhow::Result<()> {
    // First of all: SIGHUP's default action ends the process, and tokio replaces it only when
    // the stream is created. A SIGHUP during start-up (backend discovery can take seconds)
    // then waits in the stream, and is a reload once the gateway runs.
    let hangups = Hangups::listen();
    let config = load_config(config_path)?;
    let (configured, traces) = init_logging(&config, "wardgate")?;
    let listen = config.listen;
    let source = ConfigSource {
        path: config_path.map(Path::to_path_buf),
        env: Box::new(env),
    };
    let gateway = Gateway::start(config, source).await?;
    let state = gateway.state();
    if wardgate_gateway::app::refresh_backends(&state).await == 0 {
        let names: Vec<String> = state
            .config
            .backends
            .iter()
            .map(|b| format!("{} ({})", b.name, b.urls.join(", ")))
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
    if let Some(reloader) = gateway.reloader() {
        reload_on_hangup(hangups, reloader, state.audit.clone());
    }
    let served = gateway.run(listener, shutdown_signal()).await;
    // The spans of the last requests are sent before the process ends.
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    served?;
    Ok(())
}
/// SIGHUPs received since [`Hangups::listen`] (none where there is no SIGHUP).
pub(crate) struct Hangups {
    /// Why SIGHUP could not be taken over, reported once logging is set up.
    #[cfg(unix)]
    signals: std::io::Result<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Takes over SIGHUP from now on (its default action ends the process).
    pub(crate) fn listen() -> Hangups {
        #[cfg(unix)]
        {
            Hangups {
                signals: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()),
            }
        }
        #[cfg(not(unix))]
        Hangups {}
    }
}

/// `wardgate llm` does not reload: SIGHUP (a log rotation, a reload sent to every service)
/// is logged and otherwise ignored, never the end of the service.
pub(crate) fn ignore_hangups(hangups: Hangups) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut signals) = hangups.signals else {
            return;
        };
        while signals.recv().await.is_some() {
            tracing::info!(
                "SIGHUP ignored: wardgate llm does not reload its configuration; restart it to \
                 change it"
            );
        }
    });
    #[cfg(not(unix))]
    let _ = hangups;
}

/// SIGHUP reloads the configuration, like the admin API; each attempt is audited, and a
/// reload whose audit event is not committed is not applied.
pub(crate) fn reload_on_hangup(
    hangups: Hangups,
    reloader: Arc<wardgate_gateway::serve::reload::Reloader>,
    auditor: wardgate_audit::Auditor,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let mut signals = match hangups.signals {
            Ok(signals) => signals,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot listen for SIGHUP; reload through the admin API instead"
                );
                return;
            }
        };
        while signals.recv().await.is_some() {
            match reloader.prepare().await {
                Ok(prepared) => {
                    let committed = ConfigReloaded {
                        via: ReloadVia::Sighup,
                        result: &Ok(prepared.reloaded().clone()),
                    }
                    .append(&auditor)
                    .await;
                    // Not committed: `prepared` is dropped, and nothing is applied (the
                    // error is logged).
                    if committed.is_ok() {
                        prepared.apply();
                    }
                }
                Err(e) => {
                    // Refused: nothing to apply; a failed commit is logged.
                    let _ = ConfigReloaded {
                        via: ReloadVia::Sighup,
                        result: &Err(e),
                    }
                    .append(&auditor)
                    .await;
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (hangups, reloader, auditor);
}
