//! Continuous batching: one thread per loaded model owns its llama.cpp context and runs one
//! decode loop for all of that model's requests.
//!
//! Each request gets a slot (a llama.cpp sequence id). Every step builds one batch holding the
//! next token of every generating sequence plus as much pending prompt as the batch has room
//! for, decodes it once, and samples each sequence with its own sampler chain. New requests
//! join between steps; requests beyond the slots wait in a bounded queue, and a full queue is
//! refused at once (the caller answers 503). The queue is fair across fairness keys (the
//! gateway's tenants): a free slot goes to the key with the fewest running sequences, ties to
//! the key served least recently, so one tenant flooding the queue delays another tenant's
//! request by at most one scheduling step once a slot frees. A slot keeps the tokens its sequence left in the
//! KV cache, so the next request sharing that prefix (the next turn of a chat) skips it.
//!
//! A request whose receiver is dropped (the client went away) is stopped before the next step
//! and its slot freed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;

/// Sampling settings of one request, as plain data (samplers are built on the model thread:
/// llama.cpp sampler objects must not cross threads).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 or less: greedy.
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: i32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub seed: u32,
}

impl Default for SamplingParams {
    /// Ollama's defaults.
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0xFFFF_FFFF,
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// End-of-generation token or a stop sequence.
    Stop,
    /// `max_tokens` reached, or the slot's context is full.
    Length,
}

/// Counts and timings of a finished generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub reason: StopReason,
    pub prompt_tokens: u64,
    /// Prompt tokens found already in the slot's KV cache and not evaluated again.
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub queued: Duration,
    pub prompt_eval: Duration,
    pub eval: Duration,
}

/// What a request's receiver sees.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Text(String),
    Done(Summary),
    /// The request's input was refused before it ran (a grammar llama.cpp does not take, a
    /// prompt longer than a slot): the client's mistake, answered 400.
    Rejected(String),
    /// The model failed while running the request: the server's fault.
    Error(String),
}

/// One generation to run.
#[derive(Debug)]
pub struct Job {
    pub tokens: Vec<LlamaToken>,
    pub params: SamplingParams,
    /// A GBNF grammar constraining the output (JSON mode, JSON schema).
    pub grammar: Option<String>,
    pub max_tokens: u32,
    pub stop: Vec<String>,
    /// Whose request this is (the gateway's tenant), for the fair share of slots; requests
    /// without one share the key "".
    pub fairness: String,
    pub tx: UnboundedSender<Output>,
}

#[derive(Clone, Copy, Debug)]
pub struct SchedulerConfig {
    /// Concurrent sequences (llama.cpp `n_seq_max`).
    pub slots: u32,
    /// Context tokens per slot.
    pub slot_ctx: u32,
    /// Most tokens in one decode call.
    pub batch: u32,
    /// Waiting requests beyond the slots.
    pub queue: usize,
    pub threads: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("cannot create a llama.cpp context: {0}")]
    Context(String),
    #[error("the queue is full")]
    QueueFull,
    #[error("the model is unloaded")]
    Stopped,
}

/// The handle to a model's decode loop.
#[derive(Debug)]
pub struct Scheduler {
    tx: Sender<Job>,
    /// Jobs submitted and not yet in a slot (in the channel or the fair queue).
    waiting: Arc<AtomicUsize>,
    /// What the decode loop reports after each step, for the metrics.
    seen: Arc<Seen>,
    config: SchedulerConfig,
}

/// What the decode loop last saw: slots generating, and KV cache cells holding tokens.
#[derive(Debug, Default)]
struct Seen {
    busy: AtomicUsize,
    cells: AtomicUsize,
}

/// A model's scheduler as the metrics show it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SchedulerStats {
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Slots generating.
    pub busy: usize,
    /// Slots the model has.
    pub slots: usize,
    /// Share of the KV cache's cells (all slots' contexts) holding tokens, 0 to 1.
    pub kv_use: f64,
}

