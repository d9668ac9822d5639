//! The protections the application state holds for every request: rate limits and quotas, the PHI guard, and the folding of repeated refusals in the audit log.

pub mod audit_fold;
pub mod phi_guard;
pub mod ratelimit;
