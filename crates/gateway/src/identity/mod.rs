//! Who is calling and from where: the principal and its roles, the client address, credentials
//! cached after verification, JWT issuers, and log-in monitoring (lockout).

pub mod jwt;
pub mod key_cache;
pub mod lockout;
pub mod net;
pub mod principal;
