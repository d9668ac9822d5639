//! The bound on every PostgreSQL store call but the migrations (`storage.query_timeout`): a
//! call waits for a pooled connection, begins its transaction, runs its statements and commits,
//! all within one limit, or fails as unavailable.
//!
//! Why: a database link that goes silent (a firewall or NAT that drops the flow, a network
//! fault: no data, no RST) leaves a statement waiting for an answer that never comes, and sqlx
//! has no TCP keepalive setting to notice. Without a bound a request waited forever on its key
//! lookup or its audit-start commit.
//!
//! A connection whose call ran out of time, or whose caller stopped waiting (a request that
//! reached its own deadline drops the call), is dropped, never returned to the pool: what the
//! call sent may be lost on the silent link, so the connection's protocol state is unknown, and
//! sqlx's return to the pool sends a ping that would wait forever on it, holding the pool's
//! place. Dropping it frees the place, and the pool opens a new connection when the link is
//! back. A connection that finished its call goes back to the pool through that same ping,
//! bounded here too, so a link that goes silent just then costs the connection, not the place.

use std::fmt;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Connection as _, PgConnection, Postgres};
use tokio::time::Instant;

use super::PgStore;

/// Default of `storage.query_timeout`: how long one store call may take in all.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `storage.query_timeout`.
pub const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(600);

/// A store call that did not finish within `storage.query_timeout`. Names the server as
/// `host:port/database` only.
#[derive(Debug)]
pub struct TimedOut {
    target: String,
    after: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PostgreSQL at {} did not answer within {} ms (storage.query_timeout); the \
             connection was dropped",
            self.target,
            self.after.as_millis()
        )
    }
}

impl std::error::Error for TimedOut {}

/// The errors of a bounded call: each store error type says a driver error and a timeout its
/// own way.
pub(crate) trait Failure: Sized {
    fn driver(e: sqlx::Error) -> Self;
    fn timed_out(e: TimedOut) -> Self;
}

impl Failure for crate::StoreError {
    fn driver(e: sqlx::Error) -> Self {
        crate::records::unavailable(e)
    }

    fn timed_out(e: TimedOut) -> Self {
        crate::StoreError::Unavailable(Box::new(e))
    }
}

impl Failure for wardgate_audit::AuditStoreError {
    fn driver(e: sqlx::Error) -> Self {
        crate::audit_rows::unavailable(e)
    }

    fn timed_out(e: TimedOut) -> Self {
        wardgate_audit::AuditStoreError::Unavailable(Box::new(e))
    }
}

impl Failure for crate::records::InsertError {
    fn driver(e: sqlx::Error) -> Self {
        crate::records::InsertError::Sql(e)
    }

    fn timed_out(e: TimedOut) -> Self {
        crate::records::InsertError::Store(crate::StoreError::timed_out(e))
    }
}

/// A pooled connection that is dropped, not returned, unless [`Held::release`] says the call
/// finished (see the module comment).
struct Held {
    conn: Option<PoolConnection<Postgres>>,
    limit: Duration,
}

impl Held {
    fn conn(&mut self) -> Option<&mut PgConnection> {
        self.conn.as_deref_mut()
    }

    /// Back to the pool, through sqlx's ping, which may take `limit` at most; after that the
    /// connection is dropped and its place freed.
    fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let back = conn.return_to_pool();
            // Holds nothing now: the connection went to `back`.
            drop(conn);
            tokio::spawn(tokio::time::timeout(self.limit, back));
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Closes the socket; the pool may open a replacement.
            drop(conn.detach());
        }
    }
}

/// What a bounded call ran into before its work finished.
enum Stopped<E> {
    Failed(E),
    TimedOut,
}

impl PgStore {
    /// Runs `work` in a transaction of its own (see the parent module for why every call has
    /// one): takes a pooled connection, begins, runs, and commits when `work` succeeds (rolls
    /// back when it fails), all within `storage.query_timeout`. Work that decides to write
    /// nothing just returns: committing a transaction that wrote nothing changes nothing.
    pub(crate) async fn bounded<T, E: Failure>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
    ) -> Result<T, E> {
        let limit = self.query_timeout;
        let deadline = Instant::now() + limit;
        let timed_out = || {
            E::timed_out(TimedOut {
                target: self.shown.clone(),
                after: limit,
            })
        };
        let conn = match tokio::time::timeout_at(deadline, self.pool.acquire()).await {
            Ok(conn) => conn.map_err(E::driver)?,
            Err(_) => return Err(timed_out()),
        };
        let mut held = Held {
            conn: Some(conn),
            limit,
        };
        let ran = tokio::time::timeout_at(deadline, async {
            let Some(conn) = held.conn() else {
                return Err(Stopped::TimedOut);
            };
            let mut tx = conn
                .begin()
                .await
                .map_err(|e| Stopped::Failed(E::driver(e)))?;
            match work(&mut *tx).await {
                Ok(value) => {
                    tx.commit()
                        .await
                        .map_err(|e| Stopped::Failed(E::driver(e)))?;
                    Ok(value)
                }
                Err(e) => {
                    // The work's error is the one to report; a rollback that fails too leaves
                    // a connection the release ping finds broken.
                    let _ = tx.rollback().await;
                    Err(Stopped::Failed(e))
                }
            }
        })
        .await;
        match ran {
            Ok(Ok(value)) => {
                held.release();
                Ok(value)
            }
            Ok(Err(Stopped::Failed(e))) => {
                held.release();
                Err(e)
            }
            // `held` is dropped, and with it the connection.
            Ok(Err(Stopped::TimedOut)) | Err(_) => Err(timed_out()),
        }
    }
}
