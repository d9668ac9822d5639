//! A fixed workload for measuring the detector by instruction count (callgrind) and for
//! checking that a change leaves its output alone: `detect` over `phi-bench`'s two sets
//! (`synth_dataset_v2.json` and the notes generated from seed 42), a given number of passes,
//! then the bytes processed and a SHA-256 of every span found (category, start, end, score).
//!
//! ```sh
//! cargo build --release -p wardgate-phi --example phi_digest
//! target/release/examples/phi_digest --passes 1 --set synth
//! valgrind --tool=callgrind target/release/examples/phi_digest --passes 5 --set notes
//! ```
//!
//! Instructions per byte are the difference between a 5-pass and a 1-pass run divided by
//! four times the bytes of one pass: the set-up (dictionary, JSON, note generation) cancels
//! out.
//! `--check` adds variants of the texts (lower case, upper case, concatenated, random
//! fragments) and a detector that keeps every candidate, a wider net for output changes;
//! it is for the digest only, not for timing.

use std::io::Write as _;

use sha2::{Digest as _, Sha256};
use wardgate_phi::Detector;
use wardgate_phi::eval::{generate_notes, load_presidio_research};

struct Args {
    dataset: String,
    passes: usize,
    set: String,
    check: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        dataset: "../shared/data/phi/synth_dataset_v2.json".to_owned(),
        passes: 1,
        set: "both".to_owned(),
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dataset" => a.dataset = it.next().ok_or("--dataset needs a path")?,
            "--passes" => {
                a.passes = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--passes needs a number")?;
            }
            "--set" => a.set = it.next().ok_or("--set needs synth, notes or both")?,
            "--check" => a.check = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// Adds the spans of `text` under `detector` to `h`, document by document.
fn digest_doc(h: &mut Sha256, detector: &Detector, text: &str) {
    let spans = detector.detect(text);
    h.update((spans.len() as u64).to_le_bytes());
    for s in spans {
        h.update(s.category.name().as_bytes());
        h.update((s.start as u64).to_le_bytes());
        h.update((s.end as u64).to_le_bytes());
        h.update(s.score.to_bits().to_le_bytes());
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Variants of the texts that reach code paths the originals may not.
fn variants(texts: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for t in texts {
        out.push(t.to_lowercase());
        out.push(t.to_uppercase());
    }
    // Documents glued together, 20 at a time, by a space and by a blank line.
    for chunk in texts.chunks(20) {
        out.push(chunk.join(" "));
        out.push(chunk.join("\n\n"));
    }
    // Random fragments at character boundaries, from a fixed linear congruential generator.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((x >> 33) as usize) % n.max(1)
    };
    for _ in 0..20_000 {
        let t = &texts[next(texts.len())];
        let bounds: Vec<usize> = t.char_indices().map(|(i, _)| i).chain([t.len()]).collect();
        let a = bounds[next(bounds.len())];
        let b = bounds[next(bounds.len())];
        let (a, b) = (a.min(b), a.max(b));
        out.push(t[a..b].to_owned());
    }
    out
}

fn main() -> Result<(), String> {
    let args = parse_args()?;
    let mut sets: Vec<(&str, Vec<String>)> = Vec::new();
    if args.set == "synth" || args.set == "both" {
        let json = std::fs::read_to_string(&args.dataset)
            .map_err(|e| format!("cannot read {}: {e}", args.dataset))?;
        let docs = load_presidio_research(&json).map_err(|e| e.to_string())?;
        sets.push(("synth", docs.into_iter().map(|d| d.text).collect()));
    }
    if args.set == "notes" || args.set == "both" {
        let docs = generate_notes(42, 500);
        sets.push(("notes", docs.into_iter().map(|d| d.text).collect()));
    }
    let detector = Detector::shared();
    let mut out = std::io::stdout();
    let mut total = 0usize;
    for (name, texts) in &sets {
        let bytes: usize = texts.iter().map(String::len).sum();
        let mut h = Sha256::new();
        for t in texts {
            digest_doc(&mut h, detector, t);
        }
        for _ in 1..args.passes {
            for t in texts {
                std::hint::black_box(detector.detect(std::hint::black_box(t)));
            }
        }
        total += bytes * args.passes;
        writeln!(
            out,
            "{name}: {} docs, {bytes} bytes/pass, digest {}",
            texts.len(),
            hex(&h.finalize())
        )
        .map_err(|e| e.to_string())?;
        if args.check {
            let all = Detector::new().with_min_score(0.0);
            let mut h = Sha256::new();
            let vs = variants(texts);
            for t in texts.iter().chain(&vs) {
                digest_doc(&mut h, detector, t);
                digest_doc(&mut h, &all, t);
            }
            writeln!(
                out,
                "{name}: check over {} texts, digest {}",
                texts.len() + vs.len(),
                hex(&h.finalize())
            )
            .map_err(|e| e.to_string())?;
        }
    }
    writeln!(out, "total bytes detected: {total}").map_err(|e| e.to_string())?;
    Ok(())
}
