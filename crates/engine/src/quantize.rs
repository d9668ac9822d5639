//! Re-quantizing a stored model with llama.cpp's own quantizer (`llama_model_quantize`), so
//! that CPU serving can use the weight types llama.cpp's fastest CPU kernels take.
//!
//! Why it matters: on x86 with AVX2 (and on ARM) llama.cpp repacks `Q4_0` weights at load into
//! interleaved blocks with dedicated matrix-multiply kernels, and runs `Q8_0` through its
//! tiled GEMM; `Q4_1` — the format the default model ships in — has only a generic dot
//! product. Measured on this project's 2-core machine with SmolLM2-135M (`bench/README.md`):
//! the `q4_0` conversion decodes ~40% faster for one stream, ~50% faster for eight, and halves
//! prompt evaluation. The conversion is lossy (Q4_1 → Q4_0 rounds again); `q8_0` keeps nearly
//! all of the source's precision at 1.5× the size.
//!
//! The safe `llama-cpp-2` crate does not wrap the quantizer, so this module holds the
//! engine's one direct call into llama.cpp's C API.

use std::ffi::CString;
use std::path::Path;

use crate::store::{ModelEntry, ModelStore, StoreError, normalize_name, read_header, sha256_file};

/// The types offered: the two the CPU kernels favour. Others (K-quants) need row lengths
/// that are multiples of 256, which small models often lack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantType {
    Q4_0,
    Q8_0,
}

impl QuantType {
    pub const ALL: [QuantType; 2] = [QuantType::Q4_0, QuantType::Q8_0];

    pub fn as_str(self) -> &'static str {
        match self {
            QuantType::Q4_0 => "q4_0",
            QuantType::Q8_0 => "q8_0",
        }
    }

    fn ftype(self) -> llama_cpp_sys_2::llama_ftype {
        match self {
            QuantType::Q4_0 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q4_0,
            QuantType::Q8_0 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q8_0,
        }
    }
}

impl std::str::FromStr for QuantType {
    type Err = QuantizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QuantType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| QuantizeError::UnknownType(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("unknown quantization type `{0}`: use q4_0 (fastest on CPUs) or q8_0 (near-lossless)")]
    UnknownType(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("`{0}` is an embedding model; only generation models are re-quantized")]
    Embedding(String),
    #[error("llama.cpp could not quantize `{name}` (see the log for its reason)")]
    Failed { name: String },
    #[error("{0}")]
    Engine(String),
}

/// Writes `source` (a model in `store`) re-quantized to `to` and adds it to the store as
/// `name`. The source stays. `threads` ≤ 0: every core.
pub fn quantize(
    store: &ModelStore,
    source: &str,
    to: QuantType,
    name: &str,
    threads: i32,
) -> Result<(String, ModelEntry), QuantizeError> {
    let name = normalize_name(name)?;
    let entry = store.get(source)?;
    if crate::engine::is_embedding_family(&entry.family) {
        return Err(QuantizeError::Embedding(source.to_owned()));
    }
    crate::engine::llama_backend().map_err(|e| QuantizeError::Engine(e.to_string()))?;
    let src = store.path_of(&entry);
    let tmp = store
        .dir()
        .join("blobs")
        .join(format!(".quantize-{}.tmp", std::process::id()));
    let result = run(&src, &tmp, to, threads)
        .map_err(|()| QuantizeError::Failed {
            name: source.to_owned(),
        })
        .and_then(|()| {
            let header = read_header(&tmp)?;
            let digest = sha256_file(&tmp)?;
            Ok(store.register(&name, &tmp, &digest, &header)?)
        });
    // On success the file was moved into place; otherwise nothing half-written is left.
    let _ = std::fs::remove_file(&tmp);
    result
}

fn c_path(p: &Path) -> Result<CString, ()> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(drop)
}

#[expect(
    unsafe_code,
    reason = "llama.cpp's quantizer has no safe wrapper; the call below is its whole use"
)]
fn run(src: &Path, dst: &Path, to: QuantType, threads: i32) -> Result<(), ()> {
    let (src, dst) = (c_path(src)?, c_path(dst)?);
    // SAFETY: returns a plain struct by value; no pointers are involved.
    let mut params = unsafe { llama_cpp_sys_2::llama_model_quantize_default_params() };
    params.ftype = to.ftype();
    params.nthread = threads;
    // The sources are quantized already (the default model is Q4_1): without this llama.cpp
    // refuses them.
    params.allow_requantize = true;
    // SAFETY: both paths are NUL-terminated and outlive the call; `params` is a valid,
    // initialised struct whose pointer fields are the defaults' nulls.
    let rc = unsafe { llama_cpp_sys_2::llama_model_quantize(src.as_ptr(), dst.as_ptr(), &params) };
    if rc == 0 { Ok(()) } else { Err(()) }
}
