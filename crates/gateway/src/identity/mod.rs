//! Who is calling and from where: the principal and its roles, the client address, credentials
//! cached after verification and the broadcast that invalidates them, JWT issuers, log-in
//! monitoring (lockout, in process or shared through Redis), and the replay defence of signed
//! requests shared by `wardgate llm` replicas.

pub mod jwt;
pub mod key_cache;
pub mod lockout;
pub mod net;
pub mod principal;
pub mod replay;
pub mod revocations;
pub mod shared_lockout;
