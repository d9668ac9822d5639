//! `[logging]`: the log's format and filter.

use serde::{Deserialize, Serialize};

use super::words;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    /// `text` (default) or `json`.
    pub format: Option<LogFormat>,
    /// A tracing filter such as `info` or `wardgate_gateway=debug`. Default `info`.
    pub level: Option<String>,
}

/// `logging.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum LogFormat {
    Text,
    Json,
}

words!(
    LogFormat,
    "`{}` is not `text` or `json`",
    Text = "text",
    Json = "json"
);
