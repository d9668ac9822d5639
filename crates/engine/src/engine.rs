//! The engine: loads models from the store (each with its own decode loop), keeps them for
//! their keep-alive, refuses loads over the memory budget, and turns the gateway's neutral
//! requests into prompts, jobs and event streams.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;
use wardgate_api::canonical::{
    ChatRequest, CompletionRequest, EmbedRequest, EmbedResponse, Message, ResponseFormat, Role,
    Sampling,
};

use crate::embed::{Embedder, Pooling};

use crate::scheduler::{Job, Output, SamplingParams, Scheduler, SchedulerConfig, SchedulerError};
use crate::schema::{SchemaConverter, SchemaLimits};
use crate::store::{ModelEntry, ModelStore, StoreError, normalize_name};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub models_dir: PathBuf,
    /// CPU threads for decoding; default: the cores available to this process.
    pub threads: i32,
    /// Concurrent sequences per model.
    pub slots: u32,
    /// Context tokens per sequence.
    pub slot_ctx: u32,
    /// Most tokens per decode call.
    pub batch: u32,
    /// Requests waiting beyond the slots, per model.
    pub queue: usize,
    /// Bytes of model weights that may be loaded at once.
    pub memory_budget: u64,
    /// How long an idle model stays loaded when a request does not say.
    pub keep_alive: Duration,
    /// Most tokens one request may generate.
    pub max_tokens: u32,
    /// Bounds on JSON schemas for constrained output and on their conversion.
    pub schema: SchemaLimits,
    /// The longest keep-alive a request may set (longer values are clamped).
    pub max_keep_alive: Duration,
}

impl EngineConfig {
    pub fn new(models_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            models_dir: models_dir.into(),
            threads: std::thread::available_parallelism()
                .map(|n| n.get() as i32)
                .unwrap_or(1),
            slots: 8,
            slot_ctx: 4096,
            batch: 512,
            queue: 64,
            memory_budget: default_memory_budget(),
            keep_alive: Duration::from_secs(300),
            max_tokens: 4096,
            schema: SchemaLimits::DEFAULT,
            max_keep_alive: DEFAULT_MAX_KEEP_ALIVE,
        }
    }
}

/// Three quarters of physical memory, read from /proc/meminfo; 8 GiB where that is missing.
fn default_memory_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024 / 4 * 3)
        .unwrap_or(8 << 30)
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot load model `{name}`: {reason}")]
    Load { name: String, reason: String },
    #[error(
        "model `{name}` needs {need} MiB but only {free} MiB of the {budget} MiB memory budget are free; unload a model or raise the budget"
    )]
    OverBudget {
        name: String,
        need: u64,
        free: u64,
        budget: u64,
    },
    #[error("server busy, please try again: the request queue is full")]
    Busy,
    #[error("the prompt is too long: {tokens} tokens, the model takes at most {limit}")]
    ContextLength { tokens: usize, limit: u32 },
    #[error("{0}")]
    BadRequest(String),
    #[error("the model stopped")]
    Stopped,
}

/// The llama.cpp backend, initialised once per process (llama.cpp allows one). Public for
/// benchmarks that compare the engine with raw llama.cpp in the same process.
pub fn llama_backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp's own log lines go to tracing (target `llama-cpp-2`), where the
            // subscriber's filter decides; its errors (why a model did not load) stay visible.
            // What it prints to stderr directly (grammars it refused, schema warnings) goes
            // to tracing too, and so through the redacting writer.
            crate::native_log::route_c_stderr();
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Load {
            name: String::new(),
            reason: e.clone(),
        })
}

/// What runs a loaded model: a generation loop, or an embedding worker for encoder models.
#[derive(Debug)]
enum Worker {
    Generate(Scheduler),
    Embed(Embedder),
}

