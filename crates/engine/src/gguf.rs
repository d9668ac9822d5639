//! A small GGUF reader (metadata and tensor shapes, never tensor data) for the model store, and
//! a writer for tiny random-weight models that tests load through the real llama.cpp path.
//!
//! Hand-written because the store needs only the header, and reading it without loading the
//! model keeps `models import` and `/api/tags` cheap; llama.cpp's own reader would map the whole
//! file. Every length read from a file is bounded before anything is allocated.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

const MAGIC: &[u8; 4] = b"GGUF";
const ALIGNMENT: u64 = 32;
/// Bounds on what a header may claim, so a hostile file cannot make us allocate gigabytes.
const MAX_STRING: u64 = 16 << 20;
const MAX_ARRAY: u64 = 1 << 24;
const MAX_KV: u64 = 1 << 16;
const MAX_TENSORS: u64 = 1 << 20;

/// A metadata value. Arrays keep only their length and, for small string arrays, nothing: the
/// store needs scalars.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
    Array { len: u64 },
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::U64(v) => Some(*v),
            Value::I64(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }
}

/// What the header says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    /// Total number of weights across tensors.
    pub parameters: u64,
    pub tensors: u64,
}

impl Header {
    pub fn architecture(&self) -> Option<&str> {
        self.metadata
            .get("general.architecture")
            .and_then(Value::as_str)
    }

    /// `135M`, `1.2B`: `general.size_label` if present, else from the tensor shapes.
    pub fn parameter_size(&self) -> String {
        if let Some(label) = self
            .metadata
            .get("general.size_label")
            .and_then(Value::as_str)
        {
            return label.to_owned();
        }
        let p = self.parameters as f64;
        if p >= 1e9 {
            format!("{:.1}B", p / 1e9)
        } else if p >= 1e6 {
            format!("{:.0}M", p / 1e6)
        } else {
            format!("{:.0}K", p / 1e3)
        }
    }

    /// The quantization named by `general.file_type` (llama.cpp's `llama_ftype`).
    pub fn quantization(&self) -> String {
        let ft = self
            .metadata
            .get("general.file_type")
            .and_then(Value::as_u64);
        match ft {
            Some(0) => "F32",
            Some(1) => "F16",
            Some(2) => "Q4_0",
            Some(3) => "Q4_1",
            Some(7) => "Q8_0",
            Some(8) => "Q5_0",
            Some(9) => "Q5_1",
            Some(10) => "Q2_K",
            Some(11) => "Q3_K_S",
            Some(12) => "Q3_K_M",
            Some(13) => "Q3_K_L",
            Some(14) => "Q4_K_S",
            Some(15) => "Q4_K_M",
            Some(16) => "Q5_K_S",
            Some(17) => "Q5_K_M",
            Some(18) => "Q6_K",
            Some(32) => "BF16",
            Some(_) => "unknown",
            None => "F32",
        }
        .to_owned()
    }

    pub fn context_length(&self) -> Option<u64> {
        let arch = self.architecture()?;
        self.metadata
            .get(&format!("{arch}.context_length"))
            .and_then(Value::as_u64)
    }

    pub fn has_chat_template(&self) -> bool {
        self.metadata.contains_key("tokenizer.chat_template")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file")]
    NotGguf,
    #[error("unsupported GGUF version {0}")]
    Version(u32),
    #[error("GGUF header is malformed: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
}

struct Reader<R> {
    r: R,
}

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }
    fn u8(&mut self) -> Result<u8, GgufError> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(GgufError::Malformed("string too long"));
        }
        let mut buf = vec![0u8; len as usize];
        self.r.read_exact(&mut buf)?;
        String::from_utf8(buf).map_err(|_| GgufError::Malformed("string is not UTF-8"))
    }
    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        let copied = io::copy(&mut (&mut self.r).take(n), &mut io::sink())?;
        if copied != n {
            return Err(GgufError::Malformed("truncated"));
        }
        Ok(())
    }

    fn value(&mut self, ty: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U64(u64::from(self.u8()?)),
            1 => Value::I64(i64::from(self.u8()? as i8)),
            2 => Value::U64(u64::from(u16::from_le_bytes(self.bytes()?))),
            3 => Value::I64(i64::from(i16::from_le_bytes(self.bytes()?))),
            4 => Value::U64(u64::from(self.u32()?)),
            5 => Value::I64(i64::from(i32::from_le_bytes(self.bytes()?))),
            6 => Value::F64(f64::from(f32::from_le_bytes(self.bytes()?))),
            7 => Value::Bool(self.u8()? != 0),
            8 => Value::Str(self.string()?),
            9 => {
                let elem = self.u32()?;
                let len = self.u64()?;
                if len > MAX_ARRAY {
                    return Err(GgufError::Malformed("array too long"));
                }
                match elem_size(elem) {
                    Some(size) => self.skip(size * len)?,
                    None if elem == 8 => {
                        for _ in 0..len {
                            let l = self.u64()?;
                            if l > MAX_STRING {
                                return Err(GgufError::Malformed("string too long"));
                            }
                            self.skip(l)?;
                        }
                    }
                    None => return Err(GgufError::Malformed("unsupported array element")),
                }
                Value::Array { len }
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes()?)),
            _ => return Err(GgufError::Malformed("unknown value type")),
        })
    }
}

