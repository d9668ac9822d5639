//! Embeddings: one thread per model owns a llama.cpp context with embeddings on, and answers
//! batches of inputs with L2-normalised vectors. An embedding (encoder) model is pooled by
//! llama.cpp as its metadata says; a generation (decoder) model is embedded as Ollama does, by
//! pooling its hidden states (the model's pooling type, else their mean).

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

type Reply = tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>, String>>;

struct EmbedJob {
    inputs: Vec<Vec<LlamaToken>>,
    reply: Reply,
}

#[derive(Debug)]
pub struct Embedder {
    tx: SyncSender<EmbedJob>,
    pub n_ctx: u32,
}

impl std::fmt::Debug for EmbedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedJob")
            .field("inputs", &self.inputs.len())
            .finish()
    }
}

/// How an embedder turns an input's hidden states into one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// llama.cpp pools as the model's metadata says (encoder embedding models); each input is
    /// one batch, as non-causal attention needs.
    Model,
    /// A decoder's hidden states, decoded in batches of at most the embedder's batch size and
    /// pooled here: the mean of all tokens, the first token's, or the last token's. llama.cpp's
    /// own pooling would compute logits for the whole input in one batch (input length times
    /// vocabulary size), so memory would grow with the context rather than the batch.
    Mean,
    First,
    Last,
}

impl Pooling {
    /// The pooling a decoder (generation) model is embedded with: the one its GGUF metadata
    /// declares (`<arch>.pooling_type`, as embedding models built on decoders carry), else the
    /// mean, as llama.cpp and Ollama do for chat models.
    pub fn for_decoder(model: &LlamaModel) -> Pooling {
        let declared = model
            .meta_val_str("general.architecture")
            .ok()
            .and_then(|arch| model.meta_val_str(&format!("{arch}.pooling_type")).ok())
            .and_then(|v| v.trim().parse::<i32>().ok())
            .map(LlamaPoolingType::from);
        match declared {
            Some(LlamaPoolingType::Cls) => Pooling::First,
            Some(LlamaPoolingType::Last) => Pooling::Last,
            // Rank gives a score, not a vector; none or unspecified: the mean.
            _ => Pooling::Mean,
        }
    }
}

/// Scales a vector to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
}

impl Embedder {
    /// Starts the thread and its context of `n_ctx` tokens (the longest input). `batch` bounds
    /// the tokens of one decode call for [`Pooling::Mean`], `First` and `Last`; with
    /// [`Pooling::Model`] an input is one batch.
    pub fn start(
        backend: &'static LlamaBackend,
        model: Arc<LlamaModel>,
        n_ctx: u32,
        batch: u32,
        pooling: Pooling,
        threads: i32,
        queue: usize,
    ) -> Result<Embedder, String> {
        let n_batch = match pooling {
            Pooling::Model => n_ctx,
            Pooling::Mean | Pooling::First | Pooling::Last => batch.clamp(1, n_ctx.max(1)),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<EmbedJob>(queue.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("wardgate-embed".into())
            .spawn(move || {
                let mut params = LlamaContextParams::default()
                    .with_embeddings(true)
                    .with_n_ctx(std::num::NonZeroU32::new(n_ctx))
                    .with_n_batch(n_batch)
                    .with_n_ubatch(n_batch)
                    .with_n_threads(threads)
                    .with_n_threads_batch(threads);
                if pooling != Pooling::Model {
                    // Per-token hidden states, pooled in `pool_hidden_states`.
                    params = params.with_pooling_type(LlamaPoolingType::None);
                }
                let mut ctx = match model.new_context(backend, params) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut batch = LlamaBatch::new(n_batch as usize, 1);
                while let Ok(job) = rx.recv() {
                    let mut out = Vec::with_capacity(job.inputs.len());
                    let mut failed = None;
                    for tokens in &job.inputs {
                        let embedded = match pooling {
                            Pooling::Model => pooled_by_model(&mut ctx, &mut batch, tokens),
                            _ => pool_hidden_states(
                                &mut ctx,
                                &mut batch,
                                n_batch as usize,
                                tokens,
                                pooling,
                            ),
                        };
                        match embedded {
                            Ok(mut v) => {
                                normalize(&mut v);
                                out.push(v);
                            }
                            Err(e) => {
                                failed = Some(e.to_owned());
                                break;
                            }
                        }
                    }
                    let _ = job.reply.send(match failed {
                        Some(e) => Err(e),
                        None => Ok(out),
                    });
                }
            })
            .map_err(|e| e.to_string())?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Embedder { tx, n_ctx }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the embedding thread died".into()),
        }
    }

    /// Embeds token sequences; `Err(None)` when the queue is full.
    pub async fn embed(
        &self,
        inputs: Vec<Vec<LlamaToken>>,
    ) -> Result<Vec<Vec<f32>>, Option<String>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .try_send(EmbedJob { inputs, reply })
            .map_err(|e| match e {
                TrySendError::Full(_) => None,
                TrySendError::Disconnected(_) => Some("the model stopped".to_owned()),
            })?;
        rx.await
            .map_err(|_| Some("the model stopped".to_owned()))?
            .map_err(Some)
    }
}

/// One input through an embedding model in one batch, pooled by llama.cpp.
fn pooled_by_model(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch,
    tokens: &[LlamaToken],
) -> Result<Vec<f32>, &'static str> {
    ctx.clear_kv_cache();
    batch.clear();
    for (i, t) in tokens.iter().enumerate() {
        batch
            .add(*t, i as i32, &[0], true)
            .map_err(|_| "input longer than the context")?;
    }
    // Encoder-only models (BERT) run through `encode`; others `decode`.
    if ctx.encode(batch).is_err() && ctx.decode(batch).is_err() {
        return Err("the model failed to embed the input");
    }
    ctx.embeddings_seq_ith(0)
        .map(<[f32]>::to_vec)
        .map_err(|_| "this model gives no pooled embedding")
}

/// One input through a decoder, a batch at a time (the cache keeps the earlier ones, as for a
/// prompt), its final hidden states pooled as `pooling` says. The mean is kept as a sum: the
/// vector is normalised afterwards, which the division would not change.
fn pool_hidden_states(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch,
    chunk: usize,
    tokens: &[LlamaToken],
    pooling: Pooling,
) -> Result<Vec<f32>, &'static str> {
    ctx.clear_kv_cache();
    let chunk = chunk.max(1);
    let mut pooled: Vec<f32> = Vec::new();
    for (c, piece) in tokens.chunks(chunk).enumerate() {
        batch.clear();
        let start = c * chunk;
        for (i, t) in piece.iter().enumerate() {
            batch
                .add(*t, (start + i) as i32, &[0], true)
                .map_err(|_| "input longer than the context")?;
        }
        ctx.decode(batch)
            .map_err(|_| "the model failed to embed the input")?;
        for i in 0..piece.len() {
            let at = start + i;
            let wanted = match pooling {
                Pooling::First => at == 0,
                Pooling::Last => at + 1 == tokens.len(),
                Pooling::Mean | Pooling::Model => true,
            };
            if !wanted {
                continue;
            }
            let v = ctx
                .embeddings_ith(i as i32)
                .map_err(|_| "the model gives no hidden states")?;
            if pooled.is_empty() {
                pooled = vec![0.0; v.len()];
            }
            for (p, x) in pooled.iter_mut().zip(v) {
                *p += x;
            }
        }
    }
    if pooled.is_empty() {
        return Err("the model failed to embed the input");
    }
    Ok(pooled)
}
