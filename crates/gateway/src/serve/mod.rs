//! The connection layer under the router: the listener with its bounds, TLS, and configuration reload.

pub mod reload;
pub mod server;
pub mod tls;
