//! `[storage]`: where the database lives.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default of `storage.sqlite_path`, relative to the working directory.
pub const DEFAULT_SQLITE_PATH: &str = "data/wardgate.db";

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// SQLite database file. Default `data/wardgate.db` (in the working directory).
    pub sqlite_path: Option<PathBuf>,
}

/// `[storage]`, validated: the database file.
pub(super) fn sqlite_path(raw: &RawStorage) -> PathBuf {
    raw.sqlite_path
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SQLITE_PATH))
}
