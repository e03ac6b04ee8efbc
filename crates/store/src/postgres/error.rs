//! How PostgreSQL's failures become [`StoreError`]s, and how a writer decides what to do with
//! a run of a batch that failed ([`Retry`]).

use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::StoreError;

/// A PostgreSQL error with the server's message, code and detail, or the client's cause.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(d) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", d.message(), d.code().code());
        if let Some(detail) = d.detail() {
            s.push_str(": ");
            s.push_str(detail);
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A failed statement outside a writer's batch (reads, migrations): a lost session is
/// [`StoreError::Unavailable`], anything else [`StoreError::Backend`].
pub(super) fn db(e: tokio_postgres::Error) -> StoreError {
    if session_ended(&e) {
        StoreError::Unavailable {
            detail: describe(&e),
        }
    } else {
        StoreError::Backend(describe(&e))
    }
}

/// No connection could be made or taken from the pool.
pub(super) fn pool_error(location: &str, e: deadpool_postgres::PoolError) -> StoreError {
    let detail = match &e {
        deadpool_postgres::PoolError::Backend(pg) => describe(pg),
        other => other.to_string(),
    };
    StoreError::Unavailable {
        detail: format!("cannot connect to PostgreSQL at {location}: {detail}"),
    }
}

pub(super) fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx).map_err(db)
}

/// Whether the error ended the session, whether or not the client has noticed the closed
/// connection yet.
pub(super) fn session_ended(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(d) => {
            let code = d.code().code();
            matches!(d.severity(), "FATAL" | "PANIC")
                || code.starts_with("08")
                || code.starts_with("57P")
        }
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
    }
}

/// What to do once a run of a batch has failed and been rolled back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// Answer every caller with the error.
    No,
    /// The connection failed while the COMMIT was under way: the batch may have committed, so
    /// it must not run again; every caller is told the outcome is unknown.
    Never,
    /// The connection failed before the COMMIT was sent, so the server rolled the batch back:
    /// run it again on a new connection.
    Reconnect,
    /// A deadlock or serialization failure: run the batch again the same way.
    Again,
    /// A statement failed in a pipelined run: run the batch again carefully, each command in
    /// its own savepoint, so the failure stays with the command that caused it. Inside a
    /// command's savepoint, the command alone fails instead.
    Carefully,
}

/// Why a run of a batch is abandoned: its transaction is rolled back.
#[derive(Debug)]
pub(super) struct Abort {
    pub(super) message: String,
    pub(super) retry: Retry,
}

impl Abort {
    /// What the batch's callers are answered once no further run is made.
    pub(super) fn into_error(self, attempts: u32) -> StoreError {
        let detail = self.message;
        match self.retry {
            Retry::Never => StoreError::OutcomeUnknown { detail },
            Retry::Reconnect => StoreError::Unavailable { detail },
            Retry::No | Retry::Again | Retry::Carefully if attempts > 1 => {
                StoreError::Backend(format!("batch rolled back after {attempts} runs: {detail}"))
            }
            Retry::No | Retry::Again | Retry::Carefully => {
                StoreError::Backend(format!("batch rolled back: {detail}"))
            }
        }
    }
}

/// A failure outside any command's savepoint, before the COMMIT.
pub(super) fn abort(e: tokio_postgres::Error) -> Abort {
    let retry = match e.code() {
        _ if session_ended(&e) => Retry::Reconnect,
        Some(c)
            if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
        {
            Retry::Again
        }
        _ => Retry::No,
    };
    Abort {
        message: describe(&e),
        retry,
    }
}

/// A failed statement of a run: an error the server reports about the statement itself (not
/// a lost session, deadlock or serialization failure) is isolated by running again carefully.
pub(super) fn pipelined(e: tokio_postgres::Error) -> Abort {
    match e.code() {
        Some(code) if !code.code().starts_with("40") && !session_ended(&e) => Abort {
            message: describe(&e),
            retry: Retry::Carefully,
        },
        _ => abort(e),
    }
}

/// A failure while the COMMIT was under way: unless the server answered it, the batch may or
/// may not have committed.
pub(super) fn commit_failed(e: tokio_postgres::Error) -> Abort {
    if e.as_db_error().is_some() && !session_ended(&e) {
        abort(e)
    } else {
        Abort {
            message: format!("the connection failed during COMMIT: {}", describe(&e)),
            retry: Retry::Never,
        }
    }
}
