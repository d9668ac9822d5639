//! `wardgate keys`: create, list, rotate and revoke API keys, each change audited like the admin API's.

use std::path::Path;

use anyhow::Context as _;
use clap::Subcommand;
use wardgate_gateway::Config;
use wardgate_gateway::app::Stores;
use wardgate_gateway::handlers::admin;
use wardgate_gateway::services::keys::{self, Caller, KeyAudit, KeyError, KeyRequest, KeyService};
use wardgate_store::{Database, Role};

use super::{env, open_stores, out, warn};

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// Create a key. The key is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        tenant: String,
        /// Comma-separated models the key may use (default: all). An empty name is refused,
        /// so an empty variable in a script cannot mint a key for every model.
        #[arg(long, value_delimiter = ',', value_parser = model_name)]
        models: Vec<String>,
        /// Lifetime such as `90d` or `12h`, at most 100 years (default: no expiry).
        #[arg(long, value_parser = lifetime)]
        expires: Option<String>,
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
        #[arg(long, value_parser = lifetime)]
        expires: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// One `--models` item: not empty (the admin API refuses an empty name too).
fn model_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() {
        return Err(
            "a model name cannot be empty; leave --models out for a key that may use \
                    every model"
                .into(),
        );
    }
    Ok(name.to_owned())
}

pub(crate) fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
        .map_err(|e: wardgate_store::StoreError| e.to_string())
}

/// `--expires`, refused as it is parsed (before the database is opened) by the key service's
/// own bounds check, which checks it again when the key is made.
fn lifetime(text: &str) -> Result<String, keys::BadKeyLifetime> {
    keys::key_lifetime(text).map(|_| text.to_owned())
}

pub(crate) async fn keys(config: Option<&Path>, command: KeysCommand) -> anyhow::Result<()> {
    let (settings, stores) = open_stores(config).await?;
    match command {
        // A listing changes nothing: no audit log is opened for it.
        KeysCommand::List { tenant, json } => list(&*stores.db, tenant.as_deref(), json).await,
        command => audited(&settings, stores, command).await,
    }
}

/// A change, audited like the admin API's; the log is opened before anything changes, so a
/// log that cannot be written refuses the change instead of missing it.
async fn audited(config: &Config, stores: Stores, command: KeysCommand) -> anyhow::Result<()> {
    let auditor = wardgate_gateway::audit::start(&config.audit, stores.audit)
        .await
        .context("the audit log could not start, so no key was changed")?;
    // Only a rotation or a revocation is announced: a new key is in no cache.
    let announced = matches!(
        command,
        KeysCommand::Revoke { .. } | KeysCommand::Rotate { .. }
    );
    let broadcast = if announced {
        broadcast(config).await
    } else {
        None
    };
    let result = key_command(&*stores.db, command, &auditor, broadcast.as_ref()).await;
    if broadcast.as_ref().is_some_and(|b| !b.announcing()) {
        warn(
            "the change was not announced through Redis; running gateways refuse the key \
             within auth.key_cache_ttl",
        );
    }
    if announced
        && result.is_ok()
        && let Some(note) = unannounced_on_shared_store(config)
    {
        warn(&note);
    }
    auditor
        .shutdown()
        .await
        .context("the audit log did not close cleanly")?;
    result
}

/// The revocation broadcast when Redis is configured, so gateways serving with a cached copy
/// of a key rotated or revoked here drop it at once. A Redis that cannot be reached does not
/// stop the change (revoking a key must not wait on it): it is said, and running gateways
/// refuse the key within their cache's TTL.
async fn broadcast(
    config: &wardgate_gateway::Config,
) -> Option<wardgate_gateway::identity::revocations::Revocations> {
    let wardgate_gateway::config::LimiterBackend::Redis { url, namespace } =
        &config.limiter_backend
    else {
        return None;
    };
    match wardgate_gateway::shared::SharedRedis::connect(url, namespace).await {
        Ok(redis) => Some(wardgate_gateway::identity::revocations::Revocations::publisher(redis)),
        Err(e) => {
            warn(&format!(
                "cannot connect to Redis (rate_limit.redis_url): {e}; a rotation or revocation \
                 is not announced, and running gateways refuse the key within \
                 auth.key_cache_ttl"
            ));
            None
        }
    }
}

