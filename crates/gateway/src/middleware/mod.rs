//! The layers every request passes: its record (request id, log line, terminal audit event) and authentication with authorization.

pub mod auth;
pub mod events;
pub mod record;
