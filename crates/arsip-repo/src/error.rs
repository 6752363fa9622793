//! Errors of the repository layer.
//!
//! Policy: this crate returns typed [`RepoError`]s; context (which object, which snapshot)
//! is attached once, where it is known, and every message that reaches an operator says what
//! to do next in its [`RepoError::hint`]. `anyhow` lives only in the binary. Messages never
//! contain key material or passwords.

use arsip_storage::{ErrorKind, StorageError};

pub type Result<T, E = RepoError> = std::result::Result<T, E>;

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
    #[error("unsupported repository format: {0}")]
    Unsupported(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl RepoError {
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        RepoError::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// What the operator should do about this error.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            RepoError::Storage(e) => match e.kind {
                ErrorKind::NotFound => "check the repository location (--repo / ARSIP_REPO)".into(),
                ErrorKind::PermissionDenied => {
                    "check the storage credentials and their permissions (AWS_ACCESS_KEY_ID, \
                     AWS_SECRET_ACCESS_KEY, bucket policy, directory ownership)"
                        .into()
                }
                ErrorKind::Transient => {
                    "the store did not answer after retries; check the network and the endpoint \
                     (ARSIP_S3_ENDPOINT), then run the command again"
                        .into()
                }
                _ => "check the repository location and the store's configuration".into(),
            },
            RepoError::NotARepository(_) => {
                "check --repo / ARSIP_REPO, or create a repository with `arsip init`".into()
            }
            RepoError::AlreadyInitialized(_) => "use the existing repository, or pick an empty location".into(),
            RepoError::WrongKey => {
                "check ARSIP_PASSWORD_FILE / ARSIP_PASSWORD / --key-file; `arsip key list` (with a \
                 working key) shows the slots"
                    .into()
            }
            RepoError::Auth(_) | RepoError::Corrupt { .. } => {
                "run `arsip check --read-data` to list damaged objects and affected snapshots; \
                 restore from another snapshot or a copy of the repository"
                    .into()
            }
            RepoError::NotFound(_) => "`arsip snapshots` lists what exists".into(),
            RepoError::NeedsFullKey(_) => "run it with the repository password or a full key file".into(),
            RepoError::NoConditionalCreate(_) => {
                "use a store that supports If-None-Match on PUT (AWS S3, MinIO ≥ 2024, R2, GCS, Azure)".into()
            }
            _ => return None,
        })
    }
}
