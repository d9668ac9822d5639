//! One module per command; what several commands share is here (configuration, the
//! database, the log, printing).

pub mod audit;
pub mod backup;
pub mod keys;
pub mod llm;
pub mod migrate;
pub mod models;
pub mod phi;
pub mod serve;
pub mod telemetry;

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use wardgate_gateway::app::Stores;
use wardgate_gateway::config::LogFormat;
use wardgate_gateway::redact_log::{Configured, RedactingMakeWriter};
use wardgate_gateway::{Config, ConfigError};

/// Variables whose empty value is a setting, not an absence: an empty metrics listener address
/// turns the listener off (docs/METRICS.md). Every other empty `WARDGATE_*` is unset.
const EMPTY_IS_A_VALUE: [&str; 2] = ["WARDGATE_METRICS_LISTEN", "WARDGATE_LLM_METRICS_LISTEN"];

pub(crate) fn env(name: &str) -> Option<String> {
    present(name, std::env::var(name).ok())
}

/// The variable `name` with the raw value `raw`, as the configuration sees it.
fn present(name: &str, raw: Option<String>) -> Option<String> {
    raw.filter(|v| !v.is_empty() || EMPTY_IS_A_VALUE.contains(&name))
}

/// Writes to stdout; the lint against `println!` keeps stray prints out of library code.
pub(crate) fn out(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

pub(crate) fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    Config::load(path, &env)
}

/// The stores the key and audit commands open: the ones `serve` uses, from the same loading
/// and validation of the config file and `WARDGATE_*` (the SQLite file, or PostgreSQL when
/// `storage.url` names it, whose schema must then be this build's). Returns the configuration
/// with them.
pub(crate) async fn open_stores(config: Option<&Path>) -> anyhow::Result<(Config, Stores)> {
    let config = load_config(config)?;
    let stores = Stores::open(&config)
        .await
        .context("cannot open the database")?;
    Ok((config, stores))
}

/// Writes a warning to stderr (the binary's own diagnostics, not a log line).
pub(crate) fn warn(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "wardgate: warning: {text}");
}

/// Starts the log, and the trace exporter when the `OTEL_*` variables name one
/// (`telemetry.rs`; `service` is the default service name); returns the configuration's own
/// text, which the log's redactor leaves readable (the caller adds the address it ends up
/// listening on), and the exporter, to flush at shutdown.
pub(crate) fn init_logging(
    config: &Config,
    service: &str,
) -> anyhow::Result<(Arc<Configured>, Option<telemetry::Traces>)> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    // llama.cpp narrates every load at info level; keep it to errors unless asked for.
    let level = if config.log_level.contains("llama_cpp_2") {
        config.log_level.clone()
    } else {
        format!("{},llama_cpp_2=error", config.log_level)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,llama_cpp_2=error"));
    let configured = Arc::new(Configured::new());
    for text in config.own_text() {
        configured.add(text);
    }
    let traces = telemetry::from_env(&env, service)?;
    let builder = tracing_subscriber::fmt::layer()
        // Colour only where someone reads it as it comes: not in a file, a pipe or a journal.
        .with_ansi(std::io::stderr().is_terminal())
        // Every line passes through the PHI redactor on its way out.
        .with_writer(RedactingMakeWriter::keeping(
            std::io::stderr,
            configured.clone(),
        ));
    // The log sees every event its level lets through, and none of the trace spans (so its
    // lines are the same with traces on or off).
    let filter = filter.and(wardgate_gateway::telemetry::log_filter());
    let log = match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => builder.with_filter(filter).boxed(),
    };
    // The trace layer sees the trace spans and nothing else (no log event).
    let spans = traces
        .as_ref()
        .map(|t| wardgate_gateway::telemetry::layer(t.tracer()));
    wardgate_gateway::redact_log::install_panic_hook();
    tracing_subscriber::registry().with(log).with(spans).init();
    Ok((configured, traces))
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::present;

    #[test]
    fn an_empty_variable_is_unset_except_a_metrics_listener_which_it_turns_off() {
        assert_eq!(present("WARDGATE_DB", Some(String::new())), None);
        assert_eq!(present("WARDGATE_DB", None), None);
        assert_eq!(
            present("WARDGATE_DB", Some("x.db".into())),
            Some("x.db".into())
        );
        for var in ["WARDGATE_METRICS_LISTEN", "WARDGATE_LLM_METRICS_LISTEN"] {
            assert_eq!(present(var, Some(String::new())), Some(String::new()));
            assert_eq!(present(var, None), None);
        }
    }
}
