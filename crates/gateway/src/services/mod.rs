//! Operations both fronts of the service offer, the admin API and the `wardgate` CLI, with
//! every check and the audit event in one place; above the request layers (they may emit onto
//! a request's record), below the handlers and the commands that call them.

pub mod keys;
