//! The online backup of a SQLite database: one consistent, self-contained copy of the file
//! while `wardgate serve` keeps writing to it (`wardgate backup`).
//!
//! Why `VACUUM INTO` from a connection of its own: it copies the database as one read
//! transaction sees it, so the copy holds every commit up to one moment and none after (WAL
//! lets the gateway's writer go on meanwhile), and it writes a single file with no `-wal`
//! beside it, which a plain copy of a live database cannot promise. The audit filter index
//! (`<database>-audit-index`) is not copied: it is derived, and rebuilt from the log when the
//! restored file is opened.
//!
//! The copy is written under a temporary name beside the target, made owner-only before SQLite
//! writes to it (the database holds key hashes and the audit log), checked, flushed, and only
//! then renamed: a failed or interrupted backup never leaves a partial file under the final
//! name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _};

/// How long the copy's read transaction waits for a lock (the writer's checkpoint, say).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The copy's path (the target given).
    pub path: PathBuf,
    /// The copy's size in bytes.
    pub bytes: u64,
    /// Audit log entries in the copy.
    pub audit_entries: u64,
    /// The latest signed checkpoint in the copy: its tree size and root (hex).
    pub checkpoint: Option<(u64, String)>,
}

/// Why a backup failed; each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "there is no database at {0} to back up: check storage.sqlite_path (WARDGATE_DB) and the \
         directory the command runs in"
    )]
    NoDatabase(PathBuf),
    #[error(
        "{0} exists: a backup never overwrites a file; give a new name (a timestamp in it, say) \
         or move the old one away first"
    )]
    Exists(PathBuf),
    #[error("cannot create the backup file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot copy the database {db}: {source}")]
    Copy {
        db: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the copy does not check out ({why}); nothing was written to {path}")]
    Check { path: PathBuf, why: String },
    #[error("cannot put the copy in place as {path}: {source}")]
    Finish {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Copies the SQLite database at `db` to a new file `to` (see the module comment). Blocking:
/// run it off the async runtime.
pub fn backup(db: &Path, to: &Path) -> Result<Backup, BackupError> {
    // A missing file would be created by opening it, as an empty database: never back that up.
    if !db.is_file() {
        return Err(BackupError::NoDatabase(db.to_owned()));
    }
    if to.symlink_metadata().is_ok() {
        return Err(BackupError::Exists(to.to_owned()));
    }
    let partial = partial_name(to);
    create_private(&partial).map_err(|source| BackupError::Create {
        path: partial.clone(),
        source,
    })?;
    let result = copy_and_check(db, &partial, to);
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// The temporary name beside `to`: visible (a leftover from a killed run is seen and deleted,
/// not kept unnoticed) and this process's own.
fn partial_name(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_owned();
    name.push(format!(".partial-{}", std::process::id()));
    to.with_file_name(name)
}

/// Creates `path`, empty and owner-only; `VACUUM INTO` accepts an empty file and keeps its mode.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

fn copy_and_check(db: &Path, partial: &Path, to: &Path) -> Result<Backup, BackupError> {
    let copy_error = |source| BackupError::Copy {
        db: db.to_owned(),
        source,
    };
    // Read-only: the backup takes a read transaction and writes nothing to the live database.
    let source = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(copy_error)?;
    source.busy_timeout(BUSY_TIMEOUT).map_err(copy_error)?;
    let partial_text = partial.to_str().ok_or_else(|| BackupError::Create {
        path: partial.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path is not UTF-8, which SQLite needs",
        ),
    })?;
    source
        .execute("VACUUM INTO ?1", [partial_text])
        .map_err(copy_error)?;
    drop(source);

    let (audit_entries, checkpoint) = check(partial).map_err(|why| BackupError::Check {
        path: to.to_owned(),
        why,
    })?;
    let finish = |source| BackupError::Finish {
        path: to.to_owned(),
        source,
    };
    let file = std::fs::File::open(partial).map_err(finish)?;
    file.sync_all().map_err(finish)?;
    let bytes = file.metadata().map_err(finish)?.len();
    drop(file);
    // Checked once at the start; checked again here so that a file made meanwhile under the
    // name is not replaced (what is left is the moment between this check and the rename).
    if to.symlink_metadata().is_ok() {
        return Err(BackupError::Exists(to.to_owned()));
    }
    std::fs::rename(partial, to).map_err(finish)?;
    // The rename is durable once the directory is flushed.
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(finish)?;
    }
    Ok(Backup {
        path: to.to_owned(),
        bytes,
        audit_entries,
        checkpoint,
    })
}

/// Makes the copy a rollback-journal database (no `-wal` or `-shm` is ever made beside it when
/// it is read; a gateway that opens the restored file switches it back to WAL), checks its
/// structure, and reads the audit log's size and latest checkpoint.
fn check(path: &Path) -> Result<(u64, Option<(u64, String)>), String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(format!("its journal mode stayed {mode}"));
    }
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if verdict != "ok" {
        return Err(format!("quick_check: {verdict}"));
    }
    let entries: i64 = conn
        .query_row(super::audit::NEXT_SEQ_SQL, [], |r| r.get(0))
        .map_err(|e| format!("not a wardgate database? {e}"))?;
    let checkpoint: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT tree_size, root_hash FROM audit_checkpoints \
             ORDER BY tree_size DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| e.to_string())?;
    conn.close().map_err(|(_, e)| e.to_string())?;
    let entries = u64::try_from(entries).map_err(|e| e.to_string())?;
    let checkpoint = checkpoint
        .map(|(size, root)| u64::try_from(size).map(|size| (size, hex::encode(root))))
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok((entries, checkpoint))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::{KeyStore as _, NewKeySpec, SqliteStore};

    /// A copy taken from an open store holds what was committed, is owner-only, has no `-wal`
    /// beside it, and opens as a store again.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_backup_of_an_open_store_is_one_private_file_that_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("live.db");
        let store = SqliteStore::open(&db).await.unwrap();
        let key = store
            .create_key(NewKeySpec {
                tenant: "acme".into(),
                models: Vec::new(),
                roles: Vec::new(),
                expires_at: None,
                label: None,
            })
            .await
            .unwrap()
            .record
            .id;
        let to = dir.path().join("copy.db");
        let (db2, to2) = (db.clone(), to.clone());
        let done = tokio::task::spawn_blocking(move || backup(&db2, &to2))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.path, to);
        assert_eq!(done.bytes, std::fs::metadata(&to).unwrap().len());
        assert_eq!(done.audit_entries, 0);
        assert_eq!(done.checkpoint, None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&to).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("copy.db"))
            .collect();
        assert_eq!(names, ["copy.db"]);
        store.close().await;

        let restored = SqliteStore::open(&to).await.unwrap();
        assert!(restored.get_key(&key).await.unwrap().is_some());
        restored.close().await;
    }

    /// An existing target is never replaced, and a missing database is not created by a backup.
    #[test]
    fn refuses_an_existing_target_and_a_missing_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("live.db");
        let to = dir.path().join("copy.db");
        let err = backup(&db, &to).unwrap_err();
        assert!(
            matches!(err, BackupError::NoDatabase(ref p) if *p == db),
            "{err}"
        );
        assert!(!db.exists() && !to.exists());

        Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        std::fs::write(&to, b"an older backup").unwrap();
        let err = backup(&db, &to).unwrap_err();
        assert!(
            matches!(err, BackupError::Exists(ref p) if *p == to),
            "{err}"
        );
        assert_eq!(std::fs::read(&to).unwrap(), b"an older backup");
    }

    /// A copy that fails its check (here: not a wardgate database) leaves nothing behind.
    #[test]
    fn a_failed_backup_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("other.db");
        Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let to = dir.path().join("copy.db");
        let err = backup(&db, &to).unwrap_err();
        assert!(matches!(err, BackupError::Check { .. }), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("other.db")]);
    }
}
