//! The public HTTP service of wardgate: configuration, the request path (router, middleware,
//! handlers), and the background work that keeps the model catalog current.

pub mod app;
pub mod audit;
/// An error and its causes in one line (it lives with the lowest crate that logs errors).
pub use wardgate_audit::causes;
pub mod config;
pub mod error;
pub mod guards;
pub mod handlers;
pub mod identity;
pub mod llm;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod pipeline;
pub mod redact_log;
pub mod router;
pub mod serve;
pub mod services;
pub mod shared;
pub mod state;
pub mod telemetry;

pub use app::{Gateway, LlmService, StartError, Stores};
pub use config::{Config, ConfigError};
pub use router::router;
pub use state::AppState;
