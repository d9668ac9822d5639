//! Converts a Hugging Face BERT sentence-embedding model (config.json, vocab.txt, F32
//! model.safetensors — e.g. all-MiniLM-L6-v2) into a GGUF that llama.cpp runs as `bert`.
//!
//! Hand-written because the only converter (llama.cpp's Python script) needs PyTorch, which is
//! far heavier than the job; the BERT layout is small and fixed. The tensor names and metadata
//! keys follow llama.cpp's `bert` architecture.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use serde::Deserialize;

use crate::gguf::{Put, write};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("malformed {file}: {reason}")]
    Malformed { file: &'static str, reason: String },
}

#[derive(Debug, Deserialize)]
struct BertConfig {
    hidden_size: u64,
    num_hidden_layers: u64,
    num_attention_heads: u64,
    intermediate_size: u64,
    max_position_embeddings: u32,
    #[serde(default = "default_eps")]
    layer_norm_eps: f32,
    #[serde(default = "default_types")]
    type_vocab_size: u32,
    #[serde(default)]
    model_type: String,
}

fn default_eps() -> f32 {
    1e-12
}

fn default_types() -> u32 {
    2
}

#[derive(Debug, Deserialize)]
struct TensorInfo {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// A tensor's shape (PyTorch order) and its values.
type Tensor = (Vec<u64>, Vec<f32>);

/// Reads the F32 tensors of a safetensors file, by name.
fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>, ConvertError> {
    let bad = |reason: String| ConvertError::Malformed {
        file: "model.safetensors",
        reason,
    };
    let mut f = std::fs::File::open(path)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let header_len = u64::from_le_bytes(len);
    if header_len > 100 << 20 {
        return Err(bad("header too large".into()));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header)?;
    let mut raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    raw.remove("__metadata__");
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    let mut out = BTreeMap::new();
    for (name, v) in raw {
        let info: TensorInfo = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
        if info.dtype != "F32" {
            // position_ids (I64) and the like are not weights llama.cpp needs.
            continue;
        }
        let [start, end] = info.data_offsets;
        let bytes = data
            .get(start as usize..end as usize)
            .ok_or_else(|| bad(format!("{name}: offsets outside the file")))?;
        let count: u64 = info.shape.iter().product();
        if bytes.len() as u64 != count * 4 {
            return Err(bad(format!("{name}: size does not match its shape")));
        }
        let floats = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name, (info.shape, floats));
    }
    Ok(out)
}

/// llama.cpp's WordPiece vocabulary convention: continuation pieces lose `##`, word-initial
/// pieces gain `▁`, bracketed special tokens stay as they are.
fn phantom(token: &str) -> String {
    if token.starts_with('[') && token.ends_with(']') {
        token.to_owned()
    } else if let Some(rest) = token.strip_prefix("##") {
        rest.to_owned()
    } else {
        format!("\u{2581}{token}")
    }
}

