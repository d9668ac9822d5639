//! `wardgate keys`: create, list, rotate and revoke API keys, each change audited like the admin API's.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use wardgate_gateway::handlers::admin;
use wardgate_gateway::middleware::events::KeyChanged;
use wardgate_store::{KeyStore, NewKeySpec, Role, SqliteStore};

use super::{db_path, env, load_config, out};

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCommand {
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

pub(crate) fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
        .map_err(|e: wardgate_store::StoreError| e.to_string())
}

pub(crate) async fn keys(config: Option<&Path>, command: KeysCommand) -> anyhow::Result<()> {
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
pub(crate) fn cli_actor() -> String {
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
pub(crate) async fn audit_key_change(
    auditor: Option<&wardgate_audit::Auditor>,
    change: KeyChanged<'_>,
) -> anyhow::Result<()> {
    let Some(auditor) = auditor else {
        return Ok(());
    };
    let key_id = change.key().id.clone();
    change.append(auditor, &cli_actor()).await.with_context(|| {
        format!("key {key_id} was changed, but the audit log did not take the event")
    })
}

pub(crate) async fn key_command(
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