impl Scheduler {
    /// Starts the model thread and waits until its context exists.
    pub fn start(
        backend: &'static LlamaBackend,
        model: Arc<LlamaModel>,
        config: SchedulerConfig,
    ) -> Result<Scheduler, SchedulerError> {
        // Jobs not in a slot are either about to take a free slot or waiting for one, so at
        // most the slots plus the queue wait: `slots + queue` requests beyond the running
        // ones, and the next is refused. The model thread moves jobs from the channel into its
        // fair queue, so the count, not the channel, is the bound.
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let waiting = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let w = waiting.clone();
        let seen = Arc::new(Seen::default());
        let reports = seen.clone();
        std::thread::Builder::new()
            .name("wardgate-decode".into())
            .spawn(move || run(backend, &model, config, rx, &w, &reports, ready_tx))
            .map_err(|e| SchedulerError::Context(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Scheduler {
                tx,
                waiting,
                seen,
                config,
            }),
            Ok(Err(e)) => Err(SchedulerError::Context(e)),
            Err(_) => Err(SchedulerError::Context("the model thread died".into())),
        }
    }

    /// Queues a job, or refuses it at once when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), SchedulerError> {
        let limit = self.config.queue + self.config.slots as usize;
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| SchedulerError::QueueFull)?;
        self.tx.send(job).map_err(|_| {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            SchedulerError::Stopped
        })
    }

    pub fn config(&self) -> SchedulerConfig {
        self.config
    }

    /// The queue, the busy slots and the KV cache's use, as the decode loop last saw them.
    pub fn stats(&self) -> SchedulerStats {
        let slots = self.config.slots as usize;
        let cells = slots * self.config.slot_ctx as usize;
        SchedulerStats {
            queued: self.waiting.load(Ordering::Relaxed),
            busy: self.seen.busy.load(Ordering::Relaxed),
            slots,
            kv_use: if cells == 0 {
                0.0
            } else {
                self.seen.cells.load(Ordering::Relaxed) as f64 / cells as f64
            },
        }
    }
}

/// A running generation.
struct Active {
    /// Prompt tokens not yet decoded.
    pending: Vec<LlamaToken>,
    /// The token sampled last, to be decoded next (generation phase).
    next: Option<LlamaToken>,
    sampler: LlamaSampler,
    max_tokens: u32,
    stop: StopScanner,
    tx: UnboundedSender<Output>,
    generated: u32,
    /// Bytes of a UTF-8 character split across tokens.
    utf8: Vec<u8>,
    prompt_tokens: u64,
    cached_tokens: u64,
    enqueued: Instant,
    started: Instant,
    first_token: Option<Instant>,
    /// This step's logits row for the sequence.
    logits_at: Option<i32>,
    /// The job's fairness key.
    fairness: String,
}

/// Jobs waiting for a slot, one FIFO per fairness key. The next job goes to the key with the
/// fewest running sequences; among those, to the key admitted least recently (never, or
/// longest ago), then to the key that has waited longest.
#[derive(Debug)]
pub struct FairQueue<T> {
    keys: VecDeque<(String, VecDeque<T>)>,
    /// Keys in the order they were last admitted, most recent last; bounded.
    recent: VecDeque<String>,
    len: usize,
}

/// Keys remembered in [`FairQueue::recent`]; older admissions count as never.
const RECENT_KEYS: usize = 256;

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            keys: VecDeque::new(),
            recent: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, key: &str, item: T) {
        self.len += 1;
        match self.keys.iter_mut().find(|(k, _)| k == key) {
            Some((_, q)) => q.push_back(item),
            None => self
                .keys
                .push_back((key.to_owned(), VecDeque::from([item]))),
        }
    }

    /// The next job, given how many sequences each key has running now.
    pub fn pop(&mut self, running: impl Fn(&str) -> usize) -> Option<T> {
        let last_admitted = |k: &str| {
            self.recent
                .iter()
                .rposition(|r| r == k)
                .map_or(0, |p| p + 1)
        };
        let (at, _) = self
            .keys
            .iter()
            .enumerate()
            .min_by_key(|(i, (k, _))| (running(k), last_admitted(k), *i))?;
        let (key, mut q) = self.keys.remove(at)?;
        let item = q.pop_front();
        self.recent.retain(|r| *r != key);
        if self.recent.len() >= RECENT_KEYS {
            self.recent.pop_front();
        }
        self.recent.push_back(key.clone());
        if !q.is_empty() {
            self.keys.push_back((key, q));
        }
        if item.is_some() {
            self.len -= 1;
        }
        item
    }

    /// Keeps only the jobs `keep` accepts (drops those nobody waits for any more).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for (_, q) in self.keys.iter_mut() {
            q.retain(&mut keep);
        }
        self.keys.retain(|(_, q)| !q.is_empty());
        self.len = self.keys.iter().map(|(_, q)| q.len()).sum();
    }
}

