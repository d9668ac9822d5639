//! The `mock-upstream` binary: flags into a [`MockConfig`], one `listening on http://ADDR`
//! line on stdout, then serve until SIGTERM or ctrl-c.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mock_upstream::{MockConfig, MockServer};

/// A mock Ollama + OpenAI-compatible model server for tests.
#[derive(Parser, Debug)]
#[command(name = "mock-upstream", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port (the line on stdout says which).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Comma-separated model names the server knows; others get a 404.
    #[arg(long, value_delimiter = ',', default_value = "mock-model")]
    models: Vec<String>,
    /// Tokens streamed per reply.
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    /// Milliseconds between two tokens.
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
    /// Milliseconds before the first token (streams send their headers first) or before a
    /// non-streamed reply.
    #[arg(long, default_value_t = 0)]
    first_token_delay_ms: u64,
    /// Milliseconds before any response headers, on every route.
    #[arg(long, default_value_t = 0)]
    headers_delay_ms: u64,
    /// Answer every inference request with this HTTP status and an error body.
    #[arg(long, value_parser = clap::value_parser!(u16).range(100..=999))]
    fail_status: Option<u16>,
    /// Answer the first N inference requests with 500.
    #[arg(long, default_value_t = 0)]
    fail_first: usize,
    /// Stream N tokens, then cut the connection without the final message.
    #[arg(long)]
    drop_after: Option<usize>,
    /// Length of embedding vectors.
    #[arg(long, default_value_t = 8)]
    embedding_dim: usize,
    /// Answer streamed requests whole, as one pretty-printed JSON document.
    #[arg(long)]
    ignore_stream: bool,
    /// Serve at most N inference requests at a time; answer 503 (busy) beyond.
    #[arg(long)]
    max_concurrent: Option<usize>,
}

impl Args {
    fn config(&self) -> MockConfig {
        MockConfig {
            models: self.models.clone(),
            tokens: self.tokens,
            token_delay: Duration::from_millis(self.token_delay_ms),
            first_token_delay: Duration::from_millis(self.first_token_delay_ms),
            headers_delay: Duration::from_millis(self.headers_delay_ms),
            fail_status: self.fail_status,
            fail_first: self.fail_first,
            drop_after: self.drop_after,
            embedding_dim: self.embedding_dim,
            ignore_stream: self.ignore_stream,
            max_concurrent: self.max_concurrent,
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Nothing useful is left to do if stderr itself fails.
            let _ = writeln!(io::stderr().lock(), "mock-upstream: {error}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run() -> io::Result<()> {
    let args = Args::parse();
    let server = MockServer::start_on(args.listen, args.config())
        .await
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on --listen {}: {e}", args.listen),
            )
        })?;
    {
        // Test harnesses read this one line to learn the port.
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "listening on {}", server.url())?;
        stdout.flush()?;
    }
    shutdown_signal().await?;
    server.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn shutdown_signal() -> io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn shutdown_signal() -> io::Result<()> {
    tokio::signal::ctrl_c().await
}