/// Architectures llama.cpp runs as embedding (encoder) models.
pub(crate) fn is_embedding_family(family: &str) -> bool {
    matches!(
        family,
        "bert" | "nomic-bert" | "jina-bert-v2" | "modern-bert"
    )
}

/// A model in memory with its decode loop.
pub struct Loaded {
    pub name: String,
    pub entry: ModelEntry,
    model: Arc<LlamaModel>,
    worker: Worker,
    template: Option<LlamaChatTemplate>,
    /// A generation model's embedding worker, started by its first embeddings request (a
    /// context of its own, so embeddings never take a generation slot).
    decoder_embedder: tokio::sync::OnceCell<Embedder>,
    /// When an idle model is unloaded; `None`: never.
    expires: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").field("name", &self.name).finish()
    }
}

impl Loaded {
    pub fn expires_at(&self) -> Option<Instant> {
        *self.expires.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn context_length(&self) -> u32 {
        match &self.worker {
            Worker::Generate(s) => s.config().slot_ctx,
            Worker::Embed(e) => e.n_ctx,
        }
    }

    /// Whether this is an embedding model (no generation).
    pub fn is_embedding_model(&self) -> bool {
        matches!(self.worker, Worker::Embed(_))
    }

    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// The model's queue, slots and KV cache use (all zero for an embedding model, which has
    /// no slots).
    pub fn stats(&self) -> crate::scheduler::SchedulerStats {
        match &self.worker {
            Worker::Generate(s) => s.stats(),
            Worker::Embed(_) => crate::scheduler::SchedulerStats::default(),
        }
    }
}

/// The engine's own metrics (docs/METRICS.md), recorded through the `metrics` facade: a no-op
/// unless the process installed a recorder.
pub mod metrics {
    /// Histogram of successful model loads, seconds, by `model`.
    pub const MODEL_LOAD: &str = "wardgate_engine_model_load_seconds";
    /// Counter of failed model loads, by `model`.
    pub const MODEL_LOAD_FAILURES: &str = "wardgate_engine_model_load_failures_total";
}

/// A running generation: text pieces, then a summary.
pub type Generation = UnboundedReceiver<Output>;

pub struct Engine {
    config: EngineConfig,
    store: ModelStore,
    loaded: Mutex<HashMap<String, Arc<Loaded>>>,
    /// Loads are serialised: two at once could both pass the budget check.
    load_lock: tokio::sync::Mutex<()>,
    schemas: SchemaConverter,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("models_dir", &self.config.models_dir)
            .finish()
    }
}

/// How long a request wants the model kept: Ollama's `keep_alive` (a duration string or
/// seconds; 0 unloads after the request; negative keeps forever).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    For(Duration),
    Forever,
}

/// The longest keep-alive a request may ask for when the configuration does not say
/// (`engine.max_keep_alive`); longer values are clamped to it.
pub const DEFAULT_MAX_KEEP_ALIVE: Duration = Duration::from_secs(24 * 3600);

/// Parses a request's `keep_alive` (Ollama's rules), clamped to `max`: any number or string
/// gives a bounded duration, "forever" or a 400-type error, never a panic (untrusted floats
/// such as `1e308` must not reach `Duration::from_secs_f64`).
pub fn parse_keep_alive(
    v: Option<&Value>,
    default: Duration,
    max: Duration,
) -> Result<KeepAlive, EngineError> {
    let bad = || {
        EngineError::BadRequest(
            "keep_alive must be a duration like \"5m\" or a number of seconds".into(),
        )
    };
    match v {
        None | Some(Value::Null) => Ok(KeepAlive::For(default.min(max))),
        Some(Value::Number(n)) => {
            let secs = n.as_f64().filter(|s| s.is_finite()).ok_or_else(bad)?;
            if secs < 0.0 {
                Ok(KeepAlive::Forever)
            } else {
                Ok(KeepAlive::For(bounded_secs(secs, max)))
            }
        }
        Some(Value::String(s)) => {
            let s = s.trim();
            if let Some(rest) = s.strip_prefix('-') {
                humantime_or_secs(rest, max).ok_or_else(bad)?;
                return Ok(KeepAlive::Forever);
            }
            humantime_or_secs(s, max)
                .map(KeepAlive::For)
                .ok_or_else(bad)
        }
        Some(_) => Err(bad()),
    }
}

