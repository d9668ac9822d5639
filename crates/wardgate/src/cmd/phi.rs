//! `wardgate phi`: find or redact PHI in text.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use super::out;

#[derive(Subcommand, Debug)]
pub(crate) enum PhiCommand {
    /// Print one JSON object per finding (category, byte start/end, text, score; and file
    /// when several files are given). Reads standard input when no file is given.
    Scan { files: Vec<PathBuf> },
    /// Print the text with each finding replaced by `[CATEGORY]`. Reads standard input when
    /// no file is given.
    Redact { files: Vec<PathBuf> },
}

/// The inputs of `wardgate phi`: each file, or standard input, as UTF-8 text with its name.
pub(crate) fn phi_inputs(files: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    if files.is_empty() {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
            .context("cannot read standard input")?;
        return Ok(vec![(
            "<stdin>".to_owned(),
            wardgate_phi::cli::decode_input("<stdin>", bytes)?,
        )]);
    }
    files
        .iter()
        .map(|f| {
            let name = f.display().to_string();
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {name}"))?;
            let text = wardgate_phi::cli::decode_input(&name, bytes)?;
            Ok((name, text))
        })
        .collect()
}

/// `wardgate phi scan|redact`.
pub(crate) fn phi(command: PhiCommand) -> anyhow::Result<()> {
    let detector = wardgate_phi::Detector::shared();
    match command {
        PhiCommand::Scan { files } => {
            let several = files.len() > 1;
            for (name, text) in phi_inputs(&files)? {
                let file = several.then_some(name.as_str());
                for line in wardgate_phi::cli::scan_lines(detector, &text, file) {
                    out(&line)?;
                }
            }
        }
        PhiCommand::Redact { files } => {
            let mut stdout = std::io::stdout().lock();
            for (_, text) in phi_inputs(&files)? {
                stdout.write_all(detector.redact(&text).as_bytes())?;
            }
            stdout.flush()?;
        }
    }
    Ok(())
}
