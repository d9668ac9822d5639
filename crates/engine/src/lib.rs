//! llama.cpp inference for wardgate: the model store, loading with keep-alive and a memory
//! budget, continuous batching, chat templates and grammars. The only crate that links C/C++.

/// Re-exported for benchmarks that run raw llama.cpp beside the engine, so both link the same
/// build.
pub use llama_cpp_2;

pub mod convert;
pub mod embed;
pub mod engine;
pub mod fetch;
pub mod gguf;
pub mod native_log;
pub mod quantize;
pub mod scheduler;
pub mod schema;
pub mod store;

pub use engine::{Engine, EngineConfig, EngineError, Generation, KeepAlive, Loaded};
pub use scheduler::{Output, StopReason, Summary};
pub use schema::SchemaLimits;
pub use store::{ModelEntry, ModelStore, StoreError};
