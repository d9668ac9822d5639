//! `wardgate backup`: an online, consistent copy of the SQLite database while the gateway runs
//! (`wardgate_store::sqlite::backup`); PostgreSQL is backed up with `pg_dump`, which this
//! command names and never runs.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use wardgate_gateway::config::audit::SIGNING_KEY_VAR;

use super::{load_config, out};

pub(crate) async fn backup(config_path: Option<&Path>, to: PathBuf) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    if let Some(pg) = &config.postgres {
        anyhow::bail!(
            "the database is PostgreSQL ({}): `wardgate backup` copies a SQLite database only. \
             Back PostgreSQL up with pg_dump, which takes a consistent snapshot while the \
             gateways run: pg_dump --format=custom --file=wardgate-$(date -u \
             +%Y%m%dT%H%M%SZ).dump \"$WARDGATE_DATABASE_URL\" (restore and check: \
             docs/operations/backup-restore.md)",
            pg.url
        );
    }
    let db = config.sqlite_path.clone();
    let done = tokio::task::spawn_blocking({
        let (db, to) = (db.clone(), to.clone());
        move || wardgate_store::sqlite::backup::backup(&db, &to)
    })
    .await
    .context("the backup task failed")??;
    let checkpoint = match &done.checkpoint {
        Some((size, root)) => format!("last signed checkpoint at size {size}, root {root}"),
        None => "no signed checkpoint yet".to_owned(),
    };
    let key = match config.audit.signing_key {
        Some(_) => format!("the audit signing key (${SIGNING_KEY_VAR}), from your secret store"),
        None => format!(
            "the audit signing key {} (a secret: keep it apart from this copy, encrypted)",
            config.audit.signing_key_file.display()
        ),
    };
    out(&format!(
        "backed up {} to {} ({} bytes, owner-only); audit log: {} entries, {checkpoint}\n\
         not in this file, kept as well:\n\
         - {key}\n\
         - the config file and the secrets it names\n\
         - the witness file {} stays where it is; a witness copied before this backup restores \
         with it, one copied after holds later checkpoints and is refused with it \
         (docs/operations/backup-restore.md)",
        db.display(),
        done.path.display(),
        done.bytes,
        done.audit_entries,
        config.audit.witness_file.display(),
    ))?;
    Ok(())
}
