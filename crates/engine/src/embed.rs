//! Embeddings: one thread per embedding model owns a llama.cpp context with embeddings on and
//! the model's pooling, and answers batches of inputs with L2-normalised vectors.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};

use llama_cpp_2::context::params::LlamaContextParams;
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
    pub fn start(
        backend: &'static LlamaBackend,
        model: Arc<LlamaModel>,
        n_ctx: u32,
        threads: i32,
        queue: usize,
    ) -> Result<Embedder, String> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<EmbedJob>(queue.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("wardgate-embed".into())
            .spawn(move || {
                let params = LlamaContextParams::default()
                    .with_embeddings(true)
                    .with_n_ctx(std::num::NonZeroU32::new(n_ctx))
                    .with_n_batch(n_ctx)
                    .with_n_ubatch(n_ctx)
                    .with_n_threads(threads)
                    .with_n_threads_batch(threads);
                let mut ctx = match model.new_context(backend, params) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut batch = LlamaBatch::new(n_ctx as usize, 1);
                while let Ok(job) = rx.recv() {
                    let mut out = Vec::with_capacity(job.inputs.len());
                    let mut failed = None;
                    for tokens in &job.inputs {
                        ctx.clear_kv_cache();
                        batch.clear();
                        for (i, t) in tokens.iter().enumerate() {
                            if batch.add(*t, i as i32, &[0], true).is_err() {
                                failed = Some("input longer than the context".to_owned());
                                break;
                            }
                        }
                        if failed.is_some() {
                            break;
                        }
                        // Encoder-only models (BERT) run through `encode`; others `decode`.
                        if ctx.encode(&mut batch).is_err() && ctx.decode(&mut batch).is_err() {
                            failed = Some("the model failed to embed the input".to_owned());
                            break;
                        }
                        match ctx.embeddings_seq_ith(0) {
                            Ok(v) => {
                                let mut v = v.to_vec();
                                normalize(&mut v);
                                out.push(v);
                            }
                            Err(_) => {
                                failed = Some("this model gives no pooled embedding".to_owned());
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
