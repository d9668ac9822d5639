//! `[engine]`: the in-process llama.cpp engine, validated.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    ConfigError, HumanDuration, MAX_ENGINE_KEEP_ALIVE, MAX_MEMORY_BUDGET_MIB, bounded, duration,
    duration_or_off, positive,
};

// The defaults of `[engine]`, one per field; the doc comments of [`RawEngine`] quote them.
// (The schema limits' are `wardgate_engine::SchemaLimits::DEFAULT`.)

/// Default of `engine.models_dir`, relative to the working directory.
pub const DEFAULT_MODELS_DIR: &str = "models";
/// Default of `engine.slots`.
pub const DEFAULT_SLOTS: u32 = 8;
/// Default of `engine.slot_ctx`.
pub const DEFAULT_SLOT_CTX: u32 = 4096;
/// Default of `engine.batch`.
pub const DEFAULT_BATCH: u32 = 512;
/// Default of `engine.queue`.
pub const DEFAULT_QUEUE: usize = 64;
/// Default of `engine.keep_alive`.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(300);
/// Default of `engine.max_keep_alive`: the engine's own.
pub const DEFAULT_MAX_KEEP_ALIVE: Duration = wardgate_engine::engine::DEFAULT_MAX_KEEP_ALIVE;
/// Default of `engine.fetch_default_model`.
pub const DEFAULT_FETCH_DEFAULT_MODEL: bool = true;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    /// Directory of the model store (GGUF blobs and a manifest). Default `models` (in the
    /// working directory).
    pub models_dir: Option<PathBuf>,
    /// CPU threads for decoding. Default: the cores available to the process.
    pub threads: Option<u32>,
    /// Concurrent sequences per model (continuous batching). Default 8.
    pub slots: Option<u32>,
    /// Context tokens per sequence. Default 4096 (or the model's own, if smaller).
    pub slot_ctx: Option<u32>,
    /// Most tokens per decode step. Default 512; at least `slots`.
    pub batch: Option<u32>,
    /// Requests that may wait for a slot, per model; past it: 503 with Retry-After. Default 64.
    pub queue: Option<usize>,
    /// MiB of model weights that may be loaded at once. Default: three quarters of RAM.
    pub memory_budget_mib: Option<u64>,
    /// How long an idle model stays loaded unless a request says. Default `5m`.
    pub keep_alive: Option<HumanDuration>,
    /// The longest `keep_alive` a request may set; longer values (`1e308`) are clamped to it.
    /// Default `24h`, at most `30d`.
    pub max_keep_alive: Option<HumanDuration>,
    /// Models loaded at start and kept; `/ready` waits for them.
    #[serde(default)]
    pub preload: Vec<String>,
    /// Fetch the default model (SmolLM2-135M-Instruct) when the store is empty. Default true.
    pub fetch_default_model: Option<bool>,
    /// Largest JSON schema (`format`, `response_format`) in bytes. Default 65536, at most
    /// 4194304.
    pub schema_max_bytes: Option<usize>,
    /// Most properties, enum values and alternatives in one schema. Default 256, at most
    /// 10000.
    pub schema_max_properties: Option<usize>,
    /// Deepest nesting of a schema's JSON. Default 32, at most 128.
    pub schema_max_depth: Option<usize>,
    /// Largest `minItems`/`maxItems`/`minLength`/`maxLength` and `{m,n}` in a schema.
    /// Default 1000, at most 100000.
    pub schema_max_repetition: Option<usize>,
    /// Longest a schema's conversion to a grammar may take. Default `2s`, at most `60s`.
    pub schema_timeout: Option<HumanDuration>,
    /// Schema conversions at once (one that overruns counts until it ends). Default 2, at
    /// most 64.
    pub schema_max_concurrent: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EngineSettings {
    pub models_dir: PathBuf,
    pub threads: Option<u32>,
    pub slots: u32,
    pub slot_ctx: u32,
    pub batch: u32,
    pub queue: usize,
    pub memory_budget: Option<u64>,
    pub keep_alive: Duration,
    pub max_keep_alive: Duration,
    pub preload: Vec<String>,
    pub fetch_default_model: bool,
    pub schema: wardgate_engine::SchemaLimits,
}

