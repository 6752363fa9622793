//! Errors of the operations layer: the lower layers' typed errors, passed through with
//! their class, plus input refused here. Policy as in `arsip_repo::error`: every error has a
//! class and a hint that names no front end's flags.

use arsip_pg::PgError;
use arsip_repo::{Classify, ErrorClass, RepoError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Storage(#[from] arsip_storage::StorageError),
    /// Input refused before anything was done.
    #[error("{0}")]
    Usage(String),
    /// A precondition does not hold and nothing was done (a confirmation not given, an
    /// object that is no longer accepted).
    #[error("{0}")]
    Refused(String),
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }

    /// Worth another attempt as it is (a scheduler retries these, and only these): decided
    /// by the lower layers where each error is built, never from a message.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Repo(e) => e.is_transient(),
            Error::Pg(e) => e.is_transient(),
            Error::Storage(e) => e.kind == arsip_storage::ErrorKind::Transient,
            Error::Usage(_) | Error::Refused(_) => false,
        }
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Repo(e) => e.class(),
            Error::Pg(e) => e.class(),
            Error::Storage(e) => e.class(),
            Error::Usage(_) => ErrorClass::Usage,
            Error::Refused(_) => ErrorClass::Refused,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Error::Repo(e) => e.hint(),
            Error::Pg(e) => e.hint(),
            Error::Storage(e) => e.hint(),
            Error::Usage(_) | Error::Refused(_) => None,
        }
    }
}
