//! `[phi]`: the PHI policy, validated.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use wardgate_phi::CategorySet;

use super::{ConfigError, words};

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

/// The defaults of `[phi]`; the doc comments of [`RawPhi`] quote them.
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

/// The PHI guard (see `phi_guard.rs`). Log lines and error bodies are always redacted; this
/// decides what happens to PHI in prompts.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPhi {
    /// `off` (default), `deidentify` (PHI replaced by tokens before the backend, restored in
    /// the answer) or `block` (refused with 400), for tenants and models without a rule.
    pub mode: Option<PhiMode>,
    /// Categories that make `block` refuse, e.g. `["SSN", "MRN"]`. Default: every category.
    pub block_categories: Option<Vec<String>>,
    /// Lowest detector score counted as PHI, 0 to 1. Default 0.5.
    pub min_score: Option<f32>,
    /// Whether images pass under `block` and `deidentify` (the detector cannot read them).
    /// Default false: a request with an image is refused with 400.
    pub allow_images: Option<bool>,
    /// Rules for tenants, by tenant name.
    #[serde(default)]
    pub tenants: Vec<RawPhiRule>,
    /// Rules for public model names.
    #[serde(default)]
    pub models: Vec<RawPhiRule>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPhiRule {
    /// Tenant or public model name.
    pub name: String,
    /// `off`, `deidentify` or `block`.
    pub mode: PhiMode,
    /// As `phi.block_categories`; default: the top-level list.
    pub block_categories: Option<Vec<String>>,
    /// As `phi.allow_images`; default: the top-level setting.
    pub allow_images: Option<bool>,
}

pub(super) fn phi_categories(key: &str, v: &[String]) -> Result<CategorySet, ConfigError> {
    if v.is_empty() {
        return Err(ConfigError::new(
            key,
            "must name at least one category (leave it out for all)",
        ));
    }
    v.iter().try_fold(CategorySet::empty(), |set, name| {
        name.parse::<wardgate_phi::Category>()
            .map(|c| set.with(c))
            .map_err(|_| {
                let known: Vec<&str> = wardgate_phi::Category::ALL
                    .iter()
                    .map(|c| c.name())
                    .collect();
                ConfigError::new(
                    key,
                    format!(
                        "`{name}` is not a PHI category; known: {}",
                        known.join(", ")
                    ),
                )
            })
    })
}

/// `[phi]`, validated; what it leaves unset is [`PhiPolicy::default`]'s.
pub(super) fn phi_policy(raw: &RawPhi) -> Result<PhiPolicy, ConfigError> {
    let defaults = PhiPolicy::default();
    let block = match &raw.block_categories {
        Some(v) => phi_categories("phi.block_categories", v)?,
        None => defaults.default.block,
    };
    let default = PhiRule {
        mode: raw.mode.unwrap_or(defaults.default.mode),
        block,
        allow_images: raw.allow_images.unwrap_or(defaults.default.allow_images),
    };
    let min_score = raw.min_score.unwrap_or(defaults.min_score);
    if !(0.0..=1.0).contains(&min_score) {
        return Err(ConfigError::new("phi.min_score", "must be between 0 and 1"));
    }
    let rules =
        |what: &str, list: &[RawPhiRule]| -> Result<HashMap<String, PhiRule>, ConfigError> {
            let mut out = HashMap::new();
            for (i, r) in list.iter().enumerate() {
                let key = format!("phi.{what}[{i}]");
                let rule = PhiRule {
                    mode: r.mode,
                    block: match &r.block_categories {
                        Some(v) => phi_categories(&format!("{key}.block_categories"), v)?,
                        None => block,
                    },
                    allow_images: r.allow_images.unwrap_or(default.allow_images),
                };
                if out.insert(r.name.clone(), rule).is_some() {
                    return Err(ConfigError::new(
                        format!("{key}.name"),
                        format!("`{}` has two rules", r.name),
                    ));
                }
            }
            Ok(out)
        };
    Ok(PhiPolicy {
        default,
        tenants: rules("tenants", &raw.tenants)?,
        models: rules("models", &raw.models)?,
        min_score,
    })
}
