//! The driver's errors as the stores report them: each said once, in one place.
//!
//! sqlx's own text for a database error repeats itself down its cause chain (`error returned
//! from database: X at line N`, then `X at line N` again as the source), and its `N` is a line
//! of the PostgreSQL server's C source, of no use to an operator (its `Debug` adds the file and
//! routine too). A [`DriverError`] says the server's message once, with its SQLSTATE code (the
//! stable name of the condition, to look up or to match on), and carries no source of its own,
//! so an error reporter that walks the chain says it once as well.

use std::fmt;

/// A driver error, said once (see the module comment). Holds no statement text and no bound
/// values.
#[derive(Debug)]
pub struct DriverError {
    text: String,
    code: Option<String>,
}

impl DriverError {
    /// The SQLSTATE code (PostgreSQL) or extended result code (SQLite) of a database error.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for DriverError {}

impl From<sqlx::Error> for DriverError {
    fn from(e: sqlx::Error) -> Self {
        let code = e
            .as_database_error()
            .and_then(|db| db.code())
            .map(|c| c.into_owned());
        DriverError {
            text: said(&e),
            code,
        }
    }
}

/// `e` in words, once: a database error as the server's message and its code (never the
/// server's source file, line or routine); anything else as sqlx says it, which names its
/// cause once in its own text.
pub(crate) fn said(e: &sqlx::Error) -> String {
    let Some(db) = e.as_database_error() else {
        return e.to_string();
    };
    let code = db.code().unwrap_or_default();
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        // `message()`, not `Display`: the latter adds the server's C source line.
        format!("PostgreSQL: {} (SQLSTATE {code})", pg.message())
    } else {
        format!("the database: {} (code {code})", db.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_are_not_the_servers_keep_sqlxs_words() {
        let e = DriverError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(e.to_string(), sqlx::Error::PoolTimedOut.to_string());
        assert!(e.code().is_none());
        assert!(std::error::Error::source(&e).is_none());
    }
}