fn schema_limits(e: &RawEngine) -> Result<wardgate_engine::SchemaLimits, ConfigError> {
    let d = wardgate_engine::SchemaLimits::DEFAULT;
    let timeout = duration(
        "engine.schema_timeout",
        e.schema_timeout.as_deref(),
        d.timeout,
    )?;
    if timeout > Duration::from_secs(60) {
        return Err(ConfigError::new(
            "engine.schema_timeout",
            "must be at most 60s",
        ));
    }
    Ok(wardgate_engine::SchemaLimits {
        max_bytes: bounded(
            "engine.schema_max_bytes",
            e.schema_max_bytes,
            d.max_bytes,
            4 << 20,
        )?,
        max_properties: bounded(
            "engine.schema_max_properties",
            e.schema_max_properties,
            d.max_properties,
            10_000,
        )?,
        max_depth: bounded(
            "engine.schema_max_depth",
            e.schema_max_depth,
            d.max_depth,
            128,
        )?,
        max_repetition: bounded(
            "engine.schema_max_repetition",
            e.schema_max_repetition,
            d.max_repetition as usize,
            100_000,
        )? as u64,
        timeout,
        max_concurrent: bounded(
            "engine.schema_max_concurrent",
            e.schema_max_concurrent,
            d.max_concurrent,
            64,
        )?,
    })
}

/// `[engine]`, validated.
pub(super) fn engine(e: RawEngine) -> Result<EngineSettings, ConfigError> {
    let schema = schema_limits(&e)?;
    Ok(EngineSettings {
        models_dir: e
            .models_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MODELS_DIR)),
        threads: match e.threads {
            Some(0) => {
                return Err(ConfigError::new(
                    "engine.threads",
                    "must be greater than zero",
                ));
            }
            t => t,
        },
        slots: positive(
            "engine.slots",
            e.slots.map(|v| v as usize),
            DEFAULT_SLOTS as usize,
        )? as u32,
        slot_ctx: positive(
            "engine.slot_ctx",
            e.slot_ctx.map(|v| v as usize),
            DEFAULT_SLOT_CTX as usize,
        )? as u32,
        batch: positive(
            "engine.batch",
            e.batch.map(|v| v as usize),
            DEFAULT_BATCH as usize,
        )? as u32,
        queue: positive("engine.queue", e.queue, DEFAULT_QUEUE)?,
        memory_budget: match e.memory_budget_mib {
            Some(0) => {
                return Err(ConfigError::new(
                    "engine.memory_budget_mib",
                    "must be greater than zero",
                ));
            }
            // Checked here, before the shift that would wrap: 16 TiB.
            Some(mib) if mib > MAX_MEMORY_BUDGET_MIB => {
                return Err(ConfigError::new(
                    "engine.memory_budget_mib",
                    format!("must be at most {MAX_MEMORY_BUDGET_MIB}"),
                ));
            }
            m => m.map(|mib| mib << 20),
        },
        keep_alive: duration_or_off(e.keep_alive.as_deref(), DEFAULT_KEEP_ALIVE),
        max_keep_alive: {
            let key = "engine.max_keep_alive";
            let d = duration(key, e.max_keep_alive.as_deref(), DEFAULT_MAX_KEEP_ALIVE)?;
            if d > MAX_ENGINE_KEEP_ALIVE {
                return Err(ConfigError::new(key, "must be at most 30d"));
            }
            d
        },
        preload: e.preload,
        fetch_default_model: e.fetch_default_model.unwrap_or(DEFAULT_FETCH_DEFAULT_MODEL),
        schema,
    })
}
