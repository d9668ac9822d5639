//! `[logging]`: the log's format and filter.

use serde::{Deserialize, Serialize};

use super::words;

/// Default of `logging.format`.
pub const DEFAULT_FORMAT: LogFormat = LogFormat::Text;
/// Default of `logging.level`.
pub const DEFAULT_LEVEL: &str = "info";

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

/// `[logging]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggingSettings {
    pub format: LogFormat,
    /// A tracing filter (`RUST_LOG` syntax).
    pub level: String,
}

/// `[logging]`, validated.
pub(super) fn logging(raw: RawLogging) -> LoggingSettings {
    LoggingSettings {
        format: raw.format.unwrap_or(DEFAULT_FORMAT),
        level: raw.level.unwrap_or_else(|| DEFAULT_LEVEL.to_owned()),
    }
}
