//! Re-quantizing a stored model with llama.cpp's quantizer, on a tiny F32 model written by the
//! test: the result is a real GGUF of the asked type that loads and generates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use wardgate_api::canonical::{CompletionRequest, ResponseFormat, Sampling};
use wardgate_engine::gguf::{TinySpec, write_tiny_llama};
use wardgate_engine::quantize::{QuantType, QuantizeError, quantize};
use wardgate_engine::{Engine, EngineConfig, KeepAlive, Output, StoreError};

fn engine_with_tiny(dir: &std::path::Path) -> Engine {
    let file = dir.join("tiny.gguf");
    write_tiny_llama(
        std::io::BufWriter::new(std::fs::File::create(&file).unwrap()),
        &TinySpec::default(),
    )
    .unwrap();
    let mut cfg = EngineConfig::new(dir.join("models"));
    cfg.slots = 1;
    cfg.slot_ctx = 128;
    cfg.threads = 1;
    let engine = Engine::new(cfg).unwrap();
    engine.store().import(&file, "tiny:f32").unwrap();
    engine
}

fn leftovers(engine: &Engine) -> Vec<String> {
    std::fs::read_dir(engine.store().dir().join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converts_to_each_type_and_the_result_generates() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_tiny(dir.path());
    let source = engine.store().get("tiny:f32").unwrap();
    assert_eq!(source.quantization_level, "F32");
    for (to, label) in [(QuantType::Q4_0, "Q4_0"), (QuantType::Q8_0, "Q8_0")] {
        let name = format!("tiny:{}", to.as_str());
        let (stored, entry) = quantize(engine.store(), "tiny:f32", to, &name, 1).unwrap();
        assert_eq!(stored, name);
        assert_eq!(entry.quantization_level, label, "{name}");
        assert_eq!(entry.family, "llama");
        assert!(
            entry.size < source.size / 2,
            "{name}: {} bytes is not smaller than half the F32 source's {}",
            entry.size,
            source.size
        );
        // The manifest's digest is the stored file's.
        let on_disk = wardgate_engine::store::sha256_file(&engine.store().path_of(&entry)).unwrap();
        assert_eq!(on_disk, entry.digest);

        let req = CompletionRequest {
            model: name.clone(),
            prompt: "What is the capital of France?".into(),
            suffix: None,
            system: None,
            raw: true,
            sampling: Sampling {
                temperature: Some(0.0),
                max_tokens: Some(5),
                ..Sampling::default()
            },
            format: ResponseFormat::Text,
            keep_alive: None,
            fairness: None,
        };
        let (_, mut rx) = engine.complete(&req).await.unwrap();
        let summary = loop {
            match rx.recv().await.expect("no summary") {
                Output::Text(_) => {}
                Output::Done(s) => break s,
                Output::Error(e) | Output::Rejected(e) => panic!("{name} failed to generate: {e}"),
            }
        };
        assert!(summary.completion_tokens >= 1, "{name}: {summary:?}");
        engine.unload(&name);
    }
    // The source is kept, and nothing half-written is left behind.
    assert!(engine.store().get("tiny:f32").is_ok());
    assert_eq!(leftovers(&engine), Vec::<String>::new());
    engine.load("tiny:f32", KeepAlive::Forever).await.unwrap();
}

#[test]
fn refuses_unknown_types_missing_models_and_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_tiny(dir.path());
    let err = "q5_k".parse::<QuantType>().unwrap_err();
    assert!(err.to_string().contains("q4_0"), "{err}");
    assert_eq!("Q4_0".parse::<QuantType>().unwrap(), QuantType::Q4_0);
    assert!(matches!(
        quantize(engine.store(), "nosuch:1", QuantType::Q8_0, "x:1", 1),
        Err(QuantizeError::Store(StoreError::NotFound(_)))
    ));
    assert!(matches!(
        quantize(
            engine.store(),
            "tiny:f32",
            QuantType::Q8_0,
            "../escape:1",
            1
        ),
        Err(QuantizeError::Store(_))
    ));
}

#[test]
fn a_damaged_source_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_tiny(dir.path());
    let entry = engine.store().get("tiny:f32").unwrap();
    let path = engine.store().path_of(&entry);
    let bytes = std::fs::read(&path).unwrap();
    // The header survives, the tensor data is cut short.
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = quantize(engine.store(), "tiny:f32", QuantType::Q4_0, "tiny:q4_0", 1).unwrap_err();
    assert!(matches!(err, QuantizeError::Failed { .. }), "{err}");
    assert!(engine.store().get("tiny:q4_0").is_err());
    assert_eq!(leftovers(&engine), Vec::<String>::new());
}