#[derive(Default)]
struct Slot {
    /// Tokens of this sequence that are in the KV cache, in order.
    cached: Vec<LlamaToken>,
    /// The fairness key (the gateway's tenant) whose request put them there. Only a request
    /// of the same key reuses them: a prompt served faster because another tenant's prompt
    /// began the same way would tell its sender what that tenant sent (and `cached_tokens`
    /// would say it outright).
    cached_for: String,
    active: Option<Active>,
}

fn build_sampler(
    model: &LlamaModel,
    p: &SamplingParams,
    grammar: Option<&str>,
) -> Result<LlamaSampler, String> {
    let mut chain = Vec::new();
    if let Some(g) = grammar {
        chain.push(LlamaSampler::grammar(model, g, "root").map_err(|e| e.to_string())?);
    }
    if p.repeat_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            p.repeat_last_n,
            p.repeat_penalty,
            p.frequency_penalty,
            p.presence_penalty,
        ));
    }
    if p.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if p.top_k > 0 {
            chain.push(LlamaSampler::top_k(p.top_k));
        }
        if p.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(p.top_p, 1));
        }
        if p.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(p.min_p, 1));
        }
        chain.push(LlamaSampler::temp(p.temperature));
        chain.push(LlamaSampler::dist(p.seed));
    }
    Ok(LlamaSampler::chain_simple(chain))
}

