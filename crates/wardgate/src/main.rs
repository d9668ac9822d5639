//! The `wardgate` binary: parses the command line, loads configuration, and hands over to the
//! libraries. No logic lives here beyond wiring and printing.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use cmd::audit::AuditCommand;
use cmd::keys::KeysCommand;
use cmd::models::ModelsCommand;
use cmd::phi::PhiCommand;
use cmd::{load_config, out};

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
    /// Apply pending database migrations and exit (the pre-deploy step with PostgreSQL,
    /// where `serve` never migrates).
    Migrate,
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
    /// Copy the SQLite database, online and consistent, to a new file (mode 0600) while the
    /// gateway runs. PostgreSQL: use pg_dump (the command says how).
    Backup {
        /// The file to create (never overwritten; written under a temporary name beside it and
        /// renamed when complete).
        #[arg(long)]
        out: PathBuf,
    },
    /// Validate a config file without starting anything.
    CheckConfig {
        /// The file to check (defaults to --config).
        file: Option<PathBuf>,
        /// Also read what a start reads on this machine: the backends' secrets from the
        /// environment, the TLS pair, CA files and JWT key files. Without it only the file
        /// (and `WARDGATE_*`) is checked, as in a pipeline that has no production secrets.
        #[arg(long)]
        start: bool,
    },
    /// Find or redact PHI (the 18 HIPAA Safe Harbor identifiers) in text; no config needed.
    Phi {
        #[command(subcommand)]
        command: PhiCommand,
    },
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
            // Each cause once (`causes.rs`), not anyhow's `{:#}`, which repeats a cause that
            // its parent's text names.
            let e: &(dyn std::error::Error + 'static) = &*e;
            eprintln!("wardgate: {}", wardgate_gateway::causes::Causes(e));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { file, start } => {
            let file = file.or(cli.config).context("give a config file to check")?;
            let c = load_config(Some(&file))?;
            if start {
                wardgate_gateway::app::check(&c).await?;
            }
            out(&format!(
                "{}: ok ({} backends, {} models{})",
                file.display(),
                c.backends.len(),
                c.models.len(),
                if start {
                    "; what a start reads is there"
                } else {
                    "; the file only: --start also reads the secrets and files a start needs"
                }
            ))?;
            Ok(())
        }
        Command::Keys { command } => cmd::keys::keys(cli.config.as_deref(), command).await,
        Command::Audit { command } => cmd::audit::audit(cli.config.as_deref(), command).await,
        Command::Serve => cmd::serve::serve(cli.config.as_deref()).await,
        Command::Migrate => cmd::migrate::migrate(cli.config.as_deref()).await,
        Command::Backup { out } => cmd::backup::backup(cli.config.as_deref(), out).await,
        Command::Llm => cmd::llm::llm(cli.config.as_deref()).await,
        Command::Models { command } => cmd::models::models(cli.config.as_deref(), command).await,
        Command::Phi { command } => cmd::phi::phi(command),
    }
}
