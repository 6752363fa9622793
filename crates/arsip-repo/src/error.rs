//! Errors of the repository layer.
//!
//! Policy: this crate returns typed [`RepoError`]s; context (which object, which snapshot)
//! is attached once, where it is known, and every message that reaches an operator says what
//! to do next in its hint. `anyhow` lives only in the binary. Messages never contain key
//! material or passwords.
//!
//! Every error of every arsip library has an [`ErrorClass`] ([`Classify`]): what the caller
//! does next. The CLI maps classes to exit codes in one table, the daemon to HTTP statuses.
//! Hints speak of what to do, never of a front end's flags; front ends add those.

use arsip_storage::{ErrorKind, StorageError};

pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// What kind of failure an error is, by what the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The input is invalid (an argument, a time, a name): fix it and run again.
    Usage,
    /// There is no repository at the location.
    NotARepository,
    /// No key slot opens with the password or key file given.
    WrongKey,
    /// The store or a local disk failed or refused (network, credentials, permissions,
    /// a full disk) after retries.
    Storage,
    /// Data failed authentication or is inconsistent.
    Damaged,
    /// The snapshot, file or object asked for does not exist.
    NotFound,
    /// A precondition does not hold and nothing was done (agent credentials for a full-key
    /// operation, a store without conditional creates, a location in use).
    Refused,
    /// A source or an external program failed (a dump exited non-zero, the server refused).
    Failed,
    /// A defect in arsip itself; report it.
    Internal,
}

/// An error that knows its class and what to do about it.
pub trait Classify {
    fn class(&self) -> ErrorClass;
    /// What the operator should do, without naming a front end's flags.
    fn hint(&self) -> Option<String>;
}

