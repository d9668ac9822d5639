//! `[phi]`: the PHI policy, validated.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use wardgate_phi::CategorySet;

use super::words;

/// What the guard does with PHI in a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum PhiMode {
    Off,
    Deidentify,
    Block,
}

words!(
    PhiMode,
    "`{}` is not `off`, `deidentify` or `block`",
    Off = "off",
    Deidentify = "deidentify",
    Block = "block",
);

impl PhiMode {
    pub fn parse(s: &str) -> Option<PhiMode> {
        match s {
            "off" => Some(PhiMode::Off),
            "deidentify" => Some(PhiMode::Deidentify),
            "block" => Some(PhiMode::Block),
            _ => None,
        }
    }
}

/// One rule: a mode, for `block` the categories that block, and whether images (which the
/// detector cannot read) may pass under `block` or `deidentify`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhiRule {
    pub mode: PhiMode,
    pub block: CategorySet,
    pub allow_images: bool,
}

/// The configured policy. Compared with `PartialEq` (the maps compare by content, whatever
/// their order), never by `Debug` text.
#[derive(Clone, Debug, PartialEq)]
pub struct PhiPolicy {
    pub default: PhiRule,
    pub tenants: HashMap<String, PhiRule>,
    pub models: HashMap<String, PhiRule>,
    pub min_score: f32,
}

impl Default for PhiPolicy {
    fn default() -> Self {
        PhiPolicy {
            default: PhiRule {
                mode: PhiMode::Off,
                block: CategorySet::all(),
                allow_images: false,
            },
            tenants: HashMap::new(),
            models: HashMap::new(),
            min_score: wardgate_phi::DEFAULT_MIN_SCORE,
        }
    }
}
