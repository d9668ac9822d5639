//! The BERT converter and the embedding path on a tiny random BERT written by the test as a
//! Hugging Face directory (config.json, vocab.txt, model.safetensors): the real conversion and
//! the real llama.cpp encoder run; only the weights are random.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use wardgate_api::canonical::EmbedRequest;
use wardgate_engine::{Engine, EngineConfig, EngineError};

const HIDDEN: u64 = 32;
const FF: u64 = 64;
const LAYERS: u64 = 2;
const POS: u64 = 64;

fn write_tiny_bert(dir: &Path) {
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for w in [
        "the", "a", "cat", "dog", "sat", "on", "mat", "stock", "market", "crash", "##s", "##ing",
    ] {
        vocab.push(w.to_string());
    }
    for c in 'a'..='z' {
        for piece in [c.to_string(), format!("##{c}")] {
            if !vocab.contains(&piece) {
                vocab.push(piece);
            }
        }
    }
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    let config = serde_json::json!({"model_type": "bert", "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": 4, "intermediate_size": FF, "max_position_embeddings": POS,
        "layer_norm_eps": 1e-12, "type_vocab_size": 2, "vocab_size": vocab.len()});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

    let mut shapes: Vec<(String, Vec<u64>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![vocab.len() as u64, HIDDEN],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![2, HIDDEN],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![POS, HIDDEN],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![HIDDEN]),
        ("embeddings.LayerNorm.bias".into(), vec![HIDDEN]),
    ];
    for i in 0..LAYERS {
        for (n, w, b) in [
            ("attention.self.query", vec![HIDDEN, HIDDEN], HIDDEN),
            ("attention.self.key", vec![HIDDEN, HIDDEN], HIDDEN),
            ("attention.self.value", vec![HIDDEN, HIDDEN], HIDDEN),
            ("attention.output.dense", vec![HIDDEN, HIDDEN], HIDDEN),
            ("attention.output.LayerNorm", vec![HIDDEN], HIDDEN),
            ("intermediate.dense", vec![FF, HIDDEN], FF),
            ("output.dense", vec![HIDDEN, FF], HIDDEN),
            ("output.LayerNorm", vec![HIDDEN], HIDDEN),
        ] {
            shapes.push((format!("encoder.layer.{i}.{n}.weight"), w));
            shapes.push((format!("encoder.layer.{i}.{n}.bias"), vec![b]));
        }
    }
    let mut header = BTreeMap::new();
    let mut data: Vec<u8> = Vec::new();
    let mut seed: u64 = 7;
    for (name, shape) in &shapes {
        let n: u64 = shape.iter().product();
        let start = data.len();
        for _ in 0..n {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let x = if name.contains("LayerNorm.weight") {
                1.0f32
            } else {
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            };
            data.extend_from_slice(&x.to_le_bytes());
        }
        header.insert(name.clone(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}));
    }
    header.insert("embeddings.position_ids".into(), serde_json::json!({"dtype": "I64", "shape": [1, 1], "data_offsets": [data.len(), data.len() + 8]}));
    data.extend_from_slice(&0i64.to_le_bytes());
    let h = serde_json::to_vec(&header).unwrap();
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&h);
    file.extend_from_slice(&data);
    std::fs::write(dir.join("model.safetensors"), file).unwrap();
}