/// Converts the model in `dir` and writes the GGUF to `out`.
pub fn convert_bert(dir: &Path, name: &str, out: impl Write) -> Result<(), ConvertError> {
    let config: BertConfig = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)
        .map_err(|e| ConvertError::Malformed {
            file: "config.json",
            reason: e.to_string(),
        })?;
    if config.model_type != "bert" {
        return Err(ConvertError::Unsupported(format!(
            "model_type `{}` (only `bert`)",
            config.model_type
        )));
    }
    let vocab: Vec<String> = std::fs::read_to_string(dir.join("vocab.txt"))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let id = |t: &str| vocab.iter().position(|v| v == t).map(|i| i as u32);
    let special = |t: &str| {
        id(t).ok_or_else(|| ConvertError::Malformed {
            file: "vocab.txt",
            reason: format!("no {t} token"),
        })
    };
    let (pad, unk, cls, sep, mask) = (
        special("[PAD]")?,
        special("[UNK]")?,
        special("[CLS]")?,
        special("[SEP]")?,
        special("[MASK]")?,
    );
    let types: Vec<i32> = vocab
        .iter()
        .map(|t| {
            if t.starts_with('[') && t.ends_with(']') {
                3
            } else {
                1
            }
        })
        .collect();
    let tokens: Vec<String> = vocab.iter().map(|t| phantom(t)).collect();

    let mut st = read_safetensors(&dir.join("model.safetensors"))?;
    // Some exports prefix every name with `bert.`.
    if st.keys().all(|k| k.starts_with("bert.")) {
        st = st
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches("bert.").to_owned(), v))
            .collect();
    }
    let mut tensors = Vec::new();
    let mut take = |from: &str, to: String| -> Result<(), ConvertError> {
        let (shape, data) = st.remove(from).ok_or_else(|| ConvertError::Malformed {
            file: "model.safetensors",
            reason: format!("missing tensor {from}"),
        })?;
        // GGUF lists dimensions innermost first, the reverse of PyTorch's order.
        tensors.push((to, shape.into_iter().rev().collect(), data));
        Ok(())
    };
    take(
        "embeddings.word_embeddings.weight",
        "token_embd.weight".into(),
    )?;
    take(
        "embeddings.token_type_embeddings.weight",
        "token_types.weight".into(),
    )?;
    take(
        "embeddings.position_embeddings.weight",
        "position_embd.weight".into(),
    )?;
    take(
        "embeddings.LayerNorm.weight",
        "token_embd_norm.weight".into(),
    )?;
    take("embeddings.LayerNorm.bias", "token_embd_norm.bias".into())?;
    for i in 0..config.num_hidden_layers {
        let l = format!("encoder.layer.{i}");
        for (hf, gg) in [
            ("attention.self.query", "attn_q"),
            ("attention.self.key", "attn_k"),
            ("attention.self.value", "attn_v"),
            ("attention.output.dense", "attn_output"),
            ("attention.output.LayerNorm", "attn_output_norm"),
            ("intermediate.dense", "ffn_up"),
            ("output.dense", "ffn_down"),
            ("output.LayerNorm", "layer_output_norm"),
        ] {
            take(&format!("{l}.{hf}.weight"), format!("blk.{i}.{gg}.weight"))?;
            take(&format!("{l}.{hf}.bias"), format!("blk.{i}.{gg}.bias"))?;
        }
    }
    let u = |v: u64| Put::U32(v as u32);
    let metadata = vec![
        ("general.architecture", Put::Str("bert".into())),
        ("general.name", Put::Str(name.to_owned())),
        ("general.file_type", Put::U32(0)),
        (
            "bert.context_length",
            Put::U32(config.max_position_embeddings),
        ),
        ("bert.embedding_length", u(config.hidden_size)),
        ("bert.feed_forward_length", u(config.intermediate_size)),
        ("bert.block_count", u(config.num_hidden_layers)),
        ("bert.attention.head_count", u(config.num_attention_heads)),
        (
            "bert.attention.layer_norm_epsilon",
            Put::F32(config.layer_norm_eps),
        ),
        ("bert.attention.causal", Put::Bool(false)),
        // 1 = mean pooling, what sentence-transformers' MiniLM models use.
        ("bert.pooling_type", Put::U32(1)),
        ("tokenizer.ggml.model", Put::Str("bert".into())),
        ("tokenizer.ggml.tokens", Put::Strs(tokens)),
        ("tokenizer.ggml.token_type", Put::I32s(types)),
        (
            "tokenizer.ggml.token_type_count",
            Put::U32(config.type_vocab_size),
        ),
        ("tokenizer.ggml.unknown_token_id", Put::U32(unk)),
        ("tokenizer.ggml.seperator_token_id", Put::U32(sep)),
        ("tokenizer.ggml.padding_token_id", Put::U32(pad)),
        ("tokenizer.ggml.cls_token_id", Put::U32(cls)),
        // BERT inputs are `[CLS] ... [SEP]`: llama.cpp adds them as BOS and EOS.
        ("tokenizer.ggml.bos_token_id", Put::U32(cls)),
        ("tokenizer.ggml.eos_token_id", Put::U32(sep)),
        ("tokenizer.ggml.mask_token_id", Put::U32(mask)),
    ];
    write(out, &metadata, &tensors)?;
    Ok(())
}
