//! `engine-bench`: the engine against raw llama.cpp on the same GGUF and thread count, in one
//! run: single-stream decode speed, time to first token for a ~200-token prompt, aggregate
//! throughput at 1/4/8/16 concurrent streams, model load time and resident memory.
//!
//! The raw baseline is a plain llama-cpp-2 loop (one sequence, greedy, one token per decode).
//! The engine is driven in-process through its public API, so the figures are the engine's
//! (scheduler, sampling chain, stop scanning, channels), without an HTTP hop.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use wardgate_api::canonical::{CompletionRequest, ResponseFormat, Sampling};
use wardgate_engine::llama_cpp_2::context::params::LlamaContextParams;
use wardgate_engine::llama_cpp_2::llama_backend::LlamaBackend;
use wardgate_engine::llama_cpp_2::llama_batch::LlamaBatch;
use wardgate_engine::llama_cpp_2::model::LlamaModel;
use wardgate_engine::llama_cpp_2::model::params::LlamaModelParams;
use wardgate_engine::llama_cpp_2::sampling::LlamaSampler;
use wardgate_engine::{Engine, EngineConfig, KeepAlive, Output};

#[derive(Parser, Debug)]
#[command(about = "Engine throughput and latency against raw llama.cpp, same GGUF, same threads")]
struct Args {
    /// Model store directory holding the model.
    #[arg(long, default_value = ".cache/models")]
    models: PathBuf,
    /// Model name in the store.
    #[arg(long, default_value = "smollm2:135m")]
    model: String,
    /// Decode threads for both the baseline and the engine.
    #[arg(long, default_value_t = 2)]
    threads: i32,
    /// Tokens generated per stream.
    #[arg(long, default_value_t = 128)]
    tokens: u32,
    /// Repeats of each single-stream measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    streams: Vec<usize>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A prompt of about `n` tokens for a Llama-family tokenizer.
fn prompt_of(n: usize) -> String {
    let words =
        "the patient was seen in clinic today and reports feeling much better than last week";
    let mut s = String::from("Summarise the following note. ");
    while s.split_whitespace().count() < n {
        s.push_str(words);
        s.push(' ');
    }
    s
}

struct Raw {
    /// Decode tokens/s of one greedy sequence.
    decode_tps: f64,
    /// Prompt evaluation time for the long prompt.
    prompt_eval: Duration,
    prompt_tokens: usize,
}

/// Raw llama.cpp: evaluate the prompt in one batch, then decode one token per call.
fn raw_run(
    backend: &LlamaBackend,
    model: &LlamaModel,
    threads: i32,
    prompt: &str,
    tokens: u32,
) -> anyhow::Result<Raw> {
    let params = LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new(2048))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(backend, params)?;
    let toks = model.vocab().tokenize(prompt.as_bytes(), true, true);
    let mut batch = LlamaBatch::new(512, 1);
    let last = toks.len() - 1;
    for (i, t) in toks.iter().enumerate() {
        batch.add(*t, i as i32, &[0], i == last)?;
    }
    let t0 = Instant::now();
    ctx.decode(&mut batch)?;
    let prompt_eval = t0.elapsed();
    let mut sampler = LlamaSampler::greedy();
    let mut idx = batch.n_tokens() - 1;
    let t1 = Instant::now();
    for pos in (toks.len() as i32..).take(tokens as usize) {
        let tok = sampler.sample(&ctx, idx);
        batch.clear();
        batch.add(tok, pos, &[0], true)?;
        ctx.decode(&mut batch)?;
        idx = 0;
    }
    Ok(Raw {
        decode_tps: f64::from(tokens) / t1.elapsed().as_secs_f64(),
        prompt_eval,
        prompt_tokens: toks.len(),
    })
}

struct Gen {
    tokens: u64,
    first: Duration,
    total: Duration,
    eval: Duration,
}

