//! Errors of the PostgreSQL layer.
//!
//! Policy: typed errors, each with a hint that says what to do next; repository and storage
//! errors pass through unchanged so the binary classifies them (exit codes) the same way as
//! everywhere else. Messages never contain passwords or connection strings with passwords.

use arsip_repo::{Classify, ErrorClass, RepoError};

pub type Result<T, E = PgError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("PostgreSQL: {0}")]
    Pg(#[from] tokio_postgres::Error),
    /// A precondition does not hold; nothing was written.
    #[error("{msg}")]
    Refused { msg: String, hint: String },
    /// An external PostgreSQL program failed.
    #[error("{0}")]
    Tool(String),
    /// A WAL file the caller asked for does not exist in the repository.
    #[error("WAL file {0} is not in the repository")]
    WalMissing(String),
    /// The input is invalid (a target time, an xid, a mapping); nothing was written.
    #[error("{0}")]
    Usage(String),
    /// The input cannot be parsed, with a hint saying what is accepted; nothing was done.
    #[error("{msg}")]
    Invalid { msg: String, hint: String },
    /// PostgreSQL stopped recovery; `reason` quotes its own log lines.
    #[error("{what}: {reason}")]
    Recovery {
        what: String,
        reason: String,
        log: String,
    },
}

impl PgError {
    pub fn refused(msg: impl Into<String>, hint: impl Into<String>) -> PgError {
        PgError::Refused {
            msg: msg.into(),
            hint: hint.into(),
        }
    }

    /// Worth another attempt as it is: the repository's transient errors, a server that
    /// could not be reached or is starting or shutting down, too many connections, a
    /// PostgreSQL program that failed (its server side went away mid-dump far more often than
    /// it meets a permanent problem; a permanent one fails every attempt and is reported).
    pub fn is_transient(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            PgError::Repo(r) => r.is_transient(),
            PgError::Pg(e) => match e.as_db_error() {
                // No answer from the server: connect refused, reset, closed.
                None => true,
                Some(db) => [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                ]
                .contains(db.code()),
            },
            PgError::Tool(_) => true,
            _ => false,
        }
    }

    /// A usage error (exit 2) with a hint.
    pub fn usage(msg: impl Into<String>, hint: impl Into<String>) -> PgError {
        PgError::Invalid {
            msg: msg.into(),
            hint: hint.into(),
        }
    }
}

impl Classify for PgError {
    fn class(&self) -> ErrorClass {
        match self {
            PgError::Repo(r) => r.class(),
            PgError::Io(_) => ErrorClass::Storage,
            PgError::Pg(_) | PgError::Tool(_) => ErrorClass::Failed,
            PgError::Refused { .. } => ErrorClass::Refused,
            PgError::WalMissing(_) => ErrorClass::NotFound,
            PgError::Usage(_) | PgError::Invalid { .. } => ErrorClass::Usage,
            PgError::Recovery { .. } => ErrorClass::Failed,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            PgError::Repo(r) => r.hint(),
            PgError::Refused { hint, .. } | PgError::Invalid { hint, .. } => Some(hint.clone()),
            PgError::Recovery { log, .. } => Some(format!(
                "that is PostgreSQL's own reason, from {log}; the restored directory is left as \
                 it is for inspection (remove it before restoring again)"
            )),
            PgError::Pg(_) => Some(
                "check the connection (PGHOST, PGPORT, PGUSER, PGPASSFILE or the connection \
                 string) and that the server is running"
                    .into(),
            ),
            PgError::Tool(_) => Some(
                "the program's own message is above; if it names a version mismatch, use \
                 PostgreSQL programs of the server's major version (ARSIP_PG_BIN or PATH)"
                    .into(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that does not answer is worth retrying; bad input and refusals are not.
    #[tokio::test]
    async fn an_unreachable_server_is_transient() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=x connect_timeout=5"),
            tokio_postgres::NoTls,
        )
        .await
        .map(|_| ())
        .unwrap_err();
        assert!(PgError::Pg(e).is_transient());
        assert!(PgError::Tool("pg_dump: connection lost".into()).is_transient());
        assert!(!PgError::usage("bad time", "use RFC 3339").is_transient());
        assert!(!PgError::refused("exists", "remove it").is_transient());
        assert!(!PgError::WalMissing("000000010000000000000001".into()).is_transient());
    }
}