fn elem_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Reads the header of a GGUF file: metadata and tensor shapes.
pub fn read_header(r: impl Read) -> Result<Header, GgufError> {
    let mut r = Reader { r };
    if &r.bytes::<4>()? != MAGIC {
        return Err(GgufError::NotGguf);
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let tensors = r.u64()?;
    let kvs = r.u64()?;
    if tensors > MAX_TENSORS || kvs > MAX_KV {
        return Err(GgufError::Malformed("too many entries"));
    }
    let mut metadata = BTreeMap::new();
    for _ in 0..kvs {
        let key = r.string()?;
        let ty = r.u32()?;
        let v = r.value(ty)?;
        metadata.insert(key, v);
    }
    let mut parameters: u64 = 0;
    for _ in 0..tensors {
        let _name = r.string()?;
        let dims = r.u32()?;
        if dims > 8 {
            return Err(GgufError::Malformed("too many dimensions"));
        }
        let mut n: u64 = 1;
        for _ in 0..dims {
            n = n.saturating_mul(r.u64()?);
        }
        let _ty = r.u32()?;
        let _offset = r.u64()?;
        parameters = parameters.saturating_add(n);
    }
    Ok(Header {
        version,
        metadata,
        parameters,
        tensors,
    })
}

// -------------------------------------------------------------------------------------------
// Writer

/// A metadata value to write.
#[derive(Clone, Debug)]
pub enum Put {
    Bool(bool),
    U32(u32),
    F32(f32),
    Str(String),
    Strs(Vec<String>),
    F32s(Vec<f32>),
    I32s(Vec<i32>),
}

/// Writes a GGUF v3 file with F32 tensors.
pub fn write(
    mut w: impl Write,
    metadata: &[(&str, Put)],
    tensors: &[(String, Vec<u64>, Vec<f32>)],
) -> io::Result<()> {
    fn s(w: &mut impl Write, v: &str) -> io::Result<()> {
        w.write_all(&(v.len() as u64).to_le_bytes())?;
        w.write_all(v.as_bytes())
    }
    w.write_all(MAGIC)?;
    w.write_all(&3u32.to_le_bytes())?;
    w.write_all(&(tensors.len() as u64).to_le_bytes())?;
    w.write_all(&(metadata.len() as u64).to_le_bytes())?;
    for (k, v) in metadata {
        s(&mut w, k)?;
        match v {
            Put::Bool(x) => {
                w.write_all(&7u32.to_le_bytes())?;
                w.write_all(&[u8::from(*x)])?;
            }
            Put::U32(x) => {
                w.write_all(&4u32.to_le_bytes())?;
                w.write_all(&x.to_le_bytes())?;
            }
            Put::F32(x) => {
                w.write_all(&6u32.to_le_bytes())?;
                w.write_all(&x.to_le_bytes())?;
            }
            Put::Str(x) => {
                w.write_all(&8u32.to_le_bytes())?;
                s(&mut w, x)?;
            }
            Put::Strs(xs) => {
                w.write_all(&9u32.to_le_bytes())?;
                w.write_all(&8u32.to_le_bytes())?;
                w.write_all(&(xs.len() as u64).to_le_bytes())?;
                for x in xs {
                    s(&mut w, x)?;
                }
            }
            Put::F32s(xs) => {
                w.write_all(&9u32.to_le_bytes())?;
                w.write_all(&6u32.to_le_bytes())?;
                w.write_all(&(xs.len() as u64).to_le_bytes())?;
                for x in xs {
                    w.write_all(&x.to_le_bytes())?;
                }
            }
            Put::I32s(xs) => {
                w.write_all(&9u32.to_le_bytes())?;
                w.write_all(&5u32.to_le_bytes())?;
                w.write_all(&(xs.len() as u64).to_le_bytes())?;
                for x in xs {
                    w.write_all(&x.to_le_bytes())?;
                }
            }
        }
    }
    let mut offset = 0u64;
    let mut offsets = Vec::with_capacity(tensors.len());
    for (name, dims, data) in tensors {
        s(&mut w, name)?;
        w.write_all(&(dims.len() as u32).to_le_bytes())?;
        for d in dims {
            w.write_all(&d.to_le_bytes())?;
        }
        w.write_all(&0u32.to_le_bytes())?; // GGML_TYPE_F32
        w.write_all(&offset.to_le_bytes())?;
        offsets.push(offset);
        offset += (data.len() as u64 * 4).next_multiple_of(ALIGNMENT);
    }
    // The data section starts aligned, and each tensor is padded to the alignment.
    let header = header_len(metadata, tensors);
    w.write_all(&vec![
        0u8;
        (header.next_multiple_of(ALIGNMENT) - header) as usize
    ])?;
    for (_, _, data) in tensors {
        let mut bytes = Vec::with_capacity(data.len() * 4);
        for x in data {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        let padded = (bytes.len() as u64).next_multiple_of(ALIGNMENT);
        bytes.resize(padded as usize, 0);
        w.write_all(&bytes)?;
    }
    w.flush()
}

fn header_len(metadata: &[(&str, Put)], tensors: &[(String, Vec<u64>, Vec<f32>)]) -> u64 {
    let s = |v: &str| 8 + v.len() as u64;
    let mut n = 4 + 4 + 8 + 8;
    for (k, v) in metadata {
        n += s(k) + 4;
        n += match v {
            Put::Bool(_) => 1,
            Put::U32(_) | Put::F32(_) => 4,
            Put::Str(x) => s(x),
            Put::Strs(xs) => 4 + 8 + xs.iter().map(|x| s(x)).sum::<u64>(),
            Put::F32s(xs) => 4 + 8 + 4 * xs.len() as u64,
            Put::I32s(xs) => 4 + 8 + 4 * xs.len() as u64,
        };
    }
    for (name, dims, _) in tensors {
        n += s(name) + 4 + 8 * dims.len() as u64 + 4 + 8;
    }
    n
}

/// Shape of a tiny random model.
#[derive(Clone, Debug)]
pub struct TinySpec {
    pub n_embd: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub n_ff: u64,
    pub n_layer: u64,
    pub n_ctx: u32,
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            n_embd: 64,
            n_head: 4,
            n_head_kv: 2,
            n_ff: 128,
            n_layer: 2,
            n_ctx: 512,
            seed: 42,
        }
    }
}