async fn engine_run(
    engine: &Engine,
    model: &str,
    prompt: &str,
    tokens: u32,
) -> anyhow::Result<Gen> {
    let req = CompletionRequest {
        model: model.to_owned(),
        prompt: prompt.to_owned(),
        suffix: None,
        system: None,
        raw: true,
        sampling: Sampling {
            temperature: Some(0.0),
            max_tokens: Some(tokens),
            ..Sampling::default()
        },
        format: ResponseFormat::Text,
        keep_alive: Some(serde_json::json!(-1)),
    };
    let t0 = Instant::now();
    let (_, mut rx) = engine.complete(&req).await?;
    let mut first = None;
    loop {
        match rx.recv().await {
            Some(Output::Text(_)) => {
                first.get_or_insert_with(|| t0.elapsed());
            }
            Some(Output::Done(s)) => {
                return Ok(Gen {
                    tokens: s.completion_tokens,
                    first: first.unwrap_or(s.prompt_eval),
                    total: t0.elapsed(),
                    eval: s.eval,
                });
            }
            Some(Output::Error(e)) => bail!("generation failed: {e}"),
            None => bail!("generation ended without a summary"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut out = std::io::stdout().lock();
    let store = wardgate_engine::ModelStore::open(&args.models)?;
    let entry = store.get(&args.model).with_context(|| {
        format!(
            "{} is not in {}: run scripts/fetch-test-models",
            args.model,
            args.models.display()
        )
    })?;
    let path = store.path_of(&entry);
    writeln!(
        out,
        "engine-bench: {} ({} {}), {} threads, {} tokens per stream, {} repeats",
        args.model,
        entry.parameter_size,
        entry.quantization_level,
        args.threads,
        args.tokens,
        args.repeats
    )?;

    // Baseline: raw llama.cpp. The engine initialises the backend once per process; the
    // baseline borrows the same one through a first engine call below, so load the engine first.
    let mut cfg = EngineConfig::new(&args.models);
    cfg.threads = args.threads;
    cfg.slots = *args.streams.iter().max().unwrap_or(&16) as u32;
    cfg.slot_ctx = 1024;
    cfg.queue = 64;
    let engine = Arc::new(Engine::new(cfg)?);
    let rss0 = rss_mib();
    let t = Instant::now();
    engine.load(&args.model, KeepAlive::Forever).await?;
    let load = t.elapsed();
    let rss_loaded = rss_mib();

    let backend = wardgate_engine::engine::llama_backend()?;
    let model = LlamaModel::load_from_file(backend, &path, &LlamaModelParams::default())?;
    let short = "The capital of France is";
    let long = prompt_of(200);
    let mut raw_tps = Vec::new();
    let mut raw_pe = Vec::new();
    let mut raw_pt = 0;
    for _ in 0..args.repeats {
        let r = raw_run(backend, &model, args.threads, short, args.tokens)?;
        raw_tps.push(r.decode_tps);
        let p = raw_run(backend, &model, args.threads, &long, 1)?;
        raw_pe.push(p.prompt_eval.as_secs_f64() * 1000.0);
        raw_pt = p.prompt_tokens;
    }
    drop(model);

    let mut eng_tps = Vec::new();
    let mut eng_ttft = Vec::new();
    for _ in 0..args.repeats {
        let g = engine_run(&engine, &args.model, short, args.tokens).await?;
        eng_tps.push((g.tokens.saturating_sub(1)) as f64 / g.eval.as_secs_f64());
        // A fresh prompt each time: the slot's prefix cache must not help the TTFT figure.
        let unique = format!("Note {}. {}", eng_ttft.len(), long);
        let f = engine_run(&engine, &args.model, &unique, 1).await?;
        eng_ttft.push(f.first.as_secs_f64() * 1000.0);
    }
    let (rt, et) = (median(raw_tps), median(eng_tps));
    let (rp, ef) = (median(raw_pe), median(eng_ttft));
    writeln!(
        out,
        "\nsingle stream decode: raw llama.cpp {rt:.1} tok/s, engine {et:.1} tok/s, ratio {:.3} (target >= 0.95)",
        et / rt
    )?;
    writeln!(
        out,
        "time to first token, {raw_pt}-token prompt: raw prompt eval {rp:.1} ms, engine TTFT {ef:.1} ms, ratio {:.3} (target <= raw x 1.10 + 5 ms = {:.1} ms: {})",
        ef / rp,
        rp * 1.1 + 5.0,
        if ef <= rp * 1.1 + 5.0 { "PASS" } else { "FAIL" }
    )?;

    writeln!(
        out,
        "\nconcurrency ({} tokens per stream, greedy, distinct prompts):",
        args.tokens
    )?;
    writeln!(
        out,
        "streams | aggregate tok/s | vs 1 stream | p50 / max stream latency (s)"
    )?;
    let mut single = 0.0;
    for &n in &args.streams {
        let t0 = Instant::now();
        let mut handles = Vec::new();
        for i in 0..n {
            let e = engine.clone();
            let m = args.model.clone();
            let tokens = args.tokens;
            handles.push(tokio::spawn(async move {
                engine_run(&e, &m, &format!("Story {i}: once upon a time"), tokens).await
            }));
        }
        let mut total_tokens = 0;
        let mut lat = Vec::new();
        for h in handles {
            let g = h.await??;
            total_tokens += g.tokens;
            lat.push(g.total.as_secs_f64());
        }
        let wall = t0.elapsed().as_secs_f64();
        let agg = total_tokens as f64 / wall;
        if n == 1 {
            single = agg;
        }
        let max = lat.iter().copied().fold(0.0, f64::max);
        writeln!(
            out,
            "{n:>7} | {agg:>15.1} | {:>10.2}x | {:.2} / {:.2}",
            if single > 0.0 { agg / single } else { 0.0 },
            median(lat),
            max
        )?;
    }
    writeln!(
        out,
        "\nmodel load: {:.2} s (target < 30 s); resident memory: {:.0} MiB before, {:.0} MiB after the load, {:.0} MiB now",
        load.as_secs_f64(),
        rss0,
        rss_loaded,
        rss_mib()
    )?;
    Ok(())
}
