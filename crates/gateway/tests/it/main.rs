//! The gateway's integration tests, one module per area, in one binary: every test binary
//! links llama.cpp, so one binary instead of fifteen saves minutes of linking and gigabytes of
//! disk on every build. `support` holds what the modules share.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod admin;
mod attack_cases;
mod conversion;
mod embedded;
mod jwt;
mod llm;
mod metrics;
mod openapi;
mod phi_audit;
mod pools;
mod quotas;
mod ratelimit;
mod reload;
mod resilience;
mod router;
mod scale_out;
mod store_outage;
mod tenant_isolation;
mod traces;
mod transport;
