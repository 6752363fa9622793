//! Errors of the PostgreSQL layer.
//!
//! Policy: typed errors, each with a hint that says what to do next; repository and storage
//! errors pass through unchanged so the binary classifies them (exit codes) the same way as
//! everywhere else. Messages never contain passwords or connection strings with passwords.

use arsip_repo::RepoError;

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
    /// The input cannot be parsed (a time, an LSN, an xid); nothing was done.
    #[error("{msg}")]
    Usage { msg: String, hint: String },
    /// PostgreSQL stopped recovery; `reason` quotes its own log lines.
    #[error("{what}: {reason}")]
    Recovery {
        what: String,
        reason: String,
        log: String,
    },
    /// A WAL file the caller asked for does not exist in the repository.
    #[error("WAL file {0} is not in the repository")]
    WalMissing(String),
}

impl PgError {
    pub fn refused(msg: impl Into<String>, hint: impl Into<String>) -> PgError {
        PgError::Refused {
            msg: msg.into(),
            hint: hint.into(),
        }
    }

    pub fn usage(msg: impl Into<String>, hint: impl Into<String>) -> PgError {
        PgError::Usage {
            msg: msg.into(),
            hint: hint.into(),
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            PgError::Usage { hint, .. } => Some(hint.clone()),
            PgError::Recovery { log, .. } => Some(format!(
                "that is PostgreSQL's own reason, from {log}; the restored directory is left as it \
                 is for inspection (remove it before restoring again)"
            )),
            PgError::Repo(r) => r.hint(),
            PgError::Refused { hint, .. } => Some(hint.clone()),
            PgError::Pg(_) => Some(
                "check the connection (--dbname, PGHOST, PGPORT, PGUSER, PGPASSFILE) and that the \
                 server is running"
                    .into(),
            ),
            PgError::Tool(_) => Some(
                "check that the PostgreSQL client programs match the server's major version \
                 (ARSIP_PG_BIN or PATH)"
                    .into(),
            ),
            _ => None,
        }
    }
}