/// Seconds as a duration, at most `max`; `secs` must be finite and not negative.
fn bounded_secs(secs: f64, max: Duration) -> Duration {
    Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max))
}

fn humantime_or_secs(s: &str, max: Duration) -> Option<Duration> {
    if let Ok(secs) = s.parse::<f64>() {
        // `inf` and `NaN` parse as floats; they are not durations.
        return (secs.is_finite() && secs >= 0.0).then(|| bounded_secs(secs, max));
    }
    // Go durations ("1h30m", "10s", "500ms") are a subset of what this parser takes.
    parse_go_duration(s, max)
}

fn parse_go_duration(s: &str, max: Duration) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        let part = value * scale;
        if !part.is_finite() {
            return None;
        }
        total = total.saturating_add(bounded_secs(part, max)).min(max);
        rest = tail;
    }
    Some(total)
}

impl Engine {
    pub fn new(config: EngineConfig) -> Result<Engine, EngineError> {
        let store = ModelStore::open(&config.models_dir)?;
        llama_backend()?;
        Ok(Engine {
            schemas: SchemaConverter::new(config.schema),
            config,
            store,
            loaded: Mutex::new(HashMap::new()),
            load_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// A request's keep-alive under this engine's default and maximum.
    pub fn keep_alive(&self, v: Option<&Value>) -> Result<KeepAlive, EngineError> {
        parse_keep_alive(v, self.config.keep_alive, self.config.max_keep_alive)
    }

    pub fn store(&self) -> &ModelStore {
        &self.store
    }

    fn loaded_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Loaded>>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Models in memory now.
    pub fn running(&self) -> Vec<Arc<Loaded>> {
        let mut v: Vec<_> = self.loaded_map().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Loads a model if it is not loaded, and sets how long it stays.
    pub async fn load(&self, name: &str, keep: KeepAlive) -> Result<Arc<Loaded>, EngineError> {
        let name = normalize_name(name)?;
        if let Some(l) = self.loaded_map().get(&name).cloned() {
            self.touch(&l, keep);
            return Ok(l);
        }
        let _guard = self.load_lock.lock().await;
        if let Some(l) = self.loaded_map().get(&name).cloned() {
            self.touch(&l, keep);
            return Ok(l);
        }
        self.evict_expired();
        let entry = self.store.get(&name)?;
        let used: u64 = self.loaded_map().values().map(|l| l.entry.size).sum();
        let budget = self.config.memory_budget;
        if used + entry.size > budget {
            return Err(EngineError::OverBudget {
                name,
                need: entry.size >> 20,
                free: budget.saturating_sub(used) >> 20,
                budget: budget >> 20,
            });
        }
        let path = self.store.path_of(&entry);
        let sched_config = SchedulerConfig {
            slots: self.config.slots,
            slot_ctx: self.config.slot_ctx.min(
                entry
                    .context_length
                    .unwrap_or(u64::MAX)
                    .min(u64::from(u32::MAX)) as u32,
            ),
            batch: self.config.batch,
            queue: self.config.queue,
            threads: self.config.threads,
        };
        let n = name.clone();
        let started = Instant::now();
        let loading = tokio::task::spawn_blocking(move || -> Result<Loaded, EngineError> {
            let backend = llama_backend()?;
            let params = LlamaModelParams::default();
            let model = LlamaModel::load_from_file(backend, &path, &params).map_err(|e| {
                EngineError::Load {
                    name: n.clone(),
                    reason: e.to_string(),
                }
            })?;
            let model = Arc::new(model);
            let template = model.chat_template(None).ok();
            let load_err = |reason: String| EngineError::Load {
                name: n.clone(),
                reason,
            };
            let worker = if is_embedding_family(&entry.family) {
                let n_ctx = sched_config.slot_ctx.min(model.n_ctx_train().max(1));
                Worker::Embed(
                    Embedder::start(
                        backend,
                        model.clone(),
                        n_ctx,
                        n_ctx,
                        Pooling::Model,
                        sched_config.threads,
                        sched_config.queue,
                    )
                    .map_err(load_err)?,
                )
            } else {
                Worker::Generate(
                    Scheduler::start(backend, model.clone(), sched_config)
                        .map_err(|e| load_err(e.to_string()))?,
                )
            };
            Ok(Loaded {
                name: n,
                entry,
                model,
                worker,
                template,
                decoder_embedder: tokio::sync::OnceCell::new(),
                expires: Mutex::new(None),
            })
        })
        .await
        .map_err(|e| EngineError::Load {
            name: name.clone(),
            reason: e.to_string(),
        })
        .and_then(|r| r);
        let loaded = match loading {
            Ok(l) => {
                ::metrics::histogram!(metrics::MODEL_LOAD, "model" => name.clone())
                    .record(started.elapsed().as_secs_f64());
                l
            }
            Err(e) => {
                ::metrics::counter!(metrics::MODEL_LOAD_FAILURES, "model" => name.clone())
                    .increment(1);
                return Err(e);
            }
        };
        let loaded = Arc::new(loaded);
        self.touch(&loaded, keep);
        self.loaded_map().insert(name, loaded.clone());
        Ok(loaded)
    }

    fn touch(&self, l: &Loaded, keep: KeepAlive) {
        let mut e = l.expires.lock().unwrap_or_else(|e| e.into_inner());
        *e = match keep {
            KeepAlive::Forever => None,
            KeepAlive::For(d) => Some(Instant::now() + d),
        };
    }

    /// Drops models whose keep-alive has passed. Their decode loops end once the last
    /// in-flight request holding them finishes.
    pub fn evict_expired(&self) {
        let now = Instant::now();
        self.loaded_map()
            .retain(|_, l| l.expires_at().is_none_or(|t| t > now));
    }

    /// Unloads a model now.
    pub fn unload(&self, name: &str) -> bool {
        normalize_name(name)
            .map(|n| self.loaded_map().remove(&n).is_some())
            .unwrap_or(false)
    }

    /// Applies a request's keep-alive after it completes: `0` unloads.
    pub fn release(&self, l: &Loaded, keep: KeepAlive) {
        match keep {
            KeepAlive::For(d) if d.is_zero() => {
                self.unload(&l.name);
            }
            other => self.touch(l, other),
        }
    }

    /// Formats a chat with the model's template (llama.cpp's built-in implementations), or,
    /// for a model without one (a base model), as plain `role: content` lines.
    pub fn render_chat(&self, l: &Loaded, messages: &[Message]) -> Result<String, EngineError> {
        if let Some(t) = &l.template {
            let msgs = messages
                .iter()
                .map(|m| LlamaChatMessage::new(m.role.as_str().to_owned(), m.content.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| EngineError::BadRequest("messages must not contain NUL".into()))?;
            if let Ok(p) = l.model.apply_chat_template(t, &msgs, true) {
                return Ok(p);
            }
        }
        let mut p = String::new();
        for m in messages {
            let role = match m.role {
                Role::System => "System",
                Role::User => "User",
                Role::Assistant => "Assistant",
                Role::Tool => "Tool",
            };
            p.push_str(role);
            p.push_str(": ");
            p.push_str(&m.content);
            p.push('\n');
        }
        p.push_str("Assistant:");
        Ok(p)
    }

    /// The grammar a format asks for. A schema is checked against the bounds and converted
    /// off the async workers (see [`crate::schema`]); this runs before the model is loaded, so
    /// a refused schema costs no load.
    pub async fn grammar(&self, format: &ResponseFormat) -> Result<Option<String>, EngineError> {
        match format {
            ResponseFormat::Text => Ok(None),
            ResponseFormat::Json => Ok(Some(JSON_GRAMMAR.to_owned())),
            ResponseFormat::JsonSchema { schema, .. } => {
                self.schemas.grammar(schema.get()).await.map(Some)
            }
        }
    }

    fn job(
        &self,
        l: &Loaded,
        prompt: &str,
        sampling: &Sampling,
        grammar: Option<String>,
        fairness: Option<&str>,
    ) -> Result<(Job, Generation), EngineError> {
        // As llama.cpp's server does: the vocabulary decides about BOS, and special tokens
        // written by the chat template (`<|im_start|>`) are parsed as such.
        let tokens = l.model.vocab().tokenize(prompt.as_bytes(), true, true);
        if tokens.is_empty() {
            return Err(EngineError::BadRequest("the prompt is empty".into()));
        }
        let limit = l.context_length();
        if tokens.len() as u32 >= limit {
            return Err(EngineError::ContextLength {
                tokens: tokens.len(),
                limit: limit.saturating_sub(1),
            });
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let d = SamplingParams::default();
        // Untrusted floats are clamped to finite ranges far beyond any useful value: an `f64`
        // such as 1e308 becomes an infinite `f32`, and infinite penalties turn every logit
        // into ±inf, whose softmax is NaN.
        let f = |v: Option<f64>, default: f32, lo: f32, hi: f32| {
            v.map_or(default, |v| (v as f32).clamp(lo, hi))
        };
        let params = SamplingParams {
            temperature: f(sampling.temperature, d.temperature, -1.0, 100.0),
            top_k: sampling
                .top_k
                .map_or(d.top_k, |v| v.min(i32::MAX as u32) as i32),
            top_p: f(sampling.top_p, d.top_p, 0.0, 1.0),
            min_p: f(sampling.min_p, d.min_p, 0.0, 1.0),
            repeat_penalty: f(sampling.repeat_penalty, d.repeat_penalty, 0.0, 100.0),
            presence_penalty: f(sampling.presence_penalty, 0.0, -100.0, 100.0),
            frequency_penalty: f(sampling.frequency_penalty, 0.0, -100.0, 100.0),
            seed: sampling
                .seed
                .map_or(rand_seed(), |s| (s as u64 & 0xFFFF_FFFF) as u32),
            ..d
        };
        let max_tokens = sampling
            .max_tokens
            .unwrap_or(self.config.max_tokens)
            .min(self.config.max_tokens)
            .max(1);
        Ok((
            Job {
                tokens,
                params,
                grammar,
                max_tokens,
                stop: sampling.stop.clone(),
                fairness: fairness.unwrap_or_default().to_owned(),
                tx,
            },
            rx,
        ))
    }

    fn submit(&self, l: &Loaded, job: Job) -> Result<(), EngineError> {
        let Worker::Generate(scheduler) = &l.worker else {
            return Err(EngineError::BadRequest(format!(
                "\"{}\" is an embedding model and does not generate text",
                l.name
            )));
        };
        scheduler.submit(job).map_err(|e| match e {
            SchedulerError::QueueFull => EngineError::Busy,
            SchedulerError::Stopped | SchedulerError::Context(_) => EngineError::Stopped,
        })
    }

    /// Embeds each input; vectors are L2-normalised (again after truncation to `dimensions`).
    /// An embedding model pools as its metadata says; a generation model is embedded as Ollama
    /// does, by pooling its hidden states (see [`Pooling::for_decoder`]). Inputs longer than
    /// the context are truncated unless the request says `truncate: false`.
    pub async fn embed(&self, req: &EmbedRequest) -> Result<EmbedResponse, EngineError> {
        let keep = self.keep_alive(req.keep_alive.as_ref())?;
        let l = self.load(&req.model, keep).await?;
        let embedder = match &l.worker {
            Worker::Embed(embedder) => embedder,
            Worker::Generate(scheduler) => {
                self.decoder_embedder(&l, scheduler.config().slot_ctx)
                    .await?
            }
        };
        let limit = embedder.n_ctx as usize;
        let mut inputs = Vec::with_capacity(req.input.len());
        let mut prompt_tokens = 0u64;
        for text in &req.input {
            let mut tokens = l.model.vocab().tokenize(text.as_bytes(), true, false);
            if tokens.len() > limit {
                if req.truncate == Some(false) {
                    return Err(EngineError::ContextLength {
                        tokens: tokens.len(),
                        limit: embedder.n_ctx,
                    });
                }
                tokens.truncate(limit);
            }
            prompt_tokens += tokens.len() as u64;
            inputs.push(tokens);
        }
        let mut vectors = embedder.embed(inputs).await.map_err(|e| match e {
            None => EngineError::Busy,
            Some(reason) => EngineError::Load {
                name: l.name.clone(),
                reason,
            },
        })?;
        if let Some(d) = req.dimensions.filter(|d| *d > 0) {
            for v in vectors.iter_mut() {
                v.truncate(d as usize);
                crate::embed::normalize(v);
            }
        }
        self.release(&l, keep);
        Ok(EmbedResponse {
            embeddings: vectors,
            prompt_tokens,
        })
    }

    /// A generation model's embedding worker, started on first use with the bounds an
    /// embedding model gets: inputs of at most the per-request context, decoded a batch at a
    /// time.
    async fn decoder_embedder<'a>(
        &self,
        l: &'a Loaded,
        slot_ctx: u32,
    ) -> Result<&'a Embedder, EngineError> {
        let start = || async {
            let backend = llama_backend()?;
            let model = l.model.clone();
            let n_ctx = slot_ctx.min(model.n_ctx_train().max(1));
            let (batch, threads, queue) =
                (self.config.batch, self.config.threads, self.config.queue);
            tokio::task::spawn_blocking(move || {
                let pooling = Pooling::for_decoder(&model);
                Embedder::start(backend, model, n_ctx, batch, pooling, threads, queue)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|started| started)
            .map_err(|reason| EngineError::Load {
                name: l.name.clone(),
                reason,
            })
        };
        l.decoder_embedder.get_or_try_init(start).await
    }

    /// Starts a chat generation.
    pub async fn chat(&self, req: &ChatRequest) -> Result<(Arc<Loaded>, Generation), EngineError> {
        let keep = self.keep_alive(req.keep_alive.as_ref())?;
        let grammar = self.grammar(&req.format).await?;
        let l = self.load(&req.model, keep).await?;
        let prompt = self.render_chat(&l, &req.messages)?;
        let (job, rx) = self.job(&l, &prompt, &req.sampling, grammar, req.fairness.as_deref())?;
        self.submit(&l, job)?;
        Ok((l, rx))
    }

    /// Starts a text completion (the prompt as is, or with the system text before it).
    pub async fn complete(
        &self,
        req: &CompletionRequest,
    ) -> Result<(Arc<Loaded>, Generation), EngineError> {
        let keep = self.keep_alive(req.keep_alive.as_ref())?;
        let grammar = self.grammar(&req.format).await?;
        let l = self.load(&req.model, keep).await?;
        // As Ollama does: the model's template wraps the prompt (and system text) unless the
        // request is raw or the model has no template (a base model), in which case the
        // prompt is completed as written.
        let prompt = if req.raw {
            req.prompt.clone()
        } else if l.has_chat_template() {
            let mut messages = Vec::with_capacity(2);
            if let Some(system) = &req.system {
                messages.push(Message::new(Role::System, system.clone()));
            }
            messages.push(Message::new(Role::User, req.prompt.clone()));
            self.render_chat(&l, &messages)?
        } else {
            match &req.system {
                Some(system) => format!("{system}\n\n{}", req.prompt),
                None => req.prompt.clone(),
            }
        };
        let (job, rx) = self.job(&l, &prompt, &req.sampling, grammar, req.fairness.as_deref())?;
        self.submit(&l, job)?;
        Ok((l, rx))
    }
}

fn rand_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

/// Any JSON value (llama.cpp's `json.gbnf`, trimmed): what `format: "json"` constrains to.
const JSON_GRAMMAR: &str = r#"root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws ::= | " " | "\n" [ \t]{0,20}
"#;

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use serde_json::json;

    #[test]
    fn keep_alive_follows_ollama() {
        let d = Duration::from_secs(300);
        let max = DEFAULT_MAX_KEEP_ALIVE;
        let k = |v: Value| parse_keep_alive(Some(&v), d, max).unwrap();
        assert_eq!(parse_keep_alive(None, d, max).unwrap(), KeepAlive::For(d));
        assert_eq!(k(json!("5m")), KeepAlive::For(Duration::from_secs(300)));
        assert_eq!(k(json!("1h30m")), KeepAlive::For(Duration::from_secs(5400)));
        assert_eq!(k(json!(0)), KeepAlive::For(Duration::ZERO));
        assert_eq!(k(json!("0")), KeepAlive::For(Duration::ZERO));
        assert_eq!(k(json!(-1)), KeepAlive::Forever);
        assert_eq!(k(json!("-1m")), KeepAlive::Forever);
        assert_eq!(k(json!(30)), KeepAlive::For(Duration::from_secs(30)));
        assert!(parse_keep_alive(Some(&json!(true)), d, max).is_err());
        assert!(parse_keep_alive(Some(&json!("soon")), d, max).is_err());
    }

    /// Issue 15 item 6: `keep_alive: 1e308` panicked in `Duration::from_secs_f64` and took the
    /// request's worker down. Every number and string is now a bounded duration, forever, or
    /// an error.
    #[test]
    fn keep_alive_never_panics_and_is_clamped() {
        let d = Duration::from_secs(300);
        let max = Duration::from_secs(3600);
        let p = |v: Value| parse_keep_alive(Some(&v), d, max);
        for v in [
            json!(1e308),
            json!(f64::MAX),
            json!(u64::MAX),
            json!(1.8446744073709552e19),
            json!("1e308"),
            json!("99999999999h"),
            json!("99999999999999999999999h"),
            json!("9999999999999999999h9999999999999999999h"),
            json!("1e300"),
            json!("inf"),
        ] {
            match p(v.clone()) {
                Ok(KeepAlive::For(t)) => assert!(t <= max, "{v} gave {t:?}"),
                Ok(KeepAlive::Forever) => panic!("{v} must not pin"),
                Err(_) => {}
            }
        }
        assert_eq!(p(json!(1e308)).unwrap(), KeepAlive::For(max));
        assert_eq!(p(json!("99999999999h")).unwrap(), KeepAlive::For(max));
        assert_eq!(
            p(json!(0.5)).unwrap(),
            KeepAlive::For(Duration::from_millis(500))
        );
        for v in [
            json!(-1e308),
            json!(-0.5),
            json!("-1e308"),
            json!("-99999999999h"),
        ] {
            assert_eq!(p(v.clone()).unwrap(), KeepAlive::Forever, "{v}");
        }
        for v in [
            json!("NaN"),
            json!("-inf"),
            json!(""),
            json!("5x"),
            json!("..s"),
            json!([1]),
        ] {
            assert!(p(v.clone()).is_err(), "{v}");
        }
        // The default is clamped too.
        assert_eq!(
            parse_keep_alive(None, Duration::from_secs(7200), max).unwrap(),
            KeepAlive::For(max)
        );
    }
}