fn req(input: &[&str], dimensions: Option<u32>, truncate: Option<bool>) -> EmbedRequest {
    EmbedRequest {
        model: "tiny-bert".into(),
        input: input.iter().map(|s| s.to_string()).collect(),
        dimensions,
        truncate,
        keep_alive: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converted_bert_embeds_with_unit_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    write_tiny_bert(&hf);
    let gguf = dir.path().join("bert.gguf");
    wardgate_engine::convert::convert_bert(&hf, "tiny-bert", std::fs::File::create(&gguf).unwrap())
        .unwrap();
    let mut cfg = EngineConfig::new(dir.path().join("store"));
    cfg.threads = 1;
    let engine = Engine::new(cfg).unwrap();
    let (_, entry) = engine.store().import(&gguf, "tiny-bert").unwrap();
    assert_eq!(entry.family, "bert");

    let out = engine
        .embed(&req(
            &["the cat sat on the mat", "stock market crash"],
            None,
            None,
        ))
        .await
        .unwrap();
    assert_eq!(out.embeddings.len(), 2);
    for v in &out.embeddings {
        assert_eq!(v.len(), HIDDEN as usize);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    assert_ne!(
        out.embeddings[0], out.embeddings[1],
        "different texts, different vectors"
    );
    assert!(out.prompt_tokens >= 6);
    // Deterministic, and one input alone gives the same vector as in a batch.
    let again = engine
        .embed(&req(&["the cat sat on the mat"], None, None))
        .await
        .unwrap();
    let d: f32 = again.embeddings[0]
        .iter()
        .zip(&out.embeddings[0])
        .map(|(a, b)| (a - b).abs())
        .sum();
    assert!(d < 1e-4, "{d}");
    // Truncated dimensions are renormalised.
    let short = engine
        .embed(&req(&["the dog"], Some(8), None))
        .await
        .unwrap();
    assert_eq!(short.embeddings[0].len(), 8);
    let norm: f32 = short.embeddings[0]
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
    // Too long: truncated by default, refused with truncate: false.
    let long = "the cat ".repeat(100);
    assert!(engine.embed(&req(&[&long], None, None)).await.is_ok());
    assert!(matches!(
        engine.embed(&req(&[&long], None, Some(false))).await,
        Err(EngineError::ContextLength { .. })
    ));
    // An embedding model does not generate.
    let generate = wardgate_api::canonical::CompletionRequest {
        model: "tiny-bert".into(),
        prompt: "x".into(),
        suffix: None,
        system: None,
        raw: true,
        sampling: Default::default(),
        format: Default::default(),
        keep_alive: None,
        fairness: None,
    };
    assert!(matches!(
        engine.complete(&generate).await,
        Err(EngineError::BadRequest(_))
    ));
}

#[test]
fn the_converter_refuses_what_it_cannot_convert() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type":"gpt2","hidden_size":1,"num_hidden_layers":1,"num_attention_heads":1,"intermediate_size":1,"max_position_embeddings":1}"#).unwrap();
    let err = wardgate_engine::convert::convert_bert(dir.path(), "x", std::io::sink()).unwrap_err();
    assert!(err.to_string().contains("gpt2"), "{err}");
    let missing = tempfile::tempdir().unwrap();
    assert!(wardgate_engine::convert::convert_bert(missing.path(), "x", std::io::sink()).is_err());
}

/// llama.cpp's own mean pooling of `text` through the model at `path`, the whole input in one
/// batch: what the engine's batched pooling must reproduce.
fn llama_cpp_mean(path: &Path, text: &str) -> Vec<f32> {
    use std::num::NonZeroU32;
    use wardgate_engine::llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
    use wardgate_engine::llama_cpp_2::llama_batch::LlamaBatch;
    use wardgate_engine::llama_cpp_2::model::LlamaModel;
    use wardgate_engine::llama_cpp_2::model::params::LlamaModelParams;

    let backend = wardgate_engine::engine::llama_backend().unwrap();
    let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()).unwrap();
    let tokens = model.vocab().tokenize(text.as_bytes(), true, false);
    let n = 256;
    let params = LlamaContextParams::default()
        .with_embeddings(true)
        .with_pooling_type(LlamaPoolingType::Mean)
        .with_n_ctx(NonZeroU32::new(n))
        .with_n_batch(n)
        .with_n_ubatch(n)
        .with_n_threads(1)
        .with_n_threads_batch(1);
    let mut ctx = model.new_context(backend, params).unwrap();
    let mut batch = LlamaBatch::new(n as usize, 1);
    for (i, t) in tokens.iter().enumerate() {
        batch.add(*t, i as i32, &[0], true).unwrap();
    }
    ctx.decode(&mut batch).unwrap();
    let mut v = ctx.embeddings_seq_ith(0).unwrap().to_vec();
    wardgate_engine::embed::normalize(&mut v);
    v
}

/// Issue 16: a chat (decoder) model embeds as Ollama does: its hidden states mean-pooled (it
/// declares no pooling type) and L2-normalised, the same vector llama.cpp's own mean pooling
/// gives, although the engine decodes the input a few tokens at a time (`batch`). Inputs are
/// held to the same context as an embedding model's, and the model still generates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i16_a_chat_model_embeds_with_its_mean_pooled_hidden_states() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.gguf");
    let spec = wardgate_engine::gguf::TinySpec::default();
    wardgate_engine::gguf::write_tiny_llama(std::fs::File::create(&file).unwrap(), &spec).unwrap();
    let mut cfg = EngineConfig::new(dir.path().join("store"));
    cfg.threads = 1;
    cfg.slot_ctx = 64;
    // Smaller than the inputs below, so the pooling spans several decode calls (and at
    // least the slots: llama.cpp aborts on a batch smaller than its sequences).
    cfg.batch = 4;
    cfg.slots = 2;
    let engine = Engine::new(cfg).unwrap();
    engine.store().import(&file, "tiny:test").unwrap();
    let chat_req = |input: &[&str], truncate: Option<bool>| EmbedRequest {
        model: "tiny:test".into(),
        ..req(input, None, truncate)
    };

    let text = "What is the capital of France? hello world";
    let out = engine
        .embed(&chat_req(&[text, "hello"], None))
        .await
        .unwrap();
    assert_eq!(out.embeddings.len(), 2);
    for v in &out.embeddings {
        assert_eq!(v.len(), spec.n_embd as usize);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    assert_ne!(out.embeddings[0], out.embeddings[1]);
    assert!(out.prompt_tokens > 4, "{}", out.prompt_tokens);
    let reference = llama_cpp_mean(&file, text);
    let d: f32 = reference
        .iter()
        .zip(&out.embeddings[0])
        .map(|(a, b)| (a - b).abs())
        .sum();
    assert!(d < 1e-3, "differs from llama.cpp's mean pooling by {d}");

    // Too long for the context: truncated by default, refused with truncate: false.
    let long = "hello world ".repeat(100);
    let truncated = engine.embed(&chat_req(&[&long], None)).await.unwrap();
    assert_eq!(truncated.prompt_tokens, 64);
    assert!(matches!(
        engine.embed(&chat_req(&[&long], Some(false))).await,
        Err(EngineError::ContextLength { limit: 64, .. })
    ));

    // Embedding took no generation slot: the model still completes.
    let generate = wardgate_api::canonical::CompletionRequest {
        model: "tiny:test".into(),
        prompt: "hello".into(),
        suffix: None,
        system: None,
        raw: true,
        sampling: wardgate_api::canonical::Sampling {
            max_tokens: Some(3),
            ..Default::default()
        },
        format: Default::default(),
        keep_alive: None,
        fairness: None,
    };
    let (_, mut rx) = engine.complete(&generate).await.unwrap();
    let mut finished = false;
    while let Some(out) = rx.recv().await {
        if matches!(out, wardgate_engine::Output::Done(_)) {
            finished = true;
        }
    }
    assert!(finished);
}