fn run(
    backend: &'static LlamaBackend,
    model: &LlamaModel,
    config: SchedulerConfig,
    rx: Receiver<Job>,
    waiting: &AtomicUsize,
    seen: &Seen,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let params = LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new(config.slots * config.slot_ctx))
        .with_n_batch(config.batch)
        .with_n_ubatch(config.batch)
        .with_n_seq_max(config.slots)
        .with_n_threads(config.threads)
        .with_n_threads_batch(config.threads);
    let mut ctx = match model.new_context(backend, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut batch = LlamaBatch::new(config.batch as usize, config.slots as i32);
    let mut slots: Vec<Slot> = (0..config.slots).map(|_| Slot::default()).collect();
    let mut queue: FairQueue<Job> = FairQueue::default();
    let mut open = true;
    loop {
        // Take what was submitted into the fair queue; block only when nothing is running or
        // waiting.
        let idle = slots.iter().all(|s| s.active.is_none()) && queue.is_empty();
        if idle {
            if !open {
                return;
            }
            match rx.recv() {
                Ok(job) => queue.push(&job.fairness.clone(), job),
                Err(_) => return,
            }
        }
        while open {
            match rx.try_recv() {
                Ok(job) => queue.push(&job.fairness.clone(), job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        // Stop what nobody waits for any more, running or queued.
        for s in slots.iter_mut() {
            if s.active.as_ref().is_some_and(|a| a.tx.is_closed()) {
                s.active = None;
            }
        }
        let before = queue.len();
        queue.retain(|j| !j.tx.is_closed());
        waiting.fetch_sub(before - queue.len(), Ordering::AcqRel);
        // Free slots go to the fairness key with the fewest running sequences.
        while slots.iter().any(|s| s.active.is_none()) {
            let next = queue.pop(|key| {
                slots
                    .iter()
                    .filter(|s| s.active.as_ref().is_some_and(|a| a.fairness == key))
                    .count()
            });
            let Some(job) = next else { break };
            waiting.fetch_sub(1, Ordering::AcqRel);
            admit(model, &mut ctx, &mut slots, job, config);
        }
        seen.busy.store(
            slots.iter().filter(|s| s.active.is_some()).count(),
            Ordering::Relaxed,
        );
        seen.cells.store(
            slots.iter().map(|s| s.cached.len()).sum(),
            Ordering::Relaxed,
        );
        if step(model, &mut ctx, &mut batch, &mut slots, config).is_err() {
            // A failed decode leaves the KV cache in an unknown state for the sequences in the
            // batch: fail them and forget what their slots held.
            for (i, s) in slots.iter_mut().enumerate() {
                if let Some(a) = s.active.take() {
                    let _ =
                        a.tx.send(Output::Error("the model failed to decode".into()));
                }
                let _ = ctx.clear_kv_cache_seq(Some(i as u32), None, None);
                s.cached.clear();
            }
        }
    }
}

/// Places a job in the free slot whose cached tokens share the longest prefix with its prompt.
fn admit(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    slots: &mut [Slot],
    job: Job,
    config: SchedulerConfig,
) {
    let enqueued = Instant::now();
    if job.tokens.is_empty() || job.tokens.len() as u32 >= config.slot_ctx {
        let _ = job.tx.send(Output::Rejected(format!(
            "the prompt needs {} tokens; this model takes at most {} per request",
            job.tokens.len(),
            config.slot_ctx.saturating_sub(1)
        )));
        return;
    }
    let sampler = match build_sampler(model, &job.params, job.grammar.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            let _ = job.tx.send(Output::Rejected(format!(
                "the model cannot use this request's sampling settings or response format: {e}"
            )));
            return;
        }
    };
    let common = |slot: &Slot| {
        if slot.cached_for != job.fairness {
            return 0;
        }
        slot.cached
            .iter()
            .zip(&job.tokens)
            .take_while(|(a, b)| a == b)
            .count()
            // At least one prompt token must be decoded to get logits for the first sample.
            .min(job.tokens.len() - 1)
    };
    let Some((seq, reuse)) = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.active.is_none())
        .map(|(i, s)| (i, common(s)))
        .max_by_key(|(_, c)| *c)
    else {
        let _ = job.tx.send(Output::Error("no free slot".into()));
        return;
    };
    let slot = &mut slots[seq];
    if slot.cached_for != job.fairness {
        slot.cached_for.clone_from(&job.fairness);
    }
    if ctx
        .kv_cache_seq_rm(seq as i32, Some(reuse as u32), None)
        .is_err()
    {
        let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
        slot.cached.clear();
    } else {
        slot.cached.truncate(reuse);
    }
    let reuse = slot.cached.len();
    slot.active = Some(Active {
        pending: job.tokens[reuse..].to_vec(),
        next: None,
        sampler,
        max_tokens: job.max_tokens,
        stop: StopScanner::new(job.stop),
        tx: job.tx,
        generated: 0,
        utf8: Vec::new(),
        prompt_tokens: job.tokens.len() as u64,
        cached_tokens: reuse as u64,
        enqueued,
        started: Instant::now(),
        first_token: None,
        logits_at: None,
        fairness: job.fairness,
    });
}

/// One decode over all running sequences, then one sample for each sequence that is past its
/// prompt.
fn step(
    model: &LlamaModel,
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    slots: &mut [Slot],
    config: SchedulerConfig,
) -> Result<(), ()> {
    batch.clear();
    // Generating sequences first: one token each keeps every stream moving.
    for (seq, s) in slots.iter_mut().enumerate() {
        let Some(a) = s.active.as_mut() else { continue };
        a.logits_at = None;
        if let Some(tok) = a.next.take() {
            let pos = s.cached.len() as i32;
            batch.add(tok, pos, &[seq as i32], true).map_err(drop)?;
            s.cached.push(tok);
            a.logits_at = Some(batch.n_tokens() - 1);
        }
    }
    // Then prompts, as much as the batch holds.
    for (seq, s) in slots.iter_mut().enumerate() {
        let Some(a) = s.active.as_mut() else { continue };
        if a.pending.is_empty() {
            continue;
        }
        let room = config.batch as usize - batch.n_tokens() as usize;
        if room == 0 {
            break;
        }
        let take = room.min(a.pending.len());
        let last_of_prompt = take == a.pending.len();
        for (k, tok) in a.pending.drain(..take).enumerate() {
            let pos = s.cached.len() as i32;
            let logits = last_of_prompt && k == take - 1;
            batch.add(tok, pos, &[seq as i32], logits).map_err(drop)?;
            s.cached.push(tok);
            if logits {
                a.logits_at = Some(batch.n_tokens() - 1);
            }
        }
    }
    if batch.n_tokens() == 0 {
        return Ok(());
    }
    ctx.decode(batch).map_err(|e| {
        tracing::error!(error = %e, "llama.cpp decode failed");
    })?;
    for s in slots.iter_mut() {
        let Some(a) = s.active.as_mut() else { continue };
        let Some(idx) = a.logits_at else { continue };
        let tok = a.sampler.sample(ctx, idx);
        let now = Instant::now();
        a.first_token.get_or_insert(now);
        a.generated += 1;
        let done = if model.is_eog_token(tok) {
            Some(StopReason::Stop)
        } else {
            let piece = model.token_to_piece_bytes(tok);
            a.utf8.extend_from_slice(&piece);
            let text = take_utf8(&mut a.utf8);
            if emit(a, &text) {
                Some(StopReason::Stop)
            } else if a.generated >= a.max_tokens || s.cached.len() as u32 + 1 >= config.slot_ctx {
                Some(StopReason::Length)
            } else {
                a.next = Some(tok);
                None
            }
        };
        if let Some(reason) = done {
            finish(s, reason, now);
        }
    }
    Ok(())
}

/// The longest valid UTF-8 prefix of `buf`, removed from it; an incomplete character at the
/// end stays for the next token. Invalid bytes become U+FFFD rather than stalling the stream.
fn take_utf8(buf: &mut Vec<u8>) -> String {
    match std::str::from_utf8(buf) {
        Ok(s) => {
            let s = s.to_owned();
            buf.clear();
            s
        }
        Err(e) if e.error_len().is_none() => {
            let valid = e.valid_up_to();
            let rest = buf.split_off(valid);
            let s = String::from_utf8_lossy(buf).into_owned();
            *buf = rest;
            s
        }
        Err(_) => {
            let s = String::from_utf8_lossy(buf).into_owned();
            buf.clear();
            s
        }
    }
}

/// Finds stop sequences in streamed text: text is released as soon as it cannot be the start
/// of a stop sequence; a completed stop sequence ends the stream and is never released.
#[derive(Debug, Default)]
pub struct StopScanner {
    stop: Vec<String>,
    held: String,
}

impl StopScanner {
    pub fn new(stop: Vec<String>) -> Self {
        StopScanner {
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    /// Adds text; returns what may be sent now, and whether a stop sequence completed.
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.stop.is_empty() {
            return (text.to_owned(), false);
        }
        self.held.push_str(text);
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_owned();
            self.held.clear();
            return (out, true);
        }
        // Keep the longest suffix that is a prefix of some stop sequence.
        let held = &self.held;
        let keep = self
            .stop
            .iter()
            .map(|s| {
                (1..s.len().min(held.len() + 1))
                    .rev()
                    .find(|&n| {
                        held.is_char_boundary(held.len() - n)
                            && s.is_char_boundary(n)
                            && held.ends_with(&s[..n])
                    })
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let out: String = self.held.drain(..self.held.len() - keep).collect();
        (out, false)
    }

    /// What is still held when generation ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Sends new text through the stop scanner; true when a stop sequence completed.
fn emit(a: &mut Active, text: &str) -> bool {
    let (out, stopped) = a.stop.push(text);
    if !out.is_empty() {
        let _ = a.tx.send(Output::Text(out));
    }
    stopped
}

fn finish(s: &mut Slot, reason: StopReason, now: Instant) {
    let Some(mut a) = s.active.take() else { return };
    let rest = a.stop.flush();
    if !rest.is_empty() {
        let _ = a.tx.send(Output::Text(rest));
    }
    let first = a.first_token.unwrap_or(now);
    let _ = a.tx.send(Output::Done(Summary {
        reason,
        prompt_tokens: a.prompt_tokens,
        cached_tokens: a.cached_tokens,
        completion_tokens: u64::from(a.generated),
        queued: a.started.saturating_duration_since(a.enqueued),
        prompt_eval: first.saturating_duration_since(a.started),
        eval: now.saturating_duration_since(first),
    }));
}

/// Model helpers that read better at the call sites above.
trait ModelExt {
    fn is_eog_token(&self, t: LlamaToken) -> bool;
    fn token_to_piece_bytes(&self, t: LlamaToken) -> Vec<u8>;
}

impl ModelExt for LlamaModel {
    fn is_eog_token(&self, t: LlamaToken) -> bool {
        self.vocab().is_eog(t)
    }

    fn token_to_piece_bytes(&self, t: LlamaToken) -> Vec<u8> {
        self.vocab().token_to_piece(t, false, None)
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// Issue 15 item 12: one tenant flooding the queue must not starve another. With two slots
    /// held by tenant A and ten more of A's jobs waiting, B's job (queued last) takes the
    /// first slot that frees, and A's backlog keeps its own order.
    #[test]
    fn a_second_tenant_gets_the_next_free_slot_ahead_of_a_flood() {
        let mut q = FairQueue::default();
        let mut running: Vec<&str> = Vec::new();
        for i in 0..12 {
            q.push("a", format!("a{i}"));
        }
        // Two slots: A takes both.
        for _ in 0..2 {
            let j = q
                .pop(|k| running.iter().filter(|r| **r == k).count())
                .unwrap();
            assert!(j.starts_with('a'));
            running.push("a");
        }
        q.push("b", "b0".to_owned());
        // One of A's sequences finishes: the free slot goes to B, not to A's next job.
        running.pop();
        let next = q
            .pop(|k| running.iter().filter(|r| **r == k).count())
            .unwrap();
        assert_eq!(next, "b0");
        running.push("b");
        // Then A again, in submission order.
        running.retain(|r| *r != "a");
        let next = q
            .pop(|k| running.iter().filter(|r| **r == k).count())
            .unwrap();
        assert_eq!(next, "a2");
        assert_eq!(q.len(), 9);
    }

    /// One slot: A's job runs (its queue then empty), A queues more, B queues one. When the
    /// slot frees, nobody runs, and B (never admitted) goes before A (admitted last).
    #[test]
    fn with_one_slot_the_least_recently_admitted_key_goes_first() {
        let mut q = FairQueue::default();
        q.push("a", "a0");
        assert_eq!(q.pop(|_| 0), Some("a0"));
        for j in ["a1", "a2", "a3"] {
            q.push("a", j);
        }
        q.push("b", "b0");
        assert_eq!(q.pop(|_| 0), Some("b0"));
        assert_eq!(q.pop(|_| 0), Some("a1"));
        assert_eq!(q.pop(|_| 0), Some("a2"));
    }

    #[test]
    fn equal_shares_rotate_across_keys_and_retain_drops_abandoned_jobs() {
        let mut q = FairQueue::default();
        for i in 0..3 {
            q.push("a", ("a", i));
        }
        for i in 0..3 {
            q.push("b", ("b", i));
        }
        q.push("c", ("c", 0));
        // Nothing running: keys take turns, least recently served first.
        let order: Vec<_> = std::iter::from_fn(|| q.pop(|_| 0)).collect();
        assert_eq!(
            order,
            [
                ("a", 0),
                ("b", 0),
                ("c", 0),
                ("a", 1),
                ("b", 1),
                ("a", 2),
                ("b", 2)
            ]
        );
        for i in 0..4 {
            q.push("a", ("a", i));
        }
        q.retain(|(_, i)| i % 2 == 0);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop(|_| 0), Some(("a", 0)));
        assert_eq!(q.pop(|_| 0), Some(("a", 2)));
        assert!(q.is_empty());
    }

    #[test]
    fn utf8_split_across_tokens_is_held_until_complete() {
        let mut buf = "é".as_bytes()[..1].to_vec();
        assert_eq!(take_utf8(&mut buf), "");
        buf.extend_from_slice(&"é".as_bytes()[1..]);
        buf.extend_from_slice(b"x");
        assert_eq!(take_utf8(&mut buf), "éx");
        assert!(buf.is_empty());
        let mut bad = vec![0xff, b'a'];
        assert_eq!(take_utf8(&mut bad), "\u{fffd}a");
    }

    #[test]
    fn stop_sequences_split_across_tokens_are_caught_and_never_sent() {
        let feed = |stops: &[&str], parts: &[&str]| {
            let mut sc = StopScanner::new(stops.iter().map(|s| s.to_string()).collect());
            let mut out = String::new();
            for p in parts {
                let (t, stopped) = sc.push(p);
                out.push_str(&t);
                if stopped {
                    return (out, true);
                }
            }
            out.push_str(&sc.flush());
            (out, false)
        };
        assert_eq!(
            feed(&["END"], &["abc E", "N", "D tail"]),
            ("abc ".into(), true)
        );
        assert_eq!(feed(&["END"], &["abc E", "NX"]), ("abc ENX".into(), false));
        assert_eq!(feed(&["\n\n", "STOP"], &["a\n", "\nb"]), ("a".into(), true));
        assert_eq!(feed(&[], &["x", "y"]), ("xy".into(), false));
        assert_eq!(feed(&["é!"], &["aé", "é!"]), ("aé".into(), true));
        // Text that cannot start a stop sequence is released at once.
        let mut sc = StopScanner::new(vec!["END".into()]);
        assert_eq!(sc.push("hello "), ("hello ".into(), false));
        assert_eq!(sc.push("wE"), ("w".into(), false));
    }
}
