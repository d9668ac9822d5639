//! `wardgate migrate`: brings the configured database's schema up to this build's and exits.
//!
//! With PostgreSQL this is the deploy step that runs before new instances start (`serve` never
//! migrates there, and refuses a schema that is not exactly its own); migrations are additive,
//! so instances of the previous release keep running meanwhile. A SQLite file, which one
//! process owns, is migrated whenever it is opened; here too.

use std::path::Path;

use anyhow::Context as _;
use wardgate_store::SqliteStore;

use super::{load_config, out};

pub(crate) async fn migrate(config_path: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    if let Some(pg) = &config.postgres {
        let store = wardgate_gateway::app::open_postgres(pg, config.audit.durability).await?;
        let result = store.migrate().await;
        store.close().await;
        let done = result.with_context(|| format!("cannot migrate the database {}", pg.url))?;
        if done.from == done.to {
            out(&format!(
                "{}: schema version {} is up to date; nothing to do",
                pg.url, done.to
            ))?;
        } else {
            out(&format!(
                "{}: schema version {} -> {}",
                pg.url, done.from, done.to
            ))?;
        }
        return Ok(());
    }
    let path = &config.sqlite_path;
    let store = SqliteStore::open_with(path, config.audit.durability)
        .await
        .with_context(|| format!("cannot open the database {}", path.display()))?;
    let version = store.schema_version().await;
    store.close().await;
    out(&format!(
        "{}: SQLite, migrated when opened; schema version {}",
        path.display(),
        version?
    ))?;
    Ok(())
}
