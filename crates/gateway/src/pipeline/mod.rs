//! What a model request goes through between the handlers and the backend: bounds (policy), token restoring in answers, streaming with its deadlines, and bounded body extraction.

pub mod extract;
pub mod policy;
pub mod stream;
pub mod tokens;