/// Run blocking work (file I/O, compression, a program that must be waited for) on tokio's
/// blocking pool: the one `spawn_blocking` of the crates above the store, for any error type
/// that a [`RepoError`] converts into. A panic there is a defect and comes back as
/// [`RepoError::Internal`].
///
/// The work starts when this is called, not when the future is first polled, so a caller
/// may keep the future and do other work (feed a channel the work reads) before awaiting it.
/// Call it inside a tokio runtime.
pub fn blocking<T, E, F>(f: F) -> impl std::future::Future<Output = std::result::Result<T, E>>
where
    F: FnOnce() -> std::result::Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<RepoError> + Send + 'static,
{
    let task = tokio::task::spawn_blocking(f);
    async move {
        task.await
            .map_err(|e| E::from(RepoError::Internal(format!("blocking task failed: {e}"))))?
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// No repository at the location (no `config` object).
    #[error("no arsip repository at {0}")]
    NotARepository(String),
    /// `init` found a repository (or other objects) already there.
    #[error("a repository already exists at {0}")]
    AlreadyInitialized(String),
    /// `init` found objects but no `config` at the location: initialising there would mix a
    /// new repository with old data (or bury a repository whose `config` was lost).
    #[error("{location} is not empty: it holds {found} but no repository config")]
    LocationInUse { location: String, found: String },
    /// An authentic object of a writer that is no longer accepted (retired before the store
    /// accepted the object, or declared compromised). Not damage.
    #[error("{object} is not accepted: writer {writer} {detail}")]
    Revoked {
        object: String,
        writer: String,
        detail: String,
    },
    /// Agent credentials whose writer is retired, compromised or unregistered: nothing it
    /// wrote from now on would be accepted, so it refuses to write.
    #[error("{0}; no reader would accept its backups, so nothing was backed up")]
    AgentRevoked(String),
    /// Local I/O outside the repository (the cache directory, an index spill file): the
    /// path and what was being done. Never repository damage.
    #[error("{action} {}: {source}", path.display())]
    Local {
        action: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// No key slot can be opened at all: none exists, or every one is damaged. Not a wrong
    /// password: no password could open the repository.
    #[error("no usable key slot: {0}")]
    NoUsableSlot(String),
    /// No key slot opens with the given password or key file.
    #[error("wrong password or key file: no key slot of this repository opens with it")]
    WrongKey,
    /// Authentication failed: the bytes are not what a holder of the keys wrote.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// An object failed authentication or parsing; names it.
    #[error("object {object} is damaged: {reason}")]
    Corrupt { object: String, reason: String },
    /// A snapshot, chunk or key the caller named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The operation needs a full key; agent credentials cannot do it.
    #[error("{0} needs a full key (password or key file); agent credentials can only add backups")]
    NeedsFullKey(&'static str),
    /// The store does not honour create-only writes.
    #[error(
        "the store at {0} does not honour conditional creates (If-None-Match); refusing to use it"
    )]
    NoConditionalCreate(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A precondition of the operation does not hold and nothing was done (e.g. a restore
    /// would write paths that exist); the message says what and what to do.
    #[error("{0}")]
    Refused(String),
    /// Like [`RepoError::Refused`], but the condition passes by itself: another prune runs,
    /// prune fenced this session, a lease or claim was lost. Nothing was done; running again
    /// later is the remedy (a scheduler retries it).
    #[error("{0}")]
    Busy(String),
    #[error("unsupported repository format: {0}")]
    Unsupported(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A defect: a task panicked, a pipeline stage ended without saying why.
    #[error("internal error: {0}")]
    Internal(String),
    /// The source being backed up failed (a producer program exited non-zero or was killed,
    /// a stream could not be read); nothing was committed.
    #[error("{0}")]
    Source(String),
}

impl RepoError {
    /// Worth another attempt as it is: the store did not answer, the source failed (a
    /// server restarting, a dump cut off), or a refusal that passes by itself
    /// ([`RepoError::Busy`]). Set by what each error is, never read from its message.
    pub fn is_transient(&self) -> bool {
        match self {
            RepoError::Storage(e) => e.kind == ErrorKind::Transient,
            RepoError::Busy(_) | RepoError::Source(_) => true,
            _ => false,
        }
    }

    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        RepoError::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }
}

impl Classify for StorageError {
    fn class(&self) -> ErrorClass {
        match self.kind {
            ErrorKind::NotFound => ErrorClass::NotARepository,
            ErrorKind::Truncated => ErrorClass::Damaged,
            _ => ErrorClass::Storage,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self.kind {
            ErrorKind::NotFound => "check the repository location".into(),
            ErrorKind::PermissionDenied => {
                "check the storage credentials and their permissions (AWS_ACCESS_KEY_ID, \
                 AWS_SECRET_ACCESS_KEY, bucket policy, directory ownership)"
                    .into()
            }
            ErrorKind::Transient => {
                "the store did not answer after retries; check the network and the endpoint, \
                 then run the command again"
                    .into()
            }
            ErrorKind::Truncated => "the object is damaged; see which snapshots need it".into(),
            _ => "check the repository location and the store's configuration".into(),
        })
    }
}

impl Classify for RepoError {
    fn class(&self) -> ErrorClass {
        match self {
            RepoError::Storage(s) => s.class(),
            RepoError::NotARepository(_) => ErrorClass::NotARepository,
            RepoError::WrongKey => ErrorClass::WrongKey,
            RepoError::Auth(_) | RepoError::Corrupt { .. } => ErrorClass::Damaged,
            RepoError::NotFound(_) => ErrorClass::NotFound,
            RepoError::NoUsableSlot(_) => ErrorClass::Damaged,
            RepoError::Revoked { .. } | RepoError::AgentRevoked(_) => ErrorClass::Refused,
            RepoError::Local { .. } => ErrorClass::Storage,
            RepoError::NeedsFullKey(_)
            | RepoError::NoConditionalCreate(_)
            | RepoError::AlreadyInitialized(_)
            | RepoError::LocationInUse { .. }
            | RepoError::Unsupported(_)
            | RepoError::Refused(_)
            | RepoError::Busy(_) => ErrorClass::Refused,
            RepoError::Invalid(_) => ErrorClass::Usage,
            RepoError::Io(_) => ErrorClass::Storage,
            RepoError::Internal(_) => ErrorClass::Internal,
            RepoError::Source(_) => ErrorClass::Failed,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            RepoError::Storage(e) => return e.hint(),
            RepoError::NotARepository(_) => {
                "check the repository location, or initialise a repository there".into()
            }
            RepoError::AlreadyInitialized(_) => {
                "use the existing repository, or pick an empty location".into()
            }
            RepoError::LocationInUse { .. } => {
                "if this was a repository whose config was lost, recover the config object from \
                 a copy of the repository or the store's versioning (initialising over it would \
                 not make the old data readable); otherwise pick an empty location"
                    .into()
            }
            RepoError::Revoked { .. } => {
                "its writer's revocation takes it back; restore another snapshot (the key list \
                 shows each agent's state)"
                    .into()
            }
            RepoError::AgentRevoked(_) => {
                "register new agent credentials with a full key and use them on this host".into()
            }
            RepoError::Local { .. } => {
                "this is a local directory, not the repository: make it a writable directory \
                 with free space, or point the cache directory elsewhere"
                    .into()
            }
            RepoError::NoUsableSlot(_) => {
                "the key slots (objects under keys/) are missing or damaged; recover them from a \
                 copy of the repository or the store's versioning. A key file opens the \
                 repository only while its own slot exists"
                    .into()
            }
            RepoError::WrongKey => "check the password or key file".into(),
            RepoError::Auth(_) | RepoError::Corrupt { .. } => {
                "a check that reads all data lists the damaged objects and the affected \
                 snapshots; restore from another snapshot or a copy of the repository"
                    .into()
            }
            RepoError::NotFound(_) => "list the snapshots to see what exists".into(),
            RepoError::NeedsFullKey(_) => {
                "run it with the repository password or a full key file".into()
            }
            RepoError::NoConditionalCreate(_) => {
                "use a store that supports If-None-Match on PUT (AWS S3, MinIO ≥ 2024, R2, GCS, \
                 Azure)"
                    .into()
            }
            RepoError::Internal(_) => "this is a defect in arsip; please report it".into(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_passes_by_itself_is_transient() {
        let storage = |k| RepoError::Storage(StorageError::new(k, Some("x"), "m"));
        assert!(storage(ErrorKind::Transient).is_transient());
        assert!(RepoError::Busy("another prune is running".into()).is_transient());
        assert!(RepoError::Source("pg_dump exited 1".into()).is_transient());
        for e in [
            storage(ErrorKind::PermissionDenied),
            storage(ErrorKind::NotFound),
            storage(ErrorKind::Truncated),
            RepoError::Refused("a restore target exists".into()),
            RepoError::corrupt("data/aa/bb", "bad tag"),
            RepoError::WrongKey,
            RepoError::Invalid("bad".into()),
        ] {
            assert!(!e.is_transient(), "{e}");
        }
        // A busy refusal is still a refusal to whoever reads the exit code.
        assert_eq!(RepoError::Busy("x".into()).class(), ErrorClass::Refused);
    }
}