/// What to tell whoever revoked or rotated a key in a database several instances share
/// (PostgreSQL) with no Redis to announce it: the other instances keep accepting the key from
/// their credential caches for up to `auth.key_cache_ttl`, and how to make it immediate.
/// `None` where there is nothing to say (Redis configured, SQLite, no cache).
fn unannounced_on_shared_store(config: &Config) -> Option<String> {
    let redis = matches!(
        config.limiter_backend,
        wardgate_gateway::config::LimiterBackend::Redis { .. }
    );
    if redis || config.postgres.is_none() || config.key_cache_ttl.is_zero() {
        return None;
    }
    Some(format!(
        "no Redis is configured, so other running instances on this database are not told: \
         they keep accepting the key until their credential cache entry runs out, up to \
         auth.key_cache_ttl ({} in this configuration). To make a revocation take effect at \
         every instance at once, configure the same Redis for all of them and for this \
         command (rate_limit.backend = \"redis\", rate_limit.redis_url, or \
         WARDGATE_RATE_LIMIT_BACKEND=redis and WARDGATE_REDIS_URL).",
        humantime::format_duration(config.key_cache_ttl)
    ))
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

/// A refused or failed key change as the command line reports it: what was asked, and why.
fn refused(e: KeyError, what: String) -> anyhow::Error {
    match e {
        KeyError::Lifetime(e) => anyhow::anyhow!("{what}: --expires {e}"),
        KeyError::Overlap(e) => anyhow::anyhow!("{what}: --overlap {e}"),
        // The change stands: its message says so.
        e @ KeyError::Unaudited { .. } => e.into(),
        e => anyhow::Error::new(e).context(what),
    }
}

/// Lists keys (never their secrets).
async fn list(store: &dyn Database, tenant: Option<&str>, json: bool) -> anyhow::Result<()> {
    let keys = store.list_keys(tenant).await?;
    let now = time::OffsetDateTime::now_utc();
    if json {
        let v: Vec<_> = keys.iter().map(|k| admin::key_json(k, now)).collect();
        out(&serde_json::Value::Array(v).to_string())?;
    } else {
        out("ID                              TENANT           STATUS   ROLES          MODELS")?;
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
    Ok(())
}

/// Runs a `wardgate keys` command through the key service; a change's event is committed to
/// `auditor` before the command reports it done.
pub(crate) async fn key_command(
    store: &dyn Database,
    command: KeysCommand,
    auditor: &wardgate_audit::Auditor,
    broadcast: Option<&wardgate_gateway::identity::revocations::Revocations>,
) -> anyhow::Result<()> {
    let actor = cli_actor();
    let audit = KeyAudit::Log {
        auditor,
        actor: &actor,
    };
    let service = KeyService::new(store, store).with_broadcast(broadcast);
    match command {
        KeysCommand::Create {
            tenant,
            models,
            expires,
            label,
            roles,
            json,
        } => {
            let req = KeyRequest {
                tenant,
                models,
                roles,
                expires,
                label,
            };
            let new = service
                .create(Caller::Cli, req, audit)
                .await
                .map_err(|e| refused(e, "cannot create the key".into()))?;
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
        KeysCommand::List { tenant, json } => list(store, tenant.as_deref(), json).await?,
        KeysCommand::Rotate {
            id,
            overlap,
            expires,
            json,
        } => {
            let r = service
                .rotate(Caller::Cli, &id, Some(&overlap), expires.as_deref(), audit)
                .await
                .map_err(|e| refused(e, format!("cannot rotate {id}")))?;
            let now = time::OffsetDateTime::now_utc();
            if json {
                let mut v = admin::key_json(&r.new.record, now);
                v["key"] = serde_json::Value::String(r.new.secret.expose().clone());
                v["rotated_from"] = admin::key_json(&r.old, now);
                out(&v.to_string())?;
            } else {
                let until = rfc3339(r.old.expires_at).unwrap_or_else(|| "now".into());
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
            let r = service
                .revoke(Caller::Cli, &id, audit)
                .await
                .map_err(|e| refused(e, format!("cannot revoke {id}")))?;
            if r.already {
                let at = rfc3339(r.key.revoked_at).unwrap_or_default();
                out(&format!(
                    "{id} was revoked already (at {at}); nothing changed"
                ))?;
            } else {
                out(&format!("revoked {id}"))?;
            }
        }
    }
    Ok(())
}

/// A time as RFC 3339, for the command's messages.
fn rfc3339(t: Option<time::OffsetDateTime>) -> Option<String> {
    t?.format(&time::format_description::well_known::Rfc3339)
        .ok()
}
