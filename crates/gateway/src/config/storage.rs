//! `[storage]`: where the database lives.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// SQLite database file. Default `./data/wardgate.db`.
    pub sqlite_path: Option<PathBuf>,
}