/// ChatML, as SmolLM2 uses; llama.cpp recognises it and applies its built-in implementation.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Writes a tiny llama-architecture model with random weights and a SentencePiece-style
/// vocabulary (byte fallback, a few hundred pieces, ChatML control tokens). Its output is
/// gibberish, but loading, tokenizing, templating, batching and sampling all run the real
/// llama.cpp code on it.
pub fn write_tiny_llama(w: impl Write, spec: &TinySpec) -> io::Result<()> {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types: Vec<i32> = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    tokens.push("<|im_start|>".into());
    types.push(3);
    tokens.push("<|im_end|>".into());
    types.push(3);
    let words = [
        "\u{2581}",
        "\u{2581}the",
        "\u{2581}a",
        "\u{2581}is",
        "\u{2581}of",
        "\u{2581}Paris",
        "\u{2581}capital",
        "\u{2581}France",
        "\u{2581}What",
        "\u{2581}hello",
        "\u{2581}world",
        "\u{2581}user",
        "\u{2581}assistant",
        "\u{2581}system",
        "user",
        "assistant",
        "system",
        "\u{2581}STOP",
        "?",
        ".",
        ",",
        "!",
        "\n",
    ];
    let letters = ('a'..='z').chain('A'..='Z').chain('0'..='9');
    let pieces = words
        .iter()
        .map(|w| w.to_string())
        .chain(letters.flat_map(|c| [c.to_string(), format!("\u{2581}{c}")]));
    for piece in pieces {
        // llama.cpp refuses a vocabulary with duplicate pieces.
        if !tokens.contains(&piece) {
            tokens.push(piece);
            types.push(1);
        }
    }
    let n_vocab = tokens.len() as u64;
    // Longer pieces score higher so the tokenizer prefers them.
    let scores: Vec<f32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if types[i] == 1 {
                t.chars().count() as f32
            } else {
                0.0
            }
        })
        .collect();
    let im_end = tokens.iter().position(|t| t == "<|im_end|>").unwrap_or(2) as u32;

    let head_dim = spec.n_embd / spec.n_head;
    let n_embd_kv = head_dim * spec.n_head_kv;
    let mut rng = spec.seed | 1;
    let mut rand = |n: u64| -> Vec<f32> {
        (0..n)
            .map(|_| {
                // xorshift64*: deterministic weights, so tests see the same output every run.
                rng ^= rng >> 12;
                rng ^= rng << 25;
                rng ^= rng >> 27;
                let x = rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
                ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    };
    let ones = |n: u64| vec![1.0f32; n as usize];
    let mut tensors: Vec<(String, Vec<u64>, Vec<f32>)> = vec![
        (
            "token_embd.weight".into(),
            vec![spec.n_embd, n_vocab],
            rand(spec.n_embd * n_vocab),
        ),
        (
            "output_norm.weight".into(),
            vec![spec.n_embd],
            ones(spec.n_embd),
        ),
        (
            "output.weight".into(),
            vec![spec.n_embd, n_vocab],
            rand(spec.n_embd * n_vocab),
        ),
    ];
    for i in 0..spec.n_layer {
        let e = spec.n_embd;
        let f = spec.n_ff;
        tensors.push((format!("blk.{i}.attn_norm.weight"), vec![e], ones(e)));
        tensors.push((format!("blk.{i}.attn_q.weight"), vec![e, e], rand(e * e)));
        tensors.push((
            format!("blk.{i}.attn_k.weight"),
            vec![e, n_embd_kv],
            rand(e * n_embd_kv),
        ));
        tensors.push((
            format!("blk.{i}.attn_v.weight"),
            vec![e, n_embd_kv],
            rand(e * n_embd_kv),
        ));
        tensors.push((
            format!("blk.{i}.attn_output.weight"),
            vec![e, e],
            rand(e * e),
        ));
        tensors.push((format!("blk.{i}.ffn_norm.weight"), vec![e], ones(e)));
        tensors.push((format!("blk.{i}.ffn_gate.weight"), vec![e, f], rand(e * f)));
        tensors.push((format!("blk.{i}.ffn_up.weight"), vec![e, f], rand(e * f)));
        tensors.push((format!("blk.{i}.ffn_down.weight"), vec![f, e], rand(f * e)));
    }
    let u = |v: u64| Put::U32(v as u32);
    let metadata = vec![
        ("general.architecture", Put::Str("llama".into())),
        ("general.name", Put::Str("tiny-test".into())),
        ("general.file_type", Put::U32(0)),
        ("llama.context_length", Put::U32(spec.n_ctx)),
        ("llama.embedding_length", u(spec.n_embd)),
        ("llama.block_count", u(spec.n_layer)),
        ("llama.feed_forward_length", u(spec.n_ff)),
        ("llama.attention.head_count", u(spec.n_head)),
        ("llama.attention.head_count_kv", u(spec.n_head_kv)),
        ("llama.rope.dimension_count", u(head_dim)),
        ("llama.attention.layer_norm_rms_epsilon", Put::F32(1e-5)),
        ("llama.vocab_size", u(n_vocab)),
        ("tokenizer.ggml.model", Put::Str("llama".into())),
        ("tokenizer.ggml.tokens", Put::Strs(tokens)),
        ("tokenizer.ggml.scores", Put::F32s(scores)),
        ("tokenizer.ggml.token_type", Put::I32s(types)),
        ("tokenizer.ggml.unknown_token_id", Put::U32(0)),
        ("tokenizer.ggml.bos_token_id", Put::U32(1)),
        ("tokenizer.ggml.eos_token_id", Put::U32(im_end)),
        ("tokenizer.ggml.add_bos_token", Put::Bool(false)),
        ("tokenizer.chat_template", Put::Str(CHATML_TEMPLATE.into())),
    ];
    write(w, &metadata, &tensors)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn tiny_model_header_round_trips() {
        let mut buf = Vec::new();
        write_tiny_llama(&mut buf, &TinySpec::default()).unwrap();
        let h = read_header(buf.as_slice()).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.context_length(), Some(512));
        assert_eq!(h.quantization(), "F32");
        assert!(h.has_chat_template());
        assert_eq!(h.tensors, 3 + 2 * 9);
        assert!(h.parameters > 50_000, "{}", h.parameters);
        assert_eq!(
            h.parameter_size(),
            format!("{:.0}K", h.parameters as f64 / 1e3)
        );
        assert!(matches!(h.metadata["tokenizer.ggml.tokens"], Value::Array { len } if len > 300));
    }

    #[test]
    fn hostile_headers_are_refused_without_large_allocations() {
        assert!(matches!(
            read_header(&b"NOPE...."[..]),
            Err(GgufError::NotGguf)
        ));
        let mut v = b"GGUF".to_vec();
        v.extend_from_slice(&9u32.to_le_bytes());
        assert!(matches!(
            read_header(v.as_slice()),
            Err(GgufError::Version(9))
        ));
        // One kv whose key claims to be 2^60 bytes long.
        let mut v = b"GGUF".to_vec();
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
        v.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(
            read_header(v.as_slice()),
            Err(GgufError::Malformed(_))
        ));
        // Truncated.
        let mut buf = Vec::new();
        write_tiny_llama(&mut buf, &TinySpec::default()).unwrap();
        assert!(read_header(&buf[..100]).is_err());
    }
}
