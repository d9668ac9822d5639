//! `wardgate audit`: export, verify and query the tamper-evident log, and its checkpoint signing key.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use wardgate_audit::{AuditFilter, EventType, Outcome, Timestamp};
use wardgate_gateway::audit::AuditLog;

use super::{load_config, open_stores, out, warn};

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
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
    /// Print matching entries as JSON Lines, oldest first; then, on a shared (PostgreSQL) log,
    /// the matching events queued and not yet sequenced, as `"pending": true` lines without a
    /// sequence number (on every page: paging by `--after-seq` does not reach them).
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
        /// Only entries after this sequence number (for paging: the last `seq` of the page
        /// before). Pending events are listed after them all the same.
        #[arg(long)]
        after_seq: Option<u64>,
        /// At most this many entries (1 to 10000), as the admin API allows; pending events,
        /// listed after them, at most this many too.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
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

pub(crate) fn parse_time(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(text)
        .ok_or_else(|| format!("`{text}` is not an RFC 3339 time like 2025-01-31T00:00:00Z"))
}

pub(crate) async fn audit(config: Option<&Path>, command: AuditCommand) -> anyhow::Result<()> {
    use wardgate_audit::{export, keyfile, verify};
    match command {
        AuditCommand::PublicKey => {
            let config = load_config(config)?;
            // The key `serve` signs with: the environment's wins over the file.
            let key = match &config.audit.signing_key {
                Some(secret) => wardgate_audit::SignerKey::parse(secret.0.expose().trim())
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "${} is not a checkpoint signing key ({e}); set it to the contents \
                             of a key file made by `wardgate audit keygen`",
                            wardgate_gateway::config::audit::SIGNING_KEY_VAR
                        )
                    })?,
                None => {
                    let path = &config.audit.signing_key_file;
                    keyfile::read_signer_key(path).with_context(|| {
                        format!(
                            "cannot read the audit signing key {} (it is created when \
                             `wardgate serve` first starts; a shared log's key is given as ${})",
                            path.display(),
                            wardgate_gateway::config::audit::SIGNING_KEY_VAR
                        )
                    })?
                }
            };
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
            let (_, stores) = open_stores(config).await?;
            let store = stores.audit.reader();
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
                    let summary = export::write_export(&*store, &mut writer).await?;
                    writer.into_inner()?.sync_all()?;
                    summary
                }
                None => {
                    let stdout = std::io::stdout().lock();
                    export::write_export(&*store, std::io::BufWriter::new(stdout)).await?
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
            let mut pending = None;
            let (result, witness_path) = match &export_path {
                Some(p) => {
                    let witness_notes = read_witness(witness_path.as_deref())?;
                    let file = std::fs::File::open(p)
                        .with_context(|| format!("cannot open {}", p.display()))?;
                    let result = verify::verify_export(
                        std::io::BufReader::new(file),
                        keys,
                        &witness_notes,
                        origin,
                    );
                    (result, witness_path)
                }
                None => {
                    let (config, stores) = open_stores(config).await?;
                    // The live log is checked against the witness file the gateway keeps, unless
                    // another is named: without it, a log cut after its last signed checkpoint
                    // still verifies.
                    let witness_path = witness_path.or_else(|| {
                        let configured = &config.audit.witness_file;
                        if configured.exists() {
                            Some(configured.clone())
                        } else {
                            warn(&format!(
                                "no witness file at {} (audit.witness_file): entries cut from \
                                 the end of the log after its last checkpoint cannot be told; \
                                 give --witness where the witness file is kept",
                                configured.display()
                            ));
                            None
                        }
                    });
                    let witness_notes = read_witness(witness_path.as_deref())?;
                    let result =
                        verify::verify_store(&*stores.audit.reader(), keys, &witness_notes, origin)
                            .await;
                    // A shared log's queued events are not in the tree yet: say how many.
                    if let AuditLog::Shared(log) = &stores.audit {
                        pending = Some(log.pending_count().await?);
                    }
                    (result, witness_path)
                }
            };
            // An export is a snapshot: a witness file that the gateway kept appending to holds
            // checkpoints past its end. That cannot be told from an export that was cut, so it
            // fails, saying what to do.
            if let (Some(_), Some(_), Err(verify::VerifyError::Truncated { which, .. })) =
                (&export_path, &witness_path, &result)
                && *which == verify::CheckpointSource::Witness
            {
                warn(
                    "the witness holds a checkpoint past the end of this export: either the \
                     export was cut, or the gateway wrote more after it was taken. Verify the \
                     live log with the witness (leave out --export), or export again and verify \
                     that at once",
                );
            }
            let report = result.context("audit log verification FAILED")?;
            // Entries with no signed checkpoint at all are only as good as whoever wrote the
            // file: a forger who drops every checkpoint can rewrite any entry and its hash. A
            // genuine log always has one (the writer signs one at every start).
            if report.entries > 0 && report.log_checkpoints + report.witness_checkpoints == 0 {
                anyhow::bail!(
                    "audit log verification FAILED: {} entries but no signed checkpoint, so \
                     nothing proves they are the log's (a genuine log has one from its first \
                     start); verify the live log, or an export taken with its checkpoints, and \
                     give --witness where there is one",
                    report.entries
                );
            }
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
            if let Some(pending) = pending {
                out(&format!(
                    "pending: {pending} events queued by the gateways and not yet sequenced into \
                     the log (a running gateway sequences them within seconds)"
                ))?;
            }
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
            let (_, stores) = open_stores(config).await?;
            let filter = AuditFilter {
                actor_id: actor,
                tenant,
                outcome,
                event_type,
                request_id,
                since,
                until,
                after_seq,
                limit: Some(limit),
            };
            let entries = stores.audit.reader().query(&filter).await?;
            for entry in &entries {
                out(&export::entry_line(entry))?;
            }
            // A shared log's events still queued come last, marked pending, on every page:
            // they have no sequence number yet, so no `--after-seq` page is ever "after" them,
            // and a reader paging through the log must still see that they exist. (They were
            // left off a full page and any `--after-seq` page, so a reader who paged saw none.)
            if let AuditLog::Shared(log) = &stores.audit {
                let pending = log.pending(&filter).await?;
                for p in &pending {
                    out(&export::pending_line(p))?;
                }
            }
        }
    }
    Ok(())
}

/// The checkpoints of the witness file at `path` (none without one), warning of lines it could
/// not read.
fn read_witness(path: Option<&std::path::Path>) -> anyhow::Result<Vec<String>> {
    let Some(p) = path else {
        return Ok(Vec::new());
    };
    let read = wardgate_audit::witness::read(p)
        .with_context(|| format!("cannot read the witness file {}", p.display()))?;
    if !read.skipped_lines.is_empty() {
        warn(&format!(
            "{}: skipped unreadable lines {:?}",
            p.display(),
            read.skipped_lines
        ));
    }
    Ok(read.notes)
}
