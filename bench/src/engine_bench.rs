//! `engine-bench`: the engine against raw llama.cpp on the same GGUF and thread count, in one
//! run: single-stream decode speed, time to first token for a ~200-token prompt, aggregate
//! throughput at 1/4/8/16 concurrent streams, model load time and resident memory.
//!
//! The raw baseline is a plain llama-cpp-2 loop (one sequence, greedy, one token per decode).
//! The engine is driven in-process through its public API, so the figures are the engine's
//! (scheduler, sampling chain, stop scanning, channels), without an HTTP hop.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
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
    /// Internal: run one side only and print its figures as JSON. Each side runs in its own
    /// process: two llama.cpp thread teams in one process slow whichever runs second.
    #[arg(long, hide = true)]
    only: Option<String>,
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
        fairness: None,
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
            Some(Output::Error(e) | Output::Rejected(e)) => bail!("generation failed: {e}"),
            None => bail!("generation ended without a summary"),
        }
    }
}

/// Raw llama.cpp: median decode tokens/s and prompt evaluation for the long prompt.
fn raw_side(args: &Args, path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let backend = wardgate_engine::engine::llama_backend()?;
    let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())?;
    let (short, long) = ("The capital of France is", prompt_of(200));
    let (mut tps, mut pe, mut pt) = (Vec::new(), Vec::new(), 0);
    for _ in 0..args.repeats {
        tps.push(raw_run(backend, &model, args.threads, short, args.tokens)?.decode_tps);
        let p = raw_run(backend, &model, args.threads, &long, 1)?;
        pe.push(p.prompt_eval.as_secs_f64() * 1000.0);
        pt = p.prompt_tokens;
    }
    Ok(serde_json::json!({"tps": median(tps), "prompt_eval_ms": median(pe), "prompt_tokens": pt}))
}

/// The engine: single-stream decode, TTFT, concurrency, load time, memory.
async fn engine_side(args: &Args) -> anyhow::Result<serde_json::Value> {
    let mut cfg = EngineConfig::new(&args.models);
    cfg.threads = args.threads;
    cfg.slots = *args.streams.iter().max().unwrap_or(&16) as u32;
    cfg.slot_ctx = 1024;
    cfg.queue = 64;
    let engine = Arc::new(Engine::new(cfg)?);
    let rss0 = rss_mib();
    let t = Instant::now();
    engine.load(&args.model, KeepAlive::Forever).await?;
    let load = t.elapsed().as_secs_f64();
    let rss_loaded = rss_mib();
    let (short, long) = ("The capital of France is", prompt_of(200));
    let (mut tps, mut ttft) = (Vec::new(), Vec::new());
    for i in 0..args.repeats {
        let g = engine_run(&engine, &args.model, short, args.tokens).await?;
        tps.push(g.tokens.saturating_sub(1) as f64 / g.eval.as_secs_f64());
        // A fresh prompt each time: the slot's prefix cache must not help the TTFT figure.
        let f = engine_run(&engine, &args.model, &format!("Note {i}. {long}"), 1).await?;
        ttft.push(f.first.as_secs_f64() * 1000.0);
    }
    let mut levels = Vec::new();
    for &n in &args.streams {
        let t0 = Instant::now();
        let mut handles = Vec::new();
        for i in 0..n {
            let (e, m, tokens) = (engine.clone(), args.model.clone(), args.tokens);
            handles.push(tokio::spawn(async move {
                engine_run(&e, &m, &format!("Story {i}: once upon a time"), tokens).await
            }));
        }
        let (mut total, mut lat) = (0u64, Vec::new());
        for h in handles {
            let g = h.await??;
            total += g.tokens;
            lat.push(g.total.as_secs_f64());
        }
        let wall = t0.elapsed().as_secs_f64();
        let max = lat.iter().copied().fold(0.0, f64::max);
        levels.push(serde_json::json!({"streams": n, "tps": total as f64 / wall, "p50_s": median(lat), "max_s": max}));
    }
    Ok(
        serde_json::json!({"tps": median(tps), "ttft_ms": median(ttft), "levels": levels,
        "load_s": load, "rss_before_mib": rss0, "rss_loaded_mib": rss_loaded, "rss_end_mib": rss_mib()}),
    )
}

fn child(args: &Args, side: &str) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe()?;
    let streams: Vec<String> = args.streams.iter().map(|s| s.to_string()).collect();
    let output = Command::new(exe)
        .arg("--models")
        .arg(&args.models)
        .args([
            "--model",
            &args.model,
            "--threads",
            &args.threads.to_string(),
            "--tokens",
            &args.tokens.to_string(),
            "--repeats",
            &args.repeats.to_string(),
            "--streams",
            &streams.join(","),
            "--only",
            side,
        ])
        .output()?;
    if !output.status.success() {
        bail!(
            "the {side} run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().context("no output")?;
    Ok(serde_json::from_str(line)?)
}

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(0.0)
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
    match args.only.as_deref() {
        Some("raw") => {
            writeln!(out, "{}", raw_side(&args, &store.path_of(&entry))?)?;
            return Ok(());
        }
        Some("engine") => {
            writeln!(out, "{}", engine_side(&args).await?)?;
            return Ok(());
        }
        Some(other) => bail!("--only takes raw or engine, not {other}"),
        None => {}
    }
    writeln!(
        out,
        "engine-bench: {} ({} {}), {} threads, {} tokens per stream, medians of {} repeats; raw and engine each in a fresh process",
        args.model,
        entry.parameter_size,
        entry.quantization_level,
        args.threads,
        args.tokens,
        args.repeats
    )?;
    let raw = child(&args, "raw")?;
    let eng = child(&args, "engine")?;
    let (rt, et) = (f(&raw, "tps"), f(&eng, "tps"));
    let (rp, ef) = (f(&raw, "prompt_eval_ms"), f(&eng, "ttft_ms"));
    let bound = rp * 1.1 + 5.0;
    writeln!(
        out,
        "\nsingle stream decode: raw llama.cpp {rt:.1} tok/s, engine {et:.1} tok/s, ratio {:.3} (target >= 0.95: {})",
        et / rt,
        if et / rt >= 0.95 { "PASS" } else { "FAIL" }
    )?;
    writeln!(
        out,
        "time to first token, {}-token prompt: raw prompt eval {rp:.1} ms, engine TTFT {ef:.1} ms (target <= raw x 1.10 + 5 ms = {bound:.1} ms: {})",
        raw["prompt_tokens"],
        if ef <= bound { "PASS" } else { "FAIL" }
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
    let levels = eng["levels"].as_array().cloned().unwrap_or_default();
    let single = levels.first().map(|l| f(l, "tps")).unwrap_or(0.0);
    for l in &levels {
        writeln!(
            out,
            "{:>7} | {:>15.1} | {:>10.2}x | {:.2} / {:.2}",
            l["streams"],
            f(l, "tps"),
            if single > 0.0 {
                f(l, "tps") / single
            } else {
                0.0
            },
            f(l, "p50_s"),
            f(l, "max_s")
        )?;
    }
    writeln!(
        out,
        "\nmodel load: {:.2} s (target < 30 s); engine process resident memory: {:.0} MiB before the load, {:.0} MiB after, {:.0} MiB at the end",
        f(&eng, "load_s"),
        f(&eng, "rss_before_mib"),
        f(&eng, "rss_loaded_mib"),
        f(&eng, "rss_end_mib")
    )?;
    Ok(())
}
